#include "services/retrieval/vector_index.h"

#include <cxxabi.h>
#include <faiss/IVFlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <typeinfo>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::retrieval {
namespace {

using idx_t = faiss::Index::idx_t;

faiss::MetricType FaissMetric(Metric metric) {
  return metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

std::string ClassName(const faiss::Index& index) {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(index).name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : typeid(index).name();
  std::free(name);
  if (absl::StartsWith(out, "faiss::")) out = out.substr(7);
  if (out == "IndexFlat") {
    out += index.metric_type == faiss::METRIC_L2 ? "L2" : "IP";
  }
  return out;
}

bool IsPlainFlat(const faiss::Index& index) { return typeid(index) == typeid(faiss::IndexFlat); }

// Runs a FAISS call, turning its exceptions into a status.
template <typename F>
absl::Status FaissCall(absl::string_view what, F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Builds the factory index; the caller owns it.
absl::StatusOr<std::unique_ptr<faiss::Index>> MakeFactoryIndex(const VectorIndexOptions& options) {
  const std::string factory = options.factory.empty() ? "Flat" : options.factory;
  if (absl::StrContains(absl::AsciiStrToLower(factory), "idmap")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "index.factory: \"", factory, "\" names an id map; the server adds its own, leave it out"));
  }
  try {
    std::unique_ptr<faiss::Index> index(
        faiss::index_factory(options.dimension, factory.c_str(), FaissMetric(options.metric)));
    // Polysemous codes serve only Hamming-filtered search, which is never
    // used here, and their training dominates PQ training time (a 2,000
    // vector PQ8 trained in 10 s instead of milliseconds).
    if (auto* pq = dynamic_cast<faiss::IndexPQ*>(index.get())) pq->do_polysemous_training = false;
    if (auto* ivfpq =
            dynamic_cast<faiss::IndexIVFPQ*>(faiss::ivflib::try_extract_index_ivf(index.get()))) {
      ivfpq->do_polysemous_training = false;
    }
    return index;
  } catch (const std::exception& e) {
    std::string why = e.what();
    // FAISS messages start with "Error in <function> at <file>:<line>: ".
    const size_t cut = why.find("Error: ");
    if (cut != std::string::npos) why = why.substr(cut + 7);
    return absl::InvalidArgumentError(absl::StrCat("index.factory: FAISS cannot build \"", factory,
                                                   "\" for dimension ", options.dimension, ": ",
                                                   why));
  }
}

// Search-time defaults stored on the index (used where per-query
// parameters are not accepted).
void ApplyDefaults(const VectorIndexOptions& options, faiss::Index* index) {
  if (index == nullptr) return;
  if (faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index)) {
    ivf->nprobe = options.nprobe;
  }
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index)) hnsw->hnsw.efSearch = options.ef_search;
}

// Positions that hold a live vector the caller accepts.
struct LiveSelector : faiss::IDSelector {
  const std::vector<int64_t>* ids = nullptr;
  const std::function<bool(int64_t)>* accept = nullptr;
  bool is_member(idx_t position) const override {
    if (position < 0 || position >= static_cast<idx_t>(ids->size())) return false;
    const int64_t id = (*ids)[position];
    return id >= 0 && (accept == nullptr || (*accept)(id));
  }
};

absl::Status WriteIndexFile(const faiss::Index& index, const std::string& path) {
  SY_RETURN_IF_ERROR(
      FaissCall(absl::StrCat("writing ", path), [&] { faiss::write_index(&index, path.c_str()); }));
  return FsyncPath(path);
}

absl::StatusOr<std::unique_ptr<faiss::Index>> ReadIndexFile(const std::string& path) {
  try {
    return std::unique_ptr<faiss::Index>(faiss::read_index(path.c_str()));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": not a readable FAISS index: ", e.what()));
  }
}

}  // namespace

VectorIndex::Rebuilt::~Rebuilt() = default;

absl::StatusOr<IndexKind> CheckIndexOptions(const VectorIndexOptions& options) {
  if (options.dimension < 1 || options.dimension > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedder.dimension: must be in [1, 65536], got ", options.dimension));
  }
  if (options.train_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("index.train_size: must be >= 0, got ", options.train_size));
  }
  if (options.nprobe < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("index.nprobe: must be >= 1, got ", options.nprobe));
  }
  if (options.ef_search < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("index.ef_search: must be >= 1, got ", options.ef_search));
  }
  if (!(options.rebuild_threshold > 0 && options.rebuild_threshold <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "index.rebuild_threshold: must be in (0, 1], got ", options.rebuild_threshold));
  }
  SY_ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> index, MakeFactoryIndex(options));
  IndexKind kind;
  kind.type = ClassName(*index);
  kind.needs_training = !index->is_trained;
  if (const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.get())) {
    kind.nlist = static_cast<int64_t>(ivf->nlist);
  }
  if (kind.needs_training) {
    kind.train_size =
        options.train_size > 0 ? options.train_size : std::max<int64_t>(39 * kind.nlist, 10000);
    if (kind.train_size < kind.nlist) {
      return absl::InvalidArgumentError(absl::StrCat("index.train_size: ", kind.train_size,
                                                     " is fewer than the ", kind.nlist,
                                                     " IVF lists to train"));
    }
  }
  return kind;
}

VectorIndex::VectorIndex(const VectorIndexOptions& options, IndexKind kind)
    : options_(options), kind_(std::move(kind)) {}

VectorIndex::~VectorIndex() = default;

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Create(
    const VectorIndexOptions& options) {
  SY_ASSIGN_OR_RETURN(IndexKind kind, CheckIndexOptions(options));
  std::unique_ptr<VectorIndex> out(new VectorIndex(options, kind));
  out->exact_ = std::make_unique<faiss::IndexFlat>(options.dimension, FaissMetric(options.metric));
  if (!kind.needs_training) {
    SY_ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> index, MakeFactoryIndex(options));
    if (!IsPlainFlat(*index)) {
      ApplyDefaults(options, index.get());
      out->index_ = std::move(index);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Load(const VectorIndexOptions& options,
                                                               const std::string& dir) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> out, Create(options));
  const std::string vectors_path = dir + "/vectors.faiss";
  SY_ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> vectors, ReadIndexFile(vectors_path));
  auto* flat = dynamic_cast<faiss::IndexFlat*>(vectors.get());
  if (flat == nullptr || flat->d != options.dimension) {
    return absl::DataLossError(
        absl::StrCat(vectors_path, ": expected a flat index of dimension ", options.dimension));
  }
  vectors.release();
  out->exact_.reset(flat);

  const std::string index_path = dir + "/index.faiss";
  if (std::filesystem::exists(index_path)) {
    SY_ASSIGN_OR_RETURN(out->index_, ReadIndexFile(index_path));
    if (out->index_->ntotal != out->exact_->ntotal) {
      return absl::DataLossError(absl::StrCat(index_path, ": holds ", out->index_->ntotal,
                                              " vectors, vectors.faiss ", out->exact_->ntotal));
    }
    ApplyDefaults(options, out->index_.get());
  } else if (out->index_ != nullptr) {
    // An untrained-type index (HNSW) must have been saved.
    return absl::DataLossError(absl::StrCat(index_path, ": missing"));
  }

  const std::string ids_path = dir + "/ids.bin";
  SY_ASSIGN_OR_RETURN(std::string raw, ReadFile(ids_path));
  if (raw.size() != static_cast<size_t>(out->exact_->ntotal) * sizeof(int64_t)) {
    return absl::DataLossError(
        absl::StrCat(ids_path, ": ", raw.size(), " bytes for ", out->exact_->ntotal, " vectors"));
  }
  out->ids_.resize(out->exact_->ntotal);
  if (!raw.empty()) std::memcpy(out->ids_.data(), raw.data(), raw.size());
  for (size_t p = 0; p < out->ids_.size(); ++p) {
    const int64_t id = out->ids_[p];
    if (id < 0) {
      ++out->tombstones_;
    } else if (!out->position_.emplace(id, static_cast<int64_t>(p)).second) {
      return absl::DataLossError(absl::StrCat(ids_path, ": id ", id, " appears twice"));
    }
  }
  return out;
}

absl::Status VectorIndex::Save(const std::string& dir) const {
  // write_index reads HNSW's efSearch: no search may change it meanwhile.
  EfGroup group(this, 0);
  SY_RETURN_IF_ERROR(WriteIndexFile(*exact_, dir + "/vectors.faiss"));
  if (index_ != nullptr) SY_RETURN_IF_ERROR(WriteIndexFile(*index_, dir + "/index.faiss"));
  FileWriter ids;
  SY_RETURN_IF_ERROR(ids.Open(dir + "/ids.bin"));
  SY_RETURN_IF_ERROR(ids.Append(absl::string_view(reinterpret_cast<const char*>(ids_.data()),
                                                  ids_.size() * sizeof(int64_t))));
  return ids.Close();
}

absl::Status VectorIndex::Add(int64_t n, const float* vectors, const int64_t* ids) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || position_.count(ids[i]) > 0) {
      return absl::InternalError(absl::StrCat("vector id ", ids[i], " is negative or in use"));
    }
  }
  if (n == 0) return absl::OkStatus();
  // The factory index first: it is the one that may refuse; the flat add
  // only copies.
  SY_RETURN_IF_ERROR(FaissCall("adding vectors", [&] {
    if (index_ != nullptr) index_->add(n, vectors);
    exact_->add(n, vectors);
  }));
  for (int64_t i = 0; i < n; ++i) {
    position_.emplace(ids[i], static_cast<int64_t>(ids_.size()));
    ids_.push_back(ids[i]);
  }
  return absl::OkStatus();
}

int64_t VectorIndex::Remove(const std::vector<int64_t>& ids) {
  int64_t removed = 0;
  for (int64_t id : ids) {
    auto it = position_.find(id);
    if (it == position_.end()) continue;
    ids_[it->second] = -1;
    position_.erase(it);
    ++tombstones_;
    ++removed;
  }
  return removed;
}

const faiss::Index* VectorIndex::SearchTarget() const {
  return index_ != nullptr ? index_.get() : exact_.get();
}

std::vector<VectorIndex::Hit> VectorIndex::SearchCandidates(
    const float* query, int k, const std::vector<int64_t>& ids,
    const std::function<bool(int64_t)>* accept) const {
  const int d = options_.dimension;
  const float* xb = exact_->get_xb();
  std::vector<Hit> hits;
  hits.reserve(ids.size());
  for (int64_t id : ids) {
    auto it = position_.find(id);
    if (it == position_.end()) continue;
    if (accept != nullptr && !(*accept)(id)) continue;
    const float* v = xb + it->second * d;
    const float score = options_.metric == Metric::kL2 ? -faiss::fvec_L2sqr(query, v, d)
                                                       : faiss::fvec_inner_product(query, v, d);
    hits.push_back({id, score});
  }
  auto better = [](const Hit& a, const Hit& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  };
  const size_t keep = std::min<size_t>(hits.size(), static_cast<size_t>(k));
  std::partial_sort(hits.begin(), hits.begin() + keep, hits.end(), better);
  hits.resize(keep);
  return hits;
}

VectorIndex::EfGroup::EfGroup(const VectorIndex* self, int want) : self_(self) {
  if (self_ == nullptr) return;
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(self_->index_.get());
  if (hnsw == nullptr) {
    self_ = nullptr;
    return;
  }
  std::unique_lock<std::mutex> lock(self_->ef_mu_);
  if (want <= 0) want = hnsw->hnsw.efSearch;  // any value: join what runs
  ++self_->ef_waiting_;
  ++self_->ef_wanted_[want];
  // Join the running group when it uses our value and nobody waits for
  // another (so no value starves); otherwise wait for it to drain.
  self_->ef_cv_.wait(lock, [&] {
    const int current = hnsw->hnsw.efSearch;
    return self_->ef_active_ == 0 ||
           (current == want && self_->ef_waiting_ == self_->ef_wanted_[current]);
  });
  --self_->ef_waiting_;
  if (--self_->ef_wanted_[want] == 0) self_->ef_wanted_.erase(want);
  if (self_->ef_active_ == 0 && hnsw->hnsw.efSearch != want) {
    hnsw->hnsw.efSearch = want;
    self_->ef_cv_.notify_all();  // others waiting for this value may join
  }
  ++self_->ef_active_;
}

VectorIndex::EfGroup::~EfGroup() {
  if (self_ == nullptr) return;
  std::lock_guard<std::mutex> lock(self_->ef_mu_);
  if (--self_->ef_active_ == 0) self_->ef_cv_.notify_all();
}

absl::StatusOr<std::vector<std::vector<VectorIndex::Hit>>> VectorIndex::Search(
    int64_t nq, const float* queries, const SearchOptions& options) const {
  std::vector<std::vector<Hit>> out(nq);
  const int d = options_.dimension;
  if (options.candidates != nullptr) {
    for (int64_t q = 0; q < nq; ++q) {
      out[q] = SearchCandidates(queries + q * d, options.k, *options.candidates, options.accept);
    }
    return out;
  }
  if (live() == 0 || options.k <= 0) return out;

  const faiss::Index* target = SearchTarget();
  const bool filtered = tombstones_ > 0 || options.accept != nullptr;
  LiveSelector selector;
  selector.ids = &ids_;
  selector.accept = options.accept;

  faiss::SearchParameters plain;
  faiss::SearchParametersIVF ivf_params;
  faiss::SearchParametersHNSW hnsw_params;
  faiss::SearchParameters* params = &plain;
  if (target == index_.get()) {
    if (dynamic_cast<const faiss::IndexIVF*>(target) != nullptr) {
      ivf_params.nprobe = options.nprobe > 0 ? options.nprobe : options_.nprobe;
      params = &ivf_params;
    } else if (dynamic_cast<const faiss::IndexHNSW*>(target) != nullptr) {
      hnsw_params.efSearch =
          std::max(options.k, options.ef_search > 0 ? options.ef_search : options_.ef_search);
      params = &hnsw_params;
    }
  }
  // FAISS 1.7.3 reads efSearch from the index, not from the parameters:
  // searches set it on the index, and only searches wanting the same value
  // run at once (EfGroup).
  const bool hnsw = dynamic_cast<const faiss::IndexHNSW*>(target) != nullptr;
  EfGroup group(hnsw ? this : nullptr, hnsw_params.efSearch);
  params->sel = filtered ? &selector : nullptr;

  const int64_t total = target->ntotal;
  auto run = [&](int64_t k, faiss::SearchParameters* p, std::vector<float>* distances,
                 std::vector<idx_t>* labels) {
    distances->assign(nq * k, 0);
    labels->assign(nq * k, -1);
    return FaissCall("searching",
                     [&] { target->search(nq, queries, k, distances->data(), labels->data(), p); });
  };
  auto collect = [&](int64_t k, const std::vector<float>& distances,
                     const std::vector<idx_t>& labels) {
    bool complete = true;
    for (int64_t q = 0; q < nq; ++q) {
      out[q].clear();
      for (int64_t j = 0; j < k && static_cast<int>(out[q].size()) < options.k; ++j) {
        const idx_t position = labels[q * k + j];
        if (!selector.is_member(position)) continue;
        const float dist = distances[q * k + j];
        out[q].push_back({ids_[position], options_.metric == Metric::kL2 ? -dist : dist});
      }
      if (static_cast<int>(out[q].size()) < options.k) complete = false;
    }
    return complete;
  };

  std::vector<float> distances;
  std::vector<idx_t> labels;
  int64_t k = std::min<int64_t>(options.k, total);
  if (selector_supported_.load(std::memory_order_relaxed) || !filtered) {
    absl::Status status = run(k, params, &distances, &labels);
    if (status.ok()) {
      collect(k, distances, labels);
      return out;
    }
    if (!absl::StrContains(status.message(), "params")) return status;
    selector_supported_.store(false, std::memory_order_relaxed);
  }
  // FAISS types that refuse search parameters (PQ, fast-scan): search
  // without them, asking for more hits until enough pass the filter.
  while (true) {
    SY_RETURN_IF_ERROR(run(k, nullptr, &distances, &labels));
    if (collect(k, distances, labels) || k >= total) break;
    k = std::min<int64_t>(k * 4, total);
  }
  return out;
}

bool VectorIndex::WantsRebuild() const {
  if (kind_.needs_training && index_ == nullptr && live() >= kind_.train_size) return true;
  return tombstones_ > 0 && static_cast<double>(tombstones_) >
                                options_.rebuild_threshold * static_cast<double>(ids_.size());
}

VectorIndex::RebuildInput VectorIndex::SnapshotForRebuild() const {
  RebuildInput input;
  const int d = options_.dimension;
  input.positions_seen = static_cast<int64_t>(ids_.size());
  input.ids.reserve(position_.size());
  input.vectors.reserve(position_.size() * d);
  const float* xb = exact_->get_xb();
  for (size_t p = 0; p < ids_.size(); ++p) {
    if (ids_[p] < 0) continue;
    input.ids.push_back(ids_[p]);
    input.vectors.insert(input.vectors.end(), xb + p * d, xb + (p + 1) * d);
  }
  return input;
}

absl::StatusOr<std::unique_ptr<VectorIndex::Rebuilt>> VectorIndex::Build(
    const VectorIndexOptions& options, const RebuildInput& input) {
  SY_ASSIGN_OR_RETURN(IndexKind kind, CheckIndexOptions(options));
  auto rebuilt = std::make_unique<Rebuilt>();
  const int64_t n = static_cast<int64_t>(input.ids.size());
  const int d = options.dimension;
  rebuilt->exact = std::make_unique<faiss::IndexFlat>(d, FaissMetric(options.metric));
  SY_ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> index, MakeFactoryIndex(options));
  if (IsPlainFlat(*index)) index.reset();
  if (index != nullptr && kind.needs_training) {
    if (n < kind.train_size) {
      index.reset();  // not enough vectors yet: stays exact
    } else {
      // The first train_size vectors, or a fixed-seed sample of them all.
      std::vector<float> sample;
      const float* train = input.vectors.data();
      if (n > kind.train_size) {
        std::vector<int64_t> order(n);
        for (int64_t i = 0; i < n; ++i) order[i] = i;
        std::mt19937_64 rng(0x5eed);
        for (int64_t i = 0; i < kind.train_size; ++i) {
          std::uniform_int_distribution<int64_t> pick(i, n - 1);
          std::swap(order[i], order[pick(rng)]);
        }
        sample.resize(kind.train_size * d);
        for (int64_t i = 0; i < kind.train_size; ++i) {
          std::memcpy(sample.data() + i * d, input.vectors.data() + order[i] * d,
                      d * sizeof(float));
        }
        train = sample.data();
      }
      SY_RETURN_IF_ERROR(
          FaissCall("training the index", [&] { index->train(kind.train_size, train); }));
    }
  }
  SY_RETURN_IF_ERROR(FaissCall("adding vectors", [&] {
    rebuilt->exact->add(n, input.vectors.data());
    if (index != nullptr) index->add(n, input.vectors.data());
  }));
  ApplyDefaults(options, index.get());
  rebuilt->index = std::move(index);
  return rebuilt;
}

absl::Status VectorIndex::Install(const RebuildInput& input, std::unique_ptr<Rebuilt> rebuilt) {
  const int d = options_.dimension;
  std::vector<int64_t> ids = input.ids;
  for (int64_t& id : ids) {
    // Removed since the snapshot (or, were ids ever reused, added again).
    auto it = position_.find(id);
    if (it == position_.end() || it->second >= input.positions_seen) id = -1;
  }
  // Vectors added since the snapshot.
  std::vector<float> added;
  std::vector<int64_t> added_ids;
  const float* xb = exact_->get_xb();
  for (size_t p = input.positions_seen; p < ids_.size(); ++p) {
    if (ids_[p] < 0) continue;
    added_ids.push_back(ids_[p]);
    added.insert(added.end(), xb + p * d, xb + (p + 1) * d);
  }
  const int64_t n_added = static_cast<int64_t>(added_ids.size());
  if (n_added > 0) {
    SY_RETURN_IF_ERROR(FaissCall("adding vectors", [&] {
      rebuilt->exact->add(n_added, added.data());
      if (rebuilt->index != nullptr) rebuilt->index->add(n_added, added.data());
    }));
  }
  ids.insert(ids.end(), added_ids.begin(), added_ids.end());
  exact_ = std::move(rebuilt->exact);
  index_ = std::move(rebuilt->index);
  ids_ = std::move(ids);
  position_.clear();
  tombstones_ = 0;
  for (size_t p = 0; p < ids_.size(); ++p) {
    if (ids_[p] < 0) {
      ++tombstones_;
    } else {
      position_.emplace(ids_[p], static_cast<int64_t>(p));
    }
  }
  return absl::OkStatus();
}

VectorIndex::Stats VectorIndex::stats() const {
  Stats s;
  s.vectors = static_cast<int64_t>(ids_.size());
  s.tombstones = tombstones_;
  s.trained = !kind_.needs_training || index_ != nullptr;
  s.type = kind_.type;
  return s;
}

}  // namespace switchyard::retrieval
