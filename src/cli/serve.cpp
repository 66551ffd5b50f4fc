// nanochat serve: the model behind OpenAI's HTTP API (see serve/server.hpp), with continuous
// batching over -np slots. SIGTERM or Ctrl-C stops it cleanly: no new connections, running
// requests finish (or are cancelled after --drain-timeout), exit code 0.
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/serve/server.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/log.hpp"
#include "nanochat/zoo/default_model.hpp"
#include "nanochat/zoo/store.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  std::string alias;
  serve::ServerOptions server;
  std::string chat_template;
  KernelFlags kernel;
};

bool loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void run(Options o) {
  if (o.server.port < 0 || o.server.port > 65535) {
    fail<UsageError>("--port {}: must be from 0 (any free port) to 65535", o.server.port);
  }
  if (o.server.scheduler.slots < 1 || o.server.scheduler.slots > 256) {
    fail<UsageError>("-np {}: must be from 1 to 256", o.server.scheduler.slots);
  }
  if (o.server.scheduler.max_waiting < 0) {
    fail<UsageError>("--max-queue {}: must be 0 or more", o.server.scheduler.max_waiting);
  }
  if (o.server.drain_seconds < 0) {
    fail<UsageError>("--drain-timeout {}: must be 0 or more seconds", o.server.drain_seconds);
  }
  if (o.server.read_timeout_seconds < 1) {
    fail<UsageError>("--read-timeout {}: must be at least 1 second", o.server.read_timeout_seconds);
  }
  if (o.server.max_body_bytes < 1024) {
    fail<UsageError>("--max-body-bytes {}: must be at least 1024", o.server.max_body_bytes);
  }
  if (o.server.scheduler.prefill_chunk < 1) {
    fail<UsageError>("--prefill-chunk {}: must be at least 1 token",
                     o.server.scheduler.prefill_chunk);
  }
  // A template name is checked now, not after the port is announced (a file's own template, or
  // none, is the model's business once it loads).
  if (!o.chat_template.empty()) (void)model::ChatTemplate::named(o.chat_template);
  engine::validate_context(o.server.scheduler.context);
  o.server.model_id = o.alias;
  if (o.alias.empty() && !o.model.empty()) {  // -m NAME serves as NAME, not as its blob's name
    o.server.model_id = zoo::model_display_name(o.model);
  }
  const KernelFlags kernel = o.kernel;
  (void)kernel.options(kernel.single_thread_count());  // flag errors before binding

  // Signals go to one thread that waits for them (set before any other thread starts, so every
  // thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // wakes the waiter when the server stops by itself
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not a signal

  // The model's file is checked before the port is taken: a wrong -m is one line, not a server
  // that starts and then stops.
  const std::string model_file = model_path(o.model);
  if (!std::filesystem::is_regular_file(model_file)) {
    fail<IoError>("{}: cannot open: no such file (-m)", model_file);
  }

  serve::Server server(o.server);
  const int port = server.bind();
  if (!loopback(o.server.host) && o.server.api_key.empty()) {
    spdlog::warn(
        "listening on {} without an API key: anyone who can reach this address can use the "
        "model; set --api-key or NANOCHAT_API_KEY",
        o.server.host);
  }
  fmt::print(stderr, "nanochat serve: listening on http://{}:{} (loading the model...)\n",
             o.server.host, port);
  std::atomic<bool> exiting{false};
  std::thread waiter([&server, &exiting, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (exiting) return;  // woken by the exit below
    notice("{}: stopping (running requests finish, new ones are refused)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.shutdown();
  });
  const auto wake_waiter = [&] {
    exiting = true;
    server.shutdown();
    pthread_kill(waiter.native_handle(), SIGUSR1);  // the waiter's sigwait returns
    waiter.join();
  };
  try {
    server.serve([&] { return load_model(model_file, kernel, o.chat_template); });
  } catch (...) {
    wake_waiter();
    throw;
  }
  wake_waiter();
  fmt::print(stderr, "nanochat serve: stopped\n");
}

}  // namespace

void add_serve(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "serve",
      "Serve a model over OpenAI's HTTP API (/v1/completions, /v1/chat/completions, "
      "/v1/models, /health, /metrics), decoding up to -np requests together");
  sub->add_option("-m,--model", o->model,
                  "GGUF model file (default: the shipped nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  sub->add_option("--host", o->server.host,
                  "Address to listen on (another than loopback without --api-key gets a warning)")
      ->capture_default_str()
      ->envname("NANOCHAT_ARG_HOST");
  sub->add_option("--port", o->server.port, "Port (0: any free port, printed at start)")
      ->capture_default_str()
      ->envname("NANOCHAT_ARG_PORT");
  sub->add_option("--parallel", o->server.scheduler.slots,
                  "Slots: requests decoded together in one batched pass (also -np, as in "
                  "llama-server)")
      ->capture_default_str();
  sub->add_option("-c,--ctx-size", o->server.scheduler.context,
                  "Context of each slot in tokens (0: the model's)")
      ->capture_default_str()
      ->envname("NANOCHAT_ARG_CTX_SIZE");
  sub->add_option("--max-queue", o->server.scheduler.max_waiting,
                  "Requests that may wait for a slot; more get 503 with Retry-After")
      ->capture_default_str();
  sub->add_option("--prefill-chunk", o->server.scheduler.prefill_chunk,
                  "Prompt tokens read per batched step, so running streams keep flowing")
      ->capture_default_str();
  sub->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/ requests")
      ->envname("NANOCHAT_API_KEY");
  sub->add_option("--alias", o->alias,
                  "The model's name in the API (default: the -m name, or the file's stem)");
  sub->add_option("--max-body-bytes", o->server.max_body_bytes,
                  "Largest request body accepted (larger: 413)")
      ->capture_default_str();
  sub->add_option("--drain-timeout", o->server.drain_seconds,
                  "Seconds running requests may take to finish after SIGTERM before they are "
                  "cancelled")
      ->capture_default_str();
  sub->add_option("--read-timeout", o->server.read_timeout_seconds,
                  "Seconds a client may take to send its request before it is dropped")
      ->capture_default_str();
  sub->add_option("--chat-template", o->chat_template,
                  "Chat template by name, overriding the model's (chatml, llama3, phi3, gemma, "
                  "llama2, bitnet, plain)");
  o->kernel.add_to(*sub, false);
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
