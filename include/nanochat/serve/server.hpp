// nanochat serve: an OpenAI-compatible HTTP server over the engine's batch scheduler.
//
//   POST /v1/completions, POST /v1/chat/completions   (streamed with server-sent events or not)
//   GET  /v1/models, /v1/models/{id}, /health, /metrics (Prometheus text format)
//
// The server binds first and answers /health with "loading" (503) while the model loads, then
// "ok". Errors are OpenAI's error object with the right status: 400 bad request, 401 wrong API
// key, 404 unknown path or model, 413 oversized body, 503 with Retry-After when the queue is full
// or the server is loading or stopping, 500 only for bugs. A client that disconnects cancels its
// generation; shutdown() stops accepting, lets running requests finish for up to drain_seconds,
// cancels the rest, and serve() returns.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/scheduler.hpp"

namespace nanochat::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port (bind() returns it)
  std::string api_key;  // when set, /v1/ requests need "Authorization: Bearer KEY"
  engine::SchedulerOptions scheduler;
  std::size_t max_body_bytes = 4u << 20;
  double drain_seconds = 10;      // how long shutdown() lets running requests finish
  int read_timeout_seconds = 10;  // a client that sends half a request is dropped after this
  std::string model_id;           // the model's name in the API (default: the file's stem)
  int http_threads = 0;           // connections served at once (0: slots + queue + 16)
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the address. Throws IoError naming it when that fails. Returns the port.
  int bind();
  // Serves until shutdown(). `load` runs on another thread while /health says "loading"; when it
  // throws, the server stops and serve() rethrows its error.
  void serve(const std::function<std::shared_ptr<engine::LoadedModel>()>& load);
  // Any thread: stop accepting, drain, make serve() return. Idempotent.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanochat::serve
