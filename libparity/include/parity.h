/* parity.h - the public header of libparity: how close a converted model's
 * outputs are to its source's.
 *
 *   - statistics over pairs of logit vectors, with llama-perplexity's
 *     KL-divergence mode semantics (KL(SRC || DST) per token, top-1 agreement,
 *     delta-p of the next token's probability, perplexities) plus exact checks
 *     (bit identity, max |logit diff|, cosine);
 *   - a comparison of two traced forward passes (DST/SRC std ratio per layer
 *     and sub-step, first layer leaving a band, first step that differs at all);
 *   - the verdict policy: lossless conversions must give bit-identical logits,
 *     quantized ones a mean KLD under a per-type threshold;
 *   - the `apr verify` driver that runs both models over the same tokens;
 *   - a tensor-and-metadata comparison of two models (round trips).
 *
 * SRC is always the reference distribution (llama.cpp's "base"), DST the model
 * under test. All probabilities are computed in double.
 */
#ifndef APR_PARITY_H
#define APR_PARITY_H

#include <stdio.h>

#include "forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- distributions */

/* log(sum(exp(x))) in double, max-shifted. Non-finite input gives a non-finite result. */
double apr_logsumexp(const float *x, uint32_t n);
/* KL(P || Q) in nats for P = softmax(p_logits), Q = softmax(q_logits), in double.
 * +INF when Q puts zero mass where P has some or either input is non-finite. */
double apr_kld_logits(const float *p_logits, const float *q_logits, uint32_t n);
/* Index of the first maximum (NaN never wins); 0 for n == 0. */
uint32_t apr_argmax(const float *x, uint32_t n);
/* llama.cpp's percentile over an ascending array: linear interpolation between
 * sorted[floor(f*(n-1))] and the next one. f <= 0 gives the minimum, f >= 1 the maximum. */
double apr_percentile_sorted(const double *sorted, size_t n, double f);
/* Median of an ascending array (mean of the two middle values when n is even). */
double apr_median_sorted(const double *sorted, size_t n);

/* ---------------------------------------------------------------- logits accumulator */

typedef struct apr_parity_acc {
    uint32_t vocab;
    /* every compared position */
    uint64_t n_positions;
    uint64_t n_logits_differ;     /* logits whose bytes differ */
    int64_t first_diff_pos;       /* position (in add order) of the first differing logit, -1 none */
    int64_t first_diff_idx;       /* its vocab index */
    double max_abs_diff;          /* over finite pairs */
    double cos_sum, cos_min;
    uint64_t nonfinite_src, nonfinite_dst; /* logits */
    /* scored positions (KLD, top-1) */
    uint64_t n_scored;
    uint64_t n_same_top;
    double sum_kld, sum_kld2;
    double *kld;                  /* n_scored values */
    uint64_t cap_kld;
    /* scored positions with a known next token (NLL, delta-p) */
    uint64_t n_nll;
    double sum_nll_src, sum_nll_src2, sum_nll_dst, sum_nll_dst2;
    double sum_pdiff, sum_pdiff2, sum_pdiff4;
    double *pdiff;                /* n_nll values: p_dst(next) - p_src(next) */
    uint64_t cap_pdiff;
} apr_parity_acc;

int apr_parity_acc_init(apr_parity_acc *a, uint32_t vocab);
void apr_parity_acc_free(apr_parity_acc *a);
/* Compare one position's logits (vocab floats each). Every position counts for
 * bit identity, max |diff| and cosine; scored positions also for KLD and top-1;
 * next_tok >= 0 (the token that follows) adds NLL and delta-p. */
int apr_parity_acc_add(apr_parity_acc *a, const float *src, const float *dst, bool scored,
                       int32_t next_tok);
/* apr_parity_acc_add for n consecutive positions (src, dst: n x vocab floats;
 * scored[k], next_tok[k] for position k), the positions' statistics computed
 * on n_threads threads (<= 0: all cores) and added in position order: the
 * result is the same, bit for bit, as n calls of apr_parity_acc_add. */
int apr_parity_acc_add_n(apr_parity_acc *a, const float *src, const float *dst, uint32_t n, const bool *scored,
                         const int32_t *next_tok, int n_threads);

typedef struct apr_parity_summary {
    uint64_t n_positions, n_scored, n_nll;
    uint64_t n_logits;                        /* n_positions * vocab */
    bool bit_identical;
    uint64_t n_logits_differ;
    int64_t first_diff_pos, first_diff_idx;
    double max_abs_diff;
    double cos_mean, cos_min;
    uint64_t nonfinite_src, nonfinite_dst;
    /* KL(SRC || DST) per scored token */
    double kld_mean, kld_mean_unc, kld_median, kld_p90, kld_p99, kld_p999, kld_max, kld_min;
    double top1_pct;                          /* same argmax, % of scored positions */
    double pdiff_mean, pdiff_rms, pdiff_max;  /* delta-p of the next token (fractions, not %) */
    double ppl_src, ppl_dst, ppl_ratio;       /* exp(mean NLL) over the n_nll positions */
} apr_parity_summary;

/* Fill s from a (a is not modified; percentiles sort copies). */
int apr_parity_summarize(const apr_parity_acc *a, apr_parity_summary *s);

/* ---------------------------------------------------------------- traced forward */

typedef struct apr_trace_cmp {
    uint32_t n_layers;
    double lo, hi;                /* the band */
    double *ratio;                /* n_layers * APR_TR_COUNT: std(DST) / std(SRC) */
    bool *out;                    /* ratio outside [lo, hi], or DST has non-finite values SRC has not */
    bool *same;                   /* statistics bit-identical */
    int first_out_layer, first_out_step;   /* -1 when none */
    int first_diff_layer, first_diff_step; /* -1 when none */
} apr_trace_cmp;

/* Ratio convention: both std 0 -> 1; SRC 0 and DST > 0 -> +INF. */
int apr_trace_compare(const apr_trace *src, const apr_trace *dst, double lo, double hi,
                      apr_trace_cmp *out, apr_err *err);
void apr_trace_cmp_free(apr_trace_cmp *c);

/* ---------------------------------------------------------------- verdict policy */

typedef enum apr_expect {
    APR_EXPECT_AUTO = 0,      /* decide from DST's provenance, else from the dtypes */
    APR_EXPECT_LOSSLESS = 1,  /* logits must be bit-identical */
    APR_EXPECT_QUANTIZED = 2, /* mean KLD under a threshold */
} apr_expect;

typedef struct apr_conversion_kind {
    apr_expect kind;          /* LOSSLESS or QUANTIZED once resolved */
    char qtype[24];           /* threshold key: "Q8_0", "Q6_K", "Q4_K_M", "F16", ... ("" lossless) */
    char basis[96];           /* how it was decided: "provenance", "general.file_type", "dtypes", ... */
} apr_conversion_kind;

/* Classify the conversion SRC -> DST: DST's provenance transforms (copy,
 * permute, fuse, split: lossless; quantize:TYPE, dequantize: lossy), else
 * general.file_type, else the tensor dtypes of both files. */
int apr_parity_classify(const apr_model *src, const apr_model *dst, apr_conversion_kind *out,
                        apr_err *err);
/* Which column of the default mean-KLD limits applies (docs/verify.md). */
typedef enum apr_kld_limits {
    APR_LIMITS_TRAINED = 0,   /* measured on the trained tinycoder model (the default) */
    APR_LIMITS_SYNTHETIC = 1, /* measured on apr synth's random-weight models (30-100x more sensitive) */
} apr_kld_limits;

/* Default mean-KLD threshold for a quantization type from the trained-model
 * column (docs/verify.md); a negative value when the type is unknown. */
double apr_parity_default_max_kld(const char *qtype);
/* The same from the chosen column. */
double apr_parity_default_max_kld_for(const char *qtype, apr_kld_limits limits);
const char *apr_kld_limits_name(apr_kld_limits limits);
/* Name of the model-level quantization type of a GGUF general.file_type value
 * ("Q4_K_M" for 15, ...), NULL if unknown. */
const char *apr_parity_file_type_name(uint32_t ftype);

/* ---------------------------------------------------------------- evaluation tokens */

/* The built-in deterministic evaluation text (plain English prose written for
 * this project, about 1000 words). */
const char *apr_parity_builtin_text(void);
/* Tokens for `apr verify`: prompt text (NULL: the built-in text) encoded with
 * SRC's tokenizer; DST's tokenizer, when it has one, must give the same ids.
 * A model pair without tokenizers gets deterministic pseudo-random ids instead
 * (n_fallback of them); *note says which source was used. */
int apr_parity_tokens(const apr_model *src, const apr_model *dst, const char *text,
                      size_t n_fallback, int32_t **ids, size_t *n, char *note, size_t note_cap,
                      apr_err *err);
/* The same; parse_special: control tokens written in the text are those
 * tokens (llama.cpp's parse_special, `apr verify --special`). */
int apr_parity_tokens_ex(const apr_model *src, const apr_model *dst, const char *text, bool parse_special,
                         size_t n_fallback, int32_t **ids, size_t *n, char *note, size_t note_cap,
                         apr_err *err);
/* Tokens of a text file of any size, read block bytes at a time (0: 1 MiB)
 * and encoded piece by piece at places where cutting cannot change the
 * tokens (a newline followed by a non-space; byte-level BPE tokenizers).
 * SentencePiece tokenizers merge across the whole text, so they get it in
 * one piece. DST's tokenizer, when it has one, must agree on every piece.
 * max_tokens > 0 stops reading once that many ids are there. Missing,
 * unreadable, empty or NUL-containing files are errors. */
int apr_parity_tokens_text_file(const apr_model *src, const apr_model *dst, const char *path, size_t max_tokens,
                                size_t block, int32_t **ids, size_t *n, char *note, size_t note_cap, apr_err *err);
/* Whitespace-separated decimal ids from a file, each in [0, vocab). */
int apr_parity_tokens_file(const char *path, uint32_t vocab, int32_t **ids, size_t *n,
                           apr_err *err);

/* ---------------------------------------------------------------- weights (weights.c) */

/* One weight of the pair (a matrix role, or a 1-D norm/bias as one row),
 * compared row by row in the logical order libforward uses. */
typedef struct apr_weight_tensor {
    char name[128];           /* the tensor's name in DST's file (a fused QKV appears as q, k and v) */
    char role[16];            /* token_embd, attn_norm, attn_q, ..., ffn_down, output_norm, output */
    int32_t layer;            /* -1 for model-level tensors */
    char dtype[48];           /* DST dtype; parts of a ROWCAT joined by '+' ("Q4_K+Q6_K") */
    char src_dtype[48];       /* SRC's, the same way */
    uint64_t rows, cols;
    double rel_rmse;          /* ||DST - SRC|| / ||SRC|| over the tensor (absolute RMSE when SRC is 0) */
    bool rmse_absolute;
    bool bit_identical;       /* every dequantized float has the same bits */
    int64_t first_diff_row;   /* logical row, -1 none */
    int64_t first_diff_file_row; /* that row in DST's tensor */
    int64_t worst_row;        /* logical row with the largest error / limit (-1: no rows) */
    uint64_t worst_file_row;
    double worst_row_err;     /* ||row diff|| / ||SRC row||, or ||row diff|| when the SRC row is 0 */
    bool worst_row_abs;
    bool worst_zeroed;        /* that DST row is all zeros and SRC's is not (judged so under an imatrix) */
    apr_dtype worst_dtype;    /* DST dtype of that row */
    double worst_limit;       /* apr_weights_row_limit(worst_dtype); NaN when none */
    double worst_score;       /* error / effective limit (> 1: over); -1 when the dtype has no limit */
    uint64_t n_rows_over;
    bool unjudged;            /* some rows have a dtype without a limit */
} apr_weight_tensor;

typedef struct apr_weights_cmp {
    uint32_t n_tensors;
    apr_weight_tensor *t;     /* token_embd, per layer (attn_norm, q, k, v, biases, o, ffn_norm,
                                 gate, up, down), output_norm, output */
    bool bit_identical;
    int32_t first_diff;       /* index of the first tensor that differs, -1 none */
    int32_t worst;            /* index of the tensor with the largest worst_score, -1 none */
    uint64_t n_rows_over, n_tensors_over;
    char unjudged_dtypes[64]; /* DST dtypes without a row limit, space-separated */
    bool imatrix;             /* DST carries quantize.imatrix.*: quantized rows judged for gross damage only */
    bool same_dtypes;         /* every matrix is stored in the same dtype(s) in both (so the
                                 forward pass runs the same kernels on them) */
} apr_weights_cmp;

/* Compare every weight of DST with SRC's, row by row (dequantized, streamed;
 * threads over rows; n_threads <= 0: all cores). Models whose shapes or roles
 * do not line up are APR_E_MISMATCH. */
int apr_weights_compare(const apr_model *src, const apr_model *dst, int n_threads, apr_weights_cmp *w,
                        apr_err *err);
void apr_weights_cmp_free(apr_weights_cmp *w);
/* Worst-row relative error allowed for a row stored as dtype t in a quantized
 * DST (docs/verify.md, measured); negative when there is none. */
double apr_weights_row_limit(apr_dtype t);
/* "TENSOR row R (layer L ROLE)" for messages. */
void apr_weights_describe_row(const apr_weight_tensor *t, int64_t logical_row, int64_t file_row, char *buf,
                              size_t cap);

/* ---------------------------------------------------------------- reproduction (reproduce.c) */

typedef enum apr_repro_status {
    APR_REPRO_NOT_RUN = 0,     /* not attempted (lossless pair, or an error) */
    APR_REPRO_REPRODUCED = 1,  /* every DST tensor is what the quantizer makes of SRC's */
    APR_REPRO_DIFFERS = 2,     /* some tensor differs (named) */
    APR_REPRO_UNAVAILABLE = 3, /* cannot be attempted (why): an imatrix DST records is missing, ... */
} apr_repro_status;

typedef struct apr_repro_opts {
    const char *src_path;     /* SRC's path: its directory is searched for the imatrix DST records */
    const char *imatrix_path; /* --imatrix: the importance matrix to quantize with (NULL: look) */
    int n_threads;            /* <= 0: all cores */
} apr_repro_opts;

typedef struct apr_repro {
    apr_repro_status status;
    uint64_t n_tensors;       /* DST tensors checked (GGUF view: Q/K/V split) */
    uint64_t n_rebuilt;       /* re-made from SRC with DST's dtype */
    uint64_t n_copied;        /* same dtype in both: compared as copies */
    uint64_t n_differ;        /* tensors that differ, are missing or have another shape */
    char first_tensor[128];   /* the first of them (GGUF view name) */
    int64_t first_row;        /* its first differing row, -1 when not a row matter */
    char first_what[96];      /* "F32 -> Q4_K differs", "not in SRC", ... */
    char imatrix[512];        /* the importance matrix used ("" none) */
    char why[384];            /* UNAVAILABLE: why */
} apr_repro;

/* Re-make every tensor of DST's GGUF view from SRC's with the dtype DST
 * stores (and the imatrix, see apr_repro_opts) and compare the bytes. A
 * result that cannot be reached (DST type without a quantizer, missing
 * imatrix) is status UNAVAILABLE, not an error; errors are unreadable
 * inputs and out of memory. */
int apr_reproduce(const apr_model *src, const apr_model *dst, const apr_repro_opts *o, apr_repro *r,
                  apr_err *err);
/* One line for reports: "reproduced: ...", "not reproduced: ... first T row R (...)". */
void apr_repro_describe(const apr_repro *r, char *buf, size_t cap);

/* ---------------------------------------------------------------- forward-pass configuration */

/* Whether the forward pass of SRC and DST is configured identically: every
 * field of the model config that shapes the computation (architecture,
 * sizes, rope type and theta, norm epsilon, tied output, QKV bias). The
 * context length only bounds the run. false with the first difference in
 * why. */
bool apr_parity_same_config(const apr_model *src, const apr_model *dst, char *why, size_t cap);

/* ---------------------------------------------------------------- the verify driver */

typedef struct apr_verify_opts {
    uint32_t ctx;             /* tokens per chunk; 0 = min(512, model context) */
    uint32_t chunks;          /* 0 = as many whole chunks as the tokens give (at least 1) */
    bool all_positions;       /* score every position, not llama.cpp's second half of a chunk */
    int32_t bos_id;           /* >= 0: put it at the start of every chunk (llama-perplexity does) */
    int n_threads;
    apr_device device;
    double band_lo, band_hi;  /* std-ratio band; 0,0 = [0.5, 2.0] */
    /* progress: called after every evaluated batch with the tokens done and
     * the total (both models count once); NULL: none */
    void (*on_progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
    /* The rule that may decide without the forward pass. AUTO (0): none, the
     * forward pass always runs. LOSSLESS: bit-identical weights of the same
     * dtypes and the same forward-pass configuration give identical logits
     * by construction. QUANTIZED: DST is reproduced (apr_reproduce with
     * repro) under the same configuration. */
    apr_expect fast_path;
    bool force_logits;        /* --logits: run the forward pass even when a fast path decides */
    apr_repro_opts repro;     /* for QUANTIZED */
} apr_verify_opts;

/* Which rule decided (or would decide) the verdict. */
typedef enum apr_verify_rule {
    APR_RULE_LOGITS = 0,       /* the forward pass (statistics, bit identity) */
    APR_RULE_CONSTRUCTION = 1, /* lossless: same weights, dtypes and config: same logits */
    APR_RULE_REPRODUCED = 2,   /* quantized: DST is the quantizer's output for SRC */
} apr_verify_rule;

typedef struct apr_verify_result {
    uint32_t ctx, chunks;
    uint64_t n_tokens_used;
    apr_device dev_src, dev_dst;
    double secs_src, secs_dst;  /* the forward passes */
    /* wall seconds of the other phases: weight comparison, reproduction (or
     * the configuration check), loading both models, logit statistics */
    double secs_weights, secs_repro, secs_load, secs_stats;
    apr_parity_summary s;
    apr_trace_cmp tc;         /* traced over all tokens of the first chunk */
    apr_trace tr_src, tr_dst;
    apr_weights_cmp w;        /* weight-level comparison (n_tensors 0: not run) */
    apr_repro rp;             /* reproduction (status NOT_RUN: not attempted) */
    bool same_config;         /* apr_parity_same_config */
    char config_diff[160];    /* its first difference */
    bool same_dtypes;         /* every weight stored in the same dtype(s) in both */
    bool forward_run;         /* false: a fast path decided and the logits were not computed */
    apr_verify_rule rule;     /* what decides the verdict */
} apr_verify_result;

/* Compare every weight (apr_weights_compare), then run SRC and DST over the
 * same tokens chunk by chunk and compare every position's logits. Both models
 * need the same shapes. */
int apr_verify_models(const apr_model *src, const apr_model *dst, const int32_t *tokens,
                      size_t n_tokens, const apr_verify_opts *o, apr_verify_result *r,
                      apr_err *err);
void apr_verify_result_free(apr_verify_result *r);

/* ---------------------------------------------------------------- verdict and report */

typedef struct apr_verdict {
    bool pass;
    bool error;               /* no verdict possible (e.g. no threshold for the type) */
    apr_conversion_kind kind;
    double max_kld;           /* threshold applied (quantized); NaN for lossless */
    apr_verify_rule rule;     /* which rule decided */
    char limits[16];          /* where max_kld came from: "trained", "synthetic", "--max-kld" ("" none) */
    char reason[1024];
} apr_verdict;

/* Lossless: every weight and every logit bit-identical. Quantized: every
 * weight row within its dtype's limit, mean KLD <= max_kld
 * (max_kld_override > 0, else the type's default), no traced step outside the
 * band and no non-finite logits SRC does not have. A result whose weights
 * were not compared (w.n_tensors 0) is judged on the logits alone. */
void apr_parity_decide(const apr_verify_result *r, const apr_conversion_kind *k,
                       double max_kld_override, apr_verdict *v);
/* The same with a choice of default limits (apr_parity_default_max_kld_for).
 * Rules, strongest first: a lossless pair decided by construction passes
 * without logits (with --logits the logits must then be bit-identical); a
 * reproduced quantized DST passes (its KLD, when computed, is reported
 * against the limit for information); otherwise the statistics above. */
void apr_parity_decide_limits(const apr_verify_result *r, const apr_conversion_kind *k,
                              double max_kld_override, apr_kld_limits limits, apr_verdict *v);

typedef struct apr_report_info {
    const char *src_path, *dst_path;
    const char *tokens_note;
    bool all_positions;
} apr_report_info;

/* The whole report as compact JSON text (malloc'd; NULL when out of memory).
 * Non-finite numbers are written as null. */
char *apr_verify_report_json(const apr_report_info *info, const apr_verify_result *r,
                             const apr_verdict *v);
/* The same report as a readable table. */
void apr_verify_report_print(FILE *f, const apr_report_info *info, const apr_verify_result *r,
                             const apr_verdict *v);

/* ---------------------------------------------------------------- model comparison */

/* Compare two models' tensors (by name: dtype, shape, fused-part layout,
 * payload bytes) and metadata KVs (type and value), skipping KVs whose key
 * starts with one of the NULL-terminated ignore prefixes and the provenance
 * records. Returns 0 when equal, 1 when different (first difference in diff),
 * negative on error. */
int apr_models_compare(const apr_model *a, const apr_model *b, const char *const *ignore_prefixes,
                       char *diff, size_t diff_cap);

#ifdef __cplusplus
}
#endif
#endif /* APR_PARITY_H */
