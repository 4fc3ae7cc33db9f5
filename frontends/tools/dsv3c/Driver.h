//===- Driver.h - what dsv3c's command files share --------------*- C++ -*-===//
//
// The dsv3c driver is split by command family: dsv3c.cpp (compile, eval,
// grad, train, schedule and the command table), Generate.cpp (generate,
// tokenize) and Serve.cpp (serve). This header is the little they share: the
// common flags, the one-line error format and the compile options built from
// flags.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_TOOLS_DSV3C_DRIVER_H
#define DSV3_FRONTENDS_TOOLS_DSV3C_DRIVER_H

#include "frontends/compiler/Compiler.h"
#include "runtime/support/Error.h"
#include "runtime/generate/Generator.h"
#include "runtime/text/Tokenizer.h"

#include "llvm/Support/CommandLine.h"

#include <optional>
#include <string>

namespace dsv3c {

extern llvm::cl::OptionCategory commonCat, trainCat, generateCat, tokenizeCat,
    serveCat;
extern llvm::cl::opt<std::string> modelPath, outputPath, tokensPath;
extern llvm::cl::opt<uint64_t> seedOpt;
extern llvm::cl::opt<unsigned> repeatOpt;
/// Generation flags that serve shares (defined in Generate.cpp).
extern llvm::cl::opt<std::string> speculativeOpt, tokenizerOpt,
    kvCacheDtypeOpt;

/// One-line error in the driver's format; returns the exit status 1.
int fail(const llvm::Twine &msg);
int fail(llvm::Error e);
int fail(dsv3::rt::Error e);

/// The compile cache directory ("" with --no-cache).
std::string cacheDirectory();
/// Compile options from the flags on top of the description's recipe.
llvm::Expected<dsv3::CompileOptions>
compileOptions(const dsv3::ModelDescription &desc, dsv3::CompileMode mode,
               int64_t batch, int64_t seq, bool packed);

/// The tokenizer of --tokenizer, else the one beside the model (its
/// directory, or the .toml's), else none.
llvm::Expected<std::optional<dsv3::rt::Tokenizer>> findTokenizer();

/// A compiled generation module, its weights and the generator over them.
struct LoadedGenerator {
  dsv3::LoadedModel model;
  std::unique_ptr<dsv3::rt::Generator> generator;
};
/// Compiles and loads the generation module of `options.generate` (the
/// speculative entries and the cache type from the flags) and makes its
/// generator.
llvm::Expected<LoadedGenerator> loadGenerator(dsv3::Compiler &compiler,
                                              const dsv3::ModelDescription &desc,
                                              dsv3::CompileOptions options,
                                              bool speculative);

int runGenerate();
int runTokenize();
int runServe();

} // namespace dsv3c

#endif // DSV3_FRONTENDS_TOOLS_DSV3C_DRIVER_H
