#include "nanochat/eval/bpb.hpp"

#include <lzma.h>

#include <chrono>
#include <string>

#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::eval {

std::int64_t xz_size(std::string_view data) {
  // The stream encoder, as the xz command uses it (the buffer encoder would also store the
  // block's sizes in its header: 4-8 bytes more than `xz -9e` writes).
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_easy_encoder(&s, 9 | LZMA_PRESET_EXTREME, LZMA_CHECK_CRC64) != LZMA_OK) {
    fail("xz: cannot start the encoder (out of memory?)");
  }
  std::vector<std::uint8_t> out(1 << 16);
  std::int64_t total = 0;
  s.next_in = reinterpret_cast<const std::uint8_t*>(data.data());
  s.avail_in = data.size();
  for (;;) {
    s.next_out = out.data();
    s.avail_out = out.size();
    const lzma_ret r = lzma_code(&s, LZMA_FINISH);
    total += static_cast<std::int64_t>(out.size() - s.avail_out);
    if (r == LZMA_STREAM_END) break;
    if (r != LZMA_OK) {
      lzma_end(&s);
      fail("xz compression failed (liblzma error {})", static_cast<int>(r));
    }
  }
  lzma_end(&s);
  return total;
}

engine::Score BpbReport::per_file_total() const {
  engine::Score s;
  for (const auto& f : files) s.add(f.score);
  return s;
}

std::int64_t BpbReport::per_file_xz_bytes() const {
  std::int64_t n = 0;
  for (const auto& f : files) n += f.xz_bytes;
  return n;
}

std::int64_t BpbReport::per_file_bytes() const {
  std::int64_t n = 0;
  for (const auto& f : files) n += f.bytes;
  return n;
}

BpbReport evaluate_bpb(engine::LoadedModel& model, const std::vector<std::filesystem::path>& files,
                       std::int64_t context,
                       const std::function<void(std::size_t, std::size_t)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  BpbReport r;
  r.context = context;
  std::string all;
  for (std::size_t i = 0; i < files.size(); ++i) {
    BpbFile f;
    f.path = files[i];
    const std::string text = read_file(files[i]);
    f.bytes = static_cast<std::int64_t>(text.size());
    f.xz_bytes = xz_size(text);
    if (!text.empty()) f.score = engine::score_document(model, text, context);
    all += text;
    r.files.push_back(std::move(f));
    if (progress) progress(i + 1, files.size());
  }
  r.concatenated_bytes = static_cast<std::int64_t>(all.size());
  r.concatenated_xz_bytes = xz_size(all);
  const std::vector<model::TokenId> tokens = model.tokenizer().encode(all, true);
  if (static_cast<std::int64_t>(tokens.size()) < context) {
    fail<UsageError>(
        "the {} files hold {} tokens, fewer than one chunk of {} tokens; give more text or a "
        "smaller context",
        files.size(), tokens.size(), context);
  }
  r.concatenated = engine::score_chunks(model, tokens, context);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace nanochat::eval
