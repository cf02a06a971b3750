/* test_util.c - helpers shared by the cmocka tests. */
#define _GNU_SOURCE
#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *rot_buf(void)
{
    static char bufs[8][4096];
    static int i;
    return bufs[i++ & 7];
}

const char *tu_shared(const char *rel)
{
    const char *dir = getenv("APR_SHARED_DIR");
    char *p = rot_buf();
    snprintf(p, 4096, "%s/%s", dir && *dir ? dir : "../shared", rel);
    return access(p, R_OK) == 0 ? p : NULL;
}

const char *tu_path(const char *dir, const char *name)
{
    char *p = rot_buf();
    snprintf(p, 4096, "%s/%s", dir, name);
    return p;
}

const char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("APR_TMPDIR");
    char *p = rot_buf();
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(p, 4096, "%s/apr-%s-%d-XXXXXX", base, tag, (int)getpid());
    if (!mkdtemp(p)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        return NULL;
    }
    return p;
}

const char *tu_apr_bin(void)
{
    const char *b = getenv("APR_BIN");
    return b && *b ? b : NULL;
}

int tu_system(const char *out_path, const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd - 64, fmt, ap);
    va_end(ap);
    if (out_path) {
        size_t n = strlen(cmd);
        snprintf(cmd + n, sizeof cmd - n, " >'%s' 2>&1", out_path);
    }
    int st = system(cmd);
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tu_golden_input(uint64_t seed, uint64_t rows, uint64_t cols, float *x)
{
    uint64_t st = seed;
    for (uint64_t i = 0; i < rows * cols; i++) {
        float v = (float)((int64_t)(splitmix64(&st) >> 40) - 8388608) * (1.0f / 8388608.0f);
        v = v * 0.05f;
        if (i % 97 == 0)
            v = v * 8.0f;
        x[i] = v;
    }
}

void tu_golden_imatrix(uint64_t seed, uint64_t cols, float *w)
{
    uint64_t st = seed + 1;
    for (uint64_t c = 0; c < cols; c++)
        w[c] = (float)((splitmix64(&st) >> 40) + 1) * (1.0f / 16777216.0f);
}
