/* fuzz_st_index.c - libFuzzer harness for a sharded safetensors set opened
 * from its model.safetensors.index.json (formats/safetensors): the index's
 * weight_map, the shard files it names and their tensors, and the HF side
 * files (config.json, tokenizer.json, ...) read from the same directory.
 * The input is the index followed by the files beside it (fuzz_files.h).
 * Run: build-fuzz/fuzz/fuzz_st_index -max_total_time=30 WORKDIR fuzz/corpus/st_index
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_open_set("model.safetensors.index.json", data, size);
    return 0;
}
