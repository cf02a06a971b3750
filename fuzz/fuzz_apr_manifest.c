/* fuzz_apr_manifest.c - libFuzzer harness for a sharded APR v2 set opened
 * from its manifest (formats/apr/apr_shard.c, docs/sharding.md): the
 * manifest's counts, shard entries, weight_map and provenance, and the shard
 * files it names (each an APR file with flag 0x10 whose metadata must agree).
 * The input is the manifest followed by the shard files (fuzz_files.h).
 * Run: build-fuzz/fuzz/fuzz_apr_manifest -max_total_time=30 WORKDIR fuzz/corpus/apr_manifest
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_open_set("model.apr.manifest.json", data, size);
    return 0;
}
