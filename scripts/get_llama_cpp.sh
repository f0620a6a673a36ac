#!/usr/bin/env bash
# llama.cpp for `medgspo export --gguf`: its Python bindings (llama-cpp-python compiles llama.cpp on install: 4 min 6 s
# on two cores, measured 2026-12-07; a second install reuses pip's wheel cache) and the converter of the same
# llama.cpp commit, unpacked from the bindings' sdist (vendor/llama.cpp: convert_hf_to_gguf.py, conversion/, gguf-py/)
# into DIR. Then: export LLAMA_CPP_DIR=DIR. `make test` runs it (the GGUF tests need both).
#   bash scripts/get_llama_cpp.sh [DIR]            # DIR defaults to .cache/llama.cpp; PYTHON defaults to .venv/bin/python
set -euo pipefail
VERSION=0.3.36   # 2026-12-07: its llama.cpp knows qwen35 (Qwen3_5ForCausalLM / Qwen3_5ForConditionalGeneration)
DIR=${1:-.cache/llama.cpp}
PY=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip install --quiet "llama-cpp-python==$VERSION"   # by name, so `pip freeze` pins it like any other
"$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp"
sdist="$tmp/llama_cpp_python-$VERSION.tar.gz"
src="llama_cpp_python-$VERSION/vendor/llama.cpp"
tar -xzf "$sdist" -C "$tmp" "$src/convert_hf_to_gguf.py" "$src/conversion" "$src/gguf-py"
rm -rf "$DIR" && mkdir -p "$DIR"
cp -r "$tmp/$src/convert_hf_to_gguf.py" "$tmp/$src/conversion" "$tmp/$src/gguf-py" "$DIR/"
echo "llama.cpp converter in $DIR (export LLAMA_CPP_DIR=$DIR)"
