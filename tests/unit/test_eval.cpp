// nanochat eval's harnesses: the pass@k estimator, the rustc sandbox (passing, failing, broken,
// looping, allocating, flooding, file-writing and network-using programs), the shipped suites
// and xz -9e sizes against the xz command itself.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "nanochat/eval/bpb.hpp"
#include "nanochat/eval/code.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::eval {
namespace {

namespace fs = std::filesystem;

TEST(PassAtK, UnbiasedEstimator) {
  EXPECT_DOUBLE_EQ(pass_at_k(10, 0, 1), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 10, 10), 1.0);
  EXPECT_NEAR(pass_at_k(10, 1, 1), 0.1, 1e-12);
  EXPECT_NEAR(pass_at_k(5, 2, 2), 1.0 - 3.0 / 10.0, 1e-12);  // 1 - C(3,2)/C(5,2)
  EXPECT_NEAR(pass_at_k(20, 3, 10),
              1.0 - (17.0 * 16 * 15 * 14 * 13 * 12 * 11 * 10 * 9 * 8) /
                        (20.0 * 19 * 18 * 17 * 16 * 15 * 14 * 13 * 12 * 11),
              1e-12);
  EXPECT_DOUBLE_EQ(pass_at_k(3, 1, 3), 1.0);  // n - c < k: some draw of 3 always hits
  EXPECT_THROW(pass_at_k(3, 1, 4), UsageError);
}

class Sandbox : public ::testing::Test {
 protected:
  void SetUp() override {
    // Temporary folders go to a folder of this test's, so "nothing left behind" is checkable.
    tmp_ = fs::temp_directory_path() / fmt::format("nanochat-sandbox-{}", ::getpid());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
    old_tmpdir_ = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "";
    setenv("TMPDIR", tmp_.c_str(), 1);
    rustc_ = find_rustc("");
    limits_.cpu_seconds = 2;
    limits_.wall_seconds = 5;
    limits_.memory_bytes = 256LL << 20;
    limits_.output_bytes = 64 << 10;
  }
  void TearDown() override {
    if (old_tmpdir_.empty()) {
      unsetenv("TMPDIR");
    } else {
      setenv("TMPDIR", old_tmpdir_.c_str(), 1);
    }
    fs::remove_all(tmp_);
  }
  RunResult run(const std::string& program, bool test = false) {
    RunResult r = run_rust(program, test, rustc_, limits_);
    EXPECT_TRUE(fs::is_empty(tmp_)) << "left behind in " << tmp_;
    return r;
  }
  fs::path tmp_;
  std::string old_tmpdir_, rustc_;
  SandboxLimits limits_;
};

TEST_F(Sandbox, PassFailAndCompileErrors) {
  EXPECT_EQ(run("fn main() { assert_eq!(2 + 2, 4); }").status, RunStatus::kPass);
  const RunResult f = run("fn main() { assert_eq!(2 + 2, 5); }");
  EXPECT_EQ(f.status, RunStatus::kFail);
  EXPECT_EQ(f.exit_code, 101);
  const RunResult c = run("fn main() { let x: i32 = \"no\"; }");
  EXPECT_EQ(c.status, RunStatus::kCompileError);
  EXPECT_NE(c.message.find("error"), std::string::npos) << c.message;
  // The test harness (HumanEval-X's form).
  EXPECT_EQ(run("#[cfg(test)] mod t { #[test] fn ok() { assert!(true); } }", true).status,
            RunStatus::kPass);
  EXPECT_EQ(run("#[cfg(test)] mod t { #[test] fn no() { assert!(false); } }", true).status,
            RunStatus::kFail);
}

TEST_F(Sandbox, LimitsStopRunawayPrograms) {
  // A loop burns its CPU seconds (or the wall clock) and is killed.
  const RunResult loop =
      run("fn main() { let mut x: u64 = 1; loop { x = x.wrapping_mul(3); "
          "if x == 0 { println!(\"{}\", x); } } }");
  EXPECT_EQ(loop.status, RunStatus::kTimeout);
  EXPECT_LT(loop.seconds, 30);
  // A sleeping program uses no CPU: the wall clock stops it.
  const RunResult sleep =
      run("fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }");
  EXPECT_EQ(sleep.status, RunStatus::kTimeout);
  // Unbounded allocation fails inside the address-space limit.
  const RunResult mem =
      run("fn main() { let mut v: Vec<Vec<u8>> = Vec::new(); loop { "
          "v.push(vec![1u8; 64 << 20]); } }");
  EXPECT_NE(mem.status, RunStatus::kPass);
  EXPECT_NE(mem.status, RunStatus::kTimeout) << "allocation was not limited";
  // Megabytes of output are cut at the limit.
  const RunResult flood = run("fn main() { loop { println!(\"{}\", \"x\".repeat(1000)); } }");
  EXPECT_EQ(flood.status, RunStatus::kOutputLimit);
  // Files written land in the run's own folder, which is removed (checked by run()).
  EXPECT_EQ(run("fn main() { std::fs::write(\"out.txt\", \"data\").unwrap(); }").status,
            RunStatus::kPass);
}

TEST_F(Sandbox, ProgramsHaveNoNetwork) {
  // A server on loopback that the program tries to reach.
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(s, 4), 0);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  const std::string program = fmt::format(
      "fn main() {{ match std::net::TcpStream::connect(\"127.0.0.1:{}\") {{ Ok(_) => "
      "std::process::exit(3), Err(_) => std::process::exit(0) }} }}",
      port);
  const RunResult r = run(program);
  close(s);
  EXPECT_EQ(r.status, RunStatus::kPass)
      << "the program reached the loopback server (exit " << r.exit_code << ")";
}

TEST(Suites, ShippedSuitesLoadAndAssemble) {
  const CodeSuite he = load_suite("humaneval-rs");
  EXPECT_EQ(he.problems.size(), 156u);
  EXPECT_EQ(he.format, SuiteFormat::kMultiplE);
  const CodeProblem& p = he.problems.front();
  EXPECT_EQ(p.stop, std::vector<std::string>{"\n}"});
  EXPECT_EQ(assemble_program(p, "    n - 1").rfind(p.prompt + "    n - 1\n}\n", 0), 0u);

  const CodeSuite mbpp = load_suite("mbpp-rs");
  EXPECT_EQ(mbpp.problems.size(), 353u);  // mbpp_67_bell_number never compiles
  ASSERT_EQ(mbpp.skipped.size(), 1u);
  // mbpp tests start with the closing brace; the program has exactly one.
  const std::string prog = assemble_program(mbpp.problems.front(), "    todo!()");
  EXPECT_NE(prog.find("todo!()\n}\n\n\nfn main"), std::string::npos) << prog;
  EXPECT_EQ(prog.find("todo!()\n}\n}"), std::string::npos) << prog;

  const CodeSuite x = load_suite("humaneval-x");
  EXPECT_EQ(x.problems.size(), 164u);
  EXPECT_TRUE(x.problems.front().test_harness);
  EXPECT_FALSE(x.problems.front().reference.empty());
  EXPECT_EQ(x.problems.front().prompt.find("use rand::Rng;"), std::string::npos);

  EXPECT_THROW(load_suite("humaneval-py"), UsageError);
}

TEST(Suites, BadFilesNameTheLine) {
  const fs::path f = fs::temp_directory_path() / fmt::format("nanochat-suite-{}.jsonl", ::getpid());
  write_file_atomic(f,
                    "{\"name\": \"a\", \"prompt\": \"fn a() {\\n\", \"test\": \"\"}\nnot json\n");
  try {
    (void)load_suite(f.string());
    ADD_FAILURE() << "accepted a file with a bad line";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(f.string() + ":2:"), std::string::npos) << e.what();
  }
  fs::remove(f);
}

TEST(Xz, SizeEqualsTheXzCommand) {
  std::string text;
  for (int i = 0; i < 2000; ++i)
    text += fmt::format("fn f{}(x: u32) -> u32 {{ x * {} }}\n", i, i % 13);
  const fs::path f = fs::temp_directory_path() / fmt::format("nanochat-xz-{}.txt", ::getpid());
  write_file_atomic(f, text);
  std::FILE* p = popen(fmt::format("xz -9e -c '{}' | wc -c", f.string()).c_str(), "r");
  ASSERT_NE(p, nullptr);
  long long want = -1;
  ASSERT_EQ(std::fscanf(p, "%lld", &want), 1);
  pclose(p);
  fs::remove(f);
  EXPECT_EQ(xz_size(text), want);
}

}  // namespace
}  // namespace nanochat::eval
