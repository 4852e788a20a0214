// Helpers for the model tests: fixture paths, reference tensors, comparisons.
#ifndef SWITCHYARD_TESTS_UNIT_SHARED_MODEL_MODEL_TESTING_H_
#define SWITCHYARD_TESTS_UNIT_SHARED_MODEL_MODEL_TESTING_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "shared/tensors/safetensors.h"
#include "shared/tensors/torch_tensors.h"

namespace switchyard::model::testing {

inline std::string FixtureDir(const std::string& name) {
  return std::string(SWITCHYARD_TEST_DATA_DIR) + "/model/" + name;
}

// A tensor of <fixture>/reference.safetensors.
inline at::Tensor Reference(const std::string& fixture, const std::string& name) {
  auto file = tensors::SafetensorsFile::Open(FixtureDir(fixture) + "/reference.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return at::Tensor();
  const tensors::TensorInfo* info = (*file)->header().Find(name);
  EXPECT_NE(info, nullptr) << fixture << " has no reference tensor " << name;
  if (info == nullptr) return at::Tensor();
  auto t = tensors::LoadTensor(*file, *info);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? t->clone() : at::Tensor();
}

// max |a - b| / max |b| over the positions where `keep` (broadcast over the
// last dimension) is true; `keep` undefined means everywhere.
inline double RelativeError(const at::Tensor& actual, const at::Tensor& expected,
                            const at::Tensor& keep = at::Tensor()) {
  at::Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  if (keep.defined()) {
    at::Tensor k = keep.to(at::kBool);
    while (k.dim() < a.dim()) k = k.unsqueeze(-1);
    k = k.expand_as(a);
    a = a.masked_select(k);
    e = e.masked_select(k);
  }
  return (a - e).abs().max().item<double>() / e.abs().max().item<double>();
}

}  // namespace switchyard::model::testing

#endif  // SWITCHYARD_TESTS_UNIT_SHARED_MODEL_MODEL_TESTING_H_
