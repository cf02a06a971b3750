/* graph.h - libforward's model graph, shared by the CPU reference backend
 * (cpu.c), the CUDA backend (libforward/cuda/, CUDA) and libparity's weight
 * comparison. Public, reached through forward.h (include that); the backend
 * vtable the graph is evaluated by is internal (libforward/backend.h).
 *
 * apr_fwd_load() resolves an apr_model (GGUF, safetensors or APR names; split
 * or fused QKV; any dtype) into an apr_graph: per layer, views of the weights
 * IN PLACE (pointer into the mapped file, dtype, rows, cols), and small owned
 * f32 copies of the 1-D tensors (norms, biases). A backend then evaluates
 * tokens against that graph through the apr_backend vtable.
 *
 * Conventions (hold for every backend):
 *   - A weight matrix has rows = output features, cols = input features, in
 *     every format (formats.h dims are outermost first: {out, in}).
 *     out[r] = dot(row r, x).
 *   - Q and K rows are presented in LOGICAL order = GGUF/Meta "interleaved"
 *     order for NORM rope (pairs (2i, 2i+1) of each head rotate together), and
 *     the stored order for NEOX rope (pairs (i, i + hd/2)). A safetensors LLaMA
 *     stores Q/K in HF rotate-half order (not permuted by convert_hf_to_gguf);
 *     instead of copying, the view carries perm_hd != 0 and every backend maps
 *     logical row r to physical row apr_wmat_phys_row(m, r). The Q/K vectors a
 *     backend computes are then bit-for-bit those of the GGUF conversion, so
 *     rope, attention scores and everything after sum in the same order: the
 *     logits are bit-identical across containers (apr verify's lossless check).
 *     Biases are stored already permuted into logical order.
 *   - Fused QKV (APR): q, k, v are slices of the fused tensor (rows Q, then K,
 *     then V); qkv_fused is set and qkv views the whole tensor, for backends
 *     that prefer one GEMM. APR_DT_ROWCAT tensors become several segments, each
 *     one dtype; a slice may span segments.
 *   - RMSNorm weights are the multipliers themselves: a source that stores
 *     them offset (HF Gemma's 1 + w) has cfg.hf_norm_offset added on load.
 *   - Trace statistics (apr_stats_acc, backend.h): Q and K are traced after the
 *     bias and BEFORE rope; attn_out is the concatenated head outputs before
 *     o_proj; swiglu is silu(gate) * up.
 *
 * Which Q/K row order the source holds (apr_graph.qk_rotate_half_rows):
 *   KV "apr.qk_row_order" = "interleaved" | "rotate_half" when present; else
 *   by container: GGUF -> interleaved (llama.cpp permuted them), safetensors ->
 *   rotate_half (HF), APR -> interleaved (APR's rope_type 0 = NORM means
 *   adjacent pairs, so APR files hold llama.cpp's order). Only meaningful for
 *   NORM rope; NEOX models (Qwen2) are never permuted.
 */
#ifndef APR_FORWARD_GRAPH_H
#define APR_FORWARD_GRAPH_H

#include "forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A run of consecutive physical rows sharing one dtype (never ROWCAT). */
typedef struct apr_wseg {
    const uint8_t *data;  /* first row of the segment */
    apr_dtype dtype;      /* F32, F16, BF16 or a ggml block type */
    uint64_t rows;
    uint64_t row_bytes;   /* apr_dtype_row_bytes(dtype, cols) */
} apr_wseg;

/* A weight matrix of rows x cols (physical rows split into 1..APR_MAX_PARTS
 * segments), with an optional logical->physical row permutation. */
typedef struct apr_wmat {
    const char *name;     /* source tensor name (borrowed from the model), for messages */
    uint64_t rows, cols;
    uint32_t n_seg;
    apr_wseg seg[APR_MAX_PARTS];
    /* 0: logical row = physical row. Otherwise the head size hd of an HF
     * rotate-half Q/K matrix: logical row h*hd + 2i + j is physical row
     * h*hd + j*hd/2 + i (j in {0,1}, i < hd/2) -- the inverse of
     * convert_hf_to_gguf's permute. */
    uint32_t perm_hd;
} apr_wmat;

/* Physical row of logical row r. */
static inline uint64_t apr_wmat_phys_row(const apr_wmat *m, uint64_t r)
{
    if (!m->perm_hd)
        return r;
    const uint64_t hd = m->perm_hd, h = r / hd, w = r % hd;
    return h * hd + (w & 1) * (hd / 2) + (w >> 1);
}

/* Pointer and dtype of physical row p (p < rows). */
static inline const uint8_t *apr_wmat_row(const apr_wmat *m, uint64_t p, apr_dtype *dt)
{
    uint32_t s = 0;
    while (s + 1 < m->n_seg && p >= m->seg[s].rows) {
        p -= m->seg[s].rows;
        s++;
    }
    *dt = m->seg[s].dtype;
    return m->seg[s].data + p * m->seg[s].row_bytes;
}

typedef struct apr_layer {
    float *attn_norm;     /* hidden, owned f32 */
    float *ffn_norm;      /* hidden */
    apr_wmat q, k, v;     /* q: n_heads*head_dim rows; k, v: n_kv_heads*head_dim rows */
    float *bq, *bk, *bv;  /* NULL when absent; logical order (permuted like q/k) */
    float *q_norm, *k_norm; /* head_dim each (Qwen3: RMSNorm of every Q/K head before rope), or NULL */
    float *post_attn_norm, *post_ffn_norm; /* hidden each (Gemma: norms of the attention / FFN output), or NULL */
    bool sliding;         /* this layer's attention uses cfg.sliding_window */
    apr_wmat o;           /* hidden x n_heads*head_dim */
    apr_wmat gate, up;    /* ffn x hidden */
    apr_wmat down;        /* hidden x ffn */
    bool qkv_fused;       /* q, k, v are slices of qkv */
    apr_wmat qkv;         /* the whole fused tensor when qkv_fused (perm_hd 0) */
} apr_layer;

typedef struct apr_graph {
    apr_arch_config cfg;  /* copy of the model's derived config */
    /* Rope applied to LOGICAL Q/K rows: NORM = pairs (2i, 2i+1), NEOX = pairs
     * (i, i + hd/2); pair i rotates by pos * theta^(-2i/hd). */
    apr_rope_type rope;
    bool qk_rotate_half_rows; /* the source stores NORM-rope Q/K in HF order (perm_hd set) */
    apr_wmat token_embd;  /* vocab x hidden */
    apr_wmat output;      /* vocab x hidden; a copy of token_embd's view when tied */
    bool output_tied;
    float *output_norm;   /* hidden */
    apr_layer *layers;    /* cfg.n_layers */
    /* rope_freqs.weight (head_dim / 2, owned f32) or NULL: pair i's angle is
     * divided by rope_freqs[i] (llama3 rope scaling), as ggml_rope_ext does. */
    float *rope_freqs;
    /* A feature the graph uses that only the CPU backend implements (NULL:
     * none); the CUDA backend is not tried for such a graph. */
    const char *cpu_only;
    const apr_model *model;
} apr_graph;

/* Resolve a model into a graph (graph.c). Checks every shape against the
 * config and names the tensor on error. */
int apr_graph_build(apr_graph *g, const apr_model *m, apr_err *err);
void apr_graph_free(apr_graph *g);

#ifdef __cplusplus
}
#endif
#endif /* APR_FORWARD_GRAPH_H */
