// Decoding a token allocates nothing once the session has run one: the forward pass keeps its
// buffers in the session's KV cache, the thread pool's jobs fit std::function's inline storage.
// This binary counts every call of the global operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/model/model.hpp"
#include "test_helpers.hpp"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// The nothrow form too (std::stable_sort's temporary buffer uses it), so that every pointer the
// replaced operator delete frees came from malloc — under ASan, a mix is a reported mismatch.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace nanochat::engine {
namespace {

TEST(DecodeAllocations, NoneAfterTheFirstToken) {
  for (int threads : {1, 2}) {
    LoadOptions o;
    o.kernels = test_support::quiet_kernels(threads);
    const auto loaded = LoadedModel::load(NANOCHAT_DEFAULT_MODEL, o);
    model::KvCache cache(loaded->config(), 64);
    std::vector<float> logits;
    const std::vector<model::TokenId> prompt = {1, 2, 3, 4, 5};
    loaded->forward(prompt, cache, logits);
    const model::TokenId next[] = {6};
    loaded->forward(next, cache, logits);  // first decode: the buffers take the one-token size
    const long before = g_allocations.load();
    for (model::TokenId t = 7; t < 17; ++t) {
      const model::TokenId one[] = {t};
      loaded->forward(one, cache, logits);
    }
    EXPECT_EQ(g_allocations.load() - before, 0) << "threads " << threads;
    EXPECT_EQ(cache.length(), 16);
  }
}

}  // namespace
}  // namespace nanochat::engine
