/* json_util.c - jansson's allocator (counting the allocations it did not
 * get), the parse wrappers and the checked builder of apr_json.h. */
#include "formats.h"
#include "apr_json.h"

#include <stdlib.h>

static _Thread_local unsigned long failures;
static _Thread_local bool last_parse_oom;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        failures++;
    return p;
}

/* Before main, so before jansson's first allocation. */
__attribute__((constructor)) static void install_json_allocator(void)
{
    json_set_alloc_funcs(json_malloc, free);
}

unsigned long apr_json_alloc_failures(void)
{
    return failures;
}

static json_t *parsed(json_t *j, unsigned long failures_before, const json_error_t *je)
{
    last_parse_oom = !j && (failures != failures_before || json_error_code(je) == json_error_out_of_memory);
    return j;
}

json_t *apr_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *je)
{
    unsigned long f0 = failures;
    return parsed(json_loadb(buf, n, flags, je), f0, je);
}

json_t *apr_json_loads(const char *s, size_t flags, json_error_t *je)
{
    unsigned long f0 = failures;
    return parsed(json_loads(s, flags, je), f0, je);
}

json_t *apr_json_loadf(FILE *f, size_t flags, json_error_t *je)
{
    unsigned long f0 = failures;
    return parsed(json_loadf(f, flags, je), f0, je);
}

bool apr_json_parse_oom(void)
{
    return last_parse_oom;
}

apr_jb apr_jb_start(void)
{
    return (apr_jb){.bad = false, .failures = failures};
}

bool apr_jb_oom(const apr_jb *b)
{
    return failures != b->failures;
}

int apr_jb_done(const apr_jb *b, const char *what, apr_err *err)
{
    if (!b->bad)
        return 0;
    if (apr_jb_oom(b))
        return apr_err_set(err, APR_E_NOMEM, "%s: out of memory", what);
    return apr_err_set(err, APR_E_UNSUPPORTED, "%s: a value JSON cannot hold (not UTF-8, or not finite)", what);
}
