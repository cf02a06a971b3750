/* json_util.h - what apr's JSON readers share on top of jansson (not public). */
#ifndef APR_JSON_UTIL_H
#define APR_JSON_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* json_loadb / json_loads / json_loadf that remember whether a failure was
 * for want of memory (see apr_json_parse_oom). */
json_t *apr_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *je);
json_t *apr_json_loads(const char *s, size_t flags, json_error_t *je);
json_t *apr_json_loadf(FILE *f, size_t flags, json_error_t *je);

/* True when the last apr_json_load* on this thread failed because an
 * allocation failed, not because the text is malformed: jansson reports
 * such a failure as a syntax error at the token it could not store (or with
 * no text at all), so apr counts the failed allocations itself (util/json_util.c
 * installs jansson's allocator). The caller then says "out of memory". */
bool apr_json_parse_oom(void);

#endif
