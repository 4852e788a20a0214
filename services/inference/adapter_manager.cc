#include "services/inference/adapter_manager.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/status_macros.h"
#include "shared/model/lora.h"

namespace switchyard::inference {

AdapterManager::AdapterManager(model::CausalLm* model, Resolver resolve, int max_adapters)
    : model_(model), resolve_(std::move(resolve)), max_adapters_(std::max(1, max_adapters)) {}

absl::Status AdapterManager::EvictOneLocked() {
  auto victim = loaded_.end();
  for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
    if (it->second.in_use > 0 || it->second.pinned) continue;
    if (victim == loaded_.end() || it->second.last_used < victim->second.last_used) victim = it;
  }
  if (victim == loaded_.end()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", max_adapters_,
                     " adapter slots are in use (--max-adapters); retry when a request ends"));
  }
  SY_RETURN_IF_ERROR(model_->RemoveAdapter(victim->first));
  loaded_.erase(victim);
  return absl::OkStatus();
}

absl::StatusOr<int> AdapterManager::Acquire(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(AdapterInfo * info, AcquireLocked(name));
  return info->id;
}

absl::StatusOr<AdapterInfo> AdapterManager::Load(const std::string& name, bool pin) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(AdapterInfo * info, AcquireLocked(name));
  info->pinned = info->pinned || pin;
  --info->in_use;
  --info->served;
  return *info;
}

absl::StatusOr<AdapterInfo*> AdapterManager::AcquireLocked(const std::string& name) {
  auto it = loaded_.find(name);
  if (it != loaded_.end()) {
    ++it->second.in_use;
    ++it->second.served;
    it->second.last_used = absl::Now();
    return &it->second;
  }
  SY_ASSIGN_OR_RETURN(std::string dir, resolve_(name));
  // Read and checked before anything is evicted: a bad adapter costs nothing.
  auto adapter = model::LoadPeftAdapter(dir, model_->dtype(), model_->device());
  if (!adapter.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter \"", name, "\" cannot be loaded: ", adapter.status().message()));
  }
  // Attached first (one over the limit for a moment), so an adapter that
  // does not fit the base evicts nobody.
  auto id = model_->AddAdapter(name, *adapter);
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter \"", name, "\" does not fit the base model: ", id.status().message()));
  }
  if (static_cast<int>(loaded_.size()) >= max_adapters_) {
    absl::Status evicted = EvictOneLocked();
    if (!evicted.ok()) {
      model_->RemoveAdapter(name).IgnoreError();
      return evicted;
    }
  }
  AdapterInfo info;
  info.name = name;
  info.dir = dir;
  info.id = *id;
  for (const auto& [path, w] : adapter->modules) {
    info.bytes +=
        static_cast<int64_t>((w.a.numel() + w.b.numel()) * c10::elementSize(model_->dtype()));
  }
  info.in_use = 1;
  info.served = 1;
  info.loaded = info.last_used = absl::Now();
  AdapterInfo& stored = loaded_[name];
  stored = info;
  return &stored;
}

void AdapterManager::Release(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = loaded_.find(name);
  if (it != loaded_.end() && it->second.in_use > 0) --it->second.in_use;
}

absl::Status AdapterManager::Unload(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = loaded_.find(name);
  if (it == loaded_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
  }
  if (it->second.in_use > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter \"", name, "\" is serving ", it->second.in_use, " requests"));
  }
  SY_RETURN_IF_ERROR(model_->RemoveAdapter(name));
  loaded_.erase(it);
  return absl::OkStatus();
}

std::vector<AdapterInfo> AdapterManager::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, info] : loaded_) out.push_back(info);
  return out;
}

}  // namespace switchyard::inference
