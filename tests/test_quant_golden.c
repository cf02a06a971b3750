/* test_quant_golden.c - every line of ../shared/golden/quant_golden.txt:
 * generate the documented input, quantize it with the reference kernels,
 * the fast kernels and the threaded driver, and compare size, sha256 and
 * (when given) the full hex with what ggml produced. */
#include "test_util.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct golden_line {
    char type[16];
    uint64_t seed, rows, cols;
    int imatrix;
    uint64_t bytes;
    char sha[65];
    char *hex; /* NULL when absent */
} golden_line;

/* Parses "TYPE seed=S rows=R cols=C imatrix=I bytes=N sha256=H [hex=...]". */
static int parse_line(char *line, golden_line *g)
{
    memset(g, 0, sizeof *g);
    char *save = NULL;
    char *tok = strtok_r(line, " \t\r\n", &save);
    if (!tok || strlen(tok) >= sizeof g->type)
        return -1;
    strcpy(g->type, tok);
    int have = 0;
    while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return -1;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(tok, "seed")) g->seed = strtoull(v, NULL, 10), have |= 1;
        else if (!strcmp(tok, "rows")) g->rows = strtoull(v, NULL, 10), have |= 2;
        else if (!strcmp(tok, "cols")) g->cols = strtoull(v, NULL, 10), have |= 4;
        else if (!strcmp(tok, "imatrix")) g->imatrix = atoi(v), have |= 8;
        else if (!strcmp(tok, "bytes")) g->bytes = strtoull(v, NULL, 10), have |= 16;
        else if (!strcmp(tok, "sha256") && strlen(v) == 64) strcpy(g->sha, v), have |= 32;
        else if (!strcmp(tok, "hex")) g->hex = (char *)v;
    }
    return have == 63 ? 0 : -1;
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = 0;
}

/* Returns the number of mismatching checks for one line (0 = pass). */
static int check_line(const golden_line *g, int lineno)
{
    int dt = apr_dtype_from_name(g->type);
    if (dt < 0) {
        print_message("line %d: unknown type %s\n", lineno, g->type);
        return 1;
    }
    const uint64_t n = g->rows * g->cols;
    float *x = malloc(n * sizeof(float));
    float *w = malloc(g->cols * sizeof(float));
    assert_non_null(x);
    assert_non_null(w);
    tu_golden_input(g->seed, g->rows, g->cols, x);
    tu_golden_imatrix(g->seed, g->cols, w);
    const float *imat = g->imatrix ? w : NULL;

    const uint64_t want = apr_dtype_row_bytes(dt, g->cols) * g->rows;
    int bad = 0;
    if (want != g->bytes) {
        print_message("line %d: %s size %llu, golden says %llu\n", lineno, g->type, (unsigned long long)want,
                      (unsigned long long)g->bytes);
        bad++;
    }
    uint8_t *out[3];
    size_t got[3];
    const char *how[3] = {"ref", "fast", "mt4"};
    for (int k = 0; k < 3; k++) {
        out[k] = malloc(want + 1);
        assert_non_null(out[k]);
    }
    got[0] = apr_quantize_chunk_ref(dt, x, out[0], (int64_t)g->rows, (int64_t)g->cols, imat);
    got[1] = apr_quantize_chunk(dt, x, out[1], (int64_t)g->rows, (int64_t)g->cols, imat);
    got[2] = apr_quantize_chunk_mt(dt, x, out[2], (int64_t)g->rows, (int64_t)g->cols, imat, 4);
    for (int k = 0; k < 3; k++) {
        if (got[k] != want) {
            print_message("line %d: %s %s returned %zu bytes\n", lineno, g->type, how[k], got[k]);
            bad++;
            continue;
        }
        uint8_t dg[32];
        char hex[65];
        apr_sha256(out[k], got[k], dg);
        apr_sha256_hex(dg, hex);
        if (strcmp(hex, g->sha) != 0) {
            /* find the first differing block for the report, when hex is there */
            print_message("line %d: %s seed=%llu %llux%llu imatrix=%d (%s): sha256 %s != golden %s\n", lineno,
                          g->type, (unsigned long long)g->seed, (unsigned long long)g->rows,
                          (unsigned long long)g->cols, g->imatrix, how[k], hex, g->sha);
            bad++;
        }
        if (g->hex) {
            char *h = malloc(2 * got[k] + 1);
            assert_non_null(h);
            to_hex(out[k], got[k], h);
            if (strcmp(h, g->hex) != 0) {
                size_t i = 0;
                while (h[i] && h[i] == g->hex[i])
                    i++;
                print_message("line %d: %s (%s): hex differs at byte %zu\n", lineno, g->type, how[k], i / 2);
                bad++;
            }
            free(h);
        }
    }
    for (int k = 0; k < 3; k++)
        free(out[k]);
    free(x);
    free(w);
    return bad;
}

static void test_golden_file(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, "golden/quant_golden.txt");
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    int lineno = 0, n_lines = 0, n_bad_lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (!*line || *line == '#')
            continue;
        golden_line g;
        char *copy = strdup(line);
        assert_non_null(copy);
        if (parse_line(copy, &g) != 0) {
            print_message("line %d: cannot parse\n", lineno);
            n_bad_lines++;
            free(copy);
            continue;
        }
        n_lines++;
        if (check_line(&g, lineno))
            n_bad_lines++;
        free(copy);
    }
    free(text);
    print_message("golden: %d lines checked, %d failing\n", n_lines, n_bad_lines);
    assert_true(n_lines >= 42);
    assert_int_equal(n_bad_lines, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
