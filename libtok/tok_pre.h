/* tok_pre.h - libtok internal: which tokenizer.ggml.pre names llama.cpp
 * tokenizes alike (encode.c's PRE_DEFS rows), for hftok.c to write a GGUF's
 * pre-tokenizer back as the tokenizer.json structure of a name in its row. */
#ifndef APR_TOK_PRE_H
#define APR_TOK_PRE_H

/* The PRE_DEFS row holding `pre`, or -1 for a name apr's encoder lacks. */
int tok_pre_row(const char *pre);

#endif
