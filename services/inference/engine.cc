#include "services/inference/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <future>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/gemv.h"
#include "shared/model/runtime.h"

namespace switchyard::inference {

struct Engine::Request {
  uint64_t handle = 0;
  GenerateInput input;
  std::shared_ptr<GenerationSink> sink;
  std::unique_ptr<model::SequenceDecoder> decoder;
  absl::Time arrival;
};

struct Engine::Sequence {
  std::unique_ptr<Request> request;
  int adapter = model::kNoAdapter;
  absl::Time admitted, first_token, last_token;
  int64_t generated = 0;  // tokens handed to the sink
  int64_t positions = 0;  // KV positions it holds
  double inter_token_sum = 0;
};

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// Room past the longest sequence, so compaction runs once in this many steps
// rather than at every step once a long sequence fills the cache.
int64_t Slack(int64_t max_context) { return std::max<int64_t>(64, max_context / 4); }

}  // namespace

Engine::Engine(std::string name, std::string dir, EngineOptions options, EngineObserver observer)
    : name_(std::move(name)),
      dir_(std::move(dir)),
      options_(std::move(options)),
      observer_(std::move(observer)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& name,
                                                     const std::string& dir, EngineOptions options,
                                                     EngineObserver observer) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be at least 1, got ", options.max_batch_size));
  }
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_waiting must not be negative, got ", options.max_waiting));
  }
  std::unique_ptr<Engine> e(new Engine(name, dir, std::move(options), std::move(observer)));
  // Everything LibTorch does for this model runs on the engine's thread,
  // loading included. OpenMP keeps a team of workers per thread that ever ran
  // a parallel region; with more of them than cores its workers sleep between
  // regions instead of spinning, and each of the hundreds of small parallel
  // products of a decode step pays a wake-up (decoding ran single-core fast).
  std::promise<absl::Status> loaded;
  std::future<absl::Status> ready = loaded.get_future();
  Engine* raw = e.get();
  e->thread_ = std::thread([raw, &loaded] {
    absl::Status s = raw->LoadOnThread();
    const bool ok = s.ok();
    loaded.set_value(std::move(s));
    if (ok) raw->Loop();
  });
  absl::Status status = ready.get();
  if (!status.ok()) {
    e->thread_.join();
    return status;
  }
  SY_LOG(kInfo, "inference") << "loaded models/" << name << " from " << dir << ": "
                             << e->parameter_count_ << " parameters, "
                             << model::DtypeName(e->dtype()) << " on " << e->device().str() << ", "
                             << e->rows_ << " rows x " << e->max_context_ << " tokens";
  return e;
}

absl::Status Engine::LoadOnThread() {
  at::set_num_threads(options_.threads > 0
                          ? options_.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const EngineOptions& o = options_;
  model::LoadOptions load;
  SY_ASSIGN_OR_RETURN(load.device, model::ParseDevice(o.device.empty() ? "auto" : o.device));
  if (o.dtype.empty() || o.dtype == "auto") {
    // bf16 on GPUs; float32 on CPUs, as `model generate` computes, so greedy
    // output matches it (--dtype bfloat16 for AVX-512 BF16 CPUs).
    load.dtype = load.device.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else {
    SY_ASSIGN_OR_RETURN(load.dtype, model::ParseDtype(o.dtype));
  }
  load.serving = true;
  SY_ASSIGN_OR_RETURN(model_, model::CausalLm::Load(dir_, load));
  SY_ASSIGN_OR_RETURN(text_, text::LoadModelText(dir_));
  SY_ASSIGN_OR_RETURN(defaults_, model::LoadGenerationDefaults(dir_, model_->config()));
  const model::ModelConfig& config = model_->config();
  max_context_ = config.max_position_embeddings;
  if (o.max_context_tokens > 0) max_context_ = std::min(max_context_, o.max_context_tokens);
  parameter_count_ = model_->ParameterCount();
  weights_bytes_ = model_->WeightBytes();
  const int64_t capacity = max_context_ + Slack(max_context_);
  const int64_t per_position =
      2 * config.num_layers * config.num_kv_heads * config.head_dim * c10::elementSize(load.dtype);
  rows_ = std::min<int64_t>(o.max_batch_size, o.kv_cache_bytes / (capacity * per_position));
  if (rows_ < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a KV cache budget of ", o.kv_cache_bytes, " bytes holds no sequence of ",
                     max_context_, " tokens (", capacity * per_position,
                     " bytes each with slack); raise the budget or lower the maximum context"));
  }
  SY_ASSIGN_OR_RETURN(model::KvCache cache,
                      model::KvCache::Create(config, rows_, capacity, load.dtype, load.device));
  cache_ = std::make_unique<model::KvCache>(std::move(cache));
  adapters_ = std::make_unique<AdapterManager>(
      model_.get(),
      [this](const std::string& adapter) -> absl::StatusOr<std::string> {
        if (auto it = adapter_dirs_.find(adapter); it != adapter_dirs_.end()) return it->second;
        if (options_.resolve_adapter) return options_.resolve_adapter(adapter);
        return absl::NotFoundError(absl::StrCat("adapter \"", adapter, "\" is unknown"));
      },
      o.max_adapters);
  load_time_ = absl::Now();
  return absl::OkStatus();
}

Engine::~Engine() { Stop(); }

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::vector<int64_t>> Engine::EncodePrompt(const std::string& prompt) const {
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> ids, text_.tokenizer->Encode(prompt, true));
  return std::vector<int64_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int64_t>> Engine::EncodeChat(const nlohmann::ordered_json& messages,
                                                        bool continue_final_message) const {
  if (text_.chat_template == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("models/", name_,
                     " has no chat template (tokenizer_config.json chat_template); send a "
                     "raw prompt"));
  }
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                      text::EncodeChatPrompt(text_, messages, continue_final_message));
  return std::vector<int64_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int64_t>> Engine::EncodeCompletion(const std::string& text) const {
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> ids, text_.tokenizer->Encode(text, false));
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string Engine::TokenText(int64_t id) const {
  auto text = text_.tokenizer->Decode({static_cast<int32_t>(id)}, false);
  return text.ok() ? *text : std::string();
}

absl::StatusOr<std::vector<int>> Engine::TokenEnds(const std::string& text) const {
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> ids, text_.tokenizer->Encode(text, false));
  text::DecodeStream stream(text_.tokenizer.get(), false);
  std::vector<int> ends;
  ends.reserve(ids.size());
  size_t decoded = 0;
  for (int32_t id : ids) {
    SY_ASSIGN_OR_RETURN(std::string piece, stream.Step(id));
    decoded += piece.size();
    ends.push_back(static_cast<int>(std::min(decoded, text.size())));
  }
  if (!ends.empty()) ends.back() = static_cast<int>(text.size());
  // A token that ends inside a character released no text: it shares the
  // end of the token that completes the character.
  for (size_t i = ends.size() - (ends.empty() ? 0 : 1); i-- > 0;) {
    if (ends[i] == (i == 0 ? 0 : ends[i - 1])) ends[i] = ends[i + 1];
  }
  return ends;
}

absl::StatusOr<uint64_t> Engine::Submit(GenerateInput input, std::shared_ptr<GenerationSink> sink) {
  const int64_t prompt = static_cast<int64_t>(input.prompt_ids.size());
  if (prompt >= max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt, " tokens; models/",
                                                   name_, " serves at most ", max_context_,
                                                   " (prompt and generation)"));
  }
  // Never past the context: the sequence ends with "length" when it is full.
  input.params.max_new_tokens = std::min(input.params.max_new_tokens, max_context_ - prompt);
  auto request = std::make_unique<Request>();
  model::GenerationRequest g;
  g.prompt_ids = input.prompt_ids;
  g.params = input.params;
  SY_ASSIGN_OR_RETURN(request->decoder,
                      model::SequenceDecoder::Create(g, text_.tokenizer.get(),
                                                     defaults_.eos_token_ids, config().vocab_size));
  request->input = std::move(input);
  request->sink = std::move(sink);
  request->arrival = absl::Now();
  uint64_t handle = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError(absl::StrCat("models/", name_, " is unloading"));
    const int64_t free_rows = std::max<int64_t>(0, rows_ - running_count_.load());
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting + free_rows) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "models/", name_, ": ", waiting_.size(), " requests are already waiting for a batch ",
          "slot (the queue's limit); retry later or on another replica"));
    }
    handle = request->handle = next_handle_++;
    live_[handle] = false;
    waiting_.push_back(std::move(request));
  }
  wake_.notify_all();
  return handle;
}

void Engine::Cancel(uint64_t handle) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(handle);
    if (it == live_.end()) return;  // finished already
    it->second = true;
  }
  wake_.notify_all();
}

absl::Status Engine::RunOnEngine(std::function<absl::Status()> task) {
  auto done = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> result = done->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError(absl::StrCat("models/", name_, " is unloading"));
    tasks_.push_back([task = std::move(task), done] {
      absl::Status s = model::TorchCall("engine task", task);
      done->set_value(s);
    });
  }
  wake_.notify_all();
  return result.get();
}

absl::StatusOr<std::vector<CompletionScore>> Engine::Score(
    const std::vector<int64_t>& prompt_ids, const std::vector<std::vector<int64_t>>& completions,
    const std::string& adapter) {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (size_t i = 0; i < completions.size(); ++i) {
    if (completions[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("completions[", i, "] has no tokens"));
    }
    const int64_t total = static_cast<int64_t>(prompt_ids.size() + completions[i].size());
    if (total > max_context_) {
      return absl::InvalidArgumentError(absl::StrCat("prompt and completions[", i, "] have ", total,
                                                     " tokens; models/", name_, " serves at most ",
                                                     max_context_));
    }
  }
  std::vector<CompletionScore> out(completions.size());
  SY_RETURN_IF_ERROR(RunOnEngine([&]() -> absl::Status {
    int id = model::kNoAdapter;
    if (!adapter.empty()) {
      SY_ASSIGN_OR_RETURN(id, adapters_->Acquire(adapter));
    }
    c10::InferenceMode inference;
    absl::Status status;
    const int64_t P = static_cast<int64_t>(prompt_ids.size());
    for (size_t i = 0; i < completions.size() && status.ok(); ++i) {
      std::vector<int64_t> ids = prompt_ids;
      ids.insert(ids.end(), completions[i].begin(), completions[i].end());
      model::DecoderInput in;
      in.input_ids = at::tensor(ids, at::kLong).view({1, -1});
      if (id != model::kNoAdapter) in.adapters = {id};
      auto hidden = model_->Hidden(in);
      if (!hidden.ok()) {
        status = hidden.status();
        break;
      }
      const int64_t C = static_cast<int64_t>(completions[i].size());
      at::Tensor logits = model_->Logits(hidden->narrow(1, P - 1, C)[0]).to(at::kCPU, at::kFloat);
      at::Tensor logprobs = at::log_softmax(logits, -1);
      at::Tensor best = logits.argmax(-1);
      for (int64_t t = 0; t < C; ++t) {
        const int64_t token = completions[i][t];
        out[i].token_ids.push_back(token);
        out[i].logprobs.push_back(logprobs[t][token].item<double>());
        if (best[t].item<int64_t>() == token) ++out[i].greedy_matches;
      }
    }
    if (!adapter.empty()) adapters_->Release(adapter);
    return status;
  }));
  return out;
}

absl::StatusOr<AdapterInfo> Engine::LoadAdapter(const std::string& name, const std::string& dir,
                                                bool pin) {
  AdapterInfo info;
  SY_RETURN_IF_ERROR(RunOnEngine([&]() -> absl::Status {
    const bool named = !dir.empty() && adapter_dirs_.count(name) == 0;
    if (!dir.empty()) {
      for (const AdapterInfo& a : adapters_->List()) {
        if (a.name == name && a.dir != dir) {
          return absl::AlreadyExistsError(
              absl::StrCat("adapter \"", name, "\" is loaded from ", a.dir, "; unload it first"));
        }
      }
      adapter_dirs_[name] = dir;
    }
    absl::StatusOr<AdapterInfo> loaded = adapters_->Load(name, pin);
    if (!loaded.ok()) {
      if (named) adapter_dirs_.erase(name);  // a bad path is not kept
      return loaded.status();
    }
    info = *loaded;
    return absl::OkStatus();
  }));
  return info;
}

absl::Status Engine::UnloadAdapter(const std::string& name) {
  return RunOnEngine([&] { return adapters_->Unload(name); });
}

std::vector<AdapterInfo> Engine::Adapters() const { return adapters_->List(); }

EngineStats Engine::Stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.waiting = static_cast<int>(waiting_.size());
  }
  s.running = running_count_.load();
  s.rows = static_cast<int>(rows_);
  const int64_t per_position = cache_->BytesPerPosition();
  s.kv_cache_bytes = rows_ * cache_->capacity() * per_position;
  s.kv_used_bytes = kv_used_positions_.load() * per_position;
  s.weights_bytes = weights_bytes_;
  s.parameter_count = parameter_count_;
  s.max_context_tokens = max_context_;
  s.decode_steps = decode_steps_.load();
  s.decode_tokens = decode_tokens_.load();
  s.decode_seconds = static_cast<double>(decode_nanos_.load()) * 1e-9;
  s.prefills = prefills_.load();
  s.prefills_with_decode = prefills_with_decode_.load();
  s.prefill_tokens = prefill_tokens_.load();
  s.prefill_seconds = static_cast<double>(prefill_nanos_.load()) * 1e-9;
  return s;
}

void Engine::Loop() {
  c10::InferenceMode inference;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stopping_ || !tasks_.empty() || !waiting_.empty() || !running_.empty();
      });
      if (stopping_) break;
    }
    RunTasks();
    ExpireWaiting();
    std::vector<std::vector<std::unique_ptr<Sequence>>> groups = Admit();
    // The last group rides along with the decode step when its rows and the
    // batch's fit the small-batch kernels together; the others prefill first.
    std::vector<std::unique_ptr<Sequence>> along;
    if (!groups.empty()) {
      along = std::move(groups.back());
      groups.pop_back();
    }
    for (auto& group : groups) Prefill(std::move(group));
    const int64_t prompt_rows =
        along.empty()
            ? 0
            : static_cast<int64_t>(along.size() * along[0]->request->input.prompt_ids.size());
    if (!along.empty() &&
        (running_.empty() || static_cast<int64_t>(running_.size()) + prompt_rows >
                                 model::SmallBatchLinearMaxRows(model_->dtype()))) {
      Prefill(std::move(along));
      along.clear();
    }
    if (!running_.empty()) DecodeStep(std::move(along));
    int64_t used = 0;
    for (const auto& seq : running_) used += seq->positions;
    kv_used_positions_ = used;
    running_count_ = static_cast<int>(running_.size());
    if (observer_.step) {
      const EngineStats s = Stats();
      observer_.step(
          s.running, s.waiting,
          s.kv_cache_bytes > 0 ? static_cast<double>(s.kv_used_bytes) / s.kv_cache_bytes : 0.0,
          static_cast<int>(adapters_->List().size()));
    }
  }
  FailAll(absl::UnavailableError(absl::StrCat("models/", name_, " was unloaded")));
}

void Engine::RunTasks() {
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
}

void Engine::ExpireWaiting() {
  std::vector<std::unique_ptr<Request>> gone;
  std::vector<absl::Status> why;
  const absl::Time now = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Request& r = **it;
      absl::Status s;
      if (auto live = live_.find(r.handle); live != live_.end() && live->second) {
        s = absl::CancelledError("cancelled while waiting for a batch slot");
      } else if (now >= r.input.deadline) {
        s = absl::DeadlineExceededError("the deadline passed while waiting for a batch slot");
      }
      if (s.ok()) {
        ++it;
        continue;
      }
      why.push_back(s);
      live_.erase(r.handle);
      gone.push_back(std::move(*it));
      it = waiting_.erase(it);
    }
  }
  for (size_t i = 0; i < gone.size(); ++i) gone[i]->sink->OnDone(why[i]);
}

std::vector<std::vector<std::unique_ptr<Engine::Sequence>>> Engine::Admit() {
  // Prefill stalls the running sequences: past a budget of prompt tokens per
  // turn the rest wait for the next turn (one decode step later).
  int64_t prefilled = 0;
  // Requests whose adapter finds every slot busy wait, in order, while the
  // ones behind them are admitted.
  std::deque<std::unique_ptr<Request>> deferred;
  // Prompts of one length prefill together, one forward pass for the group.
  std::map<int64_t, std::vector<std::unique_ptr<Sequence>>> groups;
  int64_t admitted = static_cast<int64_t>(running_.size());
  while (admitted < rows_ && (prefilled < options_.prefill_tokens_per_step || admitted == 0)) {
    std::unique_ptr<Request> request;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty()) break;
      request = std::move(waiting_.front());
      waiting_.pop_front();
    }
    const int64_t tokens = static_cast<int64_t>(request->input.prompt_ids.size());
    std::unique_ptr<Sequence> seq;
    if (!StartSequence(request, &seq)) {
      deferred.push_back(std::move(request));
      continue;
    }
    if (seq == nullptr) continue;  // answered (its adapter failed)
    prefilled += tokens;
    ++admitted;
    running_count_ = static_cast<int>(admitted);  // no longer waiting
    groups[tokens].push_back(std::move(seq));
  }
  std::vector<std::vector<std::unique_ptr<Sequence>>> parts;
  for (auto& [length, group] : groups) {
    // A group's rows stay within the tiled kernels' reach, so a prompt's keys
    // and values do not depend on which prompts came with it.
    const int64_t most = std::max<int64_t>(
        1, model::SmallBatchLinearMaxRows(model_->dtype()) / std::max<int64_t>(1, length));
    for (size_t i = 0; i < group.size(); i += most) {
      std::vector<std::unique_ptr<Sequence>> part;
      for (size_t j = i; j < std::min(group.size(), i + most); ++j)
        part.push_back(std::move(group[j]));
      parts.push_back(std::move(part));
    }
  }
  if (deferred.empty()) return parts;
  std::lock_guard<std::mutex> lock(mu_);
  while (!deferred.empty()) {
    waiting_.push_front(std::move(deferred.back()));
    deferred.pop_back();
  }
  return parts;
}

bool Engine::StartSequence(std::unique_ptr<Request>& request, std::unique_ptr<Sequence>* out) {
  const std::string adapter = request->input.adapter;
  auto seq = std::make_unique<Sequence>();
  if (!adapter.empty()) {
    absl::StatusOr<int> id = adapters_->Acquire(adapter);
    if (!id.ok()) {
      // Every adapter slot serves a running request: wait for one to end.
      if (absl::IsResourceExhausted(id.status()) && !running_.empty()) return false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        live_.erase(request->handle);
      }
      request->sink->OnDone(id.status());
      return true;
    }
    seq->adapter = *id;
  }
  seq->request = std::move(request);
  seq->admitted = absl::Now();
  *out = std::move(seq);
  return true;
}

absl::StatusOr<model::KvCache> Engine::PrefillInput(
    const std::vector<std::unique_ptr<Sequence>>& group, model::DecoderInput* in) {
  const int64_t n = static_cast<int64_t>(group.size());
  const int64_t P = static_cast<int64_t>(group[0]->request->input.prompt_ids.size());
  std::vector<int64_t> ids;
  ids.reserve(n * P);
  bool any_adapter = false;
  for (const auto& seq : group) {
    const std::vector<int64_t>& prompt = seq->request->input.prompt_ids;
    ids.insert(ids.end(), prompt.begin(), prompt.end());
    in->adapters.push_back(seq->adapter);
    any_adapter = any_adapter || seq->adapter != model::kNoAdapter;
    if (observer_.prompt_tokens) observer_.prompt_tokens(seq->request->input.adapter, P);
  }
  if (!any_adapter) in->adapters.clear();
  in->input_ids = at::tensor(ids, at::kLong).view({n, P});
  return model::KvCache::Create(config(), n, P, model_->dtype(), model_->device());
}

void Engine::Prefill(std::vector<std::unique_ptr<Sequence>> group) {
  const absl::Time prefill_start = absl::Now();
  model::DecoderInput in;
  absl::StatusOr<model::KvCache> prompts = PrefillInput(group, &in);
  absl::Status forward = prompts.status();
  at::Tensor logits, logprobs;
  if (forward.ok()) {
    absl::StatusOr<at::Tensor> hidden = model_->Hidden(in, &*prompts);
    forward = hidden.status();
    if (forward.ok()) forward = LastLogits(*hidden, &logits, &logprobs);
  }
  const absl::Time now = absl::Now();
  prefill_nanos_ += absl::ToInt64Nanoseconds(now - prefill_start);
  FinishPrefill(std::move(group), prompts.ok() ? &*prompts : nullptr, forward, logits, logprobs,
                now);
}

absl::Status Engine::LastLogits(const at::Tensor& hidden, at::Tensor* logits,
                                at::Tensor* logprobs) const {
  return model::TorchCall("LM head", [&] {
    *logits = model_->Logits(hidden.select(1, hidden.size(1) - 1)).to(at::kCPU, at::kFloat);
    *logits = logits->contiguous();
    *logprobs = at::log_softmax(*logits, -1);
  });
}

void Engine::FinishPrefill(std::vector<std::unique_ptr<Sequence>> group,
                           const model::KvCache* prompts, absl::Status forward,
                           const at::Tensor& logits, const at::Tensor& logprobs, absl::Time now) {
  const int64_t n = static_cast<int64_t>(group.size());
  const int64_t P = static_cast<int64_t>(group[0]->request->input.prompt_ids.size());
  prefills_ += n;
  prefill_tokens_ += n * P;
  std::vector<absl::Status> status(n, forward);
  for (int64_t i = 0; i < n && forward.ok(); ++i) {
    Sequence& seq = *group[i];
    absl::StatusOr<model::StreamedToken> token = seq.request->decoder->Step(logits[i], logprobs[i]);
    status[i] = token.status();
    if (token.ok()) EmitToken(seq, *token, now);
  }
  for (int64_t i = 0; i < n; ++i) {
    std::unique_ptr<Sequence>& seq = group[i];
    seq->positions = P;
    if (status[i].ok() && !seq->request->decoder->finished()) {
      status[i] = cache_->InsertRow(static_cast<int64_t>(running_.size()), *prompts, i);
      if (status[i].ok()) {
        running_.push_back(std::move(seq));
        continue;
      }
    }
    // Done after its first token, or failed: it never joins the batch.
    running_.push_back(std::move(seq));
    const size_t row = running_.size() - 1;
    if (status[i].ok()) {
      Leave(row, GenerateResult{});
    } else {
      Leave(row, status[i]);
    }
  }
  running_count_ = static_cast<int>(running_.size());
}

void Engine::EmitToken(Sequence& seq, const model::StreamedToken& token, absl::Time now) {
  const std::string& adapter = seq.request->input.adapter;
  const int64_t kept = static_cast<int64_t>(seq.request->decoder->generation().token_ids.size());
  if (kept == seq.generated && token.text.empty()) return;  // a stop token: not output
  if (seq.generated == 0) {
    seq.first_token = now;
    if (observer_.time_to_first_token) {
      observer_.time_to_first_token(adapter, Seconds(now - seq.request->arrival));
    }
  } else {
    const double gap = Seconds(now - seq.last_token);
    seq.inter_token_sum += gap;
    if (observer_.inter_token) observer_.inter_token(adapter, gap);
  }
  seq.last_token = now;
  if (kept > seq.generated && observer_.generation_tokens) {
    observer_.generation_tokens(adapter, kept - seq.generated);
  }
  seq.generated = kept;
  seq.request->sink->OnToken(token);
}

void Engine::DecodeStep(std::vector<std::unique_ptr<Sequence>> group) {
  const int64_t B = static_cast<int64_t>(running_.size());
  const absl::Time start = absl::Now();
  absl::Status status;
  // The group's prompts, prefilled in this step's forward pass.
  model::DecoderInput prompt_in;
  std::optional<model::KvCache> prompts;
  absl::Status prompt_status;
  at::Tensor prompt_logits, prompt_logprobs;
  int64_t prompt_rows = 0;
  if (!group.empty()) {
    absl::StatusOr<model::KvCache> created = PrefillInput(group, &prompt_in);
    prompt_status = created.status();
    if (created.ok()) {
      prompts = *std::move(created);
      prompt_rows = prompt_in.input_ids.numel();
    }
  }
  // Every step attends over the cache's whole length, so positions no row
  // uses any more (left behind by sequences that left) are dropped once they
  // are a quarter of it, and whenever the cache is full.
  int64_t longest = 0;
  for (const auto& seq : running_) longest = std::max(longest, seq->positions);
  const int64_t dead = cache_->length() - longest;
  if (cache_->length() + 1 > cache_->capacity() ||
      dead >= std::max<int64_t>(16, cache_->length() / 4)) {
    status = cache_->Compact();
  }
  at::Tensor logits, logprobs;
  if (status.ok()) {
    std::vector<int64_t> ids(B);
    model::DecoderInput in;
    bool any_adapter = false;
    for (int64_t r = 0; r < B; ++r) {
      ids[r] = running_[r]->request->decoder->next_input();
      in.adapters.push_back(running_[r]->adapter);
      any_adapter = any_adapter || running_[r]->adapter != model::kNoAdapter;
    }
    if (!any_adapter) in.adapters.clear();
    in.input_ids = at::tensor(ids, at::kLong).view({B, 1});
    at::Tensor hidden, prompt_hidden;
    if (prompts) {
      absl::StatusOr<std::pair<at::Tensor, at::Tensor>> both =
          model_->HiddenPair(in, cache_.get(), prompt_in, &*prompts);
      status = both.status();
      if (both.ok()) std::tie(hidden, prompt_hidden) = *std::move(both);
    } else {
      absl::StatusOr<at::Tensor> alone = model_->Hidden(in, cache_.get());
      status = alone.status();
      if (alone.ok()) hidden = *std::move(alone);
    }
    if (status.ok()) status = LastLogits(hidden, &logits, &logprobs);
    if (status.ok() && prompt_hidden.defined()) {
      status = LastLogits(prompt_hidden, &prompt_logits, &prompt_logprobs);
    }
  }
  const absl::Time now = absl::Now();
  // The prompts share this step's outcome unless they failed before it.
  if (prompt_status.ok()) prompt_status = status;
  if (!status.ok()) {
    SY_LOG(kError, "inference") << "models/" << name_ << ": decode step failed: " << status;
    for (int64_t r = B - 1; r >= 0; --r) Leave(r, status);
    if (!group.empty()) {
      FinishPrefill(std::move(group), nullptr, prompt_status, prompt_logits, prompt_logprobs, now);
    }
    return;
  }
  // A shared pass's time is split between decode and prefill by their rows.
  const int64_t nanos = absl::ToInt64Nanoseconds(now - start);
  const int64_t prefill_share = nanos * prompt_rows / (prompt_rows + B);
  ++decode_steps_;
  decode_tokens_ += B;
  decode_nanos_ += nanos - prefill_share;
  prefill_nanos_ += prefill_share;
  if (prompts) prefills_with_decode_ += static_cast<int64_t>(group.size());
  std::vector<absl::Status> failed(B);
  for (int64_t r = 0; r < B; ++r) {
    Sequence& seq = *running_[r];
    ++seq.positions;
    absl::StatusOr<model::StreamedToken> token = seq.request->decoder->Step(logits[r], logprobs[r]);
    if (!token.ok()) {
      failed[r] = token.status();
      continue;
    }
    EmitToken(seq, *token, now);
  }
  std::map<uint64_t, bool> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& seq : running_) {
      auto live = live_.find(seq->request->handle);
      if (live != live_.end() && live->second) cancelled[seq->request->handle] = true;
    }
  }
  for (int64_t r = B - 1; r >= 0; --r) {
    Sequence& seq = *running_[r];
    if (!failed[r].ok()) {
      Leave(r, failed[r]);
    } else if (seq.request->decoder->finished()) {
      Leave(r, GenerateResult{});
    } else if (cancelled.count(seq.request->handle) > 0) {
      Leave(r, absl::CancelledError("cancelled by the client"));
    } else if (now >= seq.request->input.deadline) {
      Leave(r, absl::DeadlineExceededError(
                   absl::StrCat("the deadline passed after ", seq.generated, " tokens")));
    }
  }
  if (!group.empty()) {
    FinishPrefill(std::move(group), prompts ? &*prompts : nullptr, prompt_status, prompt_logits,
                  prompt_logprobs, now);
  }
}

void Engine::Leave(size_t row, absl::StatusOr<GenerateResult> result) {
  std::unique_ptr<Sequence> seq = std::move(running_[row]);
  const size_t last = running_.size() - 1;
  absl::Status moved = cache_->ResetRow(static_cast<int64_t>(row));
  if (moved.ok() && row != last) {
    moved = cache_->MoveRow(static_cast<int64_t>(last), static_cast<int64_t>(row));
    running_[row] = std::move(running_[last]);
  }
  running_.pop_back();
  running_count_ = static_cast<int>(running_.size());
  if (!moved.ok()) SY_LOG(kError, "inference") << "models/" << name_ << ": " << moved;
  Request& request = *seq->request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(request.handle);
  }
  if (!request.input.adapter.empty() && seq->adapter != model::kNoAdapter) {
    adapters_->Release(request.input.adapter);
  }
  const absl::Time now = absl::Now();
  if (observer_.e2e) observer_.e2e(request.input.adapter, Seconds(now - request.arrival));
  if (result.ok()) {
    result->generation = request.decoder->Take();
    Timings& t = result->timings;
    t.queue_seconds = Seconds(seq->admitted - request.arrival);
    t.time_to_first_token_seconds =
        seq->generated > 0 ? Seconds(seq->first_token - request.arrival) : 0;
    t.mean_inter_token_seconds =
        seq->generated > 1 ? seq->inter_token_sum / static_cast<double>(seq->generated - 1) : 0;
    t.total_seconds = Seconds(now - request.arrival);
  }
  request.sink->OnDone(std::move(result));
}

void Engine::FailAll(const absl::Status& status) {
  for (int64_t r = static_cast<int64_t>(running_.size()) - 1; r >= 0; --r) Leave(r, status);
  std::deque<std::unique_ptr<Request>> waiting;
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
    tasks.swap(tasks_);
  }
  for (auto& r : waiting) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_.erase(r->handle);
    }
    r->sink->OnDone(status);
  }
  for (auto& task : tasks) task();  // they finish; nothing new is queued past stopping_
}

namespace {

class WaitingSink : public GenerationSink {
 public:
  void OnToken(const model::StreamedToken&) override {}
  void OnDone(absl::StatusOr<GenerateResult> result) override {
    done_.set_value(std::move(result));
  }
  std::future<absl::StatusOr<GenerateResult>> Future() { return done_.get_future(); }

 private:
  std::promise<absl::StatusOr<GenerateResult>> done_;
};

}  // namespace

absl::StatusOr<GenerateResult> GenerateAndWait(Engine& engine, GenerateInput input,
                                               std::function<void(uint64_t)> on_handle) {
  auto sink = std::make_shared<WaitingSink>();
  auto future = sink->Future();
  SY_ASSIGN_OR_RETURN(uint64_t handle, engine.Submit(std::move(input), sink));
  if (on_handle) on_handle(handle);
  return future.get();
}

}  // namespace switchyard::inference
