// LibTorch runtime settings and the one place LibTorch exceptions become
// absl::Status: threads, dtype and device names, TorchCall.

#ifndef SWITCHYARD_SHARED_MODEL_RUNTIME_H_
#define SWITCHYARD_SHARED_MODEL_RUNTIME_H_

#include <ATen/ATen.h>

#include <exception>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace switchyard::model {

// Sets LibTorch's intra-op thread count; `threads` <= 0 means every core.
// LibTorch starts with one thread, so every entry point calls this once; it
// also installs the caching CPU allocator (cpu_allocator.h, 4 GiB budget).
// Returns the count in effect.
int SetTorchThreads(int threads);

// Whether this CPU computes bf16 natively (AVX-512 BF16): where bf16 training
// is the faster choice rather than an emulated one.
bool CpuSupportsBf16();

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16".
absl::StatusOr<at::ScalarType> ParseDtype(absl::string_view name);
absl::string_view DtypeName(at::ScalarType dtype);  // "float32", "bfloat16", ...

// "cpu", "cuda", "cuda:N", or "auto" (CUDA when available, else CPU).
absl::StatusOr<at::Device> ParseDevice(absl::string_view name);

// Runs `f`, turning a c10::Error or std::exception into an INTERNAL status
// prefixed with `what`. `f` returns void, a value, absl::Status or StatusOr.
template <typename F>
auto TorchCall(absl::string_view what, F&& f) {
  using R = std::invoke_result_t<F>;
  auto fail = [&](const char* message) {
    std::string m(message);
    // c10 messages carry a C++ backtrace after the first line; keep the reason.
    if (auto nl = m.find("\nException raised from"); nl != std::string::npos) m.resize(nl);
    return absl::InternalError(absl::StrCat(what, ": ", m));
  };
  if constexpr (std::is_void_v<R>) {
    try {
      f();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  } else if constexpr (std::is_same_v<R, absl::Status>) {
    try {
      return f();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  } else {
    using Out = std::conditional_t<std::is_convertible_v<absl::Status, R>, R, absl::StatusOr<R>>;
    try {
      return Out(f());
    } catch (const std::exception& e) {
      return Out(fail(e.what()));
    }
  }
}

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_RUNTIME_H_
