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
# Thousands of threads on a few CPUs took seconds a token: more than 8 per CPU (at least 16) is
# refused, in every command and in NANOCHAT_ARG_THREADS.
expect_usage "-t 4096" "^nanochat: --threads: -t 4096: at most [0-9]+ threads on this machine \\([0-9]+ CPUs to run on" "$bin" generate -m "$m" -t 4096 -p x
expect_usage "benchmark -t list" "^nanochat: --threads: -t 1,4096: at most [0-9]+ threads" "$bin" benchmark kernels -t 1,4096 --shape 64x256
expect_usage "NANOCHAT_ARG_THREADS=4096" "NANOCHAT_ARG_THREADS" env NANOCHAT_ARG_THREADS=4096 "$bin" generate -m "$m" -p x
"$bin" generate -m "$m" -t 16 -p x -n 1 --autotune off >/dev/null 2>&1 && ok || bad "-t 16 refused"
# A seed past int64 was clamped to its largest value, and any negative one taken as -1.
expect_usage "-s past int64" "^nanochat: --seed: -s 18446744073709551616: a seed is -1 \\(from the clock\\) or a whole number from 0 to 9223372036854775807" "$bin" generate -m "$m" -s 18446744073709551616 -p x
expect_usage "-s -5" "^nanochat: --seed: -s -5: a seed is -1" "$bin" generate -m "$m" -s -5 -p x
# An empty -m (an unset variable in -m "$MODEL") is an error, not the default model.
expect_usage "-m ''" "^nanochat: -m '': the model path is empty; leave -m out to use the default model$" "$bin" generate -m "" -p x
expect_usage "--model=" "^nanochat: -m '': the model path is empty" "$bin" generate --model= -p x
expect_usage "-t list" "^nanochat: -t 1,2: this command takes one thread count" "$bin" generate -m "$m" -t 1,2 -p x
expect_usage "huge -c" "^nanochat: -c 72057594037927936: more than the 16777216 tokens nanochat supports \\(its KV cache would need 128.0 EiB\\)" "$bin" generate -m "$m" -c 72057594037927936 -p x --autotune off
expect_usage "chat -c 2^63-1" "^nanochat: -c 9223372036854775807: more than the 16777216 tokens" sh -c "echo hi | '$bin' chat -m '$m' -c 9223372036854775807 --autotune off"
# Within the bound but not within memory: 64 layers of 128 keys and values take 64 KiB a token.
"$bin" model random --vocab 300 --layers 64 --ffn 256 -o "$work/deep.gguf" 2>/dev/null || bad "model random --layers 64"
expect_usage "KV cache beyond memory" "^nanochat: -c 16777216: its KV cache would need 1.0 TiB, more than this machine's .* of memory" "$bin" generate -m "$work/deep.gguf" -c 16777216 -p x --autotune off
expect_usage "serve --port" "^nanochat: --port 70000: must be from 0 \\(any free port\\) to 65535" "$bin" serve -m "$m" --port 70000
expect_usage "serve -np 0" "^nanochat: -np 0: must be from 1 to 256" "$bin" serve -m "$m" -np 0
# Checked before the port is taken and announced (one line, no "listening on").
expect_usage "serve --prefill-chunk" "^nanochat: --prefill-chunk 0: must be at least 1 token" "$bin" serve -m "$m" --prefill-chunk 0 --port 0
expect_usage "serve --chat-template" "^nanochat: chat template 'nope' is unknown" "$bin" serve -m "$m" --chat-template nope --port 0
expect_usage "serve --read-timeout" "^nanochat: --read-timeout 0: must be at least 1 second" "$bin" serve -m "$m" --read-timeout 0
expect_fail "serve: missing model" "^nanochat: /nonexistent.gguf: cannot open: no such file \\(-m\\)" "$bin" serve -m /nonexistent.gguf --port 0
expect_fail "serve: bad host" "^nanochat: cannot listen on 999.1.1.1 \\(any port\\): not an address of this machine \\(--host\\)" "$bin" serve -m "$m" --host 999.1.1.1 --port 0
# A port another process listens on: exit 1 and one line naming the address.
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)' >"$work/port" &
holder=$!
for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
port=$(cat "$work/port")
expect_fail "serve on a busy port" "^nanochat: cannot listen on 127.0.0.1:$port: .*is another server using the port" "$bin" serve -m "$m" --port "$port"
kill "$holder" 2>/dev/null

finish
