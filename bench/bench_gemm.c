/* bench_gemm.c - one thread's matmul throughput per weight type: the packed
 * kernels (apr_wpack_gemm) against the per-row dot products they replace
 * (apr_vec_dot_n, four tokens per row decode, as libforward's unpacked path),
 * on one matrix of a 7B-shaped layer. Both give the same bits (test_wpack);
 * this says how much faster the packed path is.
 *
 * usage: bench_gemm [--rows N] [--cols N] [--tokens N] [--reps N] [--types Q4_K,Q6_K,...]
 *   defaults: 256 rows x 3584 columns (a slice of Qwen2-7B's q_proj), 64
 *   tokens (libforward's batch), best of 3, every type with a packed kernel.
 * Prints GFLOP/s (2 * rows * cols * tokens per matmul) of both paths, per
 * CPU second of the thread (not wall time). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats.h"
#include "quant.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
}

static void to_row(apr_dtype t, const float *x, int64_t n, uint8_t *dst)
{
    if (t == APR_DT_F32) {
        memcpy(dst, x, (size_t)n * 4);
    } else if (t == APR_DT_F16 || t == APR_DT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = t == APR_DT_F16 ? apr_f32_to_f16(x[i]) : apr_f32_to_bf16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else {
        apr_quantize_chunk(t, x, dst, 1, n, NULL);
    }
}

/* This thread's CPU seconds: the machine this runs on is shared, and CPU
 * time does not count the slices other processes take. */
static double cpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best CPU seconds of reps runs of BODY. */
#define BEST_OF(reps, best, BODY)                                            \
    do {                                                                     \
        best = 1e30;                                                         \
        for (int r_ = 0; r_ < (reps); r_++) {                                \
            const double t0_ = cpu_now_s();                                  \
            BODY;                                                            \
            const double dt_ = cpu_now_s() - t0_;                            \
            if (dt_ < best)                                                  \
                best = dt_;                                                  \
        }                                                                    \
    } while (0)

static int bench_type(apr_dtype t, int64_t rows, int64_t cols, uint32_t nt, int reps)
{
    const apr_dtype vt = apr_vec_dot_type(t);
    const size_t rb = (size_t)apr_dtype_row_bytes(t, (uint64_t)cols);
    const size_t ab = (size_t)apr_dtype_row_bytes(vt, (uint64_t)cols);
    if (!rb || !ab) {
        printf("%-6s  skipped: %lld columns are not a block multiple\n", apr_dtype_name(t), (long long)cols);
        return 0;
    }
    float *x = malloc((size_t)cols * sizeof *x);
    uint8_t *w = malloc(rb * (size_t)rows), *y = malloc(ab * nt);
    const uint8_t **rp = malloc((size_t)rows * sizeof *rp);
    float *o1 = malloc(sizeof(float) * (size_t)rows * nt), *o2 = malloc(sizeof(float) * (size_t)rows * nt);
    if (!x || !w || !y || !rp || !o1 || !o2) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        return 1;
    }
    uint64_t s = 42;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++)
            x[i] = frand(&s);
        to_row(t, x, cols, w + (size_t)r * rb);
        rp[r] = w + (size_t)r * rb;
    }
    for (uint32_t k = 0; k < nt; k++) {
        for (int64_t i = 0; i < cols; i++)
            x[i] = frand(&s);
        apr_quantize_activation(vt, x, y + (size_t)k * ab, cols);
    }
    apr_wpack p;
    int rc = apr_wpack_init(&p, t, (uint64_t)rows, (uint64_t)cols, rp);
    if (rc) {
        printf("%-6s  no packed kernel here\n", apr_dtype_name(t));
    } else {
        double t_row, t_pack;
        BEST_OF(reps, t_row, {
            for (int64_t r = 0; r < rows; r++)
                for (uint32_t t0 = 0; t0 < nt; t0 += 4) {
                    float d[4];
                    const int g = nt - t0 < 4 ? (int)(nt - t0) : 4;
                    apr_vec_dot_n(t, cols, rp[r], y + (size_t)t0 * ab, ab, g, d);
                    for (int k = 0; k < g; k++)
                        o1[(size_t)(t0 + k) * rows + r] = d[k];
                }
        });
        BEST_OF(reps, t_pack, apr_wpack_gemm(&p, 0, (uint64_t)rows, y, ab, nt, o2, (size_t)rows));
        const double flop = 2.0 * (double)rows * (double)cols * nt;
        const bool same = !memcmp(o1, o2, sizeof(float) * (size_t)rows * nt);
        printf("%-6s  per-row dot %7.1f GFLOP/s  packed (%s) %7.1f GFLOP/s  %.2fx  %s\n", apr_dtype_name(t),
               flop / t_row / 1e9, apr_wpack_kernel_name(), flop / t_pack / 1e9, t_row / t_pack,
               same ? "same bits" : "BITS DIFFER");
        fflush(stdout);
        rc = same ? 0 : 1;
        apr_wpack_free(&p);
    }
    free(x);
    free(w);
    free(y);
    free(rp);
    free(o1);
    free(o2);
    return rc;
}

int main(int argc, char **argv)
{
    int64_t rows = 256, cols = 3584;
    uint32_t nt = 64;
    int reps = 3;
    const char *types = "F32,F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = v ? strtol(v, NULL, 10) : 0;
        if (!strcmp(a, "--types") && v)
            types = v;
        else if (!strcmp(a, "--rows") && n > 0 && n <= 1 << 20)
            rows = n;
        else if (!strcmp(a, "--cols") && n > 0 && n <= 1 << 20)
            cols = n;
        else if (!strcmp(a, "--tokens") && n > 0 && n <= 4096)
            nt = (uint32_t)n;
        else if (!strcmp(a, "--reps") && n > 0 && n <= 100)
            reps = (int)n;
        else {
            fprintf(stderr, "usage: bench_gemm [--rows N] [--cols N] [--tokens N] [--reps N] [--types T1,T2,..]\n");
            return 2;
        }
        i++;
    }
    printf("one thread, %lld x %lld weights, %u tokens, best of %d\n", (long long)rows, (long long)cols, nt, reps);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", types);
    int ret = 0;
    for (char *save = NULL, *ty = strtok_r(buf, ",", &save); ty; ty = strtok_r(NULL, ",", &save)) {
        const int t = apr_dtype_from_name(ty);
        if (t < 0 || (int)apr_vec_dot_type((apr_dtype)t) < 0) {
            fprintf(stderr, "bench_gemm: %s is not a matmul weight type\n", ty);
            return 2;
        }
        ret |= bench_type((apr_dtype)t, rows, cols, nt, reps);
    }
    return ret;
}
