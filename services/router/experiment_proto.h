// Experiment protos <-> the router's core: ids, validation with field
// paths, weights, stored records, and interactions as the API shows them.
#ifndef SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_PROTO_H_
#define SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_PROTO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/router/context_prompt.h"
#include "services/router/experiment_assigner.h"
#include "services/router/experiment_report.h"
#include "services/router/experiment_store.h"
#include "switchyard/v1/router.pb.h"

namespace switchyard::router {

// "experiments/x" or "x" -> "x"; INVALID_ARGUMENT naming `field` when the
// id is not 1-63 of [a-z0-9._-] starting with a letter or digit.
absl::StatusOr<std::string> ExperimentIdFrom(const std::string& name, const char* field);

// Checks every field of an experiment as given by a client (arms, weights,
// shadow, bandit, scale, analysis, templates); INVALID_ARGUMENT names the
// field ("arms[1].retrieval.collection", "weights.rag").
absl::Status ValidateExperiment(const v1::Experiment& experiment);

// Configured weights, normalised to sum to 1 (empty = equal).
std::map<std::string, double> NormalizedWeights(const v1::Experiment& experiment);
// The arms with their weights in force (effective_weights).
std::vector<WeightedArm> ArmsInForce(const v1::Experiment& experiment);
const v1::Arm* FindArm(const v1::Experiment& experiment, const std::string& name);

ExperimentRecord ToRecord(const v1::Experiment& experiment);
absl::StatusOr<v1::Experiment> FromRecord(const ExperimentRecord& record);

ContextTemplate ToContextTemplate(const v1::ContextPrompt& prompt);
std::vector<Message> ToMessages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in);
void ToProto(const PromptSource& source, bool cited, v1::Source* out);

// The report's options from the experiment's analysis and scale.
ReportOptions ToReportOptions(const v1::Experiment& experiment, bool include_excluded);
void ToProto(const Report& report, v1::ExperimentReport* out);
void ToProto(const LatencyStats& stats, v1::LatencySummary* out);

// Feedback scale (defaults applied).
std::pair<double, double> FeedbackScale(const v1::Experiment& experiment);

int64_t NowMicros();
google::protobuf::Timestamp ToTimestamp(int64_t micros);
int64_t FromTimestamp(const google::protobuf::Timestamp& t);

void ToProto(const FeedbackRecord& r, v1::Feedback* out);
void ToProto(const ComparisonRecord& r, v1::Comparison* out);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_PROTO_H_
