// Logging through spdlog to stderr. stdout belongs to results (tokens, --json output).
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace nanochat {

enum class LogFormat { kText, kJson };

// Installs the process-wide stderr logger. verbosity: 0 = warnings and errors (default),
// 1 = info, 2 = debug, 3+ = trace. Safe to call again to change settings.
void init_logging(int verbosity, LogFormat format);

// "text" or "json"; throws UsageError naming --log-format otherwise.
LogFormat parse_log_format(std::string_view text);

}  // namespace nanochat
