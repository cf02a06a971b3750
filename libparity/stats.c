/* stats.c - statistics over pairs of logit vectors, following llama-perplexity's
 * KL-divergence mode (tools/perplexity/perplexity.cpp): KL(base || test) per
 * token, "same top p", delta-p = p_test(next) - p_base(next) and its RMS,
 * perplexities from the next token's NLL, llama.cpp's percentile interpolation.
 * Unlike llama.cpp, the reference distribution is not stored as 16-bit log
 * probabilities: everything is computed in double from the f32 logits, so two
 * identical logit vectors give a KL divergence of exactly 0.
 */
#include "parity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apr_util.h"
#include "quant.h"

double apr_logsumexp(const float *x, uint32_t n)
{
    double mx = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            return NAN;
        if (x[i] > mx)
            mx = x[i];
    }
    if (!isfinite(mx))
        return mx; /* +INF, or -INF when every logit is -INF (or n == 0) */
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

uint32_t apr_argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    bool have = false;
    for (uint32_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            continue;
        if (!have || x[i] > x[best]) {
            best = i;
            have = true;
        }
    }
    return best;
}

double apr_percentile_sorted(const double *sorted, size_t n, double f)
{
    if (n == 0)
        return NAN;
    if (f <= 0)
        return sorted[0];
    if (f >= 1)
        return sorted[n - 1];
    double p = f * (double)(n - 1);
    size_t ip = (size_t)p;
    p -= (double)ip;
    const size_t next = ip + 1 < n ? ip + 1 : n - 1;
    /* equal neighbours (often +INF) must not turn into INF - INF = NaN */
    if (sorted[ip] == sorted[next])
        return sorted[ip];
    return (1 - p) * sorted[ip] + p * sorted[next];
}

double apr_median_sorted(const double *sorted, size_t n)
{
    if (n == 0)
        return NAN;
    if (n % 2)
        return sorted[n / 2];
    const double a = sorted[n / 2 - 1], b = sorted[n / 2];
    return a == b ? a : 0.5 * (a + b);
}

int apr_parity_acc_init(apr_parity_acc *a, uint32_t vocab)
{
    memset(a, 0, sizeof *a);
    if (vocab == 0)
        return APR_E_ARG;
    a->vocab = vocab;
    a->first_diff_pos = -1;
    a->first_diff_idx = -1;
    a->cos_min = INFINITY;
    return 0;
}

void apr_parity_acc_free(apr_parity_acc *a)
{
    free(a->kld);
    free(a->pdiff);
    memset(a, 0, sizeof *a);
}

static int push(double **arr, uint64_t *cap, uint64_t n, double v)
{
    if (n == *cap) {
        const uint64_t nc = *cap ? *cap * 2 : 1024;
        double *p = realloc(*arr, nc * sizeof *p);
        if (!p)
            return APR_E_NOMEM;
        *arr = p;
        *cap = nc;
    }
    (*arr)[n] = v;
    return 0;
}

/* One position's statistics, from its two logit vectors alone: positions can
 * be computed on any thread in any order and folded into the accumulator in
 * position order afterwards (acc_fold), which gives the same bits as adding
 * them one by one. */
typedef struct pos_stats {
    uint64_t n_differ;
    int64_t first_diff_idx;
    uint64_t nonfinite_src, nonfinite_dst;
    double max_abs_diff, cos;
    bool scored, same_top, has_nll;
    double kl, nll_src, nll_dst, pd;
} pos_stats;

/* Bit identity, max |diff| and cosine over one position. */
static void compare_exact(uint32_t vocab, const float *src, const float *dst, pos_stats *p)
{
    double dot = 0, n1 = 0, n2 = 0;
    bool finite = true;
    for (uint32_t i = 0; i < vocab; i++) {
        if (memcmp(&src[i], &dst[i], sizeof(float)) != 0) {
            if (p->n_differ++ == 0)
                p->first_diff_idx = i;
        }
        const bool fs = isfinite(src[i]), fd = isfinite(dst[i]);
        p->nonfinite_src += !fs;
        p->nonfinite_dst += !fd;
        if (!fs || !fd) {
            finite = false;
            continue;
        }
        const double d = fabs((double)dst[i] - (double)src[i]);
        if (d > p->max_abs_diff)
            p->max_abs_diff = d;
        dot += (double)src[i] * dst[i];
        n1 += (double)src[i] * src[i];
        n2 += (double)dst[i] * dst[i];
    }
    if (!finite)
        p->cos = 0.0; /* a position with NaN/Inf logits does not point anywhere */
    else if (n1 == 0 && n2 == 0)
        p->cos = 1.0;
    else if (n1 == 0 || n2 == 0)
        p->cos = 0.0;
    else
        p->cos = dot / (sqrt(n1) * sqrt(n2));
}

/* apr_kld_logits with both log-sum-exps given (each is needed again for the
 * NLL: computing it once saves two of the five passes of exp over the vocab). */
static double kld_lse(const float *p_logits, const float *q_logits, uint32_t n, double lse_p, double lse_q)
{
    if (!isfinite(lse_p) || !isfinite(lse_q))
        return INFINITY;
    double kl = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        const double lp = (double)p_logits[i] - lse_p;
        const double p = exp(lp);
        if (p == 0.0)
            continue; /* 0 * log(0 / q) = 0 */
        const double lq = (double)q_logits[i] - lse_q;
        if (!isfinite(lq))
            return INFINITY; /* P has mass where Q has none */
        kl += p * (lp - lq);
    }
    return kl;
}

double apr_kld_logits(const float *p_logits, const float *q_logits, uint32_t n)
{
    return kld_lse(p_logits, q_logits, n, apr_logsumexp(p_logits, n), apr_logsumexp(q_logits, n));
}

static void pos_compute(uint32_t vocab, const float *src, const float *dst, bool scored, int32_t next_tok,
                        pos_stats *p)
{
    memset(p, 0, sizeof *p);
    p->first_diff_idx = -1;
    compare_exact(vocab, src, dst, p);
    p->scored = scored;
    if (!scored)
        return;
    const double lse_src = apr_logsumexp(src, vocab), lse_dst = apr_logsumexp(dst, vocab);
    p->kl = kld_lse(src, dst, vocab, lse_src, lse_dst);
    p->same_top = apr_argmax(src, vocab) == apr_argmax(dst, vocab);
    if (next_tok < 0)
        return;
    p->has_nll = true;
    p->nll_src = lse_src - (double)src[next_tok];
    p->nll_dst = lse_dst - (double)dst[next_tok];
    p->pd = exp(-p->nll_dst) - exp(-p->nll_src);
}

/* Add one position's statistics, in position order. */
static int acc_fold(apr_parity_acc *a, const pos_stats *p)
{
    if (p->n_differ && a->n_logits_differ == 0) {
        a->first_diff_pos = (int64_t)a->n_positions;
        a->first_diff_idx = p->first_diff_idx;
    }
    a->n_logits_differ += p->n_differ;
    a->nonfinite_src += p->nonfinite_src;
    a->nonfinite_dst += p->nonfinite_dst;
    if (p->max_abs_diff > a->max_abs_diff)
        a->max_abs_diff = p->max_abs_diff;
    a->cos_sum += p->cos;
    if (p->cos < a->cos_min)
        a->cos_min = p->cos;
    a->n_positions++;
    if (!p->scored)
        return 0;
    if (push(&a->kld, &a->cap_kld, a->n_scored, p->kl))
        return APR_E_NOMEM;
    a->n_scored++;
    a->sum_kld += p->kl;
    a->sum_kld2 += p->kl * p->kl;
    a->n_same_top += p->same_top;
    if (!p->has_nll)
        return 0;
    if (push(&a->pdiff, &a->cap_pdiff, a->n_nll, p->pd))
        return APR_E_NOMEM;
    a->n_nll++;
    a->sum_nll_src += p->nll_src;
    a->sum_nll_src2 += p->nll_src * p->nll_src;
    a->sum_nll_dst += p->nll_dst;
    a->sum_nll_dst2 += p->nll_dst * p->nll_dst;
    a->sum_pdiff += p->pd;
    a->sum_pdiff2 += p->pd * p->pd;
    a->sum_pdiff4 += p->pd * p->pd * p->pd * p->pd;
    return 0;
}

int apr_parity_acc_add(apr_parity_acc *a, const float *src, const float *dst, bool scored,
                       int32_t next_tok)
{
    if (next_tok >= 0 && (uint32_t)next_tok >= a->vocab)
        return APR_E_ARG;
    pos_stats p;
    pos_compute(a->vocab, src, dst, scored, next_tok, &p);
    return acc_fold(a, &p);
}

typedef struct batch_job {
    uint32_t vocab, n;
    int nth;
    const float *src, *dst;
    const bool *scored;
    const int32_t *next;
    pos_stats *out;
} batch_job;

/* Thread i takes positions i, i + nth, ...: neighbouring positions on
 * different threads, so a batch whose scored half starts late still splits
 * its expensive (scored) positions evenly. */
static void batch_worker(void *ctx, int i)
{
    const batch_job *j = ctx;
    for (uint32_t k = (uint32_t)i; k < j->n; k += (uint32_t)j->nth)
        pos_compute(j->vocab, j->src + (size_t)k * j->vocab, j->dst + (size_t)k * j->vocab, j->scored[k],
                    j->next[k], &j->out[k]);
}

int apr_parity_acc_add_n(apr_parity_acc *a, const float *src, const float *dst, uint32_t n, const bool *scored,
                         const int32_t *next_tok, int n_threads)
{
    for (uint32_t k = 0; k < n; k++)
        if (next_tok[k] >= 0 && (uint32_t)next_tok[k] >= a->vocab)
            return APR_E_ARG;
    if (n == 0)
        return 0;
    pos_stats *ps = malloc((size_t)n * sizeof *ps);
    if (!ps)
        return APR_E_NOMEM;
    n_threads = apr_threads_for(n_threads <= 0 ? apr_quant_default_threads() : n_threads, n);
    batch_job j = {a->vocab, n, n_threads, src, dst, scored, next_tok, ps};
    apr_threads_run(n_threads, batch_worker, &j);
    int rc = 0;
    for (uint32_t k = 0; k < n && !rc; k++)
        rc = acc_fold(a, &ps[k]);
    free(ps);
    return rc;
}

static int cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    /* NaN sorts last so that it shows as the maximum */
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return (a > b) - (a < b);
}

static double *sorted_copy(const double *v, uint64_t n)
{
    double *c = malloc((n ? n : 1) * sizeof *c);
    if (!c)
        return NULL;
    if (n)
        memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    return c;
}

int apr_parity_summarize(const apr_parity_acc *a, apr_parity_summary *s)
{
    memset(s, 0, sizeof *s);
    s->n_positions = a->n_positions;
    s->n_scored = a->n_scored;
    s->n_nll = a->n_nll;
    s->n_logits = a->n_positions * a->vocab;
    s->bit_identical = a->n_logits_differ == 0;
    s->n_logits_differ = a->n_logits_differ;
    s->first_diff_pos = a->first_diff_pos;
    s->first_diff_idx = a->first_diff_idx;
    s->max_abs_diff = a->max_abs_diff;
    s->cos_mean = a->n_positions ? a->cos_sum / (double)a->n_positions : NAN;
    s->cos_min = a->n_positions ? a->cos_min : NAN;
    s->nonfinite_src = a->nonfinite_src;
    s->nonfinite_dst = a->nonfinite_dst;

    const double nan = NAN;
    s->kld_mean = s->kld_mean_unc = s->kld_median = s->kld_p90 = s->kld_p99 = nan;
    s->kld_p999 = s->kld_max = s->kld_min = s->top1_pct = nan;
    s->pdiff_mean = s->pdiff_rms = s->pdiff_max = nan;
    s->ppl_src = s->ppl_dst = s->ppl_ratio = nan;

    if (a->n_scored) {
        const double n = (double)a->n_scored;
        s->kld_mean = a->sum_kld / n;
        /* llama.cpp's uncertainty of a mean: sqrt(var / (n - 1)), only for n > 10 */
        const double var = a->sum_kld2 / n - s->kld_mean * s->kld_mean;
        s->kld_mean_unc = var > 0 && a->n_scored > 10 ? sqrt(var / (n - 1)) : 0.0;
        double *k = sorted_copy(a->kld, a->n_scored);
        if (!k)
            return APR_E_NOMEM;
        s->kld_min = k[0];
        s->kld_max = k[a->n_scored - 1];
        s->kld_median = apr_median_sorted(k, a->n_scored);
        s->kld_p90 = apr_percentile_sorted(k, a->n_scored, 0.90);
        s->kld_p99 = apr_percentile_sorted(k, a->n_scored, 0.99);
        s->kld_p999 = apr_percentile_sorted(k, a->n_scored, 0.999);
        free(k);
        s->top1_pct = 100.0 * (double)a->n_same_top / n;
    }
    if (a->n_nll) {
        const double n = (double)a->n_nll;
        s->pdiff_mean = a->sum_pdiff / n;
        s->pdiff_rms = sqrt(a->sum_pdiff2 / n);
        double mx = 0;
        for (uint64_t i = 0; i < a->n_nll; i++)
            if (fabs(a->pdiff[i]) > mx || isnan(a->pdiff[i]))
                mx = fabs(a->pdiff[i]);
        s->pdiff_max = mx;
        s->ppl_src = exp(a->sum_nll_src / n);
        s->ppl_dst = exp(a->sum_nll_dst / n);
        s->ppl_ratio = exp((a->sum_nll_dst - a->sum_nll_src) / n);
    }
    return 0;
}
