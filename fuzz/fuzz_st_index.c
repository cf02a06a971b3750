/* fuzz_st_index.c - libFuzzer harness for a sharded safetensors set opened
 * from its model.safetensors.index.json (formats/safetensors): the index's
 * weight_map, the shard files it names and their tensors, and the HF side
 * files (config.json, tokenizer.json, ...) read from the same directory.
 * The input is the index followed by the files beside it (fuzz_files.h).
 * Run: build-fuzz/fuzz/fuzz_st_index -max_total_time=30 WORKDIR fuzz/corpus/st_index
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "fuzz_check.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_files f;
    if (!fuzz_files_write(&f, "model.safetensors.index.json", data, size))
        return 0;
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_model_open(&m, f.path[0], NULL, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    fuzz_files_remove(&f);
    return 0;
}
