//===- Error.h - errors of the runtime core, without LLVM -------*- C++ -*-===//
//
// The runtime core (kernels, I/O, ABI, execution, training) builds with no
// LLVM or MLIR installed, so it cannot use llvm::Error. These two small types
// carry the same one-line messages (`<file>: <problem>`); the compiler side
// converts them at its boundary (frontends/support/RuntimeError.h).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_SUPPORT_ERROR_H
#define DSV3_RUNTIME_SUPPORT_ERROR_H

#include <cassert>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace dsv3::rt {

/// Success, or a failure with a one-line message. Checked by `if (err)`.
class [[nodiscard]] Error {
public:
  static Error success() { return Error(); }
  static Error failure(std::string message) { return Error(std::move(message)); }

  /// True on failure.
  explicit operator bool() const { return failed; }
  const std::string &message() const { return text; }

private:
  Error() = default;
  explicit Error(std::string message) : failed(true), text(std::move(message)) {}
  bool failed = false;
  std::string text;
};

/// `<path>: <problem>`, the form of every file error: one line, whatever
/// names the input contained.
inline Error fileError(const std::string &path, const std::string &problem) {
  std::string text = path + ": " + problem;
  for (char &c : text)
    if (c == '\n' || c == '\r')
      c = ' ';
  return Error::failure(std::move(text));
}

/// A value or the Error that prevented it. Checked by `if (!expected)`.
template <class T> class [[nodiscard]] Expected {
public:
  Expected(T value) : state(std::move(value)) {}
  /// From anything convertible to T (e.g. unique_ptr<Derived>).
  template <class U, class = std::enable_if_t<std::is_convertible_v<U &&, T> &&
                                              !std::is_same_v<std::decay_t<U>, Error> &&
                                              !std::is_same_v<std::decay_t<U>, T>>>
  Expected(U &&value) : state(T(std::forward<U>(value))) {}
  Expected(Error error) : state(std::move(error)) {
    assert(std::get<Error>(state) && "an Expected built from a success");
  }

  explicit operator bool() const { return std::holds_alternative<T>(state); }
  T &operator*() { return std::get<T>(state); }
  const T &operator*() const { return std::get<T>(state); }
  T *operator->() { return &std::get<T>(state); }
  const T *operator->() const { return &std::get<T>(state); }
  /// The failure (only when !*this).
  const Error &error() const { return std::get<Error>(state); }
  Error takeError() { return std::move(std::get<Error>(state)); }

private:
  std::variant<T, Error> state;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_SUPPORT_ERROR_H
