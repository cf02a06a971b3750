/* cmd_imatrix.c - `apr imatrix MODEL --text FILE`: an importance matrix
 * computed with the built-in CPU forward pass, as llama-imatrix computes one
 * (libforward/imatrix.c), written in either of its formats (libconvert's
 * apr_imatrix_write_gguf / _dat) for `apr quantize --imatrix` and
 * llama-quantize. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "formats.h"
#include "forward.h"
#include "progress.h"
#include "quant.h"
#include "tok.h"

#define MAX_IN_FILES 64

typedef struct imatrix_args {
    const char *model, *text, *out;
    uint32_t ctx, chunks;
    int threads;
    int format; /* 0: from OUT's name, 1: gguf, 2: dat */
    bool special, process_output, no_ppl;
    const char *in_files[MAX_IN_FILES];
    int n_in;
} imatrix_args;

static const char usage[] =
    "usage: apr imatrix MODEL --text FILE [options]\n"
    "       apr imatrix [MODEL] --in-file A --in-file B [...] -o OUT   (combine files only)\n"
    "Sums the squared input of every layer's weight matrices over the text's tokens (llama-imatrix's\n"
    "importance matrix) for `apr quantize --imatrix` and llama-quantize, printing the perplexity of\n"
    "each chunk's second half as llama-imatrix does.\n";

static const cli_name formats[] = {{"gguf", 1}, {"dat", 2}, {NULL, 0}};

static bool ends_with(const char *s, const char *suf)
{
    const size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* CLI_OK, or cli_parse's CLI_HELP / CLI_FAIL (and then the message is out). */
static int parse_args(int argc, char **argv, imatrix_args *a)
{
    *a = (imatrix_args){.out = "imatrix.gguf", .ctx = 512};
    cli_list in_files = {0};
    const cli_opt opts[] = {
        OPT_STR("--text", "-f", &a->text, "FILE", "calibration text (tokenized with MODEL's tokenizer)"),
        OPT_STR("--output", "-o", &a->out, "OUT", "output file (default imatrix.gguf)"),
        OPT_ENUM("--format", NULL, &a->format, formats,
                 "gguf (llama-imatrix's default) or dat (its legacy format);\n"
                 "default: dat when OUT ends in .dat, else gguf"),
        OPT_U32("--ctx", NULL, &a->ctx, 1, 1u << 20, "N", "tokens per chunk (default 512, llama-imatrix's)"),
        OPT_U32("--chunks", NULL, &a->chunks, 1, INT32_MAX, "N",
                "chunks to process (default: every whole chunk of the text)"),
        OPT_INT("--threads", NULL, &a->threads, 1, 256, "N", "CPU threads (default: all cores)"),
        OPT_FLAG("--special", NULL, &a->special,
                 "control tokens written in the text are those tokens\n(llama.cpp's --parse-special)"),
        OPT_FLAG("--process-output", NULL, &a->process_output,
                 "also collect output.weight (none when it is tied to the embedding)"),
        OPT_LIST("--in-file", NULL, &in_files, "FILE",
                 "start from an existing imatrix (GGUF or .dat; repeatable: the files'\n"
                 "sums and counts add up, as llama-imatrix --in-file)"),
        OPT_FLAG("--no-ppl", NULL, &a->no_ppl, "do not compute the perplexity"),
    };
    const cli_cmd cmd = {.name = "imatrix", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 0,
                         .max_pos = 1};
    cli_args args;
    const int rc = cli_parse(&cmd, argc, argv, &args);
    if (rc)
        return rc;
    a->model = args.n_pos ? args.pos[0] : NULL;
    const bool too_many = in_files.n > MAX_IN_FILES;
    for (size_t k = 0; k < in_files.n && k < MAX_IN_FILES; k++)
        a->in_files[a->n_in++] = in_files.v[k];
    cli_free(&cmd);
    if (too_many) {
        fprintf(stderr, "apr imatrix: at most %d --in-file\n", MAX_IN_FILES);
        return CLI_FAIL;
    }
    if ((!a->model || !a->text) && !(a->n_in && !a->text)) {
        fprintf(stderr, "apr imatrix: MODEL and --text FILE are required (or --in-file files to combine)\n");
        cli_help(stderr, &cmd);
        return CLI_FAIL;
    }
    if (!a->text && (a->process_output || a->chunks || a->special)) {
        fprintf(stderr, "apr imatrix: --process-output, --chunks and --special need --text\n");
        return CLI_FAIL;
    }
    if (!a->format)
        a->format = ends_with(a->out, ".dat") ? 2 : 1;
    bool is_input = (a->model && apr_same_file(a->out, a->model)) || (a->text && apr_same_file(a->out, a->text));
    for (int k = 0; k < a->n_in; k++)
        is_input = is_input || apr_same_file(a->out, a->in_files[k]);
    if (is_input) {
        fprintf(stderr, "apr imatrix: OUT %s is an input file; apr never overwrites its input\n", a->out);
        return CLI_FAIL;
    }
    /* before the forward pass, not after it: OUT's directory must take the file */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", a->out);
    if (access(dirname(dir), W_OK) != 0) {
        fprintf(stderr, "apr imatrix: cannot write %s: %s\n", a->out, strerror(errno));
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* The whole text file, NUL-terminated; refused when empty or not text. */
static char *read_text(const char *path, apr_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            cap = 2 * cap + 65536 + 1;
            char *nb = realloc(buf, cap);
            if (!nb) {
                apr_err_set(err, APR_E_NOMEM, "out of memory reading %s", path);
                goto fail;
            }
            buf = nb;
        }
        const size_t got = fread(buf + len, 1, 65536, f);
        len += got;
        if (got < 65536)
            break;
    }
    if (ferror(f)) {
        apr_err_set(err, APR_E_IO, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    buf[len] = 0;
    const char *nul = memchr(buf, 0, len);
    if (nul) {
        apr_err_set(err, APR_E_FORMAT, "%s: NUL byte at offset %zu: not a text file", path, (size_t)(nul - buf));
        free(buf);
        return NULL;
    }
    if (!len) {
        apr_err_set(err, APR_E_ARG, "%s is empty", path);
        free(buf);
        return NULL;
    }
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* MoE layers route tokens to experts: llama-imatrix keeps a count per
 * expert, and apr's forward pass runs dense models only. */
static int refuse_moe(const apr_model *m, apr_err *err)
{
    const char *arch = apr_kv_get_str(m, "general.architecture");
    char key[96];
    uint32_t n = 0;
    snprintf(key, sizeof key, "%s.expert_count", arch ? arch : "");
    if (arch && apr_kv_get_u32(m, key, &n) && n > 0)
        return apr_err_set(err, APR_E_UNSUPPORTED, "%s has %u experts per layer: mixture-of-experts models are not "
                           "supported (apr's forward pass runs dense models only)", m->path ? m->path : "MODEL", n);
    return 0;
}

static int tokenize(const apr_model *m, const char *text, bool special, int32_t **ids, size_t *n, apr_err *err)
{
    if (!m->has_tok || m->tok.n_tokens == 0)
        return apr_err_set(err, APR_E_ARG, "the model has no tokenizer: --text cannot be tokenized");
    apr_tok *t = NULL;
    int rc = apr_tok_load(&t, m, err);
    if (!rc) /* llama-imatrix's common_tokenize(ctx, prompt, add_special = true, parse_special) */
        rc = apr_tok_encode_ex(t, text, true, special, ids, n, err);
    apr_tok_free(t);
    return rc;
}

static void print_chunk_ppl(void *ctx, uint32_t chunk, double ppl)
{
    (void)ctx;
    printf("[%u]%.4f,", chunk, ppl); /* llama-imatrix's running estimate */
    fflush(stdout);
}

/* --in-file: every file's sums and counts added up, in order */
static int load_in_files(const imatrix_args *a, apr_imatrix_stats *start, apr_err *err)
{
    *start = (apr_imatrix_stats){.chunk_size = a->ctx};
    int rc = 0;
    for (int k = 0; k < a->n_in && !rc; k++)
        rc = apr_imatrix_stats_add_file(start, a->in_files[k], err);
    if (!rc && a->n_in)
        fprintf(stderr, "apr imatrix: %d imatrix file(s) loaded: %llu entries, %u chunks of %u\n", a->n_in,
                (unsigned long long)start->n_entries, start->chunks, a->ctx);
    return rc;
}

static int write_out(const imatrix_args *a, const apr_imatrix_stats *st, apr_err *err)
{
    int rc = a->format == 2 ? apr_imatrix_write_dat(st, a->out, err) : apr_imatrix_write_gguf(st, a->out, err);
    if (!rc)
        fprintf(stderr, "apr imatrix: %llu entries, %u chunks of %u tokens -> %s (%s)\n",
                (unsigned long long)st->n_entries, st->chunks, st->chunk_size, a->out,
                a->format == 2 ? "legacy .dat" : "GGUF");
    return rc;
}

int cmd_imatrix(int argc, char **argv)
{
    imatrix_args a;
    const int p = parse_args(argc, argv, &a);
    if (p)
        return cli_exit_status(p);
    apr_err err = {0};
    apr_model *m = NULL;
    apr_fwd *f = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    apr_imatrix_stats st = {0}, start = {0};
    apr_imatrix_ppl ppl = {0};
    int rc = load_in_files(&a, &start, &err);
    if (!rc && !a.text) { /* combine only */
        rc = write_out(&a, &start, &err);
        if (rc)
            fprintf(stderr, "apr imatrix: %s\n", err.msg);
        apr_imatrix_stats_free(&start);
        return rc ? 2 : 0;
    }
    if (!rc)
        rc = apr_model_open(&m, a.model, NULL, &err);
    if (!rc)
        rc = refuse_moe(m, &err);
    if (!rc && !(text = read_text(a.text, &err)))
        rc = err.code ? err.code : APR_E_IO;
    if (!rc)
        rc = tokenize(m, text, a.special, &ids, &n, &err);
    if (!rc && n / 2 < a.ctx)
        rc = apr_err_set(&err, APR_E_ARG, "%s tokenizes to only %zu tokens; --ctx %u needs at least %llu", a.text,
                         n, a.ctx, 2ull * a.ctx);
    const apr_fwd_opts fo = {.n_threads = a.threads, .device = APR_DEV_CPU, .max_ctx = a.ctx};
    if (!rc)
        rc = apr_fwd_load(&f, m, &fo, &err);
    if (!rc) {
        const uint64_t n_chunk = a.chunks && a.chunks < n / a.ctx ? a.chunks : n / a.ctx;
        fprintf(stderr, "apr imatrix: %zu tokens, %llu chunks of %u\n", n, (unsigned long long)n_chunk, a.ctx);
        apr_progress prog;
        apr_progress_start(&prog, "imatrix", "tokens", n_chunk * a.ctx, true);
        const apr_imatrix_opts io = {
            .ctx = a.ctx,
            .chunks = a.chunks,
            .bos = m->tok.add_bos && m->tok.bos_id >= 0 ? m->tok.bos_id : -1,
            .progress = apr_progress_cb,
            .progress_ctx = &prog,
            .process_output = a.process_output,
            .ppl = a.no_ppl ? NULL : &ppl,
            .on_chunk = print_chunk_ppl,
            .start = a.n_in ? &start : NULL,
        };
        rc = apr_fwd_imatrix(f, ids, n, &io, &st, &err);
        apr_progress_end(&prog);
        if (!rc && !a.no_ppl) {
            double pv, pe;
            apr_imatrix_ppl_final(&ppl, &pv, &pe);
            if (isnan(pe))
                printf("\nUnexpected negative standard deviation of log(prob)\n");
            else
                printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", pv, pe);
            fflush(stdout);
        }
        if (!rc && a.process_output && apr_fwd_output_tied(f))
            fprintf(stderr, "apr imatrix: --process-output: the output matrix is the token embedding (tied); "
                            "llama-imatrix collects output.weight only, so there is no output entry\n");
    }
    /* the loaded files' datasets, then this text (llama-imatrix's m_datasets) */
    for (uint32_t k = 0; !rc && k < start.n_datasets; k++)
        rc = apr_imatrix_stats_add_dataset(&st, start.datasets[k], &err);
    if (!rc)
        rc = apr_imatrix_stats_add_dataset(&st, a.text, &err);
    if (!rc)
        rc = write_out(&a, &st, &err);
    if (rc)
        fprintf(stderr, "apr imatrix: %s\n", err.msg);
    apr_imatrix_stats_free(&st);
    apr_imatrix_stats_free(&start);
    apr_fwd_free(f);
    free(ids);
    free(text);
    apr_model_free(m);
    return rc ? 2 : 0;
}
