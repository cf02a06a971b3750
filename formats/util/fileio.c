/* fileio.c - mmap, atomic output files, sha256 (OpenSSL EVP) and CRC32 (zlib). */
#define _GNU_SOURCE /* sync_file_range */
#include "formats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ---------------------------------------------------------------- live mappings
 *
 * Every file mapped with apr_map_file (read-only) or apr_map_scratch (shared,
 * read-write) stays registered, with an open descriptor, until
 * apr_unmap_file. Dropping resident pages of either kind loses nothing: they
 * come back from the page cache (or the file). A writer handed bytes that lie inside one
 * of them lets the kernel copy file to file (copy_file_range: no page faults
 * on the source mapping and no copy through user space; a reflink where the
 * filesystem has them) instead of write()ing them from the mapping. Measured
 * on a 768 MiB copy: half the CPU of write() from the mapping. */

typedef struct live_map {
    const uint8_t *base;
    uint64_t size;
    int fd;
} live_map;

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static live_map *live;
static size_t n_live, cap_live;

static void live_add(const uint8_t *base, uint64_t size, int fd)
{
    pthread_mutex_lock(&live_mu);
    if (n_live == cap_live) {
        size_t nc = cap_live ? 2 * cap_live : 16;
        live_map *nl = realloc(live, nc * sizeof *nl);
        if (!nl) { /* not fatal: the bytes are written from the mapping */
            pthread_mutex_unlock(&live_mu);
            close(fd);
            return;
        }
        live = nl;
        cap_live = nc;
    }
    live[n_live++] = (live_map){base, size, fd};
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(const uint8_t *base)
{
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < n_live; i++)
        if (live[i].base == base) {
            close(live[i].fd);
            live[i] = live[--n_live];
            break;
        }
    if (n_live == 0) {
        free(live);
        live = NULL;
        cap_live = 0;
    }
    pthread_mutex_unlock(&live_mu);
}

/* The live mapping [p, p+n) lies inside, or NULL; call with live_mu held. */
static const live_map *live_containing(const void *p, size_t n)
{
    const uint8_t *q = p;
    for (size_t i = 0; i < n_live; i++)
        if (q >= live[i].base && (uint64_t)(q - live[i].base) <= live[i].size &&
            n <= live[i].size - (uint64_t)(q - live[i].base))
            return &live[i];
    return NULL;
}

/* The descriptor and offset of [p, p+n) when it lies inside a live mapping:
 * a dup of the descriptor (so an unmap on another thread cannot close it
 * under us), or -1. */
static int live_find(const void *p, size_t n, off_t *off)
{
    int fd = -1;
    pthread_mutex_lock(&live_mu);
    const live_map *lm = live_containing(p, n);
    if (lm) {
        *off = (off_t)((const uint8_t *)p - lm->base);
        fd = fcntl(lm->fd, F_DUPFD_CLOEXEC, 0);
    }
    pthread_mutex_unlock(&live_mu);
    return fd;
}

void apr_map_release(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b <= a)
        return;
    pthread_mutex_lock(&live_mu); /* held across madvise: an unmap waits for it */
    if (live_containing(p, n))
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
    pthread_mutex_unlock(&live_mu);
}

double apr_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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
    if (out->size == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return apr_err_set(err, APR_E_IO, "%s: mmap: %s", path, strerror(e));
    }
    out->base = p;
    live_add(out->base, out->size, fd); /* keeps (or closes) fd */
    return 0;
}

int apr_map_scratch(const char *dir, uint64_t size, apr_mapping *out, apr_err *err)
{
    memset(out, 0, sizeof *out);
    if (size == 0 || size > (uint64_t)SIZE_MAX)
        return apr_err_set(err, APR_E_ARG, "scratch mapping of %llu bytes", (unsigned long long)size);
    char path[4096];
    snprintf(path, sizeof path, "%s/.apr-scratch-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return apr_err_set(err, APR_E_IO, "%s: cannot create a scratch file: %s", dir, strerror(errno));
    unlink(path); /* nothing to clean up, whatever happens next */
    int e = posix_fallocate(fd, 0, (off_t)size);
    if (e) {
        close(fd);
        return apr_err_set(err, APR_E_IO, "%s: cannot reserve %llu bytes of scratch space: %s", dir,
                           (unsigned long long)size, strerror(e));
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        e = errno;
        close(fd);
        return apr_err_set(err, APR_E_IO, "scratch mapping of %llu bytes: %s", (unsigned long long)size,
                           strerror(e));
    }
    out->base = p;
    out->size = size;
    live_add(out->base, out->size, fd);
    return 0;
}

void apr_unmap_file(apr_mapping *m)
{
    if (m->base && m->size) {
        live_remove(m->base); /* before munmap: the address range may be reused */
        munmap((void *)m->base, m->size);
    }
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

/* ---------------------------------------------------------------- atomic output
 *
 * Nothing left behind: the output is an unnamed O_TMPFILE inode in the
 * destination directory (same filesystem, so linking it into place is atomic)
 * until commit gives it the final name; a kill -9 before that leaves nothing.
 * Where the filesystem has no O_TMPFILE (EOPNOTSUPP, EISDIR, EINVAL on old
 * kernels and some network filesystems) the temporary has a name that says
 * whose it is, .NAME.apr-COMMAND.PID.tmp, and is flock'ed while this process
 * writes it, so a later run can tell a stale one (process gone, no lock) from
 * one in use and remove it. */

static char out_command[32] = "apr";

void apr_outfile_set_command(const char *cmd)
{
    snprintf(out_command, sizeof out_command, "%s", cmd && *cmd ? cmd : "apr");
}

/* The directory part of path ("." when it has none); malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* A temporary's name: ".<base>.apr-<command>.<pid>.tmp". Returns the pid, or
 * 0 when name is not one of ours. */
static long stale_pid(const char *name)
{
    size_t n = strlen(name);
    if (n < 10 || name[0] != '.' || strcmp(name + n - 4, ".tmp") != 0)
        return 0;
    const char *apr = strstr(name, ".apr-");
    if (!apr || apr == name)
        return 0;
    const char *dot = name + n - 4; /* ".tmp" */
    const char *p = dot;
    while (p > apr && p[-1] >= '0' && p[-1] <= '9')
        p--;
    if (p == dot || p[-1] != '.' || p - 1 <= apr + 5)
        return 0;
    return strtol(p, NULL, 10);
}

static bool process_gone(long pid)
{
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int apr_outfile_clean_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long pid = stale_pid(e->d_name);
        if (pid <= 0 || pid == (long)getpid() || !process_gone(pid))
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        struct stat st;
        /* a regular file of ours that no process holds: its writer is gone */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dirfd(d), e->d_name, 0) == 0) {
            fprintf(stderr, "apr: removed %s/%s, a temporary left by process %ld (gone) - %llu bytes\n", dir,
                    e->d_name, pid, (unsigned long long)st.st_size);
            removed++;
        }
        close(fd);
    }
    closedir(d);
    return removed;
}

/* The temporary's name beside final_path (see apr_outfile); malloc'd. */
static char *temporary_name(const char *final_path)
{
    char *dir = dir_of(final_path);
    const char *slash = strrchr(final_path, '/');
    const char *base = slash ? slash + 1 : final_path;
    size_t n = (dir ? strlen(dir) : 0) + strlen(base) + strlen(out_command) + 48;
    char *name = dir ? malloc(n) : NULL;
    if (name)
        snprintf(name, n, "%s/.%s.apr-%s.%ld.tmp", dir, base, out_command, (long)getpid());
    free(dir);
    return name;
}

/* The named fallback, created exclusively and locked while it lives. */
static int open_named_temporary(apr_outfile *f, apr_err *err)
{
    f->tmp_path = temporary_name(f->final_path);
    if (!f->tmp_path)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    f->fd = open(f->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        return apr_err_set(err, APR_E_IO, "%s: cannot create temporary file: %s", f->final_path, strerror(e));
    }
    (void)flock(f->fd, LOCK_EX); /* "in use", for apr_outfile_clean_stale */
    return 0;
}

/* O_TMPFILE needs the kernel and filesystem to support it, and linking it into
 * place needs /proc (linkat with AT_EMPTY_PATH would need a capability).
 * APR_OUTFILE_NAMED=1 takes the named path anyway: how tests/no_leftovers.sh
 * checks it on a filesystem that has O_TMPFILE. */
static bool unnamed_usable(void)
{
    const char *named = getenv("APR_OUTFILE_NAMED");
    if (named && *named && strcmp(named, "0") != 0)
        return false;
    return access("/proc/self/fd", X_OK) == 0;
}

int apr_outfile_open(apr_outfile *f, const char *path, apr_err *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->final_path = strdup(path);
    char *dir = dir_of(path);
    if (!f->final_path || !dir) {
        free(dir);
        apr_outfile_abort(f);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    apr_outfile_clean_stale(dir);
    int rc = 0;
    f->fd = unnamed_usable() ? open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644) : -1;
    if (f->fd >= 0)
        (void)flock(f->fd, LOCK_EX); /* holds the name link_unnamed may give it */
    else if (!unnamed_usable() || errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
        rc = open_named_temporary(f, err);
    else
        rc = apr_err_set(err, APR_E_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
    free(dir);
    if (rc)
        apr_outfile_abort(f);
    return rc;
}

/* Dirty page-cache pages are handed to writeback every OUT_KICK bytes instead
 * of all at once by the final fsync. A multi-GB output otherwise piles up as
 * dirty memory until the kernel throttles the writer, and the fsync then
 * waits for all of it; starting writeback early lets the disk work while we
 * hash and copy (measured: the same 768 MiB copy + fsync went from 0.9-1.5 s
 * to 0.4-0.65 s). Not the data durability point: commit's fsync still is. */
#define OUT_KICK (8u << 20)

static void kick_writeback(apr_outfile *f)
{
#ifdef SYNC_FILE_RANGE_WRITE
    if (f->written - f->kicked >= OUT_KICK) {
        /* advisory: a filesystem without it (EINVAL, ESPIPE) just keeps
         * everything for the final fsync */
        (void)sync_file_range(f->fd, (off_t)f->kicked, (off_t)(f->written - f->kicked), SYNC_FILE_RANGE_WRITE);
        f->kicked = f->written;
    }
#else
    (void)f;
#endif
}

/* Kernel copy of n bytes at src_fd:off to the end of f; returns how many
 * were copied before the kernel declined (cross-filesystem on old kernels,
 * special files) so the caller writes the rest itself. */
static size_t copy_range(apr_outfile *f, int src_fd, off_t off, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done > OUT_KICK ? OUT_KICK : n - done;
        ssize_t w = copy_file_range(src_fd, &off, f->fd, NULL, chunk, 0);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
        f->written += (uint64_t)w;
        kick_writeback(f);
    }
    return done;
}

int apr_outfile_write(apr_outfile *f, const void *data, size_t n, apr_err *err)
{
    const uint8_t *p = data;
    off_t off;
    /* hashed output goes through write(), 8 MiB at a time, each piece hashed
     * while its pages are resident (no kernel copy: the bytes must be read) */
    int src_fd = n >= OUT_KICK && !f->sha ? live_find(data, n, &off) : -1;
    if (src_fd >= 0) {
        size_t done = copy_range(f, src_fd, off, n);
        close(src_fd);
        apr_map_release(p, done); /* pages a caller read first (a CRC) */
        p += done;
        n -= done;
    }
    while (n > 0) {
        size_t chunk = n > OUT_KICK ? OUT_KICK : n;
        ssize_t w = write(f->fd, p, chunk);
        if (w > 0 && f->sha)
            apr_sha256_update(f->sha, p, (size_t)w);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return apr_err_set(err, APR_E_IO, "%s: write: %s", f->final_path, strerror(errno));
        }
        apr_map_release(p, (size_t)w); /* no-op unless p is in a file mapping */
        p += w;
        n -= (size_t)w;
        f->written += (uint64_t)w;
        kick_writeback(f);
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

/* Gives the unnamed file its final name: a link where nothing is in the way
 * (*direct set); else a link under the temporary's name, which commit then
 * renames over the old file (that stays whole until the rename replaces it). */
static int link_unnamed(apr_outfile *f, bool *direct, apr_err *err)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", f->fd);
    *direct = linkat(AT_FDCWD, proc, AT_FDCWD, f->final_path, AT_SYMLINK_FOLLOW) == 0;
    if (*direct)
        return 0;
    if (errno != EEXIST)
        return apr_err_set(err, APR_E_IO, "%s: link: %s", f->final_path, strerror(errno));
    f->tmp_path = temporary_name(f->final_path);
    if (!f->tmp_path)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    unlink(f->tmp_path); /* our own pid's name: a leftover of an earlier process */
    if (linkat(AT_FDCWD, proc, AT_FDCWD, f->tmp_path, AT_SYMLINK_FOLLOW) != 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        return apr_err_set(err, APR_E_IO, "%s: link: %s", f->final_path, strerror(e));
    }
    return 0;
}

int apr_outfile_commit(apr_outfile *f, apr_err *err)
{
    int rc = 0;
    bool direct = false;
    if (fsync(f->fd) != 0 && errno != EINVAL)
        rc = apr_err_set(err, APR_E_IO, "%s: fsync: %s", f->final_path, strerror(errno));
    if (!rc && !f->tmp_path)
        rc = link_unnamed(f, &direct, err);
    if (close(f->fd) != 0 && !rc)
        rc = apr_err_set(err, APR_E_IO, "%s: close: %s", f->final_path, strerror(errno));
    f->fd = -1;
    if (!rc && !direct && rename(f->tmp_path, f->final_path) != 0)
        rc = apr_err_set(err, APR_E_IO, "%s: rename: %s", f->final_path, strerror(errno));
    if (rc && direct) /* nothing was there before: leave nothing */
        unlink(f->final_path);
    if (rc && f->tmp_path)
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

/* A region of a mapped file is hashed in chunks, each released after it is
 * hashed, so hashing a model leaves no resident pages behind. */
void apr_sha256(const void *data, size_t n, uint8_t out[32])
{
    const size_t chunk = 8u << 20;
    apr_sha256_ctx *c = n > chunk ? apr_sha256_new() : NULL;
    if (!c) {
        unsigned int len = 32;
        EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
        apr_map_release(data, n);
        return;
    }
    const uint8_t *p = data;
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        apr_sha256_update(c, p + off, k);
        apr_map_release(p + off, k);
    }
    apr_sha256_final(c, out);
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
    /* Sequential access hint: the kernel reads ahead, hashing stays at memory speed. */
    if (m.size)
        madvise((void *)m.base, m.size, MADV_SEQUENTIAL);
    apr_sha256(m.base, (size_t)m.size, out);
    apr_unmap_file(&m);
    return 0;
}

#ifdef APR_HAVE_ISAL
#include <isa-l/crc.h>
/* ISA-L's crc32_gzip_refl is zlib's crc32 (same polynomial, reflection,
 * pre/post inversion and chaining), with PCLMUL/AVX-512 folding. */
uint32_t apr_crc32(uint32_t crc, const void *data, size_t n)
{
    return crc32_gzip_refl(crc, data, (uint64_t)n);
}
#else
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
#endif
