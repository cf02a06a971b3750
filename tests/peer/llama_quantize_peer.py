#!/usr/bin/env python3
"""Peer test: `apr quantize` against llama.cpp's own quantizer.

llama.cpp's quantizer (llama_model_quantize, the code behind llama-quantize)
is reached through the llama-cpp-python package. For a few small GGUF models
written here (F16, F32 with tied embeddings and rows that need fallbacks,
BF16), every file type in FTYPES is produced by both tools, and the outputs
must agree tensor for tensor: same order, same types, same bytes, and the
same metadata (apr's own apr.provenance.* keys aside). The imatrix path is
checked too: a legacy .dat file for apr, the same numbers for llama.cpp.

usage: llama_quantize_peer.py --apr PATH/TO/apr --tmp DIR
exit: 0 pass, 1 mismatch, 77 skipped (gguf, numpy or llama_cpp missing).
"""
import ctypes
import os
import struct
import subprocess
import sys

import peer_util

SKIP = 77

try:
    import numpy as np
    import gguf
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(SKIP)
try:
    import llama_cpp
except Exception as e:  # pragma: no cover - depends on the machine
    print(f"SKIP: llama_cpp (llama-cpp-python) is not importable: {e}")
    sys.exit(SKIP)

# llama_ftype values (llama.h)
FTYPES = {"Q4_K_M": 15, "Q6_K": 18, "Q8_0": 7, "Q5_K_M": 17, "Q4_K_S": 14, "Q5_K_S": 16,
          "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "IQ4_NL": 25, "IQ4_XS": 30}
# llama.cpp refuses Q2_K_S without an imatrix (tensor_requires_imatrix)
IMAT_ONLY = {"Q2_K_S": 21}
# the other models: the mixes whose rules depend on n_gqa (4 on bf16) or on fallbacks (ffn 800 on f32)
OTHER_TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "Q2_K", "Q3_K_M", "IQ4_NL", "IQ4_XS")
# only with an imatrix: the 32-block weighted quantizers (their own SIMD kernels in apr)
IMAT_FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9}


def f32_to_bf16_bits(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype(np.uint16)


def make_model(path, *, n_layer, hidden, n_head, n_kv, ffn, vocab, tied, dtype, seed):
    """A LLaMA GGUF llama.cpp can load: KVs, tiny tokenizer, random weights with outliers."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"peer-{os.path.basename(path)}")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hidden // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({"F32": 0, "F16": 1, "BF16": 32}[dtype])
    w.add_tokenizer_model("llama")
    toks = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    toks += [f"t{i}".encode() for i in range(vocab - len(toks))]
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(vocab - 259)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    hd = hidden // n_head

    def mat(rows, cols):
        a = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(1.0 / np.sqrt(cols))
        mask = rng.random((rows, cols)) < 0.002
        a[mask] *= np.float32(12.0)
        a[:, rng.integers(0, cols, size=2)] *= np.float32(4.0)  # outlier channels
        return a

    def add(name, a):
        if a.ndim == 1 or dtype == "F32":
            w.add_tensor(name, a.astype(np.float32))
        elif dtype == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, f32_to_bf16_bits(a), raw_shape=a.shape,
                         raw_dtype=gguf.GGMLQuantizationType.BF16)

    add("token_embd.weight", mat(vocab, hidden))
    add("output_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    if not tied:
        add("output.weight", mat(vocab, hidden))
    for l in range(n_layer):
        p = f"blk.{l}."
        add(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        add(p + "attn_q.weight", mat(n_head * hd, hidden))
        add(p + "attn_k.weight", mat(n_kv * hd, hidden))
        add(p + "attn_v.weight", mat(n_kv * hd, hidden))
        add(p + "attn_output.weight", mat(hidden, n_head * hd))
        add(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        add(p + "ffn_gate.weight", mat(ffn, hidden))
        add(p + "ffn_up.weight", mat(ffn, hidden))
        add(p + "ffn_down.weight", mat(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def imatrix_for(model_path, seed):
    """Random positive importance values per quantizable weight: legacy .dat
    bytes (with ncall 3, so values get divided) and the numbers llama-quantize
    would load from it."""
    rng = np.random.default_rng(seed)
    r = gguf.GGUFReader(model_path)
    entries = []
    for t in r.tensors:
        if len(t.shape) < 2 or "norm" in t.name:
            continue
        ne0 = int(t.shape[0])
        vals = (rng.random(ne0).astype(np.float32) * np.float32(5.0) + np.float32(0.01)).astype(np.float32)
        entries.append((t.name, vals))
    ncall = 3
    out = bytearray(struct.pack("<i", len(entries)))
    loaded = {}
    for name, vals in entries:
        nb = name.encode()
        out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, len(vals)) + vals.tobytes()
        loaded[name] = (vals / np.float32(ncall)).astype(np.float32)
    out += struct.pack("<ii", 10, 4) + b"peer"
    return bytes(out), loaded


def kv_overrides(items):
    """llama_model_kv_override array for (key, value) pairs (str or int), as
    the llama-quantize tool passes its quantize.imatrix.* records."""
    arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
    for i, (key, val) in enumerate(items):
        arr[i].key = key.encode()
        if isinstance(val, str):
            arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            arr[i].value.val_str = val.encode()[:127]
        else:
            arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            arr[i].value.val_i64 = val
    arr[len(items)].key = b""
    return arr


def llama_quantize(src, dst, ftype, *, pure=False, imatrix=None, overrides=None, threads=2, output_type=None,
                   embd_type=None, tensor_types=None, leave_output=False):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads
    p.pure = pure
    keep = []
    if output_type is not None:
        p.output_tensor_type = output_type
    if embd_type is not None:
        p.token_embedding_type = embd_type
    p.quantize_output_tensor = not leave_output
    if tensor_types:
        tt = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (pat, typ) in enumerate(tensor_types):
            pb = pat.encode()
            keep.append(pb)
            tt[i].pattern = pb
            tt[i].type = typ
        tt[len(tensor_types)].pattern = None
        keep.append(tt)
        p.tt_overrides = ctypes.cast(tt, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if overrides:
        ov = kv_overrides(overrides)
        keep.append(ov)
        p.kv_overrides = ctypes.cast(ov, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    if imatrix is not None:
        arr_t = llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1)
        arr = arr_t()
        for i, (name, vals) in enumerate(imatrix.items()):
            buf = (ctypes.c_float * len(vals))(*vals.tolist())
            keep.append(buf)
            arr[i].name = name.encode()
            arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
            arr[i].size = len(vals)
        arr[len(imatrix)].name = None
        keep.append(arr)
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {src}")


def field_value(f):
    return (tuple(int(t) for t in f.types), tuple(bytes(f.parts[i].tobytes()) for i in f.data))


def compare(ref_path, apr_path, label, whole_file=False):
    a, b = gguf.GGUFReader(ref_path), gguf.GGUFReader(apr_path)
    problems = []
    na = [t.name for t in a.tensors]
    nb = [t.name for t in b.tensors]
    if na != nb:
        problems.append(f"tensor order differs:\n  llama {na[:6]}...\n  apr   {nb[:6]}...")
    bm = {t.name: t for t in b.tensors}
    n_same = 0
    for t in a.tensors:
        u = bm.get(t.name)
        if u is None:
            problems.append(f"{t.name}: missing in apr's output")
            continue
        if t.tensor_type != u.tensor_type:
            problems.append(f"{t.name}: type {t.tensor_type.name} (llama) vs {u.tensor_type.name} (apr)")
            continue
        if list(t.shape) != list(u.shape):
            problems.append(f"{t.name}: shape {list(t.shape)} vs {list(u.shape)}")
            continue
        da, db = t.data.tobytes(), u.data.tobytes()
        if da != db:
            first = next(i for i in range(min(len(da), len(db))) if da[i] != db[i]) if len(da) == len(db) else -1
            problems.append(f"{t.name} ({t.tensor_type.name}): bytes differ (first at {first} of {len(da)})")
            continue
        n_same += 1
    fa = {k: f for k, f in a.fields.items() if not k.startswith("GGUF.")}
    fb = {k: f for k, f in b.fields.items() if not k.startswith("GGUF.") and not k.startswith("apr.provenance")}
    for k in fa:
        if k not in fb:
            problems.append(f"KV {k} missing in apr's output")
        elif field_value(fa[k]) != field_value(fb[k]):
            problems.append(f"KV {k} differs")
    for k in fb:
        if k not in fa:
            problems.append(f"KV {k} only in apr's output")
    ka = [k for k in a.fields if not k.startswith("GGUF.")]
    kb = [k for k in b.fields if not k.startswith("GGUF.") and not k.startswith("apr.provenance")]
    if ka != kb:
        problems.append(f"KV order differs:\n  llama {ka}\n  apr   {kb}")
    if whole_file:
        with open(ref_path, "rb") as f1, open(apr_path, "rb") as f2:
            if f1.read() != f2.read():
                problems.append("files are not byte-identical")
    status = "OK  " if not problems else "FAIL"
    print(f"{status} {label}: {n_same}/{len(a.tensors)} tensors identical{', whole file identical' if whole_file and not problems else ''}, types: "
          + ", ".join(sorted({t.tensor_type.name for t in a.tensors})))
    for p in problems[:12]:
        print("     " + p)
    return not problems


def run_apr(apr, src, dst, typ, extra=()):
    cmd = [apr, "quantize", src, dst, "--type", typ, "--threads", "2", "--quiet", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL apr: {' '.join(cmd)}\n{r.stderr}")
        return False
    return True


def options_peer(args, src):
    """llama-quantize's options, given to llama_model_quantize as the tool
    passes them (ggml type numbers, tensor-type patterns, KV overrides, a
    filtered imatrix with its entries_count) and to `apr quantize` as flags."""
    ok = True
    cases = [
        ("options", ["--output-tensor-type", "q8_0", "--token-embedding-type", "q5_k", "--tensor-type", "attn_k=q5_0",
                     "--tensor-type", r"blk\.1\.ffn_(up|gate)=iq4_nl", "--override-kv", "general.name=str:opt",
                     "--override-kv", "test.n=int:7"],
         dict(output_type=8, embd_type=13, tensor_types=[("attn_k", 6), (r"blk\.1\.ffn_(up|gate)", 20)],
              overrides=[("general.name", "opt"), ("test.n", 7)])),
        ("leave-output", ["--leave-output-tensor"], dict(leave_output=True)),
    ]
    for label, flags, kw in cases:
        ref = os.path.join(args.tmp, f"llama-f16-{label}.gguf")
        out = os.path.join(args.tmp, f"apr-f16-{label}.gguf")
        llama_quantize(src, ref, 15, **kw)
        ok &= run_apr(args.apr, src, out, "Q4_K_M", [*flags, "--no-provenance"]) and \
            compare(ref, out, f"f16 Q4_K_M {' '.join(flags)}", whole_file=True)
    # --include-weights: only the attn entries reach the quantizer (and entries_count says so)
    dat, loaded = imatrix_for(src, 11)
    imf = os.path.join(args.tmp, "peer-opt.imatrix.dat")
    with open(imf, "wb") as f:
        f.write(dat)
    for flag, keep in (("--include-weights", lambda n: "attn" in n), ("--exclude-weights", lambda n: "attn" not in n)):
        sub = {k: v for k, v in loaded.items() if keep(k)}
        tool_kvs = [("quantize.imatrix.file", imf), ("quantize.imatrix.dataset", "peer"),
                    ("quantize.imatrix.entries_count", len(sub)), ("quantize.imatrix.chunks_count", 10)]
        ref = os.path.join(args.tmp, "llama-f16-imat-filter.gguf")
        out = os.path.join(args.tmp, "apr-f16-imat-filter.gguf")
        llama_quantize(src, ref, 15, imatrix=sub, overrides=tool_kvs)
        ok &= run_apr(args.apr, src, out, "Q4_K_M", ["--imatrix", imf, flag, "attn", "--no-provenance"]) and \
            compare(ref, out, f"f16 Q4_K_M --imatrix {flag} attn", whole_file=True)
    return ok


def main():
    args = peer_util.apr_tool_args()
    if args is None:
        return 1
    print(f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}")
    models = {
        "f16": dict(n_layer=8, hidden=256, n_head=4, n_kv=2, ffn=768, vocab=512, tied=False, dtype="F16", seed=1),
        "f32-tied-fallback": dict(n_layer=4, hidden=256, n_head=4, n_kv=4, ffn=800, vocab=320, tied=True,
                                  dtype="F32", seed=2),
        "bf16": dict(n_layer=4, hidden=512, n_head=8, n_kv=2, ffn=1024, vocab=300, tied=False, dtype="BF16", seed=3),
    }
    ok = True
    for mname, cfg in models.items():
        src = os.path.join(args.tmp, f"peer-{mname}.gguf")
        make_model(src, **cfg)
        types = FTYPES if mname == "f16" else {k: FTYPES[k] for k in OTHER_TYPES}
        for typ, ft in types.items():
            ref = os.path.join(args.tmp, f"llama-{mname}-{typ}.gguf")
            out = os.path.join(args.tmp, f"apr-{mname}-{typ}.gguf")
            llama_quantize(src, ref, ft)
            # without apr's provenance KVs the whole file must be llama.cpp's, byte for byte
            noprov = mname == "f16"
            ok &= run_apr(args.apr, src, out, typ, ["--no-provenance"] if noprov else []) and \
                compare(ref, out, f"{mname} {typ}", whole_file=noprov)
        # --pure and the imatrix paths on the first model only (they do not depend on the dtype)
        if mname == "f16":
            ref = os.path.join(args.tmp, "llama-f16-Q4_K_M-pure.gguf")
            out = os.path.join(args.tmp, "apr-f16-Q4_K_M-pure.gguf")
            llama_quantize(src, ref, 15, pure=True)
            ok &= run_apr(args.apr, src, out, "Q4_K_M", ["--pure"]) and compare(ref, out, f"{mname} Q4_K_M --pure")
            dat, loaded = imatrix_for(src, 11)
            imf = os.path.join(args.tmp, "peer.imatrix.dat")
            with open(imf, "wb") as f:
                f.write(dat)
            # Q2_K_S without one: refused, as llama.cpp refuses it
            r = subprocess.run([args.apr, "quantize", src, os.path.join(args.tmp, "x.gguf"), "--type", "Q2_K_S",
                                "--quiet"], capture_output=True, text=True)
            refused = r.returncode == 2 and "importance matrix" in r.stderr
            print(f"{'OK  ' if refused else 'FAIL'} f16 Q2_K_S without an imatrix refused (exit {r.returncode})")
            ok &= refused
            for typ in ("Q4_K_M", "Q6_K", "Q5_K_S", "Q8_0", *IMAT_FTYPES, *IMAT_ONLY, "Q3_K_M", "IQ4_XS"):
                ref = os.path.join(args.tmp, f"llama-f16-{typ}-imat.gguf")
                out = os.path.join(args.tmp, f"apr-f16-{typ}-imat.gguf")
                # what the llama-quantize tool adds when it loads this file
                tool_kvs = [("quantize.imatrix.file", imf), ("quantize.imatrix.dataset", "peer"),
                            ("quantize.imatrix.entries_count", len(loaded)), ("quantize.imatrix.chunks_count", 10)]
                llama_quantize(src, ref, {**FTYPES, **IMAT_FTYPES, **IMAT_ONLY}[typ], imatrix=loaded,
                               overrides=tool_kvs)
                ok &= run_apr(args.apr, src, out, typ, ["--imatrix", imf, "--no-provenance"]) and \
                    compare(ref, out, f"{mname} {typ} --imatrix", whole_file=True)
    ok &= options_peer(args, os.path.join(args.tmp, "peer-f16.gguf"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
