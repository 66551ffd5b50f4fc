#include "nanochat/train/data.hpp"

#include <fmt/format.h>
#include <fnmatch.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/corpus.hpp"
#include "nanochat/util/error.hpp"

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

// The files the config selects, in a stable order.
std::vector<fs::path> select_files(const DataSection& d) {
  std::vector<std::string> extensions, globs;
  for (const auto& inc : d.include) {
    (inc.size() > 1 && inc[0] == '.' && inc.find_first_of("*?[/") == std::string::npos ? extensions
                                                                                       : globs)
        .push_back(inc);
  }
  const CorpusFiles found = collect_corpus(d.inputs, extensions);
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
    fail<UsageError>("data.inputs: no text files left after data.include/data.exclude");
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
  const std::vector<fs::path> files = select_files(d);
  const std::int64_t vocab = d.tokenizer_vocab_size > 0
                                 ? d.tokenizer_vocab_size
                                 : (config.model.vocab_size > 0 ? config.model.vocab_size : 4096);
  nlohmann::json fp;
  fp["version"] = kDataVersion;
  fp["tokenizer"] = d.tokenizer;
  fp["vocab"] = d.tokenizer == "train" ? vocab : 0;
  fp["validation_fraction"] = d.validation_fraction;
  fp["max_bytes"] = d.max_bytes;
  auto& fl = fp["files"] = nlohmann::json::array();
  auto stamp = [](const fs::path& p) {
    return nlohmann::json::array(
        {p.string(), fs::file_size(p),
         static_cast<std::int64_t>(fs::last_write_time(p).time_since_epoch().count())});
  };
  for (const auto& f : files) fl.push_back(stamp(f));
  if (d.tokenizer != "train") fp["tokenizer_file"] = stamp(d.tokenizer);

  Dataset ds;
  ds.fingerprint_ = fp.dump();
  const fs::path dir = config.output.checkpoint_dir / "data";
  const fs::path manifest = dir / "manifest.json", tok_path = dir / "tokenizer.gguf";
  const fs::path train_path = dir / "train.bin", val_path = dir / "val.bin";
  bool reuse = false;
  if (fs::exists(manifest) && fs::exists(tok_path) && fs::exists(train_path) &&
      fs::exists(val_path)) {
    try {
      reuse = nlohmann::json::parse(read_file(manifest)).at("fingerprint") == ds.fingerprint_;
    } catch (const std::exception&) {
      reuse = false;  // a damaged manifest: prepare again
    }
  }
  if (!reuse) {
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
    std::vector<std::int32_t> tokens;
    const auto eos = tok.eos();
    std::size_t encoded = 0, encoded_bytes = 0;
    int reported_tenth = 0;
    for (const auto& t : texts) {
      const auto ids = tok.encode(t, false, false);
      ++encoded;
      encoded_bytes += t.size();
      const int tenth = static_cast<int>(10 * encoded_bytes / std::max<std::int64_t>(total, 1));
      if (total > (8 << 20) && tenth > reported_tenth && tenth < 10) {  // only big corpora
        reported_tenth = tenth;
        log(fmt::format("data: tokenized {}% ({} files)", 10 * tenth, encoded));
      }
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      if (eos) tokens.push_back(*eos);  // documents end with EOS
    }
    const auto n_val =
        static_cast<std::size_t>(static_cast<double>(tokens.size()) * d.validation_fraction);
    const std::vector<std::int32_t> train(tokens.begin(),
                                          tokens.end() - static_cast<std::ptrdiff_t>(n_val));
    const std::vector<std::int32_t> val(tokens.end() - static_cast<std::ptrdiff_t>(n_val),
                                        tokens.end());
    write_file_atomic(tok_path, std::string_view(reinterpret_cast<const char*>(tok_bytes.data()),
                                                 tok_bytes.size()));
    write_tokens(train_path, train);
    write_tokens(val_path, val);
    nlohmann::json m;
    m["fingerprint"] = ds.fingerprint_;
    m["train_tokens"] = train.size();
    m["val_tokens"] = val.size();
    write_file_atomic(manifest, m.dump(2) + "\n");  // last: it vouches for the files above
    log(fmt::format(
        "data: {} training and {} validation tokens ({:.2f} bytes per token)", train.size(),
        val.size(),
        static_cast<double>(total) / static_cast<double>(std::max<std::size_t>(1, tokens.size()))));
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
  if (d.validation_fraction > 0 && ds.val_tokens().size() < need) {
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
    std::memcpy(inputs.data() + b * seq_, tokens_.data() + start,
                static_cast<std::size_t>(seq_) * sizeof(std::int32_t));
    std::memcpy(targets.data() + b * seq_, tokens_.data() + start + 1,
                static_cast<std::size_t>(seq_) * sizeof(std::int32_t));
  }
}

}  // namespace nanochat::train
