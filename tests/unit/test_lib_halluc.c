/*
 * libspendpol hallucination score: the answer's text and finish reason
 * from each provider's JSON answers and stream events; the claims found
 * and how they are matched; both branches of the formula; material in
 * request bodies; no read past what is given; and the labelled set
 * (tests/halluc/set.jsonl) separated as docs/hallucination.md reports.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "sp_halluc.h"


#define SET_PATH  "tests/halluc/set.jsonl"

static sp_halluc_answer_t  ans;
static sp_halluc_result_t  res;


/* a copy of exactly len bytes: ASan sees a read past the end */
static char *
exact(const char *s, size_t len)
{
    char  *copy;

    copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);

    return copy;
}


static int
json(sp_provider_e provider, const char *s)
{
    int    rc;
    char  *copy;

    copy = exact(s, strlen(s));
    rc = sp_halluc_answer_json(provider, copy, strlen(s), &ans);
    free(copy);

    return rc;
}


static int
event(sp_provider_e provider, const char *s)
{
    int    rc;
    char  *copy;

    copy = exact(s, strlen(s));
    rc = sp_halluc_answer_event(provider, copy, strlen(s), &ans);
    free(copy);

    return rc;
}


static void
assert_answer(const char *text, int finished, int finish_length)
{
    if (ans.len != strlen(text) || memcmp(ans.text, text, ans.len) != 0) {
        fail_msg("answer \"%.*s\", wanted \"%s\"", (int) ans.len, ans.text,
                 text);
    }

    assert_int_equal(ans.finished, finished);
    assert_int_equal(ans.finish_length, finish_length);
    assert_int_equal(ans.truncated, 0);
}


/* answer text scored against a plain-text context (NULL: none) */
static void
score(const char *context, const char *text, int finished, int length)
{
    char  *copy;

    sp_halluc_answer_init(&ans);
    ans.len = strlen(text);
    memcpy(ans.text, text, ans.len);
    ans.finished = finished;
    ans.finish_length = length;

    copy = context ? exact(context, strlen(context)) : NULL;
    sp_halluc_score_text(copy, context ? strlen(context) : 0, &ans, &res);
    free(copy);
}


static void
assert_claims(const char *context, const char *text, size_t claims,
    size_t unsupported)
{
    score(context, text, 1, 0);

    if (res.claims != claims || res.unsupported != unsupported) {
        fail_msg("%zu claims, %zu unsupported (wanted %zu, %zu) in \"%s\"",
                 res.claims, res.unsupported, claims, unsupported, text);
    }
}


/* ---- answers ------------------------------------------------------------ */

static void
test_halluc_openai_chat(void **state)
{
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_OPENAI,
        "{\"id\":\"c1\",\"object\":\"chat.completion\",\"choices\":[{\"index\""
        ":0,\"message\":{\"role\":\"assistant\",\"content\":\"Revenue was "
        "\\\"up\\\"\\n\\u00e9t\\u00e9.\"},\"finish_reason\":\"length\"},{"
        "\"index\":1,\"message\":{\"content\":\"other choice\"}}],\"usage\":"
        "{\"prompt_tokens\":3}}"), SP_OK);
    assert_answer("Revenue was \"up\"\n\xc3\xa9t\xc3\xa9.", 1, 1);

    /* Azure and Mistral answer the same shape; Mistral's parts too */
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_MISTRAL,
        "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\""
        ":\"a\"},{\"type\":\"image_url\",\"text\":\"x\"},{\"type\":\"text\","
        "\"text\":\"b\"}]},\"finish_reason\":\"stop\"}]}"), SP_OK);
    assert_answer("ab", 1, 0);

    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_AZURE,
        "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[]},"
        "\"finish_reason\":\"tool_calls\"}]}"), SP_OK);
    assert_answer("", 1, 0);

    /* stream chunks: deltas, then the finish; [DONE] is not JSON */
    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"
        ",\"finish_reason\":null}]}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":"
        "\"length\"}]}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[],\"usage\":{\"completion_tokens\":2}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI, "[DONE]"), SP_ERROR);
    assert_answer("Hello", 1, 1);

    /* n > 1: the first choice is the answer scored */
    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"B\"}}]}"),
        SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}"),
        SP_OK);
    assert_answer("A", 0, 0);

    /* Mistral's own spelling of a length stop */
    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_MISTRAL,
        "{\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":"
        "\"model_length\"}]}"), SP_OK);
    assert_answer("x", 1, 1);
}


static void
test_halluc_openai_responses(void **state)
{
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_OPENAI,
        "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"incomplete\","
        "\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"output\":"
        "[{\"type\":\"reasoning\",\"summary\":[{\"text\":\"no\"}]},{\"type\":"
        "\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"output_text\",\"text\":\"One \"},{\"type\":\"refusal\",\"refusal\""
        ":\"x\"},{\"type\":\"output_text\",\"text\":\"two\"}]}]}"), SP_OK);
    assert_answer("One two", 1, 1);

    /* output_text, when the body has it, is the whole text */
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_OPENAI,
        "{\"object\":\"response\",\"status\":\"completed\",\"output_text\":"
        "\"All\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":"
        "\"output_text\",\"text\":\"All\"}]}]}"), SP_OK);
    assert_answer("All", 1, 0);

    /* a stream: deltas; done and completed events repeat, not append */
    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"type\":\"response.created\",\"response\":{\"status\":"
        "\"in_progress\",\"output\":[]}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"type\":\"response.output_text.delta\",\"delta\":\"Par\"}"),
        SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"type\":\"response.output_text.delta\",\"delta\":\"is\"}"),
        SP_OK);
    assert_answer("Paris", 0, 0);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"type\":\"response.output_text.done\",\"text\":\"Paris\"}"),
        SP_OK);
    assert_int_equal(event(SP_PROVIDER_OPENAI,
        "{\"type\":\"response.incomplete\",\"response\":{\"status\":"
        "\"incomplete\",\"incomplete_details\":{\"reason\":"
        "\"max_output_tokens\"},\"output\":[{\"type\":\"message\","
        "\"content\":[{\"type\":\"output_text\",\"text\":\"Paris\"}]}]}}"),
        SP_OK);
    assert_answer("Paris", 1, 1);

    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_AZURE,
        "{\"type\":\"response.completed\",\"response\":{\"status\":"
        "\"completed\"}}"), SP_OK);
    assert_answer("", 1, 0);
}


static void
test_halluc_anthropic(void **state)
{
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_ANTHROPIC,
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
        "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\"},{\"type\":"
        "\"text\",\"text\":\"Lyon \"},{\"type\":\"tool_use\",\"id\":\"t\","
        "\"name\":\"f\",\"input\":{\"text\":\"no\"}},{\"type\":\"text\","
        "\"text\":\"it is\"}],\"stop_reason\":\"max_tokens\"}"), SP_OK);
    assert_answer("Lyon it is", 1, 1);

    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"message_start\",\"message\":{\"type\":\"message\","
        "\"content\":[],\"stop_reason\":null}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
        "\"type\":\"text\",\"text\":\"\"}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"Hi \"}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"{}\"}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"there\"}}"), SP_OK);
    assert_answer("Hi there", 0, 0);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC,
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\""
        "},\"usage\":{\"output_tokens\":2}}"), SP_OK);
    assert_answer("Hi there", 1, 0);
}


static void
test_halluc_google(void **state)
{
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_GOOGLE,
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{"
        "\"text\":\"plan\",\"thought\":true},{\"text\":\"Yes, \"},{\"text\":"
        "\"indeed\"}]},\"finishReason\":\"MAX_TOKENS\"},{\"content\":{"
        "\"parts\":[{\"text\":\"second\"}]}}],\"usageMetadata\":{}}"), SP_OK);
    assert_answer("Yes, indeed", 1, 1);

    /* streamGenerateContent without alt=sse: an array of the same */
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_GOOGLE,
        "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]},"
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},"
        "\"finishReason\":\"STOP\"}]}]"), SP_OK);
    assert_answer("ab", 1, 0);

    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_GOOGLE,
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"c\"}]}}]}"),
        SP_OK);
    assert_answer("c", 0, 0);
}


static void
test_halluc_cohere(void **state)
{
    /* v2 */
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_COHERE,
        "{\"id\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":[{"
        "\"type\":\"text\",\"text\":\"Twelve.\"}],\"citations\":[]},"
        "\"finish_reason\":\"MAX_TOKENS\",\"usage\":{}}"), SP_OK);
    assert_answer("Twelve.", 1, 1);

    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":"
        "\"assistant\",\"content\":[]}}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{"
        "\"content\":{\"text\":\"Tw\"}}}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{"
        "\"content\":{\"text\":\"o\"}}}}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\""
        ",\"usage\":{}}}"), SP_OK);
    assert_answer("Two", 1, 0);

    /* v1: text, and a stream whose end repeats the whole response */
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_COHERE,
        "{\"response_id\":\"r\",\"text\":\"Old API\",\"generation_id\":\"g\","
        "\"finish_reason\":\"MAX_TOKENS\",\"meta\":{}}"), SP_OK);
    assert_answer("Old API", 1, 1);

    sp_halluc_answer_init(&ans);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"is_finished\":false,\"event_type\":\"stream-start\"}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"is_finished\":false,\"event_type\":\"text-generation\",\"text\":"
        "\"Old\"}"), SP_OK);
    assert_int_equal(event(SP_PROVIDER_COHERE,
        "{\"is_finished\":true,\"event_type\":\"stream-end\",\"response\":{"
        "\"text\":\"Old\"},\"finish_reason\":\"MAX_TOKENS\"}"), SP_OK);
    assert_answer("Old", 1, 1);
}


static void
test_halluc_answer_refuses_non_json(void **state)
{
    sp_halluc_answer_init(&ans);
    assert_int_equal(json(SP_PROVIDER_OPENAI,
        "{\"choices\":[{\"message\":{\"content\":\"kept\"}}]}"), SP_OK);

    assert_int_equal(json(SP_PROVIDER_OPENAI, "{\"choices\":[{\"message\""),
                     SP_ERROR);
    assert_int_equal(json(SP_PROVIDER_OPENAI, "\"a string\""), SP_ERROR);
    assert_int_equal(json(SP_PROVIDER_OPENAI, "42"), SP_ERROR);
    assert_int_equal(json(SP_PROVIDER_OPENAI, ""), SP_ERROR);
    assert_int_equal(sp_halluc_answer_json(SP_PROVIDER_OPENAI, NULL, 0, &ans),
                     SP_ERROR);

    /* the answer is as it was */
    assert_answer("kept", 0, 0);

    /* a shape of no provider: JSON, nothing to read */
    assert_int_equal(json(SP_PROVIDER_OPENAI, "{\"foo\":[1,2]}"), SP_OK);
    assert_answer("kept", 0, 0);
}


static void
test_halluc_answer_keeps_at_most_max(void **state)
{
    size_t  n, len;
    char   *big;

    /* one answer of twice the room, in pieces */
    len = SP_HALLUC_TEXT_MAX;
    big = malloc(len + 64);
    assert_non_null(big);

    n = (size_t) snprintf(big, 64, "{\"choices\":[{\"delta\":{\"content\":\"");
    memset(big + n, 'x', len - n - 8);
    memcpy(big + len - 8, "\"}}]}", 5);
    len = len - 8 + 5;

    sp_halluc_answer_init(&ans);
    assert_int_equal(sp_halluc_answer_event(SP_PROVIDER_OPENAI, big, len,
                                            &ans), SP_OK);
    assert_int_equal(ans.truncated, 0);
    assert_int_equal(sp_halluc_answer_event(SP_PROVIDER_OPENAI, big, len,
                                            &ans), SP_OK);
    assert_int_equal(ans.truncated, 1);
    assert_int_equal(ans.len, SP_HALLUC_TEXT_MAX - 1);
    assert_int_equal(ans.text[ans.len], '\0');

    free(big);

    /* a truncated answer without a finish: cut short in the signals */
    sp_halluc_score_text(NULL, 0, &ans, &res);
    assert_int_equal(res.pct, 20);
}


/* ---- claims ------------------------------------------------------------- */

static void
test_halluc_claims_numbers(void **state)
{
    const char  *ctx = "Revenue was $3,200,000, up 12% to 1,234.5 units, "
                       "and 42 stores. Prices of 1.234 EUR. In 2021.";

    /* the same values in other formats */
    assert_claims(ctx, "It made $3.2M.", 1, 0);
    assert_claims(ctx, "It made 3.2 million dollars.", 1, 0);
    assert_claims(ctx, "It made $3 200 000.", 1, 0);
    assert_claims(ctx, "Growth was 12 percent.", 1, 0);
    assert_claims(ctx, "Sales were 1 234,5 units.", 1, 0);
    assert_claims(ctx, "Sales were 1.234,50 units.", 1, 0);
    /* 1,234 read as a thousand matches 1.234 by its digits */
    assert_claims(ctx, "Prices of 1,234 EUR.", 1, 0);
    assert_claims(ctx, "It has 42 stores, since 2021.", 2, 0);

    /* other values */
    assert_claims(ctx, "It made $3.4M, up 15%, in 2022.", 3, 3);
    assert_claims(ctx, "It has 43 stores.", 1, 1);

    /* not claims: small counts, list markers, names with figures */
    assert_claims(ctx, "1. We have 3 options with model-4 and Q3 data.", 0, 0);

    /* small money and small decimals are */
    assert_claims(ctx, "It costs $5 or 2.5 units.", 2, 2);
}


static void
test_halluc_claims_dates(void **state)
{
    const char  *ctx = "Signed on March 3, 2024 and renewed 2025-01-15; "
                       "the review was in June 2023.";

    assert_claims(ctx, "It was signed on 2024-03-03.", 1, 0);
    assert_claims(ctx, "It was signed on 3 March 2024.", 1, 0);
    assert_claims(ctx, "It was signed on 3rd March 2024.", 1, 0);
    assert_claims(ctx, "Renewed on Jan. 15, 2025.", 1, 0);
    assert_claims(ctx, "Renewed in January 2025.", 1, 0);
    /* a year alone is a number, found in a date */
    assert_claims(ctx, "Renewed in 2025.", 1, 0);

    assert_claims(ctx, "It was signed on 2024-03-04.", 1, 1);
    assert_claims(ctx, "It was signed on April 3, 2024.", 1, 1);
    /* a month and year given, the day is not */
    assert_claims(ctx, "Reviewed on June 5, 2023.", 1, 1);

    /* "may" is a word; lowercase months are not dates */
    assert_claims(ctx, "Prices may 2024 be lower.", 1, 0);
}


static void
test_halluc_claims_quotes_entities(void **state)
{
    const char  *ctx = "Chief executive Maria Keller said the \"Atlas line\" "
                       "drove growth at Norvale Systems; the FDA and the "
                       "Bank of Lyon agreed.";

    /* quotations: straight and curly, 3+ characters */
    assert_claims(ctx, "She cited the \"atlas   LINE\".", 1, 0);
    assert_claims(ctx, "She cited the \xe2\x80\x9c" "Atlas line\xe2\x80\x9d.",
                  1, 0);
    assert_claims(ctx, "She cited the \"Beacon series\".", 1, 1);
    assert_claims(ctx, "A grade \"A+\" only.", 0, 0);

    /* names: runs of capitalised words, not at a sentence start */
    assert_claims(ctx, "The growth came from Maria Keller.", 1, 0);
    assert_claims(ctx, "The growth came from John Barrow.", 1, 1);
    assert_claims(ctx, "Maria Keller spoke.", 0, 0);
    /* the first word dropped, what follows may still be a name */
    assert_claims(ctx, "Then Maria Keller spoke.", 1, 0);
    assert_claims(ctx, "So did the Bank of Lyon.", 1, 0);
    assert_claims(ctx, "So did the Bank of Leeds.", 1, 1);
    /* a name must be whole words of the context */
    assert_claims(ctx, "It was Norvale Sys and others.", 1, 1);

    /* acronyms of 2-6 capitals, even first; common ones are not claims */
    assert_claims(ctx, "The FDA agreed.", 1, 0);
    assert_claims(ctx, "EMA agreed too.", 1, 1);
    assert_claims(ctx, "OK, at 9 AM, I said USD.", 0, 0);
}


/* ---- the formula -------------------------------------------------------- */

static void
test_halluc_score_grounded(void **state)
{
    const char  *ctx = "Norvale reported 1,200 sales in 2023 and hired "
                       "Maria Keller.";

    /* 1 of 3 claims of weight 2 unsupported: 33 */
    score(ctx, "It made 1,200 sales in 2023, and 450 returns.", 1, 0);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.claims, 3);
    assert_int_equal(res.unsupported, 1);
    assert_int_equal(res.pct, 33);
    assert_string_equal(res.basis, "context 1/3 unsupported");

    /* + 15 for a length stop */
    score(ctx, "It made 1,200 sales in 2023, and 450 returns.", 1, 1);
    assert_int_equal(res.pct, 48);
    assert_string_equal(res.basis, "context 1/3 unsupported, finish length");

    /* capped at 100 */
    score(ctx, "It made 999 sales.", 1, 1);
    assert_int_equal(res.pct, 100);

    /* quotations weigh half: unsupported quote (1) of 1 + 2 = 3: 33 */
    score(ctx, "They hired Maria Keller, \"a star\".", 1, 0);
    assert_int_equal(res.claims, 2);
    assert_int_equal(res.pct, 33);
    /* an unsupported name (2) of 1 + 2: 67 */
    score(ctx, "They hired \"Maria Keller\", not Anton Holm.", 1, 0);
    assert_int_equal(res.pct, 67);

    /* grounded, nothing to check: the signals */
    score(ctx, "Yes, it did well.", 1, 0);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.claims, 0);
    assert_int_equal(res.pct, 10);
    assert_string_equal(res.basis, "context, 0 claims: none");

    score(ctx, "I believe so.", 1, 1);
    assert_int_equal(res.pct, 50);
    assert_string_equal(res.basis,
                        "context, 0 claims: finish length, hedges 1");
}


static void
test_halluc_score_signals_only(void **state)
{
    /* without context claims are not checked, however many */
    score(NULL, "Norvale made $3.2M in 2023 under Maria Keller.", 1, 0);
    assert_int_equal(res.grounded, 0);
    assert_int_equal(res.claims, 0);
    assert_int_equal(res.pct, 10);
    assert_string_equal(res.basis, "signals only: none");

    score(NULL, "Paris.", 1, 1);
    assert_int_equal(res.pct, 40);
    assert_string_equal(res.basis, "signals only: finish length");

    score(NULL, "Paris.", 0, 0);
    assert_int_equal(res.pct, 20);
    assert_string_equal(res.basis, "signals only: cut short");

    score(NULL, "As of my knowledge cutoff, I believe it was probably "
          "Paris; I'm not sure.", 1, 0);
    assert_int_equal(res.pct, 40);
    assert_string_equal(res.basis, "signals only: hedges 4");

    /* hedges are whole words: "improbably" is not "probably" */
    score(NULL, "An improbably large cathedral.", 1, 0);
    assert_int_equal(res.pct, 10);

    score(NULL, "I think it is likely, probably, I believe.", 0, 1);
    assert_int_equal(res.pct, 80);
    assert_string_equal(res.basis,
                        "signals only: finish length, cut short, hedges 4");
}


/* ---- material in request bodies ----------------------------------------- */

#define PASSAGE \
    "Norvale Systems, headquartered in Lyon, reported revenue of " \
    "$3,200,000 for the quarter ending March 31, 2024, an increase of 12% " \
    "over the same quarter a year earlier. Chief executive Maria Keller " \
    "said demand drove most of the growth."

static void
score_body(sp_provider_e provider, const char *body, const char *text)
{
    char  *copy;

    sp_halluc_answer_init(&ans);
    ans.len = strlen(text);
    memcpy(ans.text, text, ans.len);
    ans.finished = 1;

    copy = exact(body, strlen(body));
    sp_halluc_score(provider, copy, strlen(body), &ans, &res);
    free(copy);
}


static void
test_halluc_score_bodies(void **state)
{
    const char  *good = "Revenue rose 12% to $3.2 million, said Maria Keller.";
    const char  *bad = "Revenue rose 19% to $4.5 million, said John Barrow.";

    /* a system prompt of 200+ bytes is context */
    score_body(SP_PROVIDER_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\""
               ":\"" PASSAGE "\"},{\"role\":\"user\",\"content\":\"How?\"}]}",
               good);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.claims, 3);
    assert_int_equal(res.pct, 0);

    score_body(SP_PROVIDER_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\""
               ":\"" PASSAGE "\"},{\"role\":\"user\",\"content\":\"How?\"}]}",
               bad);
    assert_int_equal(res.pct, 100);

    /* Anthropic tool results and Google system instructions */
    score_body(SP_PROVIDER_ANTHROPIC,
               "{\"model\":\"c\",\"max_tokens\":9,\"messages\":[{\"role\":"
               "\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\""
               ":\"t\",\"content\":\"" PASSAGE "\"}]}]}", bad);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.pct, 100);

    score_body(SP_PROVIDER_GOOGLE,
               "{\"systemInstruction\":{\"parts\":[{\"text\":\"" PASSAGE "\"}]}"
               ",\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"How?\""
               "}]}]}", good);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.pct, 0);

    /* a short system prompt and a short question: no material */
    score_body(SP_PROVIDER_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\""
               ":\"You are helpful.\"},{\"role\":\"user\",\"content\":\"How "
               "did Norvale do?\"}]}", good);
    assert_int_equal(res.grounded, 0);
    assert_int_equal(res.pct, 10);

    /* a document pasted into a user turn of 400+ bytes is material */
    score_body(SP_PROVIDER_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
               "\"Here is the report. " PASSAGE " " PASSAGE " What happened?"
               "\"}]}", bad);
    assert_int_equal(res.grounded, 1);
    assert_int_equal(res.pct, 100);

    /* the question's own names are no invention */
    score_body(SP_PROVIDER_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\""
               ":\"" PASSAGE "\"},{\"role\":\"user\",\"content\":\"And what "
               "about Hollis Partners?\"}]}",
               "I have nothing on Hollis Partners.");
    assert_int_equal(res.claims, 1);
    assert_int_equal(res.unsupported, 0);

    /* a body that is not JSON: signals only */
    score_body(SP_PROVIDER_OPENAI, "{\"messages\":[", good);
    assert_int_equal(res.grounded, 0);
    assert_int_equal(res.pct, 10);

    sp_halluc_score(SP_PROVIDER_OPENAI, NULL, 0, &ans, &res);
    assert_int_equal(res.grounded, 0);
}


/* every prefix of the inputs, each in a buffer of exactly its size */
static void
test_halluc_never_reads_past_len(void **state)
{
    size_t        i, k, n, m;
    char         *copy;
    const char   *answers[] = {
        "{\"choices\":[{\"message\":{\"content\":\"a \\\"q\\u00e9\\\" \"},"
        "\"finish_reason\":\"length\"}]}",
        "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\""
        ",\"text\":\"x\"}}",
        "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}]",
        NULL
    };
    const char   *texts[] = {
        "On March 3, 2024 Norvale made $3,200,000.5 (12%) per \"Atlas",
        "3 March 2024 \xe2\x80\x9cquote\xe2\x80\x9d 2024-03-0 1 234,5 Bank of",
        "1,234.567.8 9 999 9 Sept. 3rd, 2021 May 2020 GPT-4 A. B. Ccc Ddd ",
        NULL
    };

    for (i = 0; answers[i] != NULL; i++) {
        n = strlen(answers[i]);

        for (k = 0; k <= n; k++) {
            copy = exact(answers[i], k);
            sp_halluc_answer_init(&ans);
            (void) sp_halluc_answer_json(SP_PROVIDER_OPENAI, copy, k, &ans);
            assert_true(ans.len < SP_HALLUC_TEXT_MAX);
            free(copy);
        }
    }

    for (i = 0; texts[i] != NULL; i++) {
        n = strlen(texts[i]);

        for (k = 0; k <= n; k++) {
            /* the answer's text ends at len too: no NUL after it */
            sp_halluc_answer_init(&ans);
            memset(ans.text, 'Z', 64);
            memcpy(ans.text, texts[i], k);
            ans.len = k;

            m = strlen(texts[(i + 1) % 3]);
            m = k < m ? k : m;
            copy = exact(texts[(i + 1) % 3], m);
            sp_halluc_score_text(copy, m, &ans, &res);
            assert_true(res.pct >= 0 && res.pct <= 100);
            assert_true(res.unsupported <= res.claims);
            free(copy);
        }
    }
}


/* ---- the labelled set --------------------------------------------------- */

static void
test_halluc_labelled_set(void **state)
{
    int           pct[512], label[512];
    char         *body, *answer;
    FILE         *f;
    char          line[65536];
    size_t        n, i, j, ng, nu;
    double        auc, mean_g, mean_u;
    json_t       *item;
    const char   *path, *provider, *name;
    json_error_t  jerr;

    path = getenv("HALLUC_SET");
    f = fopen(path ? path : SET_PATH, "r");
    if (f == NULL) {
        fail_msg("%s: cannot open (run from the repository root)",
                 path ? path : SET_PATH);
    }

    n = 0;
    ng = 0;
    nu = 0;
    mean_g = 0;
    mean_u = 0;

    while (fgets(line, sizeof(line), f) != NULL && n < 512) {
        item = json_loads(line, 0, &jerr);
        assert_non_null(item);

        provider = json_string_value(json_object_get(item, "provider"));
        name = json_string_value(json_object_get(item, "id"));
        label[n] = strcmp(json_string_value(json_object_get(item, "label")),
                          "ungrounded") == 0;

        body = json_dumps(json_object_get(item, "body"), JSON_COMPACT);
        answer = json_dumps(json_object_get(item, "answer"), JSON_COMPACT);
        assert_non_null(body);
        assert_non_null(answer);

        sp_halluc_answer_init(&ans);
        assert_int_equal(sp_halluc_answer_json(
                             sp_provider_from_name(provider, strlen(provider)),
                             answer, strlen(answer), &ans), SP_OK);
        assert_true(ans.len > 0 && ans.finished);

        sp_halluc_score(sp_provider_from_name(provider, strlen(provider)),
                        body, strlen(body), &ans, &res);

        /* every item supplies its passage as material */
        if (!res.grounded) {
            fail_msg("%s: not grounded (%s)", name, res.basis);
        }

        pct[n] = res.pct;

        if (getenv("HALLUC_REPORT") != NULL) {
            printf("%-22s %-10s %3d  %s\n", name,
                   label[n] ? "ungrounded" : "grounded", res.pct, res.basis);
        }

        if (label[n]) {
            nu++;
            mean_u += res.pct;

        } else {
            ng++;
            mean_g += res.pct;
        }

        free(body);
        free(answer);
        json_decref(item);
        n++;
    }

    fclose(f);

    assert_true(ng >= 60 && nu >= 60);

    mean_g /= ng;
    mean_u /= nu;

    /* AUC: the chance an ungrounded item scores above a grounded one */
    auc = 0;

    for (i = 0; i < n; i++) {
        for (j = 0; j < n; j++) {
            if (label[i] && !label[j]) {
                auc += pct[i] > pct[j] ? 1 : pct[i] == pct[j] ? 0.5 : 0;
            }
        }
    }

    auc /= (double) ng * nu;

    printf("halluc set: %zu items (%zu grounded, %zu ungrounded), AUC %.3f,"
           " mean grounded %.1f, mean ungrounded %.1f\n",
           n, ng, nu, auc, mean_g, mean_u);

    assert_true(auc >= 0.9);
    assert_true(mean_u - mean_g >= 30);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_halluc_openai_chat),
        cmocka_unit_test(test_halluc_openai_responses),
        cmocka_unit_test(test_halluc_anthropic),
        cmocka_unit_test(test_halluc_google),
        cmocka_unit_test(test_halluc_cohere),
        cmocka_unit_test(test_halluc_answer_refuses_non_json),
        cmocka_unit_test(test_halluc_answer_keeps_at_most_max),
        cmocka_unit_test(test_halluc_claims_numbers),
        cmocka_unit_test(test_halluc_claims_dates),
        cmocka_unit_test(test_halluc_claims_quotes_entities),
        cmocka_unit_test(test_halluc_score_grounded),
        cmocka_unit_test(test_halluc_score_signals_only),
        cmocka_unit_test(test_halluc_score_bodies),
        cmocka_unit_test(test_halluc_never_reads_past_len),
        cmocka_unit_test(test_halluc_labelled_set),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
