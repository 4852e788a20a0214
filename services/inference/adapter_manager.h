// AdapterManager: the LoRA adapters hot on one base model. Adapters load by
// name on first use (or ahead, with Acquire + Release), stay loaded while in
// use, and past `max_adapters` the least recently used idle one is unloaded.
// A corrupt or incompatible adapter (unreadable files, shapes or target
// modules that do not fit the base) is refused with an error naming it and
// leaves the model as it was. No gRPC.
//
// Thread-safe, but loading and unloading change the model's adapter table:
// call Acquire and Unload between forward passes (the engine's own thread).
#ifndef SWITCHYARD_SERVICES_INFERENCE_ADAPTER_MANAGER_H_
#define SWITCHYARD_SERVICES_INFERENCE_ADAPTER_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "shared/model/decoder.h"

namespace switchyard::inference {

struct AdapterInfo {
  std::string name;
  std::string dir;
  int id = 0;           // the model's adapter id (DecoderInput::adapters)
  int64_t bytes = 0;    // LoRA weights held
  int64_t in_use = 0;   // Acquire calls not yet released
  int64_t served = 0;   // Acquire calls since loading
  bool pinned = false;  // never evicted (Pin)
  absl::Time loaded;
  absl::Time last_used;  // the last Acquire
};

class AdapterManager {
 public:
  // An adapter's PEFT directory by name; NOT_FOUND when there is none.
  using Resolver = std::function<absl::StatusOr<std::string>(const std::string& name)>;

  // `model` must outlive the manager. max_adapters >= 1.
  AdapterManager(model::CausalLm* model, Resolver resolve, int max_adapters);

  // The adapter's id, loading it when needed, and pins it until Release.
  // RESOURCE_EXHAUSTED when max_adapters are loaded and all in use.
  absl::StatusOr<int> Acquire(const std::string& name);
  void Release(const std::string& name);
  // Loads the adapter ahead of use (not counted as in use or served); with
  // `pin` it is exempt from eviction until unloaded.
  absl::StatusOr<AdapterInfo> Load(const std::string& name, bool pin);
  // FAILED_PRECONDITION while in use; NOT_FOUND when not loaded. Unpins.
  absl::Status Unload(const std::string& name);
  // Loaded adapters, by name.
  std::vector<AdapterInfo> List() const;

 private:
  absl::Status EvictOneLocked();
  absl::StatusOr<AdapterInfo*> AcquireLocked(const std::string& name);

  model::CausalLm* const model_;
  const Resolver resolve_;
  const int max_adapters_;
  mutable std::mutex mu_;
  std::map<std::string, AdapterInfo> loaded_;
};

}  // namespace switchyard::inference

#endif  // SWITCHYARD_SERVICES_INFERENCE_ADAPTER_MANAGER_H_
