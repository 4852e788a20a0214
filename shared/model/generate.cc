#include "shared/model/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"

namespace switchyard::model {
namespace {

constexpr float kRemoved = -std::numeric_limits<float>::infinity();

// Per-request decoding state.
struct Row {
  const GenerationRequest* request = nullptr;
  Generation out;
  std::set<int64_t> seen;  // tokens the repetition penalty applies to
  at::Generator generator;
  std::unique_ptr<text::DecodeStream> decoder;
  std::string text;     // everything decoded so far (before any stop cut)
  size_t released = 0;  // bytes of `text` already handed to the callback
  size_t max_stop = 0;  // longest stop string
  bool active = true;
};

// Largest index <= n that is not inside a UTF-8 sequence.
size_t Utf8Boundary(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  auto bad = [](absl::string_view what) { return absl::InvalidArgumentError(std::string(what)); };
  if (max_new_tokens <= 0)
    return bad(absl::StrCat("max_new_tokens must be positive, got ", max_new_tokens));
  if (!(temperature >= 0) || std::isinf(temperature)) {
    return bad(absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) return bad(absl::StrCat("top_k must be >= 0 (0 = off), got ", top_k));
  if (!(top_p > 0 && top_p <= 1)) return bad(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  if (!(min_p >= 0 && min_p <= 1)) return bad(absl::StrCat("min_p must be in [0, 1], got ", min_p));
  if (!(repetition_penalty > 0) || std::isinf(repetition_penalty)) {
    return bad(absl::StrCat("repetition_penalty must be > 0, got ", repetition_penalty));
  }
  for (const std::string& s : stop) {
    if (s.empty()) return bad("stop strings must not be empty");
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationDefaults> LoadGenerationDefaults(const std::string& model_dir,
                                                          const ModelConfig& config) {
  GenerationDefaults d;
  d.eos_token_ids = config.eos_token_ids;
  const std::string path = model_dir + "/generation_config.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return d;
    return text.status();
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) {
      d.eos_token_ids = {it->get<int64_t>()};
    } else if (it->is_array()) {
      d.eos_token_ids.clear();
      for (const auto& e : *it) {
        if (e.is_number_integer()) d.eos_token_ids.push_back(e.get<int64_t>());
      }
    }
  }
  // As vLLM: the checkpoint's sampling settings become the defaults.
  auto number = [&](const char* key, double& field) {
    if (auto it = j.find(key); it != j.end() && it->is_number()) field = it->get<double>();
  };
  number("temperature", d.params.temperature);
  number("top_p", d.params.top_p);
  number("min_p", d.params.min_p);
  number("repetition_penalty", d.params.repetition_penalty);
  if (auto it = j.find("top_k"); it != j.end() && it->is_number_integer()) {
    d.params.top_k = it->get<int64_t>();
  }
  if (auto it = j.find("max_new_tokens"); it != j.end() && it->is_number_integer()) {
    d.params.max_new_tokens = it->get<int64_t>();
  }
  return d;
}

int64_t SampleToken(const at::Tensor& logits, const SamplingParams& p,
                    const std::vector<int64_t>& seen, at::Generator& generator) {
  at::Tensor scores = logits.to(at::kFloat).clone();  // (V,)
  const int64_t V = scores.size(0);
  if (p.repetition_penalty != 1.0 && !seen.empty()) {
    at::Tensor idx = at::tensor(seen, at::kLong);
    at::Tensor s = scores.index_select(0, idx);
    s = at::where(s.lt(0), s * p.repetition_penalty, s / p.repetition_penalty);
    scores.index_copy_(0, idx, s);
  }
  if (p.temperature == 0) return scores.argmax().item<int64_t>();
  scores = scores / p.temperature;
  if (p.top_k > 0 && p.top_k < V) {
    at::Tensor kth = std::get<0>(scores.topk(p.top_k)).select(0, p.top_k - 1);
    scores.masked_fill_(scores.lt(kth), kRemoved);
  }
  if (p.top_p < 1.0) {
    auto [sorted, order] = scores.sort(/*dim=*/0, /*descending=*/true);
    at::Tensor probs = at::softmax(sorted, 0);
    // Drop a token when the tokens ranked above it already hold top_p.
    at::Tensor drop = (probs.cumsum(0) - probs).ge(p.top_p);
    drop.select(0, 0).fill_(false);
    scores.index_put_({order.masked_select(drop)}, kRemoved);
  }
  if (p.min_p > 0) {
    at::Tensor probs = at::softmax(scores, 0);
    scores.masked_fill_(probs.lt(probs.max() * p.min_p), kRemoved);
  }
  at::Tensor probs = at::softmax(scores, 0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

absl::StatusOr<std::vector<Generation>> Generate(const CausalLm& model,
                                                 const text::Tokenizer* tokenizer,
                                                 const std::vector<GenerationRequest>& requests,
                                                 const std::vector<int64_t>& eos_token_ids,
                                                 const TokenCallback& callback) {
  if (requests.empty()) return std::vector<Generation>{};
  const int64_t B = static_cast<int64_t>(requests.size());
  const int64_t V = model.config().vocab_size;
  int64_t longest_prompt = 0, most_new = 0;
  std::vector<Row> rows(B);
  std::random_device entropy;
  for (int64_t r = 0; r < B; ++r) {
    const GenerationRequest& req = requests[r];
    SY_RETURN_IF_ERROR(req.params.Validate());
    if (req.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
    for (int64_t id : req.prompt_ids) {
      if (id < 0 || id >= V) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", V, ")"));
      }
    }
    if (!req.params.stop.empty() && tokenizer == nullptr) {
      return absl::InvalidArgumentError("stop strings need the model's tokenizer");
    }
    longest_prompt = std::max<int64_t>(longest_prompt, req.prompt_ids.size());
    most_new = std::max(most_new, req.params.max_new_tokens);
    Row& row = rows[r];
    row.request = &req;
    row.out.prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
    if (req.params.repetition_penalty != 1.0)
      row.seen.insert(req.prompt_ids.begin(), req.prompt_ids.end());
    row.generator = at::detail::createCPUGenerator(
        req.params.seed.has_value() ? *req.params.seed
                                    : (static_cast<uint64_t>(entropy()) << 32 | entropy()));
    if (tokenizer != nullptr) {
      row.decoder = std::make_unique<text::DecodeStream>(tokenizer, /*skip_special_tokens=*/true);
    }
    for (const std::string& s : req.params.stop) row.max_stop = std::max(row.max_stop, s.size());
  }

  c10::InferenceMode inference;
  SY_ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(model.config(), B, longest_prompt + most_new,
                                                     model.dtype(), model.device()));
  // Prefill: prompts left-padded to one length.
  DecoderInput input;
  std::vector<int64_t> ids(B * longest_prompt, 0), segments(B * longest_prompt, -1);
  for (int64_t r = 0; r < B; ++r) {
    const auto& prompt = requests[r].prompt_ids;
    const int64_t pad = longest_prompt - static_cast<int64_t>(prompt.size());
    for (size_t t = 0; t < prompt.size(); ++t) {
      ids[r * longest_prompt + pad + t] = prompt[t];
      segments[r * longest_prompt + pad + t] = 0;
    }
    input.adapters.push_back(requests[r].adapter);
  }
  input.input_ids = at::tensor(ids, at::kLong).view({B, longest_prompt});
  input.segment_ids = at::tensor(segments, at::kLong).view({B, longest_prompt});

  for (int64_t step = 0;; ++step) {
    SY_ASSIGN_OR_RETURN(at::Tensor hidden, model.Hidden(input, &cache));
    SY_ASSIGN_OR_RETURN(at::Tensor logits, TorchCall("LM head", [&] {
                          return model.Logits(hidden.select(1, hidden.size(1) - 1))
                              .to(at::kCPU, at::kFloat);  // (B, V)
                        }));
    at::Tensor raw_logprobs = at::log_softmax(logits, -1);
    std::vector<int64_t> next(B, 0), next_segment(B, -1);
    bool any_active = false;
    for (int64_t r = 0; r < B; ++r) {
      Row& row = rows[r];
      if (!row.active) continue;
      const SamplingParams& p = row.request->params;
      const std::vector<int64_t> seen(row.seen.begin(), row.seen.end());
      int64_t token = 0;
      SY_ASSIGN_OR_RETURN(token, TorchCall("sampling", [&] {
                            return SampleToken(logits[r], p, seen, row.generator);
                          }));
      const bool is_eos = !p.ignore_eos && std::find(eos_token_ids.begin(), eos_token_ids.end(),
                                                     token) != eos_token_ids.end();
      const bool is_stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) !=
                              p.stop_token_ids.end();
      StreamedToken streamed;
      streamed.id = token;
      streamed.logprob = raw_logprobs[r][token].item<double>();
      if (is_eos || is_stop_id) {
        row.out.finish_reason = "stop";
        row.out.stop_reason = absl::StrCat(token);
        row.active = false;
      } else {
        row.out.token_ids.push_back(token);
        row.out.logprobs.push_back(streamed.logprob);
        if (p.repetition_penalty != 1.0) row.seen.insert(token);
        if (row.decoder != nullptr) {
          SY_ASSIGN_OR_RETURN(std::string piece, row.decoder->Step(static_cast<int32_t>(token)));
          const size_t search_from =
              row.text.size() >= row.max_stop ? row.text.size() - row.max_stop + 1 : 0;
          row.text += piece;
          size_t cut = std::string::npos;
          for (const std::string& s : p.stop) {
            size_t at = row.text.find(s, search_from);
            if (at != std::string::npos && at < cut) {
              cut = at;
              row.out.stop_reason = s;
            }
          }
          if (cut != std::string::npos) {
            row.text.resize(cut);
            row.out.finish_reason = "stop";
            row.active = false;
          }
        }
        if (row.active && static_cast<int64_t>(row.out.token_ids.size()) >= p.max_new_tokens) {
          row.out.finish_reason = "length";
          row.active = false;
        }
      }
      // Release text, holding back what could still become a stop string.
      size_t releasable = row.text.size();
      if (row.active && row.max_stop > 1) {
        releasable = releasable > row.max_stop - 1 ? releasable - (row.max_stop - 1) : 0;
        releasable = Utf8Boundary(row.text, releasable);
      }
      if (releasable > row.released) {
        streamed.text = row.text.substr(row.released, releasable - row.released);
        row.released = releasable;
      }
      if (callback && !callback(static_cast<size_t>(r), streamed) && row.active) {
        row.out.finish_reason = "cancelled";
        row.active = false;
      }
      if (row.active) {
        next[r] = token;
        next_segment[r] = 0;
        any_active = true;
      }
    }
    if (!any_active) break;
    input.input_ids = at::tensor(next, at::kLong).view({B, 1});
    input.segment_ids = at::tensor(next_segment, at::kLong).view({B, 1});
    input.position_ids = at::Tensor();
  }

  std::vector<Generation> out;
  out.reserve(B);
  for (Row& row : rows) {
    row.out.text = std::move(row.text);
    out.push_back(std::move(row.out));
  }
  return out;
}

}  // namespace switchyard::model
