/* apr.c - APR v2 reader and writer (paiml/aprender's format, docs/apr-format.md).
 *
 * Layout (little-endian):
 *   [0, 64)            header: "APR\0", u8 major 2, u8 minor 0, u16 flags,
 *                      u32 tensor_count, u64 metadata_offset (64), u32 metadata_size,
 *                      u64 tensor_index_offset, u64 data_offset, u32 header CRC32
 *                      over [0,40)+[44,64), 20 reserved zero bytes
 *   metadata           compact JSON object, padded with zeros to 64
 *   tensor index       entries sorted by name bytewise, padded to 64:
 *                      u16 name_len, name, u8 dtype code, u8 ndim (<= 8),
 *                      ndim x u64 dims (outermost first), u64 offset (from
 *                      data_offset), u64 size
 *   tensor data        each payload at a 64-aligned offset, padded to 64
 *   footer             u32 CRC32 of every byte before it
 *
 * On-disk dtype codes (codes 0-31 follow ggml where ggml and aprender agree;
 * aprender's own codes win where they clash; 40-47 and 64 are this project's):
 *
 *   code  dtype   origin            code  dtype   origin
 *   0     F32     aprender/ggml     13    Q5_K    ggml
 *   1     F16     aprender/ggml     14    Q6_K    aprender/ggml
 *   2     Q4_0    ggml              15    Q8_K    ggml
 *   3     F64     aprender          30    BF16    aprender/ggml
 *   4     I32     aprender          40    Q5_0    apr (ggml 6 = aprender I8)
 *   5     I64     aprender          41    Q5_1    apr (ggml 7 = aprender U8)
 *   6     I8      aprender          42    Q4_1    apr (ggml 3 = aprender F64)
 *   7     U8      aprender          43    I16     apr
 *   8     Q8_0    ggml              44    U16     apr
 *   9     Q8_1    ggml              45    U32     apr
 *   10    Q2_K    ggml              46    U64     apr
 *   11    Q3_K    ggml              47    BOOL    apr
 *   12    Q4_K    aprender/ggml     64    ROWCAT  apr: parts in metadata "tensor_parts"
 *
 *   48-62: the rest of ggml's block types, in ggml's order (ggml's own
 *   numbers 16-23, 29, 34-42 would clash with aprender's range):
 *   48 IQ2_XXS  49 IQ2_XS  50 IQ3_XXS  51 IQ1_S  52 IQ4_NL  53 IQ3_S
 *   54 IQ2_S    55 IQ4_XS  56 IQ1_M    57 TQ1_0 58 TQ2_0   59 MXFP4
 *   60 NVFP4    61 Q1_0    62 Q2_0
 *
 * Any other code (e.g. aprender's APR-native 128 "AprQ4" / 129 "AprQ8") is
 * rejected as unknown: a reader that does not know a code fails cleanly
 * instead of misreading the payload.
 *
 * Metadata: the canonical aprender keys derived from the model config, the
 * aprender tokenizer keys ("tokenizer.vocabulary", ...), plus "gguf_kv": an
 * exact typed copy of every GGUF-namespace KV in order, so GGUF -> APR -> GGUF
 * gives back identical KVs. See docs/apr-format.md for the encoding.
 */
#include "apr_internal.h"
#include "apr_shard.h"
#include "apr_json.h"
#include "kvjson.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define APR_HDR 64
#define APR_ALIGN 64
#define APR_FOOTER 4
#define APR_MAJOR 2
#define APR_MINOR 0

#define APR_FLAG_LZ4 0x0001
#define APR_FLAG_ZSTD 0x0002
#define APR_FLAG_ENCRYPTED 0x0004
#define APR_FLAG_SIGNED 0x0008
#define APR_FLAG_QUANTIZED 0x0020
#define APR_FLAG_HAS_VOCAB 0x0200
#define APR_FLAG_ROW_MAJOR 0x0400
#define APR_FLAG_COL_MAJOR 0x0800

#define APR_CODE_ROWCAT 64
#define KEY_PROVENANCE "apr.provenance.json"
#define MIN_INDEX_ENTRY 21 /* u16 len + 1-byte name + dtype + ndim + offset + size */

/* ---------------------------------------------------------------- dtype codes */

static const struct { uint8_t code; apr_dtype dt; } dtype_codes[] = {
    {0, APR_DT_F32},   {1, APR_DT_F16},   {2, APR_DT_Q4_0},  {3, APR_DT_F64},   {4, APR_DT_I32},
    {5, APR_DT_I64},   {6, APR_DT_I8},    {7, APR_DT_U8},    {8, APR_DT_Q8_0},  {9, APR_DT_Q8_1},
    {10, APR_DT_Q2_K}, {11, APR_DT_Q3_K}, {12, APR_DT_Q4_K}, {13, APR_DT_Q5_K}, {14, APR_DT_Q6_K},
    {15, APR_DT_Q8_K}, {30, APR_DT_BF16}, {40, APR_DT_Q5_0}, {41, APR_DT_Q5_1}, {42, APR_DT_Q4_1},
    {43, APR_DT_I16},  {44, APR_DT_U16},  {45, APR_DT_U32},  {46, APR_DT_U64},  {47, APR_DT_BOOL},
    {48, APR_DT_IQ2_XXS}, {49, APR_DT_IQ2_XS}, {50, APR_DT_IQ3_XXS}, {51, APR_DT_IQ1_S}, {52, APR_DT_IQ4_NL},
    {53, APR_DT_IQ3_S},   {54, APR_DT_IQ2_S},  {55, APR_DT_IQ4_XS},  {56, APR_DT_IQ1_M}, {57, APR_DT_TQ1_0},
    {58, APR_DT_TQ2_0},   {59, APR_DT_MXFP4},  {60, APR_DT_NVFP4},   {61, APR_DT_Q1_0},  {62, APR_DT_Q2_0},
    {APR_CODE_ROWCAT, APR_DT_ROWCAT},
};
#define N_CODES (sizeof dtype_codes / sizeof *dtype_codes)

static int code_to_dtype(uint8_t code)
{
    for (size_t i = 0; i < N_CODES; i++)
        if (dtype_codes[i].code == code)
            return (int)dtype_codes[i].dt;
    return -1;
}

static int dtype_to_code(apr_dtype dt)
{
    for (size_t i = 0; i < N_CODES; i++)
        if (dtype_codes[i].dt == dt)
            return dtype_codes[i].code;
    return -1;
}

static uint64_t pad64(uint64_t x) { return (x + APR_ALIGN - 1) / APR_ALIGN * APR_ALIGN; }

static uint32_t header_crc(const uint8_t *h)
{
    uint32_t crc = apr_crc32(0, h, 40);
    return apr_crc32(crc, h + 44, APR_HDR - 44);
}

/* ---------------------------------------------------------------- ROWCAT */

/* Checks parts against a {rows, cols} tensor of nbytes; message in err. */
static int check_parts(const char *name, uint64_t rows, uint64_t cols, uint64_t nbytes,
                       const apr_tensor_part *parts, uint32_t n_parts, apr_err *err)
{
    if (n_parts == 0 || n_parts > APR_MAX_PARTS)
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': %u ROWCAT parts (1..%d allowed)", name, n_parts,
                           APR_MAX_PARTS);
    uint64_t sum_rows = 0, sum_bytes = 0;
    for (uint32_t i = 0; i < n_parts; i++) {
        const apr_tensor_part *p = &parts[i];
        if (p->dtype == APR_DT_ROWCAT || !apr_dtype_get(p->dtype))
            return apr_err_set(err, APR_E_FORMAT, "tensor '%s': part %u has an invalid dtype %d", name, i,
                               (int)p->dtype);
        uint64_t rb = apr_dtype_row_bytes(p->dtype, cols);
        if (p->rows == 0 || rb == 0)
            return apr_err_set(err, APR_E_FORMAT, "tensor '%s': part %u (%s, %llu rows) does not fit %llu columns",
                               name, i, apr_dtype_name(p->dtype), (unsigned long long)p->rows,
                               (unsigned long long)cols);
        if (p->rows > UINT64_MAX / rb || p->rows * rb != p->nbytes)
            return apr_err_set(err, APR_E_FORMAT, "tensor '%s': part %u is %llu bytes; %llu rows of %s need %llu",
                               name, i, (unsigned long long)p->nbytes, (unsigned long long)p->rows,
                               apr_dtype_name(p->dtype),
                               p->rows <= UINT64_MAX / rb ? (unsigned long long)(p->rows * rb) : 0ull);
        if (sum_rows + p->rows < sum_rows || sum_bytes + p->nbytes < sum_bytes)
            return apr_err_set(err, APR_E_FORMAT, "tensor '%s': part sizes overflow", name);
        sum_rows += p->rows;
        sum_bytes += p->nbytes;
    }
    if (sum_rows != rows)
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': parts have %llu rows, the tensor has %llu", name,
                           (unsigned long long)sum_rows, (unsigned long long)rows);
    if (sum_bytes != nbytes)
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': parts hold %llu bytes, the tensor has %llu", name,
                           (unsigned long long)sum_bytes, (unsigned long long)nbytes);
    return 0;
}

int apr_model_add_rowcat_tensor(apr_model *m, const char *name, uint64_t cols, const apr_tensor_part *parts,
                                uint32_t n_parts, const void *data, bool take_ownership, apr_err *err)
{
    uint64_t rows = 0, nbytes = 0;
    for (uint32_t i = 0; i < n_parts && i < APR_MAX_PARTS; i++) {
        rows += parts[i].rows;
        nbytes += parts[i].nbytes;
    }
    apr_err e2 = {0};
    if (check_parts(name, rows, cols, nbytes, parts, n_parts, &e2))
        return apr_err_set(err, APR_E_ARG, "%s", e2.msg);
    apr_err append_err = {0};
    apr_tensor *t = apr_model_append_tensor(m, name, &append_err);
    if (!t)
        return apr_err_set(err, append_err.code, "%s", append_err.msg);
    t->dtype = APR_DT_ROWCAT;
    t->ndim = 2;
    t->dims[0] = rows;
    t->dims[1] = cols;
    t->nbytes = nbytes;
    t->data = data;
    t->n_parts = n_parts;
    memcpy(t->parts, parts, n_parts * sizeof *parts);
    if (take_ownership)
        t->owned = (uint8_t *)data;
    m->n_tensors++;
    return 0;
}

/* Expected payload bytes of t (ROWCAT: from its parts). */
static int tensor_expected_bytes(const apr_tensor *t, uint64_t *out, apr_err *err)
{
    if (t->ndim > APR_MAX_DIMS)
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': ndim %u > %d", t->name, t->ndim, APR_MAX_DIMS);
    if (t->dtype == APR_DT_ROWCAT) {
        if (t->ndim != 2)
            return apr_err_set(err, APR_E_FORMAT, "ROWCAT tensor '%s' must be 2-D (is %u-D)", t->name, t->ndim);
        int rc = check_parts(t->name, t->dims[0], t->dims[1], t->nbytes, t->parts, t->n_parts, err);
        if (rc)
            return rc;
        *out = t->nbytes;
        return 0;
    }
    if (!apr_dtype_tensor_bytes(t->dtype, t->ndim, t->dims, out))
        return apr_err_set(err, APR_E_FORMAT, "tensor '%s': dims overflow or do not fit dtype %s", t->name,
                           apr_dtype_name(t->dtype));
    return 0;
}

/* ---------------------------------------------------------------- KV <-> JSON */

/* Values are the APR dialect of the one codec (core/kvjson.c, apr_json.h;
 * docs/apr-format.md, "gguf_kv"): integers beyond +-2^53 as decimal strings,
 * floats printed with 17 significant digits (they read back bit-exactly),
 * NaN and infinities as "0x<hex bits>", bytes that are not valid UTF-8 as
 * {"hex": "..."}. What is APR's own is the entry: [key, "u32" / "array:f32", value]. */

static json_t *enc_value(const apr_kv *kv)
{
    return apr_kvjson_encode(kv, APR_KVJSON_APR, UINT64_MAX, NULL); /* NULL: out of memory */
}

/* "u32", "array:f32", ... */
static void type_string(const apr_kv *kv, char *out, size_t n)
{
    if (kv->type == APR_KV_ARRAY)
        snprintf(out, n, "array:%s", apr_kv_type_name(kv->arr_type));
    else
        snprintf(out, n, "%s", apr_kv_type_name(kv->type));
}

/* type_string's inverse: a type that is not an array, or "array:" and one. */
static int parse_type_name(const char *s, apr_kv_type *t, apr_kv_type *et)
{
    bool arr = strncmp(s, "array:", 6) == 0;
    int k = apr_kvjson_type(arr ? s + 6 : s);
    if (k < 0 || k == APR_KV_ARRAY)
        return -1;
    *t = arr ? APR_KV_ARRAY : (apr_kv_type)k;
    if (arr)
        *et = (apr_kv_type)k;
    return 0;
}

/* ---------------------------------------------------------------- metadata (writer) */

/* GGUF tokenizer arrays also written under aprender's key; gguf_kv then refers
 * to that key ({"ref": ...}) instead of carrying a second copy. */
static const struct { const char *gguf; apr_kv_type et; const char *apr; } tok_arrays[] = {
    {"tokenizer.ggml.tokens", APR_KV_STRING, "tokenizer.vocabulary"},
    {"tokenizer.ggml.merges", APR_KV_STRING, "tokenizer.merges"},
    {"tokenizer.ggml.scores", APR_KV_F32, "tokenizer.scores"},
    {"tokenizer.ggml.token_type", APR_KV_I32, "tokenizer.token_type"},
};
/* GGUF tokenizer scalars mirrored under aprender's keys (small: copied). */
static const struct { const char *gguf; const char *apr; } tok_scalars[] = {
    {"tokenizer.ggml.model", "tokenizer.model"},
    {"tokenizer.ggml.pre", "tokenizer.pre_type"},
    {"tokenizer.ggml.bos_token_id", "tokenizer.bos_token_id"},
    {"tokenizer.ggml.eos_token_id", "tokenizer.eos_token_id"},
    {"tokenizer.ggml.unknown_token_id", "tokenizer.unknown_token_id"},
    {"tokenizer.ggml.padding_token_id", "tokenizer.padding_token_id"},
    {"tokenizer.ggml.add_bos_token", "tokenizer.add_bos_token"},
    {"tokenizer.ggml.add_eos_token", "tokenizer.add_eos_token"},
    {"tokenizer.chat_template", "tokenizer.chat_template"},
};

static int jset(json_t *o, const char *k, json_t *v)
{
    return v ? json_object_set_new(o, k, v) : -1;
}

/* Canonical aprender keys from the derived config. */
static int meta_canonical(const apr_model *m, json_t *root)
{
    int bad = 0;
    const char *arch = apr_kv_get_str(m, "general.architecture");
    const char *name = apr_kv_get_str(m, "general.name");
    if (arch) {
        bad |= jset(root, "model_type", json_string(arch));
    }
    if (name && apr_utf8_valid(name, strlen(name)))
        bad |= jset(root, "name", json_string(name));
    if (arch)
        bad |= jset(root, "architecture", json_string(arch));
    if (m->has_cfg) {
        const apr_arch_config *c = &m->cfg;
        bad |= jset(root, "hidden_size", json_integer(c->hidden));
        bad |= jset(root, "num_layers", json_integer(c->n_layers));
        bad |= jset(root, "num_heads", json_integer(c->n_heads));
        bad |= jset(root, "num_kv_heads", json_integer(c->n_kv_heads));
        bad |= jset(root, "vocab_size", json_integer(c->vocab));
        bad |= jset(root, "intermediate_size", json_integer(c->ffn));
        bad |= jset(root, "max_position_embeddings", json_integer(c->ctx_len));
        bad |= jset(root, "rope_theta", json_real(c->rope_theta));
        bad |= jset(root, "rope_type", json_integer(c->rope_type));
        bad |= jset(root, "rms_norm_eps", json_real(c->rms_eps));
        bad |= jset(root, "head_dim", json_integer(c->head_dim));
        bad |= jset(root, "tied_embeddings", json_boolean(c->tied_embeddings));
    }
    uint64_t params = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        uint64_t n = 0;
        if (apr_dims_count(m->tensors[i].ndim, m->tensors[i].dims, &n))
            params += n;
    }
    bad |= jset(root, "param_count", json_integer((json_int_t)(params > (1ull << 53) ? (1ull << 53) : params)));
    return bad ? -1 : 0;
}

static const apr_kv *typed_kv(const apr_model *m, const char *key, apr_kv_type t, apr_kv_type et)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv || kv->type != t || (t == APR_KV_ARRAY && kv->arr_type != et))
        return NULL;
    return kv;
}

static int meta_tokenizer_and_kvs(const apr_model *m, json_t *root)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof tok_arrays / sizeof *tok_arrays; i++) {
        const apr_kv *kv = typed_kv(m, tok_arrays[i].gguf, APR_KV_ARRAY, tok_arrays[i].et);
        if (kv)
            bad |= jset(root, tok_arrays[i].apr, enc_value(kv));
        if (kv && strcmp(tok_arrays[i].apr, "tokenizer.vocabulary") == 0)
            bad |= jset(root, "tokenizer.vocab_size", json_integer((json_int_t)kv->count));
    }
    for (size_t i = 0; i < sizeof tok_scalars / sizeof *tok_scalars; i++) {
        const apr_kv *kv = apr_model_kv(m, tok_scalars[i].gguf);
        if (kv && kv->type != APR_KV_ARRAY)
            bad |= jset(root, tok_scalars[i].apr, enc_value(kv));
    }
    json_t *list = json_array();
    bad |= list ? 0 : -1;
    for (uint64_t i = 0; list && i < m->n_kvs; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (strcmp(kv->key, KEY_PROVENANCE) == 0)
            continue; /* travels as the "provenance" object */
        char tn[32];
        type_string(kv, tn, sizeof tn);
        const char *ref = NULL;
        for (size_t k = 0; k < sizeof tok_arrays / sizeof *tok_arrays && !ref; k++)
            if (strcmp(kv->key, tok_arrays[k].gguf) == 0 && typed_kv(m, kv->key, APR_KV_ARRAY, tok_arrays[k].et))
                ref = tok_arrays[k].apr;
        /* NULL from either: out of memory (never the other encoding) */
        json_t *val = ref ? json_pack("{s:s}", "ref", ref) : enc_value(kv);
        json_t *e = val ? json_pack("[s,s,o]", kv->key, tn, val) : NULL;
        if (!e || json_array_append_new(list, e))
            bad = -1;
    }
    bad |= jset(root, "gguf_kv", list);
    return bad ? -1 : 0;
}

static int meta_parts(const apr_model *m, json_t *root)
{
    json_t *parts = NULL;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (t->dtype != APR_DT_ROWCAT)
            continue;
        if (!parts && !(parts = json_object()))
            return -1;
        json_t *list = json_array();
        for (uint32_t p = 0; list && p < t->n_parts; p++)
            json_array_append_new(list, json_pack("{s:s,s:I,s:I}", "dtype", apr_dtype_name(t->parts[p].dtype),
                                                  "rows", (json_int_t)t->parts[p].rows, "bytes",
                                                  (json_int_t)t->parts[p].nbytes));
        if (!list || json_array_size(list) != t->n_parts || json_object_set_new(parts, t->name, list)) {
            json_decref(parts);
            return -1;
        }
    }
    return parts ? jset(root, "tensor_parts", parts) : 0;
}

/* The whole metadata JSON text (malloc'd). */
static char *build_metadata(const apr_model *m, apr_err *err)
{
    json_t *root = json_object();
    if (!root) {
        apr_err_set(err, APR_E_NOMEM, "out of memory");
        return NULL;
    }
    if (meta_canonical(m, root) || meta_tokenizer_and_kvs(m, root) || meta_parts(m, root)) {
        json_decref(root);
        apr_err_set(err, APR_E_NOMEM, "APR: cannot encode the metadata as JSON (out of memory?)");
        return NULL;
    }
    const char *prov = m->provenance_json ? m->provenance_json : apr_kv_get_str(m, KEY_PROVENANCE);
    if (prov) {
        json_error_t je;
        json_t *p = apr_json_loads(prov, JSON_DECODE_ANY, &je);
        if (!p) {
            json_decref(root);
            if (apr_json_parse_oom())
                apr_err_set(err, APR_E_NOMEM, "out of memory");
            else
                apr_err_set(err, APR_E_ARG, "APR: the model's provenance is not valid JSON: %s", je.text);
            return NULL;
        }
        if (json_object_set_new(root, "provenance", p)) {
            json_decref(root);
            apr_err_set(err, APR_E_NOMEM, "out of memory");
            return NULL;
        }
    }
    /* 17 significant digits: every f32/f64 reads back bit-exactly */
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!s)
        apr_err_set(err, APR_E_NOMEM, "out of memory dumping the metadata JSON");
    return s;
}

/* ---------------------------------------------------------------- writer */

static int check_tensor_for_apr(const apr_tensor *t, apr_err *err)
{
    size_t nl = strlen(t->name);
    if (nl == 0 || nl > UINT16_MAX)
        return apr_err_set(err, APR_E_ARG, "tensor '%.64s': name length %zu (APR allows 1..65535)", t->name, nl);
    if (!apr_utf8_valid(t->name, nl))
        return apr_err_set(err, APR_E_ARG, "tensor name '%.64s' is not valid UTF-8", t->name);
    if (dtype_to_code(t->dtype) < 0)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': APR has no code for dtype %s", t->name,
                           apr_dtype_name(t->dtype));
    uint64_t nb;
    apr_err e2 = {0};
    if (tensor_expected_bytes(t, &nb, &e2))
        return apr_err_set(err, APR_E_ARG, "%s", e2.msg);
    if (nb != t->nbytes)
        return apr_err_set(err, APR_E_ARG, "tensor '%s': %llu bytes, its shape needs %llu", t->name,
                           (unsigned long long)t->nbytes, (unsigned long long)nb);
    return 0;
}

static bool tensor_quantized(const apr_tensor *t)
{
    if (t->dtype == APR_DT_ROWCAT) {
        for (uint32_t i = 0; i < t->n_parts; i++)
            if (apr_dtype_get(t->parts[i].dtype) && apr_dtype_get(t->parts[i].dtype)->quantized)
                return true;
        return false;
    }
    const apr_dtype_info *d = apr_dtype_get(t->dtype);
    return d && d->quantized;
}

int apr_apr_write(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err)
{
    if (o && o->shard_max_bytes)
        return apr_apr_write_sharded(m, path, o, err);
    apr_outfile f;
    int rc = apr_apr_write_file(m, path, o, NULL, &f, err);
    return rc ? rc : apr_outfile_commit(&f, err);
}

int apr_apr_write_file(const apr_model *m, const char *path, const apr_write_opts *o, apr_sha256_ctx *shard_sha,
                       apr_outfile *out, apr_err *err)
{
    const bool shard = shard_sha != NULL;
    int rc;
    if (m->n_tensors > UINT32_MAX)
        return apr_err_set(err, APR_E_ARG, "APR holds at most 2^32-1 tensors");
    bool quantized = false;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        if ((rc = check_tensor_for_apr(&m->tensors[i], err)) || (rc = apr_stream_check(&m->tensors[i], o, err)))
            return rc;
        quantized |= tensor_quantized(&m->tensors[i]);
    }
    uint64_t *order = apr_tensor_order_by_name(m);
    if (!order)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 1; i < m->n_tensors; i++) {
        if (strcmp(m->tensors[order[i - 1]].name, m->tensors[order[i]].name) == 0) {
            rc = apr_err_set(err, APR_E_ARG, "duplicate tensor name '%s'", m->tensors[order[i]].name);
            free(order);
            return rc;
        }
    }
    char *meta = build_metadata(m, err);
    if (!meta) {
        free(order);
        return err ? err->code : APR_E_NOMEM;
    }
    size_t meta_len = strlen(meta);
    if (meta_len > UINT32_MAX) {
        free(meta);
        free(order);
        return apr_err_set(err, APR_E_ARG, "APR metadata is %zu bytes (the header allows < 4 GiB)", meta_len);
    }

    /* Data in the model's tensor order (so a reader that follows offsets gets
     * the original order back); index sorted by name. */
    uint64_t *offs = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *offs);
    apr_buf idx = {0};
    if (!offs) {
        free(meta);
        free(order);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    uint64_t off = 0, total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        offs[i] = off;
        off = pad64(off + m->tensors[i].nbytes);
        total += m->tensors[i].nbytes;
    }
    for (uint64_t k = 0; k < m->n_tensors; k++) {
        const apr_tensor *t = &m->tensors[order[k]];
        size_t nl = strlen(t->name);
        apr_buf_u16(&idx, (uint16_t)nl);
        apr_buf_put(&idx, t->name, nl);
        apr_buf_u8(&idx, (uint8_t)dtype_to_code(t->dtype));
        apr_buf_u8(&idx, (uint8_t)t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            apr_buf_u64(&idx, t->dims[d]);
        apr_buf_u64(&idx, offs[order[k]]);
        apr_buf_u64(&idx, t->nbytes);
    }
    free(order);
    free(offs);
    if (idx.oom) {
        free(meta);
        apr_buf_free(&idx);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    uint64_t index_off = pad64(APR_HDR + meta_len);
    uint64_t data_off = pad64(index_off + idx.len);

    uint8_t h[APR_HDR] = {0};
    memcpy(h, "APR\0", 4);
    h[4] = APR_MAJOR;
    h[5] = APR_MINOR;
    uint16_t flags = APR_FLAG_ROW_MAJOR | (quantized ? APR_FLAG_QUANTIZED : 0) |
                     (apr_model_kv(m, "tokenizer.ggml.tokens") ? APR_FLAG_HAS_VOCAB : 0) |
                     (shard ? APR_FLAG_SHARDED : 0);
    apr_buf hb = {0};
    apr_buf_u16(&hb, flags);
    apr_buf_u32(&hb, (uint32_t)m->n_tensors);
    apr_buf_u64(&hb, APR_HDR);
    apr_buf_u32(&hb, (uint32_t)meta_len);
    apr_buf_u64(&hb, index_off);
    apr_buf_u64(&hb, data_off);
    if (hb.oom) {
        free(meta);
        apr_buf_free(&idx);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    memcpy(h + 6, hb.p, hb.len); /* bytes 6..40 */
    apr_buf_free(&hb);
    uint32_t hcrc = header_crc(h);
    for (int i = 0; i < 4; i++)
        h[40 + i] = (uint8_t)(hcrc >> (8 * i));

    /* Header, metadata (with the record's placeholders) and index first,
     * then the payloads in one pass, CRC'd as they go (body_crc); sealing
     * rewrites the metadata in place, so the footer is the CRC of the final
     * prefix combined with the payloads' CRC. */
    static const uint8_t zeros[APR_ALIGN];
    const size_t meta_pad = (size_t)(index_off - APR_HDR - meta_len), idx_pad = (size_t)(data_off - index_off - idx.len);
    apr_outfile f;
    apr_stream st = {0};
    uint32_t body_crc = 0;
    uint64_t done = 0;
    if ((rc = apr_outfile_open(&f, path, err))) {
        free(meta);
        apr_buf_free(&idx);
        return rc;
    }
    f.sha = shard_sha;
    rc = apr_outfile_write(&f, h, sizeof h, err);
    if (!rc) rc = apr_outfile_write(&f, meta, meta_len, err);
    if (!rc) rc = apr_outfile_write(&f, zeros, meta_pad, err);
    if (!rc) rc = apr_outfile_write(&f, idx.p, idx.len, err);
    if (!rc) rc = apr_outfile_write(&f, zeros, idx_pad, err);
    for (uint64_t i = 0; i < m->n_tensors && !rc; i++) {
        rc = apr_stream_payload(&st, &f, m, i, o, &body_crc, err);
        size_t pad = (size_t)((APR_ALIGN - f.written % APR_ALIGN) % APR_ALIGN); /* after every tensor, the last too */
        if (!rc && pad) {
            body_crc = apr_crc32(body_crc, zeros, pad);
            rc = apr_outfile_write(&f, zeros, pad, err);
        }
        done += m->tensors[i].nbytes;
        apr_progress(o && o->progress, "writing APR", done, total);
    }
    apr_stream_free(&st);
    if (!rc && !shard) /* a shard carries no record: the manifest does */
        rc = apr_stream_seal(&f, o, (uint8_t *)meta, meta_len, APR_HDR, err);
    if (!rc) {
        uint32_t crc = apr_crc32(0, h, sizeof h);
        crc = apr_crc32(crc, meta, meta_len);
        crc = apr_crc32(crc, zeros, meta_pad);
        crc = apr_crc32(crc, idx.p, idx.len);
        crc = apr_crc32(crc, zeros, idx_pad);
        crc = (uint32_t)crc32_combine(crc, body_crc, (z_off_t)(f.written - data_off));
        uint8_t foot[4];
        for (int i = 0; i < 4; i++)
            foot[i] = (uint8_t)(crc >> (8 * i));
        rc = apr_outfile_write(&f, foot, 4, err);
    }
    free(meta);
    apr_buf_free(&idx);
    if (rc) {
        apr_outfile_abort(&f);
        return rc;
    }
    *out = f;
    return 0;
}

/* ---------------------------------------------------------------- reader */

static int fmt_err(apr_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmt_err(apr_err *err, int code, const char *fmt, ...)
{
    if (err) {
        char tmp[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        apr_err_set(err, code, "APR: %s", tmp);
    }
    return code;
}

typedef struct apr_hdr {
    uint16_t flags;
    uint32_t n_tensors;
    uint64_t meta_off, index_off, data_off;
    uint32_t meta_size;
    uint8_t minor;
} apr_hdr;

static int parse_header(const uint8_t *buf, uint64_t size, bool check_footer, apr_hdr *h, apr_err *err)
{
    if (size < 4)
        return fmt_err(err, APR_E_FORMAT, "truncated file: %llu bytes, not even a magic", (unsigned long long)size);
    if (memcmp(buf, "APR\0", 4) != 0) {
        if (size >= 4 && memcmp(buf, "APRN", 4) == 0)
            return fmt_err(err, APR_E_UNSUPPORTED, "APR v1 files ('APRN') are not supported (only v2)");
        return fmt_err(err, APR_E_FORMAT, "bad magic (expected 'APR\\0')");
    }
    if (size < APR_HDR)
        return fmt_err(err, APR_E_FORMAT, "truncated file: the header needs %d bytes, the file has %llu", APR_HDR,
                       (unsigned long long)size);
    if (buf[4] != APR_MAJOR)
        return fmt_err(err, APR_E_UNSUPPORTED, "unsupported APR major version %u (only 2)", buf[4]);
    uint32_t stored = apr_ld32(buf + 40), crc = header_crc(buf);
    if (stored != crc)
        return fmt_err(err, APR_E_FORMAT, "header CRC32 mismatch (stored %08x, computed %08x)", stored, crc);
    h->minor = buf[5];
    h->flags = apr_ld16(buf + 6);
    h->n_tensors = apr_ld32(buf + 8);
    h->meta_off = apr_ld64(buf + 12);
    h->meta_size = apr_ld32(buf + 20);
    h->index_off = apr_ld64(buf + 24);
    h->data_off = apr_ld64(buf + 32);
    if (h->flags & APR_FLAG_COL_MAJOR)
        return fmt_err(err, APR_E_UNSUPPORTED, "column-major layout flag (0x800) set: only row-major APR is read");
    static const struct { uint16_t bit; const char *what; } unsupported[] = {
        {APR_FLAG_LZ4, "LZ4-compressed"}, {APR_FLAG_ZSTD, "zstd-compressed"}, {APR_FLAG_ENCRYPTED, "encrypted"},
        {APR_FLAG_SIGNED, "signed"}};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
        if (h->flags & unsupported[i].bit)
            return fmt_err(err, APR_E_UNSUPPORTED, "%s APR files (flag 0x%x) are not supported", unsupported[i].what,
                           unsupported[i].bit);
    if (size < APR_HDR + APR_FOOTER)
        return fmt_err(err, APR_E_FORMAT, "truncated file: no room for the CRC32 footer (%llu bytes)",
                       (unsigned long long)size);
    uint64_t end = size - APR_FOOTER; /* sections live in [64, end) */
    if (h->meta_off < APR_HDR || h->meta_off > end || h->meta_size > end - h->meta_off)
        return fmt_err(err, APR_E_FORMAT, "metadata [%llu, +%u) is outside the file (%llu bytes before the footer)",
                       (unsigned long long)h->meta_off, h->meta_size, (unsigned long long)end);
    if (h->index_off < h->meta_off + h->meta_size || h->index_off > end || h->index_off % APR_ALIGN)
        return fmt_err(err, APR_E_FORMAT,
                       "tensor index offset %llu is not 64-aligned, overlaps the metadata or lies past the end",
                       (unsigned long long)h->index_off);
    if (h->data_off < h->index_off || h->data_off > end || h->data_off % APR_ALIGN)
        return fmt_err(err, APR_E_FORMAT,
                       "data offset %llu is not 64-aligned, precedes the index or lies past the end",
                       (unsigned long long)h->data_off);
    if (h->n_tensors > (h->data_off - h->index_off) / MIN_INDEX_ENTRY)
        return fmt_err(err, APR_E_FORMAT, "tensor_count %u cannot fit in the %llu-byte index", h->n_tensors,
                       (unsigned long long)(h->data_off - h->index_off));
    if (check_footer) {
        uint32_t f = apr_ld32(buf + end), c = apr_crc32(0, buf, (size_t)end);
        if (f != c)
            return fmt_err(err, APR_E_FORMAT, "footer CRC32 mismatch (stored %08x, computed %08x): the file is corrupt",
                           f, c);
    }
    return 0;
}

typedef struct ix_range { uint64_t start, end, tensor; } ix_range;
static int cmp_ix_range(const void *a, const void *b)
{
    const ix_range *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->tensor < y->tensor ? -1 : x->tensor > y->tensor;
}

/* Parses the index into m->tensors (index order); positions checked later. */
static int parse_index(const uint8_t *buf, const apr_hdr *h, apr_model *m, apr_err *err)
{
    uint64_t pos = h->index_off, end = h->data_off;
    for (uint32_t i = 0; i < h->n_tensors; i++) {
        if (end - pos < 2)
            return fmt_err(err, APR_E_FORMAT, "truncated tensor index: entry %u", i);
        uint16_t nl = apr_ld16(buf + pos);
        pos += 2;
        if (nl == 0)
            return fmt_err(err, APR_E_FORMAT, "tensor index entry %u has an empty name", i);
        if (end - pos < (uint64_t)nl + 2)
            return fmt_err(err, APR_E_FORMAT, "truncated tensor index: entry %u name (%u bytes)", i, nl);
        const char *name = (const char *)buf + pos;
        if (memchr(name, 0, nl) || !apr_utf8_valid(name, nl))
            return fmt_err(err, APR_E_FORMAT, "tensor index entry %u: name is not valid UTF-8 (or contains NUL)", i);
        apr_tensor *t = &m->tensors[i];
        if (!(t->name = malloc((size_t)nl + 1)))
            return fmt_err(err, APR_E_NOMEM, "out of memory");
        memcpy(t->name, name, nl);
        t->name[nl] = 0;
        m->n_tensors = i + 1;
        pos += nl;
        uint8_t code = buf[pos], ndim = buf[pos + 1];
        pos += 2;
        int dt = code_to_dtype(code);
        if (dt < 0)
            return fmt_err(err, APR_E_UNSUPPORTED, "tensor '%s': unknown dtype code %u", t->name, code);
        if (ndim > APR_MAX_DIMS)
            return fmt_err(err, APR_E_FORMAT, "tensor '%s': ndim %u > %d", t->name, ndim, APR_MAX_DIMS);
        if (end - pos < (uint64_t)ndim * 8 + 16)
            return fmt_err(err, APR_E_FORMAT, "truncated tensor index: entry '%s'", t->name);
        t->dtype = (apr_dtype)dt;
        t->ndim = ndim;
        for (uint32_t d = 0; d < ndim; d++, pos += 8)
            t->dims[d] = apr_ld64(buf + pos);
        t->file_offset = apr_ld64(buf + pos); /* relative for now */
        t->nbytes = apr_ld64(buf + pos + 8);
        pos += 16;
        if (i > 0) {
            int c = strcmp(m->tensors[i - 1].name, t->name);
            if (c == 0)
                return fmt_err(err, APR_E_FORMAT, "duplicate tensor name '%s' in the index", t->name);
            if (c > 0)
                return fmt_err(err, APR_E_FORMAT,
                               "tensor index is not sorted by name ('%s' before '%s'); APR v2 requires sorted entries",
                               m->tensors[i - 1].name, t->name);
        }
    }
    return 0;
}

/* ROWCAT tensors take their parts from metadata "tensor_parts". */
static int apply_parts(apr_model *m, const json_t *root, apr_err *err)
{
    const json_t *tp = json_object_get(root, "tensor_parts");
    if (tp && !json_is_object(tp))
        return fmt_err(err, APR_E_FORMAT, "metadata 'tensor_parts' is not an object");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)tp, key, val) {
        const apr_tensor *t = apr_model_tensor(m, key);
        if (!t || t->dtype != APR_DT_ROWCAT)
            return fmt_err(err, APR_E_FORMAT, "metadata 'tensor_parts' names '%s', which is not a ROWCAT tensor", key);
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        apr_tensor *t = &m->tensors[i];
        if (t->dtype != APR_DT_ROWCAT)
            continue;
        const json_t *list = tp ? json_object_get(tp, t->name) : NULL;
        if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > APR_MAX_PARTS)
            return fmt_err(err, APR_E_FORMAT, "ROWCAT tensor '%s' has no valid entry in metadata 'tensor_parts'",
                           t->name);
        t->n_parts = (uint32_t)json_array_size(list);
        for (uint32_t p = 0; p < t->n_parts; p++) {
            const json_t *e = json_array_get(list, p);
            const json_t *jd = json_object_get(e, "dtype"), *jr = json_object_get(e, "rows"),
                         *jb = json_object_get(e, "bytes");
            int dt = json_is_string(jd) ? apr_dtype_from_name(json_string_value(jd)) : -1;
            if (dt < 0 || dt == APR_DT_ROWCAT || !json_is_integer(jr) || !json_is_integer(jb) ||
                json_integer_value(jr) <= 0 || json_integer_value(jb) <= 0)
                return fmt_err(err, APR_E_FORMAT, "ROWCAT tensor '%s': part %u is malformed", t->name, p);
            t->parts[p].dtype = (apr_dtype)dt;
            t->parts[p].rows = (uint64_t)json_integer_value(jr);
            t->parts[p].nbytes = (uint64_t)json_integer_value(jb);
        }
    }
    return 0;
}

/* Checks every tensor's size and data range, sets data pointers, then puts the
 * tensors in data-offset order (the order the writer had them in). */
static int place_tensors(const uint8_t *buf, uint64_t size, const apr_hdr *h, apr_model *m, apr_err *err)
{
    uint64_t n = m->n_tensors, end = size - APR_FOOTER, room = end - h->data_off;
    ix_range *rg = malloc((n ? n : 1) * sizeof *rg);
    if (!rg)
        return fmt_err(err, APR_E_NOMEM, "out of memory");
    int rc = 0;
    for (uint64_t i = 0; i < n && !rc; i++) {
        apr_tensor *t = &m->tensors[i];
        uint64_t rel = t->file_offset, expect = 0;
        apr_err e2 = {0};
        if (tensor_expected_bytes(t, &expect, &e2))
            rc = fmt_err(err, APR_E_FORMAT, "%s", e2.msg);
        else if (expect != t->nbytes)
            rc = fmt_err(err, APR_E_FORMAT, "tensor '%s': index size %llu, its %s shape needs %llu", t->name,
                         (unsigned long long)t->nbytes, apr_dtype_name(t->dtype), (unsigned long long)expect);
        else if (rel % APR_ALIGN)
            rc = fmt_err(err, APR_E_FORMAT, "tensor '%s': offset %llu is not 64-byte aligned", t->name,
                         (unsigned long long)rel);
        else if (rel > room || t->nbytes > room - rel)
            rc = fmt_err(err, APR_E_FORMAT, "tensor '%s': data [%llu, +%llu) runs past the end of the data section",
                         t->name, (unsigned long long)rel, (unsigned long long)t->nbytes);
        if (rc)
            break;
        t->file_offset = h->data_off + rel;
        t->data = buf + t->file_offset;
        rg[i] = (ix_range){rel, rel + t->nbytes, i};
    }
    if (!rc) {
        qsort(rg, n, sizeof *rg, cmp_ix_range);
        uint64_t last_end = n ? rg[0].end : 0;
        for (uint64_t i = 1; i < n && !rc; i++) {
            if (rg[i].start < rg[i - 1].end)
                rc = fmt_err(err, APR_E_FORMAT, "tensors '%s' and '%s' have overlapping data",
                             m->tensors[rg[i - 1].tensor].name, m->tensors[rg[i].tensor].name);
            if (rg[i].end > last_end)
                last_end = rg[i].end;
        }
        /* Every payload is padded to 64, the last one too, so a file cut
         * inside that padding is detected even when the footer CRC is skipped. */
        if (!rc && pad64(last_end) > room)
            rc = fmt_err(err, APR_E_FORMAT,
                         "truncated file: the data section needs %llu bytes (last tensor padded to 64), %llu are "
                         "left before the footer",
                         (unsigned long long)pad64(last_end), (unsigned long long)room);
    }
    if (!rc) {
        apr_tensor *sorted = malloc((n ? n : 1) * sizeof *sorted);
        if (!sorted) {
            rc = fmt_err(err, APR_E_NOMEM, "out of memory");
        } else {
            for (uint64_t i = 0; i < n; i++)
                sorted[i] = m->tensors[rg[i].tensor];
            free(m->tensors);
            m->tensors = sorted;
        }
    }
    free(rg);
    return rc;
}

/* Takes ownership of kv's contents (appends it to m->kvs). */
static int kv_push(apr_model *m, apr_kv *kv)
{
    apr_kv *nk = realloc(m->kvs, (m->n_kvs + 1) * sizeof *nk);
    if (!nk) {
        apr_kv_free(kv);
        return APR_E_NOMEM;
    }
    m->kvs = nk;
    m->kvs[m->n_kvs++] = *kv;
    memset(kv, 0, sizeof *kv);
    return 0;
}

/* The KVs of gguf_kv, in file order, after those m has. Duplicates are
 * looked for once at the end, over a sorted index (a check per key against
 * all before it would be quadratic in a hostile file's key count). */
static int kvs_from_gguf_kv(apr_model *m, const json_t *root, const json_t *list, apr_err *err)
{
    if (!json_is_array(list))
        return fmt_err(err, APR_E_FORMAT, "metadata 'gguf_kv' is not an array");
    size_t n = json_array_size(list);
    if (n > (SIZE_MAX / sizeof *m->kvs) - m->n_kvs - 1)
        return fmt_err(err, APR_E_FORMAT, "metadata 'gguf_kv': %zu entries", n);
    apr_kv *nk = realloc(m->kvs, (m->n_kvs + n + 1) * sizeof *nk);
    if (!nk)
        return fmt_err(err, APR_E_NOMEM, "out of memory");
    m->kvs = nk;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(list, i);
        const json_t *jk = json_array_get(e, 0), *jt = json_array_get(e, 1), *jv = json_array_get(e, 2);
        if (!json_is_array(e) || json_array_size(e) != 3 || !json_is_string(jk) || !json_is_string(jt) ||
            json_string_length(jk) == 0 || strlen(json_string_value(jk)) != json_string_length(jk))
            return fmt_err(err, APR_E_FORMAT, "metadata 'gguf_kv' entry %zu is not [key, type, value]", i);
        const char *key = json_string_value(jk);
        apr_kv kv = {0};
        if (parse_type_name(json_string_value(jt), &kv.type, &kv.arr_type))
            return fmt_err(err, APR_E_FORMAT, "gguf_kv '%s': unknown type '%s'", key, json_string_value(jt));
        const json_t *ref = json_is_object(jv) ? json_object_get(jv, "ref") : NULL;
        if (ref) {
            if (!json_is_string(ref) || !(jv = json_object_get(root, json_string_value(ref))))
                return fmt_err(err, APR_E_FORMAT, "gguf_kv '%s': reference to a missing metadata key", key);
        }
        if (!(kv.key = strdup(key)))
            return fmt_err(err, APR_E_NOMEM, "out of memory");
        char what[300];
        snprintf(what, sizeof what, "gguf_kv '%.200s' (%.40s)", key, json_string_value(jt));
        apr_err e2 = {0};
        int rc = apr_kvjson_decode(jv, &kv, APR_KVJSON_APR, what, &e2);
        if (rc) {
            apr_kv_free(&kv);
            return fmt_err(err, rc, "%s", e2.msg);
        }
        m->kvs[m->n_kvs++] = kv; /* room reserved above */
    }
    apr_err e2 = {0};
    int rc = apr_check_unique_names(m->kvs, sizeof *m->kvs, m->n_kvs, APR_E_FORMAT, "gguf_kv: duplicate key", &e2);
    return rc ? fmt_err(err, rc, "%s", e2.msg) : 0;
}

/* Files without gguf_kv (written by aprender): map the canonical keys to
 * llama.cpp's KV names and types. */
static int kvs_from_canonical(apr_model *m, const json_t *root, apr_err *err)
{
    const json_t *ja = json_object_get(root, "architecture");
    if (!json_is_string(ja))
        ja = json_object_get(root, "model_type");
    const char *arch = json_is_string(ja) ? json_string_value(ja) : NULL;
    int rc = 0;
    if (arch && strlen(arch) < 64)
        rc |= apr_model_set_kv_str(m, "general.architecture", arch);
    const json_t *jn = json_object_get(root, "name");
    if (json_is_string(jn))
        rc |= apr_model_set_kv_str(m, "general.name", json_string_value(jn));
    static const struct { const char *json; const char *suffix; apr_kv_type t; } hp[] = {
        {"max_position_embeddings", "context_length", APR_KV_U32},
        {"hidden_size", "embedding_length", APR_KV_U32},
        {"num_layers", "block_count", APR_KV_U32},
        {"intermediate_size", "feed_forward_length", APR_KV_U32},
        {"num_heads", "attention.head_count", APR_KV_U32},
        {"num_kv_heads", "attention.head_count_kv", APR_KV_U32},
        {"head_dim", "attention.key_length", APR_KV_U32},
        {"head_dim", "attention.value_length", APR_KV_U32},
        {"head_dim", "rope.dimension_count", APR_KV_U32},
        {"rope_theta", "rope.freq_base", APR_KV_F32},
        {"rms_norm_eps", "attention.layer_norm_rms_epsilon", APR_KV_F32},
        {"vocab_size", "vocab_size", APR_KV_U32},
    };
    for (size_t i = 0; arch && i < sizeof hp / sizeof *hp; i++) {
        const json_t *v = json_object_get(root, hp[i].json);
        if (!v || json_is_null(v))
            continue;
        char key[160];
        snprintf(key, sizeof key, "%s.%s", arch, hp[i].suffix);
        apr_kv kv = {.key = key, .type = hp[i].t};
        char what[120];
        snprintf(what, sizeof what, "metadata '%s' (%s)", hp[i].json, apr_kv_type_name(hp[i].t));
        apr_err e2 = {0};
        int drc = apr_kvjson_decode(v, &kv, APR_KVJSON_APR, what, &e2);
        if (drc)
            return fmt_err(err, drc, "%s", e2.msg);
        rc |= apr_model_set_kv(m, &kv);
    }
    /* tokenizer: aprender's keys -> tokenizer.ggml.* */
    static const struct { const char *json; const char *gguf; apr_kv_type t, et; } tk[] = {
        {"tokenizer.model", "tokenizer.ggml.model", APR_KV_STRING, 0},
        {"tokenizer.pre_type", "tokenizer.ggml.pre", APR_KV_STRING, 0},
        {"tokenizer.vocabulary", "tokenizer.ggml.tokens", APR_KV_ARRAY, APR_KV_STRING},
        {"tokenizer.scores", "tokenizer.ggml.scores", APR_KV_ARRAY, APR_KV_F32},
        {"tokenizer.token_type", "tokenizer.ggml.token_type", APR_KV_ARRAY, APR_KV_I32},
        {"tokenizer.merges", "tokenizer.ggml.merges", APR_KV_ARRAY, APR_KV_STRING},
        {"tokenizer.bos_token_id", "tokenizer.ggml.bos_token_id", APR_KV_U32, 0},
        {"tokenizer.eos_token_id", "tokenizer.ggml.eos_token_id", APR_KV_U32, 0},
        {"tokenizer.unknown_token_id", "tokenizer.ggml.unknown_token_id", APR_KV_U32, 0},
        {"tokenizer.padding_token_id", "tokenizer.ggml.padding_token_id", APR_KV_U32, 0},
        {"tokenizer.add_bos_token", "tokenizer.ggml.add_bos_token", APR_KV_BOOL, 0},
        {"tokenizer.add_eos_token", "tokenizer.ggml.add_eos_token", APR_KV_BOOL, 0},
        {"tokenizer.chat_template", "tokenizer.chat_template", APR_KV_STRING, 0},
    };
    for (size_t i = 0; i < sizeof tk / sizeof *tk; i++) {
        const json_t *v = json_object_get(root, tk[i].json);
        if (!v || json_is_null(v))
            continue;
        apr_kv kv = {.type = tk[i].t, .arr_type = tk[i].et};
        char what[120];
        snprintf(what, sizeof what, "metadata '%s' (%s%s)", tk[i].json, tk[i].t == APR_KV_ARRAY ? "array:" : "",
                 apr_kv_type_name(tk[i].t == APR_KV_ARRAY ? tk[i].et : tk[i].t));
        apr_err e2 = {0};
        int drc = (kv.key = strdup(tk[i].gguf)) ? apr_kvjson_decode(v, &kv, APR_KVJSON_APR, what, &e2)
                                                : apr_err_set(&e2, APR_E_NOMEM, "metadata '%s': out of memory", tk[i].json);
        if (drc) {
            apr_kv_free(&kv);
            return fmt_err(err, drc, "%s", e2.msg);
        }
        /* aprender records byte-level BPE as "bpe"; llama.cpp calls it "gpt2" */
        if (kv.type == APR_KV_STRING && strcmp(kv.key, "tokenizer.ggml.model") == 0 && strcmp(kv.str.s, "bpe") == 0) {
            free(kv.str.s);
            kv.str.s = strdup("gpt2");
            kv.str.len = 4;
            if (!kv.str.s) {
                apr_kv_free(&kv);
                return fmt_err(err, APR_E_NOMEM, "out of memory");
            }
        }
        if (kv_push(m, &kv))
            return fmt_err(err, APR_E_NOMEM, "out of memory");
    }
    return rc ? fmt_err(err, APR_E_NOMEM, "out of memory") : 0;
}

static int parse_metadata(const uint8_t *buf, const apr_hdr *h, apr_model *m, json_t **root_out, apr_err *err)
{
    const char *text = (const char *)buf + h->meta_off;
    if (!apr_utf8_valid(text, h->meta_size))
        return fmt_err(err, APR_E_FORMAT, "metadata is not valid UTF-8");
    json_error_t je;
    json_t *root = apr_json_loadb(text, h->meta_size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root && apr_json_parse_oom())
        return fmt_err(err, APR_E_NOMEM, "metadata: out of memory");
    if (!root)
        return fmt_err(err, APR_E_FORMAT, "metadata is not valid JSON: %s (at byte %d)", je.text, je.position);
    *root_out = root;
    if (!json_is_object(root))
        return fmt_err(err, APR_E_FORMAT, "metadata JSON is not an object");
    if (!(m->raw_meta_json = malloc((size_t)h->meta_size + 1)))
        return fmt_err(err, APR_E_NOMEM, "out of memory");
    memcpy(m->raw_meta_json, text, h->meta_size);
    m->raw_meta_json[h->meta_size] = 0;
    const json_t *prov = json_object_get(root, "provenance");
    if (prov && !json_is_null(prov) && !(m->provenance_json = json_dumps(prov, JSON_COMPACT | JSON_ENCODE_ANY |
                                                                                  JSON_REAL_PRECISION(17))))
        return fmt_err(err, APR_E_NOMEM, "out of memory");
    const json_t *list = json_object_get(root, "gguf_kv");
    return list ? kvs_from_gguf_kv(m, root, list, err) : kvs_from_canonical(m, root, err);
}

int apr_apr_parse(apr_model **out, const uint8_t *buf, uint64_t size, bool check_footer, apr_err *err)
{
    *out = NULL;
    apr_hdr h = {0};
    int rc = parse_header(buf, size, check_footer, &h, err);
    if (rc)
        return rc;
    apr_model *m = apr_model_new(APR_FMT_APR);
    json_t *root = NULL;
    if (!m || !(m->tensors = calloc(h.n_tensors ? h.n_tensors : 1, sizeof *m->tensors))) {
        rc = fmt_err(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    m->version = APR_MAJOR;
    m->alignment = APR_ALIGN;
    if ((rc = parse_index(buf, &h, m, err)) || (rc = parse_metadata(buf, &h, m, &root, err)) ||
        (rc = apply_parts(m, root, err)) || (rc = place_tensors(buf, size, &h, m, err)))
        goto done;
    /* Not fatal: an APR file without a usable llama/qwen2 config is still valid. */
    apr_model_derive(m, NULL);
done:
    json_decref(root);
    if (rc) {
        apr_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int apr_apr_open(apr_model **out, const char *path, const apr_open_opts *opts, apr_err *err)
{
    bool check_footer = !(opts && opts->skip_footer_crc);
    if (apr_apr_is_manifest_path(path))
        return apr_apr_open_manifest(out, path, check_footer, err);
    int rc = apr_open_mapped(out, path, APR_FMT_APR, check_footer, err);
    if (rc || !apr_apr_is_shard(*out))
        return rc;
    /* one shard of a set: the whole model comes from its manifest */
    apr_model_free(*out);
    *out = NULL;
    return apr_apr_open_shard(out, path, check_footer, err);
}
