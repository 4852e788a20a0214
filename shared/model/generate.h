// Text generation with a CausalLm: sampling, stopping, streaming.
//
// Several requests decode together as one batch (left-padded prompts, a
// shared KV cache), each with its own adapter, sampling parameters, random
// stream and stop conditions. The logits of each step go through the
// processors in Hugging Face's and vLLM's order: repetition penalty, then
// temperature, top-k, top-p, min-p, then a draw (or argmax when greedy).
// Reported logprobs are those of the chosen token under the model's raw
// distribution (log-softmax of the unprocessed logits), as vLLM reports.

#ifndef SWITCHYARD_SHARED_MODEL_GENERATE_H_
#define SWITCHYARD_SHARED_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "shared/model/decoder.h"
#include "shared/text/tokenizer.h"

namespace switchyard::model {

struct SamplingParams {
  int64_t max_new_tokens = 256;
  double temperature = 1.0;             // 0 = greedy (argmax)
  int64_t top_k = 0;                    // 0 = off
  double top_p = 1.0;                   // 1 = off
  double min_p = 0.0;                   // 0 = off; drop tokens below min_p * the top probability
  double repetition_penalty = 1.0;      // > 1 discourages tokens already in prompt or output
  std::optional<uint64_t> seed;         // same seed, same prompt, same output
  std::vector<std::string> stop;        // stop strings; the output ends before them
  std::vector<int64_t> stop_token_ids;  // besides the model's EOS ids
  bool ignore_eos = false;
  int64_t top_logprobs = 0;  // alternatives reported per token, 0-20

  // Errors name the field, e.g. `top_p must be in (0, 1], got 1.5`.
  absl::Status Validate() const;
};

// The defaults a checkpoint's generation_config.json gives (absent file or
// fields keep SamplingParams' own defaults) and its EOS ids.
struct GenerationDefaults {
  SamplingParams params;
  std::vector<int64_t> eos_token_ids;
};
absl::StatusOr<GenerationDefaults> LoadGenerationDefaults(const std::string& model_dir,
                                                          const ModelConfig& config);

struct GenerationRequest {
  std::vector<int64_t> prompt_ids;
  int adapter = kNoAdapter;
  SamplingParams params;
};

struct StreamedToken {
  int64_t id = 0;
  double logprob = 0;  // natural log
  // The params.top_logprobs likeliest tokens and their logprobs, best first.
  std::vector<std::pair<int64_t, double>> top_logprobs;
  // Text released by this token (may be empty while a multi-byte character
  // or a possible stop string is incomplete).
  std::string text;
};

struct Generation {
  std::vector<int64_t> token_ids;  // generated tokens, stop token excluded
  std::vector<double> logprobs;    // one per token_ids entry
  std::string text;                // decoded, special tokens skipped, cut at a stop string
  std::string finish_reason;       // "stop", "length" or "cancelled"
  std::string stop_reason;         // the stop string or token id that ended it, if any
  int64_t stop_token = -1;         // the token id that ended it (EOS or a stop id), else -1
  int64_t prompt_tokens = 0;
};

// One sequence's decoding state: its sampler, stop conditions and streamed
// text, fed one step's logits at a time. Generate runs one per row; the
// inference engine one per request of its continuous batch. Not thread-safe.
class SequenceDecoder {
 public:
  // Checks the params and prompt ids (against `vocab_size`). `tokenizer`
  // (may be null: no text, no stop strings) must outlive the decoder.
  static absl::StatusOr<std::unique_ptr<SequenceDecoder>> Create(
      const GenerationRequest& request, const text::Tokenizer* tokenizer,
      const std::vector<int64_t>& eos_token_ids, int64_t vocab_size);

  // Chooses the next token from this sequence's (V,) float32 CPU logits and
  // their log-softmax, updates the stop state and returns the token with
  // the text it releases. After the last token, finished() is true.
  absl::StatusOr<StreamedToken> Step(const at::Tensor& logits, const at::Tensor& logprobs);
  // Ends the sequence early ("cancelled") unless it finished already.
  void Cancel();
  bool finished() const { return finished_; }
  // The token to feed next (the last one chosen).
  int64_t next_input() const { return next_input_; }
  const Generation& generation() const { return out_; }
  // The result; call once, when finished.
  Generation Take();

 private:
  SequenceDecoder() = default;

  const text::Tokenizer* tokenizer_ = nullptr;
  std::vector<int64_t> eos_;
  SamplingParams params_;
  Generation out_;
  std::set<int64_t> seen_;  // tokens the repetition penalty applies to
  at::Generator generator_;
  std::unique_ptr<text::DecodeStream> decoder_;
  std::string text_;     // everything decoded so far (before any stop cut)
  size_t released_ = 0;  // bytes of `text_` already streamed
  size_t max_stop_ = 0;  // longest stop string
  int64_t next_input_ = 0;
  bool finished_ = false;
};

// Called after each token of each row; return false to stop that row
// ("cancelled"). Runs on the generating thread.
using TokenCallback = std::function<bool(size_t row, const StreamedToken& token)>;

// Generates for every request. `tokenizer` decodes text and is needed for
// stop strings; without it, Generation::text stays empty. `eos_token_ids`
// end a row unless its params say ignore_eos.
absl::StatusOr<std::vector<Generation>> Generate(const CausalLm& model,
                                                 const text::Tokenizer* tokenizer,
                                                 const std::vector<GenerationRequest>& requests,
                                                 const std::vector<int64_t>& eos_token_ids,
                                                 const TokenCallback& callback = nullptr);

// One sampling step on a (V,) float32 CPU logits row; exposed for tests.
// `seen` lists token ids the repetition penalty applies to.
int64_t SampleToken(const at::Tensor& logits, const SamplingParams& params,
                    const std::vector<int64_t>& seen, at::Generator& generator);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_GENERATE_H_
