//===- GradientCheckTest.cpp - every gradient rule against finite differences ===//
//
// For each differentiable dsv3 op: a small function whose operands are all
// parameters, scored by a cross entropy on the op's output, is compiled
// twice through the real pipeline and JIT: forward only, and through
// dsv3-autodiff. Gradients of sampled parameter elements must agree with
// central finite differences of the forward function, once with the CPU
// kernels and once through the reference lowerings alone.
//
//===----------------------------------------------------------------------===//
#include "lowering/Pipeline/Pipelines.h"
#include "passes/Passes.h"
#include "runtime/jit/JitModule.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

using namespace mlir;

namespace {

struct Compiled {
  std::unique_ptr<dsv3::JitModule> jit;
  std::vector<std::vector<int64_t>> outShapes;
};

/// Parses `source`, optionally differentiates `@forward` w.r.t. "l", lowers
/// and JIT-compiles.
Compiled compile(MLIRContext &ctx, const std::string &source, bool gradient,
                 bool ukernels) {
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  EXPECT_TRUE(module) << "parse failed";
  if (!module)
    return {};
  PassManager pm(&ctx);
  dsv3::buildDecomposePipeline(pm);
  if (gradient) {
    dsv3::DSV3AutodiffPassOptions o;
    o.objective = "l";
    pm.addPass(dsv3::createDSV3AutodiffPass(o));
  }
  dsv3::CPUPipelineOptions cpu;
  cpu.useUkernels = ukernels;
  dsv3::buildLinalgPipeline(pm, cpu);
  EXPECT_TRUE(succeeded(pm.run(*module)));
  Compiled c;
  auto fn = module->lookupSymbol<func::FuncOp>(gradient ? "forward_grad" : "forward");
  for (Type t : fn.getFunctionType().getResults()) {
    auto s = cast<RankedTensorType>(t).getShape();
    c.outShapes.emplace_back(s.begin(), s.end());
  }
  PassManager llvmPm(&ctx);
  dsv3::buildLLVMPipeline(llvmPm, cpu);
  EXPECT_TRUE(succeeded(llvmPm.run(*module)));
  auto jit = dsv3::JitModule::compile(*module, 2);
  EXPECT_TRUE(static_cast<bool>(jit)) << llvm::toString(jit.takeError());
  c.jit = std::move(*jit);
  return c;
}

/// Runs an entry point whose only input is an int64 label matrix; returns
/// the outputs by name.
std::map<std::string, std::vector<float>>
run(Compiled &c, const std::string &entry, std::vector<float> &params,
    std::vector<int64_t> &labels, std::vector<int64_t> labelShape) {
  std::vector<std::vector<float>> outs(c.outShapes.size());
  std::vector<dsv3::rt::BufferArg> args;
  for (size_t i = 0; i < outs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : c.outShapes[i])
      n *= d;
    outs[i].assign(n, 0.f);
    args.push_back({outs[i].data(), c.outShapes[i]});
  }
  dsv3::rt::Error e = c.jit->call(entry, params.data(), {{labels.data(), labelShape}}, args);
  EXPECT_FALSE(static_cast<bool>(e)) << e.message();
  std::map<std::string, std::vector<float>> named;
  for (size_t i = 0; i < outs.size(); ++i)
    named[c.jit->entry(entry)->outputs[i].name] = outs[i];
  return named;
}

/// `source` defines `@forward(%labels: tensor<1xMxi64>) -> "l"` from
/// dsv3.param ops; gradients of sampled parameter elements are compared
/// with central differences.
void checkSource(bool ukernels, const std::string &source, int64_t m, int64_t v,
                 double tolerance, double h) {
  DialectRegistry registry;
  dsv3::registerPipelineDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  Compiled fwd = compile(ctx, source, false, ukernels),
           grad = compile(ctx, source, true, ukernels);
  ASSERT_TRUE(fwd.jit && grad.jit);

  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0, 0.5);
  const dsv3::rt::ParamLayout &layout = fwd.jit->layout();
  std::vector<float> params(std::max<int64_t>(layout.totalElements, 1));
  for (float &p : params)
    p = normal(rng);
  std::vector<int64_t> labels(m);
  for (int64_t &l : labels)
    l = rng() % v;

  auto g = run(grad, "forward_grad", params, labels, {1, m});
  int checked = 0;
  for (const dsv3::rt::ParamSlot &slot : layout.slots) {
    auto it = g.find("grad." + slot.name);
    // Every parameter is on the path to the objective except the routing
    // bias, which selects experts but does not weight them.
    if (slot.name == "bias") {
      EXPECT_EQ(it, g.end()) << "the routing bias has a gradient";
      continue;
    }
    if (it == g.end()) {
      ADD_FAILURE() << "no gradient for parameter " << slot.name;
      continue;
    }
    const std::vector<float> &analytic = it->second;
    // Sample a handful of elements of every parameter.
    for (int s = 0; s < 6; ++s) {
      int64_t k = rng() % slot.numElements();
      float saved = params[slot.offset + k];
      params[slot.offset + k] = saved + h;
      double up = run(fwd, "forward", params, labels, {1, m})["l"][0];
      params[slot.offset + k] = saved - h;
      double down = run(fwd, "forward", params, labels, {1, m})["l"][0];
      params[slot.offset + k] = saved;
      double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(analytic[k], numeric, tolerance * (std::fabs(numeric) + 1e-2))
          << slot.name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

/// `body` defines %y : tensor<1xMxVxf32> from dsv3.param ops; the objective
/// is the cross entropy of %y against random labels.
void checkGradients(bool ukernels, const std::string &body, int64_t m, int64_t v,
                    double tolerance = 2e-2, double h = 1e-2) {
  std::string ms = std::to_string(m), vs = std::to_string(v);
  checkSource(ukernels, "func.func @forward(%labels: tensor<1x" + ms +
                  "xi64>) -> (tensor<f32> {dsv3.output = \"l\"}) {\n" + body +
                  "  %l = dsv3.cross_entropy %y, %labels : (tensor<1x" + ms + "x" +
                  vs + "xf32>, tensor<1x" + ms +
                  "xi64>) -> tensor<f32>\n  return %l : tensor<f32>\n}\n",
              m, v, tolerance, h);
}

/// Every check runs twice: with the CPU kernels selected, and with every op
/// taking its reference lowering to linalg (dsv3c --no-ukernels).
class GradientCheck : public ::testing::TestWithParam<bool> {};

INSTANTIATE_TEST_SUITE_P(Lowerings, GradientCheck, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return info.param ? "Kernels" : "Reference";
                         });

const char *kBalanceLoss = R"(
func.func @forward(%labels: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %logits = dsv3.param "logits" : tensor<1x2x2xf32>
  %ids = arith.constant dense<[[1], [1]]> : tensor<2x1xi64>
  %l = dsv3.moe_balance_loss %logits, %ids {alpha = 0.1 : f64} : (tensor<1x2x2xf32>, tensor<2x1xi64>) -> tensor<f32>
  return %l : tensor<f32>
}
)";

TEST_P(GradientCheck, LinearAndRMSNorm) {
  checkGradients(GetParam(), R"(
  %x = dsv3.param "x" : tensor<1x5x8xf32>
  %n = dsv3.param "norm" : tensor<8xf32>
  %w = dsv3.param "w" : tensor<6x8xf32>
  %xn = dsv3.rms_norm %x, %n {epsilon = 1.0e-06 : f64} : (tensor<1x5x8xf32>, tensor<8xf32>) -> tensor<1x5x8xf32>
  %y = dsv3.linear %xn, %w : (tensor<1x5x8xf32>, tensor<6x8xf32>) -> tensor<1x5x6xf32>
)", 5, 6);
}

TEST_P(GradientCheck, SwiGLUMLP) {
  checkGradients(GetParam(), R"(
  %x = dsv3.param "x" : tensor<1x4x6xf32>
  %g = dsv3.param "gate" : tensor<8x6xf32>
  %u = dsv3.param "up" : tensor<8x6xf32>
  %d = dsv3.param "down" : tensor<6x8xf32>
  %y = dsv3.mlp %x, %g, %u, %d : (tensor<1x4x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>, tensor<6x8xf32>) -> tensor<1x4x6xf32>
)", 4, 6);
}

TEST_P(GradientCheck, MLAWithRoPE) {
  checkGradients(GetParam(), R"(
  %x = dsv3.param "x" : tensor<1x5x16xf32>
  %qa = dsv3.param "qa" : tensor<8x16xf32>
  %qn = dsv3.param "qn" : tensor<8xf32>
  %qb = dsv3.param "qb" : tensor<12x8xf32>
  %kva = dsv3.param "kva" : tensor<6x16xf32>
  %kvn = dsv3.param "kvn" : tensor<4xf32>
  %kvb = dsv3.param "kvb" : tensor<16x4xf32>
  %o = dsv3.param "o" : tensor<16x8xf32>
  %y = dsv3.mla_attention %x q_a %qa q_a_norm %qn q_b %qb kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 8 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 0.7>, rope_attention_scaling = 1.1 : f64}
      : (tensor<1x5x16xf32>, tensor<8x16xf32>, tensor<8xf32>, tensor<12x8xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<1x5x16xf32>
)", 5, 16);
}

TEST_P(GradientCheck, MLAPackedDocuments) {
  checkGradients(GetParam(), R"(
  %x = dsv3.param "x" : tensor<1x6x16xf32>
  %q = dsv3.param "q" : tensor<12x16xf32>
  %kva = dsv3.param "kva" : tensor<6x16xf32>
  %kvn = dsv3.param "kvn" : tensor<4xf32>
  %kvb = dsv3.param "kvb" : tensor<16x4xf32>
  %o = dsv3.param "o" : tensor<16x8xf32>
  %seg = arith.constant dense<[[0, 0, 0, 1, 1, 1]]> : tensor<1x6xi64>
  %y = dsv3.mla_attention %x q_proj %q kv_a %kva kv_a_norm %kvn kv_b %kvb o %o segments %seg
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 0.7>, rope_attention_scaling = 1.0 : f64}
      : (tensor<1x6x16xf32>, tensor<12x16xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>, tensor<1x6xi64>) -> tensor<1x6x16xf32>
)", 6, 16);
}

TEST_P(GradientCheck, MoEWithSharedExpert) {
  checkGradients(GetParam(), R"(
  %x = dsv3.param "x" : tensor<1x6x8xf32>
  %r = dsv3.param "router" : tensor<4x8xf32>
  %b = dsv3.param "bias" : tensor<4xf32>
  %g = dsv3.param "e.*.gate" stack 4 : tensor<4x5x8xf32>
  %u = dsv3.param "e.*.up" stack 4 : tensor<4x5x8xf32>
  %d = dsv3.param "e.*.down" stack 4 : tensor<4x8x5xf32>
  %sg = dsv3.param "sg" : tensor<5x8xf32>
  %su = dsv3.param "su" : tensor<5x8xf32>
  %sd = dsv3.param "sd" : tensor<8x5xf32>
  %y, %ids = dsv3.moe %x router %r bias %b experts %g, %u, %d shared %sg, %su, %sd
      {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<1x6x8xf32>, tensor<4x8xf32>, tensor<4xf32>, tensor<4x5x8xf32>, tensor<4x5x8xf32>, tensor<4x8x5xf32>, tensor<5x8xf32>, tensor<5x8xf32>, tensor<8x5xf32>) -> (tensor<1x6x8xf32>, tensor<6x2xi64>)
)", 6, 8, 3e-2, 2e-3);
}

TEST_P(GradientCheck, MTPInputAndEmbedding) {
  checkGradients(GetParam(), R"(
  %table = dsv3.param "table" : tensor<7x4xf32>
  %ids = arith.constant dense<[[1, 3, 3, 6]]> : tensor<1x4xi64>
  %e = dsv3.embedding %ids, %table : tensor<1x4xi64>, tensor<7x4xf32> -> tensor<1x4x4xf32>
  %h = dsv3.param "h" : tensor<1x4x4xf32>
  %en = dsv3.param "enorm" : tensor<4xf32>
  %hn = dsv3.param "hnorm" : tensor<4xf32>
  %eh = dsv3.param "eh" : tensor<4x8xf32>
  %y = dsv3.mtp_input %h, %e, %en, %hn, %eh {rms_norm_eps = 1.0e-06 : f64}
      : (tensor<1x4x4xf32>, tensor<1x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4x8xf32>) -> tensor<1x4x4xf32>
)", 4, 4);
}

// One sequence of two tokens, two experts, top-1, both tokens on expert 1.
// logits [[0, ln 3], [0, 0]]: s = [[1/2, 3/4], [1/2, 1/2]], s' = [[0.4, 0.6],
// [0.5, 0.5]], P = [0.45, 0.55], f = E/(K T) count = [0, 2]:
// L = 0.1 * (0 * 0.45 + 2 * 0.55) = 0.11.
TEST(BalanceLoss, HandComputedCase) {
  DialectRegistry registry;
  dsv3::registerPipelineDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  Compiled fwd = compile(ctx, kBalanceLoss, false, true);
  ASSERT_TRUE(fwd.jit);
  std::vector<float> params(std::max<int64_t>(fwd.jit->layout().totalElements, 1));
  int64_t offset = fwd.jit->layout().slots[0].offset;
  float logits[] = {0.f, std::log(3.f), 0.f, 0.f};
  std::copy(std::begin(logits), std::end(logits), params.begin() + offset);
  std::vector<int64_t> labels{0, 0};
  auto out = run(fwd, "forward", params, labels, {1, 2});
  EXPECT_NEAR(out["l"][0], 0.11, 1e-6);
}

TEST_P(GradientCheck, BalanceLoss) { checkSource(GetParam(), kBalanceLoss, 2, 2, 2e-2, 1e-2); }

} // namespace
