/* test_formats_core.c - dtype table, KV helpers, model view and atomic output. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static void test_dtype_sizes(void **state)
{
    (void)state;
    uint64_t dims[2] = {3, 512}, n;
    assert_true(apr_dtype_tensor_bytes(APR_DT_Q4_K, 2, dims, &n));
    assert_int_equal(n, 3 * 2 * 144);
    assert_true(apr_dtype_tensor_bytes(APR_DT_Q8_0, 2, dims, &n));
    assert_int_equal(n, 3 * 16 * 34);
    dims[1] = 100; /* not a multiple of 256 */
    assert_false(apr_dtype_tensor_bytes(APR_DT_Q6_K, 2, dims, &n));
    uint64_t huge[3] = {1ull << 40, 1ull << 40, 1ull << 40};
    assert_false(apr_dtype_tensor_bytes(APR_DT_F32, 3, huge, &n));
    assert_int_equal(apr_dtype_from_name("q6_k"), APR_DT_Q6_K);
    assert_int_equal(apr_dtype_from_name("nope"), -1);
    assert_null(apr_dtype_get(5));
    assert_null(apr_dtype_get(-1));
    assert_null(apr_dtype_get(1000));
}

static void test_kv_roundtrip(void **state)
{
    (void)state;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    assert_non_null(m);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.block_count", 5), 0);
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "llama"), 0);
    assert_int_equal(apr_model_set_kv_f32(m, "llama.rope.freq_base", 10000.0f), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "llama.block_count", 6), 0); /* replaces */
    assert_int_equal(m->n_kvs, 3);
    uint32_t u;
    assert_true(apr_kv_get_u32(m, "llama.block_count", &u));
    assert_int_equal(u, 6);
    assert_string_equal(apr_kv_get_str(m, "general.architecture"), "llama");
    assert_false(apr_kv_get_u32(m, "general.architecture", &u));
    assert_int_equal(apr_model_remove_kv(m, "llama.block_count"), 0);
    assert_null(apr_model_kv(m, "llama.block_count"));
    apr_model_free(m);
}

static void test_add_tensor_checks(void **state)
{
    (void)state;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    uint64_t dims[2] = {2, 32};
    float *buf = calloc(64, sizeof(float));
    assert_int_equal(apr_model_add_tensor(m, "a", APR_DT_F32, 2, dims, buf, 64 * 4, true, &err), 0);
    assert_int_not_equal(apr_model_add_tensor(m, "a", APR_DT_F32, 2, dims, buf, 256, false, &err), 0);
    assert_non_null(strstr(err.msg, "duplicate"));
    assert_int_not_equal(apr_model_add_tensor(m, "b", APR_DT_F32, 2, dims, buf, 10, false, &err), 0);
    assert_non_null(apr_model_tensor(m, "a"));
    apr_model_free(m);
}

static void test_outfile_atomic(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("outfile");
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    apr_outfile f;
    apr_err err = {0};
    assert_int_equal(apr_outfile_open(&f, path, &err), 0);
    assert_int_equal(apr_outfile_write(&f, "abc", 3, &err), 0);
    assert_int_equal(apr_outfile_pad(&f, 32, &err), 0);
    assert_int_equal(f.written, 32);
    assert_int_not_equal(access(path, F_OK), 0); /* nothing at the destination yet */
    apr_outfile_abort(&f);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(apr_outfile_open(&f, path, &err), 0);
    assert_int_equal(apr_outfile_write(&f, "xyz", 3, &err), 0);
    assert_int_equal(apr_outfile_commit(&f, &err), 0);
    size_t n;
    char *s = tu_read_file(path, &n);
    assert_non_null(s);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "xyz", 3);
    free(s);
}

/* n xorshift32 bytes (never NULL: the test fails instead). */
static uint8_t *random_bytes(size_t n, uint32_t seed)
{
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    uint32_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    return buf;
}

/* Bytes handed to apr_outfile_write from a live apr_map_file mapping go
 * through the kernel's file-to-file copy; the output must be the same bytes,
 * in order with what was written before and after, at any source offset
 * (unaligned included), and a region only partly inside the mapping must
 * not take that path. */
static void copy_from_mapping(const char *src_dir, const char *dst_dir)
{
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/src.bin", src_dir);
    snprintf(dst, sizeof dst, "%s/dst.bin", dst_dir);
    size_t n = (20u << 20) + 123;
    uint8_t *buf = random_bytes(n, 88172645u);
    FILE *fp = fopen(src, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    apr_mapping m;
    apr_err err = {0};
    assert_int_equal(apr_map_file(src, &m, &err), 0);
    apr_outfile f;
    assert_int_equal(apr_outfile_open(&f, dst, &err), 0);
    assert_int_equal(apr_outfile_write(&f, "head", 4, &err), 0);
    size_t off = 4097, len = (12u << 20) + 5;
    assert_int_equal(apr_outfile_write(&f, m.base + off, len, &err), 0); /* inside the mapping */
    assert_int_equal(apr_outfile_write(&f, buf, n, &err), 0);            /* heap: plain writes */
    assert_int_equal(f.written, 4 + len + n);
    assert_int_equal(apr_outfile_commit(&f, &err), 0);
    apr_unmap_file(&m);
    size_t got;
    uint8_t *out = (uint8_t *)tu_read_file(dst, &got);
    assert_non_null(out);
    assert_int_equal(got, 4 + len + n);
    assert_memory_equal(out, "head", 4);
    assert_memory_equal(out + 4, buf + off, len);
    assert_memory_equal(out + 4 + len, buf, n);
    free(out);
    /* the source is untouched */
    uint8_t *again = (uint8_t *)tu_read_file(src, &got);
    assert_non_null(again);
    assert_int_equal(got, n);
    assert_memory_equal(again, buf, n);
    free(again);
    free(buf);
}

static void test_outfile_copy_from_mapping(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("outfile-map");
    assert_non_null(dir);
    copy_from_mapping(dir, dir);
    /* source on another filesystem (tmpfs): the kernel may refuse the copy
     * (EXDEV) and the writer must fall back to writing from the mapping */
    char shm[64];
    snprintf(shm, sizeof shm, "/dev/shm/apr-test-%d", (int)getpid());
    if (mkdir(shm, 0700) == 0) {
        copy_from_mapping(shm, dir);
        char f[128];
        snprintf(f, sizeof f, "%s/src.bin", shm);
        unlink(f);
        rmdir(shm);
    } else {
        print_message("note: /dev/shm unavailable, the cross-filesystem case was not run\n");
    }
}

/* apr_map_release drops pages only inside live file mappings: heap bytes
 * must survive it (MADV_DONTNEED would zero them), mapped bytes read back the
 * same after it, and hashing a mapped file releases what it read. */
static long resident_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_map_release(void **state)
{
    (void)state;
    size_t n = 32u << 20;
    uint8_t *heap = malloc(n);
    assert_non_null(heap);
    for (size_t i = 0; i < n; i++)
        heap[i] = (uint8_t)(i * 131u + 7u);
    apr_map_release(heap, n);
    for (size_t i = 0; i < n; i += 4093)
        assert_int_equal(heap[i], (uint8_t)(i * 131u + 7u));
    const char *dir = tu_tmpdir("map-release");
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/m.bin", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(heap, 1, n, fp), n);
    fclose(fp);
    uint8_t want[32], got[32];
    apr_sha256(heap, n, want);
    apr_mapping m;
    apr_err err = {0};
    assert_int_equal(apr_map_file(path, &m, &err), 0);
    long before = resident_kib();
    apr_sha256(m.base, (size_t)m.size, got); /* reads all 32 MiB */
    long after = resident_kib();
    assert_memory_equal(got, want, 32);
    if (before > 0 && after > 0)
        assert_true(after - before < 16 * 1024); /* released behind the hash */
    assert_memory_equal(m.base, heap, n); /* faults back in, same bytes */
    apr_unmap_file(&m);
    free(heap);
}

static void test_sha256_known(void **state)
{
    (void)state;
    uint8_t d[32];
    char hex[65];
    apr_sha256("abc", 3, d);
    apr_sha256_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    apr_sha256_ctx *c = apr_sha256_new();
    apr_sha256_update(c, "a", 1);
    apr_sha256_update(c, "bc", 2);
    uint8_t d2[32];
    apr_sha256_final(c, d2);
    assert_memory_equal(d, d2, 32);
    assert_int_equal(apr_crc32(0, "123456789", 9), 0xCBF43926u);
}

/* apr_crc32 may be ISA-L's or zlib's: both must give zlib's values, also
 * when chained over odd splits (the APR writer feeds it piece by piece, and
 * the provenance patch relies on zlib's crc32_combine over the same CRC). */
static void test_crc32_matches_zlib(void **state)
{
    (void)state;
    size_t n = (1u << 20) + 13;
    uint8_t *buf = random_bytes(n, 2463534242u);
    uint32_t want = (uint32_t)crc32(0, buf, (uInt)n);
    assert_int_equal(apr_crc32(0, buf, n), want);
    const size_t splits[] = {0, 1, 7, 63, 64, 65, 4095, 100000, n - 1, n};
    for (size_t k = 0; k < sizeof splits / sizeof *splits; k++) {
        size_t a = splits[k];
        assert_int_equal(apr_crc32(apr_crc32(0, buf, a), buf + a, n - a), want);
        uint32_t head = apr_crc32(0, buf, a), tail = apr_crc32(0, buf + a, n - a);
        assert_int_equal((uint32_t)crc32_combine(head, tail, (z_off_t)(n - a)), want);
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_sizes),
        cmocka_unit_test(test_kv_roundtrip),
        cmocka_unit_test(test_add_tensor_checks),
        cmocka_unit_test(test_outfile_atomic),
        cmocka_unit_test(test_outfile_copy_from_mapping),
        cmocka_unit_test(test_map_release),
        cmocka_unit_test(test_sha256_known),
        cmocka_unit_test(test_crc32_matches_zlib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
