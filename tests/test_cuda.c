/* test_cuda.c - libforward's CUDA backend against the CPU reference.
 *
 * Runs everywhere. Without a GPU (or in a build without the CUDA backend)
 * the GPU comparisons skip with a visible message; what can be checked on
 * the CPU is checked anyway:
 *   - the device element decoders of every weight dtype, run on the host,
 *     equal libquant's dequantizer bit for bit on random blocks;
 *   - `--device cuda` without a usable GPU is a clear error and `auto` falls
 *     back to the CPU;
 *   - the tolerances used below for quantized weights are checked on the CPU
 *     by comparing the CPU backend on the quantized model with the CPU
 *     backend on its dequantized-to-F32 twin (the numerics the GPU path
 *     uses: f32 GEMM on expanded weights), so they are measured, not guessed.
 * With a GPU: GPU vs CPU logits on the stories260K fixture and on synthetic
 * models of every dtype (docs/gpu.md lists the tolerances), bit-identical
 * GPU logits across containers (GGUF split Q/K/V, safetensors rotate-half
 * rows, APR fused QKV with mixed-dtype parts), run-to-run determinism,
 * incremental KV-cache evaluation, traced statistics, and the out-of-memory
 * and context-limit errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "quant.h"
#include "test_util.h"

#include <jansson.h>
#ifdef APR_HAVE_CUDA
#include "cuda/apr_cuda.h"
#include "cuda/cuda_kernels.h"
#endif

/* ---------------------------------------------------------------- GPU presence */

static bool gpu_checked, gpu_present;
static char gpu_why[1100];

static bool have_gpu(void)
{
    if (gpu_checked)
        return gpu_present;
    gpu_checked = true;
#ifdef APR_HAVE_CUDA
    apr_cuda_info info;
    apr_err err = {0};
    if (apr_cuda_probe(&info, &err) == 0) {
        gpu_present = true;
        snprintf(gpu_why, sizeof gpu_why, "%s (sm_%d%d, %.1f GiB)", info.name, info.cc_major,
                 info.cc_minor, (double)info.total_bytes / (1024.0 * 1024.0 * 1024.0));
        print_message("CUDA device: %s, matmul precision %s\n", gpu_why, apr_cuda_math_name());
    } else {
        snprintf(gpu_why, sizeof gpu_why, "%s", err.msg);
    }
#else
    snprintf(gpu_why, sizeof gpu_why, "this build has no CUDA backend (toolkit not found or APR_CUDA=OFF)");
#endif
    return gpu_present;
}

#define REQUIRE_GPU()                                                                   \
    do {                                                                                \
        if (!have_gpu()) {                                                              \
            tu_skip_or_fail(TU_NEED_GPU, "needs a CUDA GPU: %s", gpu_why);               \
        }                                                                               \
    } while (0)

/* ---------------------------------------------------------------- synthetic models */

/* A small LLaMA / Qwen2 shaped model: every matrix width a multiple of 256
 * so that every block type applies; GQA (4 heads over 2 KV heads). */
enum { S_L = 2, S_H = 256, S_NH = 4, S_NKV = 2, S_HD = 64, S_F = 512, S_V = 384, S_CTX = 256 };

typedef enum layout {
    LAY_GGUF,      /* GGUF names, split Q/K/V, interleaved Q/K rows */
    LAY_HF,        /* safetensors container, HF names, rotate-half Q/K rows */
    LAY_APR_FUSED, /* APR container, HF names, fused qkv_proj (ROWCAT when dtypes differ) */
} layout;

typedef struct spec {
    const char *arch;  /* "llama" or "qwen2" */
    apr_dtype dt;      /* 2-D weights */
    bool q4km;         /* llama.cpp's Q4_K_M mix: attn_v, ffn_down (per use_more_bits), output Q6_K */
    layout lay;
    bool tied;
    bool dequant_twin; /* store every matrix as F32 holding the dequantized dt values */
} spec;

static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Encode rows x cols floats as dtype dt (owned buffer); NULL on failure. */
static uint8_t *encode(apr_dtype dt, const float *x, uint64_t rows, uint64_t cols, uint64_t *nbytes)
{
    const uint64_t rb = apr_dtype_row_bytes(dt, cols);
    if (!rb)
        return NULL;
    uint8_t *out = malloc(rb * rows);
    if (!out)
        return NULL;
    *nbytes = rb * rows;
    uint64_t n = rows * cols;
    switch (dt) {
    case APR_DT_F32:
        memcpy(out, x, n * 4);
        return out;
    case APR_DT_F16:
    case APR_DT_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = dt == APR_DT_F16 ? apr_f32_to_f16(x[i]) : apr_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        return out;
    default:
        if (apr_quantize_chunk(dt, x, out, (int64_t)rows, (int64_t)cols, NULL) != rb * rows) {
            free(out);
            return NULL;
        }
        return out;
    }
}

/* Dequantize an encoded matrix back to f32 (for the twin). */
static float *decode(apr_dtype dt, const uint8_t *p, uint64_t rows, uint64_t cols)
{
    float *y = malloc(rows * cols * sizeof *y);
    const uint64_t rb = apr_dtype_row_bytes(dt, cols);
    for (uint64_t r = 0; y && r < rows; r++)
        if (apr_dequantize_row(dt, p + r * rb, y + r * cols, (int64_t)cols) != 0) {
            free(y);
            return NULL;
        }
    return y;
}

static void gen(uint64_t seed, uint64_t rows, uint64_t cols, float *x, float scale, float offset)
{
    tu_golden_input(seed, rows, cols, x);
    for (uint64_t i = 0; i < rows * cols; i++)
        x[i] = offset + scale * x[i];
}

/* Matrix rows in HF rotate-half order from interleaved order (what
 * convert_hf_to_gguf undoes): HF row h*hd + j*hd/2 + i = GGUF row h*hd + 2i + j. */
static void to_rotate_half(float *m, uint64_t rows, uint64_t cols, uint32_t hd)
{
    float *t = malloc(rows * cols * sizeof *t);
    assert_non_null(t);
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t h = r / hd, w = r % hd, i = w >> 1, j = w & 1;
        memcpy(t + (h * hd + j * (hd / 2) + i) * cols, m + r * cols, cols * sizeof *t);
    }
    memcpy(m, t, rows * cols * sizeof *t);
    free(t);
}

static void add_kvs(apr_model *m, const char *arch)
{
    char k[96];
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", arch), 0);
#define KU(name, v)                                                                     \
    snprintf(k, sizeof k, "%s." name, arch);                                            \
    assert_int_equal(apr_model_set_kv_u32(m, k, v), 0)
    KU("block_count", S_L);
    KU("embedding_length", S_H);
    KU("attention.head_count", S_NH);
    KU("attention.head_count_kv", S_NKV);
    KU("attention.key_length", S_HD);
    KU("feed_forward_length", S_F);
    KU("context_length", S_CTX);
    KU("vocab_size", S_V);
#undef KU
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    assert_int_equal(apr_model_set_kv_f32(m, k, 10000.0f), 0);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    assert_int_equal(apr_model_set_kv_f32(m, k, 1e-5f), 0);
}

/* Add a matrix (floats in interleaved order) encoded as dt. */
static void add_mat(apr_model *m, const char *name, apr_dtype dt, const float *x, uint64_t rows,
                    uint64_t cols, bool twin)
{
    uint64_t nb = 0;
    uint8_t *p = encode(dt, x, rows, cols, &nb);
    assert_non_null(p);
    apr_dtype store = dt;
    if (twin && dt != APR_DT_F32) {
        float *y = decode(dt, p, rows, cols);
        assert_non_null(y);
        free(p);
        p = (uint8_t *)y;
        nb = rows * cols * 4;
        store = APR_DT_F32;
    }
    uint64_t dims[2] = {rows, cols};
    apr_err err = {0};
    int rc = apr_model_add_tensor(m, name, store, 2, dims, p, nb, true, &err);
    if (rc)
        fail_msg("%s: %s", name, err.msg);
}

static void add_vec(apr_model *m, const char *name, const float *x, uint64_t n)
{
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    memcpy(p, x, n * sizeof *p);
    uint64_t dims[1] = {n};
    apr_err err = {0};
    if (apr_model_add_tensor(m, name, APR_DT_F32, 1, dims, p, n * 4, true, &err))
        fail_msg("%s: %s", name, err.msg);
}

/* A fused [q; k; v] tensor: one dtype, or an APR_DT_ROWCAT of parts. */
static void add_fused_qkv(apr_model *m, const char *name, const apr_dtype dts[3], const float *const x[3],
                          const uint64_t rows[3], bool twin)
{
    uint8_t *part[3];
    uint64_t nb[3], total = 0, total_rows = 0;
    apr_dtype sdt[3];
    for (int i = 0; i < 3; i++) {
        sdt[i] = twin ? APR_DT_F32 : dts[i];
        part[i] = encode(dts[i], x[i], rows[i], S_H, &nb[i]);
        assert_non_null(part[i]);
        if (twin && dts[i] != APR_DT_F32) {
            float *y = decode(dts[i], part[i], rows[i], S_H);
            assert_non_null(y);
            free(part[i]);
            part[i] = (uint8_t *)y;
            nb[i] = rows[i] * S_H * 4;
        }
        total += nb[i];
        total_rows += rows[i];
    }
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    for (int i = 0, off = 0; i < 3; off += (int)nb[i], i++) {
        memcpy(buf + off, part[i], nb[i]);
        free(part[i]);
    }
    bool mixed = sdt[0] != sdt[1] || sdt[1] != sdt[2];
    apr_err err = {0};
    if (!mixed) {
        uint64_t dims[2] = {total_rows, S_H};
        if (apr_model_add_tensor(m, name, sdt[0], 2, dims, buf, total, true, &err))
            fail_msg("%s: %s", name, err.msg);
        return;
    }
    apr_tensor_part parts[3];
    for (int i = 0; i < 3; i++)
        parts[i] = (apr_tensor_part){sdt[i], rows[i], nb[i]};
    if (apr_model_add_rowcat_tensor(m, name, S_H, parts, 3, buf, true, &err))
        fail_msg("%s: %s", name, err.msg);
}

static apr_model *build_model(const spec *s)
{
    const bool hf = s->lay != LAY_GGUF, qwen = strcmp(s->arch, "qwen2") == 0;
    apr_model *m = apr_model_new(s->lay == LAY_GGUF ? APR_FMT_GGUF
                                 : s->lay == LAY_HF ? APR_FMT_SAFETENSORS
                                                    : APR_FMT_APR);
    assert_non_null(m);
    add_kvs(m, s->arch);
    const uint64_t QD = S_NH * S_HD, KD = S_NKV * S_HD;
    /* the largest matrix: vocab x hidden or ffn x hidden */
    float *buf = malloc((uint64_t)(S_V > S_F ? S_V : S_F) * S_H * sizeof *buf);
    float *q = malloc(QD * S_H * sizeof *q), *k = malloc(KD * S_H * sizeof *k), *v = malloc(KD * S_H * sizeof *v);
    assert_true(buf && q && k && v);
    char name[128];

    gen(11, S_V, S_H, buf, 2.0f, 0.0f);
    add_mat(m, hf ? "model.embed_tokens.weight" : "token_embd.weight", s->dt, buf, S_V, S_H, s->dequant_twin);
    if (!s->tied) {
        gen(12, S_V, S_H, buf, 2.0f, 0.0f);
        add_mat(m, hf ? "lm_head.weight" : "output.weight", s->q4km ? APR_DT_Q6_K : s->dt, buf, S_V, S_H,
                s->dequant_twin);
    }
    gen(13, 1, S_H, buf, 1.0f, 1.0f);
    add_vec(m, hf ? "model.norm.weight" : "output_norm.weight", buf, S_H);

    for (int l = 0; l < S_L; l++) {
        const uint64_t sd = 1000 + 100 * (uint64_t)l;
        const apr_dtype dv = s->q4km && use_more_bits(l, S_L) ? APR_DT_Q6_K : s->dt;
        const apr_dtype dd = dv; /* ffn_down follows the same rule */
#define NM(gguf, hfn) (snprintf(name, sizeof name, hf ? "model.layers.%d." hfn : "blk.%d." gguf, l), name)
        gen(sd + 1, 1, S_H, buf, 1.0f, 1.0f);
        add_vec(m, NM("attn_norm.weight", "input_layernorm.weight"), buf, S_H);
        gen(sd + 2, 1, S_H, buf, 1.0f, 1.0f);
        add_vec(m, NM("ffn_norm.weight", "post_attention_layernorm.weight"), buf, S_H);
        gen(sd + 3, QD, S_H, q, 2.0f, 0.0f);
        gen(sd + 4, KD, S_H, k, 2.0f, 0.0f);
        gen(sd + 5, KD, S_H, v, 2.0f, 0.0f);
        if (s->lay == LAY_APR_FUSED) {
            const apr_dtype dts[3] = {s->dt, s->dt, dv};
            const float *const xs[3] = {q, k, v};
            const uint64_t rows[3] = {QD, KD, KD};
            add_fused_qkv(m, NM("attn_qkv.weight", "self_attn.qkv_proj.weight"), dts, xs, rows, s->dequant_twin);
        } else {
            if (s->lay == LAY_HF && !qwen) {
                to_rotate_half(q, QD, S_H, S_HD);
                to_rotate_half(k, KD, S_H, S_HD);
            }
            add_mat(m, NM("attn_q.weight", "self_attn.q_proj.weight"), s->dt, q, QD, S_H, s->dequant_twin);
            add_mat(m, NM("attn_k.weight", "self_attn.k_proj.weight"), s->dt, k, KD, S_H, s->dequant_twin);
            add_mat(m, NM("attn_v.weight", "self_attn.v_proj.weight"), dv, v, KD, S_H, s->dequant_twin);
        }
        if (qwen) {
            gen(sd + 6, 1, QD + 2 * KD, buf, 4.0f, 0.0f);
            if (s->lay == LAY_APR_FUSED) {
                add_vec(m, NM("attn_qkv.bias", "self_attn.qkv_proj.bias"), buf, QD + 2 * KD);
            } else {
                add_vec(m, NM("attn_q.bias", "self_attn.q_proj.bias"), buf, QD);
                add_vec(m, NM("attn_k.bias", "self_attn.k_proj.bias"), buf + QD, KD);
                add_vec(m, NM("attn_v.bias", "self_attn.v_proj.bias"), buf + QD + KD, KD);
            }
        }
        gen(sd + 7, S_H, QD, buf, 2.0f, 0.0f);
        add_mat(m, NM("attn_output.weight", "self_attn.o_proj.weight"), s->dt, buf, S_H, QD, s->dequant_twin);
        gen(sd + 8, S_F, S_H, buf, 2.0f, 0.0f);
        add_mat(m, NM("ffn_gate.weight", "mlp.gate_proj.weight"), s->dt, buf, S_F, S_H, s->dequant_twin);
        gen(sd + 9, S_F, S_H, buf, 2.0f, 0.0f);
        add_mat(m, NM("ffn_up.weight", "mlp.up_proj.weight"), s->dt, buf, S_F, S_H, s->dequant_twin);
        gen(sd + 10, S_H, S_F, buf, 2.0f, 0.0f);
        add_mat(m, NM("ffn_down.weight", "mlp.down_proj.weight"), dd, buf, S_H, S_F, s->dequant_twin);
#undef NM
    }
    free(buf);
    free(q);
    free(k);
    free(v);
    apr_err err = {0};
    if (apr_model_derive(m, &err))
        fail_msg("derive: %s", err.msg);
    return m;
}

/* ---------------------------------------------------------------- running */

static const int32_t PROMPT[] = {1, 17, 250, 3, 99, 381, 42, 42, 7, 128, 300, 5, 64, 200, 11, 77};
#define N_PROMPT ((uint32_t)(sizeof PROMPT / sizeof PROMPT[0]))

/* Logits (n x vocab, malloc'd) of the tokens on a device; trace optional. */
static float *run(const apr_model *m, apr_device dev, const int32_t *tok, uint32_t n, apr_trace *tr)
{
    apr_fwd_opts o = {.n_threads = 2, .device = dev, .max_ctx = 128};
    apr_fwd *f = NULL;
    apr_err err = {0};
    if (apr_fwd_load(&f, m, &o, &err))
        fail_msg("load on %s: %s", dev == APR_DEV_CUDA ? "cuda" : "cpu", err.msg);
    assert_int_equal(apr_fwd_device(f), dev);
    uint32_t V = apr_fwd_config(f)->vocab;
    float *lg = malloc((size_t)n * V * sizeof *lg);
    assert_non_null(lg);
    if (apr_fwd_eval(f, tok, n, lg, tr, &err))
        fail_msg("eval: %s", err.msg);
    apr_fwd_free(f);
    return lg;
}

typedef struct cmp {
    double min_cos;  /* over positions */
    double max_abs;  /* max |a - b| */
    double max_ref;  /* max |b| */
} cmp;

static cmp compare(const float *a, const float *b, uint32_t n, uint32_t V)
{
    cmp c = {1.0, 0.0, 0.0};
    for (uint32_t t = 0; t < n; t++) {
        double dot = 0, na = 0, nb = 0;
        for (uint32_t i = 0; i < V; i++) {
            double x = a[(size_t)t * V + i], y = b[(size_t)t * V + i];
            dot += x * y;
            na += x * x;
            nb += y * y;
            double d = fabs(x - y);
            if (!(d <= c.max_abs)) /* NaN counts as the worst */
                c.max_abs = isnan(d) ? INFINITY : d;
            if (fabs(y) > c.max_ref)
                c.max_ref = fabs(y);
        }
        double cs = na > 0 && nb > 0 ? dot / sqrt(na * nb) : (na == nb ? 1.0 : 0.0);
        if (!(cs >= c.min_cos))
            c.min_cos = isnan(cs) ? -1.0 : cs;
    }
    return c;
}

/* Tolerances (docs/gpu.md). "exact": the GPU against the CPU on the same
 * f32 numerics (F32 weights, or a model's dequantized-to-F32 twin): only the
 * summation order differs. The CPU multiplies F16/BF16 weights with f32
 * activations, so the bound holds for them too. For block types the CPU
 * reference quantizes each activation row to Q8_K / Q8_0 as ggml does and
 * the GPU does not, so GPU vs CPU differ by about as much as the CPU differs
 * from its own f32 twin: asserted as "no more than twice that, plus the
 * exact bound", with a fixed floor ("quant") that test_tolerances_hold_on_cpu
 * checks on every machine. Max-abs bounds are relative to the largest
 * reference logit. */
#define COS_EXACT 0.99999
#define REL_EXACT 1e-4
#define COS_QUANT 0.99
#define REL_QUANT 0.12

static bool is_block(apr_dtype t)
{
    return t != APR_DT_F32 && t != APR_DT_F16 && t != APR_DT_BF16;
}

static const apr_dtype ALL_DT[] = {APR_DT_F32, APR_DT_F16, APR_DT_BF16, APR_DT_Q8_0, APR_DT_Q4_0,
                                   APR_DT_Q4_1, APR_DT_Q5_0, APR_DT_Q5_1, APR_DT_Q4_K, APR_DT_Q5_K,
                                   APR_DT_Q6_K};
#define N_ALL_DT (sizeof ALL_DT / sizeof ALL_DT[0])

/* ---------------------------------------------------------------- CPU-side tests */

/* The device decoders, run on the host, equal libquant's dequantizer bit for
 * bit, on random block bytes (every bit pattern of the quants and scales)
 * with finite f16 scale fields. */
static void test_decoders_match_libquant(void **state)
{
    (void)state;
#ifndef APR_HAVE_CUDA
    tu_skip_or_fail(TU_NEED_GPU, "this build has no CUDA backend, so no decoders to check");
#else
    /* offsets of the f16 scale fields per dtype (-1: none) */
    static const struct { apr_dtype t; int f16_at[2]; } fields[] = {
        {APR_DT_F32, {-1, -1}},  {APR_DT_F16, {-1, -1}},  {APR_DT_BF16, {-1, -1}},
        {APR_DT_Q4_0, {0, -1}},  {APR_DT_Q4_1, {0, 2}},   {APR_DT_Q5_0, {0, -1}},
        {APR_DT_Q5_1, {0, 2}},   {APR_DT_Q8_0, {0, -1}},  {APR_DT_Q4_K, {0, 2}},
        {APR_DT_Q5_K, {0, 2}},   {APR_DT_Q6_K, {208, -1}}};
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        const apr_dtype t = fields[f].t;
        const apr_dtype_info *di = apr_dtype_get(t);
        assert_non_null(di);
        assert_true(apr_cuda_dtype_supported(t));
        const int64_t n = 64 * (int64_t)(di->block_elems > 1 ? di->block_elems : 64);
        const uint64_t nb = apr_dtype_row_bytes(t, (uint64_t)n);
        uint8_t *src = malloc(nb);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        assert_true(src && a && b);
        for (uint64_t i = 0; i < nb; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            src[i] = (uint8_t)(st >> 56);
        }
        const size_t nblocks = nb / di->block_bytes;
        for (size_t blk = 0; blk < nblocks; blk++)
            for (int j = 0; j < 2; j++) {
                int at = fields[f].f16_at[j];
                if (at < 0)
                    continue;
                uint8_t *p = src + blk * di->block_bytes + at;
                if (((p[1] >> 2) & 0x1f) == 0x1f) /* Inf/NaN exponent: make it finite */
                    p[1] &= (uint8_t)~0x40;
            }
        if (t == APR_DT_F32) /* finite floats only: NaN payload handling is not the point */
            for (int64_t i = 0; i < n; i++)
                if ((src[4 * i + 3] & 0x7f) == 0x7f && (src[4 * i + 2] & 0x80))
                    src[4 * i + 3] &= 0xbf;
        if (t == APR_DT_F16)
            for (int64_t i = 0; i < n; i++)
                if (((src[2 * i + 1] >> 2) & 0x1f) == 0x1f)
                    src[2 * i + 1] &= (uint8_t)~0x40;
        if (t == APR_DT_BF16)
            for (int64_t i = 0; i < n; i++)
                if ((src[2 * i + 1] & 0x7f) == 0x7f && (src[2 * i] & 0x80))
                    src[2 * i + 1] &= 0xbf;
        assert_int_equal(apr_dequantize_row(t, src, a, n), 0);
        assert_int_equal(apr_cuda_ref_dequant_row(t, src, b, n), 0);
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4) != 0)
                fail_msg("%s element %lld: libquant %.9g, CUDA decoder %.9g", apr_dtype_name(t),
                         (long long)i, (double)a[i], (double)b[i]);
        free(src);
        free(a);
        free(b);
    }
    assert_false(apr_cuda_dtype_supported(APR_DT_Q2_K));
    float dummy[256];
    assert_int_equal(apr_cuda_ref_dequant_row(APR_DT_Q4_K, dummy, dummy, 100), APR_E_ARG);
#endif
}

/* `--device cuda` without a usable GPU: a clear error; `auto`: the CPU. */
static void test_device_selection(void **state)
{
    (void)state;
    spec s = {"llama", APR_DT_F32, false, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    apr_fwd *f = NULL;
    apr_err err = {0};
    apr_fwd_opts o = {.n_threads = 1, .device = APR_DEV_CUDA, .max_ctx = 64};
    int rc = apr_fwd_load(&f, m, &o, &err);
    if (have_gpu()) {
        assert_int_equal(rc, 0);
        assert_int_equal(apr_fwd_device(f), APR_DEV_CUDA);
        apr_fwd_free(f);
        o.device = APR_DEV_AUTO;
        assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
        assert_int_equal(apr_fwd_device(f), APR_DEV_CUDA); /* auto prefers the GPU */
    } else {
        assert_int_not_equal(rc, 0);
        assert_null(f);
        print_message("--device cuda here: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "CUDA"));
#ifdef APR_HAVE_CUDA
        assert_non_null(strstr(err.msg, "no CUDA device"));
#endif
        o.device = APR_DEV_AUTO;
        err = (apr_err){0};
        assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
        assert_int_equal(apr_fwd_device(f), APR_DEV_CPU);
    }
    float *lg = malloc(S_V * sizeof *lg);
    assert_int_equal(apr_fwd_eval(f, PROMPT, 1, lg, NULL, &err), 0);
    free(lg);
    apr_fwd_free(f);
    apr_model_free(m);
}

/* The "quant" tolerances cover the CPU's own difference between running the
 * quantized weights (Q8 activations) and running their f32 twin (what the
 * GPU computes): measured here, on the CPU, for every dtype. */
static void test_tolerances_hold_on_cpu(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ALL_DT; i++) {
        spec s = {"llama", ALL_DT[i], false, LAY_GGUF, false, false};
        apr_model *mq = build_model(&s);
        s.dequant_twin = true;
        apr_model *mt = build_model(&s);
        float *a = run(mq, APR_DEV_CPU, PROMPT, N_PROMPT, NULL);
        float *b = run(mt, APR_DEV_CPU, PROMPT, N_PROMPT, NULL);
        cmp c = compare(a, b, N_PROMPT, S_V);
        print_message("CPU %-5s quantized vs f32 twin: min cosine %.8f, max |diff| %.3g (max |logit| %.3g)\n",
                      apr_dtype_name(ALL_DT[i]), c.min_cos, c.max_abs, c.max_ref);
        const bool blk = is_block(ALL_DT[i]);
        assert_true(c.min_cos >= (blk ? COS_QUANT : COS_EXACT));
        assert_true(c.max_abs <= (blk ? REL_QUANT : REL_EXACT) * c.max_ref);
        free(a);
        free(b);
        apr_model_free(mq);
        apr_model_free(mt);
    }
}

/* ---------------------------------------------------------------- GPU tests */

static void check_gpu_vs_cpu(const char *what, const apr_model *m, const apr_model *twin, apr_dtype dt,
                             const int32_t *tok, uint32_t n, uint32_t V)
{
    float *g = run(m, APR_DEV_CUDA, tok, n, NULL);
    float *c = run(m, APR_DEV_CPU, tok, n, NULL);
    cmp r = compare(g, c, n, V);
    print_message("GPU vs CPU %-22s min cosine %.8f, max |diff| %.3g (max |logit| %.3g)\n", what, r.min_cos,
                  r.max_abs, r.max_ref);
    if (!is_block(dt)) {
        assert_true(r.min_cos >= COS_EXACT);
        assert_true(r.max_abs <= REL_EXACT * r.max_ref);
    } else {
        assert_true(r.min_cos >= COS_QUANT);
        assert_true(r.max_abs <= REL_QUANT * r.max_ref);
    }
    if (twin) {
        float *t = run(twin, APR_DEV_CPU, tok, n, NULL);
        cmp e = compare(g, t, n, V);     /* same numerics as the GPU: the tight bound */
        cmp q = compare(c, t, n, V);     /* the CPU's own activation-quantization effect */
        print_message("    vs CPU f32 twin: min cosine %.8f, max |diff| %.3g; CPU vs its twin %.8f, %.3g\n",
                      e.min_cos, e.max_abs, q.min_cos, q.max_abs);
        assert_true(e.min_cos >= COS_EXACT);
        assert_true(e.max_abs <= REL_EXACT * e.max_ref);
        assert_true(r.min_cos >= 1.0 - 2.0 * (1.0 - q.min_cos) - (1.0 - COS_EXACT));
        assert_true(r.max_abs <= 2.0 * q.max_abs + REL_EXACT * r.max_ref);
        free(t);
    }
    free(g);
    free(c);
}

static void test_gpu_fixture(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, "fixtures/stories260K-f32.gguf");
    REQUIRE_GPU();
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("%s", err.msg);
    check_gpu_vs_cpu("stories260K F32", m, NULL, APR_DT_F32, PROMPT, N_PROMPT, m->cfg.vocab);
    apr_model_free(m);
}

static void test_gpu_synthetic_dtypes(void **state)
{
    (void)state;
    REQUIRE_GPU();
    for (size_t i = 0; i < N_ALL_DT; i++) {
        for (int qwen = 0; qwen < 2; qwen++) {
            spec s = {qwen ? "qwen2" : "llama", ALL_DT[i], false, LAY_GGUF, qwen == 1, false};
            apr_model *m = build_model(&s);
            s.dequant_twin = true;
            apr_model *t = build_model(&s);
            char what[64];
            snprintf(what, sizeof what, "%s %s", s.arch, apr_dtype_name(ALL_DT[i]));
            check_gpu_vs_cpu(what, m, t, ALL_DT[i], PROMPT, N_PROMPT, S_V);
            apr_model_free(m);
            apr_model_free(t);
        }
    }
    spec s = {"llama", APR_DT_Q4_K, true, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    s.dequant_twin = true;
    apr_model *t = build_model(&s);
    check_gpu_vs_cpu("llama Q4_K_M mix", m, t, APR_DT_Q4_K, PROMPT, N_PROMPT, S_V);
    apr_model_free(m);
    apr_model_free(t);
}

/* The same weights in three containers give the same bits on the GPU. */
static void test_gpu_lossless_containers(void **state)
{
    (void)state;
    REQUIRE_GPU();
    const struct { const char *arch; apr_dtype dt; bool q4km; } cases[] = {
        {"llama", APR_DT_F16, false}, {"llama", APR_DT_Q4_K, true}, {"qwen2", APR_DT_BF16, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float *ref = NULL;
        for (int lay = LAY_GGUF; lay <= LAY_APR_FUSED; lay++) {
            spec s = {cases[i].arch, cases[i].dt, cases[i].q4km, (layout)lay, false, false};
            apr_model *m = build_model(&s);
            float *lg = run(m, APR_DEV_CUDA, PROMPT, N_PROMPT, NULL);
            if (!ref)
                ref = lg;
            else {
                if (memcmp(ref, lg, (size_t)N_PROMPT * S_V * sizeof *lg) != 0) {
                    cmp c = compare(lg, ref, N_PROMPT, S_V);
                    fail_msg("%s %s%s layout %d: logits differ from GGUF's (max |diff| %.3g)", cases[i].arch,
                             apr_dtype_name(cases[i].dt), cases[i].q4km ? " (Q4_K_M mix)" : "", lay, c.max_abs);
                }
                free(lg);
            }
            apr_model_free(m);
        }
        free(ref);
    }
}

/* Run to run, and prompt-at-once vs token by token through the KV cache. */
static void test_gpu_deterministic_and_incremental(void **state)
{
    (void)state;
    REQUIRE_GPU();
    spec s = {"qwen2", APR_DT_Q6_K, false, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    float *a = run(m, APR_DEV_CUDA, PROMPT, N_PROMPT, NULL);
    float *b = run(m, APR_DEV_CUDA, PROMPT, N_PROMPT, NULL);
    assert_memory_equal(a, b, (size_t)N_PROMPT * S_V * sizeof *a);

    apr_fwd_opts o = {.n_threads = 2, .device = APR_DEV_CUDA, .max_ctx = 64};
    apr_fwd *f = NULL;
    apr_err err = {0};
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
    float *inc = malloc((size_t)N_PROMPT * S_V * sizeof *inc);
    assert_int_equal(apr_fwd_eval(f, PROMPT, 5, inc, NULL, &err), 0);
    for (uint32_t t = 5; t < N_PROMPT; t++)
        assert_int_equal(apr_fwd_eval(f, PROMPT + t, 1, inc + (size_t)t * S_V, NULL, &err), 0);
    assert_int_equal(apr_fwd_pos(f), N_PROMPT);
    cmp c = compare(inc, a, N_PROMPT, S_V);
    print_message("GPU incremental vs one batch: min cosine %.8f, max |diff| %.3g\n", c.min_cos, c.max_abs);
    assert_true(c.min_cos >= COS_EXACT);
    assert_true(c.max_abs <= REL_EXACT * c.max_ref);
    /* after a reset the cache is reused from position 0 */
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_eval(f, PROMPT, N_PROMPT, inc, NULL, &err), 0);
    assert_memory_equal(inc, a, (size_t)N_PROMPT * S_V * sizeof *a);
    /* the context limit is enforced before the backend */
    int32_t many[64] = {0};
    assert_int_not_equal(apr_fwd_eval(f, many, 64, NULL, NULL, &err), 0);
    apr_fwd_free(f);
    free(inc);
    free(a);
    free(b);
    apr_model_free(m);
}

/* Traced statistics on the GPU match the CPU's table. */
static void test_gpu_trace(void **state)
{
    (void)state;
    REQUIRE_GPU();
    spec s = {"llama", APR_DT_F32, false, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    for (int last = 0; last < 2; last++) {
        apr_trace tg, tc;
        assert_int_equal(apr_trace_init(&tg, S_L, last), 0);
        assert_int_equal(apr_trace_init(&tc, S_L, last), 0);
        free(run(m, APR_DEV_CUDA, PROMPT, N_PROMPT, &tg));
        free(run(m, APR_DEV_CPU, PROMPT, N_PROMPT, &tc));
        for (uint32_t i = 0; i < S_L * APR_TR_COUNT; i++) {
            const apr_stats *g = &tg.s[i], *c = &tc.s[i];
            const char *nm = apr_trace_step_name((apr_trace_step)(i % APR_TR_COUNT));
            if (g->n != c->n || g->nonfinite != c->nonfinite)
                fail_msg("layer %u %s: counts %llu/%llu vs %llu/%llu", i / APR_TR_COUNT, nm,
                         (unsigned long long)g->n, (unsigned long long)g->nonfinite,
                         (unsigned long long)c->n, (unsigned long long)c->nonfinite);
            const double scale = fabs(c->std) + fabs(c->mean) + 1e-6;
            if (fabs(g->mean - c->mean) > 1e-3 * scale || fabs(g->std - c->std) > 1e-3 * scale ||
                fabs(g->min - c->min) > 1e-3 * scale || fabs(g->max - c->max) > 1e-3 * scale)
                fail_msg("layer %u %s (%s): GPU mean %g std %g min %g max %g, CPU %g %g %g %g",
                         i / APR_TR_COUNT, nm, last ? "last token" : "all tokens", g->mean, g->std,
                         g->min, g->max, c->mean, c->std, c->min, c->max);
        }
        assert_int_equal(tg.s[0].n, (uint64_t)S_H * (last ? 1 : N_PROMPT));
        apr_trace_free(&tg);
        apr_trace_free(&tc);
    }
    apr_model_free(m);
}

/* Out of device memory and too long a context: clear errors with --device
 * cuda, the CPU with auto. APR_CUDA_MAX_MB caps what the backend may take. */
static void test_gpu_errors(void **state)
{
    (void)state;
    REQUIRE_GPU();
    spec s = {"llama", APR_DT_F32, false, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    apr_fwd *f = NULL;
    apr_err err = {0};
    apr_fwd_opts o = {.n_threads = 1, .device = APR_DEV_CUDA, .max_ctx = 64};

    setenv("APR_CUDA_MAX_MB", "1", 1);
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), APR_E_NOMEM);
    print_message("capped at 1 MiB: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "CUDA out of memory"));
    o.device = APR_DEV_AUTO;
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
    assert_int_equal(apr_fwd_device(f), APR_DEV_CPU);
    apr_fwd_free(f);
    f = NULL;
    unsetenv("APR_CUDA_MAX_MB");
#ifdef APR_HAVE_CUDA
    assert_int_equal(apr_cuda_bytes_in_use(), 0); /* the failed load released everything */
#endif

    o.device = APR_DEV_CUDA;
    o.max_ctx = 1u << 20;
    assert_int_not_equal(apr_fwd_load(&f, m, &o, &err), 0);
    print_message("context of 2^20: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "context"));
    assert_null(f);
    apr_model_free(m);
}

/* `apr verify` gives the same verdict on both devices: a lossless pair (the
 * same F16 weights as GGUF and as APR) and a quantized one (F16 vs Q8_0).
 * The CPU half runs everywhere (it checks this harness); the GPU half needs
 * a device and is reported as skipped without one. The models are random
 * (synthetic): --limits synthetic; --logits, since the devices are compared. */
static bool verify_run(const char *dir, const char *src, const char *dst, const char *dev, int *status,
                       bool *pass, bool *bit_identical)
{
    const char *out = tu_path(dir, "verify.json");
    *status = tu_system(out, "'%s' verify '%s' '%s' --device %s --ctx 64 --chunks 2 --json --logits --limits synthetic", tu_apr_bin(), src,
                        dst, dev);
    char *j = tu_read_file(out, NULL);
    if (!j)
        return false;
    json_t *root = json_loads(j, 0, NULL);
    json_t *verdict = json_object_get(root, "verdict"), *logits = json_object_get(root, "logits");
    bool ok = json_is_object(verdict) && json_is_object(logits);
    *pass = json_is_true(json_object_get(verdict, "pass"));
    *bit_identical = json_is_true(json_object_get(logits, "bit_identical"));
    if (!ok)
        print_message("apr verify --device %s printed: %.400s\n", dev, j);
    json_decref(root);
    free(j);
    return ok;
}

static void test_verify_verdicts_both_devices(void **state)
{
    (void)state;
    if (!tu_apr_bin()) {
        tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set");
    }
    const char *dir = tu_tmpdir("cuda_verify");
    assert_non_null(dir);
    char src[1024], lossless[1024], quant[1024];
    snprintf(src, sizeof src, "%s", tu_path(dir, "src.gguf"));
    snprintf(lossless, sizeof lossless, "%s", tu_path(dir, "same.apr"));
    snprintf(quant, sizeof quant, "%s", tu_path(dir, "q8.gguf"));
    spec s = {"llama", APR_DT_F16, false, LAY_GGUF, false, false};
    apr_model *m = build_model(&s);
    apr_err err = {0};
    if (apr_model_write(m, src, APR_FMT_GGUF, NULL, &err) || apr_model_write(m, lossless, APR_FMT_APR, NULL, &err))
        fail_msg("writing the pair: %s", err.msg);
    apr_model_free(m);
    s.dt = APR_DT_Q8_0;
    m = build_model(&s);
    if (apr_model_write(m, quant, APR_FMT_GGUF, NULL, &err))
        fail_msg("writing the pair: %s", err.msg);
    apr_model_free(m);

    const char *dsts[2] = {lossless, quant};
    for (int i = 0; i < 2; i++) {
        int st_c, st_g;
        bool pass_c, pass_g, bit_c, bit_g;
        if (!verify_run(dir, src, dsts[i], "cpu", &st_c, &pass_c, &bit_c))
            fail_msg("apr verify --device cpu gave no JSON report (exit %d)", st_c);
        print_message("apr verify %s, cpu: exit %d, pass %d, bit-identical %d\n", i ? "F16 -> Q8_0" : "GGUF -> APR",
                      st_c, pass_c, bit_c);
        assert_int_equal(st_c, 0);
        assert_true(pass_c);
        assert_true(bit_c == (i == 0));
        if (!have_gpu())
            continue;
        if (!verify_run(dir, src, dsts[i], "cuda", &st_g, &pass_g, &bit_g))
            fail_msg("apr verify --device cuda gave no JSON report (exit %d)", st_g);
        print_message("apr verify %s, cuda: exit %d, pass %d, bit-identical %d\n", i ? "F16 -> Q8_0" : "GGUF -> APR",
                      st_g, pass_g, bit_g);
        assert_int_equal(st_g, st_c);
        assert_true(pass_g == pass_c);
        assert_true(bit_g == bit_c);
    }
    if (!have_gpu()) {
        tu_skip_or_fail(TU_NEED_GPU, "the CPU verdicts were checked; the GPU half needs a CUDA GPU: %s", gpu_why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoders_match_libquant),
        cmocka_unit_test(test_device_selection),
        cmocka_unit_test(test_tolerances_hold_on_cpu),
        cmocka_unit_test(test_gpu_fixture),
        cmocka_unit_test(test_gpu_synthetic_dtypes),
        cmocka_unit_test(test_gpu_lossless_containers),
        cmocka_unit_test(test_gpu_deterministic_and_incremental),
        cmocka_unit_test(test_gpu_trace),
        cmocka_unit_test(test_gpu_errors),
        cmocka_unit_test(test_verify_verdicts_both_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
