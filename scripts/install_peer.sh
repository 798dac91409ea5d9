#!/usr/bin/env bash
# `make install-peer`: EfficientWord-Net, the published few-shot hotword engine we compare against,
# in its own virtual environment so its dependencies never mix with ours.
#
#   bash scripts/install_peer.sh [--venv DIR] [--python PY] [--no-apt]
#
# 1. PortAudio headers (Debian portaudio19-dev) via apt when missing (sudo if not root): its
#    dependency pyaudio has no manylinux wheel and compiles against them;
# 2. a virtual environment (default .eval_venvs/efficientword, git-ignored) with
#    efficientword-net==1.0.5 (Apache-2.0; the wheel ships its ONNX and TFLite models, so it runs
#    offline afterwards) and the two dependencies that decide its numbers pinned to the versions
#    the figures were measured with (onnxruntime, numpy; PEER_PINS='' to leave them free). Its
#    declared dependencies (numpy, onnxruntime, pyaudio, requests, soundfile>=0.13.1, twine>=6.2.0,
#    typer>=0.21.0) are unpinned or lower-bounded and all install on Python 3.11, so no --no-deps
#    workaround is needed; twine (a publishing tool) is a needless runtime dependency but harmless;
# 3. a check that the package imports and its ResNet-50 ArcFace model loads.
# Idempotent: a venv that already passes step 3 is left as it is.
#
# kws-eval finds the venv at .eval_venvs/efficientword (or $KWS_PEER_VENV) and adds the peer as
# `--baselines peer` and to `kws-eval all`.

set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${KWS_PEER_VENV:-$REPO/.eval_venvs/efficientword}"
PYTHON="${PYTHON:-python3}"
APT=1
PEER_VERSION=1.0.5
PEER_PINS="${PEER_PINS-onnxruntime==1.32.0 numpy==2.4.6}"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --no-apt) APT=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install_peer: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
say() { echo "install_peer: $*"; }
PY="$VENV/bin/python"

check() {
    [ -x "$PY" ] || return 1
    (cd / && "$PY" -I - "$PEER_VERSION" 2> /dev/null) << 'EOF'
import sys
from importlib.metadata import version

import numpy as np
from eff_word_net.audio_processing import Resnet50_Arc_loss

assert version("efficientword-net") == sys.argv[1], version("efficientword-net")
model = Resnet50_Arc_loss()
vector = model.audioToVector(np.zeros(model.window_frames, np.float32))
assert vector.shape == (1, 2048), vector.shape
EOF
}

if check; then
    say "$VENV already has efficientword-net $PEER_VERSION (model loads); nothing to do"
    exit 0
fi

# -- 1. PortAudio headers, for building pyaudio --------------------------------------------------------
if [ "$APT" = 1 ]; then
    bash "$REPO/scripts/apt_missing.sh" --why "PortAudio headers; pyaudio compiles against them" portaudio19-dev
fi

# -- 2. the venv -----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
say "installing efficientword-net==$PEER_VERSION into $VENV ($("$PY" --version))"
"$PY" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # PEER_PINS is a list of requirement words
"$PY" -m pip install --quiet "efficientword-net==$PEER_VERSION" $PEER_PINS

# -- 3. check ---------------------------------------------------------------------------------------------
if ! check; then
    say "efficientword-net installed but its model does not load; see: $PY -c 'import eff_word_net.engine'" >&2
    exit 1
fi
say "ok: $("$PY" -m pip list --format=freeze 2> /dev/null | grep -iE '^(efficientword-net|onnxruntime|numpy|pyaudio)=' | tr '\n' ' ')"
