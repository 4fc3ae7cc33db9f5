//===- LowerComm.cpp - dsv3-lower-comm -------------------------------------===//
//
// Communication ops become calls of the runtime's communication library
// (runtime/comm/CommKernels.h) before the rest of dsv3 is lowered: each
// collective a `collective` dsv3_codegen.ukernel on tensors collapsed to
// [rows, columns] (so one entry point per element type serves every rank),
// which bufferizes and lowers like every other kernel call. The group is
// passed by its number (runtime/comm/Groups.h). `dsv3.rank_rows` and its
// gradient become slices at an offset computed from the runtime's rank.
//
// `dsv3.all_to_all_start` becomes a nonblocking start into a fresh
// destination and its `dsv3.wait` a call that completes it (with the
// source as an operand, so bufferization keeps the source alive and
// unchanged while the transfer reads it): what dsv3-comm-overlap puts
// between them runs while the rows travel. The other `*_start` ops still
// run their collective where they stand and their wait hands the value on.
// Point-to-point messages are the pipeline executor's (runtime/pipeline).
//
//===----------------------------------------------------------------------===//
#include "ir/Codegen/CodegenDialect.h"
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3LOWERCOMMPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

/// The group numbers of runtime/comm/Groups.h.
std::optional<int64_t> groupNumber(StringRef group) {
  return llvm::StringSwitch<std::optional<int64_t>>(group)
      .Case("world", 0)
      .Case("data", 1)
      .Case("expert", 2)
      .Case("pipeline", 3)
      .Default(std::nullopt);
}

/// [d0, d1, ...] -> [d0, d1*...] (a scalar or vector gets one column).
Value collapseRows(OpBuilder &b, Location loc, Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getRank() == 2)
    return v;
  if (t.getRank() == 1)
    return tensor::ExpandShapeOp::create(
        b, loc, RankedTensorType::get({t.getDimSize(0), 1}, t.getElementType()), v,
        SmallVector<ReassociationIndices>{{0, 1}});
  int64_t cols = 1;
  ReassociationIndices rest;
  for (int64_t d = 1; d < t.getRank(); ++d) {
    cols *= t.getDimSize(d);
    rest.push_back(d);
  }
  return tensor::CollapseShapeOp::create(
      b, loc, RankedTensorType::get({t.getDimSize(0), cols}, t.getElementType()), v,
      SmallVector<ReassociationIndices>{{0}, rest});
}

/// The inverse of collapseRows into `type`.
Value expandRows(OpBuilder &b, Location loc, Value v, RankedTensorType type) {
  if (type.getRank() == 2)
    return v;
  if (type.getRank() == 1)
    return tensor::CollapseShapeOp::create(b, loc, type, v,
                                           SmallVector<ReassociationIndices>{{0, 1}});
  ReassociationIndices rest;
  for (int64_t d = 1; d < type.getRank(); ++d)
    rest.push_back(d);
  return tensor::ExpandShapeOp::create(b, loc, type, v,
                                       SmallVector<ReassociationIndices>{{0}, rest});
}

/// A collective kernel call: `name`_<f32|i64>(group, x, extra...) -> a
/// fresh tensor of `resultType`.
FailureOr<Value> callCollective(OpBuilder &b, Operation *op, StringRef name, Value x,
                                ValueRange extra, RankedTensorType resultType) {
  Location loc = op->getLoc();
  auto group = groupNumber(op->getAttrOfType<StringAttr>("group").getValue());
  Type element = resultType.getElementType();
  if (!group || resultType.getRank() == 0 || (!element.isF32() && !element.isInteger(64))) {
    op->emitOpError() << "has no runtime call for " << resultType;
    return failure();
  }
  std::string kernel = (name + (element.isF32() ? "_f32" : "_i64")).str();
  SmallVector<Value> ins{arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(*group)),
                         collapseRows(b, loc, x)};
  llvm::append_range(ins, extra);
  Value dest = tensor::EmptyOp::create(b, loc, resultType.getShape(), element);
  dest = collapseRows(b, loc, dest);
  auto call = codegen::UkernelOp::create(b, loc, TypeRange{dest.getType()}, StringRef(kernel), ins,
                                         ValueRange{dest}, /*collective=*/true);
  return expandRows(b, loc, call.getResult(0), resultType);
}

/// A nonblocking all-to-all: the start call into a fresh destination, and
/// each wait a call that completes it.
LogicalResult lowerAllToAllStart(AllToAllStartOp start) {
  OpBuilder b(start);
  Location loc = start.getLoc();
  auto type = cast<RankedTensorType>(start.getType().getResultType());
  FailureOr<Value> started =
      callCollective(b, start, "dsv3rt_all_to_all_start", start.getX(),
                     {start.getSendCounts(), start.getRecvCounts()}, type);
  if (failed(started))
    return failure();
  std::string kernel = type.getElementType().isF32() ? "dsv3rt_all_to_all_wait_f32"
                                                     : "dsv3rt_all_to_all_wait_i64";
  for (Operation *user : llvm::make_early_inc_range(start->getUsers())) {
    auto wait = dyn_cast<WaitOp>(user);
    if (!wait)
      return user->emitOpError() << "uses a request other than by dsv3.wait";
    b.setInsertionPoint(wait);
    Value rows = collapseRows(b, loc, *started);
    auto call = codegen::UkernelOp::create(
        b, wait.getLoc(), TypeRange{rows.getType()}, StringRef(kernel),
        ValueRange{collapseRows(b, loc, start.getX()), rows}, ValueRange{rows},
        /*collective=*/true);
    wait.getResult()[0].replaceAllUsesWith(expandRows(b, loc, call.getResult(0), type));
    wait.erase();
  }
  start.erase();
  return success();
}

/// The yielded tensor type of a collective (its request's for a start).
RankedTensorType yieldedType(Operation *op) {
  Type t = op->getResult(0).getType();
  if (auto r = dyn_cast<RequestType>(t))
    t = r.getResultType();
  return cast<RankedTensorType>(t);
}

FailureOr<Value> lowerCollective(OpBuilder &b, Operation *op) {
  RankedTensorType type = yieldedType(op);
  if (isa<AllReduceOp, AllReduceStartOp>(op))
    return callCollective(b, op, "dsv3rt_all_reduce", op->getOperand(0), {}, type);
  if (isa<AllGatherOp, AllGatherStartOp>(op))
    return callCollective(b, op, "dsv3rt_all_gather", op->getOperand(0), {}, type);
  if (isa<ReduceScatterOp, ReduceScatterStartOp>(op))
    return callCollective(b, op, "dsv3rt_reduce_scatter", op->getOperand(0), {}, type);
  return callCollective(b, op, "dsv3rt_all_to_all", op->getOperand(0),
                        {op->getOperand(1), op->getOperand(2)}, type);
}

/// This rank's index in `group` times `rows`, as an index.
Value blockOffset(OpBuilder &b, ModuleOp module, Location loc, int64_t group, int64_t rows) {
  constexpr StringLiteral kRank = "dsv3rt_comm_rank";
  auto callee = module.lookupSymbol<func::FuncOp>(kRank);
  if (!callee) {
    OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
    callee = func::FuncOp::create(mb, module.getLoc(), kRank,
                                  mb.getFunctionType({mb.getI64Type()}, {mb.getI64Type()}));
    callee.setPrivate();
  }
  Value g = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(group));
  Value rank = func::CallOp::create(b, loc, callee, ValueRange{g}).getResult(0);
  Value offset = arith::MulIOp::create(b, loc, rank,
                                       arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(rows)));
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), offset);
}

/// Offsets, sizes and strides of rows [offset, offset + rows) of `type`.
struct RowSlice {
  SmallVector<OpFoldResult> offsets, sizes, strides;
  RowSlice(OpBuilder &b, RankedTensorType type, OpFoldResult offset, int64_t rows) {
    for (int64_t d = 0; d < type.getRank(); ++d) {
      offsets.push_back(d == 0 ? offset : b.getIndexAttr(0));
      sizes.push_back(b.getIndexAttr(d == 0 ? rows : type.getDimSize(d)));
      strides.push_back(b.getIndexAttr(1));
    }
  }
};

/// `x` [N, ...] inside a [padded, ...] tensor filled with `fill`.
Value padRows(OpBuilder &b, Location loc, Value x, int64_t padded, TypedAttr fill) {
  auto t = cast<RankedTensorType>(x.getType());
  if (t.getDimSize(0) == padded)
    return x;
  SmallVector<int64_t> shape(t.getShape());
  shape[0] = padded;
  Value c = arith::ConstantOp::create(b, loc, fill);
  Value init = tensor::EmptyOp::create(b, loc, shape, t.getElementType());
  Value filled = linalg::FillOp::create(b, loc, c, init).getResult(0);
  RowSlice s(b, t, b.getIndexAttr(0), t.getDimSize(0));
  return tensor::InsertSliceOp::create(b, loc, x, filled, s.offsets, s.sizes, s.strides);
}

LogicalResult lowerRankRows(ModuleOp module, RankRowsOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  auto full = op.getX().getType();
  int64_t block = op.getType().getDimSize(0), ranks = static_cast<int64_t>(op.getRanks());
  Type element = full.getElementType();
  TypedAttr fill = isa<FloatType>(element)
                       ? TypedAttr(b.getFloatAttr(element, 0.0))
                       : TypedAttr(b.getIntegerAttr(element, op.getPad()));
  Value padded = padRows(b, loc, op.getX(), block * ranks, fill);
  Value offset = blockOffset(b, module, loc, *groupNumber(op.getGroup()), block);
  RowSlice s(b, cast<RankedTensorType>(padded.getType()), offset, block);
  Value mine = tensor::ExtractSliceOp::create(b, loc, op.getType(), padded, s.offsets, s.sizes,
                                              s.strides);
  op.replaceAllUsesWith(mine);
  op.erase();
  return success();
}

LogicalResult lowerRankRowsGrad(ModuleOp module, RankRowsGradOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  auto full = op.getType();
  int64_t block = op.getDy().getType().getDimSize(0), ranks = static_cast<int64_t>(op.getRanks());
  SmallVector<int64_t> shape(full.getShape());
  shape[0] = block * ranks;
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  Value init = tensor::EmptyOp::create(b, loc, shape, b.getF32Type());
  Value zeros = linalg::FillOp::create(b, loc, zero, init).getResult(0);
  Value offset = blockOffset(b, module, loc, *groupNumber(op.getGroup()), block);
  RowSlice s(b, full, offset, block);
  Value placed =
      tensor::InsertSliceOp::create(b, loc, op.getDy(), zeros, s.offsets, s.sizes, s.strides);
  if (shape[0] != full.getDimSize(0)) {
    RowSlice all(b, full, b.getIndexAttr(0), full.getDimSize(0));
    placed = tensor::ExtractSliceOp::create(b, loc, full, placed, all.offsets, all.sizes,
                                            all.strides);
  }
  op.replaceAllUsesWith(placed);
  op.erase();
  return success();
}

struct DSV3LowerCommPass : dsv3::impl::DSV3LowerCommPassBase<DSV3LowerCommPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // The pipeline schedule is the host executor's program (it runs the
    // chunk functions and carries their messages): nothing in it becomes
    // code.
    for (auto schedule : llvm::make_early_inc_range(module.getOps<PipelineScheduleOp>()))
      schedule.erase();
    SmallVector<Operation *> ops;
    module.walk([&](Operation *op) {
      if (isa<AllReduceOp, AllReduceStartOp, AllGatherOp, AllGatherStartOp, ReduceScatterOp,
              ReduceScatterStartOp, AllToAllOp, AllToAllStartOp, SendOp, RecvOp, RankRowsOp,
              RankRowsGradOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      if (isa<SendOp, RecvOp>(op)) {
        op->emitOpError() << "point-to-point messages are not lowered yet (they come with "
                             "the pipeline schedule)";
        return signalPassFailure();
      }
      if (auto r = dyn_cast<RankRowsOp>(op)) {
        if (failed(lowerRankRows(module, r)))
          return signalPassFailure();
        continue;
      }
      if (auto start = dyn_cast<AllToAllStartOp>(op)) {
        if (failed(lowerAllToAllStart(start)))
          return signalPassFailure();
        continue;
      }
      if (auto r = dyn_cast<RankRowsGradOp>(op)) {
        if (failed(lowerRankRowsGrad(module, r)))
          return signalPassFailure();
        continue;
      }
      OpBuilder b(op);
      FailureOr<Value> value = lowerCollective(b, op);
      if (failed(value))
        return signalPassFailure();
      if (isa<RequestType>(op->getResult(0).getType())) {
        // The started collective has completed: its waits yield the value.
        for (Operation *user : llvm::make_early_inc_range(op->getUsers())) {
          auto wait = dyn_cast<WaitOp>(user);
          if (!wait) {
            user->emitOpError() << "uses a request other than by dsv3.wait";
            return signalPassFailure();
          }
          wait.getResult()[0].replaceAllUsesWith(*value);
          wait.erase();
        }
        op->erase();
        continue;
      }
      op->getResult(0).replaceAllUsesWith(*value);
      op->erase();
    }
  }
};

} // namespace
