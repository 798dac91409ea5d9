#!/usr/bin/env bash
# System packages the project needs beyond Python: PortAudio for the microphone
# (sounddevice) and the offline TTS engines for synthetic speech and the demo.
set -euo pipefail
SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)
if ! dpkg-query -W -f='${Status}' libportaudio2 2>/dev/null | grep -q "install ok installed"; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libportaudio2
fi
bash "$(dirname "$0")/install_tts.sh"
