#!/usr/bin/env bash
# Build llama.cpp with CUDA (shared libraries + llama-bench) from the llama-cpp-python sdist, then run
# gpu_verify.py against it. Nothing is built into the repository: everything goes to $WORK.
#   usage: tests/benchmarks/gpu_verify.sh SDIST.tar.gz [WHEEL_DIR] [-- gpu_verify.py arguments]
#   env:   WORK (default /tmp/hearth-gpu), CUDA_ARCH (default 90 = H100/H200), SKIP_BUILD=1 to reuse a build
set -euo pipefail
sdist=${1:?"the llama-cpp-python sdist (.tar.gz)"}
wheels=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
work=${WORK:-/tmp/hearth-gpu}
mkdir -p "$work"
if [ -z "${SKIP_BUILD:-}" ]; then
    tar xzf "$sdist" -C "$work"
fi
src=$(ls -d "$work"/llama_cpp_python-*/ | head -n 1)
if [ -z "${SKIP_BUILD:-}" ]; then
    cmake -S "$src/vendor/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DGGML_CUDA_NCCL=OFF -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_TOOLS=ON > "$work/cmake.log"
    time ninja -C "$work/build" -j "$(nproc)" llama-bench > "$work/ninja.log"
fi
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl
fi
export PYTHONPATH="$work/site:$src:$(pwd)" LLAMA_CPP_LIB_PATH="$work/build/bin" HEARTH_BENCH_CACHE="$work/models"
PYTHONUNBUFFERED=1 python3 tests/benchmarks/gpu_verify.py --llama-bench "$work/build/bin/llama-bench" "$@"
