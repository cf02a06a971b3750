/* hfmeta.h - PRIVATE to formats/:
 * HF config.json <-> GGUF KVs (the tokenizer files are libtok's), and the
 * typed-KV records (apr_gguf, apr.kvs) shared by safetensors.c and synth.c. */
#ifndef APR_HFMETA_H
#define APR_HFMETA_H

#include <jansson.h>

#include "formats.h"

/* Reals in every JSON we write are dumped with this precision: the writer
 * stores each f32 as the double of its shortest decimal, so 9 digits print
 * that decimal exactly and reading it back (double -> float) gives the same
 * float bits. f64 values are stored as strings (see apr_kv_to_json). */
#define APR_JSON_DUMP_FLAGS JSON_REAL_PRECISION(9)

/* apr_json_f32, apr_json_get_f32, apr_json_to_str: formats.h (libtok shares them). */

/* Typed KV <-> {"key":..., "type":"u32", "value":...} (arrays: "type":"array",
 * "elem":"f32", "value":[...]), the value in the HF dialect of the one codec
 * (core/kvjson.c, apr_json.h). Exact for every type: u64 above INT64_MAX and
 * f64 travel as decimal strings. */
json_t *apr_kv_to_json(const apr_kv *kv, apr_err *err);
int apr_kv_from_json(apr_kv *out, const json_t *j, apr_err *err);
bool apr_kv_equal(const apr_kv *a, const apr_kv *b);

/* Dump j (compact, or indented) with APR_JSON_DUMP_FLAGS; malloc'd text. */
char *apr_json_dump(const json_t *j, bool pretty);

/* The HF side files of a model directory, parsed (NULL when absent). */
typedef struct apr_hf_docs {
    json_t *config;           /* config.json */
    json_t *gen_config;       /* generation_config.json */
    json_t *tokenizer;        /* tokenizer.json */
    json_t *tokenizer_config; /* tokenizer_config.json */
    json_t *chat_template_alt;/* chat_template.jinja / chat_template.json (read side only; tok.h) */
    json_t *added_tokens;     /* added_tokens.json (read side only; SentencePiece vocabs) */
    struct apr_spm *spm;      /* tokenizer.model; when present it wins over tokenizer.json */
} apr_hf_docs;

void apr_hf_docs_free(apr_hf_docs *d);
/* Load whichever of the files exist in dir. A file that exists but does not
 * parse is an error naming it. */
int apr_hf_docs_load(apr_hf_docs *d, const char *dir, apr_err *err);
/* Map the docs to KVs in m, as llama.cpp's convert_hf_to_gguf.py would (plus
 * the exact "apr_gguf" records our writer leaves when a GGUF detail has no HF
 * field). dir_name: fallback for general.name (may be NULL). Unknown
 * architectures are an error only when a config.json is present. */
int apr_hf_docs_to_kvs(apr_model *m, const apr_hf_docs *d, const char *dir_name, apr_err *err);
/* Build the docs from m's KVs / derived cfg and tok (m must be derived).
 * Docs the model has no data for stay NULL. */
int apr_hf_docs_from_model(const apr_model *m, apr_hf_docs *d, apr_err *err);

/* True for KVs that never go into config.json / tokenizer.json records:
 * apr.provenance.* and safetensors.metadata.* (they travel in __metadata__). */
bool apr_hf_kv_is_file_level(const char *key);

/* The torch_dtype name HF writes for a plain dtype ("float32", ...), or NULL. */
const char *apr_hf_torch_dtype(apr_dtype dt);

/* ---------------------------------------------------------------- safetensors writer core */

/* Writes the bytes of tensor idx of m into f (exactly m->tensors[idx].nbytes).
 * Lets a producer (the synthetic generator) stream tensors it never holds in
 * memory all at once. */
typedef int (*apr_st_fill_fn)(void *ctx, const apr_model *m, uint64_t idx, apr_outfile *f, apr_err *err);

/* apr_safetensors_write with an optional producer: when fill is NULL the
 * tensors' data pointers are written. */
int apr_safetensors_write_ex(const apr_model *m, const char *path, const apr_write_opts *o,
                             apr_st_fill_fn fill, void *ctx, apr_err *err);

#endif
