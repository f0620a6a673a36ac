#!/usr/bin/env bash
# Refresh the pins on purpose: `make pins`.
# Installs the newest release of every dependency that pyproject.toml allows into a throwaway venv, runs the whole
# suite there, and only when it passes writes those exact versions to constraints-cpu.txt (then commit the file).
# torch stays at the CPU build the Makefile installs; its local label (+cpu) is dropped so that a CUDA build of the
# same version satisfies the pin on GPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${PINS_VENV:-.venv-pins}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip setuptools wheel
"$VENV/bin/pip" install --quiet $TORCH_SPEC  # unquoted: the spec may carry --index-url URL
"$VENV/bin/pip" install --quiet --upgrade -e ".[dev]"
PYTHON="$VENV/bin/python" bash scripts/get_llama_cpp.sh "$VENV/llama.cpp"  # the GGUF tests' llama.cpp (pinned there)
echo "newest releases installed; running the suite against them"
LLAMA_CPP_DIR="$VENV/llama.cpp" "$VENV/bin/python" -m pytest -q -p no:cacheprovider 2>&1 | tee "$VENV/pytest.log"
result=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$VENV/pytest.log" | tail -1 | tr -d '=' | xargs)

{
  echo "# Pinned versions the whole suite passed with (pip constraints; the Makefile and .ci/run install through it)."
  echo "# Refreshed $(date -u +%Y-%m-%d) by \`make pins\` on Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'), $(uname -m): $result."
  echo "# Do not edit by hand: \`make pins\` upgrades everything, runs the suite and rewrites this file."
  # a package installed from a local file freezes as `name @ file:///...name-VERSION.tar.gz`: pin it as name==VERSION
  "$VENV/bin/pip" freeze --all --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
    | sed -E 's#^([A-Za-z0-9_.-]+) @ file://.*/[A-Za-z0-9_.]+-([0-9][A-Za-z0-9_.]*)\.(tar\.gz|zip|whl)(\#.*)?$#\1==\2#'
} > constraints-cpu.txt.new
mv constraints-cpu.txt.new constraints-cpu.txt
echo "constraints-cpu.txt: $(grep -c '==' constraints-cpu.txt) pins ($result)"
