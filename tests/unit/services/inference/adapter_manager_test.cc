// AdapterManager on the tiny Llama fixture with its PEFT adapters: loading by
// name, pinning, LRU eviction, and refusing bad adapters without harm.
#include "services/inference/adapter_manager.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "shared/core/file_util.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/shared/model/model_testing.h"

namespace switchyard::inference {
namespace {

using model::testing::FixtureDir;

class AdapterManagerTest : public switchyard::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    auto lm = model::CausalLm::Load(FixtureDir("llama"), {});
    ASSERT_TRUE(lm.ok()) << lm.status();
    model_ = std::move(*lm);
    // Three names for the fixture's adapters, one corrupt, one for another base.
    for (const char* name : {"a", "b", "c"}) {
      std::filesystem::copy(FixtureDir("adapters/llama-qv"), dir_ + "/" + name);
    }
    std::filesystem::copy(FixtureDir("adapters/llama-qv"), dir_ + "/corrupt");
    std::ofstream(dir_ + "/corrupt/adapter_model.safetensors") << "not safetensors";
    std::filesystem::copy(FixtureDir("adapters/gpt2-attn"), dir_ + "/gpt2");
  }

  AdapterManager::Resolver Resolver() {
    return [this](const std::string& name) -> absl::StatusOr<std::string> {
      const std::string dir = dir_ + "/" + name;
      if (!std::filesystem::exists(dir)) {
        return absl::NotFoundError("adapter \"" + name + "\" is not registered");
      }
      return dir;
    };
  }

  // Greedy next token for a fixed prompt with adapter id `id`.
  int64_t NextToken(int id) {
    c10::InferenceMode guard;
    model::DecoderInput in;
    in.input_ids = at::tensor(std::vector<int64_t>{5, 17, 42, 9}, at::kLong).view({1, 4});
    in.adapters = {id};
    auto logits = model_->Forward(in);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return (*logits)[0][-1].argmax().item<int64_t>();
  }

  std::unique_ptr<model::CausalLm> model_;
};

TEST_F(AdapterManagerTest, LoadsOnFirstUseAndEvictsTheLeastRecentlyUsedIdleOne) {
  AdapterManager adapters(model_.get(), Resolver(), 2);
  auto a = adapters.Acquire("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*adapters.Acquire("a"), *a);  // already loaded: the same id
  auto b = adapters.Acquire("b");
  ASSERT_TRUE(b.ok());
  // Both pinned: a third cannot come in.
  EXPECT_EQ(adapters.Acquire("c").status().code(), absl::StatusCode::kResourceExhausted);
  adapters.Release("a");
  adapters.Release("a");
  adapters.Release("b");
  adapters.Acquire("b").IgnoreError();  // b is now the more recent
  adapters.Release("b");
  ASSERT_TRUE(adapters.Acquire("c").ok());  // evicts a, the least recently used
  std::vector<AdapterInfo> list = adapters.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "b");
  EXPECT_EQ(list[1].name, "c");
  EXPECT_EQ(list[1].in_use, 1);
  EXPECT_GT(list[1].bytes, 0);
  EXPECT_FALSE(model_->AdapterId("a").has_value());
  EXPECT_EQ(adapters.Unload("c").code(), absl::StatusCode::kFailedPrecondition);
  adapters.Release("c");
  EXPECT_TRUE(adapters.Unload("c").ok());
  EXPECT_EQ(adapters.Unload("c").code(), absl::StatusCode::kNotFound);
}

TEST_F(AdapterManagerTest, BadAdaptersAreRefusedAndChangeNothing) {
  AdapterManager adapters(model_.get(), Resolver(), 1);
  auto a = adapters.Acquire("a");
  ASSERT_TRUE(a.ok());
  const int64_t with_adapter = NextToken(*a);
  adapters.Release("a");

  auto corrupt = adapters.Acquire("corrupt");
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(corrupt.status().message().find("\"corrupt\""), std::string::npos) << corrupt.status();
  auto other_base = adapters.Acquire("gpt2");
  EXPECT_EQ(other_base.status().code(), absl::StatusCode::kInvalidArgument) << other_base.status();
  EXPECT_EQ(adapters.Acquire("missing").status().code(), absl::StatusCode::kNotFound);

  // The loaded adapter is still there and serves as before.
  ASSERT_EQ(adapters.List().size(), 1u);
  auto again = adapters.Acquire("a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *a);
  EXPECT_EQ(NextToken(*again), with_adapter);
}

}  // namespace
}  // namespace switchyard::inference
