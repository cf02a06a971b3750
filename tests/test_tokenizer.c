/* test_tokenizer.c - SentencePiece on the 32000-token LLaMA vocab fixture
 * (expected ids: llama.cpp's own test vectors, models/ggml-vocab-llama-spm.gguf.inp
 * / .out, tokenized without BOS), decode round trips, BOS handling, the
 * stories260K tokenizer, and byte-level BPE on an in-memory vocab: byte
 * mapping, merge order, the qwen2 / llama3 / gpt2 pre-tokenizer splits
 * (expected splits computed with Python's `regex` module on the patterns). */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

#define SPM_VOCAB "fixtures/ggml-vocab-llama-spm.gguf"

typedef struct spm_case {
    const char *text;
    const char *ids; /* space-separated */
} spm_case;

static const spm_case SPM_CASES[] = {
    {"ied 4 \xc2""\xbd"" months",
     "474 287 29871 29946 29871 30226 7378"},
    {"F\xc3""\xbc""hrer",
     "383 4000 261"},
    {"",
     ""},
    {" ",
     "259"},
    {"  ",
     "1678"},
    {"   ",
     "268"},
    {"\t",
     "29871 12"},
    {"\n",
     "29871 13"},
    {"\n\n",
     "29871 13 13"},
    {"\n\n\n",
     "29871 13 13 13"},
    {"\t\n",
     "29871 12 13"},
    {"Hello world",
     "15043 3186"},
    {" Hello world",
     "29871 15043 3186"},
    {"Hello World",
     "15043 2787"},
    {" Hello World",
     "29871 15043 2787"},
    {" Hello World!",
     "29871 15043 2787 29991"},
    {"Hello, world!",
     "15043 29892 3186 29991"},
    {" Hello, world!",
     "29871 15043 29892 3186 29991"},
    {" this is \xf0""\x9f""\xa6""\x99"".cpp",
     "29871 445 338 29871 243 162 169 156 29889 8223"},
    {"w048 7tuijk dsdfhu",
     "281 29900 29946 29947 29871 29955 9161 13535 18031 2176 6905"},
    {"\xd0""\xbd""\xd0""\xb5""\xd1""\x89""\xd0""\xbe"" \xd0""\xbd""\xd0""\xb0"" \xd0""\x91""\xd1""\x8a""\xd0""\xbb""\xd0""\xb3""\xd0""\xb0""\xd1""\x80""\xd1""\x81""\xd0""\xba""\xd0""\xb8""",
     "1538 4851 665 1386 29713 1305"},
    {"\xe1""\x9e""\x80""\xe1""\x9e""\xb6""\xe1""\x9e""\x93""\xe1""\x9f""\x8b""\xe1""\x9e""\x8f""\xe1""\x9f""\x82""\xe1""\x9e""\x96""\xe1""\x9e""\xb7""\xe1""\x9e""\x9f""\xe1""\x9f""\x81""\xe1""\x9e""\x9f""\xe1""\x9e""\xa2""\xe1""\x9e""\xb6""\xe1""\x9e""\x85""\xe1""\x9e""\x81""\xe1""\x9e""\x9b""\xe1""\x9e""\x85""\xe1""\x9f""\x81""\xe1""\x9e""\x89""",
     "29871 31849 31324 31934 228 162 142 228 161 146 228 162 133 228 161 153 228 161 186 31708 228 162 132 31708 228 161 165 31324 228 161 136 228 161 132 228 161 158 228 161 136 228 162 132 228 161 140"},
    {"\xf0""\x9f""\x9a""\x80"" (normal) \xf0""\x9f""\x98""\xb6""\xe2""\x80""\x8d""\xf0""\x9f""\x8c""\xab""\xef""\xb8""\x8f"" (multiple emojis concatenated) \xe2""\x9c""\x85"" (only emoji that has its own token)",
     "29871 243 162 157 131 313 8945 29897 29871 243 162 155 185 30722 243 162 143 174 30598 313 20787 953 3848 275 16125 630 29897 29871 31681 313 6194 953 29877 2397 393 756 967 1914 5993 29897"},
    {"Hello",
     "15043"},
    {" Hello",
     "29871 15043"},
    {"  Hello",
     "259 15043"},
    {"   Hello",
     "1678 15043"},
    {"    Hello",
     "268 15043"},
    {"    Hello\n    Hello",
     "268 15043 13 1678 15043"},
    {" (",
     "29871 313"},
    {"\n =",
     "29871 13 353"},
    {"' era",
     "525 3152"},
    {"Hello, y'all! How are you \xf0""\x9f""\x98""\x81"" ?\xe6""\x88""\x91""\xe6""\x83""\xb3""\xe5""\x9c""\xa8""apple\xe5""\xb7""\xa5""\xe4""\xbd""\x9c""1314151\xe5""\xa4""\xa9""\xef""\xbd""\x9e""",
     "15043 29892 343 29915 497 29991 1128 526 366 29871 243 162 155 132 1577 30672 31522 30505 11548 31041 30732 29896 29941 29896 29946 29896 29945 29896 30408 30739"},
    {"3",
     "29871 29941"},
    {"33",
     "29871 29941 29941"},
    {"333",
     "29871 29941 29941 29941"},
    {"3333",
     "29871 29941 29941 29941 29941"},
    {"33333",
     "29871 29941 29941 29941 29941 29941"},
    {"333333",
     "29871 29941 29941 29941 29941 29941 29941"},
    {"3333333",
     "29871 29941 29941 29941 29941 29941 29941 29941"},
    {"33333333",
     "29871 29941 29941 29941 29941 29941 29941 29941 29941"},
    {"333333333",
     "29871 29941 29941 29941 29941 29941 29941 29941 29941 29941"},
    {"\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\xf0""\x9f""\x9a""\x80"" (normal) \xf0""\x9f""\x98""\xb6""\xe2""\x80""\x8d""\xf0""\x9f""\x8c""\xab""\xef""\xb8""\x8f"" (multiple emojis concatenated) \xe2""\x9c""\x85"" \xf0""\x9f""\xa6""\x99""\xf0""\x9f""\xa6""\x99"" 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \xe1""\x9e""\x80""\xe1""\x9e""\xb6""\xe1""\x9e""\x93""\xe1""\x9f""\x8b""\xe1""\x9e""\x8f""\xe1""\x9f""\x82""\xe1""\x9e""\x96""\xe1""\x9e""\xb7""\xe1""\x9e""\x9f""\xe1""\x9f""\x81""\xe1""\x9e""\x9f""\xe1""\x9e""\xa2""\xe1""\x9e""\xb6""\xe1""\x9e""\x85""\xf0""\x9f""\x98""\x81"" ?\xe6""\x88""\x91""\xe6""\x83""\xb3""\xe5""\x9c""\xa8""apple\xe5""\xb7""\xa5""\xe4""\xbd""\x9c""1314151\xe5""\xa4""\xa9""\xef""\xbd""\x9e"" ------======= \xd0""\xbd""\xd0""\xb5""\xd1""\x89""\xd0""\xbe"" \xd0""\xbd""\xd0""\xb0"" \xd0""\x91""\xd1""\x8a""\xd0""\xbb""\xd0""\xb3""\xd0""\xb0""\xd1""\x80""\xd1""\x81""\xd0""\xba""\xd0""\xb8"" ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
     "29871 13 29871 13 13 29871 13 13 13 29871 12 29871 12 12 29871 12 13 259 13 1678 13 268 13 418 13 243 162 157 131 313 8945 29897 29871 243 162 155 185 30722 243 162 143 174 30598 313 20787 953 3848 275 16125 630 29897 29871 31681 29871 243 162 169 156 243 162 169 156 29871 29941 29871 29941 29941 29871 29941 29941 29941 29871 29941 29941 29941 29941 29871 29941 29941 29941 29941 29941 29871 29941 29941 29941 29941 29941 29941 29871 29941 29941 29941 29941 29941 29941 29941 29871 29941 29941 29941 29941 29941 29941 29941 29941 29871 29941 29889 29941 29871 29941 636 29941 29871 29941 856 29941 29871 31849 31324 31934 228 162 142 228 161 146 228 162 133 228 161 153 228 161 186 31708 228 162 132 31708 228 161 165 31324 228 161 136 243 162 155 132 1577 30672 31522 30505 11548 31041 30732 29896 29941 29896 29946 29896 29945 29896 30408 30739 448 23648 2751 25512 1538 4851 665 1386 29713 1305 14550 4907 11120 16159 16159 16159 15945 15945 3045 636 6824 6824 6824 8773 8773 8773 306 29915 345 1063 525 29873 1025 540 29915 29879 727 29892 525 1525 366 1854 29973 525 29924 451 1854 306 29915 645 1207 372 29892 525 29928 366 763 777 23429 29973 1334 29915 29963 29872 263 29915 29880 29931"},
};

static size_t parse_ids(const char *s, int32_t *out, size_t cap)
{
    size_t n = 0;
    char *end;
    for (;;) {
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        assert_true(n < cap);
        out[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

static apr_model *open_model(const char *path)
{
    apr_err err = {0};
    apr_model *m = NULL;
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("open %s: %s", path, err.msg);
    return m;
}

static char *decode_all(const apr_tok *t, const int32_t *ids, size_t n, int32_t first_prev)
{
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        const int32_t prev = i ? ids[i - 1] : first_prev;
        size_t need = apr_tok_decode(t, prev, ids[i], NULL, 0);
        if (len + need + 1 > cap) {
            cap = (len + need + 1) * 2;
            s = realloc(s, cap);
        }
        assert_int_equal(apr_tok_decode(t, prev, ids[i], s + len, cap - len), need);
        len += need;
    }
    s[len] = 0;
    return s;
}

static void test_spm_llama_vectors(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, SPM_VOCAB);
    apr_model *m = open_model(path);
    apr_err err = {0};
    apr_tok *t = NULL;
    if (apr_tok_load(&t, m, &err))
        fail_msg("tok: %s", err.msg);
    int failures = 0;
    for (size_t c = 0; c < sizeof SPM_CASES / sizeof *SPM_CASES; c++) {
        int32_t want[1024];
        const size_t nw = parse_ids(SPM_CASES[c].ids, want, 1024);
        int32_t *ids;
        size_t n;
        assert_int_equal(apr_tok_encode(t, SPM_CASES[c].text, false, &ids, &n, &err), 0);
        if (n != nw || (n && memcmp(ids, want, n * sizeof *ids))) {
            print_message("case %zu '%s': got %zu ids, want %zu\n", c, SPM_CASES[c].text, n, nw);
            for (size_t i = 0; i < n && i < 24; i++)
                print_message(" %d%s", ids[i], i < nw && ids[i] == want[i] ? "" : "*");
            print_message("\n");
            failures++;
        }
        /* decode gives the text back (SentencePiece drops the added prefix space) */
        char *back = decode_all(t, ids, n, -1);
        if (strcmp(back, SPM_CASES[c].text)) {
            print_message("case %zu: decode '%s' != '%s'\n", c, back, SPM_CASES[c].text);
            failures++;
        }
        free(back);
        free(ids);
    }
    assert_int_equal(failures, 0);
    apr_tok_free(t);
    apr_model_free(m);
}

static void test_spm_bos_and_pieces(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, SPM_VOCAB);
    apr_model *m = open_model(path);
    apr_err err = {0};
    apr_tok *t = NULL;
    assert_int_equal(apr_tok_load(&t, m, &err), 0);
    assert_int_equal(apr_tok_bos(t), 1);
    assert_int_equal(apr_tok_eos(t), 2);
    int32_t *ids;
    size_t n;
    assert_int_equal(apr_tok_encode(t, "Hello world", true, &ids, &n, &err), 0);
    assert_int_equal(n, 3); /* the well-known llama-2 result */
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 15043);
    assert_int_equal(ids[2], 3186);
    char buf[32];
    /* after BOS the prefix space goes; as a continuation it stays */
    size_t k = apr_tok_decode(t, 1, 15043, buf, sizeof buf);
    assert_int_equal(k, 5);
    assert_memory_equal(buf, "Hello", 5);
    k = apr_tok_decode(t, APR_TOK_CONTINUE, 15043, buf, sizeof buf);
    assert_int_equal(k, 6);
    assert_memory_equal(buf, " Hello", 6);
    assert_int_equal(apr_tok_decode(t, 15043, 3186, buf, sizeof buf), 6); /* " world" */
    assert_int_equal(apr_tok_decode(t, -1, 1, buf, sizeof buf), 0);         /* BOS is control */
    assert_int_equal(apr_tok_decode(t, -1, 13, buf, sizeof buf), 1);        /* <0x0A> */
    assert_int_equal(buf[0], '\n');
    assert_int_equal(apr_tok_decode(t, -1, 15043, buf, 2), 5);              /* truncated, full length */
    assert_int_equal(apr_tok_decode(t, -1, 1 << 30, buf, sizeof buf), 0);   /* out of range */
    free(ids);
    assert_int_equal(apr_tok_encode(t, "", true, &ids, &n, &err), 0);
    assert_int_equal(n, 1);
    free(ids);
    apr_tok_free(t);
    apr_model_free(m);
}

static void test_stories_tokenizer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, "fixtures/stories260K-f32.gguf");
    apr_model *m = open_model(path);
    apr_err err = {0};
    apr_tok *t = NULL;
    assert_int_equal(apr_tok_load(&t, m, &err), 0);
    int32_t *ids;
    size_t n;
    /* 512-token vocab: words are built from pieces and bytes */
    const char *text = "Once upon a time, Lily saw a big red ball. Zebra? 42!";
    assert_int_equal(apr_tok_encode(t, text, true, &ids, &n, &err), 0);
    assert_int_equal(ids[0], 1);
    char *back = decode_all(t, ids + 1, n - 1, -1);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    apr_tok_free(t);
    apr_model_free(m);
}

/* ---------------------------------------------------------------- byte-level BPE */

/* GPT-2's byte -> code point map, for building vocab strings. */
static size_t byte_level(const char *in, char *out)
{
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        unsigned b = *p, cp;
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
            cp = b;
        else {
            unsigned n = 0;
            for (unsigned x = 0; x < b; x++)
                if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE)))
                    n++;
            cp = 256 + n;
        }
        if (cp < 0x80)
            out[k++] = (char)cp;
        else {
            out[k++] = (char)(0xC0 | (cp >> 6));
            out[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[k] = 0;
    return k;
}

/* A vocab of the 256 byte tokens, the given merged tokens and merges. */
static apr_model *bpe_model(const char *pre, const char *const *merges, size_t n_merges)
{
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    size_t nt = 256 + n_merges + 1;
    apr_str *toks = calloc(nt, sizeof *toks);
    apr_str *mer = calloc(n_merges ? n_merges : 1, sizeof *mer);
    char buf[64];
    for (int b = 0; b < 256; b++) {
        char in[2] = {(char)b, 0};
        if (b == 0) { /* byte 0 cannot ride in a C string: map it by hand (U+0100) */
            toks[b].s = strdup("\xC4\x80");
            toks[b].len = 2;
            continue;
        }
        toks[b].len = byte_level(in, buf);
        toks[b].s = strdup(buf);
    }
    for (size_t i = 0; i < n_merges; i++) {
        mer[i].s = strdup(merges[i]);
        mer[i].len = strlen(merges[i]);
        /* the merged token: the two sides without the space */
        const char *sp = strchr(merges[i], ' ');
        char joined[64];
        snprintf(joined, sizeof joined, "%.*s%s", (int)(sp - merges[i]), merges[i], sp + 1);
        toks[256 + i].s = strdup(joined);
        toks[256 + i].len = strlen(joined);
    }
    toks[nt - 1].s = strdup("<|endoftext|>");
    toks[nt - 1].len = 13;
    apr_kv kv = {.key = "tokenizer.ggml.tokens", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING,
                 .count = nt, .arr = toks};
    assert_int_equal(apr_model_set_kv(m, &kv), 0);
    apr_kv mk = {.key = "tokenizer.ggml.merges", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING,
                 .count = n_merges, .arr = mer};
    assert_int_equal(apr_model_set_kv(m, &mk), 0);
    for (size_t i = 0; i < nt; i++)
        free(toks[i].s);
    for (size_t i = 0; i < n_merges; i++)
        free(mer[i].s);
    free(toks);
    free(mer);
    assert_int_equal(apr_model_set_kv_str(m, "tokenizer.ggml.model", "gpt2"), 0);
    assert_int_equal(apr_model_set_kv_str(m, "tokenizer.ggml.pre", pre), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "tokenizer.ggml.eos_token_id", (uint32_t)(nt - 1)), 0);
    apr_err err = {0};
    if (apr_model_derive(m, &err))
        fail_msg("derive: %s", err.msg);
    assert_true(m->has_tok);
    return m;
}

/* Tokenize text and check the tokens are exactly the byte-level forms of
 * the expected pieces, in order; then decode back to the text. */
static void expect_ids_text(const apr_tok *t, const char *text, const char *const *pieces, size_t n_pieces,
                            const apr_model *m)
{
    apr_err err = {0};
    int32_t *ids;
    size_t n;
    assert_int_equal(apr_tok_encode(t, text, false, &ids, &n, &err), 0);
    /* rebuild the text from the token strings, piece by piece */
    char joined[512] = "";
    for (size_t i = 0; i < n; i++) {
        strcat(joined, m->tok.tokens[ids[i]].s);
        strcat(joined, "|");
    }
    char want[512] = "";
    for (size_t i = 0; i < n_pieces; i++) {
        char bl[128];
        byte_level(pieces[i], bl);
        strcat(want, bl);
        strcat(want, "|");
    }
    if (strcmp(joined, want))
        fail_msg("'%s': tokens %s, want %s", text, joined, want);
    char *back = decode_all(t, ids, n, -1);
    assert_string_equal(back, text);
    free(back);
    free(ids);
}

static void test_bpe_merges_and_bytes(void **state)
{
    (void)state;
    /* merges in rank order; "Ġ" is the byte-level space */
    static const char *const merges[] = {"l l", "H e", "He ll", "Hell o", "\xC4\xA0 w", "\xC4\xA0w o",
                                         "r l", "\xC4\xA0wo rl", "\xC4\xA0worl d"};
    apr_model *m = bpe_model("qwen2", merges, sizeof merges / sizeof *merges);
    apr_err err = {0};
    apr_tok *t = NULL;
    if (apr_tok_load(&t, m, &err))
        fail_msg("tok: %s", err.msg);
    static const char *const p1[] = {"Hello", " world"};
    expect_ids_text(t, "Hello world", p1, 2, m);
    /* qwen2 adds no BOS by default */
    int32_t *ids;
    size_t n;
    assert_int_equal(apr_tok_encode(t, "Hello", true, &ids, &n, &err), 0);
    assert_int_equal(n, 1);
    free(ids);
    /* bytes outside ASCII and control bytes round-trip through the byte map */
    const char *odd = "caf\xC3\xA9 \xF0\x9F\xA6\x99\t\x01\x7F end\n";
    assert_int_equal(apr_tok_encode(t, odd, false, &ids, &n, &err), 0);
    char *back = decode_all(t, ids, n, -1);
    assert_string_equal(back, odd);
    free(back);
    free(ids);
    apr_tok_free(t);
    apr_model_free(m);
}

/* A merge for every adjacent pair makes each piece one token: the tokens
 * then show the pre-tokenizer's split. */
static void test_bpe_pretokenizer_splits(void **state)
{
    (void)state;
    typedef struct split_case {
        const char *pre, *text;
        const char *pieces[24];
    } split_case;
    /* expected pieces: regex.findall(pattern, text) with Python's `regex`
     * module and llama.cpp's qwen2 / llama3 / gpt2 patterns */
    static const split_case cases[] = {
        {"qwen2", "Hello, y'all! How are you 1314 ok", {"Hello", ",", " y", "'all", "!", " How", " are", " you", " ", "1", "3", "1", "4", " ok"}},
        {"llama3", "Hello, y'all! How are you 1314 ok", {"Hello", ",", " y", "'all", "!", " How", " are", " you", " ", "131", "4", " ok"}},
        {"gpt-2", "Hello, y'all! How are you 1314 ok", {"Hello", ",", " y", "'", "all", "!", " How", " are", " you", " 1314", " ok"}},
        {"qwen2", "I'VE  been\n\n  there   now", {"I", "'VE", " ", " been", "\n\n", " ", " there", "  ", " now"}},
        {"gpt-2", "I'VE  been\n\n  there   now", {"I", "'", "VE", " ", " been", "\n\n ", " there", "  ", " now"}},
        {"qwen2", "x = (a+b);\r\n\tend  ", {"x", " =", " (", "a", "+b", ");\r\n", "\tend", "  "}},
        {"qwen2", "na\xC3\xAFve \xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE 3\xC2\xBD", {"na\xC3\xAFve", " \xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE", " ", "3", "\xC2\xBD"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        /* merges: within each expected piece, left-to-right accumulation */
        const char *merges[256];
        size_t nm = 0;
        for (size_t p = 0; cases[c].pieces[p]; p++) {
            char bl[128];
            byte_level(cases[c].pieces[p], bl);
            /* split the byte-level piece into characters */
            size_t offs[64], nch = 0;
            for (size_t i = 0; bl[i];) {
                offs[nch++] = i;
                i += ((unsigned char)bl[i] >= 0xC0) ? 2 : 1;
            }
            offs[nch] = strlen(bl);
            for (size_t k = 1; k < nch; k++) {
                char *mrg = malloc(160);
                snprintf(mrg, 160, "%.*s %.*s", (int)offs[k], bl, (int)(offs[k + 1] - offs[k]), bl + offs[k]);
                bool dup = false;
                for (size_t q = 0; q < nm && !dup; q++)
                    dup = !strcmp(merges[q], mrg);
                if (dup)
                    free(mrg);
                else
                    merges[nm++] = mrg;
            }
        }
        apr_model *m = bpe_model(cases[c].pre, merges, nm);
        apr_err err = {0};
        apr_tok *t = NULL;
        if (apr_tok_load(&t, m, &err))
            fail_msg("tok: %s", err.msg);
        size_t np = 0;
        while (cases[c].pieces[np])
            np++;
        expect_ids_text(t, cases[c].text, cases[c].pieces, np, m);
        apr_tok_free(t);
        apr_model_free(m);
        for (size_t q = 0; q < nm; q++)
            free((void *)merges[q]);
    }
    /* a pre-tokenizer name llama.cpp does not know is refused, not guessed */
    const char *mrg[] = {"a b"};
    apr_model *m = bpe_model("no-such-pre", mrg, 1);
    apr_err err = {0};
    apr_tok *t = NULL;
    assert_int_equal(apr_tok_load(&t, m, &err), APR_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "no-such-pre"));
    apr_model_free(m);
}

/* add_bos without tokenizer.ggml.add_bos_token: llama.cpp's default for the
 * pre-tokenizer, one value for the derived view (HF writer, verify, imatrix)
 * and the encoder; the KV overrides both. */
static void test_add_bos_default(void **state)
{
    (void)state;
    static const struct { const char *pre; bool bos; } cases[] = {{"llama-bpe", true}, {"qwen2", false},
                                                                  {"gpt-2", false}, {"falcon3", true}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        static const char *const merges[] = {"a b"};
        apr_model *m = bpe_model(cases[i].pre, merges, 1);
        assert_int_equal(m->tok.add_bos, cases[i].bos);
        assert_int_equal(apr_model_set_kv_u32(m, "tokenizer.ggml.bos_token_id", 256), 0);
        for (int kv = 0; kv < 2; kv++) {
            if (kv)
                assert_int_equal(apr_model_set_kv_bool(m, "tokenizer.ggml.add_bos_token", !cases[i].bos), 0);
            apr_err err = {0};
            assert_int_equal(apr_model_derive(m, &err), 0);
            bool want = kv ? !cases[i].bos : cases[i].bos;
            assert_int_equal(m->tok.add_bos, want);
            apr_tok *t = NULL;
            if (apr_tok_load(&t, m, &err))
                fail_msg("%s: %s", cases[i].pre, err.msg);
            int32_t *ids = NULL;
            size_t n = 0;
            assert_int_equal(apr_tok_encode(t, "a", true, &ids, &n, &err), 0);
            assert_int_equal(n, want ? 2 : 1);
            assert_int_equal(ids[0] == 256, want);
            free(ids);
            apr_tok_free(t);
        }
        apr_model_free(m);
    }
}

/* The tokenizer owns its data: it encodes and decodes the same after the
 * model's tokenizer KVs were replaced and the model freed. */
static void test_tok_owns_data(void **state)
{
    (void)state;
    static const char *const merges[] = {"H e", "l l", "He ll", "Hell o", "\xC4\xA0 w", "\xC4\xA0w o"};
    apr_model *m = bpe_model("qwen2", merges, sizeof merges / sizeof *merges);
    apr_err err = {0};
    apr_tok *t = NULL;
    if (apr_tok_load(&t, m, &err))
        fail_msg("tok: %s", err.msg);
    int32_t *want, *got;
    size_t nw, ng;
    assert_int_equal(apr_tok_encode(t, "Hello wo", false, &want, &nw, &err), 0);
    /* same-sized replacements, so freed blocks are likely reused */
    apr_str junk[2] = {{2, "zz"}, {3, "y y"}};
    apr_kv tk = {.key = "tokenizer.ggml.tokens", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING,
                 .count = 1, .arr = junk};
    apr_kv mk = {.key = "tokenizer.ggml.merges", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING,
                 .count = 1, .arr = junk + 1};
    assert_int_equal(apr_model_set_kv(m, &tk), 0);
    assert_int_equal(apr_model_set_kv(m, &mk), 0);
    assert_int_equal(apr_model_derive(m, &err), 0);
    apr_model_free(m);
    assert_int_equal(apr_tok_encode(t, "Hello wo", false, &got, &ng, &err), 0);
    assert_int_equal(ng, nw);
    assert_memory_equal(got, want, nw * sizeof *got);
    char *back = decode_all(t, got, ng, -1);
    assert_string_equal(back, "Hello wo");
    free(back);
    free(want);
    free(got);
    apr_tok_free(t);
}

/* Gemma 4's raw BPE: spaces become U+2581, newline runs split, merges on raw
 * UTF-8, a newline run that is a token is taken whole, other pieces fall back
 * to <0xXX>. Expected ids follow llama.cpp's llm_tokenizer_bpe_session. */
static void test_gemma4_raw_bpe(void **state)
{
    (void)state;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    enum { NT = 256 + 6 };
    apr_str toks[NT];
    char names[256][8];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = (apr_str){6, names[b]};
    }
    static const char *const extra[] = {"\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "ab", "\n\n"};
    for (int i = 0; i < 6; i++)
        toks[256 + i] = (apr_str){strlen(extra[i]), (char *)extra[i]};
    apr_str mer[2] = {{3, "a b"}, {6, "\xE2\x96\x81 ab"}};
    int32_t types[NT];
    for (int i = 0; i < NT; i++)
        types[i] = i < 256 ? 6 : 1;
    apr_kv tk = {.key = "tokenizer.ggml.tokens", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING, .count = NT,
                 .arr = toks};
    apr_kv mk = {.key = "tokenizer.ggml.merges", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING, .count = 2,
                 .arr = mer};
    apr_kv ty = {.key = "tokenizer.ggml.token_type", .type = APR_KV_ARRAY, .arr_type = APR_KV_I32, .count = NT,
                 .arr = types};
    assert_int_equal(apr_model_set_kv(m, &tk), 0);
    assert_int_equal(apr_model_set_kv(m, &mk), 0);
    assert_int_equal(apr_model_set_kv(m, &ty), 0);
    assert_int_equal(apr_model_set_kv_str(m, "tokenizer.ggml.model", "gemma4"), 0);
    assert_int_equal(apr_model_set_kv_u32(m, "tokenizer.ggml.bos_token_id", 257), 0);
    assert_int_equal(apr_model_set_kv_bool(m, "tokenizer.ggml.add_bos_token", false), 0);
    apr_err err = {0};
    assert_int_equal(apr_model_derive(m, &err), 0);
    assert_true(m->tok.add_bos); /* llama.cpp forces BOS for Gemma 4 */
    apr_tok *t = NULL;
    if (apr_tok_load(&t, m, &err))
        fail_msg("tok: %s", err.msg);
    int32_t *ids;
    size_t n;
    assert_int_equal(apr_tok_encode(t, "ab ab\n\nx", true, &ids, &n, &err), 0);
    const int32_t want[] = {257, 259, 260, 261, 'x'};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    char *back = decode_all(t, ids + 1, n - 1, -1);
    assert_string_equal(back, "ab ab\n\nx");
    free(back);
    free(ids);
    apr_tok_free(t);
    apr_model_free(m);
}

static void test_bad_tokenizers(void **state)
{
    (void)state;
    apr_err err = {0};
    apr_tok *t = NULL;
    apr_model *m = apr_model_new(APR_FMT_GGUF);
    assert_int_not_equal(apr_tok_load(&t, m, &err), 0); /* none at all */
    apr_model_free(m);
    /* BPE without merges */
    m = bpe_model("qwen2", NULL, 0);
    assert_int_not_equal(apr_tok_load(&t, m, &err), 0);
    assert_non_null(strstr(err.msg, "merges"));
    apr_model_free(m);
    /* unknown model */
    static const char *const mg[] = {"a b"};
    m = bpe_model("qwen2", mg, 1);
    assert_int_equal(apr_model_set_kv_str(m, "tokenizer.ggml.model", "wordpiece"), 0);
    assert_int_equal(apr_model_derive(m, &err), 0);
    assert_int_not_equal(apr_tok_load(&t, m, &err), 0);
    assert_non_null(strstr(err.msg, "wordpiece"));
    apr_model_free(m);
    /* a merge without a separating space */
    static const char *const bad[] = {"ab"};
    m = bpe_model("qwen2", bad, 0);
    apr_str s = {2, "ab"};
    apr_kv mk = {.key = "tokenizer.ggml.merges", .type = APR_KV_ARRAY, .arr_type = APR_KV_STRING, .count = 1, .arr = &s};
    assert_int_equal(apr_model_set_kv(m, &mk), 0);
    assert_int_equal(apr_model_derive(m, &err), 0);
    assert_int_not_equal(apr_tok_load(&t, m, &err), 0);
    apr_model_free(m);
    (void)bad;
}

#define LLAMA3_PRE                                                                                            \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"                        \
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "                          \
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"                       \
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}"

/* tokenizer.json's pre_tokenizer -> tokenizer.ggml.pre by structure; an
 * unrecognized one is refused rather than written as "default". */
static void test_hf_pre_tokenizer_detection(void **state)
{
    (void)state;
    static const struct {
        const char *pre_tokenizer, *want; /* want NULL: refused */
        bool ignore_merges;               /* model.ignore_merges */
    } cases[] = {
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "gpt-2", false},
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true}", "gpt-2", false},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{L}\\\\p{M}]+|\\\\p{N}| "
         "?[^\\\\s\\\\p{L}\\\\p{M}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
         "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}",
         "qwen35", false},
        /* Llama 3's regex: llama-bpe when merges are ignored, smaug-bpe otherwise */
        {LLAMA3_PRE, "llama-bpe", true},
        {LLAMA3_PRE, "smaug-bpe", false},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
         "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]}",
         "starcoder", false},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Punctuation\",\"behavior\":\"Contiguous\"},"
         "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
         "{\"type\":\"Digits\",\"individual_digits\":false},{\"type\":\"Split\",\"pattern\":"
         "{\"Regex\":\"[0-9][0-9][0-9]\"},\"behavior\":\"Isolated\",\"invert\":false}]}",
         "falcon", false},
        /* starcoder's steps in another order, or digits not one by one */
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\",\"use_regex\":true},"
         "{\"type\":\"Digits\",\"individual_digits\":true}]}", NULL, false},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":false},"
         "{\"type\":\"ByteLevel\",\"use_regex\":true}]}", NULL, false},
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", NULL, false},
        {"{\"type\":\"Punctuation\",\"behavior\":\"Isolated\"}", NULL, false},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[]}", NULL, false},
        {"{\"type\":\"Whitespace\"}", NULL, false},
        {"null", NULL, false},
        {"{\"type\":\"ByteLevel\",\"use_regex\":false}", NULL, false},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char text[4096];
        snprintf(text, sizeof text,
                 "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"],"
                 "\"ignore_merges\":%s},\"pre_tokenizer\":%s}",
                 cases[c].ignore_merges ? "true" : "false", cases[c].pre_tokenizer);
        json_error_t je;
        json_t *tok = json_loads(text, 0, &je);
        if (!tok)
            fail_msg("case %zu: %s", c, je.text);
        apr_model *m = apr_model_new(APR_FMT_SAFETENSORS);
        apr_err err = {0};
        int rc = apr_tok_hf_to_kvs(m, &(apr_tok_hf){.tokenizer = tok}, &err);
        if (cases[c].want) {
            if (rc)
                fail_msg("case %zu: %s", c, err.msg);
            assert_string_equal(apr_kv_get_str(m, "tokenizer.ggml.pre"), cases[c].want);
        } else {
            assert_int_equal(rc, APR_E_UNSUPPORTED);
            assert_non_null(strstr(err.msg, "pre-tokenizer not recognized"));
        }
        apr_model_free(m);
        json_decref(tok);
    }
}

/* GGUF -> tokenizer.json -> GGUF keeps the pre-tokenizer: each name is
 * written as the tokenizer.json structure detect_pre reads back as it, or
 * as a name llama.cpp tokenizes alike; a name with no structure is refused
 * (it used to be written as GPT-2's ByteLevel). */
static void test_hf_pre_tokenizer_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *pre, *want; /* want NULL: refused */
    } cases[] = {
        {"gpt-2", "gpt-2"}, {"mpt", "gpt-2"}, {"olmo", "gpt-2"}, {"llama-bpe", "llama-bpe"}, {"llama3", "llama-bpe"},
        {"smaug-bpe", "smaug-bpe"}, {"dbrx", "smaug-bpe"}, {"qwen2", "qwen2"}, {"stablelm2", "qwen2"},
        {"qwen35", "qwen35"}, {"starcoder", "starcoder"}, {"command-r", "starcoder"}, {"refact", "starcoder"},
        {"falcon", "falcon"}, {"deepseek-coder", "deepseek-coder"}, {"deepseek-llm", "deepseek-llm"},
        {"default", NULL}, {"jais-2", NULL},
    };
    static const char *const merges[] = {"a b"};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        apr_model *m = bpe_model(cases[c].pre, merges, 1);
        json_t *tj = NULL, *tc = NULL;
        apr_spm *spm = NULL;
        apr_err err = {0};
        int rc = apr_tok_hf_from_model(m, &tj, &tc, &spm, &err);
        if (!cases[c].want) {
            assert_int_equal(rc, APR_E_UNSUPPORTED);
            assert_non_null(strstr(err.msg, cases[c].pre));
            assert_null(tj);
            apr_model_free(m);
            continue;
        }
        if (rc)
            fail_msg("%s: %s", cases[c].pre, err.msg);
        assert_null(spm);
        apr_model *back = apr_model_new(APR_FMT_SAFETENSORS);
        if (apr_tok_hf_to_kvs(back, &(apr_tok_hf){.tokenizer = tj, .tokenizer_config = tc}, &err))
            fail_msg("%s: read back: %s", cases[c].pre, err.msg);
        const char *got = apr_kv_get_str(back, "tokenizer.ggml.pre");
        if (!got || strcmp(got, cases[c].want))
            fail_msg("%s: read back as %s, want %s", cases[c].pre, got ? got : "(none)", cases[c].want);
        apr_model_free(back);
        json_decref(tj);
        json_decref(tc);
        apr_model_free(m);
    }
}

/* tokenizer.json files the `tokenizers` package trains with each family's
 * pre-tokenizer -> tokenizer.ggml.pre and ids, against llama.cpp's converter
 * and tokenizer; unrecognized ones refused by both
 * (tests/peer/hf_pre_tokenizer_peer.py). */
static void test_hf_pre_tokenizer_peer(void **state)
{
    (void)state;
    tu_tinycoder_peer("hf-pre-peer", "hf_pre_tokenizer_peer.py", "tokenizers, transformers, llama_cpp", "tokenizers transformers llama-cpp-python");
}

/* The same structures on the real vocabularies llama.cpp's converter named
 * (models/ggml-vocab-*.gguf): rebuilt as tokenizer.json, they hash to the
 * chkhsh llama.cpp names as the file's pre, and apr's GGUF of them gives
 * llama.cpp the file's .out ids (tests/peer/hf_pre_chkhsh_peer.py). */
static void test_hf_pre_chkhsh_peer(void **state)
{
    (void)state;
    tu_tinycoder_peer("hf-chkhsh-peer", "hf_pre_chkhsh_peer.py", "tokenizers, transformers, llama_cpp", "tokenizers transformers llama-cpp-python");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_llama_vectors),
        cmocka_unit_test(test_add_bos_default),
        cmocka_unit_test(test_spm_bos_and_pieces),
        cmocka_unit_test(test_stories_tokenizer),
        cmocka_unit_test(test_bpe_merges_and_bytes),
        cmocka_unit_test(test_bpe_pretokenizer_splits),
        cmocka_unit_test(test_bad_tokenizers),
        cmocka_unit_test(test_tok_owns_data),
        cmocka_unit_test(test_gemma4_raw_bpe),
        cmocka_unit_test(test_hf_pre_tokenizer_detection),
        cmocka_unit_test(test_hf_pre_tokenizer_round_trip),
        cmocka_unit_test(test_hf_pre_tokenizer_peer),
        cmocka_unit_test(test_hf_pre_chkhsh_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
