#!/usr/bin/env bash
# Install Debian packages where apt can: as root or with password-less sudo.
#   bash scripts/apt_install.sh WHAT_FOR PACKAGE...
# Exit status: 0 installed, 1 the install failed, 2 not possible here (no apt-get, no rights).
set -uo pipefail
what_for=$1
shift
command -v apt-get >/dev/null 2>&1 || exit 2
if [ "$(id -u)" = 0 ]; then as_root=""; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else exit 2; fi
echo "installing $* for $what_for..."
{ $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq "$@"; } >/dev/null 2>&1 \
  || exit 1
