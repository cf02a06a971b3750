/* dequant_more.c - the block types beyond the k-quants back to f32, ported
 * from ggml-quants.c's dequantize_row_* in ggml's order of operations (the
 * results equal ggml's bit for bit; tests/test_quant_ggml.c compares them
 * with ggml's own to_float):
 *   IQ4_NL, IQ4_XS  (kvalues_iq4nl indices, f16 / 6-bit block scales)
 *   TQ1_0, TQ2_0    (ternary, base-3 and 2-bit packings)
 *   MXFP4, NVFP4    (E2M1 values with an E8M0 / UE4M3 scale)
 *   Q1_0, Q2_0      (1-bit sign and 2-bit levels with an f16 scale)
 * The IQ1_*, IQ2_* and IQ3_* types index ggml's large lattice grids
 * (ggml-common.h's iq2xxs_grid ... iq1s_grid, thousands of entries); apr
 * does not carry those tables, so they are refused by name (the caller
 * reports the type). */
#include "quant_internal.h"

#include <math.h>

static inline float f16v(uint16_t h) { return apr_f16_to_f32(h); }

/* ggml's kvalues_fp4 (kvalues_mxfp4): twice the E2M1 values */
static const int8_t k_fp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static void dq_iq4_nl(const blk_iq4_nl *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = f16v(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * aprq_kvalues_iq4nl[x[i].qs[j] & 0xf];
            y[j + 16] = d * aprq_kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

static void dq_iq4_xs(const blk_iq4_xs *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *qs = x[i].qs;
        const float d = f16v(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib, y += 32, qs += 16) {
            const int ls = ((x[i].scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((x[i].scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * aprq_kvalues_iq4nl[qs[j] & 0xf];
                y[j + 16] = dl * aprq_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* one base-3 digit: q * 3^n keeps the digit in the top of the byte */
static inline float tq1_val(uint8_t b, uint8_t pow3, float d)
{
    const uint8_t q = (uint8_t)(b * pow3);
    const int16_t xi = (int16_t)(((uint16_t)q * 3) >> 8);
    return (float)(xi - 1) * d;
}

static void dq_tq1_0(const blk_tq1_0 *x, float *y, int64_t nb)
{
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    for (int64_t i = 0; i < nb; ++i) {
        const float d = f16v(x[i].d);
        const size_t nqs = sizeof x->qs, tail = nqs - nqs % 32;
        for (size_t j = 0; j < tail; j += 32)
            for (size_t n = 0; n < 5; ++n)
                for (size_t m = 0; m < 32; ++m)
                    *y++ = tq1_val(x[i].qs[j + m], pow3[n], d);
        for (size_t j = tail; j < nqs; j += 16)
            for (size_t n = 0; n < 5; ++n)
                for (size_t m = 0; m < 16; ++m)
                    *y++ = tq1_val(x[i].qs[j + m], pow3[n], d);
        for (size_t n = 0; n < 4; ++n)
            for (size_t j = 0; j < sizeof x->qh; ++j)
                *y++ = tq1_val(x[i].qh[j], pow3[n], d);
    }
}

static void dq_tq2_0(const blk_tq2_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i) {
        const float d = f16v(x[i].d);
        for (size_t j = 0; j < sizeof x->qs; j += 32)
            for (size_t l = 0; l < 4; ++l)
                for (size_t m = 0; m < 32; ++m) {
                    const int8_t q = (int8_t)((x[i].qs[j + m] >> (l * 2)) & 3);
                    *y++ = (float)(q - 1) * d;
                }
    }
}

/* ggml_e8m0_to_fp32_half: 2^(e - 128) */
static float e8m0_half(uint8_t e)
{
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void dq_mxfp4(const blk_mxfp4 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = e8m0_half(x[i].e);
        for (int j = 0; j < 16; ++j) {
            y[j] = k_fp4[x[i].qs[j] & 0x0F] * d;
            y[j + 16] = k_fp4[x[i].qs[j] >> 4] * d;
        }
    }
}

/* ggml_ue4m3_to_fp32: unsigned E4M3 (bias 7), times 0.5 (k_fp4 is 2 x E2M1) */
static float ue4m3_half(uint8_t x)
{
    if (x == 0 || x == 0x7F)
        return 0.0f;
    const int exp = (x >> 3) & 0xF, man = x & 0x7;
    const float raw = exp == 0 ? ldexpf((float)man, -9) : ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return raw * 0.5f;
}

static void dq_nvfp4(const blk_nvfp4 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        for (int s = 0; s < 4; s++, y += 16) {
            const float d = ue4m3_half(x[i].d[s]);
            for (int j = 0; j < 8; ++j) {
                y[j] = k_fp4[x[i].qs[8 * s + j] & 0x0F] * d;
                y[j + 8] = k_fp4[x[i].qs[8 * s + j] >> 4] * d;
            }
        }
    }
}

static void dq_q1_0(const blk_q1_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 128) {
        const float d = f16v(x[i].d), neg_d = -d;
        for (int j = 0; j < 128; ++j)
            y[j] = ((x[i].qs[j / 8] >> (j % 8)) & 1) ? d : neg_d;
    }
}

static void dq_q2_0(const blk_q2_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += 64) {
        const float d = f16v(x[i].d);
        for (int j = 0; j < 64; ++j) {
            const uint8_t q = (x[i].qs[j / 4] >> ((j % 4) * 2)) & 0x03;
            y[j] = ((int)q - 1) * d; /* 00 = -1, 01 = 0, 10 = +1, 11 = +2 */
        }
    }
}

int aprq_dequant_more(apr_dtype t, const void *src, float *dst, int64_t nb)
{
    switch (t) {
    case APR_DT_IQ4_NL: dq_iq4_nl(src, dst, nb); return 0;
    case APR_DT_IQ4_XS: dq_iq4_xs(src, dst, nb); return 0;
    case APR_DT_TQ1_0: dq_tq1_0(src, dst, nb); return 0;
    case APR_DT_TQ2_0: dq_tq2_0(src, dst, nb); return 0;
    case APR_DT_MXFP4: dq_mxfp4(src, dst, nb); return 0;
    case APR_DT_NVFP4: dq_nvfp4(src, dst, nb); return 0;
    case APR_DT_Q1_0: dq_q1_0(src, dst, nb); return 0;
    case APR_DT_Q2_0: dq_q2_0(src, dst, nb); return 0;
    default: return -1; /* IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: grid tables not carried */
    }
}
