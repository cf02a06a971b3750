/* family.c - the one table of model conventions.
 *
 * One row per GGUF architecture: what its forward pass differs in (rope
 * kind, activation, embedding scale, post norms, Q/K norms, fused tensors,
 * the HF norm offset, the sliding-window layer pattern, the KVs it
 * implements beyond the common ones) and the tensor names that differ from
 * the common table below. derive.c turns a row into apr_arch_config; the
 * name functions (formats.h: apr_tensor_id_*, apr_model_role_tensor) serve
 * convert, quantize, the graph and verify. A new family is a row here plus
 * its forward-pass differences; the HF side (class names, config.json keys)
 * is formats/hf/hfmeta.c's; docs/families.md lists them all. */
#include "family.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- names */

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
    [APR_ROLE_ATTN_QKV] = {NULL, "self_attn.qkv_proj"}, /* APR's fusion: HF-style name only */
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

/* Gemma 2/3: HF's post_attention_layernorm is the attention output's norm
 * (GGUF post_attention_norm), its pre_feedforward_layernorm the FFN input's
 * (ffn_norm), where LLaMA's post_attention_layernorm is ffn_norm. */
static const apr_family_stem gemma_stems[] = {
    {APR_ROLE_FFN_NORM, "ffn_norm", "pre_feedforward_layernorm"},
    {APR_ROLE_POST_ATTN_NORM, "post_attention_norm", "post_attention_layernorm"},
    {APR_ROLE_POST_FFN_NORM, "post_ffw_norm", "post_feedforward_layernorm"},
    {APR_ROLE_COUNT, NULL, NULL},
};

/* Phi-3 keeps HF's fusions: Q/K/V as attn_qkv, gate/up as ffn_up (2 x ffn
 * rows, gate first); it has no separate gate and up. */
static const apr_family_stem phi3_stems[] = {
    {APR_ROLE_ATTN_QKV, "attn_qkv", "self_attn.qkv_proj"},
    {APR_ROLE_FFN_GATE_UP, "ffn_up", "mlp.gate_up_proj"},
    {APR_ROLE_FFN_UP, NULL, NULL},
    {APR_ROLE_FFN_GATE, NULL, NULL},
    {APR_ROLE_COUNT, NULL, NULL},
};

/* ---------------------------------------------------------------- the families */

static const apr_family families[] = {
    /* Mistral is GGUF llama with its window */
    {"llama", APR_ROPE_NORM, APR_ACT_SILU, false, false, false, false, 0.0f, 0, {"attention.sliding_window"}, NULL},
    {"qwen2", APR_ROPE_NEOX, APR_ACT_SILU, false, false, false, false, 0.0f, 0, {NULL}, NULL},
    {"qwen3", APR_ROPE_NEOX, APR_ACT_SILU, false, false, true, false, 0.0f, 0, {NULL}, NULL},
    /* GELU-tanh GeGLU, embeddings times sqrt(hidden), norms 1 + w, post
     * norms, soft-capped attention scores and logits, every even layer
     * sliding (llama.cpp's gemma2 defaults: window 4096, caps 50 and 30) */
    {"gemma2", APR_ROPE_NEOX, APR_ACT_GELU_TANH, true, true, false, false, 1.0f, 2,
     {"attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping"}, gemma_stems},
    /* Gemma 2 plus Q/K norms (1 + w too), five sliding layers in six with
     * their own unscaled rope base, no score capping, optional logit capping */
    {"gemma3", APR_ROPE_NEOX, APR_ACT_GELU_TANH, true, true, true, false, 1.0f, 6,
     {"attention.sliding_window", "final_logit_softcapping", "rope.freq_base_swa"}, gemma_stems},
    /* fused attn_qkv and ffn_up (gate then up); its window on every layer
     * (0 = none; transformers applies it, llama.cpp disables Phi's SWA) */
    {"phi3", APR_ROPE_NEOX, APR_ACT_SILU, false, false, false, true, 0.0f, 0, {"attention.sliding_window"},
     phi3_stems},
};

const apr_family *apr_family_of(const char *arch)
{
    for (size_t i = 0; arch && i < sizeof families / sizeof *families; i++)
        if (!strcmp(families[i].arch, arch))
            return &families[i];
    return NULL;
}

bool apr_arch_known(const char *arch)
{
    return apr_family_of(arch) != NULL;
}

const char *apr_arch_list(void)
{
    static char list[256];
    if (!list[0]) {
        size_t n = 0;
        for (size_t i = 0; i < sizeof families / sizeof *families; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", families[i].arch);
    }
    return list;
}

/* ---------------------------------------------------------------- name functions */

static const char *stem_of(const char *arch, apr_role r, apr_naming naming)
{
    const apr_family *f = apr_family_of(arch);
    for (const apr_family_stem *s = f ? f->stems : NULL; s && s->role != APR_ROLE_COUNT; s++)
        if (s->role == r)
            return naming == APR_NAMING_GGUF ? s->gguf : s->hf;
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

const apr_tensor *apr_model_role_tensor(const apr_model *m, const char *arch, apr_role role, uint32_t layer,
                                        bool bias, char *name, size_t cap)
{
    const apr_tensor_id id = {role, layer, bias};
    const apr_tensor *t = NULL;
    char buf[160];
    bool named = false;
    for (int n = APR_NAMING_GGUF; n <= APR_NAMING_HF; n++) {
        if (!apr_tensor_id_name_arch(arch, &id, (apr_naming)n, buf, sizeof buf))
            continue;
        if (name && cap && !named)
            snprintf(name, cap, "%s", buf);
        named = true;
        if (!t)
            t = apr_model_tensor(m, buf);
    }
    if (name && cap && !named)
        snprintf(name, cap, "(no tensor of role %d in %s)", (int)role, arch ? arch : "llama");
    return t;
}
