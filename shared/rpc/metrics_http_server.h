// MetricsHttpServer: serves one Prometheus registry as text at GET /metrics.
//
// A small HTTP/1.1 server on its own thread, one connection at a time (a
// scrape is one short request). It replaces prometheus-cpp's civetweb-based
// Exposer, whose 100 KiB worker stacks cannot hold the static TLS LibTorch's
// dependencies bring into the process (pthread_create fails with EINVAL), and
// which kept shutdown waiting ~2 s on its poll loop. Thread-safe: Start once,
// Stop from any thread.

#ifndef SWITCHYARD_SHARED_RPC_METRICS_HTTP_SERVER_H_
#define SWITCHYARD_SHARED_RPC_METRICS_HTTP_SERVER_H_

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace switchyard::rpc {

class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();  // stops

  // Binds `listen` ("host:port", port 0 for any free one, "[::1]:port" for
  // IPv6) and starts serving. Returns the bound port. UNAVAILABLE naming the
  // address when it cannot bind (in use, bad host).
  absl::StatusOr<int> Start(const std::string& listen);
  // Stops accepting, finishes the request in progress, joins the thread.
  void Stop();

 private:
  void Serve();
  void Handle(int fd);

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> stopping_{false};
};

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_METRICS_HTTP_SERVER_H_
