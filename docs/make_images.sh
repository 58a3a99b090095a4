#!/bin/sh
# Regenerate the README's screenshot of the graph page and the report plots (docs/images/).
# Needs Debian's chromium package and matplotlib (pip install -e '.[report]').
set -eu
cd "$(dirname "$0")/.."
exec python docs/make_images.py "$@"
