// Standard gRPC server metrics, recorded for every call by one interceptor:
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
// (names and labels as go-grpc-prometheus exports them; codes as the
// canonical upper-case names, e.g. "INVALID_ARGUMENT"). The registry is
// injected. Thread-safe.
#ifndef SWITCHYARD_SHARED_RPC_METRICS_INTERCEPTOR_H_
#define SWITCHYARD_SHARED_RPC_METRICS_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>

namespace switchyard::rpc {

struct GrpcServerMetrics {
  explicit GrpcServerMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& started;
  prometheus::Family<prometheus::Counter>& handled;
  prometheus::Family<prometheus::Histogram>& handling_seconds;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(std::shared_ptr<GrpcServerMetrics> metrics)
      : metrics_(std::move(metrics)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  std::shared_ptr<GrpcServerMetrics> metrics_;
};

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_METRICS_INTERCEPTOR_H_
