/* fuzz_imatrix.c - libFuzzer harness for the llama-imatrix readers
 * (libconvert/imatrix.c): an input starting with "GGUF" is a GGUF imatrix
 * (NAME.in_sum2 / NAME.counts tensors, imatrix.* KVs), read through the GGUF
 * reader as apr_imatrix_load does; anything else is the legacy .dat form.
 * What was read is then looked up and filtered as quantize --imatrix does.
 * Run: build-fuzz/fuzz/fuzz_imatrix -max_total_time=30 WORKDIR fuzz/corpus/imatrix
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"
#include "quant.h"

/* A successful read: every entry has a name and n finite values (ASan sees
 * the ends), the lookups find what is there, and a filter keeps a subset. */
static void check_imatrix(apr_imatrix *im)
{
    float x = 0;
    for (uint64_t i = 0; i < im->n_entries; i++) {
        const apr_imatrix_entry *e = &im->entries[i];
        if (!e->name || !e->n || !e->values || !isfinite(e->values[0]) || !isfinite(e->values[e->n - 1]))
            abort();
        x += e->values[0] + e->values[e->n - 1];
        const apr_imatrix_entry *f = apr_imatrix_find(im, e->name);
        if (!f || strcmp(f->name, e->name) != 0)
            abort();
    }
    volatile float sink = x;
    (void)sink;
    const char *inc[] = {"attn"}, *exc[] = {"blk.0."};
    apr_err err = {0};
    uint64_t n = im->n_entries;
    if (apr_imatrix_filter(im, inc, 1, exc, 1, &err) == 0 || err.msg[0] == 0)
        abort(); /* both lists at once is refused */
    /* A pattern that matches no entry is refused (a typo, not a filter). */
    bool any = false;
    for (uint64_t i = 0; i < n; i++)
        any = any || strstr(im->entries[i].name, "blk.0.") != NULL;
    err.msg[0] = 0;
    const int rc = apr_imatrix_filter(im, NULL, 0, exc, 1, &err);
    if (any ? rc != 0 : (rc == 0 || err.msg[0] == 0))
        abort();
    if (im->n_entries > n)
        abort();
    for (uint64_t i = 0; i < im->n_entries; i++)
        if (strstr(im->entries[i].name, "blk.0."))
            abort();
}

static void check_result(int rc, apr_imatrix *im, const apr_err *err)
{
    if (rc != 0) {
        if (im || err->msg[0] == 0)
            abort();
        return;
    }
    check_imatrix(im);
    apr_imatrix_free(im);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_copy(data, size);
    if (!buf)
        return 0;
    apr_imatrix *im = NULL;
    apr_err err = {0};
    if (size >= 4 && !memcmp(buf, "GGUF", 4)) {
        apr_model *m = NULL;
        if (apr_gguf_parse(&m, buf, size, &err) == 0) {
            int rc = apr_imatrix_from_model(&im, m, &err);
            check_result(rc, im, &err);
            apr_model_free(m);
        }
    } else {
        int rc = apr_imatrix_parse_legacy(&im, buf, size, &err);
        check_result(rc, im, &err);
    }
    free(buf);
    return 0;
}
