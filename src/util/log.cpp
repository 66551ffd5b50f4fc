#include "nanochat/util/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <memory>
#include <string>

#include "nanochat/util/error.hpp"

namespace nanochat {
namespace {

// %*: the message as a JSON string literal, quotes included, every character escaped as JSON
// requires — so a message can say anything and each line stays one valid JSON object.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string out = "\"";
    for (const char ch : msg.payload) {
      const auto c = static_cast<unsigned char>(ch);
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          if (c < 0x20) {
            out += fmt::format("\\u{:04x}", c);
          } else {
            out += static_cast<char>(c);
          }
      }
    }
    out += '"';
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

std::shared_ptr<spdlog::logger>& notice_logger() {
  static std::shared_ptr<spdlog::logger> logger;
  return logger;
}

std::unique_ptr<spdlog::formatter> json_formatter(std::string_view level) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<JsonMessageFlag>('*').set_pattern(
      fmt::format(R"({{"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"{}","msg":%*}})", level));
  return formatter;
}

}  // namespace

void init_logging(int verbosity, LogFormat format) {
  auto logger = std::make_shared<spdlog::logger>(
      "nanochat", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  // A sink of its own (a formatter belongs to the sink); console sinks share one process-wide
  // lock, so lines of the two loggers never interleave.
  auto notices = std::make_shared<spdlog::logger>(
      "nanochat.notice", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (format == LogFormat::kJson) {
    // One JSON object per line.
    logger->set_formatter(json_formatter("%l"));
    notices->set_formatter(json_formatter("notice"));
  } else {
    logger->set_pattern("%^%l%$: %v");
    notices->set_pattern("note: %v");
  }
  notices->set_level(spdlog::level::info);
  notice_logger() = notices;
  const spdlog::level::level_enum levels[] = {spdlog::level::warn, spdlog::level::info,
                                              spdlog::level::debug, spdlog::level::trace};
  logger->set_level(levels[verbosity < 0 ? 0 : (verbosity > 3 ? 3 : verbosity)]);
  spdlog::set_default_logger(logger);
}

void notice_line(const std::string& message) {
  if (const auto& logger = notice_logger()) {
    logger->info("{}", message);
  } else {
    spdlog::info("{}", message);
  }
}

LogFormat parse_log_format(std::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  fail<UsageError>("--log-format: '{}' is not a log format; use 'text' or 'json'", text);
}

}  // namespace nanochat
