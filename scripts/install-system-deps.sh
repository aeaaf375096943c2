#!/usr/bin/env bash
# System packages the project needs (Debian/Ubuntu), installed only when missing:
#   xmlsec1   - pysaml2's stock crypto backend (the test IdP and the stock-vs-ours benchmark)
#   chromium  - browser tests (Playwright drives /usr/bin/chromium)
#   nginx     - forward-auth tests
#   wrk       - the HTTP load generator of bench/forward_auth.py
# Usage: scripts/install-system-deps.sh [xmlsec1] [chromium] [nginx]   (default: all)
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(xmlsec1 chromium nginx wrk)

declare -A binary=( [xmlsec1]=xmlsec1 [chromium]=/usr/bin/chromium [nginx]=/usr/sbin/nginx [wrk]=wrk )
declare -A packages=( [xmlsec1]="xmlsec1" [chromium]="chromium fonts-liberation" [nginx]="nginx-light" [wrk]="wrk" )

missing=()
for name in "${wanted[@]}"; do
  if ! command -v "${binary[$name]}" >/dev/null 2>&1; then
    missing+=(${packages[$name]})
  fi
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: please install: ${missing[*]}" >&2
  exit 3
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
