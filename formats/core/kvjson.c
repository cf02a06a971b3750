/* kvjson.c - JSON values: the f32 convention every JSON apr writes follows
 * (apr_json_f32), strings out of JSON (apr_json_to_str), and the one codec
 * between typed KV values and JSON (apr_kvjson_encode, apr_kvjson_decode).
 *
 * Two tables drive both directions: kv_types (per KV type: its JSON kind and,
 * for integers, its range) and dialects (per place that writes typed KVs:
 * which integers it writes as JSON integers, how it writes floats and bytes
 * that are not UTF-8; apr_json.h says which files use which). The reader of
 * a dialect accepts what its writer writes, in the type's range:
 *   integer types  a JSON integer; a decimal string too where the type's range
 *                  goes beyond the dialect's JSON integers (so the writer may
 *                  have written one)
 *   f32, f64       a JSON number (an f32 one that rounds to a finite float), or
 *                  "0x" and the value's bits in 8 / 16 hex digits; a decimal
 *                  string too where the dialect writes that type as one
 *   bool           true / false
 *   string         a JSON string; {"hex": "..."} too where the dialect writes it
 *   array          a JSON array of its element type's values */
#include "kvjson.h"

#include "apr_internal.h" /* apr_utf8_valid */

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ JSON scalars */

static bool f32_bits_equal(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* The double of the shortest decimal string that reads back (via double) as f. */
static double f32_shortest_double(float f)
{
    char buf[64];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if (f32_bits_equal((float)d, f))
            return d;
    }
    /* Double rounding (decimal -> double -> float) can in rare cases miss
     * with the 9-digit string; the exact double of f always works. */
    return (double)f;
}

json_t *apr_json_f32(float f)
{
    if (!isfinite(f))
        return NULL;
    return json_real(f32_shortest_double(f));
}

bool apr_json_get_f32(const json_t *j, float *out)
{
    if (!json_is_number(j))
        return false;
    *out = (float)json_number_value(j);
    return true;
}

int apr_json_to_str(const json_t *j, apr_str *s, const char *what, apr_err *err)
{
    if (!json_is_string(j))
        return apr_err_set(err, APR_E_FORMAT, "%s: expected a string", what);
    size_t n = json_string_length(j);
    s->s = malloc(n + 1);
    if (!s->s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    memcpy(s->s, json_string_value(j), n);
    s->s[n] = 0;
    s->len = n;
    return 0;
}

/* ================================================================ the tables */

typedef enum kj_kind { KJ_NONE, KJ_INT, KJ_REAL, KJ_BOOL, KJ_STRING, KJ_ARRAY } kj_kind;

/* Each KV type's JSON kind and, for the integer types, its range [lo, hi]
 * (lo < 0: signed). */
static const struct kv_type_info {
    kj_kind kind;
    int64_t lo;
    uint64_t hi;
} kv_types[APR_KV_TYPE_COUNT] = {
    [APR_KV_U8] = {KJ_INT, 0, UINT8_MAX},
    [APR_KV_I8] = {KJ_INT, INT8_MIN, INT8_MAX},
    [APR_KV_U16] = {KJ_INT, 0, UINT16_MAX},
    [APR_KV_I16] = {KJ_INT, INT16_MIN, INT16_MAX},
    [APR_KV_U32] = {KJ_INT, 0, UINT32_MAX},
    [APR_KV_I32] = {KJ_INT, INT32_MIN, INT32_MAX},
    [APR_KV_U64] = {KJ_INT, 0, UINT64_MAX},
    [APR_KV_I64] = {KJ_INT, INT64_MIN, INT64_MAX},
    [APR_KV_F32] = {KJ_REAL, 0, 0},
    [APR_KV_F64] = {KJ_REAL, 0, 0},
    [APR_KV_BOOL] = {KJ_BOOL, 0, 0},
    [APR_KV_STRING] = {KJ_STRING, 0, 0},
    [APR_KV_ARRAY] = {KJ_ARRAY, 0, 0},
};

/* What the dialects (apr_json.h) write differently. */
static const struct kv_dialect {
    int64_t int_lo, int_hi; /* integers in [int_lo, int_hi] are JSON integers, the others decimal strings */
    bool f32_shortest;      /* f32 as the double of its shortest decimal (else its exact double) */
    bool f64_string;        /* f64 as a "%.17g" decimal string (else a JSON real) */
    bool nonfinite_null;    /* NaN and infinities as null (else "0x<hex bits>") */
    bool hex_bytes;         /* bytes that are not UTF-8 as {"hex": "..."} (else refused) */
} dialects[APR_KVJSON_DIALECTS] = {
    /* 2^53: the largest range of integers a double (a JavaScript number) holds exactly */
    [APR_KVJSON_APR] = {-(INT64_C(1) << 53), INT64_C(1) << 53, false, false, false, true},
    [APR_KVJSON_HF] = {INT64_MIN, INT64_MAX, true, true, false, false},
    [APR_KVJSON_SHOW] = {INT64_MIN, INT64_MAX, false, false, true, false},
};

static kj_kind kind_of(apr_kv_type t)
{
    return (unsigned)t < APR_KV_TYPE_COUNT ? kv_types[t].kind : KJ_NONE;
}

static bool is_scalar(apr_kv_type t)
{
    kj_kind k = kind_of(t);
    return k == KJ_INT || k == KJ_REAL || k == KJ_BOOL;
}

int apr_kvjson_type(const char *s)
{
    for (int t = 0; t < APR_KV_TYPE_COUNT; t++)
        if (strcmp(apr_kv_type_name((apr_kv_type)t), s) == 0)
            return t;
    return -1;
}

static uint64_t ld_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void st_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ================================================================ encoding */

static json_t *enc_bits(uint64_t bits, int hexdigits)
{
    char buf[24];
    snprintf(buf, sizeof buf, "0x%0*" PRIx64, hexdigits, bits);
    return json_string(buf);
}

static json_t *enc_int(const struct kv_type_info *ti, const struct kv_dialect *dl, const uint8_t *p, size_t n)
{
    uint64_t u = ld_le(p, n);
    char buf[24];
    if (ti->lo < 0) {
        if (n < 8 && (u >> (8 * n - 1)) & 1)
            u |= ~UINT64_C(0) << (8 * n); /* sign-extend */
        int64_t v = (int64_t)u;
        if (v >= dl->int_lo && v <= dl->int_hi)
            return json_integer(v);
        snprintf(buf, sizeof buf, "%" PRId64, v);
        return json_string(buf);
    }
    if (u <= (uint64_t)dl->int_hi)
        return json_integer((json_int_t)u);
    snprintf(buf, sizeof buf, "%" PRIu64, u);
    return json_string(buf);
}

static json_t *enc_real(apr_kv_type t, const struct kv_dialect *dl, const uint8_t *p)
{
    if (t == APR_KV_F32) {
        uint32_t bits = (uint32_t)ld_le(p, 4);
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f))
            return dl->nonfinite_null ? json_null() : enc_bits(bits, 8);
        return dl->f32_shortest ? apr_json_f32(f) : json_real(f);
    }
    uint64_t bits = ld_le(p, 8);
    double d;
    memcpy(&d, &bits, 8);
    if (!isfinite(d))
        return dl->nonfinite_null ? json_null() : enc_bits(bits, 16);
    if (!dl->f64_string)
        return json_real(d);
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", d);
    return json_string(buf);
}

/* One scalar (its packed little-endian bytes at p) as JSON; NULL: out of memory. */
static json_t *enc_scalar(apr_kv_type t, const struct kv_dialect *dl, const uint8_t *p)
{
    switch (kind_of(t)) {
    case KJ_INT: return enc_int(&kv_types[t], dl, p, apr_kv_type_size(t));
    case KJ_REAL: return enc_real(t, dl, p);
    case KJ_BOOL: return json_boolean(p[0] != 0);
    default: return NULL;
    }
}

static json_t *enc_hex_bytes(const char *s, uint64_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *h = malloc(2 * len + 1);
    if (!h)
        return NULL;
    for (uint64_t i = 0; i < len; i++) {
        h[2 * i] = digits[(uint8_t)s[i] >> 4];
        h[2 * i + 1] = digits[(uint8_t)s[i] & 15];
    }
    h[2 * len] = 0;
    json_t *o = json_pack("{s:s}", "hex", h);
    free(h);
    return o;
}

static json_t *enc_nomem(const char *key, apr_err *err)
{
    apr_err_set(err, APR_E_NOMEM, "KV '%.200s': out of memory", key);
    return NULL;
}

static json_t *enc_string(const apr_str *s, const struct kv_dialect *dl, const char *key, apr_err *err)
{
    const char *p = s->s ? s->s : "";
    json_t *j;
    if (apr_utf8_valid(p, s->len)) {
        j = json_stringn(p, s->len); /* NULL: out of memory (never hex: that would change the file) */
    } else if (dl->hex_bytes) {
        j = enc_hex_bytes(p, s->len);
    } else {
        apr_err_set(err, APR_E_UNSUPPORTED, "KV '%.200s': string '%.60s' is not valid UTF-8 (JSON cannot hold it)",
                    key, p);
        return NULL;
    }
    return j ? j : enc_nomem(key, err);
}

static json_t *enc_array(const apr_kv *kv, const struct kv_dialect *dl, uint64_t max_elems, apr_err *err)
{
    json_t *a = json_array();
    if (!a)
        return enc_nomem(kv->key, err);
    size_t es = apr_kv_type_size(kv->arr_type);
    bool strs = kv->arr_type == APR_KV_STRING;
    for (uint64_t i = 0; i < kv->count && i < max_elems; i++) {
        json_t *e = strs ? enc_string(&((const apr_str *)kv->arr)[i], dl, kv->key, err)
                         : enc_scalar(kv->arr_type, dl, (const uint8_t *)kv->arr + i * es);
        if (!e) { /* enc_string said why; enc_scalar fails only for want of memory */
            json_decref(a);
            return strs ? NULL : enc_nomem(kv->key, err);
        }
        if (json_array_append_new(a, e)) {
            json_decref(a);
            return enc_nomem(kv->key, err);
        }
    }
    return a;
}

json_t *apr_kvjson_encode(const apr_kv *kv, apr_kvjson_dialect d, uint64_t max_elems, apr_err *err)
{
    if ((unsigned)d >= APR_KVJSON_DIALECTS) {
        apr_err_set(err, APR_E_ARG, "KV '%.200s': unknown JSON dialect %d", kv->key, (int)d);
        return NULL;
    }
    const struct kv_dialect *dl = &dialects[d];
    if (kv->type == APR_KV_STRING)
        return enc_string(&kv->str, dl, kv->key, err);
    if (kv->type == APR_KV_ARRAY) {
        if (kv->arr_type != APR_KV_STRING && !is_scalar(kv->arr_type)) {
            apr_err_set(err, APR_E_ARG, "KV '%.200s': bad array element type %d", kv->key, (int)kv->arr_type);
            return NULL;
        }
        return enc_array(kv, dl, max_elems, err);
    }
    if (!is_scalar(kv->type)) {
        apr_err_set(err, APR_E_ARG, "KV '%.200s': unknown type %d", kv->key, (int)kv->type);
        return NULL;
    }
    json_t *j = enc_scalar(kv->type, dl, (const uint8_t *)&kv->v);
    return j ? j : enc_nomem(kv->key, err);
}

/* ================================================================ decoding */

/* "WHAT: reason", or "WHAT, element N: reason" for an array's element (elem >= 0). */
static int dec_fail(apr_err *err, int code, const char *what, int64_t elem, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int dec_fail(apr_err *err, int code, const char *what, int64_t elem, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (elem < 0)
        return apr_err_set(err, code, "%s: %s", what, why);
    return apr_err_set(err, code, "%s, element %" PRId64 ": %s", what, elem, why);
}

static const char *json_kind_name(const json_t *j)
{
    switch (j ? json_typeof(j) : JSON_NULL) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int dec_kind(apr_err *err, const char *what, int64_t elem, const char *expected, const json_t *j)
{
    return dec_fail(err, APR_E_FORMAT, what, elem, "expected %s, got %s", expected, json_kind_name(j));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Strict decimal integer: an optional '-', then digits only; false on overflow. */
static bool parse_dec(const char *s, uint64_t *mag, bool *neg)
{
    *neg = *s == '-';
    s += *neg;
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *mag = v;
    return true;
}

/* "0x" and exactly ndigits hex digits. */
static bool parse_hex_bits(const char *s, uint64_t *bits, size_t ndigits)
{
    if (strncmp(s, "0x", 2) != 0 || strlen(s + 2) != ndigits)
        return false;
    uint64_t v = 0;
    for (s += 2; *s; s++) {
        int h = hexval(*s);
        if (h < 0)
            return false;
        v = v * 16 + (uint64_t)h;
    }
    *bits = v;
    return true;
}

static int dec_int(const json_t *j, apr_kv_type t, const struct kv_dialect *dl, uint8_t *out, const char *what,
                   int64_t elem, apr_err *err)
{
    const struct kv_type_info *ti = &kv_types[t];
    /* the writer writes what is beyond its JSON integers as a decimal string */
    bool str_ok = ti->lo < dl->int_lo || ti->hi > (uint64_t)dl->int_hi;
    uint64_t mag;
    bool neg;
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        neg = v < 0;
        mag = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    } else if (str_ok && json_is_string(j)) {
        if (!parse_dec(json_string_value(j), &mag, &neg))
            return dec_fail(err, APR_E_FORMAT, what, elem, "'%.40s' is not a decimal %s", json_string_value(j),
                            apr_kv_type_name(t));
    } else {
        return dec_kind(err, what, elem, str_ok ? "an integer or a decimal string" : "an integer", j);
    }
    bool in = neg ? ti->lo < 0 && mag <= (uint64_t)0 - (uint64_t)ti->lo : mag <= ti->hi;
    if (!in)
        return dec_fail(err, APR_E_FORMAT, what, elem, "%s%" PRIu64 " is out of range for %s [%" PRId64 ", %" PRIu64 "]",
                        neg ? "-" : "", mag, apr_kv_type_name(t), ti->lo, ti->hi);
    st_le(out, neg ? (uint64_t)0 - mag : mag, apr_kv_type_size(t));
    return 0;
}

/* A decimal string as the whole of a finite double. */
static bool parse_real(const char *s, double *d)
{
    char *end;
    if (!*s || *s == ' ' || (*s >= '\t' && *s <= '\r'))
        return false;
    *d = strtod(s, &end);
    return !*end && isfinite(*d);
}

static int dec_real(const json_t *j, apr_kv_type t, const struct kv_dialect *dl, uint8_t *out, const char *what,
                    int64_t elem, apr_err *err)
{
    size_t n = apr_kv_type_size(t);
    double d;
    if (json_is_number(j)) {
        d = json_number_value(j);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        uint64_t bits;
        if (strncmp(s, "0x", 2) == 0) {
            if (!parse_hex_bits(s, &bits, 2 * n))
                return dec_fail(err, APR_E_FORMAT, what, elem, "'%.40s' is not \"0x\" and %zu hex digits (%s bits)", s,
                                2 * n, apr_kv_type_name(t));
            st_le(out, bits, n);
            return 0;
        }
        bool dec_ok = dl->f64_string && t == APR_KV_F64;
        if (!dec_ok || !parse_real(s, &d))
            return dec_fail(err, APR_E_FORMAT, what, elem, "'%.40s' is not %s", s,
                            dec_ok ? "a finite decimal number or \"0x<hex bits>\"" : "\"0x<hex bits>\" (expected a number)");
    } else {
        return dec_kind(err, what, elem, "a number", j);
    }
    if (t == APR_KV_F64) {
        memcpy(out, &d, 8);
        return 0;
    }
    /* halfway between FLT_MAX and 2^128: from there on (float)d is infinite */
    if (!(fabs(d) < 0x1.ffffffp127))
        return dec_fail(err, APR_E_FORMAT, what, elem, "%.9g does not fit an f32", d);
    float f = (float)d;
    memcpy(out, &f, 4);
    return 0;
}

static int dec_scalar(const json_t *j, apr_kv_type t, const struct kv_dialect *dl, uint8_t *out, const char *what,
                      int64_t elem, apr_err *err)
{
    switch (kind_of(t)) {
    case KJ_INT: return dec_int(j, t, dl, out, what, elem, err);
    case KJ_REAL: return dec_real(j, t, dl, out, what, elem, err);
    case KJ_BOOL:
        if (!json_is_boolean(j))
            return dec_kind(err, what, elem, "true or false", j);
        out[0] = json_is_true(j) ? 1 : 0;
        return 0;
    default: return dec_fail(err, APR_E_ARG, what, elem, "type %d is not a scalar type", (int)t);
    }
}

static int dec_nomem(apr_err *err, const char *what)
{
    return apr_err_set(err, APR_E_NOMEM, "%s: out of memory", what);
}

/* {"hex": "<an even number of hex digits>"} into out. */
static int dec_hex_bytes(const json_t *j, apr_str *out, const char *what, int64_t elem, apr_err *err)
{
    const json_t *h = json_object_size(j) == 1 ? json_object_get(j, "hex") : NULL;
    if (!json_is_string(h) || json_string_length(h) % 2)
        return dec_fail(err, APR_E_FORMAT, what, elem, "an object that is not {\"hex\": \"<pairs of hex digits>\"}");
    size_t n = json_string_length(h) / 2;
    const char *s = json_string_value(h);
    char *b = malloc(n + 1);
    if (!b)
        return dec_nomem(err, what);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(b);
            return dec_fail(err, APR_E_FORMAT, what, elem, "'%.40s' is not hex digits", s);
        }
        b[i] = (char)(hi * 16 + lo);
    }
    b[n] = 0;
    out->s = b;
    out->len = n;
    return 0;
}

static int dec_string(const json_t *j, const struct kv_dialect *dl, apr_str *out, const char *what, int64_t elem,
                      apr_err *err)
{
    memset(out, 0, sizeof *out);
    if (json_is_string(j))
        return apr_json_to_str(j, out, what, err) == APR_E_NOMEM ? dec_nomem(err, what) : 0;
    if (dl->hex_bytes && json_is_object(j))
        return dec_hex_bytes(j, out, what, elem, err);
    return dec_kind(err, what, elem, dl->hex_bytes ? "a string or {\"hex\": ...}" : "a string", j);
}

static int dec_array(const json_t *j, apr_kv *kv, const struct kv_dialect *dl, const char *what, apr_err *err)
{
    apr_kv_type et = kv->arr_type;
    if (et != APR_KV_STRING && !is_scalar(et))
        return dec_fail(err, APR_E_ARG, what, -1, "element type %d is neither a string nor a scalar", (int)et);
    if (!json_is_array(j))
        return dec_kind(err, what, -1, "an array", j);
    size_t n = json_array_size(j);
    size_t es = et == APR_KV_STRING ? sizeof(apr_str) : apr_kv_type_size(et);
    /* calloc: the strings not yet decoded are NULL for apr_kv_free */
    if (!(kv->arr = calloc(n ? n : 1, es)))
        return dec_nomem(err, what);
    kv->count = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(j, i);
        int rc = et == APR_KV_STRING ? dec_string(e, dl, &((apr_str *)kv->arr)[i], what, (int64_t)i, err)
                                     : dec_scalar(e, et, dl, (uint8_t *)kv->arr + i * es, what, (int64_t)i, err);
        if (rc)
            return rc;
    }
    return 0;
}

int apr_kvjson_decode(const json_t *j, apr_kv *kv, apr_kvjson_dialect d, const char *what, apr_err *err)
{
    if ((unsigned)d >= APR_KVJSON_DIALECTS)
        return dec_fail(err, APR_E_ARG, what, -1, "unknown JSON dialect %d", (int)d);
    const struct kv_dialect *dl = &dialects[d];
    if (kv->type == APR_KV_STRING)
        return dec_string(j, dl, &kv->str, what, -1, err);
    if (kv->type == APR_KV_ARRAY)
        return dec_array(j, kv, dl, what, err);
    uint8_t b[8] = {0}; /* the bytes of kv->v beyond the type's stay zero */
    int rc = dec_scalar(j, kv->type, dl, b, what, -1, err);
    if (!rc)
        memcpy(&kv->v, b, sizeof b);
    return rc;
}
