/* safetensors.c - HF safetensors reader and writer, single files and sharded sets.
 *
 * File layout: u64 LE header length N, N bytes of JSON (an object: tensor name
 * -> {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
 * "__metadata__" object of strings), then the data section; offsets are
 * relative to the data section. Everything is validated before use: N against
 * the file size and a cap, every shape product against its dtype and offsets
 * (with overflow checks), offsets against the data section, no two tensors
 * overlapping, no duplicate names (the JSON parser rejects duplicate keys).
 *
 * Metadata kept in __metadata__ by our writer:
 *   "format": "pt"                   (what torch's save_file writes)
 *   "apr.provenance": JSON text      -> model->provenance_json
 *   "apr.kvs": JSON list of typed KVs (single-file outputs, which have no
 *              config.json / tokenizer.json beside them, keep the model's
 *              GGUF-namespace KVs here exactly)
 *   any other string               -> KV "safetensors.metadata.<key>"
 * A directory (or the directory a file sits in) also gives config.json and
 * tokenizer files, mapped to KVs by hfmeta.c.
 */
#define _GNU_SOURCE
#include "apr_internal.h"
#include "hfmeta.h"
#include "apr_json.h"
#include "tok.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100ull << 20) /* 100 MiB, the reference implementation's limit */
#define ST_MAX_INDEX (256ull << 20)

typedef struct st_dtype {
    const char *name;
    int dt; /* apr_dtype, or -1 for types we recognise but do not support */
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F64", APR_DT_F64}, {"F32", APR_DT_F32}, {"F16", APR_DT_F16}, {"BF16", APR_DT_BF16},
    {"I64", APR_DT_I64}, {"I32", APR_DT_I32}, {"I16", APR_DT_I16}, {"I8", APR_DT_I8},
    {"U64", APR_DT_U64}, {"U32", APR_DT_U32}, {"U16", APR_DT_U16}, {"U8", APR_DT_U8},
    {"BOOL", APR_DT_BOOL},
    {"F8_E4M3", -1}, {"F8_E5M2", -1}, {"F8_E8M0", -1}, {"F6_E2M3", -1}, {"F6_E3M2", -1},
    {"F4", -1}, {"C64", -1},
};

static const char *st_dtype_name(apr_dtype dt)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++)
        if (st_dtypes[i].dt == (int)dt)
            return st_dtypes[i].name;
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ================================================================ header parsing */

typedef struct st_entry {
    const char *name; /* borrowed from the JSON */
    apr_dtype dt;
    uint32_t ndim;
    uint64_t dims[APR_MAX_DIMS];
    uint64_t begin, end;
    size_t order; /* position in the JSON, for a stable sort */
} st_entry;

static int cmp_entry(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool json_u64(const json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

static int parse_entry(const char *what, const char *name, const json_t *v, st_entry *e, uint64_t data_size,
                       apr_err *err)
{
    e->name = name;
    if (!*name)
        return apr_err_set(err, APR_E_FORMAT, "%s: a tensor has an empty name", what);
    if (!json_is_object(v))
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': entry is not an object", what, name);
    const char *dts = json_string_value(json_object_get(v, "dtype"));
    const json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
    if (!dts || !json_is_array(shape) || !json_is_array(offs))
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets", what, name);
    int dt = -2;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++)
        if (strcmp(st_dtypes[i].name, dts) == 0)
            dt = st_dtypes[i].dt;
    if (dt == -1)
        return apr_err_set(err, APR_E_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported", what, name, dts);
    if (dt == -2)
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", what, name, dts);
    e->dt = (apr_dtype)dt;
    size_t nd = json_array_size(shape);
    if (nd > APR_MAX_DIMS)
        return apr_err_set(err, APR_E_UNSUPPORTED, "%s: tensor '%s': %zu dims (max %d)", what, name, nd,
                           APR_MAX_DIMS);
    e->ndim = (uint32_t)nd;
    for (size_t i = 0; i < nd; i++)
        if (!json_u64(json_array_get(shape, i), &e->dims[i]))
            return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                               what, name, i);
    if (json_array_size(offs) != 2 || !json_u64(json_array_get(offs, 0), &e->begin) ||
        !json_u64(json_array_get(offs, 1), &e->end))
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]", what, name);
    if (e->end < e->begin)
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': data_offsets end %llu < begin %llu", what,
                           name, (unsigned long long)e->end, (unsigned long long)e->begin);
    if (e->end > data_size)
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: tensor '%s': data_offsets end %llu is past the end of the data (%llu bytes)",
                           what, name, (unsigned long long)e->end, (unsigned long long)data_size);
    uint64_t nbytes;
    if (!apr_dtype_tensor_bytes(e->dt, e->ndim, e->dims, &nbytes))
        return apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s': shape is too large (overflow)", what, name);
    if (nbytes != e->end - e->begin)
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: tensor '%s': %llu bytes in data_offsets, shape and dtype %s need %llu", what,
                           name, (unsigned long long)(e->end - e->begin), dts, (unsigned long long)nbytes);
    return 0;
}

static int append_tensor(apr_model *m, const st_entry *e, const uint8_t *data, uint64_t data_file_off,
                         uint32_t shard, apr_err *err)
{
    apr_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(e->name)))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    t->dtype = e->dt;
    t->ndim = e->ndim;
    memcpy(t->dims, e->dims, sizeof t->dims);
    t->nbytes = e->end - e->begin;
    t->data = data + e->begin;
    t->file_offset = data_file_off + e->begin;
    t->shard = shard;
    m->n_tensors++;
    return 0;
}

/* Parse one file's header and append its tensors to m (in data order).
 * *meta_out receives a new reference to __metadata__ (or NULL). */
static int parse_file(apr_model *m, const char *what, const uint8_t *buf, uint64_t size, uint32_t shard,
                      json_t **meta_out, apr_err *err)
{
    *meta_out = NULL;
    if (size < 8)
        return apr_err_set(err, APR_E_FORMAT, "%s: %llu bytes, too short for a safetensors header", what,
                           (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    if (n > ST_MAX_HEADER)
        return apr_err_set(err, APR_E_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", what,
                           (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > size - 8)
        return apr_err_set(err, APR_E_FORMAT, "%s: header length %llu is larger than the file (%llu bytes)",
                           what, (unsigned long long)n, (unsigned long long)size);
    if (n < 2 || buf[8] != '{')
        return apr_err_set(err, APR_E_FORMAT, "%s: header does not start with '{'", what);
    json_error_t je;
    json_t *h = apr_json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!h && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "%s: header: out of memory", what);
    if (!h)
        return apr_err_set(err, APR_E_FORMAT, "%s: header is not valid JSON (%s, column %d)", what, je.text,
                           je.column);
    int rc = 0;
    st_entry *ents = NULL;
    if (!json_is_object(h)) {
        rc = apr_err_set(err, APR_E_FORMAT, "%s: header is not a JSON object", what);
        goto done;
    }
    const uint64_t data_off = 8 + n, data_size = size - 8 - n;
    size_t cap = json_object_size(h), ne = 0;
    ents = calloc(cap ? cap : 1, sizeof *ents);
    if (!ents) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: __metadata__ is not an object", what);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) if (!json_is_string(mv)) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: __metadata__ value of '%s' is not a string", what, mk);
                goto done;
            }
            *meta_out = json_incref(v);
            continue;
        }
        if ((rc = parse_entry(what, key, v, &ents[ne], data_size, err)))
            goto done;
        ents[ne].order = ne;
        ne++;
    }
    qsort(ents, ne, sizeof *ents, cmp_entry);
    uint64_t max_end = 0;
    const char *max_name = NULL;
    for (size_t i = 0; i < ne; i++) {
        if (ents[i].end == ents[i].begin)
            continue;
        if (ents[i].begin < max_end) {
            rc = apr_err_set(err, APR_E_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", what,
                             max_name, ents[i].name);
            goto done;
        }
        max_end = ents[i].end;
        max_name = ents[i].name;
    }
    apr_tensor *nt = realloc(m->tensors, (m->n_tensors + ne + 1) * sizeof *nt);
    if (!nt) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    m->tensors = nt;
    for (size_t i = 0; i < ne && !rc; i++)
        rc = append_tensor(m, &ents[i], buf + data_off, data_off, shard, err);
done:
    if (rc) {
        json_decref(*meta_out);
        *meta_out = NULL;
    }
    free(ents);
    json_decref(h);
    return rc;
}

/* ================================================================ metadata -> model */

/* Appends *kv to m (taking what it owns) without looking for its key:
 * apply_metadata looks for duplicates once, over a sorted index, where a
 * check per key would be quadratic in a hostile header's key count. *cap is
 * the room m->kvs has (start it at m->n_kvs). */
static int push_kv(apr_model *m, apr_kv *kv, uint64_t *cap, apr_err *err)
{
    if (m->n_kvs == *cap) {
        uint64_t nc = *cap < 16 ? 32 : 2 * *cap;
        apr_kv *nk = nc < SIZE_MAX / sizeof *nk ? realloc(m->kvs, (size_t)nc * sizeof *nk) : NULL;
        if (!nk) {
            apr_kv_free(kv);
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        }
        m->kvs = nk;
        *cap = nc;
    }
    m->kvs[m->n_kvs++] = *kv;
    memset(kv, 0, sizeof *kv);
    return 0;
}

/* A free __metadata__ string as the KV "safetensors.metadata.<name>". */
static int push_metadata_str(apr_model *m, const char *name, const char *s, uint64_t *cap, apr_err *err)
{
    static const char prefix[] = "safetensors.metadata.";
    size_t nl = strlen(name);
    apr_kv kv = {0};
    kv.type = APR_KV_STRING;
    kv.str.len = strlen(s);
    kv.key = malloc(sizeof prefix + nl);
    kv.str.s = malloc(kv.str.len + 1);
    if (!kv.key || !kv.str.s) {
        apr_kv_free(&kv);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    memcpy(kv.key, prefix, sizeof prefix - 1);
    memcpy(kv.key + sizeof prefix - 1, name, nl + 1);
    memcpy(kv.str.s, s, kv.str.len + 1);
    return push_kv(m, &kv, cap, err);
}

static int load_kvs_json(apr_model *m, const char *text, const char *what, uint64_t *cap, apr_err *err)
{
    json_error_t je;
    json_t *a = json_loads(text, JSON_ALLOW_NUL, &je);
    if (!json_is_array(a)) {
        json_decref(a);
        return apr_err_set(err, APR_E_FORMAT, "%s: __metadata__ apr.kvs is not a JSON list", what);
    }
    size_t i;
    json_t *e;
    int rc = 0;
    json_array_foreach(a, i, e) {
        apr_kv kv;
        if ((rc = apr_kv_from_json(&kv, e, err)) || (rc = push_kv(m, &kv, cap, err)))
            break;
    }
    json_decref(a);
    return rc;
}

/* Provenance and free strings from __metadata__; *has_kvs when apr.kvs was
 * there. A key given twice (in apr.kvs, or there and as a free string) is
 * refused. */
static int apply_metadata(apr_model *m, const json_t *meta, const char *what, bool *has_kvs, apr_err *err)
{
    *has_kvs = false;
    if (!meta)
        return 0;
    uint64_t cap = m->n_kvs;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        const char *s = json_string_value(v);
        int rc = 0;
        if (!strcmp(k, "format"))
            continue;
        if (!strcmp(k, "apr.provenance")) {
            if (!m->provenance_json && !(m->provenance_json = strdup(s)))
                return apr_err_set(err, APR_E_NOMEM, "out of memory");
            continue;
        }
        if (!strcmp(k, "apr.kvs")) {
            if (*has_kvs)
                continue;
            if ((rc = load_kvs_json(m, s, what, &cap, err)))
                return rc;
            *has_kvs = true;
            continue;
        }
        if ((rc = push_metadata_str(m, k, s, &cap, err)))
            return rc;
    }
    char dup_what[4200];
    snprintf(dup_what, sizeof dup_what, "%s: __metadata__: duplicate key", what);
    return apr_check_unique_names(m->kvs, sizeof *m->kvs, m->n_kvs, APR_E_FORMAT, dup_what, err);
}

int apr_safetensors_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err)
{
    *out = NULL;
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (!m)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    json_t *meta = NULL;
    bool has_kvs;
    int rc = parse_file(m, "safetensors", buf, size, 0, &meta, err);
    if (!rc)
        rc = apply_metadata(m, meta, "safetensors", &has_kvs, err);
    if (!rc)
        rc = apr_model_derive(m, err);
    json_decref(meta);
    if (rc) {
        apr_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ================================================================ opening files and sets */

static int add_map(apr_model *m, const char *path, apr_err *err)
{
    apr_mapping *nm = realloc(m->maps, (m->n_maps + 1) * sizeof *nm);
    if (!nm)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    m->maps = nm;
    apr_mapping *mp = &m->maps[m->n_maps];
    int rc = apr_map_file(path, mp, err);
    if (rc)
        return rc;
    if (!(mp->path = strdup(path))) {
        apr_unmap_file(mp);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    m->n_maps++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sharded set from its index. Shards are opened in file-name order
 * (model-00001-of-N first), tensors in data order within each shard. */
static int open_index(apr_model *m, const char *index_path, const char *dir, json_t **meta_out, apr_err *err)
{
    apr_mapping im;
    int rc = apr_map_file(index_path, &im, err);
    if (rc)
        return rc;
    if (im.size > ST_MAX_INDEX) {
        apr_unmap_file(&im);
        return apr_err_set(err, APR_E_FORMAT, "%s: index larger than %llu bytes", index_path,
                           (unsigned long long)ST_MAX_INDEX);
    }
    json_error_t je;
    json_t *idx = apr_json_loadb((const char *)im.base, (size_t)im.size, JSON_REJECT_DUPLICATES, &je);
    apr_unmap_file(&im);
    if (!idx && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "%s: out of memory", index_path);
    if (!idx)
        return apr_err_set(err, APR_E_FORMAT, "%s: invalid JSON at line %d: %s", index_path, je.line, je.text);
    const char **files = NULL;
    size_t nfiles = 0;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        rc = apr_err_set(err, APR_E_FORMAT, "%s: no weight_map object", index_path);
        goto done;
    }
    files = calloc(json_object_size(wm) + 1, sizeof *files);
    if (!files) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *f = json_string_value(v);
        if (!f || !*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
            rc = apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s' maps to '%s', not a file name in the set's "
                             "directory", index_path, name, f ? f : "(not a string)");
            goto done;
        }
        files[nfiles++] = f;
    }
    qsort(files, nfiles, sizeof *files, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < nfiles; i++)
        if (u == 0 || strcmp(files[u - 1], files[i]) != 0)
            files[u++] = files[i];
    nfiles = u;
    if (nfiles == 0) {
        rc = apr_err_set(err, APR_E_FORMAT, "%s: weight_map is empty", index_path);
        goto done;
    }
    for (size_t s = 0; s < nfiles; s++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, files[s]);
        if (access(path, F_OK) != 0) {
            rc = apr_err_set(err, APR_E_IO, "%s names shard '%s', which does not exist (%s)", index_path,
                             files[s], path);
            goto done;
        }
        if ((rc = add_map(m, path, err)))
            goto done;
        uint64_t first = m->n_tensors;
        json_t *meta = NULL;
        if ((rc = parse_file(m, path, m->maps[s].base, m->maps[s].size, (uint32_t)s, &meta, err)))
            goto done;
        if (meta && !*meta_out)
            *meta_out = meta;
        else
            json_decref(meta);
        for (uint64_t t = first; t < m->n_tensors; t++) {
            const char *listed = json_string_value(json_object_get(wm, m->tensors[t].name));
            if (!listed || strcmp(listed, files[s]) != 0) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s' is in shard '%s' but the index %s", index_path,
                                 m->tensors[t].name, files[s], listed ? "puts it in another shard" : "does not list it");
                goto done;
            }
        }
    }
    /* Every tensor of the index must have been found in its shard. */
    if (m->n_tensors != json_object_size(wm)) {
        json_object_foreach(wm, name, v) if (!apr_model_tensor(m, name)) {
            rc = apr_err_set(err, APR_E_FORMAT, "%s: tensor '%s' is listed for shard '%s' but that shard does not "
                             "contain it", index_path, name, json_string_value(v));
            goto done;
        }
    }
done:
    free(files);
    json_decref(idx);
    return rc;
}

static char *dir_of(const char *path)
{
    char *tmp = strdup(path);
    if (!tmp)
        return NULL;
    char *d = strdup(dirname(tmp));
    free(tmp);
    return d;
}

int apr_safetensors_open(apr_model **out, const char *path, apr_err *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (!m || !(m->path = strdup(path))) {
        apr_model_free(m);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    char *dir = NULL, file[PATH_MAX];
    json_t *meta = NULL;
    int rc = 0;
    bool index = false;
    if (S_ISDIR(st.st_mode)) {
        dir = strdup(path);
        /* HF's loader looks for the single file first, then the index. */
        snprintf(file, sizeof file, "%s/model.safetensors", path);
        if (access(file, F_OK) != 0) {
            snprintf(file, sizeof file, "%s/model.safetensors.index.json", path);
            if (access(file, F_OK) != 0) {
                rc = apr_err_set(err, APR_E_IO, "%s: no model.safetensors or model.safetensors.index.json in "
                                 "this directory", path);
                goto done;
            }
            index = true;
        }
    } else {
        dir = dir_of(path);
        snprintf(file, sizeof file, "%s", path);
        index = ends_with(path, ".json");
    }
    if (!dir) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    if (index) {
        rc = open_index(m, file, dir, &meta, err);
    } else {
        if (!(rc = add_map(m, file, err)))
            rc = parse_file(m, file, m->maps[0].base, m->maps[0].size, 0, &meta, err);
    }
    if (rc)
        goto done;
    bool has_kvs = false;
    if ((rc = apply_metadata(m, meta, file, &has_kvs, err)))
        goto done;
    if (!has_kvs) {
        apr_hf_docs d;
        if ((rc = apr_hf_docs_load(&d, dir, err)))
            goto done;
        char real[PATH_MAX];
        const char *base = NULL;
        if (realpath(dir, real)) {
            base = strrchr(real, '/');
            base = base && base[1] ? base + 1 : NULL;
        }
        rc = apr_hf_docs_to_kvs(m, &d, base, err);
        apr_hf_docs_free(&d);
        if (rc)
            goto done;
    }
    rc = apr_model_derive(m, err);
done:
    json_decref(meta);
    free(dir);
    if (rc) {
        apr_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ================================================================ writer */

typedef struct st_shard {
    uint64_t first, count; /* tensor range */
    uint64_t data_bytes;
    char name[64];
} st_shard;

/* The __metadata__ object for every output file. */
static int build_metadata(const apr_model *m, bool with_kvs, json_t **out, apr_err *err)
{
    apr_jb jb = apr_jb_start();
    json_t *meta = json_object();
    apr_jb_set(&jb, meta, "format", json_string("pt"));
    if (m->provenance_json)
        apr_jb_set(&jb, meta, "apr.provenance", json_string(m->provenance_json));
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (strncmp(kv->key, "safetensors.metadata.", 21) == 0 && kv->type == APR_KV_STRING &&
            strcmp(kv->key + 21, "format") != 0)
            apr_jb_set(&jb, meta, kv->key + 21, json_stringn(kv->str.s, (size_t)kv->str.len));
    }
    if (with_kvs) {
        json_t *arr = json_array();
        for (uint64_t i = 0; i < m->n_kvs; i++) {
            if (apr_hf_kv_is_file_level(m->kvs[i].key))
                continue;
            json_t *r = apr_kv_to_json(&m->kvs[i], err);
            if (!r) {
                json_decref(arr);
                json_decref(meta);
                return err ? err->code : APR_E_ARG;
            }
            apr_jb_append(&jb, arr, r);
        }
        if (json_array_size(arr)) {
            char *text = apr_json_dump(arr, false);
            apr_jb_set(&jb, meta, "apr.kvs", text ? json_string(text) : NULL);
            free(text);
        }
        json_decref(arr);
    }
    int rc = apr_jb_done(&jb, "safetensors __metadata__", err);
    if (rc) {
        json_decref(meta);
        return rc;
    }
    *out = meta;
    return 0;
}

/* Header of one shard: __metadata__ first, then the tensors in model order,
 * padded with spaces so that the data section starts 8-byte aligned. */
static int build_header(const apr_model *m, const st_shard *s, const json_t *meta, char **out, uint64_t *len,
                        apr_err *err)
{
    apr_jb jb = apr_jb_start();
    json_t *h = json_object();
    apr_jb_set(&jb, h, "__metadata__", json_incref((json_t *)meta));
    uint64_t off = 0;
    for (uint64_t i = s->first; i < s->first + s->count; i++) {
        const apr_tensor *t = &m->tensors[i];
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->ndim; d++)
            apr_jb_append(&jb, shape, json_integer((json_int_t)t->dims[d]));
        json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype_name(t->dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes));
        apr_jb_set(&jb, h, t->name, e);
        if (jb.bad && h && e && !apr_jb_oom(&jb)) {
            json_decref(h);
            return apr_err_set(err, APR_E_UNSUPPORTED, "tensor name '%s' is not valid UTF-8", t->name);
        }
        off += t->nbytes;
    }
    char *text = jb.bad ? NULL : json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!text)
        return apr_err_set(err, APR_E_NOMEM, "safetensors header: out of memory");
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *buf = realloc(text, padded + 1);
    if (!buf) {
        free(text);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    memset(buf + n, ' ', padded - n);
    buf[padded] = 0;
    *out = buf;
    *len = padded;
    return 0;
}

static int check_tensors(const apr_model *m, const apr_write_opts *o, bool fill, uint64_t *total, apr_err *err)
{
    *total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        int rc = fill ? 0 : apr_stream_check(t, o, err);
        if (rc)
            return rc;
        if (!st_dtype_name(t->dtype)) {
            const apr_dtype_info *di = apr_dtype_get(t->dtype);
            return apr_err_set(err, APR_E_UNSUPPORTED,
                               "tensor '%s': dtype %s cannot be stored in safetensors%s", t->name,
                               apr_dtype_name(t->dtype),
                               (di && di->quantized) || t->dtype == APR_DT_ROWCAT
                                   ? " (quantized: dequantize it first, e.g. apr convert --outtype f16)" : "");
        }
        uint64_t nb;
        if (!apr_dtype_tensor_bytes(t->dtype, t->ndim, t->dims, &nb) || nb != t->nbytes)
            return apr_err_set(err, APR_E_ARG, "tensor '%s': %llu bytes do not match its shape", t->name,
                               (unsigned long long)t->nbytes);
        *total += nb;
    }
    return 0;
}

typedef struct out_set {
    apr_outfile *f;
    size_t n;
} out_set;

static apr_outfile *out_new(out_set *s, const char *path, apr_err *err)
{
    apr_outfile *nf = realloc(s->f, (s->n + 1) * sizeof *nf);
    if (!nf) {
        apr_err_set(err, APR_E_NOMEM, "out of memory");
        return NULL;
    }
    s->f = nf;
    if (apr_outfile_open(&s->f[s->n], path, err))
        return NULL;
    return &s->f[s->n++];
}

static void out_abort_all(out_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        apr_outfile_abort(&s->f[i]);
    free(s->f);
    s->f = NULL;
    s->n = 0;
}

static int out_commit_all(out_set *s, apr_err *err)
{
    int rc = apr_outfiles_commit(s->f, s->n, err);
    free(s->f);
    s->f = NULL;
    s->n = 0;
    return rc;
}

static int write_json_file(out_set *set, const char *dir, const char *name, const json_t *j, apr_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = apr_json_dump(j, true);
    if (!text)
        return apr_err_set(err, APR_E_NOMEM, "%s: out of memory serialising JSON", path);
    apr_outfile *f = out_new(set, path, err);
    int rc = f ? apr_outfile_write(f, text, strlen(text), err) : (err ? err->code : APR_E_IO);
    if (!rc)
        rc = apr_outfile_write(f, "\n", 1, err);
    free(text);
    return rc;
}

/* tokenizer.model, staged with the other files (committed or aborted together). */
static int write_spm_file(out_set *set, const char *dir, const apr_spm *spm, apr_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = apr_spm_serialize(spm, &bytes, &n, err);
    if (rc)
        return rc;
    apr_outfile *f = out_new(set, path, err);
    rc = f ? apr_outfile_write(f, bytes, n, err) : (err ? err->code : APR_E_IO);
    free(bytes);
    return rc;
}

static int mkdir_p(const char *dir, apr_err *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return apr_err_set(err, APR_E_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return apr_err_set(err, APR_E_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode))
        return apr_err_set(err, APR_E_IO, "%s: exists and is not a directory", tmp);
    return 0;
}

static int write_shard(const apr_model *m, apr_outfile *f, const st_shard *s, const char *header, uint64_t hlen,
                       apr_st_fill_fn fill, void *ctx, const apr_write_opts *o, apr_stream *st, uint64_t *done_bytes,
                       uint64_t total, apr_err *err)
{
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(hlen >> (8 * i));
    int rc = apr_outfile_write(f, len, 8, err);
    if (!rc)
        rc = apr_outfile_write(f, header, (size_t)hlen, err);
    bool progress = o && o->progress && isatty(2);
    for (uint64_t i = s->first; !rc && i < s->first + s->count; i++) {
        const apr_tensor *t = &m->tensors[i];
        uint64_t before = f->written;
        if (fill)
            rc = fill(ctx, m, i, f, err);
        else
            rc = apr_stream_payload(st, f, m, i, o, NULL, err);
        if (!rc && f->written - before != t->nbytes)
            rc = apr_err_set(err, APR_E_ARG, "tensor '%s': producer wrote %llu bytes, expected %llu", t->name,
                             (unsigned long long)(f->written - before), (unsigned long long)t->nbytes);
        *done_bytes += t->nbytes;
        if (progress && total)
            fprintf(stderr, "\rwriting safetensors: %3d%%", (int)(100.0 * (double)*done_bytes / (double)total));
    }
    if (progress)
        fprintf(stderr, "\n");
    return rc;
}

static void free_headers(char **h, size_t n)
{
    for (size_t i = 0; h && i < n; i++)
        free(h[i]);
    free(h);
}

int apr_safetensors_write_ex(const apr_model *m, const char *path, const apr_write_opts *o, apr_st_fill_fn fill,
                             void *ctx, apr_err *err)
{
    uint64_t total;
    int rc = check_tensors(m, o, fill != NULL, &total, err);
    if (rc)
        return rc;
    bool single = ends_with(path, ".safetensors");
    apr_hf_docs docs = {0};
    json_t *meta = NULL;
    st_shard *shards = NULL;
    size_t nshards = 0;
    out_set set = {0};
    char *header = NULL;
    char **headers = NULL; /* each shard's, kept to seal the provenance in place */
    uint64_t *hlens = NULL;
    apr_stream st = {0};
    const char *dir = path;
    /* a directory this call creates is removed again if it fails (rmdir:
     * only while empty, so nothing of anyone else's goes) */
    struct stat dst;
    bool made_dir = !single && stat(path, &dst) != 0;

    if (!single) {
        if ((rc = mkdir_p(path, err)))
            goto fail;
        if ((m->has_cfg || m->has_tok) && (rc = apr_hf_docs_from_model(m, &docs, err)))
            goto fail;
    }
    /* KVs ride in __metadata__ when no config.json / tokenizer.json carries them. */
    bool with_kvs = single || (!docs.config && !docs.tokenizer);
    if ((rc = build_metadata(m, with_kvs, &meta, err)))
        goto fail;

    /* Shard plan: greedy, a new shard when the next tensor would overflow. */
    uint64_t maxb = (!single && o && o->shard_max_bytes) ? o->shard_max_bytes : 0;
    shards = calloc(m->n_tensors + 1, sizeof *shards);
    if (!shards) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    nshards = 1;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        st_shard *s = &shards[nshards - 1];
        if (maxb && total > maxb && s->count && s->data_bytes + m->tensors[i].nbytes > maxb) {
            s = &shards[nshards++];
            s->first = i;
        }
        s->count++;
        s->data_bytes += m->tensors[i].nbytes;
    }
    bool sharded = nshards > 1;
    for (size_t s = 0; s < nshards; s++) {
        if (sharded)
            snprintf(shards[s].name, sizeof shards[s].name, "model-%05zu-of-%05zu.safetensors", s + 1, nshards);
        else
            snprintf(shards[s].name, sizeof shards[s].name, "model.safetensors");
    }

    headers = calloc(nshards, sizeof *headers);
    hlens = calloc(nshards, sizeof *hlens);
    if (!headers || !hlens) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    uint64_t done_bytes = 0;
    for (size_t s = 0; s < nshards; s++) {
        char fpath[PATH_MAX];
        if (single)
            snprintf(fpath, sizeof fpath, "%s", path);
        else
            snprintf(fpath, sizeof fpath, "%s/%s", dir, shards[s].name);
        uint64_t hlen = 0;
        if ((rc = build_header(m, &shards[s], meta, &header, &hlen, err)))
            goto fail;
        apr_outfile *f = out_new(&set, fpath, err);
        if (!f) {
            rc = err ? err->code : APR_E_IO;
            goto fail;
        }
        headers[s] = header;
        hlens[s] = hlen;
        header = NULL;
        if ((rc = write_shard(m, f, &shards[s], headers[s], hlen, fill, ctx, o, &st, &done_bytes, total, err)))
            goto fail;
    }
    apr_stream_free(&st);
    /* the shards are set[0 .. nshards): each carries the record */
    for (size_t s = 0; s < nshards; s++)
        if ((rc = apr_stream_seal(&set.f[s], o, (uint8_t *)headers[s], (size_t)hlens[s], 8, err)))
            goto fail;
    if (sharded) {
        apr_jb jb = apr_jb_start();
        json_t *idx = json_object(), *wm = json_object();
        apr_jb_set(&jb, idx, "metadata", json_pack("{s:I}", "total_size", (json_int_t)total));
        for (size_t s = 0; s < nshards; s++)
            for (uint64_t i = shards[s].first; i < shards[s].first + shards[s].count; i++)
                apr_jb_set(&jb, wm, m->tensors[i].name, json_string(shards[s].name));
        apr_jb_set(&jb, idx, "weight_map", wm);
        rc = apr_jb_done(&jb, "model.safetensors.index.json", err);
        if (!rc)
            rc = write_json_file(&set, dir, "model.safetensors.index.json", idx, err);
        json_decref(idx);
        if (rc)
            goto fail;
    }
    if ((docs.config && (rc = write_json_file(&set, dir, "config.json", docs.config, err))) ||
        (docs.gen_config && (rc = write_json_file(&set, dir, "generation_config.json", docs.gen_config, err))) ||
        (docs.tokenizer && (rc = write_json_file(&set, dir, "tokenizer.json", docs.tokenizer, err))) ||
        (docs.tokenizer_config &&
         (rc = write_json_file(&set, dir, "tokenizer_config.json", docs.tokenizer_config, err))) ||
        (docs.spm && (rc = write_spm_file(&set, dir, docs.spm, err))))
        goto fail;
    if ((rc = out_commit_all(&set, err)))
        goto fail;
    if (!single) {
        /* A stale file of the other layout would shadow (or confuse) the new one. */
        char stale[PATH_MAX];
        snprintf(stale, sizeof stale, "%s/%s", dir, sharded ? "model.safetensors" : "model.safetensors.index.json");
        unlink(stale);
        /* The reader prefers tokenizer.model and applies added_tokens.json: an
         * old one left in the directory would replace the vocabulary just written. */
        snprintf(stale, sizeof stale, "%s/added_tokens.json", dir);
        unlink(stale);
        if (!docs.spm) {
            snprintf(stale, sizeof stale, "%s/tokenizer.model", dir);
            unlink(stale);
        }
    }
    free_headers(headers, nshards);
    free(hlens);
    free(shards);
    json_decref(meta);
    apr_hf_docs_free(&docs);
    return 0;
fail:
    out_abort_all(&set);
    apr_stream_free(&st);
    free(header);
    free_headers(headers, nshards);
    free(hlens);
    free(shards);
    json_decref(meta);
    apr_hf_docs_free(&docs);
    if (made_dir)
        rmdir(path);
    return rc;
}

int apr_safetensors_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err)
{
    return apr_safetensors_write_ex(m, path, o, NULL, NULL, err);
}
