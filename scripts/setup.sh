#!/usr/bin/env bash
# Install everything the project, its demo and its tests need, on a fresh machine or a prepared one.
# Idempotent: what is already installed is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# 1. torch: keep an existing build (CUDA, MPS or CPU). Where none is installed, take the CPU build pinned here:
#    a bare `torch` requirement would pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi

# 2. ffmpeg libraries: datasets 5.x decodes audio files through torchcodec, which loads them.
if ! command -v ffmpeg >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "ffmpeg not found: install it with your package manager (brew install ffmpeg, ...)" >&2
    fi
fi

# 3. The package with its test/demo extras. torchcodec must match torch (0.13 pairs with torch 2.13).
"$PY" -m pip install --quiet -e ".[dev]"
TORCH_MINOR=$("$PY" -c "import torch; print('.'.join(torch.__version__.split('+')[0].split('.')[:2]))")
if [ "$TORCH_MINOR" = "2.13" ]; then
    "$PY" -m pip install --quiet "torchcodec==0.13.0"
else
    "$PY" -m pip install --quiet "torchcodec"
fi
