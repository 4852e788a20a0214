// A tiny sentence-transformers BERT directory for tests: the weights of
// tests/data/model/<fixture> (bert: mean pooling + Normalize; bert-cls: CLS)
// with bert-uncased's tokenizer.json cut to the fixture's 256-token
// vocabulary (BERT's special ids kept: [PAD] 0, [UNK] 100, [CLS] 101,
// [SEP] 102).
#ifndef SWITCHYARD_TESTS_TESTING_TINY_BERT_H_
#define SWITCHYARD_TESTS_TESTING_TINY_BERT_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::testing {

// Words of the cut vocabulary that are whole tokens.
inline const std::vector<std::string> kTinyBertWords = {
    "the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "hello", "world", "big", "red", "."};

// bert-uncased's tokenizer.json with a 256-entry vocabulary: the special
// tokens at their BERT ids, unused fillers, letters, "##"-letters, kTinyBertWords and
// the pieces of "unbelievable" (un ##believ ##able).
inline std::string TinyTokenizerJson() {
  std::ifstream in(std::string(SWITCHYARD_TEST_DATA_DIR) + "/text/bert-uncased/tokenizer.json");
  nlohmann::ordered_json tokenizer = nlohmann::ordered_json::parse(in);
  std::vector<std::string> vocab(104);
  for (int i = 1; i < 100; ++i) vocab[i] = absl::StrCat("[unused", i - 1, "]");
  vocab[0] = "[PAD]";
  vocab[100] = "[UNK]";
  vocab[101] = "[CLS]";
  vocab[102] = "[SEP]";
  vocab[103] = "[MASK]";
  for (char c = 'b'; c <= 'z'; ++c) vocab.push_back(std::string(1, c));  // "a" is in kTinyBertWords
  for (char c = 'a'; c <= 'z'; ++c) vocab.push_back(absl::StrCat("##", std::string(1, c)));
  vocab.insert(vocab.end(), kTinyBertWords.begin(), kTinyBertWords.end());
  vocab.insert(vocab.end(), {"un", "##believ", "##able"});
  EXPECT_LE(vocab.size(), 256u);
  nlohmann::ordered_json v = nlohmann::ordered_json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  tokenizer["model"]["vocab"] = v;
  return tokenizer.dump();
}

// A model directory made of tests/data/model/<fixture> and the tiny
// tokenizer, removed at destruction. `sentence_bert_config` replaces that
// file's text; "" leaves the file out.
class TinyBertDir {
 public:
  explicit TinyBertDir(const std::string& fixture, const char* sentence_bert_config = nullptr) {
    std::string templ = ::testing::TempDir() + "/tiny_bert_XXXXXX";
    path_ = mkdtemp(templ.data());
    const std::filesystem::path src = std::string(SWITCHYARD_TEST_DATA_DIR) + "/model/" + fixture;
    for (const char* name : {"config.json", "model.safetensors", "modules.json"}) {
      std::filesystem::copy_file(src / name, std::filesystem::path(path_) / name);
    }
    std::filesystem::copy(src / "1_Pooling", std::filesystem::path(path_) / "1_Pooling");
    if (sentence_bert_config == nullptr) {
      std::filesystem::copy_file(src / "sentence_bert_config.json",
                                 std::filesystem::path(path_) / "sentence_bert_config.json");
    } else if (*sentence_bert_config != '\0') {
      std::ofstream(path_ + "/sentence_bert_config.json") << sentence_bert_config;
    }
    std::ofstream(path_ + "/tokenizer.json") << TinyTokenizerJson();
  }
  ~TinyBertDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_TESTING_TINY_BERT_H_
