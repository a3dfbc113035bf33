/*
 * libspendpol tokenizer (sp_tokenize.c): counts against the reference
 * table tokenize_cases.h (generated with js-tiktoken by
 * tools/tokenizer/gen-cases.mjs; `make unit` checks the package still
 * agrees), the vocabulary table, both merges, the defined behaviour on
 * invalid UTF-8 and over-long pieces, and the chat overhead.
 *
 * Every text is copied into a heap buffer of exactly its length, so that
 * under ASan (make SAN=1 unit) a read past the input fails the test.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_tokenize.h"
#include "tokenize_cases.h"


static sp_tok_enc_t  *encs[SP_TOK_ENCODINGS];
static sp_tok_ctx_t  *ctx;


static int
setup(void **state)
{
    int                    i;
    char                   err[256];
    const sp_tok_vocab_t  *vocab[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    (void) state;

    for (i = 0; i < SP_TOK_ENCODINGS; i++) {
        encs[i] = sp_tok_enc_create(i, vocab[i], err, sizeof(err));
        if (encs[i] == NULL) {
            fprintf(stderr, "sp_tok_enc_create: %s\n", err);
            return -1;
        }
    }

    ctx = sp_tok_ctx_create(0);

    return ctx == NULL ? -1 : 0;
}


static int
teardown(void **state)
{
    int  i;

    (void) state;

    for (i = 0; i < SP_TOK_ENCODINGS; i++) {
        sp_tok_enc_free(encs[i]);
    }

    sp_tok_ctx_free(ctx);

    return 0;
}


/* the count of exactly len bytes, in a buffer that ends where they end */
static uint64_t
count_with(sp_tok_encoding_e e, sp_tok_ctx_t *c, const char *text,
    size_t len, sp_tok_result_t *res)
{
    char      *copy;
    uint64_t   n;

    copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);

    memset(res, 0, sizeof(*res));
    n = sp_tok_count(encs[e], c, copy, len, res);
    free(copy);

    assert_int_equal(n, res->tokens);

    return n;
}


static uint64_t
count(sp_tok_encoding_e e, const char *text, size_t len)
{
    sp_tok_result_t  res;

    return count_with(e, ctx, text, len, &res);
}


static void
test_tokenize_reference(void **state)
{
    size_t           i;
    uint64_t         n;
    sp_tok_result_t  res;

    (void) state;

    for (i = 0; i < sizeof(tok_cases) / sizeof(tok_cases[0]); i++) {
        const tok_case_t  *c = &tok_cases[i];

        n = count_with(SP_TOK_O200K_BASE, ctx, c->text, c->len, &res);
        if (n != c->o200k || !res.exact || res.invalid_bytes != 0) {
            fail_msg("case %zu o200k_base: %llu tokens, expected %llu: "
                     "\"%.60s\"", i, (unsigned long long) n,
                     (unsigned long long) c->o200k, c->text);
        }

        n = count_with(SP_TOK_CL100K_BASE, ctx, c->text, c->len, &res);
        if (n != c->cl100k || !res.exact || res.invalid_bytes != 0) {
            fail_msg("case %zu cl100k_base: %llu tokens, expected %llu: "
                     "\"%.60s\"", i, (unsigned long long) n,
                     (unsigned long long) c->cl100k, c->text);
        }
    }
}


/* a few counts anyone can check on OpenAI's tokenizer page */
static void
test_tokenize_known(void **state)
{
    (void) state;

    assert_int_equal(count(SP_TOK_CL100K_BASE, "hello world", 11), 2);
    assert_int_equal(count(SP_TOK_O200K_BASE, "hello world", 11), 2);

    /* cl100k_base: digits in runs of at most three */
    assert_int_equal(count(SP_TOK_CL100K_BASE, "1234567", 7), 3);
    assert_int_equal(count(SP_TOK_O200K_BASE, "1234567", 7), 3);

    /* a contraction is its own piece */
    assert_int_equal(count(SP_TOK_CL100K_BASE, "it's", 4), 2);

    assert_int_equal(count(SP_TOK_O200K_BASE, "", 0), 0);
    assert_int_equal(count(SP_TOK_CL100K_BASE, "", 0), 0);
}


static void
test_tokenize_vocab(void **state)
{
    int                    e;
    uint32_t               r, off, len;
    const sp_tok_vocab_t  *v;

    (void) state;

    assert_int_equal(sp_tok_vocab_o200k_base.n_ranks, 199998);
    assert_int_equal(sp_tok_vocab_cl100k_base.n_ranks, 100256);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        v = sp_tok_enc_vocab(encs[e]);

        /* every token is found at its rank: the C hash is gen-vocab's */
        for (r = 0; r < v->n_ranks; r++) {
            off = v->offsets[r];
            len = v->offsets[r + 1] - off;

            if (len == 0) {
                continue;
            }

            if (sp_tok_rank(v, v->bytes + off, len) != r) {
                fail_msg("%s: rank %u not found", v->name, r);
            }
        }

        /* every single byte is a token (so every piece can be encoded) */
        for (r = 0; r < 256; r++) {
            uint8_t  b = (uint8_t) r;

            assert_int_not_equal(sp_tok_rank(v, &b, 1), SP_TOK_RANK_NONE);
        }

        assert_int_equal(sp_tok_rank(v, (const uint8_t *) "", 0),
                         SP_TOK_RANK_NONE);
        assert_int_equal(sp_tok_rank(v, (const uint8_t *) "zqxjzqxjzq", 10),
                         SP_TOK_RANK_NONE);
    }
}


/* the quadratic merge and the heap merge agree */
static void
test_tokenize_merges_agree(void **state)
{
    int                    e;
    size_t                 i, len;
    uint64_t               a, b, seed;
    uint8_t                buf[SP_TOK_SHORT_PIECE];
    void                  *scratch;
    const sp_tok_vocab_t  *v;

    (void) state;

    scratch = malloc(SP_TOK_SCRATCH_PER_BYTE * (SP_TOK_SHORT_PIECE + 1));
    assert_non_null(scratch);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        v = sp_tok_enc_vocab(encs[e]);

        for (i = 0; i < sizeof(tok_cases) / sizeof(tok_cases[0]); i++) {
            len = tok_cases[i].len;

            if (len > SP_TOK_SHORT_PIECE) {
                continue;
            }

            a = sp_tok_merge(v, (const uint8_t *) tok_cases[i].text, len,
                             NULL);
            b = sp_tok_merge(v, (const uint8_t *) tok_cases[i].text, len,
                             scratch);
            assert_int_equal(a, b);
        }

        /* byte soup from a small alphabet: many equal-rank ties */
        seed = 42;

        for (i = 0; i < 2000; i++) {
            size_t  j;

            len = 1 + i % SP_TOK_SHORT_PIECE;

            for (j = 0; j < len; j++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                buf[j] = "aab \n0e\xc3\xa9"[(seed >> 33) % 9];
            }

            a = sp_tok_merge(v, buf, len, NULL);
            b = sp_tok_merge(v, buf, len, scratch);

            if (a != b) {
                fail_msg("%s: merges disagree on %zu bytes: %llu != %llu",
                         v->name, len, (unsigned long long) a,
                         (unsigned long long) b);
            }
        }
    }

    free(scratch);
}


/*
 * Invalid UTF-8: each invalid byte is one token and joins no piece; the
 * valid text around it is split as usual.
 */
static void
test_tokenize_invalid_utf8(void **state)
{
    int              e;
    sp_tok_result_t  res;

    (void) state;

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        assert_int_equal(count_with(e, ctx, "\xff", 1, &res), 1);
        assert_int_equal(res.invalid_bytes, 1);
        assert_true(res.exact);

        assert_int_equal(count_with(e, ctx, "abc\xff" "def", 7, &res),
                         count(e, "abc", 3) + 1 + count(e, "def", 3));
        assert_int_equal(res.invalid_bytes, 1);

        /* a truncated sequence at the end, an overlong NUL, a surrogate */
        assert_int_equal(count_with(e, ctx, "hello\xe6\x97", 7, &res),
                         count(e, "hello", 5) + 2);
        assert_int_equal(res.invalid_bytes, 2);

        assert_int_equal(count_with(e, ctx, "\xc0\x80", 2, &res), 2);
        assert_int_equal(count_with(e, ctx, "\xed\xa0\x80", 3, &res), 3);

        /* a valid character right after an invalid byte still counts */
        assert_int_equal(count_with(e, ctx, "\x80\xe6\x97\xa5", 4, &res),
                         1 + count(e, "\xe6\x97\xa5", 3));
        assert_int_equal(res.invalid_bytes, 1);
    }
}


/* a piece longer than the context allows counts a token a byte */
static void
test_tokenize_long_piece(void **state)
{
    int              e;
    char            *a;
    uint64_t         exact;
    sp_tok_ctx_t    *small;
    sp_tok_result_t  res;

    (void) state;

    a = malloc(5000);
    assert_non_null(a);
    memset(a, 'a', 5000);

    small = sp_tok_ctx_create(1000);
    assert_non_null(small);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        exact = count_with(e, ctx, a, 5000, &res);
        assert_true(res.exact);
        assert_true(exact < 5000);

        assert_int_equal(count_with(e, small, a, 5000, &res), 5000);
        assert_false(res.exact);
        assert_int_equal(res.long_pieces, 1);

        /* under the bound the small context is exact */
        assert_int_equal(count_with(e, small, a, 1000, &res),
                         count(e, a, 1000));
        assert_true(res.exact);
    }

    sp_tok_ctx_free(small);
    free(a);
}


/* a megabyte of whitespace and one of letters: no engine limit is hit */
static void
test_tokenize_large(void **state)
{
    int              e;
    char            *buf;
    size_t           len;
    sp_tok_ctx_t    *big;
    sp_tok_result_t  res;

    (void) state;

    len = 1024 * 1024;
    buf = malloc(len);
    assert_non_null(buf);
    big = sp_tok_ctx_create(len);
    assert_non_null(big);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        memset(buf, ' ', len);
        assert_true(count_with(e, big, buf, len, &res) > 0);
        assert_true(res.exact);
        assert_int_equal(res.pieces, 1);

        memset(buf, '\n', len);
        assert_true(count_with(e, big, buf, len, &res) > 0);
        assert_true(res.exact);

        memset(buf, 'x', len);
        assert_true(count_with(e, big, buf, len, &res) > 0);
        assert_true(res.exact);
        assert_int_equal(res.pieces, 1);
    }

    sp_tok_ctx_free(big);
    free(buf);
}


#define MSG(r, c)     { r, sizeof(r) - 1, c, sizeof(c) - 1, NULL, 0 }
#define MSGN(r, c, n) { r, sizeof(r) - 1, c, sizeof(c) - 1, n, sizeof(n) - 1 }

static void
test_tokenize_chat(void **state)
{
    int              e;
    uint64_t         want;
    sp_tok_result_t  res;

    static const sp_tok_msg_t  two[] = {
        MSG("system", "You are a helpful assistant."),
        MSG("user", "Hello!"),
    };

    static const sp_tok_msg_t  named[] = {
        MSGN("user", "Hi there", "example_user"),
    };

    (void) state;

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        /*
         * "system", "user": a token each; "You are a helpful assistant."
         * 6; "Hello!" 2: 3 + (3 + 1 + 6) + (3 + 1 + 2)
         */
        memset(&res, 0, sizeof(res));
        assert_int_equal(sp_tok_chat(encs[e], ctx, two, 2, &res), 19);
        assert_int_equal(res.tokens, 1 + 6 + 1 + 2);
        assert_true(res.exact);

        want = SP_TOK_CHAT_PER_REPLY + SP_TOK_CHAT_PER_MESSAGE
               + count(e, "user", 4) + count(e, "Hi there", 8)
               + SP_TOK_CHAT_PER_NAME + count(e, "example_user", 12);
        assert_int_equal(sp_tok_chat(encs[e], ctx, named, 1, NULL), want);

        /* no messages: only the reply's priming */
        assert_int_equal(sp_tok_chat(encs[e], ctx, NULL, 0, NULL),
                         SP_TOK_CHAT_PER_REPLY);
    }
}


static int
model(const char *name)
{
    return sp_tok_encoding_for_model(name, strlen(name));
}


static void
test_tokenize_models(void **state)
{
    size_t  i;

    (void) state;

    /* every model js-tiktoken names, as it maps them */
    for (i = 0; i < sizeof(tok_models) / sizeof(tok_models[0]); i++) {
        if (model(tok_models[i].model) != tok_models[i].encoding) {
            fail_msg("%s: encoding %d, js-tiktoken says %d",
                     tok_models[i].model, model(tok_models[i].model),
                     tok_models[i].encoding);
        }
    }

    /* fine-tunes, later snapshots, and names that only look alike */
    assert_int_equal(model("ft:gpt-4o-mini-2024-07-18:acme::abc123"),
                     SP_TOK_O200K_BASE);
    assert_int_equal(model("ft:gpt-3.5-turbo-0125:acme::x"),
                     SP_TOK_CL100K_BASE);
    assert_int_equal(model("gpt-5.1"), SP_TOK_O200K_BASE);
    assert_int_equal(model("gpt-4.1-mini-2025-04-14"), SP_TOK_O200K_BASE);
    assert_int_equal(model("o3-pro"), SP_TOK_O200K_BASE);
    assert_int_equal(model("gpt-4oops"), -1);
    assert_int_equal(model("o10"), -1);
    assert_int_equal(model("gpt-40"), -1);
    assert_int_equal(model("claude-3-5-sonnet"), -1);
    assert_int_equal(model("my-azure-deployment"), -1);
    assert_int_equal(model("ft:"), -1);
    assert_int_equal(sp_tok_encoding_for_model("gpt-4o", 5), SP_TOK_CL100K_BASE);
    assert_int_equal(sp_tok_encoding_for_model("gpt-4o", 0), -1);
}


static void
test_tokenize_bad_encoding(void **state)
{
    char  err[128];

    (void) state;

    assert_null(sp_tok_enc_create(SP_TOK_ENCODINGS, &sp_tok_vocab_o200k_base,
                                  err, sizeof(err)));
    assert_non_null(strstr(err, "unknown encoding"));

    assert_null(sp_tok_enc_create(SP_TOK_O200K_BASE, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no vocabulary"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_tokenize_reference),
        cmocka_unit_test(test_tokenize_known),
        cmocka_unit_test(test_tokenize_vocab),
        cmocka_unit_test(test_tokenize_merges_agree),
        cmocka_unit_test(test_tokenize_invalid_utf8),
        cmocka_unit_test(test_tokenize_long_piece),
        cmocka_unit_test(test_tokenize_large),
        cmocka_unit_test(test_tokenize_chat),
        cmocka_unit_test(test_tokenize_models),
        cmocka_unit_test(test_tokenize_bad_encoding),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
