/* fuzz_apr_manifest.c - libFuzzer harness for a sharded APR v2 set opened
 * from its manifest (formats/apr/apr_shard.c, docs/sharding.md): the
 * manifest's counts, shard entries, weight_map and provenance, and the shard
 * files it names (each an APR file with flag 0x10 whose metadata must agree).
 * The input is the manifest followed by the shard files (fuzz_files.h).
 * Run: build-fuzz/fuzz/fuzz_apr_manifest -max_total_time=30 WORKDIR fuzz/corpus/apr_manifest
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "fuzz_check.h"
#include "fuzz_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_files f;
    if (!fuzz_files_write(&f, "model.apr.manifest.json", data, size))
        return 0;
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_model_open(&m, f.path[0], NULL, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    fuzz_files_remove(&f);
    return 0;
}
