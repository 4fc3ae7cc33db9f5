//===- GroupedGemm.cpp - MoE dispatch order and grouped GEMMs -------------===//
//
// Called by JIT code for dsv3.moe_dispatch and dsv3.grouped_linear (and its
// gradients), in float32 and in FP8 (dsv3.fp8_m_grouped_gemm,
// dsv3.fp8_k_grouped_gemm and grouped quantization): each expert multiplies
// only the rows routed to it, so MoE work scales with tokens * top_k instead
// of tokens * experts. Groups are independent GEMMs on views of the
// operands, run in parallel with TBB; each reuses the float32 kernel of
// Gemm.cpp or the FP8 kernel of PackedGemm.cpp (which split large groups
// further).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/Kernels.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

namespace dsv3::rt {

std::vector<RowRange> groupRanges(const VectorI64 &offsets, int64_t experts,
                                  int64_t rows) {
  std::vector<RowRange> ranges(std::max<int64_t>(experts, 0), {rows, rows});
  int64_t end = 0;
  for (int64_t e = 0; e < experts && e + 1 < offsets.size; ++e) {
    int64_t begin = std::clamp<int64_t>(offsets[e], end, rows);
    end = std::clamp<int64_t>(offsets[e + 1], begin, rows);
    ranges[e] = {begin, end};
  }
  return ranges;
}

namespace {

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
  int64_t experts = w.sizes[0];
  std::vector<RowRange> groups = groupRanges(offsets, experts, y.sizes[0]);
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    auto [begin, end] = groups[e];
    if (begin < end)
      matmulNT(rowRange(x, begin, end), asF32(w.slice(e)),
               rowRange(y, begin, end));
  });
}

void groupedMatmulNTSplitK(const MatrixF32 &a, const MatrixF32 &b,
                           const VectorI64 &offsets, const Tensor3F32 &c) {
  int64_t experts = c.sizes[0];
  std::vector<RowRange> groups = groupRanges(offsets, experts, a.sizes[1]);
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    MatrixF32 ce = asF32(c.slice(e));
    fillZero(ce);
    auto [begin, end] = groups[e];
    if (begin < end)
      matmulNT(columnRange(a, begin, end), columnRange(b, begin, end), ce);
  });
}

std::vector<int64_t> groupTileStarts(const std::vector<RowRange> &groups,
                                     int64_t tileRows, int64_t capacity) {
  std::vector<int64_t> starts(groups.size() + 1);
  int64_t next = 0;
  for (size_t e = 0; e < groups.size(); ++e) {
    starts[e] = next;
    int64_t tiles = (groups[e].second - groups[e].first + tileRows - 1) / tileRows;
    if (next + tiles <= capacity)
      next += tiles;
  }
  starts[groups.size()] = next;
  return starts;
}

namespace {
/// Whether group e is non-empty and received its tiles in groupTileStarts.
bool hasTiles(const std::vector<int64_t> &starts, int64_t e, RowRange group) {
  return group.second > group.first && starts[e + 1] > starts[e];
}

/// Calls `clear(r0, r1)` for every run of rows of [0, rows) in no group
/// (groupRanges makes groups ordered and disjoint): kernels that overwrite
/// the groups' rows only clear the rest.
template <class Clear>
void forRowsOutside(const std::vector<RowRange> &groups, int64_t rows,
                    const Clear &clear) {
  int64_t next = 0;
  for (auto [begin, end] : groups) {
    if (begin > next)
      clear(next, begin);
    next = std::max(next, end);
  }
  if (rows > next)
    clear(next, rows);
}
} // namespace

void quantizeGroupedTiles(const StridedMatrix<float> &x, const VectorI64 &offsets,
                          int64_t tileRows, int64_t tileCols, FP8Format format,
                          ScaleRounding rounding, const MatrixU8 &codes,
                          const StridedMatrix<float> &scales) {
  DenseMatrix<float> in(x);
  DenseMatrix<uint8_t> q(codes);
  DenseMatrix<float> s(scales);
  int64_t rows = in.rows, cols = in.cols;
  int64_t experts = std::max<int64_t>(offsets.size - 1, 0);
  std::vector<RowRange> groups = groupRanges(offsets, experts, rows);
  std::vector<int64_t> starts = groupTileStarts(groups, tileRows, s.rows);
  // Rows in no group (or in one without tiles) get code 0; scale rows past
  // the last tile 0.
  auto clearCodes = [&](int64_t r0, int64_t r1) {
    std::fill(q.data + r0 * cols, q.data + r1 * cols, uint8_t(0));
  };
  forRowsOutside(groups, rows, clearCodes);
  std::fill(s.data + starts.back() * s.cols, s.data + s.rows * s.cols, 0.0f);
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    auto [begin, end] = groups[e];
    if (hasTiles(starts, e, groups[e]))
      quantizeTiles(in.data + begin * cols, end - begin, cols, tileRows, tileCols,
                    format, rounding, q.data + begin * cols,
                    s.data + starts[e] * s.cols);
    else
      clearCodes(begin, end);
  });
  q.storeTo(codes);
  s.storeTo(scales);
}

void fp8MGroupedGemm(const MatrixU8 &a, const StridedMatrix<float> &aScales,
                     const StridedTensor3<uint8_t> &b, const Tensor3F32 &bScales,
                     const VectorI64 &offsets, bool transposeB, FP8Format formatA,
                     FP8Format formatB, const MatrixF32 &y) {
  int64_t experts = b.sizes[0], k = a.sizes[1];
  std::vector<RowRange> groups = groupRanges(offsets, experts, y.sizes[0]);
  // The GEMMs overwrite the groups' rows.
  forRowsOutside(groups, y.sizes[0],
                 [&](int64_t r0, int64_t r1) { fillZero(rowRange(y, r0, r1)); });
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    auto [begin, end] = groups[e];
    if (begin == end)
      return;
    // Group e's rows of A (1x128 tiles) against expert e's weight blocks.
    FP8Operand opA = fp8Operand(rowRange(a, begin, end),
                                rowRange(aScales, begin, end), false, 1, formatA);
    FP8Operand opB = fp8Operand(b.slice(e), bScales.slice(e), transposeB,
                                kFP8Tile, formatB);
    fp8GemmInto(opA, opB, k, rowRange(y, begin, end));
  });
}

void fp8KGroupedGemm(const MatrixU8 &a, const StridedMatrix<float> &aScales,
                     const MatrixU8 &b, const StridedMatrix<float> &bScales,
                     const VectorI64 &offsets, FP8Format formatA,
                     FP8Format formatB, const Tensor3F32 &y) {
  int64_t experts = y.sizes[0];
  std::vector<RowRange> groups = groupRanges(offsets, experts, a.sizes[0]);
  std::vector<int64_t> starts = groupTileStarts(
      groups, kFP8Tile, std::min(aScales.sizes[0], bScales.sizes[0]));
  // Group e as logical [M, rows of e] and [N, rows of e] operands: the
  // stored rows are their K dimension (transposed views), and their 128x1
  // tiles start at the group's first tile.
  auto operand = [&](const MatrixU8 &codes, const StridedMatrix<float> &scales,
                     int64_t e, FP8Format format) {
    auto [begin, end] = groups[e];
    return fp8Operand(rowRange(codes, begin, end),
                      rowRange(scales, starts[e], starts[e + 1]), true, 1, format);
  };
  tbb::parallel_for(int64_t(0), experts, [&](int64_t e) {
    MatrixF32 ye = asF32(y.slice(e));
    auto [begin, end] = groups[e];
    if (!hasTiles(starts, e, groups[e])) {
      fillZero(ye);
      return;
    }
    fp8GemmInto(operand(a, aScales, e, formatA), operand(b, bScales, e, formatB),
                end - begin, ye);
  });
}

} // namespace dsv3::rt

using namespace dsv3::rt;

extern "C" void _mlir_ciface_dsv3rt_fp8_quantize_grouped(
    MatrixF32 *x, VectorI64 *offsets, int64_t tileRows, int64_t tileCols,
    int64_t format, int64_t powerOfTwo, MatrixU8 *codes, MatrixF32 *scales) {
  quantizeGroupedTiles(*reinterpret_cast<StridedMatrix<float> *>(x), *offsets,
                       tileRows, tileCols, static_cast<FP8Format>(format),
                       powerOfTwo ? ScaleRounding::PowerOfTwo : ScaleRounding::Exact,
                       *codes, *reinterpret_cast<StridedMatrix<float> *>(scales));
}

extern "C" void _mlir_ciface_dsv3rt_fp8_m_grouped_gemm(
    MatrixU8 *a, MatrixF32 *aScales, StridedTensor3<uint8_t> *b,
    Tensor3F32 *bScales, VectorI64 *offsets, int64_t transposeB, int64_t formatA,
    int64_t formatB, MatrixF32 *y) {
  fp8MGroupedGemm(*a, *reinterpret_cast<StridedMatrix<float> *>(aScales), *b,
                  *bScales, *offsets, transposeB, static_cast<FP8Format>(formatA),
                  static_cast<FP8Format>(formatB), *y);
}

extern "C" void _mlir_ciface_dsv3rt_fp8_k_grouped_gemm(
    MatrixU8 *a, MatrixF32 *aScales, MatrixU8 *b, MatrixF32 *bScales,
    VectorI64 *offsets, int64_t formatA, int64_t formatB, Tensor3F32 *y) {
  fp8KGroupedGemm(*a, *reinterpret_cast<StridedMatrix<float> *>(aScales), *b,
                  *reinterpret_cast<StridedMatrix<float> *>(bScales), *offsets,
                  static_cast<FP8Format>(formatA), static_cast<FP8Format>(formatB),
                  *y);
}

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
