/* dot_internal.h - kernels selected at run time (not a public header). */
#ifndef APR_DOT_INTERNAL_H
#define APR_DOT_INTERNAL_H

#include "quant.h"

/* Unpack the 8 6-bit scales and mins of a Q4_K/Q5_K block. */
void aprq_k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]);

/* AVX2 dot product; returns false when t has no AVX2 kernel (the caller
 * then uses the scalar one). Only call when aprq_cpu_avx2() is true. */
bool aprq_vec_dot_avx2(apr_dtype t, int64_t n, const void *w, const void *y, float *out);

/* The same for four activation rows y, y + ys, y + 2 ys, y + 3 ys (ys in
 * bytes): out[k] equals aprq_vec_dot_avx2's result for row k bit for bit. */
bool aprq_vec_dot4_avx2(apr_dtype t, int64_t n, const void *w, const void *y, size_t ys, float out[4]);

#endif
