/* progress.c - the progress line of long CLI runs (progress.h). */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"

#include <math.h>
#include <unistd.h>

#include "formats.h"

void apr_progress_format(char *buf, size_t cap, const char *label, const char *unit, uint64_t done, uint64_t total,
                         double seconds)
{
    const double rate = seconds > 0 ? (double)done / seconds : 0;
    int n = snprintf(buf, cap, "%s: %llu/%llu %s", label, (unsigned long long)done, (unsigned long long)total, unit);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (rate > 0) {
        n += snprintf(buf + n, cap - (size_t)n, ", %.1f tok/s", rate);
        if (n > 0 && (size_t)n < cap && total > done) {
            const double eta = (double)(total - done) / rate;
            const unsigned long long s = (unsigned long long)llround(eta);
            if (s >= 3600)
                snprintf(buf + n, cap - (size_t)n, ", ETA %llu:%02llu:%02llu", s / 3600, s / 60 % 60, s % 60);
            else
                snprintf(buf + n, cap - (size_t)n, ", ETA %llu:%02llu", s / 60, s % 60);
        }
    }
}

void apr_progress_start(apr_progress *p, const char *label, const char *unit, uint64_t total, bool enabled)
{
    p->on = enabled && isatty(STDERR_FILENO);
    p->drawn = false;
    p->label = label;
    p->unit = unit ? unit : "tokens";
    p->total = total;
    p->t0 = apr_now_s();
    p->last = 0;
    p->out = stderr;
}

void apr_progress_update(apr_progress *p, uint64_t done)
{
    if (!p->on)
        return;
    const double now = apr_now_s();
    if (p->drawn && now - p->last < 0.1 && done < p->total)
        return;
    char line[256];
    apr_progress_format(line, sizeof line, p->label, p->unit, done, p->total, now - p->t0);
    fprintf(p->out, "\r%-79s", line);
    fflush(p->out);
    p->drawn = true;
    p->last = now;
}

void apr_progress_end(apr_progress *p)
{
    if (p->on && p->drawn)
        fprintf(p->out, "\n");
    p->drawn = false;
}

void apr_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    apr_progress *p = ctx;
    p->total = total;
    apr_progress_update(p, done);
}
