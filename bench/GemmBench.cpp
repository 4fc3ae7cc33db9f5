//===- GemmBench.cpp - the GEMM microkernel against loop code -------------===//
//
// Justifies the one hand-written kernel JIT code calls: C += A B^T on the
// tiny and DeepSeek-V3-like projection shapes, the microkernel against the
// loop nest that convert-linalg-to-loops produces for the same generic
// (i, j, k order, compiled at -O3 for this CPU like the JIT does).
//
//===----------------------------------------------------------------------===//
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
#define SHAPES                                                                 \
  Args({64, 192, 128})->Args({64, 80, 256})->Args({64, 512, 256})             \
      ->Args({256, 1536, 512})->Args({256, 512, 2048})

BENCHMARK(BM_Microkernel)->SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GeneratedLoops)->SHAPES->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
