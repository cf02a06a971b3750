/* test_chat_template.c - chat templates: carried through HF <-> GGUF <-> APR
 * (every form an HF directory holds them in), and the peer check of the
 * carrying against gguf-py (tests/peer/chat_template_carry_peer.py); the
 * Jinja subset (libtok/jinja.c): hand-checked renderings and refusals, and
 * every llama.cpp template rendered byte for byte as transformers renders it
 * (tests/peer/chat_template_render_peer.py). */
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
    tu_tinycoder_peer("ct-carry-peer", "chat_template_carry_peer.py", "numpy", "numpy");
}

/* The renderer on its own: each template with its variables, and the text
 * jinja2 renders (transformers' environment: these texts were made by
 * tests/peer/chat_template_render_peer.py's render path and are checked
 * again by test_render_peer), or the error apr must give instead (with
 * what jinja2 does in the comment: an error too, or a construct apr refuses). */
static const struct {
    const char *src, *vars, *want, *err;
} render_cases[] = {
    {"{% for m in messages %}{{ loop.index }}:{{ m.role|upper }}={{ m['content']|trim }};{% endfor %}", "{\"messages\": [{\"role\": \"user\", \"content\": \" hi \"}, {\"role\": \"assistant\", \"content\": \"yo\\n\"}]}", "1:USER=hi;2:ASSISTANT=yo;", NULL},
    {"a  \n  {% if x %}\n  b\n  {%- endif %}\n  c\n", "{\"x\": true}", "a  \n  b  c", NULL},
    {"{%- set ns = namespace(n=0) -%}{% for i in range(5) if i is odd %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ ns.n is divisibleby 2 }}", "{}", "4 True", NULL},
    {"{% macro f(a, b='B') %}[{{ a }}|{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b=3) }}{{ f('x', 'y') }}", "{}", "[1|B][2|3][x|y]", NULL},
    {"{{ t|tojson }}|{{ t|tojson(indent=2) }}|{{ [1, 2.5, none, true, 'é\"\\n'] | tojson }}", "{\"t\": {\"name\": \"f\", \"args\": {\"x\": [1, 2], \"y\": {}}}}", "{\"name\": \"f\", \"args\": {\"x\": [1, 2], \"y\": {}}}|{\n  \"name\": \"f\",\n  \"args\": {\n    \"x\": [\n      1,\n      2\n    ],\n    \"y\": {}\n  }\n}|[1, 2.5, null, true, \"é\\\"\\n\"]", NULL},
    {"{{ messages[1:]|length }} {{ 'abcdef'[::2] }} {{ 'héllo'[1] }} {{ [1,2,3][-1] }} {{ 'a,b,,c'.split(',') }} {{ ' x y '.split() }}", "{\"messages\": [1, 2, 3]}", "2 ace é 3 ['a', 'b', '', 'c'] ['x', 'y']", NULL},
    {"{{ 'Hello'.startswith(('He', 'x')) }} {{ 'x.py'.endswith('.py') }} {{ 'a-b'.replace('-', '+') }} {{ '{}/{name}'.format(1, name='n') }} {{ '%s=%d' % ('k', 3) }}", "{}", "True True a+b 1/n k=3", NULL},
    {"{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 1 / 4 }} {{ 2 ** 8 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 3 * 'ab' }} {{ [1] + [2] }}", "{}", "3 -4 2 0.25 256 0.30000000000000004 1e+20 ababab [1, 2]", NULL},
    {"{{ x is defined }} {{ y is none }} {{ y is not none }} {{ 'k' in d }} {{ 2 in [1,2] }} {{ 'el' in 'hello' }} {{ 1 < 2 <= 2 }}", "{\"y\": null, \"d\": {\"k\": 1}}", "False True False True True True True", NULL},
    {"{{ d|items|list }} {{ d|dictsort }} {{ ['b','A','c']|sort }} {{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }}", "{\"d\": {\"b\": 2, \"a\": 1}, \"ms\": [{\"role\": \"user\", \"content\": \"u1\"}, {\"role\": \"bot\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": \"u2\"}]}", "[('b', 2), ('a', 1)] [('a', 1), ('b', 2)] ['A', 'b', 'c'] u1, u2", NULL},
    {"{{ x|default('none given') }} {{ none|default('d') }} {{ ''|default('e', true) }} {{ [3,1,2]|first }} {{ [3,1,2]|last }} {{ 'ab'|list }}", "{}", "none given None e 3 2 ['a', 'b']", NULL},
    {"{% set x %}in {{ 'block' }}{% endset %}{{ x|length }}:{{ x }} {# comment #}{{ 'yes' if 1 else 'no' }}{{ 'never' if 0 }}", "{}", "8:in block yes", NULL},
    {"{% for i in [1,2,3,4] %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% else %}empty{% endfor %}{% for i in [] %}x{% else %}E{% endfor %}", "{}", "13E", NULL},
    /* precedence and associativity (** is left-associative in jinja2), and the comparison tests */
    {"{{ 2 ** 3 ** 2 }} {{ 10 - 2 - 3 }} {{ 1 + 2 * 3 }} {{ 2 * 3 ~ 4 * 5 }} {{ 7 // 2 * 2 }} {{ -2 ** 2 }} {{ 1 < 2 < 3 }} {{ 1 < 3 > 2 == 2 }} {{ 3 is lt 4 }} {{ 3 is ge 3 }} {{ 'a' is equalto 'a' }} {{ 2 is ne 2 }} {{ 5 is gt 2 }} {{ 1 is le 0 }} {{ [1, 2, 3]|select('>', 1)|list }} {{ [1, 2, 3]|reject('==', 2)|list }}", "{}", "64 5 7 620 6 4 True True True True True False True False [2, 3] [1, 3]", NULL},
    {"{{ 'a' ~ 1 ~ none ~ true }} {{ [1, 'a', none, {'k': (1,)}] }} {{ (1,) }} {{ \"it's\" }} {{ 3.0 }} {{ -0.0 }}", "{}", "a1NoneTrue [1, 'a', None, {'k': (1,)}] (1,) it's 3.0 -0.0", NULL},
    {"{{ 'x'|safe + '<b>' }} {{ '<b>' + 'y'|safe }} {{ '<&>'|e }}", "{}", "x&lt;b&gt; &lt;b&gt;y &lt;&amp;&gt;", NULL},
    {"{{ strftime_now('%Y-%m-%d %H:%M') }} {{ bos_token }}", "{\"bos_token\": \"<s>\"}", "2026-01-15 10:30 <s>", NULL},
    {"{%- for m in messages -%}\n  {%- if loop.first and m.role == 'system' -%}\n    S:{{ m.content }}\n  {% elif m.role == 'user' %}\n    U:{{ m.content }}\n  {%- else -%}\n    A\n  {% endif -%}\n{%- endfor %}\n", "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}", "S:s\n    U:uA\n", NULL},
    {"{{ 'ab\ncd'|indent(2) }}|{{ 'x\n\ny'|indent(2, true) }}|{{ 'x\n\ny'|indent(2, blank=true) }}", "{}", "ab\n  cd|  x\n\n  y|x\n  \n  y", NULL},
    {"{{ m.content is string }} {{ m is mapping }} {{ [1] is sequence }} {{ 1 is number }} {{ 'A'|lower }} {{ d.get('z', 5) }} {{ d.get('k') }}", "{\"m\": {\"content\": \"c\"}, \"d\": {\"k\": \"v\"}}", "True True True True a 5 v", NULL},
    {"{{ x|nosuchfilter }}", "{}", NULL, "no filter named 'nosuchfilter'"}, /* jinja2: No filter named 'nosuchfilter'. */
    {"{% if false %}{{ x|nosuchfilter }}{% endif %}ok", "{}", "ok", NULL},
    {"{% include 'x' %}", "{}", NULL, "{% include %} statement is not supported"}, /* jinja2: no loader for this environment specified */
    {"{{ raise_exception('bad role') }}", "{}", NULL, "bad role"}, /* jinja2: bad role */
    {"{{ x.y }}", "{}", NULL, "'x' is undefined"}, /* jinja2: 'x' is undefined */
    {"{{ (ms|selectattr('a'))|length }}", "{\"ms\": [{\"a\": 1}]}", NULL, "has no len()"}, /* jinja2: object of type 'generator' has no len() */
    {"{% for x in y %}{% endfor %}", "{\"y\": null}", NULL, "not iterable"}, /* jinja2: 'NoneType' object is not iterable */
    {"{{ 1 + 'a' }}", "{}", NULL, "unsupported operand"}, /* jinja2: unsupported operand type(s) for +: 'int' and 'str' */
    {"{% if x %}", "{}", NULL, "{% endif %}"}, /* jinja2: Unexpected end of template. Jinja was looking for the following tags:  */
    {"{% raw %}x{% endraw %}", "{}", NULL, "raw"}, /* jinja2: renders 'x' */
    {"{{ 'x'|title }}", "{}", NULL, "filter 'title' is not supported"}, /* jinja2: renders 'X' */
    {"{% break %}", "{}", NULL, "outside a loop"}, /* jinja2: 'break' outside loop (<template>, line 11) */
    {"{{ 'É'.upper() }}", "{}", NULL, "non-ASCII"}, /* jinja2: renders 'É' */

};

static void test_render_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof render_cases / sizeof *render_cases; i++) {
        const char *src = render_cases[i].src;
        json_error_t je;
        json_t *vars = json_loads(render_cases[i].vars, 0, &je);
        if (!vars)
            fail_msg("case %zu: %s", i, je.text);
        apr_tmpl *t = NULL;
        apr_err err = {0};
        char *got = NULL;
        size_t len = 0;
        int rc = apr_tmpl_parse(&t, src, strlen(src), &err);
        if (!rc)
            rc = apr_tmpl_render(t, vars, 1768473005 /* 2026-01-15 10:30:05 UTC */, &got, &len, &err);
        if (render_cases[i].want) {
            if (rc)
                fail_msg("case %zu (%s): %s", i, src, err.msg);
            if (strcmp(got, render_cases[i].want))
                fail_msg("case %zu (%s):\n  got  '%s'\n  want '%s'", i, src, got, render_cases[i].want);
            assert_int_equal(len, strlen(render_cases[i].want));
        } else {
            if (!rc)
                fail_msg("case %zu (%s): rendered '%s', want an error with '%s'", i, src, got, render_cases[i].err);
            assert_int_equal(rc, APR_E_FORMAT);
            assert_null(got);
            if (!strstr(err.msg, render_cases[i].err))
                fail_msg("case %zu (%s): error '%s' lacks '%s'", i, src, err.msg, render_cases[i].err);
            assert_non_null(strstr(err.msg, "chat template"));
        }
        free(got);
        apr_tmpl_free(t);
        json_decref(vars);
    }
}

/* Errors carry the construct's line and column. */
static void test_error_positions(void **state)
{
    (void)state;
    apr_tmpl *t = NULL;
    apr_err err = {0};
    const char *src = "line one\n{% for x in y %}\n  {{ x | nosuch }}\n{% endfor %}";
    assert_int_equal(apr_tmpl_parse(&t, src, strlen(src), &err), APR_E_FORMAT);
    assert_null(t);
    assert_non_null(strstr(err.msg, "line 3 col 10"));
    src = "ab\n{% macro m() %}{{ undefined_name.attr }}{% endmacro %}{{ m() }}";
    assert_int_equal(apr_tmpl_parse(&t, src, strlen(src), &err), 0);
    char *out = NULL;
    assert_int_equal(apr_tmpl_render(t, NULL, 0, &out, NULL, &err), APR_E_FORMAT);
    assert_null(out);
    assert_non_null(strstr(err.msg, "line 2 col 33"));
    assert_non_null(strstr(err.msg, "'undefined_name' is undefined"));
    apr_tmpl_free(t);
    /* hostile sizes are refused, not rendered */
    src = "{% for i in range(100000000) %}x{% endfor %}";
    assert_int_equal(apr_tmpl_parse(&t, src, strlen(src), &err), 0);
    assert_int_not_equal(apr_tmpl_render(t, NULL, 0, &out, NULL, &err), 0);
    assert_null(out);
    apr_tmpl_free(t);
    src = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}";
    assert_int_equal(apr_tmpl_parse(&t, src, strlen(src), &err), 0);
    assert_int_not_equal(apr_tmpl_render(t, NULL, 0, &out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "MiB"));
    apr_tmpl_free(t);
}

/* Templates apr claims to render: every case must match jinja2 exactly (the
 * families of issue 12 and the fixture's). */
static const char *const claimed[] = {
    "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct", "meta-llama-Llama-3.3-70B-Instruct",
    "Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B", "Qwen-QwQ-32B", "mistralai-Mistral-Nemo-Instruct-2407",
    "Mistral-Small-3.2-24B-Instruct-2506", "google-gemma-2-2b-it", "microsoft-Phi-3.5-mini-instruct", "tinycoder",
    NULL};

static bool is_claimed(const char *name)
{
    for (const char *const *c = claimed; *c; c++)
        if (!strcmp(*c, name))
            return true;
    return false;
}

/* Every template of llama.cpp's models/templates/ and tinycoder's, rendered
 * by apr and by jinja2 (through transformers' render_jinja_template): a
 * template matches when every rendering is byte-identical (or both refuse
 * the conversation); apr may refuse a template it cannot render, but a
 * rendering that differs from jinja2's, or a text where jinja2 raised, fails
 * the test, and so does any refusal of a claimed template. */
static void test_render_peer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(tok, TINY);
    const char *src = tu_require_llama_cpp_src();
    tu_require_python("transformers,jinja2", "transformers jinja2");
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s", tok);
    *strrchr(tiny, '/') = 0;
    const char *out = tu_path(tu_tmpdir("ct-render-peer"), "reference.json");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s' '%s'", src, tiny, out);
    int rc = tu_run_peer("ct-render-peer", "chat_template_render_peer.py", args);
    if (rc != 0)
        fail_msg("chat_template_render_peer.py failed (%d)", rc);
    json_error_t je;
    json_t *doc = json_load_file(out, 0, &je);
    if (!doc)
        fail_msg("%s: %s", out, je.text);
    int64_t now = json_integer_value(json_object_get(doc, "now"));
    const json_t *templates = json_object_get(doc, "templates");
    size_t n_match = 0, n_refused = 0, n_wrong = 0, n_claimed_bad = 0, n_cases = 0, n_texts = 0, i;
    json_t *t;
    json_array_foreach(templates, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *source = json_string_value(json_object_get(t, "source"));
        apr_tmpl *tm = NULL;
        apr_err err = {0};
        bool refused = false, wrong = false;
        char why[1100] = "";
        if (apr_tmpl_parse(&tm, source, strlen(source), &err)) {
            refused = true;
            snprintf(why, sizeof why, "%s", err.msg);
        }
        size_t k;
        json_t *cs;
        json_array_foreach(json_object_get(t, "cases"), k, cs) {
            if (!tm)
                break;
            const char *want = json_string_value(json_object_get(cs, "text"));
            char *got = NULL;
            size_t got_len = 0;
            memset(&err, 0, sizeof err);
            int r = apr_tmpl_render(tm, json_object_get(cs, "vars"), now, &got, &got_len, &err);
            const char *case_name = json_string_value(json_object_get(cs, "name"));
            n_cases++;
            n_texts += want && !r && strlen(want) == got_len && !memcmp(want, got, got_len);
            if (r && want) {
                if (!refused)
                    snprintf(why, sizeof why, "%s: %s", case_name, err.msg);
                refused = true;
            } else if (!r && !want) {
                wrong = true;
                printf("WRONG %s / %s: jinja2 raised (%s), apr rendered %zu bytes\n", name, case_name,
                       json_string_value(json_object_get(cs, "error")), got_len);
            } else if (!r && (strlen(want) != got_len || memcmp(want, got, got_len))) {
                wrong = true;
                size_t at = 0;
                while (at < got_len && want[at] == got[at])
                    at++;
                printf("WRONG %s / %s: differs at byte %zu\n  jinja2: %.120s\n  apr:    %.120s\n", name,
                       case_name, at, want + (at > 20 ? at - 20 : 0), got + (at > 20 ? at - 20 : 0));
            }
            free(got);
        }
        apr_tmpl_free(tm);
        bool claim = is_claimed(name);
        if (wrong)
            n_wrong++;
        else if (refused)
            n_refused++;
        else
            n_match++;
        if (claim && (wrong || refused))
            n_claimed_bad++;
        if (refused && !wrong)
            printf("%s %-50s %s\n", claim ? "FAIL (claimed)" : "refused", name, why);
        else if (!wrong)
            printf("ok      %-50s\n", name);
    }
    printf("chat templates: %zu of %zu render byte-identical to jinja2 (%zu of %zu renderings are identical "
           "texts, the others refused by both), %zu refused by apr, %zu wrong\n",
           n_match, json_array_size(templates), n_texts, n_cases, n_refused, n_wrong);
    json_decref(doc);
    assert_int_equal(n_wrong, 0);
    assert_int_equal(n_claimed_bad, 0);
}

/* apr run --chat / --messages: the rendered prompt, then its ids (the
 * template's special tokens as single tokens, no BOS added). */
static void test_run_chat(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(tok, TINY);
    const char *bin = tu_apr_bin();
    if (!bin)
        fail_msg("APR_BIN is not set");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tok);
    *strrchr(dir, '/') = 0;
    const char *tmp = tu_tmpdir("ct-run");
    const char *out = tu_path(tmp, "out.txt");
    assert_int_equal(tu_system(out, "'%s' run '%s' --system 'Be brief.' --chat 'Hi' --render-only", bin, dir), 0);
    size_t n;
    char *text = tu_read_file(out, &n);
    assert_non_null(text);
    assert_string_equal(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                              "<|im_start|>assistant\n");
    free(text);
    const char *msgs = "[{\"role\": \"user\", \"content\": \"Hello there\"}]";
    const char *mf = tu_path(tmp, "m.json");
    assert_int_equal(tu_write_file(mf, msgs, strlen(msgs)), 0);
    out = tu_path(tmp, "ids.txt");
    assert_int_equal(tu_system(out, "'%s' run '%s' --messages '%s' --tokenize-only", bin, dir, mf), 0);
    text = tu_read_file(out, &n);
    assert_non_null(text);
    /* transformers: apply_chat_template(..., tokenize=True, add_generation_prompt=True) */
    assert_string_equal(text, "2046 483 81 198 39 341 359 547 1235 2047 198 2046 64 427 542 1256 198\n");
    free(text);
    /* no template of that name; a messages file that is not a conversation */
    assert_int_not_equal(tu_system(NULL, "'%s' run '%s' --chat x --template nope --render-only 2>/dev/null", bin, dir), 0);
    assert_int_equal(tu_write_file(mf, "{\"x\": 1}", 8), 0);
    assert_int_not_equal(tu_system(NULL, "'%s' run '%s' --messages '%s' --render-only 2>/dev/null", bin, dir, mf), 0);
    assert_int_not_equal(tu_system(NULL, "'%s' run '%s' --chat x --prompt y 2>/dev/null", bin, dir), 0);
}

/* The prompt ids of apr run --messages against transformers'
 * apply_chat_template(tokenize=True), for each claimed family's template. */
static void test_chat_ids_peer(void **state)
{
    (void)state;
    tu_tinycoder_peer("ct-ids-peer", "chat_ids_peer.py", "transformers", "transformers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_templates_carried),
        cmocka_unit_test(test_template_files),
        cmocka_unit_test(test_render_cases),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_carry_peer),
        cmocka_unit_test(test_render_peer),
        cmocka_unit_test(test_run_chat),
        cmocka_unit_test(test_chat_ids_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
