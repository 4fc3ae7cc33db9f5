//===- ParallelGradTest.cpp - dsv3c under mpirun equals one process -------===//
//
// `mpirun -np R dsv3c grad MODEL --tokens T -o OUT --dp D --ep E` must write
// the tensors (names, dtypes, shapes) of the one-process `dsv3c grad`, with
// every float tensor within 1e-5 relative L2 and the chosen experts equal,
// on the golden tiny model and batch under --ep 2, --ep 4, --dp 2 and
// --dp 2 --ep 2, and on a second model of our own (models/tiny-ep, 8
// experts of 2 groups) whose MTP block's 62 tokens do not split evenly over
// 4 expert ranks. `train` follows the one-process trajectory (ZeRO-1 over
// the data-parallel ranks); checkpoints saved under one plan equal the
// one-process checkpoint and resume under another. Also: plans that do not
// fit are one-line errors on every rank before any work.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

using namespace dsv3;
using namespace dsv3::test;
using dsv3::rt::WeightStore;

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

/// Which of the one-process outputs a run must write.
enum class Expected { Everything, LossesAndGradients };

/// Every tensor of `want` (or its losses and gradients only) is in `got`
/// with the same dtype and shape and close values, and `got` has nothing
/// else.
void expectSameOutputs(const std::string &gotPath, const std::string &wantPath,
                       const std::string &plan, Expected expected = Expected::Everything) {
  SafetensorsFile *got = openOrFail(gotPath), *want = openOrFail(wantPath);
  ASSERT_TRUE(got && want);
  auto wanted = [&](const TensorInfo &w) {
    return expected == Expected::Everything || w.name.rfind("grad.", 0) == 0 ||
           w.name.find("loss") != std::string::npos;
  };
  EXPECT_EQ(got->tensors().size(),
            std::count_if(want->tensors().begin(), want->tensors().end(), wanted))
      << plan;
  double worst = 0;
  std::string worstName;
  int bitwise = 0;
  for (const TensorInfo &w : want->tensors()) {
    if (!wanted(w))
      continue;
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

/// `mpirun -np R dsv3c grad MODEL --tokens T -o OUT --pp P --schedule S
/// --micro-batches N` over 8 sequences equals the one-process `grad` of the
/// same 8 sequences: the losses and every parameter gradient (what a
/// pipelined step returns; logits and expert choices stay on the ranks of
/// their stage) within 1e-5 relative L2. Each pipeline rank runs its
/// program of the schedule, hidden states and their gradients travel as
/// MPI messages, DualPipe's two copies of a stage add their gradients.
struct PipelineCase {
  const char *schedule;
  int pp, dp, ep, microBatches;
  const char *model = "models/tiny";
  /// More flags ("--fuse-pairs=false": each F&B pair's chunks one after
  /// the other instead of one fused function).
  const char *flags = "";
};

std::string pipelineCaseName(const ::testing::TestParamInfo<PipelineCase> &info) {
  const PipelineCase &c = info.param;
  bool deep = std::string(c.model).find("tiny-deep") != std::string::npos;
  return std::string(deep ? "deep_" : "") + c.schedule + "_pp" + std::to_string(c.pp) + "_dp" +
         std::to_string(c.dp) + "_ep" + std::to_string(c.ep) +
         (std::string(c.flags).find("--fuse-pairs=false") != std::string::npos ? "_unfused" : "");
}

void PrintTo(const PipelineCase &c, std::ostream *os) {
  *os << c.model << " --schedule " << c.schedule << " --pp " << c.pp << " --dp " << c.dp
      << " --ep " << c.ep << " --micro-batches " << c.microBatches << " " << c.flags;
}

/// 8 sequences of 16 of the tiny model's vocabulary (an LCG), written once
/// per test process; enough rows for 8 pipeline micro-batches.
const std::string &eightSequences() {
  static const std::string path = [] {
    std::string p = scratchDir("pipeline-tokens") + "/tokens.safetensors";
    std::vector<int64_t> ids;
    uint64_t x = 12345;
    for (int i = 0; i < 8 * 16; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      ids.push_back(static_cast<int64_t>((x >> 33) % 512));
    }
    writeTokens(p, {8, 16}, ids);
    return p;
  }();
  return path;
}

class PipelineGrad : public ::testing::TestWithParam<PipelineCase> {
protected:
  /// The one-process outputs of `model` over the 8 sequences.
  static std::string single(const std::string &model) {
    std::string out = scratchDir("pipeline-single") + "/grad.safetensors";
    RunResult r = runDsv3c("grad " + sourcePath(model) + " --tokens " + eightSequences() +
                           " -o " + out);
    EXPECT_EQ(r.exitCode, 0) << r.output;
    return out;
  }
};

TEST_P(PipelineGrad, EqualsOneProcess) {
  const PipelineCase &c = GetParam();
  std::string want = single(c.model);
  std::string plan = "--pp " + std::to_string(c.pp) + " --dp " + std::to_string(c.dp) +
                     " --ep " + std::to_string(c.ep) + " --schedule " + c.schedule +
                     " --micro-batches " + std::to_string(c.microBatches) + " " + c.flags;
  std::string out = scratchDir("pipeline") + "/grad.safetensors";
  RunResult r = runCommand(mpirun(c.pp * c.dp * c.ep) + "grad " + sourcePath(c.model) +
                           " --tokens " + eightSequences() + " -o " + out + " " + plan);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  expectSameOutputs(out, want, plan, Expected::LossesAndGradients);
}

// tiny-deep has 8 pipeline units (7 layers and the MTP block): DualPipeV
// over 4 ranks runs 8 stages, each rank holding stages r and 7 - r.
INSTANTIATE_TEST_SUITE_P(
    Schedules, PipelineGrad,
    ::testing::Values(PipelineCase{"dualpipev", 2, 1, 1, 8}, PipelineCase{"dualpipe", 2, 1, 2, 8},
                      PipelineCase{"dualpipe", 2, 1, 2, 8, "models/tiny", "--fuse-pairs=false"},
                      PipelineCase{"zb1p", 2, 2, 1, 4},
                      PipelineCase{"dualpipev", 4, 1, 1, 8, "models/tiny-deep/model.toml"}),
    pipelineCaseName);

/// The exchanges without dsv3-comm-overlap (each blocks where it stands)
/// under the link model give the same gradients, and the report counts
/// every rank's 15 all-to-alls (3 MoE layers: counts, dispatch and combine
/// forward, the two row exchanges backward), each in flight at least the
/// modeled 5 us of latency.
TEST(ParallelExchanges, BlockingUnderTheLinkModel) {
  std::string tokens = sourcePath("tests/golden/tiny/reference.safetensors");
  std::string want = scratchDir("exchanges-single") + "/grad.safetensors";
  RunResult one = runDsv3c("grad " + sourcePath("models/tiny") + " --tokens " + tokens + " -o " +
                           want);
  ASSERT_EQ(one.exitCode, 0) << one.output;
  std::string out = scratchDir("exchanges") + "/grad.safetensors";
  RunResult r = runCommand(mpirun(2) + "grad " + sourcePath("models/tiny") + " --tokens " +
                           tokens + " -o " + out +
                           " --ep 2 --comm-overlap=false --link-model bw=50,lat=5");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  expectSameOutputs(out, want, "--ep 2 --comm-overlap=false");
  EXPECT_NE(r.output.find("(under the link model)"), std::string::npos) << r.output;
  for (int rank = 0; rank < 2; ++rank) {
    std::string key = "rank " + std::to_string(rank) + ": ";
    size_t at = r.output.find(key);
    ASSERT_NE(at, std::string::npos) << r.output;
    int count = 0;
    double flight = 0, exposed = 0;
    ASSERT_EQ(std::sscanf(r.output.c_str() + at + key.size(),
                          "%d all-to-alls, %lf ms in flight, %lf ms exposed", &count, &flight,
                          &exposed),
              3)
        << r.output;
    EXPECT_EQ(count, 15) << key;
    EXPECT_GE(flight, 15 * 5e-3) << key << "ms: each exchange lasts the modeled latency";
    EXPECT_LE(exposed, flight + 1e-3) << key;
  }
}

/// Two training logs of 4 steps agree: every step's losses, gradient norm
/// and expert-load imbalance within 1e-5 relative.
void expectSameTrajectory(const std::string &got, const std::string &want,
                          const std::string &plan) {
  for (const char *key : {"loss", "mtp_loss", "total_loss", "grad_norm", "load_imbalance"}) {
    std::vector<double> w = logField(want, key), g = logField(got, key);
    ASSERT_EQ(w.size(), 4u) << key;
    ASSERT_EQ(g.size(), 4u) << plan << " " << key;
    double worst = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      double rel = std::abs(g[i] - w[i]) / std::max(std::abs(w[i]), 1e-12);
      EXPECT_LE(rel, 1e-5) << plan << " " << key << " at step " << i + 1;
      worst = std::max(worst, rel);
    }
    std::printf("%s %-14s worst relative difference over 4 steps %.1e\n", plan.c_str(), key,
                worst);
  }
}

/// `train` for 4 steps under a plan follows the one-process trajectory
/// (AdamW, clipping, MTP and routing-bias updates on, from global loads).
class ParallelTrain : public ::testing::TestWithParam<Case> {};

TEST_P(ParallelTrain, FollowsOneProcess) {
  const Case &c = GetParam();
  std::string dir = scratchDir("train");
  std::string args = std::string("train ") + sourcePath(c.model) + " --tokens " +
                     sourcePath(c.tokens) + " --steps 4 --log-json ";
  RunResult one = runDsv3c(args + dir + "/one.jsonl");
  ASSERT_EQ(one.exitCode, 0) << one.output;
  std::string plan = "--dp " + std::to_string(c.dp) + " --ep " + std::to_string(c.ep);
  RunResult job = runCommand(mpirun(c.dp * c.ep) + args + dir + "/job.jsonl " + plan);
  ASSERT_EQ(job.exitCode, 0) << job.output;
  expectSameTrajectory(dir + "/job.jsonl", dir + "/one.jsonl", plan);
}

INSTANTIATE_TEST_SUITE_P(
    Plans, ParallelTrain,
    ::testing::Values(Case{"models/tiny", "tests/golden/tiny/reference.safetensors", 2, 2},
                      Case{"models/tiny-ep/model.toml", "tests/golden/tiny/reference.safetensors",
                           1, 2}),
    caseName);

/// Every tensor of the checkpoint `want` (model and moments) is in `got`,
/// saved under another plan, with close values, and nothing else is.
/// Close is 1e-4 relative L2 per tensor, not the gradients' 1e-5: AdamW's
/// first steps move a parameter by about lr * sign(g), so an element whose
/// gradient is near zero turns the gradients' summation-order differences
/// into a whole step (a misplaced expert or moment is off by O(1)).
void expectSameCheckpoint(const std::string &got, const std::string &want,
                          const std::string &plan) {
  for (const char *part : {"", "/optimizer.safetensors"}) {
    std::string g = got + part, w = want + part;
    if (*part && std::filesystem::exists(got + "/optimizer.safetensors.index.json"))
      g = got + "/optimizer.safetensors.index.json";
    auto gs = WeightStore::open(g), ws = WeightStore::open(w);
    ASSERT_TRUE(static_cast<bool>(gs)) << gs.error().message();
    ASSERT_TRUE(static_cast<bool>(ws)) << ws.error().message();
    EXPECT_EQ((*gs)->names(), (*ws)->names()) << plan << part;
    double worst = 0;
    for (const std::string &name : (*ws)->names()) {
      const TensorInfo *a = (*gs)->lookup(name), *b = (*ws)->lookup(name);
      ASSERT_NE(a, nullptr) << plan << ": missing " << name;
      ASSERT_EQ(a->dtype, DType::F32) << name;
      ASSERT_EQ(a->shape, b->shape) << name;
      std::vector<float> x(a->numElements()), y(b->numElements());
      std::memcpy(x.data(), a->data, a->nbytes);
      std::memcpy(y.data(), b->data, b->nbytes);
      double err = relativeError(x, y);
      EXPECT_LE(err, 1e-4) << plan << ": " << name;
      worst = std::max(worst, err);
    }
    std::printf("%s checkpoint%s: %zu tensors, worst relative L2 %.2e\n", plan.c_str(), part,
                (*ws)->names().size(), worst);
  }
}

/// `train --pp 2 --schedule dualpipev --micro-batches 8` over the 8
/// sequences follows the one-process trajectory for 4 steps, and its
/// checkpoint is the one-process checkpoint: each pipeline rank sums its
/// stages' gradients, loss parts and expert loads with the others', then
/// every rank applies the same update.
TEST(PipelineTrain, FollowsOneProcessAndSaves) {
  std::string dir = scratchDir("pipeline-train");
  std::string args = "train " + sourcePath("models/tiny") + " --tokens " + eightSequences() +
                     " --steps 4 --log-json ";
  RunResult one = runDsv3c(args + dir + "/one.jsonl --save " + dir + "/one");
  ASSERT_EQ(one.exitCode, 0) << one.output;
  std::string plan = "--pp 2 --schedule dualpipev --micro-batches 8";
  RunResult job =
      runCommand(mpirun(2) + args + dir + "/job.jsonl --save " + dir + "/job " + plan);
  ASSERT_EQ(job.exitCode, 0) << job.output;
  expectSameTrajectory(dir + "/job.jsonl", dir + "/one.jsonl", plan);
  expectSameCheckpoint(dir + "/job", dir + "/one", plan);
}

/// A checkpoint saved under one plan is the one-process checkpoint (hub
/// shards, one per expert rank, with their indices), and training resumed
/// from it under another plan, or in one process, follows the
/// uninterrupted one-process trajectory.
TEST(ParallelCheckpoint, MovesAcrossPlans) {
  struct Move {
    const char *model;
    int dp, ep;     // saved under
    int toDp, toEp; // resumed under (1, 1: one process)
  } moves[] = {{"models/tiny-ep/model.toml", 1, 2, 1, 1}, {"models/tiny", 2, 2, 2, 1}};
  std::string tokens = sourcePath("tests/golden/tiny/reference.safetensors");
  for (const Move &m : moves) {
    std::string dir = scratchDir("checkpoint");
    std::string plan = std::string(m.model).substr(7) + " --dp " + std::to_string(m.dp) +
                       " --ep " + std::to_string(m.ep);
    std::string args = std::string("train ") + sourcePath(m.model) + " --tokens " + tokens;
    RunResult one = runDsv3c(args + " --steps 4 --log-json " + dir + "/one.jsonl");
    ASSERT_EQ(one.exitCode, 0) << one.output;
    RunResult half = runDsv3c(args + " --steps 2 --save " + dir + "/one-2");
    ASSERT_EQ(half.exitCode, 0) << half.output;
    RunResult saved = runCommand(mpirun(m.dp * m.ep) + args + " --steps 2 --save " + dir +
                                 "/job-2 --dp " + std::to_string(m.dp) + " --ep " +
                                 std::to_string(m.ep));
    ASSERT_EQ(saved.exitCode, 0) << saved.output;
    std::vector<std::string> files;
    for (const auto &entry : std::filesystem::directory_iterator(dir + "/job-2"))
      files.push_back(entry.path().filename().string());
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files, (std::vector<std::string>{
                         "config.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                         "optimizer-00001-of-00002.safetensors",
                         "optimizer-00002-of-00002.safetensors",
                         "optimizer.safetensors.index.json"}))
        << plan;
    for (const auto &entry : std::filesystem::directory_iterator(dir))
      EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
          << "left behind: " << entry.path();
    expectSameCheckpoint(dir + "/job-2", dir + "/one-2", plan);

    std::string resume = args + " --steps 4 --resume " + dir + "/job-2 --log-json " + dir +
                         "/resumed.jsonl";
    RunResult resumed =
        m.toDp * m.toEp == 1
            ? runDsv3c(resume)
            : runCommand(mpirun(m.toDp * m.toEp) + resume + " --dp " + std::to_string(m.toDp) +
                         " --ep " + std::to_string(m.toEp));
    ASSERT_EQ(resumed.exitCode, 0) << resumed.output;
    std::vector<double> want = losses(dir + "/one.jsonl"), got = losses(dir + "/resumed.jsonl");
    ASSERT_EQ(want.size(), 4u);
    ASSERT_EQ(got.size(), 2u) << "steps 3 and 4";
    for (size_t i = 0; i < 2; ++i)
      EXPECT_NEAR(got[i], want[i + 2], 1e-5 * std::abs(want[i + 2]))
          << plan << " resumed under --dp " << m.toDp << " --ep " << m.toEp << ", step "
          << i + 3;
    std::printf("%s saved, resumed under --dp %d --ep %d: steps 3-4 losses %.6f %.6f "
                "(one process %.6f %.6f)\n",
                plan.c_str(), m.toDp, m.toEp, got[0], got[1], want[2], want[3]);
  }
}

/// --trace writes one Chrome/Perfetto trace for the job: a process per
/// rank with a compute lane (a forward_grad and an optimizer step per
/// step) and a communication lane (the exchanges of the compiled step and
/// the gradient reduction); --log-json adds each rank's metrics, whose
/// all-to-all bytes are symmetric across the two expert ranks' exchanges.
TEST(ParallelObservability, TraceAndMetricsPerRank) {
  std::string dir = scratchDir("observe");
  RunResult r = runCommand(mpirun(2) + "train " + sourcePath("models/tiny-ep/model.toml") +
                           " --tokens " + sourcePath("tests/golden/tiny/reference.safetensors") +
                           " --steps 2 --ep 2 --log-json " + dir + "/log.jsonl --trace " + dir +
                           "/trace.json");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::ifstream in(dir + "/trace.json");
  nlohmann::json trace = nlohmann::json::parse(in, nullptr, /*exceptions=*/false);
  ASSERT_TRUE(trace.is_object() && trace["traceEvents"].is_array()) << "not a trace";
  std::map<std::pair<int, int>, std::map<std::string, int>> spans; // (rank, lane) -> name -> n
  for (const nlohmann::json &e : trace["traceEvents"])
    if (e["ph"] == "X") {
      EXPECT_GE(e["dur"].get<double>(), 0.0);
      ++spans[{e["pid"].get<int>(), e["tid"].get<int>()}][e["name"].get<std::string>()];
    }
  for (int rank : {0, 1}) {
    EXPECT_EQ((spans[{rank, 0}]["forward_grad"]), 2) << rank;
    EXPECT_EQ((spans[{rank, 0}]["optimizer_step"]), 2) << rank;
    // 3 MoE layers x (counts, rows, results forward; rows, results backward).
    EXPECT_EQ((spans[{rank, 1}]["all-to-all"]), 2 * 3 * 5) << rank;
    EXPECT_GT((spans[{rank, 1}]["all-reduce"]), 0) << rank;
  }
  EXPECT_EQ(spans.size(), 4u) << "2 ranks x 2 lanes";
  for (int rank : {0, 1}) {
    std::vector<double> sent = logField(dir + "/log.rank-" + std::to_string(rank) + ".jsonl",
                                        "all_to_all_bytes_sent"),
                        received = logField(dir + "/log.rank-" + std::to_string(rank) + ".jsonl",
                                            "all_to_all_bytes_received");
    ASSERT_EQ(sent.size(), 2u) << rank;
    // Two ranks: what one sends the other receives, and each row goes out
    // and comes back.
    EXPECT_EQ(sent, received) << rank;
    EXPECT_GT(sent[0], 0) << rank;
  }
}

/// The expert ids of each MoE layer in a `dsv3c eval` output.
std::map<std::string, std::vector<int64_t>> expertIds(const std::string &path, int64_t &topK) {
  std::map<std::string, std::vector<int64_t>> ids;
  SafetensorsFile *f = openOrFail(path);
  if (!f)
    return ids;
  for (const TensorInfo &t : f->tensors())
    if (llvm::StringRef(t.name).starts_with("topk_ids.")) {
      ids[t.name] = readI64(*f, t.name);
      topK = t.shape[1];
    }
  delete f;
  return ids;
}

/// Node-limited routing under --ep 4 with 2 ranks per node and
/// --max-nodes 1: every token's 4 experts lie on one node (experts 0-7 or
/// 8-15), where without the limit most tokens use both.
TEST(ParallelRouting, NodeLimitKeepsEachTokensExpertsOnOneNode) {
  std::string dir = scratchDir("nodes");
  std::string args = "eval " + sourcePath("models/tiny") + " --tokens " +
                     sourcePath("tests/golden/tiny/reference.safetensors");
  RunResult limited = runCommand(mpirun(4) + args + " -o " + dir +
                                 "/limited.safetensors --ep 4 --ranks-per-node 2 --max-nodes 1");
  ASSERT_EQ(limited.exitCode, 0) << limited.output;
  RunResult free = runDsv3c(args + " -o " + dir + "/free.safetensors");
  ASSERT_EQ(free.exitCode, 0) << free.output;
  int64_t k = 0;
  auto withLimit = expertIds(dir + "/limited.safetensors", k),
       without = expertIds(dir + "/free.safetensors", k);
  ASSERT_EQ(withLimit.size(), 3u);
  ASSERT_EQ(k, 4);
  for (auto &[layer, ids] : withLimit) {
    int spanning = 0, spanningWithout = 0;
    for (size_t t = 0; t < ids.size() / k; ++t) {
      std::set<int64_t> nodes, nodesWithout;
      for (int64_t j = 0; j < k; ++j) {
        nodes.insert(ids[t * k + j] / 8);
        nodesWithout.insert(without[layer][t * k + j] / 8);
      }
      spanning += nodes.size() > 1;
      spanningWithout += nodesWithout.size() > 1;
    }
    EXPECT_EQ(spanning, 0) << layer;
    EXPECT_GT(spanningWithout, 10) << layer << ": the limit must matter";
    std::printf("%s: tokens on two nodes %d with --max-nodes 1, %d without\n", layer.c_str(),
                spanning, spanningWithout);
  }
}

/// DeepSeek-V3's node rule (nodes ranked by the sum of their best
/// top_k / max_nodes affinities) is Hugging Face's group rule when the
/// groups are the nodes: the tiny model's 4 groups, topk_group 2 and top-4
/// under --ep 4 with one rank per node and --max-nodes 2 give the
/// one-process gradients.
TEST(ParallelRouting, NodesThatAreTheGroupsGiveTheGroupRule) {
  std::string tokens = sourcePath("tests/golden/tiny/reference.safetensors");
  std::string dir = scratchDir("nodes-groups");
  RunResult one = runDsv3c("grad " + sourcePath("models/tiny") + " --tokens " + tokens + " -o " +
                           dir + "/one.safetensors");
  ASSERT_EQ(one.exitCode, 0) << one.output;
  RunResult job = runCommand(mpirun(4) + "grad " + sourcePath("models/tiny") + " --tokens " +
                             tokens + " -o " + dir +
                             "/job.safetensors --ep 4 --ranks-per-node 1 --max-nodes 2");
  ASSERT_EQ(job.exitCode, 0) << job.output;
  expectSameOutputs(dir + "/job.safetensors", dir + "/one.safetensors",
                    "tiny --ep 4 --max-nodes 2");
}

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
      {2, "--pp 2 --micro-batches 4", "a replica's 2 sequences do not split into 4 micro-batches"},
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
