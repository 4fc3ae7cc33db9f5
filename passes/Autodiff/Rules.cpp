//===- Rules.cpp - reverse-mode gradient rules ---------------------------===//
//
// One function per op: given the gradients of the op's results, build its
// operands' gradients. Attached as DifferentiableOpInterface models to the
// dsv3 ops and to the arith/tensor ops the decomposition produces, so the
// dialect knows no transformation and a new op adds its rule here (or in
// its own file) without touching the sweep.
//
//===----------------------------------------------------------------------===//
#include "passes/Autodiff/Rules.h"

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;

namespace dsv3 {
namespace {

LogicalResult addFGradient(arith::AddFOp a, OpBuilder &b,
                           GradientSweep &sweep) {
  sweep.accumulate(a.getLhs(), sweep.gradient(a));
  sweep.accumulate(a.getRhs(), sweep.gradient(a));
  return success();
}

LogicalResult mulFGradient(arith::MulFOp m, OpBuilder &b,
                           GradientSweep &sweep) {
  Location loc = m.getLoc();
  Value g = sweep.gradient(m);
  sweep.accumulate(m.getLhs(), arith::MulFOp::create(b, loc, g, m.getRhs()));
  sweep.accumulate(m.getRhs(), arith::MulFOp::create(b, loc, g, m.getLhs()));
  return success();
}

LogicalResult extractSliceGradient(tensor::ExtractSliceOp s, OpBuilder &b,
                                   GradientSweep &sweep) {
  Location loc = s.getLoc();
  if (!isFloatTensor(s.getSource()))
    return success();
  Value dsrc = tensor::InsertSliceOp::create(
      b, loc, sweep.gradient(s), sweep.zeros(loc, s.getSourceType()),
      s.getMixedOffsets(), s.getMixedSizes(), s.getMixedStrides());
  sweep.accumulate(s.getSource(), dsrc);
  return success();
}

LogicalResult insertSliceGradient(tensor::InsertSliceOp s, OpBuilder &b,
                                  GradientSweep &sweep) {
  Location loc = s.getLoc();
  Value g = sweep.gradient(s);
  sweep.accumulate(s.getSource(),
                   tensor::ExtractSliceOp::create(
                       b, loc, s.getSourceType(), g, s.getMixedOffsets(),
                       s.getMixedSizes(), s.getMixedStrides()));
  if (!s.getDest().getDefiningOp<tensor::EmptyOp>())
    sweep.accumulate(s.getDest(),
                     tensor::InsertSliceOp::create(
                         b, loc, sweep.zeros(loc, s.getSourceType()), g,
                         s.getMixedOffsets(), s.getMixedSizes(),
                         s.getMixedStrides()));
  return success();
}

LogicalResult expandShapeGradient(tensor::ExpandShapeOp e, OpBuilder &b,
                                  GradientSweep &sweep) {
  Location loc = e.getLoc();
  sweep.accumulate(e.getSrc(), tensor::CollapseShapeOp::create(
                                   b, loc, e.getSrcType(), sweep.gradient(e),
                                   e.getReassociationIndices()));
  return success();
}

LogicalResult collapseShapeGradient(tensor::CollapseShapeOp c, OpBuilder &b,
                                    GradientSweep &sweep) {
  Location loc = c.getLoc();
  sweep.accumulate(c.getSrc(), tensor::ExpandShapeOp::create(
                                   b, loc, c.getSrcType(), sweep.gradient(c),
                                   c.getReassociationIndices()));
  return success();
}

LogicalResult linearGradient(LinearOp l, OpBuilder &b, GradientSweep &sweep) {
  Location loc = l.getLoc();
  Value g = sweep.gradient(l);
  sweep.accumulate(l.getX(), LinearGradInputOp::create(
                                 b, loc, l.getX().getType(), g, l.getWeight()));
  auto param = l.getWeight().getDefiningOp<ParamOp>();
  sweep.accumulate(
      l.getWeight(),
      LinearGradWeightOp::create(b, loc, l.getWeight().getType(), g, l.getX(),
                                 param ? param.getNameAttr() : StringAttr()));
  return success();
}

LogicalResult rmsNormGradient(RMSNormOp n, OpBuilder &b, GradientSweep &sweep) {
  Location loc = n.getLoc();
  Value g = sweep.gradient(n);
  sweep.accumulate(n.getX(), RMSNormGradInputOp::create(
                                 b, loc, n.getX().getType(), n.getX(),
                                 n.getWeight(), g, n.getEpsilonAttr()));
  sweep.accumulate(n.getWeight(), RMSNormGradWeightOp::create(
                                      b, loc, n.getWeight().getType(), n.getX(),
                                      g, n.getEpsilonAttr()));
  return success();
}

LogicalResult ropeGradient(RopeOp r, OpBuilder &b, GradientSweep &sweep) {
  Location loc = r.getLoc();
  // The rotation is orthogonal: its gradient is the opposite rotation.
  auto back = RopeOp::create(b, loc, r.getType(), sweep.gradient(r), r.getPositions(),
                             r.getInvFreqAttr(), r.getAttentionScalingAttr(),
                             r.getTranspose() ? UnitAttr() : b.getUnitAttr());
  sweep.accumulate(r.getX(), back);
  return success();
}

LogicalResult mlaCoreGradient(MLACoreOp m, OpBuilder &b, GradientSweep &sweep) {
  Location loc = m.getLoc();
  if (m.getQNope().getType().getDimSize(1) != m.getKNope().getType().getDimSize(1))
    return m.emitOpError() << "is differentiated only with as many queries as keys "
                              "(no cached prefix)";
  auto g = MLACoreGradOp::create(
      b, loc, m.getQNope().getType(), m.getQRope().getType(),
      m.getKNope().getType(), m.getKRope().getType(), m.getV().getType(),
      m.getQNope(), m.getQRope(), m.getKNope(), m.getKRope(), m.getV(),
      sweep.gradient(m), m.getSegmentIds(), m.getSoftmaxScaleAttr());
  sweep.accumulate(m.getQNope(), g.getDqNope());
  sweep.accumulate(m.getQRope(), g.getDqRope());
  sweep.accumulate(m.getKNope(), g.getDkNope());
  sweep.accumulate(m.getKRope(), g.getDkRope());
  sweep.accumulate(m.getV(), g.getDv());
  return success();
}

LogicalResult swigluGradient(SwiGLUOp s, OpBuilder &b, GradientSweep &sweep) {
  Location loc = s.getLoc();
  auto g = SwiGLUGradOp::create(b, loc, s.getType(), s.getType(), s.getGate(),
                                s.getUp(), sweep.gradient(s));
  sweep.accumulate(s.getGate(), g.getDgate());
  sweep.accumulate(s.getUp(), g.getDup());
  return success();
}

LogicalResult moeRouterGradient(MoERouterOp r, OpBuilder &b,
                                GradientSweep &sweep) {
  Location loc = r.getLoc();
  Value dw = sweep.gradient(r.getWeights());
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
      b, loc, logitsType, logits, r.getExpertIds(), dw, r.getNormTopkProbAttr(),
      r.getRoutedScalingFactorAttr());
  sweep.accumulate(r.getX(),
                   LinearGradInputOp::create(b, loc, r.getX().getType(),
                                             dlogits, r.getRouter()));
  sweep.accumulate(r.getRouter(),
                   LinearGradWeightOp::create(
                       b, loc, r.getRouter().getType(), dlogits, r.getX(),
                       router ? router.getNameAttr() : StringAttr()));
  return success();
}

LogicalResult moeDispatchGradient(MoEDispatchOp d, OpBuilder &b,
                                  GradientSweep &sweep) {
  Location loc = d.getLoc();
  // The adjoint of a gather into rows is an unweighted combine.
  Value drows = sweep.gradient(d.getRows());
  if (!drows)
    return success();
  auto idsType = d.getRowOfSlot().getType();
  Value ones = arith::ConstantOp::create(
      b, loc,
      DenseElementsAttr::get(
          RankedTensorType::get(idsType.getShape(), b.getF32Type()), 1.0f));
  sweep.accumulate(d.getX(),
                   MoECombineOp::create(b, loc, d.getX().getType(), drows, ones,
                                        d.getRowOfSlot()));
  return success();
}

LogicalResult groupedLinearGradient(GroupedLinearOp l, OpBuilder &b,
                                    GradientSweep &sweep) {
  Location loc = l.getLoc();
  Value g = sweep.gradient(l);
  sweep.accumulate(l.getX(), GroupedLinearGradInputOp::create(
                                 b, loc, l.getX().getType(), g, l.getWeight(),
                                 l.getOffsets()));
  auto param = l.getWeight().getDefiningOp<ParamOp>();
  sweep.accumulate(
      l.getWeight(),
      GroupedLinearGradWeightOp::create(
          b, loc, l.getWeight().getType(), g, l.getX(), l.getOffsets(),
          b.getI64IntegerAttr(l.getWeight().getType().getDimSize(0)),
          param ? param.getNameAttr() : StringAttr()));
  return success();
}

LogicalResult moeCombineGradient(MoECombineOp c, OpBuilder &b,
                                 GradientSweep &sweep) {
  Location loc = c.getLoc();
  auto dispatch = c.getRowOfSlot().getDefiningOp<MoEDispatchOp>();
  if (!dispatch)
    return c.emitOpError()
           << "can be differentiated only when its rows come from a "
              "dsv3.moe_dispatch";
  auto g = MoECombineGradOp::create(b, loc, c.getRows().getType(),
                                    c.getWeights().getType(), c.getRows(),
                                    c.getWeights(), c.getRowOfSlot(),
                                    dispatch.getSlotOfRow(), sweep.gradient(c));
  sweep.accumulate(c.getRows(), g.getDrows());
  sweep.accumulate(c.getWeights(), g.getDweights());
  return success();
}

LogicalResult crossEntropyGradient(CrossEntropyOp c, OpBuilder &b,
                                   GradientSweep &sweep) {
  Location loc = c.getLoc();
  sweep.accumulate(c.getLogits(),
                   CrossEntropyGradOp::create(b, loc, c.getLogits().getType(),
                                              c.getLogits(), c.getLabels(),
                                              sweep.gradient(c)));
  return success();
}

LogicalResult moeBalanceLossGradient(MoEBalanceLossOp l, OpBuilder &b,
                                     GradientSweep &sweep) {
  Location loc = l.getLoc();
  sweep.accumulate(l.getLogits(),
                   MoEBalanceLossGradOp::create(
                       b, loc, l.getLogits().getType(), l.getLogits(),
                       l.getExpertIds(), sweep.gradient(l), l.getAlphaAttr()));
  return success();
}

LogicalResult embeddingGradient(EmbeddingOp e, OpBuilder &b,
                                GradientSweep &sweep) {
  Location loc = e.getLoc();
  sweep.accumulate(e.getTable(),
                   EmbeddingGradOp::create(b, loc, e.getTable().getType(),
                                           e.getIds(), sweep.gradient(e)));
  return success();
}

/// Ops that start a gradient path (parameters, constants, empty tensors):
/// nothing flows further back.
template <typename OpT>
struct NoGradient
    : DifferentiableOpInterface::ExternalModel<NoGradient<OpT>, OpT> {
  LogicalResult emitGradient(Operation *, OpBuilder &, GradientSweep &) const {
    return success();
  }
};

} // namespace

void registerGradientRules(DialectRegistry &registry) {
  registerCommGradientRules(registry);
  registry.addExtension(+[](MLIRContext *ctx, DSV3Dialect *) {
    ParamOp::attachInterface<NoGradient<ParamOp>>(*ctx);
    PositionsOp::attachInterface<NoGradient<PositionsOp>>(*ctx);
    LinearOp::attachInterface<Rule<LinearOp, linearGradient>>(*ctx);
    RMSNormOp::attachInterface<Rule<RMSNormOp, rmsNormGradient>>(*ctx);
    RopeOp::attachInterface<Rule<RopeOp, ropeGradient>>(*ctx);
    MLACoreOp::attachInterface<Rule<MLACoreOp, mlaCoreGradient>>(*ctx);
    SwiGLUOp::attachInterface<Rule<SwiGLUOp, swigluGradient>>(*ctx);
    MoERouterOp::attachInterface<Rule<MoERouterOp, moeRouterGradient>>(*ctx);
    MoEDispatchOp::attachInterface<Rule<MoEDispatchOp, moeDispatchGradient>>(
        *ctx);
    GroupedLinearOp::attachInterface<
        Rule<GroupedLinearOp, groupedLinearGradient>>(*ctx);
    MoECombineOp::attachInterface<Rule<MoECombineOp, moeCombineGradient>>(*ctx);
    CrossEntropyOp::attachInterface<Rule<CrossEntropyOp, crossEntropyGradient>>(
        *ctx);
    MoEBalanceLossOp::attachInterface<
        Rule<MoEBalanceLossOp, moeBalanceLossGradient>>(*ctx);
    EmbeddingOp::attachInterface<Rule<EmbeddingOp, embeddingGradient>>(*ctx);
  });
  registry.addExtension(+[](MLIRContext *ctx, arith::ArithDialect *) {
    arith::ConstantOp::attachInterface<NoGradient<arith::ConstantOp>>(*ctx);
    arith::AddFOp::attachInterface<Rule<arith::AddFOp, addFGradient>>(*ctx);
    arith::MulFOp::attachInterface<Rule<arith::MulFOp, mulFGradient>>(*ctx);
  });
  registry.addExtension(+[](MLIRContext *ctx, tensor::TensorDialect *) {
    tensor::ExtractSliceOp::attachInterface<
        Rule<tensor::ExtractSliceOp, extractSliceGradient>>(*ctx);
    tensor::InsertSliceOp::attachInterface<
        Rule<tensor::InsertSliceOp, insertSliceGradient>>(*ctx);
    tensor::EmptyOp::attachInterface<NoGradient<tensor::EmptyOp>>(*ctx);
    tensor::ExpandShapeOp::attachInterface<
        Rule<tensor::ExpandShapeOp, expandShapeGradient>>(*ctx);
    tensor::CollapseShapeOp::attachInterface<
        Rule<tensor::CollapseShapeOp, collapseShapeGradient>>(*ctx);
  });
}

} // namespace dsv3
