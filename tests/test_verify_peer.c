/* test_verify_peer.c - runs tests/peer/llama_verify_peer.py: DSTs made by
 * llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python,
 * with and without an importance matrix) are reported by `apr verify` as
 * reproduced, and a copy with one altered block is not: the tensor and row
 * are named. Skips visibly (fails under APR_TEST_STRICT=1) when gguf, numpy
 * or llama_cpp are not importable. */
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

static void test_llama_quantized_dsts_reproduce(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    tu_require_python("gguf, numpy, llama_cpp", "gguf numpy llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "--apr '%s' --tmp '%s'", bin, tu_tmpdir("vpeer-work"));
    int rc = tu_run_peer("vpeer", "llama_verify_peer.py", args);
    if (rc != 0)
        fail_msg("llama_verify_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_quantized_dsts_reproduce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
