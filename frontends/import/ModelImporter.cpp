//===- ModelImporter.cpp - ModelConfig -> dsv3 IR -------------------------===//
//
// Emits the model-structure IR: embedding, decoder layers (MLA + dense MLP or
// MoE), final norm and head, the next-token loss, then each MTP depth (input
// projection, one decoder block, its own norm, the shared head, its loss).
//
//===----------------------------------------------------------------------===//
#include "frontends/import/ModelImporter.h"

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

#include <cmath>
#include <functional>

using namespace mlir;

namespace dsv3 {
namespace {

/// A result of @forward: its name in output files, its role, and the
/// parameter it belongs to (expert choices: the routing bias they update).
struct NamedOutput {
  std::string name;
  OutputRole role;
  std::string param;
};


class Importer {
public:
  Importer(MLIRContext &ctx, const ModelConfig &c, const ImportOptions &o)
      : b(&ctx), loc(b.getUnknownLoc()), c(c), o(o) {}

  llvm::Expected<OwningOpRef<ModuleOp>> run();

private:
  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getF32Type());
  }
  /// A parameter with its role, which passes and the runtime key on.
  Value param(const std::string &name, ArrayRef<int64_t> shape, ParamRole role) {
    return ParamOp::create(b, loc, f32(shape), b.getStringAttr(name), nullptr,
                           ParamRoleAttr::get(b.getContext(), role), nullptr);
  }
  Value stackedParam(const std::string &name, int64_t count, ArrayRef<int64_t> shape,
                     ParamRole role) {
    SmallVector<int64_t> full{count};
    full.append(shape.begin(), shape.end());
    return ParamOp::create(b, loc, f32(full), b.getStringAttr(name),
                           b.getI64IntegerAttr(count), ParamRoleAttr::get(b.getContext(), role),
                           nullptr);
  }
  std::string layer(int64_t l) { return "model.layers." + std::to_string(l) + "."; }
  Value rmsNorm(Value x, const std::string &w) {
    int64_t d = cast<RankedTensorType>(x.getType()).getShape().back();
    return RMSNormOp::create(b, loc, x.getType(), x, param(w, {d}, ParamRole::Norm),
                             b.getF64FloatAttr(c.rmsNormEps));
  }
  /// Static slice [:, from : from+len] of a [B, T(, ...)] tensor.
  Value sliceSeq(Value x, int64_t from, int64_t len) {
    auto shape = cast<RankedTensorType>(x.getType()).getShape();
    SmallVector<OpFoldResult> offsets(shape.size(), b.getIndexAttr(0)),
        strides(shape.size(), b.getIndexAttr(1)), sizes;
    for (int64_t s : shape)
      sizes.push_back(b.getIndexAttr(s));
    offsets[1] = b.getIndexAttr(from);
    sizes[1] = b.getIndexAttr(len);
    return tensor::ExtractSliceOp::create(b, loc, x, offsets, sizes, strides);
  }
  /// Layer l's query path (q_a/q_b or q_proj), kv_b and o_proj.
  struct AttentionWeights {
    Value qa, qaNorm, qb, qProj, kvb, o;
  };
  AttentionWeights attentionWeights(int64_t l);
  /// Layer l's latent projection kv_a_proj_with_mqa and its norm.
  std::pair<Value, Value> latentWeights(int64_t l);
  Value attention(int64_t l, Value x, Value segments);
  /// The absorbed attention of new tokens over `cache` (this layer's
  /// [B, S, row] slice) and their own `rows`.
  Value cachedAttention(int64_t l, Value x, Value cache, Value rows, Value positions);
  /// The cache rows of layer l's tokens at `positions`.
  Value cacheRow(int64_t l, Value x, Value positions);
  /// When set, decoder layers attend through it instead of attention().
  std::function<Value(int64_t, Value)> attend;

public:
  llvm::Expected<OwningOpRef<ModuleOp>> runGenerate(const GenerateShape &shape);

private:
  /// Returns the layer output; appends the chosen experts of MoE layers.
  Value decoderLayer(int64_t l, Value h, Value segments);
  /// Labels ids[:, shift : shift+len], with -1 (ignored) where the target is
  /// in another document than position i (packed rows only).
  Value labels(Value ids, Value segments, int64_t shift, int64_t len) {
    Value target = sliceSeq(ids, shift, len);
    if (!segments)
      return target;
    Value same = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                       sliceSeq(segments, shift, len),
                                       sliceSeq(segments, 0, len));
    auto type = cast<RankedTensorType>(target.getType());
    Value ignore = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(type, ArrayRef<Attribute>{b.getI64IntegerAttr(-1)}));
    return arith::SelectOp::create(b, loc, same, target, ignore);
  }
  Value head(Value h, const std::string &norm) {
    Value n = rmsNorm(h, norm);
    auto shape = cast<RankedTensorType>(h.getType()).getShape();
    Value w = c.tieWordEmbeddings
                  ? param("model.embed_tokens.weight", {c.vocabSize, c.hiddenSize},
                          ParamRole::Embedding)
                  : param("lm_head.weight", {c.vocabSize, c.hiddenSize}, ParamRole::Head);
    return LinearOp::create(b, loc, f32({shape[0], shape[1], c.vocabSize}), n,
                            w);
  }
  Value crossEntropy(Value logits, Value labels) {
    return CrossEntropyOp::create(b, loc,
                                  RankedTensorType::get({}, b.getF32Type()),
                                  logits, labels);
  }

  OpBuilder b;
  Location loc;
  const ModelConfig &c;
  const ImportOptions &o;
  SmallVector<Value> outputs;
  SmallVector<NamedOutput> outputNames;
  /// Balance-loss terms of the MoE layers, summed into total_loss.
  SmallVector<Value> balanceLosses;
};

Importer::AttentionWeights Importer::attentionWeights(int64_t l) {
  std::string p = layer(l) + "self_attn.";
  int64_t d = c.hiddenSize, h = c.numAttentionHeads, qk = c.qkHeadDim();
  AttentionWeights w;
  if (c.qLoraRank > 0) {
    w.qa = param(p + "q_a_proj.weight", {c.qLoraRank, d}, ParamRole::Attention);
    w.qaNorm = param(p + "q_a_layernorm.weight", {c.qLoraRank}, ParamRole::Norm);
    w.qb = param(p + "q_b_proj.weight", {h * qk, c.qLoraRank}, ParamRole::Attention);
  } else {
    w.qProj = param(p + "q_proj.weight", {h * qk, d}, ParamRole::Attention);
  }
  w.kvb = param(p + "kv_b_proj.weight", {h * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank},
                ParamRole::Attention);
  w.o = param(p + "o_proj.weight", {d, h * c.vHeadDim}, ParamRole::Attention);
  return w;
}

std::pair<Value, Value> Importer::latentWeights(int64_t l) {
  std::string p = layer(l) + "self_attn.";
  return {param(p + "kv_a_proj_with_mqa.weight", {c.kvLoraRank + c.qkRopeHeadDim, c.hiddenSize},
                ParamRole::Attention),
          param(p + "kv_a_layernorm.weight", {c.kvLoraRank}, ParamRole::Norm)};
}

Value Importer::attention(int64_t l, Value x, Value segments) {
  AttentionWeights w = attentionWeights(l);
  auto [kva, kvaNorm] = latentWeights(l);
  return MLAAttentionOp::create(
      b, loc, x.getType(), x, w.qa, w.qaNorm, w.qb, w.qProj, kva, kvaNorm, w.kvb, w.o,
      segments, b.getI64IntegerAttr(c.numAttentionHeads), b.getI64IntegerAttr(c.qLoraRank),
      b.getI64IntegerAttr(c.kvLoraRank), b.getI64IntegerAttr(c.qkNopeHeadDim),
      b.getI64IntegerAttr(c.qkRopeHeadDim), b.getI64IntegerAttr(c.vHeadDim),
      b.getF64FloatAttr(c.softmaxScale()), b.getF64FloatAttr(c.rmsNormEps),
      b.getDenseF64ArrayAttr(c.ropeInverseFrequencies()),
      b.getF64FloatAttr(c.ropeAttentionFactor()));
}

Value Importer::cacheRow(int64_t l, Value x, Value positions) {
  auto [kva, kvaNorm] = latentWeights(l);
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  return MLACacheRowOp::create(
      b, loc, f32({shape[0], shape[1], c.kvLoraRank + c.qkRopeHeadDim}), x, kva, kvaNorm,
      positions, b.getI64IntegerAttr(c.kvLoraRank), b.getI64IntegerAttr(c.qkRopeHeadDim),
      b.getF64FloatAttr(c.rmsNormEps), b.getDenseF64ArrayAttr(c.ropeInverseFrequencies()),
      b.getF64FloatAttr(c.ropeAttentionFactor()));
}

Value Importer::cachedAttention(int64_t l, Value x, Value cache, Value rows, Value positions) {
  AttentionWeights w = attentionWeights(l);
  return MLACachedAttentionOp::create(
      b, loc, x.getType(), x, w.qa, w.qaNorm, w.qb, w.qProj, w.kvb, w.o, cache, rows, positions,
      b.getI64IntegerAttr(c.numAttentionHeads), b.getI64IntegerAttr(c.qLoraRank),
      b.getI64IntegerAttr(c.kvLoraRank), b.getI64IntegerAttr(c.qkNopeHeadDim),
      b.getI64IntegerAttr(c.qkRopeHeadDim), b.getI64IntegerAttr(c.vHeadDim),
      b.getF64FloatAttr(c.softmaxScale()), b.getF64FloatAttr(c.rmsNormEps),
      b.getDenseF64ArrayAttr(c.ropeInverseFrequencies()),
      b.getF64FloatAttr(c.ropeAttentionFactor()));
}

Value Importer::decoderLayer(int64_t l, Value h, Value segments) {
  std::string p = layer(l);
  Value normed = rmsNorm(h, p + "input_layernorm.weight");
  Value a = attend ? attend(l, normed) : attention(l, normed, segments);
  h = arith::AddFOp::create(b, loc, h, a);
  Value f = rmsNorm(h, p + "post_attention_layernorm.weight");
  int64_t d = c.hiddenSize;
  Value m;
  if (c.isMoELayer(l)) {
    int64_t e = c.nRoutedExperts, i = c.moeIntermediateSize;
    std::string mp = p + "mlp.";
    Value router = param(mp + "gate.weight", {e, d}, ParamRole::Router);
    Value bias =
        c.hasRoutingBias
            ? param(mp + "gate.e_score_correction_bias", {e}, ParamRole::RoutingBias)
            : arith::ConstantOp::create(
                  b, loc, DenseElementsAttr::get(f32({e}), 0.0f));
    Value eg = stackedParam(mp + "experts.*.gate_proj.weight", e, {i, d}, ParamRole::Expert);
    Value eu = stackedParam(mp + "experts.*.up_proj.weight", e, {i, d}, ParamRole::Expert);
    Value ed = stackedParam(mp + "experts.*.down_proj.weight", e, {d, i}, ParamRole::Expert);
    Value sg, su, sd;
    if (c.nSharedExperts > 0) {
      int64_t si = i * c.nSharedExperts;
      sg = param(mp + "shared_experts.gate_proj.weight", {si, d}, ParamRole::SharedExpert);
      su = param(mp + "shared_experts.up_proj.weight", {si, d}, ParamRole::SharedExpert);
      sd = param(mp + "shared_experts.down_proj.weight", {d, si}, ParamRole::SharedExpert);
    }
    auto shape = cast<RankedTensorType>(f.getType()).getShape();
    auto moe = MoEOp::create(
        b, loc, f.getType(),
        RankedTensorType::get({shape[0] * shape[1], c.numExpertsPerTok},
                              b.getI64Type()),
        f, router, bias, eg, eu, ed, sg, su, sd,
        b.getI64IntegerAttr(c.numExpertsPerTok), b.getI64IntegerAttr(c.nGroup),
        b.getI64IntegerAttr(c.topkGroup), b.getBoolAttr(c.normTopkProb),
        b.getF64FloatAttr(c.routedScalingFactor));
    m = moe.getResult();
    if (o.mtpWeight && o.balanceAlpha > 0) {
      Value logits = LinearOp::create(
          b, loc, f32({shape[0], shape[1], e}), f, router);
      balanceLosses.push_back(MoEBalanceLossOp::create(
          b, loc, RankedTensorType::get({}, b.getF32Type()), logits,
          moe.getExpertIds(), b.getF64FloatAttr(o.balanceAlpha)));
    }
    if (o.emitRoutingChoices) {
      outputs.push_back(moe.getExpertIds());
      outputNames.push_back({"topk_ids." + mp + "gate", OutputRole::ExpertIds,
                             c.hasRoutingBias ? mp + "gate.e_score_correction_bias" : ""});
    }
  } else {
    m = MLPOp::create(b, loc, f.getType(), f,
                      param(p + "mlp.gate_proj.weight", {c.intermediateSize, d}, ParamRole::MLP),
                      param(p + "mlp.up_proj.weight", {c.intermediateSize, d}, ParamRole::MLP),
                      param(p + "mlp.down_proj.weight", {d, c.intermediateSize}, ParamRole::MLP));
  }
  return arith::AddFOp::create(b, loc, h, m);
}

llvm::Expected<OwningOpRef<ModuleOp>> Importer::run() {
  int64_t bs = o.batch, t = o.seqLen, depth = o.includeMTP ? c.numNextnPredictLayers : 0;
  if (bs <= 0 || t <= 0)
    return llvm::createStringError("batch and sequence length must be positive");
  if (t < 2)
    return llvm::createStringError("sequence length " + std::to_string(t) +
                                   " is too short for a next-token loss (needs >= 2)");
  if (t > c.maxPositionEmbeddings)
    return llvm::createStringError(
        "sequence length " + std::to_string(t) +
        " exceeds max_position_embeddings (" +
        std::to_string(c.maxPositionEmbeddings) + ")");
  if (depth > 0 && t < depth + 2)
    return llvm::createStringError(
        "sequence length " + std::to_string(t) + " is too short for MTP depth " +
        std::to_string(depth) + " (needs >= " + std::to_string(depth + 2) + ")");
  // Pipeline stages split the units (decoder layers, then the MTP block as
  // one) into contiguous runs; the embedding goes with the first, the final
  // norm, head and main loss with the last decoder layer.
  int64_t stages = std::max<int64_t>(o.pipelineStages, 1);
  int64_t units = c.numHiddenLayers + (depth > 0 ? 1 : 0);
  if (stages > 1 && !o.mtpWeight)
    return llvm::createStringError("pipeline stages split the training objective: "
                                   "import them with a training objective");
  if (stages > units)
    return llvm::createStringError(
        std::to_string(stages) + " pipeline stages need at least as many layers, but the "
        "model has " + std::to_string(c.numHiddenLayers) + " decoder layers" +
        (depth > 0 ? " and an MTP block" : ""));
  auto stageOf = [&](int64_t unit) { return unit * stages / units; };

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  auto idsType = RankedTensorType::get({bs, t}, b.getI64Type());
  auto hiddenType = f32({bs, t, c.hiddenSize});

  // The function being built: one @forward, or @stage<k> per stage.
  func::FuncOp func;
  SmallVector<Type> inputs;
  Value ids, segments, stageLoss, stageMtpLoss;
  SmallVector<Value> mainOutputs;
  SmallVector<NamedOutput> mainNames;
  auto begin = [&](int64_t k) -> Value {
    b.setInsertionPointToEnd(module->getBody());
    inputs = {idsType};
    if (o.packed)
      inputs.push_back(idsType);
    if (k > 0)
      inputs.push_back(hiddenType);
    func = func::FuncOp::create(b, loc, stages > 1 ? "stage" + std::to_string(k) : "forward",
                                b.getFunctionType(inputs, {}));
    setInput(func, 0, "input_ids");
    if (o.packed)
      setInput(func, 1, "segment_ids");
    if (k > 0)
      setInput(func, inputs.size() - 1, "hidden");
    Block *body = func.addEntryBlock();
    b.setInsertionPointToStart(body);
    ids = body->getArgument(0);
    segments = o.packed ? body->getArgument(1) : Value();
    return k > 0 ? body->getArgument(inputs.size() - 1) : Value();
  };
  // Ends the function: its outputs, its part of the objective (the parts
  // of all stages sum to total_loss) and, before the last stage, the
  // hidden state the next stage continues from.
  auto end = [&](Value hiddenOut) {
    if (hiddenOut) {
      mainOutputs.insert(mainOutputs.begin(), hiddenOut);
      mainNames.insert(mainNames.begin(), {"hidden", OutputRole::Activation, ""});
    }
    if (o.mtpWeight) {
      Value total = stageLoss;
      if (stageMtpLoss) {
        Value w = arith::ConstantOp::create(
            b, loc, DenseElementsAttr::get(RankedTensorType::get({}, b.getF32Type()),
                                           static_cast<float>(*o.mtpWeight)));
        Value term = arith::MulFOp::create(b, loc, stageMtpLoss, w);
        total = total ? arith::AddFOp::create(b, loc, total, term).getResult() : term;
      }
      if (!balanceLosses.empty()) {
        Value balance = balanceLosses.front();
        for (Value l : llvm::drop_begin(balanceLosses))
          balance = arith::AddFOp::create(b, loc, balance, l);
        total = total ? arith::AddFOp::create(b, loc, total, balance).getResult() : balance;
        mainOutputs.push_back(balance);
        mainNames.push_back({"balance_loss", OutputRole::BalanceLoss, ""});
      }
      if (!total) // a stage with no loss term still names its (zero) part
        total = arith::ConstantOp::create(
            b, loc, DenseElementsAttr::get(RankedTensorType::get({}, b.getF32Type()), 0.0f));
      mainOutputs.push_back(total);
      mainNames.push_back({"total_loss", OutputRole::TotalLoss, ""});
    }
    mainOutputs.append(outputs.begin(), outputs.end());
    mainNames.append(outputNames.begin(), outputNames.end());
    func::ReturnOp::create(b, loc, mainOutputs);
    func.setType(b.getFunctionType(inputs, ValueRange(mainOutputs).getTypes()));
    for (auto [i, out] : llvm::enumerate(mainNames))
      setOutput(func, i, out.name, out.role, out.param);
    mainOutputs.clear();
    mainNames.clear();
    outputs.clear();
    outputNames.clear();
    balanceLosses.clear();
    stageLoss = stageMtpLoss = Value();
  };

  int64_t stage = 0;
  begin(0);
  Value emb = param("model.embed_tokens.weight", {c.vocabSize, c.hiddenSize}, ParamRole::Embedding);
  Value h = EmbeddingOp::create(b, loc, hiddenType, ids, emb);
  for (int64_t l = 0; l < c.numHiddenLayers; ++l) {
    if (stageOf(l) != stage) {
      end(h);
      h = begin(stage = stageOf(l));
    }
    h = decoderLayer(l, h, segments);
  }
  Value logits = head(h, "model.norm.weight");
  stageLoss = crossEntropy(sliceSeq(logits, 0, t - 1), labels(ids, segments, 1, t - 1));
  mainOutputs.append({logits, stageLoss});
  mainNames.append({{"logits", OutputRole::Logits, ""}, {"loss", OutputRole::Loss, ""}});

  if (depth > 0) {
    if (stageOf(c.numHiddenLayers) != stage) {
      end(h);
      h = begin(stage = stageOf(c.numHiddenLayers));
    }
    // MTP embeds the shifted tokens with the first stage's table.
    if (stage != 0)
      emb = param("model.embed_tokens.weight", {c.vocabSize, c.hiddenSize},
                  ParamRole::Embedding);
    // Depth k predicts token i+k+1 from position i; its input is the
    // previous depth's normed hidden state (depth 1: the main model's).
    Value prev = rmsNorm(h, "model.norm.weight");
    Value mtpLossSum;
    for (int64_t k = 1; k <= depth; ++k) {
      int64_t l = c.numHiddenLayers + k - 1, len = t - k;
      std::string p = layer(l);
      Value nextEmb = EmbeddingOp::create(b, loc, f32({bs, len, c.hiddenSize}),
                                          sliceSeq(ids, k, len), emb);
      Value x = MTPInputOp::create(
          b, loc, f32({bs, len, c.hiddenSize}), sliceSeq(prev, 0, len), nextEmb,
          param(p + "enorm.weight", {c.hiddenSize}, ParamRole::Norm),
          param(p + "hnorm.weight", {c.hiddenSize}, ParamRole::Norm),
          param(p + "eh_proj.weight", {c.hiddenSize, 2 * c.hiddenSize}, ParamRole::MTPProjection),
          b.getF64FloatAttr(c.rmsNormEps));
      Value block = decoderLayer(l, x, segments ? sliceSeq(segments, 0, len) : Value());
      Value mtpLogits = head(block, p + "shared_head.norm.weight");
      Value lossK = crossEntropy(sliceSeq(mtpLogits, 0, len - 1),
                                 labels(ids, segments, k + 1, len - 1));
      mtpLossSum = mtpLossSum ? arith::AddFOp::create(b, loc, mtpLossSum, lossK)
                              : lossK;
      mainOutputs.push_back(mtpLogits);
      mainNames.push_back({k == 1 ? "mtp_logits" : "mtp_logits." + std::to_string(k),
                           OutputRole::MTPLogits, ""});
      prev = rmsNorm(block, p + "shared_head.norm.weight");
    }
    // mtp_loss = (1/D) sum_k L_k, so total = loss + lambda * mtp_loss.
    if (depth > 1) {
      Value inv = arith::ConstantOp::create(
          b, loc, DenseElementsAttr::get(RankedTensorType::get({}, b.getF32Type()),
                                         1.0f / static_cast<float>(depth)));
      mtpLossSum = arith::MulFOp::create(b, loc, mtpLossSum, inv);
    }
    stageMtpLoss = mtpLossSum;
    mainOutputs.push_back(mtpLossSum);
    mainNames.push_back({"mtp_loss", OutputRole::MTPLoss, ""});
  }
  end(Value());
  if (failed(verify(*module)))
    return llvm::createStringError("internal error: the imported IR does not verify");
  return module;
}

llvm::Expected<OwningOpRef<ModuleOp>> Importer::runGenerate(const GenerateShape &shape) {
  int64_t nl = c.numHiddenLayers, row = c.kvLoraRank + c.qkRopeHeadDim;
  bool mtp = c.numNextnPredictLayers > 0;
  int64_t cacheLayers = nl + (mtp ? 1 : 0), capacity = shape.capacity;
  if (shape.prefillBatch <= 0 || shape.prefillLen <= 0 || shape.decodeBatch <= 0)
    return llvm::createStringError("generation batch and prompt length must be positive");
  for (int64_t n : shape.shorterPrefills)
    if (n <= 0 || n >= shape.prefillLen)
      return llvm::createStringError("a shorter prefill of " + std::to_string(n) +
                                     " tokens must lie in [1, " +
                                     std::to_string(shape.prefillLen) + ")");
  if (shape.prefillLen > capacity)
    return llvm::createStringError("a prompt of " + std::to_string(shape.prefillLen) +
                                   " tokens does not fit a cache of " +
                                   std::to_string(capacity) + " rows");
  if (capacity > c.maxPositionEmbeddings)
    return llvm::createStringError("a cache of " + std::to_string(capacity) +
                                   " rows exceeds max_position_embeddings (" +
                                   std::to_string(c.maxPositionEmbeddings) + ")");
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  auto i64 = [&](ArrayRef<int64_t> s) { return RankedTensorType::get(s, b.getI64Type()); };
  Type cacheElement = shape.cacheBF16 ? Type(b.getBF16Type()) : Type(b.getF32Type());
  auto cacheType =
      RankedTensorType::get({cacheLayers, shape.decodeBatch, capacity, row}, cacheElement);
  Value emb;

  // One entry point: `body` builds its outputs from the arguments.
  func::FuncOp func;
  auto entry = [&](StringRef name, ArrayRef<std::pair<std::string, Type>> args,
                   const std::function<void(Block &)> &body) {
    b.setInsertionPointToEnd(module->getBody());
    SmallVector<Type> types;
    for (auto &a : args)
      types.push_back(a.second);
    func = func::FuncOp::create(b, loc, name, b.getFunctionType(types, {}));
    for (auto [i, a] : llvm::enumerate(args))
      setInput(func, i, a.first);
    Block *block = func.addEntryBlock();
    b.setInsertionPointToStart(block);
    emb = param("model.embed_tokens.weight", {c.vocabSize, c.hiddenSize}, ParamRole::Embedding);
    body(*block);
    func::ReturnOp::create(b, loc, outputs);
    func.setType(b.getFunctionType(types, ValueRange(outputs).getTypes()));
    for (auto [i, out] : llvm::enumerate(outputNames))
      setOutput(func, i, out.name, out.role, out.param);
    outputs.clear();
    outputNames.clear();
  };
  // Layer l's slice [B, S, row] of the cache argument.
  auto cacheLayer = [&](Value cache, int64_t l) -> Value {
    SmallVector<OpFoldResult> offsets = {b.getIndexAttr(l), b.getIndexAttr(0), b.getIndexAttr(0),
                                         b.getIndexAttr(0)};
    SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), b.getIndexAttr(shape.decodeBatch),
                                       b.getIndexAttr(capacity), b.getIndexAttr(row)};
    SmallVector<OpFoldResult> strides(4, b.getIndexAttr(1));
    return tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get({shape.decodeBatch, capacity, row}, cacheElement), cache,
        offsets, sizes, strides);
  };
  // [layers, B, T, row] from each layer's [B, T, row].
  auto stackRows = [&](ArrayRef<Value> rows) -> Value {
    auto s = cast<RankedTensorType>(rows.front().getType()).getShape();
    int64_t n = rows.size();
    Value all = tensor::EmptyOp::create(b, loc, ArrayRef<int64_t>{n, s[0], s[1], s[2]},
                                        b.getF32Type());
    for (auto [l, r] : llvm::enumerate(rows)) {
      SmallVector<OpFoldResult> offsets = {b.getIndexAttr(l), b.getIndexAttr(0),
                                           b.getIndexAttr(0), b.getIndexAttr(0)};
      SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), b.getIndexAttr(s[0]),
                                         b.getIndexAttr(s[1]), b.getIndexAttr(s[2])};
      SmallVector<OpFoldResult> strides(4, b.getIndexAttr(1));
      all = tensor::InsertSliceOp::create(b, loc, r, all, offsets, sizes, strides);
    }
    return all;
  };
  // The layers' attention: the naive form over a prompt (cache = null) or
  // the absorbed form over the cache; each layer's rows collected.
  SmallVector<Value> rows;
  auto attendWith = [&](Value cache, Value positions) {
    rows.clear();
    attend = [&, cache, positions](int64_t l, Value x) -> Value {
      Value r = cacheRow(l, x, positions);
      rows.push_back(r);
      if (!cache)
        return attention(l, x, Value());
      return cachedAttention(l, x, cacheLayer(cache, l), r, positions);
    };
  };
  // The main model on `ids`: logits, the final-normed hidden state (with
  // MTP), the cache rows and the chosen experts.
  auto mainModel = [&](Value ids, Value positions, Value cache) {
    int64_t bs = cast<RankedTensorType>(ids.getType()).getDimSize(0),
            t = cast<RankedTensorType>(ids.getType()).getDimSize(1);
    attendWith(cache, positions);
    Value h = EmbeddingOp::create(b, loc, f32({bs, t, c.hiddenSize}), ids, emb);
    for (int64_t l = 0; l < nl; ++l)
      h = decoderLayer(l, h, Value());
    SmallVector<Value> experts(outputs.begin(), outputs.end());
    SmallVector<NamedOutput> expertNames(outputNames.begin(), outputNames.end());
    outputs.clear();
    outputNames.clear();
    outputs.push_back(head(h, "model.norm.weight"));
    outputNames.push_back({"logits", OutputRole::Logits, ""});
    if (mtp) {
      outputs.push_back(rmsNorm(h, "model.norm.weight"));
      outputNames.push_back({"hidden", OutputRole::Hidden, ""});
    }
    outputs.push_back(stackRows(rows));
    outputNames.push_back({"kv_rows", OutputRole::CacheRows, ""});
    outputs.append(experts.begin(), experts.end());
    outputNames.append(expertNames.begin(), expertNames.end());
  };
  // The MTP layer's draft logits for (hidden_j, token_{j+1}) at position j.
  auto mtpModel = [&](Value ids, Value hidden, Value positions, Value cache) {
    int64_t bs = cast<RankedTensorType>(ids.getType()).getDimSize(0),
            t = cast<RankedTensorType>(ids.getType()).getDimSize(1);
    std::string p = layer(nl);
    attendWith(cache, positions); // the MTP layer is the cache's last
    Value next = EmbeddingOp::create(b, loc, f32({bs, t, c.hiddenSize}), ids, emb);
    Value x = MTPInputOp::create(
        b, loc, f32({bs, t, c.hiddenSize}), hidden, next,
        param(p + "enorm.weight", {c.hiddenSize}, ParamRole::Norm),
        param(p + "hnorm.weight", {c.hiddenSize}, ParamRole::Norm),
        param(p + "eh_proj.weight", {c.hiddenSize, 2 * c.hiddenSize}, ParamRole::MTPProjection),
        b.getF64FloatAttr(c.rmsNormEps));
    Value block = decoderLayer(nl, x, Value());
    outputs.clear(); // the MTP layer's expert choices are not reported
    outputNames.clear();
    outputs.push_back(head(block, p + "shared_head.norm.weight"));
    outputNames.push_back({"mtp_logits", OutputRole::MTPLogits, ""});
    outputs.push_back(stackRows(rows));
    outputNames.push_back({"kv_rows", OutputRole::CacheRows, ""});
  };
  auto fullPositions = [&](int64_t bs, int64_t t) -> Value {
    return PositionsOp::create(b, loc, i64({bs, t}), b.getI64IntegerAttr(0));
  };

  int64_t bp = shape.prefillBatch, bd = shape.decodeBatch;
  bool speculative = mtp && shape.verifyLen > 1;
  SmallVector<int64_t> prefills(shape.shorterPrefills.begin(), shape.shorterPrefills.end());
  prefills.push_back(shape.prefillLen);
  for (int64_t tp : prefills) {
    std::string suffix = tp == shape.prefillLen ? "" : "_" + std::to_string(tp);
    entry("prefill" + suffix, {{"input_ids", i64({bp, tp})}}, [&](Block &blk) {
      mainModel(blk.getArgument(0), fullPositions(bp, tp), Value());
    });
    if (speculative)
      entry("mtp_prefill" + suffix,
            {{"input_ids", i64({bp, tp})}, {"hidden", f32({bp, tp, c.hiddenSize})}},
            [&](Block &blk) {
              mtpModel(blk.getArgument(0), blk.getArgument(1), fullPositions(bp, tp), Value());
            });
  }
  auto step = [&](StringRef name, int64_t t) {
    entry(name, {{"input_ids", i64({bd, t})}, {"positions", i64({bd, t})}, {"kv_cache", cacheType}},
          [&](Block &blk) {
            mainModel(blk.getArgument(0), blk.getArgument(1), blk.getArgument(2));
          });
  };
  step("decode", 1);
  if (speculative) {
    step("verify", shape.verifyLen);
    int64_t t = shape.verifyLen;
    entry("mtp_step",
          {{"input_ids", i64({bd, t})}, {"hidden", f32({bd, t, c.hiddenSize})},
           {"positions", i64({bd, t})}, {"kv_cache", cacheType}},
          [&](Block &blk) {
            mtpModel(blk.getArgument(0), blk.getArgument(1), blk.getArgument(2),
                     blk.getArgument(3));
          });
  }
  attend = nullptr;
  if (failed(verify(*module)))
    return llvm::createStringError("internal error: the generation IR does not verify");
  return module;
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
importModel(MLIRContext &ctx, const ModelConfig &config,
            const ImportOptions &options) {
  return Importer(ctx, config, options).run();
}

llvm::Expected<OwningOpRef<ModuleOp>>
importGenerator(MLIRContext &ctx, const ModelConfig &config, const GenerateShape &shape) {
  ImportOptions options;
  options.includeMTP = false;
  return Importer(ctx, config, options).runGenerate(shape);
}

} // namespace dsv3
