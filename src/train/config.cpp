#include "nanochat/train/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::train {
namespace {

// Where a value came from, for messages: "file.toml:12" or "--set training.seq_len".
struct Origin {
  std::string where;
};

using Setter = std::function<void(const toml::node&, const Origin&)>;

struct Key {
  Setter set;
};

[[noreturn]] void bad_value(const Origin& o, const std::string& key, const char* allowed) {
  fail<UsageError>("{}: {} must be {}", o.where, key, allowed);
}

// Setters for the value types the schema uses. `key` is "section.name".
Setter int_in(std::int64_t* out, std::int64_t lo, std::int64_t hi, std::string key,
              const char* allowed) {
  return [=, key = std::move(key)](const toml::node& n, const Origin& o) {
    // Only an integer is read as one: toml++ would convert a float (2e48) with an undefined cast.
    if (!n.is_integer()) bad_value(o, key, allowed);
    const auto v = n.value<std::int64_t>();
    if (!v || *v < lo || *v > hi) bad_value(o, key, allowed);
    *out = *v;
  };
}

Setter float_in(double* out, double lo, double hi, std::string key, const char* allowed) {
  return [=, key = std::move(key)](const toml::node& n, const Origin& o) {
    const auto v = n.value<double>();  // integers convert
    if (!v || !(*v >= lo) || !(*v <= hi)) bad_value(o, key, allowed);
    *out = *v;
  };
}

Setter boolean(bool* out, std::string key) {
  return [=, key = std::move(key)](const toml::node& n, const Origin& o) {
    if (!n.is_boolean()) bad_value(o, key, "true or false");
    *out = *n.value<bool>();
  };
}

Setter string_of(std::string* out, std::set<std::string> choices, std::string key,
                 const char* allowed) {
  return [=, choices = std::move(choices), key = std::move(key)](const toml::node& n,
                                                                 const Origin& o) {
    if (!n.is_string()) bad_value(o, key, allowed);
    const std::string v = *n.value<std::string>();
    if (!choices.empty() && !choices.count(v)) bad_value(o, key, allowed);
    *out = v;
  };
}

Setter strings(std::vector<std::string>* out, std::string key) {
  return [=, key = std::move(key)](const toml::node& n, const Origin& o) {
    out->clear();
    if (n.is_string()) {
      out->push_back(*n.value<std::string>());
      return;
    }
    const toml::array* a = n.as_array();
    if (a == nullptr) bad_value(o, key, "a string or an array of strings");
    for (const auto& e : *a) {
      if (!e.is_string()) bad_value(o, key, "a string or an array of strings");
      out->push_back(*e.value<std::string>());
    }
  };
}

std::string origin_of(const std::string& name, const toml::node& n) {
  const auto& src = n.source();
  if (src.begin.line == 0) return name;
  return fmt::format("{}:{}", name, src.begin.line);
}

using Schema = std::map<std::string, std::map<std::string, Key>>;

Schema make_schema(TrainConfig& c, std::string& activation, std::string& schedule,
                   std::string& optimizer, std::string& checkpoint_dir, std::int64_t& mhc_streams) {
  model::ModelConfig& m = c.model;
  TrainingSection& t = c.training;
  DataSection& d = c.data;
  OutputSection& out = c.output;
  constexpr std::int64_t kBig = std::int64_t{1} << 40;
  Schema s;
  auto& mk = s["model"];
  mk["dim"] = {int_in(&m.dim, 256, 65536, "model.dim", "a multiple of 256 up to 65536")};
  mk["n_layers"] = {int_in(&m.n_layers, 1, 1024, "model.n_layers", "an integer from 1 to 1024")};
  mk["n_heads"] = {int_in(&m.n_heads, 1, 1024, "model.n_heads", "an integer from 1 to 1024")};
  mk["n_kv_heads"] = {
      int_in(&m.n_kv_heads, 1, 1024, "model.n_kv_heads", "an integer from 1 to 1024")};
  mk["ffn_dim"] = {int_in(&m.ffn_dim, 32, 1 << 20, "model.ffn_dim", "an integer from 32 up")};
  mk["vocab_size"] = {
      int_in(&m.vocab_size, 0, 1 << 22, "model.vocab_size", "0 (from the tokenizer) to 4194304")};
  mk["max_seq_len"] = {
      int_in(&m.context_length, 8, 1 << 20, "model.max_seq_len", "an integer from 8 up")};
  mk["group_size"] = {int_in(&c.group_size, 0, 0, "model.group_size",
                             "0 (one absmean scale per tensor; nanochat's kernels carry one "
                             "scale per row, so smaller groups cannot be exported yet)")};
  mk["quantization"] = {string_of(&c.quantization, {"ternary", "none"}, "model.quantization",
                                  "\"ternary\" or \"none\" (float layers, for comparison)")};
  mk["mhc_n_streams"] = {[&mhc_streams](const toml::node& n, const Origin& o) {
    int_in(&mhc_streams, 1, 4, "model.mhc_n_streams", "1, 2 or 4")(n, o);
    if (mhc_streams == 3) bad_value(o, "model.mhc_n_streams", "1, 2 or 4");
  }};
  mk["ffn_activation"] = {string_of(&activation, {"swiglu", "relu2"}, "model.ffn_activation",
                                    "\"swiglu\" or \"relu2\"")};
  mk["sub_norms"] = {boolean(&m.sub_norms, "model.sub_norms")};
  mk["tied_embeddings"] = {boolean(&m.tied_embeddings, "model.tied_embeddings")};
  mk["norm_eps"] = {[&m](const toml::node& n, const Origin& o) {
    double v = 0;
    float_in(&v, 1e-12, 1e-1, "model.norm_eps", "a number from 1e-12 to 0.1")(n, o);
    m.norm_eps = static_cast<float>(v);
  }};
  mk["rope_theta"] = {[&m](const toml::node& n, const Origin& o) {
    double v = 0;
    float_in(&v, 1.0, 1e9, "model.rope_theta", "a number from 1 to 1e9")(n, o);
    m.rope_theta = static_cast<float>(v);
  }};
  auto& tk = s["training"];
  tk["batch_size"] = {int_in(&t.batch_size, 1, 1 << 16, "training.batch_size", "1 or more")};
  tk["seq_len"] = {int_in(&t.seq_len, 2, 1 << 20, "training.seq_len", "2 or more")};
  tk["total_steps"] = {int_in(&t.total_steps, 1, kBig, "training.total_steps", "1 or more")};
  tk["warmup_steps"] = {int_in(&t.warmup_steps, 0, kBig, "training.warmup_steps", "0 or more")};
  tk["schedule"] = {
      string_of(&schedule, {"wsd", "cosine"}, "training.schedule", "\"wsd\" or \"cosine\"")};
  tk["decay_fraction"] = {
      float_in(&t.decay_fraction, 0, 1, "training.decay_fraction", "a number from 0 to 1")};
  tk["min_lr_fraction"] = {
      float_in(&t.min_lr_fraction, 0, 1, "training.min_lr_fraction", "a number from 0 to 1")};
  tk["muon_lr"] = {float_in(&t.muon_lr, 0, 10, "training.muon_lr", "a number from 0 to 10")};
  tk["optimizer"] = {string_of(&optimizer, {"lion", "adamw"}, "training.optimizer",
                               "\"lion\" or \"adamw\" (for the parameters Muon does not take)")};
  tk["lion_lr"] = {float_in(&t.lion_lr, 0, 10, "training.lion_lr", "a number from 0 to 10")};
  tk["adamw_lr"] = {float_in(&t.adamw_lr, 0, 10, "training.adamw_lr", "a number from 0 to 10")};
  tk["weight_decay"] = {
      float_in(&t.weight_decay, 0, 10, "training.weight_decay", "a number from 0 to 10")};
  tk["entropy_weight"] = {
      float_in(&t.entropy_weight, 0, 10, "training.entropy_weight", "a number from 0 to 10")};
  tk["grad_clip"] = {
      float_in(&t.grad_clip, 0, 1e6, "training.grad_clip", "0 (off) or a positive number")};
  tk["matmul_precision"] = {string_of(&t.matmul_precision, {"auto", "fp32", "bf16"},
                                      "training.matmul_precision",
                                      "\"auto\", \"fp32\" or \"bf16\"")};
  tk["grad_accum"] = {int_in(&t.grad_accum, 1, 4096, "training.grad_accum", "1 to 4096")};
  tk["checkpoint_interval"] = {int_in(&t.checkpoint_interval, 0, kBig,
                                      "training.checkpoint_interval",
                                      "0 (only at the end) or more")};
  tk["keep_last"] = {int_in(&t.keep_last, 1, 1000, "training.keep_last", "1 to 1000")};
  tk["eval_interval"] = {
      int_in(&t.eval_interval, 0, kBig, "training.eval_interval", "0 (only at the end) or more")};
  tk["eval_batches"] = {int_in(&t.eval_batches, 1, 1 << 20, "training.eval_batches", "1 or more")};
  tk["seed"] = {[&t](const toml::node& n, const Origin& o) {
    std::int64_t v = 0;
    int_in(&v, 0, kBig, "training.seed", "a non-negative integer")(n, o);
    t.seed = static_cast<std::uint64_t>(v);
  }};
  auto& dk = s["data"];
  dk["inputs"] = {strings(&d.inputs, "data.inputs")};
  dk["include"] = {strings(&d.include, "data.include")};
  dk["exclude"] = {strings(&d.exclude, "data.exclude")};
  dk["tokenizer"] = {
      string_of(&d.tokenizer, {}, "data.tokenizer", "\"train\" or the path of a GGUF file")};
  dk["tokenizer_vocab_size"] = {int_in(&d.tokenizer_vocab_size, 0, 1 << 22,
                                       "data.tokenizer_vocab_size",
                                       "0 (model.vocab_size) or 259+")};
  dk["validation_fraction"] = {float_in(&d.validation_fraction, 0, 0.5, "data.validation_fraction",
                                        "a number from 0 to 0.5")};
  dk["validation_inputs"] = {strings(&d.validation_inputs, "data.validation_inputs")};
  dk["format"] = {string_of(&d.format, {"text", "chat"}, "data.format", "\"text\" or \"chat\"")};
  dk["chat_template"] = {string_of(&d.chat_template, {"plain", "chatml"}, "data.chat_template",
                                   "\"plain\" or \"chatml\"")};
  dk["max_bytes"] = {int_in(&d.max_bytes, 0, kBig, "data.max_bytes", "0 (all) or more")};
  auto& ok = s["output"];
  ok["checkpoint_dir"] = {string_of(&checkpoint_dir, {}, "output.checkpoint_dir", "a folder path")};
  ok["log_level"] = {string_of(&out.log_level, {"trace", "debug", "info", "warn", "error"},
                               "output.log_level", "trace, debug, info, warn or error")};
  ok["log_format"] = {
      string_of(&out.log_format, {"text", "json"}, "output.log_format", "\"text\" or \"json\"")};
  return s;
}

std::string key_list(const std::map<std::string, Key>& keys) {
  std::string s;
  for (const auto& [k, _] : keys) s += (s.empty() ? "" : ", ") + k;
  return s;
}

void check_consistency(const TrainConfig& c, const std::string& name) {
  const auto& m = c.model;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail<UsageError>("{}: {}", name, what);
  };
  need(m.dim > 0 && m.n_layers > 0 && m.n_heads > 0 && m.ffn_dim > 0,
       "[model] needs dim, n_layers, n_heads and ffn_dim");
  need(m.dim % 256 == 0, fmt::format("model.dim {} must be a multiple of 256 (ternary rows are "
                                     "whole 256-weight blocks)",
                                     m.dim));
  need(m.ffn_dim % 256 == 0, fmt::format("model.ffn_dim {} must be a multiple of 256", m.ffn_dim));
  need(m.dim % m.n_heads == 0 && (m.dim / m.n_heads) % 2 == 0,
       fmt::format("model.dim {} must split into {} heads of an even size", m.dim, m.n_heads));
  need(m.n_heads % m.n_kv_heads == 0,
       fmt::format("model.n_heads {} must be a multiple of model.n_kv_heads {}", m.n_heads,
                   m.n_kv_heads));
  need(m.mhc_streams == 1 || m.mhc_streams == 2 || m.mhc_streams == 4,
       "model.mhc_n_streams must be 1, 2 or 4");
  need(c.training.seq_len <= m.context_length,
       fmt::format("training.seq_len {} exceeds model.max_seq_len {}", c.training.seq_len,
                   m.context_length));
  need(c.training.warmup_steps < c.training.total_steps,
       fmt::format("training.warmup_steps {} must be below training.total_steps {}",
                   c.training.warmup_steps, c.training.total_steps));
  need(!c.data.inputs.empty(), "data.inputs is empty; name the files or folders to train on");
}

}  // namespace

TrainConfig parse_train_config(std::string_view text, const std::string& name,
                               const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    fail<UsageError>("{}:{}: {}", name, e.source().begin.line, e.description());
  }
  TrainConfig c;
  c.model.dim = 0;
  c.model.n_layers = 0;
  c.model.n_heads = 0;
  c.model.n_kv_heads = 0;
  c.model.ffn_dim = 0;
  c.model.context_length = 256;
  std::string activation = "swiglu", schedule = "wsd", optimizer = "adamw";
  std::string checkpoint_dir = "checkpoints";
  std::int64_t mhc_streams = 1;
  const Schema schema =
      make_schema(c, activation, schedule, optimizer, checkpoint_dir, mhc_streams);

  std::set<std::string> given;  // "section.key" set by the file or --set
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    const auto it = schema.find(section);
    if (it == schema.end()) {
      fail<UsageError>("{}: unknown section [{}]; use [model], [training], [data] and [output]",
                       origin_of(name, section_node), section);
    }
    const toml::table* table = section_node.as_table();
    if (table == nullptr) {
      fail<UsageError>("{}: {} must be a [{}] section", origin_of(name, section_node), section,
                       section);
    }
    for (const auto& [key_key, node] : *table) {
      const std::string key(key_key.str());
      const auto k = it->second.find(key);
      if (k == it->second.end()) {
        fail<UsageError>("{}: unknown key '{}.{}'; [{}] takes {}", origin_of(name, node), section,
                         key, section, key_list(it->second));
      }
      k->second.set(node, Origin{origin_of(name, node)});
      given.insert(section + "." + key);
    }
  }
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    const auto dot = o.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
      fail<UsageError>("--set {}: expected section.key=value, e.g. training.total_steps=100", o);
    }
    const std::string section = o.substr(0, dot), key = o.substr(dot + 1, eq - dot - 1);
    const std::string value = o.substr(eq + 1);
    const auto it = schema.find(section);
    if (it == schema.end()) {
      fail<UsageError>("--set {}: unknown section [{}]; use model, training, data or output", o,
                       section);
    }
    const auto k = it->second.find(key);
    if (k == it->second.end()) {
      fail<UsageError>("--set {}: unknown key '{}.{}'; [{}] takes {}", o, section, key, section,
                       key_list(it->second));
    }
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      parsed.insert("v", value);  // a bare word: a string
    }
    k->second.set(*parsed.get("v"), Origin{"--set " + o});
    given.insert(section + "." + key);
  }
  c.model.architecture = "nanochat";
  c.model.ffn_activation =
      activation == "relu2" ? model::FfnActivation::kReluSquared : model::FfnActivation::kSwiGlu;
  c.model.mhc_streams = static_cast<int>(mhc_streams);
  if (!given.count("model.n_kv_heads")) c.model.n_kv_heads = c.model.n_heads;
  if (!given.count("training.warmup_steps")) {
    c.training.warmup_steps = std::min(c.training.warmup_steps, c.training.total_steps / 10);
  }
  if (!given.count("training.seq_len")) {
    c.training.seq_len = std::min(c.training.seq_len, c.model.context_length);
  }
  c.training.schedule = schedule == "cosine" ? Schedule::kCosine : Schedule::kWsd;
  c.training.optimizer = optimizer == "lion" ? ScalarOptimizer::kLion : ScalarOptimizer::kAdamW;
  c.output.checkpoint_dir = checkpoint_dir;
  c.source = name;
  check_consistency(c, name);
  return c;
}

TrainConfig load_train_config(const std::filesystem::path& path,
                              const std::vector<std::string>& overrides) {
  const std::string text = read_file(path);
  TrainConfig c = parse_train_config(text, path.string(), overrides);
  // Relative paths in the file are relative to the file's folder.
  const std::filesystem::path base = path.parent_path();
  auto rebase = [&](std::string& p) {
    if (!p.empty() && std::filesystem::path(p).is_relative()) p = (base / p).lexically_normal();
  };
  for (auto& input : c.data.inputs) rebase(input);
  for (auto& input : c.data.validation_inputs) rebase(input);
  if (c.data.tokenizer != "train") rebase(c.data.tokenizer);
  if (c.output.checkpoint_dir.is_relative()) {
    c.output.checkpoint_dir = (base / c.output.checkpoint_dir).lexically_normal();
  }
  return c;
}

std::string to_toml(const TrainConfig& c) {
  const auto& m = c.model;
  const auto& t = c.training;
  const auto& d = c.data;
  auto list = [](const std::vector<std::string>& v) {
    toml::array a;
    for (const auto& s : v) a.push_back(s);
    std::ostringstream os;
    os << a;
    return os.str();
  };
  auto quoted = [](const std::string& s) {
    std::ostringstream os;
    os << toml::value<std::string>(s);
    return os.str();
  };
  // A TOML float, never an integer: -0.0 written as "-0" would read back as the integer 0.
  auto real = [](auto v) {
    std::string text = fmt::format("{}", v);
    if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
    return text;
  };
  return fmt::format(
      "[model]\ndim = {}\nn_layers = {}\nn_heads = {}\nn_kv_heads = {}\nffn_dim = {}\n"
      "vocab_size = {}\nmax_seq_len = {}\ngroup_size = {}\nquantization = \"{}\"\n"
      "mhc_n_streams = {}\n"
      "ffn_activation = \"{}\"\nsub_norms = {}\ntied_embeddings = {}\nnorm_eps = {}\n"
      "rope_theta = {}\n\n"
      "[training]\nbatch_size = {}\nseq_len = {}\ntotal_steps = {}\nwarmup_steps = {}\n"
      "schedule = \"{}\"\ndecay_fraction = {}\nmin_lr_fraction = {}\nmuon_lr = {}\n"
      "optimizer = \"{}\"\nlion_lr = {}\nadamw_lr = {}\nweight_decay = {}\nentropy_weight = {}\n"
      "grad_clip = {}\ngrad_accum = {}\nmatmul_precision = \"{}\"\ncheckpoint_interval = "
      "{}\nkeep_last = {}\n"
      "eval_interval = {}\neval_batches = {}\nseed = {}\n\n"
      "[data]\ninputs = {}\ninclude = {}\nexclude = {}\ntokenizer = {}\n"
      "tokenizer_vocab_size = {}\nvalidation_fraction = {}\nvalidation_inputs = {}\n"
      "max_bytes = {}\nformat = \"{}\"\nchat_template = \"{}\"\n\n"
      "[output]\ncheckpoint_dir = {}\nlog_level = \"{}\"\nlog_format = \"{}\"\n",
      m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim, m.vocab_size, m.context_length,
      c.group_size, c.quantization, m.mhc_streams, model::ffn_activation_name(m.ffn_activation),
      m.sub_norms, m.tied_embeddings, real(m.norm_eps), real(m.rope_theta), t.batch_size, t.seq_len,
      t.total_steps, t.warmup_steps, t.schedule == Schedule::kWsd ? "wsd" : "cosine",
      real(t.decay_fraction), real(t.min_lr_fraction), real(t.muon_lr),
      t.optimizer == ScalarOptimizer::kLion ? "lion" : "adamw", real(t.lion_lr), real(t.adamw_lr),
      real(t.weight_decay), real(t.entropy_weight), real(t.grad_clip), t.grad_accum,
      t.matmul_precision, t.checkpoint_interval, t.keep_last, t.eval_interval, t.eval_batches,
      t.seed, list(d.inputs), list(d.include), list(d.exclude), quoted(d.tokenizer),
      d.tokenizer_vocab_size, real(d.validation_fraction), list(d.validation_inputs), d.max_bytes,
      d.format, d.chat_template, quoted(c.output.checkpoint_dir.string()), c.output.log_level,
      c.output.log_format);
}

}  // namespace nanochat::train
