#include "nanochat/util/aligned.hpp"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

#include "nanochat/util/numa.hpp"

namespace nanochat::detail {
namespace {
constexpr std::size_t kHugePage = std::size_t{2} << 20;
}

void* aligned_alloc_bytes(std::size_t bytes, int numa_node) {
  const std::size_t align = bytes >= kHugePage ? kHugePage : kCacheLine;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  void* ptr = std::aligned_alloc(align, rounded);
  if (ptr == nullptr) throw std::bad_alloc();
  if (align == kHugePage) {
    // Advice only: ignored where THP is disabled.
    (void)madvise(ptr, rounded, MADV_HUGEPAGE);
  }
  if (numa_node >= 0) numa_bind_pages(ptr, rounded, numa_node);
  std::memset(ptr, 0, rounded);  // first touch, after placement
  return ptr;
}

void aligned_free_bytes(void* ptr) noexcept { std::free(ptr); }

}  // namespace nanochat::detail
