/* fault_hook.c - fault injection for the apr_fault test binary, as SQLite's
 * test builds do it: the N-th allocation or I/O call made by apr's own code
 * fails, so that every out-of-memory and write-failure branch can be driven.
 *
 * Compiled only into apr_fault (tests/CMakeLists.txt), which is the apr CLI
 * linked with -Wl,--wrap=SYMBOL for every symbol below: the linker sends the
 * calls that apr's objects make to __wrap_SYMBOL, and __real_SYMBOL is the C
 * library's. Calls made inside the C library, OpenSSL, zlib or jansson are
 * not counted (they are not ours to handle), except jansson's allocations:
 * apr gives jansson an allocator of its own (formats/util/json_util.c) whose
 * malloc is wrapped like every other.
 * The production apr binary has no hook and no wrapping.
 *
 * Environment:
 *   APR_FAULT_AT=N       the N-th counted call (1-based) fails; 0 or unset:
 *                        nothing fails, the calls are only counted
 *   APR_FAULT_KINDS=L    which calls count: "alloc" (malloc and friends,
 *                        jansson's allocations too), "io" (the calls below
 *                        that touch files) or both (the default)
 *   APR_FAULT_REPORT=F   at exit, F gets one line "calls C fired K SITE CALLER":
 *                        C calls counted, K the kind that failed ("-" when
 *                        none did), SITE and CALLER the offsets in the
 *                        executable of the failing call and of its caller
 *                        (for addr2line), so that a test knows when N has
 *                        passed the last call and which site it reached
 *   APR_FAULT_TIME=T     time() returns T (seconds since the epoch): the
 *                        provenance record's time, fixed so that outputs
 *                        compare byte for byte (not a fault)
 *   APR_FAULT_TRACE=F    F gets one line per counted call, "N KIND SITE
 *                        CALLER THREAD" (THREAD: main, or worker for a
 *                        thread apr started): how a test picks one N per
 *                        distinct site
 *   APR_FAULT_SITE=S     "KIND SITE CALLER" as the trace writes them: the
 *                        first call of that kind from that call site and
 *                        caller fails, whichever thread makes it (instead of
 *                        APR_FAULT_AT, whose N-th call is a different one
 *                        from run to run once several threads count)
 * Failures look like the real ones: NULL/ENOMEM for allocations, -1 with
 * ENOSPC for writes and space reservation, -1 with EIO otherwise,
 * MAP_FAILED/ENOMEM for mmap, EAGAIN for pthread_create (counted with the
 * allocations: a thread is memory the system could not give). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { KIND_ALLOC = 1, KIND_IO = 2 };

static unsigned long fault_at;     /* 0: never fail */
static time_t fixed_time = -1;    /* APR_FAULT_TIME: what time() returns */
static unsigned kinds = KIND_ALLOC | KIND_IO;
static const char *report_path;
static unsigned long calls;        /* atomic: the converter's threads count too */
static const char *fired_kind = "-";
static uintptr_t fired_site, fired_caller;
static bool fired;                 /* atomic: one call fails, on one thread */
static char site_kind[32];         /* APR_FAULT_SITE: its kind ("" when unset), */
static uintptr_t site_at[2];       /* its call site and caller */

/* The wrappers (called only by the linker's redirection, so declared here). */
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_asprintf(char **out, const char *fmt, ...);
ssize_t __wrap_write(int fd, const void *p, size_t n);
ssize_t __wrap_pwrite(int fd, const void *p, size_t n, off_t off);
ssize_t __wrap_read(int fd, void *p, size_t n);
int __wrap_fsync(int fd);
int __wrap_rename(const char *a, const char *b);
int __wrap_linkat(int fa, const char *a, int fb, const char *b, int flags);
void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off);
int __wrap_open(const char *path, int flags, ...);
int __wrap_openat(int dir, const char *path, int flags, ...);
FILE *__wrap_fopen(const char *path, const char *mode);
int __wrap_mkstemp(char *tmpl);
char *__wrap_mkdtemp(char *tmpl);
int __wrap_mkdir(const char *path, mode_t mode);
int __wrap_posix_fallocate(int fd, off_t off, off_t len);
ssize_t __wrap_copy_file_range(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned flags);
time_t __wrap_time(time_t *t);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* The declarations of the C library's own functions, as --wrap names them. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
ssize_t __real_write(int fd, const void *p, size_t n);
ssize_t __real_pwrite(int fd, const void *p, size_t n, off_t off);
ssize_t __real_read(int fd, void *p, size_t n);
int __real_fsync(int fd);
int __real_rename(const char *a, const char *b);
int __real_linkat(int fa, const char *a, int fb, const char *b, int flags);
void *__real_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off);
int __real_open(const char *path, int flags, ...);
int __real_openat(int dir, const char *path, int flags, ...);
FILE *__real_fopen(const char *path, const char *mode);
int __real_mkstemp(char *tmpl);
char *__real_mkdtemp(char *tmpl);
int __real_mkdir(const char *path, mode_t mode);
time_t __real_time(time_t *t);
int __real_posix_fallocate(int fd, off_t off, off_t len);
ssize_t __real_copy_file_range(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned flags);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* The hook's own code, so that a backtrace can step over it (the linker
 * defines __start_/__stop_ symbols for a section with a C name). */
#define HOOK __attribute__((section("apr_fault_hook"), noinline))
extern const char __start_apr_fault_hook[], __stop_apr_fault_hook[];

static const char *trace_path;
static int trace_fd = -1;
static uintptr_t exe_base;

/* The offsets in the executable of the first two frames outside the hook
 * and outside shared libraries (jansson): the call site and its caller. */
HOOK static void call_site(uintptr_t site[2])
{
    void *frames[24];
    int n = backtrace(frames, 24), k = 0;
    site[0] = site[1] = 0;
    for (int i = 0; i < n && k < 2; i++) {
        const char *pc = frames[i];
        Dl_info info;
        if (pc >= __start_apr_fault_hook && pc < __stop_apr_fault_hook)
            continue;
        if (!dladdr(pc, &info) || (uintptr_t)info.dli_fbase != exe_base)
            continue;
        site[k++] = (uintptr_t)pc - exe_base - 1; /* -1: inside the call instruction */
    }
}

/* With APR_FAULT_TRACE: one line per counted call, "N KIND SITE CALLER THREAD". */
HOOK static void trace(unsigned long k, const char *name, const uintptr_t site[2])
{
    char line[128];
    const char *thread = syscall(SYS_gettid) == getpid() ? "main" : "worker";
    int n = snprintf(line, sizeof line, "%lu %s %#lx %#lx %s\n", k, name, (unsigned long)site[0],
                     (unsigned long)site[1], thread);
    if (n > 0)
        (void)!__real_write(trace_fd, line, (size_t)n);
}

/* True when this call is the one to fail; records where it came from. */
HOOK static bool should_fail(unsigned kind, const char *name)
{
    if (!(kinds & kind))
        return false;
    unsigned long k = __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    bool by_site = site_kind[0] && !strcmp(name, site_kind);
    if (k != fault_at && trace_fd < 0 && !by_site)
        return false;
    uintptr_t site[2];
    call_site(site);
    if (trace_fd >= 0)
        trace(k, name, site);
    if (site_kind[0] ? !by_site || site[0] != site_at[0] || site[1] != site_at[1] : k != fault_at)
        return false;
    bool no = false;
    if (!__atomic_compare_exchange_n(&fired, &no, true, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return false; /* another thread's call at the same site failed first */
    fired_kind = name;
    fired_site = site[0];
    fired_caller = site[1];
    return true;
}

#define FAIL_IF(kind, name, value, err)                                          \
    do {                                                                         \
        if (should_fail(kind, name)) {                                           \
            errno = err;                                                         \
            return value;                                                        \
        }                                                                        \
    } while (0)

static void write_report(void)
{
    if (!report_path)
        return;
    int fd = __real_open(report_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[128];
    int n = snprintf(line, sizeof line, "calls %lu fired %s %#lx %#lx\n", calls, fired_kind,
                     (unsigned long)fired_site, (unsigned long)fired_caller);
    if (n > 0)
        (void)!__real_write(fd, line, (size_t)n);
    close(fd);
}

__attribute__((constructor)) static void fault_init(void)
{
    const char *at = getenv("APR_FAULT_AT");
    fault_at = at ? strtoul(at, NULL, 10) : 0;
    const char *k = getenv("APR_FAULT_KINDS");
    if (k && *k)
        kinds = (strstr(k, "alloc") ? KIND_ALLOC : 0) | (strstr(k, "io") ? KIND_IO : 0);
    report_path = getenv("APR_FAULT_REPORT");
    const char *st = getenv("APR_FAULT_SITE");
    unsigned long a = 0, b = 0;
    if (st && *st && sscanf(st, "%31s %lx %lx", site_kind, &a, &b) == 3) {
        site_at[0] = (uintptr_t)a;
        site_at[1] = (uintptr_t)b;
    } else {
        site_kind[0] = 0;
    }
    const char *tm = getenv("APR_FAULT_TIME");
    if (tm && *tm)
        fixed_time = (time_t)strtoll(tm, NULL, 10);
    Dl_info info;
    if (dladdr((void *)fault_init, &info))
        exe_base = (uintptr_t)info.dli_fbase;
    void *warm[1];
    backtrace(warm, 1); /* loads the unwinder now, not inside a counted call */
    trace_path = getenv("APR_FAULT_TRACE");
    if (trace_path && *trace_path)
        trace_fd = __real_open(trace_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    atexit(write_report);
}

/* ---------------------------------------------------------------- allocation */

HOOK void *__wrap_malloc(size_t n)
{
    FAIL_IF(KIND_ALLOC, "malloc", NULL, ENOMEM);
    return __real_malloc(n);
}

HOOK void *__wrap_calloc(size_t k, size_t n)
{
    FAIL_IF(KIND_ALLOC, "calloc", NULL, ENOMEM);
    return __real_calloc(k, n);
}

HOOK void *__wrap_realloc(void *p, size_t n)
{
    FAIL_IF(KIND_ALLOC, "realloc", NULL, ENOMEM);
    return __real_realloc(p, n);
}

HOOK char *__wrap_strdup(const char *s)
{
    FAIL_IF(KIND_ALLOC, "strdup", NULL, ENOMEM);
    return __real_strdup(s);
}

HOOK char *__wrap_strndup(const char *s, size_t n)
{
    FAIL_IF(KIND_ALLOC, "strndup", NULL, ENOMEM);
    return __real_strndup(s, n);
}

HOOK void *__wrap_aligned_alloc(size_t a, size_t n)
{
    FAIL_IF(KIND_ALLOC, "aligned_alloc", NULL, ENOMEM);
    return __real_aligned_alloc(a, n);
}

HOOK int __wrap_asprintf(char **out, const char *fmt, ...)
{
    FAIL_IF(KIND_ALLOC, "asprintf", -1, ENOMEM);
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(out, fmt, ap);
    va_end(ap);
    return r;
}

/* ---------------------------------------------------------------- I/O */

HOOK ssize_t __wrap_write(int fd, const void *p, size_t n)
{
    FAIL_IF(KIND_IO, "write", -1, ENOSPC);
    return __real_write(fd, p, n);
}

HOOK ssize_t __wrap_pwrite(int fd, const void *p, size_t n, off_t off)
{
    FAIL_IF(KIND_IO, "pwrite", -1, ENOSPC);
    return __real_pwrite(fd, p, n, off);
}

HOOK ssize_t __wrap_read(int fd, void *p, size_t n)
{
    FAIL_IF(KIND_IO, "read", -1, EIO);
    return __real_read(fd, p, n);
}

HOOK int __wrap_fsync(int fd)
{
    FAIL_IF(KIND_IO, "fsync", -1, EIO);
    return __real_fsync(fd);
}

HOOK int __wrap_rename(const char *a, const char *b)
{
    FAIL_IF(KIND_IO, "rename", -1, EIO);
    return __real_rename(a, b);
}

HOOK int __wrap_linkat(int fa, const char *a, int fb, const char *b, int flags)
{
    FAIL_IF(KIND_IO, "linkat", -1, EIO);
    return __real_linkat(fa, a, fb, b, flags);
}

HOOK void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
    FAIL_IF(KIND_IO, "mmap", MAP_FAILED, ENOMEM);
    return __real_mmap(a, n, prot, flags, fd, off);
}

/* open's optional third argument, read only where the flags say it is there. */
#define MODE_ARG(flags, mode)                                                    \
    do {                                                                         \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                                 \
            va_list ap;                                                          \
            va_start(ap, flags);                                                 \
            mode = (mode_t)va_arg(ap, int);                                      \
            va_end(ap);                                                          \
        }                                                                        \
    } while (0)

HOOK int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    FAIL_IF(KIND_IO, "open", -1, EIO);
    return __real_open(path, flags, mode);
}

HOOK int __wrap_openat(int dir, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    FAIL_IF(KIND_IO, "openat", -1, EIO);
    return __real_openat(dir, path, flags, mode);
}

HOOK FILE *__wrap_fopen(const char *path, const char *mode)
{
    FAIL_IF(KIND_IO, "fopen", NULL, EIO);
    return __real_fopen(path, mode);
}

HOOK int __wrap_mkstemp(char *tmpl)
{
    FAIL_IF(KIND_IO, "mkstemp", -1, EIO);
    return __real_mkstemp(tmpl);
}

HOOK char *__wrap_mkdtemp(char *tmpl)
{
    FAIL_IF(KIND_IO, "mkdtemp", NULL, EIO);
    return __real_mkdtemp(tmpl);
}

HOOK int __wrap_mkdir(const char *path, mode_t mode)
{
    FAIL_IF(KIND_IO, "mkdir", -1, EIO);
    return __real_mkdir(path, mode);
}

HOOK int __wrap_posix_fallocate(int fd, off_t off, off_t len)
{
    /* returns the error instead of setting errno */
    if (should_fail(KIND_IO, "posix_fallocate"))
        return ENOSPC;
    return __real_posix_fallocate(fd, off, len);
}

HOOK ssize_t __wrap_copy_file_range(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned flags)
{
    FAIL_IF(KIND_IO, "copy_file_range", -1, EIO);
    return __real_copy_file_range(fi, oi, fo, oo, n, flags);
}

/* ---------------------------------------------------------------- time */

/* The provenance record's time: fixed under APR_FAULT_TIME, so that a run
 * that tolerated a fault can be compared byte for byte with one that had none. */
HOOK time_t __wrap_time(time_t *t)
{
    if (fixed_time < 0)
        return __real_time(t);
    if (t)
        *t = fixed_time;
    return fixed_time;
}

/* ---------------------------------------------------------------- threads */

HOOK int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    /* returns the error instead of setting errno */
    if (should_fail(KIND_ALLOC, "pthread_create"))
        return EAGAIN;
    return __real_pthread_create(th, attr, fn, arg);
}
