#include "services/dataset/dataset_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_catalog.h"
#include "shared/core/file_util.h"
#include "shared/core/sha256.h"
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

class DatasetManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/dataset_manager_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    options_.data_dir = dir_;
    options_.validator.min_examples = 1;
    options_.validator.recommended_examples = 1;
    OpenManager();
  }
  void TearDown() override {
    manager_.reset();
    (void)RemoveAll(dir_);
  }

  // (Re)opens the manager on the same data dir with a fresh catalog.
  void OpenManager() {
    manager_.reset();
    auto catalog = SqliteDatasetCatalog::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto manager = DatasetManager::Open(options_, std::move(*catalog));
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
  }

  // Uploads `train` (and `validation` when not empty) in `chunk`-byte writes.
  absl::StatusOr<UploadResult> Upload(const std::string& id, const std::string& train,
                                      const std::string& validation = "",
                                      bool validate_only = false, size_t chunk = 100) {
    UploadRequest request;
    request.dataset_id = id;
    request.validate_only = validate_only;
    request.description = "test data";
    request.labels = {{"team", "search"}};
    auto session = manager_->StartUpload(request);
    if (!session.ok()) return session.status();
    for (auto [data, split] :
         {std::make_pair(&train, Split::kTrain), std::make_pair(&validation, Split::kValidation)}) {
      for (size_t pos = 0; pos < data->size(); pos += chunk) {
        absl::Status s = (*session)->Write(split, absl::string_view(*data).substr(pos, chunk));
        if (!s.ok()) return s;
      }
    }
    return (*session)->Commit();
  }

  std::string StagingDir() const { return dir_ + "/datasets/.staging"; }

  // Entries under a directory (names), empty when it does not exist.
  static std::set<std::string> Entries(const std::string& path) {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(path, ec)) out.insert(e.path().filename().string());
    return out;
  }

  // Contents of a stored split of a version.
  std::string StoredFile(const VersionRecord& v, Split split) {
    auto path = manager_->FilePath(v, split);
    EXPECT_TRUE(path.ok()) << path.status();
    if (!path.ok()) return "";
    auto contents = ReadFile(*path);
    EXPECT_TRUE(contents.ok()) << contents.status();
    return contents.ok() ? *contents : "";
  }

  std::string dir_;
  ManagerOptions options_;
  std::unique_ptr<DatasetManager> manager_;
};

TEST_F(DatasetManagerTest, UploadCommitsVersionsWithSha256AndByteIdenticalFiles) {
  const std::string v1_train = ChatLines(5);
  const std::string v2_train = ChatLines(7, 100);
  const std::string v2_validation = ChatLines(2, 500);

  auto first = Upload("support-faq", v1_train);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->version.has_value());
  EXPECT_TRUE(first->report.valid);
  EXPECT_EQ(first->version->version, 1);
  EXPECT_EQ(first->version->parent_version, 0);
  EXPECT_EQ(first->version->format, DatasetFormat::kChat);
  ASSERT_EQ(first->version->files.size(), 1u);
  EXPECT_EQ(first->version->files[0].split, "train");
  EXPECT_EQ(first->version->files[0].bytes, static_cast<int64_t>(v1_train.size()));
  EXPECT_EQ(first->version->files[0].examples, 5);
  EXPECT_EQ(first->version->files[0].sha256, Sha256Of(v1_train));

  auto second = Upload("support-faq", v2_train, v2_validation);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second->version.has_value());
  EXPECT_EQ(second->version->version, 2);
  ASSERT_EQ(second->version->files.size(), 2u);

  // Stored bytes are identical and the recorded digest is the file's.
  for (int64_t n : {1, 2}) {
    auto v = manager_->GetVersion("support-faq", n);
    ASSERT_TRUE(v.ok()) << v.status();
    const std::string& train = n == 1 ? v1_train : v2_train;
    EXPECT_EQ(StoredFile(*v, Split::kTrain), train);
    auto path = manager_->FilePath(*v, Split::kTrain);
    ASSERT_TRUE(path.ok());
    auto digest = Sha256OfFile(*path);
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(v->files[0].sha256, *digest);
    EXPECT_EQ(*digest, Sha256Of(train));
    EXPECT_TRUE(fs::exists(fs::path(*path).parent_path() / "manifest.json"));
  }
  auto v2 = manager_->GetVersion("support-faq", 2);
  EXPECT_EQ(StoredFile(*v2, Split::kValidation), v2_validation);
  ASSERT_TRUE(v2->validation_stats.has_value());
  EXPECT_EQ(v2->validation_stats->examples, 2);
  auto v1 = manager_->GetVersion("support-faq", 1);
  EXPECT_EQ(manager_->FilePath(*v1, Split::kValidation).status().code(),
            absl::StatusCode::kNotFound);

  auto latest = manager_->GetVersion("support-faq", 0);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version, 2);
  auto dataset = manager_->GetDataset("support-faq");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->latest_version, 2);
  EXPECT_EQ(dataset->version_count, 2);
  EXPECT_EQ(dataset->description, "test data");
  EXPECT_EQ(dataset->labels.at("team"), "search");
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetManagerTest, CommittedVersionKeepsWarningsAndStats) {
  auto r = Upload("dups", ChatLines(3) + ChatLine(1) + "\n");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->version.has_value());
  auto v = manager_->GetVersion("dups", 1);
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->warnings.size(), 1u);
  EXPECT_EQ(v->warnings[0].kind, "duplicate_example");
  EXPECT_EQ(v->warnings[0].line, 4);
  EXPECT_EQ(v->train_stats.examples, 4);
  EXPECT_EQ(v->train_stats.exact_duplicates, 1);
}

TEST_F(DatasetManagerTest, InvalidUploadLeavesNoVersionAndNoFiles) {
  auto r = Upload("broken", ChatLines(3) + "{not json\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->report.valid);
  EXPECT_FALSE(r->version.has_value());
  EXPECT_EQ(r->report.error_count, 1);
  EXPECT_EQ(manager_->GetDataset("broken").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Entries(dir_ + "/datasets"), std::set<std::string>{".staging"});
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
  EXPECT_EQ(*manager_->CountVersions(), 0);
}

TEST_F(DatasetManagerTest, InvalidUploadToExistingDatasetKeepsItsVersions) {
  ASSERT_TRUE(Upload("faq", ChatLines(3))->version.has_value());
  auto r = Upload("faq", "[]\n");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->version.has_value());
  EXPECT_EQ(manager_->GetDataset("faq")->version_count, 1);
  EXPECT_EQ(Entries(dir_ + "/datasets/faq"), std::set<std::string>{"v1"});
}

TEST_F(DatasetManagerTest, StrictUploadWithWarningsIsNotCommitted) {
  UploadRequest request;
  request.dataset_id = "strict";
  request.strict = true;
  auto session = manager_->StartUpload(request);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Write(Split::kTrain, ChatLines(2) + ChatLine(1) + "\n").ok());
  auto r = (*session)->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->report.valid);
  EXPECT_FALSE(r->version.has_value());
  session->reset();
  EXPECT_EQ(manager_->GetDataset("strict").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetManagerTest, ValidateOnlyReportsAndStoresNothing) {
  auto r = Upload("dry-run", ChatLines(4), "", /*validate_only=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->report.valid);
  EXPECT_EQ(r->report.train_stats.examples, 4);
  EXPECT_FALSE(r->version.has_value());
  EXPECT_EQ(manager_->GetDataset("dry-run").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Entries(dir_ + "/datasets"), std::set<std::string>{".staging"});
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetManagerTest, UploadOverMaxBytesIsResourceExhaustedAndStoresNothing) {
  options_.max_upload_bytes = 1000;
  OpenManager();
  UploadRequest request;
  request.dataset_id = "big";
  auto session = manager_->StartUpload(request);
  ASSERT_TRUE(session.ok());
  const std::string data = ChatLines(20);
  ASSERT_GT(data.size(), 1000u);
  absl::Status s;
  for (size_t pos = 0; pos < data.size() && s.ok(); pos += 300) {
    s = (*session)->Write(Split::kTrain, absl::string_view(data).substr(pos, 300));
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("1000"));
  session->reset();
  EXPECT_EQ(manager_->GetDataset("big").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
  EXPECT_EQ(Entries(dir_ + "/datasets"), std::set<std::string>{".staging"});
}

TEST_F(DatasetManagerTest, DestroyingSessionWithoutCommitLeavesNothing) {
  UploadRequest request;
  request.dataset_id = "abandoned";
  {
    auto session = manager_->StartUpload(request);
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->Write(Split::kTrain, ChatLines(3)).ok());
    ASSERT_TRUE((*session)->Write(Split::kValidation, ChatLines(1, 9)).ok());
    EXPECT_EQ(Entries(StagingDir()).size(), 1u);  // data is staged while the upload runs
  }
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
  EXPECT_EQ(manager_->GetDataset("abandoned").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetManagerTest, CommitTwiceIsFailedPrecondition) {
  UploadRequest request;
  request.dataset_id = "once";
  auto session = manager_->StartUpload(request);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Write(Split::kTrain, ChatLines(2)).ok());
  ASSERT_TRUE((*session)->Commit().ok());
  EXPECT_EQ((*session)->Commit().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*session)->Write(Split::kTrain, "x").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DatasetManagerTest, AppendCreatesNewVersionFromBaseLinesPlusNewLines) {
  const std::string base = ChatLines(4);
  const std::string extra = ChatLines(3, 50);
  const std::string validation = ChatLines(2, 90);
  ASSERT_TRUE(Upload("grow", base, validation)->version.has_value());

  auto session = manager_->StartAppend("grow", 0, false, false);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ((*session)->bytes_received(), 0);  // the base does not count
  ASSERT_TRUE((*session)->Write(Split::kTrain, extra).ok());
  auto r = (*session)->Commit();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->version.has_value()) << r->report.error_count;
  EXPECT_EQ(r->version->version, 2);
  EXPECT_EQ(r->version->parent_version, 1);
  EXPECT_EQ(r->version->train_stats.examples, 7);

  auto v2 = manager_->GetVersion("grow", 2);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(StoredFile(*v2, Split::kTrain), base + extra);
  EXPECT_EQ(StoredFile(*v2, Split::kValidation), validation);
  EXPECT_EQ(v2->files[0].sha256, Sha256Of(base + extra));
  auto v1 = manager_->GetVersion("grow", 1);
  EXPECT_EQ(StoredFile(*v1, Split::kTrain), base);  // the base is untouched
}

TEST_F(DatasetManagerTest, AppendToBaseWithoutFinalNewlineInsertsOne) {
  const std::string base = ChatLines(2) + ChatLine(3);  // no final newline
  ASSERT_TRUE(Upload("nonl", base)->version.has_value());
  auto session = manager_->StartAppend("nonl", 1, false, false);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Write(Split::kTrain, ChatLines(1, 7)).ok());
  auto r = (*session)->Commit();
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->version.has_value());
  EXPECT_EQ(StoredFile(*r->version, Split::kTrain), base + "\n" + ChatLines(1, 7));
  EXPECT_EQ(r->version->train_stats.examples, 4);
}

TEST_F(DatasetManagerTest, AppendOfInvalidLinesCommitsNothingAndReportsTheirLineNumbers) {
  ASSERT_TRUE(Upload("grow", ChatLines(4))->version.has_value());
  auto session = manager_->StartAppend("grow", 0, false, false);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Write(Split::kTrain, ChatLine(10) + "\n{broken\n").ok());
  auto r = (*session)->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->version.has_value());
  ASSERT_EQ(r->report.issues.size(), 1u);
  EXPECT_EQ(r->report.issues[0].line, 6);  // counted in the combined file
  session->reset();
  EXPECT_EQ(manager_->GetDataset("grow")->version_count, 1);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetManagerTest, AppendToMissingDatasetOrVersionIsNotFound) {
  EXPECT_EQ(manager_->StartAppend("nothing", 0, false, false).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(Upload("one", ChatLines(2))->version.has_value());
  EXPECT_EQ(manager_->StartAppend("one", 5, false, false).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

TEST_F(DatasetManagerTest, DeleteVersionRemovesItsFilesAndNumbersAreNotReused) {
  ASSERT_TRUE(Upload("d", ChatLines(2))->version.has_value());
  ASSERT_TRUE(Upload("d", ChatLines(3))->version.has_value());
  ASSERT_TRUE(manager_->DeleteVersion("d", 2).ok());
  EXPECT_EQ(manager_->GetVersion("d", 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Entries(dir_ + "/datasets/d"), std::set<std::string>{"v1"});
  EXPECT_EQ(manager_->GetVersion("d", 0)->version, 1);
  EXPECT_EQ(manager_->DeleteVersion("d", 2).code(), absl::StatusCode::kNotFound);

  auto third = Upload("d", ChatLines(4));
  ASSERT_TRUE(third.ok());
  ASSERT_TRUE(third->version.has_value());
  EXPECT_EQ(third->version->version, 3);
  auto dataset = manager_->GetDataset("d");
  EXPECT_EQ(dataset->latest_version, 3);
  EXPECT_EQ(dataset->version_count, 2);
}

TEST_F(DatasetManagerTest, DeleteDatasetRemovesAllVersionsAndFiles) {
  ASSERT_TRUE(Upload("gone", ChatLines(2))->version.has_value());
  ASSERT_TRUE(Upload("gone", ChatLines(2, 10))->version.has_value());
  ASSERT_TRUE(Upload("kept", ChatLines(2))->version.has_value());
  ASSERT_TRUE(manager_->DeleteDataset("gone").ok());
  EXPECT_EQ(manager_->GetDataset("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->GetVersion("gone", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir_ + "/datasets/gone"));
  EXPECT_EQ(*manager_->CountDatasets(), 1);
  EXPECT_EQ(*manager_->CountVersions(), 1);
  EXPECT_EQ(manager_->DeleteDataset("gone").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager_->GetVersion("kept", 1).ok());
}

TEST_F(DatasetManagerTest, ListPagesThroughAllDatasetsInOrder) {
  for (const char* id : {"echo", "alpha", "delta", "charlie", "bravo"}) {
    ASSERT_TRUE(Upload(id, ChatLines(2))->version.has_value()) << id;
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = manager_->ListDatasets(2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->datasets.size(), 2u);
    EXPECT_EQ(page->total_size, 5);
    for (const DatasetRecord& d : page->datasets) seen.push_back(d.dataset_id);
    token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_THAT(seen, ElementsAre("alpha", "bravo", "charlie", "delta", "echo"));

  auto all = manager_->ListDatasets(0, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->datasets.size(), 5u);
  EXPECT_TRUE(all->next_page_token.empty());
}

TEST_F(DatasetManagerTest, BadPageTokenIsInvalidArgument) {
  ASSERT_TRUE(Upload("a", ChatLines(2))->version.has_value());
  EXPECT_EQ(manager_->ListDatasets(2, "%%% not a token %%%").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->ListVersions("a", 2, "%%%").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetManagerTest, ListVersionsPagesOldestFirst) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Upload("v", ChatLines(2, 10 * i))->version.has_value());
  ASSERT_TRUE(manager_->DeleteVersion("v", 3).ok());
  std::vector<int64_t> seen;
  std::string token;
  do {
    auto page = manager_->ListVersions("v", 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const VersionRecord& r : page->versions) seen.push_back(r.version);
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_THAT(seen, ElementsAre(1, 2, 4, 5));
  EXPECT_EQ(manager_->ListVersions("missing", 2, "").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetManagerTest, SecondManagerOnTheSameDataDirIsRefused) {
  auto catalog = SqliteDatasetCatalog::Open(dir_ + "/switchyard.db");
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  auto second = DatasetManager::Open(options_, std::move(*catalog));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(dir_));
}

TEST_F(DatasetManagerTest, ReopenAfterCrashRemovesDebrisAndKeepsCommittedVersions) {
  const std::string train = ChatLines(3);
  ASSERT_TRUE(Upload("survivor", train)->version.has_value());
  manager_.reset();

  // What a crash can leave behind: a half-written upload in staging, a version
  // directory renamed into place but never recorded, and a directory of a
  // dataset the catalog never heard of.
  ASSERT_TRUE(MakeDirs(StagingDir() + "/abc").ok());
  ASSERT_TRUE(WriteFileAtomic(StagingDir() + "/abc/train.jsonl", "{\"partial").ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/datasets/survivor/v9").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/datasets/survivor/v9/train.jsonl", train).ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/datasets/x/v9").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/datasets/x/v9/train.jsonl", train).ok());

  OpenManager();
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
  EXPECT_EQ(Entries(dir_ + "/datasets"), (std::set<std::string>{".staging", "survivor"}));
  EXPECT_EQ(Entries(dir_ + "/datasets/survivor"), std::set<std::string>{"v1"});
  auto v1 = manager_->GetVersion("survivor", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(StoredFile(*v1, Split::kTrain), train);
  EXPECT_EQ(manager_->GetDataset("x").status().code(), absl::StatusCode::kNotFound);

  // The store keeps working: the next version is 2.
  auto next = Upload("survivor", ChatLines(2, 40));
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->version.has_value());
  EXPECT_EQ(next->version->version, 2);
}

TEST_F(DatasetManagerTest, BadDatasetIdIsInvalidArgumentNamingTheRule) {
  for (const std::string& id :
       {std::string(""), std::string("Upper"), std::string("-lead"), std::string("has space"),
        std::string("a/b"), std::string(".hidden"), std::string(64, 'a')}) {
    UploadRequest request;
    request.dataset_id = id;
    auto session = manager_->StartUpload(request);
    ASSERT_FALSE(session.ok()) << "\"" << id << "\"";
    EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_THAT(session.status().message(), HasSubstr("lower-case")) << id;
    EXPECT_EQ(manager_->StartAppend(id, 0, false, false).status().code(),
              absl::StatusCode::kInvalidArgument)
        << id;
  }
  for (const std::string& id : {std::string("a"), std::string("support-faq_v2.1"),
                                std::string("0day"), std::string(63, 'z')}) {
    EXPECT_TRUE(DatasetManager::ValidateDatasetId(id).ok()) << id;
  }
  EXPECT_THAT(Entries(StagingDir()), IsEmpty());
}

}  // namespace
}  // namespace switchyard::dataset
