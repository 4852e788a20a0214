#include "shared/tensors/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/tensors/safetensors_util.h"

namespace switchyard::tensors {
namespace {

using json = nlohmann::json;

constexpr std::array<std::string_view, kNumDTypes> kDTypeNames = {
    "BOOL",    "F4",          "F6_E2M3",     "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
    "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",     "U16", "F16", "BF16",    "I32",
    "U32",     "F32",         "C64",         "F64",     "I64", "U64"};
constexpr std::array<int, kNumDTypes> kDTypeBits = {8,  4,  6,  6,  8,  8,  8,  8,  8,  8,  8,
                                                    16, 16, 16, 16, 32, 32, 32, 64, 64, 64, 64};

absl::Status HeaderError(const std::string& tensor, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(tensor), ": ", problem));
}

// What a tensor entry says on its own, once all its fields are read:
// offsets in order and inside the `data_size`-byte buffer, and as many bytes
// as the shape and dtype need.
absl::Status CheckTensor(const TensorInfo& info, uint64_t data_size) {
  if (info.begin > info.end) {
    return HeaderError(info.name,
                       absl::StrCat("data_offsets ", OffsetsText(info), " end before they begin"));
  }
  if (info.end > data_size) {
    return HeaderError(info.name,
                       absl::StrCat("data_offsets ", OffsetsText(info), " run past the end of the ",
                                    data_size, "-byte data buffer"));
  }
  absl::StatusOr<uint64_t> bytes = ByteSize(info.dtype, info.shape);
  if (!bytes.ok()) return HeaderError(info.name, bytes.status().message());
  if (*bytes != info.NumBytes()) {
    return HeaderError(info.name,
                       absl::StrCat("data_offsets ", OffsetsText(info), " hold ", info.NumBytes(),
                                    " bytes but shape ", ShapeText(info.shape), " of ",
                                    Sv(DTypeName(info.dtype)), " needs ", *bytes));
  }
  return absl::OkStatus();
}

// Sorts `tensors` by offset and checks that they tile [0, data_size) exactly.
absl::Status CheckTiling(uint64_t data_size, std::vector<TensorInfo>* tensors) {
  std::sort(tensors->begin(), tensors->end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : *tensors) {
    if (t.begin < covered) {
      return HeaderError(t.name,
                         absl::StrCat("data_offsets ", OffsetsText(t), " overlap tensor ",
                                      Quote(previous->name), " at ", OffsetsText(*previous)));
    }
    if (t.begin > covered) {
      return HeaderError(
          t.name, absl::StrCat("data_offsets ", OffsetsText(t), " leave bytes [", covered, ", ",
                               t.begin, ") of the data buffer unused"));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tensors cover ", covered, " bytes of the ",
                                                   data_size, "-byte data buffer; bytes [", covered,
                                                   ", ", data_size, ") belong to no tensor"));
  }
  return absl::OkStatus();
}

// One JSON value as the SAX parser reports it (containers by their start).
struct JsonValue {
  enum Kind { kNull, kBool, kUnsigned, kNegative, kFloat, kString, kObject, kArray };
  JsonValue(Kind kind, uint64_t number = 0, std::string* string = nullptr, std::string text = {})
      : kind(kind), number(number), string(string), text(std::move(text)) {}

  Kind kind;
  uint64_t number;      // kUnsigned
  std::string* string;  // kString
  std::string text;     // kBool, kNegative, kFloat: the literal

  // How the value reads in a message.
  std::string Describe() const {
    switch (kind) {
      case kNull:
        return "null";
      case kUnsigned:
        return absl::StrCat(number);
      case kString:
        return Quote(*string);
      case kObject:
        return "an object";
      case kArray:
        return "an array";
      default:
        return text;
    }
  }
};

// Builds a Header from nlohmann's SAX events and stops at the first event that
// breaks a rule. No JSON tree is built and no container nests deeper than the
// format's three levels, so memory stays a small multiple of what the header
// declares (a DOM would take about 20 times the header's size).
class HeaderBuilder : public nlohmann::json_sax<json> {
 public:
  HeaderBuilder(uint64_t data_size, Header* header) : data_size_(data_size), header_(header) {}

  // OK once the whole header was read without a violation.
  absl::Status status() const {
    if (!status_.ok() || state_ == State::kDone) return status_;
    return absl::InvalidArgumentError("header is not valid JSON: it ends early");
  }
  std::map<std::string, size_t, std::less<>>& names() { return names_; }

  bool null() override { return Value({JsonValue::kNull}); }
  bool boolean(bool value) override {
    return Value({JsonValue::kBool, 0, nullptr, value ? "true" : "false"});
  }
  // nlohmann reports only negative integers here; others go to number_unsigned.
  bool number_integer(int64_t value) override {
    return Value({JsonValue::kNegative, 0, nullptr, absl::StrCat(value)});
  }
  bool number_unsigned(uint64_t value) override { return Value({JsonValue::kUnsigned, value}); }
  bool number_float(double, const std::string& literal) override {
    return Value({JsonValue::kFloat, 0, nullptr, literal});
  }
  bool string(std::string& value) override { return Value({JsonValue::kString, 0, &value}); }
  bool binary(json::binary_t&) override { return Unexpected(); }  // not produced by JSON text
  bool start_object(std::size_t) override { return Value({JsonValue::kObject}); }
  bool start_array(std::size_t) override { return Value({JsonValue::kArray}); }
  bool key(std::string& key) override;
  bool end_object() override;
  bool end_array() override;
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    std::string what = e.what();  // may quote a long token of the input
    if (what.size() > 300) what = what.substr(0, 297) + "...";
    return Fail(absl::InvalidArgumentError(absl::StrCat("header is not valid JSON: ", what)));
  }

 private:
  // Where the next event lands. k...Value: the value of a key just read.
  enum class State {
    kStart,
    kRoot,
    kMetadataValue,
    kMetadata,
    kMetadataItem,
    kTensorValue,
    kTensor,
    kDtypeValue,
    kShapeValue,
    kShapeDims,
    kOffsetsValue,
    kOffsets,
    kDone,
  };

  bool Value(const JsonValue& value);
  bool Fail(absl::Status status) {
    status_ = std::move(status);
    return false;  // stops the parser
  }
  bool TensorFail(absl::string_view problem) {
    return Fail(HeaderError(header_->tensors.back().name, problem));
  }
  // An event JSON's grammar does not allow where it came: nlohmann never sends it.
  bool Unexpected() { return Fail(absl::InvalidArgumentError("header is not valid JSON")); }
  TensorInfo& tensor() { return header_->tensors.back(); }

  const uint64_t data_size_;
  Header* const header_;
  std::map<std::string, size_t, std::less<>> names_;  // tensor names seen
  absl::Status status_;
  State state_ = State::kStart;
  bool seen_metadata_ = false;
  std::string metadata_key_;
  unsigned fields_ = 0;  // bits: dtype, shape, data_offsets seen in the current tensor
  std::vector<uint64_t> offsets_;
};

constexpr std::array<std::string_view, 3> kFields = {"dtype", "shape", "data_offsets"};

bool HeaderBuilder::Value(const JsonValue& value) {
  constexpr std::string_view kOffsetsRule = "data_offsets are not two non-negative integers";
  switch (state_) {
    case State::kStart:
      if (value.kind != JsonValue::kObject) {
        return Fail(absl::InvalidArgumentError("header is not a JSON object"));
      }
      state_ = State::kRoot;
      return true;
    case State::kMetadataValue:
      if (value.kind == JsonValue::kNull) {  // the reference reads null as "no metadata"
        state_ = State::kRoot;
        return true;
      }
      if (value.kind != JsonValue::kObject) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("__metadata__ is ", value.Describe(), ", not an object of strings")));
      }
      state_ = State::kMetadata;
      return true;
    case State::kMetadataItem:
      if (value.kind != JsonValue::kString) {
        return Fail(absl::InvalidArgumentError(absl::StrCat("__metadata__ ", Quote(metadata_key_),
                                                            ": value ", value.Describe(),
                                                            " is not a string")));
      }
      header_->metadata[metadata_key_] = std::move(*value.string);
      state_ = State::kMetadata;
      return true;
    case State::kTensorValue:
      if (value.kind != JsonValue::kObject) {
        return TensorFail(absl::StrCat("entry is ", value.Describe(), ", not an object"));
      }
      fields_ = 0;
      state_ = State::kTensor;
      return true;
    case State::kDtypeValue: {
      if (value.kind != JsonValue::kString) {
        return TensorFail(absl::StrCat("dtype ", value.Describe(), " is not a string"));
      }
      absl::StatusOr<DType> dtype = ParseDType(*value.string);
      if (!dtype.ok()) return TensorFail(dtype.status().message());
      tensor().dtype = *dtype;
      state_ = State::kTensor;
      return true;
    }
    case State::kShapeValue:
      if (value.kind != JsonValue::kArray) {
        return TensorFail(absl::StrCat("shape ", value.Describe(), " is not an array"));
      }
      state_ = State::kShapeDims;
      return true;
    case State::kShapeDims:
      if (value.kind != JsonValue::kUnsigned ||
          value.number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return TensorFail(absl::StrCat("shape: dim ", tensor().shape.size(), " (", value.Describe(),
                                       ") is not a non-negative integer"));
      }
      tensor().shape.push_back(static_cast<int64_t>(value.number));
      return true;
    case State::kOffsetsValue:
      if (value.kind != JsonValue::kArray) {
        return TensorFail(absl::StrCat(Sv(kOffsetsRule), " (got ", value.Describe(), ")"));
      }
      offsets_.clear();
      state_ = State::kOffsets;
      return true;
    case State::kOffsets:
      if (value.kind != JsonValue::kUnsigned || offsets_.size() == 2) {
        return TensorFail(absl::StrCat(Sv(kOffsetsRule), " (element ", offsets_.size(), " is ",
                                       value.Describe(), ")"));
      }
      offsets_.push_back(value.number);
      return true;
    default:
      return Unexpected();
  }
}

bool HeaderBuilder::key(std::string& key) {
  switch (state_) {
    case State::kRoot:
      if (key == "__metadata__") {
        if (seen_metadata_) {
          return Fail(absl::InvalidArgumentError("__metadata__ appears twice in the header"));
        }
        seen_metadata_ = true;
        state_ = State::kMetadataValue;
        return true;
      }
      if (!names_.emplace(key, 0).second)
        return Fail(HeaderError(key, "appears twice in the header"));
      header_->tensors.emplace_back().name = std::move(key);
      state_ = State::kTensorValue;
      return true;
    case State::kMetadata:
      if (header_->metadata.count(key) > 0) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("__metadata__ ", Quote(key), ": key appears twice")));
      }
      metadata_key_ = std::move(key);
      state_ = State::kMetadataItem;
      return true;
    case State::kTensor:
      for (size_t i = 0; i < kFields.size(); ++i) {
        if (key != kFields[i]) continue;
        if (fields_ & (1u << i))
          return TensorFail(absl::StrCat("field ", Quote(key), " appears twice"));
        fields_ |= 1u << i;
        state_ = i == 0 ? State::kDtypeValue : i == 1 ? State::kShapeValue : State::kOffsetsValue;
        return true;
      }
      return TensorFail(absl::StrCat("unknown field ", Quote(key)));
    default:
      return Unexpected();
  }
}

bool HeaderBuilder::end_object() {
  switch (state_) {
    case State::kRoot:
      state_ = State::kDone;
      return true;
    case State::kMetadata:
      state_ = State::kRoot;
      return true;
    case State::kTensor: {
      for (size_t i = 0; i < kFields.size(); ++i) {
        if ((fields_ & (1u << i)) == 0) {
          return TensorFail(absl::StrCat("missing field \"", Sv(kFields[i]), "\""));
        }
      }
      absl::Status status = CheckTensor(tensor(), data_size_);
      if (!status.ok()) return Fail(std::move(status));
      state_ = State::kRoot;
      return true;
    }
    default:
      return Unexpected();
  }
}

bool HeaderBuilder::end_array() {
  switch (state_) {
    case State::kShapeDims:
      state_ = State::kTensor;
      return true;
    case State::kOffsets:
      if (offsets_.size() != 2) {
        return TensorFail(absl::StrCat("data_offsets are not two non-negative integers (got ",
                                       offsets_.size(), ")"));
      }
      tensor().begin = offsets_[0];
      tensor().end = offsets_[1];
      state_ = State::kTensor;
      return true;
    default:
      return Unexpected();
  }
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "fatal: %s\n", message.c_str());
  std::abort();
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  const int i = static_cast<int>(dtype);
  if (i < 0 || i >= kNumDTypes) return "INVALID";
  return kDTypeNames[i];
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (kDTypeNames[i] == name) return static_cast<DType>(i);
  }
  std::string known = absl::StrJoin(
      kDTypeNames, ", ",
      [](std::string* out, std::string_view dtype) { out->append(dtype.data(), dtype.size()); });
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype ", Quote(name), " (known: ", known, ")"));
}

int DTypeBits(DType dtype) {
  const int i = static_cast<int>(dtype);
  return i < 0 || i >= kNumDTypes ? 0 : kDTypeBits[i];
}

int64_t TensorInfo::NumElements() const {
  uint64_t n = 1;  // unsigned: wraps instead of overflowing on unvalidated shapes
  for (int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return static_cast<int64_t>(n);
}

const TensorInfo* Header::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors[it->second];
}

absl::StatusOr<Header> ParseHeader(std::string_view file_bytes) {
  if (file_bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat("file has ", file_bytes.size(),
                                                   " bytes, too few for the 8-byte header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file_bytes[i]);
  if (n > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("header length ", n, " passes the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (n > file_bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header length ", n, " runs past the end of the ", file_bytes.size(), "-byte file"));
  }
  const std::string_view text = file_bytes.substr(8, n);
  if (text.empty() || text[0] != '{') {
    return absl::InvalidArgumentError("header does not start with '{'");
  }
  // nlohmann's lexer ends the input at a NUL, which would hide what follows it.
  if (text.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("header contains a NUL byte");
  }

  Header header;
  header.data_offset = 8 + n;
  header.data_size = file_bytes.size() - header.data_offset;
  HeaderBuilder builder(header.data_size, &header);
  json::sax_parse(text.begin(), text.end(), &builder);
  SY_RETURN_IF_ERROR(builder.status());
  SY_RETURN_IF_ERROR(CheckTiling(header.data_size, &header.tensors));
  header.index_ = std::move(builder.names());
  for (size_t i = 0; i < header.tensors.size(); ++i) header.index_[header.tensors[i].name] = i;
  return header;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_) ::munmap(base_, size_);
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string message = absl::StrCat("open ", path, ": ", strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::FailedPreconditionError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    // Private and writable: stores land in copy-on-write pages, never in the file.
    void* base = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(absl::StrCat("mmap ", path, ": ", strerror(err)));
    }
    file->base_ = static_cast<uint8_t*>(base);
    file->mapped_ = true;
  }
  ::close(fd);
  absl::StatusOr<Header> header =
      ParseHeader(std::string_view(reinterpret_cast<const char*>(file->base_), file->size_));
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", header.status().message()));
  }
  file->header_ = *std::move(header);
  return file;
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                            std::string name) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->owned_ = std::move(bytes);
  file->base_ = reinterpret_cast<uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  absl::StatusOr<Header> header = ParseHeader(file->owned_);
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file->path_, ": ", header.status().message()));
  }
  file->header_ = *std::move(header);
  return file;
}

uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  if (info.begin > info.end || info.end > header_.data_size) {
    Die(absl::StrCat("SafetensorsFile::data: tensor ", Quote(info.name), " at ", OffsetsText(info),
                     " is not from ", path_));
  }
  return base_ + header_.data_offset + info.begin;
}

void SafetensorsFile::DropPages(const TensorInfo& info) const {
  if (!mapped_) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data(info));
  const uintptr_t end = begin + (info.end - info.begin);
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> names;
  for (const TensorView& t : tensors) {
    SY_RETURN_IF_ERROR(ValidateView(t));
    if (!names.insert(t.name).second) return HeaderError(t.name, "name appears twice");
  }
  for (const auto& [key, value] : metadata) {
    if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("__metadata__ ", Quote(key), ": key or value is not valid UTF-8"));
    }
  }

  // The reference writer's order: dtype descending, then name.
  std::vector<const TensorView*> order;
  order.reserve(tensors.size());
  for (const TensorView& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
    if (a->dtype != b->dtype) return a->dtype > b->dtype;
    return a->name < b->name;
  });

  // Built by hand rather than as one ordered_json, whose key lookups are linear.
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + json(metadata).dump();
  uint64_t offset = 0;
  for (const TensorView* t : order) {
    if (header.size() > 1) header += ",";
    json entry = {{"dtype", DTypeName(t->dtype)},
                  {"shape", t->shape},
                  {"data_offsets", {offset, offset + t->nbytes}}};
    header += json(t->name).dump() + ":" + entry.dump();
    offset += t->nbytes;
    if (header.size() > kMaxHeaderBytes) break;
  }
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  if (header.size() > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header for ", tensors.size(), " tensors passes the limit of ", kMaxHeaderBytes, " bytes"));
  }

  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  const std::string tmp = absl::StrCat(path, ".tmp-", RandomHex(6));
  FileWriter writer;
  absl::Status status = writer.Open(tmp);
  if (status.ok()) status = writer.Append(length);
  if (status.ok()) status = writer.Append(header);
  for (const TensorView* t : order) {
    if (!status.ok() || t->nbytes == 0) continue;
    status = writer.Append(absl::string_view(static_cast<const char*>(t->data), t->nbytes));
  }
  if (status.ok()) status = writer.Close();
  if (status.ok()) status = RenameDurably(tmp, path);
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

}  // namespace switchyard::tensors
