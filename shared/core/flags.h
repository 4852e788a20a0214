// Command-line flags for one (sub)command, with generated --help.
//
//   FlagSet flags("switchyard data validate FILE", "Checks a dataset file.");
//   flags.AddString("format", "auto", "auto|chat|completion|preference");
//   flags.AddBool("json", false, "Print JSON instead of a table.");
//   SY_RETURN_IF_ERROR(flags.Parse(args));
//
// Accepts --name=value, --name value, --flag / --no-flag for booleans, and "--"
// to end flags. A flag may name an environment variable that supplies its value
// when the command line does not. `--config FILE` (when AddConfigFlag() was
// called) reads `name = value` lines for flags not given on the command line.
// Not thread-safe; parse once at start.
#ifndef SWITCHYARD_SHARED_CORE_FLAGS_H_
#define SWITCHYARD_SHARED_CORE_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace switchyard {

class FlagSet {
 public:
  FlagSet(std::string usage, std::string description);

  void AddString(const std::string& name, const std::string& default_value, const std::string& help,
                 const std::string& env_var = "");
  void AddInt(const std::string& name, int64_t default_value, const std::string& help);
  void AddDouble(const std::string& name, double default_value, const std::string& help);
  void AddBool(const std::string& name, bool default_value, const std::string& help);
  // A string flag that may be given more than once; GetStrings returns every
  // value in order (a config file or environment value counts once).
  void AddRepeatedString(const std::string& name, const std::string& help);
  // Adds --config FILE.
  void AddConfigFlag();

  // Parses arguments (without the program and subcommand words). Returns
  // INVALID_ARGUMENT naming the flag or value on bad input.
  absl::Status Parse(const std::vector<std::string>& args);

  std::string GetString(const std::string& name) const;
  int64_t GetInt(const std::string& name) const;
  double GetDouble(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  std::vector<std::string> GetStrings(const std::string& name) const;
  // True when given on the command line, in the environment or config file.
  bool IsSet(const std::string& name) const;

  const std::vector<std::string>& positional() const { return positional_; }
  bool help_requested() const { return help_requested_; }
  std::string Help() const;

 private:
  enum class Type { kString, kInt, kDouble, kBool, kRepeated };
  struct Flag {
    Type type;
    std::string value;
    std::string default_value;
    std::string help;
    std::string env_var;
    bool set = false;
    std::vector<std::string> values;  // kRepeated
  };
  absl::Status Set(const std::string& name, const std::string& value, const std::string& origin);
  absl::Status LoadConfig(const std::string& path);
  const Flag& Get(const std::string& name) const;

  std::string usage_;
  std::string description_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_FLAGS_H_
