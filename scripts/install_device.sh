#!/usr/bin/env bash
# `make install-device`: the device runtime alone, as on a Raspberry Pi -- no TensorFlow, ever.
#
#   bash scripts/install_device.sh [--venv DIR] [--python PY] [--no-apt] [--no-systemd]
#
# 1. PortAudio (libportaudio2) for the microphone, via apt when it is missing (sudo if not root);
# 2. a virtual environment (default: .venv in the repo) with `pip install -e '.[device]'`:
#    numpy + ai-edge-litert + sounddevice + the rest of pyproject.toml's device extra;
# 3. checks which TFLite interpreter imports with the installed numpy: ai-edge-litert (numpy 2,
#    64-bit ARM/x86), else tflite-runtime (needs numpy<2 and Python <= 3.11), and that TensorFlow
#    is absent;
# 4. installs the systemd user units deploy/kws-listen.service (the daemon) and
#    deploy/kws-serve.service (the Wyoming server for Home Assistant) into ~/.config/systemd/user/,
#    both pointing at this venv, and says how to start the one you want.

set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${KWS_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
APT=1
SYSTEMD=1

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --no-apt) APT=0; shift ;;
        --no-systemd) SYSTEMD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install_device: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
VENV="$(mkdir -p "$(dirname "$VENV")" && cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
say() { echo "install_device: $*"; }

# -- 1. PortAudio ---------------------------------------------------------------------------------------
if [ "$APT" = 1 ]; then
    bash "$REPO/scripts/apt_missing.sh" --why "PortAudio, for the microphone" libportaudio2
fi

# -- 2. the venv ----------------------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is None)'; then
    say "$VENV already has TensorFlow (a trainer venv); choose another one with --venv DIR" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
say "installing the device extra into $VENV ($("$PY" --version), $(uname -m))"
"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -m pip install --quiet -e "${REPO}[device]"; then
    # 32-bit userland (armv7l, also under a 64-bit kernel): ai-edge-litert has no wheel; step 3 adds tflite-runtime.
    say "the device extra did not install as a whole (no ai-edge-litert wheel here?); installing it without LiteRT"
    "$PY" -m pip install --quiet -e "$REPO" 'sounddevice>=0.4.6' 'soundfile>=0.12' 'soxr>=0.5' 'platformdirs>=3'
fi

# -- 3. the TFLite interpreter, and no TensorFlow --------------------------------------------------------
runtime() { (cd / && "$PY" -c 'from device.interpreter import interpreter_class; print(interpreter_class()[1])') 2> /dev/null; }
RUNTIME="$(runtime || true)"
if [ -z "$RUNTIME" ]; then
    # No ai-edge-litert wheel here (32-bit ARM, or it failed to import): the classic runtime needs numpy<2.
    if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] > (3, 11))'; then
        say "ai-edge-litert is not usable here; trying tflite-runtime with numpy<2"
        "$PY" -m pip install --quiet 'numpy<2' tflite-runtime || true
        RUNTIME="$(runtime || true)"
    fi
fi
if [ -z "$RUNTIME" ]; then
    say "no TFLite interpreter imports in $VENV: ai-edge-litert needs 64-bit Linux (aarch64/x86_64);" >&2
    say "tflite-runtime needs Python <= 3.11 and numpy<2. See docs/raspberry-pi.md." >&2
    exit 1
fi
if "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is None)'; then
    say "TensorFlow is installed in $VENV: a device install must not have it" >&2
    exit 1
fi
say "TFLite interpreter: $RUNTIME (numpy $("$PY" -c 'import numpy; print(numpy.__version__)')); TensorFlow: absent"
(cd / && "$PY" -m device.cli list > /dev/null) || { say "\`kws list\` failed in the new venv" >&2; exit 1; }

# -- 4. the systemd user unit ---------------------------------------------------------------------------
if [ "$SYSTEMD" = 0 ]; then
    say "done (systemd unit not installed: --no-systemd). Try: $VENV/bin/kws --help"
    exit 0
fi
UNITS="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
mkdir -p "$UNITS"
for unit in kws-listen kws-serve; do
    sed "s|^ExecStart=%h/kws/.venv/bin/kws |ExecStart=$VENV/bin/kws |" "$REPO/deploy/$unit.service" > "$UNITS/$unit.service.tmp"
    grep -q "^ExecStart=$VENV/bin/kws " "$UNITS/$unit.service.tmp" || { say "deploy/$unit.service: no ExecStart to point at $VENV" >&2; exit 1; }
    mv "$UNITS/$unit.service.tmp" "$UNITS/$unit.service"
    say "installed $UNITS/$unit.service ($(grep '^ExecStart=' "$UNITS/$unit.service"))"
done
if systemctl --user daemon-reload 2> /dev/null; then
    say "systemd --user reloaded"
fi
cat << EOF

Next steps:
  $VENV/bin/kws enroll "hey toaster"                 # 5 takes from the microphone (or give wav files)
  systemctl --user enable --now kws-listen            # start now and at every login
  sudo loginctl enable-linger "\$USER"                 # ...and at boot, without a login
  journalctl --user -u kws-listen -f                  # the events, one JSON line each
For Home Assistant, the Wyoming server instead (the audio comes from Home Assistant, not this microphone):
  systemctl --user enable --now kws-serve             # port 10400; then add the Wyoming integration
EOF
