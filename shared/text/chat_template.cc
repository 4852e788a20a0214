// Jinja2 subset for chat templates: a lexer that applies jinja2's whitespace
// rules (trim_blocks, lstrip_blocks, `-` markers) while it splits the source,
// a recursive-descent parser following jinja2's operator precedence, and a
// tree-walking renderer over JSON values.
#include "shared/text/chat_template.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/core/status_macros.h"
#include "shared/text/unicode.h"

namespace switchyard::text {

using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// Tokens and lexer.

namespace {

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  std::string text;  // text, name, string value or operator
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0;
};

absl::Status SyntaxError(int line, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template syntax error at line ", line, ": ", message));
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  explicit Lexer(absl::string_view source) : s_(source) {
    // jinja2's default keep_trailing_newline=False drops one final newline.
    if (!s_.empty() && s_.back() == '\n') s_.remove_suffix(1);
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool strip_all = false;      // previous tag ended with `-`
    bool strip_newline = false;  // previous tag was a block or comment
    while (pos <= s_.size()) {
      size_t tag = FindTag(pos);
      size_t begin = pos, end = tag == absl::string_view::npos ? s_.size() : tag;
      if (tag != absl::string_view::npos) {
        char kind = s_[tag + 1];
        char mod = tag + 2 < s_.size() ? s_[tag + 2] : '\0';
        if (mod == '-') {
          while (end > begin && IsSpace(s_[end - 1])) --end;
        } else if ((kind == '%' || kind == '#') && mod != '+') {
          size_t r = end;
          while (r > begin && (s_[r - 1] == ' ' || s_[r - 1] == '\t')) --r;
          if (r == 0 || s_[r - 1] == '\n') end = r;
        }
      }
      if (strip_all) {
        while (begin < end && IsSpace(s_[begin])) ++begin;
      } else if (strip_newline && begin < end && s_[begin] == '\n') {
        ++begin;
      }
      if (end > begin) Emit(Tok::kText, std::string(s_.substr(begin, end - begin)));
      CountLines(pos, tag == absl::string_view::npos ? s_.size() : tag);
      if (tag == absl::string_view::npos) break;
      SY_ASSIGN_OR_RETURN(pos, LexTag(tag, &strip_all, &strip_newline));
    }
    Emit(Tok::kEof, "");
    return std::move(tokens_);
  }

 private:
  size_t FindTag(size_t from) const {
    for (size_t i = s_.find('{', from); i != absl::string_view::npos; i = s_.find('{', i + 1)) {
      if (i + 1 < s_.size() && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    }
    return absl::string_view::npos;
  }
  void CountLines(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) line_ += s_[i] == '\n';
  }
  void Emit(Tok type, std::string text) { tokens_.push_back(Token{type, std::move(text), line_}); }

  // Lexes the tag starting at `at`; returns the position after it.
  absl::StatusOr<size_t> LexTag(size_t at, bool* strip_all, bool* strip_newline) {
    char kind = s_[at + 1];
    size_t p = at + 2;
    if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ++p;
    if (kind == '#') {
      size_t close = s_.find("#}", p);
      if (close == absl::string_view::npos) return SyntaxError(line_, "unclosed comment");
      CountLines(at, close);
      *strip_all = close > p && s_[close - 1] == '-';
      *strip_newline = true;
      return close + 2;
    }
    const int open_line = line_;
    Emit(kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "");
    int depth = 0;  // open brackets, so `}}` inside a dict literal does not close
    while (true) {
      while (p < s_.size() && IsSpace(s_[p])) line_ += s_[p++] == '\n';
      if (p >= s_.size()) return SyntaxError(open_line, "unclosed tag");
      absl::string_view rest = s_.substr(p);
      const char* close = kind == '{' ? "}}" : "%}";
      if (depth == 0 &&
          (rest.substr(0, 2) == close || (rest[0] == '-' && rest.substr(1, 2) == close))) {
        *strip_all = rest[0] == '-';
        *strip_newline = kind == '%';
        Emit(kind == '{' ? Tok::kVarEnd : Tok::kBlockEnd, "");
        return p + (rest[0] == '-' ? 3 : 2);
      }
      SY_ASSIGN_OR_RETURN(p, LexExprToken(p, &depth));
    }
  }

  absl::StatusOr<size_t> LexExprToken(size_t p, int* depth) {
    char c = s_[p];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_'))
        ++e;
      Emit(Tok::kName, std::string(s_.substr(p, e - p)));
      return e;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = p;
      bool is_float = false;
      while (e < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[e])) || s_[e] == '_'))
        ++e;
      if (e + 1 < s_.size() && s_[e] == '.' &&
          std::isdigit(static_cast<unsigned char>(s_[e + 1]))) {
        is_float = true;
        ++e;
        while (e < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e]))) ++e;
      }
      if (e < s_.size() && (s_[e] == 'e' || s_[e] == 'E')) {
        size_t x = e + 1;
        if (x < s_.size() && (s_[x] == '+' || s_[x] == '-')) ++x;
        if (x < s_.size() && std::isdigit(static_cast<unsigned char>(s_[x]))) {
          is_float = true;
          e = x;
          while (e < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e]))) ++e;
        }
      }
      std::string digits;
      for (char d : s_.substr(p, e - p)) {
        if (d != '_') digits.push_back(d);
      }
      Token t{is_float ? Tok::kFloat : Tok::kInt, digits, line_};
      if (is_float) {
        t.float_value = std::strtod(digits.c_str(), nullptr);
      } else {
        t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
      }
      tokens_.push_back(std::move(t));
      return e;
    }
    if (c == '\'' || c == '"') return LexString(p);
    static const char* kTwo[] = {"**", "//", "==", "!=", "<=", ">="};
    for (const char* op : kTwo) {
      if (s_.substr(p, 2) == op) {
        Emit(Tok::kOp, op);
        return p + 2;
      }
    }
    if (absl::string_view("+-*/%~()[]{},:.|=<>").find(c) != absl::string_view::npos) {
      if (c == '(' || c == '[' || c == '{') ++*depth;
      if (c == ')' || c == ']' || c == '}') --*depth;
      Emit(Tok::kOp, std::string(1, c));
      return p + 1;
    }
    return SyntaxError(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::StatusOr<size_t> LexString(size_t p) {
    const char quote = s_[p];
    const int start_line = line_;
    std::string value;
    for (size_t i = p + 1; i < s_.size(); ++i) {
      char c = s_[i];
      if (c == quote) {
        Emit(Tok::kString, std::move(value));
        tokens_.back().line = start_line;
        return i + 1;
      }
      if (c == '\n') ++line_;
      if (c != '\\' || i + 1 >= s_.size()) {
        value.push_back(c);
        continue;
      }
      char e = s_[++i];
      switch (e) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case '0':
          value.push_back('\0');
          break;
        case '\\':
        case '\'':
        case '"':
          value.push_back(e);
          break;
        case '\n':
          ++line_;
          break;
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + n >= s_.size()) return SyntaxError(line_, "truncated escape in string");
          const unsigned long cp =
              std::strtoul(std::string(s_.substr(i + 1, n)).c_str(), nullptr, 16);
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return SyntaxError(line_, "string escape is not a Unicode character");
          }
          AppendUtf8(static_cast<uint32_t>(cp), &value);
          i += n;
          break;
        }
        default:
          value.push_back('\\');
          value.push_back(e);
      }
    }
    return SyntaxError(start_line, "unterminated string literal");
  }

  absl::string_view s_;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Syntax tree.

// Bounds that keep a hostile template or context from exhausting the stack
// or memory (jinja2's sandbox, which transformers uses, caps range() likewise).
constexpr int kMaxNesting = 200;             // parser recursion and expression depth
constexpr int kMaxMacroDepth = 100;          // nested macro calls
constexpr int kMaxContextDepth = 512;        // nesting of the JSON context
constexpr int64_t kMaxRange = 100000;        // items range() may produce
constexpr size_t kMaxRepeatBytes = 1 << 24;  // "ab" * n

struct Expr {
  enum class Kind {
    kLiteral,
    kName,
    kGetAttr,
    kGetItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kUnary,
    kBinary,
    kAnd,
    kOr,
    kNot,
    kCond,
    kList,
    kDict,
  };
  Kind kind;
  int line = 1;
  int depth = 1;     // height of the subtree, bounded by kMaxNesting
  std::string name;  // variable, attribute, operator, filter or test name
  Json literal;
  bool negated = false;                     // `is not`
  std::vector<std::unique_ptr<Expr>> args;  // operands; may hold nullptr (slice bounds, no else)
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
};

struct Node;
using NodeList = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue };
  Kind kind;
  int line = 1;
  std::string text;                  // kText; macro name
  std::unique_ptr<Expr> expr;        // output, set value, for iterable
  std::unique_ptr<Expr> condition;   // for's `if` filter
  std::vector<std::string> targets;  // for / set targets; set `ns.attr` has targets {ns}, attr
  std::string attr;
  std::vector<std::pair<std::unique_ptr<Expr>, NodeList>> branches;  // if/elif/else (null cond)
  NodeList body, else_body;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> params;  // macro (default may be null)
};

struct ChatTemplate::Program {
  NodeList nodes;
};

namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<NodeList> ParseTemplate() {
    std::string end;
    SY_ASSIGN_OR_RETURN(NodeList nodes, ParseBody({}, &end));
    return nodes;
  }

 private:
  using ExprPtr = std::unique_ptr<Expr>;

  const Token& Peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool IsOp(absl::string_view op, size_t k = 0) const {
    return Peek(k).type == Tok::kOp && Peek(k).text == op;
  }
  bool IsName(absl::string_view n, size_t k = 0) const {
    return Peek(k).type == Tok::kName && Peek(k).text == n;
  }
  absl::Status Unexpected(absl::string_view wanted) const {
    const Token& t = Peek();
    std::string got = t.type == Tok::kEof ? "end of template"
                      : t.type == Tok::kBlockEnd || t.type == Tok::kVarEnd
                          ? "end of tag"
                          : absl::StrCat("'", t.text, "'");
    return SyntaxError(t.line, absl::StrCat("expected ", wanted, ", got ", got));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectName(absl::string_view n) {
    if (!IsName(n)) return Unexpected(absl::StrCat("'", n, "'"));
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Tok::kBlockEnd) return Unexpected("'%}'");
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Identifier() {
    if (Peek().type != Tok::kName) return Unexpected("a name");
    return t_[i_++].text;
  }
  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // Parses nodes until a block tag whose keyword is in `ends` (consumed, its
  // keyword stored in `end`) or, with no `ends`, the end of the template.
  absl::StatusOr<NodeList> ParseBody(const std::vector<std::string>& ends, std::string* end) {
    Nesting nesting(&nesting_);
    if (nesting.exceeded()) return TooDeep(Peek().line);
    NodeList nodes;
    while (true) {
      const Token& t = Peek();
      if (t.type == Tok::kEof) {
        if (ends.empty()) return nodes;
        return SyntaxError(t.line, absl::StrCat("missing '", ends.back(), "'"));
      }
      if (t.type == Tok::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->text = t.text;
        ++i_;
        nodes.push_back(std::move(n));
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = t.line;
        ++i_;
        SY_ASSIGN_OR_RETURN(n->expr, ParseExpr());
        if (Peek().type != Tok::kVarEnd) return Unexpected("'}}'");
        ++i_;
        nodes.push_back(std::move(n));
        continue;
      }
      if (t.type != Tok::kBlockBegin) return Unexpected("text or a tag");
      const Token& kw = Peek(1);
      if (kw.type == Tok::kName && std::find(ends.begin(), ends.end(), kw.text) != ends.end()) {
        *end = kw.text;
        i_ += 2;
        return nodes;
      }
      ++i_;
      SY_RETURN_IF_ERROR(ParseStatement(&nodes));
    }
  }

  absl::Status ParseStatement(NodeList* out) {
    const int line = Peek().line;
    SY_ASSIGN_OR_RETURN(std::string kw, Identifier());
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (kw == "if") {
      n->kind = Node::Kind::kIf;
      std::string which = "elif";
      ExprPtr cond;
      SY_ASSIGN_OR_RETURN(cond, ParseExpr());
      while (true) {
        SY_RETURN_IF_ERROR(ExpectBlockEnd());
        SY_ASSIGN_OR_RETURN(NodeList body, ParseBody({"elif", "else", "endif"}, &which));
        n->branches.emplace_back(std::move(cond), std::move(body));
        if (which == "endif") break;
        if (which == "else") {
          SY_RETURN_IF_ERROR(ExpectBlockEnd());
          SY_ASSIGN_OR_RETURN(NodeList else_body, ParseBody({"endif"}, &which));
          n->branches.emplace_back(nullptr, std::move(else_body));
          break;
        }
        SY_ASSIGN_OR_RETURN(cond, ParseExpr());
      }
    } else if (kw == "for") {
      n->kind = Node::Kind::kFor;
      do {
        SY_ASSIGN_OR_RETURN(std::string target, Identifier());
        n->targets.push_back(target);
      } while (IsOp(",") && (++i_, true));
      SY_RETURN_IF_ERROR(ExpectName("in"));
      SY_ASSIGN_OR_RETURN(n->expr, ParseOr());
      if (IsName("if")) {
        ++i_;
        SY_ASSIGN_OR_RETURN(n->condition, ParseOr());
      }
      if (IsName("recursive")) return SyntaxError(line, "recursive loops are not supported");
      SY_RETURN_IF_ERROR(ExpectBlockEnd());
      SY_ASSIGN_OR_RETURN(n->body, ParseBody({"else", "endfor"}, &end));
      if (end == "else") {
        SY_RETURN_IF_ERROR(ExpectBlockEnd());
        SY_ASSIGN_OR_RETURN(n->else_body, ParseBody({"endfor"}, &end));
      }
    } else if (kw == "set") {
      n->kind = Node::Kind::kSet;
      SY_ASSIGN_OR_RETURN(std::string target, Identifier());
      n->targets.push_back(target);
      if (IsOp(".")) {
        ++i_;
        SY_ASSIGN_OR_RETURN(n->attr, Identifier());
      } else {
        while (IsOp(",")) {
          ++i_;
          SY_ASSIGN_OR_RETURN(std::string more, Identifier());
          n->targets.push_back(more);
        }
      }
      if (IsOp("=")) {
        ++i_;
        SY_ASSIGN_OR_RETURN(n->expr, ParseExpr());
      } else {
        n->kind = Node::Kind::kSetBlock;
        SY_RETURN_IF_ERROR(ExpectBlockEnd());
        SY_ASSIGN_OR_RETURN(n->body, ParseBody({"endset"}, &end));
      }
    } else if (kw == "macro") {
      n->kind = Node::Kind::kMacro;
      SY_ASSIGN_OR_RETURN(n->text, Identifier());
      SY_RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        SY_ASSIGN_OR_RETURN(std::string param, Identifier());
        ExprPtr def;
        if (IsOp("=")) {
          ++i_;
          SY_ASSIGN_OR_RETURN(def, ParseExpr());
        }
        n->params.emplace_back(param, std::move(def));
        if (!IsOp(",")) break;
        ++i_;
      }
      SY_RETURN_IF_ERROR(ExpectOp(")"));
      SY_RETURN_IF_ERROR(ExpectBlockEnd());
      SY_ASSIGN_OR_RETURN(n->body, ParseBody({"endmacro"}, &end));
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
    } else if (kw == "generation") {
      // Hugging Face's assistant-mask marker; renders its body unchanged.
      SY_RETURN_IF_ERROR(ExpectBlockEnd());
      SY_ASSIGN_OR_RETURN(NodeList body, ParseBody({"endgeneration"}, &end));
      SY_RETURN_IF_ERROR(ExpectBlockEnd());
      for (auto& child : body) out->push_back(std::move(child));
      return absl::OkStatus();
    } else {
      return SyntaxError(line, absl::StrCat("unknown or misplaced tag '", kw, "'"));
    }
    SY_RETURN_IF_ERROR(ExpectBlockEnd());
    out->push_back(std::move(n));
    return absl::OkStatus();
  }

  // Expressions, lowest precedence first (as jinja2's parser).
  absl::StatusOr<ExprPtr> ParseExpr() {
    Nesting nesting(&nesting_);
    if (nesting.exceeded()) return TooDeep(Peek().line);
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    if (too_deep_) return TooDeep(e->line);
    while (IsName("if")) {
      auto cond = Make(Expr::Kind::kCond, Peek().line);
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        ++i_;
        SY_ASSIGN_OR_RETURN(otherwise, ParseExpr());
      }
      cond->args.push_back(std::move(e));
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(otherwise));
      e = std::move(cond);
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseOr() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseAnd());
    while (IsName("or")) {
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseAnd());
      e = Binary(Expr::Kind::kOr, "or", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
    while (IsName("and")) {
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseNot());
      e = Binary(Expr::Kind::kAnd, "and", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    Nesting nesting(&nesting_);
    if (nesting.exceeded()) return TooDeep(Peek().line);
    if (IsName("not")) {
      auto e = Make(Expr::Kind::kNot, Peek().line);
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseMath1());
    while (true) {
      std::string op;
      if (Peek().type == Tok::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Peek().text;
        ++i_;
      } else if (IsName("in")) {
        op = "in";
        ++i_;
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        i_ += 2;
      } else {
        return e;
      }
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseMath1());
      e = Binary(Expr::Kind::kBinary, op, std::move(e), std::move(r));
    }
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = t_[i_++].text;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseConcat());
      e = Binary(Expr::Kind::kBinary, op, std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseMath2());
    while (IsOp("~")) {
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseMath2());
      e = Binary(Expr::Kind::kBinary, "~", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = t_[i_++].text;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParsePow());
      e = Binary(Expr::Kind::kBinary, op, std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    SY_ASSIGN_OR_RETURN(ExprPtr e, ParseUnary(true));
    while (IsOp("**")) {
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr r, ParseUnary(true));
      e = Binary(Expr::Kind::kBinary, "**", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    Nesting nesting(&nesting_);
    if (nesting.exceeded()) return TooDeep(Peek().line);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      e = Make(Expr::Kind::kUnary, Peek().line);
      e->name = t_[i_++].text;
      SY_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      e->args.push_back(std::move(operand));
    } else {
      SY_ASSIGN_OR_RETURN(e, ParsePrimary());
    }
    SY_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    if (with_filter) {
      SY_ASSIGN_OR_RETURN(e, ParseFilterAndTest(std::move(e)));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Peek();
    const int line = t.line;
    if (t.type == Tok::kName) {
      ++i_;
      if (t.text == "true" || t.text == "True") return Literal(Json(true), line);
      if (t.text == "false" || t.text == "False") return Literal(Json(false), line);
      if (t.text == "none" || t.text == "None") return Literal(Json(nullptr), line);
      auto e = Make(Expr::Kind::kName, line);
      e->name = t.text;
      return e;
    }
    if (t.type == Tok::kString) {
      std::string s;
      while (Peek().type == Tok::kString) s += t_[i_++].text;  // adjacent literals concatenate
      return Literal(Json(s), line);
    }
    if (t.type == Tok::kInt) return Literal(Json(t_[i_++].int_value), line);
    if (t.type == Tok::kFloat) return Literal(Json(t_[i_++].float_value), line);
    if (IsOp("(")) {
      ++i_;
      SY_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr());
      if (IsOp(",")) {  // tuple: evaluated as a list
        auto list = Make(Expr::Kind::kList, line);
        list->args.push_back(std::move(e));
        while (IsOp(",") && !IsOp(")", 1)) {
          ++i_;
          SY_ASSIGN_OR_RETURN(ExprPtr item, ParseExpr());
          list->args.push_back(std::move(item));
        }
        if (IsOp(",")) ++i_;
        e = std::move(list);
      }
      SY_RETURN_IF_ERROR(ExpectOp(")"));
      return e;
    }
    if (IsOp("[")) {
      ++i_;
      auto list = Make(Expr::Kind::kList, line);
      while (!IsOp("]")) {
        SY_ASSIGN_OR_RETURN(ExprPtr item, ParseExpr());
        list->args.push_back(std::move(item));
        if (!IsOp(",")) break;
        ++i_;
      }
      SY_RETURN_IF_ERROR(ExpectOp("]"));
      return list;
    }
    if (IsOp("{")) {
      ++i_;
      auto dict = Make(Expr::Kind::kDict, line);
      while (!IsOp("}")) {
        SY_ASSIGN_OR_RETURN(ExprPtr key, ParseExpr());
        SY_RETURN_IF_ERROR(ExpectOp(":"));
        SY_ASSIGN_OR_RETURN(ExprPtr value, ParseExpr());
        dict->args.push_back(std::move(key));
        dict->args.push_back(std::move(value));
        if (!IsOp(",")) break;
        ++i_;
      }
      SY_RETURN_IF_ERROR(ExpectOp("}"));
      return dict;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    for (int chain = 0;; ++chain) {
      const int line = Peek().line;
      if (chain > kMaxNesting) return TooDeep(line);
      if (IsOp(".")) {
        ++i_;
        auto get = Make(Expr::Kind::kGetAttr, line);
        if (Peek().type == Tok::kInt) {  // `x.0` is item access in jinja2
          get->kind = Expr::Kind::kGetItem;
          get->args.push_back(std::move(e));
          get->args.push_back(Literal(Json(t_[i_++].int_value), line));
        } else {
          SY_ASSIGN_OR_RETURN(get->name, Identifier());
          get->args.push_back(std::move(e));
        }
        e = std::move(get);
      } else if (IsOp("[")) {
        ++i_;
        SY_ASSIGN_OR_RETURN(e, ParseSubscript(std::move(e), line));
      } else if (IsOp("(")) {
        auto call = Make(Expr::Kind::kCall, line);
        call->args.push_back(std::move(e));
        SY_RETURN_IF_ERROR(ParseCallArgs(call.get()));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    int colons = 0;
    while (!IsOp("]")) {
      if (IsOp(":")) {
        if (++colons > 2) return Unexpected("']'");
        ++i_;
        continue;
      }
      SY_ASSIGN_OR_RETURN(parts[colons], ParseExpr());
    }
    ++i_;
    if (colons == 0) {
      if (!parts[0]) return SyntaxError(line, "empty subscript");
      auto get = Make(Expr::Kind::kGetItem, line);
      get->args.push_back(std::move(obj));
      get->args.push_back(std::move(parts[0]));
      return get;
    }
    auto slice = Make(Expr::Kind::kSlice, line);
    slice->args.push_back(std::move(obj));
    for (auto& p : parts) slice->args.push_back(std::move(p));
    return slice;
  }

  absl::Status ParseCallArgs(Expr* call) {
    SY_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().type == Tok::kName && IsOp("=", 1)) {
        std::string key = t_[i_].text;
        i_ += 2;
        SY_ASSIGN_OR_RETURN(ExprPtr value, ParseExpr());
        call->kwargs.emplace_back(key, std::move(value));
      } else {
        SY_ASSIGN_OR_RETURN(ExprPtr value, ParseExpr());
        call->args.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      ++i_;
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseFilterAndTest(ExprPtr e) {
    for (int chain = 0;; ++chain) {
      const int line = Peek().line;
      if (chain > kMaxNesting) return TooDeep(line);
      if (IsOp("|")) {
        ++i_;
        auto f = Make(Expr::Kind::kFilter, line);
        SY_ASSIGN_OR_RETURN(f->name, Identifier());
        f->args.push_back(std::move(e));
        if (IsOp("(")) {
          SY_RETURN_IF_ERROR(ParseCallArgs(f.get()));
        }
        e = std::move(f);
      } else if (IsName("is")) {
        ++i_;
        auto test = Make(Expr::Kind::kTest, line);
        if (IsName("not")) {
          test->negated = true;
          ++i_;
        }
        if (Peek().type == Tok::kOp &&
            (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
             Peek().text == ">" || Peek().text == "<=" || Peek().text == ">=")) {
          test->name = t_[i_++].text;
        } else {
          SY_ASSIGN_OR_RETURN(test->name, Identifier());
        }
        test->args.push_back(std::move(e));
        if (IsOp("(")) {
          SY_RETURN_IF_ERROR(ParseCallArgs(test.get()));
        } else if (StartsTestArgument()) {
          SY_ASSIGN_OR_RETURN(ExprPtr arg, ParseUnary(false));
          SY_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          test->args.push_back(std::move(arg));
        }
        e = std::move(test);
      } else {
        return e;
      }
    }
  }
  // jinja2 takes a bare argument after a test name (`is equalto 3`) when the
  // next token can start an expression and is not a keyword.
  bool StartsTestArgument() const {
    const Token& t = Peek();
    if (t.type == Tok::kString || t.type == Tok::kInt || t.type == Tok::kFloat) return true;
    if (t.type == Tok::kOp) return t.text == "[" || t.text == "{" || t.text == "-";
    if (t.type != Tok::kName) return false;
    for (const char* kw : {"else", "or", "and", "if", "in", "not", "is"}) {
      if (t.text == kw) return false;
    }
    return true;
  }

  ExprPtr Literal(Json value, int line) {
    auto e = Make(Expr::Kind::kLiteral, line);
    e->literal = std::move(value);
    return e;
  }
  ExprPtr Binary(Expr::Kind kind, std::string op, ExprPtr l, ExprPtr r) {
    auto e = Make(kind, l->line);
    e->depth = 1 + std::max(l->depth, r->depth);
    if (e->depth > kMaxNesting) too_deep_ = true;
    e->name = std::move(op);
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  // Counts recursion of the parse functions that can nest without limit.
  class Nesting {
   public:
    explicit Nesting(int* depth) : depth_(depth) { ++*depth_; }
    ~Nesting() { --*depth_; }
    bool exceeded() const { return *depth_ > kMaxNesting; }

   private:
    int* depth_;
  };
  absl::Status TooDeep(int line) {
    return SyntaxError(line, absl::StrCat("template nests deeper than ", kMaxNesting, " levels"));
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int nesting_ = 0;
  bool too_deep_ = false;  // an operator chain built a tree deeper than kMaxNesting
};

}  // namespace

// ---------------------------------------------------------------------------
// Values and rendering.

namespace {

// A template value: JSON data (shared, so item access does not copy),
// jinja2's Undefined, a namespace() object, or a macro.
struct Value {
  enum class Kind { kUndefined, kData, kNamespace, kMacro };
  Kind kind = Kind::kUndefined;
  std::shared_ptr<const Json> owner;
  const Json* ptr = nullptr;
  std::shared_ptr<Json> ns;
  const Node* macro = nullptr;

  static Value Of(Json j) {
    Value v;
    v.kind = Kind::kData;
    v.owner = std::make_shared<const Json>(std::move(j));
    v.ptr = v.owner.get();
    return v;
  }
  static Value Ref(const Value& parent, const Json* p) {
    Value v;
    v.kind = Kind::kData;
    v.owner = parent.owner;
    v.ptr = p;
    return v;
  }
  bool data() const { return kind == Kind::kData; }
  bool undefined() const { return kind == Kind::kUndefined; }
  const Json& j() const { return *ptr; }
  bool is_string() const { return data() && ptr->is_string(); }
  bool is_number() const { return data() && (ptr->is_number() || ptr->is_boolean()); }
  bool is_int() const { return data() && (ptr->is_number_integer() || ptr->is_boolean()); }
  double as_double() const {
    return ptr->is_boolean() ? (ptr->get<bool>() ? 1 : 0) : ptr->get<double>();
  }
  int64_t as_int() const {
    return ptr->is_boolean() ? (ptr->get<bool>() ? 1 : 0) : ptr->get<int64_t>();
  }
};

enum class Flow { kNormal, kBreak, kContinue };

// Python's float repr: shortest round-trip digits; fixed notation for
// exponents in [-4, 16), else d.ddde+XX.
std::string PyFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string sci(buf);
  size_t epos = sci.find('e');
  int exp = std::atoi(sci.c_str() + epos + 1);
  std::string digits;
  for (size_t i = 0; i < epos; ++i) {
    if (std::isdigit(static_cast<unsigned char>(sci[i]))) digits.push_back(sci[i]);
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string sign = d < 0 ? "-" : "";
  if (exp >= 16 || exp < -4) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return sign + mant + e;
  }
  if (exp < 0) return sign + "0." + std::string(-exp - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exp + 1)
    return sign + digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  return sign + digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
}

void JsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// Python json.dumps(v, ensure_ascii=False, indent=indent); indent < 0 means none.
void PyJsonDump(const Json& v, int indent, int level, std::string* out) {
  auto newline = [&](int lvl) {
    if (indent >= 0) {
      out->push_back('\n');
      out->append(static_cast<size_t>(indent * lvl), ' ');
    }
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.type()) {
    case Json::value_t::null:
      *out += "null";
      return;
    case Json::value_t::boolean:
      *out += v.get<bool>() ? "true" : "false";
      return;
    case Json::value_t::number_integer:
      *out += std::to_string(v.get<int64_t>());
      return;
    case Json::value_t::number_unsigned:
      *out += std::to_string(v.get<uint64_t>());
      return;
    case Json::value_t::number_float:
      *out += PyFloat(v.get<double>());
      return;
    case Json::value_t::string:
      JsonString(v.get_ref<const std::string&>(), out);
      return;
    case Json::value_t::array: {
      if (v.empty()) {
        *out += "[]";
        return;
      }
      out->push_back('[');
      bool first = true;
      for (const auto& item : v) {
        if (!first) *out += item_sep;
        first = false;
        newline(level + 1);
        PyJsonDump(item, indent, level + 1, out);
      }
      newline(level);
      out->push_back(']');
      return;
    }
    case Json::value_t::object: {
      if (v.empty()) {
        *out += "{}";
        return;
      }
      out->push_back('{');
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) *out += item_sep;
        first = false;
        newline(level + 1);
        JsonString(key, out);
        *out += ": ";
        PyJsonDump(item, indent, level + 1, out);
      }
      newline(level);
      out->push_back('}');
      return;
    }
    default:
      *out += "null";
  }
}

// Python repr(), for printing lists and dicts.
void PyRepr(const Json& v, std::string* out) {
  switch (v.type()) {
    case Json::value_t::null:
      *out += "None";
      return;
    case Json::value_t::boolean:
      *out += v.get<bool>() ? "True" : "False";
      return;
    case Json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
      out->push_back(q);
      for (char c : s) {
        if (c == q || c == '\\') {
          out->push_back('\\');
          out->push_back(c);
        } else if (c == '\n') {
          *out += "\\n";
        } else if (c == '\t') {
          *out += "\\t";
        } else if (c == '\r') {
          *out += "\\r";
        } else {
          out->push_back(c);
        }
      }
      out->push_back(q);
      return;
    }
    case Json::value_t::array: {
      out->push_back('[');
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) *out += ", ";
        PyRepr(v[i], out);
      }
      out->push_back(']');
      return;
    }
    case Json::value_t::object: {
      out->push_back('{');
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) *out += ", ";
        first = false;
        PyRepr(Json(key), out);
        *out += ": ";
        PyRepr(item, out);
      }
      out->push_back('}');
      return;
    }
    default:
      PyJsonDump(v, -1, 0, out);
  }
}

std::string ToStr(const Value& v) {
  if (v.undefined()) return "";
  if (v.kind == Value::Kind::kNamespace) return "<Namespace>";
  if (v.kind == Value::Kind::kMacro) return "<Macro>";
  const Json& j = v.j();
  if (j.is_string()) return j.get<std::string>();
  std::string out;
  PyRepr(j, &out);
  return out;
}

bool Truthy(const Value& v) {
  if (v.kind == Value::Kind::kNamespace || v.kind == Value::Kind::kMacro) return true;
  if (v.undefined()) return false;
  const Json& j = v.j();
  switch (j.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return j.get<int64_t>() != 0;
    case Json::value_t::number_float:
      return j.get<double>() != 0;
    case Json::value_t::string:
      return !j.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !j.empty();
    default:
      return false;
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.undefined() || b.undefined()) return a.undefined() && b.undefined();
  if (!a.data() || !b.data()) return a.ns == b.ns && a.macro == b.macro;
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  return a.j() == b.j();
}

// Unicode code points of UTF-8 text, for slicing and indexing strings.
std::vector<std::string> CodePoints(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string PyStrip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars == nullptr || !chars->is_string()) return IsSpace(c);
    return chars->j().get_ref<const std::string&>().find(c) != std::string::npos;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip_char(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip_char(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

std::string PyReplace(const std::string& s, const std::string& from, const std::string& to,
                      int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + to;
    pos = hit + from.size();
  }
  return out + s.substr(pos);
}

std::string ChangeCase(std::string s, bool upper) {
  for (char& c : s)
    c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    bool alpha = std::isalpha(u);
    c = static_cast<char>(alpha ? (prev_cased ? std::tolower(u) : std::toupper(u)) : u);
    prev_cased = alpha;
  }
  return out;
}

using Kwargs = std::vector<std::pair<std::string, Value>>;

const Value* FindKwarg(const Kwargs& kw, absl::string_view name) {
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

// Positional argument `i`, else keyword `name`, else nullptr.
const Value* Arg(const std::vector<Value>& pos, const Kwargs& kw, size_t i,
                 absl::string_view name) {
  if (i < pos.size()) return &pos[i];
  return FindKwarg(kw, name);
}

class Renderer {
 public:
  explicit Renderer(const Json& context) {
    scopes_.emplace_back();
    Value root = Value::Of(context);
    if (root.j().is_object()) {
      for (const auto& [k, v] : root.j().items()) scopes_[0][k] = Value::Ref(root, &v);
    }
  }

  absl::Status Render(const NodeList& nodes, std::string* out, Flow* flow) {
    for (const auto& node : nodes) {
      SY_RETURN_IF_ERROR(RenderNode(*node, out, flow));
      if (*flow != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

 private:
  using Scope = absl::flat_hash_map<std::string, Value>;

  absl::Status Error(int line, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template error at line ", line, ": ", message));
  }

  Value Lookup(const std::string& name) const {
    for (size_t i = scopes_.size(); i-- > floor_;) {
      auto it = scopes_[i].find(name);
      if (it != scopes_[i].end()) return it->second;
    }
    if (floor_ > 0) {
      auto it = scopes_[0].find(name);
      if (it != scopes_[0].end()) return it->second;
    }
    return Value();
  }

  absl::Status RenderNode(const Node& n, std::string* out, Flow* flow) {
    switch (n.kind) {
      case Node::Kind::kText:
        *out += n.text;
        return absl::OkStatus();
      case Node::Kind::kOutput: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        *out += ToStr(v);
        return absl::OkStatus();
      }
      case Node::Kind::kIf:
        for (const auto& [cond, body] : n.branches) {
          bool take = true;
          if (cond != nullptr) {
            SY_ASSIGN_OR_RETURN(Value c, Eval(*cond));
            take = Truthy(c);
          }
          if (take) return Render(body, out, flow);
        }
        return absl::OkStatus();
      case Node::Kind::kFor:
        return RenderFor(n, out, flow);
      case Node::Kind::kSet: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        return Assign(n, std::move(v));
      }
      case Node::Kind::kSetBlock: {
        std::string captured;
        Flow inner = Flow::kNormal;
        SY_RETURN_IF_ERROR(Render(n.body, &captured, &inner));
        return Assign(n, Value::Of(Json(captured)));
      }
      case Node::Kind::kMacro: {
        Value m;
        m.kind = Value::Kind::kMacro;
        m.macro = &n;
        scopes_.back()[n.text] = m;
        return absl::OkStatus();
      }
      case Node::Kind::kBreak:
        *flow = Flow::kBreak;
        return absl::OkStatus();
      case Node::Kind::kContinue:
        *flow = Flow::kContinue;
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status Assign(const Node& n, Value v) {
    if (!n.attr.empty()) {
      Value target = Lookup(n.targets[0]);
      if (target.kind != Value::Kind::kNamespace) {
        return Error(n.line, absl::StrCat("cannot assign attribute on '", n.targets[0],
                                          "': not a namespace"));
      }
      if (!v.data()) return Error(n.line, "only data values can be stored in a namespace");
      (*target.ns)[n.attr] = v.j();
      return absl::OkStatus();
    }
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return absl::OkStatus();
    }
    if (!v.data() || !v.j().is_array() || v.j().size() != n.targets.size()) {
      return Error(n.line, "cannot unpack value into the set targets");
    }
    for (size_t i = 0; i < n.targets.size(); ++i)
      scopes_.back()[n.targets[i]] = Value::Ref(v, &v.j()[i]);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Value>> Iterate(const Value& v, int line) {
    std::vector<Value> items;
    if (v.undefined()) return items;
    if (!v.data()) return Error(line, "value is not iterable");
    const Json& j = v.j();
    if (j.is_array()) {
      for (const auto& item : j) items.push_back(Value::Ref(v, &item));
    } else if (j.is_object()) {
      for (const auto& [k, unused] : j.items()) items.push_back(Value::Of(Json(k)));
    } else if (j.is_string()) {
      for (auto& cp : CodePoints(j.get<std::string>())) items.push_back(Value::Of(Json(cp)));
    } else {
      return Error(line, absl::StrCat("'", j.type_name(), "' value is not iterable"));
    }
    return items;
  }

  absl::Status RenderFor(const Node& n, std::string* out, Flow* flow) {
    SY_ASSIGN_OR_RETURN(Value seq, Eval(*n.expr));
    SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(seq, n.line));
    scopes_.emplace_back();
    auto bind = [&](const Value& item) -> absl::Status {
      if (n.targets.size() == 1) {
        scopes_.back()[n.targets[0]] = item;
        return absl::OkStatus();
      }
      if (!item.data() || !item.j().is_array() || item.j().size() != n.targets.size()) {
        return Error(n.line, "cannot unpack loop item into the loop targets");
      }
      for (size_t i = 0; i < n.targets.size(); ++i)
        scopes_.back()[n.targets[i]] = Value::Ref(item, &item.j()[i]);
      return absl::OkStatus();
    };
    absl::Status status;
    if (n.condition != nullptr) {  // the `if` filter runs before loop.* is known
      std::vector<Value> kept;
      for (const auto& item : items) {
        status = bind(item);
        if (!status.ok()) break;
        absl::StatusOr<Value> keep = Eval(*n.condition);
        if (!keep.ok()) {
          status = keep.status();
          break;
        }
        if (Truthy(*keep)) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; status.ok() && i < length; ++i) {
      status = bind(items[i]);
      if (!status.ok()) break;
      Json loop = {{"index", i + 1},
                   {"index0", i},
                   {"first", i == 0},
                   {"last", i == length - 1},
                   {"length", length},
                   {"revindex", length - i},
                   {"revindex0", length - i - 1}};
      if (i > 0 && items[i - 1].data()) loop["previtem"] = items[i - 1].j();
      if (i + 1 < length && items[i + 1].data()) loop["nextitem"] = items[i + 1].j();
      scopes_.back()["loop"] = Value::Of(std::move(loop));
      Flow inner = Flow::kNormal;
      status = Render(n.body, out, &inner);
      if (inner == Flow::kBreak) break;
    }
    scopes_.pop_back();
    SY_RETURN_IF_ERROR(status);
    if (length == 0 && !n.else_body.empty()) return Render(n.else_body, out, flow);
    return absl::OkStatus();
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return Value::Of(e.literal);
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kGetAttr: {
        SY_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        return GetAttr(obj, e.name);
      }
      case Expr::Kind::kGetItem: {
        SY_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        SY_ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        return GetItem(obj, key);
      }
      case Expr::Kind::kSlice:
        return EvalSlice(e);
      case Expr::Kind::kCall:
        return EvalCall(e);
      case Expr::Kind::kFilter: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        std::vector<Value> pos;
        Kwargs kw;
        SY_RETURN_IF_ERROR(EvalArgs(e, 1, &pos, &kw));
        return Filter(e.name, v, pos, kw, e.line);
      }
      case Expr::Kind::kTest: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        std::vector<Value> pos;
        Kwargs kw;
        SY_RETURN_IF_ERROR(EvalArgs(e, 1, &pos, &kw));
        SY_ASSIGN_OR_RETURN(bool result, Test(e.name, v, pos, e.line));
        return Value::Of(Json(result != e.negated));
      }
      case Expr::Kind::kUnary: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (!v.is_number()) return Error(e.line, absl::StrCat("bad operand for unary ", e.name));
        if (e.name == "+") return v;
        if (v.is_int()) return Value::Of(Json(-v.as_int()));
        return Value::Of(Json(-v.as_double()));
      }
      case Expr::Kind::kNot: {
        SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        return Value::Of(Json(!Truthy(v)));
      }
      case Expr::Kind::kAnd:
      case Expr::Kind::kOr: {  // Python semantics: returns the deciding operand
        SY_ASSIGN_OR_RETURN(Value l, Eval(*e.args[0]));
        if (Truthy(l) == (e.kind == Expr::Kind::kOr)) return l;
        return Eval(*e.args[1]);
      }
      case Expr::Kind::kCond: {
        SY_ASSIGN_OR_RETURN(Value c, Eval(*e.args[1]));
        if (Truthy(c)) return Eval(*e.args[0]);
        if (e.args[2] == nullptr) return Value();
        return Eval(*e.args[2]);
      }
      case Expr::Kind::kList: {
        Json list = Json::array();
        for (const auto& item : e.args) {
          SY_ASSIGN_OR_RETURN(Value v, Eval(*item));
          if (!v.data()) return Error(e.line, "only data values can be stored in a list");
          list.push_back(v.j());
        }
        return Value::Of(std::move(list));
      }
      case Expr::Kind::kDict: {
        Json dict = Json::object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          SY_ASSIGN_OR_RETURN(Value k, Eval(*e.args[i]));
          SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
          if (!v.data()) return Error(e.line, "only data values can be stored in a dict");
          dict[ToStr(k)] = v.j();
        }
        return Value::Of(std::move(dict));
      }
      case Expr::Kind::kBinary: {
        SY_ASSIGN_OR_RETURN(Value l, Eval(*e.args[0]));
        SY_ASSIGN_OR_RETURN(Value r, Eval(*e.args[1]));
        return Binary(e.name, l, r, e.line);
      }
    }
    return Error(e.line, "unknown expression");
  }

  absl::Status EvalArgs(const Expr& e, size_t first, std::vector<Value>* pos, Kwargs* kw) {
    for (size_t i = first; i < e.args.size(); ++i) {
      SY_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
      pos->push_back(std::move(v));
    }
    for (const auto& [k, arg] : e.kwargs) {
      SY_ASSIGN_OR_RETURN(Value v, Eval(*arg));
      kw->emplace_back(k, std::move(v));
    }
    return absl::OkStatus();
  }

  static Value GetAttr(const Value& obj, const std::string& name) {
    if (obj.kind == Value::Kind::kNamespace) {
      auto it = obj.ns->find(name);
      return it == obj.ns->end() ? Value() : Value::Of(*it);
    }
    if (!obj.data() || !obj.j().is_object()) return Value();
    auto it = obj.j().find(name);
    return it == obj.j().end() ? Value() : Value::Ref(obj, &*it);
  }

  static Value GetItem(const Value& obj, const Value& key) {
    if (key.is_string()) return GetAttr(obj, key.j().get<std::string>());
    if (!obj.data() || !key.is_int()) return Value();
    int64_t i = key.as_int();
    if (obj.j().is_array()) {
      int64_t n = static_cast<int64_t>(obj.j().size());
      if (i < 0) i += n;
      return i < 0 || i >= n ? Value() : Value::Ref(obj, &obj.j()[static_cast<size_t>(i)]);
    }
    if (obj.j().is_string()) {
      auto cps = CodePoints(obj.j().get<std::string>());
      int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      return i < 0 || i >= n ? Value() : Value::Of(Json(cps[static_cast<size_t>(i)]));
    }
    return Value();
  }

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    SY_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
    int64_t bound[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (e.args[k + 1] == nullptr) continue;
      SY_ASSIGN_OR_RETURN(Value b, Eval(*e.args[k + 1]));
      if (b.data() && b.j().is_null()) continue;
      if (!b.is_int()) return Error(e.line, "slice indices must be integers");
      bound[k] = b.as_int();
      given[k] = true;
    }
    int64_t step = bound[2];
    if (step == 0) return Error(e.line, "slice step cannot be zero");
    if (!obj.data() || !(obj.j().is_array() || obj.j().is_string())) {
      return Error(e.line, "only lists and strings can be sliced");
    }
    std::vector<std::string> cps;
    const bool is_string = obj.j().is_string();
    if (is_string) cps = CodePoints(obj.j().get<std::string>());
    const int64_t n =
        is_string ? static_cast<int64_t>(cps.size()) : static_cast<int64_t>(obj.j().size());
    // Python's slice.indices().
    auto clamp = [&](int64_t v, bool is_given, int64_t dflt) {
      if (!is_given) return dflt;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    int64_t start = clamp(bound[0], given[0], step > 0 ? 0 : n - 1);
    int64_t stop = clamp(bound[1], given[1], step > 0 ? n : -1);
    Json list = Json::array();
    std::string str;
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
      if (is_string) {
        str += cps[static_cast<size_t>(i)];
      } else {
        list.push_back(obj.j()[static_cast<size_t>(i)]);
      }
      if (__builtin_add_overflow(i, step, &i)) break;  // a huge step: past the end
    }
    return is_string ? Value::Of(Json(str)) : Value::Of(std::move(list));
  }

  absl::StatusOr<Value> Binary(const std::string& op, const Value& l, const Value& r, int line) {
    if (op == "==") return Value::Of(Json(Equal(l, r)));
    if (op == "!=") return Value::Of(Json(!Equal(l, r)));
    if (op == "in" || op == "not in") {
      SY_ASSIGN_OR_RETURN(bool found, Contains(r, l, line));
      return Value::Of(Json(found == (op == "in")));
    }
    if (op == "~") return Value::Of(Json(ToStr(l) + ToStr(r)));
    if (l.undefined() || r.undefined()) {
      return Error(line, absl::StrCat("undefined value in '", op, "' expression"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (l.is_number() && r.is_number()) {
        double a = l.as_double(), b = r.as_double();
        cmp = a < b ? -1 : a > b ? 1 : 0;
      } else if (l.is_string() && r.is_string()) {
        cmp = l.j().get_ref<const std::string&>().compare(r.j().get_ref<const std::string&>());
      } else {
        return Error(line, absl::StrCat("'", op, "' not supported between these types"));
      }
      bool result = op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0;
      return Value::Of(Json(result));
    }
    if (l.is_number() && r.is_number()) {
      const bool ints = l.is_int() && r.is_int();
      if (op == "/") {
        if (r.as_double() == 0) return Error(line, "division by zero");
        return Value::Of(Json(l.as_double() / r.as_double()));
      }
      if (ints) {
        int64_t a = l.as_int(), b = r.as_int(), result = 0;
        const auto overflow = [&] {
          return Error(line, absl::StrCat("integer overflow in '", op, "'"));
        };
        if (op == "+") {
          if (__builtin_add_overflow(a, b, &result)) return overflow();
          return Value::Of(Json(result));
        }
        if (op == "-") {
          if (__builtin_sub_overflow(a, b, &result)) return overflow();
          return Value::Of(Json(result));
        }
        if (op == "*") {
          if (__builtin_mul_overflow(a, b, &result)) return overflow();
          return Value::Of(Json(result));
        }
        if (op == "**") {
          if (b < 0) {
            return Value::Of(Json(std::pow(static_cast<double>(a), static_cast<double>(b))));
          }
          int64_t p = 1, base = a;  // by squaring: O(log b) steps
          for (int64_t e = b; e > 0; e >>= 1) {
            if ((e & 1) && __builtin_mul_overflow(p, base, &p)) return overflow();
            if (e > 1 && __builtin_mul_overflow(base, base, &base)) return overflow();
          }
          return Value::Of(Json(p));
        }
        if (b == 0) return Error(line, "division by zero");
        if (b == -1 && a == INT64_MIN) return overflow();
        int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {
          --q;
          m += b;
        }
        if (op == "//") return Value::Of(Json(q));
        if (op == "%") return Value::Of(Json(m));
      } else {
        double a = l.as_double(), b = r.as_double();
        if (op == "+") return Value::Of(Json(a + b));
        if (op == "-") return Value::Of(Json(a - b));
        if (op == "*") return Value::Of(Json(a * b));
        if (op == "**") return Value::Of(Json(std::pow(a, b)));
        if (b == 0) return Error(line, "division by zero");
        if (op == "//") return Value::Of(Json(std::floor(a / b)));
        if (op == "%") return Value::Of(Json(a - b * std::floor(a / b)));
      }
    }
    if (op == "+" && l.is_string() && r.is_string()) {
      return Value::Of(Json(l.j().get<std::string>() + r.j().get<std::string>()));
    }
    if (op == "+" && l.data() && r.data() && l.j().is_array() && r.j().is_array()) {
      Json list = l.j();
      for (const auto& item : r.j()) list.push_back(item);
      return Value::Of(std::move(list));
    }
    if (op == "*" && (l.is_string() || (l.data() && l.j().is_array())) && r.is_int()) {
      const int64_t times = std::max<int64_t>(r.as_int(), 0);
      const size_t unit =
          l.j().is_string() ? l.j().get_ref<const std::string&>().size() : l.j().size();
      if (unit > 0 && static_cast<uint64_t>(times) > kMaxRepeatBytes / unit) {
        return Error(line, "repetition result is too large");
      }
      if (l.j().is_string()) {
        const std::string& piece = l.j().get_ref<const std::string&>();
        std::string out;
        out.reserve(piece.size() * static_cast<size_t>(times));
        for (int64_t k = 0; k < times; ++k) out += piece;
        return Value::Of(Json(std::move(out)));
      }
      Json out = Json::array();
      for (int64_t k = 0; k < times; ++k) {
        for (const auto& item : l.j()) out.push_back(item);
      }
      return Value::Of(std::move(out));
    }
    return Error(line, absl::StrCat("unsupported operand types for '", op, "'"));
  }

  absl::StatusOr<bool> Contains(const Value& container, const Value& item, int line) {
    if (container.undefined()) return false;
    if (container.kind == Value::Kind::kNamespace)
      return item.is_string() && container.ns->contains(item.j().get<std::string>());
    if (!container.data()) return Error(line, "'in' needs a string, list or dict");
    const Json& c = container.j();
    if (c.is_string()) {
      if (!item.is_string()) return Error(line, "'in <string>' requires a string on the left");
      return c.get_ref<const std::string&>().find(item.j().get_ref<const std::string&>()) !=
             std::string::npos;
    }
    if (c.is_object()) return item.is_string() && c.contains(item.j().get<std::string>());
    if (c.is_array()) {
      for (const auto& x : c) {
        if (Equal(Value::Ref(container, &x), item)) return true;
      }
      return false;
    }
    return Error(line, "'in' needs a string, list or dict");
  }

  absl::StatusOr<Value> EvalCall(const Expr& e) {
    std::vector<Value> pos;
    Kwargs kw;
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::Kind::kGetAttr) {
      SY_ASSIGN_OR_RETURN(Value obj, Eval(*callee.args[0]));
      if (obj.data() && (obj.j().is_string() || obj.j().is_object() || obj.j().is_array())) {
        SY_RETURN_IF_ERROR(EvalArgs(e, 1, &pos, &kw));
        return Method(obj, callee.name, pos, kw, e.line);
      }
      Value fn = GetAttr(obj, callee.name);
      if (fn.kind != Value::Kind::kMacro)
        return Error(e.line, absl::StrCat("'", callee.name, "' is not callable"));
      SY_RETURN_IF_ERROR(EvalArgs(e, 1, &pos, &kw));
      return CallMacro(*fn.macro, pos, kw, e.line);
    }
    SY_RETURN_IF_ERROR(EvalArgs(e, 1, &pos, &kw));
    if (callee.kind == Expr::Kind::kName) {
      Value fn = Lookup(callee.name);
      if (fn.kind == Value::Kind::kMacro) return CallMacro(*fn.macro, pos, kw, e.line);
      if (fn.undefined()) return Builtin(callee.name, pos, kw, e.line);
    }
    return Error(e.line, "value is not callable");
  }

  absl::StatusOr<Value> CallMacro(const Node& macro, const std::vector<Value>& pos,
                                  const Kwargs& kw, int line) {
    if (macro_depth_ >= kMaxMacroDepth) {
      return Error(line, absl::StrCat("macro calls nest deeper than ", kMaxMacroDepth,
                                      " (recursive macro?)"));
    }
    ++macro_depth_;
    absl::StatusOr<Value> result = CallMacroBody(macro, pos, kw, line);
    --macro_depth_;
    return result;
  }

  absl::StatusOr<Value> CallMacroBody(const Node& macro, const std::vector<Value>& pos,
                                      const Kwargs& kw, int line) {
    if (pos.size() > macro.params.size()) {
      return Error(
          line, absl::StrCat("macro '", macro.text, "' takes ", macro.params.size(), " arguments"));
    }
    Scope args;
    for (size_t i = 0; i < macro.params.size(); ++i) {
      const auto& [name, def] = macro.params[i];
      if (const Value* v = Arg(pos, kw, i, name)) {
        args[name] = *v;
      } else if (def != nullptr) {
        SY_ASSIGN_OR_RETURN(args[name], Eval(*def));
      } else {
        args[name] = Value();
      }
    }
    const size_t saved_floor = floor_;
    scopes_.push_back(std::move(args));
    floor_ = scopes_.size() - 1;
    std::string out;
    Flow flow = Flow::kNormal;
    absl::Status status = Render(macro.body, &out, &flow);
    floor_ = saved_floor;
    scopes_.pop_back();
    SY_RETURN_IF_ERROR(status);
    return Value::Of(Json(out));
  }

  absl::StatusOr<Value> Builtin(const std::string& name, const std::vector<Value>& pos,
                                const Kwargs& kw, int line) {
    if (name == "raise_exception") {
      return absl::InvalidArgumentError(pos.empty() ? std::string("raise_exception called")
                                                    : ToStr(pos[0]));
    }
    if (name == "range") {
      int64_t b[3] = {0, 0, 1};
      for (const auto& v : pos) {
        if (!v.is_int()) return Error(line, "range() arguments must be integers");
      }
      if (pos.size() == 1) {
        b[1] = pos[0].as_int();
      } else if (pos.size() >= 2) {
        b[0] = pos[0].as_int();
        b[1] = pos[1].as_int();
        if (pos.size() > 2) b[2] = pos[2].as_int();
      } else {
        return Error(line, "range() needs arguments");
      }
      if (b[2] == 0) return Error(line, "range() step cannot be zero");
      Json list = Json::array();
      for (int64_t i = b[0]; b[2] > 0 ? i < b[1] : i > b[1];) {
        if (static_cast<int64_t>(list.size()) >= kMaxRange) {
          return Error(line, absl::StrCat("range() is limited to ", kMaxRange, " items"));
        }
        list.push_back(i);
        if (__builtin_add_overflow(i, b[2], &i)) break;
      }
      return Value::Of(std::move(list));
    }
    if (name == "namespace" || name == "dict") {
      Json obj = Json::object();
      if (!pos.empty() && pos[0].data() && pos[0].j().is_object()) obj = pos[0].j();
      for (const auto& [k, v] : kw) {
        if (!v.data()) return Error(line, "only data values can be stored in a namespace");
        obj[k] = v.j();
      }
      if (name == "dict") return Value::Of(std::move(obj));
      Value ns;
      ns.kind = Value::Kind::kNamespace;
      ns.ns = std::make_shared<Json>(std::move(obj));
      return ns;
    }
    if (name == "strftime_now") {
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      size_t n =
          std::strftime(buf, sizeof(buf), pos.empty() ? "%Y-%m-%d" : ToStr(pos[0]).c_str(), &tm);
      return Value::Of(Json(std::string(buf, n)));
    }
    return Error(line, absl::StrCat("'", name, "' is undefined"));
  }

  absl::StatusOr<Value> Method(const Value& obj, const std::string& name,
                               const std::vector<Value>& pos, const Kwargs& kw, int line) {
    const Json& j = obj.j();
    if (j.is_object()) {
      if (name == "items") {
        Json list = Json::array();
        for (const auto& [k, v] : j.items()) list.push_back(Json::array({k, v}));
        return Value::Of(std::move(list));
      }
      if (name == "keys" || name == "values") {
        Json list = Json::array();
        for (const auto& [k, v] : j.items()) list.push_back(name == "keys" ? Json(k) : v);
        return Value::Of(std::move(list));
      }
      if (name == "get") {
        if (pos.empty()) return Error(line, "get() needs a key");
        Value v = GetItem(obj, pos[0]);
        if (!v.undefined()) return v;
        return pos.size() > 1 ? pos[1] : Value::Of(Json(nullptr));
      }
      Value fn = GetAttr(obj, name);
      if (fn.kind == Value::Kind::kMacro) return CallMacro(*fn.macro, pos, kw, line);
      return Error(line, absl::StrCat("dict has no method '", name, "'"));
    }
    if (j.is_array()) return Error(line, absl::StrCat("list method '", name, "' is not supported"));
    const std::string& s = j.get_ref<const std::string&>();
    const Value* a0 = Arg(pos, kw, 0, "");
    if (name == "upper" || name == "lower") return Value::Of(Json(ChangeCase(s, name == "upper")));
    if (name == "strip") return Value::Of(Json(PyStrip(s, a0, true, true)));
    if (name == "lstrip") return Value::Of(Json(PyStrip(s, a0, true, false)));
    if (name == "rstrip") return Value::Of(Json(PyStrip(s, a0, false, true)));
    if (name == "title") return Value::Of(Json(PyTitle(s)));
    if (name == "capitalize") {
      std::string out = ChangeCase(s, false);
      if (!out.empty())
        out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
      return Value::Of(Json(out));
    }
    if (name == "startswith" || name == "endswith") {
      if (a0 == nullptr || !a0->data())
        return Error(line, absl::StrCat(name, "() needs an argument"));
      std::vector<std::string> options;
      if (a0->j().is_array()) {
        for (const auto& o : a0->j()) {
          if (o.is_string()) options.push_back(o.get<std::string>());
        }
      } else if (a0->j().is_string()) {
        options.push_back(a0->j().get<std::string>());
      }
      for (const auto& o : options) {
        bool hit = name == "startswith"
                       ? s.compare(0, o.size(), o) == 0 && s.size() >= o.size()
                       : s.size() >= o.size() && s.compare(s.size() - o.size(), o.size(), o) == 0;
        if (hit) return Value::Of(Json(true));
      }
      return Value::Of(Json(false));
    }
    if (name == "split") {
      const Value* sep = Arg(pos, kw, 0, "sep");
      const Value* maxv = Arg(pos, kw, 1, "maxsplit");
      int64_t maxsplit = maxv != nullptr && maxv->is_int() ? maxv->as_int() : -1;
      Json parts = Json::array();
      if (sep == nullptr || !sep->is_string()) {
        size_t i = 0;
        while (true) {
          while (i < s.size() && IsSpace(s[i])) ++i;
          if (i >= s.size()) break;
          if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
            parts.push_back(PyStrip(s.substr(i), nullptr, false, true));
            break;
          }
          size_t e = i;
          while (e < s.size() && !IsSpace(s[e])) ++e;
          parts.push_back(s.substr(i, e - i));
          i = e;
        }
        return Value::Of(std::move(parts));
      }
      const std::string& d = sep->j().get_ref<const std::string&>();
      if (d.empty()) return Error(line, "empty separator");
      size_t start = 0;
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        size_t hit = s.find(d, start);
        if (hit == std::string::npos) break;
        parts.push_back(s.substr(start, hit - start));
        start = hit + d.size();
      }
      parts.push_back(s.substr(start));
      return Value::Of(std::move(parts));
    }
    if (name == "replace") {
      if (pos.size() < 2 || !pos[0].is_string() || !pos[1].is_string()) {
        return Error(line, "replace() needs two strings");
      }
      int64_t count = pos.size() > 2 && pos[2].is_int() ? pos[2].as_int() : -1;
      return Value::Of(
          Json(PyReplace(s, pos[0].j().get<std::string>(), pos[1].j().get<std::string>(), count)));
    }
    if (name == "find" || name == "count") {
      if (a0 == nullptr || !a0->is_string())
        return Error(line, absl::StrCat(name, "() needs a string"));
      const std::string& sub = a0->j().get_ref<const std::string&>();
      if (name == "find") {
        size_t hit = s.find(sub);
        return Value::Of(Json(hit == std::string::npos
                                  ? int64_t{-1}
                                  : static_cast<int64_t>(CodePoints(s.substr(0, hit)).size())));
      }
      int64_t n = 0;
      for (size_t p = s.find(sub); !sub.empty() && p != std::string::npos;
           p = s.find(sub, p + sub.size()))
        ++n;
      return Value::Of(Json(n));
    }
    if (name == "join") {
      if (a0 == nullptr) return Error(line, "join() needs an iterable");
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*a0, line));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) out += (i ? s : "") + ToStr(items[i]);
      return Value::Of(Json(out));
    }
    return Error(line, absl::StrCat("str has no method '", name, "'"));
  }

  absl::StatusOr<bool> Test(const std::string& name, const Value& v, const std::vector<Value>& args,
                            int line) {
    const bool data = v.data();
    const Json* j = data ? &v.j() : nullptr;
    if (name == "defined") return !v.undefined();
    if (name == "undefined") return v.undefined();
    if (name == "none") return data && j->is_null();
    if (name == "string") return data && j->is_string();
    if (name == "number") return data && j->is_number();
    if (name == "integer") return data && j->is_number_integer();
    if (name == "float") return data && j->is_number_float();
    if (name == "boolean") return data && j->is_boolean();
    if (name == "mapping") return (data && j->is_object()) || v.kind == Value::Kind::kNamespace;
    if (name == "sequence" || name == "iterable")
      return data && (j->is_array() || j->is_object() || j->is_string());
    if (name == "callable") return v.kind == Value::Kind::kMacro;
    if (name == "true") return data && j->is_boolean() && j->get<bool>();
    if (name == "false") return data && j->is_boolean() && !j->get<bool>();
    if (name == "odd" || name == "even") {
      if (!v.is_int()) return Error(line, absl::StrCat("'", name, "' test needs an integer"));
      return (v.as_int() % 2 != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      if (!v.is_int() || args.empty() || !args[0].is_int() || args[0].as_int() == 0) {
        return Error(line, "'divisibleby' test needs integers");
      }
      return v.as_int() % args[0].as_int() == 0;
    }
    if (name == "lower" || name == "upper") {
      return data && j->is_string() &&
             ChangeCase(j->get<std::string>(), name == "upper") == j->get<std::string>();
    }
    static const std::vector<std::pair<std::string, std::string>> kCompare = {
        {"equalto", "=="}, {"eq", "=="}, {"==", "=="}, {"sameas", "=="}, {"ne", "!="},
        {"!=", "!="},      {"lt", "<"},  {"<", "<"},   {"le", "<="},     {"<=", "<="},
        {"gt", ">"},       {">", ">"},   {"ge", ">="}, {">=", ">="},     {"in", "in"}};
    for (const auto& [test, op] : kCompare) {
      if (name != test) continue;
      if (args.empty()) return Error(line, absl::StrCat("'", name, "' test needs an argument"));
      if (name == "sameas" && data && args[0].data() && j->type() != args[0].j().type())
        return false;
      SY_ASSIGN_OR_RETURN(Value r, Binary(op, v, args[0], line));
      return Truthy(r);
    }
    return Error(line, absl::StrCat("unknown test '", name, "'"));
  }

  absl::StatusOr<Value> Filter(const std::string& name, const Value& v,
                               const std::vector<Value>& pos, const Kwargs& kw, int line) {
    if (name == "default" || name == "d") {
      const Value* b = Arg(pos, kw, 1, "boolean");
      const bool use_default = v.undefined() || (b != nullptr && Truthy(*b) && !Truthy(v));
      if (!use_default) return v;
      const Value* d = Arg(pos, kw, 0, "default_value");
      return d != nullptr ? *d : Value::Of(Json(""));
    }
    if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") return v;
    if (name == "string") return Value::Of(Json(ToStr(v)));
    if (name == "length" || name == "count") {
      if (v.undefined()) return Value::Of(Json(0));
      if (v.is_string()) return Value::Of(Json(CodePoints(v.j().get<std::string>()).size()));
      if (v.data() && (v.j().is_array() || v.j().is_object())) return Value::Of(Json(v.j().size()));
      return Error(line, "object has no length");
    }
    if (name == "tojson") {
      if (!v.data()) return Error(line, "tojson: value is undefined or not data");
      const Value* indent = Arg(pos, kw, 0, "indent");
      std::string out;
      PyJsonDump(v.j(),
                 indent != nullptr && indent->is_int()
                     ? static_cast<int>(std::clamp<int64_t>(indent->as_int(), -1, 64))
                     : -1,
                 0, &out);
      return Value::Of(Json(out));
    }
    if (name == "items") {
      if (v.undefined()) return Value::Of(Json::array());
      if (!v.data() || !v.j().is_object()) return Error(line, "items: value is not a mapping");
      return Method(v, "items", {}, {}, line);
    }
    if (name == "list") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      return ToList(items, line);
    }
    if (name == "first" || name == "last") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      if (items.empty()) return Value();
      return name == "first" ? items.front() : items.back();
    }
    if (name == "reverse") {
      if (v.is_string()) {
        auto cps = CodePoints(v.j().get<std::string>());
        std::reverse(cps.begin(), cps.end());
        return Value::Of(Json(absl::StrJoin(cps, "")));
      }
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      std::reverse(items.begin(), items.end());
      return ToList(items, line);
    }
    if (name == "unique") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      std::vector<Value> kept;
      for (const auto& item : items) {
        bool seen = false;
        for (const auto& k : kept) seen = seen || Equal(k, item);
        if (!seen) kept.push_back(item);
      }
      return ToList(kept, line);
    }
    if (name == "join") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      const Value* sep = Arg(pos, kw, 0, "d");
      const Value* attr = Arg(pos, kw, 1, "attribute");
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (i && sep != nullptr) out += ToStr(*sep);
        out += ToStr(attr != nullptr ? GetAttr(items[i], ToStr(*attr)) : items[i]);
      }
      return Value::Of(Json(out));
    }
    if (name == "map") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      std::vector<Value> mapped;
      if (const Value* attr = FindKwarg(kw, "attribute")) {
        const Value* dflt = FindKwarg(kw, "default");
        for (const auto& item : items) {
          Value got = GetItem(item, *attr);
          mapped.push_back(got.undefined() && dflt != nullptr ? *dflt : got);
        }
      } else {
        if (pos.empty()) return Error(line, "map needs a filter name or attribute=");
        std::vector<Value> rest(pos.begin() + 1, pos.end());
        for (const auto& item : items) {
          SY_ASSIGN_OR_RETURN(Value got, Filter(ToStr(pos[0]), item, rest, kw, line));
          mapped.push_back(std::move(got));
        }
      }
      return ToList(mapped, line);
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      SY_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, line));
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool select = name == "selectattr" || name == "select";
      size_t next = 0;
      std::string attr;
      if (by_attr) {
        if (pos.empty()) return Error(line, absl::StrCat(name, " needs an attribute"));
        attr = ToStr(pos[next++]);
      }
      std::string test = next < pos.size() ? ToStr(pos[next++]) : "";
      std::vector<Value> test_args(
          pos.begin() + static_cast<std::ptrdiff_t>(std::min(next, pos.size())), pos.end());
      std::vector<Value> kept;
      for (const auto& item : items) {
        Value subject = by_attr ? GetItem(item, Value::Of(Json(attr))) : item;
        bool pass;
        if (test.empty()) {
          pass = Truthy(subject);
        } else {
          SY_ASSIGN_OR_RETURN(pass, Test(test, subject, test_args, line));
        }
        if (pass == select) kept.push_back(item);
      }
      return ToList(kept, line);
    }
    if (name == "int" || name == "float") {
      const Value* d = Arg(pos, kw, 0, "default");
      Value fallback = d != nullptr ? *d : Value::Of(name == "int" ? Json(0) : Json(0.0));
      double x;
      if (v.is_number()) {
        x = v.as_double();
        if (name == "int" && v.is_int()) return Value::Of(Json(v.as_int()));
      } else if (v.is_string()) {
        std::string s = PyStrip(v.j().get<std::string>(), nullptr, true, true);
        char* end = nullptr;
        x = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return fallback;
      } else {
        return fallback;
      }
      if (name == "int") {
        if (!(std::fabs(x) < 9.2e18)) return fallback;  // NaN, inf or out of range
        return Value::Of(Json(static_cast<int64_t>(std::trunc(x))));
      }
      return Value::Of(Json(x));
    }
    if (name == "abs") {
      if (!v.is_number()) return Error(line, "abs needs a number");
      if (v.is_int() && v.as_int() == INT64_MIN) return Error(line, "integer overflow in abs");
      return v.is_int() ? Value::Of(Json(std::llabs(v.as_int())))
                        : Value::Of(Json(std::fabs(v.as_double())));
    }
    if (name == "dictsort") {
      if (!v.data() || !v.j().is_object()) return Error(line, "dictsort needs a mapping");
      std::vector<std::pair<std::string, Json>> kv;
      for (const auto& [k, x] : v.j().items()) kv.emplace_back(k, x);
      std::sort(kv.begin(), kv.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      Json list = Json::array();
      for (auto& [k, x] : kv) list.push_back(Json::array({k, x}));
      return Value::Of(std::move(list));
    }
    // String filters.
    std::string s = ToStr(v);
    if (name == "trim") return Value::Of(Json(PyStrip(s, Arg(pos, kw, 0, "chars"), true, true)));
    if (name == "upper" || name == "lower") return Value::Of(Json(ChangeCase(s, name == "upper")));
    if (name == "title") return Value::Of(Json(PyTitle(s)));
    if (name == "capitalize") return Method(Value::Of(Json(s)), "capitalize", {}, {}, line);
    if (name == "replace") {
      if (pos.size() < 2) return Error(line, "replace needs two arguments");
      int64_t count = pos.size() > 2 && pos[2].is_int() ? pos[2].as_int() : -1;
      return Value::Of(Json(PyReplace(s, ToStr(pos[0]), ToStr(pos[1]), count)));
    }
    if (name == "indent") {
      const Value* width = Arg(pos, kw, 0, "width");
      const Value* first = Arg(pos, kw, 1, "first");
      const Value* blank = Arg(pos, kw, 2, "blank");
      std::string pad = width == nullptr ? "    "
                        : width->is_string()
                            ? width->j().get<std::string>()
                            : std::string(static_cast<size_t>(std::clamp<int64_t>(
                                              width->is_int() ? width->as_int() : 4, 0, 1000)),
                                          ' ');
      s += "\n";  // as jinja2, so splitlines() keeps a trailing empty line
      std::vector<std::string> lines;
      for (size_t p = 0, nl; (nl = s.find('\n', p)) != std::string::npos; p = nl + 1)
        lines.push_back(s.substr(p, nl - p));
      std::string out = lines.empty() ? "" : lines[0];
      for (size_t i = 1; i < lines.size(); ++i) {
        out += "\n";
        if (!lines[i].empty() || (blank != nullptr && Truthy(*blank))) out += pad;
        out += lines[i];
      }
      if (first != nullptr && Truthy(*first)) out = pad + out;
      return Value::Of(Json(out));
    }
    return Error(line, absl::StrCat("unknown filter '", name, "'"));
  }

  absl::StatusOr<Value> ToList(const std::vector<Value>& items, int line) {
    Json list = Json::array();
    for (const auto& item : items) {
      if (item.undefined()) {
        list.push_back(nullptr);
        continue;
      }
      if (!item.data()) return Error(line, "only data values can be stored in a list");
      list.push_back(item.j());
    }
    return Value::Of(std::move(list));
  }

  std::vector<Scope> scopes_;
  int macro_depth_ = 0;  // nested CallMacro calls
  size_t floor_ = 0;     // lowest scope visible besides the globals (inside a macro)
};

}  // namespace

ChatTemplate::ChatTemplate(std::unique_ptr<Program> program) : program_(std::move(program)) {}
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(absl::string_view source) {
  SY_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lexer(source).Run());
  auto program = std::make_unique<Program>();
  SY_ASSIGN_OR_RETURN(program->nodes, Parser(std::move(tokens)).ParseTemplate());
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(program)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  // tojson and repr recurse over the context: bound its nesting first.
  std::vector<std::pair<const nlohmann::ordered_json*, int>> stack = {{&context, 1}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxContextDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("template variables nest deeper than ", kMaxContextDepth, " levels"));
    }
    if (node->is_structured()) {
      for (const auto& child : *node) stack.emplace_back(&child, depth + 1);
    }
  }
  Renderer renderer(context);
  std::string out;
  Flow flow = Flow::kNormal;
  SY_RETURN_IF_ERROR(renderer.Render(program_->nodes, &out, &flow));
  return out;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return Render(nlohmann::ordered_json::parse(context.dump()));
}

absl::StatusOr<std::string> ChatTemplateFromConfig(const nlohmann::json& config,
                                                   const std::string& name) {
  auto it = config.find("chat_template");
  if (!config.is_object() || it == config.end() || it->is_null()) {
    return absl::NotFoundError("tokenizer config has no chat_template");
  }
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array())
    return absl::InvalidArgumentError("chat_template must be a string or a list of templates");
  std::vector<std::string> names;
  for (const auto& entry : *it) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template")) {
      return absl::InvalidArgumentError("chat_template list entries need 'name' and 'template'");
    }
    if (entry["name"] == name && entry["template"].is_string())
      return entry["template"].get<std::string>();
    names.push_back(entry["name"].dump());
  }
  return absl::NotFoundError(absl::StrCat("chat_template has no template named '", name, "' (have ",
                                          absl::StrJoin(names, ", "), ")"));
}

}  // namespace switchyard::text
