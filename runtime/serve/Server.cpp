//===- Server.cpp - an OpenAI-compatible HTTP server ----------------------===//
//
// The HTTP routes, the checks on a request's fields (each problem a 400 in
// OpenAI's error shape), and the JSON and server-sent-event responses; the
// generation itself runs in the Engine. See Server.h.
//
//===----------------------------------------------------------------------===//
#include "runtime/serve/Server.h"

#include "runtime/serve/Engine.h"
#include "runtime/text/ChatTemplate.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

namespace dsv3::rt {
namespace {

using json = nlohmann::json;

/// Compact JSON text. Generated text is valid UTF-8 (the decoder replaces
/// bad bytes), but a bad byte must never throw on a handler thread.
std::string dumpJson(const json &j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json errorBody(const std::string &message, const std::string &type) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", nullptr},
            {"code", nullptr}}}};
}

void sendJson(httplib::Response &res, int status, const json &body) {
  res.status = status;
  res.set_content(dumpJson(body), "application/json");
}

void sendError(httplib::Response &res, int status, const std::string &message) {
  sendJson(res, status,
           errorBody(message,
                     status < 500 ? "invalid_request_error" : "server_error"));
}

//===----------------------------------------------------------------------===//
// Reading a request's fields. JSON null counts as absent, as OpenAI's
// clients send unset fields as null.
//===----------------------------------------------------------------------===//

const json *field(const json &body, const char *name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

Error badField(const char *name, const std::string &problem) {
  return Error::failure("'" + std::string(name) + "' " + problem);
}

Error readInteger(const json &body, const char *name,
                  std::optional<int64_t> &out) {
  const json *v = field(body, name);
  if (!v)
    return Error::success();
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      return badField(name, "is too large");
    out = int64_t(u);
  } else if (v->is_number_integer()) {
    out = v->get<int64_t>();
  } else {
    return badField(name, "must be an integer");
  }
  return Error::success();
}

Error readNumber(const json &body, const char *name,
                 std::optional<double> &out) {
  const json *v = field(body, name);
  if (!v)
    return Error::success();
  if (!v->is_number())
    return badField(name, "must be a number");
  out = v->get<double>();
  return Error::success();
}

Error readBool(const json &body, const char *name, bool &out) {
  const json *v = field(body, name);
  if (!v)
    return Error::success();
  if (!v->is_boolean())
    return badField(name, "must be true or false");
  out = v->get<bool>();
  return Error::success();
}

/// A list of token ids, each an integer in [0, vocab).
Error readIds(const json &list, const char *name, int64_t vocab,
              std::vector<int64_t> &ids) {
  for (const json &v : list) {
    if (!v.is_number_integer())
      return badField(name, "must hold token ids (integers)");
    // nlohmann_json reads non-negative integers as unsigned.
    bool inVocab = v.is_number_unsigned()
                       ? v.get<uint64_t>() < uint64_t(vocab)
                       : v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab;
    if (!inVocab)
      return badField(name, "holds token id " + v.dump() +
                                ", outside the model's vocabulary [0, " +
                                std::to_string(vocab) + ")");
    ids.push_back(v.is_number_unsigned() ? int64_t(v.get<uint64_t>())
                                         : v.get<int64_t>());
  }
  return Error::success();
}

/// The fields of a completion or chat request that are not its prompt.
struct ApiRequest {
  EngineRequest engine;
  bool stream = false, includeUsage = false;
  /// max_tokens (chat: max_completion_tokens first) when given.
  std::optional<int64_t> maxTokens;
};

/// Features of OpenAI's API this server does not implement: a request that
/// asks for one is refused rather than answered without it.
Error refuseUnsupported(const json &body) {
  std::optional<int64_t> n, bestOf;
  if (Error e = readInteger(body, "n", n))
    return e;
  if (n && *n != 1)
    return badField("n", "must be 1: one choice per request");
  if (Error e = readInteger(body, "best_of", bestOf))
    return e;
  if (bestOf && *bestOf != 1)
    return badField("best_of", "must be 1");
  bool echo = false;
  if (Error e = readBool(body, "echo", echo))
    return e;
  if (echo)
    return badField("echo", "is not supported");
  if (const json *v = field(body, "logprobs"))
    if (!((v->is_boolean() && !v->get<bool>()) ||
          (v->is_number_integer() && v->get<int64_t>() == 0)))
      return badField("logprobs", "are not supported");
  for (const char *penalty : {"presence_penalty", "frequency_penalty"}) {
    std::optional<double> p;
    if (Error e = readNumber(body, penalty, p))
      return e;
    if (p && *p != 0)
      return badField(penalty, "is not supported (only 0)");
  }
  return Error::success();
}

/// Sampling, stop conditions, streaming and the token budget.
Error readGenerationFields(const json &body, bool chat,
                           std::optional<int64_t> eosId, ApiRequest &r) {
  if (Error e = refuseUnsupported(body))
    return e;
  if (const json *model = field(body, "model"); model && !model->is_string())
    return badField("model", "must be a string");
  GenerateRequest &g = r.engine.generate;
  const char *budget = chat && field(body, "max_completion_tokens")
                           ? "max_completion_tokens"
                           : "max_tokens";
  if (Error e = readInteger(body, budget, r.maxTokens))
    return e;
  if (r.maxTokens && *r.maxTokens < 1)
    return badField(budget, "must be at least 1");

  std::optional<double> temperature, topP;
  std::optional<int64_t> topK;
  if (Error e = readNumber(body, "temperature", temperature))
    return e;
  if (Error e = readNumber(body, "top_p", topP))
    return e;
  if (Error e = readInteger(body, "top_k", topK))
    return e;
  if (const json *v = field(body, "seed")) {
    if (!v->is_number_integer())
      return badField("seed", "must be an integer");
    g.sampling.seed = v->is_number_unsigned() ? v->get<uint64_t>()
                                              : uint64_t(v->get<int64_t>());
  } else {
    // Unseeded requests draw differently every time, as OpenAI's do.
    static std::mutex seedMutex;
    static std::mt19937_64 seeds{std::random_device{}()};
    std::lock_guard<std::mutex> lock(seedMutex);
    g.sampling.seed = seeds();
  }
  // OpenAI's default temperature is 1 (sampling); 0 is greedy.
  g.sampling.temperature = temperature.value_or(1.0);
  if (!(g.sampling.temperature >= 0 && g.sampling.temperature <= 2))
    return badField("temperature", "must lie in [0, 2]");
  g.sampling.topP = topP.value_or(1.0);
  if (!(g.sampling.topP > 0 && g.sampling.topP <= 1))
    return badField("top_p", "must lie in (0, 1]");
  // top_k: 0 or -1 (vLLM's spelling) keep every token.
  if (topK && *topK < -1)
    return badField("top_k", "must be -1, 0 (no limit) or positive");
  g.sampling.topK = topK && *topK > 0 ? *topK : 0;

  if (const json *stop = field(body, "stop")) {
    std::vector<json> items;
    if (stop->is_string())
      items.push_back(*stop);
    else if (stop->is_array())
      items.assign(stop->begin(), stop->end());
    else
      return badField("stop", "must be a string or a list of strings");
    if (items.size() > 16)
      return badField("stop", "holds more than 16 strings");
    for (const json &s : items) {
      if (!s.is_string() || s.get<std::string>().empty())
        return badField("stop", "must hold non-empty strings");
      r.engine.stopStrings.push_back(s.get<std::string>());
    }
  }
  bool ignoreEos = false;
  if (Error e = readBool(body, "ignore_eos", ignoreEos))
    return e;
  if (eosId && !ignoreEos)
    g.stopTokens.push_back(*eosId);

  if (Error e = readBool(body, "stream", r.stream))
    return e;
  if (const json *options = field(body, "stream_options")) {
    if (!options->is_object())
      return badField("stream_options", "must be an object");
    if (Error e = readBool(*options, "include_usage", r.includeUsage))
      return e;
  }
  return Error::success();
}

/// A completion's prompt: a string, a list of token ids, or a list holding
/// one of those (OpenAI's batched form with one prompt).
Error completionPrompt(const json &body, const Tokenizer &tok, int64_t vocab,
                       std::vector<int64_t> &ids) {
  const json *prompt = field(body, "prompt");
  if (!prompt)
    return Error::failure("'prompt' is missing");
  const json *one = prompt;
  if (prompt->is_array() && prompt->size() == 1 &&
      ((*prompt)[0].is_string() || (*prompt)[0].is_array()))
    one = &(*prompt)[0];
  if (one->is_string()) {
    // The caller checks the ids against the model's vocabulary.
    ids = tok.encode(one->get<std::string>(), /*addSpecialTokens=*/true);
    return Error::success();
  }
  if (one->is_array()) {
    if (one->empty())
      return Error::failure("'prompt' is empty");
    if (std::any_of(one->begin(), one->end(),
                    [](const json &v) { return !v.is_number(); }))
      return badField(
          "prompt",
          "must be a string, a list of token ids, or a list with one of "
          "those (one prompt per request)");
    return readIds(*one, "prompt", vocab, ids);
  }
  return badField("prompt", "must be a string or a list of token ids");
}

/// OpenAI's content parts ([{type: "text", text}]) as one string.
Error flattenContent(json &message) {
  auto content = message.find("content");
  if (content == message.end() || !content->is_array())
    return Error::success();
  std::string text;
  for (const json &part : *content) {
    const json *type = part.is_object() ? field(part, "type") : nullptr;
    const json *partText = part.is_object() ? field(part, "text") : nullptr;
    if (!type || *type != "text" || !partText || !partText->is_string())
      return Error::failure(
          "'messages': only text content parts ({\"type\": \"text\", "
          "\"text\": ...}) are supported");
    text += partText->get<std::string>();
  }
  *content = text;
  return Error::success();
}

//===----------------------------------------------------------------------===//
// Streaming
//===----------------------------------------------------------------------===//

/// What one SSE response needs between calls of its content provider.
struct Stream {
  std::shared_ptr<RequestChannel> channel;
  Engine *engine = nullptr;
  bool chat = false, includeUsage = false, started = false;
  std::string id, model;
  int64_t created = 0;

  json chunk(json choice) const {
    json c = {{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({std::move(choice)})}};
    if (includeUsage)
      c["usage"] = nullptr;
    return c;
  }
  /// A choice with new text (or, for chat, the assistant's role).
  json choice(const std::string &text, const json &finishReason,
              bool role = false) const {
    json c = {
        {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finishReason}};
    if (!chat) {
      c["text"] = text;
    } else {
      json delta = json::object();
      if (role)
        delta["role"] = "assistant";
      if (role || !text.empty())
        delta["content"] = text;
      c["delta"] = delta;
    }
    return c;
  }
};

bool writeEvent(httplib::DataSink &sink, const std::string &data) {
  std::string event = "data: " + data + "\n\n";
  return sink.write(event.data(), event.size());
}

/// One call of the chunked content provider: waits a little for text,
/// writes it as a chunk, and at the end the final chunk, the usage chunk
/// and [DONE]. False (the client left) makes httplib close the connection;
/// the request is cancelled so that its slot is freed.
bool provideEvents(Stream &s, httplib::DataSink &sink) {
  auto leave = [&] {
    s.engine->cancel(*s.channel);
    return false;
  };
  if (!s.started) {
    s.started = true;
    if (s.chat && !writeEvent(sink, dumpJson(s.chunk(
                                        s.choice("", nullptr, /*role=*/true)))))
      return leave();
  }
  std::string text;
  bool ended = s.channel->wait(text, std::chrono::milliseconds(100));
  // is_writable() also sees a peer that closed while nothing was written.
  if (!sink.is_writable())
    return leave();
  if (!text.empty() &&
      !writeEvent(sink, dumpJson(s.chunk(s.choice(text, nullptr)))))
    return leave();
  if (!ended)
    return true;
  EngineOutcome o = s.channel->outcome();
  bool ok;
  if (o.finishReason == "error" || o.finishReason == "cancelled") {
    ok = writeEvent(sink,
                    dumpJson(errorBody(
                        o.error.empty() ? "the request was cancelled" : o.error,
                        "server_error")));
  } else {
    ok = writeEvent(sink, dumpJson(s.chunk(s.choice("", o.finishReason))));
    if (ok && s.includeUsage) {
      json usage = {
          {"id", s.id},
          {"object", s.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", s.created},
          {"model", s.model},
          {"choices", json::array()},
          {"usage",
           {{"prompt_tokens", o.promptTokens},
            {"completion_tokens", o.completionTokens},
            {"total_tokens", o.promptTokens + o.completionTokens}}}};
      ok = writeEvent(sink, dumpJson(usage));
    }
  }
  if (!ok || !writeEvent(sink, "[DONE]"))
    return false;
  sink.done();
  return true;
}

} // namespace

//===----------------------------------------------------------------------===//
// Server
//===----------------------------------------------------------------------===//

struct Server::Impl {
  Impl(ServerOptions options, Tokenizer tokenizer)
      : options(std::move(options)), tokenizer(std::move(tokenizer)),
        started(std::time(nullptr)) {
    auto chat = ChatTemplate::fromTokenizer(this->tokenizer);
    if (chat)
      chatTemplate = std::move(*chat);
    else
      chatTemplateError = chat.error().message();
    idBase = std::random_device{}();
    idBase = (idBase << 32) ^ std::random_device{}();
    routes();
  }

  void routes();
  void generate(const httplib::Request &req, httplib::Response &res, bool chat);
  /// The prompt ids of a chat request: its messages through the template.
  Error chatPrompt(const json &body, std::vector<int64_t> &ids) const;
  void respond(httplib::Response &res, const ApiRequest &r, bool chat,
               std::shared_ptr<RequestChannel> channel);
  std::string newId(const char *prefix) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  (unsigned long long)(idBase + nextId++));
    return prefix + std::string(hex);
  }

  ServerOptions options;
  Tokenizer tokenizer;
  std::optional<ChatTemplate> chatTemplate;
  std::string chatTemplateError;
  const int64_t started;
  uint64_t idBase = 0;
  std::atomic<uint64_t> nextId{0};

  httplib::Server http;
  std::thread listener;
  std::atomic<bool> listenerDone{false};
  /// Set once, by serve(), before `ready`; reset by stop() after the HTTP
  /// threads have ended.
  std::unique_ptr<Engine> engine;
  std::atomic<bool> ready{false};
  std::mutex stopMutex;
};

void Server::Impl::routes() {
  http.Get("/health", [this](const httplib::Request &, httplib::Response &res) {
    if (ready)
      sendJson(res, 200, {{"status", "ok"}});
    else
      sendJson(res, 503, {{"status", "loading"}});
  });
  http.Get("/v1/models", [this](const httplib::Request &,
                                httplib::Response &res) {
    json model = {{"id", options.modelName},
                  {"object", "model"},
                  {"created", started},
                  {"owned_by", "dsv3c"},
                  {"max_model_len", options.contextLength}};
    sendJson(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
  http.Post("/v1/completions",
            [this](const httplib::Request &req, httplib::Response &res) {
              generate(req, res, /*chat=*/false);
            });
  http.Post("/v1/chat/completions",
            [this](const httplib::Request &req, httplib::Response &res) {
              generate(req, res, /*chat=*/true);
            });
  http.Post("/tokenize",
            [this](const httplib::Request &req, httplib::Response &res) {
              json body = json::parse(req.body, nullptr, false);
              if (body.is_discarded() || !body.is_object())
                return sendError(res, 400, "the body must be a JSON object");
              const json *prompt = field(body, "prompt");
              if (!prompt || !prompt->is_string())
                return sendError(res, 400, "'prompt' must be a string");
              bool addSpecial = true;
              if (Error e = readBool(body, "add_special_tokens", addSpecial))
                return sendError(res, 400, e.message());
              std::vector<int64_t> ids =
                  tokenizer.encode(prompt->get<std::string>(), addSpecial);
              sendJson(res, 200,
                       {{"tokens", ids},
                        {"count", ids.size()},
                        {"max_model_len", options.contextLength}});
            });
  http.Post("/detokenize", [this](const httplib::Request &req,
                                  httplib::Response &res) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return sendError(res, 400, "the body must be a JSON object");
    const json *tokens = field(body, "tokens");
    if (!tokens || !tokens->is_array())
      return sendError(res, 400, "'tokens' must be a list of token ids");
    std::vector<int64_t> ids;
    if (Error e = readIds(*tokens, "tokens", tokenizer.vocabSize(), ids))
      return sendError(res, 400, e.message());
    sendJson(res, 200,
             {{"prompt", tokenizer.decode(ids, /*skipSpecialTokens=*/false)}});
  });
  http.Get("/metrics", [this](const httplib::Request &,
                              httplib::Response &res) {
    EngineCounters c = ready ? engine->counters() : EngineCounters();
    std::string text;
    auto metric = [&](const char *name, const char *type, const char *help,
                      int64_t value) {
      text += std::string("# HELP dsv3c:") + name + " " + help +
              "\n# TYPE dsv3c:" + name + " " + type + "\ndsv3c:" + name + " " +
              std::to_string(value) + "\n";
    };
    metric("requests_finished_total", "counter",
           "Requests that ended by stop or length.", c.finished);
    metric(
        "requests_cancelled_total", "counter",
        "Requests cancelled, mostly by a streaming client that disconnected.",
        c.cancelled);
    metric("prompt_tokens_total", "counter", "Prompt tokens prefilled.",
           c.promptTokens);
    metric("generation_tokens_total", "counter", "Tokens generated.",
           c.generatedTokens);
    metric("requests_running", "gauge", "Requests in a decode slot.",
           c.running);
    metric("requests_waiting", "gauge", "Requests waiting for a slot.",
           c.waiting);
    res.set_content(text, "text/plain; version=0.0.4");
  });
  // Unknown paths (httplib leaves the body empty) and httplib's own errors.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request &req, httplib::Response &res) {
        if (!res.body.empty())
          return httplib::Server::HandlerResponse::Unhandled;
        std::string message =
            res.status == 404   ? "no route for " + req.method + " " + req.path
            : res.status == 413 ? std::string("the request body is too large")
                                : "HTTP error " + std::to_string(res.status);
        res.set_content(dumpJson(errorBody(
                            message, res.status < 500 ? "invalid_request_error"
                                                      : "server_error")),
                        "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request &,
                                httplib::Response &res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception &e) {
      what += std::string(": ") + e.what();
    } catch (...) {
    }
    sendError(res, 500, what);
  });
}

Error Server::Impl::chatPrompt(const json &body,
                               std::vector<int64_t> &ids) const {
  const json *messages = field(body, "messages");
  if (!messages)
    return Error::failure("'messages' is missing");
  if (!messages->is_array() || messages->empty())
    return badField("messages", "must be a non-empty list of messages");
  json copy = *messages;
  for (json &m : copy) {
    if (!m.is_object())
      return badField("messages", "must hold objects");
    if (Error e = flattenContent(m))
      return e;
  }
  if (!chatTemplate)
    return Error::failure("this model's chat template cannot be rendered: " +
                          chatTemplateError);
  auto parsed = parseChatMessages(dumpJson(copy), "messages");
  if (!parsed)
    return Error::failure(parsed.error().message());
  std::string text = chatTemplate->render(*parsed, /*addGenerationPrompt=*/true,
                                          tokenizer.bosToken());
  // The rendering holds the BOS token already.
  ids = tokenizer.encode(text, /*addSpecialTokens=*/false);
  return Error::success();
}

void Server::Impl::generate(const httplib::Request &req, httplib::Response &res,
                            bool chat) {
  if (!ready)
    return sendError(res, 503, "the model is still loading");
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded())
    return sendError(res, 400, "the request body is not valid JSON");
  if (!body.is_object())
    return sendError(res, 400, "the request body must be a JSON object");
  ApiRequest r;
  if (Error e = readGenerationFields(body, chat, tokenizer.eosId(), r))
    return sendError(res, 400, e.message());
  std::vector<int64_t> &prompt = r.engine.generate.prompt;
  if (Error e =
          chat ? chatPrompt(body, prompt)
               : completionPrompt(body, tokenizer, engine->vocab(), prompt))
    return sendError(res, 400, e.message());
  for (int64_t id : prompt)
    if (id < 0 || id >= engine->vocab())
      return sendError(res, 400,
                       "the prompt holds token " + std::to_string(id) +
                           ", outside the model's vocabulary of " +
                           std::to_string(engine->vocab()));
  // The context is the cache: prompt and completion together.
  int64_t context = engine->cacheCapacity(), promptTokens = prompt.size();
  if (promptTokens > engine->promptCapacity() || promptTokens >= context)
    return sendError(
        res, 400,
        "the prompt has " + std::to_string(promptTokens) +
            " tokens; this server takes prompts of at most " +
            std::to_string(std::min(engine->promptCapacity(), context - 1)) +
            " tokens (its context is " + std::to_string(context) + ")");
  int64_t maxTokens = r.maxTokens.value_or(chat ? context - promptTokens : 16);
  if (promptTokens + maxTokens > context)
    return sendError(
        res, 400,
        "this model's maximum context length is " + std::to_string(context) +
            " tokens, but " + std::to_string(promptTokens + maxTokens) +
            " were requested (" + std::to_string(promptTokens) +
            " in the prompt, " + std::to_string(maxTokens) +
            " for the completion); reduce the prompt or max_tokens");
  r.engine.generate.maxNewTokens = maxTokens;

  auto channel = engine->submit(r.engine);
  if (!channel)
    return sendError(res, 503, channel.error().message());
  respond(res, r, chat, std::move(*channel));
}

void Server::Impl::respond(httplib::Response &res, const ApiRequest &r,
                           bool chat, std::shared_ptr<RequestChannel> channel) {
  std::string id = newId(chat ? "chatcmpl-" : "cmpl-");
  int64_t created = std::time(nullptr);
  if (r.stream) {
    auto stream = std::make_shared<Stream>();
    stream->channel = channel;
    stream->engine = engine.get();
    stream->chat = chat;
    stream->includeUsage = r.includeUsage;
    stream->id = id;
    stream->model = options.modelName;
    stream->created = created;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [stream](size_t, httplib::DataSink &sink) {
          try {
            return provideEvents(*stream, sink);
          } catch (...) {
            stream->engine->cancel(*stream->channel);
            return false;
          }
        },
        // Whatever ended the response, a request still running is cancelled.
        [stream](bool) { stream->engine->cancel(*stream->channel); });
    return;
  }
  // Without a stream there is no write to fail: the request runs to its end
  // even when the client has gone.
  std::string text;
  channel->waitForEnd(text);
  EngineOutcome o = channel->outcome();
  if (o.finishReason == "error" || o.finishReason == "cancelled")
    return sendError(res, 500,
                     o.error.empty() ? "the request was cancelled" : o.error);
  json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", o.finishReason}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  sendJson(res, 200,
           {{"id", id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", options.modelName},
            {"choices", json::array({choice})},
            {"usage",
             {{"prompt_tokens", o.promptTokens},
              {"completion_tokens", o.completionTokens},
              {"total_tokens", o.promptTokens + o.completionTokens}}}});
}

Server::Server(ServerOptions options, Tokenizer tokenizer)
    : impl(std::make_unique<Impl>(std::move(options), std::move(tokenizer))) {}

Server::~Server() { stop(); }

Expected<int> Server::listen() {
  Impl &s = *impl;
  // Each waiting request holds an HTTP thread: room for every slot, the
  // queue, and a few more so that /health and refusals still get through.
  size_t threads = size_t(std::max<int64_t>(s.options.slots, 1) +
                          std::max<int64_t>(s.options.maxQueue, 0) + 8);
  s.http.new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  s.http.set_payload_max_length(s.options.maxBodyBytes);
  int port = s.options.port;
  bool bound = port == 0 ? (port = s.http.bind_to_any_port(s.options.host)) > 0
                         : s.http.bind_to_port(s.options.host, port);
  if (!bound)
    return Error::failure(
        "cannot listen on " + s.options.host + ":" +
        std::to_string(s.options.port) +
        " (is the port in use, or the host not an address of this machine?)");
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    s.listenerDone = true;
  });
  return port;
}

Error Server::serve(Generator &generator) {
  Impl &s = *impl;
  std::lock_guard<std::mutex> lock(s.stopMutex);
  if (s.engine)
    return Error::failure("the server already has a generator");
  s.engine =
      std::make_unique<Engine>(generator, s.tokenizer, s.options.maxQueue);
  s.engine->start();
  s.ready = true;
  return Error::success();
}

void Server::stop() {
  Impl &s = *impl;
  std::lock_guard<std::mutex> lock(s.stopMutex);
  // Requests end first, so that no HTTP thread is left waiting on one.
  if (s.engine)
    s.engine->stop();
  if (s.listener.joinable()) {
    // httplib's stop() is a no-op until its accept loop has started.
    while (!s.listenerDone && !s.http.is_running())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.http.stop();
    s.listener.join(); // also joins the HTTP threads
  }
  s.ready = false;
  s.engine.reset();
}

} // namespace dsv3::rt
