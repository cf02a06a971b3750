/* test_inspect.c - `apr inspect` through APR_BIN: the fixture's 48 tensors and
 * 19 KVs with their types, --json parsed with jansson and checked against the
 * model opened in-process, --tensor NAME --stats against stats computed here
 * (F32 and a dequantized ROWCAT tensor), --provenance, and bad arguments. */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant.h"
#include "test_util.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"

/* Runs apr ARGS; returns the exit status and stdout (stderr separately). */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...)
{
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    char args[8192], path[] = "/tmp/apr-inspect-XXXXXX";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int fd = mkstemp(path);
    close(fd);
    int rc = tu_system(NULL, "'%s' %s >'%s' 2>/dev/null", bin, args, path);
    *out = tu_read_file(path, NULL);
    unlink(path);
    assert_non_null(*out);
    return rc;
}

static json_t *run_json(const char *fmt, const char *arg1, const char *arg2)
{
    char *out;
    int rc = arg2 ? run(&out, fmt, arg1, arg2) : run(&out, fmt, arg1);
    assert_int_equal(rc, 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j)
        fail_msg("not JSON (%s, line %d): %.200s", je.text, je.line, out);
    free(out);
    return j;
}

static const json_t *kv_by_key(const json_t *kvs, const char *key)
{
    for (size_t i = 0; i < json_array_size(kvs); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(kvs, i), "key")), key))
            return json_array_get(kvs, i);
    fail_msg("KV %s not in the JSON", key);
    return NULL;
}

static void test_fixture_text(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *out;
    assert_int_equal(run(&out, "inspect '%s'", fx), 0);
    assert_non_null(strstr(out, "format:     gguf v3"));
    assert_non_null(strstr(out, "metadata:   19 KVs"));
    assert_non_null(strstr(out, "tensors:    48 "));
    assert_non_null(strstr(out, "llama: 5 layers, hidden 64, heads 8 (kv 4), head_dim 8, ffn 172, vocab 512"));
    assert_non_null(strstr(out, "512 tokens"));
    assert_non_null(strstr(out, "provenance: none"));
    /* one line per tensor and per KV, with the types */
    int tensor_lines = 0;
    for (const char *p = out; (p = strstr(p, "\n  blk.")) || (p = NULL); p++)
        tensor_lines++;
    assert_int_equal(tensor_lines, 45); /* + token_embd, output_norm, output */
    assert_non_null(strstr(out, "llama.block_count"));
    const char *l = strstr(out, "  llama.attention.layer_norm_rms_epsilon");
    assert_non_null(l);
    assert_non_null(strstr(l, " f32 "));
    l = strstr(out, "  tokenizer.ggml.tokens");
    assert_non_null(strstr(l, "array[string]  512 x [\"<unk>\", \"<s>\""));
    free(out);
}

static void test_fixture_json(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    json_t *j = run_json("inspect '%s' --json", fx, NULL);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "gguf");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "n_kvs")), 19);
    assert_int_equal(json_integer_value(json_object_get(j, "n_tensors")), 48);
    const json_t *kvs = json_object_get(j, "kvs"), *ts = json_object_get(j, "tensors");
    assert_int_equal(json_array_size(kvs), 19);
    assert_int_equal(json_array_size(ts), 48);
    /* every KV's key and type as the reader sees them */
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        const json_t *k = json_array_get(kvs, i);
        assert_string_equal(json_string_value(json_object_get(k, "key")), m->kvs[i].key);
        assert_string_equal(json_string_value(json_object_get(k, "type")), apr_kv_type_name(m->kvs[i].type));
    }
    const json_t *bc = kv_by_key(kvs, "llama.block_count");
    assert_string_equal(json_string_value(json_object_get(bc, "type")), "u32");
    assert_int_equal(json_integer_value(json_object_get(bc, "value")), 5);
    const json_t *eps = kv_by_key(kvs, "llama.attention.layer_norm_rms_epsilon");
    assert_string_equal(json_string_value(json_object_get(eps, "type")), "f32");
    assert_float_equal(json_real_value(json_object_get(eps, "value")), 1e-5, 1e-9);
    const json_t *tok = kv_by_key(kvs, "tokenizer.ggml.tokens");
    assert_string_equal(json_string_value(json_object_get(tok, "elem_type")), "string");
    assert_int_equal(json_integer_value(json_object_get(tok, "count")), 512);
    assert_string_equal(json_string_value(json_array_get(json_object_get(tok, "head"), 1)), "<s>");
    const json_t *sep = kv_by_key(kvs, "tokenizer.ggml.seperator_token_id");
    assert_int_equal(json_integer_value(json_object_get(sep, "value")), 4294967295ll);
    /* every tensor */
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        const json_t *x = json_array_get(ts, i);
        assert_string_equal(json_string_value(json_object_get(x, "name")), t->name);
        assert_string_equal(json_string_value(json_object_get(x, "dtype")), "F32");
        const json_t *shape = json_object_get(x, "shape");
        assert_int_equal(json_array_size(shape), t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            assert_int_equal(json_integer_value(json_array_get(shape, d)), t->dims[d]);
        assert_int_equal(json_integer_value(json_object_get(x, "bytes")), t->nbytes);
        assert_int_equal(json_integer_value(json_object_get(x, "offset")), t->file_offset);
    }
    const json_t *cfg = json_object_get(j, "config");
    assert_string_equal(json_string_value(json_object_get(cfg, "arch")), "llama");
    assert_int_equal(json_integer_value(json_object_get(cfg, "n_kv_heads")), 4);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tokenizer"), "bos_id")), 1);
    assert_true(json_is_null(json_object_get(j, "provenance")));
    apr_model_free(m);
    json_decref(j);
}

typedef struct ref_stats {
    double min, max, sum, sumsq;
    uint64_t n;
} ref_stats;

static void acc(ref_stats *s, const float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (s->n == 0 || x[i] < s->min)
            s->min = x[i];
        if (s->n == 0 || x[i] > s->max)
            s->max = x[i];
        s->sum += x[i];
        s->sumsq += (double)x[i] * x[i];
        s->n++;
    }
}

static void check_stats(const json_t *j, const ref_stats *s)
{
    const json_t *st = json_object_get(j, "stats");
    double mean = s->sum / (double)s->n;
    double sd = sqrt(s->sumsq / (double)s->n - mean * mean);
    assert_int_equal(json_integer_value(json_object_get(st, "count")), s->n);
    assert_int_equal(json_integer_value(json_object_get(st, "nan")), 0);
    assert_float_equal(json_real_value(json_object_get(st, "min")), s->min, 0);
    assert_float_equal(json_real_value(json_object_get(st, "max")), s->max, 0);
    assert_float_equal(json_real_value(json_object_get(st, "mean")), mean, 1e-9 + fabs(mean) * 1e-6);
    assert_float_equal(json_real_value(json_object_get(st, "std")), sd, 1e-9 + sd * 1e-6);
}

static void test_stats_f32(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    json_t *j = run_json("inspect '%s' --tensor blk.2.ffn_down.weight --stats --json", fx, NULL);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    const apr_tensor *t = apr_model_tensor(m, "blk.2.ffn_down.weight");
    ref_stats s = {0};
    acc(&s, (const float *)t->data, t->nbytes / 4);
    check_stats(j, &s);
    apr_model_free(m);
    json_decref(j);
    char *out;
    assert_int_equal(run(&out, "inspect '%s' --tensor blk.2.ffn_down.weight --stats", fx), 0);
    assert_non_null(strstr(out, "count 11008, min "));
    free(out);
}

/* A ROWCAT tensor of an APR made from a Q4_K_M GGUF: stats over its parts, dequantized. */
static void test_stats_rowcat_and_provenance(void **state)
{
    (void)state;
    const char *d = tu_tmpdir("inspq");
    char src[4096], f32[4096], q[4096], ap[4096];
    snprintf(src, sizeof src, "%s/src", d);
    snprintf(f32, sizeof f32, "%s/f32.gguf", d);
    snprintf(q, sizeof q, "%s/q.gguf", d);
    snprintf(ap, sizeof ap, "%s/q.apr", d);
    char *out;
    assert_int_equal(run(&out, "synth '%s' --arch qwen2 -q", src), 0);
    free(out);
    assert_int_equal(run(&out, "convert '%s' '%s' -q", src, f32), 0);
    free(out);
    assert_int_equal(run(&out, "quantize '%s' '%s' --type Q4_K_M -q", f32, q), 0);
    free(out);
    assert_int_equal(run(&out, "convert '%s' '%s' -q", q, ap), 0);
    free(out);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, ap, NULL, &err), 0);
    const apr_tensor *t = NULL;
    for (uint64_t i = 0; i < m->n_tensors && !t; i++)
        if (m->tensors[i].dtype == APR_DT_ROWCAT)
            t = &m->tensors[i];
    assert_non_null(t);
    json_t *j = run_json("inspect '%s' --tensor '%s' --stats --json", ap, t->name);
    assert_string_equal(json_string_value(json_object_get(j, "dtype")), "ROWCAT");
    assert_int_equal(json_array_size(json_object_get(j, "parts")), 3);
    uint64_t cols = t->dims[1];
    float *row = malloc(cols * sizeof *row);
    ref_stats s = {0};
    const uint8_t *p = t->data;
    for (uint32_t k = 0; k < t->n_parts; k++) {
        uint64_t rb = apr_dtype_row_bytes(t->parts[k].dtype, cols);
        for (uint64_t r = 0; r < t->parts[k].rows; r++, p += rb) {
            assert_int_equal(apr_dequantize_row(t->parts[k].dtype, p, row, (int64_t)cols), 0);
            acc(&s, row, cols);
        }
    }
    free(row);
    check_stats(j, &s);
    json_decref(j);

    /* the provenance block: text summary, --provenance JSON, --json object */
    assert_int_equal(run(&out, "inspect '%s'", ap), 0);
    assert_non_null(strstr(out, "provenance:\n  convert apr by apr"));
    assert_non_null(strstr(out, "  parent 1:\n    quantize gguf"));
    free(out);
    j = run_json("inspect '%s' --provenance", ap, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "operation")), "convert");
    assert_true(json_is_object(json_object_get(j, "parent")));
    json_decref(j);
    j = run_json("inspect '%s' --json", ap, NULL);
    assert_true(json_is_object(json_object_get(json_object_get(j, "provenance"), "tensors")));
    json_decref(j);
    apr_model_free(m);
}

static void test_bad_args(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *out;
    assert_int_equal(run(&out, "inspect /nonexistent/x.gguf"), 2);
    free(out);
    assert_int_equal(run(&out, "inspect '%s' --stats", fx), 2);
    free(out);
    assert_int_equal(run(&out, "inspect '%s' --tensor nope.weight", fx), 2);
    free(out);
    assert_int_equal(run(&out, "inspect '%s' --provenance", fx), 2); /* none recorded */
    free(out);
    assert_int_equal(run(&out, "inspect '%s' --bogus", fx), 2);
    free(out);
    assert_int_equal(run(&out, "inspect"), 2);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_text),
        cmocka_unit_test(test_fixture_json),
        cmocka_unit_test(test_stats_f32),
        cmocka_unit_test(test_stats_rowcat_and_provenance),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
