/* namemap.c - tensor names in llama.cpp (GGUF) and HF/APR naming, and the
 * LLaMA Q/K row permutation of convert_hf_to_gguf.py. */
#include "convert.h"

#include <stdio.h>
#include <string.h>

/* Name stems without the ".weight"/".bias" suffix; per-layer stems follow the
 * layer prefix ("blk.N." / "model.layers.N."). */
static const struct {
    const char *gguf, *hf;
} stems[APR_ROLE_COUNT] = {
    [APR_ROLE_TOKEN_EMBD] = {"token_embd", "model.embed_tokens"},
    [APR_ROLE_OUTPUT_NORM] = {"output_norm", "model.norm"},
    [APR_ROLE_OUTPUT] = {"output", "lm_head"},
    [APR_ROLE_ATTN_NORM] = {"attn_norm", "input_layernorm"},
    [APR_ROLE_ATTN_Q] = {"attn_q", "self_attn.q_proj"},
    [APR_ROLE_ATTN_K] = {"attn_k", "self_attn.k_proj"},
    [APR_ROLE_ATTN_V] = {"attn_v", "self_attn.v_proj"},
    [APR_ROLE_ATTN_QKV] = {NULL, "self_attn.qkv_proj"},
    [APR_ROLE_ATTN_OUT] = {"attn_output", "self_attn.o_proj"},
    [APR_ROLE_FFN_NORM] = {"ffn_norm", "post_attention_layernorm"},
    [APR_ROLE_FFN_GATE] = {"ffn_gate", "mlp.gate_proj"},
    [APR_ROLE_FFN_DOWN] = {"ffn_down", "mlp.down_proj"},
    [APR_ROLE_FFN_UP] = {"ffn_up", "mlp.up_proj"},
    [APR_ROLE_ATTN_Q_NORM] = {"attn_q_norm", "self_attn.q_norm"},
    [APR_ROLE_ATTN_K_NORM] = {"attn_k_norm", "self_attn.k_norm"},
    [APR_ROLE_POST_ATTN_NORM] = {"post_attention_norm", NULL},
    [APR_ROLE_POST_FFN_NORM] = {"post_ffw_norm", NULL},
    [APR_ROLE_FFN_GATE_UP] = {NULL, "mlp.gate_up_proj"},
};

/* Per-family names that differ from the table above (as llama.cpp's
 * gguf-py tensor_mapping.py maps them for that architecture). */
static const struct {
    const char *arch;
    apr_role role;
    const char *gguf, *hf;
} family_stems[] = {
    {"gemma2", APR_ROLE_FFN_NORM, "ffn_norm", "pre_feedforward_layernorm"},
    {"gemma2", APR_ROLE_POST_ATTN_NORM, "post_attention_norm", "post_attention_layernorm"},
    {"gemma2", APR_ROLE_POST_FFN_NORM, "post_ffw_norm", "post_feedforward_layernorm"},
    {"gemma3", APR_ROLE_FFN_NORM, "ffn_norm", "pre_feedforward_layernorm"},
    {"gemma3", APR_ROLE_POST_ATTN_NORM, "post_attention_norm", "post_attention_layernorm"},
    {"gemma3", APR_ROLE_POST_FFN_NORM, "post_ffw_norm", "post_feedforward_layernorm"},
    /* Phi-3 keeps HF's fusions: Q/K/V as attn_qkv, gate/up as ffn_up (2 x ffn rows) */
    {"phi3", APR_ROLE_ATTN_QKV, "attn_qkv", "self_attn.qkv_proj"},
    {"phi3", APR_ROLE_FFN_GATE_UP, "ffn_up", "mlp.gate_up_proj"},
    {"phi3", APR_ROLE_FFN_UP, NULL, NULL},
    {"phi3", APR_ROLE_FFN_GATE, NULL, NULL},
};

static const char *stem_of(const char *arch, apr_role r, apr_naming naming)
{
    for (size_t i = 0; arch && i < sizeof family_stems / sizeof *family_stems; i++)
        if (family_stems[i].role == r && !strcmp(family_stems[i].arch, arch))
            return naming == APR_NAMING_GGUF ? family_stems[i].gguf : family_stems[i].hf;
    return naming == APR_NAMING_GGUF ? stems[r].gguf : stems[r].hf;
}

#define GGUF_LAYER_PREFIX "blk."
#define HF_LAYER_PREFIX "model.layers."
#define MAX_LAYER 1000000u

bool apr_role_per_layer(apr_role r) { return r >= APR_ROLE_ATTN_NORM && r < APR_ROLE_COUNT; }

/* Splits "stem.weight" / "stem.bias": returns the stem length, 0 if neither. */
static size_t strip_suffix(const char *s, bool *bias)
{
    size_t n = strlen(s);
    if (n > 7 && strcmp(s + n - 7, ".weight") == 0) {
        *bias = false;
        return n - 7;
    }
    if (n > 5 && strcmp(s + n - 5, ".bias") == 0) {
        *bias = true;
        return n - 5;
    }
    return 0;
}

/* Decimal layer number without sign or leading zeros, followed by '.'. */
static const char *parse_layer(const char *s, uint32_t *layer)
{
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '.'))
        return NULL;
    uint32_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (uint32_t)(*s - '0');
        if (v >= MAX_LAYER)
            return NULL;
        s++;
    }
    if (*s != '.')
        return NULL;
    *layer = v;
    return s + 1;
}

static bool match_stem(const char *arch, const char *stem, size_t len, bool per_layer, apr_naming naming,
                       apr_role *role)
{
    for (int r = 0; r < APR_ROLE_COUNT; r++) {
        if (apr_role_per_layer((apr_role)r) != per_layer)
            continue;
        const char *s = stem_of(arch, (apr_role)r, naming);
        if (s && strlen(s) == len && memcmp(s, stem, len) == 0) {
            *role = (apr_role)r;
            return true;
        }
    }
    return false;
}

bool apr_tensor_id_parse(const char *name, apr_tensor_id *id, apr_naming *naming)
{
    return apr_tensor_id_parse_arch(NULL, name, id, naming);
}

bool apr_tensor_id_parse_arch(const char *arch, const char *name, apr_tensor_id *id, apr_naming *naming)
{
    bool bias;
    size_t len = strip_suffix(name, &bias);
    if (!len)
        return false;
    memset(id, 0, sizeof *id);
    id->bias = bias;
    static const struct {
        const char *prefix;
        apr_naming naming;
    } prefixes[] = {{GGUF_LAYER_PREFIX, APR_NAMING_GGUF}, {HF_LAYER_PREFIX, APR_NAMING_HF}};
    for (size_t i = 0; i < 2; i++) {
        size_t pl = strlen(prefixes[i].prefix);
        if (len > pl && strncmp(name, prefixes[i].prefix, pl) == 0) {
            const char *rest = parse_layer(name + pl, &id->layer);
            if (!rest || rest >= name + len)
                return false;
            if (!match_stem(arch, rest, (size_t)(name + len - rest), true, prefixes[i].naming, &id->role))
                return false;
            if (naming)
                *naming = prefixes[i].naming;
            return true;
        }
    }
    for (int n = APR_NAMING_GGUF; n <= APR_NAMING_HF; n++) {
        if (match_stem(arch, name, len, false, (apr_naming)n, &id->role)) {
            if (naming)
                *naming = (apr_naming)n;
            return true;
        }
    }
    return false;
}

bool apr_tensor_id_name(const apr_tensor_id *id, apr_naming naming, char *buf, size_t n)
{
    return apr_tensor_id_name_arch(NULL, id, naming, buf, n);
}

bool apr_tensor_id_name_arch(const char *arch, const apr_tensor_id *id, apr_naming naming, char *buf, size_t n)
{
    if ((unsigned)id->role >= APR_ROLE_COUNT)
        return false;
    const char *stem = stem_of(arch, id->role, naming);
    if (!stem)
        return false;
    const char *suffix = id->bias ? "bias" : "weight";
    int w;
    if (apr_role_per_layer(id->role))
        w = snprintf(buf, n, "%s%u.%s.%s", naming == APR_NAMING_GGUF ? GGUF_LAYER_PREFIX : HF_LAYER_PREFIX,
                     id->layer, stem, suffix);
    else
        w = snprintf(buf, n, "%s.%s", stem, suffix);
    return w > 0 && (size_t)w < n;
}

/* ---------------------------------------------------------------- Q/K permutation */

uint64_t apr_qk_perm_src_row(uint64_t r, uint64_t hd, bool inverse)
{
    uint64_t h = r / hd, k = r % hd, half = hd / 2;
    if (!inverse) {
        /* interleaved row k = 2i + j comes from rotate-half row j*half + i */
        uint64_t i = k / 2, j = k % 2;
        return h * hd + j * half + i;
    }
    /* rotate-half row k = j*half + i comes from interleaved row 2i + j */
    uint64_t j = k / half, i = k % half;
    return h * hd + 2 * i + j;
}

bool apr_qk_permute(uint8_t *dst, const uint8_t *src, uint64_t n_heads, uint64_t hd, uint64_t row_bytes,
                    bool inverse)
{
    if (hd == 0 || hd % 2)
        return false;
    uint64_t rows = n_heads * hd;
    for (uint64_t r = 0; r < rows; r++)
        memcpy(dst + r * row_bytes, src + apr_qk_perm_src_row(r, hd, inverse) * row_bytes, (size_t)row_bytes);
    return true;
}
