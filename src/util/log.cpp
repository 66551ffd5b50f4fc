#include "nanochat/util/log.hpp"

#include <memory>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "nanochat/util/error.hpp"

namespace nanochat {

void init_logging(int verbosity, LogFormat format) {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("nanochat", sink);
  if (format == LogFormat::kJson) {
    // One JSON object per line. %v is the message; messages avoid unescaped quotes.
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":"%v"})");
  } else {
    logger->set_pattern("%^%l%$: %v");
  }
  const spdlog::level::level_enum levels[] = {spdlog::level::warn, spdlog::level::info,
                                              spdlog::level::debug, spdlog::level::trace};
  logger->set_level(levels[verbosity < 0 ? 0 : (verbosity > 3 ? 3 : verbosity)]);
  spdlog::set_default_logger(logger);
}

LogFormat parse_log_format(std::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  fail<UsageError>("--log-format: '{}' is not a log format; use 'text' or 'json'", text);
}

}  // namespace nanochat
