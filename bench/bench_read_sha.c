/* bench_read_sha.c - reading + sha256 of a multi-GB model vs `sha256sum`, same run.
 *
 * usage: bench_read_sha [--size-mib N] [--keep] [FILE]
 *   FILE          an existing GGUF/APR/safetensors model to measure; without it a
 *                 synthetic GGUF of --size-mib MiB (default 2048) is written with
 *                 our writer under $APR_TMPDIR (or /tmp) and removed afterwards
 *                 unless --keep.
 *
 * Measured, each as MB/s of the file's size:
 *   sha256sum     coreutils `sha256sum FILE` via popen (best of two runs; the
 *                 first also warms the page cache for everybody)
 *   open          apr_model_open (mmap + metadata only) and the resident memory
 *                 it added: it must stay at the metadata size, not the file size
 *   tensors       open + apr_sha256 of every tensor payload (what `apr verify` does)
 *   whole file    apr_sha256_file (streamed over mmap); its digest is checked
 *                 against sha256sum's
 * and the ratios tensors/sha256sum and whole/sha256sum (target >= 0.8).
 */
#include "formats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static uint64_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n > 0 ? (uint64_t)n : 0;
}

/* A synthetic GGUF of about size_mib MiB: 64 MiB F32 tensors sharing one
 * pseudo-random source buffer (the writer streams from borrowed pointers). */
static int make_synthetic(const char *path, uint64_t size_mib)
{
    const uint64_t rows = 4096, cols = 4096, bytes = rows * cols * 4;
    uint64_t n = size_mib * (1ull << 20) / bytes;
    if (n == 0)
        n = 1;
    uint8_t *src = malloc(bytes);
    if (!src)
        return -1;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; i < bytes; i += 8) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        memcpy(src + i, &s, 8);
    }
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    int rc = apr_model_set_kv_str(m, "general.architecture", "synthetic");
    for (uint64_t i = 0; i < n && !rc; i++) {
        char name[64];
        uint64_t dims[2] = {rows, cols};
        snprintf(name, sizeof name, "blk.%llu.ffn_up.weight", (unsigned long long)i);
        rc = apr_model_add_tensor(m, name, APR_DT_F32, 2, dims, src, bytes, false, &err);
    }
    apr_write_opts o = {.progress = true};
    if (!rc)
        rc = apr_gguf_write(m, path, &o, &err);
    if (rc)
        fprintf(stderr, "synthetic model: %s\n", err.msg);
    apr_model_free(m);
    free(src);
    return rc;
}

/* Runs `sha256sum path`; returns seconds and the hex digest in hex. */
static double run_sha256sum(const char *path, char hex[65])
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    double t0 = apr_now_s();
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[4400] = "";
    if (!fgets(line, sizeof line, p))
        line[0] = 0;
    int st = pclose(p);
    double t = apr_now_s() - t0;
    if (st != 0 || strlen(line) < 64)
        return -1;
    memcpy(hex, line, 64);
    hex[64] = 0;
    return t;
}

int main(int argc, char **argv)
{
    uint64_t size_mib = 2048;
    bool keep = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size-mib") == 0 && i + 1 < argc)
            size_mib = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--keep") == 0)
            keep = true;
        else if (argv[i][0] != '-')
            file = argv[i];
        else {
            fprintf(stderr, "usage: %s [--size-mib N] [--keep] [FILE]\n", argv[0]);
            return 2;
        }
    }
    char path[4096];
    bool synthetic = file == NULL;
    if (synthetic) {
        const char *dir = getenv("APR_TMPDIR");
        snprintf(path, sizeof path, "%s/bench_read_sha-%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
        double t0 = apr_now_s();
        if (make_synthetic(path, size_mib))
            return 1;
        printf("wrote synthetic GGUF %s (%.1f MiB) in %.2f s\n", path, file_size(path) / 1048576.0, apr_now_s() - t0);
    } else {
        snprintf(path, sizeof path, "%s", file);
    }
    double mb = file_size(path) / 1e6;

    char ref_hex[65] = "", hex2[65];
    double t_ref = run_sha256sum(path, ref_hex); /* also warms the page cache */
    double t_ref2 = run_sha256sum(path, hex2);
    if (t_ref < 0 || t_ref2 < 0) {
        fprintf(stderr, "sha256sum failed\n");
        return 1;
    }
    if (t_ref2 < t_ref)
        t_ref = t_ref2;

    /* open (metadata only) + every tensor's sha256 */
    apr_model *m = NULL;
    apr_err err = {0};
    long rss0 = rss_kib();
    double t0 = apr_now_s();
    if (apr_model_open(&m, path, NULL, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    double t_open = apr_now_s() - t0;
    long rss_open = rss_kib() - rss0;
    uint64_t payload = 0;
    uint8_t d[32];
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        apr_sha256(m->tensors[i].data, (size_t)m->tensors[i].nbytes, d);
        payload += m->tensors[i].nbytes;
    }
    double t_tensors = apr_now_s() - t0;
    uint64_t n_tensors = m->n_tensors;
    apr_model_free(m);

    t0 = apr_now_s();
    if (apr_sha256_file(path, d, &err)) {
        fprintf(stderr, "sha256: %s\n", err.msg);
        return 1;
    }
    double t_whole = apr_now_s() - t0;
    char hex[65];
    apr_sha256_hex(d, hex);
    bool same = strcmp(hex, ref_hex) == 0;

    printf("file            %s: %.1f MB, %llu tensors (%.1f MB of payload)\n", path, mb,
           (unsigned long long)n_tensors, payload / 1e6);
    printf("sha256sum       %8.3f s  %8.1f MB/s\n", t_ref, mb / t_ref);
    printf("open            %8.3f s  resident memory added: %ld KiB (metadata only)\n", t_open, rss_open);
    printf("open+tensors    %8.3f s  %8.1f MB/s  ratio %.2f\n", t_tensors, mb / t_tensors, t_ref / t_tensors);
    printf("whole file      %8.3f s  %8.1f MB/s  ratio %.2f  digest %s sha256sum's\n", t_whole, mb / t_whole,
           t_ref / t_whole, same ? "equals" : "DIFFERS FROM");
    bool ok = same && t_ref / t_tensors >= 0.8 && t_ref / t_whole >= 0.8;
    printf("target ratio >= 0.80: %s\n", ok ? "met" : "NOT met");
    if (synthetic && !keep)
        unlink(path);
    return same ? 0 : 1;
}
