/* forward.c - forward.h's apr_fwd: builds the graph, picks a backend
 * (APR_DEV_AUTO: CUDA when compiled in and a device answers, else CPU),
 * keeps the position and checks every eval's arguments before a backend
 * sees them. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int apr_fwd_load(apr_fwd **out, const apr_model *m, const apr_fwd_opts *o, apr_err *err)
{
    *out = NULL;
    apr_fwd_opts def = {0};
    if (!o)
        o = &def;
    if (o->device != APR_DEV_AUTO && o->device != APR_DEV_CPU && o->device != APR_DEV_CUDA)
        return apr_err_set(err, APR_E_ARG, "unknown device %d", (int)o->device);
    apr_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = apr_graph_build(&f->g, m, err);
    if (rc) {
        free(f);
        return rc;
    }
    uint32_t ctx = o->max_ctx;
    if (!ctx) {
        ctx = f->g.cfg.ctx_len ? f->g.cfg.ctx_len : 2048;
        if (ctx > 2048)
            ctx = 2048;
    }
    if (ctx > (1u << 20)) {
        apr_fwd_free(f);
        return apr_err_set(err, APR_E_ARG, "context length %u is too large", ctx);
    }
    f->max_ctx = ctx;

    rc = APR_E_UNSUPPORTED;
    if (o->device == APR_DEV_CUDA && f->g.cpu_only) {
        rc = apr_err_set(err, APR_E_UNSUPPORTED, "the CUDA backend does not implement %s (use --device cpu)",
                         f->g.cpu_only);
        apr_fwd_free(f);
        return rc;
    }
    if ((o->device == APR_DEV_CUDA || o->device == APR_DEV_AUTO) && !f->g.cpu_only) {
#ifdef APR_HAVE_CUDA
        rc = apr_cuda_backend_create(&f->be, &f->g, ctx, err);
        if (rc == 0)
            f->device = APR_DEV_CUDA;
#else
        rc = apr_err_set(err, APR_E_UNSUPPORTED, "this apr was built without the CUDA backend");
#endif
        if (rc && o->device == APR_DEV_CUDA) {
            apr_fwd_free(f);
            return rc;
        }
        /* AUTO: whatever kept CUDA from starting (not built, no device,
         * out of device memory), the CPU backend is tried next. */
    }
    if (rc) {
        rc = apr_cpu_backend_create(&f->be, &f->g, ctx, o->n_threads, err);
        if (rc) {
            apr_fwd_free(f);
            return rc;
        }
        f->device = APR_DEV_CPU;
    }
    *out = f;
    return 0;
}

void apr_fwd_free(apr_fwd *f)
{
    if (!f)
        return;
    if (f->be)
        f->be->ops->free(f->be);
    apr_graph_free(&f->g);
    free(f);
}

const apr_arch_config *apr_fwd_config(const apr_fwd *f) { return &f->g.cfg; }
bool apr_fwd_output_tied(const apr_fwd *f) { return f->g.output_tied; }
apr_device apr_fwd_device(const apr_fwd *f) { return f->device; }
void apr_fwd_reset(apr_fwd *f) { f->pos = 0; }
uint32_t apr_fwd_pos(const apr_fwd *f) { return f->pos; }
uint32_t apr_fwd_max_ctx(const apr_fwd *f) { return f->max_ctx; }

int apr_fwd_set_mm_hook(apr_fwd *f, apr_mm_hook fn, void *user, apr_err *err)
{
    if (fn && f->device != APR_DEV_CPU)
        return apr_err_set(err, APR_E_UNSUPPORTED, "only the CPU backend reports matmul inputs (use --device cpu)");
    f->be->mm_hook = fn;
    f->be->mm_user = fn ? user : NULL;
    return 0;
}

static int eval_mode(apr_fwd *f, const int32_t *tokens, uint32_t n, float *logits, apr_logits_mode mode,
                     apr_trace *trace, apr_err *err)
{
    if (!n)
        return 0;
    if (!tokens)
        return apr_err_set(err, APR_E_ARG, "no tokens");
    if (n > f->max_ctx - f->pos)
        return apr_err_set(err, APR_E_ARG, "context full: %u + %u tokens exceed the %u-position KV cache",
                           f->pos, n, f->max_ctx);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= f->g.cfg.vocab)
            return apr_err_set(err, APR_E_ARG, "token id %d at index %u is outside the vocabulary (%u)",
                               tokens[i], i, f->g.cfg.vocab);
    if (trace && (trace->n_layers != f->g.cfg.n_layers || !trace->s))
        return apr_err_set(err, APR_E_ARG, "trace was initialised for %u layers, the model has %u",
                           trace->n_layers, f->g.cfg.n_layers);
    int rc = f->be->ops->eval(f->be, tokens, n, f->pos, logits, logits ? mode : APR_LOGITS_NONE, trace, err);
    if (rc == 0)
        f->pos += n;
    return rc;
}

int apr_fwd_eval(apr_fwd *f, const int32_t *tokens, uint32_t n, float *logits, apr_trace *trace,
                 apr_err *err)
{
    return eval_mode(f, tokens, n, logits, APR_LOGITS_ALL, trace, err);
}

int apr_fwd_eval_last(apr_fwd *f, const int32_t *tokens, uint32_t n, float *logits, apr_trace *trace,
                      apr_err *err)
{
    return eval_mode(f, tokens, n, logits, APR_LOGITS_LAST, trace, err);
}
