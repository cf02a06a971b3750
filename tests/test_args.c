/* test_args.c - the CLI's argument parser (tools/args.c, linked through the
 * internal target aprcli_args): every value kind, every error path (the exit
 * status and a message naming the command and the option), --help generated
 * from the table, and the command line recorded in the provenance. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_sample.h"
#include "test_util.h"

/* One parse of the sample table (args_sample.h), a row of every kind. */
typedef args_sample_vals vals;

typedef struct result {
    int rc;
    vals v;
    cli_args a;
    char *out, *err; /* what --help and the messages printed */
} result;

static result parse_v(int argc, char **argv)
{
    result r = {0};
    r.v.tied = -1;
    vals *v = &r.v;
    const cli_opt opts[] = ARGS_SAMPLE_OPTS(v);
    char *out = NULL, *err = NULL;
    size_t no = 0, ne = 0;
    FILE *fo = open_memstream(&out, &no), *fe = open_memstream(&err, &ne);
    assert_non_null(fo);
    assert_non_null(fe);
    const cli_cmd c = {.name = "t", .usage = "usage: apr t A [B]\n", .opts = opts, .n_opts = CLI_N(opts),
                       .min_pos = 1, .max_pos = 2, .out = fo, .err = fe};
    r.rc = cli_parse(&c, argc, argv, &r.a);
    fclose(fo);
    fclose(fe);
    r.out = out;
    r.err = err;
    return r;
}

/* argv from a NULL-terminated list after the command's name. */
#define PARSE(...)                                                          \
    ({                                                                      \
        char *argv_[] = {"t", __VA_ARGS__, NULL};                           \
        parse_v((int)(sizeof argv_ / sizeof *argv_) - 1, argv_);            \
    })

static void result_free(result *r)
{
    free(r->v.items.v);
    free(r->out);
    free(r->err);
}

/* A refusal: status 2, the message names the command, contains want, and
 * no list is left allocated. */
static void expect_fail(result r, const char *want)
{
    if (r.rc != CLI_FAIL || !strstr(r.err, want) || strncmp(r.err, "apr t: ", 7))
        print_message("rc %d, stderr '%s', wanted '%s'\n", r.rc, r.err, want);
    assert_int_equal(r.rc, CLI_FAIL);
    assert_int_equal(cli_exit_status(r.rc), 2);
    assert_int_equal(strncmp(r.err, "apr t: ", 7), 0);
    assert_non_null(strstr(r.err, want));
    assert_null(r.v.items.v);
    result_free(&r);
}

static void test_values(void **state)
{
    (void)state;
    result r = PARSE("a", "-q", "--count", "-5", "--ctx=0x10", "--seed", "18446744073709551615", "--split-max-size",
                     "2G", "--temp", "0", "--eps", "1e-5", "--to", "SafeTensors", "--name", "-x", "-i", "one",
                     "--item=two=2", "--untied", "--", "-b");
    assert_int_equal(r.rc, CLI_OK);
    assert_true(r.v.quiet);
    assert_int_equal(r.v.count, -5);
    assert_int_equal(r.v.ctx, 16);
    assert_true(r.v.seed == UINT64_MAX);
    assert_true(r.v.bytes == 2000000000ull);
    assert_true(r.v.temp == 0.0);
    assert_true(r.v.eps == strtof("1e-5", NULL));
    assert_int_equal(r.v.fmt, 3);
    assert_string_equal(r.v.name, "-x"); /* a value may start with '-' */
    assert_int_equal(r.v.items.n, 2);
    assert_string_equal(r.v.items.v[0], "one");
    assert_string_equal(r.v.items.v[1], "two=2");
    assert_int_equal(r.v.tied, 0);
    assert_int_equal(r.a.n_pos, 2);
    assert_string_equal(r.a.pos[0], "a");
    assert_string_equal(r.a.pos[1], "-b"); /* after -- */
    assert_string_equal(r.err, "");
    result_free(&r);

    r = PARSE("-", "-c", "10", "--tied", "--split-max-size", "500M");
    assert_int_equal(r.rc, CLI_OK);
    assert_string_equal(r.a.pos[0], "-");
    assert_int_equal(r.v.count, 10);
    assert_int_equal(r.v.tied, 1);
    assert_true(r.v.bytes == 500000000ull);
    assert_null(r.v.items.v); /* no list: nothing allocated */
    result_free(&r);
}

static void test_unknown_and_missing(void **state)
{
    (void)state;
    expect_fail(PARSE("a", "--bogus"), "unknown option '--bogus' (see apr t --help)");
    expect_fail(PARSE("a", "--cont", "3"), "unknown option '--cont' (did you mean --count?)");
    expect_fail(PARSE("a", "--bogus=3"), "unknown option '--bogus'");
    expect_fail(PARSE("a", "-x"), "unknown option '-x'");
    expect_fail(PARSE("a", "-i", "x", "--count"), "--count needs a value (N)");
    expect_fail(PARSE("a", "--quiet=yes"), "--quiet takes no value");
    expect_fail(PARSE("a", "b", "c"), "unexpected argument 'c'");
    expect_fail(PARSE("-q"), "missing arguments");
}

static void test_malformed_numbers(void **state)
{
    (void)state;
    static const char *const bad_int[] = {"abc", "", "1x", "+1", " 1", "0x", "1.5", "--1", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_int / sizeof *bad_int; i++) {
        char want[96];
        snprintf(want, sizeof want, "--count wants an integer in -5..10, got '%s'", bad_int[i]);
        expect_fail(PARSE("a", "--count", (char *)bad_int[i]), want);
        expect_fail(PARSE("a", "--ctx", (char *)bad_int[i]), "--ctx wants an integer in 1..1048576");
        expect_fail(PARSE("a", "--seed", (char *)bad_int[i]), "--seed wants a non-negative integer");
    }
    expect_fail(PARSE("a", "--seed", "-1"), "--seed wants a non-negative integer, got '-1'");
    static const char *const bad_num[] = {"x", "", "nan", "inf", "-inf", "1e999", "1,5", "0x"};
    for (size_t i = 0; i < sizeof bad_num / sizeof *bad_num; i++) {
        expect_fail(PARSE("a", "--temp", (char *)bad_num[i]), "--temp wants a number >= 0 and <= 100");
        expect_fail(PARSE("a", "--eps", (char *)bad_num[i]), "--eps wants a number > 0, got");
    }
    expect_fail(PARSE("a", "--eps", "1e39"), "--eps wants a number > 0"); /* beyond a float */
    static const char *const bad_size[] = {"5", "5K", "M", "5MB", "5m", "-5M", "18446744073710M"};
    for (size_t i = 0; i < sizeof bad_size / sizeof *bad_size; i++)
        expect_fail(PARSE("a", "--split-max-size", (char *)bad_size[i]),
                    "--split-max-size wants a positive size with M or G (e.g. 500M, 2G)");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_fail(PARSE("a", "--count", "11"), "--count wants an integer in -5..10, got '11'");
    expect_fail(PARSE("a", "-n", "-6"), "--count wants an integer in -5..10, got '-6'");
    expect_fail(PARSE("a", "--ctx", "0"), "--ctx wants an integer in 1..1048576, got '0'");
    expect_fail(PARSE("a", "--ctx", "1048577"), "--ctx wants an integer in 1..1048576");
    expect_fail(PARSE("a", "--seed", "18446744073709551616"), "--seed wants a non-negative integer");
    expect_fail(PARSE("a", "--split-max-size", "0M"), "--split-max-size wants a positive size");
    expect_fail(PARSE("a", "--temp", "100.5"), "--temp wants a number >= 0 and <= 100, got '100.5'");
    expect_fail(PARSE("a", "--temp", "-0.1"), "--temp wants a number >= 0");
    expect_fail(PARSE("a", "--eps", "0"), "--eps wants a number > 0, got '0'");
    expect_fail(PARSE("a", "--eps", "-1"), "--eps wants a number > 0");
}

static void test_enum_and_repeats(void **state)
{
    (void)state;
    expect_fail(PARSE("a", "--to", "zip"),
                "--to must be gguf, apr or safetensors, got 'zip' (quantizing is elsewhere)");
    expect_fail(PARSE("a", "--to", "gguf", "--to", "apr"), "--to given twice (it is not repeatable)");
    expect_fail(PARSE("a", "-q", "--quiet"), "--quiet given twice");
    expect_fail(PARSE("a", "-n", "1", "-c", "2"), "--count given twice");
    expect_fail(PARSE("a", "--tied", "--tied"), "--tied given twice");
    /* a failure after a list value frees the list */
    expect_fail(PARSE("a", "-i", "x", "-i", "y", "--ctx", "0"), "--ctx wants");
    result r = PARSE("a", "-i", "x", "-i", "x", "--item", "x");
    assert_int_equal(r.rc, CLI_OK);
    assert_int_equal(r.v.items.n, 3);
    result_free(&r);
}

static void test_help(void **state)
{
    (void)state;
    result r = PARSE("-q", "--help", "--bogus"); /* help stops the parse */
    assert_int_equal(r.rc, CLI_HELP);
    assert_int_equal(cli_exit_status(r.rc), 0);
    assert_null(r.v.items.v);
    const char *h = r.out;
    assert_int_equal(strncmp(h, "usage: apr t A [B]\n\n", 20), 0);
    assert_non_null(strstr(h, "\n  -q, --quiet             no summary\n"));
    assert_non_null(strstr(h, "\n  -n, -c, --count N       how many\n                          second line\n"));
    assert_non_null(strstr(h, "\n  --to gguf|apr|safetensors\n                          format\n"));
    assert_non_null(strstr(h, "\n  -i, --item X            repeatable\n"));
    assert_null(strstr(h, "--secret")); /* hidden */
    assert_string_equal(r.err, "");
    result_free(&r);
    r = PARSE("-h");
    assert_int_equal(r.rc, CLI_HELP);
    result_free(&r);
    /* a missing positional prints the help on the error stream */
    r = PARSE("--tied");
    assert_int_equal(r.rc, CLI_FAIL);
    assert_non_null(strstr(r.err, "apr t: missing arguments\nusage: apr t A [B]\n"));
    assert_string_equal(r.out, "");
    result_free(&r);
}

/* The recorded command line: unchanged words where a shell reads them as
 * they are, '...' otherwise, and read back by sh as the same argv. */
static void test_join(void **state)
{
    (void)state;
    char *argv[] = {"convert", "/m/model.safetensors", "out dir/x.gguf", "--tensor-type", "attn_.*=q8_0",
                    "it's", "", "caf\xc3\xa9", "a=b,c:d@e%f+g"};
    char *s = cli_join_argv((int)(sizeof argv / sizeof *argv), argv);
    assert_non_null(s);
    assert_string_equal(s, "apr convert /m/model.safetensors 'out dir/x.gguf' --tensor-type 'attn_.*=q8_0' "
                           "'it'\\''s' '' caf\xc3\xa9 a=b,c:d@e%f+g");
    /* sh splits it back into the same words */
    const char *dir = tu_tmpdir("args-join");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "set -- %s; shift; for a; do printf '%%s\\n' \"$a\"; done > '%s/words'", s, dir);
    assert_int_equal(system(cmd), 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/words", dir);
    char *words = tu_read_file(path, NULL);
    assert_non_null(words);
    assert_string_equal(words, "convert\n/m/model.safetensors\nout dir/x.gguf\n--tensor-type\nattn_.*=q8_0\nit's\n\n"
                               "caf\xc3\xa9\na=b,c:d@e%f+g\n");
    free(words);
    free(s);
    s = cli_join_argv(0, NULL);
    assert_string_equal(s, "apr");
    free(s);
}

/* The helpers behind compound values (verify's --band LO,HI). */
static void test_number_helpers(void **state)
{
    (void)state;
    double d = -1;
    assert_int_equal(cli_parse_double("0.5", 0, INFINITY, true, &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(cli_parse_double("0", 0, INFINITY, true, &d), -1);
    assert_int_equal(cli_parse_double(NULL, 0, INFINITY, true, &d), -1);
    assert_true(d == 0.5); /* untouched on failure */
    uint64_t u = 7;
    assert_int_equal(cli_parse_u64("0x1F", 0, 100, &u), 0);
    assert_true(u == 31);
    assert_int_equal(cli_parse_u64("101", 0, 100, &u), -1);
    assert_true(u == 31);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_malformed_numbers),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_enum_and_repeats),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_number_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
