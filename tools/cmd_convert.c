/* cmd_convert.c - `apr convert IN OUT`: safetensors <-> GGUF <-> APR with
 * sha256 provenance (libconvert). Exit 0 on success, 2 on any error (and
 * then nothing is left at OUT). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "convert.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: apr convert IN OUT [options]\n"
            "\n"
            "Converts between HF safetensors (a .safetensors file, a model directory or a\n"
            "model.safetensors.index.json), GGUF (.gguf) and APR v2 (.apr). Tensor blocks are\n"
            "copied, never re-quantized; every output records sha256 provenance.\n"
            "\n"
            "  --to FMT          gguf | apr | safetensors (default: from OUT's extension;\n"
            "                    an existing directory or a path ending in '/': safetensors)\n"
            "  --outtype T       f32 | f16 | bf16 for every 2-D tensor (1-D tensors: f32);\n"
            "                    default: keep the source dtype (quantized -> f32 for safetensors)\n"
            "  --threads N       threads for transforms and hashing (default: all cores)\n"
            "  --shard-mb N      safetensors or APR output: shards of at most N MiB (default: one file)\n"
            "  --split-max-size N[M|G]  GGUF output: llama.cpp split files (OUT-00001-of-0000K.gguf,\n"
            "                    as gguf-split writes them) of at most N MB / GB of tensor data\n"
            "  --split-max-tensors N    GGUF output: split files of at most N tensors\n"
            "  -q, --quiet       no summary line\n");
}

int cli_parse_split_size(const char *cmd, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = s && *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
    uint64_t unit = v && !errno && (end[0] == 'M' || end[0] == 'G') && !end[1] ? (end[0] == 'M' ? 1000000ull
                                                                                                 : 1000000000ull)
                                                                              : 0;
    if (!unit || v > UINT64_MAX / unit) {
        fprintf(stderr, "apr %s: --split-max-size needs a positive size with M or G (e.g. 500M, 2G), got '%s'\n", cmd,
                s ? s : "");
        return -1;
    }
    *out = v * unit;
    return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-') {
        fprintf(stderr, "apr convert: %s needs a non-negative integer\n", opt);
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) {
        fprintf(stderr, "apr convert: %s: '%s' is not an integer in 0..%llu\n", opt, s, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

/* The command line as recorded in the provenance (arguments with spaces quoted). */
static char *join_argv(int argc, char **argv)
{
    size_t n = 16;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) + 3;
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    p += sprintf(p, "apr");
    for (int i = 0; i < argc; i++)
        p += sprintf(p, strpbrk(argv[i], " \t'\"") ? " '%s'" : " %s", argv[i]);
    return s;
}

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

int cmd_convert(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--to")) {
            if (!v || (strcmp(v, "gguf") && strcmp(v, "apr") && strcmp(v, "safetensors"))) {
                fprintf(stderr, "apr convert: --to must be gguf, apr or safetensors\n");
                return 2;
            }
            o.to = !strcmp(v, "gguf") ? APR_FMT_GGUF : !strcmp(v, "apr") ? APR_FMT_APR : APR_FMT_SAFETENSORS;
            i++;
        } else if (!strcmp(a, "--outtype")) {
            int dt = v ? apr_dtype_from_name(v) : -1;
            if (dt != APR_DT_F32 && dt != APR_DT_F16 && dt != APR_DT_BF16) {
                fprintf(stderr, "apr convert: --outtype must be f32, f16 or bf16 (quantizing is `apr quantize`)\n");
                return 2;
            }
            o.outtype = dt;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (parse_u64(a, v, 256, &x))
                return 2;
            o.threads = (int)x;
            i++;
        } else if (!strcmp(a, "--shard-mb")) {
            if (parse_u64(a, v, 1ull << 30, &x))
                return 2;
            o.shard_max_bytes = x << 20;
            i++;
        } else if (!strcmp(a, "--split-max-size")) {
            if (cli_parse_split_size("convert", v, &o.split_max_bytes))
                return 2;
            i++;
        } else if (!strcmp(a, "--split-max-tensors")) {
            if (parse_u64(a, v, UINT32_MAX, &x))
                return 2;
            if (!x) {
                fprintf(stderr, "apr convert: --split-max-tensors needs at least 1\n");
                return 2;
            }
            o.split_max_tensors = x;
            i++;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "apr convert: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            fprintf(stderr, "apr convert: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    if (o.shard_max_bytes && (o.to ? o.to : apr_format_from_path(out)) == APR_FMT_GGUF) {
        fprintf(stderr, "apr convert: --shard-mb is for safetensors and APR outputs (a GGUF splits with "
                        "--split-max-size / --split-max-tensors)\n");
        return 2;
    }
    if (o.split_max_bytes && o.split_max_tensors) {
        fprintf(stderr, "apr convert: --split-max-size and --split-max-tensors are exclusive (as in gguf-split)\n");
        return 2;
    }
    char *cmdline = join_argv(argc, argv);
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
