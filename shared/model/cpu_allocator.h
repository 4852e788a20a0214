// A caching CPU allocator for LibTorch.
//
// A training step allocates the same large tensors (activations, logits,
// gradients) every step. glibc hands allocations above 32 MiB straight to mmap
// and returns them on free, so each step pays page faults and the kernel's
// zeroing of every page again (a fifth of a CPU training step, measured).
// This allocator keeps freed blocks of 1 MiB and more, up to a byte budget, and
// reuses one when a request fits it with at most 1/8 waste. Smaller blocks
// come from glibc's heap, which keeps up to 256 MiB of freed memory instead of
// returning it to the kernel at once. Thread-safe.

#ifndef SWITCHYARD_SHARED_MODEL_CPU_ALLOCATOR_H_
#define SWITCHYARD_SHARED_MODEL_CPU_ALLOCATOR_H_

#include <cstddef>

namespace switchyard::model {

// Makes the caching allocator LibTorch's CPU allocator (once; later calls only
// change the budget). `cache_bytes` caps the memory kept for reuse.
void InstallCachingCpuAllocator(size_t cache_bytes);

// Bytes currently held for reuse (for tests and metrics).
size_t CachedCpuBytes();

// Frees every block held for reuse and gives glibc's free heap pages back to
// the kernel. For after work whose temporaries what follows will not reuse
// (quantising a checkpoint as it loads), so they do not add to its peak.
void ReleaseCachedCpuMemory();

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_CPU_ALLOCATOR_H_
