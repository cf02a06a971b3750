/* stream.c - what the three writers share to write a model in one pass:
 * each tensor's payload once, in file order, either from its data pointer
 * (a mapping: the kernel copies it) or made by the caller's producer into
 * one reused buffer, hashed on the way when the provenance record expects
 * the writer's digest; then the record's digests are sealed into the
 * metadata already written, in place, in the still-open temporary file. */
#define _GNU_SOURCE
#include "apr_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int apr_stream_check(const apr_tensor *t, const apr_write_opts *o, apr_err *err)
{
    if (t->nbytes && !t->data && !(o && o->produce))
        return apr_err_set(err, APR_E_ARG, "tensor '%s': no data", t->name);
    return 0;
}

/* 8 MiB pieces: each is CRC'd while its pages are resident (a mapped
 * source's pages are released by the write). */
static int write_crc(apr_outfile *f, const uint8_t *p, uint64_t n, uint32_t *crc, apr_err *err)
{
    if (!crc)
        return apr_outfile_write(f, p, (size_t)n, err);
    const uint64_t chunk = 8u << 20;
    for (uint64_t off = 0; off < n; off += chunk) {
        size_t k = (size_t)(n - off < chunk ? n - off : chunk);
        *crc = apr_crc32(*crc, p + off, k);
        int rc = apr_outfile_write(f, p + off, k, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int grow(apr_stream *s, uint64_t n, const char *name, apr_err *err)
{
    if (n <= s->cap)
        return 0;
    if (n > SIZE_MAX)
        return apr_err_set(err, APR_E_NOMEM, "tensor '%s': %llu bytes do not fit in memory", name,
                           (unsigned long long)n);
    free(s->buf);
    s->buf = malloc((size_t)n);
    s->cap = s->buf ? n : 0;
    if (!s->buf)
        return apr_err_set(err, APR_E_NOMEM, "tensor '%s': out of memory for its %llu bytes", name,
                           (unsigned long long)n);
    return 0;
}

int apr_stream_payload(apr_stream *s, apr_outfile *f, const apr_model *m, uint64_t i, const apr_write_opts *o,
                       uint32_t *crc, apr_err *err)
{
    const apr_tensor *t = &m->tensors[i];
    if (!t->nbytes)
        return 0;
    if (t->data)
        return write_crc(f, t->data, t->nbytes, crc, err);
    int rc = apr_stream_check(t, o, err);
    if (rc || (rc = grow(s, t->nbytes, t->name, err)))
        return rc;
    if ((rc = o->produce(o->produce_user, m, i, s->buf, err)))
        return rc;
    if (o->prov && apr_prov_streamed(o->prov, t->name)) {
        uint8_t sha[32];
        apr_sha256(s->buf, (size_t)t->nbytes, sha);
        if ((rc = apr_prov_set_digest(o->prov, t->name, sha, err)))
            return rc;
    }
    return write_crc(f, s->buf, t->nbytes, crc, err);
}

void apr_stream_free(apr_stream *s)
{
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
}

int apr_stream_seal(apr_outfile *f, const apr_write_opts *o, uint8_t *meta, size_t len, uint64_t off, apr_err *err)
{
    if (!o || !o->prov)
        return 0;
    int rc = apr_prov_seal(o->prov, meta, len, err);
    if (rc)
        return rc;
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(f->fd, meta + done, len - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return apr_err_set(err, APR_E_IO, "%s: write: %s", f->final_path, w < 0 ? strerror(errno) : "short write");
        done += (size_t)w;
    }
    return 0;
}

/* All files were written completely as temporaries; rename them all. If one
 * rename fails, the ones already renamed are removed again so that no half
 * set is left behind. */
int apr_outfiles_commit(apr_outfile *f, size_t n, apr_err *err)
{
    size_t i;
    int rc = 0;
    char **done = calloc(n ? n : 1, sizeof *done);
    if (!done) {
        for (size_t k = 0; k < n; k++)
            apr_outfile_abort(&f[k]);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        char *final = strdup(f[i].final_path);
        if (!final) {
            apr_outfile_abort(&f[i]); /* commit would have freed it */
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            break;
        }
        if ((rc = apr_outfile_commit(&f[i], err))) {
            free(final);
            break;
        }
        done[i] = final;
    }
    if (rc) {
        for (size_t k = i + 1; k < n; k++)
            apr_outfile_abort(&f[k]);
        for (size_t k = 0; k < i; k++)
            unlink(done[k]);
    }
    for (size_t k = 0; k < n; k++)
        free(done[k]);
    free(done);
    return rc;
}
