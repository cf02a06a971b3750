/* test_convert_files.c - `apr convert` on real files (issue 4's acceptance):
 * the fixture GGUF -> safetensors -> GGUF and GGUF -> APR -> GGUF byte for
 * byte, safetensors -> APR -> safetensors, a Q4_K_M model (mixed Q4_K/Q6_K
 * attention: ROWCAT) through APR, provenance verification of every output
 * (and its failure naming a flipped tensor), sharded outputs, and every bad
 * input: exit 2, nothing at the destination, the input unchanged. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "test_util.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"

/* ---------------------------------------------------------------- helpers */

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static char *tmp(const char *tag) { return xstrdup(tu_tmpdir(tag)); }

static char *join(const char *dir, const char *name)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static const char *bin(void)
{
    const char *b = tu_apr_bin();
    if (!b)
        fail_msg("APR_BIN is not set");
    return b;
}

/* Runs apr with args; returns the exit status; output in log (may be NULL). */
static int apr_run(const char *log, const char *args)
{
    return tu_system(log, "'%s' %s", bin(), args);
}

static void must_run(const char *args)
{
    char log[] = "/tmp/apr-conv-log-XXXXXX";
    int fd = mkstemp(log);
    close(fd);
    int rc = apr_run(log, args);
    if (rc != 0) {
        char *out = tu_read_file(log, NULL);
        fprintf(stderr, "apr %s -> exit %d\n%s\n", args, rc, out ? out : "");
        free(out);
        unlink(log);
        fail_msg("apr %s failed", args);
    }
    unlink(log);
}

static apr_model *open_model(const char *path, bool skip_crc)
{
    apr_model *m = NULL;
    apr_err err = {0};
    apr_open_opts o = {.skip_footer_crc = skip_crc};
    if (apr_model_open(&m, path, &o, &err))
        fail_msg("open %s: %s", path, err.msg);
    return m;
}

static bool kv_equal(const apr_kv *a, const apr_kv *b)
{
    if (a->type != b->type)
        return false;
    if (a->type == APR_KV_STRING)
        return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
    if (a->type != APR_KV_ARRAY)
        return memcmp(&a->v, &b->v, apr_kv_type_size(a->type)) == 0;
    if (a->arr_type != b->arr_type || a->count != b->count)
        return false;
    if (a->arr_type != APR_KV_STRING)
        return memcmp(a->arr, b->arr, a->count * apr_kv_type_size(a->arr_type)) == 0;
    const apr_str *x = a->arr, *y = b->arr;
    for (uint64_t i = 0; i < a->count; i++)
        if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0)
            return false;
    return true;
}

static bool is_prov_key(const char *k) { return strncmp(k, "apr.provenance", 14) == 0; }

/* Same KVs (same order, types, values) apart from provenance keys. */
static void assert_same_kvs(const apr_model *a, const apr_model *b)
{
    uint64_t i = 0, j = 0;
    for (;;) {
        while (i < a->n_kvs && is_prov_key(a->kvs[i].key))
            i++;
        while (j < b->n_kvs && is_prov_key(b->kvs[j].key))
            j++;
        if (i == a->n_kvs || j == b->n_kvs)
            break;
        if (strcmp(a->kvs[i].key, b->kvs[j].key) != 0)
            fail_msg("KV order differs: '%s' vs '%s'", a->kvs[i].key, b->kvs[j].key);
        if (!kv_equal(&a->kvs[i], &b->kvs[j]))
            fail_msg("KV '%s' differs (%s vs %s)", a->kvs[i].key, apr_kv_type_name(a->kvs[i].type),
                     apr_kv_type_name(b->kvs[j].type));
        i++, j++;
    }
    if (i != a->n_kvs || j != b->n_kvs)
        fail_msg("KV count differs: %s vs %s", i < a->n_kvs ? a->kvs[i].key : "-", j < b->n_kvs ? b->kvs[j].key : "-");
}

/* Same tensors: names, dtypes, shapes, ROWCAT parts and payload bytes; with
 * same_order also the same order. */
static void assert_same_tensors(const apr_model *a, const apr_model *b, bool same_order)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const apr_tensor *x = &a->tensors[i];
        const apr_tensor *y = same_order ? &b->tensors[i] : apr_model_tensor(b, x->name);
        if (!y || strcmp(x->name, y->name) != 0)
            fail_msg("tensor %llu '%s': not at the same place in the other file", (unsigned long long)i, x->name);
        if (x->dtype != y->dtype || x->ndim != y->ndim || memcmp(x->dims, y->dims, x->ndim * 8) != 0 ||
            x->nbytes != y->nbytes)
            fail_msg("tensor '%s': dtype/shape differ (%s vs %s)", x->name, apr_dtype_name(x->dtype),
                     apr_dtype_name(y->dtype));
        if (x->dtype == APR_DT_ROWCAT &&
            (x->n_parts != y->n_parts || memcmp(x->parts, y->parts, x->n_parts * sizeof *x->parts) != 0))
            fail_msg("tensor '%s': ROWCAT parts differ", x->name);
        if (memcmp(x->data, y->data, x->nbytes) != 0)
            fail_msg("tensor '%s': payload differs", x->name);
    }
}

typedef struct reports {
    int bad;
    char names[8][128];
} reports;

static void on_report(void *user, bool ok, const char *what, const char *msg)
{
    reports *r = user;
    if (ok)
        return;
    if (r->bad < 8)
        snprintf(r->names[r->bad], sizeof r->names[0], "%s", what ? what : "(record)");
    r->bad++;
    print_message("  provenance: %s: %s\n", what ? what : "(record)", msg);
}

static void assert_provenance_ok(const char *path, const char *source)
{
    apr_model *m = open_model(path, false);
    reports r = {0};
    apr_prov_check res;
    apr_err err = {0};
    int rc = apr_provenance_verify(m, source, 2, on_report, &r, &res, &err);
    if (rc)
        fail_msg("provenance of %s (source %s): %s", path, source ? source : "-", err.msg);
    assert_int_equal(res.tensors_checked, m->n_tensors);
    if (source) {
        assert_true(res.files_checked >= 1);
        assert_true(res.src_tensors_checked >= m->n_tensors);
        assert_true(res.parent_checked);
    }
    apr_model_free(m);
}

static void file_sha(const char *path, char hex[65])
{
    uint8_t d[32];
    apr_err err = {0};
    if (apr_sha256_file(path, d, &err))
        fail_msg("%s", err.msg);
    apr_sha256_hex(d, hex);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---------------------------------------------------------------- acceptance */

static void test_fixture_via_safetensors(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = tmp("cvst");
    char *st = join(d, "st"), *back = join(d, "back.gguf"), *cmd;
    assert_true(asprintf(&cmd, "convert '%s' '%s/' -q", fx, st) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", st, back) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *a = open_model(fx, false), *b = open_model(back, false), *s = open_model(st, false);
    assert_same_tensors(a, b, true);
    assert_same_kvs(a, b);
    assert_int_equal(s->format, APR_FMT_SAFETENSORS);
    assert_non_null(apr_model_tensor(s, "model.layers.4.self_attn.q_proj.weight"));
    /* llama.cpp's strict hyper-parameter types */
    assert_int_equal(apr_model_kv(b, "llama.block_count")->type, APR_KV_U32);
    assert_int_equal(apr_model_kv(b, "llama.attention.layer_norm_rms_epsilon")->type, APR_KV_F32);
    assert_non_null(b->provenance_json);
    assert_non_null(apr_kv_get_str(b, "apr.provenance.source_sha256"));
    apr_model_free(s);
    apr_model_free(b);
    apr_model_free(a);
    assert_provenance_ok(st, fx);
    assert_provenance_ok(back, st);
    free(back);
    free(st);
    free(d);
}

static void test_fixture_via_apr(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = tmp("cvapr");
    char *ap = join(d, "m.apr"), *back = join(d, "back.gguf"), *cmd;
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", fx, ap) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' --threads 1 -q", ap, back) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *a = open_model(fx, false), *b = open_model(back, false), *m = open_model(ap, false);
    assert_same_tensors(a, b, true);
    assert_same_kvs(a, b);
    assert_int_equal(m->n_tensors, 48 - 2 * 5);
    const apr_tensor *f = apr_model_tensor(m, "model.layers.2.self_attn.qkv_proj.weight");
    assert_non_null(f);
    assert_int_equal(f->dims[0], 64 + 32 + 32);
    apr_model_free(m);
    apr_model_free(b);
    apr_model_free(a);
    assert_provenance_ok(ap, fx);
    assert_provenance_ok(back, ap);
    free(back);
    free(ap);
    free(d);
}

/* safetensors -> APR -> safetensors for both architectures. */
static void st_apr_st(const char *arch)
{
    char *d = tmp("cvsas");
    char *src = join(d, "src"), *ap = join(d, "m.apr"), *out = join(d, "out"), *cmd;
    assert_true(asprintf(&cmd, "synth '%s' --arch %s -q", src, arch) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", src, ap) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s/' -q", ap, out) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *a = open_model(src, false), *b = open_model(out, false);
    assert_same_tensors(a, b, true);
    assert_same_kvs(a, b);
    apr_model_free(b);
    apr_model_free(a);
    assert_provenance_ok(ap, src);
    assert_provenance_ok(out, ap);
    free(out);
    free(ap);
    free(src);
    free(d);
}

static void test_st_apr_st_llama(void **state)
{
    (void)state;
    st_apr_st("llama");
}

static void test_st_apr_st_qwen2(void **state)
{
    (void)state;
    st_apr_st("qwen2");
}

/* A Q4_K_M model from `apr quantize` (mixed Q4_K/Q6_K attention) through APR. */
static void test_q4km_via_apr(void **state)
{
    (void)state;
    char *d = tmp("cvq4");
    char *src = join(d, "src"), *f32 = join(d, "f32.gguf"), *q = join(d, "q4km.gguf"), *ap = join(d, "q4km.apr"),
         *back = join(d, "back.gguf"), *st = join(d, "deq"), *cmd;
    assert_true(asprintf(&cmd, "synth '%s' --arch qwen2 -q", src) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", src, f32) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "quantize '%s' '%s' --type Q4_K_M -q", f32, q) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", q, ap) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", ap, back) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *a = open_model(q, false), *b = open_model(back, false), *m = open_model(ap, false);
    int rowcat = 0, q4 = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        rowcat += m->tensors[i].dtype == APR_DT_ROWCAT;
        q4 += m->tensors[i].dtype == APR_DT_Q4_K;
    }
    print_message("  APR: %d ROWCAT tensors, %d Q4_K tensors\n", rowcat, q4);
    assert_true(rowcat >= 1); /* layer(s) with a Q6_K attn_v */
    assert_true(q4 >= 1);
    /* llama-quantize's tensor order (not the converter's canonical one) comes
     * back too: APR's provenance recorded where each tensor came from */
    assert_same_tensors(a, b, true);
    assert_same_kvs(a, b);
    apr_model_free(m);
    apr_model_free(b);
    /* APR -> safetensors dequantizes, and says so */
    assert_true(asprintf(&cmd, "convert '%s' '%s/' -q", ap, st) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *s = open_model(st, false);
    const apr_tensor *v = apr_model_tensor(s, "model.layers.1.self_attn.v_proj.weight");
    assert_non_null(v);
    assert_int_equal(v->dtype, APR_DT_F32);
    assert_non_null(strstr(s->provenance_json, "split+dequantize:F32"));
    apr_model_free(s);
    apr_model_free(a);
    assert_provenance_ok(ap, q);
    assert_provenance_ok(back, ap);
    assert_provenance_ok(st, ap);
    free(st);
    free(back);
    free(ap);
    free(q);
    free(f32);
    free(src);
    free(d);
}

/* A one-byte flip inside a tensor payload is found and named, in every format;
 * a flipped source file is found too. */
static void flip_and_check(const char *path, const char *tensor, bool apr_file)
{
    char *copy;
    assert_true(asprintf(&copy, "%s.flipped", path) > 0);
    assert_int_equal(tu_system(NULL, "cp -r '%s' '%s'", path, copy), 0);
    apr_model *m = open_model(path, false);
    const apr_tensor *t = apr_model_tensor(m, tensor);
    assert_non_null(t);
    uint64_t off = t->file_offset + t->nbytes / 2;
    char *file = xstrdup(m->maps[t->shard].path);
    apr_model_free(m);
    /* the flipped file: same name inside the copy when it is a directory */
    char *target;
    struct stat sst;
    if (stat(copy, &sst) == 0 && S_ISDIR(sst.st_mode))
        assert_true(asprintf(&target, "%s/%s", copy, strrchr(file, '/') + 1) > 0);
    else
        target = xstrdup(copy);
    FILE *f = fopen(target, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    fputc(c ^ 0x10, f);
    fclose(f);
    /* APR's footer CRC would refuse the file; provenance checks skip it to name the tensor */
    apr_model *bad = open_model(copy, apr_file);
    reports r = {0};
    apr_prov_check res;
    apr_err err = {0};
    assert_int_equal(apr_provenance_verify(bad, NULL, 2, on_report, &r, &res, &err), APR_E_MISMATCH);
    assert_int_equal(r.bad, 1);
    assert_string_equal(r.names[0], tensor);
    assert_int_equal(res.tensors_bad, 1);
    apr_model_free(bad);
    free(target);
    free(file);
    free(copy);
}

static void test_provenance_flip(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = tmp("cvflip");
    char *g = join(d, "a.gguf"), *ap = join(d, "a.apr"), *st = join(d, "st"), *cmd;
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", fx, ap) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", ap, g) > 0);
    must_run(cmd);
    free(cmd);
    assert_true(asprintf(&cmd, "convert '%s' '%s/' -q", g, st) > 0);
    must_run(cmd);
    free(cmd);
    flip_and_check(g, "blk.3.ffn_up.weight", false);
    flip_and_check(ap, "model.layers.1.self_attn.qkv_proj.weight", true);
    flip_and_check(st, "model.layers.2.self_attn.k_proj.weight", false);

    /* a changed source: the file hash and the source tensor hash both differ */
    char *src_copy = join(d, "src.apr");
    assert_int_equal(tu_system(NULL, "cp '%s' '%s' && printf '\\x55' | dd of='%s' bs=1 seek=70000 conv=notrunc 2>/dev/null",
                               ap, src_copy, src_copy), 0);
    apr_model *m = open_model(g, false);
    reports r = {0};
    apr_prov_check res;
    apr_err err = {0};
    assert_int_equal(apr_provenance_verify(m, src_copy, 2, on_report, &r, &res, &err), APR_E_MISMATCH);
    assert_int_equal(res.tensors_bad, 0);
    assert_true(res.files_bad >= 1);
    apr_model_free(m);
    free(src_copy);
    free(st);
    free(ap);
    free(g);
    free(d);
}

static void test_sharded_output(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = tmp("cvshard");
    char *st = join(d, "st"), *back = join(d, "back.gguf"), *cmd;
    assert_true(asprintf(&cmd, "convert '%s' '%s/' --shard-mb 1 -q", fx, st) > 0);
    must_run(cmd);
    free(cmd);
    char *idx = join(st, "model.safetensors.index.json");
    assert_true(exists(idx));
    assert_true(asprintf(&cmd, "convert '%s' '%s' -q", idx, back) > 0);
    must_run(cmd);
    free(cmd);
    apr_model *a = open_model(fx, false), *b = open_model(back, false), *s = open_model(st, false);
    assert_true(s->n_maps >= 2);
    assert_same_tensors(a, b, true);
    apr_model_free(s);
    apr_model_free(b);
    apr_model_free(a);
    assert_provenance_ok(back, st);
    assert_provenance_ok(back, idx);
    free(idx);
    free(back);
    free(st);
    free(d);
}

/* ---------------------------------------------------------------- bad input */

/* Listing of a directory (names and sizes), to see that nothing appeared. */
static char *listing(const char *dir)
{
    char *out;
    char log[] = "/tmp/apr-conv-ls-XXXXXX";
    int fd = mkstemp(log);
    close(fd);
    tu_system(log, "ls -lR --time-style=+ '%s'", dir);
    out = tu_read_file(log, NULL);
    unlink(log);
    return out ? out : xstrdup("");
}

/* apr convert IN OUT extra: exit 2, stderr mentions needle, nothing new in
 * OUT's directory, IN unchanged. */
static void expect_refused(const char *in, const char *out, const char *extra, const char *needle, const char *in_file)
{
    char before[65], after[65];
    file_sha(in_file, before);
    char *od = xstrdup(out);
    char *slash = strrchr(od, '/');
    if (slash && slash[1] == 0) { /* "dir/" */
        *slash = 0;
        slash = strrchr(od, '/');
    }
    if (slash)
        *slash = 0;
    char *ls0 = listing(od);
    char log[] = "/tmp/apr-conv-bad-XXXXXX";
    int fd = mkstemp(log);
    close(fd);
    char *args;
    assert_true(asprintf(&args, "convert '%s' '%s' %s", in, out, extra ? extra : "") > 0);
    int rc = apr_run(log, args);
    char *msg = tu_read_file(log, NULL);
    unlink(log);
    print_message("  apr %s -> %d: %s", args, rc, msg ? msg : "");
    assert_int_equal(rc, 2);
    if (!msg || !strstr(msg, needle))
        fail_msg("message does not mention '%s'", needle);
    char *ls1 = listing(od);
    if (strcmp(ls0, ls1) != 0)
        fail_msg("the output directory changed:\n%s\n---\n%s", ls0, ls1);
    file_sha(in_file, after);
    assert_string_equal(before, after);
    free(ls1);
    free(ls0);
    free(msg);
    free(args);
    free(od);
}

/* Writes fixture-derived GGUFs with one defect each. */
static char *bad_gguf(const char *dir, const char *name, const char *fx, int defect)
{
    apr_model *m = open_model(fx, false), *o = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(o, &m->kvs[i]), 0);
    if (defect == 0)
        apr_model_set_kv_str(o, "general.architecture", "gpt2");
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (defect == 1 && !strcmp(t->name, "blk.2.ffn_gate.weight"))
            continue; /* missing */
        if (defect == 2 && !strcmp(t->name, "blk.1.attn_v.weight")) {
            /* V with 32 columns instead of 64: Q/K/V row lengths disagree */
            uint64_t dims[2] = {64, 32};
            assert_int_equal(apr_model_add_tensor(o, t->name, t->dtype, 2, dims, t->data, t->nbytes, false, &err), 0);
            continue;
        }
        if (defect == 3 && !strcmp(t->name, "output.weight")) {
            uint64_t dims[2] = {256, 128}; /* same bytes, wrong shape */
            assert_int_equal(apr_model_add_tensor(o, t->name, t->dtype, 2, dims, t->data, t->nbytes, false, &err), 0);
            continue;
        }
        assert_int_equal(apr_model_add_tensor(o, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    char *path = join(dir, name);
    if (apr_gguf_write(o, path, NULL, &err))
        fail_msg("write %s: %s", path, err.msg);
    apr_model_free(o);
    apr_model_free(m);
    return path;
}

static void test_bad_inputs(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = tmp("cvbad");
    char *g = join(d, "in.gguf"), *cmd;
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", fx, g), 0);
    char *outd = join(d, "out");
    assert_int_equal(mkdir(outd, 0755), 0);
    char *o_apr = join(outd, "x.apr"), *o_gguf = join(outd, "x.gguf");

    /* output = input, literally and through another path */
    expect_refused(g, g, NULL, "is the input", g);
    char *alias;
    assert_true(asprintf(&alias, "%s/./in.gguf", d) > 0);
    expect_refused(g, alias, NULL, "is the input", g);
    expect_refused(g, alias, "--to apr", "is the input", g);
    free(alias);
    /* no way to tell the output format */
    char *o_bin = join(outd, "x.bin");
    expect_refused(g, o_bin, NULL, "cannot tell the output format", g);
    free(o_bin);
    expect_refused(g, o_apr, "--outtype q4_k", "--outtype must be", g);

    /* defective GGUFs */
    char *arch = bad_gguf(d, "arch.gguf", fx, 0);
    expect_refused(arch, o_apr, NULL, "unknown architecture 'gpt2' (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)", arch);
    char *miss = bad_gguf(d, "miss.gguf", fx, 1);
    expect_refused(miss, o_apr, NULL, "tensor 'blk.2.ffn_gate.weight' is missing", miss);
    char *cols = bad_gguf(d, "cols.gguf", fx, 2);
    expect_refused(cols, o_apr, NULL, "Q/K/V row lengths disagree", cols);
    char *shape = bad_gguf(d, "shape.gguf", fx, 3);
    expect_refused(shape, o_gguf, "--to gguf", "tensor 'output.weight' has shape [256, 128]", shape);

    /* HF directories missing config.json / the tokenizer */
    char *st = join(d, "st");
    assert_true(asprintf(&cmd, "convert '%s' '%s/' -q", fx, st) > 0);
    must_run(cmd);
    free(cmd);
    char *st_weights = join(st, "model.safetensors");
    char *nocfg = join(d, "nocfg"), *notok = join(d, "notok");
    assert_int_equal(tu_system(NULL, "mkdir '%s' '%s' && cp '%s'/* '%s' && cp '%s'/* '%s' && rm '%s/config.json' "
                                     "'%s/tokenizer.json' '%s/tokenizer.model'", nocfg, notok, st, nocfg, st, notok,
                               nocfg, notok, notok), 0);
    char *w1 = join(nocfg, "model.safetensors"), *w2 = join(notok, "model.safetensors");
    expect_refused(nocfg, o_gguf, NULL, "config.json", w1);
    expect_refused(notok, o_gguf, NULL, "tokenizer", w2);
    /* a safetensors directory output onto the input's own directory */
    expect_refused(st_weights, st, "--to safetensors", "holds the input", st_weights);
    expect_refused(st, st, NULL, "is the input", st_weights);

    /* a sharded index naming a missing shard */
    char *sh = join(d, "sharded");
    assert_true(asprintf(&cmd, "convert '%s' '%s/' --shard-mb 1 -q", fx, sh) > 0);
    must_run(cmd);
    free(cmd);
    char *idx = join(sh, "model.safetensors.index.json");
    assert_int_equal(tu_system(NULL, "rm \"$(ls '%s'/model-0000*.safetensors | tail -1)\"", sh), 0);
    expect_refused(sh, o_gguf, NULL, "safetensors", idx);

    free(idx);
    free(sh);
    free(w2);
    free(w1);
    free(notok);
    free(nocfg);
    free(st_weights);
    free(st);
    free(shape);
    free(cols);
    free(miss);
    free(arch);
    free(o_gguf);
    free(o_apr);
    free(outd);
    free(g);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_via_safetensors),
        cmocka_unit_test(test_fixture_via_apr),
        cmocka_unit_test(test_st_apr_st_llama),
        cmocka_unit_test(test_st_apr_st_qwen2),
        cmocka_unit_test(test_q4km_via_apr),
        cmocka_unit_test(test_provenance_flip),
        cmocka_unit_test(test_sharded_output),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
