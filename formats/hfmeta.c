/* hfmeta.c - HF config.json / tokenizer.json / tokenizer_config.json <-> GGUF-namespace KVs.
 *
 * Reading follows llama.cpp's convert_hf_to_gguf.py (and gguf-py's vocab.py):
 *   config.json  -> general.architecture, general.name, {arch}.block_count,
 *                   context_length, embedding_length, feed_forward_length,
 *                   attention.head_count(_kv), rope.freq_base,
 *                   attention.layer_norm_rms_epsilon, attention.key/value_length
 *                   (only when head_dim is given), llama: vocab_size and
 *                   rope.dimension_count; strict u32 / f32 types.
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
 *   Special ids (bos, eos, unk, sep, pad, cls, mask) and add_*_token and the
 *   chat template as gguf-py's SpecialVocab finds them.
 *
 * Writing produces standard HF files. A GGUF detail that these files cannot
 * carry (a separator id of 0xFFFFFFFF, token types that differ from what the
 * rules above would give, a u64 instead of a u32, a key llama.cpp's converter
 * would not write, ...) is kept exactly in an extra top-level "apr_gguf"
 * object ({"keys": [all KV keys in order], "kvs": [typed KVs]}), which HF
 * ignores and our reader applies last. The writer decides what to record by
 * running the reader on the documents it built and diffing against the
 * model's KVs, so records appear only when needed.
 */
#define _GNU_SOURCE
#include "hfmeta.h"
#include "spm.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ JSON scalars */

static bool f32_bits_equal(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* The double of the shortest decimal string that reads back (via double) as f. */
static bool f32_shortest_double(float f, double *out)
{
    char buf[64];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if (f32_bits_equal((float)d, f)) {
            *out = d;
            return true;
        }
    }
    /* Double rounding (decimal -> double -> float) can in rare cases miss
     * with the 9-digit string; the exact double of f always works. */
    *out = (double)f;
    return true;
}

json_t *apr_json_f32(float f)
{
    if (!isfinite(f))
        return NULL;
    double d;
    f32_shortest_double(f, &d);
    return json_real(d);
}

bool apr_json_get_f32(const json_t *j, float *out)
{
    if (!json_is_number(j))
        return false;
    *out = (float)json_number_value(j);
    return true;
}

char *apr_json_dump(const json_t *j, bool pretty)
{
    return json_dumps(j, APR_JSON_DUMP_FLAGS | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
}

/* ================================================================ typed KV codec */

static const char *kv_type_str(apr_kv_type t)
{
    return apr_kv_type_name(t);
}

static int kv_type_from_str(const char *s)
{
    for (int t = 0; t < APR_KV_TYPE_COUNT; t++)
        if (strcmp(apr_kv_type_name((apr_kv_type)t), s) == 0)
            return t;
    return -1;
}

static json_t *bits_string(uint64_t bits, int hexdigits)
{
    char buf[40];
    snprintf(buf, sizeof buf, "0x%0*" PRIx64, hexdigits, bits);
    return json_string(buf);
}

/* One scalar (pointer to its packed little-endian value) as JSON. */
static json_t *scalar_to_json(apr_kv_type t, const void *p)
{
    char buf[64];
    switch (t) {
    case APR_KV_U8: return json_integer(*(const uint8_t *)p);
    case APR_KV_I8: return json_integer(*(const int8_t *)p);
    case APR_KV_U16: { uint16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case APR_KV_I16: { int16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case APR_KV_U32: { uint32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case APR_KV_I32: { int32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case APR_KV_I64: { int64_t v; memcpy(&v, p, 8); return json_integer(v); }
    case APR_KV_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v <= (uint64_t)INT64_MAX)
            return json_integer((json_int_t)v);
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        return json_string(buf);
    }
    case APR_KV_BOOL: return json_boolean(*(const uint8_t *)p != 0);
    case APR_KV_F32: {
        float v;
        uint32_t bits;
        memcpy(&v, p, 4);
        memcpy(&bits, p, 4);
        return isfinite(v) ? apr_json_f32(v) : bits_string(bits, 8);
    }
    case APR_KV_F64: {
        double v;
        uint64_t bits;
        memcpy(&v, p, 8);
        memcpy(&bits, p, 8);
        if (!isfinite(v))
            return bits_string(bits, 16);
        snprintf(buf, sizeof buf, "%.17g", v);
        return json_string(buf);
    }
    default: return NULL;
    }
}

static int str_to_json(const apr_str *s, json_t **out, apr_err *err)
{
    *out = json_stringn(s->s ? s->s : "", (size_t)s->len);
    if (!*out)
        return apr_err_set(err, APR_E_UNSUPPORTED, "string '%.60s' is not valid UTF-8 (JSON cannot hold it)",
                           s->s ? s->s : "");
    return 0;
}

json_t *apr_kv_to_json(const apr_kv *kv, apr_err *err)
{
    json_t *o = json_object(), *v = NULL;
    if (!o)
        goto oom;
    json_object_set_new(o, "key", json_string(kv->key));
    json_object_set_new(o, "type", json_string(kv_type_str(kv->type)));
    if (kv->type == APR_KV_STRING) {
        if (str_to_json(&kv->str, &v, err))
            goto fail;
    } else if (kv->type == APR_KV_ARRAY) {
        json_object_set_new(o, "elem", json_string(kv_type_str(kv->arr_type)));
        if (!(v = json_array()))
            goto oom;
        size_t es = apr_kv_type_size(kv->arr_type);
        for (uint64_t i = 0; i < kv->count; i++) {
            json_t *e = NULL;
            if (kv->arr_type == APR_KV_STRING) {
                if (str_to_json(&((const apr_str *)kv->arr)[i], &e, err))
                    goto fail;
            } else if (!es || !(e = scalar_to_json(kv->arr_type, (const uint8_t *)kv->arr + i * es))) {
                apr_err_set(err, APR_E_ARG, "KV %s: bad array element type", kv->key);
                goto fail;
            }
            json_array_append_new(v, e);
        }
    } else if (!(v = scalar_to_json(kv->type, &kv->v))) {
        apr_err_set(err, APR_E_ARG, "KV %s: unknown type %d", kv->key, (int)kv->type);
        goto fail;
    }
    json_object_set_new(o, "value", v);
    return o;
oom:
    apr_err_set(err, APR_E_NOMEM, "out of memory");
fail:
    json_decref(v);
    json_decref(o);
    return NULL;
}

/* Parse one scalar of type t from JSON into p (packed LE). */
static int scalar_from_json(apr_kv_type t, const json_t *j, void *p, const char *key, apr_err *err)
{
    int64_t iv = 0;
    uint64_t uv = 0;
    if (t == APR_KV_BOOL) {
        if (!json_is_boolean(j))
            return apr_err_set(err, APR_E_FORMAT, "KV %s: expected a boolean", key);
        *(uint8_t *)p = json_is_true(j);
        return 0;
    }
    if (t == APR_KV_F32 || t == APR_KV_F64) {
        if (json_is_string(j)) {
            const char *s = json_string_value(j);
            char *end;
            errno = 0;
            if (s[0] == '0' && s[1] == 'x') {
                uint64_t bits = strtoull(s + 2, &end, 16);
                if (*end || errno)
                    return apr_err_set(err, APR_E_FORMAT, "KV %s: bad float bits '%s'", key, s);
                if (t == APR_KV_F32) {
                    uint32_t b32 = (uint32_t)bits;
                    memcpy(p, &b32, 4);
                } else {
                    memcpy(p, &bits, 8);
                }
                return 0;
            }
            double d = strtod(s, &end);
            if (*end || end == s)
                return apr_err_set(err, APR_E_FORMAT, "KV %s: bad number '%s'", key, s);
            if (t == APR_KV_F32) {
                float f = (float)d;
                memcpy(p, &f, 4);
            } else {
                memcpy(p, &d, 8);
            }
            return 0;
        }
        if (!json_is_number(j))
            return apr_err_set(err, APR_E_FORMAT, "KV %s: expected a number", key);
        double d = json_number_value(j);
        if (t == APR_KV_F32) {
            float f = (float)d;
            memcpy(p, &f, 4);
        } else {
            memcpy(p, &d, 8);
        }
        return 0;
    }
    /* integers */
    if (t == APR_KV_U64 && json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        errno = 0;
        uv = strtoull(s, &end, 10);
        if (*end || end == s || errno || s[0] == '-')
            return apr_err_set(err, APR_E_FORMAT, "KV %s: bad u64 '%s'", key, s);
        memcpy(p, &uv, 8);
        return 0;
    }
    if (!json_is_integer(j))
        return apr_err_set(err, APR_E_FORMAT, "KV %s: expected an integer", key);
    iv = json_integer_value(j);
    int64_t lo, hi;
    switch (t) {
    case APR_KV_U8: lo = 0; hi = UINT8_MAX; break;
    case APR_KV_I8: lo = INT8_MIN; hi = INT8_MAX; break;
    case APR_KV_U16: lo = 0; hi = UINT16_MAX; break;
    case APR_KV_I16: lo = INT16_MIN; hi = INT16_MAX; break;
    case APR_KV_U32: lo = 0; hi = UINT32_MAX; break;
    case APR_KV_I32: lo = INT32_MIN; hi = INT32_MAX; break;
    case APR_KV_U64: lo = 0; hi = INT64_MAX; break;
    case APR_KV_I64: lo = INT64_MIN; hi = INT64_MAX; break;
    default: return apr_err_set(err, APR_E_FORMAT, "KV %s: bad scalar type", key);
    }
    if (iv < lo || iv > hi)
        return apr_err_set(err, APR_E_FORMAT, "KV %s: %lld out of range for %s", key, (long long)iv,
                           apr_kv_type_name(t));
    switch (t) {
    case APR_KV_U8: case APR_KV_I8: *(uint8_t *)p = (uint8_t)iv; break;
    case APR_KV_U16: case APR_KV_I16: { uint16_t v = (uint16_t)iv; memcpy(p, &v, 2); break; }
    case APR_KV_U32: case APR_KV_I32: { uint32_t v = (uint32_t)iv; memcpy(p, &v, 4); break; }
    default: memcpy(p, &iv, 8); break;
    }
    return 0;
}

static int json_to_str(const json_t *j, apr_str *s, const char *key, apr_err *err)
{
    if (!json_is_string(j))
        return apr_err_set(err, APR_E_FORMAT, "KV %s: expected a string", key);
    size_t n = json_string_length(j);
    s->s = malloc(n + 1);
    if (!s->s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    memcpy(s->s, json_string_value(j), n);
    s->s[n] = 0;
    s->len = n;
    return 0;
}

int apr_kv_from_json(apr_kv *out, const json_t *j, apr_err *err)
{
    memset(out, 0, sizeof *out);
    const json_t *jk = json_object_get(j, "key"), *jt = json_object_get(j, "type"),
                 *jv = json_object_get(j, "value");
    if (!json_is_object(j) || !json_is_string(jk) || !json_is_string(jt) || !jv)
        return apr_err_set(err, APR_E_FORMAT, "typed KV record: expected {key, type, value}");
    const char *key = json_string_value(jk);
    int t = kv_type_from_str(json_string_value(jt));
    if (t < 0)
        return apr_err_set(err, APR_E_FORMAT, "KV %s: unknown type '%s'", key, json_string_value(jt));
    if (!(out->key = strdup(key)))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    out->type = (apr_kv_type)t;
    int rc = 0;
    if (t == APR_KV_STRING) {
        rc = json_to_str(jv, &out->str, key, err);
    } else if (t == APR_KV_ARRAY) {
        const json_t *je = json_object_get(j, "elem");
        int et = json_is_string(je) ? kv_type_from_str(json_string_value(je)) : -1;
        if (et < 0 || et == APR_KV_ARRAY || !json_is_array(jv)) {
            rc = apr_err_set(err, APR_E_FORMAT, "KV %s: bad array record", key);
            goto done;
        }
        out->arr_type = (apr_kv_type)et;
        out->count = json_array_size(jv);
        size_t es = et == APR_KV_STRING ? sizeof(apr_str) : apr_kv_type_size((apr_kv_type)et);
        out->arr = calloc(out->count ? out->count : 1, es);
        if (!out->arr) {
            out->count = 0;
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < out->count && !rc; i++) {
            const json_t *e = json_array_get(jv, i);
            if (et == APR_KV_STRING)
                rc = json_to_str(e, &((apr_str *)out->arr)[i], key, err);
            else
                rc = scalar_from_json((apr_kv_type)et, e, (uint8_t *)out->arr + i * es, key, err);
        }
    } else {
        rc = scalar_from_json((apr_kv_type)t, jv, &out->v, key, err);
    }
done:
    if (rc)
        apr_kv_free(out);
    return rc;
}

bool apr_kv_equal(const apr_kv *a, const apr_kv *b)
{
    if (a->type != b->type || strcmp(a->key, b->key) != 0)
        return false;
    if (a->type == APR_KV_STRING)
        return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
    if (a->type == APR_KV_ARRAY) {
        if (a->arr_type != b->arr_type || a->count != b->count)
            return false;
        if (a->arr_type == APR_KV_STRING) {
            const apr_str *x = a->arr, *y = b->arr;
            for (uint64_t i = 0; i < a->count; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0)
                    return false;
            return true;
        }
        size_t es = apr_kv_type_size(a->arr_type);
        return a->count == 0 || memcmp(a->arr, b->arr, a->count * es) == 0;
    }
    size_t es = apr_kv_type_size(a->type);
    return memcmp(&a->v, &b->v, es) == 0;
}

bool apr_hf_kv_is_file_level(const char *key)
{
    return strncmp(key, "apr.provenance", 14) == 0 || strncmp(key, "safetensors.metadata.", 21) == 0;
}

const char *apr_hf_torch_dtype(apr_dtype dt)
{
    switch (dt) {
    case APR_DT_F32: return "float32";
    case APR_DT_F16: return "float16";
    case APR_DT_BF16: return "bfloat16";
    case APR_DT_F64: return "float64";
    default: return NULL;
    }
}

/* ================================================================ loading the files */

void apr_hf_docs_free(apr_hf_docs *d)
{
    json_decref(d->config);
    json_decref(d->gen_config);
    json_decref(d->tokenizer);
    json_decref(d->tokenizer_config);
    free(d->chat_template);
    json_decref(d->added_tokens);
    if (d->spm)
        apr_spm_free(d->spm);
    free(d->spm);
    memset(d, 0, sizeof *d);
}

/* Load dir/name as a JSON object into *out; absent file: *out stays NULL. */
static int load_json_file(const char *dir, const char *name, json_t **out, apr_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    }
    json_error_t je;
    json_t *j = json_loadf(f, JSON_ALLOW_NUL, &je);
    fclose(f);
    if (!j)
        return apr_err_set(err, APR_E_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return apr_err_set(err, APR_E_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return 0;
}

/* tokenizer.model, parsed, into d->spm (left NULL when there is none). */
static int load_spm(apr_hf_docs *d, const char *dir, apr_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    apr_spm *s = calloc(1, sizeof *s);
    if (!s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    bool present = false;
    int rc = apr_spm_load(s, path, &present, err);
    if (rc || !present) {
        free(s);
        return rc;
    }
    d->spm = s;
    return 0;
}

int apr_hf_docs_load(apr_hf_docs *d, const char *dir, apr_err *err)
{
    memset(d, 0, sizeof *d);
    int rc;
    if ((rc = load_json_file(dir, "config.json", &d->config, err)) ||
        (rc = load_json_file(dir, "generation_config.json", &d->gen_config, err)) ||
        (rc = load_json_file(dir, "tokenizer.json", &d->tokenizer, err)) ||
        (rc = load_json_file(dir, "tokenizer_config.json", &d->tokenizer_config, err)) ||
        (rc = load_json_file(dir, "added_tokens.json", &d->added_tokens, err)) || (rc = load_spm(d, dir, err))) {
        apr_hf_docs_free(d);
        return rc;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t cap = 4096, n = 0, r;
        char *buf = malloc(cap);
        while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
            n += r;
            if (cap - n - 1 == 0) {
                char *nb = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
                if (!nb) {
                    free(buf);
                    buf = NULL;
                    break;
                }
                buf = nb;
                cap *= 2;
            }
        }
        fclose(f);
        if (!buf) {
            apr_hf_docs_free(d);
            return apr_err_set(err, APR_E_FORMAT, "%s: unreadable or larger than 64 MiB", path);
        }
        buf[n] = 0;
        d->chat_template = buf;
    }
    return 0;
}

/* ================================================================ small KV builders */

static int set_u32(apr_model *m, const char *key, uint32_t v, apr_err *err)
{
    return apr_model_set_kv_u32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int set_f32(apr_model *m, const char *key, float v, apr_err *err)
{
    return apr_model_set_kv_f32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
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

/* config field as u32: 1 present, 0 absent (or null), <0 bad. */
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

static int cfg_f32(const json_t *cfg, const char *field, float *out, apr_err *err)
{
    const json_t *j = json_object_get(cfg, field);
    if (!j || json_is_null(j))
        return 0;
    if (!apr_json_get_f32(j, out) || !isfinite(*out))
        return apr_err_set(err, APR_E_FORMAT, "config.json: %s must be a finite number", field);
    return 1;
}

/* ================================================================ config.json -> KVs */

typedef struct arch_name {
    const char *hf;     /* architectures[0] */
    const char *model_type;
    const char *gguf;   /* general.architecture */
} arch_name;

static const arch_name arch_names[] = {
    {"LlamaForCausalLM", "llama", "llama"},
    {"Qwen2ForCausalLM", "qwen2", "qwen2"},
};

static int map_config(apr_model *m, const json_t *cfg, const char *dir_name, apr_err *err)
{
    const json_t *archs = json_object_get(cfg, "architectures");
    const char *hf = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    const arch_name *a = NULL;
    for (size_t i = 0; i < sizeof arch_names / sizeof *arch_names; i++)
        if ((hf && strcmp(hf, arch_names[i].hf) == 0) || (!hf && mt && strcmp(mt, arch_names[i].model_type) == 0))
            a = &arch_names[i];
    if (!a)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "config.json: unsupported architecture '%s' (supported: LlamaForCausalLM, "
                           "Qwen2ForCausalLM)", hf ? hf : mt ? mt : "(none given)");
    const char *arch = a->gguf;
    char key[128];
    int rc;
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    if ((rc = set_str(m, "general.architecture", arch, err)))
        return rc;
    /* general.name: the model's own name if saved (_name_or_path), else the
     * directory name, as the converter's metadata heuristics end up doing. */
    const char *name = json_string_value(json_object_get(cfg, "_name_or_path"));
    if (name && *name) {
        const char *slash = strrchr(name, '/');
        if (slash && slash[1])
            name = slash + 1;
    } else {
        name = dir_name;
    }
    if (name && *name && (rc = set_str(m, "general.name", name, err)))
        return rc;

    uint32_t layers = 0, hidden = 0, heads = 0, v = 0;
    float f = 0.0f;
    if ((rc = cfg_u32(cfg, "num_hidden_layers", &layers, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: num_hidden_layers is missing");
    if ((rc = set_u32(m, K("block_count"), layers, err)))
        return rc;
    if ((rc = cfg_u32(cfg, "max_position_embeddings", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("context_length"), v, err))))
        return rc;
    if ((rc = cfg_u32(cfg, "hidden_size", &hidden, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: hidden_size is missing");
    if ((rc = set_u32(m, K("embedding_length"), hidden, err)))
        return rc;
    if ((rc = cfg_u32(cfg, "intermediate_size", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("feed_forward_length"), v, err))))
        return rc;
    if ((rc = cfg_u32(cfg, "num_attention_heads", &heads, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: num_attention_heads is missing");
    if (heads == 0)
        return apr_err_set(err, APR_E_FORMAT, "config.json: num_attention_heads is 0");
    if ((rc = set_u32(m, K("attention.head_count"), heads, err)))
        return rc;
    if ((rc = cfg_u32(cfg, "num_key_value_heads", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("attention.head_count_kv"), v, err))))
        return rc;
    if ((rc = cfg_f32(cfg, "rope_theta", &f, err)) < 0 ||
        (rc == 1 && (rc = set_f32(m, K("rope.freq_base"), f, err))))
        return rc;
    if ((rc = cfg_f32(cfg, "rms_norm_eps", &f, err)) < 0 ||
        (rc == 1 && (rc = set_f32(m, K("attention.layer_norm_rms_epsilon"), f, err))))
        return rc;
    uint32_t head_dim = 0;
    int has_hd = cfg_u32(cfg, "head_dim", &head_dim, err);
    if (has_hd < 0)
        return has_hd;
    if (has_hd == 1 && ((rc = set_u32(m, K("attention.key_length"), head_dim, err)) ||
                        (rc = set_u32(m, K("attention.value_length"), head_dim, err))))
        return rc;
    if (strcmp(arch, "llama") == 0) {
        if ((rc = cfg_u32(cfg, "vocab_size", &v, err)) < 0 ||
            (rc == 1 && (rc = set_u32(m, K("vocab_size"), v, err))))
            return rc;
        if ((rc = set_u32(m, K("rope.dimension_count"), has_hd == 1 ? head_dim : hidden / heads, err)))
            return rc;
    }
#undef K
    return 0;
}

/* ================================================================ tokenizer.json -> KVs */

static const char *const qwen2_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const llama3_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

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
    if (json_to_str(text, &s, "tokenizer.json", err))
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

static int map_special_ids(apr_model *m, const apr_hf_docs *d, uint32_t n_vocab, apr_err *err)
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

static int map_add_flags_and_template(apr_model *m, const apr_hf_docs *d, apr_err *err)
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
    if (!tc)
        return 0;
    const json_t *ct = json_object_get(tc, "chat_template");
    if (json_is_string(ct))
        return set_str(m, "tokenizer.chat_template", json_string_value(ct), err);
    if (json_is_array(ct)) {
        /* [{"name": ..., "template": ...}]: "default" -> tokenizer.chat_template,
         * the others -> tokenizer.chat_template.NAME (gguf-py's add_chat_template). */
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *tmpl = json_string_value(json_object_get(e, "template"));
            if (!name || !tmpl)
                continue;
            char key[256];
            if (!strcmp(name, "default"))
                snprintf(key, sizeof key, "tokenizer.chat_template");
            else
                snprintf(key, sizeof key, "tokenizer.chat_template.%s", name);
            if ((rc = set_str(m, key, tmpl, err)))
                return rc;
        }
        return 0;
    }
    if (d->chat_template)
        return set_str(m, "tokenizer.chat_template", d->chat_template, err);
    return 0;
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
            rc = json_to_str(e, &arr[i], "tokenizer.json merges", err);
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

/* The pre-tokenizer name llama.cpp would pick (it hashes the tokenization of a
 * test text; we recognise the regexes of the tokenizers we write and read). */
static const char *detect_pre(const json_t *tok)
{
    const json_t *pt = json_object_get(tok, "pre_tokenizer");
    const json_t *list = json_object_get(pt, "pretokenizers");
    size_t n = json_is_array(list) ? json_array_size(list) : (pt ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_is_array(list) ? json_array_get(list, i) : pt;
        const char *type = json_string_value(json_object_get(p, "type"));
        if (!type)
            continue;
        if (!strcmp(type, "Split")) {
            const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
            if (re && !strcmp(re, qwen2_regex))
                return "qwen2";
            if (re && !strcmp(re, llama3_regex))
                return "llama-bpe";
        }
        if (!strcmp(type, "ByteLevel") && n == 1 && !json_is_false(json_object_get(p, "use_regex")))
            return "gpt-2";
    }
    return "default";
}

static int map_tokenizer(apr_model *m, const apr_hf_docs *d, apr_err *err)
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
    if ((rc = set_str(m, "tokenizer.ggml.model", gpt2 ? "gpt2" : "llama", err)) ||
        (rc = set_str(m, "tokenizer.ggml.pre", gpt2 ? detect_pre(tok) : "default", err)) ||
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
static int spm_vocab_size(const apr_hf_docs *d, uint32_t *out, apr_err *err)
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
static int map_spm(apr_model *m, const apr_hf_docs *d, apr_err *err)
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

/* ================================================================ apr_gguf records */

static int apply_record_kvs(apr_model *m, const json_t *rec, const char *file, apr_err *err)
{
    const json_t *kvs = json_object_get(rec, "kvs");
    if (kvs && !json_is_array(kvs))
        return apr_err_set(err, APR_E_FORMAT, "%s: apr_gguf.kvs is not a list", file);
    size_t i;
    json_t *e;
    json_array_foreach(kvs, i, e) {
        apr_kv kv;
        int rc = apr_kv_from_json(&kv, e, err);
        if (rc)
            return rc;
        rc = apr_model_set_kv(m, &kv);
        apr_kv_free(&kv);
        if (rc)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    return 0;
}

/* Keep only the listed keys (file-level ones always stay), in the listed order. */
static int apply_record_keys(apr_model *m, const json_t *keys, apr_err *err)
{
    if (!json_is_array(keys))
        return apr_err_set(err, APR_E_FORMAT, "apr_gguf.keys is not a list");
    apr_kv *out = calloc(m->n_kvs ? m->n_kvs : 1, sizeof *out);
    bool *used = calloc(m->n_kvs ? m->n_kvs : 1, sizeof *used);
    if (!out || !used) {
        free(out);
        free(used);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    uint64_t n = 0;
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        const char *key = json_string_value(k);
        for (uint64_t j = 0; key && j < m->n_kvs; j++)
            if (!used[j] && strcmp(m->kvs[j].key, key) == 0) {
                out[n++] = m->kvs[j];
                used[j] = true;
                break;
            }
    }
    for (uint64_t j = 0; j < m->n_kvs; j++) {
        if (used[j])
            continue;
        if (apr_hf_kv_is_file_level(m->kvs[j].key))
            out[n++] = m->kvs[j];
        else
            apr_kv_free(&m->kvs[j]);
    }
    free(used);
    free(m->kvs);
    m->kvs = out;
    m->n_kvs = n;
    return 0;
}

static int docs_to_kvs(apr_model *m, const apr_hf_docs *d, const char *dir_name, bool records, apr_err *err)
{
    int rc;
    if (d->config && (rc = map_config(m, d->config, dir_name, err)))
        return rc;
    /* tokenizer.model wins over tokenizer.json, as in LlamaModel.set_vocab
     * (the BPE tokenizer.json of LLaMA repos has no scores). */
    if (d->spm ? (rc = map_spm(m, d, err)) : d->tokenizer ? (rc = map_tokenizer(m, d, err)) : 0)
        return rc;
    if (!records)
        return 0;
    const json_t *rt = json_object_get(d->tokenizer, "apr_gguf");
    const json_t *rcfg = json_object_get(d->config, "apr_gguf");
    if (rt && (rc = apply_record_kvs(m, rt, "tokenizer.json", err)))
        return rc;
    if (rcfg && (rc = apply_record_kvs(m, rcfg, "config.json", err)))
        return rc;
    const json_t *keys = json_object_get(rcfg, "keys");
    if (!keys)
        keys = json_object_get(rt, "keys");
    if (keys && (rc = apply_record_keys(m, keys, err)))
        return rc;
    return 0;
}

int apr_hf_docs_to_kvs(apr_model *m, const apr_hf_docs *d, const char *dir_name, apr_err *err)
{
    return docs_to_kvs(m, d, dir_name, true, err);
}

/* ================================================================ KVs -> docs */

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

static int build_config(const apr_model *m, json_t **out, apr_err *err)
{
    const apr_arch_config *c = &m->cfg;
    const arch_name *a = NULL;
    for (size_t i = 0; i < sizeof arch_names / sizeof *arch_names; i++)
        if (!strcmp(c->arch, arch_names[i].gguf))
            a = &arch_names[i];
    if (!a)
        return apr_err_set(err, APR_E_UNSUPPORTED, "no HF config for architecture '%s'", c->arch);
    json_t *j = json_object();
    if (!j)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    json_t *archs = json_array();
    json_array_append_new(archs, json_string(a->hf));
    json_object_set_new(j, "architectures", archs);
    const char *name = apr_kv_get_str(m, "general.name");
    if (name)
        json_object_set_new(j, "_name_or_path", json_string(name));
    json_object_set_new(j, "model_type", json_string(a->model_type));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "hidden_size", json_integer(c->hidden));
    json_object_set_new(j, "intermediate_size", json_integer(c->ffn));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    char key[128];
    snprintf(key, sizeof key, "%s.attention.key_length", c->arch);
    /* head_dim is written when the source recorded it or when it is not
     * hidden / heads (HF would otherwise assume the latter). */
    if (apr_model_kv(m, key) || c->head_dim * c->n_heads != c->hidden)
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    snprintf(key, sizeof key, "%s.context_length", c->arch);
    if (apr_model_kv(m, key))
        json_object_set_new(j, "max_position_embeddings", json_integer(c->ctx_len));
    json_object_set_new(j, "rms_norm_eps", apr_json_f32(c->rms_eps));
    json_object_set_new(j, "rope_theta", apr_json_f32(c->rope_theta));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    if (!strcmp(c->arch, "llama"))
        json_object_set_new(j, "attention_bias", json_boolean(c->qkv_bias));
    /* torch_dtype: the dtype of the weight matrices (2-D tensors). */
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 2 && apr_hf_torch_dtype(m->tensors[i].dtype)) {
            json_object_set_new(j, "torch_dtype", json_string(apr_hf_torch_dtype(m->tensors[i].dtype)));
            break;
        }
    if (m->has_tok && m->tok.bos_id >= 0)
        json_object_set_new(j, "bos_token_id", json_integer(m->tok.bos_id));
    if (m->has_tok && m->tok.eos_id >= 0)
        json_object_set_new(j, "eos_token_id", json_integer(m->tok.eos_id));
    /* SpecialVocab reads {typ}_token_id from config.json too: this keeps the
     * unknown id when tokenizer.model is the only tokenizer file. */
    if (m->has_tok && m->tok.unk_id >= 0)
        json_object_set_new(j, "unk_token_id", json_integer(m->tok.unk_id));
    json_object_set_new(j, "use_cache", json_true());
    *out = j;
    return 0;
}

static json_t *added_token_json(const apr_model *m, uint32_t id, bool special)
{
    json_t *a = json_object();
    json_object_set_new(a, "id", json_integer(id));
    json_object_set_new(a, "content", jstr_n(&m->tok.tokens[id]));
    json_object_set_new(a, "single_word", json_false());
    json_object_set_new(a, "lstrip", json_false());
    json_object_set_new(a, "rstrip", json_false());
    json_object_set_new(a, "normalized", json_boolean(!special));
    json_object_set_new(a, "special", json_boolean(special));
    return a;
}

static json_t *template_processing(const apr_model *m)
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
                json_array_append_new(list, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                      tok_str(m, t->bos_id), "type_id", part));
            json_array_append_new(list, json_pack("{s:{s:s,s:i}}", "Sequence", "id", part ? "B" : "A",
                                                  "type_id", part));
            if (eos)
                json_array_append_new(list, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                      tok_str(m, t->eos_id), "type_id", part));
        }
    }
    for (int k = 0; k < 2; k++) {
        int32_t id = k ? t->eos_id : t->bos_id;
        if (!(k ? eos : bos))
            continue;
        json_object_set_new(specials, tok_str(m, id),
                            json_pack("{s:s,s:[i],s:[s]}", "id", tok_str(m, id), "ids", id, "tokens",
                                      tok_str(m, id)));
    }
    return json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                     "special_tokens", specials);
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

static int build_tokenizer(const apr_model *m, bool spm, json_t **out_tok, json_t **out_tc, apr_err *err)
{
    const apr_tokenizer *t = &m->tok;
    bool gpt2 = !strcmp(t->model, "gpt2");
    if (!gpt2 && strcmp(t->model, "llama") != 0)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "tokenizer model '%s' has no HF tokenizer.json mapping (llama, gpt2)", t->model);
    json_t *j = json_object(), *added = json_array(), *model = json_object();
    int rc = 0;
    json_object_set_new(j, "version", json_string("1.0"));
    json_object_set_new(j, "truncation", json_null());
    json_object_set_new(j, "padding", json_null());
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        int32_t ty = t->token_type ? t->token_type[i] : 1;
        if (ty == 2 || ty == 3 || ty == 4) {
            json_t *a = added_token_json(m, i, ty != 4);
            if (!json_object_get(a, "content")) {
                json_decref(a);
                rc = apr_err_set(err, APR_E_UNSUPPORTED, "token %u is not valid UTF-8", i);
                goto fail;
            }
            json_array_append_new(added, a);
        }
    }
    json_object_set_new(j, "added_tokens", added);
    added = NULL;
    if (gpt2) {
        const char *re = !strcmp(t->pre, "qwen2") ? qwen2_regex
                         : (!strcmp(t->pre, "llama-bpe") || !strcmp(t->pre, "llama3")) ? llama3_regex : NULL;
        json_object_set_new(j, "normalizer", re == qwen2_regex ? json_pack("{s:s}", "type", "NFC") : json_null());
        if (re)
            json_object_set_new(j, "pre_tokenizer",
                                json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},o]}", "type", "Sequence",
                                          "pretokenizers", "type", "Split", "pattern", "Regex", re,
                                          "behavior", "Isolated", "invert", 0, byte_level(false)));
        else
            json_object_set_new(j, "pre_tokenizer", byte_level(true));
        json_t *tp = template_processing(m);
        json_object_set_new(j, "post_processor", tp ? tp : byte_level(false));
        json_object_set_new(j, "decoder", byte_level(false));
        json_object_set_new(model, "type", json_string("BPE"));
        json_object_set_new(model, "dropout", json_null());
        json_object_set_new(model, "unk_token", json_null());
        json_object_set_new(model, "continuing_subword_prefix", json_string(""));
        json_object_set_new(model, "end_of_word_suffix", json_string(""));
        json_object_set_new(model, "fuse_unk", json_false());
        json_object_set_new(model, "byte_fallback", json_false());
        json_object_set_new(model, "ignore_merges", json_false());
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
            json_t *id = json_integer(i);
            if (json_object_set_new(vocab, t->tokens[i].s, id)) {
                json_decref(vocab);
                rc = apr_err_set(err, APR_E_UNSUPPORTED, "token %u is not valid UTF-8", i);
                goto fail;
            }
        }
        json_object_set_new(model, "vocab", vocab);
        json_t *merges = json_array();
        for (uint32_t i = 0; i < t->n_merges; i++)
            json_array_append_new(merges, jstr_n(&t->merges[i]));
        json_object_set_new(model, "merges", merges);
    } else {
        json_object_set_new(j, "normalizer", json_null());
        json_object_set_new(j, "pre_tokenizer",
                            json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                                      "prepend_scheme", "first", "split", 0));
        json_t *tp = template_processing(m);
        json_object_set_new(j, "post_processor", tp ? tp : json_null());
        json_object_set_new(j, "decoder",
                            json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s},{s:s},{s:s,s:s,s:i,s:i}]}", "type",
                                      "Sequence", "decoders", "type", "Replace", "pattern", "String",
                                      "\xe2\x96\x81", "content", " ", "type", "ByteFallback", "type", "Fuse",
                                      "type", "Strip", "content", " ", "start", 1, "stop", 0));
        json_object_set_new(model, "type", json_string("Unigram"));
        json_object_set_new(model, "unk_id", t->unk_id >= 0 ? json_integer(t->unk_id) : json_null());
        json_t *vocab = json_array();
        for (uint32_t i = 0; i < t->n_tokens; i++) {
            float s = t->scores ? t->scores[i] : 0.0f;
            json_t *piece = jstr_n(&t->tokens[i]), *score = apr_json_f32(s);
            if (!piece || !score) {
                json_decref(piece);
                json_decref(score);
                json_decref(vocab);
                rc = apr_err_set(err, APR_E_UNSUPPORTED, "token %u: %s", i,
                                 piece ? "score is not finite" : "not valid UTF-8");
                goto fail;
            }
            json_array_append_new(vocab, json_pack("[o,o]", piece, score));
        }
        json_object_set_new(model, "vocab", vocab);
        json_object_set_new(model, "byte_fallback", json_true());
    }
    json_object_set_new(j, "model", model);
    model = NULL;

    /* tokenizer_config.json */
    json_t *tc = json_object();
    json_object_set_new(tc, "add_bos_token", json_boolean(t->add_bos));
    json_object_set_new(tc, "add_eos_token", json_boolean(t->add_eos));
    json_t *dec = json_object();
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        int32_t ty = t->token_type ? t->token_type[i] : 1;
        if (in_added_decoder(m, i, spm)) {
            char id[16];
            snprintf(id, sizeof id, "%u", i);
            json_t *a = added_token_json(m, i, ty != 4);
            json_object_del(a, "id");
            json_object_set_new(dec, id, a);
        }
    }
    json_object_set_new(tc, "added_tokens_decoder", dec);
    static const char *const fields[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const int32_t ids[] = {t->bos_id, t->eos_id, t->unk_id, t->pad_id};
    for (int k = 0; k < 4; k++) {
        const char *s = tok_str(m, ids[k]);
        json_object_set_new(tc, fields[k], s ? json_string(s) : json_null());
    }
    if (t->chat_template)
        json_object_set_new(tc, "chat_template", json_string(t->chat_template));
    json_object_set_new(tc, "clean_up_tokenization_spaces", json_false());
    if (!gpt2)
        json_object_set_new(tc, "legacy", json_false());
    if (m->has_cfg && m->cfg.ctx_len)
        json_object_set_new(tc, "model_max_length", json_integer(m->cfg.ctx_len));
    const char *cls = !strcmp(m->cfg.arch, "qwen2") ? "Qwen2Tokenizer"
                      : gpt2 ? "PreTrainedTokenizerFast" : "LlamaTokenizer";
    json_object_set_new(tc, "tokenizer_class", json_string(cls));
    *out_tok = j;
    *out_tc = tc;
    return 0;
fail:
    json_decref(added);
    json_decref(model);
    json_decref(j);
    return rc;
}

static json_t *build_gen_config(const apr_model *m)
{
    if (!m->has_tok || (m->tok.bos_id < 0 && m->tok.eos_id < 0))
        return NULL;
    json_t *g = json_object();
    json_object_set_new(g, "_from_model_config", json_true());
    if (m->tok.bos_id >= 0)
        json_object_set_new(g, "bos_token_id", json_integer(m->tok.bos_id));
    if (m->tok.eos_id >= 0)
        json_object_set_new(g, "eos_token_id", json_integer(m->tok.eos_id));
    return g;
}

/* Run the reader on the docs and record every KV of m it does not reproduce. */
static int add_records(const apr_model *m, apr_hf_docs *d, apr_err *err)
{
    apr_model *std = apr_model_new(APR_FMT_SAFETENSORS);
    if (!std)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = docs_to_kvs(std, d, NULL, false, err);
    if (rc) {
        apr_model_free(std);
        return rc;
    }
    json_t *cfg_kvs = json_array(), *tok_kvs = json_array(), *keys = json_array();
    bool need = false;
    for (uint64_t i = 0; i < m->n_kvs && !rc; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (apr_hf_kv_is_file_level(kv->key))
            continue;
        json_array_append_new(keys, json_string(kv->key));
        const apr_kv *s = apr_model_kv(std, kv->key);
        if (s && apr_kv_equal(s, kv))
            continue;
        need = true;
        json_t *r = apr_kv_to_json(kv, err);
        if (!r) {
            rc = err ? err->code : APR_E_ARG;
            break;
        }
        bool tok_key = strncmp(kv->key, "tokenizer.", 10) == 0;
        json_array_append_new(tok_key && d->tokenizer ? tok_kvs : (d->config ? cfg_kvs : tok_kvs), r);
    }
    for (uint64_t i = 0; i < std->n_kvs && !need; i++)
        if (!apr_model_kv(m, std->kvs[i].key))
            need = true; /* the reader would add a key the model does not have */
    apr_model_free(std);
    if (!rc && need) {
        json_t *host = d->config ? d->config : d->tokenizer;
        json_t *rec = json_object();
        json_object_set(rec, "keys", keys);
        json_object_set(rec, "kvs", host == d->config ? cfg_kvs : tok_kvs);
        json_object_set_new(host, "apr_gguf", rec);
        if (host == d->config && json_array_size(tok_kvs)) {
            json_t *trec = json_object();
            json_object_set(trec, "kvs", tok_kvs);
            json_object_set_new(d->tokenizer, "apr_gguf", trec);
        }
    }
    json_decref(cfg_kvs);
    json_decref(tok_kvs);
    json_decref(keys);
    return rc;
}

/* d->spm for a SentencePiece vocabulary, or NULL when sentencepiece could
 * not load one made of these tokens (tokenizer.json then carries it alone). */
static int build_spm(const apr_model *m, apr_hf_docs *d, apr_err *err)
{
    apr_spm *s = calloc(1, sizeof *s);
    if (!s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    char why[160];
    int rc = apr_spm_from_model(m, s, why, sizeof why, err);
    if (rc) {
        free(s);
        return rc < 0 ? rc : 0;
    }
    d->spm = s;
    return 0;
}

int apr_hf_docs_from_model(const apr_model *m, apr_hf_docs *d, apr_err *err)
{
    memset(d, 0, sizeof *d);
    int rc = 0;
    if (m->has_cfg && (rc = build_config(m, &d->config, err)))
        goto fail;
    /* A vocabulary type HF's files cannot express (not "llama" / "gpt2") gets
     * no tokenizer.json: its KVs then travel in config.json's record. */
    bool hf_tok = m->has_tok && (!strcmp(m->tok.model, "llama") || !strcmp(m->tok.model, "gpt2"));
    if (hf_tok && !strcmp(m->tok.model, "llama") && (rc = build_spm(m, d, err)))
        goto fail;
    if (hf_tok && (rc = build_tokenizer(m, d->spm != NULL, &d->tokenizer, &d->tokenizer_config, err)))
        goto fail;
    d->gen_config = build_gen_config(m);
    if ((d->config || d->tokenizer) && (rc = add_records(m, d, err)))
        goto fail;
    return 0;
fail:
    apr_hf_docs_free(d);
    return rc;
}
