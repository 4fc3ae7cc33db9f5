//===- CommKernels.h - collectives as compiled code calls them --*- C++ -*-===//
//
// The C entry points dsv3-lower-comm (lowering/Comm) emits calls to: every
// tensor arrives as a strided 2-D memref descriptor [rows, columns] (the
// lowering collapses the trailing dimensions), counts as 1-D i64
// descriptors, the group as its CommGroup number. They run the operation on
// processGroup(group) and wait for it; an all-to-all may also be started
// and waited for separately (dsv3-comm-overlap puts compute between). Compiled code has no error path, so
// a failed operation (or an all-to-all that would overflow its static
// capacity) ends the job on every rank with a message naming this one.
// Part of the runtime core: no LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_COMM_COMMKERNELS_H
#define DSV3_RUNTIME_COMM_COMMKERNELS_H

#include "runtime/abi/MemRef.h"

#include <cstdint>

namespace dsv3::rt {

template <class T> using CommMatrix = StridedMatrix<T>;
using CommCounts = StridedVector<int64_t>;

/// (name, address) pairs of the entry points, null-terminated, for a JIT.
struct CommSymbol {
  const char *name;
  void *address;
};
const CommSymbol *commSymbols();

} // namespace dsv3::rt

extern "C" {
/// This rank's index in `group`.
int64_t dsv3rt_comm_rank(int64_t group);
int64_t dsv3rt_comm_size(int64_t group);

#define DSV3RT_COMM_DECLARE(T, SUFFIX)                                                     \
  void _mlir_ciface_dsv3rt_all_reduce_##SUFFIX(int64_t group, dsv3::rt::CommMatrix<T> *x,  \
                                               dsv3::rt::CommMatrix<T> *y);                \
  void _mlir_ciface_dsv3rt_all_gather_##SUFFIX(int64_t group, dsv3::rt::CommMatrix<T> *x,  \
                                               dsv3::rt::CommMatrix<T> *y);                \
  void _mlir_ciface_dsv3rt_reduce_scatter_##SUFFIX(                                        \
      int64_t group, dsv3::rt::CommMatrix<T> *x, dsv3::rt::CommMatrix<T> *y);              \
  void _mlir_ciface_dsv3rt_all_to_all_##SUFFIX(                                            \
      int64_t group, dsv3::rt::CommMatrix<T> *x, dsv3::rt::CommCounts *sendCounts,         \
      dsv3::rt::CommCounts *recvCounts, dsv3::rt::CommMatrix<T> *y);                       \
  /* Nonblocking: start into y, then wait(x, y as started, result). */                      \
  void _mlir_ciface_dsv3rt_all_to_all_start_##SUFFIX(                                      \
      int64_t group, dsv3::rt::CommMatrix<T> *x, dsv3::rt::CommCounts *sendCounts,         \
      dsv3::rt::CommCounts *recvCounts, dsv3::rt::CommMatrix<T> *y);                       \
  void _mlir_ciface_dsv3rt_all_to_all_wait_##SUFFIX(dsv3::rt::CommMatrix<T> *x,            \
                                                    dsv3::rt::CommMatrix<T> *started,      \
                                                    dsv3::rt::CommMatrix<T> *y);
DSV3RT_COMM_DECLARE(float, f32)
DSV3RT_COMM_DECLARE(int64_t, i64)
#undef DSV3RT_COMM_DECLARE
}

#endif // DSV3_RUNTIME_COMM_COMMKERNELS_H
