/* attn.h - the CPU backend's attention over the KV cache (cpu.c calls it;
 * tests/test_attn.c checks it).
 *
 * Tiled over keys with an online softmax: no score row longer than one key
 * tile, the queries of a block and the query heads of one KV head (GQA)
 * sharing each K/V tile while it is in cache. Work is cut into items
 * (KV head, block of APR_ATTN_QB queries) that threads share out in any way.
 *
 * Determinism: a query's output depends only on its own position. Key tiles
 * are aligned to absolute positions (0, KT, 2 KT, ...), and each query
 * visits the tiles it can see in that order with the same operations, so
 * neither the item a query falls in, nor the thread, nor how the prompt is
 * batched changes a bit. The result differs from apr_attn_reference (one
 * softmax over the whole row, sum in double) by float rounding only.
 */
#ifndef APR_ATTN_H
#define APR_ATTN_H

#include <stddef.h>
#include <stdint.h>

#define APR_ATTN_QB 16 /* queries per work item */
#define APR_ATTN_KT 64 /* keys per tile */

typedef struct apr_attn_shape {
    uint32_t n_heads, n_kv_heads, head_dim;
    uint64_t q_stride;  /* floats between tokens of q and of out */
    uint64_t kv_stride; /* floats between positions of the K and V caches */
    float scale;        /* multiplies q.k */
    float softcap;      /* 0: none; else s = softcap * tanh(s / softcap) after the scale (Gemma 2) */
    uint32_t window;    /* 0: causal only; else also only the last window positions (sliding window) */
} apr_attn_shape;

/* Work items for nt queries, and the floats of scratch one item needs. */
uint64_t apr_attn_items(const apr_attn_shape *s, uint32_t nt);
size_t apr_attn_scratch_floats(const apr_attn_shape *s);

/* Item `item` of a batch: queries q[t * q_stride + h * head_dim] at
 * positions pos0 + t (t < nt), keys/values k/v[p * kv_stride + kh *
 * head_dim] for p <= pos0 + t, outputs out (laid out as q). */
void apr_attn_item(const apr_attn_shape *s, const float *q, const float *k, const float *v, float *out, uint32_t nt,
                   uint32_t pos0, uint64_t item, float *scratch);

/* One (query t, head h) the plain way: every score of the row (scores: room
 * for pos0 + t + 1 floats), softmax with a double sum, weighted sum of V.
 * The reference the tiled kernel is tested against. */
void apr_attn_reference(const apr_attn_shape *s, const float *q, const float *k, const float *v, float *out,
                        uint32_t pos0, uint32_t t, uint32_t h, float *scores);

#endif
