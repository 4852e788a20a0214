// `switchyard text ...`: a model's tokenizer from the command line, one JSON
// value per line on stdin and stdout, for scripts and parity checks.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/text/model_text.h"
#include "shared/text/tokenizer.h"

namespace switchyard::cli {
namespace {

const char* kTextUsage =
    "Usage: switchyard text <verb> --tokenizer PATH [flags] < INPUT\n\n"
    "  encode    Each input line is a JSON string; prints its token ids as a JSON array.\n"
    "  decode    Each input line is a JSON array of ids; prints the text as a JSON string.\n"
    "  chat      Each input line is a JSON object with `messages` (and optional `tools`);\n"
    "            prints the prompt the model's chat template renders, as a JSON string.\n\n"
    "PATH is a model directory, its tokenizer.json or its tokenizer_config.json.\n"
    "Run `switchyard text <verb> --help`.\n";

// Prints `text` as one JSON string line, or the error naming the input line.
// Invalid UTF-8 (a partial byte token) becomes U+FFFD rather than an exception.
bool PrintJsonString(const absl::StatusOr<std::string>& text, int64_t line_no) {
  if (!text.ok()) {
    std::cerr << "error: line " << line_no << ": " << text.status().message() << "\n";
    return false;
  }
  std::cout << nlohmann::json(*text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
  return true;
}

// Parses a text verb's flags; --tokenizer is required. -1 to go on, else the
// exit code.
int ParseTextFlags(FlagSet* flags, const std::vector<std::string>& args) {
  int rc = ParseOrExit(flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags->GetString("tokenizer").empty()) {
    std::cerr << "error: --tokenizer PATH is required\n";
    return kExitUsage;
  }
  return -1;
}

int Run(const std::vector<std::string>& args, bool encode) {
  FlagSet flags(encode ? "switchyard text encode --tokenizer PATH [--no-special] < FILE"
                       : "switchyard text decode --tokenizer PATH [--skip-special] < FILE",
                encode ? "Encodes each line (a JSON string) to a JSON array of token ids, as\n"
                         "Hugging Face tokenizers' encode does."
                       : "Decodes each line (a JSON array of ids) to a JSON string, as Hugging\n"
                         "Face tokenizers' decode does.");
  flags.AddString("tokenizer", "", "Model directory, tokenizer.json or tokenizer_config.json.");
  if (encode) {
    flags.AddBool("special", true, "Add the post-processor's special tokens (--no-special: not).");
  } else {
    flags.AddBool("skip-special", false, "Leave special tokens out of the text.");
  }
  int rc = ParseTextFlags(&flags, args);
  if (rc >= 0) return rc;
  text::ModelTextOptions options;
  options.chat_template = false;
  auto model = text::LoadModelText(flags.GetString("tokenizer"), options);
  if (!model.ok()) return ReportError(model.status());
  const text::Tokenizer* tokenizer = model->tokenizer.get();
  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    nlohmann::json input = nlohmann::json::parse(line, nullptr, false);
    if (encode) {
      if (!input.is_string()) {
        std::cerr << "error: line " << line_no << ": expected a JSON string\n";
        return kExitInvalidData;
      }
      auto ids = tokenizer->Encode(input.get<std::string>(), flags.GetBool("special"));
      if (!ids.ok()) {
        std::cerr << "error: line " << line_no << ": " << ids.status().message() << "\n";
        return kExitInvalidData;
      }
      std::cout << nlohmann::json(*ids).dump() << "\n";
    } else {
      if (!input.is_array()) {
        std::cerr << "error: line " << line_no << ": expected a JSON array of token ids\n";
        return kExitInvalidData;
      }
      std::vector<int32_t> ids;
      for (const auto& id : input) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
          std::cerr << "error: line " << line_no << ": ids must be integers\n";
          return kExitInvalidData;
        }
        ids.push_back(id.get<int32_t>());
      }
      if (!PrintJsonString(tokenizer->Decode(ids, flags.GetBool("skip-special")), line_no)) {
        return kExitInvalidData;
      }
    }
  }
  return kExitOk;
}

int Chat(const std::vector<std::string>& args) {
  FlagSet flags("switchyard text chat --tokenizer PATH [--add-generation-prompt] < FILE",
                "Renders each line (a JSON object with \"messages\" and optional \"tools\" and\n"
                "template variables) with the model's own chat_template, as Hugging Face's\n"
                "apply_chat_template(tokenize=False) does, and prints it as a JSON string.");
  flags.AddString("tokenizer", "", "Model directory, tokenizer.json or tokenizer_config.json.");
  flags.AddBool("add-generation-prompt", false, "End with the assistant turn's header.");
  flags.AddString("template", "default", "Name of the template when the config has several.");
  int rc = ParseTextFlags(&flags, args);
  if (rc >= 0) return rc;
  text::ModelTextOptions options;
  options.tokenizer = false;
  options.require_template = true;
  options.template_name = flags.GetString("template");
  auto model = text::LoadModelText(flags.GetString("tokenizer"), options);
  if (!model.ok()) return ReportError(model.status());
  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    nlohmann::ordered_json input = nlohmann::ordered_json::parse(line, nullptr, false);
    if (!input.is_object() || !input.contains("messages")) {
      std::cerr << "error: line " << line_no << ": expected a JSON object with \"messages\"\n";
      return kExitInvalidData;
    }
    nlohmann::ordered_json context = input;  // extra keys are template variables
    for (const auto& [key, value] : model->template_variables.items()) {
      if (!context.contains(key)) context[key] = value;
    }
    if (!context.contains("add_generation_prompt")) {
      context["add_generation_prompt"] = flags.GetBool("add-generation-prompt");
    }
    if (!PrintJsonString(model->chat_template->Render(context), line_no)) {
      return kExitInvalidData;
    }
  }
  return kExitOk;
}

}  // namespace

int RunText(const std::vector<std::string>& args) {
  return DispatchVerb(
      "text", kTextUsage, args,
      {
          {"encode", [](const std::vector<std::string>& a) { return Run(a, true); }},
          {"decode", [](const std::vector<std::string>& a) { return Run(a, false); }},
          {"chat", Chat},
      });
}

}  // namespace switchyard::cli
