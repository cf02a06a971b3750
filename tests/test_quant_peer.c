/* test_quant_peer.c - runs tests/peer/llama_quantize_peer.py: `apr quantize`
 * against llama.cpp's quantizer (llama-cpp-python), tensor for tensor.
 * Skips visibly when python3 with gguf/numpy or llama_cpp is missing. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_llama_quantize_peer(void **state)
{
    (void)state;
    const char *src = getenv("APR_SOURCE_DIR");
    const char *bin = tu_apr_bin();
    if (!src || !bin)
        tu_skip_or_fail(TU_NEED_HARNESS, "APR_SOURCE_DIR / APR_BIN not set (run through ctest)");
    tu_require_python("gguf, numpy", "gguf numpy");
    tu_require_python("llama_cpp", "llama-cpp-python");
    const char *dir = tu_tmpdir("qpeer");
    assert_non_null(dir);
    const char *log = tu_path(dir, "peer.log");
    int rc = tu_system(log, "python3 '%s/tests/peer/llama_quantize_peer.py' --apr '%s' --tmp '%s'", src, bin, dir);
    char *out = tu_read_file(log, NULL);
    /* llama.cpp logs every tensor; show only our verdict lines */
    if (out) {
        for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"))
            if (!strncmp(l, "OK", 2) || !strncmp(l, "FAIL", 4) || !strncmp(l, "PASS", 4) ||
                !strncmp(l, "SKIP", 4) || !strncmp(l, "     ", 5) || !strncmp(l, "llama-cpp", 9))
                print_message("%s\n", l);
        free(out);
    }
    if (rc == 77)
        tu_skip_or_fail(TU_NEED_PEER, "llama_quantize_peer.py: a peer package is missing (its SKIP line is above)");
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_quantize_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
