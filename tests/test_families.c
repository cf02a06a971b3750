/* test_families.c - model families read as their config says, checked
 * against references nobody here wrote:
 *   - ../shared/fixtures/tinycoder (Qwen2 saved by transformers 5, rope theta
 *     in rope_parameters): apr's logits on the HF directory, on apr's GGUF and
 *     on apr's APR match transformers' float32 reference logits; apr's GGUF
 *     equals llama.cpp's conversion (tinycoder-bf16.gguf) tensor for tensor
 *     and KV for KV, apart from the differences listed (and justified) below;
 *   - config.json keys the forward pass does not implement are refused by
 *     `apr convert` with exit 2, naming the key, writing nothing;
 *   - linear rope scaling goes into the GGUF as llama.cpp's keys and changes
 *     the forward pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "forward.h"
#include "test_util.h"

#define TC "fixtures/tinycoder"
#define TC_POS 256u
#define TC_VOCAB 2048u

/* KVs llama.cpp's converter writes and apr does not (or writes differently),
 * each for a reason that does not touch the computation:
 *   general.file_type, general.quantization_version: llama.cpp's file-level
 *     bookkeeping (apr's tensors carry their own types);
 *   general.size_label, general.type, general.name: the converter's metadata
 *     heuristics (a parameter-count label, "model", the directory name
 *     title-cased: "Tinycoder"; apr keeps the name as written);
 *   tokenizer.ggml.add_bos_token / add_eos_token: both false, which is what
 *     apr's reader assumes for a gpt2 vocab without them (derive.c). */
static const char *const llama_only_kvs[] = {
    "general.file_type", "general.quantization_version", "general.size_label", "general.type",
    "general.name", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
};

static bool listed(const char *k)
{
    for (size_t i = 0; i < sizeof llama_only_kvs / sizeof *llama_only_kvs; i++)
        if (!strcmp(k, llama_only_kvs[i]))
            return true;
    return !strncmp(k, "apr.provenance.", 15); /* apr's own record of where the file came from */
}

static int32_t *read_ref_tokens(const char *path, uint32_t *n)
{
    size_t len;
    char *txt = tu_read_file(path, &len);
    assert_non_null(txt);
    int32_t *ids = malloc(TC_POS * sizeof *ids);
    uint32_t k = 0;
    char *p = txt, *end;
    for (long v; k < TC_POS && (v = strtol(p, &end, 10), end != p); p = end)
        ids[k++] = (int32_t)v;
    free(txt);
    *n = k;
    return ids;
}

/* max |a - ref| / max |ref| over all n values. */
static double rel_max_diff(const float *a, const float *ref, size_t n)
{
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)ref[i]);
        md = d > md || isnan(d) ? (isnan(d) ? INFINITY : d) : md;
        mr = fabs((double)ref[i]) > mr ? fabs((double)ref[i]) : mr;
    }
    return md / mr;
}

/* The model at path against the reference logits; returns rel max diff. */
static double tinycoder_diff(const char *path)
{
    const char *tok = tu_shared(TC "/ref_tokens.txt"), *lg = tu_shared(TC "/ref_logits.f32");
    uint32_t n;
    int32_t *ids = read_ref_tokens(tok, &n);
    assert_int_equal(n, TC_POS);
    size_t len;
    float *ref = (float *)tu_read_file(lg, &len);
    assert_non_null(ref);
    assert_int_equal(len, (size_t)TC_POS * TC_VOCAB * sizeof(float));

    apr_err err = {0};
    apr_model *m = NULL;
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("open %s: %s", path, err.msg);
    apr_fwd *f = NULL;
    apr_fwd_opts o = {.device = APR_DEV_CPU, .max_ctx = TC_POS};
    if (apr_fwd_load(&f, m, &o, &err))
        fail_msg("load %s: %s", path, err.msg);
    float *out = malloc((size_t)TC_POS * TC_VOCAB * sizeof *out);
    if (apr_fwd_eval(f, ids, TC_POS, out, NULL, &err))
        fail_msg("eval %s: %s", path, err.msg);
    const double d = rel_max_diff(out, ref, (size_t)TC_POS * TC_VOCAB);
    print_message("%s: rel max diff %.3g vs transformers' f32 logits (%u positions)\n", path, d, TC_POS);
    free(out);
    apr_fwd_free(f);
    apr_model_free(m);
    free(ref);
    free(ids);
    return d;
}

static const char *convert_to(const char *src, const char *dir, const char *name)
{
    static char out[3][1024];
    static int k;
    char *p = out[k++ % 3];
    snprintf(p, 1024, "%s/%s", dir, name);
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.time_utc = "2026-01-01T00:00:00Z";
    if (!strchr(name, '.'))
        o.to = APR_FMT_SAFETENSORS; /* an HF directory */
    apr_err err = {0};
    if (apr_convert_file(src, p, &o, NULL, &err))
        fail_msg("convert %s -> %s: %s", src, p, err.msg);
    return p;
}

static void test_tinycoder_logits_hf_gguf_apr(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(dir, TC "/config.json");
    char hf[1024];
    snprintf(hf, sizeof hf, "%s", dir);
    *strrchr(hf, '/') = 0;
    const char *tmp = tu_tmpdir("families-tc");
    assert_true(tinycoder_diff(hf) <= 1e-4);
    const char *gguf = convert_to(hf, tmp, "tc.gguf");
    assert_true(tinycoder_diff(gguf) <= 1e-4);
    const char *apr = convert_to(hf, tmp, "tc.apr");
    assert_true(tinycoder_diff(apr) <= 1e-4);
    /* and back: APR -> GGUF is the same model */
    assert_true(tinycoder_diff(convert_to(apr, tmp, "tc2.gguf")) <= 1e-4);
}

static void test_tinycoder_gguf_equals_llama_cpp(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(ref, TC "/tinycoder-bf16.gguf");
    char hf[1024];
    snprintf(hf, sizeof hf, "%s", ref);
    *strrchr(hf, '/') = 0;
    const char *gguf = convert_to(hf, tu_tmpdir("families-tc-eq"), "tc.gguf");
    apr_err err = {0};
    apr_model *a = NULL, *b = NULL;
    if (apr_model_open(&a, gguf, NULL, &err) || apr_model_open(&b, ref, NULL, &err))
        fail_msg("open: %s", err.msg);
    /* tensors: same set, each with the same dtype, dims and bytes (the order
     * differs: llama.cpp keeps the safetensors' alphabetical order, apr writes
     * each layer's tensors together) */
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < b->n_tensors; i++) {
        const apr_tensor *y = &b->tensors[i], *x = apr_model_tensor(a, y->name);
        if (!x)
            fail_msg("apr's GGUF lacks %s", y->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        for (uint32_t d = 0; d < y->ndim; d++)
            assert_int_equal(x->dims[d], y->dims[d]);
        assert_int_equal(x->nbytes, y->nbytes);
        if (memcmp(x->data, y->data, y->nbytes))
            fail_msg("tensor %s: bytes differ from llama.cpp's", y->name);
    }
    /* KVs: every one of llama.cpp's is in apr's file with the same type and
     * value, except those listed; apr adds only its provenance. */
    for (uint64_t i = 0; i < b->n_kvs; i++) {
        const apr_kv *y = &b->kvs[i], *x = apr_model_kv(a, y->key);
        if (listed(y->key))
            continue;
        if (!x)
            fail_msg("apr's GGUF lacks KV %s", y->key);
        tu_assert_kv_equal(x, y);
    }
    for (uint64_t i = 0; i < a->n_kvs; i++)
        if (!apr_model_kv(b, a->kvs[i].key) && !listed(a->kvs[i].key))
            fail_msg("apr's GGUF has KV %s that llama.cpp's has not", a->kvs[i].key);
    apr_model_free(a);
    apr_model_free(b);
}

/* ---------------------------------------------------------------- refusals */

/* A copy of tinycoder whose `file` (config.json, generation_config.json or
 * tokenizer_config.json) is edited by `python3 -c EDIT` (the dict is `c`);
 * the other files are symlinks. */
static const char *edited_tinycoder_file(const char *tag, const char *file, const char *edit)
{
    TU_REQUIRE_SHARED(cfg0, TC "/config.json");
    char src[1024], cfg[1100];
    snprintf(src, sizeof src, "%s", cfg0);
    *strrchr(src, '/') = 0;
    snprintf(cfg, sizeof cfg, "%s/%s", src, file);
    const char *dir = tu_tmpdir(tag);
    static char model[1024];
    snprintf(model, sizeof model, "%s/model", dir);
    assert_int_equal(mkdir(model, 0755), 0);
    const char *files[] = {"model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                           "config.json"};
    for (size_t i = 0; i < 5; i++) {
        char a[1100], b[1100];
        if (!strcmp(files[i], file))
            continue;
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", model, files[i]);
        assert_int_equal(symlink(a, b), 0);
    }
    int rc = tu_system(NULL,
                       "python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); %s; "
                       "json.dump(c, open(sys.argv[2], \"w\"), indent=2)' '%s' '%s/%s'",
                       edit, cfg, model, file);
    if (rc != 0)
        fail_msg("python3 could not write the edited config (%d)", rc);
    return model;
}

static const char *edited_tinycoder(const char *tag, const char *edit)
{
    return edited_tinycoder_file(tag, "config.json", edit);
}

/* apr convert of the model with `file` edited: exit 2, the message names
 * `needle`, no output. */
static void expect_refused_in(const char *tag, const char *file, const char *edit, const char *needle)
{
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *model = edited_tinycoder_file(tag, file, edit);
    char out[1100], log[1100];
    snprintf(out, sizeof out, "%s/../out.gguf", model);
    snprintf(log, sizeof log, "%s/../log.txt", model);
    int rc = tu_system(log, "'%s' convert '%s' '%s' 2>&1", bin, model, out);
    size_t len;
    char *msg = tu_read_file(log, &len);
    print_message("[%s] exit %d: %s", tag, rc, msg ? msg : "");
    assert_int_equal(rc, 2);
    assert_non_null(msg);
    if (!strstr(msg, needle))
        fail_msg("the message does not name '%s'", needle);
    free(msg);
    assert_int_equal(access(out, F_OK), -1);
    /* apr run refuses it too (the HF reader is shared) */
    rc = tu_system(NULL, "'%s' run '%s' --prompt x -n 1 >/dev/null 2>&1", bin, model);
    assert_int_equal(rc, 2);
}

static void expect_refused(const char *tag, const char *edit, const char *needle)
{
    expect_refused_in(tag, "config.json", edit, needle);
}

static void test_refuses_unknown_rope_type(void **state)
{
    (void)state;
    expect_refused("fam-rope-type", "c[\"rope_parameters\"][\"rope_type\"]=\"dynamic\"; "
                                    "c[\"rope_parameters\"][\"factor\"]=2.0", "rope_type");
    /* the same in the 4.x dialect (rope_scaling's older "type" key) */
    expect_refused("fam-rope-type4", "c.pop(\"rope_parameters\"); c[\"rope_theta\"]=1e6; "
                                     "c[\"rope_scaling\"]={\"type\": \"dynamic\", \"factor\": 2.0}", "dynamic");
}

static void test_refuses_unknown_key(void **state)
{
    (void)state;
    expect_refused("fam-key", "c[\"attn_logit_softcapping\"]=50.0", "attn_logit_softcapping");
    /* a key no family knows, and an unknown field of the rope parameters */
    expect_refused("fam-key-new", "c[\"frobnicate_scale\"]=2.0", "frobnicate_scale");
    expect_refused("fam-rope-field", "c[\"rope_parameters\"][\"frobnicate\"]=1.0", "frobnicate");
}

/* generation_config.json and tokenizer_config.json follow config.json's rule:
 * a key not read and not known harmless is refused, naming the file. */
static void test_refuses_side_file_keys(void **state)
{
    (void)state;
    expect_refused_in("fam-gen-key", "generation_config.json", "c[\"frobnicate_temp\"]=0.5",
                      "generation_config.json: frobnicate_temp = 0.5");
    expect_refused_in("fam-tc-key", "tokenizer_config.json", "c[\"frobnicate_case\"]=True",
                      "tokenizer_config.json: frobnicate_case = true");
    /* known keys whose value changes tokenization in a way apr does not implement */
    expect_refused_in("fam-tc-aps", "tokenizer_config.json", "c[\"add_prefix_space\"]=True", "add_prefix_space");
    expect_refused_in("fam-tc-split", "tokenizer_config.json", "c[\"split_special_tokens\"]=True",
                      "split_special_tokens");
    expect_refused_in("fam-tc-sep", "tokenizer_config.json", "c[\"add_sep_token\"]=True", "add_sep_token");
    expect_refused_in("fam-tc-extra", "tokenizer_config.json", "c[\"additional_special_tokens\"]=[\"<frob>\"]",
                      "<frob>");
}

/* ...and the harmless ones (what transformers writes) still convert. */
static void test_accepts_side_file_keys(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *model = edited_tinycoder_file(
        "fam-tc-ok", "tokenizer_config.json",
        "c.update(add_prefix_space=None, backend=\"tokenizers\", padding_side=\"left\", errors=\"replace\", "
        "split_special_tokens=False, additional_special_tokens=[\"<|endoftext|>\"], sp_model_kwargs={})");
    char out[1100];
    snprintf(out, sizeof out, "%s/../out.gguf", model);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s' '%s' >/dev/null 2>&1", bin, model, out), 0);
    const char *g = edited_tinycoder_file("fam-gen-ok", "generation_config.json",
                                          "c.update(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64)");
    snprintf(out, sizeof out, "%s/../out.gguf", g);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s' '%s' >/dev/null 2>&1", bin, g, out), 0);
}

static void test_refuses_sliding_layers(void **state)
{
    (void)state;
    expect_refused("fam-layers", "c[\"layer_types\"][1]=\"sliding_attention\"", "layer_types");
}

static void test_refuses_disagreeing_theta(void **state)
{
    (void)state;
    expect_refused("fam-theta", "c[\"rope_theta\"]=10000.0", "rope_theta");
}

static void test_refuses_activation(void **state)
{
    (void)state;
    expect_refused("fam-act", "c[\"hidden_act\"]=\"gelu\"", "hidden_act");
}

static void test_refuses_partial_rotary(void **state)
{
    (void)state;
    expect_refused("fam-partial", "c[\"rope_parameters\"][\"partial_rotary_factor\"]=0.5", "partial_rotary_factor");
}

/* tinycoder's config rewritten as a valid Gemma 2 config (head_dim 64),
 * followed by `;` and the edit under test. Its weights are not Gemma's, so
 * the unedited config gets past every key check and stops at the tensors. */
#define GEMMA2_CFG                                                                                            \
    "[c.pop(k) for k in (\"use_sliding_window\", \"max_window_layers\", \"hidden_act\")]; "              \
    "c.update(architectures=[\"Gemma2ForCausalLM\"], model_type=\"gemma2\", "                             \
    "hidden_activation=\"gelu_pytorch_tanh\", head_dim=64, query_pre_attn_scalar=64, "                       \
    "attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=512, "                         \
    "rope_parameters={\"rope_type\": \"default\", \"rope_theta\": 10000.0}, "                          \
    "layer_types=[\"sliding_attention\", \"full_attention\"] * 2)"

static void test_gemma2_config_refusals(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    /* the base config passes the key checks: the error is the missing Gemma tensor */
    const char *model = edited_tinycoder("fam-g2-base", GEMMA2_CFG);
    char log[1100];
    snprintf(log, sizeof log, "%s/../log.txt", model);
    int rc = tu_system(log, "'%s' convert '%s' '%s/../out.gguf' 2>&1", bin, model, model);
    size_t len;
    char *msg = tu_read_file(log, &len);
    print_message("[fam-g2-base] exit %d: %s", rc, msg ? msg : "");
    assert_int_not_equal(rc, 0);
    assert_non_null(msg);
    if (!strstr(msg, "layernorm") && !strstr(msg, "_norm"))
        fail_msg("the base Gemma 2 config should fail on a missing norm tensor");
    free(msg);
    expect_refused("fam-g2-qpas", GEMMA2_CFG "; c[\"query_pre_attn_scalar\"]=256", "query_pre_attn_scalar");
    expect_refused("fam-g2-nocap", GEMMA2_CFG "; c[\"final_logit_softcapping\"]=None", "final_logit_softcapping");
    expect_refused("fam-g2-nocap2", GEMMA2_CFG "; c.pop(\"attn_logit_softcapping\")", "attn_logit_softcapping");
    expect_refused("fam-g2-layers", GEMMA2_CFG "; c[\"layer_types\"]=[\"full_attention\"] * 4", "layer_types");
    expect_refused("fam-g2-untied", GEMMA2_CFG "; c[\"tie_word_embeddings\"]=False", "tie_word_embeddings");
    expect_refused("fam-g2-act", GEMMA2_CFG "; c[\"hidden_activation\"]=\"gelu\"", "hidden_activation");
    expect_refused("fam-g2-rope", GEMMA2_CFG "; c[\"rope_parameters\"]={\"rope_type\": \"linear\", "
                                 "\"factor\": 2.0, \"rope_theta\": 10000.0}", "rope_type");
    expect_refused("fam-g2-bias", GEMMA2_CFG "; c[\"attention_bias\"]=True", "attention_bias");
    /* Gemma2Config's default head_dim is 256, not hidden / heads */
    expect_refused("fam-g2-hd", GEMMA2_CFG "; c.pop(\"head_dim\")", "head_dim");
}

/* The same as a Gemma 3 config (transformers 5: per-layer-type rope), over
 * tinycoder's 4 layers: sliding x4 would be llama.cpp's pattern of 6. */
#define GEMMA3_CFG                                                                                            \
    "[c.pop(k) for k in (\"use_sliding_window\", \"max_window_layers\", \"hidden_act\")]; "              \
    "c.update(architectures=[\"Gemma3ForCausalLM\"], model_type=\"gemma3_text\", "                        \
    "hidden_activation=\"gelu_pytorch_tanh\", head_dim=64, query_pre_attn_scalar=64, "                       \
    "attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=512, "                         \
    "rope_parameters={\"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}, "   \
    "\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0}}, "  \
    "layer_types=[\"sliding_attention\"] * 4, _sliding_window_pattern=6)"

static void test_gemma3_config_refusals(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *model = edited_tinycoder("fam-g3-base", GEMMA3_CFG);
    char log[1100];
    snprintf(log, sizeof log, "%s/../log.txt", model);
    int rc = tu_system(log, "'%s' convert '%s' '%s/../out.gguf' 2>&1", bin, model, model);
    size_t len;
    char *msg = tu_read_file(log, &len);
    print_message("[fam-g3-base] exit %d: %s", rc, msg ? msg : "");
    assert_int_not_equal(rc, 0);
    assert_non_null(msg);
    if (!strstr(msg, "layernorm") && !strstr(msg, "_norm"))
        fail_msg("the base Gemma 3 config should fail on a missing norm tensor");
    free(msg);
    expect_refused("fam-g3-cap", GEMMA3_CFG "; c[\"attn_logit_softcapping\"]=50.0", "attn_logit_softcapping");
    expect_refused("fam-g3-pattern", GEMMA3_CFG "; c[\"_sliding_window_pattern\"]=4", "sliding_window_pattern");
    expect_refused("fam-g3-layers", GEMMA3_CFG "; c[\"layer_types\"][1]=\"full_attention\"", "layer_types");
    expect_refused("fam-g3-local-scaled", GEMMA3_CFG "; c[\"rope_parameters\"][\"sliding_attention\"]="
                                         "{\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 1e4}",
                   "rope_type");
    expect_refused("fam-g3-yarn", GEMMA3_CFG "; c[\"rope_parameters\"][\"full_attention\"]={\"rope_type\": "
                                 "\"yarn\", \"factor\": 2.0, \"rope_theta\": 1e6, "
                                 "\"original_max_position_embeddings\": 512}", "rope_type");
    expect_refused("fam-g3-mixed", GEMMA3_CFG "; c[\"rope_theta\"]=1e6", "rope_theta");
    expect_refused("fam-g3-qpas", GEMMA3_CFG "; c[\"query_pre_attn_scalar\"]=256", "query_pre_attn_scalar");
}

/* tinycoder's config as a Phi-3 one (its tensors are not fused: the base
 * config stops at the missing gate_up_proj). */
#define PHI3_CFG                                                                                              \
    "[c.pop(k) for k in (\"use_sliding_window\", \"max_window_layers\")]; "                              \
    "c.update(architectures=[\"Phi3ForCausalLM\"], model_type=\"phi3\", sliding_window=None, "            \
    "original_max_position_embeddings=2048, resid_pdrop=0.0, embd_pdrop=0.0, "                               \
    "rope_parameters={\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 1.0})"

static void test_phi3_config_refusals(void **state)
{
    (void)state;
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *model = edited_tinycoder("fam-phi3-base", PHI3_CFG);
    char log[1100];
    snprintf(log, sizeof log, "%s/../log.txt", model);
    int rc = tu_system(log, "'%s' convert '%s' '%s/../out.gguf' 2>&1", bin, model, model);
    size_t len;
    char *msg = tu_read_file(log, &len);
    print_message("[fam-phi3-base] exit %d: %s", rc, msg ? msg : "");
    assert_int_not_equal(rc, 0);
    assert_non_null(msg);
    if (!strstr(msg, "gate_up_proj"))
        fail_msg("the base Phi-3 config should fail on the missing fused gate_up_proj");
    free(msg);
    expect_refused("fam-phi3-longrope", PHI3_CFG "; c[\"rope_parameters\"]={\"rope_type\": \"longrope\", "
                                       "\"rope_theta\": 10000.0, \"long_factor\": [1.0] * 32, "
                                       "\"short_factor\": [1.0] * 32}", "longrope");
    expect_refused("fam-phi3-su", PHI3_CFG "; c.pop(\"rope_parameters\"); c[\"rope_theta\"]=1e4; "
                                 "c[\"rope_scaling\"]={\"type\": \"su\", \"long_factor\": [1.0] * 32, "
                                 "\"short_factor\": [1.0] * 32}", "longrope");
    expect_refused("fam-phi3-partial", PHI3_CFG "; c[\"rope_parameters\"][\"partial_rotary_factor\"]=0.75",
                   "partial_rotary_factor");
    expect_refused("fam-phi3-hd", PHI3_CFG "; c[\"head_dim\"]=32", "head_dim");
    expect_refused("fam-phi3-window", PHI3_CFG "; c[\"sliding_window\"]=0", "sliding_window");
}

/* The 4.x dialect (top-level rope_theta, rope_scaling) gives the same file. */
static void test_4x_dialect_same_gguf(void **state)
{
    (void)state;
    const char *m4 = edited_tinycoder("fam-4x", "c.pop(\"rope_parameters\"); c.pop(\"layer_types\"); "
                                                "c[\"rope_theta\"]=1000000.0; c[\"rope_scaling\"]=None");
    const char *ref = tu_shared(TC "/tinycoder-bf16.gguf");
    const char *gguf = convert_to(m4, tu_tmpdir("fam-4x-out"), "tc.gguf");
    apr_err err = {0};
    apr_model *a = NULL;
    if (apr_model_open(&a, gguf, NULL, &err))
        fail_msg("open: %s", err.msg);
    apr_model *b = NULL;
    if (apr_model_open(&b, ref, NULL, &err))
        fail_msg("open: %s", err.msg);
    tu_assert_kv_equal(apr_model_kv(a, "qwen2.rope.freq_base"), apr_model_kv(b, "qwen2.rope.freq_base"));
    apr_model_free(a);
    apr_model_free(b);
}

/* Linear scaling: llama.cpp's keys in the GGUF, and a different forward pass
 * (every angle divided by the factor) that the HF directory and the GGUF agree on. */
static void test_linear_rope_scaling(void **state)
{
    (void)state;
    const char *m = edited_tinycoder("fam-linear", "c[\"rope_parameters\"]={\"rope_theta\":1000000.0,"
                                                   "\"rope_type\":\"linear\",\"factor\":4.0}");
    const char *gguf = convert_to(m, tu_tmpdir("fam-linear-out"), "tc.gguf");
    apr_err err = {0};
    apr_model *g = NULL;
    if (apr_model_open(&g, gguf, NULL, &err))
        fail_msg("open: %s", err.msg);
    assert_string_equal(apr_kv_get_str(g, "qwen2.rope.scaling.type"), "linear");
    float f = 0.0f;
    assert_true(apr_kv_get_f32(g, "qwen2.rope.scaling.factor", &f));
    assert_true(f == 4.0f);
    assert_true(g->cfg.rope_freq_scale == 0.25f);
    apr_model_free(g);
    const double d = tinycoder_diff(gguf);
    assert_true(d > 1e-3); /* the reference is unscaled: scaling must show */
    assert_true(fabs(tinycoder_diff(m) - d) < 1e-6);
    /* GGUF -> HF keeps the scaling in rope_scaling, which transformers reads */
    const char *back = convert_to(gguf, tu_tmpdir("fam-linear-back"), "hf");
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/config.json", back);
    size_t len;
    char *txt = tu_read_file(cfg, &len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "\"rope_type\": \"linear\""));
    free(txt);
    assert_true(fabs(tinycoder_diff(back) - d) < 1e-6);
}

/* yarn: llama.cpp's keys in the GGUF (type, factor, original context, and
 * the yarn_* ones the config gives), the cfg derive.c builds from them, a
 * forward pass that differs from the unscaled one and on which the HF
 * directory, the GGUF and the GGUF written back as HF agree. The numbers
 * against transformers and llama.cpp are families_peer.py's qwen2-yarn. */
static void test_yarn_rope_scaling(void **state)
{
    (void)state;
    const char *m = edited_tinycoder("fam-yarn", "c[\"rope_parameters\"]={\"rope_theta\":1000000.0,"
                                                 "\"rope_type\":\"yarn\",\"factor\":4.0,\"beta_fast\":16.0,"
                                                 "\"original_max_position_embeddings\":64}");
    const char *gguf = convert_to(m, tu_tmpdir("fam-yarn-out"), "tc.gguf");
    apr_err err = {0};
    apr_model *g = NULL;
    if (apr_model_open(&g, gguf, NULL, &err))
        fail_msg("open: %s", err.msg);
    assert_string_equal(apr_kv_get_str(g, "qwen2.rope.scaling.type"), "yarn");
    float f = 0.0f;
    uint32_t n = 0;
    assert_true(apr_kv_get_f32(g, "qwen2.rope.scaling.factor", &f) && f == 4.0f);
    assert_true(apr_kv_get_f32(g, "qwen2.rope.scaling.yarn_beta_fast", &f) && f == 16.0f);
    assert_null(apr_model_kv(g, "qwen2.rope.scaling.yarn_beta_slow"));
    assert_null(apr_model_kv(g, "qwen2.rope.scaling.yarn_attn_factor"));
    assert_true(apr_kv_get_u32(g, "qwen2.rope.scaling.original_context_length", &n) && n == 64);
    const apr_arch_config *c = &g->cfg;
    assert_true(c->rope_yarn && c->rope_freq_scale == 0.25f && c->yarn_orig_ctx == 64);
    assert_true(c->yarn_beta_fast == 16.0f && c->yarn_beta_slow == 1.0f);
    assert_true(c->rope_attn_factor == (float)(0.1 * log(4.0) + 1.0));
    /* head_dim 64, base 1e6: floor(64 ln(64 / 32 pi) / 2 ln 1e6) = floor(-1.05) -> 0,
     * ceil(64 ln(64 / 2 pi) / 2 ln 1e6) = ceil(5.38) = 6 */
    assert_true(c->head_dim == 64 && c->yarn_corr_lo == 0.0f && c->yarn_corr_hi == 6.0f);
    assert_string_equal(c->unsupported, "");
    apr_model_free(g);
    const double d = tinycoder_diff(gguf);
    assert_true(d > 1e-3); /* the reference is unscaled: scaling must show */
    assert_true(fabs(tinycoder_diff(m) - d) < 1e-6);
    const char *back = convert_to(gguf, tu_tmpdir("fam-yarn-back"), "hf");
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/config.json", back);
    size_t len;
    char *txt = tu_read_file(cfg, &len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "\"rope_type\": \"yarn\""));
    assert_non_null(strstr(txt, "\"original_max_position_embeddings\": 64"));
    free(txt);
    assert_true(fabs(tinycoder_diff(back) - d) < 1e-6);
    /* transformers' untruncated ranges (truncate: false) are refused */
    expect_refused("fam-yarn-untrunc", "c[\"rope_parameters\"]={\"rope_theta\":1000000.0,\"rope_type\":\"yarn\","
                                       "\"factor\":4.0,\"original_max_position_embeddings\":64,\"truncate\":False}",
                   "truncate");
}

/* The other way: a GGUF KV that changes the computation and that the forward
 * pass does not implement is refused by run (and verify), naming it. */
static void test_gguf_unimplemented_kv_refused(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(ref, TC "/tinycoder-bf16.gguf");
    const char *cases[][2] = {{"qwen2.attention.sliding_window", NULL}, {"qwen2.rope.scaling.type", "longrope"}};
    for (int i = 0; i < 2; i++) {
        apr_err err = {0};
        apr_model *m = NULL;
        if (apr_model_open(&m, ref, NULL, &err))
            fail_msg("open: %s", err.msg);
        assert_int_equal(cases[i][1] ? apr_model_set_kv_str(m, cases[i][0], cases[i][1])
                                     : apr_model_set_kv_u32(m, cases[i][0], 64), 0);
        const char *out = tu_path(tu_tmpdir("fam-kv"), "m.gguf");
        char path[1024];
        snprintf(path, sizeof path, "%s", out);
        if (apr_model_write(m, path, APR_FMT_GGUF, NULL, &err))
            fail_msg("write: %s", err.msg);
        apr_model_free(m);
        if (apr_model_open(&m, path, NULL, &err))
            fail_msg("reopen: %s", err.msg);
        apr_fwd *f = NULL;
        apr_fwd_opts o = {.device = APR_DEV_CPU};
        assert_int_equal(apr_fwd_load(&f, m, &o, &err), APR_E_UNSUPPORTED);
        print_message("%s: %s\n", cases[i][0], err.msg);
        assert_non_null(strstr(err.msg, cases[i][0]));
        apr_model_free(m);
        const char *bin = tu_apr_bin();
        assert_int_equal(tu_system(NULL, "'%s' run '%s' --prompt x -n 1 >/dev/null 2>&1", bin, path), 2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tinycoder_logits_hf_gguf_apr),
        cmocka_unit_test(test_tinycoder_gguf_equals_llama_cpp),
        cmocka_unit_test(test_refuses_unknown_rope_type),
        cmocka_unit_test(test_refuses_unknown_key),
        cmocka_unit_test(test_refuses_side_file_keys),
        cmocka_unit_test(test_accepts_side_file_keys),
        cmocka_unit_test(test_refuses_sliding_layers),
        cmocka_unit_test(test_refuses_disagreeing_theta),
        cmocka_unit_test(test_refuses_activation),
        cmocka_unit_test(test_refuses_partial_rotary),
        cmocka_unit_test(test_gemma2_config_refusals),
        cmocka_unit_test(test_gemma3_config_refusals),
        cmocka_unit_test(test_phi3_config_refusals),
        cmocka_unit_test(test_4x_dialect_same_gguf),
        cmocka_unit_test(test_linear_rope_scaling),
        cmocka_unit_test(test_yarn_rope_scaling),
        cmocka_unit_test(test_gguf_unimplemented_kv_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
