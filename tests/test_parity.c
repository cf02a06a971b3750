/* test_parity.c - libparity on hand-made logits, traces and models: the
 * statistics of `apr verify` (KLD, top-1, delta-p, perplexity, percentiles,
 * bit identity), the trace band, the verdict policy, the JSON report, the
 * model comparison behind --roundtrip, and the evaluation tokens.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parity.h"
#include "test_util.h"

static uint64_t rng_state = 12345;
static double rnd(void) /* uniform [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void random_logits(float *x, uint32_t n, double scale)
{
    for (uint32_t i = 0; i < n; i++)
        x[i] = (float)((rnd() * 2 - 1) * scale);
}

/* ---------------------------------------------------------------- distributions */

static void test_kld_identical_is_zero(void **state)
{
    (void)state;
    enum { V = 1000 };
    float *x = malloc(V * sizeof *x);
    random_logits(x, V, 8.0);
    assert_true(apr_kld_logits(x, x, V) == 0.0);

    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    for (int pos = 0; pos < 20; pos++) {
        random_logits(x, V, 8.0);
        assert_int_equal(apr_parity_acc_add(&a, x, x, pos >= 10, pos % V), 0);
    }
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_true(s.bit_identical);
    assert_int_equal(s.n_positions, 20);
    assert_int_equal(s.n_scored, 10);
    assert_int_equal(s.n_logits, 20 * V);
    assert_true(s.kld_mean == 0.0 && s.kld_max == 0.0 && s.kld_median == 0.0);
    assert_true(s.top1_pct == 100.0);
    assert_true(s.max_abs_diff == 0.0);
    assert_true(fabs(s.cos_min - 1.0) < 1e-12);
    assert_true(s.ppl_ratio == 1.0);
    assert_true(s.pdiff_rms == 0.0);
    apr_parity_acc_free(&a);
    free(x);
}

/* apr_parity_acc_add_n (positions on threads, folded in order) gives the same
 * bits as apr_parity_acc_add one position at a time, whatever the thread
 * count: identical, one-ulp, differing, non-finite, scored and unscored
 * positions, with and without a next token. */
static void test_acc_add_n_matches_serial(void **state)
{
    (void)state;
    enum { V = 777, N = 23 };
    float *src = malloc((size_t)N * V * sizeof *src), *dst = malloc((size_t)N * V * sizeof *dst);
    bool scored[N];
    int32_t next[N];
    for (uint32_t k = 0; k < N; k++) {
        random_logits(src + (size_t)k * V, V, 6.0);
        memcpy(dst + (size_t)k * V, src + (size_t)k * V, V * sizeof *dst);
        if (k % 3 == 1)
            random_logits(dst + (size_t)k * V, V, 6.0);
        if (k == 5)
            dst[(size_t)k * V + 17] = nextafterf(dst[(size_t)k * V + 17], INFINITY);
        if (k == 9)
            dst[(size_t)k * V + 3] = NAN;
        scored[k] = k >= 4;
        next[k] = scored[k] && k % 5 ? (int32_t)(k * 31 % V) : -1;
    }
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    for (uint32_t k = 0; k < N; k++)
        assert_int_equal(apr_parity_acc_add(&a, src + (size_t)k * V, dst + (size_t)k * V, scored[k], next[k]), 0);
    apr_parity_summary want;
    assert_int_equal(apr_parity_summarize(&a, &want), 0);
    for (int nth = 1; nth <= 5; nth++) {
        apr_parity_acc b;
        assert_int_equal(apr_parity_acc_init(&b, V), 0);
        /* two batches (9 + 14 positions), as run.c hands them over */
        assert_int_equal(apr_parity_acc_add_n(&b, src, dst, 9, scored, next, nth), 0);
        assert_int_equal(apr_parity_acc_add_n(&b, src + 9 * V, dst + 9 * V, N - 9, scored + 9, next + 9, nth), 0);
        apr_parity_summary got;
        assert_int_equal(apr_parity_summarize(&b, &got), 0);
        assert_memory_equal(&got, &want, sizeof got);
        assert_int_equal(b.n_scored, a.n_scored);
        assert_memory_equal(b.kld, a.kld, a.n_scored * sizeof *a.kld);
        assert_memory_equal(b.pdiff, a.pdiff, a.n_nll * sizeof *a.pdiff);
        apr_parity_acc_free(&b);
    }
    assert_true(want.first_diff_pos == 1 && want.nonfinite_dst == 1 && !want.bit_identical);
    /* a next token outside the vocabulary is refused before anything is added */
    apr_parity_acc c;
    assert_int_equal(apr_parity_acc_init(&c, V), 0);
    const int32_t bad[2] = {1, V};
    assert_int_equal(apr_parity_acc_add_n(&c, src, dst, 2, scored + 4, bad, 2), APR_E_ARG);
    assert_int_equal(c.n_positions, 0);
    apr_parity_acc_free(&c);
    apr_parity_acc_free(&a);
    free(src);
    free(dst);
}

static void test_kld_analytic(void **state)
{
    (void)state;
    /* P = (1/4, 3/4), Q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2) */
    const float p2[2] = {0.0f, logf(3.0f)}, q2[2] = {0.7f, 0.7f};
    const double want2 = 0.25 * log(0.5) + 0.75 * log(1.5);
    assert_true(fabs(apr_kld_logits(p2, q2, 2) - want2) < 1e-7);
    /* and the other direction: KL(Q||P) = 1/2 ln(2) + 1/2 ln(2/3) */
    const double want2r = 0.5 * log(2.0) + 0.5 * log(2.0 / 3.0);
    assert_true(fabs(apr_kld_logits(q2, p2, 2) - want2r) < 1e-7);

    /* P = (1/2, 1/4, 1/4), Q = (1/4, 1/4, 1/2): KL = 1/2 ln 2 + 0 + 1/4 ln(1/2) = ln(2)/4 */
    const float p3[3] = {logf(2.0f), 0.0f, 0.0f}, q3[3] = {5.0f, 5.0f, 5.0f + logf(2.0f)};
    assert_true(fabs(apr_kld_logits(p3, q3, 3) - log(2.0) / 4) < 1e-7);

    /* shifting all logits by a constant changes nothing */
    const float p3s[3] = {logf(2.0f) + 100.0f, 100.0f, 100.0f};
    assert_true(fabs(apr_kld_logits(p3s, q3, 3) - log(2.0) / 4) < 1e-6);

    /* zero-mass Q where P has mass: infinite; NaN input: infinite */
    const float qinf[2] = {-INFINITY, 0.0f};
    assert_true(isinf(apr_kld_logits(p2, qinf, 2)));
    const float qnan[2] = {NAN, 0.0f};
    assert_true(isinf(apr_kld_logits(p2, qnan, 2)));
    /* but P with zero mass where Q has some is finite: KL = ln(1 / (1/2)) */
    assert_true(fabs(apr_kld_logits(qinf, q2, 2) - log(2.0)) < 1e-7);
}

static void test_logsumexp_and_argmax(void **state)
{
    (void)state;
    const float x[4] = {1.0f, 3.0f, 3.0f, -2.0f};
    const double want = log(exp(1.0) + 2 * exp(3.0) + exp(-2.0));
    assert_true(fabs(apr_logsumexp(x, 4) - want) < 1e-12);
    /* huge logits do not overflow */
    const float big[2] = {1e30f, 1e30f};
    assert_true(fabs(apr_logsumexp(big, 2) - ((double)1e30f + log(2.0))) / 1e30 < 1e-12);
    assert_int_equal(apr_argmax(x, 4), 1); /* first of the tied maxima */
    const float withnan[3] = {NAN, -1.0f, 2.0f};
    assert_int_equal(apr_argmax(withnan, 3), 2);
}

static void test_top1_agreement(void **state)
{
    (void)state;
    enum { V = 64, N = 40 };
    float src[V], dst[V];
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    int disagree = 0;
    for (int pos = 0; pos < N; pos++) {
        random_logits(src, V, 1.0);
        memcpy(dst, src, sizeof src);
        const uint32_t top = apr_argmax(src, V);
        if (pos % 4 == 1) { /* every fourth position: DST prefers another token */
            dst[(top + 7) % V] = src[top] + 1.0f;
            disagree++;
        }
        assert_int_equal(apr_parity_acc_add(&a, src, dst, true, -1), 0);
    }
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_true(fabs(s.top1_pct - 100.0 * (N - disagree) / N) < 1e-9);
    assert_false(s.bit_identical);
    assert_int_equal(s.n_nll, 0); /* no next tokens given: no perplexity */
    assert_true(isnan(s.ppl_src));
    /* KLD is zero exactly where the logits are identical */
    assert_true(s.kld_min == 0.0);
    assert_true(s.kld_max > 0.0);
    apr_parity_acc_free(&a);
}

static void test_percentiles_order(void **state)
{
    (void)state;
    /* llama.cpp's interpolation on a known array */
    const double v[5] = {0.0, 1.0, 2.0, 3.0, 10.0};
    assert_true(apr_percentile_sorted(v, 5, 0.0) == 0.0);
    assert_true(apr_percentile_sorted(v, 5, 1.0) == 10.0);
    assert_true(fabs(apr_percentile_sorted(v, 5, 0.5) - 2.0) < 1e-12);
    assert_true(fabs(apr_percentile_sorted(v, 5, 0.90) - (3.0 + 0.6 * 7.0)) < 1e-12);
    assert_true(fabs(apr_percentile_sorted(v, 5, 0.99) - (3.0 + 0.96 * 7.0)) < 1e-12);
    assert_true(apr_median_sorted(v, 5) == 2.0);
    assert_true(apr_median_sorted(v, 4) == 1.5);
    const double inf[3] = {1.0, INFINITY, INFINITY};
    assert_true(isinf(apr_percentile_sorted(inf, 3, 0.9)));

    /* on real accumulations: min <= median <= p90 <= p99 <= p99.9 <= max, mean above median
     * for a right-skewed distribution of per-token KLD */
    enum { V = 128, N = 500 };
    float src[V], dst[V];
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    for (int pos = 0; pos < N; pos++) {
        random_logits(src, V, 3.0);
        const double noise = pos % 50 == 0 ? 2.0 : 0.05; /* a few bad tokens */
        for (int i = 0; i < V; i++)
            dst[i] = src[i] + (float)((rnd() * 2 - 1) * noise);
        assert_int_equal(apr_parity_acc_add(&a, src, dst, true, pos % V), 0);
    }
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_true(s.kld_min <= s.kld_median);
    assert_true(s.kld_median <= s.kld_p90);
    assert_true(s.kld_p90 <= s.kld_p99);
    assert_true(s.kld_p99 <= s.kld_p999);
    assert_true(s.kld_p999 <= s.kld_max);
    assert_true(s.kld_mean > s.kld_median);
    assert_true(s.kld_mean_unc > 0 && s.kld_mean_unc < s.kld_mean);
    /* mean equals the plain average of the per-token values */
    double sum = 0;
    for (uint64_t i = 0; i < a.n_scored; i++)
        sum += a.kld[i];
    assert_true(fabs(sum / N - s.kld_mean) < 1e-12);
    apr_parity_acc_free(&a);
}

static void test_delta_p_and_perplexity(void **state)
{
    (void)state;
    /* SRC gives the next token (id 0) p = 1/2, DST p = 1/4 */
    const float src[3] = {logf(2.0f), 0.0f, 0.0f};
    const float dst[3] = {0.0f, 0.0f, logf(2.0f)};
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, 3), 0);
    assert_int_equal(apr_parity_acc_add(&a, src, dst, true, 0), 0);
    assert_int_equal(apr_parity_acc_add(&a, src, dst, true, 0), 0);
    assert_int_equal(apr_parity_acc_add(&a, src, dst, false, 0), 0); /* not scored: ignored */
    assert_int_equal(apr_parity_acc_add(&a, src, dst, true, 3), APR_E_ARG); /* id outside vocab */
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_int_equal(s.n_nll, 2);
    assert_true(fabs(s.pdiff_mean - (-0.25)) < 1e-7);
    assert_true(fabs(s.pdiff_rms - 0.25) < 1e-7);
    assert_true(fabs(s.pdiff_max - 0.25) < 1e-7);
    assert_true(fabs(s.ppl_src - 2.0) < 1e-6);
    assert_true(fabs(s.ppl_dst - 4.0) < 1e-6);
    assert_true(fabs(s.ppl_ratio - 2.0) < 1e-6);
    assert_true(fabs(s.kld_mean - log(2.0) / 4) < 1e-7);
    assert_true(s.top1_pct == 0.0);
    apr_parity_acc_free(&a);
}

static void test_bit_identity_one_ulp(void **state)
{
    (void)state;
    enum { V = 50 };
    float src[V], dst[V];
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    for (int pos = 0; pos < 6; pos++) {
        random_logits(src, V, 5.0);
        memcpy(dst, src, sizeof src);
        if (pos == 4)
            dst[17] = nextafterf(src[17], INFINITY);
        assert_int_equal(apr_parity_acc_add(&a, src, dst, true, 1), 0);
    }
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_false(s.bit_identical);
    assert_int_equal(s.n_logits_differ, 1);
    assert_int_equal(s.first_diff_pos, 4);
    assert_int_equal(s.first_diff_idx, 17);
    assert_true(s.max_abs_diff > 0 && s.max_abs_diff < 1e-5);
    assert_true(s.cos_min > 0.999999);
    apr_parity_acc_free(&a);

    /* -0.0 vs +0.0 compare equal as numbers but are different bits */
    const float z1[2] = {0.0f, 1.0f}, z2[2] = {-0.0f, 1.0f};
    assert_int_equal(apr_parity_acc_init(&a, 2), 0);
    assert_int_equal(apr_parity_acc_add(&a, z1, z2, false, -1), 0);
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_false(s.bit_identical);
    assert_true(s.max_abs_diff == 0.0);
    apr_parity_acc_free(&a);
}

static void test_nonfinite_logits(void **state)
{
    (void)state;
    const float src[3] = {1.0f, 2.0f, 3.0f};
    const float dst[3] = {1.0f, NAN, 3.0f};
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, 3), 0);
    assert_int_equal(apr_parity_acc_add(&a, src, dst, true, 2), 0);
    apr_parity_summary s;
    assert_int_equal(apr_parity_summarize(&a, &s), 0);
    assert_int_equal(s.nonfinite_dst, 1);
    assert_int_equal(s.nonfinite_src, 0);
    assert_true(isinf(s.kld_mean));
    assert_true(s.cos_min == 0.0);

    apr_verify_result r;
    memset(&r, 0, sizeof r);
    r.s = s;
    r.tc.first_out_layer = r.tc.first_diff_layer = -1;
    apr_conversion_kind k = {.kind = APR_EXPECT_QUANTIZED, .qtype = "Q8_0"};
    apr_verdict v;
    apr_parity_decide(&r, &k, 0, &v);
    assert_false(v.pass);
    assert_false(v.error);
    assert_non_null(strstr(v.reason, "non-finite"));
    apr_parity_acc_free(&a);
}

/* ---------------------------------------------------------------- traces */

static void fill_trace(apr_trace *t, uint32_t layers)
{
    assert_int_equal(apr_trace_init(t, layers, false), 0);
    for (uint32_t l = 0; l < layers; l++)
        for (int st = 0; st < APR_TR_COUNT; st++) {
            apr_stats *s = &t->s[l * APR_TR_COUNT + st];
            s->mean = 0.01 * st;
            s->std = 1.0 + l + 0.1 * st;
            s->min = -3;
            s->max = 3;
            s->n = 256;
        }
}

static void test_trace_band(void **state)
{
    (void)state;
    apr_trace a, b;
    fill_trace(&a, 5);
    fill_trace(&b, 5);
    apr_trace_cmp c;
    apr_err err = {0};
    assert_int_equal(apr_trace_compare(&a, &b, 0.5, 2.0, &c, &err), 0);
    assert_int_equal(c.first_out_layer, -1);
    assert_int_equal(c.first_diff_layer, -1);
    assert_true(c.ratio[7] == 1.0);
    apr_trace_cmp_free(&c);

    /* quantization-like noise in layer 1: differs, stays inside the band */
    b.s[1 * APR_TR_COUNT + APR_TR_Q].std *= 1.03;
    /* a zeroed norm in layer 3: ffn_norm and everything after it collapse */
    for (int st = APR_TR_FFN_NORM; st <= APR_TR_DOWN; st++)
        b.s[3 * APR_TR_COUNT + st].std = 0.0;
    assert_int_equal(apr_trace_compare(&a, &b, 0.5, 2.0, &c, &err), 0);
    assert_int_equal(c.first_diff_layer, 1);
    assert_int_equal(c.first_diff_step, APR_TR_Q);
    assert_int_equal(c.first_out_layer, 3);
    assert_int_equal(c.first_out_step, APR_TR_FFN_NORM);
    assert_true(c.out[3 * APR_TR_COUNT + APR_TR_GATE]);
    assert_false(c.out[1 * APR_TR_COUNT + APR_TR_Q]);
    apr_trace_cmp_free(&c);

    /* a tighter band catches the 3 % change */
    assert_int_equal(apr_trace_compare(&a, &b, 0.99, 1.01, &c, &err), 0);
    assert_int_equal(c.first_out_layer, 1);
    apr_trace_cmp_free(&c);

    /* non-finite values appearing in DST are out of band whatever the std */
    b.s[0 * APR_TR_COUNT + APR_TR_V].nonfinite = 3;
    assert_int_equal(apr_trace_compare(&a, &b, 0.5, 2.0, &c, &err), 0);
    assert_int_equal(c.first_out_layer, 0);
    assert_int_equal(c.first_out_step, APR_TR_V);
    apr_trace_cmp_free(&c);

    /* mismatched layer counts and a bad band are errors */
    apr_trace d;
    fill_trace(&d, 4);
    assert_int_equal(apr_trace_compare(&a, &d, 0.5, 2.0, &c, &err), APR_E_MISMATCH);
    assert_true(apr_trace_compare(&a, &b, 2.0, 0.5, &c, &err) < 0);
    apr_trace_free(&a);
    apr_trace_free(&b);
    apr_trace_free(&d);
}

/* ---------------------------------------------------------------- verdict */

static void make_result(apr_verify_result *r, double kld_noise, bool zero_layer2)
{
    enum { V = 32 };
    memset(r, 0, sizeof *r);
    r->forward_run = true; /* a result with logit statistics: the forward pass ran */
    apr_parity_acc a;
    assert_int_equal(apr_parity_acc_init(&a, V), 0);
    float src[V], dst[V];
    for (int pos = 0; pos < 64; pos++) {
        random_logits(src, V, 2.0);
        for (int i = 0; i < V; i++)
            dst[i] = src[i] + (float)((rnd() * 2 - 1) * kld_noise);
        assert_int_equal(apr_parity_acc_add(&a, src, dst, pos >= 32 && pos < 63, (pos * 7) % V), 0);
    }
    assert_int_equal(apr_parity_summarize(&a, &r->s), 0);
    apr_parity_acc_free(&a);
    r->ctx = 64;
    r->chunks = 1;
    r->n_tokens_used = 64;
    fill_trace(&r->tr_src, 4);
    fill_trace(&r->tr_dst, 4);
    if (zero_layer2)
        for (int st = APR_TR_FFN_NORM; st <= APR_TR_DOWN; st++)
            r->tr_dst.s[2 * APR_TR_COUNT + st].std = 0.0;
    apr_err err = {0};
    assert_int_equal(apr_trace_compare(&r->tr_src, &r->tr_dst, 0.5, 2.0, &r->tc, &err), 0);
}

static void test_decide_policy(void **state)
{
    (void)state;
    apr_verify_result r;
    apr_verdict v;
    apr_conversion_kind lossless = {.kind = APR_EXPECT_LOSSLESS};
    apr_conversion_kind q8 = {.kind = APR_EXPECT_QUANTIZED, .qtype = "Q8_0"};
    apr_conversion_kind odd = {.kind = APR_EXPECT_QUANTIZED, .qtype = "IQ1_S"};

    make_result(&r, 0.0, false);
    apr_parity_decide(&r, &lossless, 0, &v);
    assert_true(v.pass);
    apr_verify_result_free(&r);

    make_result(&r, 0.01, false); /* small noise: KLD ~ 1e-5 */
    apr_parity_decide(&r, &lossless, 0, &v);
    assert_false(v.pass); /* lossless wants bit identity */
    assert_non_null(strstr(v.reason, "differ"));
    apr_parity_decide(&r, &q8, 0, &v);
    assert_true(v.pass);
    assert_true(v.max_kld == apr_parity_default_max_kld("Q8_0"));
    apr_parity_decide(&r, &q8, r.s.kld_mean / 2, &v); /* --max-kld below the measured value */
    assert_false(v.pass);
    assert_non_null(strstr(v.reason, "exceeds"));
    apr_parity_decide(&r, &odd, 0, &v);
    assert_true(v.error); /* unknown type without --max-kld: no verdict */
    apr_parity_decide(&r, &odd, 1.0, &v);
    assert_true(v.pass);
    apr_verify_result_free(&r);

    make_result(&r, 0.01, true); /* KLD fine but layer 2 collapsed */
    apr_parity_decide(&r, &q8, 0, &v);
    assert_false(v.pass);
    assert_non_null(strstr(v.reason, "layer 2 (ffn_norm)"));
    apr_verify_result_free(&r);

    /* thresholds: documented ordering, case-insensitive lookup */
    assert_true(apr_parity_default_max_kld("Q8_0") < apr_parity_default_max_kld("Q6_K"));
    assert_true(apr_parity_default_max_kld("Q6_K") < apr_parity_default_max_kld("Q4_K_M"));
    assert_true(apr_parity_default_max_kld("q4_k_m") == apr_parity_default_max_kld("Q4_K_M"));
    assert_true(apr_parity_default_max_kld("nope") < 0);
    assert_string_equal(apr_parity_file_type_name(15), "Q4_K_M");
    assert_string_equal(apr_parity_file_type_name(7), "Q8_0");
    assert_null(apr_parity_file_type_name(999));
}

static void test_report_json_parses(void **state)
{
    (void)state;
    apr_verify_result r;
    make_result(&r, 0.05, true);
    apr_conversion_kind k = {.kind = APR_EXPECT_QUANTIZED, .qtype = "Q4_K_M", .basis = "test"};
    apr_verdict v;
    apr_parity_decide(&r, &k, 0, &v);
    apr_report_info info = {.src_path = "a.gguf", .dst_path = "b \"quoted\".gguf",
                            .tokens_note = "hand-made"};
    char *txt = apr_verify_report_json(&info, &r, &v);
    assert_non_null(txt);
    json_error_t je;
    json_t *j = json_loads(txt, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "dst")), "b \"quoted\".gguf");
    json_t *kld = json_object_get(j, "kld");
    assert_true(json_is_real(json_object_get(kld, "mean")));
    assert_true(fabs(json_real_value(json_object_get(kld, "mean")) - r.s.kld_mean) <
                1e-12 * (1 + r.s.kld_mean));
    assert_true(json_is_false(json_object_get(json_object_get(j, "verdict"), "pass")));
    json_t *fo = json_object_get(json_object_get(j, "layers"), "first_out");
    assert_int_equal(json_integer_value(json_object_get(fo, "layer")), 2);
    assert_string_equal(json_string_value(json_object_get(fo, "step")), "ffn_norm");
    json_t *ratios = json_object_get(json_object_get(j, "layers"), "std_ratio");
    assert_int_equal(json_array_size(ratios), 4);
    assert_int_equal(json_array_size(json_array_get(ratios, 0)), APR_TR_COUNT);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "conversion"), "kind")),
                        "quantized");
    /* perplexity present because next tokens were given */
    assert_true(json_is_real(json_object_get(json_object_get(j, "ppl"), "ratio")));
    json_decref(j);
    free(txt);

    /* NaN and infinity become null, never invalid JSON */
    r.s.kld_mean = INFINITY;
    r.s.ppl_src = NAN;
    txt = apr_verify_report_json(&info, &r, &v);
    j = json_loads(txt, 0, &je);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(json_object_get(j, "kld"), "mean")));
    assert_true(json_is_null(json_object_get(json_object_get(j, "ppl"), "src")));
    json_decref(j);
    free(txt);

    /* the table names the layer too */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    apr_verify_report_print(f, &info, &r, &v);
    fclose(f);
    assert_non_null(strstr(buf, "layer 2 (ffn_norm)"));
    assert_non_null(strstr(buf, "FAIL"));
    free(buf);
    apr_verify_result_free(&r);
}

/* ---------------------------------------------------------------- classification */

static apr_model *tiny_model(apr_dtype dt, const char *prov)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    assert_non_null(m);
    const uint64_t dims[2] = {4, 32};
    uint64_t nb = 0;
    assert_true(apr_dtype_tensor_bytes(dt, 2, dims, &nb));
    uint8_t *buf = calloc(1, nb);
    apr_err err = {0};
    assert_int_equal(apr_model_add_tensor(m, "blk.0.attn_q.weight", dt, 2, dims, buf, nb, true, &err), 0);
    const uint64_t d1[1] = {32};
    float *norm = calloc(32, sizeof *norm);
    assert_int_equal(apr_model_add_tensor(m, "blk.0.attn_norm.weight", APR_DT_F32, 1, d1, norm,
                                          32 * sizeof(float), true, &err), 0);
    if (prov)
        m->provenance_json = strdup(prov);
    return m;
}

static void test_classify(void **state)
{
    (void)state;
    apr_err err = {0};
    apr_conversion_kind k;
    apr_model *f32 = tiny_model(APR_DT_F32, NULL);
    apr_model *f32b = tiny_model(APR_DT_F32, "{\"tensors\":[{\"name\":\"a\",\"transform\":\"permute\"}]}");
    apr_model *q8 = tiny_model(APR_DT_Q8_0, NULL);
    apr_model *q6p = tiny_model(APR_DT_Q8_0, "{\"tensors\":{\"a\":{\"transform\":\"quantize:Q6_K\"},"
                                             "\"b\":{\"transform\":\"quantize:Q4_K\"}}}");
    apr_model *chain = tiny_model(APR_DT_Q8_0, "{\"tensors\":[{\"transform\":\"fuse\"}],"
                                               "\"parent\":{\"tensors\":[{\"transform\":\"quantize:Q8_0\"}]}}");

    assert_int_equal(apr_parity_classify(f32, f32b, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_LOSSLESS);
    assert_non_null(strstr(k.basis, "provenance"));

    assert_int_equal(apr_parity_classify(f32, q8, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_QUANTIZED);
    assert_string_equal(k.qtype, "Q8_0");
    assert_non_null(strstr(k.basis, "dtypes"));

    /* DST's own record says quantize: the weakest type sets the threshold */
    assert_int_equal(apr_parity_classify(f32, q6p, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_QUANTIZED);
    assert_string_equal(k.qtype, "Q4_K");

    /* the llama.cpp mix name wins when the file carries it */
    assert_int_equal(apr_model_set_kv_u32(q6p, "general.file_type", 15), 0);
    assert_int_equal(apr_parity_classify(f32, q6p, &k, &err), 0);
    assert_string_equal(k.qtype, "Q4_K_M");

    /* Q8_0 -> fused APR: lossless against its direct parent, quantized against the F32 original */
    assert_int_equal(apr_parity_classify(q8, chain, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_LOSSLESS);
    assert_int_equal(apr_parity_classify(f32, chain, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_QUANTIZED);
    assert_string_equal(k.qtype, "Q8_0");

    /* steps joined with '+': the lossy one counts, whatever its position */
    apr_model *joined = tiny_model(APR_DT_F16, "{\"tensors\":[{\"transform\":\"permute+convert:F16\"},"
                                               "{\"transform\":\"copy\"}]}");
    assert_int_equal(apr_parity_classify(f32, joined, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_QUANTIZED);
    assert_string_equal(k.qtype, "F16");
    apr_model_free(joined);
    joined = tiny_model(APR_DT_F32, "{\"tensors\":[{\"transform\":\"split+dequantize:F32\"}]}");
    assert_int_equal(apr_parity_classify(q8, joined, &k, &err), 0);
    assert_int_equal(k.kind, APR_EXPECT_QUANTIZED);
    assert_string_equal(k.qtype, "dequantize");
    apr_model_free(joined);

    /* a broken provenance record is an error, not a guess */
    free(f32b->provenance_json);
    f32b->provenance_json = strdup("{\"tensors\": [");
    assert_true(apr_parity_classify(f32, f32b, &k, &err) < 0);
    assert_non_null(strstr(err.msg, "provenance"));

    apr_model_free(f32);
    apr_model_free(f32b);
    apr_model_free(q8);
    apr_model_free(q6p);
    apr_model_free(chain);
}

/* ---------------------------------------------------------------- model comparison */

static void test_models_compare(void **state)
{
    (void)state;
    apr_model *a = tiny_model(APR_DT_F32, NULL), *b = tiny_model(APR_DT_F32, NULL);
    char diff[512];
    assert_int_equal(apr_model_set_kv_str(a, "general.architecture", "llama"), 0);
    assert_int_equal(apr_model_set_kv_str(b, "general.architecture", "llama"), 0);
    assert_int_equal(apr_model_set_kv_str(a, "apr.provenance.tool", "apr 0.1"), 0);
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 0);

    /* one flipped payload byte, named with its offset */
    uint8_t *p = b->tensors[0].owned;
    p[77] ^= 0x40;
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "blk.0.attn_q.weight"));
    assert_non_null(strstr(diff, "byte 77"));
    p[77] ^= 0x40;

    /* a metadata value, and a key only one side has */
    assert_int_equal(apr_model_set_kv_u32(a, "llama.block_count", 5), 0);
    assert_int_equal(apr_model_set_kv_u32(b, "llama.block_count", 6), 0);
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "llama.block_count"));
    assert_int_equal(apr_model_set_kv_u32(b, "llama.block_count", 5), 0);
    assert_int_equal(apr_model_set_kv_str(b, "converter.note", "x"), 0);
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "converter.note"));
    const char *ign[] = {"converter.", NULL};
    assert_int_equal(apr_models_compare(a, b, ign, diff, sizeof diff), 0);

    /* a type change with the same value is a difference */
    assert_int_equal(apr_model_set_kv_i32(b, "llama.block_count", 5), 0);
    assert_int_equal(apr_models_compare(a, b, ign, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "type"));
    apr_model_free(a);
    apr_model_free(b);

    /* dtype change, and a missing tensor */
    a = tiny_model(APR_DT_F32, NULL);
    b = tiny_model(APR_DT_F16, NULL);
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "dtype"));
    apr_model_free(b);
    b = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_models_compare(a, b, NULL, diff, sizeof diff), 1);
    assert_non_null(strstr(diff, "missing"));
    apr_model_free(a);
    apr_model_free(b);
}

/* ---------------------------------------------------------------- tokens */

static void test_tokens_file(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("parity");
    assert_non_null(dir);
    const char *good = tu_path(dir, "good.txt");
    const char *txt = " 1 2\n3\t 511\n\n";
    assert_int_equal(tu_write_file(good, txt, strlen(txt)), 0);
    int32_t *ids = NULL;
    size_t n = 0;
    apr_err err = {0};
    assert_int_equal(apr_parity_tokens_file(good, 512, &ids, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[3], 511);
    free(ids);
    /* 511 is outside a vocabulary of 100; words are not ids; empty files are errors */
    assert_true(apr_parity_tokens_file(good, 100, &ids, &n, &err) < 0);
    assert_non_null(strstr(err.msg, "511"));
    const char *bad = tu_path(dir, "bad.txt");
    assert_int_equal(tu_write_file(bad, "1 two 3", 7), 0);
    assert_true(apr_parity_tokens_file(bad, 512, &ids, &n, &err) < 0);
    const char *neg = tu_path(dir, "neg.txt");
    assert_int_equal(tu_write_file(neg, "-1", 2), 0);
    assert_true(apr_parity_tokens_file(neg, 512, &ids, &n, &err) < 0);
    const char *empty = tu_path(dir, "empty.txt");
    assert_int_equal(tu_write_file(empty, " \n", 2), 0);
    assert_true(apr_parity_tokens_file(empty, 512, &ids, &n, &err) < 0);
    assert_true(apr_parity_tokens_file(tu_path(dir, "absent.txt"), 512, &ids, &n, &err) < 0);
}

static void test_builtin_text(void **state)
{
    (void)state;
    const char *t = apr_parity_builtin_text();
    assert_true(strlen(t) > 4000);
    assert_ptr_equal(t, apr_parity_builtin_text());
    for (const char *p = t; *p; p++) /* plain ASCII prose */
        assert_true((unsigned char)*p < 128);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kld_identical_is_zero),
        cmocka_unit_test(test_kld_analytic),
        cmocka_unit_test(test_acc_add_n_matches_serial),
        cmocka_unit_test(test_logsumexp_and_argmax),
        cmocka_unit_test(test_top1_agreement),
        cmocka_unit_test(test_percentiles_order),
        cmocka_unit_test(test_delta_p_and_perplexity),
        cmocka_unit_test(test_bit_identity_one_ulp),
        cmocka_unit_test(test_nonfinite_logits),
        cmocka_unit_test(test_trace_band),
        cmocka_unit_test(test_decide_policy),
        cmocka_unit_test(test_report_json_parses),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_models_compare),
        cmocka_unit_test(test_tokens_file),
        cmocka_unit_test(test_builtin_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
