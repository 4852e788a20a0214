#include "shared/rpc/server_runner.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/metrics_interceptor.h"

namespace switchyard::rpc {
namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const ServerOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) {
    if (!o.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions ssl(
      o.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  SY_ASSIGN_OR_RETURN(pair.private_key, ReadFile(o.tls_key));
  SY_ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(o.tls_cert));
  ssl.pem_key_cert_pairs.push_back(pair);
  if (!o.tls_client_ca.empty()) {
    SY_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(o.tls_client_ca));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

ServerRunner::ServerRunner(ServerOptions options, std::shared_ptr<prometheus::Registry> registry)
    : options_(std::move(options)), registry_(std::move(registry)) {}

ServerRunner::~ServerRunner() { Shutdown(); }

void ServerRunner::AddService(grpc::Service* service, const std::string& health_name) {
  services_.emplace_back(service, health_name);
}

absl::Status ServerRunner::Start() {
  SY_ASSIGN_OR_RETURN(auto creds, MakeCredentials(options_));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a port
  // already in use and silently take part of its traffic; refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options_.grpc_listen, creds, &grpc_port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  for (auto& [service, name] : services_) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(
      std::make_unique<MetricsInterceptorFactory>(std::make_shared<GrpcServerMetrics>(*registry_)));
  builder.experimental().SetInterceptorCreators(std::move(creators));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", options_.grpc_listen,
                                               " (address in use or invalid?)"));
  }
  auto* health = server_->GetHealthCheckService();
  for (auto& [service, name] : services_) health->SetServingStatus(name, true);
  health->SetServingStatus(true);

  if (!options_.metrics_listen.empty()) {
    metrics_ = std::make_unique<MetricsHttpServer>(registry_);
    absl::StatusOr<int> port = metrics_->Start(options_.metrics_listen);
    if (!port.ok()) {
      metrics_.reset();
      server_->Shutdown();
      server_.reset();
      return port.status();
    }
    metrics_port_ = *port;
  }
  return absl::OkStatus();
}

void ServerRunner::Shutdown() {
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoSeconds(options_.drain_timeout));
}

std::shared_ptr<grpc::Channel> ServerRunner::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  return server_->InProcessChannel(args);
}

void ServerRunner::Wait() {
  if (server_ != nullptr) server_->Wait();
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace switchyard::rpc
