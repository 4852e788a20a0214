#include "services/retrieval/retrieval_service.h"

#include <google/protobuf/util/time_util.h>
#include <omp.h>

#include <algorithm>
#include <thread>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"
#include "shared/rpc/unary.h"

namespace switchyard::retrieval {
namespace {

using google::protobuf::util::TimeUtil;
using rpc::Offload;
using rpc::Role;
using rpc::Unary;

constexpr int kDefaultPage = 50;
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

google::protobuf::Timestamp Time(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(t == absl::InfinitePast() ? 0 : absl::ToUnixNanos(t));
}

// "collections/handbook" or "handbook" -> "handbook".
absl::StatusOr<std::string> CollectionId(const std::string& name, const char* field) {
  std::string id = absl::StartsWith(name, "collections/") ? name.substr(12) : name;
  if (id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is required (\"collections/{collection_id}\")"));
  }
  return id;
}

const char* ModeName(SearchMode mode) {
  switch (mode) {
    case SearchMode::kLexical:
      return "lexical";
    case SearchMode::kHybrid:
      return "hybrid";
    default:
      return "dense";
  }
}

void StatsToProto(const CollectionStatsInfo& s, v1::CollectionStats* out) {
  out->set_documents(s.documents);
  out->set_chunks(s.chunks);
  out->set_vectors(s.vectors);
  out->set_tombstoned_vectors(s.tombstoned_vectors);
  out->set_index_bytes(s.index_bytes);
  out->set_chunk_store_bytes(s.chunk_store_bytes);
  out->set_index_type(s.index_type);
  out->set_trained(s.trained);
  out->set_rebuilding(s.rebuilding);
  *out->mutable_save_time() = Time(s.save_time);
}

void CollectionToProto(const Collection& c, v1::Collection* out) {
  const CollectionSpec& spec = c.spec();
  out->set_name("collections/" + spec.id);
  out->set_collection_id(spec.id);
  out->set_description(spec.description);
  out->mutable_labels()->insert(spec.labels.begin(), spec.labels.end());
  v1::EmbedderSpec* e = out->mutable_embedder();
  e->set_model(spec.embedder.model);
  e->set_dimension(spec.embedder.dimension);
  e->set_query_prefix(spec.embedder.query_prefix);
  e->set_document_prefix(spec.embedder.document_prefix);
  e->set_batch_size(spec.embedder.batch_size);
  e->set_max_tokens(spec.embedder.max_tokens);
  v1::IndexSpec* x = out->mutable_index();
  x->set_factory(spec.index.factory);
  x->set_train_size(spec.index.train_size);
  x->set_nprobe(spec.index.nprobe);
  x->set_ef_search(spec.index.ef_search);
  x->set_rebuild_threshold(spec.index.rebuild_threshold);
  v1::ChunkingSpec* k = out->mutable_chunking();
  k->set_chunk_tokens(spec.chunking.chunk_tokens);
  k->set_overlap_tokens(spec.chunking.overlap_tokens);
  k->set_ignore_paragraphs(spec.chunking.ignore_paragraphs);
  out->set_distance(spec.index.metric == Metric::kL2 ? v1::DISTANCE_METRIC_L2
                                                     : v1::DISTANCE_METRIC_INNER_PRODUCT);
  const CollectionStatsInfo stats = c.Stats();
  StatsToProto(stats, out->mutable_stats());
  *out->mutable_create_time() = Time(spec.create_time);
  *out->mutable_update_time() = Time(stats.update_time);
}

absl::StatusOr<CollectionRequest> RequestFromProto(const v1::Collection& in) {
  CollectionRequest r;
  r.spec.id = in.collection_id();
  r.spec.description = in.description();
  r.spec.labels = Metadata(in.labels().begin(), in.labels().end());
  r.spec.embedder.model = in.embedder().model();
  r.spec.embedder.query_prefix = in.embedder().query_prefix();
  r.spec.embedder.document_prefix = in.embedder().document_prefix();
  r.dimension = in.embedder().dimension();
  r.batch_size = in.embedder().batch_size();
  r.spec.index.factory = in.index().factory();
  r.train_size = in.index().train_size();
  r.nprobe = in.index().nprobe();
  r.ef_search = in.index().ef_search();
  r.rebuild_threshold = in.index().rebuild_threshold();
  if (in.index().rebuild_threshold() < 0 || in.index().rebuild_threshold() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "index.rebuild_threshold: must be in [0, 1], got ", in.index().rebuild_threshold()));
  }
  if (in.chunking().has_chunk_tokens()) r.chunk_tokens = in.chunking().chunk_tokens();
  if (in.chunking().has_overlap_tokens()) r.overlap_tokens = in.chunking().overlap_tokens();
  r.spec.chunking.ignore_paragraphs = in.chunking().ignore_paragraphs();
  switch (in.distance()) {
    case v1::DISTANCE_METRIC_UNSPECIFIED:
    case v1::DISTANCE_METRIC_INNER_PRODUCT:
      r.spec.index.metric = Metric::kInnerProduct;
      break;
    case v1::DISTANCE_METRIC_L2:
      r.spec.index.metric = Metric::kL2;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("distance: unknown value ", static_cast<int>(in.distance())));
  }
  return r;
}

DocumentInput DocumentFromProto(const v1::Document& d) {
  return DocumentInput{d.id(), d.text(), Metadata(d.metadata().begin(), d.metadata().end())};
}

absl::StatusOr<SearchQuery> QueryFromProto(const v1::SearchRequest& in) {
  SearchQuery q;
  q.texts.assign(in.queries().begin(), in.queries().end());
  for (const v1::QueryVector& v : in.query_vectors()) {
    q.vectors.emplace_back(v.values().begin(), v.values().end());
  }
  if (q.texts.empty() && q.vectors.empty()) {
    return absl::InvalidArgumentError("queries: at least one query is required");
  }
  if (in.k() < 0) return absl::InvalidArgumentError(absl::StrCat("k: must be >= 0, got ", in.k()));
  q.k = in.k() == 0 ? 10 : in.k();
  for (const v1::MetadataCondition& c : in.filter().conditions()) {
    q.filter.push_back({c.key(), {c.values().begin(), c.values().end()}});
  }
  switch (in.mode()) {
    case v1::SEARCH_MODE_UNSPECIFIED:
    case v1::SEARCH_MODE_DENSE:
      q.mode = SearchMode::kDense;
      break;
    case v1::SEARCH_MODE_LEXICAL:
      q.mode = SearchMode::kLexical;
      break;
    case v1::SEARCH_MODE_HYBRID:
      q.mode = SearchMode::kHybrid;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("mode: unknown value ", static_cast<int>(in.mode())));
  }
  if (in.hybrid().rrf_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hybrid.rrf_k: must be > 0, got ", in.hybrid().rrf_k()));
  }
  q.rrf_k = in.hybrid().rrf_k() == 0 ? 60 : in.hybrid().rrf_k();
  q.dense_weight = in.hybrid().has_dense_weight() ? in.hybrid().dense_weight() : 1.0;
  q.lexical_weight = in.hybrid().has_lexical_weight() ? in.hybrid().lexical_weight() : 1.0;
  q.candidates = in.hybrid().candidates();
  if (in.has_nprobe()) {
    if (in.nprobe() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("nprobe: must be >= 1, got ", in.nprobe()));
    }
    q.nprobe = in.nprobe();
  }
  if (in.has_ef_search()) {
    if (in.ef_search() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("ef_search: must be >= 1, got ", in.ef_search()));
    }
    q.ef_search = in.ef_search();
  }
  if (in.has_min_score()) q.min_score = in.min_score();
  q.omit_text = in.omit_text();
  return q;
}

void HitToProto(const SearchHitInfo& h, bool hybrid, v1::SearchHit* out) {
  out->set_rank(h.rank);
  out->set_score(h.score);
  out->set_document_id(h.document_id);
  out->set_position(h.position);
  out->set_chunk_id(absl::StrCat(h.document_id, "#", h.position));
  out->set_text(h.text);
  if (h.metadata != nullptr)
    out->mutable_metadata()->insert(h.metadata->begin(), h.metadata->end());
  out->set_start_offset(h.start_offset);
  out->set_end_offset(h.end_offset);
  if (hybrid) {
    out->set_dense_score(h.dense_score);
    out->set_lexical_score(h.lexical_score);
    out->set_dense_rank(h.dense_rank);
    out->set_lexical_rank(h.lexical_rank);
  }
}

// Streams documents in: each batch is chunked, embedded and applied on the
// write pool before the next message is read (the stream's back-pressure);
// the collection is saved once, at the end or on an error.
class IngestReactor : public grpc::ServerReadReactor<v1::IngestDocumentsRequest> {
 public:
  IngestReactor(RetrievalServiceImpl* service, grpc::CallbackServerContext* context,
                v1::IngestDocumentsResponse* response)
      : service_(service), response_(response), start_(absl::Now()) {
    absl::Status s = service_->auth().Authorize(*context, Role::kAdmin);
    if (!s.ok()) {
      Finish(rpc::ToGrpcStatus(s));
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client finished sending (or went away)
      service_->write_pool().Submit([this] { Complete(absl::OkStatus()); });
      return;
    }
    ++messages_;
    if (messages_ == 1) {
      absl::Status s = Header();
      if (!s.ok()) {
        Finish(rpc::ToGrpcStatus(s));
        return;
      }
      StartRead(&request_);
      return;
    }
    service_->write_pool().Submit([this] {
      absl::Status s = Batch();
      if (!s.ok()) {
        Complete(s);
        return;
      }
      StartRead(&request_);
    });
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Header() {
    if (!request_.has_header()) {
      return absl::InvalidArgumentError("message 1: the first message must be the header");
    }
    SY_ASSIGN_OR_RETURN(std::string id,
                        CollectionId(request_.header().collection(), "header.collection"));
    SY_ASSIGN_OR_RETURN(collection_, service_->store().Get(id));
    return absl::OkStatus();
  }

  absl::Status Batch() {
    if (!request_.has_batch()) {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", messages_, ": only the first message is a header"));
    }
    std::vector<DocumentInput> documents;
    documents.reserve(request_.batch().documents_size());
    for (const v1::Document& d : request_.batch().documents()) {
      ++received_;
      if (!seen_.insert(d.id()).second) {
        v1::Issue* w = response_->add_warnings();
        w->set_severity(v1::Issue::WARNING);
        w->set_kind("duplicate_id_in_stream");
        w->set_line(received_);
        w->set_field("id");
        w->set_message(absl::StrCat("document \"", d.id(), "\" was sent before; this copy wins"));
      }
      documents.push_back(DocumentFromProto(d));
    }
    double embed_seconds = 0;
    auto prepared = collection_->Prepare(std::move(documents), &embed_seconds);
    if (!prepared.ok()) {
      return absl::Status(prepared.status().code(),
                          absl::StrCat("message ", messages_, ": ", prepared.status().message()));
    }
    embed_seconds_ += embed_seconds;
    service_->metrics().embed_seconds.Observe(embed_seconds);
    const int64_t n = static_cast<int64_t>(prepared->size());
    SY_ASSIGN_OR_RETURN(WriteResult w, collection_->Apply(std::move(*prepared), /*save=*/false));
    replaced_ += w.replaced;
    chunks_ += w.chunks_added;
    const std::string& id = collection_->spec().id;
    service_->metrics().ingested_documents.Add({{"collection", id}}).Increment(n);
    service_->metrics().ingested_chunks.Add({{"collection", id}}).Increment(w.chunks_added);
    return absl::OkStatus();
  }

  // Saves what was applied (also after an error: earlier messages stay).
  void Complete(absl::Status status) {
    if (status.ok() && collection_ == nullptr) {
      status = absl::InvalidArgumentError("the stream ended before its header");
    }
    if (collection_ != nullptr && received_ > 0) {
      absl::Status saved = collection_->Save();
      if (status.ok()) status = saved;
    }
    if (status.ok()) {
      response_->set_documents(received_);
      response_->set_documents_replaced(replaced_);
      response_->set_chunks(chunks_);
      response_->set_embed_seconds(embed_seconds_);
      response_->set_total_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
      const CollectionStatsInfo stats = collection_->Stats();
      StatsToProto(stats, response_->mutable_stats());
      service_->metrics().Observe(collection_->spec().id, stats);
    }
    Finish(rpc::ToGrpcStatus(status));
  }

  RetrievalServiceImpl* service_;
  v1::IngestDocumentsResponse* response_;
  v1::IngestDocumentsRequest request_;
  std::shared_ptr<Collection> collection_;
  const absl::Time start_;
  int64_t messages_ = 0, received_ = 0, replaced_ = 0, chunks_ = 0;
  double embed_seconds_ = 0;
  std::unordered_set<std::string> seen_;
};

}  // namespace

RetrievalMetrics::RetrievalMetrics(prometheus::Registry& registry)
    : queries(prometheus::BuildCounter()
                  .Name("switchyard_retrieval_queries_total")
                  .Help("Search queries answered, by collection and mode.")
                  .Register(registry)),
      latency(prometheus::BuildHistogram()
                  .Name("switchyard_retrieval_search_duration_seconds")
                  .Help("Search request latency (embedding, index and fusion), by mode.")
                  .Register(registry)),
      hits(prometheus::BuildCounter()
               .Name("switchyard_retrieval_hits_total")
               .Help("Hits returned by searches, by collection.")
               .Register(registry)),
      ingested_documents(prometheus::BuildCounter()
                             .Name("switchyard_retrieval_ingested_documents_total")
                             .Help("Documents ingested or upserted, by collection.")
                             .Register(registry)),
      ingested_chunks(prometheus::BuildCounter()
                          .Name("switchyard_retrieval_ingested_chunks_total")
                          .Help("Chunks embedded and indexed, by collection.")
                          .Register(registry)),
      embed_seconds(prometheus::BuildHistogram()
                        .Name("switchyard_retrieval_embed_duration_seconds")
                        .Help("Time to embed one batch of documents.")
                        .Register(registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05,
                                                                         0.1, 0.5, 1, 5, 10, 60})),
      vectors(prometheus::BuildGauge()
                  .Name("switchyard_retrieval_vectors")
                  .Help("Vectors in a collection's index, tombstoned ones included.")
                  .Register(registry)),
      index_bytes(prometheus::BuildGauge()
                      .Name("switchyard_retrieval_index_bytes")
                      .Help("Size of a collection's saved FAISS index.")
                      .Register(registry)),
      collections(prometheus::BuildGauge()
                      .Name("switchyard_retrieval_collections")
                      .Help("Collections served.")
                      .Register(registry)
                      .Add({})),
      batch_size(prometheus::BuildHistogram()
                     .Name("switchyard_retrieval_search_batch_size")
                     .Help("Search requests answered together by one index call.")
                     .Register(registry)
                     .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64})) {}

void RetrievalMetrics::Observe(const std::string& collection, const CollectionStatsInfo& stats) {
  vectors.Add({{"collection", collection}}).Set(static_cast<double>(stats.vectors));
  index_bytes.Add({{"collection", collection}}).Set(static_cast<double>(stats.index_bytes));
}

void RetrievalMetrics::Forget(const std::string& collection) {
  vectors.Remove(&vectors.Add({{"collection", collection}}));
  index_bytes.Remove(&index_bytes.Add({{"collection", collection}}));
}

RetrievalServiceImpl::RetrievalServiceImpl(CollectionStore* store,
                                           std::shared_ptr<const rpc::Authorizer> auth,
                                           prometheus::Registry& registry,
                                           RetrievalServiceOptions options)
    : store_(store),
      auth_(std::move(auth)),
      metrics_(registry),
      write_pool_(std::max(1, options.write_threads)),
      batcher_(options.search_threads, options.max_batch_queries,
               [this](size_t n) { metrics_.batch_size.Observe(static_cast<double>(n)); }) {
  const auto all = store_->List();
  metrics_.collections.Set(static_cast<double>(all.size()));
  for (const auto& c : all) metrics_.Observe(c->spec().id, c->Stats());
}

RetrievalServiceImpl::~RetrievalServiceImpl() = default;

grpc::ServerUnaryReactor* RetrievalServiceImpl::CreateCollection(
    grpc::CallbackServerContext* context, const v1::CreateCollectionRequest* request,
    v1::Collection* response) {
  return Offload(write_pool_, *auth_, context, Role::kAdmin, [=]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(CollectionRequest r, RequestFromProto(request->collection()));
    if (request->validate_only()) {
      SY_ASSIGN_OR_RETURN(CollectionSpec spec, store_->Resolve(r));
      if (store_->Get(spec.id).ok()) {
        return absl::AlreadyExistsError(absl::StrCat("collections/", spec.id, " already exists"));
      }
      response->set_name("collections/" + spec.id);
      response->set_collection_id(spec.id);
      response->mutable_embedder()->set_model(spec.embedder.model);
      response->mutable_embedder()->set_dimension(spec.embedder.dimension);
      response->mutable_embedder()->set_max_tokens(spec.embedder.max_tokens);
      response->mutable_index()->set_factory(spec.index.factory);
      response->mutable_chunking()->set_chunk_tokens(spec.chunking.chunk_tokens);
      response->mutable_chunking()->set_overlap_tokens(spec.chunking.overlap_tokens);
      return absl::OkStatus();
    }
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, store_->Create(r));
    CollectionToProto(*c, response);
    metrics_.collections.Set(static_cast<double>(store_->List().size()));
    metrics_.Observe(c->spec().id, c->Stats());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::GetCollection(
    grpc::CallbackServerContext* context, const v1::GetCollectionRequest* request,
    v1::Collection* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, CollectionId(request->name(), "name"));
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, store_->Get(id));
    CollectionToProto(*c, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::ListCollections(
    grpc::CallbackServerContext* context, const v1::ListCollectionsRequest* request,
    v1::ListCollectionsResponse* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(int page, rpc::PageSize(request->page_size(), kDefaultPage));
    SY_ASSIGN_OR_RETURN(int64_t offset, rpc::ParsePageToken(request->page_token()));
    const auto all = store_->List();
    const int64_t total = static_cast<int64_t>(all.size());
    const int64_t end = std::min<int64_t>(total, offset + page);
    for (int64_t i = offset; i < end; ++i) CollectionToProto(*all[i], response->add_collections());
    if (end < total) response->set_next_page_token(absl::StrCat(end));
    response->set_total_size(static_cast<int32_t>(total));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::DeleteCollection(
    grpc::CallbackServerContext* context, const v1::DeleteCollectionRequest* request,
    google::protobuf::Empty*) {
  return Offload(write_pool_, *auth_, context, Role::kAdmin, [=]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, CollectionId(request->name(), "name"));
    SY_RETURN_IF_ERROR(store_->Delete(id));
    metrics_.Forget(id);
    metrics_.collections.Set(static_cast<double>(store_->List().size()));
    return absl::OkStatus();
  });
}

grpc::ServerReadReactor<v1::IngestDocumentsRequest>* RetrievalServiceImpl::IngestDocuments(
    grpc::CallbackServerContext* context, v1::IngestDocumentsResponse* response) {
  return new IngestReactor(this, context, response);
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::UpsertDocuments(
    grpc::CallbackServerContext* context, const v1::UpsertDocumentsRequest* request,
    v1::UpsertDocumentsResponse* response) {
  return Offload(write_pool_, *auth_, context, Role::kAdmin, [=]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, CollectionId(request->collection(), "collection"));
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, store_->Get(id));
    std::vector<DocumentInput> documents;
    std::unordered_set<std::string> ids;
    for (int i = 0; i < request->documents_size(); ++i) {
      const v1::Document& d = request->documents(i);
      if (!ids.insert(d.id()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("documents[", i, "].id: \"", d.id(), "\" appears earlier in the request"));
      }
      documents.push_back(DocumentFromProto(d));
    }
    double embed_seconds = 0;
    SY_ASSIGN_OR_RETURN(std::vector<PreparedDocument> prepared,
                        c->Prepare(std::move(documents), &embed_seconds));
    metrics_.embed_seconds.Observe(embed_seconds);
    const int64_t n = static_cast<int64_t>(prepared.size());
    SY_ASSIGN_OR_RETURN(WriteResult w, c->Apply(std::move(prepared)));
    response->set_documents_created(w.created);
    response->set_documents_replaced(w.replaced);
    response->set_chunks(w.chunks_added);
    const CollectionStatsInfo stats = c->Stats();
    StatsToProto(stats, response->mutable_stats());
    metrics_.ingested_documents.Add({{"collection", id}}).Increment(static_cast<double>(n));
    metrics_.ingested_chunks.Add({{"collection", id}})
        .Increment(static_cast<double>(w.chunks_added));
    metrics_.Observe(id, stats);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::DeleteDocuments(
    grpc::CallbackServerContext* context, const v1::DeleteDocumentsRequest* request,
    v1::DeleteDocumentsResponse* response) {
  return Offload(write_pool_, *auth_, context, Role::kAdmin, [=]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::string id, CollectionId(request->collection(), "collection"));
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, store_->Get(id));
    SY_ASSIGN_OR_RETURN(WriteResult w, c->Delete({request->ids().begin(), request->ids().end()}));
    response->set_documents_deleted(w.deleted);
    response->set_chunks_deleted(w.chunks_removed);
    for (const std::string& missing : w.missing_ids) response->add_missing_ids(missing);
    const CollectionStatsInfo stats = c->Stats();
    StatsToProto(stats, response->mutable_stats());
    metrics_.Observe(id, stats);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RetrievalServiceImpl::Search(grpc::CallbackServerContext* context,
                                                       const v1::SearchRequest* request,
                                                       v1::SearchResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time start = absl::Now();
  absl::Status s = [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(auth_->Authorize(*context, Role::kUser));
    SY_ASSIGN_OR_RETURN(std::string id, CollectionId(request->collection(), "collection"));
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, store_->Get(id));
    SY_ASSIGN_OR_RETURN(SearchQuery query, QueryFromProto(*request));
    const size_t texts = query.texts.size();
    const SearchMode mode = query.mode;
    batcher_.Submit(
        c, std::move(query),
        [this, reactor, context, response, id, texts, mode, start,
         request](absl::StatusOr<SearchOutcome> outcome) {
          absl::Status status = outcome.status();
          if (status.ok() && context->deadline() < std::chrono::system_clock::now()) {
            status = absl::DeadlineExceededError("the deadline passed while the search queued");
          }
          if (!status.ok()) {
            reactor->Finish(rpc::ToGrpcStatus(status));
            return;
          }
          const bool hybrid = mode == SearchMode::kHybrid;
          int64_t hits = 0;
          for (size_t q = 0; q < outcome->results.size(); ++q) {
            v1::QueryResult* result = response->add_results();
            if (q < texts) result->set_query(request->queries(static_cast<int>(q)));
            for (const SearchHitInfo& h : outcome->results[q]) {
              HitToProto(h, hybrid, result->add_hits());
            }
            hits += static_cast<int64_t>(outcome->results[q].size());
          }
          response->set_embed_seconds(outcome->embed_seconds);
          response->set_search_seconds(outcome->search_seconds);
          const char* mode_name = ModeName(mode);
          metrics_.queries.Add({{"collection", id}, {"mode", mode_name}})
              .Increment(static_cast<double>(outcome->results.size()));
          metrics_.hits.Add({{"collection", id}}).Increment(static_cast<double>(hits));
          metrics_.latency.Add({{"mode", mode_name}}, kLatencyBuckets)
              .Observe(absl::ToDoubleSeconds(absl::Now() - start));
          reactor->Finish(grpc::Status::OK);
        });
    return absl::OkStatus();
  }();
  if (!s.ok()) reactor->Finish(rpc::ToGrpcStatus(s));
  return reactor;
}

}  // namespace switchyard::retrieval
