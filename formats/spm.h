/* spm.h - SentencePiece tokenizer.model (ModelProto protobuf) reader and
 * writer. Internal to formats/ (hfmeta.c maps it to GGUF KVs) and its tests.
 *
 * Only the subset llama.cpp's converter and a LLaMA tokenizer.model use is
 * kept: the pieces (string, score, type), a few TrainerSpec fields and the
 * NormalizerSpec flags; every other field is skipped by its wire type. */
#ifndef APR_SPM_H
#define APR_SPM_H

#include "formats.h"

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

void apr_spm_free(apr_spm *s);

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

#endif
