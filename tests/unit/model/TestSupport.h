//===- TestSupport.h - temp files and error text for DSV3Model tests ------===//
//
// Shared by the unit tests in this directory: fixtures are written into a
// fresh temporary directory by the tests themselves.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_TESTS_UNIT_MODEL_TESTSUPPORT_H
#define DSV3_TESTS_UNIT_MODEL_TESTSUPPORT_H

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace dsv3::test {

/// A path inside the source tree (models/tiny/...).
inline std::string sourcePath(llvm::StringRef relative) {
  return (llvm::Twine(DSV3_SOURCE_DIR) + "/" + relative).str();
}

/// A JSON file of the source tree, parsed; null (after a test failure) when
/// it cannot be read.
inline llvm::json::Value readSourceJson(llvm::StringRef relative) {
  auto buffer = llvm::MemoryBuffer::getFile(sourcePath(relative));
  if (!buffer) {
    ADD_FAILURE() << sourcePath(relative) << ": "
                  << buffer.getError().message();
    return nullptr;
  }
  llvm::Expected<llvm::json::Value> value =
      llvm::json::parse((*buffer)->getBuffer());
  if (!value) {
    ADD_FAILURE() << llvm::toString(value.takeError());
    return nullptr;
  }
  return std::move(*value);
}

/// A fresh directory, removed with its contents when the test ends.
class TempDir {
public:
  TempDir() {
    llvm::SmallString<128> dir;
    std::error_code ec =
        llvm::sys::fs::createUniqueDirectory("dsv3-model-test", dir);
    EXPECT_FALSE(ec) << ec.message();
    root = std::string(dir);
  }
  ~TempDir() { llvm::sys::fs::remove_directories(root); }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  std::string path(llvm::StringRef name) const {
    llvm::SmallString<128> p(root);
    llvm::sys::path::append(p, name);
    return std::string(p);
  }
  /// Writes bytes to `name` and returns its path.
  std::string write(llvm::StringRef name, llvm::StringRef bytes) const {
    std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << p;
    return p;
  }

  std::string root;
};

/// The message of a failure; "" for success (the value is dropped).
template <typename T> std::string errorText(llvm::Expected<T> &&result) {
  return result ? std::string() : llvm::toString(result.takeError());
}
inline std::string errorText(llvm::Error err) {
  return llvm::toString(std::move(err));
}

} // namespace dsv3::test

#endif // DSV3_TESTS_UNIT_MODEL_TESTSUPPORT_H
