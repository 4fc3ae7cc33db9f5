//===- JitModule.cpp - JIT-compiled dsv3 module ---------------------------===//
#include "runtime/jit/JitModule.h"

#include "runtime/abi/Manifest.h"
#include "runtime/comm/CommKernels.h"
#include "runtime/kernels/Kernels.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Config/llvm-config.h"

#include <unistd.h>

using namespace mlir;

namespace dsv3 {

llvm::Expected<rt::ParamLayout> readParamLayout(ModuleOp module) {
  auto entries = module->getAttrOfType<ArrayAttr>("dsv3.param_layout");
  auto count = module->getAttrOfType<IntegerAttr>("dsv3.param_count");
  if (!entries || !count)
    return llvm::createStringError(
        "module has no parameter layout (dsv3-materialize-params did not run)");
  rt::ParamLayout layout;
  layout.totalElements = count.getInt();
  for (Attribute a : entries) {
    auto dict = cast<DictionaryAttr>(a);
    rt::ParamSlot slot;
    slot.name = dict.getAs<StringAttr>("name").str();
    slot.offset = dict.getAs<IntegerAttr>("offset").getInt();
    auto shape = dict.getAs<DenseI64ArrayAttr>("shape").asArrayRef();
    slot.shape.assign(shape.begin(), shape.end());
    if (auto role = dict.getAs<StringAttr>("role"))
      slot.role = role.str();
    if (auto shard = dict.getAs<StringAttr>("shard"))
      slot.shard = shard.str();
    layout.slots.push_back(std::move(slot));
  }
  return layout;
}

namespace {

/// The element type and shape of one dsv3.inputs/dsv3.outputs entry (as
/// dsv3-materialize-params writes them).
void readTypeAndShape(DictionaryAttr dict, rt::ElementType &type, std::vector<int64_t> &shape) {
  if (auto name = dict.getAs<StringAttr>("type"))
    rt::parseElementType(name.str(), type);
  if (auto dims = dict.getAs<DenseI64ArrayAttr>("shape"))
    shape.assign(dims.asArrayRef().begin(), dims.asArrayRef().end());
}

} // namespace

std::vector<rt::EntryPoint> readEntryPoints(ModuleOp module) {
  std::vector<rt::EntryPoint> entries;
  for (auto fn : module.getOps<LLVM::LLVMFuncOp>()) {
    auto inputs = fn->getAttrOfType<ArrayAttr>("dsv3.inputs");
    auto outputs = fn->getAttrOfType<ArrayAttr>("dsv3.outputs");
    // FuncToLLVM copies attributes onto the C-interface wrapper too.
    if (!inputs || !outputs || fn.isExternal() || fn.getName().starts_with("_mlir_ciface_"))
      continue;
    rt::EntryPoint e;
    e.name = fn.getName().str();
    for (Attribute i : inputs) {
      auto dict = cast<DictionaryAttr>(i);
      rt::InputSlot slot;
      slot.name = dict.getAs<StringAttr>("name").str();
      readTypeAndShape(dict, slot.type, slot.shape);
      e.inputs.push_back(std::move(slot));
    }
    for (Attribute o : outputs) {
      auto dict = cast<DictionaryAttr>(o);
      rt::OutputSlot slot;
      slot.name = dict.getAs<StringAttr>("name").str();
      slot.role = dict.getAs<StringAttr>("role").str();
      if (auto param = dict.getAs<StringAttr>("param"))
        slot.param = param.str();
      readTypeAndShape(dict, slot.type, slot.shape);
      e.outputs.push_back(std::move(slot));
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

namespace {

/// The runtime symbols JIT code calls: microkernels, collectives and MLIR's
/// memrefCopy.
llvm::orc::SymbolMap runtimeSymbols(llvm::orc::MangleAndInterner &interner) {
  llvm::orc::SymbolMap map;
  for (const rt::KernelSymbol *s = rt::kernelSymbols(); s->name; ++s)
    map[interner(s->name)] = {llvm::orc::ExecutorAddr::fromPtr(s->address),
                              llvm::JITSymbolFlags::Exported};
  // Communication between ranks (runtime/comm).
  for (const rt::CommSymbol *s = rt::commSymbols(); s->name; ++s)
    map[interner(s->name)] = {llvm::orc::ExecutorAddr::fromPtr(s->address),
                              llvm::JITSymbolFlags::Exported};
  // Copies between differently laid-out buffers lower to this MLIR
  // runtime helper.
  map[interner("memrefCopy")] = {llvm::orc::ExecutorAddr::fromPtr(&memrefCopy),
                                 llvm::JITSymbolFlags::Exported};
  return map;
}

/// With DSV3C_PERF_MAP set, appends the JIT's functions to
/// /tmp/perf-<pid>.map (perf's convention for JIT code), so `perf report`
/// names the generated loop nests instead of showing raw addresses.
void writePerfMap(llvm::orc::LLJIT &jit, llvm::MemoryBufferRef object) {
  if (!std::getenv("DSV3C_PERF_MAP"))
    return;
  auto file = llvm::object::ObjectFile::createObjectFile(object);
  if (!file) {
    llvm::consumeError(file.takeError());
    return;
  }
  std::string path = "/tmp/perf-" + std::to_string(::getpid()) + ".map";
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_Append);
  if (ec)
    return;
  for (const llvm::object::SymbolRef &sym : (*file)->symbols()) {
    auto type = sym.getType();
    auto name = sym.getName();
    if (!type || *type != llvm::object::SymbolRef::ST_Function || !name) {
      if (!type)
        llvm::consumeError(type.takeError());
      if (!name)
        llvm::consumeError(name.takeError());
      continue;
    }
    auto address = jit.lookup(*name);
    if (!address) {
      llvm::consumeError(address.takeError());
      continue;
    }
    uint64_t size = llvm::object::ELFSymbolRef(sym).getSize();
    out << llvm::format_hex_no_prefix(address->getValue(), 1) << " "
        << llvm::format_hex_no_prefix(size, 1) << " " << *name << "\n";
  }
}

} // namespace

llvm::Expected<std::unique_ptr<JitModule>>
JitModule::load(llvm::StringRef objectPath, rt::ParamLayout layout,
                std::vector<rt::EntryPoint> entries) {
  static bool targetsReady = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)targetsReady;
  auto buffer = llvm::MemoryBuffer::getFile(objectPath);
  if (!buffer)
    return llvm::createStringError(objectPath.str() + ": " +
                                   buffer.getError().message());
  auto lljit = llvm::orc::LLJITBuilder().create();
  if (!lljit)
    return lljit.takeError();
  llvm::orc::JITDylib &lib = (*lljit)->getMainJITDylib();
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*lljit)->getDataLayout().getGlobalPrefix());
  if (!process)
    return process.takeError();
  lib.addGenerator(std::move(*process));
  llvm::orc::MangleAndInterner interner(lib.getExecutionSession(),
                                        (*lljit)->getDataLayout());
  if (llvm::Error e = lib.define(llvm::orc::absoluteSymbols(runtimeSymbols(interner))))
    return std::move(e);
  llvm::MemoryBufferRef objectRef = (*buffer)->getMemBufferRef();
  std::unique_ptr<llvm::MemoryBuffer> copy =
      llvm::MemoryBuffer::getMemBufferCopy(objectRef.getBuffer());
  if (llvm::Error e = (*lljit)->addObjectFile(std::move(*buffer)))
    return std::move(e);
  writePerfMap(**lljit, copy->getMemBufferRef());
  auto jit = std::unique_ptr<JitModule>(new JitModule(std::move(layout), std::move(entries)));
  for (size_t i = 0; i < jit->entries().size(); ++i) {
    // ExecutionEngine names the packed wrapper of f `_mlir_f`.
    auto sym = (*lljit)->lookup("_mlir__mlir_ciface_" + jit->entries()[i].name);
    if (!sym)
      return sym.takeError();
    jit->setPacked(i, sym->toPtr<rt::PackedEntry>());
  }
  jit->linked_ = std::move(*lljit);
  return jit;
}

llvm::Expected<std::unique_ptr<JitModule>>
JitModule::compile(ModuleOp module, unsigned optLevel, llvm::StringRef objectPath) {
  static bool targetsReady = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)targetsReady;

  auto layout = readParamLayout(module);
  if (!layout)
    return layout.takeError();
  auto jit = std::unique_ptr<JitModule>(new JitModule(std::move(*layout), readEntryPoints(module)));

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
  options.enableObjectDump = !objectPath.empty();
  auto engine = ExecutionEngine::create(module, options, std::move(*tm));
  if (!engine)
    return engine.takeError();
  jit->engine_ = std::move(*engine);
  jit->engine_->registerSymbols(
      [](llvm::orc::MangleAndInterner interner) { return runtimeSymbols(interner); });
  // Materialise now, so that compile time is not charged to the first call.
  for (size_t i = 0; i < jit->entries().size(); ++i) {
    auto fn = jit->engine_->lookupPacked("_mlir_ciface_" + jit->entries()[i].name);
    if (!fn)
      return fn.takeError();
    jit->setPacked(i, *fn);
  }
  if (!objectPath.empty()) {
    // Written under a temporary name and renamed: a reader never sees half.
    std::string tmp = objectPath.str() + ".tmp" + std::to_string(::getpid());
    // A cache that cannot be written only costs the next run a compile.
    jit->engine_->dumpToObjectFile(tmp);
    if (llvm::sys::fs::rename(tmp, objectPath))
      llvm::sys::fs::remove(tmp);
  }
  return jit;
}

//===----------------------------------------------------------------------===//
// CompileCache
//===----------------------------------------------------------------------===//

std::string CompileCache::defaultDirectory() {
  if (const char *dir = std::getenv("DSV3C_CACHE_DIR"))
    return dir;
  llvm::SmallString<256> path;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    path = xdg;
  else if (!llvm::sys::path::home_directory(path))
    return "";
  else
    llvm::sys::path::append(path, ".cache");
  llvm::sys::path::append(path, "dsv3c");
  return std::string(path);
}

std::string CompileCache::key(llvm::StringRef ir, llvm::StringRef options) const {
  llvm::SHA256 hash;
  hash.update(ir);
  hash.update(options);
  // This compiler's own build (its code generation and kernels: the
  // executable's size and time stamp change with every rebuild), the LLVM it
  // links, and the CPU the code is tuned for.
  static int anchor;
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, &anchor);
  llvm::sys::fs::file_status status;
  if (!llvm::sys::fs::status(exe, status))
    hash.update(exe + " " + std::to_string(status.getSize()) + " " +
                std::to_string(status.getLastModificationTime().time_since_epoch().count()));
  hash.update(LLVM_VERSION_STRING);
  hash.update(llvm::sys::getHostCPUName());
  for (auto &feature : llvm::sys::getHostCPUFeatures())
    if (feature.second)
      hash.update(feature.first());
  return llvm::toHex(hash.final(), /*LowerCase=*/true);
}

std::string CompileCache::objectPath(llvm::StringRef key) const {
  llvm::SmallString<256> path(dir_);
  llvm::sys::path::append(path, key + ".o");
  return std::string(path);
}

std::unique_ptr<JitModule> CompileCache::lookup(llvm::StringRef key) const {
  llvm::SmallString<256> path(dir_);
  llvm::sys::path::append(path, key + ".json");
  auto text = llvm::MemoryBuffer::getFile(path);
  if (!text)
    return nullptr;
  rt::Expected<rt::Manifest> manifest =
      rt::parseManifest((*text)->getBuffer().str(), std::string(path));
  if (!manifest) {
    // Say so: a cache whose entries never load silently compiles every time.
    llvm::WithColor::warning(llvm::errs(), "dsv3c")
        << "compile cache entry unreadable, compiling again: " << manifest.error().message()
        << "\n";
    return nullptr;
  }
  auto jit = JitModule::load(objectPath(key), std::move(manifest->layout),
                             std::move(manifest->entries));
  if (!jit) {
    llvm::consumeError(jit.takeError());
    return nullptr;
  }
  return std::move(*jit);
}

llvm::Error CompileCache::store(llvm::StringRef key, const JitModule &jit) const {
  rt::Manifest manifest{jit.layout(), jit.entries()};
  llvm::SmallString<256> path(dir_);
  llvm::sys::path::append(path, key + ".json");
  std::string tmp = std::string(path) + ".tmp" + std::to_string(::getpid());
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(tmp, ec);
    if (ec)
      return llvm::createStringError(tmp + ": " + ec.message());
    os << rt::writeManifest(manifest);
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmp, path))
    return llvm::createStringError(std::string(path) + ": " + ec.message());
  return llvm::Error::success();
}

} // namespace dsv3
