// Engine: one loaded base model serving many requests at once by continuous
// batching. No gRPC.
//
// One thread owns the model. Each turn of its loop it
//   1. runs queued tasks that change or read the model outside a forward
//      pass (adapter loads and unloads, Score);
//   2. admits waiting requests while a batch row is free (and at most
//      prefill_tokens_per_step prompt tokens a turn, so prefills do not stall
//      the running sequences for long): the request's adapter is acquired
//      (loaded on first use), prompts of one length are prefilled together
//      in one forward pass (each row computed as it would be alone), each
//      one's first token is sampled, and its keys and values join the shared
//      KV cache in a row of their own;
//   3. decodes one token for every running sequence in one forward pass,
//      each row with its own adapter (the LoRA delta applied per row) and
//      its own sampler; one group of new prompts rides along in that pass
//      (CausalLm::HiddenPair: the weights are read once for both) when the
//      rows fit the small-batch kernels, and joins the batch after it;
//   4. lets finished, cancelled and expired sequences leave: their row is
//      freed at once and the last row moves into it, so the rows in use stay
//      packed and the batch is only as wide as the running sequences.
// The KV cache holds max_batch_size rows of max_context_tokens (plus slack)
// positions, sized from the memory budget. A request that finds no free row
// waits in a bounded queue; past it, Submit answers RESOURCE_EXHAUSTED.
//
// Thread-safe: Submit, Cancel, Score, the adapter calls and Stats may be
// called from any thread. Sinks are called on the engine's thread and must
// not block.
#ifndef SWITCHYARD_SERVICES_INFERENCE_ENGINE_H_
#define SWITCHYARD_SERVICES_INFERENCE_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "services/inference/adapter_manager.h"
#include "shared/model/decoder.h"
#include "shared/model/generate.h"
#include "shared/text/model_text.h"

namespace switchyard::inference {

struct EngineOptions {
  std::string dtype = "float32";  // float32, bfloat16, float16, or auto (bf16 on CUDA, else fp32)
  std::string device = "cpu";     // cpu, cuda, cuda:N, auto
  int max_batch_size = 64;        // sequences decoded together at most
  int64_t kv_cache_bytes = 2ll << 30;
  int64_t max_context_tokens = 0;         // prompt + generation; 0 = the model's context
  int max_waiting = 256;                  // queued requests past which Submit refuses
  int max_adapters = 8;                   // loaded at once (LRU past it)
  int64_t prefill_tokens_per_step = 512;  // see above; one request is always admitted
  // LibTorch intra-op threads (0 = every core). LibTorch's setting is per
  // process: engines in one process share it.
  int threads = 0;
  // Adapter name -> PEFT directory; NOT_FOUND when unknown.
  AdapterManager::Resolver resolve_adapter;
};

struct GenerateInput {
  std::vector<int64_t> prompt_ids;
  std::string adapter;  // empty = the base alone
  model::SamplingParams params;
  absl::Time deadline = absl::InfiniteFuture();
  std::string request_id;  // for logs
};

struct Timings {
  double queue_seconds = 0;
  double time_to_first_token_seconds = 0;
  double mean_inter_token_seconds = 0;
  double total_seconds = 0;
};

struct GenerateResult {
  model::Generation generation;  // finish_reason "stop" or "length"
  int64_t cached_prompt_tokens = 0;
  Timings timings;
};

// Receives one request's tokens, on the engine's thread.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnToken(const model::StreamedToken& token) = 0;
  // Exactly once, last: the result, or why it stopped (DEADLINE_EXCEEDED,
  // CANCELLED, UNAVAILABLE when the engine stops, an adapter's error).
  virtual void OnDone(absl::StatusOr<GenerateResult> result) = 0;
};

struct CompletionScore {
  std::vector<int64_t> token_ids;
  std::vector<double> logprobs;  // one per token
  int64_t greedy_matches = 0;    // tokens that were the argmax
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int rows = 0;                // batch rows the KV cache holds
  int64_t kv_cache_bytes = 0;  // allocated
  int64_t kv_used_bytes = 0;   // positions held by running sequences
  int64_t weights_bytes = 0;
  int64_t parameter_count = 0;
  int64_t max_context_tokens = 0;
  // Since load: decode steps, the tokens they produced (one per running
  // sequence) and their wall time; prompts prefilled, their tokens and time
  // (a pass shared by a decode step and prompts is split by their rows), and
  // how many of the prompts were prefilled in a decode step's pass.
  int64_t decode_steps = 0;
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  int64_t prefills = 0;
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0;
  int64_t prefills_with_decode = 0;
};

// Per-adapter observations, for metrics. Called on the engine's thread.
struct EngineObserver {
  std::function<void(const std::string& adapter, double seconds)> time_to_first_token;
  std::function<void(const std::string& adapter, double seconds)> inter_token;
  std::function<void(const std::string& adapter, double seconds)> e2e;
  std::function<void(const std::string& adapter, int64_t tokens)> prompt_tokens;
  std::function<void(const std::string& adapter, int64_t tokens)> generation_tokens;
  // After each step: running, waiting, KV usage ratio, adapters loaded.
  std::function<void(int running, int waiting, double kv_usage, int adapters)> step;
};

class Engine {
 public:
  // Loads the checkpoint in `dir` (weights, tokenizer, chat template,
  // generation_config.json) and starts the engine's thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& name,
                                                      const std::string& dir, EngineOptions options,
                                                      EngineObserver observer = {});
  // Stops the engine.
  ~Engine();
  // Ends every running and waiting request (UNAVAILABLE) and joins the
  // engine's thread; later calls are refused with UNAVAILABLE.
  void Stop();

  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }
  const model::ModelConfig& config() const { return model_->config(); }
  at::ScalarType dtype() const { return model_->dtype(); }
  at::Device device() const { return model_->device(); }
  const EngineOptions& options() const { return options_; }
  absl::Time load_time() const { return load_time_; }
  // The checkpoint's sampling defaults; unset request fields take these.
  const model::SamplingParams& default_params() const { return defaults_.params; }

  // Raw text, tokenized with the tokenizer's special tokens (BOS).
  absl::StatusOr<std::vector<int64_t>> EncodePrompt(const std::string& prompt) const;
  // Messages ([{role, content, ...}]) rendered with the chat template and
  // the generation prompt (or the last message left open to continue).
  absl::StatusOr<std::vector<int64_t>> EncodeChat(const nlohmann::ordered_json& messages,
                                                  bool continue_final_message) const;
  // Completion text, without special tokens.
  absl::StatusOr<std::vector<int64_t>> EncodeCompletion(const std::string& text) const;
  std::string TokenText(int64_t id) const;
  // Where each token of `text` (no special tokens) ends: byte offsets into
  // the decoded text, ascending, clamped to text.size(); equal to offsets
  // into `text` for tokenizers whose decode gives the text back. Offsets
  // fall on UTF-8 character boundaries (a token that ends mid-character
  // shares the next one's end).
  absl::StatusOr<std::vector<int>> TokenEnds(const std::string& text) const;
  int64_t max_context_tokens() const { return max_context_; }

  // Queues a generation. INVALID_ARGUMENT for bad params or a prompt that
  // leaves no room in the context, RESOURCE_EXHAUSTED when the queue is
  // full. Returns the request's handle for Cancel.
  absl::StatusOr<uint64_t> Submit(GenerateInput input, std::shared_ptr<GenerationSink> sink);
  // Stops a request at the next token boundary (its sink gets CANCELLED).
  void Cancel(uint64_t handle);

  // Log-likelihood of each completion after the prompt (teacher forcing).
  absl::StatusOr<std::vector<CompletionScore>> Score(
      const std::vector<int64_t>& prompt_ids, const std::vector<std::vector<int64_t>>& completions,
      const std::string& adapter);

  // Adapters (run on the engine's thread between steps).
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& name, const std::string& dir,
                                          bool pin);
  absl::Status UnloadAdapter(const std::string& name);
  std::vector<AdapterInfo> Adapters() const;

  EngineStats Stats() const;

 private:
  struct Request;
  struct Sequence;

  Engine(std::string name, std::string dir, EngineOptions options, EngineObserver observer);
  // Loads the model and sizes the KV cache, on the engine's thread.
  absl::Status LoadOnThread();
  void Loop();
  // Runs `task` on the engine's thread and waits for it.
  absl::Status RunOnEngine(std::function<absl::Status()> task);
  void RunTasks();
  void ExpireWaiting();
  // Takes waiting requests into groups of prompts of one length, each
  // group within the small-batch kernels' rows; nothing is run yet.
  std::vector<std::vector<std::unique_ptr<Sequence>>> Admit();
  // Acquires the request's adapter. False (the request untouched) when the
  // adapter has no free slot while others run; else *seq is the new sequence,
  // or null when the request was answered (its adapter failed).
  bool StartSequence(std::unique_ptr<Request>& request, std::unique_ptr<Sequence>* seq);
  // Prefills prompts of one length in one forward pass, samples each one's
  // first token and moves each into a free row of the batch (or lets it
  // leave when it is already done or failed).
  void Prefill(std::vector<std::unique_ptr<Sequence>> group);
  // One token for every running sequence, with `group` (may be empty)
  // prefilled in the same forward pass; the group joins the batch after it.
  void DecodeStep(std::vector<std::unique_ptr<Sequence>> group);
  // Logits (on the CPU, fp32) and log-probabilities of each row's last
  // position of `hidden` (B, T, hidden).
  absl::Status LastLogits(const at::Tensor& hidden, at::Tensor* logits, at::Tensor* logprobs) const;
  // A prefill group's forward input, and its prompts' own KV cache.
  absl::StatusOr<model::KvCache> PrefillInput(const std::vector<std::unique_ptr<Sequence>>& group,
                                              model::DecoderInput* in);
  // After a prefill's forward pass (`forward` its outcome): samples each
  // first token, then moves each sequence into a free row of the batch (or
  // lets it leave when it is already done or failed).
  void FinishPrefill(std::vector<std::unique_ptr<Sequence>> group, const model::KvCache* prompts,
                     absl::Status forward, const at::Tensor& logits, const at::Tensor& logprobs,
                     absl::Time now);
  // Removes the sequence in `row` (finished or stopped) and packs the rows.
  void Leave(size_t row, absl::StatusOr<GenerateResult> result);
  void EmitToken(Sequence& seq, const model::StreamedToken& token, absl::Time now);
  void FailAll(const absl::Status& status);

  const std::string name_, dir_;
  EngineOptions options_;
  EngineObserver observer_;
  absl::Time load_time_;
  std::unique_ptr<model::CausalLm> model_;
  text::ModelText text_;
  model::GenerationDefaults defaults_;
  std::unique_ptr<AdapterManager> adapters_;
  int64_t max_context_ = 0;
  int64_t rows_ = 0;
  int64_t weights_bytes_ = 0, parameter_count_ = 0;

  // Engine thread only.
  std::unique_ptr<model::KvCache> cache_;
  std::vector<std::unique_ptr<Sequence>> running_;   // row i of the cache
  std::map<std::string, std::string> adapter_dirs_;  // explicit LoadAdapter paths

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Request>> waiting_;
  std::deque<std::function<void()>> tasks_;
  std::map<uint64_t, bool> live_;  // handles queued or running -> cancelled
  uint64_t next_handle_ = 1;
  bool stopping_ = false;
  std::atomic<int> running_count_{0};
  std::atomic<int64_t> kv_used_positions_{0};
  std::atomic<int64_t> decode_steps_{0}, decode_tokens_{0}, decode_nanos_{0};
  std::atomic<int64_t> prefills_{0}, prefill_tokens_{0}, prefill_nanos_{0};
  std::atomic<int64_t> prefills_with_decode_{0};

  std::thread thread_;  // last
};

// Runs one generation to its end (for the CLI's tests and the unary RPC).
absl::StatusOr<GenerateResult> GenerateAndWait(Engine& engine, GenerateInput input,
                                               std::function<void(uint64_t)> on_handle = nullptr);

}  // namespace switchyard::inference

#endif  // SWITCHYARD_SERVICES_INFERENCE_ENGINE_H_
