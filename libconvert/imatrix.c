/* imatrix.c - llama-imatrix output files, read as llama-quantize reads them
 * (tools/quantize: load_legacy_imatrix / load_imatrix):
 *
 *  legacy .dat:  i32 n_entries; n_entries x { i32 name_len; name bytes;
 *                i32 ncall; i32 nval; f32 values[nval] }; optionally
 *                i32 last_call; i32 dataset_len; dataset bytes.
 *                values are divided by ncall when ncall > 0.
 *  GGUF:         tensors NAME.in_sum2 (f32, ne = [n, rows]) and NAME.counts
 *                (f32, ne = [1, rows]); value = in_sum2 / count for rows
 *                with count > 0, else 1. KV imatrix.chunk_count, imatrix.datasets.
 *
 * Every length is checked against the bytes that remain; values must be
 * finite (llama-quantize refuses non-finite ones too). */
#include "quant.h"
#include "apr_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void apr_imatrix_free(apr_imatrix *im)
{
    if (!im)
        return;
    for (uint64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    free(im);
}

const apr_imatrix_entry *apr_imatrix_find(const apr_imatrix *im, const char *name)
{
    if (!im)
        return NULL;
    for (uint64_t i = im->n_entries; i-- > 0;) /* the last of duplicates wins, as in llama's map */
        if (!strcmp(im->entries[i].name, name))
            return &im->entries[i];
    return NULL;
}

static int check_finite(const char *name, const float *v, uint64_t n, apr_err *err)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return apr_err_set(err, APR_E_FORMAT, "imatrix entry %s: value %llu is not finite", name,
                               (unsigned long long)i);
    return 0;
}

/* reduce: values / ncall, as llama-quantize reads them; else as stored
 * (with each entry's ncall, for --in-file) */
static int parse_legacy(apr_imatrix **out, const uint8_t *buf, uint64_t size, bool reduce, apr_err *err);

int apr_imatrix_parse_legacy(apr_imatrix **out, const uint8_t *buf, uint64_t size, apr_err *err)
{
    return parse_legacy(out, buf, size, true, err);
}

static int parse_legacy_raw(apr_imatrix **out, const uint8_t *buf, uint64_t size, apr_err *err)
{
    return parse_legacy(out, buf, size, false, err);
}

static int parse_legacy(apr_imatrix **out, const uint8_t *buf, uint64_t size, bool reduce, apr_err *err)
{
    *out = NULL;
    apr_cursor r = {buf, size, 0}; /* llama.cpp writes the .dat little-endian (x86 fwrite) */
    int32_t n_entries;
    if (!apr_cur_i32(&r, &n_entries) || n_entries < 1)
        return apr_err_set(err, APR_E_FORMAT, "imatrix: no entries (file of %llu bytes)", (unsigned long long)size);
    /* each entry takes at least 16 bytes: bound the count before allocating */
    if ((uint64_t)n_entries > apr_cur_left(&r) / 16)
        return apr_err_set(err, APR_E_FORMAT, "imatrix: %d entries cannot fit in %llu bytes", n_entries,
                           (unsigned long long)size);
    apr_imatrix *im = calloc(1, sizeof *im);
    if (!im || !(im->entries = calloc((size_t)n_entries, sizeof *im->entries))) {
        free(im);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    im->chunks = -1;
    int rc = 0;
    for (int32_t i = 0; i < n_entries && !rc; i++) {
        int32_t len, ncall, nval;
        if (!apr_cur_i32(&r, &len) || len < 1 || (uint64_t)len > apr_cur_left(&r) || len > 4096) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: entry %d: bad name length", i);
            break;
        }
        if (memchr((r.buf + r.pos), 0, (size_t)len)) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: entry %d: name contains a NUL byte", i);
            break;
        }
        apr_imatrix_entry *e = &im->entries[im->n_entries];
        e->name = strndup((const char *)(r.buf + r.pos), (size_t)len);
        r.pos += len;
        if (!e->name) {
            rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
            break;
        }
        im->n_entries++;
        if (!apr_cur_i32(&r, &ncall) || !apr_cur_i32(&r, &nval) || nval < 1 || (uint64_t)nval > apr_cur_left(&r) / 4) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: entry %s: bad value count", e->name);
            break;
        }
        e->n = (uint64_t)nval;
        if (!(e->values = malloc((size_t)nval * 4))) {
            rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
            break;
        }
        (void)apr_cur_bytes(&r, e->values, (uint64_t)nval * 4); /* fits: checked above */
        e->ncall = ncall;
        if (ncall > 0 && reduce)
            for (int32_t k = 0; k < nval; k++)
                e->values[k] /= ncall;
        rc = check_finite(e->name, e->values, e->n, err);
    }
    if (!rc && apr_cur_left(&r)) { /* newer legacy files end with the chunk count and dataset name */
        int32_t last_call, dlen;
        if (!apr_cur_i32(&r, &last_call) || !apr_cur_i32(&r, &dlen) || dlen < 0 || (uint64_t)dlen != apr_cur_left(&r)) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: %llu unexpected bytes after the entries",
                             (unsigned long long)apr_cur_left(&r));
        } else {
            im->chunks = last_call;
            im->dataset = strndup((const char *)(r.buf + r.pos), (size_t)dlen);
        }
    }
    if (rc) {
        apr_imatrix_free(im);
        return rc;
    }
    *out = im;
    return 0;
}

static bool has_suffix(const char *s, const char *suf, size_t *stem)
{
    size_t n = strlen(s), k = strlen(suf);
    if (n <= k || strcmp(s + n - k, suf) != 0)
        return false;
    *stem = n - k;
    return true;
}

int apr_imatrix_from_model(apr_imatrix **out, const apr_model *m, apr_err *err)
{
    *out = NULL;
    apr_imatrix *im = calloc(1, sizeof *im);
    if (!im || (m->n_tensors && !(im->entries = calloc((size_t)m->n_tensors, sizeof *im->entries)))) {
        free(im);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    im->chunks = -1;
    int rc = 0;
    for (uint64_t i = 0; i < m->n_tensors && !rc; i++) {
        const apr_tensor *s = &m->tensors[i];
        size_t stem;
        if (!has_suffix(s->name, ".in_sum2", &stem))
            continue;
        char *name = strndup(s->name, stem);
        char cname[512];
        if (!name || stem + sizeof ".counts" > sizeof cname) {
            free(name);
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: bad tensor name %s", s->name);
            break;
        }
        snprintf(cname, sizeof cname, "%s.counts", name);
        const apr_tensor *c = apr_model_tensor(m, cname);
        uint64_t ne0 = s->ndim ? s->dims[s->ndim - 1] : 0, rows = 1, nc = 0;
        for (uint32_t d = 0; d + 1 < s->ndim; d++)
            rows *= s->dims[d];
        /* rows == 0 (an in_sum2 of shape [0, n], found by fuzz_imatrix) would
         * be an entry of no values, which weighs nothing: refused like ne0 == 0 */
        if (!c) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: %s has sums but no counts", name);
        } else if (s->dtype != APR_DT_F32 || c->dtype != APR_DT_F32 || s->ndim < 1 || s->ndim > 2 ||
                   !apr_dims_count(c->ndim, c->dims, &nc) || nc != rows || ne0 == 0 || rows == 0 ||
                   s->nbytes != ne0 * rows * 4 || c->nbytes != rows * 4) {
            rc = apr_err_set(err, APR_E_FORMAT, "imatrix: %s: in_sum2/counts shapes or types do not match", name);
        }
        if (rc) {
            free(name);
            break;
        }
        apr_imatrix_entry *e = &im->entries[im->n_entries++];
        e->name = name;
        e->n = ne0 * rows;
        if (!(e->values = malloc((size_t)e->n * 4))) {
            rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
            break;
        }
        for (uint64_t j = 0; j < rows; j++) {
            float count;
            memcpy(&count, c->data + 4 * j, 4);
            for (uint64_t k = 0; k < ne0; k++) {
                float v;
                memcpy(&v, s->data + 4 * (j * ne0 + k), 4);
                /* rows that never saw input during calibration weigh 1 */
                e->values[j * ne0 + k] = count > 0.0f ? v / count : 1.0f;
            }
        }
        rc = check_finite(name, e->values, e->n, err);
    }
    /* counts without sums are an error too */
    for (uint64_t i = 0; i < m->n_tensors && !rc; i++) {
        size_t stem;
        if (has_suffix(m->tensors[i].name, ".counts", &stem)) {
            char sname[512];
            snprintf(sname, sizeof sname, "%.*s.in_sum2", (int)stem, m->tensors[i].name);
            if (!apr_model_tensor(m, sname))
                rc = apr_err_set(err, APR_E_FORMAT, "imatrix: %s has no in_sum2", m->tensors[i].name);
        }
    }
    if (!rc && im->n_entries == 0)
        rc = apr_err_set(err, APR_E_FORMAT, "imatrix: no NAME.in_sum2 / NAME.counts tensors");
    if (!rc) {
        uint32_t chunks;
        if (apr_kv_get_u32(m, "imatrix.chunk_count", &chunks))
            im->chunks = chunks;
        const apr_kv *ds = apr_model_kv(m, "imatrix.datasets");
        if (ds && ds->type == APR_KV_ARRAY && ds->arr_type == APR_KV_STRING && ds->count > 0)
            im->dataset = strdup(((apr_str *)ds->arr)[0].s);
    }
    if (rc) {
        apr_imatrix_free(im);
        return rc;
    }
    *out = im;
    return 0;
}

/* One imatrix file, either format: mapped, then handed to on_gguf (parsed)
 * or to on_legacy (the raw bytes). A failure after the mapping gets the
 * path in front of its message unless the message names it already. */
typedef int (*imatrix_gguf_fn)(void *ctx, const apr_model *m, const char *path, apr_err *err);
typedef int (*imatrix_legacy_fn)(void *ctx, const uint8_t *buf, uint64_t size, const char *path, apr_err *err);

static int read_imatrix_file(const char *path, imatrix_gguf_fn on_gguf, imatrix_legacy_fn on_legacy, void *ctx,
                             apr_err *err)
{
    apr_mapping map;
    int rc = apr_map_file(path, &map, err);
    if (rc)
        return rc;
    if (map.size >= 4 && !memcmp(map.base, "GGUF", 4)) {
        apr_model *m = NULL;
        rc = apr_gguf_parse(&m, map.base, map.size, err);
        if (!rc)
            rc = on_gguf(ctx, m, path, err);
        apr_model_free(m);
    } else {
        rc = on_legacy(ctx, map.base, map.size, path, err);
    }
    apr_unmap_file(&map);
    if (rc && err && !strstr(err->msg, path)) {
        char tmp[sizeof err->msg];
        memcpy(tmp, err->msg, sizeof tmp);
        apr_err_set(err, rc, "%.200s: %.800s", path, tmp);
    }
    return rc;
}

static int load_gguf(void *ctx, const apr_model *m, const char *path, apr_err *err)
{
    (void)path;
    return apr_imatrix_from_model(ctx, m, err);
}

static int load_legacy(void *ctx, const uint8_t *buf, uint64_t size, const char *path, apr_err *err)
{
    (void)path;
    return apr_imatrix_parse_legacy(ctx, buf, size, err);
}

int apr_imatrix_load(apr_imatrix **out, const char *path, apr_err *err)
{
    *out = NULL;
    return read_imatrix_file(path, load_gguf, load_legacy, out, err);
}

/* prepare_imatrix: entries whose name contains an excluded string are
 * dropped; with include strings, only entries containing one are kept. The
 * two lists cannot be combined (llama-quantize refuses that too). */
int apr_imatrix_filter(apr_imatrix *im, const char *const *include, size_t n_include, const char *const *exclude,
                       size_t n_exclude, apr_err *err)
{
    if (n_include && n_exclude)
        return apr_err_set(err, APR_E_ARG, "--include-weights and --exclude-weights cannot be used together");
    /* a pattern that matches no entry is a typo, not a filter: refused
     * (llama-quantize says nothing, and the imatrix is then silently dropped) */
    const char *const *pats = n_include ? include : exclude;
    for (size_t k = 0; k < n_include + n_exclude; k++) {
        uint64_t i = 0;
        while (i < im->n_entries && !strstr(im->entries[i].name, pats[k]))
            i++;
        if (i == im->n_entries)
            return apr_err_set(err, APR_E_ARG, "%s '%s' matches no entry of the imatrix",
                               n_include ? "--include-weights" : "--exclude-weights", pats[k]);
    }
    uint64_t kept = 0;
    for (uint64_t i = 0; i < im->n_entries; i++) {
        apr_imatrix_entry *e = &im->entries[i];
        bool keep = n_include == 0;
        for (size_t k = 0; k < n_include && !keep; k++)
            keep = strstr(e->name, include[k]) != NULL;
        for (size_t k = 0; k < n_exclude && keep; k++)
            keep = strstr(e->name, exclude[k]) == NULL;
        if (keep) {
            im->entries[kept++] = *e;
        } else {
            free(e->name);
            free(e->values);
        }
    }
    im->n_entries = kept;
    return 0;
}

/* ---------------------------------------------------------------- writing
 *
 * llama-imatrix's IMatrixCollector::save_imatrix_legacy / save_imatrix
 * (tools/imatrix/imatrix.cpp), for dense weights (one count per entry). */

void apr_imatrix_stats_free(apr_imatrix_stats *s)
{
    if (!s)
        return;
    for (uint64_t i = 0; i < s->n_entries; i++) {
        free(s->e[i].name);
        free(s->e[i].sum2);
    }
    free(s->e);
    for (uint32_t i = 0; i < s->n_datasets; i++)
        free(s->datasets[i]);
    free(s->datasets);
    *s = (apr_imatrix_stats){0};
}

int apr_imatrix_stats_add_dataset(apr_imatrix_stats *s, const char *name, apr_err *err)
{
    char **d = realloc(s->datasets, (s->n_datasets + 1) * sizeof *d);
    if (!d)
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    s->datasets = d;
    if (!(d[s->n_datasets] = strdup(name)))
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    s->n_datasets++;
    return 0;
}

/* sums += add (f32, in column order) and count += n for the entry name of
 * s, created when absent */
static int stats_add(apr_imatrix_stats *s, const char *name, const float *add, uint64_t n, int64_t count,
                     const char *path, apr_err *err)
{
    apr_imatrix_stat *e = NULL;
    for (uint64_t i = 0; i < s->n_entries && !e; i++)
        if (!strcmp(s->e[i].name, name))
            e = &s->e[i];
    if (e && e->n != n)
        return apr_err_set(err, APR_E_FORMAT, "%s: entry %s has %llu values, %llu in the files before it", path, name,
                           (unsigned long long)n, (unsigned long long)e->n);
    if (!e) {
        apr_imatrix_stat *ne = realloc(s->e, (size_t)(s->n_entries + 1) * sizeof *ne);
        if (!ne)
            return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
        s->e = ne;
        e = &s->e[s->n_entries];
        *e = (apr_imatrix_stat){.name = strdup(name), .n = n, .sum2 = calloc((size_t)n, sizeof(float))};
        if (!e->name || !e->sum2) {
            free(e->name);
            free(e->sum2);
            return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
        }
        s->n_entries++;
    }
    for (uint64_t j = 0; j < n; j++)
        e->sum2[j] += add[j];
    e->count += count;
    return 0;
}

static int add_gguf(void *ctx, const apr_model *m, const char *path, apr_err *err)
{
    apr_imatrix_stats *s = ctx;
    int rc = 0;
    uint64_t added = 0;
    for (uint64_t i = 0; i < m->n_tensors && !rc; i++) {
        const apr_tensor *t = &m->tensors[i];
        size_t stem;
        if (!has_suffix(t->name, ".in_sum2", &stem))
            continue;
        char name[512], cname[600];
        if (stem >= sizeof name)
            return apr_err_set(err, APR_E_FORMAT, "%s: bad tensor name %s", path, t->name);
        snprintf(name, sizeof name, "%.*s", (int)stem, t->name);
        snprintf(cname, sizeof cname, "%s.counts", name);
        const apr_tensor *c = apr_model_tensor(m, cname);
        const uint64_t ne0 = t->ndim ? t->dims[t->ndim - 1] : 0;
        if (!c)
            return apr_err_set(err, APR_E_FORMAT, "%s: mismatched sums and counts for %s", path, name);
        if (t->dtype != APR_DT_F32 || c->dtype != APR_DT_F32 || !ne0 || t->nbytes != ne0 * 4 || c->nbytes != 4)
            return apr_err_set(err, APR_E_FORMAT, "%s: %s: not one f32 row of sums and one count (apr combines "
                               "dense imatrix entries only)", path, name);
        float cnt;
        memcpy(&cnt, c->data, 4);
        float *v = malloc((size_t)ne0 * 4);
        if (!v)
            return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
        memcpy(v, t->data, (size_t)ne0 * 4);
        rc = check_finite(name, v, ne0, err);
        if (!rc && !(isfinite(cnt) && cnt >= 0 && cnt < 9e18f))
            rc = apr_err_set(err, APR_E_FORMAT, "%s: %s: bad count", path, name);
        if (!rc)
            rc = stats_add(s, name, v, ne0, (int64_t)llroundf(cnt), path, err);
        free(v);
        added++;
    }
    if (!rc && !added)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: no NAME.in_sum2 / NAME.counts tensors", path);
    const apr_kv *ds = rc ? NULL : apr_model_kv(m, "imatrix.datasets");
    if (ds && ds->type == APR_KV_ARRAY && ds->arr_type == APR_KV_STRING)
        for (uint64_t i = 0; i < ds->count && !rc; i++)
            rc = apr_imatrix_stats_add_dataset(s, ((apr_str *)ds->arr)[i].s, err);
    return rc;
}

/* The legacy file as stored (sum / count * ncall per entry), each value
 * times chunk_size, as load_imatrix_legacy rebuilds the sums. */
static int add_legacy(void *ctx, const uint8_t *buf, uint64_t size, const char *path, apr_err *err)
{
    apr_imatrix_stats *s = ctx;
    apr_imatrix *im = NULL;
    int rc = parse_legacy_raw(&im, buf, size, err);
    for (uint64_t i = 0; !rc && i < im->n_entries; i++) {
        apr_imatrix_entry *e = &im->entries[i];
        for (uint64_t j = 0; j < e->n; j++)
            e->values[j] *= (float)s->chunk_size;
        rc = stats_add(s, e->name, e->values, e->n, (int64_t)e->ncall * s->chunk_size, path, err);
    }
    if (!rc && im->dataset)
        rc = apr_imatrix_stats_add_dataset(s, im->dataset, err);
    apr_imatrix_free(im);
    return rc;
}

int apr_imatrix_stats_add_file(apr_imatrix_stats *s, const char *path, apr_err *err)
{
    if (!s->chunk_size)
        return apr_err_set(err, APR_E_ARG, "imatrix: no chunk size to combine %s with", path);
    int rc = read_imatrix_file(path, add_gguf, add_legacy, s, err);
    int64_t max_count = 0;
    for (uint64_t i = 0; i < s->n_entries; i++)
        if (s->e[i].count > max_count)
            max_count = s->e[i].count;
    s->chunks = (uint32_t)(max_count / s->chunk_size);
    return rc;
}

static int cmp_stat_ptr(const void *a, const void *b)
{
    const apr_imatrix_stat *x = *(const apr_imatrix_stat *const *)a, *y = *(const apr_imatrix_stat *const *)b;
    return strcmp(x->name, y->name); /* std::sort of std::string: byte order */
}

/* Validates s; *out gets its entries in name order (pointers into s; the
 * caller frees the array). */
static int sorted_stats(const apr_imatrix_stats *s, const apr_imatrix_stat ***out, apr_err *err)
{
    *out = NULL;
    if (!s->n_entries)
        return apr_err_set(err, APR_E_ARG, "imatrix: no entries to write");
    if (!s->chunk_size || s->chunk_size > INT32_MAX)
        return apr_err_set(err, APR_E_ARG, "imatrix: bad chunk size %u", s->chunk_size);
    for (uint64_t i = 0; i < s->n_entries; i++) {
        const apr_imatrix_stat *e = &s->e[i];
        if (!e->name || !*e->name || strlen(e->name) > 4000 || !e->n || e->n > INT32_MAX || !e->sum2 ||
            e->count < 0)
            return apr_err_set(err, APR_E_ARG, "imatrix: entry %llu is malformed", (unsigned long long)i);
        int rc = check_finite(e->name, e->sum2, e->n, err); /* llama-imatrix stops on these too */
        if (rc)
            return rc;
    }
    const apr_imatrix_stat **v = malloc((size_t)s->n_entries * sizeof *v);
    if (!v)
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    for (uint64_t i = 0; i < s->n_entries; i++)
        v[i] = &s->e[i];
    qsort(v, (size_t)s->n_entries, sizeof *v, cmp_stat_ptr);
    for (uint64_t i = 1; i < s->n_entries; i++)
        if (!strcmp(v[i - 1]->name, v[i]->name)) {
            const int rc = apr_err_set(err, APR_E_ARG, "imatrix: entry %s appears twice", v[i]->name);
            free(v);
            return rc;
        }
    *out = v;
    return 0;
}

static int put_i32(apr_outfile *f, int32_t v, apr_err *err)
{
    return apr_outfile_write(f, &v, 4, err);
}

int apr_imatrix_write_dat(const apr_imatrix_stats *s, const char *path, apr_err *err)
{
    const apr_imatrix_stat **v;
    int rc = sorted_stats(s, &v, err);
    if (rc)
        return rc;
    int32_t n_store = 0;
    size_t max_n = 0;
    for (uint64_t i = 0; i < s->n_entries; i++)
        if (v[i]->count > 0) { /* "entry has no data - skipping" */
            n_store++;
            if (v[i]->n > max_n)
                max_n = (size_t)v[i]->n;
        }
    if (!n_store) {
        free(v);
        return apr_err_set(err, APR_E_ARG, "imatrix: no entry saw any input");
    }
    float *tmp = malloc(max_n * sizeof *tmp);
    if (!tmp) {
        free(v);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    apr_outfile f;
    rc = apr_outfile_open(&f, path, err);
    if (!rc)
        rc = put_i32(&f, n_store, err);
    for (uint64_t i = 0; i < s->n_entries && !rc; i++) {
        const apr_imatrix_stat *e = v[i];
        if (e->count <= 0)
            continue;
        const int32_t len = (int32_t)strlen(e->name);
        /* ceiling division "to avoid accidental zeros" */
        const int32_t ncall = (int32_t)((e->count + (s->chunk_size - 1)) / s->chunk_size);
        const float count = (float)e->count;
        for (uint64_t k = 0; k < e->n; k++)
            tmp[k] = (e->sum2[k] / count) * (float)ncall;
        if (!(rc = put_i32(&f, len, err)) && !(rc = apr_outfile_write(&f, e->name, (size_t)len, err)) &&
            !(rc = put_i32(&f, ncall, err)) && !(rc = put_i32(&f, (int32_t)e->n, err)))
            rc = apr_outfile_write(&f, tmp, (size_t)e->n * 4, err);
    }
    /* the chunk count, then the dataset name (llama-quantize records both) */
    const char *ds = s->n_datasets ? s->datasets[0] : "";
    if (!rc && !(rc = put_i32(&f, (int32_t)s->chunks, err)) && !(rc = put_i32(&f, (int32_t)strlen(ds), err)))
        rc = apr_outfile_write(&f, ds, strlen(ds), err);
    if (!rc)
        rc = apr_outfile_commit(&f, err);
    else
        apr_outfile_abort(&f);
    free(tmp);
    free(v);
    return rc;
}

int apr_imatrix_write_gguf(const apr_imatrix_stats *s, const char *path, apr_err *err)
{
    const apr_imatrix_stat **v;
    int rc = sorted_stats(s, &v, err);
    if (rc)
        return rc;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    if (!m)
        rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    /* the KVs in llama-imatrix's order */
    if (!rc)
        rc = apr_model_set_kv_str(m, "general.type", "imatrix");
    if (!rc) {
        apr_str *ds = calloc(s->n_datasets + 1, sizeof *ds);
        for (uint32_t i = 0; ds && i < s->n_datasets; i++)
            ds[i] = (apr_str){strlen(s->datasets[i]), s->datasets[i]};
        const apr_kv kv = {.key = (char *)"imatrix.datasets", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING,
                           .count = s->n_datasets, .arr = ds};
        rc = ds ? apr_model_set_kv(m, &kv) : APR_E_NOMEM;
        free(ds);
    }
    if (!rc)
        rc = apr_model_set_kv_u32(m, "imatrix.chunk_count", s->chunks);
    if (!rc)
        rc = apr_model_set_kv_u32(m, "imatrix.chunk_size", s->chunk_size);
    if (rc && m) /* the KV setters fail only for want of memory */
        rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    for (uint64_t i = 0; i < s->n_entries && !rc; i++) {
        const apr_imatrix_stat *e = v[i];
        char name[4096 + 16];
        float *cnt = malloc(sizeof *cnt);
        if (!cnt) {
            rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
            break;
        }
        *cnt = (float)e->count;
        const uint64_t dsum[2] = {1, e->n}, dcnt[2] = {1, 1}; /* outermost first: ne [n, 1] and [1, 1] */
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        rc = apr_model_add_tensor(m, name, APR_DT_F32, 2, dsum, e->sum2, e->n * 4, false, err);
        snprintf(name, sizeof name, "%s.counts", e->name);
        if (!rc)
            rc = apr_model_add_tensor(m, name, APR_DT_F32, 2, dcnt, cnt, 4, true, err);
        else
            free(cnt);
    }
    if (!rc)
        rc = apr_gguf_write(m, path, NULL, err);
    apr_model_free(m);
    free(v);
    return rc;
}
