#include "services/training/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/init.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using model::TorchCall;

constexpr char kStateFile[] = "trainer_state.json";
constexpr char kOptimizerFile[] = "optimizer.safetensors";

// Layer index of a decoder parameter name ("model.layers.3.mlp..." or GPT-2's
// "transformer.h.3.attn..."), or -1.
int LayerOf(const std::string& name) {
  for (const char* marker : {".layers.", ".h."}) {
    size_t at = name.find(marker);
    if (at == std::string::npos) continue;
    size_t begin = at + std::strlen(marker), end = name.find('.', begin);
    int layer;
    if (absl::SimpleAtoi(name.substr(begin, end - begin), &layer)) return layer;
  }
  return -1;
}

bool IsEmbedding(const std::string& name) {
  return absl::StrContains(name, "embed_tokens") || absl::StrContains(name, ".wte.") ||
         absl::StrContains(name, ".wpe.") || absl::StartsWith(name, "wte.") ||
         absl::StartsWith(name, "wpe.");
}

uint64_t DropoutSeed(uint64_t seed, int64_t step, int64_t micro) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 1000003ull +
         static_cast<uint64_t>(micro);
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// The mean of each field over the logged steps.
ReinforcementMetrics MeanOf(const std::vector<ReinforcementMetrics>& steps) {
  ReinforcementMetrics m;
  const double n = static_cast<double>(steps.size());
  for (const ReinforcementMetrics& s : steps) {
    m.reward_mean += s.reward_mean / n;
    m.reward_std += s.reward_std / n;
    m.kl += s.kl / n;
    m.completion_length_mean += s.completion_length_mean / n;
    m.clip_ratio += s.clip_ratio / n;
    for (const auto& [name, r] : s.grader_rewards) m.grader_rewards[name] += r / n;
  }
  return m;
}

}  // namespace

int64_t TrainerSetup::train_count() const {
  switch (spec.method) {
    case Method::kDpo:
      return static_cast<int64_t>(train_pairs.size());
    case Method::kReinforcement:
      return static_cast<int64_t>(train_prompts.size());
    case Method::kSupervised:
      break;
  }
  return static_cast<int64_t>(train.size());
}

int64_t TrainerSetup::validation_count() const {
  switch (spec.method) {
    case Method::kDpo:
      return static_cast<int64_t>(validation_pairs.size());
    case Method::kReinforcement:
      return static_cast<int64_t>(validation_prompts.size());
    case Method::kSupervised:
      break;
  }
  return static_cast<int64_t>(validation.size());
}

std::vector<int64_t> TrainerSetup::TrainLengths() const {
  std::vector<int64_t> lengths;
  for (const SftExample& ex : train) lengths.push_back(static_cast<int64_t>(ex.ids.size()));
  for (const PreferenceExample& p : train_pairs) {
    lengths.push_back(static_cast<int64_t>(std::max(p.chosen.ids.size(), p.rejected.ids.size())));
  }
  for (const RlExample& p : train_prompts) {
    lengths.push_back(static_cast<int64_t>(p.prompt_ids.size()));
  }
  return lengths;
}

struct Trainer::State {
  int64_t step = 0;
  int64_t tokens = 0;
  double train_loss = 0;
  std::optional<TrainMetrics> last_train;
  std::optional<EvalMetrics> last_eval;
  std::optional<EvalMetrics> best_eval;
  int evals_since_best = 0;
  std::string best_checkpoint;  // id of the checkpoint saved at best_eval
};

Trainer::Trainer(TrainerSetup setup) : setup_(std::move(setup)) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainerSetup setup) {
  std::unique_ptr<Trainer> t(new Trainer(std::move(setup)));
  SY_RETURN_IF_ERROR(t->Prepare());
  return t;
}

absl::Status Trainer::Prepare() {
  const JobSpec& spec = setup_.spec;
  const Hyperparameters& hp = spec.hyperparameters;
  model::CausalLm& lm = *setup_.model;
  lora_ = spec.adapter.kind != AdapterKind::kFull;
  std::vector<TrainableParam> params;
  if (lora_) {
    if (setup_.start_adapter) {
      SY_ASSIGN_OR_RETURN(adapter_id_, lm.AddAdapter("train", *setup_.start_adapter));
    } else {
      const LoraSpec& l = spec.adapter.lora;
      model::LoraConfig c;
      c.r = l.r.value_or(8);
      c.alpha = l.alpha.value_or(2.0 * c.r);
      c.dropout = l.dropout.value_or(0);
      c.target_modules = l.target_modules;
      c.layers_to_transform.assign(l.layers.begin(), l.layers.end());
      c.use_rslora = l.rslora;
      c.base_model_name_or_path = setup_.base_model_id;
      absl::StatusOr<int> id = lm.CreateAdapter("train", c, spec.seed.value_or(0));
      if (!id.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("adapter.lora: ", id.status().message()));
      }
      adapter_id_ = *id;
    }
    SY_ASSIGN_OR_RETURN(std::vector<at::Tensor> ab, lm.AdapterParameters("train"));
    for (size_t i = 0; i < ab.size(); ++i) {
      ab[i].requires_grad_(true);
      params.push_back({absl::StrCat("lora.", i), ab[i], true});
    }
  } else {
    const FullSpec& f = spec.adapter.full;
    for (int layer : f.frozen_layers) {
      if (layer < 0 || layer >= lm.config().num_layers) {
        return absl::InvalidArgumentError(absl::StrCat("adapter.full.frozen_layers: layer ", layer,
                                                       " is outside [0, ", lm.config().num_layers,
                                                       ")"));
      }
    }
    for (auto& [name, p] : lm.NamedParameters()) {
      const int layer = LayerOf(name);
      const bool frozen = (f.freeze_embeddings && IsEmbedding(name)) ||
                          (layer >= 0 && std::find(f.frozen_layers.begin(), f.frozen_layers.end(),
                                                   layer) != f.frozen_layers.end());
      if (frozen) continue;
      p.requires_grad_(true);
      params.push_back({name, p, p.dim() >= 2});
    }
  }
  if (params.empty()) return absl::InvalidArgumentError("adapter: nothing is left to train");
  if (reinforcement()) {
    if (!spec.reinforcement || setup_.text == nullptr || setup_.text->tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "reinforcement: needs the grader settings and the model's tokenizer");
    }
    if (!lora_ && spec.reinforcement->kl_beta.value_or(0) > 0 &&
        setup_.reference_model == nullptr) {
      return absl::InvalidArgumentError(
          "reinforcement.kl_beta: full fine-tuning with a KL penalty needs a frozen reference "
          "model");
    }
  }
  if (dpo() && !lora_ && !spec.dpo.precompute_reference_logprobs.value_or(false) &&
      setup_.reference_model == nullptr) {
    return absl::InvalidArgumentError(
        "dpo.precompute_reference_logprobs: full fine-tuning needs the reference precomputed or a "
        "frozen reference model");
  }
  AdamWOptions o;
  o.weight_decay = hp.weight_decay.value_or(0);
  optimizer_ = std::make_unique<AdamW>(std::move(params), o);

  plan_ = std::make_unique<BatchPlan>(PlanFor(spec, setup_.TrainLengths()));
  if (plan_->total_steps() == 0) return absl::InvalidArgumentError("training_dataset: no examples");
  return absl::OkStatus();
}

model::DecoderInput Trainer::Input(const Batch& batch, uint64_t dropout_seed) const {
  const at::Device device = setup_.model->device();
  model::DecoderInput in;
  in.input_ids = batch.input_ids.to(device);
  in.segment_ids = batch.segment_ids.to(device);
  if (lora_) in.adapters.assign(batch.input_ids.size(0), adapter_id_);
  in.recompute_layers = setup_.spec.hyperparameters.gradient_checkpointing.value_or(false);
  if (device.is_cpu()) {
    in.generator = at::detail::createCPUGenerator(dropout_seed);
  } else if (in.recompute_layers) {
    // A seeded copy of the device's generator, which recomputed layers replay.
    in.generator = at::globalContext().defaultGenerator(device).clone();
    in.generator.set_current_seed(dropout_seed);
  }
  return in;
}

absl::StatusOr<Trainer::StepStats> Trainer::SupervisedMicroStep(const Batch& batch,
                                                                uint64_t dropout_seed,
                                                                double share) {
  StepStats st;
  model::DecoderInput in = Input(batch, dropout_seed);
  in.training = true;
  SY_ASSIGN_OR_RETURN(at::Tensor logits, setup_.model->Forward(in));
  model::LossOutput out = model::CausalLmLoss(logits, batch.labels.to(logits.device()));
  const int64_t n = out.tokens.item<int64_t>();
  (out.loss * share).backward();
  st.loss_sum = out.loss.item<double>() * n;
  st.loss_units = n;
  st.label_tokens = n;
  st.correct = out.correct.item<int64_t>();
  st.tokens = batch.tokens;
  return st;
}

absl::StatusOr<Trainer::ReferenceLogProbs> Trainer::PrecomputeReference(
    const std::vector<PreferenceExample>& examples) {
  ReferenceLogProbs ref;
  const Hyperparameters& hp = setup_.spec.hyperparameters;
  const int64_t per_batch =
      std::max<int64_t>(1, hp.batch_size.value_or(1) / hp.gradient_accumulation_steps.value_or(1));
  const int64_t n = static_cast<int64_t>(examples.size());
  SY_RETURN_IF_ERROR(TorchCall("reference log-probabilities", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (int64_t first = 0; first < n; first += per_batch) {
      std::vector<int64_t> pairs;
      for (int64_t i = first; i < std::min(n, first + per_batch); ++i) pairs.push_back(i);
      Batch batch = MakePairBatch(examples, pairs);
      SY_ASSIGN_OR_RETURN(at::Tensor logits, setup_.model->Forward(Input(batch, 0)));
      at::Tensor logps =
          SequenceLogProbs(logits, batch.labels.to(logits.device())).to(at::kCPU).contiguous();
      const int64_t k = static_cast<int64_t>(pairs.size());
      const float* v = logps.data_ptr<float>();
      ref.chosen.insert(ref.chosen.end(), v, v + k);
      ref.rejected.insert(ref.rejected.end(), v + k, v + 2 * k);
    }
    return absl::OkStatus();
  }));
  return ref;
}

absl::StatusOr<std::pair<at::Tensor, Trainer::StepStats>> Trainer::DpoForward(
    const std::vector<PreferenceExample>& examples, const std::vector<int64_t>& pairs,
    const ReferenceLogProbs* precomputed, const model::DecoderInput& input, const Batch& batch) {
  const int64_t k = static_cast<int64_t>(pairs.size());
  SY_ASSIGN_OR_RETURN(at::Tensor logits, setup_.model->Forward(input));
  const at::Tensor labels = batch.labels.to(logits.device());
  const at::Tensor policy = SequenceLogProbs(logits, labels);
  at::Tensor reference;
  if (precomputed != nullptr) {
    std::vector<float> values;
    for (int64_t i : pairs) values.push_back(precomputed->chosen[i]);
    for (int64_t i : pairs) values.push_back(precomputed->rejected[i]);
    reference = at::tensor(values, at::kFloat).to(policy.device());
  } else {
    at::NoGradGuard no_grad;
    model::DecoderInput ref_input = input;
    ref_input.adapters.clear();  // the base with the adapter disabled
    ref_input.training = false;
    const model::CausalLm& ref_model =
        setup_.reference_model ? *setup_.reference_model : *setup_.model;
    SY_ASSIGN_OR_RETURN(at::Tensor ref_logits, ref_model.Forward(ref_input));
    reference = SequenceLogProbs(ref_logits, labels);
  }
  const DpoSpec& spec = setup_.spec.dpo;
  at::Tensor p = policy, r = reference;
  if (spec.loss_type == DpoLoss::kIpo) {
    const at::Tensor counts = LabelCounts(labels);
    p = p / counts;
    r = r / counts;
  }
  DpoLossOutput out =
      ComputeDpoLoss(p.slice(0, 0, k), p.slice(0, k), r.slice(0, 0, k), r.slice(0, k), spec);
  StepStats st;
  const at::Tensor detached = policy.detach().to(at::kCPU);
  st.dpo.pairs = k;
  st.dpo.loss = out.losses.detach().sum().item<double>();
  st.dpo.rewards_chosen = out.chosen_rewards.sum().item<double>();
  st.dpo.rewards_rejected = out.rejected_rewards.sum().item<double>();
  st.dpo.correct = out.chosen_rewards.gt(out.rejected_rewards).sum().item<double>();
  st.dpo.logps_chosen = detached.slice(0, 0, k).sum().item<double>();
  st.dpo.logps_rejected = detached.slice(0, k).sum().item<double>();
  st.loss_sum = st.dpo.loss;
  st.loss_units = k;
  st.tokens = batch.tokens;
  return std::make_pair(out.losses.sum(), st);
}

absl::StatusOr<Trainer::StepStats> Trainer::DpoMicroStep(const std::vector<int64_t>& pairs,
                                                         uint64_t dropout_seed,
                                                         int64_t step_pairs) {
  Batch batch = MakePairBatch(setup_.train_pairs, pairs);
  model::DecoderInput in = Input(batch, dropout_seed);
  in.training = true;
  SY_ASSIGN_OR_RETURN(auto out,
                      DpoForward(setup_.train_pairs, pairs,
                                 train_reference_ ? &*train_reference_ : nullptr, in, batch));
  (out.first / static_cast<double>(std::max<int64_t>(1, step_pairs))).backward();
  return out.second;
}

int64_t Trainer::updates_per_step() const {
  return reinforcement() ? std::max(1, setup_.spec.reinforcement->iterations_per_batch.value_or(1))
                         : 1;
}

absl::StatusOr<Trainer::Rollout> Trainer::Sample(const std::vector<RlExample>& examples,
                                                 const std::vector<int64_t>& prompts, int group,
                                                 const model::SamplingParams& params,
                                                 uint64_t seed) {
  std::vector<model::GenerationRequest> requests;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const RlExample& ex = examples[prompts[p]];
    for (int g = 0; g < group; ++g) {
      model::GenerationRequest r;
      r.prompt_ids.assign(ex.prompt_ids.begin(), ex.prompt_ids.end());
      r.adapter = lora_ ? adapter_id_ : model::kNoAdapter;
      r.params = params;
      r.params.seed = seed * 0x9E3779B97F4A7C15ull + p * 1000003ull + static_cast<uint64_t>(g);
      requests.push_back(std::move(r));
    }
  }
  SY_ASSIGN_OR_RETURN(
      std::vector<model::Generation> generations,
      model::Generate(*setup_.model, setup_.text->tokenizer.get(), requests, setup_.eos_token_ids));
  Rollout out;
  const GraderSpec& grader = setup_.spec.reinforcement->grader;
  for (size_t i = 0; i < generations.size(); ++i) {
    const model::Generation& gen = generations[i];
    const RlExample& ex = examples[prompts[i / group]];
    absl::StatusOr<GradeResult> grade = Grade(grader, gen.text, ex.item);
    if (!grade.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("grader_error: line ", ex.line, ": ", grade.status().message()));
    }
    out.rewards.push_back(grade->reward);
    for (const auto& [name, reward] : grade->grader_rewards) out.grader_sums[name] += reward;
    SftExample seq;
    seq.ids = ex.prompt_ids;
    seq.trained.assign(seq.ids.size(), 0);
    std::vector<int64_t> completion = gen.token_ids;
    // The stop token is part of what the policy chose: learning when to stop.
    if (gen.stop_token >= 0) completion.push_back(gen.stop_token);
    for (int64_t id : completion) {
      seq.ids.push_back(static_cast<int32_t>(id));
      seq.trained.push_back(1);
    }
    out.completion_tokens += static_cast<int64_t>(gen.token_ids.size());
    seq.line = ex.line;
    out.sequences.push_back(std::move(seq));
  }
  return out;
}

absl::StatusOr<at::Tensor> Trainer::TokenLogProbs(const Batch& batch, bool reference,
                                                  uint64_t dropout_seed) {
  model::DecoderInput in = Input(batch, dropout_seed);
  in.training = !reference;
  if (reference) in.adapters.clear();  // the base with the adapter disabled
  const model::CausalLm& lm =
      reference && setup_.reference_model ? *setup_.reference_model : *setup_.model;
  SY_ASSIGN_OR_RETURN(at::Tensor logits, lm.Forward(in));
  return model::LabelLogProbs(logits, batch.labels.to(logits.device()));
}

absl::StatusOr<Trainer::StepStats> Trainer::ReinforcementStep(int64_t step) {
  const ReinforcementSpec& rs = *setup_.spec.reinforcement;
  const Hyperparameters& hp = setup_.spec.hyperparameters;
  const int group = rs.num_generations.value_or(8);
  const double beta = rs.kl_beta.value_or(0.04);
  const double epsilon = rs.clip_epsilon.value_or(0.2);
  const int64_t updates = updates_per_step();
  const uint64_t seed = setup_.spec.seed.value_or(0);
  const std::vector<std::vector<Row>> micro = plan_->MicroBatches(step);
  std::vector<int64_t> prompts;
  std::vector<std::pair<size_t, size_t>> ranges;  // sequences of each micro-batch
  for (const std::vector<Row>& rows : micro) {
    const size_t first = prompts.size() * group;
    for (const Row& row : rows) prompts.insert(prompts.end(), row.begin(), row.end());
    ranges.emplace_back(first, prompts.size() * group);
  }
  model::SamplingParams params;
  params.temperature = rs.temperature.value_or(1.0);
  params.top_p = rs.top_p.value_or(1.0);
  params.max_new_tokens = rs.max_completion_tokens.value_or(256);
  StepStats total;
  Rollout rollout;
  SY_RETURN_IF_ERROR(TorchCall(absl::StrCat("sampling for step ", step), [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(rollout, Sample(setup_.train_prompts, prompts, group, params,
                                        DropoutSeed(seed, step, 7919)));
    return absl::OkStatus();
  }));
  double reward_std = 0;
  const std::vector<double> advantages = GroupAdvantages(rollout.rewards, group, &reward_std);
  const double sequences = static_cast<double>(rollout.sequences.size());
  double kl_sum = 0, clipped = 0;
  int64_t completion_tokens = 0;
  // Per micro-batch: the batch, the log-probabilities the samples were drawn
  // with, and the reference's.
  std::vector<Batch> batches;
  std::vector<at::Tensor> old_logps, ref_logps, advantage_rows;
  for (auto [first, last] : ranges) {
    std::vector<Row> rows;
    for (size_t i = first; i < last; ++i) rows.push_back({static_cast<int64_t>(i)});
    batches.push_back(MakeBatch(rollout.sequences, rows));
    advantage_rows.push_back(at::tensor(
        std::vector<double>(advantages.begin() + first, advantages.begin() + last), at::kFloat));
  }
  const double lr = LearningRateAt(hp.lr_scheduler, hp.learning_rate.value_or(1e-4), step,
                                   hp.warmup_steps.value_or(0), plan_->total_steps());
  double norm_sum = 0;
  SY_RETURN_IF_ERROR(TorchCall(absl::StrCat("training step ", step), [&]() -> absl::Status {
    {
      at::NoGradGuard no_grad;
      for (size_t k = 0; k < batches.size(); ++k) {
        if (updates > 1) {
          SY_ASSIGN_OR_RETURN(at::Tensor old,
                              TokenLogProbs(batches[k], false, DropoutSeed(seed, step, k)));
          old_logps.push_back(old);
        }
        if (beta > 0) {
          SY_ASSIGN_OR_RETURN(at::Tensor ref, TokenLogProbs(batches[k], true, 0));
          ref_logps.push_back(ref);
        }
      }
    }
    for (int64_t u = 0; u < updates; ++u) {
      optimizer_->ZeroGrad();
      for (size_t k = 0; k < batches.size(); ++k) {
        const Batch& b = batches[k];
        SY_ASSIGN_OR_RETURN(at::Tensor logp,
                            TokenLogProbs(b, false, DropoutSeed(seed, step, u * 1000 + k)));
        const at::Tensor mask = b.labels.ne(model::kIgnoreLabel).to(logp.device());
        GrpoLossOutput out = ComputeGrpoLoss(logp, updates > 1 ? old_logps[k] : logp.detach(),
                                             beta > 0 ? ref_logps[k] : at::Tensor(), mask,
                                             advantage_rows[k], epsilon, beta);
        (out.row_losses.sum() / std::max(1.0, sequences)).backward();
        total.loss_sum += out.row_losses.detach().sum().item<double>();
        total.loss_units += static_cast<int64_t>(b.input_ids.size(0));
        total.tokens += b.tokens;
        kl_sum += out.kl_sum;
        clipped += out.clipped;
        completion_tokens += out.tokens;
      }
      norm_sum += optimizer_->ClipGradNorm(hp.max_grad_norm.value_or(0));
      optimizer_->Step(lr);
    }
    return absl::OkStatus();
  }));
  total.loss = total.loss_sum / std::max<int64_t>(1, total.loss_units);
  if (!std::isfinite(total.loss)) {
    return absl::InternalError(
        absl::StrCat("nan_loss: the training loss became ", total.loss, " at step ", step,
                     "; lower hyperparameters.learning_rate or use precision fp32"));
  }
  total.grad_norm = norm_sum / static_cast<double>(updates);
  total.learning_rate = lr;
  ReinforcementMetrics m;
  double reward_sum = 0;
  for (double r : rollout.rewards) reward_sum += r;
  m.reward_mean = reward_sum / std::max(1.0, sequences);
  m.reward_std = reward_std;
  m.kl = kl_sum / std::max<int64_t>(1, completion_tokens);
  m.completion_length_mean =
      static_cast<double>(rollout.completion_tokens) / std::max(1.0, sequences);
  m.clip_ratio = clipped / std::max<int64_t>(1, completion_tokens);
  for (const auto& [name, sum] : rollout.grader_sums) m.grader_rewards[name] = sum / sequences;
  total.reinforcement = m;
  return total;
}

absl::StatusOr<EvalMetrics> Trainer::EvaluateReinforcement() {
  EvalMetrics m;
  const auto t0 = Clock::now();
  const int64_t n = static_cast<int64_t>(setup_.validation_prompts.size());
  model::SamplingParams params;
  params.temperature = 0;  // the policy's own answer: greedy
  params.max_new_tokens = setup_.spec.reinforcement->max_completion_tokens.value_or(256);
  double reward_sum = 0;
  int64_t tokens = 0;
  std::map<std::string, double> grader_sums;
  constexpr int64_t kPromptsPerBatch = 16;
  for (int64_t first = 0; first < n; first += kPromptsPerBatch) {
    std::vector<int64_t> prompts;
    for (int64_t i = first; i < std::min(n, first + kPromptsPerBatch); ++i) prompts.push_back(i);
    Rollout rollout;
    SY_RETURN_IF_ERROR(TorchCall("evaluation", [&]() -> absl::Status {
      SY_ASSIGN_OR_RETURN(rollout, Sample(setup_.validation_prompts, prompts, 1, params, 0));
      return absl::OkStatus();
    }));
    for (double r : rollout.rewards) reward_sum += r;
    tokens += rollout.completion_tokens;
    for (const auto& [name, sum] : rollout.grader_sums) grader_sums[name] += sum;
  }
  ReinforcementMetrics r;
  const double count = static_cast<double>(std::max<int64_t>(1, n));
  r.reward_mean = reward_sum / count;
  r.completion_length_mean = static_cast<double>(tokens) / count;
  for (const auto& [name, sum] : grader_sums) r.grader_rewards[name] = sum / count;
  // Lower is better, as for the other methods' losses.
  m.validation_loss = -r.reward_mean;
  m.reinforcement = r;
  m.duration_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return m;
}

absl::StatusOr<Trainer::StepStats> Trainer::RunStep(int64_t step) {
  if (reinforcement()) return ReinforcementStep(step);
  const std::vector<std::vector<Row>> micro = plan_->MicroBatches(step);
  optimizer_->ZeroGrad();
  StepStats total;
  const uint64_t seed = setup_.spec.seed.value_or(0);
  SY_RETURN_IF_ERROR(TorchCall(absl::StrCat("training step ", step), [&]() -> absl::Status {
    if (dpo()) {
      int64_t step_pairs = 0;
      for (const std::vector<Row>& rows : micro) step_pairs += static_cast<int64_t>(rows.size());
      for (size_t i = 0; i < micro.size(); ++i) {
        std::vector<int64_t> pairs;
        for (const Row& row : micro[i]) pairs.insert(pairs.end(), row.begin(), row.end());
        SY_ASSIGN_OR_RETURN(StepStats st,
                            DpoMicroStep(pairs, DropoutSeed(seed, step, i), step_pairs));
        total.loss_sum += st.loss_sum;
        total.loss_units += st.loss_units;
        total.tokens += st.tokens;
        total.dpo.Add(st.dpo);
      }
      return absl::OkStatus();
    }
    std::vector<Batch> batches;
    int64_t label_total = 0;
    for (const std::vector<Row>& rows : micro) {
      batches.push_back(MakeBatch(setup_.train, rows));
      label_total += batches.back().label_tokens;
    }
    for (size_t i = 0; i < batches.size(); ++i) {
      // Each token weighs the same whichever micro-batch holds it.
      const double share =
          static_cast<double>(batches[i].label_tokens) / std::max<int64_t>(1, label_total);
      SY_ASSIGN_OR_RETURN(StepStats st,
                          SupervisedMicroStep(batches[i], DropoutSeed(seed, step, i), share));
      total.loss_sum += st.loss_sum;
      total.loss_units += st.loss_units;
      total.label_tokens += st.label_tokens;
      total.correct += st.correct;
      total.tokens += st.tokens;
    }
    return absl::OkStatus();
  }));
  const double loss = total.loss_sum / std::max<int64_t>(1, total.loss_units);
  if (!std::isfinite(loss)) {
    return absl::InternalError(
        absl::StrCat("nan_loss: the training loss became ", loss, " at step ", step,
                     "; lower hyperparameters.learning_rate or use precision fp32"));
  }
  const Hyperparameters& hp = setup_.spec.hyperparameters;
  const double lr = LearningRateAt(hp.lr_scheduler, hp.learning_rate.value_or(1e-4), step,
                                   hp.warmup_steps.value_or(0), plan_->total_steps());
  double norm = 0;
  SY_RETURN_IF_ERROR(TorchCall("optimizer step", [&] {
    norm = optimizer_->ClipGradNorm(hp.max_grad_norm.value_or(0));
    optimizer_->Step(lr);
  }));
  total.loss = loss;
  total.grad_norm = norm;
  total.learning_rate = lr;
  return total;
}

absl::StatusOr<EvalMetrics> Trainer::EvaluateDpo() {
  EvalMetrics m;
  const auto t0 = Clock::now();
  const Hyperparameters& hp = setup_.spec.hyperparameters;
  const int64_t per_batch =
      std::max<int64_t>(1, hp.batch_size.value_or(1) / hp.gradient_accumulation_steps.value_or(1));
  const int64_t n = static_cast<int64_t>(setup_.validation_pairs.size());
  DpoSums sums;
  SY_RETURN_IF_ERROR(TorchCall("evaluation", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (int64_t first = 0; first < n; first += per_batch) {
      std::vector<int64_t> pairs;
      for (int64_t i = first; i < std::min(n, first + per_batch); ++i) pairs.push_back(i);
      Batch batch = MakePairBatch(setup_.validation_pairs, pairs);
      SY_ASSIGN_OR_RETURN(auto out,
                          DpoForward(setup_.validation_pairs, pairs,
                                     validation_reference_ ? &*validation_reference_ : nullptr,
                                     Input(batch, 0), batch));
      sums.Add(out.second.dpo);
    }
    return absl::OkStatus();
  }));
  m.validation_loss = sums.loss / std::max<int64_t>(1, sums.pairs);
  m.dpo = sums.Means();
  m.duration_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return m;
}

absl::StatusOr<EvalMetrics> Trainer::Evaluate() {
  EvalMetrics m;
  if (dpo()) return setup_.validation_pairs.empty() ? m : EvaluateDpo();
  if (reinforcement()) return setup_.validation_prompts.empty() ? m : EvaluateReinforcement();
  if (setup_.validation.empty()) return m;
  const auto t0 = Clock::now();
  const Hyperparameters& hp = setup_.spec.hyperparameters;
  const int64_t rows_per_batch =
      std::max<int64_t>(1, hp.batch_size.value_or(1) / hp.gradient_accumulation_steps.value_or(1));
  double loss_sum = 0;
  int64_t tokens = 0, correct = 0;
  SY_RETURN_IF_ERROR(TorchCall("evaluation", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const int64_t n = static_cast<int64_t>(setup_.validation.size());
    for (int64_t first = 0; first < n; first += rows_per_batch) {
      std::vector<Row> rows;
      for (int64_t i = first; i < std::min(n, first + rows_per_batch); ++i) rows.push_back({i});
      Batch batch = MakeBatch(setup_.validation, rows);
      SY_ASSIGN_OR_RETURN(at::Tensor logits, setup_.model->Forward(Input(batch, 0)));
      model::LossOutput out = model::CausalLmLoss(logits, batch.labels.to(logits.device()));
      const int64_t k = out.tokens.item<int64_t>();
      loss_sum += out.loss.item<double>() * k;
      tokens += k;
      correct += out.correct.item<int64_t>();
    }
    return absl::OkStatus();
  }));
  m.validation_loss = loss_sum / std::max<int64_t>(1, tokens);
  m.validation_mean_token_accuracy = static_cast<double>(correct) / std::max<int64_t>(1, tokens);
  m.duration_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return m;
}

absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& dir) {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || !e.is_directory(ec)) continue;
    absl::StatusOr<std::string> text = ReadFile(e.path().string() + "/" + kStateFile);
    if (!text.ok()) continue;  // not a finished checkpoint
    json j = json::parse(*text, nullptr, false);
    if (!j.is_object()) {
      return absl::DataLossError(absl::StrCat(e.path().string(), "/", kStateFile, " is corrupt"));
    }
    CheckpointInfo c = CheckpointFromJson(j["checkpoint"]);
    c.path = e.path().string();
    out.push_back(std::move(c));
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) {
    return std::make_pair(a.step, static_cast<int>(a.kind)) <
           std::make_pair(b.step, static_cast<int>(b.kind));
  });
  return out;
}

absl::StatusOr<std::optional<CheckpointInfo>> Trainer::ResumePoint() const {
  SY_ASSIGN_OR_RETURN(std::vector<CheckpointInfo> all, ListCheckpoints(setup_.checkpoints_dir));
  if (all.empty()) return std::optional<CheckpointInfo>();
  return std::optional<CheckpointInfo>(all.back());
}

absl::StatusOr<CheckpointInfo> Trainer::SaveCheckpoint(CheckpointKind kind, const State& state) {
  CheckpointInfo c;
  c.kind = kind;
  c.step = state.step;
  c.epoch = plan_->epoch_progress(state.step);
  c.checkpoint_id = kind == CheckpointKind::kFinal ? std::string("final")
                    : kind == CheckpointKind::kEpoch
                        ? absl::StrCat("epoch-", plan_->epoch_of(state.step) + 1)
                        : absl::StrCat("step-", state.step);
  c.train_loss = state.train_loss;
  if (state.last_eval && state.last_eval->step == state.step) {
    c.validation_loss = state.last_eval->validation_loss;
    c.is_best = state.last_eval->is_best;
  }
  c.path = setup_.checkpoints_dir + "/" + c.checkpoint_id;
  c.create_time_ms = NowMs();
  const std::string tmp = setup_.checkpoints_dir + "/.tmp-" + c.checkpoint_id;
  SY_RETURN_IF_ERROR(RemoveAll(tmp));
  SY_RETURN_IF_ERROR(MakeDirs(tmp));
  if (lora_) {
    SY_ASSIGN_OR_RETURN(model::LoraAdapter adapter, setup_.model->ExportAdapter("train"));
    adapter.config.base_model_name_or_path = setup_.base_model_id;
    SY_RETURN_IF_ERROR(model::SavePeftAdapter(adapter, tmp, setup_.model->dtype()));
  } else {
    SY_RETURN_IF_ERROR(setup_.model->Save(tmp));
    SY_RETURN_IF_ERROR(model::CopyModelSideFiles(setup_.base_dir, tmp, true));
  }
  SY_RETURN_IF_ERROR(TorchCall("saving the optimizer state", [&]() -> absl::Status {
    return optimizer_->Save(tmp + "/" + kOptimizerFile);
  }));
  json j;
  j["checkpoint"] = CheckpointToJson(c);
  j["tokens"] = state.tokens;
  j["evals_since_best"] = state.evals_since_best;
  j["best_checkpoint"] = c.is_best ? c.checkpoint_id : state.best_checkpoint;
  if (state.last_train) j["last_train"] = TrainMetricsToJson(*state.last_train);
  if (state.last_eval) j["last_eval"] = EvalMetricsToJson(*state.last_eval);
  if (state.best_eval) j["best_eval"] = EvalMetricsToJson(*state.best_eval);
  // The state file goes last: a directory without it is not a checkpoint.
  SY_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/" + kStateFile, j.dump(2) + "\n"));
  SY_RETURN_IF_ERROR(RemoveAll(c.path));
  SY_RETURN_IF_ERROR(RenameDurably(tmp, c.path));
  c.size_bytes = DirectoryBytes(c.path);
  return c;
}

absl::Status Trainer::LoadCheckpoint(const CheckpointInfo& c, State* state) {
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(c.path + "/" + kStateFile));
  json j = json::parse(text, nullptr, false);
  if (!j.is_object())
    return absl::DataLossError(absl::StrCat(c.path, "/", kStateFile, " is corrupt"));
  SY_RETURN_IF_ERROR(TorchCall("loading the optimizer state", [&]() -> absl::Status {
    return optimizer_->Load(c.path + "/" + kOptimizerFile);
  }));
  state->step = c.step;
  state->train_loss = c.train_loss;
  state->tokens = j.value("tokens", int64_t{0});
  state->evals_since_best = j.value("evals_since_best", 0);
  state->best_checkpoint = j.value("best_checkpoint", "");
  if (j.contains("last_train")) state->last_train = TrainMetricsFromJson(j["last_train"]);
  if (j.contains("last_eval")) state->last_eval = EvalMetricsFromJson(j["last_eval"]);
  if (j.contains("best_eval")) state->best_eval = EvalMetricsFromJson(j["best_eval"]);
  if (optimizer_->steps() != c.step * updates_per_step()) {
    return absl::DataLossError(absl::StrCat(c.path, ": optimizer state is at update ",
                                            optimizer_->steps(), ", checkpoint at step ", c.step,
                                            " (", updates_per_step(), " per step)"));
  }
  return absl::OkStatus();
}

absl::Status Trainer::Prune(const State& state) {
  const CheckpointSpec& cs = setup_.spec.checkpoints;
  const int keep = std::max(1, cs.keep_last.value_or(3));
  SY_ASSIGN_OR_RETURN(std::vector<CheckpointInfo> all, ListCheckpoints(setup_.checkpoints_dir));
  std::vector<const CheckpointInfo*> rolling;
  for (const CheckpointInfo& c : all) {
    if (c.kind == CheckpointKind::kFinal) continue;
    if (cs.keep_best.value_or(false) && c.checkpoint_id == state.best_checkpoint) continue;
    rolling.push_back(&c);
  }
  for (size_t i = 0; i + keep < rolling.size(); ++i)
    SY_RETURN_IF_ERROR(RemoveAll(rolling[i]->path));
  return absl::OkStatus();
}

absl::StatusOr<TrainerResult> Trainer::Run(TrainerListener* listener) {
  TrainerListener quiet;
  if (listener == nullptr) listener = &quiet;
  const JobSpec& spec = setup_.spec;
  const Hyperparameters& hp = spec.hyperparameters;
  const CheckpointSpec& cs = spec.checkpoints;
  const int64_t total = plan_->total_steps();
  SY_RETURN_IF_ERROR(MakeDirs(setup_.checkpoints_dir));
  // Saves a crash interrupted (".tmp-<id>") are debris.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(setup_.checkpoints_dir, ec)) {
    if (absl::StartsWith(e.path().filename().string(), ".tmp-")) {
      SY_RETURN_IF_ERROR(RemoveAll(e.path().string()));
    }
  }
  State state;
  TrainerResult result;
  SY_ASSIGN_OR_RETURN(std::optional<CheckpointInfo> resume, ResumePoint());
  // The DPO reference is the starting weights, read before a checkpoint
  // replaces them.
  if (dpo() && setup_.spec.dpo.precompute_reference_logprobs.value_or(false) &&
      !(resume && resume->kind == CheckpointKind::kFinal)) {
    SY_ASSIGN_OR_RETURN(train_reference_, PrecomputeReference(setup_.train_pairs));
    SY_ASSIGN_OR_RETURN(validation_reference_, PrecomputeReference(setup_.validation_pairs));
  }
  if (resume) {
    SY_RETURN_IF_ERROR(LoadCheckpoint(*resume, &state));
    SY_LOG(kInfo, "trainer") << "resuming from " << resume->path << " at step " << state.step;
  }
  const bool keep_best = cs.keep_best.value_or(false);
  auto finish = [&](TrainerResult::Outcome outcome,
                    std::optional<CheckpointInfo> checkpoint) -> absl::StatusOr<TrainerResult> {
    result.outcome = outcome;
    result.step = state.step;
    result.tokens = state.tokens;
    result.last_train = state.last_train;
    result.last_eval = state.last_eval;
    result.best_eval = state.best_eval;
    if (checkpoint && keep_best && !state.best_checkpoint.empty() &&
        (outcome == TrainerResult::Outcome::kCompleted ||
         outcome == TrainerResult::Outcome::kEarlyStopped)) {
      SY_ASSIGN_OR_RETURN(std::vector<CheckpointInfo> all, ListCheckpoints(setup_.checkpoints_dir));
      for (const CheckpointInfo& c : all) {
        if (c.checkpoint_id == state.best_checkpoint) checkpoint = c;
      }
    }
    result.result_checkpoint = checkpoint;
    return result;
  };
  if (resume && resume->kind == CheckpointKind::kFinal) {
    return finish(TrainerResult::Outcome::kCompleted, resume);
  }

  // Evaluates and updates the best/patience state; emits the event.
  auto evaluate = [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(EvalMetrics m, Evaluate());
    m.step = state.step;
    m.epoch = plan_->epoch_progress(state.step);
    const double delta = cs.early_stopping_min_delta.value_or(0);
    // The evaluation before training is a baseline, never "best".
    if (state.step > 0) {
      if (!state.best_eval || m.validation_loss < state.best_eval->validation_loss - delta) {
        m.is_best = true;
        state.best_eval = m;
        state.evals_since_best = 0;
      } else {
        ++state.evals_since_best;
      }
    }
    state.last_eval = m;
    listener->OnEval(m);
    return absl::OkStatus();
  };
  auto save = [&](CheckpointKind kind) -> absl::StatusOr<CheckpointInfo> {
    SY_ASSIGN_OR_RETURN(CheckpointInfo c, SaveCheckpoint(kind, state));
    if (c.is_best) state.best_checkpoint = c.checkpoint_id;
    listener->OnCheckpoint(c);
    SY_RETURN_IF_ERROR(Prune(state));
    return c;
  };

  const bool has_validation = setup_.validation_count() > 0;
  if (has_validation && state.step == 0) SY_RETURN_IF_ERROR(evaluate());

  const int64_t log_every = std::max(1, hp.log_interval_steps.value_or(1));
  const int64_t eval_every = hp.eval_interval_steps.value_or(0);
  const int64_t save_every = cs.interval_steps.value_or(0);
  const int patience = cs.early_stopping_patience.value_or(0);
  // Sums over the steps since the last TrainMetrics event.
  StepStats window;
  std::vector<ReinforcementMetrics> window_rl;
  int64_t window_steps = 0;
  double window_seconds = 0;
  // A pause right after resuming continues from the same checkpoint rather
  // than saving it again.
  std::optional<CheckpointInfo> last_saved = resume;
  while (state.step < total) {
    StopRequest stop = listener->PollStop();
    if (stop == StopRequest::kCancel) return finish(TrainerResult::Outcome::kCancelled, {});
    if (stop == StopRequest::kPause) {
      if (state.step > 0 && (!last_saved || last_saved->step != state.step)) {
        SY_ASSIGN_OR_RETURN(last_saved, save(CheckpointKind::kPause));
      }
      return finish(TrainerResult::Outcome::kPaused, last_saved);
    }
    const int64_t step = state.step + 1;
    const auto t0 = Clock::now();
    SY_ASSIGN_OR_RETURN(StepStats st, RunStep(step));
    window_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++window_steps;
    window.loss_sum += st.loss_sum;
    window.loss_units += st.loss_units;
    window.dpo.Add(st.dpo);
    if (st.reinforcement) window_rl.push_back(*st.reinforcement);
    window.correct += st.correct;
    window.label_tokens += st.label_tokens;
    window.tokens += st.tokens;
    window.grad_norm += st.grad_norm;
    state.step = step;
    state.train_loss = st.loss;
    state.tokens += st.tokens;
    if (step % log_every == 0 || step == total) {
      const double label_tokens = static_cast<double>(std::max<int64_t>(1, window.label_tokens));
      TrainMetrics m;
      m.step = step;
      m.total_steps = total;
      m.epoch = plan_->epoch_progress(step);
      m.loss = window.loss_sum / static_cast<double>(std::max<int64_t>(1, window.loss_units));
      m.mean_token_accuracy = static_cast<double>(window.correct) / label_tokens;
      if (dpo()) m.dpo = window.dpo.Means();
      if (!window_rl.empty()) m.reinforcement = MeanOf(window_rl);
      m.learning_rate = st.learning_rate;
      m.grad_norm = window.grad_norm / window_steps;
      m.tokens_per_second = window.tokens / std::max(1e-9, window_seconds);
      m.tokens = state.tokens;
      m.peak_memory_bytes = ProcessStatusBytes("VmHWM");
      state.last_train = m;
      listener->OnTrain(m);
      window = StepStats();
      window_rl.clear();
      window_steps = 0;
      window_seconds = 0;
    }
    const bool ends_epoch = plan_->ends_epoch(step);
    if (has_validation && ((eval_every > 0 && step % eval_every == 0) || ends_epoch)) {
      SY_RETURN_IF_ERROR(evaluate());
    }
    const bool early_stop = patience > 0 && state.evals_since_best >= patience;
    if (step == total || early_stop) {
      SY_ASSIGN_OR_RETURN(CheckpointInfo c, save(CheckpointKind::kFinal));
      return finish(
          early_stop ? TrainerResult::Outcome::kEarlyStopped : TrainerResult::Outcome::kCompleted,
          c);
    }
    const bool new_best =
        keep_best && state.last_eval && state.last_eval->step == step && state.last_eval->is_best;
    if (ends_epoch) {
      SY_ASSIGN_OR_RETURN(last_saved, save(CheckpointKind::kEpoch));
    } else if ((save_every > 0 && step % save_every == 0) || new_best) {
      SY_ASSIGN_OR_RETURN(last_saved, save(CheckpointKind::kStep));
    }
  }
  return finish(TrainerResult::Outcome::kCompleted, last_saved);
}

}  // namespace switchyard::training
