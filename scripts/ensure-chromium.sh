#!/usr/bin/env bash
# Make sure /usr/bin/chromium exists for the dashboard's browser tests
# (tests/integration/dashboard/test_browser.py, marker `browser`): Debian's `chromium`
# package, installed with apt-get when missing (needs root). Playwright's Python package
# (in the dev extra) drives it; `playwright install` is never needed.
set -euo pipefail

CHROMIUM=${RABBITFLOW_CHROMIUM:-/usr/bin/chromium}
say() { echo "ensure-chromium: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
say "$CHROMIUM is missing: installing Debian's chromium with apt-get"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { say "chromium installed but $CHROMIUM is not there"; exit 1; }
say "$("$CHROMIUM" --version 2>/dev/null || echo chromium) ready"
