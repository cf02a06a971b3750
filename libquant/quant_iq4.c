/* quant_iq4.c - IQ4_NL and IQ4_XS: a port of ggml-quants.c's
 * quantize_row_iq4_nl_impl as ggml_quantize_chunk calls it (quantize_iq4_nl /
 * quantize_iq4_xs, ntry 7, with or without importance weights), operation
 * for operation so that the bytes are identical (same rules as quant_ref.c:
 * left-to-right f32 sums, ggml's grouping of products, no FMA).
 *
 * Both store 4-bit indices into ggml's non-linear table kvalues_iq4nl; IQ4_NL
 * has one f16 scale per 32 values, IQ4_XS a super-block of 256 with an f16
 * scale and a 6-bit scale per 32 values. */
#include "quant_internal.h"

#include <math.h>

#define GROUP_MAX_EPS 1e-15f

const int8_t aprq_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

/* ggml's best_index_int8: the nearest table entry (ties to the upper one) */
static inline int best_index_int8(int n, const int8_t *val, float x)
{
    if (x <= val[0])
        return 0;
    if (x >= val[n - 1])
        return n - 1;
    int ml = 0, mu = n - 1;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < val[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

/* quantize_row_iq4_nl_impl(super_block_size, 32, ...) with ntry 7. dh: the
 * f16 scale; scales_h/scales_l: IQ4_XS's 6-bit block scales (unused when
 * the super-block is one block). */
static void iq4_impl(int sbs, const float *x, uint16_t *dh, uint8_t *q4, uint16_t *scales_h, uint8_t *scales_l,
                     const float *quant_weights)
{
    const int bs = 32, ntry = 7;
    const int8_t *values = aprq_kvalues_iq4nl;
    float scales[QK_K / 32], weight[32];
    uint8_t L[QK_K];
    float sigma2 = 0;
    for (int j = 0; j < sbs; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / sbs;
    memset(q4, 0, (size_t)sbs / 2);
    *dh = apr_f32_to_f16(0.f);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < sbs / bs; ++ib) {
        const float *xb = x + ib * bs;
        uint8_t *Lb = L + ib * bs;
        if (quant_weights) {
            const float *qw = quant_weights + ib * bs;
            for (int j = 0; j < bs; ++j)
                weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < bs; ++j)
                weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < bs; ++j) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax < GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        float d = -max / values[0]; /* ntry > 0 */
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < bs; ++j) {
            float al = id * xb[j];
            int l = best_index_int8(16, values, al);
            Lb[j] = (uint8_t)l;
            float q = values[l];
            float w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; ++itry) {
            id = (itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < bs; ++j) {
                float al = id * xb[j];
                int l = best_index_int8(16, values, al);
                float q = values[l];
                float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }
    if (sbs / bs > 1) {
        const int nb = sbs / bs;
        memset(scales_h, 0, (size_t)((nb + 7) / 8) * sizeof(uint16_t));
        float d = -max_scale / 32;
        *dh = apr_f32_to_f16(d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ++ib) {
            int l = q_nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            uint8_t *Lb = L + ib * bs;
            const float *xb = x + ib * bs;
            for (int j = 0; j < bs; ++j)
                Lb[j] = (uint8_t)best_index_int8(16, values, idl * xb[j]);
            l += 32;
            uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            if (ib % 2 == 0)
                scales_l[ib / 2] = l_l;
            else
                scales_l[ib / 2] |= (uint8_t)(l_l << 4);
            uint16_t sh;
            memcpy(&sh, scales_h + ib / 8, 2);
            sh |= (uint16_t)(l_h << 2 * (ib % 8));
            memcpy(scales_h + ib / 8, &sh, 2);
        }
    } else {
        *dh = apr_f32_to_f16(scales[0]);
        float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < sbs; ++j)
            L[j] = (uint8_t)best_index_int8(16, values, id * x[j]);
    }
    for (int i = 0; i < sbs / 32; ++i)
        for (int j = 0; j < 16; ++j)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void aprq_imat_iq4_nl(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_iq4_nl *y = vy;
    for (int64_t ib = 0; ib < n / 32; ++ib)
        iq4_impl(32, x + 32 * ib, &y[ib].d, y[ib].qs, NULL, NULL, qw ? qw + 32 * ib : NULL);
}

void aprq_imat_iq4_xs(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_iq4_xs *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ++ib)
        iq4_impl(QK_K, x + QK_K * ib, &y[ib].d, y[ib].qs, &y[ib].scales_h, y[ib].scales_l,
                 qw ? qw + QK_K * ib : NULL);
}
