#!/usr/bin/env bash
# Install the offline text-to-speech engines, English voices and word list that
# `python -m trainer.synth` (make data) speaks with, from Debian/Ubuntu apt sources.
#
# Idempotent: only missing packages are installed, and `apt-get update` runs once,
# first, and only when something is missing. Rerunning on a ready machine changes nothing.
#
#   espeak-ng            many English accents + ~100 voice variants (and foreign voices for accents)
#   flite                voices kal16, awb, rms, slt
#   festival + festvox-* kal_diphone, ked_diphone, cmu_us_slt_arctic_hts
#   wamerican            /usr/share/dict/american-english, the vocabulary source
#   sox                  handy for listening to and inspecting clips
#   mbrola + voices      optional: only in Debian's non-free section; skipped when not available
set -euo pipefail

REQUIRED=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts wamerican sox)
MBROLA=(mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_tts.sh: apt-get not found; install espeak-ng, flite, festival (+ English festvox voices)" \
        "and an English word list (/usr/share/dict/american-english) with your package manager" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
available() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'; }

UPDATED=0
update_once() {
    if [ "$UPDATED" -eq 0 ]; then
        "${SUDO[@]}" apt-get update
        UPDATED=1
    fi
}

install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

missing=()
for package in "${REQUIRED[@]}"; do
    installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    update_once
    install "${missing[@]}"
else
    echo "install_tts.sh: espeak-ng, flite, festival voices, wamerican and sox already installed"
fi

# mbrola: espeak-ng drives its diphone voices (mb-us1, mb-en1, ...). Debian ships it in
# non-free, which many apt sources (and CI images) do not enable.
mbrola_missing=()
for package in "${MBROLA[@]}"; do
    installed "$package" || mbrola_missing+=("$package")
done
if [ "${#mbrola_missing[@]}" -eq 0 ]; then
    echo "install_tts.sh: mbrola voices already installed"
elif available mbrola; then
    update_once
    installable=()
    for package in "${mbrola_missing[@]}"; do
        available "$package" && installable+=("$package")
    done
    install "${installable[@]}"
else
    echo "install_tts.sh: mbrola is not available from the configured apt sources (Debian non-free); skipping mbrola voices"
fi

echo "install_tts.sh: done; list the voices trainer.synth will use with: python -m trainer.synth --list-voices"
