//===- DSV3Dialect.cpp - dsv3 dialect registration --------------*- C++ -*-===//
//
// Registers the ops and attributes generated from DSV3Ops.td. Verifiers live in
// DSV3Verifiers.cpp.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace dsv3;

#include "ir/DSV3/DSV3OpsDialect.cpp.inc"
#include "ir/DSV3/DSV3Enums.cpp.inc"
#include "ir/DSV3/DSV3Interfaces.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/DSV3/DSV3Attrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "ir/DSV3/DSV3Types.cpp.inc"

void DSV3Dialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/DSV3/DSV3Ops.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/DSV3/DSV3Attrs.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "ir/DSV3/DSV3Types.cpp.inc"
      >();
}

LogicalResult DSV3Dialect::verifyRegionArgAttribute(Operation *op, unsigned region,
                                                    unsigned argument, NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  if (name != kInputName)
    return op->emitOpError() << "unknown dsv3 argument attribute '" << name << "'";
  auto value = dyn_cast<StringAttr>(attr.getValue());
  if (!value || value.getValue().empty())
    return op->emitOpError() << "'" << name << "' of argument " << argument
                             << " must be a non-empty string";
  return success();
}

LogicalResult DSV3Dialect::verifyRegionResultAttribute(Operation *op, unsigned region,
                                                       unsigned result,
                                                       NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  if (name == kOutputName || name == kOutputParam) {
    if (!isa<StringAttr>(attr.getValue()))
      return op->emitOpError() << "'" << name << "' of result " << result
                               << " must be a string";
    return success();
  }
  if (name == kOutputRole) {
    auto role = dyn_cast<OutputRoleAttr>(attr.getValue());
    if (!role)
      return op->emitOpError() << "'" << name << "' of result " << result
                               << " must be a #dsv3.output_role";
    auto fn = dyn_cast<FunctionOpInterface>(op);
    if (fn && role.getValue() == OutputRole::Gradient &&
        !fn.getResultAttr(result, kOutputParam))
      return op->emitOpError() << "gradient result " << result << " names no '"
                               << kOutputParam << "'";
    return success();
  }
  return op->emitOpError() << "unknown dsv3 result attribute '" << name << "'";
}

void dsv3::setInput(FunctionOpInterface fn, unsigned index, StringRef name) {
  fn.setArgAttr(index, DSV3Dialect::kInputName, StringAttr::get(fn.getContext(), name));
}

void dsv3::setOutput(FunctionOpInterface fn, unsigned index, StringRef name, OutputRole role,
                     StringRef param) {
  MLIRContext *ctx = fn.getContext();
  fn.setResultAttr(index, DSV3Dialect::kOutputName, StringAttr::get(ctx, name));
  if (!param.empty())
    fn.setResultAttr(index, DSV3Dialect::kOutputParam, StringAttr::get(ctx, param));
  fn.setResultAttr(index, DSV3Dialect::kOutputRole, OutputRoleAttr::get(ctx, role));
}

bool dsv3::isFloatTensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && isa<FloatType>(t.getElementType());
}

#define GET_OP_CLASSES
#include "ir/DSV3/DSV3Ops.cpp.inc"
