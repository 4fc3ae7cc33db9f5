//===- ChatTemplate.cpp - DeepSeek-V3's chat template, natively -----------===//
//
// Part of the runtime core: plain C++17 and nlohmann/json, no LLVM. render()
// follows the Jinja text of DeepSeek-V3's template statement by statement;
// the comments quote the state variables of its `ns` namespace.
//
//===----------------------------------------------------------------------===//
#include "runtime/text/ChatTemplate.h"

#include "runtime/text/Tokenizer.h"

#include <nlohmann/json.hpp>

namespace dsv3::rt {

namespace {

/// FNV-1a of DeepSeek-V3's template with every whitespace byte removed
/// (tests/golden/infer/tokenizer-*/tokenizer_config.json holds the text;
/// the unit tests load it). A fingerprint of the whole text, not a few
/// markers, because DeepSeek-R1 and V3.1 ship look-alike templates that
/// render differently (`<think>\n` after the prompt, other tool formats).
constexpr uint64_t kDeepSeekV3Fingerprint = 0xcc26f2b051df8ffbULL;

uint64_t fingerprintIgnoringWhitespace(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
        c == '\v')
      continue;
    hash = (hash ^ uint8_t(c)) * 0x100000001b3ULL;
  }
  return hash;
}

} // namespace

Expected<std::vector<ChatMessage>>
parseChatMessages(std::string_view text, const std::string &origin) {
  using nlohmann::json;
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return fileError(origin, "invalid JSON");
  if (!root.is_array())
    return fileError(origin, "messages are not a JSON array");
  std::vector<ChatMessage> messages;
  for (const json &entry : root) {
    std::string where = "message " + std::to_string(messages.size());
    if (!entry.is_object() || !entry.contains("role") ||
        !entry["role"].is_string())
      return fileError(origin, where + " has no role");
    ChatMessage message;
    message.role = entry["role"].get<std::string>();
    const json content = entry.value("content", json());
    if (content.is_string())
      message.content = content.get<std::string>();
    else if (content.is_null())
      message.contentIsNull = true;
    else
      return fileError(origin,
                       where + ": content is neither a string nor null");
    const json calls = entry.value("tool_calls", json());
    if (!calls.is_null()) {
      if (!calls.is_array())
        return fileError(origin, where + ": tool_calls is not an array");
      message.toolCalls.emplace();
      for (const json &call : calls) {
        const json function =
            call.is_object() ? call.value("function", json()) : json();
        if (!function.is_object() || !function.contains("name") ||
            !function["name"].is_string())
          return fileError(origin,
                           where + ": a tool call has no function name");
        ChatToolCall parsed;
        if (call.contains("type") && call["type"].is_string())
          parsed.type = call["type"].get<std::string>();
        parsed.name = function["name"].get<std::string>();
        const json arguments = function.value("arguments", json::object());
        parsed.arguments = arguments.is_string() ? arguments.get<std::string>()
                                                 : arguments.dump();
        message.toolCalls->push_back(std::move(parsed));
      }
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

Expected<ChatTemplate> ChatTemplate::recognise(std::string_view source,
                                               const std::string &origin) {
  if (source.empty())
    return fileError(origin, "no chat_template");
  if (fingerprintIgnoringWhitespace(source) != kDeepSeekV3Fingerprint)
    return fileError(
        origin, "unsupported chat template (only DeepSeek-V3's is rendered)");
  return ChatTemplate();
}

Expected<ChatTemplate> ChatTemplate::fromTokenizer(const Tokenizer &tokenizer) {
  const std::string &file = tokenizer.chatTemplateFile();
  return recognise(
      tokenizer.chatTemplateSource(),
      file.empty() ? tokenizer.directory() + "/tokenizer_config.json" : file);
}

std::string ChatTemplate::render(const std::vector<ChatMessage> &messages,
                                 bool addGenerationPrompt,
                                 const std::string &bosToken) const {
  // ns.system_prompt: every system message, joined by blank lines.
  std::string out = bosToken;
  bool firstSystem = true;
  for (const ChatMessage &m : messages) {
    if (m.role != "system")
      continue;
    if (!firstSystem)
      out += "\n\n";
    out += m.content;
    firstSystem = false;
  }

  // The template never resets isFirst (a tool call was written) or
  // isOutputFirst, so later turns use the continuation forms.
  bool isFirst = false, isTool = false, isOutputFirst = true;
  for (const ChatMessage &m : messages) {
    if (m.role == "user") {
      isTool = false;
      out += "<｜User｜>" + m.content;
    } else if (m.role == "assistant" && m.toolCalls) {
      isTool = false;
      for (const ChatToolCall &call : *m.toolCalls) {
        std::string callText = "<｜tool▁call▁begin｜>" + call.type +
                               "<｜tool▁sep｜>" + call.name + "\n```json\n" +
                               call.arguments + "\n```<｜tool▁call▁end｜>";
        if (!isFirst) {
          out += "<｜Assistant｜>" +
                 (m.contentIsNull ? std::string() : m.content) +
                 "<｜tool▁calls▁begin｜>" + callText;
          isFirst = true;
        } else {
          out += "\n" + callText;
        }
      }
      out += "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
    } else if (m.role == "assistant") {
      if (isTool) { // the answer that follows tool outputs
        out += "<｜tool▁outputs▁end｜>" + m.content + "<｜end▁of▁sentence｜>";
        isTool = false;
      } else { // earlier reasoning is dropped: content.split('</think>')[-1]
        size_t think = m.content.rfind("</think>");
        std::string_view answer(m.content);
        if (think != std::string::npos)
          answer.remove_prefix(think + std::string_view("</think>").size());
        out += "<｜Assistant｜>";
        out += answer;
        out += "<｜end▁of▁sentence｜>";
      }
    } else if (m.role == "tool") {
      isTool = true;
      if (isOutputFirst)
        out += "<｜tool▁outputs▁begin｜>";
      isOutputFirst = false;
      out += "<｜tool▁output▁begin｜>" + m.content + "<｜tool▁output▁end｜>";
    }
  }
  if (isTool)
    out += "<｜tool▁outputs▁end｜>";
  if (addGenerationPrompt && !isTool)
    out += "<｜Assistant｜>";
  return out;
}

} // namespace dsv3::rt
