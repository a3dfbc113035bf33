/*
 * Exact token counts for OpenAI's public byte-pair encodings, o200k_base
 * and cl100k_base, with tiktoken's semantics: the encoding's pre-tokenizer
 * pattern splits the text into pieces (PCRE2, JIT, UTF + UCP), each piece
 * that is not itself a token is merged pairwise by lowest rank, and the
 * count is the number of tokens that results. Text is counted as tiktoken's
 * encode_ordinary() counts it: "<|endoftext|>" in a prompt is plain text.
 *
 * Two objects, both created once:
 *   sp_tok_enc_t  the compiled pattern and the vocabulary; read-only after
 *                 sp_tok_enc_create(), so a master process builds it before
 *                 fork and every worker (or thread) shares it.
 *   sp_tok_ctx_t  per worker or thread: PCRE2 match data, a JIT stack, a
 *                 cache of recent pieces' counts (256 KiB) and the scratch
 *                 for merging long pieces, sized by its caller.
 *                 sp_tok_count() allocates nothing.
 *
 * The vocabularies are data generated at build time from the npm package
 * js-tiktoken (tools/tokenizer/gen-vocab.mjs -> build/gen/sp_tok_vocab.c)
 * and linked in; nothing is read or downloaded at run time.
 *
 * Defined behaviour outside tiktoken's domain:
 *   - invalid UTF-8: tiktoken takes Unicode text, so it has no answer. An
 *     invalid byte never joins a piece (PCRE2_MATCH_INVALID_UTF makes it a
 *     barrier no match crosses) and counts as one token; the valid text on
 *     either side is split and merged as usual. result.invalid_bytes says
 *     how many bytes were counted so.
 *   - a piece longer than the context's scratch allows (sp_tok_ctx_create's
 *     max_piece) counts one token per byte, an upper bound (every token is
 *     at least one byte); result.exact is then 0.
 */

#ifndef SP_TOKENIZE_H
#define SP_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>


#define SP_TOK_RANK_BITS   18                 /* ranks below 2^18 */
#define SP_TOK_RANK_NONE   UINT32_MAX
#define SP_TOK_BLOOM_BITS  (1u << 22)

/* pieces up to this long merge in a stack buffer, the rest in the scratch */
#define SP_TOK_SHORT_PIECE  128

/*
 * A context remembers the counts of recent pieces up to this long (a
 * direct-mapped cache of SP_TOK_CACHE entries): text repeats its words,
 * and a piece found there costs one hash and one compare.
 */
#define SP_TOK_CACHE_PIECE  24
#define SP_TOK_CACHE        8192

/* the scratch bytes sp_tok_ctx_create() sets aside per byte of max_piece */
#define SP_TOK_SCRATCH_PER_BYTE  36

/*
 * Chat message overhead as OpenAI documents it for the gpt-4o, gpt-4 and
 * gpt-3.5-turbo (0613 and later) families: every message costs 3 tokens
 * besides its role and content (<|start|>{role}<|message|>...<|end|>), a
 * "name" 1 more, and the reply is primed with 3 (<|start|>assistant
 * <|message|>).
 */
#define SP_TOK_CHAT_PER_MESSAGE  3
#define SP_TOK_CHAT_PER_NAME     1
#define SP_TOK_CHAT_PER_REPLY    3


typedef enum {
    SP_TOK_O200K_BASE = 0,
    SP_TOK_CL100K_BASE,
    SP_TOK_ENCODINGS
} sp_tok_encoding_e;


/* a vocabulary as gen-vocab.mjs lays it out; see sp_tok_rank() */
typedef struct {
    const char      *name;
    uint32_t         n_ranks;       /* ranks 0 .. n_ranks - 1 */
    uint32_t         slot_mask;     /* slots: a power of two, minus one */
    uint32_t         max_len;       /* the longest token, bytes */
    const uint32_t  *offsets;       /* n_ranks + 1: token r is bytes */
                                    /* [offsets[r], offsets[r + 1]) */
    const uint32_t  *slots;         /* hash tag << 18 | rank, or ~0 */
    const uint32_t  *pairs;         /* 65536: two-byte tokens' ranks */
    const uint64_t  *bloom;         /* SP_TOK_BLOOM_BITS: may be a token */
    const uint8_t   *bytes;
} sp_tok_vocab_t;

extern const sp_tok_vocab_t  sp_tok_vocab_o200k_base;
extern const sp_tok_vocab_t  sp_tok_vocab_cl100k_base;


typedef struct sp_tok_enc_s  sp_tok_enc_t;
typedef struct sp_tok_ctx_s  sp_tok_ctx_t;


typedef struct {
    uint64_t  tokens;
    uint64_t  pieces;           /* pre-tokenizer pieces */
    uint64_t  invalid_bytes;    /* bytes of invalid UTF-8, a token each */
    uint64_t  long_pieces;      /* pieces over max_piece, a token a byte */
    int       exact;            /* tiktoken's count (long_pieces == 0) */
} sp_tok_result_t;


/* one chat message; name may be NULL */
typedef struct {
    const char  *role;
    size_t       role_len;
    const char  *content;
    size_t       content_len;
    const char  *name;
    size_t       name_len;
} sp_tok_msg_t;


/*
 * Compiles the encoding's pattern (with JIT where the CPU has it) against
 * the vocabulary: &sp_tok_vocab_o200k_base or &sp_tok_vocab_cl100k_base,
 * which live in the generated build/gen/sp_tok_vocab.c, so only binaries
 * that link it name them. NULL on failure, with a reason in err.
 */
sp_tok_enc_t *sp_tok_enc_create(sp_tok_encoding_e which,
    const sp_tok_vocab_t *vocab, char *err, size_t errlen);
void sp_tok_enc_free(sp_tok_enc_t *enc);
const sp_tok_vocab_t *sp_tok_enc_vocab(const sp_tok_enc_t *enc);

/*
 * A context that counts pieces up to max_piece bytes exactly (0: 64 KiB);
 * it holds SP_TOK_SCRATCH_PER_BYTE * max_piece bytes of scratch. NULL when
 * out of memory. One context serves both encodings (its piece cache is
 * keyed by encoding, so two sp_tok_enc_t of one encoding must share the
 * vocabulary, as the built-in ones do), but one thread at a time.
 */
sp_tok_ctx_t *sp_tok_ctx_create(size_t max_piece);
void sp_tok_ctx_free(sp_tok_ctx_t *ctx);

/*
 * The token count of text[0 .. len). Never fails: where the pattern engine
 * reports an error (a JIT stack too small for a pathological input) the
 * rest of the text counts one token per byte and result.exact is 0.
 * Returns the count; when result is not NULL the counts are added to it
 * (zero it first) and result->exact says whether all of them are exact.
 */
uint64_t sp_tok_count(const sp_tok_enc_t *enc, sp_tok_ctx_t *ctx,
    const char *text, size_t len, sp_tok_result_t *result);

/*
 * A chat request's prompt tokens: for each message its role, content and
 * name (each counted as text) plus the overhead above, plus the reply's.
 * Results are summed into result when it is not NULL.
 */
uint64_t sp_tok_chat(const sp_tok_enc_t *enc, sp_tok_ctx_t *ctx,
    const sp_tok_msg_t *msgs, size_t n, sp_tok_result_t *result);

/*
 * The encoding an OpenAI model counts its input with, from its name:
 * o200k_base for gpt-5*, gpt-4.5*, gpt-4.1*, gpt-4o*, chatgpt-4o*, o1*,
 * o3*, o4*, gpt-oss*; cl100k_base for gpt-4 and gpt-4-*, gpt-3.5-turbo*,
 * gpt-35-turbo* (Azure's spelling) and the text-embedding-ada-002 and
 * text-embedding-3-* models. A name matches a prefix when the prefix is
 * followed by the end, '-', '.', ':' or '@' (so "gpt-4o" is not "gpt-4");
 * "ft:" (a fine-tune of the model) is skipped. -1 for any other name
 * (older encodings, other providers, Azure deployment names): the caller
 * keeps its estimate.
 */
int sp_tok_encoding_for_model(const char *model, size_t len);

/* the rank of the token with exactly these bytes, or SP_TOK_RANK_NONE */
uint32_t sp_tok_rank(const sp_tok_vocab_t *v, const uint8_t *p, size_t len);

/*
 * The tokens BPE gives one piece (the whole piece's own rank is not
 * looked up first: sp_tok_count does that). scratch: NULL for the
 * quadratic merge tiktoken uses (len <= SP_TOK_SHORT_PIECE only), else
 * SP_TOK_SCRATCH_PER_BYTE * (len + 1) bytes, aligned for uint64_t, for
 * the O(n log n) heap merge.
 * Exposed so that tests and the fuzzer can hold both merges to one answer.
 */
uint64_t sp_tok_merge(const sp_tok_vocab_t *v, const uint8_t *p, size_t len,
    void *scratch);

#endif /* SP_TOKENIZE_H */
