#include "shared/model/weights.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"
#include "shared/tensors/safetensors.h"
#include "shared/tensors/torch_tensors.h"

namespace switchyard::model {
namespace {

using TensorLoader = std::function<absl::StatusOr<at::Tensor>()>;

// A named tensor of a checkpoint: how to load it and, optionally, how to let
// go of the source bytes once it has been converted.
struct Source {
  std::string name;
  TensorLoader load;
  std::function<void()> drop;
};

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The common part: match names, check shapes, convert, assign.
absl::Status Fill(const std::string& where, const std::vector<Source>& source, WeightTable& table,
                  const LoadOptions& options) {
  std::map<std::string, WeightSlot*> by_name;
  for (WeightSlot& s : table.slots) by_name[s.name] = &s;
  std::set<std::string> filled;
  std::vector<std::string> unexpected;
  for (const auto& [stored_name, load, drop] : source) {
    bool ignored = false;
    for (const std::string& suffix : table.ignored_suffixes) {
      if (absl::EndsWith(stored_name, suffix)) ignored = true;
    }
    if (ignored) continue;
    const std::string name = table.rename ? table.rename(stored_name) : stored_name;
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      unexpected.push_back(stored_name);
      continue;
    }
    WeightSlot& slot = *it->second;
    if (!filled.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor \"", stored_name, "\" appears twice"));
    }
    SY_ASSIGN_OR_RETURN(at::Tensor t, load());
    if (t.sizes() != at::IntArrayRef(slot.shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor \"", stored_name, "\" has shape ", ShapeString(t.sizes()),
                       " but the config needs ", ShapeString(slot.shape)));
    }
    if (!at::isFloatingType(t.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor \"", stored_name, "\" is not floating point"));
    }
    if (slot.store) {
      SY_RETURN_IF_ERROR(TorchCall(absl::StrCat("tensor \"", stored_name, "\""), [&] {
        at::Tensor out = t.to(options.device);
        if (slot.transposed) out = out.t().contiguous();
        slot.store(out);
      }));
      t = at::Tensor();
      if (drop) drop();
      continue;
    }
    SY_ASSIGN_OR_RETURN(*slot.target, TorchCall(absl::StrCat("tensor \"", stored_name, "\""), [&] {
      at::Tensor out = t.to(options.device, options.dtype);
      if (slot.transposed) out = out.t().contiguous();
      return out;
    }));
    // A converted copy no longer needs the checkpoint's pages of it.
    if (drop && !slot.target->is_alias_of(t)) {
      t = at::Tensor();
      drop();
    }
  }
  if (!unexpected.empty()) {
    const size_t shown = std::min<size_t>(unexpected.size(), 5);
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ", unexpected.size(), " unexpected tensor(s) for this architecture: \"",
        absl::StrJoin(unexpected.begin(), unexpected.begin() + shown, "\", \""), "\"",
        unexpected.size() > shown ? ", ..." : ""));
  }
  std::vector<std::string> missing;
  for (const WeightSlot& s : table.slots) {
    if (!s.optional && filled.count(s.name) == 0) missing.push_back(s.name);
  }
  if (!missing.empty()) {
    const size_t shown = std::min<size_t>(missing.size(), 5);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing ", missing.size(), " tensor(s): \"",
                     absl::StrJoin(missing.begin(), missing.begin() + shown, "\", \""), "\"",
                     missing.size() > shown ? ", ..." : ""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadWeightTable(const std::string& dir, WeightTable& table,
                             const LoadOptions& options) {
  SY_ASSIGN_OR_RETURN(tensors::Checkpoint checkpoint, tensors::Checkpoint::Open(dir));
  std::vector<Source> source;
  for (const std::string& name : checkpoint.names()) {
    source.push_back({name,
                      [&checkpoint, name]() -> absl::StatusOr<at::Tensor> {
                        SY_ASSIGN_OR_RETURN(tensors::Checkpoint::Entry entry,
                                            checkpoint.Find(name));
                        return tensors::LoadTensor(entry.file, *entry.info);
                      },
                      [&checkpoint, name] {
                        absl::StatusOr<tensors::Checkpoint::Entry> entry = checkpoint.Find(name);
                        if (entry.ok()) entry->file->DropPages(*entry->info);
                      }});
  }
  return Fill(dir, source, table, options);
}

absl::Status FillWeightTable(const std::map<std::string, at::Tensor>& tensors, WeightTable& table,
                             const LoadOptions& options) {
  std::vector<Source> source;
  for (const auto& [name, t] : tensors) {
    source.push_back({name, [t]() -> absl::StatusOr<at::Tensor> { return t; }, nullptr});
  }
  return Fill("tensors", source, table, options);
}

absl::Status SaveCheckpoint(const std::string& dir, const std::string& config_json,
                            const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                            uint64_t max_shard_bytes) {
  SY_RETURN_IF_ERROR(MakeDirs(dir));
  SY_RETURN_IF_ERROR(
      tensors::SaveTensorsSharded(dir, tensors, {{"format", "pt"}}, max_shard_bytes));
  return WriteFileAtomic(dir + "/config.json", config_json);
}

}  // namespace switchyard::model
