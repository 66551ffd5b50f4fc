// Logging through spdlog to stderr. stdout belongs to results (tokens, --json output).
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>
#include <utility>

namespace nanochat {

enum class LogFormat { kText, kJson };

// Installs the process-wide stderr logger. verbosity: 0 = warnings and errors (default),
// 1 = info, 2 = debug, 3+ = trace. Safe to call again to change settings.
void init_logging(int verbosity, LogFormat format);

// A line the user should see at the default verbosity that is neither a warning nor an error:
// "note: ..." (in JSON logs, level "notice"). Before init_logging, an info line.
void notice_line(const std::string& message);
template <typename... Args>
void notice(fmt::format_string<Args...> format, Args&&... args) {
  notice_line(fmt::format(format, std::forward<Args>(args)...));
}

// "text" or "json"; throws UsageError naming --log-format otherwise.
LogFormat parse_log_format(std::string_view text);

}  // namespace nanochat
