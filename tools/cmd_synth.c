/* cmd_synth.c - `apr synth`: write a deterministic synthetic LLaMA/Qwen2 model
 * as an HF directory (model*.safetensors + config.json + tokenizer files). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "formats.h"

static const char usage[] =
    "usage: apr synth OUTDIR [--arch llama|qwen2|qwen3|gemma2|gemma3|phi3|mistral] [--preset NAME]\n"
    "                 [options]\n"
    "\n"
    "Writes a deterministic synthetic model: HF safetensors (sharded with --shard-mb),\n"
    "config.json, generation_config.json, tokenizer.json, tokenizer_config.json.\n"
    "OUTDIR ending in .safetensors writes that single file (metadata inside it).\n";

/* The shape overrides, applied after the preset: each row's value lands in
 * the config field of the same index (fields, below). */
enum { S_LAYERS, S_HIDDEN, S_HEADS, S_KV_HEADS, S_HEAD_DIM, S_FFN, S_VOCAB, S_CTX, N_SHAPE };
static const char *const shape_opt[N_SHAPE] = {"--layers", "--hidden", "--heads", "--kv-heads",
                                               "--head-dim", "--ffn", "--vocab", "--ctx"};

int cmd_synth(int argc, char **argv)
{
    const char *out, *preset = NULL, *arch = NULL, *dtype = NULL, *name = NULL;
    uint32_t shape[N_SHAPE] = {0};
    uint64_t seed = 0, shard_mb = 0;
    int tied = -1;
    bool quiet = false;
    float theta = 0.0f, eps = 0.0f;
    const cli_opt opts[] = {
        OPT_STR("--preset", NULL, &preset, "NAME",
                "tiny-llama (default for --arch llama), tiny-qwen2 (default for\n"
                "--arch qwen2), llama-7b-layer, qwen2-7b-layer, tiny-qwen3, tiny-gemma2,\n"
                "tiny-gemma3, tiny-phi3, tiny-mistral (GGUF arch llama with a window)"),
        OPT_STR("--arch", NULL, &arch, "A",
                "llama, qwen2, qwen3, gemma2, gemma3, phi3 or mistral (picks the\n"
                "tiny preset when --preset is absent)"),
        OPT_U32(shape_opt[S_LAYERS], NULL, &shape[S_LAYERS], 0, 4096, "N", "decoder layers"),
        OPT_U32(shape_opt[S_HIDDEN], NULL, &shape[S_HIDDEN], 0, 1u << 20, "N", "hidden size"),
        OPT_U32(shape_opt[S_HEADS], NULL, &shape[S_HEADS], 0, 65536, "N", "attention heads"),
        OPT_U32(shape_opt[S_KV_HEADS], NULL, &shape[S_KV_HEADS], 0, 65536, "N", "key/value heads"),
        OPT_U32(shape_opt[S_HEAD_DIM], NULL, &shape[S_HEAD_DIM], 0, 65536, "N",
                "head dimension (default hidden / heads)"),
        OPT_U32(shape_opt[S_FFN], NULL, &shape[S_FFN], 0, 1u << 22, "N", "feed-forward size"),
        OPT_U32(shape_opt[S_VOCAB], NULL, &shape[S_VOCAB], 0, 1u << 22, "N", "vocabulary size"),
        OPT_U32(shape_opt[S_CTX], NULL, &shape[S_CTX], 0, UINT32_MAX, "N", "context length"),
        OPT_SET("--tied", NULL, &tied, 1, "share lm_head with the embeddings"),
        OPT_SET("--untied", NULL, &tied, 0, "a separate lm_head"),
        OPT_STR("--dtype", NULL, &dtype, "T", "f32, f16 or bf16"),
        OPT_U64("--seed", NULL, &seed, 0, UINT64_MAX, "S", "generator seed (default 42)"),
        OPT_FLOAT("--rope-theta", NULL, &theta, 0.0, INFINITY, true, "X", "RoPE base frequency"),
        OPT_FLOAT("--rms-eps", NULL, &eps, 0.0, INFINITY, true, "X", "RMS norm epsilon"),
        OPT_STR("--name", NULL, &name, "NAME", "general.name / _name_or_path"),
        OPT_U64("--shard-mb", NULL, &shard_mb, 0, 1ull << 40, "N", "split into shards of at most N MiB (0: one file)"),
        OPT_FLAG("--quiet", "-q", &quiet, "no summary line"),
    };
    const cli_cmd cmd = {.name = "synth", .usage = usage, .opts = opts, .n_opts = CLI_N(opts), .min_pos = 1,
                         .max_pos = 1};
    cli_args args;
    const int prc = cli_parse(&cmd, argc, argv, &args);
    if (prc)
        return cli_exit_status(prc);
    out = args.pos[0];
    /* which rows were given (a given 0 still overrides the preset) */
    bool given[N_SHAPE];
    for (int k = 0; k < N_SHAPE; k++)
        given[k] = cli_given(&cmd, &args, shape_opt[k]);
    /* a family is known when the library has its tiny preset */
    char tiny[32];
    snprintf(tiny, sizeof tiny, "tiny-%.20s", arch ? arch : "llama");
    bool known = !arch;
    for (const char *const *p = apr_synth_preset_names(); arch && *p; p++)
        known |= !strcmp(tiny, *p);
    if (!known) {
        fprintf(stderr, "apr synth: unknown --arch '%s' (llama, qwen2, qwen3, gemma2, gemma3, phi3, mistral)\n", arch);
        return 2;
    }
    if (!preset)
        preset = tiny;

    apr_synth_config c;
    apr_err err = {0};
    if (apr_synth_preset(&c, preset, &err)) {
        fprintf(stderr, "apr synth: %s\n", err.msg);
        return 2;
    }
    if (arch && strcmp(arch, apr_synth_family(&c)) != 0) {
        fprintf(stderr, "apr synth: --arch %s contradicts --preset %s (%s)\n", arch, preset, apr_synth_family(&c));
        return 2;
    }
    uint32_t *fields[N_SHAPE] = {&c.n_layers, &c.hidden, &c.n_heads, &c.n_kv_heads,
                                 &c.head_dim, &c.ffn,    &c.vocab,   &c.ctx};
    for (int k = 0; k < N_SHAPE; k++)
        if (given[k])
            *fields[k] = shape[k];
    /* Changing hidden or heads without --head-dim keeps head_dim = hidden / heads. */
    if ((given[S_HIDDEN] || given[S_HEADS]) && !given[S_HEAD_DIM]) {
        if (c.n_heads == 0 || c.hidden % c.n_heads) {
            fprintf(stderr, "apr synth: hidden %u is not a multiple of %u heads (give --head-dim)\n", c.hidden,
                    c.n_heads);
            return 2;
        }
        c.head_dim = c.hidden / c.n_heads;
    }
    if (given[S_HEADS] && !given[S_KV_HEADS] && c.n_kv_heads > c.n_heads)
        c.n_kv_heads = c.n_heads;
    if (cli_given(&cmd, &args, "--seed"))
        c.seed = seed;
    if (tied >= 0)
        c.tied = tied;
    if (theta > 0.0f)
        c.rope_theta = theta;
    if (eps > 0.0f)
        c.rms_eps = eps;
    if (name)
        snprintf(c.name, sizeof c.name, "%s", name);
    if (dtype) {
        if (!strcmp(dtype, "f32")) c.dtype = APR_DT_F32;
        else if (!strcmp(dtype, "f16")) c.dtype = APR_DT_F16;
        else if (!strcmp(dtype, "bf16")) c.dtype = APR_DT_BF16;
        else {
            fprintf(stderr, "apr synth: --dtype must be f32, f16 or bf16 (got '%s')\n", dtype);
            return 2;
        }
    }
    if (apr_synth_validate(&c, &err)) {
        fprintf(stderr, "apr synth: %s\n", err.msg);
        return 2;
    }
    apr_write_opts o = {0};
    o.shard_max_bytes = shard_mb << 20;
    o.progress = !quiet;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (apr_synth_write(&c, out, &o, &err)) {
        fprintf(stderr, "apr synth: %s\n", err.msg);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!quiet)
        printf("apr synth: %s %s: %u layers, hidden %u, heads %u/%u (dim %u), ffn %u, vocab %u, %s, %s%s, "
               "seed %llu -> %s (%.2f s)\n",
               preset, c.arch, c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn, c.vocab,
               apr_dtype_name(c.dtype), c.tied ? "tied" : "untied", c.qkv_bias ? ", qkv bias" : "",
               (unsigned long long)c.seed, out,
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 0;
}
