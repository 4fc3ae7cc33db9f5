//===- File.h - reading and durably writing files, without LLVM -*- C++ -*-===//
//
// Part of the runtime core, which builds with no LLVM or MLIR installed: plain
// C++17 and POSIX. Inputs are memory-mapped read-only after checking that they
// are regular files of bounded size; outputs are written to a temporary file
// that is synced and renamed into place, so a crash leaves either the old file
// or the new one. Every error is one line: `<file path>: <problem>`.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_SUPPORT_FILE_H
#define DSV3_RUNTIME_SUPPORT_FILE_H

#include "runtime/support/Error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::rt {

/// A read-only memory mapping of a whole file, unmapped on destruction.
/// data() is never null (an empty file maps to an empty range).
class MappedFile {
public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile &&other) noexcept;
  MappedFile &operator=(MappedFile &&other) noexcept;
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const;
  size_t size() const { return length; }
  /// The bytes as characters (for text formats such as JSON).
  std::string_view text() const {
    return {reinterpret_cast<const char *>(data()), length};
  }

private:
  friend Expected<MappedFile> mapInputFile(const std::string &path,
                                           uint64_t maxBytes);
  MappedFile(void *mapped, size_t size) : base(mapped), length(size) {}
  void *base = nullptr; // null for an empty file
  size_t length = 0;
};

/// Maps a regular file of at most maxBytes. Devices, directories and FIFOs
/// are refused (before they are opened) so a bad path can neither hang nor
/// exhaust memory.
Expected<MappedFile> mapInputFile(const std::string &path, uint64_t maxBytes);

/// The directory part of a path: "" for a bare name, "/" for a file in the
/// root, separators before the name dropped.
std::string parentPath(const std::string &path);

/// A piece of a file to write.
struct ByteRange {
  const void *data;
  size_t size;
};

/// Writes the pieces, in order, to "<path>.tmp.<pid>", fsyncs it, renames it
/// over path and fsyncs the directory. On failure before the rename the
/// temporary file is removed and path is untouched.
Error writeFileDurably(const std::string &path,
                       const std::vector<ByteRange> &pieces);
/// The same for one contiguous buffer.
Error writeFileDurably(const std::string &path, const void *data, size_t size);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_SUPPORT_FILE_H
