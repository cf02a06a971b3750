/* test_contracts.c - the contracts checker (contracts/check_contracts.c, built
 * as apr-check-contracts beside the apr binary): the real contracts pass, and
 * each kind of broken contract or missing test makes it fail with a message
 * that points at the problem.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static char checker[4096];

static const char *checker_bin(void)
{
    const char *apr = tu_apr_bin();
    if (!apr)
        return NULL;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", apr);
    snprintf(checker, sizeof checker, "%s/apr-check-contracts", dirname(tmp));
    return checker;
}

#define REQUIRE_CHECKER(var)                                                         \
    const char *var = checker_bin();                                                 \
    do {                                                                             \
        if (!var) {                                                                  \
            tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set (run through ctest)"); \
        }                                                                            \
    } while (0)

static const char *src_dir(void)
{
    const char *s = getenv("APR_SOURCE_DIR");
    return s && *s ? s : "..";
}

/* Run the checker; returns its exit status and leaves its output in *out. */
static int run_checker(const char *bin, const char *cdir, const char *tdir, const char *work,
                       char **out)
{
    const char *log = tu_path(work, "checker.log");
    int rc = tu_system(log, "'%s' '%s' '%s'", bin, cdir, tdir);
    *out = tu_read_file(log, NULL);
    if (!*out)
        *out = strdup("");
    return rc;
}

static const char *schema_text(void)
{
    static char *s;
    if (!s)
        s = tu_read_file(tu_path(src_dir(), "contracts/schema.yaml"), NULL);
    assert_non_null(s);
    return s;
}

/* A scratch contracts folder (schema + given files) and tests folder. */
static const char *scratch(const char *tag, const char *const *names, const char *const *texts,
                           size_t n, const char **tests_dir)
{
    const char *dir = tu_tmpdir(tag);
    assert_non_null(dir);
    static char cdir[4096], tdir[4096];
    snprintf(cdir, sizeof cdir, "%s/contracts", dir);
    snprintf(tdir, sizeof tdir, "%s/tests", dir);
    assert_int_equal(tu_system(NULL, "mkdir -p '%s' '%s'", cdir, tdir), 0);
    assert_int_equal(tu_write_file(tu_path(cdir, "schema.yaml"), schema_text(), strlen(schema_text())), 0);
    const char *fake =
        "/* a fake test file */\n"
        "static void test_alpha(void **s) { (void)s; }\n"
        "// cmocka_unit_test(test_commented),\n"
        "const char *x = \"cmocka_unit_test(test_in_string)\";\n"
        "int main(void) {\n"
        "  const struct CMUnitTest t[] = {\n"
        "    cmocka_unit_test(test_alpha),\n"
        "    cmocka_unit_test_setup_teardown( test_beta , setup, teardown),\n"
        "  };\n"
        "}\n";
    assert_int_equal(tu_write_file(tu_path(tdir, "test_fake.c"), fake, strlen(fake)), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tu_write_file(tu_path(cdir, names[i]), texts[i], strlen(texts[i])), 0);
    *tests_dir = tdir;
    return cdir;
}

#define GOOD_HEAD                                                                        \
    "id: C-ONE\ntitle: one\ndescription: a contract\nfalsifiers:\n"
#define FALS(id, test)                                                                   \
    "  - id: " id "\n    rule: r\n    prediction: p\n    test: " test "\n"

static void test_real_contracts_pass(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    const char *work = tu_tmpdir("contracts-real");
    char *out = NULL;
    int rc = run_checker(bin, tu_path(src_dir(), "contracts"), tu_path(src_dir(), "tests"), work, &out);
    if (rc != 0)
        print_message("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "every named test exists"));
    free(out);
}

static void test_scratch_valid_passes(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    const char *names[] = {"one.yaml"};
    const char *texts[] = {GOOD_HEAD FALS("F-1", "test_fake:test_alpha") FALS("F-2", "test_fake:test_beta")};
    const char *tdir;
    const char *cdir = scratch("contracts-ok", names, texts, 1, &tdir);
    char *out;
    assert_int_equal(run_checker(bin, cdir, tdir, cdir, &out), 0);
    assert_non_null(strstr(out, "1 contracts, 2 falsifiers"));
    free(out);
}

static void test_missing_test_fails(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    struct {
        const char *test, *expect;
    } cases[] = {
        {"test_fake:test_gamma", "registers no cmocka test named test_gamma"},
        {"test_fake:test_commented", "test_commented"},   /* only inside a comment */
        {"test_fake:test_in_string", "test_in_string"},   /* only inside a string */
        {"test_nothere:test_alpha", "does not exist"},
        {"test_fake", "EXECUTABLE:FUNCTION"},
        {"test_fake:test_alpha:x", "EXECUTABLE:FUNCTION"},
        {"../test_fake:test_alpha", "not a plain name"},
        {"fake:test_alpha", "tests/test_*.c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, GOOD_HEAD FALS("F-1", "test_fake:test_alpha") "  - id: F-2\n"
                 "    rule: r\n    prediction: p\n    test: \"%s\"\n", cases[i].test);
        const char *names[] = {"one.yaml"};
        const char *texts[] = {text};
        const char *tdir;
        const char *cdir = scratch("contracts-missing", names, texts, 1, &tdir);
        char *out;
        const int rc = run_checker(bin, cdir, tdir, cdir, &out);
        if (rc != 1 || !strstr(out, cases[i].expect))
            print_message("case %s: rc %d, output:\n%s", cases[i].test, rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, cases[i].expect));
        assert_non_null(strstr(out, "one.yaml:"));
        free(out);
    }
}

static void test_malformed_fails(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    struct {
        const char *text, *expect;
    } cases[] = {
        /* not YAML at all */
        {"id: [unclosed\n", "YAML error"},
        /* a required key missing */
        {"id: C-ONE\ntitle: one\nfalsifiers:\n" FALS("F-1", "test_fake:test_alpha"),
         "required key 'description'"},
        {GOOD_HEAD "  - id: F-1\n    rule: r\n    test: test_fake:test_alpha\n",
         "required key 'prediction'"},
        /* wrong types */
        {"id: C-ONE\ntitle: one\ndescription: d\nfalsifiers: none\n", "'falsifiers' must be a list"},
        {"id: [a, b]\ntitle: one\ndescription: d\nfalsifiers:\n" FALS("F-1", "test_fake:test_alpha"),
         "'id' must be a string"},
        {"id: C-ONE\ntitle: \"\"\ndescription: d\nfalsifiers:\n" FALS("F-1", "test_fake:test_alpha"),
         "'title' must be a string"},
        {GOOD_HEAD "  - just a string\n", "falsifier must be a mapping"},
        {"- a\n- b\n", "contract must be a mapping"},
        /* unknown and repeated keys, empty list, bad and duplicate ids */
        {GOOD_HEAD FALS("F-1", "test_fake:test_alpha") "    owner: me\n", "unknown key 'owner'"},
        {"id: C-ONE\nid: C-TWO\ntitle: t\ndescription: d\nfalsifiers:\n" FALS("F-1", "test_fake:test_alpha"),
         "given twice"},
        {"id: C-ONE\ntitle: t\ndescription: d\nfalsifiers: []\n", "'falsifiers' is empty"},
        {"id: C ONE\ntitle: t\ndescription: d\nfalsifiers:\n" FALS("F-1", "test_fake:test_alpha"),
         "must match"},
        {GOOD_HEAD FALS("F-1", "test_fake:test_alpha") FALS("F-1", "test_fake:test_beta"),
         "duplicate id 'F-1'"},
        {GOOD_HEAD FALS("C-ONE", "test_fake:test_alpha"), "duplicate id 'C-ONE'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[] = {"bad.yaml"};
        const char *texts[] = {cases[i].text};
        const char *tdir;
        const char *cdir = scratch("contracts-bad", names, texts, 1, &tdir);
        char *out;
        const int rc = run_checker(bin, cdir, tdir, cdir, &out);
        if (rc != 1 || !strstr(out, cases[i].expect))
            print_message("case %zu: rc %d, output:\n%s", i, rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, cases[i].expect));
        free(out);
    }
}

static void test_ids_unique_across_files(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    const char *names[] = {"a.yaml", "b.yaml"};
    const char *texts[] = {
        GOOD_HEAD FALS("F-1", "test_fake:test_alpha"),
        "id: C-TWO\ntitle: two\ndescription: d\nfalsifiers:\n" FALS("F-1", "test_fake:test_beta")};
    const char *tdir;
    const char *cdir = scratch("contracts-dup", names, texts, 2, &tdir);
    char *out;
    assert_int_equal(run_checker(bin, cdir, tdir, cdir, &out), 1);
    assert_non_null(strstr(out, "b.yaml:"));
    assert_non_null(strstr(out, "duplicate id 'F-1'"));
    free(out);
}

static void test_schema_required(void **state)
{
    (void)state;
    REQUIRE_CHECKER(bin);
    const char *names[] = {"one.yaml"};
    const char *texts[] = {GOOD_HEAD FALS("F-1", "test_fake:test_alpha")};
    const char *tdir;
    const char *cdir = scratch("contracts-schema", names, texts, 1, &tdir);
    char *out;
    /* a schema without the falsifier kind, then no schema at all */
    const char *half = "contract:\n  required:\n    id: string\n";
    assert_int_equal(tu_write_file(tu_path(cdir, "schema.yaml"), half, strlen(half)), 0);
    assert_int_equal(run_checker(bin, cdir, tdir, cdir, &out), 1);
    assert_non_null(strstr(out, "'falsifier'"));
    free(out);
    const char *badtype = "contract:\n  required:\n    id: number\nfalsifier:\n  required:\n    id: string\n";
    assert_int_equal(tu_write_file(tu_path(cdir, "schema.yaml"), badtype, strlen(badtype)), 0);
    assert_int_equal(run_checker(bin, cdir, tdir, cdir, &out), 1);
    assert_non_null(strstr(out, "string, list or mapping"));
    free(out);
    assert_int_equal(tu_system(NULL, "rm -f '%s'", tu_path(cdir, "schema.yaml")), 0);
    assert_int_equal(run_checker(bin, cdir, tdir, cdir, &out), 1);
    assert_non_null(strstr(out, "schema.yaml"));
    free(out);
    /* no arguments: usage error */
    assert_int_equal(tu_system(tu_path(cdir, "usage.log"), "'%s'", bin), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_contracts_pass),
        cmocka_unit_test(test_scratch_valid_passes),
        cmocka_unit_test(test_missing_test_fails),
        cmocka_unit_test(test_malformed_fails),
        cmocka_unit_test(test_ids_unique_across_files),
        cmocka_unit_test(test_schema_required),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
