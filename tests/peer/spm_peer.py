#!/usr/bin/env python3
"""SentencePiece peer check of apr's tokenizer.model support.

usage: spm_peer.py APR_BIN FIXTURE.gguf WORKDIR

1. `apr convert FIXTURE hf/` writes tokenizer.model: the sentencepiece
   library loads it; pieces, scores, types and special ids equal the GGUF's
   arrays; texts encode to the same ids with sentencepiece, `apr run
   --tokenize-only` and (when importable) llama-cpp-python on the fixture.
2. A tiny real model trained with SentencePieceTrainer (BPE, byte_fallback)
   beside a synthetic HF LLaMA model (`apr synth`), plus added_tokens.json and
   an added_tokens_decoder: `apr convert` to GGUF gives the tokens, scores
   and types llama.cpp's convert_hf_to_gguf.py derives from what
   sentencepiece reports (its _create_vocab_sentencepiece, restated below),
   and GGUF -> HF -> tokenizer.model encodes like the trained model.
Exit 0 pass, 1 fail, 77 skip (sentencepiece or gguf missing).
"""
import json
import os
import random
import shutil
import subprocess
import sys

try:
    import sentencepiece as spm
    import gguf
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "  two  spaces and\ttabs\nnewlines",
    "Numbers 12345 and symbols !?#@ (ok)",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e \U0001F600",
    "Hello",
]

failures = []
skipped = []  # parts left out for a missing peer: exit 77 at the end, never a silent pass


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def apr(apr_bin, *args):
    r = subprocess.run([apr_bin, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"apr {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def gguf_vocab(path):
    r = gguf.GGUFReader(path)
    f = r.fields
    get = lambda k: f[k].contents() if k in f else None
    return {
        "tokens": get("tokenizer.ggml.tokens"),
        "scores": get("tokenizer.ggml.scores"),
        "types": get("tokenizer.ggml.token_type"),
        "bos": get("tokenizer.ggml.bos_token_id"),
        "eos": get("tokenizer.ggml.eos_token_id"),
        "unk": get("tokenizer.ggml.unknown_token_id"),
        "add_bos": get("tokenizer.ggml.add_bos_token"),
        "model": get("tokenizer.ggml.model"),
    }


def sp_type(sp, i):
    """The token type llama.cpp's converter gives piece i (USER_DEFINED -> NORMAL)."""
    if sp.IsUnknown(i):
        return 2
    if sp.IsControl(i):
        return 3
    if sp.IsUnused(i):
        return 5
    if sp.IsByte(i):
        return 6
    return 1


def check_sp_equals_vocab(sp, v, what):
    """sentencepiece has no IsUserDefined: a GGUF type 4 reads as 1 through sp_type."""
    n = sp.vocab_size()
    check(n == len(v["tokens"]), f"{what}: {n} pieces, GGUF has {len(v['tokens'])}")
    bad = [i for i in range(min(n, len(v["tokens"])))
           if sp.IdToPiece(i) != v["tokens"][i] or sp.GetScore(i) != v["scores"][i]
           or sp_type(sp, i) != (1 if v["types"][i] == 4 else v["types"][i])]
    check(not bad, f"{what}: pieces differ at ids {bad[:10]}")
    print(f"  {what}: {n} pieces, {len(bad)} differ")


def apr_ids(apr_bin, model, text):
    out = apr(apr_bin, "run", model, "--prompt", text, "--tokenize-only")
    return [int(x) for x in out.split()]


def llama_cpp_ids(path, text):
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    return llm.tokenize(text.encode(), add_bos=False)


def looks_special(t):
    """convert_hf_to_gguf.py's does_token_look_special."""
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<\uff5c") and t.endswith("\uff5c>")) or (t.startswith("<unused") and t.endswith(">")))


def expected_vocab(sp, vocab_size, added_tokens, decoder):
    """llama.cpp's _create_vocab_sentencepiece on what sentencepiece reports."""
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [5] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i], scores[i], types[i] = sp.IdToPiece(i), sp.GetScore(i), sp_type(sp, i)
    for text, i in added_tokens.items():
        if i < vocab_size:
            tokens[i], scores[i], types[i] = text, -1000.0, 4
    for k, data in decoder.items():
        i, t = int(k), data["content"]
        if i >= vocab_size:
            continue
        if data.get("special") or looks_special(t):
            types[i] = 3
        else:
            t = t.replace("\u2581", " ")
            types[i] = 4
        scores[i], tokens[i] = -1000.0, t
    return tokens, scores, types


def part_fixture(apr_bin, fixture, work):
    print("1. the fixture's vocabulary as tokenizer.model")
    hf = os.path.join(work, "hf") + "/"
    apr(apr_bin, "convert", fixture, hf, "-q")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(hf, "tokenizer.model"))
    v = gguf_vocab(fixture)
    check_sp_equals_vocab(sp, v, "fixture tokenizer.model")
    check((sp.bos_id(), sp.eos_id(), sp.unk_id()) == (v["bos"], v["eos"], v["unk"]),
          f"special ids {(sp.bos_id(), sp.eos_id(), sp.unk_id())} != GGUF {(v['bos'], v['eos'], v['unk'])}")
    for text in TEXTS:
        want = sp.encode(text)
        got = apr_ids(apr_bin, fixture, text)
        if got[:1] == [v["bos"]]:
            got = got[1:]
        check(got == want, f"fixture: apr tokenizes {text!r} as {got}, sentencepiece as {want}")
        lc = llama_cpp_ids(fixture, text)
        if lc is None:
            continue
        check(lc == want, f"fixture: llama.cpp tokenizes {text!r} as {lc}, sentencepiece as {want}")
    if llama_cpp_ids(fixture, "x") is None:
        if os.environ.get("APR_TEST_STRICT", "0") not in ("", "0"):
            check(False, "STRICT: llama_cpp is not importable, so the llama-cpp-python comparison cannot run")
            return
        print("  SKIP llama-cpp-python comparison: llama_cpp is not importable")
        skipped.append("llama-cpp-python comparison")
    else:
        print(f"  {len(TEXTS)} texts: sentencepiece, apr and llama-cpp-python ids compared")


def train_tiny(work):
    corpus = os.path.join(work, "corpus.txt")
    base = ("Once upon a time there was a little girl named Lily. She liked to play outside with her red ball. "
            "One day she saw a big dog in the park and they played together until the sun went down. ")
    rng = random.Random(42)
    syl = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "bri", "sto", "gle", "an", "er"]
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(400):
            words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 4))) for _ in range(12)]
            f.write(base[i % 37:] + base[: i % 37] + " ".join(words) + f" {i}\n")
    prefix = os.path.join(work, "tiny")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=600,
                                   byte_fallback=True, hard_vocab_limit=False, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, character_coverage=1.0, num_threads=1,
                                   minloglevel=2)
    return prefix + ".model"


def part_trained(apr_bin, work):
    print("2. a trained sentencepiece model beside a synthetic HF LLaMA model")
    model = train_tiny(work)
    sp = spm.SentencePieceProcessor(model_file=model)
    n = sp.vocab_size()
    vocab_size = max(n + 3, 512)  # apr synth makes at least 512 rows
    syn = os.path.join(work, "syn")
    apr(apr_bin, "synth", syn, "--arch", "llama", "--vocab", str(vocab_size), "-q")
    shutil.copy(model, os.path.join(syn, "tokenizer.model"))
    os.remove(os.path.join(syn, "tokenizer.json"))  # tokenizer.model alone, as many LLaMA repos
    added = {"<user>": n + 1}
    decoder = {
        "1": {"content": "<s>", "special": True},
        str(n): {"content": "<|extra|>", "special": False},
        str(n + 2): {"content": "x\u2581y", "special": False},
    }
    with open(os.path.join(syn, "added_tokens.json"), "w") as f:
        json.dump(added, f)
    with open(os.path.join(syn, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "added_tokens_decoder": decoder}, f)
    out = os.path.join(work, "syn.gguf")
    apr(apr_bin, "convert", syn, out, "-q")
    v = gguf_vocab(out)
    tokens, scores, types = expected_vocab(sp, vocab_size, added, decoder)
    check(v["model"] == "llama", f"tokenizer.ggml.model {v['model']!r}")
    check(list(v["tokens"]) == tokens, "trained: tokens differ from llama.cpp's mapping")
    check(list(v["scores"]) == scores, "trained: scores differ from llama.cpp's mapping")
    check(list(v["types"]) == types, "trained: token types differ from llama.cpp's mapping")
    cfg = json.load(open(os.path.join(syn, "config.json")))
    check((v["bos"], v["eos"]) == (cfg.get("bos_token_id"), cfg.get("eos_token_id")),
          f"bos/eos {(v['bos'], v['eos'])} != config.json's")
    print(f"  trained: {n} pieces, vocab_size {vocab_size}: GGUF arrays checked")

    # Back to HF: the tokenizer.model apr writes encodes like the trained one,
    # and apr's own tokenizer on the GGUF agrees.
    back = os.path.join(work, "syn-back") + "/"
    apr(apr_bin, "convert", out, back, "-q")
    sp2 = spm.SentencePieceProcessor(model_file=os.path.join(back, "tokenizer.model"))
    check_sp_equals_vocab(sp2, v, "written tokenizer.model")
    again = os.path.join(work, "syn-again.gguf")
    apr(apr_bin, "convert", back, again, "-q")
    v2 = gguf_vocab(again)
    for k in ("tokens", "scores", "types", "bos", "eos", "unk", "add_bos", "model"):
        same = list(v2[k]) == list(v[k]) if isinstance(v[k], list) else v2[k] == v[k]
        check(same, f"GGUF -> HF -> GGUF: tokenizer {k} differs")
    for text in TEXTS:
        want = sp.encode(text)
        check(sp2.encode(text) == want, f"trained: written model encodes {text!r} as {sp2.encode(text)}, "
                                        f"trained one as {want}")
        got = apr_ids(apr_bin, out, text)
        if got[:1] == [v["bos"]]:
            got = got[1:]
        check(got == want, f"trained: apr tokenizes {text!r} as {got}, sentencepiece as {want}")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    apr_bin, fixture, work = sys.argv[1:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    part_fixture(apr_bin, fixture, work)
    part_trained(apr_bin, work)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    if skipped:
        print(f"SKIP: the other checks passed; left out: {', '.join(skipped)}")
        return 77
    print("spm peer: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
