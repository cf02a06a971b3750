#!/usr/bin/env bash
# Fault injection, as SQLite does it (tests/fault/fault_hook.c): apr_fault is
# the apr CLI in which the N-th allocation (jansson's too, and thread
# creation) or file call (write, pwrite, read, fsync, rename, linkat, mmap,
# open, ...) made by apr's own code fails. The commands, on a small synthetic
# model: `apr convert` (safetensors -> GGUF, GGUF -> APR, GGUF -> HF
# safetensors, GGUF -> sharded APR, sharded APR -> GGUF), `apr quantize`
# (GGUF -> GGUF, GGUF -> APR), `apr verify` of the quantized file against its
# source (by reproduction, and with --logits through the forward pass, with
# the JSON and the text report; `--provenance` against the source and a
# `--roundtrip` through APR), `apr inspect` (text of a GGUF, --json of an
# APR file and of a sharded APR set) and `apr run` (a few greedy tokens).
# Each command that prints (verify, inspect, run) also runs once with its
# stdout on a full disk (/dev/full): a clear error and exit 2, the output
# never lost silently. One traced run lists every
# counted call with its call site and caller; then, for every distinct
# (kind, site, caller), its first call is made to fail, and each such run must:
#   - exit non-zero with one clear error line "apr CMD: ..." that says what
#     failed (out of memory, the I/O error), without a crash or a sanitizer
#     report (run it under the ASan build too: APR_FAULT_BIN from build-asan),
#   - or, where apr tolerates the failure by design (a cache that could not
#     grow, a hint the kernel declined, a thread that did not start), succeed
#     with the same bytes (output file, or stdout) as the run without a fault;
#   - leave nothing at the destination or beside it, and the input unchanged.
# Everything runs with --threads 1 (the N-th call is then the same call in
# every run), except the *-mt jobs: convert, quantize and run with
# --threads 2, where each site of the threaded trace that a worker thread
# reached, or that the single-threaded run does not have, is failed by name
# (APR_FAULT_SITE: its first call fails, on whichever thread makes it).
# APR_FAULT_EVERY=1 makes every call fail in turn instead (SQLite's
# exhaustive loop: thousands of runs); APR_FAULT_ONLY="JOB ..." runs only
# those jobs. Prints the number of fault sites exercised. Needs
# APR_FAULT_BIN (the apr_fault binary) and APR_BIN.
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
unset APR_FAULT_AT APR_FAULT_SITE APR_FAULT_KINDS APR_FAULT_REPORT APR_FAULT_TRACE
export APR_FAULT_TIME=1700000000 # the provenance time: outputs compare byte for byte

"$bin" synth "$work/src" --layers 1 --vocab 512 --hidden 64 --heads 2 --kv-heads 1 --ffn 128 -q
"$bin" convert "$work/src" "$work/model.gguf" -q
# Big enough (4.5 MB) for a sharded APR set of several 1 MiB shards.
"$bin" synth "$work/src-big" --layers 4 --vocab 512 --hidden 128 --heads 2 --kv-heads 1 --ffn 512 -q
"$bin" convert "$work/src-big" "$work/model-big.gguf" -q
rm -rf "$work/src-big"
# The input of the sharded-APR reading jobs: model-shards-0000K-of-00005.apr
# and model-shards.apr.manifest.json.
"$bin" convert "$work/model-big.gguf" "$work/model-shards.apr" --shard-mb 1 -q
# out_sum PATH: the sha256 of an output file, or of every file of an output directory.
# A sharded APR set (OUTNAME with --shard-mb): every file of the set beside it.
out_sum() {
  if [ -d "$1" ]; then
    (cd "$1" && sha256sum -- * | sha256sum)
  elif [[ $1 == *.apr && ! -f $1 ]]; then
    (cd "${1%/*}" && sha256sum -- * | sha256sum)
  else
    sha256sum <"$1"
  fi
}
input_sums() { (cd "$work" && sha256sum src/* model*); }
# beside: what is in $work but the destination and the runs' own files.
beside() {
  ls -A "$work" | grep -vxE 'dest|report|stderr|stdout|trace1?' | sort | paste -sd' '
}

# inputs_changed: the inputs are made; what a faulted run must leave as it is.
inputs_changed() {
  sums_before=$(input_sums)
  listing=$(beside)
}
inputs_changed

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

threads=1 # what every run gets; the *-mt jobs set 2

# faulted SPEC CMD...: runs apr_fault with stdout and stderr to $work; SPEC
# is N (the N-th call fails) or "KIND SITE CALLER" (that site's first call).
faulted() {
  local spec=$1
  shift
  if [[ $spec == *' '* ]]; then
    APR_FAULT_SITE=$spec APR_FAULT_REPORT="$work/report" "$fbin" "$@" >"$work/stdout" 2>"$work/stderr"
  else
    APR_FAULT_AT=$spec APR_FAULT_REPORT="$work/report" "$fbin" "$@" >"$work/stdout" 2>"$work/stderr"
  fi
}

# says_why KIND MSG: whether the error says what the fault was.
says_why() {
  case $1 in
    malloc | calloc | realloc | strdup | strndup | aligned_alloc | asprintf | mmap | pthread_create)
      grep -qiE 'out of memory|cannot allocate memory|resource temporarily unavailable' <<<"$2" ;;
    *) grep -qiE 'input/output error|no space left on device' <<<"$2" ;;
  esac
}

# checked_run JOB SPEC RC: the checks every faulted run shares (a report, no
# crash); sets kind and where for the caller, 1 when the run is done with.
checked_run() {
  local job=$1 spec=$2 rc=$3 site caller tag
  [[ $spec == *' '* ]] && tag="$job site" || tag="$job N=$spec"
  kind=-
  where=$tag
  read -r _ _ _ kind site caller <"$work/report" || { fail "$where: no report (crashed?) rc=$rc"; return 1; }
  if [ "$kind" != - ]; then
    where="$tag ($kind at $site from $caller)"
  elif [[ $spec == *' '* ]]; then
    read -r kind site caller <<<"$spec"
    where="$tag ($kind at $site from $caller, not reached this time)"
    kind=-
  fi
  if grep -qE 'Sanitizer|runtime error|^    #[0-9]|ThreadSanitizer' "$work/stderr" || [ "$rc" -ge 86 ]; then
    fail "$where: crash or sanitizer report (rc $rc)"
    sed -n 1,30p "$work/stderr"
    return 1
  fi
}

# check_inputs WHERE: the inputs unchanged, nothing new beside them.
check_inputs() {
  [ "$(input_sums)" = "$sums_before" ] || { fail "$1: the input changed"; sums_before=$(input_sums); }
  [ "$(beside)" = "$listing" ] || fail "$1: left beside the destination: $(beside)"
}

# check_run JOB SPEC REF_SHA OUTNAME CMD...: one faulted run that writes
# OUTNAME into an empty directory.
check_run() {
  local job=$1 spec=$2 ref=$3 out=$4
  shift 4
  local dest="$work/dest" rc=0 kind where
  rm -rf "$dest"
  mkdir "$dest"
  faulted "$spec" "$@" "$dest/$out" --threads "$threads" -q || rc=$?
  checked_run "$job" "$spec" "$rc" || return 0
  if [ "$kind" = - ]; then
    [ "$rc" -eq 0 ] || fail "$where: the call did not come again (not deterministic?) and the run failed: $(head -c 300 "$work/stderr")"
  elif [ "$rc" -eq 0 ]; then
    # tolerated by design: the same output as without the fault
    local left
    left=$(ls -A "$dest" | paste -sd' ')
    [ "$left" = "$ref_left" ] || fail "$where: succeeded and left: $left (expected $ref_left)"
    [ "$(out_sum "$dest/$out")" = "$ref" ] || fail "$where: succeeded with different output bytes"
    tolerated=$((tolerated + 1))
  else
    local msg
    msg=$(cat "$work/stderr")
    if ! grep -qE "^apr $1: " <<<"$msg"; then
      fail "$where: rc $rc without an 'apr $1: ...' error line: $(head -c 300 <<<"$msg")"
    elif ! says_why "$kind" "$msg"; then
      fail "$where: the error does not say what failed ($kind): $(head -c 300 <<<"$msg")"
    fi
    local left
    left=$(ls -A "$dest")
    [ -z "$left" ] || fail "$where: left in the destination directory: $left"
    refused=$((refused + 1))
  fi
  check_inputs "$where"
}

# check_stdout JOB SPEC REF CMD...: one faulted run of a command that writes
# only stdout (verify, inspect, run): it must end in a clear error ("apr
# CMD: ..."; verify: exit 2, as exit 1 is a verdict of FAIL, which a failed
# allocation must not give), or, tolerated, print the same (std_norm).
check_stdout() {
  local job=$1 spec=$2 ref=$3
  shift 3
  local cmd=$1 rc=0 kind where
  faulted "$spec" "$@" $(threads_arg "$cmd" "$threads") || rc=$?
  checked_run "$job" "$spec" "$rc" || return 0
  if [ "$rc" -eq 0 ]; then
    [ "$(std_norm "$cmd")" = "$ref" ] || fail "$where: succeeded with a different output"
    [ "$kind" = - ] || tolerated=$((tolerated + 1))
  elif { [ "$cmd" != verify ] || [ "$rc" -eq 2 ]; } && grep -qE "^apr $cmd: " "$work/stderr" &&
    says_why "$kind" "$(cat "$work/stderr")"; then
    refused=$((refused + 1))
  else
    fail "$where: rc $rc, not a clear error: $(head -c 300 "$work/stderr")"
  fi
  check_inputs "$where"
}

# threads_arg CMD N: --threads N, for the commands that take it.
threads_arg() {
  [ "$1" = inspect ] || echo "--threads $2"
}

# std_norm CMD: what of $work/stdout must not change: the verify report less
# its timings (JSON: .run; the text report: its "run :" line), the whole
# output of the others.
std_norm() {
  if [ "$1" != verify ]; then
    sha256sum <"$work/stdout"
  elif [ "$(head -c 1 "$work/stdout")" = "{" ]; then
    jq -cS 'del(.run)' "$work/stdout"
  else
    grep -v '^  run        : ' "$work/stdout" | sha256sum
  fi
}

# wanted NAME: APR_FAULT_ONLY (a space-separated list of job names) picks
# which jobs run, for working on one of them; all of them by default.
wanted() {
  [ -z "${APR_FAULT_ONLY:-}" ] || [[ " $APR_FAULT_ONLY " == *" $1 "* ]]
}

# specs TRACE [TRACE1]: one SPEC per fault to make. Without TRACE1: the first
# N of every distinct (kind, site, caller) of TRACE (every N with
# APR_FAULT_EVERY=1). With TRACE1 (the same command with one thread): each
# distinct site of TRACE that a worker thread reached or that TRACE1 lacks,
# as "KIND SITE CALLER".
specs() {
  if [ $# -eq 2 ]; then
    awk 'NR == FNR { one[$2 " " $3 " " $4] = 1; next }
         { s = $2 " " $3 " " $4 } ($5 == "worker" || !(s in one)) && !seen[s]++ { print s }' "$2" "$1"
  elif [ "${APR_FAULT_EVERY:-0}" = 1 ]; then
    awk '{ print $1 }' "$1"
  else
    awk '!seen[$2 " " $3 " " $4]++ { print $1 }' "$1"
  fi
}

total_sites=0
total_runs=0
# sweep JOB KIND REF CMD...: one faulted run (check_KIND) per spec of
# $work/trace (and $work/trace1 when it is there), then one past the last call.
sweep() {
  local name=$1 check=$2 ref=$3
  shift 3
  local calls sites spec
  calls=$(wc -l <"$work/trace")
  sites=$(awk '{ print $2, $3, $4 }' "$work/trace" | sort -u | wc -l)
  local -a list
  local by_site=false
  if [ -f "$work/trace1" ]; then
    by_site=true
    mapfile -t list < <(specs "$work/trace" "$work/trace1")
    sites=${#list[@]}
  else
    mapfile -t list < <(specs "$work/trace")
  fi
  rm -f "$work/trace" "$work/trace1"
  tolerated=0
  refused=0
  for spec in ${list[@]+"${list[@]}"}; do
    "check_$check" "$name" "$spec" "$ref" "$@"
    total_runs=$((total_runs + 1))
  done
  $by_site || "check_$check" "$name" $((calls + 1)) "$ref" "$@" # past the last call: succeeds
  echo "$name: $calls calls, $sites distinct sites (kind, call site, caller)${mt_note:-}; $refused refused cleanly, $tolerated tolerated with identical output"
  total_sites=$((total_sites + sites))
}

# traced FILE CMD...: the run without a fault, its calls listed in FILE.
traced() {
  local file=$1
  shift
  APR_FAULT_TRACE="$work/$file" "$fbin" "$@"
}

# job NAME OUTNAME CMD...: a command that writes OUTNAME: the traced run,
# then one faulted run per site.
job() {
  local name=$1 out=$2
  shift 2
  wanted "$name" || return 0
  local dest="$work/dest"
  rm -rf "$dest"
  mkdir "$dest"
  if [ "$threads" -gt 1 ]; then
    traced trace1 "$@" "$dest/$out" --threads 1 -q
    rm -rf "$dest" && mkdir "$dest"
  fi
  traced trace "$@" "$dest/$out" --threads "$threads" -q
  local ref
  ref=$(out_sum "$dest/$out")
  ref_left=$(ls -A "$dest" | paste -sd' ') # OUTNAME, or a sharded set's files
  sweep "$name" run "$ref" "$out" "$@"
}

# stdout_job NAME CMD...: a command that writes only stdout, the same way.
stdout_job() {
  local name=$1
  shift
  wanted "$name" || return 0
  [ "$threads" -eq 1 ] || traced trace1 "$@" $(threads_arg "$1" 1) >/dev/null
  traced trace "$@" $(threads_arg "$1" "$threads") >"$work/stdout"
  sweep "$name" stdout "$(std_norm "$1")" "$@"
  check_full_stdout "$name" "$@" $(threads_arg "$1" "$threads")
}

# check_full_stdout JOB CMD...: the command with its stdout on a full disk
# (/dev/full): what it prints (a report, a listing) cannot be written, which
# must end in "apr CMD: ...: No space left on device" and exit 2 (for
# verify, never a verdict), not a success with the output lost.
check_full_stdout() {
  local job=$1 rc=0
  shift
  [ -w /dev/full ] || return 0 # not every container has it; the sweep above ran
  "$fbin" "$@" >/dev/full 2>"$work/stderr" || rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qE "^apr $1: .*No space left on device" "$work/stderr"; then
    fail "$job with stdout on /dev/full: rc $rc, not a clear error: $(head -c 300 "$work/stderr")"
  fi
  check_inputs "$job with stdout on /dev/full"
  total_runs=$((total_runs + 1))
}

job convert-st-gguf out.gguf convert "$work/src"
job convert-gguf-apr out.apr convert "$work/model.gguf"
job quantize-gguf out.gguf quantize "$work/model.gguf" --type Q4_K_M
job quantize-apr out.apr quantize "$work/model.gguf" --type Q8_0
# GGUF -> HF safetensors directory: config.json, generation_config.json,
# tokenizer.json, tokenizer_config.json and the safetensors header, whose
# builders check every jansson setter (apr_jb, formats/include/apr_json.h).
job convert-gguf-st out convert "$work/model.gguf" --to safetensors
# A sharded APR set: the shards, then the manifest (apr_shard.c's apr_jb builder).
job convert-gguf-apr-shards out.apr convert "$work/model-big.gguf" --shard-mb 1
# A sharded APR set read (apr_shard.c's reader: the manifest parsed, every
# shard mapped and checked against it, the parts adopted into one model),
# then written as one GGUF.
job convert-apr-shards-gguf out.gguf convert "$work/model-shards.apr.manifest.json"

"$bin" quantize "$work/model.gguf" "$work/model-q8.gguf" --type Q8_0 -q
"$bin" convert "$work/model.gguf" "$work/model.apr" -q
inputs_changed
stdout_job verify-reproduce verify "$work/model.gguf" "$work/model-q8.gguf" --json
stdout_job verify-logits verify "$work/model.gguf" "$work/model-q8.gguf" --logits --json
# The text report (libparity/report.c's table, with the per-layer std ratios).
stdout_job verify-text verify "$work/model.gguf" "$work/model-q8.gguf" --logits
# verify's file-level reports: the provenance re-hash (JSON, with the source)
# and a round trip GGUF -> APR -> GGUF (its text line), whose two conversions
# go to a temporary directory under TMPDIR: here, so that one left behind shows.
stdout_job verify-provenance verify --provenance "$work/model-q8.gguf" "$work/model.gguf" --json
TMPDIR=$work stdout_job verify-roundtrip verify --roundtrip "$work/model.gguf" --via apr
stdout_job inspect-gguf inspect "$work/model-q8.gguf"
stdout_job inspect-apr-json inspect "$work/model.apr" --json
# The sharded set opened by its first shard (which finds the manifest).
stdout_job inspect-apr-shards inspect "$work/model-shards-00000-of-00005.apr" --json
stdout_job run run "$work/model.gguf" --prompt "hello world" -n 4 --device cpu

# The threaded paths: the sites only a worker thread (or only a threaded
# run) reaches, each failed by name.
threads=2
mt_note=" on worker threads or only when threaded"
job convert-st-gguf-mt out.gguf convert "$work/src"
job quantize-gguf-mt out.gguf quantize "$work/model.gguf" --type Q4_K_M
stdout_job run-mt run "$work/model.gguf" --prompt "hello world" -n 4 --device cpu
echo "fault injection: $total_sites fault sites exercised in $total_runs faulted runs, $failures failures"
[ "$failures" -eq 0 ]
