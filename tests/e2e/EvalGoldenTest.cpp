//===- EvalGoldenTest.cpp - dsv3c eval against the HF reference -----------===//
//
// The bundled tiny model on the reference batch: logits and MTP logits within
// 1e-4 (max abs), losses within 1e-5, and the same experts for every token in
// every MoE layer, as computed by Hugging Face transformers.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

class EvalGolden : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir = new std::string(scratchDir("golden"));
    std::string out = *dir + "/out.safetensors";
    RunResult r = runDsv3c("eval " + sourcePath("models/tiny") + " --tokens " +
                           sourcePath("tests/golden/tiny/reference.safetensors") +
                           " -o " + out);
    ASSERT_EQ(r.exitCode, 0) << r.output;
    output = openOrFail(out);
    reference = openOrFail(sourcePath("tests/golden/tiny/reference.safetensors"));
    log = new std::string(r.output);
  }
  static void TearDownTestSuite() {
    delete output;
    delete reference;
    delete dir;
    delete log;
  }

  void expectClose(const std::string &name, double tolerance) {
    ASSERT_NE(output, nullptr);
    std::vector<float> got = readF32(*output, name), want = readF32(*reference, name);
    ASSERT_EQ(got.size(), want.size()) << name;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    EXPECT_LE(worst, tolerance) << name << " max |error|";
  }

  static std::string *dir, *log;
  static SafetensorsFile *output, *reference;
};
std::string *EvalGolden::dir, *EvalGolden::log;
SafetensorsFile *EvalGolden::output, *EvalGolden::reference;

TEST_F(EvalGolden, Logits) { expectClose("logits", 1e-4); }
TEST_F(EvalGolden, Loss) { expectClose("loss", 1e-5); }
TEST_F(EvalGolden, MTPLogits) { expectClose("mtp_logits", 1e-4); }
TEST_F(EvalGolden, MTPLoss) { expectClose("mtp_loss", 1e-5); }

TEST_F(EvalGolden, RoutingChoices) {
  ASSERT_NE(output, nullptr);
  int layers = 0;
  for (const TensorInfo &t : reference->tensors()) {
    if (llvm::StringRef(t.name).starts_with("topk_ids.")) {
      ++layers;
      const TensorInfo *got = output->lookup(t.name);
      ASSERT_NE(got, nullptr) << t.name;
      ASSERT_EQ(got->shape, t.shape) << t.name;
      std::vector<int64_t> a(t.numElements()), b(t.numElements());
      ASSERT_FALSE(static_cast<bool>(convertToI64(*got, a.data())));
      ASSERT_FALSE(static_cast<bool>(convertToI64(t, b.data())));
      EXPECT_EQ(a, b) << t.name;
    }
  }
  EXPECT_EQ(layers, 2) << "the reference records the two MoE layers of the main model";
}

TEST_F(EvalGolden, PrintsLosses) {
  ASSERT_NE(log, nullptr);
  EXPECT_NE(log->find("loss"), std::string::npos) << *log;
  EXPECT_NE(log->find("perplexity"), std::string::npos) << *log;
}

} // namespace

namespace {

/// A published-layout FP8 checkpoint (E4M3 weights with 128x128
/// weight_scale_inv blocks), dequantised on load: logits of the reference
/// model whose weights are the dequantised checkpoint.
TEST(EvalFP8Checkpoint, DequantisedLogitsMatch) {
  std::string dir = scratchDir("fp8ckpt");
  std::string ref = sourcePath("tests/golden/tiny-fp8/reference-fp8ckpt.safetensors");
  RunResult r = runDsv3c("eval " + sourcePath("tests/golden/tiny-fp8") + " --tokens " +
                         ref + " -o " + dir + "/out.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> out(openOrFail(dir + "/out.safetensors")),
      want(openOrFail(ref));
  ASSERT_TRUE(out && want);
  std::vector<float> a = readF32(*out, "logits"), b = readF32(*want, "logits");
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  EXPECT_LE(worst, 1e-4);
}

} // namespace
