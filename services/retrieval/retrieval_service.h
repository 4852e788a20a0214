// RetrievalService gRPC adapter: translates switchyard.v1 retrieval messages
// to CollectionStore / Collection calls, enforces roles (admin: collection
// and document writes; user: reads and Search) and exports the
// switchyard_retrieval_* metrics.
//
// Searches run on a SearchBatcher of `search_threads` workers, each limiting
// OpenMP (FAISS, BLAS) to one thread, so many concurrent queries share the
// cores without oversubscribing them; searches that queue up are answered
// together in one batch. Writes (embedding, index updates, saves) run
// on `write_threads` workers. gRPC's callback threads only dispatch.
//
// Thread-safe. The store and authorizer must outlive the service; shut the
// gRPC server down before destroying it.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_RETRIEVAL_SERVICE_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_RETRIEVAL_SERVICE_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>

#include "services/retrieval/collection_store.h"
#include "services/retrieval/search_batcher.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "switchyard/v1/retrieval.grpc.pb.h"

namespace switchyard::retrieval {

struct RetrievalMetrics {
  explicit RetrievalMetrics(prometheus::Registry& registry);
  // Refreshes the per-collection gauges (vectors, index bytes) of one.
  void Observe(const std::string& collection, const CollectionStatsInfo& stats);
  void Forget(const std::string& collection);

  prometheus::Family<prometheus::Counter>& queries;             // {collection, mode}
  prometheus::Family<prometheus::Histogram>& latency;           // {mode}, per request
  prometheus::Family<prometheus::Counter>& hits;                // {collection}
  prometheus::Family<prometheus::Counter>& ingested_documents;  // {collection}
  prometheus::Family<prometheus::Counter>& ingested_chunks;     // {collection}
  prometheus::Histogram& embed_seconds;
  prometheus::Family<prometheus::Gauge>& vectors;      // {collection}
  prometheus::Family<prometheus::Gauge>& index_bytes;  // {collection}
  prometheus::Gauge& collections;
  prometheus::Histogram& batch_size;  // search requests answered per FAISS call
};

struct RetrievalServiceOptions {
  int search_threads = 0;      // 0: every core
  int max_batch_queries = 64;  // queries answered in one batched search at most
  int write_threads = 2;
};

class RetrievalServiceImpl final : public v1::RetrievalService::CallbackService {
 public:
  RetrievalServiceImpl(CollectionStore* store, std::shared_ptr<const rpc::Authorizer> auth,
                       prometheus::Registry& registry, RetrievalServiceOptions options = {});
  ~RetrievalServiceImpl() override;

  grpc::ServerUnaryReactor* CreateCollection(grpc::CallbackServerContext* context,
                                             const v1::CreateCollectionRequest* request,
                                             v1::Collection* response) override;
  grpc::ServerUnaryReactor* GetCollection(grpc::CallbackServerContext* context,
                                          const v1::GetCollectionRequest* request,
                                          v1::Collection* response) override;
  grpc::ServerUnaryReactor* ListCollections(grpc::CallbackServerContext* context,
                                            const v1::ListCollectionsRequest* request,
                                            v1::ListCollectionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteCollection(grpc::CallbackServerContext* context,
                                             const v1::DeleteCollectionRequest* request,
                                             google::protobuf::Empty* response) override;
  grpc::ServerReadReactor<v1::IngestDocumentsRequest>* IngestDocuments(
      grpc::CallbackServerContext* context, v1::IngestDocumentsResponse* response) override;
  grpc::ServerUnaryReactor* UpsertDocuments(grpc::CallbackServerContext* context,
                                            const v1::UpsertDocumentsRequest* request,
                                            v1::UpsertDocumentsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDocuments(grpc::CallbackServerContext* context,
                                            const v1::DeleteDocumentsRequest* request,
                                            v1::DeleteDocumentsResponse* response) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override;

  // For the ingest reactor.
  CollectionStore& store() { return *store_; }
  const rpc::Authorizer& auth() const { return *auth_; }
  ThreadPool& write_pool() { return write_pool_; }
  RetrievalMetrics& metrics() { return metrics_; }

 private:
  CollectionStore* store_;
  std::shared_ptr<const rpc::Authorizer> auth_;
  RetrievalMetrics metrics_;
  ThreadPool write_pool_;
  SearchBatcher batcher_;  // last: stops (answering what is queued) first
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_RETRIEVAL_SERVICE_H_
