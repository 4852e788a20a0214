// The rules of a job spec: the checks CreateJob makes before queueing (field
// ranges and consistency, each error naming the field), and the "auto"
// defaults, chosen from the data and the model the way hosted fine-tuning APIs
// choose them.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_SPEC_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/training/job_types.h"
#include "shared/model/config.h"

namespace switchyard::training {

// INVALID_ARGUMENT naming the field ("hyperparameters.learning_rate: must be
// in (0, 1], got -1") for a value out of range or settings that contradict
// each other. Checks nothing that needs the registry or the data.
absl::Status ValidateJobSpec(const JobSpec& spec);

// The reinforcement settings alone: the grader (ValidateGrader, errors under
// "reinforcement.grader") and each set field in its range, INVALID_ARGUMENT
// naming it ("reinforcement.num_generations: must be in [2, 64], got 1").
// Part of ValidateJobSpec with method reinforcement.
absl::Status ValidateReinforcementSpec(const ReinforcementSpec& spec);

// "support-faq@3" -> ("support-faq", 3); "name" and "name@latest" give 0
// (latest). A leading "datasets/" is accepted. INVALID_ARGUMENT naming `field`.
absl::Status ParseDatasetRef(const std::string& ref, const std::string& field, std::string* name,
                             int64_t* version);

// What the auto defaults depend on.
struct SpecFacts {
  int64_t training_examples = 0;
  int64_t longest_example = 0;  // tokens
  int64_t context_length = 0;   // the model's
  model::Architecture arch = model::Architecture::kLlama;
  bool cuda = false;  // training on a GPU
  bool bf16 = false;  // the device computes bf16 natively (a GPU, an AVX-512 BF16 CPU)
  // When continuing a fine-tuned model: its adapter's settings.
  bool parent_is_adapter = false;
  bool parent_is_full = false;
};

// Every unset (auto) field of `spec` filled in; `seed` fills an unset seed.
JobSpec ResolveJobSpec(const JobSpec& spec, const SpecFacts& facts, uint64_t seed);

// Steps the resolved spec implies for `rows` training rows.
int64_t StepsFor(const JobSpec& resolved, int64_t rows);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_SPEC_H_
