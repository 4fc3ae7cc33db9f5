//===- ArtifactTest.cpp - ahead-of-time artifacts run by dsv3-run ---------===//
//
// `dsv3c compile --emit=artifact` writes a shared object and its manifest;
// `dsv3-run`, which links no LLVM or MLIR, runs it. Its eval and grad
// outputs and its training trajectory and checkpoint must equal dsv3c's JIT
// path bit for bit on the same machine.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace dsv3::test;

namespace {

RunResult runDsv3Run(const std::string &args) {
  return runCommand(std::string(DSV3RUN_PATH) + " " + args);
}

std::string golden() { return sourcePath("tests/golden/tiny/reference.safetensors"); }

/// Compiles the tiny model (a hub directory, or `model`) for the golden
/// batch (2 x 32) in `mode`.
std::string compileArtifact(const std::string &name, const std::string &mode,
                            const std::string &model = sourcePath("models/tiny")) {
  std::string dir = scratchDir("artifact-" + name);
  RunResult r = runDsv3c("compile " + model + " --mode=" + mode +
                         " --batch 2 --seq 32 --emit=artifact -o " + dir + "/art");
  EXPECT_EQ(r.exitCode, 0) << r.output;
  return dir;
}

/// Every tensor of `a` equals `b`'s, byte for byte (metadata aside).
void expectSameTensors(const std::string &a, const std::string &b) {
  std::unique_ptr<SafetensorsFile> x(openOrFail(a)), y(openOrFail(b));
  ASSERT_TRUE(x && y);
  ASSERT_EQ(x->tensors().size(), y->tensors().size());
  for (const TensorInfo &t : x->tensors()) {
    const TensorInfo *u = y->lookup(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(t.shape, u->shape) << t.name;
    ASSERT_EQ(t.nbytes, u->nbytes) << t.name;
    EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes), 0) << t.name << " differs";
  }
}

TEST(Artifact, EvalAndGradEqualTheJitBitForBit) {
  for (const char *command : {"eval", "grad"}) {
    std::string dir = compileArtifact(command, command);
    RunResult run = runDsv3Run(dir + "/art " + command + " --weights " + sourcePath("models/tiny") +
                               " --tokens " + golden() + " -o " + dir + "/aot.safetensors");
    ASSERT_EQ(run.exitCode, 0) << run.output;
    RunResult jit = runDsv3c(std::string(command) + " " + sourcePath("models/tiny") +
                             " --tokens " + golden() + " -o " + dir + "/jit.safetensors");
    ASSERT_EQ(jit.exitCode, 0) << jit.output;
    EXPECT_EQ(run.output, jit.output) << "the printed losses";
    expectSameTensors(dir + "/aot.safetensors", dir + "/jit.safetensors");
  }
}

TEST(Artifact, TrainingEqualsTheJitBitForBit) {
  std::string dir = compileArtifact("train", "train-step");
  std::string flags = " --tokens " + golden() +
                      " --steps 3 --lr 1e-3 --grad-clip 1.0 --bias-update 1e-3 --seed 5";
  RunResult run = runDsv3Run(dir + "/art train --weights " + sourcePath("models/tiny") + flags +
                             " --log-json " + dir + "/aot.jsonl --save " + dir + "/aot");
  ASSERT_EQ(run.exitCode, 0) << run.output;
  RunResult jit = runDsv3c("train " + sourcePath("models/tiny") + flags + " --log-json " + dir +
                           "/jit.jsonl --save " + dir + "/jit");
  ASSERT_EQ(jit.exitCode, 0) << jit.output;
  std::vector<double> a = losses(dir + "/aot.jsonl"), b = losses(dir + "/jit.jsonl");
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(logField(dir + "/aot.jsonl", "grad_norm"), logField(dir + "/jit.jsonl", "grad_norm"));
  for (const char *f : {"config.json", "model.safetensors", "optimizer.safetensors"})
    EXPECT_EQ(fileBytes(dir + "/aot/" + f), fileBytes(dir + "/jit/" + f)) << f;
}

// A .toml description's [train] recipe (warm-up, clipping, the balance
// loss weight) travels in the artifact: dsv3-run without flags trains as
// dsv3c train on the .toml does.
TEST(Artifact, TrainingFollowsTheRecordedRecipe) {
  std::string toml = sourcePath("models/tiny/tiny.toml");
  std::string dir = compileArtifact("recipe", "train-step", toml);
  std::string manifest = fileBytes(dir + "/art/manifest.json");
  EXPECT_NE(manifest.find("\"warmup_steps\":10"), std::string::npos) << manifest;
  std::string flags = " --tokens " + golden() + " --steps 3";
  RunResult run = runDsv3Run(dir + "/art train --weights " + sourcePath("models/tiny") + flags +
                             " --log-json " + dir + "/aot.jsonl");
  ASSERT_EQ(run.exitCode, 0) << run.output;
  RunResult jit = runDsv3c("train " + toml + flags + " --log-json " + dir + "/jit.jsonl");
  ASSERT_EQ(jit.exitCode, 0) << jit.output;
  ASSERT_EQ(losses(dir + "/aot.jsonl").size(), 3u);
  EXPECT_EQ(losses(dir + "/aot.jsonl"), losses(dir + "/jit.jsonl"));
  // The warm-up of the recipe: lr = 1e-3 * step / 10.
  std::vector<double> lr = logField(dir + "/aot.jsonl", "lr");
  ASSERT_EQ(lr.size(), 3u);
  for (int step = 1; step <= 3; ++step)
    EXPECT_DOUBLE_EQ(lr[step - 1], 1e-3 * step / 10) << "step " << step;
  EXPECT_EQ(logField(dir + "/aot.jsonl", "total_loss"), logField(dir + "/jit.jsonl", "total_loss"));
  // Flags still win over the recorded recipe.
  RunResult flat = runDsv3Run(dir + "/art train --weights " + sourcePath("models/tiny") + flags +
                              " --warmup-steps 0 --log-json " + dir + "/flat.jsonl");
  ASSERT_EQ(flat.exitCode, 0) << flat.output;
  EXPECT_EQ(logField(dir + "/flat.jsonl", "lr"), (std::vector<double>{1e-3, 1e-3, 1e-3}));
}

TEST(Artifact, RunnerLinksNoLLVMOrMLIR) {
  RunResult r = runCommand("ldd " + std::string(DSV3RUN_PATH));
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_NE(r.output.find("libtbb"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("LLVM"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("MLIR"), std::string::npos) << r.output;
  // Nor statically: no LLVM or MLIR symbol in the binary.
  RunResult symbols = runCommand("nm -C " + std::string(DSV3RUN_PATH) +
                                 " | grep -c -E 'llvm::|mlir::' || true");
  EXPECT_EQ(symbols.output, "0\n") << symbols.output;
}

TEST(Artifact, BadUseFailsWithOneLine) {
  std::string dir = scratchDir("artifact-bad");
  RunResult missing = runDsv3Run(dir + "/none eval --weights " + sourcePath("models/tiny") +
                                 " --tokens " + golden() + " -o " + dir + "/o");
  EXPECT_NE(missing.exitCode, 0);
  EXPECT_NE(missing.output.find("manifest.json"), std::string::npos) << missing.output;
  EXPECT_EQ(std::count(missing.output.begin(), missing.output.end(), '\n'), 1) << missing.output;

  std::string art = compileArtifact("mode", "grad") + "/art";
  RunResult mode = runDsv3Run(art + " train --weights " + sourcePath("models/tiny") +
                              " --tokens " + golden());
  EXPECT_NE(mode.exitCode, 0);
  EXPECT_NE(mode.output.find("--mode=train-step"), std::string::npos) << mode.output;
  writeTokens(dir + "/short.safetensors", {1, 8}, std::vector<int64_t>(8, 1));
  RunResult shape = runDsv3Run(art + " grad --weights " + sourcePath("models/tiny") +
                               " --tokens " + dir + "/short.safetensors -o " + dir + "/o");
  EXPECT_NE(shape.exitCode, 0);
  EXPECT_NE(shape.output.find("compiled for 2x32"), std::string::npos) << shape.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/o"));

  // A manifest whose entry point no longer reads token ids.
  std::string manifest = fileBytes(art + "/manifest.json");
  std::string ids = "{\"name\":\"input_ids\",\"shape\":[2,32],\"type\":\"i64\"}";
  size_t at = manifest.find(ids);
  ASSERT_NE(at, std::string::npos) << manifest.substr(0, 2000);
  manifest.replace(at, ids.size(), "{\"name\":\"input_ids\",\"shape\":[2,32],\"type\":\"f32\"}");
  std::ofstream(art + "/manifest.json", std::ios::trunc) << manifest;
  RunResult damaged = runDsv3Run(art + " grad --weights " + sourcePath("models/tiny") +
                                 " --tokens " + golden() + " -o " + dir + "/o");
  EXPECT_NE(damaged.exitCode, 0);
  EXPECT_LT(damaged.exitCode, 128) << damaged.output;
  EXPECT_NE(damaged.output.find("manifest.json: entry point 'forward_grad' does not read "
                                "token ids [batch, seq]"),
            std::string::npos)
      << damaged.output;

  // compile -o never replaces a directory that is not an artifact.
  std::filesystem::create_directories(dir + "/mine");
  std::ofstream(dir + "/mine/notes.txt") << "keep me";
  RunResult replace = runDsv3c("compile " + sourcePath("models/tiny") +
                               " --emit=artifact -o " + dir + "/mine");
  EXPECT_NE(replace.exitCode, 0);
  EXPECT_NE(replace.output.find("is not a dsv3c artifact"), std::string::npos) << replace.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/mine/notes.txt"));
}

} // namespace
