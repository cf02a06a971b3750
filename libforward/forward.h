/* forward.h - the public header of libforward: the model graph (LLaMA and
 * Qwen2 families), the CPU reference forward pass, the CUDA backend behind the
 * same interface and traced per-layer statistics (tokenizers: libtok/tok.h).
 */
#ifndef APR_FORWARD_H
#define APR_FORWARD_H

#include "formats.h"

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

#ifdef __cplusplus
}
#endif
#endif /* APR_FORWARD_H */
