//===- ScheduleIR.cpp - pipeline schedules to and from IR -----------------===//
//
// Each step of a rank's program becomes, in order: the receives of what
// its chunks read from another rank's stage, the run (or F&B pair), and the
// sends of what its chunks computed for another rank's stage. A forward of
// stage s reads `hidden` from stage s-1 and computes stage s+1's; a
// backward (B or Bi) reads `grad.hidden` from stage s+1 and computes stage
// s-1's. A value whose other end is on the same rank is not a message.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/ScheduleIR.h"

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

using namespace mlir;

namespace dsv3 {

namespace {

/// A message a chunk receives before it runs or sends after: the value, the
/// stage it is an input of, and the rank at the other end.
struct Message {
  const char *value;
  int stage;
  int peer;
};

/// What `c` (on `rank`) receives from another rank, if anything.
std::optional<Message> received(const rt::PipelineSchedule &s, int rank, const rt::Chunk &c) {
  std::optional<rt::StageMessage> m = rt::stageInput(s, c);
  if (!m || s.rankOf(m->from, c.microBatch) == rank)
    return std::nullopt;
  return Message{m->value(), m->to, s.rankOf(m->from, c.microBatch)};
}

/// What `c` (on `rank`) sends to another rank, if anything.
std::optional<Message> sent(const rt::PipelineSchedule &s, int rank, const rt::Chunk &c) {
  std::optional<rt::StageMessage> m = rt::stageOutput(s, c);
  if (!m || s.rankOf(m->to, c.microBatch) == rank)
    return std::nullopt;
  return Message{m->value(), m->to, s.rankOf(m->to, c.microBatch)};
}

} // namespace

void appendScheduleIR(ModuleOp module, const rt::PipelineSchedule &s) {
  OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
  Location loc = b.getUnknownLoc();
  auto schedule = PipelineScheduleOp::create(b, loc, rt::scheduleName(s.kind), s.ranks,
                                             s.stages, s.microBatches);
  b.setInsertionPointToStart(&schedule.getBody().emplaceBlock());
  auto index = [&](int64_t v) { return b.getI64IntegerAttr(v); };
  for (int rank = 0; rank < s.ranks; ++rank) {
    auto rankOp = PipelineRankOp::create(b, loc, rank);
    OpBuilder body = OpBuilder::atBlockBegin(&rankOp.getBody().emplaceBlock());
    for (const rt::ScheduleStep &step : s.steps[rank]) {
      std::vector<rt::Chunk> chunks{step.chunk};
      if (step.overlappedBackward)
        chunks.push_back(*step.overlappedBackward);
      for (const rt::Chunk &c : chunks)
        if (auto m = received(s, rank, c))
          PipelineRecvOp::create(body, loc, m->value, m->stage, c.microBatch, m->peer);
      IntegerAttr section = body.getI64IntegerAttr(step.section);
      if (step.overlappedBackward) {
        const rt::Chunk &f = step.chunk, &bw = *step.overlappedBackward;
        PipelineRunPairOp::create(body, loc, index(f.stage), index(f.microBatch),
                                  index(bw.stage), index(bw.microBatch), FlatSymbolRefAttr(),
                                  section);
      } else {
        const rt::Chunk &c = step.chunk;
        PipelineRunOp::create(body, loc, body.getStringAttr(rt::passLabel(c.pass)), index(c.stage),
                              index(c.microBatch), section);
      }
      for (const rt::Chunk &c : chunks)
        if (auto m = sent(s, rank, c))
          PipelineSendOp::create(body, loc, m->value, m->stage, c.microBatch, m->peer);
    }
  }
}

llvm::Expected<ScheduleFromIR> readScheduleIR(ModuleOp module) {
  auto ops = module.getOps<PipelineScheduleOp>();
  if (ops.empty())
    return llvm::createStringError("the module has no dsv3.pipeline_schedule (compile with "
                                   "--pp > 1 in grad or train-step mode)");
  PipelineScheduleOp op = *ops.begin();
  auto kind = rt::parseScheduleKind(op.getKind().str());
  if (!kind)
    return llvm::createStringError("dsv3.pipeline_schedule: unknown kind '" +
                                   op.getKind().str() + "'");
  ScheduleFromIR out;
  rt::PipelineSchedule &s = out.schedule;
  s.kind = *kind;
  s.ranks = static_cast<int>(op.getRanks());
  s.stages = static_cast<int>(op.getStages());
  s.microBatches = static_cast<int>(op.getMicroBatches());
  for (auto rankOp : op.getBody().getOps<PipelineRankOp>()) {
    std::vector<rt::ScheduleStep> &steps = s.steps.emplace_back();
    std::vector<std::string> &fused = out.fused.emplace_back();
    for (Operation &o : rankOp.getBody().front()) {
      rt::ScheduleStep step;
      if (auto run = dyn_cast<PipelineRunOp>(o)) {
        auto pass = rt::parsePassLabel(run.getPass().str());
        if (!pass)
          return llvm::createStringError("dsv3.pipeline_run: unknown pass '" +
                                         run.getPass().str() + "'");
        step.chunk = {*pass, static_cast<int>(run.getStage()),
                      static_cast<int>(run.getMicroBatch())};
        step.section = static_cast<int>(run.getSection().value_or(1));
        fused.emplace_back();
      } else if (auto pair = dyn_cast<PipelineRunPairOp>(o)) {
        step.chunk = {rt::ChunkPass::Forward, static_cast<int>(pair.getForwardStage()),
                      static_cast<int>(pair.getForwardMicroBatch())};
        step.overlappedBackward =
            rt::Chunk{rt::ChunkPass::Backward, static_cast<int>(pair.getBackwardStage()),
                      static_cast<int>(pair.getBackwardMicroBatch())};
        step.section = static_cast<int>(pair.getSection().value_or(1));
        fused.push_back(pair.getFused() ? pair.getFused()->str() : std::string());
      } else {
        continue; // messages follow from the chunks
      }
      steps.push_back(step);
    }
  }
  return out;
}

} // namespace dsv3
