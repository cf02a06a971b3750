#!/usr/bin/env python3
"""Peer check of `apr imatrix` against llama.cpp (llama-cpp-python's libllama)
and gguf-py.

usage: imatrix_peer.py APR_BIN MODEL.gguf TEXT TMPDIR [--ctx N] [--chunks N]

TEXT is cut after the first newline at or past half its length: the first
part calibrates, the second is the held-out text of step 4.

1. `apr imatrix MODEL --text CALIB` writes the GGUF and the legacy .dat forms.
   gguf-py reads the GGUF: the KVs llama-imatrix's save_imatrix writes
   (general.type = imatrix, imatrix.datasets, imatrix.chunk_count,
   imatrix.chunk_size: llama-quantize's load_imatrix refuses a GGUF without the
   last three), NAME.in_sum2 (f32, ne [n_cols, 1]) and NAME.counts (f32,
   ne [1, 1]) per weight, in sorted name order. The .dat, read as
   common_imatrix_load_legacy reads it, gives the same values as the GGUF
   once each is reduced as llama-quantize reduces it (sum / count, resp.
   value / ncall).
2. The same statistics computed by llama.cpp itself: its graph evaluated
   with llama-imatrix's eval callback (collect_imatrix: every MUL_MAT of a
   blk.* weight with >= 16 F32 input rows, sum of x^2 per column), on the
   same chunks (llama-imatrix's compute_imatrix: BOS replaces each chunk's
   first token when the vocabulary adds one, all logits requested so the
   last layer keeps every row). Same entry names and counts; the values
   correlate (Pearson, per entry and over all of them; exact equality is not
   expected: the forward passes round differently).
3. llama.cpp's quantizer (llama_model_quantize, Q2_K) given apr's GGUF
   imatrix as llama-quantize's load_imatrix reduces it writes the same
   tensors as `apr quantize --imatrix` with that file.
4. The gain, measured by llama.cpp's forward pass: held-out mean KLD of
   `apr quantize --type IQ4_XS` (a type apr's forward pass cannot run) with
   apr's imatrix is lower than without it (llama-perplexity --kl-divergence's
   scoring: chunks of --ctx, second half of each). Q2_K is measured and
   printed, not asserted: on the tinycoder fixture llama.cpp's Q2_K imatrix
   quantizer does not lower it.

Exit 0 pass, 1 mismatch, 77 when a peer package cannot be imported (skip).
"""
import ctypes
import os
import subprocess
import sys

try:
    import numpy as np
    import gguf
    import llama_cpp
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

MIN_CORR = 0.999  # per entry; llama.cpp's activations differ from apr's in the last bits only
KLD_CHUNKS = 16


@llama_cpp.llama_log_callback
def _quiet(level, text, user):
    pass


llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"FAIL {' '.join(cmd[:3])}... exited {r.returncode}")
    return r


# ---------------------------------------------------------------- reading apr's files


def read_gguf_imatrix(path):
    """(kvs, {name: (sums, count)}, tensor list) as gguf-py sees them."""
    r = gguf.GGUFReader(path)
    kvs = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = [(t.name, [int(x) for x in t.shape], t.tensor_type) for t in r.tensors]
    data = {t.name: np.asarray(t.data, dtype=np.float32).ravel() for t in r.tensors}
    entries = {}
    for name, _, _ in tensors:
        if name.endswith(".in_sum2"):
            stem = name[: -len(".in_sum2")]
            entries[stem] = (data[name], float(data[stem + ".counts"][0]))
    return kvs, entries, tensors


def read_dat_imatrix(path):
    """common_imatrix_load_legacy, then llama-quantize's value / ncall."""
    b = open(path, "rb").read()
    off = 0

    def i32():
        nonlocal off
        v = int.from_bytes(b[off: off + 4], "little", signed=True)
        off += 4
        return v

    n = i32()
    out = {}
    for _ in range(n):
        ln = i32()
        name = b[off: off + ln].decode()
        off += ln
        ncall = i32()
        nval = i32()
        vals = np.frombuffer(b, dtype="<f4", count=nval, offset=off).copy()
        off += 4 * nval
        out[name] = vals / ncall if ncall > 0 else vals
    chunks = i32()
    ln = i32()
    dataset = b[off: off + ln].decode()
    off += ln
    return out, chunks, dataset, off == len(b)


def reduce_gguf(entries):
    """llama-quantize's load_imatrix for a GGUF: sums / count (1 where count is 0)."""
    return {k: (s / np.float32(c) if c > 0 else np.ones_like(s)) for k, (s, c) in entries.items()}


# ---------------------------------------------------------------- llama.cpp's collector


class GgmlTensor(ctypes.Structure):
    pass


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4),
    ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * 16),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * 10),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def ggml_op_mul_mat():
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    for i in range(200):
        if lib.ggml_op_name(i) == b"MUL_MAT":
            return i
    raise SystemExit("FAIL: no MUL_MAT op in libggml-base")


def llama_imatrix(model_path, text, n_ctx, n_chunks):
    """{name: (sums f64, count)} as llama-imatrix's collect_imatrix gathers them."""
    MUL_MAT = ggml_op_mul_mat()
    stats = {}

    def collect(t_p, ask, _user):
        t = ctypes.cast(t_p, ctypes.POINTER(GgmlTensor)).contents
        if t.op != MUL_MAT:
            return False
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = src0.name.decode()
        if "#" in name:
            name = name.split("#")[1]
        if src1.ne[1] < 16 or src1.type != 0 or not name.startswith("blk."):
            return False
        if ask:
            return True
        ne0, rows = src1.ne[0], src1.ne[1] * src1.ne[2] * src1.ne[3]
        assert src1.nb[0] == 4 and src1.nb[1] == 4 * ne0 and src0.ne[2] * src0.ne[3] == 1
        x = np.ctypeslib.as_array(ctypes.cast(src1.data, ctypes.POINTER(ctypes.c_float)), shape=(rows, ne0))
        s, c = stats.get(name, (np.zeros(ne0, dtype=np.float64), 0))
        stats[name] = (s + (x.astype(np.float64) ** 2).sum(axis=0), c + rows)
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(collect)
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), mp)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
    cp.n_threads = cp.n_threads_batch = 2
    cp.cb_eval = cb
    cp.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model, cp)
    vocab = llama_cpp.llama_model_get_vocab(model)
    raw = text.encode()
    buf = (llama_cpp.llama_token * (len(raw) + 16))()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
    tokens = list(buf[:n])
    add_bos = llama_cpp.llama_vocab_get_add_bos(vocab)
    bos = llama_cpp.llama_vocab_bos(vocab)
    chunks = min(n_chunks, n // n_ctx) if n_chunks else n // n_ctx
    batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
    for i in range(chunks):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        chunk = tokens[i * n_ctx: (i + 1) * n_ctx]
        if add_bos:
            chunk[0] = bos
        batch.n_tokens = n_ctx
        for k, tok in enumerate(chunk):
            batch.token[k] = tok
            batch.pos[k] = k
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = 0
            batch.logits[k] = True  # llama-imatrix asks for every output
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("FAIL llama_decode")
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return stats, n, chunks


# ---------------------------------------------------------------- llama.cpp's quantizer with the file


def llama_quantize_with(src, dst, ftype, imatrix):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    arr_t = llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1)
    arr = arr_t()
    keep = []
    for i, (name, vals) in enumerate(sorted(imatrix.items())):
        v = np.ascontiguousarray(vals, dtype=np.float32)
        keep.append((name.encode(), v))
        arr[i].name = keep[-1][0]
        arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = v.size
    arr[len(imatrix)].name = None
    p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    sys.stdout.flush()
    saved = os.dup(1)  # its per-tensor lines go to stdout, past the log callback
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    if rc != 0:
        raise SystemExit(f"FAIL llama_model_quantize returned {rc}")


def tensor_bytes(path):
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type, bytes(np.asarray(t.data).tobytes())) for t in r.tensors}


def split_text(path, tmp):
    t = open(path, "rb").read()
    cut = t.index(b"\n", len(t) // 2) + 1
    a, b = os.path.join(tmp, "calib.txt"), os.path.join(tmp, "heldout.txt")
    open(a, "wb").write(t[:cut])
    open(b, "wb").write(t[cut:])
    return a, b


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def chunk_logprobs(path, tokens, n_ctx):
    """llama.cpp's log-probabilities at the scored positions of every chunk."""
    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False,
                          type_k=0, type_v=0)
    first, out = n_ctx // 2, []
    for i in range(min(KLD_CHUNKS, len(tokens) // n_ctx)):
        llm.reset()
        llm.eval(tokens[i * n_ctx: (i + 1) * n_ctx])
        out.append(log_softmax(np.array(llm.scores[first: n_ctx - 1], dtype=np.float64)))
    return np.concatenate(out)


def heldout_kld(apr, model, im, text_path, n_ctx, tmp):
    """{type: (KLD without, KLD with apr's imatrix)} by llama.cpp's forward pass."""
    vocab = llama_cpp.Llama(model, vocab_only=True, verbose=False)
    tokens = vocab.tokenize(open(text_path, "rb").read(), add_bos=vocab.metadata.get(
        "tokenizer.ggml.add_bos_token", "false") == "true")
    ref = chunk_logprobs(model, tokens, n_ctx)
    p = np.exp(ref)
    res = {}
    for t in ("IQ4_XS", "Q2_K"):
        kl = []
        for extra in ([], ["--imatrix", im]):
            q = os.path.join(tmp, f"kld-{t}.gguf")
            run([apr, "quantize", model, q, "--type", t, "--threads", "2", *extra])
            kl.append(float((p * (ref - chunk_logprobs(q, tokens, n_ctx))).sum(axis=1).mean()))
            os.remove(q)
        res[t] = tuple(kl)
    return res


def main():
    args = sys.argv[1:]
    opts = {"--ctx": 256, "--chunks": 0}
    pos = []
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = int(args[i + 1])
            i += 2
        else:
            pos.append(args[i])
            i += 1
    if len(pos) != 4:
        print(__doc__)
        return 2
    apr, model, full_text, tmp = pos
    n_ctx, n_chunks = opts["--ctx"], opts["--chunks"]
    os.makedirs(tmp, exist_ok=True)
    text_path, heldout = split_text(full_text, tmp)
    ok = True
    gg, dat = os.path.join(tmp, "peer.imatrix.gguf"), os.path.join(tmp, "peer.imatrix.dat")
    common = ["--text", text_path, "--ctx", str(n_ctx), "--threads", "2"] + \
        (["--chunks", str(n_chunks)] if n_chunks else [])
    run([apr, "imatrix", model, "-o", gg, *common])
    run([apr, "imatrix", model, "-o", dat, *common])

    # 1. the files as llama.cpp's readers see them
    kvs, entries, tensors = read_gguf_imatrix(gg)
    want_keys = {"general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"}
    if set(kvs) != want_keys or kvs["general.type"] != "imatrix" or kvs["imatrix.datasets"] != [text_path] or \
            kvs["imatrix.chunk_size"] != n_ctx:
        print(f"FAIL GGUF imatrix KVs: {kvs}")
        ok = False
    names = [t[0] for t in tensors]
    stems = sorted(entries)
    if names != [s + suf for s in stems for suf in (".in_sum2", ".counts")]:
        print(f"FAIL tensor order/names: {names[:6]}...")
        ok = False
    for name, shape, ttype in tensors:
        want = [1, 1] if name.endswith(".counts") else [len(entries[name[: -len('.in_sum2')]][0]), 1]
        if ttype != gguf.GGMLQuantizationType.F32 or shape != want:
            print(f"FAIL {name}: {ttype} {shape}, want F32 {want}")
            ok = False
    dat_vals, dat_chunks, dat_ds, dat_whole = read_dat_imatrix(dat)
    red = reduce_gguf(entries)
    same = set(dat_vals) == set(red) and all(np.allclose(dat_vals[k], red[k], rtol=1e-5, atol=0) for k in red)
    if not same or dat_chunks != kvs["imatrix.chunk_count"] or dat_ds != text_path or not dat_whole:
        print(f"FAIL legacy .dat disagrees with the GGUF (chunks {dat_chunks}, dataset {dat_ds!r})")
        ok = False
    print(f"{'ok ' if ok else 'FAIL'} apr's GGUF imatrix: {len(entries)} entries, KVs {sorted(kvs)}; "
          f".dat equals it after llama-quantize's reduction")

    # 2. llama.cpp's own statistics
    text = open(text_path, encoding="utf-8").read()
    ref, n_tok, chunks = llama_imatrix(model, text, n_ctx, n_chunks)
    if set(ref) != set(entries):
        print(f"FAIL entry names: llama.cpp only {sorted(set(ref) - set(entries))[:4]}, "
              f"apr only {sorted(set(entries) - set(ref))[:4]}")
        ok = False
    if kvs["imatrix.chunk_count"] != chunks:
        print(f"FAIL chunk_count {kvs['imatrix.chunk_count']}, llama.cpp's chunks {chunks}")
        ok = False
    worst, allx, ally = 1.0, [], []
    for k in sorted(set(ref) & set(entries)):
        s_ref, c_ref = ref[k]
        s_apr, c_apr = entries[k]
        if c_ref != c_apr:
            print(f"FAIL {k}: count {c_apr}, llama.cpp {c_ref}")
            ok = False
        a, b = s_apr.astype(np.float64) / c_apr, s_ref / c_ref
        r = float(np.corrcoef(a, b)[0, 1])
        worst = min(worst, r)
        allx.append(a)
        ally.append(b)
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        if r < MIN_CORR:
            print(f"FAIL {k}: correlation {r:.6f} < {MIN_CORR} (max rel diff {rel:.3g})")
            ok = False
    overall = float(np.corrcoef(np.concatenate(allx), np.concatenate(ally))[0, 1])
    rel_all = float(max(np.abs(x - y).max() / np.abs(y).max() for x, y in zip(allx, ally)))
    print(f"{'ok ' if worst >= MIN_CORR else 'FAIL'} vs llama.cpp's collector ({n_tok} tokens, {chunks} chunks of "
          f"{n_ctx}): correlation overall {overall:.7f}, worst entry {worst:.7f}, max relative diff {rel_all:.3g}")

    # 3. llama.cpp's quantizer given apr's file
    ref_q, apr_q = os.path.join(tmp, "peer-imat-ref.gguf"), os.path.join(tmp, "peer-imat-apr.gguf")
    llama_quantize_with(model, ref_q, 10, red)  # LLAMA_FTYPE_MOSTLY_Q2_K
    run([apr, "quantize", model, apr_q, "--type", "Q2_K", "--imatrix", gg, "--threads", "2"])
    tr, ta = tensor_bytes(ref_q), tensor_bytes(apr_q)
    diff = [k for k in tr if tr[k] != ta.get(k)]
    if diff or set(tr) != set(ta):
        print(f"FAIL Q2_K with apr's imatrix: {len(diff)} tensors differ from llama.cpp's ({diff[:3]})")
        ok = False
    else:
        print(f"ok  Q2_K with apr's imatrix: all {len(tr)} tensors byte-identical to llama_model_quantize's")

    # 4. the gain, by llama.cpp's forward pass
    res = heldout_kld(apr, model, gg, heldout, n_ctx, tmp)
    for t, (k0, k1) in res.items():
        asserted = t == "IQ4_XS"
        good = k1 < k0 or not asserted
        ok &= good
        print(f"{'ok ' if good else 'FAIL'} {t:6s} held-out mean KLD by llama.cpp ({KLD_CHUNKS} chunks of {n_ctx}): "
              f"{k0:.6f} without an imatrix, {k1:.6f} with apr's ({100 * (k1 / k0 - 1):+.1f}%)"
              f"{'' if asserted else ', not asserted'}")
    for f in (ref_q, apr_q, gg, dat, text_path, heldout):
        os.remove(f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
