#!/usr/bin/env python3
"""Peer check: split GGUFs written by `apr convert --split-max-tensors N`.

usage: gguf_split_peer.py APR_BIN WORKDIR

1. The layout equals what the `gguf` package's splitter (gguf-py's
   GGUFWriter(split_max_tensors=N), the one convert_hf_to_gguf.py
   --split-max-tensors uses; llama-cpp-python ships no gguf-split binary)
   makes of the same model: the same file names, the same tensors in each
   split (names, order, types, shapes, bytes), the same split.no,
   split.count and split.tensors.count in every split, the model's KVs in
   the first split only.
2. llama.cpp (llama-cpp-python) loads the first split and decodes the same
   greedy tokens as from the unsplit GGUF.

Exit 0 pass, 1 mismatch, 77 when gguf or llama_cpp cannot be imported (skip).
"""
import os
import subprocess
import sys

import peer_util

try:
    import gguf
    import llama_cpp
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

N = 7


def apr(apr_bin, *args):
    r = subprocess.run([apr_bin, *args], capture_output=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode(errors="replace"))
        raise SystemExit(f"apr {' '.join(args)} failed with {r.returncode}")


def split_kvs(reader):
    out = {}
    for k in ("split.no", "split.count", "split.tensors.count"):
        f = reader.fields.get(k)
        out[k] = None if f is None else int(f.parts[f.data[0]][0])
    return out


def reference_split(whole, prefix):
    """gguf-py's splitter fed the tensors of the unsplit file."""
    r = gguf.GGUFReader(whole)
    arch = r.fields["general.architecture"]
    w = gguf.GGUFWriter(prefix + ".gguf", bytes(arch.parts[arch.data[0]]).decode(), split_max_tensors=N)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=list(reversed([int(x) for x in t.shape])), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy(path, n=24):
    return peer_util.llama_greedy(llama_cpp, path, "Once upon a time", n)[0]


def main():
    apr_bin, work = sys.argv[1], sys.argv[2]
    model = os.path.join(work, "hf")
    whole = os.path.join(work, "whole.gguf")
    ours, ref = os.path.join(work, "ours"), os.path.join(work, "ref")
    os.makedirs(ours, exist_ok=True)
    os.makedirs(ref, exist_ok=True)
    apr(apr_bin, "synth", model, "--preset", "tiny-llama", "--quiet")
    apr(apr_bin, "convert", model, whole, "--quiet")
    apr(apr_bin, "convert", model, os.path.join(ours, "m.gguf"), "--split-max-tensors", str(N), "--quiet")
    reference_split(whole, os.path.join(ref, "m"))
    names_ours, names_ref = sorted(os.listdir(ours)), sorted(os.listdir(ref))
    ok = True
    if names_ours != names_ref:
        print(f"FAIL: split files {names_ours} != gguf-py's {names_ref}")
        return 1
    n_model_kvs = len(gguf.GGUFReader(whole).fields)
    for i, name in enumerate(names_ours):
        a, b = gguf.GGUFReader(os.path.join(ours, name)), gguf.GGUFReader(os.path.join(ref, name))
        ka, kb = split_kvs(a), split_kvs(b)
        if ka != kb:
            print(f"FAIL: {name}: split keys {ka} != gguf-py's {kb}")
            ok = False
        ta = [(t.name, int(t.tensor_type), list(t.shape), t.data.tobytes()) for t in a.tensors]
        tb = [(t.name, int(t.tensor_type), list(t.shape), t.data.tobytes()) for t in b.tensors]
        if ta != tb:
            print(f"FAIL: {name}: tensors differ: ours {[x[0] for x in ta]}, gguf-py {[x[0] for x in tb]}")
            ok = False
        # every model KV in the first split plus the 3 split keys, only the split keys after
        # (GGUFReader's fields also count 3 header fields: version, tensor and KV counts)
        want = n_model_kvs + 3 if i == 0 else 3 + 3
        if len(a.fields) != want:
            print(f"FAIL: {name}: {len(a.fields)} fields, expected {want}")
            ok = False
        print(f"{name}: {len(ta)} tensors, split keys {ka}: {'same as gguf-py' if ta == tb and ka == kb else 'DIFFER'}")
    g_whole, g_split = greedy(whole), greedy(os.path.join(ours, names_ours[0]))
    print(f"llama.cpp greedy: unsplit {g_whole[:8]}..., split {g_split[:8]}...")
    if not g_whole or g_whole != g_split:
        print("FAIL: llama.cpp decodes the split GGUF differently")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
