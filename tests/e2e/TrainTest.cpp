//===- TrainTest.cpp - dsv3c train end to end -----------------------------===//
//
// The AdamW trajectory of the Hugging Face reference, bit-for-bit resume,
// learning on the bundled corpus, determinism, and clean failures.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

using namespace dsv3::test;

namespace {

std::string tiny() { return sourcePath("models/tiny/tiny.toml"); }

TEST(Train, ReproducesTheAdamWTrajectory) {
  std::string dir = scratchDir("trajectory");
  RunResult r = runDsv3c(
      "train " + sourcePath("models/tiny") + " --tokens " +
      sourcePath("tests/golden/tiny/reference.safetensors") +
      " --steps 4 --lr 1e-3 --betas 0.9,0.95 --eps 1e-8 --weight-decay 0.1"
      " --mtp-weight 0 --balance-alpha 0 --bias-update 0 --log-json " +
      dir + "/log.jsonl");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto ref = llvm::MemoryBuffer::getFile(
      sourcePath("tests/golden/tiny/adamw_trajectory.json"));
  ASSERT_TRUE(static_cast<bool>(ref));
  auto json = llvm::json::parse((*ref)->getBuffer());
  ASSERT_TRUE(static_cast<bool>(json));
  const llvm::json::Array *want =
      json->getAsObject()->getArray("losses_before_each_step");
  ASSERT_NE(want, nullptr);
  std::vector<double> got = losses(dir + "/log.jsonl");
  ASSERT_EQ(got.size(), want->size());
  for (size_t i = 0; i < got.size(); ++i) {
    double w = *(*want)[i].getAsNumber();
    EXPECT_LE(std::fabs(got[i] - w) / w, 1e-4) << "step " << i + 1;
  }

  // Two micro-batches of the same batch average to the same gradient.
  RunResult accum = runDsv3c(
      "train " + sourcePath("models/tiny") + " --tokens " +
      sourcePath("tests/golden/tiny/reference.safetensors") +
      " --steps 4 --lr 1e-3 --mtp-weight 0 --bias-update 0 --grad-accum 2"
      " --log-json " + dir + "/accum.jsonl");
  ASSERT_EQ(accum.exitCode, 0) << accum.output;
  std::vector<double> acc = losses(dir + "/accum.jsonl");
  ASSERT_EQ(acc.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(acc[i], got[i], 1e-6) << "step " << i + 1;
}

TEST(Train, ResumeIsBitForBitAndLossFalls) {
  std::string dir = scratchDir("resume");
  std::string common = "train " + tiny() +
                       " --steps 8 --warmup-steps 0 --batch 2 --seq 32 --seed 7";
  RunResult full = runDsv3c(common + " --log-json " + dir + "/full.jsonl --save " +
                            dir + "/full");
  ASSERT_EQ(full.exitCode, 0) << full.output;
  // The same run in two halves, through a checkpoint.
  // The first half also runs on one thread: results must not depend on it.
  RunResult first = runDsv3c("train " + tiny() +
                             " --steps 4 --warmup-steps 0 --batch 2 --seq 32 --seed 7"
                             " --num-threads 1"
                             " --log-json " + dir + "/split.jsonl --save " + dir + "/half");
  ASSERT_EQ(first.exitCode, 0) << first.output;
  RunResult second = runDsv3c(common + " --log-json " + dir + "/split.jsonl --resume " +
                              dir + "/half");
  ASSERT_EQ(second.exitCode, 0) << second.output;

  std::vector<double> a = losses(dir + "/full.jsonl"), b = losses(dir + "/split.jsonl");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b) << "a resumed run must see the same batches and state";
  // Learning on the bundled corpus: clearly lower after 8 steps.
  EXPECT_LT(a.back(), a.front() - 1.0);
  // The checkpoint is a hub-layout model dsv3c can evaluate.
  for (const char *f : {"config.json", "model.safetensors", "optimizer.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/full/" + f)) << f;
  EXPECT_TRUE(std::filesystem::exists(dir + "/full.loss.svg"));
  RunResult eval = runDsv3c("eval " + dir + "/full --tokens " +
                            sourcePath("tests/golden/tiny/reference.safetensors") +
                            " -o " + dir + "/eval.safetensors");
  EXPECT_EQ(eval.exitCode, 0) << eval.output;
}

TEST(Train, BF16MomentsAreStoredAsBF16) {
  std::string dir = scratchDir("bf16");
  RunResult r = runDsv3c("train " + tiny() +
                         " --steps 3 --warmup-steps 0 --moments bf16 --log-json " +
                         dir + "/log.jsonl --save " + dir + "/ck");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::vector<double> l = losses(dir + "/log.jsonl");
  ASSERT_EQ(l.size(), 3u);
  EXPECT_LT(l[2], l[0]);
  auto opt = dsv3::SafetensorsFile::open(dir + "/ck/optimizer.safetensors");
  ASSERT_TRUE(static_cast<bool>(opt)) << llvm::toString(opt.takeError());
  for (const char *name : {"exp_avg", "exp_avg_sq"}) {
    const dsv3::TensorInfo *t = (*opt)->lookup(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dsv3::DType::BF16) << name;
  }
}

// A V2-Lite-style architecture stated inline and initialised from a seed:
// the q_proj attention path, no MTP, no shared experts and tied embeddings
// all train, and the checkpoint is a hub model dsv3c evaluates again.
TEST(Train, FromScratchInlineArchitecture) {
  std::string dir = scratchDir("scratch");
  RunResult r = runDsv3c("train " + sourcePath("tests/e2e/Inputs/v2lite.toml") +
                         " --steps 10 --batch 2 --seq 32 --lr 3e-3 --log-json " + dir +
                         "/log.jsonl --save " + dir + "/ck");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::vector<double> l = losses(dir + "/log.jsonl");
  ASSERT_EQ(l.size(), 10u);
  EXPECT_NEAR(l[0], std::log(256.0), 0.3) << "a fresh model guesses uniformly";
  EXPECT_LT(l.back(), l.front() - 1.0);
  writeTokens(dir + "/t.safetensors", {1, 8}, {72, 101, 108, 108, 111, 32, 71, 111});
  RunResult e = runDsv3c("eval " + dir + "/ck --tokens " + dir +
                         "/t.safetensors -o " + dir + "/out.safetensors");
  EXPECT_EQ(e.exitCode, 0) << e.output;
  EXPECT_EQ(e.output.find("mtp_loss"), std::string::npos) << e.output;
}

TEST(Train, BadCheckpointAndCorpusFailCleanly) {
  std::string dir = scratchDir("badtrain");
  std::filesystem::create_directories(dir + "/ck");
  std::filesystem::copy(sourcePath("models/tiny/config.json"), dir + "/ck/config.json");
  RunResult r = runDsv3c("train " + tiny() + " --steps 2 --resume " + dir + "/ck");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;

  std::ofstream(dir + "/short.txt") << "too short";
  r = runDsv3c("train " + tiny() + " --steps 2 --corpus " + dir + "/short.txt");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("short.txt"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("shorter than one sequence"), std::string::npos) << r.output;

  r = runDsv3c("train " + tiny() + " --steps 2 --corpus " + dir + "/missing.txt");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("missing.txt"), std::string::npos) << r.output;

  // --save never replaces a directory that is not a checkpoint.
  std::filesystem::create_directories(dir + "/mine");
  std::ofstream(dir + "/mine/notes.txt") << "keep me";
  r = runDsv3c("train " + tiny() + " --steps 1 --save " + dir + "/mine");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("not a dsv3c checkpoint"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/mine/notes.txt"));

  r = runDsv3c("train " + tiny() + " --betas 0.9");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("--betas"), std::string::npos) << r.output;
}

} // namespace
