#include "services/training/weight_expression.h"

#include <cmath>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {
namespace {

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

constexpr char kExpressionForms[] =
    "use a weighted sum of grader keys: \"a + b\", \"0.3 * a + 0.7 * b\" or \"(a + b) / 2\"";

// Reads calculate_output, a weighted sum of the keys in `weights` (all 0 on
// entry), into the weights.
class WeightExpression {
 public:
  static absl::Status Parse(const std::string& expr, const std::string& path,
                            std::map<std::string, double>* weights) {
    WeightExpression p(expr, path, weights);
    return p.Top();
  }

 private:
  WeightExpression(const std::string& expr, const std::string& path,
                   std::map<std::string, double>* weights)
      : expr_(expr), path_(path), weights_(weights) {}

  // expr := sum | "(" sum ")" ["/" number]
  absl::Status Top() {
    if (Peek() == '(') {
      ++pos_;
      SY_RETURN_IF_ERROR(Sum());
      if (!Take(')')) return Unsupported();
      if (Take('/')) {
        double divisor = 0;
        if (!Number(&divisor)) return Unsupported();
        if (!(divisor > 0) || !std::isfinite(divisor)) {
          return Invalid(path_, "the divisor must be a positive number");
        }
      }
    } else {
      SY_RETURN_IF_ERROR(Sum());
    }
    return Peek() == '\0' ? absl::OkStatus() : Unsupported();
  }

  // sum := term ("+" term)*
  absl::Status Sum() {
    SY_RETURN_IF_ERROR(Term());
    while (Take('+')) SY_RETURN_IF_ERROR(Term());
    return absl::OkStatus();
  }

  // term := [number "*"] key (("*" | "/") number)*
  absl::Status Term() {
    double weight = 1;
    if (Number(&weight) && !Take('*')) return Unsupported();
    std::string key;
    if (!Identifier(&key) || Peek() == '(') return Unsupported();  // not a function call
    for (char op = Peek(); op == '*' || op == '/'; op = Peek()) {
      ++pos_;
      double factor = 0;
      if (!Number(&factor)) return Unsupported();
      if (op == '/' && factor == 0) return Invalid(path_, "divides by zero");
      weight = op == '*' ? weight * factor : weight / factor;
    }
    auto it = weights_->find(key);
    if (it == weights_->end()) {
      std::vector<std::string> keys;
      for (const auto& [k, w] : *weights_) keys.push_back(k);
      return Invalid(path_, absl::StrCat("\"", key, "\" is not a key of graders (keys: ",
                                         absl::StrJoin(keys, ", "), ")"));
    }
    if (!seen_.insert(key).second) {
      return Invalid(path_, absl::StrCat("names \"", key, "\" more than once"));
    }
    if (!std::isfinite(weight)) return Invalid(path_, "a weight is not finite");
    it->second = weight;
    return absl::OkStatus();
  }

  // The next non-space character, '\0' at the end.
  char Peek() {
    while (pos_ < expr_.size() && absl::ascii_isspace(static_cast<unsigned char>(expr_[pos_]))) {
      ++pos_;
    }
    return pos_ < expr_.size() ? expr_[pos_] : '\0';
  }
  bool Take(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  // An unsigned decimal number ("2", "0.25", ".5", "1e-2").
  bool Number(double* out) {
    const char c = Peek();
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
    size_t end = pos_;
    while (end < expr_.size() &&
           (absl::ascii_isdigit(static_cast<unsigned char>(expr_[end])) || expr_[end] == '.')) {
      ++end;
    }
    if (end < expr_.size() && (expr_[end] == 'e' || expr_[end] == 'E')) {
      size_t exp = end + 1;
      if (exp < expr_.size() && (expr_[exp] == '+' || expr_[exp] == '-')) ++exp;
      if (exp < expr_.size() && absl::ascii_isdigit(static_cast<unsigned char>(expr_[exp]))) {
        end = exp;
        while (end < expr_.size() && absl::ascii_isdigit(static_cast<unsigned char>(expr_[end]))) {
          ++end;
        }
      }
    }
    if (!absl::SimpleAtod(absl::string_view(expr_).substr(pos_, end - pos_), out)) return false;
    pos_ = end;
    return true;
  }
  bool Identifier(std::string* out) {
    const char c = Peek();
    if (!absl::ascii_isalpha(static_cast<unsigned char>(c)) && c != '_') return false;
    size_t end = pos_;
    while (end < expr_.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(expr_[end])) || expr_[end] == '_')) {
      ++end;
    }
    *out = expr_.substr(pos_, end - pos_);
    pos_ = end;
    return true;
  }
  absl::Status Unsupported() const {
    return Invalid(path_,
                   absl::StrCat("unsupported expression \"", expr_, "\"; ", kExpressionForms));
  }

  const std::string& expr_;
  const std::string& path_;
  std::map<std::string, double>* weights_;
  std::set<std::string> seen_;
  size_t pos_ = 0;
};

}  // namespace

absl::Status ParseWeightExpression(const std::string& expr, const std::string& path,
                                   std::map<std::string, double>* weights) {
  return WeightExpression::Parse(expr, path, weights);
}

}  // namespace switchyard::training
