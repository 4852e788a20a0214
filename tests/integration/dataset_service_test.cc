// The dataset service over real gRPC in-process: ServerRunner on 127.0.0.1:0
// (health, metrics interceptor, /metrics, TLS, auth) with DatasetServiceImpl
// and a client channel, as a deployment runs them.
#include "services/dataset/dataset_service.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/client_callback.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/rpc/status.pb.h"
#include "reflection_v1alpha.pb.h"
#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_manager.h"
#include "shared/core/file_util.h"
#include "shared/core/sha256.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/client_channel.h"
#include "shared/rpc/server_runner.h"
#include "switchyard/v1/dataset.grpc.pb.h"
#include "tests/testing/dataset_fixtures.h"

namespace switchyard::dataset {
namespace {

using ::switchyard::testing::ChatLine;
using ::switchyard::testing::ChatLines;
using ::switchyard::testing::Sha256Of;

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr char kAdminToken[] = "admin-token-0123456789";
constexpr char kUserToken[] = "user-token-0123456789";
constexpr char kServiceName[] = "switchyard.v1.DatasetService";

// Polls `done` every 10 ms for up to 10 s; true once it holds.
template <typename Predicate>
bool Eventually(Predicate done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

struct ServerConfig {
  std::shared_ptr<const rpc::Authorizer> auth = std::make_shared<rpc::Authorizer>();
  std::string tls_cert;
  std::string tls_key;
  int64_t max_upload_bytes = int64_t{1} << 30;
};

class DatasetServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/dataset_service_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_ + "/data").ok());
  }

  void TearDown() override {
    StopServer();
    (void)RemoveAll(dir_);
  }

  void StartServer(const ServerConfig& config = ServerConfig()) {
    registry_ = std::make_shared<prometheus::Registry>();
    auto catalog = SqliteDatasetCatalog::Open(dir_ + "/data/switchyard.db");
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    ManagerOptions options;
    options.data_dir = dir_ + "/data";
    options.max_upload_bytes = config.max_upload_bytes;
    options.validator.min_examples = 1;
    options.validator.recommended_examples = 1;
    auto manager = DatasetManager::Open(options, std::move(*catalog));
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
    service_ = std::make_unique<DatasetServiceImpl>(manager_.get(), config.auth, *registry_);

    rpc::ServerOptions server_options;
    server_options.grpc_listen = "127.0.0.1:0";
    server_options.metrics_listen = "127.0.0.1:0";
    server_options.tls_cert = config.tls_cert;
    server_options.tls_key = config.tls_key;
    server_options.drain_timeout = absl::Seconds(2);
    runner_ = std::make_unique<rpc::ServerRunner>(server_options, registry_);
    runner_->AddService(service_.get(), kServiceName);
    absl::Status s = runner_->Start();
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_GT(runner_->grpc_port(), 0);
    ASSERT_GT(runner_->metrics_port(), 0);
    if (config.tls_cert.empty()) {
      channel_ = grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
      stub_ = v1::DatasetService::NewStub(channel_);
    }
  }

  void StopServer() {
    if (runner_) {
      runner_->Shutdown();
      runner_->Wait();
    }
    stub_.reset();
    channel_.reset();
    runner_.reset();
    service_.reset();
    manager_.reset();
  }

  std::string Address() const { return absl::StrCat("127.0.0.1:", runner_->grpc_port()); }
  std::string StagingDir() const { return dir_ + "/data/datasets/.staging"; }

  static std::set<std::string> Entries(const std::string& path) {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(path, ec)) out.insert(e.path().filename().string());
    return out;
  }

  static void SetToken(grpc::ClientContext* ctx, const std::string& token) {
    if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }

  // Uploads `train` (and `validation`) in `chunk`-byte messages.
  grpc::Status Upload(const std::string& id, const std::string& train,
                      v1::UploadDatasetResponse* response, const std::string& token = "",
                      const std::string& validation = "", size_t chunk = 1000) {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    auto writer = stub_->UploadDataset(&ctx, response);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_dataset_id(id);
    header.mutable_header()->set_description("integration test");
    header.mutable_header()->set_expected_bytes(
        static_cast<int64_t>(train.size() + validation.size()));
    bool ok = writer->Write(header);
    for (auto [data, split] : {std::make_pair(&train, v1::DATASET_SPLIT_TRAIN),
                               std::make_pair(&validation, v1::DATASET_SPLIT_VALIDATION)}) {
      for (size_t pos = 0; ok && pos < data->size(); pos += chunk) {
        v1::UploadDatasetRequest msg;
        msg.mutable_chunk()->set_split(split);
        msg.mutable_chunk()->set_data(data->substr(pos, chunk));
        ok = writer->Write(msg);
      }
    }
    if (ok) writer->WritesDone();
    return writer->Finish();
  }

  // Exports a file; checks offsets as it goes.
  grpc::Status Export(const std::string& name, v1::DatasetSplit split, std::string* data,
                      std::string* sha256, int* messages, const std::string& token = "") {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    v1::ExportDatasetRequest req;
    req.set_name(name);
    req.set_split(split);
    req.set_chunk_bytes(64);
    auto reader = stub_->ExportDataset(&ctx, req);
    v1::ExportDatasetResponse msg;
    *messages = 0;
    while (reader->Read(&msg)) {
      EXPECT_EQ(msg.offset(), static_cast<int64_t>(data->size()));
      data->append(msg.data());
      *sha256 = msg.sha256();
      ++*messages;
    }
    return reader->Finish();
  }

  grpc::Status List(v1::ListDatasetsResponse* response, const std::string& token = "") {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    return stub_->ListDatasets(&ctx, v1::ListDatasetsRequest(), response);
  }

  // grpc.health.v1.Health/Check through a generic stub: HealthCheckRequest is
  // {string service = 1}; the response's field 1 is the status enum
  // (SERVING = 1, NOT_SERVING = 2).
  grpc::Status HealthCheck(const std::string& service, int* serving_status) {
    std::string request;
    request.push_back(0x0A);
    request.push_back(static_cast<char>(service.size()));
    request += service;
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    grpc::ByteBuffer response_buffer;
    grpc::GenericStub generic(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                      &response_buffer, [&](grpc::Status s) { done.set_value(s); });
    grpc::Status status = done.get_future().get();
    *serving_status = -1;
    if (status.ok()) {
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(response_buffer.Dump(&slices).ok());
      std::string bytes;
      for (const grpc::Slice& s : slices) {
        bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
      *serving_status = bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;  // 0: UNKNOWN
    }
    return status;
  }

  // GET /metrics over a plain socket; the body, or "" on failure.
  std::string ScrapeMetrics() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return "";
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(runner_->metrics_port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string response;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
      if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
        char buf[4096];
        ssize_t n;
        while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
      }
    }
    ::close(fd);
    EXPECT_THAT(response, HasSubstr(" 200 "));
    size_t body = response.find("\r\n\r\n");
    return body == std::string::npos ? "" : response.substr(body + 4);
  }

  // The value of a counter with exactly these labels in the registry, or -1.
  double CounterValue(const std::string& family, const std::map<std::string, std::string>& labels) {
    for (const prometheus::MetricFamily& f : registry_->Collect()) {
      if (f.name != family) continue;
      for (const prometheus::ClientMetric& m : f.metric) {
        std::map<std::string, std::string> have;
        for (const auto& l : m.label) have[l.name] = l.value;
        if (have == labels) return m.counter.value;
      }
    }
    return -1;
  }

  std::string dir_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<DatasetManager> manager_;
  std::unique_ptr<DatasetServiceImpl> service_;
  std::unique_ptr<rpc::ServerRunner> runner_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DatasetService::Stub> stub_;
};

TEST_F(DatasetServiceTest, UploadListGetExportRoundTripIsByteIdentical) {
  StartServer();
  const std::string train = ChatLines(40);
  const std::string validation = ChatLines(5, 500);
  v1::UploadDatasetResponse uploaded;
  grpc::Status s = Upload("timetable", train, &uploaded, "", validation, /*chunk=*/100);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(uploaded.has_version());
  EXPECT_EQ(uploaded.version().name(), "datasets/timetable/versions/1");
  EXPECT_EQ(uploaded.version().format(), v1::DATASET_FORMAT_CHAT);
  EXPECT_TRUE(uploaded.report().valid());
  EXPECT_EQ(uploaded.report().train_stats().examples(), 40);
  EXPECT_EQ(uploaded.report().validation_stats().examples(), 5);
  ASSERT_EQ(uploaded.version().files_size(), 2);
  EXPECT_EQ(uploaded.version().files(0).split(), v1::DATASET_SPLIT_TRAIN);
  EXPECT_EQ(uploaded.version().files(0).sha256(), Sha256Of(train));
  EXPECT_EQ(uploaded.version().files(0).bytes(), static_cast<int64_t>(train.size()));

  v1::ListDatasetsResponse list;
  ASSERT_TRUE(List(&list).ok());
  ASSERT_EQ(list.datasets_size(), 1);
  EXPECT_EQ(list.datasets(0).name(), "datasets/timetable");
  EXPECT_EQ(list.datasets(0).latest_version(), 1);
  EXPECT_EQ(list.datasets(0).description(), "integration test");
  EXPECT_EQ(list.total_size(), 1);

  grpc::ClientContext get_ctx;
  v1::GetDatasetRequest get;
  get.set_name("datasets/timetable");
  v1::Dataset dataset;
  ASSERT_TRUE(stub_->GetDataset(&get_ctx, get, &dataset).ok());
  EXPECT_EQ(dataset.version_count(), 1);
  EXPECT_EQ(dataset.latest().files(0).sha256(), Sha256Of(train));

  std::string exported, sha;
  int messages = 0;
  s = Export("datasets/timetable", v1::DATASET_SPLIT_UNSPECIFIED, &exported, &sha, &messages);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(exported, train);
  EXPECT_EQ(sha, Sha256Of(train));
  EXPECT_GT(messages, 10);  // really chunked

  std::string exported_validation;
  s = Export("datasets/timetable/versions/1", v1::DATASET_SPLIT_VALIDATION, &exported_validation,
             &sha, &messages);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(exported_validation, validation);
  EXPECT_EQ(sha, Sha256Of(validation));
}

TEST_F(DatasetServiceTest, AppendVersionsAndDeleteOverGrpc) {
  StartServer();
  const std::string base = ChatLines(3);
  v1::UploadDatasetResponse uploaded;
  ASSERT_TRUE(Upload("grow", base, &uploaded).ok());

  const std::string extra = ChatLines(2, 70);
  {
    grpc::ClientContext ctx;
    v1::UploadDatasetResponse appended;
    auto writer = stub_->AppendExamples(&ctx, &appended);
    v1::AppendExamplesRequest header;
    header.mutable_header()->set_dataset("datasets/grow");
    ASSERT_TRUE(writer->Write(header));
    v1::AppendExamplesRequest data;
    data.set_data(extra);
    ASSERT_TRUE(writer->Write(data));
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(appended.version().version(), 2);
    EXPECT_EQ(appended.version().parent_version(), 1);
    EXPECT_EQ(appended.version().files(0).sha256(), Sha256Of(base + extra));
  }

  {
    grpc::ClientContext ctx;
    v1::ListDatasetVersionsRequest req;
    req.set_parent("datasets/grow");
    v1::ListDatasetVersionsResponse resp;
    ASSERT_TRUE(stub_->ListDatasetVersions(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.versions_size(), 2);
    EXPECT_EQ(resp.versions(0).version(), 1);
    EXPECT_EQ(resp.versions(1).version(), 2);
  }
  {
    grpc::ClientContext ctx;
    v1::GetDatasetVersionRequest req;
    req.set_name("datasets/grow/versions/latest");
    v1::DatasetVersion v;
    ASSERT_TRUE(stub_->GetDatasetVersion(&ctx, req, &v).ok());
    EXPECT_EQ(v.version(), 2);
    EXPECT_EQ(v.train_stats().examples(), 5);
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteDatasetVersionRequest req;
    req.set_name("datasets/grow/versions/1");
    google::protobuf::Empty empty;
    ASSERT_TRUE(stub_->DeleteDatasetVersion(&ctx, req, &empty).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::GetDatasetVersionRequest req;
    req.set_name("datasets/grow/versions/1");
    v1::DatasetVersion v;
    EXPECT_EQ(stub_->GetDatasetVersion(&ctx, req, &v).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteDatasetRequest req;
    req.set_name("datasets/grow");
    google::protobuf::Empty empty;
    ASSERT_TRUE(stub_->DeleteDataset(&ctx, req, &empty).ok());
  }
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(List(&list).ok());
  EXPECT_EQ(list.datasets_size(), 0);
  EXPECT_FALSE(fs::exists(dir_ + "/data/datasets/grow"));
}

TEST_F(DatasetServiceTest, MissingAndMalformedNamesMapToNotFoundAndInvalidArgument) {
  StartServer();
  auto get = [&](const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetDatasetRequest req;
    req.set_name(name);
    v1::Dataset d;
    return stub_->GetDataset(&ctx, req, &d).error_code();
  };
  EXPECT_EQ(get("datasets/missing"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(get("missing"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(get("datasets/Bad Name"), grpc::StatusCode::INVALID_ARGUMENT);

  std::string data, sha;
  int messages;
  EXPECT_EQ(
      Export("datasets/missing", v1::DATASET_SPLIT_TRAIN, &data, &sha, &messages).error_code(),
      grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Export("datasets/x/versions/zero", v1::DATASET_SPLIT_TRAIN, &data, &sha, &messages)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext ctx;
  v1::ListDatasetsRequest req;
  req.set_page_token("%%% not a token %%%");
  v1::ListDatasetsResponse resp;
  EXPECT_EQ(stub_->ListDatasets(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DatasetServiceTest, InvalidUploadIsInvalidArgumentWithReportInErrorDetails) {
  StartServer();
  std::string train = absl::StrCat(
      ChatLines(3), "{not json\n",
      R"({"messages":[{"role":"user","content":"q"},{"role":"bot","content":"a"}]})", "\n");
  v1::UploadDatasetResponse response;
  grpc::Status s = Upload("bad", train, &response);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("line 4"));
  EXPECT_THAT(s.error_message(), HasSubstr("line 5"));

  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(s.error_details()));
  EXPECT_EQ(details.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  ASSERT_EQ(details.details_size(), 1);
  v1::ValidationReport report;
  ASSERT_TRUE(details.details(0).UnpackTo(&report));
  EXPECT_FALSE(report.valid());
  EXPECT_EQ(report.error_count(), 2);
  std::vector<std::pair<std::string, int64_t>> errors;
  for (const v1::Issue& issue : report.issues()) {
    if (issue.severity() == v1::Issue::ERROR) errors.emplace_back(issue.kind(), issue.line());
  }
  EXPECT_THAT(errors, ElementsAre(std::make_pair(std::string("invalid_json"), int64_t{4}),
                                  std::make_pair(std::string("unknown_role"), int64_t{5})));

  // Nothing stored.
  grpc::ClientContext ctx;
  v1::GetDatasetRequest get;
  get.set_name("datasets/bad");
  v1::Dataset d;
  EXPECT_EQ(stub_->GetDataset(&ctx, get, &d).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
  EXPECT_EQ(CounterValue("switchyard_dataset_uploads_total", {{"result", "invalid"}}), 1);
  EXPECT_EQ(CounterValue("switchyard_dataset_validation_errors_total", {{"kind", "invalid_json"}}),
            1);
}

TEST_F(DatasetServiceTest, HugeFailureReportStillReachesADefaultClientWithFullCounts) {
  StartServer();  // stub_ uses a plain channel: the default 8 KiB metadata limit
  std::string train = ChatLines(10);
  for (int i = 0; i < 300; ++i) {
    absl::StrAppend(&train, R"({"messages":[{"role":")", std::string(200, 'r'),
                    R"(","content":"q"},{"role":"assistant","content":"a"}]})", "\n");
  }
  v1::UploadDatasetResponse response;
  grpc::Status s = Upload("huge-report", train, &response);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(s.error_details()));
  v1::ValidationReport report;
  ASSERT_TRUE(details.details(0).UnpackTo(&report));
  EXPECT_TRUE(report.truncated());
  EXPECT_GT(report.issues_size(), 0);
  EXPECT_LT(report.issues_size(), 100);
  EXPECT_EQ(report.error_count(), 300);
  ASSERT_EQ(report.counts_size(), 1);
  EXPECT_EQ(report.counts(0).kind(), "unknown_role");
  EXPECT_EQ(report.counts(0).count(), 300);
  // The echoed role is cut short, not 200 bytes.
  EXPECT_LT(report.issues(0).message().size(), 120u);
}

TEST_F(DatasetServiceTest, VersionStatsCountTokensWithAServerModel) {
  StartServer();
  std::filesystem::create_directories(dir_ + "/data/models");
  std::filesystem::copy(std::string(SWITCHYARD_TEST_DATA_DIR) + "/text/qwen3",
                        dir_ + "/data/models/qwen3", std::filesystem::copy_options::recursive);
  v1::UploadDatasetResponse response;
  ASSERT_TRUE(Upload("counted", ChatLines(12), &response).ok());
  auto get = [&](const std::string& model, v1::DatasetVersion* v) {
    grpc::ClientContext ctx;
    v1::GetDatasetVersionRequest req;
    req.set_name("datasets/counted/versions/1");
    req.set_tokenizer_model(model);
    return stub_->GetDatasetVersion(&ctx, req, v);
  };
  v1::DatasetVersion plain, counted;
  ASSERT_TRUE(get("", &plain).ok());
  EXPECT_EQ(plain.train_stats().total_tokens(), 0);
  grpc::Status s = get("qwen3", &counted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(counted.train_stats().total_tokens(), 0);
  EXPECT_GT(counted.train_stats().tokens_per_example().max(), 0);
  EXPECT_EQ(counted.train_stats().examples(), 12);
  v1::DatasetVersion ignored;
  EXPECT_EQ(get("no-such-model", &ignored).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(get("../etc", &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DatasetServiceTest, ValidateOnlyUploadStoresNothing) {
  StartServer();
  grpc::ClientContext ctx;
  v1::UploadDatasetResponse response;
  auto writer = stub_->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id("dry");
  header.mutable_header()->set_validate_only(true);
  ASSERT_TRUE(writer->Write(header));
  v1::UploadDatasetRequest chunk;
  chunk.mutable_chunk()->set_data(ChatLines(4));
  ASSERT_TRUE(writer->Write(chunk));
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_TRUE(response.report().valid());
  EXPECT_FALSE(response.has_version());
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(List(&list).ok());
  EXPECT_EQ(list.datasets_size(), 0);
  EXPECT_EQ(CounterValue("switchyard_dataset_uploads_total", {{"result", "validated"}}), 1);
}

TEST_F(DatasetServiceTest, ConcurrentUploadsAllCommitWithDistinctVersions) {
  StartServer();
  constexpr int kEach = 4;
  std::vector<std::thread> threads;
  std::vector<grpc::Status> statuses(2 * kEach);
  std::vector<v1::UploadDatasetResponse> responses(2 * kEach);
  for (int i = 0; i < 2 * kEach; ++i) {
    threads.emplace_back([&, i] {
      const std::string id = i < kEach ? absl::StrCat("separate-", i) : "shared";
      statuses[i] = Upload(id, ChatLines(30, 100 * i), &responses[i], "", "", /*chunk=*/512);
    });
  }
  for (std::thread& t : threads) t.join();

  std::vector<int64_t> shared_versions;
  for (int i = 0; i < 2 * kEach; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
    ASSERT_TRUE(responses[i].has_version()) << i;
    if (i < kEach) {
      EXPECT_EQ(responses[i].version().version(), 1);
    } else {
      shared_versions.push_back(responses[i].version().version());
      EXPECT_EQ(responses[i].version().files(0).sha256(), Sha256Of(ChatLines(30, 100 * i)));
    }
  }
  EXPECT_THAT(shared_versions, UnorderedElementsAre(1, 2, 3, 4));

  v1::ListDatasetsResponse list;
  ASSERT_TRUE(List(&list).ok());
  EXPECT_EQ(list.datasets_size(), kEach + 1);
  // Each stored version holds the bytes of the upload that got its number.
  for (int i = kEach; i < 2 * kEach; ++i) {
    std::string data, sha;
    int messages;
    ASSERT_TRUE(
        Export(responses[i].version().name(), v1::DATASET_SPLIT_TRAIN, &data, &sha, &messages)
            .ok());
    EXPECT_EQ(data, ChatLines(30, 100 * i));
  }
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetServiceTest, UploadCancelledHalfWayLeavesNoVersionAndNoStagedFiles) {
  StartServer();
  grpc::ClientContext ctx;
  v1::UploadDatasetResponse response;
  auto writer = stub_->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id("interrupted");
  ASSERT_TRUE(writer->Write(header));
  const std::string data = ChatLines(200);
  for (size_t pos = 0; pos < data.size() / 2; pos += 1000) {
    v1::UploadDatasetRequest chunk;
    chunk.mutable_chunk()->set_data(data.substr(pos, 1000));
    ASSERT_TRUE(writer->Write(chunk));
  }
  // Wait until the server has staged some of the bytes, so the cancel hits an
  // upload in progress.
  ASSERT_TRUE(Eventually([&] {
    for (const std::string& upload : Entries(StagingDir())) {
      std::error_code ec;
      auto size = fs::file_size(StagingDir() + "/" + upload + "/train.jsonl", ec);
      if (!ec && size > 0) return true;
    }
    return false;
  }));

  ctx.TryCancel();  // the client goes away without WritesDone
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();

  EXPECT_TRUE(Eventually([&] { return Entries(StagingDir()).empty(); }))
      << "staging still holds an upload";
  EXPECT_TRUE(Eventually([&] {
    return CounterValue("switchyard_dataset_uploads_total", {{"result", "failed"}}) == 1;
  }));
  EXPECT_EQ(manager_->GetDataset("interrupted").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*manager_->CountVersions(), 0);
  EXPECT_EQ(Entries(dir_ + "/data/datasets"), std::set<std::string>{".staging"});
}

TEST_F(DatasetServiceTest, UploadEndingBeforeExpectedBytesIsRejected) {
  StartServer();
  const std::string data = ChatLines(10);
  grpc::ClientContext ctx;
  v1::UploadDatasetResponse response;
  auto writer = stub_->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id("short");
  header.mutable_header()->set_expected_bytes(static_cast<int64_t>(data.size()));
  ASSERT_TRUE(writer->Write(header));
  v1::UploadDatasetRequest chunk;
  chunk.mutable_chunk()->set_data(data.substr(0, data.size() / 2));
  ASSERT_TRUE(writer->Write(chunk));
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("of ", data.size())));
  EXPECT_EQ(manager_->GetDataset("short").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetServiceTest, UploadWithoutHeaderIsRejected) {
  StartServer();
  {
    grpc::ClientContext ctx;
    v1::UploadDatasetResponse response;
    auto writer = stub_->UploadDataset(&ctx, &response);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("header"));
  }
  {
    grpc::ClientContext ctx;
    v1::UploadDatasetResponse response;
    auto writer = stub_->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest chunk;
    chunk.mutable_chunk()->set_data(ChatLines(2));
    writer->Write(chunk);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("header"));
  }
}

TEST_F(DatasetServiceTest, UploadOverTheServerLimitIsResourceExhaustedAndStoresNothing) {
  ServerConfig config;
  config.max_upload_bytes = 2000;
  StartServer(config);
  v1::UploadDatasetResponse response;
  grpc::Status s = Upload("huge", ChatLines(50), &response, "", "", /*chunk=*/500);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("2000"));
  EXPECT_EQ(manager_->GetDataset("huge").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Eventually([&] { return Entries(StagingDir()).empty(); }));
}

TEST_F(DatasetServiceTest, HealthReportsServingForTheDatasetServiceAndTheServer) {
  StartServer();
  int status = 0;
  grpc::Status s = HealthCheck(kServiceName, &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(status, 1);  // SERVING
  s = HealthCheck("", &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(status, 1);
  EXPECT_EQ(HealthCheck("switchyard.v1.NoSuchService", &status).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(DatasetServiceTest, ReflectionListsTheDatasetAndHealthServices) {
  StartServer();
  namespace refl = switchyard::testing::reflection;
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
  grpc::ClientContext ctx;
  std::unique_ptr<
      grpc::ClientReaderWriter<refl::ServerReflectionRequest, refl::ServerReflectionResponse>>
      stream(grpc::internal::ClientReaderWriterFactory<
             refl::ServerReflectionRequest, refl::ServerReflectionResponse>::Create(channel_.get(),
                                                                                    method, &ctx));
  refl::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  refl::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.insert(service.name());
  }
  EXPECT_TRUE(names.count(kServiceName)) << "reflection lists " << names.size() << " services";
  EXPECT_TRUE(names.count("grpc.health.v1.Health"));
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(DatasetServiceTest, AuthRequiresATokenAndAdminForWrites) {
  ServerConfig config;
  auto auth = rpc::Authorizer::FromText(
      absl::StrCat(kAdminToken, " admin\n", kUserToken, " user\n"), "tokens");
  ASSERT_TRUE(auth.ok()) << auth.status();
  config.auth = *auth;
  StartServer(config);

  v1::ListDatasetsResponse list;
  EXPECT_EQ(List(&list).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(List(&list, "wrong-token-0123456789").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(List(&list, kUserToken).ok());
  EXPECT_TRUE(List(&list, kAdminToken).ok());

  v1::UploadDatasetResponse response;
  EXPECT_EQ(Upload("secured", ChatLines(3), &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Upload("secured", ChatLines(3), &response, kUserToken).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status s = Upload("secured", ChatLines(3), &response, kAdminToken);
  ASSERT_TRUE(s.ok()) << s.error_message();

  // Users read and export; only admins delete.
  std::string data, sha;
  int messages;
  EXPECT_TRUE(
      Export("datasets/secured", v1::DATASET_SPLIT_TRAIN, &data, &sha, &messages, kUserToken).ok());
  EXPECT_EQ(data, ChatLines(3));
  data.clear();
  EXPECT_EQ(
      Export("datasets/secured", v1::DATASET_SPLIT_TRAIN, &data, &sha, &messages).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  auto remove = [&](const std::string& token) {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    v1::DeleteDatasetRequest req;
    req.set_name("datasets/secured");
    google::protobuf::Empty empty;
    return stub_->DeleteDataset(&ctx, req, &empty).error_code();
  };
  EXPECT_EQ(remove(kUserToken), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(remove(kAdminToken), grpc::StatusCode::OK);

  // Health stays open without a token.
  int status = 0;
  ASSERT_TRUE(HealthCheck(kServiceName, &status).ok());
  EXPECT_EQ(status, 1);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetServiceTest, MetricsEndpointExportsGrpcAndDatasetMetrics) {
  StartServer();
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(List(&list).ok());
  ASSERT_TRUE(List(&list).ok());
  v1::UploadDatasetResponse response;
  ASSERT_TRUE(Upload("metered", ChatLines(3), &response).ok());
  grpc::ClientContext ctx;
  v1::GetDatasetRequest get;
  get.set_name("datasets/nope");
  v1::Dataset d;
  ASSERT_EQ(stub_->GetDataset(&ctx, get, &d).error_code(), grpc::StatusCode::NOT_FOUND);

  EXPECT_EQ(CounterValue("grpc_server_handled_total", {{"grpc_type", "unary"},
                                                       {"grpc_service", kServiceName},
                                                       {"grpc_method", "ListDatasets"},
                                                       {"grpc_code", "OK"}}),
            2);
  EXPECT_EQ(CounterValue("grpc_server_handled_total", {{"grpc_type", "unary"},
                                                       {"grpc_service", kServiceName},
                                                       {"grpc_method", "GetDataset"},
                                                       {"grpc_code", "NOT_FOUND"}}),
            1);
  EXPECT_EQ(CounterValue("grpc_server_started_total", {{"grpc_type", "client_stream"},
                                                       {"grpc_service", kServiceName},
                                                       {"grpc_method", "UploadDataset"}}),
            1);

  const std::string body = ScrapeMetrics();
  bool handled_line = false;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, "grpc_server_handled_total{") &&
        absl::StrContains(line, "grpc_method=\"ListDatasets\"") &&
        absl::StrContains(line, "grpc_code=\"OK\"")) {
      handled_line = true;
      EXPECT_TRUE(absl::EndsWith(line, " 2")) << line;
    }
  }
  EXPECT_TRUE(handled_line) << body;
  EXPECT_THAT(body, HasSubstr("switchyard_dataset_uploads_total{result=\"committed\"} 1"));
  EXPECT_THAT(body, HasSubstr("switchyard_dataset_upload_bytes_total"));
  EXPECT_THAT(body, HasSubstr("grpc_server_handling_seconds_bucket"));
  EXPECT_THAT(body, HasSubstr("switchyard_dataset_datasets 1"));
  EXPECT_THAT(body, HasSubstr("switchyard_dataset_versions 1"));
}

TEST_F(DatasetServiceTest, TlsServerAcceptsClientsTrustingItsCaAndRefusesPlaintext) {
  const std::string key = dir_ + "/server.key", cert = dir_ + "/server.crt";
  const std::string command =
      absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -keyout ", key, " -out ", cert,
                   " -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1",
                   " >/dev/null 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ServerConfig config;
  config.tls_cert = cert;
  config.tls_key = key;
  StartServer(config);

  rpc::ClientOptions options;
  options.address = absl::StrCat("localhost:", runner_->grpc_port());
  options.tls_ca = cert;
  options.timeout = absl::Seconds(20);
  auto channel = rpc::MakeChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = v1::DatasetService::NewStub(*channel);
  {
    grpc::ClientContext ctx;
    rpc::PrepareContext(options, &ctx);
    v1::ListDatasetsResponse list;
    grpc::Status s = stub->ListDatasets(&ctx, v1::ListDatasetsRequest(), &list);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  {
    auto plain = v1::DatasetService::NewStub(
        grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListDatasetsResponse list;
    grpc::Status s = plain->ListDatasets(&ctx, v1::ListDatasetsRequest(), &list);
    EXPECT_FALSE(s.ok());
  }
}

TEST_F(DatasetServiceTest, StartFailsNamingTheAddressWhenThePortIsTaken) {
  StartServer();
  rpc::ServerOptions options;
  options.grpc_listen = Address();  // already bound by the running server
  options.metrics_listen = "";
  rpc::ServerRunner second(options, std::make_shared<prometheus::Registry>());
  absl::Status s = second.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(Address()));
}

}  // namespace
}  // namespace switchyard::dataset
