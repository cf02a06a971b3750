/* test_quant_kernels.c - f16/bf16 conversion, dequantization, dot products.
 *
 * f16/bf16 are checked against references computed independently here (in
 * double precision from the IEEE definitions) and, where the CPU has F16C,
 * against the hardware conversion. Dot products: the dispatching kernel must
 * equal the scalar kernel bit for bit, and both must agree with a double
 * precision dot of the dequantized operands. */
#include "test_util.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* f16 value from the IEEE binary16 definition, in double */
static double f16_def(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, -24);
    else
        v = ldexp((double)(1024 + m), e - 25);
    return s ? -v : v;
}

/* Round-to-nearest-even f32 -> f16 by search over the finite f16 values. */
static uint16_t f16_ref(float f)
{
    uint32_t u = fbits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    if (isnan(f))
        return (uint16_t)(sign | 0x7e00 | ((u >> 13) & 0x3ff));
    double a = fabs((double)f);
    /* 65520 = halfway between 65504 and 2^16: rounds to even = inf */
    if (a >= 65520.0)
        return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; /* largest h with value <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (f16_def((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    int h = lo;
    if (h < 0x7bff) {
        double d0 = a - f16_def((uint16_t)h), d1 = f16_def((uint16_t)(h + 1)) - a;
        if (d1 < d0 || (d1 == d0 && (h & 1)))
            h++;
    } else if (a - 65504.0 >= 8.0) {
        return sign | 0x7c00;
    }
    return (uint16_t)(sign | h);
}

static uint16_t bf16_ref(float f)
{
    uint32_t u = fbits(f);
    if (isnan(f))
        return (uint16_t)((u >> 16) | 0x40);
    uint32_t lo = u & 0xffff0000u;
    double vlo = fabs((double)bitsf(lo));
    double vhi = (lo & 0x7fffffffu) == 0x7f7f0000u ? ldexp(1.0, 128) : fabs((double)bitsf(lo + 0x10000u));
    if ((lo & 0x7f800000u) == 0x7f800000u) /* inf stays inf */
        return (uint16_t)(lo >> 16);
    double a = fabs((double)f);
    uint32_t r = lo;
    if (a - vlo > vhi - a || (a - vlo == vhi - a && ((lo >> 16) & 1)))
        r = lo + 0x10000u;
    return (uint16_t)(r >> 16);
}

static bool have_f16c(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return false;
#endif
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t f16_hw(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
#endif

static void test_f16_exhaustive_roundtrip(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = apr_f16_to_f32((uint16_t)h);
        double def = f16_def((uint16_t)h);
        if (isnan(def)) {
            assert_true(isnan(f));
            assert_int_equal(fbits(f) >> 31, h >> 15); /* sign kept */
            uint16_t back = apr_f32_to_f16(f);
            /* quiet NaNs round-trip; signalling ones come back quiet, same payload */
            assert_int_equal(back, h | 0x0200);
        } else {
            assert_true((double)f == def);
            assert_int_equal(signbit(f) != 0, (h >> 15) != 0);
            assert_int_equal(apr_f32_to_f16(f), h);
        }
    }
}

/* f32 values that matter for f16 rounding: each f16 value, its neighbours
 * and the exact midpoints with their neighbours, plus a stride over all f32
 * bit patterns. */
static void check_f16_value(float f, bool hw)
{
    uint16_t got = apr_f32_to_f16(f);
    uint16_t ref = f16_ref(f);
    if (got != ref) {
        print_message("f32 %08x (%g): got %04x want %04x\n", fbits(f), (double)f, got, ref);
        fail();
    }
#if defined(__x86_64__)
    if (hw && got != f16_hw(f)) {
        print_message("f32 %08x: got %04x, F16C says %04x\n", fbits(f), got, f16_hw(f));
        fail();
    }
#else
    (void)hw;
#endif
}

static void test_f16_rounding(void **state)
{
    (void)state;
    const bool hw = have_f16c();
    if (!hw)
        print_message("note: no F16C on this CPU; checking against the software reference only\n");
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int s = 0; s < 2; s++) {
            uint16_t hh = (uint16_t)(h | (s << 15));
            double v = f16_def(hh);
            double next = f16_def((uint16_t)(hh + 1));
            float mid = (float)((v + next) / 2); /* exact in f32 for f16 neighbours */
            uint32_t mb = fbits(mid);
            check_f16_value(mid, hw);
            check_f16_value(bitsf(mb - 1), hw);
            check_f16_value(bitsf(mb + 1), hw);
            check_f16_value((float)v, hw);
        }
    }
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099)
        check_f16_value(bitsf((uint32_t)u), hw);
    /* the special cases by name */
    assert_int_equal(apr_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(apr_f32_to_f16(65519.996f), 0x7bff);
    assert_int_equal(apr_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(apr_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(apr_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(apr_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);            /* tie to even: 0 */
    assert_int_equal(apr_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(apr_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);            /* 1.5 ulp: even = 2 */
    assert_int_equal(apr_f32_to_f16(-0.0f), 0x8000);
    assert_true((apr_f32_to_f16(NAN) & 0x7e00) == 0x7e00);
    assert_true((apr_f32_to_f16(bitsf(0x7f800001u)) & 0x7fff) > 0x7c00);   /* signalling NaN -> NaN */
}

static void test_bf16(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = apr_bf16_to_f32((uint16_t)h);
        assert_int_equal(fbits(f), h << 16);
        if (!isnan(f))
            assert_int_equal(apr_f32_to_bf16(f), h);
        else
            assert_int_equal(apr_f32_to_bf16(f), h | 0x40);
    }
    for (uint64_t u = 0; u < 0x100000000ull; u += 1021) {
        float f = bitsf((uint32_t)u);
        uint16_t got = apr_f32_to_bf16(f), ref = bf16_ref(f);
        if (got != ref) {
            print_message("bf16 of %08x: got %04x want %04x\n", (uint32_t)u, got, ref);
            fail();
        }
    }
    /* ties and boundaries */
    assert_int_equal(apr_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80); /* tie, even stays */
    assert_int_equal(apr_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82); /* tie, odd rounds up */
    assert_int_equal(apr_f32_to_bf16(bitsf(0x00008000u)), 0x0000); /* subnormal tie */
    assert_int_equal(apr_f32_to_bf16(bitsf(0x00018000u)), 0x0002);
    assert_int_equal(apr_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
}

/* ------------------------------------------------------------ dequantize / dot */

static void rand_row(uint64_t seed, float *x, int64_t n, float scale)
{
    tu_golden_input(seed, 1, (uint64_t)n, x);
    for (int64_t i = 0; i < n; i++)
        x[i] *= scale;
}

static const apr_dtype k_types[] = {APR_DT_Q8_0, APR_DT_Q4_0, APR_DT_Q4_1, APR_DT_Q5_0, APR_DT_Q5_1,
                                    APR_DT_Q2_K, APR_DT_Q3_K, APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K,
                                    APR_DT_F16,  APR_DT_BF16, APR_DT_F32};

/* quantize -> dequantize error stays within what the format can represent */
static void test_dequant_roundtrip(void **state)
{
    (void)state;
    const int64_t n = 4096;
    float *x = malloc(n * 4), *back = malloc(n * 4);
    uint8_t *q = malloc(n * 4);
    rand_row(7, x, n, 1.0f);
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
        apr_dtype t = k_types[k];
        assert_true(apr_quantize_supported(t));
        size_t nb = apr_quantize_chunk(t, x, q, 1, n, NULL);
        assert_int_equal(nb, apr_dtype_row_bytes(t, n));
        assert_int_equal(apr_dequantize_row(t, q, back, n), 0);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (back[i] - x[i]) * (double)(back[i] - x[i]);
            sx += x[i] * (double)x[i];
        }
        double rel = sqrt(se / sx);
        /* generous per-type bounds: 2-bit ~ 0.5, 3-bit ~0.25, 4-bit ~0.12 ... */
        double bound = t == APR_DT_Q2_K ? 0.6 : t == APR_DT_Q3_K ? 0.3 : (t == APR_DT_Q4_0 || t == APR_DT_Q4_1 || t == APR_DT_Q4_K) ? 0.15
                       : (t == APR_DT_Q5_0 || t == APR_DT_Q5_1 || t == APR_DT_Q5_K) ? 0.08 : t == APR_DT_Q6_K ? 0.04
                       : t == APR_DT_Q8_0 ? 0.01 : t == APR_DT_BF16 ? 0.005 : 0.001;
        if (rel > bound) {
            print_message("%s: relative rms error %g > %g\n", apr_dtype_name(t), rel, bound);
            fail();
        }
        /* apr_to_f32_row is the same for these types */
        float *b2 = malloc(n * 4);
        assert_int_equal(apr_to_f32_row(t, q, b2, n), 0);
        assert_memory_equal(b2, back, n * 4);
        free(b2);
    }
    /* bad sizes are refused */
    assert_true(apr_dequantize_row(APR_DT_Q4_K, q, back, 100) < 0);
    assert_int_equal(apr_quantize_chunk(APR_DT_Q4_K, x, q, 1, 100, NULL), 0);
    assert_int_equal(apr_quantize_chunk(APR_DT_I32, x, q, 1, 64, NULL), 0);
    free(x);
    free(back);
    free(q);
}

/* apr_to_f32_row on F16 / BF16 rows (the SIMD kernels where the CPU has
 * them) equals the scalar conversion for every 16-bit pattern, NaNs
 * included, at every alignment of the row's tail. */
static void test_f16_bf16_rows(void **state)
{
    (void)state;
    uint16_t *h = malloc(65536 * 2 + 16);
    float *o = malloc(65536 * 4 + 64);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    for (int bf = 0; bf < 2; bf++) {
        for (int64_t start = 0; start < 3; start++) {
            const int64_t n = 65536 - start - (start ? 5 : 0);
            assert_int_equal(apr_to_f32_row(bf ? APR_DT_BF16 : APR_DT_F16, h + start, o, n), 0);
            for (int64_t i = 0; i < n; i++) {
                const uint16_t v = h[start + i];
                const float r = bf ? apr_bf16_to_f32(v) : apr_f16_to_f32(v);
                if (fbits(o[i]) != fbits(r)) {
                    print_message("%s 0x%04x: row %08x, scalar %08x\n", bf ? "BF16" : "F16", v, fbits(o[i]), fbits(r));
                    fail();
                }
            }
        }
    }
    /* the finiteness scan */
    float x[67];
    for (int i = 0; i < 67; i++)
        x[i] = (float)i;
    assert_true(apr_f32_all_finite(x, 67));
    for (int p = 0; p < 67; p++) {
        x[p] = p % 2 ? INFINITY : -NAN;
        assert_false(apr_f32_all_finite(x, 67));
        x[p] = (float)p;
    }
    free(h);
    free(o);
}

static void test_to_f32_plain(void **state)
{
    (void)state;
    double d[3] = {1.5, -2.25, 1e300};
    int64_t i64[3] = {-5, 7, 1ll << 40};
    int8_t i8[3] = {-128, 0, 127};
    uint16_t u16[3] = {0, 1, 65535};
    uint8_t bo[3] = {0, 1, 2};
    float o[3];
    assert_int_equal(apr_to_f32_row(APR_DT_F64, d, o, 3), 0);
    assert_true(o[0] == 1.5f && o[1] == -2.25f && isinf(o[2]));
    assert_int_equal(apr_to_f32_row(APR_DT_I64, i64, o, 3), 0);
    assert_true(o[0] == -5.0f && o[1] == 7.0f && o[2] == 1099511627776.0f);
    assert_int_equal(apr_to_f32_row(APR_DT_I8, i8, o, 3), 0);
    assert_true(o[0] == -128.0f && o[2] == 127.0f);
    assert_int_equal(apr_to_f32_row(APR_DT_U16, u16, o, 3), 0);
    assert_true(o[2] == 65535.0f);
    assert_int_equal(apr_to_f32_row(APR_DT_BOOL, bo, o, 3), 0);
    assert_true(o[0] == 0.0f && o[1] == 1.0f && o[2] == 1.0f);
    assert_true(apr_to_f32_row(APR_DT_ROWCAT, d, o, 3) < 0);
}

static void check_dot(apr_dtype t, int64_t n, uint64_t seed, bool *simd_differs)
{
    float *w = malloc(n * 4), *y = malloc(n * 4), *wd = malloc(n * 4), *yd = malloc(n * 4);
    uint8_t *wq = malloc(n * 4 + 64), *yq = malloc(n * 4 + 64);
    rand_row(seed, w, n, 1.0f);
    rand_row(seed + 100, y, n, 3.0f);
    assert_int_not_equal(apr_quantize_chunk(t, w, wq, 1, n, NULL), 0);
    apr_dtype vt = apr_vec_dot_type(t);
    assert_int_equal(apr_quantize_activation(vt, y, yq, n), 0);
    assert_int_equal(apr_dequantize_row(t, wq, wd, n), 0);
    assert_int_equal(apr_to_f32_row(vt, yq, yd, n), 0);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)wd[i] * yd[i];
        mag += fabs((double)wd[i] * yd[i]);
    }
    float s = apr_vec_dot_scalar(t, n, wq, yq);
    float v = apr_vec_dot(t, n, wq, yq);
    if (fabs(s - ref) > 1e-5 * mag + 1e-30) {
        print_message("%s n=%lld: scalar %.9g vs f64 %.9g (mag %g)\n", apr_dtype_name(t), (long long)n, s, ref, mag);
        fail();
    }
    if (fbits(s) != fbits(v)) {
        print_message("%s n=%lld: dispatch (%s) %.9g != scalar %.9g\n", apr_dtype_name(t), (long long)n,
                      apr_quant_simd_name(), v, s);
        *simd_differs = true;
    }
    free(w); free(y); free(wd); free(yd); free(wq); free(yq);
}

static void test_vec_dot(void **state)
{
    (void)state;
    print_message("dot kernels in use: %s\n", apr_quant_simd_name());
    bool differs = false;
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
        apr_dtype t = k_types[k];
        const int64_t sizes[] = {256, 512, 4096, 11008};
        for (size_t s = 0; s < 4; s++)
            for (uint64_t seed = 1; seed <= 3; seed++)
                check_dot(t, sizes[s], seed * 31 + k, &differs);
    }
    /* float types accept any length (tail handled after the 8-lane body) */
    check_dot(APR_DT_F32, 13, 5, &differs);
    check_dot(APR_DT_F16, 21, 6, &differs);
    check_dot(APR_DT_BF16, 7, 8, &differs);
    assert_false(differs);
    assert_int_equal(apr_vec_dot_type(APR_DT_Q4_K), APR_DT_Q8_K);
    assert_int_equal(apr_vec_dot_type(APR_DT_Q5_1), APR_DT_Q8_0);
    assert_int_equal(apr_vec_dot_type(APR_DT_BF16), APR_DT_F32);
    assert_true(apr_quantize_activation(APR_DT_Q8_K, NULL, NULL, 100) < 0);
}

/* Q8_K activations: scale uses -127/max, values within [-127, 127], bsums
 * are the sums of 16. */
static void test_q8k_activation(void **state)
{
    (void)state;
    float y[512];
    rand_row(3, y, 512, 2.0f);
    y[5] = -10.0f; /* the largest magnitude, negative */
    struct { float d; int8_t qs[256]; int16_t bsums[16]; } b[2];
    assert_int_equal(sizeof b[0], 292);
    assert_int_equal(apr_quantize_activation(APR_DT_Q8_K, y, b, 512), 0);
    assert_true(b[0].qs[5] == 127 || b[0].qs[5] == -127);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += b[i].qs[16 * j + l];
            assert_int_equal(s, b[i].bsums[j]);
        }
    float z[256] = {0};
    assert_int_equal(apr_quantize_activation(APR_DT_Q8_K, z, b, 256), 0);
    assert_true(b[0].d == 0.0f);
}

/* The SIMD quantizers (apr_quantize_chunk) against the scalar port
 * (apr_quantize_chunk_ref) on inputs that exercise every lane special case:
 * zero and constant sub-blocks, all-positive / all-negative sub-blocks, tiny
 * and huge magnitudes, single spikes, non-finite values, f16-rounded data. */
static void fill_case(int c, uint64_t seed, float *x, int64_t n)
{
    rand_row(seed, x, n, 1.0f);
    for (int64_t i = 0; i < n; i++) {
        const int64_t sb = i / 16; /* 16-element sub-block index */
        switch (c) {
        case 0: break;
        case 1: if (sb % 3 == 0) x[i] = 0.0f; break;                    /* zero sub-blocks */
        case 2: if (sb % 2) x[i] = 0.25f; break;                         /* constant sub-blocks */
        case 3: x[i] = fabsf(x[i]) + (sb % 5 == 0 ? 1.0f : 0.0f); break; /* min > 0 */
        case 4: x[i] = -fabsf(x[i]); break;
        case 5: x[i] *= 1e-20f; break;                                   /* below GROUP_MAX_EPS */
        case 6: x[i] *= (sb % 4 == 0) ? 1e4f : 1e-6f; break;
        case 7: x[i] = (i % 37 == 0) ? 50.0f : 0.001f * x[i]; break;     /* spikes */
        case 8: x[i] = apr_f16_to_f32(apr_f32_to_f16(x[i])); break;
        case 9: if (i % 1000 == 7) x[i] = (i % 2) ? NAN : INFINITY; break;
        case 10: x[i] = (float)((int)(x[i] * 8)) / 8; break;              /* few distinct values */
        case 11: if (sb % 2) x[i] = -0.0f; break;
        case 12: x[i] = (i % 3 == 0) ? -0.0f : (i % 3 == 1 ? 0.0f : (sb % 2 ? fabsf(x[i]) : -fabsf(x[i]))); break;
        case 13: x[i] = (i * 7 % 5 < 2) ? -1.5f : 1.5f; break;          /* ties of |x| with both signs */
        case 14: x[i] = (sb % 2) ? 0.0f : x[i] * 2.5e19f; break;          /* huge next to zero */
        case 15: { /* IQ4 ties: a block max of 127 makes the first guess's scale 1, and the
                    * values sit halfway between two entries of kvalues_iq4nl */
            static const float mid[15] = {-115.5f, -93.5f, -74, -57, -42, -28.5f, -16, -4.5f,
                                          7,       19,     31.5f, 45.5f, 61, 79, 101};
            x[i] = i % 32 == 5 ? 127.0f : mid[(i * 7) % 15];
            break;
        }
        }
    }
}

static void test_fast_equals_reference(void **state)
{
    (void)state;
    print_message("quantizers in use: %s\n", apr_quant_simd_name());
    const int64_t rows = 3, cols = 4096, n = rows * cols;
    float *x = malloc(n * 4);
    uint8_t *a = malloc(n * 2), *b = malloc(n * 2);
    const apr_dtype types[] = {APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_Q8_0, APR_DT_Q4_0,
                               APR_DT_Q5_1, APR_DT_Q4_1, APR_DT_Q5_0, APR_DT_Q2_K, APR_DT_Q3_K,
                               APR_DT_IQ4_NL, APR_DT_IQ4_XS};
    const float scales[] = {1.0f, 3.7e-3f, 1234.5f, 7.1e-9f};
    int bad = 0;
    for (int c = 0; c < 16 * 4; c++) {
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
            fill_case(c % 16, 1000 + c, x, n);
            for (int64_t i = 0; i < n; i++)
                x[i] *= scales[c / 16];
            size_t sa = apr_quantize_chunk(types[k], x, a, rows, cols, NULL);
            size_t sb = apr_quantize_chunk_ref(types[k], x, b, rows, cols, NULL);
            size_t sm = apr_quantize_chunk_mt(types[k], x, a + sa, 1, cols, NULL, 2);
            assert_int_equal(sa, sb);
            assert_int_equal(sm, sa / rows);
            if (memcmp(a, b, sa) || memcmp(a + sa, b, sm)) {
                size_t i = 0;
                while (a[i] == b[i])
                    i++;
                print_message("case %d %s: fast != reference at byte %zu\n", c, apr_dtype_name(types[k]), i);
                bad++;
            }
        }
    }
    free(x);
    free(a);
    free(b);
    assert_int_equal(bad, 0);
}

/* Importance weights for the imatrix comparison: positive spreads, zeros
 * (whole row, some sub-blocks, single columns), negative, huge (products
 * overflow to inf and NaN inside the search), tiny and subnormal, constant,
 * and non-finite ones (the fast code must hand those to the reference). */
static void fill_weights(int c, uint64_t seed, float *w, int64_t n)
{
    rand_row(seed, w, n, 1.0f);
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(w[i]);
        switch (c) {
        case 0: w[i] = a * 5.0f + 0.01f; break;
        case 1: w[i] = 0.0f; break;
        case 2: w[i] = (i / 16) % 3 == 1 ? 0.0f : a; break;
        case 3: w[i] = w[i] * 2.0f; break;                           /* some negative */
        case 4: w[i] = -a - 1e-3f; break;                            /* all negative */
        case 5: w[i] = a * 1e30f; break;
        case 6: w[i] = (i % 7 == 0) ? 3e38f : a; break;
        case 7: w[i] = a * 1e-30f; break;
        case 8: w[i] = (i % 2) ? 1e-41f : a * 1e-38f; break;          /* subnormal */
        case 9: w[i] = 1.0f; break;
        case 10: w[i] = (i % 11 == 3) ? 0.0f : (i % 2 ? -0.0f : a); break;
        case 11: w[i] = (i == n / 2) ? INFINITY : (i == n / 3 ? NAN : a); break;
        }
    }
}

/* apr_quantize_chunk (the imatrix kernels of quant_fast.c) against
 * apr_quantize_chunk_ref with an importance matrix: every input case of
 * fill_case, scaled by odd factors, plus all-zero rows, against every weight
 * case, on row lengths that leave the 32-block kernels a partial group. */
static void test_fast_equals_reference_imatrix(void **state)
{
    (void)state;
    const apr_dtype types[] = {APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_Q2_K, APR_DT_Q3_K,
                               APR_DT_Q4_0, APR_DT_Q5_0, APR_DT_Q4_1, APR_DT_Q5_1, APR_DT_Q8_0,
                               APR_DT_IQ4_XS, APR_DT_IQ4_NL};
    const float scales[] = {1.0f, 3.7e-3f, 1234.5f, 7.1e-9f, 2.5e19f};
    const int64_t rows = 3, maxcols = 1280;
    float *x = malloc(rows * maxcols * 4), *w = malloc(maxcols * 4);
    uint8_t *a = malloc(rows * maxcols * 2), *b = malloc(rows * maxcols * 2), *m = malloc(rows * maxcols * 2);
    int bad = 0, checked = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const bool kq = types[k] == APR_DT_Q4_K || types[k] == APR_DT_Q5_K || types[k] == APR_DT_Q6_K ||
                        types[k] == APR_DT_Q2_K || types[k] == APR_DT_Q3_K || types[k] == APR_DT_IQ4_XS;
        for (int xc = 0; xc < 13; xc++) {
            for (int it = 0; it < 4 * 12; it++) {
                const int wc = it % 12; /* 4 seeds per (input, weight) case */
                const uint64_t seed = 5000 + 131 * (uint64_t)xc + 17 * (uint64_t)it + 7919 * k;
                /* K-quants: 1, 3 or 5 super-blocks (the kernels pair them); 32-blocks: 25, 21, 24 or 3
                 * (the kernels take 16 at a time, the last 8 or 16 padded) */
                static const int64_t kcols[3] = {1280, 768, 256}, bcols[4] = {800, 672, 768, 96};
                const int64_t cols = kq ? kcols[(xc + it) % 3] : bcols[(xc + it) % 4];
                const int64_t n = rows * cols;
                if (xc == 12)
                    memset(x, 0, (size_t)n * 4); /* all-zero rows */
                else
                    fill_case(xc, seed, x, n);
                const float sc = scales[(xc + 3 * it + (int)k) % 5];
                for (int64_t i = 0; i < n; i++)
                    x[i] *= sc;
                if (xc % 4 == 1) /* one all-zero row among non-zero ones */
                    memset(x + cols, 0, (size_t)cols * 4);
                fill_weights(wc, seed + 1, w, cols);
                size_t sa = apr_quantize_chunk(types[k], x, a, rows, cols, w);
                size_t sb = apr_quantize_chunk_ref(types[k], x, b, rows, cols, w);
                size_t sm = apr_quantize_chunk_mt(types[k], x, m, rows, cols, w, 2);
                assert_true(sa > 0);
                assert_int_equal(sa, sb);
                assert_int_equal(sm, sa);
                checked++;
                if (memcmp(a, b, sa) || memcmp(m, b, sa)) {
                    size_t i = 0;
                    while (a[i] == b[i] && m[i] == b[i])
                        i++;
                    print_message("%s x case %d (scale %g) w case %d cols %lld: fast != reference at byte %zu\n",
                                  apr_dtype_name(types[k]), xc, sc, wc, (long long)cols, i);
                    bad++;
                }
            }
        }
    }
    print_message("imatrix: %d fast/reference comparisons\n", checked);
    free(x);
    free(w);
    free(a);
    free(b);
    free(m);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_exhaustive_roundtrip),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_roundtrip),
        cmocka_unit_test(test_f16_bf16_rows),
        cmocka_unit_test(test_to_f32_plain),
        cmocka_unit_test(test_vec_dot),
        cmocka_unit_test(test_q8k_activation),
        cmocka_unit_test(test_fast_equals_reference),
        cmocka_unit_test(test_fast_equals_reference_imatrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
