/* cpu.c - the CPU reference backend: a plain transcription of the LLaMA /
 * Qwen2 forward pass (llama2.c's run.c is the model), batched over the
 * tokens of an eval for weight reuse, threaded over output rows.
 *
 * Determinism: every output value (a row's dot product, a head's attention
 * output, a token's norm) is computed by exactly one thread, in a fixed
 * element order that does not depend on the thread count or the chunking of
 * the prompt. So the same weights give bit-identical logits whatever the
 * container (GGUF / safetensors / APR, split or fused QKV; see graph.h for
 * the Q/K row order) and whatever n_threads.
 *
 * Matmuls run on the weights in place through libquant: the activation row is
 * converted once to apr_vec_dot_type(weight dtype), then apr_vec_dot per row.
 * The numerics of the element-wise steps follow ggml's CPU ops (RMSNorm with a
 * double sum, rope angles by repeated multiplication, softmax with a double sum,
 * silu as x / (1 + exp(-x))) so our f32 logits stay close to llama.cpp's.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn.h"
#include "backend.h"
#include "quant.h"

#define CPU_CHUNK 64     /* tokens per batch: weights are streamed once per batch */
#define ROW_BLOCK APR_WPACK_ROWS /* rows kept hot while looping over the batch's tokens */
#define MAX_ACT_SLOTS 6  /* distinct vec-dot types a batch may need */

/* ---------------------------------------------------------------- thread pool */

/* A persistent pool, not libutil's apr_threads_run (the one spawn-and-join
 * helper every other parallel step uses): a forward pass dispatches a few
 * parallel steps per layer per batch (hundreds per token), each often well
 * under a millisecond, where creating and joining threads every time would
 * cost more than the step. Workers sleep on a condition variable between
 * steps instead. */

typedef void (*pool_fn)(void *ctx, int ith, int nth);

typedef struct pool pool;
typedef struct pool_worker {
    pool *p;
    int ith;
} pool_worker;

struct pool {
    int n;
    pthread_t *th;
    pool_worker *w;
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    uint64_t gen;
    int pending;
    pool_fn fn;
    void *ctx;
    bool quit;
};

static void *pool_main(void *arg)
{
    pool_worker *w = arg;
    pool *p = w->p;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->gen == seen && !p->quit)
            pthread_cond_wait(&p->cv_start, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->gen;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, w->ith, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
}

static void pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_start);
    pthread_cond_destroy(&p->cv_done);
    free(p->th);
    free(p->w);
    free(p);
}

static pool *pool_new(int n)
{
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_start, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    p->th = calloc((size_t)n, sizeof *p->th);
    p->w = calloc((size_t)n, sizeof *p->w);
    if (!p->th || !p->w) {
        pool_free(p);
        return NULL;
    }
    for (int i = 1; i < n; i++) { /* thread 0 is the caller */
        p->w[i] = (pool_worker){p, i};
        if (pthread_create(&p->th[p->n_started], NULL, pool_main, &p->w[i])) {
            pool_free(p);
            return NULL;
        }
        p->n_started++;
    }
    return p;
}

/* Run fn(ctx, ith, n) on every thread (the caller is thread 0); returns when all are done. */
static void pool_run(pool *p, pool_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending)
        pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* [lo, hi) of n items for thread ith of nth (contiguous ranges). */
static void split(uint64_t n, int ith, int nth, uint64_t *lo, uint64_t *hi)
{
    *lo = n * (uint64_t)ith / (uint64_t)nth;
    *hi = n * (uint64_t)(ith + 1) / (uint64_t)nth;
}

/* ---------------------------------------------------------------- backend state */

/* Activation rows converted to one vec-dot type, for the batch's tokens. */
typedef struct act_slot {
    apr_dtype vdt;
    const float *src; /* the activation they were converted from (cache key) */
    uint64_t cols;
    uint32_t nt;
    uint64_t stride;  /* bytes per token */
    uint8_t *buf;
    size_t cap;
} act_slot;

typedef struct cpu_be {
    apr_backend base;
    const apr_graph *g;
    uint32_t max_ctx;
    pool *pool;
    int nth;
    uint64_t q_dim, kv_dim;
    float *kc, *vc;          /* [layer][pos][kv_dim] */
    /* batch scratch, CPU_CHUNK tokens each */
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2;
    float *rope_cs;          /* [token][head_dim/2][cos, sin] */
    float *rope_cs_swa;      /* the same for sliding layers with their own base (Gemma 3), or NULL */
    float *scores;           /* attention scratch: [thread][scratch_per_thread] */
    size_t scratch_per_thread;
    act_slot act[MAX_ACT_SLOTS];
    int n_act;
    int conv_err;            /* set by a worker when an activation conversion failed */
    /* weights repacked for libquant's interleaved GEMM kernels, made on a
     * matrix's first use and kept for the backend's life (wpack_for) */
    struct cpu_pack *packs;
    size_t n_packs, cap_packs, pack_hint;
    int prepacked;           /* prepack done: 1 the layers, 2 and the output matrix */
} cpu_be;

/* ---------------------------------------------------------------- packed weights */

/* One matrix's packed copy; ok false when its dtype has no packed kernel here
 * (or its segments mix dtypes), and then the per-row apr_vec_dot path runs. */
typedef struct cpu_pack {
    const apr_wmat *w;
    bool ok;
    apr_wpack p;
} cpu_pack;

static bool wmat_packable(const apr_wmat *w)
{
    for (uint32_t s = 1; s < w->n_seg; s++)
        if (w->seg[s].dtype != w->seg[0].dtype)
            return false;
    return apr_wpack_supported(w->seg[0].dtype);
}

/* Pack w: its rows in logical order (perm_hd applied), all segments. */
static int pack_wmat(apr_wpack *p, const apr_wmat *w)
{
    const uint8_t **rows = malloc((size_t)w->rows * sizeof *rows);
    if (!rows)
        return APR_E_NOMEM;
    for (uint64_t r = 0; r < w->rows; r++) {
        apr_dtype dt;
        rows[r] = apr_wmat_row(w, apr_wmat_phys_row(w, r), &dt);
    }
    const int rc = apr_wpack_init(p, w->seg[0].dtype, w->rows, w->cols, rows);
    free(rows);
    return rc;
}

/* The pack of w, made on first use (called from the main thread only). The
 * matmuls come in the same order every batch, so the entry after the last
 * hit is tried first. NULL when w is not packed (a dtype without a packed
 * kernel, or out of memory: the unpacked path gives the same values). */
static const apr_wpack *wpack_for(cpu_be *b, const apr_wmat *w)
{
    for (size_t k = 0; k < b->n_packs; k++) {
        const size_t i = (b->pack_hint + k) % b->n_packs;
        if (b->packs[i].w == w) {
            b->pack_hint = i + 1;
            return b->packs[i].ok ? &b->packs[i].p : NULL;
        }
    }
    if (b->n_packs == b->cap_packs) {
        const size_t cap = b->cap_packs ? 2 * b->cap_packs : 64;
        cpu_pack *np = realloc(b->packs, cap * sizeof *np);
        if (!np)
            return NULL;
        b->packs = np;
        b->cap_packs = cap;
    }
    cpu_pack *e = &b->packs[b->n_packs++];
    e->w = w;
    e->ok = wmat_packable(w) && pack_wmat(&e->p, w) == 0;
    b->pack_hint = b->n_packs;
    return e->ok ? &e->p : NULL;
}

/* Matrices dealt to threads by prepack, largest first, each to the least
 * loaded thread (ties: the lowest); owner[k] for matrix k. */
static void deal_by_size(const uint64_t *cost, size_t n, int nth, int *owner)
{
    uint64_t load[256] = {0};
    for (size_t k = 0; k < n; k++)
        owner[k] = -1;
    for (size_t step = 0; step < n; step++) {
        size_t big = n;
        for (size_t k = 0; k < n; k++)
            if (owner[k] < 0 && (big == n || cost[k] > cost[big]))
                big = k;
        int least = 0;
        for (int t = 1; t < nth; t++)
            if (load[t] < load[least])
                least = t;
        owner[big] = least;
        load[least] += cost[big];
    }
}

typedef struct prepack_job {
    cpu_pack *e;
    const int *owner;
    size_t n;
} prepack_job;

static void prepack_worker(void *ctx, int ith, int nth)
{
    (void)nth;
    const prepack_job *j = ctx;
    for (size_t k = 0; k < j->n; k++)
        if (j->owner[k] == ith)
            j->e[k].ok = wmat_packable(j->e[k].w) && pack_wmat(&j->e[k].p, j->e[k].w) == 0;
}

/* Pack the matrices of every layer (and the output matrix when with_output)
 * before the first batch that needs them, on all threads at once: packing
 * copies the model's weights (and takes the first-touch page faults of the
 * copy), which wpack_for would do on the calling thread alone while the
 * others wait. Each pack is made by one thread and does not depend on which
 * (apr_wpack_init of one matrix), so the logits do not change. Out of memory
 * here only leaves matrices to wpack_for. */
static void prepack(cpu_be *b, bool with_output)
{
    const int want = with_output ? 2 : 1;
    if (b->prepacked >= want)
        return;
    const apr_graph *g = b->g;
    const size_t most = (size_t)g->cfg.n_layers * 7 + 1;
    const apr_wmat **todo = malloc(most * sizeof *todo);
    uint64_t *cost = malloc(most * sizeof *cost);
    int *owner = malloc(most * sizeof *owner);
    size_t n = 0;
    if (!todo || !cost || !owner)
        goto out;
    for (uint32_t il = 0; il < g->cfg.n_layers; il++) {
        const apr_layer *L = &g->layers[il];
        const apr_wmat *lw[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int k = 0; k < 7; k++)
            todo[n++] = lw[k];
    }
    if (with_output)
        todo[n++] = &g->output;
    /* those already packed (an earlier call, or wpack_for) drop out */
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        bool have = false;
        for (size_t i = 0; i < b->n_packs && !have; i++)
            have = b->packs[i].w == todo[k];
        if (!have && todo[k]->rows)
            todo[m++] = todo[k];
    }
    n = m;
    if (b->n_packs + n > b->cap_packs) {
        cpu_pack *np = realloc(b->packs, (b->n_packs + n) * sizeof *np);
        if (!np)
            goto out;
        b->packs = np;
        b->cap_packs = b->n_packs + n;
    }
    cpu_pack *e = b->packs + b->n_packs;
    for (size_t k = 0; k < n; k++) {
        e[k] = (cpu_pack){.w = todo[k], .ok = false};
        cost[k] = wmat_packable(todo[k]) ? todo[k]->rows * apr_dtype_row_bytes(todo[k]->seg[0].dtype, todo[k]->cols)
                                         : 0;
    }
    deal_by_size(cost, n, b->nth < 256 ? b->nth : 256, owner);
    prepack_job j = {e, owner, n};
    pool_run(b->pool, prepack_worker, &j);
    b->n_packs += n;
    b->prepacked = want;
out:
    free(todo);
    free(cost);
    free(owner);
}

static void packs_free(cpu_be *b)
{
    for (size_t i = 0; i < b->n_packs; i++)
        if (b->packs[i].ok)
            apr_wpack_free(&b->packs[i].p);
    free(b->packs);
}

/* ---------------------------------------------------------------- matmul */

typedef struct conv_job {
    cpu_be *b;
    act_slot *slots[MAX_ACT_SLOTS];
    int n_slots;
} conv_job;

static void conv_worker(void *ctx, int ith, int nth)
{
    conv_job *j = ctx;
    for (int s = 0; s < j->n_slots; s++) {
        act_slot *a = j->slots[s];
        uint64_t lo, hi;
        split(a->nt, ith, nth, &lo, &hi);
        for (uint64_t t = lo; t < hi; t++)
            if (apr_quantize_activation(a->vdt, a->src + t * a->cols, a->buf + t * a->stride,
                                        (int64_t)a->cols) != 0)
                j->b->conv_err = 1;
    }
}

/* The slot holding x (nt rows of cols floats) converted to vdt, queueing the
 * conversion in *pending when it is not there yet. NULL on error. */
static act_slot *act_get(cpu_be *b, apr_dtype vdt, const float *x, uint64_t cols, uint32_t nt,
                         conv_job *pending)
{
    for (int i = 0; i < b->n_act; i++) {
        act_slot *a = &b->act[i];
        if (a->vdt == vdt && a->src == x && a->cols == cols && a->nt == nt)
            return a;
    }
    act_slot *a = NULL;
    for (int i = 0; i < b->n_act && !a; i++)
        if (!b->act[i].src)
            a = &b->act[i];
    if (!a) {
        if (b->n_act == MAX_ACT_SLOTS)
            return NULL;
        a = &b->act[b->n_act++];
    }
    const uint64_t stride = apr_dtype_row_bytes(vdt, cols);
    if (!stride)
        return NULL;
    const size_t need = (size_t)stride * nt;
    if (need > a->cap) {
        uint8_t *nb = realloc(a->buf, need);
        if (!nb)
            return NULL;
        a->buf = nb;
        a->cap = need;
    }
    a->vdt = vdt;
    a->src = x;
    a->cols = cols;
    a->nt = nt;
    a->stride = stride;
    pending->slots[pending->n_slots++] = a;
    return a;
}

static void act_invalidate(cpu_be *b)
{
    for (int i = 0; i < b->n_act; i++)
        b->act[i].src = NULL;
}

typedef struct mm_task {
    const apr_wmat *w;
    float *out;               /* out[t * out_stride + r] */
    uint64_t out_stride;
    const float *bias;        /* rows floats or NULL */
    act_slot *seg_act[APR_MAX_PARTS]; /* converted activation for each segment's dtype */
    const apr_wpack *pack;    /* packed weights (one dtype, seg_act[0]) or NULL */
    uint32_t nt;
} mm_task;

typedef struct mm_job {
    mm_task task[3];
    int n_task;
    uint64_t total_blocks;    /* ROW_BLOCK-row blocks of all tasks */
} mm_job;

/* Blocks of ROW_BLOCK rows (= APR_WPACK_ROWS, a packed group): the unit that
 * threads share out, so a thread never splits a packed group. */
static uint64_t row_blocks(const apr_wmat *w)
{
    return (w->rows + ROW_BLOCK - 1) / ROW_BLOCK;
}

/* Rows of all tasks are one index space split evenly between threads; each
 * row is computed by one thread, tokens in order. */
static void mm_worker(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    uint64_t lo, hi;
    split(j->total_blocks, ith, nth, &lo, &hi);
    uint64_t base = 0;
    for (int ti = 0; ti < j->n_task; base += row_blocks(j->task[ti].w), ti++) {
        const mm_task *T = &j->task[ti];
        const apr_wmat *w = T->w;
        const uint64_t nblk = row_blocks(w);
        const uint64_t a = lo > base ? lo : base, z = hi < base + nblk ? hi : base + nblk;
        if (a >= z)
            continue;
        const uint64_t t_lo = (a - base) * ROW_BLOCK, t_hi = (z - base) * ROW_BLOCK < w->rows ? (z - base) * ROW_BLOCK : w->rows;
        if (T->pack) {
            const act_slot *as = T->seg_act[0];
            apr_wpack_gemm(T->pack, t_lo, t_hi, as->buf, (size_t)as->stride, T->nt, T->out, T->out_stride);
            if (T->bias)
                for (uint32_t t = 0; t < T->nt; t++)
                    for (uint64_t r = t_lo; r < t_hi; r++)
                        T->out[(uint64_t)t * T->out_stride + r] += T->bias[r];
            continue;
        }
        for (uint64_t r0 = t_lo; r0 < t_hi; r0 += ROW_BLOCK) {
            const uint64_t r1 = r0 + ROW_BLOCK < t_hi ? r0 + ROW_BLOCK : t_hi;
            const uint8_t *rowp[ROW_BLOCK];
            apr_dtype rowdt[ROW_BLOCK];
            const act_slot *rowact[ROW_BLOCK];
            for (uint64_t r = r0; r < r1; r++) {
                const uint64_t p = apr_wmat_phys_row(w, r);
                uint64_t pp = p;
                uint32_t s = 0;
                while (s + 1 < w->n_seg && pp >= w->seg[s].rows) {
                    pp -= w->seg[s].rows;
                    s++;
                }
                rowp[r - r0] = w->seg[s].data + pp * w->seg[s].row_bytes;
                rowdt[r - r0] = w->seg[s].dtype;
                rowact[r - r0] = T->seg_act[s];
            }
            /* tokens four at a time: each weight row is decoded once per
             * group (apr_vec_dot_n gives apr_vec_dot's values exactly) */
            for (uint32_t t0 = 0; t0 < T->nt; t0 += 4) {
                const int g = T->nt - t0 < 4 ? (int)(T->nt - t0) : 4;
                for (uint64_t r = r0; r < r1; r++) {
                    const act_slot *act = rowact[r - r0];
                    float d[4];
                    apr_vec_dot_n(rowdt[r - r0], (int64_t)w->cols, rowp[r - r0], act->buf + (uint64_t)t0 * act->stride,
                                  (size_t)act->stride, g, d);
                    for (int k = 0; k < g; k++)
                        T->out[(uint64_t)(t0 + k) * T->out_stride + r] = T->bias ? d[k] + T->bias[r] : d[k];
                }
            }
        }
    }
}

/* out = x W^T (+ bias) for up to three matrices sharing the input x (Q/K/V,
 * gate/up): the activation is converted once per vec-dot type. */
static int matmul(cpu_be *b, const float *x, uint32_t nt, int n, const apr_wmat *const *w,
                  float *const *out, const uint64_t *out_stride, const float *const *bias, apr_err *err)
{
    mm_job j = {.n_task = n};
    conv_job cj = {.b = b};
    act_invalidate(b); /* conversions are shared only between the matrices of one call */
    for (int i = 0; i < n; i++) {
        mm_task *T = &j.task[i];
        T->w = w[i];
        T->out = out[i];
        T->out_stride = out_stride[i];
        T->bias = bias ? bias[i] : NULL;
        T->nt = nt;
        for (uint32_t s = 0; s < w[i]->n_seg; s++) {
            const apr_dtype vdt = apr_vec_dot_type(w[i]->seg[s].dtype);
            T->seg_act[s] = act_get(b, vdt, x, w[i]->cols, nt, &cj);
            if (!T->seg_act[s])
                return apr_err_set(err, APR_E_NOMEM, "tensor %s: cannot prepare %s activations: out of memory",
                                   w[i]->name, apr_dtype_name(vdt));
        }
        j.total_blocks += row_blocks(w[i]);
        T->pack = wpack_for(b, w[i]);
    }
    if (cj.n_slots) {
        b->conv_err = 0;
        pool_run(b->pool, conv_worker, &cj);
        if (b->conv_err) {
            act_invalidate(b);
            return apr_err_set(err, APR_E_UNSUPPORTED, "activation conversion failed (tensor %s)", w[0]->name);
        }
    }
    pool_run(b->pool, mm_worker, &j);
    return 0;
}

static int matmul1(cpu_be *b, const float *x, uint32_t nt, const apr_wmat *w, float *out,
                   uint64_t out_stride, const float *bias, apr_err *err)
{
    return matmul(b, x, nt, 1, &w, &out, &out_stride, bias ? &bias : NULL, err);
}

/* ---------------------------------------------------------------- element-wise steps */

/* ggml_compute_forward_rms_norm_f32 followed by the weight multiply. */
static void rmsnorm(float *o, const float *x, const float *w, uint64_t n, float eps)
{
    double sum = 0.0;
    for (uint64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (uint64_t i = 0; i < n; i++)
        o[i] = (x[i] * scale) * w[i];
}

/* yarn's weight of pair i's unscaled angle: 1 below the correction range,
 * 0 above it, linear inside (transformers' 1 - linear_ramp_factor, ggml's
 * rope_yarn_ramp with ext_factor 1). */
static float yarn_keep(const apr_arch_config *c, uint32_t i)
{
    const float span = c->yarn_corr_hi - c->yarn_corr_lo;
    const float y = ((float)i - c->yarn_corr_lo) / (span > 0.001f ? span : 0.001f);
    return 1.0f - (y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y);
}

/* cos/sin of pair i at position pos: angle pos * theta^(-2i/hd), built by
 * repeated multiplication as ggml's rope cache does; then, as ggml_rope_ext
 * (ext_factor 0, attn_factor 1), divided by the pair's frequency factor and
 * multiplied by freq_scale (both exact no-ops when absent / 1). With yarn
 * (non-NULL, c->rope_yarn), the scaled and unscaled angles blend by
 * yarn_keep and cos/sin are multiplied by the attention factor. */
static void rope_table(float *cs, uint32_t pos, uint32_t hd, float theta_base, float freq_scale,
                       const float *freq_factors, const apr_arch_config *yarn)
{
    const float theta_scale = powf(theta_base, -2.0f / (float)hd);
    float theta = (float)pos;
    for (uint32_t i = 0; i < hd / 2; i++) {
        const float ff = freq_factors ? freq_factors[i] : 1.0f;
        float angle = freq_scale * (theta / ff), mscale = 1.0f;
        if (yarn) {
            const float keep = yarn_keep(yarn, i);
            angle = angle * (1.0f - keep) + (theta / ff) * keep;
            mscale = yarn->rope_attn_factor;
        }
        cs[2 * i] = cosf(angle) * mscale;
        cs[2 * i + 1] = sinf(angle) * mscale;
        theta *= theta_scale;
    }
}

/* Rotate every head of vec (n_heads x hd) in logical order: NORM pairs
 * (2i, 2i+1), NEOX pairs (i, i + hd/2). */
static void rope_apply(float *vec, uint32_t n_heads, uint32_t hd, const float *cs, apr_rope_type type)
{
    for (uint32_t h = 0; h < n_heads; h++) {
        float *v = vec + (uint64_t)h * hd;
        for (uint32_t i = 0; i < hd / 2; i++) {
            const uint32_t a = type == APR_ROPE_NEOX ? i : 2 * i;
            const uint32_t c = type == APR_ROPE_NEOX ? i + hd / 2 : 2 * i + 1;
            const float x0 = v[a], x1 = v[c], co = cs[2 * i], si = cs[2 * i + 1];
            v[a] = x0 * co - x1 * si;
            v[c] = x0 * si + x1 * co;
        }
    }
}

/* ggml_gelu_f32 (the tanh approximation; torch's gelu(approximate="tanh")
 * is the same formula). */
static float gelu_tanh(float x)
{
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f, coef_a = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

/* cap * tanh(x / cap) over n values (Gemma 2's final logit soft-capping). */
static void softcap_vec(float *x, uint64_t n, float cap)
{
    for (uint64_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

/* ---------------------------------------------------------------- attention */

typedef struct attn_job {
    cpu_be *b;
    uint32_t il, nt, pos0;
    uint32_t q0; /* batch row of the first query (b->q) */
} attn_job;

/* Items (KV head, query block) dealt round-robin: each is computed by one
 * thread, and which thread does not change a bit (attn.h). */
static void attn_worker(void *ctx, int ith, int nth)
{
    const attn_job *j = ctx;
    cpu_be *b = j->b;
    const apr_arch_config *c = &b->g->cfg;
    const apr_attn_shape s = {
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .q_stride = b->q_dim,
        .kv_stride = b->kv_dim,
        .scale = c->attn_scale > 0.0f ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim),
        .softcap = c->attn_softcap,
        /* transformers' mask: the last W positions */
        .window = b->g->layers[j->il].sliding ? c->sliding_window : 0,
    };
    float *scratch = b->scores + (uint64_t)ith * b->scratch_per_thread;
    const float *kl = b->kc + (uint64_t)j->il * b->max_ctx * b->kv_dim;
    const float *vl = b->vc + (uint64_t)j->il * b->max_ctx * b->kv_dim;
    const uint64_t n_items = apr_attn_items(&s, j->nt);
    for (uint64_t item = (uint64_t)ith; item < n_items; item += (uint64_t)nth)
        apr_attn_item(&s, b->q + (uint64_t)j->q0 * b->q_dim, kl, vl, b->att, j->nt, j->pos0, item, scratch);
}

/* ---------------------------------------------------------------- trace */

typedef struct trace_ctx {
    apr_trace *tr;
    apr_stats_acc *acc;  /* n_layers * APR_TR_COUNT */
    uint32_t t_from;     /* first token of this batch that counts */
} trace_ctx;

static void trace_add(trace_ctx *tc, uint32_t il, apr_trace_step st, const float *x, uint64_t stride,
                      uint64_t n, uint32_t nt)
{
    if (!tc->tr)
        return;
    apr_stats_acc *a = &tc->acc[(uint64_t)il * APR_TR_COUNT + st];
    for (uint32_t t = tc->t_from; t < nt; t++)
        apr_stats_acc_add(a, x + (uint64_t)t * stride, n);
}

/* The matmul-input hook (forward.h), when one is installed. */
static void mm_input(const cpu_be *b, uint32_t il, apr_mm_input in, const float *x, uint32_t nt, uint64_t cols)
{
    if (b->base.mm_hook)
        b->base.mm_hook(b->base.mm_user, il, in, x, nt, cols);
}

/* ---------------------------------------------------------------- eval */

/* One batch of nt <= CPU_CHUNK tokens at position pos0. logits: where this
 * batch's rows go (NULL: none); last_only: just the last token's. */
static int eval_batch(cpu_be *b, const int32_t *tok, uint32_t nt, uint32_t pos0, float *logits,
                      bool last_only, trace_ctx *tc, apr_err *err)
{
    const apr_graph *g = b->g;
    const apr_arch_config *c = &g->cfg;
    const uint64_t H = c->hidden, F = c->ffn, QD = b->q_dim, KD = b->kv_dim;
    const uint32_t hd = c->head_dim;
    int rc;

    for (uint32_t t = 0; t < nt; t++) {
        apr_dtype dt;
        const uint8_t *row = apr_wmat_row(&g->token_embd, apr_wmat_phys_row(&g->token_embd, (uint64_t)tok[t]), &dt);
        if (apr_to_f32_row(dt, row, b->x + t * H, (int64_t)H) != 0)
            return apr_err_set(err, APR_E_UNSUPPORTED, "cannot read embedding rows of dtype %s", apr_dtype_name(dt));
        if (c->embed_scale) { /* Gemma: times sqrt(hidden), rounded to f32 once */
            const float sc = sqrtf((float)H);
            for (uint64_t i = 0; i < H; i++)
                b->x[t * H + i] *= sc;
        }
        rope_table(b->rope_cs + (uint64_t)t * hd, pos0 + t, hd, c->rope_theta, c->rope_freq_scale, g->rope_freqs,
                   c->rope_yarn ? c : NULL);
        if (b->rope_cs_swa) /* llama.cpp: the sliding layers' own base, no frequency scaling */
            rope_table(b->rope_cs_swa + (uint64_t)t * hd, pos0 + t, hd, c->rope_theta_swa, 1.0f, NULL, NULL);
    }

    for (uint32_t il = 0; il < c->n_layers; il++) {
        const apr_layer *L = &g->layers[il];
        /* attention */
        for (uint32_t t = 0; t < nt; t++)
            rmsnorm(b->xb + t * H, b->x + t * H, L->attn_norm, H, c->rms_eps);
        trace_add(tc, il, APR_TR_ATTN_NORM, b->xb, H, H, nt);
        mm_input(b, il, APR_MM_IN_QKV, b->xb, nt, H);
        {
            const apr_wmat *w[3] = {&L->q, &L->k, &L->v};
            float *o[3] = {b->q, b->k, b->v};
            const uint64_t os[3] = {QD, KD, KD};
            const float *bs[3] = {L->bq, L->bk, L->bv};
            if ((rc = matmul(b, b->xb, nt, 3, w, o, os, bs, err)))
                return rc;
        }
        trace_add(tc, il, APR_TR_Q, b->q, QD, QD, nt);
        trace_add(tc, il, APR_TR_K, b->k, KD, KD, nt);
        trace_add(tc, il, APR_TR_V, b->v, KD, KD, nt);
        float *kl = b->kc + (uint64_t)il * b->max_ctx * KD, *vl = b->vc + (uint64_t)il * b->max_ctx * KD;
        if (L->q_norm) /* Qwen3: RMSNorm over each head, after the bias, before rope */
            for (uint64_t h = 0; h < (uint64_t)nt * c->n_heads; h++)
                rmsnorm(b->q + h * hd, b->q + h * hd, L->q_norm, hd, c->rms_eps);
        if (L->k_norm)
            for (uint64_t h = 0; h < (uint64_t)nt * c->n_kv_heads; h++)
                rmsnorm(b->k + h * hd, b->k + h * hd, L->k_norm, hd, c->rms_eps);
        for (uint32_t t = 0; t < nt; t++) {
            const float *cs = (L->sliding && b->rope_cs_swa ? b->rope_cs_swa : b->rope_cs) + (uint64_t)t * hd;
            rope_apply(b->q + t * QD, c->n_heads, hd, cs, g->rope);
            rope_apply(b->k + t * KD, c->n_kv_heads, hd, cs, g->rope);
            memcpy(kl + (uint64_t)(pos0 + t) * KD, b->k + t * KD, KD * sizeof(float));
            memcpy(vl + (uint64_t)(pos0 + t) * KD, b->v + t * KD, KD * sizeof(float));
        }
        /* Last layer, only the final token's logits wanted (a prompt's
         * prefill), or none (an earlier batch of it): past the K/V cache
         * nothing reads the other tokens, so they stop here, as llama.cpp
         * prunes its last layer to the output rows. Every row is computed
         * alone, so the kept token's bits do not change. Traces and the
         * matmul-input hook want every token and keep them all. */
        const bool prune = il + 1 == c->n_layers && !tc->tr && !b->base.mm_hook && (!logits || last_only);
        if (prune && !logits)
            break;
        uint32_t q0 = 0;
        if (prune && nt > 1) {
            q0 = nt - 1;
            memmove(b->x, b->x + (uint64_t)q0 * H, H * sizeof(float));
        }
        attn_job aj = {b, il, nt - q0, pos0 + q0, q0};
        pool_run(b->pool, attn_worker, &aj);
        nt -= q0;
        trace_add(tc, il, APR_TR_ATTN_OUT, b->att, QD, QD, nt);
        mm_input(b, il, APR_MM_IN_O, b->att, nt, QD);
        if ((rc = matmul1(b, b->att, nt, &L->o, b->xb2, H, NULL, err)))
            return rc;
        if (L->post_attn_norm)
            for (uint32_t t = 0; t < nt; t++)
                rmsnorm(b->xb2 + t * H, b->xb2 + t * H, L->post_attn_norm, H, c->rms_eps);
        trace_add(tc, il, APR_TR_O_PROJ, b->xb2, H, H, nt);
        for (uint64_t i = 0; i < (uint64_t)nt * H; i++)
            b->x[i] += b->xb2[i];
        trace_add(tc, il, APR_TR_RESID1, b->x, H, H, nt);

        /* feed-forward */
        for (uint32_t t = 0; t < nt; t++)
            rmsnorm(b->xb + t * H, b->x + t * H, L->ffn_norm, H, c->rms_eps);
        trace_add(tc, il, APR_TR_FFN_NORM, b->xb, H, H, nt);
        mm_input(b, il, APR_MM_IN_GATE_UP, b->xb, nt, H);
        {
            const apr_wmat *w[2] = {&L->gate, &L->up};
            float *o[2] = {b->hb, b->hb2};
            const uint64_t os[2] = {F, F};
            if ((rc = matmul(b, b->xb, nt, 2, w, o, os, NULL, err)))
                return rc;
        }
        trace_add(tc, il, APR_TR_GATE, b->hb, F, F, nt);
        trace_add(tc, il, APR_TR_UP, b->hb2, F, F, nt);
        if (c->ffn_act == APR_ACT_GELU_TANH) {
            for (uint64_t i = 0; i < (uint64_t)nt * F; i++)
                b->hb[i] = gelu_tanh(b->hb[i]) * b->hb2[i];
        } else {
            for (uint64_t i = 0; i < (uint64_t)nt * F; i++) {
                const float gv = b->hb[i];
                b->hb[i] = (gv / (1.0f + expf(-gv))) * b->hb2[i];
            }
        }
        trace_add(tc, il, APR_TR_SWIGLU, b->hb, F, F, nt);
        mm_input(b, il, APR_MM_IN_DOWN, b->hb, nt, F);
        if ((rc = matmul1(b, b->hb, nt, &L->down, b->xb2, H, NULL, err)))
            return rc;
        if (L->post_ffn_norm)
            for (uint32_t t = 0; t < nt; t++)
                rmsnorm(b->xb2 + t * H, b->xb2 + t * H, L->post_ffn_norm, H, c->rms_eps);
        trace_add(tc, il, APR_TR_DOWN, b->xb2, H, H, nt);
        for (uint64_t i = 0; i < (uint64_t)nt * H; i++)
            b->x[i] += b->xb2[i];
        trace_add(tc, il, APR_TR_RESID2, b->x, H, H, nt);
    }

    if (!logits)
        return 0;
    const uint32_t t0 = last_only ? nt - 1 : 0, n_out = nt - t0;
    for (uint32_t t = t0; t < nt; t++)
        rmsnorm(b->xb + (t - t0) * H, b->x + t * H, g->output_norm, H, c->rms_eps);
    mm_input(b, c->n_layers, APR_MM_IN_OUTPUT, b->xb, n_out, H);
    if ((rc = matmul1(b, b->xb, n_out, &g->output, logits, g->output.rows, NULL, err)))
        return rc;
    if (c->final_softcap > 0.0f)
        softcap_vec(logits, (uint64_t)n_out * g->output.rows, c->final_softcap);
    return 0;
}

static int cpu_eval(apr_backend *be, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                    apr_logits_mode mode, apr_trace *trace, apr_err *err)
{
    cpu_be *b = (cpu_be *)be;
    const apr_arch_config *c = &b->g->cfg;
    trace_ctx tc = {0};
    if (trace) {
        tc.tr = trace;
        tc.acc = malloc((size_t)c->n_layers * APR_TR_COUNT * sizeof *tc.acc);
        if (!tc.acc)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        for (size_t i = 0; i < (size_t)c->n_layers * APR_TR_COUNT; i++)
            apr_stats_acc_init(&tc.acc[i]);
    }
    prepack(b, mode != APR_LOGITS_NONE);
    int rc = 0;
    for (uint32_t done = 0; done < n && !rc;) {
        const uint32_t nt = n - done < CPU_CHUNK ? n - done : CPU_CHUNK;
        const bool last_batch = done + nt == n;
        float *lg = NULL;
        bool last_only = false;
        if (mode == APR_LOGITS_ALL)
            lg = logits + (uint64_t)done * c->vocab;
        else if (mode == APR_LOGITS_LAST && last_batch) {
            lg = logits;
            last_only = true;
        }
        /* last_token_only traces count only the eval's final token */
        tc.t_from = trace && trace->last_token_only ? (last_batch ? nt - 1 : nt) : 0;
        rc = eval_batch(b, tokens + done, nt, pos + done, lg, last_only, &tc, err);
        done += nt;
    }
    if (trace && !rc)
        for (size_t i = 0; i < (size_t)c->n_layers * APR_TR_COUNT; i++)
            apr_stats_acc_finish(&tc.acc[i], &trace->s[i]);
    free(tc.acc);
    return rc;
}

static void cpu_free(apr_backend *be)
{
    cpu_be *b = (cpu_be *)be;
    pool_free(b->pool);
    packs_free(b);
    free(b->kc);
    free(b->vc);
    free(b->x);
    free(b->xb);
    free(b->xb2);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->hb);
    free(b->hb2);
    free(b->rope_cs);
    free(b->rope_cs_swa);
    free(b->scores);
    for (int i = 0; i < b->n_act; i++)
        free(b->act[i].buf);
    free(b);
}

static const apr_backend_ops cpu_ops = {"cpu", cpu_eval, cpu_free};

int apr_cpu_backend_create(apr_backend **out, const apr_graph *g, uint32_t max_ctx, int n_threads,
                           apr_err *err)
{
    *out = NULL;
    const apr_arch_config *c = &g->cfg;
    if (n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int)nc : 1;
    }
    if (n_threads > 256)
        n_threads = 256;
    cpu_be *b = calloc(1, sizeof *b);
    if (!b)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    b->base.ops = &cpu_ops;
    b->g = g;
    b->max_ctx = max_ctx;
    b->nth = n_threads;
    b->q_dim = (uint64_t)c->n_heads * c->head_dim;
    b->kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    const uint64_t N = CPU_CHUNK, H = c->hidden;
    const uint64_t wide = b->q_dim > H ? b->q_dim : H;
    /* the KV cache is calloc'd: pages are only touched up to the positions used */
    b->kc = calloc((size_t)c->n_layers * max_ctx * b->kv_dim, sizeof(float));
    b->vc = calloc((size_t)c->n_layers * max_ctx * b->kv_dim, sizeof(float));
    b->x = malloc(N * H * sizeof(float));
    b->xb = malloc(N * wide * sizeof(float));
    b->xb2 = malloc(N * H * sizeof(float));
    b->q = malloc(N * b->q_dim * sizeof(float));
    b->k = malloc(N * b->kv_dim * sizeof(float));
    b->v = malloc(N * b->kv_dim * sizeof(float));
    b->att = malloc(N * b->q_dim * sizeof(float));
    b->hb = malloc(N * c->ffn * sizeof(float));
    b->hb2 = malloc(N * c->ffn * sizeof(float));
    b->rope_cs = malloc(N * c->head_dim * sizeof(float));
    if (c->rope_theta_swa > 0.0f)
        b->rope_cs_swa = malloc(N * c->head_dim * sizeof(float));
    {
        const apr_attn_shape as = {.n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim};
        b->scratch_per_thread = apr_attn_scratch_floats(&as);
    }
    b->scores = malloc((size_t)n_threads * b->scratch_per_thread * sizeof(float));
    b->pool = pool_new(n_threads);
    if (!b->kc || !b->vc || !b->x || !b->xb || !b->xb2 || !b->q || !b->k || !b->v || !b->att || !b->hb ||
        !b->hb2 || !b->rope_cs || (c->rope_theta_swa > 0.0f && !b->rope_cs_swa) || !b->scores || !b->pool) {
        cpu_free(&b->base);
        return apr_err_set(err, APR_E_NOMEM, "out of memory allocating the CPU backend (context %u)", max_ctx);
    }
    *out = &b->base;
    return 0;
}
