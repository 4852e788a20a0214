#include "services/training/preference_data.h"

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {
namespace {

using json = nlohmann::ordered_json;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// A part as messages: a string becomes one message of `role`.
absl::StatusOr<json> AsMessages(const json& part, const std::string& field, const char* role) {
  if (part.is_string()) return json::array({{{"role", role}, {"content", part}}});
  if (!part.is_array()) return Invalid(field, "must be a string or a list of messages");
  for (size_t i = 0; i < part.size(); ++i) {
    if (!part[i].is_object()) {
      return Invalid(absl::StrCat(field, "[", i, "]"), "must be a message object");
    }
  }
  return part;
}

// The prompt's assistant messages are context, not trained.
json Untrained(json messages) {
  for (json& m : messages) {
    if (m.value("role", "") == "assistant") m["weight"] = 0;
  }
  return messages;
}

struct Parts {
  json prompt;  // messages, or a string when every part is text
  json chosen, rejected;
  json extra = json::object();  // tools and the like, for the template
  bool text = false;
};

absl::StatusOr<Parts> SplitOpenAi(const json& line) {
  Parts p;
  const json& input = line["input"];
  if (!input.is_object() || !input.contains("messages")) {
    return Invalid("input", "must be an object with \"messages\"");
  }
  SY_ASSIGN_OR_RETURN(p.prompt, AsMessages(input["messages"], "input.messages", "user"));
  for (auto it = input.begin(); it != input.end(); ++it) {
    if (it.key() != "messages") p.extra[it.key()] = it.value();
  }
  if (!line.contains("preferred_output")) return Invalid("preferred_output", "is required");
  if (!line.contains("non_preferred_output")) {
    return Invalid("non_preferred_output", "is required");
  }
  SY_ASSIGN_OR_RETURN(p.chosen,
                      AsMessages(line["preferred_output"], "preferred_output", "assistant"));
  SY_ASSIGN_OR_RETURN(
      p.rejected, AsMessages(line["non_preferred_output"], "non_preferred_output", "assistant"));
  return p;
}

absl::StatusOr<Parts> SplitTrl(const json& line) {
  Parts p;
  if (!line.contains("chosen")) return Invalid("chosen", "is required");
  if (!line.contains("rejected")) return Invalid("rejected", "is required");
  const json& chosen = line["chosen"];
  const json& rejected = line["rejected"];
  const bool has_prompt = line.contains("prompt");
  const json prompt = has_prompt ? line["prompt"] : json("");
  if (prompt.is_string() && chosen.is_string() && rejected.is_string()) {
    p.text = true;
    p.prompt = prompt;
    p.chosen = chosen;
    p.rejected = rejected;
    return p;
  }
  SY_ASSIGN_OR_RETURN(p.chosen, AsMessages(chosen, "chosen", "assistant"));
  SY_ASSIGN_OR_RETURN(p.rejected, AsMessages(rejected, "rejected", "assistant"));
  if (has_prompt) {
    SY_ASSIGN_OR_RETURN(p.prompt, AsMessages(prompt, "prompt", "user"));
    return p;
  }
  // Implicit prompt: the messages both conversations start with.
  size_t shared = 0;
  while (shared < p.chosen.size() && shared < p.rejected.size() &&
         p.chosen[shared] == p.rejected[shared]) {
    ++shared;
  }
  if (shared == p.chosen.size() || shared == p.rejected.size()) {
    return Invalid("rejected", "chosen and rejected must differ in their last messages");
  }
  p.prompt = json(p.chosen.begin(), p.chosen.begin() + static_cast<std::ptrdiff_t>(shared));
  p.chosen = json(p.chosen.begin() + static_cast<std::ptrdiff_t>(shared), p.chosen.end());
  p.rejected = json(p.rejected.begin() + static_cast<std::ptrdiff_t>(shared), p.rejected.end());
  return p;
}

absl::StatusOr<SftExample> Sequence(const Parts& p, const json& completion,
                                    const std::string& field, const text::ModelText& text) {
  json line = p.extra;
  if (p.text) {
    line["prompt"] = p.prompt;
    line["completion"] = completion;
  } else {
    json messages = Untrained(p.prompt);
    for (const json& m : completion) {
      if (m.value("role", "") != "assistant") {
        return Invalid(field, "the completion must be assistant messages");
      }
      messages.push_back(m);
    }
    line["messages"] = std::move(messages);
  }
  absl::StatusOr<SftExample> ex = TokenizeSftExample(line, text, LossOn::kAssistant);
  if (!ex.ok() && absl::IsInvalidArgument(ex.status())) {
    return Invalid(field, std::string(ex.status().message()));
  }
  return ex;
}

}  // namespace

absl::StatusOr<PreferenceExample> TokenizePreferenceExample(const json& line,
                                                            const text::ModelText& text) {
  if (!line.is_object()) return absl::InvalidArgumentError("line is not a JSON object");
  absl::StatusOr<Parts> parts = line.contains("input") ? SplitOpenAi(line) : SplitTrl(line);
  if (!parts.ok()) return parts.status();
  const bool openai = line.contains("input");
  PreferenceExample ex;
  SY_ASSIGN_OR_RETURN(
      ex.chosen, Sequence(*parts, parts->chosen, openai ? "preferred_output" : "chosen", text));
  SY_ASSIGN_OR_RETURN(ex.rejected, Sequence(*parts, parts->rejected,
                                            openai ? "non_preferred_output" : "rejected", text));
  return ex;
}

absl::StatusOr<PreferenceData> TokenizePreferenceFile(const std::string& path,
                                                      const text::ModelText& text,
                                                      const SftTokenizeOptions& options) {
  PreferenceData data;
  SY_RETURN_IF_ERROR(TokenizeJsonlFile(
      path, options,
      [&](const json& line) -> absl::StatusOr<std::vector<SftExample>> {
        SY_ASSIGN_OR_RETURN(PreferenceExample ex, TokenizePreferenceExample(line, text));
        return std::vector<SftExample>{std::move(ex.chosen), std::move(ex.rejected)};
      },
      [&](int64_t line_no, std::vector<SftExample> sequences) {
        PreferenceExample ex;
        ex.chosen = std::move(sequences[0]);
        ex.rejected = std::move(sequences[1]);
        ex.line = line_no;
        data.examples.push_back(std::move(ex));
      },
      &data));
  return data;
}

}  // namespace switchyard::training
