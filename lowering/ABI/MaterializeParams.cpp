//===- MaterializeParams.cpp - flat parameter buffer and memref ABI -------===//
//
// Runs after convert-dsv3-to-linalg and before bufferization. Gives each
// dsv3.param a slice of one float32 buffer (the runtime fills it from the
// checkpoint and, for training, keeps gradients and optimizer state in
// buffers of the same layout) and rewrites public functions to take inputs
// and outputs as memrefs, so the JIT calls them through the C interface.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/Passes.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MathExtras.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3MATERIALIZEPARAMSPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

struct ParamSlot {
  int64_t offset;
  RankedTensorType type;
  ParamRole role;
};

MemRefType identityMemRef(Type t) {
  auto tensor = cast<RankedTensorType>(t);
  return MemRefType::get(tensor.getShape(), tensor.getElementType());
}

/// The runtime's name of an element type entry points may take or return.
std::optional<StringRef> abiElementType(Type t) {
  if (t.isF32())
    return StringRef("f32");
  if (t.isBF16())
    return StringRef("bf16");
  if (t.isInteger(64))
    return StringRef("i64");
  return std::nullopt;
}

/// `fields` plus the element type and shape of `t`, one entry of
/// dsv3.inputs or dsv3.outputs.
FailureOr<DictionaryAttr> signatureSlot(func::FuncOp func, Type t,
                                        SmallVector<NamedAttribute> fields) {
  MLIRContext *ctx = func.getContext();
  auto tensor = cast<RankedTensorType>(t);
  std::optional<StringRef> type = abiElementType(tensor.getElementType());
  if (!type)
    return func.emitOpError() << "entry points take and return f32, bf16 or i64 tensors, got "
                              << t;
  fields.push_back({StringAttr::get(ctx, "type"), StringAttr::get(ctx, *type)});
  fields.push_back({StringAttr::get(ctx, "shape"), DenseI64ArrayAttr::get(ctx, tensor.getShape())});
  return DictionaryAttr::get(ctx, fields);
}

struct DSV3MaterializeParamsPass
    : dsv3::impl::DSV3MaterializeParamsPassBase<DSV3MaterializeParamsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    if (alignment <= 0) {
      module.emitError() << "alignment must be positive";
      return signalPassFailure();
    }

    // Layout: first-use order, one slot per distinct parameter name.
    llvm::StringMap<ParamSlot> slots;
    SmallVector<Attribute> layout;
    int64_t total = 0;
    WalkResult walk = module.walk([&](ParamOp p) {
      std::string key = p.getName().str();
      auto type = p.getResult().getType();
      auto it = slots.find(key);
      if (it != slots.end()) {
        if (it->second.type != type) {
          p.emitOpError() << "parameter used with two types: " << it->second.type
                          << " and " << type;
          return WalkResult::interrupt();
        }
        if (it->second.role != p.getRoleOrWeight()) {
          p.emitOpError() << "parameter used with two roles: "
                          << stringifyParamRole(it->second.role) << " and "
                          << stringifyParamRole(p.getRoleOrWeight());
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      }
      int64_t offset = llvm::alignTo(total, alignment);
      slots[key] = {offset, type, p.getRoleOrWeight()};
      total = offset + type.getNumElements();
      NamedAttribute fields[] = {
          NamedAttribute(StringAttr::get(ctx, "name"), p.getNameAttr()),
          NamedAttribute(StringAttr::get(ctx, "offset"),
                         IntegerAttr::get(IntegerType::get(ctx, 64), offset)),
          NamedAttribute(StringAttr::get(ctx, "shape"),
                         DenseI64ArrayAttr::get(ctx, type.getShape())),
          NamedAttribute(StringAttr::get(ctx, "role"),
                         StringAttr::get(ctx, stringifyParamRole(p.getRoleOrWeight())))};
      SmallVector<NamedAttribute> entry(std::begin(fields), std::end(fields));
      if (auto shard = p.getShardAttr())
        entry.push_back(NamedAttribute(StringAttr::get(ctx, "shard"), shard));
      layout.push_back(DictionaryAttr::get(ctx, entry));
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return signalPassFailure();
    // A model without parameters still gets a 1-element buffer so the
    // calling convention does not change shape.
    auto paramsType = MemRefType::get({std::max<int64_t>(total, 1)},
                                      Float32Type::get(ctx));

    for (auto func : llvm::make_early_inc_range(module.getOps<func::FuncOp>())) {
      if (func.isExternal() || func.isPrivate())
        continue;
      if (failed(convertFunction(func, paramsType, slots)))
        return signalPassFailure();
    }
    module->setAttr("dsv3.param_layout", ArrayAttr::get(ctx, layout));
    module->setAttr("dsv3.param_count",
                    IntegerAttr::get(IntegerType::get(ctx, 64), total));
  }

  LogicalResult convertFunction(func::FuncOp func, MemRefType paramsType,
                                const llvm::StringMap<ParamSlot> &slots) {
    MLIRContext *ctx = func.getContext();
    FunctionType oldType = func.getFunctionType();
    for (Type t : llvm::concat<const Type>(oldType.getInputs(),
                                           oldType.getResults()))
      if (!isa<RankedTensorType>(t) ||
          !cast<RankedTensorType>(t).hasStaticShape())
        return func.emitOpError()
               << "entry points take and return statically shaped tensors, got "
               << t;

    // The signature travels to the runtime in its own terms (strings):
    // `dsv3.inputs` = [{name, type, shape}] from the argument attributes,
    // `dsv3.outputs` = [{name, role[, param], type, shape}] from the result
    // attributes.
    SmallVector<Attribute> inputSlots, outputSlots;
    for (unsigned i = 0; i < oldType.getNumInputs(); ++i) {
      auto name = func.getArgAttrOfType<StringAttr>(i, DSV3Dialect::kInputName);
      FailureOr<DictionaryAttr> slot = signatureSlot(
          func, oldType.getInput(i),
          {{StringAttr::get(ctx, "name"),
            name ? name : StringAttr::get(ctx, "in" + std::to_string(i))}});
      if (failed(slot))
        return failure();
      inputSlots.push_back(*slot);
    }
    for (unsigned i = 0; i < oldType.getNumResults(); ++i) {
      auto name = func.getResultAttrOfType<StringAttr>(i, DSV3Dialect::kOutputName);
      auto role = func.getResultAttrOfType<OutputRoleAttr>(i, DSV3Dialect::kOutputRole);
      auto param = func.getResultAttrOfType<StringAttr>(i, DSV3Dialect::kOutputParam);
      SmallVector<NamedAttribute> fields = {
          {StringAttr::get(ctx, "name"),
           name ? name : StringAttr::get(ctx, "out" + std::to_string(i))},
          {StringAttr::get(ctx, "role"),
           StringAttr::get(ctx, stringifyOutputRole(role ? role.getValue() : OutputRole::Value))}};
      if (param)
        fields.push_back({StringAttr::get(ctx, "param"), param});
      FailureOr<DictionaryAttr> slot = signatureSlot(func, oldType.getResult(i), fields);
      if (failed(slot))
        return failure();
      outputSlots.push_back(*slot);
    }

    Block &entry = func.front();
    Location loc = func.getLoc();
    unsigned numOld = entry.getNumArguments();
    SmallVector<Type> newInputs{paramsType};
    Value params = entry.addArgument(paramsType, loc);
    OpBuilder b = OpBuilder::atBlockBegin(&entry);
    for (unsigned i = 0; i < numOld; ++i) {
      BlockArgument old = entry.getArgument(i);
      MemRefType mt = identityMemRef(old.getType());
      newInputs.push_back(mt);
      Value m = entry.addArgument(mt, old.getLoc());
      Value t = bufferization::ToTensorOp::create(b, old.getLoc(), old.getType(),
                                                  m, UnitAttr::get(ctx));
      old.replaceAllUsesWith(t);
    }
    SmallVector<Value> outs;
    for (Type r : oldType.getResults()) {
      MemRefType mt = identityMemRef(r);
      newInputs.push_back(mt);
      outs.push_back(entry.addArgument(mt, loc));
    }
    entry.eraseArguments(0, numOld);

    // Parameters become to_tensor views of the flat buffer.
    SmallVector<ParamOp> params_;
    func.walk([&](ParamOp p) { params_.push_back(p); });
    for (ParamOp p : params_) {
      const ParamSlot &slot = slots.find(p.getName())->second;
      auto shape = slot.type.getShape();
      SmallVector<int64_t> strides(shape.size(), 1);
      for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
        strides[i] = strides[i + 1] * shape[i + 1];
      auto viewType = MemRefType::get(
          shape, slot.type.getElementType(),
          StridedLayoutAttr::get(ctx, slot.offset, strides));
      OpBuilder pb(p);
      Value view = memref::ReinterpretCastOp::create(
          pb, p.getLoc(), viewType, params, slot.offset, shape, strides);
      Value t = bufferization::ToTensorOp::create(pb, p.getLoc(), slot.type,
                                                  view, UnitAttr::get(ctx));
      p.replaceAllUsesWith(t);
      p.erase();
    }

    // Results are written into the caller's output buffers.
    SmallVector<func::ReturnOp> returns;
    func.walk([&](func::ReturnOp r) { returns.push_back(r); });
    for (func::ReturnOp r : returns) {
      OpBuilder rb(r);
      for (auto [v, out] : llvm::zip(r.getOperands(), outs))
        bufferization::MaterializeInDestinationOp::create(
            rb, r.getLoc(), TypeRange{}, v, out, /*restrict=*/true,
            /*writable=*/true);
      func::ReturnOp::create(rb, r.getLoc());
      r.erase();
    }

    func.setType(FunctionType::get(ctx, newInputs, {}));
    func.removeArgAttrsAttr();
    func.removeResAttrsAttr();
    func->setAttr("llvm.emit_c_interface", UnitAttr::get(ctx));
    func->setAttr("dsv3.inputs", ArrayAttr::get(ctx, inputSlots));
    func->setAttr("dsv3.outputs", ArrayAttr::get(ctx, outputSlots));
    return success();
  }
};

} // namespace
