/* dot_avx2.c - AVX2 dot products. Integer parts are exact, the float parts
 * repeat the scalar kernels' operations in the same order (dot.c), so the
 * results equal the scalar ones bit for bit (the float types' steps are
 * FMAs there and here).
 * Compiled for baseline x86-64; functions carry target attributes and are
 * only called after aprq_cpu_avx2(). */
#include <math.h>
#include <string.h>

#include "quant_internal.h"
#include "dot_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,f16c,fma")))

AVX2 static inline int hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Same tree as dot.c's reduce8. */
AVX2 static inline float reduce8(__m256 v)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* s0+s4 .. s3+s7 */
    __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));                                /* t0+t2, t1+t3 */
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

AVX2 static float dot_f32(int64_t n, const float *w, const float *y)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(y + i), acc);
    float r = reduce8(acc);
    for (; i < n; i++)
        r = fmaf(w[i], y[i], r);
    return r;
}

AVX2 static float dot_f16(int64_t n, const uint16_t *w, const float *y)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y + i), acc);
    }
    float r = reduce8(acc);
    for (; i < n; i++)
        r = fmaf(apr_f16_to_f32(w[i]), y[i], r);
    return r;
}

AVX2 static float dot_bf16(int64_t n, const uint16_t *w, const float *y)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
        acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y + i), acc);
    }
    float r = reduce8(acc);
    for (; i < n; i++)
        r = fmaf(apr_bf16_to_f32(w[i]), y[i], r);
    return r;
}

/* sum of x*y over 32 signed bytes each (exact) */
AVX2 static inline __m256i dot_i8(__m256i x, __m256i y)
{
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    const __m256i p16 = _mm256_maddubs_epi16(ax, sy); /* |x|<=128,|y|<=127: pairs fit int16 */
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

AVX2 static float dot_q8_0(int64_t nb, const blk_q8_0 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)x[i].qs);
        __m256i b = _mm256_loadu_si256((const __m256i *)y[i].qs);
        const int sumi = hsum_i32(dot_i8(a, b));
        sumf += sumi * (apr_f16_to_f32(x[i].d) * apr_f16_to_f32(y[i].d));
    }
    return sumf;
}

/* 32 nibbles of a 16-byte array: low nibbles in bytes 0..15, high in 16..31 */
AVX2 static inline __m256i nibbles32(const uint8_t *q)
{
    __m128i v = _mm_loadu_si128((const __m128i *)q);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

AVX2 static float dot_q4_0(int64_t nb, const blk_q4_0 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        __m256i q = _mm256_sub_epi8(nibbles32(x[i].qs), _mm256_set1_epi8(8));
        __m256i b = _mm256_loadu_si256((const __m256i *)y[i].qs);
        const int sumi = hsum_i32(dot_i8(q, b));
        sumf += sumi * (apr_f16_to_f32(x[i].d) * apr_f16_to_f32(y[i].d));
    }
    return sumf;
}

/* Q4_K / Q5_K: unsigned levels (<= 31) times Q8_K bytes, per 32-element
 * sub-block scaled by the 6-bit scale, accumulated exactly in int32. */
AVX2 static inline __m256i scaled_dot_u(__m256i q, const int8_t *a, int sc)
{
    __m256i p16 = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16((short)sc));
}

AVX2 static float dot_q4_k(int64_t nb, const blk_q4_k *x, const blk_q8_k *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        aprq_k4_scales(x[i].scales, sc, mn);
        __m256i acc = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * j));
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            acc = _mm256_add_epi32(acc, scaled_dot_u(lo, y[i].qs + 64 * j, sc[2 * j]));
            acc = _mm256_add_epi32(acc, scaled_dot_u(hi, y[i].qs + 64 * j + 32, sc[2 * j + 1]));
        }
        const int sumi = hsum_i32(acc);
        int summ = 0;
        for (int j = 0; j < 8; j++)
            summ += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi - (apr_f16_to_f32(x[i].dmin) * y[i].d) * summ;
    }
    return sumf;
}

AVX2 static float dot_q5_k(int64_t nb, const blk_q5_k *x, const blk_q8_k *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(1);
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        aprq_k4_scales(x[i].scales, sc, mn);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)x[i].qh);
        __m256i acc = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * j));
            /* bit 2j / 2j+1 of each qh byte, moved to bit 4 */
            __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one);
            __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_slli_epi16(h1, 4));
            acc = _mm256_add_epi32(acc, scaled_dot_u(lo, y[i].qs + 64 * j, sc[2 * j]));
            acc = _mm256_add_epi32(acc, scaled_dot_u(hi, y[i].qs + 64 * j + 32, sc[2 * j + 1]));
        }
        const int sumi = hsum_i32(acc);
        int summ = 0;
        for (int j = 0; j < 8; j++)
            summ += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi - (apr_f16_to_f32(x[i].dmin) * y[i].d) * summ;
    }
    return sumf;
}

/* Q6_K: levels q in 0..63 (stored +32). sum (q-32)*a = sum q*a - 32*bsum;
 * the 16-bit pair sums of q*a stay below 2*63*128. */
AVX2 static inline __m256i q6_part(__m256i q, const int8_t *a, int8_t s0, int8_t s1)
{
    __m256i p16 = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)a));
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
    return _mm256_madd_epi16(p16, sc);
}

AVX2 static float dot_q6_k(int64_t nb, const blk_q6_k *x, const blk_q8_k *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        const int8_t *sc = x[i].scales;
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qhp = x[i].qh + 32 * h;
            const int8_t *a = y[i].qs + 128 * h;
            const int8_t *s = sc + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            acc = _mm256_add_epi32(acc, q6_part(q1, a, s[0], s[1]));
            acc = _mm256_add_epi32(acc, q6_part(q2, a + 32, s[2], s[3]));
            acc = _mm256_add_epi32(acc, q6_part(q3, a + 64, s[4], s[5]));
            acc = _mm256_add_epi32(acc, q6_part(q4, a + 96, s[6], s[7]));
        }
        int corr = 0;
        for (int j = 0; j < 16; j++)
            corr += sc[j] * y[i].bsums[j];
        const int sumi = hsum_i32(acc) - 32 * corr;
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi;
    }
    return sumf;
}

/* ------------------------------------------------------------ 4 tokens
 *
 * One weight row against four activation rows (prefill): the row is loaded
 * and decoded once, each token keeps its own accumulator and sees exactly the
 * operations, in the same order, as the one-token kernel above, so every
 * result equals apr_vec_dot's bit for bit. The win is the shared decode and
 * four independent dependency chains instead of one. */

#define Y4(T, y, ys, k) ((const T *)((const uint8_t *)(y) + (size_t)(k) * (ys)))

/* Eight weights of a float-type row as f32 (F16 by F16C, BF16 by a shift),
 * and one weight for the tail. */
AVX2 static inline __m256 load8_w(apr_dtype t, const void *w, int64_t i)
{
    if (t == APR_DT_F32)
        return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (t == APR_DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

static inline float load1_w(apr_dtype t, const void *w, int64_t i)
{
    if (t == APR_DT_F32)
        return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return t == APR_DT_BF16 ? apr_bf16_to_f32(h) : apr_f16_to_f32(h);
}

/* F32/F16/BF16 rows; always inlined into the three callers below so that t
 * is a constant there and the loop carries no type test. */
AVX2 static inline __attribute__((always_inline)) void dot4_float(apr_dtype t, int64_t n, const void *w,
                                                                   const void *y, size_t ys, float out[4])
{
    const float *y0 = Y4(float, y, ys, 0), *y1 = Y4(float, y, ys, 1), *y2 = Y4(float, y, ys, 2),
                *y3 = Y4(float, y, ys, 3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = load8_w(t, w, i);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y0 + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y1 + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y2 + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y3 + i), a3);
    }
    float r0 = reduce8(a0), r1 = reduce8(a1), r2 = reduce8(a2), r3 = reduce8(a3);
    for (; i < n; i++) {
        const float wf = load1_w(t, w, i);
        r0 = fmaf(wf, y0[i], r0);
        r1 = fmaf(wf, y1[i], r1);
        r2 = fmaf(wf, y2[i], r2);
        r3 = fmaf(wf, y3[i], r3);
    }
    out[0] = r0, out[1] = r1, out[2] = r2, out[3] = r3;
}

AVX2 static void dot4_f32(int64_t n, const void *w, const void *y, size_t ys, float out[4])
{
    dot4_float(APR_DT_F32, n, w, y, ys, out);
}

AVX2 static void dot4_f16(int64_t n, const void *w, const void *y, size_t ys, float out[4])
{
    dot4_float(APR_DT_F16, n, w, y, ys, out);
}

AVX2 static void dot4_bf16(int64_t n, const void *w, const void *y, size_t ys, float out[4])
{
    dot4_float(APR_DT_BF16, n, w, y, ys, out);
}

AVX2 static void dot4_q8_0(int64_t nb, const blk_q8_0 *x, const void *y, size_t ys, float out[4])
{
    float sumf[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < nb; i++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)x[i].qs);
        const float dx = apr_f16_to_f32(x[i].d);
        for (int k = 0; k < 4; k++) {
            const blk_q8_0 *yk = Y4(blk_q8_0, y, ys, k) + i;
            const int sumi = hsum_i32(dot_i8(a, _mm256_loadu_si256((const __m256i *)yk->qs)));
            sumf[k] += sumi * (dx * apr_f16_to_f32(yk->d));
        }
    }
    memcpy(out, sumf, sizeof sumf);
}

AVX2 static void dot4_q4_k(int64_t nb, const blk_q4_k *x, const void *y, size_t ys, float out[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sumf[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        aprq_k4_scales(x[i].scales, sc, mn);
        const blk_q8_k *yk[4];
        __m256i acc[4];
        for (int k = 0; k < 4; k++) {
            yk[k] = Y4(blk_q8_k, y, ys, k) + i;
            acc[k] = _mm256_setzero_si256();
        }
        for (int j = 0; j < 4; j++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * j));
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            for (int k = 0; k < 4; k++) {
                acc[k] = _mm256_add_epi32(acc[k], scaled_dot_u(lo, yk[k]->qs + 64 * j, sc[2 * j]));
                acc[k] = _mm256_add_epi32(acc[k], scaled_dot_u(hi, yk[k]->qs + 64 * j + 32, sc[2 * j + 1]));
            }
        }
        const float d = apr_f16_to_f32(x[i].d), dmin = apr_f16_to_f32(x[i].dmin);
        for (int k = 0; k < 4; k++) {
            const int sumi = hsum_i32(acc[k]);
            int summ = 0;
            for (int j = 0; j < 8; j++)
                summ += mn[j] * (yk[k]->bsums[2 * j] + yk[k]->bsums[2 * j + 1]);
            sumf[k] += (d * yk[k]->d) * sumi - (dmin * yk[k]->d) * summ;
        }
    }
    memcpy(out, sumf, sizeof sumf);
}

AVX2 static void dot4_q6_k(int64_t nb, const blk_q6_k *x, const void *y, size_t ys, float out[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    float sumf[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < nb; i++) {
        const int8_t *sc = x[i].scales;
        const blk_q8_k *yk[4];
        __m256i acc[4];
        for (int k = 0; k < 4; k++) {
            yk[k] = Y4(blk_q8_k, y, ys, k) + i;
            acc[k] = _mm256_setzero_si256();
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qhp = x[i].qh + 32 * h;
            const int8_t *s = sc + 8 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            const __m256i q1 =
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            const __m256i q2 = _mm256_or_si256(
                _mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            const __m256i q3 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            const __m256i q4 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            for (int k = 0; k < 4; k++) {
                const int8_t *a = yk[k]->qs + 128 * h;
                acc[k] = _mm256_add_epi32(acc[k], q6_part(q1, a, s[0], s[1]));
                acc[k] = _mm256_add_epi32(acc[k], q6_part(q2, a + 32, s[2], s[3]));
                acc[k] = _mm256_add_epi32(acc[k], q6_part(q3, a + 64, s[4], s[5]));
                acc[k] = _mm256_add_epi32(acc[k], q6_part(q4, a + 96, s[6], s[7]));
            }
        }
        const float d = apr_f16_to_f32(x[i].d);
        for (int k = 0; k < 4; k++) {
            int corr = 0;
            for (int j = 0; j < 16; j++)
                corr += sc[j] * yk[k]->bsums[j];
            const int sumi = hsum_i32(acc[k]) - 32 * corr;
            sumf[k] += (d * yk[k]->d) * sumi;
        }
    }
    memcpy(out, sumf, sizeof sumf);
}

bool aprq_vec_dot4_avx2(apr_dtype t, int64_t n, const void *w, const void *y, size_t ys, float out[4])
{
    switch (t) {
    case APR_DT_F32: dot4_f32(n, w, y, ys, out); return true;
    case APR_DT_F16: dot4_f16(n, w, y, ys, out); return true;
    case APR_DT_BF16: dot4_bf16(n, w, y, ys, out); return true;
    case APR_DT_Q8_0: dot4_q8_0(n / 32, w, y, ys, out); return true;
    case APR_DT_Q4_K: dot4_q4_k(n / QK_K, w, y, ys, out); return true;
    case APR_DT_Q6_K: dot4_q6_k(n / QK_K, w, y, ys, out); return true;
    default: return false;
    }
}

bool aprq_vec_dot_avx2(apr_dtype t, int64_t n, const void *w, const void *y, float *out)
{
    switch (t) {
    case APR_DT_F32: *out = dot_f32(n, w, y); return true;
    case APR_DT_F16: *out = dot_f16(n, w, y); return true;
    case APR_DT_BF16: *out = dot_bf16(n, w, y); return true;
    case APR_DT_Q8_0: *out = dot_q8_0(n / 32, w, y); return true;
    case APR_DT_Q4_0: *out = dot_q4_0(n / 32, w, y); return true;
    case APR_DT_Q4_K: *out = dot_q4_k(n / QK_K, w, y); return true;
    case APR_DT_Q5_K: *out = dot_q5_k(n / QK_K, w, y); return true;
    case APR_DT_Q6_K: *out = dot_q6_k(n / QK_K, w, y); return true;
    default: return false;
    }
}

#else
bool aprq_vec_dot_avx2(apr_dtype t, int64_t n, const void *w, const void *y, float *out)
{
    (void)t; (void)n; (void)w; (void)y; (void)out;
    return false;
}

bool aprq_vec_dot4_avx2(apr_dtype t, int64_t n, const void *w, const void *y, size_t ys, float out[4])
{
    (void)t; (void)n; (void)w; (void)y; (void)ys; (void)out;
    return false;
}
#endif
