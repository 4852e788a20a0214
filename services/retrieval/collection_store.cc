#include "services/retrieval/collection_store.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/retrieval/bert_embedder.h"
#include "services/retrieval/hash_embedder.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"

namespace switchyard::retrieval {
namespace {

constexpr int kDefaultDimension = 384;
constexpr int kDefaultChunkTokens = 256;
constexpr int kDefaultOverlapTokens = 32;
constexpr int kDefaultBatch = 32;
constexpr int kMaxChunkTokens = 8192;

bool IsHash(const std::string& model) { return model.empty() || model == "hash"; }

}  // namespace

CollectionStore::CollectionStore(std::string data_dir)
    : data_dir_(std::move(data_dir)), collections_dir_(data_dir_ + "/collections") {}

absl::StatusOr<std::unique_ptr<CollectionStore>> CollectionStore::Open(
    const std::string& data_dir) {
  std::unique_ptr<CollectionStore> store(new CollectionStore(data_dir));
  SY_RETURN_IF_ERROR(MakeDirs(store->collections_dir_));
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(store->collections_dir_, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string dir = store->collections_dir_ + "/" + name;
    if (absl::StartsWith(name, ".")) {  // an interrupted create or delete
      RemoveAll(dir).IgnoreError();
      continue;
    }
    absl::Status status = [&]() -> absl::Status {
      SY_ASSIGN_OR_RETURN(CollectionSpec spec, Collection::ReadSpec(dir));
      SY_ASSIGN_OR_RETURN(std::shared_ptr<const Embedder> embedder,
                          store->EmbedderFor(spec.embedder.model, spec.embedder.dimension,
                                             spec.embedder.batch_size));
      SY_ASSIGN_OR_RETURN(std::unique_ptr<Collection> collection,
                          Collection::Open(dir, std::move(embedder)));
      store->collections_[spec.id] = std::move(collection);
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      SY_LOG(kError, "retrieval") << "collections/" << name << " is not served: " << status;
    }
  }
  return store;
}

absl::StatusOr<std::shared_ptr<const Embedder>> CollectionStore::EmbedderFor(
    const std::string& model, int dimension, int batch_size) {
  std::string key;
  std::string dir;
  if (IsHash(model)) {
    key = absl::StrCat("hash:", dimension);
  } else {
    std::string name = model;
    if (absl::StartsWith(name, "models/")) name = name.substr(7);
    std::error_code ec;
    const std::string registered = data_dir_ + "/models/" + name;
    if (name.find('/') == std::string::npos && !name.empty() &&
        std::filesystem::exists(registered + "/config.json", ec)) {
      dir = registered;
    } else if (std::filesystem::exists(model + "/config.json", ec)) {
      dir = std::filesystem::absolute(model, ec).lexically_normal().string();
    } else {
      return absl::NotFoundError(
          absl::StrCat("embedder.model: \"", model,
                       "\" is neither \"hash\", a registered model, nor a directory with a "
                       "sentence-transformers checkpoint (config.json)"));
    }
    key = absl::StrCat("bert:", dir, ":", batch_size);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto cached = embedders_[key].lock()) return cached;
  }
  // Loaded without the lock (a checkpoint takes seconds); a concurrent load of
  // the same one wins the cache below.
  std::shared_ptr<const Embedder> embedder;
  if (IsHash(model)) {
    SY_ASSIGN_OR_RETURN(HashEmbedder hash, HashEmbedder::Create(dimension));
    embedder = std::make_shared<HashEmbedder>(hash);
  } else {
    auto loaded = BertEmbedder::Load(dir, batch_size);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedder.model: ", loaded.status().message()));
    }
    embedder = std::shared_ptr<const Embedder>(std::move(*loaded));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto cached = embedders_[key].lock()) return cached;
  embedders_[key] = embedder;
  return embedder;
}

absl::StatusOr<CollectionSpec> CollectionStore::Resolve(const CollectionRequest& request) {
  CollectionSpec spec = request.spec;
  SY_RETURN_IF_ERROR(ValidateCollectionId(spec.id));
  if (IsHash(spec.embedder.model)) spec.embedder.model = "hash";
  if (request.batch_size < 0 || request.batch_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedder.batch_size: must be in [0, 1024], got ", request.batch_size));
  }
  spec.embedder.batch_size = request.batch_size > 0 ? request.batch_size : kDefaultBatch;
  if (request.dimension < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedder.dimension: must not be negative, got ", request.dimension));
  }
  const int asked = request.dimension;
  SY_ASSIGN_OR_RETURN(
      std::shared_ptr<const Embedder> embedder,
      EmbedderFor(spec.embedder.model,
                  spec.embedder.model == "hash" ? (asked > 0 ? asked : kDefaultDimension) : 0,
                  spec.embedder.batch_size));
  if (spec.embedder.model != "hash" && asked != 0 && asked != embedder->dimension()) {
    return absl::InvalidArgumentError(absl::StrCat("embedder.dimension: ", spec.embedder.model,
                                                   " gives ", embedder->dimension(),
                                                   " dimensions, not ", asked));
  }
  spec.embedder.dimension = embedder->dimension();
  spec.embedder.max_tokens = embedder->max_tokens();

  const int cap = embedder->max_tokens() > 0 ? embedder->max_tokens() : kMaxChunkTokens;
  int chunk = request.chunk_tokens.value_or(std::min(kDefaultChunkTokens, cap));
  if (chunk < 1 || chunk > cap) {
    return absl::InvalidArgumentError(absl::StrCat("chunking.chunk_tokens: must be in [1, ", cap,
                                                   "] for this embedder, got ", chunk));
  }
  int overlap = request.overlap_tokens.value_or(std::min(kDefaultOverlapTokens, chunk / 4));
  if (overlap < 0 || overlap >= chunk) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunking.overlap_tokens: must be in [0, chunk_tokens) = [0, ", chunk, "), got ", overlap));
  }
  spec.chunking.chunk_tokens = chunk;
  spec.chunking.overlap_tokens = overlap;

  if (spec.index.factory.empty()) spec.index.factory = "Flat";
  spec.index.dimension = spec.embedder.dimension;
  spec.index.train_size = request.train_size;
  spec.index.nprobe = request.nprobe > 0 ? request.nprobe : 16;
  spec.index.ef_search = request.ef_search > 0 ? request.ef_search : 64;
  spec.index.rebuild_threshold = request.rebuild_threshold > 0 ? request.rebuild_threshold : 0.2;
  if (request.nprobe < 0 || request.ef_search < 0 || request.train_size < 0) {
    return absl::InvalidArgumentError(
        "index: nprobe, ef_search and train_size must not be negative");
  }
  SY_ASSIGN_OR_RETURN(IndexKind kind, CheckIndexOptions(spec.index));
  spec.index.train_size = kind.train_size;
  if (spec.create_time == absl::Time()) spec.create_time = absl::Now();
  return spec;
}

absl::StatusOr<std::shared_ptr<Collection>> CollectionStore::Create(
    const CollectionRequest& request) {
  SY_ASSIGN_OR_RETURN(CollectionSpec spec, Resolve(request));
  spec.create_time = absl::Now();
  SY_ASSIGN_OR_RETURN(
      std::shared_ptr<const Embedder> embedder,
      EmbedderFor(spec.embedder.model, spec.embedder.dimension, spec.embedder.batch_size));
  std::lock_guard<std::mutex> lock(create_mu_);
  {
    std::lock_guard<std::mutex> map_lock(mu_);
    if (collections_.count(spec.id)) {
      return absl::AlreadyExistsError(absl::StrCat("collections/", spec.id, " already exists"));
    }
  }
  SY_ASSIGN_OR_RETURN(std::unique_ptr<Collection> created,
                      Collection::Create(collections_dir_ + "/" + spec.id, spec, embedder));
  std::shared_ptr<Collection> shared = std::move(created);
  std::lock_guard<std::mutex> map_lock(mu_);
  collections_[spec.id] = shared;
  return shared;
}

absl::StatusOr<std::shared_ptr<Collection>> CollectionStore::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = collections_.find(id);
  if (it == collections_.end()) {
    return absl::NotFoundError(absl::StrCat("collections/", id, " does not exist"));
  }
  return it->second;
}

std::vector<std::shared_ptr<Collection>> CollectionStore::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Collection>> out;
  out.reserve(collections_.size());
  for (const auto& [id, c] : collections_) out.push_back(c);
  return out;
}

absl::Status CollectionStore::Delete(const std::string& id) {
  std::lock_guard<std::mutex> lock(create_mu_);
  std::shared_ptr<Collection> collection;
  {
    std::lock_guard<std::mutex> map_lock(mu_);
    auto it = collections_.find(id);
    if (it == collections_.end()) {
      return absl::NotFoundError(absl::StrCat("collections/", id, " does not exist"));
    }
    collection = it->second;
    collections_.erase(it);
  }
  return collection->DestroyFiles();
}

}  // namespace switchyard::retrieval
