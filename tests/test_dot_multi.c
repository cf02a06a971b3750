/* test_dot_multi.c - apr_vec_dot_n (one weight row against several
 * activation rows, the CPU prefill kernel) must give apr_vec_dot's value for
 * every row bit for bit, for every weight type, any number of rows (the
 * four-row kernels and the remainder), odd strides and both the SIMD and the
 * scalar dispatch. The forward pass relies on it: logits do not depend on
 * how tokens are batched. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "quant.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    float u = (float)((*s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
    return (*s >> 20) % 61 == 0 ? 9.0f * u : u; /* a few outliers */
}

/* One weight row of type t from random floats; returns its byte size. */
static size_t make_row(apr_dtype t, const float *x, int64_t n, uint8_t *dst)
{
    if (t == APR_DT_F32) {
        memcpy(dst, x, (size_t)n * 4);
        return (size_t)n * 4;
    }
    if (t == APR_DT_F16 || t == APR_DT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == APR_DT_F16 ? apr_f32_to_f16(x[i]) : apr_f32_to_bf16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return (size_t)n * 2;
    }
    return apr_quantize_chunk(t, x, dst, 1, n, NULL);
}

static void check_type(apr_dtype t, int64_t n, bool scalar)
{
    const int max_rows = 11;
    uint64_t seed = 0x1234u + (uint64_t)t * 977u + (uint64_t)n;
    float *x = malloc((size_t)n * sizeof *x);
    uint8_t *w = malloc((size_t)n * 4 + 64);
    assert_non_null(x);
    assert_non_null(w);
    for (int64_t i = 0; i < n; i++)
        x[i] = frand(&seed);
    assert_true(make_row(t, x, n, w) > 0);
    const apr_dtype vt = apr_vec_dot_type(t);
    const size_t row = (size_t)apr_dtype_row_bytes(vt, (uint64_t)n), stride = row + 40; /* not a block multiple */
    uint8_t *y = calloc((size_t)max_rows, stride);
    assert_non_null(y);
    for (int k = 0; k < max_rows; k++) {
        for (int64_t i = 0; i < n; i++)
            x[i] = frand(&seed) * (k == 3 ? 1e-3f : 1.0f);
        if (k == 5)
            memset(x, 0, (size_t)n * sizeof *x); /* an all-zero token */
        assert_int_equal(apr_quantize_activation(vt, x, y + (size_t)k * stride, n), 0);
    }
    apr_quant_force_scalar(scalar);
    for (int nt = 1; nt <= max_rows; nt++) {
        float got[16];
        apr_vec_dot_n(t, n, w, y, stride, nt, got);
        for (int k = 0; k < nt; k++) {
            float want = apr_vec_dot(t, n, w, y + (size_t)k * stride);
            if (memcmp(&want, &got[k], sizeof want) != 0)
                fail_msg("%s n=%lld rows=%d row %d (%s): %.9g vs %.9g", apr_dtype_name(t), (long long)n, nt, k,
                         scalar ? "scalar" : "simd", want, got[k]);
        }
    }
    apr_quant_force_scalar(false);
    free(x);
    free(w);
    free(y);
}

static void test_dot_n_matches_dot(void **state)
{
    (void)state;
    const apr_dtype types[] = {APR_DT_F32, APR_DT_F16, APR_DT_BF16, APR_DT_Q8_0, APR_DT_Q4_0, APR_DT_Q5_0,
                               APR_DT_Q5_1, APR_DT_Q4_1, APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const apr_dtype t = types[i];
        const int64_t blk = apr_dtype_get(t)->block_elems;
        const int64_t sizes[] = {1, 3, 9, 24}; /* in blocks of 32 or 256 */
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int64_t n = blk > 1 ? sizes[s] * (blk == 256 ? 256 : 32) : sizes[s] * 96 + 5; /* + an 8-lane tail */
            check_type(t, n, false);
            check_type(t, n, true);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_n_matches_dot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
