/* apr_internal.h - helpers shared by the GGUF and APR readers/writers (not public). */
#ifndef APR_FORMATS_INTERNAL_H
#define APR_FORMATS_INTERNAL_H

#include "apr_util.h" /* apr_buf, apr_ld16/32/64, apr_cursor */
#include "formats.h"

/* What opening a GGUF or APR file shares: map path, parse the bytes (fmt
 * APR_FMT_GGUF or APR_FMT_APR; check_footer for APR), prefix any parse error
 * with the path, and give the mapping to the model (freed with it). */
int apr_open_mapped(apr_model **out, const char *path, apr_format fmt, bool check_footer, apr_err *err);

/* A multi-file model (split GGUF, sharded APR): moves the tensors of
 * file k, opened alone as part, and its mapping into m; a tensor m already
 * has is refused ("tensor 'x' is in two <what>"). */
int apr_model_adopt_part(apr_model *m, apr_model *part, uint32_t k, const char *what, apr_err *err);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool apr_utf8_valid(const char *s, size_t n);

/* Sort helper: indices of m->tensors ordered by name (bytewise); NULL on OOM. */
uint64_t *apr_tensor_order_by_name(const apr_model *m);
/* A name that occurs twice among n structs of the given stride whose first
 * member is a char* (apr_kv.key, apr_tensor.name), or NULL; *oom when the
 * index could not be allocated. O(n log n). */
const char *apr_find_duplicate_name(const void *base, size_t stride, uint64_t n, bool *oom);
/* 0 when the names are unique; else code (a duplicate: "<what> '<name>'")
 * or APR_E_NOMEM. */
int apr_check_unique_names(const void *base, size_t stride, uint64_t n, int code, const char *what, apr_err *err);

/* ---- one-pass writing (stream.c) */
typedef struct apr_stream {
    uint8_t *buf; /* the producer's buffer, reused: the largest produced tensor */
    uint64_t cap;
} apr_stream;

/* A tensor the writer can write: it has data, or o has a producer. */
int apr_stream_check(const apr_tensor *t, const apr_write_opts *o, apr_err *err);
/* Appends tensor i's payload to f (from its data, or produced and, when the
 * record expects it, hashed); crc (may be NULL) accumulates its CRC32. */
int apr_stream_payload(apr_stream *s, apr_outfile *f, const apr_model *m, uint64_t i, const apr_write_opts *o,
                       uint32_t *crc, apr_err *err);
void apr_stream_free(apr_stream *s);
/* With o->prov: fills the digests into meta (the len bytes written at
 * offset off of f) and writes them over it in place. No-op without. */
int apr_stream_seal(apr_outfile *f, const apr_write_opts *o, uint8_t *meta, size_t len, uint64_t off, apr_err *err);

/* Renames every temporary into place, or (one failed) none: the ones
 * already renamed are removed and the rest aborted. */
int apr_outfiles_commit(apr_outfile *f, size_t n, apr_err *err);

/* Progress line on stderr, only when enabled and stderr is a TTY. */
void apr_progress(bool enabled, const char *what, uint64_t done, uint64_t total);

#endif
