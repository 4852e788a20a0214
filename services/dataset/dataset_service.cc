#include "services/dataset/dataset_service.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/rpc/status.pb.h"
#include "services/dataset/dataset_proto.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"

namespace switchyard::dataset {
namespace {

constexpr int kDefaultExportChunk = 1 << 20;
constexpr int kMaxExportChunk = 16 << 20;

std::string RequestId(const grpc::CallbackServerContext& context) {
  auto it = context.client_metadata().find("x-request-id");
  if (it != context.client_metadata().end())
    return std::string(it->second.data(), it->second.size());
  return RandomHex(6);
}

// "datasets/{id}" -> id.
absl::StatusOr<std::string> ParseDatasetName(const std::string& name, const char* field) {
  std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (parts.size() != 2 || parts[0] != "datasets" || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", name, "\" must look like datasets/{dataset_id}"));
  }
  SY_RETURN_IF_ERROR(DatasetManager::ValidateDatasetId(parts[1]));
  return parts[1];
}

// "datasets/{id}/versions/{n|latest}" or "datasets/{id}" (latest) -> (id, n; 0 = latest).
absl::StatusOr<std::pair<std::string, int64_t>> ParseVersionName(const std::string& name,
                                                                 bool allow_dataset_name) {
  std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (allow_dataset_name && parts.size() == 2) {
    SY_ASSIGN_OR_RETURN(std::string id, ParseDatasetName(name, "name"));
    return std::make_pair(id, int64_t{0});
  }
  int64_t version = 0;
  if (parts.size() != 4 || parts[0] != "datasets" || parts[2] != "versions" ||
      (parts[3] != "latest" && (!absl::SimpleAtoi(parts[3], &version) || version <= 0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name \"", name, "\" must look like datasets/{dataset_id}/versions/{number|latest}"));
  }
  SY_RETURN_IF_ERROR(DatasetManager::ValidateDatasetId(parts[1]));
  return std::make_pair(parts[1], version);
}

Split ToSplit(v1::DatasetSplit split) {
  return split == v1::DATASET_SPLIT_VALIDATION ? Split::kValidation : Split::kTrain;
}

// A failed validation: INVALID_ARGUMENT whose message lists the first errors
// and whose google.rpc.Status details carry the whole report.
grpc::Status ValidationFailure(const v1::ValidationReport& report) {
  std::string msg = absl::StrCat("dataset has ", report.error_count(), " error(s)");
  if (report.error_count() == 0) {
    msg = absl::StrCat("strict mode: dataset has ", report.warning_count(), " warning(s)");
  }
  int shown = 0;
  for (const v1::Issue& issue : report.issues()) {
    if (report.error_count() > 0 && issue.severity() != v1::Issue::ERROR) continue;
    if (++shown > 3) break;
    absl::StrAppend(&msg, shown == 1 ? ": " : "; ", issue.file().empty() ? "" : issue.file() + " ",
                    issue.line() > 0 ? absl::StrCat("line ", issue.line(), " ") : "",
                    issue.field().empty() ? "" : issue.field() + ": ", issue.message());
  }
  // The details travel in a trailer, base64-encoded, and gRPC clients accept
  // 8 KiB of metadata by default: list issues up to a byte budget (counts by
  // kind stay complete) rather than lose the whole report.
  constexpr size_t kMaxDetailsBytes = 4000;
  v1::ValidationReport trimmed = report;
  while (trimmed.ByteSizeLong() > kMaxDetailsBytes && trimmed.issues_size() > 0) {
    trimmed.mutable_issues()->RemoveLast();
    trimmed.set_truncated(true);
  }
  for (v1::DatasetStats* stats :
       {trimmed.mutable_train_stats(), trimmed.mutable_validation_stats()}) {
    if (trimmed.ByteSizeLong() > kMaxDetailsBytes) stats->clear_labels();
  }
  google::rpc::Status details;
  details.set_code(grpc::StatusCode::INVALID_ARGUMENT);
  details.set_message(msg);
  details.add_details()->PackFrom(trimmed);
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg, details.SerializeAsString());
}

// Shared by UploadDataset and AppendExamples: the first message opens a
// session, later ones write, the half-close commits. A cancelled call (client
// killed, deadline) never commits: the session's destructor removes staging.
template <typename Request>
class UploadReactor : public grpc::ServerReadReactor<Request> {
 public:
  UploadReactor(DatasetServiceImpl* service, grpc::CallbackServerContext* context,
                v1::UploadDatasetResponse* response)
      : service_(service),
        context_(context),
        response_(response),
        request_id_(RequestId(*context)) {
    absl::Status s = service_->auth().Authorize(*context, rpc::Role::kAdmin);
    if (!s.ok()) {
      Fail(s);
      return;
    }
    this->StartRead(&request_);
  }

  // Writing, hashing and validating a chunk (and the final fsync) run on the
  // service's upload workers, not on gRPC's callback thread. The next read
  // starts only when this chunk is done, so chunks stay in order.
  void OnReadDone(bool ok) override {
    service_->upload_workers().Submit([this, ok] { Process(ok); });
  }

  void OnDone() override { delete this; }

 private:
  void Process(bool ok) {
    if (!ok) {
      Complete();
      return;
    }
    absl::Status s = Handle();
    if (!s.ok()) {
      Fail(s);
      return;
    }
    this->StartRead(&request_);
  }
  absl::Status Handle();
  absl::Status Open(const v1::UploadHeader& header);
  absl::Status Open(const v1::AppendHeader& header);

  void Fail(const absl::Status& s) {
    session_.reset();
    service_->metrics().uploads.Add({{"result", "failed"}}).Increment();
    SY_LOG_REQ(kWarning, "dataset", request_id_) << "upload failed: " << s.message();
    this->Finish(rpc::ToGrpcStatus(s));
  }

  void Complete() {
    if (context_->IsCancelled()) {
      Fail(absl::CancelledError("upload cancelled by the client; nothing was stored"));
      return;
    }
    if (session_ == nullptr) {
      Fail(absl::InvalidArgumentError("upload stream had no header message"));
      return;
    }
    if (expected_bytes_ > 0 && session_->bytes_received() != expected_bytes_) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("upload ended after ", session_->bytes_received(), " of ", expected_bytes_,
                       " announced bytes; nothing was stored")));
      return;
    }
    absl::StatusOr<UploadResult> result = session_->Commit();
    session_.reset();
    if (!result.ok()) {
      Fail(result.status());
      return;
    }
    DatasetMetrics& m = service_->metrics();
    for (const auto& [kind, count] : result->report.counts) {
      if (count.severity == Severity::kError)
        m.validation_errors.Add({{"kind", kind}}).Increment(count.count);
    }
    ToProto(result->report, response_->mutable_report());
    if (!result->report.valid) {
      m.uploads.Add({{"result", "invalid"}}).Increment();
      SY_LOG_REQ(kInfo, "dataset", request_id_)
          << "upload rejected errors=" << result->report.error_count
          << " warnings=" << result->report.warning_count;
      this->Finish(ValidationFailure(response_->report()));
      return;
    }
    if (result->version) {
      ToProto(*result->version, response_->mutable_version());
      m.uploads.Add({{"result", "committed"}}).Increment();
      service_->RefreshGauges();
      SY_LOG_REQ(kInfo, "dataset", request_id_)
          << "committed datasets/" << result->version->dataset_id << "/versions/"
          << result->version->version << " examples=" << result->report.train_stats.examples
          << " warnings=" << result->report.warning_count;
    } else {
      m.uploads.Add({{"result", "validated"}}).Increment();
    }
    this->Finish(grpc::Status::OK);
  }

  DatasetServiceImpl* service_;
  grpc::CallbackServerContext* context_;
  v1::UploadDatasetResponse* response_;
  std::string request_id_;
  Request request_;
  std::unique_ptr<UploadSession> session_;
  int64_t expected_bytes_ = 0;
};

template <>
absl::Status UploadReactor<v1::UploadDatasetRequest>::Handle() {
  if (request_.has_header()) return Open(request_.header());
  if (session_ == nullptr) {
    return absl::InvalidArgumentError("the first UploadDatasetRequest must carry the header");
  }
  const v1::FileChunk& chunk = request_.chunk();
  service_->metrics().upload_bytes.Increment(static_cast<double>(chunk.data().size()));
  return session_->Write(ToSplit(chunk.split()), chunk.data());
}

template <>
absl::Status UploadReactor<v1::AppendExamplesRequest>::Handle() {
  if (request_.has_header()) return Open(request_.header());
  if (session_ == nullptr) {
    return absl::InvalidArgumentError("the first AppendExamplesRequest must carry the header");
  }
  service_->metrics().upload_bytes.Increment(static_cast<double>(request_.data().size()));
  return session_->Write(Split::kTrain, request_.data());
}

template <typename Request>
absl::Status UploadReactor<Request>::Open(const v1::UploadHeader& header) {
  if (session_ != nullptr) return absl::InvalidArgumentError("header sent twice");
  UploadRequest r;
  r.dataset_id = header.dataset_id();
  r.format = FromProto(header.format());
  r.strict = header.strict();
  r.validate_only = header.validate_only();
  r.description = header.description();
  r.labels.insert(header.labels().begin(), header.labels().end());
  expected_bytes_ = header.expected_bytes();
  SY_ASSIGN_OR_RETURN(session_, service_->manager()->StartUpload(r));
  SY_LOG_REQ(kInfo, "dataset", request_id_) << "upload started dataset_id=" << r.dataset_id;
  return absl::OkStatus();
}

template <typename Request>
absl::Status UploadReactor<Request>::Open(const v1::AppendHeader& header) {
  if (session_ != nullptr) return absl::InvalidArgumentError("header sent twice");
  SY_ASSIGN_OR_RETURN(std::string id, ParseDatasetName(header.dataset(), "dataset"));
  expected_bytes_ = header.expected_bytes();
  SY_ASSIGN_OR_RETURN(session_,
                      service_->manager()->StartAppend(id, header.base_version(), header.strict(),
                                                       header.validate_only()));
  SY_LOG_REQ(kInfo, "dataset", request_id_) << "append started dataset_id=" << id;
  return absl::OkStatus();
}

// Streams one stored file in chunks, reading the next chunk only after the
// previous write completed (flow control).
class ExportReactor : public grpc::ServerWriteReactor<v1::ExportDatasetResponse> {
 public:
  ExportReactor(DatasetServiceImpl* service, grpc::CallbackServerContext* context,
                const v1::ExportDatasetRequest& request) {
    absl::Status s = Start(service, *context, request);
    if (!s.ok()) {
      Finish(rpc::ToGrpcStatus(s));
      return;
    }
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  absl::Status Start(DatasetServiceImpl* service, const grpc::CallbackServerContext& context,
                     const v1::ExportDatasetRequest& request) {
    SY_RETURN_IF_ERROR(service->auth().Authorize(context, rpc::Role::kUser));
    SY_ASSIGN_OR_RETURN(auto name, ParseVersionName(request.name(), true));
    SY_ASSIGN_OR_RETURN(VersionRecord version,
                        service->manager()->GetVersion(name.first, name.second));
    Split split = ToSplit(request.split());
    SY_ASSIGN_OR_RETURN(std::string path, service->manager()->FilePath(version, split));
    for (const FileRecord& f : version.files) {
      if (f.split == (split == Split::kTrain ? "train" : "validation")) {
        total_ = f.bytes;
        sha256_ = f.sha256;
      }
    }
    chunk_ = request.chunk_bytes() <= 0 ? kDefaultExportChunk
                                        : std::min(request.chunk_bytes(), kMaxExportChunk);
    in_.open(path, std::ios::binary);
    if (!in_) return absl::InternalError(absl::StrCat("cannot read ", path));
    return absl::OkStatus();
  }

  void Next() {
    if (offset_ >= total_ && sent_any_) {
      Finish(grpc::Status::OK);
      return;
    }
    std::string* data = response_.mutable_data();
    data->resize(static_cast<size_t>(std::min<int64_t>(chunk_, total_ - offset_)));
    in_.read(data->data(), static_cast<std::streamsize>(data->size()));
    if (static_cast<size_t>(in_.gcount()) != data->size()) {
      Finish(grpc::Status(grpc::StatusCode::DATA_LOSS, "stored file is shorter than recorded"));
      return;
    }
    response_.set_offset(offset_);
    response_.set_total_bytes(total_);
    response_.set_sha256(sha256_);
    offset_ += static_cast<int64_t>(data->size());
    sent_any_ = true;
    StartWrite(&response_);
  }

  std::ifstream in_;
  v1::ExportDatasetResponse response_;
  int64_t total_ = 0;
  int64_t offset_ = 0;
  int chunk_ = kDefaultExportChunk;
  bool sent_any_ = false;
  std::string sha256_;
};

// Runs `body` after an authorization check and finishes the default reactor.
template <typename Body>
grpc::ServerUnaryReactor* Unary(DatasetServiceImpl* service, grpc::CallbackServerContext* context,
                                rpc::Role role, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status s = service->auth().Authorize(*context, role);
  if (s.ok()) s = body();
  reactor->Finish(rpc::ToGrpcStatus(s));
  return reactor;
}

}  // namespace

DatasetMetrics::DatasetMetrics(prometheus::Registry& registry)
    : uploads(prometheus::BuildCounter()
                  .Name("switchyard_dataset_uploads_total")
                  .Help("Dataset uploads and appends by result.")
                  .Register(registry)),
      upload_bytes(prometheus::BuildCounter()
                       .Name("switchyard_dataset_upload_bytes_total")
                       .Help("Bytes received in dataset uploads.")
                       .Register(registry)
                       .Add({})),
      validation_errors(prometheus::BuildCounter()
                            .Name("switchyard_dataset_validation_errors_total")
                            .Help("Validation errors found in uploads, by kind.")
                            .Register(registry)),
      datasets(prometheus::BuildGauge()
                   .Name("switchyard_dataset_datasets")
                   .Help("Datasets stored.")
                   .Register(registry)
                   .Add({})),
      versions(prometheus::BuildGauge()
                   .Name("switchyard_dataset_versions")
                   .Help("Dataset versions stored.")
                   .Register(registry)
                   .Add({})) {}

DatasetServiceImpl::DatasetServiceImpl(DatasetManager* manager,
                                       std::shared_ptr<const rpc::Authorizer> auth,
                                       prometheus::Registry& registry, int upload_workers)
    : manager_(manager),
      auth_(std::move(auth)),
      metrics_(registry),
      upload_workers_(upload_workers) {
  RefreshGauges();
}

void DatasetServiceImpl::RefreshGauges() {
  absl::StatusOr<int64_t> d = manager_->CountDatasets();
  absl::StatusOr<int64_t> v = manager_->CountVersions();
  if (d.ok()) metrics_.datasets.Set(static_cast<double>(*d));
  if (v.ok()) metrics_.versions.Set(static_cast<double>(*v));
}

grpc::ServerReadReactor<v1::UploadDatasetRequest>* DatasetServiceImpl::UploadDataset(
    grpc::CallbackServerContext* context, v1::UploadDatasetResponse* response) {
  return new UploadReactor<v1::UploadDatasetRequest>(this, context, response);
}

grpc::ServerReadReactor<v1::AppendExamplesRequest>* DatasetServiceImpl::AppendExamples(
    grpc::CallbackServerContext* context, v1::UploadDatasetResponse* response) {
  return new UploadReactor<v1::AppendExamplesRequest>(this, context, response);
}

grpc::ServerUnaryReactor* DatasetServiceImpl::GetDataset(grpc::CallbackServerContext* context,
                                                         const v1::GetDatasetRequest* request,
                                                         v1::Dataset* response) {
  return Unary(this, context, rpc::Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, ParseDatasetName(request->name(), "name"));
    SY_ASSIGN_OR_RETURN(DatasetRecord d, manager_->GetDataset(id));
    ToProto(d, response);
    if (d.latest_version > 0) {
      SY_ASSIGN_OR_RETURN(VersionRecord v, manager_->GetVersion(id, 0));
      ToProto(v, response->mutable_latest());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DatasetServiceImpl::ListDatasets(grpc::CallbackServerContext* context,
                                                           const v1::ListDatasetsRequest* request,
                                                           v1::ListDatasetsResponse* response) {
  return Unary(this, context, rpc::Role::kUser, [&]() -> absl::Status {
    if (request->page_size() < 0) return absl::InvalidArgumentError("page_size must be >= 0");
    SY_ASSIGN_OR_RETURN(DatasetPage page,
                        manager_->ListDatasets(request->page_size(), request->page_token()));
    for (const DatasetRecord& d : page.datasets) ToProto(d, response->add_datasets());
    response->set_next_page_token(page.next_page_token);
    response->set_total_size(static_cast<int32_t>(page.total_size));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DatasetServiceImpl::DeleteDataset(grpc::CallbackServerContext* context,
                                                            const v1::DeleteDatasetRequest* request,
                                                            google::protobuf::Empty*) {
  return Unary(this, context, rpc::Role::kAdmin, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, ParseDatasetName(request->name(), "name"));
    SY_RETURN_IF_ERROR(manager_->DeleteDataset(id));
    RefreshGauges();
    SY_LOG_REQ(kInfo, "dataset", RequestId(*context)) << "deleted datasets/" << id;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DatasetServiceImpl::GetDatasetVersion(
    grpc::CallbackServerContext* context, const v1::GetDatasetVersionRequest* request,
    v1::DatasetVersion* response) {
  return Unary(this, context, rpc::Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(auto name, ParseVersionName(request->name(), false));
    SY_ASSIGN_OR_RETURN(VersionRecord v, manager_->GetVersion(name.first, name.second));
    if (!request->tokenizer_model().empty()) {
      SY_ASSIGN_OR_RETURN(ValidationReport counted,
                          manager_->TokenStats(v, request->tokenizer_model()));
      v.train_stats = counted.train_stats;
      if (counted.validation_stats) v.validation_stats = counted.validation_stats;
    }
    ToProto(v, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DatasetServiceImpl::ListDatasetVersions(
    grpc::CallbackServerContext* context, const v1::ListDatasetVersionsRequest* request,
    v1::ListDatasetVersionsResponse* response) {
  return Unary(this, context, rpc::Role::kUser, [&]() -> absl::Status {
    if (request->page_size() < 0) return absl::InvalidArgumentError("page_size must be >= 0");
    SY_ASSIGN_OR_RETURN(std::string id, ParseDatasetName(request->parent(), "parent"));
    SY_ASSIGN_OR_RETURN(VersionPage page,
                        manager_->ListVersions(id, request->page_size(), request->page_token()));
    for (const VersionRecord& v : page.versions) ToProto(v, response->add_versions());
    response->set_next_page_token(page.next_page_token);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DatasetServiceImpl::DeleteDatasetVersion(
    grpc::CallbackServerContext* context, const v1::DeleteDatasetVersionRequest* request,
    google::protobuf::Empty*) {
  return Unary(this, context, rpc::Role::kAdmin, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(auto name, ParseVersionName(request->name(), false));
    if (name.second == 0) {
      return absl::InvalidArgumentError("name: delete needs a version number, not \"latest\"");
    }
    SY_RETURN_IF_ERROR(manager_->DeleteVersion(name.first, name.second));
    RefreshGauges();
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::ExportDatasetResponse>* DatasetServiceImpl::ExportDataset(
    grpc::CallbackServerContext* context, const v1::ExportDatasetRequest* request) {
  return new ExportReactor(this, context, *request);
}

}  // namespace switchyard::dataset
