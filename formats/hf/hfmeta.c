/* hfmeta.c - HF config.json / tokenizer.json / tokenizer_config.json <-> GGUF-namespace KVs.
 *
 * Reading follows llama.cpp's convert_hf_to_gguf.py (and gguf-py's vocab.py):
 *   config.json  -> general.architecture, general.name, {arch}.block_count,
 *                   context_length, embedding_length, feed_forward_length,
 *                   attention.head_count(_kv), rope.freq_base,
 *                   attention.layer_norm_rms_epsilon, attention.key/value_length
 *                   (only when head_dim is given), llama: vocab_size and
 *                   rope.dimension_count; strict u32 / f32 types.
 *   tokenizer.json, tokenizer_config.json, tokenizer.model, added_tokens.json,
 *   chat_template.jinja (+ additional_chat_templates/), chat_template.json: libtok (apr_tok_hf_to_kvs / apr_tok_hf_from_model).
 *
 * Writing produces standard HF files. A GGUF detail that these files cannot
 * carry (a separator id of 0xFFFFFFFF, token types that differ from what the
 * rules above would give, a u64 instead of a u32, a key llama.cpp's converter
 * would not write, ...) is kept exactly in an extra top-level "apr_gguf"
 * object ({"keys": [all KV keys in order], "kvs": [typed KVs]}), which HF
 * ignores and our reader applies last. The writer decides what to record by
 * running the reader on the documents it built and diffing against the
 * model's KVs, so records appear only when needed.
 */
#define _GNU_SOURCE
#include "apr_internal.h"
#include "hfmeta.h"
#include "apr_json.h"
#include "kvjson.h"
#include "tok.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ================================================================ JSON dump */

char *apr_json_dump(const json_t *j, bool pretty)
{
    return json_dumps(j, APR_JSON_DUMP_FLAGS | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
}

/* ================================================================ typed KV records */

/* The record is this file's: {"key", "type", "value"} ("elem" too for an
 * array); the value is the HF dialect of the one codec (core/kvjson.c). */

json_t *apr_kv_to_json(const apr_kv *kv, apr_err *err)
{
    json_t *v = apr_kvjson_encode(kv, APR_KVJSON_HF, UINT64_MAX, err);
    if (!v)
        return NULL;
    apr_jb jb = apr_jb_start();
    json_t *o = json_object();
    apr_jb_set(&jb, o, "key", json_string(kv->key));
    apr_jb_set(&jb, o, "type", json_string(apr_kv_type_name(kv->type)));
    if (kv->type == APR_KV_ARRAY)
        apr_jb_set(&jb, o, "elem", json_string(apr_kv_type_name(kv->arr_type)));
    apr_jb_set(&jb, o, "value", v);
    char what[96];
    snprintf(what, sizeof what, "KV %.80s", kv->key);
    if (apr_jb_done(&jb, what, err)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int apr_kv_from_json(apr_kv *out, const json_t *j, apr_err *err)
{
    memset(out, 0, sizeof *out);
    const json_t *jk = json_object_get(j, "key"), *jt = json_object_get(j, "type"),
                 *jv = json_object_get(j, "value");
    if (!json_is_object(j) || !json_is_string(jk) || !json_is_string(jt) || !jv)
        return apr_err_set(err, APR_E_FORMAT, "typed KV record: expected {key, type, value}");
    const char *key = json_string_value(jk);
    int t = apr_kvjson_type(json_string_value(jt));
    if (t < 0)
        return apr_err_set(err, APR_E_FORMAT, "KV %s: unknown type '%s'", key, json_string_value(jt));
    out->type = (apr_kv_type)t;
    if (t == APR_KV_ARRAY) {
        const json_t *je = json_object_get(j, "elem");
        int et = json_is_string(je) ? apr_kvjson_type(json_string_value(je)) : -1;
        if (et < 0 || et == APR_KV_ARRAY || !json_is_array(jv))
            return apr_err_set(err, APR_E_FORMAT, "KV %s: bad array record", key);
        out->arr_type = (apr_kv_type)et;
    }
    if (!(out->key = strdup(key)))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    char what[300];
    snprintf(what, sizeof what, "KV %.200s (%s%s)", key, t == APR_KV_ARRAY ? "array of " : "",
             apr_kv_type_name(t == APR_KV_ARRAY ? out->arr_type : out->type));
    int rc = apr_kvjson_decode(jv, out, APR_KVJSON_HF, what, err);
    if (rc)
        apr_kv_free(out);
    return rc;
}

bool apr_kv_equal(const apr_kv *a, const apr_kv *b)
{
    if (a->type != b->type || strcmp(a->key, b->key) != 0)
        return false;
    if (a->type == APR_KV_STRING)
        return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
    if (a->type == APR_KV_ARRAY) {
        if (a->arr_type != b->arr_type || a->count != b->count)
            return false;
        if (a->arr_type == APR_KV_STRING) {
            const apr_str *x = a->arr, *y = b->arr;
            for (uint64_t i = 0; i < a->count; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0)
                    return false;
            return true;
        }
        size_t es = apr_kv_type_size(a->arr_type);
        return a->count == 0 || memcmp(a->arr, b->arr, a->count * es) == 0;
    }
    size_t es = apr_kv_type_size(a->type);
    return memcmp(&a->v, &b->v, es) == 0;
}

bool apr_hf_kv_is_file_level(const char *key)
{
    return strncmp(key, "apr.provenance", 14) == 0 || strncmp(key, "safetensors.metadata.", 21) == 0;
}

const char *apr_hf_torch_dtype(apr_dtype dt)
{
    switch (dt) {
    case APR_DT_F32: return "float32";
    case APR_DT_F16: return "float16";
    case APR_DT_BF16: return "bfloat16";
    case APR_DT_F64: return "float64";
    default: return NULL;
    }
}

/* ================================================================ loading the files */

void apr_hf_docs_free(apr_hf_docs *d)
{
    json_decref(d->config);
    json_decref(d->gen_config);
    json_decref(d->tokenizer);
    json_decref(d->tokenizer_config);
    json_decref(d->chat_template_alt);
    json_decref(d->added_tokens);
    apr_spm_destroy(d->spm);
    memset(d, 0, sizeof *d);
}

/* Load dir/name as a JSON object into *out; absent file: *out stays NULL. */
static int load_json_file(const char *dir, const char *name, json_t **out, apr_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    }
    json_error_t je;
    json_t *j = apr_json_loadf(f, JSON_ALLOW_NUL, &je);
    fclose(f);
    if (!j && apr_json_parse_oom())
        return apr_err_set(err, APR_E_NOMEM, "%s: out of memory", path);
    if (!j)
        return apr_err_set(err, APR_E_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return apr_err_set(err, APR_E_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return 0;
}

/* tokenizer.model, parsed, into d->spm (left NULL when there is none). */
static int load_spm(apr_hf_docs *d, const char *dir, apr_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    apr_spm *s = calloc(1, sizeof *s);
    if (!s)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    bool present = false;
    int rc = apr_spm_load(s, path, &present, err);
    if (rc || !present) {
        free(s);
        return rc;
    }
    d->spm = s;
    return 0;
}

/* Python's universal newlines, as open(path, encoding="utf-8").read() in
 * gguf-py and transformers: "\r\n" and a lone "\r" become "\n". */
static size_t universal_newlines(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            s[o++] = '\n';
            if (i + 1 < n && s[i + 1] == '\n')
                i++;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = 0;
    return o;
}

/* The whole of a text file, NUL-terminated, in *out (malloc'd), read as
 * Python reads a text file (universal newlines); absent: *out stays NULL.
 * Templates are text: one over 64 MiB is refused. */
static int read_text_file(const char *path, char **out, apr_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return apr_err_set(err, APR_E_FORMAT, "%s: unreadable or larger than 64 MiB", path);
    }
    buf[n] = 0;
    if (strlen(buf) != n || !apr_utf8_valid(buf, n)) {
        free(buf);
        return apr_err_set(err, APR_E_FORMAT, "%s: not UTF-8 text", path);
    }
    universal_newlines(buf, n);
    *out = buf;
    return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* additional_chat_templates/NAME.jinja beside chat_template.jinja: the list
 * form [{"name": "default", "template": base}, {"name": NAME, ...}] as gguf-py
 * builds it (names sorted here: its glob order is the directory's). *list
 * stays NULL when the folder has no .jinja file. */
static int load_additional_templates(const char *dir, const char *base, json_t **list, apr_err *err)
{
    *list = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/additional_chat_templates", dir);
    DIR *dh = opendir(path);
    if (!dh)
        return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(dh))) {
        size_t l = strlen(de->d_name);
        if (l <= 6 || strcmp(de->d_name + l - 6, ".jinja") || de->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? cap * 2 : 8) * sizeof *names);
            if (!nn) {
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name)))
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        else
            n++;
    }
    closedir(dh);
    if (!rc && n) {
        qsort(names, n, sizeof *names, cmp_cstr);
        json_t *l = json_pack("[{s:s,s:s}]", "name", "default", "template", base);
        for (size_t i = 0; !rc && i < n; i++) {
            char file[4608], *text = NULL;
            snprintf(file, sizeof file, "%s/%s", path, names[i]);
            names[i][strlen(names[i]) - 6] = 0; /* the stem is the template's name */
            if (!l)
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            else if (!(rc = read_text_file(file, &text, err)) && text &&
                     json_array_append_new(l, json_pack("{s:s,s:s}", "name", names[i], "template", text)))
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            free(text);
        }
        if (rc)
            json_decref(l);
        else
            *list = l;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* What SpecialVocab calls chat_template_alt: chat_template.jinja (with its
 * additional templates, the list form), else chat_template.json's
 * "chat_template" value, whatever its type (libtok decides what to make of it). */
static int load_chat_template(apr_hf_docs *d, const char *dir, apr_err *err)
{
    char path[4096], *text = NULL;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    int rc = read_text_file(path, &text, err);
    if (rc)
        return rc;
    if (text) {
        json_t *list = NULL;
        if (!(rc = load_additional_templates(dir, text, &list, err))) {
            d->chat_template_alt = list ? list : json_string(text);
            if (!d->chat_template_alt)
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        }
        free(text);
        return rc;
    }
    json_t *ctj = NULL;
    if ((rc = load_json_file(dir, "chat_template.json", &ctj, err)))
        return rc;
    if (ctj) {
        d->chat_template_alt = json_incref(json_object_get(ctj, "chat_template"));
        json_decref(ctj);
    }
    return 0;
}

int apr_hf_docs_load(apr_hf_docs *d, const char *dir, apr_err *err)
{
    memset(d, 0, sizeof *d);
    int rc;
    if ((rc = load_json_file(dir, "config.json", &d->config, err)) ||
        (rc = load_json_file(dir, "generation_config.json", &d->gen_config, err)) ||
        (rc = load_json_file(dir, "tokenizer.json", &d->tokenizer, err)) ||
        (rc = load_json_file(dir, "tokenizer_config.json", &d->tokenizer_config, err)) ||
        (rc = load_json_file(dir, "added_tokens.json", &d->added_tokens, err)) || (rc = load_spm(d, dir, err))) {
        apr_hf_docs_free(d);
        return rc;
    }
    if ((rc = load_chat_template(d, dir, err))) {
        apr_hf_docs_free(d);
        return rc;
    }
    return 0;
}

/* ================================================================ small KV builders */

static int set_u32(apr_model *m, const char *key, uint32_t v, apr_err *err)
{
    return apr_model_set_kv_u32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int set_f32(apr_model *m, const char *key, float v, apr_err *err)
{
    return apr_model_set_kv_f32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int set_str(apr_model *m, const char *key, const char *v, apr_err *err)
{
    return apr_model_set_kv_str(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

/* config field as u32: 1 present, 0 absent (or null), <0 bad. */
static int cfg_u32(const json_t *cfg, const char *field, uint32_t *out, apr_err *err)
{
    const json_t *j = json_object_get(cfg, field);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > (json_int_t)UINT32_MAX)
        return apr_err_set(err, APR_E_FORMAT, "config.json: %s must be an integer in [0, 2^32)", field);
    *out = (uint32_t)json_integer_value(j);
    return 1;
}

static int cfg_f32(const json_t *cfg, const char *field, float *out, apr_err *err)
{
    const json_t *j = json_object_get(cfg, field);
    if (!j || json_is_null(j))
        return 0;
    if (!apr_json_get_f32(j, out) || !isfinite(*out))
        return apr_err_set(err, APR_E_FORMAT, "config.json: %s must be a finite number", field);
    return 1;
}

/* ================================================================ config.json -> KVs */

typedef struct arch_name {
    const char *hf;     /* architectures[0] */
    const char *model_type;
    const char *gguf;   /* general.architecture */
} arch_name;

static const arch_name arch_names[] = {
    {"LlamaForCausalLM", "llama", "llama"},
    {"Qwen2ForCausalLM", "qwen2", "qwen2"},
    /* llama.cpp converts Mistral as llama; its sliding window is kept as
     * llama.attention.sliding_window (llama.cpp's converter drops it) */
    {"MistralForCausalLM", "mistral", "llama"},
    /* per-head q_norm / k_norm, head_dim independent of hidden / heads */
    {"Qwen3ForCausalLM", "qwen3", "qwen3"},
    /* GeGLU, norms 1 + w (stored so in GGUF), post norms, soft-capping,
     * alternating sliding-window layers (see gemma_key) */
    {"Gemma2ForCausalLM", "gemma2", "gemma2"},
    /* Gemma 2 plus q_norm / k_norm, five sliding layers in six with their own
     * rope base (see gemma_key, map_rope_gemma3) */
    {"Gemma3ForCausalLM", "gemma3_text", "gemma3"},
    /* fused qkv_proj and gate_up_proj kept fused; default rope only (longrope
     * refused); its window as phi3.attention.sliding_window (see phi3_key) */
    {"Phi3ForCausalLM", "phi3", "phi3"},
};

static bool is_gemma2(const arch_name *a)
{
    return !strcmp(a->model_type, "gemma2");
}

static bool is_gemma3(const arch_name *a)
{
    return !strcmp(a->model_type, "gemma3_text");
}

static bool is_gemma(const arch_name *a)
{
    return is_gemma2(a) || is_gemma3(a);
}

static bool is_phi3(const arch_name *a)
{
    return !strcmp(a->model_type, "phi3");
}

/* ---------------------------------------------------------------- config.json key policy
 *
 * Every key of config.json is read below, listed here as not changing the
 * logits, or refused: a config that says something the forward pass does not
 * implement must not be converted as if it had not said it (docs/families.md
 * has the table per family). */

/* Keys that do not change the computation: training-time settings, generation
 * defaults that transformers 4.x kept in config.json, bookkeeping. */
static const char *const cfg_harmless[] = {
    "attention_dropout", "initializer_range", "use_cache", "transformers_version", "torch_dtype",
    "dtype", "output_attentions", "output_hidden_states", "return_dict", "torchscript",
    "use_bfloat16", "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "tie_encoder_decoder", "id2label", "label2id", "finetuning_task", "problem_type",
    "task_specific_params", "tokenizer_class", "prefix", "decoder_start_token_id",
    "_attn_implementation", "_attn_implementation_autoset", "_commit_hash",
    /* pretraining_tp > 1 splits the projections into slices summed back: the
     * same function, only the float summation order differs */
    "pretraining_tp",
    /* generation defaults (transformers 4.x wrote them into config.json) */
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
};

/* Keys map_config and the tokenizer mapping read (value checks are where they
 * are read). */
static const char *const cfg_used[] = {
    "architectures", "model_type", "_name_or_path", "num_hidden_layers", "hidden_size",
    "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
    "unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id", "hidden_act", "layer_types",
    "apr_gguf",
};

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i]))
            return true;
    return false;
}

/* A short rendering of a JSON value for messages. */
static void json_brief(const json_t *v, char *buf, size_t cap)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(buf, cap, "%.60s%s", s ? s : "?", s && strlen(s) > 60 ? "..." : "");
    free(s);
}

static int refuse_in(const char *file, const char *key, const json_t *v, const char *why, apr_err *err)
{
    char b[80];
    json_brief(v, b, sizeof b);
    return apr_err_set(err, APR_E_UNSUPPORTED, "%s: %s = %s: %s", file, key, b, why);
}

static int refuse_key(const char *key, const json_t *v, const char *why, apr_err *err)
{
    return refuse_in("config.json", key, v, why, err);
}

/* Per-family keys whose value must be the one the forward pass implements. */
static int check_family_key(const arch_name *a, const char *k, const json_t *v, apr_err *err)
{
    const bool llama = !strcmp(a->model_type, "llama"),
               qwen2 = !strcmp(a->model_type, "qwen2") || !strcmp(a->model_type, "qwen3");
    if (!strcmp(k, "sliding_window") && !strcmp(a->model_type, "mistral"))
        return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) > 0 &&
                                   json_integer_value(v) <= (json_int_t)UINT32_MAX)
                   ? 0
                   : refuse_key(k, v, "must be null or a positive integer", err);
    if (!strcmp(k, "attention_bias") && (llama || !strcmp(a->model_type, "qwen3")))
        return 0; /* the bias tensors themselves decide (graph checks them) */
    if (!strcmp(k, "mlp_bias") && llama)
        return json_is_false(v) ? 0 : refuse_key(k, v, "feed-forward biases are not implemented", err);
    if (!strcmp(k, "use_sliding_window") && qwen2)
        return json_is_false(v) ? 0 : refuse_key(k, v, "sliding-window attention is not implemented for qwen2", err);
    /* only read by transformers when use_sliding_window is true (refused above) */
    if ((!strcmp(k, "sliding_window") || !strcmp(k, "max_window_layers")) && qwen2)
        return 0;
    return 1;
}

static bool is_positive_number(const json_t *v)
{
    return json_is_number(v) && json_number_value(v) > 0.0 && isfinite(json_number_value(v));
}

/* Gemma 2's and Gemma 3's keys, as llama.cpp's Gemma2Model / Gemma3Model
 * converters and forward passes read them: 0 accepted, 1 not a Gemma key
 * (the common lists decide), <0 refused. */
static int gemma_key(const arch_name *a, const json_t *cfg, const char *k, const json_t *v, apr_err *err)
{
    const bool g3 = is_gemma3(a);
    if (!strcmp(k, "hidden_activation"))
        return json_is_string(v) && !strcmp(json_string_value(v), "gelu_pytorch_tanh")
                   ? 0
                   : refuse_key(k, v, "only gelu_pytorch_tanh is implemented for Gemma", err);
    if (!strcmp(k, "hidden_act"))
        return 0; /* Gemma's MLP reads hidden_activation only */
    if (!strcmp(k, "attn_logit_softcapping") && g3)
        return json_is_null(v) ? 0 : refuse_key(k, v, "must be null for gemma3 (llama.cpp's converter asserts it)", err);
    if (!strcmp(k, "final_logit_softcapping") && g3)
        return json_is_null(v) || is_positive_number(v) ? 0 : refuse_key(k, v, "must be null or a number > 0", err);
    if (!strcmp(k, "attn_logit_softcapping") || !strcmp(k, "final_logit_softcapping"))
        return is_positive_number(v) ? 0
                                     : refuse_key(k, v, "must be a number > 0 (llama.cpp's gemma2 always caps; it "
                                                        "has no uncapped form)", err);
    if (!strcmp(k, "sliding_window"))
        return json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= (json_int_t)UINT32_MAX
                   ? 0
                   : refuse_key(k, v, "must be a positive integer", err);
    if (!strcmp(k, "sliding_window_size")) /* older configs repeat the window */
        return json_equal(v, json_object_get(cfg, "sliding_window"))
                   ? 0
                   : refuse_key(k, v, "differs from sliding_window", err);
    if ((!strcmp(k, "sliding_window_pattern") || !strcmp(k, "_sliding_window_pattern")) && g3)
        return json_is_integer(v) && json_integer_value(v) == 6
                   ? 0
                   : refuse_key(k, v, "must be 6 (llama.cpp's gemma3 pattern; its converter does not record one)",
                                err);
    if (!strcmp(k, "rope_local_base_freq") && g3)
        return 0; /* the sliding layers' rope base, read with the rope */
    if (!strcmp(k, "query_pre_attn_scalar")) {
        /* llama.cpp scales queries by 1/sqrt(head_dim), for Gemma 2 27B (46
         * layers) and Gemma 3 27B (62) by 1/sqrt(hidden / heads): other
         * values have no GGUF form */
        const json_int_t hd = json_integer_value(json_object_get(cfg, "head_dim")),
                         hidden = json_integer_value(json_object_get(cfg, "hidden_size")),
                         heads = json_integer_value(json_object_get(cfg, "num_attention_heads")),
                         layers = json_integer_value(json_object_get(cfg, "num_hidden_layers"));
        const bool big = layers == (g3 ? 62 : 46);
        const json_int_t want = big && heads > 0 ? hidden / heads : hd;
        if (json_is_number(v) && json_number_value(v) == (double)want && want > 0)
            return 0;
        return refuse_key(k, v, big ? "must equal hidden_size / num_attention_heads (llama.cpp's scale for this "
                                      "layer count)"
                                    : "must equal head_dim (llama.cpp's Gemma scales queries by 1/sqrt(head_dim))",
                          err);
    }
    if (!strcmp(k, "attention_bias"))
        return json_is_false(v) ? 0 : refuse_key(k, v, "attention biases are not implemented for Gemma", err);
    if (!strcmp(k, "use_bidirectional_attention"))
        return json_is_null(v) || json_is_false(v)
                   ? 0
                   : refuse_key(k, v, "bidirectional attention is not implemented", err);
    if (!strcmp(k, "tie_word_embeddings") && !g3) /* gemma3: the lm_head tensor decides */
        return json_is_true(v) ? 0 : refuse_key(k, v, "gemma2 ties the output to the embedding (llama.cpp's "
                                                      "converter drops lm_head)", err);
    if (!strcmp(k, "cache_implementation"))
        return 0; /* how transformers allocates its KV cache */
    return 1;
}

/* Phi-3's keys beside the common ones, as Phi3MiniModel converts them:
 * 0 accepted, 1 not a Phi-3 key, <0 refused. */
static int phi3_key(const json_t *cfg, const char *k, const json_t *v, apr_err *err)
{
    if (!strcmp(k, "resid_pdrop") || !strcmp(k, "embd_pdrop"))
        return 0; /* dropout: training only */
    if (!strcmp(k, "original_max_position_embeddings"))
        return json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= (json_int_t)UINT32_MAX
                   ? 0
                   : refuse_key(k, v, "must be a positive integer", err);
    if (!strcmp(k, "sliding_window"))
        return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) > 0 &&
                                   json_integer_value(v) <= (json_int_t)UINT32_MAX)
                   ? 0
                   : refuse_key(k, v, "must be null or a positive integer", err);
    if (!strcmp(k, "partial_rotary_factor"))
        return json_is_number(v) && json_number_value(v) == 1.0
                   ? 0
                   : refuse_key(k, v, "partial rope is not implemented for phi3", err);
    if (!strcmp(k, "attention_bias"))
        return json_is_false(v) ? 0 : refuse_key(k, v, "attention biases are not implemented for phi3", err);
    (void)cfg;
    return 1;
}

static int check_config_keys(const json_t *cfg, const arch_name *a, apr_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)cfg, k, v) {
        int rc = is_gemma(a) ? gemma_key(a, cfg, k, v, err) : is_phi3(a) ? phi3_key(cfg, k, v, err) : 1;
        if (rc == 1 &&
            (in_list(k, cfg_used, sizeof cfg_used / sizeof *cfg_used) ||
             in_list(k, cfg_harmless, sizeof cfg_harmless / sizeof *cfg_harmless)))
            continue;
        if (rc == 1)
            rc = check_family_key(a, k, v, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        return refuse_key(k, v, "unknown key for this architecture (it may change the computation; "
                                "see docs/families.md)", err);
    }
    /* transformers' Qwen3Config defaults head_dim to 128, Gemma's to 256: a
     * config without it must not be read as hidden / heads */
    if ((is_gemma(a) || !strcmp(a->model_type, "qwen3")) && !json_is_integer(json_object_get(cfg, "head_dim")))
        return apr_err_set(err, APR_E_UNSUPPORTED, "config.json: head_dim is missing (transformers' %s default is "
                                                   "not hidden_size / num_attention_heads)", a->model_type);
    const json_t *act = json_object_get(cfg, "hidden_act");
    if (is_gemma(a)) {
        static const char *const required[] = {"sliding_window", "query_pre_attn_scalar", "attn_logit_softcapping",
                                               "final_logit_softcapping"};
        for (size_t i = 0; i < (is_gemma2(a) ? 4u : 2u); i++)
            if (!json_object_get(cfg, required[i]))
                return apr_err_set(err, APR_E_FORMAT, "config.json: %s needs %s", a->gguf, required[i]);
        return 0;
    }
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu")))
        return refuse_key("hidden_act", act, "only silu (SwiGLU) is implemented for this architecture", err);
    return 0;
}

/* layer_types (transformers 5): one attention kind per layer. Gemma 2's
 * must be llama.cpp's fixed pattern (even layers sliding, set_swa_pattern
 * 2); the other families implement full attention only. */
static int check_layer_types(const json_t *cfg, const arch_name *a, uint32_t layers, apr_err *err)
{
    const json_t *lt = json_object_get(cfg, "layer_types");
    if (!lt || json_is_null(lt))
        return 0;
    if (!json_is_array(lt) || json_array_size(lt) != layers)
        return refuse_key("layer_types", lt, "must list one type per layer", err);
    size_t i;
    json_t *e;
    json_array_foreach(lt, i, e) {
        const bool sliding = (is_gemma2(a) && i % 2 == 0) || (is_gemma3(a) && i % 6 < 5);
        const char *want = sliding ? "sliding_attention" : "full_attention";
        if (!json_is_string(e) || strcmp(json_string_value(e), want))
            return refuse_key("layer_types", lt, is_gemma2(a)   ? "gemma2 layers must alternate sliding_attention, "
                                                                  "full_attention (llama.cpp's fixed pattern)"
                                                 : is_gemma3(a) ? "gemma3 layers must be five sliding_attention, "
                                                                  "then one full_attention (llama.cpp's pattern)"
                                                                : "only full_attention layers are implemented for "
                                                                  "this architecture", err);
    }
    return 0;
}

/* ---------------------------------------------------------------- rope
 *
 * Two dialects: transformers 4.x writes rope_theta at the top level and the
 * scaling in rope_scaling {"type" or "rope_type", "factor", ...}; transformers
 * 5 writes rope_parameters {"rope_theta", "rope_type", ...}. We read what
 * llama.cpp's TextModel reads (rope_parameters, else rope_scaling, with the
 * top-level rope_theta mirrored in) and refuse a config in which the two
 * disagree. */

typedef struct rope_cfg {
    const json_t *p;       /* the parameter object, or NULL */
    const char *type;      /* NULL = default */
    float theta;
    bool has_theta;
} rope_cfg;

/* A number field of the rope parameters: 1 present, 0 absent, <0 bad. */
static int rope_num(const rope_cfg *r, const char *field, double *out, apr_err *err)
{
    const json_t *j = json_object_get(r->p, field);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_number(j) || !isfinite(json_number_value(j)))
        return apr_err_set(err, APR_E_FORMAT, "config.json: rope %s must be a finite number", field);
    *out = json_number_value(j);
    return 1;
}

static int rope_read(rope_cfg *r, const json_t *cfg, apr_err *err)
{
    memset(r, 0, sizeof *r);
    const json_t *rp = json_object_get(cfg, "rope_parameters"), *rs = json_object_get(cfg, "rope_scaling");
    if (json_is_null(rp))
        rp = NULL;
    if (json_is_null(rs))
        rs = NULL;
    if ((rp && !json_is_object(rp)) || (rs && !json_is_object(rs)))
        return refuse_key(rp && !json_is_object(rp) ? "rope_parameters" : "rope_scaling", rp ? rp : rs,
                          "must be an object", err);
    if (rp && rs && !json_equal(rp, rs))
        return refuse_key("rope_scaling", rs, "disagrees with rope_parameters", err);
    r->p = rp ? rp : rs;
    if (json_object_get(r->p, "full_attention") || json_object_get(r->p, "sliding_attention"))
        return refuse_key("rope_parameters", r->p, "per-layer-type rope parameters are not implemented "
                                                   "for this architecture", err);
    float top = 0.0f, inner = 0.0f;
    int rt = cfg_f32(cfg, "rope_theta", &top, err), ri = 0;
    if (rt < 0)
        return rt;
    if (r->p) {
        const json_t *j = json_object_get(r->p, "rope_theta");
        if (j && !json_is_null(j)) {
            if (!apr_json_get_f32(j, &inner) || !isfinite(inner))
                return apr_err_set(err, APR_E_FORMAT, "config.json: rope_parameters.rope_theta must be a "
                                                      "finite number");
            ri = 1;
        }
    }
    if (rt == 1 && ri == 1 && memcmp(&top, &inner, sizeof top))
        return refuse_key("rope_theta", json_object_get(cfg, "rope_theta"),
                          "disagrees with rope_parameters.rope_theta", err);
    r->has_theta = rt == 1 || ri == 1;
    r->theta = ri == 1 ? inner : top;

    const json_t *t1 = json_object_get(r->p, "rope_type"), *t2 = json_object_get(r->p, "type");
    if ((t1 && !json_is_string(t1)) || (t2 && !json_is_string(t2)))
        return refuse_key("rope_type", t1 ? t1 : t2, "must be a string", err);
    if (t1 && t2 && strcmp(json_string_value(t1), json_string_value(t2)))
        return refuse_key("rope_scaling.type", t2, "disagrees with rope_type", err);
    r->type = t1 ? json_string_value(t1) : t2 ? json_string_value(t2) : NULL;
    if (r->type && !strcmp(r->type, "default"))
        r->type = NULL;
    return 0;
}

/* Every key of the rope parameters must belong to its type. */
static int rope_check_fields(const rope_cfg *r, const char *const *allowed, size_t n, apr_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)r->p, k, v) {
        if (!strcmp(k, "rope_theta") || !strcmp(k, "rope_type") || !strcmp(k, "type") ||
            in_list(k, allowed, n))
            continue;
        if (!strcmp(k, "partial_rotary_factor") && json_is_number(v) && json_number_value(v) == 1.0)
            continue;
        char what[96];
        snprintf(what, sizeof what, "not implemented for rope type %s", r->type ? r->type : "default");
        return refuse_key(k, v, what, err);
    }
    return 0;
}

/* rope_freqs.weight for rope_type llama3, exactly as LlamaModel.
 * generate_extra_tensors computes it: torch float32 arithmetic throughout
 * (a Python scalar meeting a float32 tensor is rounded to float32 first). */
static int add_llama3_rope_freqs(apr_model *m, const rope_cfg *r, uint32_t dim, apr_err *err)
{
    double factor = 8.0, low = 1.0, high = 4.0, old = 8192.0;
    int rc;
    if ((rc = rope_num(r, "factor", &factor, err)) < 0 || (rc = rope_num(r, "low_freq_factor", &low, err)) < 0 ||
        (rc = rope_num(r, "high_freq_factor", &high, err)) < 0 ||
        (rc = rope_num(r, "original_max_position_embeddings", &old, err)) < 0)
        return rc;
    if (!(factor > 0.0) || !(low > 0.0) || !(high > low) || !(old > 0.0) || dim < 2 || dim % 2)
        return apr_err_set(err, APR_E_FORMAT, "config.json: llama3 rope parameters (factor %g, low %g, high %g, "
                                              "original context %g) are not usable", factor, low, high, old);
    const double base = r->has_theta ? (double)r->theta : 10000.0;
    const double low_wl = old / low, high_wl = old / high;
    const uint32_t n = dim / 2;
    float *ff = malloc((size_t)n * sizeof *ff);
    if (!ff)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        const float freq = 1.0f / powf((float)base, (float)(2 * i) / (float)dim);
        const float wavelen = (float)(2.0 * M_PI) / freq;
        if (wavelen < (float)high_wl) {
            ff[i] = 1.0f;
        } else if (wavelen > (float)low_wl) {
            ff[i] = (float)factor;
        } else {
            const float smooth = ((float)old / wavelen - (float)low) / (float)(high - low);
            ff[i] = 1.0f / ((1.0f - smooth) / (float)factor + smooth);
        }
    }
    const uint64_t dims[1] = {n};
    return apr_model_add_tensor(m, "rope_freqs.weight", APR_DT_F32, 1, dims, ff, (uint64_t)n * sizeof *ff, true,
                                err);
}

/* The scaling part of the rope parameters, as llama.cpp's TextModel writes it. */
static int map_rope_scaling(apr_model *m, const rope_cfg *rp, const char *arch, uint32_t rope_dim, apr_err *err)
{
    const rope_cfg r = *rp;
    char key[128];
    int rc;
#define RK(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    if (!r.type)
        return rope_check_fields(&r, NULL, 0, err);
    double factor = 0.0, v = 0.0;
    if (!strcmp(r.type, "linear")) {
        static const char *const f[] = {"factor"};
        if ((rc = rope_check_fields(&r, f, 1, err)) || (rc = rope_num(&r, "factor", &factor, err)) < 0)
            return rc;
        if (rc == 0 || !(factor > 0.0))
            return refuse_key("rope_scaling", r.p, "linear scaling needs a factor > 0", err);
        if ((rc = set_str(m, RK("rope.scaling.type"), "linear", err)) ||
            (rc = set_f32(m, RK("rope.scaling.factor"), (float)factor, err)))
            return rc;
        return 0;
    }
    if (!strcmp(r.type, "llama3") && !strcmp(arch, "llama")) {
        static const char *const f[] = {"factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings"};
        if ((rc = rope_check_fields(&r, f, 4, err)))
            return rc;
        return add_llama3_rope_freqs(m, &r, rope_dim, err);
    }
    if (!strcmp(r.type, "yarn")) {
        static const char *const f[] = {"factor", "original_max_position_embeddings", "attention_factor",
                                        "beta_fast", "beta_slow", "truncate"};
        if ((rc = rope_check_fields(&r, f, 6, err)) || (rc = rope_num(&r, "factor", &factor, err)) < 0)
            return rc;
        /* llama.cpp's corr dims are always truncated (transformers' default) */
        const json_t *tr = json_object_get(r.p, "truncate");
        if (tr && !json_is_true(tr))
            return refuse_key("truncate", tr, "untruncated yarn correction ranges are not implemented "
                                              "(llama.cpp always truncates)", err);
        if (rc == 0 || !(factor > 0.0))
            return refuse_key("rope_scaling", r.p, "yarn scaling needs a factor > 0", err);
        if ((rc = rope_num(&r, "original_max_position_embeddings", &v, err)) <= 0 || !(v >= 1.0 && v < 4294967296.0))
            return rc < 0 ? rc : refuse_key("rope_scaling", r.p, "yarn needs original_max_position_embeddings", err);
        if ((rc = set_str(m, RK("rope.scaling.type"), "yarn", err)) ||
            (rc = set_f32(m, RK("rope.scaling.factor"), (float)factor, err)) ||
            (rc = set_u32(m, RK("rope.scaling.original_context_length"), (uint32_t)v, err)))
            return rc;
        static const char *const opt[][2] = {{"attention_factor", "rope.scaling.yarn_attn_factor"},
                                             {"beta_fast", "rope.scaling.yarn_beta_fast"},
                                             {"beta_slow", "rope.scaling.yarn_beta_slow"}};
        for (int i = 0; i < 3; i++) {
            if ((rc = rope_num(&r, opt[i][0], &v, err)) < 0)
                return rc;
            if (rc == 1 && (rc = set_f32(m, RK(opt[i][1]), (float)v, err)))
                return rc;
        }
        return 0;
    }
#undef RK
    return refuse_key("rope_type", json_object_get(r.p, "rope_type") ? json_object_get(r.p, "rope_type")
                                                                      : json_object_get(r.p, "type"),
                      "rope scaling type not supported for this architecture (supported: default, linear, "
                      "yarn, and llama3 for llama)", err);
}

/* Gemma 3's two ropes, as llama.cpp's TextModel reads them: the full
 * layers' parameters (default or linear scaling; the base defaults to 1e6,
 * Gemma3Model's) into rope.freq_base and rope.scaling.*, the sliding layers'
 * base (default rope only) into rope.freq_base_swa. transformers 5 writes
 * rope_parameters {"full_attention": {...}, "sliding_attention": {...}};
 * 4.x rope_theta, rope_scaling and rope_local_base_freq. */
static int map_rope_gemma3(apr_model *m, const json_t *cfg, const char *arch, uint32_t rope_dim, apr_err *err)
{
    char key[128];
    int rc;
#define RK(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    const json_t *rp = json_object_get(cfg, "rope_parameters");
    const json_t *full = json_object_get(rp, "full_attention"), *slid = json_object_get(rp, "sliding_attention");
    json_t *tmp = NULL;
    float local = 0.0f;
    int has_local = 0;
    if (full || slid) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)rp, k, v)
            if (strcmp(k, "full_attention") && strcmp(k, "sliding_attention"))
                return refuse_key(k, v, "unknown key beside the per-layer-type rope parameters", err);
        if (!json_is_object(full) || !json_is_object(slid))
            return refuse_key("rope_parameters", rp, "needs full_attention and sliding_attention objects", err);
        static const char *const legacy[] = {"rope_theta", "rope_scaling", "rope_local_base_freq"};
        for (size_t i = 0; i < 3; i++) {
            const json_t *l = json_object_get(cfg, legacy[i]);
            if (l && !json_is_null(l))
                return refuse_key(legacy[i], l, "given beside per-layer-type rope_parameters", err);
        }
        json_object_foreach((json_t *)slid, k, v) {
            if (!strcmp(k, "rope_theta"))
                continue;
            if ((!strcmp(k, "rope_type") || !strcmp(k, "type")) && json_is_string(v) &&
                !strcmp(json_string_value(v), "default"))
                continue;
            return refuse_key(k, v, "the sliding layers' rope must be the default one (llama.cpp does not scale "
                                    "it)", err);
        }
        if ((has_local = cfg_f32(slid, "rope_theta", &local, err)) < 0)
            return has_local;
        tmp = json_pack("{sO}", "rope_parameters", (json_t *)full);
    } else {
        if ((has_local = cfg_f32(cfg, "rope_local_base_freq", &local, err)) < 0)
            return has_local;
        tmp = json_deep_copy(cfg);
    }
    if (!tmp)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    rope_cfg r;
    rc = rope_read(&r, tmp, err);
    if (!rc && r.type && strcmp(r.type, "linear"))
        rc = refuse_key("rope_type", json_object_get(r.p, "rope_type") ? json_object_get(r.p, "rope_type")
                                                                        : json_object_get(r.p, "type"),
                        "only default and linear rope scaling are implemented for gemma3", err);
    if (!rc)
        rc = map_rope_scaling(m, &r, arch, rope_dim, err);
    if (!rc)
        rc = set_f32(m, RK("rope.freq_base"), r.has_theta ? r.theta : 1000000.0f, err);
    if (!rc && has_local == 1)
        rc = local > 0.0f ? set_f32(m, RK("rope.freq_base_swa"), local, err)
                          : apr_err_set(err, APR_E_FORMAT, "config.json: the sliding layers' rope base must be > 0");
    json_decref(tmp);
#undef RK
    return rc;
}

static int map_rope(apr_model *m, const json_t *cfg, const char *arch, uint32_t rope_dim, apr_err *err)
{
    rope_cfg r;
    char key[128];
    int rc;
    if (!strcmp(arch, "gemma3"))
        return map_rope_gemma3(m, cfg, arch, rope_dim, err);
#define RK(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    if ((rc = rope_read(&r, cfg, err)))
        return rc;
    if (!strcmp(arch, "gemma2")) {
        /* llama.cpp's Gemma2Model writes no rope KVs: only the default rope,
         * and the base only when it is not llama.cpp's default 10000 */
        if (r.type)
            return refuse_key("rope_type", json_object_get(r.p, "rope_type") ? json_object_get(r.p, "rope_type")
                                                                              : json_object_get(r.p, "type"),
                              "rope scaling is not supported for gemma2", err);
        if ((rc = rope_check_fields(&r, NULL, 0, err)))
            return rc;
        if (r.has_theta && r.theta != 10000.0f && (rc = set_f32(m, RK("rope.freq_base"), r.theta, err)))
            return rc;
        return 0;
    }
    if (!strcmp(arch, "phi3") && r.type)
        return refuse_key("rope_type", json_object_get(r.p, "rope_type") ? json_object_get(r.p, "rope_type")
                                                                          : json_object_get(r.p, "type"),
                          !strcasecmp(r.type, "longrope") || !strcasecmp(r.type, "su")
                              ? "longrope (su) scaling, llama.cpp's rope_factors_long/short, is not implemented for "
                                "phi3"
                              : "phi3 rope scaling other than longrope is not converted by llama.cpp (only the "
                                "default rope is implemented)", err);
    if ((rc = map_rope_scaling(m, &r, arch, rope_dim, err)))
        return rc;
    if (r.has_theta && (rc = set_f32(m, RK("rope.freq_base"), r.theta, err)))
        return rc;
#undef RK
    return 0;
}

static int map_config(apr_model *m, const json_t *cfg, const char *dir_name, apr_err *err)
{
    const json_t *archs = json_object_get(cfg, "architectures");
    const char *hf = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    const arch_name *a = NULL;
    for (size_t i = 0; i < sizeof arch_names / sizeof *arch_names; i++)
        if ((hf && strcmp(hf, arch_names[i].hf) == 0) || (!hf && mt && strcmp(mt, arch_names[i].model_type) == 0))
            a = &arch_names[i];
    if (!a)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "config.json: unsupported architecture '%s' (supported: LlamaForCausalLM, "
                           "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, "
                           "Gemma3ForCausalLM, Phi3ForCausalLM)", hf ? hf : mt ? mt : "(none given)");
    const char *arch = a->gguf;
    char key[128];
    int rc;
    if ((rc = check_config_keys(cfg, a, err)))
        return rc;
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    if ((rc = set_str(m, "general.architecture", arch, err)))
        return rc;
    /* general.name: the model's own name if saved (_name_or_path), else the
     * directory name, as the converter's metadata heuristics end up doing. */
    const char *name = json_string_value(json_object_get(cfg, "_name_or_path"));
    if (name && *name) {
        const char *slash = strrchr(name, '/');
        if (slash && slash[1])
            name = slash + 1;
    } else {
        name = dir_name;
    }
    if (name && *name && (rc = set_str(m, "general.name", name, err)))
        return rc;

    uint32_t layers = 0, hidden = 0, heads = 0, v = 0;
    float f = 0.0f;
    if ((rc = cfg_u32(cfg, "num_hidden_layers", &layers, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: num_hidden_layers is missing");
    if ((rc = set_u32(m, K("block_count"), layers, err)))
        return rc;
    if ((rc = check_layer_types(cfg, a, layers, err)))
        return rc;
    if (!strcmp(a->model_type, "mistral") && (rc = cfg_u32(cfg, "sliding_window", &v, err)) != 0 &&
        (rc < 0 || (rc = set_u32(m, K("attention.sliding_window"), v, err))))
        return rc;
    if ((rc = cfg_u32(cfg, "max_position_embeddings", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("context_length"), v, err))))
        return rc;
    if ((rc = cfg_u32(cfg, "hidden_size", &hidden, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: hidden_size is missing");
    if ((rc = set_u32(m, K("embedding_length"), hidden, err)))
        return rc;
    if ((rc = cfg_u32(cfg, "intermediate_size", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("feed_forward_length"), v, err))))
        return rc;
    if ((rc = cfg_u32(cfg, "num_attention_heads", &heads, err)) <= 0)
        return rc ? rc : apr_err_set(err, APR_E_FORMAT, "config.json: num_attention_heads is missing");
    if (heads == 0)
        return apr_err_set(err, APR_E_FORMAT, "config.json: num_attention_heads is 0");
    if ((rc = set_u32(m, K("attention.head_count"), heads, err)))
        return rc;
    if ((rc = cfg_u32(cfg, "num_key_value_heads", &v, err)) < 0 ||
        (rc == 1 && (rc = set_u32(m, K("attention.head_count_kv"), v, err))))
        return rc;
    /* rope before the norm epsilon: the order llama.cpp's converter writes */
    uint32_t rope_dim = hidden / heads;
    if ((rc = cfg_u32(cfg, "head_dim", &rope_dim, err)) < 0 ||
        (rc = map_rope(m, cfg, arch, rope_dim, err)))
        return rc;
    if ((rc = cfg_f32(cfg, "rms_norm_eps", &f, err)) < 0 ||
        (rc == 1 && (rc = set_f32(m, K("attention.layer_norm_rms_epsilon"), f, err))))
        return rc;
    uint32_t head_dim = 0;
    int has_hd = cfg_u32(cfg, "head_dim", &head_dim, err);
    if (has_hd < 0)
        return has_hd;
    if (is_phi3(a) && has_hd == 1 && head_dim * heads != hidden)
        return refuse_key("head_dim", json_object_get(cfg, "head_dim"), "phi3 needs hidden_size / "
                                                                          "num_attention_heads (llama.cpp's phi3)", err);
    if (has_hd == 1 && !is_phi3(a) && ((rc = set_u32(m, K("attention.key_length"), head_dim, err)) ||
                                       (rc = set_u32(m, K("attention.value_length"), head_dim, err))))
        return rc;
    if (strcmp(arch, "llama") == 0) {
        if ((rc = cfg_u32(cfg, "vocab_size", &v, err)) < 0 ||
            (rc == 1 && (rc = set_u32(m, K("vocab_size"), v, err))))
            return rc;
        if ((rc = set_u32(m, K("rope.dimension_count"), has_hd == 1 ? head_dim : hidden / heads, err)))
            return rc;
    }
    if (is_gemma2(a)) { /* presence checked with the keys */
        if ((rc = cfg_f32(cfg, "attn_logit_softcapping", &f, err)) < 0 ||
            (rc = set_f32(m, K("attn_logit_softcapping"), f, err)) ||
            (rc = cfg_f32(cfg, "final_logit_softcapping", &f, err)) < 0 ||
            (rc = set_f32(m, K("final_logit_softcapping"), f, err)) ||
            (rc = cfg_u32(cfg, "sliding_window", &v, err)) < 0 ||
            (rc = set_u32(m, K("attention.sliding_window"), v, err)))
            return rc;
        /* Gemma's SentencePiece vocabulary adds no dummy prefix (the converter's set_vocab) */
        if (apr_model_set_kv_bool(m, "tokenizer.ggml.add_space_prefix", false))
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    if (is_phi3(a)) { /* Phi3MiniModel.set_gguf_parameters */
        if ((rc = cfg_u32(cfg, "original_max_position_embeddings", &v, err)) < 0 ||
            (rc == 1 && (rc = set_u32(m, K("rope.scaling.original_context_length"), v, err))) ||
            (rc = set_u32(m, K("rope.dimension_count"), hidden / heads, err)))
            return rc;
        v = 0; /* null: 0, as the converter writes it */
        if ((rc = cfg_u32(cfg, "sliding_window", &v, err)) < 0 || (rc = set_u32(m, K("attention.sliding_window"), v, err)))
            return rc;
    }
    if (is_gemma3(a)) {
        if ((rc = cfg_f32(cfg, "final_logit_softcapping", &f, err)) < 0 ||
            (rc == 1 && (rc = set_f32(m, K("final_logit_softcapping"), f, err))) ||
            (rc = cfg_u32(cfg, "sliding_window", &v, err)) < 0 ||
            (rc = set_u32(m, K("attention.sliding_window"), v, err)))
            return rc;
    }
#undef K
    return 0;
}

/* ================================================================ apr_gguf records */

static int apply_record_kvs(apr_model *m, const json_t *rec, const char *file, apr_err *err)
{
    const json_t *kvs = json_object_get(rec, "kvs");
    if (kvs && !json_is_array(kvs))
        return apr_err_set(err, APR_E_FORMAT, "%s: apr_gguf.kvs is not a list", file);
    size_t i;
    json_t *e;
    json_array_foreach(kvs, i, e) {
        apr_kv kv;
        int rc = apr_kv_from_json(&kv, e, err);
        if (rc)
            return rc;
        rc = apr_model_set_kv(m, &kv);
        apr_kv_free(&kv);
        if (rc)
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    return 0;
}

/* Keep only the listed keys (file-level ones always stay), in the listed order. */
static int apply_record_keys(apr_model *m, const json_t *keys, apr_err *err)
{
    if (!json_is_array(keys))
        return apr_err_set(err, APR_E_FORMAT, "apr_gguf.keys is not a list");
    apr_kv *out = calloc(m->n_kvs ? m->n_kvs : 1, sizeof *out);
    bool *used = calloc(m->n_kvs ? m->n_kvs : 1, sizeof *used);
    if (!out || !used) {
        free(out);
        free(used);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    uint64_t n = 0;
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        const char *key = json_string_value(k);
        for (uint64_t j = 0; key && j < m->n_kvs; j++)
            if (!used[j] && strcmp(m->kvs[j].key, key) == 0) {
                out[n++] = m->kvs[j];
                used[j] = true;
                break;
            }
    }
    for (uint64_t j = 0; j < m->n_kvs; j++) {
        if (used[j])
            continue;
        if (apr_hf_kv_is_file_level(m->kvs[j].key))
            out[n++] = m->kvs[j];
        else
            apr_kv_free(&m->kvs[j]);
    }
    free(used);
    free(m->kvs);
    m->kvs = out;
    m->n_kvs = n;
    return 0;
}

/* ================================================================ generation_config / tokenizer_config keys */

/* generation_config.json: transformers' GenerationConfig fields. Only
 * bos/eos_token_id are read (libtok's last resort for the special ids); the
 * rest are decoding defaults (sampling, beams, lengths, outputs, caches) that
 * do not touch the weights, the tokenizer or the logits apr computes. */
static const char *const gen_known[] = {
    "_from_model_config", "transformers_version", "bos_token_id", "eos_token_id", "pad_token_id",
    "decoder_start_token_id", "do_sample", "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "encoder_repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "force_words_ids",
    "renormalize_logits", "constraints", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids",
    "sequence_bias", "token_healing", "guidance_scale", "watermarking_config", "max_length", "max_new_tokens",
    "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings", "num_beams", "num_beam_groups",
    "diversity_penalty", "penalty_alpha", "dola_layers", "use_cache", "cache_implementation", "cache_config",
    "return_legacy_cache", "max_cache_len", "prefill_chunk_size", "low_memory", "num_return_sequences",
    "output_attentions", "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate",
    "is_assistant", "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
    "target_lookbehind", "assistant_ensemble_weight", "speculation_type", "use_mtp", "disable_compile",
    "compile_config", "continuous_batching_config", "generation_kwargs"};

/* tokenizer_config.json keys libtok reads (hftok.c: special tokens, the add
 * flags, the chat template, the SentencePiece added tokens) and keys that
 * change neither the ids a text encodes to nor the GGUF: transformers'
 * bookkeeping, batching (padding/truncation), decode-time text cleanup. */
static const char *const tc_known[] = {
    "added_tokens_decoder", "chat_template", "bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
    "cls_token", "mask_token", "add_bos_token", "add_eos_token", "model_max_length", "tokenizer_class",
    "clean_up_tokenization_spaces", "spaces_between_special_tokens", "errors", "legacy", "padding_side",
    "truncation_side", "model_input_names", "use_default_system_prompt", "backend", "is_local",
    "local_files_only", "name_or_path", "tokenizer_file", "vocab_file", "merges_file", "processor_class"};

/* Whether tokenizer.json's pre_tokenizer (or one inside a Sequence) adds a prefix space. */
static bool pre_adds_prefix_space(const json_t *pt)
{
    if (json_is_true(json_object_get(pt, "add_prefix_space")))
        return true;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(pt, "pretokenizers"), i, e)
        if (pre_adds_prefix_space(e))
            return true;
    return false;
}

/* Whether content names a token the vocabulary already has as an added token. */
static bool is_added_token(const apr_hf_docs *d, const char *content)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(d->tokenizer, "added_tokens"), i, a)
        if (!strcmp(content, json_string_value(json_object_get(a, "content")) ?: ""))
            return true;
    const char *k;
    json_object_foreach(json_object_get(d->tokenizer_config, "added_tokens_decoder"), k, a)
        if (!strcmp(content, json_string_value(json_object_get(a, "content")) ?: ""))
            return true;
    return false;
}

/* additional_special_tokens / extra_special_tokens (a list, or names -> tokens):
 * transformers adds a token the vocabulary lacks, so each must be there already. */
static int check_special_list(const apr_hf_docs *d, const char *k, const json_t *v, apr_err *err)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_array(v) && !json_is_object(v))
        return refuse_in("tokenizer_config.json", k, v, "must be a list or an object", err);
    const json_t *e;
    size_t i = 0;
    void *it = json_is_object(v) ? json_object_iter((json_t *)v) : NULL;
    for (;;) {
        if (json_is_array(v)) {
            if (i >= json_array_size(v))
                break;
            e = json_array_get(v, i++);
        } else {
            if (!it)
                break;
            e = json_object_iter_value(it);
            it = json_object_iter_next((json_t *)v, it);
        }
        const char *c = json_string_value(json_is_object(e) ? json_object_get(e, "content") : e);
        if (!c || !is_added_token(d, c))
            return refuse_in("tokenizer_config.json", k, e, "not an added token of the vocabulary (transformers "
                                                            "would add it)", err);
    }
    return 0;
}

/* One tokenizer_config.json key: 0 accepted, <0 refused. */
static int tc_key(const apr_hf_docs *d, const char *k, const json_t *v, apr_err *err)
{
    static const char file[] = "tokenizer_config.json";
    if (in_list(k, tc_known, sizeof tc_known / sizeof *tc_known))
        return 0;
    if (!strcmp(k, "add_unk_token") || !strcmp(k, "add_sep_token") || !strcmp(k, "add_pad_token") ||
        !strcmp(k, "add_cls_token") || !strcmp(k, "add_mask_token"))
        return json_is_true(v) ? refuse_in(file, k, v, "adding this token is not implemented by apr's tokenizer",
                                           err)
                               : 0;
    if (!strcmp(k, "split_special_tokens"))
        return json_is_null(v) || json_is_false(v)
                   ? 0
                   : refuse_in(file, k, v, "splitting special tokens is not implemented", err);
    if (!strcmp(k, "sp_model_kwargs")) /* e.g. enable_sampling: a different SentencePiece encoding */
        return json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0)
                   ? 0
                   : refuse_in(file, k, v, "SentencePiece options are not implemented", err);
    if (!strcmp(k, "add_prefix_space")) /* transformers rewrites the pre-tokenizer (or rebuilds from slow) */
        return json_is_null(v) || (d->tokenizer && json_is_boolean(v) &&
                                   json_is_true(v) == pre_adds_prefix_space(json_object_get(d->tokenizer,
                                                                                           "pre_tokenizer")))
                   ? 0
                   : refuse_in(file, k, v, "differs from tokenizer.json's pre-tokenizer (transformers would "
                                           "override it; apr does not)", err);
    if (!strcmp(k, "additional_special_tokens") || !strcmp(k, "extra_special_tokens"))
        return check_special_list(d, k, v, err);
    if (!strcmp(k, "auto_map"))
        return refuse_in(file, k, v, "a custom tokenizer class (remote code) may tokenize differently", err);
    return refuse_in(file, k, v, "unknown key (it may change tokenization; see docs/families.md)", err);
}

/* Every key of generation_config.json and tokenizer_config.json is read,
 * known not to change what apr computes, or refused (as config.json's). */
static int check_side_files(const apr_hf_docs *d, apr_err *err)
{
    const char *k;
    json_t *v;
    int rc;
    json_object_foreach(d->gen_config, k, v)
        if (!in_list(k, gen_known, sizeof gen_known / sizeof *gen_known))
            return refuse_in("generation_config.json", k, v, "unknown key (see docs/families.md)", err);
    json_object_foreach(d->tokenizer_config, k, v)
        if ((rc = tc_key(d, k, v, err)))
            return rc;
    return 0;
}

static int docs_to_kvs(apr_model *m, const apr_hf_docs *d, const char *dir_name, bool records, apr_err *err)
{
    int rc;
    if (records && (rc = check_side_files(d, err)))
        return rc;
    if (d->config && (rc = map_config(m, d->config, dir_name, err)))
        return rc;
    /* Gemma3Model.set_vocab: a SentencePiece vocabulary without the dummy prefix */
    const char *arch = apr_kv_get_str(m, "general.architecture");
    if (d->spm && arch && !strcmp(arch, "gemma3") && apr_model_set_kv_bool(m, "tokenizer.ggml.add_space_prefix", false))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    if ((rc = apr_tok_hf_to_kvs(m, &(apr_tok_hf){.tokenizer = d->tokenizer, .tokenizer_config = d->tokenizer_config,
                                                .config = d->config, .gen_config = d->gen_config,
                                                .added_tokens = d->added_tokens, .chat_template_alt = d->chat_template_alt,
                                                .spm = d->spm}, err)))
        return rc;
    if (!records)
        return 0;
    const json_t *rt = json_object_get(d->tokenizer, "apr_gguf");
    const json_t *rcfg = json_object_get(d->config, "apr_gguf");
    if (rt && (rc = apply_record_kvs(m, rt, "tokenizer.json", err)))
        return rc;
    if (rcfg && (rc = apply_record_kvs(m, rcfg, "config.json", err)))
        return rc;
    const json_t *keys = json_object_get(rcfg, "keys");
    if (!keys)
        keys = json_object_get(rt, "keys");
    if (keys && (rc = apply_record_keys(m, keys, err)))
        return rc;
    return 0;
}

int apr_hf_docs_to_kvs(apr_model *m, const apr_hf_docs *d, const char *dir_name, apr_err *err)
{
    return docs_to_kvs(m, d, dir_name, true, err);
}

/* ================================================================ KVs -> docs */

/* rope_scaling (the 4.x dialect, which transformers 5 still reads) from
 * llama.cpp's rope.scaling.* keys. llama3 scaling survives in a GGUF only as
 * rope_freqs.weight, from which HF's parameters cannot be recovered: refused
 * rather than written as an unscaled model. */
static int build_rope_scaling(const apr_model *m, json_t *j, apr_jb *jb, apr_err *err)
{
    const apr_arch_config *c = &m->cfg;
    if (apr_model_tensor(m, "rope_freqs.weight"))
        return apr_err_set(err, APR_E_UNSUPPORTED, "rope_freqs.weight (llama3 rope scaling) has no HF config.json "
                                                   "form that transformers reads: not written as HF");
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    const char *t = apr_kv_get_str(m, key);
    if (!t || !strcmp(t, "none"))
        return 0;
    json_t *rs = json_object();
    apr_jb_set(jb, rs, "rope_type", json_string(t));
    static const char *const fields[][2] = {{"rope.scaling.factor", "factor"},
                                            {"rope.scaling.yarn_attn_factor", "attention_factor"},
                                            {"rope.scaling.yarn_beta_fast", "beta_fast"},
                                            {"rope.scaling.yarn_beta_slow", "beta_slow"}};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        float f;
        snprintf(key, sizeof key, "%s.%s", c->arch, fields[i][0]);
        if (apr_kv_get_f32(m, key, &f))
            apr_jb_set(jb, rs, fields[i][1], apr_json_f32(f));
    }
    /* derive's value: the KV, else llama.cpp's default (the context length) */
    if (c->rope_yarn)
        apr_jb_set(jb, rs, "original_max_position_embeddings", json_integer(c->yarn_orig_ctx));
    apr_jb_set(jb, j, "rope_scaling", rs);
    return 0;
}

static int build_config(const apr_model *m, json_t **out, apr_err *err)
{
    const apr_arch_config *c = &m->cfg;
    const arch_name *a = NULL;
    /* the first entry of the GGUF arch, unless a sliding window says Mistral */
    for (size_t i = 0; i < sizeof arch_names / sizeof *arch_names; i++)
        if (!strcmp(c->arch, arch_names[i].gguf) && !a)
            a = &arch_names[i];
    if (c->sliding_window && !strcmp(c->arch, "llama"))
        a = &arch_names[2];
    if (!a)
        return apr_err_set(err, APR_E_UNSUPPORTED, "no HF config for architecture '%s'", c->arch);
    apr_jb jb = apr_jb_start();
    json_t *j = json_object();
    json_t *archs = json_array();
    apr_jb_append(&jb, archs, json_string(a->hf));
    apr_jb_set(&jb, j, "architectures", archs);
    const char *name = apr_kv_get_str(m, "general.name");
    if (name)
        apr_jb_set(&jb, j, "_name_or_path", json_string(name));
    apr_jb_set(&jb, j, "model_type", json_string(a->model_type));
    if (is_gemma(a))
        apr_jb_set(&jb, j, "hidden_activation", json_string("gelu_pytorch_tanh"));
    else
        apr_jb_set(&jb, j, "hidden_act", json_string("silu"));
    apr_jb_set(&jb, j, "hidden_size", json_integer(c->hidden));
    apr_jb_set(&jb, j, "intermediate_size", json_integer(c->ffn));
    apr_jb_set(&jb, j, "num_attention_heads", json_integer(c->n_heads));
    apr_jb_set(&jb, j, "num_hidden_layers", json_integer(c->n_layers));
    apr_jb_set(&jb, j, "num_key_value_heads", json_integer(c->n_kv_heads));
    char key[128];
    snprintf(key, sizeof key, "%s.attention.key_length", c->arch);
    /* head_dim is written when the source recorded it or when it is not
     * hidden / heads (HF would otherwise assume the latter). */
    if (apr_model_kv(m, key) || c->head_dim * c->n_heads != c->hidden || is_gemma(a) ||
        !strcmp(a->model_type, "qwen3")) /* their configs' default head_dim is not hidden / heads */
        apr_jb_set(&jb, j, "head_dim", json_integer(c->head_dim));
    if (is_gemma(a)) {
        /* what llama.cpp computes (derive.c): the inverse square of its query scale */
        const uint32_t big = is_gemma2(a) ? 46 : 62;
        apr_jb_set(&jb, j, "query_pre_attn_scalar",
                   json_integer(c->n_layers == big ? c->hidden / c->n_heads : c->head_dim));
        apr_jb_set(&jb, j, "attn_logit_softcapping",
                   c->attn_softcap > 0.0f ? apr_json_f32(c->attn_softcap) : json_null());
        apr_jb_set(&jb, j, "final_logit_softcapping",
                   c->final_softcap > 0.0f ? apr_json_f32(c->final_softcap) : json_null());
    }
    if (is_gemma3(a)) {
        if (!c->sliding_window) {
            json_decref(j);
            return apr_err_set(err, APR_E_UNSUPPORTED, "gemma3 without a sliding window has no HF form here");
        }
        apr_jb_set(&jb, j, "sliding_window_pattern", json_integer(6));
        apr_jb_set(&jb, j, "rope_local_base_freq", apr_json_f32(c->rope_theta_swa));
    }
    snprintf(key, sizeof key, "%s.context_length", c->arch);
    if (apr_model_kv(m, key))
        apr_jb_set(&jb, j, "max_position_embeddings", json_integer(c->ctx_len));
    apr_jb_set(&jb, j, "rms_norm_eps", apr_json_f32(c->rms_eps));
    apr_jb_set(&jb, j, "rope_theta", apr_json_f32(c->rope_theta));
    int rc = build_rope_scaling(m, j, &jb, err);
    if (rc) {
        json_decref(j);
        return rc;
    }
    apr_jb_set(&jb, j, "vocab_size", json_integer(c->vocab));
    apr_jb_set(&jb, j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    if (c->sliding_window)
        apr_jb_set(&jb, j, "sliding_window", json_integer(c->sliding_window));
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", c->arch);
    uint32_t orig_ctx;
    if (is_phi3(a) && apr_kv_get_u32(m, key, &orig_ctx))
        apr_jb_set(&jb, j, "original_max_position_embeddings", json_integer(orig_ctx));
    if (!strcmp(a->model_type, "llama") || !strcmp(a->model_type, "qwen3"))
        apr_jb_set(&jb, j, "attention_bias", json_boolean(c->qkv_bias));
    if (is_gemma2(a) && !c->tied_embeddings) {
        json_decref(j);
        return apr_err_set(err, APR_E_UNSUPPORTED, "gemma2 with a separate output.weight has no HF form "
                                                   "(Gemma2ForCausalLM ties it to the embedding)");
    }
    /* torch_dtype: the dtype of the weight matrices (2-D tensors). */
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 2 && apr_hf_torch_dtype(m->tensors[i].dtype)) {
            apr_jb_set(&jb, j, "torch_dtype", json_string(apr_hf_torch_dtype(m->tensors[i].dtype)));
            break;
        }
    if (m->has_tok && m->tok.bos_id >= 0)
        apr_jb_set(&jb, j, "bos_token_id", json_integer(m->tok.bos_id));
    if (m->has_tok && m->tok.eos_id >= 0)
        apr_jb_set(&jb, j, "eos_token_id", json_integer(m->tok.eos_id));
    /* SpecialVocab reads {typ}_token_id from config.json too: this keeps the
     * unknown id when tokenizer.model is the only tokenizer file. */
    if (m->has_tok && m->tok.unk_id >= 0)
        apr_jb_set(&jb, j, "unk_token_id", json_integer(m->tok.unk_id));
    /* Phi3Config's default pad id (32000) is outside a smaller vocabulary:
     * transformers refuses to build the model without the real one */
    if (is_phi3(a) && m->has_tok && m->tok.pad_id >= 0)
        apr_jb_set(&jb, j, "pad_token_id", json_integer(m->tok.pad_id));
    apr_jb_set(&jb, j, "use_cache", json_true());
    if ((rc = apr_jb_done(&jb, "config.json", err))) {
        json_decref(j);
        return rc;
    }
    *out = j;
    return 0;
}

/* generation_config.json, or *out NULL when there is nothing to put in it. */
static int build_gen_config(const apr_model *m, json_t **out, apr_err *err)
{
    *out = NULL;
    if (!m->has_tok || (m->tok.bos_id < 0 && m->tok.eos_id < 0))
        return 0;
    apr_jb jb = apr_jb_start();
    json_t *g = json_object();
    apr_jb_set(&jb, g, "_from_model_config", json_true());
    if (m->tok.bos_id >= 0)
        apr_jb_set(&jb, g, "bos_token_id", json_integer(m->tok.bos_id));
    if (m->tok.eos_id >= 0)
        apr_jb_set(&jb, g, "eos_token_id", json_integer(m->tok.eos_id));
    int rc = apr_jb_done(&jb, "generation_config.json", err);
    if (rc)
        json_decref(g);
    else
        *out = g;
    return rc;
}

/* Run the reader on the docs and record every KV of m it does not reproduce. */
static int add_records(const apr_model *m, apr_hf_docs *d, apr_err *err)
{
    apr_model *std = apr_model_new(APR_FMT_SAFETENSORS);
    if (!std)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    int rc = docs_to_kvs(std, d, NULL, false, err);
    if (rc) {
        apr_model_free(std);
        return rc;
    }
    apr_jb jb = apr_jb_start();
    json_t *cfg_kvs = json_array(), *tok_kvs = json_array(), *keys = json_array();
    bool need = false;
    for (uint64_t i = 0; i < m->n_kvs && !rc; i++) {
        const apr_kv *kv = &m->kvs[i];
        if (apr_hf_kv_is_file_level(kv->key))
            continue;
        apr_jb_append(&jb, keys, json_string(kv->key));
        const apr_kv *s = apr_model_kv(std, kv->key);
        if (s && apr_kv_equal(s, kv))
            continue;
        need = true;
        json_t *r = apr_kv_to_json(kv, err);
        if (!r) {
            rc = err ? err->code : APR_E_ARG;
            break;
        }
        bool tok_key = strncmp(kv->key, "tokenizer.", 10) == 0;
        apr_jb_append(&jb, tok_key && d->tokenizer ? tok_kvs : (d->config ? cfg_kvs : tok_kvs), r);
    }
    for (uint64_t i = 0; i < std->n_kvs && !need; i++)
        if (!apr_model_kv(m, std->kvs[i].key))
            need = true; /* the reader would add a key the model does not have */
    apr_model_free(std);
    if (!rc && need) {
        json_t *host = d->config ? d->config : d->tokenizer;
        json_t *rec = json_object();
        apr_jb_set(&jb, rec, "keys", json_incref(keys));
        apr_jb_set(&jb, rec, "kvs", json_incref(host == d->config ? cfg_kvs : tok_kvs));
        apr_jb_set(&jb, host, "apr_gguf", rec);
        if (host == d->config && json_array_size(tok_kvs)) {
            json_t *trec = json_object();
            apr_jb_set(&jb, trec, "kvs", json_incref(tok_kvs));
            apr_jb_set(&jb, d->tokenizer, "apr_gguf", trec);
        }
    }
    json_decref(cfg_kvs);
    json_decref(tok_kvs);
    json_decref(keys);
    return rc ? rc : apr_jb_done(&jb, "the apr_gguf record", err);
}

/* d->spm for a SentencePiece vocabulary, or NULL when sentencepiece could
 * not load one made of these tokens (tokenizer.json then carries it alone). */
int apr_hf_docs_from_model(const apr_model *m, apr_hf_docs *d, apr_err *err)
{
    memset(d, 0, sizeof *d);
    int rc = 0;
    if (m->has_cfg && (rc = build_config(m, &d->config, err)))
        goto fail;
    /* A vocabulary type HF's files cannot express (not "llama" / "gpt2") gets
     * no tokenizer.json: its KVs then travel in config.json's record. */
    if ((rc = apr_tok_hf_from_model(m, &d->tokenizer, &d->tokenizer_config, &d->spm, err)))
        goto fail;
    if ((rc = build_gen_config(m, &d->gen_config, err)))
        goto fail;
    if ((d->config || d->tokenizer) && (rc = add_records(m, d, err)))
        goto fail;
    return 0;
fail:
    apr_hf_docs_free(d);
    return rc;
}
