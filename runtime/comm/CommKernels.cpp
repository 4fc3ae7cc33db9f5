//===- CommKernels.cpp - collectives as compiled code calls them ----------===//
#include "runtime/comm/CommKernels.h"

#include "runtime/comm/Groups.h"

#include <cstring>
#include <string>
#include <vector>

using namespace dsv3::rt;

namespace {

template <class T> constexpr ElementType elementTypeOf();
template <> constexpr ElementType elementTypeOf<float>() { return ElementType::F32; }
template <> constexpr ElementType elementTypeOf<int64_t>() { return ElementType::I64; }

Communicator &groupOf(int64_t group) {
  if (group < 0 || group >= kNumCommGroups)
    processGroup(CommGroup::World)
        .abort("compiled code names communication group " + std::to_string(group) +
               ", which does not exist");
  return processGroup(static_cast<CommGroup>(group));
}

/// Ends the job unless `e` is success.
void check(Communicator &comm, const char *op, Error e) {
  if (e)
    comm.abort(std::string("compiled code: ") + op + ": " + e.message());
}

/// A dense view of a strided matrix (copied when it is not one already).
template <class T> struct Dense : DenseMatrix<T> {
  explicit Dense(const CommMatrix<T> &m) : DenseMatrix<T>(m) {}
  int64_t count() const { return this->rows * this->cols; }
};

template <class T> void allReduce(int64_t group, CommMatrix<T> *x, CommMatrix<T> *y) {
  Communicator &comm = groupOf(group);
  Dense<T> in(*x), out(*y);
  if (in.data != out.data)
    std::memmove(out.data, in.data, in.count() * sizeof(T));
  check(comm, "all-reduce",
        Communicator::complete(comm.allReduceSum(elementTypeOf<T>(), out.data, out.count())));
  out.storeTo(*y);
}

template <class T> void allGather(int64_t group, CommMatrix<T> *x, CommMatrix<T> *y) {
  Communicator &comm = groupOf(group);
  Dense<T> in(*x), out(*y);
  if (out.count() != in.count() * comm.size())
    comm.abort("compiled code: all-gather of " + std::to_string(in.count()) +
               " elements into " + std::to_string(out.count()) + " over " +
               std::to_string(comm.size()) + " ranks");
  check(comm, "all-gather",
        Communicator::complete(
            comm.allGather(elementTypeOf<T>(), in.data, out.data, in.count())));
  out.storeTo(*y);
}

template <class T> void reduceScatter(int64_t group, CommMatrix<T> *x, CommMatrix<T> *y) {
  Communicator &comm = groupOf(group);
  Dense<T> in(*x), out(*y);
  if (in.count() != out.count() * comm.size())
    comm.abort("compiled code: reduce-scatter of " + std::to_string(in.count()) +
               " elements into " + std::to_string(out.count()) + " over " +
               std::to_string(comm.size()) + " ranks");
  check(comm, "reduce-scatter",
        Communicator::complete(
            comm.reduceScatterSum(elementTypeOf<T>(), in.data, out.data, out.count())));
  out.storeTo(*y);
}

template <class T>
void allToAll(int64_t group, CommMatrix<T> *x, CommCounts *sendCounts, CommCounts *recvCounts,
              CommMatrix<T> *y) {
  Communicator &comm = groupOf(group);
  int64_t ranks = comm.size();
  if (sendCounts->size != ranks || recvCounts->size != ranks)
    comm.abort("compiled code: all-to-all with counts for " + std::to_string(sendCounts->size) +
               " ranks in a group of " + std::to_string(ranks));
  Dense<T> in(*x), out(*y);
  int64_t cols = in.cols;
  std::vector<int64_t> sc(ranks), so(ranks), rc(ranks), ro(ranks);
  int64_t sent = 0, received = 0;
  for (int64_t p = 0; p < ranks; ++p) {
    if ((*sendCounts)[p] < 0 || (*recvCounts)[p] < 0)
      comm.abort("compiled code: all-to-all with a negative row count");
    sc[p] = (*sendCounts)[p] * cols;
    so[p] = sent * cols;
    sent += (*sendCounts)[p];
    rc[p] = (*recvCounts)[p] * cols;
    ro[p] = received * cols;
    received += (*recvCounts)[p];
  }
  if (sent > in.rows || received > out.rows)
    comm.abort("compiled code: all-to-all sends " + std::to_string(sent) + " of " +
               std::to_string(in.rows) + " rows and receives " + std::to_string(received) +
               " rows into a capacity of " + std::to_string(out.rows));
  check(comm, "all-to-all",
        Communicator::complete(
            comm.allToAllV(elementTypeOf<T>(), in.data, sc, so, out.data, rc, ro)));
  // Rows past the received ones are zero, as dsv3.all_to_all says.
  std::memset(static_cast<void *>(out.data + received * cols), 0,
              (out.rows - received) * cols * sizeof(T));
  out.storeTo(*y);
}

} // namespace

extern "C" {

int64_t dsv3rt_comm_rank(int64_t group) { return groupOf(group).rank(); }
int64_t dsv3rt_comm_size(int64_t group) { return groupOf(group).size(); }

#define DSV3RT_COMM_DEFINE(T, SUFFIX)                                                      \
  void _mlir_ciface_dsv3rt_all_reduce_##SUFFIX(int64_t group, CommMatrix<T> *x,            \
                                               CommMatrix<T> *y) {                         \
    allReduce(group, x, y);                                                                \
  }                                                                                        \
  void _mlir_ciface_dsv3rt_all_gather_##SUFFIX(int64_t group, CommMatrix<T> *x,            \
                                               CommMatrix<T> *y) {                         \
    allGather(group, x, y);                                                                \
  }                                                                                        \
  void _mlir_ciface_dsv3rt_reduce_scatter_##SUFFIX(int64_t group, CommMatrix<T> *x,        \
                                                   CommMatrix<T> *y) {                     \
    reduceScatter(group, x, y);                                                            \
  }                                                                                        \
  void _mlir_ciface_dsv3rt_all_to_all_##SUFFIX(int64_t group, CommMatrix<T> *x,            \
                                               CommCounts *sendCounts,                     \
                                               CommCounts *recvCounts, CommMatrix<T> *y) { \
    allToAll(group, x, sendCounts, recvCounts, y);                                         \
  }
DSV3RT_COMM_DEFINE(float, f32)
DSV3RT_COMM_DEFINE(int64_t, i64)
#undef DSV3RT_COMM_DEFINE
}

namespace dsv3::rt {

const CommSymbol *commSymbols() {
#define DSV3RT_COMM_SYMBOLS(SUFFIX)                                                        \
  {"_mlir_ciface_dsv3rt_all_reduce_" #SUFFIX,                                              \
   reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_reduce_##SUFFIX)},                    \
      {"_mlir_ciface_dsv3rt_all_gather_" #SUFFIX,                                          \
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_gather_##SUFFIX)},                \
      {"_mlir_ciface_dsv3rt_reduce_scatter_" #SUFFIX,                                      \
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_reduce_scatter_##SUFFIX)},            \
      {"_mlir_ciface_dsv3rt_all_to_all_" #SUFFIX,                                          \
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_to_all_##SUFFIX)},
  static const CommSymbol symbols[] = {
      {"dsv3rt_comm_rank", reinterpret_cast<void *>(&dsv3rt_comm_rank)},
      {"dsv3rt_comm_size", reinterpret_cast<void *>(&dsv3rt_comm_size)},
      DSV3RT_COMM_SYMBOLS(f32) DSV3RT_COMM_SYMBOLS(i64){nullptr, nullptr}};
#undef DSV3RT_COMM_SYMBOLS
  return symbols;
}

} // namespace dsv3::rt
