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
/* Call at the top of a test that needs ../shared: skips it with a visible
 * message when the file is missing. */
#define TU_REQUIRE_SHARED(var, rel)                                                     \
    const char *var = tu_shared(rel);                                                    \
    do {                                                                                 \
        if (!var) {                                                                      \
            print_message("SKIP: ../shared/%s is absent (set APR_SHARED_DIR)\n", rel);   \
            skip();                                                                      \
        }                                                                                \
    } while (0)

/* A fresh empty directory for this test's outputs (under APR_TMPDIR or /tmp). */
const char *tu_tmpdir(const char *tag);
/* Join dir and name into a static rotating buffer. */
const char *tu_path(const char *dir, const char *name);
/* Path of the apr binary (APR_BIN), NULL if unknown. */
const char *tu_apr_bin(void);
/* Run a shell command; returns its exit status (or -1). Output goes to
 * the given file when out_path != NULL. */
int tu_system(const char *out_path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Skips the running test, visibly, unless `python3 -c 'import MODULES'`
 * works (modules comma-separated); pip names the packages to install. */
void tu_require_python(const char *modules, const char *pip);
/* llama.cpp's source tree (convert_hf_to_gguf.py, gguf-py, models/ggml-vocab-*,
 * models/templates/) from llama-cpp-python's sdist of the installed version, as
 * `scripts/deps.sh --python` unpacks it: $APR_LLAMA_CPP_SRC, else
 * $HOME/.cache/apr-peer/llama.cpp. NULL when it is not there. */
const char *tu_llama_cpp_src(void);
/* The same, skipping the running test visibly when it is absent. */
const char *tu_require_llama_cpp_src(void);
/* Runs python3 tests/peer/SCRIPT (from $APR_SOURCE_DIR) with the arguments
 * `ARGS` (already quoted), prints its output, returns its exit status. */
int tu_run_peer(const char *tag, const char *script, const char *args);
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
