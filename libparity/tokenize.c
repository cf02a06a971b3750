/* tokenize.c - evaluation tokens from the models' own tokenizers (both must
 * agree), or deterministic ids when neither model carries a vocabulary.
 */
#include "parity.h"
#include "tok.h"

#include <stdio.h>
#include <stdlib.h>

/* splitmix64: deterministic ids for models without a tokenizer */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int encode_with(const apr_model *m, const char *text, int32_t **ids, size_t *n, apr_err *err)
{
    apr_tok *t = NULL;
    int rc = apr_tok_load(&t, m, err);
    if (rc)
        return rc;
    rc = apr_tok_encode(t, text, true, ids, n, err);
    apr_tok_free(t);
    return rc;
}

int apr_parity_tokens(const apr_model *src, const apr_model *dst, const char *text,
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
    int rc = encode_with(src, text, &a, &na, &e2);
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
        rc = encode_with(dst, text, &b, &nb, &e2);
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

