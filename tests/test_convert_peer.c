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
    if (tu_system("/dev/null", "python3 -c 'import llama_cpp'") != 0) {
        print_message("SKIP: the llama_cpp Python binding is not importable (pip install llama-cpp-python)\n");
        skip();
    }
    const char *src = getenv("APR_SOURCE_DIR");
    const char *dir = tu_tmpdir("peer-load");
    char out[4096], work[4096];
    snprintf(out, sizeof out, "%s/peer.out", dir);
    snprintf(work, sizeof work, "%s/work", dir);
    int rc = tu_system(out, "python3 '%s/tests/peer/llama_load_peer.py' '%s' '%s' '%s'", src ? src : ".", bin, fixture,
                       work);
    char *log = tu_read_file(out, NULL);
    print_message("%s", log ? log : "");
    free(log);
    if (rc == 77)
        skip();
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
