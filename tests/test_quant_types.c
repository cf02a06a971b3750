/* test_quant_types.c - every ggml block type is readable: a GGUF holding one
 * tensor of each (IQ*, TQ*, MXFP4, NVFP4, Q1_0, Q2_0 and the k-quants) is
 * written, opened, shown by `apr inspect`, copied to APR and back with the
 * same bytes, and read by the gguf package (the peer reader) with the same
 * types and payloads; apr_dequantize_row either decodes a type or refuses it
 * (the ggml comparison of the decoded values is in test_quant_ggml.c). */
#include "test_util.h"
#include "formats.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const apr_dtype k_block_types[] = {
    APR_DT_Q4_0,   APR_DT_Q4_1,  APR_DT_Q5_0,   APR_DT_Q5_1,   APR_DT_Q8_0,  APR_DT_Q2_K,  APR_DT_Q3_K,
    APR_DT_Q4_K,   APR_DT_Q5_K,  APR_DT_Q6_K,   APR_DT_IQ2_XXS, APR_DT_IQ2_XS, APR_DT_IQ3_XXS, APR_DT_IQ1_S,
    APR_DT_IQ4_NL, APR_DT_IQ3_S, APR_DT_IQ2_S,  APR_DT_IQ4_XS, APR_DT_IQ1_M, APR_DT_TQ1_0, APR_DT_TQ2_0,
    APR_DT_MXFP4,  APR_DT_NVFP4, APR_DT_Q1_0,   APR_DT_Q2_0,
};
#define N_TYPES (sizeof k_block_types / sizeof *k_block_types)

/* 4 rows of 256 columns of each type, bytes from a fixed generator */
static apr_model *every_type_model(bool with_q2_0)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "llama"), 0);
    uint64_t s = 12345;
    for (size_t k = 0; k < N_TYPES; k++) {
        if (!with_q2_0 && k_block_types[k] == APR_DT_Q2_0)
            continue;
        const uint64_t dims[2] = {4, 256};
        uint64_t nb = 0;
        assert_true(apr_dtype_tensor_bytes(k_block_types[k], 2, dims, &nb));
        uint8_t *buf = malloc(nb);
        for (uint64_t i = 0; i < nb; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(s >> 56);
        }
        char name[64];
        snprintf(name, sizeof name, "t.%s.weight", apr_dtype_name(k_block_types[k]));
        assert_int_equal(apr_model_add_tensor(m, name, k_block_types[k], 2, dims, buf, nb, true, &err), 0);
    }
    return m;
}

static void same_payloads(const apr_model *a, const apr_model *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const apr_tensor *t = &a->tensors[i], *u = apr_model_tensor(b, t->name);
        assert_non_null(u);
        assert_int_equal(t->dtype, u->dtype);
        assert_int_equal(t->nbytes, u->nbytes);
        assert_memory_equal(t->data, u->data, t->nbytes);
    }
}

static void test_every_type_gguf_apr_gguf(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("qtypes");
    assert_non_null(dir);
    char g1[4200], a1[4200], g2[4200];
    snprintf(g1, sizeof g1, "%s", tu_path(dir, "every.gguf"));
    snprintf(a1, sizeof a1, "%s", tu_path(dir, "every.apr"));
    snprintf(g2, sizeof g2, "%s", tu_path(dir, "back.gguf"));
    apr_err err = {0};
    apr_model *m = every_type_model(true);
    assert_int_equal(apr_gguf_write(m, g1, NULL, &err), 0);
    apr_model *r = NULL, *ra = NULL, *rg = NULL;
    assert_int_equal(apr_model_open(&r, g1, NULL, &err), 0);
    same_payloads(m, r);
    assert_int_equal(apr_apr_write(r, a1, NULL, &err), 0);
    assert_int_equal(apr_model_open(&ra, a1, NULL, &err), 0);
    same_payloads(m, ra);
    assert_int_equal(apr_gguf_write(ra, g2, NULL, &err), 0);
    assert_int_equal(apr_model_open(&rg, g2, NULL, &err), 0);
    same_payloads(m, rg);

    /* decoded or refused, never a crash */
    float out[256];
    int decoded = 0;
    for (uint64_t i = 0; i < r->n_tensors; i++)
        decoded += apr_dequantize_row(r->tensors[i].dtype, r->tensors[i].data, out, 256) == 0;
    print_message("%d of %zu block types dequantized\n", decoded, N_TYPES);
    assert_true(decoded >= (int)N_TYPES - 7);

    /* apr inspect lists every type */
    const char *bin = tu_apr_bin();
    if (bin) {
        const char *log = tu_path(dir, "inspect.txt");
        assert_int_equal(tu_system(log, "'%s' inspect '%s'", bin, g1), 0);
        char *txt = tu_read_file(log, NULL);
        assert_non_null(txt);
        for (size_t k = 0; k < N_TYPES; k++)
            assert_non_null(strstr(txt, apr_dtype_name(k_block_types[k])));
        free(txt);
        assert_int_equal(tu_system(log, "'%s' inspect '%s'", bin, a1), 0);
    }

    /* the gguf package reads the same types and sizes (it does not know Q2_0
     * and refuses a file holding one, so that tensor is left out here) */
    tu_require_python("gguf, numpy", "gguf numpy");
    char g3[4200];
    snprintf(g3, sizeof g3, "%s", tu_path(dir, "peer.gguf"));
    apr_model *mp = every_type_model(false);
    assert_int_equal(apr_gguf_write(mp, g3, NULL, &err), 0);
    apr_model_free(mp);
    const char *py = tu_path(dir, "check.py");
    FILE *f = fopen(py, "w");
    assert_non_null(f);
    fprintf(f, "import sys, gguf\n"
               "r = gguf.GGUFReader(sys.argv[1])\n"
               "known = {t.name for t in gguf.GGMLQuantizationType}\n"
               "n = 0\n"
               "for t in r.tensors:\n"
               "    want = t.name.split('.')[1]\n"
               "    if want not in known: continue\n"
               "    assert t.tensor_type.name == want, (t.name, t.tensor_type.name)\n"
               "    blk, sz = gguf.GGML_QUANT_SIZES[t.tensor_type]\n"
               "    assert t.data.nbytes == 4 * 256 // blk * sz, t.name\n"
               "    n += 1\n"
               "print('gguf read', n, 'tensors')\n"
               "assert n >= 22\n");
    fclose(f);
    const char *log = tu_path(dir, "py.txt");
    int rc = tu_system(log, "python3 '%s' '%s'", py, g3);
    char *txt = tu_read_file(log, NULL);
    if (txt)
        print_message("%s", txt);
    free(txt);
    assert_int_equal(rc, 0);
    apr_model_free(rg);
    apr_model_free(ra);
    apr_model_free(r);
    apr_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_gguf_apr_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
