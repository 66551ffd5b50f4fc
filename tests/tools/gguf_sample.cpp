// Writes a sample GGUF file with every metadata value type and tensors of every type nanochat
// writes (F32, F16, BF16, Q8_0, TQ1_0, TQ2_0), plus a JSON file with the trits and scales the
// ternary tensors hold — for checking nanochat's writer against an independent reader.
// Usage: gguf_sample OUT.gguf EXPECTED.json
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/fp16.hpp"

using namespace nanochat;
using gguf::Value;
using gguf::ValueType;

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gguf_sample OUT.gguf EXPECTED.json\n");
    return 2;
  }
  gguf::GgufWriter w;
  w.set("general.architecture", Value("nanochat"));
  w.set("general.name", Value("sample \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \"quoted\"\nline"));
  w.set("test.u8", Value(std::uint8_t{200}));
  w.set("test.i8", Value(std::int8_t{-100}));
  w.set("test.u16", Value(std::uint16_t{60000}));
  w.set("test.i16", Value(std::int16_t{-30000}));
  w.set("test.u32", Value(std::uint32_t{4000000000u}));
  w.set("test.i32", Value(std::int32_t{-2000000000}));
  w.set("test.f32", Value(0.1f));
  w.set("test.bool", Value(true));
  w.set("test.u64", Value(std::uint64_t{18000000000000000000ull}));
  w.set("test.i64", Value(std::int64_t{-9000000000000000000ll}));
  w.set("test.f64", Value(2.718281828459045));
  w.set("test.empty_string", Value(""));
  w.set("test.arr_u8", gguf::numeric_array<std::uint8_t>(ValueType::kUint8, {0, 1, 255}));
  w.set("test.arr_i32", gguf::numeric_array<std::int32_t>(ValueType::kInt32, {-1, 0, 7}));
  w.set("test.arr_f32", gguf::numeric_array<float>(ValueType::kFloat32, {0.5f, -1.25f}));
  w.set("test.arr_bool", gguf::numeric_array<std::uint8_t>(ValueType::kBool, {1, 0, 1}));
  w.set("test.arr_f64", gguf::numeric_array<double>(ValueType::kFloat64, {1e-300, 3.5}));
  w.set("test.arr_i64", gguf::numeric_array<std::int64_t>(ValueType::kInt64, {-5, 1ll << 40}));
  w.set("test.arr_str", gguf::string_array({"a", "", "\xe2\x96\x81hello", "tab\there"}));
  w.set("test.arr_empty", gguf::numeric_array<std::uint32_t>(ValueType::kUint32, {}));

  nlohmann::json expected;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> trit(-1, 1);

  std::vector<float> f32(15);
  for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) * 0.25f - 1.0f;
  using gguf::TensorType;
  w.add_tensor("f32.weight", TensorType::kF32, {5, 3},
               {reinterpret_cast<const std::uint8_t*>(f32.data()), f32.size() * 4});
  std::vector<std::uint16_t> f16(16);
  for (std::size_t i = 0; i < f16.size(); ++i) f16[i] = fp32_to_fp16(static_cast<float>(i) - 8.0f);
  w.add_tensor("f16.weight", TensorType::kF16, {8, 2},
               {reinterpret_cast<const std::uint8_t*>(f16.data()), f16.size() * 2});
  std::vector<std::uint16_t> bf16(4, 0x3f80);  // 1.0
  w.add_tensor("bf16.weight", TensorType::kBF16, {4},
               {reinterpret_cast<const std::uint8_t*>(bf16.data()), bf16.size() * 2});
  std::vector<std::uint8_t> q8(2 * 2 * 34);  // 64 x 2 elements = 4 blocks of 32
  for (std::size_t b = 0; b < 4; ++b) {
    const std::uint16_t d = fp32_to_fp16(0.5f);
    std::memcpy(q8.data() + b * 34, &d, 2);
    for (std::size_t i = 0; i < 32; ++i) q8[b * 34 + 2 + i] = static_cast<std::uint8_t>(i * 7);
  }
  w.add_tensor("q8.weight", TensorType::kQ8_0, {64, 2}, q8);

  for (const auto& [name, type, rows, cols] :
       std::vector<std::tuple<std::string, TensorType, int, int>>{
           {model::tensors::block(0, model::tensors::kFfnUp), TensorType::kTQ2_0, 3, 512},
           {model::tensors::block(0, model::tensors::kAttnQ), TensorType::kTQ1_0, 2, 256}}) {
    std::vector<std::int8_t> t(static_cast<std::size_t>(rows * cols));
    for (auto& v : t) v = static_cast<std::int8_t>(trit(rng));
    std::vector<float> scales(static_cast<std::size_t>(rows * cols / 256));
    for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = 0.125f * static_cast<float>(i + 1);
    const bool tq2 = type == TensorType::kTQ2_0;
    std::vector<std::uint8_t> bytes(tq2 ? ternary::tq2_0_bytes(rows * cols)
                                        : ternary::tq1_0_bytes(rows * cols));
    if (tq2) {
      ternary::encode_tq2_0(t, scales, bytes);
    } else {
      ternary::encode_tq1_0(t, scales, bytes);
    }
    w.add_tensor(name, type, {static_cast<std::uint64_t>(cols), static_cast<std::uint64_t>(rows)},
                 bytes);
    expected[name] = {{"trits", t}, {"scales", scales}};
  }
  w.write(argv[1]);
  write_file_atomic(argv[2], expected.dump());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gguf_sample: %s\n", e.what());
  return 1;
}
