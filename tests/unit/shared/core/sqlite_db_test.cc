#include "shared/core/sqlite_db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/sqlite_db_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    auto db = SqliteDb::Open(dir_ + "/test.db");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_TRUE(db_->Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)").ok());
  }
  void TearDown() override {
    db_.reset();
    (void)RemoveAll(dir_);
  }

  std::string dir_;
  std::unique_ptr<SqliteDb> db_;
};

TEST_F(SqliteDbTest, PrepareBindStepRoundTripsIntegersAndText) {
  const std::string text_with_nul("a\0b \xc3\xa9", 6);
  {
    auto insert = db_->Prepare("INSERT INTO t (id, name) VALUES (?, ?)");
    ASSERT_TRUE(insert.ok()) << insert.status();
    insert->Bind(1, int64_t{1} << 40).Bind(2, text_with_nul);
    ASSERT_TRUE(insert->Run().ok());
    EXPECT_EQ(db_->Changes(), 1);
  }
  ASSERT_TRUE(db_->Exec("INSERT INTO t (id, name) VALUES (2, 'two')").ok());

  auto select = db_->Prepare("SELECT id, name FROM t ORDER BY id");
  ASSERT_TRUE(select.ok()) << select.status();
  std::vector<std::pair<int64_t, std::string>> rows;
  while (true) {
    auto row = select->Step();
    ASSERT_TRUE(row.ok()) << row.status();
    if (!*row) break;
    rows.emplace_back(select->Int(0), select->Text(1));
  }
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], std::make_pair(int64_t{2}, std::string("two")));
  EXPECT_EQ(rows[1].first, int64_t{1} << 40);
  EXPECT_EQ(rows[1].second, text_with_nul);
}

TEST_F(SqliteDbTest, StepOnEmptyResultReturnsFalse) {
  auto select = db_->Prepare("SELECT name FROM t WHERE id = ?");
  ASSERT_TRUE(select.ok());
  select->Bind(1, int64_t{99});
  auto row = select->Step();
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE(*row);
}

TEST_F(SqliteDbTest, NullTextReadsAsEmptyString) {
  auto select = db_->Prepare("SELECT NULL");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->Text(0), "");
}

TEST_F(SqliteDbTest, ExecErrorIncludesTheSql) {
  absl::Status s = db_->Exec("SELEC broken FROM nowhere");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("SELEC broken FROM nowhere"));
  EXPECT_THAT(s.message(), HasSubstr("sqlite"));
}

TEST_F(SqliteDbTest, PrepareErrorIncludesTheSql) {
  auto st = db_->Prepare("SELECT missing_column FROM t");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.status().message(), HasSubstr("SELECT missing_column FROM t"));
  EXPECT_THAT(st.status().message(), HasSubstr("missing_column"));
}

TEST_F(SqliteDbTest, ConstraintViolationIsAlreadyExistsNamingTheSql) {
  ASSERT_TRUE(db_->Exec("INSERT INTO t (id, name) VALUES (1, 'one')").ok());
  auto insert = db_->Prepare("INSERT INTO t (id, name) VALUES (?, 'again')");
  ASSERT_TRUE(insert.ok());
  insert->Bind(1, int64_t{1});
  absl::Status s = insert->Run();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("INSERT INTO t (id, name) VALUES (?, 'again')"));
}

TEST_F(SqliteDbTest, DataSurvivesReopen) {
  ASSERT_TRUE(db_->Exec("INSERT INTO t (id, name) VALUES (7, 'seven')").ok());
  db_.reset();
  auto db = SqliteDb::Open(dir_ + "/test.db");
  ASSERT_TRUE(db.ok()) << db.status();
  auto select = (*db)->Prepare("SELECT name FROM t WHERE id = 7");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->Text(0), "seven");
}

TEST(SqliteDbOpenTest, OpenInMissingDirectoryFailsNamingThePath) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/no-such-dir-", RandomHex(8), "/x.db");
  auto db = SqliteDb::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_THAT(db.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace switchyard
