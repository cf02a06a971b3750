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

double apr_kld_logits(const float *p_logits, const float *q_logits, uint32_t n)
{
    const double lse_p = apr_logsumexp(p_logits, n);
    const double lse_q = apr_logsumexp(q_logits, n);
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

/* Bit identity, max |diff| and cosine over one position. */
static void compare_exact(apr_parity_acc *a, const float *src, const float *dst)
{
    double dot = 0, n1 = 0, n2 = 0;
    bool finite = true;
    for (uint32_t i = 0; i < a->vocab; i++) {
        if (memcmp(&src[i], &dst[i], sizeof(float)) != 0) {
            if (a->n_logits_differ++ == 0) {
                a->first_diff_pos = (int64_t)a->n_positions;
                a->first_diff_idx = i;
            }
        }
        const bool fs = isfinite(src[i]), fd = isfinite(dst[i]);
        a->nonfinite_src += !fs;
        a->nonfinite_dst += !fd;
        if (!fs || !fd) {
            finite = false;
            continue;
        }
        const double d = fabs((double)dst[i] - (double)src[i]);
        if (d > a->max_abs_diff)
            a->max_abs_diff = d;
        dot += (double)src[i] * dst[i];
        n1 += (double)src[i] * src[i];
        n2 += (double)dst[i] * dst[i];
    }
    double cos;
    if (!finite)
        cos = 0.0; /* a position with NaN/Inf logits does not point anywhere */
    else if (n1 == 0 && n2 == 0)
        cos = 1.0;
    else if (n1 == 0 || n2 == 0)
        cos = 0.0;
    else
        cos = dot / (sqrt(n1) * sqrt(n2));
    a->cos_sum += cos;
    if (cos < a->cos_min)
        a->cos_min = cos;
}

int apr_parity_acc_add(apr_parity_acc *a, const float *src, const float *dst, bool scored,
                       int32_t next_tok)
{
    if (next_tok >= 0 && (uint32_t)next_tok >= a->vocab)
        return APR_E_ARG;
    compare_exact(a, src, dst);
    a->n_positions++;
    if (!scored)
        return 0;

    const double kl = apr_kld_logits(src, dst, a->vocab);
    if (push(&a->kld, &a->cap_kld, a->n_scored, kl))
        return APR_E_NOMEM;
    a->n_scored++;
    a->sum_kld += kl;
    a->sum_kld2 += kl * kl;
    if (apr_argmax(src, a->vocab) == apr_argmax(dst, a->vocab))
        a->n_same_top++;

    if (next_tok < 0)
        return 0;
    const double nll_src = apr_logsumexp(src, a->vocab) - (double)src[next_tok];
    const double nll_dst = apr_logsumexp(dst, a->vocab) - (double)dst[next_tok];
    const double pd = exp(-nll_dst) - exp(-nll_src);
    if (push(&a->pdiff, &a->cap_pdiff, a->n_nll, pd))
        return APR_E_NOMEM;
    a->n_nll++;
    a->sum_nll_src += nll_src;
    a->sum_nll_src2 += nll_src * nll_src;
    a->sum_nll_dst += nll_dst;
    a->sum_nll_dst2 += nll_dst * nll_dst;
    a->sum_pdiff += pd;
    a->sum_pdiff2 += pd * pd;
    a->sum_pdiff4 += pd * pd * pd * pd;
    return 0;
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
