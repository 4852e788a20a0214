// ServerRunner owns one gRPC server and its /metrics endpoint: callback
// services, grpc.health.v1.Health (SERVING per registered service and for ""),
// server reflection, message-size limits, optional TLS / mTLS, the gRPC metrics
// interceptor, and a drain on shutdown (health goes NOT_SERVING, in-flight
// calls get up to `drain_timeout` to finish).
//
// Thread-safe: Shutdown() may be called from any thread, once Start() returned.
#ifndef SWITCHYARD_SHARED_RPC_SERVER_RUNNER_H_
#define SWITCHYARD_SHARED_RPC_SERVER_RUNNER_H_

#include <grpcpp/server.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "shared/rpc/metrics_http_server.h"

namespace switchyard::rpc {

struct ServerOptions {
  // host:port; port 0 picks a free port (see grpc_port()).
  std::string grpc_listen = "127.0.0.1:50051";
  // host:port for Prometheus text at /metrics; empty disables it.
  std::string metrics_listen = "127.0.0.1:9464";
  // PEM files. With cert and key the gRPC port speaks TLS; with a client CA
  // too, clients must present a certificate it signed (mTLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  int max_message_bytes = 64 << 20;
  absl::Duration drain_timeout = absl::Seconds(30);
};

class ServerRunner {
 public:
  ServerRunner(ServerOptions options, std::shared_ptr<prometheus::Registry> registry);
  ~ServerRunner();

  // Registers a service before Start(); `health_name` is its full proto name
  // ("switchyard.v1.DatasetService"). The runner does not own it.
  void AddService(grpc::Service* service, const std::string& health_name);

  // Binds both ports and starts serving. Errors name the address or file.
  absl::Status Start();
  int grpc_port() const { return grpc_port_; }
  // A channel to this server that skips the network (services of one
  // process calling each other); after Start(). Calls go through the same
  // interceptors and authorization as remote ones.
  std::shared_ptr<grpc::Channel> InProcessChannel();
  int metrics_port() const { return metrics_port_; }
  // Marks every service NOT_SERVING and drains; idempotent.
  void Shutdown();
  // Blocks until the server has shut down.
  void Wait();

 private:
  ServerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::vector<std::pair<grpc::Service*, std::string>> services_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread and the threads it
// starts later; call first thing in main().
void BlockTerminationSignals();
// Waits for SIGTERM or SIGINT; returns the signal number.
int WaitForTerminationSignal();

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_SERVER_RUNNER_H_
