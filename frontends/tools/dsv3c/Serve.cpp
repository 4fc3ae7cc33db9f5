//===- Serve.cpp - dsv3c serve: an OpenAI-compatible HTTP server ----------===//
//
// `serve` binds its port first, so that /health answers 503 "loading" while
// the generation module compiles: --parallel decode slots over a latent
// cache of --max-context rows each, prompts of up to --max-prompt tokens
// through @prefill and shorter @prefill_<n> entries (the generator takes the
// shortest that holds a prompt). It then loads the weights and hands the
// Generator to rt::Server (runtime/serve), whose engine thread batches the
// requests continuously. SIGINT and SIGTERM stop it cleanly: the requests
// still running end with an error event, then the port closes.
//
//===----------------------------------------------------------------------===//
#include "frontends/tools/dsv3c/Driver.h"

#include "runtime/generate/Generator.h"
#include "runtime/serve/Server.h"
#include "runtime/text/Tokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <pthread.h>
#include <thread>

namespace cl = llvm::cl;

namespace dsv3c {
namespace {

cl::opt<std::string> hostOpt("host", cl::desc("Address to listen on"),
                             cl::init("127.0.0.1"), cl::cat(serveCat));
cl::opt<int> portOpt(
    "port",
    cl::desc(
        "Port to listen on (0: a free one, named on the 'listening on' line)"),
    cl::init(8080), cl::cat(serveCat));
cl::opt<int64_t>
    parallelOpt("parallel",
                cl::desc("Decode slots: requests generated at once"),
                cl::init(4), cl::cat(serveCat));
cl::opt<int64_t> maxContextOpt(
    "max-context",
    cl::desc(
        "Tokens of one request, prompt and completion (cache rows per slot)"),
    cl::init(256), cl::cat(serveCat));
cl::opt<int64_t> maxPromptOpt(
    "max-prompt",
    cl::desc("Longest prompt in tokens (default: --max-context - 1)"),
    cl::init(0), cl::cat(serveCat));
cl::opt<int64_t> maxQueueOpt(
    "max-queue",
    cl::desc("Requests that may wait for a slot; more are answered 503"),
    cl::init(64), cl::cat(serveCat));
cl::opt<std::string>
    modelNameOpt("model-name",
                 cl::desc("The model's id in /v1/models and in responses "
                          "(default: MODEL's name)"),
                 cl::value_desc("NAME"), cl::cat(serveCat));

/// Flags of the generation category that only generate reads: the server
/// takes these per request.
const char *const perRequestFlags[] = {"prompt",      "chat",  "max-new-tokens",
                                       "temperature", "top-k", "top-p",
                                       "tokens",      "seed"};

/// The model's name: its directory's, or the description file's stem.
std::string defaultModelName(const std::string &path) {
  llvm::StringRef p = llvm::sys::path::remove_leading_dotslash(path);
  while (p.size() > 1 && llvm::sys::path::is_separator(p.back()))
    p = p.drop_back();
  std::string name = llvm::sys::fs::is_directory(p)
                         ? llvm::sys::path::filename(p).str()
                         : llvm::sys::path::stem(p).str();
  return name.empty() || name == "." ? "model" : name;
}

/// --tokenizer, else the tokenizer.json beside the model: serving text
/// needs one.
llvm::Expected<dsv3::rt::Tokenizer> serverTokenizer() {
  auto found = findTokenizer();
  if (!found)
    return found.takeError();
  if (!*found)
    return llvm::createStringError("serve needs a tokenizer: --tokenizer DIR, or "
                                   "tokenizer.json beside the model");
  return std::move(**found);
}

/// SIGINT and SIGTERM, taken by one thread with sigwait(): every other
/// thread is started after they are blocked and inherits the mask. Before
/// the server runs there is nothing to end cleanly, and a compile cannot
/// be interrupted, so a signal then exits at once.
class StopSignals {
public:
  StopSignals() {
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([this] { waitForSignal(); }).detach();
  }
  /// Serving from now on: a signal ends wait() instead of the process.
  void serving() {
    std::lock_guard<std::mutex> lock(mutex);
    loading = false;
  }
  /// Blocks until SIGINT or SIGTERM; returns it.
  int wait() {
    std::unique_lock<std::mutex> lock(mutex);
    arrived.wait(lock, [&] { return received != 0; });
    return received;
  }

private:
  void waitForSignal() {
    int sig = 0;
    if (sigwait(&set, &sig) != 0)
      return;
    std::lock_guard<std::mutex> lock(mutex);
    if (loading) {
      std::fprintf(stderr, "dsv3c serve: %s while loading; exiting\n",
                   sig == SIGINT ? "interrupted" : "terminated");
      std::_Exit(128 + sig);
    }
    received = sig;
    arrived.notify_all();
  }

  sigset_t set;
  std::mutex mutex;
  std::condition_variable arrived;
  bool loading = true;
  int received = 0;
};

} // namespace

int runServe() {
  auto &registered = cl::getRegisteredOptions();
  auto given = [&](const char *name) {
    auto it = registered.find(name);
    return it != registered.end() && it->second->getNumOccurrences() > 0;
  };
  for (const char *name : perRequestFlags)
    if (given(name))
      return fail(llvm::Twine("--") + name +
                  " is not an option of 'dsv3c serve': each request carries "
                  "its prompt, sampling, seed and max_tokens");
  if (given("o"))
    return fail("-o is not an option of 'dsv3c serve': it writes no file");
  if (kvCacheDtypeOpt != "f32" && kvCacheDtypeOpt != "bf16")
    return fail("--kv-cache-dtype must be f32 or bf16, got '" +
                kvCacheDtypeOpt + "'");
  if (speculativeOpt != "mtp" && speculativeOpt != "none")
    return fail("--speculative must be mtp or none, got '" + speculativeOpt +
                "'");
  if (portOpt < 0 || portOpt > 65535)
    return fail("--port must lie in [0, 65535] (0: any free port)");
  if (parallelOpt < 1 || parallelOpt > 1024)
    return fail("--parallel must lie in [1, 1024]");
  if (maxContextOpt < 2)
    return fail("--max-context must be at least 2 (a prompt token and a "
                "generated one)");
  int64_t maxPrompt =
      maxPromptOpt ? maxPromptOpt.getValue() : maxContextOpt - 1;
  if (maxPrompt < 1 || maxPrompt >= maxContextOpt)
    return fail("--max-prompt must lie in [1, --max-context - 1 = " +
                std::to_string(maxContextOpt - 1) + "]");
  if (maxQueueOpt < 0)
    return fail("--max-queue must not be negative");
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  if (maxContextOpt > desc->config.maxPositionEmbeddings)
    return fail("--max-context " + std::to_string(maxContextOpt) +
                " exceeds the model's max_position_embeddings (" +
                std::to_string(desc->config.maxPositionEmbeddings) + ")");
  bool speculative = speculativeOpt == "mtp";
  if (speculative && desc->config.numNextnPredictLayers == 0)
    return fail(desc->path + ": --speculative mtp needs an MTP layer "
                             "(num_nextn_predict_layers is 0)");
  auto tokenizer = serverTokenizer();
  if (!tokenizer)
    return fail(tokenizer.takeError());

  dsv3::rt::ServerOptions serverOptions;
  serverOptions.host = hostOpt;
  serverOptions.port = portOpt;
  serverOptions.modelName = modelNameOpt.empty() ? defaultModelName(modelPath)
                                                 : modelNameOpt.getValue();
  serverOptions.slots = parallelOpt;
  serverOptions.contextLength = maxContextOpt;
  serverOptions.maxQueue = maxQueueOpt;

  // Before any thread starts, so that every thread inherits the mask. Never
  // freed: its detached thread may still wait when serve fails and returns.
  StopSignals &signals = *new StopSignals;
  dsv3::rt::Server server(serverOptions, *tokenizer);
  auto port = server.listen();
  if (!port)
    return fail(port.error());
  std::string host = hostOpt.getValue();
  if (host.find(':') != std::string::npos)
    host = "[" + host + "]";
  llvm::errs() << "dsv3c serve: listening on http://" << host << ":" << *port
               << "\n";
  llvm::errs().flush();

  auto options = compileOptions(*desc, dsv3::CompileMode::Generate, parallelOpt,
                                maxPrompt, false);
  if (!options)
    return fail(options.takeError());
  options->generate.decodeBatch = parallelOpt;
  options->generate.capacity = maxContextOpt;
  options->generate.prefillBatch = 1;
  options->generate.prefillLen = maxPrompt;
  // Shorter prompts run through the shortest of these that holds them.
  for (int64_t n = 16; n < maxPrompt; n *= 4)
    options->generate.shorterPrefills.push_back(n);
  dsv3::Compiler compiler;
  auto loaded = loadGenerator(compiler, *desc, *options, speculative);
  if (!loaded)
    return fail(loaded.takeError());
  dsv3::rt::Generator &g = *loaded->generator;
  g.setUsableVocab(tokenizer->vocabSize());
  if (dsv3::rt::Error e = server.serve(g))
    return fail(std::move(e));
  signals.serving();
  llvm::errs() << "dsv3c serve: ready: model '" << serverOptions.modelName
               << "', " << parallelOpt << " slots of " << maxContextOpt
               << " tokens, prompts up to " << maxPrompt << " tokens"
               << (speculative ? ", MTP speculative decoding" : "")
               << (kvCacheDtypeOpt == "bf16" ? ", BF16 latent cache" : "")
               << "\n";
  llvm::errs().flush();

  int sig = signals.wait();
  llvm::errs() << "dsv3c serve: "
               << (sig == SIGINT ? "interrupted" : "terminated")
               << "; stopping\n";
  llvm::errs().flush();
  server.stop();
  return 0;
}

} // namespace dsv3c
