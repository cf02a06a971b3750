/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader
 * (header JSON, offsets, __metadata__ including the typed apr.kvs records,
 * and apr_model_derive on whatever KVs those give). An input that starts with
 * '{' is instead taken as one JSON object serving as config.json,
 * tokenizer.json and tokenizer_config.json at once: the HF -> KV mapping.
 * Run: build-fuzz/fuzz/fuzz_safetensors -max_total_time=30 WORKDIR fuzz/corpus/safetensors
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"
#include "hfmeta.h"

static void fuzz_hf_docs(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    apr_hf_docs d = {.config = j, .tokenizer = j, .tokenizer_config = j, .gen_config = j};
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    apr_err err = {0};
    if (m && apr_hf_docs_to_kvs(m, &d, "fuzz", &err) == 0 && apr_model_derive(m, &err) == 0 && m->has_tok) {
        /* and back: the writer's side of the mapping on what was read */
        apr_hf_docs out;
        if (apr_hf_docs_from_model(m, &out, &err) == 0)
            apr_hf_docs_free(&out);
    }
    apr_model_free(m);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size && data[0] == '{') {
        fuzz_hf_docs(data, size);
        return 0;
    }
    fuzz_parse_copy(apr_safetensors_parse, data, size);
    return 0;
}
