//===- ServeTest.cpp - dsv3c serve over loopback HTTP ---------------------===//
//
// One `dsv3c serve` of the bundled tiny model (2 decode slots, a context of
// 64 tokens) for the suite, spoken to as an OpenAI client would: health and
// models; greedy completions equal to Hugging Face's golden generations,
// plain, streamed (SSE, usage chunk) and two at once (continuous batching);
// chat through the golden chat rendering; bad requests answered 400 in
// OpenAI's error shape; stop strings; a streaming client that disconnects
// frees its slot. The server must stop cleanly on SIGTERM.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include "runtime/text/Tokenizer.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace dsv3;
using namespace dsv3::test;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

/// The server process shared by the suite's tests.
struct ServerProcess {
  pid_t pid = -1;
  int port = 0;
  std::string log;
  /// Why the server is not usable ("" when it is).
  std::string problem = "not started";
  /// The first /health answer: 503 "loading" or, after a fast cached
  /// load, already 200.
  int firstHealthStatus = 0;
  std::string firstHealthBody;
};
ServerProcess server;

std::string logText() {
  std::ifstream in(server.log);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Reply {
  int status = -1;
  std::string body, contentType;
};

Reply request(const std::string &method, const std::string &path,
              const std::string &body = "") {
  httplib::Client client("127.0.0.1", server.port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(120, 0);
  auto r = method == "GET"
               ? client.Get(path.c_str())
               : client.Post(path.c_str(), body, "application/json");
  if (!r)
    return {-1, "no answer: " + httplib::to_string(r.error()), ""};
  return {r->status, r->body, r->get_header_value("Content-Type")};
}

Reply post(const std::string &path, const json &body) {
  return request("POST", path, body.dump());
}

/// The body as JSON (discarded when it is not).
json parsed(const Reply &r) { return json::parse(r.body, nullptr, false); }

/// The `data:` payloads of a server-sent-event stream, in order.
std::vector<std::string> events(const std::string &stream) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < stream.size()) {
    size_t end = stream.find("\n\n", at);
    std::string event = stream.substr(
        at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? stream.size() : end + 2;
    if (event.rfind("data: ", 0) == 0)
      out.push_back(event.substr(6));
    else
      ADD_FAILURE() << "not a data event: '" << event << "'";
  }
  return out;
}

/// A counter or gauge of /metrics (-1 when missing).
int64_t metric(const std::string &name) {
  Reply r = request("GET", "/metrics");
  std::istringstream lines(r.body);
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind("dsv3c:" + name + " ", 0) == 0)
      return std::stoll(line.substr(name.size() + 7));
  return -1;
}

const rt::Tokenizer &tokenizer() {
  static rt::Tokenizer tok = [] {
    auto t =
        rt::Tokenizer::load(sourcePath("tests/golden/infer/tokenizer-512"));
    if (!t) {
      ADD_FAILURE() << t.error().message();
      std::abort();
    }
    return std::move(*t);
  }();
  return tok;
}

/// Row `row` of the golden greedy generation (Hugging Face, 24 tokens).
struct Golden {
  std::vector<int64_t> prompt, generated;
  std::string text; ///< the generated ids decoded, as the server decodes
};
Golden golden(int row) {
  std::unique_ptr<SafetensorsFile> f(
      openOrFail(sourcePath("tests/golden/infer/tiny-generate.safetensors")));
  Golden g;
  if (!f)
    return g;
  std::vector<int64_t> prompts = readI64(*f, "prompt_ids"),
                       generated = readI64(*f, "generated_ids");
  g.prompt.assign(prompts.begin() + row * 16, prompts.begin() + (row + 1) * 16);
  g.generated.assign(generated.begin() + row * 24,
                     generated.begin() + (row + 1) * 24);
  g.text = tokenizer().decode(g.generated, /*skipSpecialTokens=*/true);
  return g;
}

json greedyRequest(const Golden &g) {
  return {{"prompt", g.prompt},
          {"max_tokens", 24},
          {"temperature", 0},
          {"ignore_eos", true}};
}

void expectUsage(const json &usage, int64_t prompt, int64_t completion) {
  EXPECT_EQ(usage.value("prompt_tokens", -1), prompt) << usage.dump();
  EXPECT_EQ(usage.value("completion_tokens", -1), completion) << usage.dump();
  EXPECT_EQ(usage.value("total_tokens", -1), prompt + completion)
      << usage.dump();
}

/// A greedy completion of golden row `row`, checked against Hugging Face.
void expectGoldenCompletion(int row) {
  Golden g = golden(row);
  Reply r = post("/v1/completions", greedyRequest(g));
  ASSERT_EQ(r.status, 200) << r.body;
  json body = parsed(r);
  ASSERT_TRUE(body.is_object()) << r.body;
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny");
  ASSERT_EQ(body["choices"].size(), 1u) << r.body;
  EXPECT_EQ(body["choices"][0]["text"], g.text) << "row " << row;
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  expectUsage(body["usage"], 16, 24);
}

class ServeTest : public ::testing::Test {
protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override { ASSERT_EQ(server.problem, "") << logText(); }
};

void ServeTest::SetUpTestSuite() {
  signal(SIGPIPE, SIG_IGN);
  server = ServerProcess();
  server.log = scratchDir("serve") + "/serve.log";
  std::string model = sourcePath("models/tiny"),
              tok = sourcePath("tests/golden/infer/tokenizer-512");
  server.pid = fork();
  if (server.pid == 0) {
    int fd = open(server.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(DSV3C_PATH, DSV3C_PATH, "serve", model.c_str(), "--tokenizer",
          tok.c_str(), "--port", "0", "--parallel", "2", "--max-context", "64",
          (char *)nullptr);
    _exit(127);
  }
  if (server.pid < 0) {
    server.problem = "fork failed";
    return;
  }
  // The first compile takes about 30 s on 2 cores; fail rather than hang.
  auto deadline = Clock::now() + std::chrono::seconds(150);
  const std::string listening = "dsv3c serve: listening on http://127.0.0.1:";
  while (server.port == 0) {
    std::string text = logText();
    size_t at = text.find(listening);
    if (at != std::string::npos && text.find('\n', at) != std::string::npos)
      server.port = std::atoi(text.c_str() + at + listening.size());
    int status = 0;
    if (server.port == 0 &&
        waitpid(server.pid, &status, WNOHANG) == server.pid) {
      server.pid = -1;
      server.problem = "dsv3c serve exited before listening";
      return;
    }
    if (server.port == 0 && Clock::now() > deadline) {
      server.problem = "dsv3c serve did not listen within 150 s";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (;;) {
    Reply health = request("GET", "/health");
    if (!server.firstHealthStatus) {
      server.firstHealthStatus = health.status;
      server.firstHealthBody = health.body;
    }
    if (health.status == 200)
      break;
    int status = 0;
    if (waitpid(server.pid, &status, WNOHANG) == server.pid) {
      server.pid = -1;
      server.problem = "dsv3c serve exited while loading";
      return;
    }
    if (Clock::now() > deadline) {
      server.problem = "dsv3c serve was not ready within 150 s (/health: " +
                       std::to_string(health.status) + " " + health.body + ")";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  server.problem = "";
}

void ServeTest::TearDownTestSuite() {
  if (server.pid <= 0)
    return;
  // SIGTERM must end it cleanly (exit status 0) and soon.
  kill(server.pid, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(20);
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(server.pid, &status, WNOHANG)) == 0 &&
         Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (done != server.pid) {
    kill(server.pid, SIGKILL);
    waitpid(server.pid, &status, 0);
    ADD_FAILURE() << "dsv3c serve did not stop within 20 s of SIGTERM\n"
                  << logText();
  } else {
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "dsv3c serve did not stop cleanly on SIGTERM\n"
        << logText();
  }
  server.pid = -1;
}

TEST_F(ServeTest, HealthAndModels) {
  if (server.firstHealthStatus != 200) {
    EXPECT_EQ(server.firstHealthStatus, 503);
    EXPECT_EQ(json::parse(server.firstHealthBody, nullptr, false),
              json({{"status", "loading"}}));
  }
  Reply health = request("GET", "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(parsed(health), json({{"status", "ok"}}));
  Reply models = request("GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  json body = parsed(models);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 1u) << models.body;
  EXPECT_EQ(body["data"][0]["id"], "tiny");
  EXPECT_EQ(body["data"][0]["object"], "model");
  EXPECT_EQ(body["data"][0]["owned_by"], "dsv3c");
}

TEST_F(ServeTest, GreedyCompletionEqualsHuggingFace) {
  expectGoldenCompletion(0);
}

TEST_F(ServeTest, StreamedCompletionEqualsPlain) {
  Golden g = golden(0);
  json req = greedyRequest(g);
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  Reply r = post("/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.contentType.rfind("text/event-stream", 0), 0u) << r.contentType;
  std::vector<std::string> data = events(r.body);
  ASSERT_GE(data.size(), 3u) << r.body;
  EXPECT_EQ(data.back(), "[DONE]");
  std::string text, finish;
  json usage;
  for (size_t i = 0; i + 1 < data.size(); ++i) {
    json chunk = json::parse(data[i], nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << data[i];
    EXPECT_EQ(chunk["object"], "text_completion");
    if (chunk["choices"].empty()) {
      usage = chunk["usage"]; // the usage chunk comes last
      EXPECT_EQ(i + 2, data.size())
          << "the usage chunk is not the last before [DONE]";
      continue;
    }
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, g.text);
  EXPECT_EQ(finish, "length");
  ASSERT_TRUE(usage.is_object()) << r.body;
  expectUsage(usage, 16, 24);
}

TEST_F(ServeTest, ConcurrentRequestsEqualAlone) {
  // Both slots at once: each sequence's tokens are those it gets alone.
  std::thread first([] { expectGoldenCompletion(0); });
  std::thread second([] { expectGoldenCompletion(1); });
  first.join();
  second.join();
}

TEST_F(ServeTest, ChatCompletion) {
  std::ifstream in(sourcePath("tests/golden/infer/encodings.json"));
  json encodings = json::parse(in, nullptr, false);
  const json *entry = nullptr;
  for (const json &c : encodings["tokenizer-512"]["chat"])
    if (c["add_generation_prompt"] == true && !entry)
      entry = &c;
  ASSERT_NE(entry, nullptr);
  json req = {{"model", "tiny"},
              {"messages", (*entry)["messages"]},
              {"max_tokens", 8},
              {"temperature", 0}};
  Reply r = post("/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  json body = parsed(r);
  EXPECT_EQ(body["object"], "chat.completion");
  ASSERT_EQ(body["choices"].size(), 1u) << r.body;
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  ASSERT_TRUE(body["choices"][0]["message"]["content"].is_string()) << r.body;
  int64_t promptTokens = (*entry)["ids"].size();
  EXPECT_EQ(body["usage"]["prompt_tokens"], promptTokens) << r.body;
  EXPECT_LE(body["usage"]["completion_tokens"].get<int64_t>(), 8);

  // Streamed: the role first, then content deltas that add up to the same
  // (greedy) content, a last chunk with the finish reason and no delta.
  req["stream"] = true;
  Reply s = post("/v1/chat/completions", req);
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<std::string> data = events(s.body);
  ASSERT_GE(data.size(), 3u) << s.body;
  EXPECT_EQ(data.back(), "[DONE]");
  json first = json::parse(data[0], nullptr, false);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (size_t i = 0; i + 1 < data.size(); ++i) {
    json chunk = json::parse(data[i], nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << data[i];
    content += chunk["choices"][0]["delta"].value("content", "");
  }
  json last = json::parse(data[data.size() - 2], nullptr, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"],
            body["choices"][0]["finish_reason"]);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(content, body["choices"][0]["message"]["content"]);
}

TEST_F(ServeTest, BadRequestsAnswer400) {
  std::vector<int64_t> tooLong(64, 5);
  const std::pair<std::string, std::string> bad[] = {
      {"/v1/completions", "{\"prompt\": [1, 2,"},
      {"/v1/completions", "[1, 2]"},
      {"/v1/completions", "{\"max_tokens\": 4}"},
      {"/v1/completions", "{\"prompt\": \"In the\", \"max_tokens\": -1}"},
      {"/v1/completions", "{\"prompt\": \"In the\", \"max_tokens\": \"4\"}"},
      {"/v1/completions", "{\"prompt\": [1, 2, 512]}"},
      {"/v1/completions", "{\"prompt\": [1, -2]}"},
      {"/v1/completions", json({{"prompt", tooLong}}).dump()},
      {"/v1/completions", "{\"prompt\": \"In the\", \"max_tokens\": 64}"},
      {"/v1/completions", "{\"prompt\": \"In the\", \"temperature\": -1}"},
      {"/v1/completions", "{\"prompt\": \"In the\", \"stop\": 3}"},
      {"/v1/completions", "{\"prompt\": [\"a\", \"b\"]}"},
      {"/v1/chat/completions", "{\"messages\": []}"},
      {"/v1/chat/completions",
       "{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}"},
      {"/v1/chat/completions", "{\"prompt\": \"no messages\"}"},
      {"/tokenize", "{\"prompt\": 3}"},
  };
  for (const auto &[path, body] : bad) {
    Reply r = request("POST", path, body);
    EXPECT_EQ(r.status, 400) << path << " " << body << " -> " << r.body;
    json error = parsed(r);
    ASSERT_TRUE(error.is_object() && error["error"].is_object()) << r.body;
    EXPECT_TRUE(error["error"]["message"].is_string() &&
                !error["error"]["message"].get<std::string>().empty())
        << r.body;
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << r.body;
  }
  Reply missing = request("GET", "/v1/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(parsed(missing)["error"]["message"].is_string()) << missing.body;

  // Still serving, and the tokenizer endpoint agrees with the tokenizer.
  Reply ok = post("/v1/completions",
                  {{"prompt", "In the beginning"}, {"max_tokens", 4}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_LE(parsed(ok)["usage"].value("completion_tokens", 99), 4) << ok.body;
  Reply tokens = post("/tokenize", {{"prompt", "In the beginning"}});
  ASSERT_EQ(tokens.status, 200) << tokens.body;
  EXPECT_EQ(parsed(tokens)["tokens"].get<std::vector<int64_t>>(),
            tokenizer().encode("In the beginning", true));
}

TEST_F(ServeTest, StopStringCutsTheText) {
  Golden g = golden(0);
  // A stop string from the middle of the greedy text: the answer is the
  // text before its first occurrence.
  std::string stop =
      tokenizer().decode({g.generated[12], g.generated[13]}, true);
  size_t at = g.text.find(stop);
  ASSERT_NE(stop, "");
  ASSERT_NE(at, std::string::npos);
  ASSERT_GT(at, 0u);
  json req = greedyRequest(g);
  req["stop"] = {stop, "a stop string that never occurs"};
  Reply r = post("/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  json body = parsed(r);
  EXPECT_EQ(body["choices"][0]["text"], g.text.substr(0, at))
      << "stop '" << stop << "'";
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_LT(body["usage"]["completion_tokens"].get<int64_t>(), 24);

  // Streamed: no part of the stop string reaches the client.
  req["stream"] = true;
  Reply s = post("/v1/completions", req);
  ASSERT_EQ(s.status, 200) << s.body;
  std::string text;
  std::vector<std::string> data = events(s.body);
  for (size_t i = 0; i + 1 < data.size(); ++i)
    text += json::parse(data[i], nullptr, false)["choices"][0]["text"]
                .get<std::string>();
  EXPECT_EQ(text, g.text.substr(0, at));
}

TEST_F(ServeTest, DisconnectedStreamFreesItsSlot) {
  Golden g = golden(0);
  int64_t cancelledBefore = metric("requests_cancelled_total");
  ASSERT_GE(cancelledBefore, 0);
  // The longest request the context allows, streamed; the client reads the
  // first event and hangs up.
  json req = {{"prompt", g.prompt},
              {"max_tokens", 48},
              {"temperature", 0},
              {"ignore_eos", true},
              {"stream", true}};
  std::string body = req.dump();
  std::string message = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  timeval timeout{60, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(server.port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address),
            0);
  ASSERT_EQ(send(fd, message.data(), message.size(), 0),
            ssize_t(message.size()));
  std::string received;
  char buffer[4096];
  while (received.find("data: ") == std::string::npos ||
         received.find("\n\n", received.find("data: ")) == std::string::npos) {
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0)
      break;
    received.append(buffer, n);
  }
  close(fd);
  EXPECT_NE(received.find("data: "), std::string::npos) << received;

  // The server notices, cancels the request, and its slot is free again.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (metric("requests_running") != 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(metric("requests_running"), 0);
  EXPECT_EQ(metric("requests_cancelled_total"), cancelledBefore + 1)
      << "the disconnected stream ran to its end";
  std::thread first([] { expectGoldenCompletion(0); });
  std::thread second([] { expectGoldenCompletion(1); });
  first.join();
  second.join();
}

} // namespace
