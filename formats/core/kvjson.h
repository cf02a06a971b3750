/* kvjson.h - PRIVATE to formats/: the decoding half of the one typed-KV <->
 * JSON value codec (core/kvjson.c). The encoding half, apr_kvjson_encode, and
 * the dialects are in apr_json.h (apr inspect --json encodes too). A record
 * layout (APR's [key, type, value] triples, the HF records' {key, type, elem,
 * value} objects) stays with its format; the values inside it come from here. */
#ifndef APR_KVJSON_H
#define APR_KVJSON_H

#include "apr_json.h"

/* The type called s by apr_kv_type_name ("u32", "string", "array", ...), or -1. */
int apr_kvjson_type(const char *s);

/* Decodes j as the value of kv, whose type (and element type, for arrays) is
 * already set; kv->key is not touched. Failure: "WHAT: reason" or "WHAT,
 * element N: reason" (APR_E_FORMAT), "WHAT: out of memory" (APR_E_NOMEM); kv
 * may then hold part of the value, which apr_kv_free frees. */
int apr_kvjson_decode(const json_t *j, apr_kv *kv, apr_kvjson_dialect d, const char *what, apr_err *err);

#endif
