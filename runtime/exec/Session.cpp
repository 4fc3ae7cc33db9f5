//===- Session.cpp - the state a program keeps between compiled calls -----===//
#include "runtime/exec/Session.h"

#include <algorithm>
#include <cstring>

namespace dsv3::rt {

namespace {

/// The signature adamw_step must have over `n` parameters: params, grads,
/// two moments of one type and the hyper-parameters in; parameters and
/// moments out.
Expected<ElementType> checkAdamW(const EntryPoint &e, int64_t n) {
  auto mismatch = [&](const std::string &what) {
    return Error::failure("adamw_step does not fit this model: " + what);
  };
  if (e.inputs.size() != 5 || e.outputs.size() != 3)
    return mismatch("it takes " + std::to_string(e.inputs.size()) + " inputs and returns " +
                    std::to_string(e.outputs.size()) + " results, not 5 and 3");
  std::vector<int64_t> vec{n};
  ElementType moment = e.inputs[2].type;
  for (size_t i : {0, 1, 2, 3})
    if (e.inputs[i].shape != vec)
      return mismatch("input '" + e.inputs[i].name + "' is " + shapeString(e.inputs[i].shape) +
                      " for " + std::to_string(n) + " parameters");
  if (e.inputs[0].type != ElementType::F32 || e.inputs[1].type != ElementType::F32 ||
      e.inputs[3].type != moment || moment == ElementType::I64 ||
      e.outputs[1].type != moment || e.outputs[2].type != moment)
    return mismatch("its element types disagree");
  if (e.inputs[4].shape != std::vector<int64_t>{kNumAdamWHyper})
    return mismatch("it reads " + shapeString(e.inputs[4].shape) + " hyper-parameters, not [" +
                    std::to_string(kNumAdamWHyper) + "]");
  return moment;
}

} // namespace

Expected<std::unique_ptr<Session>> Session::create(const Executable &model,
                                                   const Executable *optimizer,
                                                   OptimizerShard shard) {
  ElementType momentType = ElementType::F32;
  if (shard.count < 1 || shard.index < 0 || shard.index >= shard.count)
    return Error::failure("optimizer shard " + std::to_string(shard.index) + " of " +
                          std::to_string(shard.count) + " does not exist");
  if (optimizer) {
    const EntryPoint *step = optimizer->entry("adamw_step");
    if (!step)
      return Error::failure("the optimizer executable has no adamw_step");
    // The buffer holds at least one element (MLIR needs a non-empty memref).
    auto type = checkAdamW(*step, shard.size(model.layout().totalElements));
    if (!type)
      return type.takeError();
    momentType = *type;
  }
  return std::unique_ptr<Session>(new Session(model, optimizer, shard, momentType));
}

Session::Session(const Executable &model, const Executable *optimizer, OptimizerShard shard,
                 ElementType momentType)
    : model(model), optimizer(optimizer), layout_(model.layout()), shard_(shard),
      params(std::max<int64_t>(model.layout().totalElements, 1), 0.f) {
  if (!optimizer)
    return;
  int64_t n = shard.size(model.layout().totalElements);
  size_t bytes = n * rt::elementSize(momentType);
  nextParams.assign(n, 0.f);
  if (shard.count > 1)
    shardParams.assign(n, 0.f);
  for (MomentState *s : {&current, &next}) {
    s->type = momentType;
    s->m.assign(bytes, 0);
    s->v.assign(bytes, 0);
  }
}

OutputBuffers &Session::outputs(const std::string &entry) {
  std::unique_ptr<OutputBuffers> &buffers = results[entry];
  if (!buffers) {
    static const EntryPoint none;
    const EntryPoint *e = model.entry(entry);
    buffers = std::make_unique<OutputBuffers>(e ? *e : none);
  }
  return *buffers;
}

Error Session::run(const std::string &entry, const std::vector<BufferArg> &inputs) {
  if (!model.entry(entry))
    return Error::failure("no entry point '" + entry + "'");
  return model.call(entry, params.data(), inputs, outputs(entry).args);
}

Error Session::optimizerStep(const std::vector<float> &grads, const float *hyper) {
  if (!optimizer)
    return Error::failure("this session has no optimizer step");
  int64_t total = static_cast<int64_t>(params.size());
  int64_t n = shard_.size(total), begin = shard_.begin(total), valid = shard_.valid(total);
  if (static_cast<int64_t>(grads.size()) != n ||
      current.m.size() != static_cast<size_t>(n) * current.elementSize())
    return Error::failure("optimizer step: " + std::to_string(grads.size()) +
                          " gradients and " + std::to_string(n) + " parameters for moments of " +
                          std::to_string(current.m.size() / current.elementSize()));
  // One shard steps the buffer itself; a slice steps a padded copy, so
  // that the compiled step never reads past the buffer.
  bool whole = shard_.count == 1;
  if (!whole) {
    std::copy_n(params.begin() + begin, valid, shardParams.begin());
    std::fill(shardParams.begin() + valid, shardParams.end(), 0.f);
  }
  float *before = whole ? params.data() : shardParams.data();
  if (Error e = optimizer->call(
          "adamw_step", before,
          {{before, {n}},
           {const_cast<float *>(grads.data()), {n}},
           {current.m.data(), {n}},
           {current.v.data(), {n}},
           {const_cast<float *>(hyper), {kNumAdamWHyper}}},
          {{nextParams.data(), {n}}, {next.m.data(), {n}}, {next.v.data(), {n}}}))
    return e;
  size_t es = current.elementSize();
  for (const ParamSlot &s : layout().slots) {
    if (s.role != "routing_bias")
      continue;
    // The part of the bias inside this shard, in shard coordinates.
    int64_t lo = std::max(s.offset, begin), hi = std::min(s.offset + s.numElements(), begin + valid);
    if (lo >= hi)
      continue;
    std::copy(before + (lo - begin), before + (hi - begin), nextParams.begin() + (lo - begin));
    std::memset(next.m.data() + (lo - begin) * es, 0, (hi - lo) * es);
    std::memset(next.v.data() + (lo - begin) * es, 0, (hi - lo) * es);
  }
  if (whole) {
    params.swap(nextParams);
  } else {
    std::copy_n(nextParams.begin(), valid, params.begin() + begin);
    shardParams.swap(nextParams);
  }
  std::swap(current, next);
  return Error::success();
}

} // namespace dsv3::rt
