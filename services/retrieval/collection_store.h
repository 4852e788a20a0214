// CollectionStore: the collections under <data-dir>/collections, opened at
// start, created, listed and deleted; and the embedders they use, resolved
// from a collection's embedder spec ("hash", a registered model, or a
// sentence-transformers directory) and shared between collections. No gRPC.
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_STORE_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_STORE_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/retrieval/collection.h"

namespace switchyard::retrieval {

// What a caller may leave unset ("auto") when creating a collection.
struct CollectionRequest {
  CollectionSpec spec;                // id, description, labels, embedder.model, prefixes, index
  int dimension = 0;                  // 0: the embedder's
  int batch_size = 0;                 // 0: 32
  std::optional<int> chunk_tokens;    // unset: 256, capped at the embedder's max_tokens
  std::optional<int> overlap_tokens;  // unset: 32 (less than chunk_tokens)
  int64_t train_size = 0;             // 0: max(39 x nlist, 10000)
  int nprobe = 0;                     // 0: 16
  int ef_search = 0;                  // 0: 64
  double rebuild_threshold = 0;       // 0: 0.2
};

class CollectionStore {
 public:
  // Opens every collection under data_dir/collections; one that cannot be
  // opened is logged and left out (its files stay).
  static absl::StatusOr<std::unique_ptr<CollectionStore>> Open(const std::string& data_dir);

  // Fills the auto values and checks everything (the embedder loads).
  absl::StatusOr<CollectionSpec> Resolve(const CollectionRequest& request);
  // ALREADY_EXISTS, or INVALID_ARGUMENT naming the field.
  absl::StatusOr<std::shared_ptr<Collection>> Create(const CollectionRequest& request);
  // NOT_FOUND naming the collection.
  absl::StatusOr<std::shared_ptr<Collection>> Get(const std::string& id) const;
  // Sorted by id.
  std::vector<std::shared_ptr<Collection>> List() const;
  // Removes it from the store and deletes its files; searches already
  // running finish on what is in memory, writes in flight fail.
  absl::Status Delete(const std::string& id);

  const std::string& collections_dir() const { return collections_dir_; }

 private:
  explicit CollectionStore(std::string data_dir);
  absl::StatusOr<std::shared_ptr<const Embedder>> EmbedderFor(const std::string& model,
                                                              int dimension, int batch_size);

  const std::string data_dir_;
  const std::string collections_dir_;
  std::mutex create_mu_;   // one create or delete at a time
  mutable std::mutex mu_;  // guards the maps
  std::map<std::string, std::shared_ptr<Collection>> collections_;
  std::map<std::string, std::weak_ptr<const Embedder>> embedders_;  // by resolved key
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_STORE_H_
