/* fuzz_provenance.c - libFuzzer harness for the provenance record reader
 * and verifier (formats/provenance: apr_prov_attach, apr_provenance_verify,
 * docs/provenance.md): a record, attached to a model it may or may not
 * describe, is checked against the model's tensors and files and against a
 * source file.
 * The input is the record (JSON) followed by two files (fuzz_files.h): the
 * model the record is attached to (any format apr opens; the record it
 * carries itself is replaced) and, optionally, the source it names.
 * Run: build-fuzz/fuzz/fuzz_provenance -max_total_time=30 WORKDIR fuzz/corpus/provenance
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"
#include "fuzz_files.h"

static void report(void *user, bool ok, const char *what, const char *msg)
{
    (void)ok;
    size_t *n = user;
    *n += (what ? strlen(what) : 0) + strlen(msg); /* reads both: ASan sees a dangling one */
}

static void verify(const apr_model *m, const char *source)
{
    apr_prov_check res;
    apr_err err = {0};
    size_t n = 0;
    int rc = apr_provenance_verify(m, source, 1, report, &n, &res, &err);
    if (rc != 0 && err.msg[0] == 0)
        abort(); /* a mismatch, or a check that could not run, says so */
    if (res.tensors_bad > res.tensors_checked || res.files_bad > res.files_checked ||
        res.src_tensors_bad > res.src_tensors_checked || res.outputs_bad > res.outputs_checked + 1)
        abort();
    if (rc == 0 && (res.tensors_bad || res.unrecorded || res.missing || res.files_bad || res.parent_bad))
        abort(); /* a pass with a failed check */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_files f;
    if (!fuzz_files_write(&f, "record.json", data, size))
        return 0;
    apr_model *m = NULL;
    apr_err err = {0};
    char *record = NULL;
    if (f.n < 2 || apr_model_open(&m, f.path[1], NULL, &err) != 0)
        goto done;
    const uint8_t *sep = fuzz_find(data, size, FUZZ_SEP, strlen(FUZZ_SEP));
    if (!(record = strndup((const char *)data, (size_t)(sep - data))))
        goto done;
    if (apr_prov_attach(m, record, APR_FMT_GGUF, &err) != 0) {
        if (err.msg[0] == 0)
            abort();
        goto done;
    }
    verify(m, NULL);
    if (f.n >= 3)
        verify(m, f.path[2]);
done:
    free(record);
    apr_model_free(m);
    fuzz_files_remove(&f);
    return 0;
}
