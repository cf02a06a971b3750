/* quant_fast.c - the fast row quantizers. Their scale searches (ggml's
 * make_qkx2_quants / make_qkx3_quants / make_qx_quants, which are almost all
 * of the time) run on 8 blocks at once with AVX2, one block per lane:
 *  - Q4_K, Q5_K, Q6_K, with and without an importance matrix: the 8 (16)
 *    sub-blocks of a super-block;
 *  - with an imatrix, Q2_K and Q3_K: the 16 sub-blocks of a super-block;
 *  - with an imatrix, Q4_0, Q5_0, Q4_1, Q5_1: 8 consecutive 32-blocks.
 * Each lane performs exactly the scalar sequence of operations of
 * quant_ref.c - the same adds in the same order, IEEE division and square
 * root, no FMA (the target attribute does not enable it, and
 * -ffp-contract=off is global) - so the bytes are identical;
 * tests/test_quant_golden.c, tests/test_quant_kernels.c and
 * bench/bench_quantize.c check that.
 *
 * Blocks holding a non-finite value or importance weight go through the
 * scalar code (vector min/max and the scalar comparisons may pick different
 * NaNs); for the 32-blocks that is the whole row, whose sigma2 is a row sum.
 *  - without an imatrix, Q2_K (make_qkx2_quants with use_mad) and Q3_K
 *    (make_q3_quants' coordinate descent): the 16 sub-blocks;
 *  - Q8_0 and the imatrix-less Q4_0, Q4_1, Q5_0, Q5_1: one 32-block in four
 *    vectors (roundf reproduced exactly, the first extreme kept as the
 *    reference's strict comparisons keep it).
 * The small serial steps of a block (the sum of x^2, make_qp_quants over 8
 * scales, the super-block scale encoding) call the reference code itself. */
#include "quant_internal.h"

#include <math.h>

#if defined(__x86_64__)
#include "quant_simd.h"

/* ggml's nearest_int on 8 lanes */
AVX2 static inline __m256i v_nearest(__m256 f)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}

AVX2 static inline __m256i v_clamp(__m256i v, int lo, int hi)
{
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

/* Lane j of the 32 vectors L[i] (levels of block j) into out[32 j + i]. */
AVX2 static void untranspose32(const __m256i *L, uint8_t *out)
{
    int32_t lv[32][8];
    for (int i = 0; i < 32; i++)
        _mm256_storeu_si256((__m256i *)lv[i], L[i]);
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 32; i++)
            out[32 * j + i] = (uint8_t)lv[i][j];
}

/* The level of one weight in the search loop. make_qkx2: clamp(round(v)).
 * make_qkx3 (k3): v > 0 ? round(QMIN(v, nmax)) : 0 - its min moves to the
 * best fit so far, so v may be far out of range. QMIN(v, nmax) is "v < nmax
 * ? v : nmax", which is minps(v, nmax), NaN included. */
AVX2 static inline __m256i qk_level(__m256 v, int nmax, bool k3)
{
    if (!k3)
        return v_clamp(v_nearest(v), 0, nmax);
    __m256i l = v_nearest(_mm256_min_ps(v, _mm256_set1_ps((float)nmax)));
    return _mm256_and_si256(l, _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ)));
}

/* make_qkx2_quants (k3 false) or make_qkx3_quants with weights (k3 true),
 * use_mad = false, nstep >= 1, for G groups (1 or 2) of 8 blocks of n <= 32
 * elements, lane j of group g = block 8 g + j; x[32 g + i], w[32 g + i] hold
 * element i of every block of group g. Outputs the levels L[32 g + i], the
 * scales and the_min (= -min) per lane. Every lane's sums are serial chains
 * (the reference's order), so one group is bound by add latency; two
 * independent groups in the same loops fill the pipeline. */
#define ALWAYS_INLINE __attribute__((always_inline)) inline
AVX2 static inline __m256 err_term(__m256 diff, bool mad) /* use_mad ? |diff| : diff^2 */
{
    return mad ? v_abs(diff) : _mm256_mul_ps(diff, diff);
}

AVX2 static ALWAYS_INLINE void qkx_body(int G, int n, const __m256 *x, const __m256 *w, int nmax, float rmin,
                                        float rdelta, int nstep, bool k3, bool mad, __m256i *L, __m256i *Laux,
                                        __m256 *scale_out, __m256 *the_min_out)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 min[2], max[2], sum_w[2], sum_x[2], flat[2], min0[2], scale[2], best_error[2];
    for (int g = 0; g < G; g++) {
        const __m256 *xg = x + 32 * g, *wg = w + 32 * g;
        min[g] = max[g] = xg[0];
        sum_w[g] = wg[0];
        sum_x[g] = _mm256_mul_ps(sum_w[g], xg[0]);
        for (int i = 1; i < n; ++i) {
            min[g] = v_sel(min[g], xg[i], _mm256_cmp_ps(xg[i], min[g], _CMP_LT_OQ));
            max[g] = v_sel(max[g], xg[i], _mm256_cmp_ps(xg[i], max[g], _CMP_GT_OQ));
            sum_w[g] = _mm256_add_ps(sum_w[g], wg[i]);
            sum_x[g] = _mm256_add_ps(sum_x[g], _mm256_mul_ps(wg[i], xg[i]));
        }
        min[g] = v_sel(min[g], zero, _mm256_cmp_ps(min[g], zero, _CMP_GT_OQ));
        /* scalar: all L = 0, return 0 (qkx2 tests max == min, qkx3 max <= min) */
        flat[g] = k3 ? _mm256_cmp_ps(max[g], min[g], _CMP_LE_OQ) : _mm256_cmp_ps(max[g], min[g], _CMP_EQ_OQ);
        min0[g] = min[g];
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(max[g], min[g]));
        scale[g] = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
        best_error[g] = zero;
        for (int i = 0; i < n; ++i) {
            __m256i l = v_clamp(v_nearest(_mm256_mul_ps(iscale, _mm256_sub_ps(xg[i], min[g]))), 0, nmax);
            L[32 * g + i] = l;
            __m256 diff =
                _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[g], _mm256_cvtepi32_ps(l)), min[g]), xg[i]);
            best_error[g] = _mm256_add_ps(best_error[g], _mm256_mul_ps(wg[i], err_term(diff, mad)));
        }
    }
    for (int is = 0; is <= nstep; ++is) {
        const __m256 num = _mm256_set1_ps(rmin + rdelta * is + nmax);
        __m256 iscale[2], sum_l[2], sum_l2[2], sum_xl[2];
        for (int g = 0; g < G; g++) {
            iscale[g] = _mm256_div_ps(num, _mm256_sub_ps(max[g], min[g]));
            sum_l[g] = sum_l2[g] = sum_xl[g] = zero;
        }
        for (int i = 0; i < n; ++i) {
            for (int g = 0; g < G; g++) {
                const int k = 32 * g + i;
                __m256i l = qk_level(_mm256_mul_ps(iscale[g], _mm256_sub_ps(x[k], min[g])), nmax, k3);
                Laux[k] = l;
                __m256 lf = _mm256_cvtepi32_ps(l);
                __m256 wl = _mm256_mul_ps(w[k], lf);
                sum_l[g] = _mm256_add_ps(sum_l[g], wl);
                sum_l2[g] = _mm256_add_ps(sum_l2[g], _mm256_mul_ps(wl, lf));
                sum_xl[g] = _mm256_add_ps(sum_xl[g], _mm256_mul_ps(wl, x[k]));
            }
        }
        __m256 Dpos[2], this_scale[2], this_min[2], cur_error[2];
        int any = 0;
        for (int g = 0; g < G; g++) {
            __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_l2[g]), _mm256_mul_ps(sum_l[g], sum_l[g]));
            Dpos[g] = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
            any |= _mm256_movemask_ps(Dpos[g]);
            this_scale[g] = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_xl[g]), _mm256_mul_ps(sum_x[g], sum_l[g])), D);
            this_min[g] = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_l2[g], sum_x[g]), _mm256_mul_ps(sum_l[g], sum_xl[g])), D);
            __m256 mpos = _mm256_cmp_ps(this_min[g], zero, _CMP_GT_OQ);
            this_min[g] = v_sel(this_min[g], zero, mpos);
            this_scale[g] = v_sel(this_scale[g], _mm256_div_ps(sum_xl[g], sum_l2[g]), mpos);
            cur_error[g] = zero;
        }
        if (!any)
            continue;
        for (int i = 0; i < n; ++i) {
            for (int g = 0; g < G; g++) {
                const int k = 32 * g + i;
                __m256 diff = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(this_scale[g], _mm256_cvtepi32_ps(Laux[k])), this_min[g]), x[k]);
                cur_error[g] = _mm256_add_ps(cur_error[g], _mm256_mul_ps(w[k], err_term(diff, mad)));
            }
        }
        for (int g = 0; g < G; g++) {
            __m256 upd = _mm256_and_ps(Dpos[g], _mm256_cmp_ps(cur_error[g], best_error[g], _CMP_LT_OQ));
            if (_mm256_movemask_ps(upd) == 0)
                continue;
            __m256i updi = _mm256_castps_si256(upd);
            for (int i = 0; i < n; ++i)
                L[32 * g + i] = _mm256_blendv_epi8(L[32 * g + i], Laux[32 * g + i], updi);
            best_error[g] = v_sel(best_error[g], cur_error[g], upd);
            scale[g] = v_sel(scale[g], this_scale[g], upd);
            min[g] = v_sel(min[g], this_min[g], upd);
        }
    }
    for (int g = 0; g < G; g++) {
        if (_mm256_movemask_ps(flat[g])) {
            __m256i flati = _mm256_castps_si256(flat[g]);
            for (int i = 0; i < n; ++i)
                L[32 * g + i] = _mm256_andnot_si256(flati, L[32 * g + i]);
            scale[g] = v_sel(scale[g], zero, flat[g]);
            min[g] = v_sel(min[g], min0[g], flat[g]);
        }
        scale_out[g] = scale[g];
        the_min_out[g] = _mm256_xor_ps(min[g], _mm256_set1_ps(-0.0f));
    }
}

AVX2 static void qkx_x8(int n, const __m256 *x, const __m256 *w, int nmax, float rmin, float rdelta, int nstep,
                        bool k3, __m256i *L, __m256i *Laux, __m256 *scale_out, __m256 *the_min_out)
{
    qkx_body(1, n, x, w, nmax, rmin, rdelta, nstep, k3, false, L, Laux, scale_out, the_min_out);
}

AVX2 static void qkx_x16(int n, const __m256 *x, const __m256 *w, int nmax, float rmin, float rdelta, int nstep,
                         bool k3, __m256i *L, __m256i *Laux, __m256 *scale_out, __m256 *the_min_out)
{
    qkx_body(2, n, x, w, nmax, rmin, rdelta, nstep, k3, false, L, Laux, scale_out, the_min_out);
}

/* make_qkx2_quants with use_mad (Q2_K without an imatrix), 16 blocks */
AVX2 static void qkx_x16_mad(int n, const __m256 *x, const __m256 *w, int nmax, float rmin, float rdelta, int nstep,
                             __m256i *L, __m256i *Laux, __m256 *scale_out, __m256 *the_min_out)
{
    qkx_body(2, n, x, w, nmax, rmin, rdelta, nstep, false, true, L, Laux, scale_out, the_min_out);
}

/* make_qx_quants(n, nmax, x, L, 1, weights) for G groups (1 or 2) of 8
 * blocks of n <= 32 elements, laid out as in qkx_body; wq NULL means the
 * rmse_type 1 weights x^2. Outputs the scale per lane and the levels
 * (+nmax) in L[32 g + i]. */
AVX2 static ALWAYS_INLINE void qx_body(int G, int n, int nmax, const __m256 *x, const __m256 *wq, __m256i *L,
                                       __m256 *scale_out)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256i off = _mm256_set1_epi32(nmax);
    __m256 max[2], tiny[2], scale[2], best[2];
    __m256 wx[64], w[64]; /* w*x and w: the sums are (w*x)*l and (w*l)*l */
    for (int g = 0; g < G; g++) {
        const __m256 *xg = x + 32 * g;
        __m256 amax = zero;
        max[g] = zero;
        for (int i = 0; i < n; ++i) {
            __m256 ax = v_abs(xg[i]);
            __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = v_sel(amax, ax, gt);
            max[g] = v_sel(max[g], xg[i], gt);
        }
        tiny[g] = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ); /* GROUP_MAX_EPS: all zero */
        for (int i = 0; i < n; ++i) {
            const int k = 32 * g + i;
            w[k] = wq ? wq[k] : _mm256_mul_ps(x[k], x[k]);
            wx[k] = _mm256_mul_ps(w[k], x[k]);
        }
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max[g]);
        __m256 sumlx = zero, suml2 = zero;
        for (int i = 0; i < n; ++i) {
            const int k = 32 * g + i;
            __m256i l = v_clamp(v_nearest(_mm256_mul_ps(iscale, x[k])), -nmax, nmax - 1);
            L[k] = _mm256_add_epi32(l, off);
            __m256 lf = _mm256_cvtepi32_ps(l);
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(wx[k], lf));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[k], lf), lf));
        }
        scale[g] = v_sel(zero, _mm256_div_ps(sumlx, suml2), _mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ));
        best[g] = _mm256_mul_ps(scale[g], sumlx);
    }
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        const __m256 num = _mm256_set1_ps(-(nmax + 0.1f * is));
        __m256 iscale[2], sumlx[2], suml2[2];
        __m256i lv[64];
        for (int g = 0; g < G; g++) {
            iscale[g] = _mm256_div_ps(num, max[g]);
            sumlx[g] = suml2[g] = zero;
        }
        for (int i = 0; i < n; ++i) {
            for (int g = 0; g < G; g++) {
                const int k = 32 * g + i;
                __m256i l = v_clamp(v_nearest(_mm256_mul_ps(iscale[g], x[k])), -nmax, nmax - 1);
                lv[k] = l;
                __m256 lf = _mm256_cvtepi32_ps(l);
                sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(wx[k], lf));
                suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w[k], lf), lf));
            }
        }
        for (int g = 0; g < G; g++) {
            __m256 upd = _mm256_and_ps(
                _mm256_cmp_ps(suml2[g], zero, _CMP_GT_OQ),
                _mm256_cmp_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), _mm256_mul_ps(best[g], suml2[g]), _CMP_GT_OQ));
            if (_mm256_movemask_ps(upd) == 0)
                continue;
            __m256i updi = _mm256_castps_si256(upd);
            for (int i = 0; i < n; ++i)
                L[32 * g + i] = _mm256_blendv_epi8(L[32 * g + i], _mm256_add_epi32(lv[32 * g + i], off), updi);
            __m256 ns = _mm256_div_ps(sumlx[g], suml2[g]);
            scale[g] = v_sel(scale[g], ns, upd);
            best[g] = v_sel(best[g], _mm256_mul_ps(ns, sumlx[g]), upd);
        }
    }
    for (int g = 0; g < G; g++) {
        if (_mm256_movemask_ps(tiny[g])) {
            __m256i ti = _mm256_castps_si256(tiny[g]);
            for (int i = 0; i < n; ++i)
                L[32 * g + i] = _mm256_andnot_si256(ti, L[32 * g + i]);
            scale[g] = v_sel(scale[g], zero, tiny[g]);
        }
        scale_out[g] = scale[g];
    }
}

AVX2 static void qx_x8(int n, int nmax, const __m256 *x, const __m256 *wq, __m256i *L, __m256 *scale_out)
{
    qx_body(1, n, nmax, x, wq, L, scale_out);
}

AVX2 static void qx_x16(int n, int nmax, const __m256 *x, const __m256 *wq, __m256i *L, __m256 *scale_out)
{
    qx_body(2, n, nmax, x, wq, L, scale_out);
}

/* ------------------------------------------------------------ Q4_K / Q5_K */

/* requant_k4: every weight against the f16 d/dmin and its sub-block's 6-bit
 * scale and min, 8 consecutive weights at a time. */
AVX2 static void k4_requant_avx2(const float *x, int nmax, uint16_t hd, uint16_t hdmin, const uint8_t *sc12,
                                 uint8_t *Lout)
{
    const float fd = apr_f16_to_f32(hd), fdm = apr_f16_to_f32(hdmin);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        q_scale_min_k4(j, sc12, &sc, &m);
        const float d = fd * sc;
        if (!d)
            continue;
        const __m256 vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(fdm * m);
        for (int ii = 0; ii < 32; ii += 8) {
            __m256 v = _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(x + 32 * j + ii), vdm), vd);
            int32_t l[8];
            _mm256_storeu_si256((__m256i *)l, v_clamp(v_nearest(v), 0, nmax));
            for (int k = 0; k < 8; k++)
                Lout[32 * j + ii + k] = (uint8_t)l[k];
        }
    }
}

/* The outputs of one Q4_K / Q5_K block. */
typedef struct k4_out {
    uint16_t *hd, *hdmin;
    uint8_t *sc12, *qh, *qs;
} k4_out;

static k4_out k4_ptrs(void *vy, int64_t i, bool q5)
{
    if (q5) {
        blk_q5_k *y = (blk_q5_k *)vy + i;
        return (k4_out){&y->d, &y->dmin, y->scales, y->qh, y->qs};
    }
    blk_q4_k *y = (blk_q4_k *)vy + i;
    return (k4_out){&y->d, &y->dmin, y->scales, NULL, y->qs};
}

/* G (1 or 2) consecutive Q4_K / Q5_K super-blocks, all finite. Without an
 * imatrix (qw NULL) quantize_row_q4_K_ref: make_qkx2_quants with the weights
 * av_x + |x| of each sub-block; with one quantize_row_q4_K_impl /
 * quantize_row_q5_K_impl: make_qkx3_quants with qw * sqrt(sigma2 + x^2). */
AVX2 static void k4_blocks_avx2(int G, const float *x, const float *qw, bool q5, const k4_out *o)
{
    __m256 xt[64], wt[64], sumw[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, vscale[2], vmin[2];
    __m256i L[64], Laux[64];
    const __m256i idx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    const int nmax = q5 ? 31 : 15;
    for (int g = 0; g < G; g++) {
        const float *xg = x + QK_K * g;
        __m256 *xv = xt + 32 * g, *wv = wt + 32 * g;
        if (qw) {
            const float *qg = qw + QK_K * g;
            float sum_x2 = 0; /* one serial sum over the super-block in the reference */
            for (int l = 0; l < QK_K; ++l)
                sum_x2 += xg[l] * xg[l];
            const __m256 s2 = _mm256_set1_ps(2 * sum_x2 / QK_K);
            for (int i = 0; i < 32; i++) {
                xv[i] = _mm256_i32gather_ps(xg + i, idx, 4);
                const __m256 q = _mm256_i32gather_ps(qg + i, idx, 4);
                wv[i] = _mm256_mul_ps(q, _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(xv[i], xv[i]))));
                sumw[g] = _mm256_add_ps(sumw[g], wv[i]); /* from 0, as the reference (0 + -0 is +0) */
            }
        } else {
            __m256 sum_x2 = _mm256_setzero_ps();
            for (int i = 0; i < 32; i++) {
                xv[i] = _mm256_i32gather_ps(xg + i, idx, 4);
                sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(xv[i], xv[i]));
            }
            const __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0f)));
            for (int i = 0; i < 32; i++)
                wv[i] = _mm256_add_ps(av_x, v_abs(xv[i]));
        }
    }
    const float rmin = qw ? -0.9f : q5 ? -0.5f : -1.f, rdelta = qw ? 0.05f : 0.1f;
    const int nstep = qw ? 36 : q5 ? 15 : 20;
    if (G == 2)
        qkx_x16(32, xt, wt, nmax, rmin, rdelta, nstep, qw != NULL, L, Laux, vscale, vmin);
    else
        qkx_x8(32, xt, wt, nmax, rmin, rdelta, nstep, qw != NULL, L, Laux, vscale, vmin);
    for (int g = 0; g < G; g++) {
        float scales[8], mins[8];
        uint8_t Lout[QK_K];
        _mm256_storeu_ps(scales, vscale[g]);
        _mm256_storeu_ps(mins, vmin[g]);
        untranspose32(L + 32 * g, Lout);
        if (qw) {
            float sw[8];
            _mm256_storeu_ps(sw, sumw[g]);
            aprq_encode_k4_scales_imat(scales, mins, sw, q5, o[g].hd, o[g].hdmin, o[g].sc12);
        } else {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 8; ++j) {
                if (scales[j] > max_scale)
                    max_scale = scales[j];
                if (mins[j] > max_min)
                    max_min = mins[j];
            }
            aprq_encode_k4_scales(scales, mins, max_scale, max_min, o[g].hd, o[g].hdmin, o[g].sc12);
        }
        k4_requant_avx2(x + QK_K * g, nmax, *o[g].hd, *o[g].hdmin, o[g].sc12, Lout);
        if (q5)
            aprq_pack_q5k(Lout, o[g].qh, o[g].qs);
        else
            aprq_pack_q4k(Lout, o[g].qs);
    }
}

/* One row of Q4_K (q5 false) or Q5_K; qw: the row's importance weights or
 * NULL. Finite super-blocks go two at a time. */
AVX2 static void rows_k4(const float *x, void *vy, int64_t nb, const float *qw, bool q5)
{
    int64_t pend = -1; /* a finite block waiting for a partner */
    for (int64_t i = 0; i < nb; i++) {
        const float *xi = x + QK_K * i, *wi = qw ? qw + QK_K * i : NULL;
        if (!all_finite(xi, QK_K) || (wi && !all_finite(wi, QK_K))) {
            if (q5)
                aprq_imat_q5_k(xi, (blk_q5_k *)vy + i, QK_K, wi);
            else
                aprq_imat_q4_k(xi, (blk_q4_k *)vy + i, QK_K, wi);
            continue;
        }
        if (pend >= 0 && pend + 1 == i) {
            const k4_out o[2] = {k4_ptrs(vy, pend, q5), k4_ptrs(vy, i, q5)};
            k4_blocks_avx2(2, x + QK_K * pend, qw ? qw + QK_K * pend : NULL, q5, o);
            pend = -1;
            continue;
        }
        if (pend >= 0) { /* its neighbour was not finite */
            const k4_out o = k4_ptrs(vy, pend, q5);
            k4_blocks_avx2(1, x + QK_K * pend, qw ? qw + QK_K * pend : NULL, q5, &o);
        }
        pend = i;
    }
    if (pend >= 0) {
        const k4_out o = k4_ptrs(vy, pend, q5);
        k4_blocks_avx2(1, x + QK_K * pend, qw ? qw + QK_K * pend : NULL, q5, &o);
    }
}

/* ------------------------------------------------------------ Q6_K */

/* q6k_block: make_qx_quants(16, 32, .., 1, qw) on the 16 sub-blocks (two
 * vectors of 8), then the 8-bit scales and the requantization. */
AVX2 static void q6k_block_avx2(const float *x, const float *qw, blk_q6_k *y)
{
    int8_t L[QK_K];
    float scales[16];
    const __m256i idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    __m256 xt[64], wt[64], vs[2];
    __m256i lv[64];
    for (int g = 0; g < 2; g++) {
        for (int i = 0; i < 16; i++) {
            xt[32 * g + i] = _mm256_i32gather_ps(x + 128 * g + i, idx, 4);
            if (qw)
                wt[32 * g + i] = _mm256_i32gather_ps(qw + 128 * g + i, idx, 4);
        }
    }
    qx_x16(16, 32, xt, qw ? wt : NULL, lv, vs);
    for (int g = 0; g < 2; g++) {
        _mm256_storeu_ps(scales + 8 * g, vs[g]);
        int32_t t[16][8];
        for (int i = 0; i < 16; i++)
            _mm256_storeu_si256((__m256i *)t[i], lv[32 * g + i]);
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 16; i++)
                L[16 * (8 * g + j) + i] = (int8_t)t[i][j];
    }
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < 1e-15f) { /* GROUP_MAX_EPS: the reference zeroes the block */
        aprq_q6k_finish(x, scales, max_scale, max_abs_scale, y, L);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = apr_f32_to_f16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) {
        int v = q_nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(v < 127 ? v : 127);
    }
    const float fd = apr_f16_to_f32(y->d);
    for (int j = 0; j < 16; ++j) {
        float d = fd * y->scales[j];
        if (!d)
            continue;
        const __m256 vd = _mm256_set1_ps(d);
        for (int ii = 0; ii < 16; ii += 8) {
            __m256i l = v_clamp(v_nearest(_mm256_div_ps(_mm256_loadu_ps(x + 16 * j + ii), vd)), -32, 31);
            int32_t t[8];
            _mm256_storeu_si256((__m256i *)t, _mm256_add_epi32(l, _mm256_set1_epi32(32)));
            for (int k = 0; k < 8; k++)
                L[16 * j + ii + k] = (int8_t)t[k];
        }
    }
    aprq_pack_q6k(L, y->ql, y->qh);
}

AVX2 static void rows_q6_k(const float *x, blk_q6_k *y, int64_t nb, const float *qw)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        const float *w = qw ? qw + QK_K * i : NULL;
        if (!all_finite(x, QK_K) || (w && !all_finite(w, QK_K))) {
            aprq_imat_q6_k(x, &y[i], QK_K, w);
            continue;
        }
        q6k_block_avx2(x, w, &y[i]);
    }
}

/* ------------------------------------------------------------ Q2_K / Q3_K with an imatrix */

/* aprq_q3k_pack 32 quants at a time (its bit loop mispredicts on every
 * other quant): bit b of hmask[m] is L[32 b + m] > 3, which then loses 4;
 * qs[32 h + m] holds L[128 h + 32 k + m] in bits 2k..2k+1. L is 0..7, so the
 * 16-bit shifts move no bit across a byte. */
AVX2 static void q3k_pack_avx2(const int8_t *L, blk_q3_k *y)
{
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256i hm = _mm256_setzero_si256(), q[8];
    for (int b = 0; b < 8; b++) {
        const __m256i l = _mm256_loadu_si256((const __m256i *)(L + 32 * b));
        const __m256i hi = _mm256_cmpgt_epi8(l, three);
        hm = _mm256_or_si256(hm, _mm256_and_si256(hi, _mm256_set1_epi8((char)(1 << b))));
        q[b] = _mm256_sub_epi8(l, _mm256_and_si256(hi, four));
    }
    _mm256_storeu_si256((__m256i *)y->hmask, hm);
    for (int h = 0; h < 2; h++) {
        __m256i v = q[4 * h];
        for (int k = 1; k < 4; k++)
            v = _mm256_or_si256(v, _mm256_slli_epi16(q[4 * h + k], 2 * k));
        _mm256_storeu_si256((__m256i *)(y->qs + 32 * h), v);
    }
}

/* q3_finish of quant_ref.c with its 256 divisions 8 at a time: L =
 * clamp(nearest(x / d), -4, 3) + 4 per sub-block with d = y->d times its
 * 6-bit scale (a sub-block whose d is 0 keeps its L), then the scalar
 * packing. IEEE division and v_nearest give the scalar bits lane for lane. */
AVX2 static void q3k_requant_pack(const float *x, int8_t *L, blk_q3_k *y)
{
    const float fd = apr_f16_to_f32(y->d);
    for (int j = 0; j < 16; ++j) {
        const float d = fd * q3k_sub_scale(y->scales, j);
        if (!d)
            continue;
        const __m256 vd = _mm256_set1_ps(d);
        __m256i l[2];
        for (int h = 0; h < 2; h++)
            l[h] = _mm256_add_epi32(
                v_clamp(v_nearest(_mm256_div_ps(_mm256_loadu_ps(x + 16 * j + 8 * h), vd)), -4, 3),
                _mm256_set1_epi32(4));
        /* 16 x i32 (0..7) to 16 bytes in order: the packs work per 128-bit lane */
        const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(l[0], l[1]), 0xD8);
        const __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
        _mm_storeu_si128((__m128i *)(L + 16 * j), p8);
    }
    q3k_pack_avx2(L, y);
}


/* The 16 sub-blocks of 16 of a super-block as two vectors of 8 (xt[32 g + i]
 * = element i of sub-blocks 8 g .. 8 g + 7), their weights qw * sqrt(sigma2 +
 * x^2) and the per sub-block sums of those (from 0, as the reference). */
AVX2 static void k16_imat_prep(const float *x, const float *qw, float sigma2, __m256 *xt, __m256 *wt, float *sw)
{
    const __m256i idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    const __m256 s2 = _mm256_set1_ps(sigma2);
    for (int g = 0; g < 2; g++) {
        __m256 sum = _mm256_setzero_ps();
        for (int i = 0; i < 16; i++) {
            const int k = 32 * g + i;
            xt[k] = _mm256_i32gather_ps(x + 128 * g + i, idx, 4);
            const __m256 q = _mm256_i32gather_ps(qw + 128 * g + i, idx, 4);
            wt[k] = _mm256_mul_ps(q, _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(xt[k], xt[k]))));
            sum = _mm256_add_ps(sum, wt[k]);
        }
        _mm256_storeu_ps(sw + 8 * g, sum);
    }
}

/* Lanes of L[32 g + i] (i < 16) back to out[16 (8 g + j) + i]. */
AVX2 static void untranspose16x2(const __m256i *L, uint8_t *out)
{
    for (int g = 0; g < 2; g++) {
        int32_t t[16][8];
        for (int i = 0; i < 16; i++)
            _mm256_storeu_si256((__m256i *)t[i], L[32 * g + i]);
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 16; i++)
                out[16 * (8 * g + j) + i] = (uint8_t)t[i][j];
    }
}

static float sum_sq_256(const float *x) /* serial, as the reference */
{
    float s = 0;
    for (int j = 0; j < QK_K; ++j)
        s += x[j] * x[j];
    return s;
}

/* quantize_row_q2_K_impl: make_qkx3_quants(16, 3, ...) on the 16 sub-blocks. */
AVX2 static void q2k_imat_block_avx2(const float *x, const float *qw, blk_q2_k *y)
{
    __m256 xt[64], wt[64], vs[2], vm[2];
    __m256i L[64], Laux[64];
    float sw[16], scales[16], mins[16];
    uint8_t Lb[QK_K];
    k16_imat_prep(x, qw, sum_sq_256(x) / QK_K, xt, wt, sw);
    qkx_x16(16, xt, wt, 3, -0.9f, 0.05f, 36, true, L, Laux, vs, vm);
    for (int g = 0; g < 2; g++) {
        _mm256_storeu_ps(scales + 8 * g, vs[g]);
        _mm256_storeu_ps(mins + 8 * g, vm[g]);
    }
    untranspose16x2(L, Lb);
    aprq_q2k_imat_finish(x, scales, mins, sw, Lb, y);
}

/* quantize_row_q3_K_impl: make_qx_quants(16, 4, .., 1, weights) on the 16 sub-blocks. */
AVX2 static void q3k_imat_block_avx2(const float *x, const float *qw, blk_q3_k *y)
{
    __m256 xt[64], wt[64], vs[2];
    __m256i L[64];
    float sw[16], scales[16];
    int8_t Lb[QK_K];
    k16_imat_prep(x, qw, 2 * sum_sq_256(x) / QK_K, xt, wt, sw);
    qx_x16(16, 4, xt, wt, L, vs);
    for (int g = 0; g < 2; g++)
        _mm256_storeu_ps(scales + 8 * g, vs[g]);
    untranspose16x2(L, (uint8_t *)Lb);
    aprq_q3k_imat_scales(scales, sw, y);
    q3k_requant_pack(x, Lb, y);
}

AVX2 static void rows_k16_imat(bool q3, const float *x, void *vy, int64_t nb, const float *qw)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K) {
        if (!all_finite(x, QK_K) || !all_finite(qw, QK_K)) {
            if (q3)
                aprq_imat_q3_k(x, (blk_q3_k *)vy + i, QK_K, qw);
            else
                aprq_imat_q2_k(x, (blk_q2_k *)vy + i, QK_K, qw);
        } else if (q3) {
            q3k_imat_block_avx2(x, qw, (blk_q3_k *)vy + i);
        } else {
            q2k_imat_block_avx2(x, qw, (blk_q2_k *)vy + i);
        }
    }
}

/* ------------------------------------------------------------ 32-blocks with an imatrix */

/* One row of Q4_0 / Q5_0 / Q4_1 / Q5_1 with an imatrix (quantize_row_*_impl):
 * 16 consecutive blocks per call (two vectors of 8); the last call, of 8 or
 * 16, is padded with zero blocks whose lanes are computed and dropped. */
AVX2 static void row32_imat(apr_dtype t, const float *x, uint8_t *y, int64_t n, const float *qw)
{
    if (!all_finite(x, n) || !all_finite(qw, n)) {
        aprq_chunk_rows_ref(t, x, y, 0, 1, n, qw);
        return;
    }
    const bool q5 = t == APR_DT_Q5_0 || t == APR_DT_Q5_1;
    const bool asym = t == APR_DT_Q4_1 || t == APR_DT_Q5_1;
    const __m256i idx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    const __m256 s2 = _mm256_set1_ps(aprq_row_sigma2(x, n));
    const int64_t nb = n / 32;
    float xpad[512], wpad[512];
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int m = nb - b0 < 16 ? (int)(nb - b0) : 16; /* blocks kept */
        const int G = m > 8 ? 2 : 1;
        const float *xs = x + 32 * b0, *ws = qw + 32 * b0;
        if (m < 8 * G) {
            memset(xpad, 0, sizeof xpad);
            memset(wpad, 0, sizeof wpad);
            memcpy(xpad, xs, (size_t)m * 32 * sizeof(float));
            memcpy(wpad, ws, (size_t)m * 32 * sizeof(float));
            xs = xpad;
            ws = wpad;
        }
        __m256 xt[64], wt[64], vs[2], vm[2];
        __m256i L[64], Laux[64];
        for (int g = 0; g < G; g++) {
            for (int i = 0; i < 32; i++) {
                const int k = 32 * g + i;
                xt[k] = _mm256_i32gather_ps(xs + 256 * g + i, idx, 4);
                const __m256 q = _mm256_i32gather_ps(ws + 256 * g + i, idx, 4);
                wt[k] = _mm256_mul_ps(q, _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(xt[k], xt[k]))));
            }
        }
        const int nmax = asym ? (q5 ? 31 : 15) : (q5 ? 16 : 8);
        if (asym && G == 2)
            qkx_x16(32, xt, wt, nmax, -0.9f, 0.05f, 36, true, L, Laux, vs, vm);
        else if (asym)
            qkx_x8(32, xt, wt, nmax, -0.9f, 0.05f, 36, true, L, Laux, vs, vm);
        else if (G == 2)
            qx_x16(32, nmax, xt, wt, L, vs);
        else
            qx_x8(32, nmax, xt, wt, L, vs);
        float d[16], mn[16];
        uint8_t lv[512];
        for (int g = 0; g < G; g++) {
            _mm256_storeu_ps(d + 8 * g, vs[g]);
            if (asym)
                _mm256_storeu_ps(mn + 8 * g, vm[g]);
            untranspose32(L + 32 * g, lv + 256 * g);
        }
        for (int j = 0; j < m; j++) {
            const uint8_t *l = lv + 32 * j;
            const int64_t b = b0 + j;
            uint8_t *qs, *qh = NULL;
            switch (t) {
            case APR_DT_Q4_0: ((blk_q4_0 *)y)[b].d = apr_f32_to_f16(d[j]); qs = ((blk_q4_0 *)y)[b].qs; break;
            case APR_DT_Q5_0:
                ((blk_q5_0 *)y)[b].d = apr_f32_to_f16(d[j]);
                qs = ((blk_q5_0 *)y)[b].qs;
                qh = ((blk_q5_0 *)y)[b].qh;
                break;
            case APR_DT_Q4_1:
                ((blk_q4_1 *)y)[b].d = apr_f32_to_f16(d[j]);
                ((blk_q4_1 *)y)[b].m = apr_f32_to_f16(-mn[j]);
                qs = ((blk_q4_1 *)y)[b].qs;
                break;
            default: /* Q5_1 */
                ((blk_q5_1 *)y)[b].d = apr_f32_to_f16(d[j]);
                ((blk_q5_1 *)y)[b].m = apr_f32_to_f16(-mn[j]);
                qs = ((blk_q5_1 *)y)[b].qs;
                qh = ((blk_q5_1 *)y)[b].qh;
                break;
            }
            if (q5) {
                aprq_pack5(l, qs, qh);
            } else {
                for (int i = 0; i < 16; ++i)
                    qs[i] = (uint8_t)(l[i] | (l[i + 16] << 4));
            }
        }
    }
}

/* ------------------------------------------------------------ Q8_0 and the 32-blocks without an imatrix */

/* The 32 values of a block as 4 vectors; false when one is Inf or NaN (the
 * block then goes through the reference: its comparisons pick NaNs in an
 * order vector min/max do not reproduce). */
AVX2 static inline bool load32_finite(const float *x, __m256 v[4])
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v[k]), e), e));
    }
    return _mm256_testz_si256(bad, bad);
}

AVX2 static inline float hmax_ps(__m256 v) /* finite lanes: the order does not matter */
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

AVX2 static inline float hmin_ps(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* The first of the 32 values equal to v (v is one of them). The reference's
 * strict comparisons keep the first extreme, which matters for the sign of
 * a zero: +0 and -0 compare equal but f16(d) and f16(min) keep the sign. */
AVX2 static inline float first_equal(const float *x, const __m256 v[4], float val)
{
    const __m256 t = _mm256_set1_ps(val);
    uint32_t m = 0;
    for (int k = 0; k < 4; k++)
        m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v[k], t, _CMP_EQ_OQ)) << (8 * k);
    return x[__builtin_ctz(m)];
}

/* roundf on 8 lanes (half away from zero), as int32: t - trunc(t) is exact */
AVX2 static inline __m256i v_roundf(__m256 t)
{
    const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(v_abs(_mm256_sub_ps(t, r)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(t, _mm256_set1_ps(-0.0f)));
    return _mm256_cvttps_epi32(_mm256_add_ps(r, _mm256_and_ps(up, one)));
}

/* 4 vectors of 8 int32 (values fit int8) to 32 bytes in order */
AVX2 static inline __m256i pack32_i8(const __m256i l[4])
{
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(l[0], l[1]), _mm256_packs_epi32(l[2], l[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* 32 levels (bytes, < 32) to the nibbles of qs (element j low, j + 16 high)
 * and, for the 5-bit types, bit 4 of level j into bit j of qh */
AVX2 static inline void pack_levels(__m256i L, uint8_t qs[16], uint8_t *qh)
{
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(_mm256_castsi256_si128(L), m4);
    const __m128i hi = _mm_and_si128(_mm256_extracti128_si256(L, 1), m4);
    _mm_storeu_si128((__m128i *)qs, _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
    if (qh) {
        const uint32_t bits = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(L, 3));
        memcpy(qh, &bits, 4);
    }
}

AVX2 static void rows_q8_0(const float *x, blk_q8_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += 32) {
        __m256 v[4];
        if (!load32_finite(x, v)) {
            aprq_ref_q8_0(x, &y[b], 32);
            continue;
        }
        const __m256 a = _mm256_max_ps(_mm256_max_ps(v_abs(v[0]), v_abs(v[1])),
                                       _mm256_max_ps(v_abs(v[2]), v_abs(v[3])));
        const float d = hmax_ps(a) / 127;
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        y[b].d = apr_f32_to_f16(d);
        __m256i l[4];
        for (int k = 0; k < 4; k++)
            l[k] = v_roundf(_mm256_mul_ps(v[k], id));
        _mm256_storeu_si256((__m256i *)y[b].qs, pack32_i8(l));
    }
}

/* quantize_row_q4_0_ref / q5_0_ref: d = (first value of largest |x|) / -8
 * (-16), levels MIN(nmax, (int8_t)(x * id + nmax/2 + 0.5)). */
AVX2 static void rows_sym32(bool q5, const float *x, uint8_t *vy, int64_t nb)
{
    const size_t bsz = q5 ? sizeof(blk_q5_0) : sizeof(blk_q4_0);
    const int nmax = q5 ? 31 : 15;
    const __m256 off = _mm256_set1_ps(q5 ? 16.5f : 8.5f);
    for (int64_t b = 0; b < nb; b++, x += 32, vy += bsz) {
        __m256 v[4];
        if (!load32_finite(x, v)) {
            (q5 ? aprq_ref_q5_0 : aprq_ref_q4_0)(x, vy, 32);
            continue;
        }
        const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(v_abs(v[0]), v_abs(v[1])),
                                                 _mm256_max_ps(v_abs(v[2]), v_abs(v[3]))));
        float max = 0.0f;
        if (amax > 0) {
            __m256 t = _mm256_set1_ps(amax);
            uint32_t m = 0;
            for (int k = 0; k < 4; k++)
                m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v_abs(v[k]), t, _CMP_EQ_OQ)) << (8 * k);
            max = x[__builtin_ctz(m)];
        }
        const float d = max / (q5 ? -16 : -8);
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        const uint16_t hd = apr_f32_to_f16(d);
        memcpy(vy, &hd, 2);
        __m256i l[4];
        for (int k = 0; k < 4; k++)
            l[k] = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], id), off)),
                                    _mm256_set1_epi32(nmax));
        if (q5)
            pack_levels(pack32_i8(l), ((blk_q5_0 *)vy)->qs, ((blk_q5_0 *)vy)->qh);
        else
            pack_levels(pack32_i8(l), ((blk_q4_0 *)vy)->qs, NULL);
    }
}

/* quantize_row_q4_1_ref / q5_1_ref: min and max (the first of each), d =
 * (max - min) / nmax, levels (x - min) * id + 0.5 truncated (MIN 15 for Q4_1). */
AVX2 static void rows_asym32(bool q5, const float *x, uint8_t *vy, int64_t nb)
{
    const size_t bsz = q5 ? sizeof(blk_q5_1) : sizeof(blk_q4_1);
    for (int64_t b = 0; b < nb; b++, x += 32, vy += bsz) {
        __m256 v[4];
        if (!load32_finite(x, v)) {
            (q5 ? aprq_ref_q5_1 : aprq_ref_q4_1)(x, vy, 32);
            continue;
        }
        const float min = first_equal(x, v, hmin_ps(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]))));
        const float max = first_equal(x, v, hmax_ps(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]))));
        const float d = (max - min) / (q5 ? 31 : 15);
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f), vmin = _mm256_set1_ps(min);
        const uint16_t hd = apr_f32_to_f16(d), hm = apr_f32_to_f16(min);
        memcpy(vy, &hd, 2);
        memcpy(vy + 2, &hm, 2);
        __m256i l[4];
        for (int k = 0; k < 4; k++) {
            l[k] = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], vmin), id), _mm256_set1_ps(0.5f)));
            if (!q5)
                l[k] = _mm256_min_epi32(l[k], _mm256_set1_epi32(15));
        }
        if (q5)
            pack_levels(pack32_i8(l), ((blk_q5_1 *)vy)->qs, ((blk_q5_1 *)vy)->qh);
        else
            pack_levels(pack32_i8(l), ((blk_q4_1 *)vy)->qs, NULL);
    }
}

/* ------------------------------------------------------------ Q2_K / Q3_K without an imatrix */

/* The 16 sub-blocks of a super-block as two vectors of 8 (xt[32 g + i] =
 * element i of sub-blocks 8 g .. 8 g + 7). */
AVX2 static void k16_gather(const float *x, __m256 *xt)
{
    const __m256i idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < 16; i++)
            xt[32 * g + i] = _mm256_i32gather_ps(x + 128 * g + i, idx, 4);
}

/* quantize_row_q2_K_ref: make_qkx2_quants(16, 3, x, |x|, .., -0.5, 0.1, 15, use_mad) */
AVX2 static void q2k_block_avx2(const float *x, blk_q2_k *y)
{
    __m256 xt[64], wt[64], vs[2], vm[2];
    __m256i L[64], Laux[64];
    float scales[16], mins[16];
    uint8_t Lb[QK_K];
    k16_gather(x, xt);
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < 16; i++)
            wt[32 * g + i] = v_abs(xt[32 * g + i]);
    qkx_x16_mad(16, xt, wt, 3, -0.5f, 0.1f, 15, L, Laux, vs, vm);
    for (int g = 0; g < 2; g++) {
        _mm256_storeu_ps(scales + 8 * g, vs[g]);
        _mm256_storeu_ps(mins + 8 * g, vm[g]);
    }
    untranspose16x2(L, Lb);
    aprq_q2k_ref_finish(x, scales, mins, Lb, y);
}

/* make_q3_quants(16, 4, x, L, true) on ng groups of 8 sub-blocks (8 lanes
 * each; a super-block is two groups): the rmse start, then up to 5
 * coordinate-descent passes. A lane whose pass changed nothing would change
 * nothing in the next one either (the pass is a function of L, sumlx and
 * suml2), so running passes until no lane changes gives every lane its
 * scalar result. The groups run in lockstep: each pass is one long chain of
 * dependent updates through a division, and independent chains side by side
 * keep the divider and adders busy (a group that has settled runs passes
 * that change nothing, by the same argument). */
enum { Q3_MAX_GROUPS = 4 };

AVX2 static void q3_quants_xn(const __m256 *x, __m256i *L, __m256 *scale_out, int ng)
{
    const int nmax = 4;
    const __m256 zero = _mm256_setzero_ps();
    __m256 w[Q3_MAX_GROUPS][16], wx[Q3_MAX_GROUPS][16], lf[Q3_MAX_GROUPS][16];
    __m256 sumlx[Q3_MAX_GROUPS], suml2[Q3_MAX_GROUPS], tiny[Q3_MAX_GROUPS];
    for (int g = 0; g < ng; g++) {
        const __m256 *xg = x + 32 * g;
        __m256i *Lg = L + 32 * g;
        __m256 amax = zero, max = zero;
        for (int i = 0; i < 16; ++i) {
            __m256 ax = v_abs(xg[i]);
            __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = v_sel(amax, ax, gt);
            max = v_sel(max, xg[i], gt);
        }
        tiny[g] = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
        sumlx[g] = suml2[g] = zero;
        for (int i = 0; i < 16; ++i) {
            Lg[i] = v_clamp(v_nearest(_mm256_mul_ps(iscale, xg[i])), -nmax, nmax - 1);
            lf[g][i] = _mm256_cvtepi32_ps(Lg[i]);
            w[g][i] = _mm256_mul_ps(xg[i], xg[i]);
            wx[g][i] = _mm256_mul_ps(w[g][i], xg[i]);
            sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(wx[g][i], lf[g][i]));
            suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w[g][i], lf[g][i]), lf[g][i]));
        }
    }
    for (int itry = 0; itry < 5; ++itry) {
        __m256 changed = zero;
        for (int i = 0; i < 16; ++i) {
            __m256 slx[Q3_MAX_GROUPS], pos[Q3_MAX_GROUPS], any = zero;
            for (int g = 0; g < ng; g++) {
                slx[g] = _mm256_sub_ps(sumlx[g], _mm256_mul_ps(wx[g][i], lf[g][i]));
                pos[g] = _mm256_cmp_ps(slx[g], zero, _CMP_GT_OQ);
                any = _mm256_or_ps(any, pos[g]);
            }
            if (!_mm256_movemask_ps(any))
                continue;
            for (int g = 0; g < ng; g++) {
                __m256i *Lg = L + 32 * g;
                __m256 sl2 = _mm256_sub_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w[g][i], lf[g][i]), lf[g][i]));
                const __m256i nl =
                    v_clamp(v_nearest(_mm256_div_ps(_mm256_mul_ps(x[32 * g + i], sl2), slx[g])), -nmax, nmax - 1);
                const __m256 nlf = _mm256_cvtepi32_ps(nl);
                const __m256 ne = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(nl, Lg[i])), pos[g]);
                const __m256 sx = _mm256_add_ps(slx[g], _mm256_mul_ps(wx[g][i], nlf));
                sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w[g][i], nlf), nlf));
                const __m256 better = _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(sx, sx), suml2[g]),
                                                    _mm256_mul_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), sl2), _CMP_GT_OQ);
                const __m256 upd = _mm256_and_ps(_mm256_and_ps(ne, _mm256_cmp_ps(sl2, zero, _CMP_GT_OQ)), better);
                Lg[i] = _mm256_blendv_epi8(Lg[i], nl, _mm256_castps_si256(upd));
                lf[g][i] = v_sel(lf[g][i], nlf, upd);
                sumlx[g] = v_sel(sumlx[g], sx, upd);
                suml2[g] = v_sel(suml2[g], sl2, upd);
                changed = _mm256_or_ps(changed, upd);
            }
        }
        if (!_mm256_movemask_ps(changed))
            break;
    }
    for (int g = 0; g < ng; g++) {
        __m256i *Lg = L + 32 * g;
        const __m256i ti = _mm256_castps_si256(tiny[g]);
        for (int i = 0; i < 16; ++i)
            Lg[i] = _mm256_andnot_si256(ti, _mm256_add_epi32(Lg[i], _mm256_set1_epi32(nmax)));
        __m256 sc = v_sel(zero, _mm256_div_ps(sumlx[g], suml2[g]), _mm256_cmp_ps(suml2[g], zero, _CMP_GT_OQ));
        scale_out[g] = v_sel(sc, zero, tiny[g]);
    }
}

/* quantize_row_q3_K_ref */
/* quantize_row_q3_K_ref on nsb (1 or 2) consecutive super-blocks, their
 * four groups of sub-blocks through one q3_quants_xn */
AVX2 static void q3k_blocks_avx2(const float *x, blk_q3_k *y, int nsb)
{
    __m256 xt[2 * 64], vs[4];
    __m256i L[2 * 64];
    float scales[16];
    int8_t Lb[QK_K];
    for (int b = 0; b < nsb; b++)
        k16_gather(x + QK_K * b, xt + 64 * b);
    q3_quants_xn(xt, L, vs, 2 * nsb);
    for (int b = 0; b < nsb; b++) {
        _mm256_storeu_ps(scales, vs[2 * b]);
        _mm256_storeu_ps(scales + 8, vs[2 * b + 1]);
        untranspose16x2(L + 64 * b, (uint8_t *)Lb);
        aprq_q3k_ref_scales(scales, y + b);
        q3k_requant_pack(x + QK_K * b, Lb, y + b);
    }
}

AVX2 static void rows_k16_plain(bool q3, const float *x, void *vy, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        if (!all_finite(x, QK_K)) {
            if (q3)
                aprq_ref_q3_k(x, (blk_q3_k *)vy + i, QK_K);
            else
                aprq_ref_q2_k(x, (blk_q2_k *)vy + i, QK_K);
        } else if (q3) {
            const int pair = i + 1 < nb && all_finite(x + QK_K, QK_K);
            q3k_blocks_avx2(x, (blk_q3_k *)vy + i, 1 + pair);
            i += pair;
            x += QK_K * pair;
        } else {
            q2k_block_avx2(x, (blk_q2_k *)vy + i);
        }
    }
}

static bool fast_rows(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                      const float *imatrix)
{
    const uint64_t rb = apr_dtype_row_bytes(t, (uint64_t)ncols);
    const int64_t nb = ncols / QK_K;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = src + r * ncols;
        uint8_t *y = dst + (uint64_t)r * rb;
        switch (t) {
        case APR_DT_Q4_K: rows_k4(x, y, nb, imatrix, false); break;
        case APR_DT_Q5_K: rows_k4(x, y, nb, imatrix, true); break;
        case APR_DT_Q6_K: rows_q6_k(x, (blk_q6_k *)y, nb, imatrix); break;
        case APR_DT_Q2_K: case APR_DT_Q3_K:
            if (imatrix)
                rows_k16_imat(t == APR_DT_Q3_K, x, y, nb, imatrix);
            else
                rows_k16_plain(t == APR_DT_Q3_K, x, y, nb);
            break;
        case APR_DT_Q8_0: rows_q8_0(x, (blk_q8_0 *)y, ncols / 32); break; /* no imatrix path, as ggml */
        case APR_DT_Q4_0: case APR_DT_Q5_0: case APR_DT_Q4_1: case APR_DT_Q5_1:
            if (imatrix)
                row32_imat(t, x, y, ncols, imatrix);
            else if (t == APR_DT_Q4_0 || t == APR_DT_Q5_0)
                rows_sym32(t == APR_DT_Q5_0, x, y, ncols / 32);
            else
                rows_asym32(t == APR_DT_Q5_1, x, y, ncols / 32);
            break;
        default: return false;
        }
    }
    return true;
}
#endif

bool aprq_chunk_rows_fast(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                          const float *imatrix)
{
#if defined(__x86_64__)
    const bool fast = t == APR_DT_Q4_K || t == APR_DT_Q5_K || t == APR_DT_Q6_K || t == APR_DT_Q2_K ||
                      t == APR_DT_Q3_K || t == APR_DT_Q8_0 || t == APR_DT_Q4_0 || t == APR_DT_Q5_0 ||
                      t == APR_DT_Q4_1 || t == APR_DT_Q5_1;
    if (fast && aprq_cpu_avx2())
        return fast_rows(t, src, dst, r0, r1, ncols, imatrix);
#endif
    if (t == APR_DT_IQ4_NL || t == APR_DT_IQ4_XS)
        return aprq_iq4_rows_fast(t, src, dst, r0, r1, ncols, imatrix);
    return aprq_chunk_rows_ref(t, src, dst, r0, r1, ncols, imatrix);
}
