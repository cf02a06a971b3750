/* dot.c - weight-row x activation dot products for libforward.
 *
 * Every block kernel accumulates the integer products of a block exactly
 * (int32) and only then combines them with the block's float scales, in a
 * fixed order. Because integer sums are exact in any order, the AVX2
 * kernels (dot_avx2.c) give the same float result as these scalar ones, bit
 * for bit; the tests check that.
 *
 * The float types (F32/F16/BF16 x F32) use eight interleaved partial sums
 * combined in a fixed tree, which is what an 8-lane SIMD add does; each step
 * is one fused multiply-add (fmaf: one rounding, as the SIMD FMA
 * instructions), so again the SIMD path reproduces the scalar one exactly.
 */
#include <math.h>

#include "quant_internal.h"
#include "dot_internal.h"

apr_dtype apr_vec_dot_type(apr_dtype t)
{
    switch (t) {
    case APR_DT_Q2_K:
    case APR_DT_Q3_K:
    case APR_DT_Q4_K:
    case APR_DT_Q5_K:
    case APR_DT_Q6_K: return APR_DT_Q8_K;
    case APR_DT_Q4_0:
    case APR_DT_Q4_1:
    case APR_DT_Q5_0:
    case APR_DT_Q5_1:
    case APR_DT_Q8_0: return APR_DT_Q8_0;
    case APR_DT_F32:
    case APR_DT_F16:
    case APR_DT_BF16: return APR_DT_F32;
    default: return (apr_dtype)-1;
    }
}

int apr_quantize_activation(apr_dtype vt, const float *y, void *dst, int64_t n)
{
    if (n < 0)
        return -1;
    switch (vt) {
    case APR_DT_F32: memcpy(dst, y, (size_t)n * sizeof(float)); return 0;
    case APR_DT_Q8_0:
        if (n % 32)
            return -1;
        aprq_ref_q8_0(y, dst, n);
        return 0;
    case APR_DT_Q8_K:
        if (n % QK_K)
            return -1;
        aprq_ref_q8_k(y, dst, n);
        return 0;
    default: return -1;
    }
}

/* ------------------------------------------------------------ float types */

/* Fixed reduction of 8 lanes: (0+4, 1+5, 2+6, 3+7), then (a+c, b+d), then sum. */
static inline float reduce8(const float s[8])
{
    float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

static float dot_f32_s(int64_t n, const float *w, const float *y)
{
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] = fmaf(w[i + k], y[i + k], s[k]);
    float r = reduce8(s);
    for (; i < n; i++)
        r = fmaf(w[i], y[i], r);
    return r;
}

static float dot_16_s(int64_t n, const uint16_t *w, const float *y, bool bf16)
{
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] = fmaf(bf16 ? apr_bf16_to_f32(w[i + k]) : apr_f16_to_f32(w[i + k]), y[i + k], s[k]);
    float r = reduce8(s);
    for (; i < n; i++)
        r = fmaf(bf16 ? apr_bf16_to_f32(w[i]) : apr_f16_to_f32(w[i]), y[i], r);
    return r;
}

/* ------------------------------------------------------------ 32-blocks x Q8_0 */

static float dot_q8_0_s(int64_t nb, const blk_q8_0 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sumf += sumi * (apr_f16_to_f32(x[i].d) * apr_f16_to_f32(y[i].d));
    }
    return sumf;
}

static float dot_q4_0_s(int64_t nb, const blk_q4_0 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        }
        sumf += sumi * (apr_f16_to_f32(x[i].d) * apr_f16_to_f32(y[i].d));
    }
    return sumf;
}

static float dot_q4_1_s(int64_t nb, const blk_q4_1 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0, sumy = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (x[i].qs[j] & 0xF) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
            sumy += y[i].qs[j] + y[i].qs[j + 16];
        }
        const float dy = apr_f16_to_f32(y[i].d);
        sumf += sumi * (apr_f16_to_f32(x[i].d) * dy) + sumy * (apr_f16_to_f32(x[i].m) * dy);
    }
    return sumf;
}

static inline int q5_val(const uint8_t *qs, uint32_t qh, int j)
{
    const int lo = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
    return lo | (int)(((qh >> j) & 1) << 4);
}

static float dot_q5_0_s(int64_t nb, const blk_q5_0 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += (q5_val(x[i].qs, qh, j) - 16) * y[i].qs[j];
        sumf += sumi * (apr_f16_to_f32(x[i].d) * apr_f16_to_f32(y[i].d));
    }
    return sumf;
}

static float dot_q5_1_s(int64_t nb, const blk_q5_1 *x, const blk_q8_0 *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int sumi = 0, sumy = 0;
        for (int j = 0; j < 32; j++) {
            sumi += q5_val(x[i].qs, qh, j) * y[i].qs[j];
            sumy += y[i].qs[j];
        }
        const float dy = apr_f16_to_f32(y[i].d);
        sumf += sumi * (apr_f16_to_f32(x[i].d) * dy) + sumy * (apr_f16_to_f32(x[i].m) * dy);
    }
    return sumf;
}

/* ------------------------------------------------------------ k-quants x Q8_K */

/* Unpack the 8 6-bit scales and mins of a Q4_K/Q5_K block. */
void aprq_k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 8; j++)
        q_scale_min_k4(j, s, &sc[j], &mn[j]);
}

/* sum over the 8 (mins) of m[j] * (bsums[2j] + bsums[2j+1]) */
static inline int mins_dot(const uint8_t mn[8], const int16_t bsums[16])
{
    int s = 0;
    for (int j = 0; j < 8; j++)
        s += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
    return s;
}

static float dot_q4_k_s(int64_t nb, const blk_q4_k *x, const blk_q8_k *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        aprq_k4_scales(x[i].scales, sc, mn);
        const uint8_t *q = x[i].qs;
        const int8_t *a = y[i].qs;
        int sumi = 0;
        for (int j = 0; j < 4; j++, q += 32, a += 64) {
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (q[l] & 0xF) * a[l];
                s1 += (q[l] >> 4) * a[l + 32];
            }
            sumi += sc[2 * j] * s0 + sc[2 * j + 1] * s1;
        }
        const int summ = mins_dot(mn, y[i].bsums);
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi - (apr_f16_to_f32(x[i].dmin) * y[i].d) * summ;
    }
    return sumf;
}

static float dot_q5_k_s(int64_t nb, const blk_q5_k *x, const blk_q8_k *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        aprq_k4_scales(x[i].scales, sc, mn);
        const uint8_t *q = x[i].qs, *qh = x[i].qh;
        const int8_t *a = y[i].qs;
        int sumi = 0;
        for (int j = 0; j < 4; j++, q += 32, a += 64) {
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += ((q[l] & 0xF) | (((qh[l] >> (2 * j)) & 1) << 4)) * a[l];
                s1 += ((q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4)) * a[l + 32];
            }
            sumi += sc[2 * j] * s0 + sc[2 * j + 1] * s1;
        }
        const int summ = mins_dot(mn, y[i].bsums);
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi - (apr_f16_to_f32(x[i].dmin) * y[i].d) * summ;
    }
    return sumf;
}

static float dot_q6_k_s(int64_t nb, const blk_q6_k *x, const blk_q8_k *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *a = y[i].qs, *sc = x[i].scales;
        int sumi = 0;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, a += 128, sc += 8) {
            int s[8] = {0}; /* 16-element sub-blocks: s[2k + l/16] for quarter k */
            for (int l = 0; l < 32; l++) {
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                const int is = l / 16;
                s[0 + is] += q1 * a[l];
                s[2 + is] += q2 * a[l + 32];
                s[4 + is] += q3 * a[l + 64];
                s[6 + is] += q4 * a[l + 96];
            }
            for (int k = 0; k < 8; k++)
                sumi += sc[k] * s[k];
        }
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi;
    }
    return sumf;
}

static float dot_q2_k_s(int64_t nb, const blk_q2_k *x, const blk_q8_k *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const int8_t *a = y[i].qs;
        int sumi = 0, summ = 0, is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++, a += 16) {
                    int s = 0;
                    for (int l = 0; l < 16; l++)
                        s += ((q[l + 16 * half] >> shift) & 3) * a[l];
                    sumi += (x[i].scales[is] & 0xF) * s;
                    summ += (x[i].scales[is] >> 4) * y[i].bsums[is];
                    is++;
                }
            }
        }
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi - (apr_f16_to_f32(x[i].dmin) * y[i].d) * summ;
    }
    return sumf;
}

static float dot_q3_k_s(int64_t nb, const blk_q3_k *x, const blk_q8_k *y)
{
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const int8_t *a = y[i].qs;
        uint8_t m = 1;
        int sumi = 0, is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++, a += 16) {
                    int s = 0;
                    for (int l = 0; l < 16; l++) {
                        const int k = l + 16 * half;
                        s += (((q[k] >> shift) & 3) - ((x[i].hmask[k] & m) ? 0 : 4)) * a[l];
                    }
                    sumi += q3k_sub_scale(x[i].scales, is++) * s;
                }
            }
        }
        sumf += (apr_f16_to_f32(x[i].d) * y[i].d) * sumi;
    }
    return sumf;
}

float apr_vec_dot_scalar(apr_dtype t, int64_t n, const void *w, const void *y)
{
    switch (t) {
    case APR_DT_F32: return dot_f32_s(n, w, y);
    case APR_DT_F16: return dot_16_s(n, w, y, false);
    case APR_DT_BF16: return dot_16_s(n, w, y, true);
    case APR_DT_Q8_0: return dot_q8_0_s(n / 32, w, y);
    case APR_DT_Q4_0: return dot_q4_0_s(n / 32, w, y);
    case APR_DT_Q4_1: return dot_q4_1_s(n / 32, w, y);
    case APR_DT_Q5_0: return dot_q5_0_s(n / 32, w, y);
    case APR_DT_Q5_1: return dot_q5_1_s(n / 32, w, y);
    case APR_DT_Q2_K: return dot_q2_k_s(n / QK_K, w, y);
    case APR_DT_Q3_K: return dot_q3_k_s(n / QK_K, w, y);
    case APR_DT_Q4_K: return dot_q4_k_s(n / QK_K, w, y);
    case APR_DT_Q5_K: return dot_q5_k_s(n / QK_K, w, y);
    case APR_DT_Q6_K: return dot_q6_k_s(n / QK_K, w, y);
    default: return 0.0f;
    }
}

float apr_vec_dot(apr_dtype t, int64_t n, const void *w, const void *y)
{
#if defined(__x86_64__)
    if (aprq_cpu_avx2()) {
        float r;
        if (aprq_vec_dot_avx2(t, n, w, y, &r))
            return r;
    }
#endif
    return apr_vec_dot_scalar(t, n, w, y);
}

void apr_vec_dot_n(apr_dtype t, int64_t n, const void *w, const void *y, size_t y_stride, int nt, float *out)
{
    const uint8_t *yp = y;
#if defined(__x86_64__)
    if (aprq_cpu_avx2())
        while (nt >= 4 && aprq_vec_dot4_avx2(t, n, w, yp, y_stride, out)) {
            yp += 4 * y_stride;
            out += 4;
            nt -= 4;
        }
#endif
    for (int k = 0; k < nt; k++)
        out[k] = apr_vec_dot(t, n, w, yp + (size_t)k * y_stride);
}
