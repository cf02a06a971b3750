/* gemm_internal.h - the interleaved group layouts of apr_wpack (gemm.c packs
 * them, gemm_avx2.c reads them). A group is APR_WPACK_ROWS = 8 rows; for each
 * source block index i the group holds one struct below, and within it a
 * 32-byte "chunk" c holds four consecutive quants of each of the 8 rows (row
 * r at bytes 4r..4r+3), so that one maddubs against four broadcast
 * activation bytes gives every row's partial sum in its own int32 lane. */
#ifndef APR_GEMM_INTERNAL_H
#define APR_GEMM_INTERNAL_H

#include "quant_internal.h"

/* Q8_0: qs[c][4r + e] = row r's qs[4c + e] + 128, as an unsigned byte:
 * vpdpbusd takes it as its unsigned operand and the signed activations
 * as the other, and sum (w + 128) a - 128 sum a = sum w a exactly (int32,
 * |sum| <= 32 * 255 * 128), so no vpsignb is needed to make one operand
 * unsigned. The per-block -128 sum a comes with the activations
 * (aprq_q8_aux); the AVX2 maddubs tile, whose int16 pairs could not hold
 * 255 * 127 * 2, flips the bias back (xor 0x80) and signs as before. */
typedef struct {
    float d[8];
    uint8_t qs[8][32];
} grp_q8_0;

/* Q4_0 and Q5_0 are packed as grp_q8_0 too: their levels minus the
 * offset (q - 8, q - 16), plus 128, and their scalar dot has Q8_0's
 * form (sumf += sumi * (dx * dy)), so the Q8_0 kernel gives their bits. */

/* What the grp_q8_0 tiles need of activation block i of token t, made once
 * per apr_wpack_gemm call (not once per group): its scale as f32
 * (apr_f16_to_f32 of d, the scalar's dy) and -128 times the sum of its 32
 * quants (the bias correction above). aux[t * nb + i]. */
typedef struct {
    float dy;
    int32_t corr;
} aprq_q8_aux;

/* Q4_1 / Q5_1: d, m and the unsigned levels (0..15 / 0..31), qs laid out
 * as grp_q8_0's. Scalar: sumf += sumi * (d dy) + sumy * (m dy). */
typedef struct {
    float d[8], m[8];
    uint8_t qs[8][32];
} grp_q4_1;

/* Q4_K: the 6-bit scales and mins unpacked (sc[j][r]: sub-block j of row r);
 * qs[jj][c][4r + e] = row r's qs[32 jj + 4c + e], whose low nibble is element
 * 64 jj + 4c + e (sub-block 2 jj) and high nibble element 64 jj + 32 + 4c + e
 * (sub-block 2 jj + 1), as in the source block. */
typedef struct {
    float d[8], dmin[8];
    uint8_t sc[8][8], mn[8][8];
    uint8_t qs[4][8][32];
} grp_q4_k;

/* Q6_K: the 6-bit levels (0..63, i.e. q + 32) of element 4c + e of row r in
 * q[c][4r + e]; sc[k][r] the scale of 16-element sub-block k. */
typedef struct {
    float d[8];
    int8_t sc[16][8];
    uint8_t q[64][32];
} grp_q6_k;

/* Q5_K: Q4_K's scales and mins, and the 5-bit levels (0..31) whole, one
 * byte each as grp_q6_k's: q[c][4r + e] = level of element 4c + e of row
 * r. 45 % more bytes than the source block, but no fifth bit to merge in
 * the inner loop (that decode made Q5_K the slowest tile). */
typedef struct {
    float d[8], dmin[8];
    uint8_t sc[8][8], mn[8][8];
    uint8_t q[64][32];
} grp_q5_k;

/* Q2_K: the 4-bit scales and mins of the 16 sub-blocks split (sc[k][r],
 * mn[k][r]); qs[h][c][4r + e] = row r's qs[32 h + 4c + e], whose bits
 * 2s..2s+1 are element 128 h + 32 s + 4c + e (sub-block 8h + 2s + c / 4),
 * as in the source block. */
typedef struct {
    float d[8], dmin[8];
    uint8_t sc[16][8], mn[16][8];
    uint8_t qs[2][8][32];
} grp_q2_k;

/* Q3_K: the 6-bit scales decoded to -32..31 (sc[k][r]); the 3-bit levels
 * u = 2-bit field | high bit << 2 (0..7, the scalar's value + 4) as
 * nibbles laid out as grp_q4_k's qs: qs[jj][c][4r + e] low nibble = u of
 * element 64 jj + 4c + e, high nibble = u of element 64 jj + 32 + 4c + e
 * (35 % more bytes than the source block, decoded like Q4_K's). */
typedef struct {
    float d[8];
    int8_t sc[16][8];
    uint8_t qs[4][8][32];
} grp_q3_k;

/* F16/BF16 packs (gemm.c, pack_h16_step): bytes of one group's 8-column
 * step, 8 rows x 8 columns x 2 bytes. */
#define APRQ_H16_STEP_BYTES 128

/* Rows per call of the float kernels (four groups share each column chunk
 * of the activations; gemm_avx2.c's group_float). */
#define APRQ_FLOAT_ROWS (4 * APR_WPACK_ROWS)

/* Rows [r0, r1) of the pack (r0 a multiple of APR_WPACK_ROWS) against nt
 * activation rows: out[t * ldo + r]. Only called when aprq_cpu_avx2().
 * False (nothing written) when a scratch allocation failed: the caller then
 * runs the scalar dot, which gives the same values. */
bool aprq_wpack_rows_avx2(const apr_wpack *p, uint64_t r0, uint64_t r1, const void *act, size_t act_stride,
                          uint32_t nt, float *out, size_t ldo);

#endif
