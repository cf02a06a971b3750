/* bench_verify.c - wall time of `apr verify SRC DST --ctx N` against
 * llama.cpp's llama-perplexity --kl-divergence-base / --kl-divergence on the
 * same model pair and tokens, with the mean KLD and top-1 agreement of both
 * (goal: time ratio <= 1.0, KLD and top-1 within 1 % relative).
 *
 * usage: bench_verify [--apr PATH] [--threads N] [--ctx N] [--chunks K] [--layers N]
 *                     [--preset qwen2-7b-layer|llama-7b-layer] [--keep DIR]
 *
 * The pair: `apr synth --preset P --layers N --dtype f16` converted to GGUF
 * (SRC) and `apr quantize SRC DST --type Q4_K_M`. Tokens: K * ctx pseudo-random
 * ids (the same file for both sides).
 *
 * The peer: llama-cpp-python ships no llama-perplexity binary, so when none is
 * on PATH its work is emulated with the binding (stated in the output): two
 * processes, the first evaluates SRC chunk by chunk (logits of every
 * position) and saves the log-probabilities of the scored positions (second
 * half of each chunk, llama-perplexity's `first = n_ctx / 2`), the second
 * evaluates DST and computes KL(src || dst) and top-1 agreement over them.
 * Each side's time is the whole process (load + eval + statistics), as for
 * `apr verify`, which runs with --logits: a DST that apr quantize reproduces
 * byte for byte would otherwise be judged by its weights, with no forward pass. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats.h"

#ifndef APR_BIN_PATH
#define APR_BIN_PATH "apr"
#endif

static int run(const char *cmd)
{
    fflush(stdout);
    const int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "bench_verify: failed (%d): %s\n", rc, cmd);
    return rc;
}

/* Seconds taken by cmd (whole process), < 0 on failure. */
static double timed(const char *cmd)
{
    const double t0 = apr_now_s();
    return run(cmd) == 0 ? apr_now_s() - t0 : -1.0;
}

static const char *PEER_PY =
    "import sys, time, numpy as np, llama_cpp\n"
    "mode, path, toks, ctx, th, store = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]\n"
    "ids = [int(x) for x in open(toks).read().split()]\n"
    "m = llama_cpp.Llama(path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=th, n_threads_batch=th,\n"
    "                    logits_all=True, verbose=False)\n"
    "first = ctx // 2; outs = []\n"
    "for c in range(len(ids) // ctx):\n"
    "    m.reset(); m.eval(ids[c * ctx:(c + 1) * ctx])\n"
    "    lg = np.array(m.scores[first:ctx - 1], dtype=np.float64)\n"
    "    lg -= lg.max(axis=1, keepdims=True); lp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))\n"
    "    outs.append(lp.astype(np.float32))\n"
    "lp = np.concatenate(outs)\n"
    "if mode == 'base':\n"
    "    np.save(store, lp)\n"
    "else:\n"
    "    b = np.load(store).astype(np.float64); d = lp.astype(np.float64)\n"
    "    kld = (np.exp(b) * (b - d)).sum(axis=1)\n"
    "    top1 = (b.argmax(axis=1) == d.argmax(axis=1)).mean() * 100\n"
    "    print(kld.mean(), top1, len(kld))\n";

int main(int argc, char **argv)
{
    const char *apr = APR_BIN_PATH, *preset = "qwen2-7b-layer", *keep = NULL;
    int threads = 2;
    unsigned ctx = 512, chunks = 2, layers = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto bad;
        if (!strcmp(a, "--apr"))
            apr = v;
        else if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "--keep"))
            keep = v;
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--ctx"))
            ctx = (unsigned)atoi(v);
        else if (!strcmp(a, "--chunks"))
            chunks = (unsigned)atoi(v);
        else if (!strcmp(a, "--layers"))
            layers = (unsigned)atoi(v);
        else
            goto bad;
        i++;
        continue;
    bad:
        fprintf(stderr, "usage: bench_verify [--apr PATH] [--threads N] [--ctx N] [--chunks K] [--layers N] "
                        "[--preset P] [--keep DIR]\n");
        return 2;
    }
    if (threads < 1 || ctx < 8 || ctx % 2 || !chunks || !layers || layers > 64) {
        fprintf(stderr, "bench_verify: bad --threads/--ctx/--chunks/--layers\n");
        return 2;
    }
    char dir[] = "/tmp/apr-bench-verify-XXXXXX";
    const char *d = keep ? keep : mkdtemp(dir);
    if (!d) {
        perror("bench_verify: mkdtemp");
        return 2;
    }
    char cmd[4096];
    printf("pair: apr synth --preset %s --layers %u --dtype f16 -> GGUF (SRC), apr quantize --type Q4_K_M (DST)\n",
           preset, layers);
    printf("tokens: %u chunks of %u, %d threads\n", chunks, ctx, threads);
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; [ -f src.gguf ] || { '%s' synth hf --preset %s --layers %u --dtype f16 -q && "
             "'%s' convert hf src.gguf >/dev/null; }; [ -f dst.gguf ] || '%s' quantize src.gguf dst.gguf --type Q4_K_M "
             "--threads %d >/dev/null",
             d, apr, preset, layers, apr, apr, threads);
    if (run(cmd))
        return 1;
    /* pseudo-random token ids below the vocab (the synth presets have >= 32000) */
    snprintf(cmd, sizeof cmd, "%s/tokens.txt", d);
    FILE *f = fopen(cmd, "w");
    if (!f)
        return 1;
    uint64_t s = 12345;
    for (unsigned i = 0; i < chunks * ctx; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        fprintf(f, "%u ", (unsigned)((s >> 33) % 32000u));
    }
    fclose(f);

    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' verify src.gguf dst.gguf --ctx %u --tokens tokens.txt --threads %d --device cpu "
             "--limits synthetic --logits --json > verify.json; rc=$?; [ $rc -le 1 ]",
             d, apr, ctx, threads);
    const double t_apr = timed(cmd);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && python3 -c 'import json; j = json.load(open(\"verify.json\")); "
             "print(j[\"kld\"][\"mean\"], j[\"top1_agreement_pct\"], j[\"tokens\"][\"scored\"])' > apr.txt",
             d);
    double apr_kld = -1, apr_top1 = -1, apr_n = 0;
    if (t_apr > 0 && run(cmd) == 0) {
        snprintf(cmd, sizeof cmd, "%s/apr.txt", d);
        if ((f = fopen(cmd, "r"))) {
            if (fscanf(f, "%lf %lf %lf", &apr_kld, &apr_top1, &apr_n) != 3)
                apr_kld = -1;
            fclose(f);
        }
    }
    printf("apr verify           %8.1f s  mean KLD %.6f  top-1 %.3f %%  (%.0f positions)\n", t_apr, apr_kld,
           apr_top1, apr_n);

    const bool have_bin = system("command -v llama-perplexity >/dev/null 2>&1") == 0;
    double t_base = -1, t_new = -1, ll_kld = -1, ll_top1 = -1, ll_n = 0;
    if (have_bin) {
        printf("llama.cpp: llama-perplexity on PATH\n");
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && llama-perplexity -m src.gguf -f tokens.txt -c %u -t %d --kl-divergence-base base.kld "
                 ">/dev/null 2>&1", d, ctx, threads);
        t_base = timed(cmd);
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && llama-perplexity -m dst.gguf -c %u -t %d --kl-divergence-base base.kld --kl-divergence "
                 "2>&1 | awk '/Mean    KLD/{k=$3} /Same top p/{t=$4} END{print k, t, 0}' > ll.txt", d, ctx, threads);
        t_new = timed(cmd);
        printf("(note: llama-perplexity tokenizes the text itself; the ids file is read as text)\n");
    } else if (system("python3 -c 'import llama_cpp, numpy' >/dev/null 2>&1") == 0) {
        printf("llama.cpp: no llama-perplexity binary (llama-cpp-python ships none): its --kl-divergence work "
               "emulated with llama-cpp-python (logits_all), two processes\n");
        snprintf(cmd, sizeof cmd, "%s/peer.py", d);
        if (!(f = fopen(cmd, "w")))
            return 1;
        fputs(PEER_PY, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "cd '%s' && python3 peer.py base src.gguf tokens.txt %u %d base.npy", d, ctx,
                 threads);
        t_base = timed(cmd);
        snprintf(cmd, sizeof cmd, "cd '%s' && python3 peer.py kld dst.gguf tokens.txt %u %d base.npy > ll.txt", d,
                 ctx, threads);
        t_new = timed(cmd);
    } else {
        printf("llama.cpp: neither llama-perplexity nor llama-cpp-python: no ratio\n");
    }
    if (t_base > 0 && t_new > 0) {
        snprintf(cmd, sizeof cmd, "%s/ll.txt", d);
        if ((f = fopen(cmd, "r"))) {
            if (fscanf(f, "%lf %lf %lf", &ll_kld, &ll_top1, &ll_n) != 3)
                ll_kld = -1;
            fclose(f);
        }
        const double t_ll = t_base + t_new;
        printf("llama.cpp (2 runs)   %8.1f s  mean KLD %.6f  top-1 %.3f %%  (%.0f positions)\n", t_ll, ll_kld,
               ll_top1, ll_n);
        printf("wall ratio apr/llama.cpp %.3f (goal <= 1.0)\n", t_apr > 0 ? t_apr / t_ll : -1.0);
        if (apr_kld > 0 && ll_kld > 0)
            printf("mean KLD relative difference %.3f %%, top-1 difference %.3f %% (goal: within 1 %%)\n",
                   100.0 * (apr_kld - ll_kld) / ll_kld, 100.0 * (apr_top1 - ll_top1) / ll_top1);
    }
    if (!keep) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
        run(cmd);
    }
    return 0;
}
