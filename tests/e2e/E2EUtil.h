//===- E2EUtil.h - run dsv3c from tests and read its outputs ----*- C++ -*-===//
#ifndef DSV3_TESTS_E2E_E2EUTIL_H
#define DSV3_TESTS_E2E_E2EUTIL_H

#include "runtime/io/Safetensors.h"

#include "llvm/ADT/StringRef.h"

#include <string>
#include <vector>

namespace dsv3::test {

using rt::convertToF32;
using rt::convertToI64;
using rt::DType;
using rt::SafetensorsFile;
using rt::SafetensorsWriter;
using rt::TensorInfo;

struct RunResult {
  int exitCode;
  std::string output; // stdout and stderr together
};

/// Runs a shell command line, capturing stdout and stderr together.
RunResult runCommand(const std::string &commandLine);

/// Runs `dsv3c <args>` through the shell.
RunResult runDsv3c(const std::string &args);

/// A fresh scratch directory for one test.
std::string scratchDir(const std::string &name);

/// Path inside the source tree.
std::string sourcePath(const std::string &relative);

/// Opens a safetensors file the test needs (a failure is reported, then
/// null is returned).
SafetensorsFile *openOrFail(const std::string &path);

/// Reads a float tensor (any float dtype) from a safetensors file.
std::vector<float> readF32(const SafetensorsFile &f, const std::string &name);
std::vector<int64_t> readI64(const SafetensorsFile &f, const std::string &name);

/// The number `key` of every line of a `--log-json` JSON-lines log, in
/// order (a malformed line, or one without "step" or `key`, is a test
/// failure and is skipped).
std::vector<double> logField(const std::string &path, const std::string &key);

/// The "loss" of every line of a `--log-json` log.
inline std::vector<double> losses(const std::string &path) {
  return logField(path, "loss");
}

/// Sum of squares of every `grad.*` tensor of a `dsv3c grad` output: the
/// square of the global gradient norm.
double gradSquaredNorm(const SafetensorsFile &f);

/// Prints a measured value next to its bound, so the numbers the README
/// quotes come from the test run (`--gtest_filter=...` shows them).
void report(const std::string &what, double value, double bound);

/// The whole content of a file (a test failure when it cannot be read).
std::string fileBytes(const std::string &path);

/// Writes `input_ids` of the given shape as int64.
void writeTokens(const std::string &path, const std::vector<int64_t> &shape,
                 const std::vector<int64_t> &ids);

} // namespace dsv3::test

#endif
