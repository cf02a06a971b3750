/* util.c - libutil's out-of-line halves (apr_util.h): table setup, buffer
 * growth, thread spawning. */
#include "apr_util.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- string table */

int apr_strmap_init(apr_strmap *m, uint64_t n)
{
    memset(m, 0, sizeof *m);
    if (n > (1ull << 30))
        return -1;
    uint64_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    if (!(m->slot = calloc((size_t)cap, sizeof *m->slot)))
        return -1;
    m->cap = cap;
    return 0;
}

void apr_strmap_free(apr_strmap *m)
{
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- byte buffer */

void apr_buf_put(apr_buf *b, const void *data, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t want = b->cap ? b->cap : 4096;
        while (want - b->len < n) {
            if (want > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            want *= 2;
        }
        uint8_t *p = realloc(b->p, want);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = want;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void apr_buf_u8(apr_buf *b, uint8_t v) { apr_buf_put(b, &v, 1); }
void apr_buf_u16(apr_buf *b, uint16_t v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; apr_buf_put(b, x, 2); }
void apr_buf_u32(apr_buf *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    apr_buf_put(b, x, 4);
}
void apr_buf_u64(apr_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    apr_buf_put(b, x, 8);
}

void apr_buf_pad(apr_buf *b, size_t align)
{
    static const uint8_t zeros[64];
    while (align && b->len % align && !b->oom) {
        size_t pad = align - b->len % align;
        apr_buf_put(b, zeros, pad > sizeof zeros ? sizeof zeros : pad);
    }
}

void apr_buf_free(apr_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- threads */

static void *thread_main(void *p)
{
    const apr_thread_arg *a = p;
    a->fn(a->ctx, a->i);
    return NULL;
}

int apr_threads_start(apr_threads *t, int first, int n, apr_thread_fn fn, void *ctx)
{
    t->n = 0;
    for (int k = 0; k < n && k < APR_THREADS_MAX; k++) {
        t->arg[t->n] = (apr_thread_arg){fn, ctx, first + k};
        if (pthread_create(&t->th[t->n], NULL, thread_main, &t->arg[t->n]) == 0)
            t->n++;
    }
    return t->n;
}

void apr_threads_join(apr_threads *t)
{
    for (int k = 0; k < t->n; k++)
        pthread_join(t->th[k], NULL);
    t->n = 0;
}

int apr_threads_for(int want, uint64_t items)
{
    if (want < 1 || items <= 1)
        return 1;
    if ((uint64_t)want > items)
        want = (int)items;
    return want > APR_THREADS_MAX ? APR_THREADS_MAX : want;
}

void apr_threads_run(int n, apr_thread_fn fn, void *ctx)
{
    apr_threads t; /* 24 KiB of stack; no allocation that could fail */
    int started = n > 1 ? apr_threads_start(&t, 1, n - 1, fn, ctx) : 0;
    if (n >= 1)
        fn(ctx, 0);
    /* the i whose thread did not start run here (t.arg holds the started
     * ones' items in increasing order) */
    for (int i = 1, next = 0; i < n; i++) {
        if (next < started && t.arg[next].i == i)
            next++;
        else
            fn(ctx, i);
    }
    if (started)
        apr_threads_join(&t);
}
