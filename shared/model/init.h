// Random checkpoints in the Hugging Face layout (`switchyard model init`):
// config.json, model.safetensors, tokenizer files and generation_config.json
// (or the sentence-transformers files for BERT), loadable here and by
// transformers. Weights follow transformers' _init_weights: normal(0, 0.02)
// for linear and embedding weights, zero biases, unit norm weights.

#ifndef SWITCHYARD_SHARED_MODEL_INIT_H_
#define SWITCHYARD_SHARED_MODEL_INIT_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "shared/model/config.h"
#include "shared/model/lora.h"

namespace switchyard::model {

struct InitOptions {
  Architecture arch = Architecture::kLlama;
  int64_t layers = 2;
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kv_heads = 0;       // 0: same as heads
  int64_t intermediate = 0;   // 0: 4 x hidden (GPT-2, BERT), else 8/3 x hidden rounded up to 32
  int64_t max_positions = 0;  // 0: 1024 (GPT-2), 512 (BERT), 2048 (others)
  double rope_theta = 10000.0;
  bool tie_embeddings = false;  // GPT-2 always ties
  // A directory with tokenizer.json (and tokenizer_config.json) whose
  // vocabulary sizes the model; empty: a 257-token byte-level BPE tokenizer
  // (256 bytes + "<|endoftext|>") is written instead.
  std::string vocab_from;
  uint64_t seed = 0;
  at::ScalarType dtype = at::kFloat;
  // Standard deviation of the normal initialisation of every weight matrix
  // (transformers' initializer_range). Larger values give a random model
  // logits that a frozen LM head lets LoRA move (demos, tests).
  double init_std = 0.02;
};

// Writes the checkpoint into `out_dir` (created; must be empty or absent).
// Errors name the option, e.g. `--heads (5) must divide --hidden (64)`.
absl::Status InitCheckpoint(const InitOptions& options, const std::string& out_dir);

// Writes a random PEFT LoRA adapter for the checkpoint in `model_dir` into
// `out_dir` (created; must be empty or absent): A as PEFT initialises it, B
// drawn with std `init_std` rather than zero, so the adapter changes the
// model's output (benchmarks, tests, serving checks).
absl::Status InitAdapter(const std::string& model_dir, const LoraConfig& config, uint64_t seed,
                         double init_std, const std::string& out_dir);

// Copies the tokenizer files (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, vocab.txt, chat_template.jinja) and, when asked,
// generation_config.json that `from_dir` has into `to_dir`, each atomically.
absl::Status CopyModelSideFiles(const std::string& from_dir, const std::string& to_dir,
                                bool generation_config);

// Random float32 CPU weights for `config` in Hugging Face names and layouts,
// initialised as InitCheckpoint does (for benchmarks and tests that need no
// files). May throw c10::Error.
std::map<std::string, at::Tensor> RandomWeights(const ModelConfig& config, uint64_t seed,
                                                double init_std = 0.02);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_INIT_H_
