/* args_sample.h - one option table with a row of every value kind, shared by
 * the parser's unit test (tests/test_args.c) and its fuzz harness
 * (fuzz/fuzz_cli.c), so both check the same rows. Not used by any command. */
#ifndef APR_ARGS_SAMPLE_H
#define APR_ARGS_SAMPLE_H

#include <math.h>

#include "args.h"

typedef struct args_sample_vals {
    bool quiet;
    int tied, count, fmt;
    uint32_t ctx;
    uint64_t seed, bytes;
    double temp;
    float eps;
    const char *name;
    cli_list items;
} args_sample_vals;

static const cli_name args_sample_fmts[] = {{"gguf", 1}, {"apr", 2}, {"safetensors", 3}, {NULL, 0}};

/* The table's initializer, its destinations in *V (an args_sample_vals
 * pointer); V->tied starts at -1 so "given neither way" shows. */
#define ARGS_SAMPLE_OPTS(V)                                                                     \
    {                                                                                           \
        OPT_FLAG("--quiet", "-q", &(V)->quiet, "no summary"),                                   \
        OPT_SET("--tied", NULL, &(V)->tied, 1, "share the embeddings"),                         \
        OPT_SET("--untied", NULL, &(V)->tied, 0, "do not"),                                     \
        OPT_INT("--count", "-n|-c", &(V)->count, -5, 10, "N", "how many\nsecond line"),         \
        OPT_U32("--ctx", NULL, &(V)->ctx, 1, 1u << 20, "N", "context"),                         \
        OPT_U64("--seed", NULL, &(V)->seed, 0, UINT64_MAX, "S", "seed"),                        \
        OPT_SIZE("--split-max-size", NULL, &(V)->bytes, 1, UINT64_MAX, "N[M|G]", "split size"), \
        OPT_DOUBLE("--temp", NULL, &(V)->temp, 0.0, 100.0, false, "T", "temperature"),          \
        OPT_FLOAT("--eps", NULL, &(V)->eps, 0.0, INFINITY, true, "X", "epsilon"),               \
        OPT_ENUM("--to", NULL, &(V)->fmt, args_sample_fmts, "format", .hint = "quantizing is elsewhere"), \
        OPT_STR("--name", NULL, &(V)->name, "NAME", "a name"),                                  \
        OPT_LIST("--item", "-i", &(V)->items, "X", "repeatable"),                               \
        OPT_FLAG("--secret", NULL, &(V)->quiet, NULL),                                          \
    }

#endif
