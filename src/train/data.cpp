#include "nanochat/train/data.hpp"

#include <fmt/format.h>
#include <fnmatch.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/corpus.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/json_lines.hpp"

namespace nanochat::train {
namespace fs = std::filesystem;
namespace {

constexpr int kDataVersion = 1;

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

bool matches(const std::string& pattern, const fs::path& p) {
  return fnmatch(pattern.c_str(), p.string().c_str(), 0) == 0 ||
         fnmatch(pattern.c_str(), p.filename().string().c_str(), 0) == 0;
}

// The files the config selects from `inputs` (data.inputs or data.validation_inputs), in a
// stable order.
std::vector<fs::path> select_files(const DataSection& d, const std::vector<std::string>& inputs,
                                   const char* key) {
  std::vector<std::string> extensions, globs;
  for (const auto& inc : d.include) {
    (inc.size() > 1 && inc[0] == '.' && inc.find_first_of("*?[/") == std::string::npos ? extensions
                                                                                       : globs)
        .push_back(inc);
  }
  const CorpusFiles found = collect_corpus(inputs, extensions);
  std::vector<fs::path> files;
  for (const auto& f : found.files) {
    if (!globs.empty() &&
        std::none_of(globs.begin(), globs.end(), [&](const auto& g) { return matches(g, f); })) {
      continue;
    }
    if (std::any_of(d.exclude.begin(), d.exclude.end(),
                    [&](const auto& g) { return matches(g, f); })) {
      continue;
    }
    files.push_back(f);
  }
  if (files.empty()) {
    fail<UsageError>("{}: no text files left after data.include/data.exclude", key);
  }
  return files;
}

void write_tokens(const fs::path& path, const std::vector<std::int32_t>& tokens) {
  AtomicFile f(path);
  f.write(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(tokens.data()),
                                        tokens.size() * sizeof(std::int32_t)));
  f.commit();
}

std::span<const std::int32_t> as_tokens(const MappedFile& f) {
  return {reinterpret_cast<const std::int32_t*>(f.bytes().data()), f.size() / sizeof(std::int32_t)};
}

// One conversation per line: {"messages": [{"role": "system"|"user"|"assistant", "content":
// "..."}]}. Rendered with `tmpl`; each assistant turn's tokens (and the EOS after the last one) are
// targets, everything else is stored as -(t + 1): context only. The pieces are tokenized one
// turn at a time, split where the template's prompt for the turn ends.
std::vector<std::int32_t> encode_chat_file(const fs::path& path, const model::Tokenizer& tok,
                                           const model::ChatTemplate& tmpl,
                                           std::vector<std::size_t>& starts, std::size_t base) {
  std::vector<std::int32_t> out;
  auto context = [&](const std::string& text, bool bos) {
    for (const auto t : tok.encode(text, bos, false)) out.push_back(-t - 1);
  };
  for_each_json_line(
      path, R"({"messages": [{"role": ..., "content": ...}]})",
      [&](const nlohmann::json& j, const std::string& where) {
        if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) {
          fail<FormatError>(
              "{}: no \"messages\" array; expected {{\"messages\": [{{\"role\": ..., "
              "\"content\": ...}}]}}",
              where);
        }
        std::vector<model::ChatMessage> messages;
        bool any_assistant = false;
        for (const auto& m : j["messages"]) {
          if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
              !m.contains("content") || !m["content"].is_string()) {
            fail<FormatError>("{}: every message needs a string \"role\" and \"content\"", where);
          }
          const std::string role = m["role"].get<std::string>();
          if (role != "system" && role != "user" && role != "assistant") {
            fail<FormatError>("{}: role \"{}\"; use system, user or assistant", where, role);
          }
          any_assistant = any_assistant || role == "assistant";
          messages.push_back({role, m["content"].get<std::string>()});
        }
        if (!any_assistant) {
          fail<FormatError>("{}: no assistant message, so nothing to learn from this line", where);
        }
        starts.push_back(base + out.size());
        std::string done;  // rendered so far
        bool first = true;
        for (std::size_t i = 0; i < messages.size(); ++i) {
          const std::vector<model::ChatMessage> upto(
              messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
          const std::string full = tmpl.render(upto, false);
          if (messages[i].role == "assistant") {
            const std::vector<model::ChatMessage> before(
                messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
            const std::string prompt = tmpl.render(before, true);
            if (prompt.compare(0, done.size(), done) != 0 ||
                full.compare(0, prompt.size(), prompt) != 0) {
              fail("chat template {} does not render turn by turn", tmpl.name());
            }
            context(prompt.substr(done.size()), first);
            for (const auto t : tok.encode(full.substr(prompt.size()), false, false))
              out.push_back(t);
          } else {
            context(full.substr(done.size()), first);
          }
          first = false;
          done = full;
        }
        if (const auto eos = tok.eos()) out.push_back(*eos);  // the answer ends: learn to stop
      });
  return out;
}

}  // namespace

std::vector<std::uint8_t> tokenizer_only_gguf(const fs::path& path) {
  const auto file = gguf::GgufFile::open(path, gguf::ReadOptions{true});
  gguf::GgufWriter w;
  if (model::copy_tokenizer_metadata(file, w) == 0)
    fail<UsageError>("data.tokenizer {}: the file has no tokenizer", path.string());
  return w.bytes();
}

Dataset Dataset::prepare(const TrainConfig& config,
                         const std::function<void(const std::string&)>& log) {
  const DataSection& d = config.data;
  if (d.tokenizer != "train" && !fs::is_regular_file(d.tokenizer)) {
    fail<UsageError>(
        "data.tokenizer {}: no such file; name a GGUF file with a tokenizer, or "
        "\"train\"",
        d.tokenizer);
  }
  const bool chat = d.format == "chat";
  if (chat && d.tokenizer == "train") {
    fail<UsageError>(
        "data.format = \"chat\" fine-tunes a model: start from one with --init FILE (its "
        "tokenizer is used), or name a tokenizer file in data.tokenizer");
  }
  const std::vector<fs::path> files = select_files(d, d.inputs, "data.inputs");
  const std::vector<fs::path> val_files =
      d.validation_inputs.empty() ? std::vector<fs::path>{}
                                  : select_files(d, d.validation_inputs, "data.validation_inputs");
  for (const auto& f : val_files) {
    if (std::find(files.begin(), files.end(), f) != files.end()) {
      fail<UsageError>(
          "data.validation_inputs: {} is also a training input; held-out text must not be "
          "trained on",
          f.string());
    }
  }
  const std::int64_t vocab = d.tokenizer_vocab_size > 0
                                 ? d.tokenizer_vocab_size
                                 : (config.model.vocab_size > 0 ? config.model.vocab_size : 4096);
  nlohmann::json fp;
  fp["version"] = kDataVersion;
  fp["tokenizer"] = d.tokenizer;
  fp["vocab"] = d.tokenizer == "train" ? vocab : 0;
  fp["validation_fraction"] = d.validation_fraction;
  fp["max_bytes"] = d.max_bytes;
  if (chat) {
    fp["format"] = d.format;
    fp["chat_template"] = d.chat_template;
  }
  auto& fl = fp["files"] = nlohmann::json::array();
  auto stamp = [](const fs::path& p) {
    return nlohmann::json::array(
        {p.string(), fs::file_size(p),
         static_cast<std::int64_t>(fs::last_write_time(p).time_since_epoch().count())});
  };
  for (const auto& f : files) fl.push_back(stamp(f));
  if (!val_files.empty()) {
    auto& vl = fp["validation_files"] = nlohmann::json::array();
    for (const auto& f : val_files) vl.push_back(stamp(f));
  }
  if (d.tokenizer != "train") fp["tokenizer_file"] = stamp(d.tokenizer);

  Dataset ds;
  ds.fingerprint_ = fp.dump();
  const fs::path dir = config.output.checkpoint_dir / "data";
  const fs::path manifest = dir / "manifest.json", tok_path = dir / "tokenizer.gguf";
  const fs::path train_path = dir / "train.bin", val_path = dir / "val.bin";
  // A preparation killed half-way left its temporaries here (the run folder is nanochat's own;
  // only dead writers' files of AtomicFile's pattern go).
  remove_stale_temporaries(dir);
  // The prepared files; the manifest last: it vouches for the files before it.
  auto write_prepared = [&](const std::vector<std::uint8_t>& tok_bytes,
                            const std::vector<std::int32_t>& train,
                            const std::vector<std::int32_t>& val) {
    write_file_atomic(tok_path, std::string_view(reinterpret_cast<const char*>(tok_bytes.data()),
                                                 tok_bytes.size()));
    write_tokens(train_path, train);
    write_tokens(val_path, val);
    nlohmann::json m;
    m["fingerprint"] = ds.fingerprint_;
    m["train_tokens"] = train.size();
    m["val_tokens"] = val.size();
    write_file_atomic(manifest, m.dump(2) + "\n");
  };
  bool reuse = false;
  if (fs::exists(manifest) && fs::exists(tok_path) && fs::exists(train_path) &&
      fs::exists(val_path)) {
    try {
      reuse = nlohmann::json::parse(read_file(manifest)).at("fingerprint") == ds.fingerprint_;
    } catch (const std::exception&) {
      reuse = false;  // a damaged manifest: prepare again
    }
  }
  if (!reuse && chat) {
    make_directories(dir);
    const model::ChatTemplate tmpl = model::ChatTemplate::named(d.chat_template);
    // The model file will carry the template it was tuned with.
    gguf::GgufWriter w;
    model::copy_tokenizer_metadata(gguf::GgufFile::open(d.tokenizer, gguf::ReadOptions{true}), w);
    w.set("tokenizer.chat_template", gguf::Value(tmpl.jinja()));
    const std::vector<std::uint8_t> tok_bytes = w.bytes();
    const auto tok_file = gguf::GgufFile::parse(tok_bytes, tok_path.string());
    const model::Tokenizer tok = model::Tokenizer::from_gguf(tok_file);
    std::vector<std::int32_t> train, val;
    std::vector<std::size_t> starts, val_starts;  // where each conversation begins
    for (const auto& f : files) {
      const auto t = encode_chat_file(f, tok, tmpl, starts, train.size());
      train.insert(train.end(), t.begin(), t.end());
    }
    for (const auto& f : val_files) {
      const auto t = encode_chat_file(f, tok, tmpl, val_starts, val.size());
      val.insert(val.end(), t.begin(), t.end());
    }
    std::size_t n_train = starts.size(), n_val = val_starts.size();
    if (val_files.empty() && d.validation_fraction > 0) {
      // The last conversations, whole, are held out.
      const auto want = train.size() - static_cast<std::size_t>(static_cast<double>(train.size()) *
                                                                d.validation_fraction);
      const auto it = std::lower_bound(starts.begin(), starts.end(), want);
      const std::size_t cut = it == starts.end() ? train.size() : *it;
      n_val = static_cast<std::size_t>(starts.end() - it);
      n_train -= n_val;
      val.assign(train.begin() + static_cast<std::ptrdiff_t>(cut), train.end());
      train.resize(cut);
    }
    write_prepared(tok_bytes, train, val);
    const auto targets = std::count_if(train.begin(), train.end(), [](auto t) { return t >= 0; });
    log(
        fmt::format("data: {} conversations in {} files ({} chat template): {} tokens, {} of "
                    "them assistant targets; {} validation conversations, {} tokens",
                    n_train, files.size(), tmpl.name(), train.size(), targets, n_val, val.size()));
  } else if (!reuse) {
    make_directories(dir);
    // Read the text (up to max_bytes).
    std::vector<std::string> texts;
    std::int64_t total = 0;
    for (const auto& f : files) {
      std::string text = read_file(f);
      if (d.max_bytes > 0 && total + static_cast<std::int64_t>(text.size()) > d.max_bytes) {
        text.resize(static_cast<std::size_t>(std::max<std::int64_t>(0, d.max_bytes - total)));
      }
      total += static_cast<std::int64_t>(text.size());
      if (!text.empty()) texts.push_back(std::move(text));
      if (d.max_bytes > 0 && total >= d.max_bytes) break;
    }
    log(fmt::format("data: {} files, {:.1f} MiB of text", texts.size(),
                    static_cast<double>(total) / (1 << 20)));
    std::vector<std::uint8_t> tok_bytes;
    if (d.tokenizer == "train") {
      model::BpeTrainOptions o;
      o.vocab_size = static_cast<std::size_t>(vocab);
      if (vocab < 259) fail<UsageError>("data.tokenizer_vocab_size {} must be at least 259", vocab);
      model::BpeTrainer trainer(o);
      for (const auto& t : texts) trainer.add_text(t);
      log(fmt::format("data: training a {}-token BPE tokenizer", vocab));
      int reported = 0;  // progress in tenths, for large corpora
      const model::BpeVocab v = trainer.train([&](std::size_t done, std::size_t merges) {
        const int tenth = merges > 0 ? static_cast<int>(10 * done / merges) : 10;
        if (tenth > reported && tenth < 10) {
          reported = tenth;
          log(fmt::format("data: tokenizer {}% ({} of {} merges)", 10 * tenth, done, merges));
        }
      });
      gguf::GgufWriter w;
      model::write_tokenizer_metadata(w, v, false);
      tok_bytes = w.bytes();
    } else {
      tok_bytes = tokenizer_only_gguf(d.tokenizer);
    }
    const auto tok_file = gguf::GgufFile::parse(tok_bytes, tok_path.string());
    const model::Tokenizer tok = model::Tokenizer::from_gguf(tok_file);
    const auto eos = tok.eos();
    // Documents end with EOS; progress is logged in tenths for big corpora.
    auto encode_all = [&](const std::vector<std::string>& docs, std::int64_t bytes,
                          const char* what) {
      std::vector<std::int32_t> out;
      std::size_t encoded = 0, encoded_bytes = 0;
      int reported_tenth = 0;
      for (const auto& t : docs) {
        const auto ids = tok.encode(t, false, false);
        ++encoded;
        encoded_bytes += t.size();
        const int tenth = static_cast<int>(10 * encoded_bytes / std::max<std::int64_t>(bytes, 1));
        if (bytes > (8 << 20) && tenth > reported_tenth && tenth < 10) {
          reported_tenth = tenth;
          log(fmt::format("data: tokenized {}% of the {} text ({} files)", 10 * tenth, what,
                          encoded));
        }
        out.insert(out.end(), ids.begin(), ids.end());
        if (eos) out.push_back(*eos);
      }
      return out;
    };
    std::vector<std::int32_t> train = encode_all(texts, total, "training");
    std::vector<std::int32_t> val;
    std::int64_t val_total = 0;
    if (!val_files.empty()) {
      std::vector<std::string> val_texts;
      for (const auto& f : val_files) {
        val_texts.push_back(read_file(f));
        val_total += static_cast<std::int64_t>(val_texts.back().size());
      }
      log(fmt::format("data: {} validation files, {:.1f} MiB of held-out text", val_files.size(),
                      static_cast<double>(val_total) / (1 << 20)));
      val = encode_all(val_texts, val_total, "validation");
    } else {
      const auto n_val =
          static_cast<std::size_t>(static_cast<double>(train.size()) * d.validation_fraction);
      val.assign(train.end() - static_cast<std::ptrdiff_t>(n_val), train.end());
      train.resize(train.size() - n_val);
    }
    write_prepared(tok_bytes, train, val);
    log(fmt::format("data: {} training and {} validation tokens ({:.2f} bytes per token)",
                    train.size(), val.size(),
                    static_cast<double>(total + val_total) /
                        static_cast<double>(std::max<std::size_t>(1, train.size() + val.size()))));
  } else {
    log(fmt::format("data: reusing {} (inputs unchanged)", dir.string()));
  }
  ds.reused_ = reuse;
  const std::string tok_text = read_file(tok_path);
  ds.tokenizer_gguf_.assign(tok_text.begin(), tok_text.end());
  const auto tok_file = gguf::GgufFile::parse(ds.tokenizer_gguf_, tok_path.string());
  ds.tokenizer_.emplace(model::Tokenizer::from_gguf(tok_file));
  ds.train_.emplace(train_path);
  ds.val_.emplace(val_path);
  const std::size_t v = ds.tokenizer_->size();
  ds.token_bytes_.resize(v);
  for (std::size_t i = 0; i < v; ++i) {
    ds.token_bytes_[i] =
        static_cast<std::uint32_t>(ds.tokenizer_->piece(static_cast<model::TokenId>(i)).size());
  }
  const auto need = static_cast<std::size_t>(config.training.seq_len + 1);
  if (ds.train_tokens().size() < need) {
    fail<UsageError>(
        "data: {} training tokens, fewer than one sequence of training.seq_len + 1 = {}; add "
        "text or lower training.seq_len",
        ds.train_tokens().size(), need);
  }
  if ((d.validation_fraction > 0 || !d.validation_inputs.empty()) &&
      ds.val_tokens().size() < need) {
    fail<UsageError>(
        "data: {} validation tokens, fewer than training.seq_len + 1 = {}; raise "
        "data.validation_fraction, add text, or set it to 0",
        ds.val_tokens().size(), need);
  }
  return ds;
}

std::span<const std::int32_t> Dataset::train_tokens() const { return as_tokens(*train_); }
std::span<const std::int32_t> Dataset::val_tokens() const { return as_tokens(*val_); }

Batcher::Batcher(std::span<const std::int32_t> tokens, std::int64_t batch, std::int64_t seq,
                 std::uint64_t seed)
    : tokens_(tokens), batch_(batch), seq_(seq), seed_(seed) {
  if (static_cast<std::int64_t>(tokens.size()) < seq + 1) {
    fail("a batch of {}-token sequences needs at least {} tokens", seq, seq + 1);
  }
}

void Batcher::fill(std::int64_t step, std::int64_t micro, std::vector<std::int32_t>& inputs,
                   std::vector<std::int32_t>& targets) const {
  inputs.resize(static_cast<std::size_t>(batch_ * seq_));
  targets.resize(inputs.size());
  const auto starts = static_cast<std::uint64_t>(static_cast<std::int64_t>(tokens_.size()) - seq_);
  for (std::int64_t b = 0; b < batch_; ++b) {
    const std::uint64_t r = mix(seed_ ^ mix(static_cast<std::uint64_t>(step) * 1315423911ull +
                                            static_cast<std::uint64_t>(micro) * 2654435761ull +
                                            static_cast<std::uint64_t>(b)));
    const std::uint64_t start = r % starts;
    // Stored -(t + 1) is token t as context only: an input, never a target.
    for (std::int64_t i = 0; i < seq_; ++i) {
      const std::int32_t in = tokens_[start + static_cast<std::uint64_t>(i)];
      const std::int32_t next = tokens_[start + static_cast<std::uint64_t>(i) + 1];
      inputs[static_cast<std::size_t>(b * seq_ + i)] = in >= 0 ? in : -in - 1;
      targets[static_cast<std::size_t>(b * seq_ + i)] = next >= 0 ? next : -1;
    }
  }
}

}  // namespace nanochat::train
