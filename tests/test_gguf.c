/* test_gguf.c - GGUF reader/writer: the real fixture, read->write->read,
 * hostile inputs built byte by byte, and a peer check with the PyPI gguf package. */
#define _GNU_SOURCE /* memmem */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIXTURE "fixtures/stories260K-f32.gguf"

/* ---------------------------------------------------------------- model comparison */



/* ---------------------------------------------------------------- the fixture */

static void test_fixture_opens(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_open(&m, path, &err), 0);
    assert_int_equal(m->format, APR_FMT_GGUF);
    assert_int_equal(m->version, 3);
    assert_int_equal(m->alignment, 32);
    assert_int_equal(m->n_tensors, 48);
    assert_int_equal(m->n_kvs, 19);
    assert_int_equal(m->n_maps, 1);

    uint32_t u = 0;
    const apr_kv *kv = apr_model_kv(m, "llama.block_count");
    assert_non_null(kv);
    assert_int_equal(kv->type, APR_KV_U32);
    assert_true(apr_kv_get_u32(m, "llama.block_count", &u));
    assert_int_equal(u, 5);
    kv = apr_model_kv(m, "llama.embedding_length");
    assert_int_equal(kv->type, APR_KV_U32);
    assert_int_equal(kv->v.u32, 64);
    kv = apr_model_kv(m, "llama.attention.layer_norm_rms_epsilon");
    assert_int_equal(kv->type, APR_KV_F32);
    assert_true(kv->v.f32 > 0.0f && kv->v.f32 < 1e-3f);
    kv = apr_model_kv(m, "tokenizer.ggml.tokens");
    assert_int_equal(kv->type, APR_KV_ARRAY);
    assert_int_equal(kv->arr_type, APR_KV_STRING);
    assert_int_equal(kv->count, 512);
    const apr_str *toks = kv->arr;
    assert_string_equal(toks[0].s, "<unk>");
    assert_int_equal(toks[0].len, 5);
    kv = apr_model_kv(m, "tokenizer.ggml.scores");
    assert_int_equal(kv->arr_type, APR_KV_F32);
    assert_int_equal(kv->count, 512);
    kv = apr_model_kv(m, "tokenizer.ggml.token_type");
    assert_int_equal(kv->arr_type, APR_KV_I32);
    assert_string_equal(apr_kv_get_str(m, "general.architecture"), "llama");
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.model"), "llama");
    /* KVs in file order: the first one written by llama.cpp's tool */
    assert_string_equal(m->kvs[0].key, "tokenizer.ggml.tokens");

    const apr_tensor *t = apr_model_tensor(m, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, APR_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->dims[0], 512); /* outermost first: ne = [64, 512] */
    assert_int_equal(t->dims[1], 64);
    assert_int_equal(t->nbytes, 512 * 64 * 4);
    assert_int_equal(t->file_offset % 32, 0);
    assert_ptr_equal(t->data, m->maps[0].base + t->file_offset);
    t = apr_model_tensor(m, "blk.4.ffn_norm.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->file_offset + t->nbytes, m->maps[0].size);

    /* derive.c view (config + tokenizer) */
    assert_true(m->has_cfg);
    assert_int_equal(m->cfg.n_layers, 5);
    assert_int_equal(m->cfg.n_kv_heads, 4);
    assert_true(m->has_tok);
    assert_int_equal(m->tok.n_tokens, 512);
    assert_null(m->provenance_json);
    apr_model_free(m);

    /* apr_model_open sniffs the same reader */
    assert_int_equal(apr_model_open(&m, path, NULL, &err), 0);
    assert_int_equal(m->n_tensors, 48);
    apr_model_free(m);
}

/* read -> write -> read, and the written file compared with the fixture. */
static void test_fixture_roundtrip(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    char dir[4096], out[4200];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("gguf-rt"));
    snprintf(out, sizeof out, "%s/rt.gguf", dir);
    apr_model *a = NULL, *b = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_open(&a, path, &err), 0);
    assert_int_equal(apr_gguf_write(a, out, NULL, &err), 0);
    assert_int_equal(apr_gguf_open(&b, out, &err), 0);
    tu_assert_models_equal(a, b);
    assert_int_equal(b->alignment, 32);
    /* llama.cpp's writer lays the file out exactly as ours does (KVs and tensor
     * infos in order, offsets = running padded sum, padding after each tensor),
     * so the bytes are identical, not just the content. */
    assert_int_equal(a->maps[0].size, b->maps[0].size);
    assert_memory_equal(a->maps[0].base, b->maps[0].base, a->maps[0].size);
    apr_model_free(b);

    /* A different alignment: general.alignment is added, every offset obeys it. */
    apr_write_opts o = {.alignment = 64};
    assert_int_equal(apr_gguf_write(a, out, &o, &err), 0);
    assert_int_equal(apr_gguf_open(&b, out, &err), 0);
    assert_int_equal(b->alignment, 64);
    assert_int_equal(b->n_kvs, a->n_kvs + 1);
    for (uint64_t i = 0; i < b->n_tensors; i++)
        assert_int_equal(b->tensors[i].file_offset % 64, 0);
    /* ... and written back with the default it keeps 64 (the KV says so) */
    apr_model *c = NULL;
    char out2[4200];
    snprintf(out2, sizeof out2, "%s/rt2.gguf", dir);
    assert_int_equal(apr_gguf_write(b, out2, NULL, &err), 0);
    assert_int_equal(apr_gguf_open(&c, out2, &err), 0);
    tu_assert_models_equal(b, c);
    assert_int_equal(c->alignment, 64);
    apr_model_free(c);
    apr_model_free(b);
    apr_model_free(a);
}

/* ---------------------------------------------------------------- a model with every KV type */

static uint8_t g_payload[4][4096];

static apr_model *build_all_types_model(void)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "llama"), 0);
    apr_kv kv = {0};
    static const apr_kv_type scalars[] = {APR_KV_U8, APR_KV_I8, APR_KV_U16, APR_KV_I16, APR_KV_U32,
                                          APR_KV_I32, APR_KV_F32, APR_KV_BOOL, APR_KV_U64, APR_KV_I64,
                                          APR_KV_F64};
    char key[64];
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++) {
        memset(&kv, 0, sizeof kv);
        snprintf(key, sizeof key, "test.scalar.%s", apr_kv_type_name(scalars[i]));
        kv.key = key;
        kv.type = scalars[i];
        kv.v.u64 = 0xF1E2D3C4B5A69788ull; /* the low bytes are the value of each type */
        if (scalars[i] == APR_KV_BOOL)
            kv.v.u64 = 1;
        if (scalars[i] == APR_KV_F32)
            kv.v.f32 = 0.1f;
        if (scalars[i] == APR_KV_F64)
            kv.v.f64 = -1e300;
        assert_int_equal(apr_model_set_kv(m, &kv), 0);
        /* and an array of the same type */
        uint8_t arr[8 * 5];
        for (size_t k = 0; k < sizeof arr; k++)
            arr[k] = (uint8_t)(k * 37 + i);
        if (scalars[i] == APR_KV_BOOL)
            for (size_t k = 0; k < sizeof arr; k++)
                arr[k] &= 1;
        memset(&kv, 0, sizeof kv);
        snprintf(key, sizeof key, "test.array.%s", apr_kv_type_name(scalars[i]));
        kv.key = key;
        kv.type = APR_KV_ARRAY;
        kv.arr_type = scalars[i];
        kv.count = 5;
        kv.arr = arr;
        assert_int_equal(apr_model_set_kv(m, &kv), 0);
    }
    apr_str strs[3] = {{0, ""}, {5, "h\xc3\xa9llo"}, {3, "a\0b"}};
    memset(&kv, 0, sizeof kv);
    kv.key = "test.array.string";
    kv.type = APR_KV_ARRAY;
    kv.arr_type = APR_KV_STRING;
    kv.count = 3;
    kv.arr = strs;
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    memset(&kv, 0, sizeof kv);
    kv.key = "test.array.empty";
    kv.type = APR_KV_ARRAY;
    kv.arr_type = APR_KV_I32;
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    assert_int_equal(apr_model_set_kv_str(m, "test.string", "{% chat template %}\n"), 0);

    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4096; k++)
            g_payload[i][k] = (uint8_t)(k * 131 + i * 7 + (k >> 8));
    uint64_t d1[2] = {3, 64}, d2[2] = {2, 32}, d3[2] = {1, 256}, d4[1] = {7}, d5[3] = {2, 3, 4};
    assert_int_equal(apr_model_add_tensor(m, "w.f32", APR_DT_F32, 2, d1, g_payload[0], 3 * 64 * 4, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "w.q8_0", APR_DT_Q8_0, 2, d2, g_payload[1], 2 * 34, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "w.q4_k", APR_DT_Q4_K, 2, d3, g_payload[2], 144, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "w.bf16", APR_DT_BF16, 1, d4, g_payload[3], 14, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "w.f16.3d", APR_DT_F16, 3, d5, g_payload[3] + 100, 48, false, &err), 0);
    return m;
}

static void test_all_types_roundtrip(void **state)
{
    (void)state;
    char out[4200];
    snprintf(out, sizeof out, "%s/all.gguf", tu_tmpdir("gguf-all"));
    apr_model *a = build_all_types_model(), *b = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_write(a, out, NULL, &err), 0);
    assert_int_equal(apr_gguf_open(&b, out, &err), 0);
    tu_assert_models_equal(a, b);
    /* the file ends with the last tensor's padding */
    assert_int_equal(b->maps[0].size % 32, 0);
    apr_model *c = NULL;
    assert_int_equal(apr_gguf_write(b, out, NULL, &err), 0); /* over an existing file */
    assert_int_equal(apr_gguf_open(&c, out, &err), 0);
    tu_assert_models_equal(a, c);
    apr_model_free(c);
    apr_model_free(b);
    apr_model_free(a);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    char dir[4096], out[4200];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("gguf-rej"));
    snprintf(out, sizeof out, "%s/x.gguf", dir);
    apr_err err = {0};
    uint64_t d[2] = {2, 32};
    static uint8_t buf[4096];

    apr_model *m = apr_model_new(APR_FMT_GGUF);
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = 0;
    assert_int_equal(apr_model_add_tensor(m, longname, APR_DT_F32, 2, d, buf, 256, false, &err), 0);
    assert_int_not_equal(apr_gguf_write(m, out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "at most 63"));
    assert_int_not_equal(access(out, F_OK), 0);
    apr_model_free(m);

    m = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m, "u8", APR_DT_U8, 2, d, buf, 64, false, &err), 0);
    assert_int_not_equal(apr_gguf_write(m, out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "GGUF has no dtype U8"));
    apr_model_free(m);

    m = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m, "f", APR_DT_F32, 2, d, buf, 256, false, &err), 0);
    m->tensors[0].dtype = APR_DT_ROWCAT; /* as apr_model_add_rowcat_tensor would make it */
    assert_int_not_equal(apr_gguf_write(m, out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "ROWCAT"));
    m->tensors[0].dtype = APR_DT_F32;
    apr_write_opts o = {.alignment = 48};
    assert_int_not_equal(apr_gguf_write(m, out, &o, &err), 0);
    assert_non_null(strstr(err.msg, "power of two"));
    assert_int_not_equal(access(out, F_OK), 0);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- hostile input */

/* A small GGUF built byte by byte (independently of our writer), with knobs for
 * every lie a hostile file can tell. */
typedef struct gspec {
    const char *magic;
    uint32_t version;
    bool set_tc, set_kc;
    uint64_t tc, kc;
    const char *key2;         /* second KV key */
    uint64_t key2_len;        /* declared length of key2 (0: the real one) */
    uint64_t arr_count;       /* declared count of the f32 array (0: the real 3) */
    uint32_t align;           /* general.alignment value */
    const char *name_b;       /* second tensor name */
    uint32_t ndims_b;
    uint64_t ne_b[5];
    uint32_t type_b;
    uint64_t off_b;
} gspec;

static gspec default_spec(void)
{
    gspec s = {.magic = "GGUF", .version = 3, .key2 = "general.name", .align = 32, .name_b = "b",
               .ndims_b = 2, .ne_b = {32, 2}, .type_b = APR_DT_Q8_0, .off_b = 64};
    return s;
}

typedef struct gbuf {
    uint8_t b[8192];
    size_t n;
    size_t data_start; /* where the data section begins */
    size_t end_last;   /* end of the last tensor's payload */
} gbuf;

static void gput(gbuf *g, const void *p, size_t n) { memcpy(g->b + g->n, p, n); g->n += n; }
static void gu32(gbuf *g, uint32_t v) { gput(g, &v, 4); }
static void gu64(gbuf *g, uint64_t v) { gput(g, &v, 8); }
static void gstr(gbuf *g, const char *s, uint64_t declared)
{
    gu64(g, declared ? declared : strlen(s));
    gput(g, s, strlen(s));
}

static void build(gbuf *g, const gspec *s)
{
    memset(g, 0, sizeof *g);
    gput(g, s->magic, 4);
    gu32(g, s->version);
    gu64(g, s->set_tc ? s->tc : 2);
    gu64(g, s->set_kc ? s->kc : 4);
    gstr(g, "general.architecture", 0);
    gu32(g, APR_KV_STRING);
    gstr(g, "llama", 0);
    gstr(g, s->key2, s->key2_len);
    gu32(g, APR_KV_STRING);
    gstr(g, "tiny", 0);
    gstr(g, "general.alignment", 0);
    gu32(g, APR_KV_U32);
    gu32(g, s->align);
    gstr(g, "test.floats", 0);
    gu32(g, APR_KV_ARRAY);
    gu32(g, APR_KV_F32);
    gu64(g, s->arr_count ? s->arr_count : 3);
    float f[3] = {1.0f, 2.0f, 3.0f};
    gput(g, f, sizeof f);
    /* tensor a: F32, ne = [8, 2], 64 bytes at 0 */
    gstr(g, "a", 0);
    gu32(g, 2);
    gu64(g, 8);
    gu64(g, 2);
    gu32(g, APR_DT_F32);
    gu64(g, 0);
    /* tensor b: Q8_0, ne = [32, 2], 68 bytes at 64 */
    gstr(g, s->name_b, 0);
    gu32(g, s->ndims_b);
    for (uint32_t d = 0; d < s->ndims_b; d++)
        gu64(g, s->ne_b[d]);
    gu32(g, s->type_b);
    gu64(g, s->off_b);
    g->data_start = (g->n + 31) / 32 * 32;
    g->n = g->data_start;
    for (int i = 0; i < 64 + 68; i++)
        g->b[g->n++] = (uint8_t)i;
    g->end_last = g->n;
    g->n = (g->n + 31) / 32 * 32; /* trailing padding */
}

/* Parses g and expects failure with msg in the error text. */
static void expect_fail(const gbuf *g, size_t len, const char *msg)
{
    apr_model *m = (apr_model *)0x1;
    apr_err err = {0};
    /* an exact-size heap copy so that ASan sees any read past the end */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, g->b, len);
    int rc = apr_gguf_parse(&m, copy, len, &err);
    free(copy);
    if (rc == 0 || !strstr(err.msg, msg))
        fail_msg("len %zu: rc %d, message '%s', expected '%s'", len, rc, err.msg, msg);
    assert_null(m);
}

static void expect_spec_fail(const gspec *s, const char *msg)
{
    gbuf g;
    build(&g, s);
    expect_fail(&g, g.n, msg);
}

static void test_hostile_baseline(void **state)
{
    (void)state;
    gbuf g;
    gspec s = default_spec();
    build(&g, &s);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_parse(&m, g.b, g.n, &err), 0);
    assert_int_equal(m->n_tensors, 2);
    assert_int_equal(m->n_kvs, 4);
    assert_int_equal(m->tensors[1].dims[0], 2);
    assert_int_equal(m->tensors[1].dims[1], 32);
    assert_int_equal(m->tensors[1].nbytes, 68);
    assert_int_equal(m->tensors[1].file_offset, g.data_start + 64);
    apr_model_free(m);
    /* version 2 reads the same way */
    s.version = 2;
    build(&g, &s);
    assert_int_equal(apr_gguf_parse(&m, g.b, g.n, &err), 0);
    assert_int_equal(m->version, 2);
    apr_model_free(m);
    /* trailing padding after the last tensor is optional for readers */
    s.version = 3;
    build(&g, &s);
    assert_int_equal(apr_gguf_parse(&m, g.b, g.end_last, &err), 0);
    apr_model_free(m);
}

static void test_hostile_truncation(void **state)
{
    (void)state;
    gbuf g;
    gspec s = default_spec();
    build(&g, &s);
    /* Every prefix shorter than the header/KV/tensor-info sections fails as a
     * truncation (or as a count that cannot fit in what is left). */
    for (size_t len = 0; len < g.data_start; len++) {
        apr_model *m = NULL;
        apr_err err = {0};
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, g.b, len);
        int rc = apr_gguf_parse(&m, copy, len, &err);
        free(copy);
        if (rc == 0 || (!strstr(err.msg, "truncated") && !strstr(err.msg, "cannot fit") &&
                        !strstr(err.msg, "exceeds")))
            fail_msg("prefix %zu: rc %d '%s'", len, rc, err.msg);
    }
    /* cut inside the data section: the tensor that no longer fits is named */
    for (size_t len = g.data_start; len < g.end_last; len++)
        expect_fail(&g, len, "runs past the end of the file");
}

static void test_hostile_header(void **state)
{
    (void)state;
    gspec s = default_spec();
    s.magic = "GGUB";
    expect_spec_fail(&s, "bad magic");
    s = default_spec();
    s.version = 1;
    expect_spec_fail(&s, "version 1 is not supported");
    s.version = 4;
    expect_spec_fail(&s, "unsupported GGUF version 4");
    s.version = 0x03000000; /* a big-endian file */
    expect_spec_fail(&s, "big-endian");
    s = default_spec();
    s.set_kc = true;
    s.kc = UINT64_MAX / 2;
    expect_spec_fail(&s, "kv_count");
    s = default_spec();
    s.set_tc = true;
    s.tc = 1ull << 60;
    expect_spec_fail(&s, "tensor_count");
    s.tc = 3; /* one more than present: the third info is read from the padding */
    expect_spec_fail(&s, "tensor 2: empty name");
}

static void test_hostile_kvs(void **state)
{
    (void)state;
    gspec s = default_spec();
    s.key2_len = 1ull << 40;
    expect_spec_fail(&s, "exceeds the");
    s = default_spec();
    s.arr_count = UINT64_MAX / 4;
    expect_spec_fail(&s, "array count");
    s = default_spec();
    s.key2 = "general.architecture";
    expect_spec_fail(&s, "duplicate key 'general.architecture'");
    s = default_spec();
    s.align = 48;
    expect_spec_fail(&s, "not a power of two");
    s.align = 0;
    expect_spec_fail(&s, "not a power of two");
    s = default_spec();
    s.key2 = "bad\xff" "key";
    expect_spec_fail(&s, "not valid UTF-8");

    /* unknown value type, array of arrays, wrongly typed alignment: patch bytes */
    gbuf g;
    s = default_spec();
    build(&g, &s);
    size_t type_pos = 24 + 8 + strlen("general.architecture");
    uint32_t bad = 13;
    memcpy(g.b + type_pos, &bad, 4);
    expect_fail(&g, g.n, "unknown value type 13");
    build(&g, &s);
    uint8_t *p = memmem(g.b, g.n, "test.floats", 11);
    assert_non_null(p);
    uint32_t arr = APR_KV_ARRAY;
    memcpy(p + 11 + 4, &arr, 4); /* the element type */
    expect_fail(&g, g.n, "arrays of arrays");
    build(&g, &s);
    p = memmem(g.b, g.n, "general.alignment", 17);
    uint32_t i32 = APR_KV_I32;
    memcpy(p + 17, &i32, 4);
    expect_fail(&g, g.n, "must be u32");
}

static void test_hostile_tensors(void **state)
{
    (void)state;
    gspec s = default_spec();
    s.ndims_b = 5;
    s.ne_b[2] = s.ne_b[3] = s.ne_b[4] = 1;
    expect_spec_fail(&s, "n_dims 5 > 4");
    s = default_spec();
    s.ndims_b = 4;
    s.ne_b[0] = 1ull << 32;
    s.ne_b[1] = 1ull << 20;
    s.ne_b[2] = 1ull << 20;
    s.ne_b[3] = 1ull << 20;
    expect_spec_fail(&s, "overflows");
    s = default_spec();
    s.ne_b[1] = 1ull << 63;
    expect_spec_fail(&s, "negative");
    s = default_spec();
    s.type_b = 4; /* removed Q4_2 */
    expect_spec_fail(&s, "unknown or unsupported ggml type 4");
    s.type_b = 64; /* our U8 code is not a ggml type */
    expect_spec_fail(&s, "unknown or unsupported ggml type 64");
    s = default_spec();
    s.ne_b[0] = 48;
    expect_spec_fail(&s, "not a multiple of the Q8_0 block size");
    s = default_spec();
    s.off_b = 4096;
    expect_spec_fail(&s, "runs past the end of the file");
    s.off_b = UINT64_MAX - 31;
    expect_spec_fail(&s, "runs past the end of the file");
    s = default_spec();
    s.off_b = 48;
    expect_spec_fail(&s, "not a multiple of the alignment 32");
    s = default_spec();
    s.off_b = 32; /* a = [0, 64) */
    expect_spec_fail(&s, "overlapping");
    s = default_spec();
    s.name_b = "a";
    expect_spec_fail(&s, "duplicate tensor name 'a'");
    s = default_spec();
    s.name_b = "bad\xc3(name";
    expect_spec_fail(&s, "not valid UTF-8");
    s.name_b = "\xed\xa0\x80"; /* an encoded surrogate */
    expect_spec_fail(&s, "not valid UTF-8");
    s = default_spec();
    char longname[70];
    memset(longname, 'x', 64);
    longname[64] = 0;
    s.name_b = longname;
    expect_spec_fail(&s, "at most 63");
    longname[63] = 0; /* 63 bytes is allowed */
    gbuf g;
    build(&g, &s);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_parse(&m, g.b, g.n, &err), 0);
    apr_model_free(m);
}

static void test_open_errors(void **state)
{
    (void)state;
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_not_equal(apr_gguf_open(&m, "/nonexistent/x.gguf", &err), 0);
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    char p[4200];
    snprintf(p, sizeof p, "%s/empty.gguf", tu_tmpdir("gguf-open"));
    assert_int_equal(tu_write_file(p, "", 0), 0);
    assert_int_not_equal(apr_gguf_open(&m, p, &err), 0);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_non_null(strstr(err.msg, "empty.gguf"));
    assert_null(m);
}

/* ---------------------------------------------------------------- peer: PyPI gguf */

static void hex_bytes(char *out, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
}

static void sha_hex(const void *p, size_t n, char hex[65])
{
    uint8_t d[32];
    apr_sha256(p, n, d);
    apr_sha256_hex(d, hex);
}

/* Our reader's view in gguf_peer.py's line format. */
static char *our_dump(const apr_model *m)
{
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    char line[1024], hex[65];
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (kv->type == APR_KV_STRING) {
            sha_hex(kv->str.s, kv->str.len, hex);
            snprintf(line, sizeof line, "K %s string %s\n", kv->key, hex);
        } else if (kv->type == APR_KV_ARRAY) {
            apr_sha256_ctx *c = apr_sha256_new();
            if (kv->arr_type == APR_KV_STRING) {
                const apr_str *s = kv->arr;
                for (uint64_t k = 0; k < kv->count; k++) {
                    apr_sha256_update(c, &s[k].len, 8);
                    apr_sha256_update(c, s[k].s, s[k].len);
                }
            } else {
                apr_sha256_update(c, kv->arr, kv->count * apr_kv_type_size(kv->arr_type));
            }
            uint8_t d[32];
            apr_sha256_final(c, d);
            apr_sha256_hex(d, hex);
            /* gguf-py drops the element type of an empty array; the script prints "?" */
            snprintf(line, sizeof line, "K %s array:%s %llu %s\n", kv->key,
                     kv->count ? apr_kv_type_name(kv->arr_type) : "?",
                     (unsigned long long)kv->count, hex);
        } else {
            char hx[17];
            hex_bytes(hx, &kv->v, apr_kv_type_size(kv->type));
            snprintf(line, sizeof line, "K %s %s %s\n", kv->key, apr_kv_type_name(kv->type), hx);
        }
        size_t l = strlen(line);
        memcpy(out + len, line, l);
        len += l;
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        char ne[128] = "";
        for (uint32_t d = 0; d < t->ndim; d++)
            snprintf(ne + strlen(ne), sizeof ne - strlen(ne), "%s%llu", d ? "," : "",
                     (unsigned long long)t->dims[t->ndim - 1 - d]);
        sha_hex(t->data, t->nbytes, hex);
        snprintf(line, sizeof line, "T %s %d %s %llu %llu %s\n", t->name, (int)t->dtype, ne,
                 (unsigned long long)t->file_offset, (unsigned long long)t->nbytes, hex);
        size_t l = strlen(line);
        memcpy(out + len, line, l);
        len += l;
    }
    out[len] = 0;
    return out;
}

static void peer_check(const char *gguf_path, const char *dir)
{
    const char *src = getenv("APR_SOURCE_DIR");
    char script[4200], dump[4200];
    snprintf(script, sizeof script, "%s/tests/peer/gguf_peer.py", src && *src ? src : ".");
    snprintf(dump, sizeof dump, "%s/peer.txt", dir);
    int rc = tu_system(dump, "python3 '%s' '%s'", script, gguf_path);
    size_t n;
    char *theirs = tu_read_file(dump, &n);
    if (rc != 0)
        fail_msg("gguf_peer.py failed (%d): %s", rc, theirs ? theirs : "");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_gguf_open(&m, gguf_path, &err), 0);
    char *ours = our_dump(m);
    if (strcmp(ours, theirs) != 0) {
        print_message("ours:\n%s\ntheirs:\n%s\n", ours, theirs);
        fail_msg("the gguf package sees %s differently", gguf_path);
    }
    assert_true(m->n_tensors > 0 && strstr(theirs, "\nT ") != NULL);
    free(ours);
    free(theirs);
    apr_model_free(m);
}

static void test_peer_gguf_package(void **state)
{
    (void)state;
    tu_require_python("gguf", "gguf");
    char dir[4096], out[4200];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("gguf-peer"));
    snprintf(out, sizeof out, "%s/all.gguf", dir);
    apr_model *a = build_all_types_model();
    apr_err err = {0};
    assert_int_equal(apr_gguf_write(a, out, NULL, &err), 0);
    apr_model_free(a);
    peer_check(out, dir);

    const char *fx = tu_shared_part(FIXTURE);
    if (fx) {
        apr_model *f = NULL;
        assert_int_equal(apr_gguf_open(&f, fx, &err), 0);
        apr_write_opts o = {.alignment = 64};
        snprintf(out, sizeof out, "%s/fixture64.gguf", dir);
        assert_int_equal(apr_gguf_write(f, out, &o, &err), 0);
        apr_model_free(f);
        peer_check(out, dir);
    } else {
        print_message("NOTE: fixture absent, peer check ran on the synthetic model only\n");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_opens),
        cmocka_unit_test(test_fixture_roundtrip),
        cmocka_unit_test(test_all_types_roundtrip),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_hostile_baseline),
        cmocka_unit_test(test_hostile_truncation),
        cmocka_unit_test(test_hostile_header),
        cmocka_unit_test(test_hostile_kvs),
        cmocka_unit_test(test_hostile_tensors),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_peer_gguf_package),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
