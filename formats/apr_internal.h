/* apr_internal.h - helpers shared by the GGUF and APR readers/writers (not public). */
#ifndef APR_FORMATS_INTERNAL_H
#define APR_FORMATS_INTERNAL_H

#include "formats.h"

/* What opening a GGUF or APR file shares: map path, parse the bytes (fmt
 * APR_FMT_GGUF or APR_FMT_APR; check_footer for APR), prefix any parse error
 * with the path, and give the mapping to the model (freed with it). */
int apr_open_mapped(apr_model **out, const char *path, apr_format fmt, bool check_footer, apr_err *err);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool apr_utf8_valid(const char *s, size_t n);

/* Growable byte buffer used to assemble metadata sections before one write. */
typedef struct apr_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;        /* sticky: set when a grow failed; later appends are no-ops */
} apr_buf;

void apr_buf_put(apr_buf *b, const void *data, size_t n);
void apr_buf_u8(apr_buf *b, uint8_t v);
void apr_buf_u16(apr_buf *b, uint16_t v);
void apr_buf_u32(apr_buf *b, uint32_t v);
void apr_buf_u64(apr_buf *b, uint64_t v);
void apr_buf_pad(apr_buf *b, size_t align); /* zeros up to a multiple of align */
void apr_buf_free(apr_buf *b);

/* Little-endian loads from an unaligned pointer. */
static inline uint16_t apr_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t apr_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t apr_ld64(const uint8_t *p) { return apr_ld32(p) | ((uint64_t)apr_ld32(p + 4) << 32); }

/* Sort helper: indices of m->tensors ordered by name (bytewise); NULL on OOM. */
uint64_t *apr_tensor_order_by_name(const apr_model *m);

/* Progress line on stderr, only when enabled and stderr is a TTY. */
void apr_progress(bool enabled, const char *what, uint64_t done, uint64_t total);

#endif
