//===- GradGoldenTest.cpp - dsv3c grad against the HF reference -----------===//
//
// d total_loss / d parameter for every trainable parameter of the tiny model
// (total_loss = loss + 0.3 mtp_loss), against Hugging Face transformers'
// autograd: relative L2 error <= 1e-4 per tensor (absolute 1e-8 where the
// reference norm is below 1e-6), and no gradient for the routing bias.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

class GradGolden : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    std::string out = scratchDir("grad") + "/grad.safetensors";
    RunResult r = runDsv3c("grad " + sourcePath("models/tiny") + " --tokens " +
                           sourcePath("tests/golden/tiny/reference.safetensors") +
                           " -o " + out);
    ASSERT_EQ(r.exitCode, 0) << r.output;
    output = openOrFail(out);
    reference = openOrFail(sourcePath("tests/golden/tiny/reference.safetensors"));
  }
  static void TearDownTestSuite() {
    delete output;
    delete reference;
  }
  static SafetensorsFile *output, *reference;
};
SafetensorsFile *GradGolden::output, *GradGolden::reference;

TEST_F(GradGolden, Losses) {
  ASSERT_NE(output, nullptr);
  for (const char *name : {"loss", "mtp_loss", "total_loss"}) {
    std::vector<float> got = readF32(*output, name), want = readF32(*reference, name);
    ASSERT_EQ(got.size(), 1u) << name;
    EXPECT_NEAR(got[0], want[0], 1e-5) << name;
  }
}

TEST_F(GradGolden, EveryParameterGradient) {
  ASSERT_NE(output, nullptr);
  int checked = 0;
  for (const TensorInfo &t : reference->tensors()) {
    if (!llvm::StringRef(t.name).starts_with("grad."))
      continue;
    ++checked;
    const TensorInfo *g = output->lookup(t.name);
    ASSERT_NE(g, nullptr) << "no " << t.name;
    ASSERT_EQ(g->shape, t.shape) << t.name;
    std::vector<float> got = readF32(*output, t.name), want = readF32(*reference, t.name);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      norm += double(want[i]) * want[i];
    }
    diff = std::sqrt(diff);
    norm = std::sqrt(norm);
    if (norm < 1e-6)
      EXPECT_LE(diff, 1e-8) << t.name << " (absolute)";
    else
      EXPECT_LE(diff / norm, 1e-4) << t.name << " relative L2 error";
  }
  EXPECT_GT(checked, 200);
  for (const TensorInfo &t : output->tensors())
    EXPECT_EQ(llvm::StringRef(t.name).find("e_score_correction_bias"),
              llvm::StringRef::npos)
        << "the routing bias is not trained by gradient: " << t.name;
}

} // namespace
