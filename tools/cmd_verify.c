/* cmd_verify.c - `apr verify`: prove that a converted model computes what its
 * source did (logit parity), that a format round trip is exact, and that a
 * file's provenance record still matches its bytes.
 * The statistics, verdict policy and reports live in libparity (parity.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "parity.h"
#include "progress.h"
#include "verify_cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: apr verify SRC DST [options]          logit parity of DST against SRC\n"
            "       apr verify --roundtrip FILE --via apr|gguf|safetensors\n"
            "       apr verify --provenance FILE [SOURCE]\n"
            "\n"
            "Parity (both models run on the same tokens; exit 0 pass, 1 fail, 2 error):\n"
            "  --prompt TEXT        evaluate TEXT (tokenized by SRC; DST must tokenize it the same)\n"
            "  --special            control tokens written in the prompt (<|im_start|>, ...) are\n"
            "                       those tokens, not text (llama.cpp's parse_special)\n"
            "  --text FILE, -f FILE evaluate a text file of any size (read and tokenized in 1 MiB\n"
            "                       pieces; llama-perplexity's -f)\n"
            "  --tokens FILE        evaluate whitespace-separated token ids\n"
            "                       (default: a built-in text of about 1000 words)\n"
            "  --ctx N              tokens per chunk (default min(512, model context))\n"
            "  --chunks K           chunks to evaluate (default: as many as the tokens fill)\n"
            "  --all-positions      score every position (default: second half of each chunk,\n"
            "                       as llama-perplexity does)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --device D           auto, cpu or cuda (default auto)\n"
            "  --band LO,HI         per-layer std-ratio band (default 0.5,2.0)\n"
            "  --expect KIND        lossless or quantized (default: from DST's provenance/dtypes)\n"
            "  --max-kld X          mean-KLD limit for quantized DST (default: per type, docs/verify.md)\n"
            "  --limits KIND        trained (default) or synthetic: which column of default limits\n"
            "                       (synthetic: apr synth's random-weight models, 30-100x more sensitive)\n"
            "  --imatrix FILE       the importance matrix DST was quantized with, for reproduction\n"
            "                       (default: the file DST records, looked up in SRC's directory)\n"
            "  --logits             run the forward pass even when the weights decide (bit-identical\n"
            "                       lossless pair, or a DST reproduced byte for byte)\n"
            "  --json               print the report as JSON instead of a table\n");
}

static int parse_u32(const char *opt, const char *v, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || x > 0x7fffffff || v[0] == '-') {
        fprintf(stderr, "apr verify: %s wants a non-negative integer, got '%s'\n", opt, v);
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int parse_double(const char *opt, const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x > 0) || x != x || x > 1e300) {
        fprintf(stderr, "apr verify: %s wants a positive number, got '%s'\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

typedef struct args {
    const char *src, *dst;
    const char *prompt, *tokens_file, *text_file, *imatrix;
    const char *roundtrip, *via;
    const char *provenance, *prov_source;
    apr_verify_opts vo;
    apr_expect expect;
    double max_kld;
    apr_kld_limits limits;
    bool json, logits, special;
} args;

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->vo.bos_id = -1;
    const char *pos[2] = {0};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                                                   \
    do {                                                                         \
        if (!v) {                                                                \
            fprintf(stderr, "apr verify: %s needs a value\n", o);                \
            return -1;                                                           \
        }                                                                        \
        i++;                                                                     \
    } while (0)
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(o, "--prompt")) {
            NEED();
            a->prompt = v;
        } else if (!strcmp(o, "--special")) {
            a->special = true;
        } else if (!strcmp(o, "--tokens")) {
            NEED();
            a->tokens_file = v;
        } else if (!strcmp(o, "--text") || !strcmp(o, "-f")) {
            NEED();
            a->text_file = v;
        } else if (!strcmp(o, "--imatrix")) {
            NEED();
            a->imatrix = v;
        } else if (!strcmp(o, "--logits")) {
            a->logits = true;
        } else if (!strcmp(o, "--limits")) {
            NEED();
            if (!strcmp(v, "trained"))
                a->limits = APR_LIMITS_TRAINED;
            else if (!strcmp(v, "synthetic"))
                a->limits = APR_LIMITS_SYNTHETIC;
            else {
                fprintf(stderr, "apr verify: --limits is trained or synthetic, not '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(o, "--ctx")) {
            NEED();
            if (parse_u32(o, v, &a->vo.ctx))
                return -1;
        } else if (!strcmp(o, "--chunks")) {
            NEED();
            if (parse_u32(o, v, &a->vo.chunks))
                return -1;
        } else if (!strcmp(o, "--threads")) {
            NEED();
            uint32_t t;
            if (parse_u32(o, v, &t))
                return -1;
            a->vo.n_threads = (int)t;
        } else if (!strcmp(o, "--device")) {
            NEED();
            if (!strcmp(v, "auto"))
                a->vo.device = APR_DEV_AUTO;
            else if (!strcmp(v, "cpu"))
                a->vo.device = APR_DEV_CPU;
            else if (!strcmp(v, "cuda"))
                a->vo.device = APR_DEV_CUDA;
            else {
                fprintf(stderr, "apr verify: --device is auto, cpu or cuda, not '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(o, "--band")) {
            NEED();
            char lo[64], hi[64];
            const char *comma = strchr(v, ',');
            if (!comma || (size_t)(comma - v) >= sizeof lo || strlen(comma + 1) >= sizeof hi) {
                fprintf(stderr, "apr verify: --band wants LO,HI, got '%s'\n", v);
                return -1;
            }
            memcpy(lo, v, (size_t)(comma - v));
            lo[comma - v] = 0;
            snprintf(hi, sizeof hi, "%s", comma + 1);
            if (parse_double("--band LO", lo, &a->vo.band_lo) ||
                parse_double("--band HI", hi, &a->vo.band_hi))
                return -1;
            if (a->vo.band_lo > a->vo.band_hi) {
                fprintf(stderr, "apr verify: --band LO must not exceed HI\n");
                return -1;
            }
        } else if (!strcmp(o, "--expect")) {
            NEED();
            if (!strcmp(v, "lossless"))
                a->expect = APR_EXPECT_LOSSLESS;
            else if (!strcmp(v, "quantized"))
                a->expect = APR_EXPECT_QUANTIZED;
            else {
                fprintf(stderr, "apr verify: --expect is lossless or quantized, not '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(o, "--max-kld")) {
            NEED();
            if (parse_double(o, v, &a->max_kld))
                return -1;
        } else if (!strcmp(o, "--all-positions")) {
            a->vo.all_positions = true;
        } else if (!strcmp(o, "--json")) {
            a->json = true;
        } else if (!strcmp(o, "--roundtrip")) {
            NEED();
            a->roundtrip = v;
        } else if (!strcmp(o, "--via")) {
            NEED();
            a->via = v;
        } else if (!strcmp(o, "--provenance")) {
            NEED();
            a->provenance = v;
        } else if (o[0] == '-' && o[1]) {
            fprintf(stderr, "apr verify: unknown option '%s'\n", o);
            return -1;
        } else {
            if (npos == 2) {
                fprintf(stderr, "apr verify: too many paths ('%s')\n", o);
                return -1;
            }
            pos[npos++] = o;
        }
#undef NEED
    }
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
        usage(stderr);
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
    if (a->expect != APR_EXPECT_AUTO && a->expect != kind.kind) {
        kind.kind = a->expect;
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
    apr_parity_decide_limits(&r, &kind, a->max_kld, a->limits, &v);
    apr_report_info info = {.src_path = a->src, .dst_path = a->dst, .tokens_note = note,
                            .all_positions = vo.all_positions};
    if (a->json) {
        char *txt = apr_verify_report_json(&info, &r, &v);
        if (!txt) {
            fprintf(stderr, "apr verify: out of memory writing the report\n");
            goto out;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        apr_verify_report_print(stdout, &info, &r, &v);
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
