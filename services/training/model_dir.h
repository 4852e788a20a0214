// Looking at model directories for the registry: what a Hugging Face
// checkpoint or PEFT adapter directory holds (architecture, parameter counts,
// dtype, sizes), checked by loading it, and copying one into the store.
#ifndef SWITCHYARD_SERVICES_TRAINING_MODEL_DIR_H_
#define SWITCHYARD_SERVICES_TRAINING_MODEL_DIR_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/model_registry.h"

namespace switchyard::training {

// INVALID_ARGUMENT with the loader's message, prefixed with `dir` unless the
// message names it already.
absl::Status LoadError(const std::string& dir, const absl::Status& s);
// The entries of `dir`; an error names it.
absl::StatusOr<std::vector<std::filesystem::directory_entry>> ListDir(const std::string& dir);
// Copies the model files of `src` into `dst`: regular files (following
// symlinks) and, at the top, sentence-transformers module folders ("1_Pooling").
absl::Status CopyModelFiles(const std::string& src, const std::string& dst, bool top);
// A base or full checkpoint directory, checked to load (weights by name and
// shape; tokenizer when required). Fills every field Register stores.
absl::StatusOr<ModelRecord> InspectCheckpoint(const std::string& dir, bool require_tokenizer);
// A PEFT adapter directory; `base` (may be null) supplies the architecture,
// context length, vocabulary, dtype and parameter count of the base.
absl::StatusOr<ModelRecord> InspectAdapter(const std::string& dir, const ModelRecord* base);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_MODEL_DIR_H_
