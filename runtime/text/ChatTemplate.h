//===- ChatTemplate.h - DeepSeek-V3's chat template, natively ---*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Models ship their prompt format as a
// Jinja template in tokenizer_config.json; rather than embed a Jinja engine,
// this recognises DeepSeek-V3's template and renders it in C++ with the same
// output as transformers' apply_chat_template, quirks included (the tool-call
// and tool-output state is never reset between turns). Any other template is
// refused with an error naming its file.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TEXT_CHATTEMPLATE_H
#define DSV3_RUNTIME_TEXT_CHATTEMPLATE_H

#include "runtime/support/Error.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::rt {

class Tokenizer;

/// One call of an assistant message's tool_calls (OpenAI's layout).
struct ChatToolCall {
  std::string type = "function";
  std::string name;      ///< function.name
  std::string arguments; ///< function.arguments, a JSON text
};

/// One message: role "system", "user", "assistant" or "tool" (a tool's
/// output); other roles are not rendered, as in the template.
struct ChatMessage {
  std::string role;
  std::string content;
  /// JSON null content (an assistant turn that only calls tools); renders as
  /// nothing.
  bool contentIsNull = false;
  /// Present (even empty) means the template's `'tool_calls' in message`.
  std::optional<std::vector<ChatToolCall>> toolCalls;
};

/// Reads an OpenAI-style JSON array of messages: content a string or null,
/// tool_calls [{type, function: {name, arguments}}] with arguments a string
/// (an object is written out as compact JSON); a null tool_calls counts as
/// absent. Errors read `<origin>: <problem>`.
Expected<std::vector<ChatMessage>> parseChatMessages(std::string_view json,
                                                     const std::string &origin);

class ChatTemplate {
public:
  /// Accepts DeepSeek-V3's template: the text of its tokenizer_config.json's
  /// "chat_template", compared with whitespace ignored. `origin` names the
  /// file for the error "unsupported chat template".
  static Expected<ChatTemplate> recognise(std::string_view source,
                                          const std::string &origin);
  /// The template a loaded tokenizer carries.
  static Expected<ChatTemplate> fromTokenizer(const Tokenizer &tokenizer);

  /// The prompt text, as transformers renders it with `bos_token` =
  /// bosToken (to encode without adding special tokens: it holds the BOS).
  std::string render(const std::vector<ChatMessage> &messages,
                     bool addGenerationPrompt,
                     const std::string &bosToken) const;

private:
  ChatTemplate() = default;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TEXT_CHATTEMPLATE_H
