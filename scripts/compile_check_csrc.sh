#!/usr/bin/env bash
# Compile-check the random-LTD CUDA sources with nvcc, to object files only (no link, no GPU needed).
#
# CI machines have nvcc but only the CPU torch wheel: csrc/stub/ supplies the one generated c10/cuda header that
# wheel lacks (see csrc/stub/c10/cuda/impl/cuda_cmake_macros.h). Exits 0 with a message when nvcc is absent.
# The kernels (.cu, no torch headers) and the binding (.cpp, torch/extension.h) compile in parallel.
# Usage: scripts/compile_check_csrc.sh [output_dir]   (default: a temporary directory, removed afterwards)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src_dir="$root/csrc/random_ltd"
if ! command -v nvcc >/dev/null 2>&1; then
    echo "compile_check_csrc: nvcc not found on PATH; skipping the compile check of csrc/random_ltd"
    exit 0
fi
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

if [ $# -ge 1 ]; then
    out="$1"; mkdir -p "$out"
else
    out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
fi

read -r torch_inc abi py_inc < <("$python" - <<'PY'
import sysconfig
import torch
import torch.utils.cpp_extension as ext
print(ext.include_paths()[0], int(torch._C._GLIBCXX_USE_CXX11_ABI), sysconfig.get_paths()["include"])
PY
)
arch="${NVCC_ARCH:-sm_90}"
common=(-c -std=c++17 -O2 -arch="$arch" -Xcompiler -fPIC -I"$src_dir")
torch_flags=(-I"$root/csrc/stub" -I"$torch_inc" -I"$torch_inc/torch/csrc/api/include" -I"$py_inc"
             -DTORCH_EXTENSION_NAME=random_ltd_compile_check -DTORCH_API_INCLUDE_EXTENSION_H
             -D_GLIBCXX_USE_CXX11_ABI="$abi" --expt-relaxed-constexpr)

echo "compile_check_csrc: $(nvcc --version | tail -n 1), arch $arch, torch headers $torch_inc"
pids=()
names=()
shopt -s nullglob
for f in "$src_dir"/*.cu "$src_dir"/*.cpp; do
    name="$(basename "$f")"
    flags=("${common[@]}")
    # The kernels need no torch headers; only the binding pays for torch/extension.h.
    case "$f" in *.cpp) flags+=("${torch_flags[@]}") ;; esac
    ( start=$SECONDS
      nvcc "${flags[@]}" "$f" -o "$out/$name.o" > "$out/$name.log" 2>&1 && status=0 || status=$?
      echo "compile_check_csrc: $name -> rc $status in $((SECONDS - start)) s"
      [ "$status" -eq 0 ] || cat "$out/$name.log"
      exit "$status" ) &
    pids+=($!)
    names+=("$name")
done
failed=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; echo "compile_check_csrc: FAILED ${names[$i]}"; }
done
[ "$failed" -eq 0 ] && echo "compile_check_csrc: all ${#names[@]} translation units compiled"
exit "$failed"
