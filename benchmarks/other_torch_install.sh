#!/usr/bin/env bash
# Does esper-ab install into an environment that already has another torch, and keep it?
#
#   benchmarks/other_torch_install.sh [TORCH_SPEC] [VENV_DIR]
#
# TORCH_SPEC defaults to torch==2.14.1: on this project's machines it lies on disk as a CUDA
# build (about 5.5 GB in the venv; pip takes it from disk, nothing is downloaded). On another
# machine pass what you have, e.g. 'torch==2.9.1'. VENV_DIR defaults to a new temporary folder
# (removed at the end unless KEEP=1).
#
# Steps: a fresh venv with TORCH_SPEC; `pip install --dry-run --report` of esper-ab must plan
# no torch; then the real `pip install -e '.[dev]'`; torch's version must be unchanged; then
# the gate, gradient and plug-in tests run on that torch. Not part of CI (the torch install
# alone is GBs); run it by hand after changing the torch range in pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SPEC="${1:-torch==2.14.1}"
TMP="$(mktemp -d)"
VENV="${2:-$TMP/venv}"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$TMP"; }
trap cleanup EXIT
t0=$(date +%s)

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "== installing $SPEC into $VENV"
"$VENV/bin/python" -m pip install -q "$SPEC"
before=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
echo "torch before: $before   ($(( $(date +%s) - t0 )) s)"

echo "== pip's plan for esper-ab (dry run)"
"$VENV/bin/python" -m pip install -q --dry-run --report "$TMP/plan.json" -e "$ROOT[dev]"
"$VENV/bin/python" - "$TMP/plan.json" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))["install"]
names = sorted(p["metadata"]["name"].lower() for p in plan)
torchy = [n for n in names if n == "torch" or n.startswith("nvidia-")]
print(f"pip would install {len(names)} distribution(s); torch or CUDA among them: {torchy or 'none'}")
sys.exit(1 if torchy else 0)
EOF

echo "== installing esper-ab"
"$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
after=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
echo "torch after:  $after   ($(( $(date +%s) - t0 )) s)"
if [ "$before" != "$after" ]; then
    echo "FAIL: installing esper-ab replaced torch $before with $after" >&2
    exit 1
fi

echo "== esper-ab's torch-facing tests on torch $after"
cd "$ROOT"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_gradients.py tests/gate \
    tests/integrations/test_esper_lite_plugin.py tests/integrations/test_esper_lite_presets.py
echo "OK: esper-ab installed beside torch $after and kept it ($(( $(date +%s) - t0 )) s in all)"
