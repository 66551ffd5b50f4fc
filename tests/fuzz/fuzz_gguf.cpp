// libFuzzer target for the GGUF reader: untrusted bytes may only produce a parsed file or a
// FormatError — no crash, no hang, no allocation beyond a small multiple of the input size
// (-rss_limit_mb in the CTest run enforces that).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/util/error.hpp"

using namespace nanochat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    gguf::ReadOptions options;
    options.allow_unsupported_types = (size % 2) == 0;
    const auto f =
        gguf::GgufFile::parse(std::span<const std::uint8_t>(data, size), "fuzz", options);
    // Everything the reader accepted must be inside the input.
    for (const auto& t : f.tensors()) {
      const auto bytes = f.tensor_data(t);
      if (bytes.size() != t.bytes || bytes.data() < data ||
          bytes.data() + bytes.size() > data + size) {
        std::abort();
      }
    }
    for (const auto& [key, value] : f.metadata()) (void)value.display(4);
  } catch (const FormatError&) {
  }
  return 0;
}
