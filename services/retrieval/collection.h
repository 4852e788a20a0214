// Collection: documents split into chunks, each chunk embedded into a
// VectorIndex and indexed for BM25; searched densely, lexically or both
// (reciprocal rank fusion), with metadata filters. No gRPC.
//
// On disk, under the collection's directory:
//   collection.json          the spec, written once at creation
//   CURRENT                  names the live snapshot ("snapshot-000042")
//   snapshot-<N>/            vectors.faiss, index.faiss, ids.bin (the vector
//                            index and its id map), documents.jsonl (texts,
//                            metadata, chunk ranges and ids), state.json
// A save writes a whole new snapshot directory, fsyncs it, renames it into
// place and only then points CURRENT at it, so a crash at any moment leaves
// the previous snapshot current; leftovers are removed when the collection
// opens. The BM25 index is rebuilt from the texts at open.
//
// Concurrency: searches share a lock; a write prepares its chunks and vectors
// without it, then holds it exclusively only to apply them, and saves under
// the shared lock. A rebuild (training a trained index, or compacting
// tombstones) runs on a background thread and swaps in under the lock.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/retrieval/bm25_index.h"
#include "services/retrieval/chunker.h"
#include "services/retrieval/embedder.h"
#include "services/retrieval/vector_index.h"

namespace switchyard::retrieval {

using Metadata = std::map<std::string, std::string>;

struct EmbedderConfig {
  std::string model = "hash";  // "hash", or the checkpoint directory / model name
  int dimension = 384;
  std::string query_prefix;
  std::string document_prefix;
  int batch_size = 32;
  int max_tokens = 0;  // 0: no limit
};

struct CollectionSpec {
  std::string id;
  std::string description;
  Metadata labels;
  EmbedderConfig embedder;
  VectorIndexOptions index;  // index.dimension == embedder.dimension
  ChunkerOptions chunking;
  absl::Time create_time;
};

// INVALID_ARGUMENT naming the field unless the id is 1-63 of [a-z0-9-_.],
// starting with a letter or digit.
absl::Status ValidateCollectionId(const std::string& id);

struct DocumentInput {
  std::string id;
  std::string text;
  Metadata metadata;
};

// A document chunked and embedded, ready to apply.
struct PreparedDocument {
  DocumentInput document;
  std::vector<Chunk> chunks;
  std::vector<float> vectors;  // chunks.size() x dimension
};

struct CollectionStatsInfo {
  int64_t documents = 0;
  int64_t chunks = 0;
  int64_t vectors = 0;
  int64_t tombstoned_vectors = 0;
  int64_t index_bytes = 0;
  int64_t chunk_store_bytes = 0;
  std::string index_type;
  bool trained = false;
  bool rebuilding = false;
  absl::Time save_time;
  absl::Time update_time;
};

struct WriteResult {
  int64_t created = 0;
  int64_t replaced = 0;
  int64_t deleted = 0;
  int64_t chunks_added = 0;
  int64_t chunks_removed = 0;
  std::vector<std::string> missing_ids;
};

enum class SearchMode { kDense, kLexical, kHybrid };

struct FilterCondition {
  std::string key;
  std::vector<std::string> values;  // any of them
};

struct SearchQuery {
  std::vector<std::string> texts;
  // Precomputed query embeddings (dense only), answered after the texts.
  std::vector<std::vector<float>> vectors;
  int k = 10;
  std::vector<FilterCondition> filter;  // all must hold
  SearchMode mode = SearchMode::kDense;
  double rrf_k = 60;
  double dense_weight = 1;
  double lexical_weight = 1;
  int candidates = 0;  // per list before fusion; 0: max(4k, 50)
  int nprobe = 0;      // 0: the collection's default
  int ef_search = 0;
  std::optional<double> min_score;
  bool omit_text = false;
};

struct SearchHitInfo {
  int rank = 0;
  double score = 0;
  std::string document_id;
  int position = 0;
  std::string text;
  std::shared_ptr<const Metadata> metadata;
  int64_t start_offset = 0, end_offset = 0;
  double dense_score = 0, lexical_score = 0;
  int dense_rank = 0, lexical_rank = 0;
};

struct SearchOutcome {
  std::vector<std::vector<SearchHitInfo>> results;  // per query
  double embed_seconds = 0;
  double search_seconds = 0;
};

// Checks one document (field names in errors are relative: "id", "text",
// "metadata").
absl::Status ValidateDocument(const DocumentInput& document);

class Collection {
 public:
  // Writes the collection's directory `dir` (which must not exist) through a
  // staging directory and a rename.
  static absl::StatusOr<std::unique_ptr<Collection>> Create(
      const std::string& dir, const CollectionSpec& spec, std::shared_ptr<const Embedder> embedder);
  // Reads the spec only (to resolve the embedder before Open).
  static absl::StatusOr<CollectionSpec> ReadSpec(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Collection>> Open(const std::string& dir,
                                                          std::shared_ptr<const Embedder> embedder);
  ~Collection();

  const CollectionSpec& spec() const { return spec_; }
  const std::string& dir() const { return dir_; }

  // Validates, chunks and embeds; no lock. Errors name "documents[i]".
  absl::StatusOr<std::vector<PreparedDocument>> Prepare(std::vector<DocumentInput> documents,
                                                        double* embed_seconds = nullptr) const;
  // Creates or replaces the documents (all or none), then saves.
  absl::StatusOr<WriteResult> Apply(std::vector<PreparedDocument> documents, bool save = true);
  absl::StatusOr<WriteResult> Delete(const std::vector<std::string>& ids, bool save = true);
  absl::Status Save();

  absl::StatusOr<SearchOutcome> Search(const SearchQuery& query) const;
  CollectionStatsInfo Stats() const;

  // Waits for a background rebuild, if one runs (tests, shutdown).
  void WaitForRebuild();
  // Removes the collection's files (renamed aside first, so a crash leaves
  // only debris the store clears); later writes fail with NOT_FOUND.
  absl::Status DestroyFiles();

 private:
  struct StoredDocument {
    const std::string* id = nullptr;  // the key in documents_
    std::string text;
    std::shared_ptr<const Metadata> metadata;
    std::vector<int64_t> chunk_ids;                     // by position
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // byte [begin, end) per chunk
  };
  struct ChunkRef {
    StoredDocument* document = nullptr;
    int position = 0;
  };

  Collection(std::string dir, CollectionSpec spec, std::shared_ptr<const Embedder> embedder);
  // texts.size() x dimension values, embedded `batch_size` texts at a time.
  absl::StatusOr<std::vector<float>> EmbedInBatches(std::vector<std::string> texts) const;
  absl::Status LoadSnapshot();
  absl::Status SaveLocked();  // caller holds mu_ (shared) and save_mu_
  void RemoveDocumentLocked(StoredDocument* document, std::vector<int64_t>* removed);
  void IndexMetadataLocked(StoredDocument* document, bool add);
  // Chunk ids matching every condition; nullopt when there is no filter.
  std::optional<std::vector<int64_t>> FilterCandidatesLocked(
      const std::vector<FilterCondition>& filter) const;
  bool MatchesLocked(int64_t chunk_id, const std::vector<FilterCondition>& filter) const;
  // Copies the counts Stats() reports; caller holds mu_ (or owns the object).
  void PublishLocked();
  void MaybeStartRebuild();
  void RunRebuild();

  const std::string dir_;
  const CollectionSpec spec_;
  const std::shared_ptr<const Embedder> embedder_;

  std::shared_lock<std::shared_mutex> ReadLock() const;
  std::unique_lock<std::shared_mutex> WriteLock() const;

  mutable std::mutex turnstile_;  // writer preference (see ReadLock)
  mutable std::shared_mutex mu_;
  std::unique_ptr<VectorIndex> index_;
  Bm25Index bm25_;
  std::unordered_map<std::string, std::unique_ptr<StoredDocument>> documents_;
  std::unordered_map<int64_t, ChunkRef> chunks_;
  // metadata key -> value -> documents having it
  std::unordered_map<std::string,
                     std::unordered_map<std::string, std::unordered_set<const StoredDocument*>>>
      metadata_index_;
  int64_t next_chunk_id_ = 0;
  absl::Time update_time_;

  mutable std::mutex save_mu_;  // one save at a time; guards snapshot_
  int64_t snapshot_ = 0;
  std::atomic<int64_t> save_time_ns_{0};  // Unix time
  std::atomic<int64_t> index_bytes_{0}, chunk_store_bytes_{0};

  std::mutex rebuild_mu_;
  std::thread rebuild_thread_;
  std::atomic<bool> rebuilding_{false};
  bool destroyed_ = false;  // guarded by save_mu_

  mutable std::mutex stats_mu_;
  CollectionStatsInfo published_;  // guarded by stats_mu_
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_COLLECTION_H_
