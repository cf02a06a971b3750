/* apr_util.h - the public header of libutil (aprutil), the bottom of the
 * stack: the helpers every library would otherwise write for itself, one of
 * each (issue 10): a string hash table, a growable byte buffer, the
 * little-endian loads and read cursor, and the spawn-and-join thread helper.
 * No apr types: it depends on nothing but libc and pthreads, so every library
 * (formats included) may use it. */
#ifndef APR_UTIL_H
#define APR_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- hashing */

/* FNV-1a 64 over n bytes (the synthetic generator's tensor streams are
 * documented with it: formats.h). */
static inline uint64_t apr_fnv1a64(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Open-addressing table from byte strings (borrowed: they must outlive the
 * table) to int32 values, sized once for the keys it will hold (no growth,
 * no deletion: the vocab and merge maps of a tokenizer, sets of generated
 * strings). A slot is one 16-byte record, so a probe reads one cache line. */
typedef struct apr_strmap_slot {
    const char *key; /* NULL: empty */
    uint32_t len;
    int32_t val;
} apr_strmap_slot;

typedef struct apr_strmap {
    uint64_t cap; /* power of two, at least twice the keys */
    apr_strmap_slot *slot;
} apr_strmap;

/* Room for n keys. -1 when out of memory or n is over 2^30. */
int apr_strmap_init(apr_strmap *m, uint64_t n);
void apr_strmap_free(apr_strmap *m);

static inline apr_strmap_slot *apr_strmap_find_(const apr_strmap *m, const char *k, uint32_t n)
{
    uint64_t i = apr_fnv1a64(k, n) & (m->cap - 1);
    while (m->slot[i].key) {
        if (m->slot[i].len == n && !memcmp(m->slot[i].key, k, n))
            return &m->slot[i];
        i = (i + 1) & (m->cap - 1);
    }
    return &m->slot[i];
}

/* Inserts k -> v unless k is present (then the first value stays: in a vocab
 * the later duplicates are unreachable). True when inserted. At most the n
 * keys given to init may be inserted. */
static inline bool apr_strmap_put(apr_strmap *m, const char *k, uint32_t n, int32_t v)
{
    apr_strmap_slot *s = apr_strmap_find_(m, k, n);
    if (s->key)
        return false;
    *s = (apr_strmap_slot){k, n, v};
    return true;
}

/* The value of k, or -1 when absent (also for a table never initialised). */
static inline int32_t apr_strmap_get(const apr_strmap *m, const char *k, size_t n)
{
    if (!m->cap || n > UINT32_MAX)
        return -1;
    const apr_strmap_slot *s = apr_strmap_find_(m, k, (uint32_t)n);
    return s->key ? s->val : -1;
}

/* ---------------------------------------------------------------- byte buffer */

/* Growable byte buffer (metadata sections assembled before one write,
 * protobuf messages). Out of memory is sticky: the append that failed and
 * every later one are no-ops and oom stays set, so a writer checks once. */
typedef struct apr_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} apr_buf;

void apr_buf_put(apr_buf *b, const void *data, size_t n);
void apr_buf_u8(apr_buf *b, uint8_t v);
void apr_buf_u16(apr_buf *b, uint16_t v); /* little-endian, as every number below */
void apr_buf_u32(apr_buf *b, uint32_t v);
void apr_buf_u64(apr_buf *b, uint64_t v);
void apr_buf_pad(apr_buf *b, size_t align); /* zeros up to a multiple of align */
void apr_buf_free(apr_buf *b);

/* ---------------------------------------------------------------- little-endian reads */

/* Loads from an unaligned pointer. */
static inline uint16_t apr_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t apr_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t apr_ld64(const uint8_t *p) { return apr_ld32(p) | ((uint64_t)apr_ld32(p + 4) << 32); }

/* A bounds-checked read position in size bytes. Every read takes all its
 * bytes or none: false (the position unchanged) when fewer are left, so a
 * reader states what was truncated in its own words. */
typedef struct apr_cursor {
    const uint8_t *buf;
    uint64_t size, pos;
} apr_cursor;

static inline uint64_t apr_cur_left(const apr_cursor *c) { return c->size - c->pos; }
/* The next n bytes in place (*out), skipped over. */
static inline bool apr_cur_take(apr_cursor *c, uint64_t n, const uint8_t **out)
{
    if (apr_cur_left(c) < n)
        return false;
    *out = c->buf + c->pos;
    c->pos += n;
    return true;
}
static inline bool apr_cur_bytes(apr_cursor *c, void *out, uint64_t n)
{
    const uint8_t *p;
    if (!apr_cur_take(c, n, &p))
        return false;
    if (n)
        memcpy(out, p, (size_t)n);
    return true;
}
static inline bool apr_cur_u32(apr_cursor *c, uint32_t *v)
{
    const uint8_t *p;
    if (!apr_cur_take(c, 4, &p))
        return false;
    *v = apr_ld32(p);
    return true;
}
static inline bool apr_cur_i32(apr_cursor *c, int32_t *v)
{
    uint32_t u;
    if (!apr_cur_u32(c, &u))
        return false;
    *v = (int32_t)u;
    return true;
}
static inline bool apr_cur_u64(apr_cursor *c, uint64_t *v)
{
    const uint8_t *p;
    if (!apr_cur_take(c, 8, &p))
        return false;
    *v = apr_ld64(p);
    return true;
}

/* ---------------------------------------------------------------- threads */

/* Spawn-and-join for one parallel step (quantizing a tensor, hashing files,
 * comparing rows): fn(ctx, i) runs once for every i in [0, n). A thread that
 * cannot be created costs speed, never a result: its i runs on the calling
 * thread. Work-queue callers (an atomic counter in ctx) ignore i; static
 * partitions give item i the i-th slice. (libforward's forward pass keeps
 * its own persistent pool: it dispatches thousands of small steps per token,
 * where a spawn each would cost more than the step; libforward/cpu.c.) */
typedef void (*apr_thread_fn)(void *ctx, int i);

/* Threads started by apr_threads_start and not yet joined. */
#define APR_THREADS_MAX 1024
typedef struct apr_thread_arg {
    apr_thread_fn fn;
    void *ctx;
    int i;
} apr_thread_arg;
typedef struct apr_threads {
    int n;
    pthread_t th[APR_THREADS_MAX];
    apr_thread_arg arg[APR_THREADS_MAX];
} apr_threads;

/* How many of apr_threads_run's threads to use for `items` independent
 * pieces of work when `want` were asked for: at least 1, at most items and
 * APR_THREADS_MAX (a thread with no item costs a spawn for nothing). */
int apr_threads_for(int want, uint64_t items);
/* fn(ctx, i) for i in [0, n): i >= 1 on threads, i = 0 here; returns when all ran. */
void apr_threads_run(int n, apr_thread_fn fn, void *ctx);
/* Starts fn(ctx, i) on a thread for i in [first, first + n) (at most
 * APR_THREADS_MAX) and returns at once; the i whose thread could not be
 * created do not run, so the caller helps (a work queue) before
 * apr_threads_join. Returns the number started. */
int apr_threads_start(apr_threads *t, int first, int n, apr_thread_fn fn, void *ctx);
void apr_threads_join(apr_threads *t);

#ifdef __cplusplus
}
#endif
#endif /* APR_UTIL_H */
