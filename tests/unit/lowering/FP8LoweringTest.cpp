//===- FP8LoweringTest.cpp - dsv3-fp8-tile-quantize through the JIT -------===//
//
// The three GEMMs of a linear layer (forward, input gradient, weight
// gradient), dense and as routed experts, are rewritten by the FP8 pass,
// lowered, JIT-compiled and run.
// The forward must reproduce the golden block-scaled GEMM; every result must
// match this file's own double-precision evaluation of the recipe (1x128
// activation tiles, 128x128 weight blocks, 128x1 weight-gradient tiles),
// with its own FP8 rounding written from the formats' definitions.
//
//===----------------------------------------------------------------------===//
#include "runtime/io/Safetensors.h"
#include "lowering/Pipeline/Pipelines.h"
#include "passes/Passes.h"
#include "runtime/jit/JitModule.h"
#include "runtime/kernels/FP8.h"
#include "tests/support/Numerics.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

using namespace mlir;
using namespace dsv3;

namespace {

/// Every finite non-negative value of an FP8 format with its code, in
/// increasing order, from the bit fields (E4M3FN: bias 7, S.1111.111 is NaN;
/// E5M2: bias 15, exponent 31 is Inf/NaN). Written from the formats'
/// definitions, not from the runtime's codec.
std::vector<std::pair<double, int>> fp8Values(rt::FP8Format format) {
  bool e4m3 = format == rt::FP8Format::E4M3;
  int mantissaBits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
  std::vector<std::pair<double, int>> values;
  for (int code = 0; code < 0x80; ++code) {
    int exponent = code >> mantissaBits, mantissa = code & ((1 << mantissaBits) - 1);
    if (e4m3 ? code == 0x7F : exponent == 31)
      continue;
    double fraction = double(mantissa) / (1 << mantissaBits);
    values.push_back({exponent == 0 ? std::ldexp(fraction, 1 - bias)
                                    : std::ldexp(1 + fraction, exponent - bias),
                      code});
  }
  return values;
}

/// x rounded to the nearest value of the format, ties to the even code.
double roundToFP8(float x, const std::vector<std::pair<double, int>> &values) {
  double a = std::fabs(double(x));
  auto hi = std::lower_bound(values.begin(), values.end(), std::make_pair(a, -1));
  if (hi == values.end())
    return std::copysign(values.back().first, x);
  if (hi == values.begin() || hi->first == a)
    return std::copysign(hi->first, x);
  auto lo = hi - 1;
  double dl = a - lo->first, dh = hi->first - a;
  bool up = dh < dl || (dh == dl && (hi->second & 1) == 0);
  return std::copysign(up ? hi->first : lo->first, x);
}

/// The recipe's tile quantization of `x [rows, cols]`, dequantized
/// (code value * scale), computed independently of the runtime: per tile
/// s = max(amax, 1e-4) / max finite (UE8M0: the next power of two), then
/// x / s rounded to the format.
std::vector<double> quantized(const std::vector<float> &x, int64_t rows,
                              int64_t cols, int64_t tr, int64_t tc,
                              rt::FP8Format format, bool pow2) {
  std::vector<std::pair<double, int>> values = fp8Values(format);
  float maxFinite = float(values.back().first);
  std::vector<double> out(x.size());
  for (int64_t r0 = 0; r0 < rows; r0 += tr)
    for (int64_t c0 = 0; c0 < cols; c0 += tc) {
      int64_t r1 = std::min(rows, r0 + tr), c1 = std::min(cols, c0 + tc);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::max(amax, std::fabs(x[r * cols + c]));
      float s = std::max(amax, 1e-4f) / maxFinite;
      if (pow2)
        s = float(std::exp2(std::ceil(std::log2(double(s)))));
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          out[r * cols + c] = roundToFP8(x[r * cols + c] / s, values) * s;
    }
  return out;
}

using dsv3::test::relativeL2;

struct Result {
  std::map<std::string, std::vector<float>> outputs;
  std::string tensorIR;
};

/// Applies the FP8 pass with `options` to `source` (a @forward without
/// arguments whose results are `outputs`, shaped `shapes`), lowers, JITs and
/// runs it with the parameters `values`.
Result compileAndRun(bool ukernels, const std::string &source, const std::string &options,
                     std::map<std::string, std::vector<float>> &values,
                     const std::vector<std::string> &outputs,
                     const std::vector<std::vector<int64_t>> &shapes) {
  DialectRegistry registry;
  registerPipelineDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  EXPECT_TRUE(module);
  Result result;
  if (!module)
    return result;
  PassManager pm(&ctx);
  std::unique_ptr<Pass> fp8 = createDSV3FP8TileQuantizePass();
  EXPECT_TRUE(succeeded(fp8->initializeOptions(options, [](const llvm::Twine &) {
    return failure();
  })));
  pm.addNestedPass<func::FuncOp>(std::move(fp8));
  EXPECT_TRUE(succeeded(pm.run(*module)));
  llvm::raw_string_ostream os(result.tensorIR);
  module->print(os);
  PassManager lower(&ctx);
  CPUPipelineOptions cpu;
  cpu.useUkernels = ukernels;
  buildLinalgPipeline(lower, cpu);
  buildLLVMPipeline(lower, cpu);
  EXPECT_TRUE(succeeded(lower.run(*module)));
  auto jit = JitModule::compile(*module, 2);
  EXPECT_TRUE(static_cast<bool>(jit)) << llvm::toString(jit.takeError());
  if (!jit)
    return result;
  const rt::ParamLayout &layout = (*jit)->layout();
  std::vector<float> params(layout.totalElements);
  for (const rt::ParamSlot &slot : layout.slots)
    std::copy(values[slot.name].begin(), values[slot.name].end(),
              params.begin() + slot.offset);
  std::vector<std::vector<float>> outs(outputs.size());
  std::vector<rt::BufferArg> args;
  for (size_t i = 0; i < outputs.size(); ++i) {
    int64_t elements = 1;
    for (int64_t d : shapes[i])
      elements *= d;
    outs[i].assign(elements, 0.f);
    args.push_back({outs[i].data(), shapes[i]});
  }
  dsv3::rt::Error e = (*jit)->call("forward", params.data(), {}, args);
  EXPECT_FALSE(static_cast<bool>(e)) << e.message();
  for (size_t i = 0; i < outputs.size(); ++i)
    result.outputs[outputs[i]] = outs[i];
  return result;
}

std::string tensorType(std::vector<int64_t> shape, const char *element = "f32") {
  std::string t = "tensor<";
  for (int64_t d : shape)
    t += std::to_string(d) + "x";
  return t + element + ">";
}

/// @forward returning y = x w^T, dx = dy w, dw = dy^T x for parameters
/// x [M,K], w [N,K], dy [M,N].
Result runLinearLayer(bool ukernels, int64_t m, int64_t n, int64_t k, const std::string &options,
                      std::map<std::string, std::vector<float>> &values) {
  std::string tx = tensorType({m, k}), tw = tensorType({n, k}),
              ty = tensorType({m, n});
  std::string source =
      "func.func @forward() -> (" + ty + " {dsv3.output = \"y\"}, " + tx +
      " {dsv3.output = \"dx\"}, " + tw + " {dsv3.output = \"dw\"}) {\n"
      "  %x = dsv3.param \"x\" : " + tx + "\n"
      "  %w = dsv3.param \"w\" : " + tw + "\n"
      "  %dy = dsv3.param \"dy\" : " + ty + "\n"
      "  %y = dsv3.linear %x, %w : (" + tx + ", " + tw + ") -> " + ty + "\n"
      "  %dx = dsv3.linear_grad_input %dy, %w : (" + ty + ", " + tw + ") -> " + tx + "\n"
      "  %dw = dsv3.linear_grad_weight %dy, %x {param = \"w\"} : (" + ty + ", " + tx + ") -> " + tw + "\n"
      "  return %y, %dx, %dw : " + ty + ", " + tx + ", " + tw + "\n}\n";
  return compileAndRun(ukernels, source, options, values, {"y", "dx", "dw"},
                       {{m, n}, {m, k}, {n, k}});
}

/// The same three GEMMs for routed experts: rows x [R,K] grouped by
/// `offsets`, expert weights w [E,N,K], dy [R,N].
Result runExpertLayer(bool ukernels, const std::vector<int64_t> &offsets, int64_t n, int64_t k,
                      const std::string &options,
                      std::map<std::string, std::vector<float>> &values) {
  int64_t e = int64_t(offsets.size()) - 1, r = offsets.back();
  std::string tx = tensorType({r, k}), tw = tensorType({e, n, k}),
              ty = tensorType({r, n}), to = tensorType({e + 1}, "i64");
  std::string dense;
  for (int64_t o : offsets)
    dense += (dense.empty() ? "" : ", ") + std::to_string(o);
  std::string source =
      "func.func @forward() -> (" + ty + " {dsv3.output = \"y\"}, " + tx +
      " {dsv3.output = \"dx\"}, " + tw + " {dsv3.output = \"dw\"}) {\n"
      "  %offsets = arith.constant dense<[" + dense + "]> : " + to + "\n"
      "  %x = dsv3.param \"x\" : " + tx + "\n"
      "  %w = dsv3.param \"w\" : " + tw + "\n"
      "  %dy = dsv3.param \"dy\" : " + ty + "\n"
      "  %y = dsv3.grouped_linear %x, %w, %offsets : (" + tx + ", " + tw + ", " + to + ") -> " + ty + "\n"
      "  %dx = dsv3.grouped_linear_grad_input %dy, %w, %offsets : (" + ty + ", " + tw + ", " + to + ") -> " + tx + "\n"
      "  %dw = dsv3.grouped_linear_grad_weight %dy, %x, %offsets {num_experts = " +
      std::to_string(e) + " : i64, param = \"w\"} : (" + ty + ", " + tx + ", " + to + ") -> " + tw + "\n"
      "  return %y, %dx, %dw : " + ty + ", " + tx + ", " + tw + "\n}\n";
  return compileAndRun(ukernels, source, options, values, {"y", "dx", "dw"},
                       {{r, n}, {r, k}, {e, n, k}});
}

std::vector<float> random(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// The recipe, evaluated independently in double precision.
struct Expected {
  std::vector<double> y, dx, dw;
};
Expected recipe(const std::vector<float> &x, const std::vector<float> &w,
                const std::vector<float> &dy, int64_t m, int64_t n, int64_t k,
                rt::FP8Format format, bool pow2, bool cacheFP8) {
  std::vector<double> qx = quantized(x, m, k, 1, 128, format, pow2);
  std::vector<double> qw = quantized(w, n, k, 128, 128, format, pow2);
  std::vector<double> qdyRows = quantized(dy, m, n, 1, 128, format, pow2);
  std::vector<double> qdyCols = quantized(dy, m, n, 128, 1, format, pow2);
  std::vector<float> xForW = x;
  if (cacheFP8) // the weight gradient re-quantizes the FP8 copy of x
    for (size_t i = 0; i < x.size(); ++i)
      xForW[i] = static_cast<float>(qx[i]);
  std::vector<double> qxCols = quantized(xForW, m, k, 128, 1, format, pow2);
  Expected e{std::vector<double>(m * n), std::vector<double>(m * k),
             std::vector<double>(n * k)};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) {
        e.y[i * n + j] += qx[i * k + p] * qw[j * k + p];
        e.dx[i * k + p] += qdyRows[i * n + j] * qw[j * k + p];
        e.dw[j * k + p] += qdyCols[i * n + j] * qxCols[i * k + p];
      }
  return e;
}

/// Every check runs with the CPU kernels and with the reference lowering
/// of the FP8 ops to linalg (dsv3c --no-ukernels).
class FP8Lowering : public ::testing::TestWithParam<bool> {};

INSTANTIATE_TEST_SUITE_P(Lowerings, FP8Lowering, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return info.param ? "Kernels" : "Reference";
                         });

TEST_P(FP8Lowering, ForwardMatchesGoldenAndAllGemmsMatchTheRecipe) {
  auto golden = rt::SafetensorsFile::open(DSV3_SOURCE_DIR
                                          "/tests/golden/fp8/fp8_reference.safetensors");
  ASSERT_TRUE(static_cast<bool>(golden)) << golden.error().message();
  auto read = [&](const std::string &name) {
    const rt::TensorInfo *t = (*golden)->lookup(name);
    std::vector<float> v(t ? t->numElements() : 0);
    if (t)
      EXPECT_FALSE(static_cast<bool>(rt::convertToF32(*t, v.data())));
    return v;
  };
  // Shape tags are MxNxK; 33 tokens and N = 384 leave partial tiles.
  for (auto [tag, m, n, k] : {std::tuple<const char *, int64_t, int64_t, int64_t>{
                                  "64x256x512", 64, 256, 512},
                              {"33x384x256", 33, 384, 256}}) {
    std::map<std::string, std::vector<float>> values = {
        {"x", read(std::string(tag) + ".a")},
        {"w", read(std::string(tag) + ".w")},
        {"dy", random(m * n, 7)}};
    Result r = runLinearLayer(GetParam(), m, n, k, "", values);
    ASSERT_EQ(r.outputs.size(), 3u);
    std::vector<float> y = read(std::string(tag) + ".y");
    EXPECT_LE(relativeL2(r.outputs["y"], std::vector<double>(y.begin(), y.end())), 1e-6) << tag;
    Expected e = recipe(values["x"], values["w"], values["dy"], m, n, k,
                        rt::FP8Format::E4M3, false, false);
    EXPECT_LE(relativeL2(r.outputs["y"], e.y), 1e-6) << tag;
    EXPECT_LE(relativeL2(r.outputs["dx"], e.dx), 1e-6) << tag;
    EXPECT_LE(relativeL2(r.outputs["dw"], e.dw), 1e-6) << tag;
  }
}

TEST_P(FP8Lowering, OptionsChangeTheNumericsAsSpecified) {
  int64_t m = 130, n = 140, k = 200;
  std::map<std::string, std::vector<float>> values = {
      {"x", random(m * k, 1)}, {"w", random(n * k, 2)}, {"dy", random(m * n, 3)}};
  struct Case {
    const char *options;
    rt::FP8Format format;
    bool pow2, cache;
  } cases[] = {{"format=e5m2", rt::FP8Format::E5M2, false, false},
               {"power-of-two-scales=true", rt::FP8Format::E4M3, true, false},
               {"cache-activations=fp8", rt::FP8Format::E4M3, false, true}};
  std::vector<float> plainDw;
  for (const Case &c : cases) {
    Result r = runLinearLayer(GetParam(), m, n, k, c.options, values);
    ASSERT_EQ(r.outputs.size(), 3u) << c.options;
    Expected e = recipe(values["x"], values["w"], values["dy"], m, n, k,
                        c.format, c.pow2, c.cache);
    EXPECT_LE(relativeL2(r.outputs["y"], e.y), 1e-6) << c.options;
    EXPECT_LE(relativeL2(r.outputs["dx"], e.dx), 1e-6) << c.options;
    EXPECT_LE(relativeL2(r.outputs["dw"], e.dw), 1e-6) << c.options;
  }
  // gemms=fprop leaves both gradients in float32: exact products.
  Result r = runLinearLayer(GetParam(), m, n, k, "gemms=fprop", values);
  ASSERT_EQ(r.outputs.size(), 3u);
  std::vector<double> dx(m * k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        dx[i * k + p] += double(values["dy"][i * n + j]) * values["w"][j * k + p];
  EXPECT_LE(relativeL2(r.outputs["dx"], dx), 1e-5);
  EXPECT_EQ(r.tensorIR.find("transpose_b"), std::string::npos);
}

/// The expert recipe in double precision: the dense recipe per expert,
/// with each expert's weight in its own blocks and the weight-gradient tiles
/// restarting at each expert's first row.
Expected expertRecipe(const std::vector<float> &x, const std::vector<float> &w,
                      const std::vector<float> &dy,
                      const std::vector<int64_t> &offsets, int64_t n, int64_t k) {
  int64_t experts = int64_t(offsets.size()) - 1, rows = offsets.back();
  auto e4m3 = rt::FP8Format::E4M3;
  std::vector<double> qx = quantized(x, rows, k, 1, 128, e4m3, false);
  std::vector<double> qdyRows = quantized(dy, rows, n, 1, 128, e4m3, false);
  Expected out{std::vector<double>(rows * n), std::vector<double>(rows * k),
               std::vector<double>(experts * n * k)};
  for (int64_t e = 0; e < experts; ++e) {
    int64_t begin = offsets[e], count = offsets[e + 1] - begin;
    std::vector<float> we(w.begin() + e * n * k, w.begin() + (e + 1) * n * k);
    std::vector<double> qw = quantized(we, n, k, 128, 128, e4m3, false);
    if (count == 0)
      continue;
    std::vector<float> dye(dy.begin() + begin * n, dy.begin() + (begin + count) * n);
    std::vector<float> xe(x.begin() + begin * k, x.begin() + (begin + count) * k);
    std::vector<double> qdyCols = quantized(dye, count, n, 128, 1, e4m3, false);
    std::vector<double> qxCols = quantized(xe, count, k, 128, 1, e4m3, false);
    for (int64_t i = 0; i < count; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t p = 0; p < k; ++p) {
          int64_t r = begin + i;
          out.y[r * n + j] += qx[r * k + p] * qw[j * k + p];
          out.dx[r * k + p] += qdyRows[r * n + j] * qw[j * k + p];
          out.dw[(e * n + j) * k + p] += qdyCols[i * n + j] * qxCols[i * k + p];
        }
  }
  return out;
}

TEST_P(FP8Lowering, RoutedExpertGemmsMatchTheRecipePerExpert) {
  // An empty expert, a one-row expert, one spanning two 128-row tiles and a
  // partial one; N = 40 and K = 200 leave partial blocks inside each expert.
  std::vector<int64_t> offsets = {0, 0, 1, 151, 221};
  int64_t experts = 4, rows = 221, n = 40, k = 200;
  std::map<std::string, std::vector<float>> values = {
      {"x", random(rows * k, 4)}, {"w", random(experts * n * k, 5)},
      {"dy", random(rows * n, 6)}};
  // Experts with very different magnitudes: shared blocks would show.
  for (int64_t i = 0; i < n * k; ++i)
    values["w"][2 * n * k + i] *= 1000.0f;
  Result r = runExpertLayer(GetParam(), offsets, n, k, "", values);
  ASSERT_EQ(r.outputs.size(), 3u);
  EXPECT_NE(r.tensorIR.find("dsv3.fp8_m_grouped_gemm"), std::string::npos);
  EXPECT_NE(r.tensorIR.find("dsv3.fp8_k_grouped_gemm"), std::string::npos);
  Expected e = expertRecipe(values["x"], values["w"], values["dy"], offsets, n, k);
  EXPECT_LE(relativeL2(r.outputs["y"], e.y), 1e-6);
  EXPECT_LE(relativeL2(r.outputs["dx"], e.dx), 1e-6);
  EXPECT_LE(relativeL2(r.outputs["dw"], e.dw), 1e-6);
  // The empty expert's weight gradient is exactly zero.
  for (int64_t i = 0; i < n * k; ++i)
    ASSERT_EQ(r.outputs["dw"][i], 0.0f);
  // Experts named high-precision stay float32.
  Result fp32 = runExpertLayer(GetParam(), offsets, n, k, "high-precision=w", values);
  ASSERT_EQ(fp32.outputs.size(), 3u);
  EXPECT_EQ(fp32.tensorIR.find("fp8"), std::string::npos);
}

} // namespace
