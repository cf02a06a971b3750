#!/usr/bin/env python3
"""families_peer.py APR_BIN LLAMA_CPP_SRC TOKENIZER_DIR WORK [FAMILY...]

Per model family, against implementations nobody here wrote:
1. transformers builds a tiny random model (norm weights and biases perturbed
   so they matter) and saves it (safetensors) with the byte-level BPE
   tokenizer of TOKENIZER_DIR; cases cover both config dialects (as saved by
   transformers 5: rope_parameters, layer_types; and rewritten the 4.x way:
   top-level rope_theta / rope_scaling) and F32 and BF16 checkpoints.
2. llama.cpp's convert_hf_to_gguf.py (LLAMA_CPP_SRC) converts it, and
   `apr convert` converts it: the two GGUFs must have the same tensors (names,
   types, shapes, bytes) and the same KVs, except ALLOWED_KV below.
3. apr's logits on the HF directory and on its GGUF match transformers'
   float32 logits, relative max diff (max |d| / max |ref|) <= 1e-4, over
   >= 512 positions (so llama3 and yarn rope scaling show).
4. F32: apr's GGUF -> safetensors loads in transformers with bit-identical
   logits (llama3 rope scaling: apr refuses to write HF, see hfmeta.c).
5. llama.cpp (llama-cpp-python) on apr's GGUF matches transformers: <= 1e-4
   for F32; <= 1e-2 for BF16, where ggml's matmul rounds the activations to
   BF16 (apr and transformers compute in f32); GeGLU families looser (ggml's
   GELU table); windows llama.cpp ignores compared before them.
6. F32: HF -> APR -> GGUF equals llama.cpp's GGUF too, apr runs the APR, and
   apr quantize Q4_K_M equals llama_model_quantize's byte for byte.

The tokenizer's pre-tokenizer hash is unknown to the converter (as for the
tinycoder fixture), so get_vocab_base_pre is patched to name it "qwen2" (its
regex is Qwen2's), which is what apr names it from the regex.

Exit 0 pass, 1 mismatch, 77 when a package is missing (skip).
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
    import transformers
    import gguf
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4
TOL_LLAMA_CPP = {"f32": 1e-4, "bf16": 1e-2}  # ggml rounds activations to BF16 for BF16 weights
# ggml's CPU GELU rounds its input to F16 and reads a table (ggml-cpu/vec.h,
# GGML_GELU_FP16): GeGLU families agree with transformers to ~4e-4 there.
TOL_LLAMA_CPP_GELU = {"f32": 1e-3, "bf16": 2e-2}  # BF16: both roundings (gemma3 measured 1.0e-2)
N_POS = 520

# KVs that llama.cpp's converter writes and apr does not, none touching the
# computation: file-level bookkeeping (file_type, quantization_version), the
# metadata heuristics (size_label, type, the title-cased directory name), and
# add_bos/add_eos false, which apr's reader assumes for a gpt2 vocab.
ALLOWED_KV = {"general.file_type", "general.quantization_version", "general.size_label", "general.type",
              "general.name", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}

COMMON = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
              rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=2045, eos_token_id=2045)

FAMILIES = {
    # Llama 3.x: llama3 rope scaling, original context 64 so that the three
    # frequency bands (kept, scaled, smoothed) all occur at head_dim 16
    "llama3": ("LlamaConfig", "LlamaForCausalLM",
               dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64})),
    # yarn (Qwen2, NEOX rope): original context 128 of the 1024 (factor 8),
    # head_dim 32 and base 10000 so that the correction range is pairs 0..6
    # of 16 (kept, blended and scaled pairs all occur); default betas and
    # attention factor, which are all llama.cpp implements
    "qwen2-yarn": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                         "original_max_position_embeddings": 128},
                        num_attention_heads=2, num_key_value_heads=1)),
    # yarn (Llama, NORM rope, Q/K permuted) with the optional parameters
    # transformers reads: betas 8 / 2 (range pairs 2..6) and an attention
    # factor of 1 instead of 1 + 0.1 ln 4. llama.cpp's loader reads none of
    # rope.scaling.yarn_* for llama (LLAMA_YARN_IGNORES_KVS below)
    "llama-yarn": ("LlamaConfig", "LlamaForCausalLM",
                   dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                         "original_max_position_embeddings": 256, "beta_fast": 8.0,
                                         "beta_slow": 2.0, "attention_factor": 1.0},
                        num_attention_heads=2, num_key_value_heads=1)),
    # Mistral: a sliding window shorter than the prompt, so that it shows
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, sliding_window=128,
                     head_dim=16)),
    # Qwen3: q_norm / k_norm, head_dim 32 != hidden / heads
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, head_dim=32)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True)),
    # Gemma 2: GeGLU, norms 1 + w, post norms, soft-capped scores (a small cap
    # so that it bites) and logits, even layers sliding with a window shorter
    # than the prompt; query_pre_attn_scalar = head_dim (llama.cpp's scale)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, head_dim=16,
                    query_pre_attn_scalar=16, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                    sliding_window=128, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
                    bos_token_id=2, eos_token_id=1, pad_token_id=0)),
    # Gemma 3: Gemma 2 plus q_norm / k_norm, six layers (five sliding, one
    # full: llama.cpp's pattern), the sliding layers' own rope base, linear
    # scaling on the full layer only; no score capping, no logit capping
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "linear", "factor": 4.0,
                                                        "rope_theta": 1000000.0}},
                    num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16, sliding_window=128,
                    final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True,
                    hidden_activation="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1, pad_token_id=0)),
    # Phi-3: fused qkv_proj and gate_up_proj, a window shorter than the prompt
    # on every layer (llama.cpp disables Phi's window: compared before it)
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
                  sliding_window=128, original_max_position_embeddings=1024, bos_token_id=2, eos_token_id=1,
                  pad_token_id=0)),
}

# Families whose converter reads a SentencePiece tokenizer.model (trained
# here on the held-out text; vocab_size = its size, ids as Gemma's).
SPM_FAMILIES = {"gemma2", "gemma3", "phi3"}
# Families whose HF norm weights are w for a multiplier 1 + w: perturbed
# around 0 instead of 1.
OFFSET_NORM_FAMILIES = {"gemma2", "gemma3"}
GELU_FAMILIES = {"gemma2", "gemma3"}


def log(*a):
    print(*a, flush=True)


def perturb(model, norm_base=1.0):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norms and biases: away from 1 / 0 so that they matter
                base = norm_base if "norm" in name else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def to_4x_dialect(d):
    """Rewrite a transformers 5 config.json the way transformers 4.x wrote it."""
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    rp = c.pop("rope_parameters", None) or {}
    c.pop("layer_types", None)
    if "full_attention" in rp:  # Gemma 3: the 4.x names of its two ropes
        full, c["rope_local_base_freq"] = dict(rp["full_attention"]), rp["sliding_attention"]["rope_theta"]
        c.pop("_sliding_window_pattern", None)
        c["sliding_window_pattern"] = 6
        rp = full
    c["rope_theta"] = rp.pop("rope_theta", 10000.0)
    if rp.get("rope_type", "default") != "default":
        c["rope_scaling"] = rp
    else:
        c["rope_scaling"] = None
    c["torch_dtype"] = c.pop("dtype", "float32")
    c["transformers_version"] = "4.46.0"
    json.dump(c, open(p, "w"), indent=2)


def train_spm(tok_dir, work):
    """A SentencePiece model (BPE, byte fallback) with Gemma's special ids."""
    import sentencepiece as spm
    prefix = os.path.join(work, "spm")
    if not os.path.exists(prefix + ".model"):
        spm.SentencePieceTrainer.train(input=os.path.join(tok_dir, "heldout.py"), model_prefix=prefix,
                                       vocab_size=1024, model_type="bpe", byte_fallback=True,
                                       pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2)
    return prefix + ".model", spm.SentencePieceProcessor(model_file=prefix + ".model").vocab_size()


def build(fam, dialect, dtype, tok_dir, out):
    cfg_cls, model_cls, extra = FAMILIES[fam]
    torch.manual_seed(1234)
    kw = dict(COMMON)
    kw.update(extra)
    if fam in SPM_FAMILIES:
        sp_model, kw["vocab_size"] = train_spm(tok_dir, os.path.dirname(os.path.dirname(out)))
    cfg = getattr(transformers, cfg_cls)(**kw)
    model = getattr(transformers, model_cls)(cfg).to(torch.float32).eval()
    perturb(model, 0.0 if fam in OFFSET_NORM_FAMILIES else 1.0)
    save = model if dtype == "f32" else model.to(torch.bfloat16)
    save.save_pretrained(out)
    if fam in SPM_FAMILIES:
        shutil.copy(sp_model, os.path.join(out, "tokenizer.model"))
        return_dialect(dialect, out)
        return
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), out)
    return_dialect(dialect, out)


def return_dialect(dialect, out):
    if dialect == "4x":
        to_4x_dialect(out)


def hf_logits(d, ids):
    # eager attention: the reference implementation (Gemma 2's soft-capping
    # is not in every other kernel)
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def run(*cmd):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with {r.returncode}")
    return r.stdout


def llama_cpp_convert(src, d, out, outtype):
    # the script itself as __main__, with the patched module already imported
    code = (
        "import sys, runpy; src = sys.argv[1]; sys.path.insert(0, src); sys.path.insert(1, src + '/gguf-py');"
        "import conversion.base as b; b.TextModel.get_vocab_base_pre = lambda self, tok: 'qwen2';"
        "sys.argv = [src + '/convert_hf_to_gguf.py'] + sys.argv[2:];"
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    run(sys.executable, "-c", code, src, d, "--outfile", out, "--outtype", outtype)


# Per family, KVs only apr writes, and why:
#   mistral: llama.attention.sliding_window -- llama.cpp's converter drops the
#   window, so llama.cpp computes full attention past it; transformers does not.
APR_ONLY_KV = {"mistral": {"llama.attention.sliding_window"}}
# Families whose window llama.cpp ignores: its logits are compared over the
# first window's positions only.
WINDOW_IGNORED_BY_LLAMA_CPP = {"mistral": 128, "phi3": 128}


# Families whose GGUF holds rope.scaling.yarn_* KVs that llama.cpp's loader
# does not read (it uses betas 32 / 1 and 1 + 0.1 ln factor whatever the file
# says; src/llama-model.cpp reads them only for grok and mistral3): llama.cpp
# runs with the betas passed as context parameters, and its attention factor
# (which a context parameter cannot override either: llama_context
# recomputes it for yarn) makes the logits differ; measured and logged, not
# compared.
LLAMA_YARN_IGNORES_KVS = {"llama-yarn": dict(yarn_beta_fast=8.0, yarn_beta_slow=2.0)}


def compare_gguf(ours, theirs, fam):
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    bad = []
    fa = {k: f for k, f in a.fields.items() if not k.startswith("GGUF.")}
    fb = {k: f for k, f in b.fields.items() if not k.startswith("GGUF.")}
    for k in sorted(set(fa) | set(fb)):
        if k in ALLOWED_KV or k.startswith("apr.provenance."):
            continue
        if k in APR_ONLY_KV.get(fam, ()) and k in fa and k not in fb:
            continue
        if k not in fa or k not in fb:
            bad.append(f"KV {k} only in {'llama.cpp' if k in fb else 'apr'}")
            continue
        x, y = fa[k], fb[k]
        if x.types != y.types or [bytes(x.parts[i]) for i in x.data] != [bytes(y.parts[i]) for i in y.data]:
            bad.append(f"KV {k}: {str(x.contents())[:60]} vs llama.cpp {str(y.contents())[:60]}")
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    for n in sorted(set(ta) | set(tb)):
        if n not in ta or n not in tb:
            bad.append(f"tensor {n} only in {'llama.cpp' if n in tb else 'apr'}")
            continue
        x, y = ta[n], tb[n]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            bad.append(f"tensor {n}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
        elif bytes(x.data) != bytes(y.data):
            bad.append(f"tensor {n}: bytes differ")
    return bad


def rel(a, ref):
    return float(np.max(np.abs(a.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def apr_logits(apr_bin, model, prompt, out):
    run(apr_bin, "run", model, "--prompt", prompt, "--dump-logits", out, "-n", "0", "--ctx", "1024",
        "--device", "cpu")
    return np.fromfile(out, dtype="<f4")


def apr_ids(apr_bin, model, prompt):
    return [int(x) for x in run(apr_bin, "run", model, "--prompt", prompt, "--tokenize-only").split()]


def check_case(apr_bin, src, tok_dir, work, fam, dialect, dtype, prompt):
    tag = f"{fam}-{dialect}-{dtype}"
    d = os.path.join(work, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    hf = os.path.join(d, "hf")
    build(fam, dialect, dtype, tok_dir, hf)
    problems = []
    ours, theirs = os.path.join(d, "apr.gguf"), os.path.join(d, "llama.gguf")
    llama_cpp_convert(src, hf, theirs, dtype)
    run(apr_bin, "convert", hf, ours)
    problems += compare_gguf(ours, theirs, fam)
    log(f"  {tag}: apr's GGUF vs llama.cpp's: {'identical (allowed KVs aside)' if not problems else problems}")

    ids = apr_ids(apr_bin, hf, prompt)
    if len(ids) > 1000:  # a small vocabulary: cut the text to fit apr's --ctx 1024
        prompt = prompt[:len(prompt) * 900 // len(ids)]
        ids = apr_ids(apr_bin, hf, prompt)
    ids = ids[:N_POS]
    prompt_ids = ids
    if len(ids) < 512:
        problems.append(f"only {len(ids)} prompt tokens")
    ref = hf_logits(hf, prompt_ids)
    n = len(prompt_ids)
    models = [("HF dir", hf), ("apr GGUF", ours)]
    if dtype == "f32":
        # HF -> APR -> GGUF: the same GGUF as llama.cpp's (BF16 norms stay
        # BF16 in APR, where llama.cpp's GGUF has F32 ones)
        apr_file, again = os.path.join(d, "apr.apr"), os.path.join(d, "apr-from-apr.gguf")
        run(apr_bin, "convert", hf, apr_file)
        run(apr_bin, "convert", apr_file, again)
        bad = compare_gguf(again, theirs, fam)
        log(f"  {tag}: HF -> APR -> GGUF vs llama.cpp's: {'identical (allowed KVs aside)' if not bad else bad}")
        problems += [f"HF -> APR -> GGUF: {b}" for b in bad]
        models.append(("apr APR", apr_file))
    for name, m in models:
        got = apr_logits(apr_bin, m, prompt, os.path.join(d, "logits.f32"))
        got = got.reshape(-1, ref.shape[1])[:n]
        r = rel(got, ref)
        log(f"  {tag}: apr on {name}: rel max diff {r:.3g} over {n} positions")
        if not r <= TOL:
            problems.append(f"apr on {name}: rel max diff {r:.3g} > {TOL}")
    if fam == "llama3":
        # llama3 scaling lives in a GGUF only as rope_freqs.weight, from which
        # HF's rope parameters cannot be recovered: apr refuses to write HF
        r = subprocess.run([apr_bin, "convert", ours, os.path.join(d, "back"), "--to", "safetensors"],
                           capture_output=True, text=True)
        if r.returncode != 2 or "rope_freqs" not in r.stderr:
            problems.append(f"GGUF -> safetensors of a llama3-rope model: exit {r.returncode}, want 2 naming rope_freqs")
    elif dtype == "f32":
        back = os.path.join(d, "back")
        run(apr_bin, "convert", ours, back, "--to", "safetensors")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if not os.path.exists(os.path.join(back, f)):
                shutil.copy(os.path.join(tok_dir, f), back)
        again = hf_logits(back, prompt_ids)
        if not np.array_equal(again, ref):
            problems.append(f"GGUF -> safetensors in transformers: rel max diff {rel(again, ref):.3g} (want bit-identical)")
        else:
            log(f"  {tag}: GGUF -> safetensors loads in transformers, logits bit-identical")
    try:
        import llama_cpp
        llm = llama_cpp.Llama(ours, n_ctx=1024, n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0,
                              **LLAMA_YARN_IGNORES_KVS.get(fam, {}))
        llm.eval(prompt_ids)
        # llama.cpp ignores Mistral's window: compare where it does not matter
        nl = WINDOW_IGNORED_BY_LLAMA_CPP.get(fam, n)
        lc = np.array(llm.scores[:nl], dtype=np.float32)
        r = rel(lc, ref[:nl])
        tol = (TOL_LLAMA_CPP_GELU if fam in GELU_FAMILIES else TOL_LLAMA_CPP)[dtype]
        if fam in LLAMA_YARN_IGNORES_KVS:
            log(f"  {tag}: llama.cpp on apr's GGUF: rel max diff {r:.3g} over {nl} positions "
                "(not compared: llama.cpp ignores rope.scaling.yarn_attn_factor)")
        else:
            log(f"  {tag}: llama.cpp on apr's GGUF: rel max diff {r:.3g} over {nl} positions")
            if not r <= tol:
                problems.append(f"llama.cpp on apr's GGUF: rel max diff {r:.3g} > {tol}")
        if dtype == "f32":
            # the quantize mix per family: apr quantize Q4_K_M vs llama.cpp's
            # llama_model_quantize of the same GGUF (rows of 64/128 columns:
            # the k-quant fallbacks decide most types here), byte for byte
            import ctypes
            qa, qb = os.path.join(d, "apr-q4km.gguf"), os.path.join(d, "llama-q4km.gguf")
            run(apr_bin, "quantize", ours, qa, "--type", "Q4_K_M")
            qp = llama_cpp.llama_model_quantize_default_params()
            qp.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
            qp.nthread = 2
            if llama_cpp.llama_model_quantize(ours.encode(), qb.encode(), ctypes.byref(qp)) != 0:
                problems.append("llama_model_quantize failed")
            else:
                ta = {t.name: (t.tensor_type.name, bytes(t.data)) for t in gguf.GGUFReader(qa).tensors}
                tb = {t.name: (t.tensor_type.name, bytes(t.data)) for t in gguf.GGUFReader(qb).tensors}
                bad = [n for n in sorted(set(ta) | set(tb)) if ta.get(n) != tb.get(n)]
                log(f"  {tag}: Q4_K_M vs llama.cpp's quantizer: "
                    f"{'byte-identical' if not bad else bad[:6]} ({len(ta)} tensors)")
                problems += [f"Q4_K_M tensor {n} differs from llama.cpp's" for n in bad]
    except ImportError:
        print("SKIP: llama_cpp not importable (llama.cpp check)")
        problems.append("SKIPPED-llama_cpp")
    return tag, problems


def main():
    apr_bin, src, tok_dir, work = sys.argv[1:5]
    fams = sys.argv[5:] or list(FAMILIES)
    prompt = open(os.path.join(tok_dir, "heldout.py"), encoding="utf-8").read()[:4000]
    os.makedirs(work, exist_ok=True)
    failed, skipped = False, False
    # both dialects per family; F32 with the 5.x dialect, BF16 with the 4.x one
    for fam in fams:
        for dialect, dtype in (("5x", "f32"), ("4x", "bf16")):
            tag, problems = check_case(apr_bin, src, tok_dir, work, fam, dialect, dtype, prompt)
            if "SKIPPED-llama_cpp" in problems:
                skipped = True
                problems.remove("SKIPPED-llama_cpp")
            for p in problems:
                log(f"FAIL {tag}: {p}")
            log(f"{'FAIL' if problems else 'PASS'} {tag}")
            failed |= bool(problems)
    return 1 if failed else (77 if skipped else 0)


if __name__ == "__main__":
    sys.exit(main())
