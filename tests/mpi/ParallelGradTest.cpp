//===- ParallelGradTest.cpp - dsv3c under mpirun equals one process -------===//
//
// `mpirun -np R dsv3c grad MODEL --tokens T -o OUT --dp D --ep E` must write
// the tensors (names, dtypes, shapes) of the one-process `dsv3c grad`, with
// every float tensor within 1e-5 relative L2 and the chosen experts equal,
// on the golden tiny model and batch under --ep 2, --ep 4, --dp 2 and
// --dp 2 --ep 2, and on a second model of our own (models/tiny-ep, 8
// experts of 2 groups) whose MTP block's 62 tokens do not split evenly over
// 4 expert ranks. Also: plans that do not fit are one-line errors on every
// rank before any work.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

/// `mpirun ... dsv3c `, with what Open MPI needs in a container and as
/// root (CI): no ptrace-based single copy, oversubscription.
std::string mpirun(int ranks) {
  return std::string("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                     "OMPI_MCA_btl_vader_single_copy_mechanism=none ") +
         MPIRUN_PATH + " --oversubscribe -np " + std::to_string(ranks) + " " + DSV3C_PATH + " ";
}

/// Relative L2 error of `got` against `want` (exact when `want` is 0).
double relativeError(const std::vector<float> &got, const std::vector<float> &want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  if (norm == 0)
    return diff == 0 ? 0 : INFINITY;
  return std::sqrt(diff / norm);
}

/// Every tensor of `want` is in `got` with the same dtype and shape and
/// close values, and `got` has nothing else.
void expectSameOutputs(const std::string &gotPath, const std::string &wantPath,
                       const std::string &plan) {
  SafetensorsFile *got = openOrFail(gotPath), *want = openOrFail(wantPath);
  ASSERT_TRUE(got && want);
  EXPECT_EQ(got->tensors().size(), want->tensors().size()) << plan;
  double worst = 0;
  std::string worstName;
  int bitwise = 0;
  for (const TensorInfo &w : want->tensors()) {
    const TensorInfo *g = got->lookup(w.name);
    ASSERT_NE(g, nullptr) << plan << ": missing " << w.name;
    ASSERT_EQ(g->dtype, w.dtype) << plan << ": " << w.name;
    ASSERT_EQ(g->shape, w.shape) << plan << ": " << w.name;
    if (g->nbytes == w.nbytes && std::memcmp(g->data, w.data, w.nbytes) == 0) {
      ++bitwise;
      continue;
    }
    ASSERT_EQ(w.dtype, DType::F32) << plan << ": " << w.name << " (integers) differ";
    double err = relativeError(readF32(*got, w.name), readF32(*want, w.name));
    EXPECT_LE(err, 1e-5) << plan << ": " << w.name;
    if (err > worst) {
      worst = err;
      worstName = w.name;
    }
  }
  std::printf("%-16s %zu tensors, %d bitwise, worst relative L2 %.2e %s\n", plan.c_str(),
              want->tensors().size(), bitwise, worst, worstName.c_str());
  delete got;
  delete want;
}

struct Case {
  const char *model, *tokens;
  int dp, ep;
};

/// "Tiny_dp2_ep2", "TinyEp_dp1_ep4": the test's name for a case.
std::string caseName(const ::testing::TestParamInfo<Case> &info) {
  std::string name =
      std::string(info.param.model).find("tiny-ep") != std::string::npos ? "TinyEp" : "Tiny";
  return name + "_dp" + std::to_string(info.param.dp) + "_ep" + std::to_string(info.param.ep);
}

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.model << " --dp " << c.dp << " --ep " << c.ep;
}

class ParallelGrad : public ::testing::TestWithParam<Case> {
protected:
  /// The one-process output for `model`, computed once per model.
  static std::string single(const Case &c) {
    std::string out = scratchDir(std::string("single-") + c.model) + "/grad.safetensors";
    RunResult r = runDsv3c(std::string("grad ") + sourcePath(c.model) + " --tokens " +
                           sourcePath(c.tokens) + " -o " + out);
    EXPECT_EQ(r.exitCode, 0) << r.output;
    return out;
  }
};

TEST_P(ParallelGrad, EqualsOneProcess) {
  const Case &c = GetParam();
  std::string want = single(c);
  std::string plan = "--dp " + std::to_string(c.dp) + " --ep " + std::to_string(c.ep);
  std::string out = scratchDir("parallel") + "/grad.safetensors";
  RunResult r = runCommand(mpirun(c.dp * c.ep) + "grad " + sourcePath(c.model) + " --tokens " +
                           sourcePath(c.tokens) + " -o " + out + " " + plan);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  expectSameOutputs(out, want, std::string(c.model).substr(7) + " " + plan);
}

INSTANTIATE_TEST_SUITE_P(
    Plans, ParallelGrad,
    ::testing::Values(Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 1, 2},
                      Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 1, 4},
                      Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 2, 1},
                      Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 2, 2},
                      Case{"models/tiny-ep/model.toml", "tests/golden/tiny/reference.safetensors",
                           1, 4}),
    caseName);

/// `train` for 4 steps under a plan follows the one-process trajectory:
/// every step's losses and gradient norm within 1e-5 relative (AdamW,
/// clipping, MTP and routing-bias updates on, from global loads).
class ParallelTrain : public ::testing::TestWithParam<Case> {};

TEST_P(ParallelTrain, FollowsOneProcess) {
  const Case &c = GetParam();
  std::string dir = scratchDir("train");
  std::string args = std::string("train ") + sourcePath(c.model) + " --tokens " +
                     sourcePath(c.tokens) + " --steps 4 --log-json ";
  RunResult one = runDsv3c(args + dir + "/one.jsonl");
  ASSERT_EQ(one.exitCode, 0) << one.output;
  RunResult job = runCommand(mpirun(c.dp * c.ep) + args + dir + "/job.jsonl --dp " +
                             std::to_string(c.dp) + " --ep " + std::to_string(c.ep));
  ASSERT_EQ(job.exitCode, 0) << job.output;
  for (const char *key : {"loss", "mtp_loss", "total_loss", "grad_norm", "load_imbalance"}) {
    std::vector<double> want = logField(dir + "/one.jsonl", key),
                        got = logField(dir + "/job.jsonl", key);
    ASSERT_EQ(want.size(), 4u) << key;
    ASSERT_EQ(got.size(), 4u) << key;
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      double rel = std::abs(got[i] - want[i]) / std::max(std::abs(want[i]), 1e-12);
      EXPECT_LE(rel, 1e-5) << key << " at step " << i + 1;
      worst = std::max(worst, rel);
    }
    std::printf("--dp %d --ep %d %-14s worst relative difference over 4 steps %.1e\n", c.dp,
                c.ep, key, worst);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Plans, ParallelTrain,
    ::testing::Values(Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 2, 2},
                      Case{"models/tiny-ep/model.toml", "tests/golden/tiny/reference.safetensors",
                           1, 2}),
    caseName);

/// A plan that does not fit is refused by every rank before any work.
TEST(ParallelPlan, MisfitsAreOneLineErrorsOnEveryRank) {
  std::string model = sourcePath("models/tiny"),
              tokens = sourcePath("tests/golden/tiny/reference.safetensors");
  struct Misfit {
    int ranks;
    std::string flags, message;
  } misfits[] = {
      {2, "--ep 3", "expert parallelism 3 does not divide the model's 16 routed experts"},
      {2, "--ep 2 --dp 2", "needs 4 ranks but the job has 2"},
      {3, "--dp 3", "a batch of 2 sequences does not split over 3 data-parallel replicas"},
      {2, "--pp 2", "needs the pipeline schedule"},
  };
  for (const Misfit &m : misfits) {
    RunResult r = runCommand(mpirun(m.ranks) + "grad " + model + " --tokens " + tokens +
                             " -o " + scratchDir("misfit") + "/out.safetensors " + m.flags);
    EXPECT_NE(r.exitCode, 0) << m.flags;
    for (int rank = 0; rank < m.ranks; ++rank)
      EXPECT_NE(r.output.find("rank " + std::to_string(rank) + ": "), std::string::npos)
          << m.flags << "\n"
          << r.output;
    EXPECT_NE(r.output.find(m.message), std::string::npos) << m.flags << "\n" << r.output;
  }
  // Without a launcher the plan's size is named with the command to run.
  RunResult r = runDsv3c("grad " + model + " --tokens " + tokens + " -o " +
                         scratchDir("misfit") + "/out.safetensors --ep 2");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.output.find("launch with mpirun -np 2"), std::string::npos) << r.output;
}

} // namespace
