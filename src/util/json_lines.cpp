#include "nanochat/util/json_lines.hpp"

#include <fmt/format.h>

#include <fstream>

#include "nanochat/util/error.hpp"

namespace nanochat {

void for_each_json_line(const std::filesystem::path& path, std::string_view expected,
                        const std::function<void(const nlohmann::json&, const std::string&)>& fn) {
  std::ifstream in(path);
  if (!in) fail<IoError>("{}: cannot read", path.string());
  std::string line;
  std::int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
    }
    if (!j.is_object()) {
      fail<FormatError>("{}: not a JSON object; each line holds {}", where, expected);
    }
    fn(j, where);
  }
}

}  // namespace nanochat
