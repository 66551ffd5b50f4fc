#include "nanochat/util/aligned.hpp"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "nanochat/util/numa.hpp"

namespace nanochat::detail {
namespace {
constexpr std::size_t kHugePage = std::size_t{2} << 20;
}

void* aligned_alloc_bytes(std::size_t bytes, int numa_node, bool zero) {
  const std::size_t align = bytes >= kHugePage ? kHugePage : kCacheLine;
  void* ptr = nullptr;
  if (::posix_memalign(&ptr, align, bytes) != 0) throw std::bad_alloc();
  if (align == kHugePage) {
    // Advice only (ignored where THP is disabled), and only for the whole huge pages inside the
    // buffer: a huge page over its tail would make up to 2 MiB beyond it resident — per matrix.
    (void)madvise(ptr, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
  }
  if (numa_node >= 0) numa_bind_pages(ptr, bytes, numa_node);
  if (zero) std::memset(ptr, 0, bytes);  // first touch, after placement
  return ptr;
}

void aligned_free_bytes(void* ptr) noexcept { std::free(ptr); }

}  // namespace nanochat::detail
