/* quant_iq4_fast.c - IQ4_NL and IQ4_XS with AVX2, byte-identical to
 * quant_iq4.c (ggml's quantize_row_iq4_nl_impl, ntry 7).
 *
 * The scale search of a 32-block (one first guess and 15 tries, each a pass
 * of best_index_int8 over the 32 values) is almost all of the time; it runs
 * on 8 blocks at once, one block per lane: IQ4_NL's 8 consecutive blocks,
 * IQ4_XS's 8 blocks of one super-block. Each lane performs the scalar
 * sequence of operations (same adds in the same order, IEEE division and
 * square root, no FMA: the target attribute does not enable it and
 * -ffp-contract=off is global), so the bytes are identical;
 * tests/test_quant_kernels.c and the golden and peer tests check that.
 *
 * Groups holding a non-finite value or importance weight go through the
 * scalar code, and so does an IQ4_NL row's tail of fewer than 8 blocks. */
#include "quant_internal.h"

#include <math.h>

#if defined(__x86_64__)
#include "quant_simd.h"

#define GROUP_MAX_EPS 1e-15f

/* ggml's best_index_int8(16, kvalues_iq4nl, x) on 8 lanes; *q gets the
 * table value of the index. The scalar binary search ends at the mu with
 * val[mu-1] <= x < val[mu]; for sorted values that mu is 1 + the number of
 * val[1..14] that are not greater than x. "Not x < val" (true on NaN) makes a
 * NaN climb to 15 as the search's ml does. Then the tie rule, and the two
 * ends, tested first as the scalar code does. */
AVX2 static inline __m256i best_index(__m256 x, const __m256 *val, __m256 *q)
{
    __m256 lo = val[0], hi = val[1];
    __m256i mu = _mm256_set1_epi32(1);
    for (int k = 1; k < 15; k++) {
        const __m256 ge = _mm256_cmp_ps(x, val[k], _CMP_NLT_UQ);
        lo = v_sel(lo, val[k], ge);
        hi = v_sel(hi, val[k + 1], ge);
        mu = _mm256_sub_epi32(mu, _mm256_castps_si256(ge));
    }
    const __m256 down = _mm256_cmp_ps(_mm256_sub_ps(x, lo), _mm256_sub_ps(hi, x), _CMP_LT_OQ);
    __m256i l = _mm256_add_epi32(mu, _mm256_castps_si256(down));
    __m256 v = v_sel(hi, lo, down);
    const __m256 top = _mm256_cmp_ps(x, val[15], _CMP_GE_OQ);
    l = _mm256_blendv_epi8(l, _mm256_set1_epi32(15), _mm256_castps_si256(top));
    v = v_sel(v, val[15], top);
    const __m256 bottom = _mm256_cmp_ps(x, val[0], _CMP_LE_OQ);
    l = _mm256_andnot_si256(_mm256_castps_si256(bottom), l);
    *q = v_sel(v, val[0], bottom);
    return l;
}

AVX2 static void load_table(__m256 val[16])
{
    for (int k = 0; k < 16; k++)
        val[k] = _mm256_set1_ps((float)aprq_kvalues_iq4nl[k]);
}

/* xt[i] = element i of the 8 blocks x[32 j ..] */
AVX2 static void gather8x32(const float *x, __m256 *xt)
{
    const __m256i idx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    for (int i = 0; i < 32; i++)
        xt[i] = _mm256_i32gather_ps(x + i, idx, 4);
}

/* The scale of each of 8 blocks (0 for a block whose amax < 1e-15): the loop
 * body of quantize_row_iq4_nl_impl before the block's levels are final.
 * w: the weights, max: the signed value of largest magnitude. */
AVX2 static __m256 search8(const __m256 *xt, const __m256 *w, const __m256 *val)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 amax = zero, max = zero, q;
    for (int i = 0; i < 32; i++) {
        const __m256 ax = v_abs(xt[i]);
        const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = v_sel(amax, ax, gt);
        max = v_sel(max, xt[i], gt);
    }
    const __m256 tiny = _mm256_cmp_ps(amax, _mm256_set1_ps(GROUP_MAX_EPS), _CMP_LT_OQ);
    __m256 d = _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0f)), val[0]); /* -max / values[0] */
    __m256 id = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
    __m256 sumqx = zero, sumq2 = zero;
    for (int i = 0; i < 32; i++) {
        best_index(_mm256_mul_ps(id, xt[i]), val, &q);
        const __m256 wq = _mm256_mul_ps(w[i], q);
        sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, xt[i]));
        sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
    }
    d = v_sel(zero, _mm256_div_ps(sumqx, sumq2), _mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ));
    __m256 best = _mm256_mul_ps(d, sumqx);
    for (int itry = -7; itry <= 7; ++itry) {
        id = _mm256_div_ps(_mm256_set1_ps((float)(itry + aprq_kvalues_iq4nl[0])), max);
        sumqx = sumq2 = zero;
        for (int i = 0; i < 32; i++) {
            best_index(_mm256_mul_ps(id, xt[i]), val, &q);
            const __m256 wq = _mm256_mul_ps(w[i], q);
            sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, xt[i]));
            sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
        }
        const __m256 upd = _mm256_and_ps(_mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ),
                                         _mm256_cmp_ps(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2),
                                                       _CMP_GT_OQ));
        const __m256 nd = _mm256_div_ps(sumqx, sumq2);
        d = v_sel(d, nd, upd);
        best = v_sel(best, _mm256_mul_ps(nd, sumqx), upd);
    }
    return v_sel(d, zero, tiny);
}

/* The weights of 8 blocks: qw * sqrt(sigma2 + x^2), or x^2 without an
 * imatrix. sigma2: per lane (IQ4_NL, whose super-block is the block) or
 * one value (IQ4_XS), already scaled by 2 / super-block size. */
AVX2 static void weights8(const __m256 *xt, const float *qw, __m256 sigma2, __m256 *w)
{
    if (qw) {
        __m256 qt[32];
        gather8x32(qw, qt);
        for (int i = 0; i < 32; i++)
            w[i] = _mm256_mul_ps(qt[i], _mm256_sqrt_ps(_mm256_add_ps(sigma2, _mm256_mul_ps(xt[i], xt[i]))));
    } else {
        for (int i = 0; i < 32; i++)
            w[i] = _mm256_mul_ps(xt[i], xt[i]);
    }
}

/* The final levels of 8 blocks at per-lane inverse scales id, packed into
 * the 16 bytes of each block's qs (low nibble element j, high j + 16). */
AVX2 static void levels8(const __m256 *xt, __m256 id, const __m256 *val, uint8_t *qs, size_t qs_stride)
{
    int32_t lv[32][8];
    __m256 q;
    for (int i = 0; i < 32; i++)
        _mm256_storeu_si256((__m256i *)lv[i], best_index(_mm256_mul_ps(id, xt[i]), val, &q));
    for (int b = 0; b < 8; b++)
        for (int j = 0; j < 16; j++)
            qs[qs_stride * (size_t)b + (size_t)j] = (uint8_t)(lv[j][b] | (lv[j + 16][b] << 4));
}

/* 8 consecutive IQ4_NL blocks */
AVX2 static void iq4nl_x8(const float *x, blk_iq4_nl *y, const float *qw, const __m256 *val)
{
    __m256 xt[32], w[32];
    gather8x32(x, xt);
    __m256 sigma2 = _mm256_setzero_ps();
    for (int i = 0; i < 32; i++)
        sigma2 = _mm256_add_ps(sigma2, _mm256_mul_ps(xt[i], xt[i]));
    sigma2 = _mm256_mul_ps(sigma2, _mm256_set1_ps(2.f / 32));
    weights8(xt, qw, sigma2, w);
    const __m256 d = search8(xt, w, val);
    float dv[8];
    _mm256_storeu_ps(dv, d);
    for (int b = 0; b < 8; b++)
        y[b].d = apr_f32_to_f16(dv[b]);
    const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ); /* scales[0] ? 1/scales[0] : 0 */
    const __m256 id = _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), d));
    levels8(xt, id, val, y[0].qs, sizeof(blk_iq4_nl));
}

/* one IQ4_XS super-block */
AVX2 static void iq4xs_block(const float *x, blk_iq4_xs *y, const float *qw, const __m256 *val)
{
    __m256 xt[32], w[32];
    gather8x32(x, xt);
    float sigma2 = 0; /* one serial sum over the super-block, as the reference */
    for (int j = 0; j < QK_K; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / QK_K;
    weights8(xt, qw, _mm256_set1_ps(sigma2), w);
    float scales[8];
    _mm256_storeu_ps(scales, search8(xt, w, val));
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
        const float abs_d = fabsf(scales[ib]);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = scales[ib];
        }
    }
    const float d = -max_scale / 32;
    y->d = apr_f32_to_f16(d);
    y->scales_h = 0;
    const float id = d ? 1 / d : 0.f;
    float idl[8];
    for (int ib = 0; ib < 8; ++ib) {
        int l = q_nearest_int(id * scales[ib]);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        const float dl = d * l;
        idl[ib] = dl ? 1 / dl : 0.f;
        l += 32;
        const uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
        if (ib % 2 == 0)
            y->scales_l[ib / 2] = l_l;
        else
            y->scales_l[ib / 2] |= (uint8_t)(l_l << 4);
        y->scales_h |= (uint16_t)(l_h << 2 * ib);
    }
    levels8(xt, _mm256_loadu_ps(idl), val, y->qs, 16);
}

AVX2 static void rows_iq4_nl(const float *x, blk_iq4_nl *y, int64_t nb, const float *qw, const __m256 *val)
{
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        const float *xb = x + 32 * b, *wb = qw ? qw + 32 * b : NULL;
        if (all_finite(xb, 256) && (!wb || all_finite(wb, 256)))
            iq4nl_x8(xb, y + b, wb, val);
        else
            aprq_imat_iq4_nl(xb, y + b, 256, wb);
    }
    if (b < nb)
        aprq_imat_iq4_nl(x + 32 * b, y + b, 32 * (nb - b), qw ? qw + 32 * b : NULL);
}

AVX2 static void rows_iq4_xs(const float *x, blk_iq4_xs *y, int64_t nb, const float *qw, const __m256 *val)
{
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + QK_K * b, *wb = qw ? qw + QK_K * b : NULL;
        if (all_finite(xb, QK_K) && (!wb || all_finite(wb, QK_K)))
            iq4xs_block(xb, y + b, wb, val);
        else
            aprq_imat_iq4_xs(xb, y + b, QK_K, wb);
    }
}

AVX2 static void iq4_rows_avx2(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1,
                               int64_t ncols, const float *imatrix)
{
    __m256 val[16];
    load_table(val);
    const uint64_t rb = apr_dtype_row_bytes(t, (uint64_t)ncols);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = src + r * ncols;
        uint8_t *y = dst + (uint64_t)r * rb;
        if (t == APR_DT_IQ4_NL)
            rows_iq4_nl(x, (blk_iq4_nl *)y, ncols / 32, imatrix, val);
        else
            rows_iq4_xs(x, (blk_iq4_xs *)y, ncols / QK_K, imatrix, val);
    }
}
#endif

bool aprq_iq4_rows_fast(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                        const float *imatrix)
{
    if (t != APR_DT_IQ4_NL && t != APR_DT_IQ4_XS)
        return false;
#if defined(__x86_64__)
    if (aprq_cpu_avx2()) {
        iq4_rows_avx2(t, src, dst, r0, r1, ncols, imatrix);
        return true;
    }
#endif
    return aprq_chunk_rows_ref(t, src, dst, r0, r1, ncols, imatrix);
}
