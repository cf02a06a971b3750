/* derive.c - fill apr_model.cfg and apr_model.tok from the GGUF-namespace KVs.
 *
 * Every reader (GGUF, APR, safetensors) ends by calling apr_model_derive, so
 * the rest of the project sees one architecture config and one tokenizer view
 * whatever the file format. The rules follow llama.cpp's loader:
 *   - general.architecture picks the KV prefix and the row of the family table;
 *     other architectures: has_cfg = false, which is not an error here;
 *   - head_count_kv defaults to head_count, rope.freq_base to 10000;
 *   - the head dim is attention.key_length when recorded, and only when it is
 *     absent hidden / n_heads (never assumed otherwise);
 *   - tied embeddings = no separate output weight tensor.
 * Tokenizer pointers are borrowed from the KVs (valid while the KVs live).
 */
#include "family.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Whether m has the tensor of a role (in the family's GGUF or HF naming). */
static bool has_role(const apr_model *m, const char *arch, apr_role r, uint32_t layer, bool bias)
{
    return apr_model_role_tensor(m, arch, r, layer, bias, NULL, 0) != NULL;
}

/* The array KV `key` if it has element type t (any count); NULL if absent.
 * *bad is set when the key exists with another type. */
static const apr_kv *array_kv(const apr_model *m, const char *key, apr_kv_type t, bool *bad)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv)
        return NULL;
    if (kv->type != APR_KV_ARRAY || kv->arr_type != t) {
        *bad = true;
        return NULL;
    }
    return kv;
}

/* llama.cpp's add_bos when tokenizer.ggml.add_bos_token is absent
 * (llama_vocab::load): true for SentencePiece and WordPiece vocabularies and
 * for the byte-level BPE pre-tokenizers listed there (the llama3 family,
 * tekken, chameleon), false otherwise. The one rule: the encoder, the HF
 * writer, verify and imatrix all read m->tok.add_bos. */
static bool default_add_bos(const char *model, const char *pre)
{
    if (!strcmp(model, "llama") || !strcmp(model, "bert"))
        return true;
    if (strcmp(model, "gpt2"))
        return false;
    static const char *const pres[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                       "midm-2.0", "lfm2", "jina-v5-nano", "tekken", "chameleon"};
    for (size_t i = 0; i < sizeof pres / sizeof *pres; i++)
        if (!strcmp(pre, pres[i]))
            return true;
    return false;
}

/* Token id KVs: llama.cpp stores them as u32; 0xFFFFFFFF (or any id outside the
 * vocab) means "none" and is reported as -1. */
static int32_t token_id(const apr_model *m, const char *key, uint32_t n_tokens)
{
    uint32_t v;
    if (!apr_kv_get_u32(m, key, &v) || v >= n_tokens || v > (uint32_t)INT32_MAX)
        return -1;
    return (int32_t)v;
}

static int derive_tokenizer(apr_model *m, apr_err *err)
{
    apr_tokenizer *t = &m->tok;
    memset(t, 0, sizeof *t);
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
    m->has_tok = false;

    bool bad = false;
    const apr_kv *tokens = array_kv(m, "tokenizer.ggml.tokens", APR_KV_STRING, &bad);
    if (bad)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.tokens is not an array of strings");
    if (!tokens)
        return 0;
    if (tokens->count == 0 || tokens->count > UINT32_MAX / 2)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.tokens has %llu entries",
                           (unsigned long long)tokens->count);
    t->n_tokens = (uint32_t)tokens->count;
    t->tokens = tokens->arr;

    const char *model = apr_kv_get_str(m, "tokenizer.ggml.model");
    if (model && strlen(model) >= sizeof t->model)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.model '%.40s...' is too long", model);
    snprintf(t->model, sizeof t->model, "%s", model ? model : "");
    const char *pre = apr_kv_get_str(m, "tokenizer.ggml.pre");
    if (pre && strlen(pre) >= sizeof t->pre)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.pre '%.40s...' is too long", pre);
    snprintf(t->pre, sizeof t->pre, "%s", pre ? pre : "");

    const apr_kv *scores = array_kv(m, "tokenizer.ggml.scores", APR_KV_F32, &bad);
    if (bad)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.scores is not an array of f32");
    if (scores && scores->count != tokens->count)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.scores has %llu entries, tokens has %u",
                           (unsigned long long)scores->count, t->n_tokens);
    t->scores = scores ? scores->arr : NULL;

    const apr_kv *types = array_kv(m, "tokenizer.ggml.token_type", APR_KV_I32, &bad);
    if (bad)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.token_type is not an array of i32");
    if (types && types->count != tokens->count)
        return apr_err_set(err, APR_E_FORMAT,
                           "tokenizer.ggml.token_type has %llu entries, tokens has %u",
                           (unsigned long long)types->count, t->n_tokens);
    t->token_type = types ? types->arr : NULL;

    const apr_kv *merges = array_kv(m, "tokenizer.ggml.merges", APR_KV_STRING, &bad);
    if (bad)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.merges is not an array of strings");
    if (merges && merges->count > UINT32_MAX)
        return apr_err_set(err, APR_E_FORMAT, "tokenizer.ggml.merges: too many entries");
    t->n_merges = merges ? (uint32_t)merges->count : 0;
    t->merges = merges ? merges->arr : NULL;

    t->bos_id = token_id(m, "tokenizer.ggml.bos_token_id", t->n_tokens);
    t->eos_id = token_id(m, "tokenizer.ggml.eos_token_id", t->n_tokens);
    t->unk_id = token_id(m, "tokenizer.ggml.unknown_token_id", t->n_tokens);
    t->pad_id = token_id(m, "tokenizer.ggml.padding_token_id", t->n_tokens);
    t->add_bos = default_add_bos(t->model, t->pre);
    t->add_eos = false;
    apr_kv_get_bool(m, "tokenizer.ggml.add_bos_token", &t->add_bos);
    /* llama.cpp overrides a false add_bos_token for Gemma 4's tokenizer (PR 21500) */
    if (!strcmp(t->model, "gemma4") ||
        (!strcmp(t->model, "gpt2") && (!strcmp(t->pre, "gemma4") || !strcmp(t->pre, "granite-embed-multi-311m"))))
        t->add_bos = true;
    apr_kv_get_bool(m, "tokenizer.ggml.add_eos_token", &t->add_eos);
    t->chat_template = apr_kv_get_str(m, "tokenizer.chat_template");
    m->has_tok = true;
    return 0;
}

/* A required u32 hyper-parameter {arch}.{name}. */
static int need_u32(const apr_model *m, const char *arch, const char *name, uint32_t *out, apr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (!apr_model_kv(m, key))
        return apr_err_set(err, APR_E_FORMAT, "%s: missing hyper-parameter %s", arch, key);
    if (!apr_kv_get_u32(m, key, out))
        return apr_err_set(err, APR_E_FORMAT, "%s: %s is not an unsigned 32-bit integer", arch, key);
    return 0;
}

/* An optional u32; returns 1 when present, 0 when absent, <0 on a bad type. */
static int opt_u32(const apr_model *m, const char *arch, const char *name, uint32_t *out, apr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (!apr_model_kv(m, key))
        return 0;
    if (!apr_kv_get_u32(m, key, out))
        return apr_err_set(err, APR_E_FORMAT, "%s is not an unsigned 32-bit integer", key);
    return 1;
}

static int opt_f32(const apr_model *m, const char *arch, const char *name, float *out, apr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (!apr_model_kv(m, key))
        return 0;
    if (!apr_kv_get_f32(m, key, out))
        return apr_err_set(err, APR_E_FORMAT, "%s is not a number", key);
    if (!(*out == *out) || *out > 3.0e38f || *out < -3.0e38f)
        return apr_err_set(err, APR_E_FORMAT, "%s is not finite", key);
    return 1;
}

/* The {arch}.* KVs the forward pass implements (or that do not change the
 * computation) for every family; a family adds its own in the family table
 * (family.c).
 * Any other one is recorded in cfg.unsupported, so that run and verify refuse
 * the model instead of ignoring what it says. */
static const char *const implemented_kvs[] = {
    "block_count", "context_length", "embedding_length", "feed_forward_length",
    "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
    "rope.dimension_count", "vocab_size", "rope.scaling.type", "rope.scaling.factor",
    "rope.scaling.original_context_length", "rope.scaling.yarn_attn_factor", "rope.scaling.yarn_beta_fast",
    "rope.scaling.yarn_beta_slow",
};

/* Keep the first one (messages are truncated to the field). */
static void note_unsupported(apr_arch_config *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_unsupported(apr_arch_config *c, const char *fmt, ...)
{
    if (c->unsupported[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->unsupported, sizeof c->unsupported, fmt, ap);
    va_end(ap);
}

static void audit_kvs(const apr_model *m, apr_arch_config *c)
{
    const size_t al = strlen(c->arch);
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        const char *k = m->kvs[i].key;
        if (strncmp(k, c->arch, al) || k[al] != '.')
            continue;
        bool ok = false;
        for (size_t j = 0; j < sizeof implemented_kvs / sizeof *implemented_kvs && !ok; j++)
            ok = !strcmp(k + al + 1, implemented_kvs[j]);
        const apr_family *f = apr_family_of(c->arch);
        for (size_t j = 0; f && j < 4 && f->extra_kvs[j] && !ok; j++)
            ok = !strcmp(k + al + 1, f->extra_kvs[j]);
        if (!ok)
            note_unsupported(c, "%s (not implemented by the forward pass)", k);
    }
}

/* yarn's correction range, as transformers' find_correction_range (in
 * double, truncated: floor and ceil) and ggml_rope_yarn_corr_dims: the pair
 * index at which `rot` rotations fit in the original context. */
static double yarn_corr_dim(double rot, uint32_t dim, double base, uint32_t orig)
{
    const double pi = 3.14159265358979323846; /* math.pi */
    return (double)dim * log((double)orig / (rot * 2.0 * pi)) / (2.0 * log(base));
}

/* rope.scaling.yarn_*: a beta of 0 is transformers' default (its `or`). */
static int derive_yarn(const apr_model *m, apr_arch_config *c, float factor, apr_err *err)
{
    int rc;
    c->rope_yarn = true;
    c->yarn_orig_ctx = c->ctx_len; /* llama.cpp's default: the training context */
    if ((rc = opt_u32(m, c->arch, "rope.scaling.original_context_length", &c->yarn_orig_ctx, err)) < 0)
        return rc;
    if (!c->yarn_orig_ctx)
        return apr_err_set(err, APR_E_FORMAT, "%s: yarn rope scaling without an original context length",
                           c->arch);
    c->yarn_beta_fast = 32.0f;
    c->yarn_beta_slow = 1.0f;
    if ((rc = opt_f32(m, c->arch, "rope.scaling.yarn_beta_fast", &c->yarn_beta_fast, err)) < 0 ||
        (rc = opt_f32(m, c->arch, "rope.scaling.yarn_beta_slow", &c->yarn_beta_slow, err)) < 0)
        return rc;
    if (c->yarn_beta_fast == 0.0f)
        c->yarn_beta_fast = 32.0f;
    if (c->yarn_beta_slow == 0.0f)
        c->yarn_beta_slow = 1.0f;
    if (!(c->yarn_beta_fast > 0.0f) || !(c->yarn_beta_slow > 0.0f))
        return apr_err_set(err, APR_E_FORMAT, "%s: yarn betas %g / %g must be > 0", c->arch,
                           (double)c->yarn_beta_fast, (double)c->yarn_beta_slow);
    c->rope_attn_factor = factor > 1.0f ? (float)(0.1 * log((double)factor) + 1.0) : 1.0f;
    if ((rc = opt_f32(m, c->arch, "rope.scaling.yarn_attn_factor", &c->rope_attn_factor, err)) < 0)
        return rc;
    if (!(c->rope_attn_factor > 0.0f))
        return apr_err_set(err, APR_E_FORMAT, "%s.rope.scaling.yarn_attn_factor must be > 0", c->arch);
    const uint32_t dim = c->head_dim;
    const double lo = floor(yarn_corr_dim(c->yarn_beta_fast, dim, c->rope_theta, c->yarn_orig_ctx));
    const double hi = ceil(yarn_corr_dim(c->yarn_beta_slow, dim, c->rope_theta, c->yarn_orig_ctx));
    c->yarn_corr_lo = (float)(lo > 0.0 ? lo : 0.0);
    c->yarn_corr_hi = (float)(hi < dim - 1.0 ? hi : dim - 1.0);
    return 0;
}

/* rope.scaling.type: none, linear and yarn are implemented; any other one
 * is recorded, so that the forward pass refuses it. */
static int derive_rope_scaling(const apr_model *m, apr_arch_config *c, apr_err *err)
{
    char key[128];
    c->rope_freq_scale = 1.0f;
    c->rope_attn_factor = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    const char *t = apr_kv_get_str(m, key);
    if (apr_model_kv(m, key) && !t)
        return apr_err_set(err, APR_E_FORMAT, "%s is not a string", key);
    if (!t || !strcmp(t, "none"))
        return 0;
    if (strcmp(t, "linear") && strcmp(t, "yarn")) {
        note_unsupported(c, "%s = %s (not implemented by the forward pass)", key, t);
        return 0;
    }
    float factor = 0.0f;
    int rc = opt_f32(m, c->arch, "rope.scaling.factor", &factor, err);
    if (rc < 0)
        return rc;
    if (rc == 0 || !(factor > 0.0f))
        return apr_err_set(err, APR_E_FORMAT, "%s: %s rope scaling without a factor > 0", c->arch, t);
    c->rope_freq_scale = 1.0f / factor;
    return strcmp(t, "yarn") ? 0 : derive_yarn(m, c, factor, err);
}

/* A soft-capping KV: present must be > 0; absent keeps llama.cpp's default. */
static int softcap_kv(const apr_model *m, const char *arch, const char *name, float *cap, apr_err *err)
{
    int rc = opt_f32(m, arch, name, cap, err);
    if (rc < 0)
        return rc;
    if (!(*cap > 0.0f))
        return apr_err_set(err, APR_E_FORMAT, "%s.%s is %g (must be > 0)", arch, name, (double)*cap);
    return 0;
}

/* The family's traits, and the KVs only some families have. */
static int derive_family(const apr_model *m, const apr_family *f, apr_arch_config *c, apr_err *err)
{
    int rc;
    c->ffn_act = f->act;
    c->embed_scale = f->embed_scale;
    c->post_norms = f->post_norms;
    c->qk_norm = f->qk_norm;
    c->fused_qkv_gate_up = f->fused;
    c->hf_norm_offset = f->hf_norm_offset;
    c->swa_pattern = f->swa_pattern;
    if (!strcmp(f->arch, "gemma2")) {
        c->sliding_window = 4096; /* llama.cpp's defaults when the KVs are absent */
        c->attn_softcap = 50.0f;
        c->final_softcap = 30.0f;
        if ((rc = softcap_kv(m, c->arch, "attn_logit_softcapping", &c->attn_softcap, err)) ||
            (rc = softcap_kv(m, c->arch, "final_logit_softcapping", &c->final_softcap, err)))
            return rc;
        /* llama.cpp: Q scaled by 1/sqrt(head_dim), for the 27B (46 layers)
         * by 1/sqrt(hidden / heads); hfmeta refuses a query_pre_attn_scalar
         * that is neither */
        c->attn_scale = c->n_layers == 46 ? 1.0f / sqrtf((float)(c->hidden / c->n_heads))
                                          : 1.0f / sqrtf((float)c->head_dim);
    }
    if (!strcmp(f->arch, "gemma3")) {
        /* llama.cpp's gemma3: no window KV (or 0) = every layer full */
        if ((rc = opt_f32(m, c->arch, "final_logit_softcapping", &c->final_softcap, err)) < 0)
            return rc;
        if (!(c->final_softcap >= 0.0f))
            return apr_err_set(err, APR_E_FORMAT, "%s.final_logit_softcapping is negative", c->arch);
        c->attn_scale = c->n_layers == 62 ? 1.0f / sqrtf((float)(c->hidden / c->n_heads))
                                          : 1.0f / sqrtf((float)c->head_dim);
        c->rope_theta_swa = 10000.0f;
        if ((rc = opt_f32(m, c->arch, "rope.freq_base_swa", &c->rope_theta_swa, err)) < 0)
            return rc;
        if (!(c->rope_theta_swa > 0.0f))
            return apr_err_set(err, APR_E_FORMAT, "%s.rope.freq_base_swa must be > 0", c->arch);
    }
    if (f->extra_kvs[0] && !strcmp(f->extra_kvs[0], "attention.sliding_window") &&
        (rc = opt_u32(m, c->arch, "attention.sliding_window", &c->sliding_window, err)) < 0)
        return rc;
    if (!strcmp(f->arch, "gemma2") && !c->sliding_window)
        return apr_err_set(err, APR_E_FORMAT, "%s.attention.sliding_window is 0", c->arch);
    if (!c->sliding_window)
        c->rope_theta_swa = 0.0f;
    return 0;
}

static int derive_config(apr_model *m, apr_err *err)
{
    apr_arch_config *c = &m->cfg;
    memset(c, 0, sizeof *c);
    m->has_cfg = false;
    const char *arch = apr_kv_get_str(m, "general.architecture");
    const apr_family *fam = apr_family_of(arch);
    if (!fam)
        return 0;
    snprintf(c->arch, sizeof c->arch, "%s", arch);

    int rc;
    if ((rc = need_u32(m, arch, "block_count", &c->n_layers, err)) ||
        (rc = need_u32(m, arch, "embedding_length", &c->hidden, err)) ||
        (rc = need_u32(m, arch, "attention.head_count", &c->n_heads, err)) ||
        (rc = need_u32(m, arch, "feed_forward_length", &c->ffn, err)))
        return rc;
    if (c->n_layers == 0 || c->hidden == 0 || c->n_heads == 0 || c->ffn == 0)
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: zero hyper-parameter (layers %u, hidden %u, heads %u, ffn %u)", arch,
                           c->n_layers, c->hidden, c->n_heads, c->ffn);

    c->n_kv_heads = c->n_heads;
    if ((rc = opt_u32(m, arch, "attention.head_count_kv", &c->n_kv_heads, err)) < 0)
        return rc;
    if (c->n_kv_heads == 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: %u attention heads cannot be grouped over %u KV heads", arch,
                           c->n_heads, c->n_kv_heads);

    rc = opt_u32(m, arch, "attention.key_length", &c->head_dim, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (c->hidden % c->n_heads)
            return apr_err_set(err, APR_E_FORMAT,
                               "%s: no attention.key_length and hidden %u is not a multiple of %u heads",
                               arch, c->hidden, c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->head_dim == 0)
        return apr_err_set(err, APR_E_FORMAT, "%s: head dim is 0", arch);
    uint32_t v_len = c->head_dim;
    if ((rc = opt_u32(m, arch, "attention.value_length", &v_len, err)) < 0)
        return rc;
    if (v_len != c->head_dim)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "%s: value length %u differs from key length %u (not supported)", arch,
                           v_len, c->head_dim);
    if ((uint64_t)c->head_dim * c->n_heads > (1u << 24) || c->head_dim % 2)
        return apr_err_set(err, APR_E_FORMAT, "%s: head dim %u x %u heads is not usable", arch,
                           c->head_dim, c->n_heads);

    if ((rc = opt_u32(m, arch, "context_length", &c->ctx_len, err)) < 0)
        return rc;
    c->rope_theta = 10000.0f;
    if ((rc = opt_f32(m, arch, "rope.freq_base", &c->rope_theta, err)) < 0)
        return rc;
    c->rms_eps = 1e-5f; /* llama.cpp requires the key; 1e-5 is LLaMA's value when a file lacks it */
    if ((rc = opt_f32(m, arch, "attention.layer_norm_rms_epsilon", &c->rms_eps, err)) < 0)
        return rc;
    if (!(c->rope_theta > 0.0f) || !(c->rms_eps > 0.0f))
        return apr_err_set(err, APR_E_FORMAT, "%s: rope base %g and rms epsilon %g must be > 0", arch,
                           (double)c->rope_theta, (double)c->rms_eps);
    if ((rc = derive_rope_scaling(m, c, err)))
        return rc;
    uint32_t rope_dim = c->head_dim;
    if ((rc = opt_u32(m, arch, "rope.dimension_count", &rope_dim, err)) < 0)
        return rc;
    if (rope_dim != c->head_dim) {
        note_unsupported(c, "rope.dimension_count %u differs from the head dim %u (partial rope is not implemented)",
                         rope_dim, c->head_dim);
    }
    if ((rc = derive_family(m, fam, c, err)))
        return rc;
    audit_kvs(m, c);

    /* Vocab size: the explicit KV, else the embedding rows, else the tokenizer. */
    rc = opt_u32(m, arch, "vocab_size", &c->vocab, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        const apr_tensor *e = apr_model_role_tensor(m, arch, APR_ROLE_TOKEN_EMBD, 0, false, NULL, 0);
        if (e && e->ndim == 2 && e->dims[0] <= UINT32_MAX)
            c->vocab = (uint32_t)e->dims[0];
        else if (m->has_tok)
            c->vocab = m->tok.n_tokens;
    }

    c->rope_type = fam->rope;
    c->tied_embeddings = !has_role(m, arch, APR_ROLE_OUTPUT, 0, false);
    c->qkv_bias = strcmp(arch, "qwen2") == 0 || has_role(m, arch, APR_ROLE_ATTN_Q, 0, true) ||
                  has_role(m, arch, APR_ROLE_ATTN_QKV, 0, true);
    m->has_cfg = true;
    return 0;
}

int apr_model_derive(apr_model *m, apr_err *err)
{
    int rc = derive_tokenizer(m, err);
    if (rc)
        return rc;
    return derive_config(m, err);
}
