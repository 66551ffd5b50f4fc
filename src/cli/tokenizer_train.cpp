// nanochat tokenizer train: a byte-level BPE tokenizer from files, folders and globs, written as
// a vocab-only GGUF that nanochat and llama.cpp both load.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/util/corpus.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::vector<std::string> inputs;
  std::string output;
  std::size_t vocab_size = 4096;
  std::string extensions;
  std::uint64_t max_bytes = 0;
};

std::vector<std::string> parse_extensions(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const std::size_t comma = text.find(',', start);
    std::string ext = text.substr(start, comma == std::string::npos ? comma : comma - start);
    if (ext.empty()) fail<UsageError>("--ext {}: empty extension in the list", text);
    if (ext[0] != '.') ext = "." + ext;
    out.push_back(ext);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void run(const Options& o) {
  if (o.vocab_size > (1u << 20)) fail<UsageError>("--vocab-size {}: at most 1048576", o.vocab_size);
  const CorpusFiles corpus = collect_corpus(o.inputs, parse_extensions(o.extensions));
  if (corpus.files.empty()) {
    fail<UsageError>(
        "no input files (skipped {} binary and {} by --ext); pass text files or "
        "folders that contain some",
        corpus.skipped_binary, corpus.skipped_extension);
  }
  model::BpeTrainOptions options;
  options.vocab_size = o.vocab_size;
  model::BpeTrainer trainer(options);
  const double start = now_seconds();
  std::size_t used = 0;
  for (const auto& path : corpus.files) {
    if (o.max_bytes && trainer.bytes_seen() >= o.max_bytes) break;
    trainer.add_text(read_file(path));
    ++used;
  }
  fmt::print(stderr,
             "tokenizer: read {} files ({:.1f} MB, {} distinct words; skipped {} binary, "
             "{} by extension) in {:.1f} s\n",
             used, static_cast<double>(trainer.bytes_seen()) / 1e6, trainer.distinct_words(),
             corpus.skipped_binary, corpus.skipped_extension, now_seconds() - start);
  const bool tty = ::isatty(2) != 0;
  const model::BpeVocab vocab = trainer.train([&](std::size_t done, std::size_t total) {
    if (tty) fmt::print(stderr, "\rtokenizer: {}/{} tokens", done, total);
  });
  fmt::print(stderr, "{}tokenizer: {} tokens, {} merges in {:.1f} s\n", tty ? "\r" : "",
             vocab.tokens.size(), vocab.merges.size(), now_seconds() - start);
  if (vocab.tokens.size() < o.vocab_size) {
    fmt::print(stderr,
               "tokenizer: the corpus ran out of pairs seen twice; the vocabulary has {} "
               "tokens instead of {}\n",
               vocab.tokens.size(), o.vocab_size);
  }
  gguf::GgufWriter writer;
  model::write_tokenizer_metadata(writer, vocab, true);
  writer.write(o.output);
  fmt::print(stderr, "tokenizer: wrote {}\n", o.output);
}

}  // namespace

void add_tokenizer(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Train tokenizers");
  tok->require_subcommand(1);
  auto opts = std::make_shared<Options>();
  CLI::App* sub = tok->add_subcommand(
      "train", "Train a byte-level BPE tokenizer (llama-bpe pre-tokenizer) into a GGUF file");
  sub->add_option("inputs", opts->inputs, "Text files, folders (recursive) and glob patterns")
      ->required();
  sub->add_option("-o,--output", opts->output, "Output GGUF file")->required();
  sub->add_option("--vocab-size", opts->vocab_size,
                  "Tokens in the vocabulary, special tokens included")
      ->capture_default_str();
  sub->add_option("--ext", opts->extensions,
                  "Only files found in folders with these extensions, comma separated "
                  "(e.g. py,rs,cpp)");
  sub->add_option("--max-bytes", opts->max_bytes, "Stop reading input after this many bytes");
  sub->callback([opts] { run(*opts); });
}

}  // namespace nanochat::cli
