/* test_quant_mix.c - llama-quantize's per-tensor type rules on a 7B-shaped
 * 32-layer LLaMA (expectations derived by hand from use_more_bits:
 * layers 0-3, 6, 9, 12, ..., 27 and 28-31 get the bump), tensor order,
 * fallbacks, and the imatrix file readers (legacy .dat and GGUF). */
#include "test_util.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NL 32

typedef struct tt {
    char name[64];
    uint32_t ndim;
    uint64_t dims[2];
} tt;

/* The tensors of a LLaMA-7B GGUF in a scrambled order (the mix sorts them). */
static int llama_tensors(tt *t, bool with_output, uint64_t hidden, uint64_t ffn)
{
    int n = 0;
    static const char *per[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = NL - 1; l >= 0; l--) {
        for (int k = 8; k >= 0; k--) {
            tt *x = &t[n++];
            snprintf(x->name, sizeof x->name, "blk.%d.%s.weight", l, per[k]);
            if (strstr(per[k], "norm")) {
                x->ndim = 1;
                x->dims[0] = hidden;
            } else {
                x->ndim = 2;
                bool down = !strcmp(per[k], "ffn_down"), upgate = strstr(per[k], "ffn_") && !down;
                x->dims[0] = upgate ? ffn : hidden;
                x->dims[1] = down ? ffn : hidden;
            }
        }
    }
    snprintf(t[n].name, 64, "token_embd.weight"), t[n].ndim = 2, t[n].dims[0] = 32000, t[n].dims[1] = hidden, n++;
    snprintf(t[n].name, 64, "output_norm.weight"), t[n].ndim = 1, t[n].dims[0] = hidden, n++;
    if (with_output)
        snprintf(t[n].name, 64, "output.weight"), t[n].ndim = 2, t[n].dims[0] = 32000, t[n].dims[1] = hidden, n++;
    return n;
}

static int cmp_tt(const void *a, const void *b)
{
    return apr_quant_tensor_cmp(((const tt *)a)->name, ((const tt *)b)->name);
}

/* Runs a mix over the model; types[] follows the sorted order of t. */
static void plan(const char *mix, bool pure, tt *t, int n, apr_dtype *types)
{
    qsort(t, (size_t)n, sizeof *t, cmp_tt);
    apr_quant_mix m;
    apr_quant_mix_model mm = {.arch = "llama", .n_layer = NL, .n_head = 32, .n_head_kv = 32};
    apr_err err = {0};
    assert_int_equal(apr_quant_mix_init(&m, mix, pure, &mm, &err), 0);
    for (int i = 0; i < n; i++)
        apr_quant_mix_scan(&m, t[i].name);
    for (int i = 0; i < n; i++) {
        int rc = apr_quant_mix_type(&m, t[i].name, t[i].ndim, t[i].dims, APR_DT_F16, &types[i], &err);
        if (rc)
            print_message("%s: %s\n", t[i].name, err.msg);
        assert_int_equal(rc, 0);
    }
}

static apr_dtype type_of(const tt *t, const apr_dtype *types, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name))
            return types[i];
    fail_msg("no tensor %s", name);
    return APR_DT_F32;
}

static bool bumped_layer(int l) /* use_more_bits(l, 32), derived by hand */
{
    static const int yes[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (yes[i] == l)
            return true;
    return false;
}

static void check_layerwise(const char *mix, apr_dtype base, apr_dtype bump_v, apr_dtype bump_down,
                            bool (*bumped)(int, const char *))
{
    tt t[NL * 9 + 3];
    apr_dtype ty[NL * 9 + 3];
    int n = llama_tensors(t, true, 4096, 11008);
    plan(mix, false, t, n, ty);
    char nm[64];
    for (int l = 0; l < NL; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        assert_int_equal(type_of(t, ty, n, nm), bumped(l, "attn_v") ? bump_v : base);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        assert_int_equal(type_of(t, ty, n, nm), bumped(l, "ffn_down") ? bump_down : base);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        assert_int_equal(type_of(t, ty, n, nm), base);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
        assert_int_equal(type_of(t, ty, n, nm), base);
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        assert_int_equal(type_of(t, ty, n, nm), APR_DT_F16); /* 1-D: kept as it is */
    }
    assert_int_equal(type_of(t, ty, n, "token_embd.weight"), base);
    assert_int_equal(type_of(t, ty, n, "output_norm.weight"), APR_DT_F16);
}

static bool b_more_bits(int l, const char *w) { (void)w; return bumped_layer(l); }
static bool b_q4ks(int l, const char *w) { (void)w; return l < 4; }
static bool b_none(int l, const char *w) { (void)l; (void)w; return false; }

static void test_q4_k_m(void **state)
{
    (void)state;
    check_layerwise("Q4_K_M", APR_DT_Q4_K, APR_DT_Q6_K, APR_DT_Q6_K, b_more_bits);
    tt t[NL * 9 + 3];
    apr_dtype ty[NL * 9 + 3];
    int n = llama_tensors(t, true, 4096, 11008);
    plan("q4_k_m", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "output.weight"), APR_DT_Q6_K);
    int n6 = 0;
    for (int l = 0; l < NL; l++)
        n6 += bumped_layer(l);
    assert_int_equal(n6, 16); /* the well-known 16 of 32 Q6_K attn_v layers of a 7B Q4_K_M */
}

static void test_other_mixes(void **state)
{
    (void)state;
    check_layerwise("Q4_K_S", APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q5_K, b_q4ks);
    check_layerwise("Q5_K_M", APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_Q6_K, b_more_bits);
    check_layerwise("Q5_K_S", APR_DT_Q5_K, APR_DT_Q5_K, APR_DT_Q5_K, b_none);
    check_layerwise("Q6_K", APR_DT_Q6_K, APR_DT_Q6_K, APR_DT_Q6_K, b_none);
    check_layerwise("Q8_0", APR_DT_Q8_0, APR_DT_Q8_0, APR_DT_Q8_0, b_none);
    check_layerwise("Q4_0", APR_DT_Q4_0, APR_DT_Q4_0, APR_DT_Q4_0, b_none);
    tt t[NL * 9 + 3];
    apr_dtype ty[NL * 9 + 3];
    int n = llama_tensors(t, true, 4096, 11008);
    plan("Q8_0", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "output.weight"), APR_DT_Q8_0);
    plan("Q5_K_S", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "output.weight"), APR_DT_Q6_K);
    plan("F16", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "output.weight"), APR_DT_F16);
    plan("BF16", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "blk.3.attn_v.weight"), APR_DT_BF16);
    assert_int_equal(type_of(t, ty, n, "blk.3.ffn_norm.weight"), APR_DT_F16);
}

static void test_pure_tied_fallback(void **state)
{
    (void)state;
    tt t[NL * 9 + 3];
    apr_dtype ty[NL * 9 + 3];
    /* --pure: the base type everywhere, output included */
    int n = llama_tensors(t, true, 4096, 11008);
    plan("Q4_K_M", true, t, n, ty);
    for (int i = 0; i < n; i++)
        assert_int_equal(ty[i], t[i].ndim == 1 ? APR_DT_F16 : APR_DT_Q4_K);
    /* tied embeddings: token_embd takes the output tensor's rule */
    n = llama_tensors(t, false, 4096, 11008);
    plan("Q4_K_M", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "token_embd.weight"), APR_DT_Q6_K);
    plan("Q8_0", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "token_embd.weight"), APR_DT_Q8_0);
    /* rows of 4000 (not a multiple of 256, a multiple of 32) */
    n = llama_tensors(t, true, 4000, 10976);
    plan("Q4_K_M", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "blk.5.attn_q.weight"), APR_DT_Q5_0);
    assert_int_equal(type_of(t, ty, n, "blk.0.attn_v.weight"), APR_DT_Q8_0);  /* Q6_K -> Q8_0 */
    assert_int_equal(type_of(t, ty, n, "output.weight"), APR_DT_Q8_0);       /* output rule: Q8_0 */
    assert_int_equal(type_of(t, ty, n, "blk.0.ffn_down.weight"), APR_DT_Q8_0); /* 10976 % 256 != 0 */
    plan("Q5_K_S", false, t, n, ty);
    assert_int_equal(type_of(t, ty, n, "blk.5.attn_q.weight"), APR_DT_Q5_1);
    /* rows of 100: no 32-block type fits either -> F16 */
    uint64_t d100[2] = {64, 100};
    apr_quant_mix m;
    apr_quant_mix_model mm = {.arch = "llama", .n_layer = 2};
    apr_err err = {0};
    apr_dtype o;
    assert_int_equal(apr_quant_mix_init(&m, "Q4_K_M", false, &mm, &err), 0);
    assert_int_equal(apr_quant_mix_type(&m, "blk.0.attn_q.weight", 2, d100, APR_DT_F32, &o, &err), 0);
    assert_int_equal(o, APR_DT_F16);
    assert_int_equal(m.n_fallback, 1);
    /* a 32-block type has no smaller block to demote to: F16 (tensor_type_fallback) */
    assert_int_equal(apr_quant_mix_init(&m, "Q8_0", false, &mm, &err), 0);
    assert_int_equal(apr_quant_mix_type(&m, "blk.0.attn_q.weight", 2, d100, APR_DT_F32, &o, &err), 0);
    assert_int_equal(o, APR_DT_F16);
    /* IQ4_XS falls back to IQ4_NL (rows of 32 k) */
    uint64_t d96[2] = {64, 96};
    assert_int_equal(apr_quant_mix_init(&m, "IQ4_XS", false, &mm, &err), 0);
    assert_int_equal(apr_quant_mix_type(&m, "blk.0.attn_q.weight", 2, d96, APR_DT_F32, &o, &err), 0);
    assert_int_equal(o, APR_DT_IQ4_NL);
    /* the rest of llama-quantize's list is refused by name, as unsupported */
    static const char *const refused[] = {"IQ2_XXS", "IQ3_M", "TQ1_0", "MXFP4_MOE", "IQ1_S", "COPY"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_int_equal(apr_quant_mix_init(&m, refused[i], false, &mm, &err), APR_E_UNSUPPORTED);
        assert_non_null(strstr(err.msg, refused[i]));
        assert_non_null(strstr(err.msg, "does not implement"));
    }
    /* Q2_K_S needs an imatrix for its Q2_K tensors, not for token_embd / output */
    assert_int_equal(apr_quant_mix_init(&m, "Q2_K_S", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 21);
    assert_true(apr_quant_mix_needs_imatrix(&m, "blk.0.attn_q.weight", APR_DT_Q2_K));
    assert_false(apr_quant_mix_needs_imatrix(&m, "blk.0.attn_v.weight", APR_DT_Q4_K));
    assert_false(apr_quant_mix_needs_imatrix(&m, "token_embd.weight", APR_DT_Q2_K));
    assert_int_equal(apr_quant_mix_init(&m, "Q3_K", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 12); /* alias of Q3_K_M */
    /* unknown mix */
    assert_true(apr_quant_mix_init(&m, "Q3_X", false, &mm, &err) < 0);
    assert_non_null(strstr(err.msg, "Q3_X"));
    /* dims of 1 do not count as dimensions (ggml_n_dims) */
    uint64_t d1[2] = {1, 4096};
    assert_false(apr_quant_tensor_allowed("blk.0.attn_q.weight", 2, d1));
    uint64_t d2[2] = {256, 256};
    assert_false(apr_quant_tensor_allowed("blk.0.attn_norm.weight", 2, d2));
    assert_false(apr_quant_tensor_allowed("blk.0.attn_q.bias", 2, d2));
    assert_true(apr_quant_tensor_allowed("blk.0.attn_q.weight", 2, d2));
    /* general.file_type values */
    assert_int_equal(apr_quant_mix_init(&m, "Q4_K", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 15);
    assert_int_equal(apr_quant_mix_init(&m, "Q6_K", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 18);
    assert_int_equal(apr_quant_mix_init(&m, "Q5_K_M", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 17);
    assert_int_equal(apr_quant_mix_init(&m, "Q8_0", false, &mm, &err), 0);
    assert_int_equal(m.ftype, 7);
}

static void test_order(void **state)
{
    (void)state;
    assert_true(apr_quant_tensor_cmp("output.weight", "token_embd.weight") < 0);
    assert_true(apr_quant_tensor_cmp("token_embd.weight", "blk.0.attn_k.weight") < 0);
    assert_true(apr_quant_tensor_cmp("blk.9.ffn_up.weight", "blk.10.attn_k.weight") < 0);
    assert_true(apr_quant_tensor_cmp("blk.2.attn_k.weight", "blk.2.attn_q.weight") < 0);
    assert_int_equal(apr_quant_tensor_cmp("blk.2.x", "blk.2.x"), 0);
}

/* ------------------------------------------------------------ imatrix */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_i32(buf *b, int32_t v) { put(b, &v, 4); }

static buf legacy_file(bool trailer, float poison)
{
    buf b = {0};
    put_i32(&b, 2);
    const char *names[2] = {"blk.0.attn_q.weight", "output.weight"};
    for (int e = 0; e < 2; e++) {
        put_i32(&b, (int32_t)strlen(names[e]));
        put(&b, names[e], strlen(names[e]));
        put_i32(&b, 4); /* ncall */
        put_i32(&b, 8);
        for (int i = 0; i < 8; i++) {
            float v = (float)(i + 1) * (e + 1);
            if (e == 1 && i == 7)
                v = poison;
            put(&b, &v, 4);
        }
    }
    if (trailer) {
        put_i32(&b, 100);
        put_i32(&b, 9);
        put(&b, "wiki.test", 9);
    }
    return b;
}

static void test_imatrix_legacy(void **state)
{
    (void)state;
    apr_err err = {0};
    apr_imatrix *im = NULL;
    buf b = legacy_file(true, 16.0f);
    assert_int_equal(apr_imatrix_parse_legacy(&im, b.p, b.n, &err), 0);
    assert_int_equal(im->n_entries, 2);
    assert_int_equal(im->chunks, 100);
    assert_string_equal(im->dataset, "wiki.test");
    const apr_imatrix_entry *e = apr_imatrix_find(im, "blk.0.attn_q.weight");
    assert_non_null(e);
    assert_int_equal(e->n, 8);
    assert_true(e->values[3] == 4.0f / 4); /* divided by ncall */
    assert_null(apr_imatrix_find(im, "blk.1.attn_q.weight"));
    apr_imatrix_free(im);
    /* every truncation is an error, never a crash */
    for (size_t cut = 0; cut < b.n; cut++) {
        int rc = apr_imatrix_parse_legacy(&im, b.p, cut, &err);
        /* the one valid prefix: the entries without the optional trailer */
        if (cut == b.n - 17)
            assert_int_equal(rc, 0), apr_imatrix_free(im);
        else
            assert_true(rc < 0);
    }
    free(b.p);
    /* non-finite values are refused, as llama-quantize does */
    b = legacy_file(false, 1.0f / 0.0f);
    assert_true(apr_imatrix_parse_legacy(&im, b.p, b.n, &err) < 0);
    assert_non_null(strstr(err.msg, "output.weight"));
    /* lying counts */
    int32_t huge = 0x7fffffff;
    memcpy(b.p, &huge, 4);
    assert_true(apr_imatrix_parse_legacy(&im, b.p, b.n, &err) < 0);
    int32_t neg = -1;
    memcpy(b.p, &neg, 4);
    assert_true(apr_imatrix_parse_legacy(&im, b.p, b.n, &err) < 0);
    int32_t one = 1;
    memcpy(b.p, &one, 4); /* then the second entry is trailing garbage */
    assert_true(apr_imatrix_parse_legacy(&im, b.p, b.n, &err) < 0);
    free(b.p);
}

static void test_imatrix_gguf(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("imat");
    assert_non_null(dir);
    apr_err err = {0};
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    float sums[2][4] = {{2, 4, 6, 8}, {1, 1, 1, 1}};
    float counts[2] = {2, 0};
    uint64_t ds[2] = {2, 4}, dc[2] = {2, 1};
    assert_int_equal(apr_model_add_tensor(m, "blk.0.ffn_down.weight.in_sum2", APR_DT_F32, 2, ds, sums, sizeof sums, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "blk.0.ffn_down.weight.counts", APR_DT_F32, 2, dc, counts, sizeof counts, false, &err), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "imatrix.chunk_count", 7), 0);
    const char *path = tu_path(dir, "im.gguf");
    assert_int_equal(apr_gguf_write(m, path, NULL, &err), 0);
    apr_imatrix *im = NULL;
    int rc = apr_imatrix_load(&im, path, &err);
    if (rc)
        print_message("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(im->chunks, 7);
    const apr_imatrix_entry *e = apr_imatrix_find(im, "blk.0.ffn_down.weight");
    assert_non_null(e);
    assert_int_equal(e->n, 8);
    assert_true(e->values[0] == 1.0f && e->values[3] == 4.0f); /* sums / count */
    assert_true(e->values[4] == 1.0f && e->values[7] == 1.0f); /* count 0 -> 1 */
    apr_imatrix_free(im);
    /* counts without sums */
    apr_model *m2 = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m2, "x.counts", APR_DT_F32, 2, dc, counts, sizeof counts, false, &err), 0);
    assert_true(apr_imatrix_from_model(&im, m2, &err) < 0);
    /* shape mismatch: counts of 1 row for sums of 2 rows */
    uint64_t dc1[2] = {1, 1};
    apr_model *m3 = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m3, "y.in_sum2", APR_DT_F32, 2, ds, sums, sizeof sums, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m3, "y.counts", APR_DT_F32, 2, dc1, counts, 4, false, &err), 0);
    assert_true(apr_imatrix_from_model(&im, m3, &err) < 0);
    /* no rows: sums [0, 4] and counts [0, 1] would be an entry of no values
     * (fuzz_imatrix found it accepted; fuzz/corpus/imatrix/regress-zero-rows.gguf) */
    uint64_t ds0[2] = {0, 4}, dc0[2] = {0, 1};
    apr_model *m4 = apr_model_new(APR_FMT_GGUF);
    assert_int_equal(apr_model_add_tensor(m4, "z.in_sum2", APR_DT_F32, 2, ds0, sums, 0, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m4, "z.counts", APR_DT_F32, 2, dc0, counts, 0, false, &err), 0);
    assert_true(apr_imatrix_from_model(&im, m4, &err) < 0);
    assert_null(im);
    assert_non_null(strstr(err.msg, "shapes or types do not match"));
    apr_model_free(m);
    apr_model_free(m2);
    apr_model_free(m3);
    apr_model_free(m4);
    /* a legacy file from disk, and a missing file */
    buf b = legacy_file(true, 3.0f);
    const char *lp = tu_path(dir, "im.dat");
    assert_int_equal(tu_write_file(lp, b.p, b.n), 0);
    assert_int_equal(apr_imatrix_load(&im, lp, &err), 0);
    assert_int_equal(im->n_entries, 2);
    apr_imatrix_free(im);
    free(b.p);
    assert_true(apr_imatrix_load(&im, tu_path(dir, "absent.dat"), &err) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_k_m),
        cmocka_unit_test(test_other_mixes),
        cmocka_unit_test(test_pure_tied_fallback),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_imatrix_legacy),
        cmocka_unit_test(test_imatrix_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
