#include "shared/core/file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"

namespace switchyard {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  int err = errno;
  std::string msg = absl::StrCat(what, " ", path, ": ", strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == ENOSPC) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

std::string ParentOf(const std::string& path) {
  std::filesystem::path p(path);
  std::string parent = p.parent_path().string();
  return parent.empty() ? "." : parent;
}

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError("read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents) {
  std::string tmp = absl::StrCat(path, ".tmp-", RandomHex(6));
  FileWriter w;
  absl::Status s = w.Open(tmp);
  if (s.ok()) s = w.Append(contents);
  if (s.ok()) s = w.Close();
  if (s.ok()) s = RenameDurably(tmp, path);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoError(absl::StrCat("rename ", from, " to"), to);
  }
  return FsyncPath(ParentOf(to));
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", path, ": ", ec.message()));
  return absl::OkStatus();
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FileWriter::Open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return ErrnoError("create", path);
  bytes_written_ = 0;
  return absl::OkStatus();
}

absl::Status FileWriter::Append(absl::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("not open: ", path_));
  absl::Status s = WriteAll(fd_, data.data(), data.size(), path_);
  if (s.ok()) bytes_written_ += static_cast<int64_t>(data.size());
  return s;
}

absl::Status FileWriter::Close() {
  if (fd_ < 0) return absl::OkStatus();
  int rc = ::fsync(fd_);
  absl::Status s = rc == 0 ? absl::OkStatus() : ErrnoError("fsync", path_);
  if (::close(fd_) != 0 && s.ok()) s = ErrnoError("close", path_);
  fd_ = -1;
  return s;
}

std::string RandomHex(int bytes) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(static_cast<size_t>(bytes) * 2);
  uint64_t word = 0;
  for (int i = 0; i < bytes; ++i) {
    if (i % 8 == 0) word = rng();
    unsigned b = static_cast<unsigned>(word & 0xff);
    word >>= 8;
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

int64_t ProcessStatusBytes(absl::string_view field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    // "VmHWM:\t  123456 kB"
    if (line.size() <= field.size() || absl::string_view(line).substr(0, field.size()) != field ||
        line[field.size()] != ':') {
      continue;
    }
    int64_t kb = 0;
    for (char c : line.substr(field.size() + 1)) {
      if (c >= '0' && c <= '9') kb = kb * 10 + (c - '0');
    }
    return kb * 1024;
  }
  return 0;
}

int64_t DirectoryBytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code file_ec;
    if (!it->is_regular_file(file_ec)) continue;
    const uintmax_t size = it->file_size(file_ec);
    if (!file_ec) total += static_cast<int64_t>(size);
  }
  return total;
}

absl::Status LinkOrCopyFile(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp-" + RandomHex(4);
  if (::link(from.c_str(), tmp.c_str()) != 0) {
    SY_ASSIGN_OR_RETURN(std::string contents, ReadFile(from));
    SY_RETURN_IF_ERROR(WriteFileAtomic(tmp, contents));
  }
  return RenameDurably(tmp, to);
}

}  // namespace switchyard
