/* fuzz_hf_tokenizer.c - libFuzzer harness for the tokenizer.json -> GGUF
 * tokenizer.* KVs mapping (libtok/hftok.c, as convert_hf_to_gguf.py maps the
 * vocab, merges, added tokens and pre-tokenizer), then the encoder on what
 * it gave (a fixed text with invalid UTF-8 and special-token spellings,
 * every id in range) and the way back (apr_tok_hf_from_model), whose
 * tokenizer.json must map again.
 * The input is one tokenizer.json.
 * Run: build-fuzz/fuzz/fuzz_hf_tokenizer -max_total_time=30 WORKDIR fuzz/corpus/hf_tokenizer
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "fuzz_check.h"
#include "fuzz_tok.h"

static const char TEXT[] = "Hello world 123 4567 it's  <s></s><|im_start|>\n\t\xC3\xA9\xE2\x96\x81 \xFF\xC0\x80\xED\xA0\x80 "
                           "\xF0\x9F\x98\x80 x";

/* tokenizer.json (+ tokenizer_config.json) -> KVs in a fresh model, derived;
 * NULL when the mapping refuses (with a message). */
static apr_model *map_tokenizer(const json_t *tok, const json_t *tok_config)
{
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (!m)
        return NULL;
    apr_tok_hf f = {.tokenizer = tok, .tokenizer_config = tok_config};
    apr_err err = {0};
    if (apr_tok_hf_to_kvs(m, &f, &err) != 0) {
        if (err.msg[0] == 0)
            abort();
        apr_model_free(m);
        return NULL;
    }
    apr_model_derive(m, NULL); /* no architecture: only the tokenizer view matters */
    return m;
}

static void encode(const apr_model *m)
{
    apr_tok *t = fuzz_tok_load(m);
    if (!t)
        return;
    apr_err err = {0};
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (apr_tok_encode_ex(t, TEXT, special, special, &ids, &n, &err) != 0) {
            if (ids || err.msg[0] == 0)
                abort();
            continue;
        }
        char buf[64];
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || (uint32_t)ids[i] >= m->tok.n_tokens)
                abort();
            (void)apr_tok_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
        }
        free(ids);
    }
    apr_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return 0;
    }
    apr_model *m = map_tokenizer(j, NULL);
    if (m && m->has_tok) {
        encode(m);
        json_t *tok = NULL, *tok_config = NULL;
        apr_spm *spm = NULL;
        apr_err err = {0};
        if (apr_tok_hf_from_model(m, &tok, &tok_config, &spm, &err) == 0) {
            if (tok) {
                apr_model *back = map_tokenizer(tok, tok_config);
                if (!back)
                    abort(); /* the tokenizer.json we write from a mapped vocabulary maps again */
                apr_model_free(back);
            }
        } else if (err.msg[0] == 0) {
            abort();
        }
        json_decref(tok);
        json_decref(tok_config);
        apr_spm_destroy(spm);
    }
    apr_model_free(m);
    json_decref(j);
    return 0;
}
