//===- Mpi.cpp - the MPI backend of the communicator ----------------------===//
#include "runtime/comm/Mpi.h"

#include "runtime/support/Trace.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#ifdef DSV3_HAVE_MPI
#include <mpi.h>
#endif

namespace dsv3::rt {

bool launchedByMpi() {
  for (const char *var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(var))
      return true;
  return false;
}

Expected<std::unique_ptr<Communicator>> worldCommunicator(int &argc, char **&argv) {
  if (!launchedByMpi())
    return singleProcessCommunicator();
  return mpiCommunicator(argc, argv);
}

#ifndef DSV3_HAVE_MPI

bool mpiAvailable() { return false; }

Expected<std::unique_ptr<Communicator>> mpiCommunicator(int &, char **&) {
  return Error::failure("this build has no MPI support (install libopenmpi-dev and reconfigure)");
}

#else

bool mpiAvailable() { return true; }

namespace {

Error mpiError(const char *op, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return Error::failure(std::string(op) + ": " + std::string(text, length));
}

MPI_Datatype datatype(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return MPI_FLOAT;
  case ElementType::I64:
    return MPI_INT64_T;
  case ElementType::BF16:
    return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

/// MPI counts are int: larger exchanges are refused instead of truncated.
bool fitsInt(int64_t v) { return v >= 0 && v <= INT_MAX; }

/// The thread support MPI_Init_thread granted.
int threadLevel = 0;

using Clock = std::chrono::steady_clock;

class MpiRequest : public Request {
public:
  /// `linkBytes`: what this rank sends over the link, for the link model.
  MpiRequest(CommStats &stats, const char *op, int64_t linkBytes = 0)
      : stats(stats), op(op), started(Clock::now()), due(started) {
    if (linkModel().enabled())
      due += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(linkModel().seconds(linkBytes)));
  }
  const char *name() const { return op; }
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<int> counts[4]; // all-to-all: kept alive until completion

  Error wait() override {
    if (finished)
      return Error::success();
    auto start = Clock::now();
    int code = mpiDone ? MPI_SUCCESS : MPI_Wait(&request, MPI_STATUS_IGNORE);
    mpiDone = true;
    // The link model: not before its modeled transfer ends.
    if (Clock::now() < due)
      std::this_thread::sleep_until(due);
    auto end = Clock::now();
    stats.waitSeconds += std::chrono::duration<double>(end - start).count();
    finish(end, std::chrono::duration<double>(end - start).count());
    if (code != MPI_SUCCESS)
      return mpiError(op, code);
    return Error::success();
  }

  Expected<bool> test() override {
    if (finished)
      return true;
    if (!mpiDone) {
      int done = 0;
      int code = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (code != MPI_SUCCESS)
        return mpiError(op, code);
      mpiDone = done != 0;
    }
    auto now = Clock::now();
    if (!mpiDone || now < due)
      return false;
    finish(now, 0);
    return true;
  }

private:
  /// Completion at `end`, after `blocked` seconds in wait.
  void finish(Clock::time_point end, double blocked) {
    finished = true;
    if (std::strcmp(op, "all-to-all") == 0) {
      ++stats.allToAlls;
      stats.allToAllFlightSeconds += std::chrono::duration<double>(end - started).count();
      stats.allToAllExposedSeconds += blocked;
    }
    // The trace shows the operation from its start to its completion.
    TraceRecorder::process().record(op, TraceLane::Communication, started, end);
  }

  CommStats &stats;
  const char *op;
  Clock::time_point started, due;
  bool mpiDone = false, finished = false;
};

/// A communicator over an MPI communicator: the world, or a group split
/// from it (which it frees).
class MpiComm : public Communicator {
public:
  explicit MpiComm(MPI_Comm comm) : comm(comm) {
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &worldRank);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm != MPI_COMM_WORLD && !finalized)
      MPI_Comm_free(&comm);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  bool threadSafe() const override { return threadLevel == MPI_THREAD_MULTIPLE; }
  void progress() override {
    // Any MPI call runs the progress engine; a probe changes nothing else.
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, MPI_STATUS_IGNORE);
  }

  Expected<RequestPtr> allReduceSum(ElementType type, void *data, int64_t count) override {
    if (Error e = checkCount("all-reduce", type, count, /*sums=*/true))
      return e;
    // A ring sends 2 (n-1)/n of the data.
    auto r = std::make_unique<MpiRequest>(stats_, "all-reduce",
                                          2 * (size_ - 1) * count * elementSize(type) / size_);
    int code = MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), datatype(type),
                              MPI_SUM, comm, &r->request);
    return started(std::move(r), code);
  }

  Expected<RequestPtr> allGather(ElementType type, const void *send, void *recv,
                                 int64_t count) override {
    if (Error e = checkCount("all-gather", type, count, /*sums=*/false))
      return e;
    auto r = std::make_unique<MpiRequest>(stats_, "all-gather",
                                          (size_ - 1) * count * elementSize(type));
    int code = MPI_Iallgather(send, static_cast<int>(count), datatype(type), recv,
                              static_cast<int>(count), datatype(type), comm,
                              &r->request);
    return started(std::move(r), code);
  }

  Expected<RequestPtr> reduceScatterSum(ElementType type, const void *send, void *recv,
                                        int64_t count) override {
    if (Error e = checkCount("reduce-scatter", type, count, /*sums=*/true))
      return e;
    auto r = std::make_unique<MpiRequest>(stats_, "reduce-scatter",
                                          (size_ - 1) * count * elementSize(type));
    int code = MPI_Ireduce_scatter_block(send, recv, static_cast<int>(count), datatype(type),
                                         MPI_SUM, comm, &r->request);
    return started(std::move(r), code);
  }

  Expected<RequestPtr> allToAllV(ElementType type, const void *send,
                                 const std::vector<int64_t> &sendCounts,
                                 const std::vector<int64_t> &sendOffsets, void *recv,
                                 const std::vector<int64_t> &recvCounts,
                                 const std::vector<int64_t> &recvOffsets) override {
    if (Error e = checkAllToAll(sendCounts, sendOffsets, recvCounts, recvOffsets))
      return e;
    size_t es = elementSize(type);
    int64_t linkBytes = 0;
    for (int p = 0; p < size_; ++p)
      if (p != rank_)
        linkBytes += sendCounts[p] * es;
    auto r = std::make_unique<MpiRequest>(stats_, "all-to-all", linkBytes);
    const std::vector<int64_t> *from[4] = {&sendCounts, &sendOffsets, &recvCounts, &recvOffsets};
    for (int k = 0; k < 4; ++k)
      for (int64_t v : *from[k]) {
        if (!fitsInt(v))
          return Error::failure("all-to-all: a count or offset exceeds MPI's int range");
        r->counts[k].push_back(static_cast<int>(v));
      }
    for (int p = 0; p < size_; ++p)
      if (p != rank_) {
        stats_.bytesSent += sendCounts[p] * es;
        stats_.bytesReceived += recvCounts[p] * es;
      }
    int code = MPI_Ialltoallv(send, r->counts[0].data(), r->counts[1].data(), datatype(type),
                              recv, r->counts[2].data(), r->counts[3].data(), datatype(type),
                              comm, &r->request);
    return started(std::move(r), code);
  }

  Expected<RequestPtr> send(ElementType type, const void *data, int64_t count, int peer,
                            int tag) override {
    if (Error e = checkMessage("send to", count, peer, tag))
      return e;
    auto r = std::make_unique<MpiRequest>(stats_, "send", count * elementSize(type));
    stats_.bytesSent += count * elementSize(type);
    int code = MPI_Isend(data, static_cast<int>(count), datatype(type), peer, tag,
                         comm, &r->request);
    return started(std::move(r), code);
  }

  Expected<RequestPtr> recv(ElementType type, void *data, int64_t count, int peer,
                            int tag) override {
    if (Error e = checkMessage("receive from", count, peer, tag))
      return e;
    auto r = std::make_unique<MpiRequest>(stats_, "receive", count * elementSize(type));
    stats_.bytesReceived += count * elementSize(type);
    int code = MPI_Irecv(data, static_cast<int>(count), datatype(type), peer, tag,
                         comm, &r->request);
    return started(std::move(r), code);
  }

  Expected<std::unique_ptr<Communicator>> split(int color, int key) override {
    MPI_Comm part = MPI_COMM_NULL;
    if (int code = MPI_Comm_split(comm, color, key, &part); code != MPI_SUCCESS)
      return mpiError("splitting the communicator", code);
    MPI_Comm_set_errhandler(part, MPI_ERRORS_RETURN);
    return std::unique_ptr<Communicator>(new MpiComm(part));
  }

  [[noreturn]] void abort(const std::string &message) override {
    std::fprintf(stderr, "rank %d: %s\n", worldRank, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);
  }

private:
  Expected<RequestPtr> started(std::unique_ptr<MpiRequest> r, int code) {
    if (code != MPI_SUCCESS)
      return mpiError(r->name(), code);
    return RequestPtr(std::move(r));
  }
  /// The shared checks, and MPI's int range for counts.
  static Error checkCount(const char *op, ElementType type, int64_t count, bool sums) {
    if (Error e = checkElements(op, type, count, sums))
      return e;
    if (!fitsInt(count))
      return Error::failure(std::string(op) + ": " + std::to_string(count) +
                            " elements exceed MPI's int range");
    return Error::success();
  }
  Error checkMessage(const char *what, int64_t count, int peer, int tag) const {
    if (peer < 0 || peer >= size_ || peer == rank_)
      return Error::failure(std::string(what) + " rank " + std::to_string(peer) + ": not a peer of rank " +
                            std::to_string(rank_) + " in a job of " + std::to_string(size_));
    if (!fitsInt(count) || tag < 0)
      return Error::failure(std::string(what) + " rank " + std::to_string(peer) +
                            ": invalid count or tag");
    return Error::success();
  }
  MPI_Comm comm;
  int rank_ = 0, size_ = 1, worldRank = 0;
};

/// MPI_Finalize at exit, once the program's objects are gone.
void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    MPI_Finalize();
}

} // namespace

Expected<std::unique_ptr<Communicator>> mpiCommunicator(int &argc, char **&argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Kernels run on TBB workers and never call MPI; the main thread does,
    // and a pipeline rank's progress thread tests its messages meanwhile
    // when the library allows it (else the executor polls between chunks).
    if (int code = MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &threadLevel);
        code != MPI_SUCCESS)
      return mpiError("MPI_Init_thread", code);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    std::atexit(finalize);
  }
  return std::unique_ptr<Communicator>(new MpiComm(MPI_COMM_WORLD));
}

#endif // DSV3_HAVE_MPI

} // namespace dsv3::rt
