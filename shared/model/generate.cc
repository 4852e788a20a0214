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
  if (top_logprobs < 0 || top_logprobs > 20) {
    return bad(absl::StrCat("top_logprobs must be in [0, 20], got ", top_logprobs));
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

absl::StatusOr<std::unique_ptr<SequenceDecoder>> SequenceDecoder::Create(
    const GenerationRequest& req, const text::Tokenizer* tokenizer,
    const std::vector<int64_t>& eos_token_ids, int64_t vocab_size) {
  SY_RETURN_IF_ERROR(req.params.Validate());
  if (req.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int64_t id : req.prompt_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (!req.params.stop.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError("stop strings need the model's tokenizer");
  }
  std::unique_ptr<SequenceDecoder> d(new SequenceDecoder());
  d->tokenizer_ = tokenizer;
  d->eos_ = req.params.ignore_eos ? std::vector<int64_t>{} : eos_token_ids;
  d->params_ = req.params;
  d->out_.prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
  if (req.params.repetition_penalty != 1.0)
    d->seen_.insert(req.prompt_ids.begin(), req.prompt_ids.end());
  uint64_t seed = 0;
  if (req.params.seed.has_value()) {
    seed = *req.params.seed;
  } else {
    std::random_device entropy;
    seed = static_cast<uint64_t>(entropy()) << 32 | entropy();
  }
  d->generator_ = at::detail::createCPUGenerator(seed);
  if (tokenizer != nullptr) {
    d->decoder_ = std::make_unique<text::DecodeStream>(tokenizer, /*skip_special_tokens=*/true);
  }
  for (const std::string& stop : req.params.stop)
    d->max_stop_ = std::max(d->max_stop_, stop.size());
  d->next_input_ = req.prompt_ids.back();
  return d;
}

absl::StatusOr<StreamedToken> SequenceDecoder::Step(const at::Tensor& logits,
                                                    const at::Tensor& logprobs) {
  if (finished_) return absl::FailedPreconditionError("the sequence has finished");
  const SamplingParams& p = params_;
  int64_t token = 0;
  if (p.temperature == 0 && p.repetition_penalty == 1.0) {
    SY_ASSIGN_OR_RETURN(token,
                        TorchCall("sampling", [&] { return logits.argmax().item<int64_t>(); }));
  } else {
    const std::vector<int64_t> seen(seen_.begin(), seen_.end());
    SY_ASSIGN_OR_RETURN(
        token, TorchCall("sampling", [&] { return SampleToken(logits, p, seen, generator_); }));
  }
  StreamedToken streamed;
  streamed.id = token;
  const float* lp = logprobs.data_ptr<float>();
  streamed.logprob = lp[token];
  if (p.top_logprobs > 0) {
    auto [values, ids] = logprobs.topk(p.top_logprobs);
    for (int64_t i = 0; i < values.size(0); ++i) {
      streamed.top_logprobs.emplace_back(ids[i].item<int64_t>(), values[i].item<double>());
    }
  }
  const bool is_eos = std::find(eos_.begin(), eos_.end(), token) != eos_.end();
  const bool is_stop_id =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if (is_eos || is_stop_id) {
    out_.finish_reason = "stop";
    out_.stop_reason = absl::StrCat(token);
    out_.stop_token = token;
    finished_ = true;
  } else {
    out_.token_ids.push_back(token);
    out_.logprobs.push_back(streamed.logprob);
    if (p.repetition_penalty != 1.0) seen_.insert(token);
    if (decoder_ != nullptr) {
      SY_ASSIGN_OR_RETURN(std::string piece, decoder_->Step(static_cast<int32_t>(token)));
      const size_t search_from = text_.size() >= max_stop_ ? text_.size() - max_stop_ + 1 : 0;
      text_ += piece;
      size_t cut = std::string::npos;
      for (const std::string& s : p.stop) {
        size_t at = text_.find(s, search_from);
        if (at != std::string::npos && at < cut) {
          cut = at;
          out_.stop_reason = s;
        }
      }
      if (cut != std::string::npos) {
        text_.resize(cut);
        out_.finish_reason = "stop";
        finished_ = true;
      }
    }
    if (!finished_ && static_cast<int64_t>(out_.token_ids.size()) >= p.max_new_tokens) {
      out_.finish_reason = "length";
      finished_ = true;
    }
  }
  // Release text, holding back what could still become a stop string.
  size_t releasable = text_.size();
  if (!finished_ && max_stop_ > 1) {
    releasable = releasable > max_stop_ - 1 ? releasable - (max_stop_ - 1) : 0;
    releasable = Utf8Boundary(text_, releasable);
  }
  if (releasable > released_) {
    streamed.text = text_.substr(released_, releasable - released_);
    released_ = releasable;
  }
  next_input_ = token;
  return streamed;
}

void SequenceDecoder::Cancel() {
  if (finished_) return;
  out_.finish_reason = "cancelled";
  finished_ = true;
}

Generation SequenceDecoder::Take() {
  out_.text = std::move(text_);
  text_.clear();
  return std::move(out_);
}

absl::StatusOr<std::vector<Generation>> Generate(const CausalLm& model,
                                                 const text::Tokenizer* tokenizer,
                                                 const std::vector<GenerationRequest>& requests,
                                                 const std::vector<int64_t>& eos_token_ids,
                                                 const TokenCallback& callback) {
  if (requests.empty()) return std::vector<Generation>{};
  const int64_t B = static_cast<int64_t>(requests.size());
  int64_t longest_prompt = 0, most_new = 0;
  std::vector<std::unique_ptr<SequenceDecoder>> rows;
  for (const GenerationRequest& req : requests) {
    SY_ASSIGN_OR_RETURN(
        std::unique_ptr<SequenceDecoder> row,
        SequenceDecoder::Create(req, tokenizer, eos_token_ids, model.config().vocab_size));
    rows.push_back(std::move(row));
    longest_prompt = std::max<int64_t>(longest_prompt, req.prompt_ids.size());
    most_new = std::max(most_new, req.params.max_new_tokens);
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
                              .to(at::kCPU, at::kFloat)
                              .contiguous();  // (B, V)
                        }));
    at::Tensor raw_logprobs = at::log_softmax(logits, -1);
    std::vector<int64_t> next(B, 0), next_segment(B, -1);
    bool any_active = false;
    for (int64_t r = 0; r < B; ++r) {
      SequenceDecoder& row = *rows[r];
      if (row.finished()) continue;
      SY_ASSIGN_OR_RETURN(StreamedToken streamed, row.Step(logits[r], raw_logprobs[r]));
      if (callback && !callback(static_cast<size_t>(r), streamed)) row.Cancel();
      if (!row.finished()) {
        next[r] = row.next_input();
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
  for (auto& row : rows) out.push_back(row->Take());
  return out;
}

}  // namespace switchyard::model
