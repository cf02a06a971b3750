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

/* How many allocations jansson asked apr for and did not get, on this
 * thread (apr installs jansson's allocator). jansson reports such a failure
 * inside a parse as a syntax error; a caller compares the count before and
 * after a parse to tell "out of memory" from malformed text. */
unsigned long apr_json_alloc_failures(void);

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
    APR_DT_IQ2_XXS = 16,
    APR_DT_IQ2_XS = 17,
    APR_DT_IQ3_XXS = 18,
    APR_DT_IQ1_S = 19,
    APR_DT_IQ4_NL = 20,
    APR_DT_IQ3_S = 21,
    APR_DT_IQ2_S = 22,
    APR_DT_IQ4_XS = 23,
    APR_DT_I8 = 24,
    APR_DT_I16 = 25,
    APR_DT_I32 = 26,
    APR_DT_I64 = 27,
    APR_DT_F64 = 28,
    APR_DT_IQ1_M = 29,
    APR_DT_BF16 = 30,
    APR_DT_TQ1_0 = 34,
    APR_DT_TQ2_0 = 35,
    APR_DT_MXFP4 = 39,
    APR_DT_NVFP4 = 40,
    APR_DT_Q1_0 = 41,
    APR_DT_Q2_0 = 42,
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

/* ---------------------------------------------------------------- JSON values
 * The exact conventions every JSON apr writes follows (formats/core/kvjson.c;
 * formats/hf/ and libtok's tokenizer files share them). Values are jansson's (json_t is struct json_t;
 * include <jansson.h> to use them). */
struct json_t;
/* A JSON real that reads back (strtod then (float)) to exactly f; NULL for
 * NaN/Inf (JSON has no encoding for them) or on OOM. */
struct json_t *apr_json_f32(float f);
/* (float) of a JSON number; false if j is not a number. */
bool apr_json_get_f32(const struct json_t *j, float *out);
/* A JSON string as an apr_str (malloc'd, NUL-terminated, embedded NULs kept);
 * "WHAT: expected a string" when j is none. */
int apr_json_to_str(const struct json_t *j, apr_str *s, const char *what, apr_err *err);

/* ---------------------------------------------------------------- config */

typedef enum apr_rope_type { APR_ROPE_NORM = 0, APR_ROPE_NEOX = 2 } apr_rope_type;
/* The gated feed-forward's activation: down(act(gate(x)) * up(x)). */
typedef enum apr_ffn_act { APR_ACT_SILU = 0, APR_ACT_GELU_TANH = 1 } apr_ffn_act;

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
    /* rope scaling: linear scaling multiplies every angle by rope_freq_scale
     * (1 / rope.scaling.factor; 1 when unscaled); llama3 scaling comes as the
     * rope_freqs.weight tensor (graph.c). */
    float rope_freq_scale;
    /* yarn (rope.scaling.type yarn; transformers' _compute_yarn_parameters,
     * ggml's rope_yarn): pair i keeps its unscaled angle below the
     * correction range [yarn_corr_lo, yarn_corr_hi] (floor / ceil of the
     * pair index at which yarn_beta_fast / yarn_beta_slow rotations fit in
     * yarn_orig_ctx positions), takes the angle times rope_freq_scale above
     * it, and a linear blend of the two inside; cos and sin are multiplied
     * by rope_attn_factor (the KV rope.scaling.yarn_attn_factor, else
     * 1 + 0.1 ln(factor) for a factor > 1). rope_yarn false: none applies. */
    bool rope_yarn;
    uint32_t yarn_orig_ctx;
    float yarn_beta_fast, yarn_beta_slow, yarn_corr_lo, yarn_corr_hi;
    float rope_attn_factor;
    /* attention.sliding_window (Mistral): each position attends to the last
     * sliding_window positions, itself included; 0 = unlimited */
    uint32_t sliding_window;
    /* Which layers the window applies to: all when swa_pattern is 0 (Mistral),
     * else layer il iff il % swa_pattern < swa_pattern - 1 (llama.cpp's
     * set_swa_pattern: Gemma 2 has 2, every even layer slides). */
    uint32_t swa_pattern;
    /* Family traits (derive.c's family table): */
    apr_ffn_act ffn_act;      /* SwiGLU or GELU-tanh gated (Gemma) */
    bool embed_scale;         /* the embedding rows times sqrt(hidden) (Gemma) */
    bool post_norms;          /* RMSNorm of the attention / FFN output before each residual add (Gemma 2/3) */
    bool qk_norm;             /* per-head RMSNorm of Q and K before rope (Qwen3) */
    bool fused_qkv_gate_up;   /* HF and GGUF store Q/K/V as one tensor and gate/up as one (Phi-3) */
    /* HF stores every RMSNorm weight w for a norm that multiplies by 1 + w
     * (Gemma); llama.cpp's converter stores 1 + w. A safetensors source's
     * norms are offset by this; GGUF and APR hold llama.cpp's values. */
    float hf_norm_offset;
    float attn_scale;         /* multiplies q.k (Gemma 2's query_pre_attn_scalar^-0.5); 0: 1/sqrt(head_dim) */
    float attn_softcap;       /* 0: none; else scores s -> cap * tanh(s / cap) (Gemma 2) */
    float final_softcap;      /* 0: none; the same on the logits (Gemma 2, optional in Gemma 3) */
    /* Gemma 3: the sliding layers' rope base (rope.freq_base_swa, llama.cpp's
     * default 10000), unscaled; 0 = the sliding layers rope as the others. */
    float rope_theta_swa;
    /* The first KV that changes the computation and that the forward pass does
     * not implement ("" = none): apr_graph_build refuses the model naming it. */
    char unsupported[128];
} apr_arch_config;

/* The GGUF architectures apr_model_derive gives a config for (its family
 * table), and their names as one comma-separated line for messages. */
bool apr_arch_known(const char *arch);
const char *apr_arch_list(void);

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
    /* Read from HF tokenizer files: the special-token texts transformers'
     * apply_chat_template passes (a JSON object of bos_token, eos_token,
     * unk_token, pad_token: only those tokenizer_config.json names). NULL:
     * the vocabulary's texts of the tokenizer.ggml.*_token_id KVs, which may
     * name a BOS the HF tokenizer lacks (config.json's bos_token_id). */
    char *hf_chat_specials;
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
/* Appends a zeroed tensor entry (name copied) for readers and the add
 * functions to fill; the caller increments m->n_tensors once it is complete.
 * NULL (err set) on a duplicate name or out of memory. */
apr_tensor *apr_model_append_tensor(apr_model *m, const char *name, apr_err *err);
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

/* ---------------------------------------------------------------- tensor roles and names
 *
 * formats/core/family.c: the one table of model conventions. Every family's
 * tensor roles with their GGUF and HF/APR names (llama.cpp's gguf-py
 * tensor_mapping.py for that architecture), beside its forward-pass traits;
 * derive, convert, quantize (provenance), the graph and verify's weight
 * parity all resolve tensors through it. */

typedef enum apr_role {
    APR_ROLE_TOKEN_EMBD,
    APR_ROLE_OUTPUT_NORM,
    APR_ROLE_OUTPUT,
    APR_ROLE_ATTN_NORM,   /* per layer from here on */
    APR_ROLE_ATTN_Q,
    APR_ROLE_ATTN_K,
    APR_ROLE_ATTN_V,
    APR_ROLE_ATTN_QKV,    /* APR's fused Q/K/V */
    APR_ROLE_ATTN_OUT,
    APR_ROLE_FFN_NORM,
    APR_ROLE_FFN_GATE,
    APR_ROLE_FFN_DOWN,
    APR_ROLE_FFN_UP,
    APR_ROLE_ATTN_Q_NORM, /* Qwen3: per-head RMSNorm of Q and K before rope */
    APR_ROLE_ATTN_K_NORM,
    APR_ROLE_POST_ATTN_NORM, /* Gemma 2/3: RMSNorm of the attention output before the residual add */
    APR_ROLE_POST_FFN_NORM,  /* Gemma 2/3: RMSNorm of the feed-forward output before the residual add */
    APR_ROLE_FFN_GATE_UP,    /* Phi-3: gate and up fused (rows gate, then up) */
    APR_ROLE_COUNT
} apr_role;

typedef enum apr_naming {
    APR_NAMING_GGUF,      /* blk.N.attn_q.weight */
    APR_NAMING_HF,        /* model.layers.N.self_attn.q_proj.weight (APR uses these too) */
} apr_naming;

typedef struct apr_tensor_id {
    apr_role role;
    uint32_t layer;       /* per-layer roles only */
    bool bias;            /* ".bias" instead of ".weight" */
} apr_tensor_id;

/* Parses a GGUF or HF tensor name; false when it is neither (or the layer
 * number is malformed). *naming (may be NULL) says which naming matched. */
bool apr_tensor_id_parse(const char *name, apr_tensor_id *id, apr_naming *naming);
/* Writes the name of id in the given naming; false if it does not fit or the
 * role has no name there (APR_ROLE_ATTN_QKV has only an HF-style name). */
bool apr_tensor_id_name(const apr_tensor_id *id, apr_naming naming, char *buf, size_t n);
/* The same for the tensors of one GGUF architecture (arch may be NULL: the
 * LLaMA names). Families that give an HF name another meaning say so here:
 * Gemma's HF post_attention_layernorm is the attention output's norm
 * (GGUF post_attention_norm), its pre_feedforward_layernorm the FFN input's
 * (ffn_norm), where LLaMA's post_attention_layernorm is ffn_norm. */
bool apr_tensor_id_parse_arch(const char *arch, const char *name, apr_tensor_id *id, apr_naming *naming);
bool apr_tensor_id_name_arch(const char *arch, const apr_tensor_id *id, apr_naming naming, char *buf, size_t n);
bool apr_role_per_layer(apr_role r);
/* The tensor of a role in m: its GGUF name for arch, else its HF/APR name.
 * name (cap bytes, may be NULL) gets the GGUF name (the HF one when the role
 * has none), for messages, whether or not the tensor exists. */
const apr_tensor *apr_model_role_tensor(const apr_model *m, const char *arch, apr_role role, uint32_t layer,
                                        bool bias, char *name, size_t cap);

/* ---------------------------------------------------------------- readers / writers */

int apr_gguf_open(apr_model **out, const char *path, apr_err *err);
int apr_safetensors_open(apr_model **out, const char *path, apr_err *err);
/* path: an APR file, or a sharded set by its first shard or its manifest
 * (docs/sharding.md). */
int apr_apr_open(apr_model **out, const char *path, const apr_open_opts *opts, apr_err *err);
/* PATH names a sharded APR set's manifest (*.apr.manifest.json). */
bool apr_apr_is_manifest_path(const char *path);

/* Parse from a buffer already in memory (used by fuzz harnesses and tests).
 * The buffer must outlive the model. */
int apr_gguf_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err);
int apr_safetensors_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err);
int apr_apr_parse(apr_model **out, const uint8_t *buf, uint64_t size, bool check_footer, apr_err *err);

typedef struct apr_prov apr_prov; /* provenance builder, below */

/* Streaming: a tensor of the table whose data is NULL (and nbytes > 0) is
 * made by the producer, called once per such tensor, in file order, with a
 * buffer of exactly t->nbytes to fill; the writer writes it, hashes it for
 * the provenance record when that tensor was recorded without data, and
 * reuses the buffer for the next one. So a model of any size is written
 * with one tensor's output in memory. */
typedef int (*apr_produce_fn)(void *user, const apr_model *m, uint64_t index, uint8_t *dst, apr_err *err);

typedef struct apr_write_opts {
    uint32_t alignment;       /* GGUF: 0 = 32 (or general.alignment KV) */
    uint64_t shard_max_bytes; /* safetensors and APR: 0 = one file */
    bool progress;            /* progress bar on stderr (only if a TTY) */
    apr_produce_fn produce;   /* for tensors without data (NULL: every tensor must have data) */
    void *produce_user;
    /* A record started with apr_prov_start and attached to the model (its
     * digests are placeholders): the writer seals it, i.e. fills the digests
     * into the metadata it wrote, in place, in the still-open temporary file
     * (fixing APR's footer CRC32) before the rename. NULL: the model's
     * provenance_json is written as it is. */
    apr_prov *prov;
    /* GGUF: llama.cpp's split files (gguf-split's layout, see
     * docs/sharding.md); 0 = no limit. Either one set: PATH names the first
     * split, PREFIX-00001-of-0000N.gguf. */
    uint64_t split_max_bytes;
    uint64_t split_max_tensors;
    /* GGUF: split files given tensor by tensor instead (exclusive with
     * split_max_*): file k holds the next split_counts[k] tensors of the
     * table (only the first may hold none), n_split_counts >= 2 files. What
     * llama-quantize --keep-split writes: its input's splits, kept. */
    const uint64_t *split_counts;
    uint32_t n_split_counts;
} apr_write_opts;

/* All writers write PATH.tmp.XXXXXX in the destination directory and rename it
 * to path only when complete; on failure nothing is left at path. Tensors are
 * written in the model's tensor order (GGUF) or sorted by name (APR index). */
int apr_gguf_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
/* Path of split no (0-based) of count for the output path (a .gguf path or
 * a prefix; a "-0000K-of-0000N.gguf" suffix is replaced): llama.cpp's
 * llama_split_path, PREFIX-%05d-of-%05d.gguf. -1 if it does not fit. */
int apr_gguf_split_path(const char *path, uint32_t no, uint32_t count, char *buf, size_t n);
/* When o makes apr_gguf_write(m, path, o) write split files: records them
 * in p (apr_prov_add_output_file: the first holds the record, the writer
 * hashes the others as it writes them). Nothing when it writes one file. */
int apr_gguf_record_splits(apr_prov *p, const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
/* The number of split files apr_gguf_write(m, path, o) writes (0: one
 * ordinary file). */
int apr_gguf_split_count(const apr_model *m, const apr_write_opts *o, uint32_t *n, apr_err *err);
/* An error when a split file apr_gguf_write(m, path, o) would write is one
 * of input's files (a split input quantized or converted to its own names). */
int apr_gguf_check_split_outputs(const apr_model *m, const char *path, const apr_write_opts *o, const apr_model *input,
                                 apr_err *err);
/* The same for an APR output (with o->shard_max_bytes, every shard
 * OUT-DDDDD-of-DDDDD.apr and OUT.apr.manifest.json; else OUT): an error
 * when one of them is one of input's files or its manifest. */
int apr_apr_check_shard_outputs(const apr_model *m, const char *path, const apr_write_opts *o, const apr_model *input,
                                apr_err *err);
int apr_apr_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
/* path: a .safetensors file, or a directory (writes model*.safetensors,
 * config.json, tokenizer.json and, when sharded, model.safetensors.index.json). */
int apr_safetensors_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);
int apr_model_write(const apr_model *m, const char *path, apr_format fmt, const apr_write_opts *o, apr_err *err);

/* ---------------------------------------------------------------- synthetic models (synth.c)
 *
 * Deterministic LLaMA / Qwen2 models with HF tensor names (model.embed_tokens.weight,
 * model.layers.N.self_attn.q_proj.weight, ..., lm_head.weight unless tied), GGUF-namespace
 * KVs exactly as apr_safetensors_open would read them back from the HF directory that
 * apr_safetensors_write makes of the model, and a synthetic tokenizer (SentencePiece
 * "llama" for llama: <unk> <s> </s>, 256 byte pieces, merged pieces scored -k; byte BPE
 * "gpt2"/pre "qwen2" for qwen2: 256 byte tokens, merges, <|endoftext|> <|im_start|> <|im_end|>).
 *
 * Weights (the same on every machine: integer hashing, then float operations that
 * IEEE 754 rounds exactly; no libm calls other than sqrtf):
 *   mix(z)      = splitmix64's finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
 *                 z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31
 *   stream      = mix(seed ^ fnv1a64(tensor name))   (FNV-1a 64 over the name's bytes)
 *   u           = mix(stream + (i + 1) * 0x9E3779B97F4A7C15)   i = flat element index
 *   z           = (float)((int)(u & 0xFFFF) + (int)(u >> 16 & 0xFFFF) + (int)(u >> 32 & 0xFFFF)
 *                         + (int)(u >> 48) - 131070) * 2.6428997e-05f
 *                 (Irwin-Hall sum of four 16-bit uniforms: mean 0, variance 1)
 *   element outlier: o = mix(u ^ 0x632BE59BD9B4E019); if o % 1000 == 0 the value is
 *                 multiplied by (float)(8 + (o >> 32) % 13)          (x8 .. x20)
 *   2-D {rows, cols}: v = z * (1.0f / sqrtf((float)cols)); then v *= 5.0f when column
 *                 c = i % cols is an outlier channel: (mix(stream + (c + 1) * 0xD6E8FEB86659FD93) & 127) == 0;
 *                 then the element outlier factor.
 *   1-D "*norm.weight": v = 1.0f + 0.1f * z      1-D "*.bias": v = 0.1f * z
 * and finally rounded to the dtype (round to nearest even for F16/BF16). */
typedef struct apr_synth_config {
    char arch[16];       /* "llama" or "qwen2" */
    char name[64];       /* general.name ("" = "synth-<arch>") */
    uint32_t n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab, ctx;
    bool tied;           /* no lm_head.weight */
    bool qkv_bias;       /* q/k/v_proj.bias (Qwen2 always has them) */
    apr_dtype dtype;     /* F32, F16 or BF16 for every tensor */
    float rope_theta, rms_eps;
    uint64_t seed;
    /* attention.sliding_window: llama with one is Mistral (MistralForCausalLM);
     * gemma2 / gemma3 need one; 0 = none */
    uint32_t sliding_window;
} apr_synth_config;

/* Fill c from a preset: "tiny-llama", "tiny-qwen2", "llama-7b-layer",
 * "qwen2-7b-layer", "tiny-qwen3", "tiny-gemma2", "tiny-phi3", "tiny-mistral",
 * "tiny-gemma3". Returns APR_E_ARG for an unknown name. */
int apr_synth_preset(apr_synth_config *c, const char *preset, apr_err *err);
/* NULL-terminated list of the preset names. */
const char *const *apr_synth_preset_names(void);
/* The family c makes: its GGUF arch, or "mistral" for llama with a window
 * (tiny-FAMILY is its tiny preset). */
const char *apr_synth_family(const apr_synth_config *c);
/* Checks a config (shapes, dtype, vocab large enough for the tokenizer). */
int apr_synth_validate(const apr_synth_config *c, apr_err *err);
/* KVs, derived config and tensor table only (every tensor's data is NULL):
 * shapes of any size at no memory cost. */
int apr_synth_skeleton(apr_model **out, const apr_synth_config *c, apr_err *err);
/* The whole model in memory (owned buffers): for tests and small models. */
int apr_synth_model(apr_model **out, const apr_synth_config *c, apr_err *err);
/* Writes the model with apr_safetensors_write's layout rules (a directory: HF
 * files + model*.safetensors; a .safetensors path: that file), generating each
 * tensor in chunks while writing: memory stays a few MiB whatever the size. */
int apr_synth_write(const apr_synth_config *c, const char *path, const apr_write_opts *o, apr_err *err);

/* ---------------------------------------------------------------- sha256 */

typedef struct apr_sha256_ctx apr_sha256_ctx; /* wraps OpenSSL EVP */
apr_sha256_ctx *apr_sha256_new(void);
void apr_sha256_update(apr_sha256_ctx *c, const void *data, size_t n);
void apr_sha256_final(apr_sha256_ctx *c, uint8_t out[32]); /* also frees c */
void apr_sha256(const void *data, size_t n, uint8_t out[32]);
void apr_sha256_hex(const uint8_t digest[32], char hex[65]);
/* Whole file, streamed through mmap; 0 on success. */
int apr_sha256_file(const char *path, uint8_t out[32], apr_err *err);

/* ---------------------------------------------------------------- provenance
 * (formats/provenance.c; the record's JSON schema is in docs/provenance.md)
 *
 * Every file apr writes carries one JSON object: tool, version, operation,
 * command line, UTC time, the source files with their sha256, and for every
 * output tensor its payload sha256, the source payload(s) it came from (name,
 * dtype, sha256) and the transform; the source's own record is the "parent".
 * In the view it is model->provenance_json; GGUF stores it in the KV
 * "apr.provenance.json" (plus a few flattened apr.provenance.* keys for
 * humans), APR in the metadata's "provenance", safetensors in
 * __metadata__["apr.provenance"].
 *
 * Building one (apr convert, apr quantize):
 *   p = apr_prov_new("quantize", cmdline);
 *   apr_prov_set_source(p, src_model, &err);            // files hashed at finish
 *   for each output tensor: apr_prov_add_tensor(p, out_t, "quantize:Q4_K", &src_t, 1, &err);
 *   apr_prov_finish(p, APR_FMT_GGUF, n_threads, &json, &err); // hashes in parallel
 *   apr_prov_attach(out_model, json, APR_FMT_GGUF, &err); free(json); apr_prov_free(p);
 *   then write out_model.
 * Tensor data pointers given to add_tensor must stay valid until finish.
 * Transforms: "copy", "permute" (HF rotate-half -> interleaved Q/K rows),
 * "unpermute", "fuse" (Q,K,V rows -> one tensor), "split", "dequantize:F32",
 * "convert:F16", "quantize:Q4_K", ...; several steps joined with '+' in the
 * order they were applied. */
/* operation: "convert", "quantize", ...; command_line may be NULL. NULL on OOM. */
apr_prov *apr_prov_new(const char *operation, const char *command_line);
void apr_prov_free(apr_prov *p);
/* Override the recorded time (ISO 8601 UTC text; default: now at apr_prov_new). */
void apr_prov_set_time(apr_prov *p, const char *iso_utc);
/* The source: every file it was read from (src->maps[], plus the HF side files
 * config.json, tokenizer.json, tokenizer.model, tokenizer_config.json,
 * generation_config.json, model.safetensors.index.json present beside a
 * safetensors source) is sha256'd at finish; src->provenance_json becomes the
 * parent. */
int apr_prov_set_source(apr_prov *p, const apr_model *src, apr_err *err);
/* One output tensor. out's payload and each srcs[i]'s payload are hashed at
 * finish (regions with the same pointer and size are hashed once). */
int apr_prov_add_tensor(apr_prov *p, const apr_tensor *out, const char *transform,
                        const apr_tensor *const *srcs, uint32_t n_srcs, apr_err *err);
/* Hash everything on n_threads threads (<= 0: all cores) and return the
 * compact JSON text (malloc'd) in *json. out_format names the output format. */
int apr_prov_finish(apr_prov *p, apr_format out_format, int n_threads, char **json, apr_err *err);
/* The same work overlapped with writing (what apr convert does, so that
 * hashing costs no wall time on top of the write):
 *   apr_prov_start   returns the record with a unique 64-hex placeholder in
 *                    place of every sha256 and starts hashing on n_threads
 *                    background threads;
 *   (attach it, hand it to the writer in apr_write_opts.prov: the writer
 *                    streams the tensors, supplies the digest of each tensor
 *                    recorded without data (apr_prov_set_digest), and seals
 *                    the record with apr_prov_seal before its rename)
 *   apr_prov_wait    joins the hashing (apr_prov_seal does it);
 *   apr_prov_json    the final record (malloc'd), e.g. for the caller's view.
 * An output tensor added with data NULL is one the writer produces while
 * streaming (apr_write_opts.produce); its digest comes from the writer. */
int apr_prov_start(apr_prov *p, apr_format out_format, int n_threads, char **json, apr_err *err);
/* The sha256 work recorded so far: total bytes of every distinct region and
 * source file, and the largest single job (one stream, so one core's work:
 * the floor of the hashing time however many cores there are). */
void apr_prov_hash_work(const apr_prov *p, uint64_t *total_bytes, uint64_t *largest_job);
int apr_prov_wait(apr_prov *p, apr_err *err);
/* The writer's side. set_digest: the sha256 of a streamed tensor's payload.
 * streamed: whether the record expects that digest from the writer. seal:
 * waits for the hashing, then replaces every placeholder in meta[0..len)
 * (the metadata the writer wrote, same length before and after) with its
 * digest; an error when meta holds none. */
int apr_prov_set_digest(apr_prov *p, const char *tensor, const uint8_t sha[32], apr_err *err);
/* An output written as several files (a split GGUF): each file is recorded
 * by name, in order, under "output_files"; the one holding the record
 * (holds_record) has sha256 null, every other one the sha256 of its bytes,
 * which the writer computes as it writes it and supplies with
 * apr_prov_set_file_digest (apr_prov_hashes_output_file: whether the record
 * expects it). Recorded before apr_prov_start. */
int apr_prov_add_output_file(apr_prov *p, const char *file, bool holds_record, apr_err *err);
bool apr_prov_hashes_output_file(const apr_prov *p, const char *file);
int apr_prov_set_file_digest(apr_prov *p, const char *file, const uint8_t sha[32], apr_err *err);
bool apr_prov_streamed(const apr_prov *p, const char *tensor);
int apr_prov_seal(apr_prov *p, uint8_t *meta, size_t len, apr_err *err);
int apr_prov_json(apr_prov *p, char **json, apr_err *err);
/* Make json the provenance of m: replaces m->provenance_json, removes every
 * KV under "apr.provenance." and, for GGUF outputs, adds the flattened keys
 * apr.provenance.{tool,operation,time_utc,source,source_sha256}. */
int apr_prov_attach(apr_model *m, const char *json, apr_format out_format, apr_err *err);

/* Re-hash every tensor of m against m's provenance record and, when source
 * is not NULL, the source file(s) (a file, or the directory of a sharded
 * safetensors set) and the source tensors each output tensor came from, and
 * compare the source's own provenance with the recorded parent.
 * Every check is reported through fn (may be NULL): ok, the tensor name (or
 * file name, or NULL for record-level problems) and a message.
 * Returns 0 when everything matches, APR_E_MISMATCH when something does not
 * (details went to fn and res), another negative code when the check could
 * not run (no provenance, unreadable record or source) with *err set. */
typedef void (*apr_prov_report_fn)(void *user, bool ok, const char *what, const char *msg);
typedef struct apr_prov_check {
    uint64_t tensors_checked, tensors_bad;      /* output payloads vs record */
    uint64_t unrecorded, missing;               /* in the file but not the record; and vice versa */
    uint64_t outputs_checked, outputs_bad;      /* the output's own files (a split GGUF's splits) */
    uint64_t files_checked, files_bad;          /* source files */
    uint64_t src_tensors_checked, src_tensors_bad;
    bool parent_checked, parent_bad;
} apr_prov_check;
int apr_provenance_verify(const apr_model *m, const char *source, int n_threads,
                          apr_prov_report_fn fn, void *user, apr_prov_check *res, apr_err *err);

/* ---------------------------------------------------------------- CRC32 */
uint32_t apr_crc32(uint32_t crc, const void *data, size_t n); /* zlib's IEEE CRC32 */

/* ---------------------------------------------------------------- file helpers */

/* Atomic output, nothing left behind. open creates an unnamed file
 * (O_TMPFILE) in path's directory where the filesystem supports it: a crash,
 * kill -9 included, then leaves nothing; commit fsyncs it and links it into
 * place (over an existing path through a rename). Elsewhere the temporary is
 * named .NAME.apr-COMMAND.PID.tmp beside path and flock'ed while it lives;
 * commit renames it over path, abort unlinks it, and the next open in that
 * directory removes such temporaries whose process is gone and that no
 * process holds (saying so on stderr). */
typedef struct apr_outfile {
    char *final_path;
    char *tmp_path; /* the named temporary; NULL for an O_TMPFILE one */
    int fd;
    uint64_t written;
    uint64_t kicked; /* bytes [0, kicked) already handed to writeback */
    struct apr_sha256_ctx *sha; /* when set (after open): every byte written is hashed into it */
} apr_outfile;

int apr_outfile_open(apr_outfile *f, const char *path, apr_err *err);
int apr_outfile_write(apr_outfile *f, const void *data, size_t n, apr_err *err);
int apr_outfile_pad(apr_outfile *f, uint64_t align, apr_err *err); /* zero bytes to a multiple */
int apr_outfile_commit(apr_outfile *f, apr_err *err);
void apr_outfile_abort(apr_outfile *f);
/* The command named in temporaries' names ("convert", "quantize"...); the CLI
 * sets it once before any output is opened. Default "apr". */
void apr_outfile_set_command(const char *cmd);
/* Removes dir's stale temporaries (see apr_outfile), each reported on stderr;
 * returns how many. apr_outfile_open runs it on the destination directory. */
int apr_outfile_clean_stale(const char *dir);

/* Map a whole file read-only. */
int apr_map_file(const char *path, apr_mapping *out, apr_err *err);
/* Drops this process's resident pages of [p, p+n) when the range lies in a
 * live apr_map_file mapping (read-only, so a later read just faults the page
 * back from the page cache); anything else (heap, scratch) is left alone.
 * Streaming consumers (hashing, writers) call it behind them so that the
 * RSS of a conversion does not grow with the model. */
void apr_map_release(const void *p, size_t n);
/* Seconds on the monotonic clock (for durations in reports and benches). */
double apr_now_s(void);
/* A scratch area of size bytes in dir: an unlinked file (space reserved up
 * front, so a full disk is an error here and not a SIGBUS later) mapped
 * shared read-write and registered like apr_map_file's mappings, so its
 * pages can be released and copied out by the kernel. apr_unmap_file frees
 * it (out->path stays NULL). */
int apr_map_scratch(const char *dir, uint64_t size, apr_mapping *out, apr_err *err);
void apr_unmap_file(apr_mapping *m);
/* True when a and b name the same file (same device and inode). */
bool apr_same_file(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif /* APR_FORMATS_H */
