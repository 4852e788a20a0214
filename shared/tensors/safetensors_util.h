// Helpers shared by the safetensors reader, writers and the torch bridge: message
// formatting and the element-count arithmetic. Internal to shared/tensors.
#ifndef SWITCHYARD_SHARED_TENSORS_SAFETENSORS_UTIL_H_
#define SWITCHYARD_SHARED_TENSORS_SAFETENSORS_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/core/utf8.h"
#include "shared/tensors/safetensors.h"

namespace switchyard::tensors {

// Abseil here is built with its own string_view; this bridges std's to it.
inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// `text` as a JSON string literal, quotes included; control characters are
// escaped, invalid UTF-8 replaced and text past 256 bytes cut ("..."), so
// hostile names print safely.
std::string Quote(std::string_view text);
// "[2, 3]"; long shapes are cut short.
std::string ShapeText(const std::vector<int64_t>& shape);
// "[begin, end]".
std::string OffsetsText(const TensorInfo& info);

// Bytes that `shape` of `dtype` occupies. InvalidArgument (naming the shape)
// when a dim is negative, the non-zero dims' product passes int64, or a
// sub-byte dtype does not fill whole bytes.
absl::StatusOr<uint64_t> ByteSize(DType dtype, const std::vector<int64_t>& shape);

// Checks a tensor to write on its own: name, dtype, byte size, data pointer.
// The message names the tensor.
absl::Status ValidateView(const TensorView& view);

}  // namespace switchyard::tensors

#endif  // SWITCHYARD_SHARED_TENSORS_SAFETENSORS_UTIL_H_
