#!/usr/bin/env bash
# Install the named Debian packages that are not installed yet; nothing else.
#
#   bash scripts/apt_missing.sh [--why TEXT] PACKAGE...
#
# One quiet `apt-get update` and one `apt-get install --no-install-recommends`, only when something
# is missing; sudo when not root. Without apt-get (not Debian/Ubuntu) it does nothing: the caller
# says what the package was for. Shared by install_system.sh, install_device.sh, install_peer.sh.
set -euo pipefail
why=""
if [ "${1:-}" = "--why" ]; then
    why=" ($2)"
    shift 2
fi
command -v apt-get > /dev/null || exit 0
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2> /dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ "${#missing[@]}" -gt 0 ] || exit 0
SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)
echo "apt_missing: installing ${missing[*]}$why"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
