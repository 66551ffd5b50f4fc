// nanochat tokenize: the token ids (and pieces) a model's tokenizer gives a text.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  std::string prompt;
  std::string file;
  bool ids = false;
  bool json = false;
  bool no_bos = false;
  bool special = false;
};

void run(const Options& o, bool prompt_given) {
  const std::string text = read_text_input(o.prompt, prompt_given, o.file, true);
  const auto file = gguf::GgufFile::open(model_path(o.model), gguf::ReadOptions{true});
  const model::Tokenizer tok = model::Tokenizer::from_gguf(file);
  const auto ids = tok.encode(text, !o.no_bos, o.special);
  if (o.json) {
    nlohmann::json pieces = nlohmann::json::array();
    for (auto id : ids) pieces.push_back(tok.piece(id, true));
    const nlohmann::json doc = {{"ids", ids}, {"pieces", pieces}, {"count", ids.size()}};
    std::puts(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  if (o.ids) {
    std::string line;
    for (std::size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::puts(line.c_str());
    return;
  }
  for (auto id : ids) {
    std::string piece = tok.piece(id, true);
    std::string shown;
    for (char c : piece) {
      if (c == '\n') {
        shown += "\\n";
      } else if (c == '\t') {
        shown += "\\t";
      } else {
        shown += c;
      }
    }
    fmt::print("{:>8} '{}'\n", id, shown);
  }
  fmt::print(stderr, "{} tokens\n", ids.size());
}

}  // namespace

void add_tokenize(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub =
      app.add_subcommand("tokenize", "Show the tokens a model's tokenizer gives a text");
  sub->add_option("-m,--model", opts->model,
                  "GGUF file with a tokenizer; vocab-only files work (default: the shipped "
                  "nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  auto* prompt = sub->add_option("-p,--prompt", opts->prompt, "Text to tokenize");
  sub->add_option("-f,--file", opts->file, "File whose contents to tokenize (else -p, else stdin)");
  sub->add_flag("--ids", opts->ids, "Print only the ids, space separated, on one line");
  sub->add_flag("--json", opts->json, "Print one JSON object: ids, pieces, count");
  sub->add_flag("--no-bos", opts->no_bos, "Do not add BOS/EOS even where the model asks for them");
  sub->add_flag("--special", opts->special,
                "Parse control tokens written in the text (e.g. <|endoftext|>)");
  sub->callback([opts, prompt] { run(*opts, prompt->count() > 0); });
}

}  // namespace nanochat::cli
