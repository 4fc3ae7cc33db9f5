//===- E2EUtil.cpp - run dsv3c from tests and read its outputs ------------===//
#include "tests/e2e/E2EUtil.h"

#include "llvm/Support/JSON.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace dsv3::test {

RunResult runDsv3c(const std::string &args) {
  return runCommand(std::string(DSV3C_PATH) + " " + args);
}

RunResult runCommand(const std::string &commandLine) {
  std::string cmd = commandLine + " 2>&1";
  RunResult r{-1, ""};
  FILE *pipe = popen(cmd.c_str(), "r");
  if (!pipe)
    return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0)
    r.output.append(buf.data(), n);
  int status = pclose(pipe);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

namespace {
/// Removes the scratch directories of a test process when every test
/// passed; after a failure they stay for inspection.
class ScratchCleanup : public ::testing::Environment {
public:
  void TearDown() override {
    if (!::testing::UnitTest::GetInstance()->Passed())
      return;
    std::error_code ec;
    for (const std::filesystem::path &dir : dirs)
      std::filesystem::remove_all(dir, ec);
  }
  std::vector<std::filesystem::path> dirs;
};

ScratchCleanup &scratchCleanup() {
  static ScratchCleanup *cleanup = static_cast<ScratchCleanup *>(
      ::testing::AddGlobalTestEnvironment(new ScratchCleanup));
  return *cleanup;
}
// Registered before RUN_ALL_TESTS, as gtest requires.
[[maybe_unused]] ScratchCleanup &registeredCleanup = scratchCleanup();
} // namespace

std::string scratchDir(const std::string &name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("dsv3-e2e-" + std::to_string(getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  scratchCleanup().dirs.push_back(dir);
  return dir.string();
}

std::string sourcePath(const std::string &relative) {
  return std::string(DSV3_SOURCE_DIR) + "/" + relative;
}

SafetensorsFile *openOrFail(const std::string &path) {
  auto f = SafetensorsFile::open(path);
  if (!f) {
    ADD_FAILURE() << f.error().message();
    return nullptr;
  }
  return f->release();
}

namespace {
template <class T, class Convert>
std::vector<T> readAs(const SafetensorsFile &f, const std::string &name, Convert convert) {
  const TensorInfo *t = f.lookup(name);
  if (!t) {
    ADD_FAILURE() << "missing tensor " << name << " in " << f.path();
    return {};
  }
  std::vector<T> v(t->numElements());
  rt::Error e = convert(*t, v.data());
  EXPECT_FALSE(e) << e.message();
  return v;
}
} // namespace

std::vector<float> readF32(const SafetensorsFile &f, const std::string &name) {
  return readAs<float>(f, name, [](const TensorInfo &t, float *out) { return convertToF32(t, out); });
}

std::vector<int64_t> readI64(const SafetensorsFile &f, const std::string &name) {
  return readAs<int64_t>(f, name,
                         [](const TensorInfo &t, int64_t *out) { return convertToI64(t, out); });
}

void writeTokens(const std::string &path, const std::vector<int64_t> &shape,
                 const std::vector<int64_t> &ids) {
  SafetensorsWriter w;
  w.addI64("input_ids", shape, ids);
  rt::Error e = w.write(path);
  ASSERT_FALSE(e) << e.message();
}

std::vector<double> logField(const std::string &path, const std::string &key) {
  std::vector<double> out;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::string line;
  while (std::getline(in, line)) {
    auto v = llvm::json::parse(line);
    if (!v) {
      ADD_FAILURE() << llvm::toString(v.takeError());
      continue;
    }
    const llvm::json::Object *o = v->getAsObject();
    std::optional<double> value = o ? o->getNumber(key) : std::nullopt;
    if (!o || !o->getInteger("step") || !value) {
      ADD_FAILURE() << "a log line without \"step\" or \"" << key << "\": " << line;
      continue;
    }
    out.push_back(*value);
  }
  return out;
}

std::string fileBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

double gradSquaredNorm(const SafetensorsFile &f) {
  double sq = 0;
  for (const TensorInfo &t : f.tensors())
    if (llvm::StringRef(t.name).starts_with("grad."))
      for (float g : readF32(f, t.name))
        sq += double(g) * g;
  return sq;
}

void report(const std::string &what, double value, double bound) {
  std::printf("[ measured ] %-44s %.3g (bound %.3g)\n", what.c_str(), value, bound);
}

} // namespace dsv3::test
