/* test_many_keys.c - the readers' duplicate-key checks are O(n log n): an APR
 * file with 200k gguf_kv entries and a safetensors header with 200k tensors
 * or 200k __metadata__ keys open in well under a second each (a check of
 * every key against all before it took minutes), and a duplicate among them
 * is still refused. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MANY many_keys()
/* APR_MANY_KEYS overrides the count (to measure how time grows with it). */
static int many_keys(void)
{
    const char *e = getenv("APR_MANY_KEYS");
    return e && atoi(e) > 1 ? atoi(e) : 200000;
}

/* Generous for a sanitizer build on a loaded machine; the quadratic checks
 * took minutes at this size. */
#define LIMIT_S 20.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A growable text buffer for the headers. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap ? 2 * t->cap + (size_t)n : 1 << 20;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
}

/* A safetensors image: u64 length, header, data. */
static uint8_t *st_image(const text *h, size_t data_bytes, size_t *len)
{
    uint8_t *b = calloc(1, 8 + h->len + data_bytes);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)h->len >> (8 * i));
    memcpy(b + 8, h->s, h->len);
    *len = 8 + h->len + data_bytes;
    return b;
}

/* n one-element F32 tensors named t000000..; dup: the last repeats the first. */
static text many_tensors_header(size_t n, bool dup)
{
    text h = {0};
    put(&h, "{");
    for (size_t i = 0; i < n; i++)
        put(&h, "%s\"t%06zu\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}", i ? "," : "",
            dup && i == n - 1 ? (size_t)0 : i, 4 * i, 4 * i + 4);
    put(&h, "}");
    return h;
}

static void test_safetensors_many_tensors(void **state)
{
    (void)state;
    text h = many_tensors_header(MANY, false);
    size_t len;
    uint8_t *img = st_image(&h, 4 * (size_t)MANY, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    double t0 = now_s();
    int rc = apr_safetensors_parse(&m, img, len, &err);
    double dt = now_s() - t0;
    print_message("safetensors header with %d tensors: %.3f s\n", MANY, dt);
    assert_int_equal(rc, 0);
    assert_int_equal(m->n_tensors, MANY);
    assert_true(dt < LIMIT_S);
    apr_model_free(m);
    free(img);
    free(h.s);

    h = many_tensors_header(MANY, true);
    img = st_image(&h, 4 * (size_t)MANY, &len);
    rc = apr_safetensors_parse(&m, img, len, &err);
    assert_int_not_equal(rc, 0);
    assert_null(m);
    print_message("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "t000000"));
    free(img);
    free(h.s);
}

/* __metadata__ with n free strings and an apr.kvs list of n u32 KVs;
 * dup_kvs: the list repeats its first key; dup_free: the list holds the KV
 * the first free string becomes. */
static text many_metadata_header(size_t n, bool dup_kvs, bool dup_free)
{
    text h = {0};
    put(&h, "{\"__metadata__\":{\"format\":\"pt\"");
    for (size_t i = 0; i < n; i++)
        put(&h, ",\"m%06zu\":\"v\"", i);
    put(&h, ",\"apr.kvs\":\"[");
    for (size_t i = 0; i < n; i++)
        put(&h, "%s{\\\"key\\\":\\\"k.%06zu\\\",\\\"type\\\":\\\"u32\\\",\\\"value\\\":%zu}", i ? "," : "",
            dup_kvs && i == n - 1 ? (size_t)0 : i, i);
    if (dup_free)
        put(&h, ",{\\\"key\\\":\\\"safetensors.metadata.m000000\\\",\\\"type\\\":\\\"string\\\",\\\"value\\\":\\\"v\\\"}");
    put(&h, "]\"},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    return h;
}

static void test_safetensors_many_metadata_keys(void **state)
{
    (void)state;
    text h = many_metadata_header(MANY, false, false);
    size_t len;
    uint8_t *img = st_image(&h, 4, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    double t0 = now_s();
    int rc = apr_safetensors_parse(&m, img, len, &err);
    double dt = now_s() - t0;
    print_message("safetensors __metadata__ with %d strings and %d apr.kvs: %.3f s\n", MANY, MANY, dt);
    assert_int_equal(rc, 0);
    assert_int_equal(m->n_kvs, 2 * MANY);
    char last_key[32], last_meta[64];
    snprintf(last_key, sizeof last_key, "k.%06d", MANY - 1);
    snprintf(last_meta, sizeof last_meta, "safetensors.metadata.m%06d", MANY - 1);
    assert_non_null(apr_model_kv(m, last_key));
    assert_string_equal(apr_kv_get_str(m, last_meta), "v");
    assert_true(dt < LIMIT_S);
    apr_model_free(m);
    free(img);
    free(h.s);

    for (int variant = 0; variant < 2; variant++) {
        h = many_metadata_header(MANY, variant == 0, variant == 1);
        img = st_image(&h, 4, &len);
        rc = apr_safetensors_parse(&m, img, len, &err);
        assert_int_not_equal(rc, 0);
        assert_null(m);
        print_message("refused: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "duplicate key"));
        assert_non_null(strstr(err.msg, variant == 0 ? "'k.000000'" : "'safetensors.metadata.m000000'"));
        free(img);
        free(h.s);
    }
}

/* An APR model with n u32 KVs k.000000.. (dup: the last repeats the first)
 * and one tensor, written to path. */
static void write_many_kv_apr(const char *path, size_t n, bool dup)
{
    apr_model *m = apr_model_new(APR_FMT_APR);
    assert_non_null(m);
    m->kvs = calloc(n, sizeof *m->kvs);
    assert_non_null(m->kvs);
    for (size_t i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "k.%06zu", dup && i == n - 1 ? (size_t)0 : i);
        m->kvs[i].key = strdup(key);
        m->kvs[i].type = APR_KV_U32;
        m->kvs[i].v.u32 = (uint32_t)i;
        m->n_kvs++;
    }
    static const float w = 1.0f;
    uint64_t dims[1] = {1};
    apr_err err = {0};
    assert_int_equal(apr_model_add_tensor(m, "w", APR_DT_F32, 1, dims, &w, sizeof w, false, &err), 0);
    apr_write_opts o = {0};
    int rc = apr_apr_write(m, path, &o, &err);
    if (rc)
        print_message("write: %s\n", err.msg);
    assert_int_equal(rc, 0);
    apr_model_free(m);
}

static void test_apr_many_gguf_kv(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("many_keys");
    char path[4096];
    snprintf(path, sizeof path, "%s/many.apr", dir);
    write_many_kv_apr(path, MANY, false);
    apr_model *m = NULL;
    apr_err err = {0};
    double t0 = now_s();
    int rc = apr_model_open(&m, path, NULL, &err);
    double dt = now_s() - t0;
    print_message("APR with %d gguf_kv entries: %.3f s\n", MANY, dt);
    if (rc)
        print_message("open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(m->n_kvs, MANY);
    char last_key[32];
    snprintf(last_key, sizeof last_key, "k.%06d", MANY - 1);
    assert_int_equal(apr_model_kv(m, last_key)->v.u32, MANY - 1);
    assert_true(dt < LIMIT_S);
    apr_model_free(m);

    write_many_kv_apr(path, MANY, true);
    rc = apr_model_open(&m, path, NULL, &err);
    assert_int_not_equal(rc, 0);
    assert_null(m);
    print_message("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "duplicate key 'k.000000'"));
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors_many_tensors),
        cmocka_unit_test(test_safetensors_many_metadata_keys),
        cmocka_unit_test(test_apr_many_gguf_kv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
