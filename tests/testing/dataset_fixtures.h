// Small dataset inputs shared by the dataset tests.
#ifndef SWITCHYARD_TESTS_TESTING_DATASET_FIXTURES_H_
#define SWITCHYARD_TESTS_TESTING_DATASET_FIXTURES_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "shared/core/sha256.h"

namespace switchyard::testing {

// One valid chat example (system, user, assistant), distinct for each i.
inline std::string ChatLine(int i) {
  return absl::StrCat(
      R"({"messages":[{"role":"system","content":"You answer questions about trains."},)",
      R"({"role":"user","content":"When does train )", i, R"( leave?"},)",
      R"({"role":"assistant","content":"Train )", i, R"( leaves at 9:)", i % 60, R"(."}]})");
}

// `n` valid chat lines numbered from `first`, each ending in "\n".
inline std::string ChatLines(int n, int first = 1) {
  std::string out;
  for (int i = first; i < first + n; ++i) absl::StrAppend(&out, ChatLine(i), "\n");
  return out;
}

// Lower-case hex SHA-256 of `data`.
inline std::string Sha256Of(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_TESTING_DATASET_FIXTURES_H_
