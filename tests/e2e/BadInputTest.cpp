//===- BadInputTest.cpp - dsv3c fails cleanly on bad input ----------------===//
//
// Each case must exit non-zero with exactly one line that names the file and
// the problem: no crash, no stack dump, no output file.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

using namespace dsv3::test;
namespace fs = std::filesystem;

namespace {

/// `output`, when given, is the file the command was asked to write: a
/// failed command must not leave it behind.
void expectCleanFailure(const RunResult &r, const std::string &mention1,
                        const std::string &mention2, const std::string &output = "") {
  ASSERT_FALSE(mention1.empty() || mention2.empty()) << "a mention that always matches";
  EXPECT_NE(r.exitCode, 0) << r.output;
  EXPECT_LT(r.exitCode, 128) << "killed by a signal:\n" << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1)
      << "expected a one-line error, got:\n" << r.output;
  EXPECT_NE(r.output.find(mention1), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(mention2), std::string::npos) << r.output;
  if (!output.empty())
    EXPECT_FALSE(fs::exists(output)) << output << " written by a failed command";
}

/// A model directory: the tiny config with `edit` applied (a JSON text
/// substitution) and a link to the tiny weights.
std::string modelWithConfig(const std::string &name, const std::string &from,
                            const std::string &to) {
  std::string dir = scratchDir(name);
  std::ifstream in(sourcePath("models/tiny/config.json"));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  std::ofstream(dir + "/config.json") << text;
  fs::create_symlink(sourcePath("models/tiny/model.safetensors"),
                     dir + "/model.safetensors");
  return dir;
}

std::string evalArgs(const std::string &model, const std::string &tokens,
                     const std::string &out) {
  return "eval " + model + " --tokens " + tokens + " -o " + out;
}

TEST(BadInput, TokenOutsideVocabulary) {
  std::string dir = scratchDir("vocab");
  writeTokens(dir + "/t.safetensors", {1, 4}, {1, 2, 512, 3});
  RunResult r = runDsv3c(evalArgs(sourcePath("models/tiny"),
                                  dir + "/t.safetensors", dir + "/o.safetensors"));
  expectCleanFailure(r, "t.safetensors", "outside the vocabulary", dir + "/o.safetensors");
}

TEST(BadInput, NegativeToken) {
  std::string dir = scratchDir("negative");
  writeTokens(dir + "/t.safetensors", {1, 3}, {1, -1, 3});
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "outside the vocabulary", dir + "/o");
}

TEST(BadInput, SequenceLongerThanModel) {
  std::string dir = scratchDir("long");
  writeTokens(dir + "/t.safetensors", {1, 300}, std::vector<int64_t>(300, 5));
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "max_position_embeddings", dir + "/o");
}

TEST(BadInput, SequenceTooShortForMTP) {
  std::string dir = scratchDir("short");
  writeTokens(dir + "/t.safetensors", {1, 2}, {5, 6});
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "MTP", dir + "/o");
}

TEST(BadInput, TruncatedTokenFile) {
  std::string dir = scratchDir("truncated");
  writeTokens(dir + "/t.safetensors", {1, 8}, std::vector<int64_t>(8, 1));
  fs::resize_file(dir + "/t.safetensors", fs::file_size(dir + "/t.safetensors") - 20);
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "exceeds the data section", dir + "/o");
}

TEST(BadInput, MissingInputIds) {
  std::string dir = scratchDir("noids");
  dsv3::rt::SafetensorsWriter w;
  w.addI64("tokens", {1, 2}, {1, 2});
  ASSERT_FALSE(static_cast<bool>(w.write(dir + "/t.safetensors")));
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "input_ids", dir + "/o");
}

TEST(BadInput, FloatTokenIds) {
  std::string dir = scratchDir("floatids");
  dsv3::rt::SafetensorsWriter w;
  w.addF32("input_ids", {1, 2}, {1.f, 2.f});
  ASSERT_FALSE(static_cast<bool>(w.write(dir + "/t.safetensors")));
  expectCleanFailure(runDsv3c(evalArgs(sourcePath("models/tiny"),
                                       dir + "/t.safetensors", dir + "/o")),
                     "t.safetensors", "int64", dir + "/o");
}

TEST(BadInput, ConfigKeyOfWrongType) {
  std::string model = modelWithConfig("wrongtype", "\"hidden_size\": 256",
                                      "\"hidden_size\": \"256\"");
  expectCleanFailure(runDsv3c(evalArgs(model, sourcePath("tests/golden/tiny/reference.safetensors"),
                                       model + "/o")),
                     "config.json", "hidden_size", model + "/o");
}

TEST(BadInput, UnsupportedScoringFunction) {
  std::string model = modelWithConfig("softmax", "\"scoring_func\": \"sigmoid\"",
                                      "\"scoring_func\": \"softmax\"");
  expectCleanFailure(runDsv3c(evalArgs(model, sourcePath("tests/golden/tiny/reference.safetensors"),
                                       model + "/o")),
                     "config.json", "scoring_func", model + "/o");
}

TEST(BadInput, CheckpointShapeDisagreesWithConfig) {
  std::string model = modelWithConfig("shape", "\"moe_intermediate_size\": 32",
                                      "\"moe_intermediate_size\": 48");
  expectCleanFailure(runDsv3c(evalArgs(model, sourcePath("tests/golden/tiny/reference.safetensors"),
                                       model + "/o")),
                     "model.safetensors", "shape", model + "/o");
}

TEST(BadInput, CheckpointMissingTensor) {
  std::string model = modelWithConfig("missing", "\"num_hidden_layers\": 3",
                                      "\"num_hidden_layers\": 4");
  expectCleanFailure(runDsv3c(evalArgs(model, sourcePath("tests/golden/tiny/reference.safetensors"),
                                       model + "/o")),
                     "-missing", "missing tensor 'model.layers.4.", model + "/o");
}

TEST(BadInput, ModelTooLargeForThisMachine) {
  RunResult r = runDsv3c("train " + sourcePath("tests/e2e/Inputs/deepseek-v3-671b.toml") +
                         " --steps 1 --batch 1 --seq 4");
  expectCleanFailure(r, "deepseek-v3-671b.toml", "more than this machine's memory");
}

TEST(BadInput, UnknownCommandAndMissingModel) {
  RunResult r = runDsv3c("frobnicate");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("unknown command"), std::string::npos) << r.output;
  expectCleanFailure(runDsv3c("eval --tokens x -o y"), "eval", "MODEL");
}

TEST(BadInput, OptionOfAnotherCommand) {
  expectCleanFailure(runDsv3c("eval " + sourcePath("models/tiny") +
                              " --emit=llvm --tokens x -o y"),
                     "--emit", "compile");
}

} // namespace
