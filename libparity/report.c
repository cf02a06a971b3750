/* report.c - the verdict of `apr verify` and its JSON and table reports. */
#include "parity.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void apr_verify_result_free(apr_verify_result *r)
{
    apr_trace_cmp_free(&r->tc);
    apr_trace_free(&r->tr_src);
    apr_trace_free(&r->tr_dst);
    apr_weights_cmp_free(&r->w);
}

static const char *step_name(int st)
{
    return apr_trace_step_name((apr_trace_step)st);
}

/* Where the traced forward passes part: the first step outside the band, or
 * for bit-level questions the first step whose statistics differ at all. */
static void describe_layers(const apr_trace_cmp *tc, char *buf, size_t cap)
{
    if (!tc->ratio) {
        snprintf(buf, cap, "no trace");
    } else if (tc->first_out_layer >= 0) {
        const size_t i = (size_t)tc->first_out_layer * APR_TR_COUNT + tc->first_out_step;
        snprintf(buf, cap, "layer %d (%s) leaves the std-ratio band [%g, %g]: DST/SRC = %.4g",
                 tc->first_out_layer, step_name(tc->first_out_step), tc->lo, tc->hi, tc->ratio[i]);
    } else if (tc->first_diff_layer >= 0) {
        snprintf(buf, cap, "activations first differ at layer %d (%s), all within the band",
                 tc->first_diff_layer, step_name(tc->first_diff_step));
    } else {
        snprintf(buf, cap, "traced activations identical");
    }
}

/* The first weight that differs at all (lossless pairs). */
static void describe_weight_diff(const apr_weights_cmp *w, char *buf, size_t cap)
{
    const apr_weight_tensor *t = &w->t[w->first_diff];
    char where[256];
    apr_weights_describe_row(t, t->first_diff_row, t->first_diff_file_row, where, sizeof where);
    snprintf(buf, cap, "weights differ: first at %s", where);
}

/* The worst weight row relative to its limit (quantized pairs). */
static void describe_weight_worst(const apr_weights_cmp *w, char *buf, size_t cap)
{
    const apr_weight_tensor *t = &w->t[w->worst];
    char where[256];
    apr_weights_describe_row(t, t->worst_row, (int64_t)t->worst_file_row, where, sizeof where);
    if (t->worst_zeroed) {
        snprintf(buf, cap, "%s: every value is 0 in DST, not in SRC (a zeroed row)", where);
        return;
    }
    const int n = snprintf(buf, cap, "%s: %s error %.3f (limit %.3g%s for %s)", where,
                           t->worst_row_abs ? "absolute" : "relative", t->worst_row_err, t->worst_limit,
                           t->worst_row_abs ? " x the tensor's RMS row norm" : "",
                           apr_dtype_name(t->worst_dtype));
    if (n > 0 && (size_t)n < cap && w->n_rows_over > 1)
        snprintf(buf + n, cap - (size_t)n, "; %llu rows in %llu tensors over their limits",
                 (unsigned long long)w->n_rows_over, (unsigned long long)w->n_tensors_over);
}

static void decide_logits(const apr_verify_result *r, const apr_conversion_kind *k, double max_kld_override,
                          apr_kld_limits limits, apr_verdict *v);

void apr_parity_decide(const apr_verify_result *r, const apr_conversion_kind *k,
                       double max_kld_override, apr_verdict *v)
{
    apr_parity_decide_limits(r, k, max_kld_override, APR_LIMITS_TRAINED, v);
}

/* Appends printf-style text to v->reason. */
static void reason_add(apr_verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason_add(apr_verdict *v, const char *fmt, ...)
{
    const size_t l = strlen(v->reason);
    if (l + 1 >= sizeof v->reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->reason + l, sizeof v->reason - l, fmt, ap);
    va_end(ap);
}

/* The limit for k: --max-kld, else the chosen column's default (NaN: none). */
static double kld_limit(const apr_conversion_kind *k, double max_kld_override, apr_kld_limits limits,
                        apr_verdict *v)
{
    if (max_kld_override > 0) {
        snprintf(v->limits, sizeof v->limits, "--max-kld");
        return max_kld_override;
    }
    const double t = apr_parity_default_max_kld_for(k->qtype, limits);
    if (!(t > 0))
        return NAN;
    snprintf(v->limits, sizeof v->limits, "%s", apr_kld_limits_name(limits));
    return t;
}

/* A DST that is byte for byte the quantizer's output for SRC passes; the
 * statistics, when the forward pass ran, are reported, not judged. */
static void decide_reproduced(const apr_verify_result *r, const apr_conversion_kind *k, double max_kld_override,
                              apr_kld_limits limits, apr_verdict *v)
{
    char rp[512];
    apr_repro_describe(&r->rp, rp, sizeof rp);
    v->pass = true;
    v->rule = APR_RULE_REPRODUCED;
    v->max_kld = kld_limit(k, max_kld_override, limits, v);
    snprintf(v->reason, sizeof v->reason, "%s; same forward-pass configuration", rp);
    if (!r->forward_run) {
        reason_add(v, " (forward pass not run; --logits runs it)");
        return;
    }
    const double kld = r->s.kld_mean;
    if (isfinite(v->max_kld))
        reason_add(v, "; mean KLD %.6g %s the %s limit %.6g for %s (reported, not judged: the quantizer's own "
                      "output)",
                   kld, kld <= v->max_kld ? "within" : "OVER", v->limits, v->max_kld, k->qtype);
    else
        reason_add(v, "; mean KLD %.6g (no limit for %s)", kld, k->qtype);
}

/* Bit-identical weights in the same dtypes under the same configuration: the
 * forward pass computes the same logits by construction. With --logits it
 * ran, and the logits must then really be identical. */
static bool decide_construction(const apr_verify_result *r, apr_verdict *v)
{
    if (r->forward_run)
        return false; /* judged on the logits below */
    v->pass = true;
    v->rule = APR_RULE_CONSTRUCTION;
    snprintf(v->reason, sizeof v->reason,
             "every weight bit-identical (%u tensors, same dtypes) and the same forward-pass configuration: "
             "the logits are identical by construction (forward pass not run; --logits runs it)",
             r->w.n_tensors);
    return true;
}

void apr_parity_decide_limits(const apr_verify_result *r, const apr_conversion_kind *k,
                              double max_kld_override, apr_kld_limits limits, apr_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->kind = *k;
    v->max_kld = NAN;
    v->rule = APR_RULE_LOGITS;

    if (r->rule == APR_RULE_CONSTRUCTION && k->kind == APR_EXPECT_LOSSLESS && decide_construction(r, v))
        return;
    if (r->rule == APR_RULE_REPRODUCED && k->kind == APR_EXPECT_QUANTIZED) {
        decide_reproduced(r, k, max_kld_override, limits, v);
        return;
    }
    decide_logits(r, k, max_kld_override, limits, v);
    if (r->rule == APR_RULE_CONSTRUCTION)
        reason_add(v, "; --logits: weights, dtypes and configuration are identical, so identical logits were "
                      "predicted by construction");
    if (r->rp.status == APR_REPRO_DIFFERS || r->rp.status == APR_REPRO_UNAVAILABLE) {
        char rp[512];
        apr_repro_describe(&r->rp, rp, sizeof rp);
        reason_add(v, "; %s", rp);
    } else if (r->rp.status == APR_REPRO_REPRODUCED && !r->same_config) {
        reason_add(v, "; tensors reproduced but the forward-pass configuration differs (%s)", r->config_diff);
    }
}

/* The statistics decide: bit identity for lossless pairs; weight rows, std
 * band, non-finite logits and the mean-KLD limit for quantized ones. */
static void decide_logits(const apr_verify_result *r, const apr_conversion_kind *k, double max_kld_override,
                          apr_kld_limits limits, apr_verdict *v)
{
    const apr_parity_summary *s = &r->s;
    char layers[256];
    describe_layers(&r->tc, layers, sizeof layers);
    if (s->n_positions == 0) {
        v->error = true;
        snprintf(v->reason, sizeof v->reason, "no positions were compared");
        return;
    }
    const apr_weights_cmp *w = &r->w;
    if (k->kind == APR_EXPECT_LOSSLESS) {
        const bool wdiff = w->n_tensors && !w->bit_identical;
        v->pass = s->bit_identical && !wdiff;
        char wmsg[384] = "";
        if (wdiff)
            describe_weight_diff(w, wmsg, sizeof wmsg);
        if (v->pass)
            snprintf(v->reason, sizeof v->reason, "all %llu logits bit-identical%s",
                     (unsigned long long)s->n_logits,
                     w->n_tensors ? ", every weight bit-identical" : "");
        else if (s->bit_identical)
            snprintf(v->reason, sizeof v->reason, "lossless conversion but %s (logits bit-identical)",
                     wmsg);
        else
            snprintf(v->reason, sizeof v->reason,
                     "lossless conversion but %s%s%llu logits differ (first at position %lld, token "
                     "%lld; max |diff| %.3g); %s",
                     wmsg, wdiff ? "; " : "", (unsigned long long)s->n_logits_differ,
                     (long long)s->first_diff_pos, (long long)s->first_diff_idx, s->max_abs_diff,
                     layers);
        return;
    }

    v->rule = APR_RULE_LOGITS;
    double thr = kld_limit(k, max_kld_override, limits, v);
    if (!(thr > 0)) {
        v->error = true;
        snprintf(v->reason, sizeof v->reason,
                 "no default KLD threshold for type '%s': pass --max-kld", k->qtype);
        return;
    }
    v->max_kld = thr;
    if (s->n_scored == 0) {
        v->error = true;
        snprintf(v->reason, sizeof v->reason, "no positions were scored (too few tokens)");
        return;
    }
    if (s->nonfinite_dst > s->nonfinite_src) {
        snprintf(v->reason, sizeof v->reason, "DST produced %llu non-finite logits (SRC %llu); %s",
                 (unsigned long long)s->nonfinite_dst, (unsigned long long)s->nonfinite_src, layers);
        return;
    }
    if (w->n_rows_over) {
        char wmsg[400];
        describe_weight_worst(w, wmsg, sizeof wmsg);
        snprintf(v->reason, sizeof v->reason, "%s; mean KLD %.6g (limit %.6g); %s", wmsg, s->kld_mean,
                 thr, layers);
        return;
    }
    if (r->tc.first_out_layer >= 0) {
        snprintf(v->reason, sizeof v->reason, "%s; mean KLD %.6g (limit %.6g)", layers, s->kld_mean,
                 thr);
        return;
    }
    if (!(s->kld_mean <= thr)) {
        snprintf(v->reason, sizeof v->reason, "mean KLD %.6g exceeds %.6g for %s; %s", s->kld_mean,
                 thr, k->qtype, layers);
        return;
    }
    v->pass = true;
    int n = snprintf(v->reason, sizeof v->reason, "mean KLD %.6g <= %.6g for %s (%s limit)", s->kld_mean, thr,
                     k->qtype, v->limits);
    if (w->n_tensors && w->worst >= 0 && w->t[w->worst].worst_score >= 0 && n > 0 &&
        (size_t)n < sizeof v->reason) {
        const apr_weight_tensor *t = &w->t[w->worst];
        n += snprintf(v->reason + n, sizeof v->reason - (size_t)n,
                      "; every weight row within its dtype's limit (worst %.3g of %.3g, %s)",
                      t->worst_row_err, t->worst_limit, t->name);
    }
    if (w->unjudged_dtypes[0] && n > 0 && (size_t)n < sizeof v->reason)
        snprintf(v->reason + n, sizeof v->reason - (size_t)n, "; rows of %s have no limit (not judged)",
                 w->unjudged_dtypes);
}

/* ---- JSON */

static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *layer_ref(int layer, int step)
{
    if (layer < 0)
        return json_null();
    return json_pack("{s:i,s:s}", "layer", layer, "step", step_name(step));
}

static const char *kind_name(apr_expect k)
{
    return k == APR_EXPECT_LOSSLESS ? "lossless" : k == APR_EXPECT_QUANTIZED ? "quantized" : "auto";
}

static const char *dev_name(apr_device d)
{
    return d == APR_DEV_CUDA ? "cuda" : d == APR_DEV_CPU ? "cpu" : "auto";
}

static json_t *weight_row_ref(const apr_weight_tensor *t, int64_t logical, int64_t file_row)
{
    return json_pack("{s:s,s:I,s:I,s:i,s:s}", "tensor", t->name, "row", (json_int_t)file_row,
                     "logical_row", (json_int_t)logical, "layer", (int)t->layer, "role", t->role);
}

/* Building the report: jansson's setters take the value (NULL too: the
 * failure of the call that made it) and return non-zero when they cannot
 * store it; *bad remembers that, so that a report missing a field for want
 * of memory is never printed as if whole. */
static void jset(bool *bad, json_t *o, const char *k, json_t *v)
{
    *bad |= json_object_set_new(o, k, v) != 0;
}

static void jappend(bool *bad, json_t *a, json_t *v)
{
    *bad |= json_array_append_new(a, v) != 0;
}

/* "weights": the per-tensor comparison; null when it was not run. */
static json_t *weights_json(const apr_weights_cmp *w, bool *bad)
{
    if (!w->n_tensors)
        return json_null();
    json_t *list = json_array();
    for (uint32_t i = 0; i < w->n_tensors && list; i++) {
        const apr_weight_tensor *t = &w->t[i];
        jappend(bad,
            list, json_pack("{s:s,s:s,s:i,s:s,s:I,s:I,s:o,s:b,s:b,s:I,s:o,s:b,s:o,s:I}", "name", t->name,
                            "role", t->role, "layer", (int)t->layer, "dtype", t->dtype, "rows",
                            (json_int_t)t->rows, "cols", (json_int_t)t->cols, "rel_rmse", num(t->rel_rmse),
                            "rmse_absolute", t->rmse_absolute, "bit_identical", t->bit_identical,
                            "worst_row", (json_int_t)t->worst_file_row, "worst_row_err",
                            num(t->worst_row_err), "worst_row_absolute", t->worst_row_abs, "limit",
                            num(t->worst_limit), "rows_over", (json_int_t)t->n_rows_over));
    }
    json_t *worst = json_null(), *first = json_null();
    if (w->worst >= 0) {
        const apr_weight_tensor *t = &w->t[w->worst];
        worst = weight_row_ref(t, t->worst_row, (int64_t)t->worst_file_row);
        jset(bad, worst, "rel_err", num(t->worst_row_err));
        jset(bad, worst, "absolute", json_boolean(t->worst_row_abs));
        jset(bad, worst, "dtype", json_string(apr_dtype_name(t->worst_dtype)));
        jset(bad, worst, "limit", num(t->worst_limit));
        jset(bad, worst, "zeroed", json_boolean(t->worst_zeroed));
    }
    if (w->first_diff >= 0) {
        const apr_weight_tensor *t = &w->t[w->first_diff];
        first = weight_row_ref(t, t->first_diff_row, t->first_diff_file_row);
    }
    return json_pack("{s:I,s:b,s:b,s:o,s:o,s:I,s:I,s:s,s:o}", "n_tensors", (json_int_t)w->n_tensors,
                     "bit_identical", w->bit_identical, "imatrix", w->imatrix, "worst", worst, "first_diff", first,
                     "rows_over", (json_int_t)w->n_rows_over, "tensors_over", (json_int_t)w->n_tensors_over,
                     "unjudged_dtypes", w->unjudged_dtypes, "tensors", list);
}

static const char *rule_name(apr_verify_rule r)
{
    return r == APR_RULE_CONSTRUCTION ? "construction" : r == APR_RULE_REPRODUCED ? "reproduced" : "logits";
}

static const char *repro_status_name(apr_repro_status s)
{
    switch (s) {
    case APR_REPRO_REPRODUCED: return "reproduced";
    case APR_REPRO_DIFFERS: return "differs";
    case APR_REPRO_UNAVAILABLE: return "unavailable";
    default: return "not_run";
    }
}

/* "reproduction": null when not attempted */
static json_t *repro_json(const apr_repro *p)
{
    if (p->status == APR_REPRO_NOT_RUN)
        return json_null();
    json_t *first = json_null();
    if (p->n_differ)
        first = json_pack("{s:s,s:I,s:s}", "tensor", p->first_tensor, "row", (json_int_t)p->first_row, "what",
                          p->first_what);
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:o}", "status", repro_status_name(p->status), "n_tensors",
                     (json_int_t)p->n_tensors, "rebuilt", (json_int_t)p->n_rebuilt, "copied",
                     (json_int_t)p->n_copied, "n_differ", (json_int_t)p->n_differ, "first_diff", first, "imatrix",
                     p->imatrix[0] ? json_string(p->imatrix) : json_null(), "why",
                     p->why[0] ? json_string(p->why) : json_null());
}

char *apr_verify_report_json(const apr_report_info *info, const apr_verify_result *r,
                             const apr_verdict *v)
{
    const apr_parity_summary *s = &r->s;
    bool bad = false;
    json_t *steps = json_array(), *ratios = json_array();
    for (int st = 0; st < APR_TR_COUNT && steps; st++)
        jappend(&bad, steps, json_string(step_name(st)));
    for (uint32_t l = 0; r->tc.ratio && l < r->tc.n_layers && ratios; l++) {
        json_t *row = json_array();
        for (int st = 0; st < APR_TR_COUNT && row; st++)
            jappend(&bad, row, num(r->tc.ratio[(size_t)l * APR_TR_COUNT + st]));
        jappend(&bad, ratios, row);
    }
    json_t *root = json_pack(
        "{s:s?,s:s?,"
        "s:{s:s?,s:I,s:I,s:I,s:I,s:I,s:b},"
        "s:{s:s,s:s,s:s},"
        "s:{s:b,s:I,s:I,s:I,s:o,s:o,s:o,s:I,s:I},"
        "s:{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o},"
        "s:o,"
        "s:{s:o,s:o,s:o},"
        "s:{s:o,s:o,s:o},"
        "s:{s:[f,f],s:o,s:o,s:o,s:o},"
        "s:{s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o},"
        "s:{s:b,s:b,s:o,s:s}}",
        "src", info->src_path, "dst", info->dst_path,
        "tokens", "source", info->tokens_note, "ctx", (json_int_t)r->ctx, "chunks",
        (json_int_t)r->chunks, "used", (json_int_t)r->n_tokens_used, "positions",
        (json_int_t)s->n_positions, "scored", (json_int_t)s->n_scored, "all_positions",
        info->all_positions,
        "conversion", "kind", kind_name(v->kind.kind), "type", v->kind.qtype, "basis", v->kind.basis,
        "logits", "bit_identical", s->bit_identical, "n_differ", (json_int_t)s->n_logits_differ,
        "first_diff_position", (json_int_t)s->first_diff_pos, "first_diff_index",
        (json_int_t)s->first_diff_idx, "max_abs_diff", num(s->max_abs_diff), "cosine_mean",
        num(s->cos_mean), "cosine_min", num(s->cos_min), "nonfinite_src",
        (json_int_t)s->nonfinite_src, "nonfinite_dst", (json_int_t)s->nonfinite_dst,
        "kld", "mean", num(s->kld_mean), "mean_uncertainty", num(s->kld_mean_unc), "median",
        num(s->kld_median), "p90", num(s->kld_p90), "p99", num(s->kld_p99), "p99_9",
        num(s->kld_p999), "max", num(s->kld_max), "min", num(s->kld_min),
        "top1_agreement_pct", num(s->top1_pct),
        "delta_p", "mean", num(s->pdiff_mean), "rms", num(s->pdiff_rms), "max_abs",
        num(s->pdiff_max),
        "ppl", "src", num(s->ppl_src), "dst", num(s->ppl_dst), "ratio", num(s->ppl_ratio),
        "layers", "band", r->tc.lo, r->tc.hi, "steps", steps, "std_ratio", ratios, "first_out",
        layer_ref(r->tc.first_out_layer, r->tc.first_out_step), "first_diff",
        layer_ref(r->tc.first_diff_layer, r->tc.first_diff_step),
        "run", "device_src", dev_name(r->dev_src), "device_dst", dev_name(r->dev_dst), "seconds_src",
        num(r->secs_src), "seconds_dst", num(r->secs_dst),
        "seconds_weights", num(r->secs_weights), "seconds_reproduction", num(r->secs_repro), "seconds_load",
        num(r->secs_load), "seconds_statistics", num(r->secs_stats),
        "verdict", "pass", v->pass, "error", v->error, "max_kld", num(v->max_kld), "reason",
        v->reason);
    if (!root)
        return NULL;
    jset(&bad, root, "weights", weights_json(&r->w, &bad));
    jset(&bad, root, "reproduction", repro_json(&r->rp));
    jset(&bad, root, "forward_pass", json_boolean(r->forward_run));
    jset(&bad, root, "config", json_pack("{s:b,s:s}", "same", r->same_config, "difference", r->config_diff));
    json_t *vj = json_object_get(root, "verdict");
    jset(&bad, vj, "rule", json_string(rule_name(v->rule)));
    jset(&bad, vj, "limits", v->limits[0] ? json_string(v->limits) : json_null());
    if (!r->forward_run) {
        /* nothing was computed: null, never a zero that reads as a measurement */
        static const char *const unmeasured[] = {"logits", "kld", "top1_agreement_pct", "delta_p", "ppl", "layers"};
        for (size_t i = 0; i < sizeof unmeasured / sizeof *unmeasured; i++)
            jset(&bad, root, unmeasured[i], json_null());
    }
    char *txt = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return txt;
}

/* ---- table */

static void pnum(FILE *f, const char *fmt, double x)
{
    if (isfinite(x))
        fprintf(f, fmt, x);
    else
        fprintf(f, "%s", isnan(x) ? "n/a" : x > 0 ? "inf" : "-inf");
}

/* The weights section: a summary and the tensors closest to (or over) their limits. */
static void print_weights(FILE *f, const apr_weights_cmp *w)
{
    if (!w->n_tensors)
        return;
    char buf[384];
    fprintf(f, "  weights    : %u tensors, %s%s", w->n_tensors, w->bit_identical ? "bit-identical" : "differ",
            w->imatrix ? " (imatrix-quantized DST: quantized rows judged for gross damage only)" : "");
    if (w->first_diff >= 0) {
        const apr_weight_tensor *t = &w->t[w->first_diff];
        apr_weights_describe_row(t, t->first_diff_row, t->first_diff_file_row, buf, sizeof buf);
        fprintf(f, " (first at %s)", buf);
    }
    fprintf(f, "\n");
    if (w->worst >= 0 && !w->bit_identical) {
        const apr_weight_tensor *t = &w->t[w->worst];
        apr_weights_describe_row(t, t->worst_row, (int64_t)t->worst_file_row, buf, sizeof buf);
        fprintf(f, "               worst row %s: %s error %.4g", buf, t->worst_row_abs ? "absolute" : "relative",
                t->worst_row_err);
        if (t->worst_score >= 0)
            fprintf(f, " (limit %.3g for %s)", t->worst_limit, apr_dtype_name(t->worst_dtype));
        fprintf(f, "\n               rows over their limit: %llu in %llu tensors\n",
                (unsigned long long)w->n_rows_over, (unsigned long long)w->n_tensors_over);
        if (w->unjudged_dtypes[0])
            fprintf(f, "               no row limit for %s (not judged)\n", w->unjudged_dtypes);
    }
    if (w->bit_identical)
        return;
    /* the tensors with the largest error / limit, at most 8 */
    enum { TOP = 8 };
    int32_t top[TOP];
    int nt = 0;
    for (uint32_t i = 0; i < w->n_tensors; i++) {
        const apr_weight_tensor *t = &w->t[i];
        if (t->bit_identical)
            continue;
        int at = nt < TOP ? nt : TOP;
        while (at > 0 && w->t[top[at - 1]].worst_score < t->worst_score)
            at--;
        if (at >= TOP)
            continue;
        if (nt < TOP)
            nt++;
        memmove(top + at + 1, top + at, (size_t)(nt - 1 - at) * sizeof *top);
        top[at] = (int32_t)i;
    }
    fprintf(f, "  %-44s %-10s %10s %9s %10s %7s\n", "tensor (closest to its limit first)", "dtype", "rel RMSE",
            "worst row", "row error", "limit");
    for (int i = 0; i < nt; i++) {
        const apr_weight_tensor *t = &w->t[top[i]];
        fprintf(f, "  %-44s %-10s %10.3g %9llu %10.4g ", t->name, t->dtype, t->rel_rmse,
                (unsigned long long)t->worst_file_row, t->worst_row_err);
        pnum(f, "%7.3g", t->worst_limit);
        fprintf(f, "%s\n", t->n_rows_over ? " *" : "");
    }
}

void apr_verify_report_print(FILE *f, const apr_report_info *info, const apr_verify_result *r,
                             const apr_verdict *v)
{
    const apr_parity_summary *s = &r->s;
    fprintf(f, "apr verify\n  SRC        : %s\n  DST        : %s\n", info->src_path ? info->src_path : "?",
            info->dst_path ? info->dst_path : "?");
    fprintf(f, "  conversion : %s%s%s (%s)\n", kind_name(v->kind.kind), v->kind.qtype[0] ? " " : "",
            v->kind.qtype, v->kind.basis);
    fprintf(f, "  tokens     : %s\n               %u chunk%s x %u tokens, %llu positions, %llu scored (%s)\n",
            info->tokens_note ? info->tokens_note : "?", r->chunks, r->chunks == 1 ? "" : "s", r->ctx,
            (unsigned long long)s->n_positions, (unsigned long long)s->n_scored,
            info->all_positions ? "all positions" : "second half of each chunk");
    if (r->rp.status != APR_REPRO_NOT_RUN) {
        char rp[512];
        apr_repro_describe(&r->rp, rp, sizeof rp);
        fprintf(f, "  reproduce  : %s\n", rp);
    }
    if (!r->same_config)
        fprintf(f, "  config     : forward-pass configurations differ (%s)\n", r->config_diff);
    if (!r->forward_run) {
        print_weights(f, &r->w);
        fprintf(f, "  forward    : not run (decided by %s; --logits runs it)\n", rule_name(v->rule));
        fprintf(f, "\n  verdict    : %s - %s\n  decided by : %s\n", v->error ? "ERROR" : v->pass ? "PASS" : "FAIL",
                v->reason, rule_name(v->rule));
        return;
    }
    fprintf(f, "  run        : SRC %s %.2f s, DST %s %.2f s (weights %.2f s, reproduction %.2f s, load %.2f s, "
               "statistics %.2f s)\n\n",
            dev_name(r->dev_src), r->secs_src, dev_name(r->dev_dst), r->secs_dst, r->secs_weights, r->secs_repro,
            r->secs_load, r->secs_stats);

    fprintf(f, "  logits     : %s", s->bit_identical ? "bit-identical" : "differ");
    if (!s->bit_identical)
        fprintf(f, " (%llu of %llu; first at position %lld, index %lld)",
                (unsigned long long)s->n_logits_differ,
                (unsigned long long)s->n_logits,
                (long long)s->first_diff_pos, (long long)s->first_diff_idx);
    fprintf(f, "\n               max |diff| ");
    pnum(f, "%.6g", s->max_abs_diff);
    fprintf(f, ", cosine mean ");
    pnum(f, "%.8f", s->cos_mean);
    fprintf(f, " min ");
    pnum(f, "%.8f", s->cos_min);
    if (s->nonfinite_src || s->nonfinite_dst)
        fprintf(f, ", non-finite SRC %llu DST %llu", (unsigned long long)s->nonfinite_src,
                (unsigned long long)s->nonfinite_dst);
    fprintf(f, "\n  KLD        : mean ");
    pnum(f, "%.6f", s->kld_mean);
    fprintf(f, " +/- ");
    pnum(f, "%.6f", s->kld_mean_unc);
    fprintf(f, "  median ");
    pnum(f, "%.6f", s->kld_median);
    fprintf(f, "  p99 ");
    pnum(f, "%.6f", s->kld_p99);
    fprintf(f, "  max ");
    pnum(f, "%.6f", s->kld_max);
    fprintf(f, "\n  same top-1 : ");
    pnum(f, "%.3f %%", s->top1_pct);
    fprintf(f, "\n  RMS dp     : ");
    pnum(f, "%.3f %%", 100.0 * s->pdiff_rms);
    fprintf(f, "  (mean ");
    pnum(f, "%.3f %%", 100.0 * s->pdiff_mean);
    fprintf(f, ", max |dp| ");
    pnum(f, "%.3f %%", 100.0 * s->pdiff_max);
    fprintf(f, ")\n  PPL        : SRC ");
    pnum(f, "%.4f", s->ppl_src);
    fprintf(f, "  DST ");
    pnum(f, "%.4f", s->ppl_dst);
    fprintf(f, "  DST/SRC ");
    pnum(f, "%.6f", s->ppl_ratio);
    fprintf(f, "\n");

    print_weights(f, &r->w);

    if (r->tc.ratio) {
        static const char *hdr[APR_TR_COUNT] = {"anorm", "q", "k", "v", "attn", "o_proj", "resid1",
                                                "fnorm", "gate", "up", "swiglu", "down", "resid2"};
        fprintf(f, "\n  std ratio DST/SRC per layer (first chunk, all tokens; * outside [%g, %g])\n  layer",
                r->tc.lo, r->tc.hi);
        for (int st = 0; st < APR_TR_COUNT; st++)
            fprintf(f, " %7s", hdr[st]);
        fprintf(f, "\n");
        for (uint32_t l = 0; l < r->tc.n_layers; l++) {
            fprintf(f, "  %5u", l);
            for (int st = 0; st < APR_TR_COUNT; st++) {
                const size_t i = (size_t)l * APR_TR_COUNT + st;
                const double x = r->tc.ratio[i];
                if (isfinite(x))
                    fprintf(f, " %6.3f%c", x, r->tc.out[i] ? '*' : r->tc.same[i] ? ' ' : '~');
                else
                    fprintf(f, " %6s%c", isnan(x) ? "nan" : "inf", '*');
            }
            fprintf(f, "\n");
        }
        fprintf(f, "  (~: statistics differ from SRC's within the band; blank: bit-identical)\n");
        char layers[256];
        describe_layers(&r->tc, layers, sizeof layers);
        fprintf(f, "  %s\n", layers);
    }
    fprintf(f, "\n  verdict    : %s - %s\n  decided by : %s\n", v->error ? "ERROR" : v->pass ? "PASS" : "FAIL",
            v->reason, rule_name(v->rule));
}
