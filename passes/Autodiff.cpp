//===- Autodiff.cpp - reverse-mode differentiation of dsv3 functions ------===//
//
// Runs on tensor-level dsv3 IR (after dsv3-decompose). The forward function
// is cloned into `<name>_grad`; a reverse sweep over its single block emits,
// for each op on the path to the objective, the gradient ops of its
// differentiable operands, accumulating with arith.addf where a value has
// several uses. Weighted ops emit their B (input) and W (weight) gradients
// as separate ops so later schedules can move them apart.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/TypeSwitch.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3AUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

bool isFloatTensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && isa<FloatType>(t.getElementType());
}

/// The reverse sweep of one function body.
class ReverseSweep {
public:
  ReverseSweep(OpBuilder &b) : b(b) {}

  /// Adds `g` to the gradient of `v`.
  void accumulate(Value v, Value g) {
    if (!isFloatTensor(v))
      return;
    auto it = grads.find(v);
    if (it == grads.end())
      grads[v] = g;
    else
      it->second = arith::AddFOp::create(b, g.getLoc(), it->second, g);
  }
  Value grad(Value v) const { return grads.lookup(v); }

  /// Emits the gradient ops of `op` given the gradients of its results.
  LogicalResult differentiate(Operation *op);

private:
  Value zeros(Location loc, Type type) {
    auto t = cast<RankedTensorType>(type);
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(t, FloatAttr::get(t.getElementType(), 0.0)));
  }

  OpBuilder &b;
  DenseMap<Value, Value> grads;
};

LogicalResult ReverseSweep::differentiate(Operation *op) {
  Location loc = op->getLoc();
  // Ops none of whose results lead to the objective need nothing.
  if (llvm::none_of(op->getResults(), [&](Value r) { return grad(r); }))
    return success();

  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ParamOp) { return success(); })
      .Case([&](arith::ConstantOp) { return success(); })
      .Case([&](arith::AddFOp a) {
        accumulate(a.getLhs(), grad(a));
        accumulate(a.getRhs(), grad(a));
        return success();
      })
      .Case([&](arith::MulFOp m) {
        Value g = grad(m);
        accumulate(m.getLhs(), arith::MulFOp::create(b, loc, g, m.getRhs()));
        accumulate(m.getRhs(), arith::MulFOp::create(b, loc, g, m.getLhs()));
        return success();
      })
      .Case([&](tensor::ExtractSliceOp s) {
        if (!isFloatTensor(s.getSource()))
          return success();
        Value dsrc = tensor::InsertSliceOp::create(
            b, loc, grad(s), zeros(loc, s.getSourceType()), s.getMixedOffsets(),
            s.getMixedSizes(), s.getMixedStrides());
        accumulate(s.getSource(), dsrc);
        return success();
      })
      .Case([&](tensor::InsertSliceOp s) {
        Value g = grad(s);
        accumulate(s.getSource(),
                   tensor::ExtractSliceOp::create(
                       b, loc, s.getSourceType(), g, s.getMixedOffsets(),
                       s.getMixedSizes(), s.getMixedStrides()));
        if (!s.getDest().getDefiningOp<tensor::EmptyOp>())
          accumulate(s.getDest(),
                     tensor::InsertSliceOp::create(
                         b, loc, zeros(loc, s.getSourceType()), g,
                         s.getMixedOffsets(), s.getMixedSizes(),
                         s.getMixedStrides()));
        return success();
      })
      .Case([&](tensor::EmptyOp) { return success(); })
      .Case([&](tensor::ExpandShapeOp e) {
        accumulate(e.getSrc(),
                   tensor::CollapseShapeOp::create(
                       b, loc, e.getSrcType(), grad(e),
                       e.getReassociationIndices()));
        return success();
      })
      .Case([&](tensor::CollapseShapeOp c) {
        accumulate(c.getSrc(),
                   tensor::ExpandShapeOp::create(b, loc, c.getSrcType(),
                                                 grad(c),
                                                 c.getReassociationIndices()));
        return success();
      })
      .Case([&](LinearOp l) {
        Value g = grad(l);
        accumulate(l.getX(), LinearGradInputOp::create(b, loc, l.getX().getType(),
                                                       g, l.getWeight()));
        auto param = l.getWeight().getDefiningOp<ParamOp>();
        accumulate(l.getWeight(),
                   LinearGradWeightOp::create(
                       b, loc, l.getWeight().getType(), g, l.getX(),
                       param ? param.getNameAttr() : StringAttr()));
        return success();
      })
      .Case([&](RMSNormOp n) {
        Value g = grad(n);
        accumulate(n.getX(), RMSNormGradInputOp::create(
                                 b, loc, n.getX().getType(), n.getX(),
                                 n.getWeight(), g, n.getEpsilonAttr()));
        accumulate(n.getWeight(),
                   RMSNormGradWeightOp::create(b, loc, n.getWeight().getType(),
                                               n.getX(), g, n.getEpsilonAttr()));
        return success();
      })
      .Case([&](RopeOp r) {
        // The rotation is orthogonal: its gradient is the opposite rotation.
        auto back = RopeOp::create(b, loc, r.getType(), grad(r),
                                   r.getInvFreqAttr(), r.getAttentionScalingAttr(),
                                   r.getPositionOffsetAttr(),
                                   r.getTranspose() ? UnitAttr()
                                                    : b.getUnitAttr());
        accumulate(r.getX(), back);
        return success();
      })
      .Case([&](MLACoreOp m) {
        auto g = MLACoreGradOp::create(
            b, loc, m.getQNope().getType(), m.getQRope().getType(),
            m.getKNope().getType(), m.getKRope().getType(), m.getV().getType(),
            m.getQNope(), m.getQRope(), m.getKNope(), m.getKRope(), m.getV(),
            grad(m), m.getSegmentIds(), m.getSoftmaxScaleAttr());
        accumulate(m.getQNope(), g.getDqNope());
        accumulate(m.getQRope(), g.getDqRope());
        accumulate(m.getKNope(), g.getDkNope());
        accumulate(m.getKRope(), g.getDkRope());
        accumulate(m.getV(), g.getDv());
        return success();
      })
      .Case([&](SwiGLUOp s) {
        auto g = SwiGLUGradOp::create(b, loc, s.getType(), s.getType(),
                                      s.getGate(), s.getUp(), grad(s));
        accumulate(s.getGate(), g.getDgate());
        accumulate(s.getUp(), g.getDup());
        return success();
      })
      .Case([&](MoERouterOp r) {
        Value dw = grad(r.getWeights());
        if (!dw)
          return success();
        // Selection is piecewise constant: only the gate weights carry
        // gradient, through the sigmoid scores of the chosen experts.
        auto xs = r.getX().getType().getShape();
        auto logitsType = RankedTensorType::get(
            {xs[0], r.getRouter().getType().getDimSize(0)}, b.getF32Type());
        Value logits = LinearOp::create(b, loc, logitsType, r.getX(), r.getRouter());
        auto router = r.getRouter().getDefiningOp<ParamOp>();
        Value dlogits = MoERouterGradOp::create(
            b, loc, logitsType, logits, r.getExpertIds(), dw,
            r.getNormTopkProbAttr(), r.getRoutedScalingFactorAttr());
        accumulate(r.getX(), LinearGradInputOp::create(b, loc, r.getX().getType(),
                                                       dlogits, r.getRouter()));
        accumulate(r.getRouter(),
                   LinearGradWeightOp::create(
                       b, loc, r.getRouter().getType(), dlogits, r.getX(),
                       router ? router.getNameAttr() : StringAttr()));
        return success();
      })
      .Case([&](MoEDispatchOp d) {
        // The adjoint of a gather into rows is an unweighted combine.
        Value drows = grad(d.getRows());
        if (!drows)
          return success();
        auto idsType = d.getRowOfSlot().getType();
        Value ones = arith::ConstantOp::create(
            b, loc,
            DenseElementsAttr::get(
                RankedTensorType::get(idsType.getShape(), b.getF32Type()), 1.0f));
        accumulate(d.getX(), MoECombineOp::create(b, loc, d.getX().getType(), drows,
                                                  ones, d.getRowOfSlot()));
        return success();
      })
      .Case([&](GroupedLinearOp l) {
        Value g = grad(l);
        accumulate(l.getX(), GroupedLinearGradInputOp::create(
                                 b, loc, l.getX().getType(), g, l.getWeight(),
                                 l.getOffsets()));
        auto param = l.getWeight().getDefiningOp<ParamOp>();
        accumulate(l.getWeight(),
                   GroupedLinearGradWeightOp::create(
                       b, loc, l.getWeight().getType(), g, l.getX(), l.getOffsets(),
                       b.getI64IntegerAttr(l.getWeight().getType().getDimSize(0)),
                       param ? param.getNameAttr() : StringAttr()));
        return success();
      })
      .Case([&](MoECombineOp c) -> LogicalResult {
        auto dispatch = c.getRowOfSlot().getDefiningOp<MoEDispatchOp>();
        if (!dispatch)
          return c.emitOpError()
                 << "can be differentiated only when its rows come from a "
                    "dsv3.moe_dispatch";
        auto g = MoECombineGradOp::create(
            b, loc, c.getRows().getType(), c.getWeights().getType(), c.getRows(),
            c.getWeights(), c.getRowOfSlot(), dispatch.getSlotOfRow(), grad(c));
        accumulate(c.getRows(), g.getDrows());
        accumulate(c.getWeights(), g.getDweights());
        return success();
      })
      .Case([&](CrossEntropyOp c) {
        accumulate(c.getLogits(),
                   CrossEntropyGradOp::create(b, loc, c.getLogits().getType(),
                                              c.getLogits(), c.getLabels(),
                                              grad(c)));
        return success();
      })
      .Case([&](MoEBalanceLossOp l) {
        accumulate(l.getLogits(),
                   MoEBalanceLossGradOp::create(b, loc, l.getLogits().getType(),
                                                l.getLogits(), l.getExpertIds(),
                                                grad(l), l.getAlphaAttr()));
        return success();
      })
      .Case([&](EmbeddingOp e) {
        accumulate(e.getTable(),
                   EmbeddingGradOp::create(b, loc, e.getTable().getType(),
                                           e.getIds(), grad(e)));
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitOpError()
               << "has no gradient rule (dsv3-autodiff runs on tensor-level "
                  "dsv3 IR, after dsv3-decompose)";
      });
}

struct DSV3AutodiffPass : dsv3::impl::DSV3AutodiffPassBase<DSV3AutodiffPass> {
  using Base::Base;

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
        if (Value g = sweep.grad(p)) {
          auto [it, inserted] = paramGrads.insert({p.getName(), g});
          if (!inserted)
            it->second = arith::AddFOp::create(b, p.getLoc(), it->second, g);
        }

    SmallVector<Value> results(ret.getOperands());
    SmallVector<Attribute> names;
    for (unsigned i = 0; i < forward.getNumResults(); ++i)
      names.push_back(forward.getResultAttr(i, "dsv3.output"));
    for (auto &[name, g] : paramGrads) {
      results.push_back(g);
      names.push_back(b.getStringAttr("grad." + name.str()));
    }
    func::ReturnOp::create(b, ret.getLoc(), results);
    ret.erase();
    gradFn.setType(FunctionType::get(&getContext(),
                                     gradFn.getFunctionType().getInputs(),
                                     ValueRange(results).getTypes()));
    gradFn.removeResAttrsAttr();
    for (auto [i, n] : llvm::enumerate(names))
      if (n)
        gradFn.setResultAttr(i, "dsv3.output", n);
    if (!keepForward)
      forward.erase();
  }
};

} // namespace
