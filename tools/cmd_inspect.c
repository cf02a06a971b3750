/* cmd_inspect.c - `apr inspect FILE`: format, version, architecture config,
 * tokenizer summary, every KV (arrays summarized), every tensor, and the
 * provenance record; --json for machines; --tensor NAME --stats for one
 * tensor's min/max/mean/std/NaN count (dequantized row by row). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "formats.h"
#include "apr_json.h" /* apr_jb: --json output that lost a field is an error, not printed */
#include "quant.h"


#define ARRAY_HEAD 5      /* array elements shown in text mode */
#define ARRAY_HEAD_JSON 8 /* ... and in --json */
#define STR_SHOW 72       /* string characters shown in text mode */

static const char usage[] =
    "usage: apr inspect FILE [--json] [--provenance] [--tensor NAME [--stats]]\n"
    "\n"
    "Shows a GGUF, APR or safetensors file (or HF model directory): format, version,\n"
    "architecture, tokenizer, every metadata key (arrays summarized), every tensor\n"
    "(name, dtype, shape, bytes, offset) and the provenance record.\n";

/* ---------------------------------------------------------------- KV values */

static const void *arr_elem(const apr_kv *kv, uint64_t i)
{
    return (const uint8_t *)kv->arr + i * apr_kv_type_size(kv->arr_type);
}

static void print_scalar(FILE *f, apr_kv_type t, const void *p)
{
    apr_kv_scalar v;
    memcpy(&v, p, apr_kv_type_size(t));
    switch (t) {
    case APR_KV_U8: fprintf(f, "%u", v.u8); break;
    case APR_KV_I8: fprintf(f, "%d", v.i8); break;
    case APR_KV_U16: fprintf(f, "%u", v.u16); break;
    case APR_KV_I16: fprintf(f, "%d", v.i16); break;
    case APR_KV_U32: fprintf(f, "%" PRIu32, v.u32); break;
    case APR_KV_I32: fprintf(f, "%" PRId32, v.i32); break;
    case APR_KV_U64: fprintf(f, "%" PRIu64, v.u64); break;
    case APR_KV_I64: fprintf(f, "%" PRId64, v.i64); break;
    case APR_KV_F32: fprintf(f, "%.9g", (double)v.f32); break;
    case APR_KV_F64: fprintf(f, "%.17g", v.f64); break;
    case APR_KV_BOOL: fputs(v.b ? "true" : "false", f); break;
    default: fputs("?", f);
    }
}

/* A string, quoted, control characters escaped, cut after max characters. */
static void print_str(FILE *f, const char *s, uint64_t len, size_t max)
{
    fputc('"', f);
    uint64_t n = len < max ? len : max;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
    if (len > max)
        fprintf(f, "... (%" PRIu64 " bytes)", len);
}

static void print_kv(FILE *f, const apr_kv *kv)
{
    if (kv->type == APR_KV_STRING) {
        fprintf(f, "  %-44s %-14s ", kv->key, "string");
        print_str(f, kv->str.s, kv->str.len, STR_SHOW);
    } else if (kv->type == APR_KV_ARRAY) {
        char t[32];
        snprintf(t, sizeof t, "array[%s]", apr_kv_type_name(kv->arr_type));
        fprintf(f, "  %-44s %-14s %" PRIu64 " x [", kv->key, t, kv->count);
        for (uint64_t i = 0; i < kv->count && i < ARRAY_HEAD; i++) {
            if (i)
                fputs(", ", f);
            if (kv->arr_type == APR_KV_STRING) {
                const apr_str *s = &((const apr_str *)kv->arr)[i];
                print_str(f, s->s, s->len, 24);
            } else {
                print_scalar(f, kv->arr_type, arr_elem(kv, i));
            }
        }
        fputs(kv->count > ARRAY_HEAD ? ", ...]" : "]", f);
    } else {
        fprintf(f, "  %-44s %-14s ", kv->key, apr_kv_type_name(kv->type));
        print_scalar(f, kv->type, &kv->v);
    }
    fputc('\n', f);
}

/* The record is inspect's; the value (an array's head) is the SHOW dialect
 * of the one typed-KV codec (apr_json.h). */
static json_t *kv_json(apr_jb *jb, const apr_kv *kv)
{
    json_t *o = json_object();
    apr_jb_set(jb, o, "key", json_string(kv->key));
    apr_jb_set(jb, o, "type", json_string(apr_kv_type_name(kv->type)));
    if (kv->type == APR_KV_ARRAY) {
        apr_jb_set(jb, o, "elem_type", json_string(apr_kv_type_name(kv->arr_type)));
        apr_jb_set(jb, o, "count", json_integer((json_int_t)kv->count));
        apr_jb_set(jb, o, "head", apr_kvjson_encode(kv, APR_KVJSON_SHOW, ARRAY_HEAD_JSON, NULL));
    } else {
        apr_jb_set(jb, o, "value", apr_kvjson_encode(kv, APR_KVJSON_SHOW, UINT64_MAX, NULL));
    }
    return o;
}

/* ---------------------------------------------------------------- tensors */

static void shape_text(const apr_tensor *t, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (uint32_t d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRIu64, d ? ", " : "", t->dims[d]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

static json_t *tensor_json(apr_jb *jb, const apr_tensor *t)
{
    json_t *o = json_object(), *shape = json_array();
    apr_jb_set(jb, o, "name", json_string(t->name));
    apr_jb_set(jb, o, "dtype", json_string(apr_dtype_name(t->dtype)));
    for (uint32_t d = 0; d < t->ndim; d++)
        apr_jb_append(jb, shape, json_integer((json_int_t)t->dims[d]));
    apr_jb_set(jb, o, "shape", shape);
    apr_jb_set(jb, o, "bytes", json_integer((json_int_t)t->nbytes));
    apr_jb_set(jb, o, "offset", json_integer((json_int_t)t->file_offset));
    if (t->dtype == APR_DT_ROWCAT) {
        json_t *parts = json_array();
        for (uint32_t i = 0; i < t->n_parts; i++) {
            json_t *p = json_object();
            apr_jb_set(jb, p, "dtype", json_string(apr_dtype_name(t->parts[i].dtype)));
            apr_jb_set(jb, p, "rows", json_integer((json_int_t)t->parts[i].rows));
            apr_jb_set(jb, p, "bytes", json_integer((json_int_t)t->parts[i].nbytes));
            apr_jb_append(jb, parts, p);
        }
        apr_jb_set(jb, o, "parts", parts);
    }
    return o;
}

static void print_tensor(FILE *f, const apr_tensor *t)
{
    char shape[128];
    shape_text(t, shape, sizeof shape);
    fprintf(f, "  %-48s %-6s %-18s %12" PRIu64 " %12" PRIu64, t->name, apr_dtype_name(t->dtype), shape, t->nbytes,
            t->file_offset);
    if (t->dtype == APR_DT_ROWCAT) {
        fputs("  parts:", f);
        for (uint32_t i = 0; i < t->n_parts; i++)
            fprintf(f, " %s x %" PRIu64 " rows", apr_dtype_name(t->parts[i].dtype), t->parts[i].rows);
    }
    fputc('\n', f);
}

/* ---------------------------------------------------------------- stats */

typedef struct tstats {
    uint64_t n, nan, inf;
    double min, max, sum, sumsq; /* over finite values */
} tstats;

static void acc_row(tstats *s, const float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        float v = x[i];
        s->n++;
        if (isnan(v)) {
            s->nan++;
        } else if (isinf(v)) {
            s->inf++;
        } else {
            if (s->n - s->nan - s->inf == 1 || v < s->min)
                s->min = v;
            if (s->n - s->nan - s->inf == 1 || v > s->max)
                s->max = v;
            s->sum += v;
            s->sumsq += (double)v * v;
        }
    }
}

static int tensor_stats(const apr_tensor *t, tstats *s, apr_err *err)
{
    memset(s, 0, sizeof *s);
    uint64_t cols = t->ndim ? t->dims[t->ndim - 1] : 1, total;
    if (!apr_dims_count(t->ndim, t->dims, &total))
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': shape overflows", t->name);
    uint64_t rows = cols ? total / cols : 0;
    float *row = malloc((cols ? cols : 1) * sizeof *row);
    if (!row)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    /* A ROWCAT tensor is its parts one after the other; others are one part. */
    apr_tensor_part whole = {t->dtype, rows, t->nbytes};
    const apr_tensor_part *parts = t->dtype == APR_DT_ROWCAT ? t->parts : &whole;
    uint32_t n_parts = t->dtype == APR_DT_ROWCAT ? t->n_parts : 1;
    const uint8_t *p = t->data;
    for (uint32_t k = 0; k < n_parts; k++) {
        uint64_t rb = apr_dtype_row_bytes(parts[k].dtype, cols);
        if (!rb || rb * parts[k].rows != parts[k].nbytes) {
            free(row);
            return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': cannot read %s rows of %" PRIu64 " columns",
                               t->name, apr_dtype_name(parts[k].dtype), cols);
        }
        for (uint64_t r = 0; r < parts[k].rows; r++, p += rb) {
            if (apr_to_f32_row(parts[k].dtype, p, row, (int64_t)cols) != 0) {
                free(row);
                return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': dtype %s cannot be dequantized", t->name,
                                   apr_dtype_name(parts[k].dtype));
            }
            acc_row(s, row, cols);
        }
    }
    free(row);
    return 0;
}

/* mean and standard deviation over the finite values (0 when there are none) */
static void stats_moments(const tstats *s, double *mean, double *std)
{
    uint64_t fin = s->n - s->nan - s->inf;
    *mean = fin ? s->sum / (double)fin : 0.0;
    double var = fin ? s->sumsq / (double)fin - *mean * *mean : 0.0;
    *std = sqrt(var > 0 ? var : 0);
}

static json_t *stats_json(apr_jb *jb, const tstats *s)
{
    uint64_t fin = s->n - s->nan - s->inf;
    double mean, std;
    stats_moments(s, &mean, &std);
    json_t *o = json_object();
    apr_jb_set(jb, o, "count", json_integer((json_int_t)s->n));
    apr_jb_set(jb, o, "min", fin ? json_real(s->min) : json_null());
    apr_jb_set(jb, o, "max", fin ? json_real(s->max) : json_null());
    apr_jb_set(jb, o, "mean", fin ? json_real(mean) : json_null());
    apr_jb_set(jb, o, "std", fin ? json_real(std) : json_null());
    apr_jb_set(jb, o, "nan", json_integer((json_int_t)s->nan));
    apr_jb_set(jb, o, "inf", json_integer((json_int_t)s->inf));
    return o;
}

/* ---------------------------------------------------------------- config / tokenizer */

static json_t *config_json(apr_jb *jb, const apr_model *m)
{
    if (!m->has_cfg)
        return json_null();
    const apr_arch_config *c = &m->cfg;
    json_t *o = json_object();
    apr_jb_set(jb, o, "arch", json_string(c->arch));
    apr_jb_set(jb, o, "n_layers", json_integer(c->n_layers));
    apr_jb_set(jb, o, "hidden", json_integer(c->hidden));
    apr_jb_set(jb, o, "n_heads", json_integer(c->n_heads));
    apr_jb_set(jb, o, "n_kv_heads", json_integer(c->n_kv_heads));
    apr_jb_set(jb, o, "head_dim", json_integer(c->head_dim));
    apr_jb_set(jb, o, "ffn", json_integer(c->ffn));
    apr_jb_set(jb, o, "vocab", json_integer(c->vocab));
    apr_jb_set(jb, o, "ctx_len", json_integer(c->ctx_len));
    apr_jb_set(jb, o, "rope_theta", json_real(c->rope_theta));
    apr_jb_set(jb, o, "rms_eps", json_real(c->rms_eps));
    apr_jb_set(jb, o, "rope_type", json_string(c->rope_type == APR_ROPE_NEOX ? "neox" : "norm"));
    apr_jb_set(jb, o, "tied_embeddings", json_boolean(c->tied_embeddings));
    apr_jb_set(jb, o, "qkv_bias", json_boolean(c->qkv_bias));
    return o;
}

static json_t *tokenizer_json(apr_jb *jb, const apr_model *m)
{
    if (!m->has_tok)
        return json_null();
    const apr_tokenizer *t = &m->tok;
    json_t *o = json_object();
    apr_jb_set(jb, o, "model", json_string(t->model));
    apr_jb_set(jb, o, "pre", json_string(t->pre));
    apr_jb_set(jb, o, "n_tokens", json_integer(t->n_tokens));
    apr_jb_set(jb, o, "n_merges", json_integer(t->n_merges));
    apr_jb_set(jb, o, "bos_id", json_integer(t->bos_id));
    apr_jb_set(jb, o, "eos_id", json_integer(t->eos_id));
    apr_jb_set(jb, o, "unk_id", json_integer(t->unk_id));
    apr_jb_set(jb, o, "pad_id", json_integer(t->pad_id));
    apr_jb_set(jb, o, "add_bos", json_boolean(t->add_bos));
    apr_jb_set(jb, o, "add_eos", json_boolean(t->add_eos));
    apr_jb_set(jb, o, "chat_template", json_boolean(t->chat_template != NULL));
    return o;
}

static void print_token(FILE *f, const apr_tokenizer *t, int32_t id)
{
    if (id < 0) {
        fputs("none", f);
        return;
    }
    fprintf(f, "%d ", id);
    if ((uint32_t)id < t->n_tokens)
        print_str(f, t->tokens[id].s, t->tokens[id].len, 16);
}

/* ---------------------------------------------------------------- provenance */

static int print_provenance(FILE *f, const char *json_text, apr_err *err)
{
    json_error_t je;
    json_t *root = apr_json_loads(json_text, 0, &je);
    if (!root && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "provenance record: out of memory");
    if (!root) {
        fprintf(f, "provenance: present but not JSON (%s)\n", je.text);
        return 0;
    }
    apr_jb jb = apr_jb_start();
    const json_t *p = root;
    int depth = 0;
    fprintf(f, "provenance:\n");
    while (p && json_is_object(p)) {
        const json_t *src = json_object_get(p, "source");
        const json_t *files = json_object_get(src, "files");
        const json_t *tensors = json_object_get(p, "tensors");
        const char *indent = depth ? "    " : "  ";
        if (depth)
            fprintf(f, "  parent %d:\n", depth);
        fprintf(f, "%s%s %s by %s %s at %s\n", indent, json_string_value(json_object_get(p, "operation")) ?: "?",
                json_string_value(json_object_get(p, "output_format")) ?: "?",
                json_string_value(json_object_get(p, "tool")) ?: "?",
                json_string_value(json_object_get(p, "version")) ?: "?",
                json_string_value(json_object_get(p, "time_utc")) ?: "?");
        if (json_string_value(json_object_get(p, "command")))
            fprintf(f, "%scommand: %s\n", indent, json_string_value(json_object_get(p, "command")));
        fprintf(f, "%ssource: %s %s\n", indent, json_string_value(json_object_get(src, "format")) ?: "?",
                json_string_value(json_object_get(src, "path")) ?: "?");
        for (size_t i = 0; i < json_array_size(files); i++) {
            const json_t *fi = json_array_get(files, i);
            fprintf(f, "%s  %-17s %-28s sha256 %s\n", indent, json_string_value(json_object_get(fi, "role")) ?: "?",
                    json_string_value(json_object_get(fi, "file")) ?: "?",
                    json_string_value(json_object_get(fi, "sha256")) ?: "?");
        }
        const json_t *outs = json_object_get(p, "output_files");
        if (json_array_size(outs))
            fprintf(f, "%soutput: %zu files\n", indent, json_array_size(outs));
        for (size_t i = 0; i < json_array_size(outs); i++) {
            const json_t *fi = json_array_get(outs, i);
            const char *sha = json_string_value(json_object_get(fi, "sha256"));
            fprintf(f, "%s  %-17s %-28s %s%s\n", indent, i == 0 ? "split" : "",
                    json_string_value(json_object_get(fi, "file")) ?: "?", sha ? "sha256 " : "holds this record",
                    sha ? sha : "");
        }
        /* transforms, counted */
        json_t *counts = json_object();
        const char *name;
        json_t *rec;
        json_object_foreach((json_t *)tensors, name, rec) {
            const char *tr = json_string_value(json_object_get(rec, "transform"));
            json_t *c = json_object_get(counts, tr ? tr : "?");
            apr_jb_set(&jb, counts, tr ? tr : "?", json_integer(c ? json_integer_value(c) + 1 : 1));
        }
        if (jb.bad) { /* the counts would be wrong */
            json_decref(counts);
            json_decref(root);
            return apr_jb_done(&jb, "provenance record", err);
        }
        fprintf(f, "%stensors: %zu recorded (", indent, json_object_size(tensors));
        bool first = true;
        json_object_foreach(counts, name, rec) {
            fprintf(f, "%s%s %lld", first ? "" : ", ", name, (long long)json_integer_value(rec));
            first = false;
        }
        fprintf(f, ")\n");
        json_decref(counts);
        p = json_object_get(p, "parent");
        depth++;
    }
    if (depth == 1)
        fprintf(f, "  parent: none\n");
    json_decref(root);
    return 0;
}

/* A sharded APR set read through its manifest: each shard and the sha256
 * its manifest entry records (apr verify --provenance re-hashes them). */
static int print_manifest_shards(FILE *f, const apr_model *m, apr_err *err)
{
    if (m->format != APR_FMT_APR || !m->path || !apr_apr_is_manifest_path(m->path))
        return 0;
    json_error_t je;
    FILE *mf = fopen(m->path, "rb");
    if (!mf)
        return apr_err_set(err, APR_E_IO, "%s: %s", m->path, strerror(errno));
    json_t *root = apr_json_loadf(mf, 0, &je);
    bool oom = !root && apr_json_parse_oom();
    fclose(mf);
    if (oom)
        return apr_err_set(err, APR_E_NOMEM, "%s: out of memory", m->path);
    if (!root) /* apr_model_open read it a moment ago */
        return apr_err_set(err, APR_E_FORMAT, "%s: %s", m->path, je.text);
    const json_t *shards = json_object_get(root, "shards");
    fprintf(f, "shards:     %zu (manifest %s)\n", json_array_size(shards), m->path);
    for (size_t k = 0; k < json_array_size(shards); k++) {
        const json_t *e = json_array_get(shards, k);
        const char *sha = json_string_value(json_object_get(e, "sha256"));
        fprintf(f, "  %-28s %12lld bytes  %s%s\n", json_string_value(json_object_get(e, "filename")) ?: "?",
                (long long)json_integer_value(json_object_get(e, "size")), sha ? "sha256 " : "no sha256",
                sha ? sha : "");
    }
    json_decref(root);
    return 0;
}

/* ---------------------------------------------------------------- main */

static int print_text(const apr_model *m, const char *path, const char *only, apr_err *err)
{
    FILE *f = stdout;
    uint64_t total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total += m->tensors[i].nbytes;
    fprintf(f, "file:       %s\n", path);
    fprintf(f, "format:     %s", apr_format_name(m->format));
    if (m->format != APR_FMT_SAFETENSORS)
        fprintf(f, " v%u", m->version);
    if (m->alignment)
        fprintf(f, " (alignment %u)", m->alignment);
    if (m->n_maps > 1)
        fprintf(f, ", %u shards", m->n_maps);
    fputc('\n', f);
    if (m->has_cfg) {
        const apr_arch_config *c = &m->cfg;
        fprintf(f,
                "arch:       %s: %u layers, hidden %u, heads %u (kv %u), head_dim %u, ffn %u, vocab %u, ctx %u,\n"
                "            rope %s theta %g, rms_eps %g, tied embeddings %s, qkv bias %s\n",
                c->arch, c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn, c->vocab, c->ctx_len,
                c->rope_type == APR_ROPE_NEOX ? "neox" : "norm", (double)c->rope_theta, (double)c->rms_eps,
                c->tied_embeddings ? "yes" : "no", c->qkv_bias ? "yes" : "no");
    } else {
        const char *a = apr_kv_get_str(m, "general.architecture");
        fprintf(f, "arch:       %s (no usable config)\n", a ? a : "none");
    }
    if (m->has_tok) {
        const apr_tokenizer *t = &m->tok;
        fprintf(f, "tokenizer:  %s%s%s%s, %u tokens, %u merges, bos ", t->model,
                !strcmp(t->model, "llama") ? " (SentencePiece)" : !strcmp(t->model, "gpt2") ? " (byte BPE)" : "",
                t->pre[0] ? ", pre " : "", t->pre, t->n_tokens, t->n_merges);
        print_token(f, t, t->bos_id);
        fputs(", eos ", f);
        print_token(f, t, t->eos_id);
        fprintf(f, ", add_bos %s, chat template %s\n", t->add_bos ? "yes" : "no", t->chat_template ? "yes" : "no");
    } else {
        fprintf(f, "tokenizer:  none\n");
    }
    fprintf(f, "metadata:   %" PRIu64 " KVs\n", m->n_kvs);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        print_kv(f, &m->kvs[i]);
    fprintf(f, "tensors:    %" PRIu64 " (%.2f MiB)\n", m->n_tensors, total / 1048576.0);
    fprintf(f, "  %-48s %-6s %-18s %12s %12s\n", "NAME", "DTYPE", "SHAPE", "BYTES", "OFFSET");
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (!only || !strcmp(only, m->tensors[i].name))
            print_tensor(f, &m->tensors[i]);
    int rc = print_manifest_shards(f, m, err);
    if (rc)
        return rc;
    if (m->provenance_json)
        return print_provenance(f, m->provenance_json, err);
    fprintf(f, "provenance: none\n");
    return 0;
}

static json_t *model_json(apr_jb *jb, const apr_model *m, const char *path, const char *only)
{
    json_t *o = json_object(), *kvs = json_array(), *ts = json_array();
    apr_jb_set(jb, o, "file", json_string(path));
    apr_jb_set(jb, o, "format", json_string(apr_format_name(m->format)));
    apr_jb_set(jb, o, "version", json_integer(m->version));
    apr_jb_set(jb, o, "alignment", json_integer(m->alignment));
    apr_jb_set(jb, o, "n_files", json_integer(m->n_maps));
    apr_jb_set(jb, o, "config", config_json(jb, m));
    apr_jb_set(jb, o, "tokenizer", tokenizer_json(jb, m));
    for (uint64_t i = 0; i < m->n_kvs; i++)
        apr_jb_append(jb, kvs, kv_json(jb, &m->kvs[i]));
    apr_jb_set(jb, o, "n_kvs", json_integer((json_int_t)m->n_kvs));
    apr_jb_set(jb, o, "kvs", kvs);
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (!only || !strcmp(only, m->tensors[i].name))
            apr_jb_append(jb, ts, tensor_json(jb, &m->tensors[i]));
    apr_jb_set(jb, o, "n_tensors", json_integer((json_int_t)m->n_tensors));
    apr_jb_set(jb, o, "tensors", ts);
    json_t *prov = NULL;
    if (m->provenance_json) {
        json_error_t je;
        prov = apr_json_loads(m->provenance_json, 0, &je);
        if (!prov && apr_json_parse_oom()) {
            jb->bad = true;
        } else if (!prov) { /* shown as the text it is */
            prov = json_string(m->provenance_json);
            if (!prov && !apr_jb_oom(jb))
                prov = json_null(); /* not UTF-8 either */
        }
    }
    apr_jb_set(jb, o, "provenance", m->provenance_json ? prov : json_null());
    return o;
}

/* j on stdout and a newline; 2 (with the error said) when jansson could not
 * serialise it (out of memory) or stdout could not take it. */
static int dump_json(const json_t *j, size_t flags)
{
    unsigned long failures = apr_json_alloc_failures();
    if (json_dumpf(j, stdout, flags) != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "apr inspect: writing the JSON: %s\n",
                apr_json_alloc_failures() != failures ? "out of memory" : strerror(errno));
        return 2;
    }
    return 0;
}

/* dump_json of what a builder made, unless it lost a field. */
static int dump_built(const apr_jb *jb, const json_t *j)
{
    apr_err err = {0};
    if (apr_jb_done(jb, "the JSON output", &err)) {
        fprintf(stderr, "apr inspect: %s\n", err.msg);
        return 2;
    }
    return dump_json(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
}

int cmd_inspect(int argc, char **argv)
{
    const char *path, *tensor = NULL;
    bool as_json = false, stats = false, prov_only = false;
    apr_open_opts oo = {.skip_footer_crc = false};
    const cli_opt opts[] = {
        OPT_FLAG("--json", NULL, &as_json, "machine-readable output"),
        OPT_FLAG("--provenance", NULL, &prov_only, "print the whole provenance record (JSON, indented)"),
        OPT_STR("--tensor", NULL, &tensor, "NAME", "only that tensor"),
        OPT_FLAG("--stats", NULL, &stats, "with --tensor: min, max, mean, std, NaN and Inf counts (dequantized)"),
        OPT_FLAG("--no-crc", NULL, &oo.skip_footer_crc, "APR: skip the whole-file CRC32 check (faster on big files)"),
    };
    const cli_cmd cmd = {.name = "inspect", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 1,
                         .max_pos = 1};
    cli_args args;
    const int prc = cli_parse(&cmd, argc, argv, &args);
    if (prc)
        return cli_exit_status(prc);
    path = args.pos[0];
    if (stats && !tensor) {
        fprintf(stderr, "apr inspect: --stats needs --tensor NAME\n");
        return 2;
    }
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, path, &oo, &err)) {
        fprintf(stderr, "apr inspect: %s\n", err.msg);
        return 2;
    }
    int rc = 0;
    const apr_tensor *t = tensor ? apr_model_tensor(m, tensor) : NULL;
    if (tensor && !t) {
        fprintf(stderr, "apr inspect: %s has no tensor '%s'\n", path, tensor);
        apr_model_free(m);
        return 2;
    }
    if (prov_only) {
        json_error_t je;
        json_t *p = m->provenance_json ? apr_json_loads(m->provenance_json, 0, &je) : NULL;
        if (!p && m->provenance_json && apr_json_parse_oom()) {
            fprintf(stderr, "apr inspect: %s: reading the provenance record: out of memory\n", path);
            rc = 2;
        } else if (!p) {
            fprintf(stderr, "apr inspect: %s has %s provenance record\n", path, m->provenance_json ? "an unreadable" : "no");
            rc = 2;
        } else {
            rc = dump_json(p, JSON_INDENT(2));
            json_decref(p);
        }
    } else if (stats) {
        tstats s;
        if (tensor_stats(t, &s, &err)) {
            fprintf(stderr, "apr inspect: %s\n", err.msg);
            rc = 2;
        } else if (as_json) {
            apr_jb jb = apr_jb_start();
            json_t *o = tensor_json(&jb, t);
            apr_jb_set(&jb, o, "stats", stats_json(&jb, &s));
            rc = dump_built(&jb, o);
            json_decref(o);
        } else {
            double mean, std;
            stats_moments(&s, &mean, &std);
            bool fin = s.n > s.nan + s.inf; /* min and max are 0 without a finite value, as in --json's nulls */
            print_tensor(stdout, t);
            printf("  count %" PRIu64 ", min %.9g, max %.9g, mean %.9g, std %.9g, NaN %" PRIu64 ", Inf %" PRIu64 "\n",
                   s.n, fin ? s.min : 0.0, fin ? s.max : 0.0, mean, std, s.nan, s.inf);
        }
    } else if (as_json) {
        apr_jb jb = apr_jb_start();
        json_t *o = model_json(&jb, m, path, tensor);
        rc = dump_built(&jb, o);
        json_decref(o);
    } else if (print_text(m, path, tensor, &err)) {
        fprintf(stderr, "apr inspect: %s\n", err.msg);
        rc = 2;
    }
    apr_model_free(m);
    return rc;
}
