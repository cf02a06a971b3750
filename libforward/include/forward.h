/* forward.h - the public header of libforward: the model graph (LLaMA and
 * Qwen2 families), the CPU reference forward pass, the CUDA backend behind the
 * same interface and traced per-layer statistics (tokenizers: libtok/include/tok.h).
 */
#ifndef APR_FORWARD_H
#define APR_FORWARD_H

#include "formats.h"
#include "quant.h" /* apr_imatrix_stats */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum apr_device { APR_DEV_AUTO = 0, APR_DEV_CPU = 1, APR_DEV_CUDA = 2 } apr_device;

typedef struct apr_fwd_opts {
    int n_threads;       /* <= 0: all cores */
    apr_device device;
    uint32_t max_ctx;    /* KV cache length; 0 = min(ctx_len, 2048) */
} apr_fwd_opts;

/* Sub-steps traced per layer, in execution order. */
typedef enum apr_trace_step {
    APR_TR_ATTN_NORM, APR_TR_Q, APR_TR_K, APR_TR_V, APR_TR_ATTN_OUT, APR_TR_O_PROJ,
    APR_TR_RESID1, APR_TR_FFN_NORM, APR_TR_GATE, APR_TR_UP, APR_TR_SWIGLU, APR_TR_DOWN,
    APR_TR_RESID2, APR_TR_COUNT
} apr_trace_step;
const char *apr_trace_step_name(apr_trace_step s);

typedef struct apr_stats {
    double mean, std, min, max;
    uint64_t n;          /* finite values counted */
    uint64_t nonfinite;  /* NaN + Inf */
} apr_stats;

typedef struct apr_trace {
    bool last_token_only; /* statistics over the last token of each eval, or all tokens */
    uint32_t n_layers;
    apr_stats *s;         /* n_layers * APR_TR_COUNT, filled by apr_fwd_eval */
} apr_trace;
int apr_trace_init(apr_trace *t, uint32_t n_layers, bool last_token_only);
void apr_trace_free(apr_trace *t);

typedef struct apr_fwd apr_fwd;

/* Bind a forward pass to an open model (GGUF split Q/K/V, APR fused QKV, or HF
 * safetensors names with rotate-half rope). The model must outlive the apr_fwd.
 * Weights are used in place, never dequantized wholesale. */
int apr_fwd_load(apr_fwd **out, const apr_model *m, const apr_fwd_opts *o, apr_err *err);
void apr_fwd_free(apr_fwd *f);
const apr_arch_config *apr_fwd_config(const apr_fwd *f);
apr_device apr_fwd_device(const apr_fwd *f);
void apr_fwd_reset(apr_fwd *f); /* empty the KV cache */
uint32_t apr_fwd_pos(const apr_fwd *f);

/* Append n tokens at the current position. logits: n * vocab floats (all
 * positions) or NULL; trace may be NULL. */
int apr_fwd_eval(apr_fwd *f, const int32_t *tokens, uint32_t n, float *logits, apr_trace *trace,
                 apr_err *err);
/* Same, but logits (vocab floats, or NULL) receives only the last token's. */
int apr_fwd_eval_last(apr_fwd *f, const int32_t *tokens, uint32_t n, float *logits, apr_trace *trace,
                      apr_err *err);
uint32_t apr_fwd_max_ctx(const apr_fwd *f); /* KV cache positions */

/* ---- matmul inputs, for importance matrices (apr imatrix)
 *
 * The inputs of a layer's weight matrices, in execution order: the
 * attention norm's output feeds Q, K and V; the heads' outputs feed O; the
 * FFN norm's output feeds gate and up; silu(gate) * up feeds down. */
typedef enum apr_mm_input {
    APR_MM_IN_QKV, APR_MM_IN_O, APR_MM_IN_GATE_UP, APR_MM_IN_DOWN, APR_MM_IN_COUNT,
    /* the output matrix's input (the final norm's output), with layer =
     * n_layers, for the rows whose logits are computed */
    APR_MM_IN_OUTPUT = APR_MM_IN_COUNT
} apr_mm_input;
/* Called on the evaluating thread with the n_tokens x cols input rows
 * (contiguous, token-major) just before they are multiplied. */
typedef void (*apr_mm_hook)(void *user, uint32_t layer, apr_mm_input in, const float *x, uint32_t n_tokens,
                            uint64_t cols);
/* Install (fn non-NULL) or remove (NULL) the hook. CPU backend only
 * (APR_E_UNSUPPORTED on another). While a hook is set, every token runs
 * through every layer (the last layer is not pruned to the logits' rows);
 * without one the forward pass is unchanged, bit for bit. */
int apr_fwd_set_mm_hook(apr_fwd *f, apr_mm_hook fn, void *user, apr_err *err);
/* The output matrix is the token embedding (tied weights, no output.weight). */
bool apr_fwd_output_tied(const apr_fwd *f);

/* An importance matrix as llama-imatrix computes one (libforward/imatrix.c):
 * the tokens are cut into chunks of ctx, each evaluated from an empty KV
 * cache with its first token replaced by bos (when bos >= 0: the model adds
 * BOS), and for every weight matrix of every layer the squares of its input
 * values are summed per input column over all tokens (f32, token order).
 * Entries get the weights' GGUF names (blk.N.attn_q.weight, ..., ffn_down;
 * Q, K and V share one input, so their sums are equal; attn_qkv and the
 * fused ffn_up for families whose GGUF keeps them fused); output.weight is
 * collected unless process_output (llama-imatrix's default). Needs >= 2 * ctx tokens, as
 * llama-imatrix does. CPU backend. out is the caller's, filled on success
 * (free it with apr_imatrix_stats_free); dataset is left NULL. */
/* llama-imatrix's perplexity: -log p of the text's next token, summed over
 * the second half of every chunk (positions ctx/2 .. ctx-2). */
typedef struct apr_imatrix_ppl {
    double nll, nll2;     /* sums of -log p and its square */
    uint64_t count;       /* predictions scored */
} apr_imatrix_ppl;
/* compute_imatrix's "Final estimate: PPL = ppl +/- err" (err NaN when the
 * variance is not positive) */
void apr_imatrix_ppl_final(const apr_imatrix_ppl *p, double *ppl, double *err);

typedef struct apr_imatrix_opts {
    uint32_t ctx;         /* tokens per chunk; <= apr_fwd_max_ctx(f) */
    uint32_t chunks;      /* 0: every whole chunk of the tokens */
    int32_t bos;          /* -1: the chunks keep their first token */
    void (*progress)(void *ctx, uint64_t done, uint64_t total); /* tokens; may be NULL */
    void *progress_ctx;
    bool process_output;  /* also output.weight (llama-imatrix --process-output; none when tied) */
    apr_imatrix_ppl *ppl; /* non-NULL: the perplexity is summed into it (every logit is computed) */
    void (*on_chunk)(void *ctx, uint32_t chunk, double ppl); /* after each chunk: the running estimate */
    void *chunk_ctx;
    /* llama-imatrix --in-file: sums and counts the entries go on from (a
     * loaded entry the model does not feed is kept as it is); NULL: none */
    const apr_imatrix_stats *start;
} apr_imatrix_opts;
int apr_fwd_imatrix(apr_fwd *f, const int32_t *tokens, size_t n_tokens, const apr_imatrix_opts *o,
                    apr_imatrix_stats *out, apr_err *err);

#ifdef __cplusplus
}
#endif

/* The resolved model graph (weights viewed in place), part of this door:
 * libparity compares two models' weights through it. */
#include "graph.h"

#endif /* APR_FORWARD_H */
