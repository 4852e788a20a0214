// `switchyard generate` and `switchyard inference <verb>`: clients of the
// InferenceService.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/core/file_util.h"
#include "switchyard/v1/inference.grpc.pb.h"

namespace switchyard::cli {
namespace {

using Client = ServiceClient<v1::InferenceService>;

const char* kInferenceUsage =
    "Usage: switchyard inference <verb> [flags]\n\n"
    "  list            Loaded models, their adapters and memory.\n"
    "  load            Load a base model (LoadModel).\n"
    "  unload          Unload a model (after its requests finish, or --force).\n"
    "  load-adapter    Load (and optionally pin) a LoRA adapter on a loaded model.\n"
    "  unload-adapter  Unload an adapter.\n"
    "  score           Log-likelihood of completions after a prompt.\n\n"
    "Generation is `switchyard generate`. Run `switchyard inference <verb> --help`.\n";

// Reads --messages: a JSON array of {role, content} objects, or an object
// with "messages" (a chat dataset line). Errors name the file and message.
bool ReadMessages(const std::string& path, v1::ChatInput* chat) {
  auto text = ReadFile(path);
  if (!text.ok()) {
    std::cerr << "error: --messages: " << text.status().message() << "\n";
    return false;
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_object() && j.contains("messages")) j = j["messages"];
  if (!j.is_array() || j.empty()) {
    std::cerr << "error: --messages " << path
              << ": expected a JSON array of {\"role\", \"content\"} objects (or an object with "
                 "\"messages\")\n";
    return false;
  }
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
        (m.contains("content") && !m["content"].is_string())) {
      std::cerr << "error: --messages " << path << ": message " << i
                << " needs a string \"role\" and a string \"content\"\n";
      return false;
    }
    v1::ChatMessage* out = chat->add_messages();
    out->set_role(m["role"].get<std::string>());
    out->set_content(m.value("content", ""));
    if (m.contains("name") && m["name"].is_string()) out->set_name(m["name"].get<std::string>());
  }
  return true;
}

// --prompt or --messages into the request's input; false after printing.
template <typename Request>
bool SetInput(const FlagSet& flags, Request* req) {
  const bool prompt = flags.IsSet("prompt"), messages = !flags.GetString("messages").empty();
  if (prompt == messages) {
    std::cerr << "error: give exactly one of --prompt TEXT or --messages FILE\n";
    return false;
  }
  if (prompt) {
    req->set_prompt(flags.GetString("prompt"));
    return true;
  }
  return ReadMessages(flags.GetString("messages"), req->mutable_chat());
}

std::string FinishLabel(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    default:
      return "unspecified";
  }
}

int Generate(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard generate --server ADDR --model NAME [--adapter NAME] (--prompt TEXT | "
      "--messages FILE) [flags]",
      "Generates a completion on the inference service. --prompt is raw text\n"
      "(tokenized with the tokenizer's special tokens); --messages is a JSON file of\n"
      "chat messages rendered with the model's chat template. Unset sampling flags take\n"
      "the model's generation_config.json, then the server's defaults. The text goes\n"
      "to stdout (as it arrives with --stream); token counts and the finish reason to\n"
      "stderr. With --json: the CompleteResponse, or with --stream one GenerateResponse\n"
      "per line.");
  AddClientFlags(&flags);
  flags.AddString("model", "", "Loaded base model (\"tiny\" or \"models/tiny\").");
  flags.AddString("adapter", "", "LoRA adapter to apply (empty: the base alone).");
  flags.AddString("prompt", "", "Raw prompt text.");
  flags.AddString("messages", "", "JSON file: [{\"role\": ..., \"content\": ...}, ...].");
  flags.AddBool("stream", false, "Print tokens as they are generated.");
  flags.AddInt("max-tokens", 0, "Tokens to generate at most (0 = the model's default).");
  flags.AddDouble("temperature", -1, "0 = greedy (default: the model's, else 1).");
  flags.AddInt("top-k", -1, "Keep the k likeliest tokens (0 = off).");
  flags.AddDouble("top-p", -1, "Nucleus sampling mass in (0, 1].");
  flags.AddDouble("min-p", -1, "Drop tokens below min-p x the top probability.");
  flags.AddDouble("repetition-penalty", -1, "> 1 discourages repeats.");
  flags.AddInt("seed", -1, "Random seed (-1 = random).");
  flags.AddString("stop", "", "A stop string, or a JSON array of them.");
  flags.AddString("stop-token-ids", "", "Extra stop token ids, comma separated.");
  flags.AddBool("ignore-eos", false, "Keep going past EOS.");
  flags.AddBool("logprobs", false, "Return each token's log-probability (with --json).");
  flags.AddInt("top-logprobs", 0, "With --logprobs: this many alternatives per token (0-20).");
  flags.AddString("request-id", "", "Request id for logs (default: generated).");
  flags.AddBool("json", false, "Print JSON (see above).");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags.GetString("model").empty()) {
    std::cerr << "error: --model is required\n";
    return kExitUsage;
  }
  v1::GenerateRequest req;
  req.set_model(flags.GetString("model"));
  req.set_adapter(flags.GetString("adapter"));
  req.set_request_id(flags.GetString("request-id"));
  if (!SetInput(flags, &req)) return kExitUsage;
  v1::SamplingParams* s = req.mutable_sampling();
  if (flags.GetInt("max-tokens") > 0)
    s->set_max_tokens(static_cast<int32_t>(flags.GetInt("max-tokens")));
  if (flags.IsSet("temperature")) s->set_temperature(flags.GetDouble("temperature"));
  if (flags.IsSet("top-k")) s->set_top_k(static_cast<int32_t>(flags.GetInt("top-k")));
  if (flags.IsSet("top-p")) s->set_top_p(flags.GetDouble("top-p"));
  if (flags.IsSet("min-p")) s->set_min_p(flags.GetDouble("min-p"));
  if (flags.IsSet("repetition-penalty"))
    s->set_repetition_penalty(flags.GetDouble("repetition-penalty"));
  if (flags.GetInt("seed") >= 0) s->set_seed(static_cast<uint64_t>(flags.GetInt("seed")));
  std::vector<std::string> stop;
  std::vector<int64_t> stop_ids;
  if (!ParseStopFlags(flags, &stop, &stop_ids)) return kExitUsage;
  for (const std::string& x : stop) s->add_stop(x);
  for (int64_t id : stop_ids) s->add_stop_token_ids(static_cast<int32_t>(id));
  s->set_ignore_eos(flags.GetBool("ignore-eos"));
  s->set_logprobs(flags.GetBool("logprobs"));
  s->set_top_logprobs(static_cast<int32_t>(flags.GetInt("top-logprobs")));

  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  const bool json = flags.GetBool("json");
  if (!flags.GetBool("stream")) {
    v1::CompleteResponse resp;
    grpc::Status st = c.stub->Complete(&ctx, req, &resp);
    if (!st.ok()) return ReportError(st);
    if (json) {
      std::cout << ToJson(resp);
    } else {
      std::cout << resp.text() << "\n";
      std::cerr << "[" << resp.usage().completion_tokens()
                << " tokens, finish_reason=" << FinishLabel(resp.finish_reason()) << "]\n";
    }
    return kExitOk;
  }
  auto reader = c.stub->Generate(&ctx, req);
  v1::GenerateResponse msg, last;
  while (reader->Read(&msg)) {
    if (json) {
      std::cout << JsonLine(msg) << "\n" << std::flush;
    } else {
      std::cout << msg.text() << std::flush;
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = msg;
  }
  grpc::Status st = reader->Finish();
  if (!json) std::cout << "\n";
  if (!st.ok()) return ReportError(st);
  if (!json) {
    std::cerr << "[" << last.usage().completion_tokens()
              << " tokens, finish_reason=" << FinishLabel(last.finish_reason())
              << absl::StrFormat(", ttft %.3fs, %.1f ms/token]\n",
                                 last.timings().time_to_first_token_seconds(),
                                 last.timings().mean_inter_token_seconds() * 1000);
  }
  return kExitOk;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard inference list [--json]",
                "Loaded models with their memory, batch and adapters.");
  AddClientFlags(&flags);
  flags.AddBool("json", false, "Print the ListLoadedModelsResponse as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  v1::ListLoadedModelsRequest req;
  req.set_page_size(1000);
  v1::ListLoadedModelsResponse resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::ListModels, req,
                                           &resp)) >= 0) {
    return rc;
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(resp);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"MODEL", "ARCH", "DTYPE", "DEVICE", "WEIGHTS",
                                                 "KV CACHE", "RUNNING", "WAITING", "ADAPTERS"}};
  for (const v1::LoadedModel& m : resp.models()) {
    rows.push_back({m.name(), m.architecture(), m.dtype(), m.device(),
                    HumanBytes(m.weights_bytes()),
                    HumanBytes(m.kv_cache_used_bytes()) + " / " + HumanBytes(m.kv_cache_bytes()),
                    absl::StrCat(m.requests_running()), absl::StrCat(m.requests_waiting()),
                    absl::StrCat(m.adapters_size(), " / ", m.max_adapters())});
  }
  std::cout << FormatTable(rows);
  for (const v1::LoadedModel& m : resp.models()) {
    if (m.adapters().empty()) continue;
    std::vector<std::vector<std::string>> arows = {
        {"ADAPTER", "MODEL", "R", "MEMORY", "PINNED", "RUNNING", "SERVED", "LAST USED"}};
    for (const v1::LoadedAdapter& a : m.adapters()) {
      arows.push_back({a.name(), m.name(), absl::StrCat(a.r()), HumanBytes(a.memory_bytes()),
                       a.pinned() ? "yes" : "no", absl::StrCat(a.requests_running()),
                       absl::StrCat(a.requests_served()), TimeLabel(a.last_used_time())});
    }
    std::cout << "\n" << FormatTable(arows);
  }
  std::cout << "\nmemory: " << HumanBytes(resp.memory_used_bytes()) << " used";
  if (resp.memory_total_bytes() > 0) std::cout << " of " << HumanBytes(resp.memory_total_bytes());
  std::cout << "\n";
  return kExitOk;
}

int Load(const std::vector<std::string>& args) {
  FlagSet flags("switchyard inference load MODEL [--path DIR] [flags]",
                "Loads a base model on the inference service (admin). MODEL is its id; the\n"
                "directory is --path on the server, else --data-dir/models/MODEL there.");
  AddClientFlags(&flags);
  flags.AddString("path", "", "Checkpoint directory on the server.");
  flags.AddString("dtype", "", "auto, float32, bfloat16 or float16 (default: the server's).");
  flags.AddString("device", "", "auto, cpu, cuda or cuda:N (default: the server's).");
  flags.AddInt("kv-cache-bytes", 0, "KV-cache budget, bytes (0 = the server's).");
  flags.AddInt("max-context-tokens", 0, "Longest sequence (0 = the model's context).");
  flags.AddString("adapters", "", "Adapters to load with it, comma separated.");
  flags.AddBool("json", false, "Print the LoadedModel as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::LoadModelRequest req;
  req.set_model(flags.positional()[0]);
  req.set_path(flags.GetString("path"));
  req.set_dtype(flags.GetString("dtype"));
  req.set_device(flags.GetString("device"));
  req.set_kv_cache_bytes(flags.GetInt("kv-cache-bytes"));
  req.set_max_context_tokens(static_cast<int32_t>(flags.GetInt("max-context-tokens")));
  for (absl::string_view a : absl::StrSplit(flags.GetString("adapters"), ',', absl::SkipEmpty())) {
    req.add_adapters(std::string(a));
  }
  v1::LoadedModel resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::LoadModel, req,
                                           &resp)) >= 0) {
    return rc;
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(resp);
  } else {
    std::cout << "loaded " << resp.name() << " (" << resp.architecture() << ", " << resp.dtype()
              << " on " << resp.device() << ", " << HumanBytes(resp.weights_bytes()) << " weights, "
              << HumanBytes(resp.kv_cache_bytes()) << " KV cache)\n";
  }
  return kExitOk;
}

int Unload(const std::vector<std::string>& args) {
  FlagSet flags("switchyard inference unload MODEL [--force]",
                "Unloads a model (admin). Its running requests finish first, unless --force\n"
                "ends them (UNAVAILABLE).");
  AddClientFlags(&flags);
  flags.AddBool("force", false, "End running requests instead of waiting.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::UnloadModelRequest req;
  req.set_name(flags.positional()[0]);
  req.set_force(flags.GetBool("force"));
  google::protobuf::Empty resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::UnloadModel, req,
                                           &resp)) >= 0) {
    return rc;
  }
  std::cout << "unloaded " << req.name() << "\n";
  return kExitOk;
}

int LoadAdapterCommand(const std::vector<std::string>& args) {
  FlagSet flags("switchyard inference load-adapter --model NAME ADAPTER [--path DIR] [--pin]",
                "Loads a LoRA adapter on a loaded model (admin). ADAPTER is a registry id,\n"
                "a checkpoint name (jobs/JOB/checkpoints/STEP) or, with --path, any name for\n"
                "the PEFT directory on the server. A corrupt adapter or one that does not fit\n"
                "the base is refused and nothing else changes.");
  AddClientFlags(&flags);
  flags.AddString("model", "", "Loaded base model.");
  flags.AddString("path", "", "PEFT directory on the server.");
  flags.AddBool("pin", false, "Never unload it by LRU eviction.");
  flags.AddBool("json", false, "Print the LoadedAdapter as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::LoadAdapterRequest req;
  req.set_model(flags.GetString("model"));
  req.set_adapter(flags.positional()[0]);
  req.set_path(flags.GetString("path"));
  req.set_pin(flags.GetBool("pin"));
  v1::LoadedAdapter resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::LoadAdapter, req,
                                           &resp)) >= 0) {
    return rc;
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(resp);
  } else {
    std::cout << "loaded adapter " << resp.name() << " on " << resp.model() << " (r " << resp.r()
              << ", " << HumanBytes(resp.memory_bytes()) << (resp.pinned() ? ", pinned" : "")
              << ")\n";
  }
  return kExitOk;
}

int UnloadAdapterCommand(const std::vector<std::string>& args) {
  FlagSet flags("switchyard inference unload-adapter --model NAME ADAPTER",
                "Unloads an adapter (admin); refused while requests use it.");
  AddClientFlags(&flags);
  flags.AddString("model", "", "Loaded base model.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::UnloadAdapterRequest req;
  req.set_model(flags.GetString("model"));
  req.set_adapter(flags.positional()[0]);
  google::protobuf::Empty resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::UnloadAdapter, req,
                                           &resp)) >= 0) {
    return rc;
  }
  std::cout << "unloaded adapter " << req.adapter() << "\n";
  return kExitOk;
}

int ScoreCommand(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard inference score --model NAME [--adapter NAME] (--prompt TEXT | --messages FILE) "
      "COMPLETION...",
      "Log-likelihood of each COMPLETION after the prompt (teacher forcing): total and\n"
      "mean log-probability in nats and the fraction of tokens that were the greedy\n"
      "choice.");
  AddClientFlags(&flags);
  flags.AddString("model", "", "Loaded base model.");
  flags.AddString("adapter", "", "LoRA adapter (empty: the base alone).");
  flags.AddString("prompt", "", "Raw prompt text.");
  flags.AddString("messages", "", "JSON file of chat messages.");
  flags.AddBool("json", false, "Print the ScoreResponse as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 64);
  if (rc >= 0) return rc;
  v1::ScoreRequest req;
  req.set_model(flags.GetString("model"));
  req.set_adapter(flags.GetString("adapter"));
  if (!SetInput(flags, &req)) return kExitUsage;
  for (const std::string& c : flags.positional()) req.add_completions(c);
  v1::ScoreResponse resp;
  if ((rc = CallOnce<v1::InferenceService>(flags, &v1::InferenceService::Stub::Score, req,
                                           &resp)) >= 0) {
    return rc;
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(resp);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"COMPLETION", "TOKENS", "LOGPROB", "MEAN", "GREEDY"}};
  for (int i = 0; i < resp.scores_size(); ++i) {
    const v1::CompletionScore& s = resp.scores(i);
    rows.push_back({req.completions(i), absl::StrCat(s.tokens()),
                    absl::StrFormat("%.4f", s.logprob()), absl::StrFormat("%.4f", s.mean_logprob()),
                    absl::StrFormat("%.2f", s.greedy_match_fraction())});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) { return Generate(args); }

int RunInference(const std::vector<std::string>& args) {
  return DispatchVerb("inference", kInferenceUsage, args,
                      {
                          {"list", List},
                          {"load", Load},
                          {"unload", Unload},
                          {"load-adapter", LoadAdapterCommand},
                          {"unload-adapter", UnloadAdapterCommand},
                          {"score", ScoreCommand},
                      });
}

}  // namespace switchyard::cli
