/* quant_simd.h - AVX2 helpers shared by the fast quantizers (quant_fast.c,
 * quant_iq4_fast.c) and the row scans of f16_avx2.c. Every helper is exact:
 * lane for lane the result of the scalar expression it replaces in
 * quant_ref.c / quant_iq4.c. */
#ifndef APR_QUANT_SIMD_H
#define APR_QUANT_SIMD_H
#if defined(__x86_64__)

#include "quant_internal.h"

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))

/* No Inf/NaN among x[0..n): exponent bits not all ones, 8 at a time. Blocks
 * that fail it go through the scalar code (vector min/max and the scalar
 * comparisons may pick different NaNs). */
AVX2 static inline bool all_finite(const float *x, int64_t n)
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(u, e), e));
    }
    if (!_mm256_testz_si256(bad, bad))
        return false;
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return false;
    }
    return true;
}

AVX2 static inline __m256 v_sel(__m256 a, __m256 b, __m256 mask) /* mask ? b : a */
{
    return _mm256_blendv_ps(a, b, mask);
}

AVX2 static inline __m256 v_abs(__m256 x)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

#endif
#endif
