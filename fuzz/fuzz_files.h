/* fuzz_files.h - inputs that are several files: the readers of sharded sets
 * (an index or manifest naming shard files beside it) and the provenance
 * verifier (a record and the files it describes) open paths, not buffers.
 *
 * An input is its first file, then any number of "\n==> NAME\n" lines each
 * starting another file (head(1)'s multi-file layout, so a seed can be
 * written with `head -c -0 FILE...` style tooling or by hand). The files are
 * written into a scratch directory (under TMPDIR) made for the input and
 * removed after it; a NAME that is not a plain file name
 * ([A-Za-z0-9._-], not starting with '.', at most 64 bytes) or a repeated one
 * rejects the input. At most FUZZ_MAX_FILES files. */
#ifndef APR_FUZZ_FILES_H
#define APR_FUZZ_FILES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"

#define FUZZ_MAX_FILES 8
#define FUZZ_SEP "\n==> "

typedef struct fuzz_files {
    char dir[256];
    size_t n;
    char path[FUZZ_MAX_FILES][512];
} fuzz_files;

/* A fresh scratch directory for one input (libFuzzer may leave with _Exit,
 * so nothing is kept between inputs for an atexit to clean). */
static void fuzz_scratch_dir(char *dir, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, n, "%s/apr-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir))
        abort();
}

/* memmem without _GNU_SOURCE (harnesses include this after other headers) */
static const uint8_t *fuzz_find(const uint8_t *p, size_t n, const char *needle, size_t k)
{
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (p[i] == (uint8_t)needle[0] && !memcmp(p + i, needle, k))
            return p + i;
    return NULL;
}

static bool fuzz_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

static bool fuzz_write_file(fuzz_files *f, const char *name, size_t name_len, const uint8_t *p, size_t n)
{
    if (f->n == FUZZ_MAX_FILES || !fuzz_name_ok(name, name_len))
        return false;
    char path[512];
    snprintf(path, sizeof path, "%s/%.*s", f->dir, (int)name_len, name);
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->path[i], path))
            return false;
    FILE *fp = fopen(path, "wb");
    if (!fp)
        abort();
    if ((n && fwrite(p, 1, n, fp) != n) || fclose(fp) != 0)
        abort();
    memcpy(f->path[f->n++], path, sizeof path);
    return true;
}

static void fuzz_files_remove(fuzz_files *f)
{
    for (size_t i = 0; i < f->n; i++)
        unlink(f->path[i]);
    f->n = 0;
    if (f->dir[0])
        rmdir(f->dir);
    f->dir[0] = 0;
}

/* Splits data into files, the first named first_name. False (and nothing
 * left on disk) when the input does not follow the layout. */
static bool fuzz_files_write(fuzz_files *f, const char *first_name, const uint8_t *data, size_t size)
{
    memset(f, 0, sizeof *f);
    fuzz_scratch_dir(f->dir, sizeof f->dir);
    const size_t sl = strlen(FUZZ_SEP);
    const char *name = first_name;
    size_t name_len = strlen(first_name);
    const uint8_t *p = data, *end = data + size;
    for (;;) {
        const uint8_t *sep = fuzz_find(p, (size_t)(end - p), FUZZ_SEP, sl);
        const uint8_t *stop = sep ? sep : end;
        if (!fuzz_write_file(f, name, name_len, p, (size_t)(stop - p))) {
            fuzz_files_remove(f);
            return false;
        }
        if (!sep)
            return true;
        const uint8_t *nm = sep + sl;
        const uint8_t *nl = memchr(nm, '\n', (size_t)(end - nm));
        if (!nl) {
            fuzz_files_remove(f);
            return false;
        }
        name = (const char *)nm;
        name_len = (size_t)(nl - nm);
        p = nl + 1;
    }
}

/* The whole harness of a multi-file set opened by its first file (an index
 * or a manifest naming the others): write, open, check, remove. */
static inline void fuzz_open_set(const char *first_name, const uint8_t *data, size_t size)
{
    fuzz_files f;
    if (!fuzz_files_write(&f, first_name, data, size))
        return;
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_model_open(&m, f.path[0], NULL, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    fuzz_files_remove(&f);
}

#endif
