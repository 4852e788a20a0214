#include "services/training/batching.h"

#include <algorithm>

#include "shared/model/loss.h"

namespace switchyard::training {
namespace {

// splitmix64: a small, well-mixed generator whose output is fixed by the
// seed alone (std::shuffle and the std distributions are not).
uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> ShuffledOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(epoch + 1));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(SplitMix(&state) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<Row> MakeRows(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
                          bool packing, int64_t capacity) {
  std::vector<Row> rows;
  int64_t used = 0;
  for (int64_t i : order) {
    if (!packing || rows.empty() || used + lengths[i] > capacity) {
      rows.push_back({});
      used = 0;
    }
    rows.back().push_back(i);
    used += lengths[i];
  }
  return rows;
}

BatchPlan::BatchPlan(const std::vector<int64_t>& lengths, const BatchPlanOptions& options)
    : options_(options) {
  const int64_t n = static_cast<int64_t>(lengths.size());
  for (int64_t e = 0; e < options.epochs; ++e) {
    epoch_rows_.push_back(MakeRows(ShuffledOrder(n, options.seed, e), lengths, options.packing,
                                   options.max_seq_length));
    const int64_t rows = static_cast<int64_t>(epoch_rows_.back().size());
    const int64_t steps = (rows + options.batch_size - 1) / options.batch_size;
    epoch_first_step_.push_back(static_cast<int64_t>(step_epoch_.size()) + 1);
    for (int64_t s = 0; s < steps; ++s) step_epoch_.push_back(e);
  }
}

int64_t BatchPlan::steps_in_epoch(int64_t epoch) const {
  const int64_t rows = static_cast<int64_t>(epoch_rows_[epoch].size());
  return (rows + options_.batch_size - 1) / options_.batch_size;
}

bool BatchPlan::ends_epoch(int64_t step) const {
  return step == total_steps() || step_epoch_[step] != step_epoch_[step - 1];
}

double BatchPlan::epoch_progress(int64_t step) const {
  if (step <= 0) return 0;
  const int64_t e = epoch_of(step);
  const int64_t done = step - epoch_first_step_[e] + 1;
  return static_cast<double>(e) + static_cast<double>(done) / steps_in_epoch(e);
}

std::vector<std::vector<Row>> BatchPlan::MicroBatches(int64_t step) const {
  const int64_t e = epoch_of(step);
  const std::vector<Row>& rows = epoch_rows_[e];
  const int64_t first = (step - epoch_first_step_[e]) * options_.batch_size;
  const int64_t count = std::min<int64_t>(options_.batch_size, rows.size() - first);
  const int64_t pieces = std::min(options_.micro_batches, count);
  std::vector<std::vector<Row>> out(pieces);
  for (int64_t i = 0; i < count; ++i) {
    // Piece p gets rows [p * count / pieces, (p + 1) * count / pieces).
    out[i * pieces / count].push_back(rows[first + i]);
  }
  return out;
}

BatchPlan PlanFor(const JobSpec& resolved, const std::vector<SftExample>& train) {
  std::vector<int64_t> lengths;
  for (const SftExample& ex : train) lengths.push_back(static_cast<int64_t>(ex.ids.size()));
  return PlanFor(resolved, lengths);
}

BatchPlan PlanFor(const JobSpec& resolved, const std::vector<int64_t>& lengths) {
  const Hyperparameters& hp = resolved.hyperparameters;
  BatchPlanOptions o;
  o.epochs = hp.epochs.value_or(1);
  o.batch_size = hp.batch_size.value_or(1);
  o.micro_batches = hp.gradient_accumulation_steps.value_or(1);
  o.packing = hp.packing.value_or(false);
  o.max_seq_length = hp.max_seq_length.value_or(0);
  o.seed = resolved.seed.value_or(0);
  return BatchPlan(lengths, o);
}

Batch MakeBatch(const std::vector<SftExample>& examples, const std::vector<Row>& rows) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 1;
  for (const Row& row : rows) {
    int64_t len = 0;
    for (int64_t i : row) len += static_cast<int64_t>(examples[i].ids.size());
    T = std::max(T, len);
  }
  Batch batch;
  at::Tensor ids = at::zeros({B, T}, at::kLong);
  at::Tensor segments = at::full({B, T}, -1, at::kLong);
  at::Tensor trained = at::zeros({B, T}, at::kBool);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto seg_a = segments.accessor<int64_t, 2>();
  auto trained_a = trained.accessor<bool, 2>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0;
    for (size_t k = 0; k < rows[b].size(); ++k) {
      const SftExample& ex = examples[rows[b][k]];
      for (size_t i = 0; i < ex.ids.size(); ++i, ++t) {
        ids_a[b][t] = ex.ids[i];
        seg_a[b][t] = static_cast<int64_t>(k);
        trained_a[b][t] = ex.trained[i] != 0;
      }
    }
    batch.tokens += t;
  }
  batch.input_ids = ids;
  batch.segment_ids = segments;
  batch.labels = model::NextTokenLabels(ids, segments, trained);
  batch.label_tokens = batch.labels.ne(model::kIgnoreLabel).sum().item<int64_t>();
  return batch;
}

}  // namespace switchyard::training
