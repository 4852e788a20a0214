#include "shared/core/file_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/testing/temp_dir.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

class FileUtilTest : public testing::TempDirTest {};

TEST_F(FileUtilTest, WriteFileAtomicCreatesThenReplacesContent) {
  const std::string path = dir_ + "/a.txt";
  ASSERT_TRUE(WriteFileAtomic(path, "first version, longer than the second").ok());
  auto first = ReadFile(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, "first version, longer than the second");

  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  auto second = ReadFile(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, "second");
}

TEST_F(FileUtilTest, WriteFileAtomicLeavesNoTemporaryFiles) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/a.txt", absl::StrCat("content ", i)).ok());
  }
  EXPECT_EQ(Entries(), std::set<std::string>{"a.txt"});
}

TEST_F(FileUtilTest, WriteFileAtomicKeepsBinaryBytesAndEmptyContent) {
  const std::string bytes("\0\xff\n\r\x80", 5);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/bin", bytes).ok());
  EXPECT_EQ(*ReadFile(dir_ + "/bin"), bytes);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/bin", "").ok());
  EXPECT_EQ(*ReadFile(dir_ + "/bin"), "");
}

TEST_F(FileUtilTest, WriteFileAtomicIntoMissingDirectoryFailsNamingPathAndLeavesNothing) {
  const std::string path = dir_ + "/missing/a.txt";
  absl::Status s = WriteFileAtomic(path, "x");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/missing/a.txt"));
  EXPECT_TRUE(Entries().empty());
}

TEST_F(FileUtilTest, ReadFileOfMissingPathIsNotFoundNamingThePath) {
  const std::string path = dir_ + "/does-not-exist.jsonl";
  auto r = ReadFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

TEST_F(FileUtilTest, ReadFileReadsFilesLargerThanItsBuffer) {
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/big", big).ok());
  EXPECT_EQ(*ReadFile(dir_ + "/big"), big);
}

TEST_F(FileUtilTest, FileWriterAppendsCountsBytesAndClosesTwice) {
  FileWriter w;
  ASSERT_TRUE(w.Open(dir_ + "/w").ok());
  ASSERT_TRUE(w.Append("abc").ok());
  ASSERT_TRUE(w.Append("de").ok());
  EXPECT_EQ(w.bytes_written(), 5);
  EXPECT_TRUE(w.Close().ok());
  EXPECT_TRUE(w.Close().ok());
  EXPECT_EQ(*ReadFile(dir_ + "/w"), "abcde");
  EXPECT_EQ(w.Append("x").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FileUtilTest, RemoveAllOfMissingPathIsNotAnError) {
  EXPECT_TRUE(RemoveAll(dir_ + "/nothing/here").ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/x/y/z").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/x/y/z/f", "f").ok());
  EXPECT_TRUE(RemoveAll(dir_ + "/x").ok());
  EXPECT_TRUE(Entries().empty());
}

TEST_F(FileUtilTest, RenameDurablyMovesAFile) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/from", "payload").ok());
  ASSERT_TRUE(RenameDurably(dir_ + "/from", dir_ + "/to").ok());
  EXPECT_EQ(Entries(), std::set<std::string>{"to"});
  EXPECT_EQ(*ReadFile(dir_ + "/to"), "payload");
  EXPECT_EQ(RenameDurably(dir_ + "/from", dir_ + "/to").code(), absl::StatusCode::kNotFound);
}

TEST(RandomHexTest, HasTwoLowerCaseHexCharactersPerByte) {
  for (int bytes : {0, 1, 6, 8, 9, 16, 33}) {
    std::string hex = RandomHex(bytes);
    EXPECT_EQ(hex.size(), static_cast<size_t>(2 * bytes));
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
  }
}

TEST(RandomHexTest, RepeatedCallsDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(RandomHex(8));
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace switchyard
