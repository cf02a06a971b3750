#!/usr/bin/env bash
# Install the Debian packages apr builds with, when they are missing.
# Usage: scripts/deps.sh [--python]   (--python also installs the peer-test
# packages from PyPI: gguf, numpy, safetensors, llama-cpp-python)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libssl-dev libzstd-dev libjansson-dev zlib1g-dev
      libyaml-dev libcmocka-dev libisal-dev clang)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--python" ]; then
  py=$(command -v python3 || true)
  if [ -n "$py" ]; then
    "$py" -m pip install -q gguf numpy safetensors sentencepiece ||
        echo "deps: pip install of gguf/numpy/safetensors/sentencepiece failed; peer tests will skip"
    # llama-cpp-python builds llama.cpp from source (about 5 minutes on 2 cores).
    "$py" -c "import llama_cpp" 2>/dev/null || "$py" -m pip install -q llama-cpp-python ||
      echo "deps: llama-cpp-python could not be installed; llama.cpp peer tests will skip"
  fi
fi
