//===- DSV3PipelineVerifiers.cpp - checks of a pipeline schedule ---------===//
//
// A schedule in IR must be runnable as written: every message one rank
// sends is received once by the rank it names (and nothing is received
// that was not sent), a rank receives a stage's input before the chunk that
// reads it, every (stage, micro-batch) runs its forward exactly once, and
// a fused pair names a function. Whether the order can deadlock is
// the simulator's question (runtime/pipeline); these are the local checks.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <set>
#include <tuple>

using namespace mlir;
using namespace dsv3;

namespace {

LogicalResult checkFunction(Operation *op, SymbolTableCollection &symbols,
                            FlatSymbolRefAttr name, StringRef what) {
  if (!symbols.lookupNearestSymbolFrom<func::FuncOp>(op, name))
    return op->emitOpError() << what << " " << name << " is not a function of the module";
  return success();
}

/// (value, stage, micro-batch) of a message.
using MessageKey = std::tuple<std::string, int64_t, int64_t>;

} // namespace

LogicalResult PipelineRunOp::verify() {
  StringRef p = getPass();
  if (p != "F" && p != "B" && p != "Bi" && p != "W")
    return emitOpError() << "pass \"" << p << "\" is not F, B, Bi or W";
  return success();
}

LogicalResult PipelineRunPairOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (auto fused = getFusedAttr())
    return checkFunction(*this, symbols, fused, "fused pair");
  return success();
}

LogicalResult PipelineSendOp::verify() {
  if (getValue() != "hidden" && getValue() != "grad.hidden")
    return emitOpError() << "sends \"" << getValue() << "\"; a stage's inputs from another "
                         << "stage are \"hidden\" and \"grad.hidden\"";
  return success();
}

LogicalResult PipelineRecvOp::verify() {
  if (getValue() != "hidden" && getValue() != "grad.hidden")
    return emitOpError() << "receives \"" << getValue() << "\"; a stage's inputs from "
                         << "another stage are \"hidden\" and \"grad.hidden\"";
  return success();
}

LogicalResult PipelineScheduleOp::verifyRegions() {
  int64_t ranks = getRanks(), stages = getStages(), microBatches = getMicroBatches();
  SmallVector<PipelineRankOp> rankOps;
  for (Operation &op : getBody().front()) {
    auto r = dyn_cast<PipelineRankOp>(op);
    if (!r)
      return op.emitOpError() << "is not a dsv3.pipeline_rank; a schedule holds ranks only";
    if (r.getRank() != rankOps.size())
      return r.emitOpError() << "is rank " << r.getRank() << " where rank " << rankOps.size()
                             << " comes (ranks in order from 0)";
    rankOps.push_back(r);
  }
  if (static_cast<int64_t>(rankOps.size()) != ranks)
    return emitOpError() << "holds " << rankOps.size() << " ranks, declares " << ranks;

  auto inRange = [&](Operation *op, int64_t stage, int64_t mb) -> LogicalResult {
    if (stage >= stages)
      return op->emitOpError() << "names stage " << stage << " of " << stages;
    if (mb >= microBatches)
      return op->emitOpError() << "names micro-batch " << mb << " of " << microBatches;
    return success();
  };
  // (from, to) -> messages sent, and received, not yet matched.
  std::map<std::pair<int64_t, int64_t>, std::multiset<MessageKey>> sent, received;
  std::map<std::pair<int64_t, int64_t>, Operation *> forwards; // (stage, mb)
  for (PipelineRankOp r : rankOps) {
    int64_t self = static_cast<int64_t>(r.getRank());
    std::set<MessageKey> arrived; // what this rank has received so far
    // A chunk that reads a value from another stage must come after its
    // receive, when it is received at all (the value may come from a
    // chunk of this rank instead).
    auto needs = [&](Operation *op, StringRef value, int64_t stage, int64_t mb,
                     bool local) -> LogicalResult {
      if (local || arrived.count({value.str(), stage, mb}))
        return success();
      return op->emitOpError() << "runs stage " << stage << " of micro-batch " << mb
                               << " before it received its \"" << value << "\"";
    };
    // Which of this rank's values came from its own chunks.
    std::set<MessageKey> producedHere;
    auto chunk = [&](Operation *op, StringRef pass, int64_t stage, int64_t mb) -> LogicalResult {
      if (failed(inRange(op, stage, mb)))
        return failure();
      if (pass == "F") {
        auto [it, fresh] = forwards.insert({{stage, mb}, op});
        if (!fresh)
          return op->emitOpError() << "runs the forward of stage " << stage
                                   << " for micro-batch " << mb << " a second time";
        if (stage > 0 && failed(needs(op, "hidden", stage, mb,
                                      producedHere.count({"hidden", stage, mb}))))
          return failure();
        producedHere.insert({"hidden", stage + 1, mb});
      } else if (pass == "B" || pass == "Bi") {
        if (stage + 1 < stages &&
            failed(needs(op, "grad.hidden", stage, mb,
                         producedHere.count({"grad.hidden", stage, mb}))))
          return failure();
        if (stage > 0)
          producedHere.insert({"grad.hidden", stage - 1, mb});
      }
      return success();
    };
    for (Operation &op : r.getBody().front()) {
      if (auto run = dyn_cast<PipelineRunOp>(op)) {
        if (failed(chunk(run, run.getPass(), run.getStage(), run.getMicroBatch())))
          return failure();
      } else if (auto pair = dyn_cast<PipelineRunPairOp>(op)) {
        if (pair.getForwardMicroBatch() == pair.getBackwardMicroBatch())
          return pair.emitOpError() << "pairs two chunks of micro-batch "
                                    << pair.getForwardMicroBatch()
                                    << "; an F&B pair overlaps two micro-batches";
        if (failed(chunk(pair, "F", pair.getForwardStage(), pair.getForwardMicroBatch())) ||
            failed(chunk(pair, "B", pair.getBackwardStage(), pair.getBackwardMicroBatch())))
          return failure();
      } else if (auto send = dyn_cast<PipelineSendOp>(op)) {
        if (failed(inRange(send, send.getStage(), send.getMicroBatch())))
          return failure();
        if (static_cast<int64_t>(send.getPeer()) >= ranks || static_cast<int64_t>(send.getPeer()) == self)
          return send.emitOpError() << "sends to rank " << send.getPeer() << " from rank "
                                    << self << " of " << ranks;
        MessageKey key{send.getValue().str(), send.getStage(), send.getMicroBatch()};
        if (!producedHere.count(key))
          return send.emitOpError() << "sends \"" << send.getValue() << "\" of stage "
                                    << send.getStage() << ", micro-batch "
                                    << send.getMicroBatch()
                                    << " before a chunk of this rank computed it";
        sent[{self, send.getPeer()}].insert(key);
      } else if (auto recv = dyn_cast<PipelineRecvOp>(op)) {
        if (failed(inRange(recv, recv.getStage(), recv.getMicroBatch())))
          return failure();
        if (static_cast<int64_t>(recv.getPeer()) >= ranks || static_cast<int64_t>(recv.getPeer()) == self)
          return recv.emitOpError() << "receives from rank " << recv.getPeer()
                                    << " on rank " << self << " of " << ranks;
        MessageKey key{recv.getValue().str(), recv.getStage(), recv.getMicroBatch()};
        if (!arrived.insert(key).second)
          return recv.emitOpError() << "receives \"" << recv.getValue() << "\" of stage "
                                    << recv.getStage() << ", micro-batch "
                                    << recv.getMicroBatch() << " twice";
        received[{recv.getPeer(), self}].insert(key);
      } else {
        return op.emitOpError() << "is not a step of a pipeline rank";
      }
    }
  }
  for (int64_t stage = 0; stage < stages; ++stage)
    for (int64_t mb = 0; mb < microBatches; ++mb)
      if (!forwards.count({stage, mb}))
        return emitOpError() << "never runs the forward of stage " << stage
                             << " for micro-batch " << mb;
  // Every message sent is received by the rank it names, and the reverse.
  auto describe = [](const MessageKey &k) {
    return "\"" + std::get<0>(k) + "\" of stage " + std::to_string(std::get<1>(k)) +
           ", micro-batch " + std::to_string(std::get<2>(k));
  };
  // `from` holds one side's messages per (sender, receiver); each must be
  // on the other side as often.
  auto unmatched = [&](const auto &from, const auto &to, bool sends) -> LogicalResult {
    for (const auto &[link, keys] : from) {
      auto other = to.find(link);
      for (const MessageKey &k : keys) {
        if (other != to.end() && other->second.count(k) == keys.count(k))
          continue;
        if (sends)
          return emitOpError() << "rank " << link.first << " sends " << describe(k)
                               << " to rank " << link.second << ", which never receives it";
        return emitOpError() << "rank " << link.second << " receives " << describe(k)
                             << " from rank " << link.first << ", which never sends it";
      }
    }
    return success();
  };
  if (failed(unmatched(sent, received, true)) || failed(unmatched(received, sent, false)))
    return failure();
  return success();
}
