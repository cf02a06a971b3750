/* fuzz_hf_config.c - libFuzzer harness for the HF config files -> GGUF KVs
 * mapping (formats/hf/hfmeta.c: config.json, generation_config.json,
 * tokenizer_config.json, as convert_hf_to_gguf.py maps them), derive on the
 * KVs it gives, and the way back (apr_hf_docs_from_model), whose files must
 * map again: what the safetensors writer writes, its reader reads.
 * The input is one JSON object {"config": {...}, "generation_config": {...},
 * "tokenizer_config": {...}}, each member optional.
 * Run: build-fuzz/fuzz/fuzz_hf_config -max_total_time=30 WORKDIR fuzz/corpus/hf_config
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "fuzz_check.h"
#include "hfmeta.h"

static json_t *member(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_null(v) ? NULL : v; /* a present file is an object; anything else the mapping must refuse */
}

/* docs -> KVs in a fresh model (and derive); the model, or NULL when refused. */
static apr_model *map_docs(const apr_hf_docs *d)
{
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (!m)
        return NULL;
    apr_err err = {0};
    int rc = apr_hf_docs_to_kvs(m, d, "fuzz", &err);
    if (rc == 0) {
        apr_model_derive(m, NULL); /* no usable config is not an error of the mapping */
        return m;
    }
    if (err.msg[0] == 0)
        abort(); /* every refusal says why */
    apr_model_free(m);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return 0;
    }
    apr_hf_docs d = {.config = member(j, "config"),
                     .gen_config = member(j, "generation_config"),
                     .tokenizer_config = member(j, "tokenizer_config")};
    apr_model *m = map_docs(&d);
    if (m && m->has_cfg) {
        apr_hf_docs out;
        apr_err err = {0};
        if (apr_hf_docs_from_model(m, &out, &err) == 0) {
            apr_model *back = map_docs(&out);
            if (!back)
                abort(); /* the files we write from a mapped model map again */
            apr_model_free(back);
            apr_hf_docs_free(&out);
        } else if (err.msg[0] == 0) {
            abort();
        }
    }
    apr_model_free(m);
    json_decref(j);
    return 0;
}
