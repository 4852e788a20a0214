// Conversions between the training core's plain C++ types (job_types.h,
// model_registry.h) and switchyard.v1 training messages. Used by the gRPC
// adapter and by the CLI. Times in Unix milliseconds become
// google.protobuf.Timestamp; a zero time ("not yet") stays unset.
//
// The core mirrors the v1 API; JobSpecFromProto refuses what it cannot
// represent with INVALID_ARGUMENT naming the field rather than dropping it
// silently.
#ifndef SWITCHYARD_SERVICES_TRAINING_TRAINING_PROTO_H_
#define SWITCHYARD_SERVICES_TRAINING_TRAINING_PROTO_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "services/training/graders.h"
#include "services/training/job_types.h"
#include "services/training/model_registry.h"
#include "switchyard/v1/training.pb.h"

namespace switchyard::training {

v1::JobState ToProto(JobState state);
// nullopt for JOB_STATE_UNSPECIFIED and unknown values.
std::optional<JobState> FromProto(v1::JobState state);
v1::TrainingMethod ToProto(Method method);
v1::ModelKind ToProto(ModelKind kind);
// nullopt for MODEL_KIND_UNSPECIFIED (= every kind).
std::optional<ModelKind> FromProto(v1::ModelKind kind);

// Unset proto `optional` fields stay unset (auto) and vice versa.
void ToProto(const JobSpec& spec, v1::JobSpec* out);
// INVALID_ARGUMENT naming the field for values the core cannot represent
// (unknown enum values, settings of another method) and, with method
// reinforcement, for a missing or invalid grader ("reinforcement.grader: is
// required", ValidateGrader's errors under "reinforcement.grader").
absl::StatusOr<JobSpec> JobSpecFromProto(const v1::JobSpec& spec);

// Every field of the grader tree. A json_schema schema becomes the Struct;
// one that is not a JSON object (a programmatic `true`) leaves it empty, the
// schema that accepts everything.
void ToProto(const GraderSpec& grader, v1::Grader* out);
// The grader as the core holds it; `field` is its path in the request
// ("grader", "reinforcement.grader"). INVALID_ARGUMENT naming the field below
// it for a grader without a kind or an unknown enum value. Checks only the
// form; call ValidateGrader before grading.
absl::StatusOr<GraderSpec> GraderFromProto(const v1::Grader& grader, const std::string& field);

void ToProto(const TrainMetrics& metrics, v1::TrainMetrics* out);
void ToProto(const EvalMetrics& metrics, v1::EvalMetrics* out);
// `job_id` names the checkpoint: "jobs/{job_id}/checkpoints/{checkpoint_id}".
void ToProto(const CheckpointInfo& checkpoint, const std::string& job_id, v1::Checkpoint* out);
void ToProto(const JobEvent& event, v1::JobEvent* out);
void ToProto(const Job& job, v1::Job* out);
// fine_tune_json (job, method, training_dataset, validation_dataset,
// resolved_spec, final_train, final_eval, checkpoint) becomes Model.fine_tune;
// missing or malformed keys are left unset.
void ToProto(const ModelRecord& model, v1::Model* out);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_TRAINING_PROTO_H_
