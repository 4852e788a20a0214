#include "shared/model/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <thread>

#include "shared/model/cpu_allocator.h"

namespace switchyard::model {
namespace {

// Freed CPU blocks kept for reuse (see cpu_allocator.h).
constexpr size_t kCpuCacheBytes = size_t{4} << 30;

}  // namespace

int SetTorchThreads(int threads) {
  // Every entry point calls this first, so the allocator is installed here too.
  InstallCachingCpuAllocator(kCpuCacheBytes);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
  return at::get_num_threads();
}

bool CpuSupportsBf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return has;
}

absl::StatusOr<at::ScalarType> ParseDtype(absl::string_view name) {
  if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\" (float32, bfloat16, float16)"));
}

absl::string_view DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kDouble:
      return "float64";
    default:
      return "other";
  }
}

absl::StatusOr<at::Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return at::Device(at::kCPU);
  const bool cuda = at::hasCUDA();
  if (name == "auto") return cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    if (!cuda) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device \"", name, "\": this build of LibTorch has no CUDA or no GPU is visible"));
    }
    int index = 0;
    if (name.size() > 5 && !absl::SimpleAtoi(name.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad device \"", name, "\" (cpu, cuda, cuda:N, auto)"));
    }
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device \"", name, "\" (cpu, cuda, cuda:N, auto)"));
}

}  // namespace switchyard::model
