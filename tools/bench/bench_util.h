// Small helpers the benchmarks share: fail fast, wall time, percentiles, and
// running this benchmark again in a fresh process.
#ifndef SWITCHYARD_TOOLS_BENCH_BENCH_UTIL_H_
#define SWITCHYARD_TOOLS_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::bench {

using Clock = std::chrono::steady_clock;

// Exits with `what` and the status when it is an error.
inline void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s << "\n";
    std::exit(1);
  }
}

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The p-quantile (0..1) of `v` by rank; 0 for none.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// A shell command running this binary again with its own arguments and then
// `extra` (for popen: each measured configuration in a fresh process, so none
// inherits another's allocator cache, thread pools or peak memory).
inline std::string SelfCommand(int argc, char** argv, const std::string& extra) {
  // popen runs a shell: name this binary by its path, not /proc/self/exe.
  std::string cmd =
      absl::StrCat("'", std::filesystem::read_symlink("/proc/self/exe").string(), "'");
  for (int i = 1; i < argc; ++i) absl::StrAppend(&cmd, " '", argv[i], "'");
  return absl::StrCat(cmd, " ", extra);
}

}  // namespace switchyard::bench

#endif  // SWITCHYARD_TOOLS_BENCH_BENCH_UTIL_H_
