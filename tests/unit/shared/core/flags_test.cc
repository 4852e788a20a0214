#include "shared/core/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"

namespace switchyard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The flags of a typical subcommand.
FlagSet MakeFlags() {
  FlagSet flags("tool run FILE [flags]", "Runs the tool.");
  flags.AddString("name", "default-name", "Name of the thing.");
  flags.AddString("server", "127.0.0.1:50051", "Server address.", "FLAGS_TEST_SERVER");
  flags.AddInt("count", 3, "How many.");
  flags.AddDouble("ratio", 0.5, "Fraction.");
  flags.AddBool("json", false, "Print JSON.");
  flags.AddBool("color", true, "Use colors.");
  return flags;
}

TEST(FlagSetTest, DefaultsApplyWhenNothingIsGiven) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({}).ok());
  EXPECT_EQ(flags.GetString("name"), "default-name");
  EXPECT_EQ(flags.GetInt("count"), 3);
  EXPECT_DOUBLE_EQ(flags.GetDouble("ratio"), 0.5);
  EXPECT_FALSE(flags.GetBool("json"));
  EXPECT_TRUE(flags.GetBool("color"));
  EXPECT_FALSE(flags.IsSet("name"));
}

TEST(FlagSetTest, AcceptsNameEqualsValue) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--name=abc", "--count=7", "--ratio=0.25"}).ok());
  EXPECT_EQ(flags.GetString("name"), "abc");
  EXPECT_EQ(flags.GetInt("count"), 7);
  EXPECT_DOUBLE_EQ(flags.GetDouble("ratio"), 0.25);
  EXPECT_TRUE(flags.IsSet("name"));
}

TEST(FlagSetTest, AcceptsNameSpaceValue) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--name", "abc", "--count", "-4"}).ok());
  EXPECT_EQ(flags.GetString("name"), "abc");
  EXPECT_EQ(flags.GetInt("count"), -4);
}

TEST(FlagSetTest, ValueMayContainEqualsSigns) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--name=a=b"}).ok());
  EXPECT_EQ(flags.GetString("name"), "a=b");
}

TEST(FlagSetTest, BoolFlagAndNegatedForm) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--json", "--no-color"}).ok());
  EXPECT_TRUE(flags.GetBool("json"));
  EXPECT_FALSE(flags.GetBool("color"));

  FlagSet explicit_values = MakeFlags();
  ASSERT_TRUE(explicit_values.Parse({"--json=true", "--color=false"}).ok());
  EXPECT_TRUE(explicit_values.GetBool("json"));
  EXPECT_FALSE(explicit_values.GetBool("color"));
}

TEST(FlagSetTest, BoolFlagDoesNotConsumeTheNextArgument) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--json", "file.jsonl"}).ok());
  EXPECT_TRUE(flags.GetBool("json"));
  EXPECT_THAT(flags.positional(), ElementsAre("file.jsonl"));
}

TEST(FlagSetTest, CollectsPositionalsAndStopsAtDoubleDash) {
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"a", "--count=1", "-", "--", "--name=x", "b"}).ok());
  EXPECT_THAT(flags.positional(), ElementsAre("a", "-", "--name=x", "b"));
  EXPECT_EQ(flags.GetString("name"), "default-name");
}

TEST(FlagSetTest, HelpIsRequestedByDashHAndDashDashHelp) {
  FlagSet a = MakeFlags();
  ASSERT_TRUE(a.Parse({"-h"}).ok());
  EXPECT_TRUE(a.help_requested());
  FlagSet b = MakeFlags();
  ASSERT_TRUE(b.Parse({"x", "--help"}).ok());
  EXPECT_TRUE(b.help_requested());
}

TEST(FlagSetTest, UnknownFlagErrorNamesIt) {
  FlagSet flags = MakeFlags();
  absl::Status s = flags.Parse({"--nmae=x"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--nmae"));
}

TEST(FlagSetTest, NegatingANonBoolFlagIsUnknown) {
  FlagSet flags = MakeFlags();
  absl::Status s = flags.Parse({"--no-name"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--no-name"));
}

TEST(FlagSetTest, BadIntNamesFlagAndValue) {
  FlagSet flags = MakeFlags();
  absl::Status s = flags.Parse({"--count=many"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--count"));
  EXPECT_THAT(s.message(), HasSubstr("many"));
}

TEST(FlagSetTest, BadDoubleAndBoolNameFlagAndValue) {
  FlagSet a = MakeFlags();
  absl::Status s = a.Parse({"--ratio", "half"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--ratio"));
  EXPECT_THAT(s.message(), HasSubstr("half"));

  FlagSet b = MakeFlags();
  s = b.Parse({"--json=maybe"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--json"));
  EXPECT_THAT(s.message(), HasSubstr("maybe"));
}

TEST(FlagSetTest, MissingValueAtEndNamesTheFlag) {
  FlagSet flags = MakeFlags();
  absl::Status s = flags.Parse({"--name"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--name"));
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(FlagSetTest, EnvironmentVariableSuppliesValueWhenCommandLineDoesNot) {
  ScopedEnv env("FLAGS_TEST_SERVER", "10.0.0.1:443");
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({}).ok());
  EXPECT_EQ(flags.GetString("server"), "10.0.0.1:443");
  EXPECT_TRUE(flags.IsSet("server"));
}

TEST(FlagSetTest, CommandLineWinsOverEnvironment) {
  ScopedEnv env("FLAGS_TEST_SERVER", "10.0.0.1:443");
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({"--server=localhost:1"}).ok());
  EXPECT_EQ(flags.GetString("server"), "localhost:1");
}

TEST(FlagSetTest, EmptyEnvironmentVariableIsIgnored) {
  ScopedEnv env("FLAGS_TEST_SERVER", "");
  FlagSet flags = MakeFlags();
  ASSERT_TRUE(flags.Parse({}).ok());
  EXPECT_EQ(flags.GetString("server"), "127.0.0.1:50051");
}

class FlagConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/flags_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override { (void)RemoveAll(dir_); }
  std::string WriteConfig(const std::string& text) {
    std::string path = dir_ + "/tool.conf";
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }
  static FlagSet MakeConfigurable() {
    FlagSet flags = MakeFlags();
    flags.AddConfigFlag();
    return flags;
  }
  std::string dir_;
};

TEST_F(FlagConfigTest, ConfigFileSetsFlagsAndCommandLineWins) {
  std::string path = WriteConfig(
      "# comment\n"
      "\n"
      "name = from-config\n"
      "  count=9  \n"
      "json = true\n");
  FlagSet flags = MakeConfigurable();
  ASSERT_TRUE(flags.Parse({"--config", path, "--count=2"}).ok());
  EXPECT_EQ(flags.GetString("name"), "from-config");
  EXPECT_EQ(flags.GetInt("count"), 2);
  EXPECT_TRUE(flags.GetBool("json"));
  EXPECT_TRUE(flags.IsSet("name"));
}

TEST_F(FlagConfigTest, UnknownKeyNamesFileAndLine) {
  std::string path = WriteConfig("name = a\n# fine\nbogus = 1\n");
  FlagSet flags = MakeConfigurable();
  absl::Status s = flags.Parse({"--config=" + path});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path + ":3"));
  EXPECT_THAT(s.message(), HasSubstr("bogus"));
}

TEST_F(FlagConfigTest, LineWithoutEqualsNamesFileAndLine) {
  std::string path = WriteConfig("name\n");
  FlagSet flags = MakeConfigurable();
  absl::Status s = flags.Parse({"--config=" + path});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path + ":1"));
}

TEST_F(FlagConfigTest, BadValueInConfigNamesFlagAndLocation) {
  std::string path = WriteConfig("count = lots\n");
  FlagSet flags = MakeConfigurable();
  absl::Status s = flags.Parse({"--config=" + path});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--count"));
  EXPECT_THAT(s.message(), HasSubstr("lots"));
  EXPECT_THAT(s.message(), HasSubstr(path + ":1"));
}

TEST_F(FlagConfigTest, ConfigFileMayNotNameConfig) {
  std::string path = WriteConfig("config = other.conf\n");
  FlagSet flags = MakeConfigurable();
  EXPECT_EQ(flags.Parse({"--config=" + path}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FlagConfigTest, MissingConfigFileIsNotFoundNamingIt) {
  FlagSet flags = MakeConfigurable();
  absl::Status s = flags.Parse({"--config=" + dir_ + "/nope.conf"});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("nope.conf"));
}

TEST(FlagSetTest, HelpListsUsageFlagsDefaultsAndEnvironment) {
  FlagSet flags = MakeFlags();
  std::string help = flags.Help();
  EXPECT_THAT(help, HasSubstr("Usage: tool run FILE [flags]"));
  EXPECT_THAT(help, HasSubstr("Runs the tool."));
  EXPECT_THAT(help, HasSubstr("--name=VALUE"));
  EXPECT_THAT(help, HasSubstr("Name of the thing. (default: default-name)"));
  EXPECT_THAT(help, HasSubstr("--count=VALUE"));
  EXPECT_THAT(help, HasSubstr("(default: 3)"));
  EXPECT_THAT(help, HasSubstr("(default: 0.5)"));
  EXPECT_THAT(help, HasSubstr("--json "));
  EXPECT_THAT(help, Not(HasSubstr("--json=VALUE")));
  EXPECT_THAT(help, HasSubstr("[env $FLAGS_TEST_SERVER]"));
  EXPECT_THAT(help, HasSubstr("--help"));
  // Flags appear in declaration order.
  EXPECT_LT(help.find("--name"), help.find("--server"));
  EXPECT_LT(help.find("--server"), help.find("--count"));
}

}  // namespace
}  // namespace switchyard
