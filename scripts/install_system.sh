#!/usr/bin/env bash
# System packages the project needs beyond Python: PortAudio for the microphone
# (sounddevice) and the offline TTS engines for synthetic speech and the demo.
set -euo pipefail
SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)
# libportaudio2: the microphone; qemu-user-static: `make pi-check` runs the runtime on emulated Pi CPUs.
missing=()
for package in libportaudio2 qemu-user-static; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash "$(dirname "$0")/install_tts.sh"
