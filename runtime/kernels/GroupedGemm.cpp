//===- GroupedGemm.cpp - MoE dispatch order and grouped GEMMs -------------===//
//
// Called by JIT code for dsv3.moe_dispatch and dsv3.grouped_linear (and its
// gradients): each expert multiplies only the rows routed to it, so MoE work
// scales with tokens * top_k instead of tokens * experts. Groups are
// independent GEMMs on views of the operands, run in parallel with TBB; each
// reuses the float32 microkernel of Gemm.cpp (which splits large groups
// further).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/Kernels.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

namespace dsv3::rt {
namespace {

/// Group e's bounds, clamped so that hand-written offsets cannot index out
/// of bounds.
std::pair<int64_t, int64_t> groupBounds(const VectorI64 &offsets, int64_t e,
                                        int64_t rows) {
  int64_t begin = std::clamp<int64_t>(offsets[e], 0, rows);
  int64_t end = std::clamp<int64_t>(offsets[e + 1], begin, rows);
  return {begin, end};
}

MatrixF32 asF32(const StridedMatrix<float> &m) {
  return {m.allocated, m.data, m.offset, {m.sizes[0], m.sizes[1]},
          {m.strides[0], m.strides[1]}};
}

} // namespace

void moeDispatchOrder(const MatrixI64 &ids, int64_t numExperts,
                      const MatrixI64 &rowOfSlot, const VectorI64 &slotOfRow,
                      const VectorI64 &offsets) {
  int64_t n = ids.sizes[0], k = ids.sizes[1];
  auto expertOf = [&](int64_t t, int64_t j) {
    int64_t e = *ids.at(t, j);
    return e >= 0 && e < numExperts ? e : 0;
  };
  std::vector<int64_t> next(numExperts + 1, 0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j)
      ++next[expertOf(t, j) + 1];
  for (int64_t e = 0; e < numExperts; ++e)
    next[e + 1] += next[e];
  for (int64_t e = 0; e <= numExperts; ++e)
    offsets[e] = next[e];
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      int64_t row = next[expertOf(t, j)]++;
      *rowOfSlot.at(t, j) = row;
      slotOfRow[row] = t * k + j;
    }
}

void groupedMatmulNT(const MatrixF32 &x, const Tensor3F32 &w,
                     const VectorI64 &offsets, const MatrixF32 &y) {
  fillZero(y);
  int64_t experts = w.sizes[0], rows = y.sizes[0];
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    auto [begin, end] = groupBounds(offsets, e, rows);
    if (begin < end)
      matmulNT(rowRange(x, begin, end), asF32(w.slice(e)),
               rowRange(y, begin, end));
  });
}

void groupedMatmulNTSplitK(const MatrixF32 &a, const MatrixF32 &b,
                           const VectorI64 &offsets, const Tensor3F32 &c) {
  int64_t experts = c.sizes[0], rows = a.sizes[1];
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    MatrixF32 ce = asF32(c.slice(e));
    fillZero(ce);
    auto [begin, end] = groupBounds(offsets, e, rows);
    if (begin < end)
      matmulNT(columnRange(a, begin, end), columnRange(b, begin, end), ce);
  });
}

} // namespace dsv3::rt

using namespace dsv3::rt;

extern "C" void _mlir_ciface_dsv3rt_moe_dispatch_order(MatrixI64 *ids,
                                                       int64_t numExperts,
                                                       MatrixI64 *rowOfSlot,
                                                       VectorI64 *slotOfRow,
                                                       VectorI64 *offsets) {
  moeDispatchOrder(*ids, numExperts, *rowOfSlot, *slotOfRow, *offsets);
}

extern "C" void _mlir_ciface_dsv3rt_grouped_matmul_nt_f32(MatrixF32 *x,
                                                          Tensor3F32 *w,
                                                          VectorI64 *offsets,
                                                          MatrixF32 *y) {
  groupedMatmulNT(*x, *w, *offsets, *y);
}

extern "C" void _mlir_ciface_dsv3rt_grouped_matmul_nt_f32_split_k(
    MatrixF32 *a, MatrixF32 *b, VectorI64 *offsets, Tensor3F32 *c) {
  groupedMatmulNTSplitK(*a, *b, *offsets, *c);
}
