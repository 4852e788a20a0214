#include "services/retrieval/bert_embedder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/encoder.h"
#include "shared/model/runtime.h"
#include "shared/text/tokenizer.h"

namespace switchyard::retrieval {
namespace {

// `status` with `dir` in its message (most load errors already name it).
absl::Status NamingDir(const absl::Status& status, const std::string& dir) {
  if (absl::StrContains(status.message(), dir)) return status;
  return absl::Status(status.code(), absl::StrCat(dir, ": ", status.message()));
}

// max_seq_length from sentence_bert_config.json; `fallback` when the file or
// the field is absent.
absl::StatusOr<int64_t> MaxSeqLength(const std::string& dir, int64_t fallback) {
  const std::string path = dir + "/sentence_bert_config.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return fallback;
    return text.status();
  }
  nlohmann::json config = nlohmann::json::parse(*text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  auto it = config.find("max_seq_length");
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"max_seq_length\" is not an integer"));
  }
  return it->get<int64_t>();
}

// Scales each of the n rows of `v` (n x d) to unit L2 norm; zero rows stay zero.
void NormalizeRows(float* v, size_t n, int d) {
  for (size_t i = 0; i < n; ++i) {
    float* row = v + i * d;
    double norm = 0;
    for (int j = 0; j < d; ++j) norm += static_cast<double>(row[j]) * row[j];
    if (norm == 0) continue;
    const float scale = static_cast<float>(1.0 / std::sqrt(norm));
    for (int j = 0; j < d; ++j) row[j] *= scale;
  }
}

}  // namespace

BertEmbedder::BertEmbedder(std::unique_ptr<model::BertEncoder> encoder,
                           std::unique_ptr<text::Tokenizer> tokenizer, int batch_size)
    : encoder_(std::move(encoder)), tokenizer_(std::move(tokenizer)), batch_size_(batch_size) {}

BertEmbedder::~BertEmbedder() = default;

absl::StatusOr<std::unique_ptr<BertEmbedder>> BertEmbedder::Load(const std::string& dir,
                                                                 int batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": batch size must be at least 1, not ", batch_size));
  }
  absl::StatusOr<std::unique_ptr<model::BertEncoder>> encoder =
      model::BertEncoder::Load(dir, model::LoadOptions{});
  if (!encoder.ok()) return NamingDir(encoder.status(), dir);
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer = text::Tokenizer::FromFile(dir);
  if (!tokenizer.ok()) return NamingDir(tokenizer.status(), dir);
  std::unique_ptr<BertEmbedder> embedder(
      new BertEmbedder(*std::move(encoder), *std::move(tokenizer), batch_size));
  absl::Status configured = embedder->Configure(dir);
  if (!configured.ok()) return NamingDir(configured, dir);
  return embedder;
}

absl::Status BertEmbedder::Configure(const std::string& dir) {
  // The post-processor's tokens: all of them from an empty text, and where the
  // text goes among them from a one-word probe (BERT: [CLS] | text | [SEP]).
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> specials, tokenizer_->Encode("", true));
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> probe, tokenizer_->Encode("a", false));
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> wrapped, tokenizer_->Encode("a", true));
  bool split = false;
  for (size_t k = 0; k <= specials.size() && !split; ++k) {
    std::vector<int32_t> candidate(specials.begin(), specials.begin() + k);
    candidate.insert(candidate.end(), probe.begin(), probe.end());
    candidate.insert(candidate.end(), specials.begin() + k, specials.end());
    if (candidate == wrapped) {
      prefix_.assign(specials.begin(), specials.begin() + k);
      suffix_.assign(specials.begin() + k, specials.end());
      split = true;
    }
  }
  if (probe.empty() || !split) {
    return absl::InvalidArgumentError(
        "tokenizer.json: the post-processor's special tokens do not wrap the text "
        "(expected prefix + text + suffix)");
  }

  const model::ModelConfig& config = encoder_->config();
  if (std::optional<int32_t> pad = tokenizer_->TokenToId("[PAD]")) {
    pad_id_ = *pad;
  } else {
    pad_id_ = static_cast<int32_t>(config.pad_token_id.value_or(0));
  }

  const int64_t positions = config.max_position_embeddings;
  SY_ASSIGN_OR_RETURN(int64_t max_seq, MaxSeqLength(dir, positions));
  const int64_t limit = std::min(max_seq, positions) - static_cast<int64_t>(specials.size());
  if (limit < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_seq_length ", max_seq,
                                                   " leaves no room for text after ",
                                                   specials.size(), " special tokens"));
  }
  max_tokens_ = static_cast<int>(limit);
  return absl::OkStatus();
}

int BertEmbedder::dimension() const { return static_cast<int>(encoder_->dimension()); }

int BertEmbedder::CountTokens(absl::string_view piece) const {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(piece, false);
  // Only invalid UTF-8 fails; a token per byte is an upper bound (and Embed
  // refuses such text anyway).
  return ids.ok() ? static_cast<int>(ids->size()) : static_cast<int>(piece.size());
}

absl::StatusOr<std::vector<int32_t>> BertEmbedder::InputIds(const std::string& text) const {
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> body, tokenizer_->Encode(text, false));
  if (body.empty()) return body;
  // sentence-transformers truncates the text's tokens and keeps the specials.
  if (body.size() > static_cast<size_t>(max_tokens_)) body.resize(max_tokens_);
  std::vector<int32_t> ids = prefix_;
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

absl::StatusOr<std::vector<float>> BertEmbedder::Embed(
    const std::vector<std::string>& texts) const {
  const int d = dimension();
  std::vector<std::vector<int32_t>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> one = InputIds(texts[i]);
    if (!one.ok()) {
      return absl::Status(one.status().code(),
                          absl::StrCat("text ", i, ": ", one.status().message()));
    }
    ids[i] = *std::move(one);
  }
  // Longest first, as sentence-transformers batches, so each batch pads little;
  // texts without tokens are left out and keep their zero vector.
  std::vector<size_t> order;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (!ids[i].empty()) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ids[a].size() > ids[b].size(); });

  std::vector<float> out(texts.size() * d, 0.0f);
  c10::InferenceMode inference;
  for (size_t start = 0; start < order.size(); start += batch_size_) {
    const size_t end = std::min(order.size(), start + batch_size_);
    const int64_t B = static_cast<int64_t>(end - start);
    const int64_t T = static_cast<int64_t>(ids[order[start]].size());  // longest in the batch
    SY_RETURN_IF_ERROR(model::TorchCall("bert embedder batch", [&]() -> absl::Status {
      at::Tensor input_ids = at::full({B, T}, static_cast<int64_t>(pad_id_), at::kLong);  // (B, T)
      at::Tensor mask = at::zeros({B, T}, at::kLong);                                     // (B, T)
      at::Tensor types = at::zeros({B, T}, at::kLong);                                    // (B, T)
      int64_t* id_data = input_ids.data_ptr<int64_t>();
      int64_t* mask_data = mask.data_ptr<int64_t>();
      for (int64_t b = 0; b < B; ++b) {
        const std::vector<int32_t>& row = ids[order[start + b]];
        for (size_t t = 0; t < row.size(); ++t) {
          id_data[b * T + t] = row[t];
          mask_data[b * T + t] = 1;
        }
      }
      SY_ASSIGN_OR_RETURN(at::Tensor embedded, encoder_->Embed(input_ids, mask, types));
      at::Tensor rows = embedded.to(at::kCPU, at::kFloat).contiguous();  // (B, d)
      if (rows.size(0) != B || rows.size(1) != d) {
        return absl::InternalError(absl::StrCat("encoder returned ", rows.size(0), " x ",
                                                rows.size(1), ", expected ", B, " x ", d));
      }
      const float* src = rows.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        std::memcpy(out.data() + order[start + b] * d, src + b * d, sizeof(float) * d);
      }
      return absl::OkStatus();
    }));
  }
  // A Normalize module already did this; otherwise the contract asks for it.
  if (!encoder_->pooling().normalize) NormalizeRows(out.data(), texts.size(), d);
  return out;
}

}  // namespace switchyard::retrieval
