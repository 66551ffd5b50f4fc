// libFuzzer target for training configs: any TOML text gives a validated config or an Error
// naming what is wrong — and a config that is accepted writes out (to_toml) as text that reads
// back to the same config.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "nanochat/train/config.hpp"
#include "nanochat/util/error.hpp"

using namespace nanochat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string written;
  try {
    written = train::to_toml(train::parse_train_config(text, "fuzz.toml"));
  } catch (const Error&) {
    return 0;
  }
  try {
    if (train::to_toml(train::parse_train_config(written, "written.toml")) != written) std::abort();
  } catch (const Error&) {
    std::abort();  // what nanochat wrote, it must read
  }
  return 0;
}
