#!/usr/bin/env bash
# Screenshots DIR/report.html (written by `archlab compare` or `archlab report DIR`) with a
# headless Chromium into DIR/report.png, then checks that the picture is not blank: a page
# whose inline SVG or CSS broke renders as a nearly empty PNG of a few kilobytes.
#
# Usage: tools/screenshot_report.sh DIR [WIDTHxHEIGHT]     (default window 1200x3000)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 DIR [WIDTHxHEIGHT]" >&2
  exit 2
fi
dir=$1
size=${2:-1200x3000}
html="$dir/report.html"
png="$dir/report.png"
min_bytes=10240

if [[ ! -f "$html" ]]; then
  echo "error: $html not found (write it with: archlab report $dir)" >&2
  exit 1
fi

browser=""
for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$candidate" >/dev/null 2>&1; then
    browser=$candidate
    break
  fi
done
if [[ -z "$browser" ]]; then
  echo "error: no headless browser found (tried chromium, chromium-browser, google-chrome," \
    "google-chrome-stable); on Debian/Ubuntu: sudo apt-get install chromium" >&2
  exit 1
fi

# file:// needs an absolute path.
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
rm -f "$png"
# --no-sandbox: Chromium refuses to run as root (containers, CI) with its sandbox on.
"$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars \
  --window-size="${size/x/,}" --screenshot="$png" "$url" >/dev/null 2>&1 || true

if [[ ! -f "$png" ]]; then
  echo "error: $browser wrote no screenshot of $url" >&2
  exit 1
fi
bytes=$(wc -c <"$png")
if ((bytes <= min_bytes)); then
  echo "error: $png is only $bytes bytes: the page probably rendered blank" >&2
  exit 1
fi
echo "wrote $png ($bytes bytes, $browser, window $size)"
