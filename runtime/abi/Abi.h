//===- Abi.h - what compiled code and the runtime agree on ------*- C++ -*-===//
//
// The compiler/runtime contract, in plain C++ (the runtime core links no
// LLVM or MLIR): where each parameter lives in the flat float32 parameter
// buffer, the entry points a compiled module exports with their outputs, the
// host buffers passed to them, and the AdamW hyper-parameter slots of the
// compiled optimizer step. The compiler writes these facts (on the module by
// dsv3-materialize-params, then as a manifest, runtime/abi/Manifest.h); the
// runtime reads them.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_ABI_ABI_H
#define DSV3_RUNTIME_ABI_ABI_H

#include <cstdint>
#include <string>
#include <vector>

namespace dsv3::rt {

/// Where one parameter lives in the flat float32 parameter buffer.
struct ParamSlot {
  std::string name; // hub name; a '*' marks a stack over experts
  int64_t offset = 0;
  std::vector<int64_t> shape;
  /// What the parameter is for, as the dialect's ParamRole spells it
  /// ("weight", "norm", "routing_bias", ...): the runtime keys
  /// initialisation and training on it, never on the name.
  std::string role = "weight";
  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

/// The parameter roles, as the dialect's ParamRole enum spells them
/// (ir/DSV3/DSV3Attrs.td; tests/unit/lowering checks that the lists agree).
inline const std::vector<std::string> &paramRoles() {
  static const std::vector<std::string> roles{
      "weight", "embedding", "norm",   "attention",    "mlp",           "expert",
      "shared_expert", "router", "routing_bias", "head", "mtp_projection"};
  return roles;
}

/// The flat parameter buffer of a compiled module.
struct ParamLayout {
  std::vector<ParamSlot> slots;
  int64_t totalElements = 0;
  const ParamSlot *find(const std::string &name) const {
    for (const ParamSlot &s : slots)
      if (s.name == name)
        return &s;
    return nullptr;
  }
};

/// A host buffer handed to or filled by compiled code: row-major and
/// contiguous.
struct BufferArg {
  void *data;
  std::vector<int64_t> shape;
};

/// Element type of an entry point's output.
enum class ElementType { F32, I64 };

/// The output roles, as the dialect's OutputRole enum spells them
/// (ir/DSV3/DSV3Attrs.td; tests/unit/lowering checks that the lists agree).
inline const std::vector<std::string> &outputRoles() {
  static const std::vector<std::string> roles{
      "value",      "logits",     "loss",         "mtp_logits",   "mtp_loss",
      "balance_loss", "total_loss", "gradient", "expert_ids", "parameters",
      "first_moment", "second_moment"};
  return roles;
}

/// One result of an entry point: the name output files use, what it is
/// (an output role), and the parameter it belongs to (a gradient's
/// parameter; for expert choices, the routing bias their loads update).
struct OutputSlot {
  std::string name;
  std::string role = "value";
  std::string param;
  bool operator==(const OutputSlot &o) const {
    return name == o.name && role == o.role && param == o.param;
  }
};

/// Signature of one entry point: `name(params, inputs..., outputs...)`.
/// Expert choices are int64, all other outputs float32.
struct EntryPoint {
  std::string name;
  std::vector<OutputSlot> outputs;
  ElementType outputType(size_t i) const {
    return outputs[i].role == "expert_ids" ? ElementType::I64 : ElementType::F32;
  }
};

/// Host buffers for every output of an entry point, typed by the entry.
struct OutputBuffers {
  OutputBuffers(const EntryPoint &entry, const std::vector<std::vector<int64_t>> &shapes);
  // `args` points into the buffers: a copy would point into the original.
  OutputBuffers(const OutputBuffers &) = delete;
  OutputBuffers &operator=(const OutputBuffers &) = delete;
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<int64_t>> ints;
  std::vector<BufferArg> args;
};

/// Slots of the hyper-parameter vector the compiled `adamw_step` reads.
enum AdamWHyper : int64_t {
  kLearningRate,
  kBeta1,
  kBeta2,
  kEpsilon,
  kWeightDecay,
  kBiasCorrection1, // 1 - beta1^t
  kBiasCorrection2, // 1 - beta2^t
  kGradScale,       // global-norm clipping factor (1 when not clipping)
  kNumAdamWHyper
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_ABI_ABI_H
