// One HTTP(S) transfer into a partial file, with libcurl: redirects followed, retries with
// backoff on transient failures, and resumption of an interrupted transfer with a range request
// that is validated against the server's ETag / Last-Modified and size (a file that changed on
// the server is fetched again from the start). The caller verifies the finished partial file
// (SHA-256, format) and renames it into place; see zoo/store.hpp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "nanochat/util/error.hpp"

namespace nanochat::zoo {

// A download failed for good: the server said no (404, 401/403), the retries ran out, the file
// is not what was promised, or the disk is full. The message names the URL or file and says
// what to do.
class DownloadError : public IoError {
 public:
  using IoError::IoError;
};

// The transfer was stopped through DownloadOptions::cancel; the partial file is kept.
class DownloadCancelled : public DownloadError {
 public:
  using DownloadError::DownloadError;
};

struct DownloadProgress {
  std::uint64_t done = 0;       // bytes in the partial file, including those of earlier attempts
  std::uint64_t total = 0;      // 0 while unknown
  double bytes_per_second = 0;  // over this attempt
};

struct DownloadRequest {
  std::string url;                // http:// or https://
  std::string display;            // how messages name the model (a registry name, the URL)
  std::string sha256;             // expected digest, or empty; only checked by the caller
  std::uint64_t size = 0;         // expected size, or 0; a server announcing another is an error
  std::string bearer_token;       // sent as Authorization: Bearer to the first host only
  bool hub = false;               // an hf:// address: a 401/403 is about HF_TOKEN
  std::filesystem::path partial;  // the bytes go here; "<partial>.json" keeps resume data
  std::filesystem::path target;   // what the file becomes, for messages (a full disk, ...)
};

struct DownloadOptions {
  int retries = 5;  // transient failures tolerated in a row (an attempt that made progress resets)
  std::chrono::milliseconds backoff{500};  // first wait; doubles per retry, at most 30 s
  std::function<void(const DownloadProgress&)> on_progress;  // often; throttle when drawing
  std::function<void(const std::string&)> on_notice;         // retries, resumes, restarts
  const std::atomic<bool>* cancel = nullptr;  // set: stop soon, keep the partial file
};

struct DownloadResult {
  std::uint64_t size = 0;         // bytes in the finished partial file
  std::uint64_t transferred = 0;  // bytes received in this call (less than size after a resume)
  std::string sha256;             // of the whole file
  std::string linked_sha256;      // a SHA-256 the server published (Hugging Face's X-Linked-Etag)
  std::string etag;
  std::string content_type;    // of the last response
  double receive_seconds = 0;  // time in attempts that received bytes (the rate's divisor)
  bool resumed = false;
};

// Fetches request.url into request.partial, continuing what an earlier call left there when the
// server's validators still match. Throws DownloadError, or DownloadCancelled when `cancel` is
// set (the partial file is kept for the next call).
DownloadResult download(const DownloadRequest& request, const DownloadOptions& options);

// The partial file's companion holding resume data.
std::filesystem::path partial_meta_path(const std::filesystem::path& partial);

// Removes a partial file and its companion, if present.
void remove_partial(const std::filesystem::path& partial);

// "hf://OWNER/REPO/PATH" with `revision` -> "<endpoint>/OWNER/REPO/resolve/<revision>/PATH",
// the endpoint from $NANOCHAT_HF_ENDPOINT (default https://huggingface.co). Throws UsageError
// for a malformed spec.
std::string resolve_hf_url(const std::string& spec, const std::string& revision);

// Throws UsageError naming `url` when libcurl cannot parse it as an http(s) URL with a host.
void check_url(const std::string& url);

// $HF_TOKEN, or empty.
std::string hf_token();

}  // namespace nanochat::zoo
