// Typed errors thrown by the library. Only `main` turns them into an exit code and one line on
// stderr, so every message must read as a sentence a user can act on: name the file or flag,
// say what is wrong and what to do.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace nanochat {

// Base class of every error nanochat throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A flag, option or environment variable has a bad value (exit code 2, like CLI11).
class UsageError : public Error {
 public:
  using Error::Error;
};

// A file or stream could not be read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

// Bytes that do not follow the format they claim (GGUF, blocks, caches, checkpoints).
class FormatError : public Error {
 public:
  using Error::Error;
};

// Throws E with a fmt-formatted message.
template <typename E = Error, typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace nanochat
