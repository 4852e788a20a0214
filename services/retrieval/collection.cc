#include "services/retrieval/collection.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/core/utf8.h"

namespace switchyard::retrieval {
namespace {

using json = nlohmann::json;

constexpr int kMaxMetadataKeys = 64;
constexpr size_t kMaxDocumentIdBytes = 512;
// A filter matching at most this many chunks is searched exactly over just
// those chunks' vectors (cheaper, and exact) instead of through the index.
constexpr size_t kExactCandidateLimit = 20000;

std::string SnapshotName(int64_t n) { return absl::StrFormat("snapshot-%06d", n); }

json SpecToJson(const CollectionSpec& spec) {
  json j;
  j["id"] = spec.id;
  j["description"] = spec.description;
  j["labels"] = spec.labels;
  j["embedder"] = {{"model", spec.embedder.model},
                   {"dimension", spec.embedder.dimension},
                   {"query_prefix", spec.embedder.query_prefix},
                   {"document_prefix", spec.embedder.document_prefix},
                   {"batch_size", spec.embedder.batch_size},
                   {"max_tokens", spec.embedder.max_tokens}};
  j["index"] = {{"factory", spec.index.factory},
                {"metric", spec.index.metric == Metric::kL2 ? "l2" : "inner_product"},
                {"train_size", spec.index.train_size},
                {"nprobe", spec.index.nprobe},
                {"ef_search", spec.index.ef_search},
                {"rebuild_threshold", spec.index.rebuild_threshold}};
  j["chunking"] = {{"chunk_tokens", spec.chunking.chunk_tokens},
                   {"overlap_tokens", spec.chunking.overlap_tokens},
                   {"ignore_paragraphs", spec.chunking.ignore_paragraphs}};
  j["create_time_ms"] = absl::ToUnixMillis(spec.create_time);
  return j;
}

absl::StatusOr<CollectionSpec> SpecFromJson(const json& j) {
  try {
    CollectionSpec spec;
    spec.id = j.at("id").get<std::string>();
    spec.description = j.value("description", "");
    spec.labels = j.value("labels", Metadata{});
    const json& e = j.at("embedder");
    spec.embedder.model = e.at("model").get<std::string>();
    spec.embedder.dimension = e.at("dimension").get<int>();
    spec.embedder.query_prefix = e.value("query_prefix", "");
    spec.embedder.document_prefix = e.value("document_prefix", "");
    spec.embedder.batch_size = e.value("batch_size", 32);
    spec.embedder.max_tokens = e.value("max_tokens", 0);
    const json& x = j.at("index");
    spec.index.factory = x.at("factory").get<std::string>();
    spec.index.metric =
        x.value("metric", "inner_product") == "l2" ? Metric::kL2 : Metric::kInnerProduct;
    spec.index.dimension = spec.embedder.dimension;
    spec.index.train_size = x.value("train_size", int64_t{0});
    spec.index.nprobe = x.value("nprobe", 16);
    spec.index.ef_search = x.value("ef_search", 64);
    spec.index.rebuild_threshold = x.value("rebuild_threshold", 0.2);
    const json& c = j.at("chunking");
    spec.chunking.chunk_tokens = c.at("chunk_tokens").get<int>();
    spec.chunking.overlap_tokens = c.at("overlap_tokens").get<int>();
    spec.chunking.ignore_paragraphs = c.value("ignore_paragraphs", false);
    spec.create_time = absl::FromUnixMillis(j.value("create_time_ms", int64_t{0}));
    return spec;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("collection.json: ", e.what()));
  }
}

}  // namespace

absl::Status ValidateCollectionId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 63 && (std::isalnum(static_cast<unsigned char>(id[0])));
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) {
      ok = false;
    }
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "collection_id: \"", id,
        "\" must be 1-63 of lower-case letters, digits, '-', '_' and '.', starting with a "
        "letter or digit"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDocument(const DocumentInput& document) {
  if (document.id.empty() || document.id.size() > kMaxDocumentIdBytes ||
      !IsValidUtf8(document.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("id: must be 1-512 bytes of UTF-8, got ", document.id.size(), " bytes"));
  }
  if (!IsValidUtf8(document.text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text: document \"", document.id, "\" is not valid UTF-8"));
  }
  if (document.text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text: document \"", document.id, "\" has no text"));
  }
  if (document.metadata.size() > kMaxMetadataKeys) {
    return absl::InvalidArgumentError(absl::StrCat("metadata: document \"", document.id, "\" has ",
                                                   document.metadata.size(), " keys, the limit is ",
                                                   kMaxMetadataKeys));
  }
  for (const auto& [key, value] : document.metadata) {
    if (key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata: document \"", document.id, "\" has an empty key"));
    }
  }
  return absl::OkStatus();
}

Collection::Collection(std::string dir, CollectionSpec spec,
                       std::shared_ptr<const Embedder> embedder)
    : dir_(std::move(dir)), spec_(std::move(spec)), embedder_(std::move(embedder)) {}

Collection::~Collection() { WaitForRebuild(); }

std::shared_lock<std::shared_mutex> Collection::ReadLock() const {
  // Through the turnstile: a waiting writer holds it, so a steady stream of
  // searches cannot starve writes (glibc's rwlock prefers readers).
  { std::lock_guard<std::mutex> turn(turnstile_); }
  return std::shared_lock<std::shared_mutex>(mu_);
}

std::unique_lock<std::shared_mutex> Collection::WriteLock() const {
  // A save holds the shared lock for as long as it writes files: wait for it
  // before taking the turnstile, so searches are not held up behind it.
  { std::lock_guard<std::mutex> save(save_mu_); }
  std::lock_guard<std::mutex> turn(turnstile_);
  return std::unique_lock<std::shared_mutex>(mu_);
}

absl::StatusOr<std::unique_ptr<Collection>> Collection::Create(
    const std::string& dir, const CollectionSpec& spec, std::shared_ptr<const Embedder> embedder) {
  SY_RETURN_IF_ERROR(ValidateCollectionId(spec.id));
  if (std::filesystem::exists(dir)) {
    return absl::AlreadyExistsError(absl::StrCat("collections/", spec.id, " already exists"));
  }
  const std::string parent = std::filesystem::path(dir).parent_path().string();
  SY_RETURN_IF_ERROR(MakeDirs(parent));
  const std::string staging = absl::StrCat(parent, "/.creating-", spec.id, "-", RandomHex(4));
  SY_RETURN_IF_ERROR(MakeDirs(staging));
  absl::Status status = [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(WriteFileAtomic(staging + "/collection.json", SpecToJson(spec).dump(2)));
    std::unique_ptr<Collection> fresh(new Collection(staging, spec, embedder));
    SY_ASSIGN_OR_RETURN(fresh->index_, VectorIndex::Create(spec.index));
    fresh->update_time_ = spec.create_time;
    SY_RETURN_IF_ERROR(fresh->Save());
    return RenameDurably(staging, dir);
  }();
  if (!status.ok()) {
    RemoveAll(staging).IgnoreError();
    return status;
  }
  return Open(dir, std::move(embedder));
}

absl::StatusOr<CollectionSpec> Collection::ReadSpec(const std::string& dir) {
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/collection.json"));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(dir + "/collection.json: not JSON");
  return SpecFromJson(j);
}

absl::StatusOr<std::unique_ptr<Collection>> Collection::Open(
    const std::string& dir, std::shared_ptr<const Embedder> embedder) {
  SY_ASSIGN_OR_RETURN(CollectionSpec spec, ReadSpec(dir));
  if (embedder->dimension() != spec.embedder.dimension) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, ": the embedder gives ", embedder->dimension(),
                     " dimensions, the collection holds ", spec.embedder.dimension));
  }
  std::unique_ptr<Collection> c(new Collection(dir, std::move(spec), std::move(embedder)));
  SY_RETURN_IF_ERROR(c->LoadSnapshot());
  return c;
}

absl::Status Collection::LoadSnapshot() {
  SY_ASSIGN_OR_RETURN(std::string current, ReadFile(dir_ + "/CURRENT"));
  while (!current.empty() && (current.back() == '\n' || current.back() == ' ')) current.pop_back();
  int64_t number = 0;
  if (!absl::StartsWith(current, "snapshot-") || !absl::SimpleAtoi(current.substr(9), &number)) {
    return absl::DataLossError(absl::StrCat(dir_, "/CURRENT: bad content \"", current, "\""));
  }
  const std::string snap = dir_ + "/" + current;
  SY_ASSIGN_OR_RETURN(index_, VectorIndex::Load(spec_.index, snap));

  SY_ASSIGN_OR_RETURN(std::string state_text, ReadFile(snap + "/state.json"));
  json state = json::parse(state_text, nullptr, false);
  if (state.is_discarded()) return absl::DataLossError(snap + "/state.json: not JSON");
  next_chunk_id_ = state.value("next_chunk_id", int64_t{0});
  update_time_ = absl::FromUnixMillis(state.value("update_time_ms", int64_t{0}));
  save_time_ns_ = absl::ToUnixNanos(absl::FromUnixMillis(state.value("save_time_ms", int64_t{0})));

  SY_ASSIGN_OR_RETURN(std::string docs_text, ReadFile(snap + "/documents.jsonl"));
  int64_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(docs_text, '\n', absl::SkipEmpty())) {
    ++line_number;
    json j = json::parse(line.begin(), line.end(), nullptr, false);
    auto fail = [&](absl::string_view why) {
      return absl::DataLossError(
          absl::StrCat(snap, "/documents.jsonl line ", line_number, ": ", why));
    };
    if (j.is_discarded() || !j.is_object()) return fail("not a JSON object");
    try {
      auto doc = std::make_unique<StoredDocument>();
      std::string id = j.at("id").get<std::string>();
      doc->text = j.at("text").get<std::string>();
      doc->metadata = std::make_shared<const Metadata>(j.value("metadata", Metadata{}));
      for (const json& c : j.at("chunks")) {
        const int64_t chunk_id = c.at(0).get<int64_t>();
        const uint32_t begin = c.at(1).get<uint32_t>(), end = c.at(2).get<uint32_t>();
        if (begin > end || end > doc->text.size()) return fail("chunk range outside the text");
        if (!index_->Contains(chunk_id)) {
          return fail(absl::StrCat("chunk ", chunk_id, " has no vector in the index"));
        }
        doc->chunk_ids.push_back(chunk_id);
        doc->ranges.emplace_back(begin, end);
      }
      auto [it, inserted] = documents_.emplace(id, std::move(doc));
      if (!inserted) return fail(absl::StrCat("document \"", id, "\" appears twice"));
      StoredDocument* d = it->second.get();
      d->id = &it->first;
      for (size_t p = 0; p < d->chunk_ids.size(); ++p) {
        chunks_[d->chunk_ids[p]] = ChunkRef{d, static_cast<int>(p)};
        bm25_.Add(d->chunk_ids[p],
                  absl::string_view(d->text).substr(d->ranges[p].first,
                                                    d->ranges[p].second - d->ranges[p].first));
      }
      IndexMetadataLocked(d, /*add=*/true);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }
  if (static_cast<int64_t>(chunks_.size()) != index_->live()) {
    return absl::DataLossError(
        absl::StrCat(snap, ": ", chunks_.size(), " chunks but ", index_->live(), " live vectors"));
  }
  snapshot_ = number;
  PublishLocked();
  index_bytes_ = DirectoryBytes(snap) - static_cast<int64_t>(docs_text.size()) -
                 static_cast<int64_t>(state_text.size());
  chunk_store_bytes_ = static_cast<int64_t>(docs_text.size());
  // Leftovers of interrupted saves and older snapshots.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if ((absl::StartsWith(name, "snapshot-") && name != current) ||
        absl::StartsWith(name, ".tmp-")) {
      RemoveAll(entry.path().string()).IgnoreError();
    }
  }
  return absl::OkStatus();
}

absl::Status Collection::Save() {
  std::lock_guard<std::mutex> save_lock(save_mu_);
  if (destroyed_) {
    return absl::NotFoundError(absl::StrCat("collections/", spec_.id, " was deleted"));
  }
  std::shared_lock<std::shared_mutex> lock = ReadLock();
  return SaveLocked();
}

absl::Status Collection::SaveLocked() {
  const int64_t next = snapshot_ + 1;
  const std::string name = SnapshotName(next);
  const std::string tmp = absl::StrCat(dir_, "/.tmp-", name, "-", RandomHex(4));
  SY_RETURN_IF_ERROR(MakeDirs(tmp));
  bool renamed = false;
  absl::Status status = [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(index_->Save(tmp));
    FileWriter docs;
    SY_RETURN_IF_ERROR(docs.Open(tmp + "/documents.jsonl"));
    // Sorted by id, so equal collections save equal files.
    std::vector<const StoredDocument*> order;
    order.reserve(documents_.size());
    for (const auto& [id, doc] : documents_) order.push_back(doc.get());
    std::sort(order.begin(), order.end(),
              [](const StoredDocument* a, const StoredDocument* b) { return *a->id < *b->id; });
    std::string buffer;
    for (const StoredDocument* d : order) {
      json chunks = json::array();
      for (size_t p = 0; p < d->chunk_ids.size(); ++p) {
        chunks.push_back({d->chunk_ids[p], d->ranges[p].first, d->ranges[p].second});
      }
      json line = {{"id", *d->id},
                   {"text", d->text},
                   {"metadata", *d->metadata},
                   {"chunks", std::move(chunks)}};
      buffer += line.dump();
      buffer += '\n';
      if (buffer.size() > (1 << 20)) {
        SY_RETURN_IF_ERROR(docs.Append(buffer));
        buffer.clear();
      }
    }
    SY_RETURN_IF_ERROR(docs.Append(buffer));
    SY_RETURN_IF_ERROR(docs.Close());
    const absl::Time now = absl::Now();
    json state = {{"next_chunk_id", next_chunk_id_},
                  {"update_time_ms", absl::ToUnixMillis(update_time_)},
                  {"save_time_ms", absl::ToUnixMillis(now)},
                  {"documents", documents_.size()},
                  {"chunks", chunks_.size()}};
    SY_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/state.json", state.dump(2)));
    SY_RETURN_IF_ERROR(FsyncPath(tmp));
    SY_RETURN_IF_ERROR(RenameDurably(tmp, dir_ + "/" + name));
    renamed = true;
    // The switch: until CURRENT names the new snapshot, the old one stands.
    SY_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/CURRENT", name + "\n"));
    save_time_ns_ = absl::ToUnixNanos(now);
    chunk_store_bytes_ = docs.bytes_written();
    index_bytes_ = DirectoryBytes(dir_ + "/" + name) - docs.bytes_written() -
                   static_cast<int64_t>(state.dump(2).size());
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    RemoveAll(tmp).IgnoreError();
    if (!renamed) return status;
    // The new snapshot is in place; whether CURRENT names it decides which
    // one stands. Either way the next save gets a fresh number.
    auto current = ReadFile(dir_ + "/CURRENT");
    if (!current.ok() || !absl::StartsWith(*current, name)) {
      RemoveAll(dir_ + "/" + name).IgnoreError();
      return status;
    }
  }
  if (snapshot_ > 0) RemoveAll(dir_ + "/" + SnapshotName(snapshot_)).IgnoreError();
  snapshot_ = next;
  return status;
}

absl::StatusOr<std::vector<PreparedDocument>> Collection::Prepare(
    std::vector<DocumentInput> documents, double* embed_seconds) const {
  std::vector<PreparedDocument> out(documents.size());
  std::vector<std::string> texts;
  TokenCost cost = [this](absl::string_view piece) { return embedder_->CountTokens(piece); };
  for (size_t i = 0; i < documents.size(); ++i) {
    absl::Status valid = ValidateDocument(documents[i]);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("documents[", i, "].", valid.message()));
    }
    out[i].document = std::move(documents[i]);
    out[i].chunks = ChunkText(out[i].document.text, spec_.chunking, cost);
    for (const Chunk& chunk : out[i].chunks) {
      texts.push_back(absl::StrCat(
          spec_.embedder.document_prefix,
          absl::string_view(out[i].document.text).substr(chunk.begin, chunk.end - chunk.begin)));
    }
  }
  const size_t d = static_cast<size_t>(spec_.embedder.dimension);
  const absl::Time start = absl::Now();
  SY_ASSIGN_OR_RETURN(std::vector<float> vectors, EmbedInBatches(std::move(texts)));
  // The texts went in document by document, chunk by chunk.
  auto next = vectors.begin();
  for (PreparedDocument& p : out) {
    p.vectors.assign(next, next + p.chunks.size() * d);
    next += p.chunks.size() * d;
  }
  if (embed_seconds != nullptr) *embed_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return out;
}

absl::StatusOr<std::vector<float>> Collection::EmbedInBatches(
    std::vector<std::string> texts) const {
  const size_t d = static_cast<size_t>(spec_.embedder.dimension);
  const size_t batch = static_cast<size_t>(std::max(1, spec_.embedder.batch_size));
  std::vector<float> out;
  out.reserve(texts.size() * d);
  for (size_t b = 0; b < texts.size(); b += batch) {
    std::vector<std::string> slice(
        std::make_move_iterator(texts.begin() + b),
        std::make_move_iterator(texts.begin() + std::min(texts.size(), b + batch)));
    SY_ASSIGN_OR_RETURN(std::vector<float> vectors, embedder_->Embed(slice));
    if (vectors.size() != slice.size() * d) {
      return absl::InternalError("the embedder returned the wrong number of values");
    }
    out.insert(out.end(), vectors.begin(), vectors.end());
  }
  return out;
}

void Collection::IndexMetadataLocked(StoredDocument* document, bool add) {
  for (const auto& [key, value] : *document->metadata) {
    if (add) {
      metadata_index_[key][value].insert(document);
      continue;
    }
    auto k = metadata_index_.find(key);
    if (k == metadata_index_.end()) continue;
    auto v = k->second.find(value);
    if (v == k->second.end()) continue;
    v->second.erase(document);
    if (v->second.empty()) k->second.erase(v);
    if (k->second.empty()) metadata_index_.erase(k);
  }
}

void Collection::RemoveDocumentLocked(StoredDocument* document, std::vector<int64_t>* removed) {
  for (int64_t chunk_id : document->chunk_ids) {
    chunks_.erase(chunk_id);
    bm25_.Remove(chunk_id);
    removed->push_back(chunk_id);
  }
  IndexMetadataLocked(document, /*add=*/false);
}

absl::StatusOr<WriteResult> Collection::Apply(std::vector<PreparedDocument> documents, bool save) {
  const int d = spec_.embedder.dimension;
  WriteResult result;
  {
    std::unique_lock<std::shared_mutex> lock = WriteLock();
    // Vectors first: the one step that can fail, before anything changes.
    std::vector<float> vectors;
    std::vector<int64_t> ids;
    for (const PreparedDocument& p : documents) {
      if (p.vectors.size() != p.chunks.size() * d) {
        return absl::InvalidArgumentError(absl::StrCat("document \"", p.document.id,
                                                       "\": ", p.vectors.size(), " values for ",
                                                       p.chunks.size(), " chunks of ", d));
      }
      vectors.insert(vectors.end(), p.vectors.begin(), p.vectors.end());
      for (size_t c = 0; c < p.chunks.size(); ++c) ids.push_back(next_chunk_id_ + ids.size());
    }
    SY_RETURN_IF_ERROR(index_->Add(static_cast<int64_t>(ids.size()), vectors.data(), ids.data()));
    next_chunk_id_ += static_cast<int64_t>(ids.size());

    std::vector<int64_t> removed;
    size_t next = 0;
    for (PreparedDocument& p : documents) {
      auto existing = documents_.find(p.document.id);
      if (existing != documents_.end()) {
        RemoveDocumentLocked(existing->second.get(), &removed);
        documents_.erase(existing);
        ++result.replaced;
      } else {
        ++result.created;
      }
      auto doc = std::make_unique<StoredDocument>();
      doc->text = std::move(p.document.text);
      doc->metadata = std::make_shared<const Metadata>(std::move(p.document.metadata));
      auto [it, inserted] = documents_.emplace(std::move(p.document.id), std::move(doc));
      StoredDocument* stored = it->second.get();
      stored->id = &it->first;
      for (size_t c = 0; c < p.chunks.size(); ++c) {
        const int64_t chunk_id = ids[next++];
        stored->chunk_ids.push_back(chunk_id);
        stored->ranges.emplace_back(static_cast<uint32_t>(p.chunks[c].begin),
                                    static_cast<uint32_t>(p.chunks[c].end));
        chunks_[chunk_id] = ChunkRef{stored, static_cast<int>(c)};
        bm25_.Add(chunk_id, absl::string_view(stored->text)
                                .substr(p.chunks[c].begin, p.chunks[c].end - p.chunks[c].begin));
      }
      IndexMetadataLocked(stored, /*add=*/true);
      result.chunks_added += static_cast<int64_t>(p.chunks.size());
    }
    index_->Remove(removed);
    result.chunks_removed = static_cast<int64_t>(removed.size());
    update_time_ = absl::Now();
    PublishLocked();
  }
  MaybeStartRebuild();
  if (save) SY_RETURN_IF_ERROR(Save());
  return result;
}

absl::StatusOr<WriteResult> Collection::Delete(const std::vector<std::string>& ids, bool save) {
  WriteResult result;
  {
    std::unique_lock<std::shared_mutex> lock = WriteLock();
    std::vector<int64_t> removed;
    for (const std::string& id : ids) {
      auto it = documents_.find(id);
      if (it == documents_.end()) {
        result.missing_ids.push_back(id);
        continue;
      }
      RemoveDocumentLocked(it->second.get(), &removed);
      documents_.erase(it);
      ++result.deleted;
    }
    index_->Remove(removed);
    result.chunks_removed = static_cast<int64_t>(removed.size());
    if (result.deleted > 0) update_time_ = absl::Now();
    PublishLocked();
  }
  if (result.deleted == 0) return result;
  MaybeStartRebuild();
  if (save) SY_RETURN_IF_ERROR(Save());
  return result;
}

std::optional<std::vector<int64_t>> Collection::FilterCandidatesLocked(
    const std::vector<FilterCondition>& filter) const {
  if (filter.empty()) return std::nullopt;
  std::unordered_set<const StoredDocument*> matched;
  bool first = true;
  for (const FilterCondition& condition : filter) {
    std::unordered_set<const StoredDocument*> these;
    auto k = metadata_index_.find(condition.key);
    if (k != metadata_index_.end()) {
      for (const std::string& value : condition.values) {
        auto v = k->second.find(value);
        if (v != k->second.end()) these.insert(v->second.begin(), v->second.end());
      }
    }
    if (first) {
      matched = std::move(these);
      first = false;
    } else {
      for (auto it = matched.begin(); it != matched.end();) {
        it = these.count(*it) ? std::next(it) : matched.erase(it);
      }
    }
    if (matched.empty()) break;
  }
  std::vector<int64_t> out;
  for (const StoredDocument* d : matched) {
    out.insert(out.end(), d->chunk_ids.begin(), d->chunk_ids.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<SearchOutcome> Collection::Search(const SearchQuery& query) const {
  const int d = spec_.embedder.dimension;
  if (query.k < 1 || query.k > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("k: must be in [1, 1000], got ", query.k));
  }
  if (query.texts.size() + query.vectors.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat("queries: at most 256 per request, got ",
                                                   query.texts.size() + query.vectors.size()));
  }
  for (size_t i = 0; i < query.filter.size(); ++i) {
    if (query.filter[i].key.empty() || query.filter[i].values.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter.conditions[", i, "]: needs a key and at least one value"));
    }
  }
  if (!query.vectors.empty() && query.mode != SearchMode::kDense) {
    return absl::InvalidArgumentError("query_vectors: only dense search takes query vectors");
  }
  for (size_t i = 0; i < query.vectors.size(); ++i) {
    if (static_cast<int>(query.vectors[i].size()) != d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query_vectors[", i, "]: ", query.vectors[i].size(), " values, the collection has ", d));
    }
  }
  if (query.mode == SearchMode::kHybrid) {
    if (!(query.rrf_k > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("hybrid.rrf_k: must be > 0, got ", query.rrf_k));
    }
    if (query.dense_weight < 0 || query.lexical_weight < 0) {
      return absl::InvalidArgumentError("hybrid: weights must be >= 0");
    }
    if (query.candidates < 0 || query.candidates > 10000) {
      return absl::InvalidArgumentError(
          absl::StrCat("hybrid.candidates: must be in [0, 10000], got ", query.candidates));
    }
  }
  if (query.nprobe < 0 || query.ef_search < 0) {
    return absl::InvalidArgumentError("nprobe, ef_search: must be positive");
  }

  SearchOutcome outcome;
  const size_t nq = query.texts.size() + query.vectors.size();
  outcome.results.resize(nq);
  const bool dense = query.mode != SearchMode::kLexical;
  const bool lexical = query.mode != SearchMode::kDense;
  const int list_k = query.mode == SearchMode::kHybrid
                         ? (query.candidates > 0 ? query.candidates : std::max(4 * query.k, 50))
                         : query.k;

  std::vector<float> vectors;
  absl::Time start = absl::Now();
  if (dense) {
    std::vector<std::string> texts;
    texts.reserve(query.texts.size());
    for (const std::string& t : query.texts) texts.push_back(spec_.embedder.query_prefix + t);
    SY_ASSIGN_OR_RETURN(vectors, EmbedInBatches(std::move(texts)));
    for (const auto& v : query.vectors) vectors.insert(vectors.end(), v.begin(), v.end());
  }
  outcome.embed_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  start = absl::Now();

  std::shared_lock<std::shared_mutex> lock = ReadLock();
  std::optional<std::vector<int64_t>> candidates = FilterCandidatesLocked(query.filter);
  std::unordered_set<int64_t> candidate_set;
  std::function<bool(int64_t)> accept;
  if (candidates.has_value()) {
    candidate_set.insert(candidates->begin(), candidates->end());
    accept = [&](int64_t id) { return candidate_set.count(id) > 0; };
  }
  const bool exact_plan = candidates.has_value() && candidates->size() <= kExactCandidateLimit;

  std::vector<std::vector<VectorIndex::Hit>> dense_hits(nq);
  if (dense) {
    VectorIndex::SearchOptions options;
    options.k = list_k;
    options.nprobe = query.nprobe;
    options.ef_search = query.ef_search;
    if (candidates.has_value()) {
      if (exact_plan) {
        options.candidates = &*candidates;
      } else {
        options.accept = &accept;
      }
    }
    SY_ASSIGN_OR_RETURN(dense_hits,
                        index_->Search(static_cast<int64_t>(nq), vectors.data(), options));
  }
  std::vector<std::vector<Bm25Index::Hit>> lexical_hits(nq);
  if (lexical) {
    for (size_t q = 0; q < query.texts.size(); ++q) {
      lexical_hits[q] = bm25_.Search(query.texts[q], list_k, accept ? accept : nullptr);
    }
  }

  for (size_t q = 0; q < nq; ++q) {
    struct Fused {
      int64_t id;
      double score = 0, dense_score = 0, lexical_score = 0;
      int dense_rank = 0, lexical_rank = 0;
    };
    std::vector<Fused> fused;
    if (query.mode == SearchMode::kDense) {
      for (const auto& h : dense_hits[q]) fused.push_back({h.id, h.score});
    } else if (query.mode == SearchMode::kLexical) {
      for (const auto& h : lexical_hits[q]) fused.push_back({h.id, h.score});
    } else {
      std::unordered_map<int64_t, size_t> slot;
      auto entry = [&](int64_t id) -> Fused& {
        auto [it, inserted] = slot.emplace(id, fused.size());
        if (inserted) fused.push_back({id});
        return fused[it->second];
      };
      for (size_t r = 0; r < dense_hits[q].size(); ++r) {
        Fused& f = entry(dense_hits[q][r].id);
        f.dense_rank = static_cast<int>(r + 1);
        f.dense_score = dense_hits[q][r].score;
        f.score += query.dense_weight / (query.rrf_k + static_cast<double>(r + 1));
      }
      for (size_t r = 0; r < lexical_hits[q].size(); ++r) {
        Fused& f = entry(lexical_hits[q][r].id);
        f.lexical_rank = static_cast<int>(r + 1);
        f.lexical_score = lexical_hits[q][r].score;
        f.score += query.lexical_weight / (query.rrf_k + static_cast<double>(r + 1));
      }
      std::stable_sort(fused.begin(), fused.end(), [](const Fused& a, const Fused& b) {
        return a.score != b.score ? a.score > b.score : a.id < b.id;
      });
    }
    auto& hits = outcome.results[q];
    for (const Fused& f : fused) {
      if (static_cast<int>(hits.size()) >= query.k) break;
      if (query.min_score.has_value() && f.score < *query.min_score) continue;
      auto c = chunks_.find(f.id);
      if (c == chunks_.end()) continue;
      const StoredDocument* doc = c->second.document;
      const auto& range = doc->ranges[c->second.position];
      SearchHitInfo hit;
      hit.rank = static_cast<int>(hits.size() + 1);
      hit.score = f.score;
      hit.document_id = *doc->id;
      hit.position = c->second.position;
      if (!query.omit_text) hit.text = doc->text.substr(range.first, range.second - range.first);
      hit.metadata = doc->metadata;
      hit.start_offset = range.first;
      hit.end_offset = range.second;
      hit.dense_score = f.dense_score;
      hit.lexical_score = f.lexical_score;
      hit.dense_rank = f.dense_rank;
      hit.lexical_rank = f.lexical_rank;
      hits.push_back(std::move(hit));
    }
  }
  outcome.search_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return outcome;
}

void Collection::PublishLocked() {
  CollectionStatsInfo s;
  const VectorIndex::Stats v = index_->stats();
  s.documents = static_cast<int64_t>(documents_.size());
  s.chunks = static_cast<int64_t>(chunks_.size());
  s.vectors = v.vectors;
  s.tombstoned_vectors = v.tombstones;
  s.index_type = v.type;
  s.trained = v.trained;
  s.update_time = update_time_;
  std::lock_guard<std::mutex> lock(stats_mu_);
  published_ = std::move(s);
}

CollectionStatsInfo Collection::Stats() const {
  // Never waits for the collection's lock (a save or a queued write).
  CollectionStatsInfo s;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    s = published_;
  }
  s.rebuilding = rebuilding_.load();
  s.index_bytes = index_bytes_.load();
  s.chunk_store_bytes = chunk_store_bytes_.load();
  const int64_t saved = save_time_ns_.load();
  s.save_time = saved == 0 ? absl::InfinitePast() : absl::FromUnixNanos(saved);
  return s;
}

void Collection::MaybeStartRebuild() {
  std::lock_guard<std::mutex> guard(rebuild_mu_);
  if (rebuilding_.load()) return;
  {
    std::shared_lock<std::shared_mutex> lock = ReadLock();
    if (!index_->WantsRebuild()) return;
  }
  if (rebuild_thread_.joinable()) rebuild_thread_.join();
  rebuilding_ = true;
  rebuild_thread_ = std::thread([this] { RunRebuild(); });
}

void Collection::RunRebuild() {
  VectorIndex::RebuildInput input;
  {
    std::shared_lock<std::shared_mutex> lock = ReadLock();
    input = index_->SnapshotForRebuild();
  }
  SY_LOG(kInfo, "retrieval") << "collections/" << spec_.id << ": rebuilding the index from "
                             << input.ids.size() << " vectors";
  absl::Status status = [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex::Rebuilt> rebuilt,
                        VectorIndex::Build(spec_.index, input));
    {
      std::unique_lock<std::shared_mutex> lock = WriteLock();
      SY_RETURN_IF_ERROR(index_->Install(input, std::move(rebuilt)));
      PublishLocked();
    }
    return Save();
  }();
  if (!status.ok()) {
    SY_LOG(kError, "retrieval") << "collections/" << spec_.id << ": rebuild failed: " << status;
  }
  rebuilding_ = false;
}

void Collection::WaitForRebuild() {
  std::lock_guard<std::mutex> guard(rebuild_mu_);
  if (rebuild_thread_.joinable()) rebuild_thread_.join();
}

absl::Status Collection::DestroyFiles() {
  WaitForRebuild();
  std::lock_guard<std::mutex> save_lock(save_mu_);
  destroyed_ = true;
  const std::string parent = std::filesystem::path(dir_).parent_path().string();
  const std::string aside = absl::StrCat(parent, "/.deleting-", spec_.id, "-", RandomHex(4));
  SY_RETURN_IF_ERROR(RenameDurably(dir_, aside));
  return RemoveAll(aside);
}

}  // namespace switchyard::retrieval
