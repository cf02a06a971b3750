/* test_stream.c - the one-pass writers: `apr quantize` output byte for byte
 * what it was before the writers streamed (digests of the files the
 * in-memory pipeline wrote, commit 20c3c56, --no-provenance so that no time
 * or path enters the bytes), a sealed provenance record equal to writing the
 * final record in one go, and the sealed files passing verification. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[4096];

static int setup(void **state)
{
    (void)state;
    const int dir = tu_bin_dir(g_dir, sizeof g_dir, "stream");
    if (dir != 0)
        return dir < 0 ? -1 : 0;
    if (tu_system(NULL, "'%s' synth '%s/llama' --preset tiny-llama --quiet", tu_apr_bin(), g_dir) ||
        tu_system(NULL, "'%s' synth '%s/qwen' --preset tiny-qwen2 --quiet", tu_apr_bin(), g_dir))
        return -1;
    return 0;
}

static void sha_file_hex(const char *path, char hex[65])
{
    uint8_t d[32];
    apr_err err = {0};
    assert_int_equal(apr_sha256_file(path, d, &err), 0);
    apr_sha256_hex(d, hex);
}

static void test_quantize_bytes_unchanged(void **state)
{
    (void)state;
    TU_NEED_BIN();
    static const struct {
        const char *model, *type, *ext, *sha;
    } golden[] = {
        {"llama", "Q4_K_M", "gguf", "4fa9e2035655f6c80bdcb207147fe6cf53c62750974abbb7bf7aaca76eb13738"},
        {"llama", "Q8_0", "gguf", "3ac1974bf032938870bc0270be4e949795bd7c7181446a58250cb7a8fd806389"},
        {"qwen", "Q4_K_M", "gguf", "a19698537e4a13f58a7bfd6c2bf5d46ca31b83ca7817d95ede660b3b860b5abb"},
        {"qwen", "Q8_0", "gguf", "cd40439acb32166badcdb1022bca70d41302db96422862f7c96d660b58bbe3bd"},
        {"llama", "Q4_K_M", "apr", "1b7c2d5ae168c5a56e93b6fe52f1ef976dfec4fa5d9a853f8668e97b924f136a"},
        {"llama", "Q8_0", "apr", "c36e9432868b68ca5ca82654081dc127ae7891b343c6893ff83f633754698eab"},
        {"qwen", "Q4_K_M", "apr", "9e1e51d54031fef12a0d1c5ead207b39984450f5549962a9fff8bb3ed2d81680"},
        {"qwen", "Q8_0", "apr", "ab28496995fb1e4eb81b794ffe12383f8d02cb82a7c121f5ce85236ecc415179"},
    };
    for (size_t i = 0; i < sizeof golden / sizeof *golden; i++) {
        char out[4200], hex[65];
        snprintf(out, sizeof out, "%s/%s-%s.%s", g_dir, golden[i].model, golden[i].type, golden[i].ext);
        assert_int_equal(tu_system(NULL, "'%s' quantize '%s/%s' '%s' --type %s --no-provenance --threads 2 --quiet",
                                   tu_apr_bin(), g_dir, golden[i].model, out, golden[i].type),
                         0);
        sha_file_hex(out, hex);
        if (strcmp(hex, golden[i].sha))
            print_message("%s: %s, was %s\n", out, hex, golden[i].sha);
        assert_string_equal(hex, golden[i].sha);
    }
}

/* The record sealed in place is the record a one-pass write of the final
 * JSON gives: the GGUF writer fed the opened output writes the same bytes. */
static void test_sealed_equals_one_pass(void **state)
{
    (void)state;
    TU_NEED_BIN();
    const char *outs[] = {"sealed-q.gguf", "sealed-c.gguf"};
    const char *cmds[] = {"quantize '%s/qwen' '%s/sealed-q.gguf' --type Q4_K_M --threads 2 --quiet",
                          "convert '%s/llama' '%s/sealed-c.gguf' --threads 2"};
    for (int k = 0; k < 2; k++) {
        char args[8400];
        snprintf(args, sizeof args, cmds[k], g_dir, g_dir);
        assert_int_equal(tu_system(NULL, "'%s' %s", tu_apr_bin(), args), 0);
        char path[4200], again[4200], a[65], b[65];
        snprintf(path, sizeof path, "%s/%s", g_dir, outs[k]);
        snprintf(again, sizeof again, "%s/again-%s", g_dir, outs[k]);
        apr_model *m = NULL;
        apr_err err = {0};
        assert_int_equal(apr_model_open(&m, path, NULL, &err), 0);
        assert_non_null(m->provenance_json);
        assert_null(strstr(m->provenance_json, "0000000000000000\"")); /* no placeholder left */
        assert_int_equal(apr_gguf_write(m, again, NULL, &err), 0);
        apr_model_free(m);
        sha_file_hex(path, a);
        sha_file_hex(again, b);
        assert_string_equal(a, b);
        assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s'", tu_apr_bin(), path), 0);
    }
}

/* APR: the footer CRC32 (checked on open) covers the sealed metadata. */
static void test_sealed_apr_crc(void **state)
{
    (void)state;
    TU_NEED_BIN();
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/llama' '%s/s.apr' --type Q4_K_M --threads 2 --quiet",
                               tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/llama' '%s/c.apr' --threads 2", tu_apr_bin(), g_dir, g_dir), 0);
    const char *files[] = {"s.apr", "c.apr"};
    for (int k = 0; k < 2; k++) {
        apr_model *m = NULL;
        apr_err err = {0};
        apr_open_opts oo = {.skip_footer_crc = false};
        assert_int_equal(apr_model_open(&m, tu_path(g_dir, files[k]), &oo, &err), 0);
        assert_non_null(m->provenance_json);
        apr_model_free(m);
        assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s'", tu_apr_bin(), tu_path(g_dir, files[k])), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_bytes_unchanged),
        cmocka_unit_test(test_sealed_equals_one_pass),
        cmocka_unit_test(test_sealed_apr_crc),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
