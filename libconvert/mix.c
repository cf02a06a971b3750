/* mix.c - llama-quantize's per-tensor type selection (llama.cpp
 * src/llama-quant.cpp: tensor_allows_quantization, llama_tensor_get_type_impl,
 * tensor_type_fallback, tensor_requires_imatrix) for the file types apr supports, and its tensor
 * order (llama_model_loader's weight_name_comparer).
 *
 * The rules depend on the order tensors are visited (attn_v and ffn_down are
 * counted), so callers visit tensors sorted with apr_quant_tensor_cmp and
 * call apr_quant_mix_scan for every tensor before the first
 * apr_quant_mix_type, exactly as llama-quantize does. */
#define _GNU_SOURCE
#include "quant.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct mix_name {
    const char *name;
    int ftype;
    apr_dtype def;
} mix_name;

/* llama_ftype numbers (llama.h) and llama_ftype_get_default_type */
static const mix_name k_mixes[] = {
    {"F32", 0, APR_DT_F32},       {"F16", 1, APR_DT_F16},       {"BF16", 32, APR_DT_BF16},
    {"Q4_0", 2, APR_DT_Q4_0},     {"Q4_1", 3, APR_DT_Q4_1},     {"Q5_0", 8, APR_DT_Q5_0},
    {"Q5_1", 9, APR_DT_Q5_1},     {"Q8_0", 7, APR_DT_Q8_0},     {"Q4_K_S", 14, APR_DT_Q4_K},
    {"Q4_K_M", 15, APR_DT_Q4_K},  {"Q4_K", 15, APR_DT_Q4_K},    {"Q5_K_S", 16, APR_DT_Q5_K},
    {"Q5_K_M", 17, APR_DT_Q5_K},  {"Q5_K", 17, APR_DT_Q5_K},    {"Q6_K", 18, APR_DT_Q6_K},
    {"Q2_K", 10, APR_DT_Q2_K},    {"Q2_K_S", 21, APR_DT_Q2_K},  {"Q3_K_S", 11, APR_DT_Q3_K},
    {"Q3_K_M", 12, APR_DT_Q3_K},  {"Q3_K", 12, APR_DT_Q3_K},    {"Q3_K_L", 13, APR_DT_Q3_K},
    {"IQ4_NL", 25, APR_DT_IQ4_NL}, {"IQ4_XS", 30, APR_DT_IQ4_XS},
};

/* The rest of llama-quantize's list (tools/quantize/quantize.cpp's
 * QUANT_OPTIONS): refused by name. Their quantizers search ggml's lattice
 * grids (IQ1/IQ2/IQ3), or are ternary / FP4 / 1-2 bit formats apr does not
 * write. */
static const char *const k_refused[] = {"Q1_0", "Q2_0", "MXFP4_MOE", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
                                        "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S", "IQ3_M",
                                        "IQ3_XS", "COPY"};

enum {
    FT_Q4_0 = 2, FT_Q5_0 = 8, FT_Q2_K = 10, FT_Q3_K_S = 11, FT_Q3_K_M = 12, FT_Q3_K_L = 13, FT_Q4_K_S = 14,
    FT_Q4_K_M = 15, FT_Q5_K_M = 17, FT_Q2_K_S = 21, FT_IQ4_NL = 25, FT_IQ4_XS = 30
};

const char *apr_quant_mix_names(void)
{
    return "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S (needs --imatrix) Q3_K_S Q3_K_M (=Q3_K) Q3_K_L "
           "Q4_K_S Q4_K_M (=Q4_K) Q5_K_S Q5_K_M (=Q5_K) Q6_K IQ4_NL IQ4_XS";
}

int apr_quant_mix_init(apr_quant_mix *m, const char *mix, bool pure, const apr_quant_mix_model *model,
                       apr_err *err)
{
    memset(m, 0, sizeof *m);
    const mix_name *found = NULL;
    for (size_t i = 0; i < sizeof k_mixes / sizeof k_mixes[0]; i++)
        if (!strcasecmp(mix, k_mixes[i].name))
            found = &k_mixes[i];
    if (!found) {
        for (size_t i = 0; i < sizeof k_refused / sizeof k_refused[0]; i++)
            if (!strcasecmp(mix, k_refused[i]))
                return apr_err_set(err, APR_E_UNSUPPORTED,
                                   "quantization type '%s' is llama-quantize's, but apr does not implement it (the "
                                   "IQ1/IQ2/IQ3 lattice-grid, ternary, FP4, Q1_0/Q2_0 and COPY modes are not "
                                   "supported; supported: %s)", mix, apr_quant_mix_names());
        return apr_err_set(err, APR_E_ARG, "unknown quantization type '%s' (known: %s)", mix, apr_quant_mix_names());
    }
    m->ftype = found->ftype;
    m->default_type = found->def;
    m->pure = pure;
    m->has_imatrix = model->has_imatrix;
    m->n_layer = (int)model->n_layer;
    m->falcon = !strcmp(model->arch, "falcon");
    m->n_expert = (int)model->n_expert;
    /* llama.cpp's LLM_TYPE_70B: 80 layers with grouped-query attention */
    m->is_70b = model->n_layer == 80 && (!strcmp(model->arch, "llama") ? model->n_head != model->n_head_kv
                                                                          : !strcmp(model->arch, "qwen2"));
    m->n_gqa = model->n_head_kv ? (int)(model->n_head / model->n_head_kv) : 0; /* llama_hparams::n_gqa */
    m->tied_embeddings = true; /* until output.weight is seen */
    m->output_type = m->embd_type = -1;
    return 0;
}

/* ------------------------------------------------------------ categories */

typedef enum cat {
    CAT_TOKEN_EMBD, CAT_ATTN_Q, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_QKV, CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT, CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_OUTPUT, CAT_OTHER
} cat;

static cat category(const char *name)
{
    if (!strcmp(name, "output.weight"))
        return CAT_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight"))
        return CAT_TOKEN_EMBD;
    if (strstr(name, "attn_qkv.weight")) return CAT_ATTN_QKV;
    if (strstr(name, "attn_kv_b.weight")) return CAT_ATTN_KV_B;
    if (strstr(name, "attn_v.weight")) return CAT_ATTN_V;
    if (strstr(name, "attn_k.weight")) return CAT_ATTN_K;
    if (strstr(name, "attn_q.weight")) return CAT_ATTN_Q;
    if (strstr(name, "attn_output.weight")) return CAT_ATTN_OUTPUT;
    if (strstr(name, "ffn_up")) return CAT_FFN_UP;
    if (strstr(name, "ffn_gate")) return CAT_FFN_GATE;
    if (strstr(name, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

static bool is_attn_v_like(cat c) { return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B; }

void apr_quant_mix_scan(apr_quant_mix *m, const char *name)
{
    cat c = category(name);
    if (is_attn_v_like(c))
        m->n_attention_wv++;
    if (c == CAT_OUTPUT)
        m->tied_embeddings = false;
}

/* ggml_n_dims of a tensor whose dims are outermost first: trailing (GGUF
 * ne[]) dimensions of 1 do not count. */
static int ggml_ndims(uint32_t ndim, const uint64_t *dims)
{
    uint32_t lead = 0;
    while (lead + 1 < ndim && dims[lead] == 1)
        lead++;
    return ndim ? (int)(ndim - lead) : 1;
}

bool apr_quant_tensor_allowed(const char *name, uint32_t ndim, const uint64_t *dims)
{
    if (ggml_ndims(ndim, dims) < 2)
        return false;
    size_t n = strlen(name);
    if (n < 6 || strcmp(name + n - 6, "weight") != 0)
        return false;
    static const char *const never[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
        "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
        "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
        "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
        "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
        "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (strstr(name, never[i]))
            return false;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight"))
        return false;
    return true;
}

static bool use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* llama_tensor_get_type_impl, reduced to the file types in k_mixes (the
 * IQ1/IQ2/IQ3 and TQ/MXFP4 branches cannot be reached from them). */
static apr_dtype mix_rules(apr_quant_mix *m, apr_dtype t, const char *name, uint64_t ne0, cat c)
{
    const int ft = m->ftype;
    const int n_gqa = m->n_gqa;
    if (c == CAT_OUTPUT || (m->tied_embeddings && c == CAT_TOKEN_EMBD)) {
        const uint64_t qk = apr_dtype_get(t)->block_elems;
        if (m->output_type >= 0)
            t = (apr_dtype)m->output_type;
        else if (m->falcon || ne0 % qk != 0)
            t = APR_DT_Q8_0;
        else if (t != APR_DT_Q8_0)
            t = APR_DT_Q6_K;
    } else if (c == CAT_TOKEN_EMBD) {
        /* otherwise only the IQ/TQ file types change token_embd */
        if (m->embd_type >= 0)
            t = (apr_dtype)m->embd_type;
    } else if (is_attn_v_like(c)) {
        if (ft == FT_Q2_K)
            t = n_gqa >= 4 ? APR_DT_Q4_K : APR_DT_Q3_K;
        else if (ft == FT_Q2_K_S && n_gqa >= 4)
            t = APR_DT_Q4_K;
        else if (ft == FT_Q3_K_M)
            t = m->i_attention_wv < 2 ? APR_DT_Q5_K : APR_DT_Q4_K;
        else if (ft == FT_Q3_K_L)
            t = APR_DT_Q5_K;
        else if ((ft == FT_IQ4_NL || ft == FT_IQ4_XS) && n_gqa >= 4)
            t = APR_DT_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(m->i_attention_wv, m->n_attention_wv))
            t = APR_DT_Q6_K;
        else if (ft == FT_Q4_K_S && m->i_attention_wv < 4)
            t = APR_DT_Q5_K;
        if (m->is_70b && (t == APR_DT_Q3_K || t == APR_DT_Q4_K))
            t = APR_DT_Q5_K;
        if (m->n_expert == 8)
            t = APR_DT_Q8_0;
        m->i_attention_wv++;
    } else if (c == CAT_ATTN_K || c == CAT_ATTN_Q) {
        if (c == CAT_ATTN_K && m->n_expert == 8)
            t = APR_DT_Q8_0;
    } else if (c == CAT_FFN_DOWN) {
        int i_layer = m->i_ffn_down, n_layer = m->n_layer;
        if (m->n_expert > 1) { /* experts are not consecutive: the layer comes from the name */
            if (sscanf(name, "blk.%d.", &i_layer) != 1)
                i_layer = m->i_ffn_down;
        }
        if (ft == FT_Q2_K) {
            t = APR_DT_Q3_K;
        } else if (ft == FT_Q2_K_S) {
            if (i_layer < n_layer / 8)
                t = APR_DT_Q4_K;
        } else if (ft == FT_Q3_K_M) {
            t = i_layer < n_layer / 16 ? APR_DT_Q5_K
                : !m->falcon || use_more_bits(i_layer, n_layer) ? APR_DT_Q4_K
                                                                 : APR_DT_Q3_K;
        } else if (ft == FT_Q3_K_L) {
            t = m->falcon ? APR_DT_Q4_K : APR_DT_Q5_K;
        } else if (ft == FT_Q4_K_M) {
            if (m->falcon)
                t = i_layer < n_layer / 16 ? APR_DT_Q6_K : use_more_bits(i_layer, n_layer) ? APR_DT_Q5_K : APR_DT_Q4_K;
            else if (use_more_bits(i_layer, n_layer))
                t = APR_DT_Q6_K;
        } else if (i_layer < n_layer / 8 && (ft == FT_IQ4_NL || ft == FT_IQ4_XS) && !m->has_imatrix) {
            t = APR_DT_Q5_K;
        } else if (ft == FT_Q5_K_M && use_more_bits(i_layer, n_layer)) {
            t = APR_DT_Q6_K;
        } else if (ft == FT_Q4_K_S && !m->falcon && i_layer < n_layer / 8) {
            t = APR_DT_Q5_K;
        } else if ((ft == FT_Q4_0 || ft == FT_Q5_0) && m->has_imatrix && i_layer < n_layer / 8) {
            t = ft == FT_Q4_0 ? APR_DT_Q4_1 : APR_DT_Q5_1;
        }
        m->i_ffn_down++;
    } else if (c == CAT_ATTN_OUTPUT) {
        if (!m->falcon && m->n_expert == 8) {
            if (ft == FT_Q2_K || ft == FT_Q3_K_S || ft == FT_Q3_K_M || ft == FT_IQ4_NL || ft == FT_Q4_K_S ||
                ft == FT_Q4_K_M || ft == FT_IQ4_XS)
                t = APR_DT_Q5_K;
        } else if (!m->falcon) {
            if (ft == FT_Q2_K)
                t = APR_DT_Q3_K;
            else if (ft == FT_Q3_K_M)
                t = APR_DT_Q4_K;
            else if (ft == FT_Q3_K_L)
                t = APR_DT_Q5_K;
        } else if (ft == FT_Q3_K_L) {
            t = APR_DT_Q4_K;
        }
    } else if (c == CAT_FFN_GATE) {
        m->i_ffn_gate++;
    } else if (c == CAT_FFN_UP) {
        m->i_ffn_up++;
    }
    return t;
}

/* The first --tensor-type pattern found in name (regex_search), or NULL. */
static apr_quant_tensor_type *pattern_for(const apr_quant_mix *m, const char *name)
{
    for (size_t i = 0; i < m->n_patterns; i++) {
        apr_quant_tensor_type *p = (apr_quant_tensor_type *)&m->patterns[i];
        if (regexec((const regex_t *)p->re, name, 0, NULL, 0) == 0)
            return p;
    }
    return NULL;
}

/* llama_tensor_get_type: the options first, then the mix rules, then the
 * fallback for rows that are not a whole number of blocks. */
int apr_quant_mix_type(apr_quant_mix *m, const char *name, uint32_t ndim, const uint64_t *dims, apr_dtype cur,
                       apr_dtype *out, apr_err *err)
{
    if (!apr_quant_tensor_allowed(name, ndim, dims) || (m->leave_output && !strcmp(name, "output.weight"))) {
        *out = cur;
        return 0;
    }
    const cat c = category(name);
    if (m->embd_type >= 0 && c == CAT_TOKEN_EMBD &&
        !(!strcmp(name, "per_layer_token_embd.weight") && pattern_for(m, name))) {
        *out = (apr_dtype)m->embd_type;
        return 0;
    }
    if (m->output_type >= 0 && c == CAT_OUTPUT) {
        *out = (apr_dtype)m->output_type;
        return 0;
    }
    const uint64_t ne0 = ndim ? dims[ndim - 1] : 1;
    apr_dtype t = m->default_type;
    if (!apr_dtype_get(t)->quantized) {
        *out = t;
        return 0;
    }
    apr_quant_tensor_type *manual = pattern_for(m, name);
    if (manual) {
        t = manual->type;
        manual->n_matched++;
    } else if (!m->pure) {
        t = mix_rules(m, t, name, ne0, c);
    }
    /* tensor_type_fallback: rows that are not a whole number of blocks */
    if (ne0 % apr_dtype_get(t)->block_elems != 0) {
        apr_dtype f;
        switch (t) {
        case APR_DT_IQ4_XS: f = APR_DT_IQ4_NL; break;
        case APR_DT_Q2_K: case APR_DT_Q3_K: f = APR_DT_Q4_0; break;
        case APR_DT_Q4_K: f = APR_DT_Q5_0; break;
        case APR_DT_Q5_K: f = APR_DT_Q5_1; break;
        case APR_DT_Q6_K: f = APR_DT_Q8_0; break;
        case APR_DT_Q4_0: case APR_DT_Q4_1: case APR_DT_Q5_0: case APR_DT_Q5_1: case APR_DT_Q8_0:
        case APR_DT_IQ4_NL:
            f = t; /* already a 32-block type: F16 below, as llama.cpp does */
            break;
        default:
            return apr_err_set(err, APR_E_UNSUPPORTED,
                               "%s: %llu columns is not a multiple of %s's block of %u and llama.cpp defines no "
                               "fallback for it", name, (unsigned long long)ne0, apr_dtype_name(t),
                               apr_dtype_get(t)->block_elems);
        }
        if (ne0 % apr_dtype_get(f)->block_elems != 0)
            f = APR_DT_F16;
        m->n_fallback++;
        t = f;
    }
    *out = t;
    return 0;
}

/* weight_name_comparer: layer number ("blk.%d.", -1 when absent), then the
 * name bytewise. */
int apr_quant_tensor_cmp(const char *a, const char *b)
{
    int la = -1, lb = -1;
    if (sscanf(a, "blk.%d.", &la) != 1)
        la = -1;
    if (sscanf(b, "blk.%d.", &lb) != 1)
        lb = -1;
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a, b);
}

/* tensor_requires_imatrix for the supported file types: the Q2_K tensors of
 * a Q2_K_S file (token_embd and output excepted). */
bool apr_quant_mix_needs_imatrix(const apr_quant_mix *m, const char *name, apr_dtype target)
{
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight") ||
        !strcmp(name, "output.weight"))
        return false;
    return target == APR_DT_Q2_K && m->ftype == FT_Q2_K_S;
}

int apr_quant_parse_type_option(const char *opt, const char *name, apr_dtype *out, apr_err *err)
{
    const int t = apr_dtype_from_name(name);
    if (t < 0 || !apr_dtype_get(t) || (t != APR_DT_F32 && t != APR_DT_F16 && t != APR_DT_BF16 &&
                                        !(apr_dtype_get(t)->quantized && apr_quantize_supported((apr_dtype)t))))
        return apr_err_set(err, APR_E_ARG,
                           "%s %s: not a type apr can write (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K "
                           "Q5_K Q6_K IQ4_NL IQ4_XS)", opt, name);
    *out = (apr_dtype)t;
    return 0;
}

int apr_quant_tensor_type_parse(const char *arg, apr_quant_tensor_type *out, apr_err *err)
{
    memset(out, 0, sizeof *out);
    const char *eq = strchr(arg, '=');
    if (!eq)
        return apr_err_set(err, APR_E_ARG, "--tensor-type %s: expected PATTERN=TYPE", arg);
    if (eq == arg)
        return apr_err_set(err, APR_E_ARG, "--tensor-type %s: missing tensor name pattern", arg);
    if (!eq[1])
        return apr_err_set(err, APR_E_ARG, "--tensor-type %s: missing quantization type", arg);
    apr_dtype t = APR_DT_F32;
    int rc = apr_quant_parse_type_option("--tensor-type", eq + 1, &t, err);
    if (rc)
        return rc;
    char *pat = strndup(arg, (size_t)(eq - arg));
    regex_t *re = malloc(sizeof *re);
    if (!pat || !re) {
        free(pat);
        free(re);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    for (char *c = pat; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    int e = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    if (e) {
        char why[128];
        regerror(e, re, why, sizeof why);
        rc = apr_err_set(err, APR_E_ARG, "--tensor-type %s: bad regular expression '%s': %s", arg, pat, why);
        free(pat);
        free(re);
        return rc;
    }
    out->pattern = pat;
    out->type = t;
    out->re = re;
    return 0;
}

void apr_quant_tensor_type_free(apr_quant_tensor_type *t)
{
    if (!t)
        return;
    if (t->re)
        regfree((regex_t *)t->re);
    free(t->re);
    free(t->pattern);
    memset(t, 0, sizeof *t);
}
