/* test_convert_peer.c - runs tests/peer/llama_load_peer.py: GGUFs written by
 * `apr convert` (from safetensors, through APR, from synthetic HF models) load
 * in llama.cpp and greedy-decode the fixture's known text. Skips visibly when
 * the llama_cpp Python binding is not importable. */
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

static void test_llama_cpp_loads_converted(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, "fixtures/stories260K-f32.gguf");
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    tu_require_python("llama_cpp", "llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s/work'", bin, fixture, tu_tmpdir("peer-load-work"));
    int rc = tu_run_peer("peer-load", "llama_load_peer.py", args);
    if (rc != 0)
        fail_msg("llama_load_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_cpp_loads_converted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
