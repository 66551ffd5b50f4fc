// libFuzzer target for everything behind the GGUF parser: a fuzzed file goes through tokenizer
// construction, the model's config, weight loading (repacking, validation) and a short forward
// pass. Untrusted bytes may only produce a model or an Error — no crash, no hang. Models larger
// than a small cap are not loaded (the sizes they would need are checked by the config alone),
// so the run stays within -rss_limit_mb.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/model/config.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/error.hpp"

using namespace nanochat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = gguf::GgufFile::parse(std::span<const std::uint8_t>(data, size), "fuzz");
    try {
      const auto tok = model::Tokenizer::from_gguf(file);
      const auto ids = tok.encode("fn main() { <|endoftext|> </s> }", true, true);
      (void)tok.decode(ids);
    } catch (const Error&) {
    }
    const model::ModelConfig c = model::ModelConfig::from_gguf(file);
    // Small models only: every weight and cache below a few MB.
    if (c.dim > 1024 || c.ffn_dim > 4096 || c.n_layers > 4 || c.vocab_size > 4096 ||
        c.dim * c.vocab_size > (1 << 20)) {
      return 0;
    }
    static kernels::KernelContext ctx([] {
      kernels::KernelOptions o;
      o.threads = 1;
      o.tune = kernels::TuneMode::kOff;
      o.tune_cache.clear();
      return o;
    }());
    auto m = model::Model::load(file, ctx);
    model::KvCache cache(m->config(), 8);
    std::vector<model::TokenId> tokens = {0, 1, 2};
    for (auto& t : tokens) t %= static_cast<model::TokenId>(m->config().vocab_size);
    std::vector<float> logits;
    m->forward(tokens, cache, logits, true);
  } catch (const Error&) {
  }
  return 0;
}
