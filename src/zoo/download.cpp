#include "nanochat/zoo/download.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "nanochat/util/file.hpp"
#include "nanochat/util/sha256.hpp"
#include "nanochat/version.hpp"

namespace nanochat::zoo {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kMB = 1e6;
constexpr int kMaxRestarts = 2;
constexpr std::uint64_t kWritebackBytes =
    32ULL << 20;  // times a transfer may start over because the file changed

void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw InternalError("libcurl could not be initialised");
    }
  });
}

// What a partial file's companion records, so that a later attempt can ask for the rest and
// know whether the server still has the same file.
struct PartialMeta {
  std::string name;  // what the download is called (DownloadRequest::display)
  std::string url;
  std::string etag;
  std::string last_modified;
  std::uint64_t total = 0;
};

std::optional<PartialMeta> read_meta(const fs::path& partial) {
  std::error_code ec;
  const fs::path path = partial_meta_path(partial);
  if (!fs::exists(path, ec)) return std::nullopt;
  try {
    const auto j = nlohmann::json::parse(read_file(path));
    PartialMeta m;
    m.url = j.at("url").get<std::string>();
    m.name = j.value("name", "");
    m.etag = j.value("etag", "");
    m.last_modified = j.value("last_modified", "");
    m.total = j.value("total", std::uint64_t{0});
    return m;
  } catch (const std::exception&) {
    return std::nullopt;  // unreadable resume data: start over
  }
}

void write_meta(const fs::path& partial, const PartialMeta& m) {
  const nlohmann::json j = {{"name", m.name},
                            {"url", m.url},
                            {"etag", m.etag},
                            {"last_modified", m.last_modified},
                            {"total", m.total}};
  write_file_atomic(partial_meta_path(partial), j.dump() + "\n");
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// The headers of the last response in a redirect chain.
struct Response {
  std::string etag;
  std::string last_modified;
  std::string content_range;
  std::optional<std::uint64_t> content_length;
  std::uint64_t retry_after = 0;
  std::string content_type;
};

// "bytes A-B/T" -> {A, T}; "bytes */T" -> {nullopt, T}.
struct ContentRange {
  std::optional<std::uint64_t> start;
  std::optional<std::uint64_t> total;
};
ContentRange parse_content_range(std::string_view v) {
  ContentRange r;
  if (!v.starts_with("bytes ")) return r;
  v.remove_prefix(6);
  const auto slash = v.find('/');
  if (slash == std::string_view::npos) return r;
  r.total = parse_u64(v.substr(slash + 1));
  const std::string_view range = v.substr(0, slash);
  if (const auto dash = range.find('-'); dash != std::string_view::npos) {
    r.start = parse_u64(range.substr(0, dash));
  }
  return r;
}

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MB", static_cast<double>(bytes) / kMB);
}

enum class Abort { kNone, kRestart, kWriteError, kTooLong, kSizeMismatch, kNoSpace, kCancelled };

// One download() call: the open partial file and the state of the current attempt.
struct Transfer {
  const DownloadRequest& request;
  const DownloadOptions& options;
  int fd = -1;
  PartialMeta meta;
  Sha256 hash;
  std::uint64_t written = 0;      // bytes in the file
  std::uint64_t flushed = 0;      // bytes handed to the disk's writeback
  std::uint64_t start = 0;        // where this attempt's body begins
  std::uint64_t total = 0;        // the whole file's size, once known
  std::uint64_t received = 0;     // this attempt
  std::uint64_t transferred = 0;  // this call
  double receive_seconds = 0;     // this call's attempts that received bytes
  Response response;
  std::string linked_sha256;
  bool body_started = false;
  bool resumed = false;
  Abort abort = Abort::kNone;
  int write_errno = 0;
  std::string abort_detail;
  CURL* curl = nullptr;
  Clock::time_point attempt_start;

  Transfer(const DownloadRequest& r, const DownloadOptions& o) : request(r), options(o) {}
  ~Transfer() {
    if (fd >= 0) ::close(fd);
  }
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  void notice(const std::string& text) const {
    if (options.on_notice) options.on_notice(text);
  }

  // Empties the partial file and the hash, for a transfer from byte 0.
  void truncate() {
    if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) {
      fail<DownloadError>("{}: cannot truncate it: {}", request.partial.string(),
                          std::strerror(errno));
    }
    written = 0;
    flushed = 0;
    hash = Sha256();
  }

  // Decides, at the first byte of a body, whether it continues the partial file, replaces it,
  // or is not the file at all.
  void begin_body() {
    body_started = true;
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status == 206) {
      const ContentRange range = parse_content_range(response.content_range);
      const bool same_file =
          range.start == start && range.total.has_value() &&
          (meta.total == 0 || *range.total == meta.total) &&
          (meta.etag.empty() || response.etag.empty() || response.etag == meta.etag);
      if (!same_file) {
        abort = Abort::kRestart;
        abort_detail = "the server's partial answer does not continue the file";
        return;
      }
      total = *range.total;
      resumed = true;
    } else {
      if (start > 0) {
        notice(fmt::format(
            "{}: the server sent the whole file instead of the rest (it changed since the last "
            "attempt, or the server does not resume): starting over",
            request.display));
      }
      truncate();
      start = 0;
      total = response.content_length.value_or(0);
    }
    meta.name = request.display;
    meta.url = request.url;
    meta.etag = response.etag;
    meta.last_modified = response.last_modified;
    meta.total = total;
    write_meta(request.partial, meta);
    if (request.size != 0 && total != 0 && total != request.size) {
      abort = Abort::kSizeMismatch;
      abort_detail =
          fmt::format("the server announces {} bytes, the registry says {}", total, request.size);
      return;
    }
    if (total > written) {
      struct statvfs fsinfo {};
      const fs::path dir =
          request.partial.parent_path().empty() ? fs::path(".") : request.partial.parent_path();
      if (::statvfs(dir.c_str(), &fsinfo) == 0) {
        const std::uint64_t free_bytes = static_cast<std::uint64_t>(fsinfo.f_bavail) *
                                         static_cast<std::uint64_t>(fsinfo.f_frsize);
        if (free_bytes < total - written) {
          abort = Abort::kNoSpace;
          abort_detail = fmt::format("needs {} more, {} is free on that disk", mib(total - written),
                                     mib(free_bytes));
        }
      }
    }
  }

  std::size_t on_body(const char* data, std::size_t size) {
    if (!body_started) begin_body();
    if (abort != Abort::kNone) return 0;
    if (total != 0 && written + size > total) {
      abort = Abort::kTooLong;
      abort_detail = fmt::format("the server sent more than the {} bytes it announced", total);
      return 0;
    }
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd, data + done, size - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        write_errno = errno;
        abort = (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) ? Abort::kNoSpace
                                                                       : Abort::kWriteError;
        return 0;
      }
      done += static_cast<std::size_t>(n);
    }
    hash.update(std::span(reinterpret_cast<const std::uint8_t*>(data), size));
    written += size;
    received += size;
    transferred += size;
    // Start writing what arrived to the disk while the rest comes, so that the fsync before the
    // file becomes visible has little left to wait for.
    if (written - flushed >= kWritebackBytes) {
      ::sync_file_range(fd, static_cast<off_t>(flushed), static_cast<off_t>(written - flushed),
                        SYNC_FILE_RANGE_WRITE);
      flushed = written;
    }
    return size;
  }

  void on_header(std::string_view line) {
    if (line.starts_with("HTTP/")) {  // a new response (after a redirect or a 100)
      response = Response{};
      return;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return;
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string value = trim(line.substr(colon + 1));
    if (name == "etag") {
      response.etag = value;
    } else if (name == "last-modified") {
      response.last_modified = value;
    } else if (name == "content-range") {
      response.content_range = value;
    } else if (name == "content-length") {
      response.content_length = parse_u64(value);
    } else if (name == "content-type") {
      response.content_type = value;
    } else if (name == "retry-after") {
      response.retry_after = parse_u64(value).value_or(0);
    } else if (name == "x-linked-etag") {
      std::string v = value;
      if (v.starts_with("W/")) v.erase(0, 2);
      v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
      if (is_sha256_hex(v)) linked_sha256 = lower(v);
    }
  }

  bool cancelled() const { return options.cancel != nullptr && options.cancel->load(); }
};

std::size_t write_callback(char* data, std::size_t size, std::size_t n, void* user) {
  return static_cast<Transfer*>(user)->on_body(data, size * n);
}

std::size_t header_callback(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<Transfer*>(user)->on_header(std::string_view(data, size * n));
  return size * n;
}

int progress_callback(void* user, curl_off_t /*dltotal*/, curl_off_t /*dlnow*/,
                      curl_off_t /*ultotal*/, curl_off_t /*ulnow*/) {
  auto* t = static_cast<Transfer*>(user);
  if (t->cancelled()) {
    t->abort = Abort::kCancelled;
    return 1;
  }
  if (t->options.on_progress && t->body_started) {
    const double seconds = std::chrono::duration<double>(Clock::now() - t->attempt_start).count();
    t->options.on_progress(DownloadProgress{
        t->written, t->total, seconds > 0 ? static_cast<double>(t->received) / seconds : 0.0});
  }
  return 0;
}

bool transient_curl_error(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

bool transient_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

// Sleeps `wait`, waking early when the transfer is cancelled.
void wait_or_cancel(const Transfer& t, std::chrono::milliseconds wait) {
  const auto until = Clock::now() + wait;
  while (Clock::now() < until) {
    if (t.cancelled()) return;
    std::this_thread::sleep_for(
        std::min<Clock::duration>(std::chrono::milliseconds(50), until - Clock::now()));
  }
}

// Prepares the file for an attempt: continues from what is there when the resume data says the
// same URL wrote it, else empties it. Feeds the existing bytes to the hash.
void prepare(Transfer& t) {
  const auto meta = read_meta(t.request.partial);
  struct stat st {};
  const bool have_bytes = ::fstat(t.fd, &st) == 0 && st.st_size > 0;
  if (meta && meta->url == t.request.url && have_bytes &&
      (meta->total == 0 || static_cast<std::uint64_t>(st.st_size) <= meta->total) &&
      (!meta->etag.empty() || !meta->last_modified.empty())) {
    t.meta = *meta;
    t.written = static_cast<std::uint64_t>(st.st_size);
    t.hash = Sha256();
    std::vector<std::uint8_t> buffer(1 << 20);
    std::uint64_t at = 0;
    while (at < t.written) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), t.written - at));
      const ssize_t n = ::pread(t.fd, buffer.data(), want, static_cast<off_t>(at));
      if (n <= 0) {
        fail<DownloadError>("{}: cannot read the partial file: {}", t.request.partial.string(),
                            n < 0 ? std::strerror(errno) : "it shrank while being read");
      }
      t.hash.update(std::span(buffer.data(), static_cast<std::size_t>(n)));
      at += static_cast<std::uint64_t>(n);
    }
    t.total = t.meta.total;
  } else {
    t.truncate();
    t.meta = PartialMeta{};
    t.total = 0;
  }
  if (::lseek(t.fd, static_cast<off_t>(t.written), SEEK_SET) < 0) {
    fail<DownloadError>("{}: cannot seek: {}", t.request.partial.string(), std::strerror(errno));
  }
  t.start = t.written;
  t.flushed = t.written;
}

}  // namespace

fs::path partial_meta_path(const fs::path& partial) { return fs::path(partial.string() + ".json"); }

void remove_partial(const fs::path& partial) {
  std::error_code ec;
  fs::remove(partial, ec);
  fs::remove(partial_meta_path(partial), ec);
}

void check_url(const std::string& url) {
  init_curl();
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), curl_url_cleanup);
  if (!u) throw InternalError("libcurl could not create a URL handle");
  const CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0);
  if (rc != CURLUE_OK) {
    fail<UsageError>("'{}': not a valid URL ({})", url, curl_url_strerror(rc));
  }
  char* host = nullptr;
  if (curl_url_get(u.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK || host == nullptr ||
      *host == '\0') {
    curl_free(host);
    fail<UsageError>("'{}': not a valid URL (no host)", url);
  }
  curl_free(host);
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    fail<UsageError>("'{}': only http:// and https:// addresses can be downloaded", url);
  }
}

std::string hf_token() {
  const char* token = std::getenv("HF_TOKEN");
  return token == nullptr ? std::string() : std::string(token);
}

std::string resolve_hf_url(const std::string& spec, const std::string& revision) {
  constexpr std::string_view kPrefix = "hf://";
  if (!std::string_view(spec).starts_with(kPrefix)) {
    fail<UsageError>("{}: not an hf:// address", spec);
  }
  const std::string rest = spec.substr(kPrefix.size());
  const auto first = rest.find('/');
  const auto second = first == std::string::npos ? std::string::npos : rest.find('/', first + 1);
  if (first == 0 || second == std::string::npos || second == first + 1 ||
      second + 1 >= rest.size() || rest.back() == '/') {
    fail<UsageError>(
        "{}: an hf:// address is hf://OWNER/REPO/FILE (for example "
        "hf://microsoft/bitnet-b1.58-2B-4T-gguf/ggml-model-i2_s.gguf)",
        spec);
  }
  const std::string path = rest.substr(second + 1);
  for (const char c : rest) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '?' || c == '#' || c == '%' || c == '\\') {
      fail<UsageError>("{}: the address holds a character it may not ('{}')", spec,
                       c == ' ' ? std::string("space") : std::string(1, c));
    }
  }
  if (path.find("..") != std::string::npos) {
    fail<UsageError>("{}: the file path may not contain '..'", spec);
  }
  if (revision.empty() || revision.find_first_of("/?#% ") != std::string::npos) {
    fail<UsageError>("--revision '{}': give a branch, tag or commit name", revision);
  }
  std::string endpoint = "https://huggingface.co";
  if (const char* env = std::getenv("NANOCHAT_HF_ENDPOINT"); env != nullptr && *env != '\0') {
    endpoint = env;
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  if (!endpoint.starts_with("http://") && !endpoint.starts_with("https://")) {
    fail<UsageError>("NANOCHAT_HF_ENDPOINT={}: must start with https:// or http://", endpoint);
  }
  return fmt::format("{}/{}/resolve/{}/{}", endpoint, rest.substr(0, second), revision, path);
}

namespace {
DownloadResult run_download(const DownloadRequest& request, const DownloadOptions& options,
                            Transfer& t);
}  // namespace

DownloadResult download(const DownloadRequest& request, const DownloadOptions& options) {
  init_curl();
  Transfer t(request, options);
  try {
    return run_download(request, options, t);
  } catch (const DownloadCancelled&) {
    throw;
  } catch (const Error&) {
    if (t.written == 0) remove_partial(request.partial);  // nothing worth keeping for a resume
    throw;
  }
}

namespace {
DownloadResult run_download(const DownloadRequest& request, const DownloadOptions& options,
                            Transfer& t) {
  // How messages name the server: the URL, unless the subject already is it.
  const std::string server = request.display == request.url ? "the server" : request.url;
  if (!request.url.starts_with("http://") && !request.url.starts_with("https://")) {
    fail<DownloadError>("{}: only http:// and https:// addresses can be downloaded", request.url);
  }
  const fs::path target = request.target.empty() ? request.partial : request.target;
  if (const auto dir = request.partial.parent_path(); !dir.empty()) make_directories(dir);
  t.fd = ::open(request.partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (t.fd < 0) {
    fail<DownloadError>("{}: cannot create the download's partial file {}: {}", target.string(),
                        request.partial.string(), std::strerror(errno));
  }
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw InternalError("libcurl could not create a transfer");
  t.curl = curl.get();
  std::array<char, CURL_ERROR_SIZE> error_buffer{};
  const std::string user_agent = fmt::format("nanochat/{}", build::kVersion);

  int failures = 0;
  int restarts = 0;
  std::string last_error;
  for (;;) {
    if (t.cancelled()) {
      throw DownloadCancelled(
          fmt::format("{}: download interrupted; run it again to resume", request.display));
    }
    prepare(t);
    if (t.meta.total != 0 && t.written == t.meta.total) break;  // an earlier call got it all
    if (t.written > 0) {
      t.notice(fmt::format("{}: resuming at {}{}", request.display, mib(t.written),
                           t.meta.total != 0 ? " of " + mib(t.meta.total) : std::string()));
    }
    CURL* c = curl.get();
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);  // stalled for a minute: try again
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer.data());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_callback);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_callback);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_callback);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "identity");
    if (!request.bearer_token.empty()) {
      // Bearer authentication goes to the first host only, not to a CDN a redirect names.
      curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
      curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, request.bearer_token.c_str());
    }
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr,
                                                                        curl_slist_free_all);
    std::string range;
    if (t.written > 0) {
      range = fmt::format("{}-", t.written);
      curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
      // If-Range: the server sends the rest only while the file is the one we have part of.
      const bool strong_etag = !t.meta.etag.empty() && !t.meta.etag.starts_with("W/");
      const std::string validator = strong_etag ? t.meta.etag : t.meta.last_modified;
      headers.reset(curl_slist_append(nullptr, fmt::format("If-Range: {}", validator).c_str()));
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    }
    t.response = Response{};
    t.body_started = false;
    t.abort = Abort::kNone;
    t.received = 0;
    t.attempt_start = Clock::now();
    error_buffer[0] = '\0';
    const CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && !t.body_started && (status == 200 || status == 206)) {
      t.on_body(nullptr, 0);  // an empty body still decides what the file is
    }
    const bool progressed = t.received > 0;
    if (progressed) {
      t.receive_seconds += std::chrono::duration<double>(Clock::now() - t.attempt_start).count();
    }

    if (rc == CURLE_OK && t.abort == Abort::kNone) {
      if (t.total == 0 || t.written == t.total) break;
      last_error = fmt::format("the transfer ended at {} of {} bytes", t.written, t.total);
    } else if (t.abort == Abort::kCancelled || rc == CURLE_ABORTED_BY_CALLBACK) {
      throw DownloadCancelled(
          fmt::format("{}: download interrupted at {}; run the same command again to resume",
                      request.display, mib(t.written)));
    } else if (t.abort == Abort::kRestart) {
      if (++restarts > kMaxRestarts) {
        remove_partial(request.partial);
        fail<DownloadError>("{}: {} ({}) several times; giving up", request.display, t.abort_detail,
                            request.url);
      }
      t.notice(fmt::format("{}: {}: starting over", request.display, t.abort_detail));
      remove_partial(request.partial);
      t.truncate();
      continue;
    } else if (t.abort == Abort::kSizeMismatch || t.abort == Abort::kTooLong) {
      remove_partial(request.partial);
      fail<DownloadError>(
          "{}: {} ({}); nothing was kept. The file on the server is not the one "
          "expected: check the address or the registry entry",
          request.display, t.abort_detail, request.url);
    } else if (t.abort == Abort::kNoSpace) {
      fail<DownloadError>(
          "{}: not enough disk space for {} ({}); {} downloaded so far is kept in {} and a rerun "
          "resumes once space is freed",
          request.display, target.string(),
          t.write_errno != 0 ? std::string(std::strerror(t.write_errno)) : t.abort_detail,
          mib(t.written), request.partial.string());
    } else if (t.abort == Abort::kWriteError) {
      fail<DownloadError>("{}: cannot write {}: {}", request.display, request.partial.string(),
                          std::strerror(t.write_errno));
    } else if (rc == CURLE_HTTP_RETURNED_ERROR) {
      if (status == 416 && t.written > 0) {
        const ContentRange range_info = parse_content_range(t.response.content_range);
        if (range_info.total == t.written && t.meta.total != t.written) {
          remove_partial(request.partial);
          fail<DownloadError>(
              "{}: the server announced {} bytes but has only {} ({}); nothing was kept",
              request.display, t.meta.total, t.written, request.url);
        }
        if (++restarts > kMaxRestarts) {
          remove_partial(request.partial);
          fail<DownloadError>("{}: the server refuses to resume ({}); giving up", request.display,
                              request.url);
        }
        t.notice(
            fmt::format("{}: the server cannot send the rest: starting over", request.display));
        remove_partial(request.partial);
        t.truncate();
        continue;
      }
      if (status == 404) {
        fail<DownloadError>("{}: {} answered 404 Not Found: no such file there (check the name{})",
                            request.display, server,
                            request.hub ? ", the address and --revision" : " and the address");
      }
      if (status == 401 || status == 403) {
        fail<DownloadError>(
            "{}: {} answered {} {}: {}", request.display, server, status,
            status == 401 ? "Unauthorized" : "Forbidden",
            !request.hub ? "the server wants credentials, and nanochat sends a token (HF_TOKEN) "
                           "only to hf:// addresses"
            : request.bearer_token.empty()
                ? "the file needs an access token; set HF_TOKEN to one that can read it"
                : "the access token in HF_TOKEN was refused or cannot read this repository");
      }
      if (!transient_status(status)) {
        fail<DownloadError>("{}: {} answered HTTP {}", request.display, server, status);
      }
      last_error = fmt::format("HTTP {}", status);
    } else if (transient_curl_error(rc)) {
      last_error = error_buffer[0] != '\0' ? std::string(error_buffer.data())
                                           : std::string(curl_easy_strerror(rc));
    } else {
      const std::string why = error_buffer[0] != '\0' ? std::string(error_buffer.data())
                                                      : std::string(curl_easy_strerror(rc));
      if (server == "the server") fail<DownloadError>("{}: {}", request.display, why);
      fail<DownloadError>("{}: {}: {}", request.display, request.url, why);
    }

    // A transient failure: wait and try again, continuing from what arrived.
    failures = progressed ? 1 : failures + 1;
    // A refused connection is rarely a passing fault: give up sooner (a registry entry's next
    // address is then tried without a long wait).
    const int limit = rc == CURLE_COULDNT_CONNECT ? std::min(options.retries, 2) : options.retries;
    if (failures > limit) {
      fail<DownloadError>("{}: {} attempt{} in a row failed (last: {}){}", request.display,
                          failures, failures == 1 ? "" : "s", last_error,
                          t.written > 0 ? fmt::format("; {} is kept in {} and a rerun resumes",
                                                      mib(t.written), request.partial.string())
                                        : std::string());
    }
    auto wait = options.backoff * (1 << std::min(failures - 1, 6));
    wait = std::min<std::chrono::milliseconds>(wait, std::chrono::seconds(30));
    if (t.response.retry_after > 0 && t.response.retry_after <= 60) {
      wait =
          std::max<std::chrono::milliseconds>(wait, std::chrono::seconds(t.response.retry_after));
    }
    t.notice(fmt::format("{}: {}; retrying in {:.1f} s ({} of {})", request.display, last_error,
                         static_cast<double>(wait.count()) / 1000.0, failures, limit));
    wait_or_cancel(t, wait);
  }

  if (::fsync(t.fd) != 0) {
    fail<DownloadError>("{}: fsync of {} failed: {}", request.display, request.partial.string(),
                        std::strerror(errno));
  }
  if (options.on_progress) {
    options.on_progress(DownloadProgress{
        t.written, t.written,
        t.receive_seconds > 0 ? static_cast<double>(t.transferred) / t.receive_seconds : 0.0});
  }
  DownloadResult result;
  result.size = t.written;
  result.transferred = t.transferred;
  result.sha256 = t.hash.finish();
  result.linked_sha256 = t.linked_sha256;
  result.etag = t.meta.etag;
  result.resumed = t.resumed;
  result.content_type = t.response.content_type;
  result.receive_seconds = t.receive_seconds;
  return result;
}
}  // namespace

}  // namespace nanochat::zoo
