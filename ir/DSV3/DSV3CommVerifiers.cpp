//===- DSV3CommVerifiers.cpp - checks of the communication ops -----------===//
//
// The blocking and the `*_start` form of a collective check the same
// shapes: the start form's request carries the tensor its wait yields.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

using namespace mlir;
using namespace dsv3;

namespace {

/// The tensor a collective yields: its result, or what its request's wait
/// yields.
RankedTensorType yielded(Operation *op) {
  Type t = op->getResult(0).getType();
  if (auto request = dyn_cast<RequestType>(t))
    t = request.getResultType();
  return dyn_cast<RankedTensorType>(t);
}

/// The groups the runtime knows (runtime/comm/Groups.h).
LogicalResult checkGroup(Operation *op, StringRef group) {
  if (group != "world" && group != "data" && group != "expert" && group != "pipeline")
    return op->emitOpError() << "unknown group \"" << group
                             << "\" (world, data, expert or pipeline)";
  return success();
}

/// Shared checks: a ranked result of `x`'s element type and rank, with the
/// same trailing dimensions; `dim0` is the expected leading size (or
/// nullopt when any size is allowed).
LogicalResult checkCollective(Operation *op, Value x, std::optional<int64_t> dim0,
                              bool sums) {
  if (failed(checkGroup(op, op->getAttrOfType<StringAttr>("group").getValue())))
    return failure();
  auto in = cast<RankedTensorType>(x.getType());
  RankedTensorType out = yielded(op);
  if (!out)
    return op->emitOpError() << "must yield a ranked tensor, got "
                             << op->getResult(0).getType();
  if (sums && in.getElementType().isBF16())
    return op->emitOpError() << "sums over ranks are f32 or i64, not " << in.getElementType();
  if (out.getElementType() != in.getElementType() || out.getRank() != in.getRank())
    return op->emitOpError() << "yields " << out << ", which is not of the element type and rank of "
                             << in;
  if (dim0 && in.getRank() == 0)
    return op->emitOpError() << "needs a leading dimension to split across ranks, got " << in;
  for (int64_t d = dim0 ? 1 : 0; d < in.getRank(); ++d)
    if (out.getDimSize(d) != in.getDimSize(d))
      return op->emitOpError() << "yields " << out << ", whose dimension " << d
                               << " differs from " << in;
  if (dim0 && *dim0 >= 0 && out.getDimSize(0) != *dim0)
    return op->emitOpError() << "yields " << out << ", expected " << *dim0
                             << " rows in dimension 0";
  return success();
}

template <typename OpT>
LogicalResult verifyAllReduce(OpT op) {
  return checkCollective(op, op.getX(), std::nullopt, /*sums=*/true);
}

template <typename OpT>
LogicalResult verifyAllGather(OpT op) {
  auto in = cast<RankedTensorType>(op.getX().getType());
  int64_t rows = in.getRank() ? in.getDimSize(0) * static_cast<int64_t>(op.getRanks()) : -1;
  return checkCollective(op, op.getX(), rows, /*sums=*/false);
}

template <typename OpT>
LogicalResult verifyReduceScatter(OpT op) {
  auto in = cast<RankedTensorType>(op.getX().getType());
  int64_t ranks = static_cast<int64_t>(op.getRanks());
  if (in.getRank() && in.getDimSize(0) % ranks != 0)
    return op.emitOpError() << "dimension 0 of " << in << " does not split into " << ranks
                            << " ranks";
  return checkCollective(op, op.getX(), in.getRank() ? in.getDimSize(0) / ranks : -1,
                         /*sums=*/true);
}

template <typename OpT>
LogicalResult verifyAllToAll(OpT op) {
  int64_t ranks = static_cast<int64_t>(op.getRanks());
  for (auto [name, v] : {std::pair<const char *, Value>{"send_counts", op.getSendCounts()},
                         {"recv_counts", op.getRecvCounts()}}) {
    auto t = cast<RankedTensorType>(v.getType());
    if (t.getRank() != 1 || t.getDimSize(0) != ranks)
      return op.emitOpError() << "'" << name << "' must be tensor<" << ranks << "xi64>, got "
                              << t;
  }
  return checkCollective(op, op.getX(), -1, /*sums=*/false);
}

} // namespace

LogicalResult AllReduceOp::verify() { return verifyAllReduce(*this); }
LogicalResult AllReduceStartOp::verify() { return verifyAllReduce(*this); }
LogicalResult AllGatherOp::verify() { return verifyAllGather(*this); }
LogicalResult AllGatherStartOp::verify() { return verifyAllGather(*this); }
LogicalResult ReduceScatterOp::verify() { return verifyReduceScatter(*this); }
LogicalResult ReduceScatterStartOp::verify() { return verifyReduceScatter(*this); }
LogicalResult AllToAllOp::verify() { return verifyAllToAll(*this); }
LogicalResult AllToAllStartOp::verify() { return verifyAllToAll(*this); }

/// [N, ...] and [ceil(N / ranks), ...] with the same trailing dimensions.
LogicalResult checkRankRows(Operation *op, RankedTensorType full, RankedTensorType block,
                            int64_t ranks, StringRef group) {
  if (failed(checkGroup(op, group)))
    return failure();
  if (full.getRank() == 0 || full.getRank() != block.getRank() ||
      full.getElementType() != block.getElementType())
    return op->emitOpError() << full << " and " << block << " are not a tensor and its block";
  int64_t rows = (full.getDimSize(0) + ranks - 1) / ranks;
  if (block.getDimSize(0) != rows || full.getShape().drop_front() != block.getShape().drop_front())
    return op->emitOpError() << "the block of " << full << " over " << ranks << " ranks has "
                             << rows << " rows, got " << block;
  return success();
}

LogicalResult RankRowsOp::verify() {
  return checkRankRows(*this, getX().getType(), getType(), static_cast<int64_t>(getRanks()),
                       getGroup());
}

LogicalResult RankRowsGradOp::verify() {
  return checkRankRows(*this, getType(), getDy().getType(), static_cast<int64_t>(getRanks()),
                       getGroup());
}

LogicalResult SendOp::verify() {
  if (!isa<NoneType>(getRequest().getType().getResultType()))
    return emitOpError() << "a send's request yields nothing: expected !dsv3.request<none>";
  return success();
}

LogicalResult RecvOp::verify() {
  Type t = getRequest().getType().getResultType();
  auto tensor = dyn_cast<RankedTensorType>(t);
  if (!tensor || !tensor.hasStaticShape())
    return emitOpError() << "receives a statically shaped tensor, got " << t;
  return success();
}

LogicalResult WaitOp::verify() {
  Type t = getRequest().getType().getResultType();
  if (isa<NoneType>(t)) {
    if (!getResult().empty())
      return emitOpError() << "the request yields nothing";
    return success();
  }
  if (getResult().size() != 1 || getResult()[0].getType() != t)
    return emitOpError() << "must yield " << t << ", the request's type";
  return success();
}
