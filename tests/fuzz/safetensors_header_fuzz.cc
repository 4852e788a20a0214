// libFuzzer target for tensors::ParseHeader, the parser that faces untrusted
// checkpoint files. When a header is accepted, every tensor's byte range is
// read in full, so AddressSanitizer reports any range that is out of bounds.
//
// Run: tools/fuzz safetensors_header [SECONDS]. ctest replays the corpus
// (tests/fuzz/corpus/safetensors) through fuzz_replay_main.cc.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "shared/tensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<switchyard::tensors::Header> header = switchyard::tensors::ParseHeader(bytes);
  if (!header.ok()) return 0;
  if (header->data_offset + header->data_size != size) __builtin_trap();
  uint8_t checksum = 0;
  for (const switchyard::tensors::TensorInfo& t : header->tensors) {
    if (header->Find(t.name) != &t) __builtin_trap();
    if (t.NumElements() < 0) __builtin_trap();
    for (uint64_t i = t.begin; i < t.end; ++i) checksum ^= data[header->data_offset + i];
  }
  // Keeps the reads from being optimised away.
  volatile uint8_t sink = checksum;
  (void)sink;
  return 0;
}
