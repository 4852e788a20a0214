// VectorIndex: a FAISS index built from a factory string, with stable int64
// ids, removal for every index type, filtered search and atomic-friendly
// persistence. No gRPC.
//
// Layout: every vector gets the next position (FAISS' sequential label) in
// two indexes kept in step: `exact`, an IndexFlat holding the raw vectors, and
// the factory index (none for "Flat", where `exact` is the index). An id map
// (position -> id, -1 once removed) translates labels. Removing marks the
// position a tombstone, filtered at search time through an IDSelector, so it
// works the same for HNSW (which FAISS 1.7.3 cannot remove from), IVF and
// Flat. A rebuild compacts the live vectors into fresh indexes; it runs in
// three steps so the slow middle one needs no lock (see Collection).
//
// A trained factory index (IVF, PQ) stays empty until `train_size` vectors
// are present; until then searches are exact over `exact`.
//
// Thread safety: const methods may run concurrently; the others need
// exclusive access (the caller's lock).
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_VECTOR_INDEX_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_VECTOR_INDEX_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace faiss {
struct Index;
struct IndexFlat;
}  // namespace faiss

namespace switchyard::retrieval {

enum class Metric { kInnerProduct, kL2 };

struct VectorIndexOptions {
  std::string factory = "Flat";
  int dimension = 384;
  Metric metric = Metric::kInnerProduct;
  // Vectors a trained index is trained on; 0 means max(39 x nlist, 10000).
  int64_t train_size = 0;
  int nprobe = 16;
  int ef_search = 64;
  // Tombstoned fraction of the positions that asks for a rebuild.
  double rebuild_threshold = 0.2;
};

// What a factory string builds, found by building an empty index.
struct IndexKind {
  std::string type;  // FAISS class, e.g. "IndexHNSWFlat"
  bool needs_training = false;
  int64_t nlist = 0;       // IVF lists, 0 for others
  int64_t train_size = 0;  // resolved
};

// INVALID_ARGUMENT naming "index.factory" when FAISS rejects the string (or it
// asks for an id map, which the index adds itself).
absl::StatusOr<IndexKind> CheckIndexOptions(const VectorIndexOptions& options);

class VectorIndex {
 public:
  struct Hit {
    int64_t id = 0;
    float score = 0;  // inner product, or -squared L2: higher is better
  };
  struct SearchOptions {
    int k = 10;
    int nprobe = 0;     // 0: the index default
    int ef_search = 0;  // 0: the index default
    // Ids a hit may have (null: all live ids).
    const std::function<bool(int64_t)>* accept = nullptr;
    // When set, the only ids that may match: searched exactly, by
    // brute force over their vectors (the plan for selective filters).
    const std::vector<int64_t>* candidates = nullptr;
  };
  struct Stats {
    int64_t vectors = 0;  // positions, tombstones included
    int64_t tombstones = 0;
    bool trained = false;
    std::string type;
  };
  // The live vectors at one moment, to build a replacement index from.
  struct RebuildInput {
    std::vector<int64_t> ids;
    std::vector<float> vectors;  // ids.size() x dimension
    int64_t positions_seen = 0;  // positions that existed then
  };
  // The built replacement.
  struct Rebuilt {
    std::unique_ptr<faiss::IndexFlat> exact;
    std::unique_ptr<faiss::Index> index;  // null for Flat, or untrained
    ~Rebuilt();
  };

  static absl::StatusOr<std::unique_ptr<VectorIndex>> Create(const VectorIndexOptions& options);
  // Reads what Save wrote into `dir`.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Load(const VectorIndexOptions& options,
                                                           const std::string& dir);
  ~VectorIndex();

  // Writes index.faiss (when there is a factory index), vectors.faiss and
  // ids.bin into `dir`, each fsynced.
  absl::Status Save(const std::string& dir) const;

  // Appends `n` vectors (n x dimension) under `ids` (new, non-negative).
  absl::Status Add(int64_t n, const float* vectors, const int64_t* ids);
  // Tombstones the ids; unknown ids are skipped. Returns how many were live.
  int64_t Remove(const std::vector<int64_t>& ids);
  bool Contains(int64_t id) const { return position_.count(id) > 0; }

  // nq queries (nq x dimension) -> nq hit lists, best first, at most k each.
  absl::StatusOr<std::vector<std::vector<Hit>>> Search(int64_t nq, const float* queries,
                                                       const SearchOptions& options) const;

  // A rebuild is due: a trained index has enough vectors to train, or the
  // tombstoned fraction passed the threshold.
  bool WantsRebuild() const;
  RebuildInput SnapshotForRebuild() const;
  // Slow; no lock needed (reads only `input`).
  static absl::StatusOr<std::unique_ptr<Rebuilt>> Build(const VectorIndexOptions& options,
                                                        const RebuildInput& input);
  // Swaps the rebuilt index in, adding what was added after the snapshot and
  // tombstoning what was removed since.
  absl::Status Install(const RebuildInput& input, std::unique_ptr<Rebuilt> rebuilt);

  Stats stats() const;
  const VectorIndexOptions& options() const { return options_; }
  int64_t live() const { return static_cast<int64_t>(position_.size()); }

 private:
  explicit VectorIndex(const VectorIndexOptions& options, IndexKind kind);
  // FAISS 1.7.3 reads HNSW's efSearch from the index, not from the search
  // parameters. Holding an EfGroup, the index has the value `want` (0: the
  // current one) until released; groups with other values wait their turn.
  // A no-op for other index types.
  class EfGroup {
   public:
    EfGroup(const VectorIndex* self, int want);
    ~EfGroup();
    EfGroup(const EfGroup&) = delete;
    EfGroup& operator=(const EfGroup&) = delete;

   private:
    const VectorIndex* self_;
  };
  // The index searches go to: the factory index once trained, else exact.
  const faiss::Index* SearchTarget() const;
  std::vector<Hit> SearchCandidates(const float* query, int k, const std::vector<int64_t>& ids,
                                    const std::function<bool(int64_t)>* accept) const;

  VectorIndexOptions options_;
  IndexKind kind_;
  std::unique_ptr<faiss::IndexFlat> exact_;
  std::unique_ptr<faiss::Index> index_;            // null for Flat, or while untrained
  std::vector<int64_t> ids_;                       // position -> id, -1 = tombstone
  std::unordered_map<int64_t, int64_t> position_;  // live id -> position
  int64_t tombstones_ = 0;
  // HNSW searches run in groups wanting the same efSearch (see Search).
  mutable std::mutex ef_mu_;
  mutable std::condition_variable ef_cv_;
  mutable int ef_active_ = 0;             // searches running with the index's efSearch
  mutable int ef_waiting_ = 0;            // searches waiting
  mutable std::map<int, int> ef_wanted_;  // efSearch -> searches waiting for it
  // False once a FAISS type refused search parameters (PQ, fast-scan).
  mutable std::atomic<bool> selector_supported_{true};
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_VECTOR_INDEX_H_
