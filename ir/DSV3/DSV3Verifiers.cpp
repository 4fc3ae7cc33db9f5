//===- DSV3Verifiers.cpp - shape and attribute checks for dsv3 ops -------===//
//
// Every dsv3 op checks ranks, the dimensions it relates and its attributes, so
// that a malformed model description fails at the frontend with a diagnostic
// naming the operand instead of producing wrong numbers after lowering.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace dsv3;

namespace {

/// Small helper bound to one op that emits "'<name>' ..." diagnostics.
class ShapeChecker {
public:
  explicit ShapeChecker(Operation *op) : op(op) {}

  /// Checks `v` has rank `rank` and returns its shape through `shape`.
  LogicalResult rank(Value v, StringRef name, int64_t rank,
                     ArrayRef<int64_t> &shape) {
    auto type = cast<RankedTensorType>(v.getType());
    if (type.getRank() != rank)
      return op->emitOpError() << "'" << name << "' must have rank " << rank
                               << ", got " << type;
    shape = type.getShape();
    return success();
  }

  /// Checks a dimension against an expected size (dynamic sizes pass).
  LogicalResult dim(StringRef name, ArrayRef<int64_t> shape, int64_t index,
                    int64_t expected, StringRef what) {
    int64_t got = shape[index];
    if (ShapedType::isDynamic(got) || ShapedType::isDynamic(expected) ||
        got == expected)
      return success();
    return op->emitOpError() << "'" << name << "' dimension " << index
                             << " is " << got << " but " << what << " is "
                             << expected;
  }

  /// Checks `v` has exactly `expected` as shape; `what` names the source of
  /// the expectation.
  LogicalResult shape(Value v, StringRef name, ArrayRef<int64_t> expected,
                      StringRef what) {
    ArrayRef<int64_t> got;
    if (failed(rank(v, name, expected.size(), got)))
      return failure();
    for (auto [i, e] : llvm::enumerate(expected))
      if (failed(dim(name, got, i, e, what)))
        return failure();
    return success();
  }

  LogicalResult positive(StringRef attr, int64_t value) {
    if (value > 0)
      return success();
    return op->emitOpError() << "attribute '" << attr
                             << "' must be positive, got " << value;
  }

private:
  Operation *op;
};

/// Routing attributes shared by dsv3.moe and dsv3.moe_router.
LogicalResult verifyRouting(Operation *op, int64_t experts, int64_t topK,
                            int64_t nGroup, int64_t topkGroup) {
  ShapeChecker c(op);
  if (failed(c.positive("top_k", topK)) ||
      failed(c.positive("n_group", nGroup)) ||
      failed(c.positive("topk_group", topkGroup)))
    return failure();
  if (ShapedType::isDynamic(experts))
    return success();
  if (experts % nGroup != 0)
    return op->emitOpError() << "n_group (" << nGroup
                             << ") must divide the number of experts ("
                             << experts << ")";
  if (nGroup > 64)
    return op->emitOpError() << "n_group (" << nGroup
                             << ") above 64 is not supported";
  if (topkGroup > nGroup)
    return op->emitOpError() << "topk_group (" << topkGroup
                             << ") exceeds n_group (" << nGroup << ")";
  if (topK > topkGroup * (experts / nGroup))
    return op->emitOpError()
           << "top_k (" << topK << ") exceeds the experts in the kept groups ("
           << topkGroup * (experts / nGroup) << ")";
  return success();
}

/// Node-limited routing on top of the group rule (dsv3.moe_router).
LogicalResult verifyNodeLimit(Operation *op, int64_t experts, int64_t topK, int64_t nGroup,
                              std::optional<uint64_t> nodesAttr,
                              std::optional<uint64_t> maxNodesAttr) {
  if (!nodesAttr && !maxNodesAttr)
    return success();
  if (!nodesAttr || !maxNodesAttr)
    return op->emitOpError() << "needs both 'nodes' and 'max_nodes', or neither";
  // I64Attr reads back unsigned: check the signed values.
  int64_t nodes = static_cast<int64_t>(*nodesAttr), maxNodes = static_cast<int64_t>(*maxNodesAttr);
  if (nodes <= 0 || maxNodes <= 0 || maxNodes > nodes)
    return op->emitOpError() << "max_nodes (" << maxNodes << ") must be in [1, nodes (" << nodes
                             << ")]";
  if (ShapedType::isDynamic(experts))
    return success();
  if (experts % nodes != 0)
    return op->emitOpError() << "nodes (" << nodes << ") must divide the number of experts ("
                             << experts << ")";
  if (nGroup != 1 && nGroup % nodes != 0)
    return op->emitOpError() << "the " << nGroup << " groups must lie within the " << nodes
                             << " nodes (n_group a multiple of nodes, or 1)";
  int64_t perNode = experts / nodes, pick = (topK + maxNodes - 1) / maxNodes;
  if (pick > perNode)
    return op->emitOpError() << "ceil(top_k / max_nodes) = " << pick
                             << " exceeds the experts of a node (" << perNode << ")";
  // With the pick within a node and top_k within the kept groups, the
  // kept nodes always hold top_k eligible experts: M nodes give at least
  // M * pick >= top_k of them, or all of the kept groups.
  return success();
}

} // namespace

LogicalResult ParamOp::verify() {
  StringRef name = getName();
  if (name.empty())
    return emitOpError() << "parameter name must not be empty";
  size_t stars = name.count('*');
  if (auto stack = getStack()) {
    // I64Attr reads back unsigned: check the signed value.
    if (getStackAttr().getInt() <= 0)
      return emitOpError() << "stack count must be positive, got "
                           << getStackAttr().getInt();
    if (stars != 1)
      return emitOpError() << "a stacked parameter name needs exactly one '*', got '"
                           << name << "'";
    auto type = getResult().getType();
    if (type.getRank() < 1 || type.getDimSize(0) != static_cast<int64_t>(*stack))
      return emitOpError() << "result leading dimension must equal the stack count "
                           << *stack << ", got " << type;
  } else if (stars != 0) {
    return emitOpError() << "'*' in parameter name '" << name
                         << "' requires a stack count";
  }
  if (auto shard = getShard()) {
    if (*shard != "expert")
      return emitOpError() << "parameters are sharded over the \"expert\" group only, got \""
                           << *shard << "\"";
    if (!getStack())
      return emitOpError() << "only a stacked parameter can be sharded";
  }
  return success();
}

LogicalResult MoESendCountsOp::verify() {
  int64_t experts = static_cast<int64_t>(getNumExperts());
  int64_t ranks = static_cast<int64_t>(getRanks());
  int64_t bounds = getOffsets().getType().getDimSize(0);
  if (experts <= 0 || experts % ranks != 0)
    return emitOpError() << experts << " experts do not split over " << ranks << " ranks";
  if (bounds < experts + 1)
    return emitOpError() << "offsets " << getOffsets().getType() << " delimit fewer than "
                         << experts << " groups";
  if (getSendCounts().getType().getShape() != ArrayRef<int64_t>{ranks} ||
      getExpertCounts().getType().getShape() != ArrayRef<int64_t>{experts})
    return emitOpError() << "results must be tensor<" << ranks << "xi64> and tensor<" << experts
                         << "xi64>";
  return success();
}

LogicalResult MoERecvLayoutOp::verify() {
  int64_t ranks = static_cast<int64_t>(getRanks());
  auto counts = getCounts().getType();
  if (counts.getRank() != 1 || counts.getDimSize(0) % ranks != 0)
    return emitOpError() << "counts " << counts << " are not one block per each of " << ranks
                         << " ranks";
  auto local = getLocalExpert().getType();
  if (getRecvCounts().getType().getShape() != ArrayRef<int64_t>{ranks} || local.getRank() != 2 ||
      local.getDimSize(1) != 1)
    return emitOpError() << "results must be tensor<" << ranks << "xi64> and tensor<Mx1xi64>";
  return success();
}

LogicalResult EmbeddingOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> ids, table;
  if (failed(c.rank(getIds(), "ids", 2, ids)) ||
      failed(c.rank(getTable(), "table", 2, table)))
    return failure();
  return c.shape(getResult(), "result", {ids[0], ids[1], table[1]},
                 "[batch, seq] of ids and the table width");
}

/// The attributes and query path shared by dsv3.mla_attention and
/// dsv3.mla_cached_attention, for inputs of hidden size `d`.
template <class Op> LogicalResult verifyMLAQuery(Op op, ShapeChecker &c, int64_t d) {
  int64_t heads = op.getNumHeads(), qr = op.getQLoraRank(), kvr = op.getKvLoraRank(),
          nope = op.getQkNopeHeadDim(), rope = op.getQkRopeHeadDim(), vd = op.getVHeadDim();
  if (failed(c.positive("num_heads", heads)) ||
      failed(c.positive("kv_lora_rank", kvr)) ||
      failed(c.positive("qk_nope_head_dim", nope)) ||
      failed(c.positive("qk_rope_head_dim", rope)) ||
      failed(c.positive("v_head_dim", vd)))
    return failure();
  if (rope % 2 != 0)
    return op.emitOpError() << "qk_rope_head_dim must be even, got " << rope;
  if (static_cast<int64_t>(op.getRopeInvFreq().size()) != rope / 2)
    return op.emitOpError() << "rope_inv_freq has " << op.getRopeInvFreq().size()
                            << " entries, expected qk_rope_head_dim / 2 = " << rope / 2;
  if (op.getSoftmaxScale().convertToDouble() <= 0)
    return op.emitOpError() << "softmax_scale must be positive";
  int64_t qOut = heads * (nope + rope);
  if (qr > 0) {
    if (!op.getQA() || !op.getQANorm() || !op.getQB() || op.getQProj())
      return op.emitOpError() << "q_lora_rank " << qr
                              << " needs q_a, q_a_norm and q_b and no q_proj";
    if (failed(c.shape(op.getQA(), "q_a", {qr, d}, "[q_lora_rank, hidden]")) ||
        failed(c.shape(op.getQANorm(), "q_a_norm", {qr}, "[q_lora_rank]")) ||
        failed(c.shape(op.getQB(), "q_b", {qOut, qr},
                       "[heads*(qk_nope+qk_rope), q_lora_rank]")))
      return failure();
  } else {
    if (!op.getQProj() || op.getQA() || op.getQANorm() || op.getQB())
      return op.emitOpError()
             << "without query compression (q_lora_rank 0) only q_proj is allowed";
    if (failed(c.shape(op.getQProj(), "q_proj", {qOut, d},
                       "[heads*(qk_nope+qk_rope), hidden]")))
      return failure();
  }
  if (failed(c.shape(op.getKvB(), "kv_b", {heads * (nope + vd), kvr},
                     "[heads*(qk_nope+v_head), kv_lora_rank]")) ||
      failed(c.shape(op.getO(), "o", {d, heads * vd}, "[hidden, heads*v_head]")))
    return failure();
  return success();
}

LogicalResult MLAAttentionOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x;
  if (failed(c.rank(getX(), "x", 3, x)) || failed(verifyMLAQuery(*this, c, x[2])))
    return failure();
  int64_t d = x[2], kvr = getKvLoraRank(), rope = getQkRopeHeadDim();
  if (failed(c.shape(getKvA(), "kv_a", {kvr + rope, d},
                     "[kv_lora_rank+qk_rope, hidden]")) ||
      failed(c.shape(getKvANorm(), "kv_a_norm", {kvr}, "[kv_lora_rank]")))
    return failure();
  if (getSegmentIds() && failed(c.shape(getSegmentIds(), "segment_ids",
                                        {x[0], x[1]}, "[batch, seq] of 'x'")))
    return failure();
  return c.shape(getResult(), "result", x, "the input shape");
}

LogicalResult MLACacheRowOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x;
  if (failed(c.rank(getX(), "x", 3, x)))
    return failure();
  int64_t kvr = getKvLoraRank(), rope = getQkRopeHeadDim();
  if (failed(c.positive("kv_lora_rank", kvr)) || failed(c.positive("qk_rope_head_dim", rope)))
    return failure();
  if (rope % 2 != 0)
    return emitOpError() << "qk_rope_head_dim must be even, got " << rope;
  if (static_cast<int64_t>(getRopeInvFreq().size()) != rope / 2)
    return emitOpError() << "rope_inv_freq has " << getRopeInvFreq().size()
                         << " entries, expected qk_rope_head_dim / 2 = " << rope / 2;
  if (failed(c.shape(getKvA(), "kv_a", {kvr + rope, x[2]}, "[kv_lora_rank+qk_rope, hidden]")) ||
      failed(c.shape(getKvANorm(), "kv_a_norm", {kvr}, "[kv_lora_rank]")) ||
      failed(c.shape(getPositions(), "positions", {x[0], x[1]}, "[batch, seq] of 'x'")))
    return failure();
  return c.shape(getResult(), "result", {x[0], x[1], kvr + rope},
                 "[batch, seq, kv_lora_rank+qk_rope]");
}

LogicalResult MLACachedAttentionOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x, cache;
  if (failed(c.rank(getX(), "x", 3, x)) || failed(verifyMLAQuery(*this, c, x[2])) ||
      failed(c.rank(getCache(), "cache", 3, cache)))
    return failure();
  int64_t row = getKvLoraRank() + getQkRopeHeadDim();
  if (failed(c.shape(getCache(), "cache", {x[0], cache[1], row},
                     "[batch, capacity, kv_lora_rank+qk_rope]")) ||
      failed(c.shape(getRows(), "rows", {x[0], x[1], row},
                     "[batch, seq, kv_lora_rank+qk_rope]")) ||
      failed(c.shape(getPositions(), "positions", {x[0], x[1]}, "[batch, seq] of 'x'")))
    return failure();
  return c.shape(getResult(), "result", x, "the input shape");
}

LogicalResult MLPOp::verify() {
  ShapeChecker c(*this);
  auto x = getX().getType().getShape();
  if (x.empty())
    return emitOpError() << "'x' must have rank >= 1";
  ArrayRef<int64_t> gate;
  if (failed(c.rank(getGate(), "gate", 2, gate)))
    return failure();
  int64_t d = x.back(), inner = gate[0];
  if (failed(c.shape(getGate(), "gate", {inner, d}, "[inner, hidden]")) ||
      failed(c.shape(getUp(), "up", {inner, d}, "[inner, hidden]")) ||
      failed(c.shape(getDown(), "down", {d, inner}, "[hidden, inner]")))
    return failure();
  return c.shape(getResult(), "result", x, "the input shape");
}

LogicalResult MoEOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x, router, gate;
  if (failed(c.rank(getX(), "x", 3, x)) ||
      failed(c.rank(getRouter(), "router", 2, router)) ||
      failed(c.rank(getExpertGate(), "expert_gate", 3, gate)))
    return failure();
  int64_t d = x[2], e = router[0], inner = gate[1];
  if (failed(c.shape(getRouter(), "router", {e, d}, "[experts, hidden]")) ||
      failed(c.shape(getBias(), "bias", {e}, "[experts]")) ||
      failed(c.shape(getExpertGate(), "expert_gate", {e, inner, d},
                     "[experts, inner, hidden]")) ||
      failed(c.shape(getExpertUp(), "expert_up", {e, inner, d},
                     "[experts, inner, hidden]")) ||
      failed(c.shape(getExpertDown(), "expert_down", {e, d, inner},
                     "[experts, hidden, inner]")))
    return failure();
  if (getSharedGate()) {
    ArrayRef<int64_t> sg;
    if (failed(c.rank(getSharedGate(), "shared_gate", 2, sg)) ||
        failed(c.shape(getSharedGate(), "shared_gate", {sg[0], d},
                       "[shared inner, hidden]")) ||
        failed(c.shape(getSharedUp(), "shared_up", {sg[0], d},
                       "[shared inner, hidden]")) ||
        failed(c.shape(getSharedDown(), "shared_down", {d, sg[0]},
                       "[hidden, shared inner]")))
      return failure();
  }
  if (failed(verifyRouting(*this, e, getTopK(), getNGroup(), getTopkGroup())))
    return failure();
  int64_t tokens = ShapedType::isDynamic(x[0]) || ShapedType::isDynamic(x[1])
                       ? ShapedType::kDynamic
                       : x[0] * x[1];
  if (failed(c.shape(getResult(), "result", x, "the input shape")) ||
      failed(c.shape(getExpertIds(), "expert_ids", {tokens, static_cast<int64_t>(getTopK())},
                     "[batch*seq, top_k]")))
    return failure();
  return success();
}

LogicalResult MTPInputOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> h;
  if (failed(c.rank(getHidden(), "hidden", 3, h)))
    return failure();
  int64_t d = h[2];
  if (failed(c.shape(getEmbedding(), "embedding", h, "the hidden shape")) ||
      failed(c.shape(getEnorm(), "enorm", {d}, "[hidden]")) ||
      failed(c.shape(getHnorm(), "hnorm", {d}, "[hidden]")) ||
      failed(c.shape(getEhProj(), "eh_proj",
                     {d, ShapedType::isDynamic(d) ? d : 2 * d},
                     "[hidden, 2*hidden]")))
    return failure();
  return c.shape(getResult(), "result", h, "the hidden shape");
}

LogicalResult LinearOp::verify() {
  ShapeChecker c(*this);
  auto x = getX().getType().getShape();
  ArrayRef<int64_t> w;
  if (x.empty())
    return emitOpError() << "'x' must have rank >= 1";
  if (failed(c.rank(getWeight(), "weight", 2, w)) ||
      failed(c.dim("weight", w, 1, x.back(), "the last dimension of 'x'")))
    return failure();
  SmallVector<int64_t> expected(x);
  expected.back() = w[0];
  return c.shape(getResult(), "result", expected, "x[..., :] W^T");
}

LogicalResult RMSNormOp::verify() {
  ShapeChecker c(*this);
  auto x = getX().getType().getShape();
  if (x.empty())
    return emitOpError() << "'x' must have rank >= 1";
  if (getEpsilon().convertToDouble() < 0)
    return emitOpError() << "epsilon must not be negative";
  if (failed(c.shape(getWeight(), "weight", {x.back()},
                     "the last dimension of 'x'")))
    return failure();
  return c.shape(getResult(), "result", x, "the input shape");
}

LogicalResult RopeOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x;
  if (failed(c.rank(getX(), "x", 4, x)))
    return failure();
  if (!ShapedType::isDynamic(x[3])) {
    if (x[3] % 2 != 0)
      return emitOpError() << "rotary dimension must be even, got " << x[3];
    if (static_cast<int64_t>(getInvFreq().size()) != x[3] / 2)
      return emitOpError() << "inv_freq has " << getInvFreq().size()
                           << " entries, expected " << x[3] / 2;
  }
  if (failed(c.shape(getPositions(), "positions", {x[0], x[1]}, "[B, T] of 'x'")))
    return failure();
  return c.shape(getResult(), "result", x, "the input shape");
}

LogicalResult PositionsOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> shape;
  if (failed(c.rank(getResult(), "result", 2, shape)))
    return failure();
  // I64Attr reads back unsigned: check the signed value.
  if (getOffsetAttr().getInt() < 0)
    return emitOpError() << "offset must not be negative";
  return success();
}

LogicalResult MLACoreOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> qn, qr, v;
  if (failed(c.rank(getQNope(), "q_nope", 4, qn)) ||
      failed(c.rank(getQRope(), "q_rope", 4, qr)) ||
      failed(c.rank(getV(), "v", 4, v)))
    return failure();
  ArrayRef<int64_t> kn;
  if (failed(c.rank(getKNope(), "k_nope", 4, kn)))
    return failure();
  // Queries may be fewer than keys: they are then the last Tq positions,
  // after a cached prefix.
  int64_t b = qn[0], tq = qn[1], h = qn[2], tk = kn[1];
  if (failed(c.shape(getQRope(), "q_rope", {b, tq, h, qr[3]}, "q_nope's [B,T,H]")) ||
      failed(c.shape(getKNope(), "k_nope", {b, tk, h, qn[3]}, "q_nope's [B, ., H, D]")) ||
      failed(c.shape(getKRope(), "k_rope", {b, tk, qr[3]}, "[B, Tk, rope dim]")) ||
      failed(c.shape(getV(), "v", {b, tk, h, v[3]}, "k_nope's [B,Tk,H]")))
    return failure();
  if (!ShapedType::isDynamic(tq) && !ShapedType::isDynamic(tk) && tk < tq)
    return emitOpError() << "has " << tk << " keys for " << tq
                         << " queries; the queries are the last positions of the keys";
  if (getSegmentIds() &&
      failed(c.shape(getSegmentIds(), "segment_ids", {b, tk}, "[B, Tk]")))
    return failure();
  if (getSoftmaxScale().convertToDouble() <= 0)
    return emitOpError() << "softmax_scale must be positive";
  return c.shape(getResult(), "result", {b, tq, h, v[3]}, "[B, Tq, H, Dv]");
}

LogicalResult MLAAbsorbedCoreOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> qn, qr, uk, uv, cache;
  if (failed(c.rank(getQNope(), "q_nope", 4, qn)) ||
      failed(c.rank(getQRope(), "q_rope", 4, qr)) ||
      failed(c.rank(getWUk(), "w_uk", 3, uk)) || failed(c.rank(getWUv(), "w_uv", 3, uv)) ||
      failed(c.rank(getCache(), "cache", 3, cache)))
    return failure();
  int64_t b = qn[0], t = qn[1], h = qn[2], latent = uk[2], rope = qr[3];
  if (failed(c.shape(getQRope(), "q_rope", {b, t, h, rope}, "q_nope's [B,T,H]")) ||
      failed(c.shape(getWUk(), "w_uk", {h, qn[3], latent}, "[H, qk_nope, kv_lora_rank]")) ||
      failed(c.shape(getWUv(), "w_uv", {h, uv[1], latent}, "[H, v_head, kv_lora_rank]")) ||
      failed(c.shape(getCache(), "cache", {b, cache[1], latent + rope},
                     "[B, capacity, kv_lora_rank+rope]")) ||
      failed(c.shape(getRows(), "rows", {b, t, latent + rope}, "[B, T, kv_lora_rank+rope]")) ||
      failed(c.shape(getPositions(), "positions", {b, t}, "[B, T]")))
    return failure();
  if (getSoftmaxScale().convertToDouble() <= 0)
    return emitOpError() << "softmax_scale must be positive";
  return c.shape(getResult(), "result", {b, t, h, uv[1]}, "[B, T, H, v_head]");
}

LogicalResult SwiGLUOp::verify() {
  if (getGate().getType() != getUp().getType() ||
      getGate().getType() != getResult().getType())
    return emitOpError() << "gate, up and result must have the same type";
  return success();
}

LogicalResult MoERouterOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x, r;
  if (failed(c.rank(getX(), "x", 2, x)) ||
      failed(c.rank(getRouter(), "router", 2, r)) ||
      failed(c.dim("router", r, 1, x[1], "the hidden size of 'x'")) ||
      failed(c.shape(getBias(), "bias", {r[0]}, "[experts]")) ||
      failed(verifyRouting(*this, r[0], getTopK(), getNGroup(), getTopkGroup())) ||
      failed(verifyNodeLimit(*this, r[0], getTopK(), getNGroup(), getNodes(),
                             getMaxNodes())) ||
      failed(c.shape(getWeights(), "weights", {x[0], static_cast<int64_t>(getTopK())}, "[tokens, top_k]")) ||
      failed(c.shape(getExpertIds(), "expert_ids", {x[0], static_cast<int64_t>(getTopK())},
                     "[tokens, top_k]")))
    return failure();
  return success();
}

namespace {
/// a*b, dynamic if either is.
int64_t product(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) ? ShapedType::kDynamic
                                                              : a * b;
}
} // namespace

LogicalResult MoEDispatchOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> x, ids;
  int64_t experts = getNumExperts();
  if (failed(c.positive("num_experts", experts)) ||
      failed(c.rank(getX(), "x", 2, x)) ||
      failed(c.rank(getExpertIds(), "expert_ids", 2, ids)) ||
      failed(c.dim("expert_ids", ids, 0, x[0], "the token count of 'x'")))
    return failure();
  int64_t rows = product(ids[0], ids[1]);
  if (failed(c.shape(getRows(), "rows", {rows, x[1]}, "[tokens*top_k, hidden]")) ||
      failed(c.shape(getRowOfSlot(), "row_of_slot", ids, "the shape of 'expert_ids'")) ||
      failed(c.shape(getSlotOfRow(), "slot_of_row", {rows}, "[tokens*top_k]")))
    return failure();
  return c.shape(getOffsets(), "offsets", {experts + 1}, "[num_experts+1]");
}

/// Shared by the grouped linear and its input gradient: rows [R, in],
/// weight [E, out, in], offsets [E+1], result [R, out].
static LogicalResult verifyGroupedGemm(Operation *op, Value in, Value weight,
                                       Value offsets, Value out,
                                       bool weightInIsLast) {
  ShapeChecker c(op);
  ArrayRef<int64_t> x, w;
  if (failed(c.rank(in, "input rows", 2, x)) ||
      failed(c.rank(weight, "weight", 3, w)))
    return failure();
  int64_t bounds = ShapedType::isDynamic(w[0]) ? ShapedType::kDynamic : w[0] + 1;
  if (failed(c.shape(offsets, "offsets", {bounds}, "[experts+1] of the weight")))
    return failure();
  int64_t inDim = weightInIsLast ? 2 : 1, outDim = weightInIsLast ? 1 : 2;
  if (failed(c.dim("weight", w, inDim, x[1], "the row width of the input")))
    return failure();
  return c.shape(out, "result", {x[0], w[outDim]}, "[rows, out] of the operands");
}

LogicalResult GroupedLinearOp::verify() {
  return verifyGroupedGemm(*this, getX(), getWeight(), getOffsets(), getResult(),
                           /*weightInIsLast=*/true);
}

LogicalResult GroupedLinearGradInputOp::verify() {
  return verifyGroupedGemm(*this, getDy(), getWeight(), getOffsets(), getDx(),
                           /*weightInIsLast=*/false);
}

LogicalResult GroupedLinearGradWeightOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> dy, x;
  int64_t experts = getNumExperts();
  if (failed(c.positive("num_experts", experts)) ||
      failed(c.rank(getDy(), "dy", 2, dy)) || failed(c.rank(getX(), "x", 2, x)) ||
      failed(c.dim("x", x, 0, dy[0], "the row count of 'dy'")) ||
      failed(c.shape(getOffsets(), "offsets", {experts + 1}, "[num_experts+1]")))
    return failure();
  return c.shape(getDweight(), "dweight", {experts, dy[1], x[1]},
                 "[experts, out, in]");
}

LogicalResult MoECombineOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> rows, w;
  if (failed(c.rank(getRows(), "rows", 2, rows)) ||
      failed(c.rank(getWeights(), "weights", 2, w)) ||
      failed(c.shape(getRowOfSlot(), "row_of_slot", w, "the shape of 'weights'")) ||
      failed(c.dim("rows", rows, 0, product(w[0], w[1]), "tokens*top_k of 'weights'")))
    return failure();
  return c.shape(getResult(), "result", {w[0], rows[1]}, "[tokens, width of 'rows']");
}

LogicalResult CrossEntropyOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> logits;
  if (failed(c.rank(getLogits(), "logits", 3, logits)))
    return failure();
  return c.shape(getLabels(), "labels", {logits[0], logits[1]},
                 "[batch, seq] of the logits");
}

LogicalResult MoEBalanceLossOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> logits, ids;
  if (failed(c.rank(getLogits(), "logits", 3, logits)) ||
      failed(c.rank(getExpertIds(), "expert_ids", 2, ids)))
    return failure();
  int64_t tokens = ShapedType::isDynamic(logits[0]) || ShapedType::isDynamic(logits[1])
                       ? ShapedType::kDynamic
                       : logits[0] * logits[1];
  if (failed(c.dim("expert_ids", ids, 0, tokens, "batch*seq of the logits")))
    return failure();
  if (getAlpha().convertToDouble() < 0)
    return emitOpError() << "alpha must not be negative";
  return success();
}

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

LogicalResult LinearGradInputOp::verify() {
  ShapeChecker c(*this);
  auto dy = getDy().getType().getShape();
  ArrayRef<int64_t> w;
  if (dy.empty() || failed(c.rank(getWeight(), "weight", 2, w)) ||
      failed(c.dim("weight", w, 0, dy.back(), "the last dimension of 'dy'")))
    return failure();
  SmallVector<int64_t> expected(dy);
  expected.back() = w[1];
  return c.shape(getDx(), "dx", expected, "dy W");
}

LogicalResult LinearGradWeightOp::verify() {
  ShapeChecker c(*this);
  auto dy = getDy().getType().getShape(), x = getX().getType().getShape();
  if (dy.empty() || dy.size() != x.size())
    return emitOpError() << "'dy' and 'x' must have the same rank >= 1";
  for (size_t i = 0; i + 1 < dy.size(); ++i)
    if (failed(c.dim("x", x, i, dy[i], "the matching dimension of 'dy'")))
      return failure();
  return c.shape(getDweight(), "dweight", {dy.back(), x.back()}, "[out, in]");
}

LogicalResult MoERouterGradOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> ids;
  if (failed(c.rank(getExpertIds(), "expert_ids", 2, ids)) ||
      failed(c.shape(getDweights(), "dweights", ids, "the expert_ids shape")) ||
      failed(c.dim("logits", getLogits().getType().getShape(), 0, ids[0],
                   "the token count of 'expert_ids'")))
    return failure();
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  ShapeChecker c(*this);
  ArrayRef<int64_t> ids, dy, table;
  if (failed(c.rank(getIds(), "ids", 2, ids)) ||
      failed(c.rank(getDy(), "dy", 3, dy)) ||
      failed(c.rank(getDtable(), "dtable", 2, table)) ||
      failed(c.shape(getDy(), "dy", {ids[0], ids[1], table[1]},
                     "[batch, seq] of ids and the table width")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// FP8 ops
//===----------------------------------------------------------------------===//

namespace {

int64_t ceilDiv(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) ? a : (a + b - 1) / b;
}

/// codes [R, C] and scales [ceil(R/tr) + extraRowTiles, ceil(C/tc)] for
/// tile [tr, tc]; a leading stack dimension [E, R, C] is tiled per slice.
LogicalResult verifyTiling(Operation *op, ArrayRef<int64_t> tile, Value codes,
                           Value scales, int64_t extraRowTiles = 0) {
  ShapeChecker c(op);
  if (tile.size() != 2)
    return op->emitOpError() << "'tile' must hold two sizes, got " << tile.size();
  if (failed(c.positive("tile", tile[0])) || failed(c.positive("tile", tile[1])))
    return failure();
  auto shape = cast<RankedTensorType>(codes.getType()).getShape();
  SmallVector<int64_t> expected(shape.drop_back(2));
  int64_t rows = shape[shape.size() - 2], cols = shape.back();
  int64_t rowTiles = ceilDiv(rows, tile[0]);
  if (!ShapedType::isDynamic(rowTiles) && !ShapedType::isDynamic(extraRowTiles))
    rowTiles += extraRowTiles;
  else
    rowTiles = ShapedType::kDynamic;
  expected.append({rowTiles, ceilDiv(cols, tile[1])});
  return c.shape(scales, "scales", expected,
                 extraRowTiles ? "one scale per tile, plus one row of tiles "
                                 "per group"
                               : "one scale per tile");
}

} // namespace

/// The K tile of the scales and of the CPU kernel.
static LogicalResult verifyPromotionInterval(Operation *op, int64_t interval) {
  if (interval == 128)
    return success();
  return op->emitOpError() << "promotion_interval must be 128 (the K tile of "
                              "the scales and of the CPU kernel), got "
                           << interval;
}

LogicalResult FP8QuantizeOp::verify() {
  ShapeChecker c(*this);
  auto x = cast<RankedTensorType>(getX().getType());
  if (failed(c.shape(getCodes(), "codes", x.getShape(), "the shape of 'x'")))
    return failure();
  int64_t groups = 0;
  if (Value offsets = getGroups()) {
    ArrayRef<int64_t> o;
    if (x.getRank() != 2)
      return emitOpError() << "'groups' applies to a matrix 'x', got rank "
                           << x.getRank();
    if (failed(c.rank(offsets, "groups", 1, o)))
      return failure();
    if (!ShapedType::isDynamic(o[0]) && o[0] < 2)
      return emitOpError() << "'groups' must hold at least two offsets, got "
                           << o[0];
    groups = ShapedType::isDynamic(o[0]) ? ShapedType::kDynamic : o[0] - 1;
  }
  return verifyTiling(*this, getTile(), getCodes(), getScales(), groups);
}

LogicalResult FP8DequantizeOp::verify() {
  ShapeChecker c(*this);
  if (failed(c.shape(getResult(), "result", getCodes().getType().getShape(),
                     "the shape of 'codes'")))
    return failure();
  return verifyTiling(*this, getTile(), getCodes(), getScales());
}

LogicalResult FP8GemmOp::verify() {
  ShapeChecker c(*this);
  int64_t interval = getPromotionInterval();
  if (failed(verifyPromotionInterval(*this, interval)))
    return failure();
  auto a = getA().getType().getShape(), b = getB().getType().getShape();
  bool ta = getTransposeA(), tb = getTransposeB();
  int64_t m = a[ta ? 1 : 0], k = a[ta ? 0 : 1];
  int64_t n = b[tb ? 1 : 0];
  if (failed(c.dim("b", b, tb ? 0 : 1, k, "the K dimension of 'a'")))
    return failure();
  // Scales: one per tile of `interval` along K and of 1 or 128 rows.
  auto checkScales = [&](Value scales, StringRef name, int64_t rows,
                         bool transposed) -> LogicalResult {
    auto s = cast<RankedTensorType>(scales.getType()).getShape();
    int64_t sr = s[transposed ? 1 : 0];
    if (failed(c.dim(name, s, transposed ? 0 : 1, ceilDiv(k, interval),
                     "the number of K tiles")))
      return failure();
    if (ShapedType::isDynamic(sr) || ShapedType::isDynamic(rows) ||
        sr == rows || sr == ceilDiv(rows, 128))
      return success();
    return emitOpError() << "'" << name << "' has " << sr
                         << " row tiles, expected " << rows << " (1-row tiles) or "
                         << ceilDiv(rows, 128) << " (128-row tiles)";
  };
  if (failed(checkScales(getAScales(), "a_scales", m, ta)) ||
      failed(checkScales(getBScales(), "b_scales", n, tb)))
    return failure();
  return c.shape(getResult(), "result", {m, n}, "[M, N] of the operands");
}

LogicalResult FP8MGroupedGemmOp::verify() {
  ShapeChecker c(*this);
  int64_t interval = getPromotionInterval();
  if (failed(verifyPromotionInterval(*this, interval)))
    return failure();
  auto a = getA().getType().getShape(), b = getB().getType().getShape();
  bool tb = getTransposeB();
  int64_t rows = a[0], k = a[1], n = b[tb ? 2 : 1];
  int64_t experts = b[0];
  int64_t bounds = ShapedType::isDynamic(experts) ? experts : experts + 1;
  if (failed(c.dim("b", b, tb ? 1 : 2, k, "the K dimension of 'a'")) ||
      failed(c.shape(getAScales(), "a_scales", {rows, ceilDiv(k, interval)},
                     "one scale per 1x128 tile of 'a'")) ||
      failed(c.shape(getBScales(), "b_scales",
                     tb ? SmallVector<int64_t>{experts, ceilDiv(k, 128), ceilDiv(n, 128)}
                        : SmallVector<int64_t>{experts, ceilDiv(n, 128), ceilDiv(k, 128)},
                     "one scale per 128x128 block of each expert")) ||
      failed(c.shape(getOffsets(), "offsets", {bounds}, "[experts+1] of 'b'")))
    return failure();
  return c.shape(getResult(), "result", {rows, n}, "[rows, N] of the operands");
}

LogicalResult FP8KGroupedGemmOp::verify() {
  ShapeChecker c(*this);
  int64_t interval = getPromotionInterval();
  if (failed(verifyPromotionInterval(*this, interval)))
    return failure();
  auto a = getA().getType().getShape(), b = getB().getType().getShape();
  ArrayRef<int64_t> o;
  if (failed(c.dim("b", b, 0, a[0], "the row count of 'a'")) ||
      failed(c.rank(getOffsets(), "offsets", 1, o)))
    return failure();
  int64_t experts = ShapedType::isDynamic(o[0]) ? o[0] : o[0] - 1;
  int64_t tiles = ShapedType::isDynamic(experts) ? experts
                                                 : ceilDiv(a[0], interval) + experts;
  if (ShapedType::isDynamic(a[0]))
    tiles = ShapedType::kDynamic;
  if (failed(c.shape(getAScales(), "a_scales", {tiles, a[1]},
                     "grouped 128x1 tiles of 'a'")) ||
      failed(c.shape(getBScales(), "b_scales", {tiles, b[1]},
                     "grouped 128x1 tiles of 'b'")))
    return failure();
  return c.shape(getResult(), "result", {experts, a[1], b[1]},
                 "[experts, M, N] of the operands");
}
