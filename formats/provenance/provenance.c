/* provenance.c - the sha256 provenance record every apr output carries, and
 * its verification (apr verify --provenance). Schema: docs/provenance.md.
 *
 * Building a record is cheap until apr_prov_finish: add_tensor only notes the
 * payload regions; finish hashes every distinct region (a copied tensor's
 * output and source payloads are the same bytes and are hashed once) and every
 * source file on a small thread pool, biggest job first, then assembles the
 * JSON with jansson. */
#define _GNU_SOURCE
#include "apr_util.h"
#include "formats.h"
#include "apr_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define PROV_SCHEMA "apr-provenance/1"
#define PROV_MAX_SRCS 8

/* ---------------------------------------------------------------- hash jobs */

/* One thing to sha256: a memory region, or a whole file. */
typedef struct hash_job {
    const uint8_t *p;
    uint64_t n;
    const char *path; /* file job when non-NULL */
    bool deferred;    /* a payload the writer produces and hashes itself (apr_prov_set_digest) */
    bool supplied;    /* deferred: its digest has been set */
    uint8_t sha[32];
    int rc;
    apr_err err;
} hash_job;

typedef struct job_pool {
    hash_job **jobs;
    size_t n;
    atomic_size_t next;
} job_pool;

/* Every thread (apr_threads) takes the next job until none are left. */
static void hash_worker(void *arg, int thread)
{
    (void)thread;
    job_pool *pool = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&pool->next, 1);
        if (i >= pool->n)
            break;
        hash_job *j = pool->jobs[i];
        if (j->deferred)
            continue;
        if (j->path)
            j->rc = apr_sha256_file(j->path, j->sha, &j->err);
        else
            apr_sha256(j->p, (size_t)j->n, j->sha);
    }
}

static int cmp_job_size(const void *a, const void *b)
{
    const hash_job *x = *(hash_job *const *)a, *y = *(hash_job *const *)b;
    return x->n < y->n ? 1 : x->n > y->n ? -1 : 0;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* Runs every job (biggest first so the pool ends together). */
static int run_jobs(hash_job **jobs, size_t n, int n_threads, apr_err *err)
{
    if (n_threads <= 0)
        n_threads = default_threads();
    if ((size_t)n_threads > n)
        n_threads = n ? (int)n : 1;
    qsort(jobs, n, sizeof *jobs, cmp_job_size);
    job_pool pool = {jobs, n, 0};
    apr_threads_run(n_threads < 64 ? n_threads : 64, hash_worker, &pool);
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->rc) {
            if (err)
                *err = jobs[i]->err;
            return jobs[i]->rc;
        }
    return 0;
}

/* ---------------------------------------------------------------- builder */

typedef struct prov_src {
    char *name;
    apr_dtype dtype;
    size_t region;
    int64_t index; /* position in the source's tensor table, -1 unknown */
} prov_src;

typedef struct prov_tensor {
    char *name;
    apr_dtype dtype;
    uint32_t ndim;
    uint64_t dims[APR_MAX_DIMS];
    uint64_t nbytes;
    size_t region;
    char *transform;
    uint32_t n_srcs;
    prov_src srcs[PROV_MAX_SRCS];
    uint32_t n_parts; /* ROWCAT */
    apr_tensor_part parts[APR_MAX_PARTS];
} prov_tensor;

typedef struct prov_file {
    char *path;
    char *file; /* basename as recorded */
    const char *role;
    uint64_t bytes;
    hash_job job;
} prov_file;

/* A file of the output that the writer hashes as it writes it (a later
 * split of a split GGUF); file: the name recorded (a basename). */
typedef struct prov_out {
    char *file;
    size_t region; /* a deferred region: its digest comes from the writer; (size_t)-1: the file holding the record */
} prov_out;

struct apr_prov {
    char *operation, *command;
    char time_utc[32];
    apr_format src_format;
    char *src_path;
    const apr_tensor *src_tensors; /* to record each source tensor's position */
    uint64_t src_n_tensors;
    json_t *parent; /* NULL = none */
    prov_file *files;
    size_t n_files;
    prov_tensor *tensors;
    size_t n_tensors, cap_tensors;
    prov_out *outs; /* the output's files, when it is several */
    size_t n_outs;
    hash_job **regions;
    size_t n_regions, cap_regions;
    size_t *slots; /* open-addressing table of region index + 1, 0 = empty */
    size_t n_slots;
    /* hashing (apr_prov_start .. apr_prov_wait) */
    apr_format out_format;
    char nonce[49];   /* 48 random hex digits: placeholder prefix */
    hash_job **all;   /* regions then files; a placeholder's number indexes it */
    size_t n_all;
    hash_job **order; /* the same jobs, biggest first, for the pool */
    job_pool pool;
    apr_threads th; /* the hashing threads, apr_prov_start .. apr_prov_wait */
    bool started, hashed;
};

static void now_utc(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

apr_prov *apr_prov_new(const char *operation, const char *command_line)
{
    apr_prov *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->operation = strdup(operation ? operation : "convert");
    p->command = command_line ? strdup(command_line) : NULL;
    if (!p->operation || (command_line && !p->command)) {
        apr_prov_free(p);
        return NULL;
    }
    now_utc(p->time_utc);
    return p;
}

void apr_prov_free(apr_prov *p)
{
    if (!p)
        return;
    if (p->started && !p->hashed) /* an error path: let the hashing threads finish */
        apr_prov_wait(p, NULL);
    free(p->operation);
    free(p->command);
    free(p->src_path);
    json_decref(p->parent);
    for (size_t i = 0; i < p->n_files; i++) {
        free(p->files[i].path);
        free(p->files[i].file);
    }
    free(p->files);
    for (size_t i = 0; i < p->n_tensors; i++) {
        free(p->tensors[i].name);
        free(p->tensors[i].transform);
        for (uint32_t s = 0; s < p->tensors[i].n_srcs; s++)
            free(p->tensors[i].srcs[s].name);
    }
    free(p->tensors);
    for (size_t i = 0; i < p->n_outs; i++)
        free(p->outs[i].file);
    free(p->outs);
    for (size_t i = 0; i < p->n_regions; i++)
        free(p->regions[i]);
    free(p->regions);
    free(p->slots);
    free(p->all);
    free(p->order);
    free(p);
}

void apr_prov_set_time(apr_prov *p, const char *iso_utc)
{
    snprintf(p->time_utc, sizeof p->time_utc, "%s", iso_utc);
}

/* map (may be NULL): the file's existing read-only mapping, hashed in place
 * instead of mapping the file a second time. */
static int add_file(apr_prov *p, const char *path, const char *role, const apr_mapping *map, apr_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return apr_err_set(err, APR_E_IO, "%s: cannot stat source file", path);
    for (size_t i = 0; i < p->n_files; i++)
        if (apr_same_file(p->files[i].path, path))
            return 0;
    prov_file *nf = realloc(p->files, (p->n_files + 1) * sizeof *nf);
    if (!nf)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    p->files = nf;
    prov_file *f = &p->files[p->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    char *tmp = strdup(path);
    f->file = tmp ? strdup(basename(tmp)) : NULL;
    free(tmp);
    if (!f->path || !f->file) {
        free(f->path);
        free(f->file);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    f->role = role;
    f->bytes = (uint64_t)st.st_size;
    if (map && map->size == f->bytes) {
        f->job.p = map->base;
        f->job.n = map->size;
    } else {
        f->job.path = f->path;
        f->job.n = f->bytes;
    }
    p->n_files++;
    return 0;
}

/* The side files a safetensors source was read with. */
static const struct {
    const char *file, *role;
} hf_side_files[] = {
    {"model.safetensors.index.json", "index"},
    {"config.json", "config"},
    {"generation_config.json", "generation_config"},
    {"tokenizer.json", "tokenizer"},
    {"tokenizer.model", "tokenizer"},
    {"tokenizer_config.json", "tokenizer_config"},
    {"added_tokens.json", "added_tokens"},
    {"chat_template.jinja", "chat_template"},
    {"chat_template.json", "chat_template"},
};

int apr_prov_set_source(apr_prov *p, const apr_model *src, apr_err *err)
{
    int rc;
    p->src_format = src->format;
    p->src_tensors = src->tensors;
    p->src_n_tensors = src->n_tensors;
    free(p->src_path);
    p->src_path = strdup(src->path ? src->path : "");
    if (!p->src_path)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < src->n_maps; i++)
        if (src->maps[i].path && (rc = add_file(p, src->maps[i].path, "weights", &src->maps[i], err)))
            return rc; /* (a mapping without a path is a converter's scratch space, not a source file) */
    if (src->format == APR_FMT_APR && src->path && apr_apr_is_manifest_path(src->path) &&
        (rc = add_file(p, src->path, "index", NULL, err)))
        return rc; /* a sharded APR set: its manifest beside the shards */
    if (src->format == APR_FMT_SAFETENSORS && src->path) {
        struct stat st;
        char *tmp = strdup(src->path);
        if (!tmp)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        const char *dir = (stat(src->path, &st) == 0 && S_ISDIR(st.st_mode)) ? tmp : dirname(tmp);
        for (size_t i = 0; i < sizeof hf_side_files / sizeof *hf_side_files; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, hf_side_files[i].file);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (rc = add_file(p, path, hf_side_files[i].role, NULL, err))) {
                free(tmp);
                return rc;
            }
        }
        free(tmp);
    }
    json_decref(p->parent);
    p->parent = NULL;
    if (src->provenance_json) {
        json_error_t je;
        p->parent = apr_json_loads(src->provenance_json, 0, &je);
        if (!p->parent && !apr_json_parse_oom()) /* keep an unreadable record verbatim rather than lose the chain */
            p->parent = json_string(src->provenance_json);
        if (!p->parent)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    return 0;
}

static size_t slot_of(const uint8_t *ptr, uint64_t n, size_t n_slots)
{
    uint64_t h = (uint64_t)(uintptr_t)ptr * 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    return (size_t)(h >> 17) & (n_slots - 1);
}

static int grow_slots(apr_prov *p)
{
    size_t ns = p->n_slots ? p->n_slots * 2 : 1024;
    size_t *s = calloc(ns, sizeof *s);
    if (!s)
        return APR_E_NOMEM;
    for (size_t i = 0; i < p->n_regions; i++) {
        if (p->regions[i]->deferred)
            continue;
        size_t k = slot_of(p->regions[i]->p, p->regions[i]->n, ns);
        while (s[k])
            k = (k + 1) & (ns - 1);
        s[k] = i + 1;
    }
    free(p->slots);
    p->slots = s;
    p->n_slots = ns;
    return 0;
}

static hash_job *push_region(apr_prov *p)
{
    if (p->n_regions == p->cap_regions) {
        size_t nc = p->cap_regions ? p->cap_regions * 2 : 256;
        hash_job **nr = realloc(p->regions, nc * sizeof *nr);
        if (!nr)
            return NULL;
        p->regions = nr;
        p->cap_regions = nc;
    }
    hash_job *j = calloc(1, sizeof *j);
    if (j)
        p->regions[p->n_regions++] = j;
    return j;
}

/* A payload that exists only while the writer streams it: never shared,
 * never in the lookup table; (size_t)-1 on OOM. */
static size_t deferred_region(apr_prov *p, uint64_t n)
{
    hash_job *j = push_region(p);
    if (!j)
        return (size_t)-1;
    j->n = n;
    j->deferred = true;
    return p->n_regions - 1;
}

/* Index of the region (ptr, n), created when new; (size_t)-1 on OOM. */
static size_t region_of(apr_prov *p, const uint8_t *ptr, uint64_t n)
{
    if ((p->n_regions + 1) * 2 > p->n_slots && grow_slots(p))
        return (size_t)-1;
    size_t k = slot_of(ptr, n, p->n_slots);
    while (p->slots[k]) {
        hash_job *j = p->regions[p->slots[k] - 1];
        if (j->p == ptr && j->n == n)
            return p->slots[k] - 1;
        k = (k + 1) & (p->n_slots - 1);
    }
    hash_job *j = push_region(p);
    if (!j)
        return (size_t)-1;
    j->p = ptr;
    j->n = n;
    p->slots[k] = p->n_regions;
    return p->n_regions - 1;
}

int apr_prov_add_output_file(apr_prov *p, const char *file, bool holds_record, apr_err *err)
{
    if (p->started)
        return apr_err_set(err, APR_E_ARG, "provenance: output files are recorded before hashing starts");
    prov_out *no = realloc(p->outs, (p->n_outs + 1) * sizeof *no);
    if (!no)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    p->outs = no;
    prov_out *o = &p->outs[p->n_outs];
    o->file = strdup(file);
    o->region = holds_record ? (size_t)-1 : deferred_region(p, 0);
    if (!o->file || (!holds_record && o->region == (size_t)-1)) {
        free(o->file);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    p->n_outs++;
    return 0;
}

static prov_out *find_out(const apr_prov *p, const char *file)
{
    for (size_t i = 0; i < p->n_outs; i++)
        if (!strcmp(p->outs[i].file, file))
            return &p->outs[i];
    return NULL;
}

bool apr_prov_hashes_output_file(const apr_prov *p, const char *file)
{
    const prov_out *o = p ? find_out(p, file) : NULL;
    return o && o->region != (size_t)-1;
}

int apr_prov_set_file_digest(apr_prov *p, const char *file, const uint8_t sha[32], apr_err *err)
{
    prov_out *o = find_out(p, file);
    if (!o || o->region == (size_t)-1)
        return apr_err_set(err, APR_E_ARG, "provenance: output file '%s' is not recorded as hashed by the writer", file);
    memcpy(p->regions[o->region]->sha, sha, 32);
    p->regions[o->region]->supplied = true;
    return 0;
}

int apr_prov_add_tensor(apr_prov *p, const apr_tensor *out, const char *transform,
                        const apr_tensor *const *srcs, uint32_t n_srcs, apr_err *err)
{
    if (n_srcs > PROV_MAX_SRCS)
        return apr_err_set(err, APR_E_ARG, "provenance: tensor '%s' has %u sources (max %d)", out->name, n_srcs,
                           PROV_MAX_SRCS);
    if (p->n_tensors == p->cap_tensors) {
        size_t nc = p->cap_tensors ? p->cap_tensors * 2 : 256;
        prov_tensor *nt = realloc(p->tensors, nc * sizeof *nt);
        if (!nt)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        p->tensors = nt;
        p->cap_tensors = nc;
    }
    prov_tensor *t = &p->tensors[p->n_tensors];
    int rc;
    memset(t, 0, sizeof *t);
    t->name = strdup(out->name);
    t->transform = strdup(transform ? transform : "copy");
    if (!t->name || !t->transform)
        goto oom;
    t->dtype = out->dtype;
    t->ndim = out->ndim;
    memcpy(t->dims, out->dims, sizeof t->dims);
    t->nbytes = out->nbytes;
    if (out->dtype == APR_DT_ROWCAT) {
        t->n_parts = out->n_parts <= APR_MAX_PARTS ? out->n_parts : APR_MAX_PARTS;
        memcpy(t->parts, out->parts, t->n_parts * sizeof *t->parts);
    }
    t->region = out->nbytes && !out->data ? deferred_region(p, out->nbytes) : region_of(p, out->data, out->nbytes);
    if (t->region == (size_t)-1)
        goto oom;
    for (uint32_t i = 0; i < n_srcs; i++) {
        prov_src *s = &t->srcs[i];
        if (!(s->name = strdup(srcs[i]->name)))
            goto oom;
        t->n_srcs = i + 1;
        s->dtype = srcs[i]->dtype;
        s->index = -1;
        if (p->src_tensors && srcs[i] >= p->src_tensors && srcs[i] < p->src_tensors + p->src_n_tensors)
            s->index = (int64_t)(srcs[i] - p->src_tensors);
        if (srcs[i]->nbytes && !srcs[i]->data) {
            free(s->name);
            t->n_srcs = i;
            rc = apr_err_set(err, APR_E_ARG, "provenance: source tensor '%s' has no data", srcs[i]->name);
            goto fail;
        }
        if ((s->region = region_of(p, srcs[i]->data, srcs[i]->nbytes)) == (size_t)-1)
            goto oom;
    }
    p->n_tensors++;
    return 0;
oom:
    rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
fail:
    free(t->name);
    free(t->transform);
    for (uint32_t s = 0; s < t->n_srcs; s++)
        free(t->srcs[s].name);
    return rc;
}

/* Building the record: every field goes through apr_jb (apr_json.h), so
 * that a record that lost a field to a failed allocation is refused rather
 * than written. */
static json_t *parts_json(const apr_tensor_part *parts, uint32_t n, apr_jb *jb)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < n && a; i++) {
        json_t *o = json_object();
        apr_jb_set(jb, o, "dtype", json_string(apr_dtype_name(parts[i].dtype)));
        apr_jb_set(jb, o, "rows", json_integer((json_int_t)parts[i].rows));
        apr_jb_set(jb, o, "bytes", json_integer((json_int_t)parts[i].nbytes));
        apr_jb_append(jb, a, o);
    }
    return a;
}

static json_t *shape_json(uint32_t ndim, const uint64_t *dims, apr_jb *jb)
{
    json_t *a = json_array();
    for (uint32_t d = 0; d < ndim && a; d++)
        apr_jb_append(jb, a, json_integer((json_int_t)dims[d]));
    return a;
}

/* The digest text of job i: its sha256, or before hashing the placeholder
 * nonce + 16 hex digits of i (same length, so the record's size does not
 * change when apr_prov_patch fills it in). */
static json_t *job_json(const apr_prov *p, size_t i, bool real)
{
    char hex[65];
    if (real)
        apr_sha256_hex(p->all[i]->sha, hex);
    else
        snprintf(hex, sizeof hex, "%s%016llx", p->nonce, (unsigned long long)i);
    return json_string(hex);
}

static json_t *tensor_json(const apr_prov *p, const prov_tensor *t, bool real, apr_jb *jb)
{
    json_t *o = json_object(), *ss = json_array();
    apr_jb_set(jb, o, "dtype", json_string(apr_dtype_name(t->dtype)));
    apr_jb_set(jb, o, "shape", shape_json(t->ndim, t->dims, jb));
    apr_jb_set(jb, o, "bytes", json_integer((json_int_t)t->nbytes));
    apr_jb_set(jb, o, "sha256", job_json(p, t->region, real));
    apr_jb_set(jb, o, "transform", json_string(t->transform));
    if (t->n_parts)
        apr_jb_set(jb, o, "parts", parts_json(t->parts, t->n_parts, jb));
    for (uint32_t s = 0; s < t->n_srcs && ss; s++) {
        json_t *so = json_object();
        apr_jb_set(jb, so, "name", json_string(t->srcs[s].name));
        apr_jb_set(jb, so, "dtype", json_string(apr_dtype_name(t->srcs[s].dtype)));
        apr_jb_set(jb, so, "sha256", job_json(p, t->srcs[s].region, real));
        if (t->srcs[s].index >= 0)
            apr_jb_set(jb, so, "index", json_integer((json_int_t)t->srcs[s].index));
        apr_jb_append(jb, ss, so);
    }
    apr_jb_set(jb, o, "sources", ss);
    return o;
}

static int build_json(const apr_prov *p, bool real, char **json, apr_err *err)
{
    *json = NULL;
    apr_jb jb = apr_jb_start();
    json_t *root = json_object();
    json_t *src = json_object(), *files = json_array(), *tensors = json_object();
    apr_jb_set(&jb, root, "schema", json_string(PROV_SCHEMA));
    apr_jb_set(&jb, root, "tool", json_string("apr"));
    apr_jb_set(&jb, root, "version", json_string(APR_VERSION_STRING));
    apr_jb_set(&jb, root, "operation", json_string(p->operation));
    apr_jb_set(&jb, root, "command", p->command ? json_string(p->command) : json_null());
    apr_jb_set(&jb, root, "time_utc", json_string(p->time_utc));
    apr_jb_set(&jb, root, "output_format", json_string(apr_format_name(p->out_format)));
    apr_jb_set(&jb, src, "format", json_string(apr_format_name(p->src_format)));
    apr_jb_set(&jb, src, "path", json_string(p->src_path ? p->src_path : ""));
    for (size_t i = 0; i < p->n_files && files; i++) {
        json_t *f = json_object();
        apr_jb_set(&jb, f, "file", json_string(p->files[i].file));
        apr_jb_set(&jb, f, "role", json_string(p->files[i].role));
        apr_jb_set(&jb, f, "bytes", json_integer((json_int_t)p->files[i].bytes));
        apr_jb_set(&jb, f, "sha256", job_json(p, p->n_regions + i, real));
        apr_jb_append(&jb, files, f);
    }
    apr_jb_set(&jb, src, "files", files);
    apr_jb_set(&jb, root, "source", src);
    for (size_t i = 0; i < p->n_tensors && tensors; i++)
        apr_jb_set(&jb, tensors, p->tensors[i].name, tensor_json(p, &p->tensors[i], real, &jb));
    apr_jb_set(&jb, root, "tensors", tensors);
    if (p->n_outs) {
        json_t *outs = json_array();
        for (size_t i = 0; i < p->n_outs && outs; i++) {
            json_t *o = json_object();
            apr_jb_set(&jb, o, "file", json_string(p->outs[i].file));
            apr_jb_set(&jb, o, "sha256",
                       p->outs[i].region == (size_t)-1 ? json_null() : job_json(p, p->outs[i].region, real));
            apr_jb_append(&jb, outs, o);
        }
        apr_jb_set(&jb, root, "output_files", outs);
    }
    apr_jb_set(&jb, root, "parent", p->parent ? json_incref(p->parent) : json_null());
    *json = jb.bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!*json)
        return apr_err_set(err, APR_E_NOMEM, "out of memory building the provenance record");
    return 0;
}

/* 24 random bytes as 48 hex digits (a placeholder that no file holds by chance). */
static void make_nonce(char out[49])
{
    uint8_t r[32] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, r, 24) == 24;
    if (fd >= 0)
        close(fd);
    if (!ok) { /* fall back to hashing whatever differs between runs */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uintptr_t x[4] = {(uintptr_t)ts.tv_sec, (uintptr_t)ts.tv_nsec, (uintptr_t)getpid(), (uintptr_t)out};
        apr_sha256(x, sizeof x, r);
    }
    char hex[65];
    apr_sha256_hex(r, hex); /* hex of the first 24 bytes is its first 48 digits */
    memcpy(out, hex, 48);
    out[48] = 0;
}

int apr_prov_start(apr_prov *p, apr_format out_format, int n_threads, char **json, apr_err *err)
{
    if (json)
        *json = NULL;
    if (p->started)
        return apr_err_set(err, APR_E_ARG, "provenance: hashing already started");
    p->out_format = out_format;
    p->n_all = p->n_regions + p->n_files;
    p->all = malloc((p->n_all ? p->n_all : 1) * sizeof *p->all);
    p->order = malloc((p->n_all ? p->n_all : 1) * sizeof *p->order);
    if (!p->all || !p->order)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_regions; i++)
        p->all[i] = p->regions[i];
    for (size_t i = 0; i < p->n_files; i++)
        p->all[p->n_regions + i] = &p->files[i].job;
    memcpy(p->order, p->all, p->n_all * sizeof *p->all);
    qsort(p->order, p->n_all, sizeof *p->order, cmp_job_size);
    make_nonce(p->nonce);
    if (json) {
        int rc = build_json(p, false, json, err);
        if (rc)
            return rc;
    }
    p->pool.jobs = p->order;
    p->pool.n = p->n_all;
    atomic_store(&p->pool.next, 0);
    if (n_threads <= 0)
        n_threads = default_threads();
    if (n_threads > 64)
        n_threads = 64;
    apr_threads_start(&p->th, 0, (size_t)n_threads < p->n_all ? n_threads : (int)p->n_all, hash_worker, &p->pool);
    p->started = true;
    return 0;
}

void apr_prov_hash_work(const apr_prov *p, uint64_t *total_bytes, uint64_t *largest_job)
{
    uint64_t total = 0, largest = 0;
    for (size_t i = 0; i < p->n_regions + p->n_files; i++) {
        uint64_t n = i < p->n_regions ? p->regions[i]->n : p->files[i - p->n_regions].job.n;
        total += n;
        if (n > largest)
            largest = n;
    }
    *total_bytes = total;
    *largest_job = largest;
}

int apr_prov_wait(apr_prov *p, apr_err *err)
{
    if (!p->started)
        return apr_err_set(err, APR_E_ARG, "provenance: hashing was not started");
    if (!p->hashed) {
        hash_worker(&p->pool, -1); /* helps, or does all of it when no thread could start */
        apr_threads_join(&p->th);
        p->hashed = true;
    }
    for (size_t i = 0; i < p->n_tensors; i++)
        if (p->all[p->tensors[i].region]->deferred && !p->all[p->tensors[i].region]->supplied)
            return apr_err_set(err, APR_E_ARG, "provenance: no digest was given for tensor '%s' (the writer did not stream it)",
                               p->tensors[i].name);
    for (size_t i = 0; i < p->n_outs; i++)
        if (p->outs[i].region != (size_t)-1 && !p->all[p->outs[i].region]->supplied)
            return apr_err_set(err, APR_E_ARG, "provenance: no digest was given for output file '%s'", p->outs[i].file);
    for (size_t i = 0; i < p->n_all; i++)
        if (p->all[i]->rc) {
            if (err)
                *err = p->all[i]->err;
            return p->all[i]->rc;
        }
    return 0;
}

int apr_prov_json(apr_prov *p, char **json, apr_err *err)
{
    *json = NULL;
    if (!p->hashed)
        return apr_err_set(err, APR_E_ARG, "provenance: hashes are not ready (apr_prov_wait first)");
    return build_json(p, true, json, err);
}

int apr_prov_finish(apr_prov *p, apr_format out_format, int n_threads, char **json, apr_err *err)
{
    *json = NULL;
    int rc;
    if (!p->started && (rc = apr_prov_start(p, out_format, n_threads, NULL, err)))
        return rc;
    if ((rc = apr_prov_wait(p, err)))
        return rc;
    return build_json(p, true, json, err);
}

/* ---------------------------------------------------------------- sealing */

int apr_prov_set_digest(apr_prov *p, const char *tensor, const uint8_t sha[32], apr_err *err)
{
    size_t hit = (size_t)-1;
    /* from the end: writers stream in the order the record was built, and a
     * name can only be recorded once */
    for (size_t i = p->n_tensors; i-- > 0;)
        if (!strcmp(p->tensors[i].name, tensor)) {
            hit = p->tensors[i].region;
            break;
        }
    if (hit == (size_t)-1 || !p->regions[hit]->deferred)
        return apr_err_set(err, APR_E_ARG, "provenance: tensor '%s' is not recorded as streamed by the writer", tensor);
    memcpy(p->regions[hit]->sha, sha, 32);
    p->regions[hit]->supplied = true;
    return 0;
}

bool apr_prov_streamed(const apr_prov *p, const char *tensor)
{
    for (size_t i = p->n_tensors; i-- > 0;)
        if (!strcmp(p->tensors[i].name, tensor))
            return p->regions[p->tensors[i].region]->deferred;
    return false;
}

int apr_prov_seal(apr_prov *p, uint8_t *meta, size_t len, apr_err *err)
{
    if (!p->started)
        return apr_err_set(err, APR_E_ARG, "provenance: hashing was not started");
    int rc = apr_prov_wait(p, err);
    if (rc)
        return rc;
    uint64_t count = 0;
    for (uint8_t *q = meta; (q = memmem(q, (size_t)(meta + len - q), p->nonce, 48)) != NULL; q += 64) {
        char num[17], *e;
        if (q + 64 > meta + len)
            return apr_err_set(err, APR_E_FORMAT, "provenance: truncated placeholder in the metadata");
        memcpy(num, q + 48, 16);
        num[16] = 0;
        unsigned long long idx = strtoull(num, &e, 16);
        if (*e || idx >= p->n_all)
            return apr_err_set(err, APR_E_FORMAT, "provenance: malformed placeholder in the metadata");
        char hex[65];
        apr_sha256_hex(p->all[idx]->sha, hex);
        memcpy(q, hex, 64);
        count++;
    }
    if (!count)
        return apr_err_set(err, APR_E_FORMAT, "provenance: the record is missing from the written metadata");
    return 0;
}

/* ---------------------------------------------------------------- attach */

static int remove_prefixed_kvs(apr_model *m, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (uint64_t i = 0; i < m->n_kvs;) {
        if (strncmp(m->kvs[i].key, prefix, pl) == 0) {
            int rc = apr_model_remove_kv(m, m->kvs[i].key);
            if (rc)
                return rc;
        } else {
            i++;
        }
    }
    return 0;
}

int apr_prov_attach(apr_model *m, const char *json, apr_format out_format, apr_err *err)
{
    json_error_t je;
    json_t *root = apr_json_loads(json, 0, &je);
    if (!root && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "provenance record: out of memory");
    if (!root)
        return apr_err_set(err, APR_E_ARG, "provenance record is not JSON: %s", je.text);
    char *copy = strdup(json);
    if (!copy || remove_prefixed_kvs(m, "apr.provenance.")) {
        free(copy);
        json_decref(root);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    free(m->provenance_json);
    m->provenance_json = copy;
    int rc = 0;
    if (out_format == APR_FMT_GGUF) {
        /* A few flattened keys so `gguf-dump` shows the essentials; the whole
         * record is apr.provenance.json (added last, by the GGUF writer, from
         * provenance_json). */
        const json_t *src = json_object_get(root, "source");
        const json_t *files = json_object_get(src, "files");
        const json_t *f0 = json_array_get(files, 0);
        const char *keys[][2] = {
            {"apr.provenance.tool", "apr " APR_VERSION_STRING},
            {"apr.provenance.operation", json_string_value(json_object_get(root, "operation"))},
            {"apr.provenance.time_utc", json_string_value(json_object_get(root, "time_utc"))},
            {"apr.provenance.source", json_string_value(json_object_get(f0, "file"))},
            {"apr.provenance.source_sha256", json_string_value(json_object_get(f0, "sha256"))},
        };
        for (size_t i = 0; i < sizeof keys / sizeof *keys && !rc; i++)
            if (keys[i][1] && apr_model_set_kv_str(m, keys[i][0], keys[i][1]))
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- verify */

typedef struct vctx {
    apr_prov_report_fn fn;
    void *user;
    apr_prov_check *res;
    int rc;      /* the first error (out of memory, a source that cannot be read): */
    apr_err *err; /* the check could not run, which is never a mismatch */
} vctx;

/* Records the first error; later checks are skipped (v->rc). */
static void verify_fail(vctx *v, int code, const char *msg)
{
    if (!v->rc)
        v->rc = apr_err_set(v->err, code, "%s", msg);
}

static void report(vctx *v, bool ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void report(vctx *v, bool ok, const char *what, const char *fmt, ...)
{
    if (!v->fn)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->fn(v->user, ok, what, msg);
}

static bool shape_matches(const json_t *shape, const apr_tensor *t)
{
    if (!json_is_array(shape) || json_array_size(shape) != t->ndim)
        return false;
    for (uint32_t d = 0; d < t->ndim; d++) {
        const json_t *x = json_array_get(shape, d);
        if (!json_is_integer(x) || (uint64_t)json_integer_value(x) != t->dims[d])
            return false;
    }
    return true;
}

/* 1 the parts match the record's, 0 not, -1 out of memory building ours. */
static int parts_match(const json_t *parts, const apr_tensor *t)
{
    apr_jb jb = apr_jb_start();
    json_t *want = parts_json(t->parts, t->n_parts, &jb);
    int same = jb.bad || !want ? -1 : parts && json_equal(want, (json_t *)parts);
    json_decref(want);
    return same;
}

static void check_tensors(vctx *v, const apr_model *m, const json_t *tensors, int n_threads, apr_err *err,
                          int *rc)
{
    hash_job *jobs = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *jobs);
    hash_job **pj = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *pj);
    if (!jobs || !pj) {
        *rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        free(jobs);
        free(pj);
        return;
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        jobs[i].p = m->tensors[i].data;
        jobs[i].n = m->tensors[i].nbytes;
        pj[i] = &jobs[i];
    }
    run_jobs(pj, m->n_tensors, n_threads, NULL);
    free(pj);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        const json_t *rec = json_object_get(tensors, t->name);
        if (!rec) {
            v->res->unrecorded++;
            report(v, false, t->name, "tensor is not in the provenance record");
            continue;
        }
        v->res->tensors_checked++;
        char hex[65];
        apr_sha256_hex(jobs[i].sha, hex);
        const char *want = json_string_value(json_object_get(rec, "sha256"));
        const char *dt = json_string_value(json_object_get(rec, "dtype"));
        const json_t *bytes = json_object_get(rec, "bytes");
        const int parts_same = t->dtype == APR_DT_ROWCAT ? parts_match(json_object_get(rec, "parts"), t) : 1;
        if (parts_same < 0) {
            *rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            break;
        }
        if (!want || strcmp(want, hex) != 0) {
            v->res->tensors_bad++;
            report(v, false, t->name, "payload sha256 %s, record says %s", hex, want ? want : "(none)");
        } else if (!dt || strcmp(dt, apr_dtype_name(t->dtype)) != 0 || !shape_matches(json_object_get(rec, "shape"), t) ||
                   !json_is_integer(bytes) || (uint64_t)json_integer_value(bytes) != t->nbytes ||
                   !parts_same) {
            v->res->tensors_bad++;
            report(v, false, t->name, "dtype/shape/size differ from the record (record: %s)", dt ? dt : "?");
        } else {
            report(v, true, t->name, "sha256 %s ok", hex);
        }
    }
    free(jobs);
    const char *name;
    json_t *rec;
    json_object_foreach((json_t *)tensors, name, rec) {
        if (*rc)
            break;
        if (!apr_model_tensor(m, name)) {
            v->res->missing++;
            report(v, false, name, "recorded tensor is missing from the file");
        }
    }
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The writer records base names (add_file): a recorded name that is not
 * one (a '/', "." or "..") would make the verifier hash a file outside the
 * source's directory, so it is never looked up. */
static bool is_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Source files: each recorded file is looked up beside SOURCE (or inside it
 * when it is a directory); a single recorded weights file is SOURCE itself
 * when SOURCE is a file, whatever its name now. */
static void check_source_files(vctx *v, const json_t *rec_src, const char *source, int n_threads)
{
    const json_t *files = json_object_get(rec_src, "files");
    size_t n = json_array_size(files);
    bool dir = is_dir(source);
    char *tmp = strdup(source);
    char *sbase_tmp = strdup(source);
    if (!tmp || !sbase_tmp) {
        free(tmp);
        free(sbase_tmp);
        verify_fail(v, APR_E_NOMEM, "out of memory");
        return;
    }
    const char *sdir = dir ? source : dirname(tmp);
    const char *sbase = basename(sbase_tmp);
    size_t n_weights = 0;
    for (size_t i = 0; i < n; i++) {
        const char *role = json_string_value(json_object_get(json_array_get(files, i), "role"));
        n_weights += role && !strcmp(role, "weights");
    }
    hash_job *jobs = calloc(n ? n : 1, sizeof *jobs);
    hash_job **pj = calloc(n ? n : 1, sizeof *pj);
    char (*paths)[4096] = calloc(n ? n : 1, sizeof *paths);
    bool *found = calloc(n ? n : 1, sizeof *found);
    size_t nj = 0;
    for (size_t i = 0; jobs && pj && paths && found && i < n; i++) {
        const json_t *f = json_array_get(files, i);
        const char *file = json_string_value(json_object_get(f, "file"));
        const char *role = json_string_value(json_object_get(f, "role"));
        if (!file || !is_file_name(file))
            continue; /* reported below as not found */
        if (!dir && (!strcmp(file, sbase) || (n_weights == 1 && role && !strcmp(role, "weights"))))
            snprintf(paths[i], sizeof paths[i], "%s", source);
        else
            snprintf(paths[i], sizeof paths[i], "%s/%s", sdir, file);
        struct stat st;
        if (stat(paths[i], &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        found[i] = true;
        jobs[i].path = paths[i];
        jobs[i].n = (uint64_t)st.st_size;
        pj[nj++] = &jobs[i];
    }
    if (!jobs || !pj || !paths || !found)
        verify_fail(v, APR_E_NOMEM, "out of memory");
    else {
        apr_err jerr = {0};
        if (run_jobs(pj, nj, n_threads, &jerr))
            verify_fail(v, jerr.code, jerr.msg); /* a file that is there but cannot be read: no verdict */
    }
    if (!v->rc) {
        for (size_t i = 0; i < n; i++) {
            const json_t *f = json_array_get(files, i);
            const char *file = json_string_value(json_object_get(f, "file"));
            const char *want = json_string_value(json_object_get(f, "sha256"));
            v->res->files_checked++;
            if (file && !is_file_name(file)) {
                v->res->files_bad++;
                report(v, false, file, "recorded source file '%s' is not a file name (not looked up)", file);
                continue;
            }
            if (!file || !found[i]) {
                v->res->files_bad++;
                report(v, false, file ? file : "?", "source file %s not found", paths[i][0] ? paths[i] : "?");
                continue;
            }
            char hex[65];
            apr_sha256_hex(jobs[i].sha, hex);
            if (!want || strcmp(want, hex) != 0) {
                v->res->files_bad++;
                report(v, false, file, "source file %s sha256 %s, record says %s", paths[i], hex, want ? want : "(none)");
            } else {
                report(v, true, file, "source file %s sha256 %s ok", paths[i], hex);
            }
        }
    }
    free(jobs);
    free(pj);
    free(paths);
    free(found);
    free(tmp);
    free(sbase_tmp);
}

/* Source tensors named by the record, hashed in the opened source model. */
static void check_source_tensors(vctx *v, const apr_model *src, const json_t *tensors, int n_threads)
{
    hash_job *jobs = calloc(src->n_tensors ? src->n_tensors : 1, sizeof *jobs);
    hash_job **pj = calloc(src->n_tensors ? src->n_tensors : 1, sizeof *pj);
    bool *need = calloc(src->n_tensors ? src->n_tensors : 1, sizeof *need);
    if (!jobs || !pj || !need) {
        verify_fail(v, APR_E_NOMEM, "out of memory");
        goto done;
    }
    const char *name;
    json_t *rec;
    /* Which source tensors are referenced (hash only those). */
    json_object_foreach((json_t *)tensors, name, rec) {
        const json_t *ss = json_object_get(rec, "sources");
        for (size_t i = 0; i < json_array_size(ss); i++) {
            const char *sn = json_string_value(json_object_get(json_array_get(ss, i), "name"));
            const apr_tensor *st = sn ? apr_model_tensor(src, sn) : NULL;
            if (st)
                need[st - src->tensors] = true;
        }
    }
    size_t nj = 0;
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        if (!need[i])
            continue;
        jobs[i].p = src->tensors[i].data;
        jobs[i].n = src->tensors[i].nbytes;
        pj[nj++] = &jobs[i];
    }
    run_jobs(pj, nj, n_threads, NULL);
    json_object_foreach((json_t *)tensors, name, rec) {
        const json_t *ss = json_object_get(rec, "sources");
        for (size_t i = 0; i < json_array_size(ss); i++) {
            const json_t *s = json_array_get(ss, i);
            const char *sn = json_string_value(json_object_get(s, "name"));
            const char *want = json_string_value(json_object_get(s, "sha256"));
            const apr_tensor *st = sn ? apr_model_tensor(src, sn) : NULL;
            v->res->src_tensors_checked++;
            if (!st) {
                v->res->src_tensors_bad++;
                report(v, false, name, "source tensor '%s' is not in the source", sn ? sn : "?");
                continue;
            }
            char hex[65];
            apr_sha256_hex(jobs[st - src->tensors].sha, hex);
            if (!want || strcmp(want, hex) != 0) {
                v->res->src_tensors_bad++;
                report(v, false, name, "source tensor '%s' sha256 %s, record says %s", sn, hex, want ? want : "(none)");
            }
        }
    }
done:
    free(jobs);
    free(pj);
    free(need);
}

/* The record's output_files (a split GGUF's splits, in order) against the
 * files m was opened from: as many, and every file but the one holding the
 * record (sha256 null, the first) hashes to its digest. A record without
 * the list (one file, or an older record) has nothing to check here. */
static void check_output_files(vctx *v, const apr_model *m, const json_t *outs)
{
    if (!outs)
        return;
    size_t n = json_array_size(outs);
    if (!json_is_array(outs) || n != m->n_maps) {
        v->res->outputs_bad++;
        report(v, false, NULL, "the record lists %zu output files, the model was read from %u", n, m->n_maps);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(outs, k);
        const char *file = json_string_value(json_object_get(e, "file"));
        const json_t *sha = json_object_get(e, "sha256");
        const apr_mapping *map = &m->maps[k];
        const char *name = map->path ? strrchr(map->path, '/') : NULL;
        name = name ? name + 1 : map->path ? map->path : "?";
        v->res->outputs_checked++;
        if (!file || (sha && !json_is_null(sha) && !json_is_string(sha)) || ((!sha || json_is_null(sha)) && k != 0)) {
            v->res->outputs_bad++;
            report(v, false, name, "output file entry %zu is malformed", k);
            continue;
        }
        if (!sha || json_is_null(sha)) {
            report(v, true, name, "holds this record (its tensors are checked by their digests)");
            continue;
        }
        uint8_t d[32];
        char hex[65];
        apr_sha256(map->base, (size_t)map->size, d);
        apr_sha256_hex(d, hex);
        bool same = !strcmp(hex, json_string_value(sha));
        v->res->outputs_bad += !same;
        report(v, same, name, "%s%s%s%s", same ? "output file sha256 matches" : "output file sha256 differs: ",
               same ? "" : hex, strcmp(file, name) ? ", recorded as " : "", strcmp(file, name) ? file : "");
    }
}

/* A sharded APR set opened from its manifest (the record lives there): each
 * shard's bytes against the sha256 its manifest entry carries. */
static void check_manifest_shards(vctx *v, const apr_model *m)
{
    if (m->format != APR_FMT_APR || !m->path || !apr_apr_is_manifest_path(m->path))
        return;
    apr_mapping map;
    apr_err merr = {0};
    if (apr_map_file(m->path, &map, &merr)) {
        verify_fail(v, merr.code, merr.msg);
        return;
    }
    json_t *root = apr_json_loadb((const char *)map.base, (size_t)map.size, 0, NULL);
    const bool oom = !root && apr_json_parse_oom();
    apr_unmap_file(&map);
    if (oom) {
        verify_fail(v, APR_E_NOMEM, "the shard manifest: out of memory");
        return;
    }
    const json_t *shards = json_object_get(root, "shards");
    if (!json_is_array(shards) || json_array_size(shards) != m->n_maps) {
        v->res->outputs_bad++;
        report(v, false, m->path, "the manifest's shard list no longer matches the %u shards read", m->n_maps);
        json_decref(root);
        return;
    }
    for (size_t k = 0; k < m->n_maps; k++) {
        const json_t *e = json_array_get(shards, k);
        const char *want = json_string_value(json_object_get(e, "sha256"));
        const char *file = json_string_value(json_object_get(e, "filename"));
        if (!want)
            continue; /* aprender's manifests carry no digest */
        uint8_t d[32];
        char hex[65];
        apr_sha256(m->maps[k].base, (size_t)m->maps[k].size, d);
        apr_sha256_hex(d, hex);
        bool same = !strcmp(hex, want);
        v->res->outputs_checked++;
        v->res->outputs_bad += !same;
        report(v, same, file ? file : "?", "%s%s", same ? "shard sha256 matches its manifest entry"
                                                        : "shard sha256 differs from its manifest entry: ",
               same ? "" : hex);
    }
    json_decref(root);
}

int apr_provenance_verify(const apr_model *m, const char *source, int n_threads, apr_prov_report_fn fn,
                          void *user, apr_prov_check *res, apr_err *err)
{
    apr_prov_check local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    vctx v = {fn, user, res, 0, err};
    if (!m->provenance_json)
        return apr_err_set(err, APR_E_FORMAT, "%s has no provenance record", m->path ? m->path : "the model");
    json_error_t je;
    json_t *root = apr_json_loads(m->provenance_json, 0, &je);
    if (!root && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "the provenance record: out of memory");
    if (!root)
        return apr_err_set(err, APR_E_FORMAT, "the provenance record is not JSON: %s (line %d)", je.text, je.line);
    const json_t *tensors = json_object_get(root, "tensors");
    const char *schema = json_string_value(json_object_get(root, "schema"));
    if (!json_is_object(tensors) || !schema || strcmp(schema, PROV_SCHEMA) != 0) {
        json_decref(root);
        return apr_err_set(err, APR_E_FORMAT, "the provenance record is not an %s object with a \"tensors\" map",
                           PROV_SCHEMA);
    }
    int rc = 0;
    check_tensors(&v, m, tensors, n_threads, err, &rc);
    if (!rc)
        check_output_files(&v, m, json_object_get(root, "output_files"));
    if (!rc)
        check_manifest_shards(&v, m);
    if (!rc && !v.rc && source)
        check_source_files(&v, json_object_get(root, "source"), source, n_threads);
    if (!rc && !v.rc && source) {
        apr_model *src = NULL;
        apr_err oerr = {0};
        apr_open_opts oo = {.skip_footer_crc = false};
        struct stat sst;
        const int orc = apr_model_open(&src, source, &oo, &oerr);
        if (!orc)
            check_source_tensors(&v, src, tensors, n_threads);
        if (!orc && !v.rc) {
            const json_t *parent = json_object_get(root, "parent");
            json_t *sp = src->provenance_json ? apr_json_loads(src->provenance_json, 0, &je) : NULL;
            if (src->provenance_json && !sp && !apr_json_parse_oom())
                sp = json_string(src->provenance_json); /* not JSON: compared as the string it is */
            if (src->provenance_json && !sp) {
                verify_fail(&v, APR_E_NOMEM, "the source's provenance record: out of memory");
            } else {
                res->parent_checked = true;
                bool same = (!sp && (!parent || json_is_null(parent))) ||
                            (sp && parent && json_equal(sp, (json_t *)parent));
                if (!same) {
                    res->parent_bad = true;
                    report(&v, false, NULL, "the source's own provenance differs from the recorded parent");
                } else {
                    report(&v, true, NULL, "parent record matches the source's provenance");
                }
            }
            json_decref(sp);
        }
        apr_model_free(src);
        if (orc && (orc == APR_E_NOMEM || (orc == APR_E_IO && stat(source, &sst) == 0 && S_ISREG(sst.st_mode)))) {
            /* out of memory, or a source file that is there but could not be
             * read: the check could not run, which is not a mismatch (a
             * directory that is no model is one, below) */
            verify_fail(&v, orc, oerr.msg);
        } else if (orc) {
            /* opening the source is a check of its own: counted as one, so
             * files_bad never exceeds files_checked (fuzz_provenance found
             * "1 source files (2 bad)") */
            res->files_checked++;
            res->files_bad++;
            report(&v, false, source, "cannot open the source: %s", oerr.msg);
        }
    }
    json_decref(root);
    if (rc)
        return rc;
    if (v.rc)
        return v.rc;
    if (res->tensors_bad || res->unrecorded || res->missing || res->files_bad || res->src_tensors_bad ||
        res->parent_bad || res->outputs_bad)
        return apr_err_set(err, APR_E_MISMATCH,
                           "provenance mismatch: %llu of %llu tensors differ, %llu unrecorded, %llu missing, "
                           "%llu of %llu output files differ, "
                           "%llu of %llu source files differ, %llu source tensors differ%s",
                           (unsigned long long)res->tensors_bad, (unsigned long long)res->tensors_checked,
                           (unsigned long long)res->unrecorded, (unsigned long long)res->missing,
                           (unsigned long long)res->outputs_bad, (unsigned long long)res->outputs_checked,
                           (unsigned long long)res->files_bad, (unsigned long long)res->files_checked,
                           (unsigned long long)res->src_tensors_bad, res->parent_bad ? ", parent differs" : "");
    return 0;
}
