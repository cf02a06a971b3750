/* test_attn.c - the CPU backend's tiled attention (libforward/attn.h).
 *
 * What its design guarantees, checked here: (1) a query's output bits do not
 * depend on how the prompt is batched (one batch, or batches of 1, 5, 16,
 * 17 ... tokens at their positions) nor on the order in which items are
 * computed (any thread schedule): compared with memcmp; (2) it computes
 * attention: agreement with the plain one-row softmax (apr_attn_reference)
 * within float rounding (not bit for bit: the online softmax rescales per key
 * tile and sums in float). With GQA groups, a head_dim that is not a multiple
 * of 8, contexts over several key tiles, a sliding window and a softcap.
 * (3) the AVX2 kernels give the scalar loops' bits (apr_quant_force_scalar). */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "quant.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
}

typedef struct attn_case {
    apr_attn_shape s;
    uint32_t n;   /* positions */
    float *q, *k, *v;
} attn_case;

static void case_init(attn_case *c, uint32_t nh, uint32_t nkv, uint32_t hd, uint32_t n, uint32_t window,
                      float softcap, uint64_t seed)
{
    c->s = (apr_attn_shape){.n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .q_stride = (uint64_t)nh * hd,
                            .kv_stride = (uint64_t)nkv * hd, .scale = 1.0f / sqrtf((float)hd),
                            .softcap = softcap, .window = window};
    c->n = n;
    c->q = malloc(sizeof(float) * n * c->s.q_stride);
    c->k = malloc(sizeof(float) * n * c->s.kv_stride);
    c->v = malloc(sizeof(float) * n * c->s.kv_stride);
    assert_non_null(c->q);
    assert_non_null(c->k);
    assert_non_null(c->v);
    for (uint64_t i = 0; i < n * c->s.q_stride; i++)
        c->q[i] = 6.0f * frand(&seed); /* peaked rows: the running max moves between tiles */
    for (uint64_t i = 0; i < n * c->s.kv_stride; i++) {
        c->k[i] = frand(&seed);
        c->v[i] = frand(&seed);
    }
}

static void case_free(attn_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
}

/* Positions [0, n) in batches of the given sizes (cycled), items of each
 * batch in forward or reverse order. */
static float *run_batched(const attn_case *c, const uint32_t *sizes, size_t n_sizes, bool reverse)
{
    float *out = malloc(sizeof(float) * c->n * c->s.q_stride);
    float *scratch = malloc(sizeof(float) * apr_attn_scratch_floats(&c->s));
    assert_non_null(out);
    assert_non_null(scratch);
    uint32_t pos = 0;
    for (size_t b = 0; pos < c->n; b++) {
        uint32_t nt = sizes[b % n_sizes];
        if (nt > c->n - pos)
            nt = c->n - pos;
        const uint64_t items = apr_attn_items(&c->s, nt);
        for (uint64_t i = 0; i < items; i++)
            apr_attn_item(&c->s, c->q + (uint64_t)pos * c->s.q_stride, c->k, c->v,
                          out + (uint64_t)pos * c->s.q_stride, nt, pos, reverse ? items - 1 - i : i, scratch);
        pos += nt;
    }
    free(scratch);
    return out;
}

static void check_case(attn_case *c, const char *what)
{
    static const uint32_t all[] = {100000};
    static const uint32_t ones[] = {1};
    static const uint32_t mixed[] = {5, 16, 17, 3, 64, 1};
    float *a = run_batched(c, all, 1, false);
    float *b = run_batched(c, ones, 1, true);
    float *m = run_batched(c, mixed, sizeof mixed / sizeof *mixed, true);
    const size_t bytes = sizeof(float) * c->n * c->s.q_stride;
    if (memcmp(a, b, bytes) || memcmp(a, m, bytes))
        fail_msg("%s: batching or item order changed the bits", what);
    float *ref = malloc(bytes), *sc = malloc(sizeof(float) * c->n);
    assert_non_null(ref);
    assert_non_null(sc);
    double worst = 0.0;
    for (uint32_t t = 0; t < c->n; t++)
        for (uint32_t h = 0; h < c->s.n_heads; h++)
            apr_attn_reference(&c->s, c->q, c->k, c->v, ref, 0, t, h, sc);
    for (size_t i = 0; i < c->n * c->s.q_stride; i++) {
        const double d = fabs((double)a[i] - (double)ref[i]);
        if (d > worst)
            worst = d;
    }
    print_message("%s: max |tiled - reference| = %.3g\n", what, worst);
    /* outputs are convex combinations of values in [-0.5, 0.5] */
    if (!(worst <= 2e-6))
        fail_msg("%s: tiled attention differs from the reference by %g", what, worst);
    free(ref);
    free(sc);
    free(a);
    free(b);
    free(m);
}

static void test_attn_tiled_bits_and_reference(void **state)
{
    (void)state;
    attn_case c;
    case_init(&c, 6, 2, 40, 150, 0, 0.0f, 1); /* GQA 3, three key tiles, hd % 8 != 0 */
    check_case(&c, "gqa causal");
    case_free(&c);
    case_init(&c, 4, 4, 16, 140, 37, 0.0f, 2); /* sliding window across tile edges */
    check_case(&c, "window 37");
    case_free(&c);
    case_init(&c, 8, 1, 32, 90, 0, 3.0f, 3); /* MQA with a softcap */
    check_case(&c, "softcap 3");
    case_free(&c);
}

/* The SIMD kernels (scores eight keys at a time, the accumulator held in
 * registers 64 columns at a time) against the scalar loops they replace,
 * bit for bit: head sizes with 64-column chunks, an 8-column rest and a
 * tail, and every key count of a tile (the diagonal tiles). */
static void test_attn_simd_matches_scalar(void **state)
{
    (void)state;
    static const uint32_t all[] = {100000};
    static const uint32_t hds[] = {128, 70, 136, 40};
    if (strcmp(apr_quant_simd_name(), "avx2") != 0)
        print_message("AVX2 off (CPU or APR_NO_SIMD): only the scalar loops ran\n");
    for (size_t i = 0; i < sizeof hds / sizeof *hds; i++) {
        attn_case c;
        case_init(&c, 4, 2, hds[i], 150, i == 3 ? 45 : 0, i == 2 ? 5.0f : 0.0f, 10 + i);
        float *simd = run_batched(&c, all, 1, false);
        apr_quant_force_scalar(true);
        float *scalar = run_batched(&c, all, 1, false);
        apr_quant_force_scalar(false);
        if (memcmp(simd, scalar, sizeof(float) * c.n * c.s.q_stride))
            fail_msg("head_dim %u: the SIMD attention differs from the scalar loops", hds[i]);
        free(simd);
        free(scalar);
        case_free(&c);
    }
}

/* The reference with one visible key is that key's value exactly, and the
 * tiled kernel (a single exp(0) = 1 weight) too. */
static void test_attn_first_position_is_v(void **state)
{
    (void)state;
    attn_case c;
    case_init(&c, 2, 1, 24, 1, 0, 0.0f, 4);
    float out[48], scratch[4096];
    assert_true(apr_attn_scratch_floats(&c.s) <= sizeof scratch / sizeof *scratch);
    apr_attn_item(&c.s, c.q, c.k, c.v, out, 1, 0, 0, scratch);
    for (int h = 0; h < 2; h++)
        assert_memory_equal(out + 24 * h, c.v, sizeof(float) * 24);
    case_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attn_tiled_bits_and_reference),
        cmocka_unit_test(test_attn_first_position_is_v),
        cmocka_unit_test(test_attn_simd_matches_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
