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

#include <algorithm>
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
  /// "expert" when the slot is this rank's block of a stack sharded over
  /// the expert-parallel group (rank r holds stack indices r*n..(r+1)*n-1,
  /// n = shape[0]); empty for a whole parameter.
  std::string shard;
  /// The stack index of shape[0]'s first entry: set by the runtime from
  /// the rank (placeShards); 0 for whole parameters.
  int64_t stackBase = 0;
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

/// The scalar objectives a step returns, in the order tools list them.
inline const std::vector<std::string> &lossRoles() {
  static const std::vector<std::string> roles{"total_loss", "loss", "mtp_loss", "balance_loss"};
  return roles;
}
inline bool isLossRole(const std::string &role) {
  for (const std::string &r : lossRoles())
    if (r == role)
      return true;
  return false;
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

/// Sets each expert-sharded slot's stackBase for expert-parallel rank
/// `expertRank` (rank e holds stack indices e*n .. (e+1)*n-1).
inline void placeShards(ParamLayout &layout, int64_t expertRank) {
  for (ParamSlot &s : layout.slots)
    s.stackBase = s.shard == "expert" && !s.shape.empty() ? expertRank * s.shape[0] : 0;
}

/// The part of the flat parameter buffer whose optimizer state this
/// process keeps: slice `index` of `count` equal slices (ZeRO-1 shards the
/// state over the data-parallel ranks; one slice is the whole buffer). The
/// last slice may run past the buffer: its tail is padding.
struct OptimizerShard {
  int64_t index = 0, count = 1;
  /// Elements per slice of a buffer of `total` elements (at least 1).
  int64_t size(int64_t total) const {
    return std::max<int64_t>((std::max<int64_t>(total, 1) + count - 1) / count, 1);
  }
  int64_t begin(int64_t total) const { return index * size(total); }
  /// Elements of the slice that lie inside the buffer.
  int64_t valid(int64_t total) const {
    return std::clamp<int64_t>(std::max<int64_t>(total, 1) - begin(total), 0, size(total));
  }
};

/// A host buffer handed to or filled by compiled code: row-major and
/// contiguous.
struct BufferArg {
  void *data;
  std::vector<int64_t> shape;
};

/// Element types of entry-point arguments and results, as the compiler
/// spells them in a signature ("f32", "bf16", "i64").
enum class ElementType { F32, BF16, I64 };
const char *elementTypeName(ElementType type);
bool parseElementType(const std::string &name, ElementType &type);
size_t elementSize(ElementType type);

/// The output roles, as the dialect's OutputRole enum spells them
/// (ir/DSV3/DSV3Attrs.td; tests/unit/lowering checks that the lists agree).
inline const std::vector<std::string> &outputRoles() {
  static const std::vector<std::string> roles{
      "value",      "logits",     "loss",         "mtp_logits",   "mtp_loss",
      "balance_loss", "total_loss", "gradient", "expert_ids", "parameters",
      "first_moment", "second_moment", "activation", "saved", "cache_rows", "hidden"};
  return roles;
}

/// One argument of an entry point (after the parameter buffer): its name
/// ("input_ids", "segment_ids", "exp_avg", ...), element type and shape.
struct InputSlot {
  std::string name;
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  bool operator==(const InputSlot &o) const {
    return name == o.name && type == o.type && shape == o.shape;
  }
};

/// One result of an entry point: the name output files use, what it is
/// (an output role), the parameter it belongs to (a gradient's parameter;
/// for expert choices, the routing bias their loads update), its element
/// type and shape (scalars are []).
struct OutputSlot {
  std::string name;
  std::string role = "value";
  std::string param;
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  bool operator==(const OutputSlot &o) const {
    return name == o.name && role == o.role && param == o.param && type == o.type &&
           shape == o.shape;
  }
};

/// Number of elements of a shape ([] is a scalar: 1).
int64_t numElements(const std::vector<int64_t> &shape);

/// Signature of one entry point: `name(params, inputs..., outputs...)`,
/// every argument and result statically shaped and typed.
struct EntryPoint {
  std::string name;
  std::vector<InputSlot> inputs;
  std::vector<OutputSlot> outputs;
  ElementType outputType(size_t i) const { return outputs[i].type; }
};

/// A host buffer of one of the ABI's element types, zero-initialised.
struct HostTensor {
  HostTensor(ElementType type, std::vector<int64_t> shape);
  ElementType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  float *f32() { return reinterpret_cast<float *>(bytes.data()); }
  const float *f32() const { return reinterpret_cast<const float *>(bytes.data()); }
  int64_t *i64() { return reinterpret_cast<int64_t *>(bytes.data()); }
  int64_t numElements() const { return rt::numElements(shape); }
  BufferArg arg() { return {bytes.data(), shape}; }
};

/// Host buffers for every output of an entry point, typed and shaped by
/// its signature.
struct OutputBuffers {
  explicit OutputBuffers(const EntryPoint &entry);
  // `args` points into the buffers: a copy would point into the original.
  OutputBuffers(const OutputBuffers &) = delete;
  OutputBuffers &operator=(const OutputBuffers &) = delete;
  std::vector<HostTensor> tensors;
  std::vector<BufferArg> args;
  float *f32(size_t i) { return tensors[i].f32(); }
  int64_t *i64(size_t i) { return tensors[i].i64(); }
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
