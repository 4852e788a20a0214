#include "shared/tensors/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::tensors {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string U64Le(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A file made of `header` (unpadded) and `data`.
std::string FileBytes(const std::string& header, const std::string& data = "") {
  return U64Le(header.size()) + header + data;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

std::vector<DType> AllDTypes() {
  std::vector<DType> out;
  for (int i = 0; i < kNumDTypes; ++i) out.push_back(static_cast<DType>(i));
  return out;
}

class SafetensorsTest : public testing::TempDirTest {};

TEST(DTypeTest, NamesAndBitSizesMatchTheReferenceImplementation) {
  const std::vector<std::pair<std::string, int>> expected = {
      {"BOOL", 8},        {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
      {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
      {"F8_E5M2FNUZ", 8}, {"I16", 16},    {"U16", 16},    {"F16", 16},    {"BF16", 16},
      {"I32", 32},        {"U32", 32},    {"F32", 32},    {"C64", 64},    {"F64", 64},
      {"I64", 64},        {"U64", 64}};
  ASSERT_EQ(expected.size(), static_cast<size_t>(kNumDTypes));
  for (int i = 0; i < kNumDTypes; ++i) {
    const DType dtype = static_cast<DType>(i);
    EXPECT_EQ(DTypeName(dtype), expected[i].first);
    EXPECT_EQ(DTypeBits(dtype), expected[i].second) << expected[i].first;
    absl::StatusOr<DType> parsed = ParseDType(expected[i].first);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, dtype);
  }
}

TEST(DTypeTest, ParseRejectsUnknownAndLowerCaseNames) {
  EXPECT_THAT(ParseDType("F128").status().message(), HasSubstr("unknown dtype \"F128\""));
  EXPECT_FALSE(ParseDType("f32").ok());
  EXPECT_FALSE(ParseDType("").ok());
}

TEST_F(SafetensorsTest, EveryDTypeRoundTripsByteForByte) {
  std::vector<TensorView> views;
  std::vector<std::string> datas;
  datas.reserve(kNumDTypes);
  for (DType dtype : AllDTypes()) {
    // 8 elements fill whole bytes for every dtype, 4- and 6-bit ones included.
    const uint64_t nbytes = 8 * DTypeBits(dtype) / 8;
    std::string data = RandomBytes(nbytes, static_cast<uint32_t>(dtype));
    if (dtype == DType::kBool) data = std::string("\0\1\1\0\1\0\0\1", 8);
    datas.push_back(data);
    views.push_back(
        {"t." + std::string(DTypeName(dtype)), dtype, {2, 4}, datas.back().data(), nbytes});
  }
  const std::string path = dir_ + "/all.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, views, {}).ok());

  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const Header& header = (*file)->header();
  ASSERT_EQ(header.tensors.size(), views.size());
  EXPECT_EQ(header.data_offset % 8, 0u);
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorInfo* info = header.Find(views[i].name);
    ASSERT_NE(info, nullptr) << views[i].name;
    EXPECT_EQ(info->dtype, views[i].dtype);
    EXPECT_EQ(info->shape, views[i].shape);
    EXPECT_EQ(info->NumElements(), 8);
    ASSERT_EQ(info->NumBytes(), views[i].nbytes);
    EXPECT_EQ(std::memcmp((*file)->data(*info), datas[i].data(), datas[i].size()), 0)
        << views[i].name;
  }
}

TEST_F(SafetensorsTest, WriterOrdersByDTypeDescendingThenNameSoTensorsAreAligned) {
  const std::string a(6, 'a'), b(8, 'b'), c(4, 'c'), d(4, 'd');
  std::vector<TensorView> views = {{"z_u8", DType::kU8, {6}, a.data(), 6},
                                   {"y_f64", DType::kF64, {1}, b.data(), 8},
                                   {"b_f16", DType::kF16, {2}, c.data(), 4},
                                   {"a_f16", DType::kF16, {2}, d.data(), 4}};
  const std::string path = dir_ + "/order.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, views, {}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> order;
  for (const TensorInfo& t : (*file)->header().tensors) {
    order.push_back(t.name);
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->data(t)) % (DTypeBits(t.dtype) / 8), 0u)
        << t.name;
  }
  EXPECT_EQ(order, (std::vector<std::string>{"y_f64", "a_f16", "b_f16", "z_u8"}));
}

TEST_F(SafetensorsTest, HeaderIsPaddedWithSpacesToAMultipleOfEight) {
  const std::string data(3, 'x');
  for (int name_length = 1; name_length <= 9; ++name_length) {
    const std::string path = dir_ + "/pad.safetensors";
    ASSERT_TRUE(WriteSafetensors(
                    path, {{std::string(name_length, 'n'), DType::kU8, {3}, data.data(), 3}}, {})
                    .ok());
    const std::string bytes = *ReadFile(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ(n % 8, 0u);
    const std::string header = bytes.substr(8, n);
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
    EXPECT_LT(header.size() - close - 1, 8u);
    EXPECT_EQ(bytes.substr(8 + n), data);
  }
}

TEST_F(SafetensorsTest, MetadataRoundTripsAndIsOmittedWhenEmpty) {
  const std::string data(4, '\0');
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "caf\xc3\xa9 \"quoted\"\n"}};
  ASSERT_TRUE(
      WriteSafetensors(dir_ + "/m.safetensors", {{"w", DType::kF32, {1}, data.data(), 4}}, metadata)
          .ok());
  auto file = SafetensorsFile::Open(dir_ + "/m.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->header().metadata, metadata);

  ASSERT_TRUE(
      WriteSafetensors(dir_ + "/n.safetensors", {{"w", DType::kF32, {1}, data.data(), 4}}, {})
          .ok());
  EXPECT_THAT(*ReadFile(dir_ + "/n.safetensors"), ::testing::Not(HasSubstr("__metadata__")));
  auto plain = SafetensorsFile::Open(dir_ + "/n.safetensors");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE((*plain)->header().metadata.empty());
}

TEST_F(SafetensorsTest, EmptyTensorsAndScalarsRoundTrip) {
  const std::string scalar = RandomBytes(4, 7);
  std::vector<TensorView> views = {{"empty", DType::kF32, {0}, nullptr, 0},
                                   {"empty2d", DType::kBF16, {3, 0}, nullptr, 0},
                                   {"scalar", DType::kF32, {}, scalar.data(), 4}};
  ASSERT_TRUE(WriteSafetensors(dir_ + "/e.safetensors", views, {}).ok());
  auto file = SafetensorsFile::Open(dir_ + "/e.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const Header& header = (*file)->header();
  ASSERT_EQ(header.tensors.size(), 3u);
  EXPECT_EQ(header.Find("empty")->NumElements(), 0);
  EXPECT_EQ(header.Find("empty")->shape, std::vector<int64_t>{0});
  EXPECT_EQ(header.Find("empty2d")->shape, (std::vector<int64_t>{3, 0}));
  const TensorInfo* s = header.Find("scalar");
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->NumElements(), 1);
  EXPECT_EQ(std::memcmp((*file)->data(*s), scalar.data(), 4), 0);
  EXPECT_EQ(header.Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, ManyTensorsRoundTripAndAreFoundByName) {
  std::vector<TensorView> views;
  std::vector<float> values(3000);
  for (int i = 0; i < 3000; ++i) {
    values[i] = static_cast<float>(i);
    views.push_back({absl::StrCat("layer.", i, ".w"), DType::kF32, {1}, &values[i], 4});
  }
  ASSERT_TRUE(WriteSafetensors(dir_ + "/many.safetensors", views, {}).ok());
  auto file = SafetensorsFile::Open(dir_ + "/many.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  for (int i = 0; i < 3000; i += 97) {
    const TensorInfo* info = (*file)->header().Find(absl::StrCat("layer.", i, ".w"));
    ASSERT_NE(info, nullptr);
    float v;
    std::memcpy(&v, (*file)->data(*info), 4);
    EXPECT_EQ(v, static_cast<float>(i));
  }
}

TEST(ParseHeaderTest, AcceptsNullMetadataAnyKeyOrderAndWhitespace) {
  const std::string header =
      R"( {"b": {"data_offsets": [4, 6], "shape": [2], "dtype": "U8"},)"
      R"( "__metadata__": null, "a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}   )";
  absl::StatusOr<Header> parsed = ParseHeader(FileBytes(header.substr(1), "abcdef"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 2u);
  EXPECT_EQ(parsed->tensors[0].name, "a");
  EXPECT_EQ(parsed->tensors[1].name, "b");
  EXPECT_EQ(parsed->data_offset, 8 + header.size() - 1);
  EXPECT_EQ(parsed->data_size, 6u);
  EXPECT_TRUE(parsed->metadata.empty());
}

TEST(ParseHeaderTest, AcceptsAFileWithNoTensors) {
  absl::StatusOr<Header> parsed = ParseHeader(FileBytes("{}      "));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->tensors.empty());
}

TEST(ParseHeaderTest, SubByteDTypesNeedWholeBytes) {
  EXPECT_TRUE(
      ParseHeader(FileBytes(R"({"t":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", "ab"))
          .ok());
  EXPECT_TRUE(
      ParseHeader(FileBytes(R"({"t":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}})", "abc"))
          .ok());
  EXPECT_THAT(
      ParseHeader(FileBytes(R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "ab"))
          .status()
          .message(),
      AllOf(HasSubstr("tensor \"t\""), HasSubstr("do not fill whole bytes")));
}

struct HostileCase {
  std::string label;
  std::string bytes;
  std::vector<std::string> expected;  // substrings of the message
};

// A header with one F32 tensor "w" of `shape` at `offsets`, over `data_size` bytes.
std::string OneTensor(const std::string& fields, size_t data_size) {
  return FileBytes(absl::StrCat("{\"w\":{", fields, "}}"), std::string(data_size, '\0'));
}

std::vector<HostileCase> HostileCases() {
  const std::string ok_fields = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  std::vector<HostileCase> cases = {
      {"Empty", "", {"too few for the 8-byte header length"}},
      {"SevenBytes", std::string(7, '\0'), {"7 bytes"}},
      {"HeaderLengthPastEnd", U64Le(100) + "{}", {"header length 100", "10-byte file"}},
      {"HeaderLengthHuge", U64Le(~0ull) + "{}", {"passes the limit of 100000000"}},
      {"HeaderJustOverLimit", U64Le(100'000'001) + "{}", {"passes the limit"}},
      {"ZeroLengthHeader", U64Le(0), {"does not start with '{'"}},
      {"HeaderNotAnObject", FileBytes("[1, 2]"), {"does not start with '{'"}},
      {"LeadingSpace", FileBytes(" {}"), {"does not start with '{'"}},
      {"InvalidJson", FileBytes("{\"w\": "), {"not valid JSON"}},
      {"TrailingGarbage", FileBytes("{}  x"), {"not valid JSON"}},
      {"TrailingNul", FileBytes(std::string("{}\0", 3)), {"NUL byte"}},
      {"NulHidingGarbage", FileBytes(std::string("{}\0 garbage", 11)), {"NUL byte"}},
      {"InvalidUtf8", FileBytes("{\"\xff\": 1}"), {"not valid JSON"}},
      {"DuplicateTensor",
       FileBytes(absl::StrCat("{\"w\":{", ok_fields, "},\"w\":{", ok_fields, "}}"),
                 std::string(8, '\0')),
       {"tensor \"w\": appears twice in the header"}},
      {"DuplicateField",
       OneTensor(R"("dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8])", 8),
       {"tensor \"w\": field \"dtype\" appears twice"}},
      {"DeepNesting",
       OneTensor(R"("dtype":"F32","shape":[[2]],"data_offsets":[0,8])", 8),
       {"tensor \"w\": shape: dim 0 (an array) is not a non-negative integer"}},
      {"VeryDeepNesting",
       FileBytes("{\"w\":" + std::string(5000, '[') + std::string(5000, ']') + "}"),
       {"tensor \"w\": entry is an array, not an object"}},
      {"MetadataValueNotString",
       FileBytes(R"({"__metadata__":{"format":"pt","epoch":3}})"),
       {"__metadata__ \"epoch\"", "not a string"}},
      {"MetadataNotObject", FileBytes(R"({"__metadata__":["a"]})"), {"__metadata__ is an array"}},
      {"EntryNotObject", FileBytes(R"({"w":[1]})"), {"tensor \"w\"", "not an object"}},
      {"MissingDtype",
       OneTensor(R"("shape":[2],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "missing field \"dtype\""}},
      {"MissingShape",
       OneTensor(R"("dtype":"F32","data_offsets":[0,8])", 8),
       {"tensor \"w\"", "missing field \"shape\""}},
      {"MissingOffsets",
       OneTensor(R"("dtype":"F32","shape":[2])", 8),
       {"tensor \"w\"", "missing field \"data_offsets\""}},
      {"ExtraField",
       OneTensor(ok_fields + R"(,"strides":[1])", 8),
       {"tensor \"w\"", "unknown field \"strides\""}},
      {"UnknownDtype",
       OneTensor(R"("dtype":"F128","shape":[2],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "unknown dtype \"F128\""}},
      {"DtypeNotString",
       OneTensor(R"("dtype":32,"shape":[2],"data_offsets":[0,8])", 8),
       {"tensor \"w\": dtype 32 is not a string"}},
      {"ShapeNotArray",
       OneTensor(R"("dtype":"F32","shape":2,"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "shape 2 is not an array"}},
      {"NegativeDim",
       OneTensor(R"("dtype":"F32","shape":[2,-1],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "dim 1 (-1) is not a non-negative integer"}},
      {"FractionalDim",
       OneTensor(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "dim 0", "not a non-negative integer"}},
      {"BoolDim",
       OneTensor(R"("dtype":"F32","shape":[true],"data_offsets":[0,8])", 8),
       {"tensor \"w\": shape: dim 0 (true) is not a non-negative integer"}},
      {"StringDim",
       OneTensor(R"("dtype":"F32","shape":["2"],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "not a non-negative integer"}},
      {"DimPastInt64",
       OneTensor(R"("dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "not a non-negative integer"}},
      {"ElementCountOverflow",
       OneTensor(R"("dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "more than 2^63-1 elements"}},
      {"OverflowHiddenBehindZeroDim",
       OneTensor(R"("dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0])", 0),
       {"tensor \"w\"", "more than 2^63-1 elements"}},
      {"BitCountOverflow",
       OneTensor(R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8])", 8),
       {"tensor \"w\"", "passes 2^64 bits"}},
      {"OffsetsNotPair",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,8,9])", 8),
       {"tensor \"w\": data_offsets are not two non-negative integers (element 2 is 9)"}},
      {"OffsetsNegative",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[-8,0])", 8),
       {"tensor \"w\"", "not two non-negative integers"}},
      {"OffsetsSingle",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[0])", 8),
       {"tensor \"w\": data_offsets are not two non-negative integers (got 1)"}},
      {"OffsetsNotArray",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":"0-8")", 8),
       {"tensor \"w\"", "(got \"0-8\")"}},
      {"DuplicateMetadata",
       FileBytes(R"({"__metadata__":{},"__metadata__":{}})"),
       {"__metadata__ appears twice"}},
      {"DuplicateMetadataKey",
       FileBytes(R"({"__metadata__":{"a":"1","a":"2"}})"),
       {"__metadata__ \"a\": key appears twice"}},
      {"MetadataValueObject",
       FileBytes(R"({"__metadata__":{"a":{"b":"c"}}})"),
       {"__metadata__ \"a\": value an object is not a string"}},
      {"UnterminatedObject", FileBytes(R"({"w":{"dtype":"F32")"), {"not valid JSON"}},
      {"OffsetsReversed",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[8,0])", 8),
       {"tensor \"w\"", "data_offsets [8, 0] end before they begin"}},
      {"OffsetsPastBuffer",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,8])", 4),
       {"tensor \"w\"", "run past the end of the 4-byte data buffer"}},
      {"OffsetsHuge",
       OneTensor(
           R"("dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,18446744073709551615])",
           8),
       {"tensor \"w\"", "run past the end"}},
      {"SizeMismatch",
       FileBytes(
           R"({"model.layers.0.q_proj.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})",
           std::string(12, '\0')),
       {"tensor \"model.layers.0.q_proj.weight\": data_offsets [0, 12] hold 12 bytes but shape "
        "[2, 3] of F32 needs 24"}},
      {"Overlap",
       FileBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                 std::string(6, '\0')),
       {"tensor \"b\"", "overlap tensor \"a\" at [0, 4]"}},
      {"EmptyTensorInsideAnother",
       FileBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                 std::string(4, '\0')),
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"Gap",
       FileBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                 std::string(8, '\0')),
       {"tensor \"b\"", "leave bytes [4, 6) of the data buffer unused"}},
      {"GapBeforeFirst",
       OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[4,12])", 12),
       {"tensor \"w\"", "leave bytes [0, 4)"}},
      {"BytesAfterLastTensor",
       OneTensor(ok_fields, 9),
       {"cover 8 bytes of the 9-byte data buffer"}},
      {"DataWithoutTensors", FileBytes("{}", "x"), {"cover 0 bytes of the 1-byte data buffer"}},
      {"ControlCharactersInNameAreEscaped",
       FileBytes("{\"a\\u0000\\n\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}"),
       {"tensor \"a\\u0000\\n\"", "unknown dtype"}},
  };
  return cases;
}

class HostileHeaderTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileHeaderTest, IsRejectedWithAMessageNamingTheProblem) {
  const HostileCase& c = GetParam();
  absl::StatusOr<Header> parsed = ParseHeader(c.bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : c.expected) {
    EXPECT_THAT(parsed.status().message(), HasSubstr(part));
  }
}

INSTANTIATE_TEST_SUITE_P(All, HostileHeaderTest, ::testing::ValuesIn(HostileCases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) {
                           return info.param.label;
                         });

TEST(ParseHeaderTest, HugeNamesAreCutShortInMessages) {
  const std::string name(100000, 'n');
  absl::StatusOr<Header> parsed =
      ParseHeader(FileBytes("{\"" + name + R"(":{"dtype":"X","shape":[],"data_offsets":[0,0]}})"));
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(),
              AllOf(HasSubstr("tensor \"nnnn"), HasSubstr("n...\": unknown dtype \"X\"")));
  EXPECT_LT(parsed.status().message().size(), 1000u);
}

// A small valid file with metadata, three dtypes, an empty tensor and a scalar.
std::string SmallValidFile() {
  return FileBytes(R"({"__metadata__":{"format":"pt"},)"
                   R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]},)"
                   R"("e":{"dtype":"I64","shape":[0,3],"data_offsets":[10,10]},)"
                   R"("c":{"dtype":"U8","shape":[3],"data_offsets":[10,13]}})",
                   RandomBytes(13, 3));
}

TEST(ParseHeaderTest, SmallValidFileParses) {
  absl::StatusOr<Header> parsed = ParseHeader(SmallValidFile());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->tensors.size(), 4u);
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
}

TEST(ParseHeaderTest, EveryTruncationIsRejectedWithoutCrashing) {
  const std::string file = SmallValidFile();
  for (size_t size = 0; size < file.size(); ++size) {
    // A copy of exactly `size` bytes, so sanitizers catch any read past it.
    const std::string prefix = file.substr(0, size);
    EXPECT_FALSE(ParseHeader(prefix).ok()) << "truncated at " << size;
  }
}

TEST(ParseHeaderTest, EverySingleByteCorruptionIsHandled) {
  const std::string file = SmallValidFile();
  for (size_t i = 0; i < file.size(); ++i) {
    for (unsigned char flip : {0x01, 0x20, 0x80, 0xff}) {
      std::string corrupt = file;
      corrupt[i] = static_cast<char>(corrupt[i] ^ flip);
      absl::StatusOr<Header> parsed = ParseHeader(corrupt);
      if (!parsed.ok()) continue;
      for (const TensorInfo& t : parsed->tensors) {
        EXPECT_LE(t.end, parsed->data_size);
        EXPECT_EQ(parsed->data_offset + parsed->data_size, corrupt.size());
      }
    }
  }
}

// The fuzzer's seeds say by their names whether they are valid.
TEST(ParseHeaderTest, SeedCorpusFilesAreJudgedAsTheirNamesSay) {
  const std::filesystem::path corpus =
      std::filesystem::path(SWITCHYARD_TEST_DATA_DIR) / ".." / "fuzz" / "corpus" / "safetensors";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    const std::string name = entry.path().filename().string();
    const bool valid = name.rfind("valid_", 0) == 0;
    if (!valid && name.rfind("broken_", 0) != 0) continue;  // inputs the fuzzer found
    ++seen;
    absl::StatusOr<std::string> bytes = ReadFile(entry.path().string());
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(ParseHeader(*bytes).ok(), valid) << name << ": " << ParseHeader(*bytes).status();
  }
  EXPECT_GE(seen, 8);
}

TEST_F(SafetensorsTest, OpenErrorsNameThePath) {
  const std::string missing = dir_ + "/missing.safetensors";
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::Open(missing);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(missing));

  const std::string empty = dir_ + "/empty.safetensors";
  ASSERT_TRUE(WriteFileAtomic(empty, "").ok());
  file = SafetensorsFile::Open(empty);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), AllOf(HasSubstr(empty), HasSubstr("0 bytes")));

  const std::string bad = dir_ + "/bad.safetensors";
  ASSERT_TRUE(
      WriteFileAtomic(bad, OneTensor(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])", 8)).ok());
  file = SafetensorsFile::Open(bad);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), AllOf(HasSubstr(bad), HasSubstr("needs 12")));

  file = SafetensorsFile::Open(dir_);
  EXPECT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr(dir_));
}

TEST_F(SafetensorsTest, FromBytesValidatesAndNamesTheSource) {
  auto file = SafetensorsFile::FromBytes(SmallValidFile(), "in-memory");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), "in-memory");
  EXPECT_EQ((*file)->size(), SmallValidFile().size());
  const TensorInfo* c = (*file)->header().Find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<char*>((*file)->data(*c)), 3),
            RandomBytes(13, 3).substr(10));

  auto bad = SafetensorsFile::FromBytes("short", "in-memory");
  EXPECT_THAT(bad.status().message(), HasSubstr("in-memory: "));
}

TEST_F(SafetensorsTest, WritesThroughTheMappingNeverReachTheFile) {
  const std::string original = SmallValidFile();
  const std::string path = dir_ + "/cow.safetensors";
  ASSERT_TRUE(WriteFileAtomic(path, original).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* a = (*file)->header().Find("a");
  std::memset((*file)->data(*a), 0x5a, a->NumBytes());
  EXPECT_EQ((*file)->data(*a)[0], 0x5a);

  EXPECT_EQ(*ReadFile(path), original);
  auto again = SafetensorsFile::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(std::memcmp((*again)->data(*(*again)->header().Find("a")),
                        original.data() + (*again)->header().data_offset, 8),
            0);
}

TEST_F(SafetensorsTest, DataOfAForeignTensorAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // LibTorch in the binary starts threads
  auto file = SafetensorsFile::FromBytes(SmallValidFile(), "small");
  ASSERT_TRUE(file.ok());
  TensorInfo foreign;
  foreign.name = "foreign";
  foreign.begin = 0;
  foreign.end = 1 << 20;
  EXPECT_DEATH((*file)->data(foreign), "not from small");
}

struct InvalidWrite {
  std::string label;
  std::vector<TensorView> views;
  std::map<std::string, std::string> metadata;
  std::string expected;
};

TEST_F(SafetensorsTest, InvalidWritesFailAndLeaveTheOldFile) {
  static const char kData[16] = {};
  const std::vector<InvalidWrite> cases = {
      {"duplicate",
       {{"w", DType::kF32, {1}, kData, 4}, {"w", DType::kF32, {1}, kData, 4}},
       {},
       "tensor \"w\": name appears twice"},
      {"size",
       {{"w", DType::kF32, {2, 3}, kData, 12}},
       {},
       "12 bytes given but shape [2, 3] of F32 needs 24"},
      {"reserved", {{"__metadata__", DType::kU8, {1}, kData, 1}}, {}, "reserved"},
      {"utf8 name", {{"bad\xff", DType::kU8, {1}, kData, 1}}, {}, "not valid UTF-8"},
      {"utf8 metadata", {}, {{"k", "\xc3"}}, "__metadata__ \"k\""},
      {"null data", {{"w", DType::kU8, {4}, nullptr, 4}}, {}, "data is null"},
      {"negative dim", {{"w", DType::kU8, {-1}, kData, 0}}, {}, "negative dim"},
      {"sub-byte", {{"w", DType::kF4, {3}, kData, 1}}, {}, "do not fill whole bytes"},
  };
  const std::string path = dir_ + "/keep.safetensors";
  const std::string original = SmallValidFile();
  ASSERT_TRUE(WriteFileAtomic(path, original).ok());
  for (const InvalidWrite& c : cases) {
    absl::Status status = WriteSafetensors(path, c.views, c.metadata);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.label;
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << c.label;
    EXPECT_EQ(*ReadFile(path), original) << c.label;
  }
  EXPECT_EQ(Entries(), std::set<std::string>{"keep.safetensors"});
}

TEST_F(SafetensorsTest, WriteIntoAMissingDirectoryFailsCleanly) {
  static const char kData[4] = {};
  absl::Status status = WriteSafetensors(dir_ + "/no/such/dir/x.safetensors",
                                         {{"w", DType::kF32, {1}, kData, 4}}, {});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("/no/such/dir/x.safetensors"));
}

TEST_F(SafetensorsTest, RewriteReplacesTheFileAndLeavesNoTemporaries) {
  const std::string a = RandomBytes(40, 1), b = RandomBytes(8, 2);
  const std::string path = dir_ + "/r.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kU8, {40}, a.data(), 40}}, {}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"v", DType::kU8, {8}, b.data(), 8}}, {}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  ASSERT_EQ((*file)->header().tensors.size(), 1u);
  EXPECT_EQ((*file)->header().tensors[0].name, "v");
  EXPECT_EQ(Entries(), std::set<std::string>{"r.safetensors"});
}

}  // namespace
}  // namespace switchyard::tensors
