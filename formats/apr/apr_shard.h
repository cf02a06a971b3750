/* apr_shard.h - what apr.c and apr_shard.c (sharded APR v2, docs/sharding.md)
 * share; internal to the APR container. */
#ifndef APR_SHARD_H
#define APR_SHARD_H

#include "apr_internal.h"

#define APR_FLAG_SHARDED 0x0010

/* Writes m as one APR file into the temporary f (left open on success,
 * aborted on failure). shard_sha non-NULL: the file is one shard of a set
 * (flag 0x10, no provenance record: the manifest carries it; nothing is
 * sealed) and every byte written is hashed into shard_sha. */
int apr_apr_write_file(const apr_model *m, const char *path, const apr_write_opts *o, apr_sha256_ctx *shard_sha,
                       apr_outfile *f, apr_err *err);
/* apr_apr_write with o->shard_max_bytes: shards plus their manifest. */
int apr_apr_write_sharded(const apr_model *m, const char *path, const apr_write_opts *o, apr_err *err);

/* True when the opened file has flag 0x10. */
bool apr_apr_is_shard(const apr_model *m);
/* The whole set from its manifest, or from the shard at path (which must be
 * the first). */
int apr_apr_open_manifest(apr_model **out, const char *manifest, bool check_footer, apr_err *err);
int apr_apr_open_shard(apr_model **out, const char *path, bool check_footer, apr_err *err);

#endif
