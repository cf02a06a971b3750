/* namemap.c - the LLaMA Q/K row permutation of convert_hf_to_gguf.py (the
 * tensor names in GGUF and HF/APR naming are the family table's:
 * formats/core/family.c). */
#include "convert.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- Q/K permutation */

uint64_t apr_qk_perm_src_row(uint64_t r, uint64_t hd, bool inverse)
{
    uint64_t h = r / hd, k = r % hd, half = hd / 2;
    if (!inverse) {
        /* interleaved row k = 2i + j comes from rotate-half row j*half + i */
        uint64_t i = k / 2, j = k % 2;
        return h * hd + j * half + i;
    }
    /* rotate-half row k = j*half + i comes from interleaved row 2i + j */
    uint64_t j = k / half, i = k % half;
    return h * hd + 2 * i + j;
}

bool apr_qk_permute(uint8_t *dst, const uint8_t *src, uint64_t n_heads, uint64_t hd, uint64_t row_bytes,
                    bool inverse)
{
    if (hd == 0 || hd % 2)
        return false;
    uint64_t rows = n_heads * hd;
    for (uint64_t r = 0; r < rows; r++)
        memcpy(dst + r * row_bytes, src + apr_qk_perm_src_row(r, hd, inverse) * row_bytes, (size_t)row_bytes);
    return true;
}
