#!/usr/bin/env bash
# Fault injection, as SQLite does it (tests/fault/fault_hook.c): apr_fault is
# the apr CLI in which the N-th allocation (jansson's too) or file call
# (write, pwrite, read, fsync, rename, linkat, mmap, open, ...) made by apr's
# own code fails. For `apr convert` (safetensors -> GGUF, GGUF -> APR, GGUF
# -> HF safetensors) and `apr quantize` (GGUF -> GGUF, GGUF -> APR) of a
# small synthetic model, and
# `apr verify` of the quantized file against its source (by reproduction,
# and with --logits through the forward pass), one
# traced run lists every counted call with its call site and caller; then,
# for every distinct (kind, site, caller), its first call is made to fail,
# and each such run must:
#   - exit non-zero with one clear error line "apr CMD: ..." that says what
#     failed (out of memory, the I/O error), without a crash or a sanitizer
#     report (run it under the ASan build too: APR_FAULT_BIN from build-asan),
#   - or, where apr tolerates the failure by design (a cache that could not
#     grow, a hint the kernel declined), succeed with the same bytes as the
#     run without a fault;
#   - leave nothing at the destination or beside it, and the input unchanged.
# APR_FAULT_EVERY=1 makes every call fail in turn instead (SQLite's
# exhaustive loop: thousands of runs); APR_FAULT_ONLY="JOB ..." runs only
# those jobs. Prints the number of fault sites exercised. Needs APR_FAULT_BIN (the apr_fault binary) and APR_BIN.
set -euo pipefail
export LC_ALL=C # ls | sort below
fbin=${APR_FAULT_BIN:?APR_FAULT_BIN not set (run through ctest)}
bin=${APR_BIN:?APR_BIN not set (run through ctest)}
base=${APR_TMPDIR:-/tmp}
[ -w /dev/shm ] && base=/dev/shm # fsync on tmpfs is free: hundreds of runs
mkdir -p "$base"
work=$(mktemp -d "$base/apr-fault.XXXXXX")
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86:print_stacktrace=1
unset APR_FAULT_AT APR_FAULT_KINDS APR_FAULT_REPORT APR_FAULT_TRACE
export APR_FAULT_TIME=1700000000 # the provenance time: outputs compare byte for byte

"$bin" synth "$work/src" --layers 1 --vocab 512 --hidden 64 --heads 2 --kv-heads 1 --ffn 128 -q
"$bin" convert "$work/src" "$work/model.gguf" -q
# out_sum PATH: the sha256 of an output file, or of every file of an output directory.
out_sum() {
  if [ -d "$1" ]; then (cd "$1" && sha256sum -- * | sha256sum); else sha256sum <"$1"; fi
}
input_sums() { (cd "$work" && sha256sum src/* model*.gguf); }
sums_before=$(input_sums)

failures=0
fail() {
  # names the offsets (function, file:line with debug info) on the way out
  local msg=$*
  if [[ $msg =~ \ at\ (0x[0-9a-f]+)\ from\ (0x[0-9a-f]+)\) ]]; then
    msg=${msg/ at ${BASH_REMATCH[1]} from ${BASH_REMATCH[2]}/ at $(site_name "${BASH_REMATCH[1]}") from $(site_name "${BASH_REMATCH[2]}")}
  fi
  echo "FAIL: $msg"
  failures=$((failures + 1))
}

# site_name OFFSET: function (file:line with debug info) for a report line.
site_name() {
  if command -v addr2line >/dev/null; then
    addr2line -e "$fbin" -f -s -i "$1" 2>/dev/null | paste -sd' ' | cut -c1-100
  else
    echo "$1"
  fi
}

# check_run JOB N OUTNAME REF_SHA: one faulted run in an empty directory.
check_run() {
  local job=$1 n=$2 out=$3 ref=$4
  shift 4
  local dest="$work/dest"
  rm -rf "$dest"
  mkdir "$dest"
  local rc=0
  APR_FAULT_AT=$n APR_FAULT_REPORT="$work/report" "$fbin" "$@" "$dest/$out" --threads 1 -q \
    >"$work/stdout" 2>"$work/stderr" || rc=$?
  local kind site caller
  read -r _ _ _ kind site caller <"$work/report" || { fail "$job N=$n: no report (crashed?) rc=$rc"; return; }
  local where="$job N=$n ($kind at $site from $caller)"
  if grep -qE 'Sanitizer|runtime error|^    #[0-9]' "$work/stderr" || [ "$rc" -ge 86 ]; then
    fail "$where: crash or sanitizer report (rc $rc)"
    sed -n 1,30p "$work/stderr"
    return
  fi
  if [ "$kind" = - ]; then
    [ "$rc" -eq 0 ] || fail "$job N=$n: the call did not come again (not deterministic?) and the run failed: $(head -c 300 "$work/stderr")"
  elif [ "$rc" -eq 0 ]; then
    # tolerated by design: the same output as without the fault
    local left
    left=$(ls -A "$dest")
    [ "$left" = "$out" ] || fail "$where: succeeded and left: $left"
    [ "$(out_sum "$dest/$out")" = "$ref" ] || fail "$where: succeeded with different output bytes"
    tolerated=$((tolerated + 1))
  else
    local msg
    msg=$(cat "$work/stderr")
    if ! grep -qE "^apr (convert|quantize): " <<<"$msg"; then
      fail "$where: rc $rc without an 'apr CMD: ...' error line: $(head -c 300 <<<"$msg")"
    else
      case $kind in
        malloc | calloc | realloc | strdup | strndup | aligned_alloc | asprintf | mmap)
          grep -qiE 'out of memory|cannot allocate memory' <<<"$msg" ||
            fail "$where: the error does not say out of memory: $(head -c 300 <<<"$msg")" ;;
        *)
          grep -qiE 'input/output error|no space left on device' <<<"$msg" ||
            fail "$where: the error does not say the I/O error: $(head -c 300 <<<"$msg")" ;;
      esac
    fi
    local left
    left=$(ls -A "$dest")
    [ -z "$left" ] || fail "$where: left in the destination directory: $left"
    refused=$((refused + 1))
  fi
  [ "$(input_sums)" = "$sums_before" ] || { fail "$where: the input changed"; sums_before=$(input_sums); }
  [ "$(ls -A "$work" | sort | paste -sd' ')" = "dest model.gguf report src stderr stdout" ] ||
    fail "$where: left beside the destination: $(ls -A "$work")"
}

total_sites=0
total_runs=0
# wanted NAME: APR_FAULT_ONLY (a space-separated list of job names) picks
# which jobs run, for working on one of them; all of them by default.
wanted() {
  [ -z "${APR_FAULT_ONLY:-}" ] || [[ " $APR_FAULT_ONLY " == *" $1 "* ]]
}

# job NAME OUTNAME CMD...: the traced run, then one faulted run per site.
job() {
  local name=$1 out=$2
  shift 2
  wanted "$name" || return 0
  local dest="$work/dest"
  rm -rf "$dest"
  mkdir "$dest"
  APR_FAULT_TRACE="$work/trace" "$fbin" "$@" "$dest/$out" --threads 1 -q
  local ref
  ref=$(out_sum "$dest/$out")
  local calls sites ns
  calls=$(wc -l <"$work/trace")
  if [ "${APR_FAULT_EVERY:-0}" = 1 ]; then
    ns=$(seq 1 "$calls")
  else
    ns=$(awk '!seen[$2 " " $3 " " $4]++ { print $1 }' "$work/trace")
  fi
  sites=$(awk '{ print $2, $3, $4 }' "$work/trace" | sort -u | wc -l)
  rm -f "$work/trace"
  tolerated=0
  refused=0
  for n in $ns; do
    check_run "$name" "$n" "$out" "$ref" "$@"
    total_runs=$((total_runs + 1))
  done
  check_run "$name" $((calls + 1)) "$out" "$ref" "$@" # past the last call: succeeds
  echo "$name: $calls calls, $sites distinct sites (kind, call site, caller); $refused refused cleanly, $tolerated tolerated with identical output"
  total_sites=$((total_sites + sites))
}

# check_verify JOB N REF_JSON ARGS...: one faulted `apr verify`, which writes
# nothing: it must end in an error (exit 2, "apr verify: ..."), or, tolerated,
# give the same report (less its timings); a verdict of FAIL (exit 1) from a
# failed allocation would be a wrong answer.
check_verify() {
  local job=$1 n=$2 ref=$3
  shift 3
  local rc=0
  APR_FAULT_AT=$n APR_FAULT_REPORT="$work/report" "$fbin" verify "$@" --json --threads 1 \
    >"$work/stdout" 2>"$work/stderr" || rc=$?
  local kind site caller
  read -r _ _ _ kind site caller <"$work/report" || { fail "$job N=$n: no report (crashed?) rc=$rc"; return; }
  local where="$job N=$n ($kind at $site from $caller)"
  if grep -qE 'Sanitizer|runtime error|^    #[0-9]' "$work/stderr" || [ "$rc" -ge 86 ]; then
    fail "$where: crash or sanitizer report (rc $rc)"
    sed -n 1,30p "$work/stderr"
    return
  fi
  if [ "$rc" -eq 0 ]; then
    [ "$(jq -cS 'del(.run)' "$work/stdout")" = "$ref" ] || fail "$where: passed with a different report"
    [ "$kind" = - ] || tolerated=$((tolerated + 1))
  elif [ "$rc" -eq 2 ] && grep -qiE "^apr verify: .*(out of memory|cannot allocate memory|input/output error|no space left)" \
    "$work/stderr"; then
    refused=$((refused + 1))
  else
    fail "$where: rc $rc, not a clear error: $(head -c 300 "$work/stderr")"
  fi
  [ "$(input_sums)" = "$sums_before" ] || { fail "$where: the input changed"; sums_before=$(input_sums); }
  [ "$(ls -A "$work" | sort | paste -sd' ')" = "dest model-q8.gguf model.gguf report src stderr stdout" ] ||
    fail "$where: left beside the inputs: $(ls -A "$work")"
}

# verify_job NAME ARGS...: the traced run, then one faulted run per site.
verify_job() {
  local name=$1
  shift
  wanted "$name" || return 0
  APR_FAULT_TRACE="$work/trace" "$fbin" verify "$@" --json --threads 1 >"$work/stdout"
  local ref calls sites ns
  ref=$(jq -cS 'del(.run)' "$work/stdout")
  calls=$(wc -l <"$work/trace")
  if [ "${APR_FAULT_EVERY:-0}" = 1 ]; then
    ns=$(seq 1 "$calls")
  else
    ns=$(awk '!seen[$2 " " $3 " " $4]++ { print $1 }' "$work/trace")
  fi
  sites=$(awk '{ print $2, $3, $4 }' "$work/trace" | sort -u | wc -l)
  rm -f "$work/trace"
  tolerated=0
  refused=0
  for n in $ns; do
    check_verify "$name" "$n" "$ref" "$@"
    total_runs=$((total_runs + 1))
  done
  check_verify "$name" $((calls + 1)) "$ref" "$@"
  echo "$name: $calls calls, $sites distinct sites; $refused refused cleanly, $tolerated tolerated with the same report"
  total_sites=$((total_sites + sites))
}

job convert-st-gguf out.gguf convert "$work/src"
job convert-gguf-apr out.apr convert "$work/model.gguf"
job quantize-gguf out.gguf quantize "$work/model.gguf" --type Q4_K_M
job quantize-apr out.apr quantize "$work/model.gguf" --type Q8_0
# GGUF -> HF safetensors directory: config.json, generation_config.json,
# tokenizer.json, tokenizer_config.json and the safetensors header, whose
# builders check every jansson setter (apr_jb, formats/include/apr_json.h).
job convert-gguf-st out convert "$work/model.gguf" --to safetensors
"$bin" quantize "$work/model.gguf" "$work/model-q8.gguf" --type Q8_0 -q
sums_before=$(input_sums)
verify_job verify-reproduce "$work/model.gguf" "$work/model-q8.gguf"
verify_job verify-logits "$work/model.gguf" "$work/model-q8.gguf" --logits
echo "fault injection: $total_sites fault sites exercised in $total_runs faulted runs, $failures failures"
[ "$failures" -eq 0 ]
