#!/usr/bin/env python3
"""Peer test: `apr quantize --keep-split` against llama.cpp's
llama_model_quantize with keep_split (what llama-quantize --keep-split runs),
reached through llama-cpp-python.

The split inputs are written by the gguf package's splitter (gguf-py's
GGUFWriter(split_max_tensors=N), what convert_hf_to_gguf.py --split-max-tensors
uses; small_first_shard=True is its --no-tensor-first-split, a first split
with the metadata only). For each case both tools quantize the same split
input and must write the same files (names) with the same bytes, whole file
for whole file (apr with --no-provenance: its provenance KVs are the only
difference otherwise). An unsplit input with keep_split gives llama.cpp's
PREFIX-00001-of-00001.gguf; with an imatrix, its records (the llama-quantize
tool's KV overrides) are in the first split. Then llama.cpp loads apr's splits (with apr's
provenance in the first) and decodes the same greedy tokens as from its own.

usage: keep_split_peer.py --apr PATH/TO/apr --tmp DIR
exit: 0 pass, 1 mismatch, 77 skipped (gguf, numpy or llama_cpp missing).
"""
import os
import subprocess
import sys

import peer_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_quantize_peer as lqp  # noqa: E402  (exits 77 itself when a peer package is missing)

gguf = lqp.gguf
llama_cpp = lqp.llama_cpp

MODEL = dict(n_layer=4, hidden=256, n_head=4, n_kv=2, ffn=768, vocab=320, tied=False, dtype="F16", seed=5)


def make_split_model(path, split_max_tensors, small_first_shard=False):
    """lqp.make_model's model, written by gguf-py's splitter (0: unsplit)."""
    orig = gguf.GGUFWriter

    def writer(p, arch, **kw):
        return orig(p, arch, split_max_tensors=split_max_tensors, small_first_shard=small_first_shard, **kw)

    lqp.gguf.GGUFWriter = writer
    try:
        lqp.make_model(path, **MODEL)
    finally:
        lqp.gguf.GGUFWriter = orig


def llama_keep_split(src, prefix, ftype, **kw):
    """llama_model_quantize(keep_split): fname_out is the prefix, as the
    llama-quantize tool passes OUT less its .gguf. kw: lqp.llama_quantize's
    (imatrix, overrides, ...), whose params get keep_split set."""
    orig = llama_cpp.llama_model_quantize_default_params

    def params():
        p = orig()
        p.keep_split = True
        return p

    llama_cpp.llama_model_quantize_default_params = params
    try:
        lqp.llama_quantize(src, prefix, ftype, **kw)
    finally:
        llama_cpp.llama_model_quantize_default_params = orig


def files_in(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".gguf"))


def greedy(path, n=16):
    return peer_util.llama_greedy(llama_cpp, path, "t1 t2 t3", n, n_ctx=64)[0]


def one_case(args, label, src_dir, apr_in, typ, ftype, provenance=False, apr_extra=(), **llama_kw):
    """Both tools quantize src_dir's split model; returns (ok, apr_dir, llama_dir)."""
    ref = os.path.join(args.tmp, f"llama-{label}")
    ours = os.path.join(args.tmp, f"apr-{label}")
    for d in (ref, ours):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    first = os.path.join(src_dir, files_in(src_dir)[0])
    llama_keep_split(first, os.path.join(ref, "q"), ftype, **llama_kw)
    cmd = [args.apr, "quantize", apr_in, os.path.join(ours, "q.gguf"), "--type", typ, "--keep-split",
           "--threads", "2", "--quiet", *([] if provenance else ["--no-provenance"]), *apr_extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {label}: {' '.join(cmd)}\n{r.stderr}")
        return False, ours, ref
    fr, fo = files_in(ref), files_in(ours)
    if fr != fo:
        print(f"FAIL {label}: apr wrote {fo}, llama.cpp {fr}")
        return False, ours, ref
    ok = True
    for f in fr:
        if provenance:  # tensors, KVs (apr.provenance.* aside) and their order must still agree
            ok &= lqp.compare(os.path.join(ref, f), os.path.join(ours, f), f"{label} {f}")
            continue
        with open(os.path.join(ref, f), "rb") as a, open(os.path.join(ours, f), "rb") as b:
            same = a.read() == b.read()
        n_t = len(gguf.GGUFReader(os.path.join(ref, f)).tensors)
        print(f"{'OK  ' if same else 'FAIL'} {label} {f}: {n_t} tensors, "
              f"{'byte-identical to llama.cpp' if same else 'bytes differ'}")
        if not same:
            lqp.compare(os.path.join(ref, f), os.path.join(ours, f), f"{label} {f}")
        ok &= same
    return ok, ours, ref


def main():
    args = peer_util.apr_tool_args()
    if args is None:
        return 1
    print(f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}")
    split = os.path.join(args.tmp, "in-split")
    small = os.path.join(args.tmp, "in-small-first")
    whole = os.path.join(args.tmp, "in-whole")
    for d in (split, small, whole):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    make_split_model(os.path.join(split, "m.gguf"), 11)
    make_split_model(os.path.join(small, "m.gguf"), 16, small_first_shard=True)
    make_split_model(os.path.join(whole, "m.gguf"), 0)
    print(f"inputs: {files_in(split)}, {files_in(small)} (first split without tensors), {files_in(whole)}")
    ok = True
    first = os.path.join(split, files_in(split)[0])
    for typ in ("Q4_K_M", "Q8_0", "Q6_K", "Q3_K_M"):
        ok &= one_case(args, f"split-{typ}", split, first, typ, lqp.FTYPES[typ])[0]
    # the directory as input, a metadata-only first split, an unsplit input
    ok &= one_case(args, "dir-Q4_K_M", split, split, "Q4_K_M", lqp.FTYPES["Q4_K_M"])[0]
    ok &= one_case(args, "small-first-Q8_0", small, small, "Q8_0", lqp.FTYPES["Q8_0"])[0]
    ok &= one_case(args, "unsplit-Q4_K_M", whole, os.path.join(whole, "m.gguf"), "Q4_K_M", lqp.FTYPES["Q4_K_M"])[0]
    # with an imatrix: its KVs (the llama-quantize tool's overrides) in the first split, before the split keys
    dat, loaded = lqp.imatrix_for(os.path.join(whole, "m.gguf"), 13)
    imf = os.path.join(args.tmp, "keep-split.imatrix.dat")
    with open(imf, "wb") as f:
        f.write(dat)
    tool_kvs = [("quantize.imatrix.file", imf), ("quantize.imatrix.dataset", "peer"),
                ("quantize.imatrix.entries_count", len(loaded)), ("quantize.imatrix.chunks_count", 10)]
    ok &= one_case(args, "imatrix-Q4_K_M", split, first, "Q4_K_M", lqp.FTYPES["Q4_K_M"], apr_extra=["--imatrix", imf],
                   imatrix=loaded, overrides=tool_kvs)[0]
    # llama.cpp loads apr's splits, provenance and all
    good, ours, ref = one_case(args, "load-Q4_K_M", split, first, "Q4_K_M", lqp.FTYPES["Q4_K_M"], provenance=True)
    ok &= good
    if good:
        g_ours = greedy(os.path.join(ours, files_in(ours)[0]))
        g_ref = greedy(os.path.join(ref, files_in(ref)[0]))
        same = bool(g_ours) and g_ours == g_ref
        print(f"{'OK  ' if same else 'FAIL'} llama.cpp loads apr's {len(files_in(ours))} splits: greedy {g_ours[:8]}..., "
              f"from its own {g_ref[:8]}...")
        ok &= same
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
