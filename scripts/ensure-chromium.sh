#!/bin/sh
# Install Debian's chromium (used by tests/test_serve_page.py to check the web page headless) when missing.
# Needs root and network on first use; a no-op when /usr/bin/chromium is already there.
set -eu
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $CHROMIUM is missing; run as root (or: sudo apt-get install chromium)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available; install Chromium by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x "$CHROMIUM" || { echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2; exit 1; }
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
