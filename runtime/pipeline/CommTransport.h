//===- CommTransport.h - pipeline messages over a Communicator -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). The PipelineTransport of an MPI job:
// the ranks of one pipeline group (runtime/parallel) exchange hidden
// states and their gradients as nonblocking sends and receives tagged by
// (direction, stage, micro-batch). A receive is posted the first time the
// executor asks for it and tested, never waited on, so a rank whose input
// has not arrived reports "blocked" and polls again.
//
// Progress: MPI moves a started transfer on only inside MPI calls, and a
// hidden state above the eager size needs its sender to call MPI again
// after the receiver answered. When the communicator allows a second
// thread (MPI_THREAD_MULTIPLE), a progress thread tests every pending send
// and posted receive every `kPollInterval` while compiled code computes;
// otherwise the only polling points are the executor's step boundaries
// (progress()), and a message may wait for its sender's next chunk.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H
#define DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H

#include "runtime/comm/Communicator.h"
#include "runtime/pipeline/Executor.h"

#include <atomic>
#include <chrono>
#include <list>
#include <map>
#include <mutex>
#include <thread>

namespace dsv3::rt {

class CommunicatorTransport : public PipelineTransport {
public:
  static constexpr std::chrono::microseconds kPollInterval{50};

  /// `pipeline` must outlive this object; its rank r is pipeline rank r.
  /// `progressThread`: test pending messages from a second thread when the
  /// communicator allows it.
  explicit CommunicatorTransport(Communicator &pipeline, bool progressThread = true);
  ~CommunicatorTransport() override;

  std::string progressMode() const override {
    return poller.joinable() ? "a progress thread" : "polling between chunks";
  }

  Error send(int to, int64_t tag, std::vector<float> data) override;
  Expected<bool> tryReceive(int from, int64_t tag, std::vector<float> &data) override;
  Error progress() override;
  Error flush() override;

private:
  struct Pending {
    std::vector<float> data;
    RequestPtr request;
  };
  Expected<int> messageTag(int64_t tag) const;
  /// Tests every pending request once; the caller holds `mutex`.
  void testAll();

  Communicator &comm;
  std::mutex mutex; // guards the lists and the requests in them
  std::list<Pending> sends;                           // until completed
  std::map<std::pair<int, int64_t>, Pending> receives; // (from, tag), posted
  std::atomic<bool> stopping{false};
  std::thread poller;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H
