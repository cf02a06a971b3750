/* bench_gpu.c - prefill throughput of libforward's CUDA backend on a
 * 7B-layer-shaped Q4_K_M model, against the roofline of the GPU, and the time
 * of a verify-style run (two models, K chunks, logits + trace + KLD).
 *
 *   bench_gpu [--layers N] [--tokens N] [--reps N] [--chunks K]
 *             [--apr PATH --tmp DIR]   also time `apr verify` on a written pair
 *
 * The model has LLaMA-2-7B's layer shapes (hidden 4096, 32 heads of 128,
 * ffn 11008, vocab 32000) and --layers layers (default 4: the per-layer cost
 * is what scales). Its blocks are random bytes with sane scale fields, not a
 * quantization of anything: throughput does not depend on the values, and
 * generating them takes a second instead of minutes of reference
 * quantization. The figures go into docs/gpu.md (date and GPU).
 *
 * Roofline: the prefill of T tokens must read every weight once (bytes /
 * 4.8 TB/s, H200 HBM3e) and do 2*T*params + attention flops (/ 990 TFLOP/s
 * dense f16/bf16); the bound is the larger of the two times. The default f32
 * GEMM path is also shown against the f32 ceiling (67 TFLOP/s) and its
 * dequantization traffic (4 bytes written and read per weight).
 *
 * Without a CUDA device (or in a build without the backend) it prints SKIP
 * and exits 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "quant.h"
#ifdef APR_HAVE_CUDA
#include "cuda/apr_cuda.h"
#endif

#define H200_BW 4.8e12
#define H200_F16 990e12
#define H200_F32 67e12

typedef struct shape {
    uint32_t layers, hidden, heads, kv_heads, hd, ffn, vocab;
} shape;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = apr_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random payload of a dtype, scales chosen so weights are ~0.01-0.1. */
static void fill(apr_dtype dt, uint8_t *p, uint64_t nbytes, uint64_t *rng)
{
    for (uint64_t i = 0; i < nbytes; i += 8) {
        uint64_t r = rng_next(rng);
        memcpy(p + i, &r, nbytes - i < 8 ? nbytes - i : 8);
    }
    const apr_dtype_info *di = apr_dtype_get(dt);
    if (dt == APR_DT_F16) {
        /* sign, exponent 6..10 (2^-9..2^-5), random mantissa */
        for (uint64_t i = 0; i < nbytes; i += 2) {
            uint16_t h;
            memcpy(&h, p + i, 2);
            h = (uint16_t)((h & 0x83ff) | ((6 + (h >> 10) % 5) << 10));
            memcpy(p + i, &h, 2);
        }
        return;
    }
    for (uint64_t b = 0; b < nbytes / di->block_bytes; b++) {
        uint8_t *blk = p + b * di->block_bytes;
        float u = (float)(0.5 + 0.5 * rng_unit(rng));
        switch (dt) {
        case APR_DT_Q4_K:
            put_f16(blk, 1e-4f * u);
            put_f16(blk + 2, 8e-4f * u);
            break;
        case APR_DT_Q6_K:
            put_f16(blk + 208, 2.5e-5f * u);
            break;
        default:
            put_f16(blk, 1e-3f * u);
            break;
        }
    }
}

static int add_w(apr_model *m, const char *name, apr_dtype dt, uint64_t rows, uint64_t cols, uint64_t *rng,
                 uint64_t *bytes)
{
    uint64_t nb = apr_dtype_row_bytes(dt, cols) * rows;
    uint8_t *p = malloc(nb);
    if (!p)
        return -1;
    fill(dt, p, nb, rng);
    uint64_t dims[2] = {rows, cols};
    apr_err err = {0};
    if (apr_model_add_tensor(m, name, dt, 2, dims, p, nb, true, &err)) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return -1;
    }
    *bytes += nb;
    return 0;
}

static int add_norm(apr_model *m, const char *name, uint64_t n)
{
    float *p = malloc(n * sizeof *p);
    if (!p)
        return -1;
    for (uint64_t i = 0; i < n; i++)
        p[i] = 1.0f;
    uint64_t dims[1] = {n};
    apr_err err = {0};
    return apr_model_add_tensor(m, name, APR_DT_F32, 1, dims, p, n * 4, true, &err);
}

static bool use_more_bits(uint32_t i, uint32_t n)
{
    return i < n / 8 || i >= 7 * n / 8 || ((int)i - (int)(n / 8)) % 3 == 2;
}

/* q4km: llama.cpp's Q4_K_M mix; else every matrix F16. *wbytes: matmul
 * weight bytes (what a prefill must read). */
static apr_model *build(const shape *s, bool q4km, uint64_t seed, uint64_t *wbytes)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    if (!m)
        return NULL;
    uint64_t rng = seed, dummy = 0;
    apr_model_set_kv_str(m, "general.architecture", "llama");
    apr_model_set_kv_u32(m, "llama.block_count", s->layers);
    apr_model_set_kv_u32(m, "llama.embedding_length", s->hidden);
    apr_model_set_kv_u32(m, "llama.attention.head_count", s->heads);
    apr_model_set_kv_u32(m, "llama.attention.head_count_kv", s->kv_heads);
    apr_model_set_kv_u32(m, "llama.feed_forward_length", s->ffn);
    apr_model_set_kv_u32(m, "llama.context_length", 4096);
    apr_model_set_kv_u32(m, "llama.vocab_size", s->vocab);
    apr_model_set_kv_f32(m, "llama.rope.freq_base", 10000.0f);
    apr_model_set_kv_f32(m, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    const apr_dtype base = q4km ? APR_DT_Q4_K : APR_DT_F16;
    const uint64_t qd = (uint64_t)s->heads * s->hd, kvd = (uint64_t)s->kv_heads * s->hd;
    *wbytes = 0;
    int bad = add_w(m, "token_embd.weight", base, s->vocab, s->hidden, &rng, &dummy) ||
              add_w(m, "output.weight", q4km ? APR_DT_Q6_K : base, s->vocab, s->hidden, &rng, wbytes) ||
              add_norm(m, "output_norm.weight", s->hidden);
    char nm[96];
    for (uint32_t l = 0; l < s->layers && !bad; l++) {
        const apr_dtype more = q4km && use_more_bits(l, s->layers) ? APR_DT_Q6_K : base;
#define N(x) (snprintf(nm, sizeof nm, "blk.%u." x, l), nm)
        bad = add_norm(m, N("attn_norm.weight"), s->hidden) || add_norm(m, N("ffn_norm.weight"), s->hidden) ||
              add_w(m, N("attn_q.weight"), base, qd, s->hidden, &rng, wbytes) ||
              add_w(m, N("attn_k.weight"), base, kvd, s->hidden, &rng, wbytes) ||
              add_w(m, N("attn_v.weight"), more, kvd, s->hidden, &rng, wbytes) ||
              add_w(m, N("attn_output.weight"), base, s->hidden, qd, &rng, wbytes) ||
              add_w(m, N("ffn_gate.weight"), base, s->ffn, s->hidden, &rng, wbytes) ||
              add_w(m, N("ffn_up.weight"), base, s->ffn, s->hidden, &rng, wbytes) ||
              add_w(m, N("ffn_down.weight"), more, s->hidden, s->ffn, &rng, wbytes);
#undef N
    }
    apr_err err = {0};
    if (bad || apr_model_derive(m, &err)) {
        fprintf(stderr, "bench_gpu: building the model failed %s\n", err.msg);
        apr_model_free(m);
        return NULL;
    }
    return m;
}

static double matmul_params(const shape *s)
{
    const double qd = (double)s->heads * s->hd, kvd = (double)s->kv_heads * s->hd;
    return (double)s->layers * (s->hidden * (qd + 2 * kvd) + qd * s->hidden + 3.0 * s->hidden * s->ffn) +
           (double)s->vocab * s->hidden;
}

/* flops of a prefill of T tokens from position 0 (output matmul on the last token only) */
static double prefill_flops(const shape *s, uint32_t T)
{
    const double qd = (double)s->heads * s->hd, kvd = (double)s->kv_heads * s->hd;
    const double per_tok = (double)s->layers * (s->hidden * (qd + 2 * kvd) + qd * s->hidden + 3.0 * s->hidden * s->ffn);
    const double att = (double)s->layers * 4.0 * qd * ((double)T * (T + 1) / 2.0); /* QK^T and PV */
    return 2.0 * per_tok * T + att + 2.0 * (double)s->vocab * s->hidden;
}

static int bench_prefill(const apr_model *m, const shape *s, uint32_t T, int reps, uint64_t wbytes,
                         const char *mode)
{
    setenv("APR_CUDA_MATH", mode, 1);
    apr_fwd_opts o = {.device = APR_DEV_CUDA, .max_ctx = T};
    apr_fwd *f = NULL;
    apr_err err = {0};
    double t0 = apr_now_s();
    if (apr_fwd_load(&f, m, &o, &err)) {
        fprintf(stderr, "bench_gpu: load (%s): %s\n", mode, err.msg);
        return -1;
    }
    double t_load = apr_now_s() - t0;
    int32_t *tok = malloc(T * sizeof *tok);
    float *lg = malloc((size_t)s->vocab * sizeof *lg);
    uint64_t rng = 7;
    for (uint32_t i = 0; i < T; i++)
        tok[i] = (int32_t)(rng_next(&rng) % s->vocab);
    int rc = apr_fwd_eval_last(f, tok, T, lg, NULL, &err); /* warm-up: cuBLAS heuristics, caches */
    double best = INFINITY, sum = 0;
    for (int r = 0; r < reps && !rc; r++) {
        apr_fwd_reset(f);
        t0 = apr_now_s();
        rc = apr_fwd_eval_last(f, tok, T, lg, NULL, &err);
        double dt = apr_now_s() - t0;
        sum += dt;
        if (dt < best)
            best = dt;
    }
    if (rc) {
        fprintf(stderr, "bench_gpu: eval (%s): %s\n", mode, err.msg);
    } else {
        bool finite = true;
        for (uint32_t i = 0; i < s->vocab; i++)
            finite = finite && isfinite(lg[i]);
        const double t_bw = (double)wbytes / H200_BW, t_fl = prefill_flops(s, T) / H200_F16;
        const double roof = t_bw > t_fl ? t_bw : t_fl;
        printf("  %-5s load %6.2f s | prefill %u tok: best %8.2f ms, mean %8.2f ms = %9.0f tok/s | "
               "%5.1f%% of roofline (%.2f ms)%s\n",
               mode, t_load, T, best * 1e3, sum / reps * 1e3, T / best, 100.0 * roof / best, roof * 1e3,
               finite ? "" : "  [non-finite logits!]");
        if (!strcmp(mode, "f32")) {
            const double t32 = prefill_flops(s, T) / H200_F32;
            const double t_dq = 8.0 * matmul_params(s) / H200_BW;
            printf("        f32 path ceilings: FP32 GEMM %.2f ms (%.1f%% reached), dequant scratch traffic %.2f ms\n",
                   t32 * 1e3, 100.0 * t32 / best, t_dq * 1e3);
        }
    }
    free(tok);
    free(lg);
    apr_fwd_free(f);
    return rc ? -1 : 0;
}

/* Verify-style run: both models on K chunks of T tokens, all logits, traced,
 * mean KL divergence on the host. */
static int bench_verify(const apr_model *src, const apr_model *dst, const shape *s, uint32_t T, uint32_t K)
{
    setenv("APR_CUDA_MATH", "f32", 1);
    double t0 = apr_now_s();
    apr_fwd_opts o = {.device = APR_DEV_CUDA, .max_ctx = T};
    apr_fwd *fs = NULL, *fd = NULL;
    apr_err err = {0};
    if (apr_fwd_load(&fs, src, &o, &err) || apr_fwd_load(&fd, dst, &o, &err)) {
        fprintf(stderr, "bench_gpu: verify load: %s\n", err.msg);
        apr_fwd_free(fs);
        return -1;
    }
    double t_load = apr_now_s() - t0;
    float *ls = malloc((size_t)T * s->vocab * sizeof *ls), *ld = malloc((size_t)T * s->vocab * sizeof *ld);
    int32_t *tok = malloc(T * sizeof *tok);
    apr_trace ts, td;
    apr_trace_init(&ts, s->layers, false);
    apr_trace_init(&td, s->layers, false);
    uint64_t rng = 99;
    double kld = 0, t_eval = 0, t_host = 0;
    int rc = 0;
    for (uint32_t k = 0; k < K && !rc; k++) {
        for (uint32_t i = 0; i < T; i++)
            tok[i] = (int32_t)(rng_next(&rng) % s->vocab);
        apr_fwd_reset(fs);
        apr_fwd_reset(fd);
        double a = apr_now_s();
        rc = apr_fwd_eval(fs, tok, T, ls, &ts, &err) || apr_fwd_eval(fd, tok, T, ld, &td, &err);
        double b = apr_now_s();
        t_eval += b - a;
        for (uint32_t t = 0; t < T && !rc; t++) { /* KL(src || dst) per position */
            const float *p = ls + (size_t)t * s->vocab, *q = ld + (size_t)t * s->vocab;
            double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, kl = 0;
            for (uint32_t i = 0; i < s->vocab; i++) {
                mp = p[i] > mp ? p[i] : mp;
                mq = q[i] > mq ? q[i] : mq;
            }
            for (uint32_t i = 0; i < s->vocab; i++) {
                zp += exp(p[i] - mp);
                zq += exp(q[i] - mq);
            }
            for (uint32_t i = 0; i < s->vocab; i++) {
                double lp = p[i] - mp - log(zp), lq = q[i] - mq - log(zq);
                kl += exp(lp) * (lp - lq);
            }
            kld += kl;
        }
        t_host += apr_now_s() - b;
    }
    if (rc)
        fprintf(stderr, "bench_gpu: verify eval: %s\n", err.msg);
    else
        printf("  verify-style run, %u chunks x %u tokens: load both %.2f s, GPU evals %.2f s, host KLD %.2f s, "
               "total %.2f s (mean KLD %.4g of random weights: timing only)\n",
               K, T, t_load, t_eval, t_host, apr_now_s() - t0, kld / ((double)K * T));
    apr_trace_free(&ts);
    apr_trace_free(&td);
    free(ls);
    free(ld);
    free(tok);
    apr_fwd_free(fs);
    apr_fwd_free(fd);
    return rc ? -1 : 0;
}

static int bench_cli(const apr_model *src, const apr_model *dst, const char *apr, const char *tmp, uint32_t T,
                     uint32_t K)
{
    char ps[1024], pd[1024], cmd[4096];
    snprintf(ps, sizeof ps, "%s/bench_gpu_src_f16.gguf", tmp);
    snprintf(pd, sizeof pd, "%s/bench_gpu_dst_q4km.gguf", tmp);
    apr_err err = {0};
    if (apr_gguf_write(src, ps, NULL, &err) || apr_gguf_write(dst, pd, NULL, &err)) {
        fprintf(stderr, "bench_gpu: writing the pair: %s\n", err.msg);
        return -1;
    }
    for (int dev = 0; dev < 2; dev++) {
        snprintf(cmd, sizeof cmd, "'%s' verify '%s' '%s' --device %s --ctx %u --chunks %u --json --logits > /dev/null", apr,
                 ps, pd, dev ? "cpu" : "cuda", T, K);
        double t0 = apr_now_s();
        int st = system(cmd);
        printf("  apr verify --device %-4s (%u x %u tokens): %.2f s (exit status %d)\n", dev ? "cpu" : "cuda", K,
               T, apr_now_s() - t0, st);
    }
    remove(ps);
    remove(pd);
    return 0;
}

/* 0 and a description of the GPU, or -1 and why there is none. */
static int probe(char *desc, size_t cap)
{
#ifdef APR_HAVE_CUDA
    apr_cuda_info info;
    apr_err err = {0};
    if (apr_cuda_probe(&info, &err)) {
        snprintf(desc, cap, "%s", err.msg);
        return -1;
    }
    snprintf(desc, cap, "%s (sm_%d%d, %d SMs, %.1f GiB), matmul precision from APR_CUDA_MATH", info.name,
             info.cc_major, info.cc_minor, info.n_sms, (double)info.total_bytes / (1 << 30));
    return 0;
#else
    snprintf(desc, cap, "this build has no CUDA backend");
    return -1;
#endif
}

int main(int argc, char **argv)
{
    shape s = {4, 4096, 32, 32, 128, 11008, 32000};
    uint32_t T = 512, K = 4;
    int reps = 5;
    const char *apr = NULL, *tmp = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--layers") && v)
            s.layers = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && v)
            T = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && v)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunks") && v)
            K = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--apr") && v)
            apr = argv[++i];
        else if (!strcmp(argv[i], "--tmp") && v)
            tmp = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--layers N] [--tokens N] [--reps N] [--chunks K] [--apr PATH --tmp DIR]\n",
                    argv[0]);
            return 2;
        }
    }
    if (s.layers == 0 || T == 0 || reps <= 0 || K == 0) {
        fprintf(stderr, "bench_gpu: counts must be positive\n");
        return 2;
    }
    char desc[1200];
    if (probe(desc, sizeof desc)) {
        printf("SKIP: bench_gpu: %s\n", desc);
        return 0;
    }
    printf("bench_gpu: %s; LLaMA-7B layer shapes x %u layers, vocab %u\n", desc, s.layers, s.vocab);
    uint64_t wq = 0, wf = 0;
    double t0 = apr_now_s();
    apr_model *dst = build(&s, true, 1, &wq);
    if (!dst)
        return 1;
    printf("Q4_K_M model built in %.2f s: %.1f MiB of matmul weights, %.3g params; roofline for %u tokens: "
           "weights %.3f ms @ 4.8 TB/s, %.3g flop %.3f ms @ 990 TFLOP/s\n",
           apr_now_s() - t0, (double)wq / (1 << 20), matmul_params(&s), T, wq / H200_BW * 1e3, prefill_flops(&s, T),
           prefill_flops(&s, T) / H200_F16 * 1e3);
    const char *modes[] = {"f32", "tf32", "bf16", "f16"};
    int rc = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        rc |= bench_prefill(dst, &s, T, reps, wq, modes[i]);
    printf("  (device memory held during a prefill run: weights + KV cache f32 + one dequant scratch)\n");

    apr_model *src = build(&s, false, 2, &wf);
    if (!src) {
        apr_model_free(dst);
        return 1;
    }
    rc |= bench_verify(src, dst, &s, T, K);
    if (apr && tmp)
        rc |= bench_cli(src, dst, apr, tmp, T, K);
    apr_model_free(src);
    apr_model_free(dst);
    return rc ? 1 : 0;
}
