#!/usr/bin/env bash
# Usage errors: exit 2 and one line naming the command, flag or variable.
# Usage: test_usage.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

m="$work/model.gguf"
expect_usage "unknown command" "unknown command 'frob'; commands are .*generate" "$bin" frob
expect_usage "no command" "no command given; commands are" "$bin"
expect_fail "no subcommand" "no command given" "$bin"
expect_usage "unknown flag" "not expected: --frob; see 'nanochat generate --help'" "$bin" generate --frob
expect_fail "unknown flag (benchmark kernels)" "--frobnicate" "$bin" benchmark kernels --frobnicate
expect_usage "bad number" "n-predict = abc" "$bin" generate -m "$m" -n abc -p x
expect_usage "env var named" "^nanochat: NANOCHAT_ARG_CTX_SIZE=abc: not a valid value for --ctx-size" env NANOCHAT_ARG_CTX_SIZE=abc "$bin" generate -m "$m" -p x
expect_usage "generate -n -2" "^nanochat: -n -2: use -1" "$bin" generate -m "$m" -n -2 -p x
expect_usage "chat -n -2" "^nanochat: -n -2: use -1" sh -c "echo hi | '$bin' chat -m '$m' -n -2"
expect_usage "chat -c -3" "^nanochat: -c -3: must be 0" sh -c "echo hi | '$bin' chat -m '$m' -c -3"
expect_usage "negative temp" "^nanochat: --temp -1: must be 0 \\(greedy\\) or a positive number" "$bin" generate -m "$m" --temp -1 -p x
expect_usage "-t list" "^nanochat: -t 1,2: this command takes one thread count" "$bin" generate -m "$m" -t 1,2 -p x
expect_usage "huge -c" "^nanochat: -c 72057594037927936: its KV cache would need .* GiB, more than this machine's" "$bin" generate -m "$m" -c 72057594037927936 -p x --autotune off

finish
