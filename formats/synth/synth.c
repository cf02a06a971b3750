/* synth.c - deterministic synthetic LLaMA / Qwen2 models (the algorithm is
 * documented beside apr_synth_config in formats.h; tests recompute it).
 *
 * The generator is counter-based (every element is a hash of seed, tensor
 * name and element index), so a tensor can be produced in any chunking, and a
 * multi-GB model is written tensor by tensor through the safetensors writer's
 * producer hook without ever being held in memory.
 */
#include "apr_util.h"
#include "hfmeta.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_CHUNK_ELEMS (1u << 20)

/* ================================================================ generator */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}


typedef enum { GEN_MATRIX, GEN_NORM, GEN_BIAS } gen_kind;

typedef struct gen_tensor {
    uint64_t stream;
    gen_kind kind;
    uint64_t cols;
    float scale;       /* 1/sqrt(cols) for matrices */
    float *chan_mult;  /* cols entries (matrices) */
} gen_tensor;

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int gen_init(gen_tensor *g, uint64_t seed, const apr_tensor *t, apr_err *err)
{
    memset(g, 0, sizeof *g);
    g->stream = mix64(seed ^ apr_fnv1a64(t->name, strlen(t->name)));
    if (t->ndim == 2) {
        g->kind = GEN_MATRIX;
        g->cols = t->dims[1];
        g->scale = 1.0f / sqrtf((float)g->cols);
        g->chan_mult = malloc((g->cols ? g->cols : 1) * sizeof *g->chan_mult);
        if (!g->chan_mult)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        for (uint64_t c = 0; c < g->cols; c++)
            g->chan_mult[c] = (mix64(g->stream + (c + 1) * 0xD6E8FEB86659FD93ull) & 127) == 0 ? 5.0f : 1.0f;
    } else {
        g->kind = ends_with(t->name, "norm.weight") ? GEN_NORM : GEN_BIAS;
    }
    return 0;
}

static inline float gen_z(uint64_t u)
{
    int s = (int)(u & 0xFFFF) + (int)(u >> 16 & 0xFFFF) + (int)(u >> 32 & 0xFFFF) + (int)(u >> 48) - 131070;
    return (float)s * 2.6428997e-05f;
}

/* Elements [first, first + n) of tensor g as f32 into v. Loops are split by
 * kind so that the per-element work has no kind/dtype branches. */
static void gen_f32(const gen_tensor *g, uint64_t first, uint64_t n, float *v)
{
    const uint64_t base = g->stream + (first + 1) * 0x9E3779B97F4A7C15ull;
    if (g->kind == GEN_NORM) {
        for (uint64_t k = 0; k < n; k++)
            v[k] = 1.0f + 0.1f * gen_z(mix64(base + k * 0x9E3779B97F4A7C15ull));
        return;
    }
    if (g->kind == GEN_BIAS) {
        for (uint64_t k = 0; k < n; k++)
            v[k] = 0.1f * gen_z(mix64(base + k * 0x9E3779B97F4A7C15ull));
        return;
    }
    uint64_t col = first % g->cols;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t u = mix64(base + k * 0x9E3779B97F4A7C15ull);
        float x = gen_z(u) * g->scale;
        x *= g->chan_mult[col];
        if (++col == g->cols)
            col = 0;
        uint64_t o = mix64(u ^ 0x632BE59BD9B4E019ull);
        if (o % 1000 == 0)
            x *= (float)(8 + (o >> 32) % 13);
        v[k] = x;
    }
}

/* Round-to-nearest-even conversions (NaN never occurs here: values are
 * bounded). The formats library cannot depend on libquant, which depends on
 * it; tests check these against libquant's converters. */
static uint16_t to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x477FF000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7C00u);
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u) /* < 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23); /* 14 .. 24 */
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((ax >> 13) - (112u << 10));
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* Elements [first, first + n) of tensor g as dtype dt into out (n floats of
 * room: 16-bit results are packed in place, front to back). */
static void gen_fill(const gen_tensor *g, apr_dtype dt, uint64_t first, uint64_t n, uint8_t *out)
{
    float *v = (float *)(void *)out;
    gen_f32(g, first, n, v);
    if (dt == APR_DT_F32)
        return;
    for (uint64_t k = 0; k < n; k++) {
        uint16_t h = dt == APR_DT_F16 ? to_f16(v[k]) : to_bf16(v[k]);
        memcpy(out + 2 * k, &h, 2); /* bytes 2k..2k+1 lie in v[k/2] <= v[k], already read */
    }
}

/* ================================================================ presets */

static const char *const preset_names[] = {"tiny-llama",  "tiny-qwen2",  "llama-7b-layer", "qwen2-7b-layer",
                                           "tiny-qwen3",  "tiny-gemma2", "tiny-phi3",      "tiny-mistral",
                                           "tiny-gemma3", NULL};

const char *const *apr_synth_preset_names(void)
{
    return preset_names;
}

const char *apr_synth_family(const apr_synth_config *c)
{
    return !strcmp(c->arch, "llama") && c->sliding_window ? "mistral" : c->arch;
}

int apr_synth_preset(apr_synth_config *c, const char *p, apr_err *err)
{
    memset(c, 0, sizeof *c);
    c->seed = 42;
    if (!strcmp(p, "tiny-llama") || !strcmp(p, "tiny-qwen2")) {
        bool q = p[5] == 'q';
        snprintf(c->arch, sizeof c->arch, "%s", q ? "qwen2" : "llama");
        /* Small, but every row length a multiple of 256 so k-quants apply. */
        c->n_layers = 2; c->hidden = 256; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 64;
        c->ffn = 512; c->vocab = 1024; c->ctx = 512;
        c->tied = q; c->qkv_bias = q;
        c->dtype = APR_DT_F32;
        c->rope_theta = q ? 1000000.0f : 10000.0f;
        c->rms_eps = q ? 1e-6f : 1e-5f;
    } else if (!strcmp(p, "llama-7b-layer")) {
        snprintf(c->arch, sizeof c->arch, "llama");
        c->n_layers = 1; c->hidden = 4096; c->n_heads = 32; c->n_kv_heads = 32; c->head_dim = 128;
        c->ffn = 11008; c->vocab = 32000; c->ctx = 4096;
        c->dtype = APR_DT_F16;
        c->rope_theta = 10000.0f;
        c->rms_eps = 1e-5f;
    } else if (!strcmp(p, "qwen2-7b-layer")) {
        snprintf(c->arch, sizeof c->arch, "qwen2");
        c->n_layers = 1; c->hidden = 3584; c->n_heads = 28; c->n_kv_heads = 4; c->head_dim = 128;
        c->ffn = 18944; c->vocab = 152064; c->ctx = 32768;
        c->qkv_bias = true;
        c->dtype = APR_DT_BF16;
        c->rope_theta = 1000000.0f;
        c->rms_eps = 1e-6f;
    } else if (!strcmp(p, "tiny-qwen3") || !strcmp(p, "tiny-gemma2") || !strcmp(p, "tiny-phi3") ||
               !strcmp(p, "tiny-mistral") || !strcmp(p, "tiny-gemma3")) {
        /* the tiny shape in the other families (head_dim 64: a multiple of
         * 256 in every fused row too); Mistral is GGUF llama with a window,
         * Gemma 3 has six layers so that its pattern (five sliding, one
         * full) shows, both windows shorter than the context */
        const bool mistral = !strcmp(p, "tiny-mistral"), gemma3 = !strcmp(p, "tiny-gemma3");
        snprintf(c->arch, sizeof c->arch, "%s", mistral ? "llama" : p + 5);
        c->n_layers = gemma3 ? 6 : 2; c->hidden = 256; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 64;
        c->ffn = 512; c->vocab = 1024; c->ctx = 512;
        c->tied = strcmp(p, "tiny-phi3") != 0 && !mistral;
        c->dtype = APR_DT_F32;
        c->rope_theta = !strcmp(p, "tiny-qwen3") || gemma3 ? 1000000.0f : 10000.0f;
        c->rms_eps = 1e-6f;
        if (mistral || gemma3 || !strcmp(p, "tiny-gemma2"))
            c->sliding_window = c->ctx / 2;
    } else {
        return apr_err_set(err, APR_E_ARG,
                           "unknown preset '%s' (tiny-llama, tiny-qwen2, llama-7b-layer, qwen2-7b-layer, tiny-qwen3, "
                           "tiny-gemma2, tiny-phi3, tiny-mistral, tiny-gemma3)", p);
    }
    snprintf(c->name, sizeof c->name, "synth-%s", p);
    return 0;
}

int apr_synth_validate(const apr_synth_config *c, apr_err *err)
{
    bool llama = !strcmp(c->arch, "llama"), qwen2 = !strcmp(c->arch, "qwen2"), qwen3 = !strcmp(c->arch, "qwen3"),
         gemma2 = !strcmp(c->arch, "gemma2"), phi3 = !strcmp(c->arch, "phi3"), gemma3 = !strcmp(c->arch, "gemma3");
    if (!llama && !qwen2 && !qwen3 && !gemma2 && !phi3 && !gemma3)
        return apr_err_set(err, APR_E_ARG, "unknown architecture '%s' (llama, qwen2, qwen3, gemma2, gemma3, phi3)",
                           c->arch);
    if (gemma2 && (!c->tied || c->qkv_bias || c->rope_theta != 10000.0f))
        return apr_err_set(err, APR_E_ARG, "gemma2 is tied, has no biases and rope theta 10000 (llama.cpp's form)");
    if (gemma3 && (!c->tied || c->qkv_bias))
        return apr_err_set(err, APR_E_ARG, "gemma3 is tied and has no biases here");
    if ((gemma2 || gemma3) && !c->sliding_window)
        return apr_err_set(err, APR_E_ARG, "%s needs a sliding window (its HF config has one)", c->arch);
    if (c->sliding_window && !llama && !gemma2 && !gemma3)
        return apr_err_set(err, APR_E_ARG, "a sliding window is made for llama (Mistral), gemma2 and gemma3 only");
    if (phi3 && (c->qkv_bias || (uint64_t)c->head_dim * c->n_heads != c->hidden))
        return apr_err_set(err, APR_E_ARG, "phi3 has no biases and head dim hidden / heads");
    if (c->n_layers == 0 || c->n_layers > 4096)
        return apr_err_set(err, APR_E_ARG, "layers must be in 1..4096 (got %u)", c->n_layers);
    if (c->hidden == 0 || c->hidden > (1u << 20) || c->ffn == 0 || c->ffn > (1u << 22))
        return apr_err_set(err, APR_E_ARG, "hidden (%u) and ffn (%u) must be > 0 and reasonable", c->hidden,
                           c->ffn);
    if (c->n_heads == 0 || c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads)
        return apr_err_set(err, APR_E_ARG, "heads (%u) must be a positive multiple of kv heads (%u)",
                           c->n_heads, c->n_kv_heads);
    if (c->head_dim < 2 || c->head_dim % 2 || (uint64_t)c->head_dim * c->n_heads > (1u << 20))
        return apr_err_set(err, APR_E_ARG, "head dim must be even and >= 2 (got %u)", c->head_dim);
    if (c->vocab < 512 || c->vocab > (1u << 22))
        return apr_err_set(err, APR_E_ARG, "vocab must be in 512..4194304 (got %u)", c->vocab);
    if (c->dtype != APR_DT_F32 && c->dtype != APR_DT_F16 && c->dtype != APR_DT_BF16)
        return apr_err_set(err, APR_E_ARG, "dtype must be F32, F16 or BF16");
    if (qwen2 && !c->qkv_bias)
        return apr_err_set(err, APR_E_ARG, "Qwen2 models always carry q/k/v biases");
    if (!(c->rope_theta > 0.0f) || !(c->rms_eps > 0.0f) || !isfinite(c->rope_theta) || !isfinite(c->rms_eps))
        return apr_err_set(err, APR_E_ARG, "rope theta and rms epsilon must be finite and > 0");
    return 0;
}

/* ================================================================ tokenizer */

typedef struct synth_tok {
    uint32_t n;
    apr_str *tokens;
    float *scores;
    int32_t *types;
    uint32_t n_merges;
    apr_str *merges;
} synth_tok;

static void synth_tok_free(synth_tok *t)
{
    for (uint32_t i = 0; t->tokens && i < t->n; i++)
        free(t->tokens[i].s);
    for (uint32_t i = 0; t->merges && i < t->n_merges; i++)
        free(t->merges[i].s);
    free(t->tokens);
    free(t->scores);
    free(t->types);
    free(t->merges);
    memset(t, 0, sizeof *t);
}

static bool dup_str(apr_str *d, const char *s, size_t len)
{
    d->s = malloc(len + 1);
    if (!d->s)
        return false;
    memcpy(d->s, s, len);
    d->s[len] = 0;
    d->len = len;
    return true;
}

/* UTF-8 of a code point below 0x800 (all GPT-2 byte-level characters are). */
static size_t utf8_2(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* Characters in a rough English frequency order: merges are drawn mostly
 * from the front of this list, so that pieces such as "th", "he", "▁t" exist
 * and tokenizers actually merge on ordinary text. */
static const char char_order[] = "etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,'!?\"-:;()";

/* Pieces: the base alphabet, then merged pieces (two earlier pieces,
 * concatenated; unique, at most 24 bytes), picked with a quadratic bias
 * toward the front of the pick order. Returns the number of pieces made. */
static int make_pieces(apr_str *p, uint32_t nbase, uint32_t total, const uint32_t *pick0, apr_str *merges,
                       uint64_t seed, apr_err *err)
{
    apr_strmap set; /* the pieces made so far, to keep them unique */
    const int set_rc = apr_strmap_init(&set, total);
    uint32_t *pick = malloc((size_t)total * sizeof *pick);
    int rc = 0;
    if (set_rc || !pick) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < nbase; i++) {
        pick[i] = pick0[i];
        apr_strmap_put(&set, p[i].s, (uint32_t)p[i].len, (int32_t)i);
    }
    uint64_t state = mix64(seed ^ 0x746F6B656E697A65ull /* "tokenize" */), tries = 0;
    char buf[64];
    for (uint32_t id = nbase; id < total;) {
        if (++tries > 64ull * total) {
            rc = apr_err_set(err, APR_E_ARG, "cannot generate %u distinct tokens", total);
            goto done;
        }
        state += 0x9E3779B97F4A7C15ull;
        uint64_t r = mix64(state), x = r & 0xFFFF, y = (r >> 16) & 0xFFFF;
        uint32_t a = pick[(id * x * x) >> 32], b = pick[(id * y * y) >> 32];
        uint64_t la = p[a].len, lb = p[b].len;
        if (la + lb > 24)
            continue;
        memcpy(buf, p[a].s, la);
        memcpy(buf + la, p[b].s, lb);
        if (apr_strmap_get(&set, buf, la + lb) >= 0)
            continue;
        if (!dup_str(&p[id], buf, la + lb))
            goto oom;
        apr_strmap_put(&set, p[id].s, (uint32_t)p[id].len, (int32_t)id);
        if (merges) {
            apr_str *mg = &merges[id - nbase];
            buf[la] = ' ';
            memcpy(buf + la + 1, p[b].s, lb);
            if (!dup_str(mg, buf, la + lb + 1))
                goto oom;
        }
        pick[id] = id;
        id++;
    }
    goto done;
oom:
    rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
done:
    apr_strmap_free(&set);
    free(pick);
    return rc;
}

static int build_tokenizer(synth_tok *t, const apr_synth_config *c, bool gpt2, apr_err *err)
{
    memset(t, 0, sizeof *t);
    uint32_t n = c->vocab;
    t->n = n;
    t->tokens = calloc(n, sizeof *t->tokens);
    t->scores = calloc(n, sizeof *t->scores);
    t->types = calloc(n, sizeof *t->types);
    t->merges = gpt2 ? calloc(n, sizeof *t->merges) : NULL;
    apr_str *p = calloc(n, sizeof *p);
    uint32_t pick0[256];
    int rc = 0;
    if (!t->tokens || !t->scores || !t->types || (gpt2 && !t->merges) || !p) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    char buf[16];
    if (gpt2) {
        /* ids 0..255: GPT-2's bytes_to_unicode order (printable bytes map to
         * themselves, the others to U+0100 + k); merged pieces next; three
         * control tokens at the end, like Qwen2's. */
        uint32_t k = 0, id = 0, byte_id[256];
        for (uint32_t pass = 0; pass < 2; pass++)
            for (uint32_t b = 0; b < 256; b++) {
                bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
                if (printable != (pass == 0))
                    continue;
                size_t len = utf8_2(printable ? b : 256 + k++, buf);
                if (!dup_str(&p[id], buf, len))
                    goto oom;
                byte_id[b] = id++;
            }
        bool used[256] = {false};
        uint32_t np = 0;
        for (const char *ch = char_order; *ch; ch++) {
            if (ch - char_order == 26)
                pick0[np++] = byte_id[' '], used[' '] = true; /* 'Ġ' after the lowercase letters */
            pick0[np++] = byte_id[(uint8_t)*ch];
            used[(uint8_t)*ch] = true;
        }
        for (uint32_t b = 0; b < 256; b++)
            if (!used[b])
                pick0[np++] = byte_id[b];
        if ((rc = make_pieces(p, 256, n - 3, pick0, t->merges, c->seed, err)))
            goto done;
        t->n_merges = n - 3 - 256;
        for (uint32_t i = 0; i < n - 3; i++) {
            t->tokens[i] = p[i];
            t->types[i] = 1;
            p[i].s = NULL;
        }
        static const char *const ctl[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
        for (uint32_t i = 0; i < 3; i++) {
            if (!dup_str(&t->tokens[n - 3 + i], ctl[i], strlen(ctl[i])))
                goto oom;
            t->types[n - 3 + i] = 3;
        }
    } else {
        /* SentencePiece layout: <unk> <s> </s>, 256 byte pieces, then the
         * merged pieces by rank and the single characters last (as
         * SentencePiece's BPE trainer orders them); score = -(id - 259). */
        uint32_t nbase = 0;
        if (!dup_str(&p[nbase++], "\xe2\x96\x81", 3))
            goto oom;
        for (const char *ch = char_order; *ch; ch++)
            if (!dup_str(&p[nbase++], ch, 1))
                goto oom;
        for (uint32_t i = 0; i < nbase; i++)
            pick0[i] = i;
        uint32_t npieces = n - 259;
        if ((rc = make_pieces(p, nbase, npieces, pick0, NULL, c->seed, err)))
            goto done;
        static const char *const ctl[] = {"<unk>", "<s>", "</s>"};
        for (uint32_t i = 0; i < 3; i++) {
            if (!dup_str(&t->tokens[i], ctl[i], strlen(ctl[i])))
                goto oom;
            t->types[i] = i == 0 ? 2 : 3;
        }
        for (uint32_t b = 0; b < 256; b++) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            if (!dup_str(&t->tokens[3 + b], buf, 6))
                goto oom;
            t->types[3 + b] = 6;
        }
        uint32_t id = 259;
        for (uint32_t i = nbase; i < npieces; i++, id++)
            t->tokens[id] = p[i], p[i].s = NULL;
        for (uint32_t i = 0; i < nbase; i++, id++)
            t->tokens[id] = p[i], p[i].s = NULL;
        for (id = 259; id < n; id++) {
            t->types[id] = 1;
            t->scores[id] = -(float)(id - 259);
        }
    }
    goto done;
oom:
    rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
done:
    if (p)
        for (uint32_t i = 0; i < n; i++)
            free(p[i].s);
    free(p);
    if (rc)
        synth_tok_free(t);
    return rc;
}

/* ================================================================ KVs and tensors */

static const char qwen2_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static int set_arr(apr_model *m, const char *key, apr_kv_type et, void *arr, uint64_t n)
{
    apr_kv kv = {0};
    kv.key = (char *)key;
    kv.type = APR_KV_ARRAY;
    kv.arr_type = et;
    kv.arr = arr;
    kv.count = n;
    return apr_model_set_kv(m, &kv);
}

/* The KVs apr_safetensors_open derives from the HF files this model writes
 * (see hfmeta.c: the order and types of convert_hf_to_gguf.py). */
static int synth_kvs(apr_model *m, const apr_synth_config *c, apr_err *err)
{
    const bool gpt2 = !strcmp(c->arch, "qwen2") || !strcmp(c->arch, "qwen3"), gemma2 = !strcmp(c->arch, "gemma2"),
               phi3 = !strcmp(c->arch, "phi3"), gemma3 = !strcmp(c->arch, "gemma3");
    char key[128], name[80];
    int rc = 0;
#define K(s) (snprintf(key, sizeof key, "%s.%s", c->arch, s), key)
    snprintf(name, sizeof name, "%s", c->name[0] ? c->name : (gpt2 ? "synth-qwen2" : "synth-llama"));
    rc |= apr_model_set_kv_str(m, "general.architecture", c->arch);
    rc |= apr_model_set_kv_str(m, "general.name", name);
    rc |= apr_model_set_kv_u32(m, K("block_count"), c->n_layers);
    rc |= apr_model_set_kv_u32(m, K("context_length"), c->ctx);
    rc |= apr_model_set_kv_u32(m, K("embedding_length"), c->hidden);
    rc |= apr_model_set_kv_u32(m, K("feed_forward_length"), c->ffn);
    rc |= apr_model_set_kv_u32(m, K("attention.head_count"), c->n_heads);
    rc |= apr_model_set_kv_u32(m, K("attention.head_count_kv"), c->n_kv_heads);
    if (!gemma2) /* llama.cpp's Gemma2Model writes no rope base (10000, its default) */
        rc |= apr_model_set_kv_f32(m, K("rope.freq_base"), c->rope_theta);
    if (gemma3) /* the sliding layers' base: llama.cpp's default, which HF's config records */
        rc |= apr_model_set_kv_f32(m, K("rope.freq_base_swa"), 10000.0f);
    rc |= apr_model_set_kv_f32(m, K("attention.layer_norm_rms_epsilon"), c->rms_eps);
    /* Qwen3 and Gemma always record head_dim (hfmeta.c writes it: their HF
     * defaults are not hidden / heads) */
    if ((c->head_dim * c->n_heads != c->hidden || gemma2 || gemma3 || !strcmp(c->arch, "qwen3")) && !phi3) {
        rc |= apr_model_set_kv_u32(m, K("attention.key_length"), c->head_dim);
        rc |= apr_model_set_kv_u32(m, K("attention.value_length"), c->head_dim);
    }
    if (!strcmp(c->arch, "llama")) {
        rc |= apr_model_set_kv_u32(m, K("vocab_size"), c->vocab);
        rc |= apr_model_set_kv_u32(m, K("rope.dimension_count"), c->head_dim);
    }
    if (gemma2) { /* llama.cpp's defaults */
        rc |= apr_model_set_kv_f32(m, K("attn_logit_softcapping"), 50.0f);
        rc |= apr_model_set_kv_f32(m, K("final_logit_softcapping"), 30.0f);
    }
    if (c->sliding_window) /* Mistral's, Gemma's */
        rc |= apr_model_set_kv_u32(m, K("attention.sliding_window"), c->sliding_window);
    if (gemma2 || gemma3) /* Gemma's SentencePiece vocabulary has no dummy prefix */
        rc |= apr_model_set_kv_bool(m, "tokenizer.ggml.add_space_prefix", false);
    if (phi3) { /* as Phi3MiniModel writes them; no window */
        rc |= apr_model_set_kv_u32(m, K("rope.scaling.original_context_length"), c->ctx);
        rc |= apr_model_set_kv_u32(m, K("rope.dimension_count"), c->head_dim);
        rc |= apr_model_set_kv_u32(m, K("attention.sliding_window"), 0);
    }
#undef K
    if (rc)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");

    synth_tok t;
    if ((rc = build_tokenizer(&t, c, gpt2, err)))
        return rc;
    rc |= apr_model_set_kv_str(m, "tokenizer.ggml.model", gpt2 ? "gpt2" : "llama");
    rc |= apr_model_set_kv_str(m, "tokenizer.ggml.pre", gpt2 ? "qwen2" : "default");
    rc |= set_arr(m, "tokenizer.ggml.tokens", APR_KV_STRING, t.tokens, t.n);
    if (!gpt2)
        rc |= set_arr(m, "tokenizer.ggml.scores", APR_KV_F32, t.scores, t.n);
    rc |= set_arr(m, "tokenizer.ggml.token_type", APR_KV_I32, t.types, t.n);
    if (gpt2) {
        rc |= set_arr(m, "tokenizer.ggml.merges", APR_KV_STRING, t.merges, t.n_merges);
        uint32_t eot = c->vocab - 3;
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.bos_token_id", eot);
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.eos_token_id", eot);
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.padding_token_id", eot);
        rc |= apr_model_set_kv_bool(m, "tokenizer.ggml.add_bos_token", false);
        rc |= apr_model_set_kv_bool(m, "tokenizer.ggml.add_eos_token", false);
        rc |= apr_model_set_kv_str(m, "tokenizer.chat_template", qwen2_template);
    } else {
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.bos_token_id", 1);
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.eos_token_id", 2);
        rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.unknown_token_id", 0);
        if (phi3) /* Phi3Config's default pad id (32000) lies outside this vocabulary */
            rc |= apr_model_set_kv_u32(m, "tokenizer.ggml.padding_token_id", 0);
        rc |= apr_model_set_kv_bool(m, "tokenizer.ggml.add_bos_token", true);
        rc |= apr_model_set_kv_bool(m, "tokenizer.ggml.add_eos_token", false);
    }
    synth_tok_free(&t);
    return rc ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

/* Adds the tensors in HF state-dict order with data NULL (filled later). */
static int synth_tensors(apr_model *m, const apr_synth_config *c, apr_err *err)
{
    uint64_t H = c->hidden, F = c->ffn, V = c->vocab;
    uint64_t Q = (uint64_t)c->n_heads * c->head_dim, KV = (uint64_t)c->n_kv_heads * c->head_dim;
    char name[128];
    int rc;
#define ADD(nd, d0, d1)                                                                             \
    do {                                                                                            \
        uint64_t dims[2] = {(d0), (d1)}, nb;                                                        \
        if (!apr_dtype_tensor_bytes(c->dtype, (nd), dims, &nb))                                     \
            return apr_err_set(err, APR_E_ARG, "tensor %s: size overflow", name);                   \
        if ((rc = apr_model_add_tensor(m, name, c->dtype, (nd), dims, NULL, nb, false, err)))       \
            return rc;                                                                              \
    } while (0)
    snprintf(name, sizeof name, "model.embed_tokens.weight");
    ADD(2, V, H);
    static const char *const attn[] = {"q_proj", "k_proj", "v_proj"};
    const bool phi3 = !strcmp(c->arch, "phi3"), gemma = !strcmp(c->arch, "gemma2") || !strcmp(c->arch, "gemma3");
    const bool qk_norm = !strcmp(c->arch, "qwen3") || !strcmp(c->arch, "gemma3");
    for (uint32_t l = 0; l < c->n_layers; l++) {
        if (phi3) { /* HF's own fusions */
            snprintf(name, sizeof name, "model.layers.%u.self_attn.qkv_proj.weight", l);
            ADD(2, Q + 2 * KV, H);
            snprintf(name, sizeof name, "model.layers.%u.self_attn.o_proj.weight", l);
            ADD(2, H, Q);
            snprintf(name, sizeof name, "model.layers.%u.mlp.gate_up_proj.weight", l);
            ADD(2, 2 * F, H);
            snprintf(name, sizeof name, "model.layers.%u.mlp.down_proj.weight", l);
            ADD(2, H, F);
            snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
            ADD(1, H, 0);
            snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
            ADD(1, H, 0);
            continue;
        }
        for (int a = 0; a < 3; a++) {
            uint64_t rows = a == 0 ? Q : KV;
            snprintf(name, sizeof name, "model.layers.%u.self_attn.%s.weight", l, attn[a]);
            ADD(2, rows, H);
            if (c->qkv_bias) {
                snprintf(name, sizeof name, "model.layers.%u.self_attn.%s.bias", l, attn[a]);
                ADD(1, rows, 0);
            }
        }
        if (qk_norm) {
            snprintf(name, sizeof name, "model.layers.%u.self_attn.q_norm.weight", l);
            ADD(1, c->head_dim, 0);
            snprintf(name, sizeof name, "model.layers.%u.self_attn.k_norm.weight", l);
            ADD(1, c->head_dim, 0);
        }
        snprintf(name, sizeof name, "model.layers.%u.self_attn.o_proj.weight", l);
        ADD(2, H, Q);
        snprintf(name, sizeof name, "model.layers.%u.mlp.gate_proj.weight", l);
        ADD(2, F, H);
        snprintf(name, sizeof name, "model.layers.%u.mlp.up_proj.weight", l);
        ADD(2, F, H);
        snprintf(name, sizeof name, "model.layers.%u.mlp.down_proj.weight", l);
        ADD(2, H, F);
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        ADD(1, H, 0);
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        ADD(1, H, 0);
        if (gemma) { /* post_attention_layernorm above is Gemma's attention-output norm */
            snprintf(name, sizeof name, "model.layers.%u.pre_feedforward_layernorm.weight", l);
            ADD(1, H, 0);
            snprintf(name, sizeof name, "model.layers.%u.post_feedforward_layernorm.weight", l);
            ADD(1, H, 0);
        }
    }
    snprintf(name, sizeof name, "model.norm.weight");
    ADD(1, H, 0);
    if (!c->tied) {
        snprintf(name, sizeof name, "lm_head.weight");
        ADD(2, V, H);
    }
#undef ADD
    return 0;
}

/* Model skeleton: KVs, derived config, tensors without data. */
int apr_synth_skeleton(apr_model **out, const apr_synth_config *c, apr_err *err)
{
    *out = NULL;
    int rc = apr_synth_validate(c, err);
    if (rc)
        return rc;
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (!m)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    if ((rc = synth_kvs(m, c, err)) || (rc = synth_tensors(m, c, err)) || (rc = apr_model_derive(m, err))) {
        apr_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int apr_synth_model(apr_model **out, const apr_synth_config *c, apr_err *err)
{
    apr_model *m;
    int rc = apr_synth_skeleton(&m, c, err);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        apr_tensor *t = &m->tensors[i];
        uint64_t n;
        apr_dims_count(t->ndim, t->dims, &n);
        t->owned = malloc(t->nbytes ? t->nbytes : 1);
        gen_tensor g;
        if (!t->owned || (rc = gen_init(&g, c->seed, t, err))) {
            apr_model_free(m);
            return rc ? rc : apr_err_set(err, APR_E_NOMEM, "out of memory (tensor %s)", t->name);
        }
        /* gen_fill needs 4 bytes of room per element: chunks through a scratch
         * buffer for the 16-bit dtypes. */
        size_t es = apr_dtype_get(t->dtype)->block_bytes;
        uint8_t *scratch = es == 4 ? NULL : malloc((size_t)SYNTH_CHUNK_ELEMS * 4);
        if (es != 4 && !scratch) {
            free(g.chan_mult);
            apr_model_free(m);
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
        }
        for (uint64_t first = 0; first < n; first += SYNTH_CHUNK_ELEMS) {
            uint64_t k = n - first < SYNTH_CHUNK_ELEMS ? n - first : SYNTH_CHUNK_ELEMS;
            gen_fill(&g, t->dtype, first, k, scratch ? scratch : t->owned + first * 4);
            if (scratch)
                memcpy(t->owned + first * es, scratch, (size_t)(k * es));
        }
        free(scratch);
        free(g.chan_mult);
        t->data = t->owned;
    }
    *out = m;
    return 0;
}

typedef struct synth_stream {
    const apr_synth_config *c;
    uint8_t *buf; /* SYNTH_CHUNK_ELEMS * 4 bytes */
} synth_stream;

static int synth_fill(void *ctx, const apr_model *m, uint64_t idx, apr_outfile *f, apr_err *err)
{
    synth_stream *s = ctx;
    const apr_tensor *t = &m->tensors[idx];
    uint64_t n;
    apr_dims_count(t->ndim, t->dims, &n);
    size_t es = apr_dtype_get(t->dtype)->block_bytes;
    gen_tensor g;
    int rc = gen_init(&g, s->c->seed, t, err);
    for (uint64_t first = 0; !rc && first < n; first += SYNTH_CHUNK_ELEMS) {
        uint64_t k = n - first < SYNTH_CHUNK_ELEMS ? n - first : SYNTH_CHUNK_ELEMS;
        gen_fill(&g, t->dtype, first, k, s->buf);
        rc = apr_outfile_write(f, s->buf, (size_t)(k * es), err);
    }
    free(g.chan_mult);
    return rc;
}

int apr_synth_write(const apr_synth_config *c, const char *path, const apr_write_opts *o, apr_err *err)
{
    apr_model *m;
    int rc = apr_synth_skeleton(&m, c, err);
    if (rc)
        return rc;
    synth_stream s = {c, malloc((size_t)SYNTH_CHUNK_ELEMS * 4)};
    if (!s.buf) {
        apr_model_free(m);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    rc = apr_safetensors_write_ex(m, path, o, synth_fill, &s, err);
    free(s.buf);
    apr_model_free(m);
    return rc;
}
