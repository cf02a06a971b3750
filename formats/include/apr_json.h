/* apr_json.h - what apr's JSON readers and writers share on top of jansson:
 * parse wrappers that tell out of memory from malformed text, and the checked
 * document builder (apr_jb). Public because libtok (tokenizer.json) and tools
 * (inspect --json) read and build documents too; util/json_util.c implements it. */
#ifndef APR_JSON_H
#define APR_JSON_H

#include "formats.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* json_loadb / json_loads / json_loadf that remember whether a failure was
 * for want of memory (see apr_json_parse_oom). */
json_t *apr_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *je);
json_t *apr_json_loads(const char *s, size_t flags, json_error_t *je);
json_t *apr_json_loadf(FILE *f, size_t flags, json_error_t *je);

/* True when the last apr_json_load* on this thread failed because an
 * allocation failed, not because the text is malformed: jansson reports
 * such a failure as a syntax error at the token it could not store (or with
 * no text at all), so apr counts the failed allocations itself (util/json_util.c
 * installs jansson's allocator). The caller then says "out of memory". */
bool apr_json_parse_oom(void);

/* Building a document (config.json, tokenizer.json, the safetensors header,
 * the provenance record, inspect --json, ...): jansson's setters take the
 * value, even NULL (the constructor that made it failed), and return non-zero
 * when they cannot store it, so an unchecked setter drops a field and the
 * writer goes on with a smaller document. A builder sets every field through
 * apr_jb_set / apr_jb_append, which remember any failure (a NULL container
 * fails the setters that use it, so containers need no check of their own),
 * and asks apr_jb_done once at the end: a document that lost a field is
 * refused, never written. */
typedef struct apr_jb {
    bool bad;               /* a setter failed */
    unsigned long failures; /* apr_json_alloc_failures() when the build began */
} apr_jb;

apr_jb apr_jb_start(void);

/* The setters are inline so that jansson's allocations inside them count at
 * the builder's own call site (tests/fault_injection.sh tells fault sites
 * apart by call site and caller). */
#define APR_JB_INLINE static inline __attribute__((always_inline))

/* json_object_set_new / json_array_append_new (both take v, NULL included). */
APR_JB_INLINE void apr_jb_set(apr_jb *b, json_t *obj, const char *key, json_t *v)
{
    b->bad |= json_object_set_new(obj, key, v) != 0;
}

APR_JB_INLINE void apr_jb_append(apr_jb *b, json_t *arr, json_t *v)
{
    b->bad |= json_array_append_new(arr, v) != 0;
}

/* v, with NULL remembered as a failure: a value that is returned rather than set. */
APR_JB_INLINE json_t *apr_jb_value(apr_jb *b, json_t *v)
{
    b->bad |= !v;
    return v;
}
/* True when one of jansson's allocations failed since apr_jb_start: what a
 * builder checks before it blames the data (a string that is not UTF-8, a
 * float that is not finite) for a NULL value. */
bool apr_jb_oom(const apr_jb *b);
/* 0 when every setter succeeded; else "WHAT: out of memory" (APR_E_NOMEM)
 * when an allocation failed, or "WHAT: a value JSON cannot hold"
 * (APR_E_UNSUPPORTED: not UTF-8, not finite) when none did. */
int apr_jb_done(const apr_jb *b, const char *what, apr_err *err);

/* ---------------------------------------------------------------- typed KV values
 * One codec between a typed KV's value and JSON (formats/core/kvjson.c: one
 * table of KV types, each with its JSON kind and integer range, read by both
 * directions). Where the places that write typed KVs have different
 * conventions, fixed by the files already written, each is a dialect:
 *   APR   APR v2 metadata, gguf_kv and the aprender keys (docs/apr-format.md):
 *         integers beyond +-2^53 as decimal strings, floats as their exact
 *         double, bytes that are not UTF-8 as {"hex": "..."}
 *   HF    the apr_gguf record of config.json and a safetensors header's apr.kvs:
 *         u64 above INT64_MAX as a decimal string, f32 as the double of its
 *         shortest decimal (APR_JSON_DUMP_FLAGS), f64 as a "%.17g" decimal
 *         string, strings that are not UTF-8 refused
 *   SHOW  apr inspect --json (display only, never read back): HF's integers,
 *         floats as their exact double, NaN and infinities as null
 * APR and HF write NaN and infinities as "0x<hex bits>" strings. */
typedef enum apr_kvjson_dialect {
    APR_KVJSON_APR,
    APR_KVJSON_HF,
    APR_KVJSON_SHOW,
    APR_KVJSON_DIALECTS
} apr_kvjson_dialect;

/* kv's value in dialect d (arrays: their first max_elems elements; UINT64_MAX
 * for all). NULL on failure, with "KV 'KEY': reason" in err (may be NULL):
 * out of memory (APR_E_NOMEM), a string JSON cannot hold in d
 * (APR_E_UNSUPPORTED), a type that is none (APR_E_ARG). */
json_t *apr_kvjson_encode(const apr_kv *kv, apr_kvjson_dialect d, uint64_t max_elems, apr_err *err);

#endif
