/* cmd_synth.c - `apr synth`: write a deterministic synthetic LLaMA/Qwen2 model
 * as an HF directory (model*.safetensors + config.json + tokenizer files). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "formats.h"

static void synth_usage(FILE *f)
{
    fprintf(f,
            "usage: apr synth OUTDIR [--arch llama|qwen2|qwen3|gemma2|phi3] [--preset NAME] [options]\n"
            "\n"
            "Writes a deterministic synthetic model: HF safetensors (sharded with --shard-mb),\n"
            "config.json, generation_config.json, tokenizer.json, tokenizer_config.json.\n"
            "OUTDIR ending in .safetensors writes that single file (metadata inside it).\n"
            "\n"
            "  --preset NAME    tiny-llama (default for --arch llama), tiny-qwen2 (default for\n"
            "                   --arch qwen2), llama-7b-layer, qwen2-7b-layer, tiny-qwen3, tiny-gemma2,\n"
            "                   tiny-phi3\n"
            "  --arch A         llama, qwen2, qwen3, gemma2 or phi3 (picks the tiny preset when\n"
            "                   --preset is absent)\n"
            "  --layers N --hidden N --heads N --kv-heads N --head-dim N --ffn N --vocab N --ctx N\n"
            "  --tied | --untied   share lm_head with the embeddings or not\n"
            "  --dtype T        f32, f16 or bf16\n"
            "  --seed S         generator seed (default 42)\n"
            "  --rope-theta X --rms-eps X\n"
            "  --name NAME      general.name / _name_or_path\n"
            "  --shard-mb N     split into shards of at most N MiB (0: one file)\n"
            "  -q, --quiet      no summary line\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') {
        fprintf(stderr, "apr synth: %s needs a non-negative integer\n", opt);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max) {
        fprintf(stderr, "apr synth: %s: '%s' is not an integer in 0..%llu\n", opt, s, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_f32(const char *opt, const char *s, float *out)
{
    char *end;
    if (!s || !*s) {
        fprintf(stderr, "apr synth: %s needs a number\n", opt);
        return -1;
    }
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || !(v > 0.0f)) {
        fprintf(stderr, "apr synth: %s: '%s' is not a positive number\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    const char *out = NULL, *preset = NULL, *arch = NULL;
    /* Overrides are applied after the preset. */
    struct { const char *opt; uint64_t v; bool set; uint64_t max; } u[] = {
        {"--layers", 0, false, 4096}, {"--hidden", 0, false, 1u << 20}, {"--heads", 0, false, 65536},
        {"--kv-heads", 0, false, 65536}, {"--head-dim", 0, false, 65536}, {"--ffn", 0, false, 1u << 22},
        {"--vocab", 0, false, 1u << 22}, {"--ctx", 0, false, UINT32_MAX}, {"--seed", 0, false, UINT64_MAX},
        {"--shard-mb", 0, false, 1ull << 40},
    };
    enum { N_U = sizeof u / sizeof *u };
    int tied = -1, quiet = 0;
    const char *dtype = NULL, *name = NULL;
    float theta = 0.0f, eps = 0.0f;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            synth_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--tied")) { tied = 1; continue; }
        if (!strcmp(a, "--untied")) { tied = 0; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { quiet = 1; continue; }
        bool found = false;
        for (int k = 0; k < N_U && !found; k++) {
            if (strcmp(a, u[k].opt) != 0)
                continue;
            if (parse_u64(a, val, u[k].max, &u[k].v))
                return 2;
            u[k].set = found = true;
            i++;
        }
        if (found)
            continue;
        if (!strcmp(a, "--preset") || !strcmp(a, "--arch") || !strcmp(a, "--dtype") || !strcmp(a, "--name") ||
            !strcmp(a, "--rope-theta") || !strcmp(a, "--rms-eps")) {
            if (!val) {
                fprintf(stderr, "apr synth: %s needs a value\n", a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--preset")) preset = val;
            else if (!strcmp(a, "--arch")) arch = val;
            else if (!strcmp(a, "--dtype")) dtype = val;
            else if (!strcmp(a, "--name")) name = val;
            else if (!strcmp(a, "--rope-theta") && parse_f32(a, val, &theta)) return 2;
            else if (!strcmp(a, "--rms-eps") && parse_f32(a, val, &eps)) return 2;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "apr synth: unknown option '%s' (see apr synth --help)\n", a);
            return 2;
        }
        if (out) {
            fprintf(stderr, "apr synth: more than one output path ('%s', '%s')\n", out, a);
            return 2;
        }
        out = a;
    }
    if (!out) {
        fprintf(stderr, "apr synth: missing OUTDIR\n");
        synth_usage(stderr);
        return 2;
    }
    static const char *const archs[] = {"llama", "qwen2", "qwen3", "gemma2", "phi3"};
    bool known = !arch;
    for (size_t i = 0; arch && i < sizeof archs / sizeof *archs; i++)
        known |= !strcmp(arch, archs[i]);
    if (!known) {
        fprintf(stderr, "apr synth: unknown --arch '%s' (llama, qwen2, qwen3, gemma2, phi3)\n", arch);
        return 2;
    }
    char tiny[32];
    snprintf(tiny, sizeof tiny, "tiny-%s", arch ? arch : "llama");
    if (!preset)
        preset = tiny;

    apr_synth_config c;
    apr_err err = {0};
    if (apr_synth_preset(&c, preset, &err)) {
        fprintf(stderr, "apr synth: %s\n", err.msg);
        return 2;
    }
    if (arch && strcmp(arch, c.arch) != 0) {
        fprintf(stderr, "apr synth: --arch %s contradicts --preset %s (%s)\n", arch, preset, c.arch);
        return 2;
    }
    uint32_t *fields[] = {&c.n_layers, &c.hidden, &c.n_heads, &c.n_kv_heads, &c.head_dim, &c.ffn, &c.vocab, &c.ctx};
    for (int k = 0; k < 8; k++)
        if (u[k].set)
            *fields[k] = (uint32_t)u[k].v;
    /* Changing hidden or heads without --head-dim keeps head_dim = hidden / heads. */
    if ((u[1].set || u[2].set) && !u[4].set) {
        if (c.n_heads == 0 || c.hidden % c.n_heads) {
            fprintf(stderr, "apr synth: hidden %u is not a multiple of %u heads (give --head-dim)\n", c.hidden,
                    c.n_heads);
            return 2;
        }
        c.head_dim = c.hidden / c.n_heads;
    }
    if (u[2].set && !u[3].set && c.n_kv_heads > c.n_heads)
        c.n_kv_heads = c.n_heads;
    if (u[8].set)
        c.seed = u[8].v;
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
    o.shard_max_bytes = u[9].v << 20;
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
