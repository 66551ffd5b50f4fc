#!/usr/bin/env bash
# Installs what nanochat needs to build and test, from Debian 12 packages only.
# Idempotent: prints nothing and returns quickly when everything is already there.
#   tools/setup.sh          build + test dependencies
#   tools/setup.sh --fuzz   also clang's sanitizer/libFuzzer runtime, for the `fuzz` preset
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3 clang clang-format
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev libnuma-dev
)
for arg in "$@"; do
  case "$arg" in
    --fuzz) packages+=(libclang-rt-14-dev) ;;
    *) echo "setup: unknown option '$arg'; the only option is --fuzz" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
