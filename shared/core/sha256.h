// Incremental SHA-256 (OpenSSL). Not thread-safe; one hasher per stream.
#ifndef SWITCHYARD_SHARED_CORE_SHA256_H_
#define SWITCHYARD_SHARED_CORE_SHA256_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // Lower-case hex digest; the hasher must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Digest of a file's bytes, streamed.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_SHA256_H_
