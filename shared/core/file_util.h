// Small file-system helpers with crash-safe writes.
//
// "Atomic" here means: data is written to a temporary file in the same
// directory, fsync'ed, renamed over the target and the directory fsync'ed, so a
// reader (or a restart after a crash) sees either the old or the new content.
// All functions are thread-compatible; errors name the path and errno text.
#ifndef SWITCHYARD_SHARED_CORE_FILE_UTIL_H_
#define SWITCHYARD_SHARED_CORE_FILE_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

// Reads a whole file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` with `contents` atomically (see above).
absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents);

// fsyncs a file or directory by path.
absl::Status FsyncPath(const std::string& path);

// Renames `from` to `to` (same file system) and fsyncs the parent of `to`.
absl::Status RenameDurably(const std::string& from, const std::string& to);

// Creates `path` and its parents when missing.
absl::Status MakeDirs(const std::string& path);

// Removes a file or a directory tree; missing paths are not an error.
absl::Status RemoveAll(const std::string& path);

// An append-only file written through a buffer; Close() fsyncs.
class FileWriter {
 public:
  FileWriter() = default;
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // Creates or truncates `path`.
  absl::Status Open(const std::string& path);
  absl::Status Append(absl::string_view data);
  // Flushes, fsyncs and closes. Safe to call twice.
  absl::Status Close();
  int64_t bytes_written() const { return bytes_written_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
  int64_t bytes_written_ = 0;
};

// Bytes of the regular files under `dir` (a symlinked `dir` is followed);
// unreadable entries count as 0.
int64_t DirectoryBytes(const std::string& dir);

// Makes `to` a hard link of `from` when the file system allows, else a copy;
// atomic either way (a temporary name, then a durable rename).
absl::Status LinkOrCopyFile(const std::string& from, const std::string& to);

// Random lower-case hex string of `bytes` random bytes (2*bytes characters).
std::string RandomHex(int bytes);

// A memory field of this process's /proc/self/status in bytes: "VmHWM" (peak
// resident), "VmRSS" (resident now); 0 when absent.
int64_t ProcessStatusBytes(absl::string_view field);

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_FILE_UTIL_H_
