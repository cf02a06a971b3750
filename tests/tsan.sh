#!/usr/bin/env bash
# ThreadSanitizer stage (issue 10): the threaded paths of the apr CLI, built
# with APR_SANITIZE_THREAD, on a small synthetic model: the converter (the
# parallel tensor transforms and provenance hashing), the quantizer (rows
# shared out by apr_threads_run, several types, with an imatrix), verify
# (reproduction, and --logits through the forward pass's thread pool), the
# imatrix collector and `apr run` (the forward pass), each with --threads 2
# and 4. Any data race TSan reports fails the stage (halt_on_error: the run
# exits 66), and every threaded output must be byte-identical to the
# --threads 1 output of the same binary (threads share work, never change
# the result). Usage: APR_BIN=build-tsan/apr tests/tsan.sh
set -euo pipefail
bin=${APR_BIN:?APR_BIN not set (the apr binary of a build with -DAPR_SANITIZE_THREAD=ON)}
work=$(mktemp -d "${TMPDIR:-/tmp}/apr-tsan.XXXXXX")
trap 'rm -rf "$work"' EXIT
# second_deadlock_stack: a lock-order report names both stacks. No
# suppressions: the stage is clean without any.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
export APR_FAULT_TIME=1700000000 # the provenance time: outputs compare byte for byte

# First a planted race, built with the same sanitizer: the stage must see
# it fail (exit 66), or a clean result below proves nothing (TSan off, or
# its options not taken).
cat >"$work/race.c" <<'EOF'
#include <pthread.h>
static int shared;
static void *bump(void *p) { shared++; return p; }
int main(void)
{
    pthread_t t;
    pthread_create(&t, 0, bump, 0);
    shared++;
    pthread_join(t, 0);
    return 0;
}
EOF
${CC:-cc} -fsanitize=thread -g -O1 "$work/race.c" -o "$work/race" -pthread
rc=0
"$work/race" 2>"$work/race.log" || rc=$?
if [ "$rc" -ne 66 ] || ! grep -q "data race" "$work/race.log"; then
  cat "$work/race.log" >&2
  echo "tsan: FAIL: the planted race was not reported (exit $rc, expected 66)" >&2
  exit 1
fi
grep -q __tsan_init < <(nm "$bin") || { echo "tsan: FAIL: $bin is not built with -fsanitize=thread" >&2; exit 1; }

runs=0
# apr ARGS...: one run; a TSan report (or any failure) stops the stage.
apr() {
  runs=$((runs + 1))
  if ! "$bin" "$@" >"$work/stdout" 2>"$work/stderr"; then
    cat "$work/stderr" >&2
    echo "tsan: FAIL: apr $*" >&2
    exit 1
  fi
}
# same ONE TWO WHAT: the threaded output must be the single-threaded one.
same() {
  cmp -s "$1" "$2" || { echo "tsan: FAIL: $3: --threads output differs from --threads 1" >&2; exit 1; }
}

# Wide enough that every thread gets rows of every matrix (256-column rows,
# 512 feed-forward rows), small enough for TSan's 5-15x slowdown.
apr synth "$work/src" --layers 2 --vocab 512 --hidden 256 --heads 4 --kv-heads 2 --ffn 512 -q
printf 'the quick brown fox jumps over the lazy dog. %.0s' {1..12} >"$work/calib.txt"

for t in 1 2 4; do
  o=$work/t$t
  mkdir "$o"
  apr convert "$work/src" "$o/m.gguf" --threads "$t" -q
  apr convert "$work/t1/m.gguf" "$o/m.apr" --threads "$t" -q
  apr imatrix "$work/t1/m.gguf" -f "$work/calib.txt" -o "$o/imx.gguf" --ctx 32 --chunks 2 --threads "$t" --no-ppl
  # --no-provenance: the recorded command names --threads; the rest must match
  apr quantize "$work/t1/m.gguf" "$o/q4km.gguf" --type Q4_K_M --threads "$t" --no-provenance -q
  apr quantize "$work/t1/m.gguf" "$o/iq4xs.gguf" --type IQ4_XS --imatrix "$work/t1/imx.gguf" --threads "$t" --no-provenance -q
  apr quantize "$work/t1/m.apr" "$o/q8.apr" --type Q8_0 --threads "$t" --no-provenance -q
  apr quantize "$work/t1/m.gguf" "$o/q4km-prov.gguf" --type Q4_K_M --threads "$t" -q
  apr verify "$work/t1/m.gguf" "$o/q4km-prov.gguf" --threads "$t" --json
  apr verify "$work/t1/m.gguf" "$o/q4km-prov.gguf" --logits --ctx 16 --chunks 1 --threads "$t" --json
  apr run "$work/t1/m.gguf" --prompt "hello world" -n 6 --device cpu --threads "$t"
  cp "$work/stdout" "$o/run.txt"
done
# The converter's outputs record their command (with --threads) in the
# provenance, so they are not compared byte for byte; everything else is.
for t in 2 4; do
  for f in imx.gguf q4km.gguf iq4xs.gguf q8.apr run.txt; do
    same "$work/t1/$f" "$work/t$t/$f" "$f"
  done
done
echo "tsan: $runs runs (convert, imatrix, quantize, verify, verify --logits, run at --threads 1, 2, 4), no data race"
