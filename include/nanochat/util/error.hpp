// Typed errors thrown by the library. Only `main` turns them into an exit code and one line on
// stderr, so every message must read as a sentence a user can act on: name the file or flag,
// say what is wrong and what to do.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

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

// A parameter of a library call has a bad value. The library names its own parameter
// ("temperature"); each front end says it as its users spell it: main() maps it to the CLI's
// flag (--temp), the server to the request's JSON field.
class InvalidArgument : public UsageError {
 public:
  // what(): "<parameter> <value>: <problem>" (no value: "<parameter>: <problem>")
  InvalidArgument(std::string parameter, std::string value, std::string problem)
      : UsageError(parameter + (value.empty() ? "" : " " + value) + ": " + problem),
        parameter_(std::move(parameter)),
        value_(std::move(value)),
        problem_(std::move(problem)) {}
  const std::string& parameter() const { return parameter_; }
  const std::string& value() const { return value_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string parameter_, value_, problem_;
};

// An internal invariant does not hold: a bug in nanochat, not a problem with the input.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& what)
      : Error("internal error (a bug in nanochat; please report it): " + what) {}
};

// Throws E with a fmt-formatted message.
template <typename E = Error, typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

// Throws InvalidArgument for `parameter` holding `value`, with a fmt-formatted problem.
template <typename V, typename... Args>
[[noreturn]] void fail_argument(std::string parameter, const V& value,
                                fmt::format_string<Args...> problem, Args&&... args) {
  throw InvalidArgument(std::move(parameter), fmt::format("{}", value),
                        fmt::format(problem, std::forward<Args>(args)...));
}

}  // namespace nanochat
