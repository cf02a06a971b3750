/* verify_cmds.h - the two file-level checks of `apr verify` besides logit
 * parity: format round trips and provenance re-hashing. */
#ifndef APR_VERIFY_CMDS_H
#define APR_VERIFY_CMDS_H

#include <stdbool.h>

/* A -> B -> A through format `via`; exit status 0 equal, 1 different, 2 error. */
int apr_verify_roundtrip_cmd(const char *path, const char *via, bool json);
/* Re-hash FILE's tensors (and SOURCE when given) against its provenance record. */
int apr_verify_provenance_cmd(const char *path, const char *source, bool json);

/* Whether a report reached stdout whole (flushed, no write failed: a full
 * disk); says so ("apr verify: writing the report: ...") when not. A report
 * cut short is an error (exit 2), never a verdict. e: the errno of a write
 * that failed already (a large JSON report goes straight to the file, past
 * stdio's buffer), else 0. 0 written, -1 not. */
int apr_verify_report_written(int e);
/* printf("%s\n", txt) and apr_verify_report_written: txt NULL (the report
 * could not be built) is said as out of memory. 0 written, -1 not. */
int apr_verify_report_json_out(const char *txt);

#endif
