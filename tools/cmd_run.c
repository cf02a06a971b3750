/* cmd_run.c - `apr run MODEL --prompt TEXT`: generation with the built-in
 * forward pass (greedy by default), printing the prompt as llama.cpp's
 * llama-cli echoes it, then the continuation (--no-echo: the continuation only).
 *
 * Hidden options for tests: --dump-logits FILE writes the prompt's logits
 * (n_prompt x vocab little-endian f32, position-major); --print-ids prints
 * the prompt's token ids and the generated ids on stderr; --tokenize-only
 * prints the prompt's ids on stdout and stops (works on vocab-only files).
 *
 * --chat TEXT / --messages FILE: the prompt is the model's chat template
 * rendered around the conversation (libtok's apr_chat_render, as
 * transformers' apply_chat_template), tokenized with its special tokens and
 * no added BOS; generation stops at the first end-of-turn token. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "progress.h"
#include "formats.h"
#include "forward.h"
#include "tok.h"

typedef struct run_opts {
    const char *model, *prompt, *dump_logits;
    const char *chat, *system, *messages, *template_name;
    bool no_gen_prompt, render_only;
    int n_predict;
    int threads;
    int device; /* apr_device */
    bool trace, print_ids, no_echo, tokenize_only, special;
    double temp;
    uint64_t seed;
    uint32_t ctx;
} run_opts;

static const char usage[] =
    "usage: apr run MODEL --prompt TEXT [options]\n"
    "       apr run MODEL --chat TEXT | --messages FILE [options]\n";

static const cli_name devices[] = {{"auto", APR_DEV_AUTO}, {"cpu", APR_DEV_CPU}, {"cuda", APR_DEV_CUDA}, {NULL, 0}};

/* CLI_OK, or cli_parse's CLI_HELP / CLI_FAIL (and then the message is out). */
static int parse(int argc, char **argv, run_opts *o)
{
    *o = (run_opts){.n_predict = 64, .device = APR_DEV_AUTO, .seed = 42};
    const cli_opt opts[] = {
        OPT_STR("--prompt", "-p", &o->prompt, "TEXT", "the prompt text"),
        OPT_STR("--chat", NULL, &o->chat, "TEXT", "a user message, wrapped in the model's chat template"),
        OPT_STR("--system", NULL, &o->system, "TEXT", "a system message before it"),
        OPT_STR("--messages", NULL, &o->messages, "FILE",
                "the conversation as JSON: [{\"role\", \"content\"}, ...], or an\n"
                "object with \"messages\" and other template variables (\"tools\", ...)"),
        OPT_STR("--template", NULL, &o->template_name, "NAME", "the named template tokenizer.chat_template.NAME"),
        OPT_FLAG("--no-generation-prompt", NULL, &o->no_gen_prompt, "render without add_generation_prompt"),
        OPT_FLAG("--render-only", NULL, &o->render_only, "print the rendered prompt and stop"),
        OPT_INT("--n-predict", "-n", &o->n_predict, 0, 1 << 20, "N",
                "tokens to generate (default 64; stops early at EOS)"),
        OPT_INT("--threads", "-t", &o->threads, 1, 256, "N", "CPU threads (default: all cores)"),
        OPT_ENUM("--device", NULL, &o->device, devices, "default auto"),
        OPT_DOUBLE("--temp", NULL, &o->temp, 0.0, 100.0, false, "T",
                   "0 = greedy (default); > 0 samples softmax(logits / T)"),
        OPT_U64("--seed", NULL, &o->seed, 0, UINT64_MAX, "S", "sampling seed (default 42)"),
        OPT_U32("--ctx", NULL, &o->ctx, 1, 1u << 20, "N", "KV cache positions (default min(model context, 2048))"),
        OPT_FLAG("--no-echo", NULL, &o->no_echo, "print only the continuation, not the prompt first"),
        OPT_FLAG("--special", NULL, &o->special,
                 "control tokens written in the prompt (<|im_start|>, ...) are\n"
                 "those tokens, not text (llama.cpp's parse_special)"),
        OPT_FLAG("--trace", NULL, &o->trace, "print per-layer activation statistics of the prompt (stderr)"),
        /* hidden, for tests (see the top of this file) */
        OPT_STR("--dump-logits", NULL, &o->dump_logits, "FILE", NULL),
        OPT_FLAG("--tokenize-only", NULL, &o->tokenize_only, NULL),
        OPT_FLAG("--print-ids", NULL, &o->print_ids, NULL),
    };
    const cli_cmd cmd = {.name = "run", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 1,
                         .max_pos = 1};
    cli_args args;
    const int rc = cli_parse(&cmd, argc, argv, &args);
    if (rc)
        return rc;
    o->model = args.pos[0];
    const int sources = !!o->prompt + !!o->chat + !!o->messages;
    if (sources != 1) {
        fprintf(stderr, "apr run: give one of --prompt, --chat, --messages\n");
        cli_help(stderr, &cmd);
        return CLI_FAIL;
    }
    if (o->system && !o->chat) {
        fprintf(stderr, "apr run: --system goes with --chat\n");
        return CLI_FAIL;
    }
    if ((o->template_name || o->no_gen_prompt || o->render_only) && o->prompt) {
        fprintf(stderr, "apr run: --template, --no-generation-prompt and --render-only need --chat or --messages\n");
        return CLI_FAIL;
    }
    return CLI_OK;
}

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return (int32_t)best;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int32_t sample(const float *x, uint32_t n, double temp, uint64_t *rng)
{
    if (temp <= 0.0)
        return argmax(x, n);
    const int32_t best = argmax(x, n);
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp(((double)x[i] - x[best]) / temp);
    double r = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * sum;
    for (uint32_t i = 0; i < n; i++) {
        r -= exp(((double)x[i] - x[best]) / temp);
        if (r < 0.0)
            return (int32_t)i;
    }
    return best;
}

static void print_piece(const apr_tok *tok, int32_t prev, int32_t id)
{
    char piece[256];
    const size_t len = apr_tok_decode(tok, prev, id, piece, sizeof piece);
    if (len <= sizeof piece) {
        fwrite(piece, 1, len, stdout);
        return;
    }
    char *big = malloc(len); /* a long token: decode again into a buffer of its size */
    if (big) {
        fwrite(big, 1, apr_tok_decode(tok, prev, id, big, len), stdout);
        free(big);
    }
}

static void print_trace(const apr_trace *t)
{
    fprintf(stderr, "%-5s %-9s %13s %13s %13s %13s %9s\n", "layer", "step", "mean", "std", "min", "max",
            "nonfinite");
    for (uint32_t l = 0; l < t->n_layers; l++)
        for (int s = 0; s < APR_TR_COUNT; s++) {
            const apr_stats *st = &t->s[l * APR_TR_COUNT + s];
            fprintf(stderr, "%-5u %-9s %13.6g %13.6g %13.6g %13.6g %9" PRIu64 "\n", l,
                    apr_trace_step_name((apr_trace_step)s), st->mean, st->std, st->min, st->max,
                    st->nonfinite);
        }
}

static int write_logits(const char *path, const float *x, size_t n, apr_err *err)
{
    apr_outfile f;
    int rc = apr_outfile_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = apr_outfile_write(&f, x, n * sizeof *x, err)) || (rc = apr_outfile_commit(&f, err))) {
        apr_outfile_abort(&f);
        return rc;
    }
    return 0;
}

/* The prompt in batches of PREFILL_BATCH tokens with a progress line on a
 * terminal (the logits do not depend on the batching: the forward pass fixes
 * every sum's order by the layout); only the last token's logits are kept. */
#define PREFILL_BATCH 64u

static int prefill(apr_fwd *f, const int32_t *ids, size_t n, float *logits, apr_err *err)
{
    apr_progress p;
    apr_progress_start(&p, "prefill", "tokens", n, n > PREFILL_BATCH);
    int rc = 0;
    for (size_t b = 0; b < n && !rc; b += PREFILL_BATCH) {
        const uint32_t nb = (uint32_t)(n - b < PREFILL_BATCH ? n - b : PREFILL_BATCH);
        rc = apr_fwd_eval_last(f, ids + b, nb, b + nb == n ? logits : NULL, NULL, err);
        apr_progress_update(&p, b + nb);
    }
    apr_progress_end(&p);
    return rc;
}

/* The template variables of --chat / --messages. */
static int chat_vars(const run_opts *o, json_t **out, apr_err *err)
{
    json_t *vars = NULL;
    if (o->messages) {
        json_error_t je;
        json_t *j = json_load_file(o->messages, JSON_REJECT_DUPLICATES, &je);
        if (!j)
            return apr_err_set(err, APR_E_FORMAT, "%s: invalid JSON at line %d: %s", o->messages, je.line, je.text);
        vars = json_is_array(j) ? json_pack("{s:o}", "messages", j) : j;
        if (!json_is_object(vars) || !json_is_array(json_object_get(vars, "messages"))) {
            json_decref(vars);
            return apr_err_set(err, APR_E_FORMAT, "%s: expected a list of messages or an object with \"messages\"",
                               o->messages);
        }
    } else {
        json_t *msgs = json_array();
        if (msgs && o->system)
            json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", o->system));
        if (msgs)
            json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", o->chat));
        vars = msgs ? json_pack("{s:o}", "messages", msgs) : NULL;
        if (!vars || json_array_size(msgs) != (o->system ? 2u : 1u)) {
            json_decref(vars);
            return apr_err_set(err, APR_E_ARG, "--chat / --system: not valid UTF-8 text (or out of memory)");
        }
    }
    if (!json_object_get(vars, "add_generation_prompt") &&
        json_object_set_new(vars, "add_generation_prompt", json_boolean(!o->no_gen_prompt))) {
        json_decref(vars);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    *out = vars;
    return 0;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return cli_exit_status(rc);

    apr_err err = {0};
    apr_model *m = NULL;
    apr_tok *tok = NULL;
    apr_fwd *f = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    apr_trace tr = {0};
    int ret = 2;

    if (apr_model_open(&m, o.model, NULL, &err))
        goto fail;
    if (apr_tok_load(&tok, m, &err))
        goto fail;
    size_t n_ids = 0;
    const bool chat = !o.prompt;
    if (chat) {
        json_t *vars = NULL;
        char *text = NULL;
        size_t text_len = 0;
        if (chat_vars(&o, &vars, &err))
            goto fail;
        rc = apr_chat_render(m, o.template_name, vars, &text, &text_len, &err);
        json_decref(vars);
        if (rc)
            goto fail;
        if (o.render_only) {
            fwrite(text, 1, text_len, stdout);
            free(text);
            ret = 0;
            goto done;
        }
        /* apply_chat_template(tokenize=True): the template wrote BOS itself */
        rc = apr_tok_encode_ex(tok, text, false, true, &ids, &n_ids, &err);
        free(text);
        if (rc)
            goto fail;
    } else if (apr_tok_encode_ex(tok, o.prompt, true, o.special, &ids, &n_ids, &err)) {
        goto fail;
    }
    if (o.tokenize_only) {
        for (size_t i = 0; i < n_ids; i++)
            printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        ret = 0;
        goto done;
    }
    if (!m->has_cfg) {
        apr_err_set(&err, APR_E_UNSUPPORTED, "%s: no supported architecture config (llama, qwen2)", o.model);
        goto fail;
    }
    if (!n_ids) {
        apr_err_set(&err, APR_E_ARG, "the prompt gives no tokens");
        goto fail;
    }
    apr_fwd_opts fo = {.n_threads = o.threads, .device = (apr_device)o.device, .max_ctx = o.ctx};
    if (apr_fwd_load(&f, m, &fo, &err))
        goto fail;
    const uint32_t vocab = apr_fwd_config(f)->vocab;
    if (n_ids > apr_fwd_max_ctx(f)) {
        apr_err_set(&err, APR_E_ARG, "the prompt has %zu tokens, the context holds %u", n_ids, apr_fwd_max_ctx(f));
        goto fail;
    }
    if (o.print_ids) {
        fprintf(stderr, "prompt ids:");
        for (size_t i = 0; i < n_ids; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    if (o.trace && apr_trace_init(&tr, apr_fwd_config(f)->n_layers, true)) {
        apr_err_set(&err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    const size_t n_logits = o.dump_logits ? n_ids * (size_t)vocab : vocab;
    logits = malloc(n_logits * sizeof *logits);
    if (!logits) {
        apr_err_set(&err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    if (o.dump_logits) {
        if (apr_fwd_eval(f, ids, (uint32_t)n_ids, logits, o.trace ? &tr : NULL, &err) ||
            write_logits(o.dump_logits, logits, n_logits, &err))
            goto fail;
        memmove(logits, logits + (n_ids - 1) * (size_t)vocab, vocab * sizeof *logits);
    } else if (o.trace) {
        if (apr_fwd_eval_last(f, ids, (uint32_t)n_ids, logits, &tr, &err))
            goto fail;
    } else if (prefill(f, ids, n_ids, logits, &err)) {
        goto fail;
    }
    if (o.trace)
        print_trace(&tr);

    /* Like llama.cpp's llama-cli: the prompt's pieces (control tokens such as
     * BOS print nothing; SentencePiece's prefix space is kept), then the
     * continuation. */
    if (!o.no_echo)
        for (size_t i = 0; i < n_ids; i++)
            print_piece(tok, APR_TOK_CONTINUE, ids[i]);
    fflush(stdout);
    uint64_t rng = o.seed;
    if (o.print_ids)
        fprintf(stderr, "generated ids:");
    for (int i = 0; i < o.n_predict; i++) {
        const int32_t next = sample(logits, vocab, o.temp, &rng);
        if (o.print_ids)
            fprintf(stderr, " %d", next);
        if (next == apr_tok_eos(tok) || (chat && apr_chat_is_end(m, next)))
            break;
        print_piece(tok, APR_TOK_CONTINUE, next);
        fflush(stdout);
        if (i + 1 == o.n_predict)
            break;
        if (apr_fwd_pos(f) >= apr_fwd_max_ctx(f)) {
            fprintf(stderr, "\napr run: context full (%u positions)\n", apr_fwd_max_ctx(f));
            break;
        }
        if (apr_fwd_eval_last(f, &next, 1, logits, NULL, &err))
            goto fail;
    }
    if (o.print_ids)
        fprintf(stderr, "\n");
    printf("\n");
    ret = 0;
    goto done;
fail:
    fprintf(stderr, "apr run: %s\n", err.msg[0] ? err.msg : "failed");
done:
    apr_trace_free(&tr);
    free(logits);
    free(ids);
    apr_fwd_free(f);
    apr_tok_free(tok);
    apr_model_free(m);
    return ret;
}
