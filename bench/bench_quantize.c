/* bench_quantize.c - quantization speed: apr's fast kernels against the
 * plain scalar reference port (apr_quantize_chunk_ref, the code llama.cpp
 * runs), same thread count, same input, identical bytes required.
 *
 * Input: one LLaMA-7B layer of F16 weights (q, k, v, o 4096x4096; gate, up
 * 11008x4096; down 4096x11008), optionally the 32000x4096 output matrix,
 * quantized with the Q4_K_M rules of layer 0 of 32 (attn_v and ffn_down are
 * Q6_K there, the rest Q4_K, output Q6_K). Then per-type throughput on one
 * 4096x4096 matrix (Q8_0, Q4_K, Q5_K, Q6_K), per thread and with all threads.
 *
 * --llama: also write the layer as an F16 GGUF (--bf16: BF16) and time
 * llama.cpp's quantizer (llama-cpp-python's llama_model_quantize) and
 * `apr quantize` on it with the same thread count for every file type apr
 * makes (--mixes limits the list), printing each wall-time ratio apr /
 * llama.cpp (the target is <= 0.5) and whether the files are identical
 * (needs python3 + llama_cpp; APR_BIN or --apr).
 *
 * --imatrix: everything above once more with a deterministic importance
 * matrix (per tensor, one positive value per input column): the fast-vs-
 * reference layer and per-type figures (Q4_K, Q5_K, Q6_K, Q4_0, Q5_0, Q8_0),
 * and with --llama the same values given to llama.cpp (llama_model_imatrix_
 * data, as tests/peer/llama_quantize_peer.py does) and to `apr quantize
 * --imatrix` as a llama-imatrix legacy .dat file; output bytes must match.
 *
 * --e2e-only skips the in-process kernel figures; --reps N times each end-to-
 * end run N times and keeps the best (the machine is shared).
 *
 * usage: bench_quantize [--threads N] [--output] [--llama] [--imatrix] [--apr PATH] [--quick]
 *                       [--e2e-only] [--reps N]
 * exit 0; 1 when the fast and reference bytes differ. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "formats.h"
#include "quant.h"

typedef struct mat {
    const char *name;
    int64_t rows, cols;
    apr_dtype type;
    float *x;
    float *imat; /* cols importance values, or NULL */
} mat;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* F16-representable weights, ~N(0, 1/cols) with a few outliers (values as an
 * F16 checkpoint would hold them: the bench quantizes f16 -> f32 -> type). */
static float *make_weights(int64_t rows, int64_t cols, uint64_t seed)
{
    float *x = malloc((size_t)(rows * cols) * sizeof(float));
    if (!x)
        return NULL;
    const float sc = 1.0f / 64.0f;
    for (int64_t i = 0; i < rows * cols; i++) {
        uint64_t u = mix64(seed * 0x9E3779B97F4A7C15ull + (uint64_t)i);
        float z = (float)((int)(u & 0xFFFF) + (int)(u >> 16 & 0xFFFF) + (int)(u >> 32 & 0xFFFF) + (int)(u >> 48) -
                          131070) * 2.6428997e-05f;
        float v = z * sc;
        if ((u >> 7) % 997 == 0)
            v *= 10.0f;
        x[i] = apr_f16_to_f32(apr_f32_to_f16(v));
    }
    return x;
}

typedef struct result {
    double t_fast, t_ref;
    bool same;
} result;

static result run_set(mat *m, int n, int threads, int reps)
{
    result r = {1e30, 1e30, true};
    uint8_t **a = calloc((size_t)n, sizeof *a), **b = calloc((size_t)n, sizeof *b);
    size_t *sz = calloc((size_t)n, sizeof *sz);
    for (int i = 0; i < n; i++) {
        sz[i] = apr_dtype_row_bytes(m[i].type, (uint64_t)m[i].cols) * (size_t)m[i].rows;
        a[i] = malloc(sz[i]);
        b[i] = malloc(sz[i]);
    }
    for (int rep = 0; rep < reps; rep++) {
        double t0 = apr_now_s();
        for (int i = 0; i < n; i++)
            apr_quantize_chunk_mt_opt(m[i].type, m[i].x, a[i], m[i].rows, m[i].cols, m[i].imat, threads, false);
        double t1 = apr_now_s();
        for (int i = 0; i < n; i++)
            apr_quantize_chunk_mt_opt(m[i].type, m[i].x, b[i], m[i].rows, m[i].cols, m[i].imat, threads, true);
        double t2 = apr_now_s();
        if (t1 - t0 < r.t_fast)
            r.t_fast = t1 - t0;
        if (t2 - t1 < r.t_ref)
            r.t_ref = t2 - t1;
    }
    for (int i = 0; i < n; i++) {
        if (memcmp(a[i], b[i], sz[i]) != 0) {
            fprintf(stderr, "MISMATCH: %s (%s): fast and reference bytes differ\n", m[i].name,
                    apr_dtype_name(m[i].type));
            r.same = false;
        }
        free(a[i]);
        free(b[i]);
    }
    free(a);
    free(b);
    free(sz);
    return r;
}

static void gguf_name(char *nm, size_t sz, const char *name)
{
    snprintf(nm, sz, "%s%s.weight", strcmp(name, "output") ? "blk.0." : "", name);
}

/* Writes the layer as an F16 GGUF llama.cpp can load. */
static int write_gguf(const char *path, mat *m, int n, bool bf16)
{
    apr_model *g = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    apr_model_set_kv_str(g, "general.architecture", "llama");
    apr_model_set_kv_u32(g, "llama.block_count", 1);
    apr_model_set_kv_u32(g, "llama.context_length", 4096);
    apr_model_set_kv_u32(g, "llama.embedding_length", 4096);
    apr_model_set_kv_u32(g, "llama.feed_forward_length", 11008);
    apr_model_set_kv_u32(g, "llama.attention.head_count", 32);
    apr_model_set_kv_u32(g, "llama.attention.head_count_kv", 32);
    apr_model_set_kv_u32(g, "llama.rope.dimension_count", 128);
    apr_model_set_kv_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    apr_model_set_kv_u32(g, "general.file_type", bf16 ? 32 : 1);
    for (int i = 0; i < n; i++) {
        uint64_t cnt = (uint64_t)(m[i].rows * m[i].cols);
        uint16_t *h = malloc(cnt * 2);
        for (uint64_t k = 0; k < cnt; k++)
            h[k] = bf16 ? apr_f32_to_bf16(m[i].x[k]) : apr_f32_to_f16(m[i].x[k]);
        uint64_t dims[2] = {(uint64_t)m[i].rows, (uint64_t)m[i].cols};
        char nm[64];
        gguf_name(nm, sizeof nm, m[i].name);
        if (apr_model_add_tensor(g, nm, bf16 ? APR_DT_BF16 : APR_DT_F16, 2, dims, h, cnt * 2, true, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return -1;
        }
    }
    float *norm = malloc(4096 * 4);
    for (int i = 0; i < 4096; i++)
        norm[i] = 1.0f;
    uint64_t d1[1] = {4096};
    apr_model_add_tensor(g, "blk.0.attn_norm.weight", APR_DT_F32, 1, d1, norm, 4096 * 4, false, &err);
    apr_model_add_tensor(g, "blk.0.ffn_norm.weight", APR_DT_F32, 1, d1, norm, 4096 * 4, false, &err);
    apr_model_add_tensor(g, "output_norm.weight", APR_DT_F32, 1, d1, norm, 4096 * 4, false, &err);
    int rc = apr_gguf_write(g, path, NULL, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    apr_model_free(g);
    free(norm);
    return rc;
}

static double time_cmd(const char *cmd)
{
    double t0 = apr_now_s();
    int rc = system(cmd);
    double t = apr_now_s() - t0;
    return rc == 0 ? t : -1;
}

/* The importance values of a tensor with `cols` input columns as a legacy
 * .dat stores them (raw sums, ncall 3) and as llama-quantize loads them
 * (raw / ncall, in f32) - the scheme of the peer test's imatrix_for(). */
#define IMAT_NCALL 3
static float imat_raw(uint64_t seed, int64_t c)
{
    uint64_t u = mix64(seed * 0xD1B54A32D192ED03ull + (uint64_t)c);
    return (float)(u >> 40) * (1.0f / 16777216.0f) * 5.0f + 0.01f;
}

static float *make_imatrix(int64_t cols, uint64_t seed)
{
    float *v = malloc((size_t)cols * sizeof(float));
    if (v)
        for (int64_t c = 0; c < cols; c++)
            v[c] = imat_raw(seed, c) / IMAT_NCALL;
    return v;
}

static int write_imatrix_dat(const char *path, mat *m, int n, const uint64_t *seeds)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int32_t ne = n;
    fwrite(&ne, 4, 1, f);
    for (int i = 0; i < n; i++) {
        char nm[64];
        gguf_name(nm, sizeof nm, m[i].name);
        int32_t len = (int32_t)strlen(nm), ncall = IMAT_NCALL, nval = (int32_t)m[i].cols;
        fwrite(&len, 4, 1, f);
        fwrite(nm, 1, (size_t)len, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        for (int64_t c = 0; c < m[i].cols; c++) {
            float v = imat_raw(seeds[i], c);
            fwrite(&v, 4, 1, f);
        }
    }
    int32_t tail[2] = {10, 5};
    fwrite(tail, 4, 2, f);
    fwrite("bench", 1, 5, f);
    return fclose(f) ? -1 : 0;
}

/* llama.cpp's side: loads the .dat like llama-quantize (values / ncall in
 * f32), hands them over as llama_model_imatrix_data the way the peer test
 * does, with the quantize.imatrix.* KV overrides the llama-quantize tool adds
 * (apr writes them too), and prints the time of the llama_model_quantize
 * call alone. */
static const char llama_py[] =
    "import ctypes, struct, sys, time\n"
    "import numpy as np\n"
    "import llama_cpp as L\n"
    "src, dst, dat, nthr, ftype = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])\n"
    "im = {}\n"
    "if dat != '-':\n"
    "    b = open(dat, 'rb').read(); off = 4\n"
    "    for _ in range(struct.unpack_from('<i', b, 0)[0]):\n"
    "        ln, = struct.unpack_from('<i', b, off); off += 4\n"
    "        name = b[off:off + ln].decode(); off += ln\n"
    "        ncall, nval = struct.unpack_from('<ii', b, off); off += 8\n"
    "        v = np.frombuffer(b, dtype=np.float32, count=nval, offset=off); off += 4 * nval\n"
    "        im[name] = (v / np.float32(ncall)).astype(np.float32) if ncall > 0 else v.copy()\n"
    "    chunks, = struct.unpack_from('<i', b, off); off += 4\n"
    "    ln, = struct.unpack_from('<i', b, off); dataset = b[off + 4:off + 4 + ln].decode()\n"
    "p = L.llama_model_quantize_default_params(); p.ftype = ftype; p.nthread = nthr\n"
    "keep = []\n"
    "if im:\n"
    "    kvs = [('quantize.imatrix.file', dat), ('quantize.imatrix.dataset', dataset),\n"
    "           ('quantize.imatrix.entries_count', len(im)), ('quantize.imatrix.chunks_count', chunks)]\n"
    "    ov = (L.llama_model_kv_override * (len(kvs) + 1))(); keep.append(ov)\n"
    "    for i, (k, v) in enumerate(kvs):\n"
    "        ov[i].key = k.encode()\n"
    "        if isinstance(v, str):\n"
    "            ov[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_STR; ov[i].value.val_str = v.encode()[:127]\n"
    "        else:\n"
    "            ov[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_INT; ov[i].value.val_i64 = v\n"
    "    ov[len(kvs)].key = b''\n"
    "    p.kv_overrides = ctypes.cast(ov, ctypes.POINTER(L.llama_model_kv_override))\n"
    "    arr = (L.llama_model_imatrix_data * (len(im) + 1))()\n"
    "    for i, (name, vals) in enumerate(im.items()):\n"
    "        buf = (ctypes.c_float * len(vals))(*vals.tolist()); keep.append(buf)\n"
    "        arr[i].name = name.encode()\n"
    "        arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float)); arr[i].size = len(vals)\n"
    "    arr[len(im)].name = None; keep.append(arr)\n"
    "    p.imatrix = ctypes.cast(arr, ctypes.POINTER(L.llama_model_imatrix_data))\n"
    "t0 = time.perf_counter()\n"
    "rc = L.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))\n"
    "print('%.6f' % (time.perf_counter() - t0))\n"
    "sys.exit(rc)\n";

/* Runs the script; returns the in-call seconds (-1 on failure), *wall the
 * whole process (interpreter start-up and imatrix loading included). */
static double run_llama(const char *dir, const char *in, const char *out, const char *dat, int threads, int ftype,
                        double *wall)
{
    char py[256], cmd[2048];
    snprintf(py, sizeof py, "%s/llama_quantize.py", dir);
    FILE *f = fopen(py, "w");
    if (!f || fputs(llama_py, f) < 0 || fclose(f))
        return -1;
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' '%s' '%s' %d %d 2>/dev/null", py, in, out, dat ? dat : "-", threads,
             ftype);
    double t0 = apr_now_s();
    FILE *p = popen(cmd, "r");
    double t = -1;
    if (p) {
        char line[128] = "";
        /* llama.cpp's own progress goes to stdout too: the time is the last line */
        while (fgets(line, sizeof line, p)) {
            char *end;
            double v = strtod(line, &end);
            if (end != line && (*end == '\n' || !*end))
                t = v;
        }
        if (pclose(p) != 0)
            t = -1;
    }
    *wall = apr_now_s() - t0;
    unlink(py);
    return t;
}

/* llama-quantize's file types apr makes (llama.h's llama_ftype numbers);
 * Q2_K_S only with an imatrix, as llama.cpp requires. */
typedef struct e2e_mix {
    const char *name;
    int ftype;
    bool imatrix_only;
} e2e_mix;

static const e2e_mix k_e2e_mixes[] = {
    {"Q8_0", 7, false},    {"Q4_0", 2, false},    {"Q4_1", 3, false},    {"Q5_0", 8, false},
    {"Q5_1", 9, false},    {"Q2_K", 10, false},   {"Q2_K_S", 21, true},  {"Q3_K_S", 11, false},
    {"Q3_K_M", 12, false}, {"Q3_K_L", 13, false}, {"Q4_K_S", 14, false}, {"Q4_K_M", 15, false},
    {"Q5_K_S", 16, false}, {"Q5_K_M", 17, false}, {"Q6_K", 18, false},   {"IQ4_NL", 25, false},
    {"IQ4_XS", 30, false},
};

/* One mix end to end: llama.cpp's call and apr's whole process, best of
 * reps; returns the ratio (or -1) and prints one row. */
static double e2e_one(const char *dir, const char *in, const char *dat, const e2e_mix *mx, uint64_t nw, int threads,
                      const char *apr_bin, int reps)
{
    char out1[160], out2[160], cmd[2048];
    snprintf(out1, sizeof out1, "%s/llama-%s.gguf", dir, mx->name);
    snprintf(out2, sizeof out2, "%s/apr-%s.gguf", dir, mx->name);
    double tl = -1, ta = -1;
    for (int rep = 0; rep < reps; rep++) {
        double w = -1, t = run_llama(dir, in, out1, dat, threads, mx->ftype, &w);
        if (t >= 0 && (tl < 0 || t < tl))
            tl = t;
        if (!apr_bin)
            continue;
        snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' --type %s --threads %d --quiet --no-provenance%s%s", apr_bin,
                 in, out2, mx->name, threads, dat ? " --imatrix " : "", dat ? dat : "");
        t = time_cmd(cmd);
        if (t >= 0 && (ta < 0 || t < ta))
            ta = t;
    }
    double ratio = tl > 0 && ta >= 0 ? ta / tl : -1;
    const char *same = "-";
    if (ratio >= 0) {
        snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", out1, out2);
        same = system(cmd) == 0 ? "identical" : "DIFFER";
    }
    if (ratio >= 0)
        printf("  %-7s %9.3f s %9.3f s %8.1f M/s %7.2f   %s\n", mx->name, tl, ta, nw / ta / 1e6, ratio, same);
    else
        printf("  %-7s %9s   %9s   (llama.cpp %s, apr %s)\n", mx->name, "-", "-", tl >= 0 ? "ran" : "failed",
               ta >= 0 ? "ran" : apr_bin ? "failed" : "not given");
    unlink(out1);
    unlink(out2);
    return ratio;
}

/* Every mix end to end on an F16 (or BF16) GGUF of the layer: llama.cpp's
 * llama_model_quantize call alone against apr's whole process (start-up,
 * reading, writing included), same thread count, output bytes compared. */
static void end_to_end(mat *layer, int nl, uint64_t nw, int threads, const char *apr_bin, bool imatrix,
                       const uint64_t *seeds, int reps, bool bf16, const char *only)
{
    char dir[] = "/tmp/apr-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return;
    }
    char in[128], dat[128];
    snprintf(in, sizeof in, "%s/layer-%s.gguf", dir, bf16 ? "bf16" : "f16");
    snprintf(dat, sizeof dat, "%s/layer.imatrix.dat", dir);
    if (write_gguf(in, layer, nl, bf16) == 0 && (!imatrix || write_imatrix_dat(dat, layer, nl, seeds) == 0)) {
        printf("\nend to end on a %s GGUF of the layer%s, %d threads, best of %d\n"
               "(llama.cpp: the llama_model_quantize call; apr: the whole `apr quantize` process):\n",
               bf16 ? "BF16" : "F16", imatrix ? ", with an imatrix" : "", threads, reps);
        printf("  %-7s %11s %11s %12s %7s   %s\n", "mix", "llama.cpp", "apr", "apr", "ratio", "output");
        double worst = 0;
        int n = 0, over = 0;
        for (size_t k = 0; k < sizeof k_e2e_mixes / sizeof *k_e2e_mixes; k++) {
            const e2e_mix *mx = &k_e2e_mixes[k];
            if (mx->imatrix_only && !imatrix)
                continue;
            if (only && !strstr(only, mx->name))
                continue;
            double r = e2e_one(dir, in, imatrix ? dat : NULL, mx, nw, threads, apr_bin, reps);
            if (r >= 0) {
                n++;
                over += r > 0.5;
                worst = r > worst ? r : worst;
            }
        }
        if (n)
            printf("  worst ratio %.2f; %d of %d mixes above the 0.5 target\n", worst, over, n);
    }
    unlink(dat);
    unlink(in);
    rmdir(dir);
}

/* The layer fast vs reference, then per type on one matrix. */
static bool kernel_figures(mat *layer, int nl, uint64_t nw, int threads, bool with_output, bool quick, bool imatrix)
{
    const char *tag = imatrix ? ", with an imatrix" : "";
    bool ok = true;
    result r = run_set(layer, nl, threads, 1);
    ok &= r.same;
    printf("\nQ4_K_M layer (%.1f M weights%s)%s, %d threads:\n", nw / 1e6, with_output ? " incl. output" : "", tag,
           threads);
    printf("  apr fast kernels   %8.3f s  %8.1f M weights/s  (%.1f per thread)\n", r.t_fast, nw / r.t_fast / 1e6,
           nw / r.t_fast / 1e6 / threads);
    printf("  scalar reference   %8.3f s  %8.1f M weights/s  (%.1f per thread)\n", r.t_ref, nw / r.t_ref / 1e6,
           nw / r.t_ref / 1e6 / threads);
    printf("  speed-up %.2fx, bytes %s\n", r.t_ref / r.t_fast, r.same ? "identical" : "DIFFER");

    const int64_t H = 4096;
    printf("\nper type%s, one %lldx%lld matrix (M weights/s):\n", tag, (long long)H, (long long)(quick ? 1024 : H));
    printf("  %-5s %12s %12s %12s %12s %8s\n", "type", "fast 1 thr", "ref 1 thr", "fast all", "ref all", "ratio");
    const apr_dtype plain[] = {APR_DT_Q8_0, APR_DT_Q4_0, APR_DT_Q4_1, APR_DT_Q5_0, APR_DT_Q5_1, APR_DT_Q2_K,
                               APR_DT_Q3_K, APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_IQ4_NL, APR_DT_IQ4_XS};
    const apr_dtype imat[] = {APR_DT_Q4_K, APR_DT_Q5_K, APR_DT_Q6_K, APR_DT_Q4_0, APR_DT_Q5_0, APR_DT_Q8_0};
    const apr_dtype *types = imatrix ? imat : plain;
    const size_t nt = imatrix ? sizeof imat / sizeof imat[0] : sizeof plain / sizeof plain[0];
    for (size_t k = 0; k < nt; k++) {
        mat one = {"attn_q", H, quick ? 1024 : H, types[k], layer[0].x, imatrix ? layer[0].imat : NULL};
        const double w = (double)one.rows * one.cols;
        const int reps = types[k] == APR_DT_Q8_0 || (!imatrix && types[k] == APR_DT_Q4_0) ? 3 : 1;
        result r1 = run_set(&one, 1, 1, reps);
        result rn = run_set(&one, 1, threads, reps);
        ok &= r1.same && rn.same;
        printf("  %-5s %12.1f %12.1f %12.1f %12.1f %7.2fx%s\n", apr_dtype_name(types[k]), w / r1.t_fast / 1e6,
               w / r1.t_ref / 1e6, w / rn.t_fast / 1e6, w / rn.t_ref / 1e6, rn.t_ref / rn.t_fast,
               r1.same && rn.same ? "" : "  BYTES DIFFER");
    }
    return ok;
}

static const char usage[] =
    "usage: bench_quantize [--threads N] [--output] [--llama] [--imatrix] [--apr PATH] [--quick]\n"
    "                      [--e2e-only] [--reps N] [--bf16] [--mixes Q8_0,Q4_K_M,...]\n";

int main(int argc, char **argv)
{
    int threads = apr_quant_default_threads();
    bool with_output = false, llama = false, quick = false, imatrix = false, kernels = true, bf16 = false;
    int reps = 1;
    const char *only = NULL;
    const char *apr_bin = getenv("APR_BIN");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--output"))
            with_output = true;
        else if (!strcmp(argv[i], "--llama"))
            llama = true;
        else if (!strcmp(argv[i], "--imatrix"))
            imatrix = true;
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--e2e-only"))
            kernels = false;
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = true;
        else if (!strcmp(argv[i], "--mixes") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--apr") && i + 1 < argc)
            apr_bin = argv[++i];
        else if (!strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;
    if (reps < 1)
        reps = 1;
    printf("bench_quantize: %d thread(s), kernels: %s\n", threads, apr_quant_simd_name());

    const int64_t H = 4096, F = quick ? 2816 : 11008;
    mat layer[8] = {
        {"attn_q", H, H, APR_DT_Q4_K, NULL, NULL},      {"attn_k", H, H, APR_DT_Q4_K, NULL, NULL},
        {"attn_v", H, H, APR_DT_Q6_K, NULL, NULL},      {"attn_output", H, H, APR_DT_Q4_K, NULL, NULL},
        {"ffn_gate", F, H, APR_DT_Q4_K, NULL, NULL},    {"ffn_up", F, H, APR_DT_Q4_K, NULL, NULL},
        {"ffn_down", H, F, APR_DT_Q6_K, NULL, NULL},    {"output", 32000, H, APR_DT_Q6_K, NULL, NULL},
    };
    const int nl = with_output ? 8 : 7;
    uint64_t nw = 0, seeds[8];
    float *imats[8] = {0};
    for (int i = 0; i < nl; i++) {
        seeds[i] = (uint64_t)i + 101;
        if (!(layer[i].x = make_weights(layer[i].rows, layer[i].cols, (uint64_t)i + 1)) ||
            (imatrix && !(imats[i] = make_imatrix(layer[i].cols, seeds[i])))) {
            fprintf(stderr, "out of memory\n");
            return 2;
        }
        nw += (uint64_t)(layer[i].rows * layer[i].cols);
    }
    bool ok = !kernels || kernel_figures(layer, nl, nw, threads, with_output, quick, false);
    if (llama)
        end_to_end(layer, nl, nw, threads, apr_bin, false, seeds, reps, bf16, only);
    if (imatrix) {
        for (int i = 0; i < nl; i++)
            layer[i].imat = imats[i];
        if (kernels)
            ok &= kernel_figures(layer, nl, nw, threads, with_output, quick, true);
        if (llama)
            end_to_end(layer, nl, nw, threads, apr_bin, true, seeds, reps, bf16, only);
    }
    for (int i = 0; i < nl; i++) {
        free(layer[i].x);
        free(imats[i]);
    }
    printf("\n%s\n", ok ? "bytes: fast == reference everywhere" : "FAIL: fast and reference bytes differ");
    return ok ? 0 : 1;
}
