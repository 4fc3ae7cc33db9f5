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
//   dsv3c compile MODEL --mode=grad --pp 2 --emit=schedule
//   mpirun -np 4 dsv3c grad MODEL --tokens T -o OUT --dp 2 --ep 2
//   dsv3c schedule --pp 4 --micro-batches 10 --schedule dualpipev
//
// Under an MPI launcher every rank runs this program with the same flags;
// the parallel plan (--dp/--ep, or the description's [parallel] table)
// splits the world into groups (runtime/parallel), and rank 0 writes what
// one process would have written.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/Compiler.h"
#include "frontends/compiler/Recipe.h"
#include "frontends/compiler/ScheduleIR.h"
#include "frontends/model/ModelDescription.h"
#include "frontends/support/RuntimeError.h"
#include "frontends/tools/dsv3c/Driver.h"
#include "runtime/io/Outputs.h"
#include "runtime/io/Parameters.h"
#include "runtime/io/Safetensors.h"
#include "runtime/comm/Mpi.h"
#include "runtime/parallel/Parallel.h"
#include "runtime/pipeline/CommTransport.h"
#include "runtime/pipeline/Executor.h"
#include "runtime/pipeline/Schedule.h"
#include "runtime/pipeline/Simulator.h"
#include "runtime/pipeline/TimelineSvg.h"
#include "runtime/support/File.h"
#include "lowering/Passes.h"
#include "lowering/Pipeline/Pipelines.h"
#include "passes/Passes.h"
#include "runtime/jit/JitModule.h"
#include "runtime/train/Data.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/Trainer.h"
#include "runtime/text/Tokenizer.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/IR/AsmState.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <tbb/global_control.h>

#include <malloc.h>
#include <set>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

using namespace mlir;
namespace cl = llvm::cl;

namespace dsv3c {

//===----------------------------------------------------------------------===//
// Command line
//===----------------------------------------------------------------------===//

cl::OptionCategory commonCat("dsv3c options");
cl::OptionCategory generateCat("dsv3c generation options (generate, serve)");
cl::OptionCategory tokenizeCat("dsv3c tokenizer options (tokenize)");
cl::OptionCategory serveCat("dsv3c server options (serve)");
cl::OptionCategory runCat("dsv3c token input options (eval, grad, train)");
cl::OptionCategory gradCat("dsv3c objective options (grad, train)");
cl::OptionCategory compileCat("dsv3c compile options");
cl::OptionCategory shapeCat("dsv3c compile/train shape options");
cl::OptionCategory trainCat("dsv3c train options");
cl::OptionCategory parallelCat("dsv3c parallel plan options (eval, grad, train, compile; "
                                "launch with mpirun -np dp*ep*pp)");
cl::OptionCategory scheduleCat("dsv3c schedule options");
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
cl::opt<bool> fp8Flag(
    "fp8",
    cl::desc("Run the linear layers' GEMMs in FP8 through "
             "dsv3-fp8-tile-quantize (the DeepSeek-V3 recipe; also [fp8] "
             "enabled = true in a .toml)"),
    cl::cat(commonCat));
cl::opt<std::string> fp8Options(
    "fp8-options",
    cl::desc("Extra dsv3-fp8-tile-quantize options, e.g. "
             "'cache-activations=fp8 power-of-two-scales=true'"),
    cl::value_desc("OPTS"), cl::cat(commonCat));
cl::opt<std::string> cacheDir(
    "cache-dir",
    cl::desc("Compile cache directory (default: $DSV3C_CACHE_DIR, else "
             "$XDG_CACHE_HOME/dsv3c or ~/.cache/dsv3c)"),
    cl::value_desc("DIR"), cl::cat(commonCat));
cl::opt<bool> noCache("no-cache",
                      cl::desc("Neither read nor write the compile cache"),
                      cl::cat(commonCat));
cl::opt<std::string> outputPath("o", cl::desc("Output file"),
                                cl::value_desc("FILE"), cl::cat(commonCat));

cl::opt<int64_t> dataParallel("dp",
                              cl::desc("Data-parallel replicas: each runs batch/dp sequences "
                                       "(default: [parallel] data, else 1)"),
                              cl::init(0), cl::cat(parallelCat));
cl::opt<int64_t> expertParallel(
    "ep",
    cl::desc("Expert-parallel ranks per replica: each holds n_routed_experts/ep experts "
             "(default: [parallel] expert, else 1)"),
    cl::init(0), cl::cat(parallelCat));
cl::opt<int64_t> ranksPerNode(
    "ranks-per-node",
    cl::desc("Ranks on one node, world ranks in order (default: [parallel] ranks_per_node; "
             "0: one node)"),
    cl::init(-1), cl::cat(parallelCat));
cl::opt<int64_t> maxNodesPerToken(
    "max-nodes",
    cl::desc("Node-limited routing: a token's experts come from at most N nodes "
             "(DeepSeek-V3: 4; default: [parallel] max_nodes_per_token; 0: off)"),
    cl::init(-1), cl::cat(parallelCat));
cl::opt<int64_t> pipelineParallel("pp",
                                  cl::desc("Pipeline ranks (default: [parallel] pipeline, "
                                           "else 1), run with --schedule and --micro-batches"),
                                  cl::init(0), cl::cat(parallelCat));

cl::opt<std::string> scheduleOpt(
    "schedule",
    cl::desc("Pipeline schedule with --pp > 1: 1f1b, zb1p, dualpipe, dualpipev"),
    cl::init("dualpipev"), cl::cat(parallelCat));
cl::opt<int64_t> microBatchesOpt(
    "micro-batches",
    cl::desc("Micro-batches per step through the pipeline (DualPipe(V): at least 2 x pp)"),
    cl::init(0), cl::cat(parallelCat));
cl::opt<bool> commOverlapOpt(
    "comm-overlap",
    cl::desc("With --ep > 1: compute between each all-to-all's start and wait "
             "(dsv3-comm-overlap; --comm-overlap=false blocks at each exchange)"),
    cl::init(true), cl::cat(parallelCat));
cl::opt<bool> fusePairsOpt(
    "fuse-pairs",
    cl::desc("With --pp, --ep > 1 and --comm-overlap: run each F&B pair as one function "
             "whose halves take turns at every exchange (dsv3-comm-overlap; "
             "--fuse-pairs=false runs the pair's chunks one after the other)"),
    cl::init(true), cl::cat(parallelCat));
cl::opt<std::string> linkModelOpt(
    "link-model",
    cl::desc("Measurement aid, off by default: every request between ranks completes no "
             "earlier than its bytes take on a link of this bandwidth and latency"),
    cl::value_desc("bw=GB/s,lat=us"), cl::cat(parallelCat));
cl::opt<std::string> costsOpt(
    "costs",
    cl::desc("Chunk costs for the simulation: F=,B=,W=,FB=,comm= (B the full backward, W "
             "its weight part, FB an overlapped F&B pair; default F=1,B=2,W=1,FB=F+B,comm=0)"),
    cl::value_desc("LIST"), cl::cat(scheduleCat));

cl::opt<std::string> tokensPath(
    "tokens",
    cl::desc("safetensors file with input_ids (int64/int32, [batch, seq])"),
    cl::value_desc("T.safetensors"), cl::cat(runCat), cl::cat(generateCat));
cl::opt<unsigned> repeatOpt(
    "repeat",
    cl::desc("Run the compiled step N times and print its median time and "
             "tokens/s on stderr (eval, grad; for benchmarking); with --pp, N-1 "
             "untimed warm-up steps before the measured one; generate: N-1 "
             "untimed generations before the reported one"),
    cl::init(1), cl::cat(runCat), cl::cat(generateCat));
cl::opt<double> mtpWeight("mtp-weight",
                          cl::desc("Weight of the MTP loss in total_loss"),
                          cl::init(0.3), cl::cat(gradCat));
cl::opt<double> balanceAlpha(
    "balance-alpha",
    cl::desc("Weight of the sequence-wise balance loss in total_loss "
             "(default: the .toml recipe's balance_alpha = 1e-4, 0 for a bare "
             "hub directory)"),
    cl::init(0.0), cl::cat(gradCat));

cl::opt<std::string> emit("emit",
                          cl::desc("Stop after a phase and print its IR: "
                                   "dsv3|tensor|linalg|llvm|llvm-ir; or write an "
                                   "ahead-of-time artifact: artifact (-o DIR); or, with "
                                   "--pp, print every rank's schedule: schedule"),
                          cl::init("dsv3"), cl::cat(compileCat));
cl::opt<std::string> modeOpt("mode",
                             cl::desc("What to compile: eval (the forward), grad (forward "
                                      "and backward), train-step (grad and the AdamW step)"),
                             cl::init("eval"), cl::cat(compileCat));
cl::opt<int64_t> batchSize("batch", cl::desc("Batch size (sequences)"),
                           cl::init(1), cl::cat(shapeCat));
cl::opt<int64_t> seqLen("seq", cl::desc("Sequence length"), cl::init(32),
                        cl::cat(shapeCat));

cl::opt<int64_t> trainSteps("steps", cl::desc("Optimizer steps"), cl::init(100),
                            cl::cat(trainCat));
cl::opt<double> learningRateOpt("lr", cl::desc("Peak learning rate"),
                                cl::init(1e-3), cl::cat(trainCat));
cl::opt<std::string> betasOpt("betas", cl::desc("AdamW betas: b1,b2"),
                              cl::init("0.9,0.95"), cl::cat(trainCat));
cl::opt<double> epsOpt("eps", cl::desc("AdamW epsilon"), cl::init(1e-8),
                       cl::cat(trainCat));
cl::opt<double> weightDecayOpt("weight-decay",
                               cl::desc("Decoupled weight decay"),
                               cl::init(0.1), cl::cat(trainCat));
cl::opt<double> gradClipOpt("grad-clip",
                            cl::desc("Global gradient-norm clip (0: off; default: "
                                     "the .toml recipe's grad_clip = 1.0, off for "
                                     "a bare hub directory)"),
                            cl::init(1.0), cl::cat(trainCat));
cl::opt<int64_t> warmupOpt("warmup-steps", cl::desc("Linear warm-up steps"),
                           cl::init(0), cl::cat(trainCat));
cl::opt<int64_t> decayStartOpt(
    "decay-start", cl::desc("Step where cosine decay begins (-1: constant)"),
    cl::init(-1), cl::cat(trainCat));
cl::opt<double> minLrRatioOpt("min-lr-ratio",
                              cl::desc("Final learning rate / peak"),
                              cl::init(0.1), cl::cat(trainCat));
cl::opt<double> biasUpdateOpt(
    "bias-update",
    cl::desc("Routing-bias update speed gamma (auxiliary-loss-free "
             "balancing; 0 disables)"),
    cl::init(1e-3), cl::cat(trainCat));
cl::opt<std::string> momentsOpt(
    "moments",
    cl::desc("AdamW moment storage: fp32 or bf16 (DeepSeek-V3; the "
             "default with --fp8)"),
    cl::init("fp32"), cl::cat(shapeCat));
cl::opt<int64_t> gradAccumOpt("grad-accum",
                              cl::desc("Micro-batches per optimizer step"),
                              cl::init(1), cl::cat(trainCat));
cl::opt<uint64_t> seedOpt("seed",
                          cl::desc("Seed of the data sampling (train) or of the token sampling "
                                   "(generate)"),
                          cl::init(0), cl::cat(trainCat), cl::cat(generateCat));
cl::opt<std::string> corpusOpt(
    "corpus", cl::desc("Text corpus (byte-level tokens); default: the bundled one"),
    cl::init(DSV3_DEFAULT_CORPUS), cl::cat(trainCat));
cl::opt<std::string> logJsonOpt(
    "log-json",
    cl::desc("Write one JSON object per step (under mpirun each rank also writes its "
             "communication and expert load to FILE's .rank-R.jsonl)"),
    cl::value_desc("FILE"), cl::cat(trainCat));
cl::opt<std::string> traceOpt(
    "trace",
    cl::desc("Write a Chrome/Perfetto trace: per rank, a compute and a communication lane"),
    cl::value_desc("FILE.json"), cl::cat(runCat));
cl::opt<std::string> svgOpt(
    "svg",
    cl::desc("Draw the pipeline's timeline as an SVG picture, one row per rank: the "
             "executed schedule (grad --pp) or the simulated one (schedule)"),
    cl::value_desc("FILE.svg"), cl::cat(runCat), cl::cat(scheduleCat));
cl::opt<std::string> plotOpt("plot", cl::desc("Loss curve SVG"),
                             cl::cat(trainCat));
cl::opt<std::string> saveOpt("save",
                             cl::desc("Write a hub-layout checkpoint to DIR"),
                             cl::value_desc("DIR"), cl::cat(trainCat));
cl::opt<std::string> resumeOpt("resume",
                               cl::desc("Continue from a checkpoint DIR"),
                               cl::value_desc("DIR"), cl::cat(trainCat));

/// The job's ranks when launched by mpirun (null in one process).
std::unique_ptr<dsv3::rt::ProcessGroups> job;
/// This process's world rank and size before the groups exist.
int worldRank = 0, worldSize = 1;

/// One-line error, in the driver's format. Under a launcher, an error found
/// on one rank alone must not leave the others waiting in a collective:
/// once the groups exist it ends the whole job, naming this rank.
int fail(const llvm::Twine &msg) {
  if (job && job->plan().ranks() > 1)
    job->world().abort("dsv3c: error: " + msg.str());
  if (worldSize == 1) {
    llvm::WithColor::error(llvm::errs(), "dsv3c") << msg << "\n";
    return 1;
  }
  // One write per line, so that the ranks' lines do not interleave.
  std::string line = "dsv3c: error: rank " + std::to_string(worldRank) + ": " + msg.str() + "\n";
  llvm::errs().flush();
  ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
  (void)written;
  return 1;
}
int fail(llvm::Error e) {
  std::string msg = llvm::toString(std::move(e));
  return fail(msg);
}
int fail(dsv3::rt::Error e) { return fail(e.message()); }

//===----------------------------------------------------------------------===//
// From flags to the compiler library's options
//===----------------------------------------------------------------------===//

/// The value of `opt` when the command line set it.
template <typename T>
std::optional<T> given(const cl::opt<T> &opt) {
  return opt.getNumOccurrences() ? std::optional<T>(opt.getValue()) : std::nullopt;
}

/// Compile options from the flags on top of the description's recipe.
llvm::Expected<dsv3::CompileOptions> compileOptions(const dsv3::ModelDescription &desc,
                                                    dsv3::CompileMode mode, int64_t batch,
                                                    int64_t seq, bool packed) {
  if (momentsOpt != "fp32" && momentsOpt != "bf16")
    return llvm::createStringError("--moments must be fp32 or bf16, got '" + momentsOpt + "'");
  dsv3::CompileOverrides flags;
  flags.mtpWeight = given(mtpWeight);
  flags.balanceAlpha = given(balanceAlpha);
  flags.fp8 = fp8Flag;
  flags.fp8Options = fp8Options;
  if (momentsOpt.getNumOccurrences())
    flags.bf16Moments = momentsOpt == "bf16";
  auto o = dsv3::resolveCompileOptions(desc, flags, mode, batch, seq, packed);
  if (!o)
    return o.takeError();
  o->cpu.useUkernels = !noUkernels;
  o->optLevel = jitOptLevel;
  o->dumpDir = dumpDir;
  o->commOverlap = commOverlapOpt;
  o->fusePairs = fusePairsOpt;
  return o;
}

/// Training settings from the flags on top of the description's recipe.
dsv3::rt::TrainOverrides trainOverrides() {
  dsv3::rt::TrainOverrides o;
  o.steps = given(trainSteps);
  o.gradAccumulation = given(gradAccumOpt);
  o.warmupSteps = given(warmupOpt);
  o.decayStart = given(decayStartOpt);
  o.seed = given(seedOpt);
  o.lr = given(learningRateOpt);
  o.eps = given(epsOpt);
  o.weightDecay = given(weightDecayOpt);
  o.gradClip = given(gradClipOpt);
  o.minLrRatio = given(minLrRatioOpt);
  o.biasUpdateSpeed = given(biasUpdateOpt);
  o.betas = given(betasOpt);
  return o;
}

/// This process's world communicator until a command turns it into a job.
std::unique_ptr<dsv3::rt::Communicator> worldComm;

/// The parallel plan: the flags over the description's [parallel] table,
/// checked against the model, the batch (of `batchSource`) and, with
/// `launch`, the job's size. Every rank computes the same answer.
llvm::Expected<dsv3::rt::ParallelPlan> resolvePlan(const dsv3::ModelDescription &desc,
                                                   int64_t batch, const std::string &batchSource,
                                                   bool launch, bool allowPipeline = false) {
  dsv3::ParallelSettings s = desc.parallel;
  std::string source = desc.path;
  for (auto [flag, value] : {std::pair<cl::opt<int64_t> *, int64_t *>{&dataParallel, &s.data},
                             {&expertParallel, &s.expert},
                             {&pipelineParallel, &s.pipeline}}) {
    if (!flag->getNumOccurrences())
      continue;
    if (*flag < 1)
      return llvm::createStringError("--" + flag->ArgStr.str() + " must be at least 1, got " +
                                     std::to_string(flag->getValue()));
    *value = flag->getValue();
    source = "--" + flag->ArgStr.str();
  }
  for (auto [flag, value] : {std::pair<cl::opt<int64_t> *, int64_t *>{&ranksPerNode,
                                                                      &s.ranksPerNode},
                             {&maxNodesPerToken, &s.maxNodesPerToken}}) {
    if (!flag->getNumOccurrences())
      continue;
    if (*flag < 0)
      return llvm::createStringError("--" + flag->ArgStr.str() + " must not be negative, got " +
                                     std::to_string(flag->getValue()));
    *value = flag->getValue();
    source = "--" + flag->ArgStr.str();
  }
  if (llvm::Error e = dsv3::checkParallelPlan(desc.config, s, source))
    return std::move(e);
  if (s.pipeline > 1 && !allowPipeline)
    return llvm::createStringError(source + ": pipeline parallelism (--pp " +
                                   std::to_string(s.pipeline) +
                                   ") runs in 'grad' and 'train' so far, not in this command; use --pp 1");
  if (batch % s.data != 0)
    return llvm::createStringError(batchSource + ": a batch of " + std::to_string(batch) +
                                   " sequences does not split over " + std::to_string(s.data) +
                                   " data-parallel replicas");
  if (launch && s.ranks() != worldSize)
    return llvm::createStringError(
        source + ": the plan (data " + std::to_string(s.data) + " x expert " +
        std::to_string(s.expert) + " x pipeline " + std::to_string(s.pipeline) + ") needs " +
        std::to_string(s.ranks()) + " ranks but the job has " + std::to_string(worldSize) +
        (worldSize == 1 ? " (launch with mpirun -np " + std::to_string(s.ranks()) + ")" : ""));
  dsv3::rt::ParallelPlan plan;
  plan.data = s.data;
  plan.expert = s.expert;
  plan.pipeline = s.pipeline;
  // Node-limited routing: a replica's expert ranks are consecutive world
  // ranks, so its experts spread over expert / ranks_per_node nodes.
  if (s.maxNodesPerToken > 0 && s.ranksPerNode < s.expert) {
    if (s.expert % s.ranksPerNode != 0)
      return llvm::createStringError(source + ": nodes of " + std::to_string(s.ranksPerNode) +
                                     " ranks do not split the " + std::to_string(s.expert) +
                                     " expert-parallel ranks of a replica");
    plan.routingNodes = s.expert / s.ranksPerNode;
    plan.maxNodesPerToken = s.maxNodesPerToken;
  }
  return plan;
}

/// Splits the world by `plan` (a no-op for one process).
llvm::Error startJob(const dsv3::rt::ParallelPlan &plan) {
  if (!linkModelOpt.empty()) {
    auto link = dsv3::rt::parseLinkModel(linkModelOpt);
    if (!link)
      return llvm::createStringError(link.error().message());
    dsv3::rt::setLinkModel(*link);
  }
  if (plan.single())
    return llvm::Error::success();
  auto groups = dsv3::rt::ProcessGroups::create(std::move(worldComm), plan);
  if (!groups)
    return llvm::createStringError(groups.error().message());
  job = std::move(*groups);
  return llvm::Error::success();
}

std::string cacheDirectory() {
  if (noCache)
    return "";
  return cacheDir.empty() ? dsv3::CompileCache::defaultDirectory() : cacheDir.getValue();
}

/// compiler.load through the compile cache, rank 0 first. Every rank of a
/// job compiles the same module (ranks are read at run time), so rank 0
/// compiles it into the cache while the others wait at a barrier, and they
/// then find it there instead of each compiling it again on cores they
/// share. Without a cache (or without a job) each process compiles; ranks
/// of another node that does not share the cache directory compile for
/// themselves.
llvm::Expected<dsv3::LoadedModel> loadModel(dsv3::Compiler &compiler,
                                            const dsv3::ModelDescription &desc,
                                            const dsv3::CompileOptions &options,
                                            dsv3::rt::OptimizerShard shard = {}) {
  std::string cache = cacheDirectory();
  int64_t expertRank = job ? job->expertRank() : 0;
  auto load = [&] { return compiler.load(desc, options, cache, expertRank, shard); };
  if (!job || cache.empty())
    return load();
  const std::string what = "compiling on rank 0";
  const auto poll = std::chrono::milliseconds(10);
  if (job->isRoot()) {
    auto model = load();
    std::string problem = model ? std::string() : llvm::toString(model.takeError());
    if (dsv3::rt::Error e = dsv3::rt::agreeAcrossRanks(
            job.get(),
            problem.empty() ? dsv3::rt::Error::success() : dsv3::rt::Error::failure(problem),
            what, poll))
      return llvm::createStringError(e.message());
    return model;
  }
  if (dsv3::rt::Error e =
          dsv3::rt::agreeAcrossRanks(job.get(), dsv3::rt::Error::success(), what, poll))
    return llvm::createStringError(e.message());
  return load();
}

//===----------------------------------------------------------------------===//
// Commands
//===----------------------------------------------------------------------===//

/// `compile --emit=schedule`: what each rank holds, its table, and the
/// functions the F&B pairs run.
void printScheduleFromIR(const dsv3::ScheduleFromIR &read, llvm::raw_ostream &os) {
  const dsv3::rt::PipelineSchedule &s = read.schedule;
  os << "schedule " << dsv3::rt::scheduleName(s.kind) << ": " << s.ranks << " ranks, "
     << s.stages << " stages, " << s.microBatches << " micro-batches\n";
  os << "\n" << dsv3::rt::formatScheduleTable(s);
  std::set<std::string> fused;
  for (const auto &rank : read.fused)
    for (const std::string &f : rank)
      if (!f.empty())
        fused.insert(f);
  if (!fused.empty()) {
    os << "\nF&B pairs run as one function (dsv3-comm-overlap):\n";
    for (const std::string &f : fused)
      os << "  @" << f << "\n";
  }
}

int runCompile() {
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  auto mode = dsv3::parseMode(modeOpt);
  if (!mode)
    return fail("--mode=" + modeOpt + " is not a mode (eval, grad, train-step)");
  auto options = compileOptions(*desc, *mode, batchSize, seqLen, false);
  if (!options)
    return fail(options.takeError());
  auto plan = resolvePlan(*desc, batchSize, "--batch", /*launch=*/false,
                          /*allowPipeline=*/true);
  if (!plan)
    return fail(plan.takeError());
  if (plan->pipeline > 1) {
    auto kind = dsv3::rt::parseScheduleKind(scheduleOpt);
    if (!kind)
      return fail("--schedule=" + scheduleOpt +
                  " is not a schedule (1f1b, zb1p, dualpipe, dualpipev)");
    if (*mode == dsv3::CompileMode::Eval)
      return fail("--pp " + std::to_string(plan->pipeline) +
                  " splits the training step: compile it with --mode=grad or train-step");
    // Without --micro-batches, the fewest every schedule accepts.
    int64_t microBatches = microBatchesOpt > 0 ? microBatchesOpt.getValue() : 2 * plan->pipeline;
    auto schedule = dsv3::rt::buildSchedule(*kind, plan->pipeline, microBatches);
    if (!schedule)
      return fail(schedule.takeError());
    options->pipelineStages = schedule->stages;
    options->schedule = std::move(*schedule);
  }
  options->expertParallel = plan->expert;
  options->routingNodes = plan->routingNodes;
  options->maxNodesPerToken = plan->maxNodesPerToken;
  dsv3::Compiler compiler;
  if (emit == "artifact") {
    if (outputPath.empty())
      return fail("compile --emit=artifact needs -o DIR");
    if (llvm::Error e = compiler.writeArtifact(*desc, *options, outputPath))
      return fail(std::move(e));
    return 0;
  }
  if (emit == "schedule") {
    // The schedule as the compiler holds it after the tensor phase (with
    // dsv3-comm-overlap's fused pairs), as per-rank tables.
    if (!options->schedule)
      return fail("--emit=schedule needs --pp > 1 (or [parallel] pipeline) with --mode=grad "
                  "or train-step");
    auto module = compiler.import(*desc, *options);
    if (!module)
      return fail(module.takeError());
    if (llvm::Error e = compiler.lower(**module, dsv3::Phase::Tensor, *options))
      return fail(std::move(e));
    auto read = dsv3::readScheduleIR(**module);
    if (!read)
      return fail(read.takeError());
    printScheduleFromIR(*read, llvm::outs());
    return 0;
  }
  bool toLLVMIR = emit == "llvm-ir";
  auto phase = toLLVMIR ? std::optional<dsv3::Phase>(dsv3::Phase::LLVM)
                        : dsv3::parsePhase(emit);
  if (!phase)
    return fail("--emit=" + emit +
                " is not a phase (dsv3, tensor, linalg, llvm, llvm-ir) or artifact");
  auto module = compiler.import(*desc, *options);
  if (!module)
    return fail(module.takeError());
  if (llvm::Error e = compiler.lower(**module, *phase, *options))
    return fail(std::move(e));

  std::error_code ec;
  llvm::ToolOutputFile out(outputPath.empty() ? std::string("-") : outputPath.getValue(), ec,
                           llvm::sys::fs::OF_Text);
  if (ec)
    return fail(outputPath + ": " + ec.message());
  if (toLLVMIR) {
    if (llvm::Error e = dsv3::printLLVMIR(**module, out.os()))
      return fail(std::move(e));
  } else {
    (*module)->print(out.os());
  }
  out.keep();
  return 0;
}

/// `grad --pp P`: this rank's program of the pipeline schedule over its
/// replica's rows (`ids`, [rows, T]) as N micro-batches, each stage's
/// chunks compiled for one micro-batch; rank 0 writes the losses and every
/// parameter gradient under the one-process names.
/// The schedule of --schedule over `plan.pipeline` ranks for a replica of
/// `rows` sequences in --micro-batches parts (default: one sequence each).
llvm::Expected<dsv3::rt::PipelineSchedule> pipelineSchedule(const dsv3::rt::ParallelPlan &plan,
                                                            int64_t rows,
                                                            const std::string &rowSource) {
  auto kind = dsv3::rt::parseScheduleKind(scheduleOpt);
  if (!kind)
    return llvm::createStringError("--schedule=" + scheduleOpt +
                                   " is not a schedule (1f1b, zb1p, dualpipe, dualpipev)");
  int64_t microBatches = microBatchesOpt > 0 ? microBatchesOpt.getValue() : rows;
  if (rows % microBatches != 0)
    return llvm::createStringError(rowSource + ": a replica's " + std::to_string(rows) +
                                   " sequences do not split into " +
                                   std::to_string(microBatches) + " micro-batches");
  auto schedule = dsv3::rt::buildSchedule(*kind, plan.pipeline, microBatches);
  if (!schedule)
    return llvm::createStringError(schedule.error().message());
  return std::move(*schedule);
}

int runPipelineGrad(const dsv3::ModelDescription &desc, const std::vector<int64_t> &ids,
                    const std::vector<int64_t> &shape, const std::vector<int64_t> *segments,
                    const dsv3::rt::ParallelPlan &plan,
                    const dsv3::rt::PipelineSchedule &schedule) {
  int64_t rows = shape[0], cols = shape[1];
  int64_t perMicroBatch = rows / schedule.microBatches;
  auto options = compileOptions(desc, dsv3::CompileMode::Grad, perMicroBatch, cols,
                                segments != nullptr);
  if (!options)
    return fail(options.takeError());
  options->shapeSource = tokensPath;
  options->pipelineStages = schedule.stages;
  options->schedule = schedule;
  options->expertParallel = plan.expert;
  options->routingNodes = plan.routingNodes;
  options->maxNodesPerToken = plan.maxNodesPerToken;
  dsv3::Compiler compiler;
  auto model = loadModel(compiler, desc, *options);
  if (!model)
    return fail(model.takeError());
  dsv3::rt::Session &session = *model->session;

  auto inputs = dsv3::rt::splitRows(ids.data(), segments ? segments->data() : nullptr, rows, cols,
                                    schedule.microBatches);
  dsv3::rt::CommunicatorTransport transport(job->pipeline());
  // With --repeat N, N-1 untimed steps first: the first run of each chunk
  // pays for first-touch page faults and the exchanges' first connections,
  // which the measured bubble and overlap should not count.
  for (unsigned warm = 1; warm < std::max(1u, unsigned(repeatOpt)); ++warm) {
    dsv3::rt::PipelineRank warmup(schedule, static_cast<int>(job->pipelineRank()),
                                  session.executable(), session.parameters().data(), inputs,
                                  transport);
    if (dsv3::rt::Error e = dsv3::rt::agreeAcrossRanks(job.get(), warmup.runToEnd(),
                                                        "a warm-up step"))
      return fail(std::move(e));
  }
  dsv3::rt::PipelineRank program(schedule, static_cast<int>(job->pipelineRank()),
                                 session.executable(), session.parameters().data(), inputs,
                                 transport);
  if (!traceOpt.empty())
    if (dsv3::rt::Error e = dsv3::rt::startJobTrace(job.get()))
      return fail(std::move(e));
  // Every rank starts together, so the makespan is the last rank's end.
  if (dsv3::rt::Error e = dsv3::rt::agreeAcrossRanks(job.get(), dsv3::rt::Error::success(),
                                                      "starting the pipeline"))
    return fail(std::move(e));
  dsv3::rt::CommStats commBefore = job->commTotals();
  auto start = std::chrono::steady_clock::now();
  {
    TimingScope t = compiler.timing().nest("execute");
    if (dsv3::rt::Error e = program.runToEnd())
      return fail(std::move(e));
  }
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!traceOpt.empty())
    if (dsv3::rt::Error e = dsv3::rt::writeJobTrace(traceOpt, job.get()))
      return fail(std::move(e));

  auto timeline = program.measuredBubbles(job->pipeline(), elapsed);
  if (!timeline)
    return fail(timeline.error().message());
  if (!svgOpt.empty()) {
    auto svg = program.executedTimelineSvg(job->pipeline(), start);
    if (!svg)
      return fail(svg.error().message());
    if (job->isRoot())
      if (dsv3::rt::Error e = dsv3::rt::writeFileDurably(svgOpt, svg->data(), svg->size()))
        return fail(std::move(e));
  }
  if (plan.expert > 1) {
    auto exchanges = dsv3::rt::allToAllReport(*job, commBefore);
    if (!exchanges)
      return fail(exchanges.error().message());
    *timeline += *exchanges;
  }
  dsv3::rt::EntryPoint local, global;
  std::unique_ptr<dsv3::rt::OutputBuffers> localOutputs, jobOutputs;
  if (dsv3::rt::Error e = program.stepOutputs(job->pipeline(), local, localOutputs))
    return fail(std::move(e));
  if (dsv3::rt::Error e = dsv3::rt::gatherOutputs(local, *localOutputs, session.layout(), *job,
                                                  global, jobOutputs))
    return fail(std::move(e));
  if (!job->isRoot())
    return 0;
  std::string summary;
  if (dsv3::rt::Error e = dsv3::rt::writeOutputs(global, *jobOutputs, outputPath,
                                                 "dsv3c grad", summary))
    return fail(std::move(e));
  llvm::outs() << summary << *timeline;
  return 0;
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
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  auto data = dsv3::rt::openFixedBatch(tokensPath, desc->config.vocabSize);
  if (!data)
    return fail(data.takeError());
  std::vector<int64_t> ids;
  (*data)->fill(0, 0, 0, ids);
  std::vector<int64_t> shape{(*data)->batch(), (*data)->seqLen()};
  const std::vector<int64_t> *segments = (*data)->segments();
  auto plan = resolvePlan(*desc, shape[0], tokensPath, /*launch=*/true,
                          /*allowPipeline=*/gradient);
  if (!plan)
    return fail(plan.takeError());
  std::optional<dsv3::rt::PipelineSchedule> schedule;
  if (plan->pipeline > 1) {
    auto s = pipelineSchedule(*plan, shape[0] / plan->data, tokensPath);
    if (!s)
      return fail(s.takeError());
    schedule = std::move(*s);
  }
  if (llvm::Error e = startJob(*plan))
    return fail(std::move(e));
  std::vector<int64_t> segmentRows;
  if (job) {
    // This replica's rows of the batch.
    ids = dsv3::rt::replicaRows(ids, shape[0], shape[1], *job);
    if (segments)
      segments = &(segmentRows = dsv3::rt::replicaRows(*segments, shape[0], shape[1], *job));
    shape[0] /= plan->data;
  }
  if (schedule)
    return runPipelineGrad(*desc, ids, shape, segments, *plan, *schedule);
  auto options =
      compileOptions(*desc, gradient ? dsv3::CompileMode::Grad : dsv3::CompileMode::Eval,
                     shape[0], shape[1], segments != nullptr);
  if (!options)
    return fail(options.takeError());
  options->shapeSource = tokensPath;
  options->expertParallel = plan->expert;
  options->routingNodes = plan->routingNodes;
  options->maxNodesPerToken = plan->maxNodesPerToken;
  dsv3::Compiler compiler;
  auto model = loadModel(compiler, *desc, *options);
  if (!model)
    return fail(model.takeError());
  const std::string &entryName = model->module.entry;
  dsv3::rt::Session &session = *model->session;
  // Exchanges are measured from a common start, after every rank compiled.
  dsv3::rt::CommStats commBefore;
  if (job) {
    if (dsv3::rt::Error e = dsv3::rt::agreeAcrossRanks(job.get(), dsv3::rt::Error::success(),
                                                        "compiling"))
      return fail(std::move(e));
    commBefore = job->commTotals();
  }
  {
    TimingScope t = compiler.timing().nest("execute");
    std::vector<dsv3::rt::BufferArg> inputs{{ids.data(), shape}};
    if (segments)
      inputs.push_back({const_cast<int64_t *>(segments->data()), shape});
    std::vector<double> seconds;
    for (unsigned i = 0; i < std::max(1u, unsigned(repeatOpt)); ++i) {
      auto start = std::chrono::steady_clock::now();
      if (dsv3::rt::Error e = session.run(entryName, inputs))
        return fail(std::move(e));
      seconds.push_back(std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - start)
                            .count());
    }
    if (repeatOpt > 1) {
      std::sort(seconds.begin(), seconds.end());
      double median = seconds[seconds.size() / 2];
      llvm::errs() << llvm::format(
          "%s: median %.2f ms over %u calls, %.0f tok/s\n", command,
          median * 1e3, unsigned(repeatOpt), shape[0] * shape[1] / median);
    }
  }

  const dsv3::rt::EntryPoint *entry = session.executable().entry(entryName);
  dsv3::rt::OutputBuffers *outputs = &session.outputs(entryName);
  dsv3::rt::EntryPoint jobEntry;
  std::unique_ptr<dsv3::rt::OutputBuffers> jobOutputs;
  std::string exchanges;
  if (job && plan->expert > 1) {
    auto report = dsv3::rt::allToAllReport(*job, commBefore);
    if (!report)
      return fail(report.error().message());
    exchanges = *report;
  }
  if (job) {
    // What one process would have computed, on every rank; rank 0 writes.
    if (dsv3::rt::Error e = dsv3::rt::gatherOutputs(*entry, *outputs, session.layout(), *job,
                                                    jobEntry, jobOutputs))
      return fail(std::move(e));
    entry = &jobEntry;
    outputs = jobOutputs.get();
    if (!job->isRoot())
      return 0;
  }
  std::string summary;
  if (dsv3::rt::Error e = dsv3::rt::writeOutputs(*entry, *outputs, outputPath,
                                                 std::string("dsv3c ") + command, summary))
    return fail(std::move(e));
  llvm::outs() << summary << exchanges;
  return 0;
}

int runTrain() {
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  dsv3::rt::TrainConfig c = dsv3::recipeTrainConfig(*desc);
  if (dsv3::rt::Error e = dsv3::rt::applyOverrides(c, trainOverrides()))
    return fail(std::move(e));
  c.logJsonPath = logJsonOpt;
  c.tracePath = traceOpt;
  c.savePath = saveOpt;
  c.resumePath = resumeOpt;
  c.plotPath = !plotOpt.empty() ? plotOpt.getValue()
               : !saveOpt.empty() ? saveOpt + ".loss.svg"
                                  : std::string();

  // With a tokenizer the corpus is read through it, and every checkpoint
  // carries its files: one directory goes from training to generation.
  std::optional<dsv3::rt::Tokenizer> tokenizer;
  if (!tokenizerOpt.empty()) {
    auto tok = dsv3::rt::Tokenizer::load(tokenizerOpt);
    if (!tok)
      return fail(tok.error());
    tokenizer = std::move(*tok);
    for (const char *name : {"tokenizer.json", "tokenizer_config.json"})
      if (auto file = llvm::MemoryBuffer::getFile(tokenizer->directory() + "/" + name))
        c.checkpointFiles.push_back({name, (*file)->getBuffer().str()});
  }
  std::unique_ptr<dsv3::rt::DataSource> data;
  if (!tokensPath.empty()) {
    auto fixed = dsv3::rt::openFixedBatch(tokensPath, desc->config.vocabSize);
    if (!fixed)
      return fail(fixed.takeError());
    data = std::move(*fixed);
  } else {
    auto shape = dsv3::recipeBatchShape(*desc, given(batchSize), given(seqLen));
    int64_t b = shape.first, t = shape.second;
    auto corpus = [&]() -> dsv3::rt::Expected<std::unique_ptr<dsv3::rt::DataSource>> {
      if (!tokenizer)
        return dsv3::rt::openByteCorpus(corpusOpt, desc->config.vocabSize, b, t);
      auto text = llvm::MemoryBuffer::getFile(corpusOpt);
      if (!text)
        return dsv3::rt::fileError(corpusOpt, text.getError().message());
      return dsv3::rt::tokenCorpus(tokenizer->encode((*text)->getBuffer(), false), corpusOpt,
                                   desc->config.vocabSize, b, t);
    }();
    if (!corpus)
      return fail(corpus.takeError());
    data = std::move(*corpus);
  }

  if (dsv3::rt::Error e = dsv3::rt::checkSaveTarget(c.savePath))
    return fail(std::move(e));
  // A bad checkpoint to resume from must fail before the long compile.
  if (!c.resumePath.empty())
    if (dsv3::rt::Error e = dsv3::rt::checkResumeSource(c.resumePath))
      return fail(std::move(e));

  std::string batchSource =
      tokensPath.empty() ? std::string("--batch") : tokensPath.getValue();
  auto plan = resolvePlan(*desc, data->batch(), batchSource, /*launch=*/true,
                          /*allowPipeline=*/true);
  if (!plan)
    return fail(plan.takeError());
  // Each rank compiles one replica's step (batch / dp rows, its experts);
  // with pipeline ranks, the chunks of one pipeline micro-batch.
  int64_t replicaRows = data->batch() / plan->data, compiledRows = replicaRows;
  std::optional<dsv3::rt::PipelineSchedule> schedule;
  if (plan->pipeline > 1) {
    auto s = pipelineSchedule(*plan, replicaRows, batchSource);
    if (!s)
      return fail(s.takeError());
    schedule = std::move(*s);
    compiledRows = replicaRows / schedule->microBatches;
  }
  if (llvm::Error e = startJob(*plan))
    return fail(std::move(e));
  auto options = compileOptions(*desc, dsv3::CompileMode::TrainStep, compiledRows,
                                data->seqLen(), data->segments() != nullptr);
  if (!options)
    return fail(options.takeError());
  options->shapeSource = modelPath;
  if (schedule) {
    options->pipelineStages = schedule->stages;
    options->schedule = *schedule;
  }
  options->expertParallel = plan->expert;
  options->routingNodes = plan->routingNodes;
  options->maxNodesPerToken = plan->maxNodesPerToken;
  // ZeRO-1: each data-parallel rank keeps the AdamW state of one slice.
  dsv3::rt::OptimizerShard shard;
  if (job && plan->data > 1)
    shard = {job->dataRank(), plan->data};
  dsv3::Compiler compiler;
  auto model = loadModel(compiler, *desc, *options, shard);
  if (!model)
    return fail(model.takeError());

  bool root = !job || job->isRoot();
  if (root) {
    llvm::outs() << "training " << modelPath << " on " << data->describe() << ", "
                 << data->batch() << "x" << data->seqLen() << " tokens x "
                 << c.gradAccumulation << " micro-batches per step, "
                 << model->session->parameters().size() << " parameters";
    if (job)
      llvm::outs() << " on rank 0 of " << plan->ranks() << " (data " << plan->data
                   << " x expert " << plan->expert << " x pipeline " << plan->pipeline << ")";
    if (schedule)
      llvm::outs() << "; pipeline schedule " << dsv3::rt::scheduleName(schedule->kind) << ", "
                   << schedule->stages << " stages, " << schedule->microBatches
                   << " pipeline micro-batches per micro-batch";
    llvm::outs() << "\n";
    llvm::outs().flush();
  }
  TimingScope t = compiler.timing().nest("train");
  if (dsv3::rt::Error e = dsv3::rt::train(c, *model->session, *data, job.get(),
                                          schedule ? &*schedule : nullptr))
    return fail(std::move(e));
  if (!root)
    return 0;
  if (!c.savePath.empty())
    llvm::outs() << "checkpoint: " << c.savePath << "\n";
  if (!c.plotPath.empty())
    llvm::outs() << "loss curve: " << c.plotPath << "\n";
  return 0;
}

/// `dsv3c schedule`: a pipeline schedule's per-rank table, its simulated
/// timeline, and its bubble and activation memory next to the formulas.
int runSchedule() {
  if (!modelPath.empty())
    return fail("schedule takes no MODEL (got '" + modelPath + "'): it simulates --pp ranks");
  for (cl::opt<int64_t> *flag : {&dataParallel, &expertParallel, &ranksPerNode, &maxNodesPerToken})
    if (flag->getNumOccurrences())
      return fail("--" + flag->ArgStr.str() +
                  " does not apply to 'dsv3c schedule', which simulates the pipeline ranks only");
  if (!pipelineParallel.getNumOccurrences() || pipelineParallel < 1)
    return fail("schedule needs --pp P (pipeline ranks, at least 1)");
  if (!microBatchesOpt.getNumOccurrences() || microBatchesOpt < 1)
    return fail("schedule needs --micro-batches N (at least 1)");
  if (pipelineParallel > 1024 || microBatchesOpt > 100000)
    return fail("schedule: --pp above 1024 or --micro-batches above 100000 is not simulated");
  auto kind = dsv3::rt::parseScheduleKind(scheduleOpt);
  if (!kind)
    return fail("--schedule=" + scheduleOpt + " is not a schedule (1f1b, zb1p, dualpipe, dualpipev)");
  auto costs = dsv3::rt::parseChunkCosts(costsOpt);
  if (!costs)
    return fail(costs.takeError());
  auto schedule = dsv3::rt::buildSchedule(*kind, pipelineParallel, microBatchesOpt);
  if (!schedule)
    return fail(schedule.takeError());
  auto sim = dsv3::rt::simulate(*schedule, *costs);
  if (!sim)
    return fail(sim.takeError());
  const dsv3::rt::PipelineSchedule &s = *schedule;
  llvm::raw_ostream &os = llvm::outs();
  os << "schedule " << dsv3::rt::scheduleName(s.kind) << ": " << s.ranks << " ranks, "
     << s.stages << " stages, " << s.microBatches << " micro-batches\n";
  for (int r = 0; r < s.ranks; ++r) {
    os << "  rank " << r << " holds stage";
    std::vector<int> stages = s.stagesOn(r);
    for (size_t i = 0; i < stages.size(); ++i)
      os << (i ? " and " : " ") << stages[i];
    os << "\n";
  }
  os << "\n" << dsv3::rt::formatScheduleTable(s);
  os << llvm::format("\ncosts: F=%g B=%g (Bi=%g) W=%g F&B=%g comm=%g\n", costs->forward,
                     costs->backward, costs->backwardInput(), costs->weight, costs->pair(),
                     costs->comm);
  std::string timeline = dsv3::rt::formatTimeline(s, *sim, *costs);
  if (!timeline.empty())
    os << "timeline (one column per unit of the smallest cost, '.' idle):\n" << timeline;
  os << "\n| rank | busy | bubble | peak activations | inside a step |\n"
        "|---|---|---|---|---|\n";
  int peak = 0;
  for (int r = 0; r < s.ranks; ++r) {
    const dsv3::rt::SimulatedRank &rank = sim->ranks[r];
    os << llvm::format("| %d | %g | %g | %d | %d |\n", r, rank.busy, rank.bubble,
                       rank.peakActivations, rank.peakActivationsInStep);
    peak = std::max(peak, rank.peakActivations);
  }
  os << llvm::format("\nmakespan %g, worst bubble %g (the DualPipe README's formula: %g), "
                     "%d messages between ranks\n",
                     sim->makespan, sim->worstBubble(), dsv3::rt::bubbleFormula(s, *costs),
                     sim->messages);
  os << "peak activations " << peak << " stage x micro-batch units (formula: "
     << dsv3::rt::activationFormula(s) << ")\n";
  if (!svgOpt.empty()) {
    dsv3::rt::StepSpans spans(s.ranks);
    for (int r = 0; r < s.ranks; ++r)
      for (const dsv3::rt::SimulatedStep &step : sim->ranks[r].steps)
        spans[r].emplace_back(step.start, step.end);
    std::string title = std::string(dsv3::rt::scheduleName(s.kind)) + ", " +
                        std::to_string(s.ranks) + " ranks, " + std::to_string(s.stages) +
                        " stages, " + std::to_string(s.microBatches) + " micro-batches: simulated";
    std::string svg = dsv3::rt::timelineSvg(s, spans, title, "cost units");
    if (dsv3::rt::Error e = dsv3::rt::writeFileDurably(svgOpt, svg.data(), svg.size()))
      return fail(std::move(e));
  }
  return 0;
}

struct Command {
  const char *name;
  const char *summary;
  std::vector<cl::OptionCategory *> categories;
  int (*run)();
  bool needsModel = true;
};
const Command commands[] = {
    {"eval", "run the model on tokens; write logits, losses, routing choices",
     {&runCat, &parallelCat}, [] { return runOnTokens(false); }},
    {"grad",
     "losses and the gradient of total_loss for every trainable parameter",
     {&runCat, &gradCat, &parallelCat}, [] { return runOnTokens(true); }},
    {"train", "train with the compiled gradient and AdamW step",
     {&runCat, &gradCat, &shapeCat, &trainCat, &parallelCat}, runTrain},
    {"compile", "print the IR after a pipeline phase, or write an artifact",
     {&compileCat, &shapeCat, &gradCat, &parallelCat},
     runCompile},
    {"schedule",
     "print and simulate a pipeline schedule: per-rank table, timeline, bubble, memory",
     {&parallelCat, &scheduleCat}, runSchedule, /*needsModel=*/false},
    // Before generate: a generation flag given to another command is
    // reported as an option of the last command that has its category.
    {"serve",
     "an OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (SSE), "
     "/v1/models, /health, /tokenize",
     {&serveCat, &generateCat}, runServe},
    {"generate",
     "generate tokens from prompts: prefill, decode over a latent KV cache, MTP drafts",
     {&generateCat}, runGenerate},
    {"tokenize", "encode strings with a tokenizer.json (a JSON array of id arrays)",
     {&tokenizeCat}, runTokenize, /*needsModel=*/false},
};
/// The command-specific categories; options in none of a command's own
/// categories are rejected for it.
const cl::OptionCategory *const commandCategories[] = {
    &runCat, &gradCat, &compileCat, &shapeCat, &trainCat, &parallelCat, &scheduleCat,
    &generateCat, &tokenizeCat, &serveCat};

void printUsage() {
  llvm::outs() << "OVERVIEW: dsv3c - compiler for DeepSeek-V3-architecture models\n\n"
                  "USAGE: dsv3c <command> MODEL [options]\n"
                  "       dsv3c schedule --pp P --micro-batches N [--schedule S]\n\n"
                  "MODEL is a directory with config.json and safetensors weights,\n"
                  "or a .toml model description.\n\nCOMMANDS:\n";
  for (const Command &c : commands)
    llvm::outs() << llvm::format("  %-10s %s\n", c.name, c.summary);
  llvm::outs() << "\nRun 'dsv3c <command> --help' for a command's options.\n";
}

} // namespace dsv3c

using namespace dsv3c;

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // Compiled steps allocate their activation buffers afresh each call. Keep
  // large blocks in the heap (not mmap/munmap per buffer) and never trim it,
  // so a step reuses the previous step's pages instead of faulting in zeroed
  // ones (measured: ~1 GiB of page faults per step of the small model).
  mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's upper limit
  mallopt(M_TRIM_THRESHOLD, -1);       // -1: never give the heap back
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
    // An option may belong to several commands' categories (--svg).
    if (llvm::any_of(opt->Categories, [&](const cl::OptionCategory *cat) {
          return llvm::is_contained(command->categories, cat);
        }))
      continue;
    for (const cl::OptionCategory *cat : commandCategories)
      if (llvm::is_contained(opt->Categories, cat)) {
        const char *owner = "another command";
        for (const Command &other : commands)
          if (llvm::is_contained(other.categories, cat))
            owner = other.name;
        return fail("--" + name.str() + " is an option of 'dsv3c " + owner +
                    "', not of '" + command->name + "'");
      }
  }
  if (modelPath.empty() && command->needsModel)
    return fail(llvm::Twine(command->name) + " needs a MODEL argument");

  // Under mpirun every rank joins the world here; alone, nothing changes.
  auto world = dsv3::rt::worldCommunicator(argc, argv);
  if (!world)
    return fail(world.error().message());
  worldComm = std::move(*world);
  worldRank = worldComm->rank();
  worldSize = worldComm->size();

  std::optional<tbb::global_control> threadLimit;
  if (threads > 0)
    threadLimit.emplace(tbb::global_control::max_allowed_parallelism, threads);
  return command->run();
}
