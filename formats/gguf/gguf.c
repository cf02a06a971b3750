/* gguf.c - GGUF v2/v3 reader and v3 writer.
 *
 * Reader: the file is mmapped and only the metadata (KVs, tensor infos) is
 * decoded; tensor payloads stay in the mapping (apr_tensor.data points into it),
 * so opening a 15 GB model costs only its metadata in memory. Every count,
 * length, dim and offset is validated before it is used, like ggml's gguf.cpp:
 * a count is compared with the bytes left in the file BEFORE anything is
 * allocated for it.
 *
 * Writer: header, KVs in model order, tensor infos in model order with
 * offsets = running sum of payload sizes padded to the alignment (what
 * llama.cpp's loader requires), data section aligned, padding after every
 * tensor including the last. Payloads are streamed from the source pointers.
 */
#include "apr_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "formats/: GGUF/APR numeric arrays are copied as little-endian bytes; big-endian hosts are not supported"
#endif

#define GGUF_MAX_DIMS 4
#define GGUF_NAME_MAX 64 /* llama.cpp: tensor names must be shorter than GGML_MAX_NAME */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_KEY_ALIGNMENT "general.alignment"
#define GGUF_KEY_PROVENANCE "apr.provenance.json"
#define GGUF_KEY_SPLIT_NO "split.no"
#define GGUF_KEY_SPLIT_COUNT "split.count"
#define GGUF_KEY_SPLIT_TENSORS "split.tensors.count"

/* ---------------------------------------------------------------- shared helpers */

bool apr_utf8_valid(const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

void apr_progress(bool enabled, const char *what, uint64_t done, uint64_t total)
{
    if (!enabled || !isatty(STDERR_FILENO))
        return;
    int pct = total ? (int)(done * 100 / total) : 100;
    fprintf(stderr, "\r%s: %3d%% (%llu / %llu MiB)", what, pct, (unsigned long long)(done >> 20),
            (unsigned long long)(total >> 20));
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

/* ---------------------------------------------------------------- reader */

/* The bytes go through an apr_cursor (libutil); rd adds GGUF's messages. */
typedef struct rd {
    apr_cursor c;
    apr_err *err;
    int rc;
} rd;

static uint64_t rd_left(const rd *r) { return apr_cur_left(&r->c); }

static bool rd_fail(rd *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool rd_fail(rd *r, int code, const char *fmt, ...)
{
    if (r->err) {
        va_list ap;
        va_start(ap, fmt);
        char tmp[900];
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        apr_err_set(r->err, code, "GGUF: %s", tmp);
    }
    r->rc = code;
    return false;
}

static bool rd_need(rd *r, uint64_t n, const char *what)
{
    if (rd_left(r) >= n)
        return true;
    return rd_fail(r, APR_E_FORMAT, "truncated file: %s needs %llu bytes at offset %llu, only %llu left", what,
                   (unsigned long long)n, (unsigned long long)r->c.pos, (unsigned long long)rd_left(r));
}

static bool rd_u32(rd *r, uint32_t *v, const char *what)
{
    return rd_need(r, 4, what) && apr_cur_u32(&r->c, v);
}

static bool rd_u64(rd *r, uint64_t *v, const char *what)
{
    return rd_need(r, 8, what) && apr_cur_u64(&r->c, v);
}

static bool rd_bytes(rd *r, void *out, uint64_t n, const char *what)
{
    return rd_need(r, n, what) && apr_cur_bytes(&r->c, out, n);
}

/* A GGUF string: u64 length then bytes. The length is checked against the bytes
 * left before the copy is allocated. */
static bool rd_str(rd *r, apr_str *s, const char *what)
{
    uint64_t len;
    if (!rd_u64(r, &len, what))
        return false;
    if (len > rd_left(r))
        return rd_fail(r, APR_E_FORMAT, "%s: string length %llu at offset %llu exceeds the %llu bytes left in the file",
                       what, (unsigned long long)len, (unsigned long long)(r->c.pos - 8),
                       (unsigned long long)rd_left(r));
    if (len > SIZE_MAX - 1)
        return rd_fail(r, APR_E_NOMEM, "%s: string too long", what);
    s->s = malloc(len + 1);
    if (!s->s)
        return rd_fail(r, APR_E_NOMEM, "out of memory reading %s", what);
    (void)apr_cur_bytes(&r->c, s->s, len); /* len <= rd_left: checked above */
    s->s[len] = 0;
    s->len = len;
    return true;
}

static bool kv_type_valid(uint32_t t) { return t < APR_KV_TYPE_COUNT; }

static bool rd_kv_value(rd *r, apr_kv *kv)
{
    uint32_t t;
    if (!rd_u32(r, &t, "KV value type"))
        return false;
    if (!kv_type_valid(t))
        return rd_fail(r, APR_E_FORMAT, "KV '%s': unknown value type %u", kv->key, t);
    kv->type = (apr_kv_type)t;
    if (t == APR_KV_STRING)
        return rd_str(r, &kv->str, kv->key);
    if (t != APR_KV_ARRAY) {
        size_t es = apr_kv_type_size(kv->type);
        uint8_t b[8] = {0};
        if (!rd_bytes(r, b, es, kv->key))
            return false;
        memcpy(&kv->v, b, es); /* little-endian host: the union's first bytes */
        return true;
    }
    uint32_t et;
    uint64_t count;
    if (!rd_u32(r, &et, "array element type") || !rd_u64(r, &count, "array count"))
        return false;
    if (et == APR_KV_ARRAY)
        return rd_fail(r, APR_E_FORMAT, "KV '%s': arrays of arrays are not allowed", kv->key);
    if (!kv_type_valid(et))
        return rd_fail(r, APR_E_FORMAT, "KV '%s': unknown array element type %u", kv->key, et);
    kv->arr_type = (apr_kv_type)et;
    if (et == APR_KV_STRING) {
        /* every string takes at least its 8-byte length */
        if (count > rd_left(r) / 8)
            return rd_fail(r, APR_E_FORMAT, "KV '%s': array count %llu cannot fit in the %llu bytes left",
                           kv->key, (unsigned long long)count, (unsigned long long)rd_left(r));
        apr_str *a = calloc(count ? count : 1, sizeof *a);
        if (!a)
            return rd_fail(r, APR_E_NOMEM, "out of memory reading KV '%s'", kv->key);
        kv->arr = a;
        for (uint64_t i = 0; i < count; i++) {
            if (!rd_str(r, &a[i], kv->key))
                return false;
            kv->count = i + 1; /* apr_kv_free frees exactly what was read */
        }
        kv->count = count;
        return true;
    }
    size_t es = apr_kv_type_size(kv->arr_type);
    if (count > rd_left(r) / es)
        return rd_fail(r, APR_E_FORMAT, "KV '%s': array count %llu cannot fit in the %llu bytes left",
                       kv->key, (unsigned long long)count, (unsigned long long)rd_left(r));
    kv->arr = malloc(count ? count * es : 1);
    if (!kv->arr)
        return rd_fail(r, APR_E_NOMEM, "out of memory reading KV '%s'", kv->key);
    (void)apr_cur_bytes(&r->c, kv->arr, count * es); /* fits: checked above */
    kv->count = count;
    return true;
}

typedef struct range { uint64_t start, end; uint64_t tensor; } range;
static int cmp_range(const void *a, const void *b)
{
    const range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Reads the tensor-info section into m->tensors (offsets still relative). */
static bool rd_tensor_infos(rd *r, apr_model *m, uint64_t n_tensors, uint64_t *rel_off)
{
    for (uint64_t i = 0; i < n_tensors; i++) {
        apr_tensor *t = &m->tensors[i];
        apr_str name = {0};
        if (!rd_str(r, &name, "tensor name"))
            return false;
        t->name = name.s;
        m->n_tensors = i + 1;
        if (name.len >= GGUF_NAME_MAX)
            return rd_fail(r, APR_E_FORMAT, "tensor %llu: name is %llu bytes; GGUF (llama.cpp) allows at most %d",
                           (unsigned long long)i, (unsigned long long)name.len, GGUF_NAME_MAX - 1);
        if (name.len == 0)
            return rd_fail(r, APR_E_FORMAT, "tensor %llu: empty name", (unsigned long long)i);
        if (strlen(name.s) != name.len || !apr_utf8_valid(name.s, name.len))
            return rd_fail(r, APR_E_FORMAT, "tensor %llu: name is not valid UTF-8 (or contains NUL)",
                           (unsigned long long)i);
        uint32_t n_dims;
        if (!rd_u32(r, &n_dims, "tensor n_dims"))
            return false;
        if (n_dims > GGUF_MAX_DIMS)
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': n_dims %u > %d", t->name, n_dims, GGUF_MAX_DIMS);
        uint64_t ne[GGUF_MAX_DIMS];
        for (uint32_t d = 0; d < n_dims; d++) {
            if (!rd_u64(r, &ne[d], "tensor dim"))
                return false;
            if (ne[d] > (uint64_t)INT64_MAX)
                return rd_fail(r, APR_E_FORMAT, "tensor '%s': dim %u is negative as int64 (%llu)", t->name, d,
                               (unsigned long long)ne[d]);
        }
        uint32_t type;
        if (!rd_u32(r, &type, "tensor type") || !rd_u64(r, &rel_off[i], "tensor offset"))
            return false;
        t->ndim = n_dims;
        for (uint32_t d = 0; d < n_dims; d++)
            t->dims[d] = ne[n_dims - 1 - d]; /* outermost first */
        uint64_t count;
        if (!apr_dims_count(n_dims, t->dims, &count) || count > (uint64_t)INT64_MAX)
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': element count overflows", t->name);
        /* ggml types only: the U8/U16/... codes >= 64 are this project's, not GGUF's */
        const apr_dtype_info *di = type < APR_DT_U8 ? apr_dtype_get((int)type) : NULL;
        if (!di)
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': unknown or unsupported ggml type %u", t->name, type);
        t->dtype = (apr_dtype)type;
        if (n_dims && ne[0] % di->block_elems)
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': ne[0] = %llu is not a multiple of the %s block size %u",
                           t->name, (unsigned long long)ne[0], di->name, di->block_elems);
        if (!apr_dtype_tensor_bytes(t->dtype, t->ndim, t->dims, &t->nbytes) || t->nbytes > (uint64_t)INT64_MAX)
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': byte size overflows", t->name);
    }
    return true;
}

/* Places tensors in the data section and checks alignment, bounds and overlaps. */
static bool rd_place_tensors(rd *r, apr_model *m, uint64_t data_start, const uint64_t *rel_off)
{
    uint64_t n = m->n_tensors;
    if (n == 0)
        return true;
    if (data_start > r->c.size)
        return rd_fail(r, APR_E_FORMAT, "truncated file: data section starts at %llu, file is %llu bytes",
                       (unsigned long long)data_start, (unsigned long long)r->c.size);
    range *rg = malloc(n * sizeof *rg);
    if (!rg)
        return rd_fail(r, APR_E_NOMEM, "out of memory");
    uint64_t data_size = r->c.size - data_start;
    for (uint64_t i = 0; i < n; i++) {
        apr_tensor *t = &m->tensors[i];
        if (rel_off[i] % m->alignment) {
            free(rg);
            return rd_fail(r, APR_E_FORMAT, "tensor '%s': offset %llu is not a multiple of the alignment %u",
                           t->name, (unsigned long long)rel_off[i], m->alignment);
        }
        if (rel_off[i] > data_size || t->nbytes > data_size - rel_off[i]) {
            free(rg);
            return rd_fail(r, APR_E_FORMAT,
                           "tensor '%s': data [%llu, +%llu) runs past the end of the file (data section is %llu bytes)",
                           t->name, (unsigned long long)rel_off[i], (unsigned long long)t->nbytes,
                           (unsigned long long)data_size);
        }
        t->file_offset = data_start + rel_off[i];
        t->data = r->c.buf + t->file_offset;
        t->shard = 0;
        rg[i] = (range){rel_off[i], rel_off[i] + t->nbytes, i};
    }
    qsort(rg, n, sizeof *rg, cmp_range);
    for (uint64_t i = 1; i < n; i++) {
        if (rg[i].start < rg[i - 1].end) {
            const char *a = m->tensors[rg[i - 1].tensor].name, *b = m->tensors[rg[i].tensor].name;
            free(rg);
            return rd_fail(r, APR_E_FORMAT, "tensors '%s' and '%s' have overlapping data", a, b);
        }
    }
    free(rg);
    return true;
}

static bool rd_header_and_kvs(rd *r, apr_model *m, uint64_t *n_tensors_out)
{
    uint8_t magic[4];
    if (!rd_bytes(r, magic, 4, "magic"))
        return false;
    if (memcmp(magic, "GGUF", 4) != 0)
        return rd_fail(r, APR_E_FORMAT, "bad magic %02x %02x %02x %02x (expected 'GGUF')", magic[0], magic[1],
                       magic[2], magic[3]);
    uint32_t version;
    if (!rd_u32(r, &version, "version"))
        return false;
    if (version == 1)
        return rd_fail(r, APR_E_UNSUPPORTED, "GGUF version 1 is not supported (only 2 and 3)");
    if (version != 2 && version != 3) {
        if ((version & 0xFFFF) == 0 && version)
            return rd_fail(r, APR_E_UNSUPPORTED, "unsupported GGUF version %u (a big-endian file?)", version);
        return rd_fail(r, APR_E_UNSUPPORTED, "unsupported GGUF version %u (only 2 and 3)", version);
    }
    m->version = version;
    uint64_t n_tensors, n_kvs;
    if (!rd_u64(r, &n_tensors, "tensor_count") || !rd_u64(r, &n_kvs, "kv_count"))
        return false;
    /* Minimum encoded sizes: a KV is at least key length (8) + type (4) + 1 byte
     * of value; a tensor info at least name length (8) + n_dims (4) + type (4) +
     * offset (8). Counts that cannot fit are rejected before any allocation. */
    if (n_kvs > rd_left(r) / 13)
        return rd_fail(r, APR_E_FORMAT, "kv_count %llu cannot fit in the %llu bytes left in the file",
                       (unsigned long long)n_kvs, (unsigned long long)rd_left(r));
    if (n_tensors > (rd_left(r) - n_kvs * 13) / 24)
        return rd_fail(r, APR_E_FORMAT, "tensor_count %llu cannot fit in the %llu bytes left in the file",
                       (unsigned long long)n_tensors, (unsigned long long)rd_left(r));
    m->kvs = calloc(n_kvs ? n_kvs : 1, sizeof *m->kvs);
    m->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *m->tensors);
    if (!m->kvs || !m->tensors)
        return rd_fail(r, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n_kvs; i++) {
        apr_kv *kv = &m->kvs[i];
        apr_str key = {0};
        if (!rd_str(r, &key, "KV key"))
            return false;
        kv->key = key.s;
        m->n_kvs = i + 1;
        if (key.len == 0 || strlen(key.s) != key.len || !apr_utf8_valid(key.s, key.len))
            return rd_fail(r, APR_E_FORMAT, "KV %llu: key is empty, contains NUL or is not valid UTF-8",
                           (unsigned long long)i);
        if (!rd_kv_value(r, kv))
            return false;
    }
    bool oom;
    const char *dup = apr_find_duplicate_name(m->kvs, sizeof *m->kvs, m->n_kvs, &oom);
    if (oom)
        return rd_fail(r, APR_E_NOMEM, "out of memory");
    if (dup)
        return rd_fail(r, APR_E_FORMAT, "duplicate key '%s'", dup);
    m->alignment = GGUF_DEFAULT_ALIGNMENT;
    const apr_kv *al = apr_model_kv(m, GGUF_KEY_ALIGNMENT);
    if (al) {
        if (al->type != APR_KV_U32)
            return rd_fail(r, APR_E_FORMAT, "%s has type %s (must be u32)", GGUF_KEY_ALIGNMENT,
                           apr_kv_type_name(al->type));
        if (al->v.u32 == 0 || (al->v.u32 & (al->v.u32 - 1)))
            return rd_fail(r, APR_E_FORMAT, "%s = %u is not a power of two", GGUF_KEY_ALIGNMENT, al->v.u32);
        m->alignment = al->v.u32;
    }
    *n_tensors_out = n_tensors;
    return true;
}

int apr_gguf_parse(apr_model **out, const uint8_t *buf, uint64_t size, apr_err *err)
{
    *out = NULL;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    if (!m)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    rd r = {{buf, size, 0}, err, 0};
    uint64_t n_tensors = 0, *rel_off = NULL;
    if (!rd_header_and_kvs(&r, m, &n_tensors))
        goto fail;
    rel_off = malloc((n_tensors ? n_tensors : 1) * sizeof *rel_off);
    if (!rel_off) {
        rd_fail(&r, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    if (!rd_tensor_infos(&r, m, n_tensors, rel_off))
        goto fail;
    bool oom;
    const char *dup = apr_find_duplicate_name(m->tensors, sizeof *m->tensors, m->n_tensors, &oom);
    if (oom || dup) {
        rd_fail(&r, oom ? APR_E_NOMEM : APR_E_FORMAT, oom ? "out of memory" : "duplicate tensor name '%s'",
                oom ? "" : dup);
        goto fail;
    }
    uint64_t data_start = r.c.pos + (m->alignment - r.c.pos % m->alignment) % m->alignment;
    if (!rd_place_tensors(&r, m, data_start, rel_off))
        goto fail;
    free(rel_off);
    rel_off = NULL;
    /* Architecture config and tokenizer view. A file whose hyper-parameters do
     * not make a usable config is still a valid GGUF (has_cfg stays false;
     * consumers that need a config report that), so the result is not fatal. */
    apr_model_derive(m, NULL);
    const char *prov = apr_kv_get_str(m, GGUF_KEY_PROVENANCE);
    if (prov && !(m->provenance_json = strdup(prov))) {
        rd_fail(&r, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = m;
    return 0;
fail:
    free(rel_off);
    apr_model_free(m);
    return r.rc ? r.rc : APR_E_FORMAT;
}

/* ---------------------------------------------------------------- split files (gguf-split) */

static int split_keys(const apr_model *m, uint32_t *no, uint32_t *count, uint32_t *total)
{
    bool a = apr_kv_get_u32(m, GGUF_KEY_SPLIT_NO, no), b = apr_kv_get_u32(m, GGUF_KEY_SPLIT_COUNT, count),
         c = apr_kv_get_u32(m, GGUF_KEY_SPLIT_TENSORS, total);
    return a && b && c ? 1 : (a || b || c) ? -1 : 0;
}

/* A split GGUF (split.count > 1 in the file opened): opens splits 2..N by
 * llama.cpp's names (PREFIX-%05d-of-%05d.gguf), checks that each is the
 * split it should be of this model (split.no, split.count and
 * split.tensors.count agree, the tensor total matches) and makes one model
 * of them; the split.* keys, which describe files and not the model, are
 * dropped from the view. */
static int open_splits(apr_model *m, const char *path, apr_err *err)
{
    uint32_t no = 0, count = 0, total = 0;
    int have = split_keys(m, &no, &count, &total);
    if (have == 0)
        return 0;
    if (have < 0)
        return apr_err_set(err, APR_E_FORMAT, "%s: has some of split.no, split.count, split.tensors.count but not all",
                           path);
    if (count == 0 || no >= count)
        return apr_err_set(err, APR_E_FORMAT, "%s: split.no %u of split.count %u", path, no, count);
    if (no != 0)
        return apr_err_set(err, APR_E_ARG, "%s is split %u of %u: open the first split (-00001-of-%05u.gguf)", path,
                           no + 1, count, count);
    for (uint32_t k = 1; k < count; k++) {
        char sp[4096];
        if (apr_gguf_split_path(path, k, count, sp, sizeof sp))
            return apr_err_set(err, APR_E_ARG, "%s: path too long", path);
        if (access(sp, F_OK) != 0)
            return apr_err_set(err, APR_E_IO, "%s: split %u of %u is missing (%s)", path, k + 1, count, sp);
        apr_model *part = NULL;
        int rc = apr_open_mapped(&part, sp, APR_FMT_GGUF, false, err);
        if (rc)
            return rc;
        uint32_t pno = 0, pcount = 0, ptotal = 0;
        if (split_keys(part, &pno, &pcount, &ptotal) != 1 || pno != k || pcount != count || ptotal != total)
            rc = apr_err_set(err, APR_E_FORMAT,
                             "%s is not split %u of %u of %s's model (its split.no %u, split.count %u, "
                             "split.tensors.count %u; expected %u, %u, %u)",
                             sp, k + 1, count, path, pno, pcount, ptotal, k, count, total);
        if (!rc)
            rc = apr_model_adopt_part(m, part, k, "splits", err);
        apr_model_free(part);
        if (rc)
            return rc;
    }
    if (m->n_tensors != total)
        return apr_err_set(err, APR_E_FORMAT, "%s: split.tensors.count is %u but the %u splits hold %llu tensors", path,
                           total, count, (unsigned long long)m->n_tensors);
    apr_model_remove_kv(m, GGUF_KEY_SPLIT_NO);
    apr_model_remove_kv(m, GGUF_KEY_SPLIT_COUNT);
    apr_model_remove_kv(m, GGUF_KEY_SPLIT_TENSORS);
    apr_model_derive(m, NULL); /* the KV table moved */
    return 0;
}

int apr_gguf_open(apr_model **out, const char *path, apr_err *err)
{
    int rc = apr_open_mapped(out, path, APR_FMT_GGUF, false, err);
    if (rc)
        return rc;
    if ((rc = open_splits(*out, path, err))) {
        apr_model_free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------- writer */

static void put_str(apr_buf *b, const char *s, uint64_t len)
{
    apr_buf_u64(b, len);
    apr_buf_put(b, s, (size_t)len);
}

static int put_kv(apr_buf *b, const apr_kv *kv, apr_err *err)
{
    put_str(b, kv->key, strlen(kv->key));
    apr_buf_u32(b, (uint32_t)kv->type);
    if (kv->type == APR_KV_STRING) {
        put_str(b, kv->str.s ? kv->str.s : "", kv->str.len);
    } else if (kv->type == APR_KV_ARRAY) {
        if (kv->arr_type == APR_KV_ARRAY || !kv_type_valid(kv->arr_type))
            return apr_err_set(err, APR_E_ARG, "KV '%s': invalid array element type %d", kv->key, kv->arr_type);
        apr_buf_u32(b, (uint32_t)kv->arr_type);
        apr_buf_u64(b, kv->count);
        if (kv->arr_type == APR_KV_STRING) {
            const apr_str *s = kv->arr;
            for (uint64_t i = 0; i < kv->count; i++)
                put_str(b, s[i].s ? s[i].s : "", s[i].len);
        } else {
            apr_buf_put(b, kv->arr, (size_t)(kv->count * apr_kv_type_size(kv->arr_type)));
        }
    } else if (kv_type_valid(kv->type)) {
        apr_buf_put(b, &kv->v, apr_kv_type_size(kv->type));
    } else {
        return apr_err_set(err, APR_E_ARG, "KV '%s': invalid type %d", kv->key, kv->type);
    }
    return 0;
}

/* What GGUF can hold: ggml types only, <= 4 dims, short names, block-aligned rows. */
static int check_tensor_for_gguf(const apr_tensor *t, apr_err *err)
{
    size_t nl = strlen(t->name);
    if (nl == 0)
        return apr_err_set(err, APR_E_ARG, "a tensor has an empty name");
    if (nl >= GGUF_NAME_MAX)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': name is %zu bytes; GGUF allows at most %d",
                           t->name, nl, GGUF_NAME_MAX - 1);
    if (t->dtype == APR_DT_ROWCAT)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "tensor '%s' is a ROWCAT (parts with different dtypes); GGUF cannot hold it: split it first",
                           t->name);
    if ((int)t->dtype >= APR_DT_U8 || !apr_dtype_get(t->dtype))
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': GGUF has no dtype %s", t->name,
                           apr_dtype_name(t->dtype));
    if (t->ndim > GGUF_MAX_DIMS)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': %u dims; GGUF allows at most %d", t->name,
                           t->ndim, GGUF_MAX_DIMS);
    uint64_t nb;
    if (!apr_dtype_tensor_bytes(t->dtype, t->ndim, t->dims, &nb) || nb != t->nbytes)
        return apr_err_set(err, APR_E_ARG, "tensor '%s': %llu bytes do not match its %s shape", t->name,
                           (unsigned long long)t->nbytes, apr_dtype_name(t->dtype));
    return 0;
}

/* One output file of a (possibly split) GGUF: tensors [first, first+count). */
typedef struct gguf_part {
    uint64_t first, count;
} gguf_part;

static bool is_split_key(const char *k)
{
    return !strcmp(k, GGUF_KEY_SPLIT_NO) || !strcmp(k, GGUF_KEY_SPLIT_COUNT) || !strcmp(k, GGUF_KEY_SPLIT_TENSORS);
}

/* Builds the header + KVs + tensor infos + padding of one file into b. A
 * split file (n_parts > 0) holds the model's KVs only when it is the first,
 * then split.no, split.count, split.tensors.count last (what gguf-split's
 * gguf_set_val_* calls append), as gguf-split writes them. */
static int build_gguf_meta(const apr_model *m, uint32_t align, bool set_align, const gguf_part *parts, size_t n_parts,
                           size_t part, apr_buf *b, apr_err *err)
{
    int rc;
    const gguf_part whole = {0, m->n_tensors};
    const gguf_part *pt = n_parts ? &parts[part] : &whole;
    bool all_kvs = part == 0;
    bool have_align_kv = apr_model_kv(m, GGUF_KEY_ALIGNMENT) != NULL;
    bool add_align = all_kvs ? set_align && !have_align_kv : align != GGUF_DEFAULT_ALIGNMENT;
    bool add_prov = all_kvs && m->provenance_json && !apr_model_kv(m, GGUF_KEY_PROVENANCE);
    uint64_t n_kvs = add_align + add_prov + (n_parts ? 3 : 0);
    for (uint64_t i = 0; all_kvs && i < m->n_kvs; i++)
        n_kvs += !is_split_key(m->kvs[i].key);
    apr_buf_put(b, "GGUF", 4);
    apr_buf_u32(b, 3);
    apr_buf_u64(b, pt->count);
    apr_buf_u64(b, n_kvs);
    for (uint64_t i = 0; all_kvs && i < m->n_kvs; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (is_split_key(kv->key))
            continue; /* a split source's: they describe its files, not the model */
        if (set_align && strcmp(kv->key, GGUF_KEY_ALIGNMENT) == 0) {
            apr_kv a = {.key = kv->key, .type = APR_KV_U32, .v.u32 = align};
            rc = put_kv(b, &a, err);
        } else {
            rc = put_kv(b, kv, err);
        }
        if (rc)
            return rc;
    }
    if (add_align) {
        apr_kv a = {.key = GGUF_KEY_ALIGNMENT, .type = APR_KV_U32, .v.u32 = align};
        put_kv(b, &a, err);
    }
    if (add_prov) {
        /* The model carries provenance but no KV for it (e.g. read from APR):
         * record it under the key the GGUF reader maps back. */
        apr_kv p = {.key = GGUF_KEY_PROVENANCE, .type = APR_KV_STRING,
                    .str = {strlen(m->provenance_json), m->provenance_json}};
        put_kv(b, &p, err);
    }
    if (n_parts) {
        apr_kv k1 = {.key = GGUF_KEY_SPLIT_NO, .type = APR_KV_U16, .v.u16 = (uint16_t)part};
        apr_kv k2 = {.key = GGUF_KEY_SPLIT_COUNT, .type = APR_KV_U16, .v.u16 = (uint16_t)n_parts};
        apr_kv k3 = {.key = GGUF_KEY_SPLIT_TENSORS, .type = APR_KV_I32, .v.i32 = (int32_t)m->n_tensors};
        put_kv(b, &k1, err);
        put_kv(b, &k2, err);
        put_kv(b, &k3, err);
    }
    uint64_t off = 0;
    for (uint64_t i = pt->first; i < pt->first + pt->count; i++) {
        const apr_tensor *t = &m->tensors[i];
        put_str(b, t->name, strlen(t->name));
        apr_buf_u32(b, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            apr_buf_u64(b, t->dims[t->ndim - 1 - d]); /* ne[0] = innermost */
        apr_buf_u32(b, (uint32_t)t->dtype);
        apr_buf_u64(b, off);
        uint64_t padded = t->nbytes + (align - t->nbytes % align) % align;
        off += padded;
    }
    apr_buf_pad(b, align);
    if (b->oom)
        return apr_err_set(err, APR_E_NOMEM, "out of memory building GGUF metadata");
    return 0;
}

/* The files o->split_counts gives (llama-quantize --keep-split's). */
static int plan_given_split(const apr_model *m, const apr_write_opts *o, gguf_part **out, size_t *n, apr_err *err)
{
    if (o->split_max_bytes || o->split_max_tensors)
        return apr_err_set(err, APR_E_ARG, "split files given tensor by tensor and by a limit at once");
    if (o->n_split_counts < 2 || o->n_split_counts > UINT16_MAX)
        return apr_err_set(err, APR_E_ARG, "%u split files: GGUF's split.count is 2..65535", o->n_split_counts);
    gguf_part *p = calloc(o->n_split_counts, sizeof *p);
    if (!p)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    uint64_t first = 0;
    for (uint32_t k = 0; k < o->n_split_counts; k++) {
        if ((k > 0 && o->split_counts[k] == 0) || o->split_counts[k] > m->n_tensors - first) {
            free(p);
            return apr_err_set(err, APR_E_ARG, "split %u of %u: %llu tensors (%llu of %llu placed before it)", k + 1,
                               o->n_split_counts, (unsigned long long)o->split_counts[k],
                               (unsigned long long)first, (unsigned long long)m->n_tensors);
        }
        p[k] = (gguf_part){first, o->split_counts[k]};
        first += o->split_counts[k];
    }
    if (first != m->n_tensors) {
        free(p);
        return apr_err_set(err, APR_E_ARG, "the split files hold %llu of the model's %llu tensors",
                           (unsigned long long)first, (unsigned long long)m->n_tensors);
    }
    *out = p;
    *n = o->n_split_counts;
    return 0;
}

/* gguf-split's plan: a new file when the running sum of the tensors' sizes
 * padded to 32 (metadata not counted) would pass split_max_bytes, or every
 * split_max_tensors tensors. *n = 0 when o asks for no split. */
static int plan_split(const apr_model *m, const apr_write_opts *o, gguf_part **out, size_t *n, apr_err *err)
{
    *out = NULL;
    *n = 0;
    if (o && o->n_split_counts)
        return plan_given_split(m, o, out, n, err);
    if (!o || (!o->split_max_bytes && !o->split_max_tensors))
        return 0;
    if (m->n_tensors == 0)
        return apr_err_set(err, APR_E_ARG, "a split GGUF needs at least one tensor");
    gguf_part *p = calloc(m->n_tensors, sizeof *p);
    if (!p)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    size_t np = 1;
    uint64_t cur = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        uint64_t nb = m->tensors[i].nbytes;
        uint64_t padded = nb + (GGUF_DEFAULT_ALIGNMENT - nb % GGUF_DEFAULT_ALIGNMENT) % GGUF_DEFAULT_ALIGNMENT;
        bool cut = o->split_max_bytes ? cur + padded > o->split_max_bytes
                                      : i > 0 && i % o->split_max_tensors == 0;
        if (cut && p[np - 1].count == 0) {
            free(p);
            return apr_err_set(err, APR_E_ARG, "tensor '%s' (%llu bytes) alone exceeds --split-max-size",
                               m->tensors[i].name, (unsigned long long)nb);
        }
        if (cut) {
            p[np++].first = i;
            cur = 0;
        }
        cur += padded;
        p[np - 1].count++;
    }
    if (np > UINT16_MAX) {
        free(p);
        return apr_err_set(err, APR_E_ARG, "%zu splits: GGUF's split.count is a u16", np);
    }
    *out = p;
    *n = np;
    return 0;
}

/* "-DDDDD-of-DDDDD", llama_split_path's suffix before ".gguf" */
static bool is_split_suffix(const char *s)
{
    for (int k = 0; k < 15; k++) {
        bool digit = (k >= 1 && k <= 5) || k >= 10;
        if (digit ? (s[k] < '0' || s[k] > '9') : s[k] != "-DDDDD-of-DDDDD"[k])
            return false;
    }
    return true;
}

int apr_gguf_split_path(const char *path, uint32_t no, uint32_t count, char *buf, size_t n)
{
    size_t l = strlen(path);
    if (l > 5 && !strcmp(path + l - 5, ".gguf"))
        l -= 5;
    /* "x-00001-of-00003.gguf" given as the output: its prefix is "x" */
    if (l >= 15 && is_split_suffix(path + l - 15))
        l -= 15;
    int w = snprintf(buf, n, "%.*s-%05u-of-%05u.gguf", (int)l, path, no + 1, count);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

int apr_gguf_record_splits(apr_prov *p, const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err)
{
    gguf_part *parts = NULL;
    size_t n = 0;
    int rc = plan_split(m, o, &parts, &n, err);
    free(parts);
    for (size_t k = 0; k < n && !rc; k++) {
        char sp[4096];
        if (apr_gguf_split_path(path, (uint32_t)k, (uint32_t)n, sp, sizeof sp))
            return apr_err_set(err, APR_E_ARG, "%s: path too long", path);
        const char *slash = strrchr(sp, '/');
        rc = apr_prov_add_output_file(p, slash ? slash + 1 : sp, k == 0, err);
    }
    return rc;
}

int apr_gguf_split_count(const apr_model *m, const apr_write_opts *o, uint32_t *n, apr_err *err)
{
    gguf_part *parts = NULL;
    size_t np = 0;
    int rc = plan_split(m, o, &parts, &np, err);
    free(parts);
    *n = rc ? 0 : (uint32_t)np;
    return rc;
}

int apr_gguf_check_split_outputs(const apr_model *m, const char *path, const apr_write_opts *o, const apr_model *input,
                                 apr_err *err)
{
    gguf_part *parts = NULL;
    size_t n = 0;
    int rc = plan_split(m, o, &parts, &n, err);
    free(parts);
    for (size_t k = 0; k < n && !rc; k++) {
        char sp[4096];
        if (apr_gguf_split_path(path, (uint32_t)k, (uint32_t)n, sp, sizeof sp))
            return apr_err_set(err, APR_E_ARG, "%s: path too long", path);
        for (uint32_t j = 0; j < input->n_maps && !rc; j++)
            if (input->maps[j].path && apr_same_file(input->maps[j].path, sp))
                rc = apr_err_set(err, APR_E_ARG, "split %zu of %zu, %s, would be written over the input file %s; apr "
                                 "never overwrites its input (choose another OUT)", k + 1, n, sp, input->maps[j].path);
    }
    return rc;
}

/* The recorded name of an output file: its basename. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* hash: sha256 the file as it is written and give the digest to o->prov
 * (a later split the record lists under output_files). */
static int write_gguf_file(const apr_model *m, const char *path, uint32_t align, bool set_align, const gguf_part *parts,
                           size_t n_parts, size_t part, const apr_write_opts *o, apr_stream *st, apr_outfile *f,
                           apr_buf *meta, uint64_t *done, uint64_t total, bool hash, apr_err *err)
{
    int rc = build_gguf_meta(m, align, set_align, parts, n_parts, part, meta, err);
    if (rc || (rc = apr_outfile_open(f, path, err)))
        return rc;
    if (hash && !(f->sha = apr_sha256_new()))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    rc = apr_outfile_write(f, meta->p, meta->len, err);
    uint64_t first = n_parts ? parts[part].first : 0, count = n_parts ? parts[part].count : m->n_tensors;
    for (uint64_t i = first; i < first + count && !rc; i++) {
        rc = apr_stream_payload(st, f, m, i, o, NULL, err);
        if (!rc)
            rc = apr_outfile_pad(f, align, err); /* after every tensor, the last one too */
        *done += m->tensors[i].nbytes;
        apr_progress(o && o->progress, "writing GGUF", *done, total);
    }
    if (f->sha) {
        uint8_t sha[32];
        apr_sha256_final(f->sha, sha); /* frees it */
        f->sha = NULL;
        if (!rc)
            rc = apr_prov_set_file_digest(o->prov, base_name(path), sha, err);
    }
    return rc;
}

int apr_gguf_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err)
{
    int rc;
    uint32_t align = GGUF_DEFAULT_ALIGNMENT;
    bool set_align = o && o->alignment;
    const apr_kv *al = apr_model_kv(m, GGUF_KEY_ALIGNMENT);
    if (set_align) {
        align = o->alignment;
    } else if (al) {
        if (al->type != APR_KV_U32)
            return apr_err_set(err, APR_E_ARG, "%s must be u32 (is %s)", GGUF_KEY_ALIGNMENT,
                               apr_kv_type_name(al->type));
        align = al->v.u32;
    }
    if (align == 0 || (align & (align - 1)))
        return apr_err_set(err, APR_E_ARG, "GGUF alignment %u is not a power of two", align);
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if ((rc = check_tensor_for_gguf(&m->tensors[i], err)) || (rc = apr_stream_check(&m->tensors[i], o, err)))
            return rc;
    for (uint64_t i = 0; i < m->n_kvs; i++)
        if (!m->kvs[i].key || !m->kvs[i].key[0])
            return apr_err_set(err, APR_E_ARG, "KV %llu has an empty key", (unsigned long long)i);
    if ((rc = apr_check_unique_names(m->tensors, sizeof *m->tensors, m->n_tensors, APR_E_ARG, "duplicate tensor name",
                                     err)))
        return rc;
    gguf_part *parts = NULL;
    size_t n_parts = 0;
    if ((rc = plan_split(m, o, &parts, &n_parts, err)))
        return rc;

    /* Every file stays open (a temporary) until all are written and the
     * first one's provenance record is sealed; then they are renamed. */
    size_t n_files = n_parts ? n_parts : 1;
    apr_outfile *files = calloc(n_files, sizeof *files);
    apr_buf meta0 = {0};
    apr_stream st = {0};
    size_t opened = 0;
    uint64_t total = 0, done = 0;
    if (!files) {
        free(parts);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total += m->tensors[i].nbytes;
    for (size_t k = 0; k < n_files && !rc; k++) {
        char fpath[4096];
        if (n_parts && apr_gguf_split_path(path, (uint32_t)k, (uint32_t)n_parts, fpath, sizeof fpath)) {
            rc = apr_err_set(err, APR_E_ARG, "%s: path too long", path);
            break;
        }
        apr_buf meta = {0};
        const char *fp = n_parts ? fpath : path;
        bool hash = o && o->prov && k > 0 && apr_prov_hashes_output_file(o->prov, base_name(fp));
        rc = write_gguf_file(m, fp, align, set_align, parts, n_parts, k, o, &st, &files[k], k == 0 ? &meta0 : &meta,
                             &done, total, hash, err);
        if (files[k].final_path)
            opened = k + 1; /* (a failed open leaves nothing to abort) */
        apr_buf_free(&meta);
    }
    apr_stream_free(&st);
    if (!rc)
        rc = apr_stream_seal(&files[0], o, meta0.p, meta0.len, 0, err);
    apr_buf_free(&meta0);
    free(parts);
    if (!rc)
        rc = apr_outfiles_commit(files, opened, err);
    else
        for (size_t k = 0; k < opened; k++)
            apr_outfile_abort(&files[k]);
    free(files);
    return rc;
}
