// GGUF reader and writer: round trips of every value type, determinism, atomic writes, the
// committed malformed files (each a clear FormatError), and the shared vocabulary files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::gguf {
namespace {

namespace fs = std::filesystem;

GgufWriter sample_writer() {
  GgufWriter w;
  w.set("general.architecture", Value("llama"));
  w.set("u8", Value(std::uint8_t{1}));
  w.set("i8", Value(std::int8_t{-2}));
  w.set("u16", Value(std::uint16_t{3}));
  w.set("i16", Value(std::int16_t{-4}));
  w.set("u32", Value(std::uint32_t{5}));
  w.set("i32", Value(std::int32_t{-6}));
  w.set("f32", Value(7.5f));
  w.set("bool", Value(false));
  w.set("str", Value("h\xc3\xa9llo"));
  w.set("u64", Value(std::uint64_t{1} << 63));
  w.set("i64", Value(std::int64_t{-9}));
  w.set("f64", Value(0.1));
  w.set("strs", string_array({"x", "", "yz"}));
  w.set("floats", numeric_array<float>(ValueType::kFloat32, {1.0f, -2.0f}));
  Array nested;
  nested.type = ValueType::kArray;
  nested.arrays.push_back(numeric_array<std::int32_t>(ValueType::kInt32, {1, 2}));
  nested.arrays.push_back(numeric_array<std::int32_t>(ValueType::kInt32, {}));
  w.set("nested", Value(std::move(nested)));
  std::vector<std::int8_t> trits(512);
  for (std::size_t i = 0; i < trits.size(); ++i) trits[i] = static_cast<std::int8_t>(i % 3) - 1;
  std::vector<std::uint8_t> tq2(ternary::tq2_0_bytes(512));
  const std::vector<float> scales = {0.5f, 0.25f};
  ternary::encode_tq2_0(trits, scales, tq2);
  w.add_tensor("blk.0.w", TensorType::kTQ2_0, {256, 2}, tq2);
  std::vector<std::uint8_t> f32(3 * 4, 0x3f);
  w.add_tensor("norm", TensorType::kF32, {3}, f32);
  return w;
}

TEST(Gguf, RoundTripsEveryValueTypeAndTensors) {
  const GgufWriter w = sample_writer();
  const std::vector<std::uint8_t> bytes = w.bytes();
  const GgufFile f = GgufFile::parse(bytes, "sample");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.architecture(), "llama");
  EXPECT_EQ(f.metadata().size(), 16u);
  EXPECT_EQ(*f.find("i8"), Value(std::int8_t{-2}));
  EXPECT_EQ(*f.find("u64"), Value(std::uint64_t{1} << 63));
  EXPECT_EQ(*f.find("f64"), Value(0.1));
  EXPECT_EQ(f.get_string("str"), "h\xc3\xa9llo");
  EXPECT_EQ(f.get_bool("bool"), false);
  EXPECT_EQ(f.get_int("i16"), -4);
  EXPECT_EQ(f.get_float("f32"), 7.5);
  EXPECT_EQ(f.get_array("strs")->strings, (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f.get_array("floats")->to_vector<float>(), (std::vector<float>{1.0f, -2.0f}));
  const Array* nested = f.get_array("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(nested->arrays[0].as_array()->to_vector<int>(), (std::vector<int>{1, 2}));

  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo* t = f.find_tensor("blk.0.w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type.name, std::string("TQ2_0"));
  EXPECT_EQ(t->dims, (std::vector<std::uint64_t>{256, 2}));
  EXPECT_EQ(t->bytes, 132u);
  EXPECT_EQ(t->offset % 32, 0u);
  const auto data = f.tensor_data(*t);
  std::vector<std::int8_t> back(512);
  std::vector<float> back_scales(2);
  ternary::decode_tq2_0(data, back, back_scales);
  EXPECT_EQ(back_scales, (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(back[0], -1);
  EXPECT_EQ(back[511], static_cast<std::int8_t>(511 % 3) - 1);
  EXPECT_EQ(f.find_tensor("norm")->offset, 160u);  // 132 bytes padded to 160
}

TEST(Gguf, ArraysOfEveryElementTypeRoundTrip) {
  GgufWriter w;
  w.set("u8", numeric_array<std::uint8_t>(ValueType::kUint8, {0, 255}));
  w.set("i8", numeric_array<std::int8_t>(ValueType::kInt8, {-128, 127}));
  w.set("u16", numeric_array<std::uint16_t>(ValueType::kUint16, {0, 65535}));
  w.set("i16", numeric_array<std::int16_t>(ValueType::kInt16, {-32768, 32767}));
  w.set("u32", numeric_array<std::uint32_t>(ValueType::kUint32, {0, 4294967295u}));
  w.set("i32", numeric_array<std::int32_t>(ValueType::kInt32, {-5, 5}));
  w.set("f32", numeric_array<float>(ValueType::kFloat32, {-0.0f, 1e30f}));
  w.set("bool", numeric_array<std::uint8_t>(ValueType::kBool, {1, 0}));
  w.set("str", string_array({"", "x"}));
  w.set("u64", numeric_array<std::uint64_t>(ValueType::kUint64, {0, ~std::uint64_t{0}}));
  w.set("i64", numeric_array<std::int64_t>(ValueType::kInt64, {-1, 1}));
  w.set("f64", numeric_array<double>(ValueType::kFloat64, {1e-308, -2.5}));
  const auto bytes = w.bytes();
  const GgufFile f = GgufFile::parse(bytes, "arrays");
  const std::map<std::string, std::pair<ValueType, std::vector<double>>> expected = {
      {"u8", {ValueType::kUint8, {0, 255}}},
      {"i8", {ValueType::kInt8, {-128, 127}}},
      {"u16", {ValueType::kUint16, {0, 65535}}},
      {"i16", {ValueType::kInt16, {-32768, 32767}}},
      {"u32", {ValueType::kUint32, {0, 4294967295.0}}},
      {"i32", {ValueType::kInt32, {-5, 5}}},
      {"f32", {ValueType::kFloat32, {-0.0, 1e30f}}},
      {"bool", {ValueType::kBool, {1, 0}}},
      {"i64", {ValueType::kInt64, {-1, 1}}},
      {"f64", {ValueType::kFloat64, {1e-308, -2.5}}}};
  for (const auto& [key, want] : expected) {
    const Array* a = f.get_array(key);
    ASSERT_NE(a, nullptr) << key;
    EXPECT_EQ(a->type, want.first) << key;
    EXPECT_EQ(a->to_vector<double>(), want.second) << key;
  }
  EXPECT_EQ(f.get_array("str")->strings, (std::vector<std::string>{"", "x"}));
  EXPECT_EQ(f.get_array("u64")->get<std::uint64_t>(1), ~std::uint64_t{0});
  EXPECT_EQ(f.get_array("i8")->to_vector<int>(), (std::vector<int>{-128, 127}));
  EXPECT_EQ(f.get_array("bool")->at(0), Value(true));
}

TEST(Gguf, WriterIsDeterministicAndReplacesKeysInPlace) {
  EXPECT_EQ(sample_writer().bytes(), sample_writer().bytes());
  GgufWriter w;
  w.set("a", Value(std::uint32_t{1}));
  w.set("b", Value(std::uint32_t{2}));
  w.set("a", Value(std::uint32_t{3}));
  const auto bytes = w.bytes();
  const GgufFile f = GgufFile::parse(bytes, "x");
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].first, "a");
  EXPECT_EQ(f.get_int("a"), 3);
}

TEST(Gguf, WriterRejectsWrongSizesAndDuplicates) {
  GgufWriter w;
  std::vector<std::uint8_t> bytes(65);
  EXPECT_THROW(w.add_tensor("t", TensorType::kTQ2_0, {256}, bytes), Error);  // TQ2_0 needs 66
  EXPECT_THROW(w.add_tensor("t", TensorType::kTQ2_0, {100}, bytes), Error);  // partial block
  EXPECT_THROW(w.add_tensor("t", 99, {1}, bytes), Error);                    // unknown type
  std::vector<std::uint8_t> ok(4);
  w.add_tensor("t", TensorType::kF32, {1}, ok);
  EXPECT_THROW(w.add_tensor("t", TensorType::kF32, {1}, ok), Error);
  EXPECT_THROW(GgufWriter(24), Error);
}

TEST(Gguf, CustomAlignmentIsWrittenAndHonoured) {
  GgufWriter w(64);
  std::vector<std::uint8_t> a(4), b(8);
  w.add_tensor("a", TensorType::kF32, {1}, a);
  w.add_tensor("b", TensorType::kF32, {2}, b);
  const auto bytes = w.bytes();
  const GgufFile f = GgufFile::parse(bytes, "x");
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.find_tensor("b")->offset, 64u);
}

TEST(Gguf, WriteIsAtomicAndOpenMapsTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("nanochat-gguf-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path path = dir / "model.gguf";
  sample_writer().write(path);
  write_file_atomic(dir / "keep.txt", "x");
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.file_size(), fs::file_size(path));
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 2u);  // no temporary files left
  fs::remove_all(dir);
}

TEST(Gguf, TypedGettersNameTheKeyOnTypeMismatch) {
  const auto bytes = sample_writer().bytes();
  const GgufFile f = GgufFile::parse(bytes, "sample.gguf");
  try {
    (void)f.get_string("u32");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'u32' is a uint32, expected a string"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(f.get_int("missing").has_value());
}

TEST(Gguf, TypedArraysCheckTheElementTypeAndNameTheKey) {
  GgufWriter w = sample_writer();
  w.set("ints", numeric_array<std::int16_t>(ValueType::kInt16, {-1, 7}));
  w.set("huge", numeric_array<std::uint64_t>(ValueType::kUint64, {1, std::uint64_t{1} << 63}));
  w.set("bools", Value([] {
          Array a;
          a.type = ValueType::kBool;
          a.raw = {1, 0};
          return a;
        }()));
  const auto bytes = w.bytes();
  const GgufFile f = GgufFile::parse(bytes, "sample.gguf");
  EXPECT_EQ(*f.get_string_array("strs"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(*f.get_int_array("ints"), (std::vector<std::int64_t>{-1, 7}));
  EXPECT_EQ(*f.get_float_array("floats"), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(*f.get_float_array("ints"), (std::vector<float>{-1.0f, 7.0f}));
  EXPECT_EQ(f.get_string_array("missing"), nullptr);
  EXPECT_FALSE(f.get_int_array("missing").has_value());
  // The right count but another element type: an error naming the key and both types, never an
  // empty conversion a caller would index.
  const std::vector<std::pair<std::function<void()>, std::string>> wrong = {
      {[&] { (void)f.get_string_array("floats"); },
       "'floats' is an array of float32, expected an array of strings"},
      {[&] { (void)f.get_string_array("nested"); },
       "'nested' is an array of array, expected an array of strings"},
      {[&] { (void)f.get_int_array("strs"); },
       "'strs' is an array of string, expected an array of integers"},
      {[&] { (void)f.get_int_array("floats"); },
       "'floats' is an array of float32, expected an array of integers"},
      {[&] { (void)f.get_int_array("bools"); },
       "'bools' is an array of bool, expected an array of integers"},
      {[&] { (void)f.get_int_array("huge"); }, "'huge' element 1 does not fit"},
      {[&] { (void)f.get_float_array("strs"); },
       "'strs' is an array of string, expected an array of numbers"},
      {[&] { (void)f.get_float_array("nested"); },
       "'nested' is an array of array, expected an array of numbers"},
      {[&] { (void)f.get_float_array("u32"); }, "'u32' is a uint32, expected an array"},
      {[&] { (void)f.get_int("u64"); }, "'u64' is 9223372036854775808, beyond any size"},
  };
  for (const auto& [call, want] : wrong) {
    try {
      call();
      ADD_FAILURE() << "no error for: " << want;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("sample.gguf: metadata " + want), std::string::npos)
          << e.what();
    }
  }
}

TEST(Gguf, MalformedFilesGiveClearErrors) {
  const fs::path dir = fs::path(NANOCHAT_TEST_DATA) / "gguf";
  const auto manifest = nlohmann::json::parse(read_file(dir / "manifest.json"));
  ASSERT_GE(manifest.size(), 25u);
  for (const auto& [name, phrase] : manifest.items()) {
    const fs::path path = dir / "malformed" / name;
    try {
      (void)GgufFile::open(path);
      ADD_FAILURE() << name << ": opened without error";
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(phrase.get<std::string>()), std::string::npos) << name << ": " << msg;
      EXPECT_NE(msg.find(name), std::string::npos) << name << ": message does not name the file";
      EXPECT_EQ(msg.find('\n'), std::string::npos) << name << ": more than one line";
    }
  }
}

TEST(Gguf, UnsupportedTypesCanBeListed) {
  const fs::path path =
      fs::path(NANOCHAT_TEST_DATA) / "gguf" / "malformed" / "unsupported_tensor_type.gguf";
  ReadOptions o;
  o.allow_unsupported_types = true;
  const GgufFile f = GgufFile::open(path, o);
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_FALSE(f.tensors()[0].type.supported);
  EXPECT_EQ(std::string(f.tensors()[0].type.name), "Q2_K");
}

TEST(Gguf, I2sIsReadInBitnetFiles) {
  GgufWriter w;
  w.set("general.architecture", Value("bitnet"));
  std::vector<std::int8_t> trits(256, 1);
  std::vector<std::uint8_t> bytes(ternary::i2_s_bytes(256));
  ternary::encode_i2_s(trits, 0.75f, bytes);
  w.add_tensor("w", TensorType::kI2_S, {128, 2}, bytes);
  const auto file = w.bytes();
  const GgufFile f = GgufFile::parse(file, "bitnet.gguf");
  const TensorInfo* t = f.find_tensor("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::string(t->type.name), "I2_S");
  EXPECT_EQ(t->bytes, 64u + 32u);
  std::vector<std::int8_t> back(256);
  EXPECT_EQ(ternary::decode_i2_s(f.tensor_data(*t), back), 0.75f);
  EXPECT_EQ(back, trits);

  // Cut inside the 32 bytes after the weights: the scale is missing, and the message says so.
  for (const std::size_t cut : {1u, 28u, 32u}) {
    const std::vector<std::uint8_t> shorter(file.begin(), file.end() - static_cast<long>(cut));
    try {
      (void)GgufFile::parse(shorter, "cut.gguf");
      ADD_FAILURE() << "cut " << cut << " parsed";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("cut.gguf: I2_S tensor 'w' ends " + std::to_string(cut) +
                                           " bytes short: its scale"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Gguf, ReadsTheSharedVocabularyFiles) {
  const fs::path dir = fs::path(NANOCHAT_SHARED_DIR) / "testdata" / "tokenizers";
  ASSERT_TRUE(fs::exists(dir)) << dir << " is missing (tests/data/shared/ in the repository)";
  const std::map<std::string, std::pair<std::string, std::size_t>> expected = {
      {"ggml-vocab-gpt-2.gguf", {"gpt2", 50257}},
      {"ggml-vocab-starcoder.gguf", {"gpt2", 49152}},
      {"ggml-vocab-deepseek-coder.gguf", {"gpt2", 32256}},
      {"ggml-vocab-refact.gguf", {"gpt2", 49216}},
      {"ggml-vocab-llama-spm.gguf", {"llama", 32000}},
      {"ggml-vocab-phi-3.gguf", {"llama", 32064}}};
  for (const auto& [name, want] : expected) {
    const GgufFile f = GgufFile::open(dir / name);
    EXPECT_EQ(f.get_string("tokenizer.ggml.model"), want.first) << name;
    ASSERT_NE(f.get_array("tokenizer.ggml.tokens"), nullptr) << name;
    EXPECT_EQ(f.get_array("tokenizer.ggml.tokens")->size(), want.second) << name;
    EXPECT_TRUE(f.tensors().empty()) << name;
  }
}

}  // namespace
}  // namespace nanochat::gguf
