// `switchyard rag ...`: the retrieval service's client: collections, document
// ingestion (JSONL or a directory of text files), deletion and search.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/core/file_util.h"
#include "switchyard/v1/retrieval.grpc.pb.h"

namespace switchyard::cli {
namespace {

const char* kRagUsage =
    "Usage: switchyard rag <verb> [flags]\n\n"
    "Document collections of the retrieval service (--server ADDR):\n"
    "  create COLLECTION        Create a collection (embedder, FAISS index, chunking).\n"
    "  ingest COLLECTION PATH   Add or replace documents: a JSONL file of\n"
    "                           {\"id\",\"text\",\"metadata\"} lines, or a directory of\n"
    "                           .txt/.md files (one document each, id = relative path).\n"
    "  delete COLLECTION --ids ID,...  Delete documents.\n"
    "  search COLLECTION QUERY  Search: dense, lexical (BM25) or hybrid.\n"
    "  list                     Collections.\n"
    "  show COLLECTION          One collection with its statistics.\n"
    "  drop COLLECTION          Delete a collection and all its documents.\n\n"
    "Run `switchyard rag <verb> --help` for the flags of each verb.\n";

using Client = ServiceClient<v1::RetrievalService>;
using Stub = v1::RetrievalService::Stub;
using json = nlohmann::json;

// Documents per ingest message, and bytes of text per message at most.
constexpr size_t kBatchDocuments = 64;
constexpr size_t kBatchBytes = 4 << 20;

std::string CollectionName(const std::string& arg) {
  return absl::StartsWith(arg, "collections/") ? arg : absl::StrCat("collections/", arg);
}

void PrintCollection(const v1::Collection& c, std::ostream& out) {
  const v1::CollectionStats& s = c.stats();
  out << c.name() << "\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"  embedder",
                  absl::StrCat(c.embedder().model(), " (", c.embedder().dimension(), " dimensions",
                               c.embedder().max_tokens() > 0
                                   ? absl::StrCat(", ", c.embedder().max_tokens(), " tokens max")
                                   : "",
                               ")")});
  rows.push_back({"  index", absl::StrCat(c.index().factory(), " -> ", s.index_type(),
                                          s.trained() ? "" : " (untrained: exact search)",
                                          s.rebuilding() ? " (rebuilding)" : "")});
  rows.push_back({"  distance", c.distance() == v1::DISTANCE_METRIC_L2 ? "l2" : "inner product"});
  rows.push_back(
      {"  chunking",
       absl::StrCat(c.chunking().chunk_tokens(), " tokens, overlap ", c.chunking().overlap_tokens(),
                    c.chunking().ignore_paragraphs() ? ", ignoring paragraphs" : "")});
  rows.push_back({"  documents", absl::StrCat(s.documents())});
  rows.push_back({"  chunks", absl::StrCat(s.chunks())});
  rows.push_back(
      {"  vectors", absl::StrCat(s.vectors(), " (", s.tombstoned_vectors(), " tombstoned)")});
  rows.push_back({"  index size", HumanBytes(s.index_bytes())});
  rows.push_back({"  chunk store", HumanBytes(s.chunk_store_bytes())});
  if (!c.description().empty()) rows.push_back({"  description", c.description()});
  rows.push_back({"  created", TimeLabel(c.create_time())});
  rows.push_back({"  updated", TimeLabel(c.update_time())});
  out << FormatTable(rows);
}

int Create(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag create COLLECTION [flags]",
                "Creates a collection. The embedder and index are fixed for its lifetime.\n"
                "--embedder hash (default) needs no weights; otherwise a registered model or\n"
                "a sentence-transformers (BERT family) directory on the server's machine.");
  flags.AddString("embedder", "hash", "hash | a registered model | a checkpoint directory.");
  flags.AddInt("dimension", 0, "Vector size (hash: default 384; a checkpoint: its hidden size).");
  flags.AddString("index", "Flat",
                  "FAISS factory string: Flat, HNSW32, IVF1024,Flat, IVF4096,PQ32, ...");
  flags.AddString("distance", "ip", "ip (inner product of normalised vectors) | l2.");
  flags.AddInt("chunk-tokens", 0, "Chunk length in embedder tokens (0: 256, capped).");
  flags.AddInt("overlap-tokens", -1, "Tokens shared by consecutive chunks (-1: 32).");
  flags.AddBool("ignore-paragraphs", false, "Cut chunks only at the token limit.");
  flags.AddInt("train-size", 0, "Vectors a trained index (IVF, PQ) trains on (0: auto).");
  flags.AddInt("nprobe", 0, "Default IVF lists probed per query (0: 16).");
  flags.AddInt("ef-search", 0, "Default HNSW efSearch (0: 64).");
  flags.AddString("query-prefix", "", "Prepended to queries before embedding.");
  flags.AddString("document-prefix", "", "Prepended to chunks before embedding.");
  flags.AddString("description", "", "Free text stored with the collection.");
  flags.AddBool("validate-only", false, "Check the spec (and that the embedder loads).");
  flags.AddBool("json", false, "Print the collection as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::CreateCollectionRequest req;
  v1::Collection* c = req.mutable_collection();
  std::string id = flags.positional()[0];
  if (absl::StartsWith(id, "collections/")) id = id.substr(12);
  c->set_collection_id(id);
  c->set_description(flags.GetString("description"));
  std::string embedder = flags.GetString("embedder");
  std::error_code ec;
  if (embedder != "hash" && std::filesystem::is_directory(embedder, ec)) {
    embedder = std::filesystem::absolute(embedder, ec).lexically_normal().string();
  }
  c->mutable_embedder()->set_model(embedder);
  c->mutable_embedder()->set_dimension(static_cast<int32_t>(flags.GetInt("dimension")));
  c->mutable_embedder()->set_query_prefix(flags.GetString("query-prefix"));
  c->mutable_embedder()->set_document_prefix(flags.GetString("document-prefix"));
  c->mutable_index()->set_factory(flags.GetString("index"));
  c->mutable_index()->set_train_size(flags.GetInt("train-size"));
  c->mutable_index()->set_nprobe(static_cast<int32_t>(flags.GetInt("nprobe")));
  c->mutable_index()->set_ef_search(static_cast<int32_t>(flags.GetInt("ef-search")));
  if (flags.GetInt("chunk-tokens") > 0) {
    c->mutable_chunking()->set_chunk_tokens(static_cast<int32_t>(flags.GetInt("chunk-tokens")));
  }
  if (flags.GetInt("overlap-tokens") >= 0) {
    c->mutable_chunking()->set_overlap_tokens(static_cast<int32_t>(flags.GetInt("overlap-tokens")));
  }
  c->mutable_chunking()->set_ignore_paragraphs(flags.GetBool("ignore-paragraphs"));
  v1::DistanceMetric distance;
  if (!ParseChoice<v1::DistanceMetric>(
          flags, "distance",
          {{"ip", v1::DISTANCE_METRIC_INNER_PRODUCT}, {"l2", v1::DISTANCE_METRIC_L2}}, &distance)) {
    return kExitUsage;
  }
  c->set_distance(distance);
  req.set_validate_only(flags.GetBool("validate-only"));
  v1::Collection out;
  rc = CallOnce<v1::RetrievalService>(flags, &Stub::CreateCollection, req, &out);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(out);
    return kExitOk;
  }
  if (req.validate_only()) {
    std::cout << "valid (nothing created): " << out.name() << ", embedder "
              << out.embedder().model() << " (" << out.embedder().dimension()
              << " dimensions), index " << out.index().factory() << ", chunks of "
              << out.chunking().chunk_tokens() << " tokens (overlap "
              << out.chunking().overlap_tokens() << ")\n";
    return kExitOk;
  }
  std::cout << "created ";
  PrintCollection(out, std::cout);
  return kExitOk;
}

// Reads documents from PATH and hands them over in batches.
class DocumentSource {
 public:
  // A JSONL file or a directory; errors name the path (and line).
  absl::Status Open(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
           it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
        const std::string ext = it->path().extension().string();
        if (it->is_regular_file() && (ext == ".txt" || ext == ".md")) {
          files_.push_back(it->path().string());
        }
      }
      std::sort(files_.begin(), files_.end());
      root_ = path;
      if (files_.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": no .txt or .md files"));
      }
      return absl::OkStatus();
    }
    jsonl_.open(path);
    if (!jsonl_) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    path_ = path;
    return absl::OkStatus();
  }

  // The next batch into `batch`; false at the end. A bad line ends the
  // batch before it; the error comes from the next call, so the documents
  // before it are still sent.
  absl::StatusOr<bool> Next(v1::DocumentBatch* batch) {
    batch->Clear();
    if (!pending_.ok()) return pending_;
    size_t bytes = 0;
    while (static_cast<size_t>(batch->documents_size()) < kBatchDocuments && bytes < kBatchBytes) {
      v1::Document doc;
      if (!root_.empty()) {
        if (next_file_ >= files_.size()) break;
        const std::string& file = files_[next_file_++];
        auto text = ReadFile(file);
        if (!text.ok()) return text.status();
        doc.set_id(std::filesystem::relative(file, root_).generic_string());
        doc.set_text(std::move(*text));
      } else {
        std::string line;
        if (!std::getline(jsonl_, line)) break;
        ++line_;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
        auto fail = [&](absl::string_view why) -> absl::StatusOr<bool> {
          pending_ = absl::InvalidArgumentError(absl::StrCat(path_, " line ", line_, ": ", why));
          if (batch->documents_size() == 0) return pending_;
          return true;
        };
        if (j.is_discarded() || !j.is_object()) return fail("not a JSON object");
        if (!j.contains("id") || !(j["id"].is_string() || j["id"].is_number_integer())) {
          return fail("\"id\" (a string) is required");
        }
        if (!j.contains("text") || !j["text"].is_string()) {
          return fail("\"text\" (a string) is required");
        }
        doc.set_id(j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump());
        doc.set_text(j["text"].get<std::string>());
        if (j.contains("metadata")) {
          if (!j["metadata"].is_object()) return fail("\"metadata\" must be an object");
          for (const auto& [key, value] : j["metadata"].items()) {
            (*doc.mutable_metadata())[key] =
                value.is_string() ? value.get<std::string>() : value.dump();
          }
        }
      }
      bytes += doc.text().size();
      *batch->add_documents() = std::move(doc);
    }
    return batch->documents_size() > 0;
  }

 private:
  std::vector<std::string> files_;
  size_t next_file_ = 0;
  std::string root_;
  std::ifstream jsonl_;
  std::string path_;
  int64_t line_ = 0;
  absl::Status pending_;  // a bad line, reported after the batch before it
};

int Ingest(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag ingest COLLECTION PATH [flags]",
                "Streams documents into a collection. PATH is a JSONL file, one\n"
                "{\"id\": ..., \"text\": ..., \"metadata\": {...}} per line, or a directory whose\n"
                ".txt and .md files become one document each, with the path relative to the\n"
                "directory as the id. A document id already present is replaced, so running\n"
                "the command again after a failure is safe.");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 2, 2);
  if (rc >= 0) return rc;
  DocumentSource source;
  absl::Status opened = source.Open(flags.positional()[1]);
  if (!opened.ok()) return ReportError(opened);
  Client client;
  if ((rc = Connect(flags, &client)) >= 0) return rc;
  grpc::ClientContext ctx;
  client.Prepare(&ctx);
  v1::IngestDocumentsResponse response;
  auto writer = client.stub->IngestDocuments(&ctx, &response);
  v1::IngestDocumentsRequest header;
  header.mutable_header()->set_collection(CollectionName(flags.positional()[0]));
  bool open = writer->Write(header);
  absl::Status read_error;
  while (open) {
    v1::IngestDocumentsRequest message;
    auto more = source.Next(message.mutable_batch());
    if (!more.ok()) {
      read_error = more.status();
      break;
    }
    if (!*more) break;
    open = writer->Write(message);
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return ReportError(s);
  if (!read_error.ok()) {
    if (response.documents() > 0) {
      std::cerr << "note: the " << response.documents()
                << " documents before the error were ingested\n";
    }
    return ReportError(read_error);
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(response);
    return kExitOk;
  }
  std::cout << absl::StrFormat(
      "ingested %d documents (%d replaced) as %d chunks in %.2fs (embedding %.2fs)\n",
      response.documents(), response.documents_replaced(), response.chunks(),
      response.total_seconds(), response.embed_seconds());
  for (const v1::Issue& w : response.warnings()) {
    std::cout << "warning: document " << w.line() << ": " << w.kind() << ": " << w.message()
              << "\n";
  }
  std::cout << absl::StrFormat("%s now holds %d documents, %d chunks\n",
                               CollectionName(flags.positional()[0]), response.stats().documents(),
                               response.stats().chunks());
  return kExitOk;
}

int DeleteDocuments(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag delete COLLECTION --ids ID,... [flags]",
                "Deletes documents and all their chunks. Ids not present are reported.");
  flags.AddString("ids", "", "Document ids, comma-separated (required).");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::DeleteDocumentsRequest req;
  req.set_collection(CollectionName(flags.positional()[0]));
  for (absl::string_view id : absl::StrSplit(flags.GetString("ids"), ',', absl::SkipEmpty())) {
    req.add_ids(std::string(id));
  }
  if (req.ids().empty()) {
    std::cerr << "error: --ids is required (comma-separated document ids)\n";
    return kExitUsage;
  }
  v1::DeleteDocumentsResponse out;
  rc = CallOnce<v1::RetrievalService>(flags, &Stub::DeleteDocuments, req, &out);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(out);
    return kExitOk;
  }
  std::cout << "deleted " << out.documents_deleted() << " documents (" << out.chunks_deleted()
            << " chunks)\n";
  if (!out.missing_ids().empty()) {
    std::cout << "not found: " << absl::StrJoin(out.missing_ids(), ", ") << "\n";
  }
  return kExitOk;
}

// "team=billing|it,lang=en" -> conditions.
bool ParseFilter(const std::string& text, v1::MetadataFilter* filter) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) return false;
    v1::MetadataCondition* c = filter->add_conditions();
    c->set_key(std::string(part.substr(0, eq)));
    for (absl::string_view v : absl::StrSplit(part.substr(eq + 1), '|')) {
      c->add_values(std::string(v));
    }
  }
  return true;
}

int Search(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag search COLLECTION QUERY [flags]",
                "Searches a collection. Modes: dense (nearest chunks by embedding), lexical\n"
                "(BM25) and hybrid (reciprocal rank fusion of both).");
  flags.AddInt("k", 10, "Hits to return (1-1000).");
  flags.AddString("mode", "dense", "dense | lexical | hybrid.");
  flags.AddString("filter", "",
                  "Metadata conditions, all must hold: key=value, key=a|b (any of), comma-"
                  "separated.");
  flags.AddInt("nprobe", 0, "IVF lists probed (0: the collection's default).");
  flags.AddInt("ef-search", 0, "HNSW efSearch (0: the collection's default).");
  flags.AddDouble("rrf-k", 60, "Hybrid: the fusion constant.");
  flags.AddDouble("dense-weight", 1, "Hybrid: weight of the dense list.");
  flags.AddDouble("lexical-weight", 1, "Hybrid: weight of the lexical list.");
  flags.AddDouble("min-score", 0, "Drop hits scoring below this (when set).");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 2, 2);
  if (rc >= 0) return rc;
  v1::SearchRequest req;
  req.set_collection(CollectionName(flags.positional()[0]));
  req.add_queries(flags.positional()[1]);
  if (flags.GetInt("k") < 1 || flags.GetInt("k") > 1000) {
    std::cerr << "error: --k must be in [1, 1000], got " << flags.GetInt("k") << "\n";
    return kExitUsage;
  }
  req.set_k(static_cast<int32_t>(flags.GetInt("k")));
  v1::SearchMode mode;
  if (!ParseChoice<v1::SearchMode>(flags, "mode",
                                   {{"dense", v1::SEARCH_MODE_DENSE},
                                    {"lexical", v1::SEARCH_MODE_LEXICAL},
                                    {"hybrid", v1::SEARCH_MODE_HYBRID}},
                                   &mode)) {
    return kExitUsage;
  }
  req.set_mode(mode);
  if (!ParseFilter(flags.GetString("filter"), req.mutable_filter())) {
    std::cerr << "error: --filter must look like key=value,key2=a|b; got \""
              << flags.GetString("filter") << "\"\n";
    return kExitUsage;
  }
  if (flags.GetInt("nprobe") > 0) req.set_nprobe(static_cast<int32_t>(flags.GetInt("nprobe")));
  if (flags.GetInt("ef-search") > 0) {
    req.set_ef_search(static_cast<int32_t>(flags.GetInt("ef-search")));
  }
  req.mutable_hybrid()->set_rrf_k(flags.GetDouble("rrf-k"));
  req.mutable_hybrid()->set_dense_weight(flags.GetDouble("dense-weight"));
  req.mutable_hybrid()->set_lexical_weight(flags.GetDouble("lexical-weight"));
  if (flags.IsSet("min-score")) req.set_min_score(flags.GetDouble("min-score"));
  v1::SearchResponse out;
  rc = CallOnce<v1::RetrievalService>(flags, &Stub::Search, req, &out);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(out);
    return kExitOk;
  }
  const v1::QueryResult& result = out.results(0);
  if (result.hits().empty()) std::cout << "no hits\n";
  for (const v1::SearchHit& h : result.hits()) {
    std::string text = h.text();
    for (char& ch : text) {
      if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
    }
    if (text.size() > 160) text = text.substr(0, 157) + "...";
    std::cout << absl::StrFormat("%2d. %.4f  %s", h.rank(), h.score(), h.chunk_id());
    if (req.mode() == v1::SEARCH_MODE_HYBRID) {
      std::cout << absl::StrFormat("  (dense #%d, lexical #%d)", h.dense_rank(), h.lexical_rank());
    }
    std::cout << "\n    " << text << "\n";
  }
  return kExitOk;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag list [flags]", "Lists collections, sorted by id.");
  AddPageFlags(&flags, "Collections");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  Client client;
  if ((rc = Connect(flags, &client)) >= 0) return rc;
  v1::ListCollectionsResponse all;
  rc = FetchPages(
      flags,
      [&](int32_t size, const std::string& token, v1::ListCollectionsResponse* page) {
        grpc::ClientContext ctx;
        client.Prepare(&ctx);
        v1::ListCollectionsRequest req;
        req.set_page_size(size);
        req.set_page_token(token);
        return client.stub->ListCollections(&ctx, req, page);
      },
      [](v1::ListCollectionsResponse* r) { return r->mutable_collections(); }, &all);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"COLLECTION", "EMBEDDER", "INDEX", "DOCUMENTS", "CHUNKS", "INDEX SIZE", "UPDATED"}};
  for (const v1::Collection& c : all.collections()) {
    rows.push_back({c.collection_id(), c.embedder().model(), c.stats().index_type(),
                    absl::StrCat(c.stats().documents()), absl::StrCat(c.stats().chunks()),
                    HumanBytes(c.stats().index_bytes()), TimeLabel(c.update_time())});
  }
  std::cout << FormatTable(rows);
  PrintMorePages(all.next_page_token());
  return kExitOk;
}

int Show(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag show COLLECTION [flags]",
                "Shows a collection: embedder, index, chunking and statistics.");
  flags.AddBool("json", false, "Print the collection as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::GetCollectionRequest req;
  req.set_name(CollectionName(flags.positional()[0]));
  v1::Collection out;
  rc = CallOnce<v1::RetrievalService>(flags, &Stub::GetCollection, req, &out);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(out);
    return kExitOk;
  }
  PrintCollection(out, std::cout);
  return kExitOk;
}

int Drop(const std::vector<std::string>& args) {
  FlagSet flags("switchyard rag drop COLLECTION [flags]",
                "Deletes a collection, its index and all its documents.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::DeleteCollectionRequest req;
  req.set_name(CollectionName(flags.positional()[0]));
  google::protobuf::Empty empty;
  rc = CallOnce<v1::RetrievalService>(flags, &Stub::DeleteCollection, req, &empty);
  if (rc >= 0) return rc;
  std::cout << "deleted " << req.name() << "\n";
  return kExitOk;
}

}  // namespace

int RunRag(const std::vector<std::string>& args) {
  return DispatchVerb("rag", kRagUsage, args,
                      {
                          {"create", Create},
                          {"ingest", Ingest},
                          {"delete", DeleteDocuments},
                          {"search", Search},
                          {"list", List},
                          {"show", Show},
                          {"drop", Drop},
                      });
}

}  // namespace switchyard::cli
