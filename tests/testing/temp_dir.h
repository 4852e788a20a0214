// A test fixture base with a fresh directory per test, removed afterwards.
#ifndef SWITCHYARD_TESTS_TESTING_TEMP_DIR_H_
#define SWITCHYARD_TESTS_TESTING_TEMP_DIR_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"

namespace switchyard::testing {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  // Names of the entries in dir_.
  std::set<std::string> Entries() const {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      out.insert(e.path().filename().string());
    }
    return out;
  }

  std::string dir_;
};

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_TESTING_TEMP_DIR_H_
