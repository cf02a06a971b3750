/* cmd_verify.c - `apr verify`: prove that a converted model computes what its
 * source did (logit parity), that a format round trip is exact, and that a
 * file's provenance record still matches its bytes.
 * The statistics, verdict policy and reports live in libparity (parity.h).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "parity.h"
#include "progress.h"
#include "verify_cmds.h"

static const char usage[] =
    "usage: apr verify SRC DST [options]          logit parity of DST against SRC\n"
    "       apr verify --roundtrip FILE --via apr|gguf|safetensors\n"
    "       apr verify --provenance FILE [SOURCE]\n"
    "\n"
    "Parity (both models run on the same tokens; exit 0 pass, 1 fail, 2 error):\n";

static const cli_name devices[] = {{"auto", APR_DEV_AUTO}, {"cpu", APR_DEV_CPU}, {"cuda", APR_DEV_CUDA}, {NULL, 0}};
static const cli_name expects[] = {{"lossless", APR_EXPECT_LOSSLESS}, {"quantized", APR_EXPECT_QUANTIZED}, {NULL, 0}};
static const cli_name limit_kinds[] = {{"trained", APR_LIMITS_TRAINED}, {"synthetic", APR_LIMITS_SYNTHETIC}, {NULL, 0}};

typedef struct args {
    const char *src, *dst;
    const char *prompt, *tokens_file, *text_file, *imatrix;
    const char *roundtrip, *via;
    const char *provenance, *prov_source;
    const char *band;
    apr_verify_opts vo;
    int expect; /* apr_expect */
    double max_kld;
    int limits; /* apr_kld_limits */
    int device; /* apr_device */
    bool json, logits, special;
} args;

/* --band LO,HI: two positive numbers, LO <= HI. */
static int parse_band(const char *v, apr_verify_opts *vo)
{
    char lo[64];
    const char *comma = strchr(v, ',');
    if (comma && (size_t)(comma - v) < sizeof lo) {
        memcpy(lo, v, (size_t)(comma - v));
        lo[comma - v] = 0;
        if (!cli_parse_double(lo, 0, 1e300, true, &vo->band_lo) &&
            !cli_parse_double(comma + 1, 0, 1e300, true, &vo->band_hi) && vo->band_lo <= vo->band_hi)
            return 0;
    }
    fprintf(stderr, "apr verify: --band wants LO,HI (two numbers > 0, LO <= HI), got '%s'\n", v);
    return -1;
}

/* 0 ok, 1 help printed, -1 error (the message is out) */
static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->vo.bos_id = -1;
    const cli_opt opts[] = {
        OPT_STR("--prompt", NULL, &a->prompt, "TEXT",
                "evaluate TEXT (tokenized by SRC; DST must tokenize it the same)"),
        OPT_FLAG("--special", NULL, &a->special,
                 "control tokens written in the prompt (<|im_start|>, ...) are\n"
                 "those tokens, not text (llama.cpp's parse_special)"),
        OPT_STR("--text", "-f", &a->text_file, "FILE",
                "evaluate a text file of any size (read and tokenized in 1 MiB\n"
                "pieces; llama-perplexity's -f)"),
        OPT_STR("--tokens", NULL, &a->tokens_file, "FILE",
                "evaluate whitespace-separated token ids\n"
                "(default: a built-in text of about 1000 words)"),
        OPT_U32("--ctx", NULL, &a->vo.ctx, 0, INT32_MAX, "N", "tokens per chunk (default min(512, model context))"),
        OPT_U32("--chunks", NULL, &a->vo.chunks, 0, INT32_MAX, "K",
                "chunks to evaluate (default: as many as the tokens fill)"),
        OPT_FLAG("--all-positions", NULL, &a->vo.all_positions,
                 "score every position (default: second half of each chunk,\n"
                 "as llama-perplexity does)"),
        OPT_INT("--threads", NULL, &a->vo.n_threads, 0, INT32_MAX, "N", "CPU threads (default: all cores)"),
        OPT_ENUM("--device", NULL, &a->device, devices, "default auto"),
        OPT_STR("--band", NULL, &a->band, "LO,HI", "per-layer std-ratio band (default 0.5,2.0)"),
        OPT_ENUM("--expect", NULL, &a->expect, expects, "default: from DST's provenance/dtypes"),
        OPT_DOUBLE("--max-kld", NULL, &a->max_kld, 0.0, 1e300, true, "X",
                   "mean-KLD limit for quantized DST (default: per type, docs/verify.md)"),
        OPT_ENUM("--limits", NULL, &a->limits, limit_kinds,
                 "trained (default) or synthetic: which column of default limits\n"
                 "(synthetic: apr synth's random-weight models, 30-100x more sensitive)"),
        OPT_STR("--imatrix", NULL, &a->imatrix, "FILE",
                "the importance matrix DST was quantized with, for reproduction\n"
                "(default: the file DST records, looked up in SRC's directory)"),
        OPT_FLAG("--logits", NULL, &a->logits,
                 "run the forward pass even when the weights decide (bit-identical\n"
                 "lossless pair, or a DST reproduced byte for byte)"),
        OPT_FLAG("--json", NULL, &a->json, "print the report as JSON instead of a table"),
        OPT_STR("--roundtrip", NULL, &a->roundtrip, "FILE", "FILE -> --via format -> FILE's format, compared"),
        OPT_STR("--via", NULL, &a->via, "FMT", "apr, gguf or safetensors (with --roundtrip)"),
        OPT_STR("--provenance", NULL, &a->provenance, "FILE",
                "re-hash FILE's tensors (and SOURCE's) against its provenance record"),
    };
    const cli_cmd cmd = {.name = "verify", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 0,
                         .max_pos = 2};
    cli_args pa;
    const int rc = cli_parse(&cmd, argc, argv, &pa);
    if (rc)
        return rc == CLI_HELP ? 1 : -1;
    const char *const *pos = pa.pos;
    const int npos = pa.n_pos;
    a->vo.device = (apr_device)a->device;
    if (a->band && parse_band(a->band, &a->vo))
        return -1;
    if (a->roundtrip || a->provenance) {
        if (a->roundtrip && a->provenance) {
            fprintf(stderr, "apr verify: --roundtrip and --provenance are separate checks\n");
            return -1;
        }
        if (a->roundtrip && (npos || !a->via)) {
            fprintf(stderr, "apr verify: --roundtrip FILE --via apr|gguf|safetensors\n");
            return -1;
        }
        if (a->provenance) {
            if (npos > 1) {
                fprintf(stderr, "apr verify: --provenance FILE [SOURCE]\n");
                return -1;
            }
            a->prov_source = npos ? pos[0] : NULL;
        }
        return 0;
    }
    if (a->via) {
        fprintf(stderr, "apr verify: --via belongs to --roundtrip\n");
        return -1;
    }
    if (npos != 2) {
        fprintf(stderr, "apr verify: %s\n", npos ? "DST is missing" : "missing SRC and DST");
        cli_help(stderr, &cmd);
        return -1;
    }
    if (!!a->prompt + !!a->tokens_file + !!a->text_file > 1) {
        fprintf(stderr, "apr verify: --prompt, --text and --tokens are alternatives\n");
        return -1;
    }
    a->src = pos[0];
    a->dst = pos[1];
    return 0;
}

static apr_model *open_model(const char *what, const char *path)
{
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, path, NULL, &err)) {
        fprintf(stderr, "apr verify: %s %s: %s\n", what, path, err.msg);
        return NULL;
    }
    if (!m->has_cfg) {
        fprintf(stderr, "apr verify: %s %s: no usable model config\n", what, path);
        apr_model_free(m);
        return NULL;
    }
    return m;
}

static int parity(const args *a)
{
    int rc = 2;
    apr_model *src = open_model("SRC", a->src), *dst = src ? open_model("DST", a->dst) : NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    char note[256] = "";
    apr_err err = {0};
    apr_verify_result r;
    bool have_r = false;
    if (!src || !dst)
        goto out;

    /* the conversion kind first: a broken provenance record is an error before any compute */
    apr_conversion_kind kind;
    if (apr_parity_classify(src, dst, &kind, &err)) {
        fprintf(stderr, "apr verify: %s\n", err.msg);
        goto out;
    }
    if (a->expect != APR_EXPECT_AUTO && a->expect != (int)kind.kind) {
        kind.kind = (apr_expect)a->expect;
        if (a->expect == APR_EXPECT_LOSSLESS)
            kind.qtype[0] = 0;
        else if (!kind.qtype[0])
            snprintf(kind.qtype, sizeof kind.qtype, "unknown");
        snprintf(kind.basis, sizeof kind.basis, "--expect");
    } else if (a->expect != APR_EXPECT_AUTO) {
        snprintf(kind.basis + strlen(kind.basis), sizeof kind.basis - strlen(kind.basis),
                 "; --expect agrees");
    }

    apr_verify_opts vo = a->vo;
    if (src->has_tok && src->tok.add_bos && src->tok.bos_id >= 0)
        vo.bos_id = src->tok.bos_id;
    vo.fast_path = kind.kind;
    vo.force_logits = a->logits;
    vo.repro = (apr_repro_opts){.src_path = a->src, .imatrix_path = a->imatrix, .n_threads = a->vo.n_threads};
    if (a->text_file) {
        /* with --ctx and --chunks both given, only that many tokens are read */
        const size_t want = a->vo.ctx && a->vo.chunks ? (size_t)a->vo.ctx * a->vo.chunks : 0;
        if (apr_parity_tokens_text_file(src, dst, a->text_file, want, 0, &ids, &n, note, sizeof note, &err)) {
            fprintf(stderr, "apr verify: --text: %s\n", err.msg);
            goto out;
        }
    } else if (a->tokens_file) {
        if (apr_parity_tokens_file(a->tokens_file, src->cfg.vocab, &ids, &n, &err)) {
            fprintf(stderr, "apr verify: --tokens: %s\n", err.msg);
            goto out;
        }
        snprintf(note, sizeof note, "%zu ids from %s", n, a->tokens_file);
    } else {
        /* models without a tokenizer: enough ids for the requested chunks, else 4 x 512 */
        const size_t want = (size_t)(a->vo.ctx ? a->vo.ctx : 512) * (a->vo.chunks ? a->vo.chunks : 4);
        if (apr_parity_tokens_ex(src, dst, a->prompt, a->special, want, &ids, &n, note, sizeof note, &err)) {
            fprintf(stderr, "apr verify: %s\n", err.msg);
            goto out;
        }
    }
    apr_progress prog;
    apr_progress_start(&prog, "verify", "tokens", 0, !a->json);
    vo.on_progress = apr_progress_cb;
    vo.progress_ctx = &prog;
    const int vrc = apr_verify_models(src, dst, ids, n, &vo, &r, &err);
    apr_progress_end(&prog);
    if (vrc) {
        fprintf(stderr, "apr verify: %s\n", err.msg);
        goto out;
    }
    have_r = true;
    apr_verdict v;
    apr_parity_decide_limits(&r, &kind, a->max_kld, (apr_kld_limits)a->limits, &v);
    apr_report_info info = {.src_path = a->src, .dst_path = a->dst, .tokens_note = note,
                            .all_positions = vo.all_positions};
    if (a->json) {
        char *txt = apr_verify_report_json(&info, &r, &v);
        const int wrc = apr_verify_report_json_out(txt);
        free(txt);
        if (wrc)
            goto out;
    } else {
        apr_verify_report_print(stdout, &info, &r, &v);
        if (apr_verify_report_written(0))
            goto out;
    }
    if (v.error)
        fprintf(stderr, "apr verify: %s\n", v.reason);
    rc = v.error ? 2 : v.pass ? 0 : 1;
out:
    if (have_r)
        apr_verify_result_free(&r);
    free(ids);
    apr_model_free(src);
    apr_model_free(dst);
    return rc;
}

int cmd_verify(int argc, char **argv)
{
    args a;
    int p = parse_args(argc, argv, &a);
    if (p > 0)
        return 0;
    if (p < 0)
        return 2;
    if (a.roundtrip)
        return apr_verify_roundtrip_cmd(a.roundtrip, a.via, a.json);
    if (a.provenance)
        return apr_verify_provenance_cmd(a.provenance, a.prov_source, a.json);
    return parity(&a);
}
