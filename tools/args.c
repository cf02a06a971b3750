/* args.c - the CLI's table-driven argument parser (args.h). */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HELP_COL 26 /* where the help text of an option starts */

static FILE *err_stream(const cli_cmd *c)
{
    return c->err ? c->err : stderr;
}

/* "apr CMD: " + message + the row's hint, one line on the error stream. */
static int fail(const cli_cmd *c, const cli_opt *o, const char *fmt, ...)
{
    FILE *f = err_stream(c);
    va_list ap;
    fprintf(f, "apr %s: ", c->name);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    if (o && o->hint)
        fprintf(f, " (%s)", o->hint);
    fputc('\n', f);
    return CLI_FAIL;
}

/* ------------------------------------------------------------ numbers */

/* Decimal digits, or 0x and hex digits; no sign, no blanks. Sets *out
 * and returns 0, or -1 when malformed or above UINT64_MAX. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
{
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    const char *p = s;
    uint64_t v = 0;
    for (;; p++) {
        int d = *p >= '0' && *p <= '9'                 ? *p - '0'
                : base == 16 && *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                : base == 16 && *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                                       : -1;
        if (d < 0)
            break;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return -1;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (p == s)
        return -1;
    *out = v;
    *end = p;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!s || parse_digits(s, &v, &end) || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, long long lo, long long hi, long long *out)
{
    const bool neg = s[0] == '-';
    uint64_t m;
    const char *end;
    if (parse_digits(s + neg, &m, &end) || *end || m > (uint64_t)LLONG_MAX + neg)
        return -1;
    const long long v = neg ? (m == (uint64_t)LLONG_MAX + 1 ? LLONG_MIN : -(long long)m) : (long long)m;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* N followed by M or G (decimal units, as gguf-split reads them). */
static int parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (parse_digits(s, &v, &end) || (end[0] != 'M' && end[0] != 'G') || end[1])
        return -1;
    const uint64_t unit = end[0] == 'M' ? 1000000ull : 1000000000ull;
    if (v > UINT64_MAX / unit || v * unit < lo || v * unit > hi)
        return -1;
    *out = v * unit;
    return 0;
}

static bool in_range(double v, double lo, double hi, bool open_lo)
{
    return isfinite(v) && (open_lo ? v > lo : v >= lo) && v <= hi;
}

int cli_parse_double(const char *s, double lo, double hi, bool open_lo, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    const double v = strtod(s, &end);
    if (*end || errno || !in_range(v, lo, hi, open_lo))
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, bool open_lo, float *out)
{
    char *end;
    if (!*s)
        return -1;
    errno = 0;
    const float v = strtof(s, &end);
    if (*end || errno || !in_range((double)v, lo, hi, open_lo))
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------------ messages */

static void names_list(const cli_name *names, const char *sep, const char *last, char *buf, size_t cap)
{
    size_t n = 0;
    while (names[n].name)
        n++;
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : i + 1 == n ? last : sep, names[i].name);
    }
}

/* "an integer in 1..256" and the like, for messages. */
static void describe_range(const cli_opt *o, char *buf, size_t cap)
{
    switch (o->kind) {
    case CLI_INT:
        snprintf(buf, cap, "an integer in %lld..%lld", o->lo, o->hi);
        break;
    case CLI_U32:
    case CLI_U64:
        if (o->ulo == 0 && o->uhi == UINT64_MAX)
            snprintf(buf, cap, "a non-negative integer");
        else
            snprintf(buf, cap, "an integer in %llu..%llu", (unsigned long long)o->ulo, (unsigned long long)o->uhi);
        break;
    case CLI_SIZE:
        if (o->ulo <= 1 && o->uhi == UINT64_MAX)
            snprintf(buf, cap, "a positive size with M or G (e.g. 500M, 2G)");
        else if (o->uhi == UINT64_MAX)
            snprintf(buf, cap, "a size of at least %llu bytes with M or G (e.g. 500M, 2G)",
                     (unsigned long long)o->ulo);
        else
            snprintf(buf, cap, "a size in %llu..%llu bytes with M or G (e.g. 500M, 2G)", (unsigned long long)o->ulo,
                     (unsigned long long)o->uhi);
        break;
    case CLI_DOUBLE:
    case CLI_FLOAT:
        if (isinf(o->fhi))
            snprintf(buf, cap, "a number %s %g", o->open_lo ? ">" : ">=", o->flo);
        else
            snprintf(buf, cap, "a number %s %g and <= %g", o->open_lo ? ">" : ">=", o->flo, o->fhi);
        break;
    default:
        snprintf(buf, cap, "a value");
    }
}

/* The Levenshtein distance of a and b when both are short, else a big number. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 63 || nb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            const size_t up = row[j];
            const size_t sub = diag + (a[i - 1] != b[j - 1]);
            row[j] = sub < up + 1 ? sub : up + 1;
            if (row[j - 1] + 1 < row[j])
                row[j] = row[j - 1] + 1;
            diag = up;
        }
    }
    return row[nb];
}

/* The visible option closest to a mistyped one (at most 2 edits), or NULL. */
static const char *closest(const cli_cmd *c, const char *name)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < c->n_opts; i++) {
        if (!c->opts[i].help)
            continue;
        const size_t d = edit_distance(name, c->opts[i].name);
        if (d < best_d) {
            best_d = d;
            best = c->opts[i].name;
        }
    }
    return best;
}

/* ------------------------------------------------------------ matching */

/* Whether arg (its first len bytes) is one of the '|'-separated aliases. */
static bool alias_match(const char *aliases, const char *arg, size_t len)
{
    for (const char *p = aliases; p && *p;) {
        const char *bar = strchr(p, '|');
        const size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, arg, len))
            return true;
        p = bar ? bar + 1 : p + n;
    }
    return false;
}

static const cli_opt *find(const cli_cmd *c, const char *arg, size_t len)
{
    for (size_t i = 0; i < c->n_opts; i++) {
        const cli_opt *o = &c->opts[i];
        if ((strlen(o->name) == len && !strncmp(o->name, arg, len)) || alias_match(o->alias, arg, len))
            return o;
    }
    return NULL;
}

static bool takes_value(const cli_opt *o)
{
    return o->kind != CLI_FLAG && o->kind != CLI_SET;
}

/* ------------------------------------------------------------ storing */

static int store_enum(const cli_cmd *c, const cli_opt *o, const char *v)
{
    for (const cli_name *n = o->names; n->name; n++)
        if (!strcasecmp(n->name, v)) {
            *o->to.i = n->value;
            return CLI_OK;
        }
    char names[512];
    names_list(o->names, ", ", " or ", names, sizeof names);
    return fail(c, o, "%s must be %s, got '%s'", o->name, names, v);
}

static int store_list(const cli_cmd *c, const cli_opt *o, const char *v, int argc)
{
    cli_list *l = o->to.list;
    if (!l->v && !(l->v = calloc((size_t)argc, sizeof *l->v))) /* argc bounds the count */
        return fail(c, NULL, "out of memory");
    l->v[l->n++] = v;
    return CLI_OK;
}

/* Parses v for row o and stores it. */
static int store(const cli_cmd *c, const cli_opt *o, const char *v, int argc)
{
    long long ll;
    uint64_t u;
    double d;
    int bad = 0;
    switch (o->kind) {
    case CLI_FLAG: *o->to.b = true; return CLI_OK;
    case CLI_SET: *o->to.i = o->set; return CLI_OK;
    case CLI_STR: *o->to.s = v; return CLI_OK;
    case CLI_ENUM: return store_enum(c, o, v);
    case CLI_LIST: return store_list(c, o, v, argc);
    case CLI_INT:
        if (!(bad = parse_i64(v, o->lo, o->hi, &ll)))
            *o->to.i = (int)ll;
        break;
    case CLI_U32:
        if (!(bad = cli_parse_u64(v, o->ulo, o->uhi > UINT32_MAX ? UINT32_MAX : o->uhi, &u)))
            *o->to.u32 = (uint32_t)u;
        break;
    case CLI_U64:
        if (!(bad = cli_parse_u64(v, o->ulo, o->uhi, &u)))
            *o->to.u64 = u;
        break;
    case CLI_SIZE:
        if (!(bad = parse_size(v, o->ulo, o->uhi, &u)))
            *o->to.u64 = u;
        break;
    case CLI_DOUBLE:
        if (!(bad = cli_parse_double(v, o->flo, o->fhi, o->open_lo, &d)))
            *o->to.d = d;
        break;
    case CLI_FLOAT: bad = parse_float(v, o->flo, o->fhi, o->open_lo, o->to.f); break;
    }
    if (!bad)
        return CLI_OK;
    char want[160];
    describe_range(o, want, sizeof want);
    return fail(c, o, "%s wants %s, got '%s'", o->name, want, v);
}

/* A table that cannot be parsed is the program's error, said once. */
static bool table_ok(const cli_cmd *c)
{
    if (c->n_opts > CLI_MAX_OPTS || c->max_pos > CLI_MAX_POS || c->min_pos > c->max_pos) {
        fail(c, NULL, "internal error: option table too large");
        return false;
    }
    for (size_t i = 0; i < c->n_opts; i++)
        if (!c->opts[i].name || strncmp(c->opts[i].name, "--", 2) ||
            (c->opts[i].kind == CLI_ENUM && !c->opts[i].names)) {
            fail(c, NULL, "internal error: option table row %zu", i);
            return false;
        }
    return true;
}

static int positional(const cli_cmd *c, cli_args *out, const char *a)
{
    if (out->n_pos == c->max_pos)
        return fail(c, NULL, "unexpected argument '%s' (see apr %s --help)", a, c->name);
    out->pos[out->n_pos++] = a;
    return CLI_OK;
}

/* One option argument at argv[*i]: "--name", "--name=value" or an alias. */
static int option(const cli_cmd *c, int argc, char **argv, int *i, unsigned char *seen)
{
    const char *a = argv[*i];
    const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
    const size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if ((len == 2 && !strncmp(a, "-h", 2)) || (len == 6 && !strncmp(a, "--help", 6))) {
        if (!find(c, a, len)) {
            cli_help(c->out ? c->out : stdout, c);
            return CLI_HELP;
        }
    }
    const cli_opt *o = find(c, a, len);
    if (!o) {
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)(len < 64 ? len : 64), a);
        const char *near = closest(c, name);
        if (near)
            return fail(c, NULL, "unknown option '%s' (did you mean %s?)", name, near);
        return fail(c, NULL, "unknown option '%s' (see apr %s --help)", name, c->name);
    }
    const size_t row = (size_t)(o - c->opts);
    if (seen[row] && o->kind != CLI_LIST)
        return fail(c, o, "%s given twice (it is not repeatable)", o->name);
    seen[row] = 1;
    const char *v = NULL;
    if (takes_value(o)) {
        if (eq)
            v = eq + 1;
        else if (*i + 1 < argc)
            v = argv[++*i];
        else if (o->metavar)
            return fail(c, o, "%s needs a value (%s)", o->name, o->metavar);
        else
            return fail(c, o, "%s needs a value", o->name);
    } else if (eq) {
        return fail(c, o, "%s takes no value", o->name);
    }
    return store(c, o, v, argc);
}

int cli_parse(const cli_cmd *c, int argc, char **argv, cli_args *out)
{
    memset(out, 0, sizeof *out);
    if (!table_ok(c))
        return CLI_FAIL;
    bool options_end = false;
    int rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        if (options_end || a[0] != '-' || !a[1])
            rc = positional(c, out, a);
        else if (!strcmp(a, "--"))
            options_end = true;
        else
            rc = option(c, argc, argv, &i, out->given);
    }
    if (rc == CLI_OK && out->n_pos < c->min_pos) {
        fail(c, NULL, "missing arguments");
        cli_help(err_stream(c), c);
        rc = CLI_FAIL;
    }
    if (rc != CLI_OK)
        cli_free(c);
    return rc;
}

bool cli_given(const cli_cmd *c, const cli_args *a, const char *name)
{
    for (size_t i = 0; i < c->n_opts; i++)
        if (!strcmp(c->opts[i].name, name))
            return a->given[i];
    return false;
}

void cli_free(const cli_cmd *c)
{
    for (size_t i = 0; i < c->n_opts; i++)
        if (c->opts[i].kind == CLI_LIST) {
            free(c->opts[i].to.list->v);
            c->opts[i].to.list->v = NULL;
            c->opts[i].to.list->n = 0;
        }
}

/* ------------------------------------------------------------ help */

/* s with every line after the first indented to HELP_COL. */
static void print_indented(FILE *f, const char *s)
{
    for (const char *p = s; *p; p++) {
        fputc(*p, f);
        if (*p == '\n' && p[1])
            fprintf(f, "%*s", HELP_COL, "");
    }
    fputc('\n', f);
}

void cli_help(FILE *f, const cli_cmd *c)
{
    if (c->usage)
        fputs(c->usage, f);
    bool first = true;
    for (size_t i = 0; i < c->n_opts; i++) {
        const cli_opt *o = &c->opts[i];
        if (!o->help)
            continue;
        if (first && c->usage)
            fputc('\n', f);
        first = false;
        char left[256], names[200] = "";
        const char *mv = o->metavar;
        if (o->kind == CLI_ENUM && !mv) {
            names_list(o->names, "|", "|", names, sizeof names);
            mv = names;
        }
        char alias[64] = ""; /* "-n|-c" is shown as "-n, -c, " */
        for (size_t k = 0, j = 0; o->alias && j + 3 < sizeof alias; k++) {
            const char ch = o->alias[k];
            if (ch == '|' || !ch) {
                alias[j++] = ',';
                alias[j++] = ' ';
            } else {
                alias[j++] = ch;
            }
            alias[j] = 0;
            if (!ch)
                break;
        }
        int n = snprintf(left, sizeof left, "  %s%s%s%s", alias, o->name, takes_value(o) && mv ? " " : "",
                         takes_value(o) && mv ? mv : "");
        if (n + 1 >= HELP_COL)
            fprintf(f, "%s\n%*s", left, HELP_COL, "");
        else
            fprintf(f, "%-*s", HELP_COL, left);
        print_indented(f, o->help);
    }
}

/* ------------------------------------------------------------ command line */

static bool shell_safe(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch >= 0x80 ||
           (ch && strchr("_-./:=,+@%", ch));
}

static bool needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!shell_safe(*p))
            return true;
    return false;
}

char *cli_join_argv(int argc, char **argv)
{
    size_t n = sizeof "apr";
    for (int i = 0; i < argc; i++)
        n += 3 + 4 * strlen(argv[i]); /* a space, two quotes, each ' as '\'' */
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    p += sprintf(p, "apr");
    for (int i = 0; i < argc; i++) {
        *p++ = ' ';
        if (!needs_quotes(argv[i])) {
            p += sprintf(p, "%s", argv[i]);
            continue;
        }
        *p++ = '\'';
        for (const char *q = argv[i]; *q; q++)
            if (*q == '\'')
                p += sprintf(p, "'\\''");
            else
                *p++ = *q;
        *p++ = '\'';
    }
    *p = 0;
    return s;
}
