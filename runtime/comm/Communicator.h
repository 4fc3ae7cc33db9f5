//===- Communicator.h - collectives and messages between ranks --*- C++ -*-===//
//
// The runtime's view of a distributed engine: the ranks of one job and the
// operations compiled code and the trainer need between them (all-reduce,
// all-gather, reduce-scatter, all-to-all with variable counts, send and
// receive). Every operation starts nonblocking and returns a Request to
// wait on, so that compiled code can move the start and the wait apart and
// compute in between. Backends: one process (size 1, what runs without a
// launcher) and MPI (runtime/comm/Mpi.h); a NCCL backend implements the
// same interface later. Part of the runtime core: no LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_COMM_COMMUNICATOR_H
#define DSV3_RUNTIME_COMM_COMMUNICATOR_H

#include "runtime/abi/Abi.h"
#include "runtime/support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace dsv3::rt {

/// A started operation. Its buffers belong to the caller and must stay
/// alive and untouched until wait() returned.
class Request {
public:
  virtual ~Request() = default;
  /// Blocks until the operation completed on this rank.
  virtual Error wait() = 0;
  /// Whether the operation completed, without blocking. Under MPI this is
  /// also a polling point: MPI moves started operations on only inside its
  /// calls, so code that computes between a start and its wait calls this
  /// to let the transfer progress.
  virtual Expected<bool> test() = 0;
};
using RequestPtr = std::unique_ptr<Request>;

/// What a rank moved and how long it waited, since the last reset: the
/// all-to-all volume is what expert parallelism costs.
struct CommStats {
  int64_t bytesSent = 0;     ///< to other ranks (all-to-all, send)
  int64_t bytesReceived = 0; ///< from other ranks (all-to-all, recv)
  double waitSeconds = 0;    ///< inside Request::wait
  /// All-to-all exchanges: how many, the seconds from each start to its
  /// completion (in flight), and the part of that spent blocked in wait
  /// (exposed: compute ran during the rest).
  int64_t allToAlls = 0;
  double allToAllFlightSeconds = 0, allToAllExposedSeconds = 0;
};

/// A measurement aid, off by default: ranks that share one machine see no
/// real cross-node link, so with a link model every request between ranks
/// completes no earlier than `latencySeconds + bytes / bytesPerSecond`
/// after its start (bytes: what this rank sends over the link; a ring for
/// sums). It makes communication long enough to observe what compute hides.
struct LinkModel {
  double bytesPerSecond = 0, latencySeconds = 0;
  bool enabled() const { return bytesPerSecond > 0 || latencySeconds > 0; }
  /// Modeled seconds for `bytes`.
  double seconds(int64_t bytes) const {
    return latencySeconds + (bytesPerSecond > 0 ? double(bytes) / bytesPerSecond : 0.0);
  }
};
/// "bw=GB/s,lat=us" (either may be left out) or an error naming the text.
Expected<LinkModel> parseLinkModel(const std::string &text);
/// The process's link model (every communicator's requests follow it).
void setLinkModel(const LinkModel &model);
const LinkModel &linkModel();

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "single-process" or "mpi", for messages and metrics.
  virtual std::string backend() const = 0;
  /// Whether a second thread may start and test operations while the main
  /// thread (compiled code) runs others: what a progress thread needs
  /// (MPI_THREAD_MULTIPLE under MPI).
  virtual bool threadSafe() const = 0;

  /// Sums `count` elements of `data` over all ranks, in place.
  virtual Expected<RequestPtr> allReduceSum(ElementType type, void *data, int64_t count) = 0;
  /// Rank r's `count` elements land at recv[r * count].
  virtual Expected<RequestPtr> allGather(ElementType type, const void *send, void *recv,
                                         int64_t count) = 0;
  /// Sums `send` ([size * count]) over ranks; rank r keeps block r in
  /// `recv` ([count]).
  virtual Expected<RequestPtr> reduceScatterSum(ElementType type, const void *send, void *recv,
                                                int64_t count) = 0;
  /// Sends sendCounts[p] elements starting at element sendOffsets[p] to
  /// each rank p, and receives recvCounts[p] elements from rank p at
  /// element recvOffsets[p]. The count vectors are copied.
  virtual Expected<RequestPtr> allToAllV(ElementType type, const void *send,
                                         const std::vector<int64_t> &sendCounts,
                                         const std::vector<int64_t> &sendOffsets, void *recv,
                                         const std::vector<int64_t> &recvCounts,
                                         const std::vector<int64_t> &recvOffsets) = 0;
  virtual Expected<RequestPtr> send(ElementType type, const void *data, int64_t count, int peer,
                                    int tag) = 0;
  virtual Expected<RequestPtr> recv(ElementType type, void *data, int64_t count, int peer,
                                    int tag) = 0;

  /// The communicator of the ranks that pass the same `color`, ordered by
  /// `key` (MPI_Comm_split): how a job carves its data- and expert-parallel
  /// groups out of the world. Every rank of this communicator must call it.
  virtual Expected<std::unique_ptr<Communicator>> split(int color, int key) = 0;

  /// Ends the job on every rank with `message` (prefixed by this rank) on
  /// stderr: a rank that cannot go on must not leave its peers waiting.
  [[noreturn]] virtual void abort(const std::string &message) = 0;

  /// Lets started operations move on without waiting for any (MPI
  /// progresses nonblocking operations only inside its calls). Callable
  /// from a second thread when threadSafe().
  virtual void progress() {}

  CommStats &stats() { return stats_; }

  /// Starts `op` and waits for it: the blocking form.
  static Error complete(Expected<RequestPtr> op);

protected:
  /// Checks a count, and for sums the element type (f32 or i64); the error
  /// starts with "`op`: " when `op` is not empty.
  static Error checkElements(const std::string &op, ElementType type, int64_t count, bool sums);
  /// Checks the arguments every backend shares; the error names `op`.
  Error checkAllToAll(const std::vector<int64_t> &sendCounts,
                      const std::vector<int64_t> &sendOffsets,
                      const std::vector<int64_t> &recvCounts,
                      const std::vector<int64_t> &recvOffsets) const;
  CommStats stats_;
};

/// The communicator of a job of one process: collectives copy or do
/// nothing; messages have no peer.
std::unique_ptr<Communicator> singleProcessCommunicator();

/// A request that is already complete.
RequestPtr completedRequest();

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_COMM_COMMUNICATOR_H
