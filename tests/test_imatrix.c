/* test_imatrix.c - `apr imatrix` (libforward/imatrix.c, libconvert's
 * imatrix writers, tools/cmd_imatrix.c):
 *   - the sums equal a direct computation: layer 0's Q/K/V input
 *     (rmsnorm(embedding) * attn_norm) recomputed here from the weights, per
 *     column; every other input's total against the trace's statistics of the
 *     same activation (n * (std^2 + mean^2));
 *   - the hook changes no logit bit (all positions, last token);
 *   - both files round-trip through apr's imatrix reader (what
 *     `apr quantize --imatrix` loads), zero counts as llama-imatrix writes
 *     them; malformed statistics are refused and leave nothing behind;
 *   - the CLI: both formats from one run agree; the HF directory, the GGUF
 *     and the APR of one model give the same file byte for byte; bad input
 *     is refused with a clear message and nothing at OUT.
 * The claim that it helps (held-out KLD on a trained model) is
 * test_imatrix_kld.c (label slow); llama.cpp's side is
 * tests/peer/imatrix_peer.py (test_imatrix_peer.c). */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forward.h"
#include "quant.h"
#include "test_util.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"
#define CTX 64
#define N_TOK 256

static void make_tokens(int32_t *ids, size_t n, uint32_t vocab)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % vocab);
}

static const apr_imatrix_stat *stat_find(const apr_imatrix_stats *s, const char *name)
{
    for (uint64_t i = 0; i < s->n_entries; i++)
        if (!strcmp(s->e[i].name, name))
            return &s->e[i];
    return NULL;
}

static const float *f32_tensor(const apr_model *m, const char *name, uint64_t n)
{
    const apr_tensor *t = apr_model_tensor(m, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, APR_DT_F32);
    assert_int_equal(t->nbytes, n * 4);
    return (const float *)t->data;
}

static double stat_total(const apr_imatrix_stat *e)
{
    double s = 0;
    for (uint64_t j = 0; j < e->n; j++)
        s += e->sum2[j];
    return s;
}

/* The fixture model opened and loaded for the CPU forward pass at 2
 * threads (skipped without ../shared). */
typedef struct {
    apr_model *m;
    apr_fwd *f;
    const apr_arch_config *c;
} fwd_fixture;

static void fixture_open(fwd_fixture *fx, uint32_t max_ctx)
{
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_err err = {0};
    *fx = (fwd_fixture){0};
    assert_int_equal(apr_model_open(&fx->m, path, NULL, &err), 0);
    const apr_fwd_opts fo = {.n_threads = 2, .device = APR_DEV_CPU, .max_ctx = max_ctx};
    assert_int_equal(apr_fwd_load(&fx->f, fx->m, &fo, &err), 0);
    fx->c = apr_fwd_config(fx->f);
}

static void fixture_close(fwd_fixture *fx)
{
    apr_fwd_free(fx->f);
    apr_model_free(fx->m);
}

/* ---------------------------------------------------------------- sums */

static void test_sums_equal_direct_computation(void **state)
{
    (void)state;
    fwd_fixture fxt;
    fixture_open(&fxt, CTX);
    apr_model *m = fxt.m;
    apr_fwd *f = fxt.f;
    const apr_arch_config *c = fxt.c;
    apr_err err = {0};
    const uint64_t H = c->hidden;
    int32_t ids[N_TOK + 10];
    make_tokens(ids, N_TOK + 10, c->vocab);
    const int32_t bos = m->tok.bos_id;
    assert_true(bos >= 0);

    apr_imatrix_stats st;
    const apr_imatrix_opts io = {.ctx = CTX, .bos = bos};
    assert_int_equal(apr_fwd_imatrix(f, ids, N_TOK + 10, &io, &st, &err), 0); /* 10 left over: 4 whole chunks */
    assert_int_equal(st.n_entries, 7 * c->n_layers);
    assert_int_equal(st.chunk_size, CTX);
    assert_int_equal(st.chunks, N_TOK / CTX);
    assert_int_equal(st.n_datasets, 0);
    for (uint64_t i = 0; i < st.n_entries; i++)
        assert_int_equal(st.e[i].count, N_TOK);

    /* layer 0: rmsnorm(embedding row) * attn_norm, as cpu.c's rmsnorm computes it */
    const float *emb = f32_tensor(m, "token_embd.weight", (uint64_t)c->vocab * H);
    const float *an = f32_tensor(m, "blk.0.attn_norm.weight", H);
    double *direct = calloc(H, sizeof *direct);
    for (int t = 0; t < N_TOK; t++) {
        const int32_t id = t % CTX == 0 ? bos : ids[t];
        const float *x = emb + (uint64_t)id * H;
        double ss = 0;
        for (uint64_t j = 0; j < H; j++)
            ss += (double)(x[j] * x[j]);
        const float scale = 1.0f / sqrtf((float)(ss / (double)H) + c->rms_eps);
        for (uint64_t j = 0; j < H; j++) {
            const double v = (double)((x[j] * scale) * an[j]);
            direct[j] += v * v;
        }
    }
    const apr_imatrix_stat *q = stat_find(&st, "blk.0.attn_q.weight");
    assert_non_null(q);
    assert_int_equal(q->n, H);
    double worst = 0;
    for (uint64_t j = 0; j < H; j++) {
        const double rel = fabs(q->sum2[j] - direct[j]) / direct[j];
        if (rel > worst)
            worst = rel;
    }
    print_message("layer 0 Q/K/V input: %llu columns, worst relative difference %.3g from the direct sums\n",
                  (unsigned long long)H, worst);
    assert_true(worst < 1e-5); /* f32 accumulation over 256 tokens */
    free(direct);
    /* Q, K and V share one input: identical sums */
    const apr_imatrix_stat *k = stat_find(&st, "blk.0.attn_k.weight"), *v = stat_find(&st, "blk.0.attn_v.weight");
    assert_non_null(k);
    assert_non_null(v);
    assert_memory_equal(q->sum2, k->sum2, H * 4);
    assert_memory_equal(q->sum2, v->sum2, H * 4);

    /* every layer's four inputs against the trace of the same activations */
    apr_trace tr;
    assert_int_equal(apr_trace_init(&tr, c->n_layers, false), 0);
    double *tot = calloc((size_t)c->n_layers * APR_TR_COUNT, sizeof *tot);
    for (int ch = 0; ch < N_TOK / CTX; ch++) {
        int32_t buf[CTX];
        memcpy(buf, ids + ch * CTX, sizeof buf);
        buf[0] = bos;
        apr_fwd_reset(f);
        assert_int_equal(apr_fwd_eval(f, buf, CTX, NULL, &tr, &err), 0);
        for (uint32_t i = 0; i < c->n_layers * APR_TR_COUNT; i++)
            tot[i] += (double)tr.s[i].n * (tr.s[i].std * tr.s[i].std + tr.s[i].mean * tr.s[i].mean);
    }
    static const struct {
        const char *w;
        apr_trace_step step;
    } pairs[] = {{"attn_q", APR_TR_ATTN_NORM}, {"attn_output", APR_TR_ATTN_OUT}, {"ffn_gate", APR_TR_FFN_NORM},
                 {"ffn_up", APR_TR_FFN_NORM}, {"ffn_down", APR_TR_SWIGLU}};
    double worst_tr = 0;
    for (uint32_t il = 0; il < c->n_layers; il++)
        for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%u.%s.weight", il, pairs[p].w);
            const apr_imatrix_stat *e = stat_find(&st, name);
            assert_non_null(e);
            const double want = tot[il * APR_TR_COUNT + pairs[p].step];
            const double rel = fabs(stat_total(e) - want) / want;
            if (rel > worst_tr)
                worst_tr = rel;
        }
    print_message("every input's total vs the trace: worst relative difference %.3g\n", worst_tr);
    assert_true(worst_tr < 1e-4);
    free(tot);
    apr_trace_free(&tr);

    /* too few tokens for two chunks is refused, as llama-imatrix does */
    apr_imatrix_stats st2;
    assert_int_equal(apr_fwd_imatrix(f, ids, 2 * CTX - 1, &io, &st2, &err), APR_E_ARG);
    assert_non_null(strstr(err.msg, "at least 128"));
    const apr_imatrix_opts big = {.ctx = CTX + 1, .bos = bos};
    assert_int_equal(apr_fwd_imatrix(f, ids, N_TOK, &big, &st2, &err), APR_E_ARG);
    /* --chunks: only that many */
    const apr_imatrix_opts two = {.ctx = CTX, .chunks = 2, .bos = -1};
    assert_int_equal(apr_fwd_imatrix(f, ids, N_TOK, &two, &st2, &err), 0);
    assert_int_equal(st2.chunks, 2);
    assert_int_equal(st2.e[0].count, 2 * CTX);
    apr_imatrix_stats_free(&st2);

    apr_imatrix_stats_free(&st);
    fixture_close(&fxt);
}

/* ---------------------------------------------------------------- --process-output, perplexity, --in-file */

static void same_stats(const apr_imatrix_stats *a, const apr_imatrix_stats *b)
{
    assert_int_equal(a->n_entries, b->n_entries);
    for (uint64_t i = 0; i < a->n_entries; i++) {
        const apr_imatrix_stat *e = stat_find(b, a->e[i].name);
        assert_non_null(e);
        assert_int_equal(e->n, a->e[i].n);
        assert_int_equal(e->count, a->e[i].count);
        assert_memory_equal(e->sum2, a->e[i].sum2, e->n * 4);
    }
}

/* process_output adds output.weight (the final norm's output, every token)
 * and changes no other entry; the perplexity is llama-imatrix's (second
 * half of each chunk, recomputed here in double from apr_fwd_eval's logits);
 * start: continuing from A's statistics over B's tokens gives bit for bit
 * the statistics of A's tokens followed by B's, and A through a GGUF file
 * (apr_imatrix_stats_add_file) is A exactly. */
static void test_output_ppl_and_start(void **state)
{
    (void)state;
    fwd_fixture fxt;
    fixture_open(&fxt, CTX);
    apr_model *m = fxt.m;
    apr_fwd *f = fxt.f;
    const apr_arch_config *c = fxt.c;
    apr_err err = {0};
    assert_false(apr_fwd_output_tied(f));
    int32_t ids[N_TOK];
    make_tokens(ids, N_TOK, c->vocab);
    const int32_t bos = m->tok.bos_id;

    apr_imatrix_stats plain, out;
    apr_imatrix_ppl ppl = {0};
    const apr_imatrix_opts io = {.ctx = CTX, .bos = bos};
    const apr_imatrix_opts oo = {.ctx = CTX, .bos = bos, .process_output = true, .ppl = &ppl};
    assert_int_equal(apr_fwd_imatrix(f, ids, N_TOK, &io, &plain, &err), 0);
    assert_int_equal(apr_fwd_imatrix(f, ids, N_TOK, &oo, &out, &err), 0);
    assert_int_equal(out.n_entries, plain.n_entries + 1);
    const apr_imatrix_stat *o = stat_find(&out, "output.weight");
    assert_non_null(o);
    assert_int_equal(o->n, c->hidden);
    assert_int_equal(o->count, N_TOK);
    for (uint64_t j = 0; j < o->n; j++)
        assert_true(o->sum2[j] > 0 && isfinite(o->sum2[j]));
    for (uint64_t i = 0; i < plain.n_entries; i++) {
        const apr_imatrix_stat *e = stat_find(&out, plain.e[i].name);
        assert_non_null(e);
        assert_memory_equal(e->sum2, plain.e[i].sum2, e->n * 4);
    }

    /* the perplexity, from the logits of the same chunks */
    float *logits = malloc((size_t)CTX * c->vocab * sizeof *logits);
    double nll = 0, nll2 = 0;
    uint64_t cnt = 0;
    for (int ch = 0; ch < N_TOK / CTX; ch++) {
        int32_t buf[CTX];
        memcpy(buf, ids + ch * CTX, sizeof buf);
        buf[0] = bos;
        apr_fwd_reset(f);
        assert_int_equal(apr_fwd_eval(f, buf, CTX, logits, NULL, &err), 0);
        for (int i = CTX / 2; i + 1 < CTX; i++) {
            const float *l = logits + (size_t)i * c->vocab;
            double mx = l[0], se = 0;
            for (uint32_t k = 1; k < c->vocab; k++)
                mx = l[k] > mx ? l[k] : mx;
            for (uint32_t k = 0; k < c->vocab; k++)
                se += exp((double)l[k] - mx);
            const double v = -((double)l[ids[ch * CTX + i + 1]] - mx - log(se));
            nll += v;
            nll2 += v * v;
            cnt++;
        }
    }
    free(logits);
    assert_int_equal(ppl.count, cnt);
    assert_int_equal(cnt, (N_TOK / CTX) * (CTX / 2 - 1));
    double p, pe;
    apr_imatrix_ppl_final(&ppl, &p, &pe);
    const double want = exp(nll / (double)cnt);
    const double want_err = sqrt((nll2 / (double)cnt - (nll / cnt) * (nll / cnt)) / (double)(cnt - 1)) * want;
    print_message("imatrix perplexity %.6f +/- %.6f (direct %.6f +/- %.6f)\n", p, pe, want, want_err);
    assert_true(fabs(p - want) / want < 1e-6);
    assert_true(fabs(pe - want_err) / want_err < 1e-4);

    /* start: A (chunks 0-1) then B (chunks 2-3) = A followed by B */
    apr_imatrix_stats sa, sab;
    assert_int_equal(apr_fwd_imatrix(f, ids, 2 * CTX, &oo, &sa, &err), 0);
    const apr_imatrix_opts so = {.ctx = CTX, .bos = bos, .process_output = true, .start = &sa};
    assert_int_equal(apr_fwd_imatrix(f, ids + 2 * CTX, 2 * CTX, &so, &sab, &err), 0);
    assert_int_equal(sab.chunks, N_TOK / CTX);
    same_stats(&out, &sab);
    /* through a GGUF file and back */
    const char *dir = tu_tmpdir("imatrix-start");
    char path[4200];
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    assert_int_equal(apr_imatrix_write_gguf(&sa, path, &err), 0);
    apr_imatrix_stats back = {.chunk_size = CTX};
    assert_int_equal(apr_imatrix_stats_add_file(&back, path, &err), 0);
    same_stats(&sa, &back);
    assert_int_equal(back.chunks, 2);
    /* a loaded entry whose size the model does not have is refused */
    back.e[0].n--;
    apr_imatrix_stats bad;
    const apr_imatrix_opts bo = {.ctx = CTX, .bos = bos, .start = &back};
    assert_int_not_equal(apr_fwd_imatrix(f, ids, 2 * CTX, &bo, &bad, &err), 0);
    assert_non_null(strstr(err.msg, back.e[0].name));
    back.e[0].n++;

    apr_imatrix_stats_free(&back);
    apr_imatrix_stats_free(&sa);
    apr_imatrix_stats_free(&sab);
    apr_imatrix_stats_free(&plain);
    apr_imatrix_stats_free(&out);
    fixture_close(&fxt);
}

/* ---------------------------------------------------------------- the hook changes no bit */

/* user: rows seen by the layers' matmuls, then by the output matrix */
static void count_hook(void *user, uint32_t layer, apr_mm_input in, const float *x, uint32_t nt, uint64_t cols)
{
    (void)layer;
    (void)x;
    (void)cols;
    ((uint64_t *)user)[in == APR_MM_IN_OUTPUT] += nt;
}

static void test_hook_changes_no_logit(void **state)
{
    (void)state;
    fwd_fixture fxt;
    fixture_open(&fxt, 256);
    apr_fwd *f = fxt.f;
    const apr_arch_config *c = fxt.c;
    apr_err err = {0};
    enum { N = 100 }; /* two CPU batches */
    int32_t ids[N];
    make_tokens(ids, N, c->vocab);
    float *a = malloc((size_t)N * c->vocab * 4), *b = malloc((size_t)N * c->vocab * 4);
    float la[512], lb[512];
    assert_true(c->vocab <= 512);
    assert_int_equal(apr_fwd_eval(f, ids, N, a, NULL, &err), 0);
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_eval_last(f, ids, N, la, NULL, &err), 0);
    uint64_t seen[2] = {0, 0};
    assert_int_equal(apr_fwd_set_mm_hook(f, count_hook, seen, &err), 0);
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_eval(f, ids, N, b, NULL, &err), 0);
    assert_int_equal(seen[0], (uint64_t)N * c->n_layers * APR_MM_IN_COUNT);
    assert_int_equal(seen[1], N); /* the output matrix: the rows whose logits are computed */
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_eval_last(f, ids, N, lb, NULL, &err), 0);
    /* the last layer is not pruned while a hook listens: every token, every input */
    assert_int_equal(seen[0], 2ull * N * c->n_layers * APR_MM_IN_COUNT);
    assert_int_equal(seen[1], N + 1);
    assert_memory_equal(a, b, (size_t)N * c->vocab * 4);
    assert_memory_equal(la, lb, (size_t)c->vocab * 4);
    assert_memory_equal(la, a + (size_t)(N - 1) * c->vocab, (size_t)c->vocab * 4);
    assert_int_equal(apr_fwd_set_mm_hook(f, NULL, NULL, &err), 0);
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_eval(f, ids, N, b, NULL, &err), 0);
    assert_int_equal(seen[0], 2ull * N * c->n_layers * APR_MM_IN_COUNT);
    free(a);
    free(b);
    fixture_close(&fxt);
}

/* ---------------------------------------------------------------- writers */

static void fill_stats(apr_imatrix_stats *s)
{
    static const char *names[] = {"blk.1.ffn_down.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight"};
    static const uint64_t ns[] = {48, 32, 32};
    static const int64_t counts[] = {300, 300, 0}; /* a weight that never saw input */
    *s = (apr_imatrix_stats){.chunk_size = 100, .chunks = 3};
    assert_int_equal(apr_imatrix_stats_add_dataset(s, "calib.txt", NULL), 0);
    s->e = calloc(3, sizeof *s->e);
    for (int i = 0; i < 3; i++) {
        apr_imatrix_stat *e = &s->e[s->n_entries++];
        e->name = strdup(names[i]);
        e->n = ns[i];
        e->count = counts[i];
        e->sum2 = malloc(ns[i] * 4);
        for (uint64_t j = 0; j < ns[i]; j++)
            e->sum2[j] = counts[i] ? 0.37f * (float)(j + 1) * (float)(i + 2) : 0.0f;
    }
}

static void test_writers_round_trip_through_the_reader(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("imat-rt");
    apr_imatrix_stats s;
    fill_stats(&s);
    apr_err err = {0};
    char gg[4096], dat[4096];
    snprintf(gg, sizeof gg, "%s/im.gguf", dir);
    snprintf(dat, sizeof dat, "%s/im.dat", dir);
    assert_int_equal(apr_imatrix_write_gguf(&s, gg, &err), 0);
    assert_int_equal(apr_imatrix_write_dat(&s, dat, &err), 0);

    apr_imatrix *ig = NULL, *id = NULL;
    assert_int_equal(apr_imatrix_load(&ig, gg, &err), 0);
    assert_int_equal(apr_imatrix_load(&id, dat, &err), 0);
    assert_int_equal(ig->n_entries, 3); /* the GGUF keeps the empty entry... */
    assert_int_equal(id->n_entries, 2); /* ...the .dat skips it, as llama-imatrix does */
    assert_int_equal(ig->chunks, 3);
    assert_int_equal(id->chunks, 3);
    assert_string_equal(ig->dataset, "calib.txt");
    assert_string_equal(id->dataset, "calib.txt");
    /* sorted by name in both */
    assert_string_equal(ig->entries[0].name, "blk.0.attn_q.weight");
    assert_string_equal(ig->entries[1].name, "blk.0.ffn_up.weight");
    assert_string_equal(ig->entries[2].name, "blk.1.ffn_down.weight");
    assert_string_equal(id->entries[0].name, "blk.0.attn_q.weight");
    assert_string_equal(id->entries[1].name, "blk.1.ffn_down.weight");
    for (uint64_t i = 0; i < s.n_entries; i++) {
        const apr_imatrix_stat *e = &s.e[i];
        const apr_imatrix_entry *g = apr_imatrix_find(ig, e->name), *d = apr_imatrix_find(id, e->name);
        assert_non_null(g);
        assert_int_equal(g->n, e->n);
        for (uint64_t j = 0; j < e->n; j++) {
            /* llama-quantize: sum / count, 1 for a weight without data */
            const float want = e->count ? e->sum2[j] / (float)e->count : 1.0f;
            assert_true(g->values[j] == want);
            if (e->count) /* (sum / count) * ncall, divided back by ncall */
                assert_true(fabsf(d->values[j] - want) <= 1e-6f * want);
        }
        if (!e->count)
            assert_null(d);
    }
    apr_imatrix_free(ig);
    apr_imatrix_free(id);

    /* malformed statistics: refused, nothing written */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/bad.gguf", dir);
    free(s.e[2].name);
    s.e[2].name = strdup(s.e[0].name);
    assert_int_equal(apr_imatrix_write_gguf(&s, bad, &err), APR_E_ARG);
    assert_non_null(strstr(err.msg, "appears twice"));
    free(s.e[2].name);
    s.e[2].name = strdup("blk.2.attn_k.weight");
    s.e[1].sum2[3] = NAN;
    assert_int_equal(apr_imatrix_write_dat(&s, bad, &err), APR_E_FORMAT);
    assert_non_null(strstr(err.msg, "not finite"));
    s.e[1].sum2[3] = 1.0f;
    s.chunk_size = 0;
    assert_int_equal(apr_imatrix_write_gguf(&s, bad, &err), APR_E_ARG);
    struct stat sb;
    assert_int_equal(stat(bad, &sb), -1);
    apr_imatrix_stats_free(&s);
}

/* ---------------------------------------------------------------- the CLI */

static int apr_cli(const char *dir, const char *tag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static char g_last_err[8192];

/* `apr ARGS`, stderr kept in g_last_err; returns the exit status. */
static int apr_cli(const char *dir, const char *tag, const char *fmt, ...)
{
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char e[4096];
    snprintf(e, sizeof e, "%s/%s.err", dir, tag);
    const int rc = tu_system(NULL, "'%s' %s >/dev/null 2>'%s'", tu_apr_bin(), args, e);
    char *s = tu_read_file(e, NULL);
    snprintf(g_last_err, sizeof g_last_err, "%s", s ? s : "");
    free(s);
    return rc;
}

#define REQUIRE_APR()                                                                              \
    do {                                                                                           \
        if (!tu_apr_bin())                                                                         \
            tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set (run through ctest)");            \
    } while (0)

/* Text of the fixture's tokenizer: several hundred tokens of words. */
static const char *write_text(const char *dir, const char *name, int reps)
{
    const char *p = tu_path(dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < reps; i++)
        fprintf(f, "Once upon a time, there was a little girl named Lily number %d. She loved to play "
                   "outside in the park with her friends.\n", i);
    fclose(f);
    return p;
}

static void test_cli_writes_both_formats(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR();
    const char *dir = tu_tmpdir("imat-cli");
    char text[4096];
    snprintf(text, sizeof text, "%s", write_text(dir, "text.txt", 20));
    char gg[4096], dat[4096];
    snprintf(gg, sizeof gg, "%s/im.gguf", dir);
    snprintf(dat, sizeof dat, "%s/im.dat", dir);
    assert_int_equal(apr_cli(dir, "g", "imatrix '%s' --text '%s' -o '%s' --ctx 64 --threads 2", fx, text, gg), 0);
    assert_non_null(strstr(g_last_err, "35 entries"));
    assert_int_equal(apr_cli(dir, "d", "imatrix '%s' -f '%s' -o '%s' --ctx 64 --format dat --threads 1", fx, text, dat),
                     0);
    apr_imatrix *ig = NULL, *id = NULL;
    apr_err err = {0};
    assert_int_equal(apr_imatrix_load(&ig, gg, &err), 0);
    assert_int_equal(apr_imatrix_load(&id, dat, &err), 0);
    assert_int_equal(ig->n_entries, 35);
    assert_int_equal(id->n_entries, 35);
    assert_int_equal(ig->chunks, id->chunks);
    assert_true(ig->chunks >= 2);
    assert_string_equal(ig->dataset, text);
    for (uint64_t i = 0; i < ig->n_entries; i++) {
        const apr_imatrix_entry *a = &ig->entries[i], *b = apr_imatrix_find(id, a->name);
        assert_non_null(b);
        assert_int_equal(a->n, b->n);
        for (uint64_t j = 0; j < a->n; j++) /* threads change no bit; the .dat's *ncall/ncall rounds */
            assert_true(fabsf(a->values[j] - b->values[j]) <= 1e-6f * a->values[j]);
    }
    apr_imatrix_free(ig);
    apr_imatrix_free(id);
    /* the file quantizes with it */
    assert_int_equal(apr_cli(dir, "q", "quantize '%s' '%s/q.gguf' --type Q4_0 --imatrix '%s' --pure", fx, dir, gg), 0);
}

static const float *entry_sums(const apr_model *m, const char *name, uint64_t n, float *count)
{
    char t[256];
    snprintf(t, sizeof t, "%s.counts", name);
    memcpy(count, f32_tensor(m, t, 1), 4);
    snprintf(t, sizeof t, "%s.in_sum2", name);
    return f32_tensor(m, t, n);
}

/* --process-output, the perplexity print-out and --in-file, through the CLI:
 * the output entry is written; stdout carries llama-imatrix's running and
 * final perplexity (--no-ppl: none); files combine as llama-imatrix's
 * --in-file adds them (GGUF: sums and counts add exactly, datasets append;
 * .dat: the sums come back from sum / count * ncall); bad uses refused. */
static void test_cli_output_ppl_in_file(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR();
    const char *dir = tu_tmpdir("imat-in");
    char text[4096], a[4200], b[4200], c[4200], d[4200];
    snprintf(text, sizeof text, "%s", write_text(dir, "text.txt", 20));
    snprintf(a, sizeof a, "%s/a.gguf", dir);
    snprintf(b, sizeof b, "%s/b.dat", dir);
    snprintf(c, sizeof c, "%s/c.gguf", dir);
    snprintf(d, sizeof d, "%s/d.gguf", dir);
    assert_int_equal(tu_system(NULL, "'%s' imatrix '%s' --text '%s' -o '%s' --ctx 64 --threads 2 --process-output "
                                     "> '%s/a.out' 2>/dev/null",
                               tu_apr_bin(), fx, text, a, dir),
                     0);
    char *so = tu_read_file(tu_path(dir, "a.out"), NULL);
    assert_non_null(so);
    assert_non_null(strstr(so, "[1]"));
    assert_non_null(strstr(so, "[2]"));
    double ppl = 0, ppl_err = 0;
    const char *fin = strstr(so, "Final estimate: PPL = ");
    assert_non_null(fin);
    assert_int_equal(sscanf(fin, "Final estimate: PPL = %lf +/- %lf", &ppl, &ppl_err), 2);
    assert_true(ppl > 1 && ppl_err > 0);
    free(so);
    assert_int_equal(tu_system(NULL, "'%s' imatrix '%s' --text '%s' -o '%s' --ctx 64 --threads 2 --no-ppl "
                                     "> '%s/b.out' 2>/dev/null && ! grep -q 'PPL' '%s/b.out'",
                               tu_apr_bin(), fx, text, b, dir, dir),
                     0);
    /* a + a: exact doubling */
    assert_int_equal(apr_cli(dir, "c", "imatrix --in-file '%s' --in-file '%s' -o '%s' --ctx 64", a, a, c), 0);
    apr_model *ma = NULL, *mc = NULL, *md = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&ma, a, NULL, &err), 0);
    assert_int_equal(apr_model_open(&mc, c, NULL, &err), 0);
    assert_int_equal(ma->n_tensors, 2 * 36); /* 35 blk.* entries and output.weight */
    assert_int_equal(mc->n_tensors, ma->n_tensors);
    uint32_t ca = 0, cc = 0;
    assert_true(apr_kv_get_u32(ma, "imatrix.chunk_count", &ca) && apr_kv_get_u32(mc, "imatrix.chunk_count", &cc));
    assert_int_equal(cc, 2 * ca);
    const apr_kv *ds = apr_model_kv(mc, "imatrix.datasets");
    assert_non_null(ds);
    assert_int_equal(ds->count, 2);
    assert_string_equal(((apr_str *)ds->arr)[1].s, text);
    static const char *names[] = {"output.weight", "blk.0.attn_q.weight", "blk.4.ffn_down.weight"};
    for (size_t k = 0; k < 3; k++) {
        const apr_tensor *t = NULL;
        char tn[128];
        snprintf(tn, sizeof tn, "%s.in_sum2", names[k]);
        assert_non_null(t = apr_model_tensor(ma, tn));
        const uint64_t n = t->nbytes / 4;
        float na, nc;
        const float *sa = entry_sums(ma, names[k], n, &na), *sc = entry_sums(mc, names[k], n, &nc);
        assert_true(nc == 2 * na);
        for (uint64_t j = 0; j < n; j++)
            assert_true(sc[j] == sa[j] + sa[j]);
    }
    /* the .dat (no output entry): the sums within rounding of the GGUF's */
    assert_int_equal(apr_cli(dir, "d", "imatrix --in-file '%s' -o '%s' --ctx 64", b, d), 0);
    assert_int_equal(apr_model_open(&md, d, NULL, &err), 0);
    assert_int_equal(md->n_tensors, 2 * 35);
    {
        const uint64_t n = apr_model_tensor(ma, "blk.0.ffn_down.weight.in_sum2")->nbytes / 4;
        float na, nd;
        const float *sa = entry_sums(ma, "blk.0.ffn_down.weight", n, &na), *sd = entry_sums(md, "blk.0.ffn_down.weight", n, &nd);
        assert_true(nd == na);
        for (uint64_t j = 0; j < n; j++)
            assert_true(fabsf(sd[j] - sa[j]) <= 1e-5f * sa[j]);
    }
    apr_model_free(ma);
    apr_model_free(mc);
    apr_model_free(md);
    /* go on from a file: the loaded counts plus this run's */
    assert_int_equal(apr_cli(dir, "e", "imatrix '%s' --text '%s' --in-file '%s' -o '%s/e.gguf' --ctx 64 --no-ppl",
                             fx, text, a, dir),
                     0);
    /* bad uses: nothing written */
    const char *bad[] = {
        "imatrix --in-file '%s/none.gguf' -o '%s/x.gguf'",
        "imatrix --in-file '%s/text.txt' -o '%s/x.gguf'",
        "imatrix --in-file '%s/a.gguf' -o '%s/a.gguf'",
        "imatrix --in-file '%s/a.gguf' --process-output -o '%s/x.gguf'",
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, bad[k], dir, dir);
        assert_int_equal(apr_cli(dir, "bad", "%s", cmd), 2);
    }
    assert_int_not_equal(access(tu_path(dir, "x.gguf"), F_OK), 0);
}

/* The same model from any container (HF safetensors directory with rotate-half
 * Q/K, llama.cpp's GGUF, APR with fused QKV) gives the same file, byte for
 * byte: the forward pass is bit-identical across containers and the entries
 * carry GGUF names whatever the source's. */
static void test_cli_same_file_from_every_container(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(gg, "fixtures/tinycoder/tinycoder-bf16.gguf");
    char ggp[4096], hf[4096];
    snprintf(ggp, sizeof ggp, "%s", gg);
    snprintf(hf, sizeof hf, "%s", ggp);
    *strrchr(hf, '/') = 0;
    REQUIRE_APR();
    const char *dir = tu_tmpdir("imat-containers");
    char text[4096];
    snprintf(text, sizeof text, "%s", write_text(dir, "text.txt", 12));
    char apr[4096];
    snprintf(apr, sizeof apr, "%s/tc.apr", dir);
    assert_int_equal(apr_cli(dir, "c", "convert '%s' '%s'", ggp, apr), 0);
    const char *srcs[] = {ggp, hf, apr};
    char *first = NULL;
    size_t first_len = 0;
    for (int i = 0; i < 3; i++) {
        char out[4096];
        snprintf(out, sizeof out, "%s/im%d.gguf", dir, i);
        assert_int_equal(apr_cli(dir, "i", "imatrix '%s' --text '%s' -o '%s' --ctx 128 --chunks 2 --threads 2", srcs[i],
                                 text, out),
                         0);
        size_t len = 0;
        char *b = tu_read_file(out, &len);
        assert_non_null(b);
        if (!first) {
            first = b;
            first_len = len;
            continue;
        }
        if (len != first_len || memcmp(b, first, len))
            print_message("%s: imatrix differs from the GGUF's\n", srcs[i]);
        assert_int_equal(len, first_len);
        assert_memory_equal(b, first, len);
        free(b);
    }
    free(first);
}

static void test_cli_bad_input(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR();
    const char *dir = tu_tmpdir("imat-bad");
    const char *out = tu_path(dir, "out.gguf");
    char outp[4096];
    snprintf(outp, sizeof outp, "%s", out);
    char shorttext[4096];
    snprintf(shorttext, sizeof shorttext, "%s", write_text(dir, "short.txt", 1));
    const char *empty = tu_path(dir, "empty.txt");
    assert_int_equal(tu_write_file(empty, "", 0), 0);
    char emptyp[4096];
    snprintf(emptyp, sizeof emptyp, "%s", empty);
    const char *nul = tu_path(dir, "nul.txt");
    assert_int_equal(tu_write_file(nul, "abc\0def", 7), 0);
    char nulp[4096];
    snprintf(nulp, sizeof nulp, "%s", nul);
    const struct {
        const char *args_fmt; /* model, text, out */
        const char *text;
        const char *want;
    } cases[] = {
        {"imatrix '%s' --text '%s' -o '%s'", NULL, "needs at least 1024"}, /* default ctx 512 */
        {"imatrix '%s' --text '%s' -o '%s' --ctx 64", NULL, "needs at least 128"},
        {"imatrix '%s' --text '%s' -o '%s' --ctx 8", "empty", "is empty"},
        {"imatrix '%s' --text '%s' -o '%s' --ctx 8", "nul", "NUL byte at offset 3"},
        {"imatrix '%s' --text '%s/none.txt' -o '%s' --ctx 8", "dir", "No such file"},
        {"imatrix '%s' --text '%s' -o '%s' --format xml", NULL, "--format must be gguf or dat"},
        {"imatrix '%s' --text '%s' -o '%s' --ctx 0", NULL, "--ctx wants an integer"},
        {"imatrix '%s' --text '%s' -o '%s' --chunks -1", NULL, "--chunks wants an integer"},
        {"imatrix '%s' --text '%s' -o '%s' --bogus", NULL, "unknown option"},
        {"imatrix '%s' --txt '%s' -o '%s'", NULL, "unknown option"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = !cases[i].text ? shorttext
                        : !strcmp(cases[i].text, "empty") ? emptyp
                        : !strcmp(cases[i].text, "nul")   ? nulp
                                                          : dir;
        char tag[16];
        snprintf(tag, sizeof tag, "b%zu", i);
        const int rc = apr_cli(dir, tag, cases[i].args_fmt, fx, t, outp);
        if (rc != 2 || !strstr(g_last_err, cases[i].want))
            print_message("case %zu: exit %d, stderr: %s\n", i, rc, g_last_err);
        assert_int_equal(rc, 2);
        assert_non_null(strstr(g_last_err, cases[i].want));
        struct stat sb;
        assert_int_equal(stat(outp, &sb), -1); /* nothing left behind */
    }
    /* OUT in a directory that does not exist: refused before the forward pass */
    assert_int_equal(apr_cli(dir, "nodir", "imatrix '%s' --text '%s' -o '%s/no/such/dir/x.gguf' --ctx 8", fx,
                             shorttext, dir),
                     2);
    assert_non_null(strstr(g_last_err, "cannot write"));
    assert_null(strstr(g_last_err, "tokens,"));
    /* OUT is the model: refused before anything runs, the model unchanged */
    assert_int_equal(apr_cli(dir, "same", "imatrix '%s' --text '%s' -o '%s' --ctx 8", fx, shorttext, fx), 2);
    assert_non_null(strstr(g_last_err, "never overwrites its input"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_equal_direct_computation),
        cmocka_unit_test(test_hook_changes_no_logit),
        cmocka_unit_test(test_output_ppl_and_start),
        cmocka_unit_test(test_writers_round_trip_through_the_reader),
        cmocka_unit_test(test_cli_writes_both_formats),
        cmocka_unit_test(test_cli_output_ppl_in_file),
        cmocka_unit_test(test_cli_same_file_from_every_container),
        cmocka_unit_test(test_cli_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
