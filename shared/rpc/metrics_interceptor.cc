#include "shared/rpc/metrics_interceptor.h"

#include <chrono>
#include <string>

#include "shared/rpc/status_mapping.h"

namespace switchyard::rpc {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

const char* TypeLabel(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unary";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerRpcInfo* info, GrpcServerMetrics* metrics)
      : metrics_(metrics), start_(std::chrono::steady_clock::now()) {
    // "/switchyard.v1.DatasetService/ListDatasets" -> service, method
    std::string full = info->method() ? info->method() : "";
    size_t slash = full.rfind('/');
    std::string service = slash == std::string::npos ? full : full.substr(1, slash - 1);
    std::string method = slash == std::string::npos ? "" : full.substr(slash + 1);
    labels_ = {
        {"grpc_type", TypeLabel(info->type())}, {"grpc_service", service}, {"grpc_method", method}};
    metrics_->started.Add(labels_).Increment();
  }

  ~MetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    auto labels = labels_;
    labels["grpc_code"] = GrpcCodeName(code);
    metrics_->handled.Add(labels).Increment();
    metrics_->handling_seconds
        .Add(labels_, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                              0.5, 1, 2.5, 5, 10})
        .Observe(seconds);
  }

  GrpcServerMetrics* metrics_;
  std::chrono::steady_clock::time_point start_;
  std::map<std::string, std::string> labels_;
  bool recorded_ = false;
};

}  // namespace

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started(prometheus::BuildCounter()
                  .Name("grpc_server_started_total")
                  .Help("RPCs started on the server.")
                  .Register(registry)),
      handled(prometheus::BuildCounter()
                  .Name("grpc_server_handled_total")
                  .Help("RPCs completed on the server, by status code.")
                  .Register(registry)),
      handling_seconds(prometheus::BuildHistogram()
                           .Name("grpc_server_handling_seconds")
                           .Help("Time from the start of an RPC to its status, in seconds.")
                           .Register(registry)) {}

grpc::experimental::Interceptor* MetricsInterceptorFactory::CreateServerInterceptor(
    ServerRpcInfo* info) {
  return new MetricsInterceptor(info, metrics_.get());
}

}  // namespace switchyard::rpc
