/* names.c - sorting and duplicate checks over the names of a model's tensors
 * and KVs: O(n log n) (sort an index, compare neighbours), so that a hostile
 * header with hundreds of thousands of keys cannot stall a reader. */
#include "apr_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* (name, index) pairs sorted by name: qsort has no context argument in C11,
 * so the names travel with the indices instead of through a global. */
typedef struct name_ix { const char *name; uint64_t ix; } name_ix;
static int cmp_name_ix(const void *a, const void *b)
{
    const name_ix *x = a, *y = b;
    int c = strcmp(x->name, y->name); /* strcmp compares as unsigned char: bytewise */
    return c ? c : (x->ix < y->ix ? -1 : x->ix > y->ix);
}

/* n structs of the given stride whose first member is a char* name. */
static name_ix *sorted_names(const void *base, size_t stride, uint64_t n)
{
    if (n > SIZE_MAX / sizeof(name_ix))
        return NULL;
    name_ix *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (uint64_t i = 0; i < n; i++) {
        v[i].name = *(char *const *)((const char *)base + i * stride);
        v[i].ix = i;
    }
    qsort(v, n, sizeof *v, cmp_name_ix);
    return v;
}

uint64_t *apr_tensor_order_by_name(const apr_model *m)
{
    name_ix *v = sorted_names(m->tensors, sizeof *m->tensors, m->n_tensors);
    if (!v)
        return NULL;
    uint64_t *idx = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *idx);
    for (uint64_t i = 0; idx && i < m->n_tensors; i++)
        idx[i] = v[i].ix;
    free(v);
    return idx;
}

const char *apr_find_duplicate_name(const void *base, size_t stride, uint64_t n, bool *oom)
{
    *oom = false;
    if (n < 2)
        return NULL;
    name_ix *v = sorted_names(base, stride, n);
    if (!v) {
        *oom = true;
        return NULL;
    }
    const char *dup = NULL;
    for (uint64_t i = 1; i < n && !dup; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0)
            dup = v[i].name;
    free(v);
    return dup;
}


int apr_check_unique_names(const void *base, size_t stride, uint64_t n, int code, const char *what, apr_err *err)
{
    bool oom;
    const char *dup = apr_find_duplicate_name(base, stride, n, &oom);
    if (oom)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    return dup ? apr_err_set(err, code, "%s '%s'", what, dup) : 0;
}
