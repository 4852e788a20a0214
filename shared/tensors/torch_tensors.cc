#include "shared/tensors/torch_tensors.h"

#include <torch/version.h>

#include <cstring>
#include <exception>
#include <functional>

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"
#include "shared/tensors/safetensors_util.h"

// LibTorch releases that added the element types the format also has.
#define SY_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||     \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace switchyard::tensors {
namespace {

struct DTypePair {
  DType dtype;
  c10::ScalarType type;
};

constexpr DTypePair kPairs[] = {
    {DType::kBool, c10::ScalarType::Bool},
    {DType::kU8, c10::ScalarType::Byte},
    {DType::kI8, c10::ScalarType::Char},
    {DType::kI16, c10::ScalarType::Short},
    {DType::kI32, c10::ScalarType::Int},
    {DType::kI64, c10::ScalarType::Long},
    {DType::kF16, c10::ScalarType::Half},
    {DType::kBF16, c10::ScalarType::BFloat16},
    {DType::kF32, c10::ScalarType::Float},
    {DType::kF64, c10::ScalarType::Double},
    {DType::kC64, c10::ScalarType::ComplexFloat},
#if SY_TORCH_AT_LEAST(2, 1)
    {DType::kF8E5M2, c10::ScalarType::Float8_e5m2},
    {DType::kF8E4M3, c10::ScalarType::Float8_e4m3fn},
#endif
#if SY_TORCH_AT_LEAST(2, 3)
    {DType::kF8E5M2Fnuz, c10::ScalarType::Float8_e5m2fnuz},
    {DType::kF8E4M3Fnuz, c10::ScalarType::Float8_e4m3fnuz},
    {DType::kU16, c10::ScalarType::UInt16},
    {DType::kU32, c10::ScalarType::UInt32},
    {DType::kU64, c10::ScalarType::UInt64},
#endif
#if SY_TORCH_AT_LEAST(2, 8)
    {DType::kF8E8M0, c10::ScalarType::Float8_e8m0fnu},
#endif
};

absl::Status TensorError(absl::StatusCode code, std::string_view name, std::string_view file,
                         absl::string_view problem) {
  return absl::Status(code, absl::StrCat("tensor ", Quote(name), " of ", Sv(file), ": ", problem));
}

// BOOL bytes other than 0 and 1 are undefined behaviour for LibTorch kernels.
absl::Status CheckBoolBytes(const uint8_t* data, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    if (data[i] > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("BOOL element ", i, " is byte ", static_cast<int>(data[i]), ", not 0 or 1"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<c10::ScalarType> ToTorchDtype(DType dtype) {
  for (const DTypePair& pair : kPairs) {
    if (pair.dtype == dtype) return pair.type;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype ", Sv(DTypeName(dtype)), " has no counterpart in LibTorch ", TORCH_VERSION));
}

absl::StatusOr<DType> FromTorchDtype(c10::ScalarType type) {
  for (const DTypePair& pair : kPairs) {
    if (pair.type == type) return pair.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("LibTorch type ", c10::toString(type), " has no safetensors dtype"));
}

absl::StatusOr<at::Tensor> LoadTensor(const std::shared_ptr<SafetensorsFile>& file,
                                      const TensorInfo& info) {
  if (file == nullptr) return absl::InvalidArgumentError("LoadTensor: null file");
  const TensorInfo* own = file->header().Find(info.name);
  if (own == nullptr || own->begin != info.begin || own->end != info.end ||
      own->dtype != info.dtype || own->shape != info.shape) {
    return TensorError(absl::StatusCode::kInvalidArgument, info.name, file->path(),
                       "no tensor with this name, dtype, shape and offsets");
  }
  absl::StatusOr<c10::ScalarType> type = ToTorchDtype(own->dtype);
  if (!type.ok()) {
    return TensorError(type.status().code(), own->name, file->path(), type.status().message());
  }
  uint8_t* data = file->data(*own);
  if (own->dtype == DType::kBool) {
    absl::Status status = CheckBoolBytes(data, own->NumBytes());
    if (!status.ok()) return TensorError(status.code(), own->name, file->path(), status.message());
  }
  try {
    const at::TensorOptions options = at::TensorOptions().dtype(*type);
    if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(*type) == 0) {
      // The deleter owns a reference: the mapping lives as long as the tensor.
      std::function<void(void*)> release = [keep = file](void*) {};
      return at::from_blob(data, own->shape, release, options);
    }
    at::Tensor copy = at::empty(own->shape, options);
    if (own->NumBytes() > 0) std::memcpy(copy.data_ptr(), data, own->NumBytes());
    return copy;
  } catch (const c10::Error& e) {
    return TensorError(absl::StatusCode::kInternal, own->name, file->path(),
                       e.what_without_backtrace());
  } catch (const std::exception& e) {
    return TensorError(absl::StatusCode::kInternal, own->name, file->path(), e.what());
  }
}

absl::StatusOr<at::Tensor> LoadTensor(const Checkpoint& checkpoint, std::string_view name) {
  SY_ASSIGN_OR_RETURN(Checkpoint::Entry entry, checkpoint.Find(name));
  return LoadTensor(entry.file, *entry.info);
}

namespace {

// Views over CPU, contiguous versions of `tensors`, which `keep` holds.
absl::StatusOr<std::vector<TensorView>> ViewsOf(const NamedTensors& tensors,
                                                std::vector<at::Tensor>* keep) {
  std::vector<TensorView> views;
  views.reserve(tensors.size());
  keep->reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    auto error = [&name = name](absl::string_view problem) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(name), ": ", problem));
    };
    if (!tensor.defined()) return error("undefined tensor");
    if (tensor.layout() != at::kStrided) return error("only strided (dense) tensors can be saved");
    absl::StatusOr<DType> dtype = FromTorchDtype(tensor.scalar_type());
    if (!dtype.ok()) return error(dtype.status().message());
    try {
      at::Tensor cpu = tensor.cpu().resolve_conj().resolve_neg().contiguous();
      TensorView view;
      view.name = name;
      view.dtype = *dtype;
      view.shape = cpu.sizes().vec();
      view.data = cpu.data_ptr();
      view.nbytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
      views.push_back(std::move(view));
      keep->push_back(std::move(cpu));
    } catch (const c10::Error& e) {
      return error(e.what_without_backtrace());
    }
  }
  return views;
}

}  // namespace

absl::Status SaveTensors(const std::string& path, const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;
  SY_ASSIGN_OR_RETURN(std::vector<TensorView> views, ViewsOf(tensors, &keep));
  return WriteSafetensors(path, views, metadata);
}

absl::Status SaveTensorsSharded(const std::string& dir, const NamedTensors& tensors,
                                const std::map<std::string, std::string>& metadata,
                                uint64_t max_shard_bytes, std::string_view stem) {
  std::vector<at::Tensor> keep;
  SY_ASSIGN_OR_RETURN(std::vector<TensorView> views, ViewsOf(tensors, &keep));
  return WriteShardedSafetensors(dir, views, metadata, max_shard_bytes, stem);
}

}  // namespace switchyard::tensors
