#!/usr/bin/env python3
"""tokenizer.json pre-tokenizers -> tokenizer.ggml.pre and ids, against
llama.cpp's converter and tokenizer.

For each family's pre-tokenizer (the pre_tokenizer of the model llama.cpp's
converter names it from, FAMILIES below) the `tokenizers` package trains a
small byte-level BPE (about 2000 tokens, on llama.cpp's docs and vocab test
texts) and saves it in an HF directory beside the tinycoder fixture's
config.json and weights. Then:

1. `apr convert DIR apr.gguf` must write the family's tokenizer.ggml.pre.
2. llama.cpp's convert_hf_to_gguf.py --vocab-only converts the same
   directory. Its get_vocab_base_pre names a pre-tokenizer from a hash of the
   ids of a fixed text, which only knows the released vocabularies it lists
   (a trained vocabulary never matches: the refusal cases check that the
   unpatched converter refuses them), so the name is given to it; everything
   else (tokens, types, merges, special ids) is its own. The tokenizer KVs of
   both GGUFs must be equal.
3. The texts (llama.cpp's ggml-vocab-*.inp vectors, its chkhsh text, and all
   of them joined) tokenize to the same ids with llama.cpp
   (llama-cpp-python, vocab_only) on llama.cpp's GGUF and on apr's GGUF;
   `apr run apr.gguf --tokenize-only` gives them too for the joined text, the
   chkhsh text and the first four vectors that start or end with white space
   (one apr process per text: all 51 would take most of the test's time). The
   `tokenizers` package's own ids (without llama.cpp's BOS) are counted where
   llama.cpp's differ from them (llama.cpp's regex list for a name is not
   always the model's pre-tokenizer, and it ignores the normalizer; apr
   follows llama.cpp, which is what runs the GGUF).
4. Pre-tokenizers no name fits are refused by apr convert (non-zero exit,
   "pre-tokenizer not recognized", no output file) and by llama.cpp's
   converter.

usage: hf_pre_tokenizer_peer.py APR_BIN LLAMA_CPP_SRC TINYCODER_DIR WORK
Exit 0 pass, 1 fail, 77 skip (a peer package missing).
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import peer_util

apr_bin, src, tiny, work = sys.argv[1:5]
sys.path.insert(0, os.path.join(src, "gguf-py"))
try:
    import gguf
    import llama_cpp
    import transformers  # noqa: F401  (the converter's AutoTokenizer)
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

# The Split regexes of the reference tokenizer.json files (llama.cpp's
# llama-vocab.cpp has the same ones for these names).
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"


def deepseek_llm_regexes():
    """DeepSeek LLM's letter and symbol classes, read from llama.cpp's source."""
    import re
    text = open(os.path.join(src, "src", "llama-vocab.cpp"), encoding="utf-8").read()
    block = text[text.index("case LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM:"):][:3000]
    lits = re.findall(r'"((?:[^"\\]|\\.)*)"', block)
    return lits[1].replace("\\\\", "\\"), lits[2].replace("\\\\", "\\")


def split(regex):
    return pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)


def byte_level(use_regex):
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def families():
    letters, symbols = deepseek_llm_regexes()
    seq = pre_tokenizers.Sequence
    # name -> (pre_tokenizer, model.ignore_merges, NFC normalizer, reference model)
    return {
        "gpt-2": (byte_level(True), False, False, "openai-community/gpt2"),
        "llama-bpe": (seq([split(LLAMA3), byte_level(False)]), True, False, "meta-llama/Meta-Llama-3-8B"),
        "smaug-bpe": (seq([split(LLAMA3), byte_level(False)]), False, False, "abacusai/Smaug-Llama-3-70B-Instruct"),
        "qwen2": (seq([split(QWEN2), byte_level(False)]), False, True, "Qwen/Qwen1.5-7B"),
        "qwen35": (seq([split(QWEN35), byte_level(False)]), False, False, "Qwen/Qwen3.5-9B-Instruct"),
        "starcoder": (seq([pre_tokenizers.Digits(individual_digits=True), byte_level(True)]), False, False,
                      "bigcode/starcoder2-3b"),
        "falcon": (seq([pre_tokenizers.Punctuation(behavior="contiguous"), byte_level(True),
                        pre_tokenizers.Digits(individual_digits=False), split("[0-9][0-9][0-9]")]), False, False,
                   "tiiuae/falcon-7b"),
        "deepseek-coder": (seq([split("[\r\n]"), split(r"\s?\p{L}+"), split(r"\s?\p{P}+"), split(CJK),
                                pre_tokenizers.Digits(individual_digits=True), byte_level(False)]), False, False,
                           "deepseek-ai/deepseek-coder-6.7b-base"),
        "deepseek-llm": (seq([split("[\r\n]"), split(letters), split(symbols), split(r"\s+$"), split(CJK),
                              pre_tokenizers.Digits(individual_digits=True), byte_level(False)]), False, False,
                         "deepseek-ai/deepseek-llm-7b-base"),
    }


# Pre-tokenizers no name fits: a regex of no family's, a Split that keeps
# the separators apart (behavior merged_with_previous), Whitespace, and a
# ByteLevel that adds a prefix space (tokenizes " x" for "x").
REFUSED = {
    "other-regex": pre_tokenizers.Sequence([split(r"\w+|[^\w\s]+|\s+"), byte_level(False)]),
    "split-merged": pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3), behavior="merged_with_previous"), byte_level(False)]),
    "whitespace": pre_tokenizers.Whitespace(),
    "prefix-space": pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
}

CHKTXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
          "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
          "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
          "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
          "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
          "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
          "make it, 'D you like some tea? We'Ve a'lL")



def vector_texts():
    texts = []
    for f in sorted(glob.glob(os.path.join(src, "models", "ggml-vocab-*.gguf.inp"))):
        for t in open(f, encoding="utf-8", newline="").read().split("\n__ggml_vocab_test__\n"):
            if t and t not in texts:
                texts.append(t)
    return texts


def corpus(texts):
    docs = [os.path.join(src, "README.md")] + sorted(glob.glob(os.path.join(src, "docs", "*.md")))
    out = list(texts) + [CHKTXT]
    for d in docs:
        out += open(d, encoding="utf-8").read().split("\n\n")
    return out


def make_dir(name, pre, ignore_merges, nfc, texts):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(texts), trainer)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
                   "bos_token": "<|endoftext|>"}, f)
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    cfg["bos_token_id"] = cfg["eos_token_id"] = tok.token_to_id("<|endoftext|>")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    os.symlink(os.path.join(tiny, "model.safetensors"), os.path.join(d, "model.safetensors"))
    return d, tok


# One converter process for every directory: sys.argv[1:] are (dir, out, pre)
# triples; pre "-" runs the converter's own get_vocab_base_pre, and a refusal
# (any exception) is printed as "REFUSED dir: why" instead of ending the run.
CONVERT = r"""
import sys, runpy, traceback
src = sys.argv[1]; sys.path.insert(0, src); sys.path.insert(1, src + '/gguf-py')
import conversion.base as b
own = b.TextModel.get_vocab_base_pre
jobs = sys.argv[2:]
for i in range(0, len(jobs), 3):
    d, out, pre = jobs[i:i + 3]
    b.TextModel.get_vocab_base_pre = own if pre == '-' else (lambda self, tok, pre=pre: pre)
    sys.argv = [src + '/convert_hf_to_gguf.py', d, '--outfile', out, '--vocab-only']
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
    except BaseException as e:
        print('REFUSED', d, type(e).__name__, str(e).splitlines()[0] if str(e) else '', flush=True)
"""


def llama_cpp_convert(jobs):
    args = [x for j in jobs for x in j]
    r = subprocess.run([sys.executable, "-c", CONVERT, src] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit("convert_hf_to_gguf.py failed")
    return {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("REFUSED ")}


def kv(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return [bytes(f.parts[i]) for i in f.data], f.types


def apr_ids(model, text):
    r = subprocess.run([apr_bin, "run", model, "--prompt", text, "--tokenize-only"], capture_output=True)
    if r.returncode != 0:
        return f"apr failed: {r.stderr.decode(errors='replace').strip()}"
    return [int(x) for x in r.stdout.split()]


def check_family(name, d, hf_tok, texts, joined):
    bad = []
    ours, theirs = os.path.join(work, name + "-apr.gguf"), os.path.join(work, name + "-llama.gguf")
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    pre = a.fields["tokenizer.ggml.pre"].contents()
    if pre != name:
        bad.append(f"tokenizer.ggml.pre is '{pre}', llama.cpp's name for this pre-tokenizer is '{name}'")
    for k in sorted(k for k in set(a.fields) | set(b.fields) if k.startswith("tokenizer.")):
        if kv(a, k) != kv(b, k):
            bad.append(f"KV {k} differs from llama.cpp's converter's: {kv(a, k) and str(a.fields[k].contents())[:60]}"
                       f" vs {kv(b, k) and str(b.fields[k].contents())[:60]}")
    ref = llama_cpp.Llama(model_path=theirs, vocab_only=True, verbose=False)
    on_ours = llama_cpp.Llama(model_path=ours, vocab_only=True, verbose=False)
    hf_differs = 0
    by_apr_texts = [CHKTXT, joined] + [t for t in texts if t != t.strip()][:4]
    for t in texts + [CHKTXT, joined]:
        want = ref.tokenize(t.encode(), add_bos=True, special=False)
        got_llama = on_ours.tokenize(t.encode(), add_bos=True, special=False)
        by_apr = t in by_apr_texts
        got = apr_ids(ours, t) if by_apr else want
        if got != want or got_llama != want:
            bad.append(f"{t[:40]!r}: llama.cpp {want[:12]}, apr {got[:12] if isinstance(got, list) else got}, "
                       f"llama.cpp on apr's GGUF {got_llama[:12]}")
        hf_differs += hf_tok.encode(t).ids != ref.tokenize(t.encode(), add_bos=False, special=False)
    del ref, on_ours
    note = f" (the tokenizers package differs from llama.cpp on {hf_differs} of {len(texts) + 2})" if hf_differs else ""
    return bad, note


def check_refused(name, refused_by_llama):
    d = os.path.join(work, name)
    out = os.path.join(work, name + "-apr.gguf")
    r = subprocess.run([apr_bin, "convert", d, out], capture_output=True, text=True)
    bad = []
    if r.returncode == 0 or "pre-tokenizer not recognized" not in r.stderr:
        bad.append(f"apr convert: exit {r.returncode}, stderr {r.stderr.strip()[:200]!r}")
    if os.path.exists(out):
        bad.append("apr convert left an output file")
    if d not in refused_by_llama:
        bad.append("llama.cpp's converter accepted it")
    return bad


def main():
    os.makedirs(work, exist_ok=True)
    texts = vector_texts()
    if not texts:
        print("SKIP: no ggml-vocab-*.inp texts in " + src)
        return 77
    joined = "\n".join(texts)
    fams = families()
    made = {}
    for name, (pre, im, nfc, _) in fams.items():
        made[name] = make_dir(name, pre, im, nfc, texts)
    for name, pre in REFUSED.items():
        make_dir(name, pre, False, False, texts)
    jobs = [(made[n][0], os.path.join(work, n + "-llama.gguf"), n) for n in fams]
    jobs += [(os.path.join(work, n), os.path.join(work, n + "-llama.gguf"), "-") for n in REFUSED]
    refused_by_llama = llama_cpp_convert(jobs)
    failures = 0
    for name in fams:
        d, hf_tok = made[name]
        if d in refused_by_llama:
            print(f"FAIL {name}: {refused_by_llama[d]}")
            failures += 1
            continue
        r = subprocess.run([apr_bin, "convert", d, os.path.join(work, name + "-apr.gguf")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL {name}: apr convert: {r.stderr.strip()[:300]}")
            failures += 1
            continue
        bad, note = check_family(name, d, hf_tok, texts, joined)
        failures += peer_util.report_case(f"{name} ({fams[name][3]}'s pre-tokenizer), {len(texts) + 2} texts{note}",
                                          bad, 8)
    for name in REFUSED:
        bad = check_refused(name, refused_by_llama)
        failures += peer_util.report_case(f"{name}: refused by apr and by llama.cpp's converter", bad)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
