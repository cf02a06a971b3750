/* quant_internal.h - block layouts and helpers shared by libquant's sources.
 * Not a public header: libforward and the tools use quant.h only.
 *
 * The layouts are ggml's (see docs: formats.md "Block layouts"); every struct
 * is checked against the byte sizes in formats/model.c's dtype table. */
#ifndef APR_QUANT_INTERNAL_H
#define APR_QUANT_INTERNAL_H

#include "quant.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#define QK_K 256
#define QK32 32
#define K_SCALE_SIZE 12

typedef struct { uint16_t d; int8_t qs[32]; } blk_q8_0;                  /* 34 */
typedef struct { uint16_t d; uint8_t qs[16]; } blk_q4_0;                 /* 18 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } blk_q4_1;              /* 20 */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_0;  /* 22 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_1; /* 24 */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } blk_q2_k; /* 84 */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } blk_q3_k; /* 110 */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } blk_q4_k; /* 144 */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } blk_q5_k; /* 176 */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } blk_q6_k; /* 210 */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } blk_q8_k;  /* 292 */
typedef struct { uint16_t d; uint8_t qs[16]; } blk_iq4_nl;                /* 18 */
typedef struct { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } blk_iq4_xs; /* 136 */
typedef struct { uint8_t qs[48]; uint8_t qh[4]; uint16_t d; } blk_tq1_0;  /* 54 */
typedef struct { uint8_t qs[64]; uint16_t d; } blk_tq2_0;                 /* 66 */
typedef struct { uint8_t e; uint8_t qs[16]; } blk_mxfp4;                  /* 17 */
typedef struct { uint8_t d[4]; uint8_t qs[32]; } blk_nvfp4;               /* 36 */
typedef struct { uint16_t d; uint8_t qs[16]; } blk_q1_0;                  /* 18, 128 values */
typedef struct { uint16_t d; uint8_t qs[16]; } blk_q2_0;                  /* 18, 64 values */

_Static_assert(sizeof(blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(blk_q2_k) == 84, "q2_k");
_Static_assert(sizeof(blk_q3_k) == 110, "q3_k");
_Static_assert(sizeof(blk_q4_k) == 144, "q4_k");
_Static_assert(sizeof(blk_q5_k) == 176, "q5_k");
_Static_assert(sizeof(blk_q6_k) == 210, "q6_k");
_Static_assert(sizeof(blk_q8_k) == 292, "q8_k");
_Static_assert(sizeof(blk_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(blk_iq4_xs) == 136, "iq4_xs");
_Static_assert(sizeof(blk_tq1_0) == 54, "tq1_0");
_Static_assert(sizeof(blk_tq2_0) == 66, "tq2_0");
_Static_assert(sizeof(blk_mxfp4) == 17, "mxfp4");
_Static_assert(sizeof(blk_nvfp4) == 36, "nvfp4");

/* ggml's kvalues_iq4nl (quant_iq4.c) */
extern const int8_t aprq_kvalues_iq4nl[16];

/* ggml's nearest_int: round half to even through the 1.5*2^23 trick. Only
 * meaningful for |f| <= 2^22; outside that it gives the same garbage ggml
 * gives, which is what bit-exactness asks for. */
static inline int q_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* Signed 6-bit scale j (-32..31) of a Q3_K block's 12 packed bytes: low
 * nibbles in bytes 0-7, high 2 bits in bytes 8-11. */
static inline int8_t q3k_sub_scale(const uint8_t *scales, int j)
{
    int8_t sc = (int8_t)(j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4);
    return (int8_t)((sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

/* 6-bit scale and min j of a Q4_K/Q5_K block's 12 packed bytes. */
static inline void q_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ---- reference (bit-exact) row quantizers, quant_ref.c.
 * x: n floats (n a multiple of the block); qw: n importance weights or NULL. */
void aprq_ref_q8_0(const float *x, void *y, int64_t n);
void aprq_ref_q4_0(const float *x, void *y, int64_t n);
void aprq_ref_q4_1(const float *x, void *y, int64_t n);
void aprq_ref_q5_0(const float *x, void *y, int64_t n);
void aprq_ref_q5_1(const float *x, void *y, int64_t n);
void aprq_ref_q2_k(const float *x, void *y, int64_t n);
void aprq_ref_q3_k(const float *x, void *y, int64_t n);
void aprq_ref_q4_k(const float *x, void *y, int64_t n);
void aprq_ref_q5_k(const float *x, void *y, int64_t n);
void aprq_ref_q6_k(const float *x, void *y, int64_t n);
void aprq_ref_q8_k(const float *x, void *y, int64_t n);
/* one row with an importance matrix (ggml's quantize_row_*_impl) */
void aprq_imat_q4_0(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q4_1(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q5_0(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q5_1(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q2_k(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q3_k(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q4_k(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q5_k(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_q6_k(const float *x, void *y, int64_t n, const float *qw);
/* IQ4_NL / IQ4_XS (quant_iq4.c): ggml's quantize_iq4_nl / quantize_iq4_xs,
 * qw NULL or the importance weights (the same code either way, as ggml) */
void aprq_imat_iq4_nl(const float *x, void *y, int64_t n, const float *qw);
void aprq_imat_iq4_xs(const float *x, void *y, int64_t n, const float *qw);
/* Dequantizers of the block types beyond Q8_K (dequant_more.c): 0, or -1
 * when apr does not implement the type's layout. */
int aprq_dequant_more(apr_dtype t, const void *src, float *dst, int64_t nb);

/* Pieces of the reference shared with the SIMD kernels (quant_fast.c). */
float aprq_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                            float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                            bool use_mad);
void aprq_encode_k4_scales(const float *scales, const float *mins, float max_scale, float max_min,
                           uint16_t *hd, uint16_t *hdmin, uint8_t *sc12);
/* imatrix path of Q4_K/Q5_K: the two make_qp_quants over the 8 sub-block
 * scales and mins (weights sw = per sub-block sums of the weights) and the
 * packing; clamp63 for Q5_K. */
void aprq_encode_k4_scales_imat(const float *scales, const float *mins, const float *sw, bool clamp63,
                                uint16_t *hd, uint16_t *hdmin, uint8_t *sc12);
/* The imatrix Q2_K / Q3_K super-block after its 16 sub-block searches
 * (make_qkx3_quants / make_qx_quants): scales (and mins), the per sub-block
 * weight sums sw, the levels L (updated); writes the whole block. */
void aprq_q2k_imat_finish(const float *x, const float *scales, const float *mins, const float *sw, uint8_t *L,
                          void *y);
/* The same for the imatrix-less Q2_K / Q3_K (after make_qkx2_quants with
 * use_mad / make_q3_quants on the 16 sub-blocks). */
void aprq_q2k_ref_finish(const float *x, const float *scales, const float *mins, uint8_t *L, void *y);
void aprq_q3k_ref_finish(const float *x, const float *scales, int8_t *L, void *y);
void aprq_q3k_imat_finish(const float *x, const float *scales, const float *sw, int8_t *L, void *y);
/* The two halves of those finishes, for the AVX2 requantization between
 * them (quant_fast.c): the super-block scale and 6-bit scales into y; L
 * (0..7) into y's high-bit mask and 2-bit quants (L is clobbered). */
void aprq_q3k_ref_scales(const float *scales, void *y);
void aprq_q3k_imat_scales(const float *scales, const float *sw, void *y);
void aprq_q3k_pack(int8_t *L, void *y);
/* sum of x^2 over the row / n: the sigma2 of the 32-block imatrix paths */
float aprq_row_sigma2(const float *x, int64_t n);
/* 32 5-bit levels of a Q5_0/Q5_1 block: low nibbles in qs, 5th bits in qh */
void aprq_pack5(const uint8_t *l, uint8_t qs[16], uint8_t qh[4]);
void aprq_pack_q4k(const uint8_t *L, uint8_t *qs);
void aprq_pack_q5k(const uint8_t *L, uint8_t *qh, uint8_t *qs);
void aprq_pack_q6k(const int8_t *L, uint8_t *ql, uint8_t *qh);
void aprq_q6k_finish(const float *x, const float *scales, float max_scale, float max_abs_scale, void *y,
                     int8_t *L);

/* Quantize rows [r0, r1) of a chunk with the reference kernels (the exact
 * ggml_quantize_chunk dispatch). Returns false for unsupported types. */
bool aprq_chunk_rows_ref(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1,
                         int64_t ncols, const float *imatrix);
/* Same through the fastest kernels this CPU has (quant_fast.c); identical bytes. */
bool aprq_chunk_rows_fast(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1,
                          int64_t ncols, const float *imatrix);

/* IQ4_NL / IQ4_XS rows through the AVX2 kernels of quant_iq4_fast.c (the
 * reference without AVX2); false for other types. Identical bytes. */
bool aprq_iq4_rows_fast(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                        const float *imatrix);

/* F16 / BF16 rows to f32 with the SIMD kernels of f16_avx2.c: false (and
 * nothing written) when this CPU has none; identical bits to the scalar loops. */
bool aprq_f16_row_fast(const void *src, float *dst, int64_t n);
bool aprq_bf16_row_fast(const void *src, float *dst, int64_t n);

/* Run-time CPU feature checks (cached). */
bool aprq_cpu_avx2(void);
/* AVX-512 F/DQ/BW/VL on top of AVX2 (the packed float kernels use it). */
bool aprq_cpu_avx512(void);
/* The packed block kernels' integer dot instruction (APRQ_VNNI_*). */
enum { APRQ_VNNI_NONE, APRQ_VNNI_AVX, APRQ_VNNI_512 };
int aprq_cpu_vnni(void);

#endif
