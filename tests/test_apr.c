/* test_apr.c - APR v2 reader/writer: the fixture through APR and back, an
 * independent checker of the APR v2 rules, typed KV roundtrip, ROWCAT,
 * provenance, aprender-style metadata, and hostile inputs. */
#include "test_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define FIXTURE "fixtures/stories260K-f32.gguf"

static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t ld32(const uint8_t *p) { return (uint32_t)ld16(p) | (uint32_t)ld16(p + 2) << 16; }
static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }
static void st32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void st64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint64_t up64(uint64_t x) { return (x + 63) / 64 * 64; }

/* ---------------------------------------------------------------- independent checker */

/* Bytes per element block for the codes this test writes: {code, block elems, block bytes}. */
static const uint32_t code_sizes[][3] = {{0, 1, 4}, {1, 1, 2}, {30, 1, 2}, {8, 32, 34}, {12, 256, 144},
                                         {14, 256, 210}, {6, 1, 1}, {7, 1, 1}, {4, 1, 4}, {5, 1, 8}};

/* Checks every APR v2 rule on the raw bytes, with zlib and jansson directly
 * (nothing from formats/), and that each payload equals the model's tensor. */
static void check_apr_rules(const uint8_t *b, size_t n, const apr_model *src)
{
    assert_true(n >= 68);
    assert_memory_equal(b, "APR\0", 4);
    assert_int_equal(b[4], 2);
    assert_int_equal(b[5], 0);
    uint16_t flags = ld16(b + 6);
    assert_true(flags & 0x400);
    assert_false(flags & 0x800);
    assert_int_equal(flags & 0x1f, 0);
    uint32_t count = ld32(b + 8);
    assert_int_equal(count, src->n_tensors);
    assert_int_equal(ld64(b + 12), 64);
    uint32_t meta_size = ld32(b + 20);
    uint64_t index_off = ld64(b + 24), data_off = ld64(b + 32);
    uLong c = crc32(0, b, 40);
    c = crc32(c, b + 44, 20);
    assert_int_equal(ld32(b + 40), (uint32_t)c);
    for (int i = 44; i < 64; i++)
        assert_int_equal(b[i], 0);
    assert_int_equal(ld32(b + n - 4), (uint32_t)crc32(0, b, (uInt)(n - 4)));

    /* metadata: a compact JSON object, zero padding up to the 64-aligned index */
    json_error_t je;
    json_t *meta = json_loadb((const char *)b + 64, meta_size, JSON_ALLOW_NUL, &je);
    assert_non_null(meta);
    assert_true(json_is_object(meta));
    char *compact = json_dumps(meta, JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_int_equal(strlen(compact), meta_size); /* no whitespace: compact as written */
    free(compact);
    assert_null(json_object_get(meta, "num_hidden_layers")); /* no aliases */
    assert_null(json_object_get(meta, "num_attention_heads"));
    bool quantized = false;
    assert_int_equal(index_off, up64(64 + meta_size));
    for (uint64_t i = 64 + meta_size; i < index_off; i++)
        assert_int_equal(b[i], 0);

    /* index: sorted, consistent, 64-aligned, in bounds, payloads equal the source */
    uint64_t pos = index_off;
    char prev[65536] = "";
    uint64_t data_end = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t nl = ld16(b + pos);
        char name[65536];
        memcpy(name, b + pos + 2, nl);
        name[nl] = 0;
        pos += 2 + nl;
        if (i)
            assert_true(strcmp(prev, name) < 0);
        strcpy(prev, name);
        uint8_t code = b[pos], ndim = b[pos + 1];
        pos += 2;
        assert_true(ndim <= 8);
        uint64_t elems = 1, dims[8];
        for (int d = 0; d < ndim; d++, pos += 8)
            elems *= (dims[d] = ld64(b + pos));
        uint64_t off = ld64(b + pos), size = ld64(b + pos + 8);
        pos += 16;
        assert_int_equal(off % 64, 0);
        assert_true(data_off + off + size <= n - 4);
        if (code == 64) { /* ROWCAT: parts in the metadata */
            json_t *parts = json_object_get(json_object_get(meta, "tensor_parts"), name);
            assert_true(json_is_array(parts));
            uint64_t sum = 0;
            for (size_t p = 0; p < json_array_size(parts); p++)
                sum += (uint64_t)json_integer_value(json_object_get(json_array_get(parts, p), "bytes"));
            assert_int_equal(sum, size);
            quantized = true;
        } else {
            bool known = false;
            for (size_t k = 0; k < sizeof code_sizes / sizeof *code_sizes; k++) {
                if (code_sizes[k][0] == code) {
                    assert_int_equal(elems % code_sizes[k][1], 0);
                    assert_int_equal(size, elems / code_sizes[k][1] * code_sizes[k][2]);
                    known = true;
                    quantized |= code_sizes[k][1] > 1;
                }
            }
            assert_true(known);
        }
        const apr_tensor *t = apr_model_tensor(src, name);
        assert_non_null(t);
        assert_int_equal(t->ndim, ndim);
        assert_memory_equal(t->dims, dims, ndim * 8);
        assert_int_equal(t->nbytes, size);
        assert_memory_equal(b + data_off + off, t->data, size);
        if (data_off + up64(off + size) > data_end)
            data_end = data_off + up64(off + size);
    }
    assert_int_equal(data_off, up64(pos));
    for (uint64_t i = pos; i < data_off; i++)
        assert_int_equal(b[i], 0);
    assert_int_equal(data_end + 4, n); /* last tensor padded, then the footer */
    assert_int_equal(!!(flags & 0x20), quantized);
    assert_int_equal(!!(flags & 0x200), apr_model_kv(src, "tokenizer.ggml.tokens") != NULL);
    json_decref(meta);
}

static void check_apr_file(const char *path, const apr_model *src)
{
    size_t n;
    char *b = tu_read_file(path, &n);
    assert_non_null(b);
    check_apr_rules((const uint8_t *)b, n, src);
    free(b);
}

/* ---------------------------------------------------------------- model comparison */



/* ---------------------------------------------------------------- fixture */

static void test_fixture_gguf_apr_gguf(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    char dir[4096], apr1[4200], apr2[4200], back[4200];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("apr-fx"));
    snprintf(apr1, sizeof apr1, "%s/a.apr", dir);
    snprintf(apr2, sizeof apr2, "%s/b.apr", dir);
    snprintf(back, sizeof back, "%s/back.gguf", dir);
    apr_model *g = NULL, *a = NULL, *a2 = NULL, *g2 = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_open(&g, path, &err), 0);
    assert_int_equal(apr_apr_write(g, apr1, NULL, &err), 0);
    check_apr_file(apr1, g);

    assert_int_equal(apr_apr_open(&a, apr1, NULL, &err), 0);
    assert_int_equal(a->format, APR_FMT_APR);
    assert_int_equal(a->version, 2);
    assert_int_equal(a->alignment, 64);
    assert_non_null(a->raw_meta_json);
    tu_assert_models_equal(g, a); /* same KVs (types, order), same tensors in the same order */
    assert_true(a->has_cfg);
    assert_int_equal(a->cfg.n_layers, 5);
    assert_int_equal(a->cfg.head_dim, 8);
    assert_true(a->has_tok);

    /* canonical aprender keys are present and right */
    json_t *meta = json_loads(a->raw_meta_json, 0, NULL);
    assert_non_null(meta);
    assert_int_equal(json_integer_value(json_object_get(meta, "hidden_size")), 64);
    assert_int_equal(json_integer_value(json_object_get(meta, "num_layers")), 5);
    assert_int_equal(json_integer_value(json_object_get(meta, "num_kv_heads")), 4);
    assert_int_equal(json_integer_value(json_object_get(meta, "rope_type")), 0);
    assert_string_equal(json_string_value(json_object_get(meta, "architecture")), "llama");
    assert_int_equal(json_array_size(json_object_get(meta, "tokenizer.vocabulary")), 512);
    json_decref(meta);

    /* APR -> GGUF gives back the fixture byte for byte */
    assert_int_equal(apr_gguf_write(a, back, NULL, &err), 0);
    assert_int_equal(apr_gguf_open(&g2, back, &err), 0);
    assert_int_equal(g2->maps[0].size, g->maps[0].size);
    assert_memory_equal(g2->maps[0].base, g->maps[0].base, g->maps[0].size);

    /* APR -> APR is deterministic: identical bytes */
    assert_int_equal(apr_apr_write(a, apr2, NULL, &err), 0);
    assert_int_equal(apr_apr_open(&a2, apr2, NULL, &err), 0);
    assert_int_equal(a2->maps[0].size, a->maps[0].size);
    assert_memory_equal(a2->maps[0].base, a->maps[0].base, a->maps[0].size);

    /* generic open + footer skip */
    apr_model *s = NULL;
    apr_open_opts oo = {.skip_footer_crc = true};
    assert_int_equal(apr_model_open(&s, apr1, &oo, &err), 0);
    assert_int_equal(s->n_tensors, 48);
    apr_model_free(s);
    apr_model_free(g2);
    apr_model_free(a2);
    apr_model_free(a);
    apr_model_free(g);
}

/* ---------------------------------------------------------------- typed KVs */

static uint8_t g_data[8][8192];

static apr_model *build_model(void)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    static const apr_kv_type ts[] = {APR_KV_U8, APR_KV_I8, APR_KV_U16, APR_KV_I16, APR_KV_U32, APR_KV_I32,
                                     APR_KV_F32, APR_KV_BOOL, APR_KV_U64, APR_KV_I64, APR_KV_F64};
    char key[64];
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        /* extremes of every type: min, max and, for floats, non-finite values */
        apr_kv kv = {.key = key, .type = ts[i]};
        snprintf(key, sizeof key, "t.max.%s", apr_kv_type_name(ts[i]));
        kv.v.u64 = ts[i] == APR_KV_BOOL ? 1 : UINT64_MAX;
        if (ts[i] == APR_KV_I8) kv.v.i8 = INT8_MAX;
        if (ts[i] == APR_KV_I16) kv.v.i16 = INT16_MAX;
        if (ts[i] == APR_KV_I32) kv.v.i32 = INT32_MAX;
        if (ts[i] == APR_KV_I64) kv.v.i64 = INT64_MIN;
        if (ts[i] == APR_KV_F32) kv.v.f32 = 1e-5f;
        if (ts[i] == APR_KV_F64) kv.v.f64 = 0.1;
        assert_int_equal(apr_model_set_kv(m, &kv), 0);
        uint8_t arr[8 * 6];
        for (size_t k = 0; k < sizeof arr; k++)
            arr[k] = (uint8_t)(k * 53 + i * 11 + 1);
        if (ts[i] == APR_KV_BOOL)
            for (size_t k = 0; k < sizeof arr; k++)
                arr[k] &= 1;
        if (ts[i] == APR_KV_F32) { /* include NaN with a payload, inf, -0, denormal */
            uint32_t special[6] = {0x7fc01234u, 0x7f800000u, 0x80000000u, 0x00000001u, 0x3f800000u, 0xc2f60000u};
            memcpy(arr, special, sizeof special);
        }
        if (ts[i] == APR_KV_F64) {
            uint64_t special[6] = {0xfff8000000000001ull, 0xfff0000000000000ull, 0x0000000000000001ull,
                                   0x3fb999999999999aull, 0x7fefffffffffffffull, 0};
            memcpy(arr, special, sizeof special);
        }
        apr_kv ak = {.key = key, .type = APR_KV_ARRAY, .arr_type = ts[i], .count = 6, .arr = arr};
        snprintf(key, sizeof key, "t.arr.%s", apr_kv_type_name(ts[i]));
        assert_int_equal(apr_model_set_kv(m, &ak), 0);
    }
    apr_kv nan = {.key = "t.nan.f32", .type = APR_KV_F32, .v.u32 = 0xffc00001u};
    assert_int_equal(apr_model_set_kv(m, &nan), 0);
    /* strings: invalid UTF-8, embedded NUL, empty, JSON-special characters */
    apr_str strs[4] = {{2, "\xff\xfe"}, {3, "a\0b"}, {0, ""}, {9, "\"\\\n\t/\x01\xc3\xa9"}};
    apr_kv sk = {.key = "t.strings", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING, .count = 4, .arr = strs};
    assert_int_equal(apr_model_set_kv(m, &sk), 0);
    apr_kv bad = {.key = "t.bad_utf8", .type = APR_KV_STRING, .str = {3, "x\x80y"}};
    assert_int_equal(apr_model_set_kv(m, &bad), 0);
    apr_kv empty = {.key = "t.empty", .type = APR_KV_ARRAY, .arr_type = APR_KV_U16};
    assert_int_equal(apr_model_set_kv(m, &empty), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "general.alignment", 32), 0);

    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 8192; k++)
            g_data[i][k] = (uint8_t)(k * 29 + i * 101 + (k >> 7));
    uint64_t d2[2] = {3, 64}, dq[2] = {2, 256}, d1[1] = {5}, d4[4] = {2, 1, 3, 2}, d8[8] = {1, 1, 1, 1, 1, 1, 2, 3};
    /* deliberately not in name order: the data order must survive */
    assert_int_equal(apr_model_add_tensor(m, "z.f32", APR_DT_F32, 2, d2, g_data[0], 768, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "b.q4k", APR_DT_Q4_K, 2, dq, g_data[1], 288, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "a.q6k", APR_DT_Q6_K, 2, dq, g_data[2], 420, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "m.q8_0", APR_DT_Q8_0, 2, d2, g_data[3], 3 * 2 * 34, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "c.bf16", APR_DT_BF16, 1, d1, g_data[4], 10, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "d.i8.4d", APR_DT_I8, 4, d4, g_data[5], 12, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "e.u8.8d", APR_DT_U8, 8, d8, g_data[6], 6, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "f.i64", APR_DT_I64, 1, d1, g_data[7], 40, false, &err), 0);
    return m;
}

static void test_typed_kv_roundtrip(void **state)
{
    (void)state;
    char p[4200], p2[4200];
    const char *dir = tu_tmpdir("apr-kv");
    snprintf(p, sizeof p, "%s/kv.apr", dir);
    snprintf(p2, sizeof p2, "%s/kv.gguf", dir);
    apr_model *m = build_model(), *r = NULL;
    apr_err err = {0};
    assert_int_equal(apr_apr_write(m, p, NULL, &err), 0);
    check_apr_file(p, m);
    assert_int_equal(apr_apr_open(&r, p, NULL, &err), 0);
    tu_assert_models_equal(m, r);
    assert_string_equal(r->tensors[0].name, "z.f32");
    assert_int_equal(r->tensors[0].file_offset % 64, 0);
    apr_model_free(r);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- ROWCAT */

static void test_rowcat(void **state)
{
    (void)state;
    char p[4200], g[4200];
    const char *dir = tu_tmpdir("apr-rowcat");
    snprintf(p, sizeof p, "%s/rc.apr", dir);
    snprintf(g, sizeof g, "%s/rc.gguf", dir);
    apr_model *m = apr_model_new(APR_FMT_APR), *r = NULL;
    apr_err err = {0};
    /* Q (4 rows Q4_K) + K (2 rows Q4_K) + V (2 rows Q6_K), 256 columns */
    apr_tensor_part parts[3] = {{APR_DT_Q4_K, 4, 4 * 144}, {APR_DT_Q4_K, 2, 2 * 144}, {APR_DT_Q6_K, 2, 2 * 210}};
    uint64_t total = 6 * 144 + 2 * 210;
    uint8_t *buf = malloc(total);
    for (uint64_t i = 0; i < total; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(apr_model_add_rowcat_tensor(m, "model.layers.0.self_attn.qkv_proj.weight", 256, parts, 3, buf,
                                                 true, &err), 0);
    const apr_tensor *t = &m->tensors[0];
    assert_int_equal(t->dtype, APR_DT_ROWCAT);
    assert_int_equal(t->dims[0], 8);
    assert_int_equal(t->dims[1], 256);
    assert_int_equal(t->nbytes, total);
    uint64_t d1[1] = {256};
    assert_int_equal(apr_model_add_tensor(m, "model.norm.weight", APR_DT_F32, 1, d1, g_data[0], 1024, false, &err), 0);

    /* bad parts are refused with the reason */
    apr_tensor_part badp[2] = {{APR_DT_Q4_K, 4, 4 * 144}, {APR_DT_Q6_K, 2, 2 * 144}};
    assert_int_not_equal(apr_model_add_rowcat_tensor(m, "x", 256, badp, 2, buf, false, &err), 0);
    assert_non_null(strstr(err.msg, "part 1 is 288 bytes"));
    apr_tensor_part odd[1] = {{APR_DT_Q4_K, 1, 144}};
    assert_int_not_equal(apr_model_add_rowcat_tensor(m, "x", 100, odd, 1, buf, false, &err), 0);
    assert_non_null(strstr(err.msg, "does not fit 100 columns"));
    assert_int_not_equal(apr_model_add_rowcat_tensor(m, "x", 256, parts, 0, buf, false, &err), 0);
    assert_int_equal(m->n_tensors, 2);

    assert_int_equal(apr_apr_write(m, p, NULL, &err), 0);
    check_apr_file(p, m);
    assert_int_equal(apr_apr_open(&r, p, NULL, &err), 0);
    tu_assert_models_equal(m, r);
    const apr_tensor *rt = apr_model_tensor(r, "model.layers.0.self_attn.qkv_proj.weight");
    assert_int_equal(rt->n_parts, 3);
    assert_int_equal(rt->parts[2].dtype, APR_DT_Q6_K);
    assert_memory_equal(rt->data, buf, total);
    /* GGUF cannot hold it */
    assert_int_not_equal(apr_gguf_write(r, g, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "ROWCAT"));
    assert_int_not_equal(access(g, F_OK), 0);
    apr_model_free(r);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- provenance */

static void test_provenance(void **state)
{
    (void)state;
    char p[4200], g[4200];
    const char *dir = tu_tmpdir("apr-prov");
    snprintf(p, sizeof p, "%s/p.apr", dir);
    snprintf(g, sizeof g, "%s/p.gguf", dir);
    apr_model *m = apr_model_new(APR_FMT_APR), *r = NULL, *r2 = NULL;
    apr_err err = {0};
    const char *prov = "{\"tool\":\"apr 0.1.0\",\"tensors\":[{\"name\":\"w\",\"sha256\":\"00ff\"}],"
                       "\"parent\":{\"tool\":\"x\",\"ratio\":0.1}}";
    m->provenance_json = strdup(prov);
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "llama"), 0);
    uint64_t d[1] = {4};
    assert_int_equal(apr_model_add_tensor(m, "w", APR_DT_F32, 1, d, g_data[1], 16, false, &err), 0);
    assert_int_equal(apr_apr_write(m, p, NULL, &err), 0);
    assert_int_equal(apr_apr_open(&r, p, NULL, &err), 0);
    assert_non_null(r->provenance_json);
    json_t *a = json_loads(prov, 0, NULL), *b = json_loads(r->provenance_json, 0, NULL);
    assert_true(json_equal(a, b));
    json_decref(b);
    /* APR -> GGUF: it travels as the apr.provenance.json KV and comes back */
    assert_int_equal(apr_gguf_write(r, g, NULL, &err), 0);
    assert_int_equal(apr_gguf_open(&r2, g, &err), 0);
    assert_non_null(apr_kv_get_str(r2, "apr.provenance.json"));
    b = json_loads(r2->provenance_json, 0, NULL);
    assert_true(json_equal(a, b));
    json_decref(b);
    /* ... and GGUF -> APR keeps it out of gguf_kv (one copy, the object) */
    apr_model *r3 = NULL;
    assert_int_equal(apr_apr_write(r2, p, NULL, &err), 0);
    assert_int_equal(apr_apr_open(&r3, p, NULL, &err), 0);
    assert_null(apr_model_kv(r3, "apr.provenance.json"));
    b = json_loads(r3->provenance_json, 0, NULL);
    assert_true(json_equal(a, b));
    json_decref(b);
    json_decref(a);
    /* invalid provenance text is refused, nothing written */
    free(m->provenance_json);
    m->provenance_json = strdup("{not json");
    unlink(p);
    assert_int_not_equal(apr_apr_write(m, p, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "provenance"));
    assert_int_not_equal(access(p, F_OK), 0);
    apr_model_free(r3);
    apr_model_free(r2);
    apr_model_free(r);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- hand-built files */

typedef struct aentry {
    const char *name;
    uint8_t code, ndim;
    uint64_t dims[9];
    uint64_t off, size;
} aentry;

typedef struct aspec {
    const char *meta;
    uint16_t flags;
    uint8_t major;
    int n;
    aentry e[4];
    uint64_t data_len;
    bool set_count;
    uint32_t count;
} aspec;

typedef struct abuf {
    uint8_t b[16384];
    size_t n;
    uint64_t index_off, data_off;
} abuf;

static void fix_crcs(abuf *a)
{
    uLong c = crc32(0, a->b, 40);
    c = crc32(c, a->b + 44, 20);
    st32(a->b + 40, (uint32_t)c);
    st32(a->b + a->n - 4, (uint32_t)crc32(0, a->b, (uInt)(a->n - 4)));
}

static void abuild(abuf *a, const aspec *s)
{
    memset(a, 0, sizeof *a);
    size_t ml = strlen(s->meta);
    memcpy(a->b, "APR\0", 4);
    a->b[4] = s->major ? s->major : 2;
    a->b[6] = (uint8_t)s->flags;
    a->b[7] = (uint8_t)(s->flags >> 8);
    st32(a->b + 8, s->set_count ? s->count : (uint32_t)s->n);
    st64(a->b + 12, 64);
    st32(a->b + 20, (uint32_t)ml);
    memcpy(a->b + 64, s->meta, ml);
    a->index_off = up64(64 + ml);
    size_t pos = a->index_off;
    for (int i = 0; i < s->n; i++) {
        const aentry *e = &s->e[i];
        size_t nl = strlen(e->name);
        a->b[pos] = (uint8_t)nl;
        a->b[pos + 1] = (uint8_t)(nl >> 8);
        memcpy(a->b + pos + 2, e->name, nl);
        pos += 2 + nl;
        a->b[pos++] = e->code;
        a->b[pos++] = e->ndim;
        for (int d = 0; d < e->ndim; d++, pos += 8)
            st64(a->b + pos, e->dims[d]);
        st64(a->b + pos, e->off);
        st64(a->b + pos + 8, e->size);
        pos += 16;
    }
    a->data_off = up64(pos);
    st64(a->b + 24, a->index_off);
    st64(a->b + 32, a->data_off);
    for (uint64_t i = 0; i < s->data_len; i++)
        a->b[a->data_off + i] = (uint8_t)(i * 13 + 1);
    a->n = a->data_off + s->data_len + 4;
    fix_crcs(a);
}

/* two F32 tensors: "a" {2,4} at 0 (32 bytes) and "b" {8} at 64 (32 bytes) */
static aspec base_spec(void)
{
    aspec s = {.meta = "{\"architecture\":\"llama\"}", .flags = 0x400, .n = 2, .data_len = 128};
    s.e[0] = (aentry){"a", 0, 2, {2, 4}, 0, 32};
    s.e[1] = (aentry){"b", 0, 1, {8}, 64, 32};
    return s;
}

static void expect_fail_buf(const uint8_t *b, size_t n, bool footer, const char *msg)
{
    apr_model *m = (apr_model *)0x1;
    apr_err err = {0};
    uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan catches any over-read */
    memcpy(copy, b, n);
    int rc = apr_apr_parse(&m, copy, n, footer, &err);
    free(copy);
    if (rc == 0 || !strstr(err.msg, msg))
        fail_msg("len %zu: rc %d '%s', expected '%s'", n, rc, err.msg, msg);
    assert_null(m);
}

static void expect_spec_fail(const aspec *s, const char *msg)
{
    abuf a;
    abuild(&a, s);
    expect_fail_buf(a.b, a.n, true, msg);
}

static void test_handmade_ok_and_aprender_meta(void **state)
{
    (void)state;
    abuf a;
    aspec s = base_spec();
    abuild(&a, &s);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_apr_parse(&m, a.b, a.n, true, &err), 0);
    assert_int_equal(m->n_tensors, 2);
    assert_int_equal(m->tensors[1].file_offset, a.data_off + 64);
    assert_string_equal(apr_kv_get_str(m, "general.architecture"), "llama");
    apr_model_free(m);

    /* a file as aprender writes it: canonical keys, tokenizer.* keys, no gguf_kv */
    s.meta = "{\"model_type\":\"qwen2\",\"name\":\"tiny\",\"architecture\":\"qwen2\",\"hidden_size\":64,"
             "\"num_layers\":2,\"num_heads\":4,\"num_kv_heads\":2,\"vocab_size\":3,\"intermediate_size\":128,"
             "\"max_position_embeddings\":256,\"rope_theta\":1000000.0,\"rope_type\":2,\"rms_norm_eps\":1e-06,"
             "\"head_dim\":16,\"tokenizer.model\":\"bpe\",\"tokenizer.vocabulary\":[\"a\",\"b\",\"<|end|>\"],"
             "\"tokenizer.merges\":[\"a b\"],\"tokenizer.bos_token_id\":2,\"tokenizer.add_bos_token\":false}";
    abuild(&a, &s);
    assert_int_equal(apr_apr_parse(&m, a.b, a.n, true, &err), 0);
    const apr_kv *kv = apr_model_kv(m, "qwen2.embedding_length");
    assert_non_null(kv);
    assert_int_equal(kv->type, APR_KV_U32);
    assert_int_equal(kv->v.u32, 64);
    kv = apr_model_kv(m, "qwen2.rope.freq_base");
    assert_int_equal(kv->type, APR_KV_F32);
    assert_true(kv->v.f32 == 1000000.0f);
    kv = apr_model_kv(m, "qwen2.attention.layer_norm_rms_epsilon");
    assert_true(kv->v.f32 == 1e-6f);
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.model"), "gpt2");
    assert_string_equal(apr_kv_get_str(m, "general.name"), "tiny");
    kv = apr_model_kv(m, "tokenizer.ggml.tokens");
    assert_int_equal(kv->count, 3);
    assert_string_equal(((apr_str *)kv->arr)[2].s, "<|end|>");
    uint32_t u;
    assert_true(apr_kv_get_u32(m, "tokenizer.ggml.bos_token_id", &u));
    assert_int_equal(u, 2);
    assert_true(m->has_tok);
    assert_int_equal(m->tok.n_merges, 1);
    assert_true(m->has_cfg);
    assert_int_equal(m->cfg.head_dim, 16);
    assert_int_equal(m->cfg.rope_type, APR_ROPE_NEOX);
    apr_model_free(m);
}

static void test_hostile_truncation(void **state)
{
    (void)state;
    abuf a;
    aspec s = base_spec();
    abuild(&a, &s);
    /* every prefix fails, with or without the footer check; no prefix is read past */
    for (size_t len = 0; len < a.n; len++) {
        for (int footer = 0; footer < 2; footer++) {
            apr_model *m = NULL;
            apr_err err = {0};
            uint8_t *copy = malloc(len ? len : 1);
            memcpy(copy, a.b, len);
            int rc = apr_apr_parse(&m, copy, len, footer, &err);
            free(copy);
            if (rc == 0 || err.msg[0] == 0)
                fail_msg("prefix %zu footer %d: rc %d '%s'", len, footer, rc, err.msg);
        }
    }
    /* specific messages at the section boundaries */
    expect_fail_buf(a.b, 3, true, "truncated");
    expect_fail_buf(a.b, 63, true, "truncated file: the header needs 64");
    expect_fail_buf(a.b, 64, false, "no room for the CRC32 footer");
    expect_fail_buf(a.b, a.index_off, false, "past the end");
    expect_fail_buf(a.b, a.data_off + 10, false, "past the end");
    expect_fail_buf(a.b, a.n - 1, true, "CRC32");
}

static void test_hostile_header(void **state)
{
    (void)state;
    abuf a;
    aspec s = base_spec();
    abuild(&a, &s);
    a.b[3] = 'X';
    expect_fail_buf(a.b, a.n, true, "bad magic");
    abuild(&a, &s);
    a.b[9] ^= 1; /* tensor count changed, CRC not updated */
    expect_fail_buf(a.b, a.n, true, "header CRC32 mismatch");
    abuild(&a, &s);
    a.b[a.data_off + 5] ^= 0x40; /* one payload bit */
    expect_fail_buf(a.b, a.n, true, "footer CRC32 mismatch");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_apr_parse(&m, a.b, a.n, false, &err), 0); /* the skip flag skips only that */
    apr_model_free(m);
    s.major = 3;
    expect_spec_fail(&s, "unsupported APR major version 3");
    s = base_spec();
    s.flags = 0xC00;
    expect_spec_fail(&s, "column-major");
    s.flags = 0x402;
    expect_spec_fail(&s, "zstd-compressed");
    s.flags = 0x404;
    expect_spec_fail(&s, "encrypted");
    s.flags = 0x410; /* one shard of a set: a valid file for the buffer parser (apr_apr_open goes through its manifest, test_apr_shard) */
    abuild(&a, &s);
    assert_int_equal(apr_apr_parse(&m, a.b, a.n, true, &err), 0);
    apr_model_free(m);
    s = base_spec();
    s.set_count = true;
    s.count = 0xFFFFFFFFu;
    expect_spec_fail(&s, "cannot fit");
    /* offsets that lie */
    s = base_spec();
    abuild(&a, &s);
    st64(a.b + 24, a.index_off + 8);
    fix_crcs(&a);
    expect_fail_buf(a.b, a.n, true, "index offset");
    abuild(&a, &s);
    st64(a.b + 32, 1ull << 62);
    fix_crcs(&a);
    expect_fail_buf(a.b, a.n, true, "data offset");
    abuild(&a, &s);
    st32(a.b + 20, 0xFFFFFF00u);
    fix_crcs(&a);
    expect_fail_buf(a.b, a.n, true, "outside the file");
}

static void test_hostile_index(void **state)
{
    (void)state;
    aspec s = base_spec();
    s.e[0].name = "c"; /* "c" then "b" */
    expect_spec_fail(&s, "not sorted");
    s.e[0].name = "b";
    expect_spec_fail(&s, "duplicate tensor name 'b'");
    s = base_spec();
    s.e[0].name = "\xc0\xaf"; /* overlong '/' */
    expect_spec_fail(&s, "not valid UTF-8");
    s = base_spec();
    s.e[1].code = 128; /* aprender's APR-native Q4: not ours */
    expect_spec_fail(&s, "unknown dtype code 128");
    s.e[1].code = 20;
    expect_spec_fail(&s, "unknown dtype code 20");
    s = base_spec();
    s.e[1].ndim = 9;
    for (int d = 0; d < 9; d++)
        s.e[1].dims[d] = 1;
    expect_spec_fail(&s, "ndim 9 > 8");
    s = base_spec();
    s.e[1].ndim = 3;
    s.e[1].dims[0] = 1ull << 32;
    s.e[1].dims[1] = 1ull << 32;
    s.e[1].dims[2] = 8;
    expect_spec_fail(&s, "overflow");
    s = base_spec();
    s.e[1].size = 36;
    expect_spec_fail(&s, "index size 36");
    s = base_spec();
    s.e[1].off = 4096;
    expect_spec_fail(&s, "runs past the end");
    s.e[1].off = UINT64_MAX - 63;
    expect_spec_fail(&s, "runs past the end");
    s = base_spec();
    s.e[1].off = 32;
    expect_spec_fail(&s, "not 64-byte aligned");
    s = base_spec();
    s.e[0].dims[0] = 4; /* a = 64 bytes at 0 */
    s.e[0].size = 64;
    s.e[1].off = 0;
    expect_spec_fail(&s, "overlapping");
    s = base_spec();
    s.e[1].code = 12; /* Q4_K needs 256-element rows */
    expect_spec_fail(&s, "do not fit dtype Q4_K");
}

static void test_hostile_metadata(void **state)
{
    (void)state;
    aspec s = base_spec();
    s.meta = "{\"a\":";
    expect_spec_fail(&s, "not valid JSON");
    s.meta = "[1,2]";
    expect_spec_fail(&s, "not an object");
    s.meta = "{\"a\":1,\"a\":2}";
    expect_spec_fail(&s, "not valid JSON");
    s.meta = "{\"a\":\"\xff\"}";
    expect_spec_fail(&s, "not valid UTF-8");
    s.meta = "{\"gguf_kv\":[[\"k\",\"u8\",300]]}";
    expect_spec_fail(&s, "gguf_kv 'k' (u8): 300 is out of range for u8 [0, 255]");
    s.meta = "{\"gguf_kv\":[[\"k\",\"u128\",1]]}";
    expect_spec_fail(&s, "unknown type 'u128'");
    s.meta = "{\"gguf_kv\":[[\"k\",\"u8\",1],[\"k\",\"u8\",2]]}";
    expect_spec_fail(&s, "duplicate key 'k'");
    s.meta = "{\"gguf_kv\":[[\"k\",\"array:string\",{\"ref\":\"nope\"}]]}";
    expect_spec_fail(&s, "reference to a missing metadata key");
    s.meta = "{\"gguf_kv\":[[\"k\",\"f32\",1e39]]}";
    expect_spec_fail(&s, "gguf_kv 'k' (f32): 1e+39 does not fit an f32");
    s.meta = "{\"gguf_kv\":[[\"k\",\"u64\",\"18446744073709551616\"]]}";
    expect_spec_fail(&s, "gguf_kv 'k' (u64): '18446744073709551616' is not a decimal u64");
    s.meta = "{\"gguf_kv\":[[\"k\",\"bool\",1]]}";
    expect_spec_fail(&s, "gguf_kv 'k' (bool): expected true or false, got an integer");
    s.meta = "{\"gguf_kv\":[[\"k\",\"array:u8\",[1,[2]]]]}";
    expect_spec_fail(&s, "gguf_kv 'k' (array:u8), element 1: expected an integer, got an array");
    s.meta = "{\"gguf_kv\":{}}";
    expect_spec_fail(&s, "not an array");
    s.meta = "{\"hidden_size\":-1,\"architecture\":\"llama\"}";
    expect_spec_fail(&s, "metadata 'hidden_size' (u32): -1 is out of range for u32 [0, 4294967295]");

    /* ROWCAT without or with lying parts */
    s = base_spec();
    s.e[1].code = 64;
    s.e[1].ndim = 2;
    s.e[1].dims[0] = 1;
    s.e[1].dims[1] = 8;
    expect_spec_fail(&s, "no valid entry in metadata 'tensor_parts'");
    s.meta = "{\"tensor_parts\":{\"b\":[{\"dtype\":\"F32\",\"rows\":1,\"bytes\":30}]}}";
    expect_spec_fail(&s, "part 0 is 30 bytes");
    s.meta = "{\"tensor_parts\":{\"b\":[{\"dtype\":\"F32\",\"rows\":2,\"bytes\":64}]}}";
    expect_spec_fail(&s, "parts have 2 rows, the tensor has 1");
    s.meta = "{\"tensor_parts\":{\"b\":[{\"dtype\":\"ROWCAT\",\"rows\":1,\"bytes\":32}]}}";
    expect_spec_fail(&s, "part 0 is malformed");
    s.meta = "{\"tensor_parts\":{\"b\":[{\"dtype\":\"F32\",\"rows\":1,\"bytes\":32}]}}";
    abuf a;
    abuild(&a, &s);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_apr_parse(&m, a.b, a.n, true, &err), 0);
    assert_int_equal(m->tensors[1].n_parts, 1);
    apr_model_free(m);
    s.meta = "{\"tensor_parts\":{\"a\":[{\"dtype\":\"F32\",\"rows\":1,\"bytes\":32}]}}";
    expect_spec_fail(&s, "not a ROWCAT tensor");
}

static void test_writer_rejects(void **state)
{
    (void)state;
    char p[4200];
    snprintf(p, sizeof p, "%s/x.apr", tu_tmpdir("apr-rej"));
    apr_model *m = apr_model_new(APR_FMT_APR);
    apr_err err = {0};
    uint64_t d[1] = {4};
    assert_int_equal(apr_model_add_tensor(m, "a", APR_DT_F32, 1, d, g_data[0], 16, false, &err), 0);
    m->tensors[0].dtype = (apr_dtype)31; /* a code no format defines */
    assert_int_not_equal(apr_apr_write(m, p, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "APR has no code"));
    m->tensors[0].dtype = APR_DT_F32;
    m->tensors[0].nbytes = 12;
    assert_int_not_equal(apr_apr_write(m, p, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "shape needs 16"));
    assert_int_not_equal(access(p, F_OK), 0);
    apr_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_gguf_apr_gguf),
        cmocka_unit_test(test_typed_kv_roundtrip),
        cmocka_unit_test(test_rowcat),
        cmocka_unit_test(test_provenance),
        cmocka_unit_test(test_handmade_ok_and_aprender_meta),
        cmocka_unit_test(test_hostile_truncation),
        cmocka_unit_test(test_hostile_header),
        cmocka_unit_test(test_hostile_index),
        cmocka_unit_test(test_hostile_metadata),
        cmocka_unit_test(test_writer_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
