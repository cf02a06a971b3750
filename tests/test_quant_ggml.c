/* test_quant_ggml.c - libquant against ggml itself: ggml_quantize_chunk from
 * the libggml-base.so that llama-cpp-python ships (the code llama-quantize
 * runs), loaded with dlopen, on the same rows and importance weights as
 * apr_quantize_chunk (the SIMD kernels) and apr_quantize_chunk_ref. Every
 * quantized type, with and without an imatrix, on inputs with zero, constant,
 * one-signed, tiny, huge and spiky blocks. The golden file pins the same
 * bytes offline; this is the live cross-check.
 *
 * The library is found through APR_GGML_LIB or python3's llama_cpp package;
 * without either the test skips visibly. */
#include "test_util.h"
#include "quant.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef size_t (*ggml_quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                                         int64_t n_per_row, const float *imatrix);

static void *open_ggml(char *path, size_t sz)
{
    const char *env = getenv("APR_GGML_LIB");
    if (env && *env) {
        snprintf(path, sz, "%s", env);
    } else {
        FILE *p = popen("python3 -c \"import llama_cpp, os; print(os.path.join(os.path.dirname("
                        "llama_cpp.__file__), 'lib', 'libggml-base.so'))\" 2>/dev/null",
                        "r");
        if (!p)
            return NULL;
        char *ok = fgets(path, (int)sz, p);
        pclose(p);
        if (!ok)
            return NULL;
        path[strcspn(path, "\n")] = 0;
    }
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

/* finite rows with the block shapes that take the kernels' special lanes */
static void fill(int c, uint64_t seed, float *x, int64_t n)
{
    tu_golden_input(seed, 1, (uint64_t)n, x);
    for (int64_t i = 0; i < n; i++) {
        const int64_t sb = i / 16;
        switch (c) {
        case 0: break;
        case 1: if (sb % 3 == 0) x[i] = 0.0f; break;
        case 2: if (sb % 2) x[i] = 0.25f; break;
        case 3: x[i] = fabsf(x[i]) + (sb % 5 == 0 ? 1.0f : 0.0f); break;
        case 4: x[i] = -fabsf(x[i]); break;
        case 5: x[i] *= 1e-20f; break;
        case 6: x[i] *= (sb % 4 == 0) ? 1e4f : 1e-6f; break;
        case 7: x[i] = (i % 37 == 0) ? 50.0f : 0.001f * x[i]; break;
        case 8: x[i] = apr_f16_to_f32(apr_f32_to_f16(x[i] * 0.02f)); break;
        }
    }
}

static void test_against_ggml(void **state)
{
    (void)state;
    char path[4096];
    void *h = open_ggml(path, sizeof path);
    if (!h) {
        tu_skip_or_fail(TU_NEED_PEER, "libggml-base.so not found (set APR_GGML_LIB or install llama-cpp-python)");
    }
    ggml_quantize_chunk_fn qc = (ggml_quantize_chunk_fn)dlsym(h, "ggml_quantize_chunk");
    assert_non_null(qc);
    print_message("ggml: %s\n", path);
    /* apr dtype numbers are ggml's */
    const apr_dtype types[] = {APR_DT_Q8_0, APR_DT_Q4_0, APR_DT_Q4_1, APR_DT_Q5_0, APR_DT_Q5_1,  APR_DT_Q2_K,
                               APR_DT_Q3_K, APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_IQ4_NL, APR_DT_IQ4_XS};
    const int64_t rows = 4, cols = 1280; /* 5 super-blocks, 40 32-blocks (16 + 16 + 8) */
    float *x = malloc(rows * cols * 4), *w = malloc(cols * 4);
    uint8_t *g = malloc(rows * cols * 2), *a = malloc(rows * cols * 2), *r = malloc(rows * cols * 2);
    int bad = 0, n = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        for (int c = 0; c < 9; c++) {
            for (int im = 0; im < 3; im++) {
                const uint64_t seed = 700 + 10 * (uint64_t)c + k;
                fill(c, seed, x, rows * cols);
                const float *imat = NULL;
                if (im) {
                    tu_golden_imatrix(seed + 1, (uint64_t)cols, w);
                    if (im == 2) /* zero columns and a wide spread */
                        for (int64_t i = 0; i < cols; i++)
                            w[i] = (i % 5 == 0) ? 0.0f : w[i] * (float)(1 + i % 97);
                    imat = w;
                }
                const size_t sg = qc((int)types[k], x, g, 0, rows, cols, imat);
                const size_t sa = apr_quantize_chunk(types[k], x, a, rows, cols, imat);
                const size_t sr = apr_quantize_chunk_ref(types[k], x, r, rows, cols, imat);
                assert_int_equal(sa, sg);
                assert_int_equal(sr, sg);
                n++;
                if (memcmp(a, g, sg) || memcmp(r, g, sg)) {
                    print_message("%s case %d imatrix %d: fast %s, reference %s ggml\n", apr_dtype_name(types[k]),
                                  c, im, memcmp(a, g, sg) ? "!=" : "==", memcmp(r, g, sg) ? "!=" : "==");
                    bad++;
                }
            }
        }
    }
    print_message("%d chunks compared with ggml\n", n);
    free(x);
    free(w);
    free(g);
    free(a);
    free(r);
    dlclose(h);
    assert_int_equal(bad, 0);
}

/* ggml.h's struct ggml_type_traits */
typedef struct ggml_traits {
    const char *type_name;
    int64_t blck_size, blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    void (*to_float)(const void *x, float *y, int64_t k);
    void (*from_float_ref)(const float *x, void *y, int64_t k);
} ggml_traits;
typedef const ggml_traits *(*ggml_get_type_traits_fn)(int type);

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The dtype table against ggml's type traits (name, block elements, block
 * bytes) for every ggml type apr knows, and apr_dequantize_row against ggml's
 * to_float on random blocks (both NaN counts as equal: random scale bytes
 * make some); the types apr does not dequantize must say so (-1). */
static void test_types_and_dequant_against_ggml(void **state)
{
    (void)state;
    char path[4096];
    void *h = open_ggml(path, sizeof path);
    if (!h) {
        tu_skip_or_fail(TU_NEED_PEER, "libggml-base.so not found (set APR_GGML_LIB or install llama-cpp-python)");
    }
    ggml_get_type_traits_fn tt = (ggml_get_type_traits_fn)dlsym(h, "ggml_get_type_traits");
    assert_non_null(tt);
    const int64_t n = 4 * 256;
    uint8_t *q = malloc((size_t)n * 4);
    float *a = malloc((size_t)n * 4), *g = malloc((size_t)n * 4);
    int checked = 0, refused = 0, bad = 0;
    for (int t = 0; t < 43; t++) {
        const apr_dtype_info *di = apr_dtype_get(t);
        const ggml_traits *gt = tt(t);
        if (!di) {
            /* ggml's removed numbers (4, 5, 31-33, 36-38) have no name there either */
            assert_true(!gt || !gt->type_name || gt->blck_size == 0);
            continue;
        }
        assert_non_null(gt);
        if (strcasecmp(di->name, gt->type_name) != 0) {
            print_message("type %d: apr %s, ggml %s\n", t, di->name, gt->type_name);
            bad++;
        }
        if ((int64_t)di->block_elems != gt->blck_size || di->block_bytes != gt->type_size || di->quantized != gt->is_quantized) {
            print_message("%s: apr %u elems / %u bytes, ggml %lld / %zu\n", di->name, di->block_elems, di->block_bytes,
                          (long long)gt->blck_size, gt->type_size);
            bad++;
        }
        if (!di->quantized || t == APR_DT_Q8_1 || t == APR_DT_Q8_K || !gt->to_float)
            continue;
        uint64_t seed = 77 + (uint64_t)t;
        const size_t bytes = (size_t)apr_dtype_row_bytes(t, (uint64_t)n);
        for (size_t i = 0; i < bytes; i++)
            q[i] = (uint8_t)splitmix(&seed);
        if (apr_dequantize_row(t, q, a, n) != 0) {
            refused++;
            print_message("%s: not dequantized by apr (refused by name)\n", di->name);
            continue;
        }
        gt->to_float(q, g, n);
        for (int64_t i = 0; i < n; i++) {
            uint32_t ua, ug;
            memcpy(&ua, &a[i], 4);
            memcpy(&ug, &g[i], 4);
            if (ua != ug && !(isnan(a[i]) && isnan(g[i]))) {
                print_message("%s element %lld: apr %g, ggml %g\n", di->name, (long long)i, a[i], g[i]);
                bad++;
                break;
            }
        }
        checked++;
    }
    print_message("dequantized %d block types like ggml; %d refused\n", checked, refused);
    assert_true(checked >= 18);
    free(q);
    free(a);
    free(g);
    dlclose(h);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_ggml),
        cmocka_unit_test(test_types_and_dequant_against_ggml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
