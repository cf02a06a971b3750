#!/usr/bin/env bash
# The doors check (issue 10, ARCHITECTURE.md "Rooms"). Every #include of a
# header that lives in this tree must name
#   - a public header: one in a library's include/ folder (formats.h, tok.h,
#     quant.h, convert.h, forward.h with graph.h, parity.h), or
#   - a header of the including file's own top folder (a library's own
#     internals, tests/util for tests, tools/ for tools), or
#   - for tests/, bench/ and fuzz/ only: an internal header of a library whose
#     internal target that executable links, declared in its folder's
#     CMakeLists.txt by a one-line `apr_use_internals(EXE TARGET...)`.
# So no library includes another library's internal header, whatever it links.
# A header name found twice in the tree is an error too (the check could not
# tell which door an include goes through). Before checking the tree the
# script checks a small planted tree, where it must find every violation
# (a check that cannot fail proves nothing).
# Usage: check_includes.sh SOURCE_DIR [--no-self-test]
set -euo pipefail

roots=(libutil formats libtok libquant libconvert libforward libparity tools tests bench fuzz contracts)

# The library folder behind an internal target (cmake/doors.cmake names them).
target_dir() {
  local t=${1%_internal}
  case "${t%_fuzz}" in
    aprformats) echo formats ;;
    aprcli_args) echo tools ;;
    aprutil) echo libutil ;;
    aprtok) echo libtok ;;
    aprquant) echo libquant ;;
    aprconvert) echo libconvert ;;
    aprforward) echo libforward ;;
    aprparity) echo libparity ;;
    *) echo "?$1" ;;
  esac
}

# check TREE: prints one line per violation, returns the count (capped) as status.
check() {
  local tree=$1 bad=0
  cd "$tree"
  local -A headers=() declared=()
  local h base
  # Every header in the tree, by the names an include may use (base name,
  # or a path suffix such as cuda/apr_cuda.h).
  while IFS= read -r h; do
    base=${h##*/}
    if [ -n "${headers[$base]:-}" ]; then
      echo "$h: a second header named $base (also ${headers[$base]}): header names must be unique"
      bad=$((bad + 1))
    fi
    headers[$base]=$h
  done < <(find "${roots[@]}" -type f \( -name '*.h' -o -name '*.cuh' \) 2>/dev/null | sort)
  # The declarations: EXE -> library folders whose internals it may include.
  local dir line exe t
  for dir in tests bench fuzz; do
    [ -f "$dir/CMakeLists.txt" ] || continue
    while IFS= read -r line; do
      line=${line#*apr_use_internals(}
      line=${line%%)*}
      read -r exe t <<<"$line"
      for t in $t; do
        declared[$dir/$exe]+=" $(target_dir "$t")"
      done
    done < <(grep -E '^[[:space:]]*apr_use_internals\(' "$dir/CMakeLists.txt" || true)
  done
  local f inc lineno path top owner stem
  while IFS= read -r f; do
    top=${f%%/*}
    stem=${f%.*}
    while IFS=: read -r lineno inc; do
      [[ $inc =~ include[[:space:]]*[\<\"]([^\>\"]+)[\>\"] ]] || continue
      inc=${BASH_REMATCH[1]}
      # Resolve as the compiler does: beside the file first, then the tree.
      if [ -f "${f%/*}/$inc" ]; then
        path=$(realpath -m --relative-to=. "${f%/*}/$inc")
      else
        path=${headers[${inc##*/}]:-}
        [ -n "$path" ] || continue          # a system header
        case "$path" in */"$inc" | "$inc") ;; *) continue ;; esac
      fi
      owner=${path%%/*}
      case "$path" in
        "$owner"/include/*) continue ;;       # a public door
      esac
      [ "$owner" = "$top" ] && continue       # the file's own folder
      case "$top" in
        tests | bench | fuzz)
          case " ${declared[$stem]:-} " in
            *" $owner "*) continue ;;
          esac
          echo "$f:$lineno: includes $inc, internal to $owner/: use its public header, or link its internal target and say so in $top/CMakeLists.txt (apr_use_internals($(basename "$stem") ...))"
          ;;
        *)
          echo "$f:$lineno: includes $inc, internal to $owner/: a library reaches another only through its public header (include/)"
          ;;
      esac
      bad=$((bad + 1))
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' "$f" || true)
  done < <(find "${roots[@]}" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort)
  return $((bad > 100 ? 100 : bad))
}

# The planted tree: one allowed include of each kind, and each kind of
# violation once.
self_test() {
  local t
  t=$(mktemp -d)
  trap 'rm -rf "$t"' RETURN
  mkdir -p "$t"/libforward/include "$t"/libforward/cuda "$t"/libparity "$t"/tests "$t"/bench "$t"/formats/hf
  touch "$t"/libforward/include/forward.h "$t"/libforward/attn.h "$t"/libforward/cuda/k.h "$t"/formats/hf/hfmeta.h
  printf '#include "forward.h"\n#include "attn.h"\n' >"$t"/libforward/cpu.c                       # ok, ok
  printf '#include "forward.h"\n#include <stdio.h>\n#include "attn.h"\n' >"$t"/libparity/run.c      # ok, ok, BAD
  printf '#include "../libforward/attn.h"\n' >"$t"/libparity/w.c                                   # BAD (by path)
  printf '#include "attn.h"\n#include "cuda/k.h"\n' >"$t"/tests/test_a.c                          # ok, ok (declared)
  printf '#include "hfmeta.h"\n' >"$t"/tests/test_b.c                                             # BAD (undeclared)
  printf '#include "cuda/k.h"\n' >"$t"/bench/bench_g.c                                            # BAD (declared elsewhere)
  printf 'apr_use_internals(test_a aprforward_internal)\n' >"$t"/tests/CMakeLists.txt
  printf 'apr_use_internals(bench_x aprforward_internal)\n' >"$t"/bench/CMakeLists.txt
  local out rc=0
  out=$( (check "$t") ) || rc=$?
  if [ "$rc" -ne 4 ]; then
    echo "self-test: expected 4 violations in the planted tree, found $rc:"
    echo "$out"
    return 1
  fi
  echo "self-test: the planted tree's 4 violations found"
}

src=${1:?usage: check_includes.sh SOURCE_DIR [--no-self-test]}
if [ "${2:-}" != --no-self-test ]; then
  self_test
fi
rc=0
out=$( (check "$src") ) || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "$out"
  echo "include doors: $rc violation(s) (ARCHITECTURE.md, Rooms)"
  exit 1
fi
echo "include doors: every include goes through a door"
