/* verify_files.c - the file-level checks of `apr verify`:
 *   --roundtrip FILE --via FMT: FILE -> FMT -> FILE's format with the
 *       converter, then every tensor payload and metadata entry of the result
 *       compared with FILE's (provenance excluded);
 *   --provenance FILE [SOURCE]: re-hash FILE's tensors (and SOURCE) against
 *       FILE's provenance record and report every mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "convert.h"
#include "parity.h"
#include "verify_cmds.h"

/* Metadata a conversion adds by design and a round trip may not restore
 * (docs/verify.md): the provenance record and its flattened keys. */
static const char *const roundtrip_ignore[] = {"apr.provenance", NULL};

static apr_format parse_via(const char *via)
{
    if (!strcasecmp(via, "apr"))
        return APR_FMT_APR;
    if (!strcasecmp(via, "gguf"))
        return APR_FMT_GGUF;
    if (!strcasecmp(via, "safetensors") || !strcasecmp(via, "hf"))
        return APR_FMT_SAFETENSORS;
    return APR_FMT_UNKNOWN;
}

/* Output path for format f inside dir: safetensors goes to a directory so that
 * config.json and tokenizer.json travel with the weights. */
static void out_path(char *buf, size_t cap, const char *dir, const char *stem, apr_format f)
{
    switch (f) {
    case APR_FMT_GGUF: snprintf(buf, cap, "%s/%s.gguf", dir, stem); break;
    case APR_FMT_APR: snprintf(buf, cap, "%s/%s.apr", dir, stem); break;
    default: snprintf(buf, cap, "%s/%s-hf", dir, stem); break;
    }
}

int apr_verify_report_written(int e)
{
    e = apr_stdout_error(e);
    if (!e)
        return 0;
    fprintf(stderr, "apr verify: writing the report: %s\n", strerror(e));
    return -1;
}

int apr_verify_report_json_out(const char *txt)
{
    if (!txt) {
        fprintf(stderr, "apr verify: out of memory writing the report\n");
        return -1;
    }
    return apr_verify_report_written(printf("%s\n", txt) < 0 ? errno : 0);
}

static int convert_step(const char *in, const char *out, apr_format to, apr_err *err)
{
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.to = to;
    o.command_line = "apr verify --roundtrip";
    apr_convert_stats st;
    return apr_convert_file(in, out, &o, &st, err);
}

static void remove_tree(const char *path)
{
    /* the intermediate files are ours, in a directory we created */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "apr verify: could not remove %s\n", path);
}

int apr_verify_roundtrip_cmd(const char *path, const char *via, bool json)
{
    const apr_format to = parse_via(via);
    if (to == APR_FMT_UNKNOWN) {
        fprintf(stderr, "apr verify: --via is apr, gguf or safetensors, not '%s'\n", via);
        return 2;
    }
    apr_model *a = NULL;
    apr_err err = {0};
    if (apr_model_open(&a, path, NULL, &err)) {
        fprintf(stderr, "apr verify: %s: %s\n", path, err.msg);
        return 2;
    }
    const apr_format from = a->format;
    if (from == to) {
        fprintf(stderr, "apr verify: %s is already %s; --via must name another format\n", path,
                apr_format_name(to));
        apr_model_free(a);
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    char dir[4096], mid[4200], back[4200];
    snprintf(dir, sizeof dir, "%s/apr-roundtrip-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("apr verify: mkdtemp");
        apr_model_free(a);
        return 2;
    }
    out_path(mid, sizeof mid, dir, "via", to);
    out_path(back, sizeof back, dir, "back", from);

    int rc = 2;
    apr_model *b = NULL;
    char diff[1024] = "";
    if (convert_step(path, mid, to, &err)) {
        fprintf(stderr, "apr verify: %s -> %s: %s\n", apr_format_name(from), apr_format_name(to), err.msg);
        goto out;
    }
    if (convert_step(mid, back, from, &err)) {
        fprintf(stderr, "apr verify: %s -> %s: %s\n", apr_format_name(to), apr_format_name(from), err.msg);
        goto out;
    }
    if (apr_model_open(&b, back, NULL, &err)) {
        fprintf(stderr, "apr verify: %s: %s\n", back, err.msg);
        goto out;
    }
    const int c = apr_models_compare(a, b, roundtrip_ignore, diff, sizeof diff);
    if (c < 0) {
        fprintf(stderr, "apr verify: comparison failed\n");
        goto out;
    }
    rc = c == 0 ? 0 : 1;
    if (json) {
        json_t *j = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:s?}", "file", path, "via",
                              apr_format_name(to), "back_to", apr_format_name(from), "equal", c == 0,
                              "tensors", (json_int_t)a->n_tensors, "metadata", (json_int_t)a->n_kvs,
                              "first_difference", c ? diff : NULL);
        char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (apr_verify_report_json_out(txt))
            rc = 2;
        free(txt);
        json_decref(j);
    } else if (c == 0) {
        printf("roundtrip %s -> %s -> %s: identical (%llu tensors, %llu metadata entries; "
               "provenance excluded)\n",
               apr_format_name(from), apr_format_name(to), apr_format_name(from),
               (unsigned long long)a->n_tensors, (unsigned long long)a->n_kvs);
    } else {
        printf("roundtrip %s -> %s -> %s: DIFFERENT - first difference: %s\n", apr_format_name(from),
               apr_format_name(to), apr_format_name(from), diff);
    }
    if (!json && apr_verify_report_written(0))
        rc = 2;
out:
    apr_model_free(b);
    apr_model_free(a);
    remove_tree(dir);
    return rc;
}

/* ---- provenance */

typedef struct prov_report {
    bool json;
    json_t *bad;     /* mismatches, for --json */
    bool lost;       /* --json: a mismatch could not be stored (out of memory) */
    uint64_t n_ok, n_bad;
} prov_report;

static void prov_cb(void *user, bool ok, const char *what, const char *msg)
{
    prov_report *r = user;
    if (ok) {
        r->n_ok++;
        return;
    }
    r->n_bad++;
    if (r->json)
        r->lost |= json_array_append_new(r->bad, json_pack("{s:s?,s:s}", "what", what, "message", msg ? msg : "")) != 0;
    else
        printf("  MISMATCH %s: %s\n", what ? what : "(record)", msg ? msg : "");
}

int apr_verify_provenance_cmd(const char *path, const char *source, bool json)
{
    /* An APR file's footer CRC32 would reject a damaged file before any
     * tensor is looked at; open without it so that the per-tensor hashes can
     * name what changed, and report the CRC separately. */
    apr_model *m = NULL;
    apr_err err = {0};
    const apr_open_opts no_crc = {.skip_footer_crc = true};
    if (apr_model_open(&m, path, &no_crc, &err)) {
        fprintf(stderr, "apr verify: %s: %s\n", path, err.msg);
        return 2;
    }
    prov_report r = {.json = json, .bad = json ? json_array() : NULL};
    if (json && !r.bad) {
        fprintf(stderr, "apr verify: out of memory\n");
        apr_model_free(m);
        return 2;
    }
    apr_prov_check res;
    memset(&res, 0, sizeof res);
    if (!json)
        printf("provenance of %s%s%s\n", path, source ? " against " : "", source ? source : "");
    bool crc_bad = false;
    if (m->format == APR_FMT_APR) {
        apr_model *full = NULL;
        apr_err e2 = {0};
        if (apr_model_open(&full, path, NULL, &e2)) {
            crc_bad = true;
            prov_cb(&r, false, "(file)", e2.msg);
        }
        apr_model_free(full);
    }
    int rc = apr_provenance_verify(m, source, 0, prov_cb, &r, &res, &err);
    if (rc == 0 && crc_bad)
        rc = APR_E_MISMATCH;
    int exit_code;
    if (rc == 0 || rc == APR_E_MISMATCH) {
        exit_code = rc == 0 ? 0 : 1;
        if (json) {
            json_t *j = json_pack(
                "{s:s,s:s?,s:b,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b},s:o}", "file", path,
                "source", source, "match", rc == 0, "checks", "tensors", (json_int_t)res.tensors_checked,
                "tensors_bad", (json_int_t)res.tensors_bad, "unrecorded", (json_int_t)res.unrecorded,
                "missing", (json_int_t)res.missing, "output_files", (json_int_t)res.outputs_checked,
                "output_files_bad", (json_int_t)res.outputs_bad, "files", (json_int_t)res.files_checked,
                "files_bad", (json_int_t)res.files_bad, "source_tensors",
                (json_int_t)res.src_tensors_checked, "source_tensors_bad",
                (json_int_t)res.src_tensors_bad, "parent_checked", res.parent_checked, "parent_bad",
                res.parent_bad, "mismatches", r.bad);
            r.bad = NULL;
            char *txt = j && !r.lost ? json_dumps(j, JSON_COMPACT) : NULL; /* never a report missing a mismatch */
            if (apr_verify_report_json_out(txt))
                exit_code = 2;
            free(txt);
            json_decref(j);
        } else {
            if (res.outputs_checked)
                printf("  %llu output files (splits or shards) checked, %llu bad\n", (unsigned long long)res.outputs_checked,
                       (unsigned long long)res.outputs_bad);
            printf("  %llu tensors re-hashed (%llu bad), %llu unrecorded, %llu missing; "
                   "%llu source files (%llu bad), %llu source tensors (%llu bad)%s\n",
                   (unsigned long long)res.tensors_checked, (unsigned long long)res.tensors_bad,
                   (unsigned long long)res.unrecorded, (unsigned long long)res.missing,
                   (unsigned long long)res.files_checked, (unsigned long long)res.files_bad,
                   (unsigned long long)res.src_tensors_checked, (unsigned long long)res.src_tensors_bad,
                   res.parent_checked ? (res.parent_bad ? "; parent record DIFFERS" : "; parent record matches")
                                      : "");
            printf("  verdict: %s\n", rc == 0 ? "PASS - every hash matches" : "FAIL - see mismatches above");
            if (apr_verify_report_written(0))
                exit_code = 2;
        }
    } else {
        fprintf(stderr, "apr verify: %s\n", err.msg);
        exit_code = 2;
    }
    json_decref(r.bad);
    apr_model_free(m);
    return exit_code;
}
