/* test_chat_template.c - chat templates: carried through HF <-> GGUF <-> APR
 * (every form an HF directory holds them in), and the peer check of the
 * carrying against gguf-py (tests/peer/chat_template_carry_peer.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "test_util.h"
#include "tok.h"

#define TINY "fixtures/tinycoder/tokenizer.json"

/* An HF directory with tinycoder's weights, config and tokenizer.json, and
 * the given tokenizer_config.json; returns its path (static buffer). */
static const char *hf_dir(const char *tag, const char *tokenizer_config)
{
    TU_REQUIRE_SHARED(tok, TINY);
    char src[1024];
    snprintf(src, sizeof src, "%s", tok);
    *strrchr(src, '/') = 0;
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir(tag));
    static const char *const files[] = {"config.json", "tokenizer.json", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        char from[1100];
        snprintf(from, sizeof from, "%s/%s", src, files[i]);
        assert_int_equal(symlink(from, tu_path(dir, files[i])), 0);
    }
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tokenizer_config, strlen(tokenizer_config)),
                     0);
    return dir;
}

static apr_model *open_or_fail(const char *path)
{
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("%s: %s", path, err.msg);
    return m;
}

static void convert_or_fail(const char *in, const char *out)
{
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.threads = 1;
    apr_err err = {0};
    if (apr_convert_file(in, out, &o, NULL, &err))
        fail_msg("%s -> %s: %s", in, out, err.msg);
}

static void assert_str_kv(const apr_model *m, const char *key, const char *want)
{
    const char *got = apr_kv_get_str(m, key);
    if (!want) {
        assert_null(got);
        return;
    }
    if (!got)
        fail_msg("%s is missing", key);
    assert_string_equal(got, want);
}

/* The list form: "default" becomes tokenizer.chat_template, the others
 * tokenizer.chat_template.NAME (name sanitized as gguf-py does, one '_' per
 * non-alphanumeric code point), the names tokenizer.chat_templates; entries
 * with an empty name or a null template are skipped. Then GGUF -> APR ->
 * GGUF -> HF -> GGUF keeps every one of these KVs. */
static void test_named_templates_carried(void **state)
{
    (void)state;
    const char *tc = "{\"eos_token\":\"<|im_end|>\",\"chat_template\":["
                     "{\"name\":\"default\",\"template\":\"D {{ messages }}\\r\\n\"},"
                     "{\"name\":\"tool use\\u00fc\",\"template\":\"T {{ tools }}\"},"
                     "{\"name\":\"\",\"template\":\"skipped\"},"
                     "{\"name\":\"none\",\"template\":null},"
                     "{\"name\":\"rag\",\"template\":\"R \\u2603\"}]}";
    const char *dir = hf_dir("ct-named", tc);
    char paths[5][1200];
    snprintf(paths[0], sizeof paths[0], "%s", dir);
    const char *out = tu_tmpdir("ct-named-out");
    snprintf(paths[1], sizeof paths[1], "%s/a.gguf", out);
    snprintf(paths[2], sizeof paths[2], "%s/b.apr", out);
    snprintf(paths[3], sizeof paths[3], "%s/c-hf/", out);
    snprintf(paths[4], sizeof paths[4], "%s/d.gguf", out);
    for (int i = 0; i < 5; i++) {
        if (i)
            convert_or_fail(paths[i - 1], paths[i]);
        apr_model *m = open_or_fail(paths[i]);
        assert_str_kv(m, "tokenizer.chat_template", "D {{ messages }}\r\n");
        assert_str_kv(m, "tokenizer.chat_template.tool_use_", "T {{ tools }}");
        assert_str_kv(m, "tokenizer.chat_template.rag", "R \xe2\x98\x83");
        assert_str_kv(m, "tokenizer.chat_template.none", NULL);
        const apr_kv *names = apr_model_kv(m, "tokenizer.chat_templates");
        assert_non_null(names);
        assert_int_equal(names->type, APR_KV_ARRAY);
        assert_int_equal(names->arr_type, APR_KV_STRING);
        assert_int_equal(names->count, 2);
        assert_string_equal(((apr_str *)names->arr)[0].s, "tool_use_");
        assert_string_equal(((apr_str *)names->arr)[1].s, "rag");
        assert_string_equal(m->tok.chat_template, "D {{ messages }}\r\n");
        apr_model_free(m);
    }
}

/* chat_template.jinja (newlines read as Python reads text) with
 * additional_chat_templates/; chat_template.json when there is no .jinja;
 * tokenizer_config.json's own key wins over both, null included. */
static void test_template_files(void **state)
{
    (void)state;
    const char *dir = hf_dir("ct-files", "{\"eos_token\":\"<|im_end|>\"}");
    const char *jinja = "line1\r\nline2\rline3\n";
    assert_int_equal(tu_write_file(tu_path(dir, "chat_template.jinja"), jinja, strlen(jinja)), 0);
    const char *ctj = "{\"chat_template\":\"from json\"}";
    assert_int_equal(tu_write_file(tu_path(dir, "chat_template.json"), ctj, strlen(ctj)), 0);
    apr_model *m = open_or_fail(dir);
    assert_str_kv(m, "tokenizer.chat_template", "line1\nline2\nline3\n");
    assert_null(apr_model_kv(m, "tokenizer.chat_templates"));
    apr_model_free(m);

    char sub[1200];
    snprintf(sub, sizeof sub, "%s/additional_chat_templates", dir);
    assert_int_equal(tu_system(NULL, "mkdir -p '%s'", sub), 0);
    assert_int_equal(tu_write_file(tu_path(sub, "tool_use.jinja"), "tools!", 6), 0);
    assert_int_equal(tu_write_file(tu_path(sub, "notes.txt"), "not a template", 14), 0);
    m = open_or_fail(dir);
    assert_str_kv(m, "tokenizer.chat_template", "line1\nline2\nline3\n");
    assert_str_kv(m, "tokenizer.chat_template.tool_use", "tools!");
    assert_str_kv(m, "tokenizer.chat_template.notes", NULL);
    apr_model_free(m);

    assert_int_equal(unlink(tu_path(dir, "chat_template.jinja")), 0);
    m = open_or_fail(dir);
    assert_str_kv(m, "tokenizer.chat_template", "from json");
    assert_null(apr_model_kv(m, "tokenizer.chat_template.tool_use")); /* additional ones go with the .jinja */
    apr_model_free(m);

    const char *tc = "{\"eos_token\":\"<|im_end|>\",\"chat_template\":null}";
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tc, strlen(tc)), 0);
    m = open_or_fail(dir);
    assert_str_kv(m, "tokenizer.chat_template", NULL);
    apr_model_free(m);

    /* a list entry gguf-py would crash on is refused, naming it */
    tc = "{\"eos_token\":\"<|im_end|>\",\"chat_template\":[{\"name\":\"a\",\"template\":3}]}";
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tc, strlen(tc)), 0);
    apr_model *bad = NULL;
    apr_err err = {0};
    assert_int_not_equal(apr_model_open(&bad, dir, NULL, &err), 0);
    assert_null(bad);
    assert_non_null(strstr(err.msg, "chat_template entry 0"));
    /* a template file that is not UTF-8 text is refused, naming it */
    tc = "{\"eos_token\":\"<|im_end|>\"}";
    assert_int_equal(tu_write_file(tu_path(dir, "tokenizer_config.json"), tc, strlen(tc)), 0);
    assert_int_equal(tu_write_file(tu_path(dir, "chat_template.jinja"), "\xff\xfe", 2), 0);
    assert_int_not_equal(apr_model_open(&bad, dir, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "chat_template.jinja"));
}

static void test_carry_peer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(tok, TINY);
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    const char *src = tu_require_llama_cpp_src();
    tu_require_python("numpy", "numpy");
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s", tok);
    *strrchr(tiny, '/') = 0;
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s' '%s/work'", bin, src, tiny, tu_tmpdir("ct-carry-peer"));
    int rc = tu_run_peer("ct-carry-peer", "chat_template_carry_peer.py", args);
    if (rc != 0)
        fail_msg("chat_template_carry_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_templates_carried),
        cmocka_unit_test(test_template_files),
        cmocka_unit_test(test_carry_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
