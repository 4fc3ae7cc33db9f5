//===- Compiler.cpp - model description -> compiled module ----------------===//
#include "frontends/compiler/Compiler.h"
#include "frontends/compiler/ScheduleIR.h"

#include "frontends/import/ModelImporter.h"
#include "frontends/import/Optimizer.h"
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"
#include "runtime/io/Parameters.h"
#include "runtime/parallel/Parallel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"

using namespace mlir;

namespace dsv3 {

llvm::StringRef modeName(CompileMode mode) {
  switch (mode) {
  case CompileMode::Eval:
    return "eval";
  case CompileMode::Grad:
    return "grad";
  case CompileMode::TrainStep:
    return "train-step";
  case CompileMode::Generate:
    return "generate";
  }
  return "";
}

std::optional<CompileMode> parseMode(llvm::StringRef name) {
  for (CompileMode m : {CompileMode::Eval, CompileMode::Grad, CompileMode::TrainStep,
                        CompileMode::Generate})
    if (modeName(m) == name)
      return m;
  return std::nullopt;
}

namespace {

bool differentiates(CompileMode mode) {
  return mode == CompileMode::Grad || mode == CompileMode::TrainStep;
}

/// The pipeline's options for these compile options.
std::unique_ptr<DSV3PipelineOptions> pipelineOptions(const CompileOptions &options) {
  auto p = std::make_unique<DSV3PipelineOptions>();
  p->differentiate = differentiates(options.mode);
  p->fp8 = options.fp8.has_value();
  p->fp8Options = options.fp8.value_or("");
  p->ukernels = options.cpu.useUkernels;
  p->fuseElementwise = options.cpu.fuseElementwise;
  p->expertParallel = options.expertParallel;
  p->routingNodes = options.routingNodes;
  p->maxNodesPerToken = options.maxNodesPerToken;
  p->pipelineStages = options.pipelineStages;
  p->commOverlap = options.commOverlap;
  p->fusePairs = options.fusePairs;
  return p;
}

/// Writes `print`'s text to DIR/NAME, creating DIR.
llvm::Error writeDump(const std::string &dir, llvm::StringRef name,
                      llvm::function_ref<void(llvm::raw_ostream &)> print) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return llvm::createStringError(dir + ": " + ec.message());
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, name);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    return llvm::createStringError(std::string(path) + ": " + ec.message());
  print(os);
  return llvm::Error::success();
}

} // namespace

llvm::Error printLLVMIR(ModuleOp module, llvm::raw_ostream &os) {
  llvm::LLVMContext llvmContext;
  auto llvmModule = translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return llvm::createStringError("translation to LLVM IR failed");
  llvmModule->print(os, nullptr);
  return llvm::Error::success();
}

Compiler::Compiler() {
  registerPipelineDialects(registry);
  ctx = std::make_unique<MLIRContext>(registry);
  ctx->loadAllAvailableDialects();
  applyDefaultTimingManagerCLOptions(timingManager);
  rootTiming.emplace(timingManager.getRootScope());
}

Compiler::~Compiler() = default;

llvm::Expected<OwningOpRef<ModuleOp>> Compiler::import(const ModelDescription &desc,
                                                       const CompileOptions &options) {
  if (options.mode == CompileMode::Generate) {
    auto module = importGenerator(*ctx, desc.config, options.generate);
    if (!module)
      return llvm::createStringError(desc.path + ": " + llvm::toString(module.takeError()));
    return module;
  }
  ImportOptions io;
  io.batch = options.batch;
  io.seqLen = options.seqLen;
  io.packed = options.packed;
  if (differentiates(options.mode)) {
    io.mtpWeight = options.mtpWeight;
    io.balanceAlpha = options.balanceAlpha;
    io.pipelineStages = options.pipelineStages;
  }
  auto module = importModel(*ctx, desc.config, io);
  if (!module)
    return llvm::createStringError(
        (options.shapeSource.empty() ? desc.path : options.shapeSource) + ": " +
        llvm::toString(module.takeError()));
  if (differentiates(options.mode) && options.schedule) {
    if (options.schedule->stages != options.pipelineStages)
      return llvm::createStringError(
          "the pipeline schedule runs " + std::to_string(options.schedule->stages) +
          " stages, the module is split into " + std::to_string(options.pipelineStages));
    appendScheduleIR(**module, *options.schedule);
  }
  return module;
}

llvm::Error Compiler::lower(ModuleOp module, Phase to, const CompileOptions &options,
                            Phase from) {
  auto dump = [&](Phase phase) -> llvm::Error {
    if (options.dumpDir.empty())
      return llvm::Error::success();
    std::string name = std::to_string(static_cast<int>(phase)) + "-" +
                       phaseName(phase).str() + ".mlir";
    return writeDump(options.dumpDir, name, [&](llvm::raw_ostream &os) { module.print(os); });
  };
  if (from == Phase::DSV3)
    if (llvm::Error e = dump(Phase::DSV3))
      return e;
  for (Phase phase : {Phase::Tensor, Phase::Linalg, Phase::LLVM}) {
    if (phase <= from)
      continue;
    if (phase > to)
      break;
    PassManager pm(module->getName());
    if (failed(applyPassManagerCLOptions(pm)))
      return llvm::createStringError("invalid pass manager options");
    TimingScope phaseTiming = rootTiming->nest(phaseName(phase));
    pm.enableTiming(phaseTiming);
    std::string problem;
    auto error = [&](const llvm::Twine &msg) {
      problem = msg.str();
      return failure();
    };
    if (failed(buildPhase(pm, phase, *pipelineOptions(options), error)))
      return llvm::createStringError(problem);
    if (failed(pm.run(module)))
      return llvm::createStringError("pipeline phase '" + phaseName(phase).str() + "' failed");
    if (llvm::Error e = dump(phase))
      return e;
  }
  return llvm::Error::success();
}

llvm::Expected<CompiledModule>
Compiler::compile(const ModelDescription &desc, const CompileOptions &options,
                  const std::string &cacheDir,
                  const std::function<llvm::Error(const rt::ParamLayout &)> &onLayout) {
  auto module = import(desc, options);
  if (!module)
    return module.takeError();
  // Before any lowering: a model too large for this machine fails now.
  {
    llvm::StringMap<int64_t> sizes;
    (*module)->walk([&](ParamOp p) {
      sizes[p.getName()] = p.getResult().getType().getNumElements();
    });
    int64_t total = 0;
    for (auto &entry : sizes)
      total += entry.second;
    if (rt::Error e = rt::checkParameterMemory(total))
      return llvm::createStringError(desc.path + ": " + e.message());
  }
  CompiledModule c;
  c.entry = options.mode == CompileMode::Generate ? "prefill"
            : differentiates(options.mode)       ? "forward_grad"
                                                 : "forward";
  auto layoutKnown = [&](const rt::ParamLayout &layout) -> llvm::Error {
    if (!onLayout)
      return llvm::Error::success();
    TimingScope t = rootTiming->nest("load-weights");
    return onLayout(layout);
  };

  // The compile cache is keyed by the imported IR and everything else that
  // shapes the generated code; a hit skips lowering and LLVM entirely.
  std::optional<CompileCache> cache;
  std::string cacheKey;
  if (!cacheDir.empty() && !llvm::sys::fs::create_directories(cacheDir)) {
    cache.emplace(cacheDir);
    std::string ir;
    llvm::raw_string_ostream os(ir);
    (*module)->print(os);
    std::string key = std::string("gradient=") + (differentiates(options.mode) ? "1" : "0") +
                      " ukernels=" + (options.cpu.useUkernels ? "1" : "0") +
                      " fuse=" + (options.cpu.fuseElementwise ? "1" : "0") +
                      " fp8=" + options.fp8.value_or("off") +
                      " ep=" + std::to_string(options.expertParallel) +
                      (options.commOverlap ? "" : " no-overlap") +
                      (options.fusePairs ? " fuse-pairs" : "") +
                      (options.maxNodesPerToken > 0
                           ? " nodes=" + std::to_string(options.routingNodes) + "/" +
                                 std::to_string(options.maxNodesPerToken)
                           : std::string()) +
                      " O" +
                      std::to_string(options.optLevel);
    cacheKey = cache->key(ir, key);
    TimingScope t = rootTiming->nest("compile-cache-lookup");
    std::unique_ptr<JitModule> hit = cache->lookup(cacheKey);
    if (hit) {
      c.executable = std::move(hit);
      if (llvm::Error e = layoutKnown(c.executable->layout()))
        return std::move(e);
      return c;
    }
  }

  if (llvm::Error e = lower(**module, Phase::LLVM, options))
    return std::move(e);
  if (!options.dumpDir.empty())
    if (llvm::Error e = writeDump(options.dumpDir, "4-llvm-ir.ll", [&](llvm::raw_ostream &os) {
          llvm::consumeError(printLLVMIR(**module, os));
        }))
      return std::move(e);
  {
    auto layout = readParamLayout(**module);
    if (!layout)
      return layout.takeError();
    if (llvm::Error e = layoutKnown(*layout))
      return std::move(e);
  }
  TimingScope t = rootTiming->nest("jit-compile");
  auto jit = JitModule::compile(**module, options.optLevel,
                                cache ? cache->objectPath(cacheKey) : "");
  if (!jit)
    return jit.takeError();
  c.executable = std::move(*jit);
  if (cache) {
    if (llvm::Error e = cache->store(cacheKey, *c.executable))
      llvm::WithColor::warning(llvm::errs(), "dsv3c")
          << "compile cache not written: " << llvm::toString(std::move(e)) << "\n";
  }
  return c;
}

llvm::Expected<LoadedModel> Compiler::load(const ModelDescription &desc,
                                           const CompileOptions &options,
                                           const std::string &cacheDir, int64_t expertRank,
                                           rt::OptimizerShard shard) {
  std::unique_ptr<rt::WeightStore> store;
  if (!desc.weightsPath.empty()) {
    auto opened = rt::WeightStore::open(desc.weightsPath);
    if (!opened)
      return llvm::createStringError(opened.error().message());
    store = std::move(*opened);
  } else if (!desc.initSeed) {
    return llvm::createStringError(desc.path +
                                   ": the description names no weights and no [init] seed");
  }
  std::vector<float> params;
  auto loadWeights = [&](const rt::ParamLayout &compiled) -> llvm::Error {
    rt::ParamLayout layout = compiled;
    rt::placeShards(layout, expertRank);
    if (store) {
      if (rt::Error e = rt::loadParameters(*store, layout, params))
        return llvm::createStringError(e.message());
    } else if (rt::Error e = rt::initializeParameters(layout, *desc.initSeed,
                                                      desc.config.initializerRange, params)) {
      return llvm::createStringError(desc.path + ": " + e.message());
    }
    return llvm::Error::success();
  };
  LoadedModel m;
  auto module = compile(desc, options, cacheDir, loadWeights);
  if (!module)
    return module.takeError();
  m.module = std::move(*module);
  if (options.mode == CompileMode::TrainStep) {
    // The optimizer update is compiled too: linalg on the flat buffer.
    auto adamw = compileAdamW(shard.size(m.module.executable->layout().totalElements), options);
    if (!adamw)
      return adamw.takeError();
    m.optimizer = std::move(*adamw);
  }
  auto session = rt::Session::create(*m.module.executable, m.optimizer.get(), shard);
  if (!session)
    return llvm::createStringError(session.error().message());
  m.session = std::move(*session);
  m.session->placeExperts(expertRank);
  m.session->parameters().swap(params);
  return m;
}

llvm::Expected<std::unique_ptr<JitModule>>
Compiler::compileAdamW(int64_t numElements, const CompileOptions &options) {
  auto module = lowerAdamW(numElements, options.bf16Moments);
  if (!module)
    return module.takeError();
  return JitModule::compile(**module, options.optLevel);
}

llvm::Expected<OwningOpRef<ModuleOp>> Compiler::lowerAdamW(int64_t numElements,
                                                           bool bf16Moments) {
  auto module = buildAdamWModule(*ctx, numElements, bf16Moments);
  PassManager pm(module->getOperation()->getName());
  buildLLVMPipeline(pm, CPUPipelineOptions{});
  if (failed(pm.run(*module)))
    return llvm::createStringError("internal error: the AdamW update failed to compile");
  return module;
}

} // namespace dsv3
