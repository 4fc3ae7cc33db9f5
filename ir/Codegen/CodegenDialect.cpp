//===- CodegenDialect.cpp - dsv3_codegen registration and verifier --------===//
//
// Registers dsv3_codegen.ukernel, verifies its two forms (tensors with
// results, memrefs without) and states its memory effects.
//
//===----------------------------------------------------------------------===//
#include "ir/Codegen/CodegenDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace dsv3::codegen;

#include "ir/Codegen/CodegenDialect.cpp.inc"

void CodegenDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/Codegen/CodegenOps.cpp.inc"
      >();
}

LogicalResult UkernelOp::verify() {
  bool tensors = llvm::all_of(getOutputs().getTypes(), [](Type t) {
    return isa<RankedTensorType>(t);
  });
  bool memrefs = llvm::all_of(getOutputs().getTypes(), [](Type t) {
    return isa<MemRefType>(t);
  });
  if (!tensors && !memrefs)
    return emitOpError() << "'outs' must be all tensors or all memrefs";
  if (memrefs && !getResults().empty())
    return emitOpError() << "has no results when 'outs' are memrefs";
  if (tensors && getResults().getTypes() != getOutputs().getTypes())
    return emitOpError() << "result types must be the types of 'outs'";
  return success();
}

/// On memrefs: reads every input buffer, writes every output buffer. On
/// tensors: pure (values in, values out).
namespace {
/// What collectives read and write besides their operands: the other
/// ranks' state.
struct CommunicationResource
    : public SideEffects::Resource::Base<CommunicationResource> {
  StringRef getName() final { return "dsv3.communication"; }
};
} // namespace

void UkernelOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>> &effects) {
  if (getCollective()) {
    effects.emplace_back(MemoryEffects::Read::get(), CommunicationResource::get());
    effects.emplace_back(MemoryEffects::Write::get(), CommunicationResource::get());
  }
  for (OpOperand &operand : getInputsMutable())
    if (isa<MemRefType>(operand.get().getType()))
      effects.emplace_back(MemoryEffects::Read::get(), &operand,
                           SideEffects::DefaultResource::get());
  for (OpOperand &operand : getOutputsMutable())
    if (isa<MemRefType>(operand.get().getType()))
      effects.emplace_back(MemoryEffects::Write::get(), &operand,
                           SideEffects::DefaultResource::get());
}

#define GET_OP_CLASSES
#include "ir/Codegen/CodegenOps.cpp.inc"
