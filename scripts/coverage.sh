#!/usr/bin/env bash
# Line coverage of the libraries and the CLI by the tests: a gcc --coverage
# build (build-cov/, -O1, no CUDA, no benches), the ctest label "unit", plus
# the peer tests when asked (their packages are what scripts/deps.sh --python
# installs; without them they skip), then plain gcov (no lcov/gcovr needed)
# summed per library folder and in total.
#
# Usage: scripts/coverage.sh [--peer | --report]   (env: JOBS, default nproc)
#   --report: only the summary, from the counts the last run left in build-cov/
# Prints one line per folder: lines executed / lines, percent. Counts .c
# sources only: a header's inline functions and the .inc kernels are compiled
# into several objects, and gcov reports them once per object.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc)}
labels=unit
[ "${1:-}" = "--peer" ] && labels='unit|peer'
command -v gcov >/dev/null || { echo "coverage: gcov not found (it comes with gcc)"; exit 1; }
bd=build-cov

if [ "${1:-}" != "--report" ]; then
cmake -S . -B "$bd" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc -DAPR_CUDA=OFF -DAPR_BENCH=OFF \
  -DCMAKE_C_FLAGS="--coverage -O1" -DCMAKE_EXE_LINKER_FLAGS=--coverage >/dev/null
cmake --build "$bd" -j"$jobs" >/dev/null
find "$bd" -name '*.gcda' -delete # counts from this run only
echo "== tests ($labels)"
(cd "$bd" && ctest -j"$jobs" -L "$labels" --output-on-failure | grep -E 'tests passed|tests failed|\*\*\*|Failed') || echo "coverage: some tests failed (figures still cover what ran)"
fi

echo "== line coverage (gcov, .c sources)"
src=$(pwd)
# gcov -n: summaries only, no .gcov files. Every object (.gcno), so a source
# no test reached counts with 0 lines executed. Each object directory once.
find "$bd" -name '*.gcno' -printf '%h\n' | sort -u | while read -r d; do
  (cd "$d" && gcov -n ./*.gcno 2>/dev/null)
done | awk -v src="$src/" '
  /^File / { f = $2; gsub(/\047/, "", f); next }
  /^Lines executed:/ {
    if (f == "" || index(f, src) != 1 || f !~ /\.c$/) { f = ""; next }
    rel = substr(f, length(src) + 1)
    if (rel ~ /^(tests|bench|fuzz|contracts)\//) { f = ""; next }
    split($0, a, /[:% ]+/)                        # Lines executed:85.00% of 200
    n = $NF; pct = a[3]
    hit = int(pct * n / 100 + 0.5)
    if (!(rel in seen) || hit > hitof[rel]) {     # one object per source: keep the best report
      seen[rel] = 1; hitof[rel] = hit; nof[rel] = n
    }
    f = ""
  }
  END {
    for (r in seen) {
      split(r, p, "/"); lib = p[1]
      H[lib] += hitof[r]; N[lib] += nof[r]; th += hitof[r]; tn += nof[r]
    }
    for (l in N) printf "  %-12s %7d / %7d lines  %5.1f%%\n", l, H[l], N[l], 100 * H[l] / N[l] | "sort"
    close("sort")
    printf "  %-12s %7d / %7d lines  %5.1f%%\n", "total", th, tn, tn ? 100 * th / tn : 0
  }'
