/* jinja.c - chat templates: the subset of Jinja2 that HF chat templates use,
 * rendered the way transformers' apply_chat_template renders them (an
 * ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
 * loopcontrols; its tojson, raise_exception, strftime_now, namespace and dict
 * globals).
 *
 * Layout: lexer (source -> tokens, with Jinja's whitespace control), parser
 * (tokens -> AST, refusing every statement, filter and test outside the
 * subset with the construct's name and position), evaluator (AST + JSON
 * context -> text). Values are immutable and live in one arena per render,
 * as do the AST nodes per template; errors unwind with longjmp to the API
 * function, which frees the arena, so no path leaks.
 *
 * What is not here is refused, never approximated: an unknown construct is
 * an error naming it, so a template renders exactly as jinja2 would or not
 * at all (tests/test_chat_template.c checks every llama.cpp template against
 * jinja2). */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok.h"

#define MAX_DEPTH 200                  /* nested macro calls / expressions */
#define MAX_OUTPUT ((size_t)64 << 20)  /* rendered text and every string built */
#define MAX_ITEMS ((size_t)1 << 22)    /* elements of a list built by the template */
#define MAX_STEPS ((uint64_t)1 << 25)  /* expressions and statements evaluated by one render */

/* ================================================================ arena */

typedef struct blk {
    struct blk *next;
    size_t used, cap;
    max_align_t data[];
} blk;

typedef struct arena {
    blk *head;
    size_t total;
} arena;

typedef struct ctx ctx;
static _Noreturn void fail(ctx *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void arena_free(arena *a)
{
    for (blk *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    a->head = NULL;
}

/* NULL when out of memory or past the limit; callers go through ar(). */
static void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > 4 * MAX_OUTPUT)
            return NULL;
        blk *b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

/* ================================================================ values */

enum { T_UNDEF, T_NONE, T_BOOL, T_INT, T_FLOAT, T_STR, T_LIST, T_DICT, T_NS, T_FUNC, T_METHOD, T_MACRO };
enum { F_RANGE = 1, F_NAMESPACE, F_RAISE, F_STRFTIME, F_DICT };

typedef struct str {
    const char *p;
    size_t n;
} str;

typedef struct val val;
typedef struct list list;
typedef struct dict dict;
typedef struct method method;
typedef struct node node;
typedef struct scope scope;

struct val {
    uint8_t t;
    bool tuple; /* T_LIST: a tuple (prints with parentheses, never equals a list) */
    uint8_t lk; /* T_LIST: LK_LIST, or what Python would hold instead of a list */
    bool markup;/* T_STR: a markupsafe.Markup (from |safe / |escape): `+` HTML-escapes the other side */
    union {
        bool b;
        int64_t i;
        double f;
        str s;        /* T_STR; T_UNDEF: the name that was not found (messages) */
        list *l;
        dict *d;      /* T_DICT, T_NS */
        int fn;       /* T_FUNC */
        method *m;
        struct macro *mac;
    };
};

/* Python objects that jinja2's filters return in place of lists: a generator
 * (select, map, unique, items, ...: no len(), always true, consumed by one
 * pass) or a dict view (items() / keys() / values(): len() but no index).
 * Neither prints or serializes: apr refuses those uses. */
enum { LK_LIST, LK_GEN, LK_VIEW };

struct list {
    val *v;
    size_t n;
    bool consumed; /* LK_GEN: already iterated */
};

struct dict {
    val *k, *v;
    size_t n, cap;
};

struct method {
    val self;
    const char *name;
};

struct macro {
    const node *def;
    scope *closure;
};

struct scope {
    scope *parent;
    dict vars;
};

/* ================================================================ AST */

enum {
    /* statements */
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_BREAK, S_CONTINUE, S_BODY, S_FILTERBLOCK,
    /* expressions */
    E_LIT, E_NAME, E_LIST, E_TUPLE, E_DICT, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NOT, E_NEG,
    E_POS, E_BIN, E_CMP, E_AND, E_OR, E_COND,
};

/* operators (E_BIN / E_CMP) */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

struct node {
    int k, line, col;
    int op;          /* E_BIN: OP_*; E_TEST: 1 when negated */
    val lit;         /* E_LIT, S_TEXT */
    const char *name;/* E_NAME, E_ATTR, E_FILTER, E_TEST, S_MACRO; S_SET: target name */
    const char *attr;/* S_SET: ns.attr target */
    node *a, *b, *c; /* operands; S_IF: a cond; S_FOR: a iterable, b filter */
    node **kids;     /* list/tuple/dict items (dict: key, value, ...), call args, statement bodies */
    const char **kw; /* call args: keyword name or NULL; S_MACRO: parameter names; S_FOR/S_SET: targets */
    int *ops;        /* E_CMP: the operators between kids */
    size_t nk, nkw;
    int unknown;     /* E_FILTER / E_TEST: 1 a jinja2 builtin apr lacks, 2 not a jinja2 name at all */
    node *els;       /* S_IF / S_FOR: the else body (an S_BODY); S_IF's elif is an S_IF in it */
};

/* ================================================================ context */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

struct ctx {
    arena *ar;
    jmp_buf jb;
    apr_err *err;
    int depth;
    uint64_t steps;
    int64_t now;
    /* lexer / parser */
    const char *src;
    size_t len;
    struct tok *toks;
    size_t ntok, ptok, captok;
};

static _Noreturn void fail(ctx *c, int line, int col, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        apr_err_set(c->err, APR_E_FORMAT, "chat template line %d col %d: %s", line, col, msg);
    else
        apr_err_set(c->err, APR_E_FORMAT, "chat template: %s", msg);
    longjmp(c->jb, 1);
}

static void *ar(ctx *c, size_t n)
{
    void *p = arena_alloc(c->ar, n);
    if (!p) {
        apr_err_set(c->err, APR_E_NOMEM, "chat template: out of memory (or past %zu MiB)", 4 * MAX_OUTPUT >> 20);
        longjmp(c->jb, 1);
    }
    return p;
}

static void buf_put(ctx *c, buf *b, const char *s, size_t n)
{
    if (b->n + n > MAX_OUTPUT)
        fail(c, 0, 0, "output larger than %zu MiB", MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = ar(c, cap);
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_puts(ctx *c, buf *b, const char *s)
{
    buf_put(c, b, s, strlen(s));
}

static void buf_printf(ctx *c, buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void buf_printf(ctx *c, buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(c, b, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static str buf_str(buf *b)
{
    return (str){b->p ? b->p : "", b->n};
}

static char *ar_strndup(ctx *c, const char *s, size_t n)
{
    char *p = ar(c, n + 1);
    if (n)
        memcpy(p, s, n);
    return p;
}

static val v_str(str s)
{
    return (val){.t = T_STR, .s = s};
}

static val v_cstr(const char *s)
{
    return v_str((str){s, strlen(s)});
}

static val v_int(int64_t i)
{
    return (val){.t = T_INT, .i = i};
}

static val v_bool(bool b)
{
    return (val){.t = T_BOOL, .b = b};
}

static val v_none(void)
{
    return (val){.t = T_NONE};
}

static val v_undef(const char *name)
{
    return (val){.t = T_UNDEF, .s = {name, name ? strlen(name) : 0}};
}

static bool str_eq(str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && !memcmp(a.p, b, n);
}

static list *list_new(ctx *c, size_t n)
{
    if (n > MAX_ITEMS)
        fail(c, 0, 0, "a list of more than %zu items", MAX_ITEMS);
    list *l = ar(c, sizeof *l);
    l->v = ar(c, (n ? n : 1) * sizeof *l->v);
    l->n = n;
    return l;
}

static val v_list(list *l, bool tuple)
{
    return (val){.t = T_LIST, .l = l, .tuple = tuple};
}

static val v_gen(list *l, uint8_t lk)
{
    return (val){.t = T_LIST, .l = l, .lk = lk};
}

/* ================================================================ UTF-8 and Python's str */

/* Byte length of the code point at s (1 for a stray byte: templates and JSON
 * strings are checked UTF-8, so that only happens inside hostile input). */
static size_t u8len(const char *s, size_t n)
{
    unsigned char b = (unsigned char)s[0];
    size_t l = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    return l <= n ? l : 1;
}

static uint32_t u8dec(const char *s, size_t n, size_t *l)
{
    *l = u8len(s, n);
    const unsigned char *u = (const unsigned char *)s;
    switch (*l) {
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    case 4:
        return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
               (u[3] & 0x3F);
    default: return u[0];
    }
}

static size_t u8enc(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static size_t u8count(str s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n; i += u8len(s.p + i, s.n - i))
        n++;
    return n;
}

/* Python's str.isspace(). */
static bool py_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* Python's float repr: the shortest digits that read back to x, positional
 * for exponents in [-4, 16), else d.ddde+XX. */
static void float_repr(double x, char *o, size_t cap, bool json)
{
    if (isnan(x)) {
        snprintf(o, cap, json ? "NaN" : "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(o, cap, json ? (x > 0 ? "Infinity" : "-Infinity") : (x > 0 ? "inf" : "-inf"));
        return;
    }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x)
            break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg)
        q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    int ex = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    size_t o_n = 0;
#define PUT(ch) (o_n + 1 < cap ? (void)(o[o_n++] = (ch)) : (void)0)
    if (neg)
        PUT('-');
    if (ex >= -4 && ex < 16) {
        if (ex < 0) {
            PUT('0');
            PUT('.');
            for (int i = -1; i > ex; i--)
                PUT('0');
            for (size_t i = 0; i < nd; i++)
                PUT(digits[i]);
        } else {
            for (int i = 0; i <= ex; i++)
                PUT((size_t)i < nd ? digits[i] : '0');
            PUT('.');
            if ((size_t)ex + 1 < nd)
                for (size_t i = (size_t)ex + 1; i < nd; i++)
                    PUT(digits[i]);
            else
                PUT('0');
        }
    } else {
        PUT(digits[0]);
        if (nd > 1) {
            PUT('.');
            for (size_t i = 1; i < nd; i++)
                PUT(digits[i]);
        }
        char t[24];
        snprintf(t, sizeof t, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
        for (char *s = t; *s; s++)
            PUT(*s);
    }
#undef PUT
    o[o_n] = 0;
}

static void put_repr(ctx *c, buf *b, val v);

/* Python's repr of a str: single quotes unless the text has ' and no ". */
static void str_repr(ctx *c, buf *b, str s)
{
    bool sq = memchr(s.p, '\'', s.n) != NULL, dq = memchr(s.p, '"', s.n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    buf_put(c, b, &q, 1);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch == '\\' || ch == (unsigned char)q) {
            buf_put(c, b, "\\", 1);
            buf_put(c, b, s.p + i, 1);
        } else if (ch == '\n')
            buf_puts(c, b, "\\n");
        else if (ch == '\r')
            buf_puts(c, b, "\\r");
        else if (ch == '\t')
            buf_puts(c, b, "\\t");
        else if (ch < 0x20 || ch == 0x7F)
            buf_printf(c, b, "\\x%02x", ch);
        else if (ch >= 0x80) {
            size_t l;
            uint32_t cp = u8dec(s.p + i, s.n - i, &l);
            /* Python escapes the non-printable code points; those used in
             * templates' data are printable, the C1 controls are not */
            if (cp < 0xA0)
                buf_printf(c, b, "\\x%02x", cp);
            else if (cp == 0xAD || (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x200B && cp <= 0x200F) ||
                     (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF || (cp >= 0xE000 && cp <= 0xF8FF) ||
                     (cp >= 0xFFF0 && cp <= 0xFFFF) || cp >= 0xE0000)
                fail(c, 0, 0, "the repr of a string holding U+%04X is not supported", cp);
            else
                buf_put(c, b, s.p + i, l);
            i += l - 1;
        } else
            buf_put(c, b, s.p + i, 1);
    }
    buf_put(c, b, &q, 1);
}

/* Python's str(v). */
static void put_str(ctx *c, buf *b, val v)
{
    char t[64];
    switch (v.t) {
    case T_UNDEF: return;
    case T_NONE: buf_puts(c, b, "None"); return;
    case T_BOOL: buf_puts(c, b, v.b ? "True" : "False"); return;
    case T_INT: buf_printf(c, b, "%" PRId64, v.i); return;
    case T_FLOAT: float_repr(v.f, t, sizeof t, false); buf_puts(c, b, t); return;
    case T_STR: buf_put(c, b, v.s.p, v.s.n); return;
    case T_LIST:
    case T_DICT: put_repr(c, b, v); return;
    case T_NS: buf_puts(c, b, "<Namespace "); put_repr(c, b, (val){.t = T_DICT, .d = v.d}); buf_puts(c, b, ">"); return;
    default: fail(c, 0, 0, "printing a function or macro object is not supported");
    }
}

static void put_repr(ctx *c, buf *b, val v)
{
    if (c->depth > 4 * MAX_DEPTH)
        fail(c, 0, 0, "values nested deeper than %d", 4 * MAX_DEPTH);
    if (v.t == T_LIST && v.lk)
        fail(c, 0, 0, "printing a %s object is not supported", v.lk == LK_GEN ? "generator" : "dict view");
    if (v.t == T_STR) {
        str_repr(c, b, v.s);
    } else if (v.t == T_LIST) {
        buf_puts(c, b, v.tuple ? "(" : "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                buf_puts(c, b, ", ");
            c->depth++;
            put_repr(c, b, v.l->v[i]);
            c->depth--;
        }
        buf_puts(c, b, v.tuple ? (v.l->n == 1 ? ",)" : ")") : "]");
    } else if (v.t == T_DICT) {
        buf_puts(c, b, "{");
        for (size_t i = 0; i < v.d->n; i++) {
            if (i)
                buf_puts(c, b, ", ");
            c->depth++;
            put_repr(c, b, v.d->k[i]);
            buf_puts(c, b, ": ");
            put_repr(c, b, v.d->v[i]);
            c->depth--;
        }
        buf_puts(c, b, "}");
    } else if (v.t == T_UNDEF) {
        fail(c, 0, 0, "the repr of an undefined value is not supported");
    } else {
        put_str(c, b, v);
    }
}

static str to_str(ctx *c, val v)
{
    if (v.t == T_STR)
        return v.s;
    buf b = {0};
    put_str(c, &b, v);
    return buf_str(&b);
}

/* ================================================================ dicts, equality, truth */

static bool truthy(val v)
{
    switch (v.t) {
    case T_UNDEF:
    case T_NONE: return false;
    case T_BOOL: return v.b;
    case T_INT: return v.i != 0;
    case T_FLOAT: return v.f != 0;
    case T_STR: return v.s.n != 0;
    case T_LIST: return v.lk == LK_GEN || v.l->n != 0;
    case T_DICT: return v.d->n != 0;
    default: return true;
    }
}

static bool is_num(val v)
{
    return v.t == T_INT || v.t == T_FLOAT || v.t == T_BOOL;
}

static double num_f(val v)
{
    return v.t == T_FLOAT ? v.f : v.t == T_INT ? (double)v.i : v.b;
}

static int64_t num_i(val v)
{
    return v.t == T_INT ? v.i : v.b;
}

static bool v_eq(ctx *c, val a, val b);

static long dict_find(ctx *c, const dict *d, val k)
{
    for (size_t i = 0; i < d->n; i++)
        if (v_eq(c, d->k[i], k))
            return (long)i;
    return -1;
}

static void dict_set(ctx *c, dict *d, val k, val v)
{
    long i = dict_find(c, d, k);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        if (cap > MAX_ITEMS)
            fail(c, 0, 0, "a mapping of more than %zu items", MAX_ITEMS);
        val *nk = ar(c, cap * sizeof *nk), *nv = ar(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static bool dict_get(const dict *d, const char *key, val *out)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == T_STR && str_eq(d->k[i].s, key)) {
            *out = d->v[i];
            return true;
        }
    return false;
}

static bool v_eq_inner(ctx *c, val a, val b);

static bool v_eq(ctx *c, val a, val b)
{
    if (++c->depth > 4 * MAX_DEPTH)
        fail(c, 0, 0, "values nested deeper than %d", 4 * MAX_DEPTH);
    bool r = v_eq_inner(c, a, b);
    c->depth--;
    return r;
}

static bool v_eq_inner(ctx *c, val a, val b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t == T_FLOAT || b.t == T_FLOAT)
            return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case T_UNDEF:
    case T_NONE: return true;
    case T_STR: return a.s.n == b.s.n && !memcmp(a.s.p, b.s.p, a.s.n);
    case T_LIST:
        if (a.lk || b.lk)
            return a.l == b.l; /* generators and views: identity */
        if (a.tuple != b.tuple || a.l->n != b.l->n)
            return false;
        for (size_t i = 0; i < a.l->n; i++)
            if (!v_eq(c, a.l->v[i], b.l->v[i]))
                return false;
        return true;
    case T_DICT:
        if (a.d->n != b.d->n)
            return false;
        for (size_t i = 0; i < a.d->n; i++) {
            long j = dict_find(c, b.d, a.d->k[i]);
            if (j < 0 || !v_eq(c, a.d->v[i], b.d->v[j]))
                return false;
        }
        return true;
    case T_NS: return a.d == b.d;
    case T_FUNC: return a.fn == b.fn;
    default: return false;
    }
}

/* Python's ordering; <0, 0, >0. Only numbers, strings and sequences of them. */
static int v_cmp(ctx *c, const node *n, val a, val b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t == T_FLOAT || b.t == T_FLOAT) {
            double x = num_f(a), y = num_f(b);
            return x < y ? -1 : x > y;
        }
        int64_t x = num_i(a), y = num_i(b);
        return x < y ? -1 : x > y;
    }
    if (a.t == T_STR && b.t == T_STR) {
        size_t m = a.s.n < b.s.n ? a.s.n : b.s.n;
        int r = memcmp(a.s.p, b.s.p, m);
        return r ? r : a.s.n < b.s.n ? -1 : a.s.n > b.s.n;
    }
    if (a.t == T_LIST && b.t == T_LIST && a.tuple == b.tuple && !a.lk && !b.lk) {
        for (size_t i = 0; i < a.l->n && i < b.l->n; i++)
            if (!v_eq(c, a.l->v[i], b.l->v[i])) {
                if (++c->depth > 4 * MAX_DEPTH)
                    fail(c, 0, 0, "values nested deeper than %d", 4 * MAX_DEPTH);
                int r = v_cmp(c, n, a.l->v[i], b.l->v[i]);
                c->depth--;
                return r;
            }
        return a.l->n < b.l->n ? -1 : a.l->n > b.l->n;
    }
    if (a.t == T_UNDEF || b.t == T_UNDEF)
        fail(c, n->line, n->col, "'%.*s' is undefined", (int)(a.t == T_UNDEF ? a : b).s.n,
             (a.t == T_UNDEF ? a : b).s.p);
    fail(c, n->line, n->col, "ordering comparison between these types");
}

/* ================================================================ lexer */

enum { K_TEXT, K_VAR, K_BLOCK, K_END, K_NAME, K_INT, K_FLOAT, K_STR, K_OP, K_EOF };

typedef struct tok {
    int k, line, col;
    str s;          /* K_TEXT, K_NAME, K_STR (decoded), K_OP */
    int64_t i;
    double f;
} tok;

static void push_tok(ctx *c, tok t)
{
    if (c->ntok == c->captok) {
        size_t cap = c->captok ? c->captok * 2 : 256;
        tok *n = ar(c, cap * sizeof *n);
        if (c->ntok)
            memcpy(n, c->toks, c->ntok * sizeof *n);
        c->toks = n;
        c->captok = cap;
    }
    c->toks[c->ntok++] = t;
}

static bool ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Python's \s at s[i] (Unicode whitespace); its byte length, 0 if none. */
static size_t uws(const char *s, size_t n)
{
    if (!n)
        return 0;
    size_t l;
    uint32_t cp = u8dec(s, n, &l);
    return py_space(cp) ? l : 0;
}

/* Line and column (1-based) of byte offset off. */
static void where(const ctx *c, size_t off, int *line, int *col)
{
    int l = 1, cc = 1;
    for (size_t i = 0; i < off && i < c->len; i++) {
        if (c->src[i] == '\n') {
            l++;
            cc = 1;
        } else {
            cc++;
        }
    }
    *line = l;
    *col = cc;
}

static _Noreturn void fail_at(ctx *c, size_t off, const char *fmt, const char *arg)
{
    int line, col;
    where(c, off, &line, &col);
    fail(c, line, col, fmt, arg);
}

/* A string literal as jinja2 decodes it (Python's unicode-escape after
 * backslash-escaping what is not ASCII): returns the decoded text. */
static str lex_string(ctx *c, size_t *pos)
{
    size_t i = *pos;
    char q = c->src[i++];
    buf b = {0};
    buf_put(c, &b, "", 0);
    for (;;) {
        if (i >= c->len)
            fail_at(c, *pos, "unterminated string literal%s", "");
        char ch = c->src[i];
        if (ch == q) {
            i++;
            break;
        }
        if (ch != '\\') {
            buf_put(c, &b, &ch, 1);
            i++;
            continue;
        }
        if (i + 1 >= c->len)
            fail_at(c, i, "unterminated string literal%s", "");
        char e = c->src[i + 1];
        i += 2;
        const char *simple = strchr("\\'\"abfnrtv\n", e);
        static const char map[] = "\\'\"\a\b\f\n\r\t\v";
        if (e && simple) {
            if (e != '\n') /* backslash-newline is a line continuation */
                buf_put(c, &b, &map[simple - "\\'\"abfnrtv\n"], 1);
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < nd; k++, i++) {
                char h = i < c->len ? c->src[i] : 0;
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0)
                    fail_at(c, i, "truncated \\%s escape in a string literal", e == 'x' ? "x" : "u");
                cp = cp * 16 + (uint32_t)d;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                fail_at(c, i, "a string literal's escape names %s", "an invalid code point");
            char o[4];
            buf_put(c, &b, o, u8enc(cp, o));
        } else if (e >= '0' && e <= '7') {
            uint32_t cp = (uint32_t)(e - '0');
            for (int k = 0; k < 2 && i < c->len && c->src[i] >= '0' && c->src[i] <= '7'; k++, i++)
                cp = cp * 8 + (uint32_t)(c->src[i] - '0');
            char o[4];
            buf_put(c, &b, o, u8enc(cp, o));
        } else if (e == 'N') {
            fail_at(c, i, "\\N{...} escapes are not supported%s", "");
        } else {
            char two[2] = {'\\', e}; /* an unknown escape stays as written */
            buf_put(c, &b, two, 2);
        }
    }
    *pos = i;
    return buf_str(&b);
}

/* The tokens of one {{ }} or {% %} tag from *pos (just past its opening and
 * sign) to its end; returns the offset past the end marker and sets
 * *ends_nl when what it consumed ends with a newline (jinja2's line_starting). */
static size_t lex_tag(ctx *c, size_t i, bool block, bool *ends_nl)
{
    const char *s = c->src;
    size_t n = c->len;
    char close = block ? '%' : '}';
    int depth = 0;
    for (;;) {
        while (i < n && ws(s[i]))
            i++;
        if (i >= n)
            fail_at(c, i, "unexpected end of template inside a %s", block ? "{% %} tag" : "{{ }} tag");
        /* the end of the tag (only when brackets are balanced, as jinja2) */
        if (depth == 0) {
            bool minus = s[i] == '-' && i + 2 < n + 0 && s[i + 1] == close && s[i + 2] == '}';
            bool plus = block && s[i] == '+' && i + 2 < n + 0 && s[i + 1] == close && s[i + 2] == '}';
            if (minus || plus || (s[i] == close && i + 1 < n && s[i + 1] == '}')) {
                int line, col;
                where(c, i, &line, &col);
                push_tok(c, (tok){.k = K_END, .line = line, .col = col});
                i += minus || plus ? 3 : 2;
                *ends_nl = false;
                if (minus) {
                    size_t l;
                    while ((l = uws(s + i, n - i)) > 0) {
                        *ends_nl = s[i] == '\n';
                        i += l;
                    }
                } else if (!plus && block && i < n && s[i] == '\n') {
                    i++; /* trim_blocks */
                    *ends_nl = true;
                }
                return i;
            }
        }
        int line, col;
        where(c, i, &line, &col);
        tok t = {.line = line, .col = col};
        char ch = s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
            size_t j = i;
            while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') || s[j] == '_' ||
                             (s[j] >= '0' && s[j] <= '9')))
                j++;
            t.k = K_NAME;
            t.s = (str){s + i, j - i};
            i = j;
        } else if (ch >= '0' && ch <= '9') {
            size_t j = i;
            while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
                j++;
            bool is_float = false;
            if (j + 1 < n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9') {
                is_float = true;
                j++;
                while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
                    j++;
            }
            if (j < n && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < n && (s[k] == '+' || s[k] == '-'))
                    k++;
                if (k < n && s[k] >= '0' && s[k] <= '9') {
                    is_float = true;
                    j = k;
                    while (j < n && s[j] >= '0' && s[j] <= '9')
                        j++;
                }
            }
            char num[64];
            size_t m = 0;
            for (size_t k = i; k < j && m + 1 < sizeof num; k++)
                if (s[k] != '_')
                    num[m++] = s[k];
            num[m] = 0;
            if (j - i >= sizeof num || (ch == '0' && j < n && strchr("xXoObB", s[j])))
                fail_at(c, i, "unsupported number literal%s", "");
            if (is_float) {
                t.k = K_FLOAT;
                t.f = strtod(num, NULL);
            } else {
                t.k = K_INT;
                char *end;
                unsigned long long u = strtoull(num, &end, 10);
                if (u > INT64_MAX)
                    fail_at(c, i, "integer literal out of range%s", "");
                t.i = (int64_t)u;
            }
            i = j;
        } else if (ch == '\'' || ch == '"') {
            t.k = K_STR;
            t.s = lex_string(c, &i);
        } else {
            static const char *const ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                              "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
            size_t k = 0;
            for (; k < sizeof ops / sizeof *ops; k++)
                if (!strncmp(s + i, ops[k], strlen(ops[k])))
                    break;
            if (k == sizeof ops / sizeof *ops) {
                char one[8];
                snprintf(one, sizeof one, "%c", ch);
                fail_at(c, i, "unexpected character '%s'", one);
            }
            t.k = K_OP;
            t.s = (str){ops[k], strlen(ops[k])};
            if (strchr("([{", ops[k][0]))
                depth++;
            else if (strchr(")]}", ops[k][0]) && depth > 0)
                depth--;
            i += strlen(ops[k]);
        }
        push_tok(c, t);
    }
}

/* Jinja's source normalization: \r\n and \r become \n, and one trailing
 * newline is dropped (keep_trailing_newline=False). */
static void normalize_source(ctx *c, const char *src, size_t len)
{
    char *o = ar(c, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            o[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            o[n++] = src[i];
        }
    }
    if (n && o[n - 1] == '\n')
        n--;
    o[n] = 0;
    c->src = o;
    c->len = n;
}

static void lex(ctx *c)
{
    const char *s = c->src;
    size_t n = c->len, i = 0;
    bool line_starting = true;
    while (i < n) {
        size_t j = i;
        while (j + 1 < n && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')))
            j++;
        if (j + 1 >= n) {
            int line, col;
            where(c, i, &line, &col);
            push_tok(c, (tok){.k = K_TEXT, .line = line, .col = col, .s = {s + i, n - i}});
            break;
        }
        char kind = s[j + 1];
        char sign = j + 2 < n && (s[j + 2] == '-' || s[j + 2] == '+') ? s[j + 2] : 0;
        size_t tlen = j - i;
        if (sign == '-') {
            while (tlen > 0) { /* rstrip: Unicode whitespace, so step back over code points */
                size_t k = tlen - 1;
                while (k > 0 && ((unsigned char)s[i + k] & 0xC0) == 0x80)
                    k--;
                if (!uws(s + i + k, tlen - k) || uws(s + i + k, tlen - k) != tlen - k)
                    break;
                tlen = k;
            }
        } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
            size_t lpos = 0;
            for (size_t k = tlen; k > 0; k--)
                if (s[i + k - 1] == '\n') {
                    lpos = k;
                    break;
                }
            if (lpos > 0 || line_starting) {
                bool all_ws = lpos < tlen;
                for (size_t k = lpos; k < tlen && all_ws;) {
                    size_t l = uws(s + i + k, tlen - k);
                    all_ws = l > 0;
                    k += l ? l : 1;
                }
                if (all_ws)
                    tlen = lpos;
            }
        }
        if (tlen) {
            int line, col;
            where(c, i, &line, &col);
            push_tok(c, (tok){.k = K_TEXT, .line = line, .col = col, .s = {s + i, tlen}});
        }
        size_t body = j + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t k = body;
            while (k + 1 < n && !(s[k] == '#' && s[k + 1] == '}'))
                k++;
            if (k + 1 >= n)
                fail_at(c, j, "missing end of comment tag%s", "");
            bool minus = k > body && s[k - 1] == '-', plus = k > body && s[k - 1] == '+';
            i = k + 2;
            line_starting = false;
            if (minus) {
                size_t l;
                while ((l = uws(s + i, n - i)) > 0) {
                    line_starting = s[i] == '\n';
                    i += l;
                }
            } else if (!plus && i < n && s[i] == '\n') {
                i++;
                line_starting = true;
            }
            continue;
        }
        int line, col;
        where(c, j, &line, &col);
        if (kind == '%') {
            size_t k = body;
            while (k < n && ws(s[k]))
                k++;
            if (k + 3 <= n && !strncmp(s + k, "raw", 3) && (k + 3 == n || !(s[k + 3] == '_' || (s[k + 3] >= 'a' && s[k + 3] <= 'z'))))
                fail(c, line, col, "{%% raw %%} blocks are not supported");
        }
        push_tok(c, (tok){.k = kind == '%' ? K_BLOCK : K_VAR, .line = line, .col = col});
        i = lex_tag(c, body, kind == '%', &line_starting);
    }
    int line, col;
    where(c, n, &line, &col);
    push_tok(c, (tok){.k = K_EOF, .line = line, .col = col});
}

/* ================================================================ parser */

static tok *cur(ctx *c)
{
    return &c->toks[c->ptok];
}

static bool is_op(const tok *t, const char *op)
{
    return t->k == K_OP && str_eq(t->s, op);
}

static bool is_name(const tok *t, const char *name)
{
    return t->k == K_NAME && str_eq(t->s, name);
}

static _Noreturn void fail_tok(ctx *c, const tok *t, const char *what)
{
    char got[64];
    if (t->k == K_EOF)
        snprintf(got, sizeof got, "end of template");
    else if (t->k == K_END)
        snprintf(got, sizeof got, "end of tag");
    else if (t->k == K_NAME || t->k == K_OP)
        snprintf(got, sizeof got, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p);
    else
        snprintf(got, sizeof got, "a literal");
    fail(c, t->line, t->col, "expected %s, found %s", what, got);
}

static void expect_op(ctx *c, const char *op)
{
    if (!is_op(cur(c), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        fail_tok(c, cur(c), w);
    }
    c->ptok++;
}

static void expect_end(ctx *c)
{
    if (cur(c)->k != K_END)
        fail_tok(c, cur(c), "the end of the tag");
    c->ptok++;
}

static const char *expect_name(ctx *c)
{
    tok *t = cur(c);
    if (t->k != K_NAME)
        fail_tok(c, t, "a name");
    c->ptok++;
    return ar_strndup(c, t->s.p, t->s.n);
}

static node *mk(ctx *c, int k, const tok *at)
{
    node *n = ar(c, sizeof *n);
    n->k = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

/* A growable array of nodes (and keyword names) while parsing. */
typedef struct nvec {
    node **v;
    const char **kw;
    size_t n, cap;
} nvec;

static void nv_push(ctx *c, nvec *v, node *x, const char *kw)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        node **nn = ar(c, cap * sizeof *nn);
        const char **nk = ar(c, cap * sizeof *nk);
        if (v->n) {
            memcpy(nn, v->v, v->n * sizeof *nn);
            memcpy(nk, v->kw, v->n * sizeof *nk);
        }
        v->v = nn;
        v->kw = nk;
        v->cap = cap;
    }
    v->kw[v->n] = kw;
    v->v[v->n++] = x;
}

static node *parse_expr(ctx *c);
static node *parse_or(ctx *c);
static node *parse_unary(ctx *c, bool with_filter);

/* The filters (FILTERS) and tests implemented below; any other name is
 * refused when the template is parsed (jinja2 refuses unknown ones at compile
 * time too). */
static const struct filter_def *find_filter(const char *name);
static const char *const tests[] = {
    "defined", "undefined", "none", "string", "mapping", "iterable", "sequence", "number", "integer", "float",
    "boolean", "true", "false", "in", "eq", "equalto", "==", "ne", "!=", "lt", "<", "gt", ">", "le", "<=", "ge",
    ">=", "odd", "even", "divisibleby", "sameas", "callable", "lower", "upper", NULL};

/* jinja2's own builtin filters and tests (and transformers' tojson): a name
 * outside these lists is one jinja2 refuses when it compiles the template,
 * unless it sits in an if / conditional expression (it then fails only when
 * reached). */
static const char *const jinja_filters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title",
    "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};
static const char *const jinja_tests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter", "float",
    "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none",
    "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==", "!=", "<", "<=",
    ">", ">=", NULL};

static bool listed(const char *const *names, const char *n)
{
    for (; *names; names++)
        if (!strcmp(*names, n))
            return true;
    return false;
}

/* ( args ) after a callee: positional and name=value arguments. */
static void parse_call_args(ctx *c, node *call)
{
    expect_op(c, "(");
    nvec args = {0};
    while (!is_op(cur(c), ")")) {
        if (args.n)
            expect_op(c, ",");
        if (is_op(cur(c), ")"))
            break; /* a trailing comma */
        if (is_op(cur(c), "*") || is_op(cur(c), "**"))
            fail(c, cur(c)->line, cur(c)->col, "*args / **kwargs in a call are not supported");
        const char *kw = NULL;
        if (cur(c)->k == K_NAME && is_op(&c->toks[c->ptok + 1], "=")) {
            kw = expect_name(c);
            c->ptok++;
        } else {
            for (size_t i = 0; i < args.n; i++)
                if (args.kw[i])
                    fail(c, cur(c)->line, cur(c)->col, "a positional argument after a keyword argument");
        }
        nv_push(c, &args, parse_expr(c), kw);
    }
    c->ptok++;
    call->kids = args.v;
    call->kw = args.kw;
    call->nk = args.n;
}

static node *parse_primary(ctx *c)
{
    tok *t = cur(c);
    node *n;
    if (t->k == K_NAME) {
        c->ptok++;
        if (str_eq(t->s, "true") || str_eq(t->s, "True") || str_eq(t->s, "false") || str_eq(t->s, "False")) {
            n = mk(c, E_LIT, t);
            n->lit = v_bool(t->s.p[0] == 't' || t->s.p[0] == 'T');
        } else if (str_eq(t->s, "none") || str_eq(t->s, "None")) {
            n = mk(c, E_LIT, t);
            n->lit = v_none();
        } else {
            n = mk(c, E_NAME, t);
            n->name = ar_strndup(c, t->s.p, t->s.n);
        }
        return n;
    }
    if (t->k == K_STR) {
        buf b = {0};
        buf_put(c, &b, "", 0);
        while (cur(c)->k == K_STR) { /* adjacent literals are one string, as in Python */
            buf_put(c, &b, cur(c)->s.p, cur(c)->s.n);
            c->ptok++;
        }
        n = mk(c, E_LIT, t);
        n->lit = v_str(buf_str(&b));
        return n;
    }
    if (t->k == K_INT || t->k == K_FLOAT) {
        c->ptok++;
        n = mk(c, E_LIT, t);
        n->lit = t->k == K_INT ? v_int(t->i) : (val){.t = T_FLOAT, .f = t->f};
        return n;
    }
    if (is_op(t, "(") || is_op(t, "[")) {
        bool paren = is_op(t, "(");
        c->ptok++;
        nvec items = {0};
        bool comma = false;
        while (!is_op(cur(c), paren ? ")" : "]")) {
            if (items.n) {
                expect_op(c, ",");
                comma = true;
                if (is_op(cur(c), paren ? ")" : "]"))
                    break;
            }
            nv_push(c, &items, parse_expr(c), NULL);
        }
        c->ptok++;
        if (paren && items.n == 1 && !comma)
            return items.v[0];
        n = mk(c, paren ? E_TUPLE : E_LIST, t);
        n->kids = items.v;
        n->nk = items.n;
        return n;
    }
    if (is_op(t, "{")) {
        c->ptok++;
        nvec items = {0};
        while (!is_op(cur(c), "}")) {
            if (items.n) {
                expect_op(c, ",");
                if (is_op(cur(c), "}"))
                    break;
            }
            nv_push(c, &items, parse_expr(c), NULL);
            expect_op(c, ":");
            nv_push(c, &items, parse_expr(c), NULL);
        }
        c->ptok++;
        n = mk(c, E_DICT, t);
        n->kids = items.v;
        n->nk = items.n;
        return n;
    }
    fail_tok(c, t, "an expression");
}

/* [ a ], [ a:b:c ] after a value. */
static node *parse_subscript(ctx *c, node *on, const tok *at)
{
    node *part[3] = {NULL, NULL, NULL};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (is_op(cur(c), ":")) {
            slice = true;
            if (np >= 2)
                fail_tok(c, cur(c), "']'");
            np++;
            c->ptok++;
            continue;
        }
        if (is_op(cur(c), "]"))
            break;
        if (part[np])
            fail_tok(c, cur(c), "':' or ']'");
        part[np] = parse_expr(c);
        if (is_op(cur(c), ","))
            fail(c, cur(c)->line, cur(c)->col, "tuple subscripts are not supported");
    }
    c->ptok++;
    node *n = mk(c, slice ? E_SLICE : E_ITEM, at);
    n->a = on;
    if (slice) {
        n->kids = ar(c, 3 * sizeof *n->kids);
        memcpy(n->kids, part, sizeof part);
        n->nk = 3;
    } else {
        if (!part[0])
            fail_tok(c, at, "a subscript");
        n->b = part[0];
    }
    return n;
}

static node *parse_postfix(ctx *c, node *n)
{
    for (;;) {
        tok *t = cur(c);
        if (is_op(t, ".")) {
            c->ptok++;
            tok *a = cur(c);
            if (a->k == K_INT) {
                c->ptok++;
                node *idx = mk(c, E_LIT, a);
                idx->lit = v_int(a->i);
                node *g = mk(c, E_ITEM, t);
                g->a = n;
                g->b = idx;
                n = g;
                continue;
            }
            node *g = mk(c, E_ATTR, t);
            g->a = n;
            g->name = expect_name(c);
            n = g;
        } else if (is_op(t, "[")) {
            c->ptok++;
            n = parse_subscript(c, n, t);
        } else if (is_op(t, "(")) {
            node *call = mk(c, E_CALL, t);
            call->a = n;
            parse_call_args(c, call);
            n = call;
        } else {
            return n;
        }
    }
}

static node *parse_filter_expr(ctx *c, node *n)
{
    for (;;) {
        tok *t = cur(c);
        if (is_op(t, "|")) {
            c->ptok++;
            node *f = mk(c, E_FILTER, cur(c));
            f->name = expect_name(c);
            if (is_op(cur(c), "."))
                fail(c, f->line, f->col, "dotted filter names are not supported");
            f->unknown = find_filter(f->name) ? 0 : listed(jinja_filters, f->name) ? 1 : 2;
            f->a = n;
            if (is_op(cur(c), "("))
                parse_call_args(c, f);
            n = f;
        } else if (is_name(t, "is")) {
            c->ptok++;
            node *f = mk(c, E_TEST, cur(c));
            if (is_name(cur(c), "not")) {
                f->op = 1;
                c->ptok++;
            }
            tok *nt = cur(c);
            if (nt->k == K_NAME)
                f->name = expect_name(c);
            else if (nt->k == K_OP && (is_op(nt, "==") || is_op(nt, "!=") || is_op(nt, "<") || is_op(nt, ">") ||
                                       is_op(nt, "<=") || is_op(nt, ">="))) {
                c->ptok++;
                f->name = ar_strndup(c, nt->s.p, nt->s.n);
            } else
                fail_tok(c, nt, "a test name");
            f->unknown = listed(tests, f->name) ? 0 : listed(jinja_tests, f->name) ? 1 : 2;
            f->a = n;
            tok *at = cur(c);
            if (is_op(at, "(")) {
                parse_call_args(c, f);
            } else if ((at->k == K_NAME || at->k == K_STR || at->k == K_INT || at->k == K_FLOAT || is_op(at, "[") ||
                        is_op(at, "{")) &&
                       !is_name(at, "else") && !is_name(at, "or") && !is_name(at, "and")) {
                if (is_name(at, "is"))
                    fail_tok(c, at, "a test argument");
                node *arg = parse_postfix(c, parse_primary(c));
                f->kids = ar(c, sizeof *f->kids);
                f->kw = ar(c, sizeof *f->kw);
                f->kids[0] = arg;
                f->nk = 1;
            }
            n = f;
        } else if (is_op(t, "(")) {
            node *call = mk(c, E_CALL, t);
            call->a = n;
            parse_call_args(c, call);
            n = call;
        } else {
            return n;
        }
    }
}

static node *parse_unary(ctx *c, bool with_filter)
{
    tok *t = cur(c);
    node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        c->ptok++;
        n = mk(c, is_op(t, "-") ? E_NEG : E_POS, t);
        n->a = parse_unary(c, false);
    } else {
        n = parse_primary(c);
    }
    n = parse_postfix(c, n);
    if (with_filter)
        n = parse_filter_expr(c, n);
    return n;
}

static node *binop(ctx *c, const tok *at, int op, node *a, node *b)
{
    node *n = mk(c, E_BIN, at);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

/* jinja2's binary operators: the token, the code, the precedence level (as
 * its parser's parse_compare, parse_math1, parse_concat, parse_math2,
 * parse_pow: 0 binds loosest; every level but 0 is left-associative, 0 is a
 * comparison chain) and, for comparisons, the tests that compare the same way
 * (`x is lt 3` is `x < 3`). "in" / "not in" are names, parsed by
 * parse_compare itself. */
#define BIN_LEVELS 5
static const struct op_def {
    const char *tok;
    int op, level;
    const char *tests; /* space-separated */
} OPS[] = {
    {"==", OP_EQ, 0, "eq equalto =="}, {"!=", OP_NE, 0, "ne !="}, {"<", OP_LT, 0, "lt <"}, {"<=", OP_LE, 0, "le <="},
    {">", OP_GT, 0, "gt >"}, {">=", OP_GE, 0, "ge >="}, {"+", OP_ADD, 1, ""}, {"-", OP_SUB, 1, ""},
    {"~", OP_CONCAT, 2, ""}, {"*", OP_MUL, 3, ""}, {"/", OP_DIV, 3, ""}, {"//", OP_FLOORDIV, 3, ""},
    {"%", OP_MOD, 3, ""}, {"**", OP_POW, 4, ""},
};

/* The OPS code of operator token t at this level; 0 if it is none. */
static int op_at(const tok *t, int level)
{
    for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
        if (OPS[i].level == level && is_op(t, OPS[i].tok))
            return OPS[i].op;
    return 0;
}

/* The comparison a test name stands for; 0 if none. */
static int test_op(const char *name)
{
    const size_t n = strlen(name);
    for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
        for (const char *p = OPS[i].tests; *p;) {
            const size_t l = strcspn(p, " ");
            if (l == n && !memcmp(p, name, n))
                return OPS[i].op;
            p += l + (p[l] == ' ');
        }
    return 0;
}

/* Levels 1 .. BIN_LEVELS - 1: left-associative chains of the next level's
 * operands; past the last, unary operands with their filters. */
static node *parse_binary(ctx *c, int level)
{
    if (level == BIN_LEVELS)
        return parse_unary(c, true);
    node *n = parse_binary(c, level + 1);
    for (;;) {
        tok *t = cur(c);
        const int op = op_at(t, level);
        if (!op)
            return n;
        c->ptok++;
        n = binop(c, t, op, n, parse_binary(c, level + 1));
    }
}

static node *parse_compare(ctx *c)
{
    tok *at = cur(c);
    node *first = parse_binary(c, 1);
    nvec operands = {0};
    int ops[64], nops = 0;
    nv_push(c, &operands, first, NULL);
    for (;;) {
        tok *t = cur(c);
        int op = is_name(t, "in") ? OP_IN : op_at(t, 0);
        if (!op && is_name(t, "not") && is_name(&c->toks[c->ptok + 1], "in")) {
            op = OP_NOTIN;
            c->ptok++;
        }
        if (!op)
            break;
        if (nops == 64)
            fail(c, t->line, t->col, "more than 64 chained comparisons");
        c->ptok++;
        ops[nops++] = op;
        nv_push(c, &operands, parse_binary(c, 1), NULL);
    }
    if (!nops)
        return first;
    node *n = mk(c, E_CMP, at);
    n->kids = operands.v;
    n->nk = operands.n;
    n->ops = ar(c, (size_t)nops * sizeof *n->ops);
    memcpy(n->ops, ops, (size_t)nops * sizeof *ops);
    return n;
}

static node *parse_not(ctx *c)
{
    tok *t = cur(c);
    if (is_name(t, "not")) {
        c->ptok++;
        node *n = mk(c, E_NOT, t);
        n->a = parse_not(c);
        return n;
    }
    return parse_compare(c);
}

static node *parse_and(ctx *c)
{
    node *n = parse_not(c);
    while (is_name(cur(c), "and")) {
        tok *t = cur(c);
        c->ptok++;
        node *x = mk(c, E_AND, t);
        x->a = n;
        x->b = parse_not(c);
        n = x;
    }
    return n;
}

static node *parse_or(ctx *c)
{
    node *n = parse_and(c);
    while (is_name(cur(c), "or")) {
        tok *t = cur(c);
        c->ptok++;
        node *x = mk(c, E_OR, t);
        x->a = n;
        x->b = parse_and(c);
        n = x;
    }
    return n;
}

/* expr1 if cond [else expr2], as jinja2's parse_condexpr. */
static node *parse_expr(ctx *c)
{
    if (++c->depth > MAX_DEPTH)
        fail(c, cur(c)->line, cur(c)->col, "expression nested deeper than %d", MAX_DEPTH);
    node *n = parse_or(c);
    while (is_name(cur(c), "if")) {
        tok *t = cur(c);
        c->ptok++;
        node *x = mk(c, E_COND, t);
        x->b = n;
        x->a = parse_or(c);
        if (is_name(cur(c), "else")) {
            c->ptok++;
            x->c = parse_expr(c);
        }
        n = x;
    }
    c->depth--;
    return n;
}

/* An expression that may be an unparenthesized tuple (a, b): set / for values. */
static node *parse_tuple_expr(ctx *c)
{
    tok *at = cur(c);
    node *first = parse_expr(c);
    if (!is_op(cur(c), ","))
        return first;
    nvec items = {0};
    nv_push(c, &items, first, NULL);
    while (is_op(cur(c), ",")) {
        c->ptok++;
        if (cur(c)->k == K_END)
            break;
        nv_push(c, &items, parse_expr(c), NULL);
    }
    node *n = mk(c, E_TUPLE, at);
    n->kids = items.v;
    n->nk = items.n;
    return n;
}

/* ---------------------------------------------------------------- statements */

static node *parse_body(ctx *c, const char *const *ends, const char **which);

/* Names of assignment / loop targets: NAME or NAME, NAME, ... */
static void parse_targets(ctx *c, node *n)
{
    nvec names = {0};
    do {
        if (names.n)
            c->ptok++;
        nv_push(c, &names, NULL, expect_name(c));
    } while (is_op(cur(c), ","));
    n->kw = names.kw;
    n->nkw = names.n;
}

static node *parse_if(ctx *c, const tok *at)
{
    node *n = mk(c, S_IF, at);
    n->a = parse_tuple_expr(c);
    expect_end(c);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *which;
    n->b = parse_body(c, ends, &which);
    if (!strcmp(which, "elif")) {
        tok *t = &c->toks[c->ptok - 1];
        node *body = mk(c, S_BODY, t);
        body->kids = ar(c, sizeof *body->kids);
        body->kids[0] = parse_if(c, t);
        body->nk = 1;
        n->els = body;
        return n; /* the nested if consumed endif */
    }
    if (!strcmp(which, "else")) {
        expect_end(c);
        static const char *const end[] = {"endif", NULL};
        n->els = parse_body(c, end, &which);
    }
    expect_end(c);
    return n;
}

static node *parse_for(ctx *c, const tok *at)
{
    node *n = mk(c, S_FOR, at);
    parse_targets(c, n);
    if (!is_name(cur(c), "in"))
        fail_tok(c, cur(c), "'in'");
    c->ptok++;
    /* the iterable stops before a filter `if` (no conditional expression there) */
    tok *it = cur(c);
    node *first = parse_or(c);
    if (is_op(cur(c), ",")) {
        nvec items = {0};
        nv_push(c, &items, first, NULL);
        while (is_op(cur(c), ",")) {
            c->ptok++;
            nv_push(c, &items, parse_or(c), NULL);
        }
        first = mk(c, E_TUPLE, it);
        first->kids = items.v;
        first->nk = items.n;
    }
    n->a = first;
    if (is_name(cur(c), "if")) {
        c->ptok++;
        n->b = parse_expr(c);
    }
    if (is_name(cur(c), "recursive"))
        fail(c, cur(c)->line, cur(c)->col, "recursive for loops are not supported");
    expect_end(c);
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *which;
    n->c = parse_body(c, ends, &which);
    if (!strcmp(which, "else")) {
        expect_end(c);
        static const char *const end[] = {"endfor", NULL};
        n->els = parse_body(c, end, &which);
    }
    expect_end(c);
    return n;
}

static node *parse_set(ctx *c, const tok *at)
{
    node *n = mk(c, S_SET, at);
    const char *first = expect_name(c);
    if (is_op(cur(c), ".")) {
        c->ptok++;
        n->name = first;
        n->attr = expect_name(c);
    } else {
        c->ptok--;
        parse_targets(c, n);
    }
    if (is_op(cur(c), "=")) {
        c->ptok++;
        n->a = parse_tuple_expr(c);
        expect_end(c);
        return n;
    }
    if (n->attr || n->nkw != 1)
        fail_tok(c, cur(c), "'='");
    if (is_op(cur(c), "|"))
        fail(c, cur(c)->line, cur(c)->col, "filtered {%% set %%} blocks are not supported");
    expect_end(c);
    n->k = S_SETBLOCK;
    static const char *const end[] = {"endset", NULL};
    const char *which;
    n->b = parse_body(c, end, &which);
    expect_end(c);
    return n;
}

static node *parse_macro(ctx *c, const tok *at)
{
    node *n = mk(c, S_MACRO, at);
    n->name = expect_name(c);
    expect_op(c, "(");
    nvec params = {0};
    while (!is_op(cur(c), ")")) {
        if (params.n)
            expect_op(c, ",");
        if (is_op(cur(c), ")"))
            break;
        const char *p = expect_name(c);
        node *dflt = NULL;
        if (is_op(cur(c), "=")) {
            c->ptok++;
            dflt = parse_expr(c);
        }
        nv_push(c, &params, dflt, p);
    }
    c->ptok++;
    n->kids = params.v; /* default values (NULL: required) */
    n->kw = params.kw;
    n->nkw = n->nk = params.n;
    expect_end(c);
    static const char *const end[] = {"endmacro", NULL};
    const char *which;
    n->b = parse_body(c, end, &which);
    if (cur(c)->k == K_NAME && strcmp(expect_name(c), n->name)) /* {% endmacro name %} */
        fail(c, at->line, at->col, "{%% endmacro %%} names another macro than '%s'", n->name);
    expect_end(c);
    return n;
}

/* Statements until a {% NAME %} with NAME in ends: *which gets it, the
 * parser stands after NAME. ends NULL: until the end of the template. */
static node *parse_body(ctx *c, const char *const *ends, const char **which)
{
    tok *start = cur(c);
    nvec body = {0};
    if (++c->depth > MAX_DEPTH)
        fail(c, start->line, start->col, "statements nested deeper than %d", MAX_DEPTH);
    for (;;) {
        tok *t = cur(c);
        if (t->k == K_EOF) {
            if (ends) {
                char w[160] = "";
                for (const char *const *e = ends; *e; e++)
                    snprintf(w + strlen(w), sizeof w - strlen(w), "%s{%% %s %%}", e == ends ? "" : " or ", *e);
                fail_tok(c, t, w);
            }
            break;
        }
        c->ptok++;
        if (t->k == K_TEXT) {
            node *n = mk(c, S_TEXT, t);
            n->lit = v_str(t->s);
            nv_push(c, &body, n, NULL);
            continue;
        }
        if (t->k == K_VAR) {
            node *n = mk(c, S_OUT, t);
            n->a = parse_tuple_expr(c);
            expect_end(c);
            nv_push(c, &body, n, NULL);
            continue;
        }
        /* K_BLOCK */
        tok *kw = cur(c);
        if (kw->k != K_NAME)
            fail_tok(c, kw, "a statement name");
        bool is_end = false;
        for (const char *const *e = ends; e && *e; e++)
            if (str_eq(kw->s, *e)) {
                *which = *e;
                is_end = true;
            }
        if (is_end) {
            c->ptok++;
            break;
        }
        c->ptok++;
        node *n;
        if (str_eq(kw->s, "if"))
            n = parse_if(c, t);
        else if (str_eq(kw->s, "for"))
            n = parse_for(c, t);
        else if (str_eq(kw->s, "set"))
            n = parse_set(c, t);
        else if (str_eq(kw->s, "macro"))
            n = parse_macro(c, t);
        else if (str_eq(kw->s, "break") || str_eq(kw->s, "continue")) {
            n = mk(c, str_eq(kw->s, "break") ? S_BREAK : S_CONTINUE, t);
            expect_end(c);
        } else if (str_eq(kw->s, "generation")) {
            /* transformers' AssistantTracker: renders its body unchanged */
            expect_end(c);
            static const char *const end[] = {"endgeneration", NULL};
            const char *w;
            n = parse_body(c, end, &w);
            expect_end(c);
        } else if (str_eq(kw->s, "filter")) {
            n = mk(c, S_FILTERBLOCK, t);
            node *f = mk(c, E_FILTER, cur(c));
            f->name = expect_name(c);
            f->unknown = find_filter(f->name) ? 0 : listed(jinja_filters, f->name) ? 1 : 2;
            if (is_op(cur(c), "("))
                parse_call_args(c, f);
            if (!is_op(cur(c), "|") && cur(c)->k != K_END)
                fail_tok(c, cur(c), "the end of the tag");
            if (is_op(cur(c), "|"))
                fail(c, cur(c)->line, cur(c)->col, "chained filters on a {%% filter %%} block are not supported");
            expect_end(c);
            static const char *const end[] = {"endfilter", NULL};
            const char *w;
            n->a = f;
            n->b = parse_body(c, end, &w);
            expect_end(c);
        } else if (str_eq(kw->s, "elif") || str_eq(kw->s, "else") || (kw->s.n > 3 && !memcmp(kw->s.p, "end", 3))) {
            fail(c, kw->line, kw->col, "unexpected {%% %.*s %%}", (int)(kw->s.n > 40 ? 40 : kw->s.n), kw->s.p);
        } else {
            fail(c, kw->line, kw->col, "the {%% %.*s %%} statement is not supported", (int)(kw->s.n > 40 ? 40 : kw->s.n),
                 kw->s.p);
        }
        nv_push(c, &body, n, NULL);
    }
    c->depth--;
    node *b = mk(c, S_BODY, start);
    b->kids = body.v;
    b->nk = body.n;
    return b;
}

/* ================================================================ evaluator */

typedef struct args {
    val *v;
    const char **kw;
    size_t n;
} args;

static val eval(ctx *c, scope *sc, const node *n);
static int exec_body(ctx *c, scope *sc, const node *body, buf *out);

static _Noreturn void fail_n(ctx *c, const node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Noreturn void fail_n(ctx *c, const node *n, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(c, n->line, n->col, "%s", msg);
}

static const char *type_name(val v)
{
    switch (v.t) {
    case T_UNDEF: return "undefined";
    case T_NONE: return "NoneType";
    case T_BOOL: return "bool";
    case T_INT: return "int";
    case T_FLOAT: return "float";
    case T_STR: return "str";
    case T_LIST: return v.tuple ? "tuple" : "list";
    case T_DICT: return "dict";
    case T_NS: return "Namespace";
    default: return "function";
    }
}

static _Noreturn void fail_undef(ctx *c, const node *n, val u)
{
    fail_n(c, n, "'%.*s' is undefined", (int)(u.s.n > 80 ? 80 : u.s.n), u.s.p ? u.s.p : "");
}

static scope *scope_new(ctx *c, scope *parent)
{
    scope *s = ar(c, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(ctx *c, scope *s, const char *name, val v)
{
    dict_set(c, &s->vars, v_cstr(name), v);
}

static val lookup(scope *s, const char *name)
{
    for (; s; s = s->parent) {
        val v;
        if (dict_get(&s->vars, name, &v))
            return v;
    }
    static const struct { const char *name; int fn; } globals[] = {
        {"range", F_RANGE}, {"namespace", F_NAMESPACE}, {"raise_exception", F_RAISE},
        {"strftime_now", F_STRFTIME}, {"dict", F_DICT}};
    for (size_t i = 0; i < sizeof globals / sizeof *globals; i++)
        if (!strcmp(name, globals[i].name))
            return (val){.t = T_FUNC, .fn = globals[i].fn};
    return v_undef(name);
}

/* The elements a for loop / list() sees: list items, a dict's keys, a
 * string's characters; undefined is empty. */
static list *iter_items(ctx *c, const node *n, val v)
{
    if (v.t == T_LIST && v.lk == LK_GEN) {
        if (v.l->consumed)
            fail_n(c, n, "iterating a generator a second time (jinja2 would see it empty) is not supported");
        v.l->consumed = true;
    }
    if (v.t == T_LIST)
        return v.l;
    if (v.t == T_UNDEF)
        return list_new(c, 0);
    if (v.t == T_DICT) {
        list *l = list_new(c, v.d->n);
        if (v.d->n)
            memcpy(l->v, v.d->k, v.d->n * sizeof *l->v);
        return l;
    }
    if (v.t == T_STR) {
        list *l = list_new(c, u8count(v.s));
        size_t k = 0;
        for (size_t i = 0; i < v.s.n; k++) {
            size_t len = u8len(v.s.p + i, v.s.n - i);
            l->v[k] = v_str((str){v.s.p + i, len});
            i += len;
        }
        return l;
    }
    fail_n(c, n, "'%s' object is not iterable", type_name(v));
}

static const char *const str_methods[] = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith",
                                          "replace", "upper", "lower", "title", "capitalize", "format", "join",
                                          "find", "count", "splitlines", "isdigit", "isalpha", "isspace",
                                          "rsplit", "index", "isupper", "islower", "isalnum", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", "pop", "update", "copy", "clear",
                                           "setdefault", "popitem", NULL};
static const char *const list_methods[] = {"append", "pop", "index", "count", "extend", "insert", "remove",
                                           "reverse", "sort", "copy", "clear", NULL};

static val bound(ctx *c, val self, const char *name)
{
    method *m = ar(c, sizeof *m);
    m->self = self;
    m->name = name;
    return (val){.t = T_METHOD, .m = m};
}

/* obj.name, as jinja2's sandboxed getattr: the object's attribute (a method)
 * first, then the item. */
static val get_attr(ctx *c, const node *n, val obj, const char *name)
{
    switch (obj.t) {
    case T_UNDEF: fail_undef(c, n, obj);
    case T_DICT: {
        if (listed(dict_methods, name))
            return bound(c, obj, name);
        val v;
        if (dict_get(obj.d, name, &v))
            return v;
        return v_undef(name);
    }
    case T_NS: {
        val v;
        if (dict_get(obj.d, name, &v))
            return v;
        return v_undef(name);
    }
    case T_STR:
        if (listed(str_methods, name))
            return bound(c, obj, name);
        return v_undef(name);
    case T_LIST:
        if (!obj.lk && listed(list_methods, name))
            return bound(c, obj, name);
        return v_undef(name);
    default: return v_undef(name);
    }
}

static bool index_of(int64_t i, size_t n, size_t *out)
{
    if (i < 0)
        i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n)
        return false;
    *out = (size_t)i;
    return true;
}

/* obj[key]: the item first, then (a string key) the attribute. */
static val get_item(ctx *c, const node *n, val obj, val key)
{
    if (obj.t == T_UNDEF)
        fail_undef(c, n, obj);
    if (obj.t == T_DICT || obj.t == T_NS) {
        long i = dict_find(c, obj.d, key);
        if (i >= 0)
            return obj.d->v[i];
    } else if (obj.t == T_LIST && obj.lk) {
        return v_undef("item"); /* not subscriptable: jinja2 gives undefined */
    } else if ((obj.t == T_LIST || obj.t == T_STR) && (key.t == T_INT || key.t == T_BOOL)) {
        size_t at;
        if (obj.t == T_LIST)
            return index_of(num_i(key), obj.l->n, &at) ? obj.l->v[at] : v_undef("item");
        if (!index_of(num_i(key), u8count(obj.s), &at))
            return v_undef("item");
        size_t off = 0;
        for (size_t k = 0; k < at; k++)
            off += u8len(obj.s.p + off, obj.s.n - off);
        return v_str((str){obj.s.p + off, u8len(obj.s.p + off, obj.s.n - off)});
    }
    if (key.t == T_STR && obj.t != T_NS) {
        char *name = ar_strndup(c, key.s.p, key.s.n);
        return get_attr(c, n, obj, name);
    }
    return v_undef("item");
}

/* Python's slice indices for a sequence of len n. */
static void slice_range(ctx *c, const node *n, val lo, val hi, val step, size_t len, int64_t *start, int64_t *stop,
                        int64_t *st)
{
    int64_t N = (int64_t)len;
    *st = step.t == T_NONE || step.t == T_UNDEF ? 1 : is_num(step) && step.t != T_FLOAT ? num_i(step) : 0;
    if (*st == 0)
        fail_n(c, n, "slice step must be a non-zero integer");
    for (int k = 0; k < 2; k++) {
        val b = k ? hi : lo;
        int64_t *o = k ? stop : start;
        if (b.t == T_NONE || b.t == T_UNDEF) {
            *o = *st > 0 ? (k ? N : 0) : (k ? -1 : N - 1);
            continue;
        }
        if (!is_num(b) || b.t == T_FLOAT)
            fail_n(c, n, "slice indices must be integers");
        int64_t x = num_i(b);
        if (x < 0)
            x += N;
        if (*st > 0)
            x = x < 0 ? 0 : x > N ? N : x;
        else
            x = x < -1 ? -1 : x > N - 1 ? N - 1 : x;
        *o = x;
    }
}

static val do_slice(ctx *c, const node *n, val obj, val lo, val hi, val step)
{
    if (obj.t == T_UNDEF)
        fail_undef(c, n, obj);
    list *src;
    if (obj.t == T_LIST && obj.lk)
        return v_undef("slice");
    if (obj.t == T_LIST)
        src = obj.l;
    else if (obj.t == T_STR)
        src = iter_items(c, n, obj);
    else
        fail_n(c, n, "'%s' object is not subscriptable with a slice", type_name(obj));
    int64_t a, b, st;
    slice_range(c, n, lo, hi, step, src->n, &a, &b, &st);
    size_t cnt = 0;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
        cnt++;
    list *l = list_new(c, cnt);
    size_t k = 0;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
        l->v[k++] = src->v[i];
    if (obj.t == T_LIST)
        return v_list(l, obj.tuple);
    buf o = {0};
    buf_put(c, &o, "", 0);
    for (size_t i = 0; i < l->n; i++)
        buf_put(c, &o, l->v[i].s.p, l->v[i].s.n);
    return v_str(buf_str(&o));
}

/* ---------------------------------------------------------------- JSON (transformers' tojson) */

typedef struct json_fmt {
    const char *indent; /* NULL: one line */
    const char *item_sep, *key_sep;
    bool sort_keys, ascii;
} json_fmt;

static void json_str(ctx *c, buf *b, str s, bool ascii)
{
    buf_put(c, b, "\"", 1);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        switch (ch) {
        case '"': buf_puts(c, b, "\\\""); break;
        case '\\': buf_puts(c, b, "\\\\"); break;
        case '\n': buf_puts(c, b, "\\n"); break;
        case '\r': buf_puts(c, b, "\\r"); break;
        case '\t': buf_puts(c, b, "\\t"); break;
        case '\b': buf_puts(c, b, "\\b"); break;
        case '\f': buf_puts(c, b, "\\f"); break;
        default:
            if (ch < 0x20) {
                buf_printf(c, b, "\\u%04x", ch);
            } else if (ch >= 0x80 && ascii) {
                size_t l;
                uint32_t cp = u8dec(s.p + i, s.n - i, &l);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    buf_printf(c, b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    buf_printf(c, b, "\\u%04x", cp);
                }
                i += l - 1;
            } else {
                buf_put(c, b, s.p + i, 1);
            }
        }
    }
    buf_put(c, b, "\"", 1);
}

static void json_newline(ctx *c, buf *b, const json_fmt *f, int level)
{
    buf_put(c, b, "\n", 1);
    for (int i = 0; i < level; i++)
        buf_puts(c, b, f->indent);
}

static int cmp_keys(const void *x, const void *y)
{
    const val *a = *(val *const *)x, *b = *(val *const *)y;
    size_t m = a->s.n < b->s.n ? a->s.n : b->s.n;
    int r = memcmp(a->s.p, b->s.p, m);
    return r ? r : a->s.n < b->s.n ? -1 : a->s.n > b->s.n;
}

/* Python's json.dumps(v, ensure_ascii, indent, separators, sort_keys). */
static void put_json(ctx *c, const node *n, buf *b, val v, const json_fmt *f, int level)
{
    if (level > MAX_DEPTH)
        fail_n(c, n, "tojson: nested deeper than %d", MAX_DEPTH);
    char t[64];
    switch (v.t) {
    case T_NONE: buf_puts(c, b, "null"); return;
    case T_BOOL: buf_puts(c, b, v.b ? "true" : "false"); return;
    case T_INT: buf_printf(c, b, "%" PRId64, v.i); return;
    case T_FLOAT: float_repr(v.f, t, sizeof t, true); buf_puts(c, b, t); return;
    case T_STR: json_str(c, b, v.s, f->ascii); return;
    case T_LIST:
        if (v.lk)
            fail_n(c, n, "tojson: a %s is not JSON serializable", v.lk == LK_GEN ? "generator" : "dict view");
        if (!v.l->n) {
            buf_puts(c, b, "[]");
            return;
        }
        buf_puts(c, b, "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                buf_puts(c, b, f->item_sep);
            if (f->indent)
                json_newline(c, b, f, level + 1);
            put_json(c, n, b, v.l->v[i], f, level + 1);
        }
        if (f->indent)
            json_newline(c, b, f, level);
        buf_puts(c, b, "]");
        return;
    case T_DICT: {
        if (!v.d->n) {
            buf_puts(c, b, "{}");
            return;
        }
        size_t cnt = v.d->n;
        const val **order = ar(c, cnt * sizeof *order);
        for (size_t i = 0; i < cnt; i++) {
            if (v.d->k[i].t != T_STR)
                fail_n(c, n, "tojson: a mapping key that is not a string is not supported");
            order[i] = &v.d->k[i];
        }
        if (f->sort_keys)
            qsort(order, cnt, sizeof *order, cmp_keys);
        buf_puts(c, b, "{");
        for (size_t i = 0; i < cnt; i++) {
            if (i)
                buf_puts(c, b, f->item_sep);
            if (f->indent)
                json_newline(c, b, f, level + 1);
            json_str(c, b, order[i]->s, f->ascii);
            buf_puts(c, b, f->key_sep);
            put_json(c, n, b, v.d->v[order[i] - v.d->k], f, level + 1);
        }
        if (f->indent)
            json_newline(c, b, f, level);
        buf_puts(c, b, "}");
        return;
    }
    default: fail_n(c, n, "tojson: object of type %s is not JSON serializable", type_name(v));
    }
}

/* ---------------------------------------------------------------- argument binding */

/* Bind a call's arguments to the named parameters (NULL-terminated);
 * missing ones stay T_UNDEF with .s NULL. */
static void bind_args(ctx *c, const node *n, const char *what, const args *a, const char *const *params, val *out)
{
    size_t np = 0;
    while (params[np])
        np++;
    for (size_t i = 0; i < np; i++)
        out[i] = (val){.t = T_UNDEF};
    size_t pos = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (!a->kw[i]) {
            if (pos >= np)
                fail_n(c, n, "%s: too many arguments", what);
            out[pos++] = a->v[i];
            continue;
        }
        size_t k = 0;
        while (k < np && strcmp(params[k], a->kw[i]))
            k++;
        if (k == np)
            fail_n(c, n, "%s: unsupported argument '%s'", what, a->kw[i]);
        out[k] = a->v[i];
    }
}

static bool given(val v)
{
    return !(v.t == T_UNDEF && !v.s.p);
}

static str want_str(ctx *c, const node *n, val v, const char *what)
{
    if (v.t != T_STR)
        fail_n(c, n, "%s: expected a string, got %s", what, type_name(v));
    return v.s;
}

static int64_t want_int(ctx *c, const node *n, val v, const char *what)
{
    if (v.t != T_INT && v.t != T_BOOL)
        fail_n(c, n, "%s: expected an integer, got %s", what, type_name(v));
    return num_i(v);
}

/* ---------------------------------------------------------------- string helpers */

static bool all_ascii(str s)
{
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)s.p[i] >= 0x80)
            return false;
    return true;
}

/* Python's strip family; chars: NULL = whitespace. mode 1 left, 2 right, 3 both. */
static str py_strip(str s, const str *chars, int mode)
{
    size_t a = 0, b = s.n;
    for (;;) {
        if (!(mode & 1) || a >= b)
            break;
        size_t l;
        uint32_t cp = u8dec(s.p + a, b - a, &l);
        bool hit = false;
        if (!chars)
            hit = py_space(cp);
        else
            for (size_t k = 0; k < chars->n && !hit;) {
                size_t l2;
                hit = u8dec(chars->p + k, chars->n - k, &l2) == cp;
                k += l2;
            }
        if (!hit)
            break;
        a += l;
    }
    while ((mode & 2) && b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)s.p[k] & 0xC0) == 0x80)
            k--;
        size_t l;
        uint32_t cp = u8dec(s.p + k, b - k, &l);
        bool hit = false;
        if (!chars)
            hit = py_space(cp);
        else
            for (size_t j = 0; j < chars->n && !hit;) {
                size_t l2;
                hit = u8dec(chars->p + j, chars->n - j, &l2) == cp;
                j += l2;
            }
        if (!hit)
            break;
        b = k;
    }
    return (str){s.p + a, b - a};
}

static bool str_starts(str s, str p)
{
    return s.n >= p.n && !memcmp(s.p, p.p, p.n);
}

static bool str_ends(str s, str p)
{
    return s.n >= p.n && !memcmp(s.p + s.n - p.n, p.p, p.n);
}

static const char *memfind(str hay, str needle, size_t from)
{
    if (needle.n == 0)
        return hay.p + from;
    for (size_t i = from; i + needle.n <= hay.n; i++)
        if (!memcmp(hay.p + i, needle.p, needle.n))
            return hay.p + i;
    return NULL;
}

static val py_split(ctx *c, const node *n, str s, val sep, int64_t maxsplit)
{
    list tmp = {0};
    size_t cap = 0;
#define ADD(x)                                                                                                    \
    do {                                                                                                          \
        if (tmp.n == cap) {                                                                                       \
            cap = cap ? cap * 2 : 8;                                                                              \
            if (cap > MAX_ITEMS)                                                                                  \
                fail_n(c, n, "split: more than %zu parts", MAX_ITEMS);                                            \
            val *nv = ar(c, cap * sizeof *nv);                                                                    \
            if (tmp.n)                                                                                            \
                memcpy(nv, tmp.v, tmp.n * sizeof *nv);                                                            \
            tmp.v = nv;                                                                                           \
        }                                                                                                         \
        tmp.v[tmp.n++] = (x);                                                                                     \
    } while (0)
    if (sep.t == T_NONE || !given(sep)) {
        size_t i = 0;
        for (;;) {
            size_t l;
            while (i < s.n && py_space(u8dec(s.p + i, s.n - i, &l)))
                i += l;
            if (i >= s.n)
                break;
            if (maxsplit >= 0 && (int64_t)tmp.n >= maxsplit) {
                str rest = py_strip((str){s.p + i, s.n - i}, NULL, 2);
                ADD(v_str(rest));
                break;
            }
            size_t j = i;
            while (j < s.n && !py_space(u8dec(s.p + j, s.n - j, &l)))
                j += l;
            ADD(v_str((str){s.p + i, j - i}));
            i = j;
        }
    } else {
        str d = want_str(c, n, sep, "split");
        if (!d.n)
            fail_n(c, n, "split: empty separator");
        size_t i = 0;
        for (;;) {
            const char *hit = maxsplit >= 0 && (int64_t)tmp.n >= maxsplit ? NULL : memfind(s, d, i);
            if (!hit) {
                ADD(v_str((str){s.p + i, s.n - i}));
                break;
            }
            ADD(v_str((str){s.p + i, (size_t)(hit - s.p) - i}));
            i = (size_t)(hit - s.p) + d.n;
        }
    }
#undef ADD
    list *l = list_new(c, tmp.n);
    if (tmp.n)
        memcpy(l->v, tmp.v, tmp.n * sizeof *l->v);
    return v_list(l, false);
}

static val py_replace(ctx *c, const node *n, str s, str old, str new_, int64_t count)
{
    buf o = {0};
    buf_put(c, &o, "", 0);
    if (!old.n)
        fail_n(c, n, "replace with an empty old string is not supported");
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
        const char *hit = count >= 0 && done >= count ? NULL : memfind(s, old, i);
        if (!hit) {
            buf_put(c, &o, s.p + i, s.n - i);
            break;
        }
        buf_put(c, &o, s.p + i, (size_t)(hit - s.p) - i);
        buf_put(c, &o, new_.p, new_.n);
        i = (size_t)(hit - s.p) + old.n;
        done++;
    }
    return v_str(buf_str(&o));
}

/* upper / lower / title / capitalize: ASCII letters only; other letters
 * would need Unicode case tables, so a text with non-ASCII is refused. */
static val py_case(ctx *c, const node *n, str s, const char *how)
{
    if (!all_ascii(s))
        fail_n(c, n, "%s() of a text with non-ASCII characters is not supported", how);
    char *o = ar(c, s.n + 1);
    bool start = true;
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i];
        bool up = !strcmp(how, "upper") || ((!strcmp(how, "title") || !strcmp(how, "capitalize")) && start);
        if (!strcmp(how, "capitalize") && i > 0)
            up = false;
        if (up && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 32);
        else if (!up && ch >= 'A' && ch <= 'Z')
            ch = (char)(ch + 32);
        o[i] = ch;
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        start = !strcmp(how, "title") ? !alpha : false;
    }
    return v_str((str){o, s.n});
}

/* ---------------------------------------------------------------- methods */

static val call_method(ctx *c, const node *n, const method *m, const args *a)
{
    val self = m->self;
    const char *name = m->name;
    val p[4];
    char what[48];
    snprintf(what, sizeof what, "%s.%s()", type_name(self), name);
    if (self.t == T_DICT) {
        if (!strcmp(name, "get")) {
            bind_args(c, n, what, a, (const char *const[]){"key", "default", NULL}, p);
            long i = dict_find(c, self.d, p[0]);
            return i >= 0 ? self.d->v[i] : given(p[1]) ? p[1] : v_none();
        }
        if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
            bind_args(c, n, what, a, (const char *const[]){NULL}, p);
            list *l = list_new(c, self.d->n);
            for (size_t i = 0; i < self.d->n; i++) {
                if (name[0] == 'k')
                    l->v[i] = self.d->k[i];
                else if (name[0] == 'v')
                    l->v[i] = self.d->v[i];
                else {
                    list *pair = list_new(c, 2);
                    pair->v[0] = self.d->k[i];
                    pair->v[1] = self.d->v[i];
                    l->v[i] = v_list(pair, true);
                }
            }
            return v_gen(l, LK_VIEW);
        }
        fail_n(c, n, "%s: the sandbox does not allow modifying a mapping", what);
    }
    if (self.t == T_LIST) {
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            bind_args(c, n, what, a, (const char *const[]){"x", NULL}, p);
            int64_t cnt = 0;
            for (size_t i = 0; i < self.l->n; i++)
                if (v_eq(c, self.l->v[i], p[0])) {
                    if (name[0] == 'i')
                        return v_int((int64_t)i);
                    cnt++;
                }
            if (name[0] == 'i')
                fail_n(c, n, "%s: value is not in the list", what);
            return v_int(cnt);
        }
        fail_n(c, n, "%s: the sandbox does not allow modifying a list", what);
    }
    /* T_STR */
    if (self.markup)
        fail_n(c, n, "%s of a Markup (|safe) string is not supported", what);
    str s = self.s;
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        bind_args(c, n, what, a, (const char *const[]){"chars", NULL}, p);
        str chars;
        bool has = given(p[0]) && p[0].t != T_NONE;
        if (has)
            chars = want_str(c, n, p[0], what);
        return v_str(py_strip(s, has ? &chars : NULL, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3));
    }
    if (!strcmp(name, "split")) {
        bind_args(c, n, what, a, (const char *const[]){"sep", "maxsplit", NULL}, p);
        return py_split(c, n, s, p[0], given(p[1]) ? want_int(c, n, p[1], what) : -1);
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        bind_args(c, n, what, a, (const char *const[]){"prefix", NULL}, p);
        list one = {.v = &p[0], .n = 1};
        const list *cands = p[0].t == T_LIST && p[0].tuple ? p[0].l : &one;
        for (size_t i = 0; i < cands->n; i++) {
            str x = want_str(c, n, cands->v[i], what);
            if (name[0] == 's' ? str_starts(s, x) : str_ends(s, x))
                return v_bool(true);
        }
        return v_bool(false);
    }
    if (!strcmp(name, "replace")) {
        bind_args(c, n, what, a, (const char *const[]){"old", "new", "count", NULL}, p);
        return py_replace(c, n, s, want_str(c, n, p[0], what), want_str(c, n, p[1], what),
                          given(p[2]) ? want_int(c, n, p[2], what) : -1);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize")) {
        bind_args(c, n, what, a, (const char *const[]){NULL}, p);
        return py_case(c, n, s, name);
    }
    if (!strcmp(name, "join")) {
        bind_args(c, n, what, a, (const char *const[]){"iterable", NULL}, p);
        list *items = iter_items(c, n, p[0]);
        buf o = {0};
        buf_put(c, &o, "", 0);
        for (size_t i = 0; i < items->n; i++) {
            if (i)
                buf_put(c, &o, s.p, s.n);
            str x = want_str(c, n, items->v[i], what);
            buf_put(c, &o, x.p, x.n);
        }
        return v_str(buf_str(&o));
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        bind_args(c, n, what, a, (const char *const[]){"sub", NULL}, p);
        str sub = want_str(c, n, p[0], what);
        if (!all_ascii(s) && name[0] == 'f')
            fail_n(c, n, "%s on a text with non-ASCII characters is not supported", what);
        if (name[0] == 'f') {
            const char *hit = memfind(s, sub, 0);
            return v_int(hit ? (int64_t)(hit - s.p) : -1);
        }
        if (!sub.n)
            return v_int((int64_t)u8count(s) + 1);
        int64_t cnt = 0;
        for (const char *h = memfind(s, sub, 0); h; h = memfind(s, sub, (size_t)(h - s.p) + sub.n))
            cnt++;
        return v_int(cnt);
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isspace") || !strcmp(name, "isalnum")) {
        bind_args(c, n, what, a, (const char *const[]){NULL}, p);
        if (!all_ascii(s) && strcmp(name, "isspace"))
            fail_n(c, n, "%s on a text with non-ASCII characters is not supported", what);
        bool ok = s.n > 0;
        for (size_t i = 0; i < s.n && ok;) {
            size_t l;
            uint32_t cp = u8dec(s.p + i, s.n - i, &l);
            bool d = cp >= '0' && cp <= '9', al = (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
            ok = name[2] == 'd' ? d : name[2] == 'a' && name[4] == 'p' ? al : name[2] == 's' ? py_space(cp) : d || al;
            i += l;
        }
        return v_bool(ok);
    }
    if (!strcmp(name, "format")) {
        buf o = {0};
        buf_put(c, &o, "", 0);
        size_t auto_i = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.p[i] == '{' && i + 1 < s.n && s.p[i + 1] == '{') {
                buf_put(c, &o, "{", 1);
                i++;
            } else if (s.p[i] == '}' && i + 1 < s.n && s.p[i + 1] == '}') {
                buf_put(c, &o, "}", 1);
                i++;
            } else if (s.p[i] == '{') {
                size_t j = i + 1;
                while (j < s.n && s.p[j] != '}')
                    j++;
                if (j >= s.n)
                    fail_n(c, n, "%s: unterminated '{' in the format string", what);
                str field = {s.p + i + 1, j - i - 1};
                if (memchr(field.p, ':', field.n) || memchr(field.p, '!', field.n) || memchr(field.p, '.', field.n) ||
                    memchr(field.p, '[', field.n))
                    fail_n(c, n, "%s: format specs and conversions are not supported", what);
                val v = {.t = T_UNDEF};
                bool found = false;
                if (!field.n || (field.p[0] >= '0' && field.p[0] <= '9')) {
                    size_t want = field.n ? (size_t)strtoul(ar_strndup(c, field.p, field.n), NULL, 10) : auto_i++;
                    for (size_t k = 0, pos = 0; k < a->n; k++)
                        if (!a->kw[k] && pos++ == want) {
                            v = a->v[k];
                            found = true;
                        }
                } else {
                    for (size_t k = 0; k < a->n; k++)
                        if (a->kw[k] && str_eq(field, a->kw[k])) {
                            v = a->v[k];
                            found = true;
                        }
                }
                if (!found)
                    fail_n(c, n, "%s: no argument for '{%.*s}'", what, (int)field.n, field.p);
                put_str(c, &o, v);
                i = j;
            } else if (s.p[i] == '}') {
                fail_n(c, n, "%s: single '}' in the format string", what);
            } else {
                buf_put(c, &o, s.p + i, 1);
            }
        }
        return v_str(buf_str(&o));
    }
    fail_n(c, n, "the string method %s is not supported", what);
}

/* ---------------------------------------------------------------- tests */

static bool compare(ctx *c, const node *n, int op, val a, val b);

static bool run_test(ctx *c, const node *n, const char *name, val v, const args *a)
{
    val p[2];
    char what[48];
    snprintf(what, sizeof what, "test '%s'", name);
    if (!strcmp(name, "defined"))
        return v.t != T_UNDEF;
    if (!strcmp(name, "undefined"))
        return v.t == T_UNDEF;
    if (!strcmp(name, "none"))
        return v.t == T_NONE;
    if (!strcmp(name, "string"))
        return v.t == T_STR;
    if (!strcmp(name, "mapping"))
        return v.t == T_DICT;
    if (!strcmp(name, "iterable"))
        return v.t == T_LIST || v.t == T_DICT || v.t == T_STR || v.t == T_UNDEF;
    if (!strcmp(name, "sequence"))
        return (v.t == T_LIST && !v.lk) || v.t == T_DICT || v.t == T_STR || v.t == T_UNDEF;
    if (!strcmp(name, "number"))
        return is_num(v);
    if (!strcmp(name, "integer"))
        return v.t == T_INT;
    if (!strcmp(name, "float"))
        return v.t == T_FLOAT;
    if (!strcmp(name, "boolean"))
        return v.t == T_BOOL;
    if (!strcmp(name, "true"))
        return v.t == T_BOOL && v.b;
    if (!strcmp(name, "false"))
        return v.t == T_BOOL && !v.b;
    if (!strcmp(name, "callable"))
        return v.t == T_FUNC || v.t == T_METHOD || v.t == T_MACRO;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        str s = want_str(c, n, v, what);
        if (!all_ascii(s))
            fail_n(c, n, "%s on non-ASCII text is not supported", what);
        bool cased = false;
        for (size_t i = 0; i < s.n; i++) {
            char ch = s.p[i];
            if ((name[0] == 'l' && ch >= 'A' && ch <= 'Z') || (name[0] == 'u' && ch >= 'a' && ch <= 'z'))
                return false;
            cased |= (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        }
        return cased;
    }
    if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        int64_t x = want_int(c, n, v, what);
        return (x % 2 != 0) == (name[0] == 'o');
    }
    bind_args(c, n, what, a, (const char *const[]){"other", NULL}, p);
    if (!given(p[0]))
        fail_n(c, n, "%s needs an argument", what);
    if (!strcmp(name, "divisibleby")) {
        int64_t d = want_int(c, n, p[0], what);
        if (!d)
            fail_n(c, n, "%s: division by zero", what);
        return want_int(c, n, v, what) % d == 0;
    }
    if (!strcmp(name, "sameas"))
        return v.t == p[0].t && (v.t == T_NONE || v.t == T_UNDEF || (v.t == T_BOOL && v.b == p[0].b));
    if (!strcmp(name, "in")) {
        val w = p[0];
        if (w.t == T_STR)
            return memfind(w.s, want_str(c, n, v, what), 0) != NULL;
        list *items = iter_items(c, n, w);
        for (size_t i = 0; i < items->n; i++)
            if (v_eq(c, items->v[i], v))
                return true;
        return false;
    }
    return compare(c, n, test_op(name), v, p[0]); /* the comparison tests: the rest of `tests` */
}

/* ---------------------------------------------------------------- filters */

/* markupsafe's escape(). */
static str html_escape(ctx *c, str s)
{
    buf o = {0};
    buf_put(c, &o, "", 0);
    for (size_t i = 0; i < s.n; i++) {
        const char *r = s.p[i] == '&' ? "&amp;" : s.p[i] == '<' ? "&lt;" : s.p[i] == '>' ? "&gt;"
                        : s.p[i] == '"' ? "&#34;" : s.p[i] == '\'' ? "&#39;" : NULL;
        if (r)
            buf_puts(c, &o, r);
        else
            buf_put(c, &o, s.p + i, 1);
    }
    return buf_str(&o);
}

static val apply_filter(ctx *c, const node *n, const char *name, val v, const args *a);

static int64_t v_len(ctx *c, const node *n, val v)
{
    switch (v.t) {
    case T_UNDEF: return 0;
    case T_STR: return (int64_t)u8count(v.s);
    case T_LIST:
        if (v.lk == LK_GEN)
            fail_n(c, n, "object of type 'generator' has no len()");
        return (int64_t)v.l->n;
    case T_DICT: return (int64_t)v.d->n;
    default: fail_n(c, n, "object of type '%s' has no len()", type_name(v));
    }
}

/* jinja2's sort key: strings lower-cased unless case_sensitive. */
typedef struct sort_item {
    val key, v;
    size_t i;
} sort_item;

static ctx *sort_ctx;
static const node *sort_node;
static bool sort_reverse;

static int cmp_sort(const void *x, const void *y)
{
    const sort_item *a = x, *b = y;
    int r = v_cmp(sort_ctx, sort_node, a->key, b->key);
    if (sort_reverse)
        r = -r;
    return r ? r : a->i < b->i ? -1 : 1; /* stable, as Python's sort */
}

static val sort_key(ctx *c, const node *n, val v, bool case_sensitive)
{
    if (v.t == T_STR && !case_sensitive)
        return py_case(c, n, v.s, "lower");
    return v;
}

static val attr_path(ctx *c, const node *n, val v, str path)
{
    /* "a.b" walks items; a number is an index, as jinja2's make_attrgetter */
    size_t i = 0;
    while (i <= path.n) {
        size_t j = i;
        while (j < path.n && path.p[j] != '.')
            j++;
        str part = {path.p + i, j - i};
        bool digits = part.n > 0;
        for (size_t k = 0; k < part.n; k++)
            digits &= part.p[k] >= '0' && part.p[k] <= '9';
        val key = digits ? v_int(strtoll(ar_strndup(c, part.p, part.n), NULL, 10)) : v_str(part);
        v = get_item(c, n, v, key);
        if (j >= path.n)
            break;
        i = j + 1;
    }
    return v;
}

/* The filters: one function each (a few share one, telling them apart by
 * name), its parameters as jinja2 names them (bound by apply_filter; NULL:
 * the function reads its arguments itself) and whether it takes a Markup
 * (|safe) string as it is. */
#define UNUSED __attribute__((unused))
#define FILTER_PARAMS                                                                                       \
    (UNUSED ctx *c, UNUSED const node *n, UNUSED const char *name, UNUSED val v, UNUSED const args *a,      \
     UNUSED val *p, UNUSED const char *what)
#define FILTER(fn) static val fn FILTER_PARAMS
typedef val filter_fn FILTER_PARAMS;

FILTER(f_tojson)
{
    json_fmt f = {.item_sep = ", ", .key_sep = ": ", .ascii = given(p[0]) && truthy(p[0]),
                  .sort_keys = given(p[3]) && truthy(p[3])};
    if (given(p[1]) && p[1].t != T_NONE) {
        if (p[1].t == T_STR) {
            f.indent = ar_strndup(c, p[1].s.p, p[1].s.n);
        } else {
            int64_t w = want_int(c, n, p[1], what);
            if (w < 0 || w > 64)
                fail_n(c, n, "%s: indent %" PRId64 " is not supported", what, w);
            char *ind = ar(c, (size_t)w + 1);
            memset(ind, ' ', (size_t)w);
            f.indent = ind;
        }
        f.item_sep = ",";
    }
    if (given(p[2]) && p[2].t != T_NONE) {
        if (p[2].t != T_LIST || p[2].l->n != 2)
            fail_n(c, n, "%s: separators must be a pair of strings", what);
        f.item_sep = ar_strndup(c, want_str(c, n, p[2].l->v[0], what).p, p[2].l->v[0].s.n);
        f.key_sep = ar_strndup(c, want_str(c, n, p[2].l->v[1], what).p, p[2].l->v[1].s.n);
    }
    buf o = {0};
    buf_put(c, &o, "", 0);
    put_json(c, n, &o, v, &f, 0);
    return v_str(buf_str(&o));
}

FILTER(f_length)
{
    return v_int(v_len(c, n, v));
}

FILTER(f_trim)
{
    str chars;
    bool has = given(p[0]) && p[0].t != T_NONE;
    if (has)
        chars = want_str(c, n, p[0], what);
    return v_str(py_strip(to_str(c, v), has ? &chars : NULL, 3));
}

FILTER(f_string)
{
    if (name[0] == 'e') { /* Markup(escape(str(v))); a Markup stays as it is */
        if (v.t == T_STR && v.markup)
            return v;
        val m = v_str(html_escape(c, to_str(c, v)));
        m.markup = true;
        return m;
    }
    if (name[0] == 's' && name[1] == 'a') { /* Markup(v) */
        val m = v_str(to_str(c, v));
        m.markup = true;
        return m;
    }
    if (v.t == T_STR)
        return v; /* soft_str keeps a Markup a Markup */
    return v_str(to_str(c, v));
}

FILTER(f_default)
{
    bool boolean = given(p[1]) && truthy(p[1]);
    if (v.t == T_UNDEF || (boolean && !truthy(v)))
        return given(p[0]) ? p[0] : v_str((str){"", 0});
    return v;
}

FILTER(f_join)
{
    str sep = given(p[0]) ? want_str(c, n, p[0], what) : (str){"", 0};
    list *items = iter_items(c, n, v);
    buf o = {0};
    buf_put(c, &o, "", 0);
    for (size_t i = 0; i < items->n; i++) {
        if (i)
            buf_put(c, &o, sep.p, sep.n);
        val x = items->v[i];
        if (given(p[1]))
            x = attr_path(c, n, x, to_str(c, p[1]));
        put_str(c, &o, x);
    }
    return v_str(buf_str(&o));
}

FILTER(f_items)
{
    if (v.t == T_UNDEF)
        return v_gen(list_new(c, 0), LK_GEN);
    if (v.t != T_DICT)
        fail_n(c, n, "%s: can only get item pairs from a mapping", what);
    return v_gen(call_method(c, n, &(method){v, "items"}, &(args){0}).l, LK_GEN);
}

FILTER(f_upper)
{
    return py_case(c, n, to_str(c, v), name);
}

FILTER(f_list)
{
    list *items = iter_items(c, n, v);
    list *l = list_new(c, items->n);
    if (items->n)
        memcpy(l->v, items->v, items->n * sizeof *l->v);
    return v_list(l, false);
}

FILTER(f_first)
{
    if (name[0] == 'l' && v.t == T_LIST && v.lk == LK_GEN)
        fail_n(c, n, "%s: a generator is not reversible", what);
    list *items = iter_items(c, n, v);
    if (!items->n)
        return v_undef(name);
    return items->v[name[0] == 'f' ? 0 : items->n - 1];
}

FILTER(f_reverse)
{
    if (v.t == T_STR)
        return do_slice(c, n, v, v_none(), v_none(), v_int(-1));
    /* reversed(): an iterator over a list, a dict or a view; a list of a generator */
    bool gen_in = v.t == T_LIST && v.lk == LK_GEN;
    if (v.t == T_DICT)
        fail_n(c, n, "%s of a mapping is not supported", what);
    list *items = iter_items(c, n, v);
    list *l = list_new(c, items->n);
    for (size_t i = 0; i < items->n; i++)
        l->v[i] = items->v[items->n - 1 - i];
    return gen_in ? v_list(l, false) : v_gen(l, LK_GEN);
}

FILTER(f_abs)
{
    if (v.t == T_FLOAT)
        return (val){.t = T_FLOAT, .f = fabs(v.f)};
    int64_t x = want_int(c, n, v, what);
    if (x == INT64_MIN)
        fail_n(c, n, "%s: integer overflow", what);
    return v_int(x < 0 ? -x : x);
}

FILTER(f_int)
{
    val dflt = given(p[0]) ? p[0] : name[0] == 'i' ? v_int(0) : (val){.t = T_FLOAT, .f = 0};
    if (v.t == T_INT || v.t == T_BOOL)
        return name[0] == 'i' ? v_int(num_i(v)) : (val){.t = T_FLOAT, .f = (double)num_i(v)};
    if (v.t == T_FLOAT) {
        if (name[0] == 'f')
            return v;
        if (!(v.f > -9.2e18 && v.f < 9.2e18))
            fail_n(c, n, "%s: out of range", what);
        return v_int((int64_t)v.f);
    }
    if (v.t == T_STR) {
        char *s = ar_strndup(c, v.s.p, v.s.n), *end;
        str t = py_strip(v.s, NULL, 3);
        if (!t.n)
            return dflt;
        s = ar_strndup(c, t.p, t.n);
        if (name[0] == 'i') {
            long long x = strtoll(s, &end, 10);
            if (!*end)
                return v_int(x);
        }
        double f = strtod(s, &end);
        if (*end || !strcmp(s, "nan") || strchr(s, 'x') || strchr(s, 'X'))
            return dflt;
        if (name[0] == 'f')
            return (val){.t = T_FLOAT, .f = f};
        if (!(f > -9.2e18 && f < 9.2e18))
            return dflt;
        return v_int((int64_t)f);
    }
    return dflt;
}

FILTER(f_replace)
{
    return py_replace(c, n, to_str(c, v), want_str(c, n, p[0], what), want_str(c, n, p[1], what),
                      given(p[2]) && p[2].t != T_NONE ? want_int(c, n, p[2], what) : -1);
}

FILTER(f_indent)
{
    str ind;
    if (given(p[0]) && p[0].t == T_STR) {
        ind = p[0].s;
    } else {
        int64_t w = given(p[0]) ? want_int(c, n, p[0], what) : 4;
        if (w < 0 || w > 1024)
            fail_n(c, n, "%s: width %" PRId64 " is not supported", what, w);
        char *s = ar(c, (size_t)w + 1);
        memset(s, ' ', (size_t)w);
        ind = (str){s, (size_t)w};
    }
    bool first = given(p[1]) && truthy(p[1]), blank = given(p[2]) && truthy(p[2]);
    str s = to_str(c, v);
    for (size_t i = 0; i < s.n;) { /* str.splitlines() breaks at more than \n */
        size_t l;
        uint32_t cp = u8dec(s.p + i, s.n - i, &l);
        if (cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 || cp == 0x2028 ||
            cp == 0x2029)
            fail_n(c, n, "%s of a text with line breaks other than \\n is not supported", what);
        i += l;
    }
    /* s + "\n", split into lines (a final empty line is dropped by splitlines) */
    buf o = {0};
    buf_put(c, &o, "", 0);
    if (first)
        buf_put(c, &o, ind.p, ind.n);
    size_t i = 0;
    bool line0 = true;
    while (i <= s.n) {
        size_t j = i;
        while (j < s.n && s.p[j] != '\n')
            j++;
        if (j >= s.n && i == s.n && !line0)
            break; /* the line after the last \n of s + "\n" */
        str line = {s.p + i, j - i};
        if (!line0) {
            buf_put(c, &o, "\n", 1);
            if (blank || line.n)
                buf_put(c, &o, ind.p, ind.n);
        }
        buf_put(c, &o, line.p, line.n);
        line0 = false;
        if (j >= s.n)
            break;
        i = j + 1;
    }
    return v_str(buf_str(&o));
}

FILTER(f_unique)
{
    bool dictsort = !strcmp(name, "dictsort");
    bool reverse = !strcmp(name, "sort") ? given(p[0]) && truthy(p[0]) : dictsort && given(p[2]) && truthy(p[2]);
    bool cs = !strcmp(name, "sort") ? given(p[1]) && truthy(p[1]) : given(p[0]) && truthy(p[0]);
    val attribute = !strcmp(name, "sort") ? p[2] : dictsort ? (val){.t = T_UNDEF} : p[1];
    list *items;
    if (dictsort) {
        if (v.t != T_DICT)
            fail_n(c, n, "%s: expected a mapping", what);
        items = call_method(c, n, &(method){v, "items"}, &(args){0}).l;
    } else {
        items = iter_items(c, n, v);
    }
    bool by_value = dictsort && given(p[1]) && p[1].t == T_STR && str_eq(p[1].s, "value");
    sort_item *si = ar(c, (items->n ? items->n : 1) * sizeof *si);
    for (size_t i = 0; i < items->n; i++) {
        val k = items->v[i];
        if (dictsort)
            k = k.l->v[by_value ? 1 : 0];
        else if (given(attribute) && attribute.t != T_NONE)
            k = attr_path(c, n, k, to_str(c, attribute));
        si[i] = (sort_item){sort_key(c, n, k, cs), items->v[i], i};
    }
    if (!strcmp(name, "unique")) {
        list *l = list_new(c, items->n);
        size_t m = 0;
        for (size_t i = 0; i < items->n; i++) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = v_eq(c, si[j].key, si[i].key);
            if (!seen)
                l->v[m++] = items->v[i];
        }
        l->n = m;
        return v_gen(l, LK_GEN);
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        if (!items->n)
            return v_undef(name);
        size_t best = 0;
        for (size_t i = 1; i < items->n; i++) {
            int r = v_cmp(c, n, si[i].key, si[best].key);
            if (name[1] == 'i' ? r < 0 : r > 0)
                best = i;
        }
        return items->v[best];
    }
    sort_ctx = c;
    sort_node = n;
    sort_reverse = reverse;
    qsort(si, items->n, sizeof *si, cmp_sort);
    list *l = list_new(c, items->n);
    for (size_t i = 0; i < items->n; i++)
        l->v[i] = si[i].v;
    return v_list(l, false);
}

FILTER(f_sum)
{
    list *items = iter_items(c, n, v);
    val acc = given(p[1]) ? p[1] : v_int(0);
    for (size_t i = 0; i < items->n; i++) {
        val x = given(p[0]) ? attr_path(c, n, items->v[i], to_str(c, p[0])) : items->v[i];
        if (!is_num(x) || !is_num(acc))
            fail_n(c, n, "%s: only numbers can be summed here", what);
        if (acc.t == T_FLOAT || x.t == T_FLOAT)
            acc = (val){.t = T_FLOAT, .f = num_f(acc) + num_f(x)};
        else if (__builtin_add_overflow(num_i(acc), num_i(x), &acc.i))
            fail_n(c, n, "%s: integer overflow", what);
        else
            acc.t = T_INT;
    }
    return acc;
}

FILTER(f_map)
{
    list *items = truthy(v) ? iter_items(c, n, v) : list_new(c, 0);
    list *l = list_new(c, items->n);
    val attribute = {.t = T_UNDEF}, dflt = {.t = T_UNDEF};
    for (size_t i = 0; i < a->n; i++) {
        if (a->kw[i] && !strcmp(a->kw[i], "attribute"))
            attribute = a->v[i];
        else if (a->kw[i] && !strcmp(a->kw[i], "default"))
            dflt = a->v[i];
    }
    if (given(attribute)) {
        for (size_t i = 0; i < a->n; i++)
            if (!a->kw[i] || (strcmp(a->kw[i], "attribute") && strcmp(a->kw[i], "default")))
                fail_n(c, n, "%s: unsupported arguments", what);
        for (size_t i = 0; i < items->n; i++) {
            val x = attr_path(c, n, items->v[i], to_str(c, attribute));
            l->v[i] = x.t == T_UNDEF && given(dflt) ? dflt : x;
        }
        return v_gen(l, LK_GEN);
    }
    if (!a->n || a->kw[0] || a->v[0].t != T_STR)
        fail_n(c, n, "%s: expected a filter name or attribute=", what);
    char *fname = ar_strndup(c, a->v[0].s.p, a->v[0].s.n);
    if (!find_filter(fname))
        fail_n(c, n, "%s: filter '%s' is not supported", what, fname);
    args rest = {a->v + 1, a->kw + 1, a->n - 1};
    for (size_t i = 0; i < items->n; i++)
        l->v[i] = apply_filter(c, n, fname, items->v[i], &rest);
    return v_gen(l, LK_GEN);
}

FILTER(f_selectattr)
{
    bool attr = strstr(name, "attr") != NULL, keep = name[0] == 's';
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->kw[i])
            fail_n(c, n, "%s: keyword arguments are not supported", what);
    val attribute = {.t = T_UNDEF};
    if (attr) {
        if (!a->n)
            fail_n(c, n, "%s: missing the attribute", what);
        attribute = a->v[k++];
    }
    const char *test = NULL;
    if (k < a->n) {
        test = ar_strndup(c, want_str(c, n, a->v[k], what).p, a->v[k].s.n);
        k++;
        if (!listed(tests, test))
            fail_n(c, n, "%s: test '%s' is not supported", what, test);
    }
    args rest = {a->v + k, a->kw + k, a->n - k};
    list *items = truthy(v) ? iter_items(c, n, v) : list_new(c, 0);
    list *l = list_new(c, items->n);
    size_t m = 0;
    for (size_t i = 0; i < items->n; i++) {
        val x = attr ? attr_path(c, n, items->v[i], to_str(c, attribute)) : items->v[i];
        bool t = test ? run_test(c, n, test, x, &rest) : truthy(x);
        if (t == keep)
            l->v[m++] = items->v[i];
    }
    l->n = m;
    return v_gen(l, LK_GEN);
}

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_ARGS ((const char *const[]){NULL})
static const struct filter_def {
    const char *const *names, *const *params;
    bool markup_ok;
    filter_fn *fn;
} FILTERS[] = {
    {LIST("tojson"), LIST("ensure_ascii", "indent", "separators", "sort_keys"), true, f_tojson},
    {LIST("length", "count"), NO_ARGS, true, f_length},
    {LIST("trim"), LIST("chars"), false, f_trim},
    {LIST("string", "safe", "e", "escape"), NO_ARGS, true, f_string},
    {LIST("default", "d"), LIST("default_value", "boolean"), true, f_default},
    {LIST("join"), LIST("d", "attribute"), false, f_join},
    {LIST("items"), NO_ARGS, false, f_items},
    {LIST("upper", "lower", "capitalize"), NO_ARGS, false, f_upper},
    {LIST("list"), NO_ARGS, false, f_list},
    {LIST("first", "last"), NO_ARGS, false, f_first},
    {LIST("reverse"), NO_ARGS, false, f_reverse},
    {LIST("abs"), NO_ARGS, false, f_abs},
    {LIST("int", "float"), LIST("default"), false, f_int},
    {LIST("replace"), LIST("old", "new", "count"), false, f_replace},
    {LIST("indent"), LIST("width", "first", "blank"), false, f_indent},
    {LIST("dictsort"), LIST("case_sensitive", "by", "reverse"), false, f_unique},
    {LIST("sort"), LIST("reverse", "case_sensitive", "attribute"), false, f_unique},
    {LIST("unique", "min", "max"), LIST("case_sensitive", "attribute"), false, f_unique},
    {LIST("sum"), LIST("attribute", "start"), false, f_sum},
    {LIST("map"), NULL, false, f_map},
    {LIST("selectattr", "rejectattr", "select", "reject"), NULL, false, f_selectattr},
};

static const struct filter_def *find_filter(const char *name)
{
    for (size_t i = 0; i < sizeof FILTERS / sizeof *FILTERS; i++)
        if (listed(FILTERS[i].names, name))
            return &FILTERS[i];
    return NULL;
}
static val apply_filter(ctx *c, const node *n, const char *name, val v, const args *a)
{
    val p[6];
    char what[48];
    snprintf(what, sizeof what, "filter '%s'", name);
    const struct filter_def *f = find_filter(name);
    if (v.t == T_STR && v.markup && !(f && f->markup_ok))
        fail_n(c, n, "%s of a Markup (|safe) string is not supported", what);
    if (!f)
        fail_n(c, n, "%s is not supported", what);
    if (f->params)
        bind_args(c, n, what, a, f->params, p);
    return f->fn(c, n, name, v, a, p, what);
}

/* ---------------------------------------------------------------- operators */

static val arith(ctx *c, const node *n, int op, val a, val b)
{
    if (a.t == T_UNDEF && op != OP_CONCAT)
        fail_undef(c, n, a);
    if (b.t == T_UNDEF && op != OP_CONCAT)
        fail_undef(c, n, b);
    if (op == OP_CONCAT) {
        buf o = {0};
        buf_put(c, &o, "", 0);
        put_str(c, &o, a);
        put_str(c, &o, b);
        return v_str(buf_str(&o));
    }
    if (op == OP_ADD && a.t == T_STR && b.t == T_STR) {
        bool markup = a.markup || b.markup; /* Markup + str escapes the str */
        str x = markup && !a.markup ? html_escape(c, a.s) : a.s, y = markup && !b.markup ? html_escape(c, b.s) : b.s;
        buf o = {0};
        buf_put(c, &o, x.p, x.n);
        buf_put(c, &o, y.p, y.n);
        val r = v_str(buf_str(&o));
        r.markup = markup;
        return r;
    }
    if ((a.t == T_STR && a.markup) || (b.t == T_STR && b.markup && op != OP_MOD))
        fail_n(c, n, "this operator on a Markup (|safe) string is not supported");
    if ((a.t == T_LIST && a.lk) || (b.t == T_LIST && b.lk))
        fail_n(c, n, "operators on a generator or dict view are not supported");
    if (op == OP_ADD && a.t == T_LIST && b.t == T_LIST && a.tuple == b.tuple) {
        list *l = list_new(c, a.l->n + b.l->n);
        if (a.l->n)
            memcpy(l->v, a.l->v, a.l->n * sizeof *l->v);
        if (b.l->n)
            memcpy(l->v + a.l->n, b.l->v, b.l->n * sizeof *l->v);
        return v_list(l, a.tuple);
    }
    if (op == OP_MUL && (a.t == T_STR || a.t == T_LIST || b.t == T_STR || b.t == T_LIST)) {
        val seq = a.t == T_STR || a.t == T_LIST ? a : b, cnt = seq.t == a.t && seq.l == a.l ? b : a;
        if (cnt.t != T_INT && cnt.t != T_BOOL)
            fail_n(c, n, "can't multiply a sequence by '%s'", type_name(cnt));
        int64_t k = num_i(cnt) < 0 ? 0 : num_i(cnt);
        size_t unit = seq.t == T_STR ? seq.s.n : seq.l->n;
        if (unit && (uint64_t)k > MAX_OUTPUT / unit)
            fail_n(c, n, "sequence repetition too large");
        if (seq.t == T_STR) {
            buf o = {0};
            buf_put(c, &o, "", 0);
            for (int64_t i = 0; i < k; i++)
                buf_put(c, &o, seq.s.p, seq.s.n);
            return v_str(buf_str(&o));
        }
        list *l = list_new(c, unit * (size_t)k);
        for (int64_t i = 0; i < k; i++)
            if (unit)
                memcpy(l->v + (size_t)i * unit, seq.l->v, unit * sizeof *l->v);
        return v_list(l, seq.tuple);
    }
    if (op == OP_MOD && a.t == T_STR) { /* printf-style formatting: %s, %d, %% */
        list one = {.v = &b, .n = 1};
        const list *vals = b.t == T_LIST && b.tuple ? b.l : &one;
        size_t k = 0;
        buf o = {0};
        buf_put(c, &o, "", 0);
        for (size_t i = 0; i < a.s.n; i++) {
            if (a.s.p[i] != '%') {
                buf_put(c, &o, a.s.p + i, 1);
                continue;
            }
            char f = i + 1 < a.s.n ? a.s.p[i + 1] : 0;
            i++;
            if (f == '%') {
                buf_put(c, &o, "%", 1);
                continue;
            }
            if (f != 's' && f != 'd' && f != 'i')
                fail_n(c, n, "'%%' formatting: only %%s, %%d and %%%% are supported");
            if (k >= vals->n)
                fail_n(c, n, "'%%' formatting: not enough arguments");
            val x = vals->v[k++];
            if (f == 's')
                put_str(c, &o, x);
            else if (x.t == T_FLOAT)
                buf_printf(c, &o, "%" PRId64, (int64_t)x.f);
            else
                buf_printf(c, &o, "%" PRId64, want_int(c, n, x, "'%d' formatting"));
        }
        if (k != vals->n)
            fail_n(c, n, "'%%' formatting: not all arguments converted");
        return v_str(buf_str(&o));
    }
    if (!is_num(a) || !is_num(b))
        fail_n(c, n, "unsupported operand types for an operator: '%s' and '%s'", type_name(a), type_name(b));
    bool fl = a.t == T_FLOAT || b.t == T_FLOAT || op == OP_DIV;
    if (op == OP_POW && !fl && num_i(b) < 0)
        fl = true;
    if (fl) {
        double x = num_f(a), y = num_f(b), r;
        switch (op) {
        case OP_ADD: r = x + y; break;
        case OP_SUB: r = x - y; break;
        case OP_MUL: r = x * y; break;
        case OP_DIV:
            if (y == 0)
                fail_n(c, n, "division by zero");
            r = x / y;
            break;
        case OP_FLOORDIV:
        case OP_MOD:
            if (y == 0)
                fail_n(c, n, "division by zero");
            r = op == OP_FLOORDIV ? floor(x / y) : x - y * floor(x / y);
            break;
        default: r = pow(x, y);
        }
        return (val){.t = T_FLOAT, .f = r};
    }
    int64_t x = num_i(a), y = num_i(b), r = 0;
    bool ovf = false;
    switch (op) {
    case OP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
    case OP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
    case OP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
    case OP_FLOORDIV:
    case OP_MOD: {
        if (y == 0)
            fail_n(c, n, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1)
            fail_n(c, n, "integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
            q--;
            m += y;
        }
        r = op == OP_FLOORDIV ? q : m;
        break;
    }
    default:
        r = 1;
        for (int64_t i = 0; i < y && !ovf; i++)
            ovf = __builtin_mul_overflow(r, x, &r);
    }
    if (ovf)
        fail_n(c, n, "integer overflow");
    return v_int(r);
}

static bool contains(ctx *c, const node *n, val item, val seq)
{
    if (seq.t == T_STR) {
        if (item.t == T_UNDEF)
            fail_undef(c, n, item);
        if (item.t != T_STR)
            fail_n(c, n, "'in <string>' requires a string as left operand, not %s", type_name(item));
        return memfind(seq.s, item.s, 0) != NULL;
    }
    if (seq.t == T_NS)
        fail_n(c, n, "'in' on a namespace is not supported");
    if (seq.t != T_LIST && seq.t != T_DICT && seq.t != T_UNDEF)
        fail_n(c, n, "argument of type '%s' is not iterable", type_name(seq));
    list *items = iter_items(c, n, seq);
    for (size_t i = 0; i < items->n; i++)
        if (v_eq(c, items->v[i], item))
            return true;
    return false;
}

static bool compare(ctx *c, const node *n, int op, val a, val b)
{
    switch (op) {
    case OP_EQ: return v_eq(c, a, b);
    case OP_NE: return !v_eq(c, a, b);
    case OP_IN: return contains(c, n, a, b);
    case OP_NOTIN: return !contains(c, n, a, b);
    default: {
        int r = v_cmp(c, n, a, b);
        return op == OP_LT ? r < 0 : op == OP_LE ? r <= 0 : op == OP_GT ? r > 0 : r >= 0;
    }
    }
}

/* ---------------------------------------------------------------- calls */

static void eval_args(ctx *c, scope *sc, const node *n, args *a)
{
    a->n = n->nk;
    a->v = ar(c, (n->nk ? n->nk : 1) * sizeof *a->v);
    a->kw = ar(c, (n->nk ? n->nk : 1) * sizeof *a->kw);
    for (size_t i = 0; i < n->nk; i++) {
        a->v[i] = eval(c, sc, n->kids[i]);
        a->kw[i] = n->kw ? n->kw[i] : NULL;
    }
}

static val call_macro(ctx *c, const node *n, const struct macro *m, const args *a)
{
    const node *def = m->def;
    if (++c->depth > MAX_DEPTH)
        fail_n(c, n, "macro calls nested deeper than %d", MAX_DEPTH);
    scope *sc = scope_new(c, m->closure);
    size_t pos = 0;
    bool *set = ar(c, (def->nkw ? def->nkw : 1) * sizeof *set);
    for (size_t i = 0; i < a->n; i++) {
        size_t k;
        if (!a->kw[i]) {
            if (pos >= def->nkw)
                fail_n(c, n, "macro '%s' takes at most %zu arguments", def->name, def->nkw);
            k = pos++;
        } else {
            for (k = 0; k < def->nkw && strcmp(def->kw[k], a->kw[i]); k++)
                ;
            if (k == def->nkw)
                fail_n(c, n, "macro '%s' has no argument '%s'", def->name, a->kw[i]);
        }
        scope_set(c, sc, def->kw[k], a->v[i]);
        set[k] = true;
    }
    for (size_t k = 0; k < def->nkw; k++)
        if (!set[k])
            scope_set(c, sc, def->kw[k], def->kids[k] ? eval(c, sc, def->kids[k]) : v_undef(def->kw[k]));
    buf o = {0};
    buf_put(c, &o, "", 0);
    int flow = exec_body(c, sc, def->b, &o);
    if (flow)
        fail_n(c, n, "break / continue outside a loop");
    c->depth--;
    return v_str(buf_str(&o));
}

static val call_func(ctx *c, const node *n, int fn, const args *a)
{
    val p[3];
    if (fn == F_RANGE) {
        for (size_t i = 0; i < a->n; i++)
            if (a->kw[i])
                fail_n(c, n, "range() takes no keyword arguments");
        if (a->n < 1 || a->n > 3)
            fail_n(c, n, "range() takes 1 to 3 arguments");
        int64_t lo = 0, hi, st = 1;
        if (a->n == 1)
            hi = want_int(c, n, a->v[0], "range()");
        else {
            lo = want_int(c, n, a->v[0], "range()");
            hi = want_int(c, n, a->v[1], "range()");
            if (a->n == 3)
                st = want_int(c, n, a->v[2], "range()");
        }
        if (!st)
            fail_n(c, n, "range() arg 3 must not be zero");
        size_t cnt = 0;
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st)
            if (++cnt > MAX_ITEMS)
                fail_n(c, n, "range() of more than %zu items", MAX_ITEMS);
        list *l = list_new(c, cnt);
        size_t k = 0;
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st)
            l->v[k++] = v_int(i);
        return v_list(l, false);
    }
    if (fn == F_NAMESPACE || fn == F_DICT) {
        dict *d = ar(c, sizeof *d);
        for (size_t i = 0; i < a->n; i++) {
            if (!a->kw[i]) {
                if (a->v[i].t != T_DICT || i)
                    fail_n(c, n, "%s() with positional arguments other than one mapping is not supported",
                           fn == F_DICT ? "dict" : "namespace");
                for (size_t k = 0; k < a->v[i].d->n; k++)
                    dict_set(c, d, a->v[i].d->k[k], a->v[i].d->v[k]);
                continue;
            }
            if (fn == F_NAMESPACE && a->kw[i][0] == '_')
                fail_n(c, n, "namespace attributes may not start with '_'");
            dict_set(c, d, v_cstr(a->kw[i]), a->v[i]);
        }
        return (val){.t = fn == F_DICT ? T_DICT : T_NS, .d = d};
    }
    if (fn == F_RAISE) {
        bind_args(c, n, "raise_exception()", a, (const char *const[]){"message", NULL}, p);
        str m = to_str(c, p[0]);
        fail_n(c, n, "the template raised an exception: %.*s", (int)(m.n > 600 ? 600 : m.n), m.p);
    }
    /* F_STRFTIME */
    bind_args(c, n, "strftime_now()", a, (const char *const[]){"format", NULL}, p);
    str f = want_str(c, n, p[0], "strftime_now()");
    time_t t = c->now ? (time_t)c->now : time(NULL);
    struct tm tm;
    if (c->now)
        gmtime_r(&t, &tm);
    else
        localtime_r(&t, &tm);
    char out[512];
    char *fmt = ar_strndup(c, f.p, f.n);
    size_t len = f.n ? strftime(out, sizeof out, fmt, &tm) : 0;
    if (f.n && !len)
        fail_n(c, n, "strftime_now(): the format gives nothing or more than %zu bytes", sizeof out);
    return v_str((str){ar_strndup(c, out, len), len});
}

static val call_value(ctx *c, const node *n, val callee, const args *a)
{
    switch (callee.t) {
    case T_FUNC: return call_func(c, n, callee.fn, a);
    case T_METHOD: return call_method(c, n, callee.m, a);
    case T_MACRO: return call_macro(c, n, callee.mac, a);
    case T_UNDEF: fail_undef(c, n, callee);
    default: fail_n(c, n, "'%s' object is not callable", type_name(callee));
    }
}

/* ---------------------------------------------------------------- expressions */

static val eval_inner(ctx *c, scope *sc, const node *n);

static val eval(ctx *c, scope *sc, const node *n)
{
    if (++c->depth > 10 * MAX_DEPTH)
        fail_n(c, n, "expression nested deeper than %d", 10 * MAX_DEPTH);
    if (++c->steps > MAX_STEPS)
        fail_n(c, n, "the template runs more than %" PRIu64 " steps", MAX_STEPS);
    val v = eval_inner(c, sc, n);
    c->depth--;
    return v;
}

static val eval_inner(ctx *c, scope *sc, const node *n)
{
    switch (n->k) {
    case E_LIT: return n->lit;
    case E_NAME: return lookup(sc, n->name);
    case E_LIST:
    case E_TUPLE: {
        list *l = list_new(c, n->nk);
        for (size_t i = 0; i < n->nk; i++)
            l->v[i] = eval(c, sc, n->kids[i]);
        return v_list(l, n->k == E_TUPLE);
    }
    case E_DICT: {
        dict *d = ar(c, sizeof *d);
        for (size_t i = 0; i + 1 < n->nk; i += 2) {
            val k = eval(c, sc, n->kids[i]);
            if (k.t == T_LIST || k.t == T_DICT || k.t == T_UNDEF || k.t == T_NS)
                fail_n(c, n, "unhashable mapping key of type '%s'", type_name(k));
            dict_set(c, d, k, eval(c, sc, n->kids[i + 1]));
        }
        return (val){.t = T_DICT, .d = d};
    }
    case E_ATTR: return get_attr(c, n, eval(c, sc, n->a), n->name);
    case E_ITEM: {
        val obj = eval(c, sc, n->a);
        return get_item(c, n, obj, eval(c, sc, n->b));
    }
    case E_SLICE: {
        val obj = eval(c, sc, n->a);
        val part[3];
        for (int i = 0; i < 3; i++)
            part[i] = n->kids[i] ? eval(c, sc, n->kids[i]) : v_none();
        return do_slice(c, n, obj, part[0], part[1], part[2]);
    }
    case E_CALL: {
        val callee = eval(c, sc, n->a);
        args a;
        eval_args(c, sc, n, &a);
        return call_value(c, n, callee, &a);
    }
    case E_FILTER: {
        if (n->unknown)
            fail_n(c, n, n->unknown == 1 ? "filter '%s' is not supported" : "no filter named '%s'", n->name);
        val v = eval(c, sc, n->a);
        args a;
        eval_args(c, sc, n, &a);
        return apply_filter(c, n, n->name, v, &a);
    }
    case E_TEST: {
        if (n->unknown)
            fail_n(c, n, n->unknown == 1 ? "test '%s' is not supported" : "no test named '%s'", n->name);
        val v = eval(c, sc, n->a);
        args a;
        eval_args(c, sc, n, &a);
        bool r = run_test(c, n, n->name, v, &a);
        return v_bool(n->op ? !r : r);
    }
    case E_NOT: return v_bool(!truthy(eval(c, sc, n->a)));
    case E_NEG:
    case E_POS: {
        val v = eval(c, sc, n->a);
        if (v.t == T_UNDEF)
            fail_undef(c, n, v);
        if (!is_num(v))
            fail_n(c, n, "bad operand type for unary %c: '%s'", n->k == E_NEG ? '-' : '+', type_name(v));
        if (n->k == E_POS)
            return v.t == T_BOOL ? v_int(v.b) : v;
        if (v.t == T_FLOAT)
            return (val){.t = T_FLOAT, .f = -v.f};
        if (num_i(v) == INT64_MIN)
            fail_n(c, n, "integer overflow");
        return v_int(-num_i(v));
    }
    case E_BIN: {
        val a = eval(c, sc, n->a);
        return arith(c, n, n->op, a, eval(c, sc, n->b));
    }
    case E_CMP: {
        val a = eval(c, sc, n->kids[0]);
        for (size_t i = 1; i < n->nk; i++) {
            val b = eval(c, sc, n->kids[i]);
            if (!compare(c, n, n->ops[i - 1], a, b))
                return v_bool(false);
            a = b;
        }
        return v_bool(true);
    }
    case E_AND: {
        val a = eval(c, sc, n->a);
        return truthy(a) ? eval(c, sc, n->b) : a;
    }
    case E_OR: {
        val a = eval(c, sc, n->a);
        return truthy(a) ? a : eval(c, sc, n->b);
    }
    case E_COND:
        if (truthy(eval(c, sc, n->a)))
            return eval(c, sc, n->b);
        return n->c ? eval(c, sc, n->c) : v_undef("else");
    default: fail_n(c, n, "internal error: node %d is not an expression", n->k);
    }
}

/* ---------------------------------------------------------------- statements */

static void assign_targets(ctx *c, scope *sc, const node *n, val v)
{
    if (n->nkw == 1) {
        scope_set(c, sc, n->kw[0], v);
        return;
    }
    if (v.t != T_LIST && v.t != T_STR && v.t != T_DICT)
        fail_n(c, n, "cannot unpack a '%s' into %zu names", type_name(v), n->nkw);
    list *items = iter_items(c, n, v);
    if (items->n != n->nkw)
        fail_n(c, n, "cannot unpack %zu values into %zu names", items->n, n->nkw);
    for (size_t i = 0; i < n->nkw; i++)
        scope_set(c, sc, n->kw[i], items->v[i]);
}

static int exec_for(ctx *c, scope *sc, const node *n, buf *out)
{
    list *all = iter_items(c, n, eval(c, sc, n->a));
    list *items = all;
    if (n->b) { /* the loop's filter runs before loop.* is counted */
        items = list_new(c, all->n);
        size_t m = 0;
        for (size_t i = 0; i < all->n; i++) {
            scope *fs = scope_new(c, sc);
            assign_targets(c, fs, n, all->v[i]);
            if (truthy(eval(c, fs, n->b)))
                items->v[m++] = all->v[i];
        }
        items->n = m;
    }
    if (!items->n)
        return n->els ? exec_body(c, sc, n->els, out) : 0;
    int64_t len = (int64_t)items->n;
    for (size_t i = 0; i < items->n; i++) {
        scope *it = scope_new(c, sc);
        dict *loop = ar(c, sizeof *loop);
        int64_t idx = (int64_t)i;
        dict_set(c, loop, v_cstr("index"), v_int(idx + 1));
        dict_set(c, loop, v_cstr("index0"), v_int(idx));
        dict_set(c, loop, v_cstr("revindex"), v_int(len - idx));
        dict_set(c, loop, v_cstr("revindex0"), v_int(len - idx - 1));
        dict_set(c, loop, v_cstr("first"), v_bool(i == 0));
        dict_set(c, loop, v_cstr("last"), v_bool(idx == len - 1));
        dict_set(c, loop, v_cstr("length"), v_int(len));
        dict_set(c, loop, v_cstr("depth"), v_int(1));
        dict_set(c, loop, v_cstr("depth0"), v_int(0));
        dict_set(c, loop, v_cstr("previtem"), i ? items->v[i - 1] : v_undef("previtem"));
        dict_set(c, loop, v_cstr("nextitem"), idx + 1 < len ? items->v[i + 1] : v_undef("nextitem"));
        scope_set(c, it, "loop", (val){.t = T_DICT, .d = loop});
        assign_targets(c, it, n, items->v[i]);
        int flow = exec_body(c, it, n->c, out);
        if (flow == 1)
            break;
    }
    return 0;
}

static int exec_stmt(ctx *c, scope *sc, const node *n, buf *out)
{
    if (++c->steps > MAX_STEPS)
        fail_n(c, n, "the template runs more than %" PRIu64 " steps", MAX_STEPS);
    switch (n->k) {
    case S_TEXT: buf_put(c, out, n->lit.s.p, n->lit.s.n); return 0;
    case S_OUT: put_str(c, out, eval(c, sc, n->a)); return 0;
    case S_BODY: return exec_body(c, sc, n, out);
    case S_IF:
        if (truthy(eval(c, sc, n->a)))
            return exec_body(c, sc, n->b, out);
        return n->els ? exec_body(c, sc, n->els, out) : 0;
    case S_FOR: return exec_for(c, sc, n, out);
    case S_SET: {
        val v = eval(c, sc, n->a);
        if (n->attr) {
            val ns = lookup(sc, n->name);
            if (ns.t != T_NS)
                fail_n(c, n, "cannot assign attribute '%s' on '%s': not a namespace", n->attr, n->name);
            if (n->attr[0] == '_')
                fail_n(c, n, "namespace attributes may not start with '_'");
            dict_set(c, ns.d, v_cstr(n->attr), v);
        } else {
            assign_targets(c, sc, n, v);
        }
        return 0;
    }
    case S_SETBLOCK: {
        buf o = {0};
        buf_put(c, &o, "", 0);
        if (exec_body(c, sc, n->b, &o))
            fail_n(c, n, "break / continue inside a {%% set %%} block");
        scope_set(c, sc, n->kw[0], v_str(buf_str(&o)));
        return 0;
    }
    case S_MACRO: {
        struct macro *m = ar(c, sizeof *m);
        m->def = n;
        m->closure = sc;
        scope_set(c, sc, n->name, (val){.t = T_MACRO, .mac = m});
        return 0;
    }
    case S_FILTERBLOCK: {
        if (n->a->unknown)
            fail_n(c, n->a, n->a->unknown == 1 ? "filter '%s' is not supported" : "no filter named '%s'", n->a->name);
        buf o = {0};
        buf_put(c, &o, "", 0);
        if (exec_body(c, sc, n->b, &o))
            fail_n(c, n, "break / continue inside a {%% filter %%} block");
        args a;
        eval_args(c, sc, n->a, &a);
        put_str(c, out, apply_filter(c, n->a, n->a->name, v_str(buf_str(&o)), &a));
        return 0;
    }
    case S_BREAK: return 1;
    case S_CONTINUE: return 2;
    default: fail_n(c, n, "internal error: node %d is not a statement", n->k);
    }
}

/* 0 normal, 1 break, 2 continue */
static int exec_body(ctx *c, scope *sc, const node *body, buf *out)
{
    for (size_t i = 0; i < body->nk; i++) {
        int flow = exec_stmt(c, sc, body->kids[i], out);
        if (flow)
            return flow;
    }
    return 0;
}

/* ================================================================ compile-time checks */

/* What jinja2's compiler refuses: a filter or test name it does not know,
 * outside the soft frame of an if statement or conditional expression (a
 * for / macro / block body opens a new, hard frame), and break / continue
 * outside a loop. */
static void check_node(ctx *c, const node *n, bool soft, bool in_loop);

static void check_tree(ctx *c, const node *n, bool soft, bool in_loop)
{
    if (!n)
        return;
    if (++c->depth > 10 * MAX_DEPTH)
        fail(c, n->line, n->col, "template nested deeper than %d", 10 * MAX_DEPTH);
    check_node(c, n, soft, in_loop);
    c->depth--;
}

static void check_node(ctx *c, const node *n, bool soft, bool in_loop)
{
    if ((n->k == E_FILTER || n->k == E_TEST) && n->unknown == 2 && !soft)
        fail(c, n->line, n->col, "no %s named '%s'", n->k == E_FILTER ? "filter" : "test", n->name);
    if ((n->k == S_BREAK || n->k == S_CONTINUE) && !in_loop)
        fail(c, n->line, n->col, "'%s' outside a loop", n->k == S_BREAK ? "break" : "continue");
    switch (n->k) {
    case S_IF:
        check_tree(c, n->a, true, in_loop);
        check_tree(c, n->b, true, in_loop);
        check_tree(c, n->els, true, in_loop);
        return;
    case E_COND:
        check_tree(c, n->a, true, in_loop);
        check_tree(c, n->b, true, in_loop);
        check_tree(c, n->c, true, in_loop);
        return;
    case S_FOR:
        check_tree(c, n->a, soft, in_loop);
        check_tree(c, n->b, false, true);
        check_tree(c, n->c, false, true);
        check_tree(c, n->els, false, in_loop);
        return;
    case S_MACRO:
        for (size_t i = 0; i < n->nk; i++)
            check_tree(c, n->kids[i], false, false);
        check_tree(c, n->b, false, false);
        return;
    case S_SETBLOCK:
    case S_FILTERBLOCK:
        check_tree(c, n->a, soft, in_loop);
        check_tree(c, n->b, false, in_loop);
        return;
    default:
        check_tree(c, n->a, soft, in_loop);
        check_tree(c, n->b, soft, in_loop);
        check_tree(c, n->c, soft, in_loop);
        check_tree(c, n->els, soft, in_loop);
        for (size_t i = 0; i < n->nk; i++)
            check_tree(c, n->kids[i], soft, in_loop);
    }
}

/* ================================================================ API */

struct apr_tmpl {
    arena ar;
    node *root;
};

static val from_json(ctx *c, const json_t *j, int depth)
{
    if (depth > MAX_DEPTH)
        fail(c, 0, 0, "context nested deeper than %d", MAX_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        dict *d = ar(c, sizeof *d);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
            dict_set(c, d, v_cstr(ar_strndup(c, k, strlen(k))), from_json(c, v, depth + 1));
        return (val){.t = T_DICT, .d = d};
    }
    case JSON_ARRAY: {
        list *l = list_new(c, json_array_size(j));
        for (size_t i = 0; i < l->n; i++)
            l->v[i] = from_json(c, json_array_get(j, i), depth + 1);
        return v_list(l, false);
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        return v_str((str){ar_strndup(c, json_string_value(j), n), n});
    }
    case JSON_INTEGER: return v_int(json_integer_value(j));
    case JSON_REAL: return (val){.t = T_FLOAT, .f = json_real_value(j)};
    case JSON_TRUE: return v_bool(true);
    case JSON_FALSE: return v_bool(false);
    default: return v_none();
    }
}

int apr_tmpl_parse(apr_tmpl **out, const char *src, size_t len, apr_err *err)
{
    *out = NULL;
    apr_tmpl *t = calloc(1, sizeof *t);
    if (!t)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    if (len > MAX_OUTPUT || memchr(src, 0, len)) {
        free(t);
        return apr_err_set(err, APR_E_FORMAT, "chat template: larger than %zu MiB or holding a NUL byte",
                           MAX_OUTPUT >> 20);
    }
    ctx c = {.ar = &t->ar, .err = err};
    if (setjmp(c.jb)) {
        arena_free(&t->ar);
        free(t);
        return err && err->code ? err->code : APR_E_FORMAT;
    }
    normalize_source(&c, src, len);
    lex(&c);
    c.ptok = 0;
    t->root = parse_body(&c, NULL, NULL);
    check_tree(&c, t->root, false, false);
    *out = t;
    return 0;
}

void apr_tmpl_free(apr_tmpl *t)
{
    if (!t)
        return;
    arena_free(&t->ar);
    free(t);
}

int apr_tmpl_render(const apr_tmpl *t, const json_t *vars, int64_t now, char **out, size_t *out_len, apr_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (vars && !json_is_object(vars))
        return apr_err_set(err, APR_E_ARG, "chat template: the variables must be a JSON object");
    arena a = {0};
    ctx c = {.ar = &a, .err = err, .now = now};
    if (setjmp(c.jb)) {
        arena_free(&a);
        return err && err->code ? err->code : APR_E_FORMAT;
    }
    scope *top = scope_new(&c, NULL);
    if (vars) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vars, k, v)
            scope_set(&c, top, k, from_json(&c, v, 0));
    }
    buf o = {0};
    buf_put(&c, &o, "", 0);
    if (exec_body(&c, top, t->root, &o))
        fail(&c, 0, 0, "break / continue outside a loop");
    char *res = malloc(o.n + 1);
    if (!res) {
        arena_free(&a);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    memcpy(res, o.p, o.n + 1);
    *out = res;
    if (out_len)
        *out_len = o.n;
    arena_free(&a);
    return 0;
}
