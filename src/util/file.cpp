#include "nanochat/util/file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "nanochat/util/error.hpp"

namespace nanochat {
namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    fail<IoError>("{}: is a folder; pass a file", path.string());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail<IoError>("{}: cannot open for reading: {}", path.string(), std::strerror(errno));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) fail<IoError>("{}: read failed", path.string());
  return std::move(out).str();
}

namespace {

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail<IoError>("{}: write failed: {}", path.string(), std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

void make_directories(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail<IoError>("{}: cannot create directory: {}", dir.string(), ec.message());
}

namespace {

constexpr std::string_view kTempMarker = ".tmp-";
constexpr std::size_t kTempSuffixLength = 6;  // mkstemp's XXXXXX

// `.<target>.tmp-XXXXXX` (any target when `target` is empty), the six characters letters and
// digits as glibc's mkstemp picks them.
bool is_temporary_name(std::string_view name, std::string_view target) {
  const std::size_t min = 1 + 1 + kTempMarker.size() + kTempSuffixLength;
  if (name.size() < min || name[0] != '.') return false;
  const std::string_view suffix = name.substr(name.size() - kTempSuffixLength);
  if (!std::all_of(suffix.begin(), suffix.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      })) {
    return false;
  }
  const std::string_view rest = name.substr(0, name.size() - kTempSuffixLength);
  if (!rest.ends_with(kTempMarker)) return false;
  const std::string_view base = rest.substr(1, rest.size() - 1 - kTempMarker.size());
  return !base.empty() && (target.empty() || base == target);
}

// Removes `path` if it is a regular file no process holds a lock on. The lock is taken on an
// open descriptor and the name checked to still be that file before unlinking, so neither a
// writer renaming it away nor another cleaner can make this remove the wrong file.
bool remove_if_abandoned(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  bool removed = false;
  struct stat held {};
  struct stat named {};
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
      ::lstat(path.c_str(), &named) == 0 && named.st_ino == held.st_ino &&
      named.st_dev == held.st_dev) {
    removed = ::unlink(path.c_str()) == 0;
  }
  ::close(fd);  // drops the lock
  return removed;
}

}  // namespace

std::size_t remove_stale_temporaries(const fs::path& dir, std::string_view target) {
  std::size_t removed = 0;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return 0;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (is_temporary_name(name, target) && remove_if_abandoned(entry.path())) ++removed;
  }
  return removed;
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  const fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  make_directories(dir);
  remove_stale_temporaries(dir, path_.filename().string());
  // A cleaner in another process may take a temporary in the instant between mkstemp and
  // flock; it is then unlinked (no links left) and another is made.
  for (int attempt = 0;; ++attempt) {
    tmp_ = (dir / ("." + path_.filename().string() + ".tmp-XXXXXX")).string();
    // Close-on-exec: a child process (a compiler the eval harness runs) must not inherit the
    // lock and keep a dead writer's temporary looking alive.
    fd_ = ::mkostemp(tmp_.data(), O_CLOEXEC);
    if (fd_ < 0) {
      fail<IoError>("{}: cannot create a temporary file in {}: {}", path_.string(), dir.string(),
                    std::strerror(errno));
    }
    // Held until commit() renames the file or the destructor removes it. A filesystem without
    // flock leaves the temporary unlocked; remove_stale_temporaries then cannot take it either
    // (it is left alone), so this only loses the clean-up, never a live file.
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && st.st_nlink == 0 && attempt < 8) {
      ::close(fd_);
      continue;
    }
    break;
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::unlink(tmp_.c_str());  // before close: the lock is held until the name is gone
    ::close(fd_);
  }
}

void AtomicFile::write(std::span<const std::uint8_t> bytes) {
  write(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void AtomicFile::write(std::string_view bytes) {
  if (fd_ < 0) fail<IoError>("{}: write after commit", path_.string());
  write_all(fd_, bytes, path_);  // errors name the file being written, not the temporary
  written_ += bytes.size();
}

void AtomicFile::commit() {
  if (fd_ < 0) fail<IoError>("{}: committed twice", path_.string());
  if (::fchmod(fd_, 0644) != 0 || ::fsync(fd_) != 0) {
    fail<IoError>("{}: write failed: {}", path_.string(), std::strerror(errno));
  }
  // Renamed while the lock is still held, so that no cleaner can take the temporary between
  // the close and the rename.
  const int renamed = ::rename(tmp_.c_str(), path_.c_str());
  const int err = errno;
  if (renamed != 0) ::unlink(tmp_.c_str());
  ::close(fd_);
  fd_ = -1;
  if (renamed != 0) {
    fail<IoError>("{}: cannot replace file: {}", path_.string(), std::strerror(err));
  }
  const fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail<IoError>("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail<IoError>("{}: not a regular file", path.string());
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail<IoError>("{}: cannot map: {}", path.string(), std::strerror(err));
    }
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

fs::path cache_dir() {
  if (const char* env = std::getenv("NANOCHAT_CACHE"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return fs::path(xdg) / "nanochat";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return fs::path(home) / ".cache" / "nanochat";
  }
  return fs::path(".cache") / "nanochat";
}

}  // namespace nanochat
