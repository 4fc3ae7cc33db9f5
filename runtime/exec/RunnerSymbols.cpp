//===- RunnerSymbols.cpp - symbols compiled code expects from its runner --===//
//
// Code lowered by MLIR calls `memrefCopy` for copies between buffers of
// different layouts; the JIT binds MLIR's own C runner utility, an
// ahead-of-time runner (dsv3-run, no MLIR) links this one. Same contract:
// copy every element of `src` into `dst`, both strided memrefs of one shape.
//
//===----------------------------------------------------------------------===//
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

/// MLIR's UnrankedMemRefType: the rank and a pointer to a ranked
/// descriptor {allocated, aligned, offset, sizes[rank], strides[rank]}.
struct UnrankedMemRef {
  int64_t rank;
  void *descriptor;
};

struct Ranked {
  char *aligned;
  int64_t offset;
  const int64_t *sizes, *strides;
  explicit Ranked(const UnrankedMemRef &m) {
    auto *words = static_cast<int64_t *>(m.descriptor);
    aligned = reinterpret_cast<char *>(words[1]);
    offset = words[2];
    sizes = words + 3;
    strides = words + 3 + m.rank;
  }
};

} // namespace

extern "C" void memrefCopy(int64_t elementSize, UnrankedMemRef *srcArg, UnrankedMemRef *dstArg) {
  int64_t rank = srcArg->rank;
  Ranked src(*srcArg), dst(*dstArg);
  for (int64_t d = 0; d < rank; ++d)
    if (src.sizes[d] == 0)
      return;
  std::vector<int64_t> index(rank, 0);
  int64_t s = src.offset, t = dst.offset;
  while (true) {
    std::memcpy(dst.aligned + t * elementSize, src.aligned + s * elementSize, elementSize);
    // Odometer over the indices, innermost first.
    int64_t d = rank - 1;
    for (; d >= 0; --d) {
      s += src.strides[d];
      t += dst.strides[d];
      if (++index[d] < src.sizes[d])
        break;
      s -= src.strides[d] * src.sizes[d];
      t -= dst.strides[d] * dst.sizes[d];
      index[d] = 0;
    }
    if (d < 0)
      return;
  }
}
