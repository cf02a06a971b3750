/* test_safetensors.c - safetensors reader/writer (single and sharded), the HF
 * config/tokenizer <-> GGUF KV mapping, hostile inputs, and a peer check with
 * the PyPI safetensors package. */
#include "test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE "fixtures/stories260K-f32.gguf"
#define VOCAB_FIXTURE "fixtures/ggml-vocab-llama-spm.gguf"

/* ---------------------------------------------------------------- helpers */

/* A safetensors file image: u64 length, header text, data. */
static uint8_t *make_st(const char *header, const void *data, size_t n, size_t *len)
{
    size_t h = strlen(header);
    uint8_t *b = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (n)
        memcpy(b + 8 + h, data, n);
    *len = 8 + h + n;
    return b;
}

static bool kv_equal(const apr_kv *a, const apr_kv *b)
{
    if (a->type != b->type || strcmp(a->key, b->key))
        return false;
    if (a->type == APR_KV_STRING)
        return a->str.len == b->str.len && !memcmp(a->str.s, b->str.s, a->str.len);
    if (a->type == APR_KV_ARRAY) {
        if (a->arr_type != b->arr_type || a->count != b->count)
            return false;
        if (a->arr_type == APR_KV_STRING) {
            const apr_str *x = a->arr, *y = b->arr;
            for (uint64_t i = 0; i < a->count; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len))
                    return false;
            return true;
        }
        return !a->count || !memcmp(a->arr, b->arr, a->count * apr_kv_type_size(a->arr_type));
    }
    return !memcmp(&a->v, &b->v, apr_kv_type_size(a->type));
}

static bool file_level(const char *key)
{
    return !strncmp(key, "apr.provenance", 14) || !strncmp(key, "safetensors.metadata.", 21);
}

/* Every non-file-level KV of a equals b's, in the same order, and no extras. */
static void assert_kvs_identical(const apr_model *a, const apr_model *b)
{
    uint64_t j = 0;
    for (uint64_t i = 0; i < a->n_kvs; i++) {
        if (file_level(a->kvs[i].key))
            continue;
        while (j < b->n_kvs && file_level(b->kvs[j].key))
            j++;
        if (j >= b->n_kvs)
            fail_msg("KV %s missing after the roundtrip", a->kvs[i].key);
        if (!kv_equal(&a->kvs[i], &b->kvs[j]))
            fail_msg("KV %s (type %s) differs from %s (type %s) after the roundtrip", a->kvs[i].key,
                     apr_kv_type_name(a->kvs[i].type), b->kvs[j].key, apr_kv_type_name(b->kvs[j].type));
        j++;
    }
    while (j < b->n_kvs && file_level(b->kvs[j].key))
        j++;
    if (j != b->n_kvs)
        fail_msg("extra KV %s after the roundtrip", b->kvs[j].key);
}

static void assert_tensors_identical(const apr_model *a, const apr_model *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const apr_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        assert_memory_equal(x->dims, y->dims, x->ndim * sizeof *x->dims);
        assert_int_equal(x->nbytes, y->nbytes);
        if (x->nbytes && memcmp(x->data, y->data, x->nbytes))
            fail_msg("tensor %s: bytes differ", x->name);
    }
}

static apr_model *tiny(const char *preset, apr_dtype dt)
{
    apr_synth_config c;
    apr_err err = {0};
    assert_int_equal(apr_synth_preset(&c, preset, &err), 0);
    c.dtype = dt;
    apr_model *m = NULL;
    if (apr_synth_model(&m, &c, &err))
        fail_msg("synth: %s", err.msg);
    return m;
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    return j;
}

static void save_json(const char *path, json_t *j)
{
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(1) | JSON_REAL_PRECISION(9)), 0);
}

/* ---------------------------------------------------------------- reading */

static void test_parse_single(void **state)
{
    (void)state;
    float data[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[2] = {0x3c00, 0x4000};
    uint8_t all[28];
    memcpy(all, data, 24);
    memcpy(all + 24, h, 4);
    /* Keys deliberately not in data order: the reader orders by offset. */
    const char *hdr = "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]},"
                      "\"__metadata__\":{\"format\":\"pt\",\"apr.provenance\":\"{\\\"tool\\\":\\\"x\\\"}\",\"note\":\"hi\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    size_t len;
    uint8_t *buf = make_st(hdr, all, sizeof all, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_safetensors_parse(&m, buf, len, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m->n_tensors, 2);
    assert_string_equal(m->tensors[0].name, "a");
    assert_int_equal(m->tensors[0].dtype, APR_DT_F32);
    assert_int_equal(m->tensors[0].ndim, 2);
    assert_int_equal(m->tensors[0].dims[0], 2);
    assert_int_equal(m->tensors[0].dims[1], 3);
    assert_int_equal(m->tensors[0].file_offset, 8 + strlen(hdr));
    assert_memory_equal(m->tensors[0].data, data, 24);
    assert_string_equal(m->tensors[1].name, "b");
    assert_int_equal(m->tensors[1].dtype, APR_DT_F16);
    assert_memory_equal(m->tensors[1].data, h, 4);
    assert_string_equal(m->provenance_json, "{\"tool\":\"x\"}");
    assert_string_equal(apr_kv_get_str(m, "safetensors.metadata.note"), "hi");
    assert_null(apr_model_kv(m, "safetensors.metadata.format"));
    assert_false(m->has_cfg);
    apr_model_free(m);
    free(buf);
}

static void test_all_dtypes(void **state)
{
    (void)state;
    static const struct { const char *name; apr_dtype dt; int size; } d[] = {
        {"F64", APR_DT_F64, 8}, {"F32", APR_DT_F32, 4}, {"F16", APR_DT_F16, 2}, {"BF16", APR_DT_BF16, 2},
        {"I64", APR_DT_I64, 8}, {"I32", APR_DT_I32, 4}, {"I16", APR_DT_I16, 2}, {"I8", APR_DT_I8, 1},
        {"U64", APR_DT_U64, 8}, {"U32", APR_DT_U32, 4}, {"U16", APR_DT_U16, 2}, {"U8", APR_DT_U8, 1},
        {"BOOL", APR_DT_BOOL, 1}};
    char hdr[2048] = "{";
    uint64_t off = 0;
    for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
        snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr),
                 "%s\"t%zu\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[%llu,%llu]}", i ? "," : "", i,
                 d[i].name, (unsigned long long)off, (unsigned long long)(off + 3 * d[i].size));
        off += 3 * d[i].size;
    }
    strcat(hdr, "}");
    uint8_t data[256];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1) & 1; /* 0/1 bytes: valid BOOLs too */
    size_t len;
    uint8_t *buf = make_st(hdr, data, off, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_safetensors_parse(&m, buf, len, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m->n_tensors, sizeof d / sizeof *d);
    for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
        assert_int_equal(m->tensors[i].dtype, d[i].dt);
        assert_int_equal(m->tensors[i].nbytes, 3 * d[i].size);
    }
    /* write -> read: identical, also every dtype */
    const char *dir = tu_tmpdir("st-dtypes");
    const char *p = tu_path(dir, "all.safetensors");
    assert_int_equal(apr_safetensors_write(m, p, NULL, &err), 0);
    apr_model *r = NULL;
    if (apr_safetensors_open(&r, p, &err))
        fail_msg("%s", err.msg);
    assert_tensors_identical(m, r);
    apr_model_free(r);
    apr_model_free(m);
    free(buf);
}

/* ---------------------------------------------------------------- writing */

static void test_write_single_roundtrip(void **state)
{
    (void)state;
    apr_model *m = tiny("tiny-qwen2", APR_DT_BF16);
    m->provenance_json = strdup("{\"tool\":\"apr\",\"parent\":null}");
    assert_int_equal(apr_model_set_kv_str(m, "safetensors.metadata.origin", "unit test"), 0);
    const char *dir = tu_tmpdir("st-single");
    const char *p = tu_path(dir, "m.safetensors");
    apr_err err = {0};
    if (apr_safetensors_write(m, p, NULL, &err))
        fail_msg("%s", err.msg);
    /* single-file mode writes nothing beside the file */
    assert_int_not_equal(access(tu_path(dir, "config.json"), F_OK), 0);
    size_t n;
    char *raw = tu_read_file(p, &n);
    uint64_t hl = 0;
    memcpy(&hl, raw, 8);
    assert_int_equal((8 + hl) % 8, 0); /* data section 8-byte aligned */
    assert_int_equal(raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}', 1);
    free(raw);

    apr_model *r = NULL;
    if (apr_safetensors_open(&r, p, &err))
        fail_msg("%s", err.msg);
    assert_tensors_identical(m, r);
    assert_kvs_identical(m, r);
    assert_string_equal(r->provenance_json, m->provenance_json);
    assert_string_equal(apr_kv_get_str(r, "safetensors.metadata.origin"), "unit test");
    assert_true(r->has_cfg && r->has_tok);
    assert_true(r->cfg.tied_embeddings);
    assert_true(r->cfg.qkv_bias);
    assert_int_equal(r->cfg.rope_type, APR_ROPE_NEOX);
    apr_model_free(r);
    apr_model_free(m);
}

static void test_write_dir_roundtrip(void **state)
{
    (void)state;
    const char *presets[] = {"tiny-llama", "tiny-qwen2"};
    for (int k = 0; k < 2; k++) {
        apr_model *m = tiny(presets[k], APR_DT_F16);
        const char *dir = tu_tmpdir("st-dir");
        apr_err err = {0};
        if (apr_safetensors_write(m, dir, NULL, &err))
            fail_msg("%s", err.msg);
        for (const char *f = "config.json\0generation_config.json\0tokenizer.json\0tokenizer_config.json\0"
                             "model.safetensors\0";
             *f; f += strlen(f) + 1)
            assert_int_equal(access(tu_path(dir, f), F_OK), 0);
        /* The synthetic model's KVs are what the HF files say: no records needed. */
        json_t *cfg = load_json(tu_path(dir, "config.json"));
        json_t *tok = load_json(tu_path(dir, "tokenizer.json"));
        assert_null(json_object_get(cfg, "apr_gguf"));
        assert_null(json_object_get(tok, "apr_gguf"));
        assert_string_equal(json_string_value(json_object_get(tok, "model") ? json_object_get(json_object_get(tok, "model"), "type") : NULL),
                            k ? "BPE" : "Unigram");
        assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "float16");
        json_decref(cfg);
        json_decref(tok);
        apr_model *r = NULL;
        if (apr_safetensors_open(&r, dir, &err))
            fail_msg("%s", err.msg);
        assert_tensors_identical(m, r);
        assert_kvs_identical(m, r);
        assert_memory_equal(&m->cfg, &r->cfg, sizeof m->cfg);
        apr_model_free(r);
        apr_model_free(m);
    }
}

static void test_sharded(void **state)
{
    (void)state;
    apr_model *m = tiny("tiny-llama", APR_DT_F32); /* ~6.8 MB */
    const char *dir = tu_tmpdir("st-shard");
    char d[4096];
    snprintf(d, sizeof d, "%s/out", dir);
    apr_write_opts o = {.shard_max_bytes = 1u << 20};
    apr_err err = {0};
    if (apr_safetensors_write(m, d, &o, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(access(tu_path(d, "model.safetensors"), F_OK) != 0, 1);
    json_t *idx = load_json(tu_path(d, "model.safetensors.index.json"));
    json_t *wm = json_object_get(idx, "weight_map");
    assert_int_equal(json_object_size(wm), m->n_tensors);
    uint64_t total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total += m->tensors[i].nbytes;
    assert_int_equal(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), total);
    const char *last = json_string_value(json_object_get(wm, "lm_head.weight"));
    assert_non_null(last);
    int nshards = 0;
    assert_int_equal(sscanf(last, "model-%*d-of-%d.safetensors", &nshards), 1);
    assert_true(nshards >= 4);

    /* directory, index path: both open the set; shards mapped separately */
    const char *paths[2] = {d, tu_path(d, "model.safetensors.index.json")};
    for (int k = 0; k < 2; k++) {
        apr_model *r = NULL;
        if (apr_safetensors_open(&r, paths[k], &err))
            fail_msg("%s", err.msg);
        assert_int_equal(r->n_maps, nshards);
        assert_tensors_identical(m, r);
        assert_kvs_identical(m, r);
        assert_int_equal(r->tensors[r->n_tensors - 1].shard, nshards - 1);
        apr_model_free(r);
    }

    /* A tensor listed in the index but absent from its shard. */
    char shard1[64];
    snprintf(shard1, sizeof shard1, "model-00001-of-%05d.safetensors", nshards);
    json_object_set_new(wm, "model.layers.9.mlp.up_proj.weight", json_string(shard1));
    save_json(tu_path(d, "model.safetensors.index.json"), idx);
    apr_model *r = NULL;
    assert_int_not_equal(apr_safetensors_open(&r, d, &err), 0);
    assert_non_null(strstr(err.msg, "model.layers.9.mlp.up_proj.weight"));
    assert_non_null(strstr(err.msg, "does not contain"));
    json_object_del(wm, "model.layers.9.mlp.up_proj.weight");

    /* An index entry escaping the directory. */
    json_object_set_new(wm, "model.norm.weight", json_string("../x.safetensors"));
    save_json(tu_path(d, "model.safetensors.index.json"), idx);
    assert_int_not_equal(apr_safetensors_open(&r, d, &err), 0);
    assert_non_null(strstr(err.msg, "../x.safetensors"));
    json_decref(idx);

    /* A missing shard: error names it. Rewrite the set first. */
    if (apr_safetensors_write(m, d, &o, &err))
        fail_msg("%s", err.msg);
    char victim[64];
    snprintf(victim, sizeof victim, "model-00002-of-%05d.safetensors", nshards);
    assert_int_equal(unlink(tu_path(d, victim)), 0);
    assert_int_not_equal(apr_safetensors_open(&r, d, &err), 0);
    assert_null(r);
    assert_non_null(strstr(err.msg, victim));
    assert_non_null(strstr(err.msg, "does not exist"));

    /* A shard of another model in a shard's place (tiny-qwen2 sharded the same
     * way, its second shard copied over this set's): the tensors it holds
     * are not the ones the index puts there. Rewrite the set first. */
    if (apr_safetensors_write(m, d, &o, &err))
        fail_msg("%s", err.msg);
    apr_model *other = tiny("tiny-qwen2", APR_DT_F32);
    char od[4096];
    snprintf(od, sizeof od, "%s/other", dir);
    if (apr_safetensors_write(other, od, &o, &err))
        fail_msg("%s", err.msg);
    apr_model_free(other);
    json_t *oidx = load_json(tu_path(od, "model.safetensors.index.json"));
    const char *oname = json_string_value(json_object_get(json_object_get(oidx, "weight_map"), "model.norm.weight"));
    assert_non_null(oname);
    char oshard[64];
    snprintf(oshard, sizeof oshard, "model-00002-of-%.5s.safetensors", oname + strlen("model-00001-of-"));
    json_decref(oidx);
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", tu_path(od, oshard), tu_path(d, victim)), 0);
    assert_int_not_equal(apr_safetensors_open(&r, d, &err), 0);
    assert_null(r);
    if (!strstr(err.msg, victim) || !strstr(err.msg, "the index does not list it"))
        print_message("another model's shard: %s\n", err.msg);
    assert_non_null(strstr(err.msg, victim));
    assert_non_null(strstr(err.msg, "the index does not list it"));

    /* Writing one file into the same directory replaces the stale index. */
    if (apr_safetensors_write(m, d, NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(access(tu_path(d, "model.safetensors.index.json"), F_OK), 0);
    if (apr_safetensors_open(&r, d, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(r->n_maps, 1);
    apr_model_free(r);
    apr_model_free(m);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    uint64_t dims[2] = {2, 32};
    uint8_t *q = calloc(2, 34);
    apr_err err = {0};
    assert_int_equal(apr_model_add_tensor(m, "q", APR_DT_Q8_0, 2, dims, q, 68, true, &err), 0);
    const char *dir = tu_tmpdir("st-reject");
    char out[4096];
    snprintf(out, sizeof out, "%s/o", dir);
    assert_int_not_equal(apr_safetensors_write(m, out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "Q8_0"));
    assert_non_null(strstr(err.msg, "dequantize"));
    assert_int_not_equal(access(tu_path(out, "model.safetensors"), F_OK), 0);
    assert_int_not_equal(apr_safetensors_write(m, tu_path(dir, "x.safetensors"), NULL, &err), 0);
    assert_int_not_equal(access(tu_path(dir, "x.safetensors"), F_OK), 0);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- HF metadata mapping */

static void gguf_roundtrip(const char *fixture, const char *tag)
{
    apr_model *g = NULL;
    apr_err err = {0};
    if (apr_gguf_open(&g, fixture, &err))
        fail_msg("%s", err.msg);
    apr_model_derive(g, &err);
    const char *dir = tu_tmpdir(tag);
    if (apr_safetensors_write(g, dir, NULL, &err))
        fail_msg("%s", err.msg);
    apr_model *s = NULL;
    if (apr_safetensors_open(&s, dir, &err))
        fail_msg("%s", err.msg);
    assert_kvs_identical(g, s);
    assert_tensors_identical(g, s);
    assert_memory_equal(&g->cfg, &s->cfg, sizeof g->cfg);
    assert_true(s->has_tok);
    assert_int_equal(s->tok.bos_id, g->tok.bos_id);
    apr_model_free(s);

    /* Without our records the files still read as llama.cpp's converter would:
     * tokens, scores, token types, special ids and hyper-parameters equal. */
    json_t *cfg = load_json(tu_path(dir, "config.json"));
    json_t *tok = load_json(tu_path(dir, "tokenizer.json"));
    json_object_del(cfg, "apr_gguf");
    json_object_del(tok, "apr_gguf");
    save_json(tu_path(dir, "config.json"), cfg);
    save_json(tu_path(dir, "tokenizer.json"), tok);
    json_decref(cfg);
    json_decref(tok);
    if (apr_safetensors_open(&s, dir, &err))
        fail_msg("%s", err.msg);
    static const char *const same[] = {
        "general.architecture", "llama.block_count", "llama.context_length", "llama.embedding_length",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.attention.layer_norm_rms_epsilon", "llama.rope.dimension_count", "tokenizer.ggml.model",
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        const apr_kv *a = apr_model_kv(g, same[i]), *b = apr_model_kv(s, same[i]);
        if (!a)
            continue;
        if (!b || !kv_equal(a, b))
            fail_msg("%s: %s differs when read the plain HF way", fixture, same[i]);
    }
    assert_memory_equal(&g->cfg, &s->cfg, sizeof g->cfg);
    apr_model_free(s);

    /* Single-file output: the KVs ride in __metadata__. */
    const char *one = tu_path(dir, "single.safetensors");
    if (apr_safetensors_write(g, one, NULL, &err))
        fail_msg("%s", err.msg);
    if (apr_safetensors_open(&s, one, &err))
        fail_msg("%s", err.msg);
    assert_kvs_identical(g, s);
    apr_model_free(s);
    apr_model_free(g);
}

static void test_gguf_fixture_mapping(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    gguf_roundtrip(fx, "st-gguf");
}

static void test_gguf_vocab_mapping(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, VOCAB_FIXTURE);
    gguf_roundtrip(fx, "st-vocab");
}

/* A hand-made Qwen2-style HF directory: byte-level BPE without byte fallback,
 * pair-format merges, added tokens, vocab padded to config.vocab_size. */
static void test_hf_qwen2_style(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("st-hfq");
    size_t len;
    float w[4] = {0};
    uint8_t *st = make_st("{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", w, 16,
                          &len);
    assert_int_equal(tu_write_file(tu_path(dir, "model.safetensors"), st, len), 0);
    free(st);
    const char *cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":4,\"intermediate_size\":8,"
                      "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"num_hidden_layers\":1,"
                      "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
                      "\"vocab_size\":8,\"tie_word_embeddings\":true,\"bos_token_id\":5,\"eos_token_id\":6}";
    const char *tok =
        "{\"added_tokens\":[{\"id\":5,\"content\":\"<|endoftext|>\",\"special\":true},"
        "{\"id\":6,\"content\":\"<|im_end|>\",\"special\":false}],"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
        "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
        "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}},{\"type\":\"ByteLevel\",\"use_regex\":false}]},"
        "\"model\":{\"type\":\"BPE\",\"byte_fallback\":false,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"a b\":3,\"c\":4},"
        "\"merges\":[[\"a\",\"b\"],[\"a\",\" b\"]]}}";
    const char *tc = "{\"eos_token\":\"<|endoftext|>\",\"pad_token\":\"<|endoftext|>\",\"bos_token\":null,"
                     "\"chat_template\":\"{{ x }}\",\"add_bos_token\":false}";
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), cfg, strlen(cfg)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer.json"), tok, strlen(tok)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tc, strlen(tc)), 0);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_safetensors_open(&m, dir, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(apr_kv_get_str(m, "general.architecture"), "qwen2");
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.model"), "gpt2");
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.pre"), "qwen2");
    assert_int_equal(m->tok.n_tokens, 8);
    assert_string_equal(m->tok.tokens[7].s, "[PAD7]");
    static const int32_t types[8] = {1, 1, 1, 1, 1, 3, 3, 5}; /* <|im_end|> looks special */
    assert_memory_equal(m->tok.token_type, types, sizeof types);
    assert_null(m->tok.scores);
    assert_int_equal(m->tok.n_merges, 2);
    assert_string_equal(m->tok.merges[0].s, "a b");
    assert_string_equal(m->tok.merges[1].s, "a \xc4\xa0" "b"); /* space inside a part -> U+0120 */
    assert_int_equal(m->tok.eos_id, 5);
    assert_int_equal(m->tok.pad_id, 5);
    assert_int_equal(m->tok.bos_id, 5); /* from config.json bos_token_id */
    assert_false(m->tok.add_bos);
    assert_string_equal(m->tok.chat_template, "{{ x }}");
    const apr_kv *kv = apr_model_kv(m, "qwen2.block_count");
    assert_non_null(kv);
    assert_int_equal(kv->type, APR_KV_U32);
    kv = apr_model_kv(m, "qwen2.attention.layer_norm_rms_epsilon");
    assert_int_equal(kv->type, APR_KV_F32);
    assert_true(kv->v.f32 == 1e-6f);
    assert_null(apr_model_kv(m, "qwen2.attention.key_length"));
    assert_true(m->has_cfg);
    assert_int_equal(m->cfg.head_dim, 2);
    assert_true(m->cfg.tied_embeddings);
    apr_model_free(m);

    /* Unknown architecture: the error lists the supported ones. */
    const char *bad = "{\"architectures\":[\"GPTNeoXForCausalLM\"]}";
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), bad, strlen(bad)), 0);
    assert_int_not_equal(apr_safetensors_open(&m, dir, &err), 0);
    assert_non_null(strstr(err.msg, "GPTNeoXForCausalLM"));
    assert_non_null(strstr(err.msg, "LlamaForCausalLM"));
    /* A config.json that is not JSON */
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), "{x", 2), 0);
    assert_int_not_equal(apr_safetensors_open(&m, dir, &err), 0);
    assert_non_null(strstr(err.msg, "config.json"));
}

/* A llama-2 style tokenizer.json (BPE with byte fallback): LlamaHfVocab's rules. */
static void test_hf_llama_bpe_style(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("st-hfl");
    size_t len;
    float w[4] = {0};
    uint8_t *st = make_st("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", w, 16, &len);
    assert_int_equal(tu_write_file(tu_path(dir, "model.safetensors"), st, len), 0);
    free(st);
    const char *cfg = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":8,"
                      "\"num_attention_heads\":2,\"num_hidden_layers\":1,\"head_dim\":4,\"vocab_size\":6,"
                      "\"rms_norm_eps\":1e-05}";
    const char *tok = "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
                      "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
                      "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\","
                      "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
                      "\"decoder\":{\"type\":\"Sequence\"},"
                      "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,"
                      "\"<0x0A>\":3,\"\xe2\x96\x81t\":4,\"h\":5},\"merges\":[\"\xe2\x96\x81 t\"]}}";
    const char *tc = "{\"bos_token\":\"<s>\",\"unk_token\":\"<unk>\"}";
    const char *gen = "{\"bos_token_id\":1,\"eos_token_id\":[2,5]}"; /* eos only from here */
    assert_int_equal(tu_write_file(tu_path(dir, "generation_config.json"), gen, strlen(gen)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), cfg, strlen(cfg)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer.json"), tok, strlen(tok)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tc, strlen(tc)), 0);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_safetensors_open(&m, dir, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.model"), "llama");
    assert_int_equal(m->tok.n_tokens, 6);
    static const int32_t types[6] = {3, 3, 3, 6, 1, 1};
    assert_memory_equal(m->tok.token_type, types, sizeof types);
    for (int i = 0; i < 6; i++)
        assert_true(m->tok.scores[i] == -1000.0f);
    assert_int_equal(m->tok.n_merges, 0); /* llama.cpp's llama_hf path loads no merges */
    assert_int_equal(m->tok.bos_id, 1);
    assert_int_equal(m->tok.eos_id, 2);
    assert_int_equal(m->tok.unk_id, 0);
    assert_true(m->tok.add_bos); /* from TemplateProcessing */
    uint32_t u;
    assert_true(apr_kv_get_u32(m, "llama.attention.key_length", &u) && u == 4);
    assert_true(apr_kv_get_u32(m, "llama.rope.dimension_count", &u) && u == 4);
    assert_true(apr_kv_get_u32(m, "llama.vocab_size", &u) && u == 6);
    assert_int_equal(m->cfg.head_dim, 4); /* recorded, not hidden / heads = 4 by luck: */
    apr_model_free(m);
    /* head_dim that is not hidden / heads */
    const char *cfg2 = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":8,"
                       "\"num_attention_heads\":2,\"num_hidden_layers\":1,\"head_dim\":6}";
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), cfg2, strlen(cfg2)), 0);
    if (apr_safetensors_open(&m, dir, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m->cfg.head_dim, 6);
    apr_model_free(m);
    /* inconsistent: kv heads that do not divide heads */
    const char *cfg3 = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":8,"
                       "\"num_attention_heads\":2,\"num_key_value_heads\":3,\"num_hidden_layers\":1}";
    assert_int_equal(tu_write_file(tu_path(dir, "config.json"), cfg3, strlen(cfg3)), 0);
    assert_int_not_equal(apr_safetensors_open(&m, dir, &err), 0);
    assert_non_null(strstr(err.msg, "KV heads"));
}

/* f32 values through config.json bit-exactly (shortest decimal, read back as double -> float). */
static void test_float_json_exact(void **state)
{
    (void)state;
    apr_model *m = tiny("tiny-llama", APR_DT_F32);
    const float vals[] = {1e-5f, 1e-6f, 9.99999975e-06f, 3.14159274f, 1.17549435e-38f, 1.4e-45f, 500000.0f,
                          0.1f, 1e-30f};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        assert_int_equal(apr_model_set_kv_f32(m, "llama.attention.layer_norm_rms_epsilon", vals[i]), 0);
        assert_int_equal(apr_model_set_kv_f32(m, "llama.rope.freq_base", vals[i] * 7.0f + 1.0f), 0);
        apr_err err = {0};
        assert_int_equal(apr_model_derive(m, &err), 0);
        const char *dir = tu_tmpdir("st-float");
        if (apr_safetensors_write(m, dir, NULL, &err))
            fail_msg("%s", err.msg);
        json_t *cfg = load_json(tu_path(dir, "config.json"));
        assert_null(json_object_get(cfg, "apr_gguf")); /* exact without a record */
        json_decref(cfg);
        apr_model *r = NULL;
        if (apr_safetensors_open(&r, dir, &err))
            fail_msg("%s", err.msg);
        assert_kvs_identical(m, r);
        apr_model_free(r);
    }
    apr_model_free(m);
}

/* KVs that HF files cannot carry travel in apr_gguf records: odd types, extra keys, arrays. */
static void test_records(void **state)
{
    (void)state;
    apr_model *m = tiny("tiny-qwen2", APR_DT_F32);
    assert_int_equal(apr_model_set_kv_u32(m, "tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu), 0);
    apr_kv kv = {0};
    kv.key = "qwen2.custom.u64";
    kv.type = APR_KV_U64;
    kv.v.u64 = UINT64_MAX;
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    double d = 0.1;
    kv.key = "general.some_f64";
    kv.type = APR_KV_F64;
    kv.v.f64 = d;
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    int16_t arr[3] = {-1, 0, 32767};
    kv.key = "general.arr";
    kv.type = APR_KV_ARRAY;
    kv.arr_type = APR_KV_I16;
    kv.arr = arr;
    kv.count = 3;
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    /* u64 block_count instead of llama.cpp's u32 */
    assert_int_equal(apr_model_remove_kv(m, "qwen2.block_count"), 0);
    kv = (apr_kv){.key = "qwen2.block_count", .type = APR_KV_U64, .v.u64 = 2};
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    /* a token type the HF rules would not produce */
    const apr_kv *tt = apr_model_kv(m, "tokenizer.ggml.token_type");
    ((int32_t *)tt->arr)[300] = 5;
    apr_err err = {0};
    assert_int_equal(apr_model_derive(m, &err), 0);
    const char *dir = tu_tmpdir("st-rec");
    if (apr_safetensors_write(m, dir, NULL, &err))
        fail_msg("%s", err.msg);
    json_t *cfg = load_json(tu_path(dir, "config.json"));
    assert_non_null(json_object_get(cfg, "apr_gguf"));
    json_decref(cfg);
    apr_model *r = NULL;
    if (apr_safetensors_open(&r, dir, &err))
        fail_msg("%s", err.msg);
    assert_kvs_identical(m, r);
    apr_model_free(r);

    /* A vocabulary HF files cannot express: no tokenizer.json, KVs still exact. */
    assert_int_equal(apr_model_set_kv_str(m, "tokenizer.ggml.model", "bert"), 0);
    assert_int_equal(apr_model_derive(m, &err), 0);
    dir = tu_tmpdir("st-rec2");
    if (apr_safetensors_write(m, dir, NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(access(tu_path(dir, "tokenizer.json"), F_OK), 0);
    if (apr_safetensors_open(&r, dir, &err))
        fail_msg("%s", err.msg);
    assert_kvs_identical(m, r);
    assert_string_equal(r->tok.model, "bert");
    apr_model_free(r);

    /* No architecture HF knows: no config.json either; the KVs ride in __metadata__. */
    assert_int_equal(apr_model_set_kv_str(m, "general.architecture", "mamba"), 0);
    assert_int_equal(apr_model_derive(m, &err), 0);
    assert_false(m->has_cfg);
    dir = tu_tmpdir("st-rec3");
    if (apr_safetensors_write(m, dir, NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(access(tu_path(dir, "config.json"), F_OK), 0);
    if (apr_safetensors_open(&r, dir, &err))
        fail_msg("%s", err.msg);
    assert_kvs_identical(m, r);
    apr_model_free(r);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- hostile input */

static void expect_parse_error(const char *hdr, const void *data, size_t n, const char *needle)
{
    size_t len;
    uint8_t *buf = make_st(hdr, data, n, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_safetensors_parse(&m, buf, len, &err);
    if (rc == 0)
        fail_msg("accepted hostile header: %s", hdr);
    assert_null(m);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s' (header %s)", err.msg, needle, hdr);
    free(buf);
}

static void test_hostile(void **state)
{
    (void)state;
    uint8_t data[64] = {0};
#define T(s) "{\"t\":{\"dtype\":\"F32\",\"shape\":" s "}}"
    expect_parse_error("[1,2]", NULL, 0, "'{'");
    expect_parse_error("{abc", NULL, 0, "not valid JSON");
    expect_parse_error("{\"t\":5}", NULL, 0, "not an object");
    expect_parse_error(T("[4],\"data_offsets\":[0,64]"), data, 16, "past the end");
    expect_parse_error(T("[4],\"data_offsets\":[16,0]"), data, 16, "< begin");
    expect_parse_error(T("[5],\"data_offsets\":[0,16]"), data, 16, "need 20");
    expect_parse_error(T("[4],\"data_offsets\":[0]"), data, 16, "[begin, end]");
    expect_parse_error(T("[-4],\"data_offsets\":[0,16]"), data, 16, "non-negative");
    expect_parse_error(T("[4.5],\"data_offsets\":[0,16]"), data, 16, "non-negative");
    expect_parse_error(T("[1099511627776,1099511627776,1099511627776],\"data_offsets\":[0,16]"), data, 16,
                       "overflow");
    expect_parse_error(T("[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]"), data, 16, "dims");
    expect_parse_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[4]}}", data, 16, "data_offsets");
    expect_parse_error("{\"t\":{\"dtype\":\"Q9\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 16,
                       "unknown dtype");
    expect_parse_error("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 16,
                       "not supported");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                       data, 32, "overlap");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
                       data, 32, "duplicate");
    expect_parse_error("{\"\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 16, "empty name");
    expect_parse_error("{\"__metadata__\":{\"k\":1}}", NULL, 0, "not a string");
    expect_parse_error("{\"__metadata__\":[]}", NULL, 0, "not an object");
    expect_parse_error("{\"__metadata__\":{\"apr.kvs\":\"[{\\\"key\\\":\\\"x\\\",\\\"type\\\":\\\"u8\\\","
                       "\\\"value\\\":300}]\"}}", NULL, 0, "out of range");
    expect_parse_error("{\"__metadata__\":{\"apr.kvs\":\"nope\"}}", NULL, 0, "apr.kvs");
    /* inconsistent config from the KVs is an error too */
    expect_parse_error("{\"__metadata__\":{\"apr.kvs\":\"[{\\\"key\\\":\\\"general.architecture\\\","
                       "\\\"type\\\":\\\"string\\\",\\\"value\\\":\\\"llama\\\"}]\"}}", NULL, 0, "block_count");
#undef T
    /* zero-size tensors anywhere are fine, also inside another's range */
    size_t len;
    uint8_t *buf = make_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                           "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]}}", data, 16, &len);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_safetensors_parse(&m, buf, len, &err), 0);
    assert_int_equal(m->n_tensors, 2);
    apr_model_free(m);
    free(buf);

    /* header length larger than the file / the cap */
    uint8_t small[16] = {0};
    small[0] = 200;
    assert_int_not_equal(apr_safetensors_parse(&m, small, sizeof small, &err), 0);
    assert_non_null(strstr(err.msg, "larger than the file"));
    uint64_t huge = 1ull << 40;
    memcpy(small, &huge, 8);
    assert_int_not_equal(apr_safetensors_parse(&m, small, sizeof small, &err), 0);
    assert_non_null(strstr(err.msg, "limit"));
    assert_int_not_equal(apr_safetensors_parse(&m, small, 5, &err), 0);
    assert_non_null(strstr(err.msg, "too short"));
}

static void test_truncation(void **state)
{
    (void)state;
    float data[6] = {1, 2, 3, 4, 5, 6};
    size_t len;
    uint8_t *buf = make_st("{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                           "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
                           data, sizeof data, &len);
    apr_err err = {0};
    apr_model *m = NULL;
    assert_int_equal(apr_safetensors_parse(&m, buf, len, &err), 0);
    apr_model_free(m);
    /* Every prefix: a private copy of exactly that many bytes so ASan catches any over-read. */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, buf, cut);
        m = NULL;
        if (apr_safetensors_parse(&m, p, cut, &err) == 0)
            fail_msg("truncated file of %zu/%zu bytes accepted", cut, len);
        assert_null(m);
        free(p);
    }
    /* and a truncated file on disk names the file */
    const char *dir = tu_tmpdir("st-trunc");
    const char *p = tu_path(dir, "t.safetensors");
    assert_int_equal(tu_write_file(p, buf, len - 3), 0);
    assert_int_not_equal(apr_safetensors_open(&m, p, &err), 0);
    assert_non_null(strstr(err.msg, "t.safetensors"));
    assert_int_not_equal(apr_safetensors_open(&m, tu_path(dir, "missing.safetensors"), &err), 0);
    assert_int_not_equal(apr_safetensors_open(&m, dir, &err), 0); /* empty dir */
    assert_non_null(strstr(err.msg, "model.safetensors"));
    free(buf);
}

/* ---------------------------------------------------------------- peer: PyPI safetensors */

static void sha_hex(const void *p, size_t n, char hex[65])
{
    uint8_t d[32];
    apr_sha256(p, n, d);
    apr_sha256_hex(d, hex);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const apr_tensor *const *)a)->name, (*(const apr_tensor *const *)b)->name);
}

/* Our reader's view in safetensors_peer.py's line format. */
static char *our_dump(const apr_model *m, const char *meta_json)
{
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap), line[1024], hex[65];
    json_t *meta = json_loads(meta_json, 0, NULL);
    const char **keys = calloc(json_object_size(meta) + 1, sizeof *keys);
    size_t nk = 0;
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) keys[nk++] = k;
    for (size_t i = 0; i < nk; i++)
        for (size_t j = i + 1; j < nk; j++)
            if (strcmp(keys[j], keys[i]) < 0) {
                const char *t = keys[i];
                keys[i] = keys[j];
                keys[j] = t;
            }
    for (size_t i = 0; i < nk; i++) {
        const char *s = json_string_value(json_object_get(meta, keys[i]));
        sha_hex(s, strlen(s), hex);
        len += (size_t)snprintf(out + len, cap - len, "M %s %s\n", keys[i], hex);
    }
    const apr_tensor **ts = calloc(m->n_tensors + 1, sizeof *ts);
    for (uint64_t i = 0; i < m->n_tensors; i++)
        ts[i] = &m->tensors[i];
    qsort(ts, m->n_tensors, sizeof *ts, cmp_tensor_name);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        char shape[256] = "";
        for (uint32_t d = 0; d < ts[i]->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%llu", d ? "," : "",
                     (unsigned long long)ts[i]->dims[d]);
        sha_hex(ts[i]->data, ts[i]->nbytes, hex);
        snprintf(line, sizeof line, "T %s %s %s %s\n", ts[i]->name, apr_dtype_name(ts[i]->dtype), shape, hex);
        len += (size_t)snprintf(out + len, cap - len, "%s", line);
    }
    free(ts);
    free(keys);
    json_decref(meta);
    return out;
}

static void test_peer_safetensors_package(void **state)
{
    (void)state;
    tu_require_python("safetensors, numpy", "safetensors numpy");
    const char *src = getenv("APR_SOURCE_DIR");
    char script[4200];
    snprintf(script, sizeof script, "%s/tests/peer/safetensors_peer.py", src && *src ? src : ".");
    /* F16 synthetic model (sharded) + every numpy-representable dtype + provenance. */
    apr_model *m = tiny("tiny-qwen2", APR_DT_F16);
    m->provenance_json = strdup("{\"tool\":\"apr\"}");
    int32_t iv[5] = {-1, 2, -3, 4, 2147483647};
    uint8_t bv[3] = {1, 0, 1};
    int64_t lv[2] = {-5, 1ll << 40};
    uint64_t d5 = 5, d3 = 3, d2 = 2;
    apr_err err = {0};
    assert_int_equal(apr_model_add_tensor(m, "extra.i32", APR_DT_I32, 1, &d5, iv, sizeof iv, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "extra.bool", APR_DT_BOOL, 1, &d3, bv, sizeof bv, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "extra.u8", APR_DT_U8, 1, &d3, bv, sizeof bv, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "extra.i64", APR_DT_I64, 1, &d2, lv, sizeof lv, false, &err), 0);
    assert_int_equal(apr_model_add_tensor(m, "extra.scalar", APR_DT_I32, 0, &d2, iv, 4, false, &err), 0);
    const char *dir = tu_tmpdir("st-peer");
    char out[4096];
    snprintf(out, sizeof out, "%s/hf", dir);
    apr_write_opts o = {.shard_max_bytes = 1u << 20};
    if (apr_safetensors_write(m, out, &o, &err))
        fail_msg("%s", err.msg);
    apr_model *r = NULL;
    if (apr_safetensors_open(&r, out, &err))
        fail_msg("%s", err.msg);
    /* the metadata every shard carries */
    json_t *meta = json_pack("{s:s,s:s}", "format", "pt", "apr.provenance", "{\"tool\":\"apr\"}");
    char *meta_text = json_dumps(meta, 0);
    json_decref(meta);
    char *ours = our_dump(r, meta_text);
    char files[16384] = "";
    for (uint32_t i = 0; i < r->n_maps; i++)
        snprintf(files + strlen(files), sizeof files - strlen(files), " '%s'", r->maps[i].path);
    assert_true(r->n_maps > 1);
    const char *dump = tu_path(dir, "peer.txt");
    int rc = tu_system(dump, "python3 '%s'%s", script, files);
    size_t n;
    char *theirs = tu_read_file(dump, &n);
    if (rc != 0)
        fail_msg("safetensors_peer.py failed (%d): %s", rc, theirs ? theirs : "");
    if (strcmp(ours, theirs) != 0) {
        print_message("ours:\n%s\ntheirs:\n%s\n", ours, theirs);
        fail_msg("the safetensors package sees our files differently");
    }
    free(theirs);
    free(ours);
    free(meta_text);
    apr_model_free(r);
    apr_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_single),
        cmocka_unit_test(test_all_dtypes),
        cmocka_unit_test(test_write_single_roundtrip),
        cmocka_unit_test(test_write_dir_roundtrip),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_gguf_fixture_mapping),
        cmocka_unit_test(test_gguf_vocab_mapping),
        cmocka_unit_test(test_hf_qwen2_style),
        cmocka_unit_test(test_hf_llama_bpe_style),
        cmocka_unit_test(test_float_json_exact),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_peer_safetensors_package),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
