/* test_apr_shard.c - aprender's sharded APR v2 (flag 0x10 + shard manifest,
 * docs/sharding.md): apr convert --shard-mb writes it, every reader takes the
 * first shard, the manifest or the directory as one model (same tensors and
 * bytes as the unsharded file), the manifest records every shard's size and
 * sha256 and the provenance record, a model made of it records every shard;
 * bad input is refused: a later shard named instead of the first, a missing
 * shard, a shard of another model, inconsistent counts, a manifest that lies
 * about sizes, a tensor in two shards, unknown keys; a failed write leaves
 * nothing behind; apr quantize --shard-mb writes a set that verifies by
 * reproduction; an output over the input's own shards or manifest is refused. */
#define _GNU_SOURCE
#include "test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[4096];

static int setup(void **state)
{
    (void)state;
    const int dir = tu_bin_dir(g_dir, sizeof g_dir, "aprshard");
    if (dir != 0)
        return dir < 0 ? -1 : 0;
    return tu_system(NULL, "'%s' synth '%s/llama' --preset tiny-llama --quiet && '%s' synth '%s/qwen' --preset tiny-qwen2 --quiet"
                           " && '%s' convert '%s/llama' '%s/whole.apr' --quiet",
                     tu_apr_bin(), g_dir, tu_apr_bin(), g_dir, tu_apr_bin(), g_dir, g_dir);
}

/* convert SRC into DIR/m.apr with --shard-mb 1 (tiny-llama: 9 shards, tiny-qwen2: more) */
static void shard_into(const char *src, const char *dir)
{
    assert_int_equal(tu_system(NULL, "rm -rf '%s/%s' && mkdir -p '%s/%s' && '%s' convert '%s/%s' '%s/%s/m.apr' --shard-mb 1 --quiet",
                               g_dir, dir, g_dir, dir, tu_apr_bin(), g_dir, src, g_dir, dir),
                     0);
}

static const char *in_dir(const char *dir, const char *name)
{
    static char p[4][4200];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s/%s", g_dir, dir, name);
    return p[k];
}

static const char *shard_name(int no, int count)
{
    static char p[4][64];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "m-%05d-of-%05d.apr", no, count);
    return p[k];
}

static json_t *load_manifest(const char *dir)
{
    json_error_t je;
    json_t *j = json_load_file(in_dir(dir, "m.apr.manifest.json"), 0, &je);
    assert_non_null(j);
    return j;
}

static void save_manifest(const char *dir, json_t *j)
{
    assert_int_equal(json_dump_file(j, in_dir(dir, "m.apr.manifest.json"), JSON_INDENT(2)), 0);
    json_decref(j);
}

static json_t *entry(json_t *j, size_t k) { return json_array_get(json_object_get(j, "shards"), k); }

static void test_shards_read_as_one_model(void **state)
{
    (void)state;
    TU_NEED_BIN();
    shard_into("llama", "s");
    apr_model *whole = NULL, *first = NULL, *man = NULL, *dir = NULL, *named = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&whole, tu_path(g_dir, "whole.apr"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&first, in_dir("s", shard_name(0, 9)), NULL, &err), 0);
    assert_int_equal(apr_model_open(&man, in_dir("s", "m.apr.manifest.json"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&dir, tu_path(g_dir, "s"), NULL, &err), 0);
    /* the name given to --shard-mb, which is no file: its manifest is opened */
    assert_int_equal(apr_model_open(&named, in_dir("s", "m.apr"), NULL, &err), 0);
    assert_int_equal(named->n_tensors, whole->n_tensors);
    assert_int_equal(named->n_maps, 9);
    apr_model_free(named);
    assert_int_equal(first->n_maps, 9);
    assert_int_equal(man->n_tensors, whole->n_tensors);
    assert_int_equal(dir->n_tensors, whole->n_tensors);
    assert_int_equal(first->n_tensors, whole->n_tensors);
    for (uint64_t i = 0; i < whole->n_tensors; i++) {
        const apr_tensor *a = &whole->tensors[i], *b = &first->tensors[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, a->nbytes);
    }
    assert_true(first->has_cfg && first->has_tok);
    assert_non_null(first->provenance_json);
    /* the manifest: aprender's fields, each shard's true size and sha256 */
    json_t *j = load_manifest("s");
    assert_string_equal(json_string_value(json_object_get(j, "version")), "2.0");
    assert_int_equal(json_integer_value(json_object_get(j, "shard_count")), 9);
    assert_int_equal(json_integer_value(json_object_get(j, "tensor_count")), (json_int_t)whole->n_tensors);
    assert_int_equal(json_object_size(json_object_get(j, "weight_map")), whole->n_tensors);
    uint64_t total = 0;
    for (size_t k = 0; k < 9; k++) {
        uint8_t sha[32];
        char hex[65];
        assert_int_equal(apr_sha256_file(in_dir("s", shard_name((int)k, 9)), sha, &err), 0);
        apr_sha256_hex(sha, hex);
        assert_string_equal(json_string_value(json_object_get(entry(j, k), "sha256")), hex);
        assert_int_equal(json_integer_value(json_object_get(entry(j, k), "size")), (json_int_t)first->maps[k].size);
        total += first->maps[k].size;
    }
    assert_int_equal(json_integer_value(json_object_get(j, "total_size")), (json_int_t)total);
    json_decref(j);
    apr_model_free(whole);
    apr_model_free(first);
    apr_model_free(man);
    apr_model_free(dir);
    /* every command takes it */
    assert_int_equal(tu_system(NULL, "'%s' verify '%s' '%s/s' > /dev/null", tu_apr_bin(), tu_path(g_dir, "whole.apr"), g_dir), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s' '%s/llama' > /dev/null", tu_apr_bin(),
                               in_dir("s", shard_name(0, 9)), g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s' '%s/back.gguf' --quiet && '%s' verify --provenance '%s/back.gguf' '%s/s' > /dev/null",
                               tu_apr_bin(), in_dir("s", "m.apr.manifest.json"), g_dir, tu_apr_bin(), g_dir, g_dir),
                     0);
    /* what is made of it records every shard and the manifest */
    apr_model *back = NULL;
    assert_int_equal(apr_model_open(&back, tu_path(g_dir, "back.gguf"), NULL, &err), 0);
    assert_non_null(back->provenance_json);
    for (int k = 0; k < 9; k++)
        assert_non_null(strstr(back->provenance_json, shard_name(k, 9)));
    assert_non_null(strstr(back->provenance_json, "\"m.apr.manifest.json\""));
    apr_model_free(back);
}

static void expect_open_error(const char *path, const char *what)
{
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_model_open(&m, path, NULL, &err);
    if (rc == 0 || !strstr(err.msg, what))
        print_message("open %s: rc %d, '%s' (expected '%s')\n", path, rc, err.msg, what);
    assert_int_not_equal(rc, 0);
    assert_null(m);
    assert_non_null(strstr(err.msg, what));
    assert_int_equal(tu_system(NULL, "'%s' inspect '%s' > /dev/null 2>&1", tu_apr_bin(), path), 2);
}

static void set_int(json_t *o, const char *key, json_int_t v) { assert_int_equal(json_object_set_new(o, key, json_integer(v)), 0); }
static json_int_t get_int(const json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static void shard_size_plus_64(json_t *m) { set_int(entry(m, 2), "size", get_int(entry(m, 2), "size") + 64); }
static void total_size_minus_1(json_t *m) { set_int(m, "total_size", get_int(m, "total_size") - 1); }
static void tensor_count_plus_1(json_t *m) { set_int(m, "tensor_count", get_int(m, "tensor_count") + 1); }
static void shard_count_8(json_t *m) { set_int(m, "shard_count", 8); }
static void weight_map_elsewhere(json_t *m) { set_int(json_object_get(m, "weight_map"), "model.norm.weight", 5); }
static void extra_listed_tensor(json_t *m)
{
    json_array_append_new(json_object_get(entry(m, 3), "tensors"), json_string("model.norm.weight"));
}
static void unknown_key(json_t *m) { json_object_set_new(m, "compression", json_string("lz4")); }
static void escaping_filename(json_t *m)
{
    json_object_set_new(entry(m, 1), "filename", json_string("../s/m-00001-of-00009.apr"));
}
static void other_version(json_t *m) { json_object_set_new(m, "version", json_string("3.0")); }

static const struct {
    void (*mutate)(json_t *manifest);
    const char *expect;
} lies[] = {
    {shard_size_plus_64, "the manifest says"},
    {total_size_minus_1, "total_size is"},
    {tensor_count_plus_1, "tensor_count is"},
    {shard_count_8, "shard_count 8 but 9 shard entries"},
    {weight_map_elsewhere, "weight_map puts tensor 'model.norm.weight'"},
    {extra_listed_tensor, "the manifest lists"},
    {unknown_key, "unknown shard-manifest key 'compression'"},
    {escaping_filename, "filename must be a file name"},
    {other_version, "version 3.0"},
};

static void test_bad_shards(void **state)
{
    (void)state;
    TU_NEED_BIN();
    shard_into("llama", "bad");
    expect_open_error(in_dir("bad", shard_name(3, 9)), "open the first shard");
    /* missing */
    assert_int_equal(tu_system(NULL, "mv '%s' '%s/away.apr'", in_dir("bad", shard_name(4, 9)), g_dir), 0);
    expect_open_error(in_dir("bad", shard_name(0, 9)), "is missing");
    expect_open_error(tu_path(g_dir, "bad"), "is missing");
    assert_int_equal(tu_system(NULL, "mv '%s/away.apr' '%s'", g_dir, in_dir("bad", shard_name(4, 9))), 0);
    /* a shard of another model in its place, its size written into the manifest */
    shard_into("qwen", "other");
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", in_dir("other", "m-00001-of-00007.apr"), in_dir("bad", shard_name(1, 9))), 0);
    json_t *j = load_manifest("bad");
    json_t *q = load_manifest("other");
    set_int(entry(j, 1), "size", get_int(entry(q, 1), "size"));
    json_decref(q);
    save_manifest("bad", j);
    expect_open_error(in_dir("bad", shard_name(0, 9)), "a shard of another model");

    /* manifests that lie, one way each, about a fresh set */
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        shard_into("llama", "lie");
        json_t *m = load_manifest("lie");
        lies[i].mutate(m);
        save_manifest("lie", m);
        expect_open_error(tu_path(g_dir, "lie"), lies[i].expect);
    }

    /* a tensor in two shards: shard 2 replaced by a copy of shard 0, the manifest agreeing */
    shard_into("llama", "dup");
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", in_dir("dup", shard_name(0, 9)), in_dir("dup", shard_name(2, 9))), 0);
    j = load_manifest("dup");
    set_int(entry(j, 2), "size", get_int(entry(j, 0), "size"));
    json_object_set(entry(j, 2), "tensors", json_object_get(entry(j, 0), "tensors"));
    save_manifest("dup", j);
    expect_open_error(tu_path(g_dir, "dup"), "is in two shards");
}

/* A write that fails at the end (a shard's name is taken by a directory)
 * leaves no shard and no manifest behind. */
static void test_failed_write_leaves_nothing(void **state)
{
    (void)state;
    TU_NEED_BIN();
    assert_int_equal(tu_system(NULL, "rm -rf '%s/fail' && mkdir -p '%s/fail/%s'", g_dir, g_dir, shard_name(5, 9)), 0);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/llama' '%s/fail/m.apr' --shard-mb 1 --quiet 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
    assert_int_equal(tu_system(NULL, "test \"$(ls -A '%s/fail')\" = '%s'", g_dir, shard_name(5, 9)), 0);
    /* --shard-mb where it means nothing (GGUF splits with --split-max-*) */
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/llama' '%s/fail/x.gguf' --shard-mb 1 2>/dev/null", tu_apr_bin(),
                               g_dir, g_dir),
                     2);
    assert_int_not_equal(access(tu_path(g_dir, "fail/x.gguf"), F_OK), 0);
}

/* A sharded APR output whose shards or manifest would be written over the
 * sharded APR input's own files is refused before anything is written: the
 * same names (convert, same plan), or another shard count whose manifest is
 * the input's (quantize), whichever name the input was given by. */
static void test_output_over_own_shards(void **state)
{
    (void)state;
    TU_NEED_BIN();
    shard_into("llama", "own");
    assert_int_equal(tu_system(NULL, "cd '%s/own' && sha256sum * > ../own.sum", g_dir), 0);
    const char *cmds[] = {
        "convert '%s/own/m.apr.manifest.json' '%s/own/m.apr' --shard-mb 1",
        "convert '%s/own' '%s/own/./m.apr' --shard-mb 1",
        "convert '%s/own/m-00000-of-00009.apr' '%s/own/m.apr' --shard-mb 1",
        "quantize '%s/own/m.apr.manifest.json' '%s/own/m.apr' --type Q8_0 --shard-mb 1",
        "quantize '%s/own' '%s/own/m.apr' --type Q4_K_M --shard-mb 1",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, cmds[i], g_dir, g_dir);
        assert_int_equal(tu_system(NULL, "'%s' %s --quiet 2> '%s/own.err'", tu_apr_bin(), cmd, g_dir), 2);
        char *e = tu_read_file(tu_path(g_dir, "own.err"), NULL);
        assert_non_null(e);
        if (!strstr(e, "never overwrites its input"))
            print_message("%s: %s\n", cmd, e);
        assert_non_null(strstr(e, "never overwrites its input"));
        free(e);
    }
    /* the input is untouched and nothing was added */
    assert_int_equal(tu_system(NULL, "cd '%s/own' && sha256sum -c --quiet ../own.sum && test $(ls -A | grep -c .) -eq 10",
                               g_dir),
                     0);
    /* another stem in the same directory is fine */
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/own' '%s/own/n.apr' --shard-mb 1 --quiet", tu_apr_bin(), g_dir,
                               g_dir),
                     0);
}

/* apr quantize --shard-mb: a quantized sharded APR set, verified by
 * reproduction; the manifest's sha256 of each shard is that file's */
static void test_quantize_shards(void **state)
{
    (void)state;
    TU_NEED_BIN();
    assert_int_equal(tu_system(NULL, "rm -rf '%s/qs' && mkdir '%s/qs' && '%s' quantize '%s/llama' '%s/qs/m.apr' --type Q8_0 "
                                     "--shard-mb 1 --threads 2 --quiet",
                               g_dir, g_dir, tu_apr_bin(), g_dir, g_dir),
                     0);
    json_t *j = load_manifest("qs");
    size_t n = json_array_size(json_object_get(j, "shards"));
    assert_true(n >= 2);
    for (size_t k = 0; k < n; k++) {
        const char *fn = json_string_value(json_object_get(entry(j, k), "filename"));
        assert_string_equal(fn, shard_name((int)k, (int)n));
        uint8_t sha[32];
        char hex[65];
        apr_err err = {0};
        assert_int_equal(apr_sha256_file(in_dir("qs", fn), sha, &err), 0);
        apr_sha256_hex(sha, hex);
        assert_string_equal(json_string_value(json_object_get(entry(j, k), "sha256")), hex);
    }
    const char *op = json_string_value(json_object_get(json_object_get(j, "provenance"), "operation"));
    assert_non_null(op);
    assert_string_equal(op, "quantize");
    json_decref(j);
    /* every reader takes it: reproduction from the source, provenance */
    assert_int_equal(tu_system(NULL, "'%s' verify '%s/llama' '%s' 2>&1 | grep -q 'verdict *: PASS - reproduced'",
                               tu_apr_bin(), g_dir, in_dir("qs", shard_name(0, (int)n))),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' verify '%s/llama' '%s/qs' 2>&1 | grep -q 'verdict *: PASS - reproduced'",
                               tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s' '%s/llama' > /dev/null", tu_apr_bin(),
                               in_dir("qs", "m.apr.manifest.json"), g_dir),
                     0);
    /* inspect lists the shards with their manifest sha256; verify --provenance re-hashes every shard */
    assert_int_equal(tu_system(NULL, "'%s' inspect '%s/qs' | grep -q '^shards: *%zu (manifest'", tu_apr_bin(), g_dir, n), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/qs' | grep -q '%zu output files (splits or shards) "
                                     "checked, 0 bad'",
                               tu_apr_bin(), g_dir, n),
                     0);
    assert_int_equal(tu_system(NULL, "rm -rf '%s/qsbad' && cp -r '%s/qs' '%s/qsbad' && f='%s' && "
                                     "printf Z | dd of=\"$f\" bs=1 seek=$(( $(stat -c %%s \"$f\") - 100 )) conv=notrunc "
                                     "2>/dev/null",
                               g_dir, g_dir, g_dir, in_dir("qsbad", shard_name((int)n - 1, (int)n))),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/qsbad' > '%s/qsbad.txt'", tu_apr_bin(), g_dir, g_dir),
                     1);
    char *v = tu_read_file(tu_path(g_dir, "qsbad.txt"), NULL);
    assert_non_null(v);
    assert_non_null(strstr(v, "shard sha256 differs from its manifest entry"));
    free(v);
    /* --shard-mb on a GGUF output: refused, nothing written */
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/llama' '%s/qs/x.gguf' --type Q8_0 --shard-mb 1 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/llama' '%s/qs/x.apr' --type Q8_0 --shard-mb 0 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
    assert_int_equal(tu_system(NULL, "test $(ls '%s/qs' | grep -c .) -eq %zu", g_dir, n + 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shards_read_as_one_model),
        cmocka_unit_test(test_bad_shards),
        cmocka_unit_test(test_failed_write_leaves_nothing),
        cmocka_unit_test(test_quantize_shards),
        cmocka_unit_test(test_output_over_own_shards),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
