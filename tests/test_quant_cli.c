/* test_quant_cli.c - `apr quantize` end to end on GGUF files written here:
 * tensor order and types of a Q4_K_M mix, bytes equal to the reference
 * kernels, thread-count independence, KVs, provenance, APR output, and the
 * refusals (requantize, NaN rows, bad types, same file, bad imatrix). */
#include "test_util.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H 256
#define FF 512
#define NLAY 2
#define VOC 300

static void add_f(apr_model *m, const char *name, uint32_t ndim, uint64_t d0, uint64_t d1, apr_dtype dt,
                  uint64_t seed, float nan_at_row)
{
    uint64_t dims[2] = {d0, d1};
    uint64_t n = ndim == 1 ? d0 : d0 * d1;
    float *x = malloc(n * 4);
    tu_golden_input(seed, 1, n, x);
    if (nan_at_row >= 0)
        x[(uint64_t)nan_at_row * d1 + 5] = NAN;
    void *data = x;
    uint64_t nb = n * 4;
    if (dt == APR_DT_F16) {
        uint16_t *h = malloc(n * 2);
        for (uint64_t i = 0; i < n; i++)
            h[i] = apr_f32_to_f16(x[i]);
        free(x);
        data = h;
        nb = n * 2;
    }
    apr_err err = {0};
    assert_int_equal(apr_model_add_tensor(m, name, dt, ndim, dims, data, nb, true, &err), 0);
}

/* A 2-layer LLaMA-shaped GGUF; nan_row >= 0 poisons blk.1.attn_q. */
static void write_model(const char *path, apr_dtype dt, int nan_row)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "llama"), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.block_count", NLAY), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.embedding_length", H), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.attention.head_count", 4), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.attention.head_count_kv", 4), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.feed_forward_length", FF), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.context_length", 128), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.rope.dimension_count", H / 4), 0);
    assert_int_equal(apr_model_set_kv_f32(m, "llama.attention.layer_norm_rms_epsilon", 1e-5f), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "general.file_type", dt == APR_DT_F16 ? 1 : 0), 0);
    uint64_t seed = 1;
    /* GGUF order on purpose not llama-quantize's */
    for (int l = NLAY - 1; l >= 0; l--) {
        char nm[64];
#define T2(s, r, c) snprintf(nm, sizeof nm, "blk.%d." s, l), add_f(m, nm, 2, r, c, dt, seed++, (l == 1 && !strcmp(s, "attn_q.weight")) ? nan_row : -1)
        T2("ffn_down.weight", H, FF);
        T2("attn_q.weight", H, H);
        T2("attn_k.weight", H, H);
        T2("attn_v.weight", H, H);
        T2("attn_output.weight", H, H);
        T2("ffn_gate.weight", FF, H);
        T2("ffn_up.weight", FF, H);
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l), add_f(m, nm, 1, H, 0, APR_DT_F32, seed++, -1);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l), add_f(m, nm, 1, H, 0, APR_DT_F32, seed++, -1);
    }
    add_f(m, "token_embd.weight", 2, VOC, H, dt, seed++, -1);
    add_f(m, "output.weight", 2, VOC, H, dt, seed++, -1);
    add_f(m, "output_norm.weight", 1, H, 0, APR_DT_F32, seed++, -1);
    assert_int_equal(apr_gguf_write(m, path, NULL, &err), 0);
    apr_model_free(m);
}

static int run(const char *dir, const char *args, char **log_out)
{
    const char *log = tu_path(dir, "log.txt");
    int rc = tu_system(log, "'%s' quantize %s", tu_apr_bin(), args);
    if (log_out)
        *log_out = tu_read_file(log, NULL);
    return rc;
}

static char g_dir[4096]; /* tu_tmpdir's buffer rotates: keep a copy */

static int setup(void **state)
{
    (void)state;
    const int dir = tu_bin_dir(g_dir, sizeof g_dir, "qcli");
    if (dir != 0)
        return dir < 0 ? -1 : 0;
    write_model(tu_path(g_dir, "f16.gguf"), APR_DT_F16, -1);
    write_model(tu_path(g_dir, "nan.gguf"), APR_DT_F32, 3);
    return 0;
}

static void test_q4_k_m_output(void **state)
{
    (void)state;
    TU_NEED_BIN();
    char args[4096];
    char *log = NULL;
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M --threads 2", tu_path(g_dir, "f16.gguf"),
             tu_path(g_dir, "q4km.gguf"));
    int rc = run(g_dir, args, &log);
    if (rc)
        print_message("%s\n", log ? log : "");
    assert_int_equal(rc, 0);
    assert_non_null(strstr(log, "M weights/s"));
    free(log);
    apr_model *in = NULL, *out = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&in, tu_path(g_dir, "f16.gguf"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&out, tu_path(g_dir, "q4km.gguf"), NULL, &err), 0);
    assert_int_equal(out->n_tensors, in->n_tensors);
    /* llama-quantize order: non-layer tensors by name, then blk.0.*, blk.1.* */
    for (uint64_t i = 1; i < out->n_tensors; i++)
        assert_true(apr_quant_tensor_cmp(out->tensors[i - 1].name, out->tensors[i].name) < 0);
    assert_string_equal(out->tensors[0].name, "output.weight");
    uint32_t v;
    assert_true(apr_kv_get_u32(out, "general.file_type", &v) && v == 15);
    assert_true(apr_kv_get_u32(out, "general.quantization_version", &v) && v == 2);
    assert_true(apr_kv_get_u32(out, "llama.block_count", &v) && v == NLAY);
    /* types: 2 layers -> use_more_bits(i, 2) is true for both (i >= 7*2/8 = 1, i < 2/8 = 0 ... ) */
    for (uint64_t i = 0; i < out->n_tensors; i++) {
        const apr_tensor *t = &out->tensors[i];
        const apr_tensor *s = apr_model_tensor(in, t->name);
        assert_non_null(s);
        apr_dtype want;
        if (t->ndim == 1)
            want = APR_DT_F32;
        else if (!strcmp(t->name, "output.weight"))
            want = APR_DT_Q6_K;
        else if (strstr(t->name, "attn_v") || strstr(t->name, "ffn_down")) {
            int l = atoi(t->name + 4);
            want = (l < NLAY / 8 || l >= 7 * NLAY / 8 || (l - NLAY / 8) % 3 == 2) ? APR_DT_Q6_K : APR_DT_Q4_K;
        } else
            want = APR_DT_Q4_K;
        if (t->dtype != want)
            fail_msg("%s: %s, expected %s", t->name, apr_dtype_name(t->dtype), apr_dtype_name(want));
        if (t->ndim == 2) { /* bytes = the reference kernels on the f16 -> f32 data */
            uint64_t n = t->dims[0] * t->dims[1];
            float *x = malloc(n * 4);
            uint8_t *q = malloc(t->nbytes);
            assert_int_equal(apr_to_f32_row(s->dtype, s->data, x, (int64_t)n), 0);
            assert_int_equal(apr_quantize_chunk_ref(t->dtype, x, q, (int64_t)t->dims[0], (int64_t)t->dims[1], NULL),
                             t->nbytes);
            assert_memory_equal(q, t->data, t->nbytes);
            free(x);
            free(q);
        } else {
            assert_memory_equal(s->data, t->data, t->nbytes);
        }
    }
    /* provenance: a quantize record naming the transform */
    assert_non_null(out->provenance_json);
    assert_non_null(strstr(out->provenance_json, "quantize:Q4_K"));
    apr_model_free(in);
    apr_model_free(out);
}

static void test_threads_and_apr_output(void **state)
{
    (void)state;
    TU_NEED_BIN();
    char args[4096];
    snprintf(args, sizeof args, "'%s' '%s' --type Q6_K --threads 1 --no-provenance", tu_path(g_dir, "f16.gguf"),
             tu_path(g_dir, "t1.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 0);
    snprintf(args, sizeof args, "'%s' '%s' --type Q6_K --threads 3 --no-provenance", tu_path(g_dir, "f16.gguf"),
             tu_path(g_dir, "t3.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 0);
    size_t n1, n3;
    char *a = tu_read_file(tu_path(g_dir, "t1.gguf"), &n1), *b = tu_read_file(tu_path(g_dir, "t3.gguf"), &n3);
    assert_int_equal(n1, n3);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);
    /* APR output by extension */
    snprintf(args, sizeof args, "'%s' '%s' --type Q8_0", tu_path(g_dir, "f16.gguf"), tu_path(g_dir, "q8.apr"));
    char *log = NULL;
    int rc = run(g_dir, args, &log);
    if (rc)
        print_message("%s\n", log ? log : "");
    free(log);
    assert_int_equal(rc, 0);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, tu_path(g_dir, "q8.apr"), NULL, &err), 0);
    assert_int_equal(m->format, APR_FMT_APR);
    const apr_tensor *t = apr_model_tensor(m, "model.layers.0.self_attn.qkv_proj.weight"); /* APR's layout */
    if (!t)
        for (uint64_t i = 0; i < m->n_tensors; i++)
            print_message("  %s\n", m->tensors[i].name);
    assert_non_null(t);
    assert_int_equal(t->dtype, APR_DT_Q8_0);
    apr_model_free(m);
}

static void test_refusals(void **state)
{
    (void)state;
    TU_NEED_BIN();
    char args[4096];
    char *log = NULL;
    /* already quantized input */
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M", tu_path(g_dir, "t1.gguf"), tu_path(g_dir, "rq.gguf"));
    assert_int_equal(run(g_dir, args, &log), 2);
    assert_non_null(strstr(log, "--allow-requantize"));
    free(log);
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M --allow-requantize", tu_path(g_dir, "t1.gguf"),
             tu_path(g_dir, "rq.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 0);
    /* NaN names tensor and row */
    snprintf(args, sizeof args, "'%s' '%s' --type Q8_0", tu_path(g_dir, "nan.gguf"), tu_path(g_dir, "nan.out.gguf"));
    assert_int_equal(run(g_dir, args, &log), 2);
    assert_non_null(strstr(log, "blk.1.attn_q.weight"));
    assert_non_null(strstr(log, "row 3"));
    free(log);
    assert_null(tu_read_file(tu_path(g_dir, "nan.out.gguf"), NULL)); /* nothing left behind */
    /* bad type, same file, missing input, bad thread count */
    snprintf(args, sizeof args, "'%s' '%s' --type Q7_K", tu_path(g_dir, "f16.gguf"), tu_path(g_dir, "x.gguf"));
    assert_int_equal(run(g_dir, args, &log), 2);
    assert_non_null(strstr(log, "Q7_K"));
    free(log);
    snprintf(args, sizeof args, "'%s' '%s' --type Q8_0", tu_path(g_dir, "f16.gguf"), tu_path(g_dir, "f16.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 2);
    snprintf(args, sizeof args, "'%s' '%s' --type Q8_0", tu_path(g_dir, "absent.gguf"), tu_path(g_dir, "x.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 2);
    snprintf(args, sizeof args, "'%s' '%s' --type Q8_0 --threads 0", tu_path(g_dir, "f16.gguf"), tu_path(g_dir, "x.gguf"));
    assert_int_equal(run(g_dir, args, NULL), 2);
    /* a truncated imatrix file, and one whose sizes do not fit the model */
    int32_t bad[3] = {1, 19, 0};
    assert_int_equal(tu_write_file(tu_path(g_dir, "bad.dat"), bad, sizeof bad), 0);
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M --imatrix '%s'", tu_path(g_dir, "f16.gguf"),
             tu_path(g_dir, "x.gguf"), tu_path(g_dir, "bad.dat"));
    assert_int_equal(run(g_dir, args, NULL), 2);
    uint8_t dat[4 + 4 + 19 + 8 + 16 * 4];
    int32_t one = 1, len = 19, ncall = 1, nval = 16;
    memcpy(dat, &one, 4);
    memcpy(dat + 4, &len, 4);
    memcpy(dat + 8, "blk.0.attn_q.weight", 19);
    memcpy(dat + 27, &ncall, 4);
    memcpy(dat + 31, &nval, 4);
    for (int i = 0; i < 16; i++) {
        float f = 1.0f;
        memcpy(dat + 35 + 4 * i, &f, 4);
    }
    assert_int_equal(tu_write_file(tu_path(g_dir, "small.dat"), dat, sizeof dat), 0);
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M --imatrix '%s'", tu_path(g_dir, "f16.gguf"),
             tu_path(g_dir, "x.gguf"), tu_path(g_dir, "small.dat"));
    assert_int_equal(run(g_dir, args, &log), 2);
    assert_non_null(strstr(log, "blk.0.attn_q.weight"));
    free(log);
    assert_null(tu_read_file(tu_path(g_dir, "x.gguf"), NULL));
}

/* llama-quantize's options: their effect on the types (the byte-for-byte
 * comparison with llama.cpp is in tests/peer/llama_quantize_peer.py) and
 * every kind of bad value: exit 2, a message naming the problem, no output. */
static void test_llama_quantize_options(void **state)
{
    (void)state;
    TU_NEED_BIN();
    char args[12000];
    char *log = NULL;
    char in[4200], out[4200]; /* tu_path's buffer rotates */
    snprintf(in, sizeof in, "%s", tu_path(g_dir, "f16.gguf"));
    snprintf(out, sizeof out, "%s", tu_path(g_dir, "opt.gguf"));
    snprintf(args, sizeof args,
             "'%s' '%s' --type Q4_K_M --output-tensor-type q8_0 --token-embedding-type Q5_K "
             "--tensor-type 'attn_k=q5_0' --tensor-type 'blk\\.1\\.ffn_(up|gate)=iq4_nl' "
             "--override-kv general.name=str:opt-test --override-kv test.n=int:-7 --override-kv test.b=bool:true",
             in, out);
    assert_int_equal(run(g_dir, args, NULL), 0);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, out, NULL, &err), 0);
    assert_int_equal(apr_model_tensor(m, "output.weight")->dtype, APR_DT_Q8_0);
    assert_int_equal(apr_model_tensor(m, "token_embd.weight")->dtype, APR_DT_Q5_K);
    assert_int_equal(apr_model_tensor(m, "blk.0.attn_k.weight")->dtype, APR_DT_Q5_0);
    assert_int_equal(apr_model_tensor(m, "blk.1.ffn_up.weight")->dtype, APR_DT_IQ4_NL);
    assert_int_equal(apr_model_tensor(m, "blk.1.ffn_gate.weight")->dtype, APR_DT_IQ4_NL);
    assert_int_equal(apr_model_tensor(m, "blk.0.ffn_up.weight")->dtype, APR_DT_Q4_K);
    assert_string_equal(apr_kv_get_str(m, "general.name"), "opt-test");
    uint32_t u = 0;
    assert_true(apr_kv_get_u32(m, "test.n", &u));
    assert_int_equal(u, 7); /* llama-quantize writes int overrides as UINT32 of |value| */
    apr_model_free(m);
    /* --leave-output-tensor */
    snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M --leave-output-tensor", in, out);
    assert_int_equal(run(g_dir, args, NULL), 0);
    assert_int_equal(apr_model_open(&m, out, NULL, &err), 0);
    assert_int_equal(apr_model_tensor(m, "output.weight")->dtype, APR_DT_F16);
    apr_model_free(m);
    unlink(out);

    /* an imatrix with one entry, blk.0.attn_q.weight, for the filters' bad patterns */
    assert_int_equal(apr_model_open(&m, in, NULL, &err), 0);
    const apr_tensor *aq = apr_model_tensor(m, "blk.0.attn_q.weight");
    assert_non_null(aq);
    const int32_t ncols = (int32_t)aq->dims[aq->ndim - 1];
    apr_model_free(m);
    char dat_path[4200];
    snprintf(dat_path, sizeof dat_path, "%s", tu_path(g_dir, "one.dat"));
    uint8_t *dat = malloc(35 + 4 * (size_t)ncols);
    assert_non_null(dat);
    const int32_t one = 1, len = 19;
    memcpy(dat, &one, 4);
    memcpy(dat + 4, &len, 4);
    memcpy(dat + 8, "blk.0.attn_q.weight", 19);
    memcpy(dat + 27, &one, 4);
    memcpy(dat + 31, &ncols, 4);
    for (int32_t i = 0; i < ncols; i++) {
        const float f = 1.0f + (float)i / 64;
        memcpy(dat + 35 + 4 * i, &f, 4);
    }
    assert_int_equal(tu_write_file(dat_path, dat, 35 + 4 * (size_t)ncols), 0);
    free(dat);
    char inc_ok[4400], inc_bad[4400], exc_bad[4400];
    snprintf(inc_ok, sizeof inc_ok, "--imatrix '%s' --include-weights attn_q --include-weights ffn_up", dat_path);
    snprintf(inc_bad, sizeof inc_bad, "--imatrix '%s' --include-weights attn_qq", dat_path);
    snprintf(exc_bad, sizeof exc_bad, "--imatrix '%s' --exclude-weights 'blk.1.'", dat_path);
    const struct {
        const char *opts, *says;
    } bad[] = {
        {inc_ok, "--include-weights 'ffn_up' matches no entry of the imatrix"},
        {inc_bad, "--include-weights 'attn_qq' matches no entry of the imatrix"},
        {exc_bad, "--exclude-weights 'blk.1.' matches no entry of the imatrix"},
        {"--tensor-type 'nothing_here=q8_0'", "matches no quantizable tensor"},
        {"--tensor-type 'attn_q.weight=q8_0' --tensor-type 'attn_q=q4_0'", "matches no quantizable tensor"},
        {"--tensor-type attn_q", "PATTERN=TYPE"},
        {"--tensor-type =q8_0", "missing tensor name"},
        {"--tensor-type attn_q=", "missing quantization type"},
        {"--tensor-type 'attn_q=q7_k'", "not a type apr can write"},
        {"--tensor-type 'attn_q=iq2_xxs'", "not a type apr can write"},
        {"--tensor-type '(attn=q8_0'", "bad regular expression"},
        {"--output-tensor-type q9_0", "--output-tensor-type q9_0"},
        {"--token-embedding-type tq1_0", "--token-embedding-type tq1_0"},
        {"--override-kv general.name", "KEY=TYPE:VALUE"},
        {"--override-kv general.name=text:x", "TYPE is int, float, bool or str"},
        {"--override-kv a.b=int:seven", "not an integer"},
        {"--override-kv a.b=bool:yes", "true or false"},
        {"--include-weights attn", "give --imatrix"},
        {"--include-weights attn --exclude-weights ffn", "cannot be used together"},
        {"--tensor-type", "needs a value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(args, sizeof args, "'%s' '%s' --type Q4_K_M %s", in, out, bad[i].opts);
        int rc = run(g_dir, args, &log);
        if (rc != 2 || !log || !strstr(log, bad[i].says))
            print_message("%s: exit %d, %s\n", bad[i].opts, rc, log ? log : "(no output)");
        assert_int_equal(rc, 2);
        assert_non_null(strstr(log, bad[i].says));
        free(log);
        assert_null(tu_read_file(out, NULL));
    }
}

/* Non-GGUF input goes through libconvert's GGUF view: an HF directory and
 * an APR file quantize to the same tensors as their GGUF conversion; APR
 * output is APR's layout with provenance that verifies against the source. */
static void test_other_formats(void **state)
{
    (void)state;
    TU_NEED_BIN();
    const char *b = tu_apr_bin();
    char d[4096];
    snprintf(d, sizeof d, "%s", g_dir);
    assert_int_equal(tu_system(NULL, "'%s' synth '%s/syn' --preset tiny-llama --dtype f16 -q", b, d), 0);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/syn' '%s/syn.gguf' -q", b, d, d), 0);
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/syn.gguf' '%s/a.gguf' --type Q4_K_M -q", b, d, d), 0);
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/syn' '%s/b.gguf' --type Q4_K_M -q", b, d, d), 0);
    apr_model *ma = NULL, *mb = NULL;
    apr_err err = {0};
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/a.gguf", d);
    snprintf(pb, sizeof pb, "%s/b.gguf", d);
    assert_int_equal(apr_model_open(&ma, pa, NULL, &err), 0);
    assert_int_equal(apr_model_open(&mb, pb, NULL, &err), 0);
    assert_int_equal(ma->n_tensors, mb->n_tensors);
    for (uint64_t i = 0; i < ma->n_tensors; i++) {
        assert_string_equal(ma->tensors[i].name, mb->tensors[i].name);
        assert_int_equal(ma->tensors[i].dtype, mb->tensors[i].dtype);
        assert_int_equal(ma->tensors[i].nbytes, mb->tensors[i].nbytes);
        assert_memory_equal(ma->tensors[i].data, mb->tensors[i].data, ma->tensors[i].nbytes);
    }
    apr_model_free(ma);
    apr_model_free(mb);
    /* APR out: canonical APR names, provenance checks out against the HF source */
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/syn' '%s/c.apr' --type Q4_K_M -q", b, d, d), 0);
    snprintf(pa, sizeof pa, "%s/c.apr", d);
    assert_int_equal(apr_model_open(&ma, pa, NULL, &err), 0);
    assert_non_null(apr_model_tensor(ma, "model.layers.0.self_attn.qkv_proj.weight"));
    assert_non_null(strstr(ma->provenance_json, "+fuse"));
    apr_model_free(ma);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/c.apr' '%s/syn'", b, d, d), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/b.gguf' '%s/syn'", b, d, d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_k_m_output),
        cmocka_unit_test(test_threads_and_apr_output),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_llama_quantize_options),
        cmocka_unit_test(test_other_formats),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
