//===- Artifact.cpp - ahead-of-time artifacts: shared object + manifest ---===//
//
// The form in which compiled code leaves the compiler: `DIR/model.so`,
// machine code for this host's CPU with one packed wrapper per entry point
// (`_dsv3_packed_<entry>(void **args)`, the calling convention of
// rt::Executable), and `DIR/manifest.json`, the rt::Manifest of its ABI plus
// what a runner needs (mode, training recipe, the hub config for checkpoints).
// The code is optimised exactly as the JIT optimises it (same transformer,
// same target machine), so both paths compute the same bits.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/Compiler.h"
#include "frontends/compiler/Recipe.h"

#include "frontends/model/ModelConfig.h"
#include "runtime/abi/Manifest.h"
#include "runtime/support/File.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Linker/Linker.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

#include <unistd.h>

using namespace mlir;

namespace dsv3 {
namespace {

constexpr const char *kPackedPrefix = "_dsv3_packed_";

/// `void _dsv3_packed_<name>(ptr args)`: loads argument i from args[i] (a
/// pointer to the argument) and calls `_mlir_ciface_<name>`, the convention
/// of MLIR's ExecutionEngine wrappers.
void addPackedWrapper(llvm::Module &module, llvm::StringRef name) {
  llvm::Function *callee = module.getFunction(("_mlir_ciface_" + name).str());
  llvm::LLVMContext &ctx = module.getContext();
  auto *ptrType = llvm::PointerType::get(ctx, 0);
  auto *type = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptrType}, false);
  auto *wrapper = llvm::Function::Create(type, llvm::GlobalValue::ExternalLinkage,
                                         kPackedPrefix + name, module);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", wrapper));
  std::vector<llvm::Value *> args;
  for (auto [i, param] : llvm::enumerate(callee->args())) {
    llvm::Value *slot = b.CreateConstGEP1_64(ptrType, wrapper->getArg(0), i);
    llvm::Value *argPtr = b.CreateLoad(ptrType, slot);
    args.push_back(b.CreateLoad(param.getType(), argPtr));
  }
  b.CreateCall(callee, args);
  b.CreateRetVoid();
}

/// Keeps only the packed wrappers visible outside the shared object, so
/// that two translated modules link without clashes.
void internalize(llvm::Module &module) {
  for (llvm::GlobalValue &g : module.global_values())
    if (!g.isDeclaration() && !g.getName().starts_with(kPackedPrefix))
      g.setLinkage(llvm::GlobalValue::InternalLinkage);
}

/// Translates, wraps and optimises one module as the JIT would.
llvm::Expected<std::unique_ptr<llvm::Module>>
translate(ModuleOp module, llvm::LLVMContext &ctx, llvm::TargetMachine &tm, unsigned optLevel) {
  auto llvmModule = translateModuleToLLVMIR(module, ctx);
  if (!llvmModule)
    return llvm::createStringError("translation to LLVM IR failed");
  for (const rt::EntryPoint &e : readEntryPoints(module))
    addPackedWrapper(*llvmModule, e.name);
  llvmModule->setDataLayout(tm.createDataLayout());
  llvmModule->setTargetTriple(tm.getTargetTriple());
  if (llvm::Error e = makeOptimizingTransformer(optLevel, /*sizeLevel=*/0, &tm)(llvmModule.get()))
    return std::move(e);
  internalize(*llvmModule);
  return llvmModule;
}

} // namespace

llvm::Error Compiler::writeArtifact(const ModelDescription &desc, const CompileOptions &options,
                                    const std::string &dir) {
  static bool targetsReady = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)targetsReady;

  auto module = import(desc, options);
  if (!module)
    return module.takeError();
  if (llvm::Error e = lower(**module, Phase::LLVM, options))
    return e;
  auto layout = readParamLayout(**module);
  if (!layout)
    return layout.takeError();
  std::vector<ModuleOp> modules{**module};
  std::vector<rt::EntryPoint> entries = readEntryPoints(**module);
  // train-step: the AdamW update over the same flat parameter buffer, one
  // more entry point of the same shared object.
  OwningOpRef<ModuleOp> adamw;
  if (options.mode == CompileMode::TrainStep) {
    auto lowered = lowerAdamW(std::max<int64_t>(layout->totalElements, 1), options.bf16Moments);
    if (!lowered)
      return lowered.takeError();
    adamw = std::move(*lowered);
    for (rt::EntryPoint &e : readEntryPoints(*adamw))
      entries.push_back(std::move(e));
    modules.push_back(*adamw);
  }

  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    return builder.takeError();
  auto level = options.optLevel >= 3 ? llvm::CodeGenOptLevel::Aggressive
                                     : llvm::CodeGenOptLevel::Default;
  builder->setCodeGenOptLevel(level);
  builder->setRelocationModel(llvm::Reloc::PIC_);
  auto tm = builder->createTargetMachine();
  if (!tm)
    return tm.takeError();

  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> linked;
  for (ModuleOp m : modules) {
    auto translated = translate(m, llvmContext, **tm, options.optLevel);
    if (!translated)
      return translated.takeError();
    if (!linked)
      linked = std::move(*translated);
    else if (llvm::Linker::linkModules(*linked, std::move(*translated)))
      return llvm::createStringError("internal error: linking the artifact's modules failed");
  }

  // Written into a fresh directory and renamed over `dir`: a reader never
  // sees a shared object next to another build's manifest.
  if (llvm::sys::fs::exists(dir) && !llvm::sys::fs::exists(dir + "/manifest.json"))
    return llvm::createStringError(dir + ": exists and is not a dsv3c artifact; refusing to "
                                         "replace it (choose another -o directory)");
  std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  llvm::sys::fs::remove_directories(tmp);
  if (std::error_code ec = llvm::sys::fs::create_directories(tmp))
    return llvm::createStringError(tmp + ": " + ec.message());
  auto fail = [&](const llvm::Twine &message) {
    llvm::sys::fs::remove_directories(tmp);
    return llvm::createStringError(message.str());
  };
  std::string object = tmp + "/model.o", shared = tmp + "/model.so";
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(object, ec, llvm::sys::fs::OF_None);
    if (ec)
      return fail(object + ": " + ec.message());
    llvm::legacy::PassManager pm;
    if ((*tm)->addPassesToEmitFile(pm, out, nullptr, llvm::CodeGenFileType::ObjectFile))
      return fail("internal error: the target cannot emit objects");
    pm.run(*linked);
    out.close();
    if (out.has_error()) {
      std::string message = out.error().message();
      out.clear_error();
      return fail(object + ": " + message);
    }
  }
  // Kernel and libm symbols stay undefined: the runner provides them.
  auto lld = llvm::sys::findProgramByName("ld.lld-22");
  if (!lld)
    lld = llvm::sys::findProgramByName("ld.lld");
  if (!lld)
    return fail("ld.lld (package lld-22) is needed to write artifacts");
  std::string message;
  std::vector<llvm::StringRef> argv{*lld, "-shared", "-o", shared, object};
  if (llvm::sys::ExecuteAndWait(*lld, argv, std::nullopt, {}, 0, 0, &message) != 0)
    return fail(dir + "/model.so: linking failed: " + message);
  llvm::sys::fs::remove(object);

  // The code is compiled for this CPU's instruction sets: a runner on a CPU
  // without one of them refuses the artifact instead of crashing.
  llvm::json::Array features;
  for (auto &feature : llvm::sys::getHostCPUFeatures())
    if (feature.second)
      features.push_back(feature.first().str());
  rt::Manifest manifest{std::move(*layout), std::move(entries), ""};
  llvm::json::Object extra{{"mode", modeName(options.mode)},
                           {"config_json", toHubConfigJSON(desc.config)},
                           {"target_cpu", llvm::sys::getHostCPUName()},
                           {"target_features", std::move(features)}};
  // A train-step artifact trains by the description's recipe unless the
  // runner's flags say otherwise.
  if (options.mode == CompileMode::TrainStep) {
    auto recipe = llvm::json::parse(rt::recipeJson(recipeTrainConfig(desc)));
    if (!recipe)
      return fail("internal error: " + llvm::toString(recipe.takeError()));
    extra["train"] = std::move(*recipe);
  }
  llvm::raw_string_ostream(manifest.extraJson) << llvm::json::Value(std::move(extra));
  std::string text = rt::writeManifest(manifest) + "\n";
  if (rt::Error e = rt::writeFileDurably(tmp + "/manifest.json", text.data(), text.size()))
    return fail(e.message());
  std::string old = dir + ".old-" + std::to_string(::getpid());
  bool hadOld = llvm::sys::fs::exists(dir);
  if (hadOld)
    if (std::error_code ec = llvm::sys::fs::rename(dir, old))
      return fail(dir + ": " + ec.message());
  if (std::error_code ec = llvm::sys::fs::rename(tmp, dir))
    return fail(dir + ": " + ec.message());
  if (hadOld)
    llvm::sys::fs::remove_directories(old);
  return llvm::Error::success();
}

} // namespace dsv3
