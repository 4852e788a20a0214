// Reading and writing safetensors files, single or sharded as Hugging Face
// checkpoints are, without LibTorch (shared/tensors/torch_tensors.h bridges to
// at::Tensor).
//
// The format: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces, then the data buffer. Offsets are relative to the buffer
// start, tensors are row-major little-endian, and the tensors' byte ranges tile
// the buffer exactly (no gaps, no overlap, nothing after the last one).
// ParseHeader checks every rule of the reference implementation
// (github.com/huggingface/safetensors) and a few stricter ones (unknown
// fields, NUL bytes, nesting deeper than the format's, shapes whose non-zero
// dims multiply past int64), so a file it accepts can be indexed without
// further bounds checks.
//
// Thread safety: Header, SafetensorsFile and Checkpoint are immutable after
// they are built; concurrent reads are safe. Writes through SafetensorsFile::
// data() are the caller's to synchronise.
#ifndef SWITCHYARD_SHARED_TENSORS_SAFETENSORS_H_
#define SWITCHYARD_SHARED_TENSORS_SAFETENSORS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::tensors {

// Headers larger than this are rejected, as the reference implementation does.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// The format's element types, declared in the reference implementation's
// order: the writer lays tensors out by this order, descending.
enum class DType {
  kBool,        // BOOL, 8 bits, 0 or 1
  kF4,          // F4, 4 bits (OCP MX FP4 E2M1), two per byte
  kF6E2M3,      // F6_E2M3, 6 bits (OCP MX FP6), four per 3 bytes
  kF6E3M2,      // F6_E3M2, 6 bits (OCP MX FP6)
  kU8,          // U8
  kI8,          // I8
  kF8E5M2,      // F8_E5M2
  kF8E4M3,      // F8_E4M3 (the "fn" variant: no infinities)
  kF8E8M0,      // F8_E8M0 (OCP MX scale, exponent only)
  kF8E4M3Fnuz,  // F8_E4M3FNUZ
  kF8E5M2Fnuz,  // F8_E5M2FNUZ
  kI16,         // I16
  kU16,         // U16
  kF16,         // F16
  kBF16,        // BF16
  kI32,         // I32
  kU32,         // U32
  kF32,         // F32
  kC64,         // C64: complex, two F32 parts
  kF64,         // F64
  kI64,         // I64
  kU64,         // U64
};
inline constexpr int kNumDTypes = static_cast<int>(DType::kU64) + 1;

// The format's name ("F32", "F8_E4M3", ...).
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName (case-sensitive); InvalidArgument naming the text.
absl::StatusOr<DType> ParseDType(std::string_view name);
// Bits per element: 4, 6, 8, 16, 32 or 64.
int DTypeBits(DType dtype);

// One tensor of a header. After ParseHeader: dims are >= 0, the product of the
// non-zero dims fits in int64, and end - begin == NumBytes().
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte offsets in the data buffer, end exclusive
  uint64_t end = 0;

  int64_t NumElements() const;  // 1 for a scalar, 0 when any dim is 0
  uint64_t NumBytes() const { return end - begin; }
};

// A parsed, validated header.
struct Header {
  std::vector<TensorInfo> tensors;              // in data order (ascending begin)
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
  uint64_t data_offset = 0;                     // 8 + N: where the data buffer starts
  uint64_t data_size = 0;                       // bytes in the data buffer

  // The tensor named `name`, or nullptr. O(log n).
  const TensorInfo* Find(std::string_view name) const;

 private:
  friend absl::StatusOr<Header> ParseHeader(std::string_view file_bytes);
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors
};

// Parses and validates the header of a whole file's bytes (the size of the
// whole is needed to check the offsets). Never reads outside `file_bytes`;
// memory use is proportional to the header, itself at most kMaxHeaderBytes.
// InvalidArgument on any violation; the message names the tensor and the
// problem, e.g. `tensor "w": data_offsets [0, 12] hold 12 bytes but shape
// [2, 3] of F32 needs 24`.
absl::StatusOr<Header> ParseHeader(std::string_view file_bytes);

// A validated safetensors file whose bytes stay in memory: memory-mapped
// copy-on-write (MAP_PRIVATE, read-write), so tensors built over the mapping
// may be modified in memory without touching the file; or a buffer owned by
// the object. Share it through std::shared_ptr: views over data() must keep
// it alive. If another process truncates the mapped file, reads fault
// (SIGBUS); the writers here replace files by rename and never truncate.
class SafetensorsFile {
 public:
  // Maps `path` and validates its header. Errors name the path: NotFound when
  // it is missing, InvalidArgument for a malformed file.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates `bytes` and keeps them; `name` stands for the path in messages.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> FromBytes(std::string bytes,
                                                                    std::string name);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const Header& header() const { return header_; }
  const std::string& path() const { return path_; }
  // First byte of the tensor's data (writable, copy-on-write). `info` must come
  // from this file's header(); a range outside the data buffer aborts.
  uint8_t* data(const TensorInfo& info) const;
  // Total bytes of the file.
  uint64_t size() const { return size_; }
  // Tells the kernel the mapped pages wholly inside this tensor's bytes are
  // not needed any more, so they leave the process's resident memory (a
  // later read maps them from the file again; bytes written to them are
  // lost). For tensors converted to another form as they load (QLoRA's
  // quantised base). No-op for files held in memory.
  void DropPages(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  Header header_;
  uint8_t* base_ = nullptr;  // whole file: the mapping, or owned_.data()
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::string owned_;  // FromBytes only
};

// A tensor to write: `nbytes` bytes at `data`, row-major little-endian.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// Writes `tensors` and `metadata` to `path` atomically: a temporary file in the
// same directory is written, fsync'ed and renamed over `path`, so a crash or
// an error leaves either the old file or the new one. Data is streamed from the
// views; nothing holds a second copy of it. Tensors are laid out as the
// reference writer does: by DType descending (64-bit types first, then 32-,
// 16-, 8-bit and sub-byte ones), then by name, so with the header padded to a
// multiple of 8 every tensor starts aligned to its element size. InvalidArgument
// (nothing written) when a name repeats, is "__metadata__" or not UTF-8, when
// nbytes does not match shape and dtype, or the header would pass 100 MB.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata);

// A Hugging Face checkpoint directory: `<stem>.safetensors`, or shards listed
// by `<stem>.safetensors.index.json`:
//   {"metadata": {"total_size": ...}, "weight_map": {tensor: shard file}}.
// When both are present the single file wins, as in transformers.
class Checkpoint {
 public:
  // A tensor and the file holding it; `info` points into file->header().
  struct Entry {
    std::shared_ptr<SafetensorsFile> file;
    const TensorInfo* info = nullptr;
  };

  // Opens and validates every file. NotFound naming both candidate paths when
  // neither exists, or naming a missing shard; InvalidArgument when the index
  // and the shards disagree (a listed tensor absent from its shard, a shard
  // tensor the index does not list, a tensor in two shards) or a shard name is
  // not a plain file name inside `dir`.
  static absl::StatusOr<Checkpoint> Open(const std::string& dir, std::string_view stem = "model");

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  size_t num_tensors() const { return entries_.size(); }
  // NotFound naming the tensor and the directory when absent.
  absl::StatusOr<Entry> Find(std::string_view name) const;
  // The files, in the order of their names (shard 1 first).
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // The "__metadata__" of the first file (writers copy it into every shard).
  const std::map<std::string, std::string>& metadata() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Writes a checkpoint directory (created when missing) that Checkpoint::Open
// reads. When the tensors' data passes `max_shard_bytes`, they go into shards
// `<stem>-00001-of-0000N.safetensors` filled in the order given (a tensor larger
// than the limit gets a shard of its own), each carrying `metadata`, then the
// index with "total_size" (sum of the tensors' bytes) is written last;
// otherwise a single `<stem>.safetensors`. Each file is replaced atomically and
// the shards are all written before any is renamed into place, so a crash
// leaves no index naming a missing shard. Files of the other layout left from
// an earlier write (same stem) are removed afterwards. Overwriting a sharded
// checkpoint in place is atomic per file only: for all-or-nothing, write to a
// fresh directory and rename it.
absl::Status WriteShardedSafetensors(const std::string& dir, const std::vector<TensorView>& tensors,
                                     const std::map<std::string, std::string>& metadata,
                                     uint64_t max_shard_bytes, std::string_view stem = "model");

}  // namespace switchyard::tensors

#endif  // SWITCHYARD_SHARED_TENSORS_SAFETENSORS_H_
