/* backend.h - libforward's INTERNAL backend interface: the vtable every
 * backend (cpu.c, cuda/) implements, the handle behind forward.h's apr_fwd,
 * and the trace statistics accumulators (trace.c). The graph they evaluate is
 * public (include/graph.h, through forward.h); this is not: tests that need it
 * link aprforward_internal. */
#ifndef APR_FORWARD_BACKEND_H
#define APR_FORWARD_BACKEND_H

#include "forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- backends */

/* Which logits an eval must produce. */
typedef enum apr_logits_mode {
    APR_LOGITS_NONE = 0,
    APR_LOGITS_LAST = 1,  /* vocab floats: the last token's */
    APR_LOGITS_ALL = 2,   /* n * vocab floats, position-major */
} apr_logits_mode;

typedef struct apr_backend apr_backend;
typedef struct apr_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* Evaluate n tokens at positions pos..pos+n-1 (pos + n <= max_ctx is
     * checked by the caller); keys/values of earlier positions are in the
     * backend's KV cache. trace: may be NULL; when given, fill
     * trace->s[layer * APR_TR_COUNT + step] (over the last token or all n,
     * per trace->last_token_only) and leave the rest untouched. */
    int (*eval)(apr_backend *b, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                apr_logits_mode mode, apr_trace *trace, apr_err *err);
    void (*free)(apr_backend *b);
} apr_backend_ops;

struct apr_backend {
    const apr_backend_ops *ops;
    apr_mm_hook mm_hook;  /* forward.h's apr_fwd_set_mm_hook; NULL: none (CPU backend only) */
    void *mm_user;
    /* backend-private state follows in the implementing struct */
};

/* Create functions ("load" of the vtable). max_ctx: KV cache positions.
 * Both return APR_E_UNSUPPORTED when the backend cannot run here (no device,
 * not compiled in, a dtype it lacks) so APR_DEV_AUTO can fall back to CPU,
 * and another negative code for real failures (out of memory...). */
int apr_cpu_backend_create(apr_backend **out, const apr_graph *g, uint32_t max_ctx, int n_threads,
                           apr_err *err);
#ifdef APR_HAVE_CUDA
/* libforward/cuda/: uploads the weights (it may permute Q/K rows at upload
 * time instead of mapping indices), allocates the KV cache on the device. */
int apr_cuda_backend_create(apr_backend **out, const apr_graph *g, uint32_t max_ctx,
                            apr_err *err);
#endif

/* The handle behind forward.h's apr_fwd. */
struct apr_fwd {
    apr_graph g;
    apr_backend *be;
    apr_device device;
    uint32_t pos;
    uint32_t max_ctx;
};

/* ---- statistics helpers (trace.c), double accumulation. Backends that
 * reduce in parallel combine partial accumulators with apr_stats_acc_merge
 * (the trace is diagnostic: it need not be bit-identical across backends). */
typedef struct apr_stats_acc {
    double sum, sumsq, min, max;
    uint64_t n, nonfinite;
} apr_stats_acc;
void apr_stats_acc_init(apr_stats_acc *a);
void apr_stats_acc_add(apr_stats_acc *a, const float *x, size_t n);
void apr_stats_acc_merge(apr_stats_acc *a, const apr_stats_acc *b);
/* mean and population std over the finite values; all 0 when none. */
void apr_stats_acc_finish(const apr_stats_acc *a, apr_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* APR_FORWARD_BACKEND_H */
