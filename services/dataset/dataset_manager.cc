#include "services/dataset/dataset_manager.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/dataset/dataset_json.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"

namespace switchyard::dataset {
namespace fs = std::filesystem;
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

int Index(Split split) { return split == Split::kTrain ? 0 : 1; }
const char* SplitName(Split split) { return split == Split::kTrain ? "train" : "validation"; }

int ClampPageSize(int page_size) {
  if (page_size <= 0) return kDefaultPageSize;
  return std::min(page_size, kMaxPageSize);
}

absl::StatusOr<std::string> DecodeToken(const std::string& token) {
  std::string out;
  if (!token.empty() && !absl::WebSafeBase64Unescape(token, &out)) {
    return absl::InvalidArgumentError("page_token is not a token this server issued");
  }
  return out;
}

}  // namespace

// ---- UploadSession ----

UploadSession::UploadSession(DatasetManager* manager, UploadRequest request,
                             std::string staging_dir, int64_t parent_version)
    : manager_(manager),
      request_(std::move(request)),
      staging_dir_(std::move(staging_dir)),
      parent_version_(parent_version),
      validator_([&] {
        ValidatorOptions v = manager->options().validator;
        v.format = request_.format;
        v.strict = request_.strict;
        return v;
      }()) {}

UploadSession::~UploadSession() {
  if (!staging_dir_.empty()) (void)RemoveAll(staging_dir_);
}

absl::Status UploadSession::OpenFile(Split split) {
  const int i = Index(split);
  if (opened_[i]) return absl::OkStatus();
  SY_RETURN_IF_ERROR(writers_[i].Open(absl::StrCat(staging_dir_, "/", SplitName(split), ".jsonl")));
  opened_[i] = true;
  return absl::OkStatus();
}

absl::Status UploadSession::Write(Split split, absl::string_view data) {
  return WriteImpl(split, data, true);
}

absl::Status UploadSession::WriteImpl(Split split, absl::string_view data, bool counted) {
  if (done_) return absl::FailedPreconditionError("upload already finished");
  if (!failed_.ok()) return failed_;
  absl::Status s = WriteUnchecked(split, data, counted);
  if (!s.ok()) failed_ = s;  // the session is unusable after a failed write
  return s;
}

absl::Status UploadSession::WriteUnchecked(Split split, absl::string_view data, bool counted) {
  if (counted) bytes_ += static_cast<int64_t>(data.size());
  const int64_t limit = manager_->options().max_upload_bytes;
  if (bytes_ > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload is larger than the server's limit of ", limit,
                     " bytes (--max-upload-bytes); nothing was stored"));
  }
  const int i = Index(split);
  if (!request_.validate_only) {  // validate-only stores nothing, so writes nothing
    SY_RETURN_IF_ERROR(OpenFile(split));
    SY_RETURN_IF_ERROR(writers_[i].Append(data));
    hashers_[i].Update(data);
  }
  validator_.Feed(split, data);
  return absl::OkStatus();
}

absl::StatusOr<UploadResult> UploadSession::Commit() {
  if (done_) return absl::FailedPreconditionError("upload already finished");
  if (!failed_.ok()) return failed_;
  done_ = true;
  UploadResult result;
  result.report = validator_.Finish();
  if (!result.report.valid || request_.validate_only) return result;
  SY_RETURN_IF_ERROR(OpenFile(Split::kTrain));  // an empty train file is still a file
  std::vector<FileRecord> files;
  for (Split split : {Split::kTrain, Split::kValidation}) {
    const int i = Index(split);
    if (!opened_[i]) continue;
    SY_RETURN_IF_ERROR(writers_[i].Close());
    const DatasetStats& stats =
        split == Split::kTrain ? result.report.train_stats : *result.report.validation_stats;
    files.push_back(FileRecord{SplitName(split), writers_[i].bytes_written(),
                               hashers_[i].HexDigest(), stats.examples});
  }
  SY_ASSIGN_OR_RETURN(VersionRecord version,
                      manager_->CommitStaged(request_, staging_dir_, parent_version_, result.report,
                                             std::move(files)));
  staging_dir_.clear();  // renamed into place
  result.version = std::move(version);
  return result;
}

// ---- DatasetManager ----

DatasetManager::DatasetManager(ManagerOptions options, std::unique_ptr<DatasetCatalog> catalog)
    : options_(std::move(options)), catalog_(std::move(catalog)) {}

DatasetManager::~DatasetManager() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

absl::StatusOr<std::unique_ptr<DatasetManager>> DatasetManager::Open(
    ManagerOptions options, std::unique_ptr<DatasetCatalog> catalog) {
  std::unique_ptr<DatasetManager> m(new DatasetManager(std::move(options), std::move(catalog)));
  SY_RETURN_IF_ERROR(MakeDirs(m->options_.data_dir + "/datasets/.staging"));
  // One process per data dir: Recover() would otherwise delete another
  // process's uploads in flight.
  const std::string lock_path = m->options_.data_dir + "/datasets.lock";
  m->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (m->lock_fd_ < 0) return absl::InternalError(absl::StrCat("cannot open ", lock_path));
  if (::flock(m->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("another process is using ",
                                                      m->options_.data_dir, " (", lock_path,
                                                      " is locked); one server per --data-dir"));
  }
  SY_RETURN_IF_ERROR(m->Recover());
  return m;
}

absl::Status DatasetManager::ValidateDatasetId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 63 &&
            ((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= '0' && id[0] <= '9'));
  for (char c : id) {
    ok &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset_id \"", id,
        "\" is invalid: use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a "
        "letter or digit"));
  }
  return absl::OkStatus();
}

std::string DatasetManager::DatasetDir(const std::string& dataset_id) const {
  return absl::StrCat(options_.data_dir, "/datasets/", dataset_id);
}

std::string DatasetManager::VersionDir(const std::string& dataset_id, int64_t version) const {
  return absl::StrCat(DatasetDir(dataset_id), "/v", version);
}

absl::StatusOr<std::string> DatasetManager::NewStagingDir() {
  std::string dir = absl::StrCat(options_.data_dir, "/datasets/.staging/", RandomHex(8));
  SY_RETURN_IF_ERROR(MakeDirs(dir));
  return dir;
}

absl::Status DatasetManager::Recover() {
  std::lock_guard<std::mutex> lock(commit_mu_);
  const std::string root = options_.data_dir + "/datasets";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root + "/.staging", ec)) {
    SY_LOG(kWarning, "dataset") << "removing interrupted upload " << entry.path().string();
    SY_RETURN_IF_ERROR(RemoveAll(entry.path().string()));
  }
  for (const auto& dataset_dir : fs::directory_iterator(root, ec)) {
    const std::string id = dataset_dir.path().filename().string();
    if (id.empty() || id[0] == '.' || !dataset_dir.is_directory()) continue;
    // Only NOT_FOUND means "never committed"; any other catalog error stops
    // the start rather than deleting data that may be committed.
    absl::StatusOr<DatasetRecord> dataset = catalog_->GetDataset(id);
    if (!dataset.ok() && !absl::IsNotFound(dataset.status())) return dataset.status();
    const bool known = dataset.ok();
    for (const auto& version_dir : fs::directory_iterator(dataset_dir.path(), ec)) {
      const std::string name = version_dir.path().filename().string();
      int64_t version = 0;
      bool committed = false;
      if (known && name.size() > 1 && name[0] == 'v' &&
          absl::SimpleAtoi(name.substr(1), &version)) {
        absl::StatusOr<VersionRecord> record = catalog_->GetVersion(id, version);
        if (!record.ok() && !absl::IsNotFound(record.status())) return record.status();
        committed = record.ok();
      }
      if (!committed) {
        SY_LOG(kWarning, "dataset") << "removing uncommitted " << version_dir.path().string();
        SY_RETURN_IF_ERROR(RemoveAll(version_dir.path().string()));
      }
    }
    if (!known) SY_RETURN_IF_ERROR(RemoveAll(dataset_dir.path().string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UploadSession>> DatasetManager::StartUpload(
    const UploadRequest& request) {
  SY_RETURN_IF_ERROR(ValidateDatasetId(request.dataset_id));
  SY_ASSIGN_OR_RETURN(std::string staging, NewStagingDir());
  return std::unique_ptr<UploadSession>(new UploadSession(this, request, staging, 0));
}

absl::StatusOr<std::unique_ptr<UploadSession>> DatasetManager::StartAppend(
    const std::string& dataset_id, int64_t base_version, bool strict, bool validate_only) {
  SY_RETURN_IF_ERROR(ValidateDatasetId(dataset_id));
  SY_ASSIGN_OR_RETURN(DatasetRecord dataset, catalog_->GetDataset(dataset_id));
  SY_ASSIGN_OR_RETURN(VersionRecord base, catalog_->GetVersion(dataset_id, base_version));
  UploadRequest request;
  request.dataset_id = dataset_id;
  request.format = base.format;
  request.strict = strict;
  request.validate_only = validate_only;
  request.description = dataset.description;
  request.labels = dataset.labels;
  SY_ASSIGN_OR_RETURN(std::string staging, NewStagingDir());
  std::unique_ptr<UploadSession> session(new UploadSession(this, request, staging, base.version));
  // Replay the base files through the session so they are hashed and
  // validated with the new examples. They do not count against the limit.
  std::vector<char> buf(1 << 20);
  for (Split split : {Split::kTrain, Split::kValidation}) {
    absl::StatusOr<std::string> path = FilePath(base, split);
    if (!path.ok()) continue;
    std::ifstream in(*path, std::ios::binary);
    if (!in) return absl::InternalError(absl::StrCat("cannot read ", *path));
    char last = '\n';
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      size_t n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      SY_RETURN_IF_ERROR(session->WriteImpl(split, absl::string_view(buf.data(), n), false));
      last = buf[n - 1];
    }
    if (split == Split::kTrain && last != '\n') {
      SY_RETURN_IF_ERROR(session->WriteImpl(split, "\n", false));
    }
  }
  return session;
}

absl::StatusOr<VersionRecord> DatasetManager::CommitStaged(const UploadRequest& request,
                                                           const std::string& staging_dir,
                                                           int64_t parent_version,
                                                           const ValidationReport& report,
                                                           std::vector<FileRecord> files) {
  std::lock_guard<std::mutex> lock(commit_mu_);
  if (parent_version > 0) {
    // An append must not resurrect a dataset deleted while it streamed.
    absl::Status exists = catalog_->GetDataset(request.dataset_id).status();
    if (absl::IsNotFound(exists)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "datasets/", request.dataset_id, " was deleted during the append; nothing was stored"));
    }
    SY_RETURN_IF_ERROR(exists);
  }
  SY_ASSIGN_OR_RETURN(int64_t number, catalog_->NextVersion(request.dataset_id));
  VersionRecord v;
  v.dataset_id = request.dataset_id;
  v.version = number;
  v.format = report.format;
  v.create_time_ms = absl::ToUnixMillis(absl::Now());
  v.parent_version = parent_version;
  v.files = std::move(files);
  v.train_stats = report.train_stats;
  v.validation_stats = report.validation_stats;
  for (const ValidationIssue& issue : report.issues) {
    if (issue.severity == Severity::kWarning) v.warnings.push_back(issue);
  }
  nlohmann::json manifest = {{"dataset_id", v.dataset_id},
                             {"version", v.version},
                             {"format", std::string(FormatName(v.format))},
                             {"create_time_ms", v.create_time_ms},
                             {"parent_version", v.parent_version},
                             {"train_stats", StatsToJson(v.train_stats)}};
  if (v.validation_stats) manifest["validation_stats"] = StatsToJson(*v.validation_stats);
  nlohmann::json files_json = nlohmann::json::array();
  for (const FileRecord& f : v.files) {
    files_json.push_back({{"split", f.split},
                          {"bytes", f.bytes},
                          {"sha256", f.sha256},
                          {"examples", f.examples},
                          {"path", f.split + ".jsonl"}});
  }
  manifest["files"] = files_json;
  SY_RETURN_IF_ERROR(WriteFileAtomic(staging_dir + "/manifest.json", manifest.dump(2) + "\n"));
  if (!fs::exists(DatasetDir(v.dataset_id))) {
    SY_RETURN_IF_ERROR(MakeDirs(DatasetDir(v.dataset_id)));
    SY_RETURN_IF_ERROR(FsyncPath(options_.data_dir + "/datasets"));  // the new entry
  }
  const std::string target = VersionDir(v.dataset_id, v.version);
  if (fs::exists(target)) SY_RETURN_IF_ERROR(RemoveAll(target));  // debris of a lost commit
  SY_RETURN_IF_ERROR(RenameDurably(staging_dir, target));
  DatasetRecord dataset;
  dataset.dataset_id = request.dataset_id;
  dataset.description = request.description;
  dataset.labels = request.labels;
  absl::Status s = catalog_->AddVersion(dataset, v);
  if (!s.ok()) {
    (void)RemoveAll(target);
    return s;
  }
  return v;
}

absl::StatusOr<DatasetRecord> DatasetManager::GetDataset(const std::string& dataset_id) {
  return catalog_->GetDataset(dataset_id);
}

absl::StatusOr<DatasetPage> DatasetManager::ListDatasets(int page_size,
                                                         const std::string& page_token) {
  const int limit = ClampPageSize(page_size);
  SY_ASSIGN_OR_RETURN(std::string after, DecodeToken(page_token));
  DatasetPage page;
  SY_ASSIGN_OR_RETURN(page.datasets, catalog_->ListDatasets(after, limit + 1));
  if (static_cast<int>(page.datasets.size()) > limit) {
    page.datasets.resize(limit);
    page.next_page_token = absl::WebSafeBase64Escape(page.datasets.back().dataset_id);
  }
  SY_ASSIGN_OR_RETURN(page.total_size, catalog_->CountDatasets());
  return page;
}

absl::Status DatasetManager::DeleteDataset(const std::string& dataset_id) {
  std::lock_guard<std::mutex> lock(commit_mu_);
  SY_RETURN_IF_ERROR(catalog_->DeleteDataset(dataset_id));
  // Files go after the catalog row; a crash in between is cleaned by Recover().
  return RemoveAll(DatasetDir(dataset_id));
}

absl::StatusOr<VersionRecord> DatasetManager::GetVersion(const std::string& dataset_id,
                                                         int64_t version) {
  return catalog_->GetVersion(dataset_id, version);
}

absl::StatusOr<VersionPage> DatasetManager::ListVersions(const std::string& dataset_id,
                                                         int page_size,
                                                         const std::string& page_token) {
  const int limit = ClampPageSize(page_size);
  SY_ASSIGN_OR_RETURN(std::string after_text, DecodeToken(page_token));
  int64_t after = 0;
  if (!after_text.empty() && !absl::SimpleAtoi(after_text, &after)) {
    return absl::InvalidArgumentError("page_token is not a token this server issued");
  }
  VersionPage page;
  SY_ASSIGN_OR_RETURN(page.versions, catalog_->ListVersions(dataset_id, after, limit + 1));
  if (static_cast<int>(page.versions.size()) > limit) {
    page.versions.resize(limit);
    page.next_page_token = absl::WebSafeBase64Escape(absl::StrCat(page.versions.back().version));
  }
  return page;
}

absl::Status DatasetManager::DeleteVersion(const std::string& dataset_id, int64_t version) {
  std::lock_guard<std::mutex> lock(commit_mu_);
  SY_RETURN_IF_ERROR(catalog_->DeleteVersion(dataset_id, version));
  return RemoveAll(VersionDir(dataset_id, version));
}

absl::StatusOr<ValidationReport> DatasetManager::TokenStats(const VersionRecord& version,
                                                            const std::string& model) {
  // Model names follow dataset ids (and may not climb out of models/).
  absl::Status valid = ValidateDatasetId(model);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer_model \"", model, "\" is not a model name"));
  }
  std::shared_ptr<const text::ModelText> loaded;
  {
    std::lock_guard<std::mutex> lock(models_mu_);
    auto it = models_.find(model);
    if (it != models_.end()) loaded = it->second;
  }
  if (loaded == nullptr) {
    const std::string dir = absl::StrCat(options_.data_dir, "/models/", model);
    if (!fs::is_directory(dir)) {
      return absl::NotFoundError(
          absl::StrCat("models/", model, " not found under ", options_.data_dir, "/models"));
    }
    SY_ASSIGN_OR_RETURN(text::ModelText m, text::LoadModelText(dir));
    loaded = std::make_shared<const text::ModelText>(std::move(m));
    std::lock_guard<std::mutex> lock(models_mu_);
    models_.try_emplace(model, loaded);
  }
  TokenizerTokenCounter counter(loaded->tokenizer.get(), loaded->chat_template.get(),
                                loaded->template_variables);
  ValidatorOptions options = options_.validator;
  options.format = version.format;
  options.min_examples = 0;
  options.token_counter = &counter;
  SY_ASSIGN_OR_RETURN(std::string train, FilePath(version, Split::kTrain));
  absl::StatusOr<std::string> validation = FilePath(version, Split::kValidation);
  return DatasetValidator::ValidateFiles(options, train, validation.ok() ? *validation : "");
}

std::string VersionFilePath(const std::string& data_dir, const std::string& dataset_id,
                            int64_t version, const std::string& split) {
  return absl::StrCat(data_dir, "/datasets/", dataset_id, "/v", version, "/", split, ".jsonl");
}

absl::StatusOr<std::string> DatasetManager::FilePath(const VersionRecord& version,
                                                     Split split) const {
  for (const FileRecord& f : version.files) {
    if (f.split == SplitName(split)) {
      return VersionFilePath(options_.data_dir, version.dataset_id, version.version, f.split);
    }
  }
  return absl::NotFoundError(absl::StrCat("datasets/", version.dataset_id, "/versions/",
                                          version.version, " has no ", SplitName(split), " file"));
}

}  // namespace switchyard::dataset
