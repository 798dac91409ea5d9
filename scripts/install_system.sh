#!/usr/bin/env bash
# System packages the project needs beyond Python: PortAudio for the microphone
# (sounddevice) and the offline TTS engines for synthetic speech and the demo.
set -euo pipefail
# libportaudio2: the microphone; qemu-user-static: `make pi-check` runs the runtime on emulated Pi CPUs.
bash "$(dirname "$0")/apt_missing.sh" libportaudio2 qemu-user-static
bash "$(dirname "$0")/install_tts.sh"
