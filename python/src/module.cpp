// nanochat._nanochat: the engine API for Python (pybind11). The Python package (nanochat/) builds
// llama-cpp-python's interface on top of this; nothing here is a second implementation: models
// load through engine::LoadedModel, generations run through engine::Scheduler (batched, streamed,
// cancellable), scoring through engine::score_document.
//
// The GIL is released while the engine computes; waiting for a stream's next event wakes every
// 100 ms to let Python deliver signals (Ctrl-C raises KeyboardInterrupt and cancels the request).
#include <fmt/format.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/scheduler.hpp"
#include "nanochat/engine/scoring.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/gguf/value.hpp"
#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/train/trainer.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/log.hpp"
#include "nanochat/util/paths.hpp"
#include "nanochat/version.hpp"
#include "nanochat/zoo/store.hpp"

namespace py = pybind11;
using namespace nanochat;

namespace {

struct SamplingArgs {
  int max_tokens = 16;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int top_k = 40;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::string> stop;
  std::uint64_t seed = 0;
  bool ignore_eos = false;
  int logprobs = -1;  // < 0: none

  engine::GenerateOptions options() const {
    engine::GenerateOptions g;
    g.n_predict = max_tokens;
    g.sampling.temperature = temperature;
    g.sampling.top_p = top_p;
    g.sampling.top_k = top_k;
    g.sampling.min_p = min_p;
    g.sampling.repeat_penalty = repeat_penalty;
    g.sampling.presence_penalty = presence_penalty;
    g.sampling.frequency_penalty = frequency_penalty;
    g.sampling.seed = seed;
    g.stop = stop;
    g.ignore_eos = ignore_eos;
    g.logprobs = logprobs >= 0;
    g.top_logprobs = logprobs > 0 ? logprobs : 0;
    return g;
  }
};

py::dict result_dict(const engine::GenerateResult& r, const model::Tokenizer& tok) {
  py::dict d;
  d["text"] = py::bytes(r.text);
  d["tokens"] = r.tokens;
  d["finish_reason"] = engine::finish_reason_name(r.finish);
  d["prompt_tokens"] = r.timings.prompt_tokens;
  d["completion_tokens"] = r.timings.generated_tokens;
  d["reused_tokens"] = r.timings.reused_tokens;
  py::list logprobs;
  for (const auto& lp : r.logprobs) {
    py::list top;
    for (const auto& [id, v] : lp.top) top.append(py::make_tuple(py::bytes(tok.piece(id)), v));
    logprobs.append(py::make_tuple(py::bytes(tok.piece(lp.token)), lp.logprob, top));
  }
  d["logprobs"] = logprobs;
  return d;
}

// One generation submitted to the scheduler: Python iterates its events.
class Stream {
 public:
  Stream(std::shared_ptr<engine::Request> request, std::shared_ptr<engine::EventQueue> events,
         std::shared_ptr<engine::LoadedModel> model)
      : request_(std::move(request)), events_(std::move(events)), model_(std::move(model)) {}
  ~Stream() { request_->cancel(); }

  // The next event as (text bytes, done, result dict or None); raises KeyboardInterrupt (after
  // cancelling) when Ctrl-C arrives while waiting.
  py::tuple next() {
    for (;;) {
      std::optional<engine::RequestEvent> e;
      {
        py::gil_scoped_release release;
        e = events_->pop(std::chrono::milliseconds(100));
      }
      if (PyErr_CheckSignals() != 0) {  // Ctrl-C: KeyboardInterrupt, and the generation stops
        request_->cancel();
        throw py::error_already_set();
      }
      if (!e) continue;
      // Text that arrived while Python was busy comes in one piece: one wake-up, not one a token.
      while (!e->done && e->error.empty()) {
        std::optional<engine::RequestEvent> more = events_->pop(std::chrono::milliseconds(0));
        if (!more) break;
        more->text.insert(0, e->text);
        e = std::move(more);
      }
      if (!e->error.empty()) throw std::runtime_error("internal error in nanochat: " + e->error);
      py::object result = py::none();
      if (e->done) result = result_dict(*e->result, model_->tokenizer());
      return py::make_tuple(py::bytes(e->text), e->done, result);
    }
  }
  void cancel() { request_->cancel(); }

 private:
  std::shared_ptr<engine::Request> request_;
  std::shared_ptr<engine::EventQueue> events_;
  std::shared_ptr<engine::LoadedModel> model_;
};

// One generation on the model's own session, pulled a token at a time on the caller's thread
// (no hand-off between threads: a streamed token costs what it costs `nanochat generate`). Holds
// the session until it is done or dropped.
class Generation {
 public:
  Generation(std::shared_ptr<engine::Session> session, std::shared_ptr<std::mutex> mutex,
             std::unique_lock<std::mutex> lock, const std::vector<model::TokenId>& prompt,
             const engine::GenerateOptions& options)
      : session_(std::move(session)), mutex_(std::move(mutex)), lock_(std::move(lock)) {
    const py::gil_scoped_release release;
    session_->start(prompt, options);
  }
  ~Generation() { cancel(); }

  py::tuple next() {
    if (done_) throw py::stop_iteration();
    std::optional<std::string> piece;
    {
      const py::gil_scoped_release release;
      piece = session_->next();
    }
    if (PyErr_CheckSignals() != 0) {
      cancel();
      throw py::error_already_set();
    }
    if (piece) return py::make_tuple(py::bytes(*piece), false, py::none());
    done_ = true;
    py::dict result = result_dict(session_->result(), session_->model().tokenizer());
    lock_.unlock();
    return py::make_tuple(py::bytes(""), true, result);
  }
  void cancel() {
    if (done_) return;
    session_->cancel();
    done_ = true;
    lock_.unlock();
  }

 private:
  std::shared_ptr<engine::Session> session_;
  std::shared_ptr<std::mutex> mutex_;  // the model's session lock (outlives a dropped model)
  std::unique_lock<std::mutex> lock_;
  bool done_ = false;
};

class Model {
 public:
  Model(const std::string& path, std::int64_t n_ctx, int n_threads, int n_slots) {
    engine::LoadOptions o;
    o.kernels.threads = n_threads;
    {
      py::gil_scoped_release release;
      model_ = engine::LoadedModel::load(path, o);
    }
    engine::SchedulerOptions s;
    s.slots = n_slots;
    s.context = n_ctx;
    s.max_waiting = 1 << 20;  // Python callers queue as much as they like
    scheduler_ = std::make_unique<engine::Scheduler>(model_, s);
    session_ = std::make_shared<engine::Session>(model_, n_ctx);
  }

  // A generation on the model's session when it is free (a chat's next turn reuses its cache),
  // else through the scheduler (other generations are running: they decode together).
  py::object generate(const std::vector<model::TokenId>& prompt, const SamplingArgs& args) {
    std::unique_lock lock(*session_mutex_, std::try_to_lock);
    if (lock.owns_lock()) {
      return py::cast(std::make_unique<Generation>(session_, session_mutex_, std::move(lock),
                                                   prompt, args.options()));
    }
    return py::cast(submit(prompt, args));
  }

  std::vector<model::TokenId> tokenize(const std::string& text, bool add_bos, bool special) const {
    return model_->tokenizer().encode(text, add_bos, special);
  }
  py::bytes detokenize(const std::vector<model::TokenId>& ids, bool special) const {
    for (const auto id : ids) {
      if (id < 0 || id >= model_->config().vocab_size) {
        throw InvalidArgument(
            "ids", std::to_string(id),
            fmt::format("not a token id of this model (0 to {})", model_->config().vocab_size - 1));
      }
    }
    return py::bytes(model_->tokenizer().decode(ids, special));
  }
  std::string apply_chat_template(const std::vector<std::pair<std::string, std::string>>& messages,
                                  bool add_generation) const {
    std::vector<model::ChatMessage> m;
    for (const auto& [role, content] : messages) m.push_back({role, content});
    return model_->chat_template().render(m, add_generation);
  }
  std::vector<std::string> chat_stop() const { return model_->chat_template().stop(); }

  std::unique_ptr<Stream> submit(const std::vector<model::TokenId>& prompt,
                                 const SamplingArgs& args) {
    auto events = std::make_shared<engine::EventQueue>();
    auto request = scheduler_->submit(prompt, args.options(), events);
    return std::make_unique<Stream>(std::move(request), std::move(events), model_);
  }

  // Logits [tokens][vocab] for `ids` from an empty context, without a copy.
  py::array_t<float> eval_logits(const std::vector<model::TokenId>& ids) {
    if (ids.empty()) throw InvalidArgument("ids", "[]", "give at least one token");
    auto logits = std::make_unique<std::vector<float>>();
    {
      py::gil_scoped_release release;
      model::KvCache cache(model_->config(), static_cast<std::int64_t>(ids.size()));
      model_->forward(ids, cache, *logits, true);
    }
    const auto vocab = static_cast<py::ssize_t>(model_->config().vocab_size);
    const auto rows = static_cast<py::ssize_t>(ids.size());
    float* data = logits->data();
    py::capsule owner(logits.release(),
                      [](void* p) { delete static_cast<std::vector<float>*>(p); });
    return py::array_t<float>(
        {rows, vocab},
        {vocab * static_cast<py::ssize_t>(sizeof(float)), static_cast<py::ssize_t>(sizeof(float))},
        data, owner);
  }

  py::dict score(const std::string& text, std::int64_t n_ctx) {
    engine::Score s;
    {
      py::gil_scoped_release release;
      s = engine::score_document(*model_, text,
                                 n_ctx > 0 ? n_ctx : model_->config().context_length);
    }
    if (s.tokens == 0) {  // nothing scored: no perplexity (the CLI refuses such a file too)
      fail<UsageError>("perplexity: the text gives no token to score (it needs at least two)");
    }
    py::dict d;
    d["perplexity"] = s.perplexity();
    d["bits_per_byte"] = s.bits_per_byte();
    d["tokens"] = s.tokens;
    d["nll"] = s.nll;
    return d;
  }

  py::dict metadata() const {
    py::dict d;
    // Strings, integers, floats and booleans as themselves; arrays in their readable form.
    for (const auto& [key, value] : model_->file().metadata()) {
      if (const auto* s = value.as_string()) {
        d[py::str(key)] = *s;
      } else if (const auto* b = value.get_if<bool>()) {
        d[py::str(key)] = *b;
      } else if (const auto i = value.as_int()) {
        d[py::str(key)] = *i;
      } else if (const auto f = value.as_double(); f && value.as_array() == nullptr) {
        d[py::str(key)] = *f;
      } else {
        d[py::str(key)] = value.display();
      }
    }
    return d;
  }

  py::dict info() const {
    const auto& c = model_->config();
    py::dict d;
    d["path"] = model_->path().string();
    d["architecture"] = c.architecture;
    d["n_layers"] = c.n_layers;
    d["n_embd"] = c.dim;
    d["n_vocab"] = c.vocab_size;
    d["n_ctx_train"] = c.context_length;
    d["n_ctx"] = scheduler_->context();
    d["chat_template"] = model_->chat_template().name();
    d["isa"] = kernels::isa_name(model_->kernels().isa());
    d["n_threads"] = model_->kernels().threads();
    d["load_ms"] = model_->load_ms();
    return d;
  }

  std::int64_t n_ctx() const { return scheduler_->context(); }
  std::int64_t n_vocab() const { return model_->config().vocab_size; }
  std::optional<model::TokenId> eos() const { return model_->tokenizer().eos(); }

 private:
  std::shared_ptr<engine::LoadedModel> model_;
  std::unique_ptr<engine::Scheduler> scheduler_;
  std::shared_ptr<engine::Session> session_;
  std::shared_ptr<std::mutex> session_mutex_ = std::make_shared<std::mutex>();
};

// Calls Python back for each step (with the GIL); a callback that raises, returns False, or a
// Ctrl-C stops the run after the step, with a checkpoint.
class PyObserver : public train::TrainObserver {
 public:
  PyObserver(py::object on_step, std::atomic<bool>& stop)
      : on_step_(std::move(on_step)), stop_(stop) {}
  void on_step(const train::StepReport& r) override {
    const py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      error_ = std::make_unique<py::error_already_set>();
      stop_.store(true);
      return;
    }
    if (on_step_.is_none() || error_) return;
    try {
      py::dict d;
      d["step"] = r.step;
      d["total_steps"] = r.total_steps;
      d["loss"] = r.loss;
      d["lr"] = r.lr;
      d["grad_norm"] = r.grad_norm;
      d["tokens_per_second"] = r.tokens_per_second;
      d["elapsed_seconds"] = r.elapsed_seconds;
      d["eta_seconds"] = r.eta_seconds;
      const py::object result = on_step_(d);
      if (!result.is_none() && !result.cast<bool>()) stop_.store(true);
    } catch (py::error_already_set& e) {
      error_ = std::make_unique<py::error_already_set>(std::move(e));
      stop_.store(true);
    }
  }
  // Re-raises what the callback (or Ctrl-C) raised, if anything.
  void rethrow() {
    if (error_) {
      error_->restore();
      error_.reset();
      throw py::error_already_set();
    }
  }

 private:
  py::object on_step_;
  std::atomic<bool>& stop_;
  std::unique_ptr<py::error_already_set> error_;
};

py::dict run_train(const std::string& config, const std::vector<std::string>& overrides,
                   bool resume, const std::string& init, std::int64_t stop_after, int n_threads,
                   py::object on_step) {
  train::TrainRunOptions o;
  o.config = train::load_train_config(config, overrides);
  o.resume = resume;
  o.init = init;
  o.stop_after = stop_after;
  std::atomic<bool> stop{false};
  o.interrupt = &stop;
  kernels::KernelOptions k;
  k.threads = n_threads;
  PyObserver observer(std::move(on_step), stop);
  train::TrainResult r;
  {
    py::gil_scoped_release release;
    kernels::KernelContext context(k);
    r = train::run_training(o, context, observer);
  }
  observer.rethrow();
  py::dict d;
  d["steps"] = r.steps;
  d["steps_run"] = r.steps_run;
  d["finished"] = r.finished;
  d["stopped_early"] = r.interrupted;
  d["last_loss"] = r.last_loss;
  d["val_loss"] = r.val_loss;
  d["val_bpb"] = r.val_bpb;
  d["tokens_per_second"] = r.tokens_per_second;
  d["checkpoint"] = r.checkpoint.string();
  d["model"] = r.exported.string();
  return d;
}

std::int64_t run_export(const std::string& checkpoint, const std::string& output,
                        const std::string& arch, const std::string& ternary) {
  train::ExportOptions o;
  o.arch = arch;
  if (ternary != "tq2_0" && ternary != "tq1_0") {
    throw InvalidArgument("ternary", ternary, "use tq2_0 or tq1_0");
  }
  o.ternary_type = ternary == "tq2_0" ? gguf::TensorType::kTQ2_0 : gguf::TensorType::kTQ1_0;
  const py::gil_scoped_release release;
  return train::export_checkpoint(checkpoint, output, o);
}

// zoo::PullOptions whose progress calls `on_progress(done, total)` and lets Python deliver
// signals: Ctrl-C (or an exception in the callback) cancels the transfer, keeping the partial
// file, and is re-raised once the transfer has stopped.
struct PythonPull {
  zoo::PullOptions options;
  std::atomic<bool> cancel{false};
  std::exception_ptr python_error;

  explicit PythonPull(py::object on_progress) {
    options.download.cancel = &cancel;
    options.download.on_progress =
        [this, callback = std::move(on_progress)](const zoo::DownloadProgress& p) {
          const py::gil_scoped_acquire gil;
          try {
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
            if (!callback.is_none()) callback(p.done, p.total);
          } catch (const py::error_already_set&) {
            python_error = std::current_exception();
            cancel.store(true);
          }
        };
  }

  template <typename F>
  auto run(F&& body) {
    try {
      const py::gil_scoped_release release;
      return body(options);
    } catch (const zoo::DownloadCancelled&) {
      if (python_error) std::rethrow_exception(python_error);
      throw;
    }
  }
};

std::string run_download(const std::string& spec, const std::string& revision,
                         const std::string& sha256, const std::string& output, bool force,
                         int retries, py::object on_progress) {
  if (retries < 0) throw InvalidArgument("retries", std::to_string(retries), "must be >= 0");
  PythonPull pull(std::move(on_progress));
  pull.options.revision = revision;
  pull.options.sha256 = sha256;
  pull.options.output = output;
  pull.options.force = force;
  pull.options.download.retries = retries;
  return pull.run([&](const zoo::PullOptions& o) {
    const zoo::Registry registry = zoo::Registry::load();
    zoo::ModelCache cache = zoo::ModelCache::open_default();
    return zoo::pull(spec, registry, cache, o).path.string();
  });
}

std::string run_resolve(const std::string& spec, bool allow_pull, py::object on_progress) {
  PythonPull pull(std::move(on_progress));
  return pull.run([&](const zoo::PullOptions& o) {
    zoo::ResolveOptions r;
    r.allow_pull = allow_pull;
    r.pull = o;
    r.subject = "Model(path)";
    r.pull_hint = "pass pull=True to download it now";
    return zoo::resolve_model(spec, r);
  });
}

std::string spec_kind(const std::string& spec) {
  switch (zoo::classify_spec(spec)) {
    case zoo::SpecKind::kName:
      return "name";
    case zoo::SpecKind::kUrl:
      return "url";
    case zoo::SpecKind::kHf:
      return "hf";
    case zoo::SpecKind::kPath:
      break;
  }
  return "path";
}

py::list list_models() {
  py::list out;
  for (const auto& m : zoo::list_models(zoo::Registry::load(), zoo::ModelCache::open_default())) {
    py::dict d;
    d["name"] = m.name;
    d["status"] = m.status;
    d["sha256"] = m.sha256;
    d["size"] = m.size;
    d["path"] = m.path.empty() ? py::object(py::none()) : py::object(py::str(m.path.string()));
    if (const auto& e = m.entry) {
      d["description"] = e->description;
      d["urls"] = e->urls;
      d["license"] = e->license;
      d["architecture"] = e->architecture;
      d["note"] = e->note;
      d["use"] = e->use;
      d["pull"] = e->pull;
      d["registry"] = e->origin.string();
    } else {
      d["urls"] = std::vector<std::string>{m.cached ? m.cached->source : m.partial->url};
    }
    if (m.partial) d["bytes"] = m.partial->bytes;
    out.append(d);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_nanochat, m) {
  m.doc() = "nanochat's engine (use the nanochat package, not this module)";
  m.attr("__version__") = build::kVersion;
  // The library's log lines go to stderr at the CLI's default level (warnings, notes), never to
  // stdout, which belongs to the caller.
  init_logging(0, LogFormat::kText);
  static py::exception<FormatError> format_error(m, "FormatError", PyExc_ValueError);
  static py::exception<zoo::DownloadError> download_error(m, "DownloadError", PyExc_OSError);
  // pybind11 takes a function of std::exception_ptr by value.
  py::register_exception_translator(
      [](std::exception_ptr p) {  // NOLINT(performance-unnecessary-value-param)
        try {
          if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
          PyErr_SetString(format_error.ptr(), e.what());
        } catch (const zoo::DownloadCancelled&) {
          PyErr_SetNone(PyExc_KeyboardInterrupt);
        } catch (const zoo::DownloadError& e) {
          PyErr_SetString(download_error.ptr(), e.what());
        } catch (const IoError& e) {
          PyErr_SetString(PyExc_FileNotFoundError, e.what());
        } catch (const UsageError& e) {  // InvalidArgument too
          PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const Error& e) {
          PyErr_SetString(PyExc_RuntimeError, e.what());
        }
      });

  m.def("train", &run_train, py::arg("config"), py::arg("overrides"), py::arg("resume"),
        py::arg("init"), py::arg("stop_after"), py::arg("n_threads"), py::arg("on_step"));
  m.def("download", &run_download, py::arg("spec"), py::arg("revision"), py::arg("sha256"),
        py::arg("output"), py::arg("force"), py::arg("retries"), py::arg("on_progress"));
  m.def("resolve_model", &run_resolve, py::arg("spec"), py::arg("pull"), py::arg("on_progress"));
  m.def("spec_kind", &spec_kind, py::arg("spec"));
  m.def("max_thread_count", &kernels::max_thread_count);
  m.def("list_models", &list_models);
  m.def(
      "add_data_dir", [](const std::string& dir) { add_data_dir(dir); }, py::arg("dir"));
  m.def("export", &run_export, py::arg("checkpoint"), py::arg("output"), py::arg("arch"),
        py::arg("ternary"));

  py::class_<SamplingArgs>(m, "SamplingArgs")
      .def(py::init<>())
      .def_readwrite("max_tokens", &SamplingArgs::max_tokens)
      .def_readwrite("temperature", &SamplingArgs::temperature)
      .def_readwrite("top_p", &SamplingArgs::top_p)
      .def_readwrite("top_k", &SamplingArgs::top_k)
      .def_readwrite("min_p", &SamplingArgs::min_p)
      .def_readwrite("repeat_penalty", &SamplingArgs::repeat_penalty)
      .def_readwrite("presence_penalty", &SamplingArgs::presence_penalty)
      .def_readwrite("frequency_penalty", &SamplingArgs::frequency_penalty)
      .def_readwrite("stop", &SamplingArgs::stop)
      .def_readwrite("seed", &SamplingArgs::seed)
      .def_readwrite("ignore_eos", &SamplingArgs::ignore_eos)
      .def_readwrite("logprobs", &SamplingArgs::logprobs);

  py::class_<Generation>(m, "Generation")
      .def("next", &Generation::next)
      .def("cancel", &Generation::cancel);

  py::class_<Stream>(m, "Stream").def("next", &Stream::next).def("cancel", &Stream::cancel);

  py::class_<Model>(m, "Model")
      .def(py::init<const std::string&, std::int64_t, int, int>(), py::arg("path"),
           py::arg("n_ctx") = 0, py::arg("n_threads") = 0, py::arg("n_slots") = 4)
      .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_bos") = true,
           py::arg("special") = false)
      .def("detokenize", &Model::detokenize, py::arg("ids"), py::arg("special") = false)
      .def("apply_chat_template", &Model::apply_chat_template, py::arg("messages"),
           py::arg("add_generation") = true)
      .def("chat_stop", &Model::chat_stop)
      .def("submit", &Model::submit, py::arg("prompt"), py::arg("args"))
      .def("generate", &Model::generate, py::arg("prompt"), py::arg("args"))
      .def("eval_logits", &Model::eval_logits, py::arg("ids"))
      .def("score", &Model::score, py::arg("text"), py::arg("n_ctx") = 0)
      .def("metadata", &Model::metadata)
      .def("info", &Model::info)
      .def_property_readonly("n_ctx", &Model::n_ctx)
      .def_property_readonly("n_vocab", &Model::n_vocab)
      .def_property_readonly("eos", &Model::eos);
}
