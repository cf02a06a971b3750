/* main.c - `apr`: convert, quantize, verify and inspect LLM weights. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "formats.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"inspect", cmd_inspect, "show a file's metadata, tensors, types and provenance"},
    {"convert", cmd_convert, "safetensors <-> GGUF <-> APR, blocks preserved, sha256 provenance"},
    {"quantize", cmd_quantize, "F32/F16/BF16 -> Q8_0, Q4_K, Q5_K, Q6_K and llama.cpp mixes"},
    {"imatrix", cmd_imatrix, "importance matrix of a text (llama-imatrix's) for quantize --imatrix"},
    {"verify", cmd_verify, "run source and converted model and report parity"},
    {"run", cmd_run, "greedy generation with the built-in forward pass"},
    {"synth", cmd_synth, "write a deterministic synthetic LLaMA/Qwen2 model (HF safetensors)"},
};

static void usage(FILE *f)
{
    fprintf(f, "apr %s - convert, quantize and verify LLM weights\n\nusage: apr COMMAND [ARGS]\n\n",
            APR_VERSION_STRING);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`apr COMMAND --help` for a command's options.\n");
}

/* What a command printed on stdout (a report, inspect's listing, generated
 * text) reached its file: flushed, and no write of it failed (a full disk,
 * a closed pipe). Otherwise the command's output is incomplete, which must
 * never read as success (nor, for verify, as a verdict): exit 2. */
int apr_stdout_error(int e)
{
    errno = 0;
    const bool flush_failed = fflush(stdout) != 0;
    if (!flush_failed && !ferror(stdout))
        return 0;
    if (e)
        return e;
    return flush_failed && errno ? errno : EIO;
}

static int stdout_check(const char *name, int rc)
{
    const int e = apr_stdout_error(0);
    if (!e || rc >= 2)
        return rc; /* rc >= 2: the command failed already and said why */
    fprintf(stderr, "apr %s: writing standard output: %s\n", name, strerror(e));
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("apr %s\n", APR_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            apr_outfile_set_command(commands[i].name); /* names its temporaries */
            return stdout_check(commands[i].name, commands[i].run(argc - 1, argv + 1));
        }
    fprintf(stderr, "apr: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
