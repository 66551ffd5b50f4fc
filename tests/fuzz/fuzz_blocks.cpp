// libFuzzer target for the ternary block decoders (TQ2_0, TQ1_0, I2_S) and the runtime packing
// that follows them at load. Untrusted bytes may only ever produce trits or a FormatError.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "nanochat/kernels/packed.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/error.hpp"

using namespace nanochat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int format = data[0] % 3;
  std::span<const std::uint8_t> bytes(data + 1, size - 1);
  std::vector<std::int8_t> trits;
  try {
    if (format == 0) {
      const std::size_t blocks = bytes.size() / ternary::kTq2BlockBytes;
      trits.resize(blocks * 256);
      std::vector<float> scales(blocks);
      ternary::decode_tq2_0(bytes.first(blocks * ternary::kTq2BlockBytes), trits, scales);
    } else if (format == 1) {
      const std::size_t blocks = bytes.size() / ternary::kTq1BlockBytes;
      trits.resize(blocks * 256);
      std::vector<float> scales(blocks);
      ternary::decode_tq1_0(bytes.first(blocks * ternary::kTq1BlockBytes), trits, scales);
    } else {
      if (bytes.size() < ternary::kI2sTrailerBytes) return 0;
      const std::size_t groups = (bytes.size() - ternary::kI2sTrailerBytes) / 32;
      trits.resize(groups * 128);
      (void)ternary::decode_i2_s(bytes.first(groups * 32 + ternary::kI2sTrailerBytes), trits);
    }
  } catch (const FormatError&) {
    return 0;
  }
  for (std::int8_t t : trits) {
    if (t < -1 || t > 1) std::abort();
  }
  if (!trits.empty()) {
    // Whatever decoded must pack and read back identically.
    const auto cols = static_cast<std::int64_t>(trits.size());
    const auto m = kernels::pack_matrix(
        1, cols,
        [&](std::int64_t, std::span<std::int8_t> out) {
          std::copy(trits.begin(), trits.end(), out.begin());
        },
        kernels::Isa::kScalar, 1);
    for (std::int64_t c = 0; c < cols; ++c) {
      if (kernels::packed_trit(m, 0, c) != trits[static_cast<std::size_t>(c)]) std::abort();
    }
  }
  return 0;
}
