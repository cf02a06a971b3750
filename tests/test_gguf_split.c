/* test_gguf_split.c - llama.cpp's split GGUF (gguf-split's layout): apr
 * convert --split-max-tensors / --split-max-size writes it, every reader
 * takes the first split or the directory as one model (same tensors and
 * bytes as the unsplit file), provenance records every split; bad input is
 * refused: a later split named instead of the first, a missing split, a
 * split of another model, inconsistent counts, bad options. apr quantize
 * --keep-split keeps a split input's splits. The peer half
 * (tests/peer/gguf_split_peer.py): the gguf package's splitter makes the same
 * files tensor for tensor, and llama.cpp loads ours; keep_split_peer.py:
 * --keep-split's files are llama_model_quantize(keep_split)'s, byte for
 * byte, and llama.cpp loads them. */
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
    const int dir = tu_bin_dir(g_dir, sizeof g_dir, "gsplit");
    if (dir != 0)
        return dir < 0 ? -1 : 0;
    return tu_system(NULL, "'%s' synth '%s/llama' --preset tiny-llama --quiet && '%s' synth '%s/qwen' --preset tiny-qwen2 --quiet"
                           " && '%s' convert '%s/llama' '%s/whole.gguf' --quiet",
                     tu_apr_bin(), g_dir, tu_apr_bin(), g_dir, tu_apr_bin(), g_dir, g_dir);
}

/* convert SRC into DIR/m.gguf split by OPT */
static void split_into(const char *src, const char *dir, const char *opt)
{
    assert_int_equal(tu_system(NULL, "rm -rf '%s/%s' && mkdir -p '%s/%s' && '%s' convert '%s/%s' '%s/%s/m.gguf' %s --quiet",
                               g_dir, dir, g_dir, dir, tu_apr_bin(), g_dir, src, g_dir, dir, opt),
                     0);
}

static const char *split_file(const char *dir, int no, int count)
{
    static char p[4][4200];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s/m-%05d-of-%05d.gguf", g_dir, dir, no, count);
    return p[k];
}

static void test_split_reads_as_one_model(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "t7", "--split-max-tensors 7");
    apr_model *whole = NULL, *first = NULL, *dir = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&whole, tu_path(g_dir, "whole.gguf"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&first, split_file("t7", 1, 3), NULL, &err), 0);
    assert_int_equal(apr_model_open(&dir, tu_path(g_dir, "t7"), NULL, &err), 0);
    assert_int_equal(first->n_maps, 3);
    assert_int_equal(dir->n_tensors, first->n_tensors);
    assert_int_equal(first->n_tensors, whole->n_tensors);
    for (uint64_t i = 0; i < whole->n_tensors; i++) {
        const apr_tensor *a = &whole->tensors[i], *b = &first->tensors[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(b->shard, i / 7);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, a->nbytes);
    }
    assert_null(apr_model_kv(first, "split.count")); /* file layout, not model metadata */
    assert_true(first->has_cfg && first->has_tok);
    /* every command takes it: verify bit-identity against the unsplit file, provenance */
    assert_int_equal(tu_system(NULL, "'%s' verify '%s' '%s/t7'", tu_apr_bin(), tu_path(g_dir, "whole.gguf"), g_dir), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s'", tu_apr_bin(), split_file("t7", 1, 3)), 0);
    /* a split source is recorded file by file */
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/t7' '%s/from-split.apr' --quiet", tu_apr_bin(), g_dir, g_dir), 0);
    apr_model *ap = NULL;
    assert_int_equal(apr_model_open(&ap, tu_path(g_dir, "from-split.apr"), NULL, &err), 0);
    for (int k = 1; k <= 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "\"m-%05d-of-00003.gguf\"", k);
        assert_non_null(strstr(ap->provenance_json, name));
    }
    apr_model_free(ap);
    apr_model_free(dir);
    apr_model_free(first);
    apr_model_free(whole);
}

/* --split-max-size: gguf-split's rule (running sum of 32-padded tensor sizes) */
static void test_split_by_size(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "s2", "--split-max-size 2M");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, tu_path(g_dir, "s2"), NULL, &err), 0);
    uint64_t sum[16] = {0};
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        assert_true(m->tensors[i].shard < 16);
        sum[m->tensors[i].shard] += (m->tensors[i].nbytes + 31) / 32 * 32;
    }
    assert_true(m->n_maps >= 2);
    for (uint32_t k = 0; k < m->n_maps; k++) {
        assert_true(sum[k] > 0);
        assert_true(sum[k] <= 2000000 || m->tensors[0].nbytes > 2000000);
        if (k + 1 < m->n_maps) /* the next split's first tensor did not fit */
            for (uint64_t i = 0; i < m->n_tensors; i++)
                if (m->tensors[i].shard == k + 1) {
                    assert_true(sum[k] + (m->tensors[i].nbytes + 31) / 32 * 32 > 2000000);
                    break;
                }
    }
    apr_model_free(m);
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

/* overwrites the i32 value of split.tensors.count in a split file */
static void patch_tensor_count(const char *path, int32_t v)
{
    size_t n = 0;
    char *b = tu_read_file(path, &n);
    assert_non_null(b);
    char *k = memmem(b, n, "split.tensors.count", 19);
    assert_non_null(k);
    memcpy(k + 19 + 4, &v, 4); /* key, u32 type, value */
    assert_int_equal(tu_write_file(path, b, n), 0);
    free(b);
}

static void test_bad_splits(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "bad", "--split-max-tensors 7");
    expect_open_error(split_file("bad", 2, 3), "open the first split");
    /* a split of another model: qwen's split 2 of 3 holds another tensor count */
    split_into("qwen", "other", "--split-max-tensors 9");
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", split_file("other", 2, 3), split_file("bad", 2, 3)), 0);
    expect_open_error(split_file("bad", 1, 3), "is not split 2 of 3");
    /* missing */
    unlink(split_file("bad", 2, 3));
    expect_open_error(split_file("bad", 1, 3), "is missing");
    expect_open_error(tu_path(g_dir, "bad"), "is missing");
    /* counts that agree with each other but not with the tensors */
    split_into("llama", "cnt", "--split-max-tensors 7");
    for (int k = 1; k <= 3; k++)
        patch_tensor_count(split_file("cnt", k, 3), 22);
    expect_open_error(split_file("cnt", 1, 3), "split.tensors.count is 22 but the 3 splits hold 21");
    /* options */
    const char *bad_opts[] = {"--split-max-size 12", "--split-max-size 0M", "--split-max-size 2K",
                              "--split-max-tensors 0", "--split-max-tensors 3 --split-max-size 1M"};
    for (size_t i = 0; i < sizeof bad_opts / sizeof *bad_opts; i++)
        assert_int_equal(tu_system(NULL, "'%s' convert '%s/llama' '%s/o.gguf' %s 2>/dev/null", tu_apr_bin(), g_dir,
                                   g_dir, bad_opts[i]),
                         2);
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/llama' '%s/o.apr' --split-max-tensors 3 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
    assert_int_not_equal(access(tu_path(g_dir, "o.apr"), F_OK), 0);
}

/* apr quantize writes splits too, and reads a split input */
static void test_quantize_split(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "qin", "--split-max-tensors 7");
    assert_int_equal(tu_system(NULL, "rm -rf '%s/qout' && mkdir '%s/qout' && '%s' quantize '%s/qin' '%s/qout/q.gguf' "
                                     "--type Q8_0 --split-max-tensors 10 --threads 2 --quiet",
                               g_dir, g_dir, tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s' '%s/q-whole.gguf' --type Q8_0 --threads 2 --quiet", tu_apr_bin(),
                               tu_path(g_dir, "whole.gguf"), g_dir),
                     0);
    apr_model *a = NULL, *b = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&a, tu_path(g_dir, "qout"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&b, tu_path(g_dir, "q-whole.gguf"), NULL, &err), 0);
    assert_int_equal(a->n_maps, 3);
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        assert_string_equal(a->tensors[i].name, b->tensors[i].name);
        assert_int_equal(a->tensors[i].nbytes, b->tensors[i].nbytes);
        assert_memory_equal(a->tensors[i].data, b->tensors[i].data, a->tensors[i].nbytes);
    }
    apr_model_free(a);
    apr_model_free(b);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/qout/q-00001-of-00003.gguf'", tu_apr_bin(), g_dir), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify '%s/qin' '%s/qout' 2>&1 | grep -q 'verdict *: PASS - reproduced'",
                               tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/qin' '%s/q.apr' --type Q8_0 --split-max-tensors 3 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
}

/* the split holding tensor name in the split set m */
static int shard_of(const apr_model *m, const char *name)
{
    const apr_tensor *t = apr_model_tensor(m, name);
    assert_non_null(t);
    return (int)t->shard;
}

/* apr quantize --keep-split: one output split per input split, same tensors */
static void test_quantize_keep_split(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "kin", "--split-max-tensors 7");
    assert_int_equal(tu_system(NULL, "rm -rf '%s/kout' && mkdir '%s/kout' && '%s' quantize '%s/kin' '%s/kout/q.gguf' "
                                     "--type Q8_0 --keep-split --threads 2 --quiet",
                               g_dir, g_dir, tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_not_equal(access(tu_path(g_dir, "kout/q.gguf"), F_OK), 0);
    apr_model *in = NULL, *out = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&in, tu_path(g_dir, "kin"), NULL, &err), 0);
    assert_int_equal(apr_model_open(&out, tu_path(g_dir, "kout/q-00001-of-00003.gguf"), NULL, &err), 0);
    assert_int_equal(out->n_maps, 3);
    assert_int_equal(out->n_tensors, in->n_tensors);
    for (uint64_t i = 0; i < out->n_tensors; i++) /* in the input's order, split for split */
        assert_int_equal(out->tensors[i].shard, shard_of(in, out->tensors[i].name));
    for (uint64_t i = 0; i < in->n_tensors; i++)
        assert_string_equal(in->tensors[i].name, out->tensors[i].name);
    apr_model_free(out);
    /* its provenance names the three input splits; reproduction and provenance verify */
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/kout/q-00001-of-00003.gguf' > /dev/null", tu_apr_bin(),
                               g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "'%s' verify '%s/kin' '%s/kout' > '%s/kverify.txt'", tu_apr_bin(), g_dir, g_dir,
                               g_dir),
                     0);
    char *v = tu_read_file(tu_path(g_dir, "kverify.txt"), NULL);
    assert_non_null(v);
    if (!strstr(v, "reproduced"))
        print_message("%s\n", v);
    assert_non_null(strstr(v, "reproduced"));
    free(v);
    /* an unsplit input: one plain GGUF named as llama-quantize names it */
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/whole.gguf' '%s/kout/w.gguf' --type Q8_0 --keep-split --quiet",
                               tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_not_equal(access(tu_path(g_dir, "kout/w.gguf"), F_OK), 0);
    assert_int_equal(apr_model_open(&out, tu_path(g_dir, "kout/w-00001-of-00001.gguf"), NULL, &err), 0);
    assert_int_equal(out->n_maps, 1);
    assert_null(apr_model_kv(out, "split.count"));
    apr_model_free(out);
    apr_model_free(in);

    /* refusals: exit 2, nothing written, the input unchanged */
    assert_int_equal(tu_system(NULL, "rm -rf '%s/kbad' && mkdir '%s/kbad' && cp '%s/kin/'* '%s/kbad/' && "
                                     "md5sum '%s/kin/'* > '%s/kin.md5'",
                               g_dir, g_dir, g_dir, g_dir, g_dir, g_dir),
                     0);
    const char *bad[] = {
        "'%s/kin' '%s/kbad/q.apr' --type Q8_0 --keep-split",                         /* not GGUF output */
        "'%s/kin' '%s/kbad/q.gguf' --type Q8_0 --keep-split --split-max-tensors 3",  /* two split plans */
        "'%s/llama' '%s/kbad/q.gguf' --type Q8_0 --keep-split",                      /* safetensors input */
        "'%s/kin/m-00001-of-00003.gguf' '%s/kin/m.gguf' --type Q8_0 --keep-split",   /* over the input */
        "'%s/kin' '%s/kin/m.gguf' --type Q8_0 --split-max-tensors 7",                /* the same by a limit */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, bad[i], g_dir, g_dir);
        assert_int_equal(tu_system(NULL, "'%s' quantize %s --quiet 2>/dev/null", tu_apr_bin(), cmd), 2);
    }
    assert_int_equal(tu_system(NULL, "'%s' convert '%s/kin' '%s/kin/m.gguf' --split-max-tensors 7 --quiet 2>/dev/null",
                               tu_apr_bin(), g_dir, g_dir),
                     2);
    unlink(split_file("kbad", 2, 3)); /* a missing split */
    assert_int_equal(tu_system(NULL, "'%s' quantize '%s/kbad' '%s/kbad/q.gguf' --type Q8_0 --keep-split 2>&1 | "
                                     "grep -q 'split 2 of 3 is missing'",
                               tu_apr_bin(), g_dir, g_dir),
                     0);
    assert_int_equal(tu_system(NULL, "ls '%s/kbad' | grep -c . | grep -qx 2 && md5sum -c --quiet '%s/kin.md5'", g_dir,
                               g_dir),
                     0);
}

/* The record in split 1 of the set DIR/PREFIX-*-of-0000N lists every split,
 * the later ones with their files' sha256. */
static void expect_output_files(const char *dir, const char *prefix, int n)
{
    char first[4200];
    snprintf(first, sizeof first, "%s/%s/%s-00001-of-%05d.gguf", g_dir, dir, prefix, n);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, first, NULL, &err), 0);
    assert_non_null(m->provenance_json);
    json_error_t je;
    json_t *root = json_loads(m->provenance_json, 0, &je);
    assert_non_null(root);
    const json_t *outs = json_object_get(root, "output_files");
    assert_int_equal(json_array_size(outs), n);
    for (int k = 0; k < n; k++) {
        const json_t *e = json_array_get(outs, (size_t)k);
        char name[256];
        snprintf(name, sizeof name, "%s-%05d-of-%05d.gguf", prefix, k + 1, n);
        assert_string_equal(json_string_value(json_object_get(e, "file")), name);
        if (k == 0) { /* it holds the record: its tensors are hashed, not the file */
            assert_true(json_is_null(json_object_get(e, "sha256")));
            continue;
        }
        uint8_t sha[32];
        char hex[65], path[4500];
        snprintf(path, sizeof path, "%s/%s/%s", g_dir, dir, name);
        assert_int_equal(apr_sha256_file(path, sha, &err), 0);
        apr_sha256_hex(sha, hex);
        assert_string_equal(json_string_value(json_object_get(e, "sha256")), hex);
    }
    json_decref(root);
    apr_model_free(m);
    /* inspect shows them, verify --provenance checks them */
    assert_int_equal(tu_system(NULL, "'%s' inspect '%s' | grep -q 'output: %d files'", tu_apr_bin(), first, n), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s' | grep -q '%d output files (splits or shards) checked, 0 bad'",
                               tu_apr_bin(), first, n),
                     0);
}

/* split outputs of convert, quantize --split-max-* and --keep-split record
 * every split; a later split changed outside its tensors fails verify */
static void test_split_output_provenance(void **state)
{
    (void)state;
    TU_NEED_BIN();
    split_into("llama", "po", "--split-max-tensors 7");
    expect_output_files("po", "m", 3);
    assert_int_equal(tu_system(NULL, "rm -rf '%s/pq' && mkdir '%s/pq' && '%s' quantize '%s/po' '%s/pq/q.gguf' --type Q8_0 "
                                     "--split-max-tensors 10 --quiet && '%s' quantize '%s/po' '%s/pq/k.gguf' --type Q8_0 "
                                     "--keep-split --quiet",
                               g_dir, g_dir, tu_apr_bin(), g_dir, g_dir, tu_apr_bin(), g_dir, g_dir),
                     0);
    expect_output_files("pq", "q", 3);
    expect_output_files("pq", "k", 3);
    /* one file: no list */
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, tu_path(g_dir, "whole.gguf"), NULL, &err), 0);
    assert_null(strstr(m->provenance_json, "output_files"));
    apr_model_free(m);
    /* bytes appended to split 2: every tensor still matches, the file does not */
    assert_int_equal(tu_system(NULL, "printf Z >> '%s/pq/k-00002-of-00003.gguf'", g_dir), 0);
    assert_int_equal(tu_system(NULL, "'%s' verify --provenance '%s/pq/k-00001-of-00003.gguf' > '%s/pq/v.txt'",
                               tu_apr_bin(), g_dir, g_dir),
                     1);
    char *v = tu_read_file(tu_path(g_dir, "pq/v.txt"), NULL);
    assert_non_null(v);
    assert_non_null(strstr(v, "k-00002-of-00003.gguf: output file sha256 differs"));
    assert_non_null(strstr(v, "21 tensors re-hashed (0 bad)"));
    free(v);
}

static void test_peer_keep_split(void **state)
{
    (void)state;
    TU_NEED_BIN();
    tu_require_python("gguf, numpy", "gguf numpy");
    tu_require_python("llama_cpp", "llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "--apr '%s' --tmp '%s'", tu_apr_bin(), tu_tmpdir("keep-split-peer"));
    int rc = tu_run_peer("peer-keep-split", "keep_split_peer.py", args);
    if (rc != 0)
        fail_msg("keep_split_peer.py failed (%d)", rc);
}

static void test_peer_gguf_split(void **state)
{
    (void)state;
    TU_NEED_BIN();
    tu_require_python("gguf,llama_cpp", "gguf llama-cpp-python");
    char args[8192];
    snprintf(args, sizeof args, "'%s' '%s'", tu_apr_bin(), tu_tmpdir("gsplit-peer"));
    int rc = tu_run_peer("peer-gsplit", "gguf_split_peer.py", args);
    if (rc != 0)
        fail_msg("gguf_split_peer.py failed (%d)", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_reads_as_one_model),
        cmocka_unit_test(test_split_by_size),
        cmocka_unit_test(test_bad_splits),
        cmocka_unit_test(test_quantize_split),
        cmocka_unit_test(test_quantize_keep_split),
        cmocka_unit_test(test_split_output_provenance),
        cmocka_unit_test(test_peer_gguf_split),
        cmocka_unit_test(test_peer_keep_split),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
