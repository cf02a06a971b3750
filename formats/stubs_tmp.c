/* stubs_tmp.c - TEMPORARY: removed once the real readers/writers land. */
#include "formats.h"
#define NI(...) return apr_err_set(err, APR_E_UNSUPPORTED, "not built yet")
int apr_apr_open(apr_model **out, const char *path, const apr_open_opts *o, apr_err *err) { (void)out; (void)path; (void)o; NI(); }
int apr_apr_write(const apr_model *m, const char *p, const apr_write_opts *o, apr_err *err) { (void)m; (void)p; (void)o; NI(); }
