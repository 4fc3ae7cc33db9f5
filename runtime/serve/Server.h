//===- Server.h - an OpenAI-compatible HTTP server --------------*- C++ -*-===//
//
// Part of the serving runtime (no LLVM); `dsv3c serve` (frontends/tools/
// dsv3c/Serve.cpp) compiles the generation module and hands its Generator
// to a Server. The server speaks OpenAI's HTTP API over cpp-httplib:
//
//   POST /v1/completions, POST /v1/chat/completions (JSON or SSE streams),
//   GET /v1/models, GET /health, POST /tokenize, POST /detokenize,
//   GET /metrics (Prometheus text).
//
// It binds before the model is compiled, answering /health with 503
// {"status":"loading"} until serve() gets the generator. Requests are
// checked here (OpenAI's 400 error shape) and run by the Engine
// (runtime/serve/Engine.h): one thread that owns the Generator and batches
// requests continuously over its decode slots. A streaming client that
// disconnects has its request cancelled, which frees its slot.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_SERVE_SERVER_H
#define DSV3_RUNTIME_SERVE_SERVER_H

#include "runtime/generate/Generator.h"
#include "runtime/support/Error.h"
#include "runtime/text/Tokenizer.h"

#include <cstdint>
#include <memory>
#include <string>

namespace dsv3::rt {

struct ServerOptions {
  std::string host = "127.0.0.1";
  /// 0: the operating system chooses a free port (listen() returns it).
  int port = 8080;
  /// The id of the one model in /v1/models and in every response.
  std::string modelName = "model";
  /// The generator's decode slots and context (cache rows per slot), known
  /// before it is compiled: they size the HTTP thread pool and /v1/models.
  int64_t slots = 4, contextLength = 256;
  /// Requests that may wait for a slot; more are refused with 503.
  int64_t maxQueue = 64;
  /// The largest request body accepted.
  size_t maxBodyBytes = 8u << 20;
};

class Server {
public:
  Server(ServerOptions options, Tokenizer tokenizer);
  ~Server();
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;

  /// Binds host:port and answers in the background ("loading" until
  /// serve()). Returns the port bound.
  Expected<int> listen();
  /// Starts generating with `generator`: from now until stop() the
  /// server's engine thread alone uses it.
  Error serve(Generator &generator);
  /// Ends every request, then the HTTP server; the generator is free again
  /// afterwards. Idempotent.
  void stop();

private:
  struct Impl;
  std::unique_ptr<Impl> impl; // keeps httplib out of this header
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_SERVE_SERVER_H
