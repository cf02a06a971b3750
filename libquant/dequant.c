/* dequant.c - block types back to f32, in ggml's order of operations (so a
 * dequantized row equals ggml's dequantize_row_* bit for bit), and every
 * readable plain dtype to f32. */
#include "quant_internal.h"

static inline float f16v(uint16_t h) { return apr_f16_to_f32(h); }

static void dq_q8_0(const blk_q8_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d);
        for (int j = 0; j < 32; ++j)
            y[j] = x[i].qs[j] * d;
    }
}

static void dq_q4_0(const blk_q4_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dq_q4_1(const blk_q4_1 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d), m = f16v(x[i].m);
        for (int j = 0; j < 16; ++j) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

static inline uint32_t rd_qh(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, 4);
    return v;
}

static void dq_q5_0(const blk_q5_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d);
        const uint32_t qh = rd_qh(x[i].qh);
        for (int j = 0; j < 16; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (((x[i].qs[j] & 0x0F) | h0) - 16) * d;
            y[j + 16] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dq_q5_1(const blk_q5_1 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d), m = f16v(x[i].m);
        const uint32_t qh = rd_qh(x[i].qh);
        for (int j = 0; j < 16; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((x[i].qs[j] & 0x0F) | h0) * d + m;
            y[j + 16] = ((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void dq_q2_k(const blk_q2_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = f16v(x[i].d), min = f16v(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; ++l)
                        *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void dq_q3_k(const blk_q3_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = f16v(x[i].d);
        const uint8_t *q = x[i].qs;
        uint8_t m = 1;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * q3k_sub_scale(x[i].scales, is++);
                    for (int l = 0; l < 16; ++l) {
                        const int k = l + 16 * half;
                        *y++ = dl * (((q[k] >> shift) & 3) - ((x[i].hmask[k] & m) ? 0 : 4));
                    }
                }
            }
        }
    }
}

static void dq_q4_k(const blk_q4_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = f16v(x[i].d), min = f16v(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            q_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            q_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dq_q5_k(const blk_q5_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = f16v(x[i].d), min = f16v(x[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            q_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            q_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dq_q6_k(const blk_q6_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = f16v(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

static void dq_q8_k(const blk_q8_k *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < QK_K; ++j)
            *y++ = x[i].d * x[i].qs[j];
}

int apr_dequantize_row(apr_dtype t, const void *src, float *dst, int64_t n)
{
    const apr_dtype_info *di = apr_dtype_get(t);
    if (!di || n < 0 || n % di->block_elems)
        return -1;
    const int64_t nb = n / di->block_elems;
    switch (t) {
    case APR_DT_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case APR_DT_F16: {
        if (aprq_f16_row_fast(src, dst, n))
            return 0;
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = apr_f16_to_f32(h);
        }
        return 0;
    }
    case APR_DT_BF16: {
        if (aprq_bf16_row_fast(src, dst, n))
            return 0;
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = apr_bf16_to_f32(h);
        }
        return 0;
    }
    case APR_DT_Q8_0: dq_q8_0(src, dst, nb); return 0;
    case APR_DT_Q4_0: dq_q4_0(src, dst, nb); return 0;
    case APR_DT_Q4_1: dq_q4_1(src, dst, nb); return 0;
    case APR_DT_Q5_0: dq_q5_0(src, dst, nb); return 0;
    case APR_DT_Q5_1: dq_q5_1(src, dst, nb); return 0;
    case APR_DT_Q2_K: dq_q2_k(src, dst, nb); return 0;
    case APR_DT_Q3_K: dq_q3_k(src, dst, nb); return 0;
    case APR_DT_Q4_K: dq_q4_k(src, dst, nb); return 0;
    case APR_DT_Q5_K: dq_q5_k(src, dst, nb); return 0;
    case APR_DT_Q6_K: dq_q6_k(src, dst, nb); return 0;
    case APR_DT_Q8_K: dq_q8_k(src, dst, nb); return 0;
    default: return aprq_dequant_more(t, src, dst, nb);
    }
}

/* Plain integer / f64 types: element i read unaligned, little-endian host. */
#define CONV_ROW(T)                                                                                      \
    do {                                                                                                 \
        const uint8_t *p = src;                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                                \
            T v;                                                                                         \
            memcpy(&v, p + (size_t)i * sizeof(T), sizeof(T));                                            \
            dst[i] = (float)v;                                                                           \
        }                                                                                                \
    } while (0)

int apr_to_f32_row(apr_dtype t, const void *src, float *dst, int64_t n)
{
    if (n < 0)
        return -1;
    switch (t) {
    case APR_DT_F64: CONV_ROW(double); return 0;
    case APR_DT_I8: CONV_ROW(int8_t); return 0;
    case APR_DT_I16: CONV_ROW(int16_t); return 0;
    case APR_DT_I32: CONV_ROW(int32_t); return 0;
    case APR_DT_I64: CONV_ROW(int64_t); return 0;
    case APR_DT_U8: CONV_ROW(uint8_t); return 0;
    case APR_DT_U16: CONV_ROW(uint16_t); return 0;
    case APR_DT_U32: CONV_ROW(uint32_t); return 0;
    case APR_DT_U64: CONV_ROW(uint64_t); return 0;
    case APR_DT_BOOL: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = p[i] ? 1.0f : 0.0f;
        return 0;
    }
    default: return apr_dequantize_row(t, src, dst, n);
    }
}
