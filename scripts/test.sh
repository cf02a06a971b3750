#!/usr/bin/env bash
# Build apr and run every test: the normal build (CUDA compiled when the
# toolkit is present) under ctest, then the whole suite again under
# AddressSanitizer + UBSan, then each fuzz harness for a bounded time, then
# the threaded paths under ThreadSanitizer (tests/tsan.sh, about a minute).
# Usage: scripts/test.sh [--quick]   (--quick: normal build and the ctest
# label "unit" only: no peers, GPU or slow tests; see tests/CMakeLists.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

echo "== build (release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
if [ "${1:-}" = "--quick" ]; then
  echo "== tests (release, label unit)"
  (cd build && ctest --output-on-failure -j"$jobs" -L unit)
  exit 0
fi
echo "== tests (release)"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== build (AddressSanitizer + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAPR_SANITIZE=ON -DAPR_CUDA=OFF -DAPR_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
echo "== fuzz (libFuzzer, bounded)"
if command -v clang >/dev/null; then
  CC=clang cmake -S . -B build-fuzz -DAPR_FUZZ=ON -DAPR_CUDA=OFF -DAPR_TESTS=OFF -DAPR_BENCH=OFF >/dev/null
  cmake --build build-fuzz -j"$jobs"
  for f in build-fuzz/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    n=$(basename "$f")
    echo "-- $n (${APR_FUZZ_SECONDS:-20} s, seeds from fuzz/corpus/${n#fuzz_})"
    mkdir -p "build-fuzz/corpus/$n"
    # New inputs go to the first (scratch) folder; the checked-in seeds are read only.
    "$f" -max_total_time="${APR_FUZZ_SECONDS:-20}" -rss_limit_mb=2048 \
      "build-fuzz/corpus/$n" "fuzz/corpus/${n#fuzz_}" >"build-fuzz/$n.log" 2>&1 ||
      { tail -n 40 "build-fuzz/$n.log"; echo "fuzz: $n found a crash"; exit 1; }
    tail -n 1 "build-fuzz/$n.log"
  done
else
  echo "SKIP: clang not found, fuzz harnesses not run"
fi
echo "== ThreadSanitizer (threaded convert, quantize, imatrix, verify, run)"
# Only the apr CLI is built: tests/tsan.sh drives its threaded paths.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPR_SANITIZE_THREAD=ON \
  -DAPR_CUDA=OFF -DAPR_TESTS=OFF -DAPR_BENCH=OFF >/dev/null
cmake --build build-tsan -j"$jobs" --target apr
APR_BIN=build-tsan/apr tests/tsan.sh
echo "== tests (AddressSanitizer + UBSan)"
# Fault injection under ASan is bounded to one job per path (convert, quantize,
# verify with the forward pass, the provenance re-hash, the sharded-APR
# reader, threaded run: about 4 minutes on 2 cores); the release stage above
# ran every site. APR_FAULT_ONLY= (empty) runs them all here too.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   APR_FAULT_ONLY="${APR_FAULT_ONLY-convert-st-gguf quantize-gguf verify-logits verify-provenance inspect-apr-shards run-mt}" \
   ctest --output-on-failure -j"$jobs")
