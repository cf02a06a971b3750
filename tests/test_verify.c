/* test_verify.c - `apr verify` end to end: the fixture against itself and its
 * APR and safetensors conversions (bit-identical logits and weights), synthetic
 * models quantized to Q8_0 / Q6_K / Q4_K_M (KLD and weight report, pass),
 * deliberate corruption (a zeroed, moved or bit-flipped weight row fails and is
 * named by tensor and row; a zeroed norm also by layer), round trips through
 * each format, provenance re-hashing, tokenization agreement and bad arguments.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parity.h"
#include "test_util.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"

#define REQUIRE_APR(var)                                                       \
    const char *var = tu_apr_bin();                                            \
    do {                                                                       \
        if (!var) {                                                            \
            tu_skip_or_fail(TU_NEED_HARNESS, "APR_BIN is not set (run through ctest)"); \
        }                                                                      \
    } while (0)

/* Run `apr ARGS`; stdout to DIR/TAG.out, stderr to DIR/TAG.err. Returns the
 * exit status; *out gets stdout (malloc'd). */
static int apr_run(const char *dir, const char *tag, char **out, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int apr_run(const char *dir, const char *tag, char **out, const char *fmt, ...)
{
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char o[4096], e[4096];
    snprintf(o, sizeof o, "%s/%s.out", dir, tag);
    snprintf(e, sizeof e, "%s/%s.err", dir, tag);
    const int rc = tu_system(NULL, "'%s' %s >'%s' 2>'%s'", tu_apr_bin(), args, o, e);
    char *so = tu_read_file(o, NULL), *se = tu_read_file(e, NULL);
    if (se && *se)
        print_message("[apr %s] stderr: %s", tag, se);
    free(se);
    if (out)
        *out = so ? so : strdup("");
    else
        free(so);
    return rc;
}

static char *read_err(const char *dir, const char *tag)
{
    char e[4096];
    snprintf(e, sizeof e, "%s/%s.err", dir, tag);
    char *s = tu_read_file(e, NULL);
    return s ? s : strdup("");
}

static json_t *parse_report(const char *txt)
{
    json_error_t je;
    json_t *j = json_loads(txt, 0, &je);
    if (!j)
        print_message("not JSON (%s): %.400s\n", je.text, txt);
    assert_non_null(j);
    return j;
}

static json_t *jget(json_t *j, const char *a, const char *b)
{
    json_t *x = json_object_get(j, a);
    return b ? json_object_get(x, b) : x;
}

/* A lossless report: pass, bit-identical, kind lossless, KLD exactly 0. */
static void assert_lossless_pass(const char *txt)
{
    json_t *j = parse_report(txt);
    assert_true(json_is_true(jget(j, "verdict", "pass")));
    assert_true(json_is_true(jget(j, "logits", "bit_identical")));
    assert_string_equal(json_string_value(jget(j, "conversion", "kind")), "lossless");
    assert_true(json_real_value(jget(j, "kld", "mean")) == 0.0);
    assert_true(json_real_value(jget(j, "top1_agreement_pct", NULL)) == 100.0);
    assert_true(json_is_null(jget(j, "layers", "first_out")));
    assert_true(json_is_null(jget(j, "layers", "first_diff")));
    assert_true(json_is_true(jget(j, "weights", "bit_identical")));
    assert_true(json_is_null(jget(j, "weights", "first_diff")));
    assert_true(json_integer_value(jget(j, "weights", "n_tensors")) > 0);
    json_decref(j);
}

/* Where a tensor's row lies in its file: the shard's path and the byte offset
 * of the row (row_bytes in *rb). */
static void row_location(const char *path, const char *name, uint64_t row, char *file, size_t cap,
                         uint64_t *off, uint64_t *rb)
{
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, path, NULL, &err), 0);
    const apr_tensor *t = apr_model_tensor(m, name);
    if (!t)
        print_message("no tensor %s in %s\n", name, path);
    assert_non_null(t);
    assert_true(t->dtype != APR_DT_ROWCAT);
    *rb = apr_dtype_row_bytes(t->dtype, t->dims[t->ndim - 1]);
    assert_true(*rb > 0);
    assert_true((row + 1) * *rb <= t->nbytes);
    *off = t->file_offset + row * *rb;
    assert_true(t->shard < m->n_maps);
    snprintf(file, cap, "%s", m->maps[t->shard].path);
    apr_model_free(m);
}

static void patch_file(const char *file, uint64_t off, const void *bytes, size_t n)
{
    int fd = open(file, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* Zero row `row` of tensor `name` in the file at path (a copy made by the test). */
static void zero_row(const char *path, const char *name, uint64_t row)
{
    char file[4096];
    uint64_t off, rb;
    row_location(path, name, row, file, sizeof file, &off, &rb);
    uint8_t *zeros = calloc(1, rb);
    patch_file(file, off, zeros, rb);
    free(zeros);
}

/* Overwrite row `row` of tensor `name` with the bytes of row `from` (a row in
 * the wrong place: same magnitude, unrelated values). */
static void move_row(const char *path, const char *name, uint64_t from, uint64_t row)
{
    char file[4096];
    uint64_t off, rb, off_from;
    row_location(path, name, row, file, sizeof file, &off, &rb);
    row_location(path, name, from, file, sizeof file, &off_from, &rb);
    char *all = tu_read_file(file, NULL);
    assert_non_null(all);
    patch_file(file, off, all + off_from, rb);
    free(all);
}

/* XOR one byte of row `row` of tensor `name` (byte `at` of the row) with x. */
static void flip_byte(const char *path, const char *name, uint64_t row, uint64_t at, uint8_t x)
{
    char file[4096];
    uint64_t off, rb;
    row_location(path, name, row, file, sizeof file, &off, &rb);
    assert_true(at < rb);
    char *all = tu_read_file(file, NULL);
    assert_non_null(all);
    const uint8_t b = (uint8_t)all[off + at] ^ x;
    patch_file(file, off + at, &b, 1);
    free(all);
}

/* The report's weights.worst (or first_diff) names tensor `name`, row `row`. */
static json_t *assert_weight_ref(json_t *j, const char *which, const char *name, int64_t row)
{
    json_t *w = jget(j, "weights", which);
    assert_true(json_is_object(w));
    if (strcmp(json_string_value(json_object_get(w, "tensor")), name) ||
        json_integer_value(json_object_get(w, "row")) != row)
        print_message("weights.%s: %s row %lld\n", which, json_string_value(json_object_get(w, "tensor")),
                      (long long)json_integer_value(json_object_get(w, "row")));
    assert_string_equal(json_string_value(json_object_get(w, "tensor")), name);
    assert_int_equal(json_integer_value(json_object_get(w, "row")), row);
    return w;
}

static void copy_file(const char *from, const char *to)
{
    assert_int_equal(tu_system(NULL, "cp '%s' '%s'", from, to), 0);
}

/* ---------------------------------------------------------------- the fixture */

static void test_verify_fixture_self(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-self");
    char *out;
    assert_int_equal(apr_run(dir, "self", &out, "verify '%s' '%s' --logits --json --ctx 128 --chunks 2", fx, fx), 0);
    assert_lossless_pass(out);
    json_t *j = parse_report(out);
    assert_int_equal(json_integer_value(jget(j, "tokens", "ctx")), 128);
    assert_int_equal(json_integer_value(jget(j, "tokens", "chunks")), 2);
    assert_int_equal(json_integer_value(jget(j, "tokens", "positions")), 256);
    /* --logits: the logits decided (and confirmed the construction argument) */
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "logits");
    assert_true(json_is_true(jget(j, "forward_pass", NULL)));
    assert_int_equal(json_integer_value(jget(j, "tokens", "scored")), 2 * 63); /* 64..126 of each chunk */
    /* a trained model predicts its kind of text far better than chance (vocab 512) */
    const double ppl = json_real_value(jget(j, "ppl", "src"));
    assert_true(ppl > 1.0 && ppl < 100.0);
    assert_true(json_real_value(jget(j, "ppl", "ratio")) == 1.0);
    assert_int_equal(json_array_size(jget(j, "layers", "std_ratio")), 5);
    json_decref(j);
    free(out);

    /* without --logits the weights decide: bit-identical, same dtypes, same
     * configuration, so the logits are identical by construction; nothing
     * of the forward pass is reported as measured */
    assert_int_equal(apr_run(dir, "fast", &out, "verify '%s' '%s' --json", fx, fx), 0);
    j = parse_report(out);
    assert_true(json_is_true(jget(j, "verdict", "pass")));
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "construction");
    assert_true(json_is_false(jget(j, "forward_pass", NULL)));
    assert_true(json_is_null(jget(j, "logits", NULL)));
    assert_true(json_is_null(jget(j, "kld", NULL)));
    assert_true(json_is_true(jget(j, "config", "same")));
    assert_true(json_is_true(jget(j, "weights", "bit_identical")));
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")), "identical by construction"));
    json_decref(j);
    free(out);
    assert_int_equal(apr_run(dir, "fastt", &out, "verify '%s' '%s'", fx, fx), 0);
    assert_non_null(strstr(out, "decided by : construction"));
    assert_non_null(strstr(out, "forward    : not run"));
    free(out);

    /* the readable table */
    assert_int_equal(apr_run(dir, "table", &out, "verify '%s' '%s' --logits --ctx 64 --chunks 1", fx, fx), 0);
    assert_non_null(strstr(out, "bit-identical"));
    assert_non_null(strstr(out, "PASS"));
    assert_non_null(strstr(out, "resid2"));
    free(out);
}

/* A report that cannot be written (stdout on a full disk: /dev/full) is an
 * error, exit 2 with the reason, never a verdict with the report lost: the
 * text table (buffered, fails at the flush), the JSON (larger than stdio's
 * buffer, fails at the printf), and inspect's listing (main.c's check). */
static void test_verify_report_disk_full(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    if (access("/dev/full", W_OK) != 0) {
        tu_skip_or_fail(TU_NEED_HARNESS, "no /dev/full to write to");
        return;
    }
    const char *dir = tu_tmpdir("verify-full");
    static const char *const cmds[] = {"verify '%s' '%s'", "verify '%s' '%s' --json",
                                       "verify '%s' '%s' --logits --ctx 64 --chunks 1", "inspect '%s' %s"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        char fmt[256], e[4096];
        snprintf(fmt, sizeof fmt, "'%%s' %s >/dev/full 2>'%%s'", cmds[i]);
        snprintf(e, sizeof e, "%s/full%zu.err", dir, i);
        const int rc = i == 3 ? tu_system(NULL, fmt, apr, fx, "", e) : tu_system(NULL, fmt, apr, fx, fx, e);
        char *err = tu_read_file(e, NULL);
        assert_non_null(err);
        if (rc != 2 || !strstr(err, "No space left on device"))
            fail_msg("%s >/dev/full: exit %d, stderr: %s", cmds[i], rc, err);
        assert_non_null(strstr(err, i == 3 ? "apr inspect: " : "apr verify: writing the report: "));
        free(err);
    }
}

static void test_verify_fixture_prompt(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-prompt");
    char *out;
    assert_int_equal(apr_run(dir, "p", &out, "verify '%s' '%s' --logits --json --prompt 'Once upon a time, there was a "
                                             "little girl named Lily.' --all-positions", fx, fx), 0);
    json_t *j = parse_report(out);
    const json_int_t n = json_integer_value(jget(j, "tokens", "positions"));
    assert_true(n > 8 && n < 40);
    assert_int_equal(json_integer_value(jget(j, "tokens", "scored")), n - 1);
    assert_true(json_is_true(jget(j, "verdict", "pass")));
    json_decref(j);
    free(out);

    /* the same ids from a file */
    const char *tok = tu_path(dir, "ids.txt");
    const char *ids = "1 403 407 261 378 10 384 284 260 191 142 370 378\n";
    assert_int_equal(tu_write_file(tok, ids, strlen(ids)), 0);
    assert_int_equal(apr_run(dir, "f", &out, "verify '%s' '%s' --logits --json --tokens '%s'", fx, fx, tok), 0);
    j = parse_report(out);
    assert_int_equal(json_integer_value(jget(j, "tokens", "positions")), 13);
    json_decref(j);
    free(out);
}

static void test_verify_tokenizer_mismatch(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-tok");
    /* DST: the fixture with two vocabulary entries swapped, so the same text
     * tokenizes to other ids */
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    const apr_kv *kv = apr_model_kv(m, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, APR_KV_STRING);
    apr_kv copy;
    assert_int_equal(apr_kv_copy(&copy, kv), 0);
    apr_str *s = copy.arr;
    int a = -1, b = -1;
    for (uint64_t i = 0; i < copy.count; i++) {
        if (!strcmp(s[i].s, "\xe2\x96\x81Once"))
            a = (int)i;
        if (!strcmp(s[i].s, "\xe2\x96\x81time"))
            b = (int)i;
    }
    assert_true(a >= 0 && b >= 0);
    apr_str t = s[a];
    s[a] = s[b];
    s[b] = t;
    assert_int_equal(apr_model_set_kv(m, &copy), 0);
    apr_kv_free(&copy);
    const char *dst = tu_path(dir, "swapped.gguf");
    assert_int_equal(apr_gguf_write(m, dst, NULL, &err), 0);
    apr_model_free(m);

    char *out;
    assert_int_equal(apr_run(dir, "mm", &out, "verify '%s' '%s' --prompt 'Once upon a time'", fx, dst), 2);
    free(out);
    char *e = read_err(dir, "mm");
    assert_non_null(strstr(e, "tokenize"));
    free(e);
}

static void test_verify_bad_args(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-args");
    const char *bad[] = {
        "verify",
        "verify '%s'",
        "verify '%s' /nonexistent/model.gguf",
        "verify '%s' '%s' --ctx 100000",
        "verify '%s' '%s' --ctx -3",
        "verify '%s' '%s' --band 2,1",
        "verify '%s' '%s' --band x",
        "verify '%s' '%s' --device tpu",
        "verify '%s' '%s' --expect maybe",
        "verify '%s' '%s' --max-kld -1",
        "verify '%s' '%s' --frobnicate",
        "verify '%s' '%s' --ctx 64 --chunks 1000",
        "verify '%s' '%s' --prompt x --tokens y",
        "verify '%s' '%s' --tokens /nonexistent/ids.txt",
        "verify '%s' '%s' --text /nonexistent/corpus.txt",
        "verify '%s' '%s' -f /nonexistent/corpus.txt",
        "verify '%s' '%s' --text",
        "verify '%s' '%s' --prompt x --text y",
        "verify '%s' '%s' --limits loose",
        "verify --roundtrip '%s'",
        "verify --roundtrip '%s' --via zip",
        "verify --via apr '%s' '%s'",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[8192];
        snprintf(cmd, sizeof cmd, bad[i], fx, fx);
        char *out;
        const int rc = apr_run(dir, "bad", &out, "%s", cmd);
        if (rc != 2)
            print_message("'%s' exited %d\n", cmd, rc);
        assert_int_equal(rc, 2);
        free(out);
    }
    /* an id outside the vocabulary in a --tokens file */
    const char *tok = tu_path(dir, "ids.txt");
    assert_int_equal(tu_write_file(tok, "1 2 512", 7), 0);
    char *out;
    assert_int_equal(apr_run(dir, "vocab", &out, "verify '%s' '%s' --tokens '%s'", fx, fx, tok), 2);
    free(out);
    char *e = read_err(dir, "vocab");
    assert_non_null(strstr(e, "512"));
    free(e);
    /* --help is not an error */
    assert_int_equal(apr_run(dir, "help", &out, "verify --help"), 0);
    assert_non_null(strstr(out, "--roundtrip"));
    free(out);
}

/* A row of one attention weight zeroed in a copy of the F32 fixture: the file
 * keeps its dtypes, so the pair is classified lossless, the logits differ and
 * the first traced step that differs is in the corrupted layer. */
static void test_verify_corrupt_lossless_names_layer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-corrupt-f32");
    const char *bad = tu_path(dir, "bad.gguf");
    copy_file(fx, bad);
    zero_row(bad, "blk.3.attn_q.weight", 5);
    char *out;
    assert_int_equal(apr_run(dir, "c", &out, "verify '%s' '%s' --json --ctx 64 --chunks 1", fx, bad), 1);
    json_t *j = parse_report(out);
    assert_true(json_is_false(jget(j, "verdict", "pass")));
    assert_string_equal(json_string_value(jget(j, "conversion", "kind")), "lossless");
    assert_true(json_is_false(jget(j, "logits", "bit_identical")));
    json_t *fd = jget(j, "layers", "first_diff");
    assert_int_equal(json_integer_value(json_object_get(fd, "layer")), 3);
    assert_string_equal(json_string_value(json_object_get(fd, "step")), "q");
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")), "layer 3 (q)"));
    /* the weights say where without the forward pass: tensor and row */
    assert_true(json_is_false(jget(j, "weights", "bit_identical")));
    json_t *w = assert_weight_ref(j, "first_diff", "blk.3.attn_q.weight", 5);
    assert_string_equal(json_string_value(json_object_get(w, "role")), "attn_q");
    assert_int_equal(json_integer_value(json_object_get(w, "layer")), 3);
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")),
                           "weights differ: first at blk.3.attn_q.weight row 5 (layer 3 attn_q)"));
    json_decref(j);
    free(out);
}

/* One bit of one weight flipped in the HF safetensors conversion of the
 * fixture (K stored in rotate-half order): the lossless check names the
 * tensor, its row in the file and the logical (GGUF) row it maps to. */
static void test_verify_flip_lossless_localized(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-flip-st");
    char *out;
    const char *hf = tu_path(dir, "hf");
    assert_int_equal(apr_run(dir, "convert", &out, "convert '%s' '%s' --to safetensors", fx, hf), 0);
    free(out);
    const char *name = "model.layers.2.self_attn.k_proj.weight";
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, hf, NULL, &err), 0);
    const uint32_t hd = m->cfg.head_dim ? m->cfg.head_dim : m->cfg.hidden / m->cfg.n_heads;
    apr_model_free(m);
    assert_int_equal(hd, 8);
    /* file row 3 = head 0, first half, i = 3: logical (interleaved) row 2*3 + 0 = 6 */
    flip_byte(hf, name, 3, 0, 0x01); /* the lowest mantissa bit of the row's first float */
    assert_int_equal(apr_run(dir, "v", &out, "verify '%s' '%s' --json --ctx 32 --chunks 1", fx, hf), 1);
    json_t *j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "conversion", "kind")), "lossless");
    json_t *w = assert_weight_ref(j, "first_diff", name, 3);
    assert_int_equal(json_integer_value(json_object_get(w, "logical_row")), 6);
    assert_string_equal(json_string_value(json_object_get(w, "role")), "attn_k");
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")),
                           "model.layers.2.self_attn.k_proj.weight row 3 (layer 2 attn_k, logical row 6)"));
    /* every other tensor is still bit-identical */
    json_t *ts = jget(j, "weights", "tensors");
    size_t i, n_diff = 0;
    json_t *t;
    json_array_foreach(ts, i, t) n_diff += json_is_false(json_object_get(t, "bit_identical"));
    assert_int_equal(n_diff, 1);
    json_decref(j);
    free(out);
}

/* ---------------------------------------------------------------- conversions of the fixture */

static void convert_fixture(const char *dir, const char *fx, const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    char *out;
    /* a name without extension is an HF safetensors directory */
    const int rc = apr_run(dir, "convert", &out, "convert '%s' '%s'%s", fx, path,
                           strchr(name, '.') ? "" : " --to safetensors");
    free(out);
    assert_int_equal(rc, 0);
}

static void test_verify_fixture_apr(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-apr");
    char dst[4096];
    convert_fixture(dir, fx, "model.apr", dst, sizeof dst);
    char *out;
    assert_int_equal(apr_run(dir, "v", &out, "verify '%s' '%s' --logits --json --ctx 128 --chunks 2", fx, dst), 0);
    assert_lossless_pass(out);
    free(out);
    /* and back: APR as the source */
    assert_int_equal(apr_run(dir, "r", &out, "verify '%s' '%s' --logits --json --ctx 64 --chunks 1", dst, fx), 0);
    assert_lossless_pass(out);
    free(out);
}

static void test_verify_fixture_safetensors(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-st");
    char dst[4096];
    convert_fixture(dir, fx, "hf", dst, sizeof dst);
    char *out;
    assert_int_equal(apr_run(dir, "v", &out, "verify '%s' '%s' --logits --json --ctx 128 --chunks 2", fx, dst), 0);
    assert_lossless_pass(out);
    free(out);
}

/* ---------------------------------------------------------------- round trips and provenance */

static void roundtrip(const char *via)
{
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-rt");
    char *out;
    const int rc = apr_run(dir, "rt", &out, "verify --roundtrip '%s' --via %s --json", fx, via);
    if (rc)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);
    json_t *j = parse_report(out);
    assert_true(json_is_true(json_object_get(j, "equal")));
    assert_true(json_integer_value(json_object_get(j, "tensors")) == 48);
    json_decref(j);
    free(out);
}

static void test_roundtrip_via_apr(void **state)
{
    (void)state;
    roundtrip("apr");
}

static void test_roundtrip_via_safetensors(void **state)
{
    (void)state;
    roundtrip("safetensors");
}

static void test_roundtrip_via_gguf(void **state)
{
    (void)state;
    /* an APR file goes APR -> GGUF -> APR */
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-rt-gguf");
    char src[4096];
    convert_fixture(dir, fx, "model.apr", src, sizeof src);
    char *out;
    assert_int_equal(apr_run(dir, "rt", &out, "verify --roundtrip '%s' --via gguf", src), 0);
    assert_non_null(strstr(out, "identical"));
    free(out);
}

/* A GGUF whose llama.block_count is an i32 (llama.cpp wants u32): the
 * converter writes the strict type, so the round trip is not exact and the
 * first difference names the key. */
static void test_roundtrip_reports_difference(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-rt-diff");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    assert_int_equal(apr_model_set_kv_i32(m, "llama.block_count", 5), 0);
    const char *odd = tu_path(dir, "i32.gguf");
    assert_int_equal(apr_gguf_write(m, odd, NULL, &err), 0);
    apr_model_free(m);
    char *out;
    assert_int_equal(apr_run(dir, "rt", &out, "verify --roundtrip '%s' --via apr --json", odd), 1);
    json_t *j = parse_report(out);
    assert_true(json_is_false(json_object_get(j, "equal")));
    const char *d = json_string_value(json_object_get(j, "first_difference"));
    assert_non_null(d);
    assert_non_null(strstr(d, "llama.block_count"));
    json_decref(j);
    free(out);
    /* the intermediate files live in a fresh directory under TMPDIR, removed afterwards */
    const char *tmp = tu_path(dir, "tmp");
    assert_int_equal(tu_system(NULL, "mkdir '%s'", tmp), 0);
    const char *log = tu_path(dir, "rt2.log");
    assert_int_equal(tu_system(log, "TMPDIR='%s' '%s' verify --roundtrip '%s' --via safetensors", tmp,
                               tu_apr_bin(), odd), 1);
    out = tu_read_file(log, NULL);
    assert_non_null(strstr(out, "DIFFERENT"));
    free(out);
    assert_int_equal(tu_system(NULL, "test -z \"$(ls -A '%s')\"", tmp), 0);
}

static void test_provenance_detects_flip(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-prov");
    char dst[4096];
    convert_fixture(dir, fx, "model.apr", dst, sizeof dst);
    char *out;
    assert_int_equal(apr_run(dir, "ok", &out, "verify --provenance '%s' '%s'", dst, fx), 0);
    free(out);
    /* flip one byte inside one tensor's payload */
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, dst, NULL, &err), 0);
    const apr_tensor *t = apr_model_tensor(m, "model.layers.2.mlp.down_proj.weight");
    assert_non_null(t);
    const uint64_t off = t->file_offset + t->nbytes / 2;
    apr_model_free(m);
    int fd = open(dst, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, (off_t)off), 1);
    byte ^= 0x01;
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)off), 1);
    close(fd);
    const int rc = apr_run(dir, "bad", &out, "verify --provenance '%s'", dst);
    free(out);
    char *e = read_err(dir, "bad");
    char *o = tu_read_file(tu_path(dir, "bad.out"), NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o ? o : "", "MISMATCH model.layers.2.mlp.down_proj.weight"));
    free(o);
    free(e);
    /* the same as JSON: exactly the flipped tensor is bad, the others re-hash fine */
    assert_int_equal(apr_run(dir, "json", &out, "verify --provenance '%s' --json", dst), 1);
    json_t *j = parse_report(out);
    assert_true(json_is_false(json_object_get(j, "match")));
    assert_int_equal(json_integer_value(jget(j, "checks", "tensors_bad")), 1);
    assert_true(json_integer_value(jget(j, "checks", "tensors")) > 1);
    json_t *mm = json_object_get(j, "mismatches");
    bool named = false;
    for (size_t i = 0; i < json_array_size(mm); i++) {
        const char *w = json_string_value(json_object_get(json_array_get(mm, i), "what"));
        named |= w && !strcmp(w, "model.layers.2.mlp.down_proj.weight");
    }
    assert_true(named);
    json_decref(j);
    free(out);
}

/* fixture -> APR -> GGUF -> safetensors: each record's parent is its source's
 * record, every link verifies against its source, and the end of the chain
 * still computes the fixture's logits bit for bit. */
static void test_provenance_chain(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-chain");
    char a[4096], b[4096], c[4096];
    convert_fixture(dir, fx, "a.apr", a, sizeof a);
    convert_fixture(dir, a, "b.gguf", b, sizeof b);
    convert_fixture(dir, b, "c", c, sizeof c);
    const char *links[3][2] = {{a, fx}, {b, a}, {c, b}};
    for (int i = 0; i < 3; i++) {
        char *out;
        assert_int_equal(apr_run(dir, "link", &out, "verify --provenance '%s' '%s' --json", links[i][0],
                                 links[i][1]), 0);
        json_t *j = parse_report(out);
        assert_true(json_is_true(json_object_get(j, "match")));
        assert_true(json_is_true(jget(j, "checks", "parent_checked")));
        assert_true(json_is_false(jget(j, "checks", "parent_bad")));
        assert_true(json_integer_value(jget(j, "checks", "files")) >= 1);
        json_decref(j);
        free(out);
    }
    /* the chain is in the last record: three records deep, the first with no parent */
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, c, NULL, &err), 0);
    assert_non_null(m->provenance_json);
    json_t *rec = json_loads(m->provenance_json, 0, NULL);
    assert_non_null(rec);
    int depth = 0;
    for (json_t *r = rec; r && json_is_object(r); r = json_object_get(r, "parent"))
        depth++;
    assert_int_equal(depth, 3);
    json_decref(rec);
    apr_model_free(m);
    /* a broken link: verifying b against the fixture instead of a finds the parent mismatch */
    char *out;
    assert_int_equal(apr_run(dir, "wrong", &out, "verify --provenance '%s' '%s' --json", b, fx), 1);
    json_t *j = parse_report(out);
    assert_true(json_is_false(json_object_get(j, "match")));
    json_decref(j);
    free(out);
    /* three lossless hops: still the fixture's logits */
    assert_int_equal(apr_run(dir, "v", &out, "verify '%s' '%s' --logits --json --ctx 64 --chunks 1", fx, c), 0);
    assert_lossless_pass(out);
    free(out);
}

/* ---------------------------------------------------------------- synthetic quantized models */

/* A 4-layer synthetic model (HF safetensors) converted to GGUF: the F32 reference. */
static const char *synth_gguf_arch(const char *dir, const char *arch)
{
    static char path[4096];
    char hf[4096];
    snprintf(hf, sizeof hf, "%s/hf-%s", dir, arch);
    snprintf(path, sizeof path, "%s/model-%s.gguf", dir, arch);
    char *out;
    int rc = apr_run(dir, "synth", &out, "synth '%s' --preset tiny-%s --layers 4 --seed 42", hf, arch);
    free(out);
    assert_int_equal(rc, 0);
    rc = apr_run(dir, "convert", &out, "convert '%s' '%s'", hf, path);
    free(out);
    assert_int_equal(rc, 0);
    return path;
}

static const char *synth_gguf(const char *dir)
{
    return synth_gguf_arch(dir, "llama");
}

static void quantize(const char *dir, const char *src, const char *type, char *dst, size_t cap)
{
    snprintf(dst, cap, "%.*s-%s.gguf", (int)(strlen(src) - 5), src, type);
    char *out;
    const int rc = apr_run(dir, "quantize", &out, "quantize '%s' '%s' --type %s", src, dst, type);
    free(out);
    assert_int_equal(rc, 0);
}

static void test_verify_quantized_synth(void **state)
{
    (void)state;
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-quant");
    const char *ref = synth_gguf(dir);
    const char *types[] = {"Q8_0", "Q6_K", "Q4_K_M"};
    double prev = 0;
    for (size_t i = 0; i < 3; i++) {
        char q[4096];
        quantize(dir, ref, types[i], q, sizeof q);
        char *out;
        const int rc = apr_run(dir, types[i], &out, "verify '%s' '%s' --logits --limits synthetic --json --ctx 128 --chunks 2", ref, q);
        json_t *j = parse_report(out);
        print_message("%s: mean KLD %.6g, p99 %.6g, top-1 %.2f %%, RMS dp %.4f %%, PPL ratio %.5f (limit %g)\n",
                      types[i], json_real_value(jget(j, "kld", "mean")),
                      json_real_value(jget(j, "kld", "p99")),
                      json_real_value(jget(j, "top1_agreement_pct", NULL)),
                      100 * json_real_value(jget(j, "delta_p", "rms")),
                      json_real_value(jget(j, "ppl", "ratio")),
                      json_real_value(jget(j, "verdict", "max_kld")));
        assert_int_equal(rc, 0);
        assert_true(json_is_true(jget(j, "verdict", "pass")));
        assert_string_equal(json_string_value(jget(j, "conversion", "kind")), "quantized");
        assert_string_equal(json_string_value(jget(j, "conversion", "type")), types[i]);
        assert_true(json_is_false(jget(j, "logits", "bit_identical")));
        /* apr quantize's output is reproduced byte for byte: that decides */
        assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "reproduced");
        assert_string_equal(json_string_value(jget(j, "reproduction", "status")), "reproduced");
        assert_string_equal(json_string_value(jget(j, "verdict", "limits")), "synthetic");
        const double kld = json_real_value(jget(j, "kld", "mean"));
        assert_true(kld > 0 && kld <= json_real_value(jget(j, "verdict", "max_kld")));
        /* the trained-model limit is far below a random-weight model's KLD */
        assert_true(apr_parity_default_max_kld(types[i]) < kld);
        assert_true(json_real_value(jget(j, "kld", "median")) <= json_real_value(jget(j, "kld", "p99")));
        /* fewer bits, more divergence */
        assert_true(kld > prev);
        prev = kld;
        assert_true(json_is_null(jget(j, "layers", "first_out")));
        /* weights: lossy, every row within its dtype's limit */
        assert_true(json_is_false(jget(j, "weights", "bit_identical")));
        assert_int_equal(json_integer_value(jget(j, "weights", "rows_over")), 0);
        json_t *wo = jget(j, "weights", "worst");
        const double wr = json_real_value(json_object_get(wo, "rel_err"));
        assert_true(wr > 0 && wr <= json_real_value(json_object_get(wo, "limit")));
        json_t *ts = jget(j, "weights", "tensors");
        /* 4 layers x 9 weights + token_embd, output_norm, output */
        assert_int_equal(json_array_size(ts), 4 * 9 + 3);
        assert_int_equal(json_integer_value(jget(j, "weights", "n_tensors")), 4 * 9 + 3);
        size_t ti;
        json_t *t;
        json_array_foreach(ts, ti, t) {
            /* the tensor's RMS error is a weighted mean of its rows' */
            assert_true(json_real_value(json_object_get(t, "rel_rmse")) <=
                        json_real_value(json_object_get(t, "worst_row_err")) * (1 + 1e-9));
        }
        json_decref(j);
        free(out);
    }
}

/* Qwen2 (NEOX rope, QKV biases, tied embeddings) quantized to Q4_K_M: a KLD
 * report and a pass; then the quantized GGUF converted to APR (fused QKV with
 * mixed Q4_K/Q6_K parts where llama.cpp's mix puts attn_v in Q6_K) must give
 * the quantized GGUF's logits bit for bit. */
static void test_verify_quantized_qwen2_and_apr(void **state)
{
    (void)state;
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-quant-qwen2");
    const char *ref = synth_gguf_arch(dir, "qwen2");
    char q[4096], qa[4096];
    quantize(dir, ref, "Q4_K_M", q, sizeof q);
    char *out;
    int rc = apr_run(dir, "q", &out, "verify '%s' '%s' --logits --json --ctx 128 --chunks 2", ref, q);
    json_t *j = parse_report(out);
    print_message("qwen2 Q4_K_M: mean KLD %.6g, top-1 %.2f %%\n", json_real_value(jget(j, "kld", "mean")),
                  json_real_value(jget(j, "top1_agreement_pct", NULL)));
    assert_int_equal(rc, 0);
    assert_string_equal(json_string_value(jget(j, "conversion", "type")), "Q4_K_M");
    assert_true(json_real_value(jget(j, "kld", "mean")) > 0);
    json_decref(j);
    free(out);

    snprintf(qa, sizeof qa, "%s/q4km.apr", dir);
    rc = apr_run(dir, "conv", &out, "convert '%s' '%s'", q, qa);
    free(out);
    assert_int_equal(rc, 0);
    /* the APR really holds a mixed-dtype fused tensor (4 layers: use_more_bits layers 2, 3) */
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, qa, NULL, &err), 0);
    const apr_tensor *t = apr_model_tensor(m, "model.layers.3.self_attn.qkv_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, APR_DT_ROWCAT);
    /* K row 5 of the fused tensor is file row n_heads*head_dim + 5; find its bytes */
    const uint64_t qr = (uint64_t)m->cfg.n_heads * m->cfg.head_dim, frow = qr + 5;
    uint64_t base = 0, off = t->file_offset, rb = 0;
    for (uint32_t i = 0; i < t->n_parts; i++) {
        rb = apr_dtype_row_bytes(t->parts[i].dtype, t->dims[1]);
        if (frow < base + t->parts[i].rows) {
            off += (frow - base) * rb;
            break;
        }
        base += t->parts[i].rows;
        off += t->parts[i].nbytes;
    }
    char fused_copy[4096];
    snprintf(fused_copy, sizeof fused_copy, "%s/flipped.apr", dir);
    apr_model_free(m);
    assert_int_equal(apr_run(dir, "l", &out, "verify '%s' '%s' --logits --json --ctx 128 --chunks 2", q, qa), 0);
    assert_lossless_pass(out);
    free(out);

    /* one flipped quant byte in that K row (the file CRC would refuse it, so
     * in process with the footer check skipped): the weight comparison names
     * the fused tensor, the K role and the row in the fused tensor */
    copy_file(qa, fused_copy);
    char *all = tu_read_file(fused_copy, NULL);
    assert_non_null(all);
    const uint8_t b = (uint8_t)all[off + rb - 1] ^ 0x10;
    free(all);
    patch_file(fused_copy, off + rb - 1, &b, 1);
    apr_model *gq = NULL, *fa = NULL;
    apr_open_opts oo = {.skip_footer_crc = true};
    assert_int_equal(apr_model_open(&gq, q, NULL, &err), 0);
    assert_int_equal(apr_model_open(&fa, fused_copy, &oo, &err), 0);
    apr_weights_cmp w;
    assert_int_equal(apr_weights_compare(gq, fa, 2, &w, &err), 0);
    assert_false(w.bit_identical);
    assert_true(w.first_diff >= 0);
    const apr_weight_tensor *d = &w.t[w.first_diff];
    assert_string_equal(d->name, "model.layers.3.self_attn.qkv_proj.weight");
    assert_string_equal(d->role, "attn_k");
    assert_int_equal(d->layer, 3);
    assert_int_equal(d->first_diff_row, 5);
    assert_int_equal(d->first_diff_file_row, (int64_t)frow);
    for (uint32_t i = 0; i < w.n_tensors; i++)
        assert_true(w.t[i].bit_identical == ((int32_t)i != w.first_diff));
    apr_weights_cmp_free(&w);
    apr_model_free(gq);
    apr_model_free(fa);
}

/* One 2-D weight row zeroed in a Q4_K_M model: it moves the layer's std by
 * well under 1 % and the mean KLD a little (the std band and the KLD limit
 * both pass it), but the weight check fails naming tensor and row. Then a
 * zeroed 1-D norm of a Q8_0 model: named by the weight check and by the std
 * band (layer 2, ffn_norm). The untouched files pass. */
static void test_verify_corrupt_quantized_names_layer(void **state)
{
    (void)state;
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-corrupt-q");
    const char *ref = synth_gguf(dir);
    char q[4096], bad[4096];
    quantize(dir, ref, "Q4_K_M", q, sizeof q);
    snprintf(bad, sizeof bad, "%s/bad-q4km.gguf", dir);
    copy_file(q, bad);
    zero_row(bad, "blk.1.attn_q.weight", 17);
    char *out;
    assert_int_equal(apr_run(dir, "row", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, bad), 1);
    json_t *j = parse_report(out);
    print_message("zeroed Q4_K row: mean KLD %.4g, first_out %s\n", json_real_value(jget(j, "kld", "mean")),
                  json_is_null(jget(j, "layers", "first_out")) ? "none" : "set");
    assert_true(json_is_false(jget(j, "verdict", "pass")));
    json_t *w = assert_weight_ref(j, "worst", "blk.1.attn_q.weight", 17);
    assert_true(fabs(json_real_value(json_object_get(w, "rel_err")) - 1.0) < 1e-6);
    assert_string_equal(json_string_value(json_object_get(w, "dtype")), "Q4_K");
    assert_int_equal(json_integer_value(jget(j, "weights", "rows_over")), 1);
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")),
                           "blk.1.attn_q.weight row 17 (layer 1 attn_q): relative error 1.000 (limit 0.3 for Q4_K)"));
    /* the reproduction names the tensor and row too, and the statistics decided */
    assert_string_equal(json_string_value(jget(j, "reproduction", "status")), "differs");
    json_t *rf = jget(jget(j, "reproduction", NULL), "first_diff", NULL);
    assert_string_equal(json_string_value(json_object_get(rf, "tensor")), "blk.1.attn_q.weight");
    assert_int_equal(json_integer_value(json_object_get(rf, "row")), 17);
    assert_int_equal(json_integer_value(jget(j, "reproduction", "n_differ")), 1);
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "logits");
    assert_true(json_is_true(jget(j, "forward_pass", NULL)));
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")),
                           "not reproduced: 1 of 39 tensors differ; first blk.1.attn_q.weight row 17"));
    json_decref(j);
    free(out);
    /* the table names it too */
    assert_int_equal(apr_run(dir, "rowt", &out, "verify '%s' '%s' --ctx 128 --chunks 1", ref, bad), 1);
    assert_non_null(strstr(out, "worst row blk.1.attn_q.weight row 17"));
    free(out);
    /* the untouched file is reproduced: decided in seconds, no forward pass */
    assert_int_equal(apr_run(dir, "ok4", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, q), 0);
    j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "reproduced");
    assert_true(json_is_false(jget(j, "forward_pass", NULL)));
    assert_true(json_is_null(jget(j, "kld", NULL)));
    assert_int_equal(json_integer_value(jget(j, "reproduction", "n_differ")), 0);
    assert_true(json_integer_value(jget(j, "reproduction", "rebuilt")) > 0);
    json_decref(j);
    free(out);
    /* the same DST with the trained-model limit and the forward pass forced:
     * still reproduced (the KLD of a random-weight model is reported, not judged) */
    assert_int_equal(apr_run(dir, "ok4l", &out, "verify '%s' '%s' --json --logits --ctx 128 --chunks 1", ref, q), 0);
    j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "reproduced");
    assert_string_equal(json_string_value(jget(j, "verdict", "limits")), "trained");
    assert_true(json_real_value(jget(j, "kld", "mean")) > json_real_value(jget(j, "verdict", "max_kld")));
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")), "reported, not judged"));
    json_decref(j);
    free(out);

    /* the 1-D ffn_norm of layer 2 (a single ggml row) zeroed in a Q8_0 model */
    quantize(dir, ref, "Q8_0", q, sizeof q);
    snprintf(bad, sizeof bad, "%s/bad-q8.gguf", dir);
    copy_file(q, bad);
    zero_row(bad, "blk.2.ffn_norm.weight", 0);
    assert_int_equal(apr_run(dir, "c", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, bad), 1);
    j = parse_report(out);
    assert_true(json_is_false(jget(j, "verdict", "pass")));
    json_t *fo = jget(j, "layers", "first_out");
    assert_int_equal(json_integer_value(json_object_get(fo, "layer")), 2);
    assert_string_equal(json_string_value(json_object_get(fo, "step")), "ffn_norm");
    assert_weight_ref(j, "worst", "blk.2.ffn_norm.weight", 0);
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")), "layer 2"));
    json_decref(j);
    free(out);
    /* the untouched file still passes */
    assert_int_equal(apr_run(dir, "ok", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, q), 0);
    free(out);
}

/* A row holding another row's values (a layout bug: same magnitude, wrong
 * place) in the Q4_K_M model's ffn_down of layer 1: relative error near
 * sqrt(2), named by tensor and row. */
static void test_verify_scrambled_row_quantized(void **state)
{
    (void)state;
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-scramble-q");
    const char *ref = synth_gguf(dir);
    char q[4096], bad[4096];
    quantize(dir, ref, "Q4_K_M", q, sizeof q);
    snprintf(bad, sizeof bad, "%s/bad.gguf", dir);
    copy_file(q, bad);
    move_row(bad, "blk.1.ffn_down.weight", 40, 17);
    char *out;
    assert_int_equal(apr_run(dir, "s", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, bad), 1);
    json_t *j = parse_report(out);
    json_t *w = assert_weight_ref(j, "worst", "blk.1.ffn_down.weight", 17);
    const double e = json_real_value(json_object_get(w, "rel_err"));
    print_message("moved row: relative error %.4f (%s)\n", e, json_string_value(json_object_get(w, "dtype")));
    assert_true(e > 1.1 && e < 1.8);
    assert_int_equal(json_integer_value(jget(j, "weights", "rows_over")), 1);
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")), "blk.1.ffn_down.weight row 17 (layer 1 ffn_down)"));
    json_decref(j);
    free(out);
}

/* A legacy llama-imatrix .dat for every 2-D weight of the GGUF at src, with
 * importances spread log-uniformly over eight orders of magnitude (as outlier
 * channels make them in real models), deterministic. */
static void write_imatrix(const char *src, const char *path)
{
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, src, NULL, &err), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        n += m->tensors[i].ndim == 2;
    fwrite(&n, 4, 1, f);
    uint64_t s = 0x1a2b3c4du;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (t->ndim != 2)
            continue;
        const int32_t len = (int32_t)strlen(t->name), ncall = 1, nval = (int32_t)t->dims[1];
        fwrite(&len, 4, 1, f);
        fwrite(t->name, 1, (size_t)len, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        for (int32_t c = 0; c < nval; c++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const float v = powf(10.0f, -6.0f + 8.0f * (float)((s >> 40) & 0xFFFFFF) / 16777216.0f);
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    apr_model_free(m);
}

/* Quantized with an importance matrix, rows legitimately carry unweighted
 * errors above the plain limits (the matrix lets unimportant columns go):
 * `apr quantize` records quantize.imatrix.*, verify reads it, judges such
 * rows for gross damage only and passes; a zeroed row still fails, named. */
static void test_verify_imatrix_quantized(void **state)
{
    (void)state;
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-imatrix");
    const char *ref = synth_gguf(dir);
    char im[4096], q[4096], bad[4096];
    snprintf(im, sizeof im, "%s/m.imatrix", dir);
    write_imatrix(ref, im);
    snprintf(q, sizeof q, "%s/q-imat.gguf", dir);
    char *out;
    assert_int_equal(apr_run(dir, "qi", &out, "quantize '%s' '%s' --type Q4_K_M --imatrix '%s'", ref, q, im), 0);
    free(out);
    /* the imatrix DST records is in SRC's directory: reproduced with it */
    assert_int_equal(apr_run(dir, "vr", &out, "verify '%s' '%s' --json", ref, q), 0);
    json_t *j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "reproduced");
    assert_string_equal(json_string_value(jget(j, "reproduction", "imatrix")), im);
    json_decref(j);
    free(out);
    /* moved away: reproduction is unavailable (and says why), the statistics decide */
    char im2[4096];
    snprintf(im2, sizeof im2, "%s/moved.dat", dir);
    assert_int_equal(rename(im, im2), 0);
    assert_int_equal(apr_run(dir, "vi", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1 --limits synthetic", ref, q), 0);
    j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "reproduction", "status")), "unavailable");
    assert_non_null(strstr(json_string_value(jget(j, "reproduction", "why")), "--imatrix"));
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "logits");
    json_decref(j);
    free(out);
    /* --imatrix names it: reproduced again */
    assert_int_equal(apr_run(dir, "vg", &out, "verify '%s' '%s' --json --imatrix '%s'", ref, q, im2), 0);
    j = parse_report(out);
    assert_string_equal(json_string_value(jget(j, "verdict", "rule")), "reproduced");
    json_decref(j);
    free(out);
    assert_int_equal(apr_run(dir, "vn", &out, "verify '%s' '%s' --json --imatrix /nonexistent.dat", ref, q), 2);
    free(out);
    assert_int_equal(rename(im2, im), 0);
    assert_int_equal(apr_run(dir, "vi2", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1 --logits --limits synthetic", ref, q), 0);
    j = parse_report(out);
    assert_true(json_is_true(jget(j, "weights", "imatrix")));
    json_t *w = jget(j, "weights", "worst");
    print_message("imatrix Q4_K_M: worst row error %.3f (%s, limit %.3g)\n",
                  json_real_value(json_object_get(w, "rel_err")), json_string_value(json_object_get(w, "dtype")),
                  json_real_value(json_object_get(w, "limit")));
    assert_true(json_is_true(jget(j, "verdict", "pass")));
    json_decref(j);
    free(out);
    snprintf(bad, sizeof bad, "%s/bad-imat.gguf", dir);
    copy_file(q, bad);
    zero_row(bad, "blk.2.ffn_up.weight", 9);
    assert_int_equal(apr_run(dir, "vb", &out, "verify '%s' '%s' --json --ctx 128 --chunks 1", ref, bad), 1);
    j = parse_report(out);
    w = assert_weight_ref(j, "worst", "blk.2.ffn_up.weight", 9);
    assert_true(json_is_true(json_object_get(w, "zeroed")));
    assert_non_null(strstr(json_string_value(jget(j, "verdict", "reason")),
                           "blk.2.ffn_up.weight row 9 (layer 2 ffn_up): every value is 0 in DST"));
    json_decref(j);
    free(out);
}

/* ---------------------------------------------------------------- corpus text */

/* --text / -f: a text file gives the same tokens as the same text passed as
 * --prompt; an empty file, a missing one or one holding a NUL byte is an
 * error (exit 2) that says so. */
static void test_verify_text_file(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    const char *dir = tu_tmpdir("verify-text");
    const char *text = "Once upon a time, there was a little girl named Lily. She liked to play in the park.\n"
                       "One day she saw a big dog.\n";
    const char *tf = tu_path(dir, "corpus.txt");
    assert_int_equal(tu_write_file(tf, text, strlen(text)), 0);
    char *out;
    assert_int_equal(apr_run(dir, "t", &out, "verify '%s' '%s' --json --logits --all-positions -f '%s'", fx, fx, tf), 0);
    json_t *j = parse_report(out);
    const json_int_t n = json_integer_value(jget(j, "tokens", "positions"));
    assert_non_null(strstr(json_string_value(jget(j, "tokens", "source")), "corpus.txt"));
    assert_true(json_is_true(jget(j, "verdict", "pass")));
    json_decref(j);
    free(out);
    assert_int_equal(apr_run(dir, "p", &out, "verify '%s' '%s' --json --logits --all-positions --prompt '%s'", fx, fx,
                             text),
                     0);
    j = parse_report(out);
    assert_int_equal(json_integer_value(jget(j, "tokens", "positions")), n);
    json_decref(j);
    free(out);

    const char *empty = tu_path(dir, "empty.txt");
    assert_int_equal(tu_write_file(empty, "", 0), 0);
    assert_int_equal(apr_run(dir, "e", &out, "verify '%s' '%s' --text '%s'", fx, fx, empty), 2);
    free(out);
    char *err = read_err(dir, "e");
    assert_non_null(strstr(err, "is empty"));
    free(err);
    const char *nul = tu_path(dir, "nul.txt");
    assert_int_equal(tu_write_file(nul, "abc\0def", 7), 0);
    assert_int_equal(apr_run(dir, "z", &out, "verify '%s' '%s' --text '%s'", fx, fx, nul), 2);
    free(out);
    err = read_err(dir, "z");
    assert_non_null(strstr(err, "NUL byte at offset 3"));
    free(err);
    assert_int_equal(apr_run(dir, "m", &out, "verify '%s' '%s' --text '%s/none.txt'", fx, fx, dir), 2);
    free(out);
    err = read_err(dir, "m");
    assert_non_null(strstr(err, "No such file"));
    free(err);
}

/* Streaming: the trained tinycoder's byte-level BPE tokenizer over heldout.py
 * read in 4 KiB blocks (cut only after a newline that a non-space follows)
 * gives exactly the ids of the whole text encoded at once; max_tokens stops
 * early with a prefix of them. */
static void test_text_file_streamed_equals_whole(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(gg, "fixtures/tinycoder/tinycoder-bf16.gguf");
    TU_REQUIRE_SHARED(held, "fixtures/tinycoder/heldout.py");
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, gg, NULL, &err), 0);
    char *text = tu_read_file(held, NULL);
    assert_non_null(text);
    int32_t *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    char note[512];
    assert_int_equal(apr_parity_tokens(m, m, text, 0, &a, &na, note, sizeof note, &err), 0);
    assert_int_equal(apr_parity_tokens_text_file(m, m, held, 0, 4096, &b, &nb, note, sizeof note, &err), 0);
    print_message("heldout.py: %zu tokens whole, %zu streamed in 4 KiB blocks\n", na, nb);
    assert_true(na > 10000);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    assert_int_equal(apr_parity_tokens_text_file(m, m, held, 300, 4096, &c, &nc, note, sizeof note, &err), 0);
    assert_true(nc >= 300 && nc < na);
    assert_memory_equal(a, c, 300 * sizeof *a);
    assert_non_null(strstr(note, "enough for the chunks"));
    free(a);
    free(b);
    free(c);
    free(text);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- in process */

static void test_verify_models_in_process(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    apr_model *m = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    int32_t *ids = NULL;
    size_t n = 0;
    char note[256];
    assert_int_equal(apr_parity_tokens(m, m, NULL, 0, &ids, &n, note, sizeof note, &err), 0);
    /* the built-in text is a few thousand tokens for this 512-token vocabulary */
    assert_true(n > 1500);
    assert_int_equal(ids[0], m->tok.bos_id);
    apr_verify_opts o = {.ctx = 32, .chunks = 3, .all_positions = true, .bos_id = m->tok.bos_id};
    apr_verify_result r;
    assert_int_equal(apr_verify_models(m, m, ids, n, &o, &r, &err), 0);
    assert_int_equal(r.s.n_positions, 96);
    assert_int_equal(r.s.n_scored, 93);
    assert_true(r.s.bit_identical);
    assert_int_equal(r.tc.first_diff_layer, -1);
    assert_int_equal(r.tc.n_layers, 5);
    /* the trace holds real statistics: the residual stream has spread */
    assert_true(r.tr_src.s[4 * APR_TR_COUNT + APR_TR_RESID2].std > 0);
    apr_verify_result_free(&r);
    /* too few tokens for the requested chunks is an error, not a short run */
    o.chunks = 1000;
    assert_true(apr_verify_models(m, m, ids, n, &o, &r, &err) < 0);
    free(ids);
    apr_model_free(m);
}

/* apr_weights_compare directly: a model against itself is bit-identical in
 * every one of its 48 weights; models of different shapes are a mismatch
 * error; the row limits grow as bits shrink and stay under half of a zeroed
 * row's error. */
static void test_weights_compare_in_process(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(fx, FIXTURE);
    REQUIRE_APR(apr);
    apr_model *m = NULL, *s = NULL;
    apr_err err = {0};
    assert_int_equal(apr_model_open(&m, fx, NULL, &err), 0);
    apr_weights_cmp w;
    assert_int_equal(apr_weights_compare(m, m, 2, &w, &err), 0);
    assert_int_equal(w.n_tensors, 48);
    assert_true(w.bit_identical);
    assert_int_equal(w.first_diff, -1);
    assert_int_equal(w.n_rows_over, 0);
    assert_true(w.worst >= 0);
    assert_true(w.t[w.worst].worst_row_err == 0.0);
    for (uint32_t i = 0; i < w.n_tensors; i++)
        assert_true(w.t[i].bit_identical && w.t[i].rel_rmse == 0.0);
    assert_string_equal(w.t[0].name, "token_embd.weight");
    assert_int_equal(w.t[0].rows, 512);
    apr_weights_cmp_free(&w);

    const char *dir = tu_tmpdir("verify-weights-mismatch");
    const char *other = synth_gguf(dir);
    assert_int_equal(apr_model_open(&s, other, NULL, &err), 0);
    assert_int_equal(apr_weights_compare(m, s, 0, &w, &err), APR_E_MISMATCH);
    assert_non_null(strstr(err.msg, "differ"));
    assert_int_equal(w.n_tensors, 0);
    apr_model_free(s);
    apr_model_free(m);

    const apr_dtype order[] = {APR_DT_F32, APR_DT_F16, APR_DT_BF16, APR_DT_Q8_0, APR_DT_Q6_K,
                               APR_DT_Q5_K, APR_DT_Q5_0, APR_DT_Q4_K, APR_DT_Q4_1, APR_DT_Q4_0};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const double l = apr_weights_row_limit(order[i]);
        assert_true(l > 0 && l <= 0.5);
        if (i)
            assert_true(l >= apr_weights_row_limit(order[i - 1]));
    }
    assert_true(apr_weights_row_limit(APR_DT_Q2_K) < 0);
}

static void test_tokens_without_tokenizer(void **state)
{
    (void)state;
    /* models without a vocabulary get deterministic ids in range */
    apr_model *a = apr_model_new(APR_FMT_GGUF), *b = apr_model_new(APR_FMT_GGUF);
    a->has_cfg = b->has_cfg = true;
    a->cfg.vocab = b->cfg.vocab = 300;
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    char note[256];
    apr_err err = {0};
    assert_int_equal(apr_parity_tokens(a, b, NULL, 1000, &x, &nx, note, sizeof note, &err), 0);
    assert_int_equal(apr_parity_tokens(a, b, NULL, 1000, &y, &ny, note, sizeof note, &err), 0);
    assert_int_equal(nx, 1000);
    assert_memory_equal(x, y, nx * sizeof *x);
    int changes = 0;
    for (size_t i = 0; i < nx; i++) {
        assert_true(x[i] >= 0 && x[i] < 300);
        changes += i && x[i] != x[i - 1];
    }
    assert_true(changes > 900);
    assert_non_null(strstr(note, "no tokenizer"));
    free(x);
    free(y);
    /* a prompt cannot be used without a tokenizer */
    assert_true(apr_parity_tokens(a, b, "hello", 10, &x, &nx, note, sizeof note, &err) < 0);
    apr_model_free(a);
    apr_model_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_without_tokenizer),
        cmocka_unit_test(test_verify_models_in_process),
        cmocka_unit_test(test_verify_fixture_self),
        cmocka_unit_test(test_verify_fixture_prompt),
        cmocka_unit_test(test_verify_report_disk_full),
        cmocka_unit_test(test_verify_tokenizer_mismatch),
        cmocka_unit_test(test_verify_bad_args),
        cmocka_unit_test(test_verify_corrupt_lossless_names_layer),
        cmocka_unit_test(test_verify_flip_lossless_localized),
        cmocka_unit_test(test_verify_fixture_apr),
        cmocka_unit_test(test_verify_fixture_safetensors),
        cmocka_unit_test(test_roundtrip_via_apr),
        cmocka_unit_test(test_roundtrip_via_safetensors),
        cmocka_unit_test(test_roundtrip_via_gguf),
        cmocka_unit_test(test_roundtrip_reports_difference),
        cmocka_unit_test(test_provenance_detects_flip),
        cmocka_unit_test(test_provenance_chain),
        cmocka_unit_test(test_verify_quantized_synth),
        cmocka_unit_test(test_verify_corrupt_quantized_names_layer),
        cmocka_unit_test(test_verify_scrambled_row_quantized),
        cmocka_unit_test(test_verify_imatrix_quantized),
        cmocka_unit_test(test_weights_compare_in_process),
        cmocka_unit_test(test_verify_quantized_qwen2_and_apr),
        cmocka_unit_test(test_verify_text_file),
        cmocka_unit_test(test_text_file_streamed_equals_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
