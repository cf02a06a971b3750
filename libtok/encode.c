/* encode.c - the encoder / decoder, read from model metadata (apr_model.tok):
 *
 *   "llama": SentencePiece as llama.cpp's llm_tokenizer_spm does it: spaces
 *            become U+2581, one U+2581 is prepended (tokenizer.ggml.
 *            add_space_prefix, default true), the text is split into UTF-8
 *            characters and adjacent pairs are merged best score first (ties:
 *            leftmost); a piece that is no token falls back to <0xXX> byte tokens.
 *   "gpt2":  byte-level BPE: the text is split by the pre-tokenizer regex,
 *            each piece's bytes are mapped to GPT-2's printable code points and
 *            merged lowest merge rank first (ties: leftmost).
 *            Pre-tokenizers: "qwen2" (and "deepseek-llm"-like single digits),
 *            "llama3"/"llama-bpe" (digits in runs of up to 3) -- both the
 *            pattern (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
 *            \p{N}{1,k}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ ,
 *            hand-written after llama.cpp's unicode_regex_split_custom_llama3;
 *            anything else uses GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|
 *            ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ .
 *   "gemma4": BPE on raw UTF-8 with U+2581 for spaces (PRE_RAW below).
 *
 * The tokenizer copies the model's arrays at load (own_copy): it never points
 * into the model's KVs.
 *
 * Limits (documented, not silent): control and unknown tokens written inside
 * the text are matched only with parse_special (apr_tok_encode_ex), as in
 * llama.cpp; Unicode categories come from
 * unicode_tab.h (Unicode 14); decode does not render control tokens.
 */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apr_util.h"
#include "tok.h"
#include "tok_pre.h"
#include "unicode_tab.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* String -> int maps (vocab, merges): apr_strmap (libutil). The first id
 * of a duplicated string wins, as in a vocab where later duplicates are
 * unreachable; keys are the tokenizer's own copies, which outlive the maps. */

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes). */
static size_t utf8_len(uint8_t c)
{
    static const size_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Decode one code point at s (n bytes left); invalid sequences decode as
 * U+FFFD consuming one byte. */
static uint32_t utf8_next(const uint8_t *s, size_t n, size_t *adv)
{
    const uint8_t c = s[0];
    size_t len = utf8_len(c);
    if (len == 1 || len > n) {
        *adv = 1;
        return c < 0x80 ? c : 0xFFFD;
    }
    uint32_t cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *adv = 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *adv = len;
    return cp;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static bool is_letter(uint32_t cp)
{
    return in_ranges(apr_uni_letter, sizeof apr_uni_letter / sizeof *apr_uni_letter, cp);
}
static bool is_number(uint32_t cp)
{
    return in_ranges(apr_uni_number, sizeof apr_uni_number / sizeof *apr_uni_number, cp);
}
static bool is_mark(uint32_t cp)
{
    return in_ranges(apr_uni_mark, sizeof apr_uni_mark / sizeof *apr_uni_mark, cp);
}
static bool is_punct(uint32_t cp)
{
    return in_ranges(apr_uni_punct, sizeof apr_uni_punct / sizeof *apr_uni_punct, cp);
}
/* llama.cpp's whitespace set (unicode.cpp). */
static bool is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* ---------------------------------------------------------------- tokenizer */

typedef enum tok_kind { TOK_SPM, TOK_BPE } tok_kind;
/* One regex of a pre-tokenizer: llama.cpp applies a list of them in turn,
 * each splitting every fragment the previous ones left into its matches and
 * the unmatched text between them (unicode_regex_split). */
typedef enum pre_stage {
    ST_END = 0,
    ST_GPT2,        /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) (custom) */
    ST_LLAMA3,      /* the llama3 pattern, \p{N}{1,3} (custom) */
    ST_QWEN2,       /* the same with \p{N} (custom) */
    ST_QWEN35,      /* qwen2 with [\p{L}\p{M}] for letters (custom) */
    ST_NUM1,        /* \p{N} */
    ST_NUMS,        /* \p{N}+ */
    ST_DIGIT3,      /* [0-9][0-9][0-9] */
    ST_PUNCT_SYM,   /* [\p{P}\$\+<=>\^~\|]+ (llama.cpp's default) */
    ST_PUNCT_SYM_BT,/* [\p{P}\$\+<=>\^~\|`]+ (falcon) */
    ST_NEWLINE,     /* [\r\n] */
    ST_SP_LETTERS,  /* \s?\p{L}+ */
    ST_SP_PUNCT,    /* \s?\p{P}+ */
    ST_CJK,         /* [一-龥ࠀ-一가-퟿]+ */
    ST_NL_RUNS,     /* [^\n]+|[\n]+ (gemma4) */
} pre_stage;
#define MAX_STAGES 6

/* tokenizer.ggml.pre -> llama.cpp's regex list (llm_tokenizer_bpe; the names as
 * llama_vocab::load maps them). */
typedef struct pre_def {
    const char *names; /* space-separated tokenizer.ggml.pre values */
    bool ignore_merges; /* a pre-token that is a whole token is taken as is; */
                        /* (llama.cpp's add_bos default: formats/core/derive.c) */
    pre_stage stages[MAX_STAGES];
} pre_def;

static const pre_def PRE_DEFS[] = {
    {"default", false, {ST_PUNCT_SYM, ST_GPT2, ST_NUMS, ST_DIGIT3}},
    {"gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert jina-v1-en "
     "jina-v2-code roberta-bpe mpt olmo jais", false, {ST_GPT2}},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano", true, {ST_LLAMA3}},
    {"smaug-bpe dbrx chatglm-bpe glm4", false, {ST_LLAMA3}},
    {"qwen2 deepseek-r1-qwen kormo f2llmv2 stablelm2", false, {ST_QWEN2}},
    {"qwen35", false, {ST_QWEN35}},
    {"starcoder refact command-r", false, {ST_NUM1, ST_GPT2}},
    {"falcon", false, {ST_PUNCT_SYM_BT, ST_GPT2, ST_DIGIT3}},
    {"deepseek-coder", false, {ST_NEWLINE, ST_SP_LETTERS, ST_SP_PUNCT, ST_CJK, ST_NUM1}},
};

/* Gemma 4's SentencePiece-style BPE (llama.cpp's LLAMA_VOCAB_PRE_TYPE_GEMMA4,
 * for tokenizer.ggml.model "gemma4" and for these pre values of "gpt2"): spaces
 * become U+2581, the text is split only into newline / non-newline runs and
 * merged on raw UTF-8 (no GPT-2 byte mapping); a piece that is no token falls
 * back to <0xXX> byte tokens. */
static const pre_stage PRE_RAW[] = {ST_NL_RUNS, ST_END};
static const char RAW_BPE_PRES[] = "gemma4 granite-embed-multi-311m";

static bool name_in(const char *names, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ' ');
        const size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, name, n))
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

int tok_pre_row(const char *pre)
{
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof *PRE_DEFS; i++)
        if (name_in(PRE_DEFS[i].names, pre))
            return (int)i;
    return -1;
}

struct apr_tok {
    tok_kind kind;
    const pre_stage *pre;   /* BPE: ST_END-terminated */
    bool ignore_merges;
    bool raw_bpe;           /* BPE on raw UTF-8 with U+2581 for spaces (PRE_RAW) */
    bool add_bos;           /* m->tok.add_bos: llama.cpp's default for the vocab type / pre, then the KV */
    uint8_t *strip;         /* per token: STRIP_LEFT / STRIP_RIGHT (llama.cpp's LSTRIP / RSTRIP) */
    const apr_tokenizer *v; /* &own */
    apr_tokenizer own;      /* copies of the model's arrays: the tokenizer outlives KV changes */
    char *arena;            /* the token and merge texts of own */
    float *scores;
    int32_t *types;
    apr_strmap vocab;             /* token text -> id */
    apr_strmap merges;            /* "left right" -> rank (BPE) */
    int32_t byte_tok[256];  /* SPM: <0xXX>; BPE: the token of the byte's code point; -1 */
    uint32_t byte_cp[256];  /* BPE: GPT-2 bytes_to_unicode */
    int16_t cp_byte[324];   /* inverse of byte_cp (code points < 324), -1 */
    bool add_space_prefix;
    int32_t *special;       /* control, user-defined and unknown tokens, longest text first */
    uint32_t n_special;
};

static int32_t tok_type(const apr_tok *t, int32_t id)
{
    return t->v->token_type ? t->v->token_type[id] : TT_NORMAL;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to
 * 256 + n in byte order. */
static void init_byte_map(apr_tok *t)
{
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) {
        const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_cp[b] = printable ? (uint32_t)b : 256 + n++;
    }
    for (int i = 0; i < 324; i++)
        t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++)
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
}

typedef struct len_id {
    uint64_t len;
    int32_t id;
} len_id;

static int by_length_desc(const void *a, const void *b)
{
    const len_id *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : (x->id > y->id) - (x->id < y->id);
}

/* llama.cpp's cache_special_tokens (ties: lower id first). */
static int collect_special(apr_tok *t)
{
    const apr_tokenizer *v = t->v;
    uint32_t n = 0;
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        const int32_t ty = tok_type(t, (int32_t)i);
        n += (ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && v->tokens[i].len > 0;
    }
    len_id *l = malloc((n ? n : 1) * sizeof *l);
    t->special = malloc((n ? n : 1) * sizeof *t->special);
    if (!l || !t->special) {
        free(l);
        return -1;
    }
    for (uint32_t i = 0, k = 0; i < v->n_tokens; i++) {
        const int32_t ty = tok_type(t, (int32_t)i);
        if ((ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && v->tokens[i].len > 0)
            l[k++] = (len_id){v->tokens[i].len, (int32_t)i};
    }
    qsort(l, n, sizeof *l, by_length_desc);
    for (uint32_t k = 0; k < n; k++)
        t->special[k] = l[k].id;
    t->n_special = n;
    free(l);
    return 0;
}

enum { STRIP_LEFT = 1, STRIP_RIGHT = 2 };

/* llama.cpp sets strip attributes by model name (llama_vocab::load): for
 * Phi-3 every special token but <unk>, <s>, <|endoftext|> eats the
 * whitespace after it. */
static int set_strip_attrs(apr_tok *t, const char *general_name)
{
    t->strip = calloc(t->v->n_tokens, 1);
    if (!t->strip)
        return -1;
    char name[256] = "";
    for (size_t i = 0; general_name && general_name[i] && i + 1 < sizeof name; i++)
        name[i] = (char)((general_name[i] >= 'A' && general_name[i] <= 'Z') ? general_name[i] + 32 : general_name[i]);
    if (!strstr(name, "phi-3") && !strstr(name, "phi3"))
        return 0;
    for (uint32_t k = 0; k < t->n_special; k++)
        t->strip[t->special[k]] |= STRIP_RIGHT;
    int32_t id = apr_strmap_get(&t->vocab, "</s>", 4);
    if (id >= 0)
        t->strip[id] |= STRIP_RIGHT;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (int i = 0; i < 3; i++)
        if ((id = apr_strmap_get(&t->vocab, keep[i], strlen(keep[i]))) >= 0)
            t->strip[id] &= (uint8_t)~STRIP_RIGHT;
    return 0;
}

/* Copy n strings into the arena at *at; dst[i] points there. */
static void copy_strs(apr_str *dst, const apr_str *src, uint32_t n, char *arena, size_t *at)
{
    for (uint32_t i = 0; i < n; i++) {
        dst[i].len = src[i].len;
        dst[i].s = arena + *at;
        if (src[i].s)
            memcpy(dst[i].s, src[i].s, src[i].len);
        dst[i].s[src[i].len] = 0;
        *at += src[i].len + 1;
    }
}

/* t->own: the model's tokenizer with every array copied (texts in one arena),
 * so that no pointer into the model's KVs survives apr_tok_load. */
static int own_copy(apr_tok *t, const apr_tokenizer *v, apr_err *err)
{
    t->own = *v;
    t->own.chat_template = NULL; /* libtok/chat.c reads it from the model */
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        if (!v->tokens[i].s || v->tokens[i].len > UINT32_MAX / 2)
            return apr_err_set(err, APR_E_FORMAT, "token %u has no text", i);
        bytes += v->tokens[i].len + 1;
    }
    const uint32_t nm = v->merges ? v->n_merges : 0;
    for (uint32_t i = 0; i < nm; i++)
        bytes += v->merges[i].len + 1;
    if (bytes > SIZE_MAX / 2)
        return apr_err_set(err, APR_E_NOMEM, "tokenizer texts too large");
    t->arena = malloc((size_t)bytes ? (size_t)bytes : 1);
    t->own.tokens = malloc(v->n_tokens * sizeof *t->own.tokens);
    t->own.merges = nm ? malloc(nm * sizeof *t->own.merges) : NULL;
    t->scores = v->scores ? malloc(v->n_tokens * sizeof *t->scores) : NULL;
    t->types = v->token_type ? malloc(v->n_tokens * sizeof *t->types) : NULL;
    if (!t->arena || !t->own.tokens || (nm && !t->own.merges) || (v->scores && !t->scores) ||
        (v->token_type && !t->types))
        return apr_err_set(err, APR_E_NOMEM, "out of memory (vocab of %u)", v->n_tokens);
    size_t at = 0;
    copy_strs(t->own.tokens, v->tokens, v->n_tokens, t->arena, &at);
    copy_strs(t->own.merges, v->merges, nm, t->arena, &at);
    t->own.n_merges = nm;
    if (t->scores)
        memcpy(t->scores, v->scores, v->n_tokens * sizeof *t->scores);
    if (t->types)
        memcpy(t->types, v->token_type, v->n_tokens * sizeof *t->types);
    t->own.scores = t->scores;
    t->own.token_type = t->types;
    t->v = &t->own;
    return 0;
}

/* The kind, pre-tokenizer stages and flags of v's tokenizer.ggml.model / pre. */
static int pick_model(apr_tok *t, const apr_tokenizer *v, apr_err *err)
{
    if (!strcmp(v->model, "llama")) {
        t->kind = TOK_SPM;
        return 0;
    }
    if (!strcmp(v->model, "gemma4") || (!strcmp(v->model, "gpt2") && name_in(RAW_BPE_PRES, v->pre))) {
        t->kind = TOK_BPE;
        t->pre = PRE_RAW;
        t->raw_bpe = true;
        return 0;
    }
    if (strcmp(v->model, "gpt2"))
        return apr_err_set(err, APR_E_UNSUPPORTED, "tokenizer model '%s' is not supported (llama, gpt2, gemma4)",
                           v->model);
    t->kind = TOK_BPE;
    /* deepseek-llm's own regex list tokenizes llama.cpp's vectors as qwen2's does */
    const char *pre = !strcmp(v->pre, "deepseek-llm") ? "qwen2" : v->pre[0] ? v->pre : "default";
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof *PRE_DEFS && !t->pre; i++)
        if (name_in(PRE_DEFS[i].names, pre)) {
            t->pre = PRE_DEFS[i].stages;
            t->ignore_merges = PRE_DEFS[i].ignore_merges;
        }
    if (!t->pre)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "pre-tokenizer '%s' (tokenizer.ggml.pre) is not supported; llama.cpp's regexes "
                           "for it are not implemented", v->pre);
    return 0;
}

/* The "left right" merges -> rank map. */
static int load_merges(apr_tok *t, apr_err *err)
{
    const apr_tokenizer *v = t->v;
    if (!v->merges || !v->n_merges)
        return apr_err_set(err, APR_E_FORMAT, "BPE tokenizer without tokenizer.ggml.merges");
    if (apr_strmap_init(&t->merges, v->n_merges))
        return apr_err_set(err, APR_E_NOMEM, "out of memory (%u merges)", v->n_merges);
    for (uint32_t i = 0; i < v->n_merges; i++) {
        const apr_str *s = &v->merges[i];
        /* "left right" with exactly one separating space (not first/last) */
        const char *sp = memchr(s->s, ' ', s->len);
        if (!sp || sp == s->s || (uint64_t)(sp - s->s) + 1 >= s->len || s->len > UINT32_MAX / 2)
            return apr_err_set(err, APR_E_FORMAT, "merge %u ('%.40s') is not 'left right'", i, s->s);
        apr_strmap_put(&t->merges, s->s, (uint32_t)s->len, (int32_t)i);
    }
    return 0;
}

static int load_tok(apr_tok *t, const apr_model *m, apr_err *err)
{
    const apr_tokenizer *mv = &m->tok;
    int rc = pick_model(t, mv, err);
    if (rc)
        return rc;
    if (mv->token_type)
        for (uint32_t i = 0; i < mv->n_tokens; i++)
            if (mv->token_type[i] < 0 || mv->token_type[i] > TT_BYTE)
                return apr_err_set(err, APR_E_FORMAT, "token %u has type %d", i, mv->token_type[i]);
    if ((rc = own_copy(t, mv, err)))
        return rc;
    const apr_tokenizer *v = t->v;
    t->add_space_prefix = t->kind == TOK_SPM;
    apr_kv_get_bool(m, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);

    if (apr_strmap_init(&t->vocab, v->n_tokens))
        return apr_err_set(err, APR_E_NOMEM, "out of memory (vocab of %u)", v->n_tokens);
    for (uint32_t i = 0; i < v->n_tokens; i++)
        apr_strmap_put(&t->vocab, v->tokens[i].s, (uint32_t)v->tokens[i].len, (int32_t)i);

    for (int b = 0; b < 256; b++)
        t->byte_tok[b] = -1;
    if (t->kind == TOK_SPM || t->raw_bpe) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_tok[b] = apr_strmap_get(&t->vocab, name, 6);
        }
    } else {
        init_byte_map(t);
        for (int b = 0; b < 256; b++) {
            char u[4];
            const size_t n = utf8_put(t->byte_cp[b], u);
            t->byte_tok[b] = apr_strmap_get(&t->vocab, u, n);
        }
    }
    if (t->kind == TOK_BPE && (rc = load_merges(t, err)))
        return rc;
    t->add_bos = v->add_bos; /* llama.cpp's default, then the KV: apr_model_derive's one rule */
    if (collect_special(t) || set_strip_attrs(t, apr_kv_get_str(m, "general.name")))
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    return 0;
}

int apr_tok_load(apr_tok **out, const apr_model *m, apr_err *err)
{
    *out = NULL;
    if (!m->has_tok || !m->tok.n_tokens || !m->tok.tokens)
        return apr_err_set(err, APR_E_FORMAT, "the model carries no tokenizer");
    apr_tok *t = calloc(1, sizeof *t);
    if (!t)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    t->v = &m->tok; /* until own_copy */
    const int rc = load_tok(t, m, err);
    if (rc) {
        apr_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void apr_tok_free(apr_tok *t)
{
    if (!t)
        return;
    apr_strmap_free(&t->vocab);
    apr_strmap_free(&t->merges);
    free(t->special);
    free(t->strip);
    free(t->own.tokens);
    free(t->own.merges);
    free(t->arena);
    free(t->scores);
    free(t->types);
    free(t);
}

int32_t apr_tok_bos(const apr_tok *t) { return t->v->bos_id; }
int32_t apr_tok_eos(const apr_tok *t) { return t->v->eos_id; }

/* ---------------------------------------------------------------- output vector */

typedef struct ids_vec {
    int32_t *v;
    size_t n, cap;
    bool oom;
} ids_vec;

static void ids_push(ids_vec *o, int32_t id)
{
    if (o->oom)
        return;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        int32_t *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv) {
            o->oom = true;
            return;
        }
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = id;
}

/* ---------------------------------------------------------------- symbol merging (SPM and BPE) */

/* 16 bytes each: a fragment is below 4 GiB (apr_tok_encode_ex checks), and
 * the heap of a 1 MB SentencePiece text holds a million bigrams, so its
 * size is what the merge loop's cache misses cost. */
typedef struct sym {
    uint32_t off, n;     /* bytes of the text; n == 0: merged away */
    int32_t prev, next;  /* -1 at the ends */
} sym;

/* key: the order as one integer, higher first: the score's order bits
 * (SPM: the float's; BPE: UINT32_MAX - rank) above UINT32_MAX - left, so
 * ties go to the leftmost pair as in llama.cpp's comparators. */
typedef struct bigram {
    uint64_t key;
    int32_t right;
    uint32_t size;       /* bytes of the merged text when queued */
} bigram;

static int32_t bg_left(const bigram *b)
{
    return (int32_t)(UINT32_MAX - (uint32_t)b->key);
}

/* A float's bits mapped so that unsigned order is numeric order. */
static uint32_t float_order(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* A binary max-heap of bigrams by key. */
typedef struct bheap {
    bigram *a;
    size_t n, cap;
    bool oom;
} bheap;

static void heap_push(bheap *h, bigram b)
{
    if (h->oom)
        return;
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        bigram *na = realloc(h->a, nc * sizeof *na);
        if (!na) {
            h->oom = true;
            return;
        }
        h->a = na;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i && b.key > h->a[(i - 1) / 2].key) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = b;
}

static bigram heap_pop(bheap *h)
{
    const bigram top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= h->n)
            break;
        if (l + 1 < h->n && h->a[l + 1].key > h->a[l].key)
            best = l + 1;
        if (h->a[best].key <= last.key)
            break;
        h->a[i] = h->a[best];
        i = best;
    }
    if (h->n)
        h->a[i] = last;
    return top;
}

typedef struct merge_ctx {
    const apr_tok *t;
    const char *text;
    sym *s;
    size_t n_sym, s_cap;
    bheap heap;
    char *keybuf;         /* BPE: "left right" lookup key */
    size_t keycap;
} merge_ctx;

static void try_bigram(merge_ctx *c, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const sym *a = &c->s[l], *b = &c->s[r];
    const uint32_t size = a->n + b->n;
    uint32_t order;
    if (c->t->kind == TOK_SPM) {
        const int32_t id = apr_strmap_get(&c->t->vocab, c->text + a->off, size);
        if (id < 0)
            return;
        order = float_order(c->t->v->scores ? c->t->v->scores[id] : 0.0f);
    } else {
        if ((size_t)size + 1 > c->keycap) {
            size_t nc = ((size_t)size + 1) * 2;
            char *nb = realloc(c->keybuf, nc);
            if (!nb) {
                c->heap.oom = true;
                return;
            }
            c->keybuf = nb;
            c->keycap = nc;
        }
        memcpy(c->keybuf, c->text + a->off, a->n);
        c->keybuf[a->n] = ' ';
        memcpy(c->keybuf + a->n + 1, c->text + b->off, b->n);
        const int32_t rank = apr_strmap_get(&c->t->merges, c->keybuf, (size_t)size + 1);
        if (rank < 0)
            return;
        order = UINT32_MAX - (uint32_t)rank;
    }
    heap_push(&c->heap, (bigram){((uint64_t)order << 32) | (UINT32_MAX - (uint32_t)l), r, size});
}

/* Split text[0, n) into UTF-8 characters and merge. Leaves the surviving
 * symbols linked from index 0. n < 2^31 (the caller's check). */
static int merge_run(merge_ctx *c, const char *text, size_t n)
{
    c->text = text;
    c->n_sym = 0;
    c->heap.n = 0;
    if (n > c->s_cap) { /* reused across the words of a text */
        free(c->s);
        c->s_cap = n > 64 ? n : 64;
        c->s = malloc(c->s_cap * sizeof *c->s);
        if (!c->s) {
            c->s_cap = 0;
            return -1;
        }
    }
    for (size_t off = 0; off < n;) {
        size_t len = utf8_len((uint8_t)text[off]);
        if (len > n - off)
            len = n - off;
        const int32_t i = (int32_t)c->n_sym;
        c->s[i] = (sym){(uint32_t)off, (uint32_t)len, i - 1, off + len == n ? -1 : i + 1};
        c->n_sym++;
        off += len;
    }
    for (size_t i = 1; i < c->n_sym; i++)
        try_bigram(c, (int32_t)i - 1, (int32_t)i);
    while (c->heap.n && !c->heap.oom) {
        const bigram bg = heap_pop(&c->heap);
        const int32_t left = bg_left(&bg);
        sym *l = &c->s[left], *r = &c->s[bg.right];
        if (!l->n || !r->n || l->n + r->n != bg.size || l->next != bg.right)
            continue; /* stale: one side was merged since */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            c->s[r->next].prev = left;
        try_bigram(c, l->prev, left);
        try_bigram(c, left, l->next);
    }
    return c->heap.oom ? -1 : 0;
}

static void merge_ctx_free(merge_ctx *c)
{
    free(c->s);
    free(c->heap.a);
    free(c->keybuf);
}

/* ---------------------------------------------------------------- SPM */

/* A symbol that is not a token: its bytes through <0xXX> (or the unknown token). */
static void spm_bytes(const apr_tok *t, const char *p, size_t n, ids_vec *o)
{
    for (size_t j = 0; j < n; j++) {
        const int32_t id = t->byte_tok[(uint8_t)p[j]];
        if (id >= 0)
            ids_push(o, id);
        else if (t->v->unk_id >= 0)
            ids_push(o, t->v->unk_id);
    }
}

/* llama.cpp's resegment: a merged symbol is always a vocab entry (merges
 * only happen when the pair's text is a token), so only unmerged single
 * characters can miss the vocab and need bytes. */
static void spm_encode(const apr_tok *t, const char *raw, size_t rawn, bool prefix, ids_vec *o, int *rc)
{
    /* escape: optional leading U+2581, every ' ' -> U+2581 */
    size_t spaces = 0;
    for (size_t i = 0; i < rawn; i++)
        spaces += raw[i] == ' ';
    prefix = prefix && t->add_space_prefix;
    const size_t n = rawn + 2 * spaces + (prefix ? 3 : 0);
    char *text = malloc(n ? n : 1);
    if (!text) {
        *rc = -1;
        return;
    }
    size_t k = 0;
    if (prefix) {
        memcpy(text, "\xE2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < rawn; i++) {
        if (raw[i] == ' ') {
            memcpy(text + k, "\xE2\x96\x81", 3);
            k += 3;
        } else
            text[k++] = raw[i];
    }
    merge_ctx c = {.t = t};
    if (merge_run(&c, text, n)) {
        *rc = -1;
    } else if (c.n_sym) {
        for (int32_t i = 0; i >= 0; i = c.s[i].next) {
            const sym *s = &c.s[i];
            const int32_t id = apr_strmap_get(&t->vocab, text + s->off, s->n);
            if (id >= 0)
                ids_push(o, id);
            else
                spm_bytes(t, text + s->off, s->n, o);
        }
    }
    merge_ctx_free(&c);
    free(text);
}

/* ---------------------------------------------------------------- BPE pre-tokenizer */

typedef struct cpts {
    uint32_t *cp;
    size_t *off;   /* byte offset of each code point; off[n] = byte length */
    size_t n;
} cpts;

/* Piece ends (code point indices) of the llama3/qwen2 pattern (max_digits 3
 * or 1) over cp[0, n). Returns the number of pieces written to ends. */
static size_t split_llama3(const uint32_t *cp, size_t n, size_t max_digits, bool marks, size_t *ends)
{
    size_t ne = 0, prev_end = 0;
#define CPT(p) ((p) < n ? cp[p] : 0xFFFFFFFFu)
#define IN(p) ((p) < n)
#define LET(p) (IN(p) && (is_letter(cp[p]) || (marks && is_mark(cp[p]))))
#define NUM(p) (IN(p) && is_number(cp[p]))
#define WS(p) (IN(p) && is_space(cp[p]))
#define ADD(e) do { if ((e) > prev_end) ends[ne++] = (e); prev_end = (e); } while (0)
    for (size_t pos = 0; pos < n;) {
        const uint32_t c = cp[pos];
        /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
        if (c == '\'' && pos + 1 < n) {
            uint32_t c1 = CPT(pos + 1);
            if (c1 < 128)
                c1 = (uint32_t)(c1 >= 'A' && c1 <= 'Z' ? c1 + 32 : c1);
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                ADD(pos + 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < n) {
                uint32_t c2 = CPT(pos + 2);
                if (c2 < 128)
                    c2 = (uint32_t)(c2 >= 'A' && c2 <= 'Z' ? c2 + 32 : c2);
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                    ADD(pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || is_number(c)) && (LET(pos) || LET(pos + 1))) {
            pos++;
            while (LET(pos))
                pos++;
            ADD(pos);
            continue;
        }
        /* \p{N}{1,max_digits} */
        if (is_number(c)) {
            size_t ini = pos;
            while (NUM(pos)) {
                if (++pos - ini >= max_digits) {
                    ADD(pos);
                    ini = pos;
                }
            }
            ADD(pos);
            continue;
        }
        /* ' '?[^\s\p{L}\p{N}]+[\r\n]* */
        {
            const size_t q = c == ' ' ? pos + 1 : pos;
            if (IN(q) && !WS(q) && !LET(q) && !NUM(q)) {
                pos = q;
                while (IN(pos) && !WS(pos) && !LET(pos) && !NUM(pos))
                    pos++;
                while (CPT(pos) == '\r' || CPT(pos) == '\n')
                    pos++;
                ADD(pos);
                continue;
            }
        }
        size_t nws = 0, last_rn = 0;
        while (WS(pos + nws)) {
            const uint32_t c2 = cp[pos + nws];
            if (c2 == '\r' || c2 == '\n')
                last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn) { /* \s*[\r\n]+ */
            pos = last_rn;
            ADD(pos);
            continue;
        }
        if (nws > 1 && IN(pos + nws)) { /* \s+(?!\S) */
            pos += nws - 1;
            ADD(pos);
            continue;
        }
        if (nws > 0) { /* \s+ */
            pos += nws;
            ADD(pos);
            continue;
        }
        pos++;
        ADD(pos);
    }
    return ne;
}

/* GPT-2's pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t split_gpt2(const uint32_t *cp, size_t n, size_t *ends)
{
    const bool marks = false; /* LET() is \p{L} alone here */
    size_t ne = 0, prev_end = 0;
    for (size_t pos = 0; pos < n;) {
        const uint32_t c = cp[pos];
        if (c == '\'' && pos + 1 < n) {
            const uint32_t c1 = cp[pos + 1], c2 = CPT(pos + 2);
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                ADD(pos + 2);
                pos += 2;
                continue;
            }
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                ADD(pos + 3);
                pos += 3;
                continue;
            }
        }
        const size_t q = c == ' ' ? pos + 1 : pos;
        if (LET(q)) {
            pos = q;
            while (LET(pos))
                pos++;
            ADD(pos);
            continue;
        }
        if (NUM(q)) {
            pos = q;
            while (NUM(pos))
                pos++;
            ADD(pos);
            continue;
        }
        if (IN(q) && !WS(q)) {
            pos = q;
            while (IN(pos) && !WS(pos) && !LET(pos) && !NUM(pos))
                pos++;
            ADD(pos);
            continue;
        }
        size_t nws = 0;
        while (WS(pos + nws))
            nws++;
        if (nws > 1 && IN(pos + nws)) {
            pos += nws - 1;
            ADD(pos);
            continue;
        }
        pos += nws ? nws : 1;
        ADD(pos);
    }
    return ne;
#undef CPT
#undef IN
#undef LET
#undef NUM
#undef WS
#undef ADD
}

/* The classes llama.cpp's std::regex fallback sees: code points below 128 as
 * themselves, the others collapsed to their category (whitespace first). */
static bool rx_space(uint32_t c)
{
    return c < 128 ? (c == ' ' || (c >= 9 && c <= 13)) : is_space(c);
}
static bool rx_letter(uint32_t c)
{
    return c < 128 ? ((c | 32) >= 'a' && (c | 32) <= 'z') : !is_space(c) && is_letter(c);
}
static bool rx_number(uint32_t c)
{
    return c < 128 ? (c >= '0' && c <= '9') : !is_space(c) && is_number(c);
}
/* \p{P}: llama.cpp's ASCII punctuation set !-#%-*,-/:-;?-@[-]_{} (not $+<=>^`|~). */
static bool rx_punct(uint32_t c)
{
    if (c < 128)
        return c > 32 && c < 127 && !rx_letter(c) && !rx_number(c) && !strchr("$+<=>^`|~", (int)c);
    return !is_space(c) && is_punct(c);
}

/* Length of the match of stage st at cp[pos] (fragment ends at n); 0: none. */
static size_t rx_match(pre_stage st, const uint32_t *cp, size_t pos, size_t n)
{
    size_t e = pos;
    switch (st) {
    case ST_NUM1:
        return rx_number(cp[pos]);
    case ST_NUMS:
        while (e < n && rx_number(cp[e]))
            e++;
        return e - pos;
    case ST_DIGIT3:
        for (; e < n && e < pos + 3 && cp[e] >= '0' && cp[e] <= '9'; e++)
            ;
        return e - pos == 3 ? 3 : 0;
    case ST_PUNCT_SYM:
    case ST_PUNCT_SYM_BT:
        while (e < n && (rx_punct(cp[e]) || (cp[e] < 128 && strchr(st == ST_PUNCT_SYM ? "$+<=>^~|" : "$+<=>^~|`",
                                                                      (int)cp[e]) && cp[e])))
            e++;
        return e - pos;
    case ST_NEWLINE:
        return cp[pos] == '\r' || cp[pos] == '\n';
    case ST_NL_RUNS:
        while (e < n && (cp[e] == '\n') == (cp[pos] == '\n'))
            e++;
        return e - pos;
    case ST_SP_LETTERS:
    case ST_SP_PUNCT: {
        bool (*cls)(uint32_t) = st == ST_SP_LETTERS ? rx_letter : rx_punct;
        if (rx_space(cp[e]) && e + 1 < n && cls(cp[e + 1]))
            e++;
        while (e < n && cls(cp[e]))
            e++;
        return e - pos;
    }
    case ST_CJK:
        while (e < n && ((cp[e] >= 0x4E00 && cp[e] <= 0x9FA5) || (cp[e] >= 0x0800 && cp[e] <= 0x4E00) ||
                         (cp[e] >= 0xAC00 && cp[e] <= 0xD7FF)))
            e++;
        return e - pos;
    default:
        return 0;
    }
}

/* Split cp[0, n) by stage st: piece ends relative to cp, written to ends. */
static size_t stage_split(pre_stage st, const uint32_t *cp, size_t n, size_t *ends)
{
    switch (st) {
    case ST_GPT2: return split_gpt2(cp, n, ends);
    case ST_LLAMA3: return split_llama3(cp, n, 3, false, ends);
    case ST_QWEN2: return split_llama3(cp, n, 1, false, ends);
    case ST_QWEN35: return split_llama3(cp, n, 1, true, ends);
    default: break;
    }
    size_t ne = 0, gap = 0;
    for (size_t pos = 0; pos < n;) {
        const size_t m = rx_match(st, cp, pos, n);
        if (!m) {
            pos++;
            continue;
        }
        if (pos > gap)
            ends[ne++] = pos; /* the unmatched text before the match stays a fragment */
        pos += m;
        ends[ne++] = pos;
        gap = pos;
    }
    if (n > gap)
        ends[ne++] = n;
    return ne;
}

/* Apply the stages in turn, each to every fragment the previous ones left.
 * ends and tmp hold n + 1 entries; returns the fragment count in ends. */
static size_t pre_split(const pre_stage *stages, const uint32_t *cp, size_t n, size_t *ends, size_t *tmp)
{
    size_t ne = 0;
    if (n)
        ends[ne++] = n;
    for (const pre_stage *st = stages; *st != ST_END; st++) {
        size_t nt = 0, start = 0;
        for (size_t i = 0; i < ne; i++) {
            const size_t k = stage_split(*st, cp + start, ends[i] - start, tmp + nt);
            for (size_t j = 0; j < k; j++)
                tmp[nt + j] += start;
            nt += k;
            start = ends[i];
        }
        memcpy(ends, tmp, nt * sizeof *ends);
        ne = nt;
    }
    return ne;
}

/* A merged piece that is no token: GPT-2 byte-level text gives one token per
 * character, raw BPE one <0xXX> token per byte; llama.cpp drops a byte that
 * has no token. */
static void bpe_fallback(const apr_tok *t, const char *p, size_t n, ids_vec *o)
{
    for (size_t j = 0; j < n;) {
        const size_t l = t->raw_bpe ? 1 : utf8_len((uint8_t)p[j]);
        const int32_t id = t->raw_bpe ? t->byte_tok[(uint8_t)p[j]] : apr_strmap_get(&t->vocab, p + j, l);
        if (id >= 0)
            ids_push(o, id);
        j += l;
    }
}

/* Whether w[0, n) is all newlines (Gemma 4 takes such a run whole when it is
 * a token: llama.cpp PR 21343). */
static bool all_newlines(const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (w[i] != '\n')
            return false;
    return true;
}

/* One pre-token's bytes -> byte-level text (raw BPE: as is) -> merges -> ids. */
static int bpe_word(const apr_tok *t, const char *w, size_t wn, merge_ctx *c, ids_vec *o)
{
    char *mapped = malloc(wn * 2 + 1);
    if (!mapped)
        return -1;
    size_t k = 0;
    if (t->raw_bpe) {
        memcpy(mapped, w, wn);
        k = wn;
    } else {
        for (size_t i = 0; i < wn; i++)
            k += utf8_put(t->byte_cp[(uint8_t)w[i]], mapped + k);
    }
    /* llama3's tokenizer takes a word that is a whole token as is */
    const bool whole_ok = t->ignore_merges || (t->raw_bpe && all_newlines(mapped, k));
    const int32_t whole = whole_ok ? apr_strmap_get(&t->vocab, mapped, k) : -1;
    if (whole >= 0) {
        ids_push(o, whole);
        free(mapped);
        return 0;
    }
    int rc = merge_run(c, mapped, k);
    if (!rc && c->n_sym) {
        for (int32_t i = 0; i >= 0; i = c->s[i].next) {
            const sym *s = &c->s[i];
            const int32_t id = apr_strmap_get(&t->vocab, mapped + s->off, s->n);
            if (id >= 0)
                ids_push(o, id);
            else
                bpe_fallback(t, mapped + s->off, s->n, o);
        }
    }
    free(mapped);
    return rc;
}

static void bpe_encode(const apr_tok *t, const char *text, size_t n, ids_vec *o, int *rc)
{
    uint32_t *cp = malloc((n + 1) * sizeof *cp);
    size_t *off = malloc((n + 1) * sizeof *off);
    size_t *ends = malloc((n + 1) * sizeof *ends), *tmp = malloc((n + 1) * sizeof *tmp);
    merge_ctx c = {.t = t};
    if (!cp || !off || !ends || !tmp) {
        *rc = -1;
        goto done;
    }
    size_t ncp = 0;
    for (size_t i = 0; i < n;) {
        size_t adv;
        off[ncp] = i;
        cp[ncp++] = utf8_next((const uint8_t *)text + i, n - i, &adv);
        i += adv;
    }
    off[ncp] = n;
    const size_t ne = pre_split(t->pre, cp, ncp, ends, tmp);
    size_t start = 0;
    for (size_t i = 0; i < ne && !*rc; i++) {
        const char *w = text + off[start];
        const size_t wn = off[ends[i]] - off[start];
        if (bpe_word(t, w, wn, &c, o))
            *rc = -1;
        start = ends[i];
    }
done:
    merge_ctx_free(&c);
    free(cp);
    free(off);
    free(ends);
    free(tmp);
}

/* Raw BPE (Gemma 4): every ' ' -> U+2581 (llama_escape_whitespace), then BPE. */
static void raw_bpe_encode(const apr_tok *t, const char *raw, size_t rawn, ids_vec *o, int *rc)
{
    size_t spaces = 0;
    for (size_t i = 0; i < rawn; i++)
        spaces += raw[i] == ' ';
    const size_t n = rawn + 2 * spaces;
    char *text = malloc(n ? n : 1);
    if (!text) {
        *rc = -1;
        return;
    }
    for (size_t i = 0, k = 0; i < rawn; i++) {
        if (raw[i] == ' ') {
            memcpy(text + k, "\xE2\x96\x81", 3);
            k += 3;
        } else
            text[k++] = raw[i];
    }
    bpe_encode(t, text, n, o, rc);
    free(text);
}

/* ---------------------------------------------------------------- API */

/* A piece of the text: raw text [off, off + len) or a special token (id >= 0). */
typedef struct frag {
    size_t off, len;
    int32_t id;
} frag;

/* llama.cpp's tokenizer_st_partition: split the text at every occurrence of
 * a special token, longest tokens first; user-defined tokens always, control
 * and unknown ones only with parse_special. *out is malloc'd. */
static int partition(const apr_tok *t, const char *text, size_t len, bool parse_special, frag **out, size_t *nout)
{
    size_t cap = 16, n = 0;
    frag *f = malloc(cap * sizeof *f);
    if (!f)
        return -1;
    f[n++] = (frag){0, len, -1};
    for (uint32_t k = 0; k < t->n_special; k++) {
        const int32_t id = t->special[k];
        if (!parse_special && tok_type(t, id) != TT_USER)
            continue;
        const apr_str *s = &t->v->tokens[id];
        for (size_t i = 0; i < n; i++) {
            if (f[i].id >= 0 || f[i].len < s->len)
                continue;
            const char *hit = memmem(text + f[i].off, f[i].len, s->s, s->len);
            if (!hit)
                continue;
            if (n + 2 > cap) {
                frag *nf = realloc(f, (cap *= 2) * sizeof *nf);
                if (!nf) {
                    free(f);
                    return -1;
                }
                f = nf;
            }
            /* f[i] -> [left] token [right]; the right part is searched next */
            const size_t at = (size_t)(hit - text), end = f[i].off + f[i].len;
            size_t lend = at, rbeg = at + s->len;
            if (t->strip[id] & STRIP_LEFT)
                while (lend > f[i].off && isspace((unsigned char)text[lend - 1]))
                    lend--;
            if (t->strip[id] & STRIP_RIGHT)
                while (rbeg < end && isspace((unsigned char)text[rbeg]))
                    rbeg++;
            const bool left = lend > f[i].off, right = rbeg < end;
            memmove(&f[i + 1 + left + right], &f[i + 1], (n - i - 1) * sizeof *f);
            n += left + right;
            size_t j = i;
            if (left)
                f[j++] = (frag){f[i].off, lend - f[i].off, -1};
            f[j++] = (frag){at, s->len, id};
            if (right)
                f[j] = (frag){rbeg, end - rbeg, -1};
            i = j - 1; /* continue with the right remainder (the loop's i++) */
        }
    }
    *out = f;
    *nout = n;
    return 0;
}

int apr_tok_encode_ex(const apr_tok *t, const char *text, bool add_special, bool parse_special, int32_t **ids,
                      size_t *n, apr_err *err)
{
    *ids = NULL;
    *n = 0;
    ids_vec o = {0};
    int rc = 0;
    if (add_special && t->add_bos) {
        if (t->v->bos_id < 0)
            return apr_err_set(err, APR_E_FORMAT, "the tokenizer adds BOS but has no BOS id");
        ids_push(&o, t->v->bos_id);
    }
    const size_t len = text ? strlen(text) : 0;
    if (len > INT32_MAX / 2) { /* symbol indexes and offsets are 32-bit (merge_run) */
        free(o.v);
        return apr_err_set(err, APR_E_ARG, "text of %zu bytes is too long to tokenize (at most 1 GiB)", len);
    }
    frag *f = NULL;
    size_t nf = 0;
    if (len && partition(t, text, len, parse_special, &f, &nf))
        rc = -1;
    bool prev_special = true; /* SentencePiece: a space prefix at the start and after each special token */
    for (size_t i = 0; i < nf && !rc; i++) {
        if (f[i].id >= 0) {
            ids_push(&o, f[i].id);
            prev_special = true;
            continue;
        }
        if (t->kind == TOK_SPM)
            spm_encode(t, text + f[i].off, f[i].len, prev_special, &o, &rc);
        else if (t->raw_bpe)
            raw_bpe_encode(t, text + f[i].off, f[i].len, &o, &rc);
        else
            bpe_encode(t, text + f[i].off, f[i].len, &o, &rc);
        prev_special = false;
    }
    free(f);
    if (!rc && add_special && t->v->add_eos && t->v->eos_id >= 0)
        ids_push(&o, t->v->eos_id);
    if (rc || o.oom) {
        free(o.v);
        return apr_err_set(err, APR_E_NOMEM, "out of memory while tokenizing");
    }
    *ids = o.v;
    *n = o.n;
    return 0;
}

int apr_tok_encode(const apr_tok *t, const char *text, bool add_special, int32_t **ids, size_t *n,
                   apr_err *err)
{
    return apr_tok_encode_ex(t, text, add_special, false, ids, n, err);
}

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n)
{
    if (at < cap)
        memcpy(buf + at, s, n < cap - at ? n : cap - at);
    return at + n;
}

/* Raw BPE (llama.cpp's token_to_piece with escape_whitespaces): <0xXX> is
 * its byte, U+2581 a space, everything else as is. */
static size_t decode_raw(const apr_str *s, int32_t type, char *buf, size_t cap)
{
    unsigned b;
    char tail;
    if (type == TT_BYTE && s->len == 6 && sscanf(s->s, "<0x%2X%c", &b, &tail) == 2 && tail == '>') {
        const char c = (char)b;
        return put(buf, cap, 0, &c, 1);
    }
    size_t w = 0;
    for (size_t i = 0; i < s->len;) {
        const bool sp = i + 3 <= s->len && !memcmp(s->s + i, "\xE2\x96\x81", 3);
        w = put(buf, cap, w, sp ? " " : s->s + i, 1);
        i += sp ? 3 : 1;
    }
    return w;
}

size_t apr_tok_decode(const apr_tok *t, int32_t prev, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || (uint32_t)id >= t->v->n_tokens)
        return 0;
    const apr_str *s = &t->v->tokens[id];
    const int32_t type = tok_type(t, id);
    size_t w = 0;
    if (type == TT_CONTROL || type == TT_UNUSED)
        return 0;
    if (t->kind == TOK_SPM) {
        if (type == TT_BYTE) {
            unsigned b;
            char tail;
            if (s->len == 6 && sscanf(s->s, "<0x%2X%c", &b, &tail) == 2 && tail == '>') {
                const char c = (char)b;
                return put(buf, cap, 0, &c, 1);
            }
            return put(buf, cap, 0, s->s, s->len);
        }
        if (type == TT_UNKNOWN)
            return put(buf, cap, 0, "\xE2\x96\x85", 3);
        if (type == TT_USER)
            return put(buf, cap, 0, s->s, s->len);
        /* SentencePiece drops the prefix space of the first piece of a text */
        const bool strip = prev != APR_TOK_CONTINUE &&
                           (prev < 0 || (uint32_t)prev >= t->v->n_tokens || tok_type(t, prev) == TT_CONTROL);
        bool first = true;
        for (size_t i = 0; i < s->len;) {
            if (i + 3 <= s->len && !memcmp(s->s + i, "\xE2\x96\x81", 3)) {
                if (!(first && strip && t->add_space_prefix))
                    w = put(buf, cap, w, " ", 1);
                i += 3;
            } else {
                w = put(buf, cap, w, s->s + i, 1);
                i++;
            }
            first = false;
        }
        return w;
    }
    if (type == TT_USER)
        return put(buf, cap, 0, s->s, s->len);
    if (t->raw_bpe)
        return decode_raw(s, type, buf, cap);
    /* byte-level: map each code point back to its byte */
    for (size_t i = 0; i < s->len;) {
        size_t adv;
        const uint32_t c = utf8_next((const uint8_t *)s->s + i, s->len - i, &adv);
        if (c < 324 && t->cp_byte[c] >= 0) {
            const char b = (char)t->cp_byte[c];
            w = put(buf, cap, w, &b, 1);
        } else {
            w = put(buf, cap, w, s->s + i, adv); /* not byte-level: copy as is */
        }
        i += adv;
    }
    return w;
}
