/* cmd_convert.c - `apr convert IN OUT`: safetensors <-> GGUF <-> APR with
 * sha256 provenance (libconvert). Exit 0 on success, 2 on any error (and
 * then nothing is left at OUT). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "cli.h"
#include "convert.h"

static uint64_t output_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

static void summary(const char *in, const char *out, const apr_convert_stats *st)
{
    double t = st->t_open + st->t_build + st->t_hash + st->t_write;
    uint64_t file = output_bytes(out);
    char fsz[64] = "";
    if (file)
        snprintf(fsz, sizeof fsz, ", %.1f MiB file", file / 1048576.0);
    printf("converted %s -> %s: %llu tensors (%llu transformed), %.1f MiB of tensor data%s, %.2f s, %.0f MB/s "
           "(build %.2f s, sha256 %.2f s, write %.2f s)\n",
           in, out, (unsigned long long)st->n_tensors, (unsigned long long)st->n_transformed,
           st->bytes_out / 1048576.0, fsz, t, t > 0 ? st->bytes_out / 1e6 / t : 0.0, st->t_build, st->t_hash,
           st->t_write);
}

static const char usage[] =
    "usage: apr convert IN OUT [options]\n"
    "\n"
    "Converts between HF safetensors (a .safetensors file, a model directory or a\n"
    "model.safetensors.index.json), GGUF (.gguf) and APR v2 (.apr). Tensor blocks are\n"
    "copied, never re-quantized; every output records sha256 provenance.\n";

static const cli_name formats[] = {
    {"gguf", APR_FMT_GGUF}, {"apr", APR_FMT_APR}, {"safetensors", APR_FMT_SAFETENSORS}, {NULL, 0}};
static const cli_name outtypes[] = {{"f32", APR_DT_F32}, {"f16", APR_DT_F16}, {"bf16", APR_DT_BF16}, {NULL, 0}};

int cmd_convert(int argc, char **argv)
{
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    int to = o.to, outtype = o.outtype;
    uint64_t shard_mb = 0;
    bool quiet = false;
    const cli_opt opts[] = {
        OPT_ENUM("--to", NULL, &to, formats,
                 "output format (default: from OUT's extension; an existing directory\n"
                 "or a path ending in '/': safetensors)"),
        OPT_ENUM("--outtype", NULL, &outtype, outtypes,
                 "the dtype of every 2-D tensor (1-D tensors: f32); default: keep\n"
                 "the source dtype (quantized -> f32 for safetensors)",
                 .hint = "quantizing is `apr quantize`"),
        OPT_INT("--threads", NULL, &o.threads, 0, 256, "N", "threads for transforms and hashing (default: all cores)"),
        OPT_U64("--shard-mb", NULL, &shard_mb, 0, 1ull << 30, "N",
                "safetensors or APR output: shards of at most N MiB (default: one file)"),
        OPT_SIZE("--split-max-size", NULL, &o.split_max_bytes, 1, UINT64_MAX, "N[M|G]",
                 "GGUF output: llama.cpp split files (OUT-00001-of-0000K.gguf,\n"
                 "as gguf-split writes them) of at most N MB / GB of tensor data"),
        OPT_U64("--split-max-tensors", NULL, &o.split_max_tensors, 1, UINT32_MAX, "N",
                "GGUF output: split files of at most N tensors"),
        OPT_FLAG("--quiet", "-q", &quiet, "no summary line"),
    };
    const cli_cmd cmd = {.name = "convert", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 2,
                         .max_pos = 2};
    cli_args args;
    const int prc = cli_parse(&cmd, argc, argv, &args);
    if (prc)
        return cli_exit_status(prc);
    const char *in = args.pos[0], *out = args.pos[1];
    o.to = (apr_format)to;
    o.outtype = outtype;
    o.shard_max_bytes = shard_mb << 20;
    if (o.shard_max_bytes && (o.to ? o.to : apr_format_from_path(out)) == APR_FMT_GGUF) {
        fprintf(stderr, "apr convert: --shard-mb is for safetensors and APR outputs (a GGUF splits with "
                        "--split-max-size / --split-max-tensors)\n");
        return 2;
    }
    if (o.split_max_bytes && o.split_max_tensors) {
        fprintf(stderr, "apr convert: --split-max-size and --split-max-tensors are exclusive (as in gguf-split)\n");
        return 2;
    }
    char *cmdline = cli_join_argv(argc, argv);
    if (!cmdline) { /* the provenance record would lose the command */
        fprintf(stderr, "apr convert: out of memory\n");
        return 2;
    }
    o.command_line = cmdline;
    o.progress = true; /* drawn only when stderr is a TTY */
    apr_convert_stats st;
    apr_err err = {0};
    int rc = apr_convert_file(in, out, &o, &st, &err);
    free(cmdline);
    if (rc) {
        fprintf(stderr, "apr convert: %s\n", err.msg[0] ? err.msg : "failed");
        return 2;
    }
    if (!quiet)
        summary(in, out, &st);
    return 0;
}
