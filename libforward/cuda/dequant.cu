/* dequant.cu - ggml block formats to f32 on the GPU.
 *
 * One thread decodes one element. The decoders below are written per element
 * (block b, index j inside it) from the block layouts in docs/formats.md and
 * do exactly the f32 operations of ggml's dequantize_row_* (which libquant
 * mirrors), in the same order, without fused multiply-adds: a weight expanded
 * here equals libquant's apr_dequantize_row bit for bit. The same functions
 * run on the host in apr_cuda_ref_dequant_row, which the tests compare with
 * libquant on any machine.
 */
#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

#include "cuda_kernels.h"
#include "cuda_util.h"

__host__ __device__ static inline uint16_t rd_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* f16 -> f32 as libquant's apr_f16_to_f32 (exact; NaN payload kept). */
__host__ __device__ static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;
    if (e == 0x1f)
        return bits_to_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0)
            return bits_to_f32(sign);
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (ggml's
 * get_scale_min_k4). */
__host__ __device__ static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Element j of the 32-element blocks. Low nibble of qs[j] is element j, high
 * nibble element j + 16. */
__host__ __device__ static float deq_q4_0(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    uint8_t q = b[2 + (j & 15)];
    int x = (j < 16 ? (q & 0xF) : (q >> 4)) - 8;
    return mul_rn((float)x, d);
}

__host__ __device__ static float deq_q4_1(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    float m = f16_to_f32(rd_u16(b + 2));
    uint8_t q = b[4 + (j & 15)];
    int x = j < 16 ? (q & 0xF) : (q >> 4);
    return add_rn(mul_rn((float)x, d), m);
}

/* Q5_0: f16 d, u32 qh (LE), qs[16]. Bit j of qh is the 5th bit of element j,
 * bit j + 16 that of element j + 16 (ggml: (qh >> (j+12)) & 0x10). */
__host__ __device__ static float deq_q5_0(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    uint32_t qh = (uint32_t)b[2] | ((uint32_t)b[3] << 8) | ((uint32_t)b[4] << 16) |
                  ((uint32_t)b[5] << 24);
    uint8_t q = b[6 + (j & 15)];
    int lo = j < 16 ? (q & 0xF) : (q >> 4);
    int hi = (int)((qh >> j) & 1) << 4;
    return mul_rn((float)((lo | hi) - 16), d);
}

__host__ __device__ static float deq_q5_1(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    float m = f16_to_f32(rd_u16(b + 2));
    uint32_t qh = (uint32_t)b[4] | ((uint32_t)b[5] << 8) | ((uint32_t)b[6] << 16) |
                  ((uint32_t)b[7] << 24);
    uint8_t q = b[8 + (j & 15)];
    int lo = j < 16 ? (q & 0xF) : (q >> 4);
    int hi = (int)((qh >> j) & 1) << 4;
    return add_rn(mul_rn((float)(lo | hi), d), m);
}

__host__ __device__ static float deq_q8_0(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    return mul_rn((float)(int8_t)b[2 + j], d);
}

/* Q4_K: element j = 64c + 32h + l is nibble h of qs[32c + l], sub-block 2c+h;
 * y = (d*sc)*q - (dmin*m). */
__host__ __device__ static float deq_q4_k(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    float dmin = f16_to_f32(rd_u16(b + 2));
    int c = j >> 6, h = (j >> 5) & 1, l = j & 31;
    uint8_t sc, m;
    scale_min_k4(2 * c + h, b + 4, &sc, &m);
    uint8_t q = b[16 + 32 * c + l];
    int x = h ? (q >> 4) : (q & 0xF);
    return sub_rn(mul_rn(mul_rn(d, (float)sc), (float)x), mul_rn(dmin, (float)m));
}

/* Q5_K: as Q4_K with qh[32] @16 (bit 2c+h of qh[l] adds 16), qs @48. */
__host__ __device__ static float deq_q5_k(const uint8_t *b, int j)
{
    float d = f16_to_f32(rd_u16(b));
    float dmin = f16_to_f32(rd_u16(b + 2));
    int c = j >> 6, h = (j >> 5) & 1, l = j & 31;
    uint8_t sc, m;
    scale_min_k4(2 * c + h, b + 4, &sc, &m);
    uint8_t q = b[48 + 32 * c + l];
    int x = (h ? (q >> 4) : (q & 0xF)) + (((b[16 + l] >> (2 * c + h)) & 1) ? 16 : 0);
    return sub_rn(mul_rn(mul_rn(d, (float)sc), (float)x), mul_rn(dmin, (float)m));
}

/* Q6_K: element j = 128n + 32k + l (n half, k quarter): low 4 bits from
 * ql[64n + 32(k&1) + l] (low nibble for k < 2, high for k >= 2), high 2 bits
 * at bit 2k of qh[32n + l], scale scales[8n + l/16 + 2k]; y = (d*sc)*(q-32). */
__host__ __device__ static float deq_q6_k(const uint8_t *b, int j)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = f16_to_f32(rd_u16(b + 208));
    int n = j >> 7, k = (j >> 5) & 3, l = j & 31;
    uint8_t lo = ql[64 * n + 32 * (k & 1) + l];
    int q = (k < 2 ? (lo & 0xF) : (lo >> 4)) | (((qh[32 * n + l] >> (2 * k)) & 3) << 4);
    int sc = scales[8 * n + l / 16 + 2 * k];
    return mul_rn(mul_rn(d, (float)sc), (float)(int8_t)(q - 32));
}

/* Block geometry of the supported dtypes (elements, bytes); 0 if unsupported. */
__host__ __device__ static inline void block_geom(int t, int *be, int *bb)
{
    switch (t) {
    case APR_DT_F32: *be = 1; *bb = 4; return;
    case APR_DT_F16: *be = 1; *bb = 2; return;
    case APR_DT_BF16: *be = 1; *bb = 2; return;
    case APR_DT_Q4_0: *be = 32; *bb = 18; return;
    case APR_DT_Q4_1: *be = 32; *bb = 20; return;
    case APR_DT_Q5_0: *be = 32; *bb = 22; return;
    case APR_DT_Q5_1: *be = 32; *bb = 24; return;
    case APR_DT_Q8_0: *be = 32; *bb = 34; return;
    case APR_DT_Q4_K: *be = 256; *bb = 144; return;
    case APR_DT_Q5_K: *be = 256; *bb = 176; return;
    case APR_DT_Q6_K: *be = 256; *bb = 210; return;
    default: *be = 0; *bb = 0; return;
    }
}

/* Element c of a row of dtype t. */
__host__ __device__ static inline float deq_elem(int t, const uint8_t *row, uint32_t c)
{
    switch (t) {
    case APR_DT_F32: {
        const uint8_t *p = row + 4 * (size_t)c;
        return bits_to_f32((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                           ((uint32_t)p[3] << 24));
    }
    case APR_DT_F16: return f16_to_f32(rd_u16(row + 2 * (size_t)c));
    case APR_DT_BF16: return bits_to_f32((uint32_t)rd_u16(row + 2 * (size_t)c) << 16);
    case APR_DT_Q4_0: return deq_q4_0(row + 18 * (size_t)(c >> 5), c & 31);
    case APR_DT_Q4_1: return deq_q4_1(row + 20 * (size_t)(c >> 5), c & 31);
    case APR_DT_Q5_0: return deq_q5_0(row + 22 * (size_t)(c >> 5), c & 31);
    case APR_DT_Q5_1: return deq_q5_1(row + 24 * (size_t)(c >> 5), c & 31);
    case APR_DT_Q8_0: return deq_q8_0(row + 34 * (size_t)(c >> 5), c & 31);
    case APR_DT_Q4_K: return deq_q4_k(row + 144 * (size_t)(c >> 8), c & 255);
    case APR_DT_Q5_K: return deq_q5_k(row + 176 * (size_t)(c >> 8), c & 255);
    case APR_DT_Q6_K: return deq_q6_k(row + 210 * (size_t)(c >> 8), c & 255);
    default: return 0.0f; /* unreachable: launchers check the dtype first */
    }
}

extern "C" bool apr_cuda_dtype_supported(apr_dtype t)
{
    int be, bb;
    block_geom((int)t, &be, &bb);
    return be != 0;
}

extern "C" int apr_cuda_ref_dequant_row(apr_dtype t, const void *src, float *dst, int64_t n)
{
    int be, bb;
    block_geom((int)t, &be, &bb);
    if (!be)
        return APR_E_UNSUPPORTED;
    if (n < 0 || n % be || n > UINT32_MAX)
        return APR_E_ARG;
    for (int64_t c = 0; c < n; c++)
        dst[c] = deq_elem((int)t, (const uint8_t *)src, (uint32_t)c);
    return 0;
}

#define DQ_THREADS 256
#define DQ_MAX_GRID_Y 65535u

/* grid.x covers the columns, grid.y strides over the rows. */
__global__ void k_dequant_rows(int t, const uint8_t *__restrict__ w, uint64_t row_bytes,
                               uint32_t ncols, uint32_t nrows, const int32_t *__restrict__ row_ids,
                               float *__restrict__ dst)
{
    uint32_t c = blockIdx.x * DQ_THREADS + threadIdx.x;
    if (c >= ncols)
        return;
    for (uint32_t r = blockIdx.y; r < nrows; r += gridDim.y) {
        uint64_t src_row = row_ids ? (uint64_t)row_ids[r] : r;
        dst[(uint64_t)r * ncols + c] = deq_elem(t, w + src_row * row_bytes, c);
    }
}

extern "C" int apr_cuda_dequant_rows(apr_dtype t, const void *d_w, uint64_t row_bytes,
                                     uint32_t ncols, uint32_t nrows, const int32_t *d_row_ids,
                                     float *d_dst, void *stream)
{
    int be, bb;
    block_geom((int)t, &be, &bb);
    if (!be || ncols % (uint32_t)be)
        return (int)cudaErrorInvalidValue;
    if (ncols == 0 || nrows == 0)
        return 0;
    dim3 grid((ncols + DQ_THREADS - 1) / DQ_THREADS, nrows < DQ_MAX_GRID_Y ? nrows : DQ_MAX_GRID_Y);
    k_dequant_rows<<<grid, DQ_THREADS, 0, (cudaStream_t)stream>>>(
        (int)t, (const uint8_t *)d_w, row_bytes, ncols, nrows, d_row_ids, d_dst);
    return (int)cudaGetLastError();
}
