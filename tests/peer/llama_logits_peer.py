#!/usr/bin/env python3
"""Peer check of apr's forward pass and SentencePiece tokenizer against llama.cpp
(through the llama-cpp-python binding).

usage: llama_logits_peer.py APR_BIN MODEL.gguf [VOCAB.gguf] [--synth]

1. Logits: for a few prompts, `apr run --dump-logits` (every prompt position)
   against llama.cpp's logits with an F32 KV cache (llama.cpp's default F16
   cache would round keys and values); max |diff| must be <= 1e-4, and the
   prompt token ids must be identical.
2. Tokenizer (when VOCAB.gguf is given): `apr run --tokenize-only` against
   llama.cpp's tokenize() (BOS added) for a set of strings.
3. --synth: synthetic Qwen2 (NEOX rope, QKV biases, tied embeddings, byte-BPE
   tokenizer) and LLaMA (head_dim 32 != hidden / heads) models from `apr synth`,
   run from the HF safetensors directory and from its `apr convert` GGUF: both
   within 1e-4 of llama.cpp on the GGUF, and bit-identical to each other.

Exit 0 pass, 1 mismatch, 77 when llama_cpp cannot be imported (skip).
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import llama_cpp
except ImportError as e:  # the driver checks first; this is a second guard
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4
PROMPTS = [
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    "The cat sat on the mat and looked at the big red ball",
    "x",
]
TOKENIZER_STRINGS = [
    "Hello world", " Hello world", "Hello, world!", "  leading spaces", "trailing spaces  ",
    "tabs\tand\nnewlines\n\n", "numbers 1234567 and 3.14159", "Führer über Straße",
    "нещо на Български", "🦙 llamas 🚀 rockets 😶‍🌫️", "日本語のテキスト、中文文本",
    "I've been 'told he's there, 'RE you sure?", "a" * 300, "<s> not special </s>",
    "mixed\u00a0nbsp and\u2003em space", "\u0000nul? no",
]


def apr(apr_bin, *args):
    r = subprocess.run([apr_bin, "run", *args], capture_output=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode(errors="replace"))
        raise SystemExit(f"apr run {' '.join(args[:3])}... failed with {r.returncode}")
    return r


def check_logits(apr_bin, model):
    llm = llama_cpp.Llama(model, n_ctx=256, n_threads=2, logits_all=True, verbose=False,
                          type_k=0, type_v=0)  # GGML_TYPE_F32 KV cache
    ok = True
    with tempfile.TemporaryDirectory() as td:
        for p in PROMPTS:
            dump = os.path.join(td, "logits.bin")
            r = apr(apr_bin, model, "--prompt", p, "-n", "1", "--threads", "2", "--dump-logits", dump,
                    "--print-ids", "--device", "cpu")
            ids_line = [l for l in r.stderr.decode().splitlines() if l.startswith("prompt ids:")][0]
            ours_ids = [int(x) for x in ids_line.split(":")[1].split()]
            ref_ids = llm.tokenize(p.encode(), add_bos=True)
            if ours_ids != ref_ids:
                print(f"FAIL ids for {p!r}: apr {ours_ids} llama.cpp {ref_ids}")
                ok = False
                continue
            llm.reset()
            llm.eval(ref_ids)
            ref = np.array(llm.scores[: len(ref_ids)], dtype=np.float32)
            ours = np.fromfile(dump, dtype="<f4")
            if ours.size != ref.size:
                print(f"FAIL {p!r}: {ours.size} logits, llama.cpp {ref.size}")
                ok = False
                continue
            d = float(np.abs(ours.reshape(ref.shape) - ref).max())
            same_top = int((ours.reshape(ref.shape).argmax(1) == ref.argmax(1)).sum())
            print(f"{'ok ' if d <= TOL else 'FAIL'} {len(ref_ids):3d} tokens  max|diff| {d:.3g}  "
                  f"top-1 {same_top}/{len(ref_ids)}  {p[:40]!r}")
            ok &= d <= TOL
    return ok


def check_tokenizer(apr_bin, vocab):
    llm = llama_cpp.Llama(vocab, vocab_only=True, verbose=False)
    ok = True
    for s in TOKENIZER_STRINGS:
        if "\u0000" in s:
            continue  # argv cannot carry NUL
        r = apr(apr_bin, vocab, "--prompt", s, "--tokenize-only")
        ours = [int(x) for x in r.stdout.decode().split()]
        ref = llm.tokenize(s.encode(), add_bos=True, special=False)
        if ours != ref:
            print(f"FAIL tokenize {s[:40]!r}: apr {ours[:20]} llama.cpp {ref[:20]}")
            ok = False
    print(f"tokenizer: {len(TOKENIZER_STRINGS)} strings {'ok' if ok else 'MISMATCH'}")
    return ok


def check_synth(apr_bin):
    ok = True
    prompt = "hello world, this is a synthetic model"
    with tempfile.TemporaryDirectory() as td:
        for preset, extra in (("tiny-qwen2", []), ("tiny-llama", ["--head-dim", "32"])):
            hf = os.path.join(td, preset)
            gg = hf + ".gguf"
            for cmd in (["synth", hf, "--preset", preset, "-q", *extra], ["convert", hf, gg]):
                r = subprocess.run([apr_bin, *cmd], capture_output=True)
                if r.returncode != 0:
                    print(f"FAIL apr {' '.join(cmd)}: {r.stderr.decode(errors='replace')}")
                    return False
            dumps = []
            for src in (hf, gg):
                dump = src + ".logits"
                r = apr(apr_bin, src, "--prompt", prompt, "-n", "1", "--dump-logits", dump, "--print-ids",
                        "--device", "cpu")
                ids_line = [l for l in r.stderr.decode().splitlines() if l.startswith("prompt ids:")][0]
                dumps.append(([int(x) for x in ids_line.split(":")[1].split()], np.fromfile(dump, dtype="<f4")))
            llm = llama_cpp.Llama(gg, n_ctx=128, n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0)
            add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
            ref_ids = llm.tokenize(prompt.encode(), add_bos=add_bos)
            llm.eval(ref_ids)
            ref = np.array(llm.scores[: len(ref_ids)], dtype=np.float32)
            for (ids, lg), name in zip(dumps, ("safetensors", "gguf")):
                if ids != ref_ids or lg.size != ref.size:
                    print(f"FAIL {preset} {name}: ids {ids[:12]} llama.cpp {ref_ids[:12]}")
                    ok = False
                    continue
                d = float(np.abs(lg.reshape(ref.shape) - ref).max())
                print(f"{'ok ' if d <= TOL else 'FAIL'} {preset} from {name}: max|diff| {d:.3g} vs llama.cpp")
                ok &= d <= TOL
            same = dumps[0][1].tobytes() == dumps[1][1].tobytes()
            print(f"{'ok ' if same else 'FAIL'} {preset}: safetensors and GGUF logits bit-identical")
            ok &= same
    return ok


def main():
    args = [a for a in sys.argv[1:] if a != "--synth"]
    if len(args) < 2:
        print(__doc__)
        return 2
    ok = check_logits(args[0], args[1])
    if len(args) > 2:
        ok &= check_tokenizer(args[0], args[2])
    if "--synth" in sys.argv:
        ok &= check_synth(args[0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
