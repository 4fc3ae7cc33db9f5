//===- Abi.cpp - element types and host buffers of entry points -----------===//
#include "runtime/abi/Abi.h"

namespace dsv3::rt {

const char *elementTypeName(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return "f32";
  case ElementType::BF16:
    return "bf16";
  case ElementType::I64:
    return "i64";
  }
  return "?";
}

bool parseElementType(const std::string &name, ElementType &type) {
  for (ElementType t : {ElementType::F32, ElementType::BF16, ElementType::I64})
    if (name == elementTypeName(t)) {
      type = t;
      return true;
    }
  return false;
}

size_t elementSize(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return 4;
  case ElementType::BF16:
    return 2;
  case ElementType::I64:
    return 8;
  }
  return 0;
}

int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

HostTensor::HostTensor(ElementType type, std::vector<int64_t> shape)
    : type(type), shape(std::move(shape)),
      bytes(rt::numElements(this->shape) * elementSize(type), 0) {}

OutputBuffers::OutputBuffers(const EntryPoint &entry) {
  tensors.reserve(entry.outputs.size());
  for (const OutputSlot &o : entry.outputs)
    tensors.emplace_back(o.type, o.shape);
  for (HostTensor &t : tensors)
    args.push_back(t.arg());
}

} // namespace dsv3::rt
