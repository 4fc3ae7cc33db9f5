//===- MemRef.h - MLIR memref descriptors as C++ structs --------*- C++ -*-===//
//
// Part of the compiler/runtime contract: compiled code passes every buffer
// to the runtime's entry points (kernels, collectives) as a pointer to
// MLIR's strided memref descriptor {allocated, aligned, offset, sizes,
// strides}. These structs have that layout; DenseMatrix gives kernels that
// want plain row-major arrays one.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_ABI_MEMREF_H
#define DSV3_RUNTIME_ABI_MEMREF_H

#include <cstdint>
#include <vector>

namespace dsv3::rt {

/// Layout-compatible with MLIR's StridedMemRefType<T, 2> for any element.
template <class T> struct StridedMatrix {
  T *allocated;
  T *data;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
  T *at(int64_t r, int64_t c) const {
    return data + offset + r * strides[0] + c * strides[1];
  }
};

/// Layout-compatible with MLIR's StridedMemRefType<T, 1>.
template <class T> struct StridedVector {
  T *allocated;
  T *data;
  int64_t offset;
  int64_t size;
  int64_t stride;
  T &operator[](int64_t i) const { return data[offset + i * stride]; }
};
using VectorI64 = StridedVector<int64_t>;

/// A dense row-major copy of the strided matrix `m` when it is not already
/// one (slices of the parameter buffer are; transposed views are not), for
/// kernels that take plain row-major arrays.
template <class T> struct DenseMatrix {
  std::vector<T> storage;
  T *data;
  int64_t rows, cols;
  explicit DenseMatrix(const StridedMatrix<T> &m)
      : rows(m.sizes[0]), cols(m.sizes[1]) {
    if (m.strides[1] == 1 && (m.strides[0] == cols || rows <= 1)) {
      data = m.data + m.offset;
      return;
    }
    storage.resize(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        storage[r * cols + c] = *m.at(r, c);
    data = storage.data();
  }
  /// Writes a private copy back into `m`.
  void storeTo(const StridedMatrix<T> &m) const {
    if (storage.empty())
      return;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        *m.at(r, c) = storage[r * cols + c];
  }
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_ABI_MEMREF_H
