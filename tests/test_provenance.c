/* test_provenance.c - the provenance builder and verifier of formats/:
 * the synchronous API (as apr quantize uses it), placeholders patched into
 * written GGUF / APR / safetensors files (APR's footer CRC stays valid),
 * records that do not match their file (unrecorded, missing, malformed), and
 * source checks (renamed source, changed source, parent mismatch), and the
 * HF source names quantize records for Gemma's norms and Phi-3's fusions. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "test_util.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"

static apr_model *open_model(const char *path, bool skip_crc)
{
    apr_model *m = NULL;
    apr_err err = {0};
    apr_open_opts o = {.skip_footer_crc = skip_crc};
    if (apr_model_open(&m, path, &o, &err))
        fail_msg("open %s: %s", path, err.msg);
    return m;
}

typedef struct tally {
    int bad;
    char first[160];
} tally;

static void on_report(void *user, bool ok, const char *what, const char *msg)
{
    tally *t = user;
    if (ok)
        return;
    if (!t->bad)
        snprintf(t->first, sizeof t->first, "%s: %s", what ? what : "(record)", msg);
    t->bad++;
}

/* A two-tensor "quantize"-style record built with the synchronous API. */
static void test_sync_api_quantize(void **state)
{
    (void)state;
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i * 0.25f;
    apr_model *src = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    uint64_t d2[2] = {2, 32}, d1[1] = {64};
    assert_int_equal(apr_model_add_tensor(src, "blk.0.ffn_up.weight", APR_DT_F32, 2, d2, x, sizeof x, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(src, "blk.0.ffn_norm.weight", APR_DT_F32, 1, d1, x, sizeof x, false, &err), 0);
    /* the "quantized" output: a Q8_0-sized buffer (content irrelevant here) */
    uint8_t *q = calloc(1, 68);
    apr_model *out = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(out, "blk.0.ffn_up.weight", APR_DT_Q8_0, 2, d2, q, 68, true, &err), 0);
    assert_int_equal(apr_model_add_tensor(out, "blk.0.ffn_norm.weight", APR_DT_F32, 1, d1, x, sizeof x, false, &err), 0);
    apr_model_set_kv_str(out, "apr.provenance.stale", "from an older record");

    apr_prov *p = apr_prov_new("quantize", "apr quantize in out --type Q8_0");
    assert_non_null(p);
    assert_int_equal(apr_prov_set_source(p, src, &err), 0);
    const apr_tensor *s0 = &src->tensors[0], *s1 = &src->tensors[1];
    assert_int_equal(apr_prov_add_tensor(p, &out->tensors[0], "quantize:Q8_0", &s0, 1, &err), 0);
    assert_int_equal(apr_prov_add_tensor(p, &out->tensors[1], "copy", &s1, 1, &err), 0);
    char *json = NULL;
    assert_int_equal(apr_prov_finish(p, APR_FMT_GGUF, 1, &json, &err), 0);
    assert_int_equal(apr_prov_attach(out, json, APR_FMT_GGUF, &err), 0);
    assert_null(apr_model_kv(out, "apr.provenance.stale"));
    assert_string_equal(apr_kv_get_str(out, "apr.provenance.operation"), "quantize");
    json_error_t je;
    json_t *r = json_loads(json, 0, &je);
    const json_t *up = json_object_get(json_object_get(r, "tensors"), "blk.0.ffn_up.weight");
    assert_string_equal(json_string_value(json_object_get(up, "transform")), "quantize:Q8_0");
    assert_string_equal(json_string_value(json_object_get(up, "dtype")), "Q8_0");
    /* the norm's output and source are the same bytes: one digest */
    const json_t *nm = json_object_get(json_object_get(r, "tensors"), "blk.0.ffn_norm.weight");
    assert_string_equal(json_string_value(json_object_get(nm, "sha256")),
                        json_string_value(json_object_get(json_array_get(json_object_get(nm, "sources"), 0), "sha256")));
    json_decref(r);
    tally t = {0};
    apr_prov_check res;
    assert_int_equal(apr_provenance_verify(out, NULL, 1, on_report, &t, &res, &err), 0);
    assert_int_equal(res.tensors_checked, 2);
    q[5] ^= 1;
    assert_int_equal(apr_provenance_verify(out, NULL, 1, on_report, &t, &res, &err), APR_E_MISMATCH);
    assert_non_null(strstr(t.first, "blk.0.ffn_up.weight: payload sha256"));
    free(json);
    apr_prov_free(p);
    apr_model_free(out);
    apr_model_free(src);
}

static void test_record_mismatches(void **state)
{
    (void)state;
    float x[32] = {1, 2, 3};
    uint64_t d[1] = {32};
    apr_err err = {0};
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m, "a.weight", APR_DT_F32, 1, d, x, sizeof x, false, &err), 0);
    /* no record */
    assert_int_equal(apr_provenance_verify(m, NULL, 1, NULL, NULL, NULL, &err), APR_E_FORMAT);
    assert_non_null(strstr(err.msg, "no provenance record"));
    /* not JSON, not our schema */
    m->provenance_json = strdup("{not json");
    assert_int_equal(apr_provenance_verify(m, NULL, 1, NULL, NULL, NULL, &err), APR_E_FORMAT);
    free(m->provenance_json);
    m->provenance_json = strdup("{\"schema\":\"other/1\",\"tensors\":{}}");
    assert_int_equal(apr_provenance_verify(m, NULL, 1, NULL, NULL, NULL, &err), APR_E_FORMAT);
    free(m->provenance_json);
    /* a record for a tensor the file lacks, and no record for the one it has */
    m->provenance_json = strdup("{\"schema\":\"apr-provenance/1\",\"tensors\":{\"b.weight\":{\"sha256\":\"00\"}}}");
    tally t = {0};
    apr_prov_check res;
    assert_int_equal(apr_provenance_verify(m, NULL, 1, on_report, &t, &res, &err), APR_E_MISMATCH);
    assert_int_equal(res.unrecorded, 1);
    assert_int_equal(res.missing, 1);
    assert_int_equal(t.bad, 2);
    apr_model_free(m);
}

/* Converts with the CLI and checks placeholders are gone and digests right. */
static void run_apr(const char *args)
{
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    if (tu_system("/dev/null", "'%s' %s", bin, args) != 0)
        fail_msg("apr %s failed", args);
}

static void test_patched_outputs(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    const char *d = tu_tmpdir("prov");
    char g[4096], a[4096], s[4096], sf[4096], cmd[16384];
    snprintf(g, sizeof g, "%s/x.gguf", d);
    snprintf(a, sizeof a, "%s/x.apr", d);
    snprintf(s, sizeof s, "%s/st", d);
    snprintf(sf, sizeof sf, "%s/one.safetensors", d);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s' -q", fx, a);
    run_apr(cmd);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s' -q", a, g);
    run_apr(cmd);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s/' --shard-mb 1 -q", g, s);
    run_apr(cmd);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s' -q", a, sf);
    run_apr(cmd);
    const char *outs[] = {a, g, s, sf};
    const char *srcs[] = {fx, a, g, a};
    for (int i = 0; i < 4; i++) {
        apr_model *m = open_model(outs[i], false); /* APR: footer CRC checked after the patch */
        assert_non_null(m->provenance_json);
        /* every digest is 64 hex digits and none is a placeholder: the
         * verifier finds them all equal to the bytes */
        tally t = {0};
        apr_prov_check res;
        apr_err err = {0};
        int rc = apr_provenance_verify(m, srcs[i], 2, on_report, &t, &res, &err);
        if (rc)
            fail_msg("%s: %s (%s)", outs[i], err.msg, t.first);
        assert_int_equal(res.files_bad, 0);
        apr_model_free(m);
    }
    /* no leftovers of the staging beside the outputs */
    char log[4096];
    snprintf(log, sizeof log, "%s/ls.txt", d);
    assert_int_equal(tu_system(log, "ls -a '%s' | grep -c partial", d), 1); /* grep: no match */
}

static void test_source_checks(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    char *d = strdup(tu_tmpdir("provsrc")); /* tu_tmpdir's buffer rotates */
    char a[4096], b[4096], renamed[4096], a2[4096], cmd[16384];
    assert_non_null(d);
    snprintf(a, sizeof a, "%s/a.gguf", d);
    snprintf(b, sizeof b, "%s/b.apr", d);
    snprintf(renamed, sizeof renamed, "%s/renamed.bin", d);
    snprintf(a2, sizeof a2, "%s/a2.gguf", d);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s' --to gguf -q", fx, a);
    run_apr(cmd);
    snprintf(cmd, sizeof cmd, "convert '%s' '%s' -q", a, b);
    run_apr(cmd);
    apr_model *m = open_model(b, false);
    apr_err err = {0};
    apr_prov_check res;
    tally t = {0};
    /* the single recorded source file may have been renamed */
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", a, renamed), 0);
    assert_int_equal(apr_provenance_verify(m, renamed, 2, on_report, &t, &res, &err), 0);
    assert_true(res.parent_checked);
    assert_false(res.parent_bad);

    /* same tensors, another provenance record: the file and the parent differ,
     * the source tensors do not */
    apr_model *src = open_model(a, false);
    char *old = src->provenance_json;
    src->provenance_json = strdup("{\"schema\":\"apr-provenance/1\",\"tensors\":{},\"note\":\"other\"}");
    apr_model_remove_kv(src, "apr.provenance.json");
    assert_int_equal(apr_gguf_write(src, a2, NULL, &err), 0);
    free(old);
    apr_model_free(src);
    memset(&t, 0, sizeof t);
    assert_int_equal(apr_provenance_verify(m, a2, 2, on_report, &t, &res, &err), APR_E_MISMATCH);
    assert_int_equal(res.files_bad, 1);
    assert_int_equal(res.src_tensors_bad, 0);
    assert_true(res.parent_bad);
    /* an unreadable source is reported, not fatal */
    memset(&t, 0, sizeof t);
    assert_int_equal(apr_provenance_verify(m, "/nonexistent/a.gguf", 2, on_report, &t, &res, &err), APR_E_MISMATCH);
    assert_true(res.files_bad >= 1);
    assert_true(res.files_bad <= res.files_checked); /* the failed open is counted as a check (fuzz_provenance) */
    /* a recorded source name that is not a base name is never looked up:
     * "../a.gguf" would otherwise be hashed from outside SOURCE's directory */
    json_t *rec = json_loads(m->provenance_json, 0, NULL);
    json_t *f0 = json_array_get(json_object_get(json_object_get(rec, "source"), "files"), 0);
    assert_non_null(f0);
    json_object_set_new(f0, "file", json_string("../a.gguf"));
    char *bad = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    assert_int_equal(apr_prov_attach(m, bad, APR_FMT_APR, &err), 0);
    free(bad);
    char dir_src[4200];
    snprintf(dir_src, sizeof dir_src, "%s/", d); /* a directory source: files are looked up inside it */
    memset(&t, 0, sizeof t);
    assert_int_equal(apr_provenance_verify(m, dir_src, 2, on_report, &t, &res, &err), APR_E_MISMATCH);
    assert_true(res.files_bad >= 1);
    assert_non_null(strstr(t.first, "is not a file name"));
    apr_model_free(m);
    free(d);
}

/* The source and step one output tensor's record names. */
static void expect_source(json_t *tensors, const char *out, const char *src, const char *transform)
{
    json_t *t = json_object_get(tensors, out);
    if (!t)
        fail_msg("no record of %s", out);
    json_t *s0 = json_array_get(json_object_get(t, "sources"), 0);
    const char *got = s0 ? json_string_value(json_object_get(s0, "name")) : NULL;
    const char *tr = json_string_value(json_object_get(t, "transform"));
    if (!got || strcmp(got, src) || json_array_size(json_object_get(t, "sources")) != 1)
        fail_msg("%s: source %s, expected only %s", out, got ? got : "(none)", src);
    if (!tr || strcmp(tr, transform))
        fail_msg("%s: transform %s, expected %s", out, tr ? tr : "(none)", transform);
}

/* apr quantize of an HF model names each output tensor's HF source under the
 * family's names (family.c): Gemma's HF post_attention_layernorm is the
 * attention output's norm, not LLaMA's ffn_norm (its FFN input norm is
 * pre_feedforward_layernorm), and its norms gained the offset by one; Phi-3's
 * attn_qkv and ffn_up are HF's fused qkv_proj and gate_up_proj. The verifier
 * cannot catch a wrong name whose hash is right, so the names are checked. */
static void test_family_sources(void **state)
{
    (void)state;
    static const struct {
        const char *preset, *out, *out_apr, *src, *transform;
    } cases[] = {
        {"tiny-gemma2", "blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight",
         "model.layers.0.pre_feedforward_layernorm.weight", "offset"},
        {"tiny-gemma2", "blk.1.post_attention_norm.weight", "model.layers.1.post_attention_layernorm.weight",
         "model.layers.1.post_attention_layernorm.weight", "offset"},
        {"tiny-gemma2", "blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight",
         "model.layers.0.post_feedforward_layernorm.weight", "offset"},
        {"tiny-gemma2", "output_norm.weight", "model.norm.weight", "model.norm.weight", "offset"},
        {"tiny-gemma3", "blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight",
         "model.layers.0.self_attn.q_norm.weight", "offset"},
        {"tiny-phi3", "blk.0.attn_qkv.weight", "model.layers.0.self_attn.qkv_proj.weight",
         "model.layers.0.self_attn.qkv_proj.weight", "quantize:Q8_0"},
        {"tiny-phi3", "blk.1.ffn_up.weight", "model.layers.1.mlp.gate_up_proj.weight",
         "model.layers.1.mlp.gate_up_proj.weight", "quantize:Q8_0"},
        /* a family without offset keeps LLaMA's meaning of the name */
        {"tiny-phi3", "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight",
         "model.layers.0.post_attention_layernorm.weight", "copy"},
    };
    char *d = strdup(tu_tmpdir("provfam"));
    assert_non_null(d);
    const char *presets[] = {"tiny-gemma2", "tiny-gemma3", "tiny-phi3"};
    for (size_t k = 0; k < sizeof presets / sizeof *presets; k++) {
        char hf[4200], out[4300];
        snprintf(hf, sizeof hf, "%s/%s", d, presets[k]);
        apr_synth_config c;
        apr_err err = {0};
        assert_int_equal(apr_synth_preset(&c, presets[k], &err), 0);
        apr_write_opts wo = {0};
        if (apr_synth_write(&c, hf, &wo, &err))
            fail_msg("synth %s: %s", presets[k], err.msg);
        for (int apr = 0; apr < 2; apr++) {
            snprintf(out, sizeof out, "%s.%s", hf, apr ? "apr" : "gguf");
            apr_quantize_opts o;
            apr_quantize_opts_init(&o);
            o.type = "Q8_0";
            apr_quantize_stats st;
            if (apr_quantize_file(hf, out, &o, &st, &err))
                fail_msg("quantize %s: %s", out, err.msg);
            apr_model *m = open_model(out, false);
            json_t *rec = json_loads(m->provenance_json, 0, NULL);
            assert_non_null(rec);
            json_t *tensors = json_object_get(rec, "tensors");
            for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                if (!strcmp(cases[i].preset, presets[k]))
                    expect_source(tensors, apr ? cases[i].out_apr : cases[i].out, cases[i].src, cases[i].transform);
            json_decref(rec);
            /* and the names it gives are the source's tensors with those hashes */
            apr_prov_check res;
            tally t = {0};
            if (apr_provenance_verify(m, hf, 2, on_report, &t, &res, &err))
                fail_msg("verify %s: %s (%s)", out, t.first, err.msg);
            apr_model_free(m);
        }
    }
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_api_quantize),
        cmocka_unit_test(test_record_mismatches),
        cmocka_unit_test(test_patched_outputs),
        cmocka_unit_test(test_source_checks),
        cmocka_unit_test(test_family_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
