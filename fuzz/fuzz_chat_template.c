/* fuzz_chat_template.c - libFuzzer harness for the chat-template (Jinja
 * subset) parser and renderer (libtok/jinja.c): the input is a template,
 * rendered with a small conversation. A refusal must carry a message and
 * leave no output; a rendering must be as long as it says.
 * Run: build-fuzz/fuzz/fuzz_chat_template -max_total_time=30 WORKDIR fuzz/corpus/chat_template
 * (libFuzzer adds new inputs to the first directory: keep it out of the tree). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "tok.h"

static json_t *vars;

static void check(int rc, const apr_err *err)
{
    if (rc != 0 && err->msg[0] == 0)
        abort(); /* every refusal says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!vars) {
        vars = json_loads("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                          "{\"role\": \"user\", \"content\": \"Hi \\u00e9\\n\"},"
                          "{\"role\": \"assistant\", \"content\": \"Hello\", \"tool_calls\": [{\"type\": \"function\","
                          "\"function\": {\"name\": \"f\", \"arguments\": {\"x\": [1, 2.5, null, true]}}}]}],"
                          "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}],"
                          "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}",
                          0, NULL);
        if (!vars)
            abort();
    }
    char *src = (char *)fuzz_copy(data, size);
    if (!src)
        return 0;
    apr_tmpl *t = NULL;
    apr_err err = {0};
    int rc = apr_tmpl_parse(&t, src, size, &err);
    check(rc, &err);
    if (rc == 0) {
        char *out = NULL;
        size_t len = 0;
        memset(&err, 0, sizeof err);
        rc = apr_tmpl_render(t, vars, 1768473005, &out, &len, &err);
        check(rc, &err);
        if (rc == 0 && (!out || strlen(out) > len))
            abort();
        if (rc != 0 && out)
            abort();
        free(out);
        apr_tmpl_free(t);
    } else if (t) {
        abort();
    }
    free(src);
    return 0;
}
