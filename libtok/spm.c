/* spm.c - SentencePiece tokenizer.model (a serialized ModelProto) reader and
 * writer, by hand: the file is a handful of proto2 messages, and no C
 * protobuf library is worth a dependency for it.
 *
 * Field numbers (google/sentencepiece src/sentencepiece_model.proto, checked
 * against the descriptor shipped in the sentencepiece wheel):
 *   ModelProto     pieces 1 (repeated SentencePiece), trainer_spec 2,
 *                  normalizer_spec 3, self_test_data 4, denormalizer_spec 5
 *   SentencePiece  piece 1 (string), score 2 (float), type 3 (enum, NORMAL)
 *   TrainerSpec    model_type 3 (UNIGRAM), vocab_size 4 (8000),
 *                  byte_fallback 35 (false), unk_id 40 (0), bos_id 41 (1),
 *                  eos_id 42 (2), pad_id 43 (-1), unk_piece 45 ("<unk>"),
 *                  bos_piece 46 ("<s>"), eos_piece 47 ("</s>"), pad_piece 48
 *                  ("<pad>")
 *   NormalizerSpec name 1, precompiled_charsmap 2, add_dummy_prefix 3 (true),
 *                  remove_extra_whitespaces 4 (true), escape_whitespaces 5
 *                  (true)
 * proto2 semantics kept: a repeated occurrence of a singular field or
 * message overrides / merges into the earlier one; an enum value outside the
 * enum leaves the field as it was (it becomes an unknown field); unknown
 * fields are skipped by wire type. A known field with the wrong wire type,
 * a group or an invalid wire type is an error: no real tokenizer.model has
 * them, and guessing would give a different vocabulary.
 */
#define _GNU_SOURCE
#include "apr_util.h"
#include "tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A real tokenizer.model is 0.5-5 MB; anything past this is not one. */
#define SPM_MAX_FILE_BYTES (512ull << 20)

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* ================================================================ reader */

/* c (libutil's cursor) spans the whole file, so positions in messages are
 * file offsets; a sub-message's reader ends its cursor (size) early. */
typedef struct pb {
    apr_cursor c;
    const char *what;
    apr_err *err;
} pb;

static int pb_fail(pb *r, const char *msg)
{
    return apr_err_set(r->err, APR_E_FORMAT, "%s: %s at byte %zu", r->what, msg, (size_t)r->c.pos);
}

static int pb_varint(pb *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        const uint8_t *p;
        if (!apr_cur_take(&r->c, 1, &p))
            return pb_fail(r, "truncated varint");
        const uint8_t b = *p;
        /* the 10th byte holds bit 63 only */
        if (i == 9 && b > 1)
            return pb_fail(r, "varint longer than 64 bits");
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return pb_fail(r, "varint longer than 10 bytes");
}

static int pb_key(pb *r, uint32_t *field, int *wt)
{
    uint64_t k = 0;
    int rc = pb_varint(r, &k);
    if (rc)
        return rc;
    if ((k >> 3) == 0 || (k >> 3) > 0x1fffffff)
        return pb_fail(r, "invalid field number");
    *field = (uint32_t)(k >> 3);
    *wt = (int)(k & 7);
    return 0;
}

/* A length-delimited payload as a sub-reader. */
static int pb_len(pb *r, pb *sub)
{
    uint64_t n = 0;
    int rc = pb_varint(r, &n);
    if (rc)
        return rc;
    if (n > apr_cur_left(&r->c))
        return pb_fail(r, "length runs past the end of its message");
    *sub = *r;
    sub->c.size = r->c.pos + n;
    r->c.pos += n;
    return 0;
}

static int pb_fixed32(pb *r, uint32_t *v)
{
    if (!apr_cur_u32(&r->c, v))
        return pb_fail(r, "truncated fixed32");
    return 0;
}

static int pb_skip(pb *r, int wt)
{
    uint64_t v = 0;
    pb sub = {0};
    switch (wt) {
    case WT_VARINT: return pb_varint(r, &v);
    case WT_LEN: return pb_len(r, &sub);
    case WT_I64:
        if (apr_cur_left(&r->c) < 8)
            return pb_fail(r, "truncated fixed64");
        r->c.pos += 8;
        return 0;
    case WT_I32:
        if (apr_cur_left(&r->c) < 4)
            return pb_fail(r, "truncated fixed32");
        r->c.pos += 4;
        return 0;
    default: return pb_fail(r, "unsupported wire type (group or invalid)");
    }
}

static int pb_want(pb *r, int wt, int want, const char *field)
{
    if (wt == want)
        return 0;
    char msg[96];
    snprintf(msg, sizeof msg, "field %s has wire type %d, expected %d", field, wt, want);
    return pb_fail(r, msg);
}

/* proto int32: the low 32 bits of the varint (negatives are sign-extended to 10 bytes). */
static int pb_int32(pb *r, int wt, const char *field, int32_t *out)
{
    uint64_t v = 0;
    int rc = pb_want(r, wt, WT_VARINT, field);
    if (!rc && !(rc = pb_varint(r, &v)))
        *out = (int32_t)(uint32_t)v;
    return rc;
}

static int pb_bool(pb *r, int wt, const char *field, bool *out)
{
    uint64_t v = 0;
    int rc = pb_want(r, wt, WT_VARINT, field);
    if (!rc && !(rc = pb_varint(r, &v)))
        *out = v != 0;
    return rc;
}

/* An enum: values outside [lo, hi] leave *out unchanged (proto2 closed enum). */
static int pb_enum(pb *r, int wt, const char *field, int lo, int hi, int32_t *out)
{
    uint64_t v = 0;
    int rc = pb_want(r, wt, WT_VARINT, field);
    if (!rc && !(rc = pb_varint(r, &v)) && (int64_t)v >= lo && (int64_t)v <= hi)
        *out = (int32_t)v;
    return rc;
}

static int str_set(apr_str *s, const void *p, size_t n, apr_err *err)
{
    char *c = malloc(n + 1);
    if (!c)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    memcpy(c, p, n);
    c[n] = 0;
    free(s->s);
    s->s = c;
    s->len = n;
    return 0;
}

static int pb_string(pb *r, int wt, const char *field, apr_str *out)
{
    pb sub = {0};
    int rc = pb_want(r, wt, WT_LEN, field);
    if (!rc && !(rc = pb_len(r, &sub)))
        rc = str_set(out, sub.c.buf + sub.c.pos, (size_t)apr_cur_left(&sub.c), r->err);
    return rc;
}

/* One field of a message, the reader positioned at its value (after its key). */
typedef int (*pb_field_fn)(pb *r, uint32_t field, int wt, void *ctx);

/* Calls fn for every field of message r in order, until an error; fn skips
 * the fields it does not know (pb_skip). */
static int pb_each_field(pb r, pb_field_fn fn, void *ctx)
{
    int rc = 0;
    while (!rc && apr_cur_left(&r.c)) {
        uint32_t f = 0;
        int wt = 0;
        if (!(rc = pb_key(&r, &f, &wt)))
            rc = fn(&r, f, wt, ctx);
    }
    return rc;
}

typedef struct piece_ctx {
    apr_spm *s;
    uint32_t i;
} piece_ctx;

static int piece_field(pb *r, uint32_t f, int wt, void *ctx)
{
    apr_spm *s = ((piece_ctx *)ctx)->s;
    const uint32_t i = ((piece_ctx *)ctx)->i;
    int rc;
    uint32_t bits = 0;
    switch (f) {
    case 1: return pb_string(r, wt, "SentencePiece.piece", &s->pieces[i]);
    case 2:
        if (!(rc = pb_want(r, wt, WT_I32, "SentencePiece.score")) && !(rc = pb_fixed32(r, &bits)))
            memcpy(&s->scores[i], &bits, 4);
        return rc;
    case 3: return pb_enum(r, wt, "SentencePiece.type", APR_SPM_NORMAL, APR_SPM_BYTE, &s->types[i]);
    default: return pb_skip(r, wt);
    }
}

static int trainer_field(pb *r, uint32_t f, int wt, void *ctx)
{
    apr_spm *s = ctx;
    switch (f) {
    case 3: return pb_enum(r, wt, "TrainerSpec.model_type", APR_SPM_UNIGRAM, APR_SPM_CHAR, &s->model_type);
    case 4: return pb_int32(r, wt, "TrainerSpec.vocab_size", &s->vocab_size);
    case 35: return pb_bool(r, wt, "TrainerSpec.byte_fallback", &s->byte_fallback);
    case 40: return pb_int32(r, wt, "TrainerSpec.unk_id", &s->unk_id);
    case 41: return pb_int32(r, wt, "TrainerSpec.bos_id", &s->bos_id);
    case 42: return pb_int32(r, wt, "TrainerSpec.eos_id", &s->eos_id);
    case 43: return pb_int32(r, wt, "TrainerSpec.pad_id", &s->pad_id);
    case 45: return pb_string(r, wt, "TrainerSpec.unk_piece", &s->unk_piece);
    case 46: return pb_string(r, wt, "TrainerSpec.bos_piece", &s->bos_piece);
    case 47: return pb_string(r, wt, "TrainerSpec.eos_piece", &s->eos_piece);
    case 48: return pb_string(r, wt, "TrainerSpec.pad_piece", &s->pad_piece);
    default: return pb_skip(r, wt);
    }
}

static int normalizer_field(pb *r, uint32_t f, int wt, void *ctx)
{
    apr_spm *s = ctx;
    switch (f) {
    case 1: return pb_string(r, wt, "NormalizerSpec.name", &s->norm_name);
    case 3: return pb_bool(r, wt, "NormalizerSpec.add_dummy_prefix", &s->add_dummy_prefix);
    case 4: return pb_bool(r, wt, "NormalizerSpec.remove_extra_whitespaces", &s->remove_extra_whitespaces);
    case 5: return pb_bool(r, wt, "NormalizerSpec.escape_whitespaces", &s->escape_whitespaces);
    default: return pb_skip(r, wt);
    }
}

typedef struct top_ctx {
    apr_spm *s;
    uint64_t n; /* pieces seen */
} top_ctx;

static int top_field(pb *r, uint32_t f, int wt, void *ctx)
{
    top_ctx *t = ctx;
    apr_spm *s = t->s;
    if (f < 1 || f > 3)
        return pb_skip(r, wt);
    static const char *const names[] = {"", "ModelProto.pieces", "ModelProto.trainer_spec",
                                        "ModelProto.normalizer_spec"};
    pb sub = {0};
    int rc;
    if ((rc = pb_want(r, wt, WT_LEN, names[f])) || (rc = pb_len(r, &sub)))
        return rc;
    if (f == 1) {
        piece_ctx pc = {s, (uint32_t)t->n};
        if (s->pieces)
            rc = pb_each_field(sub, piece_field, &pc);
        if (!rc && ++t->n > APR_SPM_MAX_PIECES)
            rc = pb_fail(r, "more than 2^24 pieces");
        return rc;
    }
    if (!s->pieces)
        return 0;
    return pb_each_field(sub, f == 2 ? trainer_field : normalizer_field, s);
}

/* One pass over the top-level message. With s->pieces NULL it only counts
 * the pieces (and checks the framing); otherwise it fills them. */
static int parse_top(pb r, apr_spm *s, uint64_t *n_pieces)
{
    top_ctx t = {s, 0};
    int rc = pb_each_field(r, top_field, &t);
    *n_pieces = t.n;
    return rc;
}

void apr_spm_free(apr_spm *s)
{
    if (s->pieces)
        for (uint32_t i = 0; i < s->n_pieces; i++)
            free(s->pieces[i].s);
    free(s->pieces);
    free(s->scores);
    free(s->types);
    free(s->unk_piece.s);
    free(s->bos_piece.s);
    free(s->eos_piece.s);
    free(s->pad_piece.s);
    free(s->norm_name.s);
    memset(s, 0, sizeof *s);
}

/* Allocate n pieces and set every field to its proto default. */
static int spm_init(apr_spm *s, uint32_t n, apr_err *err)
{
    memset(s, 0, sizeof *s);
    s->n_pieces = n;
    s->pieces = calloc(n ? n : 1, sizeof *s->pieces);
    s->scores = calloc(n ? n : 1, sizeof *s->scores);
    s->types = malloc((n ? n : 1) * sizeof *s->types);
    if (!s->pieces || !s->scores || !s->types) {
        apr_spm_free(s);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++)
        s->types[i] = APR_SPM_NORMAL;
    s->model_type = APR_SPM_UNIGRAM;
    s->vocab_size = 8000;
    s->unk_id = 0;
    s->bos_id = 1;
    s->eos_id = 2;
    s->pad_id = -1;
    s->add_dummy_prefix = s->remove_extra_whitespaces = s->escape_whitespaces = true;
    if (str_set(&s->unk_piece, "<unk>", 5, err) || str_set(&s->bos_piece, "<s>", 3, err) ||
        str_set(&s->eos_piece, "</s>", 4, err) || str_set(&s->pad_piece, "<pad>", 5, err)) {
        apr_spm_free(s);
        return err ? err->code : APR_E_NOMEM;
    }
    return 0;
}

/* ================================================================ the checks sentencepiece makes on load */

typedef struct piece_key {
    const apr_str *s;
    int reserved; /* sentencepiece keeps NORMAL/USER_DEFINED/UNUSED and the rest in two maps */
    uint32_t id;
} piece_key;

static int cmp_piece_key(const void *a, const void *b)
{
    const piece_key *x = a, *y = b;
    if (x->reserved != y->reserved)
        return x->reserved - y->reserved;
    size_t n = x->s->len < y->s->len ? x->s->len : y->s->len;
    int c = memcmp(x->s->s, y->s->s, n);
    if (c)
        return c;
    return x->s->len < y->s->len ? -1 : x->s->len > y->s->len;
}

/* "<0xHH>" with upper-case hex, as sentencepiece's ByteToPiece writes it; -1 otherwise. */
static int byte_of_piece(const apr_str *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (s->len != 6 || memcmp(s->s, "<0x", 3) != 0 || s->s[5] != '>')
        return -1;
    const char *hi = s->s[3] ? strchr(hex, s->s[3]) : NULL, *lo = s->s[4] ? strchr(hex, s->s[4]) : NULL;
    return hi && lo ? (int)((hi - hex) * 16 + (lo - hex)) : -1;
}

/* ModelInterface::InitializePieces' rules: false with the reason in why. */
static bool spm_loadable(const apr_spm *s, char *why, size_t wl, apr_err *err, int *oom)
{
    *oom = 0;
    if (s->n_pieces == 0) {
        snprintf(why, wl, "no pieces");
        return false;
    }
    int64_t unk = -1;
    bool bytes[256] = {false};
    for (uint32_t i = 0; i < s->n_pieces; i++) {
        if (s->pieces[i].len == 0) {
            snprintf(why, wl, "piece %u is empty", i);
            return false;
        }
        if (s->types[i] == APR_SPM_UNKNOWN) {
            if (unk >= 0) {
                snprintf(why, wl, "two unknown pieces (%lld and %u)", (long long)unk, i);
                return false;
            }
            unk = i;
        }
        if (s->types[i] == APR_SPM_BYTE) {
            int b = byte_of_piece(&s->pieces[i]);
            if (!s->byte_fallback || b < 0) {
                snprintf(why, wl, "byte piece %u '%.16s' %s", i, s->pieces[i].s,
                         b < 0 ? "is not <0xHH>" : "but byte_fallback is false");
                return false;
            }
            bytes[b] = true;
        }
    }
    if (unk < 0) {
        snprintf(why, wl, "no unknown piece");
        return false;
    }
    for (int b = 0; s->byte_fallback && b < 256; b++)
        if (!bytes[b]) {
            snprintf(why, wl, "byte_fallback is set but the byte piece <0x%02X> is missing", b);
            return false;
        }
    piece_key *k = malloc(s->n_pieces * sizeof *k);
    if (!k) {
        *oom = apr_err_set(err, APR_E_NOMEM, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < s->n_pieces; i++) {
        int t = s->types[i];
        k[i] = (piece_key){&s->pieces[i], !(t == APR_SPM_NORMAL || t == APR_SPM_USER_DEFINED || t == APR_SPM_UNUSED), i};
    }
    qsort(k, s->n_pieces, sizeof *k, cmp_piece_key);
    bool ok = true;
    for (uint32_t i = 1; i < s->n_pieces && ok; i++)
        if (cmp_piece_key(&k[i - 1], &k[i]) == 0) {
            snprintf(why, wl, "piece '%.40s' is defined twice (ids %u and %u)", k[i].s->s, k[i - 1].id, k[i].id);
            ok = false;
        }
    free(k);
    return ok;
}

int apr_spm_parse(apr_spm *out, const uint8_t *buf, size_t n, const char *what, apr_err *err)
{
    memset(out, 0, sizeof *out);
    pb r = {{buf, n, 0}, what, err};
    apr_spm count = {0};
    uint64_t n_pieces = 0;
    int rc = parse_top(r, &count, &n_pieces); /* framing + count only */
    if (rc)
        return rc;
    if ((rc = spm_init(out, (uint32_t)n_pieces, err)))
        return rc;
    if ((rc = parse_top(r, out, &n_pieces))) {
        apr_spm_free(out);
        return rc;
    }
    char why[160];
    int oom;
    if (!spm_loadable(out, why, sizeof why, err, &oom)) {
        apr_spm_free(out);
        return oom ? oom : apr_err_set(err, APR_E_FORMAT, "%s: not a loadable SentencePiece model: %s", what, why);
    }
    return 0;
}

int apr_spm_load(apr_spm *out, const char *path, bool *present, apr_err *err)
{
    memset(out, 0, sizeof *out);
    *present = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > SPM_MAX_FILE_BYTES) {
        fclose(f);
        return apr_err_set(err, APR_E_FORMAT, "%s: not a regular file of at most %llu MiB", path,
                           SPM_MAX_FILE_BYTES >> 20);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    int rc = got == n ? apr_spm_parse(out, buf, n, path, err)
                      : apr_err_set(err, APR_E_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    free(buf);
    if (!rc)
        *present = true;
    return rc;
}

/* ================================================================ writer */

/* Messages are assembled in an apr_buf (libutil): out of memory is sticky,
 * checked once at the end. */

static void w_varint(apr_buf *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b[n] |= 0x80;
        n++;
    } while (v);
    apr_buf_put(w, b, n);
}

static void w_key(apr_buf *w, uint32_t field, int wt)
{
    w_varint(w, (uint64_t)field << 3 | (uint64_t)wt);
}

/* int32 negatives are written as 10-byte sign-extended varints, as protobuf does. */
static void w_int32(apr_buf *w, uint32_t field, int32_t v)
{
    w_key(w, field, WT_VARINT);
    w_varint(w, (uint64_t)(int64_t)v);
}

static void w_bytes(apr_buf *w, uint32_t field, const void *p, size_t n)
{
    w_key(w, field, WT_LEN);
    w_varint(w, n);
    apr_buf_put(w, p, n);
}

static void w_f32(apr_buf *w, uint32_t field, float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    w_key(w, field, WT_I32);
    apr_buf_u32(w, b);
}

static void w_trainer(apr_buf *w, const apr_spm *s)
{
    w_int32(w, 3, s->model_type);
    w_int32(w, 4, s->vocab_size);
    w_int32(w, 35, s->byte_fallback);
    w_int32(w, 40, s->unk_id);
    w_int32(w, 41, s->bos_id);
    w_int32(w, 42, s->eos_id);
    w_int32(w, 43, s->pad_id);
    const apr_str *ps[4] = {&s->unk_piece, &s->bos_piece, &s->eos_piece, &s->pad_piece};
    for (int i = 0; i < 4; i++)
        if (ps[i]->s)
            w_bytes(w, 45 + (uint32_t)i, ps[i]->s, (size_t)ps[i]->len);
}

static void w_normalizer(apr_buf *w, const apr_spm *s)
{
    if (s->norm_name.s)
        w_bytes(w, 1, s->norm_name.s, (size_t)s->norm_name.len);
    w_bytes(w, 2, "", 0); /* an empty precompiled_charsmap, as LLaMA's file has */
    w_int32(w, 3, s->add_dummy_prefix);
    w_int32(w, 4, s->remove_extra_whitespaces);
    w_int32(w, 5, s->escape_whitespaces);
}

int apr_spm_serialize(const apr_spm *s, uint8_t **out, size_t *n, apr_err *err)
{
    apr_buf w = {0}, sub = {0};
    for (uint32_t i = 0; i < s->n_pieces && !sub.oom; i++) {
        sub.len = 0;
        w_bytes(&sub, 1, s->pieces[i].s, (size_t)s->pieces[i].len);
        w_f32(&sub, 2, s->scores[i]);
        if (s->types[i] != APR_SPM_NORMAL) /* the default is not written, as protobuf does */
            w_int32(&sub, 3, s->types[i]);
        if (!sub.oom)
            w_bytes(&w, 1, sub.p, sub.len);
    }
    sub.len = 0;
    w_trainer(&sub, s);
    if (!sub.oom)
        w_bytes(&w, 2, sub.p, sub.len);
    sub.len = 0;
    w_normalizer(&sub, s);
    if (!sub.oom)
        w_bytes(&w, 3, sub.p, sub.len);
    bool oom = w.oom || sub.oom;
    free(sub.p);
    if (oom) {
        free(w.p);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    *out = w.p;
    *n = w.len;
    return 0;
}

static int piece_copy(apr_str *dst, const apr_model *m, int32_t id, apr_err *err)
{
    if (id < 0 || (uint32_t)id >= m->tok.n_tokens)
        return 0; /* the proto default stays */
    return str_set(dst, m->tok.tokens[id].s, (size_t)m->tok.tokens[id].len, err);
}

int apr_spm_from_model(const apr_model *m, apr_spm *out, char *why, size_t why_len, apr_err *err)
{
    const apr_tokenizer *t = &m->tok;
    memset(out, 0, sizeof *out);
    if (!m->has_tok || strcmp(t->model, "llama") != 0)
        return apr_err_set(err, APR_E_ARG, "not a SentencePiece (llama) vocabulary");
    if (t->n_tokens == 0 || t->n_tokens > APR_SPM_MAX_PIECES) {
        snprintf(why, why_len, "%u tokens", t->n_tokens);
        return 1;
    }
    int rc = spm_init(out, t->n_tokens, err);
    if (rc)
        return rc;
    int32_t unk = -1;
    bool any_byte = false;
    for (uint32_t i = 0; i < t->n_tokens && !rc; i++) {
        int32_t ty = t->token_type ? t->token_type[i] : APR_SPM_NORMAL;
        out->types[i] = (ty >= APR_SPM_NORMAL && ty <= APR_SPM_BYTE) ? ty : APR_SPM_NORMAL;
        out->scores[i] = t->scores ? t->scores[i] : 0.0f;
        rc = str_set(&out->pieces[i], t->tokens[i].s, (size_t)t->tokens[i].len, err);
        if (ty == APR_SPM_UNKNOWN && unk < 0)
            unk = (int32_t)i;
        any_byte |= ty == APR_SPM_BYTE;
    }
    /* LLaMA's TrainerSpec: BPE, the special ids of the vocabulary. */
    out->model_type = APR_SPM_BPE;
    out->vocab_size = (int32_t)t->n_tokens;
    out->byte_fallback = any_byte;
    out->unk_id = t->unk_id >= 0 ? t->unk_id : unk;
    out->bos_id = t->bos_id;
    out->eos_id = t->eos_id;
    out->pad_id = t->pad_id;
    const int32_t ids[4] = {out->unk_id, t->bos_id, t->eos_id, t->pad_id};
    apr_str *dst[4] = {&out->unk_piece, &out->bos_piece, &out->eos_piece, &out->pad_piece};
    for (int k = 0; k < 4 && !rc; k++)
        rc = piece_copy(dst[k], m, ids[k], err);
    /* LLaMA's NormalizerSpec; the GGUF flags override it where present. */
    if (!rc)
        rc = str_set(&out->norm_name, "identity", 8, err);
    out->add_dummy_prefix = true;
    out->remove_extra_whitespaces = false;
    out->escape_whitespaces = true;
    apr_kv_get_bool(m, "tokenizer.ggml.add_space_prefix", &out->add_dummy_prefix);
    apr_kv_get_bool(m, "tokenizer.ggml.remove_extra_whitespaces", &out->remove_extra_whitespaces);
    int oom = 0;
    if (!rc && !spm_loadable(out, why, why_len, err, &oom))
        rc = oom ? oom : 1;
    if (rc)
        apr_spm_free(out);
    return rc;
}
