/* cmd_quantize.c - `apr quantize IN OUT --type T`: the command line of
 * libconvert's apr_quantize_file (llama-quantize's output, byte for byte). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "convert.h"
#include "formats.h"
#include "quant.h"

typedef struct q_opts {
    const char *in, *out, *type, *imatrix, *to, *output_type, *embd_type;
    bool pure, allow_requantize, quiet, no_provenance, leave_output, keep_split;
    int threads;
    uint64_t split_max_bytes, split_max_tensors, shard_max_bytes;
    /* repeatable options, in command-line order (argc bounds their count) */
    const char **tensor_types, **kv_overrides, **include, **exclude;
    size_t n_tensor_types, n_kv_overrides, n_include, n_exclude;
} q_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: apr quantize IN OUT --type T [options]\n"
            "\n"
            "  IN                 a GGUF (F32/F16/BF16), or any file apr reads with GGUF tensor names\n"
            "  OUT                .gguf (default) or .apr (by extension, or --to)\n"
            "  --type T           %s\n"
            "  --pure             T's base type for every quantizable tensor (no per-tensor mix rules)\n"
            "  --imatrix FILE     llama-imatrix output (legacy .dat or GGUF)\n"
            "  --threads N        worker threads (default: all cores)\n"
            "  --to gguf|apr      output format regardless of OUT's extension\n"
            "  --allow-requantize accept already-quantized input (dequantize, then quantize)\n"
            "  --output-tensor-type T     type of output.weight (and of a tied token_embd)\n"
            "  --token-embedding-type T   type of token_embd.weight\n"
            "  --tensor-type PATTERN=T    tensors whose GGUF name matches the regular expression get T\n"
            "                             (repeatable, first match wins; a pattern matching nothing is an error)\n"
            "  --leave-output-tensor      output.weight keeps its type\n"
            "  --override-kv KEY=TYPE:V   set a metadata key in the output (TYPE int, float, bool or str; repeatable)\n"
            "  --include-weights NAME     use only the imatrix entries whose name contains NAME (repeatable)\n"
            "  --exclude-weights NAME     drop the imatrix entries whose name contains NAME (repeatable)\n"
            "  --no-provenance    do not record the provenance (source and tensor sha256)\n"
            "  --split-max-size N[M|G]  GGUF output: llama.cpp split files (OUT-00001-of-0000K.gguf)\n"
            "                     of at most N MB / GB of tensor data, as gguf-split writes them\n"
            "  --split-max-tensors N    GGUF output: split files of at most N tensors\n"
            "  --shard-mb N       APR output: aprender's sharded APR v2 (OUT-00000-of-0000K.apr + OUT.apr.manifest.json)\n"
            "                     of at most N MiB per shard\n"
            "  --keep-split       a split GGUF input gives one output split per input split, with the same\n"
            "                     tensors, as llama-quantize --keep-split: OUT less .gguf is the prefix\n"
            "                     (OUT-00001-of-0000N.gguf; an unsplit input gives OUT-00001-of-00001.gguf)\n"
            "  -q, --quiet        no progress and no summary\n",
            apr_quant_mix_names());
}

/* The value of option a (argv[i + 1]), appended to list; -1 when missing. */
static int push_value(int argc, char **argv, int *i, const char ***list, size_t *n)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "apr quantize: %s needs a value\n", argv[*i]);
        return -1;
    }
    (*list)[(*n)++] = argv[++*i];
    return 0;
}

/* The lists parse_args allocates (every exit of cmd_quantize frees them). */
static void q_opts_free(q_opts *o)
{
    free(o->tensor_types);
    free(o->kv_overrides);
    free(o->include);
    free(o->exclude);
}

static int parse_args(int argc, char **argv, q_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tensor_types = calloc((size_t)argc, sizeof *o->tensor_types);
    o->kv_overrides = calloc((size_t)argc, sizeof *o->kv_overrides);
    o->include = calloc((size_t)argc, sizeof *o->include);
    o->exclude = calloc((size_t)argc, sizeof *o->exclude);
    if (!o->tensor_types || !o->kv_overrides || !o->include || !o->exclude) {
        fprintf(stderr, "apr quantize: out of memory\n");
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (!strcmp(a, "--tensor-type")) {
            if (push_value(argc, argv, &i, &o->tensor_types, &o->n_tensor_types))
                return -1;
            continue;
        } else if (!strcmp(a, "--override-kv")) {
            if (push_value(argc, argv, &i, &o->kv_overrides, &o->n_kv_overrides))
                return -1;
            continue;
        } else if (!strcmp(a, "--include-weights")) {
            if (push_value(argc, argv, &i, &o->include, &o->n_include))
                return -1;
            continue;
        } else if (!strcmp(a, "--exclude-weights")) {
            if (push_value(argc, argv, &i, &o->exclude, &o->n_exclude))
                return -1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--pure")) {
            o->pure = true;
        } else if (!strcmp(a, "--allow-requantize")) {
            o->allow_requantize = true;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = true;
        } else if (!strcmp(a, "--no-provenance")) {
            o->no_provenance = true;
        } else if (!strcmp(a, "--keep-split")) {
            o->keep_split = true;
        } else if (!strcmp(a, "--leave-output-tensor")) {
            o->leave_output = true;
        } else if (!strcmp(a, "--output-tensor-type")) {
            val = &o->output_type;
        } else if (!strcmp(a, "--token-embedding-type")) {
            val = &o->embd_type;
        } else if (!strcmp(a, "--type")) {
            val = &o->type;
        } else if (!strcmp(a, "--imatrix")) {
            val = &o->imatrix;
        } else if (!strcmp(a, "--to")) {
            val = &o->to;
        } else if (!strcmp(a, "--split-max-size")) {
            if (cli_parse_split_size("quantize", i + 1 < argc ? argv[i + 1] : NULL, &o->split_max_bytes))
                return -1;
            i++;
        } else if (!strcmp(a, "--shard-mb")) {
            char *end;
            unsigned long long n = i + 1 < argc ? strtoull(argv[i + 1], &end, 10) : 0;
            if (!n || *end || n > (1ull << 30)) {
                fprintf(stderr, "apr quantize: --shard-mb needs a size in MiB, 1..%llu\n", 1ull << 30);
                return -1;
            }
            o->shard_max_bytes = n << 20;
            i++;
        } else if (!strcmp(a, "--split-max-tensors")) {
            char *end;
            unsigned long long n = i + 1 < argc ? strtoull(argv[i + 1], &end, 10) : 0;
            if (!n || *end || n > UINT32_MAX) {
                fprintf(stderr, "apr quantize: --split-max-tensors needs a count >= 1\n");
                return -1;
            }
            o->split_max_tensors = n;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "apr quantize: --threads needs a value\n");
                return -1;
            }
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 1024) {
                fprintf(stderr, "apr quantize: --threads %s: expected 1..1024\n", argv[i]);
                return -1;
            }
            o->threads = (int)n;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "apr quantize: unknown option %s\n", a);
            return -1;
        } else if (!o->in) {
            o->in = a;
        } else if (!o->out) {
            o->out = a;
        } else {
            fprintf(stderr, "apr quantize: unexpected argument %s\n", a);
            return -1;
        }
        if (val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "apr quantize: %s needs a value\n", a);
                return -1;
            }
            *val = argv[++i];
        }
    }
    if (!o->in || !o->out || !o->type) {
        usage(stderr);
        return -1;
    }
    if (o->split_max_bytes && o->split_max_tensors) {
        fprintf(stderr, "apr quantize: --split-max-size and --split-max-tensors are exclusive (as in gguf-split)\n");
        return -1;
    }
    return 0;
}

static char *join_cmdline(int argc, char **argv)
{
    size_t n = 16;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) + 1;
    char *s = malloc(n);
    if (!s)
        return NULL;
    strcpy(s, "apr");
    for (int i = 0; i < argc; i++) {
        strcat(s, " ");
        strcat(s, argv[i]);
    }
    return s;
}

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

int cmd_quantize(int argc, char **argv)
{
    q_opts o;
    if (parse_args(argc, argv, &o)) {
        q_opts_free(&o);
        return 2;
    }
    apr_quantize_opts qo;
    apr_quantize_opts_init(&qo);
    qo.type = o.type;
    qo.imatrix = o.imatrix;
    qo.pure = o.pure;
    qo.allow_requantize = o.allow_requantize;
    qo.provenance = !o.no_provenance;
    qo.progress = !o.quiet && isatty(2);
    qo.threads = o.threads;
    qo.split_max_bytes = o.split_max_bytes;
    qo.split_max_tensors = o.split_max_tensors;
    qo.keep_split = o.keep_split;
    qo.shard_max_bytes = o.shard_max_bytes;
    qo.output_tensor_type = o.output_type;
    qo.token_embedding_type = o.embd_type;
    qo.leave_output_tensor = o.leave_output;
    qo.tensor_types = o.tensor_types;
    qo.n_tensor_types = o.n_tensor_types;
    qo.kv_overrides = o.kv_overrides;
    qo.n_kv_overrides = o.n_kv_overrides;
    qo.include_weights = o.include;
    qo.n_include_weights = o.n_include;
    qo.exclude_weights = o.exclude;
    qo.n_exclude_weights = o.n_exclude;
    apr_err err = {0};
    if (o.to) {
        if (!strcasecmp(o.to, "gguf"))
            qo.to = APR_FMT_GGUF;
        else if (!strcasecmp(o.to, "apr"))
            qo.to = APR_FMT_APR;
        else {
            fprintf(stderr, "apr quantize: --to %s: expected gguf or apr\n", o.to);
            q_opts_free(&o);
            return 2;
        }
    }
    char *cmdline = join_cmdline(argc, argv);
    if (!cmdline) { /* the provenance record would lose the command */
        fprintf(stderr, "apr quantize: out of memory\n");
        q_opts_free(&o);
        return 2;
    }
    qo.command_line = cmdline;
    apr_quantize_stats st;
    int rc = apr_quantize_file(o.in, o.out, &qo, &st, &err);
    free(cmdline);
    q_opts_free(&o);
    if (rc) {
        fprintf(stderr, "apr quantize: %s\n", err.msg[0] ? err.msg : "failed");
        return 2;
    }
    if (!o.quiet)
        print_summary(&o, &st);
    return 0;
}
