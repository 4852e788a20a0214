// `switchyard model ...`: make, score, run and merge checkpoints locally with
// the same model code the services use.
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/decoder.h"
#include "shared/model/generate.h"
#include "shared/model/init.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"
#include "shared/text/model_text.h"

namespace switchyard::cli {
namespace {

const char* kModelUsage =
    "Usage: switchyard model <verb> [flags]\n\n"
    "  init          Write a random checkpoint in the Hugging Face layout.\n"
    "  init-adapter  Write a random PEFT LoRA adapter for a checkpoint.\n"
    "  score         Log-probability of each next token of a token sequence.\n"
    "  generate      Generate text from a prompt.\n"
    "  merge         Merge a LoRA adapter into its base model's weights.\n\n"
    "Run `switchyard model <verb> --help`.\n";

// --dtype, --device, --threads for commands that run a model.
void AddRuntimeFlags(FlagSet* flags) {
  flags->AddString("dtype", "float32", "Compute dtype: float32, bfloat16 or float16.");
  flags->AddString("device", "auto", "cpu, cuda, cuda:N or auto (CUDA when present).");
  flags->AddInt("threads", 0, "LibTorch intra-op threads (0 = every core).");
}

absl::StatusOr<model::LoadOptions> RuntimeFromFlags(const FlagSet& flags) {
  model::SetTorchThreads(static_cast<int>(flags.GetInt("threads")));
  model::LoadOptions options;
  SY_ASSIGN_OR_RETURN(options.dtype, model::ParseDtype(flags.GetString("dtype")));
  SY_ASSIGN_OR_RETURN(options.device, model::ParseDevice(flags.GetString("device")));
  return options;
}

// Loads --model and, when given, --adapter (registered as "adapter").
absl::StatusOr<std::unique_ptr<model::CausalLm>> LoadModelAndAdapter(const FlagSet& flags,
                                                                     int* adapter_id) {
  SY_ASSIGN_OR_RETURN(model::LoadOptions options, RuntimeFromFlags(flags));
  options.serving = true;  // the inference engine's kernels, so greedy text matches it
  SY_ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> lm,
                      model::CausalLm::Load(flags.GetString("model"), options));
  *adapter_id = model::kNoAdapter;
  if (!flags.GetString("adapter").empty()) {
    SY_ASSIGN_OR_RETURN(
        model::LoraAdapter adapter,
        model::LoadPeftAdapter(flags.GetString("adapter"), options.dtype, options.device));
    SY_ASSIGN_OR_RETURN(*adapter_id, lm->AddAdapter("adapter", adapter));
  }
  return lm;
}

int RequireFlags(const FlagSet& flags, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (flags.GetString(name).empty()) {
      std::cerr << "error: --" << name << " is required\n";
      return kExitUsage;
    }
  }
  return -1;
}

int Init(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard model init --arch ARCH --layers N --hidden H --heads N [--kv-heads N]\n"
      "       [--intermediate N] [--vocab-from TOKENIZER_DIR] --seed S -o DIR",
      "Writes a random checkpoint directory in the Hugging Face layout (config.json,\n"
      "model.safetensors, tokenizer files, generation_config.json; for bert the\n"
      "sentence-transformers files) that Switchyard and transformers both load.");
  flags.AddString("arch", "llama", "llama, mistral, qwen2, gpt2 or bert.");
  flags.AddInt("layers", 2, "Transformer layers.");
  flags.AddInt("hidden", 64, "Hidden size.");
  flags.AddInt("heads", 4, "Attention heads.");
  flags.AddInt("kv-heads", 0, "Key/value heads for grouped-query attention (0 = --heads).");
  flags.AddInt("intermediate", 0, "MLP width (0 = 4 x hidden for gpt2/bert, ~8/3 x hidden else).");
  flags.AddInt("max-positions", 0, "Maximum positions (0 = 1024 gpt2, 512 bert, 2048 else).");
  flags.AddDouble("rope-theta", 10000.0, "RoPE base (llama, mistral, qwen2).");
  flags.AddBool("tie-embeddings", false,
                "Share the LM head with the embedding (gpt2 always does).");
  flags.AddString("vocab-from", "",
                  "Directory with the tokenizer.json to copy; its vocabulary sizes the model.\n"
                  "Empty: a 259-token byte-level tokenizer with a ChatML chat template.");
  flags.AddString("dtype", "float32", "Stored dtype: float32, bfloat16 or float16.");
  flags.AddInt("seed", 0, "Random seed.");
  flags.AddDouble("init-std", 0.02,
                  "Standard deviation of the random weights (transformers' initializer_range).");
  flags.AddString("output", "", "Output directory (-o; created, must be empty).");
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 0, 0);
  if (rc >= 0) return rc;
  if ((rc = RequireFlags(flags, {"output"})) >= 0) return rc;
  model::InitOptions o;
  auto arch = model::ParseArchitectureName(flags.GetString("arch"));
  if (!arch.ok()) return ReportError(arch.status());
  auto dtype = model::ParseDtype(flags.GetString("dtype"));
  if (!dtype.ok()) return ReportError(dtype.status());
  o.arch = *arch;
  o.dtype = *dtype;
  o.layers = flags.GetInt("layers");
  o.hidden = flags.GetInt("hidden");
  o.heads = flags.GetInt("heads");
  o.kv_heads = flags.GetInt("kv-heads");
  o.intermediate = flags.GetInt("intermediate");
  o.max_positions = flags.GetInt("max-positions");
  o.rope_theta = flags.GetDouble("rope-theta");
  o.tie_embeddings = flags.GetBool("tie-embeddings");
  o.vocab_from = flags.GetString("vocab-from");
  o.seed = static_cast<uint64_t>(flags.GetInt("seed"));
  o.init_std = flags.GetDouble("init-std");
  if (!(o.init_std > 0)) {
    std::cerr << "error: --init-std must be positive\n";
    return kExitUsage;
  }
  absl::Status status = model::InitCheckpoint(o, flags.GetString("output"));
  if (!status.ok()) {
    const int code = ReportError(status);
    return absl::IsInvalidArgument(status) ? kExitUsage : code;  // a bad flag
  }
  auto config = model::LoadModelConfig(flags.GetString("output"));
  if (!config.ok()) return ReportError(config.status());
  std::cerr << "wrote " << model::ArchitectureName(config->arch) << " checkpoint with "
            << config->NumParameters() << " parameters to " << flags.GetString("output") << "\n";
  return kExitOk;
}

int Score(const std::vector<std::string>& args) {
  FlagSet flags("switchyard model score --model DIR [--adapter DIR] --ids \"1 2 3 ...\" [--json]",
                "Prints, for each position after the first, the log-probability (natural log,\n"
                "log-softmax of the logits) of the token that follows: one number per line,\n"
                "or a JSON array with --json.");
  flags.AddString("model", "", "Checkpoint directory.");
  flags.AddString("adapter", "", "PEFT LoRA adapter directory.");
  flags.AddString("ids", "", "Token ids separated by spaces or commas (at least two).");
  flags.AddBool("json", false, "Print a JSON array.");
  AddRuntimeFlags(&flags);
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 0, 0);
  if (rc >= 0) return rc;
  if ((rc = RequireFlags(flags, {"model", "ids"})) >= 0) return rc;
  std::vector<int64_t> ids;
  for (absl::string_view piece :
       absl::StrSplit(flags.GetString("ids"), absl::ByAnyChar(" ,\t\n"), absl::SkipEmpty())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      std::cerr << "error: --ids: '" << piece << "' is not a token id\n";
      return kExitUsage;
    }
    ids.push_back(id);
  }
  if (ids.size() < 2) {
    std::cerr << "error: --ids needs at least two token ids\n";
    return kExitUsage;
  }
  int adapter = model::kNoAdapter;
  auto lm = LoadModelAndAdapter(flags, &adapter);
  if (!lm.ok()) return ReportError(lm.status());
  for (int64_t id : ids) {
    if (id < 0 || id >= (*lm)->config().vocab_size) {
      std::cerr << "error: --ids: token id " << id << " is outside the vocabulary [0, "
                << (*lm)->config().vocab_size << ")\n";
      return kExitInvalidData;
    }
  }
  c10::InferenceMode inference;
  model::DecoderInput input;
  input.input_ids = at::tensor(ids, at::kLong).view({1, -1});
  if (adapter != model::kNoAdapter) input.adapters = {adapter};
  auto logits = (*lm)->Forward(input);
  if (!logits.ok()) return ReportError(logits.status());
  at::Tensor labels = model::NextTokenLabels(input.input_ids, at::Tensor(), at::Tensor());
  at::Tensor lp = model::LabelLogProbs(*logits, labels).to(at::kCPU, at::kDouble)[0];
  std::vector<double> out(ids.size() - 1);
  for (size_t t = 0; t + 1 < ids.size(); ++t) out[t] = lp[t].item<double>();
  if (flags.GetBool("json")) {
    std::cout << nlohmann::json(out).dump() << "\n";
  } else {
    std::cout.precision(9);
    for (double v : out) std::cout << v << "\n";
  }
  return kExitOk;
}

int Generate(const std::vector<std::string>& args) {
  FlagSet flags("switchyard model generate --model DIR [--adapter DIR] --prompt TEXT [flags]",
                "Generates a continuation of TEXT, streaming it to stdout. Sampling defaults\n"
                "come from the checkpoint's generation_config.json where it sets them.");
  flags.AddString("model", "", "Checkpoint directory.");
  flags.AddString("adapter", "", "PEFT LoRA adapter directory.");
  flags.AddString("prompt", "", "Prompt text.");
  flags.AddBool("chat", false, "Wrap the prompt as a user message in the model's chat template.");
  flags.AddInt("max-new-tokens", 0, "Tokens to generate at most (0 = the checkpoint's, else 256).");
  flags.AddDouble("temperature", -1, "0 = greedy (default: the checkpoint's, else 1).");
  flags.AddInt("top-k", -1, "Keep the k likeliest tokens (0 = off).");
  flags.AddDouble("top-p", -1, "Nucleus sampling mass in (0, 1] (1 = off).");
  flags.AddDouble("min-p", -1, "Drop tokens below min-p x the top probability (0 = off).");
  flags.AddDouble("repetition-penalty", -1, "> 1 discourages repeating tokens (1 = off).");
  flags.AddInt("seed", -1, "Random seed (-1 = random).");
  flags.AddString("stop", "", "A stop string, or a JSON array of them.");
  flags.AddString("stop-token-ids", "", "Extra stop token ids, comma separated.");
  flags.AddBool("ignore-eos", false, "Keep going past EOS.");
  flags.AddBool("json", false, "Print one JSON object (text, tokens, logprobs, finish reason).");
  AddRuntimeFlags(&flags);
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 0, 0);
  if (rc >= 0) return rc;
  if ((rc = RequireFlags(flags, {"model"})) >= 0) return rc;
  if (!flags.IsSet("prompt")) {
    std::cerr << "error: --prompt is required\n";
    return kExitUsage;
  }
  const std::string dir = flags.GetString("model");
  int adapter = model::kNoAdapter;
  auto lm = LoadModelAndAdapter(flags, &adapter);
  if (!lm.ok()) return ReportError(lm.status());
  text::ModelTextOptions text_options;
  text_options.chat_template = flags.GetBool("chat");
  text_options.require_template = flags.GetBool("chat");
  auto text = text::LoadModelText(dir, text_options);
  if (!text.ok()) return ReportError(text.status());
  auto defaults = model::LoadGenerationDefaults(dir, (*lm)->config());
  if (!defaults.ok()) return ReportError(defaults.status());

  model::GenerationRequest request;
  request.adapter = adapter;
  model::SamplingParams& p = request.params;
  p = defaults->params;
  if (flags.GetInt("max-new-tokens") > 0) p.max_new_tokens = flags.GetInt("max-new-tokens");
  if (flags.IsSet("temperature")) p.temperature = flags.GetDouble("temperature");
  if (flags.IsSet("top-k")) p.top_k = flags.GetInt("top-k");
  if (flags.IsSet("top-p")) p.top_p = flags.GetDouble("top-p");
  if (flags.IsSet("min-p")) p.min_p = flags.GetDouble("min-p");
  if (flags.IsSet("repetition-penalty"))
    p.repetition_penalty = flags.GetDouble("repetition-penalty");
  if (flags.GetInt("seed") >= 0) p.seed = static_cast<uint64_t>(flags.GetInt("seed"));
  p.ignore_eos = flags.GetBool("ignore-eos");
  if (!ParseStopFlags(flags, &p.stop, &p.stop_token_ids)) return kExitUsage;
  absl::Status valid = p.Validate();
  if (!valid.ok()) {
    ReportError(valid);
    return kExitUsage;
  }

  std::string prompt = flags.GetString("prompt");
  bool add_special = true;
  if (flags.GetBool("chat")) {
    nlohmann::ordered_json context = text->template_variables;
    context["messages"] = {{{"role", "user"}, {"content", prompt}}};
    context["add_generation_prompt"] = true;
    auto rendered = text->chat_template->Render(context);
    if (!rendered.ok()) return ReportError(rendered.status());
    prompt = *rendered;
    add_special = false;  // the template already wrote them
  }
  auto ids = text->tokenizer->Encode(prompt, add_special);
  if (!ids.ok()) return ReportError(ids.status());
  request.prompt_ids.assign(ids->begin(), ids->end());
  const bool json = flags.GetBool("json");
  auto result = model::Generate(**lm, text->tokenizer.get(), {request}, defaults->eos_token_ids,
                                [&](size_t, const model::StreamedToken& t) {
                                  if (!json) std::cout << t.text << std::flush;
                                  return true;
                                });
  if (!result.ok()) return ReportError(result.status());
  const model::Generation& g = (*result)[0];
  if (json) {
    nlohmann::json out = {{"text", g.text},
                          {"token_ids", g.token_ids},
                          {"logprobs", g.logprobs},
                          {"finish_reason", g.finish_reason},
                          {"stop_reason", g.stop_reason},
                          {"prompt_tokens", g.prompt_tokens},
                          {"completion_tokens", g.token_ids.size()}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << "\n";
    std::cerr << "[" << g.token_ids.size() << " tokens, finish_reason=" << g.finish_reason << "]\n";
  }
  return kExitOk;
}

int Merge(const std::vector<std::string>& args) {
  FlagSet flags("switchyard model merge --model DIR --adapter DIR -o DIR",
                "Adds the adapter's scale x B A into the base weights and writes a plain\n"
                "checkpoint (config.json, model.safetensors, tokenizer and generation files)\n"
                "that serves without the adapter.");
  flags.AddString("model", "", "Base checkpoint directory.");
  flags.AddString("adapter", "", "PEFT LoRA adapter directory.");
  flags.AddString("output", "", "Output directory (-o; created, must be empty).");
  flags.AddString("dtype", "", "Stored dtype (default: the base checkpoint's).");
  flags.AddInt("threads", 0, "LibTorch intra-op threads (0 = every core).");
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 0, 0);
  if (rc >= 0) return rc;
  if ((rc = RequireFlags(flags, {"model", "adapter", "output"})) >= 0) return rc;
  model::SetTorchThreads(static_cast<int>(flags.GetInt("threads")));
  const std::string base = flags.GetString("model"), out = flags.GetString("output");
  auto config = model::LoadModelConfig(base);
  if (!config.ok()) return ReportError(config.status());
  std::string dtype_name = flags.GetString("dtype");
  if (dtype_name.empty()) dtype_name = config->torch_dtype;
  auto dtype = model::ParseDtype(dtype_name);
  if (!dtype.ok()) return ReportError(dtype.status());
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && !std::filesystem::is_empty(out, ec)) {
    return ReportError(absl::AlreadyExistsError(out + " exists and is not empty"));
  }
  // Merge in float32 so the sum is rounded once, into the stored dtype.
  model::LoadOptions options;
  auto lm = model::CausalLm::Load(base, options);
  if (!lm.ok()) return ReportError(lm.status());
  auto adapter = model::LoadPeftAdapter(flags.GetString("adapter"), at::kFloat, at::kCPU);
  if (!adapter.ok()) return ReportError(adapter.status());
  absl::Status s = (*lm)->AddAdapter("adapter", *adapter).status();
  if (s.ok()) s = (*lm)->MergeAdapter("adapter");
  if (!s.ok()) return ReportError(s);
  // Written to a temporary sibling and renamed, so `out` is whole or absent.
  const std::string tmp = out + ".tmp-" + RandomHex(4);
  std::vector<std::pair<std::string, at::Tensor>> weights = (*lm)->NamedWeights();
  for (auto& [name, t] : weights) t = t.to(*dtype);
  model::ModelConfig merged_config = (*lm)->config();
  merged_config.torch_dtype = std::string(model::DtypeName(*dtype));
  s = model::SaveCheckpoint(tmp, model::ModelConfigToJson(merged_config).dump(2) + "\n", weights);
  if (s.ok()) s = model::CopyModelSideFiles(base, tmp, /*generation_config=*/true);
  if (s.ok()) s = RenameDurably(tmp, out);
  if (!s.ok()) {
    RemoveAll(tmp).IgnoreError();
    return ReportError(s);
  }
  std::cerr << "merged " << adapter->modules.size() << " adapted modules into " << out << "\n";
  return kExitOk;
}

int InitAdapterCommand(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard model init-adapter --model DIR [--r N] [--targets LIST] --seed S -o DIR",
      "Writes a random PEFT LoRA adapter (adapter_config.json,\n"
      "adapter_model.safetensors) for the checkpoint: A initialised as PEFT does, B\n"
      "drawn with --init-std instead of zeros so it changes the output. For\n"
      "benchmarks and serving checks without a training run.");
  flags.AddString("model", "", "Base checkpoint directory.");
  flags.AddInt("r", 8, "LoRA rank.");
  flags.AddDouble("alpha", 16, "LoRA alpha.");
  flags.AddString("targets", "q_proj,v_proj", "Target modules, comma separated.");
  flags.AddDouble("init-std", 0.05, "Standard deviation of B.");
  flags.AddInt("seed", 0, "Random seed.");
  flags.AddString("output", "", "Output directory (-o; created, must be empty).");
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 0, 0);
  if (rc >= 0) return rc;
  if ((rc = RequireFlags(flags, {"model", "output"})) >= 0) return rc;
  model::SetTorchThreads(0);
  model::LoraConfig config;
  config.r = flags.GetInt("r");
  config.alpha = flags.GetDouble("alpha");
  config.target_modules = absl::StrSplit(flags.GetString("targets"), ',', absl::SkipEmpty());
  if (config.r < 1 || config.target_modules.empty()) {
    std::cerr << "error: --r must be >= 1 and --targets must name a module\n";
    return kExitUsage;
  }
  absl::Status s = model::InitAdapter(flags.GetString("model"), config,
                                      static_cast<uint64_t>(flags.GetInt("seed")),
                                      flags.GetDouble("init-std"), flags.GetString("output"));
  if (!s.ok()) return ReportError(s);
  std::cerr << "wrote a LoRA adapter (r " << config.r << ") to " << flags.GetString("output")
            << "\n";
  return kExitOk;
}

}  // namespace

int RunModel(const std::vector<std::string>& args) {
  return DispatchVerb("model", kModelUsage, args,
                      {
                          {"init", Init},
                          {"init-adapter", InitAdapterCommand},
                          {"score", Score},
                          {"generate", Generate},
                          {"merge", Merge},
                      });
}

}  // namespace switchyard::cli
