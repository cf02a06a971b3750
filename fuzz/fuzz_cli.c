/* fuzz_cli.c - libFuzzer harness for the CLI's argument parser (tools/args.c).
 * The input is an argv: words separated by NUL bytes. It is parsed against the
 * sample table with a row of every value kind (tools/args_sample.h); then:
 *   - the result is CLI_OK, CLI_HELP or CLI_FAIL, nothing else;
 *   - on CLI_OK every stored value lies in its row's range or name set, the
 *     positionals are within the command's bounds and point into argv, and a
 *     list holds at most argc values, each inside an argv word;
 *   - on CLI_HELP / CLI_FAIL no list is left allocated;
 *   - the joined command line (the provenance record) splits back, as a POSIX
 *     shell reads it, into exactly the same words. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_sample.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_WORDS 64

typedef args_sample_vals vals;

static FILE *devnull(void)
{
    static FILE *f;
    if (!f && !(f = fopen("/dev/null", "w")))
        abort();
    return f;
}

/* Whether p points into one of the words. */
static bool inside(const char *p, char **words, int n)
{
    for (int i = 0; i < n; i++)
        if (p >= words[i] && p <= words[i] + strlen(words[i]))
            return true;
    return false;
}

/* s ("apr" and shell words) split as sh splits it; -1 when malformed. */
static int shell_split(const char *s, char **out, int max, char *buf)
{
    if (strncmp(s, "apr", 3))
        return -1;
    s += 3;
    int n = 0;
    while (*s) {
        if (*s++ != ' ' || n == max)
            return -1;
        out[n++] = buf;
        while (*s && *s != ' ') {
            if (*s == '\'') {
                const char *end = strchr(s + 1, '\'');
                if (!end)
                    return -1;
                memcpy(buf, s + 1, (size_t)(end - s - 1));
                buf += end - s - 1;
                s = end + 1;
            } else if (*s == '\\') {
                if (!s[1])
                    return -1;
                *buf++ = s[1];
                s += 2;
            } else {
                *buf++ = *s++;
            }
        }
        *buf++ = 0;
    }
    return n;
}

static void check_join(int argc, char **argv)
{
    char *line = cli_join_argv(argc - 1, argv + 1);
    if (!line)
        return;
    char *words[MAX_WORDS];
    char *buf = malloc(strlen(line) + 1);
    if (!buf)
        abort();
    const int n = shell_split(line, words, MAX_WORDS, buf);
    if (n != argc - 1)
        abort();
    for (int i = 0; i < n; i++)
        if (strcmp(words[i], argv[i + 1]))
            abort();
    free(buf);
    free(line);
}

/* A value given is in its range; one not given kept its default (0). */
static void check_values(const cli_cmd *c, const vals *v, const cli_args *a, char **argv, int argc)
{
    if (v->count < -5 || v->count > 10 || v->tied < -1 || v->tied > 1)
        abort();
    if (cli_given(c, a, "--ctx") ? v->ctx < 1 || v->ctx > (1u << 20) : v->ctx != 0)
        abort();
    if (cli_given(c, a, "--split-max-size") ? v->bytes < 1000000 || v->bytes % 1000000 : v->bytes != 0)
        abort();
    if (cli_given(c, a, "--to") ? v->fmt < 1 || v->fmt > 3 : v->fmt != 0)
        abort();
    if (!isfinite(v->temp) || v->temp < 0 || v->temp > 100)
        abort();
    if (cli_given(c, a, "--eps") ? !isfinite(v->eps) || !(v->eps > 0) : v->eps != 0)
        abort();
    if (v->name && !inside(v->name, argv, argc))
        abort();
    if (a->n_pos < 1 || a->n_pos > 3)
        abort();
    for (int i = 0; i < a->n_pos; i++)
        if (!inside(a->pos[i], argv, argc))
            abort();
    if (v->items.n > (size_t)argc || (v->items.n && !v->items.v))
        abort();
    for (size_t i = 0; i < v->items.n; i++)
        if (!inside(v->items.v[i], argv, argc))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = 0;
    char *argv[MAX_WORDS + 2] = {"fuzz"};
    int argc = 1;
    for (char *p = copy; argc <= MAX_WORDS && p <= copy + size; p += strlen(p) + 1)
        argv[argc++] = p;
    argv[argc] = NULL;

    vals v = {.tied = -1};
    vals *pv = &v;
    const cli_opt opts[] = ARGS_SAMPLE_OPTS(pv);
    const cli_cmd c = {.name = "fuzz", .usage = "usage: apr fuzz A [B [C]]\n", .opts = opts, .n_opts = CLI_N(opts),
                       .min_pos = 1, .max_pos = 3, .out = devnull(), .err = devnull()};
    cli_args a;
    const int rc = cli_parse(&c, argc, argv, &a);
    if (rc == CLI_OK) {
        check_values(&c, &v, &a, argv, argc);
        cli_free(&c);
    } else if (rc != CLI_HELP && rc != CLI_FAIL) {
        abort();
    }
    if (v.items.v || v.items.n)
        abort();
    check_join(argc, argv);
    free(copy);
    return 0;
}
