/* bench_tokenize.c - tokenizing about 1 MB of text with libtok and with
 * llama.cpp's tokenizer (llama-cpp-python: Llama(vocab_only=True), then one
 * llama_tokenize call over the whole text) on the same vocabulary, in the
 * same run; prints MB/s of both and the ratio apr / llama.cpp, and checks
 * that both produce the same ids.
 *
 * usage: bench_tokenize [VOCAB.gguf ...] [--mb N] [--reps N]
 *   VOCAB  GGUF files with a tokenizer (default: llama.cpp's
 *          models/ggml-vocab-{llama-spm,llama-bpe,qwen2,gpt-2,gemma-4}.gguf
 *          from $APR_LLAMA_CPP_SRC or ~/.cache/apr-peer/llama.cpp).
 *   --mb   text size in MB (default 1): llama.cpp's README, docs and
 *          sources (English, Markdown, C++) plus every models/ggml-vocab-NAME.gguf.inp vector
 *          file (many scripts and emoji), repeated to size.
 *   --reps timed runs per side; the best is reported (default 3).
 * add_special = false, parse_special = false on both sides (test-tokenizer-0's
 * setting). llama-cpp-python's own Llama.tokenize() tokenizes twice when the
 * text has more tokens than n_ctx_train (it sizes its first buffer by it), so
 * llama_tokenize is called directly with a buffer large enough; the wrapper's
 * time is printed as well. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tok.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        char *np = realloc(b->p, b->cap);
        if (!np) {
            fprintf(stderr, "bench_tokenize: out of memory\n");
            exit(1);
        }
        b->p = np;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Append a file's bytes, NULs dropped (the text is a C string). */
static void add_file(buf *b, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        size_t k = 0;
        for (size_t i = 0; i < r; i++)
            if (chunk[i])
                chunk[k++] = chunk[i];
        buf_add(b, chunk, k);
    }
    fclose(f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files of dir ending in suffix, sorted by name, appended. */
static void add_dir(buf *b, const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char *names[4096];
    size_t n = 0;
    struct dirent *e;
    const size_t sl = strlen(suffix);
    while ((e = readdir(d)) && n < 4096) {
        const size_t l = strlen(e->d_name);
        if (l > sl && !strcmp(e->d_name + l - sl, suffix))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        add_file(b, p);
        free(names[i]);
    }
}

static char *make_text(const char *src, size_t target, size_t *len)
{
    buf corpus = {0};
    char p[8192];
    snprintf(p, sizeof p, "%s/README.md", src);
    add_file(&corpus, p);
    snprintf(p, sizeof p, "%s/docs", src);
    add_dir(&corpus, p, ".md");
    snprintf(p, sizeof p, "%s/models", src);
    add_dir(&corpus, p, ".inp");
    snprintf(p, sizeof p, "%s/src", src);
    add_dir(&corpus, p, ".cpp");
    if (!corpus.n) {
        fprintf(stderr, "bench_tokenize: no text under %s\n", src);
        exit(1);
    }
    buf t = {0};
    while (t.n < target)
        buf_add(&t, corpus.p, corpus.n < target - t.n ? corpus.n : target - t.n);
    /* do not end inside a UTF-8 sequence */
    while (t.n && ((unsigned char)t.p[t.n - 1] & 0xC0) == 0x80)
        t.n--;
    if (t.n && (unsigned char)t.p[t.n - 1] >= 0xC0)
        t.n--;
    t.p[t.n] = 0;
    free(corpus.p);
    *len = t.n;
    return t.p;
}

/* llama.cpp's best seconds (raw llama_tokenize, and the Llama.tokenize wrapper);
 * its ids are written to ids_path as int32. < 0: unavailable. */
static double llama_time(const char *gguf, const char *text_path, const char *ids_path, int reps, double *wrapper)
{
    char cmd[32768];
    snprintf(cmd, sizeof cmd,
             "python3 - '%s' '%s' '%s' %d 2>/dev/null <<'EOF'\n"
             "import sys, time, array, ctypes\n"
             "import llama_cpp\n"
             "path, tp, ip, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])\n"
             "m = llama_cpp.Llama(path, vocab_only=True, verbose=False)\n"
             "text = open(tp, 'rb').read()\n"
             "cap = len(text) + 16\n"
             "toks = (llama_cpp.llama_token * cap)()\n"
             "best = 1e30\n"
             "for r in range(reps):\n"
             "    t0 = time.perf_counter()\n"
             "    n = llama_cpp.llama_tokenize(m._model.vocab, text, len(text), toks, cap, False, False)\n"
             "    best = min(best, time.perf_counter() - t0)\n"
             "t0 = time.perf_counter(); w = m.tokenize(text, add_bos=False, special=False)\n"
             "wt = time.perf_counter() - t0\n"
             "assert n >= 0 and list(toks[:n]) == w\n"
             "array.array('i', toks[:n]).tofile(open(ip, 'wb'))\n"
             "print(best, wt)\n"
             "EOF",
             gguf, text_path, ids_path, reps);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1.0;
    double v = -1.0;
    if (fscanf(p, "%lf %lf", &v, wrapper) != 2)
        v = -1.0;
    if (pclose(p) != 0)
        return -1.0;
    return v;
}

/* Whether ids equal the int32 file's. */
static bool same_ids(const int32_t *ids, size_t n, const char *path, size_t *n_ref)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    struct stat st;
    bool ok = fstat(fileno(f), &st) == 0;
    *n_ref = ok ? (size_t)st.st_size / 4 : 0;
    int32_t *ref = ok ? malloc(st.st_size ? (size_t)st.st_size : 1) : NULL;
    ok = ref && fread(ref, 4, *n_ref, f) == *n_ref && *n_ref == n && !memcmp(ref, ids, n * 4);
    free(ref);
    fclose(f);
    return ok;
}

static int bench_one(const char *gguf, const char *text, size_t len, const char *tmp, int reps, bool have_llama)
{
    apr_err err = {0};
    apr_model *m = NULL;
    apr_tok *t = NULL;
    if (apr_model_open(&m, gguf, NULL, &err) || apr_tok_load(&t, m, &err)) {
        printf("%-28s apr: %s\n", strrchr(gguf, '/') ? strrchr(gguf, '/') + 1 : gguf, err.msg);
        apr_model_free(m);
        return 1;
    }
    double best = 1e30;
    int32_t *ids = NULL;
    size_t n = 0;
    for (int r = 0; r < reps; r++) {
        free(ids);
        const double t0 = now_s();
        if (apr_tok_encode(t, text, false, &ids, &n, &err)) {
            printf("apr: %s\n", err.msg);
            return 1;
        }
        const double dt = now_s() - t0;
        best = dt < best ? dt : best;
    }
    const char *name = strrchr(gguf, '/') ? strrchr(gguf, '/') + 1 : gguf;
    const double mb = (double)len / 1e6;
    int rc = 0;
    if (have_llama) {
        char tp[4200], ip[4200];
        snprintf(tp, sizeof tp, "%s/text", tmp);
        snprintf(ip, sizeof ip, "%s/ids", tmp);
        double wrap = 0;
        const double lt = llama_time(gguf, tp, ip, reps, &wrap);
        size_t nref = 0;
        if (lt <= 0) {
            printf("%-28s apr %7.2f MB/s  llama.cpp: failed\n", name, mb / best);
            rc = 1;
        } else {
            const bool same = same_ids(ids, n, ip, &nref);
            printf("%-28s %8zu tokens  apr %7.2f MB/s  llama.cpp %7.2f MB/s (Llama.tokenize %6.2f)  "
                   "ratio %.2fx  ids %s\n",
                   name, n, mb / best, mb / lt, mb / wrap, lt / best, same ? "equal" : "DIFFER");
            if (!same) {
                printf("  apr %zu tokens, llama.cpp %zu\n", n, nref);
                rc = 1;
            }
        }
        unlink(ip);
    } else {
        printf("%-28s %8zu tokens  apr %7.2f MB/s\n", name, n, mb / best);
    }
    free(ids);
    apr_tok_free(t);
    apr_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    double mb = 1.0;
    int reps = 3;
    const char *vocabs[64];
    int nv = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_tokenize [VOCAB.gguf ...] [--mb N] [--reps N]\n");
            return 2;
        } else if (nv < 64)
            vocabs[nv++] = argv[i];
    }
    if (mb <= 0 || mb > 1024 || reps < 1) {
        fprintf(stderr, "bench_tokenize: --mb must be in (0, 1024], --reps >= 1\n");
        return 2;
    }
    char src[4096];
    const char *env = getenv("APR_LLAMA_CPP_SRC");
    if (env && *env)
        snprintf(src, sizeof src, "%s", env);
    else
        snprintf(src, sizeof src, "%s/.cache/apr-peer/llama.cpp", getenv("HOME") ? getenv("HOME") : ".");
    static char defaults[5][4200];
    static const char *const names[] = {"llama-spm", "llama-bpe", "qwen2", "gpt-2", "gemma-4"};
    if (!nv)
        for (int i = 0; i < 5; i++) {
            snprintf(defaults[i], sizeof defaults[i], "%s/models/ggml-vocab-%s.gguf", src, names[i]);
            vocabs[nv++] = defaults[i];
        }
    size_t len = 0;
    char *text = make_text(src, (size_t)(mb * 1e6), &len);
    char tmp[] = "/tmp/bench_tokenize.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char tp[4200];
    snprintf(tp, sizeof tp, "%s/text", tmp);
    FILE *f = fopen(tp, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f)) {
        perror(tp);
        return 1;
    }
    const bool have_llama = system("python3 -c 'import llama_cpp' >/dev/null 2>&1") == 0;
    printf("bench_tokenize: %.2f MB of text, best of %d, add_special = parse_special = false%s\n", (double)len / 1e6,
           reps, have_llama ? "" : " (llama_cpp not importable: apr only)");
    int rc = 0;
    for (int i = 0; i < nv; i++)
        rc |= bench_one(vocabs[i], text, len, tmp, reps, have_llama);
    unlink(tp);
    rmdir(tmp);
    free(text);
    return rc;
}
