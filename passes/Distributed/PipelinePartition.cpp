//===- PipelinePartition.cpp - dsv3-pipeline-partition --------------------===//
//
// Splits each differentiated pipeline stage, `@stage<k>_grad` (the importer
// emits one function per stage, dsv3-autodiff differentiates each with its
// hidden-state gradient as a seed argument), into the chunks a pipeline
// schedule runs separately:
//   @stage<k>_forward          F: the stage's outputs, plus what backward needs
//   @stage<k>_backward_input   Bi: the gradient sent to the previous stage,
//                              plus what the weight gradient still needs
//   @stage<k>_backward_weight  W: the parameter gradients
//   @stage<k>_backward         B = Bi + W in one call
// The split is by dataflow: F is the slice of the forward outputs, Bi the
// rest of the slice of the input gradient, W what remains for the parameter
// gradients. A value one chunk computes and a later one reads crosses as a
// result `saved.<n>` (role saved) and an argument of the same name, so what
// a micro-batch keeps alive between its chunks is visible in the IR and the
// runtime holds exactly those buffers. Constants, parameters and integer
// values computed from the token ids only are cloned instead.
// Runs on tensor-level IR after dsv3-autodiff (and dsv3-expert-parallel,
// whose exchanges fall into the chunk that needs them).
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

#include <functional>

namespace dsv3 {
#define GEN_PASS_DEF_DSV3PIPELINEPARTITIONPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

/// One stage's gradient function and how its results divide.
class StageSplitter {
public:
  StageSplitter(func::FuncOp grad, std::string stage) : grad(grad), stage(std::move(stage)) {}

  LogicalResult run();

private:
  /// Cheap values every chunk recomputes rather than receives: constants,
  /// parameters, and non-float values computed from the token ids only.
  bool isFree(Value v) {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return !isFloatTensor(arg);
    Operation *op = v.getDefiningOp();
    auto it = freeOps.find(op);
    if (it != freeOps.end())
      return it->second;
    bool free = op->getNumRegions() == 0 && isPure(op) &&
                (op->getNumOperands() == 0 ||
                 (llvm::none_of(op->getResults(), isFloatTensor) &&
                  llvm::all_of(op->getOperands(), [&](Value o) { return isFree(o); })));
    return freeOps[op] = free;
  }
  /// The non-free ops `roots` depend on, excluding `exclude`.
  llvm::SetVector<Operation *> slice(ArrayRef<Value> roots,
                                     const llvm::SetVector<Operation *> &exclude);
  /// Builds `name` from `ops` (in block order) returning `results`.
  func::FuncOp outline(StringRef name, const llvm::SetVector<Operation *> &ops,
                       ArrayRef<unsigned> resultIndices, ArrayRef<Value> saved);

  func::FuncOp grad;
  std::string stage;
  DenseMap<Operation *, bool> freeOps;
  /// Values crossing from one chunk to a later one, by name.
  llvm::MapVector<Value, std::string> savedNames;
};

llvm::SetVector<Operation *> StageSplitter::slice(ArrayRef<Value> roots,
                                                 const llvm::SetVector<Operation *> &exclude) {
  llvm::SetVector<Operation *> ops;
  SmallVector<Value> work(roots.begin(), roots.end());
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (isa<BlockArgument>(v) || isFree(v))
      continue;
    Operation *op = v.getDefiningOp();
    if (exclude.contains(op) || !ops.insert(op))
      continue;
    work.append(op->operand_begin(), op->operand_end());
  }
  return ops;
}

func::FuncOp StageSplitter::outline(StringRef name, const llvm::SetVector<Operation *> &ops,
                                    ArrayRef<unsigned> resultIndices, ArrayRef<Value> saved) {
  MLIRContext *ctx = grad.getContext();
  OpBuilder b(grad);
  auto fn = func::FuncOp::create(b, grad.getLoc(), name, FunctionType::get(ctx, {}, {}));
  Block *body = fn.addEntryBlock();
  IRMapping map;
  SmallVector<Type> argTypes;
  SmallVector<std::string> argNames;
  auto ret = cast<func::ReturnOp>(grad.getBody().front().getTerminator());

  // Arguments: the stage's own inputs this chunk reads (also through the
  // free values it clones), then what earlier chunks saved for it.
  llvm::SetVector<Value> external;
  llvm::SmallPtrSet<Operation *, 16> visitedFree;
  std::function<void(Value)> collect = [&](Value v) {
    if (isa<BlockArgument>(v)) {
      external.insert(v);
      return;
    }
    Operation *d = v.getDefiningOp();
    if (ops.contains(d))
      return;
    if (!isFree(v)) {
      external.insert(v);
      return;
    }
    if (visitedFree.insert(d).second)
      for (Value o : d->getOperands())
        collect(o);
  };
  for (Operation *op : ops)
    for (Value o : op->getOperands())
      collect(o);
  for (unsigned i : resultIndices)
    collect(ret.getOperand(i));
  for (Value s : saved)
    collect(s);
  auto byOrder = [&](Value v) -> std::pair<int, unsigned> {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return {0, arg.getArgNumber()};
    return {1, static_cast<unsigned>(std::distance(
                   savedNames.begin(), savedNames.find(v)))};
  };
  SmallVector<Value> args(external.begin(), external.end());
  llvm::stable_sort(args, [&](Value a, Value c) { return byOrder(a) < byOrder(c); });
  for (Value v : args) {
    map.map(v, body->addArgument(v.getType(), v.getLoc()));
    argTypes.push_back(v.getType());
    if (auto arg = dyn_cast<BlockArgument>(v))
      argNames.push_back(
          grad.getArgAttrOfType<StringAttr>(arg.getArgNumber(), DSV3Dialect::kInputName)
              .getValue()
              .str());
    else
      argNames.push_back(savedNames.lookup(v));
  }

  // Free values are cloned on first use, operands first.
  b.setInsertionPointToStart(body);
  std::function<void(Value)> cloneFree = [&](Value v) {
    if (map.contains(v) || isa<BlockArgument>(v))
      return;
    Operation *op = v.getDefiningOp();
    for (Value o : op->getOperands())
      cloneFree(o);
    b.clone(*op, map);
  };
  for (Operation &op : grad.getBody().front().without_terminator()) {
    if (!ops.contains(&op))
      continue;
    for (Value o : op.getOperands())
      if (!map.contains(o))
        cloneFree(o);
    b.clone(op, map);
  }
  SmallVector<Value> results;
  for (unsigned i : resultIndices) {
    cloneFree(ret.getOperand(i));
    results.push_back(map.lookup(ret.getOperand(i)));
  }
  for (Value s : saved)
    results.push_back(map.lookup(s));
  func::ReturnOp::create(b, grad.getLoc(), results);
  fn.setType(FunctionType::get(ctx, argTypes, ValueRange(results).getTypes()));
  for (auto [i, n] : llvm::enumerate(argNames))
    setInput(fn, i, n);
  for (auto [k, i] : llvm::enumerate(resultIndices))
    fn.setResultAttrs(k, grad.getResultAttrDict(i));
  for (auto [k, s] : llvm::enumerate(saved))
    setOutput(fn, resultIndices.size() + k, savedNames.lookup(s), OutputRole::Saved);
  return fn;
}

LogicalResult StageSplitter::run() {
  if (!grad.getBody().hasOneBlock())
    return grad.emitOpError() << "must have a single block to split into pipeline chunks";
  auto ret = cast<func::ReturnOp>(grad.getBody().front().getTerminator());

  // Results: parameter gradients (W), the input's gradient (Bi, sent to the
  // previous stage), and everything else, which the forward computes.
  SmallVector<unsigned> forwardResults, inputGradResults, paramGradResults;
  for (unsigned i = 0; i < grad.getNumResults(); ++i) {
    auto role = grad.getResultAttrOfType<OutputRoleAttr>(i, DSV3Dialect::kOutputRole);
    auto name = grad.getResultAttrOfType<StringAttr>(i, DSV3Dialect::kOutputName);
    if (role && role.getValue() == OutputRole::Gradient)
      paramGradResults.push_back(i);
    else if (role && role.getValue() == OutputRole::Activation && name &&
             name.getValue().starts_with("grad."))
      inputGradResults.push_back(i);
    else
      forwardResults.push_back(i);
  }
  auto values = [&](ArrayRef<unsigned> indices) {
    SmallVector<Value> v;
    for (unsigned i : indices)
      v.push_back(ret.getOperand(i));
    return v;
  };
  llvm::SetVector<Operation *> none;
  llvm::SetVector<Operation *> forward = slice(values(forwardResults), none);
  // The forward must not read a gradient seed.
  for (Operation *op : forward)
    for (Value o : op->getOperands())
      if (auto arg = dyn_cast<BlockArgument>(o))
        if (auto n = grad.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                       DSV3Dialect::kInputName);
            n && n.getValue().starts_with("grad."))
          return op->emitOpError() << "computes a forward output of " << stage
                                   << " from the gradient seed " << n.getValue();
  llvm::SetVector<Operation *> backwardInput = slice(values(inputGradResults), forward);
  llvm::SetVector<Operation *> taken = forward;
  taken.insert(backwardInput.begin(), backwardInput.end());
  llvm::SetVector<Operation *> backwardWeight = slice(values(paramGradResults), taken);

  // Name what crosses: forward values read by the backward chunks, then
  // input-gradient values read by the weight chunk.
  auto crossing = [&](const llvm::SetVector<Operation *> &from,
                      ArrayRef<const llvm::SetVector<Operation *> *> to,
                      ArrayRef<unsigned> toResults) {
    SmallVector<Value> out;
    llvm::SmallPtrSet<Value, 16> seen;
    auto consider = [&](Value v) {
      if (Operation *d = v.getDefiningOp(); d && from.contains(d) && seen.insert(v).second)
        out.push_back(v);
    };
    for (Operation &op : grad.getBody().front().without_terminator())
      for (auto *set : to)
        if (set->contains(&op))
          for (Value o : op.getOperands())
            consider(o);
    for (unsigned i : toResults)
      consider(ret.getOperand(i));
    // In definition order, which is also the order the runtime keeps them.
    llvm::stable_sort(out, [](Value a, Value c) {
      Operation *x = a.getDefiningOp(), *y = c.getDefiningOp();
      return x == y ? cast<OpResult>(a).getResultNumber() < cast<OpResult>(c).getResultNumber()
                    : x->isBeforeInBlock(y);
    });
    for (Value v : out)
      savedNames.insert({v, "saved." + std::to_string(savedNames.size())});
    return out;
  };
  SmallVector<unsigned> backwardResults(inputGradResults);
  backwardResults.append(paramGradResults);
  SmallVector<Value> savedByForward =
      crossing(forward, {&backwardInput, &backwardWeight}, backwardResults);
  SmallVector<Value> savedByInput = crossing(backwardInput, {&backwardWeight}, paramGradResults);

  llvm::SetVector<Operation *> backward = backwardInput;
  backward.insert(backwardWeight.begin(), backwardWeight.end());
  outline(stage + "_forward", forward, forwardResults, savedByForward);
  outline(stage + "_backward_input", backwardInput, inputGradResults, savedByInput);
  outline(stage + "_backward_weight", backwardWeight, paramGradResults, {});
  outline(stage + "_backward", backward, backwardResults, {});
  return success();
}

struct DSV3PipelinePartitionPass
    : dsv3::impl::DSV3PipelinePartitionPassBase<DSV3PipelinePartitionPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> stages;
    for (int64_t k = 0;; ++k) {
      auto fn = module.lookupSymbol<func::FuncOp>("stage" + std::to_string(k) + "_grad");
      if (!fn)
        break;
      stages.push_back(fn);
    }
    if (stages.empty()) {
      module.emitError() << "dsv3-pipeline-partition: no differentiated pipeline stage "
                            "(@stage0_grad); import with pipeline stages and run dsv3-autodiff "
                            "on each";
      return signalPassFailure();
    }
    // A schedule in the module must run the stages this module has.
    for (auto schedule : module.getOps<PipelineScheduleOp>())
      if (schedule.getStages() != stages.size()) {
        schedule.emitOpError() << "runs " << schedule.getStages() << " stages; the module has "
                               << stages.size() << " (@stage0_grad..)";
        return signalPassFailure();
      }
    for (auto [k, fn] : llvm::enumerate(stages)) {
      if (failed(StageSplitter(fn, "stage" + std::to_string(k)).run()))
        return signalPassFailure();
      fn.erase();
    }
  }
};

} // namespace
