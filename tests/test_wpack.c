/* test_wpack.c - the packed matmul kernels (apr_wpack_gemm) must give
 * apr_vec_dot_scalar's value for every (row, token) bit for bit: every
 * packed weight type, row counts that leave a partial group, row ranges that
 * start inside the matrix, every token-tile remainder, odd activation
 * strides, extreme activations (a constant row quantizes to -128 in Q8_K,
 * the bound the int16 sums are sized for), block rows of all-ones and of
 * random bytes (every level and scale at its largest) and every dispatch
 * (the best this CPU has; the AVX2 maddubs block kernels instead of VNNI;
 * AVX-512 kept off, so AVX-VNNI where the CPU has it; plain AVX2; forced
 * scalar). The forward pass relies on it: logits do not depend on
 * the thread that computes a row or on how tokens are batched. */
#include "test_util.h"

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

enum { N_ROWS = 43, N_TOK = 11 }; /* 43: more than one float call (APRQ_FLOAT_ROWS = 32) */

/* Offsets of a block's f16 scale fields (d, and m / dmin where the type
 * has one; -1 = none). */
static void f16_fields(apr_dtype t, int off[2])
{
    off[0] = 0;
    off[1] = -1;
    switch (t) {
    case APR_DT_Q4_1:
    case APR_DT_Q5_1:
    case APR_DT_Q4_K:
    case APR_DT_Q5_K: off[1] = 2; break;
    case APR_DT_Q2_K: off[0] = 80; off[1] = 82; break;
    case APR_DT_Q3_K: off[0] = 108; break;
    case APR_DT_Q6_K: off[0] = 208; break;
    default: break;
    }
}

/* A block row no quantizer makes: every byte `fill` (or random when fill
 * < 0), then finite scales, so every level, scale and min reaches values
 * (all bits set: the largest) that the int16 sums must survive. */
static void make_raw_row(apr_dtype t, int64_t n, int fill, uint64_t *seed, uint8_t *dst)
{
    const apr_dtype_info *di = apr_dtype_get(t);
    const size_t bb = di->block_bytes, nb = (size_t)(n / di->block_elems);
    for (size_t i = 0; i < bb * nb; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        dst[i] = fill >= 0 ? (uint8_t)fill : (uint8_t)(*seed >> 33);
    }
    int off[2];
    f16_fields(t, off);
    for (size_t i = 0; i < nb; i++)
        for (int f = 0; f < 2; f++)
            if (off[f] >= 0) {
                const uint16_t h = apr_f32_to_f16(f ? 0.0071f : 0.0123f);
                memcpy(dst + i * bb + (size_t)off[f], &h, 2);
            }
}

enum { KERNELS_BEST, KERNELS_NO_VNNI, KERNELS_NO_AVX512, KERNELS_AVX2, KERNELS_SCALAR, KERNELS_N };

/* Select the kernels of mode k (all forced off again with KERNELS_BEST). */
static void set_kernels(int k)
{
    apr_quant_force_scalar(k == KERNELS_SCALAR);
    apr_quant_force_no_avx512(k == KERNELS_NO_AVX512 || k == KERNELS_AVX2);
    apr_quant_force_no_vnni(k == KERNELS_NO_VNNI || k == KERNELS_AVX2);
}

static void check_pack(apr_dtype t, int64_t n, int kernels)
{
    uint64_t seed = 0x777u + (uint64_t)t * 131u + (uint64_t)n;
    const size_t rb = (size_t)apr_dtype_row_bytes(t, (uint64_t)n);
    float *x = malloc((size_t)n * sizeof *x);
    uint8_t *w = malloc(rb * N_ROWS);
    assert_non_null(x);
    assert_non_null(w);
    const uint8_t *rows[N_ROWS];
    for (int r = 0; r < N_ROWS; r++) {
        for (int64_t i = 0; i < n; i++)
            x[i] = r == 2 ? 1.0f : frand(&seed) * (r == 4 ? 1e-4f : 1.0f);
        assert_int_equal(make_row(t, x, n, w + (size_t)r * rb), rb);
        if (apr_dtype_get(t)->block_elems > 1 && (r == 6 || r == 9))
            make_raw_row(t, n, r == 6 ? 0xFF : -1, &seed, w + (size_t)r * rb);
    }
    /* the pack's rows in a shuffled order, as a permuted Q/K view asks */
    for (int r = 0; r < N_ROWS; r++)
        rows[r] = w + (size_t)((r * 7) % N_ROWS) * rb;
    const apr_dtype vt = apr_vec_dot_type(t);
    const size_t arow = (size_t)apr_dtype_row_bytes(vt, (uint64_t)n), stride = arow + 44;
    uint8_t *y = calloc(N_TOK, stride);
    assert_non_null(y);
    for (int k = 0; k < N_TOK; k++) {
        for (int64_t i = 0; i < n; i++)
            x[i] = k == 1 ? -1.0f : k == 6 ? 2.5f : frand(&seed) * (k == 3 ? 1e-3f : 1.0f);
        if (k == 5)
            memset(x, 0, (size_t)n * sizeof *x);
        assert_int_equal(apr_quantize_activation(vt, x, y + (size_t)k * stride, n), 0);
    }
    apr_wpack p;
    assert_int_equal(apr_wpack_init(&p, t, N_ROWS, (uint64_t)n, rows), 0);
    set_kernels(kernels);
    float *out = malloc(sizeof(float) * N_TOK * N_ROWS);
    assert_non_null(out);
    const uint64_t ranges[][2] = {{0, N_ROWS}, {8, N_ROWS}, {0, 8}, {16, 17}, {40, N_ROWS}};
    for (size_t ri = 0; ri < sizeof ranges / sizeof *ranges; ri++)
        for (uint32_t nt = 1; nt <= N_TOK; nt++) {
            for (size_t i = 0; i < (size_t)N_TOK * N_ROWS; i++)
                out[i] = -12345.0f;
            apr_wpack_gemm(&p, ranges[ri][0], ranges[ri][1], y, stride, nt, out, N_ROWS);
            for (uint32_t k = 0; k < N_TOK; k++)
                for (uint64_t r = 0; r < N_ROWS; r++) {
                    const float got = out[k * N_ROWS + r];
                    if (k >= nt || r < ranges[ri][0] || r >= ranges[ri][1]) {
                        if (got != -12345.0f)
                            fail_msg("%s: wrote outside rows [%llu,%llu) x %u tokens", apr_dtype_name(t),
                                     (unsigned long long)ranges[ri][0], (unsigned long long)ranges[ri][1], nt);
                        continue;
                    }
                    const float want = apr_vec_dot_scalar(t, n, rows[r], y + (size_t)k * stride);
                    if (memcmp(&want, &got, sizeof want) != 0)
                        fail_msg("%s n=%lld nt=%u row %llu token %u (%s): %.9g vs %.9g", apr_dtype_name(t),
                                 (long long)n, nt, (unsigned long long)r, k, apr_wpack_kernel_name(), want, got);
                }
        }
    set_kernels(KERNELS_BEST);
    apr_wpack_free(&p);
    free(out);
    free(x);
    free(w);
    free(y);
}

static void test_wpack_matches_scalar_dot(void **state)
{
    (void)state;
    const apr_dtype types[] = {APR_DT_F32,  APR_DT_F16,  APR_DT_BF16, APR_DT_Q8_0, APR_DT_Q4_0, APR_DT_Q4_1,
                               APR_DT_Q5_0, APR_DT_Q5_1, APR_DT_Q2_K, APR_DT_Q3_K, APR_DT_Q4_K, APR_DT_Q5_K,
                               APR_DT_Q6_K};
    for (int k = 0; k < KERNELS_N; k++) {
        set_kernels(k);
        print_message("packed kernels, mode %d: %s\n", k, apr_wpack_kernel_name());
    }
    set_kernels(KERNELS_BEST);
    int ran = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const apr_dtype t = types[i];
        if (!apr_wpack_supported(t)) {
            print_message("%s: no packed kernel on this CPU (skipped)\n", apr_dtype_name(t));
            continue;
        }
        ran++;
        const int64_t blk = apr_dtype_get(t)->block_elems;
        const int64_t sizes[] = {1, 3, 14};
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            const int64_t n = blk > 1 ? sizes[s] * blk : sizes[s] * 96 + 5; /* + an 8-lane tail */
            for (int k = 0; k < KERNELS_N; k++)
                check_pack(t, n, k);
        }
    }
    if (!ran && getenv("APR_TEST_STRICT"))
        fail_msg("no packed kernel ran (CPU without AVX2?)");
}

static void test_wpack_refuses(void **state)
{
    (void)state;
    apr_wpack p;
    const uint8_t *rows[1] = {NULL};
    assert_int_not_equal(apr_wpack_init(&p, APR_DT_Q4_K, 1, 100, rows), 0); /* not a block multiple */
    assert_int_not_equal(apr_wpack_init(&p, APR_DT_I32, 1, 256, rows), 0);
    assert_int_not_equal(apr_wpack_init(&p, APR_DT_Q8_0, 0, 256, rows), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wpack_matches_scalar_dot),
        cmocka_unit_test(test_wpack_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
