/* verify_cmds.h - the two file-level checks of `apr verify` besides logit
 * parity: format round trips and provenance re-hashing. */
#ifndef APR_VERIFY_CMDS_H
#define APR_VERIFY_CMDS_H

#include <stdbool.h>

/* A -> B -> A through format `via`; exit status 0 equal, 1 different, 2 error. */
int apr_verify_roundtrip_cmd(const char *path, const char *via, bool json);
/* Re-hash FILE's tensors (and SOURCE when given) against its provenance record. */
int apr_verify_provenance_cmd(const char *path, const char *source, bool json);

#endif
