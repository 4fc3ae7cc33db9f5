//===- File.cpp - mapped inputs and durable outputs, without LLVM ---------===//
//
// Part of the runtime core: plain C++17 and POSIX, no LLVM. Regular files
// only, bounded sizes, read-only mappings; writes through a synced temporary
// file renamed into place.
//
//===----------------------------------------------------------------------===//
#include "runtime/support/File.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace dsv3::rt {
namespace {

std::string errnoText(int code) { return std::strerror(code); }

/// `<file>: <what>: <strerror(code)>`.
Error errnoError(const std::string &file, const std::string &what,
                 int code) {
  return fileError(file, what + ": " + errnoText(code));
}
Error errnoError(const std::string &file, const char *what) {
  int code = errno; // read before anything allocates
  return errnoError(file, std::string(what), code);
}

/// Makes the rename durable.
Error syncDirectoryOf(const std::string &path) {
  std::string dir = parentPath(path);
  if (dir.empty())
    dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return errnoError(path, "cannot open the directory to sync it");
  bool synced = ::fsync(fd) == 0;
  Error err =
      synced ? Error::success() : errnoError(path, "cannot sync the directory");
  ::close(fd);
  return err;
}

/// Refusals shared by the path check and the check of the opened file.
Error checkStatus(const std::string &path, const struct stat &st,
                  uint64_t maxBytes) {
  if (S_ISDIR(st.st_mode))
    return fileError(path, "is a directory, not a file");
  if (!S_ISREG(st.st_mode))
    return fileError(path, "is not a regular file");
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > maxBytes)
    return fileError(path, "is " + std::to_string(size) +
                               " bytes, more than the limit of " +
                               std::to_string(maxBytes));
  if constexpr (sizeof(size_t) < sizeof(uint64_t))
    if (size > std::numeric_limits<size_t>::max())
      return fileError(path, "cannot read: " + errnoText(EFBIG));
  return Error::success();
}

} // namespace

std::string parentPath(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return "";
  size_t end = slash;
  while (end > 0 && path[end - 1] == '/')
    --end;
  return end == 0 ? "/" : path.substr(0, end);
}


//===----------------------------------------------------------------------===//
// MappedFile
//===----------------------------------------------------------------------===//

MappedFile::~MappedFile() {
  if (base)
    ::munmap(base, length);
}

MappedFile::MappedFile(MappedFile &&other) noexcept
    : base(other.base), length(other.length) {
  other.base = nullptr;
  other.length = 0;
}

MappedFile &MappedFile::operator=(MappedFile &&other) noexcept {
  if (this != &other) {
    if (base)
      ::munmap(base, length);
    base = other.base;
    length = other.length;
    other.base = nullptr;
    other.length = 0;
  }
  return *this;
}

const uint8_t *MappedFile::data() const {
  static const uint8_t empty = 0;
  return base ? static_cast<const uint8_t *>(base) : &empty;
}

Expected<MappedFile> mapInputFile(const std::string &path, uint64_t maxBytes) {
  // Look before opening: opening a FIFO blocks and opening a device may act.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return errnoError(path, "cannot open");
  if (Error err = checkStatus(path, st, maxBytes))
    return err;
  // O_NONBLOCK: should the path have become a FIFO since, do not wait.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return errnoError(path, "cannot read");
  if (::fstat(fd, &st) != 0) {
    Error err = errnoError(path, "cannot read");
    ::close(fd);
    return err;
  }
  if (Error err = checkStatus(path, st, maxBytes)) {
    ::close(fd);
    return err;
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return MappedFile();
  }
  void *base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (base == MAP_FAILED) {
    Error err = errnoError(path, "cannot read");
    ::close(fd);
    return err;
  }
  ::close(fd); // the mapping stays valid
  return MappedFile(base, size);
}

//===----------------------------------------------------------------------===//
// Durable writes
//===----------------------------------------------------------------------===//

Error writeFileDurably(const std::string &path,
                       const std::vector<ByteRange> &pieces) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0)
    return errnoError(tmp, "cannot create");
  auto abandon = [&](Error err) {
    ::unlink(tmp.c_str());
    return err;
  };
  for (const ByteRange &piece : pieces) {
    const char *at = static_cast<const char *>(piece.data);
    size_t left = piece.size;
    while (left > 0) {
      // Linux writes at most about 2 GiB per call; ask for no more.
      size_t chunk = std::min<size_t>(left, size_t(1) << 30);
      ssize_t n = ::write(fd, at, chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        if (n == 0)
          errno = EIO;
        Error err = errnoError(tmp, "write failed");
        ::close(fd);
        return abandon(std::move(err));
      }
      at += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0) {
    Error err = errnoError(tmp, "fsync failed");
    ::close(fd);
    return abandon(std::move(err));
  }
  if (::close(fd) != 0)
    return abandon(errnoError(tmp, "close failed"));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int code = errno;
    return abandon(
        errnoError(path, "cannot rename " + tmp + " into place", code));
  }
  return syncDirectoryOf(path);
}

Error writeFileDurably(const std::string &path, const void *data,
                       size_t size) {
  return writeFileDurably(path, std::vector<ByteRange>{{data, size}});
}

} // namespace dsv3::rt
