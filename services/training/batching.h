// How examples become optimizer steps: a seeded order per epoch, rows (one
// example each, or several packed into max_seq_length tokens), steps of
// batch_size rows split into micro-batches, and the tensors of one
// micro-batch (right padding to its longest row, segment ids so packed
// examples never attend to each other, labels that never cross an example).
//
// The plan of every epoch is a pure function of (lengths, settings, seed), so
// a resumed run finds the same rows at the same step without saving them.
#ifndef SWITCHYARD_SERVICES_TRAINING_BATCHING_H_
#define SWITCHYARD_SERVICES_TRAINING_BATCHING_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "services/training/sft_data.h"

namespace switchyard::training {

// A permutation of [0, n) from (seed, epoch); the same on every platform.
std::vector<int64_t> ShuffledOrder(int64_t n, uint64_t seed, int64_t epoch);

using Row = std::vector<int64_t>;  // example indices, in order

struct BatchPlanOptions {
  int64_t epochs = 1;
  int64_t batch_size = 1;     // rows per optimizer step
  int64_t micro_batches = 1;  // gradient accumulation: pieces per step
  bool packing = false;
  int64_t max_seq_length = 0;  // row capacity with packing
  uint64_t seed = 0;
};

class BatchPlan {
 public:
  // `lengths[i]` is example i's token count (each <= max_seq_length).
  BatchPlan(const std::vector<int64_t>& lengths, const BatchPlanOptions& options);

  int64_t total_steps() const { return static_cast<int64_t>(step_epoch_.size()); }
  int64_t steps_in_epoch(int64_t epoch) const;
  // 0-based epoch of 1-based step `step`, and whether the step ends it.
  int64_t epoch_of(int64_t step) const { return step_epoch_[step - 1]; }
  bool ends_epoch(int64_t step) const;
  // Epochs done after `step` steps, fractional.
  double epoch_progress(int64_t step) const;
  // The micro-batches of 1-based step `step`: rows split as evenly as
  // possible into at most micro_batches pieces.
  std::vector<std::vector<Row>> MicroBatches(int64_t step) const;

 private:
  BatchPlanOptions options_;
  std::vector<std::vector<Row>> epoch_rows_;  // per epoch
  std::vector<int64_t> step_epoch_;           // per step (0-based index)
  std::vector<int64_t> epoch_first_step_;     // 1-based step that starts each epoch
};

// The plan a resolved job spec gives for `train` (epochs, batch size,
// gradient accumulation, packing, max_seq_length, seed).
BatchPlan PlanFor(const JobSpec& resolved, const std::vector<SftExample>& train);
// The same for items of token lengths `lengths` (one row each without packing).
BatchPlan PlanFor(const JobSpec& resolved, const std::vector<int64_t>& lengths);

// Packs examples in `order` into rows: with packing, greedily in order while
// they fit `capacity` tokens; without, one per row.
std::vector<Row> MakeRows(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                          bool packing, int64_t capacity);

struct Batch {
  at::Tensor input_ids;    // (B, T) int64, right-padded
  at::Tensor segment_ids;  // (B, T) int64: example index within its row; -1 = padding
  at::Tensor labels;       // (B, T) int64, model::kIgnoreLabel where not trained
  int64_t tokens = 0;      // non-padding tokens
  int64_t label_tokens = 0;
};

// The tensors of `rows` (on the CPU).
Batch MakeBatch(const std::vector<SftExample>& examples, const std::vector<Row>& rows);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_BATCHING_H_
