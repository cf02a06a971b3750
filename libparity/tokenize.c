/* tokenize.c - evaluation tokens from the models' own tokenizers (both must
 * agree), or deterministic ids when neither model carries a vocabulary.
 */
#include "parity.h"
#include "tok.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: deterministic ids for models without a tokenizer */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int encode_with(const apr_model *m, const char *text, bool parse_special, int32_t **ids, size_t *n,
                       apr_err *err)
{
    apr_tok *t = NULL;
    int rc = apr_tok_load(&t, m, err);
    if (rc)
        return rc;
    rc = apr_tok_encode_ex(t, text, true, parse_special, ids, n, err);
    apr_tok_free(t);
    return rc;
}

int apr_parity_tokens(const apr_model *src, const apr_model *dst, const char *text,
                      size_t n_fallback, int32_t **ids, size_t *n, char *note, size_t note_cap,
                      apr_err *err)
{
    return apr_parity_tokens_ex(src, dst, text, false, n_fallback, ids, n, note, note_cap, err);
}

int apr_parity_tokens_ex(const apr_model *src, const apr_model *dst, const char *text, bool parse_special,
                         size_t n_fallback, int32_t **ids, size_t *n, char *note, size_t note_cap,
                         apr_err *err)
{
    *ids = NULL;
    *n = 0;
    const uint32_t vocab = src->has_cfg ? src->cfg.vocab : 0;
    if (vocab == 0)
        return apr_err_set(err, APR_E_FORMAT, "SRC has no usable model config (vocab size unknown)");
    const bool src_tok = src->has_tok && src->tok.n_tokens > 0;
    const bool dst_tok = dst->has_tok && dst->tok.n_tokens > 0;
    const char *what = text ? "prompt" : "built-in text";
    if (!text)
        text = apr_parity_builtin_text();

    if (!src_tok) {
        if (dst_tok)
            return apr_err_set(err, APR_E_MISMATCH,
                               "DST has a tokenizer but SRC has none: pass --tokens FILE");
        if (what[0] == 'p')
            return apr_err_set(err, APR_E_ARG,
                               "--prompt needs a tokenizer and neither model has one; use --tokens FILE");
        int32_t *v = malloc((n_fallback ? n_fallback : 1) * sizeof *v);
        if (!v)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        uint64_t s = 0x5eed;
        for (size_t i = 0; i < n_fallback; i++)
            v[i] = (int32_t)(splitmix64(&s) % vocab);
        *ids = v;
        *n = n_fallback;
        snprintf(note, note_cap, "%zu pseudo-random ids (seed 0x5eed): the models have no tokenizer",
                 n_fallback);
        return 0;
    }

    int32_t *a = NULL;
    size_t na = 0;
    apr_err e2 = {0};
    int rc = encode_with(src, text, parse_special, &a, &na, &e2);
    if (rc)
        return apr_err_set(err, rc, "SRC tokenizer: %s", e2.msg);
    if (na == 0) {
        free(a);
        return apr_err_set(err, APR_E_ARG, "the %s encodes to no tokens", what);
    }
    for (size_t i = 0; i < na; i++) {
        if (a[i] < 0 || (uint32_t)a[i] >= vocab) {
            int32_t bad = a[i];
            free(a);
            return apr_err_set(err, APR_E_FORMAT, "SRC tokenizer produced id %d outside vocab %u",
                               bad, vocab);
        }
    }
    if (dst_tok) {
        int32_t *b = NULL;
        size_t nb = 0;
        rc = encode_with(dst, text, parse_special, &b, &nb, &e2);
        if (rc) {
            free(a);
            return apr_err_set(err, rc, "DST tokenizer: %s", e2.msg);
        }
        size_t i = 0;
        while (i < na && i < nb && a[i] == b[i])
            i++;
        if (i < na || i < nb) {
            apr_err_set(err, APR_E_MISMATCH,
                        "SRC and DST tokenize the %s differently: %zu vs %zu tokens, first "
                        "difference at token %zu (%d vs %d)",
                        what, na, nb, i, i < na ? a[i] : -1, i < nb ? b[i] : -1);
            free(a);
            free(b);
            return APR_E_MISMATCH;
        }
        free(b);
    }
    *ids = a;
    *n = na;
    snprintf(note, note_cap, "%s, %zu tokens (SRC tokenizer%s)", what, na,
             dst_tok ? ", DST agrees" : "; DST has none");
    return 0;
}


/* ---------------------------------------------------------------- a text file, streamed */

/* Where a block of text may be cut without changing its tokens: after a
 * newline that a non-whitespace byte follows. No pre-token of the byte-level
 * BPE regexes (GPT-2's, Qwen2's, LLaMA 3's) spans such a place: the patterns
 * that take a newline end at it or continue only with whitespace. Returns
 * the cut (bytes to keep), 0 when the block has none. */
static size_t safe_cut(const char *b, size_t n)
{
    for (size_t i = n; i >= 2; i--)
        if (b[i - 2] == '\n' && !isspace((unsigned char)b[i - 1]))
            return i - 1;
    return 0;
}

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
} idbuf;

static int idbuf_add(idbuf *b, const int32_t *x, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, x, n * sizeof *x);
    b->n += n;
    return 0;
}

/* Encode one piece with SRC (and DST, which must agree) and append the ids. */
static int encode_piece(const apr_tok *ts, const apr_tok *td, const char *text, size_t at, idbuf *out,
                        uint32_t vocab, apr_err *err)
{
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    apr_err e2 = {0};
    int rc = apr_tok_encode(ts, text, false, &a, &na, &e2);
    if (rc)
        return apr_err_set(err, rc, "SRC tokenizer: %s", e2.msg);
    for (size_t i = 0; i < na; i++)
        if (a[i] < 0 || (uint32_t)a[i] >= vocab) {
            rc = apr_err_set(err, APR_E_FORMAT, "SRC tokenizer produced id %d outside vocab %u", a[i], vocab);
            goto out;
        }
    if (td) {
        if ((rc = apr_tok_encode(td, text, false, &b, &nb, &e2))) {
            rc = apr_err_set(err, rc, "DST tokenizer: %s", e2.msg);
            goto out;
        }
        size_t i = 0;
        while (i < na && i < nb && a[i] == b[i])
            i++;
        if (i < na || i < nb) {
            rc = apr_err_set(err, APR_E_MISMATCH,
                             "SRC and DST tokenize the text differently: first difference at token %zu (%d vs %d)",
                             out->n + i, i < na ? a[i] : -1, i < nb ? b[i] : -1);
            goto out;
        }
    }
    if (idbuf_add(out, a, na))
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory (%zu tokens of text at byte %zu)", out->n, at);
out:
    free(a);
    free(b);
    return rc;
}

int apr_parity_tokens_text_file(const apr_model *src, const apr_model *dst, const char *path, size_t max_tokens,
                                size_t block, int32_t **ids, size_t *n, char *note, size_t note_cap, apr_err *err)
{
    *ids = NULL;
    *n = 0;
    if (!block)
        block = (size_t)1 << 20;
    const uint32_t vocab = src->has_cfg ? src->cfg.vocab : 0;
    if (vocab == 0)
        return apr_err_set(err, APR_E_FORMAT, "SRC has no usable model config (vocab size unknown)");
    if (!(src->has_tok && src->tok.n_tokens > 0))
        return apr_err_set(err, APR_E_ARG, "--text needs a tokenizer and SRC has none; use --tokens FILE");
    /* SentencePiece merges over the whole text (and adds a prefix space to
     * every piece it is given): it gets the text in one piece */
    const bool whole = strcmp(src->tok.model, "gpt2") != 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    apr_tok *ts = NULL, *td = NULL;
    idbuf out = {0};
    char *buf = NULL;
    size_t len = 0, cap = 0, at = 0; /* bytes in buf; file offset of buf[0] */
    bool eof = false, any = false;
    int rc = apr_tok_load(&ts, src, err);
    if (!rc && dst->has_tok && dst->tok.n_tokens > 0)
        rc = apr_tok_load(&td, dst, err);
    /* BOS as the model wants it (the text's pieces are encoded without specials) */
    if (!rc && src->tok.add_bos && src->tok.bos_id >= 0 && idbuf_add(&out, &src->tok.bos_id, 1))
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
    while (!rc && !(eof && len == 0)) {
        if (!eof) {
            if (len + block + 1 > cap) {
                char *nb = realloc(buf, len + block + 1);
                if (!nb) {
                    rc = apr_err_set(err, APR_E_NOMEM, "out of memory reading %s", path);
                    break;
                }
                buf = nb;
                cap = len + block + 1;
            }
            const size_t got = fread(buf + len, 1, block, f);
            if (ferror(f)) {
                rc = apr_err_set(err, APR_E_IO, "%s: read error at byte %zu", path, at + len);
                break;
            }
            const char *nul = memchr(buf + len, 0, got);
            if (nul) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: NUL byte at offset %zu: not a text file", path,
                                 at + (size_t)(nul - buf));
                break;
            }
            any |= got > 0;
            len += got;
            eof = got < block;
            if (!eof && whole)
                continue;
        }
        /* the whole rest at the end of the file, else up to the last safe cut */
        const size_t cut = eof ? len : safe_cut(buf, len);
        if (cut == 0)
            continue; /* no safe place yet: read more */
        const char keep = buf[cut];
        buf[cut] = 0;
        rc = encode_piece(ts, td, buf, at, &out, vocab, err);
        buf[cut] = keep;
        memmove(buf, buf + cut, len - cut);
        at += cut;
        len -= cut;
        if (max_tokens && out.n >= max_tokens)
            break; /* enough for the chunks asked for: the rest is never read */
    }
    fclose(f);
    apr_tok_free(ts);
    apr_tok_free(td);
    free(buf);
    if (!rc && !any)
        rc = apr_err_set(err, APR_E_ARG, "%s is empty", path);
    if (!rc && out.n <= (size_t)(src->tok.add_bos && src->tok.bos_id >= 0))
        rc = apr_err_set(err, APR_E_ARG, "%s encodes to no tokens", path);
    if (rc) {
        free(out.v);
        return rc;
    }
    *ids = out.v;
    *n = out.n;
    snprintf(note, note_cap, "%s, %zu tokens%s (SRC tokenizer%s)", path, out.n,
             max_tokens && out.n >= max_tokens ? " read (enough for the chunks asked for)" : "",
             td ? ", DST agrees" : "; DST has none");
    return 0;
}
