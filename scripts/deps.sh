#!/usr/bin/env bash
# Install the Debian packages apr builds with, when they are missing.
# Usage: scripts/deps.sh [--python]   (--python also installs the peer-test
# packages from PyPI: gguf, numpy, safetensors, sentencepiece, tokenizers, jinja2,
# torch, transformers, llama-cpp-python and the llama.cpp source of its sdist)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libssl-dev libjansson-dev zlib1g-dev
      libyaml-dev libcmocka-dev libisal-dev clang jq)
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
  [ -n "$py" ] || { echo "deps: python3 not found; peer tests will skip"; exit 0; }
  "$py" -m pip install -q gguf numpy safetensors sentencepiece tokenizers jinja2 ||
      echo "deps: pip install of the peer packages failed; peer tests will skip"
  # transformers + torch: the definition of an HF checkpoint, for the family peer
  # tests. PyPI has no CPU-only torch build; its wheel runs on the CPU without the
  # 3 GB of nvidia-*/cuda-*/triton packages it lists, so most of them are left out
  # (checked: import, matmul and transformers' models work without them).
  if ! "$py" -c "import torch" 2>/dev/null; then
    "$py" -m pip install -q --no-deps torch &&
      "$py" -m pip install -q filelock fsspec networkx sympy typing-extensions setuptools ||
      echo "deps: torch could not be installed; family peer tests will skip"
  fi
  # Some torch wheels load libcufile and a few NCCL/NVSHMEM/cuSPARSELt symbols at
  # import even on a CPU-only machine: install just those pinned pieces (about
  # 300 MB, the versions torch's own metadata names) when the import fails.
  if ! "$py" -c "import torch" 2>/dev/null; then
    need=$("$py" - <<'PY' 2>/dev/null || true
import re
from importlib.metadata import requires
pins = [r.split(';')[0].replace(' ', '') for r in (requires('torch') or [])]
print(' '.join(p for p in pins if re.match(r'nvidia-(cusparselt|nccl|nvshmem|cufile)-cu\d+', p)))
PY
)
    echo "deps: import torch failed; installing its runtime pieces: ${need:-nvidia-cufile}"
    # shellcheck disable=SC2086
    "$py" -m pip install -q --no-deps $need nvidia-cufile ||
      echo "deps: torch's runtime pieces could not be installed"
    "$py" -c "import torch; torch.ones(2) @ torch.ones(2)" 2>/dev/null ||
      echo "deps: torch still does not import; family peer tests will skip (and fail in strict mode)"
  fi
  "$py" -c "import transformers" 2>/dev/null || "$py" -m pip install -q transformers ||
      echo "deps: transformers could not be installed; family peer tests will skip"
  # llama.cpp's own source (convert_hf_to_gguf.py, gguf-py, the ggml-vocab-*
  # tokenizer vectors, models/templates) from llama-cpp-python's sdist, the same
  # version as the installed wheel: unpacked once into the cache, and the wheel is
  # built from that very sdist (it ships only as source; about 5 minutes on 2 cores).
  cache=${APR_PEER_CACHE:-$HOME/.cache/apr-peer}
  mkdir -p "$cache"
  ver=$("$py" -c "import llama_cpp; print(llama_cpp.__version__)" 2>/dev/null || echo "${APR_LLAMA_CPP_PYTHON_VERSION:-0.3.36}")
  sdist="$cache/llama_cpp_python-$ver.tar.gz"
  [ -f "$sdist" ] || "$py" -m pip download -q --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$ver" -d "$cache" || echo "deps: llama-cpp-python $ver sdist could not be downloaded"
  if [ -f "$sdist" ]; then
    [ -f "$cache/llama_cpp_python-$ver/vendor/llama.cpp/convert_hf_to_gguf.py" ] ||
        tar -xzf "$sdist" -C "$cache"
    ln -sfn "llama_cpp_python-$ver/vendor/llama.cpp" "$cache/llama.cpp"
    "$py" -c "import llama_cpp" 2>/dev/null || "$py" -m pip install -q "$sdist" ||
      echo "deps: llama-cpp-python could not be installed; llama.cpp peer tests will skip"
  fi
fi
