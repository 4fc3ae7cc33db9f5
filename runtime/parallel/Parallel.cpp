//===- Parallel.cpp - one job's ranks and what they share -----------------===//
#include "runtime/parallel/Parallel.h"

#include "runtime/comm/Groups.h"

#include <cstring>

namespace dsv3::rt {

Expected<std::unique_ptr<ProcessGroups>> ProcessGroups::create(std::unique_ptr<Communicator> world,
                                                               const ParallelPlan &plan) {
  std::unique_ptr<ProcessGroups> g(new ProcessGroups());
  g->plan_ = plan;
  int w = world->rank();
  int ep = static_cast<int>(plan.expert);
  int replica = w / ep, index = w % ep;
  auto data = world->split(/*color=*/index, /*key=*/replica);
  if (!data)
    return data.takeError();
  auto expert = world->split(/*color=*/replica, /*key=*/index);
  if (!expert)
    return expert.takeError();
  g->world_ = std::move(world);
  g->data_ = std::move(*data);
  g->expert_ = std::move(*expert);
  setProcessGroup(CommGroup::World, g->world_.get());
  setProcessGroup(CommGroup::Data, g->data_.get());
  setProcessGroup(CommGroup::Expert, g->expert_.get());
  return g;
}

ProcessGroups::~ProcessGroups() {
  for (CommGroup group : {CommGroup::World, CommGroup::Data, CommGroup::Expert})
    setProcessGroup(group, nullptr);
}

void placeShards(ParamLayout &layout, int64_t expertRank) {
  for (ParamSlot &s : layout.slots)
    s.stackBase = s.shard == "expert" && !s.shape.empty() ? expertRank * s.shape[0] : 0;
}

std::vector<int64_t> replicaRows(const std::vector<int64_t> &batch, int64_t rows, int64_t cols,
                                 const ProcessGroups &groups) {
  int64_t per = rows / groups.plan().data, first = groups.dataRank() * per;
  return std::vector<int64_t>(batch.begin() + first * cols, batch.begin() + (first + per) * cols);
}

namespace {

bool isLoss(const std::string &role) {
  return role == "loss" || role == "mtp_loss" || role == "balance_loss" || role == "total_loss";
}
bool isPerToken(const std::string &role) {
  return role == "logits" || role == "mtp_logits" || role == "expert_ids";
}

} // namespace

Error gatherOutputs(const EntryPoint &entry, OutputBuffers &local, const ParamLayout &layout,
                    ProcessGroups &groups, EntryPoint &global,
                    std::unique_ptr<OutputBuffers> &buffers) {
  const ParallelPlan &plan = groups.plan();
  global = entry;
  // The job-wide shape of each output.
  for (OutputSlot &o : global.outputs) {
    if (o.role == "gradient") {
      const ParamSlot *s = layout.find(o.param);
      if (!s)
        return Error::failure("gradient '" + o.name + "' of unknown parameter '" + o.param + "'");
      if (s->shard == "expert")
        o.shape[0] *= plan.expert;
    } else if (isPerToken(o.role)) {
      o.shape[0] *= plan.data;
    } else if (!isLoss(o.role) && plan.data > 1) {
      return Error::failure("output '" + o.name + "' (" + o.role +
                            ") has no rule to combine it across data-parallel replicas");
    }
  }
  buffers = std::make_unique<OutputBuffers>(global);
  float scale = 1.0f / static_cast<float>(plan.data * plan.expert);
  for (size_t i = 0; i < entry.outputs.size(); ++i) {
    const OutputSlot &o = entry.outputs[i];
    HostTensor &in = local.tensors[i];
    HostTensor &out = buffers->tensors[i];
    int64_t n = in.numElements();
    if (o.role == "gradient") {
      const ParamSlot *s = layout.find(o.param);
      bool sharded = s->shard == "expert";
      // Replicated parameters: every rank contributed; experts: the ranks
      // of the data group holding the same block did.
      Communicator &sum = sharded ? groups.data() : groups.world();
      if (Error e = Communicator::complete(sum.allReduceSum(ElementType::F32, in.f32(), n)))
        return e;
      for (int64_t k = 0; k < n; ++k)
        in.f32()[k] *= scale;
      if (sharded) {
        if (Error e = Communicator::complete(
                groups.expert().allGather(ElementType::F32, in.f32(), out.f32(), n)))
          return e;
      } else {
        std::memcpy(out.f32(), in.f32(), n * sizeof(float));
      }
    } else if (isLoss(o.role)) {
      if (Error e = Communicator::complete(groups.data().allReduceSum(ElementType::F32, in.f32(), n)))
        return e;
      for (int64_t k = 0; k < n; ++k)
        out.f32()[k] = in.f32()[k] / static_cast<float>(plan.data);
    } else if (isPerToken(o.role)) {
      if (Error e = Communicator::complete(
              groups.data().allGather(in.type, in.bytes.data(), out.bytes.data(), n)))
        return e;
    } else {
      std::memcpy(out.bytes.data(), in.bytes.data(), in.bytes.size());
    }
  }
  return Error::success();
}

} // namespace dsv3::rt
