#!/usr/bin/env bash
# Compile-check the CUDA build without a GPU: every avatar3d/_kernels/**/*.cu with `nvcc -c`, and the CUDA
# build's C++ bindings with `g++ -fsyntax-only`, against the installed torch's headers.
# Exits 0 with a skip line when nvcc is absent; non-zero when any file fails to compile.
#
#   avatar3d/_kernels/check_nvcc.sh   # PYTHON (default python3) must import torch
#   CUDA_ARCHS="75 90" avatar3d/_kernels/check_nvcc.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v nvcc >/dev/null 2>&1; then
    echo "check_nvcc: SKIP (nvcc not found on PATH)"
    exit 0
fi
py="${PYTHON:-python3}"
get_incs='from torch.utils.cpp_extension import include_paths; print(" ".join(include_paths()))'
if ! incs="$("$py" -c "$get_incs")"; then
    echo "check_nvcc: FAIL ($py cannot import torch)" >&2
    exit 1
fi
pyinc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
inc_flags=()
for d in $incs; do inc_flags+=("-I$d"); done
arch_flags=()
for a in ${CUDA_ARCHS:-75 90}; do arch_flags+=("-gencode=arch=compute_${a},code=sm_${a}"); done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
while IFS= read -r -d '' cu; do
    # same flags as torch.utils.cpp_extension's CUDA build (+ ours from avatar3d/render/_cuda_ext.py)
    if nvcc -c -std=c++20 -O3 --fmad=false --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__ \
        -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
        "${arch_flags[@]}" "${inc_flags[@]}" -I"$here/include" \
        -DTORCH_EXTENSION_NAME=check -o "$out/$(basename "$cu").o" "$cu"; then
        echo "check_nvcc: ok   ${cu#"$here"/}"
    else
        echo "check_nvcc: FAIL ${cu#"$here"/}" >&2
        status=1
    fi
done < <(find "$here" -name '*.cu' -print0 | sort -z)

cxx="${CXX:-g++}"
for cpp in "$here"/cuda/*.cpp; do
    [ -e "$cpp" ] || continue
    if "$cxx" -fsyntax-only -std=c++20 "${inc_flags[@]}" -I"$pyinc" -I"$here/include" \
        -DTORCH_EXTENSION_NAME=check "$cpp"; then
        echo "check_nvcc: ok   ${cpp#"$here"/} (g++ syntax)"
    else
        echo "check_nvcc: FAIL ${cpp#"$here"/} (g++ syntax)" >&2
        status=1
    fi
done
exit $status
