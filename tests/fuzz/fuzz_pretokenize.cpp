// libFuzzer target for the pre-tokenizers: any bytes, split by every tokenizer.ggml.pre name
// nanochat runs, give fragments that are non-empty and cover the input exactly, in order.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "model/pre_tokenizers.hpp"
#include "model/pretokenize.hpp"

using namespace nanochat;

namespace {
std::vector<model::RegexSplitter> all_splitters() {
  std::vector<model::RegexSplitter> splitters;
  for (const auto& name : model::pre_tokenizer_names()) {
    if (const model::PreTokenizer* pre = model::find_pre_tokenizer(name.name)) {
      splitters.emplace_back(pre->patterns);
    }
  }
  return splitters;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<model::RegexSplitter> splitters = all_splitters();
  if (splitters.empty()) std::abort();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& splitter : splitters) {
    std::size_t next = 0;
    for (const auto& [offset, length] : splitter.split(text)) {
      if (offset != next || length == 0) std::abort();
      next = offset + length;
    }
    if (next != size) std::abort();
  }
  return 0;
}
