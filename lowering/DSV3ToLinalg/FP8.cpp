//===- FP8.cpp - reference lowering of the FP8 ops ------------------------===//
//
// Part of convert-dsv3-to-linalg: dsv3.fp8_quantize, fp8_dequantize and the
// block-scaled GEMMs as generics that compute the runtime's numbers
// (runtime/kernels/FP8.cpp and GroupedGemm.cpp), for targets without those
// kernels; the CPU pipeline selects the kernels beforehand unless told not to
// (lowering/CPU/SelectUkernels.cpp).
//
// Quantization is bit-exact. MLIR cannot lower truncf/extf to f8 types, so a
// code is encoded with the integer arithmetic of the runtime's encodeFast,
// produced as an i8 and bitcast to the code type; codes decode through a
// 256-entry table built here from the formats' bit fields. The GEMMs keep
// the order of the scalar reference blockScaledGemm: per output element and
// K block, an FP32 sum of decoded products in k order (an scf.for in the
// generic's body), then acc += partial * sA * sB, the last multiply-add
// fused as the runtime computes it.
//
// Row groups (dispatch offsets) are read as the runtime reads them: clamped
// into order (groupRanges), with row tiles restarting at every group
// (groupTileStarts), computed by a short scf.for over the groups.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cfloat>
#include <cmath>
#include <limits>
#include <numeric>

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

//===----------------------------------------------------------------------===//
// Scalar numerics (runtime/kernels/FP8.h)
//===----------------------------------------------------------------------===//

/// The bit layout and encoding limits of a code element type.
struct CodeFormat {
  bool e4m3;          // f8E4M3FN (no infinities) or f8E5M2
  int manBits, bias;
  float maxFinite;    // fmax of the scales
  float maxKept;      // the largest magnitude encoded as a finite code
  uint32_t overflow;  // the code beyond it: NaN (E4M3) or Inf (E5M2)

  static CodeFormat of(Type codeElt) {
    if (isa<Float8E4M3FNType>(codeElt))
      return {true, 3, 7, 448.0f, 464.0f, 0x7F};
    return {false, 2, 15, 57344.0f, 61439.996f, 0x7C};
  }
};

Type elementType(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }

/// The value of `code` (decodeE4M3 / decodeE5M2).
float decodeBits(const CodeFormat &f, unsigned code) {
  unsigned q = code & ((1u << f.manBits) - 1);
  int e = static_cast<int>((code & 0x7F) >> f.manBits);
  int maxExponent = (1 << (7 - f.manBits)) - 1;
  float sign = code & 0x80 ? -1.0f : 1.0f;
  if (e == maxExponent && (!f.e4m3 || q == (1u << f.manBits) - 1))
    return f.e4m3 || q ? std::numeric_limits<float>::quiet_NaN() : sign * INFINITY;
  if (e == 0)
    return sign * std::ldexp(static_cast<float>(q), 1 - f.bias - f.manBits);
  return sign * std::ldexp(1.0f + static_cast<float>(q) / float(1u << f.manBits),
                           e - f.bias);
}

/// tensor<256xf32>: the value of every code of `codeElt`.
Value decodeTable(OpBuilder &b, Location loc, Type codeElt) {
  CodeFormat f = CodeFormat::of(codeElt);
  SmallVector<float> values;
  for (unsigned code = 0; code < 256; ++code)
    values.push_back(decodeBits(f, code));
  auto type = RankedTensorType::get({256}, b.getF32Type());
  return arith::ConstantOp::create(b, loc, DenseElementsAttr::get(type, ArrayRef<float>(values)));
}

/// The float32 value of an f8 `code`, looked up in `table` (decodeTable).
Value decodeCode(OpBuilder &b, Location loc, Value table, Value code) {
  Value bits = arith::BitcastOp::create(b, loc, b.getI8Type(), code);
  Value index = arith::IndexCastUIOp::create(b, loc, b.getIndexType(), bits);
  return tensor::ExtractOp::create(b, loc, table, ValueRange{index});
}

Value i32Const(OpBuilder &b, Location loc, uint32_t v) {
  return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(static_cast<int32_t>(v)));
}

/// The code byte of float32 `x` (encodeFast): round to nearest even on the
/// dropped mantissa bits and rebias (a carry moves into the exponent by
/// itself); subnormals are multiples of the smallest step, rounded with
/// roundeven; magnitudes past maxKept and NaN give the overflow code, except
/// that E5M2 keeps NaN (0x7E). The sign is copied, NaN's included.
Value encodeByte(OpBuilder &b, Location loc, Value x, Type codeElt) {
  CodeFormat f = CodeFormat::of(codeElt);
  Type i32 = b.getI32Type();
  int drop = 23 - f.manBits;
  Value bits = arith::BitcastOp::create(b, loc, i32, x);
  Value sign = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, bits, i32Const(b, loc, 24)), i32Const(b, loc, 0x80));
  Value abits = arith::AndIOp::create(b, loc, bits, i32Const(b, loc, 0x7FFFFFFF));
  Value a = arith::BitcastOp::create(b, loc, b.getF32Type(), abits);

  Value odd = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, abits, i32Const(b, loc, drop)), i32Const(b, loc, 1));
  Value rounded = arith::AddIOp::create(
      b, loc, arith::AddIOp::create(b, loc, abits, i32Const(b, loc, (1u << (drop - 1)) - 1)),
      odd);
  Value normal = arith::SubIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, rounded, i32Const(b, loc, drop)),
      i32Const(b, loc, uint32_t(127 - f.bias) << f.manBits));

  float minNormal = std::ldexp(1.0f, 1 - f.bias);
  float subStep = std::ldexp(1.0f, f.bias - 1 + f.manBits);
  // minnumf keeps the conversion in range where the subnormal path is unused
  // (large values, NaN): fptosi of those would be poison.
  Value small = arith::MinNumFOp::create(b, loc, a, f32Const(b, loc, minNormal));
  Value steps = math::RoundEvenOp::create(
      b, loc, arith::MulFOp::create(b, loc, small, f32Const(b, loc, subStep)));
  Value sub = arith::FPToSIOp::create(b, loc, i32, steps);

  Value isSub = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, a,
                                      f32Const(b, loc, minNormal));
  Value code = arith::SelectOp::create(b, loc, isSub, sub, normal);
  // Ordered: NaN fails the comparison.
  Value kept = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLE, a,
                                     f32Const(b, loc, f.maxKept));
  code = arith::SelectOp::create(b, loc, kept, code, i32Const(b, loc, f.overflow));
  if (!f.e4m3) {
    Value nan = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNO, a, a);
    code = arith::SelectOp::create(b, loc, nan, i32Const(b, loc, 0x7E), code);
  }
  return arith::TruncIOp::create(b, loc, b.getI8Type(),
                                 arith::OrIOp::create(b, loc, sign, code));
}

Value asCode(OpBuilder &b, Location loc, Value byte, Type codeElt) {
  return arith::BitcastOp::create(b, loc, codeElt, byte);
}

/// |x| for finite x, 0 for NaN and infinities: amax ignores them.
Value finiteMagnitude(OpBuilder &b, Location loc, Value x) {
  Value v = math::AbsFOp::create(b, loc, x);
  Value finite = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLE, v,
                                       f32Const(b, loc, FLT_MAX));
  return arith::SelectOp::create(b, loc, finite, v, f32Const(b, loc, 0.0));
}

/// max(amax, 1e-4) / fmax, rounded up to a power of two (UE8M0) unless it
/// is one. Scales are positive normal floats, so the next power of two is
/// the exponent field plus one with a zero mantissa.
Value tileScale(OpBuilder &b, Location loc, Value amax, const CodeFormat &f,
                bool powerOfTwo) {
  Value s = arith::DivFOp::create(
      b, loc, arith::MaxNumFOp::create(b, loc, amax, f32Const(b, loc, 1e-4f)),
      f32Const(b, loc, f.maxFinite));
  if (!powerOfTwo)
    return s;
  Value bits = arith::BitcastOp::create(b, loc, b.getI32Type(), s);
  Value mantissa = arith::AndIOp::create(b, loc, bits, i32Const(b, loc, 0x7FFFFF));
  Value up = arith::ShLIOp::create(
      b, loc,
      arith::AddIOp::create(b, loc, arith::ShRUIOp::create(b, loc, bits, i32Const(b, loc, 23)),
                            i32Const(b, loc, 1)),
      i32Const(b, loc, 23));
  Value inexact = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, mantissa,
                                        i32Const(b, loc, 0));
  return arith::SelectOp::create(b, loc, inexact,
                                 arith::BitcastOp::create(b, loc, b.getF32Type(), up), s);
}

//===----------------------------------------------------------------------===//
// Index helpers
//===----------------------------------------------------------------------===//

Value toIndex(OpBuilder &b, Location loc, Value i64) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), i64);
}
Value toI64(OpBuilder &b, Location loc, Value index) {
  return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
}
Value loopIndex(OpBuilder &b, Location loc, unsigned dim) {
  return linalg::IndexOp::create(b, loc, dim);
}
Value divIndex(OpBuilder &b, Location loc, Value i, int64_t d) {
  return d == 1 ? i : arith::DivUIOp::create(b, loc, i, indexConst(b, loc, d)).getResult();
}

/// [0, 1, .., n-1]: the positions inside a tile as a loop dimension of a
/// generic (the tile's size is the loop's).
Value iota(OpBuilder &b, Location loc, int64_t n) {
  SmallVector<int64_t> values(n);
  std::iota(values.begin(), values.end(), 0);
  auto type = RankedTensorType::get({n}, b.getI64Type());
  return arith::ConstantOp::create(b, loc, DenseElementsAttr::get(type, ArrayRef<int64_t>(values)));
}

/// x[lo:lo+size] of a 1-D tensor.
Value slice1D(OpBuilder &b, Location loc, Value x, int64_t lo, int64_t size) {
  return tensor::ExtractSliceOp::create(
      b, loc, x, ArrayRef<OpFoldResult>{b.getIndexAttr(lo)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(size)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
}

bool allStatic(Operation *op) {
  auto isStatic = [](Type t) {
    auto r = dyn_cast<RankedTensorType>(t);
    return r && r.hasStaticShape();
  };
  return llvm::all_of(op->getOperandTypes(), isStatic) &&
         llvm::all_of(op->getResultTypes(), isStatic);
}

//===----------------------------------------------------------------------===//
// Row groups (runtime/kernels/GroupedGemm.cpp)
//===----------------------------------------------------------------------===//

/// Rows [begin[e], end[e]) of each group ([E] i64): offsets clamped into
/// [end of the previous group, rows), so hand-written offsets cannot overlap
/// or run out of bounds. With tiles (`tileRows` > 0), start ([E+1] i64):
/// group e's `tileRows`-row tiles are [start[e], start[e+1]); a group that
/// would take the count past `capacity` (the scale rows) gets none.
struct GroupTables {
  Value begin, end, start;
  int64_t experts;
  /// start[0:E] and start[1:E+1].
  Value tileLo(LinalgBuilder &lb) {
    return slice1D(lb.builder(), lb.location(), start, 0, experts);
  }
  Value tileHi(LinalgBuilder &lb) {
    return slice1D(lb.builder(), lb.location(), start, 1, experts);
  }
};

GroupTables groupTables(LinalgBuilder &lb, Value offsets, int64_t experts,
                        int64_t rows, int64_t tileRows = 0, int64_t capacity = 0) {
  OpBuilder &b = lb.builder();
  Location loc = lb.location();
  bool tiled = tileRows > 0;
  // Loop state: end of the previous group, begin, end, and with tiles the
  // next free tile and start.
  SmallVector<Value> init = {i64Const(b, loc, 0), lb.filledInt({experts}, 0),
                             lb.filledInt({experts}, 0)};
  if (tiled)
    init.append({i64Const(b, loc, 0), lb.filledInt({experts + 1}, 0)});
  auto loop = scf::ForOp::create(
      b, loc, indexConst(b, loc, 0), indexConst(b, loc, experts), indexConst(b, loc, 1),
      init, [&](OpBuilder &nb, Location l, Value e, ValueRange st) {
        Value e1 = arith::AddIOp::create(nb, l, e, indexConst(nb, l, 1));
        Value o0 = tensor::ExtractOp::create(nb, l, offsets, ValueRange{e});
        Value o1 = tensor::ExtractOp::create(nb, l, offsets, ValueRange{e1});
        Value numRows = i64Const(nb, l, rows);
        auto clamp = [&](Value v, Value lo) -> Value {
          return arith::MinSIOp::create(nb, l, arith::MaxSIOp::create(nb, l, v, lo), numRows);
        };
        Value begin = clamp(o0, st[0]);
        Value end = clamp(o1, begin);
        SmallVector<Value> next = {
            end, tensor::InsertOp::create(nb, l, begin, st[1], ValueRange{e}),
            tensor::InsertOp::create(nb, l, end, st[2], ValueRange{e})};
        if (tiled) {
          Value len = arith::SubIOp::create(nb, l, end, begin);
          Value tiles = arith::DivSIOp::create(
              nb, l, arith::AddIOp::create(nb, l, len, i64Const(nb, l, tileRows - 1)),
              i64Const(nb, l, tileRows));
          Value after = arith::AddIOp::create(nb, l, st[3], tiles);
          Value fits = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::sle, after,
                                             i64Const(nb, l, capacity));
          next.push_back(arith::SelectOp::create(nb, l, fits, after, st[3]));
          next.push_back(tensor::InsertOp::create(nb, l, st[3], st[4], ValueRange{e}));
        }
        scf::YieldOp::create(nb, l, next);
      });
  GroupTables g{loop.getResult(1), loop.getResult(2), {}, experts};
  if (tiled)
    g.start = tensor::InsertOp::create(b, loc, loop.getResult(3), loop.getResult(4),
                                       ValueRange{indexConst(b, loc, experts)});
  return g;
}

/// A [rows] i64 table over loops (row, e), e the reduction, starting at
/// `init`: `next(row, args)` is the new accumulator, args the body's
/// arguments (the per-group inputs at e, then the accumulator).
Value perRowOverGroups(
    LinalgBuilder &lb, ValueRange perGroup, int64_t rows, int64_t init,
    llvm::function_ref<Value(OpBuilder &, Location, Value, ValueRange)> next) {
  SmallVector<AffineMap> maps(perGroup.size(), lb.map(2, {1}));
  maps.push_back(lb.map(2, {0}));
  return lb.generic1(perGroup, lb.filledInt({rows}, init), maps, lb.iters(1, 1),
                     [&](OpBuilder &nb, Location l, ValueRange a) {
                       Value r = toI64(nb, l, loopIndex(nb, l, 0));
                       linalg::YieldOp::create(nb, l, ValueRange{next(nb, l, r, a)});
                     });
}

Value inRange(OpBuilder &b, Location loc, Value lo, Value v, Value hi) {
  return arith::AndIOp::create(
      b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sle, lo, v),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, v, hi));
}

/// The group of each row ([rows] i64), -1 for rows in no group.
Value groupOfRow(LinalgBuilder &lb, GroupTables &g, int64_t rows) {
  return perRowOverGroups(
      lb, {g.begin, g.end}, rows, -1, [](OpBuilder &b, Location l, Value r, ValueRange a) {
        Value e = toI64(b, l, loopIndex(b, l, 1));
        return arith::SelectOp::create(b, l, inRange(b, l, a[0], r, a[1]), e, a[2])
            .getResult();
      });
}

/// The tile of each row ([rows] i64) under groupTables' numbering, -1 for
/// rows in no group or in a group without tiles.
Value tileOfRow(LinalgBuilder &lb, GroupTables &g, int64_t rows, int64_t tileRows) {
  return perRowOverGroups(
      lb, {g.begin, g.end, g.tileLo(lb), g.tileHi(lb)}, rows, -1,
      [&](OpBuilder &b, Location l, Value r, ValueRange a) {
        Value hasTiles = arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, a[2], a[3]);
        Value in = arith::AndIOp::create(b, l, inRange(b, l, a[0], r, a[1]), hasTiles);
        Value t = arith::AddIOp::create(
            b, l, a[2],
            arith::DivSIOp::create(b, l, arith::SubIOp::create(b, l, r, a[0]),
                                   i64Const(b, l, tileRows)));
        return arith::SelectOp::create(b, l, in, t, a[4]).getResult();
      });
}

/// Rows [first[t], end[t]) of every tile ([tiles] i64 each); tiles past the
/// last one are empty (0, 0).
std::pair<Value, Value> rowsOfTiles(LinalgBuilder &lb, GroupTables &g, int64_t tiles,
                                    int64_t tileRows) {
  Value zeros[] = {lb.filledInt({tiles}, 0), lb.filledInt({tiles}, 0)};
  SmallVector<Value> r = lb.generic(
      {g.begin, g.end, g.tileLo(lb), g.tileHi(lb)}, zeros,
      {lb.map(2, {1}), lb.map(2, {1}), lb.map(2, {1}), lb.map(2, {1}), lb.map(2, {0}),
       lb.map(2, {0})},
      lb.iters(1, 1), [&](OpBuilder &b, Location l, ValueRange a) {
        Value t = toI64(b, l, loopIndex(b, l, 0));
        Value mine = inRange(b, l, a[2], t, a[3]);
        Value first = arith::AddIOp::create(
            b, l, a[0],
            arith::MulIOp::create(b, l, arith::SubIOp::create(b, l, t, a[2]),
                                  i64Const(b, l, tileRows)));
        Value last = arith::MinSIOp::create(
            b, l, arith::AddIOp::create(b, l, first, i64Const(b, l, tileRows)), a[1]);
        linalg::YieldOp::create(b, l,
                                ValueRange{arith::SelectOp::create(b, l, mine, first, a[4]),
                                           arith::SelectOp::create(b, l, mine, last, a[5])});
      });
  return {r[0], r[1]};
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

/// dsv3.fp8_quantize on x viewed as [B, R, C] (B = 1 for a matrix): amax of
/// every tile as a reduction over the tile's rows and columns (loops
/// (b, t, ct, i, j), the positions i, j inside the tile from iota
/// operands), the scales, then every element encoded against its tile's
/// scale. Plain tiles t cover rows [t*tr, min(R, t*tr + tr)); grouped ones
/// the rows of rowsOfTiles, and rows outside them get code 0.
struct LowerFP8Quantize : OpRewritePattern<FP8QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8QuantizeOp op, PatternRewriter &rw) const override {
    if (!allStatic(op))
      return rw.notifyMatchFailure(op, "dynamic shapes");
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto xType = cast<RankedTensorType>(op.getX().getType());
    auto scalesType = cast<RankedTensorType>(op.getScales().getType());
    Type codeElt = elementType(op.getCodes());
    CodeFormat format = CodeFormat::of(codeElt);
    bool powerOfTwo = op.getPowerOfTwoScales();
    int64_t tr = op.getTile()[0], tc = op.getTile()[1];
    bool matrix = xType.getRank() == 2;
    SmallVector<ReassociationIndices> unitBatch = {{0, 1}, {2}};

    Value x = op.getX();
    if (matrix)
      x = tensor::ExpandShapeOp::create(
          rw, loc, RankedTensorType::get({1, xType.getDimSize(0), xType.getDimSize(1)}, lb.f32()),
          x, unitBatch);
    auto xs = cast<RankedTensorType>(x.getType()).getShape();
    int64_t batch = xs[0], rows = xs[1], cols = xs[2];
    int64_t tiles = scalesType.getDimSize(scalesType.getRank() - 2);
    int64_t colTiles = scalesType.getDimSize(scalesType.getRank() - 1);

    // Grouped: the rows of every tile and the tile of every row.
    Value firstRow, endRow, rowTile;
    if (auto groups = op.getGroups()) {
      GroupTables g = groupTables(lb, groups, groups.getType().getDimSize(0) - 1, rows,
                                  tr, tiles);
      std::tie(firstRow, endRow) = rowsOfTiles(lb, g, tiles, tr);
      rowTile = tileOfRow(lb, g, rows, tr);
    }
    bool grouped = static_cast<bool>(firstRow);
    // Rows [first, end) of tile t (index values) inside a generic body whose
    // first inputs are firstRow, endRow when grouped.
    auto tileRows = [&](OpBuilder &b, Location l, Value t,
                        ValueRange a) -> std::pair<Value, Value> {
      if (grouped)
        return {toIndex(b, l, a[0]), toIndex(b, l, a[1])};
      Value first = arith::MulIOp::create(b, l, t, indexConst(b, l, tr));
      Value end = arith::MinUIOp::create(
          b, l, arith::AddIOp::create(b, l, first, indexConst(b, l, tr)),
          indexConst(b, l, rows));
      return {first, end};
    };

    Value amax;
    if (rows == 0) {
      amax = lb.filled({batch, tiles, colTiles}, 0.0);
    } else {
      SmallVector<Value> ins;
      SmallVector<AffineMap> maps;
      if (grouped) {
        ins = {firstRow, endRow};
        maps = {lb.map(5, {1}), lb.map(5, {1})};
      }
      unsigned pos = ins.size();
      ins.append({iota(rw, loc, tr), iota(rw, loc, tc)});
      maps.append({lb.map(5, {3}), lb.map(5, {4}), lb.map(5, {0, 1, 2})});
      amax = lb.generic1(
          ins, lb.filled({batch, tiles, colTiles}, 0.0), maps, lb.iters(3, 2),
          [&](OpBuilder &b, Location l, ValueRange a) {
            auto [first, end] = tileRows(b, l, loopIndex(b, l, 1), a);
            Value row = arith::AddIOp::create(b, l, first, toIndex(b, l, a[pos]));
            Value col = arith::AddIOp::create(
                b, l, arith::MulIOp::create(b, l, loopIndex(b, l, 2), indexConst(b, l, tc)),
                toIndex(b, l, a[pos + 1]));
            Value in = arith::AndIOp::create(
                b, l, arith::CmpIOp::create(b, l, arith::CmpIPredicate::ult, row, end),
                arith::CmpIOp::create(b, l, arith::CmpIPredicate::ult, col,
                                      indexConst(b, l, cols)));
            Value v = tensor::ExtractOp::create(
                b, l, x,
                ValueRange{loopIndex(b, l, 0),
                           arith::MinUIOp::create(b, l, row, indexConst(b, l, rows - 1)),
                           arith::MinUIOp::create(b, l, col, indexConst(b, l, cols - 1))});
            Value m = arith::SelectOp::create(b, l, in, finiteMagnitude(b, l, v),
                                              f32Const(b, l, 0.0));
            linalg::YieldOp::create(
                b, l, ValueRange{arith::MaxNumFOp::create(b, l, a[pos + 2], m)});
          });
    }

    // Scales; grouped tiles past the last one (empty) are 0.
    SmallVector<Value> scaleIns = {amax};
    SmallVector<AffineMap> scaleMaps = {lb.identity(3)};
    if (grouped) {
      scaleIns.append({firstRow, endRow});
      scaleMaps.append({lb.map(3, {1}), lb.map(3, {1})});
    }
    scaleMaps.push_back(lb.identity(3));
    Value scales = lb.generic1(
        scaleIns, lb.empty({batch, tiles, colTiles}), scaleMaps, lb.iters(3),
        [&](OpBuilder &b, Location l, ValueRange a) {
          Value s = tileScale(b, l, a[0], format, powerOfTwo);
          if (grouped) {
            Value empty = arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge, a[1], a[2]);
            s = arith::SelectOp::create(b, l, empty, f32Const(b, l, 0.0), s);
          }
          linalg::YieldOp::create(b, l, ValueRange{s});
        });

    // Codes: x / scale of the element's tile, encoded.
    SmallVector<Value> codeIns = {x};
    SmallVector<AffineMap> codeMaps = {lb.identity(3)};
    if (grouped) {
      codeIns.push_back(rowTile);
      codeMaps.push_back(lb.map(3, {1}));
    }
    codeMaps.push_back(lb.identity(3));
    Value codes = lb.generic1(
        codeIns, lb.empty({batch, rows, cols}, codeElt), codeMaps, lb.iters(3),
        [&](OpBuilder &b, Location l, ValueRange a) {
          Value t = grouped ? clampedIndex(b, l, a[1], tiles)
                            : divIndex(b, l, loopIndex(b, l, 1), tr);
          Value s = tensor::ExtractOp::create(
              b, l, scales,
              ValueRange{loopIndex(b, l, 0), t, divIndex(b, l, loopIndex(b, l, 2), tc)});
          Value byte = encodeByte(b, l, arith::DivFOp::create(b, l, a[0], s), codeElt);
          if (grouped) {
            Value inTile = arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge, a[1],
                                                 i64Const(b, l, 0));
            byte = arith::SelectOp::create(
                b, l, inTile, byte,
                arith::ConstantOp::create(b, l, b.getI8IntegerAttr(0)));
          }
          linalg::YieldOp::create(b, l, ValueRange{asCode(b, l, byte, codeElt)});
        });

    if (matrix) {
      codes = tensor::CollapseShapeOp::create(rw, loc, codes, unitBatch);
      scales = tensor::CollapseShapeOp::create(rw, loc, scales, unitBatch);
    }
    rw.replaceOp(op, {codes, scales});
    return success();
  }
};

/// dsv3.fp8_dequantize -> decode(code) * scale of its tile.
struct LowerFP8Dequantize : OpRewritePattern<FP8DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8DequantizeOp op, PatternRewriter &rw) const override {
    if (!allStatic(op))
      return rw.notifyMatchFailure(op, "dynamic shapes");
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    int64_t tr = op.getTile()[0], tc = op.getTile()[1];
    Value table = decodeTable(rw, loc, elementType(op.getCodes()));
    Value scales = op.getScales();
    Value y = lb.generic1(
        {op.getCodes()}, lb.empty(op.getType().getShape()),
        {lb.identity(2), lb.identity(2)}, lb.iters(2),
        [&](OpBuilder &b, Location l, ValueRange a) {
          Value s = tensor::ExtractOp::create(
              b, l, scales,
              ValueRange{divIndex(b, l, loopIndex(b, l, 0), tr),
                         divIndex(b, l, loopIndex(b, l, 1), tc)});
          linalg::YieldOp::create(
              b, l, ValueRange{arith::MulFOp::create(b, l, decodeCode(b, l, table, a[0]), s)});
        });
    rw.replaceOp(op, y);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Block-scaled GEMMs
//===----------------------------------------------------------------------===//

/// The float32 values of `codes` ([.., rows, K], stored [.., K, rows] when
/// `transposed`) in the [.., rows, K] layout: decoded once, not per product.
Value decodeOperand(LinalgBuilder &lb, Value codes, bool transposed) {
  auto type = cast<RankedTensorType>(codes.getType());
  unsigned rank = type.getRank();
  SmallVector<unsigned> dims(rank);
  std::iota(dims.begin(), dims.end(), 0u);
  SmallVector<int64_t> shape(type.getShape());
  if (transposed) {
    std::swap(dims[rank - 2], dims[rank - 1]);
    std::swap(shape[rank - 2], shape[rank - 1]);
  }
  Value table = decodeTable(lb.builder(), lb.location(), type.getElementType());
  return lb.generic1({codes}, lb.empty(shape), {lb.map(rank, dims), lb.identity(rank)},
                     lb.iters(rank), [&](OpBuilder &b, Location l, ValueRange a) {
                       linalg::YieldOp::create(b, l, ValueRange{decodeCode(b, l, table, a[0])});
                     });
}

/// sum_{k in [lo, hi)} product(k) in k order, in float32 from 0: one K block
/// before its promotion.
Value blockSum(OpBuilder &b, Location loc, Value lo, Value hi,
               llvm::function_ref<Value(OpBuilder &, Location, Value)> product) {
  auto loop = scf::ForOp::create(
      b, loc, lo, hi, indexConst(b, loc, 1), ValueRange{f32Const(b, loc, 0.0)},
      [&](OpBuilder &nb, Location l, Value k, ValueRange acc) {
        scf::YieldOp::create(
            nb, l, ValueRange{arith::AddFOp::create(nb, l, acc[0], product(nb, l, k))});
      });
  return loop.getResult(0);
}

/// K block kb: [kb * interval, min(K, kb * interval + interval)).
std::pair<Value, Value> kBlock(OpBuilder &b, Location loc, Value kb, int64_t interval,
                               int64_t k) {
  Value lo = arith::MulIOp::create(b, loc, kb, indexConst(b, loc, interval));
  Value hi = arith::MinUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, lo, indexConst(b, loc, interval)),
      indexConst(b, loc, k));
  return {lo, hi};
}

/// acc + (partial * sA) * sB with the last multiply-add fused, as the
/// runtime computes it (the fast kernel's fmaLanes, and blockScaledGemm as
/// compiled: clang contracts `acc += partial * sA * sB`).
Value promote(OpBuilder &b, Location loc, Value acc, Value partial, Value sa, Value sb) {
  return math::FmaOp::create(b, loc, arith::MulFOp::create(b, loc, partial, sa), sb, acc);
}

Value product(OpBuilder &b, Location loc, Value x, ValueRange xi, Value y, ValueRange yi) {
  return arith::MulFOp::create(b, loc, tensor::ExtractOp::create(b, loc, x, xi),
                               tensor::ExtractOp::create(b, loc, y, yi));
}

/// The scale of every (row, K block) of a GEMM operand ([rows, kBlocks]):
/// `scales` has one entry per tile of 1 row (as many rows as the operand)
/// or 128 rows, laid out like the codes ([kBlocks, row tiles] transposed).
Value scalesPerRow(LinalgBuilder &lb, Value scales, int64_t rows, int64_t kBlocks,
                   bool transposed) {
  auto s = cast<RankedTensorType>(scales.getType()).getShape();
  int64_t rowTile = s[transposed ? 1 : 0] == rows ? 1 : 128;
  return lb.generic1({}, lb.empty({rows, kBlocks}), {lb.identity(2)}, lb.iters(2),
                     [&](OpBuilder &b, Location l, ValueRange) {
                       Value tile = divIndex(b, l, loopIndex(b, l, 0), rowTile);
                       Value kb = loopIndex(b, l, 1);
                       SmallVector<Value> at = {tile, kb};
                       if (transposed)
                         std::swap(at[0], at[1]);
                       Value v = tensor::ExtractOp::create(b, l, scales, at);
                       linalg::YieldOp::create(b, l, ValueRange{v});
                     });
}

/// dsv3.fp8_gemm -> decoded operands in [M, K] / [N, K] layout, per-row
/// scales, and loops (m, n, kb): each K block summed in float32, then
/// promoted.
struct LowerFP8Gemm : OpRewritePattern<FP8GemmOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8GemmOp op, PatternRewriter &rw) const override {
    if (!allStatic(op))
      return rw.notifyMatchFailure(op, "dynamic shapes");
    LinalgBuilder lb(rw, op.getLoc());
    bool ta = op.getTransposeA(), tb = op.getTransposeB();
    auto as = op.getA().getType().getShape(), bs = op.getB().getType().getShape();
    int64_t m = as[ta ? 1 : 0], k = as[ta ? 0 : 1], n = bs[tb ? 1 : 0];
    int64_t interval = op.getPromotionInterval();
    int64_t kBlocks = (k + interval - 1) / interval;
    Value a = decodeOperand(lb, op.getA(), ta), b = decodeOperand(lb, op.getB(), tb);
    Value sa = scalesPerRow(lb, op.getAScales(), m, kBlocks, ta);
    Value sb = scalesPerRow(lb, op.getBScales(), n, kBlocks, tb);
    Value y = lb.generic1(
        {sa, sb}, lb.filled({m, n}, 0.0),
        {lb.map(3, {0, 2}), lb.map(3, {1, 2}), lb.map(3, {0, 1})}, lb.iters(2, 1),
        [&](OpBuilder &nb, Location l, ValueRange v) {
          Value i = loopIndex(nb, l, 0), j = loopIndex(nb, l, 1);
          auto [lo, hi] = kBlock(nb, l, loopIndex(nb, l, 2), interval, k);
          Value partial = blockSum(nb, l, lo, hi, [&](OpBuilder &pb, Location pl, Value kk) {
            return product(pb, pl, a, {i, kk}, b, {j, kk});
          });
          linalg::YieldOp::create(nb, l, ValueRange{promote(nb, l, v[2], partial, v[0], v[1])});
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.fp8_m_grouped_gemm -> loops (r, n, kb) over the rows of a: a row in
/// group e multiplies expert e's decoded matrix with its 128x128 block
/// scales; rows in no group stay 0.
struct LowerFP8MGroupedGemm : OpRewritePattern<FP8MGroupedGemmOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8MGroupedGemmOp op, PatternRewriter &rw) const override {
    if (!allStatic(op))
      return rw.notifyMatchFailure(op, "dynamic shapes");
    LinalgBuilder lb(rw, op.getLoc());
    bool tb = op.getTransposeB();
    auto as = op.getA().getType().getShape(), bs = op.getB().getType().getShape();
    int64_t rows = as[0], k = as[1], experts = bs[0], n = bs[tb ? 2 : 1];
    int64_t interval = op.getPromotionInterval();
    Value a = decodeOperand(lb, op.getA(), false), b = decodeOperand(lb, op.getB(), tb);
    Value bScales = op.getBScales();
    GroupTables g = groupTables(lb, op.getOffsets(), experts, rows);
    Value group = groupOfRow(lb, g, rows);
    Value y = lb.generic1(
        {op.getAScales(), group}, lb.filled({rows, n}, 0.0),
        {lb.map(3, {0, 2}), lb.map(3, {0}), lb.map(3, {0, 1})}, lb.iters(2, 1),
        [&](OpBuilder &nb, Location l, ValueRange v) {
          // linalg.index must be a direct child of the generic.
          Value r = loopIndex(nb, l, 0), j = loopIndex(nb, l, 1), kb = loopIndex(nb, l, 2);
          Value inGroup = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::sge, v[1],
                                                i64Const(nb, l, 0));
          auto sum = scf::IfOp::create(
              nb, l, inGroup,
              [&](OpBuilder &ib, Location il) {
                Value e = toIndex(ib, il, v[1]);
                auto [lo, hi] = kBlock(ib, il, kb, interval, k);
                Value partial = blockSum(ib, il, lo, hi, [&](OpBuilder &pb, Location pl, Value kk) {
                  return product(pb, pl, a, {r, kk}, b, {e, j, kk});
                });
                Value block = divIndex(ib, il, j, 128);
                SmallVector<Value> at = {e, block, kb};
                if (tb)
                  std::swap(at[1], at[2]);
                Value sb = tensor::ExtractOp::create(ib, il, bScales, at);
                scf::YieldOp::create(ib, il, ValueRange{promote(ib, il, v[2], partial, v[0], sb)});
              },
              [&](OpBuilder &ib, Location il) { scf::YieldOp::create(ib, il, ValueRange{v[2]}); });
          linalg::YieldOp::create(nb, l, sum.getResults());
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.fp8_k_grouped_gemm -> loops (e, m, n); the body walks group e's row
/// tiles in order (tile t: rows [begin + (t - start) * 128, ..) of the
/// group, scales a_scales[t, m] and b_scales[t, n]). Groups without tiles
/// give 0.
struct LowerFP8KGroupedGemm : OpRewritePattern<FP8KGroupedGemmOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8KGroupedGemmOp op, PatternRewriter &rw) const override {
    if (!allStatic(op))
      return rw.notifyMatchFailure(op, "dynamic shapes");
    LinalgBuilder lb(rw, op.getLoc());
    auto ys = op.getType().getShape();
    int64_t rows = op.getA().getType().getDimSize(0);
    int64_t interval = op.getPromotionInterval();
    int64_t capacity = std::min(op.getAScales().getType().getDimSize(0),
                                op.getBScales().getType().getDimSize(0));
    Value a = decodeOperand(lb, op.getA(), false), b = decodeOperand(lb, op.getB(), false);
    Value aScales = op.getAScales(), bScales = op.getBScales();
    GroupTables g = groupTables(lb, op.getOffsets(), ys[0], rows, interval, capacity);
    Value y = lb.generic1(
        {g.begin, g.end, g.tileLo(lb), g.tileHi(lb)}, lb.empty(ys),
        {lb.map(3, {0}), lb.map(3, {0}), lb.map(3, {0}), lb.map(3, {0}), lb.identity(3)},
        lb.iters(3), [&](OpBuilder &nb, Location l, ValueRange v) {
          Value i = loopIndex(nb, l, 1), j = loopIndex(nb, l, 2);
          Value begin = toIndex(nb, l, v[0]), end = toIndex(nb, l, v[1]);
          Value tileLo = toIndex(nb, l, v[2]), tileHi = toIndex(nb, l, v[3]);
          auto tiles = scf::ForOp::create(
              nb, l, tileLo, tileHi, indexConst(nb, l, 1), ValueRange{f32Const(nb, l, 0.0)},
              [&](OpBuilder &tb, Location tl, Value t, ValueRange acc) {
                Value first = arith::AddIOp::create(
                    tb, tl, begin,
                    arith::MulIOp::create(tb, tl, arith::SubIOp::create(tb, tl, t, tileLo),
                                          indexConst(tb, tl, interval)));
                Value last = arith::MinUIOp::create(
                    tb, tl, arith::AddIOp::create(tb, tl, first, indexConst(tb, tl, interval)),
                    end);
                Value partial =
                    blockSum(tb, tl, first, last, [&](OpBuilder &pb, Location pl, Value r) {
                      return product(pb, pl, a, {r, i}, b, {r, j});
                    });
                Value sa = tensor::ExtractOp::create(tb, tl, aScales, ValueRange{t, i});
                Value sb = tensor::ExtractOp::create(tb, tl, bScales, ValueRange{t, j});
                scf::YieldOp::create(tb, tl, ValueRange{promote(tb, tl, acc[0], partial, sa, sb)});
              });
          linalg::YieldOp::create(nb, l, tiles.getResults());
        });
    rw.replaceOp(op, y);
    return success();
  }
};

} // namespace

void dsv3::lowering::populateFP8LoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerFP8Quantize, LowerFP8Dequantize, LowerFP8Gemm, LowerFP8MGroupedGemm,
               LowerFP8KGroupedGemm>(patterns.getContext());
}
