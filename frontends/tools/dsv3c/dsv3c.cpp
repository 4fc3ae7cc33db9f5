//===- dsv3c.cpp - the dsv3c driver ---------------------------------------===//
//
// `dsv3c <command> MODEL ...`: loads a model description (a directory with a
// hub config.json and safetensors weights, or a .toml description), imports
// it to dsv3 IR, runs the pipeline phase by phase (with MLIR's IR printing,
// timing and crash-reproducer flags, plus --dump-dir), JIT-compiles it and
// runs it.
//
//   dsv3c eval MODEL --tokens T.safetensors -o OUT.safetensors
//   dsv3c compile MODEL --emit=dsv3|tensor|linalg|llvm|llvm-ir [-o FILE]
//
//===----------------------------------------------------------------------===//
#include "frontends/import/ModelImporter.h"
#include "frontends/import/ParamLoader.h"
#include "frontends/model/ModelDescription.h"
#include "frontends/model/Safetensors.h"
#include "lowering/Passes.h"
#include "lowering/Pipeline/Pipelines.h"
#include "passes/Passes.h"
#include "runtime/jit/JitModule.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/IR/AsmState.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <tbb/global_control.h>

#include <cmath>
#include <cstdio>

using namespace mlir;
namespace cl = llvm::cl;

namespace {

//===----------------------------------------------------------------------===//
// Command line
//===----------------------------------------------------------------------===//

cl::OptionCategory commonCat("dsv3c options");
cl::OptionCategory runCat("dsv3c eval/grad options");
cl::OptionCategory gradCat("dsv3c grad options");
cl::OptionCategory compileCat("dsv3c compile options");
cl::OptionCategory mlirCat("MLIR pass-pipeline debugging options");

cl::opt<std::string> modelPath(cl::Positional, cl::desc("MODEL"),
                               cl::cat(commonCat));
cl::opt<std::string> dumpDir(
    "dump-dir", cl::desc("Write the IR after each pipeline phase to DIR"),
    cl::value_desc("DIR"), cl::cat(commonCat));
cl::opt<unsigned> threads("num-threads",
                          cl::desc("Worker threads (0: all cores)"),
                          cl::init(0), cl::cat(commonCat));
cl::opt<bool> noUkernels("no-ukernels",
                         cl::desc("Generate loops for GEMMs instead of "
                                  "calling the runtime microkernel"),
                         cl::cat(commonCat));
cl::opt<unsigned> jitOptLevel("jit-opt-level",
                               cl::desc("LLVM optimisation level of the JIT (0-3)"),
                               cl::init(3), cl::cat(commonCat));
cl::opt<std::string> outputPath("o", cl::desc("Output file"),
                                cl::value_desc("FILE"), cl::cat(commonCat));

cl::opt<std::string> tokensPath(
    "tokens",
    cl::desc("safetensors file with input_ids (int64/int32, [batch, seq])"),
    cl::value_desc("T.safetensors"), cl::cat(runCat));
cl::opt<double> mtpWeight("mtp-weight",
                          cl::desc("Weight of the MTP loss in total_loss"),
                          cl::init(0.3), cl::cat(gradCat));
cl::opt<double> balanceAlpha(
    "balance-alpha",
    cl::desc("Weight of the sequence-wise balance loss (only 0 so far)"),
    cl::init(0.0), cl::cat(gradCat));

cl::opt<std::string> emit("emit",
                          cl::desc("Stop after a phase and print its IR: "
                                   "dsv3|tensor|linalg|llvm|llvm-ir"),
                          cl::init("dsv3"), cl::cat(compileCat));
cl::opt<int64_t> batchSize("batch", cl::desc("Batch size to compile for"),
                           cl::init(1), cl::cat(compileCat));
cl::opt<int64_t> seqLen("seq", cl::desc("Sequence length to compile for"),
                        cl::init(32), cl::cat(compileCat));

/// One-line error, in the driver's format.
int fail(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "dsv3c") << msg << "\n";
  return 1;
}
int fail(llvm::Error e) {
  std::string msg = llvm::toString(std::move(e));
  return fail(msg);
}

//===----------------------------------------------------------------------===//
// Compilation
//===----------------------------------------------------------------------===//

/// Writes `text` to DIR/NAME, creating DIR.
llvm::Error writeDump(llvm::StringRef name,
                      llvm::function_ref<void(llvm::raw_ostream &)> print) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dumpDir))
    return llvm::createStringError(dumpDir + ": " + ec.message());
  llvm::SmallString<256> path(dumpDir);
  llvm::sys::path::append(path, name);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    return llvm::createStringError(std::string(path) + ": " + ec.message());
  print(os);
  return llvm::Error::success();
}

/// Runs the pipeline up to `to`, one pass manager per phase so that
/// --dump-dir can write each phase's result.
llvm::Error lower(ModuleOp module, dsv3::Phase to, TimingScope &timing,
                  bool differentiate = false,
                  dsv3::Phase from = dsv3::Phase::DSV3) {
  dsv3::CPUPipelineOptions options;
  options.useUkernels = !noUkernels;
  auto dump = [&](dsv3::Phase phase) -> llvm::Error {
    if (dumpDir.empty())
      return llvm::Error::success();
    std::string name = std::to_string(static_cast<int>(phase)) + "-" +
                       dsv3::phaseName(phase).str() + ".mlir";
    return writeDump(name, [&](llvm::raw_ostream &os) { module.print(os); });
  };
  if (from == dsv3::Phase::DSV3)
    if (llvm::Error e = dump(dsv3::Phase::DSV3))
      return e;
  for (dsv3::Phase phase : {dsv3::Phase::Tensor, dsv3::Phase::Linalg,
                            dsv3::Phase::LLVM}) {
    if (phase <= from)
      continue;
    if (phase > to)
      break;
    PassManager pm(module->getName());
    if (failed(applyPassManagerCLOptions(pm)))
      return llvm::createStringError("invalid pass manager options");
    TimingScope phaseTiming = timing.nest(dsv3::phaseName(phase));
    pm.enableTiming(phaseTiming);
    switch (phase) {
    case dsv3::Phase::Tensor:
      dsv3::buildDecomposePipeline(pm);
      if (differentiate)
        pm.addPass(dsv3::createDSV3AutodiffPass());
      break;
    case dsv3::Phase::Linalg:
      dsv3::buildLinalgPipeline(pm);
      break;
    case dsv3::Phase::LLVM:
      dsv3::buildLLVMPipeline(pm, options);
      break;
    case dsv3::Phase::DSV3:
      break;
    }
    if (failed(pm.run(module)))
      return llvm::createStringError("pipeline phase '" +
                                     dsv3::phaseName(phase).str() + "' failed");
    if (llvm::Error e = dump(phase))
      return e;
  }
  return llvm::Error::success();
}

/// Translates an LLVM-dialect module to LLVM IR text.
llvm::Error printLLVMIR(ModuleOp module, llvm::raw_ostream &os) {
  llvm::LLVMContext llvmContext;
  auto llvmModule = translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return llvm::createStringError("translation to LLVM IR failed");
  llvmModule->print(os, nullptr);
  return llvm::Error::success();
}

struct Session {
  DialectRegistry registry;
  std::unique_ptr<MLIRContext> ctx;
  DefaultTimingManager timingManager;
  std::optional<TimingScope> timing;

  Session() {
    dsv3::registerPipelineDialects(registry);
    ctx = std::make_unique<MLIRContext>(registry);
    ctx->loadAllAvailableDialects();
    applyDefaultTimingManagerCLOptions(timingManager);
    timing.emplace(timingManager.getRootScope());
  }
};

//===----------------------------------------------------------------------===//
// Commands
//===----------------------------------------------------------------------===//

int runCompile() {
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  bool toLLVMIR = emit == "llvm-ir";
  auto phase = toLLVMIR ? std::optional<dsv3::Phase>(dsv3::Phase::LLVM)
                        : dsv3::parsePhase(emit);
  if (!phase)
    return fail("--emit=" + emit +
                " is not a phase (dsv3, tensor, linalg, llvm, llvm-ir)");
  Session s;
  dsv3::ImportOptions io;
  io.batch = batchSize;
  io.seqLen = seqLen;
  auto module = dsv3::importModel(*s.ctx, desc->config, io);
  if (!module)
    return fail(modelPath + ": " + llvm::toString(module.takeError()));
  if (llvm::Error e = lower(**module, *phase, *s.timing))
    return fail(std::move(e));

  std::error_code ec;
  llvm::ToolOutputFile out(outputPath.empty() ? std::string("-") : outputPath.getValue(), ec,
                           llvm::sys::fs::OF_Text);
  if (ec)
    return fail(outputPath + ": " + ec.message());
  if (toLLVMIR) {
    if (llvm::Error e = printLLVMIR(**module, out.os()))
      return fail(std::move(e));
  } else {
    (*module)->print(out.os());
  }
  out.keep();
  return 0;
}

/// Reads and validates input_ids against the model.
llvm::Expected<std::vector<int64_t>>
readTokens(const dsv3::ModelConfig &config, std::vector<int64_t> &shape) {
  auto file = dsv3::SafetensorsFile::open(tokensPath);
  if (!file)
    return file.takeError();
  const dsv3::TensorInfo *t = (*file)->lookup("input_ids");
  auto err = [&](const llvm::Twine &msg) {
    return llvm::createStringError(tokensPath + ": " + msg.str());
  };
  if (!t)
    return err("no tensor named 'input_ids'");
  if (t->dtype != dsv3::DType::I64 && t->dtype != dsv3::DType::I32)
    return err("input_ids must be int64 or int32, got " +
               dsv3::dtypeName(t->dtype).str());
  if (t->shape.size() != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
    return err("input_ids must be a non-empty [batch, seq] matrix");
  shape = t->shape;
  std::vector<int64_t> ids(t->numElements());
  if (llvm::Error e = dsv3::convertToI64(*t, ids.data()))
    return std::move(e);
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= config.vocabSize)
      return err("input_ids[" + std::to_string(i / shape[1]) + ", " +
                 std::to_string(i % shape[1]) + "] = " + std::to_string(ids[i]) +
                 " is outside the vocabulary [0, " +
                 std::to_string(config.vocabSize) + ")");
  return ids;
}

/// `eval` and `grad`: compile for the token batch, load weights, run once,
/// write every output (gradients of stacked expert parameters are split back
/// into hub names).
int runOnTokens(bool gradient) {
  const char *command = gradient ? "grad" : "eval";
  if (tokensPath.empty())
    return fail(llvm::Twine(command) + " needs --tokens T.safetensors");
  if (outputPath.empty())
    return fail(llvm::Twine(command) + " needs -o OUT.safetensors");
  if (balanceAlpha != 0.0)
    return fail("--balance-alpha: the sequence-wise balance loss is not "
                "implemented yet; only 0 is accepted");
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  if (desc->weightsPath.empty())
    return fail(modelPath + ": the description names no weights to evaluate");
  std::vector<int64_t> shape;
  auto ids = readTokens(desc->config, shape);
  if (!ids)
    return fail(ids.takeError());
  auto store = dsv3::WeightStore::open(desc->weightsPath);
  if (!store)
    return fail(store.takeError());

  Session s;
  dsv3::ImportOptions io;
  io.batch = shape[0];
  io.seqLen = shape[1];
  if (gradient)
    io.mtpWeight = mtpWeight;
  auto module = dsv3::importModel(*s.ctx, desc->config, io);
  if (!module)
    return fail(tokensPath + ": " + llvm::toString(module.takeError()));
  if (llvm::Error e = lower(**module, dsv3::Phase::Linalg, *s.timing, gradient))
    return fail(std::move(e));
  // Output shapes come from the entry point before it is bufferized.
  std::string entryName = gradient ? "forward_grad" : "forward";
  auto entryFn = (*module)->lookupSymbol<func::FuncOp>(entryName);
  std::vector<std::vector<int64_t>> outShapes;
  for (Type t : entryFn.getFunctionType().getResults()) {
    auto shape = cast<RankedTensorType>(t).getShape();
    outShapes.emplace_back(shape.begin(), shape.end());
  }
  if (llvm::Error e = lower(**module, dsv3::Phase::LLVM, *s.timing, false,
                            dsv3::Phase::Linalg))
    return fail(std::move(e));
  if (!dumpDir.empty())
    if (llvm::Error e = writeDump("4-llvm-ir.ll", [&](llvm::raw_ostream &os) {
          llvm::consumeError(printLLVMIR(**module, os));
        }))
      return fail(std::move(e));

  // Weights load before JIT compilation so a bad checkpoint fails fast.
  std::vector<float> params;
  {
    TimingScope t = s.timing->nest("load-weights");
    auto layout = dsv3::readParamLayout(**module);
    if (!layout)
      return fail(layout.takeError());
    if (llvm::Error e = dsv3::loadParameters(**store, *layout, params))
      return fail(std::move(e));
  }
  std::unique_ptr<dsv3::JitModule> jit;
  {
    TimingScope t = s.timing->nest("jit-compile");
    auto compiled = dsv3::JitModule::compile(**module, jitOptLevel);
    if (!compiled)
      return fail(compiled.takeError());
    jit = std::move(*compiled);
  }
  const dsv3::EntryPoint *entry = jit->entry(entryName);
  std::vector<std::vector<float>> floatOuts(outShapes.size());
  std::vector<std::vector<int64_t>> intOuts(outShapes.size());
  std::vector<dsv3::BufferArg> outs;
  for (size_t i = 0; i < outShapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : outShapes[i])
      n *= d;
    bool isIds = llvm::StringRef(entry->outputs[i]).starts_with("topk_ids.");
    void *data;
    if (isIds) {
      intOuts[i].assign(n, 0);
      data = intOuts[i].data();
    } else {
      floatOuts[i].assign(n, 0.f);
      data = floatOuts[i].data();
    }
    outs.push_back({data, outShapes[i]});
  }
  {
    TimingScope t = s.timing->nest("execute");
    if (llvm::Error e = jit->call(entryName, params.data(),
                                  {{ids->data(), shape}}, outs))
      return fail(std::move(e));
  }

  dsv3::SafetensorsWriter writer;
  for (size_t i = 0; i < outShapes.size(); ++i) {
    const std::string &name = entry->outputs[i];
    std::vector<int64_t> outShape = outShapes[i];
    if (outShape.empty())
      outShape = {1}; // scalars are stored as [1], like the reference files
    size_t star = name.find('*');
    if (star != std::string::npos) {
      // A stacked expert gradient: one tensor per expert, under hub names.
      std::vector<int64_t> each(outShape.begin() + 1, outShape.end());
      size_t stride = floatOuts[i].size() / outShape[0];
      for (int64_t e = 0; e < outShape[0]; ++e)
        writer.addF32(name.substr(0, star) + std::to_string(e) + name.substr(star + 1),
                      each, llvm::ArrayRef<float>(floatOuts[i]).slice(e * stride, stride));
    } else if (!intOuts[i].empty()) {
      // Chosen experts, sorted per token for comparison with references.
      int64_t k = outShape.back();
      for (size_t r = 0; r < intOuts[i].size(); r += k)
        std::sort(intOuts[i].begin() + r, intOuts[i].begin() + r + k);
      writer.addI64(name, outShape, intOuts[i]);
    } else {
      writer.addF32(name, outShape, floatOuts[i]);
    }
    if (outShapes[i].empty()) {
      float v = floatOuts[i][0];
      llvm::outs() << llvm::format("%-9s %.6f", name.c_str(), v);
      if (name == "loss")
        llvm::outs() << llvm::format("  (perplexity %.3f)", std::exp(v));
      llvm::outs() << "\n";
    }
  }
  writer.setMetadata("producer", std::string("dsv3c ") + command);
  if (llvm::Error e = writer.write(outputPath))
    return fail(std::move(e));
  return 0;
}

struct Command {
  const char *name;
  const char *summary;
  std::vector<cl::OptionCategory *> categories;
  int (*run)();
};
const Command commands[] = {
    {"eval", "run the model on tokens; write logits, losses, routing choices",
     {&runCat}, [] { return runOnTokens(false); }},
    {"grad",
     "losses and the gradient of total_loss for every trainable parameter",
     {&runCat, &gradCat}, [] { return runOnTokens(true); }},
    {"compile", "print the IR after a pipeline phase", {&compileCat}, runCompile},
};
/// The command-specific categories; options in none of a command's own
/// categories are rejected for it.
const cl::OptionCategory *const commandCategories[] = {&runCat, &gradCat,
                                                       &compileCat};

void printUsage() {
  llvm::outs() << "OVERVIEW: dsv3c - compiler for DeepSeek-V3-architecture models\n\n"
                  "USAGE: dsv3c <command> MODEL [options]\n\n"
                  "MODEL is a directory with config.json and safetensors weights,\n"
                  "or a .toml model description.\n\nCOMMANDS:\n";
  for (const Command &c : commands)
    llvm::outs() << llvm::format("  %-10s %s\n", c.name, c.summary);
  llvm::outs() << "\nRun 'dsv3c <command> --help' for a command's options.\n";
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  if (argc < 2 || llvm::StringRef(argv[1]).starts_with("-")) {
    printUsage();
    return argc < 2 ? 1 : 0;
  }
  const Command *command = nullptr;
  for (const Command &c : commands)
    if (c.name == llvm::StringRef(argv[1]))
      command = &c;
  if (!command) {
    fail(llvm::Twine("unknown command '") + argv[1] + "'");
    printUsage();
    return 1;
  }

  // Pass names must be known for --mlir-print-ir-before/after=<pass>.
  dsv3::registerDSV3Passes();
  dsv3::registerDSV3LoweringPasses();
  registerTransformsPasses();
  registerConversionPasses();
  registerLinalgPasses();
  bufferization::registerBufferizationPasses();
  memref::registerMemRefPasses();
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  // Show this command's options, the common ones, and MLIR's debugging flags
  // (not the hundreds of LLVM backend flags of the general category).
  for (auto &[name, opt] : cl::getRegisteredOptions())
    if (name.starts_with("mlir-"))
      opt->addCategory(mlirCat);
  std::vector<const cl::OptionCategory *> visible(command->categories.begin(),
                                                  command->categories.end());
  visible.push_back(&commonCat);
  visible.push_back(&mlirCat);
  cl::HideUnrelatedOptions(visible);
  std::vector<const char *> args{argv[0]};
  args.insert(args.end(), argv + 2, argv + argc);
  std::string overview = std::string("dsv3c ") + command->name + ": " +
                         command->summary + "\n";
  cl::ParseCommandLineOptions(args.size(), args.data(), overview);

  // Options of other commands are accepted by the parser; reject them here.
  for (auto &[name, opt] : cl::getRegisteredOptions()) {
    if (!opt->getNumOccurrences())
      continue;
    for (const cl::OptionCategory *cat : commandCategories)
      if (llvm::is_contained(opt->Categories, cat) &&
          !llvm::is_contained(command->categories, cat)) {
        const char *owner = "another command";
        for (const Command &other : commands)
          if (llvm::is_contained(other.categories, cat))
            owner = other.name;
        return fail("--" + name.str() + " is an option of 'dsv3c " + owner +
                    "', not of '" + command->name + "'");
      }
  }
  if (modelPath.empty())
    return fail(llvm::Twine(command->name) + " needs a MODEL argument");

  std::optional<tbb::global_control> threadLimit;
  if (threads > 0)
    threadLimit.emplace(tbb::global_control::max_allowed_parallelism, threads);
  return command->run();
}
