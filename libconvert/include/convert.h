/* convert.h - the public header of libconvert: safetensors <-> GGUF <-> APR
 * conversion on the apr_model view (formats.h), with sha256 provenance, and
 * whole-file quantization (apr_quantize_file: libquant's kernels and mixes
 * applied to a model in any format).
 *
 * The converter builds an output view whose tensors point into the source's
 * mapping (copies are zero-copy) or into buffers it owns (tensors that were
 * permuted, fused, dequantized or converted), records provenance, and hands
 * the view to the format writer. See docs/provenance.md and docs/apr-format.md.
 *
 * Layout rules (one canonical layout per format):
 *   - GGUF: llama.cpp names (blk.N.attn_q.weight ...), LLaMA Q/K rows in
 *     interleaved (GGUF/Meta) order, separate Q, K, V.
 *   - safetensors: HF names (model.layers.N.self_attn.q_proj.weight ...), LLaMA
 *     Q/K rows in HF rotate-half order.
 *   - APR: HF names, but Q, K, V fused into model.layers.N.self_attn.qkv_proj
 *     .weight (rows Q, then K, then V) and .bias; LLaMA Q/K rows in interleaved
 *     order, like GGUF (the KV apr.qk_row_order = "interleaved" says so). When
 *     Q, K and V have different dtypes the fused weight is APR_DT_ROWCAT with
 *     parts (Q, K, V); biases of different dtypes are fused as F32.
 *   Qwen2 (NEOX rope) is never permuted. A source's KV apr.qk_row_order
 *   ("interleaved" | "rotate_half") overrides its format's default.
 */
#ifndef APR_CONVERT_H
#define APR_CONVERT_H

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor roles and names (apr_role, apr_tensor_id, apr_tensor_id_parse_arch,
 * apr_tensor_id_name_arch) are formats.h's: the family table at the bottom
 * of the stack (formats/core/family.c). */

/* ---------------------------------------------------------------- rows */

/* LLaMA Q/K row permutation of convert_hf_to_gguf.py, on n_heads heads of hd
 * rows, each row row_bytes bytes (any dtype: rows are contiguous):
 * forward (HF rotate-half -> interleaved): dst row h*hd + 2i + j = src row
 * h*hd + j*hd/2 + i; inverse does the opposite. dst and src must not overlap.
 * Returns false if hd is odd or zero. */
bool apr_qk_permute(uint8_t *dst, const uint8_t *src, uint64_t n_heads, uint64_t hd, uint64_t row_bytes,
                    bool inverse);
/* The source row of output row r under that permutation. */
uint64_t apr_qk_perm_src_row(uint64_t r, uint64_t hd, bool inverse);

/* ---------------------------------------------------------------- conversion */

typedef struct apr_convert_opts {
    apr_format to;            /* output format; APR_FMT_UNKNOWN = from the output path */
    int outtype;              /* -1 keep (quantized -> F32 for safetensors); else APR_DT_F32/F16/BF16 */
    int threads;              /* <= 0: all cores */
    uint64_t shard_max_bytes; /* safetensors output: 0 = one file */
    bool progress;            /* progress on stderr when it is a TTY */
    const char *command_line; /* recorded in the provenance (NULL: none) */
    const char *time_utc;     /* recorded time override (tests); NULL = now */
    uint64_t split_max_bytes;  /* GGUF output: llama.cpp split files (apr_write_opts) */
    uint64_t split_max_tensors;
    /* Source tensors without data (a streamed view, e.g. apr quantize's
     * quantized GGUF view on its way to APR) are made by this producer,
     * called with the source model and the tensor's index. */
    apr_produce_fn src_produce;
    void *src_produce_user;
} apr_convert_opts;

void apr_convert_opts_init(apr_convert_opts *o);

typedef struct apr_convert_stats {
    uint64_t n_tensors;
    uint64_t n_transformed;   /* tensors with an owned buffer (not a zero-copy view) */
    uint64_t bytes_in;        /* source tensor payload bytes */
    uint64_t bytes_out;       /* output tensor payload bytes */
    uint64_t owned_bytes;     /* apr_convert_model: transformed bytes in owned buffers */
    uint64_t hashed_bytes;    /* sha256 work for provenance: distinct regions + source files */
    uint64_t largest_hash;    /* its largest single stream (usually the source file) */
    double t_open, t_build, t_hash, t_write; /* seconds */
} apr_convert_stats;

/* The output view of src in format `to` (tensors renamed, permuted, fused or
 * split, dtypes per o->outtype; KVs carried with llama.cpp's strict types),
 * WITHOUT provenance. src must stay open while *out lives. Every tensor is
 * either a zero-copy view of src's mapping or an owned buffer. On success
 * also returns, when prov is not NULL, a provenance builder with the source
 * and every output tensor recorded (caller finishes and frees it). */
int apr_convert_model(apr_model *src, apr_format to, const apr_convert_opts *o, apr_model **out,
                      apr_prov **prov, apr_convert_stats *st, apr_err *err);

/* The same view for a one-pass write: transformed tensors have data NULL
 * and are made by apr_conv_produce (an apr_produce_fn whose user is
 * *stream) when the writer reaches them, so only one of them is in memory
 * at a time; prov records them as the writer's to hash. *stream lives until
 * the write is done (apr_conv_stream_free). */
typedef struct apr_conv_stream apr_conv_stream;
int apr_convert_model_stream(apr_model *src, apr_format to, const apr_convert_opts *o, apr_model **out,
                             apr_prov **prov, apr_conv_stream **stream, apr_convert_stats *st, apr_err *err);
int apr_conv_produce(void *stream, const apr_model *m, uint64_t index, uint8_t *dst, apr_err *err);
void apr_conv_stream_free(apr_conv_stream *s);

/* Open in_path, convert, attach provenance, write out_path atomically. Every
 * bad input is an error before anything is written; nothing is left at
 * out_path on failure; the input is never modified. */
int apr_convert_file(const char *in_path, const char *out_path, const apr_convert_opts *o,
                     apr_convert_stats *st, apr_err *err);

/* ---------------------------------------------------------------- quantize */

typedef struct apr_quantize_opts {
    const char *type;         /* a type or llama.cpp mix name: apr_quant_mix_names() */
    const char *imatrix;      /* llama-imatrix output (legacy .dat or GGUF), or NULL */
    bool pure;                /* the type's base type for every quantizable tensor */
    bool allow_requantize;    /* accept quantized input (dequantize, then quantize) */
    bool provenance;          /* record sha256 provenance (apr_quantize_opts_init: true) */
    bool progress;            /* a progress bar on stderr */
    apr_format to;            /* GGUF or APR; APR_FMT_UNKNOWN: from out_path (.apr, else GGUF) */
    int threads;              /* 0: all cores */
    const char *command_line; /* recorded in the provenance */
    uint64_t split_max_bytes;  /* GGUF output: llama.cpp split files (apr_write_opts); 0 = none */
    uint64_t split_max_tensors;
    /* llama-quantize --keep-split: a split GGUF input's splits are kept, one
     * output file per input split with the same tensors, named from out_path
     * as llama-quantize names them (PREFIX-%05d-of-%05d.gguf, PREFIX =
     * out_path less ".gguf"); an unsplit GGUF input gives one file,
     * PREFIX-00001-of-00001.gguf, without split keys, as llama.cpp does. GGUF
     * input and output only; exclusive with split_max_*. */
    bool keep_split;
    uint64_t shard_max_bytes;  /* APR output: aprender's sharded APR v2 (--shard-mb, docs/sharding.md); 0 = one file */
    /* llama-quantize's options */
    const char *output_tensor_type;   /* --output-tensor-type T, or NULL */
    const char *token_embedding_type; /* --token-embedding-type T, or NULL */
    bool leave_output_tensor;         /* --leave-output-tensor */
    const char *const *tensor_types;  /* --tensor-type PATTERN=TYPE, in order (first match wins) */
    size_t n_tensor_types;
    const char *const *kv_overrides;  /* --override-kv KEY=TYPE:VALUE (int, float, bool, str) */
    size_t n_kv_overrides;
    const char *const *include_weights, *const *exclude_weights; /* imatrix entry filters */
    size_t n_include_weights, n_exclude_weights;
} apr_quantize_opts;

void apr_quantize_opts_init(apr_quantize_opts *o);

typedef struct apr_quantize_stats {
    uint64_t n_tensors, n_converted; /* tensors written, and those given another type */
    uint64_t weights;                /* weights converted */
    uint64_t bytes_in, bytes_out;    /* tensor payload bytes */
    int n_fallback;                  /* tensors whose rows forced a fallback type */
    int threads;
    bool imatrix;
    apr_format format;               /* what was written */
    uint32_t n_files;                /* files written (split GGUF: the splits); 0 for a sharded APR set */
    char first_path[4096];           /* the (first) file written */
    double seconds, seconds_quant;   /* whole call; the quantizing itself */
} apr_quantize_stats;

/* Open in_path (a GGUF, or any file with an F32/F16/BF16 LLaMA/Qwen2 model),
 * quantize it as llama-quantize does for o->type and write out_path
 * atomically. Errors leave nothing at out_path and never touch the input. */
int apr_quantize_file(const char *in_path, const char *out_path, const apr_quantize_opts *o,
                      apr_quantize_stats *st, apr_err *err);

#ifdef __cplusplus
}
#endif
#endif /* APR_CONVERT_H */
