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
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Config/llvm-config.h"

#include <unistd.h>

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

namespace {

/// The runtime symbols JIT code calls: microkernels and MLIR's memrefCopy.
llvm::orc::SymbolMap runtimeSymbols(llvm::orc::MangleAndInterner &interner) {
  llvm::orc::SymbolMap map;
  for (const rt::KernelSymbol *s = rt::kernelSymbols(); s->name; ++s)
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
JitModule::load(llvm::StringRef objectPath, ParamLayout layout,
                std::vector<EntryPoint> entries) {
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
  auto jit = std::unique_ptr<JitModule>(new JitModule());
  jit->layout_ = std::move(layout);
  jit->entries_ = std::move(entries);
  for (EntryPoint &e : jit->entries_) {
    // ExecutionEngine names the packed wrapper of f `_mlir_f`.
    auto sym = (*lljit)->lookup("_mlir__mlir_ciface_" + e.name);
    if (!sym)
      return sym.takeError();
    e.packed = sym->toPtr<void (*)(void **)>();
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
  options.enableObjectDump = !objectPath.empty();
  auto engine = ExecutionEngine::create(module, options, std::move(*tm));
  if (!engine)
    return engine.takeError();
  jit->engine_ = std::move(*engine);
  jit->engine_->registerSymbols(
      [](llvm::orc::MangleAndInterner interner) { return runtimeSymbols(interner); });
  // Materialise now, so that compile time is not charged to the first call.
  for (EntryPoint &e : jit->entries_) {
    auto fn = jit->engine_->lookupPacked("_mlir_ciface_" + e.name);
    if (!fn)
      return fn.takeError();
    e.packed = *fn;
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

std::unique_ptr<JitModule> CompileCache::lookup(llvm::StringRef key,
                                                llvm::json::Value &extra) const {
  llvm::SmallString<256> manifest(dir_);
  llvm::sys::path::append(manifest, key + ".json");
  auto text = llvm::MemoryBuffer::getFile(manifest);
  if (!text)
    return nullptr;
  auto json = llvm::json::parse((*text)->getBuffer());
  if (!json) {
    llvm::consumeError(json.takeError());
    return nullptr;
  }
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *slots = root ? root->getArray("params") : nullptr;
  const llvm::json::Array *entries = root ? root->getArray("entries") : nullptr;
  if (!slots || !entries || !root->getInteger("param_count"))
    return nullptr;
  ParamLayout layout;
  layout.totalElements = *root->getInteger("param_count");
  for (const llvm::json::Value &v : *slots) {
    const llvm::json::Object *o = v.getAsObject();
    if (!o || !o->getString("name") || !o->getInteger("offset") || !o->getArray("shape"))
      return nullptr;
    ParamSlot slot;
    slot.name = o->getString("name")->str();
    slot.offset = *o->getInteger("offset");
    for (const llvm::json::Value &d : *o->getArray("shape"))
      slot.shape.push_back(d.getAsInteger().value_or(0));
    layout.slots.push_back(std::move(slot));
  }
  std::vector<EntryPoint> points;
  for (const llvm::json::Value &v : *entries) {
    const llvm::json::Object *o = v.getAsObject();
    if (!o || !o->getString("name") || !o->getArray("outputs"))
      return nullptr;
    EntryPoint e;
    e.name = o->getString("name")->str();
    for (const llvm::json::Value &name : *o->getArray("outputs"))
      e.outputs.push_back(name.getAsString().value_or("").str());
    points.push_back(std::move(e));
  }
  auto jit = JitModule::load(objectPath(key), std::move(layout), std::move(points));
  if (!jit) {
    llvm::consumeError(jit.takeError());
    return nullptr;
  }
  if (const llvm::json::Value *e = root->get("extra"))
    extra = *e;
  return std::move(*jit);
}

llvm::Error CompileCache::store(llvm::StringRef key, const JitModule &jit,
                                llvm::json::Value extra) const {
  llvm::json::Array slots, entries;
  for (const ParamSlot &s : jit.layout().slots)
    slots.push_back(llvm::json::Object{{"name", s.name},
                                       {"offset", s.offset},
                                       {"shape", llvm::json::Array(s.shape)}});
  for (const EntryPoint &e : jit.entries())
    entries.push_back(llvm::json::Object{
        {"name", e.name}, {"outputs", llvm::json::Array(e.outputs)}});
  llvm::json::Object root{{"param_count", jit.layout().totalElements},
                          {"params", std::move(slots)},
                          {"entries", std::move(entries)},
                          {"extra", std::move(extra)}};
  llvm::SmallString<256> manifest(dir_);
  llvm::sys::path::append(manifest, key + ".json");
  std::string tmp = std::string(manifest) + ".tmp" + std::to_string(::getpid());
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(tmp, ec);
    if (ec)
      return llvm::createStringError(tmp + ": " + ec.message());
    os << llvm::json::Value(std::move(root));
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmp, manifest))
    return llvm::createStringError(std::string(manifest) + ": " + ec.message());
  return llvm::Error::success();
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
