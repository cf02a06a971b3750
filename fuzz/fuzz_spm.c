/* fuzz_spm.c - libFuzzer harness for the SentencePiece tokenizer.model
 * reader (libtok/spm.c): the protobuf framing, the pieces and specs, the
 * loadability checks; then the llama.cpp mapping to KVs, and the writer on
 * what was read (its bytes must parse again).
 * Run: build-fuzz/fuzz/fuzz_spm -max_total_time=30 WORKDIR fuzz/corpus/spm
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "hfmeta.h"
#include "tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* libFuzzer's entry point */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_spm s;
    apr_err err = {0};
    if (apr_spm_parse(&s, data, size, "fuzz", &err) != 0)
        return 0;
    apr_hf_docs d = {.spm = &s};
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (m)
        apr_hf_docs_to_kvs(m, &d, NULL, &err);
    apr_model_free(m);
    uint8_t *bytes = NULL;
    size_t n = 0;
    if (apr_spm_serialize(&s, &bytes, &n, &err) == 0) {
        apr_spm back;
        if (apr_spm_parse(&back, bytes, n, "fuzz-written", &err) != 0)
            abort(); /* what we write from a parsed model must parse */
        apr_spm_free(&back);
        free(bytes);
    }
    apr_spm_free(&s);
    return 0;
}
