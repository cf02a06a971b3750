/* test_families_peer.c - runs tests/peer/families_peer.py: tiny random models
 * of each family built by transformers at test time, converted by llama.cpp's
 * convert_hf_to_gguf.py and by apr; GGUFs compared tensor for tensor, apr's
 * logits (HF directory and GGUF) against transformers', GGUF -> safetensors
 * back into transformers, llama.cpp on apr's GGUF. Skips visibly (fails under
 * APR_TEST_STRICT=1) when torch/transformers/gguf or llama.cpp's source are
 * absent. Label: peer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static void test_families_against_transformers_and_llama_cpp(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(tok, "fixtures/tinycoder/tokenizer.json");
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    tu_require_python("torch,transformers,gguf,numpy", "torch transformers gguf numpy");
    const char *src = tu_require_llama_cpp_src();
    char tok_dir[1024];
    snprintf(tok_dir, sizeof tok_dir, "%s", tok);
    *strrchr(tok_dir, '/') = 0;
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s' '%s/work'", bin, src, tok_dir, tu_tmpdir("families-peer-work"));
    int rc = tu_run_peer("families-peer", "families_peer.py", args);
    if (rc != 0)
        fail_msg("families_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_against_transformers_and_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
