/* test_vocab_vectors.c - llama.cpp's own tokenizer test vectors: every
 * models/ggml-vocab-NAME.gguf that has NAME.gguf.inp / .out in llama.cpp's
 * source (tu_llama_cpp_src). Each input (separated by "\n__ggml_vocab_test__\n")
 * is encoded as test-tokenizer-0 does (add_special = false, parse_special =
 * false) and must give exactly the ids of its .out line.
 *
 * Vocabularies apr refuses (docs/tokenizers.md, "Refused vocabularies") must
 * be refused by apr_tok_load with a clear error, never tokenized wrongly; every
 * other one must pass 100%. A vocabulary that newly appears in llama.cpp's set
 * is held to the same rule. Also: `--special` against llama-cpp-python. */
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

/* Tokenizer models apr does not implement: load must refuse them. */
static const char *const REFUSED[] = {"bert-bge", NULL};

static bool is_refused(const char *name)
{
    for (size_t i = 0; REFUSED[i]; i++)
        if (!strcmp(REFUSED[i], name))
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the number of failing inputs (prints the first few). */
static size_t run_vocab(const char *dir, const char *name, size_t *n_cases)
{
    char path[4096], inp[4200], outp[4200];
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", dir, name);
    snprintf(inp, sizeof inp, "%s.inp", path);
    snprintf(outp, sizeof outp, "%s.out", path);
    size_t ni = 0, no = 0;
    char *in = tu_read_file(inp, &ni), *out = tu_read_file(outp, &no);
    assert_non_null(in);
    assert_non_null(out);
    apr_err err = {0};
    apr_model *m = NULL;
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("%s: %s", path, err.msg);
    apr_tok *t = NULL;
    int rc = apr_tok_load(&t, m, &err);
    if (is_refused(name)) {
        if (!rc)
            fail_msg("%s: in the refusal list but loads: remove it from REFUSED and the docs", name);
        print_message("REFUSED %-16s %s\n", name, err.msg);
        apr_model_free(m);
        free(in);
        free(out);
        *n_cases = 0;
        return 0;
    }
    if (rc) {
        print_message("  %s: apr_tok_load: %s\n", name, err.msg);
        apr_model_free(m);
        free(in);
        free(out);
        *n_cases = 1;
        return 1;
    }

    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t fails = 0, cases = 0;
    char *text = in, *line = out;
    for (;;) {
        char *end = strstr(text, sep);
        if (!end)
            break;
        *end = 0;
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t *ids = NULL;
        size_t n = 0;
        if (apr_tok_encode(t, text, false, &ids, &n, &err))
            fail_msg("%s: encode: %s", name, err.msg);
        char got[65536];
        size_t w = 0;
        for (size_t i = 0; i < n && w + 16 < sizeof got; i++)
            w += (size_t)snprintf(got + w, sizeof got - w, i ? " %d" : "%d", ids[i]);
        got[w] = 0;
        /* .out lines may carry a trailing space; compare token by token */
        char want[65536];
        size_t k = 0;
        for (char *p = strtok(line, " "); p && k + 16 < sizeof want; p = strtok(NULL, " "))
            k += (size_t)snprintf(want + k, sizeof want - k, k ? " %s" : "%s", p);
        want[k] = 0;
        if (strcmp(got, want)) {
            if (fails < 3)
                print_message("  %s case %zu '%.40s': got [%.120s] want [%.120s]\n", name, cases, text, got,
                              want);
            fails++;
        }
        free(ids);
        cases++;
        text = end + sizeof sep - 1;
        line = nl + 1;
    }
    apr_tok_free(t);
    apr_model_free(m);
    free(in);
    free(out);
    *n_cases = cases;
    assert_true(cases > 0);
    return fails;
}

static void test_llama_cpp_vocab_vectors(void **state)
{
    (void)state;
    const char *src = tu_require_llama_cpp_src();
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models", src);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    size_t nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) || l < 11 + 9 || strcmp(e->d_name + l - 9, ".gguf.inp"))
            continue;
        names[nn++] = strndup(e->d_name + 11, l - 11 - 9);
    }
    closedir(d);
    assert_true(nn > 0);
    qsort(names, nn, sizeof *names, cmp_str);
    size_t total = 0, passed = 0, failing_vocabs = 0;
    for (size_t i = 0; i < nn; i++) {
        size_t cases = 0, fails = run_vocab(dir, names[i], &cases);
        if (cases)
            print_message("%-20s %zu/%zu\n", names[i], cases - fails, cases);
        total += cases;
        passed += cases - fails;
        failing_vocabs += fails != 0;
        free(names[i]);
    }
    print_message("llama.cpp vocab vectors: %zu/%zu inputs\n", passed, total);
    assert_int_equal(failing_vocabs, 0);
}

/* --special (parse_special) per family against llama-cpp-python: ChatML
 * <|im_start|> (qwen2, qwen35), Llama 3 <|begin_of_text|>, Phi-3 <|user|>,
 * LLaMA 2 <s>, Command-R (tests/peer/special_peer.py). */
static void test_special_tokens_against_llama_cpp(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *src = tu_require_llama_cpp_src();
    tu_require_python("llama_cpp", "llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s'", bin, src);
    int rc = tu_run_peer("special-peer", "special_peer.py", args);
    if (rc != 0)
        fail_msg("special_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_cpp_vocab_vectors),
        cmocka_unit_test(test_special_tokens_against_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
