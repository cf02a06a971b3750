/* progress.h - one progress line on stderr for long runs (verify, run,
 * imatrix): "LABEL: done/total tokens, X tok/s, ETA m:ss", redrawn in place
 * at most 10 times a second, only when stderr is a terminal. Libraries report
 * progress through a callback (apr_progress_cb fits apr_verify_opts'); the
 * drawing stays in the CLI. */
#ifndef APR_TOOLS_PROGRESS_H
#define APR_TOOLS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct apr_progress {
    bool on;             /* drawing (enabled and stderr is a terminal) */
    bool drawn;          /* a line is on the screen */
    const char *label;
    const char *unit;    /* "tokens" */
    uint64_t total;
    double t0, last;     /* start, last redraw (apr_now_s) */
    FILE *out;
} apr_progress;

/* enabled: the caller's wish (false under --json or --quiet); the line is
 * drawn only when stderr is also a terminal. */
void apr_progress_start(apr_progress *p, const char *label, const char *unit, uint64_t total, bool enabled);
void apr_progress_update(apr_progress *p, uint64_t done);
/* Ends the line (a newline if one was drawn). */
void apr_progress_end(apr_progress *p);
/* The line itself, for tests: "LABEL: D/T UNIT, R tok/s, ETA m:ss". */
void apr_progress_format(char *buf, size_t cap, const char *label, const char *unit, uint64_t done, uint64_t total,
                         double seconds);
/* A callback for libraries: ctx is an apr_progress; total updates p->total. */
void apr_progress_cb(void *ctx, uint64_t done, uint64_t total);

#endif
