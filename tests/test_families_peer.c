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
    tu_tinycoder_peer("families-peer", "families_peer.py", "torch,transformers,gguf,numpy", "torch transformers gguf numpy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_against_transformers_and_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
