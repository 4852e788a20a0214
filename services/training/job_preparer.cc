#include "services/training/job_preparer.h"

#include <ATen/Context.h>

#include <filesystem>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_manager.h"
#include "services/training/batching.h"
#include "services/training/grpo.h"
#include "services/training/job_spec.h"
#include "services/training/preference_data.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/generate.h"
#include "shared/model/lora.h"
#include "shared/model/runtime.h"
#include "shared/text/model_text.h"

namespace switchyard::training {

namespace fs = std::filesystem;

std::string DeviceFor(const std::string& d) {
  if (d.empty() || d == "auto") return at::hasCUDA() ? "cuda:0" : "cpu";
  if (d == "cuda") return "cuda:0";
  return d;
}

absl::StatusOr<ResolvedBase> ResolveBase(const JobSources& m, const std::string& name) {
  const size_t marker = name.find("/checkpoints/");
  if (absl::StartsWith(name, "jobs/") && marker != std::string::npos) {
    const std::string job_id = name.substr(5, marker - 5);
    const std::string checkpoint = name.substr(marker + 13);
    absl::StatusOr<Job> job = m.jobs->Get(job_id);
    if (!job.ok()) {
      return absl::NotFoundError(absl::StrCat("base_model: jobs/", job_id, " not found"));
    }
    SY_ASSIGN_OR_RETURN(ResolvedBase parent, ResolveBase(m, job->spec.base_model));
    const std::string dir = m.JobDir(job_id) + "/checkpoints/" + checkpoint;
    if (checkpoint.empty() || checkpoint[0] == '.' || checkpoint.find('/') != std::string::npos ||
        !fs::exists(dir + "/trainer_state.json")) {
      return absl::NotFoundError(
          absl::StrCat("base_model: ", name, " is not a checkpoint the job keeps"));
    }
    if (fs::exists(dir + "/adapter_config.json")) {
      parent.adapter_dir = dir;
      parent.parent_is_full = false;
    } else {
      parent.base_dir = dir;
      parent.adapter_dir.clear();
      parent.parent_is_full = true;
    }
    return parent;
  }
  absl::StatusOr<ModelRecord> record = m.registry->Get(name);
  if (!record.ok()) {
    return absl::Status(record.status().code(),
                        absl::StrCat("base_model: ", record.status().message(),
                                     absl::IsNotFound(record.status())
                                         ? "; register it with `switchyard models register`"
                                         : ""));
  }
  ResolvedBase b;
  switch (record->kind) {
    case ModelKind::kBase:
      b.root_id = record->model_id;
      b.base_dir = record->path;
      break;
    case ModelKind::kFullFineTune:
      b.root_id = record->base_model;
      b.base_dir = record->path;
      b.parent_is_full = true;
      break;
    case ModelKind::kAdapter: {
      SY_ASSIGN_OR_RETURN(ModelRecord base, m.registry->Get(record->base_model));
      b.root_id = base.kind == ModelKind::kBase ? base.model_id : base.base_model;
      b.base_dir = base.path;
      b.adapter_dir = record->path;
      break;
    }
  }
  return b;
}

absl::StatusOr<PreparedJob> PrepareJob(const JobSources& m, const Job& job, bool load_model) {
  PreparedJob p;
  const JobSpec& spec = job.spec;
  absl::StatusOr<ResolvedBase> base = ResolveBase(m, spec.base_model);
  if (!base.ok()) {
    p.errors.push_back(
        MakeIssue("model_not_found", "base_model", std::string(base.status().message())));
    return p;
  }
  p.base = *base;
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(p.base.base_dir);
  if (!config.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(config.status().message())));
    return p;
  }
  if (config->arch == model::Architecture::kBert) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model",
                  "BertModel is an encoder; fine-tuning needs a causal language model"));
    return p;
  }
  absl::StatusOr<text::ModelText> text = text::LoadModelText(p.base.base_dir);
  if (!text.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(text.status().message())));
    return p;
  }
  const std::string device = DeviceFor(spec.device);
  const bool cuda = absl::StartsWith(device, "cuda");
  if (cuda && !at::hasCUDA()) {
    p.errors.push_back(
        MakeIssue("device_unavailable", "device",
                  "CUDA is not available (this LibTorch build or machine has no GPU); "
                  "use device cpu"));
    return p;
  }

  // The data, pinned into the job directory the first time, so a resumed job
  // reads exactly what it started with even if the dataset is deleted. The
  // validation file goes first: a pinned train.jsonl means the pin is whole.
  std::string train_path, validation_path;
  const std::string pinned = m.JobDir(job.job_id) + "/data";
  const bool pin = load_model;  // validate_only reads in place and writes nothing
  if (pin && fs::exists(pinned + "/train.jsonl")) {
    train_path = pinned + "/train.jsonl";
    if (fs::exists(pinned + "/validation.jsonl")) validation_path = pinned + "/validation.jsonl";
  } else {
    auto version_of = [&](const std::string& ref, const char* field,
                          std::string* name) -> absl::StatusOr<dataset::VersionRecord> {
      int64_t version;
      SY_RETURN_IF_ERROR(ParseDatasetRef(ref, field, name, &version));
      absl::StatusOr<dataset::VersionRecord> v = m.datasets->GetVersion(*name, version);
      if (!v.ok()) {
        return absl::Status(v.status().code(), absl::StrCat(field, ": ", v.status().message()));
      }
      return v;
    };
    std::string name;
    absl::StatusOr<dataset::VersionRecord> v =
        version_of(spec.training_dataset, "training_dataset", &name);
    if (!v.ok()) {
      p.errors.push_back(
          MakeIssue("dataset_not_found", "training_dataset", std::string(v.status().message())));
      return p;
    }
    train_path = dataset::VersionFilePath(m.data_dir, name, v->version, "train");
    if (!spec.validation_dataset.empty()) {
      std::string vname;
      absl::StatusOr<dataset::VersionRecord> vv =
          version_of(spec.validation_dataset, "validation_dataset", &vname);
      if (!vv.ok()) {
        p.errors.push_back(MakeIssue("dataset_not_found", "validation_dataset",
                                     std::string(vv.status().message())));
        return p;
      }
      validation_path = dataset::VersionFilePath(m.data_dir, vname, vv->version, "train");
    } else if (spec.validation_fraction == 0) {
      for (const dataset::FileRecord& f : v->files) {
        if (f.split == "validation") {
          validation_path = dataset::VersionFilePath(m.data_dir, name, v->version, "validation");
        }
      }
    }
    if (pin) {
      SY_RETURN_IF_ERROR(MakeDirs(pinned));
      if (!validation_path.empty()) {
        SY_RETURN_IF_ERROR(LinkOrCopyFile(validation_path, pinned + "/validation.jsonl"));
        validation_path = pinned + "/validation.jsonl";
      }
      SY_RETURN_IF_ERROR(LinkOrCopyFile(train_path, pinned + "/train.jsonl"));
      train_path = pinned + "/train.jsonl";
    }
  }

  const Hyperparameters& hp = spec.hyperparameters;
  if (hp.max_seq_length && *hp.max_seq_length > config->max_position_embeddings) {
    p.errors.push_back(
        MakeIssue("invalid_settings", "hyperparameters.max_seq_length",
                  absl::StrCat("is ", *hp.max_seq_length, ", more than the model's context of ",
                               config->max_position_embeddings, " tokens")));
    return p;
  }
  SftTokenizeOptions to;
  to.loss_on = hp.loss_on == LossOn::kAll ? LossOn::kAll : LossOn::kAssistant;
  to.max_seq_length = hp.max_seq_length.value_or(config->max_position_embeddings);
  const bool dpo = spec.method == Method::kDpo;
  const bool rl = spec.method == Method::kReinforcement && spec.reinforcement;
  if (rl) {
    // Room for the sampled completion after each prompt.
    to.max_seq_length = std::max<int64_t>(
        1, to.max_seq_length - spec.reinforcement->max_completion_tokens.value_or(256));
  }
  std::vector<RlExample> train_prompts, validation_prompts;
  // Reads one file into `examples` (supervised), `pairs` (DPO) or the prompts
  // (reinforcement; by `field`).
  auto read = [&](const std::string& path, const char* field, std::vector<SftExample>* examples,
                  std::vector<PreferenceExample>* pairs) -> absl::StatusOr<TokenizeReport> {
    if (rl) {
      SY_ASSIGN_OR_RETURN(RlData d, TokenizeRlFile(path, *text, spec.reinforcement->grader, to));
      (std::string(field) == "training_dataset" ? train_prompts : validation_prompts) =
          std::move(d.examples);
      return static_cast<TokenizeReport>(d);
    }
    if (dpo) {
      SY_ASSIGN_OR_RETURN(PreferenceData d, TokenizePreferenceFile(path, *text, to));
      *pairs = std::move(d.examples);
      return static_cast<TokenizeReport>(d);
    }
    SY_ASSIGN_OR_RETURN(SftData d, TokenizeSftFile(path, *text, to));
    *examples = std::move(d.examples);
    return static_cast<TokenizeReport>(d);
  };
  std::vector<SftExample> train_examples, validation_examples;
  std::vector<PreferenceExample> train_pairs, validation_pairs;
  absl::StatusOr<TokenizeReport> train =
      read(train_path, "training_dataset", &train_examples, &train_pairs);
  if (!train.ok()) {
    p.errors.push_back(MakeIssue(
        absl::IsFailedPrecondition(train.status()) ? "no_chat_template" : "unreadable_data",
        "training_dataset", std::string(train.status().message())));
    return p;
  }
  p.errors = train->errors;
  p.warnings = train->warnings;
  if (!validation_path.empty()) {
    to.file = "validation";
    absl::StatusOr<TokenizeReport> v =
        read(validation_path, "validation_dataset", &validation_examples, &validation_pairs);
    if (!v.ok()) {
      p.errors.push_back(
          MakeIssue("unreadable_data", "validation_dataset", std::string(v.status().message())));
      return p;
    }
    p.errors.insert(p.errors.end(), v->errors.begin(), v->errors.end());
    p.warnings.insert(p.warnings.end(), v->warnings.begin(), v->warnings.end());
  }
  if (!p.errors.empty()) return p;
  if (train_examples.empty() && train_pairs.empty() && train_prompts.empty()) {
    p.errors.push_back(MakeIssue("no_examples", "training_dataset",
                                 "no training example has a token the loss covers"));
    return p;
  }

  uint64_t seed;
  if (job.resolved_spec && job.resolved_spec->seed) {
    seed = *job.resolved_spec->seed;  // a resumed job keeps the seed it drew
  } else if (!absl::SimpleHexAtoi(RandomHex(6), &seed)) {
    seed = 0;
  }
  if (spec.validation_fraction > 0) {
    // A seeded held-out split: the first k of a shuffled order.
    auto split = [&](auto& train_items, auto& validation_items) {
      const uint64_t split_seed = spec.seed.value_or(seed);
      std::vector<int64_t> order =
          ShuffledOrder(static_cast<int64_t>(train_items.size()), split_seed, -1);
      const size_t k = static_cast<size_t>(spec.validation_fraction * train_items.size());
      std::remove_reference_t<decltype(train_items)> kept;
      for (size_t i = 0; i < order.size(); ++i) {
        (i < k ? validation_items : kept).push_back(std::move(train_items[order[i]]));
      }
      train_items = std::move(kept);
    };
    split(train_examples, validation_examples);
    split(train_pairs, validation_pairs);
    split(train_prompts, validation_prompts);
  }
  SpecFacts facts;
  facts.training_examples = static_cast<int64_t>(dpo  ? train_pairs.size()
                                                 : rl ? train_prompts.size()
                                                      : train_examples.size());
  for (const RlExample& e : train_prompts) {
    facts.longest_example = std::max<int64_t>(facts.longest_example, e.prompt_ids.size());
  }
  for (const SftExample& e : train_examples) {
    facts.longest_example = std::max<int64_t>(facts.longest_example, e.ids.size());
  }
  for (const PreferenceExample& e : train_pairs) {
    facts.longest_example = std::max<int64_t>(facts.longest_example,
                                              std::max(e.chosen.ids.size(), e.rejected.ids.size()));
  }
  facts.context_length = config->max_position_embeddings;
  facts.arch = config->arch;
  facts.cuda = cuda;
  facts.bf16 = cuda || model::CpuSupportsBf16();
  facts.parent_is_adapter = !p.base.adapter_dir.empty();
  facts.parent_is_full = p.base.parent_is_full;
  p.resolved = ResolveJobSpec(spec, facts, seed);
  const bool lora = p.resolved.adapter.kind == AdapterKind::kLora;
  std::optional<model::LoraConfig> parent_lora;
  if (!p.base.adapter_dir.empty()) {
    if (!lora) {
      p.errors.push_back(
          MakeIssue("invalid_settings", "adapter",
                    "the base is a LoRA fine-tune; it continues as LoRA (drop full)"));
      return p;
    }
    absl::StatusOr<std::string> text_config = ReadFile(p.base.adapter_dir + "/adapter_config.json");
    if (text_config.ok()) {
      absl::StatusOr<model::LoraConfig> c = model::ParseAdapterConfig(*text_config);
      if (c.ok()) parent_lora = *c;
    }
    if (parent_lora && spec.adapter.lora.r && *spec.adapter.lora.r != parent_lora->r) {
      p.errors.push_back(MakeIssue(
          "invalid_settings", "adapter.lora.r",
          absl::StrCat("the base adapter has rank ", parent_lora->r, "; leave r unset or use it")));
      return p;
    }
    if (parent_lora) {
      LoraSpec& l = p.resolved.adapter.lora;
      l.r = static_cast<int>(parent_lora->r);
      l.alpha = parent_lora->alpha;
      l.target_modules = parent_lora->target_modules;
      l.layers.assign(parent_lora->layers_to_transform.begin(),
                      parent_lora->layers_to_transform.end());
      l.rslora = parent_lora->use_rslora;
    }
  }
  if (validation_examples.empty() && validation_pairs.empty() && validation_prompts.empty()) {
    for (auto [set, field] :
         {std::pair<bool, const char*>{p.resolved.checkpoints.keep_best.value_or(false),
                                       "checkpoints.keep_best"},
          {p.resolved.checkpoints.early_stopping_patience.value_or(0) > 0,
           "checkpoints.early_stopping_patience"}}) {
      if (!set) continue;
      p.errors.push_back(
          MakeIssue("invalid_settings", field,
                    "needs validation data: set validation_dataset or "
                    "validation_fraction, or upload the dataset with a validation file"));
      return p;
    }
  }
  p.setup.spec = p.resolved;
  p.setup.train = std::move(train_examples);
  p.setup.validation = std::move(validation_examples);
  p.setup.train_pairs = std::move(train_pairs);
  p.setup.validation_pairs = std::move(validation_pairs);
  p.setup.train_prompts = std::move(train_prompts);
  p.setup.validation_prompts = std::move(validation_prompts);
  p.setup.checkpoints_dir = m.JobDir(job.job_id) + "/checkpoints";
  p.setup.base_dir = p.base.base_dir;
  p.setup.base_model_id = p.base.root_id;
  if (!load_model) return p;

  const at::ScalarType dtype =
      p.resolved.hyperparameters.precision == Precision::kBf16 ? at::kBFloat16 : at::kFloat;
  SY_ASSIGN_OR_RETURN(at::Device dev, model::ParseDevice(p.resolved.device));
  model::LoadOptions load{dtype, dev};
  if (lora) {
    const LoraSpec& l = p.resolved.adapter.lora;
    load.quantize_base = l.quantize_base == QuantizeBase::kNf4    ? model::BaseQuantization::kNf4
                         : l.quantize_base == QuantizeBase::kInt8 ? model::BaseQuantization::kInt8
                                                                  : model::BaseQuantization::kNone;
    load.double_quant = l.double_quantization;
  }
  absl::StatusOr<std::unique_ptr<model::CausalLm>> lm =
      model::CausalLm::Load(p.base.base_dir, load);
  if (!lm.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(lm.status().message())));
    return p;
  }
  p.setup.model = std::move(*lm);
  if (rl) {
    absl::StatusOr<model::GenerationDefaults> defaults =
        model::LoadGenerationDefaults(p.base.base_dir, *config);
    if (!defaults.ok()) {
      p.errors.push_back(
          MakeIssue("model_load_failed", "base_model", std::string(defaults.status().message())));
      return p;
    }
    p.setup.eos_token_ids = defaults->eos_token_ids;
    p.setup.text = std::make_shared<text::ModelText>(std::move(*text));
  }
  const bool frozen_reference =
      !lora && ((dpo && !p.resolved.dpo.precompute_reference_logprobs.value_or(true)) ||
                (rl && p.resolved.reinforcement->kl_beta.value_or(0) > 0));
  if (frozen_reference) {
    // The frozen reference: a second copy of the starting weights.
    absl::StatusOr<std::unique_ptr<model::CausalLm>> ref =
        model::CausalLm::Load(p.base.base_dir, {dtype, dev});
    if (!ref.ok()) {
      p.errors.push_back(
          MakeIssue("model_load_failed", "base_model", std::string(ref.status().message())));
      return p;
    }
    p.setup.reference_model = std::move(*ref);
  }
  if (!p.base.adapter_dir.empty()) {
    absl::StatusOr<model::LoraAdapter> adapter =
        model::LoadPeftAdapter(p.base.adapter_dir, dtype, dev);
    if (!adapter.ok()) {
      p.errors.push_back(
          MakeIssue("model_load_failed", "base_model", std::string(adapter.status().message())));
      return p;
    }
    // The optimizer updates the adapter in place: own its memory.
    for (auto& [path, w] : adapter->modules) {
      w.a = w.a.clone();
      w.b = w.b.clone();
    }
    p.setup.start_adapter = std::move(*adapter);
  }
  return p;
}

}  // namespace switchyard::training
