#include "shared/tensors/safetensors_util.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace switchyard::tensors {

using json = nlohmann::json;

std::string Quote(std::string_view text) {
  constexpr size_t kMaxChars = 256;  // hostile names can be megabytes long
  std::string quoted = json(std::string(text.substr(0, kMaxChars)))
                           .dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMaxChars) quoted.insert(quoted.size() - 1, "...");
  return quoted;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  constexpr size_t kMaxDims = 16;
  std::string out = "[";
  for (size_t i = 0; i < shape.size() && i < kMaxDims; ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ", ", shape[i]);
  }
  if (shape.size() > kMaxDims) absl::StrAppend(&out, ", ... (", shape.size(), " dims)");
  return out + "]";
}

std::string OffsetsText(const TensorInfo& info) {
  return absl::StrCat("[", info.begin, ", ", info.end, "]");
}

absl::StatusOr<uint64_t> ByteSize(DType dtype, const std::vector<int64_t>& shape) {
  // Zero dims are skipped so that the check does not depend on where a zero
  // sits: strides of every dim must still fit in int64 for tensor libraries.
  constexpr uint64_t kMaxElements = std::numeric_limits<int64_t>::max();
  uint64_t product = 1;
  bool empty = false;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeText(shape), " has a negative dim"));
    }
    if (dim == 0) {
      empty = true;
      continue;
    }
    if (product > kMaxElements / static_cast<uint64_t>(dim)) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeText(shape), " has more than 2^63-1 elements"));
    }
    product *= static_cast<uint64_t>(dim);
  }
  const uint64_t elements = empty ? 0 : product;
  const uint64_t bits = static_cast<uint64_t>(DTypeBits(dtype));
  if (bits == 0) return absl::InvalidArgumentError("invalid dtype");
  if (elements > std::numeric_limits<uint64_t>::max() / bits) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeText(shape), " of ",
                                                   Sv(DTypeName(dtype)), " passes 2^64 bits"));
  }
  if (elements * bits % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeText(shape), " of ",
                                                   Sv(DTypeName(dtype)), " holds ", elements,
                                                   " elements, which do not fill whole bytes"));
  }
  return elements * bits / 8;
}

absl::Status ValidateView(const TensorView& view) {
  auto error = [&view](absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(view.name), ": ", problem));
  };
  if (view.name == "__metadata__") return error("the name is reserved for the metadata");
  if (!IsValidUtf8(view.name)) return error("the name is not valid UTF-8");
  if (DTypeBits(view.dtype) == 0) return error("invalid dtype");
  absl::StatusOr<uint64_t> bytes = ByteSize(view.dtype, view.shape);
  if (!bytes.ok()) return error(bytes.status().message());
  if (*bytes != view.nbytes) {
    return error(absl::StrCat(view.nbytes, " bytes given but shape ", ShapeText(view.shape), " of ",
                              Sv(DTypeName(view.dtype)), " needs ", *bytes));
  }
  if (view.data == nullptr && view.nbytes > 0) return error("data is null");
  return absl::OkStatus();
}

}  // namespace switchyard::tensors
