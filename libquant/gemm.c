/* gemm.c - packed weight matrices (see quant.h, apr_wpack) and the matmul
 * dispatcher. Packing only moves bytes and widens scales (f16 -> f32, 6-bit
 * -> 8-bit): no value changes, so the packed kernels can reproduce the
 * scalar dot products of the source rows exactly. */
#include <stdlib.h>

#include "gemm_internal.h"
#include "dot_internal.h"

static bool is_float_type(apr_dtype t)
{
    return t == APR_DT_F32 || t == APR_DT_F16 || t == APR_DT_BF16;
}

static int64_t block_elems(apr_dtype t)
{
    switch (t) {
    case APR_DT_Q2_K:
    case APR_DT_Q3_K:
    case APR_DT_Q4_K:
    case APR_DT_Q5_K:
    case APR_DT_Q6_K: return QK_K;
    default: return 32;
    }
}

static size_t group_block_bytes(apr_dtype t)
{
    switch (t) {
    case APR_DT_Q8_0:
    case APR_DT_Q4_0:
    case APR_DT_Q5_0: return sizeof(grp_q8_0);
    case APR_DT_Q4_1:
    case APR_DT_Q5_1: return sizeof(grp_q4_1);
    case APR_DT_Q2_K: return sizeof(grp_q2_k);
    case APR_DT_Q3_K: return sizeof(grp_q3_k);
    case APR_DT_Q4_K: return sizeof(grp_q4_k);
    case APR_DT_Q5_K: return sizeof(grp_q5_k);
    case APR_DT_Q6_K: return sizeof(grp_q6_k);
    default: return 0;
    }
}

bool apr_wpack_supported(apr_dtype t)
{
#if defined(__x86_64__)
    if (!aprq_cpu_avx2())
        return false;
    return is_float_type(t) || group_block_bytes(t) != 0;
#else
    (void)t;
    return false;
#endif
}

const char *apr_wpack_kernel_name(void)
{
    if (!aprq_cpu_avx2())
        return "scalar";
    static const char *const names[2][3] = {{"avx2", "avx2+avxvnni", "avx2+avx512vnni"},
                                            {"avx512", "avx512+avxvnni", "avx512+avx512vnni"}};
    return names[aprq_cpu_avx512()][aprq_cpu_vnni()];
}

/* ---------------------------------------------------------------- packers */

static void pack_q8_0(grp_q8_0 *g, const blk_q8_0 *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        for (int c = 0; c < 8; c++)
            for (int e = 0; e < 4; e++)
                g->qs[c][4 * r + e] = (uint8_t)((x[r] ? x[r]->qs[4 * c + e] : 0) + 128);
    }
}

/* Level j (0..31) of a 32-block with 4-bit quants: low nibbles are 0..15,
 * high nibbles 16..31; with qh the fifth bit of each (Q5_0/Q5_1). */
static int level32(const uint8_t *qs, const uint8_t *qh, int j)
{
    const int lo = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
    if (!qh)
        return lo;
    uint32_t h;
    memcpy(&h, qh, 4);
    return lo | (int)(((h >> j) & 1) << 4);
}

/* Q4_0 / Q5_0 into grp_q8_0: levels minus offset, plus 128 (grp_q8_0). */
static void pack_q4_0(grp_q8_0 *g, const blk_q4_0 *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        for (int j = 0; j < 32; j++)
            g->qs[j / 4][4 * r + j % 4] = (uint8_t)((x[r] ? level32(x[r]->qs, NULL, j) - 8 : 0) + 128);
    }
}

static void pack_q5_0(grp_q8_0 *g, const blk_q5_0 *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        for (int j = 0; j < 32; j++)
            g->qs[j / 4][4 * r + j % 4] = (uint8_t)((x[r] ? level32(x[r]->qs, x[r]->qh, j) - 16 : 0) + 128);
    }
}

static void pack_q4_1(grp_q4_1 *g, const blk_q4_1 *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        g->m[r] = x[r] ? apr_f16_to_f32(x[r]->m) : 0.0f;
        for (int j = 0; j < 32; j++)
            g->qs[j / 4][4 * r + j % 4] = x[r] ? (uint8_t)level32(x[r]->qs, NULL, j) : 0;
    }
}

static void pack_q5_1(grp_q4_1 *g, const blk_q5_1 *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        g->m[r] = x[r] ? apr_f16_to_f32(x[r]->m) : 0.0f;
        for (int j = 0; j < 32; j++)
            g->qs[j / 4][4 * r + j % 4] = x[r] ? (uint8_t)level32(x[r]->qs, x[r]->qh, j) : 0;
    }
}

/* Row r's d, dmin and unpacked 6-bit scales and mins of a Q4_K / Q5_K
 * block (the same header in both; zeros for a missing row). */
static void pack_k4_header(float d[8], float dmin[8], uint8_t sc8[8][8], uint8_t mn8[8][8], int r,
                           const uint8_t *scales, uint16_t hd, uint16_t hdmin)
{
    uint8_t sc[8] = {0}, mn[8] = {0};
    if (scales)
        aprq_k4_scales(scales, sc, mn);
    d[r] = scales ? apr_f16_to_f32(hd) : 0.0f;
    dmin[r] = scales ? apr_f16_to_f32(hdmin) : 0.0f;
    for (int j = 0; j < 8; j++) {
        sc8[j][r] = sc[j];
        mn8[j][r] = mn[j];
    }
}

static void pack_q4_k(grp_q4_k *g, const blk_q4_k *const x[8])
{
    for (int r = 0; r < 8; r++) {
        pack_k4_header(g->d, g->dmin, g->sc, g->mn, r, x[r] ? x[r]->scales : NULL, x[r] ? x[r]->d : 0,
                       x[r] ? x[r]->dmin : 0);
        for (int jj = 0; jj < 4; jj++)
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 4; e++)
                    g->qs[jj][c][4 * r + e] = x[r] ? x[r]->qs[32 * jj + 4 * c + e] : 0;
    }
}

/* The 5-bit level of element e (0..255) of a Q5_K block (dot.c's decode):
 * sub-block j = e / 32 is nibble half j & 1 of qs[32 (j / 2) + e % 32],
 * its fifth bit bit j of qh[e % 32]. */
static uint8_t q5k_level(const blk_q5_k *x, int e)
{
    const int j = e / 32, l = e % 32;
    const uint8_t q = x->qs[32 * (j / 2) + l];
    return (uint8_t)(((j & 1) ? q >> 4 : q & 0xF) | (((x->qh[l] >> j) & 1) << 4));
}

static void pack_q5_k(grp_q5_k *g, const blk_q5_k *const x[8])
{
    for (int r = 0; r < 8; r++) {
        pack_k4_header(g->d, g->dmin, g->sc, g->mn, r, x[r] ? x[r]->scales : NULL, x[r] ? x[r]->d : 0,
                       x[r] ? x[r]->dmin : 0);
        for (int c = 0; c < 64; c++)
            for (int e = 0; e < 4; e++)
                g->q[c][4 * r + e] = x[r] ? q5k_level(x[r], 4 * c + e) : 0;
    }
}

static void pack_q2_k(grp_q2_k *g, const blk_q2_k *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        g->dmin[r] = x[r] ? apr_f16_to_f32(x[r]->dmin) : 0.0f;
        for (int k = 0; k < 16; k++) {
            g->sc[k][r] = x[r] ? x[r]->scales[k] & 0xF : 0;
            g->mn[k][r] = x[r] ? x[r]->scales[k] >> 4 : 0;
        }
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 4; e++)
                    g->qs[h][c][4 * r + e] = x[r] ? x[r]->qs[32 * h + 4 * c + e] : 0;
    }
}

/* Scale k (0..15) of a Q3_K block, -32..31 (dot.c's decode). */
static int8_t q3_scale(const blk_q3_k *x, int k)
{
    const int lo = k < 8 ? x->scales[k] & 0xF : x->scales[k - 8] >> 4;
    const int hi = (x->scales[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (int8_t)((lo | (hi << 4)) - 32);
}

/* u = the scalar's level + 4 (0..7) of element e of a Q3_K block: e =
 * 128 h + 32 s + l has its 2-bit field at bits 2s of qs[32 h + l] and its
 * high bit at bit 4h + s of hmask[l] (dot.c's decode). */
static uint8_t q3k_level(const blk_q3_k *x, int e)
{
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    return (uint8_t)(((x->qs[32 * h + l] >> (2 * s)) & 3) | (((x->hmask[l] >> (4 * h + s)) & 1) << 2));
}

static void pack_q3_k(grp_q3_k *g, const blk_q3_k *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        for (int k = 0; k < 16; k++)
            g->sc[k][r] = x[r] ? q3_scale(x[r], k) : 0;
        for (int jj = 0; jj < 4; jj++)
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 4; e++) {
                    const int el = 64 * jj + 4 * c + e;
                    g->qs[jj][c][4 * r + e] =
                        x[r] ? (uint8_t)(q3k_level(x[r], el) | (q3k_level(x[r], el + 32) << 4)) : 0;
                }
    }
}

/* The 6-bit level of element e (0..255) of a Q6_K block (dot.c's decode). */
static uint8_t q6_level(const blk_q6_k *x, int e)
{
    const int h = e / 128, quarter = (e % 128) / 32, l = e % 32;
    const uint8_t ql = x->ql[64 * h + l + (quarter & 1) * 32];
    const uint8_t lo = quarter < 2 ? ql & 0xF : ql >> 4;
    const uint8_t hi = (x->qh[32 * h + l] >> (2 * quarter)) & 3;
    return (uint8_t)(lo | (hi << 4));
}

static void pack_q6_k(grp_q6_k *g, const blk_q6_k *const x[8])
{
    for (int r = 0; r < 8; r++) {
        g->d[r] = x[r] ? apr_f16_to_f32(x[r]->d) : 0.0f;
        for (int k = 0; k < 16; k++)
            g->sc[k][r] = x[r] ? x[r]->scales[k] : 0;
        for (int c = 0; c < 64; c++)
            for (int e = 0; e < 4; e++)
                g->q[c][4 * r + e] = x[r] ? q6_level(x[r], 4 * c + e) : 32;
    }
}

/* ---------------------------------------------------------------- 16-bit float rows
 * F16 and BF16 rows are packed for the AVX-512 tile (gemm_avx2.c,
 * group_h16_512), whose 16-lane register holds columns 8s..8s+7 of two rows
 * [row a | row b] (APRQ_H16_STEP_BYTES per 8-column step s of a group).
 * F16: four 32-byte runs of 16 halves, run p = rows (2p, 2p + 1): one
 * vcvtph2ps from memory per register. BF16: two 64-byte runs of 16 32-bit
 * lanes, run h's lane j holding row 4h + j / 8 in its low half and row
 * 4h + 2 + j / 8 in its high half (column 8s + j % 8): a shift left by 16
 * gives the register of rows (4h, 4h + 1), masking off the low halves that
 * of rows (4h + 2, 4h + 3), the exact F32 values. The n % 8 tail columns
 * are read from the source rows. */
static uint16_t h16_at(const uint8_t *row, uint64_t c)
{
    uint16_t h = 0;
    if (row)
        memcpy(&h, row + 2 * c, 2);
    return h;
}

static void pack_h16_step(apr_dtype t, uint16_t *dst, const uint8_t *const rows[8], uint64_t s)
{
    for (int j = 0; j < 16; j++) {
        const uint64_t c = 8 * s + (uint64_t)(j % 8);
        for (int p = 0; p < 4; p++) {
            if (t == APR_DT_F16) /* run p, half j: row 2p + j / 8 */
                dst[16 * p + j] = h16_at(rows[2 * p + j / 8], c);
            else /* run p / 2, lane j, low (p even) or high half */
                dst[32 * (p / 2) + 2 * j + p % 2] = h16_at(rows[4 * (p / 2) + 2 * (p % 2) + j / 8], c);
        }
    }
}

/* Block i of the group's 8 rows (NULL past the last row) into dst. */
static void pack_block(apr_dtype t, uint8_t *dst, const uint8_t *const rows[8], int64_t i)
{
    const void *x[8];
    const size_t bb = apr_dtype_row_bytes(t, block_elems(t));
    for (int r = 0; r < 8; r++)
        x[r] = rows[r] ? rows[r] + (size_t)i * bb : NULL;
    switch (t) {
    case APR_DT_Q8_0: pack_q8_0((grp_q8_0 *)dst, (const blk_q8_0 *const *)x); break;
    case APR_DT_Q4_0: pack_q4_0((grp_q8_0 *)dst, (const blk_q4_0 *const *)x); break;
    case APR_DT_Q5_0: pack_q5_0((grp_q8_0 *)dst, (const blk_q5_0 *const *)x); break;
    case APR_DT_Q4_1: pack_q4_1((grp_q4_1 *)dst, (const blk_q4_1 *const *)x); break;
    case APR_DT_Q5_1: pack_q5_1((grp_q4_1 *)dst, (const blk_q5_1 *const *)x); break;
    case APR_DT_Q2_K: pack_q2_k((grp_q2_k *)dst, (const blk_q2_k *const *)x); break;
    case APR_DT_Q3_K: pack_q3_k((grp_q3_k *)dst, (const blk_q3_k *const *)x); break;
    case APR_DT_Q4_K: pack_q4_k((grp_q4_k *)dst, (const blk_q4_k *const *)x); break;
    case APR_DT_Q5_K: pack_q5_k((grp_q5_k *)dst, (const blk_q5_k *const *)x); break;
    case APR_DT_Q6_K: pack_q6_k((grp_q6_k *)dst, (const blk_q6_k *const *)x); break;
    default: break;
    }
}

int apr_wpack_init(apr_wpack *p, apr_dtype t, uint64_t rows, uint64_t cols, const uint8_t *const *src_rows)
{
    memset(p, 0, sizeof *p);
    if (!apr_wpack_supported(t) || !rows || !cols || !apr_dtype_row_bytes(t, cols))
        return APR_E_UNSUPPORTED;
    if (!is_float_type(t) && cols % (uint64_t)block_elems(t))
        return APR_E_UNSUPPORTED;
    p->dtype = t;
    p->rows = rows;
    p->cols = cols;
    p->n_groups = (rows + APR_WPACK_ROWS - 1) / APR_WPACK_ROWS;
    p->row = malloc((size_t)rows * sizeof *p->row);
    if (!p->row)
        return APR_E_NOMEM;
    memcpy(p->row, src_rows, (size_t)rows * sizeof *p->row);
    /* F32 keeps its rows; F16/BF16 are packed only for the AVX-512 tile
     * (the AVX2 one reads the rows) and when there is a full 8-column step */
    const bool h16 = (t == APR_DT_F16 || t == APR_DT_BF16) && aprq_cpu_avx512() && cols >= 8;
    if (is_float_type(t) && !h16)
        return 0;
    const int64_t nb = h16 ? (int64_t)(cols / 8) : (int64_t)cols / block_elems(t);
    const size_t bb = h16 ? APRQ_H16_STEP_BYTES : group_block_bytes(t);
    p->group_bytes = bb * (size_t)nb;
    p->data = aligned_alloc(64, ((p->group_bytes * p->n_groups) + 63) / 64 * 64);
    if (!p->data) {
        apr_wpack_free(p);
        return APR_E_NOMEM;
    }
    for (uint64_t g = 0; g < p->n_groups; g++) {
        const uint8_t *r8[8];
        for (int r = 0; r < 8; r++)
            r8[r] = g * 8 + r < rows ? src_rows[g * 8 + r] : NULL;
        uint8_t *dst = p->data + g * p->group_bytes;
        for (int64_t i = 0; i < nb; i++) {
            if (h16)
                pack_h16_step(t, (uint16_t *)(dst + (size_t)i * bb), r8, (uint64_t)i);
            else
                pack_block(t, dst + (size_t)i * bb, r8, i);
        }
    }
    return 0;
}

void apr_wpack_free(apr_wpack *p)
{
    free(p->data);
    free(p->row);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- matmul */

void apr_wpack_gemm(const apr_wpack *p, uint64_t r0, uint64_t r1, const void *act, size_t act_stride, uint32_t nt,
                    float *out, size_t ldo)
{
    const uint8_t *a = act;
#if defined(__x86_64__)
    if (aprq_cpu_avx2() && r0 % APR_WPACK_ROWS == 0 && aprq_wpack_rows_avx2(p, r0, r1, a, act_stride, nt, out, ldo))
        return;
#endif
    /* scalar: the kernel the packed ones reproduce, on the source rows */
    for (uint64_t r = r0; r < r1; r++)
        for (uint32_t t = 0; t < nt; t++)
            out[(size_t)t * ldo + r] =
                apr_vec_dot_scalar(p->dtype, (int64_t)p->cols, p->row[r], a + (size_t)t * act_stride);
}
