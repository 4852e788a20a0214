// Authorizer::FromText parsing. Authorize() needs a server context with client
// metadata; tests/integration/dataset_service_test.cc covers it over gRPC.
#include "shared/rpc/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"

namespace switchyard::rpc {
namespace {

using ::testing::HasSubstr;

TEST(AuthorizerTest, DefaultAuthorizerIsDisabled) {
  Authorizer auth;
  EXPECT_FALSE(auth.enabled());
}

TEST(AuthorizerTest, ParsesTokensWithRolesAndOptionalNames) {
  auto auth = Authorizer::FromText(
      "admin-token-0123456789 admin alice\n"
      "user-token-0123456789 user\n",
      "tokens.txt");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->enabled());
}

TEST(AuthorizerTest, IgnoresCommentsBlankLinesAndExtraWhitespace) {
  auto auth = Authorizer::FromText(
      "# tokens for the staging cluster\n"
      "\n"
      "   \t\n"
      "  admin-token-0123456789\tadmin   # trailing comment\n"
      "user-token-0123456789 user bob # the analyst\n",
      "tokens.txt");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->enabled());
}

TEST(AuthorizerTest, BadRoleNamesOriginLineAndRole) {
  auto auth = Authorizer::FromText(
      "# header\n"
      "admin-token-0123456789 admin\n"
      "other-token-0123456789 superuser\n",
      "tokens.txt");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(auth.status().message(), HasSubstr("tokens.txt:3"));
  EXPECT_THAT(auth.status().message(), HasSubstr("superuser"));
}

TEST(AuthorizerTest, RejectsTokensShorterThanSixteenCharacters) {
  auto auth = Authorizer::FromText("short admin\n", "tokens.txt");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(auth.status().message(), HasSubstr("tokens.txt:1"));
  EXPECT_THAT(auth.status().message(), HasSubstr("16"));
  // Exactly 16 characters is enough.
  EXPECT_TRUE(Authorizer::FromText("0123456789abcdef user\n", "tokens.txt").ok());
}

TEST(AuthorizerTest, RejectsLinesWithTooFewOrTooManyFields) {
  auto one = Authorizer::FromText("admin-token-0123456789\n", "t");
  ASSERT_FALSE(one.ok());
  EXPECT_THAT(one.status().message(), HasSubstr("t:1"));
  auto four =
      Authorizer::FromText("ok-token-0123456789 user\nadmin-token-0123456789 admin a b\n", "t");
  ASSERT_FALSE(four.ok());
  EXPECT_THAT(four.status().message(), HasSubstr("t:2"));
}

TEST(AuthorizerTest, FileWithoutTokensIsAnError) {
  auto auth = Authorizer::FromText("# nothing here\n\n", "empty.txt");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(auth.status().message(), HasSubstr("empty.txt"));
}

TEST(AuthorizerTest, FromFileReadsTheFileAndNamesItInErrors) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/auth_test_", RandomHex(8));
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/good", "admin-token-0123456789 admin\n").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/bad", "admin-token-0123456789 root\n").ok());
  auto good = Authorizer::FromFile(dir + "/good");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE((*good)->enabled());
  auto bad = Authorizer::FromFile(dir + "/bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr(dir + "/bad:1"));
  auto missing = Authorizer::FromFile(dir + "/missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  (void)RemoveAll(dir);
}

}  // namespace
}  // namespace switchyard::rpc
