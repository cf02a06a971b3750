/* open.c - format sniffing and dispatch to the readers and writers. */
#define _GNU_SOURCE
#include "formats.h"
#include "apr_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

apr_format apr_format_from_path(const char *path)
{
    struct stat st;
    if (ends_with(path, ".gguf"))
        return APR_FMT_GGUF;
    if (ends_with(path, ".apr") || apr_apr_is_manifest_path(path))
        return APR_FMT_APR;
    if (ends_with(path, ".safetensors") || ends_with(path, ".safetensors.index.json"))
        return APR_FMT_SAFETENSORS;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return APR_FMT_SAFETENSORS;
    if (ends_with(path, "/"))
        return APR_FMT_SAFETENSORS;
    return APR_FMT_UNKNOWN;
}

/* The format by name and magic; *io_errno (may be NULL) gets the errno of a
 * stat, open or read that failed (else 0), so that a caller can tell an
 * unreadable file from one that is not a model. */
static apr_format sniff(const char *path, int *io_errno)
{
    int dummy;
    int *e = io_errno ? io_errno : &dummy;
    *e = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        *e = errno;
        return APR_FMT_UNKNOWN;
    }
    if (S_ISDIR(st.st_mode))
        return APR_FMT_SAFETENSORS;
    if (apr_apr_is_manifest_path(path))
        return APR_FMT_APR;
    if (ends_with(path, ".json"))
        return APR_FMT_SAFETENSORS;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *e = errno;
        return APR_FMT_UNKNOWN;
    }
    uint8_t b[16] = {0};
    ssize_t n = read(fd, b, sizeof b);
    if (n < 0)
        *e = errno;
    close(fd);
    if (n >= 4 && memcmp(b, "GGUF", 4) == 0)
        return APR_FMT_GGUF;
    if (n >= 4 && memcmp(b, "APR\0", 4) == 0)
        return APR_FMT_APR;
    /* safetensors: u64 header length then '{' */
    if (n >= 9 && b[8] == '{')
        return APR_FMT_SAFETENSORS;
    return APR_FMT_UNKNOWN;
}

apr_format apr_format_sniff(const char *path)
{
    return sniff(path, NULL);
}

/* "*-00001-of-*.gguf": the first split of a split GGUF */
static bool is_first_gguf_split(const char *name)
{
    const char *p = strstr(name, "-00001-of-");
    return p && strcmp(p + 15, ".gguf") == 0;
}

/* The one file of dir whose name matches (malloc'd path); NULL when there is
 * none. Two matches: *ambiguous. */
static char *one_file_in_dir(const char *dir, bool (*match)(const char *name), bool *ambiguous)
{
    *ambiguous = false;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char *found = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !match(e->d_name))
            continue;
        if (found) {
            *ambiguous = true;
            break;
        }
        if (asprintf(&found, "%s/%s", dir, e->d_name) < 0)
            found = NULL;
    }
    closedir(d);
    return found;
}

int apr_model_open(apr_model **out, const char *path, const apr_open_opts *opts, apr_err *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        /* OUT.apr as given to `--shard-mb`: no such file, but its shards'
         * manifest OUT.apr.manifest.json names the set */
        char *manifest = NULL;
        if (ends_with(path, ".apr") && asprintf(&manifest, "%s.manifest.json", path) >= 0 &&
            stat(manifest, &st) == 0 && S_ISREG(st.st_mode)) {
            int rc = apr_apr_open(out, manifest, opts, err);
            free(manifest);
            return rc;
        }
        free(manifest);
        return apr_err_set(err, APR_E_IO, "%s: no such file or directory", path);
    }
    if (S_ISDIR(st.st_mode)) {
        /* a directory: a split GGUF in it (llama.cpp's names), else HF safetensors */
        bool ambiguous;
        char *first = one_file_in_dir(path, is_first_gguf_split, &ambiguous);
        if (ambiguous) {
            free(first);
            return apr_err_set(err, APR_E_ARG, "%s holds more than one split GGUF; name the first split", path);
        }
        if (first) {
            int rc = apr_gguf_open(out, first, err);
            free(first);
            return rc;
        }
        /* or a sharded APR set (its manifest) */
        char *manifest = one_file_in_dir(path, apr_apr_is_manifest_path, &ambiguous);
        if (ambiguous) {
            free(manifest);
            return apr_err_set(err, APR_E_ARG, "%s holds more than one APR shard manifest; name one", path);
        }
        if (manifest) {
            int rc = apr_apr_open(out, manifest, opts, err);
            free(manifest);
            return rc;
        }
    }
    int io_errno;
    switch (sniff(path, &io_errno)) {
    case APR_FMT_GGUF: return apr_gguf_open(out, path, err);
    case APR_FMT_APR: return apr_apr_open(out, path, opts, err);
    case APR_FMT_SAFETENSORS: return apr_safetensors_open(out, path, err);
    default:
        if (io_errno)
            return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(io_errno));
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: not a GGUF, APR or safetensors file (unrecognised magic)", path);
    }
}

int apr_model_write(const apr_model *m, const char *path, apr_format fmt, const apr_write_opts *o,
                    apr_err *err)
{
    switch (fmt) {
    case APR_FMT_GGUF: return apr_gguf_write(m, path, o, err);
    case APR_FMT_APR: return apr_apr_write(m, path, o, err);
    case APR_FMT_SAFETENSORS: return apr_safetensors_write(m, path, o, err);
    default:
        return apr_err_set(err, APR_E_ARG, "%s: cannot tell the output format (use .gguf, .apr or .safetensors)", path);
    }
}

int apr_open_mapped(apr_model **out, const char *path, apr_format fmt, bool check_footer, apr_err *err)
{
    *out = NULL;
    apr_mapping map;
    int rc = apr_map_file(path, &map, err);
    if (rc)
        return rc;
    apr_model *m = NULL;
    rc = fmt == APR_FMT_APR ? apr_apr_parse(&m, map.base, map.size, check_footer, err)
                            : apr_gguf_parse(&m, map.base, map.size, err);
    if (rc) {
        apr_unmap_file(&map);
        if (err) {
            char tmp[sizeof err->msg];
            memcpy(tmp, err->msg, sizeof tmp);
            apr_err_set(err, rc, "%s: %.900s", path, tmp);
        }
        return rc;
    }
    m->maps = calloc(1, sizeof *m->maps);
    m->path = strdup(path);
    if (!m->maps || !m->path || !(map.path = strdup(path))) {
        apr_unmap_file(&map);
        apr_model_free(m); /* frees maps and path; n_maps is still 0 */
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    m->maps[0] = map;
    m->n_maps = 1;
    *out = m;
    return 0;
}
