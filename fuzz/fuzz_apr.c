/* fuzz_apr.c - libFuzzer harness for the APR v2 reader.
 * Run: build-fuzz/fuzz/fuzz_apr -max_total_time=30 [corpus_dir]
 * The last input byte selects modes so the fuzzer reaches the index and
 * metadata parsers without having to forge CRCs: bit 0 set = check the footer
 * CRC (else skipped, as `apr_open_opts.skip_footer_crc` does); bit 1 set =
 * rewrite the header CRC to match before parsing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_copy(data, size);
    if (!buf)
        return 0;
    bool check_footer = size > 0 && (data[size - 1] & 1);
    if (size >= 64 && (data[size - 1] & 2)) {
        uint32_t crc = apr_crc32(apr_crc32(0, buf, 40), buf + 44, 20);
        for (int i = 0; i < 4; i++)
            buf[40 + i] = (uint8_t)(crc >> (8 * i));
    }
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_apr_parse(&m, buf, size, check_footer, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    free(buf);
    return 0;
}
