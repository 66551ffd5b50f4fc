#include "nanochat/serve/server.hpp"

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/serve/metrics.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/log.hpp"
#include "nanochat/version.hpp"
#include "openai.hpp"

namespace nanochat::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void reply_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void reply_error(httplib::Response& res, const ApiError& e, int retry_after = 0) {
  if (retry_after > 0) res.set_header("Retry-After", std::to_string(retry_after));
  reply_json(res, e.status, error_body(e));
}

// The endpoint a request counts under in the metrics (a bounded set of labels).
std::string endpoint_label(const std::string& path) {
  if (path.rfind("/v1/models", 0) == 0) return "/v1/models";
  return path;
}

constexpr const char* kPaths =
    "POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health and GET "
    "/metrics";

// The answer to one completion request (all its choices), shared by the handler and the
// content provider that streams it.
struct Exchange {
  CompletionRequest request;
  ResponseInfo info;
  Clock::time_point arrived;
  std::shared_ptr<engine::EventQueue> queue = std::make_shared<engine::EventQueue>();
  std::vector<std::shared_ptr<engine::Request>> requests;

  void cancel() const {
    for (const auto& r : requests) r->cancel();
  }
};

}  // namespace

struct Server::Impl {
  ServerOptions o;
  httplib::Server http;
  Metrics metrics;
  std::shared_ptr<engine::LoadedModel> model;
  std::unique_ptr<engine::Scheduler> scheduler;
  std::atomic<bool> ready{false}, stopping{false};
  std::exception_ptr load_error;
  std::string model_id;
  std::int64_t model_created = 0;
  double load_seconds = 0;
  std::string id_prefix;
  std::atomic<std::uint64_t> next_id{0};
  std::mutex shutdown_mutex;

  explicit Impl(ServerOptions options) : o(std::move(options)) {
    std::random_device rd;
    id_prefix = fmt::format("{:08x}", rd());
    routes();
  }

  ResponseInfo new_info(bool chat) {
    return {fmt::format("{}-{}{:08x}", chat ? "chatcmpl" : "cmpl", id_prefix, next_id++),
            std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count(),
            model_id, fmt::format("nanochat-{}-{}", build::kVersion, build::kGitCommit)};
  }

  bool serves_model(const std::string& name) const {
    if (name == model_id) return true;
    const std::filesystem::path p = model->path();
    return name == p.filename().string() || name == p.string();
  }

  void routes() {
    http.set_payload_max_length(o.max_body_bytes);
    http.set_read_timeout(static_cast<time_t>(o.read_timeout_seconds));  // half a request, stalled
    http.set_write_timeout(10s);                                         // or that stops reading
    http.set_keep_alive_timeout(2);
    const std::size_t threads =
        o.http_threads > 0
            ? static_cast<std::size_t>(o.http_threads)
            : static_cast<std::size_t>(o.scheduler.slots + o.scheduler.max_waiting + 16);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // Before the body is read: a path this server answers, asked with another method, is a
      // 405 naming the one it takes; a POST without Content-Length (nor chunks) would otherwise
      // wait --read-timeout seconds for a body that is not coming, then say "malformed".
      const bool post_path = req.path == "/v1/completions" || req.path == "/v1/chat/completions";
      const bool get_path = req.path == "/health" || req.path == "/metrics" ||
                            req.path == "/v1/models" || req.path.rfind("/v1/models/", 0) == 0;
      const bool get = req.method == "GET" || req.method == "HEAD";
      if ((post_path && req.method != "POST") || (get_path && !get)) {
        res.set_header("Allow", post_path ? "POST" : "GET, HEAD");
        reply_error(res, {405,
                          fmt::format("{} {}: this path takes {}", req.method, req.path,
                                      post_path ? "POST" : "GET"),
                          "invalid_request_error", "", "method_not_allowed"});
        return httplib::Server::HandlerResponse::Handled;
      }
      if (post_path && !req.has_header("Content-Length") &&
          req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos) {
        reply_error(res, {411,
                          "the request has no body: send the JSON request with a Content-Length "
                          "header",
                          "invalid_request_error", "", ""});
        return httplib::Server::HandlerResponse::Handled;
      }
      if (o.api_key.empty() || req.path.rfind("/v1/", 0) != 0) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      const std::string want = "Bearer " + o.api_key;
      const std::string got = req.get_header_value("Authorization");
      // Constant time in the key's length: the comparison does not reveal a matching prefix.
      unsigned diff = got.size() == want.size() ? 0u : 1u;
      for (std::size_t i = 0; i < want.size(); ++i) {
        diff |= static_cast<unsigned>(want[i] ^ (i < got.size() ? got[i] : 0));
      }
      if (diff == 0) return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      reply_error(res, {401,
                        got.empty() ? "this server needs an API key: send 'Authorization: Bearer "
                                      "KEY'"
                                    : "the API key is not the one this server was started with",
                        "invalid_request_error", "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });

    // Errors the routes did not answer themselves (unknown paths, oversized or malformed
    // requests) get OpenAI's error object too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      ApiError e{res.status, "", "invalid_request_error", "", ""};
      if (res.status == 404) {
        e.message = fmt::format("unknown path: {} {}; this server answers {}", req.method, req.path,
                                kPaths);
        e.code = "unknown_url";
      } else if (res.status == 413) {
        e.message = fmt::format(
            "the request body is larger than this server's limit of {} bytes (--max-body-bytes)",
            o.max_body_bytes);
      } else if (res.status == 400) {
        e.message = "malformed HTTP request";
      } else {
        e.message = fmt::format("HTTP status {}", res.status);
        e.type = "server_error";
      }
      reply_error(res, e);
    });
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(std::move(ep));
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::error("internal error: {}", what);
          reply_error(res, {500, fmt::format("internal error (a bug in nanochat): {}", what),
                            "server_error", "", ""});
        });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics.count_request(endpoint_label(req.path), res.status);
      spdlog::debug("{} {} {} {}", req.remote_addr, req.method, req.path, res.status);
    });

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (stopping) return reply_json(res, 503, {{"status", "stopping"}});
      if (!ready) {
        res.set_header("Retry-After", "1");
        return reply_json(res, 503, {{"status", "loading"}});
      }
      const auto s = scheduler->stats();
      reply_json(res, 200,
                 {{"status", "ok"},
                  {"slots_idle", s.slots - s.running},
                  {"slots_processing", s.running},
                  {"requests_waiting", s.waiting}});
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      GaugeValues g;
      std::map<std::string, std::string> build = {{"version", build::kVersion},
                                                  {"commit", build::kGitCommit}};
      if (ready) {
        const auto s = scheduler->stats();
        g.requests_running = s.running;
        g.requests_waiting = s.waiting;
        g.slots = s.slots;
        g.slots_busy = s.running;
        g.kv_cache_tokens = static_cast<double>(s.cached_tokens);
        g.kv_cache_capacity_tokens = static_cast<double>(s.capacity_tokens);
        g.batch_steps = static_cast<double>(s.steps);
        g.model_loaded = 1;
        g.model_load_seconds = load_seconds;
        build["model"] = model_id;
        build["isa"] = kernels::isa_name(model->kernels().isa());
      }
      res.set_content(metrics.render(g, build), "text/plain; version=0.0.4; charset=utf-8");
    });
    const auto models = [this](const httplib::Request& req, httplib::Response& res) {
      if (!ready) return not_ready(res);
      const json entry = {{"id", model_id},
                          {"object", "model"},
                          {"created", model_created},
                          {"owned_by", "nanochat"},
                          {"meta",
                           {{"context_length", model->config().context_length},
                            {"slot_context", scheduler->context()},
                            {"vocab_size", model->config().vocab_size},
                            {"architecture", model->config().architecture},
                            {"chat_template", model->chat_template().name()}}}};
      if (req.matches.size() > 1) {
        if (!serves_model(req.matches[1])) return model_not_found(res, req.matches[1]);
        return reply_json(res, 200, entry);
      }
      reply_json(res, 200, {{"object", "list"}, {"data", json::array({entry})}});
    };
    http.Get("/v1/models", models);
    http.Get(R"(/v1/models/(.+))", models);
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, false);
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, true);
    });
  }

  void not_ready(httplib::Response& res) {
    if (stopping) {
      return reply_error(res,
                         {503, "the server is shutting down", "server_error", "", "shutting_down"});
    }
    reply_error(
        res,
        {503, "the model is still loading; try again shortly", "server_error", "", "model_loading"},
        1);
  }

  void model_not_found(httplib::Response& res, const std::string& name) {
    reply_error(res, {404,
                      fmt::format("the model '{}' does not exist; this server serves '{}' (GET "
                                  "/v1/models)",
                                  name, model_id),
                      "invalid_request_error", "model", "model_not_found"});
  }

  void complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    if (!ready || stopping) return not_ready(res);
    auto ex = std::make_shared<Exchange>();
    ex->arrived = Clock::now();
    try {
      ex->request = parse_completion_request(req.body, chat, *model, scheduler->context());
    } catch (const ApiError& e) {
      return reply_error(res, e);
    }
    CompletionRequest& r = ex->request;
    if (!r.model.empty() && !serves_model(r.model)) return model_not_found(res, r.model);
    if (!r.seed_given) {
      std::random_device rd;
      r.options.sampling.seed = (static_cast<std::uint64_t>(rd()) << 32) | rd();
    }
    ex->info = new_info(chat);
    try {
      for (int i = 0; i < r.n; ++i) {
        engine::GenerateOptions g = r.options;
        g.sampling.seed += static_cast<std::uint64_t>(i);  // n answers, each its own draw
        ex->requests.push_back(scheduler->submit(r.prompt, g, ex->queue, i));
      }
    } catch (const engine::QueueFull& e) {
      ex->cancel();
      return reply_error(res, {503, e.what(), "server_error", "", "server_busy"}, 1);
    } catch (const engine::ShuttingDown& e) {
      ex->cancel();
      return not_ready(res);
    } catch (const InvalidArgument& e) {
      ex->cancel();
      return reply_error(res, {400, e.what(), "invalid_request_error", e.parameter(), ""});
    }
    const auto release = [ex](bool) { ex->cancel(); };  // a client gone early cancels
    if (r.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, ex](std::size_t, httplib::DataSink& sink) { return stream(*ex, sink); }, release);
    } else {
      res.set_chunked_content_provider(
          "application/json",
          [this, ex](std::size_t, httplib::DataSink& sink) { return whole(*ex, sink); }, release);
    }
  }

  // Records a finished choice in the metrics.
  void observe(const Exchange& ex, const engine::GenerateResult& result) {
    const auto& t = result.timings;
    const double first = result.tokens.empty() ? -1.0 : t.first_token_ms / 1e3;
    const double per_token = t.generated_tokens > 1
                                 ? t.eval_ms / 1e3 / static_cast<double>(t.generated_tokens - 1)
                                 : -1.0;
    metrics.observe_generation(t.prompt_tokens, t.generated_tokens, t.queued_ms / 1e3, first,
                               per_token, seconds_since(ex.arrived));
  }

  json chunk(const Exchange& ex, json choices) const {
    const bool chat = ex.request.chat;
    json j = {{"id", ex.info.id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", ex.info.created},
              {"model", ex.info.model},
              {"system_fingerprint", ex.info.fingerprint},
              {"choices", std::move(choices)}};
    return j;
  }

  json stream_choice(const Exchange& ex, int index, const std::string& text,
                     const std::vector<engine::TokenLogprob>& logprobs, std::size_t text_offset,
                     const char* finish, bool role = false) const {
    const bool chat = ex.request.chat;
    json c = {{"index", index},
              {"logprobs", logprobs.empty() ? json(nullptr)
                                            : logprobs_json(*model, logprobs, chat, text_offset)},
              {"finish_reason", finish ? json(finish) : json(nullptr)}};
    if (chat) {
      json delta = json::object();
      if (role) delta["role"] = "assistant";
      if (!text.empty() || role) delta["content"] = text;
      c["delta"] = delta;
    } else {
      c["text"] = text;
    }
    return c;
  }

  // Server-sent events: one chunk per piece of text, a last chunk per choice with its
  // finish_reason, the usage when asked, then [DONE].
  bool stream(Exchange& ex, httplib::DataSink& sink) {
    const CompletionRequest& r = ex.request;
    const auto send = [&](const json& j) {
      const std::string line = "data: " + dump(j) + "\n\n";
      return sink.write(line.data(), line.size());
    };
    const auto gone = [&] {
      ex.cancel();
      return false;
    };
    std::vector<std::size_t> offsets(static_cast<std::size_t>(r.n), 0);
    for (int i = 0; i < r.n; ++i) {
      if (r.chat &&
          !send(chunk(ex, json::array({stream_choice(ex, i, "", {}, 0, nullptr, true)})))) {
        return gone();
      }
      if (r.echo) {
        if (!send(chunk(ex, json::array({stream_choice(ex, i, r.prompt_text, {}, 0, nullptr)})))) {
          return gone();
        }
        offsets[static_cast<std::size_t>(i)] = r.prompt_text.size();
      }
    }
    std::int64_t completion_tokens = 0;
    int finished = 0;
    while (finished < r.n) {
      const auto e = ex.queue->pop(250ms);
      if (!e) {
        // A comment line: ignored by clients, and a write to a closed connection fails.
        if (!sink.write(": waiting\n\n", 11)) return gone();
        continue;
      }
      const auto i = static_cast<std::size_t>(e->index);
      if (!e->text.empty() || !e->logprobs.empty()) {
        if (!send(chunk(ex, json::array({stream_choice(ex, e->index, e->text, e->logprobs,
                                                       offsets[i], nullptr)})))) {
          return gone();
        }
        offsets[i] += e->text.size();
      }
      if (!e->done) continue;
      ++finished;
      if (!e->error.empty()) {
        spdlog::error("internal error in a batched pass: {}", e->error);
        const std::string line =
            "data: " +
            dump(error_body(
                {500, "internal error (a bug in nanochat): " + e->error, "server_error", "", ""})) +
            "\n\n";
        if (!sink.write(line.data(), line.size())) return gone();
        continue;
      }
      observe(ex, *e->result);
      completion_tokens += e->result->timings.generated_tokens;
      if (!send(chunk(ex, json::array({stream_choice(ex, e->index, "", {}, 0,
                                                     finish_reason(e->result->finish))})))) {
        return gone();
      }
    }
    if (r.include_usage) {
      json j = chunk(ex, json::array());
      j["usage"] = usage_json(static_cast<std::int64_t>(r.prompt.size()), completion_tokens);
      if (!send(j)) return gone();
    }
    const std::string done = "data: [DONE]\n\n";
    if (!sink.write(done.data(), done.size())) return gone();
    sink.done();
    return true;
  }

  // One JSON object once every choice is done; while waiting, a space now and then (JSON allows
  // leading whitespace) finds out whether the client is still there.
  bool whole(Exchange& ex, httplib::DataSink& sink) {
    const CompletionRequest& r = ex.request;
    std::vector<std::optional<engine::GenerateResult>> results(static_cast<std::size_t>(r.n));
    int finished = 0;
    auto last_write = Clock::now();
    std::string error;
    while (finished < r.n) {
      auto e = ex.queue->pop(250ms);
      if (!e) {
        if (Clock::now() - last_write > 1s) {
          if (!sink.write(" ", 1)) {
            ex.cancel();
            return false;
          }
          last_write = Clock::now();
        }
        continue;
      }
      if (!e->done) continue;
      ++finished;
      if (!e->error.empty()) {
        error = e->error;
        continue;
      }
      observe(ex, *e->result);
      results[static_cast<std::size_t>(e->index)] = std::move(*e->result);
    }
    json body;
    if (!error.empty()) {
      spdlog::error("internal error in a batched pass: {}", error);
      body =
          error_body({500, "internal error (a bug in nanochat): " + error, "server_error", "", ""});
    } else {
      json choices = json::array();
      std::int64_t completion_tokens = 0;
      for (int i = 0; i < r.n; ++i) {
        const engine::GenerateResult& g = *results[static_cast<std::size_t>(i)];
        completion_tokens += g.timings.generated_tokens;
        const std::string text = r.echo ? r.prompt_text + g.text : g.text;
        json c = {{"index", i},
                  {"logprobs", r.logprobs ? logprobs_json(*model, g.logprobs, r.chat,
                                                          r.echo ? r.prompt_text.size() : 0)
                                          : json(nullptr)},
                  {"finish_reason", finish_reason(g.finish)}};
        if (r.chat) {
          c["message"] = {{"role", "assistant"}, {"content", text}};
        } else {
          c["text"] = text;
        }
        choices.push_back(std::move(c));
      }
      body = {{"id", ex.info.id},
              {"object", r.chat ? "chat.completion" : "text_completion"},
              {"created", ex.info.created},
              {"model", ex.info.model},
              {"system_fingerprint", ex.info.fingerprint},
              {"choices", choices},
              {"usage", usage_json(static_cast<std::int64_t>(r.prompt.size()), completion_tokens)}};
    }
    const std::string text = dump(body);
    if (!sink.write(text.data(), text.size())) return false;
    sink.done();
    return true;
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;

int Server::bind() {
  Impl& m = *impl_;
  errno = 0;
  bool ok = false;
  if (m.o.port == 0) {
    const int port = m.http.bind_to_any_port(m.o.host);
    ok = port > 0;
    if (ok) m.o.port = port;
  } else {
    ok = m.http.bind_to_port(m.o.host, m.o.port);
  }
  if (!ok) {
    const std::string where = m.o.port > 0 ? fmt::format("{}:{}", m.o.host, m.o.port)
                                           : fmt::format("{} (any port)", m.o.host);
    if (errno == EADDRINUSE) {
      fail<IoError>("cannot listen on {}: {}; is another server using the port? (--port)", where,
                    std::strerror(errno));
    }
    if (errno == EACCES) {
      fail<IoError>("cannot listen on {}: {} (ports below 1024 need privileges; --port)", where,
                    std::strerror(errno));
    }
    fail<IoError>("cannot listen on {}: not an address of this machine (--host)", where);
  }
  return m.o.port;
}

void Server::serve(const std::function<std::shared_ptr<engine::LoadedModel>()>& load) {
  Impl& m = *impl_;
  std::thread loader([&m, &load] {
    try {
      const auto start = Clock::now();
      auto model = load();
      m.model_id = m.o.model_id.empty() ? model->path().stem().string() : m.o.model_id;
      struct stat st {};
      m.model_created = ::stat(model->path().c_str(), &st) == 0 ? st.st_mtime : 0;
      m.scheduler = std::make_unique<engine::Scheduler>(model, m.o.scheduler);
      m.model = std::move(model);
      m.load_seconds = seconds_since(start);
      m.ready = true;
      notice("serving {} as '{}' on http://{}:{} ({} slots of {} tokens)", m.model->path().string(),
             m.model_id, m.o.host, m.o.port, m.o.scheduler.slots, m.scheduler->context());
    } catch (...) {
      m.load_error = std::current_exception();
      m.http.stop();
    }
  });
  m.http.listen_after_bind();
  loader.join();
  if (m.load_error) std::rethrow_exception(m.load_error);
}

void Server::shutdown() {
  Impl& m = *impl_;
  const std::lock_guard lock(m.shutdown_mutex);
  if (m.stopping.exchange(true)) return;
  m.http.stop();  // no new connections; running handlers go on
  if (m.ready) {
    m.scheduler->stop(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(m.o.drain_seconds)));
  }
}

}  // namespace nanochat::serve
