// Preparing a job to train: where its starting weights come from, its data
// pinned and tokenized, every "auto" setting resolved, the model loaded. What
// VALIDATING does, and what CreateJob(validate_only) reports. Problems with
// the user's data or settings come back as Issues (naming the line or field);
// a Status error means the server could not do the work.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_PREPARER_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_PREPARER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/dataset/dataset_catalog.h"
#include "services/training/job_store.h"
#include "services/training/job_types.h"
#include "services/training/model_registry.h"
#include "services/training/trainer.h"

namespace switchyard::training {

// What a job draws on. Not owned.
struct JobSources {
  std::string data_dir;
  ModelRegistry* registry = nullptr;
  dataset::DatasetCatalog* datasets = nullptr;
  JobStore* jobs = nullptr;
  std::string JobDir(const std::string& job_id) const { return data_dir + "/jobs/" + job_id; }
};

// Where a job's starting weights come from.
struct ResolvedBase {
  std::string root_id;      // the registered base at the root ("tiny")
  std::string base_dir;     // full weights and tokenizer
  std::string adapter_dir;  // set when continuing a LoRA adapter
  bool parent_is_full = false;
};

// "cpu" or "cuda:N" for a spec's device ("" / "auto": CUDA when present).
std::string DeviceFor(const std::string& spec_device);

// A registered model name ("tiny", "models/ft:tiny:a:ft-1") or a checkpoint
// ("jobs/<id>/checkpoints/<checkpoint>"). NOT_FOUND naming base_model.
absl::StatusOr<ResolvedBase> ResolveBase(const JobSources& sources, const std::string& name);

struct PreparedJob {
  std::vector<Issue> errors;  // the job cannot train; nothing else is set
  std::vector<Issue> warnings;
  JobSpec resolved;  // every auto value filled in
  ResolvedBase base;
  TrainerSetup setup;  // the model only when load_model
};

// With load_model (a worker's VALIDATING): pins the data into the job's
// directory first, then reads the pinned copy; loads the model and adapter.
// Without (validate_only): reads the dataset in place and writes nothing.
absl::StatusOr<PreparedJob> PrepareJob(const JobSources& sources, const Job& job, bool load_model);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_PREPARER_H_
