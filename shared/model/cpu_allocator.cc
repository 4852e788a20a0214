#include "shared/model/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <malloc.h>

#include <map>
#include <mutex>
#include <unordered_map>

namespace switchyard::model {
namespace {

constexpr size_t kMinCachedBytes = 1 << 20;

class CachingCpuAllocator final : public at::Allocator {
 public:
  at::DataPtr allocate(size_t n) const override {
    void* p = n >= kMinCachedBytes ? Take(n) : nullptr;
    if (p == nullptr) {
      p = c10::alloc_cpu(n);
      if (n >= kMinCachedBytes) {
        std::lock_guard<std::mutex> lock(mu_);
        sizes_[p] = n;
      }
    }
    return {p, p, &Free, at::Device(at::kCPU)};
  }
  at::DeleterFnPtr raw_deleter() const override { return &Free; }

  void release() {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      for (const auto& [n, p] : blocks) sizes_.erase(p);
      cached_ = 0;
    }
    for (const auto& [n, p] : blocks) c10::free_cpu(p);
  }

  void set_budget(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    budget_ = bytes;
  }
  size_t cached() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

  static CachingCpuAllocator& Get() {
    static CachingCpuAllocator* instance = new CachingCpuAllocator();  // never destroyed
    return *instance;
  }

 private:
  // A free block of at least n bytes and at most n + n/8, or nullptr.
  void* Take(size_t n) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(n);
    if (it == free_.end() || it->first > n + n / 8) return nullptr;
    void* p = it->second;
    cached_ -= it->first;
    free_.erase(it);
    return p;
  }

  static void Free(void* p) {
    if (p == nullptr) return;
    CachingCpuAllocator& self = Get();
    {
      std::lock_guard<std::mutex> lock(self.mu_);
      auto it = self.sizes_.find(p);
      if (it != self.sizes_.end()) {
        const size_t n = it->second;
        if (self.cached_ + n <= self.budget_) {
          self.free_.emplace(n, p);
          self.cached_ += n;
          return;
        }
        self.sizes_.erase(it);
      }
    }
    c10::free_cpu(p);
  }

  mutable std::mutex mu_;
  mutable std::multimap<size_t, void*> free_;        // size -> block, ready for reuse
  mutable std::unordered_map<void*, size_t> sizes_;  // every large block we handed out
  mutable size_t cached_ = 0;
  size_t budget_ = 0;
};

}  // namespace

void InstallCachingCpuAllocator(size_t cache_bytes) {
  CachingCpuAllocator& allocator = CachingCpuAllocator::Get();
  allocator.set_budget(cache_bytes);
  static std::once_flag once;
  std::call_once(once, [&] {
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
    // Blocks under kMinCachedBytes come from glibc's heap. By default glibc
    // maps ones past 128 KiB afresh and gives freed heap tops back to the
    // kernel, so a decode step or a prefill paid page faults and zeroing for
    // its activations every time (a fifth of a 32-token prefill, measured).
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(kMinCachedBytes));
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  });
}

size_t CachedCpuBytes() { return CachingCpuAllocator::Get().cached(); }

void ReleaseCachedCpuMemory() {
  CachingCpuAllocator::Get().release();
  malloc_trim(0);
}

}  // namespace switchyard::model
