//===- Autodiff.cpp - reverse-mode differentiation of dsv3 functions ------===//
//
// Runs on tensor-level dsv3 IR (after dsv3-decompose). The forward function
// is cloned into `<name>_grad`; a reverse sweep over its single block emits,
// for each op on the path to the objective, the gradient ops of its
// differentiable operands through the op's DifferentiableOpInterface rule
// (Rules.cpp), accumulating with arith.addf where a value has several uses.
// Weighted ops emit their B (input) and W (weight) gradients as separate
// ops so later schedules can move them apart.
//
//===----------------------------------------------------------------------===//
#include "passes/Autodiff/Rules.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/MapVector.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3AUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

/// The reverse sweep of one function body: gradients by value, summed over
/// uses. What each op contributes is its DifferentiableOpInterface rule.
class ReverseSweep : public GradientSweep {
public:
  ReverseSweep(OpBuilder &b) : b(b) {}

  void accumulate(Value v, Value g) override {
    if (!isFloatTensor(v))
      return;
    auto it = grads.find(v);
    if (it == grads.end())
      grads[v] = g;
    else
      it->second = arith::AddFOp::create(b, g.getLoc(), it->second, g);
  }
  Value gradient(Value v) const override { return grads.lookup(v); }
  Value zeros(Location loc, Type type) override {
    auto t = cast<RankedTensorType>(type);
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(t, FloatAttr::get(t.getElementType(), 0.0)));
  }

  /// Emits the gradient ops of `op` given the gradients of its results.
  LogicalResult differentiate(Operation *op) {
    // Ops none of whose results lead to the objective need nothing.
    if (llvm::none_of(op->getResults(), [&](Value r) { return gradient(r); }))
      return success();
    if (auto rule = dyn_cast<DifferentiableOpInterface>(op))
      return rule.emitGradient(b, *this);
    return op->emitOpError() << "has no gradient rule (dsv3-autodiff runs on tensor-level "
                                "dsv3 IR, after dsv3-decompose)";
  }

private:
  OpBuilder &b;
  DenseMap<Value, Value> grads;
};

struct DSV3AutodiffPass : dsv3::impl::DSV3AutodiffPassBase<DSV3AutodiffPass> {
  using Base::Base;

  /// The rules of the ops this pass differentiates come with it.
  void getDependentDialects(DialectRegistry &registry) const override {
    Base::getDependentDialects(registry);
    registerGradientRules(registry);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>(function);
    if (!forward || forward.isExternal()) {
      module.emitError() << "dsv3-autodiff: no function '" << function << "'";
      return signalPassFailure();
    }
    std::optional<unsigned> objectiveIndex;
    for (unsigned i = 0; i < forward.getNumResults(); ++i)
      if (auto n = forward.getResultAttrOfType<StringAttr>(i, "dsv3.output"))
        if (n.getValue() == objective)
          objectiveIndex = i;
    if (!objectiveIndex) {
      forward.emitOpError() << "has no result named '" << objective
                            << "' to differentiate";
      return signalPassFailure();
    }
    if (!forward.getBody().hasOneBlock()) {
      forward.emitOpError() << "must have a single block to differentiate";
      return signalPassFailure();
    }

    auto gradFn = cast<func::FuncOp>(forward->clone());
    gradFn.setSymName(function + "_grad");
    module.getBody()->push_back(gradFn);
    auto ret = cast<func::ReturnOp>(gradFn.getBody().front().getTerminator());
    Value objectiveValue = ret.getOperand(*objectiveIndex);
    if (auto t = dyn_cast<RankedTensorType>(objectiveValue.getType());
        !t || t.getRank() != 0 || !t.getElementType().isF32()) {
      forward.emitOpError() << "objective '" << objective
                            << "' must be a tensor<f32> scalar";
      return signalPassFailure();
    }

    OpBuilder b(ret);
    ReverseSweep sweep(b);
    sweep.accumulate(objectiveValue,
                     arith::ConstantOp::create(
                         b, ret.getLoc(),
                         DenseElementsAttr::get(
                             cast<RankedTensorType>(objectiveValue.getType()),
                             1.0f)));
    // A pipeline stage's activation outputs feed later stages: their
    // gradients arrive as arguments `grad.<output>`, appended in order.
    Block &body = gradFn.getBody().front();
    unsigned numInputs = body.getNumArguments();
    SmallVector<std::pair<unsigned, std::string>> seeds;
    for (unsigned i = 0; i < forward.getNumResults(); ++i) {
      auto role = forward.getResultAttrOfType<OutputRoleAttr>(i, DSV3Dialect::kOutputRole);
      if (!role || role.getValue() != OutputRole::Activation)
        continue;
      auto name = forward.getResultAttrOfType<StringAttr>(i, DSV3Dialect::kOutputName);
      Value out = ret.getOperand(i);
      sweep.accumulate(out, body.addArgument(out.getType(), out.getLoc()));
      seeds.push_back({i, "grad." + name.getValue().str()});
    }
    SmallVector<Operation *> ops;
    for (Operation &op : gradFn.getBody().front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops))
      if (failed(sweep.differentiate(op)))
        return signalPassFailure();

    // One gradient per parameter name, summed over its uses, in first-use
    // order.
    llvm::MapVector<StringRef, Value> paramGrads;
    for (Operation *op : ops)
      if (auto p = dyn_cast<ParamOp>(op))
        if (Value g = sweep.gradient(p)) {
          auto [it, inserted] = paramGrads.insert({p.getName(), g});
          if (!inserted)
            it->second = arith::AddFOp::create(b, p.getLoc(), it->second, g);
        }

    // The forward's results keep their attributes; each gradient is named
    // for output files and carries its role and parameter for the runtime.
    // The gradient of every named float input (a pipeline stage's hidden
    // state from the previous stage) is a result `grad.<input>`, zero when
    // the objective does not depend on it. The model's own inputs are
    // token and document ids, which have none.
    SmallVector<std::pair<Value, std::string>> inputGrads;
    for (unsigned j = 0; j < numInputs; ++j) {
      Value arg = body.getArgument(j);
      auto name = forward.getArgAttrOfType<StringAttr>(j, DSV3Dialect::kInputName);
      if (!isFloatTensor(arg) || !name)
        continue;
      Value g = sweep.gradient(arg);
      inputGrads.push_back({g ? g : sweep.zeros(arg.getLoc(), arg.getType()),
                            "grad." + name.getValue().str()});
    }

    SmallVector<Value> results(ret.getOperands());
    SmallVector<DictionaryAttr> resultAttrs;
    for (unsigned i = 0; i < forward.getNumResults(); ++i)
      resultAttrs.push_back(forward.getResultAttrDict(i));
    for (auto &[g, name] : inputGrads) {
      results.push_back(g);
      resultAttrs.push_back(nullptr);
    }
    for (auto &[name, g] : paramGrads) {
      results.push_back(g);
      resultAttrs.push_back(nullptr);
    }
    func::ReturnOp::create(b, ret.getLoc(), results);
    ret.erase();
    gradFn.setType(FunctionType::get(&getContext(), body.getArgumentTypes(),
                                     ValueRange(results).getTypes()));
    gradFn.removeResAttrsAttr();
    for (auto [i, attrs] : llvm::enumerate(resultAttrs))
      if (attrs)
        gradFn.setResultAttrs(i, attrs);
    for (auto [k, seed] : llvm::enumerate(seeds))
      setInput(gradFn, numInputs + k, seed.second);
    unsigned next = forward.getNumResults();
    for (auto &[g, name] : inputGrads)
      setOutput(gradFn, next++, name, OutputRole::Activation);
    for (auto [k, entry] : llvm::enumerate(paramGrads))
      setOutput(gradFn, next + k, "grad." + entry.first.str(), OutputRole::Gradient,
                entry.first);
    if (!keepForward)
      forward.erase();
  }
};

} // namespace
