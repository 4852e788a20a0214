#include "services/training/sft_data.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"
#include "shared/text/assistant_mask.h"

namespace switchyard::training {
namespace {

using json = nlohmann::ordered_json;

absl::StatusOr<SftExample> TokenizeChat(const json& line, const text::ModelText& text,
                                        LossOn loss_on) {
  if (text.chat_template == nullptr) {
    return absl::FailedPreconditionError(
        "the base model has no chat_template in tokenizer_config.json, so chat examples cannot be "
        "rendered; use a prompt/completion dataset or a model with a chat template");
  }
  json context = text.template_variables;
  for (auto it = line.begin(); it != line.end(); ++it) context[it.key()] = it.value();
  SY_ASSIGN_OR_RETURN(text::MaskedConversation conv,
                      text::RenderForTraining(*text.chat_template, *text.tokenizer, context));
  SftExample ex;
  ex.ids = std::move(conv.ids);
  ex.trained = loss_on == LossOn::kAll ? std::vector<uint8_t>(ex.ids.size(), 1)
                                       : std::move(conv.assistant_mask);
  return ex;
}

absl::StatusOr<SftExample> TokenizeCompletion(const json& line, const text::ModelText& text,
                                              LossOn loss_on) {
  const json& prompt = line["prompt"];
  const json& completion = line["completion"];
  if (!prompt.is_string()) return absl::InvalidArgumentError("prompt: must be a string");
  if (!completion.is_string()) return absl::InvalidArgumentError("completion: must be a string");
  SftExample ex;
  // The post-processor's tokens (BOS) come with the prompt.
  SY_ASSIGN_OR_RETURN(ex.ids, text.tokenizer->Encode(prompt.get<std::string>(), true));
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> answer,
                      text.tokenizer->Encode(completion.get<std::string>(), false));
  auto eos = text.template_variables.find("eos_token");
  if (eos != text.template_variables.end() && eos->is_string()) {
    if (std::optional<int32_t> id = text.tokenizer->TokenToId(eos->get<std::string>())) {
      answer.push_back(*id);
    }
  }
  ex.trained.assign(ex.ids.size(), loss_on == LossOn::kAll ? 1 : 0);
  ex.ids.insert(ex.ids.end(), answer.begin(), answer.end());
  ex.trained.resize(ex.ids.size(), 1);
  return ex;
}

}  // namespace

absl::StatusOr<SftExample> TokenizeSftExample(const json& line, const text::ModelText& text,
                                              LossOn loss_on) {
  if (!line.is_object()) return absl::InvalidArgumentError("line is not a JSON object");
  if (text.tokenizer == nullptr) return absl::FailedPreconditionError("no tokenizer loaded");
  if (line.contains("messages")) return TokenizeChat(line, text, loss_on);
  if (line.contains("prompt") && line.contains("completion")) {
    return TokenizeCompletion(line, text, loss_on);
  }
  return absl::InvalidArgumentError(
      "supervised training needs \"messages\" (chat) or \"prompt\" and \"completion\"");
}

absl::Status TokenizeJsonlFile(const std::string& path, const SftTokenizeOptions& options,
                               const LineTokenizer& tokenize,
                               const std::function<void(int64_t, std::vector<SftExample>)>& keep,
                               TokenizeReport* report) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  auto add_error = [&](int64_t line, std::string kind, std::string message) {
    ++report->error_count;
    if (static_cast<int>(report->errors.size()) >= options.max_listed_errors) return;
    Issue issue;
    issue.kind = std::move(kind);
    issue.line = line;
    issue.message = std::move(message);
    issue.file = options.file;
    report->errors.push_back(std::move(issue));
  };
  int64_t skipped = 0, first_skipped = 0;
  std::string raw;
  for (int64_t line_no = 1; std::getline(in, raw); ++line_no) {
    if (raw.find_first_not_of(" \t\r") == std::string::npos) continue;
    json line = json::parse(raw, nullptr, false);
    if (line.is_discarded()) {
      add_error(line_no, "invalid_json", "line is not valid JSON");
      continue;
    }
    absl::StatusOr<std::vector<SftExample>> sequences = tokenize(line);
    if (absl::IsFailedPrecondition(sequences.status())) return sequences.status();
    if (!sequences.ok()) {
      add_error(line_no, "unrenderable_example", std::string(sequences.status().message()));
      continue;
    }
    bool too_long = false, all_trained = true;
    int64_t longest = 0;
    for (SftExample& ex : *sequences) {
      const int64_t n = static_cast<int64_t>(ex.ids.size());
      longest = std::max(longest, n);
      if (options.max_seq_length > 0 && n > options.max_seq_length && !too_long) {
        too_long = true;
        add_error(line_no, "example_too_long",
                  absl::StrCat("example has ", n, " tokens, more than max_seq_length ",
                               options.max_seq_length,
                               "; raise hyperparameters.max_seq_length or shorten the example"));
      }
      bool any = false;
      // The last token predicts nothing, so a trained mark there alone counts for nothing.
      for (int64_t t = 1; t < n && !any; ++t) any = ex.trained[t] != 0;
      all_trained &= any || !options.require_trained;
      ex.line = line_no;
    }
    if (too_long) continue;
    if (!all_trained) {
      if (skipped++ == 0) first_skipped = line_no;
      continue;
    }
    report->longest = std::max(report->longest, longest);
    keep(line_no, std::move(*sequences));
  }
  if (skipped > 0) {
    Issue w;
    w.severity = dataset::Severity::kWarning;
    w.kind = "no_trained_tokens";
    w.line = first_skipped;
    w.file = options.file;
    w.message = absl::StrCat(skipped, " example(s) have no token the loss covers (first: line ",
                             first_skipped, ") and are skipped");
    report->warnings.push_back(std::move(w));
  }
  return absl::OkStatus();
}

absl::StatusOr<SftData> TokenizeSftFile(const std::string& path, const text::ModelText& text,
                                        const SftTokenizeOptions& options) {
  SftData data;
  SY_RETURN_IF_ERROR(TokenizeJsonlFile(
      path, options,
      [&](const json& line) -> absl::StatusOr<std::vector<SftExample>> {
        SY_ASSIGN_OR_RETURN(SftExample ex, TokenizeSftExample(line, text, options.loss_on));
        return std::vector<SftExample>{std::move(ex)};
      },
      [&](int64_t, std::vector<SftExample> sequences) {
        data.examples.push_back(std::move(sequences[0]));
      },
      &data));
  return data;
}

}  // namespace switchyard::training
