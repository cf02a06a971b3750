/* attn.c - tiled attention with an online softmax (see attn.h). */
#include "attn.h"

#include <math.h>
#include <string.h>

#include "quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ATTN_AVX2 1
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define ATTN_AVX2 0
#endif

/* The element-wise loops are compiled twice (AVX2 and baseline) and chosen
 * at load time; lane-wise multiplies and adds (never fused:
 * -ffp-contract=off) give the same bits at any vector width. Not under
 * ThreadSanitizer: the clones' ifunc resolver runs while the dynamic loader
 * relocates apr, before TSan's runtime is up, and gcc instruments it, so the
 * binary crashes before main (the loops are thread-local either way). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif

uint64_t apr_attn_items(const apr_attn_shape *s, uint32_t nt)
{
    return (uint64_t)s->n_kv_heads * ((nt + APR_ATTN_QB - 1) / APR_ATTN_QB);
}

static uint32_t group_of(const apr_attn_shape *s)
{
    return s->n_heads / s->n_kv_heads;
}

size_t apr_attn_scratch_floats(const apr_attn_shape *s)
{
    const size_t rows = (size_t)APR_ATTN_QB * group_of(s);
    return rows * (2 + s->head_dim + APR_ATTN_KT); /* max, sum, accumulator, tile scores */
}

/* The score of q.k = dot: scaled, then capped. */
static float score_of(const apr_attn_shape *s, float dot)
{
    float x = dot * s->scale;
    if (s->softcap > 0.0f)
        x = s->softcap * tanhf(x / s->softcap);
    return x;
}

/* Score of query q against key k: libquant's F32 dot (a fixed tree of
 * eight partial sums, the same bits on every CPU), scaled, then capped. */
static float score(const apr_attn_shape *s, const float *q, const float *k)
{
    return score_of(s, apr_vec_dot(APR_DT_F32, (int64_t)s->head_dim, q, k));
}

/* First position query position qp may see. */
static uint32_t first_visible(const apr_attn_shape *s, uint32_t qp)
{
    return s->window && qp + 1 > s->window ? qp + 1 - s->window : 0;
}

VEC_CLONES static void scale_vec(float *a, float f, uint32_t n)
{
    for (uint32_t d = 0; d < n; d++)
        a[d] *= f;
}

/* acc += p[j] * v_j for the tile's keys, key by key. */
VEC_CLONES static void add_weighted(float *acc, const float *p, const float *v, uint64_t vstride, uint32_t nk,
                                    uint32_t n)
{
    for (uint32_t j = 0; j < nk; j++) {
        const float w = p[j], *vj = v + (uint64_t)j * vstride;
        for (uint32_t d = 0; d < n; d++)
            acc[d] += w * vj[d];
    }
}

#if ATTN_AVX2
/* ---------------------------------------------------------------- AVX2 kernels
 * The same operations per value as the loops above, more of them per pass:
 * they give the same bits (test_attn compares them with APR_NO_SIMD's). */

/* libquant's dot_f32 tree (dot.c reduce8). */
AVX2 static inline float reduce8(__m256 v)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

/* Scores of q against keys k_j = k + j * stride, j < nk: eight keys per
 * pass share each load of q; each key's dot is apr_vec_dot's (eight
 * partial sums s[i] = fmaf(q, k, s[i]), reduce8, the tail one by one). */
AVX2 static void scores_avx2(const apr_attn_shape *s, const float *q, const float *k, uint64_t stride, uint32_t nk,
                             float *p)
{
    const uint32_t hd = s->head_dim, h8 = hd / 8 * 8;
    uint32_t j = 0;
    for (; j + 8 <= nk; j += 8) {
        const float *kj = k + (uint64_t)j * stride;
        __m256 a[8];
        for (int e = 0; e < 8; e++)
            a[e] = _mm256_setzero_ps();
        for (uint32_t d = 0; d < h8; d += 8) {
            const __m256 qv = _mm256_loadu_ps(q + d);
            for (int e = 0; e < 8; e++)
                a[e] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + (uint64_t)e * stride + d), a[e]);
        }
        for (int e = 0; e < 8; e++) {
            float r = reduce8(a[e]);
            for (uint32_t d = h8; d < hd; d++)
                r = fmaf(q[d], kj[(uint64_t)e * stride + d], r);
            p[j + (uint32_t)e] = score_of(s, r);
        }
    }
    for (; j < nk; j++)
        p[j] = score(s, q, k + (uint64_t)j * stride);
}

/* add_weighted with the accumulator in registers through all nk keys
 * (64 columns at a time): per column the same products and sums, key by
 * key, separately rounded (no FMA). */
AVX2 static void add_weighted_avx2(float *acc, const float *p, const float *v, uint64_t vstride, uint32_t nk,
                                   uint32_t n)
{
    uint32_t d0 = 0;
    for (; d0 + 64 <= n; d0 += 64) {
        __m256 a[8];
        for (int e = 0; e < 8; e++)
            a[e] = _mm256_loadu_ps(acc + d0 + 8 * e);
        for (uint32_t j = 0; j < nk; j++) {
            const __m256 w = _mm256_set1_ps(p[j]);
            const float *vj = v + (uint64_t)j * vstride + d0;
            for (int e = 0; e < 8; e++)
                a[e] = _mm256_add_ps(a[e], _mm256_mul_ps(w, _mm256_loadu_ps(vj + 8 * e)));
        }
        for (int e = 0; e < 8; e++)
            _mm256_storeu_ps(acc + d0 + 8 * e, a[e]);
    }
    for (; d0 + 8 <= n; d0 += 8) {
        __m256 a = _mm256_loadu_ps(acc + d0);
        for (uint32_t j = 0; j < nk; j++)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + (uint64_t)j * vstride + d0)));
        _mm256_storeu_ps(acc + d0, a);
    }
    for (; d0 < n; d0++)
        for (uint32_t j = 0; j < nk; j++)
            acc[d0] += p[j] * v[(uint64_t)j * vstride + d0];
}
#endif

/* The AVX2 kernels when libquant runs its own (APR_NO_SIMD=1 or
 * apr_quant_force_scalar turn both off). */
static bool attn_simd(void)
{
#if ATTN_AVX2
    return strcmp(apr_quant_simd_name(), "avx2") == 0;
#else
    return false;
#endif
}

/* One query row through keys [lo, hi) of a tile: scores, the online
 * softmax update of (max m, sum l), rescale and accumulate. */
static void row_tile(const apr_attn_shape *s, const float *q, const float *k, const float *v, uint32_t lo,
                     uint32_t hi, float *m, float *l, float *acc, float *p, bool simd)
{
    const uint32_t hd = s->head_dim, nk = hi - lo;
    float tmax = -INFINITY;
#if ATTN_AVX2
    if (simd)
        scores_avx2(s, q, k + (uint64_t)lo * s->kv_stride, s->kv_stride, nk, p);
    else
#endif
        for (uint32_t j = 0; j < nk; j++)
            p[j] = score(s, q, k + (uint64_t)(lo + j) * s->kv_stride);
    for (uint32_t j = 0; j < nk; j++)
        if (p[j] > tmax)
            tmax = p[j];
    const float mnew = tmax > *m ? tmax : *m;
    float sum = 0.0f;
    for (uint32_t j = 0; j < nk; j++) {
        p[j] = expf(p[j] - mnew);
        sum += p[j];
    }
    if (*m != -INFINITY) { /* rows start at l = 0, acc = 0: nothing to rescale */
        const float alpha = expf(*m - mnew);
        *l *= alpha;
        scale_vec(acc, alpha, hd);
    }
    *l += sum;
    *m = mnew;
#if ATTN_AVX2
    if (simd) {
        add_weighted_avx2(acc, p, v + (uint64_t)lo * s->kv_stride, s->kv_stride, nk, hd);
        return;
    }
#else
    (void)simd;
#endif
    add_weighted(acc, p, v + (uint64_t)lo * s->kv_stride, s->kv_stride, nk, hd);
}

void apr_attn_item(const apr_attn_shape *s, const float *q, const float *k, const float *v, float *out, uint32_t nt,
                   uint32_t pos0, uint64_t item, float *scratch)
{
    const uint32_t G = group_of(s), hd = s->head_dim;
    const uint32_t kh = (uint32_t)(item % s->n_kv_heads), qb = (uint32_t)(item / s->n_kv_heads);
    const uint32_t t0 = qb * APR_ATTN_QB, t1 = t0 + APR_ATTN_QB < nt ? t0 + APR_ATTN_QB : nt;
    const uint32_t rows = (t1 - t0) * G;
    float *m = scratch, *l = m + rows, *acc = l + rows, *p = acc + (size_t)rows * hd;
    for (uint32_t r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (uint32_t d = 0; d < hd; d++)
            acc[(size_t)r * hd + d] = 0.0f;
    }
    const float *kk = k + (uint64_t)kh * hd, *vv = v + (uint64_t)kh * hd;
    const uint32_t last = pos0 + t1 - 1;
    const uint32_t first = first_visible(s, pos0 + t0) / APR_ATTN_KT * APR_ATTN_KT;
    const bool simd = attn_simd();
    /* row r: query t0 + r / G, head kh * G + r % G (the heads of one token
     * next to each other, so a key is reused while in L1) */
    for (uint32_t p0 = first; p0 <= last; p0 += APR_ATTN_KT) {
        for (uint32_t r = 0; r < rows; r++) {
            const uint32_t t = t0 + r / G, h = kh * G + r % G, qp = pos0 + t;
            const uint32_t vis = first_visible(s, qp);
            const uint32_t lo = vis > p0 ? vis : p0;
            const uint32_t hi = p0 + APR_ATTN_KT < qp + 1 ? p0 + APR_ATTN_KT : qp + 1;
            if (lo >= hi)
                continue;
            row_tile(s, q + (uint64_t)t * s->q_stride + (uint64_t)h * hd, kk, vv, lo, hi, &m[r], &l[r],
                     acc + (size_t)r * hd, p + (size_t)r * APR_ATTN_KT, simd);
        }
    }
    for (uint32_t r = 0; r < rows; r++) {
        const uint32_t t = t0 + r / G, h = kh * G + r % G;
        const float inv = 1.0f / l[r];
        float *o = out + (uint64_t)t * s->q_stride + (uint64_t)h * hd;
        for (uint32_t d = 0; d < hd; d++)
            o[d] = acc[(size_t)r * hd + d] * inv;
    }
}

void apr_attn_reference(const apr_attn_shape *s, const float *q, const float *k, const float *v, float *out,
                        uint32_t pos0, uint32_t t, uint32_t h, float *sc)
{
    const uint32_t hd = s->head_dim, kh = h / group_of(s), qp = pos0 + t;
    const uint32_t p0 = first_visible(s, qp);
    const float *qr = q + (uint64_t)t * s->q_stride + (uint64_t)h * hd;
    float mx = -INFINITY;
    for (uint32_t p = p0; p <= qp; p++) {
        sc[p] = score(s, qr, k + (uint64_t)p * s->kv_stride + (uint64_t)kh * hd);
        if (sc[p] > mx)
            mx = sc[p];
    }
    double sum = 0.0;
    for (uint32_t p = p0; p <= qp; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += (double)sc[p];
    }
    const float inv = (float)(1.0 / sum);
    float *o = out + (uint64_t)t * s->q_stride + (uint64_t)h * hd;
    for (uint32_t d = 0; d < hd; d++)
        o[d] = 0.0f;
    for (uint32_t p = p0; p <= qp; p++) {
        const float a = sc[p] * inv;
        const float *vr = v + (uint64_t)p * s->kv_stride + (uint64_t)kh * hd;
        for (uint32_t d = 0; d < hd; d++)
            o[d] += a * vr[d];
    }
}
