#!/usr/bin/env bash
# Unpack the released original, deepobs==1.1.2 (TF1 code), into DIR (default: .original/ in the repository),
# for the tests and audits that run the original's own data pipelines and analyzer. Never imported as `deepobs`:
# parity/original.py and tests/original_analyzer.py load it by path or in a subprocess.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-$root/.original}"
if [ -f "$target/deepobs/tensorflow/datasets/dataset.py" ]; then exit 0; fi
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check "deepobs==1.1.2" -d "$download"
mkdir -p "$target"
python3 -m zipfile -e "$download"/deepobs-1.1.2-py3-none-any.whl "$target"
echo "the original deepobs 1.1.2 is in $target"
