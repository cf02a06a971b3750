/* chat.c - a model's chat template applied to a conversation, as
 * transformers' apply_chat_template applies it (the template from the
 * tokenizer.chat_template* KVs, the special tokens' texts as variables), and
 * the end-of-generation tokens a chat stops on (llama.cpp's EOG set). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static const char *token_text(const apr_model *m, int32_t id)
{
    if (!m->has_tok || id < 0 || (uint32_t)id >= m->tok.n_tokens)
        return NULL;
    return m->tok.tokens[id].s;
}

const char *apr_chat_template(const apr_model *m, const char *name)
{
    if (!name)
        return apr_kv_get_str(m, "tokenizer.chat_template");
    char key[512];
    if (snprintf(key, sizeof key, "tokenizer.chat_template.%s", name) >= (int)sizeof key)
        return NULL;
    return apr_kv_get_str(m, key);
}

int apr_chat_render(const apr_model *m, const char *name, const json_t *vars, char **out, size_t *len, apr_err *err)
{
    *out = NULL;
    const char *src = apr_chat_template(m, name);
    if (!src) {
        if (name)
            return apr_err_set(err, APR_E_ARG, "the model has no chat template named '%s' (tokenizer.chat_template.%s)",
                               name, name);
        return apr_err_set(err, APR_E_ARG, "the model has no chat template (tokenizer.chat_template)");
    }
    json_t *all = json_is_object(vars) ? json_deep_copy(vars) : json_object();
    if (!all)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    /* what apply_chat_template adds: the special tokens map, and tools /
     * documents as None when not given */
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const int32_t ids[] = {m->tok.bos_id, m->tok.eos_id, m->tok.unk_id, m->tok.pad_id};
    /* from HF files: only the tokens tokenizer_config.json names (a BOS id
     * from config.json alone renders nothing in transformers) */
    json_t *hf = m->hf_chat_specials ? json_loads(m->hf_chat_specials, 0, NULL) : NULL;
    int bad = m->hf_chat_specials && !hf;
    for (int i = 0; i < 4; i++) {
        const char *t = hf ? json_string_value(json_object_get(hf, names[i])) : token_text(m, ids[i]);
        if (t && !json_object_get(all, names[i]))
            bad |= json_object_set_new(all, names[i], json_string(t));
    }
    json_decref(hf);
    if (!json_object_get(all, "tools"))
        bad |= json_object_set_new(all, "tools", json_null());
    if (!json_object_get(all, "documents"))
        bad |= json_object_set_new(all, "documents", json_null());
    if (!json_object_get(all, "add_generation_prompt"))
        bad |= json_object_set_new(all, "add_generation_prompt", json_false());
    if (bad) {
        json_decref(all);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    apr_tmpl *t = NULL;
    int rc = apr_tmpl_parse(&t, src, strlen(src), err);
    if (!rc)
        rc = apr_tmpl_render(t, all, 0, out, len, err);
    apr_tmpl_free(t);
    json_decref(all);
    return rc;
}

bool apr_chat_is_end(const apr_model *m, int32_t id)
{
    if (id < 0)
        return false;
    if (id == m->tok.eos_id)
        return true;
    uint32_t v;
    if ((apr_kv_get_u32(m, "tokenizer.ggml.eot_token_id", &v) && (int64_t)v == id) ||
        (apr_kv_get_u32(m, "tokenizer.ggml.eom_token_id", &v) && (int64_t)v == id))
        return true;
    static const char *const ends[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
                                       "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
                                       "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
                                       "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                                       "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", "[e~["};
    const char *t = token_text(m, id);
    for (size_t i = 0; t && i < sizeof ends / sizeof *ends; i++)
        if (!strcmp(t, ends[i]))
            return true;
    return false;
}
