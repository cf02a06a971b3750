/* apr_shard.c - aprender's sharded APR v2 (flag 0x10 and its shard manifest),
 * read and written (docs/sharding.md).
 *
 * A set is N complete APR v2 files, each with flag 0x10, its own index and
 * the model's metadata, named PREFIX-%05d-of-%05d.apr with a 0-based number
 * (as aprender's own shard-manifest test names them), and the manifest
 * PREFIX.apr.manifest.json, aprender's ShardManifest as serde writes it:
 *   {"version": "2.0", "shard_count", "total_size" (sum of the shard file
 *    sizes), "tensor_count", "shards": [{"filename", "index", "size",
 *    "tensors"}], "weight_map": {tensor: shard index}}
 * plus this project's two additions: "sha256" in each shard entry (the
 * shard file's digest) and "provenance" (the record, which the shards do not
 * carry: it is written last, when every digest is known, so nothing is
 * patched in place and no file is reopened). */
#define _GNU_SOURCE
#include "apr_shard.h"
#include "apr_json.h"

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST_SUFFIX ".apr.manifest.json"
#define MANIFEST_VERSION "2.0"
#define MAX_SHARDS 99999u              /* five digits in the names */
#define MAX_MANIFEST_BYTES (1u << 30)  /* a weight_map of millions of tensors still fits */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

bool apr_apr_is_manifest_path(const char *path) { return ends_with(path, MANIFEST_SUFFIX); }

bool apr_apr_is_shard(const apr_model *m)
{
    return m->n_maps == 1 && m->maps[0].size >= 8 && (apr_ld16(m->maps[0].base + 6) & APR_FLAG_SHARDED);
}

/* ---------------------------------------------------------------- names */

/* "-DDDDD-of-DDDDD.apr" at the end of s: *no and *count; false otherwise. */
static bool shard_suffix(const char *s, unsigned *no, unsigned *count)
{
    size_t l = strlen(s);
    if (l < 19)
        return false;
    const char *p = s + l - 19;
    for (int i = 0; i < 19; i++) {
        bool digit = (i >= 1 && i <= 5) || (i >= 10 && i <= 14);
        if (digit ? (p[i] < '0' || p[i] > '9') : false)
            return false;
    }
    if (p[0] != '-' || memcmp(p + 6, "-of-", 4) != 0 || strcmp(p + 15, ".apr") != 0)
        return false;
    *no = (unsigned)strtoul(p + 1, NULL, 10);
    *count = (unsigned)strtoul(p + 10, NULL, 10);
    return true;
}

/* dir/ of path (with the slash), or "" */
static void dir_prefix(const char *path, char *buf, size_t n)
{
    const char *slash = strrchr(path, '/');
    size_t l = slash ? (size_t)(slash - path + 1) : 0;
    snprintf(buf, n, "%.*s", (int)l, path);
}

/* ---------------------------------------------------------------- writer */

typedef struct shard_plan {
    uint64_t first, count;
    char file[4200];       /* full path */
    uint64_t size;
    uint8_t sha[32];
} shard_plan;

/* aprender-style greedy cut, in model order: a new shard when the next
 * tensor (padded to 64) would overflow the current, non-empty one. */
static shard_plan *plan_shards(const apr_model *m, uint64_t max_bytes, size_t *n, apr_err *err)
{
    shard_plan *p = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *p);
    if (!p) {
        apr_err_set(err, APR_E_NOMEM, "out of memory");
        return NULL;
    }
    size_t k = 0;
    uint64_t cur = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        uint64_t sz = (m->tensors[i].nbytes + 63) / 64 * 64;
        if (p[k].count && cur + sz > max_bytes) {
            k++;
            cur = 0;
            p[k].first = i;
        }
        p[k].count++;
        cur += sz;
    }
    *n = k + 1;
    if (*n > MAX_SHARDS) {
        free(p);
        apr_err_set(err, APR_E_ARG, "%zu APR shards: at most %u (five digits in the names)", *n, MAX_SHARDS);
        return NULL;
    }
    return p;
}

/* The producer sees the whole model's indices, not the shard's. */
typedef struct shard_produce {
    const apr_write_opts *o;
    const apr_model *whole;
    uint64_t first;
} shard_produce;

static int produce_in_shard(void *user, const apr_model *m, uint64_t index, uint8_t *dst, apr_err *err)
{
    (void)m;
    const shard_produce *s = user;
    return s->o->produce(s->o->produce_user, s->whole, s->first + index, dst, err);
}

static int write_one_shard(const apr_model *m, shard_plan *sp, const apr_write_opts *o, apr_outfile *f,
                           apr_err *err)
{
    apr_model part = *m;
    part.tensors = m->tensors + sp->first;
    part.n_tensors = sp->count;
    part.provenance_json = NULL; /* the manifest carries it */
    shard_produce sh = {o, m, sp->first};
    apr_write_opts po = o ? *o : (apr_write_opts){0};
    po.shard_max_bytes = 0;
    if (o && o->produce) {
        po.produce = produce_in_shard;
        po.produce_user = &sh;
    }
    apr_sha256_ctx *sha = apr_sha256_new();
    if (!sha)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = apr_apr_write_file(&part, sp->file, &po, sha, f, err);
    apr_sha256_final(sha, sp->sha); /* frees it */
    sp->size = rc ? 0 : f->written;
    return rc;
}

/* One entry of "shards" (the shard's tensor names also go to weight_map). */
static json_t *shard_entry(apr_jb *jb, const apr_model *m, const shard_plan *sp, size_t k, json_t *wm)
{
    json_t *e = json_object(), *names = json_array();
    char hex[65], tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", sp->file);
    apr_sha256_hex(sp->sha, hex);
    for (uint64_t i = sp->first; i < sp->first + sp->count; i++) {
        apr_jb_append(jb, names, json_string(m->tensors[i].name));
        apr_jb_set(jb, wm, m->tensors[i].name, json_integer((json_int_t)k));
    }
    apr_jb_set(jb, e, "filename", json_string(basename(tmp)));
    apr_jb_set(jb, e, "index", json_integer((json_int_t)k));
    apr_jb_set(jb, e, "size", json_integer((json_int_t)sp->size));
    apr_jb_set(jb, e, "tensors", names);
    apr_jb_set(jb, e, "sha256", json_string(hex));
    return e;
}

/* The manifest document; every field goes through apr_jb (apr_json.h), so a
 * manifest that lost one (out of memory, a tensor name that is not UTF-8) is
 * refused, never written. */
static json_t *manifest_json(const apr_model *m, const shard_plan *p, size_t n, const char *prov, apr_err *err)
{
    apr_jb jb = apr_jb_start();
    json_t *root = json_object(), *shards = json_array(), *wm = json_object();
    uint64_t total = 0;
    for (size_t k = 0; k < n; k++) {
        apr_jb_append(&jb, shards, shard_entry(&jb, m, &p[k], k, wm));
        total += p[k].size;
    }
    apr_jb_set(&jb, root, "version", json_string(MANIFEST_VERSION));
    apr_jb_set(&jb, root, "shard_count", json_integer((json_int_t)n));
    apr_jb_set(&jb, root, "total_size", json_integer((json_int_t)total));
    apr_jb_set(&jb, root, "tensor_count", json_integer((json_int_t)m->n_tensors));
    apr_jb_set(&jb, root, "shards", shards);
    apr_jb_set(&jb, root, "weight_map", wm);
    int rc = 0;
    if (prov) {
        json_error_t je;
        json_t *pj = apr_json_loads(prov, JSON_DECODE_ANY, &je);
        if (!pj && !apr_json_parse_oom())
            rc = apr_err_set(err, APR_E_FORMAT, "APR shard manifest: the provenance record is not JSON: %s", je.text);
        apr_jb_set(&jb, root, "provenance", pj);
    }
    if (!rc)
        rc = apr_jb_done(&jb, "APR shard manifest", err);
    if (rc) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static int write_manifest(const apr_model *m, const shard_plan *p, size_t n, const char *path,
                          const apr_write_opts *o, apr_outfile *f, apr_err *err)
{
    char *prov = NULL;
    int rc = 0;
    if (o && o->prov)
        rc = apr_prov_wait(o->prov, err) || apr_prov_json(o->prov, &prov, err) ? (err ? err->code : APR_E_ARG) : 0;
    if (rc)
        return rc;
    json_t *root = manifest_json(m, p, n, prov ? prov : m->provenance_json, err);
    free(prov);
    if (!root)
        return err ? err->code : APR_E_NOMEM;
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    if (!(rc = apr_outfile_open(f, path, err)) && (rc = apr_outfile_write(f, text, strlen(text), err)))
        apr_outfile_abort(f);
    free(text);
    return rc;
}

static int check_unique_names(const apr_model *m, apr_err *err)
{
    uint64_t *order = apr_tensor_order_by_name(m);
    if (!order)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = 0;
    for (uint64_t i = 1; i < m->n_tensors && !rc; i++)
        if (strcmp(m->tensors[order[i - 1]].name, m->tensors[order[i]].name) == 0)
            rc = apr_err_set(err, APR_E_ARG, "duplicate tensor name '%s'", m->tensors[order[i]].name);
    free(order);
    return rc;
}

int apr_apr_write_sharded(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err)
{
    if (!ends_with(path, ".apr") || strlen(path) + 32 > 4096)
        return apr_err_set(err, APR_E_ARG, "%s: a sharded APR output is named PREFIX.apr", path);
    int rc = check_unique_names(m, err);
    size_t n = 0;
    shard_plan *p = rc ? NULL : plan_shards(m, o->shard_max_bytes, &n, err);
    if (!p)
        return rc ? rc : (err ? err->code : APR_E_NOMEM);
    if (n == 1) { /* it all fits: one ordinary file, as the safetensors writer does */
        free(p);
        apr_write_opts one = *o;
        one.shard_max_bytes = 0;
        return apr_apr_write(m, path, &one, err);
    }
    char stem[4096], manifest[4200];
    snprintf(stem, sizeof stem, "%.*s", (int)(strlen(path) - 4), path);
    snprintf(manifest, sizeof manifest, "%s%s", stem, MANIFEST_SUFFIX);
    for (size_t k = 0; k < n; k++)
        snprintf(p[k].file, sizeof p[k].file, "%.4000s-%05zu-of-%05zu.apr", stem, k, n);
    /* every file stays a temporary until all are complete, then all are renamed */
    apr_outfile *files = calloc(n + 1, sizeof *files);
    size_t opened = 0;
    rc = files ? 0 : apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (size_t k = 0; k < n && !rc; k++)
        if (!(rc = write_one_shard(m, &p[k], o, &files[k], err)))
            opened = k + 1;
    if (!rc && !(rc = write_manifest(m, p, n, manifest, o, &files[n], err)))
        opened = n + 1;
    if (!rc)
        rc = apr_outfiles_commit(files, opened, err);
    else
        for (size_t k = 0; k < opened; k++)
            apr_outfile_abort(&files[k]);
    free(files);
    free(p);
    return rc;
}

/* path is one of the input's files or the path it was opened by (a
 * manifest is not among the maps) */
static bool is_input_file(const apr_model *input, const char *path)
{
    if (input->path && apr_same_file(input->path, path))
        return true;
    for (uint32_t j = 0; j < input->n_maps; j++)
        if (input->maps[j].path && apr_same_file(input->maps[j].path, path))
            return true;
    return false;
}

int apr_apr_check_shard_outputs(const apr_model *m, const char *path, const apr_write_opts *o, const apr_model *input,
                                apr_err *err)
{
    if (!o || !o->shard_max_bytes || !ends_with(path, ".apr") || strlen(path) + 32 > 4096)
        return is_input_file(input, path) ? apr_err_set(err, APR_E_ARG, "output %s is one of the input's files; apr "
                                                        "never overwrites its input (choose another OUT)", path)
                                          : 0;
    size_t n = 0;
    shard_plan *p = plan_shards(m, o->shard_max_bytes, &n, err);
    if (!p)
        return err ? err->code : APR_E_NOMEM;
    free(p);
    char stem[4096], file[4200];
    snprintf(stem, sizeof stem, "%.*s", (int)(strlen(path) - 4), path);
    /* n == 1 writes PATH itself; otherwise the shards and the manifest */
    for (size_t k = 0; k <= (n > 1 ? n : 0); k++) {
        if (n == 1)
            snprintf(file, sizeof file, "%s", path);
        else if (k == n)
            snprintf(file, sizeof file, "%s%s", stem, MANIFEST_SUFFIX);
        else
            snprintf(file, sizeof file, "%.4000s-%05zu-of-%05zu.apr", stem, k, n);
        if (is_input_file(input, file))
            return apr_err_set(err, APR_E_ARG, "%s of the sharded APR output would be written over the input file "
                               "%s; apr never overwrites its input (choose another OUT)",
                               k == n ? "the manifest" : "a shard", file);
    }
    return 0;
}

/* ---------------------------------------------------------------- reader */

static bool only_keys(const json_t *o, const char *const *keys, size_t n, const char **bad)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        size_t i = 0;
        while (i < n && strcmp(k, keys[i]) != 0)
            i++;
        if (i == n) {
            *bad = k;
            return false;
        }
    }
    return true;
}

static bool get_count(const json_t *o, const char *key, uint64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* The manifest's top level: aprender's keys (and ours), with their types. */
static int check_manifest_top(const json_t *root, const char *path, uint64_t *n_shards, uint64_t *n_tensors,
                              uint64_t *total, apr_err *err)
{
    static const char *const keys[] = {"version", "shard_count", "total_size", "tensor_count",
                                       "shards",  "weight_map",  "provenance"};
    const char *bad = NULL;
    if (!json_is_object(root))
        return apr_err_set(err, APR_E_FORMAT, "%s: the shard manifest is not a JSON object", path);
    if (!only_keys(root, keys, sizeof keys / sizeof *keys, &bad))
        return apr_err_set(err, APR_E_FORMAT, "%s: unknown shard-manifest key '%s'", path, bad);
    const char *ver = json_string_value(json_object_get(root, "version"));
    if (!ver || strcmp(ver, MANIFEST_VERSION) != 0)
        return apr_err_set(err, APR_E_UNSUPPORTED, "%s: shard-manifest version %s (only \"%s\" is read)", path,
                    ver ? ver : "missing", MANIFEST_VERSION);
    if (!get_count(root, "shard_count", n_shards) || !get_count(root, "tensor_count", n_tensors) ||
        !get_count(root, "total_size", total))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard_count, tensor_count and total_size must be integers >= 0", path);
    const json_t *shards = json_object_get(root, "shards");
    if (!json_is_array(shards) || !json_is_object(json_object_get(root, "weight_map")))
        return apr_err_set(err, APR_E_FORMAT, "%s: shards must be an array and weight_map an object", path);
    if (*n_shards == 0 || *n_shards > MAX_SHARDS || json_array_size(shards) != *n_shards)
        return apr_err_set(err, APR_E_FORMAT, "%s: shard_count %llu but %zu shard entries", path,
                    (unsigned long long)*n_shards, json_array_size(shards));
    return 0;
}

/* Entry k: its keys and types; a plain file name beside the manifest. */
static int check_shard_entry(const json_t *e, uint64_t k, const char *path, apr_err *err)
{
    static const char *const keys[] = {"filename", "index", "size", "tensors", "sha256"};
    const char *bad = NULL, *fn = json_string_value(json_object_get(e, "filename"));
    uint64_t idx = 0, size = 0;
    if (!json_is_object(e))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu is not an object", path, (unsigned long long)k);
    if (!only_keys(e, keys, sizeof keys / sizeof *keys, &bad))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu: unknown key '%s'", path, (unsigned long long)k, bad);
    if (!fn || !fn[0] || strchr(fn, '/') || !strcmp(fn, ".") || !strcmp(fn, ".."))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu: filename must be a file name beside the manifest", path,
                    (unsigned long long)k);
    if (!get_count(e, "index", &idx) || idx != k)
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu has index %s (entries are listed in index order)", path,
                    (unsigned long long)k, json_is_integer(json_object_get(e, "index")) ? "out of order" : "missing");
    if (!get_count(e, "size", &size) || !json_is_array(json_object_get(e, "tensors")))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu needs an integer size and a tensors array", path,
                    (unsigned long long)k);
    const json_t *sha = json_object_get(e, "sha256");
    if (sha && (!json_is_string(sha) || json_string_length(sha) != 64))
        return apr_err_set(err, APR_E_FORMAT, "%s: shard entry %llu: sha256 must be 64 hex digits", path,
                    (unsigned long long)k);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The shard's tensors are exactly those its entry lists (any order). */
static int check_shard_tensors(const apr_model *part, const json_t *list, const char *spath, apr_err *err)
{
    size_t n = json_array_size(list);
    if (n != part->n_tensors)
        return apr_err_set(err, APR_E_FORMAT, "%s holds %llu tensors, the manifest lists %zu for it", spath,
                    (unsigned long long)part->n_tensors, n);
    const char **a = malloc((n ? n : 1) * sizeof *a), **b = malloc((n ? n : 1) * sizeof *b);
    int rc = a && b ? 0 : apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        a[i] = part->tensors[i].name;
        if (!(b[i] = json_string_value(json_array_get(list, i))))
            rc = apr_err_set(err, APR_E_FORMAT, "%s: a tensors entry of its shard is not a string", spath);
    }
    if (!rc) {
        qsort(a, n, sizeof *a, cmp_str);
        qsort(b, n, sizeof *b, cmp_str);
        for (size_t i = 0; i < n && !rc; i++)
            if (strcmp(a[i], b[i]) != 0)
                rc = apr_err_set(err, APR_E_FORMAT, "%s holds tensor '%s' where the manifest lists '%s': a shard of another "
                                             "model or set?", spath, a[i], b[i]);
    }
    free(a);
    free(b);
    return rc;
}

/* Two shards' metadata describe the same model: equal but for the keys
 * that describe the shard's own tensors ("param_count", "tensor_parts").
 * 1 the same, 0 not, -1 out of memory (either could not be parsed for want
 * of it: that says nothing about the shard). */
static int same_model_metadata(const char *a, const char *b)
{
    if (!b)
        return 0;
    if (!strcmp(a, b))
        return 1;
    json_t *x = apr_json_loads(a, 0, NULL);
    const bool oom_x = !x && apr_json_parse_oom();
    json_t *y = x ? apr_json_loads(b, 0, NULL) : NULL;
    int same = oom_x || (x && !y && apr_json_parse_oom()) ? -1 : 0;
    if (x && y) {
        static const char *const own[] = {"param_count", "tensor_parts"};
        for (size_t i = 0; i < sizeof own / sizeof *own; i++) {
            json_object_del(x, own[i]);
            json_object_del(y, own[i]);
        }
        same = json_equal(x, y);
    }
    json_decref(x);
    json_decref(y);
    return same;
}

/* Opens shard k (entry e) and checks it is the one the manifest describes. */
static int open_shard(const json_t *e, uint64_t k, const char *dir, const char *mpath, const char *meta0,
                      bool check_footer, apr_model **out, apr_err *err)
{
    char spath[4200];
    struct stat st;
    snprintf(spath, sizeof spath, "%s%s", dir, json_string_value(json_object_get(e, "filename")));
    if (stat(spath, &st) != 0)
        return apr_err_set(err, APR_E_IO, "%s: shard %llu (%s) is missing", mpath, (unsigned long long)k, spath);
    uint64_t size = (uint64_t)json_integer_value(json_object_get(e, "size"));
    if ((uint64_t)st.st_size != size)
        return apr_err_set(err, APR_E_FORMAT, "%s: the manifest says %llu bytes, the file has %llu", spath,
                    (unsigned long long)size, (unsigned long long)st.st_size);
    int rc = apr_open_mapped(out, spath, APR_FMT_APR, check_footer, err);
    if (rc)
        return rc;
    if (!apr_apr_is_shard(*out))
        rc = apr_err_set(err, APR_E_FORMAT, "%s is not a shard (flag 0x10 is not set)", spath);
    else if (meta0) {
        const int same = same_model_metadata(meta0, (*out)->raw_meta_json);
        if (same < 0)
            rc = apr_err_set(err, APR_E_NOMEM, "%s: out of memory comparing its metadata with the first shard's", spath);
        else if (!same)
            rc = apr_err_set(err, APR_E_FORMAT, "%s: its metadata differs from the first shard's: a shard of another model",
                             spath);
    }
    if (!rc)
        rc = check_shard_tensors(*out, json_object_get(e, "tensors"), spath, err);
    return rc;
}

/* weight_map names every tensor once, with the shard that holds it. */
static int check_weight_map(const apr_model *m, const json_t *wm, const char *mpath, apr_err *err)
{
    if (json_object_size(wm) != m->n_tensors)
        return apr_err_set(err, APR_E_FORMAT, "%s: weight_map has %zu entries for %llu tensors", mpath, json_object_size(wm),
                    (unsigned long long)m->n_tensors);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const json_t *v = json_object_get(wm, m->tensors[i].name);
        if (!json_is_integer(v) || json_integer_value(v) != (json_int_t)m->tensors[i].shard)
            return apr_err_set(err, APR_E_FORMAT, "%s: weight_map puts tensor '%s' %s, it is in shard %u", mpath,
                        m->tensors[i].name, v ? "in another shard" : "nowhere", m->tensors[i].shard);
    }
    return 0;
}

static int read_manifest(const char *path, json_t **root, apr_err *err)
{
    apr_mapping map;
    int rc = apr_map_file(path, &map, err);
    if (rc)
        return rc;
    json_error_t je;
    if (map.size > MAX_MANIFEST_BYTES)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: %llu bytes is too large for a shard manifest", path,
                  (unsigned long long)map.size);
    else if (!(*root = apr_json_loadb((const char *)map.base, (size_t)map.size, JSON_REJECT_DUPLICATES, &je)) &&
             apr_json_parse_oom())
        rc = apr_err_set(err, APR_E_NOMEM, "%s: out of memory", path);
    else if (!*root)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: not valid JSON: %s (line %d)", path, je.text, je.line);
    apr_unmap_file(&map);
    return rc;
}

/* Shards 1..n-1 into m (shard 0), then the totals. */
static int assemble(apr_model *m, const json_t *root, const char *mpath, const char *dir, uint64_t n_shards,
                    uint64_t n_tensors, uint64_t total, bool check_footer, apr_err *err)
{
    const json_t *shards = json_object_get(root, "shards");
    uint64_t sum = m->maps[0].size;
    int rc = 0;
    for (uint64_t k = 1; k < n_shards && !rc; k++) {
        apr_model *part = NULL;
        if (!(rc = check_shard_entry(json_array_get(shards, k), k, mpath, err)) &&
            !(rc = open_shard(json_array_get(shards, k), k, dir, mpath, m->raw_meta_json, check_footer, &part, err))) {
            sum += part->maps[0].size;
            rc = apr_model_adopt_part(m, part, (uint32_t)k, "shards", err);
        }
        apr_model_free(part);
    }
    if (!rc && m->n_tensors != n_tensors)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: tensor_count is %llu but the %llu shards hold %llu tensors", mpath,
                  (unsigned long long)n_tensors, (unsigned long long)n_shards, (unsigned long long)m->n_tensors);
    if (!rc && sum != total)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: total_size is %llu but the shards are %llu bytes", mpath,
                  (unsigned long long)total, (unsigned long long)sum);
    if (!rc)
        rc = check_weight_map(m, json_object_get(root, "weight_map"), mpath, err);
    return rc;
}

static int take_provenance(apr_model *m, const json_t *root, apr_err *err)
{
    const json_t *prov = json_object_get(root, "provenance");
    if (!prov || json_is_null(prov))
        return 0;
    free(m->provenance_json);
    m->provenance_json = json_dumps(prov, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    return m->provenance_json ? 0 : apr_err_set(err, APR_E_NOMEM, "out of memory");
}

int apr_apr_open_manifest(apr_model **out, const char *path, bool check_footer, apr_err *err)
{
    *out = NULL;
    json_t *root = NULL;
    uint64_t n_shards = 0, n_tensors = 0, total = 0;
    apr_model *m = NULL;
    char dir[4096];
    dir_prefix(path, dir, sizeof dir);
    int rc = read_manifest(path, &root, err);
    if (!rc)
        rc = check_manifest_top(root, path, &n_shards, &n_tensors, &total, err);
    const json_t *e0 = rc ? NULL : json_array_get(json_object_get(root, "shards"), 0);
    if (!rc && !(rc = check_shard_entry(e0, 0, path, err)))
        rc = open_shard(e0, 0, dir, path, NULL, check_footer, &m, err);
    if (!rc)
        rc = assemble(m, root, path, dir, n_shards, n_tensors, total, check_footer, err);
    if (!rc)
        rc = take_provenance(m, root, err);
    if (!rc) {
        free(m->path);
        if (!(m->path = strdup(path)))
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    json_decref(root);
    if (rc) {
        apr_model_free(m);
        return rc;
    }
    apr_model_derive(m, NULL); /* the tensor table grew */
    *out = m;
    return 0;
}

int apr_apr_open_shard(apr_model **out, const char *path, bool check_footer, apr_err *err)
{
    unsigned no = 0, count = 0;
    *out = NULL;
    if (!shard_suffix(path, &no, &count))
        return apr_err_set(err, APR_E_FORMAT, "%s is an APR shard (flag 0x10) but not named PREFIX-NNNNN-of-NNNNN.apr, so "
                                       "its manifest cannot be found: open the manifest", path);
    if (no != 0)
        return apr_err_set(err, APR_E_ARG, "%s is shard %u of %u: open the first shard (-00000-of-%05u.apr) or the manifest",
                    path, no, count, count);
    char manifest[4200];
    snprintf(manifest, sizeof manifest, "%.*s%s", (int)(strlen(path) - 19), path, MANIFEST_SUFFIX);
    if (access(manifest, F_OK) != 0)
        return apr_err_set(err, APR_E_IO, "%s: its shard manifest %s is missing", path, manifest);
    return apr_apr_open_manifest(out, manifest, check_footer, err);
}
