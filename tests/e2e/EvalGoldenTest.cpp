//===- EvalGoldenTest.cpp - dsv3c eval against the HF reference -----------===//
//
// The bundled tiny model on the reference batch: logits and MTP logits within
// 1e-4 (max abs), losses within 1e-5, and the same experts for every token in
// every MoE layer, as computed by Hugging Face transformers; with and without
// the microkernels. The measured errors are printed ("[ measured ]").
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

const SafetensorsFile *goldenReference() {
  static std::unique_ptr<SafetensorsFile> file(
      openOrFail(sourcePath("tests/golden/tiny/reference.safetensors")));
  return file.get();
}

/// Max |error| of `name` against the reference: within the issue's `bound`,
/// and within `ratchet`, about ten times what is measured now, so that a
/// regression shows long before the bound is reached.
void expectClose(const SafetensorsFile *out, const std::string &name, double bound,
                 double ratchet, const std::string &label = "") {
  ASSERT_NE(out, nullptr);
  ASSERT_NE(goldenReference(), nullptr);
  std::vector<float> got = readF32(*out, name), want = readF32(*goldenReference(), name);
  ASSERT_EQ(got.size(), want.size()) << name;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  report(label + name + " max |error|", worst, bound);
  EXPECT_LE(worst, bound) << name << " max |error|";
  EXPECT_LE(worst, ratchet) << name << " max |error| grew past the ratchet";
}

/// The chosen experts of every MoE layer the reference records, exactly.
void expectSameRouting(const SafetensorsFile *output) {
  ASSERT_NE(output, nullptr);
  const SafetensorsFile *reference = goldenReference();
  ASSERT_NE(reference, nullptr);
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
    log = new std::string(r.output);
  }
  static void TearDownTestSuite() {
    delete output;
    delete dir;
    delete log;
  }

  static std::string *dir, *log;
  static SafetensorsFile *output;
};
std::string *EvalGolden::dir, *EvalGolden::log;
SafetensorsFile *EvalGolden::output;

TEST_F(EvalGolden, Logits) { expectClose(output, "logits", 1e-4, 1e-5); }
TEST_F(EvalGolden, Loss) { expectClose(output, "loss", 1e-5, 5e-6); }
TEST_F(EvalGolden, MTPLogits) { expectClose(output, "mtp_logits", 1e-4, 1e-5); }
TEST_F(EvalGolden, MTPLoss) { expectClose(output, "mtp_loss", 1e-5, 5e-6); }

TEST_F(EvalGolden, RoutingChoices) { expectSameRouting(output); }

/// The printed losses are the written ones, and perplexity is exp(loss).
TEST_F(EvalGolden, PrintsLosses) {
  ASSERT_NE(log, nullptr);
  ASSERT_NE(output, nullptr);
  double loss = 0, perplexity = 0, mtpLoss = 0;
  ASSERT_EQ(std::sscanf(log->c_str(), "loss %lf (perplexity %lf)\nmtp_loss %lf", &loss,
                        &perplexity, &mtpLoss),
            3)
      << *log;
  EXPECT_NEAR(loss, readF32(*output, "loss")[0], 1e-6);
  EXPECT_NEAR(mtpLoss, readF32(*output, "mtp_loss")[0], 1e-6);
  EXPECT_NEAR(perplexity, std::exp(loss), 1e-3);
}

/// The same model lowered without the microkernels (linalg all the way):
/// a different code path for every GEMM, attention and the MoE, held to the
/// same reference.
TEST(EvalGoldenNoUkernels, MatchesTheReference) {
  std::string dir = scratchDir("noukernels");
  RunResult r = runDsv3c("eval " + sourcePath("models/tiny") + " --no-ukernels --tokens " +
                         sourcePath("tests/golden/tiny/reference.safetensors") + " -o " +
                         dir + "/out.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> out(openOrFail(dir + "/out.safetensors"));
  expectClose(out.get(), "logits", 1e-4, 1e-5, "--no-ukernels ");
  expectClose(out.get(), "loss", 1e-5, 5e-6, "--no-ukernels ");
  expectClose(out.get(), "mtp_logits", 1e-4, 1e-5, "--no-ukernels ");
  expectSameRouting(out.get());
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
  report("FP8 checkpoint logits max |error|", worst, 1e-4);
  EXPECT_LE(worst, 1e-4);
}

} // namespace
