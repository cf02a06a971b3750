/* gemm_avx2.c - AVX2 micro-kernels over apr_wpack's interleaved groups.
 *
 * A tile is one group of 8 rows x up to 4 tokens. For the block types an
 * int32 lane holds one row: a block's integer sum is exact (int16 partial
 * sums are bounded, so no maddubs pair saturates and no int16 sum wraps;
 * the VNNI variants sum in int32), then each lane repeats the scalar
 * kernel's float operations for its row (dot.c), in the same order, never
 * fused (no FMA). The block tiles are gemm_qtiles.inc, compiled here once
 * per integer dot instruction: AVX2 maddubs/madd, AVX-VNNI vpdpbusd and
 * AVX512-VNNI vpdpbusd (EVEX, 256-bit), chosen by aprq_cpu_vnni(); with
 * AVX512-VNNI, Q4_K, Q6_K and the grp_q8_0 types (Q8_0, Q4_0, Q5_0) run
 * 16-row x 8-token tiles instead (two groups per 16-lane register, below),
 * the 256-bit tile only for a call's last odd group. For the float
 * types a tile is 2 rows x 4 tokens and a register holds the 8 partial sums
 * of one output, exactly the scalar kernel's s[0..7] (one FMA per step, as
 * its fmaf), reduced in its tree; with AVX-512, F16/BF16 read a packed copy
 * of their rows (gemm.c, pack_h16_step) in 8-row x 6-token tiles.
 * So every output equals apr_vec_dot_scalar bit for bit, whatever the tile
 * it falls in. Compiled for baseline x86-64; functions carry target
 * attributes and run only after aprq_cpu_avx2() (the AVX-512 float tile
 * only after aprq_cpu_avx512()). */
#include <math.h>
#include <stdlib.h>

#include "gemm_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,f16c,fma")))
#define INLINE inline __attribute__((always_inline))
#define TILE_T 4

#define ACT(T, act, as, t) ((const T *)((const uint8_t *)(act) + (size_t)(t) * (as)))

AVX2 static INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* int32 lanes holding v (0 <= |v| < 2^15) -> int16 pairs (v, v), for madd. */
AVX2 static INLINE __m256i pair16(__m256i v32)
{
    return _mm256_or_si256(_mm256_and_si256(v32, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v32, 16));
}

/* lanes (2r, 2r+1) = (a[r], b[r]) for 8 signed/unsigned bytes a and b */
AVX2 static INLINE __m256i interleave16(__m128i a16, __m128i b16)
{
    return _mm256_set_m128i(_mm_unpackhi_epi16(a16, b16), _mm_unpacklo_epi16(a16, b16));
}

AVX2 static INLINE __m128i load8(const void *p)
{
    return _mm_loadl_epi64((const __m128i *)p);
}

/* Store the 8 row lanes of token t's sums (only the first nr rows). */
AVX2 static INLINE void store_rows(float *out, __m256 v, int nr)
{
    if (nr == 8) {
        _mm256_storeu_ps(out, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    memcpy(out, tmp, (size_t)nr * sizeof(float));
}


/* The sum of the 8 int32 lanes (exact). */
AVX2 static INLINE int hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* ---------------------------------------------------------------- Q4_K / Q5_K x Q8_K
 * Scalar: sumi = sum_j sc[j] * (sum of q * a over sub-block j),
 * summ = sum_j mn[j] * (bsums[2j] + bsums[2j+1]),
 * sumf += (d * yd) * sumi - (dmin * yd) * summ.
 * The float step and the mins, shared by both once sumi is known. */
AVX2 static INLINE void finish_k4(const float *d8, const float *dmin8, const uint8_t mn[8][8], const __m256i *sumi,
                                  const void *act, size_t as, int64_t i, int T, __m256 *sumf)
{
    __m256i mnp[4]; /* lanes (2r, 2r+1) = (mn[2k][r], mn[2k+1][r]) */
    for (int k = 0; k < 4; k++)
        mnp[k] = interleave16(_mm_cvtepu8_epi16(load8(mn[2 * k])), _mm_cvtepu8_epi16(load8(mn[2 * k + 1])));
    const __m256 d = _mm256_loadu_ps(d8), dmin = _mm256_loadu_ps(dmin8);
    for (int t = 0; t < T; t++) {
        const blk_q8_k *y = &ACT(blk_q8_k, act, as, t)[i];
        /* (bsums[2j] + bsums[2j+1]) for j = 0..7; |.| <= 32 * 128 */
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y->bsums),
                                          _mm_loadu_si128((const __m128i *)(y->bsums + 8)));
        int32_t bp[4];
        _mm_storeu_si128((__m128i *)bp, bs);
        __m256i summ = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++)
            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mnp[k], _mm256_set1_epi32(bp[k])));
        const __m256 yd = _mm256_set1_ps(y->d);
        const __m256 f1 = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(sumi[t]));
        const __m256 f2 = _mm256_mul_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(summ));
        sumf[t] = _mm256_add_ps(sumf[t], _mm256_sub_ps(f1, f2));
    }
}

/* ---------------------------------------------------------------- Q2_K / Q3_K x Q8_K
 * 16 sub-blocks of 16 elements, each four chunks of one 2-bit field of
 * qs[h] (elements 128 h + 32 s + 16 half + 0..15, sub-block 8h + 2s + half).
 * Levels <= 7: a sub-block's int16 sum is at most 4 * 2 * 7 * 128 = 7168. */
#define K2_SUBBLOCKS(BODY)                                                   \
    for (int h = 0; h < 2; h++)                                              \
        for (int s = 0; s < 4; s++)                                          \
            for (int half = 0; half < 2; half++) {                           \
                const int k = 8 * h + 2 * s + half;                          \
                BODY                                                         \
            }

/* sum_k v[k][r] * bsums[k] over the 16 sub-blocks, v's lanes (2r, 2r+1)
 * holding (v[2m][r], v[2m+1][r]) in v2[m]; |v| <= 32, |bsums| <= 16 * 128. */
AVX2 static INLINE __m256i bsums_dot16(const __m256i v2[8], const blk_q8_k *y)
{
    __m256i acc = _mm256_setzero_si256();
    for (int m = 0; m < 8; m++) {
        int32_t bp;
        memcpy(&bp, y->bsums + 2 * m, 4);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v2[m], _mm256_set1_epi32(bp)));
    }
    return acc;
}


/* ---------------------------------------------------------------- the block tiles, per dot instruction */
#define KT AVX2
#define KN(x) x##_avx2
#define Q_VNNI 0
#include "gemm_qtiles.inc"
#undef KT
#undef KN
#undef Q_VNNI

#define KT __attribute__((target("avx2,f16c,fma,avxvnni")))
#define KN(x) x##_avxvnni
#define Q_VNNI 1
#define DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define DPWSSD(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#include "gemm_qtiles.inc"
#undef KT
#undef KN
#undef Q_VNNI
#undef DPBUSD
#undef DPWSSD

#define KT __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,avx2,f16c,fma")))
#define KN(x) x##_vnni512
#define Q_VNNI 1
#define DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define DPWSSD(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#include "gemm_qtiles.inc"
#undef KT
#undef KN
#undef Q_VNNI
#undef DPBUSD
#undef DPWSSD

/* ---------------------------------------------------------------- two-group tiles, shared shape
 * DISPATCH_T8(n, tile, args...) calls tile(args..., n), 1 <= n <= 8, with
 * the token count a constant in each case, so each inlined tile's token
 * loops are unrolled for their count (every TMAX here is 8). K_TILE_X2(q, TMAX) defines, for the k-quant group type grp_q
 * and its step_q_x2 (which adds super-block i of both groups to 16 rows of
 * float sums), tile_q_x2 (super-blocks in order, then the 16 rows stored)
 * and group2_q_vnni512 (groups g and g + 1 over nt tokens, TMAX at a time).
 * The Q4_K and Q6_K tiles differ only in their step. */
#define DISPATCH_T8(n, tile, ...) \
    switch (n) { \
    case 8: tile(__VA_ARGS__, 8); break; \
    case 7: tile(__VA_ARGS__, 7); break; \
    case 6: tile(__VA_ARGS__, 6); break; \
    case 5: tile(__VA_ARGS__, 5); break; \
    case 4: tile(__VA_ARGS__, 4); break; \
    case 3: tile(__VA_ARGS__, 3); break; \
    case 2: tile(__VA_ARGS__, 2); break; \
    default: tile(__VA_ARGS__, 1); break; \
    }

#define K_TILE_X2(q, TMAX) \
    VNNI512 static INLINE void tile_##q##_x2(const grp_##q *g0, const grp_##q *g1, int64_t nb, const void *act, \
                                             size_t as, float *out, size_t ldo, int nr, int T) \
    { \
        __m512 sumf[TMAX]; \
        for (int t = 0; t < T; t++) \
            sumf[t] = _mm512_setzero_ps(); \
        for (int64_t i = 0; i < nb; i++) \
            step_##q##_x2(&g0[i], &g1[i], act, as, i, T, sumf); \
        for (int t = 0; t < T; t++) { \
            store_rows(out + (size_t)t * ldo, _mm512_castps512_ps256(sumf[t]), APR_WPACK_ROWS); \
            store_rows(out + (size_t)t * ldo + APR_WPACK_ROWS, _mm512_extractf32x8_ps(sumf[t], 1), \
                       nr - APR_WPACK_ROWS); \
        } \
    } \
    /* Groups g, g + 1 of the pack: nr rows, 8 < nr <= 16. */ \
    VNNI512 static void group2_##q##_vnni512(const apr_wpack *p, uint64_t g, int nr, const void *act, size_t as, \
                                             uint32_t nt, float *out, size_t ldo) \
    { \
        const grp_##q *g0 = (const grp_##q *)(p->data + g * p->group_bytes); \
        const grp_##q *g1 = (const grp_##q *)(p->data + (g + 1) * p->group_bytes); \
        const int64_t nb = (int64_t)p->cols / QK_K; \
        for (uint32_t t0 = 0; t0 < nt; t0 += TMAX) { \
            const void *a = (const uint8_t *)act + (size_t)t0 * as; \
            float *o = out + (size_t)t0 * ldo; \
            DISPATCH_T8(nt - t0 >= TMAX ? TMAX : (int)(nt - t0), tile_##q##_x2, g0, g1, nb, a, as, o, ldo, nr); \
        } \
    }

/* ---------------------------------------------------------------- Q6_K, two groups per AVX-512 register
 * With AVX512-VNNI, a 16-lane int32 register holds 16 rows (groups g and
 * g + 1): one vpdpbusd does twice the multiply-adds of the 256-bit tile for
 * the same activation broadcast, and the scale multiply (vpmulld, the
 * costly step of the 256-bit Q6_K tile) is shared by both groups. The
 * integers are the same exact sums as step_q6_k's, and each row's float
 * step is step_q6_k's on its 8-lane half: the same bits. 8 tokens per
 * tile (4 before): each 16-row chunk (two loads and an insert) feeds 8
 * vpdpbusd, the float sums in 16-lane registers (lane-wise, so the same
 * operations as two 8-lane ones). */
#define VNNI512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,avx2,f16c,fma")))

VNNI512 static INLINE __m512i cat256(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

#define Q6X2_T 8

/* sumf[t] (16 rows: b0's in the low half, b1's in the high) += block i. */
VNNI512 static INLINE void step_q6_k_x2(const grp_q6_k *b0, const grp_q6_k *b1, const void *act, size_t as,
                                        int64_t i, int T, __m512 *sumf)
{
    __m512i sumi[Q6X2_T], corr[Q6X2_T];
    for (int t = 0; t < T; t++)
        sumi[t] = corr[t] = _mm512_setzero_si512();
    for (int k = 0; k < 16; k++) {
        const __m512i sc = _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(load8(b0->sc[k]), load8(b1->sc[k])));
        __m512i p[Q6X2_T];
        for (int t = 0; t < T; t++)
            p[t] = _mm512_setzero_si512();
        for (int c = 4 * k; c < 4 * k + 4; c++) {
            const __m512i w = cat256(_mm256_loadu_si256((const __m256i *)b0->q[c]),
                                     _mm256_loadu_si256((const __m256i *)b1->q[c]));
            for (int t = 0; t < T; t++) {
                int32_t a4;
                memcpy(&a4, ACT(blk_q8_k, act, as, t)[i].qs + 4 * c, 4);
                p[t] = _mm512_dpbusd_epi32(p[t], w, _mm512_set1_epi32(a4));
            }
        }
        for (int t = 0; t < T; t++)
            sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(p[t], sc));
    }
    for (int m = 0; m < 8; m++) {
        const __m512i scp =
            cat256(interleave16(_mm_cvtepi8_epi16(load8(b0->sc[2 * m])), _mm_cvtepi8_epi16(load8(b0->sc[2 * m + 1]))),
                   interleave16(_mm_cvtepi8_epi16(load8(b1->sc[2 * m])), _mm_cvtepi8_epi16(load8(b1->sc[2 * m + 1]))));
        for (int t = 0; t < T; t++) {
            int32_t bp;
            memcpy(&bp, ACT(blk_q8_k, act, as, t)[i].bsums + 2 * m, 4);
            corr[t] = _mm512_add_epi32(corr[t], _mm512_madd_epi16(scp, _mm512_set1_epi32(bp)));
        }
    }
    const __m512 d = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b0->d)), _mm256_loadu_ps(b1->d), 1);
    for (int t = 0; t < T; t++) {
        const __m512i s = _mm512_sub_epi32(sumi[t], _mm512_slli_epi32(corr[t], 5));
        const __m512 yd = _mm512_set1_ps(ACT(blk_q8_k, act, as, t)[i].d);
        sumf[t] = _mm512_add_ps(sumf[t], _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(s)));
    }
}

K_TILE_X2(q6_k, Q6X2_T)

/* ---------------------------------------------------------------- Q4_K, two groups per AVX-512 register
 * As the Q6_K tile: with AVX512-VNNI, groups g and g + 1 share each
 * activation broadcast and the nibble unpacking (one shift and one and per
 * 16-row chunk). The integers are step_q4_k's (each half sub-block's int32
 * sum, |p| <= 16 * 15 * 128, scaled by vpdpwssd against the scale in the
 * lane's low half) and the mins and the float step finish_k4's, lane by
 * lane: the same bits. */
#define Q4X2_T 8

/* sumf[t] (16 rows: b0's in the low half, b1's in the high) += block i. */
VNNI512 static INLINE void step_q4_k_x2(const grp_q4_k *b0, const grp_q4_k *b1, const void *act, size_t as,
                                        int64_t i, int T, __m512 *sumf)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i sumi[Q4X2_T];
    for (int t = 0; t < T; t++)
        sumi[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; j++) { /* sub-block j: nibble half j & 1 of qs[j / 2] */
        const int jj = j / 2, shift = 4 * (j & 1);
        const __m512i sc = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(load8(b0->sc[j]), load8(b1->sc[j])));
        for (int c0 = 0; c0 < 8; c0 += 4) {
            __m512i p[Q4X2_T];
            for (int t = 0; t < T; t++)
                p[t] = _mm512_setzero_si512();
            for (int c = c0; c < c0 + 4; c++) {
                const __m512i w = cat256(_mm256_loadu_si256((const __m256i *)b0->qs[jj][c]),
                                         _mm256_loadu_si256((const __m256i *)b1->qs[jj][c]));
                const __m512i q = _mm512_and_si512(_mm512_srli_epi16(w, shift), m4);
                for (int t = 0; t < T; t++) {
                    int32_t a4;
                    memcpy(&a4, ACT(blk_q8_k, act, as, t)[i].qs + 32 * j + 4 * c, 4);
                    p[t] = _mm512_dpbusd_epi32(p[t], q, _mm512_set1_epi32(a4));
                }
            }
            for (int t = 0; t < T; t++)
                sumi[t] = _mm512_dpwssd_epi32(sumi[t], p[t], sc);
        }
    }
    __m512i mnp[4]; /* lanes (2r, 2r+1) = (mn[2k][r], mn[2k+1][r]), b0's rows then b1's */
    for (int k = 0; k < 4; k++)
        mnp[k] = cat256(interleave16(_mm_cvtepu8_epi16(load8(b0->mn[2 * k])), _mm_cvtepu8_epi16(load8(b0->mn[2 * k + 1]))),
                        interleave16(_mm_cvtepu8_epi16(load8(b1->mn[2 * k])), _mm_cvtepu8_epi16(load8(b1->mn[2 * k + 1]))));
    const __m512 d = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b0->d)), _mm256_loadu_ps(b1->d), 1);
    const __m512 dmin =
        _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b0->dmin)), _mm256_loadu_ps(b1->dmin), 1);
    for (int t = 0; t < T; t++) {
        const blk_q8_k *y = &ACT(blk_q8_k, act, as, t)[i];
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y->bsums),
                                          _mm_loadu_si128((const __m128i *)(y->bsums + 8)));
        int32_t bp[4];
        _mm_storeu_si128((__m128i *)bp, bs);
        __m512i summ = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++)
            summ = _mm512_add_epi32(summ, _mm512_madd_epi16(mnp[k], _mm512_set1_epi32(bp[k])));
        const __m512 yd = _mm512_set1_ps(y->d);
        const __m512 f1 = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(sumi[t]));
        const __m512 f2 = _mm512_mul_ps(_mm512_mul_ps(dmin, yd), _mm512_cvtepi32_ps(summ));
        sumf[t] = _mm512_add_ps(sumf[t], _mm512_sub_ps(f1, f2));
    }
}

K_TILE_X2(q4_k, Q4X2_T)

/* ---------------------------------------------------------------- Q8_0, two groups per AVX-512 register
 * The grp_q8_0 types (Q8_0, Q4_0, Q5_0) with AVX512-VNNI: 16 rows (groups g
 * and g + 1) per register, up to Q8X2_T tokens per tile. Each block of each
 * token costs its 8 vpdpbusd (the activation broadcast folded into them)
 * and the float step; the bias correction and dy come from aux. Each lane
 * runs step_q8_0's integer and float operations for its row: the same bits. */
#define Q8X2_T 8

VNNI512 static INLINE void tile_q8_0_x2(const grp_q8_0 *g0, const grp_q8_0 *g1, int64_t nb, const void *act,
                                        size_t as, const aprq_q8_aux *aux, float *out, size_t ldo, int nr, int T)
{
    __m512 sumf[Q8X2_T];
    for (int t = 0; t < T; t++)
        sumf[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const grp_q8_0 *b0 = &g0[i], *b1 = &g1[i];
        __m512i acc[Q8X2_T];
        for (int t = 0; t < T; t++)
            acc[t] = _mm512_set1_epi32(aux[(size_t)t * (size_t)nb + (size_t)i].corr);
        for (int c = 0; c < 8; c++) {
            const __m512i u = cat256(_mm256_loadu_si256((const __m256i *)b0->qs[c]),
                                     _mm256_loadu_si256((const __m256i *)b1->qs[c]));
            for (int t = 0; t < T; t++) {
                int32_t a4;
                memcpy(&a4, ACT(blk_q8_0, act, as, t)[i].qs + 4 * c, 4);
                acc[t] = _mm512_dpbusd_epi32(acc[t], u, _mm512_set1_epi32(a4));
            }
        }
        const __m512 dx = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b0->d)), _mm256_loadu_ps(b1->d), 1);
        for (int t = 0; t < T; t++) {
            const __m512 dy = _mm512_set1_ps(aux[(size_t)t * (size_t)nb + (size_t)i].dy);
            sumf[t] = _mm512_add_ps(sumf[t], _mm512_mul_ps(_mm512_cvtepi32_ps(acc[t]), _mm512_mul_ps(dx, dy)));
        }
    }
    for (int t = 0; t < T; t++) {
        store_rows(out + (size_t)t * ldo, _mm512_castps512_ps256(sumf[t]), APR_WPACK_ROWS);
        store_rows(out + (size_t)t * ldo + APR_WPACK_ROWS, _mm512_extractf32x8_ps(sumf[t], 1), nr - APR_WPACK_ROWS);
    }
}

/* Groups g, g + 1 of a grp_q8_0 pack: nr rows, 8 < nr <= 16. */
VNNI512 static void group2_q8_0_vnni512(const apr_wpack *p, uint64_t g, int nr, const void *act, size_t as,
                                        const aprq_q8_aux *aux, uint32_t nt, float *out, size_t ldo)
{
    const grp_q8_0 *g0 = (const grp_q8_0 *)(p->data + g * p->group_bytes);
    const grp_q8_0 *g1 = (const grp_q8_0 *)(p->data + (g + 1) * p->group_bytes);
    const int64_t nb = (int64_t)p->cols / 32;
    for (uint32_t t0 = 0; t0 < nt; t0 += Q8X2_T) {
        const void *a = (const uint8_t *)act + (size_t)t0 * as;
        const aprq_q8_aux *x = aux + (size_t)t0 * (size_t)nb;
        float *o = out + (size_t)t0 * ldo;
        DISPATCH_T8(nt - t0 >= Q8X2_T ? Q8X2_T : (int)(nt - t0), tile_q8_0_x2, g0, g1, nb, a, as, x, o, ldo, nr);
    }
}

/* The aprq_q8_aux table of nt tokens' Q8_0 activation rows of nb blocks:
 * dy exactly as the scalar converts it, corr = -128 * (sum of the quants)
 * (maddubs of ones: int16 pairs of |a| <= 128, exact). */
AVX2 static void make_q8_aux(const void *act, size_t as, uint32_t nt, int64_t nb, aprq_q8_aux *aux)
{
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (uint32_t t = 0; t < nt; t++)
        for (int64_t i = 0; i < nb; i++) {
            const blk_q8_0 *y = &ACT(blk_q8_0, act, as, t)[i];
            const __m256i q = _mm256_loadu_si256((const __m256i *)y->qs);
            const int sum = hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16));
            aux[(size_t)t * (size_t)nb + (size_t)i] = (aprq_q8_aux){apr_f16_to_f32(y->d), -128 * sum};
        }
}

/* ---------------------------------------------------------------- float rows
 * Scalar (dot.c): s[k] = fmaf(w[i + k], y[i + k], s[k]) over 8-element steps, reduce8,
 * then the tail one by one. Here the register of output (row, token) is its
 * s[0..7]. */
AVX2 static INLINE __m256 load8_w(apr_dtype t, const uint8_t *w, int64_t i)
{
    if (t == APR_DT_F32)
        return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (t == APR_DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

static INLINE float load1_w(apr_dtype t, const uint8_t *w, int64_t i)
{
    if (t == APR_DT_F32)
        return ((const float *)w)[i];
    uint16_t h;
    memcpy(&h, w + 2 * i, 2);
    return t == APR_DT_BF16 ? apr_bf16_to_f32(h) : apr_f16_to_f32(h);
}

/* Same tree as dot.c's reduce8. */
AVX2 static INLINE float reduce8(__m256 v)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

/* R (1 or 2) rows x T tokens over columns [k0, k1) (multiples of 8 below
 * the 8-lane tail): acc holds each output's partial sums s[0..7] between
 * column chunks, acc[r * ACC_T + t], so chunking the columns changes no
 * operation and no order. */
#define ACC_T 64
AVX2 static INLINE void tile_float(apr_dtype dt, const uint8_t *const *w, int R, int64_t k0, int64_t k1,
                                   const void *act, size_t as, int T, __m256 *acc)
{
    __m256 a[2][TILE_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            a[r][t] = _mm256_loadu_ps((const float *)&acc[r * ACC_T + t]);
    for (int64_t i = k0; i < k1; i += 8) {
        __m256 wv[2];
        for (int r = 0; r < R; r++)
            wv[r] = load8_w(dt, w[r], i);
        for (int t = 0; t < T; t++) {
            const __m256 yv = _mm256_loadu_ps(ACT(float, act, as, t) + i);
            for (int r = 0; r < R; r++)
                a[r][t] = _mm256_fmadd_ps(wv[r], yv, a[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            _mm256_storeu_ps((float *)&acc[r * ACC_T + t], a[r][t]);
}

/* The full tile (2 rows x 4 tokens) spelled out, the same operations in
 * the same order as tile_float's: GCC leaves tile_float's loops generic
 * for the 16-bit types, and here all eight sums stay in registers. */
#define FLOAT_STEP(A0, A1, Y)                                                \
    do {                                                                     \
        const __m256 yv_ = _mm256_loadu_ps((Y) + i);                          \
        A0 = _mm256_fmadd_ps(w0, yv_, A0);                                   \
        A1 = _mm256_fmadd_ps(w1, yv_, A1);                                   \
    } while (0)
AVX2 static INLINE void tile_float_2x4(apr_dtype dt, const uint8_t *const *w, int64_t k0, int64_t k1,
                                       const void *act, size_t as, __m256 *acc)
{
    const float *y0 = ACT(float, act, as, 0), *y1 = ACT(float, act, as, 1);
    const float *y2 = ACT(float, act, as, 2), *y3 = ACT(float, act, as, 3);
    __m256 a00 = acc[0], a01 = acc[1], a02 = acc[2], a03 = acc[3];
    __m256 a10 = acc[ACC_T], a11 = acc[ACC_T + 1], a12 = acc[ACC_T + 2], a13 = acc[ACC_T + 3];
    for (int64_t i = k0; i < k1; i += 8) {
        const __m256 w0 = load8_w(dt, w[0], i), w1 = load8_w(dt, w[1], i);
        FLOAT_STEP(a00, a10, y0);
        FLOAT_STEP(a01, a11, y1);
        FLOAT_STEP(a02, a12, y2);
        FLOAT_STEP(a03, a13, y3);
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a02, acc[3] = a03;
    acc[ACC_T] = a10, acc[ACC_T + 1] = a11, acc[ACC_T + 2] = a12, acc[ACC_T + 3] = a13;
}
#undef FLOAT_STEP



/* ---------------------------------------------------------------- float rows, AVX-512
 * Only after aprq_cpu_avx512(). One 16-lane register holds the s[0..7] of
 * two outputs (rows r and r + 1, one token), so each lane still runs the
 * scalar kernel's s[k] = fmaf(w, y, s[k]) of its output: the same bits as
 * the 8-lane tiles, twice as many per instruction. */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,f16c,fma")))
/* rows r and r + 1, columns i..i+7, as one register [row r | row r + 1] */
AVX512 static INLINE __m512 load8x2_w(apr_dtype t, const uint8_t *w0, const uint8_t *w1, int64_t i)
{
    if (t == APR_DT_F32)
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps((const float *)w0 + i)),
                                  _mm256_loadu_ps((const float *)w1 + i), 1);
    const __m256i h = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)((const uint16_t *)w0 + i))),
        _mm_loadu_si128((const __m128i *)((const uint16_t *)w1 + i)), 1);
    if (t == APR_DT_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

#define STEP512(T)                                                           \
    do {                                                                     \
        const __m512 yv_ = _mm512_broadcast_f32x8(_mm256_loadu_ps(y##T + i)); \
        a0##T = _mm512_fmadd_ps(w01, yv_, a0##T);                        \
        a1##T = _mm512_fmadd_ps(w23, yv_, a1##T);                        \
        a2##T = _mm512_fmadd_ps(w45, yv_, a2##T);                        \
        a3##T = _mm512_fmadd_ps(w67, yv_, a3##T);                        \
    } while (0)
#define LD2(P, T) _mm512_insertf32x8(_mm512_castps256_ps512(acc[(2 * P) * ACC_T + T]), acc[(2 * P + 1) * ACC_T + T], 1)
#define ST2(P, T, V)                                                         \
    do {                                                                     \
        acc[(2 * P) * ACC_T + T] = _mm512_castps512_ps256(V);               \
        acc[(2 * P + 1) * ACC_T + T] = _mm512_extractf32x8_ps(V, 1);        \
    } while (0)
/* All 8 rows of a group x 4 tokens: 16 registers of sums, kept in acc
 * (the 8-lane layout) between column chunks. */
AVX512 static void tile_float_8x4_512(apr_dtype dt, const uint8_t *const *w, int64_t k0, int64_t k1,
                                             const void *act, size_t as, __m256 *acc)
{
    const float *y0 = ACT(float, act, as, 0), *y1 = ACT(float, act, as, 1);
    const float *y2 = ACT(float, act, as, 2), *y3 = ACT(float, act, as, 3);
    __m512 a00 = LD2(0, 0), a01 = LD2(0, 1), a02 = LD2(0, 2), a03 = LD2(0, 3);
    __m512 a10 = LD2(1, 0), a11 = LD2(1, 1), a12 = LD2(1, 2), a13 = LD2(1, 3);
    __m512 a20 = LD2(2, 0), a21 = LD2(2, 1), a22 = LD2(2, 2), a23 = LD2(2, 3);
    __m512 a30 = LD2(3, 0), a31 = LD2(3, 1), a32 = LD2(3, 2), a33 = LD2(3, 3);
    for (int64_t i = k0; i < k1; i += 8) {
        const __m512 w01 = load8x2_w(dt, w[0], w[1], i), w23 = load8x2_w(dt, w[2], w[3], i);
        const __m512 w45 = load8x2_w(dt, w[4], w[5], i), w67 = load8x2_w(dt, w[6], w[7], i);
        STEP512(0);
        STEP512(1);
        STEP512(2);
        STEP512(3);
    }
    ST2(0, 0, a00); ST2(0, 1, a01); ST2(0, 2, a02); ST2(0, 3, a03);
    ST2(1, 0, a10); ST2(1, 1, a11); ST2(1, 2, a12); ST2(1, 3, a13);
    ST2(2, 0, a20); ST2(2, 1, a21); ST2(2, 2, a22); ST2(2, 3, a23);
    ST2(3, 0, a30); ST2(3, 1, a31); ST2(3, 2, a32); ST2(3, 3, a33);
}

/* Columns per chunk: the chunk of 64 tokens' f32 activations (64 KiB)
 * stays in L2 while the rows pass over it: all APRQ_FLOAT_ROWS rows (four
 * groups) of a call, so a wide matrix's activations (64 tokens x 18944
 * columns are 4.8 MiB, more than L2) come from L3 once per four groups
 * rather than once per group. */
#define FLOAT_KC 256

/* ---------------------------------------------------------------- F16 / BF16 packs, AVX-512
 * The same per-lane operations as tile_float_8x4_512 (each output's
 * s[k] = fmaf(w, y, s[k]) in column order), the weights read from the
 * pack (gemm.c, pack_h16_step) with one instruction per register instead of
 * two loads, an insert and a widening, and up to H16_T tokens per tile so
 * that each weight register feeds more FMAs. acc[pr * ACC_T + t]: pair
 * register pr (rows 2pr, 2pr + 1 of the call) of token t. */
#define H16_T 6
AVX512 static INLINE void h16_weights(apr_dtype dt, const uint8_t *st, __m512 w[4])
{
    if (dt == APR_DT_F16) {
        for (int p = 0; p < 4; p++)
            w[p] = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(st + 32 * p)));
        return;
    }
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    for (int h = 0; h < 2; h++) {
        const __m512i v = _mm512_load_si512((const void *)(st + 64 * h));
        w[2 * h] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        w[2 * h + 1] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
    }
}

/* One group's 4 pair registers x T tokens over 8-column steps [s0, s1). */
AVX512 static INLINE void tile_h16_512(apr_dtype dt, const uint8_t *gd, int64_t s0, int64_t s1, const void *act,
                                       size_t as, int T, __m512 *acc)
{
    __m512 a[4][H16_T];
    const float *y[H16_T];
    for (int t = 0; t < T; t++) {
        y[t] = ACT(float, act, as, t);
        for (int p = 0; p < 4; p++)
            a[p][t] = acc[p * ACC_T + t];
    }
    for (int64_t s = s0; s < s1; s++) {
        __m512 w[4];
        h16_weights(dt, gd + (size_t)s * APRQ_H16_STEP_BYTES, w);
        for (int t = 0; t < T; t++) {
            const __m512 yv = _mm512_broadcast_f32x8(_mm256_loadu_ps(y[t] + 8 * s));
            for (int p = 0; p < 4; p++)
                a[p][t] = _mm512_fmadd_ps(w[p], yv, a[p][t]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int p = 0; p < 4; p++)
            acc[p * ACC_T + t] = a[p][t];
}

/* Tokens [0, ntb) of one group in tiles of H16_T (T a constant in each
 * call, so the tile's sums stay in registers). */
AVX512 static INLINE void tiles_h16_512(apr_dtype dt, const uint8_t *gd, int64_t s0, int64_t s1, const void *act,
                                        size_t as, uint32_t ntb, __m512 *acc)
{
    for (uint32_t t0 = 0; t0 < ntb; t0 += H16_T) {
        const void *a = (const uint8_t *)act + (size_t)t0 * as;
        __m512 *ac = acc + t0;
        switch (ntb - t0 >= H16_T ? H16_T : (int)(ntb - t0)) {
        case 6: tile_h16_512(dt, gd, s0, s1, a, as, 6, ac); break;
        case 5: tile_h16_512(dt, gd, s0, s1, a, as, 5, ac); break;
        case 4: tile_h16_512(dt, gd, s0, s1, a, as, 4, ac); break;
        case 3: tile_h16_512(dt, gd, s0, s1, a, as, 3, ac); break;
        case 2: tile_h16_512(dt, gd, s0, s1, a, as, 2, ac); break;
        default: tile_h16_512(dt, gd, s0, s1, a, as, 1, ac); break;
        }
    }
}

/* Groups g.. of the pack (nr rows, <= APRQ_FLOAT_ROWS) against nt tokens:
 * group_float's schedule (64-token blocks, column chunks shared by the
 * call's groups), its reduction and its tail. */
AVX512 static void group_h16_512(const apr_wpack *p, uint64_t g, int nr, const void *act, size_t as, uint32_t nt,
                                 float *out, size_t ldo)
{
    enum { NPR = APRQ_FLOAT_ROWS / 2 };
    __m512 acc[NPR * ACC_T]; /* 64 KiB */
    const apr_dtype dt = p->dtype;
    const uint8_t *const *rows = p->row + g * APR_WPACK_ROWS;
    const int64_t n = (int64_t)p->cols, n8 = n / 8 * 8;
    const int ng = (nr + APR_WPACK_ROWS - 1) / APR_WPACK_ROWS;
    for (uint32_t tb = 0; tb < nt; tb += ACC_T) {
        const uint32_t ntb = nt - tb < ACC_T ? nt - tb : ACC_T;
        const void *actb = (const uint8_t *)act + (size_t)tb * as;
        for (int pr = 0; pr < 4 * ng; pr++)
            for (uint32_t t = 0; t < ntb; t++)
                acc[pr * ACC_T + t] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < n8; k0 += FLOAT_KC) {
            const int64_t k1 = k0 + FLOAT_KC < n8 ? k0 + FLOAT_KC : n8;
            for (int q = 0; q < ng; q++) {
                const uint8_t *gd = p->data + (g + (uint64_t)q) * p->group_bytes;
                if (dt == APR_DT_F16)
                    tiles_h16_512(APR_DT_F16, gd, k0 / 8, k1 / 8, actb, as, ntb, &acc[4 * q * ACC_T]);
                else
                    tiles_h16_512(APR_DT_BF16, gd, k0 / 8, k1 / 8, actb, as, ntb, &acc[4 * q * ACC_T]);
            }
        }
        /* dot.c's reduce8 of each output's half register, then the tail */
        for (int r = 0; r < nr; r++)
            for (uint32_t t = 0; t < ntb; t++) {
                const float *yt = ACT(float, actb, as, t);
                const __m512 v = acc[(r / 2) * ACC_T + t];
                float s = reduce8(r % 2 ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v));
                for (int64_t k = n8; k < n; k++)
                    s = fmaf(load1_w(dt, rows[r], k), yt[k], s);
                out[(size_t)(tb + t) * ldo + r] = s;
            }
    }
}

AVX2 static INLINE void group_float(apr_dtype dt, const uint8_t *const *rows, int nr, int64_t n, const void *act,
                                    size_t as, uint32_t nt, float *out, size_t ldo)
{
    __m256 acc[APRQ_FLOAT_ROWS * ACC_T]; /* 64 KiB */
    const int64_t n8 = n / 8 * 8;
    const bool avx512 = aprq_cpu_avx512();
    for (uint32_t tb = 0; tb < nt; tb += ACC_T) {
        const uint32_t ntb = nt - tb < ACC_T ? nt - tb : ACC_T;
        const void *actb = (const uint8_t *)act + (size_t)tb * as;
        for (int r = 0; r < nr; r++)
            for (uint32_t t = 0; t < ntb; t++)
                acc[r * ACC_T + t] = _mm256_setzero_ps();
        for (int64_t k0 = 0; k0 < n8; k0 += FLOAT_KC) {
            const int64_t k1 = k0 + FLOAT_KC < n8 ? k0 + FLOAT_KC : n8;
            for (int rg = 0; rg < nr; rg += APR_WPACK_ROWS) {
                for (uint32_t t0 = 0; t0 < ntb; t0 += TILE_T) {
                    const void *a = (const uint8_t *)actb + (size_t)t0 * as;
                    const int T = ntb - t0 >= TILE_T ? TILE_T : (int)(ntb - t0);
                    const int rend = nr - rg < APR_WPACK_ROWS ? nr : rg + APR_WPACK_ROWS;
                    if (avx512 && T == 4 && rend - rg == 8) {
                        tile_float_8x4_512(dt, rows + rg, k0, k1, a, as, &acc[rg * ACC_T + t0]);
                        continue;
                    }
                    for (int r = rg; r < rend; r += 2) {
                        __m256 *ac = &acc[r * ACC_T + t0];
                        const int R = rend - r >= 2 ? 2 : 1;
#define FT(RR, TT) tile_float(dt, rows + r, RR, k0, k1, a, as, TT, ac)
                        if (R == 2) {
                            switch (T) {
                            case 4: tile_float_2x4(dt, rows + r, k0, k1, a, as, ac); break;
                            case 3: FT(2, 3); break;
                            case 2: FT(2, 2); break;
                            default: FT(2, 1); break;
                            }
                        } else {
                            switch (T) {
                            case 4: FT(1, 4); break;
                            case 3: FT(1, 3); break;
                            case 2: FT(1, 2); break;
                            default: FT(1, 1); break;
                            }
                        }
#undef FT
                    }
                }
            }
        }
        /* dot.c's reduce8, then the tail one by one */
        for (int r = 0; r < nr; r++)
            for (uint32_t t = 0; t < ntb; t++) {
                const float *y = ACT(float, actb, as, t);
                float s = reduce8(acc[r * ACC_T + t]);
                for (int64_t k = n8; k < n; k++)
                    s = fmaf(load1_w(dt, rows[r], k), y[k], s);
                out[(size_t)(tb + t) * ldo + r] = s;
            }
    }
}

AVX2 static void group_f32(const uint8_t *const *rows, int nr, int64_t n, const void *act, size_t as, uint32_t nt,
                           float *out, size_t ldo)
{
    group_float(APR_DT_F32, rows, nr, n, act, as, nt, out, ldo);
}

AVX2 static void group_f16(const uint8_t *const *rows, int nr, int64_t n, const void *act, size_t as, uint32_t nt,
                           float *out, size_t ldo)
{
    group_float(APR_DT_F16, rows, nr, n, act, as, nt, out, ldo);
}

AVX2 static void group_bf16(const uint8_t *const *rows, int nr, int64_t n, const void *act, size_t as, uint32_t nt,
                            float *out, size_t ldo)
{
    group_float(APR_DT_BF16, rows, nr, n, act, as, nt, out, ldo);
}


static bool is_q8_family(apr_dtype t)
{
    return t == APR_DT_Q8_0 || t == APR_DT_Q4_0 || t == APR_DT_Q5_0;
}

/* One call's rows g*8 .. g*8+nr-1: nr <= APR_WPACK_ROWS for the block types
 * (2 * APR_WPACK_ROWS for Q4_K, Q6_K and the grp_q8_0 types: groups g and
 * g + 1),
 * <= APRQ_FLOAT_ROWS for the float types. */
static void wpack_group_avx2(const apr_wpack *p, uint64_t g, int nr, const void *act, size_t as,
                             const aprq_q8_aux *aux, uint32_t nt, float *out, size_t ldo)
{
    const bool is_float = p->dtype == APR_DT_F32 || p->dtype == APR_DT_F16 || p->dtype == APR_DT_BF16;
    if (is_float && p->data && aprq_cpu_avx512()) {
        group_h16_512(p, g, nr, act, as, nt, out, ldo);
        return;
    }
    if (!is_float) {
        const int vnni = aprq_cpu_vnni();
        if (nr > APR_WPACK_ROWS && vnni == APRQ_VNNI_512 && p->dtype == APR_DT_Q6_K) {
            group2_q6_k_vnni512(p, g, nr, act, as, nt, out, ldo);
            return;
        }
        if (nr > APR_WPACK_ROWS && vnni == APRQ_VNNI_512 && p->dtype == APR_DT_Q4_K) {
            group2_q4_k_vnni512(p, g, nr, act, as, nt, out, ldo);
            return;
        }
        if (nr > APR_WPACK_ROWS && vnni == APRQ_VNNI_512 && is_q8_family(p->dtype)) {
            group2_q8_0_vnni512(p, g, nr, act, as, aux, nt, out, ldo);
            return;
        }
        /* one group at a time */
        for (int r = 0; r < nr; r += APR_WPACK_ROWS, g++) {
            const int n8 = nr - r < APR_WPACK_ROWS ? nr - r : APR_WPACK_ROWS;
            switch (vnni) {
            case APRQ_VNNI_512: group_blocks_vnni512(p, g, n8, act, as, aux, nt, out + r, ldo); break;
            case APRQ_VNNI_AVX: group_blocks_avxvnni(p, g, n8, act, as, aux, nt, out + r, ldo); break;
            default: group_blocks_avx2(p, g, n8, act, as, aux, nt, out + r, ldo); break;
            }
        }
        return;
    }
    const uint8_t *const *rows = p->row + g * APR_WPACK_ROWS;
    const int64_t n = (int64_t)p->cols;
    switch (p->dtype) {
    case APR_DT_F32: group_f32(rows, nr, n, act, as, nt, out, ldo); break;
    case APR_DT_F16: group_f16(rows, nr, n, act, as, nt, out, ldo); break;
    case APR_DT_BF16: group_bf16(rows, nr, n, act, as, nt, out, ldo); break;
    default: break;
    }
}

bool aprq_wpack_rows_avx2(const apr_wpack *p, uint64_t r0, uint64_t r1, const void *act, size_t as, uint32_t nt,
                          float *out, size_t ldo)
{
    const apr_dtype dt = p->dtype;
    const bool is_float = dt == APR_DT_F32 || dt == APR_DT_F16 || dt == APR_DT_BF16;
    aprq_q8_aux *aux = NULL;
    if (is_q8_family(dt) && nt) {
        const int64_t nb = (int64_t)p->cols / 32;
        aux = malloc((size_t)nt * (size_t)nb * sizeof *aux);
        if (!aux)
            return false;
        make_q8_aux(act, as, nt, nb, aux);
    }
    /* rows per call: four groups for the float kernels, two for Q4_K, Q6_K
     * and the grp_q8_0 types (their AVX-512 tiles span two groups), else one */
    const bool two = dt == APR_DT_Q4_K || dt == APR_DT_Q6_K || is_q8_family(dt);
    const uint64_t step = is_float ? APRQ_FLOAT_ROWS : two ? 2 * APR_WPACK_ROWS : APR_WPACK_ROWS;
    for (uint64_t r = r0; r < r1; r += step) {
        const int nr = r1 - r < step ? (int)(r1 - r) : (int)step;
        wpack_group_avx2(p, r / APR_WPACK_ROWS, nr, act, as, aux, nt, out + r, ldo);
    }
    free(aux);
    return true;
}
#else
bool aprq_wpack_rows_avx2(const apr_wpack *p, uint64_t r0, uint64_t r1, const void *act, size_t as, uint32_t nt,
                          float *out, size_t ldo)
{
    (void)p; (void)r0; (void)r1; (void)act; (void)as; (void)nt; (void)out; (void)ldo;
    return false;
}
#endif
