/* hftok.c - HF tokenizer files (tokenizer.json, tokenizer_config.json,
 * added_tokens.json, chat_template.jinja, tokenizer.model) <-> the GGUF
 * tokenizer.* KVs.
 *
 * Reading follows llama.cpp's convert_hf_to_gguf.py (and gguf-py's vocab.py):
 *   tokenizer.json:
 *     Unigram (what we write for SentencePiece vocabs) -> model "llama", tokens
 *         and scores from the vocab list, byte pieces type 6, unk type 2,
 *         special added tokens type 3, other added tokens type 4;
 *     BPE with byte_fallback (llama-2 style) -> model "llama" as LlamaHfVocab:
 *         score -1000 for every token, bytes type 6, special tokens type 3;
 *     BPE without byte_fallback (GPT-2 / Qwen2 byte-level) -> model "gpt2" as
 *         get_vocab_base: vocab padded to config vocab_size with "[PAD<i>]"
 *         (type 5), added tokens type 3 when special (or looking special:
 *         <|...|>) else 4, merges, pre-tokenizer named from its regex.
 *   tokenizer.model: _set_vocab_sentencepiece (see map_spm).
 *   Special ids (bos, eos, unk, sep, pad, cls, mask) and add_*_token and the
 *   chat template as gguf-py's SpecialVocab finds them.
 * Writing builds the standard HF files from the KVs; what they cannot carry
 * travels in formats/hfmeta.c's apr_gguf records.
 */
#define _GNU_SOURCE
#include "tok.h"
#include "tok_pre.h"
#include "apr_json.h" /* apr_jb: the checked builder of tokenizer.json */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ small helpers */

static int set_u32(apr_model *m, const char *key, uint32_t v, apr_err *err)
{
    return apr_model_set_kv_u32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int set_str(apr_model *m, const char *key, const char *v, apr_err *err)
{
    return apr_model_set_kv_str(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int set_bool(apr_model *m, const char *key, bool v, apr_err *err)
{
    return apr_model_set_kv_bool(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

/* Set an array KV; arr is borrowed (deep-copied by apr_model_set_kv). */
static int set_array(apr_model *m, const char *key, apr_kv_type et, void *arr, uint64_t count, apr_err *err)
{
    apr_kv kv = {0};
    kv.key = (char *)key;
    kv.type = APR_KV_ARRAY;
    kv.arr_type = et;
    kv.arr = arr;
    kv.count = count;
    return apr_model_set_kv(m, &kv) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

/* config.json field as u32: 1 present, 0 absent (or null), <0 bad. */
static int cfg_u32(const json_t *cfg, const char *field, uint32_t *out, apr_err *err)
{
    const json_t *j = json_object_get(cfg, field);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > (json_int_t)UINT32_MAX)
        return apr_err_set(err, APR_E_FORMAT, "config.json: %s must be an integer in [0, 2^32)", field);
    *out = (uint32_t)json_integer_value(j);
    return 1;
}

/* ================================================================ tokenizer.json -> KVs */

/* The Split regexes of Qwen2's, Llama 3's and Qwen3.5's tokenizer.json */
#define QWEN2_REGEX                                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_REGEX                                                                                            \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN35_REGEX                                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct tok_build {
    uint32_t n;
    apr_str *tokens;
    float *scores;
    int32_t *types;
    bool *is_added, *is_special;
} tok_build;

static void tok_build_free(tok_build *b)
{
    if (b->tokens)
        for (uint32_t i = 0; i < b->n; i++)
            free(b->tokens[i].s);
    free(b->tokens);
    free(b->scores);
    free(b->types);
    free(b->is_added);
    free(b->is_special);
    memset(b, 0, sizeof *b);
}

static int tok_build_alloc(tok_build *b, uint32_t n, apr_err *err)
{
    b->n = n;
    b->tokens = calloc(n, sizeof *b->tokens);
    b->scores = calloc(n, sizeof *b->scores);
    b->types = calloc(n, sizeof *b->types);
    b->is_added = calloc(n, sizeof *b->is_added);
    b->is_special = calloc(n, sizeof *b->is_special);
    if (!b->tokens || !b->scores || !b->types || !b->is_added || !b->is_special)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    return 0;
}

static int tok_set(tok_build *b, json_int_t id, const json_t *text, const char *what, apr_err *err)
{
    if (id < 0 || (uint64_t)id >= b->n)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: %s id %lld out of range", what, (long long)id);
    if (!json_is_string(text))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: %s token %lld is not a string", what, (long long)id);
    if (b->tokens[id].s) {
        /* The same token listed in model.vocab and added_tokens is normal. */
        if (b->tokens[id].len == json_string_length(text) &&
            memcmp(b->tokens[id].s, json_string_value(text), b->tokens[id].len) == 0)
            return 0;
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: two different tokens have id %lld", (long long)id);
    }
    apr_str s;
    if (apr_json_to_str(text, &s, "tokenizer.json", err))
        return err ? err->code : APR_E_FORMAT;
    b->tokens[id] = s;
    return 0;
}

static bool is_byte_token(const apr_str *s)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    return s->len == 6 && memcmp(s->s, "<0x", 3) == 0 && s->s[5] == '>' && s->s[3] &&
           strchr(hex, s->s[3]) && s->s[4] && strchr(hex, s->s[4]);
}

static bool looks_special(const apr_str *s)
{
    const char *t = s->s;
    size_t n = s->len;
    if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") || !strcmp(t, "[@BOS@]"))
        return true;
    if (n >= 4 && memcmp(t, "<|", 2) == 0 && memcmp(t + n - 2, "|>", 2) == 0)
        return true;
    /* "<｜" ... "｜>" (fullwidth bar, deepseek-coder) */
    if (n >= 8 && memcmp(t, "<\xef\xbd\x9c", 4) == 0 && memcmp(t + n - 4, "\xef\xbd\x9c>", 4) == 0)
        return true;
    return n >= 8 && memcmp(t, "<unused", 7) == 0 && t[n - 1] == '>';
}

/* Largest id in model.vocab (object or Unigram list) and added_tokens. */
static int64_t max_token_id(const json_t *vocab, const json_t *added)
{
    int64_t mx = -1;
    if (json_is_object(vocab)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vocab, k, v)
            if (json_is_integer(v) && json_integer_value(v) > mx)
                mx = json_integer_value(v);
    } else if (json_is_array(vocab)) {
        mx = (int64_t)json_array_size(vocab) - 1;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (id > mx)
            mx = id;
    }
    return mx;
}

/* The string of a special-token entry in tokenizer_config.json ("<s>" or {"content": "<s>"}). */
static const char *special_entry(const json_t *tc, const char *field)
{
    const json_t *e = json_object_get(tc, field);
    if (json_is_object(e))
        e = json_object_get(e, "content");
    return json_string_value(e);
}

static int map_special_ids(apr_model *m, const apr_tok_hf *d, uint32_t n_vocab, apr_err *err)
{
    static const char *const types[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
    static const char *const keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id"};
    const json_t *added = json_object_get(d->tokenizer, "added_tokens");
    const json_t *tc = d->tokenizer_config;
    int rc;
    bool set[7] = {false};
    /* SpecialVocab: the tokenizer_config entry looked up among added_tokens... */
    for (int t = 0; t < 7 && tc; t++) {
        char field[32];
        snprintf(field, sizeof field, "%s_token", types[t]);
        const char *want = special_entry(tc, field);
        if (!want && t == 0)
            want = special_entry(tc, "cls_token"); /* bos falls back to cls */
        if (!want && t == 1)
            want = special_entry(tc, "sep_token"); /* eos falls back to sep */
        if (!want)
            continue;
        size_t i;
        json_t *a;
        json_array_foreach(added, i, a) {
            const char *c = json_string_value(json_object_get(a, "content"));
            const json_t *jid = json_object_get(a, "id");
            if (c && strcmp(c, want) == 0 && json_is_integer(jid)) {
                json_int_t id = json_integer_value(jid);
                if (id >= 0 && id < n_vocab) {
                    if ((rc = set_u32(m, keys[t], (uint32_t)id, err)))
                        return rc;
                    set[t] = true;
                }
                break;
            }
        }
    }
    /* ...then config.json's {typ}_token_id. */
    for (int t = 0; t < 7 && d->config; t++) {
        char field[32];
        snprintf(field, sizeof field, "%s_token_id", types[t]);
        const json_t *j = json_object_get(d->config, field);
        if (set[t] || !json_is_integer(j))
            continue;
        json_int_t id = json_integer_value(j);
        if (id < 0)
            return apr_err_set(err, APR_E_FORMAT, "config.json: %s is negative", field);
        if (id < n_vocab && (rc = set_u32(m, keys[t], (uint32_t)id, err)))
            return rc;
        set[t] = id < n_vocab;
    }
    /* Last resort (not in llama.cpp's converter, which would leave them unset):
     * generation_config.json's bos/eos ids (an int, or a list: the first). */
    for (int t = 0; t < 2 && d->gen_config; t++) {
        const json_t *j = json_object_get(d->gen_config, t ? "eos_token_id" : "bos_token_id");
        if (json_is_array(j))
            j = json_array_get(j, 0);
        if (set[t] || !json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) >= n_vocab)
            continue;
        if ((rc = set_u32(m, keys[t], (uint32_t)json_integer_value(j), err)))
            return rc;
    }
    return 0;
}


/* ================================================================ chat templates */

/* gguf-py's add_chat_template keeps a template name's ASCII letters and digits
 * and replaces every other character (a code point: one '_' per UTF-8
 * sequence) by '_'. */
static char *sanitize_template_name(const char *name)
{
    size_t n = strlen(name);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: its code point already gave one '_' */
        bool keep = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        out[o++] = keep ? (char)c : '_';
    }
    out[o] = 0;
    return out;
}

/* [{"name": ..., "template": ...}, ...]: "default" -> tokenizer.chat_template,
 * every other name -> tokenizer.chat_template.NAME, and the names (once each,
 * in order of first appearance) -> tokenizer.chat_templates. gguf-py skips an
 * entry whose name is empty or whose template is null; an entry it would
 * crash on (not an object, a name or template that is not a string) is
 * refused here. */
static int map_chat_template_list(apr_model *m, const json_t *list, apr_err *err)
{
    size_t n = json_array_size(list), n_names = 0;
    apr_str *names = calloc(n ? n : 1, sizeof *names);
    if (!names)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    const char *deflt = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const json_t *e = json_array_get(list, i);
        const json_t *jn = json_object_get(e, "name"), *jt = json_object_get(e, "template");
        if (!json_is_object(e) || (jn && !json_is_string(jn)) || (jt && !json_is_null(jt) && !json_is_string(jt))) {
            rc = apr_err_set(err, APR_E_FORMAT,
                             "chat_template entry %zu: not an object with a string \"name\" and \"template\"", i);
            break;
        }
        char *name = sanitize_template_name(jn ? json_string_value(jn) : "");
        if (!name) {
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            break;
        }
        if (!name[0] || !json_is_string(jt)) {
            free(name);
            continue;
        }
        if (!strcmp(name, "default")) {
            deflt = json_string_value(jt);
            free(name);
            continue;
        }
        size_t kl = strlen(name) + sizeof "tokenizer.chat_template.";
        char *key = malloc(kl);
        if (!key) {
            free(name);
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            break;
        }
        snprintf(key, kl, "tokenizer.chat_template.%s", name);
        rc = set_str(m, key, json_string_value(jt), err);
        free(key);
        bool seen = false;
        for (size_t k = 0; k < n_names && !seen; k++)
            seen = !strcmp(names[k].s, name);
        if (seen)
            free(name);
        else
            names[n_names++] = (apr_str){.s = name, .len = strlen(name)};
    }
    if (!rc && n_names)
        rc = set_array(m, "tokenizer.chat_templates", APR_KV_STRING, names, n_names, err);
    if (!rc && deflt)
        rc = set_str(m, "tokenizer.chat_template", deflt, err);
    for (size_t k = 0; k < n_names; k++)
        free(names[k].s);
    free(names);
    return rc;
}

/* The chat template(s) as gguf-py's SpecialVocab finds them: tokenizer_config's
 * "chat_template" when the key is there (null included), else the one
 * chat_template.jinja / chat_template.json gave (alt); none at all without a
 * non-empty tokenizer_config.json. A value that is neither a string nor a
 * list is ignored, as the converter does (it warns). */
static int map_chat_template(apr_model *m, const json_t *tc, const json_t *alt, apr_err *err)
{
    if (!json_is_object(tc) || json_object_size(tc) == 0)
        return 0;
    const json_t *ct = json_object_get(tc, "chat_template");
    if (!ct)
        ct = alt;
    if (json_is_string(ct))
        return set_str(m, "tokenizer.chat_template", json_string_value(ct), err);
    if (json_is_array(ct))
        return map_chat_template_list(m, ct, err);
    return 0;
}

static int map_add_flags_and_template(apr_model *m, const apr_tok_hf *d, apr_err *err)
{
    int rc;
    const json_t *tc = d->tokenizer_config;
    /* Crude parse of TemplateProcessing, as SpecialVocab does. */
    const json_t *pp = json_object_get(d->tokenizer, "post_processor");
    const json_t *procs = json_object_get(pp, "processors");
    size_t nproc = json_is_array(procs) ? json_array_size(procs) : (pp ? 1 : 0);
    const char *bos = special_entry(tc, "bos_token"), *cls = special_entry(tc, "cls_token");
    const char *eos = special_entry(tc, "eos_token");
    for (size_t i = 0; i < nproc; i++) {
        const json_t *p = json_is_array(procs) ? json_array_get(procs, i) : pp;
        const char *type = json_string_value(json_object_get(p, "type"));
        if (!type || strcmp(type, "TemplateProcessing") != 0)
            continue;
        const json_t *single = json_object_get(p, "single");
        size_t n = json_array_size(single);
        if (n <= 1)
            continue;
        const char *first = json_string_value(
            json_object_get(json_object_get(json_array_get(single, 0), "SpecialToken"), "id"));
        const char *last = json_string_value(
            json_object_get(json_object_get(json_array_get(single, n - 1), "SpecialToken"), "id"));
        if (first) {
            if (!tc)
                bos = first;
            bool v = (bos && !strcmp(first, bos)) || (cls && !strcmp(first, cls));
            if ((rc = set_bool(m, "tokenizer.ggml.add_bos_token", v, err)))
                return rc;
        }
        if (last) {
            if (!tc)
                eos = last;
            if ((rc = set_bool(m, "tokenizer.ggml.add_eos_token", eos && !strcmp(last, eos), err)))
                return rc;
        }
    }
    static const char *const types[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
    for (int t = 0; t < 7 && tc; t++) {
        char field[32], key[64];
        snprintf(field, sizeof field, "add_%s_token", types[t]);
        const json_t *j = json_object_get(tc, field);
        if (!json_is_boolean(j))
            continue;
        snprintf(key, sizeof key, "tokenizer.ggml.add_%s_token", types[t]);
        if ((rc = set_bool(m, key, json_is_true(j), err)))
            return rc;
    }
    return map_chat_template(m, tc, d->chat_template_alt, err);
}

/* GGUF merges are "a b" strings; the newer HF pair format [a, b] has spaces
 * inside parts encoded as U+0120 the way gguf-py does. */
static int map_merges(apr_model *m, const json_t *merges, apr_err *err)
{
    size_t n = json_array_size(merges);
    if (n == 0)
        return 0;
    apr_str *arr = calloc(n, sizeof *arr);
    if (!arr)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const json_t *e = json_array_get(merges, i);
        if (json_is_string(e)) {
            rc = apr_json_to_str(e, &arr[i], "tokenizer.json merges", err);
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            const json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            size_t la = json_string_length(a), lb = json_string_length(b);
            char *s = malloc(2 * (la + lb) + 2), *o = s;
            if (!s) {
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
                break;
            }
            for (int part = 0; part < 2; part++) {
                const json_t *p = part ? b : a;
                const char *c = json_string_value(p);
                for (size_t k = 0; k < json_string_length(p); k++) {
                    if (c[k] == ' ') { *o++ = (char)0xc4; *o++ = (char)0xa0; } /* U+0120 */
                    else *o++ = c[k];
                }
                if (!part)
                    *o++ = ' ';
            }
            *o = 0;
            arr[i].s = s;
            arr[i].len = (uint64_t)(o - s);
        } else {
            rc = apr_err_set(err, APR_E_FORMAT, "tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", i);
        }
    }
    if (!rc)
        rc = set_array(m, "tokenizer.ggml.merges", APR_KV_STRING, arr, n, err);
    for (size_t i = 0; i < n; i++)
        free(arr[i].s);
    free(arr);
    return rc;
}

/* DeepSeek LLM's letters and symbols, and CJK runs (their tokenizer.json;
 * llama.cpp's llama-vocab.cpp copies them) */
#define DEEPSEEK_LETTERS \
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"\
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"\
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-"\
    "\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"\
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-"\
    "\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113"\
    "\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149"\
    "\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"\
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-"\
    "\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0"\
    "-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"
#define DEEPSEEK_SYMBOLS "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
#define CJK_RUNS "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

/* One HF pre-tokenizer step, as apr compares and writes them. */
typedef enum { PS_SPLIT, PS_BYTELEVEL, PS_DIGITS, PS_PUNCT } pre_step_kind;
typedef struct pre_step {
    pre_step_kind kind;
    const char *regex; /* PS_SPLIT: behavior Isolated, not inverted */
    bool flag;         /* PS_BYTELEVEL: use_regex; PS_DIGITS: individual_digits */
} pre_step;
#define MAX_PRE_STEPS 8

/* tokenizer.json pre_tokenizer <-> tokenizer.ggml.pre: the structure of the
 * reference model's tokenizer.json for the name llama.cpp's converter gives
 * it. The converter itself hashes the tokenization of a fixed text (chkhsh),
 * which only knows the released vocabularies it lists; a structure names the
 * same regex list in llama.cpp for any vocabulary. Names that share a
 * structure (command-r and refact are starcoder's; mpt, olmo and jais are
 * gpt-2's) get this one: llama.cpp tokenizes them alike (encode.c's
 * PRE_DEFS rows, which also say which form another name is written as).
 * ignore_merges: model.ignore_merges must be this (-1: either), the only
 * difference between Llama 3's llama-bpe and smaug-bpe. Read both ways:
 * detect_pre, and GGUF -> tokenizer.json (pre_tokenizer_json). */
static const struct pre_form {
    const char *name;
    int ignore_merges;
    pre_step steps[MAX_PRE_STEPS];
} PRE_FORMS[] = {
    {"gpt-2", -1, {{PS_BYTELEVEL, NULL, true}}},
    {"llama-bpe", 1, {{PS_SPLIT, LLAMA3_REGEX, false}, {PS_BYTELEVEL, NULL, false}}},
    {"smaug-bpe", 0, {{PS_SPLIT, LLAMA3_REGEX, false}, {PS_BYTELEVEL, NULL, false}}},
    {"qwen2", -1, {{PS_SPLIT, QWEN2_REGEX, false}, {PS_BYTELEVEL, NULL, false}}},
    {"qwen35", -1, {{PS_SPLIT, QWEN35_REGEX, false}, {PS_BYTELEVEL, NULL, false}}},
    {"starcoder", -1, {{PS_DIGITS, NULL, true}, {PS_BYTELEVEL, NULL, true}}},
    {"falcon", -1, {{PS_PUNCT, NULL, false}, {PS_BYTELEVEL, NULL, true}, {PS_DIGITS, NULL, false},
                    {PS_SPLIT, "[0-9][0-9][0-9]", false}}},
    {"deepseek-coder", -1, {{PS_SPLIT, "[\r\n]", false}, {PS_SPLIT, "\\s?\\p{L}+", false},
                            {PS_SPLIT, "\\s?\\p{P}+", false}, {PS_SPLIT, CJK_RUNS, false},
                            {PS_DIGITS, NULL, true}, {PS_BYTELEVEL, NULL, false}}},
    {"deepseek-llm", -1, {{PS_SPLIT, "[\r\n]", false}, {PS_SPLIT, DEEPSEEK_LETTERS, false},
                          {PS_SPLIT, DEEPSEEK_SYMBOLS, false}, {PS_SPLIT, "\\s+$", false},
                          {PS_SPLIT, CJK_RUNS, false}, {PS_DIGITS, NULL, true}, {PS_BYTELEVEL, NULL, false}}},
};

/* Appends the steps of one tokenizer.json pre_tokenizer (a Sequence is
 * flattened) to out[*n]; false when a step is not one apr knows the meaning
 * of (type, Split behavior/invert, ByteLevel add_prefix_space, Punctuation
 * behavior), so no name is given to it. */
static bool pre_steps(const json_t *pt, pre_step *out, size_t *n)
{
    const char *type = json_string_value(json_object_get(pt, "type"));
    const char *behavior = json_string_value(json_object_get(pt, "behavior"));
    if (!type)
        return false;
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list) || !json_array_size(list))
            return false;
        for (size_t i = 0; i < json_array_size(list); i++)
            if (!pre_steps(json_array_get(list, i), out, n))
                return false;
        return true;
    }
    if (*n == MAX_PRE_STEPS)
        return false;
    pre_step *s = &out[(*n)++];
    *s = (pre_step){0};
    if (!strcmp(type, "Split")) {
        s->kind = PS_SPLIT;
        s->regex = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
        return s->regex && (!behavior || !strcmp(behavior, "Isolated")) && !json_is_true(json_object_get(pt, "invert"));
    }
    if (!strcmp(type, "ByteLevel")) { /* use_regex: true unless written false (older files lack it) */
        s->kind = PS_BYTELEVEL;
        s->flag = !json_is_false(json_object_get(pt, "use_regex"));
        return !json_is_true(json_object_get(pt, "add_prefix_space"));
    }
    if (!strcmp(type, "Digits")) {
        s->kind = PS_DIGITS;
        s->flag = json_is_true(json_object_get(pt, "individual_digits"));
        return true;
    }
    if (!strcmp(type, "Punctuation")) {
        s->kind = PS_PUNCT;
        return !behavior || !strcmp(behavior, "Contiguous");
    }
    return false;
}

static size_t form_len(const struct pre_form *f)
{
    size_t k = 0;
    while (k < MAX_PRE_STEPS && (f->steps[k].kind || f->steps[k].regex || f->steps[k].flag))
        k++;
    return k;
}

/* The pre-tokenizer name llama.cpp's converter would pick, by PRE_FORMS.
 * NULL: not recognised (the caller refuses it; writing "default" would make
 * llama.cpp tokenize differently from the model). */
static const char *detect_pre(const json_t *tok)
{
    pre_step st[MAX_PRE_STEPS];
    size_t n = 0;
    if (!pre_steps(json_object_get(tok, "pre_tokenizer"), st, &n))
        return NULL;
    const int ignore_merges = json_is_true(json_object_get(json_object_get(tok, "model"), "ignore_merges"));
    for (size_t i = 0; i < sizeof PRE_FORMS / sizeof *PRE_FORMS; i++) {
        const struct pre_form *f = &PRE_FORMS[i];
        bool same = form_len(f) == n && (f->ignore_merges < 0 || f->ignore_merges == ignore_merges);
        for (size_t k = 0; same && k < n; k++)
            same = st[k].kind == f->steps[k].kind && st[k].flag == f->steps[k].flag &&
                   (st[k].kind != PS_SPLIT || !strcmp(st[k].regex, f->steps[k].regex));
        if (same)
            return f->name;
    }
    return NULL;
}

/* A short description of the pre_tokenizer for the refusal message. */
static void describe_pre(const json_t *tok, char *buf, size_t cap)
{
    char *c = json_dumps(json_object_get(tok, "pre_tokenizer"), JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, cap, "%.160s%s", c ? c : "null", c && strlen(c) > 160 ? "..." : "");
    free(c);
}

static int map_tokenizer(apr_model *m, const apr_tok_hf *d, apr_err *err)
{
    const json_t *tok = d->tokenizer;
    const json_t *model = json_object_get(tok, "model");
    const char *type = json_string_value(json_object_get(model, "type"));
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(tok, "added_tokens");
    if (added && !json_is_array(added))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: added_tokens is not a list");
    if (!type)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: no model.type");
    bool unigram = !strcmp(type, "Unigram");
    bool bpe = !strcmp(type, "BPE");
    if (!unigram && !bpe)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "tokenizer.json: model type '%s' is not supported (Unigram, BPE)", type);
    if (unigram ? !json_is_array(vocab) : !json_is_object(vocab))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: model.vocab has the wrong JSON type");
    bool byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    bool gpt2 = bpe && !byte_fallback;

    int64_t mx = max_token_id(vocab, added);
    if (mx >= (1 << 24))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: token id %lld is too large", (long long)mx);
    uint64_t n = (uint64_t)(mx + 1);
    uint32_t cfg_vocab = 0;
    if (gpt2 && d->config && cfg_u32(d->config, "vocab_size", &cfg_vocab, err) == 1) {
        if (cfg_vocab < n)
            return apr_err_set(err, APR_E_FORMAT, "config.json vocab_size %u < tokenizer's %llu tokens",
                               cfg_vocab, (unsigned long long)n);
        n = cfg_vocab; /* get_vocab_base pads to the config's vocab size */
    }
    if (n == 0 || n > (1u << 24))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.json: %llu tokens", (unsigned long long)n);

    tok_build b = {0};
    int rc = tok_build_alloc(&b, (uint32_t)n, err);
    if (rc)
        goto done;
    if (unigram) {
        size_t i;
        json_t *e;
        json_array_foreach(vocab, i, e) {
            if (!json_is_array(e) || json_array_size(e) != 2 || !apr_json_get_f32(json_array_get(e, 1), &b.scores[i])) {
                rc = apr_err_set(err, APR_E_FORMAT, "tokenizer.json: Unigram vocab entry %zu is not [piece, score]", i);
                goto done;
            }
            if ((rc = tok_set(&b, (json_int_t)i, json_array_get(e, 0), "vocab", err)))
                goto done;
        }
    } else {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vocab, k, v) {
            if (!json_is_integer(v)) {
                rc = apr_err_set(err, APR_E_FORMAT, "tokenizer.json: vocab id of '%.40s' is not an integer", k);
                goto done;
            }
            json_t *text = json_stringn(k, strlen(k));
            rc = text ? tok_set(&b, json_integer_value(v), text, "vocab", err)
                      : apr_err_set(err, APR_E_NOMEM, "out of memory");
            json_decref(text);
            if (rc)
                goto done;
        }
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        const json_t *jid = json_object_get(a, "id");
        if (!json_is_integer(jid)) {
            rc = apr_err_set(err, APR_E_FORMAT, "tokenizer.json: added token %zu has no integer id", i);
            goto done;
        }
        json_int_t id = json_integer_value(jid);
        if ((rc = tok_set(&b, id, json_object_get(a, "content"), "added", err)))
            goto done;
        b.is_added[id] = true;
        b.is_special[id] = json_is_true(json_object_get(a, "special"));
    }
    int64_t unk_id = -1;
    if (unigram && json_is_integer(json_object_get(model, "unk_id")))
        unk_id = json_integer_value(json_object_get(model, "unk_id"));
    for (uint32_t t = 0; t < b.n; t++) {
        if (!b.tokens[t].s) {
            if (!gpt2) {
                rc = apr_err_set(err, APR_E_FORMAT, "tokenizer.json: no token has id %u", t);
                goto done;
            }
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%u]", t);
            b.tokens[t].s = strdup(pad);
            b.tokens[t].len = strlen(pad);
            if (!b.tokens[t].s) {
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
                goto done;
            }
            b.types[t] = 5; /* UNUSED */
            continue;
        }
        if (gpt2) {
            if (b.is_added[t])
                b.types[t] = (b.is_special[t] || looks_special(&b.tokens[t])) ? 3 : 4;
            else
                b.types[t] = 1;
        } else {
            if (is_byte_token(&b.tokens[t]))
                b.types[t] = 6;
            else if (unigram && t == unk_id)
                b.types[t] = 2;
            else if (b.is_added[t] && b.is_special[t])
                b.types[t] = 3;
            else if (b.is_added[t])
                b.types[t] = 4;
            else
                b.types[t] = 1;
            if (!unigram)
                b.scores[t] = -1000.0f; /* LlamaHfVocab's score for every token */
        }
    }
    const char *pre = gpt2 ? detect_pre(tok) : "default";
    if (!pre) {
        char what[200];
        describe_pre(tok, what, sizeof what);
        rc = apr_err_set(err, APR_E_UNSUPPORTED,
                         "tokenizer.json: BPE pre-tokenizer not recognized (%s); llama.cpp's converter would "
                         "refuse it too, and writing 'default' would tokenize differently from the model", what);
        goto done;
    }
    if ((rc = set_str(m, "tokenizer.ggml.model", gpt2 ? "gpt2" : "llama", err)) ||
        (rc = set_str(m, "tokenizer.ggml.pre", pre, err)) ||
        (rc = set_array(m, "tokenizer.ggml.tokens", APR_KV_STRING, b.tokens, b.n, err)))
        goto done;
    if (!gpt2 && (rc = set_array(m, "tokenizer.ggml.scores", APR_KV_F32, b.scores, b.n, err)))
        goto done;
    if ((rc = set_array(m, "tokenizer.ggml.token_type", APR_KV_I32, b.types, b.n, err)))
        goto done;
    if (gpt2 && (rc = map_merges(m, json_object_get(model, "merges"), err)))
        goto done;
    if ((rc = map_special_ids(m, d, b.n, err)) || (rc = map_add_flags_and_template(m, d, err)))
        goto done;
done:
    tok_build_free(&b);
    return rc;
}

/* ================================================================ tokenizer.model -> KVs */

/* The vocabulary size _create_vocab_sentencepiece uses: the first of
 * config.json's vocab_size_per_layer_input / vocab_size that is present,
 * or the piece count when that value is falsy (absent, null, 0). */
static int spm_vocab_size(const apr_tok_hf *d, uint32_t *out, apr_err *err)
{
    static const char *const fields[] = {"vocab_size_per_layer_input", "vocab_size"};
    *out = d->spm->n_pieces;
    for (int i = 0; i < 2 && d->config; i++) {
        const json_t *j = json_object_get(d->config, fields[i]);
        if (!j)
            continue;
        if (json_is_null(j) || json_is_false(j) || (json_is_integer(j) && json_integer_value(j) == 0))
            return 0;
        if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > (json_int_t)APR_SPM_MAX_PIECES)
            return apr_err_set(err, APR_E_FORMAT, "config.json: %s must be an integer in [0, 2^24]", fields[i]);
        *out = (uint32_t)json_integer_value(j);
        return 0;
    }
    return 0;
}

/* Replace token id's text; with spaces = true, U+2581 becomes ' ' (the
 * converter's "pre-normalize user-defined spaces"). */
static int spm_put(tok_build *b, uint32_t id, const char *text, size_t n, bool spaces, apr_err *err)
{
    char *c = malloc(n + 1);
    if (!c)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (spaces && i + 3 <= n && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            c[o++] = ' ';
            i += 2;
        } else {
            c[o++] = text[i];
        }
    }
    c[o] = 0;
    free(b->tokens[id].s);
    b->tokens[id].s = c;
    b->tokens[id].len = o;
    return 0;
}

/* Python truthiness of a JSON value (token_data.get("special")). */
static bool py_truthy(const json_t *j)
{
    if (!j || json_is_null(j) || json_is_false(j))
        return false;
    if (json_is_integer(j))
        return json_integer_value(j) != 0;
    if (json_is_real(j))
        return json_real_value(j) != 0.0;
    if (json_is_string(j))
        return json_string_length(j) != 0;
    if (json_is_array(j))
        return json_array_size(j) != 0;
    if (json_is_object(j))
        return json_object_size(j) != 0;
    return true;
}

/* added_tokens.json: {"text": id}, user-defined tokens with score -1000. */
static int spm_added_tokens_json(tok_build *b, const json_t *added, apr_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)added, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return apr_err_set(err, APR_E_FORMAT, "added_tokens.json: the id of '%.40s' is not a non-negative integer", k);
        if ((uint64_t)json_integer_value(v) >= b->n)
            continue; /* the converter ignores ids past vocab_size */
        uint32_t id = (uint32_t)json_integer_value(v);
        int rc = spm_put(b, id, k, strlen(k), false, err);
        if (rc)
            return rc;
        b->scores[id] = -1000.0f;
        b->types[id] = 4; /* USER_DEFINED */
    }
    return 0;
}

/* tokenizer_config.json added_tokens_decoder: {"id": {"content": ..., "special": ...}}. */
static int spm_added_tokens_decoder(tok_build *b, const json_t *dec, apr_err *err)
{
    if (!dec)
        return 0;
    if (!json_is_object(dec))
        return apr_err_set(err, APR_E_FORMAT, "tokenizer_config.json: added_tokens_decoder is not an object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)dec, k, v) {
        char *end;
        errno = 0;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || errno || id < 0)
            return apr_err_set(err, APR_E_FORMAT, "tokenizer_config.json: added_tokens_decoder key '%.40s' is not a "
                               "non-negative token id", k);
        const json_t *content = json_object_get(v, "content");
        if (!json_is_string(content))
            return apr_err_set(err, APR_E_FORMAT, "tokenizer_config.json: added token %lld has no string content", id);
        if ((uint64_t)id >= b->n)
            continue; /* the converter ignores ids past vocab_size */
        apr_str text = {json_string_length(content), (char *)json_string_value(content)};
        bool control = py_truthy(json_object_get(v, "special")) || looks_special(&text);
        int rc = spm_put(b, (uint32_t)id, text.s, (size_t)text.len, !control, err);
        if (rc)
            return rc;
        b->types[id] = control ? 3 : 4;
        b->scores[id] = -1000.0f;
    }
    return 0;
}

/* llama.cpp's _set_vocab_sentencepiece: [PAD<i>] fillers (score -10000,
 * UNUSED) up to vocab_size, the pieces (type UNKNOWN / CONTROL / UNUSED /
 * BYTE, everything else NORMAL), then added_tokens.json and
 * added_tokens_decoder, then SpecialVocab. */
static int map_spm(apr_model *m, const apr_tok_hf *d, apr_err *err)
{
    const apr_spm *s = d->spm;
    uint32_t n = 0;
    int rc = spm_vocab_size(d, &n, err);
    if (rc)
        return rc;
    if (n == 0)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.model: an empty vocabulary");
    tok_build b = {0};
    if ((rc = tok_build_alloc(&b, n, err)))
        goto done;
    for (uint32_t i = 0; i < n && !rc; i++) {
        char pad[32];
        int len = snprintf(pad, sizeof pad, "[PAD%u]", i);
        rc = spm_put(&b, i, pad, (size_t)len, false, err);
        b.scores[i] = -10000.0f;
        b.types[i] = 5;
    }
    for (uint32_t i = 0; i < s->n_pieces && i < n && !rc; i++) {
        int32_t t = s->types[i];
        rc = spm_put(&b, i, s->pieces[i].s, (size_t)s->pieces[i].len, false, err);
        b.scores[i] = s->scores[i];
        b.types[i] = (t == APR_SPM_UNKNOWN || t == APR_SPM_CONTROL || t == APR_SPM_UNUSED || t == APR_SPM_BYTE)
                         ? t : APR_SPM_NORMAL; /* USER_DEFINED pieces become NORMAL, as IsUnknown/... say */
    }
    if (rc || (d->added_tokens && (rc = spm_added_tokens_json(&b, d->added_tokens, err))) ||
        (rc = spm_added_tokens_decoder(&b, json_object_get(d->tokenizer_config, "added_tokens_decoder"), err)))
        goto done;
    if ((rc = set_str(m, "tokenizer.ggml.model", "llama", err)) ||
        (rc = set_str(m, "tokenizer.ggml.pre", "default", err)) ||
        (rc = set_array(m, "tokenizer.ggml.tokens", APR_KV_STRING, b.tokens, b.n, err)) ||
        (rc = set_array(m, "tokenizer.ggml.scores", APR_KV_F32, b.scores, b.n, err)) ||
        (rc = set_array(m, "tokenizer.ggml.token_type", APR_KV_I32, b.types, b.n, err)))
        goto done;
    rc = map_special_ids(m, d, b.n, err);
    if (!rc)
        rc = map_add_flags_and_template(m, d, err);
done:
    tok_build_free(&b);
    return rc;
}

/* ================================================================ KVs -> tokenizer files */

static const char *tok_str(const apr_model *m, int32_t id)
{
    if (id < 0 || (uint32_t)id >= m->tok.n_tokens)
        return NULL;
    return m->tok.tokens[id].s;
}

static json_t *jstr_n(const apr_str *s)
{
    return json_stringn(s->s, (size_t)s->len);
}
static json_t *added_token_json(apr_jb *jb, const apr_model *m, uint32_t id, bool special)
{
    json_t *a = json_object();
    apr_jb_set(jb, a, "id", json_integer(id));
    apr_jb_set(jb, a, "content", jstr_n(&m->tok.tokens[id]));
    apr_jb_set(jb, a, "single_word", json_false());
    apr_jb_set(jb, a, "lstrip", json_false());
    apr_jb_set(jb, a, "rstrip", json_false());
    apr_jb_set(jb, a, "normalized", json_boolean(!special));
    apr_jb_set(jb, a, "special", json_boolean(special));
    return a;
}

static json_t *template_processing(apr_jb *jb, const apr_model *m)
{
    const apr_tokenizer *t = &m->tok;
    bool bos = t->add_bos && tok_str(m, t->bos_id), eos = t->add_eos && tok_str(m, t->eos_id);
    if (!bos && !eos)
        return NULL;
    json_t *single = json_array(), *pair = json_array(), *specials = json_object();
    for (int seq = 0; seq < 2; seq++) {
        json_t *list = seq ? pair : single;
        for (int part = 0; part <= seq; part++) {
            if (bos)
                apr_jb_append(jb, list, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                  tok_str(m, t->bos_id), "type_id", part));
            apr_jb_append(jb, list, json_pack("{s:{s:s,s:i}}", "Sequence", "id", part ? "B" : "A",
                                              "type_id", part));
            if (eos)
                apr_jb_append(jb, list, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                  tok_str(m, t->eos_id), "type_id", part));
        }
    }
    for (int k = 0; k < 2; k++) {
        int32_t id = k ? t->eos_id : t->bos_id;
        if (!(k ? eos : bos))
            continue;
        apr_jb_set(jb, specials, tok_str(m, id),
                   json_pack("{s:s,s:[i],s:[s]}", "id", tok_str(m, id), "ids", id, "tokens",
                             tok_str(m, id)));
    }
    return apr_jb_value(jb, json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single,
                                      "pair", pair, "special_tokens", specials));
}

static json_t *byte_level(bool use_regex)
{
    return json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
                     "use_regex", use_regex);
}

/* Whether token i goes into tokenizer_config.json's added_tokens_decoder.
 * With a tokenizer.model beside it (spm), only the tokens llama.cpp's
 * converter maps back to the same type and score: it makes every entry
 * CONTROL or USER_DEFINED with score -1000, so a <unk> or a control token
 * with its own score must stay a plain tokenizer.model piece. */
static bool in_added_decoder(const apr_model *m, uint32_t i, bool spm)
{
    int32_t ty = m->tok.token_type ? m->tok.token_type[i] : 1;
    if (!spm)
        return ty == 2 || ty == 3 || ty == 4;
    if (!m->tok.scores || m->tok.scores[i] != -1000.0f)
        return false;
    const apr_str *t = &m->tok.tokens[i];
    return ty == 3 || (ty == 4 && !looks_special(t) && !memmem(t->s, (size_t)t->len, "\xe2\x96\x81", 3));
}

static const char chat_template_prefix[] = "tokenizer.chat_template.";

/* Append {"name": name, "template": tokenizer.chat_template.NAME} to list
 * unless that KV is absent or the name is already there; 1 when appended. */
static int append_named_template(apr_jb *jb, json_t *list, const apr_model *m, const char *name)
{
    char key[512];
    if (!name[0] || snprintf(key, sizeof key, "%s%s", chat_template_prefix, name) >= (int)sizeof key)
        return 0;
    const char *tmpl = apr_kv_get_str(m, key);
    for (size_t k = 0; k < json_array_size(list); k++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(list, k), "name")), name))
            return 0;
    if (!tmpl)
        return 0;
    apr_jb_append(jb, list, json_pack("{s:s,s:s}", "name", name, "template", tmpl));
    return 1;
}

/* tokenizer_config.json's "chat_template" from the KVs: the plain string when
 * there is no named template (what the converter read it from), else the list
 * form [{"name": "default", ...}, {"name": NAME, ...}] that gguf-py maps back
 * to the same KVs: the names in tokenizer.chat_templates' order, then any
 * other tokenizer.chat_template.NAME KV in KV order. NULL when none. */
static json_t *chat_template_json(apr_jb *jb, const apr_model *m)
{
    const size_t pl = sizeof chat_template_prefix - 1;
    const char *deflt = apr_kv_get_str(m, "tokenizer.chat_template");
    json_t *list = json_array();
    if (deflt)
        apr_jb_append(jb, list, json_pack("{s:s,s:s}", "name", "default", "template", deflt));
    size_t n_named = 0;
    const apr_kv *names = apr_model_kv(m, "tokenizer.chat_templates");
    if (names && names->type == APR_KV_ARRAY && names->arr_type == APR_KV_STRING)
        for (uint64_t i = 0; i < names->count; i++)
            n_named += append_named_template(jb, list, m, ((const apr_str *)names->arr)[i].s);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        if (m->kvs[i].type == APR_KV_STRING && !strncmp(m->kvs[i].key, chat_template_prefix, pl))
            n_named += append_named_template(jb, list, m, m->kvs[i].key + pl);
    if (n_named)
        return list;
    json_decref(list);
    return deflt ? apr_jb_value(jb, json_string(deflt)) : NULL;
}

/* A token that tokenizer.json cannot hold, unless the value was lost to a
 * failed allocation (then that is the error). */
static int token_error(const apr_jb *jb, uint32_t i, const char *why, apr_err *err)
{
    if (apr_jb_oom(jb))
        return apr_err_set(err, APR_E_NOMEM, "tokenizer.json: out of memory");
    return apr_err_set(err, APR_E_UNSUPPORTED, "token %u %s", i, why);
}

/* The PRE_FORMS entry a GGUF's tokenizer.ggml.pre is written back as: its
 * own, else that of a name llama.cpp tokenizes alike. */
static const struct pre_form *pre_form_of(const char *pre)
{
    const int row = tok_pre_row(pre);
    for (size_t i = 0; i < sizeof PRE_FORMS / sizeof *PRE_FORMS; i++)
        if (!strcmp(pre, PRE_FORMS[i].name) || (row >= 0 && tok_pre_row(PRE_FORMS[i].name) == row))
            return &PRE_FORMS[i];
    return NULL;
}

static const char pre_form_names[] = "gpt-2, llama-bpe, smaug-bpe, qwen2, qwen35, starcoder, falcon, deepseek-coder, "
                                     "deepseek-llm, and the names llama.cpp tokenizes as one of them";

static json_t *pre_step_json(const pre_step *s)
{
    switch (s->kind) {
    case PS_SPLIT:
        return json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split", "pattern", "Regex", s->regex, "behavior",
                         "Isolated", "invert", 0);
    case PS_BYTELEVEL:
        return byte_level(s->flag);
    case PS_DIGITS:
        return json_pack("{s:s,s:b}", "type", "Digits", "individual_digits", s->flag);
    case PS_PUNCT:
        return json_pack("{s:s,s:s}", "type", "Punctuation", "behavior", "Contiguous");
    }
    return NULL;
}

/* The form's pre_tokenizer object: its one step, or a Sequence of them. */
static json_t *pre_form_json(apr_jb *jb, const struct pre_form *f)
{
    const size_t n = form_len(f);
    if (n == 1)
        return pre_step_json(&f->steps[0]);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        apr_jb_append(jb, list, pre_step_json(&f->steps[i]));
    return json_pack("{s:s,s:o}", "type", "Sequence", "pretokenizers", list);
}

static int build_tokenizer(const apr_model *m, bool spm, json_t **out_tok, json_t **out_tc, apr_err *err)
{
    const apr_tokenizer *t = &m->tok;
    bool gpt2 = !strcmp(t->model, "gpt2");
    if (!gpt2 && strcmp(t->model, "llama") != 0)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "tokenizer model '%s' has no HF tokenizer.json mapping (llama, gpt2)", t->model);
    apr_jb jb = apr_jb_start();
    json_t *j = json_object(), *added = json_array(), *model = json_object();
    int rc = 0;
    apr_jb_set(&jb, j, "version", json_string("1.0"));
    apr_jb_set(&jb, j, "truncation", json_null());
    apr_jb_set(&jb, j, "padding", json_null());
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        int32_t ty = t->token_type ? t->token_type[i] : 1;
        if (ty == 2 || ty == 3 || ty == 4) {
            json_t *a = added_token_json(&jb, m, i, ty != 4);
            if (a && !json_object_get(a, "content")) {
                json_decref(a);
                rc = token_error(&jb, i, "is not valid UTF-8", err);
                goto fail;
            }
            apr_jb_append(&jb, added, a);
        }
    }
    apr_jb_set(&jb, j, "added_tokens", added);
    added = NULL;
    if (gpt2) {
        const struct pre_form *pf = pre_form_of(t->pre);
        if (!pf) {
            rc = apr_err_set(err, APR_E_UNSUPPORTED,
                             "tokenizer.ggml.pre '%s'%s has no HF pre_tokenizer apr knows (%s)", t->pre,
                             t->pre[0] ? "" : " (unset: llama.cpp's default regexes)", pre_form_names);
            goto fail;
        }
        apr_jb_set(&jb, j, "normalizer", !strcmp(pf->name, "qwen2") ? json_pack("{s:s}", "type", "NFC") : json_null());
        apr_jb_set(&jb, j, "pre_tokenizer", pre_form_json(&jb, pf));
        json_t *tp = template_processing(&jb, m);
        apr_jb_set(&jb, j, "post_processor", tp ? tp : byte_level(false));
        apr_jb_set(&jb, j, "decoder", byte_level(false));
        apr_jb_set(&jb, model, "type", json_string("BPE"));
        apr_jb_set(&jb, model, "dropout", json_null());
        apr_jb_set(&jb, model, "unk_token", json_null());
        apr_jb_set(&jb, model, "continuing_subword_prefix", json_string(""));
        apr_jb_set(&jb, model, "end_of_word_suffix", json_string(""));
        apr_jb_set(&jb, model, "fuse_unk", json_false());
        apr_jb_set(&jb, model, "byte_fallback", json_false());
        apr_jb_set(&jb, model, "ignore_merges", json_boolean(pf->ignore_merges == 1));
        json_t *vocab = json_object();
        for (uint32_t i = 0; i < t->n_tokens; i++) {
            int32_t ty = t->token_type ? t->token_type[i] : 1;
            if (ty == 2 || ty == 3 || ty == 4)
                continue; /* in added_tokens, as HF's Qwen2 files have them */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%u]", i);
            if (ty == 5 && !strcmp(t->tokens[i].s, pad))
                continue; /* recreated by the reader's padding to vocab_size */
            if (strlen(t->tokens[i].s) != t->tokens[i].len) {
                rc = apr_err_set(err, APR_E_UNSUPPORTED, "token %u contains a NUL byte", i);
                goto fail;
            }
            if (json_object_get(vocab, t->tokens[i].s))
                continue; /* a duplicate string: the exact list goes into apr_gguf */
            if (vocab && json_object_set_new(vocab, t->tokens[i].s, json_integer(i))) {
                json_decref(vocab);
                rc = token_error(&jb, i, "is not valid UTF-8", err);
                goto fail;
            }
        }
        apr_jb_set(&jb, model, "vocab", vocab);
        json_t *merges = json_array();
        for (uint32_t i = 0; i < t->n_merges; i++)
            apr_jb_append(&jb, merges, jstr_n(&t->merges[i]));
        apr_jb_set(&jb, model, "merges", merges);
    } else {
        apr_jb_set(&jb, j, "normalizer", json_null());
        apr_jb_set(&jb, j, "pre_tokenizer",
                   json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                             "prepend_scheme", "first", "split", 0));
        json_t *tp = template_processing(&jb, m);
        apr_jb_set(&jb, j, "post_processor", tp ? tp : json_null());
        apr_jb_set(&jb, j, "decoder",
                   json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s},{s:s},{s:s,s:s,s:i,s:i}]}", "type",
                             "Sequence", "decoders", "type", "Replace", "pattern", "String",
                             "\xe2\x96\x81", "content", " ", "type", "ByteFallback", "type", "Fuse",
                             "type", "Strip", "content", " ", "start", 1, "stop", 0));
        apr_jb_set(&jb, model, "type", json_string("Unigram"));
        apr_jb_set(&jb, model, "unk_id", t->unk_id >= 0 ? json_integer(t->unk_id) : json_null());
        json_t *vocab = json_array();
        for (uint32_t i = 0; i < t->n_tokens; i++) {
            float s = t->scores ? t->scores[i] : 0.0f;
            json_t *piece = jstr_n(&t->tokens[i]), *score = apr_json_f32(s);
            if (!piece || !score) {
                json_decref(piece);
                json_decref(score);
                json_decref(vocab);
                rc = token_error(&jb, i, piece ? "has a score that is not finite" : "is not valid UTF-8", err);
                goto fail;
            }
            apr_jb_append(&jb, vocab, json_pack("[o,o]", piece, score));
        }
        apr_jb_set(&jb, model, "vocab", vocab);
        apr_jb_set(&jb, model, "byte_fallback", json_true());
    }
    apr_jb_set(&jb, j, "model", model);
    model = NULL;

    /* tokenizer_config.json */
    json_t *tc = json_object();
    apr_jb_set(&jb, tc, "add_bos_token", json_boolean(t->add_bos));
    apr_jb_set(&jb, tc, "add_eos_token", json_boolean(t->add_eos));
    json_t *dec = json_object();
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        int32_t ty = t->token_type ? t->token_type[i] : 1;
        if (in_added_decoder(m, i, spm)) {
            char id[16];
            snprintf(id, sizeof id, "%u", i);
            json_t *a = added_token_json(&jb, m, i, ty != 4);
            json_object_del(a, "id");
            apr_jb_set(&jb, dec, id, a);
        }
    }
    apr_jb_set(&jb, tc, "added_tokens_decoder", dec);
    static const char *const fields[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const int32_t ids[] = {t->bos_id, t->eos_id, t->unk_id, t->pad_id};
    for (int k = 0; k < 4; k++) {
        const char *s = tok_str(m, ids[k]);
        apr_jb_set(&jb, tc, fields[k], s ? json_string(s) : json_null());
    }
    json_t *ct = chat_template_json(&jb, m);
    if (ct)
        apr_jb_set(&jb, tc, "chat_template", ct);
    apr_jb_set(&jb, tc, "clean_up_tokenization_spaces", json_false());
    if (!gpt2)
        apr_jb_set(&jb, tc, "legacy", json_false());
    if (m->has_cfg && m->cfg.ctx_len)
        apr_jb_set(&jb, tc, "model_max_length", json_integer(m->cfg.ctx_len));
    const char *cls = !strcmp(m->cfg.arch, "qwen2") ? "Qwen2Tokenizer"
                      : gpt2 ? "PreTrainedTokenizerFast" : "LlamaTokenizer";
    apr_jb_set(&jb, tc, "tokenizer_class", json_string(cls));
    if ((rc = apr_jb_done(&jb, "tokenizer.json", err))) {
        json_decref(tc);
        goto fail;
    }
    *out_tok = j;
    *out_tc = tc;
    return 0;
fail:
    json_decref(added);
    json_decref(model);
    json_decref(j);
    return rc;
}

/* tokenizer.model for a SentencePiece vocabulary, or NULL when sentencepiece
 * could not load one made of these tokens (tokenizer.json then carries it alone). */
static int build_spm(const apr_model *m, apr_spm **out, apr_err *err)
{
    *out = NULL;
    apr_spm *s = calloc(1, sizeof *s);
    if (!s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    char why[160];
    int rc = apr_spm_from_model(m, s, why, sizeof why, err);
    if (rc) {
        free(s);
        return rc < 0 ? rc : 0;
    }
    *out = s;
    return 0;
}

/* ================================================================ API */

/* m->hf_chat_specials from tokenizer_config.json: transformers knows a
 * special token only when that file names it, whatever config.json's ids say. */
static int set_chat_specials(apr_model *m, const apr_tok_hf *d, apr_err *err)
{
    static const char *const fields[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    json_t *o = json_object();
    int bad = !o;
    for (int i = 0; i < 4 && o; i++) {
        const char *t = special_entry(d->tokenizer_config, fields[i]);
        if (t)
            bad |= json_object_set_new(o, fields[i], json_string(t));
    }
    char *text = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    free(m->hf_chat_specials);
    m->hf_chat_specials = text;
    return 0;
}

int apr_tok_hf_to_kvs(apr_model *m, const apr_tok_hf *d, apr_err *err)
{
    if ((d->spm || d->tokenizer) && set_chat_specials(m, d, err))
        return APR_E_NOMEM;
    /* tokenizer.model wins over tokenizer.json, as in LlamaModel.set_vocab
     * (the BPE tokenizer.json of LLaMA repos has no scores). */
    if (d->spm)
        return map_spm(m, d, err);
    if (d->tokenizer)
        return map_tokenizer(m, d, err);
    return 0;
}

bool apr_tok_hf_expressible(const apr_model *m)
{
    return m->has_tok && (!strcmp(m->tok.model, "llama") || !strcmp(m->tok.model, "gpt2"));
}

int apr_tok_hf_from_model(const apr_model *m, json_t **tokenizer, json_t **tokenizer_config, apr_spm **spm,
                          apr_err *err)
{
    *tokenizer = *tokenizer_config = NULL;
    *spm = NULL;
    if (!apr_tok_hf_expressible(m))
        return 0;
    int rc = 0;
    if (!strcmp(m->tok.model, "llama") && (rc = build_spm(m, spm, err)))
        return rc;
    if ((rc = build_tokenizer(m, *spm != NULL, tokenizer, tokenizer_config, err))) {
        if (*spm)
            apr_spm_free(*spm);
        free(*spm);
        *spm = NULL;
    }
    return rc;
}

void apr_spm_destroy(apr_spm *s)
{
    if (!s)
        return;
    apr_spm_free(s);
    free(s);
}
