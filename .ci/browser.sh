#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/bin/chromium for the playground's
# browser test (playground/browser_test.go, driven by chromedp). Idempotent:
# it installs nothing when Chromium is already there, and never prompts.
# Run as root (CI and the developers' machines are). Chromium itself is the
# only thing installed: chromedp talks to it over the DevTools protocol, so
# no chromedriver is needed.
set -euo pipefail

chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
	echo "installing chromium (Debian package)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
[ -x "$chromium" ] || { echo "browser.sh: $chromium is still missing after apt-get install chromium" >&2; exit 1; }
"$chromium" --headless --no-sandbox --version 2>/dev/null || "$chromium" --version
