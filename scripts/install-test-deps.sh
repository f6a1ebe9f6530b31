#!/usr/bin/env bash
# install-test-deps.sh -- install what kmd's end-to-end tests need from Debian
# that Go cannot fetch: chromium, for the web page's headless-browser test
# (e2e/ui_test.go). Idempotent: does nothing when /usr/bin/chromium is there.
# Needs root to install (apt-get); retries, as concurrent apt-get runs can
# break downloads. Prints the browser's path on stdout.
set -euo pipefail
BROWSER=/usr/bin/chromium
log() { echo "install-test-deps: $*" >&2; }; die() { log "ERROR: $*"; exit 1; }

if [ ! -x "$BROWSER" ]; then
  [ "$(id -u)" = 0 ] || die "$BROWSER is missing and installing it needs root: run as root, or apt-get install chromium"
  command -v apt-get >/dev/null || die "$BROWSER is missing and there is no apt-get: install Chromium so that $BROWSER runs it"
  log "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive; o="-o DPkg::Lock::Timeout=300"
  for t in 1 2 3; do
    apt-get $o update -qq >&2 &&
      apt-get $o install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 && break
    [ $t = 3 ] && die "apt-get install chromium failed 3 times"; sleep 5
  done
  [ -x "$BROWSER" ] || die "apt-get installed chromium but $BROWSER is not there"
fi
echo "$BROWSER"
