#!/usr/bin/env bash
# Everything the GPU machine needs for benchmarks/gpu_check.py, in one git-ignored
# folder (.gpu/), built here on the CPU machine; then the exact `run` call to paste.
#
#   bash benchmarks/gpu_prepare.sh               # build .gpu/ and print the call
#   bash benchmarks/gpu_prepare.sh --rehearse    # also install it the way the device does and run the check
#
# .gpu/whl/: Python 3.12 wheels of what the device image (torch 2.11, numpy,
#   pandas, scipy, scikit-learn, tensorboard, nvidia-ml-py, pytest ... are there)
#   lacks: recbole 1.2.1 (ml-100k ships inside it), colorlog, texttable, thop,
#   and the plugin itself.
# .gpu/datasets/yelp2018/: the benchmark split the check's parts (c) and (d) read
#   (parts (b) and (f) read the ml-100k inside recbole's wheel).
# Run it from the checkout the device tool sends (the session's own).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DATASETS="${DATASETS:-$REPO/../shared/datasets}"
PY="${PY:-python3}"
DIR=.gpu
LIMIT=$((64 * 1024 * 1024))
# Wheels for the device's Python (3.12, x86-64 manylinux); pure-Python ones match any platform.
PLATFORMS="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
MISSING="recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2 thop==0.1.1.post2209072238"

rm -rf "$DIR"
mkdir -p "$DIR/whl" "$DIR/datasets"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: $PLATFORMS -d "$DIR/whl" $MISSING
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR/whl" "$REPO" >/dev/null
rm -rf "$REPO/build"
cp -r "$DATASETS/yelp2018" "$DIR/datasets/"

tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
folder=$(du -sb "$DIR" | cut -f1)
total=$((tracked + ${untracked:-0} + folder))
echo "$DIR: $folder bytes ($((folder / 1024 / 1024)) MiB); with the working tree: $total bytes of $LIMIT"
ls -l "$DIR/whl" | tail -n +2
if [ "$total" -ge "$LIMIT" ]; then
  echo "too large: the device tool carries at most 64 MiB" >&2
  exit 1
fi

# The copy brings back gpu_check.md, costs.txt and every part's CSV (tests, parity, costs, yelp2018,
# energy, families) through /tmp/gc/*.csv; the log is tee'd to $OUT directly.
COMMAND='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi -L; set -o pipefail; PYTHONUNBUFFERED=1 timeout 540 python3 benchmarks/gpu_check.py --out /tmp/gc --device cuda --data_path .gpu/datasets --budget_s 480 2>&1 | tee $OUT/gpu_check.log; cp /tmp/gc/gpu_check.md /tmp/gc/*.csv /tmp/gc/costs.txt $OUT/'
if [ ${#COMMAND} -ge 2000 ]; then
  echo "the command is ${#COMMAND} characters: over the tool's 2,000" >&2
  exit 1
fi
cat <<EOF

Paste into the device tool (${#COMMAND} characters):
  run(command='$COMMAND',
      carry=[".gpu"], timeout_s=600)
EOF

if [ "${1:-}" != "--rehearse" ]; then
  exit 0
fi

# ---------------------------------------------------------------- rehearsal
# A Python 3.12 venv without system site packages, holding torch and only
# packages the device image lists (KINDS.md), then the carried wheels installed
# --no-deps --target as the device does; the plugin must import from there and
# the check's CPU rehearsal and the device tests must pass.
PY312="${PY312:-python3.12}"
VENV="${VENV:-/tmp/gpu-rehearsal-venv}"
SITE=/tmp/gpu-rehearsal-site
IMAGE="numpy pandas scipy scikit-learn pyyaml tqdm matplotlib filelock tensorboard nvidia-ml-py pytest colorama"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -m venv "$VENV"
fi
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $IMAGE torch
rm -rf "$SITE"
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "$DIR"/whl/*.whl
export PYTHONPATH="$SITE"
(cd /tmp && "$VENV/bin/python" -c "import sys, recbole, recbole_lth, torch; print('imports', recbole_lth.__file__,
  'recbole', recbole.__version__, 'torch', torch.__version__, 'python', sys.version.split()[0])")
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_device.py | tail -1
"$VENV/bin/python" benchmarks/gpu_check.py --out /tmp/gpu-rehearsal-out --device cpu --quick | tail -1
"$VENV/bin/python" benchmarks/gpu_check.py --out /tmp/gpu-rehearsal-cuda --device cuda --data_path "$DIR/datasets" \
  | tail -1
echo "rehearsal: ok (/tmp/gpu-rehearsal-out/gpu_check.md)"
