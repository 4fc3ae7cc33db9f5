//===- CompileCacheTest.cpp - dsv3c's on-disk compile cache ---------------===//
//
// A second run on the same model and options links the cached object instead
// of compiling (no jit-compile phase in --mlir-timing) and computes the same
// bytes; other options miss; a damaged entry is recompiled, never trusted.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

using namespace dsv3::test;

namespace {

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t countFiles(const std::string &dir, const std::string &ext) {
  size_t n = 0;
  for (auto &e : std::filesystem::directory_iterator(dir))
    n += e.path().extension() == ext;
  return n;
}

TEST(CompileCache, SecondRunLinksTheCachedObject) {
  std::string dir = scratchDir("cache");
  std::string cache = dir + "/cache";
  auto eval = [&](const std::string &out, const std::string &extra) {
    return runDsv3c("eval " + sourcePath("models/tiny") + " --tokens " +
                    sourcePath("tests/golden/tiny/reference.safetensors") +
                    " -o " + dir + "/" + out + " --cache-dir " + cache +
                    " --mlir-timing --mlir-timing-display=list " + extra);
  };
  RunResult cold = eval("cold.safetensors", "");
  ASSERT_EQ(cold.exitCode, 0) << cold.output;
  EXPECT_NE(cold.output.find("jit-compile"), std::string::npos);
  EXPECT_EQ(countFiles(cache, ".o"), 1u);

  RunResult warm = eval("warm.safetensors", "");
  ASSERT_EQ(warm.exitCode, 0) << warm.output;
  EXPECT_EQ(warm.output.find("jit-compile"), std::string::npos) << warm.output;
  EXPECT_EQ(slurp(dir + "/cold.safetensors"), slurp(dir + "/warm.safetensors"));

  // Options that change the code are part of the key.
  RunResult fp8 = eval("fp8.safetensors", "--fp8");
  ASSERT_EQ(fp8.exitCode, 0) << fp8.output;
  EXPECT_NE(fp8.output.find("jit-compile"), std::string::npos);
  EXPECT_EQ(countFiles(cache, ".o"), 2u);

  // A damaged entry is a miss: recompiled, same result.
  for (auto &e : std::filesystem::directory_iterator(cache))
    if (e.path().extension() == ".o")
      std::ofstream(e.path(), std::ios::trunc) << "not an object";
  RunResult damaged = eval("damaged.safetensors", "");
  ASSERT_EQ(damaged.exitCode, 0) << damaged.output;
  EXPECT_NE(damaged.output.find("jit-compile"), std::string::npos);
  EXPECT_EQ(slurp(dir + "/cold.safetensors"), slurp(dir + "/damaged.safetensors"));

  // A manifest whose signatures are damaged is a miss too.
  for (auto &e : std::filesystem::directory_iterator(cache))
    if (e.path().extension() == ".json") {
      std::string text = slurp(e.path().string());
      std::ofstream(e.path(), std::ios::trunc)
          << std::regex_replace(text, std::regex("\"type\":\"i64\""), "\"type\":\"i32\"");
    }
  RunResult badManifest = eval("manifest.safetensors", "");
  ASSERT_EQ(badManifest.exitCode, 0) << badManifest.output;
  EXPECT_NE(badManifest.output.find("jit-compile"), std::string::npos);
  EXPECT_EQ(slurp(dir + "/cold.safetensors"), slurp(dir + "/manifest.safetensors"));

  // --no-cache neither reads nor writes.
  std::string other = dir + "/other";
  RunResult off = runDsv3c("eval " + sourcePath("models/tiny") + " --tokens " +
                           sourcePath("tests/golden/tiny/reference.safetensors") +
                           " -o " + dir + "/off.safetensors --no-cache --cache-dir " + other);
  ASSERT_EQ(off.exitCode, 0) << off.output;
  EXPECT_FALSE(std::filesystem::exists(other));
}

} // namespace
