#include "services/training/training_proto.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_proto.h"

namespace switchyard::training {
namespace {

using google::protobuf::util::TimeUtil;
using json = nlohmann::json;

// Unix milliseconds. Callers skip 0 ("not yet") so the field stays unset.
google::protobuf::Timestamp Time(int64_t ms) { return TimeUtil::MillisecondsToTimestamp(ms); }

absl::Status UnknownEnum(const char* field, int value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " has unknown value ", value));
}

void ToProto(const DpoSpec& d, v1::DpoSpec* out) {
  out->set_loss_type(static_cast<v1::DpoLossType>(d.loss_type));
  if (d.beta) out->set_beta(*d.beta);
  if (d.label_smoothing) out->set_label_smoothing(*d.label_smoothing);
  if (d.precompute_reference_logprobs) {
    out->set_precompute_reference_logprobs(*d.precompute_reference_logprobs);
  }
}

absl::Status FromProto(const v1::DpoSpec& d, DpoSpec* out) {
  if (d.loss_type() < v1::DPO_LOSS_TYPE_UNSPECIFIED || d.loss_type() > v1::DPO_LOSS_TYPE_ROBUST) {
    return UnknownEnum("dpo.loss_type", d.loss_type());
  }
  out->loss_type = static_cast<DpoLoss>(d.loss_type());
  if (d.has_beta()) out->beta = d.beta();
  if (d.has_label_smoothing()) out->label_smoothing = d.label_smoothing();
  if (d.has_precompute_reference_logprobs()) {
    out->precompute_reference_logprobs = d.precompute_reference_logprobs();
  }
  return absl::OkStatus();
}

void ToProto(const DpoMetrics& m, v1::DpoMetrics* out) {
  out->set_rewards_chosen(m.rewards_chosen);
  out->set_rewards_rejected(m.rewards_rejected);
  out->set_reward_accuracy(m.reward_accuracy);
  out->set_reward_margin(m.reward_margin);
  out->set_logps_chosen(m.logps_chosen);
  out->set_logps_rejected(m.logps_rejected);
}

void ToProto(const ReinforcementMetrics& m, v1::ReinforcementMetrics* out) {
  out->set_reward_mean(m.reward_mean);
  out->set_reward_std(m.reward_std);
  out->set_kl(m.kl);
  out->set_completion_length_mean(m.completion_length_mean);
  out->set_clip_ratio(m.clip_ratio);
  for (const auto& [name, reward] : m.grader_rewards)
    (*out->mutable_grader_rewards())[name] = reward;
}

void ToProto(const ReinforcementSpec& r, v1::ReinforcementSpec* out) {
  ToProto(r.grader, out->mutable_grader());
  if (r.num_generations) out->set_num_generations(*r.num_generations);
  if (r.temperature) out->set_temperature(*r.temperature);
  if (r.top_p) out->set_top_p(*r.top_p);
  if (r.max_completion_tokens) out->set_max_completion_tokens(*r.max_completion_tokens);
  if (r.kl_beta) out->set_kl_beta(*r.kl_beta);
  if (r.clip_epsilon) out->set_clip_epsilon(*r.clip_epsilon);
  if (r.iterations_per_batch) out->set_iterations_per_batch(*r.iterations_per_batch);
}

// The grader is required and validated here, so that its errors name the
// request's field.
absl::Status FromProto(const v1::ReinforcementSpec& r, ReinforcementSpec* out) {
  if (!r.has_grader()) return absl::InvalidArgumentError("reinforcement.grader: is required");
  absl::StatusOr<GraderSpec> grader = GraderFromProto(r.grader(), "reinforcement.grader");
  if (!grader.ok()) return grader.status();
  if (absl::Status st = ValidateGrader(*grader, "reinforcement.grader"); !st.ok()) return st;
  out->grader = std::move(*grader);
  if (r.has_num_generations()) out->num_generations = r.num_generations();
  if (r.has_temperature()) out->temperature = r.temperature();
  if (r.has_top_p()) out->top_p = r.top_p();
  if (r.has_max_completion_tokens()) out->max_completion_tokens = r.max_completion_tokens();
  if (r.has_kl_beta()) out->kl_beta = r.kl_beta();
  if (r.has_clip_epsilon()) out->clip_epsilon = r.clip_epsilon();
  if (r.has_iterations_per_batch()) out->iterations_per_batch = r.iterations_per_batch();
  return absl::OkStatus();
}

void ToProto(const LoraSpec& l, v1::LoraSpec* out) {
  if (l.r) out->set_r(*l.r);
  if (l.alpha) out->set_alpha(*l.alpha);
  if (l.dropout) out->set_dropout(*l.dropout);
  for (const std::string& m : l.target_modules) out->add_target_modules(m);
  for (int layer : l.layers) out->add_layers(layer);
  out->set_rslora(l.rslora);
  switch (l.quantize_base) {
    case QuantizeBase::kNone:
      break;
    case QuantizeBase::kNf4:
      out->set_quantize_base(v1::BASE_QUANTIZATION_NF4);
      break;
    case QuantizeBase::kInt8:
      out->set_quantize_base(v1::BASE_QUANTIZATION_INT8);
      break;
  }
  out->set_double_quantization(l.double_quantization);
}

absl::Status FromProto(const v1::LoraSpec& l, LoraSpec* out) {
  if (l.has_r()) out->r = l.r();
  if (l.has_alpha()) out->alpha = l.alpha();
  if (l.has_dropout()) out->dropout = l.dropout();
  out->target_modules.assign(l.target_modules().begin(), l.target_modules().end());
  out->layers.assign(l.layers().begin(), l.layers().end());
  out->rslora = l.rslora();
  switch (l.quantize_base()) {
    case v1::BASE_QUANTIZATION_UNSPECIFIED:
    case v1::BASE_QUANTIZATION_NONE:
      out->quantize_base = QuantizeBase::kNone;
      break;
    case v1::BASE_QUANTIZATION_NF4:
      out->quantize_base = QuantizeBase::kNf4;
      break;
    case v1::BASE_QUANTIZATION_INT8:
      out->quantize_base = QuantizeBase::kInt8;
      break;
    default:
      return UnknownEnum("adapter.lora.quantize_base", l.quantize_base());
  }
  out->double_quantization = l.double_quantization();
  return absl::OkStatus();
}

void ToProto(const Hyperparameters& h, v1::Hyperparameters* out) {
  if (h.epochs) out->set_epochs(*h.epochs);
  if (h.batch_size) out->set_batch_size(*h.batch_size);
  if (h.gradient_accumulation_steps)
    out->set_gradient_accumulation_steps(*h.gradient_accumulation_steps);
  if (h.learning_rate) out->set_learning_rate(*h.learning_rate);
  out->set_lr_scheduler(static_cast<v1::LrScheduler>(h.lr_scheduler));  // same numbers
  if (h.warmup_ratio) out->set_warmup_ratio(*h.warmup_ratio);
  if (h.warmup_steps) out->set_warmup_steps(*h.warmup_steps);
  if (h.weight_decay) out->set_weight_decay(*h.weight_decay);
  if (h.max_grad_norm) out->set_max_grad_norm(*h.max_grad_norm);
  if (h.max_seq_length) out->set_max_seq_length(*h.max_seq_length);
  if (h.packing) out->set_packing(*h.packing);
  out->set_loss_on(static_cast<v1::LossOn>(h.loss_on));
  if (h.eval_interval_steps) out->set_eval_interval_steps(*h.eval_interval_steps);
  if (h.log_interval_steps) out->set_log_interval_steps(*h.log_interval_steps);
  out->set_precision(static_cast<v1::Precision>(h.precision));
  if (h.gradient_checkpointing) out->set_gradient_checkpointing(*h.gradient_checkpointing);
}

absl::Status FromProto(const v1::Hyperparameters& h, Hyperparameters* out) {
  if (h.has_epochs()) out->epochs = h.epochs();
  if (h.has_batch_size()) out->batch_size = h.batch_size();
  if (h.has_gradient_accumulation_steps())
    out->gradient_accumulation_steps = h.gradient_accumulation_steps();
  if (h.has_learning_rate()) out->learning_rate = h.learning_rate();
  switch (h.lr_scheduler()) {
    case v1::LR_SCHEDULER_UNSPECIFIED:
      out->lr_scheduler = LrScheduler::kAuto;
      break;
    case v1::LR_SCHEDULER_LINEAR:
      out->lr_scheduler = LrScheduler::kLinear;
      break;
    case v1::LR_SCHEDULER_COSINE:
      out->lr_scheduler = LrScheduler::kCosine;
      break;
    case v1::LR_SCHEDULER_CONSTANT:
      out->lr_scheduler = LrScheduler::kConstant;
      break;
    default:
      return UnknownEnum("hyperparameters.lr_scheduler", h.lr_scheduler());
  }
  if (h.has_warmup_ratio()) out->warmup_ratio = h.warmup_ratio();
  if (h.has_warmup_steps()) out->warmup_steps = h.warmup_steps();
  if (h.has_weight_decay()) out->weight_decay = h.weight_decay();
  if (h.has_max_grad_norm()) out->max_grad_norm = h.max_grad_norm();
  if (h.has_max_seq_length()) out->max_seq_length = h.max_seq_length();
  if (h.has_packing()) out->packing = h.packing();
  if (h.has_gradient_checkpointing()) out->gradient_checkpointing = h.gradient_checkpointing();
  switch (h.loss_on()) {
    case v1::LOSS_ON_UNSPECIFIED:
      out->loss_on = LossOn::kAuto;
      break;
    case v1::LOSS_ON_ASSISTANT:
      out->loss_on = LossOn::kAssistant;
      break;
    case v1::LOSS_ON_ALL:
      out->loss_on = LossOn::kAll;
      break;
    default:
      return UnknownEnum("hyperparameters.loss_on", h.loss_on());
  }
  if (h.has_eval_interval_steps()) out->eval_interval_steps = h.eval_interval_steps();
  if (h.has_log_interval_steps()) out->log_interval_steps = h.log_interval_steps();
  switch (h.precision()) {
    case v1::PRECISION_UNSPECIFIED:
      out->precision = Precision::kAuto;
      break;
    case v1::PRECISION_FP32:
      out->precision = Precision::kFp32;
      break;
    case v1::PRECISION_BF16:
      out->precision = Precision::kBf16;
      break;
    default:
      return UnknownEnum("hyperparameters.precision", h.precision());
  }
  return absl::OkStatus();
}

void ToProto(const CheckpointSpec& c, v1::CheckpointSpec* out) {
  if (c.interval_steps) out->set_interval_steps(*c.interval_steps);
  if (c.keep_last) out->set_keep_last(*c.keep_last);
  if (c.keep_best) out->set_keep_best(*c.keep_best);
  if (c.early_stopping_patience) out->set_early_stopping_patience(*c.early_stopping_patience);
  if (c.early_stopping_min_delta) out->set_early_stopping_min_delta(*c.early_stopping_min_delta);
}

void FromProto(const v1::CheckpointSpec& c, CheckpointSpec* out) {
  if (c.has_interval_steps()) out->interval_steps = c.interval_steps();
  if (c.has_keep_last()) out->keep_last = c.keep_last();
  if (c.has_keep_best()) out->keep_best = c.keep_best();
  if (c.has_early_stopping_patience()) out->early_stopping_patience = c.early_stopping_patience();
  if (c.has_early_stopping_min_delta())
    out->early_stopping_min_delta = c.early_stopping_min_delta();
}

v1::CheckpointKind ToProto(CheckpointKind kind) {
  switch (kind) {
    case CheckpointKind::kStep:
      return v1::CHECKPOINT_KIND_STEP;
    case CheckpointKind::kEpoch:
      return v1::CHECKPOINT_KIND_EPOCH;
    case CheckpointKind::kPause:
      return v1::CHECKPOINT_KIND_PAUSE;
    case CheckpointKind::kFinal:
      return v1::CHECKPOINT_KIND_FINAL;
  }
  return v1::CHECKPOINT_KIND_UNSPECIFIED;
}

v1::JobEventLevel ToProto(EventLevel level) {
  switch (level) {
    case EventLevel::kInfo:
      return v1::JOB_EVENT_LEVEL_INFO;
    case EventLevel::kWarning:
      return v1::JOB_EVENT_LEVEL_WARNING;
    case EventLevel::kError:
      return v1::JOB_EVENT_LEVEL_ERROR;
  }
  return v1::JOB_EVENT_LEVEL_UNSPECIFIED;
}

std::string JobName(const std::string& job_id) {
  return absl::StartsWith(job_id, "jobs/") ? job_id : absl::StrCat("jobs/", job_id);
}

// A checkpoint viewed as a model keeps its own name ("jobs/.../checkpoints/...").
std::string ModelName(const std::string& model_id) {
  return absl::StartsWith(model_id, "models/") || absl::StartsWith(model_id, "jobs/")
             ? model_id
             : absl::StrCat("models/", model_id);
}

// fine_tune_json -> FineTuneInfo, tolerating missing keys and wrong types
// (a key that does not parse is skipped).
void FineTuneFromJson(const std::string& text, v1::FineTuneInfo* out) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  auto string_at = [&](const char* key) -> std::string {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "";
  };
  const std::string job = string_at("job");
  if (!job.empty()) out->set_job(JobName(job));
  if (auto it = j.find("method"); it != j.end()) {
    Method m = Method::kSupervised;
    if (it->is_string()) {
      for (Method candidate : {Method::kSupervised, Method::kDpo, Method::kReinforcement}) {
        if (it->get<std::string>() == MethodName(candidate)) m = candidate;
      }
    } else if (it->is_number_integer() && it->get<int>() >= 1 && it->get<int>() <= 3) {
      m = static_cast<Method>(it->get<int>());
    }
    out->set_method(ToProto(m));
  }
  out->set_training_dataset(string_at("training_dataset"));
  out->set_validation_dataset(string_at("validation_dataset"));
  if (auto it = j.find("resolved_spec"); it != j.end() && it->is_object()) {
    absl::StatusOr<JobSpec> spec = JobSpecFromJson(*it);
    if (spec.ok()) ToProto(*spec, out->mutable_resolved_spec());
  }
  try {
    if (auto it = j.find("final_train"); it != j.end() && it->is_object())
      ToProto(TrainMetricsFromJson(*it), out->mutable_final_train());
  } catch (const json::exception&) {
    out->clear_final_train();
  }
  try {
    if (auto it = j.find("final_eval"); it != j.end() && it->is_object())
      ToProto(EvalMetricsFromJson(*it), out->mutable_final_eval());
  } catch (const json::exception&) {
    out->clear_final_eval();
  }
  std::string checkpoint = string_at("checkpoint");
  if (!checkpoint.empty() && !absl::StartsWith(checkpoint, "jobs/") && !job.empty()) {
    // A bare checkpoint id ("final"): name it under its job.
    checkpoint = absl::StrCat(JobName(job), "/checkpoints/", checkpoint);
  }
  out->set_checkpoint(checkpoint);
}

}  // namespace

void ToProto(const GraderSpec& g, v1::Grader* out) {
  out->set_name(g.name);
  // The proto's enum numbers are the core's + 1 (0 is UNSPECIFIED); the
  // value is always written, so a resolved spec shows the operation applied.
  switch (g.kind) {
    case GraderKind::kStringCheck: {
      const StringCheckSpec& s = g.string_check;
      v1::StringCheckGrader* p = out->mutable_string_check();
      p->set_input(s.input);
      p->set_reference(s.reference);
      p->set_operation(static_cast<v1::StringCheckOperation>(static_cast<int>(s.operation) + 1));
      p->set_ignore_case(s.ignore_case);
      p->set_trim(s.trim);
      break;
    }
    case GraderKind::kTextSimilarity: {
      const TextSimilaritySpec& t = g.text_similarity;
      v1::TextSimilarityGrader* p = out->mutable_text_similarity();
      p->set_input(t.input);
      p->set_reference(t.reference);
      p->set_metric(static_cast<v1::TextSimilarityMetric>(static_cast<int>(t.metric) + 1));
      p->set_ignore_case(t.ignore_case);
      p->set_pass_threshold(t.pass_threshold);
      break;
    }
    case GraderKind::kJsonSchema: {
      const JsonSchemaSpec& js = g.json_schema;
      v1::JsonSchemaGrader* p = out->mutable_json_schema();
      p->set_input(js.input);
      if (js.schema.is_object()) {
        // dump() cannot throw here: replace invalid UTF-8 rather than throw.
        const std::string text = js.schema.dump(-1, ' ', false, json::error_handler_t::replace);
        (void)google::protobuf::util::JsonStringToMessage(text, p->mutable_schema());
      }
      p->set_partial_credit(js.partial_credit);
      break;
    }
    case GraderKind::kMulti: {
      v1::MultiGrader* p = out->mutable_multi();
      for (const WeightedGraderSpec& w : g.multi.graders) {
        v1::WeightedGrader* wp = p->add_graders();
        ToProto(w.grader, wp->mutable_grader());
        wp->set_weight(w.weight);
      }
      break;
    }
  }
}

absl::StatusOr<GraderSpec> GraderFromProto(const v1::Grader& p, const std::string& field) {
  GraderSpec g;
  g.name = p.name();
  switch (p.kind_case()) {
    case v1::Grader::kStringCheck: {
      const v1::StringCheckGrader& s = p.string_check();
      g.kind = GraderKind::kStringCheck;
      g.string_check.input = s.input();
      g.string_check.reference = s.reference();
      if (s.operation() < v1::STRING_CHECK_OPERATION_UNSPECIFIED ||
          s.operation() > v1::STRING_CHECK_OPERATION_REGEX) {
        return UnknownEnum(absl::StrCat(field, ".string_check.operation").c_str(), s.operation());
      }
      g.string_check.operation = s.operation() == v1::STRING_CHECK_OPERATION_UNSPECIFIED
                                     ? StringCheckOperation::kEq
                                     : static_cast<StringCheckOperation>(s.operation() - 1);
      g.string_check.ignore_case = s.ignore_case();
      g.string_check.trim = s.trim();
      break;
    }
    case v1::Grader::kTextSimilarity: {
      const v1::TextSimilarityGrader& t = p.text_similarity();
      g.kind = GraderKind::kTextSimilarity;
      g.text_similarity.input = t.input();
      g.text_similarity.reference = t.reference();
      if (t.metric() < v1::TEXT_SIMILARITY_METRIC_UNSPECIFIED ||
          t.metric() > v1::TEXT_SIMILARITY_METRIC_FUZZY) {
        return UnknownEnum(absl::StrCat(field, ".text_similarity.metric").c_str(), t.metric());
      }
      g.text_similarity.metric = t.metric() == v1::TEXT_SIMILARITY_METRIC_UNSPECIFIED
                                     ? TextSimilarityMetric::kTokenF1
                                     : static_cast<TextSimilarityMetric>(t.metric() - 1);
      g.text_similarity.ignore_case = t.ignore_case();
      g.text_similarity.pass_threshold = t.pass_threshold();
      break;
    }
    case v1::Grader::kJsonSchema: {
      const v1::JsonSchemaGrader& js = p.json_schema();
      g.kind = GraderKind::kJsonSchema;
      g.json_schema.input = js.input();
      if (js.has_schema()) {
        std::string text;
        if (!google::protobuf::util::MessageToJsonString(js.schema(), &text).ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ".json_schema.schema: is not representable as JSON"));
        }
        g.json_schema.schema = json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!g.json_schema.schema.is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ".json_schema.schema: is not representable as JSON"));
        }
      }
      g.json_schema.partial_credit = js.partial_credit();
      break;
    }
    case v1::Grader::kMulti: {
      g.kind = GraderKind::kMulti;
      const auto& subs = p.multi().graders();
      for (int i = 0; i < subs.size(); ++i) {
        WeightedGraderSpec w;
        absl::StatusOr<GraderSpec> sub = GraderFromProto(
            subs[i].grader(), absl::StrCat(field, ".multi.graders[", i, "].grader"));
        if (!sub.ok()) return sub.status();
        w.grader = std::move(*sub);
        w.weight = subs[i].weight();
        g.multi.graders.push_back(std::move(w));
      }
      break;
    }
    case v1::Grader::KIND_NOT_SET:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": needs one of string_check, text_similarity, json_schema, multi"));
  }
  return g;
}

v1::JobState ToProto(JobState state) { return static_cast<v1::JobState>(state); }

std::optional<JobState> FromProto(v1::JobState state) {
  if (state < v1::JOB_STATE_QUEUED || state > v1::JOB_STATE_CANCELLED) return std::nullopt;
  return static_cast<JobState>(state);
}

v1::TrainingMethod ToProto(Method method) { return static_cast<v1::TrainingMethod>(method); }

v1::ModelKind ToProto(ModelKind kind) { return static_cast<v1::ModelKind>(kind); }

std::optional<ModelKind> FromProto(v1::ModelKind kind) {
  if (kind < v1::MODEL_KIND_BASE || kind > v1::MODEL_KIND_FULL_FINE_TUNE) return std::nullopt;
  return static_cast<ModelKind>(kind);
}

void ToProto(const JobSpec& s, v1::JobSpec* out) {
  out->set_base_model(s.base_model);
  out->set_training_dataset(s.training_dataset);
  out->set_validation_dataset(s.validation_dataset);
  out->set_validation_fraction(s.validation_fraction);
  out->set_method(ToProto(s.method));
  switch (s.adapter.kind) {
    case AdapterKind::kLora:
      ToProto(s.adapter.lora, out->mutable_adapter()->mutable_lora());
      break;
    case AdapterKind::kFull: {
      v1::FullSpec* full = out->mutable_adapter()->mutable_full();
      for (int layer : s.adapter.full.frozen_layers) full->add_frozen_layers(layer);
      full->set_freeze_embeddings(s.adapter.full.freeze_embeddings);
      break;
    }
    case AdapterKind::kAuto:
      break;
  }
  ToProto(s.hyperparameters, out->mutable_hyperparameters());
  ToProto(s.checkpoints, out->mutable_checkpoints());
  if (s.method == Method::kDpo) ToProto(s.dpo, out->mutable_dpo());
  if (s.reinforcement) ToProto(*s.reinforcement, out->mutable_reinforcement());
  if (s.seed) out->set_seed(*s.seed);
  out->set_suffix(s.suffix);
  for (const auto& [k, v] : s.metadata) (*out->mutable_metadata())[k] = v;
  out->set_device(s.device);
}

absl::StatusOr<JobSpec> JobSpecFromProto(const v1::JobSpec& p) {
  JobSpec s;
  s.base_model = p.base_model();
  s.training_dataset = p.training_dataset();
  s.validation_dataset = p.validation_dataset();
  s.validation_fraction = p.validation_fraction();
  switch (p.method()) {
    case v1::TRAINING_METHOD_UNSPECIFIED:
    case v1::TRAINING_METHOD_SUPERVISED:
      s.method = Method::kSupervised;
      break;
    case v1::TRAINING_METHOD_DPO:
      s.method = Method::kDpo;
      break;
    case v1::TRAINING_METHOD_REINFORCEMENT:
      s.method = Method::kReinforcement;
      break;
    default:
      return UnknownEnum("method", p.method());
  }
  if (p.has_dpo() && s.method != Method::kDpo) {
    return absl::InvalidArgumentError("dpo may only be set with method TRAINING_METHOD_DPO");
  }
  if (p.has_reinforcement() && s.method != Method::kReinforcement) {
    return absl::InvalidArgumentError(
        "reinforcement may only be set with method TRAINING_METHOD_REINFORCEMENT");
  }
  if (absl::Status st = FromProto(p.dpo(), &s.dpo); !st.ok()) return st;
  if (s.method == Method::kReinforcement) {
    ReinforcementSpec r;
    if (absl::Status st = FromProto(p.reinforcement(), &r); !st.ok()) return st;
    s.reinforcement = std::move(r);
  }
  switch (p.adapter().kind_case()) {
    case v1::AdapterSpec::kLora:
      s.adapter.kind = AdapterKind::kLora;
      if (absl::Status st = FromProto(p.adapter().lora(), &s.adapter.lora); !st.ok()) return st;
      break;
    case v1::AdapterSpec::kFull:
      s.adapter.kind = AdapterKind::kFull;
      s.adapter.full.frozen_layers.assign(p.adapter().full().frozen_layers().begin(),
                                          p.adapter().full().frozen_layers().end());
      s.adapter.full.freeze_embeddings = p.adapter().full().freeze_embeddings();
      break;
    case v1::AdapterSpec::KIND_NOT_SET:
      s.adapter.kind = AdapterKind::kAuto;
      break;
  }
  if (absl::Status st = FromProto(p.hyperparameters(), &s.hyperparameters); !st.ok()) return st;
  FromProto(p.checkpoints(), &s.checkpoints);
  if (p.has_seed()) s.seed = p.seed();
  s.suffix = p.suffix();
  s.metadata.insert(p.metadata().begin(), p.metadata().end());
  s.device = p.device();
  return s;
}

void ToProto(const TrainMetrics& m, v1::TrainMetrics* out) {
  out->set_step(m.step);
  out->set_total_steps(m.total_steps);
  out->set_epoch(m.epoch);
  out->set_loss(m.loss);
  out->set_mean_token_accuracy(m.mean_token_accuracy);
  out->set_learning_rate(m.learning_rate);
  out->set_tokens_per_second(m.tokens_per_second);
  out->set_grad_norm(m.grad_norm);
  out->set_tokens(m.tokens);
  out->set_peak_memory_bytes(m.peak_memory_bytes);
  if (m.dpo) ToProto(*m.dpo, out->mutable_dpo());
  if (m.reinforcement) ToProto(*m.reinforcement, out->mutable_reinforcement());
}

void ToProto(const EvalMetrics& m, v1::EvalMetrics* out) {
  out->set_step(m.step);
  out->set_epoch(m.epoch);
  out->set_validation_loss(m.validation_loss);
  out->set_validation_mean_token_accuracy(m.validation_mean_token_accuracy);
  out->set_is_best(m.is_best);
  out->set_duration_seconds(m.duration_seconds);
  if (m.dpo) ToProto(*m.dpo, out->mutable_dpo());
  if (m.reinforcement) ToProto(*m.reinforcement, out->mutable_reinforcement());
}

void ToProto(const CheckpointInfo& c, const std::string& job_id, v1::Checkpoint* out) {
  out->set_name(absl::StrCat(JobName(job_id), "/checkpoints/", c.checkpoint_id));
  out->set_kind(ToProto(c.kind));
  out->set_step(c.step);
  out->set_epoch(c.epoch);
  out->set_train_loss(c.train_loss);
  if (c.validation_loss) out->set_validation_loss(*c.validation_loss);
  out->set_is_best(c.is_best);
  out->set_path(c.path);
  out->set_size_bytes(c.size_bytes);
  if (c.create_time_ms > 0) *out->mutable_create_time() = Time(c.create_time_ms);
}

void ToProto(const JobEvent& e, v1::JobEvent* out) {
  out->set_job(JobName(e.job_id));
  out->set_sequence(e.sequence);
  if (e.time_ms > 0) *out->mutable_time() = Time(e.time_ms);
  out->set_level(ToProto(e.level));
  out->set_message(e.message);
  if (e.state_change) {
    v1::StateChange* sc = out->mutable_state_change();
    if (e.state_change->from) sc->set_from_state(ToProto(*e.state_change->from));
    sc->set_to_state(ToProto(e.state_change->to));
    sc->set_reason(e.state_change->reason);
    for (const Issue& i : e.state_change->errors) dataset::ToProto(i, sc->add_errors());
  } else if (e.train) {
    ToProto(*e.train, out->mutable_train());
  } else if (e.eval) {
    ToProto(*e.eval, out->mutable_eval());
  } else if (e.checkpoint) {
    ToProto(*e.checkpoint, e.job_id, out->mutable_checkpoint());
  }
}

void ToProto(const Job& job, v1::Job* out) {
  out->set_name(JobName(job.job_id));
  out->set_job_id(job.job_id);
  out->set_state(ToProto(job.state));
  ToProto(job.spec, out->mutable_spec());
  if (job.resolved_spec) ToProto(*job.resolved_spec, out->mutable_resolved_spec());
  for (const Issue& i : job.errors) dataset::ToProto(i, out->add_errors());
  for (const Issue& i : job.warnings) dataset::ToProto(i, out->add_warnings());
  if (!job.fine_tuned_model.empty()) out->set_fine_tuned_model(ModelName(job.fine_tuned_model));
  out->set_device(job.device);
  out->set_queue_position(job.queue_position);
  out->set_step(job.step);
  out->set_total_steps(job.total_steps);
  out->set_epoch(job.epoch);
  out->set_trained_tokens(job.trained_tokens);
  out->set_training_examples(job.training_examples);
  out->set_validation_examples(job.validation_examples);
  if (job.latest_train) ToProto(*job.latest_train, out->mutable_latest_train());
  if (job.latest_eval) ToProto(*job.latest_eval, out->mutable_latest_eval());
  if (job.best_eval) ToProto(*job.best_eval, out->mutable_best_eval());
  out->set_restarts(job.restarts);
  out->set_last_event_sequence(job.last_event_sequence);
  if (job.create_time_ms > 0) *out->mutable_create_time() = Time(job.create_time_ms);
  if (job.start_time_ms > 0) *out->mutable_start_time() = Time(job.start_time_ms);
  if (job.end_time_ms > 0) *out->mutable_end_time() = Time(job.end_time_ms);
  if (job.estimated_end_time_ms > 0)
    *out->mutable_estimated_end_time() = Time(job.estimated_end_time_ms);
}

void ToProto(const ModelRecord& m, v1::Model* out) {
  out->set_name(ModelName(m.model_id));
  out->set_model_id(m.model_id);
  out->set_kind(ToProto(m.kind));
  out->set_architecture(m.architecture);
  if (!m.base_model.empty()) out->set_base_model(ModelName(m.base_model));
  out->set_path(m.path);
  out->set_parameter_count(m.parameter_count);
  out->set_adapter_parameter_count(m.adapter_parameter_count);
  out->set_size_bytes(m.size_bytes);
  out->set_context_length(m.context_length);
  out->set_vocab_size(m.vocab_size);
  out->set_dtype(m.dtype);
  out->set_has_chat_template(m.has_chat_template);
  if (m.lora) {
    v1::LoraSpec* l = out->mutable_lora();
    l->set_r(static_cast<int32_t>(m.lora->r));
    l->set_alpha(m.lora->alpha);
    l->set_dropout(m.lora->dropout);
    for (const std::string& t : m.lora->target_modules) l->add_target_modules(t);
    for (int64_t layer : m.lora->layers) l->add_layers(static_cast<int32_t>(layer));
    l->set_rslora(m.lora->rslora);
  }
  if (!m.fine_tune_json.empty()) FineTuneFromJson(m.fine_tune_json, out->mutable_fine_tune());
  out->set_description(m.description);
  for (const auto& [k, v] : m.labels) (*out->mutable_labels())[k] = v;
  if (m.create_time_ms > 0) *out->mutable_create_time() = Time(m.create_time_ms);
}

}  // namespace switchyard::training
