/*
 * The tokenizer (sp_tokenize.c) on arbitrary bytes, both encodings:
 * never reads past the input; every byte is covered, so a non-empty input
 * has between 1 and len tokens; a context that merges every piece is
 * exact; one that may not (pieces over 32 bytes) counts at least as many
 * tokens, and the same when it says it was exact (the two contexts' piece
 * caches fill differently, so their agreement also holds the cache to the
 * merge); the quadratic and the heap merge agree on the whole input.
 *
 * Input: the text.
 */

#include "fuzz_common.h"
#include "sp_tokenize.h"


static sp_tok_enc_t  *encs[SP_TOK_ENCODINGS];
static sp_tok_ctx_t  *big, *small;
static void          *scratch;


static void
fuzz_init(void)
{
    char  err[256];

    encs[0] = sp_tok_enc_create(SP_TOK_O200K_BASE, &sp_tok_vocab_o200k_base,
                                err, sizeof(err));
    encs[1] = sp_tok_enc_create(SP_TOK_CL100K_BASE,
                                &sp_tok_vocab_cl100k_base, err, sizeof(err));
    big = sp_tok_ctx_create(65536);
    small = sp_tok_ctx_create(32);
    scratch = malloc(SP_TOK_SCRATCH_PER_BYTE * (SP_TOK_SHORT_PIECE + 1));

    FUZZ_CHECK(encs[0] != NULL && encs[1] != NULL);
    FUZZ_CHECK(big != NULL && small != NULL && scratch != NULL);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               e;
    uint8_t          *text;
    uint64_t          n, m, a, b;
    sp_tok_result_t   r, s;

    if (big == NULL) {
        fuzz_init();
    }

    if (size > 65536) {
        return 0;
    }

    text = fuzz_dup(data, size);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        memset(&r, 0, sizeof(r));
        n = sp_tok_count(encs[e], big, (const char *) text, size, &r);

        FUZZ_CHECK(n == r.tokens);
        FUZZ_CHECK(r.exact);
        FUZZ_CHECK(n <= size);
        FUZZ_CHECK(size == 0 || n >= 1);
        FUZZ_CHECK(r.invalid_bytes <= n);
        FUZZ_CHECK(r.pieces + r.invalid_bytes <= n);

        memset(&s, 0, sizeof(s));
        m = sp_tok_count(encs[e], small, (const char *) text, size, &s);

        FUZZ_CHECK(m >= n);
        FUZZ_CHECK(!s.exact || m == n);
        FUZZ_CHECK(s.invalid_bytes == r.invalid_bytes);

        if (size <= SP_TOK_SHORT_PIECE) {
            a = sp_tok_merge(sp_tok_enc_vocab(encs[e]), text, size, NULL);
            b = sp_tok_merge(sp_tok_enc_vocab(encs[e]), text, size, scratch);
            FUZZ_CHECK(a == b);
            FUZZ_CHECK(a <= size);
        }
    }

    free(text);

    return 0;
}
