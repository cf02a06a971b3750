#!/usr/bin/env python3
"""`apr run MODEL --messages F --tokenize-only` against transformers'
apply_chat_template(..., tokenize=True): for the templates of each family
apr claims (llama.cpp's models/templates/ copies) and the tinycoder
fixture's own, a model directory is made of tinycoder's tokenizer with that
template in tokenizer_config.json, and converted to GGUF by apr; the prompt
ids of both (HF directory and GGUF) must equal transformers' for each
conversation, with add_generation_prompt true and false; a conversation the
template refuses (raise_exception) must fail in apr too.

tokenizer_config.json gets bos_token "<|endoftext|>": tinycoder's HF
tokenizer has no BOS while its config.json's bos_token_id gives the GGUF one
(the converter's rule), and templates print {{ bos_token }}. One more case
keeps tinycoder's tokenizer_config (no bos_token) under Llama 3.1's template:
the HF directory must then render no BOS, as transformers does (the GGUF
cannot tell, and renders llama.cpp's BOS: not compared).

usage: chat_ids_peer.py APR_BIN LLAMA_CPP_SRC TINYCODER_DIR WORKDIR
Exit 0 pass, 1 fail, 77 skip (transformers missing).
"""
import json
import os
import shutil
import subprocess
import sys

try:
    from transformers import AutoTokenizer
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TEMPLATES = ["meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
             "meta-llama-Llama-3.3-70B-Instruct", "Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B", "Qwen-QwQ-32B",
             "mistralai-Mistral-Nemo-Instruct-2407", "Mistral-Small-3.2-24B-Instruct-2506", "google-gemma-2-2b-it",
             "microsoft-Phi-3.5-mini-instruct", "tinycoder"]
NO_HF_BOS = "meta-llama-Llama-3.1-8B-Instruct"  # the extra case: tokenizer_config without bos_token
CONVERSATIONS = {
    "system+user": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Hello! What is 2+2?"}],
    "multi-turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke.\nA short one."}],
}


def main():
    apr_bin, src, tiny, work = sys.argv[1:5]
    os.makedirs(work, exist_ok=True)
    base_tc = json.load(open(os.path.join(tiny, "tokenizer_config.json")))
    failures = 0
    for name in TEMPLATES + [NO_HF_BOS + ":no-bos"]:
        tname, _, variant = name.partition(":")
        if tname == "tinycoder":
            tmpl = base_tc["chat_template"]
        else:
            tmpl = open(os.path.join(src, "models", "templates", tname + ".jinja"), encoding="utf-8").read()
        d = os.path.join(work, name.replace(":", "-"))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for f in ("config.json", "tokenizer.json", "model.safetensors", "generation_config.json"):
            os.symlink(os.path.join(tiny, f), os.path.join(d, f))
        tc = dict(base_tc, chat_template=tmpl) if variant else dict(base_tc, chat_template=tmpl, bos_token="<|endoftext|>")
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(tc, f)
        g = d + ".gguf"
        r = subprocess.run([apr_bin, "convert", d, g, "-q"], capture_output=True, text=True)
        if r.returncode:
            print(f"FAIL {name}: apr convert: {r.stderr.strip()}")
            failures += 1
            continue
        tok = AutoTokenizer.from_pretrained(d)
        before = failures
        for conv, msgs in CONVERSATIONS.items():
            for agp in (False, True):
                try:
                    want = list(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=agp,
                                                        return_dict=False))
                except Exception as e:
                    want = f"raises {type(e).__name__}"
                mf = os.path.join(work, "messages.json")
                with open(mf, "w") as f:
                    json.dump(msgs, f)
                for model in ((d,) if variant else (d, g)):
                    cmd = [apr_bin, "run", model, "--messages", mf, "--tokenize-only"]
                    if not agp:
                        cmd.append("--no-generation-prompt")
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    got = [int(x) for x in r.stdout.split()] if r.returncode == 0 else f"raises ({r.stderr.strip()[:120]})"
                    ok = got == want or (isinstance(want, str) and isinstance(got, str))
                    if not ok:
                        failures += 1
                        print(f"FAIL {name} {conv} agp={agp} {os.path.basename(model)}\n  transformers: {want}\n  apr:          {got}")
        print(f"{'ok  ' if failures == before else 'FAIL'} {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
