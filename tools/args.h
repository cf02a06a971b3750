/* args.h - the one argument parser of the apr CLI.
 *
 * A subcommand describes its options as a table: per option a row with the
 * long name, short aliases, the value kind (flag, string, integer, size,
 * number, enum of names, repeatable list) with its range, where the value is
 * stored, and the help text. cli_parse() walks argv once against that table,
 * stores every value, and refuses (exit status 2, a message that names the
 * command and the option) unknown options, missing values, malformed
 * numbers, values out of range, names outside an enum and a non-repeatable
 * option given twice. `--help` / `-h` prints help generated from the table.
 *
 * Syntax: `--name VALUE` and `--name=VALUE`; an alias takes its value as the
 * next argument; `--` ends the options; a lone `-` is a positional argument.
 * A value is always the next argument, even when it starts with '-' (so
 * `--chunks -1` is refused as out of range, not as an unknown option).
 *
 * Rows are written with the OPT_* macros below, in a table that is usually a
 * local array of the command (it points at the command's local variables).
 * Extra row fields (.hint) can follow the help text:
 *   OPT_ENUM("--to", NULL, &to, formats, "output format", .hint = "...") */
#ifndef APR_ARGS_H
#define APR_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cli_kind {
    CLI_FLAG,   /* no value: *b = true */
    CLI_SET,    /* no value: *i = .set (two rows on one int, e.g. --tied / --untied; the last wins) */
    CLI_STR,    /* *s = the value, unchecked */
    CLI_INT,    /* *i = an integer in lo..hi */
    CLI_U32,    /* *u32 = an integer in ulo..uhi */
    CLI_U64,    /* *u64 = an integer in ulo..uhi */
    CLI_SIZE,   /* *u64 = N bytes from N followed by M (10^6) or G (10^9), gguf-split's
                 * --split-max-size syntax; in ulo..uhi bytes */
    CLI_DOUBLE, /* *d = a finite number in flo..fhi (excluding flo with .open_lo) */
    CLI_FLOAT,  /* *f = the same for a float (parsed with strtof: one rounding) */
    CLI_ENUM,   /* *i = the value of the name given, compared without case */
    CLI_LIST,   /* repeatable: each value appended to *list in command-line order */
} cli_kind;

/* One name of a CLI_ENUM; a table ends with {NULL, 0}. */
typedef struct cli_name {
    const char *name;
    int value;
} cli_name;

/* A CLI_LIST's values (pointers into argv); cli_free releases v. */
typedef struct cli_list {
    const char **v;
    size_t n;
} cli_list;

typedef struct cli_opt {
    const char *name;  /* "--threads" */
    const char *alias; /* "-t", several as "-t|-j", or NULL */
    cli_kind kind;
    union {
        bool *b;
        int *i;
        uint32_t *u32;
        uint64_t *u64;
        double *d;
        float *f;
        const char **s;
        cli_list *list;
    } to;
    long long lo, hi;     /* CLI_INT */
    uint64_t ulo, uhi;    /* CLI_U32, CLI_U64, CLI_SIZE */
    double flo, fhi;      /* CLI_DOUBLE, CLI_FLOAT */
    bool open_lo;         /* ... flo itself is refused */
    const cli_name *names; /* CLI_ENUM */
    int set;              /* CLI_SET */
    const char *metavar;  /* the value's name in help and messages ("N", "FILE") */
    const char *help;     /* NULL: a hidden option (for tests), absent from --help */
    const char *hint;     /* appended to every error about this option */
} cli_opt;

#define CLI_MAX_OPTS 64 /* rows per command (cli_parse refuses more) */
#define CLI_MAX_POS 8   /* positional arguments a command may take */

typedef struct cli_cmd {
    const char *name;  /* "convert": messages start "apr convert: " */
    const char *usage; /* --help: synopsis and description, printed before the options */
    const cli_opt *opts;
    size_t n_opts;
    int min_pos, max_pos; /* positional arguments (max_pos <= CLI_MAX_POS) */
    FILE *out, *err;      /* --help and messages; NULL: stdout and stderr */
} cli_cmd;

/* What cli_parse leaves besides the values it stores through the table. */
typedef struct cli_args {
    const char *pos[CLI_MAX_POS];
    int n_pos;
    unsigned char given[CLI_MAX_OPTS]; /* per row: given on the command line */
} cli_args;

enum {
    CLI_OK = 0,   /* parsed: the command goes on */
    CLI_HELP = 1, /* --help was printed: exit 0 */
    CLI_FAIL = 2, /* a message was printed: exit 2 */
};

/* Parses argv[1..argc) (argv[0] is the command's name). Values are stored
 * as they are read; on CLI_HELP and CLI_FAIL the lists are already freed,
 * on CLI_OK the caller frees them with cli_free. */
int cli_parse(const cli_cmd *c, int argc, char **argv, cli_args *out);

/* Whether the option named name (its long name) was on the command line
 * (for values whose default cannot be told from a given value, such as 0). */
bool cli_given(const cli_cmd *c, const cli_args *a, const char *name);

/* The exit status for a cli_parse result other than CLI_OK. */
static inline int cli_exit_status(int rc)
{
    return rc == CLI_HELP ? 0 : 2;
}

/* Releases the lists of c's CLI_LIST rows (and empties them; safe twice). */
void cli_free(const cli_cmd *c);

/* The help text: c->usage, then one line per visible option. */
void cli_help(FILE *f, const cli_cmd *c);

/* "apr" and argv[0..argc) as recorded in the provenance: each argument as a
 * POSIX shell word (quoted with '...' when it holds anything but letters,
 * digits, bytes >= 0x80 and _-./:=,+@%), so that the record can be pasted
 * back into a shell and names the same arguments. NULL when out of memory. */
char *cli_join_argv(int argc, char **argv);

/* The number parsers behind the table, for compound values (verify's
 * --band LO,HI). 0 on success; -1 when s is not such a number or is out of
 * range, *out untouched. */
int cli_parse_double(const char *s, double lo, double hi, bool open_lo, double *out);
int cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

#define CLI_ROW_(n, a, k) .name = (n), .alias = (a), .kind = (k)
/* Each macro's last arguments are the help text and, optionally, more
 * designated initializers (.hint = ...). */
#define OPT_FLAG(n, a, p, ...) {CLI_ROW_(n, a, CLI_FLAG), .to.b = (p), .help = __VA_ARGS__}
#define OPT_SET(n, a, p, v, ...) {CLI_ROW_(n, a, CLI_SET), .to.i = (p), .set = (v), .help = __VA_ARGS__}
#define OPT_STR(n, a, p, mv, ...) {CLI_ROW_(n, a, CLI_STR), .to.s = (p), .metavar = (mv), .help = __VA_ARGS__}
#define OPT_INT(n, a, p, l, h, mv, ...) \
    {CLI_ROW_(n, a, CLI_INT), .to.i = (p), .lo = (l), .hi = (h), .metavar = (mv), .help = __VA_ARGS__}
#define OPT_U32(n, a, p, l, h, mv, ...) \
    {CLI_ROW_(n, a, CLI_U32), .to.u32 = (p), .ulo = (l), .uhi = (h), .metavar = (mv), .help = __VA_ARGS__}
#define OPT_U64(n, a, p, l, h, mv, ...) \
    {CLI_ROW_(n, a, CLI_U64), .to.u64 = (p), .ulo = (l), .uhi = (h), .metavar = (mv), .help = __VA_ARGS__}
#define OPT_SIZE(n, a, p, l, h, mv, ...) \
    {CLI_ROW_(n, a, CLI_SIZE), .to.u64 = (p), .ulo = (l), .uhi = (h), .metavar = (mv), .help = __VA_ARGS__}
#define OPT_DOUBLE(n, a, p, l, h, open, mv, ...)                                                     \
    {CLI_ROW_(n, a, CLI_DOUBLE), .to.d = (p), .flo = (l), .fhi = (h), .open_lo = (open), .metavar = (mv), \
     .help = __VA_ARGS__}
#define OPT_FLOAT(n, a, p, l, h, open, mv, ...)                                                     \
    {CLI_ROW_(n, a, CLI_FLOAT), .to.f = (p), .flo = (l), .fhi = (h), .open_lo = (open), .metavar = (mv), \
     .help = __VA_ARGS__}
#define OPT_ENUM(n, a, p, names_, ...) {CLI_ROW_(n, a, CLI_ENUM), .to.i = (p), .names = (names_), .help = __VA_ARGS__}
#define OPT_LIST(n, a, p, mv, ...) {CLI_ROW_(n, a, CLI_LIST), .to.list = (p), .metavar = (mv), .help = __VA_ARGS__}

#define CLI_N(table) (sizeof(table) / sizeof(table)[0])

#endif
