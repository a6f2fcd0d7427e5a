#!/usr/bin/env bash
# Headless Chromium for hpcseg's report test (tests/test_report.py renders the HTML report in a real browser).
#
#   scripts/browser.sh up      install Debian's `chromium` if it is missing (apt-get, root); idempotent, instant
#                              when already there. Prints the browser's path on success.
#   scripts/browser.sh path    print the browser's path, or exit 1
#
# scripts/run-tests.sh calls `up`: on success it exports HPCSEG_CHROMIUM=<path>; on failure the browser test
# fails loudly under CI=true and is skipped with the reason elsewhere (tests/test_report.py).
set -uo pipefail

find_browser() {
    local b
    for b in "${HPCSEG_CHROMIUM:-}" chromium chromium-browser google-chrome; do
        [ -n "$b" ] && command -v "$b" >/dev/null 2>&1 && { command -v "$b"; return 0; }
    done
    return 1
}

case "${1:-up}" in
    path) find_browser ;;
    up)
        if find_browser; then exit 0; fi
        if [ "$(id -u)" != 0 ]; then
            echo "browser: FAILED: chromium is not installed and installing it needs root (apt-get install chromium)" >&2
            exit 1
        fi
        echo "browser: installing Debian's chromium (apt-get install -y chromium) ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q --no-install-recommends chromium >/tmp/hpcseg-browser-apt.log 2>&1; then
            apt-get update -q >>/tmp/hpcseg-browser-apt.log 2>&1
            apt-get install -y -q --no-install-recommends chromium >>/tmp/hpcseg-browser-apt.log 2>&1 || {
                echo "browser: FAILED: apt-get install chromium (see /tmp/hpcseg-browser-apt.log)" >&2
                tail -n 5 /tmp/hpcseg-browser-apt.log >&2
                exit 1
            }
        fi
        find_browser || { echo "browser: FAILED: chromium installed but not on PATH" >&2; exit 1; }
        ;;
    *) echo "usage: scripts/browser.sh up|path" >&2; exit 2 ;;
esac
