#!/usr/bin/env bash
# Installs what nanochat needs to build and test, from Debian 12 packages only.
# Idempotent: prints nothing and returns quickly when everything is already there.
#   tools/setup.sh          build + test dependencies
#   tools/setup.sh --fuzz   also clang's sanitizer/libFuzzer runtime, for the `fuzz` preset
#   tools/setup.sh --torch  also PyTorch (python3-torch), for bench/train_reference.py
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3 clang clang-format
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev libnuma-dev libpcre2-dev libedit-dev
  libdnnl-dev ocl-icd-opencl-dev  # oneDNN's CMake package asks for OpenCL; Debian only recommends it
)
for arg in "$@"; do
  case "$arg" in
    --fuzz) packages+=(libclang-rt-14-dev) ;;
    --torch) packages+=(python3-torch python3-numpy libopenblas0-pthread) ;;
    *) echo "setup: unknown option '$arg'; use --fuzz or --torch" >&2; exit 2 ;;
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

# @huggingface/gguf (npm), the independent GGUF reader used by ../shared/tools/gguf-dump.mjs,
# pinned, into the repository's .cache/ (git-ignored).
gguf_js="$(cd "$(dirname "$0")/.." && pwd)/.cache/gguf-js"
if [[ ! -f "$gguf_js/node_modules/@huggingface/gguf/package.json" ]]; then
  echo "setup: installing @huggingface/gguf@0.4.6 into $gguf_js" >&2
  mkdir -p "$gguf_js"
  (cd "$gguf_js" && { [[ -f package.json ]] || echo '{"name":"gguf-js","private":true}' >package.json; } &&
    npm install --silent --no-audit --no-fund @huggingface/gguf@0.4.6 >&2)
fi
