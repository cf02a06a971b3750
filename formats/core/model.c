/* model.c - errors, dtype table, typed KVs and the in-memory model view. */
#include "formats.h"
#include "apr_internal.h" /* apr_model_adopt_part */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int apr_err_set(apr_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

/* ---------------------------------------------------------------- dtypes */

static const apr_dtype_info dtype_table[APR_DT_COUNT] = {
    [APR_DT_F32] = {"F32", 1, 4, false},
    [APR_DT_F16] = {"F16", 1, 2, false},
    [APR_DT_Q4_0] = {"Q4_0", 32, 18, true},
    [APR_DT_Q4_1] = {"Q4_1", 32, 20, true},
    [APR_DT_Q5_0] = {"Q5_0", 32, 22, true},
    [APR_DT_Q5_1] = {"Q5_1", 32, 24, true},
    [APR_DT_Q8_0] = {"Q8_0", 32, 34, true},
    [APR_DT_Q8_1] = {"Q8_1", 32, 36, true},
    [APR_DT_Q2_K] = {"Q2_K", 256, 84, true},
    [APR_DT_Q3_K] = {"Q3_K", 256, 110, true},
    [APR_DT_Q4_K] = {"Q4_K", 256, 144, true},
    [APR_DT_Q5_K] = {"Q5_K", 256, 176, true},
    [APR_DT_Q6_K] = {"Q6_K", 256, 210, true},
    [APR_DT_Q8_K] = {"Q8_K", 256, 292, true},
    /* the rest of ggml's block types (ggml-common.h's block_* structs, the
     * type_size of ggml.c's type_traits): readable and copied byte for
     * byte; libquant dequantizes the ones whose layout it implements */
    [APR_DT_IQ2_XXS] = {"IQ2_XXS", 256, 66, true},
    [APR_DT_IQ2_XS] = {"IQ2_XS", 256, 74, true},
    [APR_DT_IQ3_XXS] = {"IQ3_XXS", 256, 98, true},
    [APR_DT_IQ1_S] = {"IQ1_S", 256, 50, true},
    [APR_DT_IQ4_NL] = {"IQ4_NL", 32, 18, true},
    [APR_DT_IQ3_S] = {"IQ3_S", 256, 110, true},
    [APR_DT_IQ2_S] = {"IQ2_S", 256, 82, true},
    [APR_DT_IQ4_XS] = {"IQ4_XS", 256, 136, true},
    [APR_DT_IQ1_M] = {"IQ1_M", 256, 56, true},
    [APR_DT_TQ1_0] = {"TQ1_0", 256, 54, true},
    [APR_DT_TQ2_0] = {"TQ2_0", 256, 66, true},
    [APR_DT_MXFP4] = {"MXFP4", 32, 17, true},
    [APR_DT_NVFP4] = {"NVFP4", 64, 36, true},
    [APR_DT_Q1_0] = {"Q1_0", 128, 18, true},
    [APR_DT_Q2_0] = {"Q2_0", 64, 18, true},
    [APR_DT_I8] = {"I8", 1, 1, false},
    [APR_DT_I16] = {"I16", 1, 2, false},
    [APR_DT_I32] = {"I32", 1, 4, false},
    [APR_DT_I64] = {"I64", 1, 8, false},
    [APR_DT_F64] = {"F64", 1, 8, false},
    [APR_DT_BF16] = {"BF16", 1, 2, false},
    [APR_DT_U8] = {"U8", 1, 1, false},
    [APR_DT_U16] = {"U16", 1, 2, false},
    [APR_DT_U32] = {"U32", 1, 4, false},
    [APR_DT_U64] = {"U64", 1, 8, false},
    [APR_DT_BOOL] = {"BOOL", 1, 1, false},
};

const apr_dtype_info *apr_dtype_get(int code)
{
    if (code < 0 || code >= APR_DT_COUNT || !dtype_table[code].name)
        return NULL;
    return &dtype_table[code];
}

int apr_dtype_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < APR_DT_COUNT; i++)
        if (dtype_table[i].name && strcasecmp(dtype_table[i].name, name) == 0)
            return i;
    return -1;
}

const char *apr_dtype_name(int code)
{
    const apr_dtype_info *d = apr_dtype_get(code);
    /* ROWCAT has no table entry on purpose: its size comes from its parts,
     * so apr_dtype_get() must keep refusing it; it still has a name. */
    if (code == APR_DT_ROWCAT)
        return "ROWCAT";
    return d ? d->name : "?";
}

uint64_t apr_dtype_row_bytes(int code, uint64_t n)
{
    const apr_dtype_info *d = apr_dtype_get(code);
    if (!d || n % d->block_elems)
        return 0;
    uint64_t blocks = n / d->block_elems;
    if (blocks > UINT64_MAX / d->block_bytes)
        return 0;
    return blocks * d->block_bytes;
}

bool apr_dims_count(uint32_t ndim, const uint64_t *dims, uint64_t *out)
{
    uint64_t n = 1;
    if (ndim > APR_MAX_DIMS)
        return false;
    for (uint32_t i = 0; i < ndim; i++) {
        if (dims[i] != 0 && n > UINT64_MAX / dims[i])
            return false;
        n *= dims[i];
    }
    *out = n;
    return true;
}

bool apr_dtype_tensor_bytes(int code, uint32_t ndim, const uint64_t *dims, uint64_t *out)
{
    const apr_dtype_info *d = apr_dtype_get(code);
    uint64_t n;
    if (!d || !apr_dims_count(ndim, dims, &n))
        return false;
    uint64_t inner = ndim ? dims[ndim - 1] : 1;
    if (inner % d->block_elems)
        return false;
    uint64_t blocks = n / d->block_elems;
    if (blocks > UINT64_MAX / d->block_bytes)
        return false;
    *out = blocks * d->block_bytes;
    return true;
}

/* ---------------------------------------------------------------- KVs */

size_t apr_kv_type_size(apr_kv_type t)
{
    switch (t) {
    case APR_KV_U8: case APR_KV_I8: case APR_KV_BOOL: return 1;
    case APR_KV_U16: case APR_KV_I16: return 2;
    case APR_KV_U32: case APR_KV_I32: case APR_KV_F32: return 4;
    case APR_KV_U64: case APR_KV_I64: case APR_KV_F64: return 8;
    default: return 0;
    }
}

const char *apr_kv_type_name(apr_kv_type t)
{
    static const char *names[APR_KV_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
        "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < APR_KV_TYPE_COUNT ? names[t] : "?";
}

void apr_kv_free(apr_kv *kv)
{
    if (!kv)
        return;
    free(kv->key);
    free(kv->str.s);
    if (kv->type == APR_KV_ARRAY && kv->arr_type == APR_KV_STRING && kv->arr) {
        apr_str *s = kv->arr;
        for (uint64_t i = 0; i < kv->count; i++)
            free(s[i].s);
    }
    free(kv->arr);
    memset(kv, 0, sizeof *kv);
}

static char *dup_bytes(const char *s, uint64_t len)
{
    char *p = malloc(len + 1);
    if (!p)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = 0;
    return p;
}

int apr_kv_copy(apr_kv *dst, const apr_kv *src)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    dst->v = src->v;
    dst->arr_type = src->arr_type;
    dst->count = src->count;
    dst->key = strdup(src->key ? src->key : "");
    if (!dst->key)
        goto oom;
    if (src->type == APR_KV_STRING) {
        dst->str.len = src->str.len;
        if (!(dst->str.s = dup_bytes(src->str.s ? src->str.s : "", src->str.len)))
            goto oom;
    } else if (src->type == APR_KV_ARRAY) {
        if (src->arr_type == APR_KV_STRING) {
            dst->arr = calloc(src->count ? src->count : 1, sizeof(apr_str));
            if (!dst->arr)
                goto oom;
            apr_str *d = dst->arr;
            const apr_str *s = src->arr;
            for (uint64_t i = 0; i < src->count; i++) {
                d[i].len = s[i].len;
                if (!(d[i].s = dup_bytes(s[i].s ? s[i].s : "", s[i].len)))
                    goto oom;
            }
        } else {
            size_t es = apr_kv_type_size(src->arr_type);
            if (!es)
                return APR_E_ARG;
            dst->arr = malloc(src->count ? src->count * es : 1);
            if (!dst->arr)
                goto oom;
            if (src->count)
                memcpy(dst->arr, src->arr, src->count * es);
        }
    }
    return 0;
oom:
    apr_kv_free(dst);
    return APR_E_NOMEM;
}

/* ---------------------------------------------------------------- model */

apr_model *apr_model_new(apr_format fmt)
{
    apr_model *m = calloc(1, sizeof *m);
    if (m)
        m->format = fmt;
    return m;
}

void apr_model_free(apr_model *m)
{
    if (!m)
        return;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].name);
        free(m->tensors[i].owned);
    }
    free(m->tensors);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        apr_kv_free(&m->kvs[i]);
    free(m->kvs);
    for (uint32_t i = 0; i < m->n_maps; i++) {
        apr_unmap_file(&m->maps[i]);
        free(m->maps[i].path);
    }
    free(m->maps);
    free(m->path);
    free(m->provenance_json);
    free(m->raw_meta_json);
    free(m->hf_chat_specials);
    free(m);
}

const char *apr_format_name(apr_format f)
{
    switch (f) {
    case APR_FMT_GGUF: return "gguf";
    case APR_FMT_SAFETENSORS: return "safetensors";
    case APR_FMT_APR: return "apr";
    default: return "unknown";
    }
}

const apr_tensor *apr_model_tensor(const apr_model *m, const char *name)
{
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

const apr_kv *apr_model_kv(const apr_model *m, const char *key)
{
    for (uint64_t i = 0; i < m->n_kvs; i++)
        if (strcmp(m->kvs[i].key, key) == 0)
            return &m->kvs[i];
    return NULL;
}

/* Any integer KV as int64 (u64 beyond INT64_MAX fails). */
static bool kv_as_i64(const apr_kv *kv, int64_t *out)
{
    switch (kv->type) {
    case APR_KV_U8: *out = kv->v.u8; return true;
    case APR_KV_I8: *out = kv->v.i8; return true;
    case APR_KV_U16: *out = kv->v.u16; return true;
    case APR_KV_I16: *out = kv->v.i16; return true;
    case APR_KV_U32: *out = kv->v.u32; return true;
    case APR_KV_I32: *out = kv->v.i32; return true;
    case APR_KV_I64: *out = kv->v.i64; return true;
    case APR_KV_U64:
        if (kv->v.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)kv->v.u64;
        return true;
    default: return false;
    }
}

bool apr_kv_get_u32(const apr_model *m, const char *key, uint32_t *out)
{
    const apr_kv *kv = apr_model_kv(m, key);
    int64_t v;
    if (!kv || !kv_as_i64(kv, &v) || v < 0 || v > (int64_t)UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

bool apr_kv_get_f32(const apr_model *m, const char *key, float *out)
{
    const apr_kv *kv = apr_model_kv(m, key);
    int64_t v;
    if (!kv)
        return false;
    if (kv->type == APR_KV_F32) { *out = kv->v.f32; return true; }
    if (kv->type == APR_KV_F64) { *out = (float)kv->v.f64; return true; }
    if (kv_as_i64(kv, &v)) { *out = (float)v; return true; }
    return false;
}

bool apr_kv_get_bool(const apr_model *m, const char *key, bool *out)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv || kv->type != APR_KV_BOOL)
        return false;
    *out = kv->v.b != 0;
    return true;
}

const char *apr_kv_get_str(const apr_model *m, const char *key)
{
    const apr_kv *kv = apr_model_kv(m, key);
    return kv && kv->type == APR_KV_STRING ? kv->str.s : NULL;
}

int apr_model_remove_kv(apr_model *m, const char *key)
{
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        if (strcmp(m->kvs[i].key, key) == 0) {
            apr_kv_free(&m->kvs[i]);
            memmove(&m->kvs[i], &m->kvs[i + 1], (m->n_kvs - i - 1) * sizeof *m->kvs);
            m->n_kvs--;
            return 0;
        }
    }
    return APR_E_ARG;
}

int apr_model_set_kv(apr_model *m, const apr_kv *kv)
{
    apr_kv copy;
    int rc = apr_kv_copy(&copy, kv);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        if (strcmp(m->kvs[i].key, kv->key) == 0) {
            apr_kv_free(&m->kvs[i]);
            m->kvs[i] = copy;
            return 0;
        }
    }
    apr_kv *nk = realloc(m->kvs, (m->n_kvs + 1) * sizeof *nk);
    if (!nk) {
        apr_kv_free(&copy);
        return APR_E_NOMEM;
    }
    m->kvs = nk;
    m->kvs[m->n_kvs++] = copy;
    return 0;
}

static int set_scalar(apr_model *m, const char *key, apr_kv_type t, apr_kv_scalar v)
{
    apr_kv kv = {0};
    kv.key = (char *)key;
    kv.type = t;
    kv.v = v;
    return apr_model_set_kv(m, &kv);
}

int apr_model_set_kv_u32(apr_model *m, const char *key, uint32_t v)
{
    return set_scalar(m, key, APR_KV_U32, (apr_kv_scalar){.u32 = v});
}

int apr_model_set_kv_i32(apr_model *m, const char *key, int32_t v)
{
    return set_scalar(m, key, APR_KV_I32, (apr_kv_scalar){.i32 = v});
}

int apr_model_set_kv_f32(apr_model *m, const char *key, float v)
{
    return set_scalar(m, key, APR_KV_F32, (apr_kv_scalar){.f32 = v});
}

int apr_model_set_kv_bool(apr_model *m, const char *key, bool v)
{
    return set_scalar(m, key, APR_KV_BOOL, (apr_kv_scalar){.b = v ? 1 : 0});
}

int apr_model_set_kv_str(apr_model *m, const char *key, const char *v)
{
    apr_kv kv = {0};
    kv.key = (char *)key;
    kv.type = APR_KV_STRING;
    kv.str.s = (char *)v;
    kv.str.len = strlen(v);
    return apr_model_set_kv(m, &kv);
}

/* A new zeroed tensor entry named name at the end of m's table; the caller
 * fills the rest and then counts it (m->n_tensors++). NULL on a duplicate
 * name or out of memory. */
apr_tensor *apr_model_append_tensor(apr_model *m, const char *name, apr_err *err)
{
    if (apr_model_tensor(m, name)) {
        apr_err_set(err, APR_E_ARG, "duplicate tensor name '%s'", name);
        return NULL;
    }
    apr_tensor *nt = realloc(m->tensors, (m->n_tensors + 1) * sizeof *nt);
    if (!nt) {
        apr_err_set(err, APR_E_NOMEM, "out of memory");
        return NULL;
    }
    m->tensors = nt;
    apr_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        apr_err_set(err, APR_E_NOMEM, "out of memory");
        return NULL;
    }
    return t;
}

int apr_model_adopt_part(apr_model *m, apr_model *part, uint32_t k, const char *what, apr_err *err)
{
    apr_mapping *nm = realloc(m->maps, (m->n_maps + 1) * sizeof *nm);
    if (!nm)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    m->maps = nm;
    for (uint64_t i = 0; i < part->n_tensors; i++) {
        const apr_tensor *s = &part->tensors[i];
        apr_err e2 = {0};
        apr_tensor *t = apr_model_append_tensor(m, s->name, &e2);
        if (!t && e2.code == APR_E_NOMEM)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        if (!t)
            return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s' is in two %s", part->path, s->name, what);
        char *name = t->name;
        *t = *s;
        t->name = name;
        t->shard = k;
        m->n_tensors++;
    }
    m->maps[m->n_maps++] = part->maps[0];
    part->n_maps = 0; /* the mapping is m's now */
    return 0;
}

int apr_model_add_tensor(apr_model *m, const char *name, apr_dtype dt, uint32_t ndim,
                         const uint64_t *dims, const void *data, uint64_t nbytes,
                         bool take_ownership, apr_err *err)
{
    uint64_t expect;
    if (ndim > APR_MAX_DIMS)
        return apr_err_set(err, APR_E_ARG, "tensor '%s': %u dims (max %d)", name, ndim, APR_MAX_DIMS);
    if (!apr_dtype_tensor_bytes(dt, ndim, dims, &expect))
        return apr_err_set(err, APR_E_ARG, "tensor '%s': dtype %s does not fit its shape",
                           name, apr_dtype_name(dt));
    if (expect != nbytes)
        return apr_err_set(err, APR_E_ARG, "tensor '%s': %llu bytes given, shape needs %llu", name,
                           (unsigned long long)nbytes, (unsigned long long)expect);
    apr_err append_err = {0};
    apr_tensor *t = apr_model_append_tensor(m, name, &append_err);
    if (!t)
        return apr_err_set(err, append_err.code, "%s", append_err.msg);
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->dims, dims, ndim * sizeof *dims);
    t->nbytes = nbytes;
    t->data = data;
    if (take_ownership)
        t->owned = (uint8_t *)data;
    m->n_tensors++;
    return 0;
}
