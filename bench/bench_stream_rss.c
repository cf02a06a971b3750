/* bench_stream_rss.c - peak RSS of `apr quantize` and `apr convert` on a
 * synthetic model bigger than the page cache would make cheap, against the
 * streaming bound: the largest tensor's input + its output + 256 MiB.
 *
 *   bench_stream_rss --apr PATH [--dir DIR] [--layers N] [--keep]
 *
 * Writes a LLaMA-7B-shaped BF16 HF model (hidden 4096, ffn 11008, vocab
 * 32000; 20 layers by default: about 8.6 GiB) into DIR with `apr synth`,
 * then runs each command as a child process and reads its peak RSS from
 * wait4's rusage (ru_maxrss: the whole process, every thread). The bound
 * is computed from the model's tensor table: max over tensors of
 * (input bytes + output bytes in the command's output type). The files are
 * removed at the end unless --keep. Not a test: it prints, and exits 1
 * when a run exceeds its bound. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats.h"

static int run(const char *cmd, long *maxrss_kib, double *secs)
{
    double t0 = apr_now_s();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0)
        return -1;
    *secs = apr_now_s() - t0;
    *maxrss_kib = ru.ru_maxrss; /* sh execs the single command: its peak */
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* max over tensors of input + output bytes when each 2-D tensor becomes
 * out_bits per weight (0: same type) */
static uint64_t bound_bytes(const apr_model *m, double out_bits)
{
    uint64_t worst = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        uint64_t ne = 0;
        apr_dims_count(t->ndim, t->dims, &ne);
        uint64_t out = out_bits > 0 && t->ndim == 2 ? (uint64_t)(ne * out_bits / 8) : t->nbytes;
        if (t->nbytes + out > worst)
            worst = t->nbytes + out;
    }
    return worst + (256ull << 20);
}

int main(int argc, char **argv)
{
    const char *apr = getenv("APR_BIN"), *dir = "/tmp/apr-bench-stream";
    int layers = 20, keep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--apr") && i + 1 < argc)
            apr = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else {
            fprintf(stderr, "usage: bench_stream_rss --apr PATH [--dir DIR] [--layers N] [--keep]\n");
            return 2;
        }
    }
    if (!apr || layers < 1) {
        fprintf(stderr, "bench_stream_rss: give --apr PATH (or APR_BIN)\n");
        return 2;
    }
    char cmd[8192], model[4096];
    snprintf(model, sizeof model, "%s/model", dir);
    mkdir(dir, 0755);
    long rss;
    double secs;
    snprintf(cmd, sizeof cmd,
             "'%s' synth '%s' --arch llama --hidden 4096 --heads 32 --kv-heads 32 --head-dim 128 --ffn 11008 "
             "--vocab 32000 --layers %d --dtype bf16 --shard-mb 4096 --quiet",
             apr, model, layers);
    if (run(cmd, &rss, &secs) != 0) {
        fprintf(stderr, "bench_stream_rss: %s failed\n", cmd);
        return 2;
    }
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_model_open(&m, model, NULL, &err)) {
        fprintf(stderr, "bench_stream_rss: %s\n", err.msg);
        return 2;
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total += m->tensors[i].nbytes;
    printf("bench_stream_rss: synthetic BF16 LLaMA, %d layers, %llu tensors, %.2f GiB of weights (synth %.0f s)\n",
           layers, (unsigned long long)m->n_tensors, total / 1073741824.0, secs);
    struct {
        const char *what, *out, *args;
        double out_bits;
    } runs[] = {
        {"quantize Q4_K_M -> GGUF", "q4km.gguf", "quantize '%s' '%s/%s' --type Q4_K_M --threads 2 --quiet", 6.5625},
        {"quantize Q8_0 -> APR", "q8.apr", "quantize '%s' '%s/%s' --type Q8_0 --threads 2 --quiet", 8.5},
        {"convert -> GGUF", "conv.gguf", "convert '%s' '%s/%s' --threads 2", 0},
        {"convert -> APR (fused QKV)", "conv.apr", "convert '%s' '%s/%s' --threads 2", 0},
    };
    int fail = 0;
    printf("  %-28s %10s %12s %12s %8s\n", "command", "seconds", "peak RSS MiB", "bound MiB", "ok");
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        char args[4096];
        snprintf(args, sizeof args, runs[k].args, model, dir, runs[k].out);
        snprintf(cmd, sizeof cmd, "'%s' %s > /dev/null", apr, args);
        int rc = run(cmd, &rss, &secs);
        /* (APR's fused QKV, 3 x 32 MiB of BF16 rows here, stays below the
         * embedding's input + output, the largest tensor) */
        uint64_t bound = bound_bytes(m, runs[k].out_bits);
        bool ok = rc == 0 && (uint64_t)rss * 1024 <= bound;
        printf("  %-28s %10.1f %12ld %12llu %8s%s\n", runs[k].what, secs, rss / 1024,
               (unsigned long long)(bound >> 20), ok ? "yes" : "NO", rc ? "  (command failed)" : "");
        fflush(stdout);
        fail |= !ok;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, runs[k].out);
        unlink(p);
    }
    apr_model_free(m);
    if (!keep) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", model);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_stream_rss: could not remove %s\n", model);
        rmdir(dir);
    }
    return fail;
}
