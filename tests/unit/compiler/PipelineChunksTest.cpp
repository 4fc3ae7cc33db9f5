//===- PipelineChunksTest.cpp - pipeline chunks against the whole step ----===//
//
// The tiny model (3 decoder layers, 2 of them MoE, and an MTP block)
// compiled with pipeline stages: every rank's program of 1F1B, ZB1P,
// DualPipe and DualPipeV runs in this process (ranks round-robin, hidden
// states passed through the in-process transport), 8 micro-batches of one
// row each. The losses and every parameter gradient, summed over ranks
// (DualPipe's two copies of a stage, the embedding shared by the first
// stage and MTP), must equal one compiled forward_grad over the same 8 rows
// within 1e-5 relative L2: what partitioning, differentiation per stage,
// the F/Bi/W split and the schedule may change is the order of sums only.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/Compiler.h"
#include "runtime/pipeline/Executor.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace dsv3;

namespace {

constexpr int64_t kRows = 8, kSeq = 16;

struct Reference {
  std::map<std::string, std::vector<float>> outputs; // by name
};

class PipelineChunks : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto desc = loadModelDescription(DSV3_SOURCE_DIR "/models/tiny");
    ASSERT_TRUE(static_cast<bool>(desc)) << llvm::toString(desc.takeError());
    description = std::make_unique<ModelDescription>(std::move(*desc));
    // The compiler applies MLIR's command-line options, as dsv3c does.
    mlir::registerPassManagerCLOptions();
    mlir::registerMLIRContextCLOptions();
    mlir::registerDefaultTimingManagerCLOptions();
    compiler = std::make_unique<Compiler>();
    // Token ids from a fixed linear congruential sequence.
    uint64_t x = 12345;
    for (int64_t i = 0; i < kRows * kSeq; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      ids.push_back(static_cast<int64_t>((x >> 33) % description->config.vocabSize));
    }
    CompileOptions whole = options(kRows, 1);
    auto ref = compiler->load(*description, whole);
    ASSERT_TRUE(static_cast<bool>(ref)) << llvm::toString(ref.takeError());
    ASSERT_FALSE(ref->session->run("forward_grad", {{ids.data(), {kRows, kSeq}}}));
    const rt::EntryPoint *e = ref->module.executable->entry("forward_grad");
    rt::OutputBuffers &out = ref->session->outputs("forward_grad");
    for (size_t i = 0; i < e->outputs.size(); ++i)
      if (e->outputs[i].type == rt::ElementType::F32)
        reference[e->outputs[i].name] =
            std::vector<float>(out.f32(i), out.f32(i) + out.tensors[i].numElements());
  }
  static void TearDownTestSuite() {
    models.clear();
    compiler.reset();
    description.reset();
  }
  static CompileOptions options(int64_t batch, int64_t stages) {
    CompileOptions o;
    o.mode = CompileMode::Grad;
    o.batch = batch;
    o.seqLen = kSeq;
    o.mtpWeight = 0.3;
    o.balanceAlpha = 1e-2; // large enough to matter in the gradients
    o.pipelineStages = stages;
    return o;
  }

  /// Runs `kind` on `ranks` pipeline ranks in this process and compares
  /// with the whole step.
  void check(rt::ScheduleKind kind, int ranks) {
    auto schedule = rt::buildSchedule(kind, ranks, kRows);
    ASSERT_TRUE(schedule) << schedule.error().message();
    // Compiled once per stage count (DualPipe P=4 and 1F1B P=4 share 4).
    auto &model = models[schedule->stages];
    if (!model) {
      auto loaded = compiler->load(*description, options(1, schedule->stages));
      ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
      model = std::make_unique<LoadedModel>(std::move(*loaded));
    }
    const rt::Executable &exe = *model->module.executable;
    std::vector<float> &params = model->session->parameters();
    rt::InProcessTransport transport(ranks);
    auto rows = rt::splitRows(ids.data(), nullptr, kRows, kSeq, kRows);
    std::vector<std::unique_ptr<rt::PipelineRank>> programs;
    for (int r = 0; r < ranks; ++r)
      programs.push_back(std::make_unique<rt::PipelineRank>(
          *schedule, r, exe, params.data(), rows, transport.endpoint(r)));
    // Round-robin until every rank is done; a sweep where none runs would
    // be a deadlock.
    for (bool pending = true; pending;) {
      pending = false;
      bool ran = false;
      for (auto &p : programs) {
        auto progress = p->step();
        ASSERT_TRUE(progress) << progress.error().message();
        pending |= *progress != rt::PipelineRank::Progress::Done;
        ran |= *progress == rt::PipelineRank::Progress::Ran;
      }
      ASSERT_TRUE(ran || !pending) << "the ranks wait on each other";
    }

    std::map<std::string, double> losses;
    std::vector<float> grads(exe.layout().totalElements, 0.0f);
    for (auto &p : programs) {
      for (auto &[name, v] : p->losses())
        losses[name] += v;
      for (size_t i = 0; i < grads.size(); ++i)
        grads[i] += p->gradients()[i];
      EXPECT_GT(p->peakHeldBytes(), 0);
    }
    for (const char *name : {"total_loss", "loss", "mtp_loss", "balance_loss"})
      EXPECT_NEAR(losses[name], reference[name][0], 1e-5 * std::abs(reference[name][0]))
          << name;
    int compared = 0;
    for (const rt::ParamSlot &slot : exe.layout().slots) {
      auto it = reference.find("grad." + slot.name);
      if (it == reference.end())
        continue; // the routing bias has no gradient
      ASSERT_EQ(static_cast<int64_t>(it->second.size()), slot.numElements()) << slot.name;
      double diff = 0, norm = 0;
      for (int64_t k = 0; k < slot.numElements(); ++k) {
        double d = grads[slot.offset + k] - it->second[k];
        diff += d * d;
        norm += double(it->second[k]) * it->second[k];
      }
      EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm) + 1e-9)
          << rt::scheduleName(kind) << ": grad." << slot.name;
      ++compared;
    }
    EXPECT_EQ(compared, std::count_if(reference.begin(), reference.end(), [](const auto &r) {
                return r.first.rfind("grad.", 0) == 0;
              }));
  }

  static std::unique_ptr<ModelDescription> description;
  static std::unique_ptr<Compiler> compiler;
  static std::vector<int64_t> ids;
  static std::map<std::string, std::vector<float>> reference;
  static std::map<int, std::unique_ptr<LoadedModel>> models;
};
std::unique_ptr<ModelDescription> PipelineChunks::description;
std::unique_ptr<Compiler> PipelineChunks::compiler;
std::vector<int64_t> PipelineChunks::ids;
std::map<std::string, std::vector<float>> PipelineChunks::reference;
std::map<int, std::unique_ptr<LoadedModel>> PipelineChunks::models;

TEST_F(PipelineChunks, DualPipeV) { check(rt::ScheduleKind::DualPipeV, 2); }
TEST_F(PipelineChunks, DualPipe) { check(rt::ScheduleKind::DualPipe, 4); }
TEST_F(PipelineChunks, ZeroBubble) { check(rt::ScheduleKind::ZeroBubble, 2); }
TEST_F(PipelineChunks, OneFOneB) { check(rt::ScheduleKind::OneFOneB, 4); }

} // namespace
