/* quant_ref.c - the reference quantizers: a port of ggml-quants.c's
 * quantize_row_*_ref and quantize_row_*_impl (llama.cpp), operation for
 * operation, so that the bytes are identical.
 *
 * Rules that keep the bytes identical (do not "simplify" them away):
 *  - every sum is accumulated left to right in f32, starting where ggml
 *    starts it (e.g. make_qkx2's sum_x starts at w[0]*x[0]);
 *  - products are grouped as ggml writes them: w*x*l is (w*x)*l;
 *  - no FMA contraction (the project builds with -ffp-contract=off);
 *  - narrowing stores (int -> uint8_t/int8_t) happen exactly where ggml
 *    stores into narrow arrays, because later arithmetic reads them back.
 */
#include "quant_internal.h"

#include <float.h>
#include <math.h>

#define GROUP_MAX_EPS 1e-15f
#define QMIN(a, b) ((a) < (b) ? (a) : (b))
#define QMAX(a, b) ((a) > (b) ? (a) : (b))

static inline uint16_t h16(float f) { return apr_f32_to_f16(f); }
static inline float f16v(uint16_t h) { return apr_f16_to_f32(h); }

/* ------------------------------------------------------------ 32-blocks */

void aprq_ref_q8_0(const float *x, void *vy, int64_t n)
{
    blk_q8_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = QMAX(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        for (int j = 0; j < 32; j++)
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Largest-magnitude value with its sign (first one wins on ties). */
static inline float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

void aprq_ref_q4_0(const float *x, void *vy, int64_t n)
{
    blk_q4_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        const float d = signed_absmax(x, 32) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        for (int j = 0; j < 16; j++) {
            const uint8_t lo = (uint8_t)QMIN(15, (int8_t)(x[j] * id + 8.5f));
            const uint8_t hi = (uint8_t)QMIN(15, (int8_t)(x[j + 16] * id + 8.5f));
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void aprq_ref_q4_1(const float *x, void *vy, int64_t n)
{
    blk_q4_1 *y = vy;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        y[b].m = h16(min);
        for (int j = 0; j < 16; j++) {
            const uint8_t lo = (uint8_t)QMIN(15, (int8_t)((x[j] - min) * id + 0.5f));
            const uint8_t hi = (uint8_t)QMIN(15, (int8_t)((x[j + 16] - min) * id + 0.5f));
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/* Pack 32 5-bit values (low nibbles in qs, 5th bits in the 32-bit qh). */
void aprq_pack5(const uint8_t *l, uint8_t qs[16], uint8_t qh_out[4])
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4));
        qh |= ((l[j] & 0x10u) >> 4) << j;
        qh |= ((l[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    memcpy(qh_out, &qh, 4); /* little-endian host, as ggml */
}

void aprq_ref_q5_0(const float *x, void *vy, int64_t n)
{
    blk_q5_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        const float d = signed_absmax(x, 32) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        uint8_t l[32];
        for (int j = 0; j < 32; j++)
            l[j] = (uint8_t)QMIN(31, (int8_t)(x[j] * id + 16.5f));
        aprq_pack5(l, y[b].qs, y[b].qh);
    }
}

void aprq_ref_q5_1(const float *x, void *vy, int64_t n)
{
    blk_q5_1 *y = vy;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        y[b].m = h16(min);
        uint8_t l[32];
        for (int j = 0; j < 32; j++)
            l[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        aprq_pack5(l, y[b].qs, y[b].qh);
    }
}

/* ------------------------------------------------------------ helpers (ggml's make_*_quants) */

/* Symmetric quantizer to [-nmax, nmax-1] with a search over 18 scales.
 * rmse_type 1 weights by x^2 unless qw is given. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) {
            int l = q_nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + QMAX(-nmax, QMIN(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    bool return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
#define QX_W(i) (qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i])))
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_nearest_int(iscale * x[i]);
        l = QMAX(-nmax, QMIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = QX_W(i);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    if (return_early)
        return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_nearest_int(iscale * x[i]);
            l = QMAX(-nmax, QMIN(nmax - 1, l));
            float w = QX_W(i);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = q_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + QMAX(-nmax, QMIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
#undef QX_W
    return scale;
}

/* Q3_K's symmetric quantizer with coordinate-descent refinement. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L, bool do_rmse)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    if (do_rmse) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_nearest_int(iscale * x[i]);
            l = QMAX(-nmax, QMIN(nmax - 1, l));
            L[i] = (int8_t)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int itry = 0; itry < 5; ++itry) {
            int n_changed = 0;
            for (int i = 0; i < n; ++i) {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * L[i];
                if (slx > 0) {
                    float sl2 = suml2 - w * L[i] * L[i];
                    int new_l = q_nearest_int(x[i] * sl2 / slx);
                    new_l = QMAX(-nmax, QMIN(nmax - 1, new_l));
                    if (new_l != L[i]) {
                        slx += w * x[i] * new_l;
                        sl2 += w * new_l * new_l;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            L[i] = (int8_t)new_l;
                            sumlx = slx;
                            suml2 = sl2;
                            ++n_changed;
                        }
                    }
                }
            }
            if (!n_changed)
                break;
        }
        for (int i = 0; i < n; ++i)
            L[i] = (int8_t)(L[i] + nmax);
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; ++i) {
        int l = q_nearest_int(iscale * x[i]);
        l = QMAX(-nmax, QMIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
    }
    return 1 / iscale;
}

/* Asymmetric (scale, min) quantizer to [0, nmax], weighted least squares
 * over nstep+1 candidate scales. Used by the imatrix-less Q2_K/Q4_K/Q5_K.
 * This is the hot loop of k-quantization; quant_fast.c has a SIMD version
 * that must stay operation-for-operation identical to this one. */
float aprq_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                            float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                            bool use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_nearest_int(iscale * (x[i] - min));
            l = QMAX(0, QMIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* The imatrix variant of make_qkx2 (weights NULL means x^2). */
static float make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad)
{
#define K3_W(i) (weights ? weights[i] : x[i] * x[i])
    float min = x[0], max = x[0];
    float sum_w = K3_W(0);
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = K3_W(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_mad += K3_W(i) * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            /* min moves to the best fit found so far, so v may be out of range */
            const float v = iscale * (x[i] - min);
            const int l = v > 0 ? q_nearest_int(QMIN(v, (float)nmax)) : 0;
            Laux[i] = (uint8_t)l;
            float w = K3_W(i);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                mad += K3_W(i) * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
#undef K3_W
    *the_min = -min;
    return scale;
}

/* Positive-only quantizer for the block scales/mins under an imatrix. */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0;
    for (int i = 0; i < n; ++i)
        max = QMAX(max, x[i]);
    if (max < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i)
        L[i] = (uint8_t)q_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = QMIN(nmax, q_nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = QMIN(nmax, q_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = QMIN(nmax, q_nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ------------------------------------------------------------ 32-blocks with an imatrix */

/* ggml's importance weights of n values: qw[l] * sqrt(sigma2 + x[l]^2) */
static void imatrix_weights(const float *x, const float *qw, float sigma2, int n, float *out)
{
    for (int l = 0; l < n; ++l)
        out[l] = qw[l] * sqrtf(sigma2 + x[l] * x[l]);
}

/* sigma2 of a whole row, as ggml's quantize_row_q4_0_impl & co compute it */
float aprq_row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j)
        sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

void aprq_imat_q4_0(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q4_0 *y = vy;
    if (!qw) {
        aprq_ref_q4_0(x, vy, n);
        return;
    }
    float weight[32];
    int8_t L[32];
    const float sigma2 = aprq_row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *w = qw + 32 * ib;
        imatrix_weights(xb, w, sigma2, 32, weight);
        float d = make_qx_quants(32, 8, xb, L, 1, weight);
        y[ib].d = h16(d);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

void aprq_imat_q4_1(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q4_1 *y = vy;
    if (!qw) {
        aprq_ref_q4_1(x, vy, n);
        return;
    }
    float weight[32];
    uint8_t L[32], Laux[32];
    const float sigma2 = aprq_row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *w = qw + 32 * ib;
        imatrix_weights(xb, w, sigma2, 32, weight);
        float min;
        float d = make_qkx3_quants(32, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = h16(d);
        y[ib].m = h16(-min);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

void aprq_imat_q5_0(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q5_0 *y = vy;
    if (!qw) {
        aprq_ref_q5_0(x, vy, n);
        return;
    }
    float weight[32];
    int8_t L[32];
    const float sigma2 = aprq_row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *w = qw + 32 * ib;
        imatrix_weights(xb, w, sigma2, 32, weight);
        float d = make_qx_quants(32, 16, xb, L, 1, weight);
        y[ib].d = h16(d);
        aprq_pack5((const uint8_t *)L, y[ib].qs, y[ib].qh);
    }
}

void aprq_imat_q5_1(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q5_1 *y = vy;
    if (!qw) {
        aprq_ref_q5_1(x, vy, n);
        return;
    }
    float weight[32];
    uint8_t L[32], Laux[32];
    const float sigma2 = aprq_row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *w = qw + 32 * ib;
        imatrix_weights(xb, w, sigma2, 32, weight);
        float min;
        float d = make_qkx3_quants(32, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = h16(d);
        y[ib].m = h16(-min);
        aprq_pack5(L, y[ib].qs, y[ib].qh);
    }
}

/* ------------------------------------------------------------ Q2_K */

static void pack_q2(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

void aprq_ref_q2_k(const float *x, void *vy, int64_t n)
{
    blk_q2_k *y = vy;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = aprq_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                              -0.5f, 0.1f, 15, true);
        }
        aprq_q2k_ref_finish(x, scales, mins, L, &y[i]);
    }
}

void aprq_q2k_ref_finish(const float *x, const float *scales, const float *mins, uint8_t *L, void *vy)
{
    blk_q2_k *y = vy;
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; ++j)
            y->scales[j] = (uint8_t)q_nearest_int(iscale * scales[j]);
        y->d = h16(max_scale / q4scale);
    } else {
        for (int j = 0; j < 16; ++j)
            y->scales[j] = 0;
        y->d = h16(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < 16; ++j) {
            int l = q_nearest_int(iscale * mins[j]);
            y->scales[j] |= (uint8_t)(l << 4);
        }
        y->dmin = h16(max_min / q4scale);
    } else {
        y->dmin = h16(0.f);
    }
    for (int j = 0; j < 16; ++j) {
        const float d = f16v(y->d) * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float dm = f16v(y->dmin) * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)QMAX(0, QMIN(3, l));
        }
    }
    pack_q2(L, y->qs);
}

void aprq_imat_q2_k(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q2_k *y = vy;
    if (!qw) {
        aprq_ref_q2_k(x, vy, n);
        return;
    }
    uint8_t L[QK_K], Laux[16];
    float mins[16], scales[16], sw[16], weight[16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        memset(sw, 0, sizeof sw);
        const float sigma2 = aprq_row_sigma2(x, QK_K);
        for (int j = 0; j < 16; ++j) {
            const float *w = qw + QK_K * i + 16 * j;
            imatrix_weights(x + 16 * j, w, sigma2, 16, weight);
            for (int l = 0; l < 16; ++l)
                sw[j] += weight[l];
            scales[j] = make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                         0.05f, 36, false);
        }
        aprq_q2k_imat_finish(x, scales, mins, sw, L, &y[i]);
    }
}

void aprq_q2k_imat_finish(const float *x, const float *scales, const float *mins, const float *sw, uint8_t *L,
                          void *vy)
{
    blk_q2_k *y = vy;
    uint8_t Ls[16], Lm[16];
    float dm = make_qp_quants(16, 15, scales, Ls, sw);
    float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y->d = h16(dm);
    y->dmin = h16(mm);
    dm = f16v(y->d);
    mm = f16v(y->dmin);
    for (int j = 0; j < 16; ++j)
        y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    for (int j = 0; j < 16; ++j) {
        const float d = dm * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_nearest_int((x[16 * j + ii] + m) / d);
            L[16 * j + ii] = (uint8_t)QMAX(0, QMIN(3, l));
        }
    }
    pack_q2(L, y->qs);
}

/* ------------------------------------------------------------ Q3_K */

static void q3_store_scales(blk_q3_k *y, const int *ls /* 0..63 */)
{
    memset(y->scales, 0, 12);
    for (int j = 0; j < 16; ++j) {
        int l = ls[j];
        if (j < 8)
            y->scales[j] = (uint8_t)(l & 0xF);
        else
            y->scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
        l >>= 4;
        y->scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
    }
}

/* L = clamp(nearest(x / d), -4, 3) + 4 per sub-block with d = y->d times its
 * 6-bit scale; a sub-block whose d is 0 keeps the L it came with. */
static void q3_requant(const blk_q3_k *y, const float *x, int8_t *L)
{
    for (int j = 0; j < 16; ++j) {
        float d = f16v(y->d) * q3k_sub_scale(y->scales, j);
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(QMAX(-4, QMIN(3, l)) + 4);
        }
    }
}

/* L (0..7) into the high-bit mask and the 2-bit quants; L is clobbered. */
void aprq_q3k_pack(int8_t *L, void *vy)
{
    blk_q3_k *y = vy;
    memset(y->hmask, 0, 32);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < QK_K; ++j) {
        if (L[j] > 3) {
            y->hmask[m] |= hm;
            L[j] -= 4;
        }
        if (++m == 32) {
            m = 0;
            hm <<= 1;
        }
    }
    pack_q2((const uint8_t *)L, y->qs);
}

static void q3_finish(blk_q3_k *y, const float *x, int8_t *L)
{
    q3_requant(y, x, L);
    aprq_q3k_pack(L, y);
}

void aprq_ref_q3_k(const float *x, void *vy, int64_t n)
{
    blk_q3_k *y = vy;
    int8_t L[QK_K];
    float scales[16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        for (int j = 0; j < 16; ++j)
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
        aprq_q3k_ref_finish(x, scales, L, &y[i]);
    }
}

void aprq_q3k_ref_scales(const float *scales, void *vy)
{
    blk_q3_k *y = vy;
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale) {
        float iscale = -32.f / max_scale;
        int ls[16];
        for (int j = 0; j < 16; ++j) {
            int8_t l = (int8_t)q_nearest_int(iscale * scales[j]);
            ls[j] = QMAX(-32, QMIN(31, l)) + 32;
        }
        q3_store_scales(y, ls);
        y->d = h16(1 / iscale);
    } else {
        memset(y->scales, 0, 12);
        y->d = h16(0.f);
    }
}

void aprq_q3k_ref_finish(const float *x, const float *scales, int8_t *L, void *vy)
{
    aprq_q3k_ref_scales(scales, vy);
    q3_finish(vy, x, L);
}

void aprq_imat_q3_k(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q3_k *y = vy;
    if (!qw) {
        aprq_ref_q3_k(x, vy, n);
        return;
    }
    int8_t L[QK_K];
    float scales[16], weight[16], sw[16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float sumx2 = 0;
        for (int j = 0; j < QK_K; ++j)
            sumx2 += x[j] * x[j];
        float sigma2 = 2 * sumx2 / QK_K;
        for (int j = 0; j < 16; ++j) {
            const float *w = qw + QK_K * i + 16 * j;
            imatrix_weights(x + 16 * j, w, sigma2, 16, weight);
            float sumw = 0;
            for (int l = 0; l < 16; ++l)
                sumw += weight[l];
            sw[j] = sumw;
            scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
        }
        aprq_q3k_imat_finish(x, scales, sw, L, &y[i]);
    }
}

void aprq_q3k_imat_scales(const float *scales, const float *sw, void *vy)
{
    blk_q3_k *y = vy;
    int8_t Ls[16];
    float d_block = make_qx_quants(16, 32, scales, Ls, 1, sw);
    int ls[16];
    for (int j = 0; j < 16; ++j)
        ls[j] = Ls[j];
    q3_store_scales(y, ls);
    y->d = h16(d_block);
}

void aprq_q3k_imat_finish(const float *x, const float *scales, const float *sw, int8_t *L, void *vy)
{
    aprq_q3k_imat_scales(scales, sw, vy);
    q3_finish(vy, x, L);
}

/* ------------------------------------------------------------ Q4_K / Q5_K */

/* Pack 8 6-bit scales and mins into the 12-byte layout. */
static void pack_scales_k4(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Final pass shared by Q4_K/Q5_K: requantize every weight against the
 * f16-rounded d and dmin and the 6-bit scales. */
static void requant_k4(const float *x, const uint8_t *scales, uint16_t hd, uint16_t hdmin, int nmax,
                       uint8_t *L)
{
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        q_scale_min_k4(j, scales, &sc, &m);
        const float d = f16v(hd) * sc;
        if (!d)
            continue;
        const float dm = f16v(hdmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = q_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QMAX(0, QMIN(nmax, l));
        }
    }
}

void aprq_pack_q4k(const uint8_t *L, uint8_t *q)
{
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

void aprq_pack_q5k(const uint8_t *L, uint8_t *qh, uint8_t *ql)
{
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 <<= 2;
        m2 <<= 2;
        ql += 32;
    }
}

/* The imatrix-less scale search of one Q4_K/Q5_K super-block, and the
 * 6-bit scale/min encoding; writes d, dmin, scales[12]; leaves L ready. */
static void k4_scales_ref(const float *x, int nmax, float rmin, int nstep, uint16_t *hd, uint16_t *hdmin,
                          uint8_t *sc12, uint8_t *L)
{
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = aprq_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                          0.1f, nstep, false);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    aprq_encode_k4_scales(scales, mins, max_scale, max_min, hd, hdmin, sc12);
}

void aprq_encode_k4_scales(const float *scales, const float *mins, float max_scale, float max_min,
                           uint16_t *hd, uint16_t *hdmin, uint8_t *sc12)
{
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        uint8_t a = (uint8_t)q_nearest_int(inv_scale * scales[j]);
        uint8_t b = (uint8_t)q_nearest_int(inv_min * mins[j]);
        ls[j] = QMIN(63, a);
        lm[j] = QMIN(63, b);
    }
    pack_scales_k4(sc12, ls, lm);
    *hd = h16(max_scale / 63.f);
    *hdmin = h16(max_min / 63.f);
}

void aprq_ref_q4_k(const float *x, void *vy, int64_t n)
{
    blk_q4_k *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        k4_scales_ref(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 15, L);
        aprq_pack_q4k(L, y[i].qs);
    }
}

void aprq_ref_q5_k(const float *x, void *vy, int64_t n)
{
    blk_q5_k *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        k4_scales_ref(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 31, L);
        aprq_pack_q5k(L, y[i].qh, y[i].qs);
    }
}

/* imatrix path shared by Q4_K (nmax 15) and Q5_K (nmax 31). */
static void k4_imat(const float *x, const float *qw, int nmax, uint16_t *hd, uint16_t *hdmin, uint8_t *sc12,
                    uint8_t *L, bool clamp63)
{
    uint8_t Laux[32];
    float weights[32], sw[8], mins[8], scales[8];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l)
        sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    float av_x = sqrtf(sigma2);
    for (int j = 0; j < 8; ++j) {
        if (qw) {
            imatrix_weights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
        } else {
            for (int l = 0; l < 32; ++l)
                weights[l] = av_x + fabsf(x[32 * j + l]);
        }
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f,
                                     36, false);
    }
    aprq_encode_k4_scales_imat(scales, mins, sw, clamp63, hd, hdmin, sc12);
}

void aprq_encode_k4_scales_imat(const float *scales, const float *mins, const float *sw, bool clamp63,
                                uint16_t *hd, uint16_t *hdmin, uint8_t *sc12)
{
    uint8_t Ls[8], Lm[8];
    float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    /* ggml clamps to 63 in the Q5_K path only; the two differ only when
     * make_qp_quants wrapped a negative level into uint8, kept for exactness */
    for (int j = 0; clamp63 && j < 8; ++j) {
        Ls[j] = QMIN(63, Ls[j]);
        Lm[j] = QMIN(63, Lm[j]);
    }
    pack_scales_k4(sc12, Ls, Lm);
    *hd = h16(d_block);
    *hdmin = h16(m_block);
}

void aprq_imat_q4_k(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q4_k *y = vy;
    if (!qw) {
        aprq_ref_q4_k(x, vy, n);
        return;
    }
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        k4_imat(x, qw + QK_K * i, 15, &y[i].d, &y[i].dmin, y[i].scales, L, false);
        requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 15, L);
        aprq_pack_q4k(L, y[i].qs);
    }
}

void aprq_imat_q5_k(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q5_k *y = vy;
    if (!qw) {
        aprq_ref_q5_k(x, vy, n);
        return;
    }
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        k4_imat(x, qw + QK_K * i, 31, &y[i].d, &y[i].dmin, y[i].scales, L, true);
        requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 31, L);
        aprq_pack_q5k(L, y[i].qh, y[i].qs);
    }
}

/* ------------------------------------------------------------ Q6_K */

void aprq_pack_q6k(const int8_t *L, uint8_t *ql, uint8_t *qh)
{
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

/* Everything of a Q6_K block after the 16 sub-block scales are known
 * (an all-zero block when the largest scale is ~0). L holds the levels of
 * make_qx_quants and is updated in place. */
void aprq_q6k_finish(const float *x, const float *scales, float max_scale, float max_abs_scale, void *vy,
                     int8_t *L)
{
    blk_q6_k *y = vy;
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        y->d = h16(0.f);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = h16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib)
        y->scales[ib] = (int8_t)QMIN(127, q_nearest_int(iscale * scales[ib]));
    for (int j = 0; j < 16; ++j) {
        float d = f16v(y->d) * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(QMAX(-32, QMIN(31, l)) + 32);
        }
    }
    aprq_pack_q6k(L, y->ql, y->qh);
}

static void q6k_block(const float *x, const float *qw, blk_q6_k *y)
{
    int8_t L[QK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    aprq_q6k_finish(x, scales, max_scale, max_abs_scale, y, L);
}

void aprq_ref_q6_k(const float *x, void *vy, int64_t n)
{
    blk_q6_k *y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K)
        q6k_block(x, NULL, &y[i]);
}

void aprq_imat_q6_k(const float *x, void *vy, int64_t n, const float *qw)
{
    blk_q6_k *y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K)
        q6k_block(x, qw ? qw + QK_K * i : NULL, &y[i]);
}

/* ------------------------------------------------------------ Q8_K (activations) */

void aprq_ref_q8_k(const float *x, void *vy, int64_t n)
{
    blk_q8_k *y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) {
            int v = q_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)QMIN(127, v);
        }
        for (int j = 0; j < 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii)
                sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ------------------------------------------------------------ chunk dispatch */

typedef void (*ref_fn)(const float *, void *, int64_t);
typedef void (*imat_fn)(const float *, void *, int64_t, const float *);

bool aprq_chunk_rows_ref(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                         const float *imatrix)
{
    ref_fn rf = NULL;
    imat_fn imf = NULL;
    switch (t) {
    case APR_DT_Q8_0: rf = aprq_ref_q8_0; break; /* ignores the imatrix, as ggml */
    case APR_DT_Q4_0: rf = aprq_ref_q4_0; imf = aprq_imat_q4_0; break;
    case APR_DT_Q4_1: rf = aprq_ref_q4_1; imf = aprq_imat_q4_1; break;
    case APR_DT_Q5_0: rf = aprq_ref_q5_0; imf = aprq_imat_q5_0; break;
    case APR_DT_Q5_1: rf = aprq_ref_q5_1; imf = aprq_imat_q5_1; break;
    case APR_DT_Q2_K: rf = aprq_ref_q2_k; imf = aprq_imat_q2_k; break;
    case APR_DT_Q3_K: rf = aprq_ref_q3_k; imf = aprq_imat_q3_k; break;
    case APR_DT_Q4_K: rf = aprq_ref_q4_k; imf = aprq_imat_q4_k; break;
    case APR_DT_Q5_K: rf = aprq_ref_q5_k; imf = aprq_imat_q5_k; break;
    case APR_DT_Q6_K: rf = aprq_ref_q6_k; imf = aprq_imat_q6_k; break;
    case APR_DT_IQ4_NL: imf = aprq_imat_iq4_nl; break;
    case APR_DT_IQ4_XS: imf = aprq_imat_iq4_xs; break;
    default: return false;
    }
    const uint64_t rb = apr_dtype_row_bytes(t, (uint64_t)ncols);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = src + r * ncols;
        uint8_t *y = dst + (uint64_t)r * rb;
        if (!rf) /* one kernel with or without weights */
            imf(x, y, ncols, imatrix);
        else if (imatrix && imf)
            imf(x, y, ncols, imatrix);
        else
            rf(x, y, ncols);
    }
    return true;
}
