//===- Executable.cpp - calling compiled entry points ---------------------===//
#include "runtime/exec/Executable.h"

#include <algorithm>

namespace dsv3::rt {

namespace {

/// A memref descriptor laid out as MLIR's StridedMemRefType<T, rank>:
/// allocated and aligned pointers, offset, sizes, strides.
std::vector<int64_t> descriptor(void *data, const std::vector<int64_t> &shape) {
  std::vector<int64_t> d;
  d.push_back(reinterpret_cast<int64_t>(data));
  d.push_back(reinterpret_cast<int64_t>(data));
  d.push_back(0);
  d.insert(d.end(), shape.begin(), shape.end());
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  d.insert(d.end(), strides.begin(), strides.end());
  return d;
}

} // namespace

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "x" : "") + std::to_string(shape[i]);
  return s + "]";
}

const EntryPoint *Executable::entry(const std::string &name) const {
  for (const EntryPoint &e : entries_)
    if (e.name == name)
      return &e;
  return nullptr;
}

Error Executable::call(const std::string &name, float *params,
                       const std::vector<BufferArg> &inputs,
                       const std::vector<BufferArg> &outputs) const {
  const EntryPoint *e = entry(name);
  if (!e)
    return Error::failure("no entry point '" + name + "'");
  PackedEntry fn = packed_[e - entries_.data()];
  if (!fn)
    return Error::failure("entry point '" + name + "' is not loaded");
  // Compiled code reads and writes exactly the shapes of its signature:
  // anything else would run off a buffer's end.
  if (inputs.size() != e->inputs.size() || outputs.size() != e->outputs.size())
    return Error::failure("entry point '" + name + "' takes " +
                          std::to_string(e->inputs.size()) + " inputs and " +
                          std::to_string(e->outputs.size()) + " outputs, got " +
                          std::to_string(inputs.size()) + " and " +
                          std::to_string(outputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].shape != e->inputs[i].shape)
      return Error::failure("entry point '" + name + "': input '" + e->inputs[i].name +
                            "' is " + shapeString(e->inputs[i].shape) + ", got " +
                            shapeString(inputs[i].shape));
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].shape != e->outputs[i].shape)
      return Error::failure("entry point '" + name + "': output '" + e->outputs[i].name +
                            "' is " + shapeString(e->outputs[i].shape) + ", got " +
                            shapeString(outputs[i].shape));
  std::vector<std::vector<int64_t>> descs;
  descs.push_back(descriptor(params, {std::max<int64_t>(layout_.totalElements, 1)}));
  for (const BufferArg &b : inputs)
    descs.push_back(descriptor(b.data, b.shape));
  for (const BufferArg &b : outputs)
    descs.push_back(descriptor(b.data, b.shape));
  // The packed wrapper takes one pointer per argument, each pointing at
  // that argument: here, a pointer to a descriptor.
  std::vector<void *> descPtrs, args;
  for (auto &d : descs)
    descPtrs.push_back(d.data());
  for (auto &p : descPtrs)
    args.push_back(&p);
  fn(args.data());
  return Error::success();
}

} // namespace dsv3::rt
