#include "services/dataset/token_counter.h"

#include "shared/text/tokenizer.h"

namespace switchyard::dataset {

absl::StatusOr<int64_t> TokenizerTokenCounter::Count(const std::vector<ExampleText>& texts) const {
  int64_t total = 0;
  for (const ExampleText& t : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(t.content, false);
    if (!ids.ok()) return ids.status();
    total += static_cast<int64_t>(ids->size());
  }
  return total;
}

}  // namespace switchyard::dataset
