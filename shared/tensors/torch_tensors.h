// at::Tensor <-> safetensors: zero-copy loading over a SafetensorsFile's
// copy-on-write mapping, and saving through WriteSafetensors.
//
// Builds against LibTorch 1.13 (Debian's, CPU) and 2.x. Element types LibTorch
// lacks are reported as errors naming the dtype: with 1.13, U16/U32/U64, every
// F8 variant, F4 and F6; 2.1 adds F8_E5M2 and F8_E4M3, 2.3 the FNUZ variants
// and U16/U32/U64, 2.8 F8_E8M0. F4 and F6 are never mapped (LibTorch packs
// FP4 two per element, so shapes would not match).
//
// Thread-safe: the functions keep no state.
#ifndef SWITCHYARD_SHARED_TENSORS_TORCH_TENSORS_H_
#define SWITCHYARD_SHARED_TENSORS_TORCH_TENSORS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shared/tensors/safetensors.h"

namespace switchyard::tensors {

// InvalidArgument naming the dtype when this LibTorch has no such type.
absl::StatusOr<c10::ScalarType> ToTorchDtype(DType dtype);
// InvalidArgument naming the type for those the format lacks (complex128,
// complex32, quantized types, ...).
absl::StatusOr<DType> FromTorchDtype(c10::ScalarType type);

// The tensor `info` of `file` (info must come from file->header()) as a CPU
// tensor of its shape. When the data is aligned for the element type the
// tensor is a view over the file's copy-on-write mapping that keeps `file`
// alive: writes to it never reach the file, but two loads of one tensor share
// memory (clone() for an independent copy). Otherwise the data is copied.
// BOOL data must hold only 0 and 1. Errors name the tensor and the file.
absl::StatusOr<at::Tensor> LoadTensor(const std::shared_ptr<SafetensorsFile>& file,
                                      const TensorInfo& info);
// The same for the tensor `name` of a checkpoint; NotFound when absent.
absl::StatusOr<at::Tensor> LoadTensor(const Checkpoint& checkpoint, std::string_view name);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device, layout strided; copied to CPU and made
// contiguous as needed) with WriteSafetensors' atomicity and ordering. Tensors
// sharing storage are written as separate copies.
absl::Status SaveTensors(const std::string& path, const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata);
// The same through WriteShardedSafetensors.
absl::Status SaveTensorsSharded(const std::string& dir, const NamedTensors& tensors,
                                const std::map<std::string, std::string>& metadata,
                                uint64_t max_shard_bytes, std::string_view stem = "model");

}  // namespace switchyard::tensors

#endif  // SWITCHYARD_SHARED_TENSORS_TORCH_TENSORS_H_
