/* test_forward_cli.c - `apr run` end to end: the README's greedy text from
 * the fixture in every format we can write (GGUF as shipped; APR and
 * safetensors converted with `apr convert` when that command works), error
 * exits, and the llama.cpp peer check (tests/peer/llama_logits_peer.py; skipped
 * visibly when the llama_cpp Python binding cannot be imported). */
#include "test_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "fixtures/stories260K-f32.gguf"


#define REQUIRE_BIN(var)                                             \
    const char *var = tu_apr_bin();                                  \
    do {                                                             \
        if (!var) {                                                  \
            tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set");   \
        }                                                            \
    } while (0)

/* `apr run MODEL` greedy: stdout must start with the README's text. */
static void expect_greedy(const char *bin, const char *model, const char *dir, int threads, const char *extra)
{
    char *want = tu_fixture_greedy_text();
    assert_non_null(want);
    const char *out = tu_path(dir, "run.out");
    /* stdout only: the trace and messages go to stderr */
    int rc = tu_system(out, "{ '%s' run '%s' --prompt 'Once upon a time' -n 40 --threads %d --device cpu %s 2>'%s'; }",
                       bin, model, threads, extra ? extra : "", tu_path(dir, "run.err"));
    char *got = tu_read_file(out, NULL);
    assert_non_null(got);
    if (rc != 0 || strncmp(got, want, strlen(want)))
        fail_msg("apr run %s (rc %d):\n got: '%s'\nwant: '%s'", model, rc, got, want);
    free(got);
    free(want);
}

static void test_run_gguf(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(model, FIXTURE);
    REQUIRE_BIN(bin);
    const char *dir = tu_tmpdir("run-gguf");
    expect_greedy(bin, model, dir, 2, NULL);
    expect_greedy(bin, model, dir, 1, "--trace"); /* one value per option: a second --threads is refused */
}

/* A prompt longer than one prefill batch (64 tokens) is evaluated batch by
 * batch (with a progress line on a terminal); the continuation must be the
 * one the whole prompt in one batch gives (--trace evaluates it at once). */
static void test_run_long_prompt_batched(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(model, FIXTURE);
    REQUIRE_BIN(bin);
    const char *dir = tu_tmpdir("run-long");
    const char *p = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
                    "with her friends. One day, she saw a big red ball under a tree. She ran to the ball and "
                    "picked it up. Then her mom called her home for lunch, and Lily said goodbye to her friends "
                    "and walked home with the ball in her hands. After lunch she went";
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/batched.out", dir);
    snprintf(b, sizeof b, "%s/whole.out", dir);
    assert_int_equal(tu_system(a, "{ '%s' run '%s' --prompt '%s' -n 16 --no-echo 2>/dev/null; }", bin, model, p), 0);
    assert_int_equal(tu_system(b, "{ '%s' run '%s' --prompt '%s' -n 16 --no-echo --trace 2>/dev/null; }", bin, model,
                               p),
                     0);
    char *x = tu_read_file(a, NULL), *y = tu_read_file(b, NULL);
    assert_non_null(x);
    assert_non_null(y);
    print_message("batched prefill continues: %s\n", x);
    assert_true(strlen(x) > 10);
    assert_string_equal(x, y);
    free(x);
    free(y);
}

/* Convert the fixture with `apr convert`, then run the converted file. */
static void run_converted(const char *ext)
{
    TU_REQUIRE_SHARED(model, FIXTURE);
    REQUIRE_BIN(bin);
    const char *dir = tu_tmpdir("run-conv");
    char conv[4096];
    snprintf(conv, sizeof conv, "%s/stories.%s", dir, ext);
    int rc = tu_system(tu_path(dir, "convert.out"), "'%s' convert '%s' '%s'", bin, model, conv);
    if (rc != 0) {
        char *log = tu_read_file(tu_path(dir, "convert.out"), NULL);
        fail_msg("apr convert to %s failed (%d): %s", ext, rc, log ? log : "");
    }
    expect_greedy(bin, conv, dir, 2, NULL);
    /* lossless: logits bit-identical to the source's */
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/src.bin", dir);
    snprintf(b, sizeof b, "%s/dst.bin", dir);
    const char *prompt = "Once upon a time, there was a little girl named Lily. She loved to play";
    assert_int_equal(tu_system("/dev/null", "'%s' run '%s' --prompt '%s' -n 1 --threads 3 --dump-logits '%s'", bin,
                               model, prompt, a), 0);
    assert_int_equal(tu_system("/dev/null", "'%s' run '%s' --prompt '%s' -n 1 --threads 2 --dump-logits '%s'", bin,
                               conv, prompt, b), 0);
    size_t na, nb;
    char *la = tu_read_file(a, &na), *lb = tu_read_file(b, &nb);
    assert_non_null(la);
    assert_non_null(lb);
    assert_true(na > 0);
    assert_int_equal(na, nb);
    assert_memory_equal(la, lb, na);
    free(la);
    free(lb);
}

static void test_run_apr(void **state)
{
    (void)state;
    run_converted("apr");
}

static void test_run_safetensors(void **state)
{
    (void)state;
    run_converted("safetensors");
}

static void test_run_errors(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(model, FIXTURE);
    REQUIRE_BIN(bin);
    const char *dir = tu_tmpdir("run-err");
    const char *out = tu_path(dir, "err.out");
    assert_int_equal(tu_system(out, "'%s' run", bin), 2);
    assert_int_equal(tu_system(out, "'%s' run '%s'", bin, model), 2); /* no prompt */
    assert_int_equal(tu_system(out, "'%s' run '%s/missing.gguf' --prompt x", bin, dir), 2);
    assert_int_equal(tu_system(out, "'%s' run '%s' --prompt x --device tpu", bin, model), 2);
    assert_int_equal(tu_system(out, "'%s' run '%s' --prompt x --threads 0", bin, model), 2);
    assert_int_equal(tu_system(out, "'%s' run '%s' --prompt x --bogus", bin, model), 2);
    /* a prompt longer than the context */
    assert_int_equal(tu_system(out, "'%s' run '%s' --prompt 'a b c d e f g h' --ctx 4", bin, model), 2);
    char *log = tu_read_file(out, NULL);
    assert_non_null(strstr(log, "context"));
    free(log);
    /* a vocab-only file has no weights to run */
    const char *vocab = tu_shared_part("fixtures/ggml-vocab-llama-spm.gguf");
    if (vocab)
        assert_int_equal(tu_system(out, "'%s' run '%s' --prompt x", bin, vocab), 2);
    /* a truncated model file */
    size_t n;
    char *bytes = tu_read_file(model, &n);
    assert_non_null(bytes);
    const char *trunc = tu_path(dir, "trunc.gguf");
    assert_int_equal(tu_write_file(trunc, bytes, n / 2), 0);
    free(bytes);
    assert_int_equal(tu_system(out, "'%s' run '%s' --prompt x", bin, trunc), 2);
    /* sampling with a temperature is deterministic for a seed */
    const char *s1 = tu_path(dir, "s1.out"), *s2 = tu_path(dir, "s2.out");
    assert_int_equal(tu_system(s1, "'%s' run '%s' --prompt 'Once' -n 20 --temp 0.8 --seed 7 --no-echo", bin, model), 0);
    assert_int_equal(tu_system(s2, "'%s' run '%s' --prompt 'Once' -n 20 --temp 0.8 --seed 7 --no-echo", bin, model), 0);
    char *a = tu_read_file(s1, NULL), *b = tu_read_file(s2, NULL);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_peer_llama_cpp(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(model, FIXTURE);
    REQUIRE_BIN(bin);
    tu_require_python("llama_cpp, numpy", "llama-cpp-python numpy");
    const char *src = getenv("APR_SOURCE_DIR");
    const char *dir = tu_tmpdir("peer-llama");
    const char *out = tu_path(dir, "peer.out");
    const char *vocab = tu_shared_part("fixtures/ggml-vocab-llama-spm.gguf");
    int rc = tu_system(out, "python3 '%s/tests/peer/llama_logits_peer.py' '%s' '%s' %s%s%s --synth", src ? src : ".",
                       bin, model, vocab ? "'" : "", vocab ? vocab : "", vocab ? "'" : "");
    char *log = tu_read_file(out, NULL);
    print_message("%s", log ? log : "");
    if (rc == 77) {
        free(log);
        tu_skip_or_fail(TU_NEED_PEER, "llama_logits_peer.py: a peer package is missing (its SKIP line is above)");
    }
    if (rc != 0)
        fail_msg("llama_logits_peer.py failed (%d)", rc);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_gguf),
        cmocka_unit_test(test_run_long_prompt_batched),
        cmocka_unit_test(test_run_apr),
        cmocka_unit_test(test_run_safetensors),
        cmocka_unit_test(test_run_errors),
        cmocka_unit_test(test_peer_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
