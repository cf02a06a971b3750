#!/usr/bin/env python3
"""Special tokens written in the prompt: `apr run VOCAB --tokenize-only`
with and without `--special` against llama-cpp-python's tokenizer
(Llama(vocab_only=True).tokenize(text, add_bos=True, special=...), i.e.
llama.cpp's parse_special) on llama.cpp's own vocabulary files.

usage: special_peer.py APR_BIN LLAMA_CPP_SRC
Exit 0 pass, 1 fail, 77 skip (llama_cpp missing).
"""
import os
import subprocess
import sys

try:
    import llama_cpp
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

# (vocabulary, family, prompt written with that family's control tokens)
CASES = [
    ("qwen2", "ChatML (Qwen2)", "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                                "<|im_start|>assistant\n"),
    ("qwen35", "ChatML (Qwen3.5)", "<|im_start|>user\nHello <|im_end|><|im_start|>assistant\n"),
    ("llama-bpe", "Llama 3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("phi-3", "Phi-3 (SentencePiece)", "<|user|>\nHi there<|end|>\n<|assistant|>\n"),
    ("llama-spm", "LLaMA 2 (SentencePiece)", "<s>[INST] Hi [/INST] Hello</s><s>[INST] again [/INST]"),
    ("command-r", "Command-R", "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>"),
]


def main():
    apr_bin, src = sys.argv[1], sys.argv[2]
    failures = 0
    for vocab, family, text in CASES:
        path = os.path.join(src, "models", f"ggml-vocab-{vocab}.gguf")
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        for special in (False, True):
            want = llm.tokenize(text.encode(), add_bos=True, special=special)
            cmd = [apr_bin, "run", path, "--prompt", text, "--tokenize-only"] + (["--special"] if special else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            got = [int(x) for x in r.stdout.split()] if r.returncode == 0 else None
            ok = got == want
            print(f"{'ok  ' if ok else 'FAIL'} {family:26s} special={special!s:5s} {len(want)} ids")
            if not ok:
                failures += 1
                print(f"     apr:       {got} {r.stderr.strip()[:200]}")
                print(f"     llama.cpp: {want}")
        # the control token is one id only with --special
        if special and len(llm.tokenize(text.encode(), add_bos=False, special=True)) >= len(
                llm.tokenize(text.encode(), add_bos=False, special=False)):
            print(f"FAIL {family}: parse_special did not shorten the ids (test text has no control token?)")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
