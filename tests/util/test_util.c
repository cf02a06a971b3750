/* test_util.c - helpers shared by the cmocka tests. */
#define _GNU_SOURCE
#include "test_util.h"

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const need_names[] = {
    [TU_NEED_SHARED] = "a file in ../shared",
    [TU_NEED_PEER] = "a peer package scripts/deps.sh --python installs",
    [TU_NEED_LLAMA_SRC] = "llama.cpp's source (scripts/deps.sh --python)",
    [TU_NEED_HARNESS] = "the environment ctest sets",
    [TU_NEED_GPU] = "a CUDA GPU",
};

/* Skips taken in this executable (whole tests and parts): tu_exit_status turns
 * a run with skips and no failures into ctest's "skipped". */
static int skips_taken;

int tu_strict(void)
{
    const char *s = getenv("APR_TEST_STRICT");
    return s && *s && strcmp(s, "0") != 0;
}

static int strict_applies(tu_need why)
{
    return why != TU_NEED_GPU && tu_strict();
}

void tu_skip_or_fail(tu_need why, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (strict_applies(why))
        fail_msg("STRICT: %s (needs %s; APR_TEST_STRICT=1 turns this skip into a failure)", msg, need_names[why]);
    print_message("SKIP: %s\n", msg);
    skips_taken++;
    skip();
    abort(); /* skip() longjmps out of the test; never reached */
}

int tu_part_or_fail(int available, tu_need why, const char *fmt, ...)
{
    if (available)
        return 1;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (strict_applies(why))
        fail_msg("STRICT: %s (needs %s; APR_TEST_STRICT=1 turns this skip into a failure)", msg, need_names[why]);
    print_message("SKIP (part): %s\n", msg);
    skips_taken++;
    return 0;
}

const char *tu_shared_part(const char *rel)
{
    const char *p = tu_shared(rel);
    tu_part_or_fail(p != NULL, TU_NEED_SHARED, "../shared/%s is absent, that part is left out", rel);
    return p;
}

int tu_apply_filters(void)
{
    const char *run = getenv("TU_TEST_FILTER"), *skip = getenv("TU_SKIP_FILTER");
    if (run && *run)
        cmocka_set_test_filter(run);
    if (skip && *skip)
        cmocka_set_skip_filter(skip);
    return 0;
}

int tu_exit_status(int failures)
{
    if (failures) /* 1, not the count: 77 failures must not read as a skip */
        return 1;
    if (skips_taken) {
        fprintf(stderr, "SKIP: %d test(s) or part(s) skipped (exit 77: ctest reports this executable as skipped)\n",
                skips_taken);
        return 77;
    }
    return 0;
}

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

/* The directories tu_tmpdir made: removed when the test process exits (a
 * ctest run makes thousands; left alone they fill the disk), kept when
 * APR_KEEP_TMP is set, for looking at what a failing test wrote. */
static char **tmpdirs;
static size_t n_tmpdirs;

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

/* tests make read-only directories (outputs that cannot be written): open
 * them first, so that the removal sees their entries */
static int open_dir(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_D || type == FTW_DNR)
        chmod(path, (st->st_mode & 07777) | S_IRWXU);
    return 0;
}

static void remove_tmpdirs(void)
{
    for (size_t i = 0; i < n_tmpdirs; i++) {
        nftw(tmpdirs[i], open_dir, 16, FTW_PHYS);
        nftw(tmpdirs[i], remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(tmpdirs[i]);
    }
    free(tmpdirs);
    tmpdirs = NULL;
    n_tmpdirs = 0;
}

static void remember_tmpdir(const char *dir)
{
    const char *keep = getenv("APR_KEEP_TMP");
    if (keep && *keep && strcmp(keep, "0") != 0)
        return;
    char **grown = realloc(tmpdirs, (n_tmpdirs + 1) * sizeof *grown);
    char *copy = strdup(dir);
    if (!grown || !copy) {
        free(copy);
        if (grown)
            tmpdirs = grown;
        return; /* out of memory in a test helper: the directory stays */
    }
    tmpdirs = grown;
    if (n_tmpdirs == 0)
        atexit(remove_tmpdirs);
    tmpdirs[n_tmpdirs++] = copy;
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
    remember_tmpdir(p);
    return p;
}

const char *tu_apr_bin(void)
{
    const char *b = getenv("APR_BIN");
    return b && *b ? b : NULL;
}

int tu_bin_dir(char *dir, size_t n, const char *tag)
{
    if (!tu_apr_bin())
        return 1;
    const char *d = tu_tmpdir(tag);
    if (!d)
        return -1;
    snprintf(dir, n, "%s", d);
    return 0;
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

void tu_assert_kv_equal(const apr_kv *a, const apr_kv *b)
{
    assert_string_equal(a->key, b->key);
    assert_int_equal(a->type, b->type);
    if (a->type == APR_KV_STRING) {
        assert_int_equal(a->str.len, b->str.len);
        assert_memory_equal(a->str.s, b->str.s, a->str.len + 1);
    } else if (a->type == APR_KV_ARRAY) {
        assert_int_equal(a->arr_type, b->arr_type);
        assert_int_equal(a->count, b->count);
        if (a->arr_type == APR_KV_STRING) {
            const apr_str *x = a->arr, *y = b->arr;
            for (uint64_t i = 0; i < a->count; i++) {
                assert_int_equal(x[i].len, y[i].len);
                assert_memory_equal(x[i].s, y[i].s, x[i].len + 1);
            }
        } else if (a->count) {
            assert_memory_equal(a->arr, b->arr, a->count * apr_kv_type_size(a->arr_type));
        }
    } else {
        assert_memory_equal(&a->v, &b->v, apr_kv_type_size(a->type)); /* bit-exact */
    }
}

void tu_assert_models_equal(const apr_model *a, const apr_model *b)
{
    assert_int_equal(a->n_kvs, b->n_kvs);
    for (uint64_t i = 0; i < a->n_kvs; i++)
        tu_assert_kv_equal(&a->kvs[i], &b->kvs[i]);
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) { /* same order too */
        const apr_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        assert_memory_equal(x->dims, y->dims, x->ndim * sizeof x->dims[0]);
        assert_int_equal(x->nbytes, y->nbytes);
        assert_memory_equal(x->data, y->data, x->nbytes);
        assert_int_equal(x->n_parts, y->n_parts);
        for (uint32_t p = 0; p < x->n_parts; p++) {
            assert_int_equal(x->parts[p].dtype, y->parts[p].dtype);
            assert_int_equal(x->parts[p].rows, y->parts[p].rows);
            assert_int_equal(x->parts[p].nbytes, y->parts[p].nbytes);
        }
    }
}

char *tu_fixture_greedy_text(void)
{
    const char *readme = tu_shared("fixtures/README.md");
    if (!readme)
        return NULL;
    char *s = tu_read_file(readme, NULL);
    assert_non_null(s);
    char *p = strstr(s, "continues \"");
    assert_non_null(p);
    p += strlen("continues \"");
    char *q = strchr(p, '"');
    assert_non_null(q);
    char *out = calloc((size_t)(q - p) + 1, 1);
    size_t n = 0;
    for (char *c = p; c < q; c++) {
        if (*c == '\n') {
            while (c + 1 < q && isspace((unsigned char)c[1]))
                c++;
            out[n++] = ' ';
        } else {
            out[n++] = *c;
        }
    }
    free(s);
    return out;
}

void tu_require_python(const char *modules, const char *pip)
{
    if (tu_system("/dev/null", "python3 -c 'import %s'", modules) != 0)
        tu_skip_or_fail(TU_NEED_PEER, "the Python package(s) %s are not importable (pip install %s)", modules, pip);
}

const char *tu_llama_cpp_src(void)
{
    static char path[4096];
    const char *env = getenv("APR_LLAMA_CPP_SRC");
    const char *home = getenv("HOME");
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else if (home && *home)
        snprintf(path, sizeof path, "%s/.cache/apr-peer/llama.cpp", home);
    else
        return NULL;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/convert_hf_to_gguf.py", path);
    return access(probe, R_OK) == 0 ? path : NULL;
}

const char *tu_require_llama_cpp_src(void)
{
    const char *src = tu_llama_cpp_src();
    if (!src)
        tu_skip_or_fail(TU_NEED_LLAMA_SRC, "llama.cpp's source (llama-cpp-python's sdist) is absent: "
                                           "run scripts/deps.sh --python or set APR_LLAMA_CPP_SRC");
    return src;
}

int tu_run_peer(const char *tag, const char *script, const char *args)
{
    const char *src = getenv("APR_SOURCE_DIR");
    const char *dir = tu_tmpdir(tag);
    if (!dir)
        return -1;
    char out[4096];
    snprintf(out, sizeof out, "%s/peer.out", dir);
    int rc = tu_system(out, "python3 '%s/tests/peer/%s' %s", src && *src ? src : ".", script, args);
    char *log = tu_read_file(out, NULL);
    print_message("%s", log ? log : "");
    free(log);
    if (rc == 77)
        tu_skip_or_fail(TU_NEED_PEER, "%s: a peer package is missing (its SKIP line is above)", script);
    return rc;
}

void tu_tinycoder_peer(const char *tag, const char *script, const char *modules, const char *pip)
{
    TU_REQUIRE_SHARED(tok, "fixtures/tinycoder/tokenizer.json");
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *src = tu_require_llama_cpp_src();
    tu_require_python(modules, pip);
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s", tok);
    *strrchr(tiny, '/') = 0;
    char work_tag[256];
    snprintf(work_tag, sizeof work_tag, "%s-work", tag);
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s' '%s/work'", bin, src, tiny, tu_tmpdir(work_tag));
    int rc = tu_run_peer(tag, script, args);
    if (rc != 0)
        fail_msg("%s failed (%d)", script, rc);
}
