// The calculate_output expression of OpenAI's multi grader, read into the
// weights of its sub-graders. Internal to services/training (the grader JSON
// forms in grader_json.cc use it); pure and thread-safe.
#ifndef SWITCHYARD_SERVICES_TRAINING_WEIGHT_EXPRESSION_H_
#define SWITCHYARD_SERVICES_TRAINING_WEIGHT_EXPRESSION_H_

#include <map>
#include <string>

#include "absl/status/status.h"

namespace switchyard::training {

// Reads `expr`, a weighted sum of the keys in `weights` (all 0 on entry), into
// the weights: "a + b", "0.3 * a + 0.7 * b" or "(a + b) / 2" (a divisor of the
// whole sum scales no weight). INVALID_ARGUMENT naming `path` for any other
// form, a key not in `weights` or named twice, a zero divisor, or a weight
// that is not finite.
absl::Status ParseWeightExpression(const std::string& expr, const std::string& path,
                                   std::map<std::string, double>* weights);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_WEIGHT_EXPRESSION_H_
