// JSON-lines files (one JSON object per line: chat data, code suites), read with errors that
// name the file and line.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace nanochat {

// Calls `fn(object, where)` for every non-blank line of `path`, where `where` is "path:line" for
// the caller's own errors. A line that is not a JSON object is a FormatError naming the file and
// line and saying what a line should hold (`expected`); an unreadable file an IoError.
void for_each_json_line(const std::filesystem::path& path, std::string_view expected,
                        const std::function<void(const nlohmann::json&, const std::string&)>& fn);

}  // namespace nanochat
