/* test_synth.c - the deterministic synthetic-model generator and `apr synth`. */
#include "test_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant.h"

/* ---------------------------------------------------------------- the documented algorithm,
 * re-implemented here from formats.h's description (not shared with synth.c) */

static uint64_t doc_mix(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}

static uint64_t doc_fnv(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static float doc_value(uint64_t seed, const apr_tensor *t, uint64_t i)
{
    uint64_t stream = doc_mix(seed ^ doc_fnv(t->name));
    uint64_t u = doc_mix(stream + (i + 1) * 0x9E3779B97F4A7C15ull);
    float z = (float)((int)(u & 0xFFFF) + (int)(u >> 16 & 0xFFFF) + (int)(u >> 32 & 0xFFFF) + (int)(u >> 48) -
                      131070) * 2.6428997e-05f;
    size_t n = strlen(t->name);
    if (t->ndim == 1)
        return n >= 11 && !strcmp(t->name + n - 11, "norm.weight") ? 1.0f + 0.1f * z : 0.1f * z;
    uint64_t cols = t->dims[1], c = i % cols;
    float v = z * (1.0f / sqrtf((float)cols));
    if ((doc_mix(stream + (c + 1) * 0xD6E8FEB86659FD93ull) & 127) == 0)
        v *= 5.0f;
    uint64_t o = doc_mix(u ^ 0x632BE59BD9B4E019ull);
    if (o % 1000 == 0)
        v *= (float)(8 + (o >> 32) % 13);
    return v;
}

static float stored_value(const apr_tensor *t, uint64_t i)
{
    uint16_t h;
    float f;
    switch (t->dtype) {
    case APR_DT_F32: memcpy(&f, t->data + 4 * i, 4); return f;
    case APR_DT_F16: memcpy(&h, t->data + 2 * i, 2); return apr_f16_to_f32(h);
    case APR_DT_BF16: memcpy(&h, t->data + 2 * i, 2); return apr_bf16_to_f32(h);
    default: fail_msg("unexpected dtype"); return 0;
    }
}

static uint16_t stored_bits16(const apr_tensor *t, uint64_t i)
{
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return h;
}

static apr_synth_config preset(const char *name)
{
    apr_synth_config c;
    apr_err err = {0};
    if (apr_synth_preset(&c, name, &err))
        fail_msg("%s", err.msg);
    return c;
}

static void file_sha(const char *path, char hex[65])
{
    uint8_t d[32];
    apr_err err = {0};
    if (apr_sha256_file(path, d, &err))
        fail_msg("%s", err.msg);
    apr_sha256_hex(d, hex);
}

/* ---------------------------------------------------------------- tests */

static void test_determinism(void **state)
{
    (void)state;
    apr_synth_config c = preset("tiny-qwen2");
    c.dtype = APR_DT_BF16;
    const char *dir = tu_tmpdir("synth-det");
    char a[4096], b[4096], s[4096];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(s, sizeof s, "%s/s", dir);
    apr_err err = {0};
    assert_int_equal(apr_synth_write(&c, a, NULL, &err), 0);
    assert_int_equal(apr_synth_write(&c, b, NULL, &err), 0);
    c.seed = 43;
    assert_int_equal(apr_synth_write(&c, s, NULL, &err), 0);
    static const char *const files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 4; i++) {
        char ha[65], hb[65];
        file_sha(tu_path(a, files[i]), ha);
        file_sha(tu_path(b, files[i]), hb);
        if (strcmp(ha, hb))
            fail_msg("%s differs between two runs with the same seed", files[i]);
    }
    char ha[65], hs[65];
    file_sha(tu_path(a, "model.safetensors"), ha);
    file_sha(tu_path(s, "model.safetensors"), hs);
    assert_string_not_equal(ha, hs);

    /* The streamed file equals the in-memory model, tensor for tensor. */
    c.seed = 42;
    apr_model *m = NULL, *r = NULL;
    assert_int_equal(apr_synth_model(&m, &c, &err), 0);
    if (apr_safetensors_open(&r, a, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m->n_tensors, r->n_tensors);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        assert_string_equal(m->tensors[i].name, r->tensors[i].name);
        assert_int_equal(m->tensors[i].nbytes, r->tensors[i].nbytes);
        assert_memory_equal(m->tensors[i].data, r->tensors[i].data, m->tensors[i].nbytes);
    }
    apr_model_free(m);
    apr_model_free(r);
}

/* Values equal the documented algorithm (F32 exactly; F16/BF16 = libquant's rounding of it). */
static void test_documented_values(void **state)
{
    (void)state;
    const apr_dtype dts[] = {APR_DT_F32, APR_DT_F16, APR_DT_BF16};
    for (int k = 0; k < 3; k++) {
        apr_synth_config c = preset("tiny-llama");
        c.dtype = dts[k];
        c.seed = 1234567 + (uint64_t)k;
        apr_model *m = NULL;
        apr_err err = {0};
        assert_int_equal(apr_synth_model(&m, &c, &err), 0);
        uint64_t checked = 0, outliers = 0;
        for (uint64_t ti = 0; ti < m->n_tensors; ti++) {
            const apr_tensor *t = &m->tensors[ti];
            uint64_t n;
            assert_true(apr_dims_count(t->ndim, t->dims, &n));
            /* a few spread-out elements of every tensor, plus all of one matrix */
            bool all = !strcmp(t->name, "model.layers.1.mlp.down_proj.weight");
            for (uint64_t j = 0; j < (all ? n : 7); j++) {
                uint64_t i = all ? j : (j * 2654435761ull) % n;
                float want = doc_value(c.seed, t, i);
                if (c.dtype == APR_DT_F32) {
                    float got = stored_value(t, i);
                    if (memcmp(&got, &want, 4))
                        fail_msg("%s[%llu] = %.9g, documented algorithm gives %.9g", t->name,
                                 (unsigned long long)i, (double)got, (double)want);
                } else {
                    uint16_t want16 = c.dtype == APR_DT_F16 ? apr_f32_to_f16(want) : apr_f32_to_bf16(want);
                    if (stored_bits16(t, i) != want16)
                        fail_msg("%s[%llu] (%s): 0x%04x, want 0x%04x", t->name, (unsigned long long)i,
                                 apr_dtype_name(t->dtype), stored_bits16(t, i), want16);
                }
                if (t->ndim == 2 && fabsf(want) > 8.0f * 3.47f / sqrtf((float)t->dims[1]))
                    outliers++;
                checked++;
            }
        }
        assert_true(checked > 100000);
        assert_true(outliers > 0); /* the x8..x20 element outliers exist */
        apr_model_free(m);
    }
}

/* Statistics: matrices ~ N(0, 1/fan_in) with outliers, norms near 1. */
static void test_scale(void **state)
{
    (void)state;
    apr_synth_config c = preset("tiny-llama");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_synth_model(&m, &c, &err), 0);
    const apr_tensor *q = apr_model_tensor(m, "model.layers.0.self_attn.q_proj.weight");
    const apr_tensor *nrm = apr_model_tensor(m, "model.layers.0.input_layernorm.weight");
    assert_non_null(q);
    assert_non_null(nrm);
    double s = 0, s2 = 0, mx = 0;
    uint64_t n = q->dims[0] * q->dims[1];
    for (uint64_t i = 0; i < n; i++) {
        double v = stored_value(q, i);
        s += v;
        s2 += v * v;
        if (fabs(v) > mx)
            mx = fabs(v);
    }
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    assert_true(fabs(mean) < 0.01);
    assert_true(sd > 0.9 / 16 && sd < 1.6 / 16); /* 1/sqrt(256) with outliers on top */
    assert_true(mx > 8 * 1.0 / 16);              /* outliers */
    for (uint64_t i = 0; i < nrm->dims[0]; i++) {
        float v = stored_value(nrm, i);
        assert_true(v > 0.6f && v < 1.4f);
    }
    apr_model_free(m);
}

static void check_shapes(const apr_synth_config *c)
{
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_synth_skeleton(&m, c, &err))
        fail_msg("%s", err.msg);
    uint64_t H = c->hidden, Q = (uint64_t)c->n_heads * c->head_dim, KV = (uint64_t)c->n_kv_heads * c->head_dim;
    const apr_tensor *t = apr_model_tensor(m, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->dims[0], c->vocab);
    assert_int_equal(t->dims[1], H);
    char name[128];
    for (uint32_t l = 0; l < c->n_layers; l++) {
        struct { const char *n; uint64_t r, k; } w[] = {
            {"self_attn.q_proj.weight", Q, H}, {"self_attn.k_proj.weight", KV, H},
            {"self_attn.v_proj.weight", KV, H}, {"self_attn.o_proj.weight", H, Q},
            {"mlp.gate_proj.weight", c->ffn, H}, {"mlp.up_proj.weight", c->ffn, H},
            {"mlp.down_proj.weight", H, c->ffn}};
        for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
            snprintf(name, sizeof name, "model.layers.%u.%s", l, w[i].n);
            t = apr_model_tensor(m, name);
            if (!t)
                fail_msg("missing %s", name);
            assert_int_equal(t->ndim, 2);
            assert_int_equal(t->dims[0], w[i].r);
            assert_int_equal(t->dims[1], w[i].k);
            assert_int_equal(t->dtype, c->dtype);
        }
        static const char *const b[] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "model.layers.%u.self_attn.%s.bias", l, b[i]);
            t = apr_model_tensor(m, name);
            assert_int_equal(t != NULL, c->qkv_bias);
            if (t) {
                assert_int_equal(t->ndim, 1);
                assert_int_equal(t->dims[0], i ? KV : Q);
            }
        }
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        assert_non_null(apr_model_tensor(m, name));
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        assert_non_null(apr_model_tensor(m, name));
    }
    assert_non_null(apr_model_tensor(m, "model.norm.weight"));
    assert_int_equal(apr_model_tensor(m, "lm_head.weight") != NULL, !c->tied);
    uint64_t expect = 3 + (uint64_t)c->n_layers * (9 + (c->qkv_bias ? 3 : 0)) - (c->tied ? 1 : 0);
    assert_int_equal(m->n_tensors, expect);
    /* derived config matches the request */
    assert_true(m->has_cfg && m->has_tok);
    assert_string_equal(m->cfg.arch, c->arch);
    assert_int_equal(m->cfg.n_layers, c->n_layers);
    assert_int_equal(m->cfg.hidden, c->hidden);
    assert_int_equal(m->cfg.n_heads, c->n_heads);
    assert_int_equal(m->cfg.n_kv_heads, c->n_kv_heads);
    assert_int_equal(m->cfg.head_dim, c->head_dim);
    assert_int_equal(m->cfg.ffn, c->ffn);
    assert_int_equal(m->cfg.vocab, c->vocab);
    assert_int_equal(m->cfg.tied_embeddings, c->tied);
    assert_int_equal(m->cfg.qkv_bias, c->qkv_bias);
    assert_true(m->cfg.rope_theta == c->rope_theta);
    assert_int_equal(m->tok.n_tokens, c->vocab);
    assert_string_equal(m->tok.model, strcmp(c->arch, "qwen2") ? "llama" : "gpt2");
    /* tokens are unique */
    for (uint32_t i = 1; i < m->tok.n_tokens && m->tok.n_tokens <= 2048; i++)
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(m->tok.tokens[i].s, m->tok.tokens[j].s))
                fail_msg("token %u '%s' duplicates token %u", i, m->tok.tokens[i].s, j);
    apr_model_free(m);
}

/* The presets of the other families: written as HF directories, read back
 * with the family's config, tensors and forward-pass traits, and with no
 * apr_gguf record (the synthetic KVs are exactly what the HF reader derives
 * from the config.json written for them). */
static void test_family_presets(void **state)
{
    (void)state;
    static const struct {
        const char *preset, *arch, *probe; /* probe: a tensor only this family has */
        uint64_t n_tensors;
    } fams[] = {
        {"tiny-qwen3", "qwen3", "model.layers.1.self_attn.k_norm.weight", 3 + 2 * 11 - 1},
        {"tiny-gemma2", "gemma2", "model.layers.1.post_feedforward_layernorm.weight", 3 + 2 * 11 - 1},
        {"tiny-phi3", "phi3", "model.layers.1.mlp.gate_up_proj.weight", 3 + 2 * 6},
        /* Mistral: llama's tensors, untied; the window makes it Mistral */
        {"tiny-mistral", "llama", "lm_head.weight", 3 + 2 * 9},
        /* six layers: 4 attention, 2 Q/K norms, 3 FFN, 4 norms each */
        {"tiny-gemma3", "gemma3", "model.layers.5.self_attn.q_norm.weight", 2 + 6 * 13},
    };
    for (size_t i = 0; i < sizeof fams / sizeof *fams; i++) {
        apr_synth_config c = preset(fams[i].preset);
        apr_err err = {0};
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/m", tu_tmpdir(fams[i].preset));
        if (apr_synth_write(&c, dir, NULL, &err))
            fail_msg("%s: %s", fams[i].preset, err.msg);
        apr_model *m = NULL;
        if (apr_model_open(&m, dir, NULL, &err))
            fail_msg("%s: %s", fams[i].preset, err.msg);
        assert_true(m->has_cfg);
        assert_string_equal(m->cfg.arch, fams[i].arch);
        assert_int_equal(m->cfg.head_dim, c.head_dim);
        const bool gemma = !strcmp(fams[i].arch, "gemma2") || !strcmp(fams[i].arch, "gemma3");
        assert_int_equal(m->cfg.qk_norm, !strcmp(fams[i].arch, "qwen3") || !strcmp(fams[i].arch, "gemma3"));
        assert_int_equal(m->cfg.post_norms, gemma);
        assert_int_equal(m->cfg.fused_qkv_gate_up, !strcmp(fams[i].arch, "phi3"));
        assert_int_equal(m->cfg.sliding_window, c.sliding_window);
        assert_int_equal(m->cfg.n_layers, c.n_layers);
        assert_string_equal(apr_synth_family(&c), fams[i].preset + 5);
        if (!strcmp(fams[i].arch, "gemma3")) /* the sliding layers' own base, llama.cpp's default */
            assert_true(m->cfg.rope_theta_swa == 10000.0f && m->cfg.rope_theta == 1000000.0f);
        assert_non_null(apr_model_tensor(m, fams[i].probe));
        assert_int_equal(m->n_tensors, fams[i].n_tensors);
        apr_model_free(m);
        char cfg[1200];
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        char *txt = tu_read_file(cfg, NULL);
        assert_non_null(txt);
        if (strstr(txt, "apr_gguf"))
            fail_msg("%s: config.json carries an apr_gguf record: %s", fams[i].preset, txt);
        if (!strcmp(fams[i].preset, "tiny-mistral") && !strstr(txt, "\"MistralForCausalLM\""))
            fail_msg("tiny-mistral: config.json is not a MistralForCausalLM: %s", txt);
        free(txt);
    }
}

static void test_presets_shapes(void **state)
{
    (void)state;
    for (const char *const *p = apr_synth_preset_names(); *p; p++) {
        apr_synth_config c = preset(*p);
        if (!strcmp(c.arch, "llama") || !strcmp(c.arch, "qwen2")) /* the others: test_family_presets */
            check_shapes(&c);
    }
    apr_synth_config c = preset("llama-7b-layer");
    assert_int_equal(c.hidden, 4096);
    assert_int_equal(c.ffn, 11008);
    assert_int_equal(c.vocab, 32000);
    c = preset("qwen2-7b-layer");
    assert_int_equal(c.hidden, 3584);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.ffn, 18944);
    assert_int_equal(c.vocab, 152064);
    assert_true(c.qkv_bias);
    /* variants: tied llama, untied qwen2, head_dim != hidden/heads */
    c = preset("tiny-llama");
    c.tied = true;
    check_shapes(&c);
    c.head_dim = 96;
    c.n_layers = 3;
    check_shapes(&c);
    c = preset("tiny-qwen2");
    c.tied = false;
    check_shapes(&c);
    apr_err err = {0};
    assert_int_not_equal(apr_synth_preset(&c, "gpt-5", &err), 0);
    assert_non_null(strstr(err.msg, "tiny-llama"));
    c = preset("tiny-qwen2");
    c.n_kv_heads = 3;
    assert_int_not_equal(apr_synth_validate(&c, &err), 0);
    c = preset("tiny-llama");
    c.vocab = 100;
    assert_int_not_equal(apr_synth_validate(&c, &err), 0);
    c = preset("tiny-llama");
    c.dtype = APR_DT_Q4_K;
    assert_int_not_equal(apr_synth_validate(&c, &err), 0);
}

/* The HF directory apr synth writes reads back to exactly the generator's KVs,
 * with no apr_gguf records (the KVs are what llama.cpp's converter would make). */
static void test_hf_dir_consistent(void **state)
{
    (void)state;
    const char *presets[] = {"tiny-llama", "tiny-qwen2"};
    for (int k = 0; k < 2; k++) {
        apr_synth_config c = preset(presets[k]);
        c.head_dim = 32; /* != hidden / heads: key_length must travel through config.json */
        apr_model *m = NULL;
        apr_err err = {0};
        assert_int_equal(apr_synth_skeleton(&m, &c, &err), 0);
        const char *dir = tu_tmpdir("synth-hf");
        assert_int_equal(apr_synth_write(&c, dir, NULL, &err), 0);
        json_error_t je;
        json_t *cfg = json_load_file(tu_path(dir, "config.json"), 0, &je);
        json_t *tok = json_load_file(tu_path(dir, "tokenizer.json"), 0, &je);
        assert_non_null(cfg);
        assert_non_null(tok);
        assert_null(json_object_get(cfg, "apr_gguf"));
        assert_null(json_object_get(tok, "apr_gguf"));
        assert_int_equal(json_integer_value(json_object_get(cfg, "head_dim")), 32);
        json_decref(cfg);
        json_decref(tok);
        apr_model *r = NULL;
        if (apr_safetensors_open(&r, dir, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(r->n_kvs, m->n_kvs);
        for (uint64_t i = 0; i < m->n_kvs; i++) {
            const apr_kv *a = &m->kvs[i], *b = apr_model_kv(r, a->key);
            if (!b || a->type != b->type)
                fail_msg("KV %s missing or retyped", a->key);
        }
        assert_memory_equal(&m->cfg, &r->cfg, sizeof m->cfg);
        assert_int_equal(r->tok.n_tokens, m->tok.n_tokens);
        assert_int_equal(r->tok.n_merges, m->tok.n_merges);
        apr_model_free(r);
        apr_model_free(m);
    }
}

static void test_sharded_streaming(void **state)
{
    (void)state;
    apr_synth_config c = preset("tiny-llama");
    c.n_layers = 4;
    const char *dir = tu_tmpdir("synth-shard");
    apr_write_opts o = {.shard_max_bytes = 3u << 20};
    apr_err err = {0};
    assert_int_equal(apr_synth_write(&c, dir, &o, &err), 0);
    assert_int_equal(access(tu_path(dir, "model.safetensors.index.json"), F_OK), 0);
    apr_model *r = NULL, *m = NULL;
    if (apr_safetensors_open(&r, dir, &err))
        fail_msg("%s", err.msg);
    assert_true(r->n_maps > 1);
    assert_int_equal(apr_synth_model(&m, &c, &err), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = apr_model_tensor(r, m->tensors[i].name);
        assert_non_null(t);
        assert_memory_equal(t->data, m->tensors[i].data, t->nbytes);
    }
    apr_model_free(r);
    apr_model_free(m);
}

/* Our local f16/bf16 rounding in synth.c equals libquant's on awkward values
 * (checked through the generator: every value of an F16 and a BF16 tensor). */
static void test_half_rounding_matches_libquant(void **state)
{
    (void)state;
    apr_synth_config c = preset("tiny-qwen2");
    c.n_layers = 1;
    const apr_dtype dts[] = {APR_DT_F16, APR_DT_BF16};
    for (int k = 0; k < 2; k++) {
        c.dtype = dts[k];
        apr_model *m = NULL;
        apr_err err = {0};
        assert_int_equal(apr_synth_model(&m, &c, &err), 0);
        c.dtype = APR_DT_F32;
        apr_model *f = NULL;
        assert_int_equal(apr_synth_model(&f, &c, &err), 0);
        for (uint64_t ti = 0; ti < m->n_tensors; ti++) {
            const apr_tensor *t = &m->tensors[ti], *tf = &f->tensors[ti];
            for (uint64_t i = 0; i < t->nbytes / 2; i++) {
                float v;
                memcpy(&v, tf->data + 4 * i, 4);
                uint16_t want = dts[k] == APR_DT_F16 ? apr_f32_to_f16(v) : apr_f32_to_bf16(v);
                if (stored_bits16(t, i) != want)
                    fail_msg("%s[%llu]: %.9g -> 0x%04x, libquant 0x%04x", t->name, (unsigned long long)i, (double)v,
                             stored_bits16(t, i), want);
            }
        }
        apr_model_free(m);
        apr_model_free(f);
    }
}

/* ---------------------------------------------------------------- CLI */

static void test_cli(void **state)
{
    (void)state;
    const char *apr = tu_apr_bin();
    if (!apr) {
        tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN not set");
    }
    const char *dir = tu_tmpdir("synth-cli");
    const char *log = tu_path(dir, "log.txt");
    assert_int_equal(tu_system(log, "'%s' synth --help", apr), 0);
    char *text = tu_read_file(log, NULL);
    assert_non_null(strstr(text, "--preset"));
    free(text);
    assert_int_equal(tu_system(log, "'%s' synth", apr), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --arch gpt9", apr, dir), 2);
    text = tu_read_file(log, NULL);
    assert_non_null(strstr(text, "gpt9"));
    free(text);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --layers abc", apr, dir), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --layers", apr, dir), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --dtype q4_k", apr, dir), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --heads 5 --kv-heads 2 --head-dim 64", apr, dir), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --bogus", apr, dir), 2);
    assert_int_equal(tu_system(log, "'%s' synth '%s/x' --preset tiny-llama --arch qwen2", apr, dir), 2);
    assert_int_not_equal(access(tu_path(dir, "x"), F_OK), 0); /* nothing written on bad arguments */

    char out[4096];
    snprintf(out, sizeof out, "%s/q", dir);
    assert_int_equal(tu_system(log, "'%s' synth '%s' --arch qwen2 --layers 3 --hidden 512 --heads 8 --kv-heads 2 "
                                    "--ffn 1024 --vocab 2048 --untied --dtype bf16 --seed 7 --shard-mb 2",
                               apr, out), 0);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_safetensors_open(&m, out, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(m->cfg.arch, "qwen2");
    assert_int_equal(m->cfg.n_layers, 3);
    assert_int_equal(m->cfg.hidden, 512);
    assert_int_equal(m->cfg.head_dim, 64);
    assert_int_equal(m->cfg.n_kv_heads, 2);
    assert_int_equal(m->cfg.vocab, 2048);
    assert_false(m->cfg.tied_embeddings);
    assert_true(m->n_maps > 1);
    assert_int_equal(apr_model_tensor(m, "lm_head.weight")->dtype, APR_DT_BF16);
    apr_model_free(m);

    /* The same command twice gives the same bytes. */
    snprintf(out, sizeof out, "%s/one.safetensors", dir);
    assert_int_equal(tu_system(log, "'%s' synth '%s' -q --seed 9", apr, out), 0);
    char h1[65], h2[65];
    file_sha(out, h1);
    assert_int_equal(tu_system(log, "'%s' synth '%s' -q --seed 9", apr, out), 0);
    file_sha(out, h2);
    assert_string_equal(h1, h2);
    assert_int_not_equal(access(tu_path(dir, "config.json"), F_OK), 0); /* single file only */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_documented_values),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_presets_shapes),
        cmocka_unit_test(test_family_presets),
        cmocka_unit_test(test_hf_dir_consistent),
        cmocka_unit_test(test_sharded_streaming),
        cmocka_unit_test(test_half_rounding_matches_libquant),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
