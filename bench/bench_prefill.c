/* bench_prefill.c - CPU prefill and decode throughput of libforward
 * (tokens/s) for several weight types, and the ratio to llama.cpp on the
 * same GGUF and thread count when the llama_cpp Python binding is importable
 * (measured in the same run).
 *
 * usage: bench_prefill [MODEL] [--threads N] [--tokens N] [--reps N] [--decode N] [--no-llama]
 *                      [--types F16,BF16,Q8_0,Q6_K,Q4_K_M]
 *                      [--layers N --hidden N --ffn N --heads N --kv-heads N --vocab N]
 *   --types  llama-quantize type names (default F16,BF16,Q8_0,Q6_K,Q4_K_M);
 *            "as-is" keeps MODEL's types.
 *   --decode tokens generated one at a time after the prefill (default 16):
 *            decode tokens/s, the rate of `apr run` once the prompt is in.
 *   MODEL  a llama/qwen2 GGUF / APR / safetensors file. Without it, a synthetic
 *          LLaMA model (apr_synth_model; default 4 layers, hidden 1024, ffn 2816,
 *          16 heads, vocab 8192: every row a multiple of 256 so Q4_K applies).
 * Each type is made in process with libquant's llama-quantize mix and
 * written as a GGUF file in a temporary directory for llama.cpp. Prefill = one eval of N tokens from
 * an empty cache, logits of the last token only (what llama-bench's pp does).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forward.h"
#include "quant.h"

typedef struct bench_opts {
    const char *model;
    int threads;
    uint32_t tokens, reps, decode;
    bool llama;
    const char *types;
    apr_synth_config syn;
} bench_opts;

/* GGUF names for the synthetic model's HF names (llama.cpp needs them). */
static const char *gguf_name(const char *hf, char *buf, size_t cap)
{
    static const char *const map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},   {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},   {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"}};
    if (!strcmp(hf, "model.embed_tokens.weight"))
        return "token_embd.weight";
    if (!strcmp(hf, "model.norm.weight"))
        return "output_norm.weight";
    if (!strcmp(hf, "lm_head.weight"))
        return "output.weight";
    unsigned l;
    int off = 0;
    if (sscanf(hf, "model.layers.%u.%n", &l, &off) == 1 && off > 0)
        for (size_t i = 0; i < sizeof map / sizeof *map; i++)
            if (!strcmp(hf + off, map[i][0])) {
                snprintf(buf, cap, "blk.%u.%s", l, map[i][1]);
                return buf;
            }
    return hf;
}

static int cmp_tensor_names(const void *a, const void *b)
{
    return apr_quant_tensor_cmp(((const apr_tensor *)a)->name, ((const apr_tensor *)b)->name);
}

/* A GGUF-named copy of m; quantized with llama-quantize's mix when mix != NULL.
 * The copy owns its buffers. (Q/K rows stay in the source's order: the
 * random weights make no difference to speed.) */
static int make_variant(const apr_model *m, const char *mix, int threads, apr_model **out, apr_err *err)
{
    apr_model *v = apr_model_new(APR_FMT_GGUF);
    if (!v)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < m->n_kvs; i++)
        if (apr_model_set_kv(v, &m->kvs[i]))
            return apr_err_set(err, APR_E_NOMEM, "out of memory");
    /* renamed, in llama-quantize's order */
    apr_tensor *ts = calloc(m->n_tensors, sizeof *ts);
    char (*names)[96] = calloc(m->n_tensors, sizeof *names);
    if (!ts || !names)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        char tmp[96];
        ts[i] = m->tensors[i];
        snprintf(names[i], sizeof names[i], "%s", gguf_name(m->tensors[i].name, tmp, sizeof tmp));
        ts[i].name = names[i];
    }
    qsort(ts, m->n_tensors, sizeof *ts, cmp_tensor_names);
    apr_quant_mix qm;
    if (mix) {
        apr_quant_mix_model mm = {.arch = m->cfg.arch, .n_layer = m->cfg.n_layers, .n_head = m->cfg.n_heads,
                                  .n_head_kv = m->cfg.n_kv_heads};
        int rc = apr_quant_mix_init(&qm, mix, false, &mm, err);
        if (rc)
            return rc;
        for (uint64_t i = 0; i < m->n_tensors; i++)
            apr_quant_mix_scan(&qm, ts[i].name);
    }
    int rc = 0;
    for (uint64_t i = 0; i < m->n_tensors && !rc; i++) {
        const apr_tensor *t = &ts[i];
        apr_dtype dt = t->dtype;
        if (mix && (rc = apr_quant_mix_type(&qm, t->name, t->ndim, t->dims, t->dtype, &dt, err)))
            break;
        uint64_t rows = t->ndim == 2 ? t->dims[0] : 1, cols = t->dims[t->ndim - 1];
        uint64_t nbytes = rows * apr_dtype_row_bytes(dt, cols);
        uint8_t *buf = malloc(nbytes ? nbytes : 1);
        if (!buf) {
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory (%s)", t->name);
            break;
        }
        if (dt == t->dtype) {
            memcpy(buf, t->data, nbytes);
        } else {
            float *f = malloc(rows * cols * sizeof *f);
            if (!f) {
                free(buf);
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory (%s)", t->name);
                break;
            }
            const uint64_t src_rb = apr_dtype_row_bytes(t->dtype, cols);
            for (uint64_t r = 0; r < rows; r++)
                apr_to_f32_row(t->dtype, t->data + r * src_rb, f + r * cols, (int64_t)cols);
            if (apr_quantize_chunk_mt(dt, f, buf, (int64_t)rows, (int64_t)cols, NULL, threads) != nbytes)
                rc = apr_err_set(err, APR_E_UNSUPPORTED, "quantizing %s to %s failed", t->name, apr_dtype_name(dt));
            free(f);
        }
        if (!rc)
            rc = apr_model_add_tensor(v, t->name, dt, t->ndim, t->dims, buf, nbytes, true, err);
        else
            free(buf);
    }
    if (!rc && mix)
        rc = apr_model_set_kv_u32(v, "general.file_type", (uint32_t)qm.ftype) ||
                     apr_model_set_kv_u32(v, "general.quantization_version", 2)
                 ? apr_err_set(err, APR_E_NOMEM, "out of memory")
                 : 0;
    free(ts);
    free(names);
    if (!rc)
        rc = apr_model_derive(v, err);
    if (rc) {
        apr_model_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* Best and median tokens/s of `reps` prefills. */
static int bench_apr(const apr_model *m, const bench_opts *o, double *best, double *median, double *decode,
                     apr_err *err)
{
    apr_fwd *f = NULL;
    apr_fwd_opts fo = {.n_threads = o->threads, .device = APR_DEV_CPU, .max_ctx = o->tokens + o->decode};
    int rc = apr_fwd_load(&f, m, &fo, err);
    if (rc)
        return rc;
    const uint32_t V = apr_fwd_config(f)->vocab;
    int32_t *ids = malloc(o->tokens * sizeof *ids);
    float *lg = malloc(V * sizeof *lg);
    double *tps = calloc(o->reps + 1, sizeof *tps);
    if (!ids || !lg || !tps) {
        apr_fwd_free(f);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    uint64_t s = 12345;
    for (uint32_t i = 0; i < o->tokens; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % V);
    }
    for (uint32_t r = 0; r <= o->reps && !rc; r++) { /* rep 0 warms up */
        apr_fwd_reset(f);
        const double t0 = apr_now_s();
        rc = apr_fwd_eval_last(f, ids, o->tokens, lg, NULL, err);
        tps[r] = o->tokens / (apr_now_s() - t0);
    }
    if (!rc) {
        double *v = tps + 1;
        for (uint32_t i = 0; i < o->reps; i++) /* sort (small n) */
            for (uint32_t j = i + 1; j < o->reps; j++)
                if (v[j] > v[i]) {
                    double x = v[i];
                    v[i] = v[j];
                    v[j] = x;
                }
        *best = v[0];
        *median = v[o->reps / 2];
    }
    /* decode: one token per eval after the last prefill */
    *decode = 0;
    const double t0 = apr_now_s();
    for (uint32_t i = 0; i < o->decode && !rc; i++)
        rc = apr_fwd_eval_last(f, &ids[i % o->tokens], 1, lg, NULL, err);
    if (!rc && o->decode)
        *decode = o->decode / (apr_now_s() - t0);
    free(ids);
    free(lg);
    free(tps);
    apr_fwd_free(f);
    return rc;
}

/* llama.cpp's prefill (and decode) tokens/s on a GGUF through
 * llama-cpp-python; <= 0 if unavailable. */
static double bench_llama(const char *gguf, const bench_opts *o, double *decode)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "python3 - '%s' %d %u %u %u 2>/dev/null <<'EOF'\n"
             "import sys, time\n"
             "import llama_cpp\n"
             "path, th, n, reps, nd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])\n"
             "m = llama_cpp.Llama(path, n_ctx=n + nd + 8, n_batch=n, n_ubatch=n, n_threads=th, n_threads_batch=th,\n"
             "                    verbose=False)\n"
             "V = m.n_vocab(); s = 12345; ids = []\n"
             "for i in range(n):\n"
             "    s = (s * 6364136223846793005 + 1442695040888963407) %% (1 << 64); ids.append((s >> 33) %% V)\n"
             "best = 0.0\n"
             "for r in range(reps + 1):\n"
             "    m.reset(); t0 = time.perf_counter(); m.eval(ids); dt = time.perf_counter() - t0\n"
             "    if r: best = max(best, n / dt)\n"
             "t0 = time.perf_counter()\n"
             "for i in range(nd): m.eval([ids[i %% n]])\n"
             "dec = nd / (time.perf_counter() - t0) if nd else 0.0\n"
             "print(best, dec)\n"
             "EOF",
             gguf, o->threads, o->tokens, o->reps, o->decode);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1.0;
    double v = -1.0;
    *decode = 0;
    if (fscanf(p, "%lf %lf", &v, decode) != 2)
        v = -1.0;
    if (pclose(p) != 0)
        return -1.0;
    return v;
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > (1ul << 24))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o = {.threads = 0, .tokens = 128, .reps = 3, .decode = 16, .llama = true,
                    .types = "F16,BF16,Q8_0,Q6_K,Q4_K_M"};
    apr_err err = {0};
    if (apr_synth_preset(&o.syn, "tiny-llama", &err)) {
        fprintf(stderr, "bench_prefill: %s\n", err.msg);
        return 2;
    }
    o.syn.n_layers = 4;
    o.syn.hidden = 1024;
    o.syn.ffn = 2816;
    o.syn.n_heads = 16;
    o.syn.n_kv_heads = 16;
    o.syn.head_dim = 64;
    o.syn.vocab = 8192;
    o.syn.ctx = 2048;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint32_t *dst = NULL, th;
        if (!strcmp(a, "--no-llama")) {
            o.llama = false;
            continue;
        }
        if (a[0] != '-') {
            o.model = a;
            continue;
        }
        if (!strcmp(a, "--threads")) {
            if (!v || parse_u32(v, &th) || th > 256)
                goto bad;
            o.threads = (int)th;
            i++;
            continue;
        }
        if (!strcmp(a, "--types") && v) {
            o.types = v;
            i++;
            continue;
        }
        if (!strcmp(a, "--decode")) {
            if (!v || (strcmp(v, "0") && parse_u32(v, &o.decode)))
                goto bad;
            if (!strcmp(v, "0"))
                o.decode = 0;
            i++;
            continue;
        }
        if (!strcmp(a, "--tokens"))
            dst = &o.tokens;
        else if (!strcmp(a, "--reps"))
            dst = &o.reps;
        else if (!strcmp(a, "--layers"))
            dst = &o.syn.n_layers;
        else if (!strcmp(a, "--hidden"))
            dst = &o.syn.hidden;
        else if (!strcmp(a, "--ffn"))
            dst = &o.syn.ffn;
        else if (!strcmp(a, "--heads"))
            dst = &o.syn.n_heads;
        else if (!strcmp(a, "--kv-heads"))
            dst = &o.syn.n_kv_heads;
        else if (!strcmp(a, "--vocab"))
            dst = &o.syn.vocab;
        if (!dst || !v || parse_u32(v, dst))
            goto bad;
        i++;
        continue;
    bad:
        fprintf(stderr, "usage: bench_prefill [MODEL] [--threads N] [--tokens N] [--reps N] [--decode N] [--no-llama] "
                        "[--types T1,T2,..] "
                        "[--layers N --hidden N --ffn N --heads N --kv-heads N --vocab N]\n");
        return 2;
    }
    if (o.threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = nc > 0 ? (int)nc : 1;
    }
    o.syn.head_dim = o.syn.hidden / o.syn.n_heads;

    apr_model *src = NULL;
    if (o.model) {
        if (apr_model_open(&src, o.model, NULL, &err)) {
            fprintf(stderr, "bench_prefill: %s\n", err.msg);
            return 2;
        }
    } else if (apr_synth_model(&src, &o.syn, &err)) {
        fprintf(stderr, "bench_prefill: synth: %s\n", err.msg);
        return 2;
    }
    if (!src->has_cfg) {
        fprintf(stderr, "bench_prefill: %s has no llama/qwen2 config\n", o.model ? o.model : "model");
        return 2;
    }
    const apr_arch_config *c = &src->cfg;
    printf("model: %s  (%s, %u layers, hidden %u, ffn %u, heads %u/%u, vocab %u)\n", o.model ? o.model : "synthetic",
           c->arch, c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->vocab);
    printf("prefill: %u tokens, %d threads, best of %u (after a warm-up run); decode: %u tokens after it\n",
           o.tokens, o.threads, o.reps, o.decode);

    char dir[] = "/tmp/apr-bench-prefill-XXXXXX";
    const bool have_dir = mkdtemp(dir) != NULL;
    bool have_llama = o.llama && system("python3 -c 'import llama_cpp' >/dev/null 2>&1") == 0;
    if (o.llama && !have_llama)
        printf("llama.cpp: the llama_cpp Python binding is not importable: no ratio\n");

    int ret = 0;
    char types[256];
    snprintf(types, sizeof types, "%s", o.types);
    for (char *save = NULL, *ty = strtok_r(types, ",", &save); ty; ty = strtok_r(NULL, ",", &save)) {
        const bool as_is = !strcmp(ty, "as-is");
        apr_model *vm = NULL;
        if (make_variant(src, as_is ? NULL : ty, o.threads, &vm, &err)) {
            printf("%-7s  skipped: %s\n", ty, err.msg);
            continue;
        }
        double best = 0, med = 0, dec = 0;
        if (bench_apr(vm, &o, &best, &med, &dec, &err)) {
            printf("%-7s  apr failed: %s\n", ty, err.msg);
            apr_model_free(vm);
            ret = 1;
            continue;
        }
        printf("%-7s  prefill apr %8.1f tok/s (median %.1f)", ty, best, med);
        double ll = 0, ll_dec = 0;
        bool have_ll = false;
        if (have_llama && have_dir) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s.gguf", dir, ty);
            apr_write_opts wo = {0};
            if (apr_gguf_write(vm, path, &wo, &err) == 0) {
                ll = bench_llama(path, &o, &ll_dec);
                have_ll = ll > 0;
                if (have_ll)
                    printf("  llama.cpp %8.1f tok/s  ratio %.3f", ll, best / ll);
                else
                    printf("  llama.cpp: failed to run on the GGUF");
                unlink(path);
            } else {
                printf("  (GGUF write failed: %s)", err.msg);
            }
        }
        if (o.decode) {
            printf("\n%-7s  decode  apr %8.2f tok/s", ty, dec);
            if (have_ll && ll_dec > 0)
                printf("                   llama.cpp %8.2f tok/s  ratio %.3f", ll_dec, dec / ll_dec);
        }
        printf("\n");
        fflush(stdout);
        apr_model_free(vm);
    }
    if (have_dir)
        rmdir(dir);
    apr_model_free(src);
    return ret;
}
