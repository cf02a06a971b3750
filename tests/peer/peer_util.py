"""Helpers the peer scripts share (imported from this folder: each script is
run as `python3 tests/peer/NAME.py`, so its own folder is on sys.path).

Importing this module needs nothing beyond the standard library; llama_cpp is
imported by the caller (each script exits 77 itself when it is missing) and
passed in, so a missing package is still reported by the script that needs it.
"""
import argparse
import os


def llama_greedy(llama_cpp, path, prompt, n, n_ctx=128):
    """llama.cpp's greedy continuation of prompt (BOS added): up to n token
    ids (stopping at EOS) and their text."""
    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=2, verbose=False, seed=1)
    toks = llm.tokenize(prompt.encode(), add_bos=True)
    out = []
    for t in llm.generate(toks, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        if t == llm.token_eos() or len(out) >= n:
            break
        out.append(t)
    text = llm.detokenize(out).decode(errors="replace")
    del llm
    return out, text


def apr_tool_args(description=None):
    """The --apr (default $APR_BIN) and --tmp (default /tmp, created) options
    of the scripts that drive the apr binary; None (after a FAIL line) when no
    binary was named."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--apr", default=os.environ.get("APR_BIN"))
    ap.add_argument("--tmp", default="/tmp")
    args = ap.parse_args()
    if not args.apr:
        print("FAIL: no apr binary (--apr or APR_BIN)")
        return None
    os.makedirs(args.tmp, exist_ok=True)
    return args


def report_case(what, bad, most=None):
    """Prints one case's line ("ok   WHAT" or "FAIL WHAT") and, under it, its
    failures (the first `most` of them when given); True when it failed."""
    print(("FAIL " if bad else "ok   ") + what)
    for line in bad[:most]:
        print("     " + line)
    return bool(bad)
