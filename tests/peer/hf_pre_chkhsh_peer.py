#!/usr/bin/env python3
"""apr's tokenizer.json pre-tokenizer structures (libtok/hftok.c PRE_FORMS,
the same ones hf_pre_tokenizer_peer.py trains with) checked on the real
vocabularies llama.cpp's own converter named.

llama.cpp's convert_hf_to_gguf.py names tokenizer.ggml.pre from the sha256 of
the ids a model's tokenizer gives a fixed text (chkhsh, conversion/base.py);
llama.cpp's vocab test files (models/ggml-vocab-NAME.gguf, .inp, .out) hold
those models' vocabularies and merges, the name it gave each, and
llama.cpp's ids for test texts. Per byte-level BPE file apr has a structure
for:

1. A tokenizer.json is rebuilt from the GGUF (vocab, merges, control and
   user-defined tokens as added tokens) with the structure apr names the
   file's pre (FORMS below); the `tokenizers` package's ids for the chkhsh
   text must hash to a chkhsh llama.cpp's converter names the same way as
   the file, or, where the file's vocabulary or BOS alone is not what the
   converter hashed, one it names alike (ALIKE). BOS as the model's
   post-processor adds it is tried with and without (llama-bpe and
   smaug-bpe differ only there).
2. `apr convert` of that tokenizer.json (beside the tinycoder fixture's
   weights) must name the form, and llama.cpp (llama-cpp-python, vocab_only)
   on apr's GGUF must give the file's .out ids for every .inp text.

usage: hf_pre_chkhsh_peer.py APR_BIN LLAMA_CPP_SRC TINYCODER_DIR WORK
Exit 0 pass, 1 fail, 77 skip (a peer package missing).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import peer_util

apr_bin, src, tiny, work = sys.argv[1:5]
sys.path.insert(0, os.path.join(src, "gguf-py"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import gguf
    import llama_cpp
    from tokenizers import AddedToken, Tokenizer, models, processors
    import hf_pre_tokenizer_peer as trained  # the structures, the chkhsh text
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

# ggml-vocab file -> the PRE_FORMS name apr gives its structure
FORMS = {"gpt-2": "gpt-2", "mpt": "gpt-2", "llama-bpe": "llama-bpe", "qwen2": "qwen2", "starcoder": "starcoder",
         "refact": "starcoder", "command-r": "starcoder", "falcon": "falcon", "deepseek-coder": "deepseek-coder",
         "deepseek-llm": "deepseek-llm"}
# Names llama.cpp tokenizes as the file's (one row of libtok/encode.c's
# PRE_DEFS): mpt's vocabulary is GPT-NeoX's, whose hash the converter lists
# as olmo's.
ALIKE = {"mpt": {"olmo"}}
# Not checked: ggml-vocab-qwen35's vocabulary is Qwen2's (with either regex
# its ids hash to Qwen1.5's chkhsh), so it cannot tell qwen35's structure.


def known_hashes():
    base = open(os.path.join(src, "conversion", "base.py"), encoding="utf-8").read()
    return dict(re.findall(r'chkhsh == "([0-9a-f]{64})":\n(?:\s+#[^\n]*\n)*\s+res = "([^"]+)"', base))


def rebuild(path, form):
    r = gguf.GGUFReader(path)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    bos = r.fields.get("tokenizer.ggml.bos_token_id")
    vocab = {}
    for i, t in enumerate(toks):
        vocab.setdefault(t, i)
    pre, ignore_merges, _, _ = trained.families()[form]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                               ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    # user-defined tokens are text (GPT-NeoX's runs of spaces, written byte-level in the GGUF)
    tok.add_tokens([AddedToken(toks[i].replace("\u0120", " "), normalized=False)
                    for i in range(len(toks)) if types[i] == 4])
    tok.add_special_tokens([toks[i] for i in range(len(toks)) if types[i] == 3])
    return tok, len(toks), (toks[bos.contents()], bos.contents()) if bos else None, r


def chk_names(tok, bos, known):
    names = set()
    for with_bos in (False, True):
        if with_bos and not bos:
            continue
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos[0]}:0 $A:0", special_tokens=[bos]) if with_bos else None
        h = hashlib.sha256(str(tok.encode(trained.CHKTXT).ids).encode()).hexdigest()
        if h in known:
            names.add(known[h])
    tok.post_processor = None
    return names


def main():
    known = known_hashes()
    os.makedirs(work, exist_ok=True)
    failures = 0
    for name, form in FORMS.items():
        path = os.path.join(src, "models", f"ggml-vocab-{name}.gguf")
        if not os.path.exists(path + ".out"):
            print(f"FAIL {name}: {path}.out is missing")
            failures += 1
            continue
        tok, n, bos, reader = rebuild(path, form)
        file_pre = reader.fields["tokenizer.ggml.pre"].contents()
        bad = []
        names = chk_names(tok, bos, known)
        if not names & ({file_pre} | ALIKE.get(name, set())):
            bad.append(f"the {form} structure hashes to {sorted(names) or 'no chkhsh llama.cpp knows'}, "
                       f"the file's pre is {file_pre}")
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        tok.save(os.path.join(d, "tokenizer.json"))
        cfg = json.load(open(os.path.join(tiny, "config.json")))
        cfg["vocab_size"] = n
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        os.symlink(os.path.join(tiny, "model.safetensors"), os.path.join(d, "model.safetensors"))
        out = os.path.join(work, name + ".gguf")
        r = subprocess.run([apr_bin, "convert", d, out, "-q"], capture_output=True, text=True)
        if r.returncode != 0:
            bad.append(f"apr convert: {r.stderr.strip()[:300]}")
        else:
            llm = llama_cpp.Llama(model_path=out, vocab_only=True, verbose=False)
            pre = llm.metadata.get("tokenizer.ggml.pre")
            if pre != form:
                bad.append(f"apr named it {pre}, not {form}")
            texts = open(path + ".inp", encoding="utf-8", newline="").read().split("\n__ggml_vocab_test__\n")[:-1]
            want = open(path + ".out", encoding="utf-8").read().split("\n")
            wrong = [t for t, w in zip(texts, want)
                     if llm.tokenize(t.encode(), add_bos=False, special=False) != [int(x) for x in w.split()]]
            if wrong:
                bad.append(f"llama.cpp on apr's GGUF differs from {name}.gguf.out on {len(wrong)} of {len(texts)}"
                           f" texts, e.g. {wrong[0][:40]!r}")
            del llm
        shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(out):
            os.remove(out)
        failures += peer_util.report_case(f"{name}: {form} structure, chkhsh -> {sorted(names)}, "
                                          f"llama.cpp's .out ids on apr's GGUF", bad)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
