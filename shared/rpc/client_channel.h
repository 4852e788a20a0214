// Client-side connection settings shared by the CLI and by services that call
// each other: address, TLS trust, client certificate (mTLS), bearer token and
// deadline.
#ifndef SWITCHYARD_SHARED_RPC_CLIENT_CHANNEL_H_
#define SWITCHYARD_SHARED_RPC_CLIENT_CHANNEL_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::rpc {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  // PEM CA that signed the server's certificate; when set, the channel uses TLS.
  std::string tls_ca;
  // Client certificate and key for mTLS.
  std::string tls_cert;
  std::string tls_key;
  // Sent as `authorization: Bearer <token>` when not empty.
  std::string token;
  // Per-call deadline; zero or infinite means none.
  absl::Duration timeout = absl::InfiniteDuration();
  int max_message_bytes = 64 << 20;
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

// Applies token and deadline to one call's context.
void PrepareContext(const ClientOptions& options, grpc::ClientContext* context);

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_CLIENT_CHANNEL_H_
