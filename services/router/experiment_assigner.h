// ExperimentAssigner: which arm of an experiment serves a request.
//
// With a user key the choice is weighted rendezvous hashing: every arm gets
// the score -ln(u) / weight, u in (0, 1) a stable 64-bit hash of
// (experiment id, user key, arm name), and the lowest score wins. An arm wins
// with probability weight / sum of weights; the same key keeps its arm while
// the weights stand; and when one arm's weight changes, keys move only into
// that arm (weight raised) or out of it (lowered), never between the other
// arms, which is the fewest moves any ramp can make. Without a key the arm is
// drawn at random by weight.
//
// Pure functions except RandomArm (a thread-local generator); thread-safe.
#ifndef SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_ASSIGNER_H_
#define SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_ASSIGNER_H_

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::router {

struct WeightedArm {
  std::string name;
  double weight = 0;  // >= 0; arms with 0 are never chosen
};

// A stable 64-bit hash of the bytes (the same on every platform and release:
// assignments are stored nowhere, so they must never change).
uint64_t StableHash64(const std::string& bytes);

// Index of the arm for `user_key`; -1 when no arm has a positive weight.
int AssignArm(const std::string& experiment_id, const std::string& user_key,
              const std::vector<WeightedArm>& arms);

// Index of an arm drawn by weight; -1 when no arm has a positive weight.
int RandomArm(const std::vector<WeightedArm>& arms);

// A uniform draw in [0, 1) from the thread-local generator (shadow sampling).
double UniformDraw();

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_ASSIGNER_H_
