//===- ScheduleIRTest.cpp - schedules through dsv3.pipeline_schedule ------===//
//
// Every generator's schedule (1F1B, ZB1P, DualPipe, DualPipeV; P up to 8,
// several N), written into a module as IR, passes the op's verifier and
// reads back step for step; and the verifier rejects a generator's
// schedule with one message dropped.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/ScheduleIR.h"

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace dsv3;

namespace {

bool sameChunk(const rt::Chunk &a, const rt::Chunk &b) {
  return a.pass == b.pass && a.stage == b.stage && a.microBatch == b.microBatch;
}

class ScheduleIR : public ::testing::Test {
protected:
  ScheduleIR() {
    ctx.loadDialect<DSV3Dialect, func::FuncDialect>();
    // Keep the verifier's messages for the assertions, not stderr.
    ctx.getDiagEngine().registerHandler([this](Diagnostic &d) {
      diagnostics += d.str() + "\n";
      return success();
    });
  }
  OwningOpRef<ModuleOp> moduleWith(const rt::PipelineSchedule &s) {
    OwningOpRef<ModuleOp> m = ModuleOp::create(UnknownLoc::get(&ctx));
    appendScheduleIR(*m, s);
    return m;
  }
  MLIRContext ctx;
  std::string diagnostics;
};

TEST_F(ScheduleIR, EveryGeneratedScheduleVerifiesAndReadsBack) {
  int checked = 0;
  for (rt::ScheduleKind kind : {rt::ScheduleKind::OneFOneB, rt::ScheduleKind::ZeroBubble,
                                rt::ScheduleKind::DualPipe, rt::ScheduleKind::DualPipeV})
    for (int ranks : {2, 4, 6, 8})
      for (int microBatches : {2 * ranks, 2 * ranks + 2, 3 * ranks}) {
        auto built = rt::buildSchedule(kind, ranks, microBatches);
        if (!built)
          continue; // e.g. DualPipe with an odd N
        const rt::PipelineSchedule &s = *built;
        std::string what = std::string(rt::scheduleName(kind)) + " P=" +
                           std::to_string(ranks) + " N=" + std::to_string(microBatches);
        OwningOpRef<ModuleOp> m = moduleWith(s);
        diagnostics.clear();
        ASSERT_TRUE(succeeded(verify(*m))) << what << ": " << diagnostics;
        auto read = readScheduleIR(*m);
        ASSERT_TRUE(static_cast<bool>(read)) << what << ": " << llvm::toString(read.takeError());
        const rt::PipelineSchedule &r = read->schedule;
        EXPECT_EQ(r.kind, s.kind) << what;
        ASSERT_EQ(r.ranks, s.ranks) << what;
        EXPECT_EQ(r.stages, s.stages) << what;
        EXPECT_EQ(r.microBatches, s.microBatches) << what;
        for (int rank = 0; rank < s.ranks; ++rank) {
          ASSERT_EQ(r.steps[rank].size(), s.steps[rank].size()) << what << " rank " << rank;
          for (size_t i = 0; i < s.steps[rank].size(); ++i) {
            const rt::ScheduleStep &a = s.steps[rank][i], &b = r.steps[rank][i];
            EXPECT_TRUE(sameChunk(a.chunk, b.chunk)) << what << " rank " << rank << " step " << i;
            EXPECT_EQ(a.section, b.section) << what << " rank " << rank << " step " << i;
            ASSERT_EQ(a.overlappedBackward.has_value(), b.overlappedBackward.has_value());
            if (a.overlappedBackward)
              EXPECT_TRUE(sameChunk(*a.overlappedBackward, *b.overlappedBackward));
          }
        }
        EXPECT_EQ(rt::formatScheduleTable(r), rt::formatScheduleTable(s)) << what;
        ++checked;
      }
  EXPECT_GE(checked, 40);
}

TEST_F(ScheduleIR, AMissingReceiveFailsTheVerifier) {
  auto built = rt::buildSchedule(rt::ScheduleKind::DualPipeV, 2, 4);
  ASSERT_TRUE(static_cast<bool>(built));
  OwningOpRef<ModuleOp> m = moduleWith(*built);
  PipelineRecvOp first;
  m->walk([&](PipelineRecvOp recv) {
    if (!first)
      first = recv;
  });
  ASSERT_TRUE(first);
  std::string dropped = first.getValue().str();
  first.erase();
  diagnostics.clear();
  EXPECT_TRUE(failed(verify(*m)));
  EXPECT_NE(diagnostics.find("before it received its \"" + dropped + "\""), std::string::npos)
      << diagnostics;
}

} // namespace
