// The registry's parsing and checks, hf:// addresses, spec classification, SHA-256 and the
// shipped registry's entry for the default model. (Transfers are tested against a real server
// in tests/zoo/.)
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "nanochat/model/config.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/sha256.hpp"
#include "nanochat/zoo/download.hpp"
#include "nanochat/zoo/registry.hpp"
#include "nanochat/zoo/store.hpp"

namespace nanochat::zoo {
namespace {
namespace fs = std::filesystem;

fs::path write_temp(const std::string& name, const std::string& text) {
  const fs::path dir = fs::temp_directory_path() / "nanochat-test-zoo";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p) << text;
  return p;
}

TEST(Sha256, MatchesKnownDigests) {
  Sha256 empty;
  EXPECT_EQ(empty.finish(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 abc;
  abc.update(std::string_view("a"));
  abc.update(std::string_view("bc"));  // fed in pieces
  EXPECT_EQ(abc.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(is_sha256_hex("BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  EXPECT_FALSE(is_sha256_hex("ba7816bf"));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'g')));
}

TEST(Registry, ParsesEntriesAndLetsLaterFilesOverride) {
  const auto shipped = write_temp("a.toml", R"([[model]]
name = "m1"
url = ["https://example.org/m1.gguf", "hf://o/r/m1.gguf"]
sha256 = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
size = 123
pull = true

[[model]]
name = "m2"
file = "m2.gguf"
)");
  const auto user = write_temp("b.toml", R"([[model]]
name = "m2"
url = "http://127.0.0.1/m2.gguf"
description = "mine"
)");
  const Registry r = Registry::from_files({shipped, user});
  ASSERT_EQ(r.entries().size(), 2U);
  const RegistryEntry* m1 = r.find("m1");
  ASSERT_NE(m1, nullptr);
  EXPECT_EQ(m1->urls.size(), 2U);
  EXPECT_EQ(m1->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(m1->size, 123U);
  EXPECT_TRUE(m1->pull);
  const RegistryEntry* m2 = r.find("m2");
  ASSERT_NE(m2, nullptr);
  EXPECT_EQ(m2->description, "mine");
  EXPECT_TRUE(m2->file.empty());
  EXPECT_EQ(m2->origin, user);
  EXPECT_EQ(r.find("m3"), nullptr);
}

void expect_rejected(const std::string& text, const std::string& needle) {
  const auto p = write_temp("bad.toml", text);
  try {
    (void)Registry::from_files({p});
    ADD_FAILURE() << "accepted: " << text;
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
  }
}

TEST(Registry, RejectsBadEntriesNamingFileAndField) {
  expect_rejected("[[model]]\nurl = \"https://x/y\"\n", "'name' is missing");
  expect_rejected("[[model]]\nname = \"Bad Name\"\nurl = \"https://x/y\"\n", "name 'Bad Name'");
  expect_rejected("[[model]]\nname = \"x\"\n", "give 'url'");
  expect_rejected("[[model]]\nname = \"x\"\nurl = \"ftp://x/y\"\n", "ftp://x/y");
  expect_rejected("[[model]]\nname = \"x\"\nurl = \"https://x/y\"\nsha256 = \"00\"\n",
                  "sha256 '00'");
  expect_rejected("[[model]]\nname = \"x\"\nurl = \"https://x/y\"\nsize = -1\n", "'size'");
  expect_rejected("[[model]]\nname = \"x\"\nurl = \"https://x/y\"\nsizes = 1\n",
                  "unknown field 'sizes'");
  expect_rejected("[[model]]\nname = \"x\"\nurl = 3\n", "'url'");
  expect_rejected(
      "[[model]]\nname = \"x\"\nurl = \"https://x/y\"\n[[model]]\nname = \"x\"\nurl = "
      "\"https://x/z\"\n",
      "listed twice");
  expect_rejected("models = 1\n", "unknown top-level key 'models'");
  expect_rejected("[[model]\n", "bad.toml:1");
}

TEST(Registry, ShippedFileNamesTheDefaultModelWithItsDigest) {
  const fs::path source = fs::path(NANOCHAT_SOURCE_DIR);
  const Registry r = Registry::from_files({source / "models" / "registry.toml"});
  const RegistryEntry* e = r.find("nanochat-rust");
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(fs::is_regular_file(e->file)) << e->file;
  EXPECT_EQ(e->size, fs::file_size(e->file));
  EXPECT_EQ(e->sha256, sha256_file(e->file)) << "update models/registry.toml with the new model";
  for (const auto& entry : r.entries()) {
    for (const auto& url : entry.urls) {
      if (url.starts_with("hf://")) {
        EXPECT_NO_THROW((void)resolve_hf_url(url, "main")) << url;
      }
    }
  }
}

// `nanochat models` shows each entry's architecture and note: a shipped entry names an
// architecture nanochat runs, and no note says it does not (bitnet-b1.58-2b-4t's did long after
// bitnet-25 ran).
TEST(Registry, ShippedEntriesNameArchitecturesNanochatRuns) {
  const Registry r =
      Registry::from_files({fs::path(NANOCHAT_SOURCE_DIR) / "models" / "registry.toml"});
  for (const auto& entry : r.entries()) {
    EXPECT_TRUE(model::is_supported_architecture(entry.architecture))
        << entry.name << ": " << entry.architecture;
    EXPECT_EQ(entry.note.find("does not run"), std::string::npos)
        << entry.name << ": " << entry.note;
  }
}

TEST(HfAddress, FollowsTheResolveScheme) {
  ::unsetenv("NANOCHAT_HF_ENDPOINT");
  EXPECT_EQ(resolve_hf_url("hf://owner/repo/file.gguf", "main"),
            "https://huggingface.co/owner/repo/resolve/main/file.gguf");
  EXPECT_EQ(resolve_hf_url("hf://owner/repo/sub/dir/file.gguf", "v1.0"),
            "https://huggingface.co/owner/repo/resolve/v1.0/sub/dir/file.gguf");
  ::setenv("NANOCHAT_HF_ENDPOINT", "http://127.0.0.1:8080/mirror/", 1);
  EXPECT_EQ(resolve_hf_url("hf://o/r/f.gguf", "main"),
            "http://127.0.0.1:8080/mirror/o/r/resolve/main/f.gguf");
  ::unsetenv("NANOCHAT_HF_ENDPOINT");
  for (const char* bad : {"hf://owner", "hf://owner/repo", "hf://owner/repo/", "hf:///repo/f",
                          "hf://o//f", "hf://o/r/../x", "hf://o/r/a b", "hf://o/r/f?x=1"}) {
    EXPECT_THROW((void)resolve_hf_url(bad, "main"), UsageError) << bad;
  }
  EXPECT_THROW((void)resolve_hf_url("hf://o/r/f", "a/b"), UsageError);
  EXPECT_THROW((void)resolve_hf_url("hf://o/r/f", ""), UsageError);
}

TEST(Spec, ClassifiesPathsNamesAndAddresses) {
  EXPECT_EQ(classify_spec("hf://o/r/f.gguf"), SpecKind::kHf);
  EXPECT_EQ(classify_spec("https://example.org/x.gguf"), SpecKind::kUrl);
  EXPECT_EQ(classify_spec("http://example.org/x.gguf"), SpecKind::kUrl);
  EXPECT_EQ(classify_spec("nanochat-rust"), SpecKind::kName);
  EXPECT_EQ(classify_spec("missing.gguf"), SpecKind::kPath);
  EXPECT_EQ(classify_spec("dir/missing"), SpecKind::kPath);
  const auto existing = write_temp("somename", "x");
  EXPECT_EQ(classify_spec(existing.string()), SpecKind::kPath);
  EXPECT_EQ(cache_name("hf://o/r/f.gguf", "main"), "hf://o/r/f.gguf");
  EXPECT_EQ(cache_name("hf://o/r/f.gguf", "v2"), "hf://o/r/f.gguf@v2");
  EXPECT_EQ(cache_name("tiny", "v2"), "tiny");
}

TEST(ModelCache, AddFindAndRemoveShareBlobs) {
  const fs::path root = fs::temp_directory_path() / "nanochat-test-zoo-cache";
  fs::remove_all(root);
  ModelCache cache(root);
  EXPECT_FALSE(cache.find("a"));
  const auto f1 = write_temp("blob1", "hello");
  const std::string sha = sha256_file(f1);
  const CachedModel a = cache.add("a", "http://x/a", sha, 5, f1);
  EXPECT_EQ(a.path, cache.blob_path(sha));
  EXPECT_FALSE(fs::exists(f1));  // moved in
  const auto f2 = write_temp("blob2", "hello");
  (void)cache.add("b", "http://x/b", sha, 5, f2);
  EXPECT_FALSE(fs::exists(f2));  // the same bytes: dropped
  EXPECT_EQ(cache.list().size(), 2U);
  EXPECT_EQ(cache.remove("a").bytes_freed, 0U);  // b still uses the blob
  EXPECT_TRUE(fs::exists(cache.blob_path(sha)));
  EXPECT_EQ(cache.remove("b").bytes_freed, 5U);
  EXPECT_FALSE(fs::exists(cache.blob_path(sha)));
  EXPECT_FALSE(cache.remove("b").found);
  // A damaged index names itself.
  std::ofstream(root / "index.json") << "{not json";
  try {
    (void)cache.list();
    ADD_FAILURE() << "a damaged index was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("index.json"), std::string::npos) << e.what();
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace nanochat::zoo
