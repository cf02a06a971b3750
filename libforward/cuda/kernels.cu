/* kernels.cu - the non-matmul kernels of the CUDA forward pass: RMSNorm,
 * rope, causal GQA attention, SwiGLU, residual and bias adds, and the
 * statistics reduction of traced tensors.
 *
 * Written for obvious correctness, not peak speed (the matmuls dominate):
 * simple grid-stride loops, block-per-row reductions with a fixed tree order
 * so that every result is deterministic run to run (apr verify compares the
 * logits of two models bit for bit on the same device). Products that the CPU
 * reference computes without fused multiply-add use the _rn intrinsics.
 */
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "cuda_util.h"

#define EW_THREADS 256
#define EW_MAX_BLOCKS 4096u

static unsigned ew_blocks(uint64_t n)
{
    uint64_t b = (n + EW_THREADS - 1) / EW_THREADS;
    return b < EW_MAX_BLOCKS ? (unsigned)(b ? b : 1) : EW_MAX_BLOCKS;
}

/* Tree sum over a power-of-two block in shared memory; returns the total to
 * every thread. sh has blockDim.x entries. */
template <typename T> __device__ static T block_sum(T v, T *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}

__device__ static float block_max(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------ RMSNorm */

#define NORM_THREADS 256

__global__ void k_rmsnorm(const float *__restrict__ x, const float *__restrict__ w,
                          float *__restrict__ y, uint32_t ncols, float eps)
{
    __shared__ double sh[NORM_THREADS];
    const float *xr = x + (uint64_t)blockIdx.x * ncols;
    float *yr = y + (uint64_t)blockIdx.x * ncols;
    double acc = 0.0;
    for (uint32_t c = threadIdx.x; c < ncols; c += NORM_THREADS)
        acc += (double)mul_rn(xr[c], xr[c]);
    double sum = block_sum(acc, sh);
    /* as ggml: the mean in f32, then 1/sqrtf(mean + eps) */
    float mean = (float)(sum / ncols);
    float scale = 1.0f / sqrtf(add_rn(mean, eps));
    for (uint32_t c = threadIdx.x; c < ncols; c += NORM_THREADS)
        yr[c] = mul_rn(mul_rn(xr[c], scale), w[c]);
}

extern "C" int apr_cuda_rmsnorm(const float *d_x, const float *d_w, float *d_y, uint32_t nrows,
                                uint32_t ncols, float eps, void *stream)
{
    if (nrows == 0)
        return 0;
    k_rmsnorm<<<nrows, NORM_THREADS, 0, (cudaStream_t)stream>>>(d_x, d_w, d_y, ncols, eps);
    return (int)cudaGetLastError();
}

/* ------------------------------------------------------------ elementwise */

__global__ void k_add_bias(float *y, const float *b, uint64_t n, uint32_t ncols)
{
    for (uint64_t i = blockIdx.x * (uint64_t)EW_THREADS + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * EW_THREADS)
        y[i] = add_rn(y[i], b[i % ncols]);
}

extern "C" int apr_cuda_add_bias(float *d_y, const float *d_b, uint32_t nrows, uint32_t ncols,
                                 void *stream)
{
    uint64_t n = (uint64_t)nrows * ncols;
    if (n == 0)
        return 0;
    k_add_bias<<<ew_blocks(n), EW_THREADS, 0, (cudaStream_t)stream>>>(d_y, d_b, n, ncols);
    return (int)cudaGetLastError();
}

__global__ void k_add(float *x, const float *y, uint64_t n)
{
    for (uint64_t i = blockIdx.x * (uint64_t)EW_THREADS + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * EW_THREADS)
        x[i] = add_rn(x[i], y[i]);
}

extern "C" int apr_cuda_add(float *d_x, const float *d_y, uint64_t n, void *stream)
{
    if (n == 0)
        return 0;
    k_add<<<ew_blocks(n), EW_THREADS, 0, (cudaStream_t)stream>>>(d_x, d_y, n);
    return (int)cudaGetLastError();
}

__global__ void k_swiglu(const float *g, const float *u, float *y, uint64_t n)
{
    for (uint64_t i = blockIdx.x * (uint64_t)EW_THREADS + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * EW_THREADS) {
        float v = g[i];
        float silu = v / add_rn(1.0f, expf(-v)); /* ggml_silu_f32 */
        y[i] = mul_rn(silu, u[i]);
    }
}

extern "C" int apr_cuda_swiglu(const float *d_g, const float *d_u, float *d_y, uint64_t n,
                               void *stream)
{
    if (n == 0)
        return 0;
    k_swiglu<<<ew_blocks(n), EW_THREADS, 0, (cudaStream_t)stream>>>(d_g, d_u, d_y, n);
    return (int)cudaGetLastError();
}

/* ------------------------------------------------------------ rope */

extern "C" void apr_cuda_rope_table(float theta_base, uint32_t head_dim, uint32_t n_pos, float *cs)
{
    uint32_t half = head_dim / 2;
    float theta_scale = powf(theta_base, -2.0f / (float)head_dim);
    for (uint32_t p = 0; p < n_pos; p++) {
        float theta = (float)p;
        for (uint32_t i = 0; i < half; i++) {
            cs[((uint64_t)p * half + i) * 2 + 0] = cosf(theta);
            cs[((uint64_t)p * half + i) * 2 + 1] = sinf(theta);
            theta *= theta_scale;
        }
    }
}

/* One thread per (token, head, pair). */
__global__ void k_rope(const float *x, float *y, uint64_t y_stride,
                       uint32_t n_tokens, uint32_t n_heads, uint32_t hd, uint32_t pos0,
                       const float *__restrict__ cs, int neox)
{
    uint32_t half = hd / 2;
    uint64_t n = (uint64_t)n_tokens * n_heads * half;
    for (uint64_t idx = blockIdx.x * (uint64_t)EW_THREADS + threadIdx.x; idx < n;
         idx += (uint64_t)gridDim.x * EW_THREADS) {
        uint32_t i = (uint32_t)(idx % half);
        uint32_t h = (uint32_t)((idx / half) % n_heads);
        uint32_t t = (uint32_t)(idx / ((uint64_t)half * n_heads));
        const float *xh = x + (uint64_t)t * n_heads * hd + (uint64_t)h * hd;
        float *yh = y + (uint64_t)t * y_stride + (uint64_t)h * hd;
        uint32_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        float x0 = xh[i0], x1 = xh[i1];
        const float *c = cs + ((uint64_t)(pos0 + t) * half + i) * 2;
        float cos_t = c[0], sin_t = c[1];
        yh[i0] = sub_rn(mul_rn(x0, cos_t), mul_rn(x1, sin_t));
        yh[i1] = add_rn(mul_rn(x0, sin_t), mul_rn(x1, cos_t));
    }
}

extern "C" int apr_cuda_rope(const float *d_x, float *d_y, uint64_t y_row_stride, uint32_t n_tokens,
                             uint32_t n_heads, uint32_t head_dim, uint32_t pos0, const float *d_cs,
                             bool neox, void *stream)
{
    uint64_t n = (uint64_t)n_tokens * n_heads * (head_dim / 2);
    if (n == 0)
        return 0;
    k_rope<<<ew_blocks(n), EW_THREADS, 0, (cudaStream_t)stream>>>(
        d_x, d_y, y_row_stride, n_tokens, n_heads, head_dim, pos0, d_cs, neox ? 1 : 0);
    return (int)cudaGetLastError();
}

/* ------------------------------------------------------------ attention */

#define ATT_THREADS 128

/* Dynamic shared memory: scores[n_kv] (floats), q[hd] (floats), then
 * ATT_THREADS doubles for the reductions. */
static size_t att_smem(uint32_t n_kv, uint32_t hd)
{
    size_t f = ((size_t)n_kv + hd + 1) & ~(size_t)1; /* keep the doubles 8-aligned */
    return f * sizeof(float) + ATT_THREADS * sizeof(double);
}

/* Block (h, t): query t of head h over keys 0..pos0+t. The dot products run
 * over d = 0..hd-1 in order, one key per thread; the softmax as ggml's
 * soft_max (max, exp(s - max), sum in double, scale by 1/sum); then each
 * thread owns output dimensions d and sums p_j * v_j[d] over j in order. */
__global__ void k_attention(const float *__restrict__ q, const float *__restrict__ kc,
                            const float *__restrict__ vc, float *__restrict__ out, uint32_t pos0,
                            uint32_t n_heads, uint32_t n_kv_heads, uint32_t hd, float scale)
{
    extern __shared__ double smem_d[];
    float *scores = (float *)smem_d;
    uint32_t h = blockIdx.x, t = blockIdx.y;
    uint32_t n_kv = pos0 + t + 1;
    float *sq = scores + n_kv;
    double *red = (double *)(scores + ((n_kv + hd + 1) & ~1u));
    uint32_t kvh = h / (n_heads / n_kv_heads);
    uint64_t kv_stride = (uint64_t)n_kv_heads * hd;
    const float *qh = q + ((uint64_t)t * n_heads + h) * hd;

    for (uint32_t d = threadIdx.x; d < hd; d += ATT_THREADS)
        sq[d] = qh[d];
    __syncthreads();

    float mx = -INFINITY;
    for (uint32_t j = threadIdx.x; j < n_kv; j += ATT_THREADS) {
        const float *k = kc + j * kv_stride + (uint64_t)kvh * hd;
        float s = 0.0f;
        for (uint32_t d = 0; d < hd; d++)
            s = add_rn(s, mul_rn(sq[d], k[d]));
        s = mul_rn(s, scale);
        scores[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, (float *)red);

    double sum = 0.0;
    for (uint32_t j = threadIdx.x; j < n_kv; j += ATT_THREADS) {
        float e = expf(scores[j] - mx);
        scores[j] = e;
        sum += (double)e;
    }
    sum = block_sum(sum, red);
    float inv = (float)(1.0 / sum);
    for (uint32_t j = threadIdx.x; j < n_kv; j += ATT_THREADS)
        scores[j] = mul_rn(scores[j], inv);
    __syncthreads();

    float *o = out + ((uint64_t)t * n_heads + h) * hd;
    for (uint32_t d = threadIdx.x; d < hd; d += ATT_THREADS) {
        const float *v = vc + (uint64_t)kvh * hd + d;
        float acc = 0.0f;
        for (uint32_t j = 0; j < n_kv; j++)
            acc = add_rn(acc, mul_rn(scores[j], v[j * kv_stride]));
        o[d] = acc;
    }
}

/* Largest head_dim the prepare step budgets for (Qwen/LLaMA use 64..256). */
#define ATT_MAX_HD 512

extern "C" int apr_cuda_attention_prepare(uint32_t max_ctx, uint32_t *max_fit)
{
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return -2;
    size_t fixed = att_smem(0, ATT_MAX_HD);
    uint32_t fit = (size_t)optin > fixed ? (uint32_t)(((size_t)optin - fixed) / sizeof(float)) - 2 : 0;
    if (max_fit)
        *max_fit = fit;
    if (max_ctx > fit)
        return -1;
    size_t need = att_smem(max_ctx, ATT_MAX_HD);
    if (cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need) !=
        cudaSuccess)
        return -2;
    return 0;
}

extern "C" int apr_cuda_attention(const float *d_q, const float *d_kc, const float *d_vc,
                                  float *d_out, uint32_t n_tokens, uint32_t pos0, uint32_t n_heads,
                                  uint32_t n_kv_heads, uint32_t head_dim, float scale, void *stream)
{
    if (n_tokens == 0)
        return 0;
    if (n_tokens > 65535 || n_kv_heads == 0 || n_heads % n_kv_heads || head_dim > ATT_MAX_HD)
        return (int)cudaErrorInvalidValue;
    dim3 grid(n_heads, n_tokens);
    size_t smem = att_smem(pos0 + n_tokens, head_dim);
    k_attention<<<grid, ATT_THREADS, smem, (cudaStream_t)stream>>>(
        d_q, d_kc, d_vc, d_out, pos0, n_heads, n_kv_heads, head_dim, scale);
    return (int)cudaGetLastError();
}

/* ------------------------------------------------------------ statistics */

#define ST_THREADS 256

__device__ static void acc_merge(apr_cuda_stat_acc *a, const apr_cuda_stat_acc *b)
{
    a->sum += b->sum;
    a->sumsq += b->sumsq;
    a->min = fmin(a->min, b->min);
    a->max = fmax(a->max, b->max);
    a->n += b->n;
    a->nonfinite += b->nonfinite;
}

/* Pass 1: APR_CUDA_STAT_BLOCKS blocks, each a grid-stride share of x, tree
 * reduced into partials[blockIdx.x]. */
__global__ void k_stats_partial(const float *__restrict__ x, uint64_t n, apr_cuda_stat_acc *partials)
{
    __shared__ apr_cuda_stat_acc sh[ST_THREADS];
    apr_cuda_stat_acc a = {0.0, 0.0, INFINITY, -INFINITY, 0, 0};
    for (uint64_t i = blockIdx.x * (uint64_t)ST_THREADS + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * ST_THREADS) {
        float v = x[i];
        if (!isfinite(v)) {
            a.nonfinite++;
            continue;
        }
        double dv = v;
        a.sum += dv;
        a.sumsq += dv * dv;
        a.min = fmin(a.min, dv);
        a.max = fmax(a.max, dv);
        a.n++;
    }
    sh[threadIdx.x] = a;
    __syncthreads();
    for (unsigned s = ST_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            acc_merge(&sh[threadIdx.x], &sh[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = sh[0];
}

/* Pass 2: one thread folds the partials in index order. */
__global__ void k_stats_final(const apr_cuda_stat_acc *partials, apr_cuda_stat_acc *out)
{
    if (threadIdx.x != 0 || blockIdx.x != 0)
        return;
    apr_cuda_stat_acc a = partials[0];
    for (int b = 1; b < APR_CUDA_STAT_BLOCKS; b++)
        acc_merge(&a, &partials[b]);
    *out = a;
}

extern "C" int apr_cuda_stats(const float *d_x, uint64_t n, apr_cuda_stat_acc *d_partials,
                              apr_cuda_stat_acc *d_out, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    k_stats_partial<<<APR_CUDA_STAT_BLOCKS, ST_THREADS, 0, s>>>(d_x, n, d_partials);
    k_stats_final<<<1, 1, 0, s>>>(d_partials, d_out);
    return (int)cudaGetLastError();
}
