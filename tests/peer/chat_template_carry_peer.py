#!/usr/bin/env python3
"""Chat templates carried through apr's conversions exactly as llama.cpp's
converter writes them: for each way an HF directory can hold its template(s)
(tokenizer_config.json's string and list forms, chat_template.jinja with and
without additional_chat_templates/, chat_template.json, and their
precedence), the tokenizer.chat_template* KVs of `apr convert DIR x.gguf`
are compared with what gguf-py's SpecialVocab + GGUFWriter.add_chat_template
(the code convert_hf_to_gguf.py runs) produce for the same directory; then the
GGUF goes GGUF -> APR -> GGUF -> HF -> GGUF through apr and must keep the
same KVs byte for byte.

tokenizer.chat_templates (the names) is compared as a set against gguf-py:
it builds the list from a Python set, whose order changes from run to run.

usage: chat_template_carry_peer.py APR_BIN LLAMA_CPP_SRC TINYCODER_DIR WORKDIR
Exit 0 pass, 1 fail, 77 skip (gguf-py missing).
"""
import json
import os
import shutil
import subprocess
import sys

apr_bin, src, tiny, work = sys.argv[1:5]
sys.path.insert(0, os.path.join(src, "gguf-py"))
try:
    import gguf
    from gguf.vocab import SpecialVocab
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

BASE = json.load(open(os.path.join(tiny, "tokenizer_config.json")))
T_DEFAULT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
T_TOOL = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %} tools: {{ tools | tojson }}"
T_RAG = "RAG \u00fc\u2603 {{ documents }}\r\n\ttrailing space "


def tc_with(**kw):
    d = {k: v for k, v in BASE.items() if k != "chat_template"}
    d.update(kw)
    return d


# name -> (tokenizer_config.json, {extra file: text})
CASES = {
    "tc-string": (BASE, {}),
    "tc-list": (tc_with(chat_template=[
        {"name": "default", "template": T_DEFAULT},
        {"name": "tool_use", "template": T_TOOL},
        {"name": "rag-v1 \u00fc", "template": T_RAG},   # sanitized to rag_v1__
        {"name": "", "template": "skipped: empty name"},
        {"name": "nothing", "template": None},          # skipped: no template
    ]), {}),
    "tc-list-no-default": (tc_with(chat_template=[{"name": "tool_use", "template": T_TOOL}]), {}),
    "jinja": (tc_with(), {"chat_template.jinja": T_DEFAULT}),
    "jinja-additional": (tc_with(), {"chat_template.jinja": T_DEFAULT,
                                     "additional_chat_templates/tool_use.jinja": T_TOOL,
                                     "additional_chat_templates/rag.jinja": T_RAG}),
    "json": (tc_with(), {"chat_template.json": json.dumps({"chat_template": T_TOOL})}),
    "json-list": (tc_with(), {"chat_template.json": json.dumps(
        {"chat_template": [{"name": "default", "template": T_RAG}, {"name": "x", "template": T_TOOL}]})}),
    "tc-wins-over-jinja": (BASE, {"chat_template.jinja": T_TOOL}),
    "jinja-wins-over-json": (tc_with(), {"chat_template.jinja": T_RAG,
                                         "chat_template.json": json.dumps({"chat_template": T_TOOL})}),
    "tc-null-hides-jinja": (tc_with(chat_template=None), {"chat_template.jinja": T_TOOL}),
    "tc-bad-type-ignored": (tc_with(chat_template=42), {}),
}


def make_dir(name, tc, extra):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for f in ("config.json", "tokenizer.json", "model.safetensors", "generation_config.json"):
        os.symlink(os.path.join(tiny, f), os.path.join(d, f))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)
    for rel, text in extra.items():  # newline="": a .jinja's \r\n reaches the reader as written
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return d


def expected(d):
    sv = SpecialVocab(d, load_merges=False)
    w = gguf.GGUFWriter(os.path.join(work, "unused.gguf"), "llama")
    w.add_chat_template(sv.chat_template)
    return {k: v.value for k, v in w.kv_data[0].items() if k.startswith("tokenizer.chat_template")}


def actual(path):
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.chat_template")}


def norm(kvs):
    return {k: (sorted(v) if k == "tokenizer.chat_templates" else v) for k, v in kvs.items()}


def convert(a, b):
    r = subprocess.run([apr_bin, "convert", a, b], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"apr convert {a} {b}: {r.stderr.strip()}")


def main():
    os.makedirs(work, exist_ok=True)
    failures = 0
    for name, (tc, extra) in CASES.items():
        d = make_dir(name, tc, extra)
        want = expected(d)
        g = os.path.join(work, name + ".gguf")
        try:
            convert(d, g)
            got = actual(g)
            ok = norm(got) == norm(want)
            chain = []
            if ok:  # GGUF -> APR -> GGUF -> HF -> GGUF keeps the KVs, names' order included
                prev = g
                for i, ext in enumerate((".apr", ".gguf", "-hf", ".gguf")):
                    nxt = os.path.join(work, f"{name}.{i}{ext}") + ("/" if ext == "-hf" else "")
                    shutil.rmtree(nxt, ignore_errors=True)
                    convert(prev, nxt)
                    if ext == ".gguf" and actual(nxt) != got:
                        chain.append(f"{nxt}: {actual(nxt)!r:.300}")
                    prev = nxt
        except RuntimeError as e:
            ok, chain, got = False, [str(e)], None
        good = ok and not chain
        print(f"{'ok  ' if good else 'FAIL'} {name:22s} {sorted(want)}")
        if not good:
            failures += 1
            print(f"     llama.cpp: {want!r:.400}\n     apr:       {got!r:.400}")
            for c in chain:
                print(f"     chain: {c}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
