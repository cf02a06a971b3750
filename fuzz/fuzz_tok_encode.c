/* fuzz_tok_encode.c - libFuzzer harness for the encoder / decoder
 * (libtok/encode.c) on hostile vocabularies: the vocabulary itself comes from
 * the input, so tokens may repeat, be empty or be invalid UTF-8, byte tokens
 * may be malformed, merges may name tokens that do not exist, and the text
 * to encode may be invalid UTF-8.
 *
 * Input layout (all text, so seeds are readable):
 *   byte 0   flags: bit 0 BPE ("gpt2") else SentencePiece ("llama"); bit 1
 *            add_special; bit 2 parse_special; bit 3 add_space_prefix off;
 *            bits 4..7 pick tokenizer.ggml.pre from PRES
 *   byte 1-3 bos, eos and unknown token ids ('~' = none; else the byte - '0')
 *   then     token lines, an empty line, merge lines, an empty line, the text
 *            (up to a NUL). A token line is TEXT, or TEXT\tT with T a token
 *            type digit; SentencePiece scores are minus the line number.
 * Every id encode gives must be a token of the vocabulary; decode of each id
 * (into a short and a long buffer) must agree on the length.
 * Run: build-fuzz/fuzz/fuzz_tok_encode -max_total_time=30 WORKDIR fuzz/corpus/tok_encode
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"
#include "fuzz_tok.h"

#define MAX_LINES 4096

static const char *const PRES[16] = {"default", "gpt-2",  "llama3",         "llama-bpe", "smaug-bpe", "qwen2",
                                     "qwen35",  "starcoder", "falcon",      "deepseek-coder", "deepseek-llm",
                                     "refact",  "command-r", "mpt",         "",          "no-such-pre"};

typedef struct lines {
    apr_str *s;
    int32_t *type;
    float *score;
    uint64_t n;
} lines;

/* Lines of [p, end) up to an empty line (or the end); *p moves past it. */
static int read_lines(const uint8_t **p, const uint8_t *end, bool typed, lines *out)
{
    out->s = calloc(MAX_LINES, sizeof *out->s);
    out->type = calloc(MAX_LINES, sizeof *out->type);
    out->score = calloc(MAX_LINES, sizeof *out->score);
    if (!out->s || !out->type || !out->score)
        return -1;
    while (*p < end && out->n < MAX_LINES) {
        const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
        const uint8_t *e = nl ? nl : end;
        size_t len = (size_t)(e - *p);
        *p = nl ? nl + 1 : end;
        if (len == 0)
            break;
        int32_t type = 1;
        const uint8_t *s = e - len;
        if (typed && len >= 2 && s[len - 2] == '\t' && s[len - 1] >= '0' && s[len - 1] <= '9') {
            type = s[len - 1] - '0';
            len -= 2;
        }
        apr_str *t = &out->s[out->n];
        if (!(t->s = malloc(len + 1)))
            return -1;
        memcpy(t->s, s, len);
        t->s[len] = 0;
        t->len = len;
        out->type[out->n] = type;
        out->score[out->n] = -(float)out->n;
        out->n++;
    }
    return 0;
}

static void lines_free(lines *l)
{
    for (uint64_t i = 0; l->s && i < l->n; i++)
        free(l->s[i].s);
    free(l->s);
    free(l->type);
    free(l->score);
}

static int set_array(apr_model *m, const char *key, apr_kv_type t, uint64_t n, void *arr)
{
    apr_kv kv = {.key = (char *)key, .type = APR_KV_ARRAY, .arr_type = t, .count = n, .arr = arr};
    return apr_model_set_kv(m, &kv);
}

static int set_id(apr_model *m, const char *key, uint8_t c)
{
    return c == '~' ? 0 : apr_model_set_kv_u32(m, key, (uint32_t)(uint8_t)(c - '0'));
}

static void run(const apr_model *m, uint8_t flags, const char *text)
{
    apr_tok *t = fuzz_tok_load(m);
    if (!t)
        return;
    apr_err err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    if (apr_tok_encode_ex(t, text, flags & 2, flags & 4, &ids, &n, &err) == 0) {
        char small[4], big[256];
        int32_t prev = -1;
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || (uint32_t)ids[i] >= m->tok.n_tokens)
                abort();
            size_t a = apr_tok_decode(t, prev, ids[i], small, sizeof small);
            size_t b = apr_tok_decode(t, prev, ids[i], big, sizeof big);
            size_t c = apr_tok_decode(t, APR_TOK_CONTINUE, ids[i], big, sizeof big);
            if (a != b || c < b)
                abort();
            prev = ids[i];
        }
        free(ids);
    } else if (ids || err.msg[0] == 0) {
        abort();
    }
    char buf[8];
    if (apr_tok_decode(t, -1, -1, buf, sizeof buf) != 0 ||
        apr_tok_decode(t, -1, (int32_t)m->tok.n_tokens, buf, sizeof buf) != 0)
        abort(); /* ids outside the vocabulary decode to nothing */
    (void)apr_tok_bos(t);
    (void)apr_tok_eos(t);
    apr_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    const uint8_t flags = data[0];
    const uint8_t *p = data + 4, *end = data + size;
    lines toks = {0}, merges = {0};
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    char *text = NULL;
    if (!m || read_lines(&p, end, true, &toks) || read_lines(&p, end, false, &merges) ||
        !(text = strndup((const char *)p, (size_t)(end - p))))
        goto done;
    const bool bpe = flags & 1;
    int rc = apr_model_set_kv_str(m, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    rc = rc || apr_model_set_kv_str(m, "tokenizer.ggml.pre", PRES[flags >> 4]);
    if (toks.n) {
        rc = rc || set_array(m, "tokenizer.ggml.tokens", APR_KV_STRING, toks.n, toks.s);
        rc = rc || set_array(m, "tokenizer.ggml.token_type", APR_KV_I32, toks.n, toks.type);
        if (!bpe)
            rc = rc || set_array(m, "tokenizer.ggml.scores", APR_KV_F32, toks.n, toks.score);
    }
    if (merges.n)
        rc = rc || set_array(m, "tokenizer.ggml.merges", APR_KV_STRING, merges.n, merges.s);
    rc = rc || set_id(m, "tokenizer.ggml.bos_token_id", data[1]);
    rc = rc || set_id(m, "tokenizer.ggml.eos_token_id", data[2]);
    rc = rc || set_id(m, "tokenizer.ggml.unknown_token_id", data[3]);
    if (flags & 8)
        rc = rc || apr_model_set_kv_bool(m, "tokenizer.ggml.add_space_prefix", false);
    if (rc)
        goto done;
    apr_err err = {0};
    apr_model_derive(m, &err); /* no architecture: only the tokenizer view matters */
    if (m->has_tok)
        run(m, flags, text);
done:
    free(text);
    lines_free(&toks);
    lines_free(&merges);
    apr_model_free(m);
    return 0;
}
