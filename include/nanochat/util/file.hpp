// Files: whole-file reads and atomic writes (temp file in the same directory, fsync, rename,
// fsync of the directory), so a crash leaves either the old file or the new one, never a mix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace nanochat {

// A read-only memory map of a whole file. Opening costs only the mapping; pages are read on
// first touch. Thread-safe to read; movable, not copyable.
class MappedFile {
 public:
  // Throws IoError naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Writes a file atomically in pieces: everything goes to a temporary file in the same
// directory, and commit() fsyncs it and renames it over `path`. Destroying an uncommitted
// AtomicFile removes the temporary, so an error or crash never leaves a half-written `path`.
//
// The temporary is `.<name>.tmp-XXXXXX` (mkstemp's six letters and digits), and the writer holds
// an exclusive flock(2) on it from creation to rename: the kernel drops the lock when the process
// dies, however it dies, so a temporary nobody holds is a leftover (see
// remove_stale_temporaries). Constructing an AtomicFile removes the leftovers of its own target.
// Errors name `path`, never the hidden temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);  // throws IoError
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::uint8_t> bytes);
  void write(std::string_view bytes);
  std::uint64_t written() const { return written_; }
  void commit();

 private:
  std::filesystem::path path_;
  std::string tmp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

// Removes the temporaries that AtomicFile writers left in `dir` when they were killed before
// commit (kill -9, out of memory, power loss): regular files named exactly `.<name>.tmp-XXXXXX`
// whose flock can be taken, i.e. that no live process is writing. With `target`, only the
// temporaries of that file name. Safe against a live writer in any process: its lock is held;
// a writer that loses a brand-new temporary in the instant between mkstemp and flock sees that
// the file has no link any more and makes another. Files of other programs do not match the
// pattern; a file on a filesystem without flock is left alone. Not recursive. Returns how many
// files were removed; never throws (a folder that cannot be read is skipped).
std::size_t remove_stale_temporaries(const std::filesystem::path& dir,
                                     std::string_view target = {});

// Creates `dir` and its parents if missing; throws IoError naming it when that fails.
void make_directories(const std::filesystem::path& dir);

// Reads a whole file; throws IoError naming the path.
std::string read_file(const std::filesystem::path& path);

// Replaces `path` atomically with `contents`, creating parent directories. Throws IoError.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// nanochat's cache directory: $NANOCHAT_CACHE, else $XDG_CACHE_HOME/nanochat, else
// ~/.cache/nanochat. Not created here.
std::filesystem::path cache_dir();

}  // namespace nanochat
