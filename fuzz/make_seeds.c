/* make_seeds.c - writes the seeds of the harnesses whose input is several
 * files (fuzz_files.h): a sharded safetensors set, a sharded APR set and a
 * provenance record with the model and source it describes, each made by
 * apr's own writers from a tiny model (shards of 64 bytes, so a set fits in
 * a small seed). Built beside the harnesses (not a test); the checked-in
 * seeds under fuzz/corpus/{st_index,apr_manifest,provenance} came from
 *   build-fuzz/fuzz/make_seeds fuzz/corpus
 * and rerunning it rewrites them. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats.h"

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        if ((x) != 0) {                                                                                               \
            fprintf(stderr, "make_seeds: %s: %s\n", #x, err.msg);                                                     \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static float X[16] = {1, -2, 3.5f, 0.25f, 5, 6, -7, 8, 9, 10, 11, 12, 13, 14, 15, -16};
static uint16_t H[8] = {0x3c00, 0x4000, 0xbc00, 0x0001, 0x7bff, 0x3555, 0, 0x8000};

/* Three small tensors and a name: several shards at 64 bytes a shard. */
static apr_model *tiny_model(apr_format fmt)
{
    apr_err err = {0};
    apr_model *m = apr_model_new(fmt);
    uint64_t d2[2] = {2, 4}, d1[1] = {8}, dh[2] = {2, 4};
    CHECK(!m);
    CHECK(apr_model_add_tensor(m, "blk.0.attn_q.weight", APR_DT_F32, 2, d2, X, 32, false, &err));
    CHECK(apr_model_add_tensor(m, "blk.0.attn_norm.weight", APR_DT_F32, 1, d1, X + 8, 32, false, &err));
    CHECK(apr_model_add_tensor(m, "token_embd.weight", APR_DT_F16, 2, dh, H, 16, false, &err));
    CHECK(apr_model_set_kv_str(m, "general.name", "fuzz-seed"));
    return m;
}

static void put_file(FILE *out, const char *dir, const char *name, bool first)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (!first)
        fprintf(out, "\n==> %s\n", name);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, out);
    fclose(f);
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* dir/first, then every other file of dir in name order, as one seed. */
static void pack(const char *dir, const char *first, const char *seed)
{
    FILE *out = fopen(seed, "wb");
    DIR *d = opendir(dir);
    if (!out || !d) {
        perror(seed);
        exit(1);
    }
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.' && strcmp(e->d_name, first))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp_name);
    put_file(out, dir, first, true);
    for (size_t i = 0; i < n; i++) {
        put_file(out, dir, names[i], false);
        free(names[i]);
    }
    fclose(out);
    printf("%s\n", seed);
}

static void provenance_seed(const char *tmp, const char *seed)
{
    apr_err err = {0};
    char dir[4096], src_path[4200], out_path[4200], rec_path[4200];
    snprintf(dir, sizeof dir, "%s/prov", tmp);
    mkdir(dir, 0755);
    snprintf(src_path, sizeof src_path, "%s/source.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/model.gguf", dir);
    snprintf(rec_path, sizeof rec_path, "%s/record.json", dir);
    apr_model *m = tiny_model(APR_FMT_SAFETENSORS);
    CHECK(apr_safetensors_write(m, src_path, &(apr_write_opts){0}, &err));
    apr_model_free(m);
    apr_model *src = NULL;
    CHECK(apr_model_open(&src, src_path, NULL, &err));
    /* what `apr convert source.safetensors model.gguf` records: every tensor copied */
    apr_model *out = tiny_model(APR_FMT_GGUF);
    apr_prov *p = apr_prov_new("convert", "apr convert source.safetensors model.gguf");
    CHECK(!p);
    apr_prov_set_time(p, "2026-01-01T00:00:00Z");
    CHECK(apr_prov_set_source(p, src, &err));
    for (uint64_t i = 0; i < out->n_tensors; i++) {
        const apr_tensor *s = apr_model_tensor(src, out->tensors[i].name);
        CHECK(!s);
        CHECK(apr_prov_add_tensor(p, &out->tensors[i], "copy", &s, 1, &err));
    }
    char *json = NULL;
    CHECK(apr_prov_finish(p, APR_FMT_GGUF, 1, &json, &err));
    CHECK(apr_prov_attach(out, json, APR_FMT_GGUF, &err));
    CHECK(apr_gguf_write(out, out_path, &(apr_write_opts){0}, &err));
    FILE *f = fopen(rec_path, "wb");
    CHECK(!f || fputs(json, f) < 0 || fclose(f));
    free(json);
    apr_prov_free(p);
    apr_model_free(out);
    apr_model_free(src);
    /* the record, the model it is attached to, the source (the harness's order) */
    FILE *o = fopen(seed, "wb");
    CHECK(!o);
    put_file(o, dir, "record.json", true);
    put_file(o, dir, "model.gguf", false);
    put_file(o, dir, "source.safetensors", false);
    fclose(o);
    printf("%s\n", seed);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR (fuzz/corpus)\n");
        return 2;
    }
    apr_err err = {0};
    char tmp[] = "/tmp/apr-make-seeds-XXXXXX", dir[4096], path[4200], seed[4200];
    CHECK(!mkdtemp(tmp));
    apr_write_opts o = {.shard_max_bytes = 64};

    apr_model *m = tiny_model(APR_FMT_SAFETENSORS);
    snprintf(dir, sizeof dir, "%s/st", tmp);
    CHECK(apr_safetensors_write(m, dir, &o, &err));
    snprintf(seed, sizeof seed, "%s/st_index/tiny-2-shards.txt", argv[1]);
    pack(dir, "model.safetensors.index.json", seed);
    apr_model_free(m);

    m = tiny_model(APR_FMT_APR);
    snprintf(dir, sizeof dir, "%s/apr", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.apr", dir);
    CHECK(apr_apr_write(m, path, &o, &err));
    snprintf(seed, sizeof seed, "%s/apr_manifest/tiny-3-shards.txt", argv[1]);
    pack(dir, "model.apr.manifest.json", seed);
    apr_model_free(m);

    snprintf(seed, sizeof seed, "%s/provenance/convert-st-to-gguf.txt", argv[1]);
    provenance_seed(tmp, seed);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : 1;
}
