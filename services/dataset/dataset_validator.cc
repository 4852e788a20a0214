#include "services/dataset/dataset_validator.h"

#include <errno.h>
#include <fcntl.h>
#include <simdjson.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_stats.h"

namespace switchyard::dataset {

namespace dom = simdjson::dom;

// Format decided by the first well-formed line, shared by train and validation.
struct FormatState {
  DatasetFormat format = DatasetFormat::kAuto;
  bool named = false;  // given by the caller rather than detected
  std::string file;
  int64_t line = 0;
};

namespace {

constexpr size_t kPadding = simdjson::SIMDJSON_PADDING;

// Offset of the first byte that breaks UTF-8, or -1.
int64_t FirstInvalidUtf8(const char* p, size_t n) {
  const auto* s = reinterpret_cast<const unsigned char*>(p);
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF (RFC 3629).
    const unsigned c1 = len > 1 ? s[i + 1] : 0;
    if ((len == 2 && c < 0xC2) || (len == 3 && c == 0xE0 && c1 < 0xA0) ||
        (len == 3 && c == 0xED && c1 > 0x9F) || (len == 4 && c == 0xF0 && c1 < 0x90) ||
        (len == 4 && c == 0xF4 && c1 > 0x8F) || (len == 4 && c > 0xF4)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

bool IsBlank(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') return false;
  }
  return true;
}

bool ParseRole(std::string_view role, Role* out) {
  if (role == "system")
    *out = Role::kSystem;
  else if (role == "user")
    *out = Role::kUser;
  else if (role == "assistant")
    *out = Role::kAssistant;
  else if (role == "tool")
    *out = Role::kTool;
  else
    return false;
  return true;
}

const char* TypeName(dom::element_type t) {
  switch (t) {
    case dom::element_type::ARRAY:
      return "an array";
    case dom::element_type::OBJECT:
      return "an object";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE:
      return "a number";
    case dom::element_type::STRING:
      return "a string";
    case dom::element_type::BOOL:
      return "a boolean";
    case dom::element_type::NULL_VALUE:
      return "null";
  }
  return "a value";
}

// Debian's Abseil has its own string_view type; simdjson hands out std's.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A value from the user's file quoted in a message: at most 40 bytes (cut on a
// UTF-8 boundary), so a hostile line cannot blow up the report.
std::string Echo(std::string_view value) {
  constexpr size_t kMax = 40;
  if (value.size() <= kMax) return std::string(value);
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(AV(value.substr(0, cut)), "...");
}

std::string Field(absl::string_view prefix, int index, absl::string_view key) {
  std::string out(prefix);
  if (index >= 0) absl::StrAppend(&out, "[", index, "]");
  if (!key.empty()) absl::StrAppend(&out, out.empty() ? "" : ".", key);
  return out;
}

}  // namespace

// Validates one JSONL file; see DatasetValidator.
class FileValidator {
 public:
  FileValidator(const ValidatorOptions& options, std::string label, IssueCollector* issues,
                FormatState* format)
      : options_(options), label_(std::move(label)), issues_(issues), format_(format) {}

  void Feed(absl::string_view chunk);
  void Finish();

  int64_t examples() const { return examples_; }
  bool is_train() const { return label_ == "train"; }
  int64_t bytes() const { return bytes_; }
  DatasetStats stats() const { return stats_.Build(); }
  const absl::flat_hash_map<uint64_t, int64_t>& normalized_index() const { return normalized_; }

 private:
  // Message roles a messages array must satisfy.
  struct MessageRules {
    bool assistant_last = false;  // chat: must end with an assistant turn
    bool assistant_only = false;  // preference outputs
    bool allow_weight = false;    // chat only
  };

  void ProcessLine(const char* p, size_t n);  // p has kPadding readable bytes past n
  bool CheckLine(dom::object obj, ExampleFacts* facts);
  bool CheckChat(dom::object obj, ExampleFacts* facts);
  bool CheckCompletion(dom::object obj, ExampleFacts* facts);
  bool CheckPreference(dom::object obj, ExampleFacts* facts);
  bool CheckTrlPreference(dom::object obj, ExampleFacts* facts);
  bool CheckMessages(dom::element value, const std::string& path, const MessageRules& rules,
                     ExampleFacts* facts);
  bool CheckText(dom::element value, const std::string& path, ExampleFacts* facts,
                 absl::string_view* text_out);
  bool CheckKeys(dom::object obj, const std::string& path,
                 std::initializer_list<std::string_view> allowed);
  void AddText(absl::string_view text, char role_tag, ExampleFacts* facts);
  DatasetFormat Detect(dom::object obj) const;

  void Issue(Severity severity, std::string kind, int64_t line, std::string field,
             std::string message) {
    issues_->Add(ValidationIssue{severity, std::move(kind), line, std::move(field),
                                 std::move(message), label_});
  }
  void Error(std::string kind, std::string field, std::string message) {
    Issue(Severity::kError, std::move(kind), line_no_, std::move(field), std::move(message));
  }
  // Reported once the whole line went by, so the message (with its length)
  // is the same however the bytes were chunked.
  void LineTooLong(size_t bytes) {
    Error("line_too_long", "",
          absl::StrCat("line is ", bytes, " bytes, over the limit of ", options_.max_line_bytes,
                       " bytes (--max-line-bytes)"));
  }

  const ValidatorOptions& options_;
  std::string label_;
  IssueCollector* issues_;
  FormatState* format_;

  dom::parser parser_;
  std::vector<char> pending_;   // partial line carried between chunks
  bool discarding_ = false;     // inside an over-long line
  size_t discarded_bytes_ = 0;  // of that line so far
  int64_t line_no_ = 0;
  int64_t examples_ = 0;
  int64_t bytes_ = 0;
  std::string normalized_text_;     // scratch for the normalized hash
  std::vector<ExampleText> texts_;  // the example's texts, when counting tokens
  size_t normalized_size_ = 0;      // bytes of normalized_text_ in use

  DatasetStatsAccumulator stats_;
  absl::flat_hash_map<uint64_t, int64_t> exact_;       // line hash -> first line
  absl::flat_hash_map<uint64_t, int64_t> normalized_;  // normalized hash -> first line
};

void FileValidator::Feed(absl::string_view chunk) {
  bytes_ += static_cast<int64_t>(chunk.size());
  const char* data = chunk.data();
  size_t size = chunk.size(), pos = 0;
  const size_t max_line = static_cast<size_t>(options_.max_line_bytes);
  while (pos < size) {
    const char* nl = static_cast<const char*>(std::memchr(data + pos, '\n', size - pos));
    size_t end = nl ? static_cast<size_t>(nl - data) : size;
    if (discarding_) {
      discarded_bytes_ += end - pos;
      if (nl) {
        discarding_ = false;
        LineTooLong(discarded_bytes_);
      }
      pos = end + 1;
      continue;
    }
    if (pending_.empty() && nl && size - end >= kPadding) {
      // Whole line inside the chunk with padding behind it: parse in place.
      ++line_no_;
      if (end - pos > max_line) {
        LineTooLong(end - pos);
      } else {
        ProcessLine(data + pos, end - pos);
      }
      pos = end + 1;
      continue;
    }
    pending_.insert(pending_.end(), data + pos, data + end);
    if (pending_.size() > max_line) {
      ++line_no_;
      discarded_bytes_ = pending_.size();
      pending_.clear();
      pending_.shrink_to_fit();
      if (nl)
        LineTooLong(discarded_bytes_);
      else
        discarding_ = true;
      pos = end + 1;
      continue;
    }
    if (nl) {
      ++line_no_;
      size_t n = pending_.size();
      pending_.resize(n + kPadding);
      ProcessLine(pending_.data(), n);
      pending_.clear();
    }
    pos = end + 1;
  }
}

void FileValidator::ProcessLine(const char* p, size_t n) {
  if (n > 0 && p[n - 1] == '\r') --n;
  if (IsBlank(p, n)) {
    Issue(Severity::kWarning, "blank_line", line_no_, "", "blank line is skipped");
    return;
  }
  ++examples_;
  dom::element doc;
  auto error = parser_.parse(p, n, false).get(doc);
  if (error == simdjson::UTF8_ERROR) {
    int64_t at = FirstInvalidUtf8(p, n);
    Error(
        "invalid_utf8", "",
        absl::StrCat("line is not valid UTF-8", at >= 0 ? absl::StrCat(" (byte ", at + 1, ")") : "",
                     "; save the file as UTF-8"));
    return;
  }
  if (error) {
    Error("invalid_json", "", absl::StrCat("invalid JSON: ", simdjson::error_message(error)));
    return;
  }
  dom::object obj;
  if (doc.get_object().get(obj)) {
    Error("invalid_type", "",
          absl::StrCat("each line must be a JSON object, found ", TypeName(doc.type())));
    return;
  }
  ExampleFacts facts;
  normalized_size_ = 0;
  texts_.clear();
  if (!CheckLine(obj, &facts)) return;

  uint64_t exact_hash = absl::Hash<absl::string_view>{}(absl::string_view(p, n));
  uint64_t norm_hash =
      absl::Hash<absl::string_view>{}(absl::string_view(normalized_text_.data(), normalized_size_));
  auto [exact_it, exact_new] = exact_.try_emplace(exact_hash, line_no_);
  auto [norm_it, norm_new] = normalized_.try_emplace(norm_hash, line_no_);
  if (!exact_new) {
    stats_.AddDuplicate(true);
    Issue(Severity::kWarning, "duplicate_example", line_no_, "",
          absl::StrCat("same as line ", exact_it->second, "; duplicates over-weight an example"));
  } else if (!norm_new) {
    stats_.AddDuplicate(false);
    Issue(Severity::kWarning, "near_duplicate", line_no_, "",
          absl::StrCat("same as line ", norm_it->second, " apart from case and whitespace"));
  }
  if (facts.characters > options_.long_example_chars) {
    Issue(Severity::kWarning, "long_example", line_no_, "",
          absl::StrCat("example has ", facts.characters, " characters (over ",
                       options_.long_example_chars,
                       "); it may exceed the model's context and be truncated"));
  }
  if (options_.token_counter != nullptr) {
    absl::StatusOr<int64_t> tokens = options_.token_counter->Count(texts_);
    if (!tokens.ok()) {
      Error("tokenizer_error", "", absl::StrCat("cannot tokenize: ", tokens.status().message()));
      return;
    }
    facts.tokens = *tokens;
    if (options_.max_seq_len > 0 && *tokens > options_.max_seq_len) {
      Error("too_many_tokens", "",
            absl::StrCat("example has ", *tokens, " tokens, over --max-seq-len=",
                         options_.max_seq_len, "; training would truncate it"));
      return;
    }
  }
  stats_.AddExample(facts);
}

DatasetFormat FileValidator::Detect(dom::object obj) const {
  bool prompt = false, completion = false;
  for (dom::key_value_pair kv : obj) {
    std::string_view k = kv.key;
    if (k == "messages") return DatasetFormat::kChat;
    if (k == "input" || k == "preferred_output" || k == "non_preferred_output" || k == "chosen" ||
        k == "rejected") {
      return DatasetFormat::kPreference;
    }
    prompt |= k == "prompt";
    completion |= k == "completion";
  }
  return prompt || completion ? DatasetFormat::kCompletion : DatasetFormat::kAuto;
}

bool FileValidator::CheckLine(dom::object obj, ExampleFacts* facts) {
  DatasetFormat detected = Detect(obj);
  if (detected == DatasetFormat::kAuto) {
    Error("unknown_format", "",
          "no keys of a known format: expected \"messages\" (chat), \"prompt\"+\"completion\", "
          "\"input\"+\"preferred_output\"+\"non_preferred_output\" or "
          "\"prompt\"+\"chosen\"+\"rejected\" (preference)");
    return false;
  }
  if (format_->format == DatasetFormat::kAuto) {
    format_->format = detected;
    format_->file = label_;
    format_->line = line_no_;
  } else if (detected != format_->format) {
    if (format_->named) {
      Error("wrong_format", "",
            absl::StrCat("line is ", FormatName(detected), " data but the dataset's format is ",
                         FormatName(format_->format)));
    } else {
      Error("mixed_formats", "",
            absl::StrCat("line is ", FormatName(detected), " data but the file is ",
                         FormatName(format_->format), " (decided by ",
                         format_->file.empty() ? "" : absl::StrCat(format_->file, " "), "line ",
                         format_->line, "); one file holds one format"));
    }
    return false;
  }
  switch (detected) {
    case DatasetFormat::kChat:
      return CheckChat(obj, facts);
    case DatasetFormat::kCompletion:
      return CheckCompletion(obj, facts);
    case DatasetFormat::kPreference: {
      dom::element ignored;
      bool trl = !obj["chosen"].get(ignored) || !obj["rejected"].get(ignored);
      return trl ? CheckTrlPreference(obj, facts) : CheckPreference(obj, facts);
    }
    case DatasetFormat::kAuto:
      break;
  }
  return false;
}

bool FileValidator::CheckKeys(dom::object obj, const std::string& path,
                              std::initializer_list<std::string_view> allowed) {
  bool ok = true;
  for (dom::key_value_pair kv : obj) {
    if (std::find(allowed.begin(), allowed.end(), kv.key) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) absl::StrAppend(&list, list.empty() ? "" : ", ", AV(a));
    Error("unknown_key", Field(path, -1, Echo(kv.key)),
          absl::StrCat("unknown key \"", Echo(kv.key), "\"; allowed: ", list));
    ok = false;
  }
  return ok;
}

void FileValidator::AddText(absl::string_view text, char role_tag, ExampleFacts* facts) {
  // normalized_text_ only grows; normalized_size_ is the part in use, so no
  // per-message zero-filling.
  const size_t need = normalized_size_ + 1 + text.size() + kNormalizeSlack;
  if (normalized_text_.size() < need) {
    normalized_text_.resize(std::max(need, 2 * normalized_text_.size()));
  }
  normalized_text_[normalized_size_++] = role_tag;
  size_t written = 0;
  TextScan scan = ScanAndNormalize(text, normalized_text_.data() + normalized_size_, &written);
  normalized_size_ += written;
  facts->characters += scan.characters;
  facts->words += scan.words;
  if (options_.token_counter != nullptr) {
    static constexpr const char* kRoles[] = {"system", "user", "assistant", "tool"};
    const int role = role_tag - '0';
    texts_.push_back(ExampleText{role >= 0 && role < 4 ? kRoles[role] : "", text});
  }
}

bool FileValidator::CheckText(dom::element value, const std::string& path, ExampleFacts* facts,
                              absl::string_view* text_out) {
  std::string_view text;
  if (value.get_string().get(text)) {
    Error("invalid_type", path, absl::StrCat("must be a string, found ", TypeName(value.type())));
    return false;
  }
  if (IsBlank(text.data(), text.size())) {
    Error("empty_content", path, "is empty; every example needs text here");
    return false;
  }
  AddText(AV(text), '\x1e', facts);
  if (text_out) *text_out = AV(text);
  return true;
}

bool FileValidator::CheckMessages(dom::element value, const std::string& path,
                                  const MessageRules& rules, ExampleFacts* facts) {
  dom::array messages;
  if (value.get_array().get(messages)) {
    Error("invalid_type", path,
          absl::StrCat("must be an array of messages, found ", TypeName(value.type())));
    return false;
  }
  if (messages.size() == 0) {
    Error("empty_messages", path, "has no messages");
    return false;
  }
  bool ok = true;
  int index = 0;
  Role last_role = Role::kCount;
  std::string_view last_content;
  bool has_assistant = false;
  for (dom::element m : messages) {
    const int i = index++;
    dom::object msg;
    if (m.get_object().get(msg)) {
      Error("invalid_type", Field(path, i, ""),
            absl::StrCat("each message must be an object, found ", TypeName(m.type())));
      ok = false;
      continue;
    }
    // One pass over the message's keys (this runs for every message of a
    // dataset): pick out the known ones, report the rest.
    dom::element role_el, content_el, weight_el;
    bool has_role = false, has_content = false, has_weight = false, has_tool_calls = false;
    for (dom::key_value_pair kv : msg) {
      const std::string_view k = kv.key;
      if (k == "role") {
        role_el = kv.value;
        has_role = true;
      } else if (k == "content") {
        content_el = kv.value;
        has_content = true;
      } else if (k == "weight") {
        weight_el = kv.value;
        has_weight = true;
      } else if (k == "tool_calls" || k == "function_call") {
        has_tool_calls = true;
      } else if (k != "name" && k != "tool_call_id" && k != "refusal") {
        Error("unknown_key", Field(path, i, Echo(k)),
              absl::StrCat("unknown key \"", Echo(k),
                           "\"; allowed: role, content, name, weight, tool_calls, tool_call_id, "
                           "function_call, refusal"));
        ok = false;
      }
    }
    std::string_view role_name;
    Role role = Role::kCount;
    if (!has_role) {
      Error("missing_key", Field(path, i, "role"), "message has no \"role\"");
      ok = false;
      continue;
    }
    if (role_el.get_string().get(role_name)) {
      Error("invalid_type", Field(path, i, "role"),
            absl::StrCat("must be a string, found ", TypeName(role_el.type())));
      ok = false;
      continue;
    }
    if (!ParseRole(role_name, &role)) {
      Error("unknown_role", Field(path, i, "role"),
            absl::StrCat("unknown role \"", Echo(role_name),
                         "\"; expected system, user, assistant or tool"));
      ok = false;
      continue;
    }
    if (rules.assistant_only && role != Role::kAssistant) {
      Error("invalid_role", Field(path, i, "role"),
            absl::StrCat("must be \"assistant\", found \"", Echo(role_name), "\""));
      ok = false;
    }
    if (has_tool_calls && role != Role::kAssistant) {
      Error("invalid_key", Field(path, i, "tool_calls"), "only assistant messages make tool calls");
      ok = false;
    }
    const char tag = static_cast<char>('0' + static_cast<int>(role));
    std::string_view content;
    if (!has_content) {
      if (!has_tool_calls) {
        Error("missing_key", Field(path, i, "content"), "message has no \"content\"");
        ok = false;
      }
    } else if (content_el.is_null()) {
      if (!has_tool_calls) {
        Error("empty_content", Field(path, i, "content"),
              "is null; only an assistant message with tool_calls may omit content");
        ok = false;
      }
    } else if (content_el.is_array()) {
      // Content parts: [{"type":"text","text":"..."}, ...]
      bool any = false;
      int part_index = 0;
      // A named array: ranging over the temporary simdjson_result would
      // iterate a destroyed object.
      dom::array parts = content_el.get_array().value_unsafe();
      for (dom::element part : parts) {
        std::string part_path = Field(Field(path, i, "content"), part_index++, "");
        std::string_view type, text;
        dom::object part_obj;
        if (part.get_object().get(part_obj) || part_obj["type"].get_string().get(type)) {
          Error("invalid_type", part_path, "content part must be an object with a \"type\"");
          ok = false;
          continue;
        }
        if (type == "text") {
          if (part_obj["text"].get_string().get(text)) {
            Error("missing_key", Field(part_path, -1, "text"), "text part has no string \"text\"");
            ok = false;
            continue;
          }
          if (!IsBlank(text.data(), text.size())) any = true;
          AddText(AV(text), tag, facts);
          content = text;
        } else if (type == "image_url") {
          any = true;
        } else {
          Error("invalid_value", Field(part_path, -1, "type"),
                absl::StrCat("unknown content part type \"", Echo(type),
                             "\"; expected text or image_url"));
          ok = false;
        }
      }
      if (!any && !has_tool_calls) {
        Error("empty_content", Field(path, i, "content"), "has no text");
        ok = false;
      }
    } else if (content_el.get_string().get(content)) {
      Error("invalid_type", Field(path, i, "content"),
            absl::StrCat("must be a string or an array of content parts, found ",
                         TypeName(content_el.type())));
      ok = false;
    } else if (IsBlank(content.data(), content.size()) && !has_tool_calls) {
      Error("empty_content", Field(path, i, "content"),
            absl::StrCat("is empty; remove the message or give the ", AV(role_name), " text"));
      ok = false;
    } else {
      AddText(AV(content), tag, facts);
    }
    if (has_weight) {
      int64_t w = -1;
      if (!rules.allow_weight || role != Role::kAssistant) {
        Error("invalid_weight", Field(path, i, "weight"),
              "\"weight\" is only allowed on assistant messages of chat data");
        ok = false;
      } else if (weight_el.get_int64().get(w) || (w != 0 && w != 1)) {
        Error("invalid_weight", Field(path, i, "weight"), "must be 0 or 1");
        ok = false;
      } else if (w == 1) {
        ++facts->trained_assistant_messages;
      }
    } else if (role == Role::kAssistant) {
      ++facts->trained_assistant_messages;
    }
    ++facts->roles[static_cast<int>(role)];
    ++facts->messages;
    has_assistant |= role == Role::kAssistant;
    last_role = role;
    last_content = content;
  }
  if (!ok) return false;
  if (rules.assistant_last) {
    if (!has_assistant) {
      Error("missing_assistant", path,
            "has no assistant message; the model learns from assistant turns");
      return false;
    }
    if (last_role != Role::kAssistant) {
      Error("last_not_assistant", Field(path, index - 1, "role"),
            "the last message must be from the assistant");
      return false;
    }
    if (facts->trained_assistant_messages == 0) {
      Issue(Severity::kWarning, "no_trained_message", line_no_, path,
            "every assistant message has weight 0, so this example trains nothing");
    }
    facts->has_label = true;
    facts->label = AV(last_content);
  }
  return true;
}

bool FileValidator::CheckChat(dom::object obj, ExampleFacts* facts) {
  bool ok =
      CheckKeys(obj, "", {"messages", "tools", "functions", "parallel_tool_calls", "metadata"});
  dom::element tools;
  if (!obj["tools"].get(tools) && !tools.is_array()) {
    Error("invalid_type", "tools", "must be an array of tool definitions");
    ok = false;
  }
  MessageRules rules;
  rules.assistant_last = true;
  rules.allow_weight = true;
  return CheckMessages(obj["messages"].value_unsafe(), "messages", rules, facts) && ok;
}

bool FileValidator::CheckCompletion(dom::object obj, ExampleFacts* facts) {
  bool ok = CheckKeys(obj, "", {"prompt", "completion", "metadata"});
  dom::element prompt, completion;
  if (obj["prompt"].get(prompt)) {
    Error("missing_key", "prompt", "completion data needs \"prompt\"");
    return false;
  }
  if (obj["completion"].get(completion)) {
    Error("missing_key", "completion", "completion data needs \"completion\"");
    return false;
  }
  absl::string_view answer;
  ok &= CheckText(prompt, "prompt", facts, nullptr);
  ok &= CheckText(completion, "completion", facts, &answer);
  if (!ok) return false;
  facts->messages = 2;
  ++facts->roles[static_cast<int>(Role::kUser)];
  ++facts->roles[static_cast<int>(Role::kAssistant)];
  facts->trained_assistant_messages = 1;
  facts->has_label = true;
  facts->label = answer;
  return true;
}

bool FileValidator::CheckPreference(dom::object obj, ExampleFacts* facts) {
  bool ok = CheckKeys(obj, "", {"input", "preferred_output", "non_preferred_output", "metadata"});
  dom::element input, preferred, rejected, messages;
  if (obj["input"].get(input)) {
    Error("missing_key", "input", "preference data needs \"input\" with the prompt messages");
    return false;
  }
  if (obj["preferred_output"].get(preferred)) {
    Error("missing_key", "preferred_output", "preference data needs \"preferred_output\"");
    return false;
  }
  if (obj["non_preferred_output"].get(rejected)) {
    Error("missing_key", "non_preferred_output", "preference data needs \"non_preferred_output\"");
    return false;
  }
  dom::object input_obj;
  if (input.get_object().get(input_obj)) {
    Error("invalid_type", "input",
          absl::StrCat("must be an object with \"messages\", found ", TypeName(input.type())));
    return false;
  }
  ok &= CheckKeys(input_obj, "input", {"messages", "tools", "parallel_tool_calls"});
  if (input_obj["messages"].get(messages)) {
    Error("missing_key", "input.messages", "input has no \"messages\"");
    return false;
  }
  MessageRules prompt_rules, output_rules;
  output_rules.assistant_only = true;
  ok &= CheckMessages(messages, "input.messages", prompt_rules, facts);
  ok &= CheckMessages(preferred, "preferred_output", output_rules, facts);
  ok &= CheckMessages(rejected, "non_preferred_output", output_rules, facts);
  if (!ok) return false;
  if (simdjson::to_string(preferred) == simdjson::to_string(rejected)) {
    Issue(Severity::kWarning, "identical_outputs", line_no_, "non_preferred_output",
          "preferred and non-preferred outputs are identical; the pair teaches nothing");
  }
  return true;
}

bool FileValidator::CheckTrlPreference(dom::object obj, ExampleFacts* facts) {
  bool ok = CheckKeys(obj, "", {"prompt", "chosen", "rejected", "metadata"});
  dom::element prompt, chosen, rejected;
  if (obj["chosen"].get(chosen)) {
    Error("missing_key", "chosen", "preference data needs \"chosen\"");
    return false;
  }
  if (obj["rejected"].get(rejected)) {
    Error("missing_key", "rejected", "preference data needs \"rejected\"");
    return false;
  }
  auto check_part = [&](dom::element el, const std::string& path, bool is_output) {
    if (el.is_array()) {
      MessageRules rules;
      rules.assistant_last = is_output;
      return CheckMessages(el, path, rules, facts);
    }
    if (!CheckText(el, path, facts, nullptr)) return false;
    ++facts->messages;
    ++facts->roles[static_cast<int>(is_output ? Role::kAssistant : Role::kUser)];
    return true;
  };
  if (!obj["prompt"].get(prompt)) ok &= check_part(prompt, "prompt", false);
  ok &= check_part(chosen, "chosen", true);
  ok &= check_part(rejected, "rejected", true);
  if (!ok) return false;
  facts->has_label = false;
  if (simdjson::to_string(chosen) == simdjson::to_string(rejected)) {
    Issue(Severity::kWarning, "identical_outputs", line_no_, "rejected",
          "chosen and rejected are identical; the pair teaches nothing");
  }
  return true;
}

void FileValidator::Finish() {
  if (discarding_) {
    discarding_ = false;
    LineTooLong(discarded_bytes_);  // the last line, without a newline
  } else if (!pending_.empty()) {
    ++line_no_;
    size_t n = pending_.size();
    pending_.resize(n + kPadding);
    ProcessLine(pending_.data(), n);
  }
  pending_.clear();
  stats_.set_bytes(bytes_);
  const int64_t n = stats_.examples();
  if (examples_ == 0) {
    Issue(Severity::kError, "empty_file", 0, "", "file has no examples");
  } else if (!is_train()) {
    // Example-count rules are for training data; a validation file may be small.
  } else if (examples_ < options_.min_examples) {
    Issue(Severity::kError, "too_few_examples", 0, "",
          absl::StrCat("file has ", examples_, " examples; at least ", options_.min_examples,
                       " are required"));
  } else if (examples_ < options_.recommended_examples) {
    Issue(Severity::kWarning, "few_examples", 0, "",
          absl::StrCat("file has ", examples_, " examples; ", options_.recommended_examples,
                       " or more usually give clearer improvements"));
  }
  DatasetStats s = stats_.Build();
  if (format_->format == DatasetFormat::kChat && s.examples_without_system_message > 0) {
    Issue(Severity::kWarning, "no_system_message", 0, "messages",
          absl::StrCat(s.examples_without_system_message, " of ", n,
                       " examples have no system message; use the system prompt you will "
                       "serve with"));
  }
  if (s.looks_like_classification && s.labels.size() >= 2) {
    const auto& most = s.labels.front();
    const auto& least = s.labels.back();
    if (most.second >= 10 * least.second) {
      Issue(Severity::kWarning, "imbalanced_labels", 0, "",
            absl::StrCat("labels are imbalanced: \"", most.first, "\" has ", most.second,
                         " examples, \"", least.first, "\" only ", least.second));
    }
  }
}

DatasetValidator::DatasetValidator(ValidatorOptions options)
    : options_(options),
      issues_(options.max_listed_issues),
      format_state_(std::make_unique<FormatState>()) {
  format_state_->format = options_.format;
  format_state_->named = options_.format != DatasetFormat::kAuto;
}

DatasetValidator::~DatasetValidator() = default;

FileValidator* DatasetValidator::ForSplit(Split split) {
  std::unique_ptr<FileValidator>& v = split == Split::kTrain ? train_ : validation_;
  if (!v) {
    v = std::make_unique<FileValidator>(options_, split == Split::kTrain ? "train" : "validation",
                                        &issues_, format_state_.get());
  }
  return v.get();
}

void DatasetValidator::Feed(Split split, absl::string_view chunk) { ForSplit(split)->Feed(chunk); }

ValidationReport DatasetValidator::Finish() {
  ForSplit(Split::kTrain)->Finish();
  if (validation_) {
    validation_->Finish();
    std::vector<std::pair<int64_t, int64_t>> overlaps;  // (validation line, train line)
    const auto& train_index = train_->normalized_index();
    for (const auto& [hash, line] : validation_->normalized_index()) {
      auto it = train_index.find(hash);
      if (it != train_index.end()) overlaps.emplace_back(line, it->second);
    }
    std::sort(overlaps.begin(), overlaps.end());
    for (const auto& [vline, tline] : overlaps) {
      issues_.Add(ValidationIssue{Severity::kWarning, "train_validation_overlap", vline, "",
                                  absl::StrCat("same example as train line ", tline,
                                               "; overlap makes validation loss look better "
                                               "than it is"),
                                  "validation"});
    }
  }
  ValidationReport r;
  r.format = format_state_->format;
  r.issues = issues_.listed();
  r.counts = issues_.counts();
  r.error_count = issues_.errors();
  r.warning_count = issues_.warnings();
  r.truncated = issues_.truncated();
  r.valid = r.error_count == 0 && (!options_.strict || r.warning_count == 0);
  r.train_stats = train_->stats();
  if (validation_) r.validation_stats = validation_->stats();
  return r;
}

absl::StatusOr<ValidationReport> DatasetValidator::ValidateFiles(
    const ValidatorOptions& options, const std::string& train_path,
    const std::string& validation_path) {
  DatasetValidator v(options);
  for (auto [path, split] : {std::make_pair(train_path, Split::kTrain),
                             std::make_pair(validation_path, Split::kValidation)}) {
    if (path.empty()) continue;
    // Regular files are mapped, not read: the validator parses lines in place,
    // so the bytes are never copied. Pipes and devices (/dev/stdin) are read.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("cannot stat ", path));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a JSONL file"));
    }
    if (!S_ISREG(st.st_mode)) {
      std::vector<char> buf(1 << 20);
      while (true) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          ::close(fd);
          return absl::InternalError(absl::StrCat("cannot read ", path));
        }
        if (n == 0) break;
        v.Feed(split, absl::string_view(buf.data(), static_cast<size_t>(n)));
      }
      ::close(fd);
      continue;
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) {
      ::close(fd);
      v.Feed(split, absl::string_view());
      continue;
    }
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) return absl::InternalError(absl::StrCat("cannot map ", path));
    ::madvise(map, size, MADV_SEQUENTIAL);
    constexpr size_t kSlice = 64 << 20;  // bounds the validator's view, not memory
    for (size_t off = 0; off < size; off += kSlice) {
      v.Feed(split,
             absl::string_view(static_cast<const char*>(map) + off, std::min(kSlice, size - off)));
    }
    ::munmap(map, size);
  }
  return v.Finish();
}

}  // namespace switchyard::dataset
