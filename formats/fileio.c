/* fileio.c - mmap, atomic output files, sha256 (OpenSSL EVP) and CRC32 (zlib). */
#include "formats.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int apr_map_file(const char *path, apr_mapping *out, apr_err *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return apr_err_set(err, APR_E_IO, "%s: not a regular file", path);
    }
    out->size = (uint64_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return apr_err_set(err, APR_E_IO, "%s: mmap: %s", path, strerror(e));
        }
        out->base = p;
    }
    close(fd);
    return 0;
}

void apr_unmap_file(apr_mapping *m)
{
    if (m->base && m->size)
        munmap((void *)m->base, m->size);
    m->base = NULL;
    m->size = 0;
}

bool apr_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---------------------------------------------------------------- atomic output */

int apr_outfile_open(apr_outfile *f, const char *path, apr_err *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path);
    f->final_path = strdup(path);
    f->tmp_path = malloc(n + 16);
    if (!f->final_path || !f->tmp_path) {
        apr_outfile_abort(f);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    /* The temporary file lives in the destination directory so that the final
     * rename is atomic (same filesystem). */
    snprintf(f->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    f->fd = mkstemp(f->tmp_path);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        apr_outfile_abort(f);
        return apr_err_set(err, APR_E_IO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    fchmod(f->fd, 0644);
    return 0;
}

int apr_outfile_write(apr_outfile *f, const void *data, size_t n, apr_err *err)
{
    const uint8_t *p = data;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(f->fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return apr_err_set(err, APR_E_IO, "%s: write: %s", f->final_path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
        f->written += (uint64_t)w;
    }
    return 0;
}

int apr_outfile_pad(apr_outfile *f, uint64_t align, apr_err *err)
{
    static const uint8_t zeros[256];
    if (align == 0)
        return 0;
    uint64_t pad = (align - f->written % align) % align;
    while (pad > 0) {
        size_t c = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        int rc = apr_outfile_write(f, zeros, c, err);
        if (rc)
            return rc;
        pad -= c;
    }
    return 0;
}

int apr_outfile_commit(apr_outfile *f, apr_err *err)
{
    int rc = 0;
    if (fsync(f->fd) != 0 && errno != EINVAL)
        rc = apr_err_set(err, APR_E_IO, "%s: fsync: %s", f->final_path, strerror(errno));
    if (close(f->fd) != 0 && !rc)
        rc = apr_err_set(err, APR_E_IO, "%s: close: %s", f->final_path, strerror(errno));
    f->fd = -1;
    if (!rc && rename(f->tmp_path, f->final_path) != 0)
        rc = apr_err_set(err, APR_E_IO, "%s: rename: %s", f->final_path, strerror(errno));
    if (rc)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
    return rc;
}

void apr_outfile_abort(apr_outfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
    f->fd = -1;
}

/* ---------------------------------------------------------------- sha256 */

struct apr_sha256_ctx {
    EVP_MD_CTX *md;
};

apr_sha256_ctx *apr_sha256_new(void)
{
    apr_sha256_ctx *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void apr_sha256_update(apr_sha256_ctx *c, const void *data, size_t n)
{
    EVP_DigestUpdate(c->md, data, n);
}

void apr_sha256_final(apr_sha256_ctx *c, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_DigestFinal_ex(c->md, out, &len);
    EVP_MD_CTX_free(c->md);
    free(c);
}

void apr_sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
}

void apr_sha256_hex(const uint8_t d[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = 0;
}

int apr_sha256_file(const char *path, uint8_t out[32], apr_err *err)
{
    apr_mapping m;
    int rc = apr_map_file(path, &m, err);
    if (rc)
        return rc;
    apr_sha256_ctx *c = apr_sha256_new();
    if (!c) {
        apr_unmap_file(&m);
        return apr_err_set(err, APR_E_NOMEM, "sha256: out of memory");
    }
    /* Sequential access hint: the kernel reads ahead, hashing stays at memory speed. */
    if (m.size)
        madvise((void *)m.base, m.size, MADV_SEQUENTIAL);
    const uint64_t chunk = 16u << 20;
    for (uint64_t off = 0; off < m.size; off += chunk) {
        uint64_t n = m.size - off < chunk ? m.size - off : chunk;
        apr_sha256_update(c, m.base + off, (size_t)n);
    }
    apr_sha256_final(c, out);
    apr_unmap_file(&m);
    return 0;
}

uint32_t apr_crc32(uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        uInt c = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, c);
        p += c;
        n -= c;
    }
    return crc;
}
