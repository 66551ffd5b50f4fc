// nanochat info: what a GGUF file holds — architecture, hyperparameters, tensor table, tokenizer
// summary, chat template. Works on any GGUF, vocab-only files included; tensor types nanochat
// cannot run are listed and marked rather than rejected.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/gguf/reader.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  bool json = false;
  bool all = false;
};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

nlohmann::json value_json(const gguf::Value& v, std::size_t max_items) {
  nlohmann::json out = {{"type", gguf::value_type_name(v.type())}};
  if (const gguf::Array* a = v.as_array()) {
    out["element_type"] = gguf::value_type_name(a->type);
    out["length"] = a->size();
    nlohmann::json items = nlohmann::json::array();
    for (std::size_t i = 0; i < a->size() && i < max_items; ++i)
      items.push_back(value_json(a->at(i), 0)["value"]);
    out["value"] = items;
    if (a->size() > max_items) out["truncated"] = true;
    return out;
  }
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::shared_ptr<const gguf::Array>>) {
          out["value"] = nullptr;
        } else if constexpr (std::is_same_v<T, std::string>) {
          // Invalid UTF-8 cannot go into JSON as is: replace it.
          out["value"] =
              nlohmann::json(x).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
          out["value"] = nlohmann::json::parse(out["value"].get<std::string>());
        } else {
          out["value"] = x;
        }
      },
      v.storage());
  return out;
}

struct TokenizerSummary {
  std::string model, pre;
  std::size_t tokens = 0, merges = 0;
  std::optional<std::int64_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos;
};

TokenizerSummary tokenizer_summary(const gguf::GgufFile& f) {
  TokenizerSummary t;
  t.model = f.get_string("tokenizer.ggml.model").value_or("");
  t.pre = f.get_string("tokenizer.ggml.pre").value_or("");
  if (const auto* a = f.get_array("tokenizer.ggml.tokens")) t.tokens = a->size();
  if (const auto* a = f.get_array("tokenizer.ggml.merges")) t.merges = a->size();
  t.bos = f.get_int("tokenizer.ggml.bos_token_id");
  t.eos = f.get_int("tokenizer.ggml.eos_token_id");
  t.unk = f.get_int("tokenizer.ggml.unknown_token_id");
  t.pad = f.get_int("tokenizer.ggml.padding_token_id");
  t.add_bos = f.get_bool("tokenizer.ggml.add_bos_token");
  t.add_eos = f.get_bool("tokenizer.ggml.add_eos_token");
  return t;
}

std::string human_bytes(std::uint64_t b) {
  if (b >= (1ull << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1ull << 30));
  if (b >= (1ull << 20)) return fmt::format("{:.2f} MiB", static_cast<double>(b) / (1ull << 20));
  if (b >= (1ull << 10)) return fmt::format("{:.1f} KiB", static_cast<double>(b) / (1ull << 10));
  return fmt::format("{} B", b);
}

void run(const Options& o) {
  gguf::ReadOptions ro;
  ro.allow_unsupported_types = true;
  const gguf::GgufFile f = gguf::GgufFile::open(model_path(o.model), ro);
  const std::string& arch = f.architecture();
  const TokenizerSummary tok = tokenizer_summary(f);
  const std::string tmpl = f.get_string("tokenizer.chat_template").value_or("");
  std::uint64_t tensor_bytes = 0;
  for (const auto& t : f.tensors()) tensor_bytes += t.bytes;

  if (o.json) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : f.metadata()) meta[k] = value_json(v, o.all ? SIZE_MAX : 16);
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : f.tensors()) {
      tensors.push_back({{"name", t.name},
                         {"type", t.type.name},
                         {"type_id", t.type.id},
                         {"supported", t.type.supported},
                         {"shape", t.dims},
                         {"elements", t.elements()},
                         {"bytes", t.bytes},
                         {"offset", t.offset}});
    }
    nlohmann::json tokenizer = {
        {"model", tok.model}, {"pre", tok.pre}, {"tokens", tok.tokens}, {"merges", tok.merges}};
    if (tok.bos) tokenizer["bos_token_id"] = *tok.bos;
    if (tok.eos) tokenizer["eos_token_id"] = *tok.eos;
    if (tok.add_bos) tokenizer["add_bos_token"] = *tok.add_bos;
    const nlohmann::json doc = {{"file", f.name()},
                                {"file_size", f.file_size()},
                                {"version", f.version()},
                                {"alignment", f.alignment()},
                                {"data_offset", f.data_offset()},
                                {"architecture", arch},
                                {"metadata", meta},
                                {"tensors", tensors},
                                {"tensor_bytes", tensor_bytes},
                                {"tokenizer", tokenizer},
                                {"chat_template", tmpl}};
    std::puts(doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }

  fmt::print("file:           {} ({}, GGUF v{}, alignment {})\n", f.name(),
             human_bytes(f.file_size()), f.version(), f.alignment());
  fmt::print("architecture:   {}\n", arch.empty() ? "(none: vocab-only or unknown)" : arch);
  if (auto name = f.get_string("general.name")) fmt::print("name:           {}\n", *name);
  fmt::print("\nhyperparameters:\n");
  bool any = false;
  for (const auto& [k, v] : f.metadata()) {
    if (!arch.empty() && starts_with(k, arch + ".")) {
      fmt::print("  {:<40} {}\n", k.substr(arch.size() + 1), v.display());
      any = true;
    }
  }
  if (!any) fmt::print("  (none)\n");

  fmt::print("\ntokenizer:      ");
  if (tok.model.empty()) {
    fmt::print("(none)\n");
  } else {
    fmt::print("{}{}, {} tokens, {} merges", tok.model,
               tok.pre.empty() ? "" : " (pre: " + tok.pre + ")", tok.tokens, tok.merges);
    if (tok.bos) fmt::print(", bos {}", *tok.bos);
    if (tok.eos) fmt::print(", eos {}", *tok.eos);
    if (tok.unk) fmt::print(", unk {}", *tok.unk);
    if (tok.pad) fmt::print(", pad {}", *tok.pad);
    if (tok.add_bos) fmt::print(", add_bos {}", *tok.add_bos);
    fmt::print("\n");
  }
  if (tmpl.empty()) {
    fmt::print("chat template:  (none)\n");
  } else {
    fmt::print("chat template:  {} characters\n", tmpl.size());
    std::size_t start = 0, lines = 0;
    while (start < tmpl.size() && lines < (o.all ? SIZE_MAX : 6)) {
      const std::size_t nl = tmpl.find('\n', start);
      fmt::print("  | {}\n",
                 tmpl.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
      start = nl == std::string::npos ? tmpl.size() : nl + 1;
      ++lines;
    }
    if (start < tmpl.size()) fmt::print("  | ... (--all shows everything)\n");
  }

  fmt::print("\nother metadata:\n");
  for (const auto& [k, v] : f.metadata()) {
    if ((!arch.empty() && starts_with(k, arch + ".")) || k == "tokenizer.chat_template") continue;
    fmt::print("  {:<40} {}\n", k, v.display(o.all ? SIZE_MAX : 8));
  }

  fmt::print("\ntensors: {} ({})\n", f.tensors().size(), human_bytes(tensor_bytes));
  if (!f.tensors().empty()) {
    fmt::print("  {:<40} {:<8} {:<24} {:>12}\n", "name", "type", "shape", "bytes");
    for (const auto& t : f.tensors()) {
      fmt::print("  {:<40} {:<8} {:<24} {:>12}{}\n", t.name, t.type.name, t.shape(), t.bytes,
                 t.type.supported ? "" : "  (nanochat cannot run this type)");
    }
  }
}

}  // namespace

void add_info(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "info", "Show what a GGUF file holds: architecture, hyperparameters, tensors, tokenizer");
  sub->add_option("-m,--model", opts->model, "GGUF file, registry name, URL or hf:// address")
      ->required()
      ->envname("NANOCHAT_ARG_MODEL");
  sub->add_flag("--json", opts->json, "Print one JSON object on stdout");
  sub->add_flag("--all", opts->all, "Show arrays and the chat template in full");
  sub->callback([opts] { run(*opts); });
}

}  // namespace nanochat::cli
