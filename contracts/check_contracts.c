/* check_contracts.c - validate the YAML contracts against contracts/schema.yaml
 * and make sure every falsifier names a test that exists in the suite.
 *
 * usage: check_contracts CONTRACTS_DIR TESTS_DIR
 *
 * schema.yaml (in CONTRACTS_DIR) says, for the two record kinds `contract`
 * and `falsifier`, which keys are required and which optional and what type
 * each value has (string, list, mapping); unknown keys are errors. Every
 * other *.yaml file in CONTRACTS_DIR holds one contract: a mapping with a
 * `falsifiers` list of falsifier mappings. Ids must be unique across all
 * files (contracts and falsifiers share one namespace) and match
 * [A-Za-z0-9._-]+.
 *
 * A falsifier's `test` is "EXE:FUNCTION": TESTS_DIR/EXE.c must exist and
 * register FUNCTION with one of cmocka's cmocka_unit_test* macros (comments
 * and string literals are ignored when looking).
 *
 * Exit 0: everything valid; 1: at least one problem (each printed as
 * FILE:LINE: message); 2: usage or I/O error.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum vtype { VT_STRING, VT_LIST, VT_MAP };

typedef struct field {
    char *name;
    enum vtype type;
    bool required;
} field;

typedef struct kind {
    field *f;
    size_t n;
} kind;

typedef struct checker {
    const char *tests_dir;
    kind contract, falsifier;
    char **ids;
    size_t n_ids, cap_ids;
    int problems;
    int n_contracts, n_falsifiers;
} checker;

static void problem(checker *c, const char *file, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(checker *c, const char *file, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%lu: ", file, n ? (unsigned long)n->start_mark.line + 1 : 0ul);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    c->problems++;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) {
        fprintf(stderr, "check_contracts: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- YAML helpers */

static bool load_yaml(const char *path, yaml_document_t *doc, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, cap, "%s", strerror(errno));
        return false;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    bool ok = yaml_parser_load(&p, doc);
    if (!ok)
        snprintf(err, cap, "YAML error: %s at line %lu", p.problem ? p.problem : "?",
                 (unsigned long)p.problem_mark.line + 1);
    else if (!yaml_document_get_root_node(doc)) {
        snprintf(err, cap, "empty document");
        yaml_document_delete(doc);
        ok = false;
    }
    yaml_parser_delete(&p);
    fclose(f);
    return ok;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static const char *vtype_name(enum vtype t)
{
    return t == VT_STRING ? "string" : t == VT_LIST ? "list" : "mapping";
}

static bool node_is(const yaml_node_t *n, enum vtype t)
{
    switch (t) {
    case VT_STRING: return n->type == YAML_SCALAR_NODE && n->data.scalar.length > 0;
    case VT_LIST: return n->type == YAML_SEQUENCE_NODE;
    case VT_MAP: return n->type == YAML_MAPPING_NODE;
    }
    return false;
}

/* ---- schema.yaml */

static bool parse_kind(yaml_document_t *d, yaml_node_t *n, kind *k, const char *file, checker *c)
{
    if (!n || n->type != YAML_MAPPING_NODE) {
        problem(c, file, n, "schema: a record kind must be a mapping with required/optional");
        return false;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *sect = scalar(yaml_document_get_node(d, p->key));
        yaml_node_t *v = yaml_document_get_node(d, p->value);
        bool req;
        if (sect && !strcmp(sect, "required"))
            req = true;
        else if (sect && !strcmp(sect, "optional"))
            req = false;
        else {
            problem(c, file, v, "schema: unknown section '%s'", sect ? sect : "?");
            return false;
        }
        if (!v || v->type != YAML_MAPPING_NODE) {
            problem(c, file, v, "schema: '%s' must map key names to types", sect);
            return false;
        }
        for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
            const char *name = scalar(yaml_document_get_node(d, q->key));
            const char *ty = scalar(yaml_document_get_node(d, q->value));
            enum vtype t;
            if (ty && !strcmp(ty, "string"))
                t = VT_STRING;
            else if (ty && !strcmp(ty, "list"))
                t = VT_LIST;
            else if (ty && !strcmp(ty, "mapping"))
                t = VT_MAP;
            else {
                problem(c, file, yaml_document_get_node(d, q->value),
                        "schema: type of '%s' must be string, list or mapping", name ? name : "?");
                return false;
            }
            field *nf = realloc(k->f, (k->n + 1) * sizeof *nf);
            if (!nf)
                exit(2);
            k->f = nf;
            k->f[k->n++] = (field){xstrdup(name ? name : ""), t, req};
        }
    }
    return true;
}

static bool load_schema(checker *c, const char *dir)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/schema.yaml", dir);
    yaml_document_t d;
    if (!load_yaml(path, &d, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", path, err);
        c->problems++;
        return false;
    }
    yaml_node_t *root = yaml_document_get_root_node(&d);
    bool ok = root->type == YAML_MAPPING_NODE;
    bool have_c = false, have_f = false;
    for (yaml_node_pair_t *p = ok ? root->data.mapping.pairs.start : NULL;
         ok && p < root->data.mapping.pairs.top; p++) {
        const char *k = scalar(yaml_document_get_node(&d, p->key));
        yaml_node_t *v = yaml_document_get_node(&d, p->value);
        if (k && !strcmp(k, "contract"))
            ok = (have_c = parse_kind(&d, v, &c->contract, path, c));
        else if (k && !strcmp(k, "falsifier"))
            ok = (have_f = parse_kind(&d, v, &c->falsifier, path, c));
    }
    if (ok && (!have_c || !have_f)) {
        problem(c, path, root, "schema: needs both 'contract' and 'falsifier' record kinds");
        ok = false;
    }
    yaml_document_delete(&d);
    return ok;
}

/* ---- test registrations */

/* Copy of src with comments and string/char literals blanked out. */
static char *strip_c(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        exit(2);
    size_t i = 0;
    while (i < n) {
        if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
            o[i] = o[i + 1] = ' ';
            i += 2;
            while (i < n && !(s[i] == '*' && i + 1 < n && s[i + 1] == '/'))
                o[i] = s[i] == '\n' ? '\n' : ' ', i++;
            if (i < n)
                o[i] = o[i + 1] = ' ', i += 2;
        } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n')
                o[i++] = ' ';
        } else if (s[i] == '"' || s[i] == '\'') {
            const char q = s[i];
            o[i++] = ' ';
            while (i < n && s[i] != q && s[i] != '\n') {
                if (s[i] == '\\' && i + 1 < n)
                    o[i++] = ' ';
                o[i++] = ' ';
            }
            if (i < n)
                o[i++] = ' ';
        } else {
            o[i] = s[i];
            i++;
        }
    }
    o[n] = 0;
    return o;
}

static bool is_ident(int ch)
{
    return isalnum(ch) || ch == '_';
}

/* Does the test file register fn with cmocka_unit_test*( fn ...)? */
static bool registers(const char *code, const char *fn)
{
    const char *macro = "cmocka_unit_test";
    const size_t ml = strlen(macro), fl = strlen(fn);
    for (const char *p = strstr(code, macro); p; p = strstr(p + 1, macro)) {
        if (p > code && is_ident((unsigned char)p[-1]))
            continue;
        const char *q = p + ml;
        while (is_ident((unsigned char)*q))
            q++; /* _setup_teardown, _prestate, ... */
        while (isspace((unsigned char)*q))
            q++;
        if (*q != '(')
            continue;
        q++;
        while (isspace((unsigned char)*q))
            q++;
        if (!strncmp(q, fn, fl) && !is_ident((unsigned char)q[fl]))
            return true;
    }
    return false;
}

static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_ident((unsigned char)*s) && *s != '-' && *s != '.')
            return false;
    return true;
}

static void check_test_ref(checker *c, const char *file, const yaml_node_t *n, const char *ref)
{
    const char *colon = strchr(ref, ':');
    if (!colon || colon == ref || !colon[1] || strchr(colon + 1, ':')) {
        problem(c, file, n, "test '%s' must be EXECUTABLE:FUNCTION", ref);
        return;
    }
    char exe[256], fn[256];
    if ((size_t)(colon - ref) >= sizeof exe || strlen(colon + 1) >= sizeof fn) {
        problem(c, file, n, "test '%s' is too long", ref);
        return;
    }
    memcpy(exe, ref, (size_t)(colon - ref));
    exe[colon - ref] = 0;
    snprintf(fn, sizeof fn, "%s", colon + 1);
    for (const char *s = exe; *s; s++)
        if (!is_ident((unsigned char)*s)) {
            problem(c, file, n, "test executable '%s' is not a plain name", exe);
            return;
        }
    for (const char *s = fn; *s; s++)
        if (!is_ident((unsigned char)*s)) {
            problem(c, file, n, "test function '%s' is not a C identifier", fn);
            return;
        }
    if (strncmp(exe, "test_", 5)) {
        problem(c, file, n, "test executable '%s' must be one of tests/test_*.c", exe);
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.c", c->tests_dir, exe);
    FILE *f = fopen(path, "rb");
    if (!f) {
        problem(c, file, n, "test executable '%s' does not exist (%s: %s)", exe, path, strerror(errno));
        return;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) {
            cap = cap * 2 + 65536;
            char *nb = realloc(buf, cap);
            if (!nb)
                exit(2);
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    fclose(f);
    char *code = strip_c(buf ? buf : "", len);
    if (!registers(code, fn))
        problem(c, file, n, "test '%s': %s.c registers no cmocka test named %s", ref, exe, fn);
    free(code);
    free(buf);
}

/* ---- contracts */

static void add_id(checker *c, const char *file, const yaml_node_t *n, const char *id)
{
    if (!valid_name(id)) {
        problem(c, file, n, "id '%s' must match [A-Za-z0-9._-]+", id);
        return;
    }
    for (size_t i = 0; i < c->n_ids; i++) {
        if (!strcmp(c->ids[i], id)) {
            problem(c, file, n, "duplicate id '%s'", id);
            return;
        }
    }
    if (c->n_ids == c->cap_ids) {
        c->cap_ids = c->cap_ids ? c->cap_ids * 2 : 64;
        char **ni = realloc(c->ids, c->cap_ids * sizeof *ni);
        if (!ni)
            exit(2);
        c->ids = ni;
    }
    c->ids[c->n_ids++] = xstrdup(id);
}

/* Check one record against its kind; returns the node of key `want` if asked. */
static void check_record(checker *c, yaml_document_t *d, yaml_node_t *n, const kind *k,
                         const char *what, const char *file)
{
    if (!n || n->type != YAML_MAPPING_NODE) {
        problem(c, file, n, "%s must be a mapping", what);
        return;
    }
    bool *seen = calloc(k->n + 1, sizeof *seen);
    if (!seen)
        exit(2);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(d, p->key);
        yaml_node_t *vn = yaml_document_get_node(d, p->value);
        const char *key = scalar(kn);
        size_t fi = k->n;
        for (size_t i = 0; key && i < k->n; i++)
            if (!strcmp(k->f[i].name, key))
                fi = i;
        if (fi == k->n) {
            problem(c, file, kn, "%s: unknown key '%s'", what, key ? key : "(not a string)");
            continue;
        }
        if (seen[fi]) {
            problem(c, file, kn, "%s: key '%s' given twice", what, key);
            continue;
        }
        seen[fi] = true;
        if (!node_is(vn, k->f[fi].type)) {
            problem(c, file, vn, "%s: '%s' must be a %s%s", what, key, vtype_name(k->f[fi].type),
                    k->f[fi].type == VT_STRING ? " (non-empty)" : "");
            continue;
        }
        if (!strcmp(key, "id"))
            add_id(c, file, vn, scalar(vn));
        else if (!strcmp(key, "test") && k == &c->falsifier)
            check_test_ref(c, file, vn, scalar(vn));
    }
    for (size_t i = 0; i < k->n; i++)
        if (k->f[i].required && !seen[i])
            problem(c, file, n, "%s: required key '%s' is missing", what, k->f[i].name);
    free(seen);
}

static void check_contract_file(checker *c, const char *path)
{
    yaml_document_t d;
    char err[512];
    if (!load_yaml(path, &d, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", path, err);
        c->problems++;
        return;
    }
    yaml_node_t *root = yaml_document_get_root_node(&d);
    check_record(c, &d, root, &c->contract, "contract", path);
    c->n_contracts++;
    if (root->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
             p++) {
            const char *key = scalar(yaml_document_get_node(&d, p->key));
            yaml_node_t *v = yaml_document_get_node(&d, p->value);
            if (!key || strcmp(key, "falsifiers") || v->type != YAML_SEQUENCE_NODE)
                continue;
            if (v->data.sequence.items.top == v->data.sequence.items.start)
                problem(c, path, v, "contract: 'falsifiers' is empty");
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
                 it++) {
                check_record(c, &d, yaml_document_get_node(&d, *it), &c->falsifier, "falsifier", path);
                c->n_falsifiers++;
            }
        }
    }
    yaml_document_delete(&d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONTRACTS_DIR TESTS_DIR\n", argv[0]);
        return 2;
    }
    checker c = {.tests_dir = argv[2]};
    if (!load_schema(&c, argv[1]))
        return 1;
    DIR *dir = opendir(argv[1]);
    if (!dir) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    char **files = NULL;
    size_t nf = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        const size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".yaml") && strcmp(e->d_name, "schema.yaml")) {
            char **nfp = realloc(files, (nf + 1) * sizeof *nfp);
            if (!nfp)
                return 2;
            files = nfp;
            files[nf++] = xstrdup(e->d_name);
        }
    }
    closedir(dir);
    qsort(files, nf, sizeof *files, cmp_str); /* stable, readable output order */
    if (nf == 0) {
        fprintf(stderr, "%s: no contract files (*.yaml besides schema.yaml)\n", argv[1]);
        c.problems++;
    }
    for (size_t i = 0; i < nf; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], files[i]);
        check_contract_file(&c, path);
        free(files[i]);
    }
    free(files);
    for (size_t i = 0; i < c.n_ids; i++)
        free(c.ids[i]);
    free(c.ids);
    for (size_t i = 0; i < c.contract.n; i++)
        free(c.contract.f[i].name);
    for (size_t i = 0; i < c.falsifier.n; i++)
        free(c.falsifier.f[i].name);
    free(c.contract.f);
    free(c.falsifier.f);
    if (c.problems) {
        fprintf(stderr, "check_contracts: %d problem%s in %d contracts\n", c.problems,
                c.problems == 1 ? "" : "s", c.n_contracts);
        return 1;
    }
    printf("check_contracts: %d contracts, %d falsifiers, every named test exists\n", c.n_contracts,
           c.n_falsifiers);
    return 0;
}
