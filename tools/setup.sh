#!/usr/bin/env bash
# Installs what nanochat needs to build and test, from Debian 12 packages only.
# Idempotent: prints nothing and returns quickly when everything is already there.
#   tools/setup.sh          build + test dependencies
#   tools/setup.sh --fuzz   also clang's sanitizer/libFuzzer runtime, for the `fuzz` preset
#   tools/setup.sh --torch  also PyTorch (python3-torch), for bench/train_reference.py
#   tools/setup.sh --corpus also the Rust crates of the default model's corpus (librust-*-dev,
#                           listed in tools/corpus/) and Debian's rustc for `nanochat eval code`,
#                           then builds the corpus in .cache/rust-corpus/ (tools/make_corpus.py)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus=0

packages=(
  build-essential cmake ninja-build pkg-config git python3 clang clang-format
  clang-tidy  # tools/lint.sh
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev libnuma-dev libpcre2-dev libedit-dev liblzma-dev
  rustc xz-utils util-linux  # nanochat eval code compiles with Debian's rustc; xz and unshare in tests
  qemu-user  # the slow tests run the kernels on emulated CPUs without AVX-512 / AVX2
  libdnnl-dev ocl-icd-opencl-dev  # oneDNN's CMake package asks for OpenCL; Debian only recommends it
  libcpp-httplib-dev  # nanochat serve
  libcurl4-openssl-dev libssl-dev  # nanochat download: HTTP(S) transfers and SHA-256
  python3-prometheus-client  # the serve tests parse /metrics with Prometheus's own parser
  pybind11-dev python3-dev python3-numpy python3-pytest  # the Python module and its tests
)
for arg in "$@"; do
  case "$arg" in
    --fuzz) packages+=(libclang-rt-14-dev) ;;
    --torch) packages+=(python3-torch python3-numpy libopenblas0-pthread) ;;
    --corpus)
      corpus=1
      for list in "$root/tools/corpus/crates.txt" "$root/tools/corpus/heldout.txt"; do
        while read -r crate; do packages+=("librust-$crate-dev"); done < <(grep -v '^#' "$list")
      done ;;
    *) echo "setup: unknown option '$arg'; use --fuzz, --torch or --corpus" >&2; exit 2 ;;
  esac
done

# Node.js runs the independent GGUF reader the tests compare against; any installed node and
# npm will do (Debian's otherwise).
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq -o=Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >&2
fi

# npm packages the tests drive nanochat with, pinned, each into the repository's .cache/
# (git-ignored): @huggingface/gguf, the independent GGUF reader (tests/tools/gguf-dump.mjs), and
# openai, OpenAI's official client, which the serve tests talk to the server with.
npm_package() {  # DIR PACKAGE VERSION
  local dir="$root/.cache/$1"
  [[ -f "$dir/node_modules/$2/package.json" ]] && return
  echo "setup: installing $2@$3 into $dir" >&2
  mkdir -p "$dir"
  (cd "$dir" && { [[ -f package.json ]] || echo "{\"name\":\"$1\",\"private\":true}" >package.json; } &&
    npm install --silent --no-audit --no-fund "$2@$3" >&2)
}
npm_package gguf-js @huggingface/gguf 0.4.6
npm_package openai-js openai 4.104.0

# The default model's corpus: rebuilt when the crate lists or the script changed (the script's
# output depends only on them and the installed packages).
if [[ $corpus -eq 1 ]]; then
  stamp="$root/.cache/rust-corpus/.inputs"
  want=$(cat "$root/tools/make_corpus.py" "$root/tools/corpus/"*.txt | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    /usr/bin/python3 "$root/tools/make_corpus.py" -o "$root/.cache/rust-corpus"
    echo "$want" >"$stamp"
  fi
fi
