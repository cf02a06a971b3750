/* formats.h - the public header of the formats library.
 *
 * One in-memory model view shared by safetensors, GGUF and APR v2:
 *   - a tensor table (name as stored in the file, dtype, shape, pointer into the
 *     mapped file or an owned buffer),
 *   - typed metadata key/values in GGUF's namespace and types (the lingua franca:
 *     the GGUF reader fills them directly, the APR reader maps its JSON metadata
 *     to them, the safetensors reader maps config.json / tokenizer.json to them),
 *   - the architecture config and tokenizer derived from those KVs,
 *   - the provenance record (JSON text) the file carries, if any.
 *
 * Conventions that hold everywhere in this project:
 *   - dims[] are outermost first (row-major, as HF and APR write them):
 *     a Linear weight of out x in is dims = {out, in}. GGUF's ne[] is the
 *     reverse (ne[0] = in); the GGUF reader/writer reverse it.
 *   - apr_dtype values are ggml's type numbers where ggml has the type. APR's
 *     own on-disk dtype codes differ for some types and are mapped in apr.c.
 *   - Functions that can fail return 0 on success and a negative value on
 *     failure, with a human-readable message in *err.
 */
#ifndef APR_FORMATS_H
#define APR_FORMATS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define APR_VERSION_STRING "0.1.0"
#define APR_MAX_DIMS 8

/* ---------------------------------------------------------------- errors */

typedef struct apr_err {
    int code;        /* one of APR_E_* (negative) or 0 */
    char msg[1024];
} apr_err;

enum {
    APR_OK = 0,
    APR_E_IO = -1,        /* open/read/write/rename failed */
    APR_E_FORMAT = -2,    /* the bytes do not follow the format */
    APR_E_UNSUPPORTED = -3,
    APR_E_NOMEM = -4,
    APR_E_ARG = -5,       /* caller passed something invalid */
    APR_E_MISMATCH = -6,  /* a verify/compare found a difference */
};

/* Set err (may be NULL) and return code. printf-style. */
int apr_err_set(apr_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------- dtypes */

typedef enum apr_dtype {
    APR_DT_F32 = 0,
    APR_DT_F16 = 1,
    APR_DT_Q4_0 = 2,
    APR_DT_Q4_1 = 3,
    APR_DT_Q5_0 = 6,
    APR_DT_Q5_1 = 7,
    APR_DT_Q8_0 = 8,
    APR_DT_Q8_1 = 9,
    APR_DT_Q2_K = 10,
    APR_DT_Q3_K = 11,
    APR_DT_Q4_K = 12,
    APR_DT_Q5_K = 13,
    APR_DT_Q6_K = 14,
    APR_DT_Q8_K = 15,
    APR_DT_I8 = 24,
    APR_DT_I16 = 25,
    APR_DT_I32 = 26,
    APR_DT_I64 = 27,
    APR_DT_F64 = 28,
    APR_DT_BF16 = 30,
    /* not ggml types: only safetensors / APR carry them */
    APR_DT_U8 = 64,
    APR_DT_U16 = 65,
    APR_DT_U32 = 66,
    APR_DT_U64 = 67,
    APR_DT_BOOL = 68,
    /* A row-concatenation of parts with different dtypes (APR's fused QKV when
     * Q, K and V were quantized differently, e.g. llama.cpp's Q4_K_M with a
     * Q6_K attn_v). The tensor's dims are the fused {rows, cols}; parts[]
     * say how many rows each part has and in which dtype. See docs/apr-format.md. */
    APR_DT_ROWCAT = 69,
    APR_DT_COUNT = 70 /* bound for tables; not a type */
} apr_dtype;

typedef struct apr_dtype_info {
    const char *name;     /* "F32", "Q4_K", ... ; NULL for unknown codes */
    uint32_t block_elems; /* elements per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    bool quantized;       /* a ggml block type */
} apr_dtype_info;

/* NULL if code is not a known dtype. */
const apr_dtype_info *apr_dtype_get(int code);
/* Case-insensitive lookup of "q4_k", "F16", ...; returns -1 if unknown. */
int apr_dtype_from_name(const char *name);
const char *apr_dtype_name(int code); /* "?" if unknown */
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size
 * or the dtype is unknown. */
uint64_t apr_dtype_row_bytes(int code, uint64_t n);
/* Bytes of a whole tensor of the given dims (outermost first). Returns false
 * on overflow, unknown dtype, or innermost dim not a multiple of the block. */
bool apr_dtype_tensor_bytes(int code, uint32_t ndim, const uint64_t *dims, uint64_t *out);
/* Product of dims with overflow check. */
bool apr_dims_count(uint32_t ndim, const uint64_t *dims, uint64_t *out);

/* ---------------------------------------------------------------- metadata */

/* Value types: GGUF's numbering. */
typedef enum apr_kv_type {
    APR_KV_U8 = 0, APR_KV_I8 = 1, APR_KV_U16 = 2, APR_KV_I16 = 3,
    APR_KV_U32 = 4, APR_KV_I32 = 5, APR_KV_F32 = 6, APR_KV_BOOL = 7,
    APR_KV_STRING = 8, APR_KV_ARRAY = 9, APR_KV_U64 = 10, APR_KV_I64 = 11,
    APR_KV_F64 = 12,
    APR_KV_TYPE_COUNT = 13
} apr_kv_type;

typedef struct apr_str {
    uint64_t len;
    char *s; /* NUL-terminated copy (len excludes the NUL); may hold NULs inside */
} apr_str;

typedef union apr_kv_scalar {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16;
    uint32_t u32; int32_t i32; float f32; uint8_t b;
    uint64_t u64; int64_t i64; double f64;
} apr_kv_scalar;

typedef struct apr_kv {
    char *key;
    apr_kv_type type;
    apr_kv_scalar v;     /* scalar types */
    apr_str str;         /* APR_KV_STRING */
    apr_kv_type arr_type;/* APR_KV_ARRAY: element type (never ARRAY) */
    uint64_t count;      /* APR_KV_ARRAY: number of elements */
    void *arr;           /* numeric: count packed little-endian elements;
                            strings: apr_str[count] */
} apr_kv;

/* Size in bytes of one scalar of type t (0 for STRING/ARRAY/unknown). */
size_t apr_kv_type_size(apr_kv_type t);
const char *apr_kv_type_name(apr_kv_type t);

/* ---------------------------------------------------------------- config */

typedef enum apr_rope_type { APR_ROPE_NORM = 0, APR_ROPE_NEOX = 2 } apr_rope_type;

typedef struct apr_arch_config {
    char arch[32];            /* "llama" or "qwen2" */
    uint32_t n_layers;
    uint32_t hidden;          /* embedding length */
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;        /* recorded head dim; never assume hidden/n_heads */
    uint32_t ffn;             /* feed-forward length */
    uint32_t vocab;
    uint32_t ctx_len;
    float rope_theta;
    float rms_eps;
    apr_rope_type rope_type;  /* NORM (interleaved, GGUF llama) or NEOX */
    bool tied_embeddings;     /* no separate output weight */
    bool qkv_bias;            /* Qwen2 */
} apr_arch_config;

typedef struct apr_tokenizer {
    char model[32];           /* "llama" (SentencePiece) or "gpt2" (byte BPE); "" none */
    char pre[64];             /* pre-tokenizer name, e.g. "qwen2", "default" */
    uint32_t n_tokens;
    apr_str *tokens;          /* borrowed from the model's KVs */
    const float *scores;      /* n_tokens or NULL */
    const int32_t *token_type;/* n_tokens or NULL */
    uint32_t n_merges;
    apr_str *merges;          /* borrowed; NULL if none */
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1 if absent */
    bool add_bos, add_eos;
    const char *chat_template;/* borrowed; NULL if none */
} apr_tokenizer;

/* ---------------------------------------------------------------- tensors / model */

#define APR_MAX_PARTS 4
typedef struct apr_tensor_part {
    apr_dtype dtype;
    uint64_t rows;
    uint64_t nbytes;
} apr_tensor_part;

typedef struct apr_tensor {
    char *name;               /* as stored in the file */
    apr_dtype dtype;
    uint32_t ndim;
    uint64_t dims[APR_MAX_DIMS]; /* outermost first */
    uint64_t nbytes;          /* exact payload bytes */
    const uint8_t *data;      /* into a mapping or into owned */
    uint64_t file_offset;     /* absolute offset of the payload in its file */
    uint32_t shard;           /* index into model->maps */
    uint8_t *owned;           /* non-NULL when the model owns a buffer for it */
    uint32_t n_parts;         /* APR_DT_ROWCAT only: parts[0..n_parts) in row order */
    apr_tensor_part parts[APR_MAX_PARTS];
} apr_tensor;

typedef enum apr_format {
    APR_FMT_UNKNOWN = 0,
    APR_FMT_GGUF = 1,
    APR_FMT_SAFETENSORS = 2,
    APR_FMT_APR = 3,
} apr_format;

typedef struct apr_mapping {
    char *path;
    const uint8_t *base;
    uint64_t size;
} apr_mapping;

typedef struct apr_model {
    apr_format format;
    uint32_t version;         /* GGUF version, APR major, 0 for safetensors */
    char *path;               /* the path opened */
    apr_mapping *maps;        /* one per file (several for sharded safetensors) */
    uint32_t n_maps;
    uint32_t alignment;       /* GGUF data alignment; 64 for APR; 0 n/a */

    apr_tensor *tensors;
    uint64_t n_tensors;

    apr_kv *kvs;              /* GGUF-namespace typed metadata */
    uint64_t n_kvs;

    apr_arch_config cfg;
    bool has_cfg;
    apr_tokenizer tok;
    bool has_tok;

    char *provenance_json;    /* provenance object as JSON text, or NULL */
    char *raw_meta_json;      /* APR: the metadata JSON as stored; NULL otherwise */
} apr_model;

/* Open any supported file by sniffing its first bytes (a directory or a
 * model.safetensors.index.json opens a sharded safetensors set). */
typedef struct apr_open_opts {
    bool skip_footer_crc;     /* APR: skip the whole-file CRC32 (header CRC is always checked) */
} apr_open_opts;

int apr_model_open(apr_model **out, const char *path, const apr_open_opts *opts, apr_err *err);
void apr_model_free(apr_model *m);
apr_format apr_format_sniff(const char *path);
const char *apr_format_name(apr_format f);
/* By extension: .gguf, .apr, .safetensors (or a directory) */
apr_format apr_format_from_path(const char *path);

/* Create an empty model (for writers fed by converters). */
apr_model *apr_model_new(apr_format fmt);

/* Lookups. NULL if absent. */
const apr_tensor *apr_model_tensor(const apr_model *m, const char *name);
const apr_kv *apr_model_kv(const apr_model *m, const char *key);
/* Typed getters; return false if absent or of an incompatible type.
 * Integer getters accept any integer KV type whose value fits. */
bool apr_kv_get_u32(const apr_model *m, const char *key, uint32_t *out);
bool apr_kv_get_f32(const apr_model *m, const char *key, float *out);
bool apr_kv_get_bool(const apr_model *m, const char *key, bool *out);
const char *apr_kv_get_str(const apr_model *m, const char *key);

/* Mutating helpers (keys are copied; setting an existing key replaces it). */
int apr_model_set_kv_u32(apr_model *m, const char *key, uint32_t v);
int apr_model_set_kv_i32(apr_model *m, const char *key, int32_t v);
int apr_model_set_kv_f32(apr_model *m, const char *key, float v);
int apr_model_set_kv_bool(apr_model *m, const char *key, bool v);
int apr_model_set_kv_str(apr_model *m, const char *key, const char *v);
/* Deep-copies kv (key, strings, arrays) into m. */
int apr_model_set_kv(apr_model *m, const apr_kv *kv);
int apr_model_remove_kv(apr_model *m, const char *key);
/* Adds a tensor. data is borrowed (must outlive the model) unless take_ownership,
 * in which case m frees it. */
int apr_model_add_tensor(apr_model *m, const char *name, apr_dtype dt, uint32_t ndim,
                         const uint64_t *dims, const void *data, uint64_t nbytes,
                         bool take_ownership, apr_err *err);
/* Adds an APR_DT_ROWCAT tensor of dims {sum of parts[].rows, cols}: parts[]
 * (1..APR_MAX_PARTS, in row order, each a non-ROWCAT dtype) are stored back to
 * back in data; each part's nbytes must equal rows * apr_dtype_row_bytes(dtype,
 * cols). data is borrowed unless take_ownership. Implemented in apr.c. */
int apr_model_add_rowcat_tensor(apr_model *m, const char *name, uint64_t cols,
                                const apr_tensor_part *parts, uint32_t n_parts, const void *data,
                                bool take_ownership, apr_err *err);

/* Fill m->cfg / m->tok from the KVs (GGUF names: general.architecture,
 * {arch}.block_count, tokenizer.ggml.*). Returns 0 if a usable config was found. */
int apr_model_derive(apr_model *m, apr_err *err);

void apr_kv_free(apr_kv *kv);
int apr_kv_copy(apr_kv *dst, const apr_kv *src);

/* ---------------------------------------------------------------- readers / writers */

int apr_gguf_open(apr_model **out, const char *path, apr_err *err);
int apr_safetensors_open(apr_model **out, const char *path, apr_err *err);
int apr_apr_open(apr_model **out, const char *path, const apr_open_opts *opts, apr_err *err);

/* Parse from a buffer already in memory (used by fuzz harnesses and tests).
 * The buffer must outlive the model. */
int apr_gguf_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err);
int apr_safetensors_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err);
int apr_apr_parse(apr_model **out, const uint8_t *buf, uint64_t size, bool check_footer, apr_err *err);

typedef struct apr_write_opts {
    uint32_t alignment;       /* GGUF: 0 = 32 (or general.alignment KV) */
    uint64_t shard_max_bytes; /* safetensors: 0 = one file */
    bool progress;            /* progress bar on stderr (only if a TTY) */
} apr_write_opts;

/* All writers write PATH.tmp.XXXXXX in the destination directory and rename it
 * to path only when complete; on failure nothing is left at path. Tensors are
 * written in the model's tensor order (GGUF) or sorted by name (APR index). */
int apr_gguf_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
int apr_apr_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
/* path: a .safetensors file, or a directory (writes model*.safetensors,
 * config.json, tokenizer.json and, when sharded, model.safetensors.index.json). */
int apr_safetensors_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
int apr_model_write(const apr_model *m, const char *path, apr_format fmt, const apr_write_opts *o, apr_err *err);

/* ---------------------------------------------------------------- sha256 */

typedef struct apr_sha256_ctx apr_sha256_ctx; /* wraps OpenSSL EVP */
apr_sha256_ctx *apr_sha256_new(void);
void apr_sha256_update(apr_sha256_ctx *c, const void *data, size_t n);
void apr_sha256_final(apr_sha256_ctx *c, uint8_t out[32]); /* also frees c */
void apr_sha256(const void *data, size_t n, uint8_t out[32]);
void apr_sha256_hex(const uint8_t digest[32], char hex[65]);
/* Whole file, streamed through mmap; 0 on success. */
int apr_sha256_file(const char *path, uint8_t out[32], apr_err *err);

/* ---------------------------------------------------------------- CRC32 */
uint32_t apr_crc32(uint32_t crc, const void *data, size_t n); /* zlib's IEEE CRC32 */

/* ---------------------------------------------------------------- file helpers */

/* Atomic output: open a temporary file beside path; commit renames it over
 * path (fsyncs first); abort unlinks it. */
typedef struct apr_outfile {
    char *final_path;
    char *tmp_path;
    int fd;
    uint64_t written;
} apr_outfile;

int apr_outfile_open(apr_outfile *f, const char *path, apr_err *err);
int apr_outfile_write(apr_outfile *f, const void *data, size_t n, apr_err *err);
int apr_outfile_pad(apr_outfile *f, uint64_t align, apr_err *err); /* zero bytes to a multiple */
int apr_outfile_commit(apr_outfile *f, apr_err *err);
void apr_outfile_abort(apr_outfile *f);

/* Map a whole file read-only. */
int apr_map_file(const char *path, apr_mapping *out, apr_err *err);
void apr_unmap_file(apr_mapping *m);
/* True when a and b name the same file (same device and inode). */
bool apr_same_file(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif /* APR_FORMATS_H */
