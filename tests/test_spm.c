/* test_spm.c - SentencePiece tokenizer.model: the protobuf reader and writer
 * (libtok/spm.c), its mapping to GGUF KVs as llama.cpp's converter does it
 * (formats/hfmeta.c), conversions through HF directories that carry only a
 * tokenizer.model, hostile inputs, and the Python sentencepiece peer check. */
#include "test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "hfmeta.h"
#include "tok.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"
#define VOCAB_FIXTURE "fixtures/ggml-vocab-llama-spm.gguf"

/* ---------------------------------------------------------------- helpers */

static apr_model *open_model(const char *path)
{
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("%s: %s", path, err.msg);
    return m;
}

static const apr_kv *kv_of(const apr_model *m, const char *key)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv)
        fail_msg("KV %s is missing", key);
    return kv;
}

static void assert_same_kv(const apr_model *a, const apr_model *b, const char *key)
{
    tu_assert_kv_equal(kv_of(a, key), kv_of(b, key));
}

/* The pieces of s against the model's GGUF token arrays, bit for bit. */
static void assert_spm_matches_vocab(const apr_spm *s, const apr_model *m)
{
    const apr_kv *toks = kv_of(m, "tokenizer.ggml.tokens"), *scores = kv_of(m, "tokenizer.ggml.scores"),
                 *types = kv_of(m, "tokenizer.ggml.token_type");
    assert_int_equal(s->n_pieces, toks->count);
    const apr_str *t = toks->arr;
    for (uint32_t i = 0; i < s->n_pieces; i++) {
        assert_int_equal(s->pieces[i].len, t[i].len);
        assert_memory_equal(s->pieces[i].s, t[i].s, t[i].len);
        assert_memory_equal(&s->scores[i], (const float *)scores->arr + i, 4);
        assert_int_equal(s->types[i], ((const int32_t *)types->arr)[i]);
    }
}

/* Serialize s, parse it back. */
static void reparse(const apr_spm *s, apr_spm *out)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    apr_err err = {0};
    assert_int_equal(apr_spm_serialize(s, &bytes, &n, &err), 0);
    if (apr_spm_parse(out, bytes, n, "written", &err))
        fail_msg("%s", err.msg);
    free(bytes);
}

/* ---------------------------------------------------------------- round trips of the fixtures' vocabularies */

static void roundtrip_vocab(const char *fixture)
{
    apr_model *m = open_model(fixture);
    apr_err err = {0};
    apr_spm s, back;
    char why[160] = "";
    int rc = apr_spm_from_model(m, &s, why, sizeof why, &err);
    if (rc)
        fail_msg("apr_spm_from_model: %d %s %s", rc, why, err.msg);
    reparse(&s, &back);
    assert_spm_matches_vocab(&back, m);
    /* LLaMA's TrainerSpec / NormalizerSpec */
    assert_int_equal(back.model_type, APR_SPM_BPE);
    assert_int_equal(back.vocab_size, (int32_t)back.n_pieces);
    assert_true(back.byte_fallback);
    assert_int_equal(back.unk_id, 0);
    assert_int_equal(back.bos_id, 1);
    assert_int_equal(back.eos_id, 2);
    assert_int_equal(back.pad_id, -1);
    assert_string_equal(back.unk_piece.s, "<unk>");
    assert_string_equal(back.bos_piece.s, "<s>");
    assert_string_equal(back.eos_piece.s, "</s>");
    assert_string_equal(back.norm_name.s, "identity");
    assert_true(back.add_dummy_prefix);
    assert_false(back.remove_extra_whitespaces);
    assert_true(back.escape_whitespaces);

    /* The reader's mapping (llama.cpp's _set_vocab_sentencepiece) gives the
     * GGUF arrays back: a directory holding nothing but this tokenizer.model. */
    apr_hf_docs d = {.spm = &back};
    apr_model *k = apr_model_new(APR_FMT_SAFETENSORS);
    assert_non_null(k);
    if (apr_hf_docs_to_kvs(k, &d, NULL, &err))
        fail_msg("%s", err.msg);
    assert_same_kv(k, m, "tokenizer.ggml.model");
    assert_same_kv(k, m, "tokenizer.ggml.tokens");
    assert_same_kv(k, m, "tokenizer.ggml.scores");
    assert_same_kv(k, m, "tokenizer.ggml.token_type");
    assert_string_equal(apr_kv_get_str(k, "tokenizer.ggml.pre"), "default");
    apr_model_free(k);
    apr_spm_free(&back);
    apr_spm_free(&s);
    apr_model_free(m);
}

static void test_roundtrip_stories_vocab(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, FIXTURE);
    roundtrip_vocab(fixture);
}

static void test_roundtrip_llama_32k_vocab(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, VOCAB_FIXTURE);
    roundtrip_vocab(fixture);
}

/* ---------------------------------------------------------------- conversions through HF directories */

/* The KVs llama.cpp's loader reads for a LLaMA model with an SPM vocab. */
static const char *const needed_keys[] = {
    "general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count",
    "llama.feed_forward_length", "llama.rope.dimension_count", "llama.attention.head_count",
    "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
    "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
};

static void assert_llama_equivalent(const apr_model *a, const apr_model *b)
{
    for (size_t i = 0; i < sizeof needed_keys / sizeof *needed_keys; i++)
        assert_same_kv(a, b, needed_keys[i]);
    /* Keys HF files cannot hold: absent means llama.cpp's default (-1 for SPM). */
    static const char *const optional[] = {"tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id"};
    for (int i = 0; i < 2; i++) {
        const apr_kv *x = apr_model_kv(a, optional[i]), *y = apr_model_kv(b, optional[i]);
        if (x && y)
            tu_assert_kv_equal(x, y);
        else if (x || y)
            assert_int_equal((x ? x : y)->v.u32, UINT32_MAX);
    }
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        assert_string_equal(a->tensors[i].name, b->tensors[i].name);
        assert_int_equal(a->tensors[i].nbytes, b->tensors[i].nbytes);
        assert_memory_equal(a->tensors[i].data, b->tensors[i].data, a->tensors[i].nbytes);
    }
}

/* m's provenance lists dir/file with this role and the file's sha256. */
static void assert_provenance_hashes(const apr_model *m, const char *dir, const char *file, const char *role)
{
    assert_non_null(m->provenance_json);
    json_error_t je;
    json_t *p = json_loads(m->provenance_json, 0, &je);
    assert_non_null(p);
    uint8_t sum[32];
    apr_err err = {0};
    assert_int_equal(apr_sha256_file(tu_path(dir, file), sum, &err), 0);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sum[i]);
    bool found = false;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(json_object_get(p, "source"), "files"), i, f) {
        if (strcmp(json_string_value(json_object_get(f, "file")), file) != 0)
            continue;
        assert_string_equal(json_string_value(json_object_get(f, "role")), role);
        assert_string_equal(json_string_value(json_object_get(f, "sha256")), hex);
        found = true;
    }
    json_decref(p);
    if (!found)
        fail_msg("provenance does not list %s", file);
}

static void convert(const char *in, const char *out, uint64_t shard_bytes)
{
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.shard_max_bytes = shard_bytes;
    apr_err err = {0};
    if (apr_convert_file(in, out, &o, NULL, &err))
        fail_msg("convert %s -> %s: %s", in, out, err.msg);
}

static void test_gguf_hf_gguf_with_tokenizer_model_only(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, FIXTURE);
    const char *dir = tu_tmpdir("spm-conv");
    char hf[4096], gguf_both[4096], gguf_spm[4096], apr_spm_out[4096], sharded[4096], gguf_sh[4096];
    snprintf(hf, sizeof hf, "%s/hf/", dir);
    snprintf(gguf_both, sizeof gguf_both, "%s/both.gguf", dir);
    snprintf(gguf_spm, sizeof gguf_spm, "%s/spm.gguf", dir);
    snprintf(apr_spm_out, sizeof apr_spm_out, "%s/spm.apr", dir);
    snprintf(sharded, sizeof sharded, "%s/sharded/", dir);
    snprintf(gguf_sh, sizeof gguf_sh, "%s/sharded.gguf", dir);
    convert(fixture, hf, 0);
    assert_int_equal(access(tu_path(hf, "tokenizer.model"), F_OK), 0);
    assert_int_equal(access(tu_path(hf, "tokenizer.json"), F_OK), 0);

    apr_model *ref = open_model(fixture);
    /* Both tokenizer files: tokenizer.model is read, tokenizer.json's records
     * complete it: every KV comes back exactly. */
    convert(hf, gguf_both, 0);
    apr_model *both = open_model(gguf_both);
    assert_llama_equivalent(ref, both);
    for (uint64_t i = 0; i < ref->n_kvs; i++)
        assert_same_kv(both, ref, ref->kvs[i].key);

    /* tokenizer.model alone (as many LLaMA repos ship it). */
    assert_int_equal(unlink(tu_path(hf, "tokenizer.json")), 0);
    convert(hf, gguf_spm, 0);
    apr_model *spm = open_model(gguf_spm);
    assert_llama_equivalent(ref, spm);

    assert_provenance_hashes(spm, hf, "tokenizer.model", "tokenizer");

    /* safetensors -> APR directly keeps the same vocabulary. */
    convert(hf, apr_spm_out, 0);
    apr_model *ap = open_model(apr_spm_out);
    assert_same_kv(ap, ref, "tokenizer.ggml.tokens");
    assert_same_kv(ap, ref, "tokenizer.ggml.scores");
    assert_same_kv(ap, ref, "tokenizer.ggml.token_type");

    /* Sharded output (an index), tokenizer.json removed, read through the index. */
    convert(fixture, sharded, 256 * 1024);
    assert_int_equal(access(tu_path(sharded, "model.safetensors.index.json"), F_OK), 0);
    assert_int_equal(unlink(tu_path(sharded, "tokenizer.json")), 0);
    convert(tu_path(sharded, "model.safetensors.index.json"), gguf_sh, 0);
    apr_model *sh = open_model(gguf_sh);
    assert_llama_equivalent(ref, sh);
    assert_provenance_hashes(sh, sharded, "tokenizer.model", "tokenizer");

    /* added_tokens.json is read (token 300 becomes user-defined) and hashed. */
    static const char added[] = "{\"<my token>\": 300}";
    assert_int_equal(tu_write_file(tu_path(sharded, "added_tokens.json"), added, strlen(added)), 0);
    assert_int_equal(unlink(gguf_sh), 0);
    convert(tu_path(sharded, "model.safetensors.index.json"), gguf_sh, 0);
    apr_model *ad = open_model(gguf_sh);
    assert_string_equal(((const apr_str *)kv_of(ad, "tokenizer.ggml.tokens")->arr)[300].s, "<my token>");
    assert_int_equal(((const int32_t *)kv_of(ad, "tokenizer.ggml.token_type")->arr)[300], 4);
    assert_true(((const float *)kv_of(ad, "tokenizer.ggml.scores")->arr)[300] == -1000.0f);
    assert_provenance_hashes(ad, sharded, "added_tokens.json", "added_tokens");
    apr_model_free(ad);

    apr_model_free(sh);
    apr_model_free(ap);
    apr_model_free(spm);
    apr_model_free(both);
    apr_model_free(ref);
}

/* A vocabulary sentencepiece could not load gets no tokenizer.model (and a
 * stale one from an earlier conversion into the same directory goes away). */
static void test_unloadable_vocab_writes_no_tokenizer_model(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, FIXTURE);
    const char *dir = tu_tmpdir("spm-unloadable");
    apr_model *m = open_model(fixture);
    apr_err err = {0};
    const apr_kv *toks = kv_of(m, "tokenizer.ggml.tokens");
    apr_kv copy;
    assert_int_equal(apr_kv_copy(&copy, toks), 0);
    apr_str *t = copy.arr;
    free(t[300].s);
    t[300].s = strdup(t[301].s); /* a duplicate piece */
    t[300].len = t[301].len;
    assert_int_equal(apr_model_set_kv(m, &copy), 0);
    apr_kv_free(&copy);
    assert_int_equal(apr_model_derive(m, &err), 0);
    apr_spm s;
    char why[160] = "";
    assert_int_equal(apr_spm_from_model(m, &s, why, sizeof why, &err), 1);
    assert_non_null(strstr(why, "defined twice"));

    char hf[4096];
    snprintf(hf, sizeof hf, "%s/hf/", dir);
    convert(fixture, hf, 0);
    assert_int_equal(access(tu_path(hf, "tokenizer.model"), F_OK), 0);
    assert_int_equal(tu_write_file(tu_path(hf, "added_tokens.json"), "{\"zz\": 3}", 9), 0);
    if (apr_model_write(m, hf, APR_FMT_SAFETENSORS, NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(access(tu_path(hf, "tokenizer.model"), F_OK), 0);
    assert_int_not_equal(access(tu_path(hf, "added_tokens.json"), F_OK), 0);
    apr_model *back = open_model(hf);
    assert_same_kv(back, m, "tokenizer.ggml.tokens");
    assert_same_kv(back, m, "tokenizer.ggml.token_type");
    apr_model_free(back);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- an independently hand-encoded ModelProto */

typedef struct buf {
    uint8_t b[4096];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->b);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void put_bytes(buf *b, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        uint8_t c = (uint8_t)va_arg(ap, int);
        put(b, &c, 1);
    }
    va_end(ap);
}

/* A SentencePiece message: piece (1, LEN), score (2, fixed32 LE), type (3, varint) when > 0. */
static void put_piece(buf *b, const char *piece, const uint8_t score_le[4], int type)
{
    size_t pl = strlen(piece);
    size_t len = 2 + pl + 5 + (type > 0 ? 2 : 0);
    put_bytes(b, 2, 0x0a, (int)len);
    put_bytes(b, 2, 0x0a, (int)pl);
    put(b, piece, pl);
    put_bytes(b, 1, 0x15);
    put(b, score_le, 4);
    if (type > 0)
        put_bytes(b, 2, 0x18, type);
}

/* pieces: <unk> UNKNOWN 0.0, <s> CONTROL 0.0, </s> CONTROL 0.0, "\xe2\x96\x81a"
 * -1.5, "b" USER_DEFINED -2.0, "c" with an out-of-enum type 9 (stays NORMAL)
 * and an unknown varint field; an unknown fixed64 field at the top; a
 * TrainerSpec (model_type BPE, vocab_size 6, pad_id -1 as a 10-byte varint,
 * an unknown string field 2) and a NormalizerSpec (name "identity",
 * add_dummy_prefix false). */
static void hand_model(buf *b)
{
    static const uint8_t zero[4] = {0, 0, 0, 0}, m15[4] = {0, 0, 0xc0, 0xbf}, m2[4] = {0, 0, 0, 0xc0};
    b->n = 0;
    put_piece(b, "<unk>", zero, 2);
    put_piece(b, "<s>", zero, 3);
    put_piece(b, "</s>", zero, 3);
    put_piece(b, "\xe2\x96\x81" "a", m15, 0);
    put_piece(b, "b", m2, 4);
    /* "c": 0a 01 'c', 18 09 (type 9), 38 05 (field 7 varint) */
    put_bytes(b, 9, 0x0a, 7, 0x0a, 1, 'c', 0x18, 9, 0x38, 5);
    /* top-level field 9, fixed64 */
    put_bytes(b, 9, 0x49, 1, 2, 3, 4, 5, 6, 7, 8);
    /* trainer_spec: 18 02 | 20 06 | 12 01 'x' | d8 02 (field 43: 344 = d8 02) ff*9 01 (-1) */
    put_bytes(b, 2, 0x12, 4 + 3 + 12);
    put_bytes(b, 4, 0x18, 2, 0x20, 6);
    put_bytes(b, 3, 0x12, 1, 'x');
    put_bytes(b, 12, 0xd8, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
    /* normalizer_spec: 0a 08 "identity" | 18 00 */
    put_bytes(b, 2, 0x1a, 10 + 2);
    put_bytes(b, 2, 0x0a, 8);
    put(b, "identity", 8);
    put_bytes(b, 2, 0x18, 0);
}

/* the config.json fields the architecture mapping requires */
#define CFG "\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 1, \"hidden_size\": 8, " \
            "\"num_attention_heads\": 2, "

static void test_hand_encoded_model(void **state)
{
    (void)state;
    buf b;
    hand_model(&b);
    apr_spm s;
    apr_err err = {0};
    if (apr_spm_parse(&s, b.b, b.n, "hand", &err))
        fail_msg("%s", err.msg);
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b", "c"};
    static const int32_t types[] = {2, 3, 3, 1, 4, 1};
    static const float scores[] = {0, 0, 0, -1.5f, -2.0f, 0};
    assert_int_equal(s.n_pieces, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(s.pieces[i].s, pieces[i]);
        assert_int_equal(s.types[i], types[i]);
        assert_true(s.scores[i] == scores[i]);
    }
    assert_int_equal(s.model_type, APR_SPM_BPE);
    assert_int_equal(s.vocab_size, 6);
    assert_int_equal(s.pad_id, -1);
    assert_int_equal(s.unk_id, 0); /* proto defaults */
    assert_int_equal(s.bos_id, 1);
    assert_false(s.byte_fallback);
    assert_string_equal(s.bos_piece.s, "<s>");
    assert_string_equal(s.norm_name.s, "identity");
    assert_false(s.add_dummy_prefix);
    assert_true(s.remove_extra_whitespaces);

    /* Our writer's bytes parse to the same model. */
    apr_spm back;
    reparse(&s, &back);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(back.pieces[i].s, pieces[i]);
        assert_int_equal(back.types[i], types[i]);
    }
    assert_int_equal(back.pad_id, -1);
    apr_spm_free(&back);

    /* llama.cpp's mapping with config.json vocab_size 10 ([PAD6..9]),
     * added_tokens.json and tokenizer_config.json added_tokens_decoder. */
    json_error_t je;
    apr_hf_docs d = {.spm = &s};
    d.config = json_loads("{" CFG "\"vocab_size\": 10, \"bos_token_id\": 1, \"eos_token_id\": 2}", 0, &je);
    d.added_tokens = json_loads("{\"<extra>\": 7, \"<far>\": 99}", 0, &je);
    d.tokenizer_config = json_loads(
        "{\"add_bos_token\": true, \"add_eos_token\": false, \"added_tokens_decoder\": {"
        "\"1\": {\"content\": \"<s>\", \"special\": true},"
        "\"8\": {\"content\": \"<|im_end|>\", \"special\": false},"
        "\"9\": {\"content\": \"x\xe2\x96\x81y\", \"special\": false},"
        "\"12\": {\"content\": \"<gone>\", \"special\": true}}}", 0, &je);
    assert_non_null(d.config);
    assert_non_null(d.added_tokens);
    assert_non_null(d.tokenizer_config);
    apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
    if (apr_hf_docs_to_kvs(m, &d, NULL, &err))
        fail_msg("%s", err.msg);
    static const char *const want_tok[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b", "c",
                                           "[PAD6]", "<extra>", "<|im_end|>", "x y"};
    static const int32_t want_type[] = {2, 3, 3, 1, 1, 1, 5, 4, 3, 4};
    static const float want_score[] = {0, -1000, 0, -1.5f, -2, 0, -10000, -1000, -1000, -1000};
    const apr_kv *tk = kv_of(m, "tokenizer.ggml.tokens"), *ty = kv_of(m, "tokenizer.ggml.token_type"),
                 *sc = kv_of(m, "tokenizer.ggml.scores");
    assert_int_equal(tk->count, 10);
    for (int i = 0; i < 10; i++) {
        assert_string_equal(((const apr_str *)tk->arr)[i].s, want_tok[i]);
        assert_int_equal(((const int32_t *)ty->arr)[i], want_type[i]);
        assert_true(((const float *)sc->arr)[i] == want_score[i]);
    }
    uint32_t v = 0;
    assert_true(apr_kv_get_u32(m, "tokenizer.ggml.bos_token_id", &v));
    assert_int_equal(v, 1);
    assert_true(apr_kv_get_u32(m, "tokenizer.ggml.eos_token_id", &v));
    assert_int_equal(v, 2);
    bool add = false;
    assert_true(apr_kv_get_bool(m, "tokenizer.ggml.add_bos_token", &add));
    assert_true(add);
    assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.model"), "llama");
    apr_model_free(m);

    /* No vocab_size: the piece count. */
    json_object_del(d.config, "vocab_size");
    json_object_del(d.tokenizer_config, "added_tokens_decoder");
    json_decref(d.added_tokens);
    d.added_tokens = NULL;
    m = apr_model_new(APR_FMT_SAFETENSORS);
    assert_int_equal(apr_hf_docs_to_kvs(m, &d, NULL, &err), 0);
    assert_int_equal(kv_of(m, "tokenizer.ggml.tokens")->count, 6);
    apr_model_free(m);

    /* Hostile side files. */
    static const char *const bad_cfg[] = {"{" CFG "\"vocab_size\": -3}", "{" CFG "\"vocab_size\": 1073741824}",
                                          "{" CFG "\"vocab_size\": \"many\"}"};
    for (int i = 0; i < 3; i++) {
        json_decref(d.config);
        d.config = json_loads(bad_cfg[i], 0, &je);
        m = apr_model_new(APR_FMT_SAFETENSORS);
        memset(&err, 0, sizeof err);
        assert_int_equal(apr_hf_docs_to_kvs(m, &d, NULL, &err), APR_E_FORMAT);
        assert_non_null(strstr(err.msg, "vocab_size"));
        apr_model_free(m);
    }
    json_decref(d.config);
    d.config = NULL;
    static const char *const bad_tc[] = {"{\"added_tokens_decoder\": {\"-1\": {\"content\": \"a\"}}}",
                                         "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}",
                                         "{\"added_tokens_decoder\": {\"3\": {\"special\": true}}}",
                                         "{\"added_tokens_decoder\": [1]}"};
    for (int i = 0; i < 4; i++) {
        json_decref(d.tokenizer_config);
        d.tokenizer_config = json_loads(bad_tc[i], 0, &je);
        m = apr_model_new(APR_FMT_SAFETENSORS);
        assert_int_equal(apr_hf_docs_to_kvs(m, &d, NULL, &err), APR_E_FORMAT);
        apr_model_free(m);
    }
    json_decref(d.tokenizer_config);
    d.tokenizer_config = NULL;
    d.added_tokens = json_loads("{\"a\": -1}", 0, &je);
    m = apr_model_new(APR_FMT_SAFETENSORS);
    assert_int_equal(apr_hf_docs_to_kvs(m, &d, NULL, &err), APR_E_FORMAT);
    apr_model_free(m);
    json_decref(d.added_tokens);
    apr_spm_free(&s);
}

/* ---------------------------------------------------------------- hostile inputs */

static void expect_format_error(const uint8_t *p, size_t n, const char *what)
{
    apr_spm s;
    apr_err err = {0};
    int rc = apr_spm_parse(&s, p, n, "hostile", &err);
    if (rc != APR_E_FORMAT)
        fail_msg("%s: expected a format error, got %d (%s)", what, rc, err.msg);
    assert_true(err.msg[0] != 0);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    buf b;
    hand_model(&b);
    /* Every prefix that cuts a message parses to an error, never a crash;
     * prefixes that end on a message boundary are valid protobuf. */
    size_t errors = 0;
    for (size_t n = 0; n < b.n; n++) {
        apr_spm s;
        apr_err err = {0};
        int rc = apr_spm_parse(&s, b.b, n, "truncated", &err);
        if (rc == 0) {
            apr_spm_free(&s);
            continue;
        }
        assert_int_equal(rc, APR_E_FORMAT);
        errors++;
    }
    assert_true(errors > b.n - 10);

    /* The same for a real vocabulary's bytes, at a stride (every byte of the
     * first 600 and then every 97th). */
    const char *fixture = tu_shared_part(FIXTURE);
    if (!fixture)
        return;
    apr_model *m = open_model(fixture);
    apr_spm s;
    char why[160];
    apr_err err = {0};
    assert_int_equal(apr_spm_from_model(m, &s, why, sizeof why, &err), 0);
    uint8_t *bytes;
    size_t n;
    assert_int_equal(apr_spm_serialize(&s, &bytes, &n, &err), 0);
    for (size_t k = 0; k < n; k += k < 600 ? 1 : 97) {
        apr_spm t;
        uint8_t *copy = malloc(k ? k : 1); /* exact-size copy: ASan sees any overread */
        memcpy(copy, bytes, k);
        int rc = apr_spm_parse(&t, copy, k, "truncated", &err);
        if (rc == 0)
            apr_spm_free(&t);
        else
            assert_int_equal(rc, APR_E_FORMAT);
        free(copy);
    }
    free(bytes);
    apr_spm_free(&s);
    apr_model_free(m);
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    /* varint longer than 10 bytes / bit 64 set in the 10th */
    static const uint8_t long_varint[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    expect_format_error(long_varint, sizeof long_varint, "11-byte varint");
    static const uint8_t big_varint[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    expect_format_error(big_varint, sizeof big_varint, "varint over 64 bits");
    /* a length past the end, and a huge one */
    static const uint8_t past[] = {0x0a, 0x05, 0x0a, 0x01, 'a'};
    expect_format_error(past, sizeof past, "length past the end");
    static const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    expect_format_error(huge, sizeof huge, "2^63 length");
    /* inner length past its message */
    static const uint8_t inner[] = {0x0a, 0x03, 0x0a, 0x09, 'a', 0x00, 0x00, 0x00};
    expect_format_error(inner, sizeof inner, "inner length past its message");
    /* field number 0; groups (3, 4); invalid wire types 6, 7 */
    static const uint8_t f0[] = {0x02, 0x00};
    expect_format_error(f0, sizeof f0, "field 0");
    for (int wt = 3; wt <= 7; wt++) {
        if (wt == 5)
            continue;
        uint8_t g[] = {(uint8_t)(9 << 3 | wt), 0, 0, 0, 0, 0, 0, 0, 0};
        expect_format_error(g, sizeof g, "bad wire type");
    }
    /* known fields with the wrong wire type */
    static const uint8_t pieces_varint[] = {0x08, 0x01};
    expect_format_error(pieces_varint, sizeof pieces_varint, "pieces as varint");
    static const uint8_t piece_str_varint[] = {0x0a, 0x02, 0x08, 0x01};
    expect_format_error(piece_str_varint, sizeof piece_str_varint, "piece string as varint");
    static const uint8_t score_varint[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x10, 0x01};
    expect_format_error(score_varint, sizeof score_varint, "score as varint");
    static const uint8_t type_len[] = {0x0a, 0x06, 0x0a, 0x01, 'a', 0x1a, 0x01, 0x02};
    expect_format_error(type_len, sizeof type_len, "type as bytes");
    static const uint8_t trainer_fixed[] = {0x12, 0x05, 0x1d, 0, 0, 0, 0};
    expect_format_error(trainer_fixed, sizeof trainer_fixed, "model_type as fixed32");
    /* truncated fixed32 score */
    static const uint8_t short_score[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x15, 0x00};
    expect_format_error(short_score, sizeof short_score, "short score");
    /* framing fine, but sentencepiece would refuse the model */
    expect_format_error((const uint8_t *)"", 0, "no pieces");
    static const uint8_t no_unk[] = {0x0a, 0x03, 0x0a, 0x01, 'a'};
    expect_format_error(no_unk, sizeof no_unk, "no unknown piece");
    static const uint8_t empty_piece[] = {0x0a, 0x02, 0x18, 0x02};
    expect_format_error(empty_piece, sizeof empty_piece, "empty piece");
    static const uint8_t dup[] = {0x0a, 0x05, 0x0a, 0x01, 'u', 0x18, 0x02, 0x0a, 0x03, 0x0a, 0x01, 'a',
                                  0x0a, 0x03, 0x0a, 0x01, 'a'};
    expect_format_error(dup, sizeof dup, "duplicate piece");
    static const uint8_t two_unk[] = {0x0a, 0x05, 0x0a, 0x01, 'u', 0x18, 0x02, 0x0a, 0x05, 0x0a, 0x01, 'v', 0x18, 0x02};
    expect_format_error(two_unk, sizeof two_unk, "two unknown pieces");
    static const uint8_t byte_no_fallback[] = {0x0a, 0x05, 0x0a, 0x01, 'u', 0x18, 0x02,
                                               0x0a, 0x0a, 0x0a, 0x06, '<', '0', 'x', '4', '1', '>', 0x18, 0x06};
    expect_format_error(byte_no_fallback, sizeof byte_no_fallback, "byte piece without byte_fallback");
    /* byte_fallback with one of the 256 byte pieces only */
    uint8_t partial[64];
    memcpy(partial, byte_no_fallback, sizeof byte_no_fallback);
    size_t n = sizeof byte_no_fallback;
    const uint8_t bf[] = {0x12, 0x03, 0x98, 0x02, 0x01}; /* trainer_spec { byte_fallback (35) = 1 } */
    memcpy(partial + n, bf, sizeof bf);
    expect_format_error(partial, n + sizeof bf, "missing byte pieces");

    /* an absurd piece count: 2^24 + 1 empty pieces is 32 MiB of 0a 00 */
    size_t count = (1u << 24) + 1, len = 2 * count;
    uint8_t *many = malloc(len);
    assert_non_null(many);
    for (size_t i = 0; i < count; i++) {
        many[2 * i] = 0x0a;
        many[2 * i + 1] = 0x00;
    }
    apr_spm s;
    apr_err err = {0};
    assert_int_equal(apr_spm_parse(&s, many, len, "many", &err), APR_E_FORMAT);
    assert_non_null(strstr(err.msg, "2^24"));
    free(many);
}

/* A directory with a broken tokenizer.model is refused with the file named. */
static void test_broken_file_in_directory(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, FIXTURE);
    const char *dir = tu_tmpdir("spm-broken");
    char hf[4096], out[4096];
    snprintf(hf, sizeof hf, "%s/hf/", dir);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    convert(fixture, hf, 0);
    size_t n = 0;
    char *bytes = tu_read_file(tu_path(hf, "tokenizer.model"), &n);
    assert_non_null(bytes);
    assert_int_equal(tu_write_file(tu_path(hf, "tokenizer.model"), bytes, n / 2), 0);
    free(bytes);
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    apr_err err = {0};
    assert_int_equal(apr_convert_file(hf, out, &o, NULL, &err), APR_E_FORMAT);
    assert_non_null(strstr(err.msg, "tokenizer.model"));
    assert_int_not_equal(access(out, F_OK), 0);
}

/* ---------------------------------------------------------------- the Python sentencepiece peer */

static void test_sentencepiece_peer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fixture, FIXTURE);
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    tu_require_python("sentencepiece, gguf", "sentencepiece gguf");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s/work'", bin, fixture, tu_tmpdir("spm-peer-work"));
    int rc = tu_run_peer("spm-peer", "spm_peer.py", args);
    if (rc != 0)
        fail_msg("spm_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_stories_vocab),
        cmocka_unit_test(test_roundtrip_llama_32k_vocab),
        cmocka_unit_test(test_gguf_hf_gguf_with_tokenizer_model_only),
        cmocka_unit_test(test_unloadable_vocab_writes_no_tokenizer_model),
        cmocka_unit_test(test_hand_encoded_model),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_broken_file_in_directory),
        cmocka_unit_test(test_sentencepiece_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
