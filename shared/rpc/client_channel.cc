#include "shared/rpc/client_channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::rpc {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_ca.empty() && options.tls_cert.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      SY_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls_ca));
    }
    if (!options.tls_cert.empty()) {
      SY_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(options.tls_cert));
      SY_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(options.tls_key));
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // Rich error details (a validation report) arrive as trailing metadata.
  args.SetInt(GRPC_ARG_MAX_METADATA_SIZE, 1 << 20);
  return grpc::CreateCustomChannel(options.address, creds, args);
}

void PrepareContext(const ClientOptions& options, grpc::ClientContext* context) {
  if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
  if (options.timeout > absl::ZeroDuration() && options.timeout != absl::InfiniteDuration()) {
    context->set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoMilliseconds(options.timeout));
  }
}

}  // namespace switchyard::rpc
