#include "shared/tensors/torch_tensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"

namespace switchyard::tensors {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TorchTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/torch_tensors_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    at::manual_seed(0);
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::shared_ptr<SafetensorsFile> Open(const std::string& path) {
    absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? *file : nullptr;
  }

  std::string dir_;
};

// A tensor of `type` filled with random bytes (0 or 1 for bool): no LibTorch
// kernel is needed, so this works for the shell dtypes of newer releases too.
at::Tensor Sample(c10::ScalarType type, at::IntArrayRef shape) {
  if (type == at::kBool) return at::rand(shape) > 0.5;
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  const at::Tensor bytes = at::randint(0, 256, {t.numel() * static_cast<int64_t>(t.element_size())},
                                       at::TensorOptions().dtype(at::kByte));
  std::memcpy(t.data_ptr(), bytes.data_ptr(), bytes.numel());
  return t;
}

// Same dtype, shape and bytes.
void ExpectSameTensor(const at::Tensor& actual, const at::Tensor& expected,
                      const std::string& name) {
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << name;
  const at::Tensor a = actual.contiguous(), e = expected.contiguous();
  EXPECT_EQ(std::memcmp(a.data_ptr(), e.data_ptr(), a.numel() * a.element_size()), 0) << name;
}

TEST(TorchDtypeTest, MappedTypesRoundTripAndTheRestAreNamed) {
  int mapped = 0;
  for (int i = 0; i < kNumDTypes; ++i) {
    const DType dtype = static_cast<DType>(i);
    absl::StatusOr<c10::ScalarType> type = ToTorchDtype(dtype);
    if (!type.ok()) {
      EXPECT_THAT(type.status().message(),
                  AllOf(HasSubstr(std::string(DTypeName(dtype))), HasSubstr("LibTorch")));
      continue;
    }
    ++mapped;
    absl::StatusOr<DType> back = FromTorchDtype(*type);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, dtype);
    EXPECT_EQ(c10::elementSize(*type) * 8, static_cast<size_t>(DTypeBits(dtype)));
  }
  EXPECT_GE(mapped, 11);
#if TORCH_VERSION_MAJOR < 2
  EXPECT_EQ(mapped, 11);
  EXPECT_FALSE(ToTorchDtype(DType::kF8E4M3).ok());
  EXPECT_FALSE(ToTorchDtype(DType::kU32).ok());
#endif
  EXPECT_FALSE(ToTorchDtype(DType::kF4).ok());
  EXPECT_THAT(FromTorchDtype(at::kComplexDouble).status().message(), HasSubstr("ComplexDouble"));
  EXPECT_FALSE(FromTorchDtype(at::kQInt8).ok());
}

TEST_F(TorchTensorsTest, EveryMappedDtypeRoundTrips) {
  NamedTensors tensors;
  for (int i = 0; i < kNumDTypes; ++i) {
    absl::StatusOr<c10::ScalarType> type = ToTorchDtype(static_cast<DType>(i));
    if (!type.ok()) continue;
    tensors.emplace_back(absl::StrCat("t", i), Sample(*type, {3, 5}));
  }
  const std::string path = dir_ + "/all.safetensors";
  ASSERT_TRUE(SaveTensors(path, tensors, {{"format", "pt"}}).ok());
  std::shared_ptr<SafetensorsFile> file = Open(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->header().metadata.at("format"), "pt");
  for (const auto& [name, expected] : tensors) {
    const TensorInfo* info = file->header().Find(name);
    ASSERT_NE(info, nullptr) << name;
    absl::StatusOr<at::Tensor> loaded = LoadTensor(file, *info);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectSameTensor(*loaded, expected, name);
  }
}

TEST_F(TorchTensorsTest, LoadIsZeroCopyAndKeepsTheFileAlive) {
  const at::Tensor w = at::randn({4, 8});
  const std::string path = dir_ + "/w.safetensors";
  ASSERT_TRUE(SaveTensors(path, {{"w", w}}, {}).ok());
  std::shared_ptr<SafetensorsFile> file = Open(path);
  ASSERT_NE(file, nullptr);
  const TensorInfo& info = *file->header().Find("w");
  absl::StatusOr<at::Tensor> loaded = LoadTensor(file, info);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->data_ptr(), static_cast<void*>(file->data(info)));

  const long uses = file.use_count();
  EXPECT_GT(uses, 1);  // the tensor's deleter holds a reference
  file.reset();
  EXPECT_TRUE(at::equal(*loaded, w));  // the mapping outlives our handle
}

TEST_F(TorchTensorsTest, ModifyingALoadedTensorNeverChangesTheFile) {
  const std::string path = dir_ + "/cow.safetensors";
  ASSERT_TRUE(SaveTensors(path, {{"w", at::arange(16, at::kFloat)}}, {}).ok());
  const std::string before = *ReadFile(path);
  {
    std::shared_ptr<SafetensorsFile> file = Open(path);
    ASSERT_NE(file, nullptr);
    absl::StatusOr<at::Tensor> loaded = LoadTensor(file, *file->header().Find("w"));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded->mul_(-3).add_(1);
    EXPECT_EQ(loaded->data_ptr<float>()[2], -5.f);
  }
  EXPECT_EQ(*ReadFile(path), before);
  std::shared_ptr<SafetensorsFile> again = Open(path);
  absl::StatusOr<at::Tensor> reloaded = LoadTensor(again, *again->header().Find("w"));
  ASSERT_TRUE(reloaded.ok());
  EXPECT_TRUE(at::equal(*reloaded, at::arange(16, at::kFloat)));
}

TEST_F(TorchTensorsTest, MisalignedDataIsCopied) {
  // "a" (3 bytes of U8) comes first, so F32 "b" starts at buffer offset 3;
  // the padded header puts the buffer itself at an 8-byte boundary.
  std::string header = R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const float values[2] = {1.5f, -2.25f};
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header + "xyz" + std::string(reinterpret_cast<const char*>(values), 8);
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::FromBytes(bytes, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo& b = *(*file)->header().Find("b");
  ASSERT_NE(reinterpret_cast<uintptr_t>((*file)->data(b)) % 4, 0u);
  absl::StatusOr<at::Tensor> loaded = LoadTensor(*file, b);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_NE(loaded->data_ptr(), static_cast<void*>((*file)->data(b)));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded->data_ptr()) % 4, 0u);
  EXPECT_EQ(loaded->data_ptr<float>()[0], 1.5f);
  EXPECT_EQ(loaded->data_ptr<float>()[1], -2.25f);
}

TEST_F(TorchTensorsTest, NonContiguousAndViewTensorsAreSavedAsTheirValues) {
  const at::Tensor base = at::randn({6, 4});
  NamedTensors tensors = {{"transposed", base.t()},
                          {"sliced", base.slice(0, 1, 5, 2)},
                          {"conj", at::complex(at::randn({3}), at::randn({3})).conj()},
                          {"neg", at::randn({3}).neg()}};
  ASSERT_TRUE(SaveTensors(dir_ + "/v.safetensors", tensors, {}).ok());
  std::shared_ptr<SafetensorsFile> file = Open(dir_ + "/v.safetensors");
  ASSERT_NE(file, nullptr);
  for (const auto& [name, expected] : tensors) {
    absl::StatusOr<at::Tensor> loaded = LoadTensor(file, *file->header().Find(name));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(at::equal(*loaded, expected.resolve_conj())) << name;
  }
}

TEST_F(TorchTensorsTest, ScalarsAndEmptyTensorsRoundTrip) {
  NamedTensors tensors = {{"scalar", at::scalar_tensor(3.5)},
                          {"empty", at::empty({0}, at::kFloat)},
                          {"empty3d", at::empty({2, 0, 3}, at::kBFloat16)}};
  ASSERT_TRUE(SaveTensors(dir_ + "/s.safetensors", tensors, {}).ok());
  std::shared_ptr<SafetensorsFile> file = Open(dir_ + "/s.safetensors");
  ASSERT_NE(file, nullptr);
  for (const auto& [name, expected] : tensors) {
    absl::StatusOr<at::Tensor> loaded = LoadTensor(file, *file->header().Find(name));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->sizes(), expected.sizes()) << name;
    EXPECT_EQ(loaded->scalar_type(), expected.scalar_type()) << name;
  }
  EXPECT_EQ(LoadTensor(file, *file->header().Find("scalar"))->item<double>(), 3.5);
}

TEST_F(TorchTensorsTest, BoolBytesOtherThanZeroOrOneAreRejected) {
  const std::string header = R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header + std::string("\1\0\2", 3);
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::FromBytes(bytes, "mask");
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<at::Tensor> loaded = LoadTensor(*file, *(*file)->header().Find("m"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("tensor \"m\" of mask"), HasSubstr("element 2 is byte 2")));
}

TEST_F(TorchTensorsTest, UnsupportedTypesAreErrorsNamingTheTensor) {
  absl::Status status =
      SaveTensors(dir_ + "/x.safetensors",
                  {{"ok", at::zeros({2})}, {"z", at::zeros({2}, at::kComplexDouble)}}, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("tensor \"z\""), HasSubstr("ComplexDouble")));
  EXPECT_THAT(SaveTensors(dir_ + "/x.safetensors", {{"u", at::Tensor()}}, {}).message(),
              HasSubstr("tensor \"u\": undefined"));
  EXPECT_THAT(SaveTensors(dir_ + "/x.safetensors", {{"sp", at::eye(3).to_sparse()}}, {}).message(),
              HasSubstr("tensor \"sp\": only strided"));

#if TORCH_VERSION_MAJOR < 2
  const std::string header = R"({"f8":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header + "x";
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::FromBytes(bytes, "fp8");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(LoadTensor(*file, *(*file)->header().Find("f8")).status().message(),
              AllOf(HasSubstr("tensor \"f8\" of fp8"), HasSubstr("F8_E4M3")));
#endif
}

TEST_F(TorchTensorsTest, ATensorInfoFromAnotherFileIsRejected) {
  ASSERT_TRUE(SaveTensors(dir_ + "/a.safetensors", {{"w", at::zeros({2})}}, {}).ok());
  ASSERT_TRUE(SaveTensors(dir_ + "/b.safetensors", {{"w", at::zeros({64})}}, {}).ok());
  std::shared_ptr<SafetensorsFile> a = Open(dir_ + "/a.safetensors");
  std::shared_ptr<SafetensorsFile> b = Open(dir_ + "/b.safetensors");
  absl::StatusOr<at::Tensor> loaded = LoadTensor(a, *b->header().Find("w"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("tensor \"w\" of " + dir_ + "/a.safetensors"));
}

TEST_F(TorchTensorsTest, ShardedSaveLoadsThroughACheckpoint) {
  NamedTensors tensors;
  for (int i = 0; i < 6; ++i) {
    tensors.emplace_back(absl::StrCat("layers.", i, ".w"), at::randn({8, 8}));
  }
  ASSERT_TRUE(SaveTensorsSharded(dir_, tensors, {{"format", "pt"}}, 600).ok());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/model.safetensors.index.json"));
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->files().size(), 3u);  // 256 bytes each, two per 600-byte shard
  for (const auto& [name, expected] : tensors) {
    absl::StatusOr<at::Tensor> loaded = LoadTensor(*checkpoint, name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(at::equal(*loaded, expected)) << name;
  }
  EXPECT_EQ(LoadTensor(*checkpoint, "nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace switchyard::tensors
