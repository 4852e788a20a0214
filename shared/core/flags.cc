#include "shared/core/flags.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard {

FlagSet::FlagSet(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {}

void FlagSet::AddString(const std::string& name, const std::string& default_value,
                        const std::string& help, const std::string& env_var) {
  flags_[name] = Flag{Type::kString, default_value, default_value, help, env_var};
  order_.push_back(name);
}

void FlagSet::AddInt(const std::string& name, int64_t default_value, const std::string& help) {
  std::string v = absl::StrCat(default_value);
  flags_[name] = Flag{Type::kInt, v, v, help, ""};
  order_.push_back(name);
}

void FlagSet::AddDouble(const std::string& name, double default_value, const std::string& help) {
  std::string v = absl::StrCat(default_value);
  flags_[name] = Flag{Type::kDouble, v, v, help, ""};
  order_.push_back(name);
}

void FlagSet::AddBool(const std::string& name, bool default_value, const std::string& help) {
  std::string v = default_value ? "true" : "false";
  flags_[name] = Flag{Type::kBool, v, v, help, ""};
  order_.push_back(name);
}

void FlagSet::AddRepeatedString(const std::string& name, const std::string& help) {
  flags_[name] = Flag{Type::kRepeated, "", "", help, ""};
  order_.push_back(name);
}

void FlagSet::AddConfigFlag() {
  AddString("config", "",
            "Read flag values from FILE (`name = value` lines, # comments); "
            "the command line wins.");
}

absl::Status FlagSet::Set(const std::string& name, const std::string& value,
                          const std::string& origin) {
  auto it = flags_.find(name);
  if (it == flags_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown flag --", name, origin, " (see --help)"));
  }
  Flag& f = it->second;
  switch (f.type) {
    case Type::kInt: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, origin, ": '", value, "' is not an integer"));
      }
      break;
    }
    case Type::kDouble: {
      double v;
      if (!absl::SimpleAtod(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, origin, ": '", value, "' is not a number"));
      }
      break;
    }
    case Type::kBool: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, origin, ": '", value, "' is not true or false"));
      }
      f.value = v ? "true" : "false";
      f.set = true;
      return absl::OkStatus();
    }
    case Type::kString:
      break;
    case Type::kRepeated:
      f.values.push_back(value);
      break;
  }
  f.value = value;
  f.set = true;
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-' || arg == "-") {
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      continue;
    }
    std::string body = absl::StartsWith(arg, "--") ? arg.substr(2) : arg.substr(1);
    std::string name = body, value;
    bool has_value = false;
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end() && !has_value && absl::StartsWith(name, "no-")) {
      auto neg = flags_.find(name.substr(3));
      if (neg != flags_.end() && neg->second.type == Type::kBool) {
        SY_RETURN_IF_ERROR(Set(name.substr(3), "false", ""));
        continue;
      }
    }
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (!has_value) {
      if (it->second.type == Type::kBool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    SY_RETURN_IF_ERROR(Set(name, value, ""));
  }
  for (auto& [name, f] : flags_) {
    if (f.set || f.env_var.empty()) continue;
    const char* env = std::getenv(f.env_var.c_str());
    if (env != nullptr && *env != '\0') {
      SY_RETURN_IF_ERROR(Set(name, env, absl::StrCat(" (from $", f.env_var, ")")));
    }
  }
  auto config = flags_.find("config");
  if (config != flags_.end() && !config->second.value.empty()) {
    SY_RETURN_IF_ERROR(LoadConfig(config->second.value));
  }
  return absl::OkStatus();
}

absl::Status FlagSet::LoadConfig(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected `name = value`"));
    }
    std::string name(absl::StripAsciiWhitespace(line.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    auto it = flags_.find(name);
    if (it == flags_.end() || name == "config") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": unknown flag '", name, "'"));
    }
    if (it->second.set) continue;
    SY_RETURN_IF_ERROR(Set(name, value, absl::StrCat(" (", path, ":", line_no, ")")));
  }
  return absl::OkStatus();
}

const FlagSet::Flag& FlagSet::Get(const std::string& name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) {
    std::fprintf(stderr, "internal error: flag --%s was never declared\n", name.c_str());
    std::abort();
  }
  return it->second;
}

std::string FlagSet::GetString(const std::string& name) const { return Get(name).value; }

std::vector<std::string> FlagSet::GetStrings(const std::string& name) const {
  return Get(name).values;
}

int64_t FlagSet::GetInt(const std::string& name) const {
  int64_t v = 0;
  (void)absl::SimpleAtoi(Get(name).value, &v);
  return v;
}

double FlagSet::GetDouble(const std::string& name) const {
  double v = 0;
  (void)absl::SimpleAtod(Get(name).value, &v);
  return v;
}

bool FlagSet::GetBool(const std::string& name) const { return Get(name).value == "true"; }

bool FlagSet::IsSet(const std::string& name) const { return Get(name).set; }

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("Usage: ", usage_, "\n\n", description_, "\n");
  if (!order_.empty()) absl::StrAppend(&out, "\nFlags:\n");
  for (const std::string& name : order_) {
    const Flag& f = flags_.at(name);
    std::string left = absl::StrCat("  --", name);
    if (f.type != Type::kBool) absl::StrAppend(&left, "=VALUE");
    if (left.size() < 28)
      left.resize(28, ' ');
    else
      absl::StrAppend(&left, "\n", std::string(28, ' '));
    absl::StrAppend(&out, left, f.help);
    if (!f.default_value.empty() && f.default_value != "false") {
      absl::StrAppend(&out, " (default: ", f.default_value, ")");
    }
    if (!f.env_var.empty()) absl::StrAppend(&out, " [env $", f.env_var, "]");
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "  -h, --help                Show this help.\n");
  return out;
}

}  // namespace switchyard
