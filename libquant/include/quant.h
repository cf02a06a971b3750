/* quant.h - the public header of libquant: f16/bf16 conversion, ggml block
 * quantizers (byte-identical to ggml's reference), dequantizers, dot-product
 * kernels for libforward, and llama.cpp's per-tensor type mixes.
 *
 * Types are apr_dtype (ggml numbering) from formats.h.
 */
#ifndef APR_QUANT_H
#define APR_QUANT_H

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- scalar conversions: round to nearest even, subnormals kept, NaN quiet */
uint16_t apr_f32_to_f16(float f);
float apr_f16_to_f32(uint16_t h);
uint16_t apr_f32_to_bf16(float f);
float apr_bf16_to_f32(uint16_t h);

/* ---- whole rows.
 * n is the number of elements; for block types it must be a multiple of the
 * block size (apr_dtype_get(t)->block_elems). Return 0 on success, negative
 * if the type is unsupported or n does not fit. */
int apr_dequantize_row(apr_dtype t, const void *src, float *dst, int64_t n);
/* F32, F16, BF16 and every block type we write. */
int apr_to_f32_row(apr_dtype t, const void *src, float *dst, int64_t n); /* alias of dequantize, any readable dtype incl. F64/ints */

/* No Inf or NaN among x[0..n) (SIMD where the CPU has it). */
bool apr_f32_all_finite(const float *x, int64_t n);

/* Quantize nrows rows of ncols floats (row-major) into dst, which must hold
 * nrows * apr_dtype_row_bytes(t, ncols) bytes. imatrix: ncols importance
 * weights or NULL. Byte-identical to ggml's ggml_quantize_chunk.
 * Returns bytes written, 0 on error (unsupported type, bad ncols). */
size_t apr_quantize_chunk(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                          const float *imatrix);
/* Same, threaded over rows (n_threads <= 0: all cores). */
size_t apr_quantize_chunk_mt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                             const float *imatrix, int n_threads);
bool apr_quantize_supported(apr_dtype t);
/* The plain scalar port of ggml's reference kernels (no SIMD); the fast
 * paths above must give the same bytes. For tests and the bench. */
size_t apr_quantize_chunk_ref(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                              const float *imatrix);
/* apr_quantize_chunk_mt with a choice of kernels (ref = the scalar port). */
size_t apr_quantize_chunk_mt_opt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                                 const float *imatrix, int n_threads, bool ref);
/* Online CPUs (the default thread count). */
int apr_quant_default_threads(void);
/* SIMD in use by libquant: "avx2" or "scalar". APR_NO_SIMD=1 (environment)
 * or apr_quant_force_scalar(true) selects the scalar kernels. */
const char *apr_quant_simd_name(void);
void apr_quant_force_scalar(bool on);
/* On a CPU with AVX-512 (F/DQ/BW/VL), the packed float GEMM tiles use it;
 * true here (or APR_NO_AVX512=1) keeps them on AVX2, so tests can check both. */
void apr_quant_force_no_avx512(bool on);
/* The packed block kernels use VNNI's vpdpbusd when the CPU has it
 * (AVX512-VNNI while AVX-512 is on, else AVX-VNNI); true here (or
 * APR_NO_VNNI=1) keeps AVX2's maddubs/madd. The same bits either way. */
void apr_quant_force_no_vnni(bool on);

/* ---- dot products used by libforward.
 * The activation vector y is first converted to apr_vec_dot_type(t)
 * (Q8_K for k-quants, Q8_0 for the 32-blocks, F32 for plain types) with
 * apr_quantize_activation; then apr_vec_dot(t, n, w_row, y_converted). */
apr_dtype apr_vec_dot_type(apr_dtype t);
int apr_quantize_activation(apr_dtype vec_dot_type, const float *y, void *dst, int64_t n);
float apr_vec_dot(apr_dtype t, int64_t n, const void *w_row, const void *y_converted);
/* The scalar kernel apr_vec_dot falls back to. The SIMD kernels return the
 * same value bit for bit (integer block sums are exact; float parts keep the
 * scalar order), so results never depend on the CPU. */
float apr_vec_dot_scalar(apr_dtype t, int64_t n, const void *w_row, const void *y_converted);
/* out[k] = apr_vec_dot(t, n, w_row, y + k * y_stride) for k < nt, the same
 * values bit for bit, with the weight row decoded once per four activation
 * rows (prefill). y_stride is in bytes. */
void apr_vec_dot_n(apr_dtype t, int64_t n, const void *w_row, const void *y_converted, size_t y_stride, int nt,
                   float *out);

/* ---- packed weight matrices for the CPU matmul (gemm.c, gemm_avx2.c).
 * apr_wpack_init repacks a matrix once, at load: eight rows' blocks side by
 * side (APR_WPACK_ROWS rows per group, as ggml's repack does for Q4_0/Q4_K
 * 8x8) with the scales pre-expanded, so that one SIMD register holds the
 * same position of eight rows and a block's integer sum comes out per row
 * with no horizontal add. Float types (F32/F16/BF16) keep their rows in
 * place (row pointers). apr_wpack_gemm then computes, for rows [r0, r1) and
 * tokens [0, nt),
 *     out[t * ldo + r] = apr_vec_dot_scalar(dtype, cols, row r, act + t * act_stride)
 * bit for bit: the integer block sums are exact and every float operation of
 * an output is the scalar kernel's, in its order (one SIMD lane per row or
 * per scalar partial sum), so the result depends neither on the thread that
 * computes a row nor on how the tokens are batched. act is converted with
 * apr_quantize_activation(apr_vec_dot_type(dtype), ...). */
#define APR_WPACK_ROWS 8
typedef struct apr_wpack {
    apr_dtype dtype;
    uint64_t rows, cols;
    uint64_t n_groups;          /* ceil(rows / APR_WPACK_ROWS) */
    size_t group_bytes;         /* bytes of one interleaved group */
    uint8_t *data;              /* n_groups interleaved groups: block types, and F16/BF16
                                 * for the AVX-512 tile; else NULL */
    const uint8_t **row;        /* the source rows in logical order (float kernels, scalar fallback) */
} apr_wpack;
/* True when dtype has a packed kernel on this CPU (else keep apr_vec_dot_n). */
bool apr_wpack_supported(apr_dtype t);
/* rows: pointers to the `rows` source rows (each apr_dtype_row_bytes(t, cols)),
 * in the order the outputs want them; they must outlive the pack. 0 or an
 * APR_E_* code (unsupported type or shape, out of memory). */
int apr_wpack_init(apr_wpack *p, apr_dtype t, uint64_t rows, uint64_t cols, const uint8_t *const *src_rows);
void apr_wpack_free(apr_wpack *p);
/* r0 a multiple of APR_WPACK_ROWS, r1 <= rows; act_stride in bytes. */
void apr_wpack_gemm(const apr_wpack *p, uint64_t r0, uint64_t r1, const void *act, size_t act_stride, uint32_t nt,
                    float *out, size_t ldo);
/* Which kernels apr_wpack_gemm runs now: "avx512" (AVX2, with AVX-512
 * tiles for F32/F16/BF16), "avx2" or "scalar", with "+avx512vnni" or
 * "+avxvnni" when the block kernels use that dot instruction. */
const char *apr_wpack_kernel_name(void);

/* ---- llama-quantize's type mixes (mix.c).
 * Usage, as llama-quantize: sort the tensors with apr_quant_tensor_cmp,
 * call apr_quant_mix_scan for every name, then apr_quant_mix_type for every
 * tensor in that order (counters of attn_v / ffn_down advance). Names are
 * GGUF names (blk.N.attn_v.weight, ...). */
typedef struct apr_quant_mix_model {
    const char *arch;      /* general.architecture */
    uint32_t n_layer;      /* {arch}.block_count */
    uint32_t n_head, n_head_kv, n_expert;
    bool has_imatrix;
} apr_quant_mix_model;

typedef struct apr_quant_mix {
    int ftype;               /* llama_ftype: general.file_type of the output */
    apr_dtype default_type;  /* the mix's base type */
    bool pure, has_imatrix, falcon, is_70b, tied_embeddings;
    int n_layer, n_expert, n_gqa;
    int n_attention_wv, i_attention_wv, i_ffn_down, i_ffn_gate, i_ffn_up;
    int n_fallback;          /* tensors that needed a fallback type */
    /* llama-quantize's options (apr_quant_mix_set_options): -1 = not given */
    int output_type;         /* --output-tensor-type: output.weight (and tied token_embd) */
    int embd_type;           /* --token-embedding-type: token_embd.weight, per_layer_token_embd.weight */
    bool leave_output;       /* --leave-output-tensor: output.weight keeps its type */
    const struct apr_quant_tensor_type *patterns; /* --tensor-type, first match wins */
    size_t n_patterns;
} apr_quant_mix;

/* --tensor-type PATTERN=TYPE: a regular expression (POSIX extended, searched
 * anywhere in the GGUF name, as llama.cpp's std::regex_search; the pattern is
 * lower-cased by the parser, as llama-quantize does) and the dtype. */
typedef struct apr_quant_tensor_type {
    char *pattern;
    apr_dtype type;
    void *re;                /* compiled by apr_quant_tensor_types_compile */
    uint64_t n_matched;      /* tensors it decided (for "matches nothing" errors) */
} apr_quant_tensor_type;

/* Parses "PATTERN=TYPE" into *out (pattern lower-cased, compiled); TYPE is
 * any ggml type name apr can write. Bad input: APR_E_ARG with the reason. */
int apr_quant_tensor_type_parse(const char *arg, apr_quant_tensor_type *out, apr_err *err);
void apr_quant_tensor_type_free(apr_quant_tensor_type *t);
/* The dtype an option like --output-tensor-type names: any ggml type name
 * (case-insensitive) that apr can write (apr_quantize_supported). */
int apr_quant_parse_type_option(const char *opt, const char *name, apr_dtype *out, apr_err *err);

/* mix: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M
 * Q3_K(=Q3_K_M) Q3_K_L Q4_K_S Q4_K_M Q4_K(=Q4_K_M) Q5_K_S Q5_K_M
 * Q5_K(=Q5_K_M) Q6_K IQ4_NL IQ4_XS (case-insensitive); the rest of
 * llama-quantize's list fails with APR_E_UNSUPPORTED naming the type. pure: the base type
 * for every quantizable tensor (fallbacks still apply). */
int apr_quant_mix_init(apr_quant_mix *m, const char *mix, bool pure, const apr_quant_mix_model *model,
                       apr_err *err);
const char *apr_quant_mix_names(void);
void apr_quant_mix_scan(apr_quant_mix *m, const char *name);
/* Target dtype of a tensor (dims outermost first, cur = its dtype now).
 * Tensors llama-quantize does not quantize (1-D, norms, ...) keep cur.
 * Fails only when no fallback exists for the row length. */
int apr_quant_mix_type(apr_quant_mix *m, const char *name, uint32_t ndim, const uint64_t *dims, apr_dtype cur,
                       apr_dtype *out, apr_err *err);
/* llama.cpp refuses to make these tensors without an importance matrix
 * (tensor_requires_imatrix: Q2_K in a Q2_K_S file). */
bool apr_quant_mix_needs_imatrix(const apr_quant_mix *m, const char *name, apr_dtype target);
/* llama-quantize's rule for "is this tensor quantized at all". */
bool apr_quant_tensor_allowed(const char *name, uint32_t ndim, const uint64_t *dims);
/* llama-quantize's output order: by layer number (blk.N., others first),
 * then by name. strcmp-like. */
int apr_quant_tensor_cmp(const char *a, const char *b);

/* ---- importance matrix files (imatrix.c): llama-imatrix's legacy .dat and
 * GGUF forms, reduced as llama-quantize does (sum / count per row). */
typedef struct apr_imatrix_entry {
    char *name;        /* tensor name, e.g. blk.0.attn_q.weight */
    uint64_t n;        /* values (ne[0] x experts) */
    float *values;
    int32_t ncall;     /* legacy .dat: the entry's ncall; 0 from GGUF */
} apr_imatrix_entry;

typedef struct apr_imatrix {
    apr_imatrix_entry *entries;
    uint64_t n_entries;
    int64_t chunks;    /* chunks it was computed on (-1 unknown) */
    char *dataset;     /* first dataset name or NULL */
} apr_imatrix;

int apr_imatrix_load(apr_imatrix **out, const char *path, apr_err *err);
/* Legacy .dat bytes in memory (the GGUF form goes through apr_imatrix_load). */
int apr_imatrix_parse_legacy(apr_imatrix **out, const uint8_t *buf, uint64_t size, apr_err *err);
/* Entries from an opened GGUF imatrix (tensors NAME.in_sum2 / NAME.counts). */
int apr_imatrix_from_model(apr_imatrix **out, const apr_model *m, apr_err *err);
const apr_imatrix_entry *apr_imatrix_find(const apr_imatrix *im, const char *name);
/* --include-weights / --exclude-weights (substring matches, as
 * llama-quantize's prepare_imatrix); both lists at once: APR_E_ARG. */
int apr_imatrix_filter(apr_imatrix *im, const char *const *include, size_t n_include, const char *const *exclude,
                       size_t n_exclude, apr_err *err);
void apr_imatrix_free(apr_imatrix *im);

/* ---- writing llama-imatrix's files (imatrix.c): the raw statistics as
 * llama-imatrix's collector keeps them (dense weights: one count each). */
typedef struct apr_imatrix_stat {
    char *name;        /* the weight's GGUF name, e.g. blk.0.attn_q.weight */
    uint64_t n;        /* input columns */
    float *sum2;       /* n sums of the squared input values, f32 as llama-imatrix adds them */
    int64_t count;     /* input rows (tokens) summed */
} apr_imatrix_stat;

typedef struct apr_imatrix_stats {
    apr_imatrix_stat *e;
    uint64_t n_entries;
    uint32_t chunk_size; /* tokens per chunk (llama-imatrix's n_ctx) */
    uint32_t chunks;     /* chunks processed (its m_last_chunk: the largest count / chunk_size) */
    char **datasets;     /* the text files as named on the command line (loaded ones first) */
    uint32_t n_datasets;
} apr_imatrix_stats;

/* Entries are sorted by name in both files, as llama-imatrix writes them.
 * legacy .dat: entries with count 0 are left out; values (sum / count) *
 * ncall with ncall = ceil(count / chunk_size), then the chunk count and the
 * dataset name. GGUF: general.type "imatrix", imatrix.datasets,
 * imatrix.chunk_count, imatrix.chunk_size; NAME.in_sum2 (f32, ne [n, 1]) and
 * NAME.counts (f32, ne [1, 1]). Written through a temporary: on failure
 * nothing is left at path. */
int apr_imatrix_write_dat(const apr_imatrix_stats *s, const char *path, apr_err *err);
int apr_imatrix_write_gguf(const apr_imatrix_stats *s, const char *path, apr_err *err);
/* Frees the contents (s itself is the caller's). */
void apr_imatrix_stats_free(apr_imatrix_stats *s);
/* Appends a dataset name (a copy). */
int apr_imatrix_stats_add_dataset(apr_imatrix_stats *s, const char *name, apr_err *err);
/* llama-imatrix's --in-file (IMatrixCollector::load_imatrix and
 * load_imatrix_legacy): adds a file's raw statistics into s - entries
 * matched by name (their value counts must agree) or appended; GGUF:
 * in_sum2 and counts (rounded) as stored; legacy .dat, which holds
 * sum / count * ncall: the sums come back as value * chunk_size and the
 * count as ncall * chunk_size, with s->chunk_size (which must be set)
 * standing for the chunk size the file does not record, as llama-imatrix's
 * n_ctx does. Appends the file's datasets; s->chunks becomes the largest
 * count / chunk_size. Dense entries only (one count each). */
int apr_imatrix_stats_add_file(apr_imatrix_stats *s, const char *path, apr_err *err);

#ifdef __cplusplus
}
#endif
#endif /* APR_QUANT_H */
