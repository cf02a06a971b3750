/* tok.h - the public header of libtok (aprtok), everything tokenizer:
 *   - the SentencePiece tokenizer.model (ModelProto protobuf) codec,
 *   - the HF tokenizer files <-> GGUF tokenizer.* KVs mapping (what
 *     convert_hf_to_gguf.py writes; formats/hfmeta.c calls it for the
 *     safetensors reader and writer),
 *   - the encoder / decoder (SentencePiece "llama", byte-level BPE "gpt2",
 *     Gemma 4's raw BPE "gemma4")
 *     that run, verify and convert use.
 *
 * SentencePiece: only the subset llama.cpp's converter and a LLaMA tokenizer.model use is
 * kept: the pieces (string, score, type), a few TrainerSpec fields and the
 * NormalizerSpec flags; every other field is skipped by its wire type. */
#ifndef APR_TOK_H
#define APR_TOK_H

#include <jansson.h>

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ SentencePiece tokenizer.model */

/* SentencePiece.Type; the same numbers as GGUF's tokenizer.ggml.token_type. */
enum {
    APR_SPM_NORMAL = 1,
    APR_SPM_UNKNOWN = 2,
    APR_SPM_CONTROL = 3,
    APR_SPM_USER_DEFINED = 4,
    APR_SPM_UNUSED = 5,
    APR_SPM_BYTE = 6,
};

/* TrainerSpec.ModelType */
enum { APR_SPM_UNIGRAM = 1, APR_SPM_BPE = 2, APR_SPM_WORD = 3, APR_SPM_CHAR = 4 };

/* More pieces than this is a hostile file, not a vocabulary (GGUF readers
 * use the same bound for token counts). */
#define APR_SPM_MAX_PIECES (1u << 24)

typedef struct apr_spm {
    uint32_t n_pieces;
    apr_str *pieces;   /* NUL-terminated copies */
    float *scores;
    int32_t *types;    /* APR_SPM_* */
    /* TrainerSpec, with the proto's defaults when a field is absent */
    int32_t model_type, vocab_size;
    bool byte_fallback;
    int32_t unk_id, bos_id, eos_id, pad_id;
    apr_str unk_piece, bos_piece, eos_piece, pad_piece;
    /* NormalizerSpec */
    apr_str norm_name;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} apr_spm;

void apr_spm_free(apr_spm *s);   /* the contents */
void apr_spm_destroy(apr_spm *s); /* the contents and the heap object; NULL is fine */

/* Parse a serialized ModelProto. Every varint and length is checked against
 * the buffer; a file that sentencepiece itself refuses to load (no pieces,
 * an empty or duplicate piece, no or two <unk>, byte pieces that do not fit
 * byte_fallback) is an APR_E_FORMAT error as well. what names the input in
 * messages. */
int apr_spm_parse(apr_spm *out, const uint8_t *buf, size_t n, const char *what, apr_err *err);

/* Read and parse a file; *present = false (and 0) when it does not exist. */
int apr_spm_load(apr_spm *out, const char *path, bool *present, apr_err *err);

/* Serialize (malloc'd bytes). Fields are written in field-number order. */
int apr_spm_serialize(const apr_spm *s, uint8_t **out, size_t *n, apr_err *err);

/* The tokenizer.model of a derived model's SentencePiece ("llama") vocab:
 * pieces/scores/types from the token arrays, a LLaMA TrainerSpec (BPE,
 * vocab_size, unk/bos/eos/pad ids and pieces, byte_fallback when byte pieces
 * exist) and LLaMA's NormalizerSpec. Returns 1 and leaves *out empty, with
 * the reason in why, when sentencepiece could not load such a file (a
 * duplicate or empty token, no unknown token, malformed byte tokens): the
 * vocabulary then travels in tokenizer.json alone. */
int apr_spm_from_model(const apr_model *m, apr_spm *out, char *why, size_t why_len, apr_err *err);

/* ================================================================ HF files <-> tokenizer.* KVs */

/* The HF tokenizer files of a model directory, parsed; any may be NULL. */
typedef struct apr_tok_hf {
    const json_t *tokenizer;        /* tokenizer.json */
    const json_t *tokenizer_config; /* tokenizer_config.json */
    const json_t *config;           /* config.json: vocab_size, {bos,eos,...}_token_id */
    const json_t *gen_config;       /* generation_config.json: bos/eos ids, last resort */
    const json_t *added_tokens;     /* added_tokens.json (SentencePiece vocabs) */
    /* What chat_template.jinja (a string; with additional_chat_templates/
     * NAME.jinja beside it, a [{"name", "template"}] list whose first entry
     * is "default"), or else chat_template.json's "chat_template" value,
     * gives; tokenizer_config.json's own "chat_template" wins over it. */
    const json_t *chat_template_alt;
    const apr_spm *spm;             /* tokenizer.model; when present it wins over tokenizer.json */
} apr_tok_hf;

/* Set m's tokenizer.* KVs from the files as llama.cpp's converter would.
 * No tokenizer file: nothing is set. */
int apr_tok_hf_to_kvs(apr_model *m, const apr_tok_hf *f, apr_err *err);
/* Whether m's vocabulary ("llama" / "gpt2") has an HF tokenizer.json form. */
bool apr_tok_hf_expressible(const apr_model *m);
/* Build tokenizer.json / tokenizer_config.json (and, for a SentencePiece
 * vocab sentencepiece can load, a tokenizer.model: *spm, else NULL) from m's
 * derived tokenizer. All NULL when !apr_tok_hf_expressible(m). */
int apr_tok_hf_from_model(const apr_model *m, json_t **tokenizer, json_t **tokenizer_config, apr_spm **spm,
                          apr_err *err);

/* ================================================================ encoder / decoder */

/* A tokenizer built from a model's tokenizer.* metadata ("llama", "gpt2",
 * "gemma4"). It owns copies of the token texts, scores, types and merges: the
 * model may change its KVs or be freed while the tokenizer lives. */
typedef struct apr_tok apr_tok;
int apr_tok_load(apr_tok **out, const apr_model *m, apr_err *err);
void apr_tok_free(apr_tok *t);
/* Encode text; *ids is malloc'd. add_bos: prepend BOS when the model says so
 * (tokenizer.ggml.add_bos_token, default true for llama SPM). */
int apr_tok_encode(const apr_tok *t, const char *text, bool add_special, int32_t **ids, size_t *n,
                   apr_err *err);
/* The same with llama.cpp's parse_special: control and unknown tokens written
 * in the text (e.g. "<|im_start|>") become those tokens instead of plain
 * text. User-defined tokens are matched either way, as llama.cpp does. */
int apr_tok_encode_ex(const apr_tok *t, const char *text, bool add_special, bool parse_special, int32_t **ids,
                      size_t *n, apr_err *err);
/* Decoded text of one token: writes at most cap bytes to buf (no NUL) and
 * returns the piece's full length. prev is the previous token id: -1 (or a
 * control token such as BOS) marks the start of a text, where SentencePiece
 * drops the piece's prefix space; APR_TOK_CONTINUE never drops it (what
 * llama.cpp's token_to_piece prints). Control tokens decode to nothing. */
#define APR_TOK_CONTINUE (-2)
size_t apr_tok_decode(const apr_tok *t, int32_t prev, int32_t id, char *buf, size_t cap);
int32_t apr_tok_bos(const apr_tok *t);
int32_t apr_tok_eos(const apr_tok *t);

/* ================================================================ chat templates (libtok/jinja.c) */

/* A chat template parsed with the subset of Jinja2 that HF chat templates use,
 * rendered as transformers' apply_chat_template renders it (trim_blocks,
 * lstrip_blocks, loop controls, its tojson / raise_exception / strftime_now /
 * namespace globals). A construct outside the subset (a statement, filter,
 * test, method or argument not implemented) is an APR_E_FORMAT error naming
 * it and its line and column, at parse time where Jinja itself would
 * refuse it then, else when it is reached: never a guessed output. */
typedef struct apr_tmpl apr_tmpl;
int apr_tmpl_parse(apr_tmpl **out, const char *src, size_t len, apr_err *err);
void apr_tmpl_free(apr_tmpl *t);
/* Render with the variables of the JSON object vars (messages,
 * add_generation_prompt, bos_token, ...). now: the time strftime_now formats
 * (seconds since the epoch, as UTC), 0 for the current local time. *out is
 * malloc'd and NUL-terminated; *len (may be NULL) its length. A template's
 * raise_exception() is an APR_E_FORMAT error carrying its message. */
int apr_tmpl_render(const apr_tmpl *t, const json_t *vars, int64_t now, char **out, size_t *len, apr_err *err);

/* A model's chat template (libtok/chat.c): tokenizer.chat_template, or with
 * name tokenizer.chat_template.NAME; NULL when absent. */
const char *apr_chat_template(const apr_model *m, const char *name);
/* Render it with vars (messages, add_generation_prompt, ...: a JSON object)
 * plus what apply_chat_template adds when vars lacks them: bos_token,
 * eos_token, unk_token, pad_token (the vocabulary's texts), tools and
 * documents (null), add_generation_prompt (false). The text is tokenized
 * with parse_special and without adding BOS, as apply_chat_template does. */
int apr_chat_render(const apr_model *m, const char *name, const json_t *vars, char **out, size_t *len, apr_err *err);
/* Whether id ends a generation: EOS, tokenizer.ggml.eot/eom_token_id, or a
 * token whose text llama.cpp's vocabulary loader puts in its EOG set
 * (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>, ...). */
bool apr_chat_is_end(const apr_model *m, int32_t id);

#ifdef __cplusplus
}
#endif
#endif /* APR_TOK_H */
