//===- FP8TileQuantize.cpp - dsv3-fp8-tile-quantize -----------------------===//
//
// The DeepSeek-V3 FP8 recipe as a rewrite of tensor-level IR, after
// decompose (and autodiff when training), before convert-dsv3-to-linalg:
// every eligible linear-layer GEMM becomes explicit quantize ops and a
// block-scaled FP8 GEMM, so dumps show tiles, scales and formats.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringSet.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3FP8TILEQUANTIZEPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

constexpr int64_t kTile = 128;

struct Quantized {
  Value codes, scales;
};

/// Builds the rewritten IR for one function and memoizes quantizations:
/// a weight is quantized once for fprop and dgrad, an activation once for
/// all the layers that read it.
class FP8Rewriter {
public:
  FP8Rewriter(OpBuilder &b, Type codeType, bool pow2)
      : b(b), codeType(codeType), pow2(pow2) {}

  /// [..., K] -> [M, K].
  Value collapse(Location loc, Value x) {
    auto type = cast<RankedTensorType>(x.getType());
    if (type.getRank() == 2)
      return x;
    Value &collapsed = collapsedValues[x];
    if (collapsed)
      return collapsed;
    SmallVector<ReassociationIndices> groups(2);
    for (int64_t i = 0; i + 1 < type.getRank(); ++i)
      groups[0].push_back(i);
    groups[1].push_back(type.getRank() - 1);
    collapsed = tensor::CollapseShapeOp::create(b, loc, x, groups);
    return collapsed;
  }

  /// [M, N] -> the leading dimensions of `like` with N last.
  Value expand(Location loc, Value y, Type resultType) {
    auto type = cast<RankedTensorType>(resultType);
    if (type.getRank() == 2)
      return y;
    SmallVector<ReassociationIndices> groups(2);
    for (int64_t i = 0; i + 1 < type.getRank(); ++i)
      groups[0].push_back(i);
    groups[1].push_back(type.getRank() - 1);
    return tensor::ExpandShapeOp::create(b, loc, type, y, groups);
  }

  /// Tiles a matrix, or each matrix of an expert stack [E, R, C]; with
  /// `groups` (dispatch offsets), row tiles restart at every group.
  Quantized quantize(Location loc, Value x, int64_t tileRows, int64_t tileCols,
                     Value groups = Value()) {
    auto key = std::make_tuple(x.getAsOpaquePointer(), tileRows, tileCols,
                               groups.getAsOpaquePointer());
    auto it = memo.find(key);
    if (it != memo.end())
      return it->second;
    auto shape = cast<RankedTensorType>(x.getType()).getShape();
    auto codesType = RankedTensorType::get(shape, codeType);
    SmallVector<int64_t> scaleShape(shape.drop_back(2));
    int64_t rows = shape[shape.size() - 2], cols = shape.back();
    int64_t rowTiles = ceilDiv(rows, tileRows);
    if (groups)
      rowTiles += cast<RankedTensorType>(groups.getType()).getDimSize(0) - 1;
    scaleShape.append({rowTiles, ceilDiv(cols, tileCols)});
    auto scalesType = RankedTensorType::get(scaleShape, b.getF32Type());
    auto q = FP8QuantizeOp::create(b, loc, codesType, scalesType, x, groups,
                                   b.getDenseI64ArrayAttr({tileRows, tileCols}),
                                   pow2 ? b.getUnitAttr() : UnitAttr());
    Quantized result{q.getCodes(), q.getScales()};
    memo[key] = result;
    return result;
  }

  Value gemm(Location loc, Quantized a, Quantized bq, int64_t m, int64_t n,
             bool transposeA, bool transposeB) {
    return FP8GemmOp::create(
        b, loc, RankedTensorType::get({m, n}, b.getF32Type()), a.codes,
        a.scales, bq.codes, bq.scales, b.getI64IntegerAttr(kTile),
        transposeA ? b.getUnitAttr() : UnitAttr(),
        transposeB ? b.getUnitAttr() : UnitAttr());
  }

  /// Expert GEMMs: `rows` grouped by `offsets`, one B per expert.
  Value mGroupedGemm(Location loc, Quantized a, Quantized bq, Value offsets,
                     int64_t rows, int64_t n, bool transposeB) {
    return FP8MGroupedGemmOp::create(
        b, loc, RankedTensorType::get({rows, n}, b.getF32Type()), a.codes,
        a.scales, bq.codes, bq.scales, offsets, b.getI64IntegerAttr(kTile),
        transposeB ? b.getUnitAttr() : UnitAttr());
  }

  OpBuilder &b;

private:
  static int64_t ceilDiv(int64_t a, int64_t d) { return (a + d - 1) / d; }

  Type codeType;
  bool pow2;
  std::map<std::tuple<void *, int64_t, int64_t, void *>, Quantized> memo;
  llvm::DenseMap<Value, Value> collapsedValues;
};

struct DSV3FP8TileQuantizePass
    : dsv3::impl::DSV3FP8TileQuantizePassBase<DSV3FP8TileQuantizePass> {
  using Base::Base;

  LogicalResult validate() {
    func::FuncOp f = getOperation();
    if (format != "e4m3" && format != "e5m2")
      return f.emitError() << "dsv3-fp8-tile-quantize: format must be e4m3 or "
                              "e5m2, got '" << format << "'";
    for (auto [name, value] :
         {std::pair<StringRef, int64_t>{"activation-tile", activationTile},
          {"weight-block", weightBlock},
          {"promotion-interval", promotionInterval}})
      if (value != kTile)
        return f.emitError() << "dsv3-fp8-tile-quantize: " << name << " = "
                             << value << " is not implemented; the CPU "
                             << "kernels use " << kTile;
    for (const std::string &g : gemms)
      if (g != "fprop" && g != "dgrad" && g != "wgrad")
        return f.emitError() << "dsv3-fp8-tile-quantize: unknown GEMM '" << g
                             << "' in gemms (fprop, dgrad, wgrad)";
    if (cacheActivations != "fp32" && cacheActivations != "fp8")
      return f.emitError() << "dsv3-fp8-tile-quantize: cache-activations must "
                              "be fp32 or fp8, got '" << cacheActivations << "'";
    for (const std::string &r : highPrecisionRoles)
      if (!symbolizeParamRole(r))
        return f.emitError() << "dsv3-fp8-tile-quantize: unknown parameter role '" << r
                             << "' in high-precision-roles";
    return success();
  }

  bool converts(StringRef gemm) const {
    return gemms.empty() || llvm::is_contained(gemms, gemm.str());
  }

  /// A layer is converted when its weight is a parameter whose role is not
  /// kept in high precision and whose name matches no `high-precision`
  /// substring.
  bool eligible(StringAttr name) const {
    if (!name)
      return false;
    auto role = roles.find(name);
    ParamRole r = role == roles.end() ? ParamRole::Weight : role->second;
    if (highPrecisionRoles.empty()
            ? llvm::is_contained({ParamRole::Embedding, ParamRole::Head,
                                  ParamRole::MTPProjection, ParamRole::Router},
                                 r)
            : llvm::is_contained(highPrecisionRoles, stringifyParamRole(r).str()))
      return false;
    return llvm::none_of(highPrecision, [&](const std::string &p) {
      return name.getValue().contains(p);
    });
  }
  static StringAttr paramName(Value weight) {
    auto p = weight.getDefiningOp<ParamOp>();
    return p ? p.getNameAttr() : StringAttr();
  }

  /// Role of every parameter of the function, by name (weight-gradient ops
  /// name their parameter instead of using it).
  llvm::DenseMap<StringAttr, ParamRole> roles;

  void runOnOperation() override {
    if (failed(validate()))
      return signalPassFailure();
    func::FuncOp f = getOperation();
    OpBuilder b(f.getContext());
    f.walk([&](ParamOp p) { roles[p.getNameAttr()] = p.getRoleOrWeight(); });
    Type codeType = format == "e4m3" ? Type(b.getType<Float8E4M3FNType>())
                                     : Type(b.getType<Float8E5M2Type>());
    FP8Rewriter rw(b, codeType, powerOfTwoScales);
    bool cacheFP8 = cacheActivations == "fp8";

    SmallVector<Operation *> ops;
    f.walk([&](Operation *op) {
      if (isa<LinearOp, LinearGradInputOp, LinearGradWeightOp, GroupedLinearOp,
              GroupedLinearGradInputOp, GroupedLinearGradWeightOp>(op))
        ops.push_back(op);
    });
    // Forward linears first (walk order), so that wgrad finds the FP8 copy
    // of its activation when caching in FP8.
    llvm::DenseMap<Value, Quantized> forwardCopies;
    // What wgrad quantizes for the activation `x` (as the 2-D `x2d`): with
    // FP8 caching, the forward's FP8 copy of it.
    auto wgradInput = [&](Location loc, Value x, Value x2d) -> Value {
      auto it = forwardCopies.find(x);
      if (!cacheFP8 || it == forwardCopies.end())
        return x2d;
      return FP8DequantizeOp::create(b, loc, x2d.getType(), it->second.codes,
                                     it->second.scales,
                                     b.getDenseI64ArrayAttr({1, kTile}));
    };
    // Tile and scale shapes are static: dynamic shapes stay float32.
    auto isStatic = [](Type t) {
      auto r = dyn_cast<RankedTensorType>(t);
      return r && r.hasStaticShape();
    };
    for (Operation *op : ops) {
      if (!llvm::all_of(op->getOperandTypes(), isStatic) ||
          !llvm::all_of(op->getResultTypes(), isStatic))
        continue;
      b.setInsertionPoint(op);
      Location loc = op->getLoc();
      Value replacement;
      if (auto l = dyn_cast<LinearOp>(op)) {
        if (!converts("fprop") || !eligible(paramName(l.getWeight())))
          continue;
        Value x = rw.collapse(loc, l.getX());
        auto w = l.getWeight().getType().getShape();
        Quantized qx = rw.quantize(loc, x, 1, kTile);
        forwardCopies.try_emplace(l.getX(), qx);
        Quantized qw = rw.quantize(loc, l.getWeight(), kTile, kTile);
        int64_t m = cast<RankedTensorType>(x.getType()).getDimSize(0);
        replacement = rw.expand(loc, rw.gemm(loc, qx, qw, m, w[0], false, false),
                                l.getType());
      } else if (auto g = dyn_cast<LinearGradInputOp>(op)) {
        if (!converts("dgrad") || !eligible(paramName(g.getWeight())))
          continue;
        // dx = dy W: B is the weight's blocks read transposed.
        Value dy = rw.collapse(loc, g.getDy());
        auto w = g.getWeight().getType().getShape();
        Quantized qdy = rw.quantize(loc, dy, 1, kTile);
        Quantized qw = rw.quantize(loc, g.getWeight(), kTile, kTile);
        int64_t m = cast<RankedTensorType>(dy.getType()).getDimSize(0);
        replacement = rw.expand(loc, rw.gemm(loc, qdy, qw, m, w[1], false, true),
                                g.getType());
      } else if (auto g = dyn_cast<LinearGradWeightOp>(op)) {
        if (!converts("wgrad") || !eligible(g.getParamAttr()))
          continue;
        // dW = dy^T x: both operands contracted over tokens, 128x1 tiles.
        Value dy = rw.collapse(loc, g.getDy());
        Value x = wgradInput(loc, g.getX(), rw.collapse(loc, g.getX()));
        Quantized qdy = rw.quantize(loc, dy, kTile, 1);
        Quantized qx = rw.quantize(loc, x, kTile, 1);
        auto dw = g.getType().getShape();
        replacement = rw.gemm(loc, qdy, qx, dw[0], dw[1], true, true);
      } else if (auto l = dyn_cast<GroupedLinearOp>(op)) {
        // Routed experts: the same recipe per expert, each expert's weight
        // in its own 128x128 blocks.
        if (!converts("fprop") || !eligible(paramName(l.getWeight())))
          continue;
        Quantized qx = rw.quantize(loc, l.getX(), 1, kTile);
        forwardCopies.try_emplace(l.getX(), qx);
        Quantized qw = rw.quantize(loc, l.getWeight(), kTile, kTile);
        auto y = l.getType().getShape();
        replacement = rw.mGroupedGemm(loc, qx, qw, l.getOffsets(), y[0], y[1],
                                      /*transposeB=*/false);
      } else if (auto g = dyn_cast<GroupedLinearGradInputOp>(op)) {
        if (!converts("dgrad") || !eligible(paramName(g.getWeight())))
          continue;
        Quantized qdy = rw.quantize(loc, g.getDy(), 1, kTile);
        Quantized qw = rw.quantize(loc, g.getWeight(), kTile, kTile);
        auto dx = g.getType().getShape();
        replacement = rw.mGroupedGemm(loc, qdy, qw, g.getOffsets(), dx[0], dx[1],
                                      /*transposeB=*/true);
      } else if (auto g = dyn_cast<GroupedLinearGradWeightOp>(op)) {
        if (!converts("wgrad") || !eligible(g.getParamAttr()))
          continue;
        // dW[e] = dy_e^T x_e over the expert's tokens: 128x1 tiles that
        // restart at each expert's first row.
        Value x = wgradInput(loc, g.getX(), g.getX());
        Quantized qdy = rw.quantize(loc, g.getDy(), kTile, 1, g.getOffsets());
        Quantized qx = rw.quantize(loc, x, kTile, 1, g.getOffsets());
        replacement = FP8KGroupedGemmOp::create(
            b, loc, g.getType(), qdy.codes, qdy.scales, qx.codes, qx.scales,
            g.getOffsets(), b.getI64IntegerAttr(kTile));
      }
      op->getResult(0).replaceAllUsesWith(replacement);
      op->erase();
    }
  }
};

} // namespace
