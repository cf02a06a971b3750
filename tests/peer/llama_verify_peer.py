#!/usr/bin/env python3
"""Peer test: `apr verify` reproduces DSTs made by llama.cpp's own quantizer.

llama_model_quantize (the code behind llama-quantize, through
llama-cpp-python) quantizes a small F16 LLaMA GGUF to Q4_K_M, Q6_K and Q8_0,
and to Q4_K_M with an importance matrix (recording quantize.imatrix.* as the
llama-quantize tool does, the .dat file next to SRC). `apr verify SRC DST`
must report each as reproduced (verdict.rule "reproduced", no forward pass).
Then one quantized block of one tensor is altered in a copy: verify must name
that tensor and row as the first that differs, and the statistics decide.
The model builder, quantizer call and imatrix come from
llama_quantize_peer.py, so both peer tests build the same kind of model.

usage: llama_verify_peer.py --apr PATH/TO/apr --tmp DIR
exit: 0 pass, 1 mismatch, 77 skipped (gguf, numpy or llama_cpp missing).
"""
import json
import os
import shutil
import subprocess
import sys

import peer_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_quantize_peer as qp  # noqa: E402  (exits 77 itself when a package is missing)

gguf = qp.gguf


def verify(apr, src, dst, *extra):
    cmd = [apr, "verify", src, dst, "--json", "--threads", "2", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return r.returncode, json.loads(r.stdout)
    except json.JSONDecodeError:
        print(f"FAIL no JSON from {' '.join(cmd)} (exit {r.returncode}): {r.stderr[:400]}")
        return r.returncode, None


def tensor_row_offset(path, name, row):
    """File offset and row size in bytes of `row` of tensor `name`."""
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        if t.name == name:
            rows = int(t.shape[1]) if len(t.shape) > 1 else 1
            row_bytes = int(t.n_bytes) // rows
            return int(t.data_offset) + row * row_bytes, row_bytes, t.tensor_type.name
    raise KeyError(name)


def main():
    args = peer_util.apr_tool_args()
    if args is None:
        return 1
    src = os.path.join(args.tmp, "vpeer-f16.gguf")
    qp.make_model(src, n_layer=2, hidden=256, n_head=4, n_kv=2, ffn=512, vocab=320, tied=False, dtype="F16", seed=5)
    ok = True
    dsts = {}
    for typ in ("Q4_K_M", "Q6_K", "Q8_0"):
        dst = os.path.join(args.tmp, f"vpeer-llama-{typ}.gguf")
        qp.llama_quantize(src, dst, qp.FTYPES[typ])
        dsts[typ] = dst
    # with an imatrix, recorded as the llama-quantize tool records it
    dat, loaded = qp.imatrix_for(src, 13)
    imf = os.path.join(args.tmp, "vpeer.imatrix.dat")
    with open(imf, "wb") as f:
        f.write(dat)
    dst = os.path.join(args.tmp, "vpeer-llama-Q4_K_M-imat.gguf")
    qp.llama_quantize(src, dst, qp.FTYPES["Q4_K_M"], imatrix=loaded,
                      overrides=[("quantize.imatrix.file", imf), ("quantize.imatrix.dataset", "peer"),
                                 ("quantize.imatrix.entries_count", len(loaded)),
                                 ("quantize.imatrix.chunks_count", 10)])
    dsts["Q4_K_M+imatrix"] = dst

    for label, dst in dsts.items():
        rc, j = verify(args.apr, src, dst)
        if j is None:
            ok = False
            continue
        rp = j.get("reproduction") or {}
        good = rc == 0 and j["verdict"]["rule"] == "reproduced" and rp.get("status") == "reproduced" \
            and j["forward_pass"] is False
        ok &= good
        print(f"{'OK  ' if good else 'FAIL'} llama.cpp {label}: exit {rc}, rule {j['verdict']['rule']}, "
              f"{rp.get('rebuilt')} tensors rebuilt, {rp.get('copied')} copied, imatrix {rp.get('imatrix')}")
        if not good:
            print("     " + j["verdict"]["reason"][:400])

    # one altered block: the byte after the block's scales in row 3 of blk.1.ffn_up
    bad = os.path.join(args.tmp, "vpeer-llama-Q4_K_M-altered.gguf")
    shutil.copyfile(dsts["Q4_K_M"], bad)
    off, rb, ttype = tensor_row_offset(bad, "blk.1.ffn_up.weight", 3)
    with open(bad, "r+b") as f:
        f.seek(off + 20)
        b = f.read(1)
        f.seek(off + 20)
        f.write(bytes([b[0] ^ 0x11]))
    rc, j = verify(args.apr, src, bad, "--ctx", "64", "--chunks", "1", "--limits", "synthetic")
    if j is None:
        return 1
    rp = j.get("reproduction") or {}
    fd = rp.get("first_diff") or {}
    good = rp.get("status") == "differs" and fd.get("tensor") == "blk.1.ffn_up.weight" and fd.get("row") == 3 \
        and rp.get("n_differ") == 1 and j["verdict"]["rule"] == "logits" and j["forward_pass"] is True
    ok &= good
    print(f"{'OK  ' if good else 'FAIL'} altered {ttype} block (blk.1.ffn_up.weight row 3): reproduction "
          f"{rp.get('status')}, first {fd.get('tensor')} row {fd.get('row')}, verdict "
          f"{'PASS' if j['verdict']['pass'] else 'FAIL'} by {j['verdict']['rule']}")
    if not good:
        print("     " + j["verdict"]["reason"][:400])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
