//===- JitModule.cpp - JIT-compiled dsv3 module ---------------------------===//
#include "runtime/jit/JitModule.h"

#include "runtime/kernels/Kernels.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/Support/TargetSelect.h"

using namespace mlir;

namespace dsv3 {

int64_t ParamSlot::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

llvm::Expected<ParamLayout> readParamLayout(ModuleOp module) {
  auto entries = module->getAttrOfType<ArrayAttr>("dsv3.param_layout");
  auto count = module->getAttrOfType<IntegerAttr>("dsv3.param_count");
  if (!entries || !count)
    return llvm::createStringError(
        "module has no parameter layout (dsv3-materialize-params did not run)");
  ParamLayout layout;
  layout.totalElements = count.getInt();
  for (Attribute a : entries) {
    auto dict = cast<DictionaryAttr>(a);
    ParamSlot slot;
    slot.name = dict.getAs<StringAttr>("name").str();
    slot.offset = dict.getAs<IntegerAttr>("offset").getInt();
    auto shape = dict.getAs<DenseI64ArrayAttr>("shape").asArrayRef();
    slot.shape.assign(shape.begin(), shape.end());
    layout.slots.push_back(std::move(slot));
  }
  return layout;
}

llvm::Expected<std::unique_ptr<JitModule>> JitModule::compile(ModuleOp module,
                                                              unsigned optLevel) {
  static bool targetsReady = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)targetsReady;

  auto jit = std::unique_ptr<JitModule>(new JitModule());
  auto layout = readParamLayout(module);
  if (!layout)
    return layout.takeError();
  jit->layout_ = std::move(*layout);
  for (auto fn : module.getOps<LLVM::LLVMFuncOp>()) {
    auto outputs = fn->getAttrOfType<ArrayAttr>("dsv3.outputs");
    // FuncToLLVM copies attributes onto the C-interface wrapper too.
    if (!outputs || fn.isExternal() || fn.getName().starts_with("_mlir_ciface_"))
      continue;
    EntryPoint e;
    e.name = fn.getName().str();
    for (Attribute o : outputs)
      e.outputs.push_back(cast<StringAttr>(o).str());
    jit->entries_.push_back(std::move(e));
  }

  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  module->getContext()->appendDialectRegistry(registry);

  auto tmBuilder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!tmBuilder)
    return tmBuilder.takeError();
  llvm::CodeGenOptLevel codeGenLevel = optLevel >= 3
                                           ? llvm::CodeGenOptLevel::Aggressive
                                           : llvm::CodeGenOptLevel::Default;
  tmBuilder->setCodeGenOptLevel(codeGenLevel);
  auto tm = tmBuilder->createTargetMachine();
  if (!tm)
    return tm.takeError();
  // The transformer is a function_ref in the options: keep it alive here.
  std::function<llvm::Error(llvm::Module *)> optimize =
      makeOptimizingTransformer(optLevel, /*sizeLevel=*/0, tm->get());
  ExecutionEngineOptions options;
  options.transformer = optimize;
  options.jitCodeGenOptLevel = codeGenLevel;
  auto engine = ExecutionEngine::create(module, options, std::move(*tm));
  if (!engine)
    return engine.takeError();
  jit->engine_ = std::move(*engine);
  jit->engine_->registerSymbols([](llvm::orc::MangleAndInterner interner) {
    llvm::orc::SymbolMap map;
    for (const rt::KernelSymbol *s = rt::kernelSymbols(); s->name; ++s)
      map[interner(s->name)] = {llvm::orc::ExecutorAddr::fromPtr(s->address),
                                llvm::JITSymbolFlags::Exported};
    // Copies between differently laid-out buffers lower to this MLIR
    // runtime helper.
    map[interner("memrefCopy")] = {llvm::orc::ExecutorAddr::fromPtr(&memrefCopy),
                                   llvm::JITSymbolFlags::Exported};
    return map;
  });
  // Materialise now, so that compile time is not charged to the first call.
  for (EntryPoint &e : jit->entries_) {
    auto fn = jit->engine_->lookupPacked("_mlir_ciface_" + e.name);
    if (!fn)
      return fn.takeError();
    e.packed = *fn;
  }
  return jit;
}

OutputBuffers::OutputBuffers(const EntryPoint &entry,
                             const std::vector<std::vector<int64_t>> &shapes)
    : floats(shapes.size()), ints(shapes.size()) {
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : shapes[i])
      n *= d;
    if (llvm::StringRef(entry.outputs[i]).starts_with("topk_ids.")) {
      ints[i].assign(n, 0);
      args.push_back({ints[i].data(), shapes[i]});
    } else {
      floats[i].assign(n, 0.f);
      args.push_back({floats[i].data(), shapes[i]});
    }
  }
}

const EntryPoint *JitModule::entry(llvm::StringRef name) const {
  for (const EntryPoint &e : entries_)
    if (e.name == name)
      return &e;
  return nullptr;
}

namespace {
/// A memref descriptor laid out as MLIR's StridedMemRefType<T, rank>.
std::vector<int64_t> descriptor(void *data, llvm::ArrayRef<int64_t> shape) {
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

llvm::Error JitModule::call(llvm::StringRef name, float *params,
                            llvm::ArrayRef<BufferArg> inputs,
                            llvm::ArrayRef<BufferArg> outputs) {
  const EntryPoint *e = entry(name);
  if (!e)
    return llvm::createStringError("no entry point '" + name.str() + "'");
  if (outputs.size() != e->outputs.size())
    return llvm::createStringError("entry point '" + name.str() + "' has " +
                                   std::to_string(e->outputs.size()) +
                                   " outputs, got " +
                                   std::to_string(outputs.size()));
  std::vector<std::vector<int64_t>> descs;
  descs.push_back(descriptor(params, {std::max<int64_t>(layout_.totalElements, 1)}));
  for (const BufferArg &b : llvm::concat<const BufferArg>(inputs, outputs))
    descs.push_back(descriptor(b.data, b.shape));
  // The packed C-interface wrapper takes one pointer per argument, each
  // pointing at that argument: here, a pointer to a descriptor.
  std::vector<void *> descPtrs, args;
  for (auto &d : descs)
    descPtrs.push_back(d.data());
  for (auto &p : descPtrs)
    args.push_back(&p);
  e->packed(args.data());
  return llvm::Error::success();
}

} // namespace dsv3
