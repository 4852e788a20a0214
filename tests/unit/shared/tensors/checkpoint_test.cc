// Checkpoint and WriteShardedSafetensors: Hugging Face checkpoint directories.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/tensors/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::tensors {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CheckpointTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    // Five tensors of 40, 24, 8, 100 and 4 bytes, in state-dict order.
    const std::vector<std::pair<std::string, size_t>> specs = {{"embed.weight", 40},
                                                               {"layers.0.w", 24},
                                                               {"layers.0.b", 8},
                                                               {"layers.1.w", 100},
                                                               {"norm.weight", 4}};
    data_.reserve(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      data_.emplace_back(specs[i].second, static_cast<char>('a' + i));
      views_.push_back({specs[i].first,
                        DType::kF32,
                        {static_cast<int64_t>(specs[i].second / 4)},
                        data_.back().data(),
                        specs[i].second});
    }
  }
  // Every written tensor is found with its bytes.
  void ExpectAllTensors(const Checkpoint& checkpoint) {
    ASSERT_EQ(checkpoint.num_tensors(), views_.size());
    for (const TensorView& view : views_) {
      absl::StatusOr<Checkpoint::Entry> entry = checkpoint.Find(view.name);
      ASSERT_TRUE(entry.ok()) << entry.status();
      ASSERT_EQ(entry->info->NumBytes(), view.nbytes);
      EXPECT_EQ(std::memcmp(entry->file->data(*entry->info), view.data, view.nbytes), 0)
          << view.name;
    }
  }

  void WriteIndex(const nlohmann::json& weight_map) {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.safetensors.index.json", index.dump()).ok());
  }

  std::vector<std::string> data_;
  std::vector<TensorView> views_;
};

TEST_F(CheckpointTest, SmallCheckpointIsOneFile) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {{"format", "pt"}}, 1000).ok());
  EXPECT_EQ(Entries(), std::set<std::string>{"model.safetensors"});
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectAllTensors(*checkpoint);
  EXPECT_THAT(checkpoint->names(),
              ElementsAre("embed.weight", "layers.0.b", "layers.0.w", "layers.1.w", "norm.weight"));
  EXPECT_EQ(checkpoint->files().size(), 1u);
  EXPECT_EQ(checkpoint->metadata().at("format"), "pt");
  EXPECT_EQ(checkpoint->dir(), dir_);
}

TEST_F(CheckpointTest, ShardsFillInOrderAndTheIndexListsThem) {
  // 40 | 24+8 | 100 (alone: larger than the limit) | 4
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {{"format", "pt"}}, 48).ok());
  EXPECT_EQ(Entries(), (std::set<std::string>{
                           "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                           "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                           "model.safetensors.index.json"}));
  nlohmann::json index = nlohmann::json::parse(*ReadFile(dir_ + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 176);
  EXPECT_EQ(index["weight_map"]["embed.weight"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.0.w"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.0.b"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.1.w"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["norm.weight"], "model-00004-of-00004.safetensors");

  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectAllTensors(*checkpoint);
  EXPECT_EQ(checkpoint->files().size(), 4u);
  EXPECT_EQ(checkpoint->metadata().at("format"), "pt");
  for (const auto& file : checkpoint->files()) {
    EXPECT_EQ(file->header().metadata.at("format"), "pt") << file->path();
  }
}

TEST_F(CheckpointTest, CustomStem) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 48, "adapter_model").ok());
  EXPECT_TRUE(Entries().count("adapter_model-00001-of-00004.safetensors"));
  EXPECT_EQ(Checkpoint::Open(dir_).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_, "adapter_model");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectAllTensors(*checkpoint);
}

TEST_F(CheckpointTest, RewritingSwitchesLayoutAndRemovesStaleFiles) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 1000).ok());
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 48).ok());
  EXPECT_EQ(Entries().count("model.safetensors"), 0u);
  EXPECT_EQ(Entries().size(), 5u);

  // Fewer shards: the old "-of-00004" ones go.
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 150).ok());
  EXPECT_EQ(Entries(), (std::set<std::string>{"model-00001-of-00002.safetensors",
                                              "model-00002-of-00002.safetensors",
                                              "model.safetensors.index.json"}));
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectAllTensors(*checkpoint);

  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 1000).ok());
  EXPECT_EQ(Entries(), std::set<std::string>{"model.safetensors"});
}

TEST_F(CheckpointTest, InvalidInputWritesNothing) {
  views_.push_back(views_[0]);
  absl::Status status = WriteShardedSafetensors(dir_, views_, {}, 48);
  EXPECT_THAT(status.message(), HasSubstr("tensor \"embed.weight\": name appears twice"));
  views_.pop_back();
  views_.back().nbytes = 3;
  status = WriteShardedSafetensors(dir_, views_, {}, 48);
  EXPECT_THAT(status.message(), HasSubstr("tensor \"norm.weight\": 3 bytes given"));
  EXPECT_TRUE(Entries().empty());
}

TEST_F(CheckpointTest, NeitherFileNamesBothPaths) {
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(checkpoint.status().message(),
              AllOf(HasSubstr(dir_ + "/model.safetensors"),
                    HasSubstr(dir_ + "/model.safetensors.index.json")));
}

TEST_F(CheckpointTest, MissingShardIsNamed) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 48).ok());
  ASSERT_TRUE(RemoveAll(dir_ + "/model-00003-of-00004.safetensors").ok());
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(checkpoint.status().message(),
              AllOf(HasSubstr("model.safetensors.index.json"),
                    HasSubstr(dir_ + "/model-00003-of-00004.safetensors")));
}

TEST_F(CheckpointTest, TensorListedButAbsentFromItsShard) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 48).ok());
  nlohmann::json index = nlohmann::json::parse(*ReadFile(dir_ + "/model.safetensors.index.json"));
  index["weight_map"]["ghost.weight"] = "model-00001-of-00004.safetensors";
  WriteIndex(index["weight_map"]);
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(),
              HasSubstr("tensor \"ghost.weight\" is listed in shard "
                        "\"model-00001-of-00004.safetensors\", which does not hold it"));

  // Listed in the wrong shard.
  index["weight_map"].erase("ghost.weight");
  index["weight_map"]["norm.weight"] = "model-00001-of-00004.safetensors";
  WriteIndex(index["weight_map"]);
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(),
              HasSubstr("tensor \"norm.weight\" is listed in shard \"model-00001-of-00004"));
}

TEST_F(CheckpointTest, ShardTensorMissingFromTheIndex) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 48).ok());
  nlohmann::json index = nlohmann::json::parse(*ReadFile(dir_ + "/model.safetensors.index.json"));
  index["weight_map"].erase("layers.0.b");
  WriteIndex(index["weight_map"]);
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(checkpoint.status().message(),
              HasSubstr("tensor \"layers.0.b\" of shard \"model-00002-of-00004.safetensors\" is "
                        "not listed in the weight_map"));
}

TEST_F(CheckpointTest, TensorInTwoShards) {
  ASSERT_TRUE(WriteSafetensors(dir_ + "/a.safetensors", {views_[0], views_[1]}, {}).ok());
  ASSERT_TRUE(WriteSafetensors(dir_ + "/b.safetensors", {views_[1], views_[2]}, {}).ok());
  WriteIndex({{"embed.weight", "a.safetensors"},
              {"layers.0.w", "a.safetensors"},
              {"layers.0.b", "b.safetensors"}});
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(),
              HasSubstr("tensor \"layers.0.w\" is in both shard \"a.safetensors\" and shard "
                        "\"b.safetensors\""));
}

TEST_F(CheckpointTest, ShardNamesMustStayInTheDirectory) {
  ASSERT_TRUE(MakeDirs(dir_ + "/inner").ok());
  ASSERT_TRUE(WriteSafetensors(dir_ + "/inner/x.safetensors", {views_[0]}, {}).ok());
  for (const std::string shard :
       {"../x.safetensors", "/etc/passwd", "inner/x.safetensors", "..", ""}) {
    SCOPED_TRACE(shard);
    WriteIndex({{"embed.weight", shard}});
    absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
    EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(checkpoint.status().message(),
                AllOf(HasSubstr("tensor \"embed.weight\""), HasSubstr("not a file name inside")));
  }
  WriteIndex({{"embed.weight", 7}});
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(), HasSubstr("maps to 7"));
}

TEST_F(CheckpointTest, MalformedIndex) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.safetensors.index.json", "{not json").ok());
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("not valid JSON")));
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.safetensors.index.json", R"({"metadata": {}})").ok());
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(), HasSubstr("no \"weight_map\""));
}

TEST_F(CheckpointTest, BadSingleFileIsReportedWithItsPath) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.safetensors", "garbage").ok());
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(), HasSubstr(dir_ + "/model.safetensors"));
}

TEST_F(CheckpointTest, FindOfAnAbsentTensorIsNotFound) {
  ASSERT_TRUE(WriteShardedSafetensors(dir_, views_, {}, 1000).ok());
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  absl::StatusOr<Checkpoint::Entry> entry = checkpoint->Find("lm_head.weight");
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(entry.status().message(), AllOf(HasSubstr("lm_head.weight"), HasSubstr(dir_)));
}

}  // namespace
}  // namespace switchyard::tensors
