//===- LinalgBuilder.h - terse construction of linalg.generic ---*- C++ -*-===//
//
// Shared by the convert-dsv3-to-linalg pattern files: every dsv3 tensor op is
// spelled as a few linalg.generic ops, so building them must read like the
// math. Private to lowering/.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_LOWERING_DSV3TOLINALG_LINALGBUILDER_H
#define DSV3_LOWERING_DSV3TOLINALG_LINALGBUILDER_H

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

namespace dsv3::lowering {

using BodyFn = llvm::function_ref<void(mlir::OpBuilder &, mlir::Location,
                                       mlir::ValueRange)>;
using mlir::utils::IteratorType;

class LinalgBuilder {
public:
  LinalgBuilder(mlir::OpBuilder &b, mlir::Location loc) : b(b), loc(loc) {}

  mlir::OpBuilder &builder() { return b; }
  mlir::Location location() { return loc; }
  mlir::Type f32() { return b.getF32Type(); }

  mlir::Value empty(llvm::ArrayRef<int64_t> shape, mlir::Type elt = {}) {
    return mlir::tensor::EmptyOp::create(b, loc, shape, elt ? elt : f32());
  }
  /// A new tensor filled with `value`.
  mlir::Value filled(llvm::ArrayRef<int64_t> shape, double value,
                     mlir::Type elt = {}) {
    mlir::Type t = elt ? elt : f32();
    mlir::Value init = empty(shape, t);
    mlir::Value c = mlir::arith::ConstantOp::create(
        b, loc, t, b.getFloatAttr(t, value));
    return mlir::linalg::FillOp::create(b, loc, mlir::ValueRange{c},
                                        mlir::ValueRange{init})
        .getResult(0);
  }
  mlir::Value filledInt(llvm::ArrayRef<int64_t> shape, int64_t value) {
    mlir::Value init = empty(shape, b.getI64Type());
    mlir::Value c = mlir::arith::ConstantOp::create(
        b, loc, b.getI64IntegerAttr(value));
    return mlir::linalg::FillOp::create(b, loc, mlir::ValueRange{c},
                                        mlir::ValueRange{init})
        .getResult(0);
  }

  /// Map from `numDims` loops to the listed loop dimensions.
  mlir::AffineMap map(unsigned numDims, llvm::ArrayRef<unsigned> dims) {
    llvm::SmallVector<mlir::AffineExpr> exprs;
    for (unsigned d : dims)
      exprs.push_back(b.getAffineDimExpr(d));
    return mlir::AffineMap::get(numDims, 0, exprs, b.getContext());
  }
  mlir::AffineMap identity(unsigned numDims) {
    return b.getMultiDimIdentityMap(numDims);
  }

  /// linalg.generic with one or more results.
  llvm::SmallVector<mlir::Value>
  generic(mlir::ValueRange inputs, mlir::ValueRange inits,
          llvm::ArrayRef<mlir::AffineMap> maps,
          llvm::ArrayRef<IteratorType> iterators, BodyFn body,
          llvm::ArrayRef<mlir::NamedAttribute> attrs = {}) {
    auto op = mlir::linalg::GenericOp::create(
        b, loc, mlir::TypeRange(inits), inputs, inits, maps, iterators, body,
        attrs);
    return llvm::SmallVector<mlir::Value>(op.getResults());
  }
  mlir::Value generic1(mlir::ValueRange inputs, mlir::Value init,
                       llvm::ArrayRef<mlir::AffineMap> maps,
                       llvm::ArrayRef<IteratorType> iterators, BodyFn body,
                       llvm::ArrayRef<mlir::NamedAttribute> attrs = {}) {
    return generic(inputs, mlir::ValueRange{init}, maps, iterators, body,
                   attrs)[0];
  }

  /// `n` parallel iterators followed by `r` reductions.
  static llvm::SmallVector<IteratorType> iters(unsigned parallel,
                                               unsigned reduction = 0) {
    llvm::SmallVector<IteratorType> it(parallel, IteratorType::parallel);
    it.append(reduction, IteratorType::reduction);
    return it;
  }

  /// Collapses all leading dimensions: [d0, .., dk, n] -> [d0*..*dk, n].
  mlir::Value collapseTo2D(mlir::Value x) {
    auto type = mlir::cast<mlir::RankedTensorType>(x.getType());
    if (type.getRank() == 2)
      return x;
    mlir::ReassociationIndices lead;
    for (int64_t i = 0; i + 1 < type.getRank(); ++i)
      lead.push_back(i);
    return mlir::tensor::CollapseShapeOp::create(
        b, loc, x,
        llvm::SmallVector<mlir::ReassociationIndices>{lead,
                                                      {type.getRank() - 1}});
  }
  /// Collapses all dimensions into one.
  mlir::Value collapseTo1D(mlir::Value x) {
    auto type = mlir::cast<mlir::RankedTensorType>(x.getType());
    if (type.getRank() == 1)
      return x;
    mlir::ReassociationIndices all;
    for (int64_t i = 0; i < type.getRank(); ++i)
      all.push_back(i);
    return mlir::tensor::CollapseShapeOp::create(
        b, loc, x, llvm::SmallVector<mlir::ReassociationIndices>{all});
  }
  /// Inverse of collapseTo2D: restores the leading dimensions of `like`.
  mlir::Value expandLike(mlir::Value x2d, mlir::RankedTensorType like,
                         int64_t lastDim) {
    if (like.getRank() == 2)
      return x2d;
    llvm::SmallVector<int64_t> shape(like.getShape());
    shape.back() = lastDim;
    mlir::ReassociationIndices lead;
    for (int64_t i = 0; i + 1 < like.getRank(); ++i)
      lead.push_back(i);
    return mlir::tensor::ExpandShapeOp::create(
        b, loc, mlir::RankedTensorType::get(shape, f32()), x2d,
        llvm::SmallVector<mlir::ReassociationIndices>{lead,
                                                      {like.getRank() - 1}});
  }

  /// C[m,n] = sum_k A[m,k] * B[n,k] (a target may call its GEMM kernel for
  /// this structure, see lowering/CPU/Ukernels.h).
  mlir::Value matmulNT(mlir::Value a, mlir::Value bT);
  /// [r, c] -> [c, r], materialised so GEMMs keep the microkernel's layout.
  mlir::Value transpose2D(mlir::Value x);
  /// out += a * b generic body, the shape of every contraction here.
  static void multiplyAccumulate(mlir::OpBuilder &b, mlir::Location loc,
                                 mlir::ValueRange args);

private:
  mlir::OpBuilder &b;
  mlir::Location loc;
};

/// Scalar helpers for generic bodies.
inline mlir::Value f32Const(mlir::OpBuilder &b, mlir::Location loc, double v) {
  return mlir::arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}
inline mlir::Value i64Const(mlir::OpBuilder &b, mlir::Location loc, int64_t v) {
  return mlir::arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
}
/// An uninitialised tensor of `type` (a destination).
inline mlir::Value emptyLike(mlir::OpBuilder &b, mlir::Location loc,
                             mlir::Type type) {
  auto t = mlir::cast<mlir::RankedTensorType>(type);
  return mlir::tensor::EmptyOp::create(b, loc, t.getShape(), t.getElementType());
}
inline mlir::Value indexConst(mlir::OpBuilder &b, mlir::Location loc,
                              int64_t v) {
  return mlir::arith::ConstantIndexOp::create(b, loc, v);
}
/// Clamps an i64 id into [0, size) and casts it to index: ids are validated
/// before execution; the clamp keeps a missed check from reading out of bounds.
mlir::Value clampedIndex(mlir::OpBuilder &b, mlir::Location loc,
                         mlir::Value id, int64_t size);
/// label >= 0: negative labels mark positions the loss ignores.
mlir::Value isValidLabel(mlir::OpBuilder &b, mlir::Location loc,
                         mlir::Value label);
/// 1 / (1 + exp(-x)).
mlir::Value sigmoid(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);
/// silu(g) * u.
mlir::Value siluTimes(mlir::OpBuilder &b, mlir::Location loc, mlir::Value g,
                      mlir::Value u);
/// Gradients (dg, du) of silu(g) * u for upstream gradient dy.
std::pair<mlir::Value, mlir::Value> siluTimesGrad(mlir::OpBuilder &b,
                                                  mlir::Location loc,
                                                  mlir::Value g, mlir::Value u,
                                                  mlir::Value dy);

void populateCommonLoweringPatterns(mlir::RewritePatternSet &patterns);
void populateAttentionLoweringPatterns(mlir::RewritePatternSet &patterns);
void populateMoELoweringPatterns(mlir::RewritePatternSet &patterns);
void populateFP8LoweringPatterns(mlir::RewritePatternSet &patterns);

/// dsv3.moe_dispatch's rows: rows[r, d] = x[slot_of_row[r] / k, d].
mlir::Value gatherDispatchedRows(mlir::OpBuilder &b, mlir::Location loc,
                                 mlir::Value x, mlir::Value slotOfRow, int64_t k);

} // namespace dsv3::lowering

#endif // DSV3_LOWERING_DSV3TOLINALG_LINALGBUILDER_H
