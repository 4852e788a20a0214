// Validation throughput: DatasetValidator (single thread) against a plain
// Python `json.loads` loop over the same generated chat JSONL, in one run.
//
//   validate_bench [--mb=200] [--file=PATH] [--keep] [--repeat=3]
//
// Each side runs --repeat times; the table shows the best run of each (the
// least disturbed by other work on the machine) and the ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "services/dataset/dataset_validator.h"
#include "services/dataset/text_scan.h"

namespace {

// Writes realistic chat examples (system + 1-3 user/assistant turns, escaped
// characters, some non-ASCII) until the file reaches `bytes`.
void Generate(const std::string& path, int64_t bytes) {
  std::mt19937_64 rng(7);
  const char* words[] = {"refund",   "policy",  "the",     "order",          "shipping",
                         "within",   "days",    "please",  "account",        "café",
                         "naïve",    "support", "invoice", "\\\"quoted\\\"", "line\\nbreak",
                         "customer", "a",       "is"};
  auto sentence = [&](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) {
      if (i) s += ' ';
      s += words[rng() % (sizeof(words) / sizeof(words[0]))];
    }
    return s;
  };
  std::ofstream out(path, std::ios::binary);
  int64_t written = 0;
  std::string line;
  while (written < bytes) {
    line = "{\"messages\":[{\"role\":\"system\",\"content\":\"You are Acme's support assistant. " +
           sentence(8) + "\"}";
    int turns = 1 + static_cast<int>(rng() % 3);
    for (int t = 0; t < turns; ++t) {
      line += ",{\"role\":\"user\",\"content\":\"" + sentence(10 + rng() % 30) + "\"}";
      line += ",{\"role\":\"assistant\",\"content\":\"" + sentence(20 + rng() % 80) + "\"}";
    }
    line += "]}\n";
    out << line;
    written += static_cast<int64_t>(line.size());
  }
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t mb = 200;
  std::string path = "/tmp/switchyard_validate_bench.jsonl";
  bool keep = false;
  int64_t repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mb=", 0) == 0)
      (void)absl::SimpleAtoi(a.substr(5), &mb);
    else if (a.rfind("--file=", 0) == 0)
      path = a.substr(7);
    else if (a == "--keep")
      keep = true;
    else if (a.rfind("--repeat=", 0) == 0)
      (void)absl::SimpleAtoi(a.substr(9), &repeat);
    else {
      std::cerr << "usage: validate_bench [--mb=200] [--file=PATH] [--keep] [--repeat=3]\n";
      return 2;
    }
  }
  std::ifstream probe(path);
  if (!probe) {
    std::cerr << "generating " << mb << " MB chat JSONL at " << path << "\n";
    Generate(path, mb * 1000 * 1000);
  }
  probe.close();

  using switchyard::dataset::DatasetValidator;
  switchyard::dataset::ValidatorOptions options;
  absl::StatusOr<switchyard::dataset::ValidationReport> report;
  double ours = 1e9;
  for (int64_t r = 0; r < std::max<int64_t>(repeat, 1); ++r) {
    auto start = std::chrono::steady_clock::now();
    report = DatasetValidator::ValidateFiles(options, path, "");
    ours = std::min(ours, Seconds(start));
    if (!report.ok()) {
      std::cerr << report.status() << "\n";
      return 1;
    }
  }
  const double bytes = static_cast<double>(report->train_stats.bytes);

  std::string cmd =
      "python3 -c 'import json,sys,time\n"
      "t=time.perf_counter()\n"
      "n=0\n"
      "with open(sys.argv[1],\"rb\") as f:\n"
      "    for line in f:\n"
      "        json.loads(line); n+=1\n"
      "print(time.perf_counter()-t)' " +
      path;
  double python = 0;
  for (int64_t r = 0; r < std::max<int64_t>(repeat, 1); ++r) {
    FILE* p = popen(cmd.c_str(), "r");
    double t = 0;
    if (p != nullptr && std::fscanf(p, "%lf", &t) == 1 && (python == 0 || t < python)) python = t;
    if (p) pclose(p);
  }

  std::printf(
      "\nvalidation throughput, %.0f MB chat JSONL, %lld examples, single thread, "
      "best of %lld runs, text kernel: %s\n",
      bytes / 1e6, static_cast<long long>(report->train_stats.examples),
      static_cast<long long>(repeat), switchyard::dataset::TextScanPath());
  std::printf("%-44s %10s %10s\n", "implementation", "seconds", "MB/s");
  std::printf("%-44s %10.2f %10.0f\n", "switchyard DatasetValidator (validate+stats)", ours,
              bytes / 1e6 / ours);
  if (python > 0) {
    std::printf("%-44s %10.2f %10.0f\n", "python3 json.loads loop (parse only)", python,
                bytes / 1e6 / python);
    std::printf("%-44s %21.1fx\n", "ratio", python / ours);
  } else {
    std::printf("python3 baseline did not run\n");
  }
  std::printf("report: valid=%d errors=%lld warnings=%lld\n", report->valid,
              static_cast<long long>(report->error_count),
              static_cast<long long>(report->warning_count));
  if (!keep) std::remove(path.c_str());
  return 0;
}
