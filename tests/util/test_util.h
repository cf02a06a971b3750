/* test_util.h - helpers shared by the cmocka tests. */
#ifndef APR_TEST_UTIL_H
#define APR_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "formats.h"

/* Path of a file in ../shared (fixtures/, golden/, docs/), or NULL when the
 * shared folder is absent. */
const char *tu_shared(const char *rel);
/* Why a test cannot run. Under APR_TEST_STRICT=1 (set by .ci/run) every reason
 * CI is supposed to satisfy fails the test instead of skipping it; only a
 * missing GPU (or a build without the CUDA backend) stays a skip there. */
typedef enum {
    TU_NEED_SHARED,  /* a file in ../shared (fixtures/, golden/, docs/) */
    TU_NEED_PEER,    /* a Python peer package or library scripts/deps.sh --python installs */
    TU_NEED_LLAMA_SRC, /* llama.cpp's source tree (APR_LLAMA_CPP_SRC, deps.sh --python) */
    TU_NEED_HARNESS, /* what ctest passes every test (APR_BIN, APR_SOURCE_DIR) */
    TU_NEED_GPU,     /* a CUDA device or the CUDA backend: a skip even when strict */
} tu_need;

/* True when APR_TEST_STRICT is set to something other than "" or "0". */
int tu_strict(void);
/* The one way a test skips: prints "SKIP: <reason>" and skips the running test
 * (the executable then exits 77, which ctest reports as skipped, never as a
 * pass), or, in strict mode for anything but TU_NEED_GPU, fails it with the
 * reason. Does not return. */
void tu_skip_or_fail(tu_need why, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* For a check that is one part of a longer test: returns when the part can run;
 * otherwise prints "SKIP (part): <reason>", counts it as a skip (so the
 * executable still exits 77) and returns 0 for the caller to leave the part
 * out, or fails the test in strict mode. */
int tu_part_or_fail(int available, tu_need why, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Path of a file in ../shared when present; else the part is left out
 * through tu_part_or_fail and NULL comes back. */
const char *tu_shared_part(const char *rel);

/* Call at the top of a test that needs ../shared: skips it with a visible
 * message when the file is missing (fails it under APR_TEST_STRICT=1). */
#define TU_REQUIRE_SHARED(var, rel)                                                     \
    const char *var = tu_shared(rel);                                                    \
    do {                                                                                 \
        if (!var)                                                                        \
            tu_skip_or_fail(TU_NEED_SHARED, "../shared/%s is absent (set APR_SHARED_DIR)", rel); \
    } while (0)

/* A test executable's exit status: cmocka's count of failures, or 77 (ctest's
 * SKIP_RETURN_CODE) when none failed but some test or part was skipped. */
int tu_exit_status(int failures);
/* cmocka's test and skip filters from TU_TEST_FILTER / TU_SKIP_FILTER (glob
 * patterns on test names): tests/CMakeLists.txt runs the "peer" cases of a
 * mixed executable as a ctest entry of their own. Returns 0. */
int tu_apply_filters(void);
#undef cmocka_run_group_tests
#define cmocka_run_group_tests(group_tests, group_setup, group_teardown)                            \
    (tu_apply_filters(),                                                                              \
     tu_exit_status(_cmocka_run_group_tests(#group_tests, group_tests,                                \
                                            sizeof(group_tests) / sizeof((group_tests)[0]), group_setup, \
                                            group_teardown)))

/* A fresh empty directory for this test's outputs (under APR_TMPDIR or /tmp),
 * removed with its contents when the process exits unless APR_KEEP_TMP=1. */
const char *tu_tmpdir(const char *tag);
/* Join dir and name into a static rotating buffer. */
const char *tu_path(const char *dir, const char *name);
/* Path of the apr binary (APR_BIN), NULL if unknown. */
const char *tu_apr_bin(void);
/* The group setup of a test that drives the apr binary: a fresh directory
 * for its outputs (tu_tmpdir(tag)) copied into dir. 1 when APR_BIN is unset
 * (nothing to set up: each test then skips through TU_NEED_BIN), -1 when no
 * directory could be made, 0 otherwise. */
int tu_bin_dir(char *dir, size_t n, const char *tag);
/* At the top of such a test: skips it when APR_BIN is unset (fails it under
 * APR_TEST_STRICT=1; ctest always sets it). */
#define TU_NEED_BIN()                                                                    \
    do {                                                                                 \
        if (!tu_apr_bin())                                                               \
            tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN not set (run through ctest)");    \
    } while (0)
/* Run a shell command; returns its exit status (or -1). Output goes to
 * the given file when out_path != NULL. */
int tu_system(const char *out_path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Skips the running test, visibly, unless `python3 -c 'import MODULES'`
 * works (modules comma-separated); pip names the packages to install. Fails
 * it instead under APR_TEST_STRICT=1. */
void tu_require_python(const char *modules, const char *pip);
/* llama.cpp's source tree (convert_hf_to_gguf.py, gguf-py, models/ggml-vocab-*,
 * models/templates/) from llama-cpp-python's sdist of the installed version, as
 * `scripts/deps.sh --python` unpacks it: $APR_LLAMA_CPP_SRC, else
 * $HOME/.cache/apr-peer/llama.cpp. NULL when it is not there. */
const char *tu_llama_cpp_src(void);
/* The same, skipping the running test visibly when it is absent (failing it
 * under APR_TEST_STRICT=1). */
const char *tu_require_llama_cpp_src(void);
/* Runs python3 tests/peer/SCRIPT (from $APR_SOURCE_DIR) with the arguments
 * `ARGS` (already quoted), prints its output, returns its exit status. Exit 77
 * (the script's "a peer package is missing") skips the test, or fails it
 * under APR_TEST_STRICT=1. */
int tu_run_peer(const char *tag, const char *script, const char *args);
/* The whole test of a peer script whose arguments are `APR_BIN LLAMA_CPP_SRC
 * TINYCODER_DIR WORKDIR` (WORKDIR under a fresh tu_tmpdir(tag)): skips it
 * visibly (fails it under APR_TEST_STRICT=1) when ../shared, llama.cpp's
 * source or the python modules (comma-separated; pip names the packages) are
 * absent, fails it when the script does. */
void tu_tinycoder_peer(const char *tag, const char *script, const char *modules, const char *pip);
/* Read a whole file (malloc'd, NUL-terminated); NULL on failure. */
char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);

/* The golden-vector input generator (splitmix64, see ../shared/golden/README.md). */
void tu_golden_input(uint64_t seed, uint64_t rows, uint64_t cols, float *x);
void tu_golden_imatrix(uint64_t seed, uint64_t cols, float *w);

/* Assert two KVs / two models are equal: keys, types, values bit-exact, tensor
 * names, dtypes, dims, ROWCAT parts and payload bytes, in the same order. */
void tu_assert_kv_equal(const apr_kv *a, const apr_kv *b);
void tu_assert_models_equal(const apr_model *a, const apr_model *b);
/* The fixture README's known greedy continuation of "Once upon a time" (the
 * quoted text after "continues"), line breaks folded into spaces; malloc'd.
 * NULL when ../shared is absent. */
char *tu_fixture_greedy_text(void);

#endif
