/* cmd_quantize.c - `apr quantize IN OUT --type T`: the command line of
 * libconvert's apr_quantize_file (llama-quantize's output, byte for byte). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "convert.h"
#include "formats.h"
#include "quant.h"

typedef struct q_opts {
    const char *in, *out, *type, *imatrix, *output_type, *embd_type;
    int to;
    bool pure, allow_requantize, quiet, no_provenance, leave_output, keep_split;
    int threads;
    uint64_t split_max_bytes, split_max_tensors, shard_mb;
    /* repeatable options, in command-line order */
    cli_list tensor_types, kv_overrides, include, exclude;
} q_opts;

static const char usage[] =
    "usage: apr quantize IN OUT --type T [options]\n"
    "\n"
    "  IN                      a GGUF (F32/F16/BF16), or any file apr reads with GGUF tensor names\n"
    "  OUT                     .gguf (default) or .apr (by extension, or --to)\n";

static const cli_name formats[] = {{"gguf", APR_FMT_GGUF}, {"apr", APR_FMT_APR}, {NULL, 0}};

static void print_summary(const q_opts *o, const apr_quantize_stats *st)
{
    const double tq = st->seconds_quant;
    char split_note[48] = "";
    if (st->n_files > 1)
        snprintf(split_note, sizeof split_note, " and %u more splits", st->n_files - 1);
    fprintf(stderr,
            "apr quantize: %s -> %s%s (%s%s, %s)\n"
            "  tensors %llu (%llu converted%s), size %.2f MiB -> %.2f MiB (%.2f bits/weight)\n"
            "  time %.2f s total, %.2f s quantizing: %.1f M weights/s on %d threads (%.2f per thread, %s kernels)\n",
            o->in, st->first_path, split_note, o->type, o->pure ? " pure" : "", st->format == APR_FMT_APR ? "APR" : "GGUF",
            (unsigned long long)st->n_tensors, (unsigned long long)st->n_converted, st->imatrix ? ", with imatrix" : "",
            st->bytes_in / 1048576.0, st->bytes_out / 1048576.0,
            st->weights ? 8.0 * st->bytes_out / (double)st->weights : 0.0, st->seconds, tq,
            tq > 0 ? st->weights / tq / 1e6 : 0.0, st->threads, tq > 0 ? st->weights / tq / 1e6 / st->threads : 0.0,
            apr_quant_simd_name());
    if (st->n_fallback)
        fprintf(stderr, "  %d tensor(s) used a fallback type (rows not a multiple of 256)\n", st->n_fallback);
}

/* Parses argv into o; CLI_OK, or cli_parse's CLI_HELP / CLI_FAIL. On CLI_OK
 * the caller frees o's lists with cli_free(cmd). */
static int parse_args(const cli_cmd *cmd, int argc, char **argv, q_opts *o)
{
    cli_args args;
    const int rc = cli_parse(cmd, argc, argv, &args);
    if (rc)
        return rc;
    o->in = args.pos[0];
    o->out = args.pos[1];
    if (!o->type) {
        fprintf(stderr, "apr quantize: --type is required\n");
        cli_help(stderr, cmd);
    } else if (o->split_max_bytes && o->split_max_tensors) {
        fprintf(stderr, "apr quantize: --split-max-size and --split-max-tensors are exclusive (as in gguf-split)\n");
    } else {
        return CLI_OK;
    }
    cli_free(cmd);
    return CLI_FAIL;
}

int cmd_quantize(int argc, char **argv)
{
    q_opts o = {0};
    char type_help[1024]; /* the mixes apr knows, from libquant's table */
    snprintf(type_help, sizeof type_help, "%s", apr_quant_mix_names());
    const cli_opt opts[] = {
        OPT_STR("--type", NULL, &o.type, "T", type_help),
        OPT_FLAG("--pure", NULL, &o.pure, "T's base type for every quantizable tensor (no per-tensor mix rules)"),
        OPT_STR("--imatrix", NULL, &o.imatrix, "FILE", "llama-imatrix output (legacy .dat or GGUF)"),
        OPT_INT("--threads", NULL, &o.threads, 1, 1024, "N", "worker threads (default: all cores)"),
        OPT_ENUM("--to", NULL, &o.to, formats, "output format regardless of OUT's extension"),
        OPT_FLAG("--allow-requantize", NULL, &o.allow_requantize,
                 "accept already-quantized input (dequantize, then quantize)"),
        OPT_STR("--output-tensor-type", NULL, &o.output_type, "T", "type of output.weight (and of a tied token_embd)"),
        OPT_STR("--token-embedding-type", NULL, &o.embd_type, "T", "type of token_embd.weight"),
        OPT_LIST("--tensor-type", NULL, &o.tensor_types, "PATTERN=T",
                 "tensors whose GGUF name matches the regular expression get T\n"
                 "(repeatable, first match wins; a pattern matching nothing is an error)"),
        OPT_FLAG("--leave-output-tensor", NULL, &o.leave_output, "output.weight keeps its type"),
        OPT_LIST("--override-kv", NULL, &o.kv_overrides, "KEY=TYPE:V",
                 "set a metadata key in the output (TYPE int, float, bool or str; repeatable)"),
        OPT_LIST("--include-weights", NULL, &o.include, "NAME",
                 "use only the imatrix entries whose name contains NAME (repeatable)"),
        OPT_LIST("--exclude-weights", NULL, &o.exclude, "NAME",
                 "drop the imatrix entries whose name contains NAME (repeatable)"),
        OPT_FLAG("--no-provenance", NULL, &o.no_provenance, "do not record the provenance (source and tensor sha256)"),
        OPT_SIZE("--split-max-size", NULL, &o.split_max_bytes, 1, UINT64_MAX, "N[M|G]",
                 "GGUF output: llama.cpp split files (OUT-00001-of-0000K.gguf)\n"
                 "of at most N MB / GB of tensor data, as gguf-split writes them"),
        OPT_U64("--split-max-tensors", NULL, &o.split_max_tensors, 1, UINT32_MAX, "N",
                "GGUF output: split files of at most N tensors"),
        OPT_U64("--shard-mb", NULL, &o.shard_mb, 1, 1ull << 30, "N",
                "APR output: aprender's sharded APR v2 (OUT-00000-of-0000K.apr +\n"
                "OUT.apr.manifest.json) of at most N MiB per shard"),
        OPT_FLAG("--keep-split", NULL, &o.keep_split,
                 "a split GGUF input gives one output split per input split, with the same\n"
                 "tensors, as llama-quantize --keep-split: OUT less .gguf is the prefix\n"
                 "(OUT-00001-of-0000N.gguf; an unsplit input gives OUT-00001-of-00001.gguf)"),
        OPT_FLAG("--quiet", "-q", &o.quiet, "no progress and no summary"),
    };
    const cli_cmd cmd = {.name = "quantize", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 2,
                         .max_pos = 2};
    const int prc = parse_args(&cmd, argc, argv, &o);
    if (prc)
        return cli_exit_status(prc);
    apr_quantize_opts qo;
    apr_quantize_opts_init(&qo);
    qo.type = o.type;
    qo.imatrix = o.imatrix;
    qo.pure = o.pure;
    qo.allow_requantize = o.allow_requantize;
    qo.provenance = !o.no_provenance;
    qo.progress = !o.quiet && isatty(2);
    qo.threads = o.threads;
    qo.to = (apr_format)o.to;
    qo.split_max_bytes = o.split_max_bytes;
    qo.split_max_tensors = o.split_max_tensors;
    qo.keep_split = o.keep_split;
    qo.shard_max_bytes = o.shard_mb << 20;
    qo.output_tensor_type = o.output_type;
    qo.token_embedding_type = o.embd_type;
    qo.leave_output_tensor = o.leave_output;
    qo.tensor_types = o.tensor_types.v;
    qo.n_tensor_types = o.tensor_types.n;
    qo.kv_overrides = o.kv_overrides.v;
    qo.n_kv_overrides = o.kv_overrides.n;
    qo.include_weights = o.include.v;
    qo.n_include_weights = o.include.n;
    qo.exclude_weights = o.exclude.v;
    qo.n_exclude_weights = o.exclude.n;
    char *cmdline = cli_join_argv(argc, argv);
    if (!cmdline) { /* the provenance record would lose the command */
        fprintf(stderr, "apr quantize: out of memory\n");
        cli_free(&cmd);
        return 2;
    }
    qo.command_line = cmdline;
    apr_err err = {0};
    apr_quantize_stats st;
    int rc = apr_quantize_file(o.in, o.out, &qo, &st, &err);
    free(cmdline);
    cli_free(&cmd);
    if (rc) {
        fprintf(stderr, "apr quantize: %s\n", err.msg[0] ? err.msg : "failed");
        return 2;
    }
    if (!o.quiet)
        print_summary(&o, &st);
    return 0;
}
