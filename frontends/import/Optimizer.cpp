//===- Optimizer.cpp - optimizer update as compiled IR --------------------===//
#include "frontends/import/Optimizer.h"

#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;

namespace dsv3 {

OwningOpRef<ModuleOp> buildAdamWModule(MLIRContext &ctx, int64_t n,
                                       bool bf16Moments) {
  OpBuilder b(&ctx);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  auto vec = RankedTensorType::get({n}, b.getF32Type());
  Type momentType = bf16Moments ? Type(b.getBF16Type()) : Type(b.getF32Type());
  auto moments = RankedTensorType::get({n}, momentType);
  auto hyperType = RankedTensorType::get({rt::kNumAdamWHyper}, b.getF32Type());
  auto fn = func::FuncOp::create(
      b, loc, "adamw_step",
      b.getFunctionType({vec, vec, moments, moments, hyperType},
                        {vec, moments, moments}));
  Block *body = fn.addEntryBlock();
  b.setInsertionPointToStart(body);
  SmallVector<Value> h;
  for (int64_t i = 0; i < rt::kNumAdamWHyper; ++i)
    h.push_back(tensor::ExtractOp::create(
        b, loc, body->getArgument(4),
        ValueRange{arith::ConstantIndexOp::create(b, loc, i)}));

  auto id = b.getMultiDimIdentityMap(1);
  // One destination per result: a shared one would alias the outputs.
  SmallVector<Value> inits;
  for (int i = 0; i < 3; ++i)
    inits.push_back(tensor::EmptyOp::create(b, loc, ArrayRef<int64_t>{n},
                                            i == 0 ? b.getF32Type() : momentType));
  auto update = linalg::GenericOp::create(
      b, loc, TypeRange{vec, moments, moments}, body->getArguments().take_front(4),
      inits, SmallVector<AffineMap>(7, id),
      SmallVector<utils::IteratorType>{utils::IteratorType::parallel},
      [&](OpBuilder &nb, Location l, ValueRange a) {
        auto f = [&](double v) {
          return arith::ConstantOp::create(nb, l, nb.getF32FloatAttr(v)).getResult();
        };
        auto mul = [&](Value x, Value y) { return arith::MulFOp::create(nb, l, x, y).getResult(); };
        auto add = [&](Value x, Value y) { return arith::AddFOp::create(nb, l, x, y).getResult(); };
        auto sub = [&](Value x, Value y) { return arith::SubFOp::create(nb, l, x, y).getResult(); };
        auto div = [&](Value x, Value y) { return arith::DivFOp::create(nb, l, x, y).getResult(); };
        auto widen = [&](Value x) {
          return bf16Moments ? arith::ExtFOp::create(nb, l, nb.getF32Type(), x).getResult() : x;
        };
        auto narrow = [&](Value x) {
          return bf16Moments ? arith::TruncFOp::create(nb, l, nb.getBF16Type(), x).getResult() : x;
        };
        Value p = a[0], g = mul(a[1], h[rt::kGradScale]), m = widen(a[2]), v = widen(a[3]);
        Value one = f(1.0);
        m = add(mul(h[rt::kBeta1], m), mul(sub(one, h[rt::kBeta1]), g));
        v = add(mul(h[rt::kBeta2], v), mul(sub(one, h[rt::kBeta2]), mul(g, g)));
        p = mul(p, sub(one, mul(h[rt::kLearningRate], h[rt::kWeightDecay])));
        Value denom = add(div(math::SqrtOp::create(nb, l, v),
                              math::SqrtOp::create(nb, l, h[rt::kBiasCorrection2])),
                          h[rt::kEpsilon]);
        Value step = div(h[rt::kLearningRate], h[rt::kBiasCorrection1]);
        p = sub(p, mul(step, div(m, denom)));
        linalg::YieldOp::create(nb, l, ValueRange{p, narrow(m), narrow(v)});
      });
  func::ReturnOp::create(b, loc, update.getResults());
  const char *inputNames[] = {"params", "grads", "exp_avg", "exp_avg_sq", "hyper"};
  for (auto [i, name] : llvm::enumerate(inputNames))
    setInput(fn, i, name);
  setOutput(fn, 0, "params", OutputRole::Parameters);
  setOutput(fn, 1, "exp_avg", OutputRole::FirstMoment);
  setOutput(fn, 2, "exp_avg_sq", OutputRole::SecondMoment);
  return module;
}

} // namespace dsv3
