// Owning, aligned, uninitialised-by-default buffers for kernel data. Alignment is at least 64
// bytes (one cache line, one ZMM register); buffers of 2 MiB or more are aligned to 2 MiB and
// advised as transparent huge pages, which keeps TLB misses out of the GEMV streaming loop.
// Optionally placed on a NUMA node. Not thread-safe to mutate; safe to read concurrently.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

namespace nanochat {

inline constexpr std::size_t kCacheLine = 64;

namespace detail {
// Returns memory of at least `bytes`, aligned as described above, zero-filled unless `zero` is
// false (then untouched: the first thread to write a page places it). Throws std::bad_alloc on
// failure.
void* aligned_alloc_bytes(std::size_t bytes, int numa_node, bool zero = true);
void aligned_free_bytes(void* ptr) noexcept;
struct AlignedDeleter {
  bool owned = true;  // false: memory someone else owns (a mapped file), never freed here
  void operator()(void* ptr) const noexcept {
    if (owned) aligned_free_bytes(ptr);
  }
};
}  // namespace detail

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data only");

 public:
  AlignedBuffer() = default;
  // `numa_node` < 0 means "wherever first touch puts it".
  explicit AlignedBuffer(std::size_t count, int numa_node = -1)
      : data_(count ? static_cast<T*>(detail::aligned_alloc_bytes(count * sizeof(T), numa_node))
                    : nullptr),
        size_(count) {}

  // Not zero-filled and not yet touched: for a buffer that its writers fill completely, in
  // parallel (each thread's first touch then places and faults in its own pages).
  static AlignedBuffer uninitialized(std::size_t count, int numa_node = -1) {
    AlignedBuffer b;
    if (count) {
      b.data_.reset(
          static_cast<T*>(detail::aligned_alloc_bytes(count * sizeof(T), numa_node, false)));
      b.size_ = count;
    }
    return b;
  }

  // A view of `count` values at `data`, which the caller keeps alive (and unwritten, when it is
  // read-only) for as long as the buffer is used: weights read from a mapped file.
  static AlignedBuffer borrowed(const T* data, std::size_t count) {
    AlignedBuffer b;
    b.data_ = std::unique_ptr<T, detail::AlignedDeleter>(const_cast<T*>(data),
                                                         detail::AlignedDeleter{false});
    b.size_ = count;
    return b;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_.get()[i]; }
  const T& operator[](std::size_t i) const { return data_.get()[i]; }
  std::span<T> span() { return {data(), size_}; }
  std::span<const T> span() const { return {data(), size_}; }

 private:
  std::unique_ptr<T, detail::AlignedDeleter> data_;
  std::size_t size_ = 0;
};

}  // namespace nanochat
