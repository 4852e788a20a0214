// Checkpoint and WriteShardedSafetensors (declared in safetensors.h): Hugging
// Face checkpoint directories, one file or shards plus an index.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/tensors/safetensors.h"
#include "shared/tensors/safetensors_util.h"

namespace switchyard::tensors {
namespace {

using json = nlohmann::json;

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / std::string(name)).string();
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Shard files must sit in the checkpoint directory itself.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// "<stem>-NNNNN-of-NNNNN.safetensors" (any number of digits).
bool IsShardFileName(std::string_view file, std::string_view stem) {
  const std::string_view suffix = ".safetensors";
  if (file.size() < stem.size() + 1 + suffix.size() || file.substr(0, stem.size()) != stem ||
      file[stem.size()] != '-' || file.substr(file.size() - suffix.size()) != suffix) {
    return false;
  }
  std::string_view middle = file.substr(stem.size() + 1);
  middle.remove_suffix(suffix.size());
  const size_t of = middle.find("-of-");
  if (of == std::string_view::npos || of == 0 || of + 4 == middle.size()) return false;
  for (size_t i = 0; i < middle.size(); ++i) {
    if ((i < of || i >= of + 4) && (middle[i] < '0' || middle[i] > '9')) return false;
  }
  return true;
}

// Removes "<stem>-*-of-*.safetensors" files not in `keep`.
absl::Status RemoveOtherShards(const std::string& dir, std::string_view stem,
                               const std::set<std::string>& keep) {
  std::error_code ec;
  std::vector<std::string> stale;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (IsShardFileName(name, stem) && keep.count(name) == 0) {
      stale.push_back(entry.path().string());
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("list ", dir, ": ", ec.message()));
  for (const std::string& path : stale) SY_RETURN_IF_ERROR(RemoveAll(path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& dir, std::string_view stem) {
  Checkpoint checkpoint;
  checkpoint.dir_ = dir;
  const std::string single = JoinPath(dir, absl::StrCat(Sv(stem), ".safetensors"));
  const std::string index_path = JoinPath(dir, absl::StrCat(Sv(stem), ".safetensors.index.json"));

  if (IsFile(single)) {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::Open(single));
    for (const TensorInfo& info : file->header().tensors) {
      checkpoint.entries_[info.name] = Entry{file, &info};
    }
    checkpoint.files_.push_back(std::move(file));
    return checkpoint;
  }
  if (!IsFile(index_path)) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", dir, ": neither ", single, " nor ", index_path, " exists"));
  }

  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
  // nlohmann's lexer ends the input at a NUL; what follows would go unread.
  if (text.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON: a NUL byte"));
  }
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON: ", e.what()));
  }
  auto index_error = [&index_path](absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", problem));
  };
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return index_error("no \"weight_map\" object of tensor name -> shard file");
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard
  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || !IsPlainFileName(shard.get<std::string>())) {
      return index_error(absl::StrCat("tensor ", Quote(tensor), " maps to ",
                                      shard.dump(-1, ' ', false, json::error_handler_t::replace),
                                      ", not a file name inside the checkpoint directory"));
    }
    weight_map[tensor] = shard.get<std::string>();
    shard_names.insert(shard.get<std::string>());
  }

  std::map<const SafetensorsFile*, std::string> shard_of;  // file -> its name in the index
  for (const std::string& shard : shard_names) {
    absl::StatusOr<std::shared_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(JoinPath(dir, shard));
    if (!file.ok()) {
      return absl::Status(
          file.status().code(),
          absl::StrCat(index_path, " names shard ", Quote(shard), ": ", file.status().message()));
    }
    shard_of[file->get()] = shard;
    for (const TensorInfo& info : (*file)->header().tensors) {
      auto [it, inserted] = checkpoint.entries_.try_emplace(info.name, Entry{*file, &info});
      if (!inserted) {
        return index_error(absl::StrCat("tensor ", Quote(info.name), " is in both shard ",
                                        Quote(shard_of[it->second.file.get()]), " and shard ",
                                        Quote(shard)));
      }
    }
    checkpoint.files_.push_back(*std::move(file));
  }
  for (const auto& [tensor, shard] : weight_map) {
    auto it = checkpoint.entries_.find(tensor);
    if (it == checkpoint.entries_.end() || shard_of[it->second.file.get()] != shard) {
      return index_error(absl::StrCat("tensor ", Quote(tensor), " is listed in shard ",
                                      Quote(shard), ", which does not hold it"));
    }
  }
  for (const auto& [tensor, entry] : checkpoint.entries_) {
    if (weight_map.count(tensor) == 0) {
      return index_error(absl::StrCat("tensor ", Quote(tensor), " of shard ",
                                      Quote(shard_of[entry.file.get()]),
                                      " is not listed in the weight_map"));
    }
  }
  return checkpoint;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, unused] : entries_) names.push_back(name);
  return names;
}

absl::StatusOr<Checkpoint::Entry> Checkpoint::Find(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir_, " has no tensor ", Quote(name)));
  }
  return it->second;
}

const std::map<std::string, std::string>& Checkpoint::metadata() const {
  static const auto* const kEmpty = new std::map<std::string, std::string>();
  return files_.empty() ? *kEmpty : files_.front()->header().metadata;
}

absl::Status WriteShardedSafetensors(const std::string& dir, const std::vector<TensorView>& tensors,
                                     const std::map<std::string, std::string>& metadata,
                                     uint64_t max_shard_bytes, std::string_view stem) {
  // Everything is checked before the first byte is written.
  std::set<std::string_view> names;
  uint64_t total = 0;
  for (const TensorView& t : tensors) {
    SY_RETURN_IF_ERROR(ValidateView(t));
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quote(t.name), ": name appears twice"));
    }
    if (t.nbytes > UINT64_MAX - total) {
      return absl::InvalidArgumentError("total size passes 2^64 bytes");
    }
    total += t.nbytes;
  }
  if (!IsPlainFileName(std::string(stem))) {
    return absl::InvalidArgumentError(
        absl::StrCat("stem ", Quote(stem), " is not a plain file name"));
  }
  SY_RETURN_IF_ERROR(MakeDirs(dir));
  const std::string single = JoinPath(dir, absl::StrCat(Sv(stem), ".safetensors"));
  const std::string index_path = JoinPath(dir, absl::StrCat(Sv(stem), ".safetensors.index.json"));

  if (total <= max_shard_bytes) {
    SY_RETURN_IF_ERROR(WriteSafetensors(single, tensors, metadata));
    SY_RETURN_IF_ERROR(RemoveAll(index_path));
    return RemoveOtherShards(dir, stem, {});
  }

  // Shards filled in the order given, as transformers' save_pretrained does.
  std::vector<std::vector<TensorView>> shards;
  uint64_t shard_bytes = 0;
  for (const TensorView& t : tensors) {
    if (shards.empty() || (!shards.back().empty() && shard_bytes + t.nbytes > max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += t.nbytes;
  }

  std::vector<std::string> files;  // final names
  std::vector<std::string> temps;  // written, not yet renamed
  json weight_map = json::object();
  absl::Status status;
  for (size_t i = 0; i < shards.size() && status.ok(); ++i) {
    files.push_back(absl::StrFormat("%s-%05d-of-%05d.safetensors", Sv(stem), i + 1, shards.size()));
    temps.push_back(JoinPath(dir, absl::StrCat(files.back(), ".tmp-", RandomHex(6))));
    status = WriteSafetensors(temps.back(), shards[i], metadata);
    for (const TensorView& t : shards[i]) weight_map[t.name] = files.back();
  }
  for (size_t i = 0; i < temps.size() && status.ok(); ++i) {
    status = RenameDurably(temps[i], JoinPath(dir, files[i]));
  }
  if (!status.ok()) {
    for (const std::string& temp : temps) ::unlink(temp.c_str());
    return status;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
  SY_RETURN_IF_ERROR(WriteFileAtomic(index_path, index.dump(2) + "\n"));
  // A single file left from an earlier write would win over the new index.
  SY_RETURN_IF_ERROR(RemoveAll(single));
  return RemoveOtherShards(dir, stem, std::set<std::string>(files.begin(), files.end()));
}

}  // namespace switchyard::tensors
