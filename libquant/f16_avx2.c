/* f16_avx2.c - whole rows of F16 / BF16 to f32, and the finiteness scan the
 * quantizer runs on every row, 8 values at a time with AVX2 (chosen at run
 * time; the scalar loops of dequant.c otherwise).
 *
 * F16 is widened with integer operations (Fabian Giesen's half_to_float:
 * shift the exponent and mantissa into place, rebias, renormalise the
 * subnormals through one exact float subtraction) rather than F16C's
 * vcvtph2ps, because vcvtph2ps quiets signalling NaNs and apr_f16_to_f32
 * keeps their payload as it is: the two paths give the same bits for all
 * 65536 inputs (tests/test_quant_kernels.c checks every one). */
#include "quant_internal.h"

#if defined(__x86_64__)
#include "quant_simd.h" /* all_finite, the AVX2 target attribute */

AVX2 static inline __m256 f16x8_to_f32(__m128i h16)
{
    const __m256i h = _mm256_cvtepu16_epi32(h16);
    const __m256i shifted_exp = _mm256_set1_epi32(0x7c00 << 13);
    __m256i o = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)), 13);
    const __m256i exp = _mm256_and_si256(o, shifted_exp);
    o = _mm256_add_epi32(o, _mm256_set1_epi32((127 - 15) << 23));
    /* Inf/NaN: exponent all ones */
    const __m256i infnan = _mm256_cmpeq_epi32(exp, shifted_exp);
    o = _mm256_add_epi32(o, _mm256_and_si256(infnan, _mm256_set1_epi32((128 - 16) << 23)));
    /* zero and subnormals: one more exponent step, minus 2^-14, exact */
    const __m256i sub = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
    const __m256 magic = _mm256_castsi256_ps(_mm256_set1_epi32(113 << 23));
    const __m256 renorm =
        _mm256_sub_ps(_mm256_castsi256_ps(_mm256_add_epi32(o, _mm256_set1_epi32(1 << 23))), magic);
    o = _mm256_blendv_epi8(o, _mm256_castps_si256(renorm), sub);
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
    return _mm256_castsi256_ps(_mm256_or_si256(o, sign));
}

AVX2 static void f16_row(const uint8_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, f16x8_to_f32(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = apr_f16_to_f32(h);
    }
}

AVX2 static void bf16_row(const uint8_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 2 * i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(h, 16));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = apr_bf16_to_f32(h);
    }
}
#endif

bool aprq_f16_row_fast(const void *src, float *dst, int64_t n)
{
#if defined(__x86_64__)
    if (aprq_cpu_avx2()) {
        f16_row(src, dst, n);
        return true;
    }
#endif
    (void)src, (void)dst, (void)n;
    return false;
}

bool aprq_bf16_row_fast(const void *src, float *dst, int64_t n)
{
#if defined(__x86_64__)
    if (aprq_cpu_avx2()) {
        bf16_row(src, dst, n);
        return true;
    }
#endif
    (void)src, (void)dst, (void)n;
    return false;
}

bool apr_f32_all_finite(const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (aprq_cpu_avx2())
        return all_finite(x, n);
#endif
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return false;
    }
    return true;
}
