//===- CommTransport.h - pipeline messages over a Communicator -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). The PipelineTransport of an MPI job:
// the ranks of one pipeline group (runtime/parallel) exchange hidden
// states and their gradients as nonblocking sends and receives tagged by
// (direction, stage, micro-batch). A receive is posted the first time the
// executor asks for it and tested, never waited on, so a rank whose input
// has not arrived reports "blocked" and polls again.
//
// Progress: MPI moves a started transfer on only inside MPI calls. The
// executor calls progress() at every step boundary, which tests every
// pending send (the polling points are the chunk boundaries: a transfer
// started before a chunk completes at the latest when the chunk ends and
// the rank polls again, not while compiled code runs).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H
#define DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H

#include "runtime/comm/Communicator.h"
#include "runtime/pipeline/Executor.h"

#include <list>
#include <map>

namespace dsv3::rt {

class CommunicatorTransport : public PipelineTransport {
public:
  /// `pipeline` must outlive this object; its rank r is pipeline rank r.
  explicit CommunicatorTransport(Communicator &pipeline) : comm(pipeline) {}
  ~CommunicatorTransport() override;

  Error send(int to, int64_t tag, const std::vector<float> &data) override;
  Expected<bool> tryReceive(int from, int64_t tag, std::vector<float> &data) override;
  Error progress() override;
  Error flush() override;

private:
  struct Pending {
    std::vector<float> data;
    RequestPtr request;
  };
  Expected<int> messageTag(int64_t tag) const;

  Communicator &comm;
  std::list<Pending> sends;                           // until completed
  std::map<std::pair<int, int64_t>, Pending> receives; // (from, tag), posted
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_COMMTRANSPORT_H
