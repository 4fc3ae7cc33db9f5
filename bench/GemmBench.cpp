//===- GemmBench.cpp - the GEMM microkernels against each other and loops -===//
//
// C += A B^T on the tiny and DeepSeek-V3-like projection shapes: the FP32
// microkernel against the loop nest that convert-linalg-to-loops produces
// for the same generic (i, j, k order, compiled at -O3 for this CPU like the
// JIT does), and the BF16 and block-scaled FP8 kernels that issue targets
// compare with it (FP8 >= 0.8x BF16 and >= 2x FP32 on K, N >= 512).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/FP8.h"
#include "runtime/kernels/Kernels.h"

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

using dsv3::rt::MatrixF32;

namespace {

struct Problem {
  std::vector<float> a, b, c;
  int64_t m, n, k;
  Problem(int64_t m, int64_t n, int64_t k)
      : a(m * k), b(n * k), c(m * n), m(m), n(n), k(k) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> d(-1, 1);
    for (float &x : a)
      x = d(rng);
    for (float &x : b)
      x = d(rng);
  }
  MatrixF32 view(std::vector<float> &v, int64_t r, int64_t c) {
    return {v.data(), v.data(), 0, {r, c}, {c, 1}};
  }
};

/// The loop nest of a lowered linalg.generic: C[i,j] += A[i,p] * B[j,p].
__attribute__((noinline)) void loops(const float *a, const float *b, float *c,
                                     int64_t m, int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        c[i * n + j] += a[i * k + p] * b[j * k + p];
}

void setFlops(benchmark::State &state, const Problem &p) {
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * p.m * p.n * p.k * state.iterations(), benchmark::Counter::kIsRate,
      benchmark::Counter::kIs1000);
}

void BM_Microkernel(benchmark::State &state) {
  Problem p(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    dsv3::rt::matmulNT(p.view(p.a, p.m, p.k), p.view(p.b, p.n, p.k),
                       p.view(p.c, p.m, p.n));
    benchmark::DoNotOptimize(p.c.data());
  }
  setFlops(state, p);
}

void BM_BF16(benchmark::State &state) {
  Problem p(state.range(0), state.range(1), state.range(2));
  std::vector<uint16_t> a(p.a.size()), b(p.b.size());
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = dsv3::rt::toBF16(p.a[i]);
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = dsv3::rt::toBF16(p.b[i]);
  for (auto _ : state) {
    dsv3::rt::bf16GemmNT(a.data(), p.k, b.data(), p.k, p.m, p.n, p.k,
                         p.c.data(), p.n, true);
    benchmark::DoNotOptimize(p.c.data());
  }
  setFlops(state, p);
}

/// Operands quantized once outside the loop, as weights are; the activation
/// quantization is timed separately by BM_FP8QuantizeActivations.
void BM_FP8(benchmark::State &state) {
  using namespace dsv3::rt;
  Problem p(state.range(0), state.range(1), state.range(2));
  int64_t kb = (p.k + 127) / 128, nb = (p.n + 127) / 128;
  std::vector<uint8_t> aq(p.m * p.k), bq(p.n * p.k);
  std::vector<float> as(p.m * kb), bs(nb * kb);
  quantizeActivationTiles(p.a.data(), p.m, p.k, aq.data(), as.data());
  quantizeWeightBlocks(p.b.data(), p.n, p.k, bq.data(), bs.data());
  FP8Operand a{aq.data(), p.k, 1, as.data(), kb, 1, 1, FP8Format::E4M3};
  FP8Operand b{bq.data(), p.k, 1, bs.data(), kb, 1, 128, FP8Format::E4M3};
  for (auto _ : state) {
    fp8GemmNT(a, b, p.m, p.n, p.k, p.c.data(), p.n, true);
    benchmark::DoNotOptimize(p.c.data());
  }
  setFlops(state, p);
}

void BM_FP8QuantizeActivations(benchmark::State &state) {
  Problem p(state.range(0), state.range(1), state.range(2));
  int64_t kb = (p.k + 127) / 128;
  std::vector<uint8_t> aq(p.m * p.k);
  std::vector<float> as(p.m * kb);
  for (auto _ : state) {
    dsv3::rt::quantizeActivationTiles(p.a.data(), p.m, p.k, aq.data(), as.data());
    benchmark::DoNotOptimize(aq.data());
  }
  state.counters["GFLOP/s"] = 0; // not a GEMM; reported as time only
}

void BM_GeneratedLoops(benchmark::State &state) {
  Problem p(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    loops(p.a.data(), p.b.data(), p.c.data(), p.m, p.n, p.k);
    benchmark::DoNotOptimize(p.c.data());
  }
  setFlops(state, p);
}

// {tokens, out, in}: tiny q_b / kv_a / dense up and lm_head; then V3-like
// projection widths at 256 tokens.
#define LOOP_SHAPES                                                            \
  Args({64, 192, 128})->Args({64, 80, 256})->Args({64, 512, 256})             \
      ->Args({256, 1536, 512})->Args({256, 512, 2048})
// The loop nest is too slow for the larger ones.
#define SHAPES LOOP_SHAPES->Args({512, 512, 512})->Args({1024, 2048, 1024})

BENCHMARK(BM_Microkernel)->SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BF16)->SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_FP8)->SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_FP8QuantizeActivations)->SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GeneratedLoops)->LOOP_SHAPES->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
