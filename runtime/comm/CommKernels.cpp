//===- CommKernels.cpp - collectives as compiled code calls them ----------===//
#include "runtime/comm/CommKernels.h"

#include "runtime/comm/Groups.h"

#include <cstring>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
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

/// An all-to-all in flight: its request and the dense views its transfer
/// reads and writes (private copies stay alive with it).
template <class T> struct StartedAllToAll {
  Communicator *comm;
  RequestPtr request;
  Dense<T> in, out;
  int64_t received;
};

template <class T>
StartedAllToAll<T> startAllToAll(int64_t group, CommMatrix<T> *x, CommCounts *sendCounts,
                                 CommCounts *recvCounts, CommMatrix<T> *y) {
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
  Expected<RequestPtr> request =
      comm.allToAllV(elementTypeOf<T>(), in.data, sc, so, out.data, rc, ro);
  if (!request)
    check(comm, "all-to-all", request.takeError());
  return {&comm, std::move(*request), std::move(in), std::move(out), received};
}

template <class T> void finishAllToAll(StartedAllToAll<T> &a, CommMatrix<T> *y) {
  check(*a.comm, "all-to-all", a.request->wait());
  // Rows past the received ones are zero, as dsv3.all_to_all says.
  std::memset(static_cast<void *>(a.out.data + a.received * a.out.cols), 0,
              (a.out.rows - a.received) * a.out.cols * sizeof(T));
  a.out.storeTo(*y);
}

template <class T>
void allToAll(int64_t group, CommMatrix<T> *x, CommCounts *sendCounts, CommCounts *recvCounts,
              CommMatrix<T> *y) {
  StartedAllToAll<T> a = startAllToAll(group, x, sendCounts, recvCounts, y);
  finishAllToAll(a, y);
}

/// The started all-to-alls compiled code has not waited for, by the
/// address of their destination.
template <class T> std::map<const T *, StartedAllToAll<T>> &pendingAllToAlls() {
  static std::map<const T *, StartedAllToAll<T>> pending;
  return pending;
}
std::mutex pendingMutex;
std::condition_variable pendingChanged;
int64_t pendingCount = 0;
std::vector<Communicator *> pendingComms; // the groups of the pending ones

/// While compiled code computes between an all-to-all's start and wait,
/// this thread lets MPI move the transfer on (every 20 us). It sleeps while
/// nothing is in flight; only for communicators that allow a second thread.
class ProgressThread {
public:
  ProgressThread() : thread([this] { run(); }) {}
  ~ProgressThread() {
    {
      std::lock_guard<std::mutex> lock(pendingMutex);
      stop = true;
    }
    pendingChanged.notify_all();
    thread.join();
  }

private:
  void run() {
    std::unique_lock<std::mutex> lock(pendingMutex);
    while (!stop) {
      if (pendingCount == 0) {
        pendingChanged.wait(lock);
        continue;
      }
      for (Communicator *c : pendingComms)
        c->progress();
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      lock.lock();
    }
  }
  bool stop = false;
  std::thread thread;
};

template <class T>
void allToAllStart(int64_t group, CommMatrix<T> *x, CommCounts *sendCounts,
                   CommCounts *recvCounts, CommMatrix<T> *y) {
  StartedAllToAll<T> a = startAllToAll(group, x, sendCounts, recvCounts, y);
  Communicator *comm = a.comm;
  if (comm->threadSafe())
    static ProgressThread progress; // started with the first exchange in flight
  std::lock_guard<std::mutex> lock(pendingMutex);
  auto [it, inserted] = pendingAllToAlls<T>().emplace(y->data + y->offset, std::move(a));
  if (!inserted)
    comm->abort("compiled code: a second all-to-all started into the buffer of one in flight");
  ++pendingCount;
  if (std::find(pendingComms.begin(), pendingComms.end(), comm) == pendingComms.end())
    pendingComms.push_back(comm);
  pendingChanged.notify_all();
}

/// Completes the all-to-all started into `started`; its result goes to `y`
/// (the same buffer unless bufferization copied). `x`, the source, is an
/// operand so that it stays alive and unchanged until here.
template <class T>
void allToAllWait(CommMatrix<T> *x, CommMatrix<T> *started, CommMatrix<T> *y) {
  (void)x;
  std::unique_lock<std::mutex> lock(pendingMutex);
  auto it = pendingAllToAlls<T>().find(started->data + started->offset);
  if (it == pendingAllToAlls<T>().end())
    processGroup(CommGroup::World)
        .abort("compiled code waits for an all-to-all that was not started");
  StartedAllToAll<T> a = std::move(it->second);
  pendingAllToAlls<T>().erase(it);
  --pendingCount;
  lock.unlock();
  finishAllToAll(a, started);
  if (y->data + y->offset != started->data + started->offset)
    for (int64_t r = 0; r < y->sizes[0]; ++r)
      for (int64_t c = 0; c < y->sizes[1]; ++c)
        *y->at(r, c) = *started->at(r, c);
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
  }                                                                                        \
  void _mlir_ciface_dsv3rt_all_to_all_start_##SUFFIX(                                      \
      int64_t group, CommMatrix<T> *x, CommCounts *sendCounts, CommCounts *recvCounts,     \
      CommMatrix<T> *y) {                                                                  \
    allToAllStart(group, x, sendCounts, recvCounts, y);                                    \
  }                                                                                        \
  void _mlir_ciface_dsv3rt_all_to_all_wait_##SUFFIX(CommMatrix<T> *x, CommMatrix<T> *started, \
                                                    CommMatrix<T> *y) {                    \
    allToAllWait(x, started, y);                                                           \
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
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_to_all_##SUFFIX)},                \
      {"_mlir_ciface_dsv3rt_all_to_all_start_" #SUFFIX,                                    \
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_to_all_start_##SUFFIX)},          \
      {"_mlir_ciface_dsv3rt_all_to_all_wait_" #SUFFIX,                                     \
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_all_to_all_wait_##SUFFIX)},
  static const CommSymbol symbols[] = {
      {"dsv3rt_comm_rank", reinterpret_cast<void *>(&dsv3rt_comm_rank)},
      {"dsv3rt_comm_size", reinterpret_cast<void *>(&dsv3rt_comm_size)},
      DSV3RT_COMM_SYMBOLS(f32) DSV3RT_COMM_SYMBOLS(i64){nullptr, nullptr}};
#undef DSV3RT_COMM_SYMBOLS
  return symbols;
}

} // namespace dsv3::rt
