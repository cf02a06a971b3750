/* test_imatrix_peer.c - runs tests/peer/imatrix_peer.py on the trained
 * tinycoder fixture: apr imatrix's GGUF read by gguf-py with the keys,
 * tensor names and shapes llama-quantize's loader expects, its .dat equal
 * to it; its values against llama.cpp's own collector on the same chunks
 * (correlation); llama_model_quantize with apr's file byte-identical to
 * `apr quantize --imatrix`; the held-out KLD gain at IQ4_XS measured by
 * llama.cpp's forward pass. Skips visibly (fails under APR_TEST_STRICT=1)
 * without numpy, gguf or llama_cpp. Labels: peer, slow. */
#include <stdio.h>

#include "test_util.h"

static void test_imatrix_against_llama_cpp(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(model, "fixtures/tinycoder/tinycoder-bf16.gguf");
    char m[4096];
    snprintf(m, sizeof m, "%s", model);
    TU_REQUIRE_SHARED(text, "fixtures/tinycoder/heldout.py");
    const char *bin = tu_apr_bin();
    if (!bin)
        tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set (run through ctest)");
    tu_require_python("numpy,gguf,llama_cpp", "numpy gguf llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s' '%s' --ctx 256", bin, m, text, tu_tmpdir("imatrix-peer-work"));
    const int rc = tu_run_peer("imatrix-peer", "imatrix_peer.py", args);
    if (rc != 0)
        fail_msg("imatrix_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_imatrix_against_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
