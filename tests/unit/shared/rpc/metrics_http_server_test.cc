#include "shared/rpc/metrics_http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <sys/socket.h>
#include <unistd.h>

namespace switchyard::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and returns everything the server sends back.
std::string Exchange(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  ::send(fd, request.data(), request.size(), 0);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST(MetricsHttpServerTest, ServesTheRegistryAsPrometheusText) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("switchyard_test_things_total")
                     .Help("Things.")
                     .Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  MetricsHttpServer server(registry);
  auto port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  std::string reply = Exchange(*port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(reply, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(reply, HasSubstr("# TYPE switchyard_test_things_total counter"));
  EXPECT_THAT(reply, HasSubstr("switchyard_test_things_total{kind=\"a\"} 3"));
  EXPECT_THAT(Exchange(*port, "GET / HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Exchange(*port, "POST /metrics HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(Exchange(*port, "garbage\r\n\r\n"), StartsWith("HTTP/1.1 400"));
  std::string head = Exchange(*port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("switchyard_test_things_total{")));
}

TEST(MetricsHttpServerTest, PortInUseIsAnErrorNamingTheAddress) {
  auto registry = std::make_shared<prometheus::Registry>();
  MetricsHttpServer first(registry);
  auto port = first.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  MetricsHttpServer second(registry);
  const std::string address = "127.0.0.1:" + std::to_string(*port);
  auto again = second.Start(address);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status().message(), HasSubstr(address));
  EXPECT_FALSE(second.Start("no-port").ok());
}

TEST(MetricsHttpServerTest, StopsPromptlyAndTwice) {
  MetricsHttpServer server(std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  server.Stop();
  server.Stop();
}

}  // namespace
}  // namespace switchyard::rpc
