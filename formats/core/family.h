/* family.h - the family table (family.c), internal to aprformats: derive.c
 * reads a family's forward-pass traits from it; the tensor names behind
 * formats.h's apr_tensor_id_* come from the same rows. */
#ifndef APR_FAMILY_H
#define APR_FAMILY_H

#include "formats.h"

/* A role whose names in this family differ from the common ones (both NULL:
 * the family has no such tensor). */
typedef struct apr_family_stem {
    apr_role role;
    const char *gguf, *hf;
} apr_family_stem;

typedef struct apr_family {
    const char *arch;          /* the GGUF architecture */
    apr_rope_type rope;
    apr_ffn_act act;
    bool embed_scale, post_norms, qk_norm;
    bool fused;                /* apr_arch_config.fused_qkv_gate_up */
    float hf_norm_offset;
    uint32_t swa_pattern;      /* see apr_arch_config */
    const char *extra_kvs[4];  /* implemented KVs beyond derive.c's implemented_kvs */
    const apr_family_stem *stems; /* ends with role APR_ROLE_COUNT; NULL: the common names */
} apr_family;

/* The row of a GGUF architecture, or NULL. */
const apr_family *apr_family_of(const char *arch);

#endif
