/* test_kvjson.c - the one typed-KV <-> JSON value codec (formats/core/kvjson.c)
 * at its edges: every integer type's range limits in both directions, the
 * dialects' integer / float / byte conventions (APR, HF, SHOW), wrong JSON
 * kinds refused with an error that names the key, and every value of every
 * type reading back bit for bit. */
#include "test_util.h"

#include "kvjson.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const apr_kvjson_dialect both[] = {APR_KVJSON_APR, APR_KVJSON_HF};

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j)
        print_message("bad test JSON %s: %s\n", text, je.text);
    assert_non_null(j);
    return j;
}

/* Decodes text as a scalar of type t; 0 and the value in *bits, or the error. */
static int dec(const char *text, apr_kv_type t, apr_kvjson_dialect d, uint64_t *bits, apr_err *err)
{
    json_t *j = parse(text);
    apr_kv kv = {.key = NULL, .type = t};
    int rc = apr_kvjson_decode(j, &kv, d, "KV 'k.x'", err);
    json_decref(j);
    *bits = kv.v.u64;
    return rc;
}

static void expect_ok(const char *text, apr_kv_type t, apr_kvjson_dialect d, uint64_t want)
{
    uint64_t got = 0;
    apr_err err = {0};
    int rc = dec(text, t, d, &got, &err);
    if (rc || got != want)
        print_message("%s as %s (dialect %d): rc %d '%s', 0x%llx, want 0x%llx\n", text, apr_kv_type_name(t), (int)d,
                      rc, err.msg, (unsigned long long)got, (unsigned long long)want);
    assert_int_equal(rc, 0);
    assert_true(got == want);
}

static void expect_err(const char *text, apr_kv_type t, apr_kvjson_dialect d, const char *msg)
{
    uint64_t got = 0;
    apr_err err = {0};
    int rc = dec(text, t, d, &got, &err);
    if (rc != APR_E_FORMAT || !strstr(err.msg, msg) || strncmp(err.msg, "KV 'k.x'", 8) != 0)
        print_message("%s as %s (dialect %d): rc %d '%s', want '%s'\n", text, apr_kv_type_name(t), (int)d, rc,
                      err.msg, msg);
    assert_int_equal(rc, APR_E_FORMAT);
    assert_non_null(strstr(err.msg, msg));
    assert_memory_equal(err.msg, "KV 'k.x'", 8); /* the error names the key */
}

/* The JSON text of one scalar (bits) in dialect d, as jansson dumps it. */
static void enc_text(apr_kv_type t, uint64_t bits, apr_kvjson_dialect d, size_t flags, char *out, size_t n)
{
    apr_kv kv = {.key = "k.x", .type = t};
    kv.v.u64 = bits;
    apr_err err = {0};
    json_t *j = apr_kvjson_encode(&kv, d, UINT64_MAX, &err);
    if (!j)
        print_message("encode: %s\n", err.msg);
    assert_non_null(j);
    char *s = json_dumps(j, flags | JSON_ENCODE_ANY | JSON_COMPACT);
    assert_non_null(s);
    snprintf(out, n, "%s", s);
    free(s);
    json_decref(j);
}

static void expect_enc(apr_kv_type t, uint64_t bits, apr_kvjson_dialect d, size_t flags, const char *want)
{
    char got[128];
    enc_text(t, bits, d, flags, got, sizeof got);
    if (strcmp(got, want))
        print_message("%s 0x%llx (dialect %d): %s, want %s\n", apr_kv_type_name(t), (unsigned long long)bits, (int)d,
                      got, want);
    assert_string_equal(got, want);
}

/* One decoding case: text as type t in the dialects of mask (bit d for
 * dialect d), giving bits, or refused with msg (after the key). */
#define M_APR (1u << APR_KVJSON_APR)
#define M_HF (1u << APR_KVJSON_HF)
#define M_BOTH (M_APR | M_HF)
typedef struct dcase {
    const char *text;
    apr_kv_type t;
    unsigned mask;
    uint64_t bits;
    const char *msg; /* NULL: decodes to bits */
} dcase;

static void run_cases(const dcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (apr_kvjson_dialect d = 0; d < APR_KVJSON_SHOW; d++) {
            if (!(c[i].mask & (1u << d)))
                continue;
            if (c[i].msg)
                expect_err(c[i].text, c[i].t, d, c[i].msg);
            else
                expect_ok(c[i].text, c[i].t, d, c[i].bits);
        }
}

static void test_integer_ranges(void **state)
{
    (void)state;
    static const struct {
        apr_kv_type t;
        const char *min, *max, *below, *above;
        uint64_t minbits, maxbits;
    } r[] = {
        {APR_KV_U8, "0", "255", "-1", "256", 0, 0xff},
        {APR_KV_I8, "-128", "127", "-129", "128", 0x80, 0x7f},
        {APR_KV_U16, "0", "65535", "-1", "65536", 0, 0xffff},
        {APR_KV_I16, "-32768", "32767", "-32769", "32768", 0x8000, 0x7fff},
        {APR_KV_U32, "0", "4294967295", "-1", "4294967296", 0, 0xffffffffu},
        {APR_KV_I32, "-2147483648", "2147483647", "-2147483649", "2147483648", 0x80000000u, 0x7fffffffu},
    };
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof r / sizeof *r; i++) {
            expect_ok(r[i].min, r[i].t, both[k], r[i].minbits);
            expect_ok(r[i].max, r[i].t, both[k], r[i].maxbits);
            expect_err(r[i].below, r[i].t, both[k], "is out of range for");
            expect_err(r[i].above, r[i].t, both[k], "is out of range for");
            /* small integers never travel as strings */
            expect_err("\"1\"", r[i].t, both[k], "expected an integer, got a string");
        }
}

/* Every decoding case: u64 with JSON integers up to INT64_MAX, decimal strings to
 * UINT64_MAX (both dialects); i64 as APR writes it beyond +-2^53 (strings),
 * HF every i64 (an integer); floats; wrong JSON kinds. */
static const dcase cases[] = {
    {"9223372036854775807", APR_KV_U64, M_BOTH, INT64_MAX, NULL},
    {"\"18446744073709551615\"", APR_KV_U64, M_BOTH, UINT64_MAX, NULL},
    {"\"0\"", APR_KV_U64, M_BOTH, 0, NULL},
    {"\"18446744073709551616\"", APR_KV_U64, M_BOTH, 0, "is not a decimal u64"},
    {"-1", APR_KV_U64, M_BOTH, 0, "-1 is out of range for u64"},
    {"\"-1\"", APR_KV_U64, M_BOTH, 0, "-1 is out of range for u64"},
    {"\" 5\"", APR_KV_U64, M_BOTH, 0, "is not a decimal u64"},
    {"\"+5\"", APR_KV_U64, M_BOTH, 0, "is not a decimal u64"},
    {"\"\"", APR_KV_U64, M_BOTH, 0, "is not a decimal u64"},
    {"1.5", APR_KV_U64, M_BOTH, 0, "expected an integer or a decimal string, got a real"},
    {"-9223372036854775808", APR_KV_I64, M_BOTH, (uint64_t)INT64_MIN, NULL},
    {"9223372036854775807", APR_KV_I64, M_BOTH, INT64_MAX, NULL},
    {"\"-9223372036854775808\"", APR_KV_I64, M_APR, (uint64_t)INT64_MIN, NULL},
    {"\"-9223372036854775809\"", APR_KV_I64, M_APR, 0, "out of range for i64"},
    {"\"9223372036854775808\"", APR_KV_I64, M_APR, 0, "out of range for i64"},
    {"\"5\"", APR_KV_I64, M_HF, 0, "expected an integer, got a string"},
    {"300", APR_KV_U8, M_BOTH, 0, "KV 'k.x': 300 is out of range for u8 [0, 255]"},
    {"\"0x7fc01234\"", APR_KV_F32, M_BOTH, 0x7fc01234u, NULL},
    {"\"0xFFF0000000000000\"", APR_KV_F64, M_BOTH, 0xfff0000000000000ull, NULL},
    {"2", APR_KV_F32, M_BOTH, 0x40000000u, NULL},
    {"0.5", APR_KV_F64, M_BOTH, 0x3fe0000000000000ull, NULL},
    /* FLT_MAX's shortest decimal is above FLT_MAX but rounds to it */
    {"3.4028235e38", APR_KV_F32, M_BOTH, 0x7f7fffffu, NULL},
    {"1e39", APR_KV_F32, M_BOTH, 0, "1e+39 does not fit an f32"},
    {"3.4028236e38", APR_KV_F32, M_BOTH, 0, "does not fit an f32"},
    {"\"0x7fc0123\"", APR_KV_F32, M_BOTH, 0, "is not \"0x\" and 8 hex digits (f32 bits)"},
    {"\"0x7fc0123400\"", APR_KV_F32, M_BOTH, 0, "is not \"0x\" and 8 hex digits"},
    {"\"0x7ff000000000000g\"", APR_KV_F64, M_BOTH, 0, "16 hex digits"},
    {"\"1.5\"", APR_KV_F32, M_BOTH, 0, "is not \"0x<hex bits>\""},
    {"true", APR_KV_F32, M_BOTH, 0, "expected a number, got a boolean"},
    /* decimal strings: f64 in HF only (its writer's form) */
    {"\"0.10000000000000001\"", APR_KV_F64, M_HF, 0x3fb999999999999aull, NULL},
    {"\"-0\"", APR_KV_F64, M_HF, 0x8000000000000000ull, NULL},
    {"\"0.1\"", APR_KV_F64, M_APR, 0, "is not \"0x<hex bits>\""},
    {"\"inf\"", APR_KV_F64, M_HF, 0, "is not a finite decimal number"},
    {"\" 1\"", APR_KV_F64, M_HF, 0, "is not a finite decimal number"},
    {"\"1x\"", APR_KV_F64, M_HF, 0, "is not a finite decimal number"},
    {"1", APR_KV_BOOL, M_BOTH, 0, "KV 'k.x': expected true or false, got an integer"},
    {"\"true\"", APR_KV_BOOL, M_BOTH, 0, "expected true or false, got a string"},
    {"null", APR_KV_U32, M_BOTH, 0, "expected an integer, got null"},
    {"{}", APR_KV_I16, M_BOTH, 0, "expected an integer, got an object"},
    {"[1]", APR_KV_F32, M_BOTH, 0, "expected a number, got an array"},
    {"true", APR_KV_U8, M_BOTH, 0, "expected an integer, got a boolean"},
    {"5", APR_KV_STRING, M_APR, 0, "expected a string or {\"hex\": ...}, got an integer"},
    {"5", APR_KV_STRING, M_HF, 0, "expected a string, got an integer"},
    {"{\"hex\":\"ff\"}", APR_KV_STRING, M_HF, 0, "expected a string, got an object"},
};

static void test_decode_cases(void **state)
{
    (void)state;
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_integer_encoding(void **state)
{
    (void)state;
    const uint64_t L = UINT64_C(1) << 53;
    /* APR: integers within +-2^53, the rest decimal strings */
    expect_enc(APR_KV_U64, L, APR_KVJSON_APR, 0, "9007199254740992");
    expect_enc(APR_KV_U64, L + 1, APR_KVJSON_APR, 0, "\"9007199254740993\"");
    expect_enc(APR_KV_I64, (uint64_t)-(int64_t)L, APR_KVJSON_APR, 0, "-9007199254740992");
    expect_enc(APR_KV_I64, (uint64_t)(-(int64_t)L - 1), APR_KVJSON_APR, 0, "\"-9007199254740993\"");
    expect_enc(APR_KV_I64, L + 1, APR_KVJSON_APR, 0, "\"9007199254740993\"");
    /* HF and SHOW: every int64 an integer, u64 above INT64_MAX a string */
    for (apr_kvjson_dialect d = APR_KVJSON_HF; d <= APR_KVJSON_SHOW; d++) {
        expect_enc(APR_KV_U64, INT64_MAX, d, 0, "9223372036854775807");
        expect_enc(APR_KV_U64, (uint64_t)INT64_MAX + 1, d, 0, "\"9223372036854775808\"");
        expect_enc(APR_KV_I64, (uint64_t)INT64_MIN, d, 0, "-9223372036854775808");
    }
    /* sign extension of the small signed types */
    expect_enc(APR_KV_I8, 0x80, APR_KVJSON_APR, 0, "-128");
    expect_enc(APR_KV_I16, 0xffff, APR_KVJSON_HF, 0, "-1");
    expect_enc(APR_KV_I32, 0x80000000u, APR_KVJSON_SHOW, 0, "-2147483648");
    expect_enc(APR_KV_U32, 0xffffffffu, APR_KVJSON_APR, 0, "4294967295");
    expect_enc(APR_KV_BOOL, 1, APR_KVJSON_HF, 0, "true");
}

static uint64_t f32bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t f64bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static void test_floats(void **state)
{
    (void)state;
    /* f32: APR writes the exact double (17 digits), HF the shortest decimal (9) */
    expect_enc(APR_KV_F32, f32bits(0.1f), APR_KVJSON_APR, JSON_REAL_PRECISION(17), "0.10000000149011612");
    expect_enc(APR_KV_F32, f32bits(0.1f), APR_KVJSON_HF, JSON_REAL_PRECISION(9), "0.1");
    expect_enc(APR_KV_F32, f32bits(0.1f), APR_KVJSON_SHOW, JSON_REAL_PRECISION(9), "0.100000001");
    expect_enc(APR_KV_F64, f64bits(0.1), APR_KVJSON_APR, JSON_REAL_PRECISION(17), "0.10000000000000001");
    expect_enc(APR_KV_F64, f64bits(0.1), APR_KVJSON_HF, 0, "\"0.10000000000000001\"");
    /* NaN / infinities: bits (APR, HF) or null (SHOW) */
    expect_enc(APR_KV_F32, 0x7fc01234u, APR_KVJSON_APR, 0, "\"0x7fc01234\"");
    expect_enc(APR_KV_F32, 0xff800000u, APR_KVJSON_HF, 0, "\"0xff800000\"");
    expect_enc(APR_KV_F64, 0xfff0000000000000ull, APR_KVJSON_APR, 0, "\"0xfff0000000000000\"");
    expect_enc(APR_KV_F64, 0x7ff8000000000001ull, APR_KVJSON_SHOW, 0, "null");
    expect_enc(APR_KV_F32, 0x7f800000u, APR_KVJSON_SHOW, 0, "null");
}

/* Decodes text as an array of et into kv (freed by the caller). */
static int dec_array(const char *text, apr_kv_type et, apr_kvjson_dialect d, apr_kv *kv, apr_err *err)
{
    json_t *j = parse(text);
    memset(kv, 0, sizeof *kv);
    kv->type = APR_KV_ARRAY;
    kv->arr_type = et;
    int rc = apr_kvjson_decode(j, kv, d, "KV 'k.arr'", err);
    json_decref(j);
    return rc;
}

static void test_strings_and_arrays(void **state)
{
    (void)state;
    apr_kv kv;
    apr_err err = {0};
    /* bytes that are not UTF-8: {"hex"} in APR, refused by HF's writer, naming the key */
    apr_kv bad = {.key = "k.bad", .type = APR_KV_STRING, .str = {3, "x\x80y"}};
    char got[128];
    json_t *j = apr_kvjson_encode(&bad, APR_KVJSON_APR, UINT64_MAX, &err);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "{\"hex\":\"788079\"}");
    free(s);
    memset(&kv, 0, sizeof kv);
    kv.type = APR_KV_STRING;
    assert_int_equal(apr_kvjson_decode(j, &kv, APR_KVJSON_APR, "KV 'k.bad'", &err), 0);
    assert_int_equal(kv.str.len, 3);
    assert_memory_equal(kv.str.s, "x\x80y", 3);
    apr_kv_free(&kv);
    json_decref(j);
    assert_null(apr_kvjson_encode(&bad, APR_KVJSON_HF, UINT64_MAX, &err));
    assert_int_equal(err.code, APR_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "KV 'k.bad': string 'x"));
    assert_non_null(strstr(err.msg, "is not valid UTF-8"));
    assert_null(apr_kvjson_encode(&bad, APR_KVJSON_SHOW, UINT64_MAX, &err));
    /* malformed {"hex"} objects */
    static const char *hexes[] = {"{\"hex\":\"abc\"}", "{\"hex\":\"zz\"}", "{\"hex\":1}", "{\"hex\":\"ab\",\"x\":1}"};
    for (size_t i = 0; i < sizeof hexes / sizeof *hexes; i++) {
        memset(&kv, 0, sizeof kv);
        kv.type = APR_KV_STRING;
        j = parse(hexes[i]);
        assert_int_equal(apr_kvjson_decode(j, &kv, APR_KVJSON_APR, "KV 'k.s'", &err), APR_E_FORMAT);
        assert_non_null(strstr(err.msg, "KV 'k.s': "));
        apr_kv_free(&kv);
        json_decref(j);
    }
    /* arrays: an element's error names the key and the element; nested arrays are refused */
    assert_int_equal(dec_array("[1,2,300]", APR_KV_U8, APR_KVJSON_HF, &kv, &err), APR_E_FORMAT);
    assert_string_equal(err.msg, "KV 'k.arr', element 2: 300 is out of range for u8 [0, 255]");
    apr_kv_free(&kv);
    assert_int_equal(dec_array("[[1]]", APR_KV_I32, APR_KVJSON_APR, &kv, &err), APR_E_FORMAT);
    assert_string_equal(err.msg, "KV 'k.arr', element 0: expected an integer, got an array");
    apr_kv_free(&kv);
    assert_int_equal(dec_array("[\"a\",7]", APR_KV_STRING, APR_KVJSON_HF, &kv, &err), APR_E_FORMAT);
    assert_string_equal(err.msg, "KV 'k.arr', element 1: expected a string, got an integer");
    apr_kv_free(&kv);
    assert_int_equal(dec_array("{\"a\":1}", APR_KV_U8, APR_KVJSON_APR, &kv, &err), APR_E_FORMAT);
    assert_string_equal(err.msg, "KV 'k.arr': expected an array, got an object");
    apr_kv_free(&kv);
    assert_int_equal(dec_array("[1]", APR_KV_ARRAY, APR_KVJSON_APR, &kv, &err), APR_E_ARG);
    apr_kv_free(&kv);
    assert_int_equal(dec_array("[]", APR_KV_F64, APR_KVJSON_HF, &kv, &err), 0);
    assert_int_equal(kv.count, 0);
    apr_kv_free(&kv);
    apr_kv nested = {.key = "k.n", .type = APR_KV_ARRAY, .arr_type = APR_KV_ARRAY};
    assert_null(apr_kvjson_encode(&nested, APR_KVJSON_APR, UINT64_MAX, &err));
    assert_int_equal(err.code, APR_E_ARG);
    assert_non_null(strstr(err.msg, "KV 'k.n'"));
    /* SHOW: an array's head only */
    uint16_t u16s[5] = {1, 2, 3, 4, 65535};
    apr_kv a = {.key = "k.a", .type = APR_KV_ARRAY, .arr_type = APR_KV_U16, .count = 5, .arr = u16s};
    j = apr_kvjson_encode(&a, APR_KVJSON_SHOW, 3, &err);
    s = json_dumps(j, JSON_COMPACT);
    snprintf(got, sizeof got, "%s", s);
    free(s);
    json_decref(j);
    assert_string_equal(got, "[1,2,3]");
    assert_int_equal(apr_kvjson_type("array"), APR_KV_ARRAY);
    assert_int_equal(apr_kvjson_type("f64"), APR_KV_F64);
    assert_int_equal(apr_kvjson_type("u128"), -1);
}

/* Every type's extremes (and NaN payloads) encode and decode back to the
 * same bits, in each dialect that is read back, through the dumped text. */
static void test_roundtrip(void **state)
{
    (void)state;
    static const struct {
        apr_kv_type t;
        uint64_t bits;
    } v[] = {
        {APR_KV_U8, 0xff}, {APR_KV_I8, 0x80}, {APR_KV_U16, 0xffff}, {APR_KV_I16, 0x8000},
        {APR_KV_U32, 0xffffffffu}, {APR_KV_I32, 0x80000000u}, {APR_KV_U64, UINT64_MAX},
        {APR_KV_U64, UINT64_C(1) << 53}, {APR_KV_U64, (UINT64_C(1) << 53) + 1}, {APR_KV_I64, (uint64_t)INT64_MIN},
        {APR_KV_I64, INT64_MAX}, {APR_KV_I64, (uint64_t)(-(INT64_C(1) << 53) - 1)},
        {APR_KV_F32, 0x7fc01234u}, {APR_KV_F32, 0x00000001u}, {APR_KV_F32, 0x80000000u}, {APR_KV_F32, 0x7f7fffffu},
        {APR_KV_F32, 0x3dcccccdu}, {APR_KV_F64, 0xfff8000000000001ull}, {APR_KV_F64, 1},
        {APR_KV_F64, 0x7fefffffffffffffull}, {APR_KV_F64, 0x8000000000000000ull}, {APR_KV_F64, 0x3fb999999999999aull},
        {APR_KV_BOOL, 1}, {APR_KV_BOOL, 0},
    };
    static const size_t prec[] = {JSON_REAL_PRECISION(17), JSON_REAL_PRECISION(9)}; /* as each format dumps */
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
            char text[128];
            enc_text(v[i].t, v[i].bits, both[k], prec[k], text, sizeof text);
            expect_ok(text, v[i].t, both[k], v[i].bits);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_integer_encoding),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_decode_cases),
        cmocka_unit_test(test_strings_and_arrays),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
