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

# 2. System packages, installed together where apt-get exists (one `apt-get update`, only when one is missing):
#    - ffmpeg: datasets 5.x decodes audio files through torchcodec, which loads its libraries; it also decodes the
#      real-voice set's G.722 recordings;
#    - the real-voice test set's recordings and transcripts (data/real_voices.py; CC-BY-SA-3.0 and BSD-2/PD);
#    - Flite and Festival with three English voices, training voices built from real speakers (synthetic/voices.py);
#    - real speakers outside the test set, for the adapter's distillation: the Asterisk prompts in French, Italian and
#      Russian (data/other_speakers.py; CC-BY-SA-3.0 / CC-BY-3.0).
APT_PACKAGES=(ffmpeg asterisk-core-sounds-en-g722 asterisk-core-sounds-en pocketsphinx-testdata
              flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
              asterisk-core-sounds-fr-g722 asterisk-core-sounds-fr asterisk-core-sounds-it-g722
              asterisk-core-sounds-it asterisk-core-sounds-ru-g722 asterisk-core-sounds-ru)
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    MISSING=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$pkg")
    done
    if [ "${#MISSING[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    fi
elif ! command -v ffmpeg >/dev/null 2>&1; then
    echo "ffmpeg not found: install it with your package manager (brew install ffmpeg, ...)" >&2
else
    echo "no apt-get: the real-voice set and the Flite/Festival voices need Debian's ${APT_PACKAGES[*]:1};" \
         "their tests are skipped without them" >&2
fi

# 3. The package with its test/demo extras. torchcodec must match torch (0.13 pairs with torch 2.13).
"$PY" -m pip install --quiet -e ".[dev]"
TORCH_MINOR=$("$PY" -c "import torch; print('.'.join(torch.__version__.split('+')[0].split('.')[:2]))")
if [ "$TORCH_MINOR" = "2.13" ]; then
    "$PY" -m pip install --quiet "torchcodec==0.13.0"
else
    "$PY" -m pip install --quiet "torchcodec"
fi
