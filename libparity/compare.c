/* compare.c - tensor-by-tensor and key-by-key equality of two models (the
 * check behind `apr verify --roundtrip`). Tensors are matched by name, not by
 * position: a format may store them in another order without changing a byte
 * of any payload.
 */
#include "parity.h"

#include <stdio.h>
#include <string.h>

#define PROV_PREFIX "apr.provenance."

static bool ignored(const char *key, const char *const *prefixes)
{
    if (!strncmp(key, PROV_PREFIX, strlen(PROV_PREFIX)))
        return true;
    for (size_t i = 0; prefixes && prefixes[i]; i++)
        if (!strncmp(key, prefixes[i], strlen(prefixes[i])))
            return true;
    return false;
}

static const char *kv_type_name(apr_kv_type t)
{
    const char *n = apr_kv_type_name(t);
    return n ? n : "?";
}

/* 0 equal; 1 different with a message. */
static int kv_diff(const apr_kv *a, const apr_kv *b, char *diff, size_t cap)
{
    if (a->type != b->type) {
        snprintf(diff, cap, "metadata %s: type %s vs %s", a->key, kv_type_name(a->type),
                 kv_type_name(b->type));
        return 1;
    }
    if (a->type == APR_KV_STRING) {
        if (a->str.len != b->str.len || memcmp(a->str.s, b->str.s, a->str.len)) {
            snprintf(diff, cap, "metadata %s: \"%.60s\" vs \"%.60s\"", a->key, a->str.s, b->str.s);
            return 1;
        }
        return 0;
    }
    if (a->type != APR_KV_ARRAY) {
        const size_t sz = apr_kv_type_size(a->type);
        if (memcmp(&a->v, &b->v, sz)) {
            snprintf(diff, cap, "metadata %s: scalar values differ", a->key);
            return 1;
        }
        return 0;
    }
    if (a->arr_type != b->arr_type || a->count != b->count) {
        snprintf(diff, cap, "metadata %s: array of %llu %s vs %llu %s", a->key,
                 (unsigned long long)a->count, kv_type_name(a->arr_type),
                 (unsigned long long)b->count, kv_type_name(b->arr_type));
        return 1;
    }
    if (a->arr_type == APR_KV_STRING) {
        const apr_str *x = a->arr, *y = b->arr;
        for (uint64_t i = 0; i < a->count; i++) {
            if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len)) {
                snprintf(diff, cap, "metadata %s[%llu]: \"%.60s\" vs \"%.60s\"", a->key,
                         (unsigned long long)i, x[i].s, y[i].s);
                return 1;
            }
        }
        return 0;
    }
    const size_t sz = apr_kv_type_size(a->arr_type);
    const uint8_t *x = a->arr, *y = b->arr;
    for (uint64_t i = 0; i < a->count; i++) {
        if (memcmp(x + i * sz, y + i * sz, sz)) {
            snprintf(diff, cap, "metadata %s[%llu]: values differ", a->key, (unsigned long long)i);
            return 1;
        }
    }
    return 0;
}

static const apr_kv *find_kv(const apr_model *m, const char *key)
{
    for (uint64_t i = 0; i < m->n_kvs; i++)
        if (!strcmp(m->kvs[i].key, key))
            return &m->kvs[i];
    return NULL;
}

static int tensor_diff(const apr_tensor *a, const apr_tensor *b, char *diff, size_t cap)
{
    if (a->dtype != b->dtype) {
        snprintf(diff, cap, "tensor %s: dtype %s vs %s", a->name, apr_dtype_name(a->dtype),
                 apr_dtype_name(b->dtype));
        return 1;
    }
    if (a->ndim != b->ndim || memcmp(a->dims, b->dims, a->ndim * sizeof a->dims[0])) {
        snprintf(diff, cap, "tensor %s: shapes differ (%u vs %u dims, outer %llu vs %llu)", a->name,
                 a->ndim, b->ndim, (unsigned long long)a->dims[0], (unsigned long long)b->dims[0]);
        return 1;
    }
    if (a->dtype == APR_DT_ROWCAT) {
        if (a->n_parts != b->n_parts) {
            snprintf(diff, cap, "tensor %s: %u fused parts vs %u", a->name, a->n_parts, b->n_parts);
            return 1;
        }
        for (uint32_t p = 0; p < a->n_parts && p < APR_MAX_PARTS; p++) {
            if (a->parts[p].dtype != b->parts[p].dtype || a->parts[p].rows != b->parts[p].rows ||
                a->parts[p].nbytes != b->parts[p].nbytes) {
                snprintf(diff, cap, "tensor %s: fused part %u differs (%s x %llu rows vs %s x %llu)",
                         a->name, p, apr_dtype_name(a->parts[p].dtype),
                         (unsigned long long)a->parts[p].rows, apr_dtype_name(b->parts[p].dtype),
                         (unsigned long long)b->parts[p].rows);
                return 1;
            }
        }
    }
    if (a->nbytes != b->nbytes) {
        snprintf(diff, cap, "tensor %s: %llu payload bytes vs %llu", a->name,
                 (unsigned long long)a->nbytes, (unsigned long long)b->nbytes);
        return 1;
    }
    if (a->nbytes && (!a->data || !b->data)) {
        snprintf(diff, cap, "tensor %s: payload missing", a->name);
        return 1;
    }
    if (a->nbytes && memcmp(a->data, b->data, a->nbytes)) {
        uint64_t i = 0;
        while (a->data[i] == b->data[i])
            i++;
        snprintf(diff, cap, "tensor %s: payload byte %llu differs (0x%02x vs 0x%02x)", a->name,
                 (unsigned long long)i, a->data[i], b->data[i]);
        return 1;
    }
    return 0;
}

int apr_models_compare(const apr_model *a, const apr_model *b, const char *const *ignore_prefixes,
                       char *diff, size_t cap)
{
    if (cap)
        diff[0] = 0;
    if (!a || !b)
        return APR_E_ARG;
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const apr_tensor *tb = apr_model_tensor(b, a->tensors[i].name);
        if (!tb) {
            snprintf(diff, cap, "tensor %s: missing in the second model", a->tensors[i].name);
            return 1;
        }
        if (tensor_diff(&a->tensors[i], tb, diff, cap))
            return 1;
    }
    if (a->n_tensors != b->n_tensors) {
        for (uint64_t i = 0; i < b->n_tensors; i++) {
            if (!apr_model_tensor(a, b->tensors[i].name)) {
                snprintf(diff, cap, "tensor %s: missing in the first model", b->tensors[i].name);
                return 1;
            }
        }
        snprintf(diff, cap, "tensor count %llu vs %llu (duplicate names)",
                 (unsigned long long)a->n_tensors, (unsigned long long)b->n_tensors);
        return 1;
    }
    for (uint64_t i = 0; i < a->n_kvs; i++) {
        const apr_kv *ka = &a->kvs[i];
        if (ignored(ka->key, ignore_prefixes))
            continue;
        const apr_kv *kb = find_kv(b, ka->key);
        if (!kb) {
            snprintf(diff, cap, "metadata %s: missing in the second model", ka->key);
            return 1;
        }
        if (kv_diff(ka, kb, diff, cap))
            return 1;
    }
    for (uint64_t i = 0; i < b->n_kvs; i++) {
        const apr_kv *kb = &b->kvs[i];
        if (!ignored(kb->key, ignore_prefixes) && !find_kv(a, kb->key)) {
            snprintf(diff, cap, "metadata %s: missing in the first model", kb->key);
            return 1;
        }
    }
    return 0;
}
