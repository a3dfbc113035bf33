/*
 * libspendpol semantic cache: the prompt each provider's body gives, the
 * lexical guard (every category both ways, paraphrases, hostile text),
 * quantised vectors and their search, the embeddings endpoints' bodies
 * and answers.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <cmocka.h>
#include <jansson.h>

#include "sp_semantic.h"


/* ---- the prompt --------------------------------------------------------- */

typedef struct {
    int                    rc;
    char                   err[256];
    char                  *scratch;
    char                  *body;
    sp_semantic_prompt_t   p;
} prompt_t;


/*
 * The prompt of body, the body copied into a buffer of exactly its
 * length and the scratch exactly what it asks for (ASan sees any read or
 * write past either).
 */
static void
prompt_of(prompt_t *pr, sp_provider_e provider, const char *body,
    unsigned flags)
{
    size_t  len, need;

    len = strlen(body);
    pr->body = malloc(len ? len : 1);
    assert_non_null(pr->body);
    memcpy(pr->body, body, len);

    need = sp_semantic_prompt_scratch(len);
    pr->scratch = malloc(need);
    assert_non_null(pr->scratch);

    pr->err[0] = '\0';
    pr->rc = sp_semantic_prompt(provider, pr->body, len, flags,
                                pr->scratch, need, &pr->p, pr->err,
                                sizeof(pr->err));
}


static void
prompt_free(prompt_t *pr)
{
    free(pr->body);
    free(pr->scratch);
}


static void
assert_str(sp_str_t s, const char *expect)
{
    char  *copy;

    copy = strndup(s.data, s.len);
    assert_non_null(copy);
    assert_int_equal(s.len, strlen(expect));
    assert_string_equal(copy, expect);
    free(copy);
}


static void
expect_prompt(sp_provider_e provider, const char *body, unsigned flags,
    const char *user, const char *system, const char *text)
{
    prompt_t  pr;

    prompt_of(&pr, provider, body, flags);

    if (pr.rc != SP_OK) {
        fail_msg("%s: %s", body, pr.err);
    }

    assert_str(pr.p.user, user);
    assert_str(pr.p.system, system);
    assert_str(pr.p.text, text);
    prompt_free(&pr);
}


static void
expect_refused(sp_provider_e provider, const char *body, const char *why)
{
    prompt_t  pr;

    prompt_of(&pr, provider, body, 0);
    assert_int_equal(pr.rc, SP_ERROR);

    if (strstr(pr.err, why) == NULL) {
        fail_msg("%s: \"%s\" lacks \"%s\"", body, pr.err, why);
    }

    prompt_free(&pr);
}


static void
test_prompt_openai_last_user_message_and_system(void **state)
{
    const char  *body =
        "{\"model\":\"gpt-4o\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\","
        "\"text\":\"Answer in French.\"}]},"
        "{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"assistant\",\"content\":\"Hello!\"},"
        "{\"role\":\"user\",\"content\":\"What is the capital of France?\"}"
        "],\"temperature\":0}";

    expect_prompt(SP_PROVIDER_OPENAI, body, 0,
                  "What is the capital of France?",
                  "Be brief.\nAnswer in French.",
                  "What is the capital of France?");
    expect_prompt(SP_PROVIDER_AZURE, body, SP_SEMANTIC_WITH_SYSTEM,
                  "What is the capital of France?",
                  "Be brief.\nAnswer in French.",
                  "Be brief.\nAnswer in French.\n\n"
                  "What is the capital of France?");
    expect_prompt(SP_PROVIDER_MISTRAL, body, 0,
                  "What is the capital of France?",
                  "Be brief.\nAnswer in French.",
                  "What is the capital of France?");
}


static void
test_prompt_content_array_joins_text_and_skips_images(void **state)
{
    expect_prompt(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"Describe\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:x\"}},"
        "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"QQ==\"}},"
        "{\"type\":\"text\",\"text\":\"this picture\"}]}]}",
        SP_SEMANTIC_WITH_SYSTEM, "Describe\nthis picture", "",
        "Describe\nthis picture");

    /* only an image: nothing to embed */
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}",
        "no text");
}


static void
test_prompt_anthropic_system_string_and_blocks(void **state)
{
    expect_prompt(SP_PROVIDER_ANTHROPIC,
        "{\"model\":\"claude\",\"max_tokens\":10,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Why?\"}],"
        "\"system\":\"You are terse.\"}",
        SP_SEMANTIC_WITH_SYSTEM, "Why?", "You are terse.",
        "You are terse.\n\nWhy?");

    expect_prompt(SP_PROVIDER_ANTHROPIC,
        "{\"system\":[{\"type\":\"text\",\"text\":\"A\","
        "\"cache_control\":{\"type\":\"ephemeral\"}},"
        "{\"type\":\"text\",\"text\":\"B\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"image\",\"source\":{\"type\":\"base64\","
        "\"data\":\"AAAA\"}},{\"type\":\"text\",\"text\":\"What is it?\"}"
        "]}]}",
        0, "What is it?", "A\nB", "What is it?");

    /* a tool result is not the user's text */
    expect_refused(SP_PROVIDER_ANTHROPIC,
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"t\",\"content\":\"42\"}]}]}",
        "no text");

    /* a prefill: the answer depends on it */
    expect_refused(SP_PROVIDER_ANTHROPIC,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"assistant\",\"content\":\"Sure\"}]}",
        "not the user's");
}


static void
test_prompt_google_contents_and_system_instruction(void **state)
{
    expect_prompt(SP_PROVIDER_GOOGLE,
        "{\"systemInstruction\":{\"parts\":[{\"text\":\"Be kind.\"}]},"
        "\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"}]},"
        "{\"role\":\"model\",\"parts\":[{\"text\":\"Hello\"}]},"
        "{\"role\":\"user\",\"parts\":[{\"text\":\"Tell me\"},"
        "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"AA==\"}},"
        "{\"text\":\"a joke\"}]}]}",
        SP_SEMANTIC_WITH_SYSTEM, "Tell me\na joke", "Be kind.",
        "Be kind.\n\nTell me\na joke");

    /* snake_case spelling, no role (the user's) */
    expect_prompt(SP_PROVIDER_GOOGLE,
        "{\"contents\":[{\"parts\":[{\"text\":\"Why is the sky blue?\"}]}],"
        "\"system_instruction\":{\"parts\":[{\"text\":\"Short.\"}]}}",
        0, "Why is the sky blue?", "Short.", "Why is the sky blue?");

    expect_refused(SP_PROVIDER_GOOGLE,
        "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"a\"}]},"
        "{\"role\":\"model\",\"parts\":[{\"text\":\"b\"}]}]}",
        "not the user's");
    expect_refused(SP_PROVIDER_GOOGLE, "{\"messages\":[]}",
                   "no contents");
}


static void
test_prompt_cohere_v2_and_v1(void **state)
{
    expect_prompt(SP_PROVIDER_COHERE,
        "{\"model\":\"command-r\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Formal.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"Summarise this\"}]}]}",
        SP_SEMANTIC_WITH_SYSTEM, "Summarise this", "Formal.",
        "Formal.\n\nSummarise this");

    expect_prompt(SP_PROVIDER_COHERE,
        "{\"message\":\"And in winter?\",\"preamble\":\"Travel agent.\","
        "\"chat_history\":[{\"role\":\"USER\",\"message\":\"Rome?\"},"
        "{\"role\":\"CHATBOT\",\"message\":\"Sunny.\"}]}",
        SP_SEMANTIC_WITH_SYSTEM, "And in winter?", "Travel agent.",
        "Travel agent.\n\nAnd in winter?");

    expect_refused(SP_PROVIDER_COHERE, "{\"message\":42}", "not a string");
    expect_refused(SP_PROVIDER_COHERE, "{\"model\":\"x\"}", "no messages");
}


static void
test_prompt_context_and_turns(void **state)
{
    prompt_t  a, b, c, d;

    prompt_of(&a, SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Plan a trip\"},"
        "{\"role\":\"assistant\",\"content\":\"Where to?\"},"
        "{\"role\":\"user\",\"content\":\"Yes\"}]}", 0);
    prompt_of(&b, SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Delete my data\"},"
        "{\"role\":\"assistant\",\"content\":\"Are you sure?\"},"
        "{\"role\":\"user\",\"content\":\"Yes\"}]}", 0);
    prompt_of(&c, SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Yes\"}]}", 0);
    prompt_of(&d, SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Yes!\"}],"
        "\"temperature\":0}", 0);

    assert_int_equal(a.rc, SP_OK);
    assert_int_equal(b.rc, SP_OK);
    assert_int_equal(a.p.turns, 2);
    assert_int_equal(c.p.turns, 0);

    /* the same last message after different turns: different contexts */
    assert_true(a.p.context != b.p.context);
    assert_true(a.p.context != c.p.context);

    /* single turns without a system prompt share the context */
    assert_true(c.p.context == d.p.context);

    prompt_free(&a);
    prompt_free(&b);
    prompt_free(&c);
    prompt_free(&d);

    /* the system prompt is part of the context */
    prompt_of(&a, SP_PROVIDER_ANTHROPIC,
        "{\"system\":\"A\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"Q\"}]}", 0);
    prompt_of(&b, SP_PROVIDER_ANTHROPIC,
        "{\"system\":\"B\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"Q\"}]}", 0);
    assert_true(a.p.context != b.p.context);
    prompt_free(&a);
    prompt_free(&b);
}


static void
test_prompt_escapes_decoded_and_bad_json_refused(void **state)
{
    expect_prompt(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":"
        "\"caf\\u00e9 \\\"x\\\"\\n\\ud83d\\ude00 \\/ \\\\\"}]}", 0,
        "caf\xc3\xa9 \"x\"\n\xf0\x9f\x98\x80 / \\", "",
        "caf\xc3\xa9 \"x\"\n\xf0\x9f\x98\x80 / \\");

    /* a member name spelled with escapes is still read */
    expect_prompt(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"r\\u006fle\":\"user\",\"content\":\"Hi\"}]}",
        0, "Hi", "", "Hi");

    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud83d\"}]}",
        "not UTF-8");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
        "not UTF-8");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"role\":\"user\","
        "\"content\":\"x\"}]}", "not JSON");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}", "not JSON");
    expect_refused(SP_PROVIDER_OPENAI, "[1]", "not a JSON object");
    expect_refused(SP_PROVIDER_OPENAI, "", "not a JSON object");
    expect_refused(SP_PROVIDER_OPENAI, "{\"messages\":{}}", "not an array");
    expect_refused(SP_PROVIDER_OPENAI, "{\"messages\":[]}", "no user");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", "no text");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
        "{\"role\":\"tool\",\"content\":\"42\"}]}", "not the user's");
    expect_refused(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":{\"a\":1}}]}",
        "not a string or an array");
    expect_refused(SP_PROVIDER_UNKNOWN, "{}", "unknown provider");
}


static void
test_prompt_scratch_too_small_refused(void **state)
{
    char                   err[128], scratch[4];
    sp_semantic_prompt_t   p;
    const char            *body;

    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello world\"}]}";

    assert_int_equal(sp_semantic_prompt(SP_PROVIDER_OPENAI, body,
                                        strlen(body), 0, scratch,
                                        sizeof(scratch), &p, err,
                                        sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "scratch too small"));
}


static void
test_prompt_deep_and_large_bodies_bounded(void **state)
{
    size_t    i, n;
    char     *body;
    prompt_t  pr;

    /* 100,000 nested arrays in an ignored member: refused, not a crash */
    n = 100000;
    body = malloc(2 * n + 64);
    assert_non_null(body);
    strcpy(body, "{\"x\":");

    for (i = 0; i < n; i++) {
        body[5 + i] = '[';
    }

    body[5 + n] = '\0';
    prompt_of(&pr, SP_PROVIDER_OPENAI, body, 0);
    assert_int_equal(pr.rc, SP_ERROR);
    prompt_free(&pr);
    free(body);

    /* a 1 MB message: read whole */
    n = 1024 * 1024;
    body = malloc(n + 128);
    assert_non_null(body);
    strcpy(body, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    i = strlen(body);
    memset(body + i, 'a', n);
    strcpy(body + i + n, "\"}]}");
    prompt_of(&pr, SP_PROVIDER_OPENAI, body, 0);
    assert_int_equal(pr.rc, SP_OK);
    assert_int_equal(pr.p.user.len, n);
    prompt_free(&pr);
    free(body);
}


/* ---- the guard --------------------------------------------------------- */

static int
guard(const char *a, const char *b, char *reason, size_t len)
{
    int     rc;
    char   *x, *y;
    size_t  alen, blen;

    /* exact-size copies: ASan sees a read past either */
    alen = strlen(a);
    blen = strlen(b);
    x = malloc(alen ? alen : 1);
    y = malloc(blen ? blen : 1);
    assert_non_null(x);
    assert_non_null(y);
    memcpy(x, a, alen);
    memcpy(y, b, blen);

    rc = sp_semantic_guard(x, alen, y, blen, reason, len);

    free(x);
    free(y);

    return rc;
}


static void
expect_hit(const char *a, const char *b)
{
    char  reason[128];

    if (guard(a, b, reason, sizeof(reason)) != 1) {
        fail_msg("\"%s\" / \"%s\" refused: %s", a, b, reason);
    }

    if (guard(b, a, reason, sizeof(reason)) != 1) {
        fail_msg("\"%s\" / \"%s\" refused: %s", b, a, reason);
    }
}


static void
expect_miss(const char *a, const char *b, const char *why)
{
    char  reason[128];

    if (guard(a, b, reason, sizeof(reason)) != 0) {
        fail_msg("\"%s\" / \"%s\" may hit", a, b);
    }

    if (strcmp(reason, why) != 0) {
        fail_msg("\"%s\" / \"%s\": \"%s\", not \"%s\"", a, b, reason, why);
    }

    /* symmetric */
    assert_int_equal(guard(b, a, reason, sizeof(reason)), 0);
}


static void
test_guard_2fa_and_paraphrases(void **state)
{
    expect_miss("enable 2FA", "disable 2FA",
                "negation differs: enable vs disable");
    expect_hit("What is the capital of France?",
               "what's the capital of France");
    expect_hit("How do I reset my password?",
               "how can i reset my password");
    expect_hit("Explain recursion simply.",
               "Could you explain recursion in simple terms?");
    expect_hit("Summarise the meeting notes below.",
               "Please summarize the meeting notes below");
    expect_hit("I'm looking for a good book about Rome",
               "I want a good book about Rome.");
    expect_hit("", "");
}


static void
test_guard_negation(void **state)
{
    expect_miss("Should I use a VPN?", "Should I not use a VPN?",
                "negation differs: none vs not");
    expect_miss("why does it work", "why doesn't it work",
                "negation differs: none vs not");
    expect_miss("why does it work", "why doesn\xe2\x80\x99t it work",
                "negation differs: none vs not");
    expect_miss("allow cookies", "deny cookies",
                "negation differs: allow vs deny");
    expect_miss("including tax", "excluding tax",
                "negation differs: include vs exclude");
    expect_miss("turn it on", "turn it off",
                "negation differs: on vs off");
    expect_miss("set the flag to true", "set the flag to false",
                "negation differs: true vs false");
    expect_miss("wash before cooking", "wash after cooking",
                "negation differs: before vs after");
    expect_miss("prices above average", "prices below average",
                "negation differs: above vs below");
    expect_miss("increase the font", "decrease the font",
                "negation differs: increase vs decrease");
    expect_miss("the maximum size", "the minimum size",
                "negation differs: max vs min");
    expect_miss("a salad with onions", "a salad without onions",
                "negation differs: none vs without");
    expect_miss("I never said that", "I said that",
                "negation differs: never vs none");

    /* one token whatever the spelling */
    expect_hit("Don't enable it", "do not enable it");
    expect_hit("it is enabled", "is it enabled?");
    expect_hit("I can't sleep", "I cannot sleep");
    expect_hit("DON'T panic", "do not panic");
    expect_hit("it won\xe2\x80\x99t start", "it will not start");
}


static void
test_guard_numbers(void **state)
{
    expect_miss("buy 3 apples", "buy 4 apples", "number differs: 3 vs 4");
    expect_miss("3.5kg of rice", "3.5g of rice",
                "number differs: 3.5kg vs 3.5g");
    expect_miss("a 10% tip", "a 15% tip", "number differs: 10% vs 15%");
    expect_miss("costs $5", "costs \xe2\x82\xac" "5", "number differs");
    expect_miss("ten apples", "eleven apples",
                "number differs: 10 vs 11");
    expect_miss("a thousand words", "a million words",
                "number differs: 1000 vs 1000000");
    expect_miss("the first answer", "the second answer",
                "number differs: 1st vs 2nd");
    expect_miss("covid-19 rules", "covid-20 rules",
                "number differs: 19 vs 20");

    /* long numbers are not quoted: they may be card or account numbers */
    expect_miss("card 4111111111111111", "card 4111111111111112",
                "number differs");

    expect_hit("buy three apples", "buy 3 apples");
    expect_hit("Buy 3 apples", "buy 3 apples!");
    expect_hit("1,000 USD", "1,000 USD.");
}


static void
test_guard_dates_and_times(void **state)
{
    expect_miss("the weather on Monday", "the weather on Tuesday",
                "date or time differs: monday vs tuesday");
    expect_miss("the weather tomorrow", "the weather today",
                "date or time differs: tomorrow vs today");
    expect_miss("meet at 10 am", "meet at 10 pm",
                "date or time differs: am vs pm");
    expect_miss("due 12/03/2026", "due 12/04/2026", "number differs");
    expect_miss("since 2026-12-03", "since 2026-12-04", "number differs");
    expect_miss("born on 3 December", "born on 3 November",
                "date or time differs: december vs november");
    expect_miss("sales last week", "sales last month",
                "date or time differs: week vs month");
    expect_miss("at 10:30", "at 10:45", "number differs: 10:30 vs 10:45");

    expect_hit("what happened in March", "What happened in march?");
    expect_hit("sales last week", "last week's sales");
}


static void
test_guard_quoted_strings(void **state)
{
    expect_miss("deploy to \"prod\"", "deploy to \"staging\"",
                "quoted string differs");
    expect_miss("grep for 'error'", "grep for 'warning'",
                "quoted string differs");
    expect_miss("run `ls -la`", "run `ls -l`", "quoted string differs");
    expect_miss("translate \xe2\x80\x9c" "thank you\xe2\x80\x9d",
                "translate \xe2\x80\x9c" "excuse me\xe2\x80\x9d",
                "quoted string differs");
    expect_miss("the word \xe2\x80\x98pear\xe2\x80\x99",
                "the word \xe2\x80\x98plum\xe2\x80\x99",
                "quoted string differs");
    expect_miss("```\nx = a\n```", "```\nx = b\n```",
                "quoted string differs");

    /* a quoted secret is never in the reason */
    expect_miss("use key 'sk-abc123'", "use key 'sk-abc124'",
                "quoted string differs");

    /* apostrophes are not quotes */
    expect_hit("it's the users' choice", "it's the users' choice!");
    expect_hit("translate \"good morning\"",
               "Please translate \"good morning\".");
}


static void
test_guard_identifiers(void **state)
{
    expect_miss("call getUser", "call getUsers", "identifier differs");
    expect_miss("read user_id", "read user_name", "identifier differs");
    expect_miss("open /etc/hosts", "open /etc/passwd",
                "identifier differs");
    expect_miss("fetch https://a.example/x", "fetch https://b.example/x",
                "identifier differs");
    expect_miss("mail bob@example.com", "mail alice@example.com",
                "identifier differs");
    expect_miss("import os.path", "import sys.path", "identifier differs");
    expect_miss("compare gpt4 and claude", "compare gpt5 and claude",
                "identifier differs");
    expect_miss("what does the API do", "what does the SDK do",
                "identifier differs");
    expect_miss("C:\\Users\\bob", "C:\\Users\\eve", "identifier differs");

    expect_hit("What does the API do?", "what does the API do");
}


static void
test_guard_named_entities(void **state)
{
    expect_miss("What is the population of Paris?",
                "What is the population of Rome?", "named entity differs");
    expect_miss("flights to New York", "flights to New Jersey",
                "named entity differs");
    expect_miss("Tell me about the Eiffel Tower",
                "Tell me about the tower", "named entity differs");

    /* a capital at a sentence's start is not a name; France's = France */
    expect_hit("Tell me about France's history.",
               "tell me about the history of France");
    expect_hit("Hello. Where is Lisbon?", "hello, where is Lisbon");
    expect_hit("I think so", "i think so");
}


static void
test_guard_reason_short_and_categories_in_order(void **state)
{
    char  reason[128];

    /* negation is reported before numbers */
    assert_int_equal(guard("enable 2 things", "disable 3 things", reason,
                           sizeof(reason)), 0);
    assert_string_equal(reason, "negation differs: enable vs disable");

    /* a long word is not quoted */
    assert_int_equal(guard("in 12345678901 ms", "in 1 ms", reason,
                           sizeof(reason)), 0);
    assert_string_equal(reason, "number differs");

    /* a small buffer holds what fits; NULL is allowed */
    assert_int_equal(guard("3", "4", reason, 8), 0);
    assert_int_equal(strlen(reason), 7);
    assert_int_equal(sp_semantic_guard("3", 1, "4", 1, NULL, 0), 0);
}


static void
test_guard_utf8_and_hostile_text(void **state)
{
    size_t   i, n;
    char    *big, *big2, reason[128];
    clock_t  start;
    double   ms;

    expect_hit("caf\xc3\xa9 au lait", "caf\xc3\xa9 au lait?");
    expect_miss("weather in Z\xc3\xbcrich", "weather in Zagreb",
                "named entity differs");

    /* cut and invalid sequences, NUL bytes: no crash, a decision */
    assert_int_equal(sp_semantic_guard("a\xe2\x80", 3, "a\xe2\x80", 3,
                                       reason, sizeof(reason)), 1);
    assert_int_equal(sp_semantic_guard("no\0yes", 6, "no\0yes", 6, reason,
                                       sizeof(reason)), 1);
    assert_int_equal(sp_semantic_guard("no\0yes", 6, "yes", 3, reason,
                                       sizeof(reason)), 0);
    assert_int_equal(sp_semantic_guard("\xff\xfe", 2, "", 0, reason,
                                       sizeof(reason)), 1);

    /* unterminated quotes quote the rest */
    expect_miss("say \"hello", "say \"help", "quoted string differs");
    expect_miss("run `rm -rf", "run `rm -r", "quoted string differs");
    expect_hit("it's 'quoted", "it's 'quoted");
    expect_miss("empty \"\"", "empty", "quoted string differs");

    /* 1 MB of apostrophes, quotes and words: linear, then refused */
    n = 1024 * 1024;
    big = malloc(n);
    big2 = malloc(n);
    assert_non_null(big);
    assert_non_null(big2);

    for (i = 0; i < n; i++) {
        big[i] = "'a b' 'c \" `"[i % 13];
        big2[i] = "x Y z "[i % 6];
    }

    start = clock();
    assert_int_equal(sp_semantic_guard(big, n, big, n, reason,
                                       sizeof(reason)), 0);
    assert_string_equal(reason, "too many tokens to compare");
    assert_int_equal(sp_semantic_guard(big2, n, big2, n, reason,
                                       sizeof(reason)), 0);
    assert_string_equal(reason, "too many tokens to compare");

    /* 1 MB of plain lowercase words: no tokens at all */
    for (i = 0; i < n; i++) {
        big[i] = "the cat sat "[i % 12];
    }

    assert_int_equal(sp_semantic_guard(big, n, big, n, reason,
                                       sizeof(reason)), 1);

    /* apostrophes that never close, each a candidate opener */
    for (i = 0; i < n; i++) {
        big[i] = (i % 2) ? 'x' : ' ';
        big[i] = (i % 4 == 1) ? '\'' : big[i];
    }

    assert_int_equal(sp_semantic_guard(big, n, big, n, reason,
                                       sizeof(reason)), 1);

    ms = (double) (clock() - start) * 1000 / CLOCKS_PER_SEC;
    print_message("guard on 4 x 2 MB: %.1f ms\n", ms);
    assert_true(ms < 5000);

    free(big);
    free(big2);
}


/* ---- vectors ------------------------------------------------------------ */

static uint64_t  rng_state = 0x9e3779b97f4a7c15ULL;

static double
rng_uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;

    return (double) (rng_state >> 11) / 9007199254740992.0;
}


static double
rng_gauss(void)
{
    double  u, v;

    u = rng_uniform();
    v = rng_uniform();

    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}


static double
cosine(const float *a, const float *b, size_t dim)
{
    size_t  i;
    double  dot, na, nb;

    dot = na = nb = 0;

    for (i = 0; i < dim; i++) {
        dot += (double) a[i] * b[i];
        na += (double) a[i] * a[i];
        nb += (double) b[i] * b[i];
    }

    return dot / sqrt(na * nb);
}


static void
test_quantise_refuses_bad_vectors(void **state)
{
    float   v[4] = { 0.5f, -0.25f, 0.0f, 1.0f };
    int8_t  q[4];

    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_OK);
    assert_int_equal(q[0], 64);
    assert_int_equal(q[1], -32);
    assert_int_equal(q[2], 0);
    assert_int_equal(q[3], 127);

    assert_int_equal(sp_semantic_quantise(v, 0, q), SP_ERROR);
    assert_int_equal(sp_semantic_quantise(v, SP_SEMANTIC_DIM_MAX + 1, q),
                     SP_ERROR);

    v[1] = NAN;
    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_ERROR);
    v[1] = INFINITY;
    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_ERROR);
    v[1] = -INFINITY;
    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_ERROR);

    memset(v, 0, sizeof(v));
    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_ERROR);

    /* the scale is dropped: 1e-30 and 1e30 give the same vector */
    v[0] = 1e-30f;
    v[1] = -2e-30f;
    assert_int_equal(sp_semantic_quantise(v, 4, q), SP_OK);
    assert_int_equal(q[0], 64);
    assert_int_equal(q[1], -127);
}


static void
test_similarity_within_001_of_float_cosine(void **state)
{
    size_t   dim, i, k, trials;
    float   *a, *b;
    int8_t  *qa, *qb;
    double   exact, s, worst, rho;
    size_t   dims[] = { 768, 1536, 3072 };

    a = malloc(3072 * sizeof(float));
    b = malloc(3072 * sizeof(float));
    qa = malloc(3072);
    qb = malloc(3072);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(qa);
    assert_non_null(qb);

    worst = 0;
    trials = 0;

    for (k = 0; k < sizeof(dims) / sizeof(dims[0]); k++) {
        dim = dims[k];

        /* independent pairs, and pairs near the threshold */
        for (rho = 0; rho <= 0.99; rho += 0.0495) {
            for (int t = 0; t < 20; t++) {
                for (i = 0; i < dim; i++) {
                    a[i] = (float) rng_gauss();
                    b[i] = (float) (rho * a[i]
                                    + sqrt(1 - rho * rho) * rng_gauss());
                }

                assert_int_equal(sp_semantic_quantise(a, dim, qa), SP_OK);
                assert_int_equal(sp_semantic_quantise(b, dim, qb), SP_OK);

                exact = cosine(a, b, dim);
                s = sp_semantic_similarity(qa, qb, dim);

                if (fabs(s - exact) > worst) {
                    worst = fabs(s - exact);
                }

                trials++;
            }
        }

        /* a vector with itself */
        assert_true(fabs(sp_semantic_similarity(qa, qa, dim) - 1) < 1e-12);
    }

    print_message("similarity: worst |q - exact| %.5f over %zu pairs\n",
                  worst, trials);
    assert_true(worst <= 0.01);

    /* opposite vectors: -1; zero vectors: 0 */
    for (i = 0; i < 16; i++) {
        qa[i] = (int8_t) (i + 1);
        qb[i] = (int8_t) -(i + 1);
    }

    assert_true(fabs(sp_semantic_similarity(qa, qb, 16) + 1) < 1e-12);
    memset(qb, 0, 16);
    assert_true(sp_semantic_similarity(qa, qb, 16) == 0);

    free(a);
    free(b);
    free(qa);
    free(qb);
}


/* the buffers of a search test: count vectors of dim, the query's */
typedef struct {
    float     *f;
    float     *qf;
    int8_t    *vectors;
    int8_t    *query;
    uint32_t  *norms;
} search_bufs_t;


static void
search_bufs(search_bufs_t *b, size_t count, size_t dim)
{
    size_t  j;

    b->f = malloc(dim * sizeof(float));
    b->qf = malloc(dim * sizeof(float));
    b->vectors = malloc(count * dim);
    b->query = malloc(dim);
    b->norms = malloc(count * sizeof(uint32_t));
    assert_non_null(b->f);
    assert_non_null(b->qf);
    assert_non_null(b->vectors);
    assert_non_null(b->query);
    assert_non_null(b->norms);

    for (j = 0; j < dim; j++) {
        b->qf[j] = (float) rng_gauss();
    }
}


static void
search_bufs_free(search_bufs_t *b)
{
    free(b->f);
    free(b->qf);
    free(b->vectors);
    free(b->query);
    free(b->norms);
}


static void
test_search_best_above_threshold_or_none(void **state)
{
    size_t     count, dim, i, j, best, best2;
    size_t     dims[] = { 1, 7, 16, 33, 100, 1536 };
    double          sim, sim2, s;
    int             k;
    int8_t          none[16] = { 1 };
    search_bufs_t   b;

    count = 200;

    for (k = 0; k < (int) (sizeof(dims) / sizeof(dims[0])); k++) {
        dim = dims[k];
        search_bufs(&b, count, dim);

        for (i = 0; i < count; i++) {
            for (j = 0; j < dim; j++) {
                b.f[j] = (float) rng_gauss();

                /* vector 137 is the query, slightly moved */
                if (i == 137) {
                    b.f[j] = b.qf[j] + 0.05f * b.f[j];
                }
            }

            if (dim == 1) {
                b.f[0] = (i == 137) ? b.qf[0] : -b.qf[0];
            }

            assert_int_equal(sp_semantic_quantise(b.f, dim,
                                                  b.vectors + i * dim),
                             SP_OK);
            b.norms[i] = sp_semantic_norm(b.vectors + i * dim, dim);
        }

        assert_int_equal(sp_semantic_quantise(b.qf, dim, b.query), SP_OK);

        assert_int_equal(sp_semantic_search(b.vectors, b.norms, count, dim,
                                            b.query, 0.95, &best, &sim),
                         SP_OK);
        assert_int_equal(best, 137);
        assert_true(sim >= 0.95);

        /* without norms: the same answer */
        assert_int_equal(sp_semantic_search(b.vectors, NULL, count, dim,
                                            b.query, 0.95, &best2, &sim2),
                         SP_OK);
        assert_int_equal(best2, 137);
        assert_true(sim == sim2);

        /* the same as the pairwise similarity, exactly */
        s = sp_semantic_similarity(b.vectors + 137 * dim, b.query, dim);
        assert_true(s == sim);

        /* above the best: none, and the best seen */
        assert_int_equal(sp_semantic_search(b.vectors, b.norms, count, dim,
                                            b.query, sim + 1e-9, &best,
                                            &sim2),
                         SP_ERROR);
        assert_int_equal(best, SP_SEMANTIC_NONE);
        assert_true(sim2 == sim);

        /* without vector 137, nothing is close */
        if (dim > 16) {
            memset(b.vectors + 137 * dim, 0, dim);
            b.norms[137] = 0;
            assert_int_equal(sp_semantic_search(b.vectors, b.norms, count, dim,
                                                b.query, 0.95, &best, &sim),
                             SP_ERROR);
            assert_int_equal(best, SP_SEMANTIC_NONE);
            assert_true(sim < 0.5);
        }

        search_bufs_free(&b);
    }

    assert_int_equal(sp_semantic_search(NULL, NULL, 0, 16, none, 0.9,
                                        &best, &sim), SP_ERROR);
    assert_int_equal(best, SP_SEMANTIC_NONE);
}


/*
 * The search rules vectors out after a prefix: it must still find what
 * comparing all of them in full finds, at every threshold, with planted
 * vectors at many similarities to the query.
 */
static void
test_search_same_as_brute_force(void **state)
{
    size_t     count, dim, i, j, best, full;
    size_t     dims[] = { 256, 1000, 1536, SP_SEMANTIC_DIM_MAX };
    double     thresholds[] = { -1, 0, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99 };
    double          sim, fsim, rho;
    int             k, t, rc, frc, found;
    search_bufs_t   b;

    count = 300;
    found = 0;

    for (k = 0; k < (int) (sizeof(dims) / sizeof(dims[0])); k++) {
        dim = dims[k];
        search_bufs(&b, count, dim);

        for (i = 0; i < count; i++) {
            /* every tenth vector correlated with the query, up to 0.999 */
            rho = (i % 10 == 0) ? 0.5 + 0.499 * rng_uniform() : 0;

            for (j = 0; j < dim; j++) {
                b.f[j] = (float) (rho * b.qf[j]
                                + sqrt(1 - rho * rho) * rng_gauss());
            }

            assert_int_equal(sp_semantic_quantise(b.f, dim,
                                                  b.vectors + i * dim),
                             SP_OK);
            b.norms[i] = sp_semantic_norm(b.vectors + i * dim, dim);
        }

        assert_int_equal(sp_semantic_quantise(b.qf, dim, b.query), SP_OK);

        for (t = 0; t < (int) (sizeof(thresholds) / sizeof(double)); t++) {
            rc = sp_semantic_search(b.vectors, b.norms, count, dim, b.query,
                                    thresholds[t], &best, &sim);
            frc = sp_semantic_search(b.vectors, NULL, count, dim, b.query,
                                     thresholds[t], &full, &fsim);

            assert_int_equal(rc, frc);

            if (frc == SP_OK) {
                assert_int_equal(best, full);
                assert_true(sim == fsim);
                found++;

            } else {
                assert_int_equal(best, SP_SEMANTIC_NONE);
                assert_true(sim < thresholds[t]);
            }
        }

        search_bufs_free(&b);
    }

    /* some thresholds found a vector, some none */
    assert_true(found > 4 && found < 32);
}


/* ---- embeddings endpoints ---------------------------------------------- */

static int
embedding(sp_provider_e provider, const char *body, float *out,
    size_t max, size_t *dim, char *err)
{
    int     rc;
    char   *copy;
    size_t  len;

    len = strlen(body);
    copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, body, len);
    rc = sp_semantic_embedding(provider, copy, len, out, max, dim, err,
                               256);
    free(copy);

    return rc;
}


static void
expect_vector(sp_provider_e provider, const char *body)
{
    char    err[256];
    float   v[8];
    size_t  dim;

    if (embedding(provider, body, v, 8, &dim, err) != SP_OK) {
        fail_msg("%s: %s", body, err);
    }

    assert_int_equal(dim, 3);
    assert_true(v[0] == 0.5f);
    assert_true(v[1] == -0.25f);
    assert_true(v[2] == 1e-3f);
}


static void
expect_embedding_error(sp_provider_e provider, const char *body,
    size_t max, const char *why)
{
    char    err[256];
    float   v[8];
    size_t  dim;

    assert_int_equal(embedding(provider, body, v, max, &dim, err),
                     SP_ERROR);
    assert_int_equal(dim, 0);

    if (strstr(err, why) == NULL) {
        fail_msg("%s: \"%s\" lacks \"%s\"", body, err, why);
    }
}


static void
test_embedding_answers_per_provider(void **state)
{
    expect_vector(SP_PROVIDER_OPENAI,
        "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\","
        "\"index\":0,\"embedding\":[0.5, -0.25, 1e-3]}],"
        "\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":"
        "3,\"total_tokens\":3}}");
    expect_vector(SP_PROVIDER_AZURE,
        "{\"data\":[{\"embedding\":[0.5,-0.25,0.001]}]}");
    expect_vector(SP_PROVIDER_MISTRAL,
        " {\"id\":\"x\",\"data\":[{\"embedding\":[5e-1,-2.5E-1,1.0e-3],"
        "\"index\":0}]}");
    expect_vector(SP_PROVIDER_GOOGLE,
        "{\"embedding\":{\"values\":[0.5,-0.25,0.001]}}");
    expect_vector(SP_PROVIDER_GOOGLE,
        "{\"embeddings\":[{\"values\":[0.5,-0.25,0.001]},"
        "{\"values\":[1]}]}");
    expect_vector(SP_PROVIDER_COHERE,
        "{\"id\":\"x\",\"embeddings\":{\"float\":[[0.5,-0.25,0.001]]},"
        "\"texts\":[\"hi\"],\"meta\":{}}");
    expect_vector(SP_PROVIDER_COHERE,
        "{\"embeddings\":[[0.5,-0.25,0.001]]}");
}


static void
test_embedding_errors_name_what_was_expected(void **state)
{
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":\"AAAAAA==\"}]}", 8, "encoding_format");
    expect_embedding_error(SP_PROVIDER_OPENAI, "{\"data\":[]}", 8,
                           "data[0].embedding");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[1,\"2\"]}]}", 8,
        "data[0].embedding[1] is not a number");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[1,2,3]}]}", 2, "more than 2 values");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[1e39]}]}", 8, "out of float range");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[]}]}", 8, "is empty");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[1,2}]}", 8, "not JSON");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"error\":{\"message\":\"bad key\"}}", 8, "data[0].embedding");
    expect_embedding_error(SP_PROVIDER_GOOGLE, "{\"values\":[1]}", 8,
                           "embedding.values or embeddings[0].values");
    expect_embedding_error(SP_PROVIDER_COHERE,
        "{\"embeddings\":{\"int8\":[[1]]}}", 8, "embedding_types");
    expect_embedding_error(SP_PROVIDER_ANTHROPIC, "{}", 8,
                           "anthropic has no embeddings endpoint");
    expect_embedding_error(SP_PROVIDER_OPENAI, "", 8, "not a JSON object");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[null]}]}", 8, "not a number");
    expect_embedding_error(SP_PROVIDER_OPENAI,
        "{\"data\":[{\"embedding\":[0.00000000000000000000000000000000000"
        "0000000000000000000000000000001]}]}", 8, "spelled too long");
}


static void
expect_body(sp_provider_e provider, const char *model, sp_str_t text,
    const char *path_model, const char *path_text)
{
    int           rc;
    char          out[1024], err[128];
    size_t        written;
    json_t       *root, *v;
    json_error_t  jerr;

    rc = sp_semantic_embed_body(provider, sp_str_from(model), text, out,
                                sizeof(out), &written, err, sizeof(err));

    if (rc != SP_OK) {
        fail_msg("%d: %s", provider, err);
    }

    assert_int_equal(written, strlen(out));

    root = json_loadb(out, written, JSON_REJECT_DUPLICATES
                                    | JSON_ALLOW_NUL, &jerr);

    if (root == NULL) {
        fail_msg("%s: %s", out, jerr.text);
    }

    v = json_object_get(root, "model");

    if (path_model == NULL) {
        assert_null(v);

    } else {
        assert_string_equal(json_string_value(v), path_model);
    }

    if (strcmp(path_text, "input") == 0) {
        v = json_object_get(root, "input");

        if (provider == SP_PROVIDER_MISTRAL) {
            v = json_array_get(v, 0);
        }

        assert_true((json_object_get(root, "encoding_format") != NULL)
                    == (provider == SP_PROVIDER_OPENAI));

    } else if (strcmp(path_text, "texts") == 0) {
        v = json_array_get(json_object_get(root, "texts"), 0);
        assert_string_equal(json_string_value(json_object_get(root,
                                "input_type")), "search_query");

    } else {
        v = json_object_get(json_array_get(json_object_get(
                json_object_get(root, "content"), "parts"), 0), "text");
    }

    assert_non_null(v);
    assert_int_equal(json_string_length(v), text.len);
    assert_memory_equal(json_string_value(v), text.data, text.len);

    json_decref(root);
}


static void
test_embed_body_round_trips_through_jansson(void **state)
{
    sp_str_t  text;
    char      out[64], err[128];
    size_t    written;

    text.data = "say \"hi\"\n\tback\\slash \x01\x1f nul\0 caf\xc3\xa9 "
                "\xf0\x9f\x98\x80 </script>";
    text.len = 48;

    expect_body(SP_PROVIDER_OPENAI, "text-embedding-3-small", text,
                "text-embedding-3-small", "input");
    expect_body(SP_PROVIDER_AZURE, "", text, NULL, "input");
    expect_body(SP_PROVIDER_MISTRAL, "mistral-embed", text,
                "mistral-embed", "input");
    expect_body(SP_PROVIDER_GOOGLE, "text-embedding-004", text,
                "models/text-embedding-004", "parts");
    expect_body(SP_PROVIDER_GOOGLE, "models/gemini-embedding-001", text,
                "models/gemini-embedding-001", "parts");
    expect_body(SP_PROVIDER_COHERE, "embed-v4.0", text, "embed-v4.0",
                "texts");
    expect_body(SP_PROVIDER_OPENAI, "m\"odel", sp_str_from("x"),
                "m\"odel", "input");

    assert_int_equal(sp_semantic_embed_body(SP_PROVIDER_ANTHROPIC,
                         sp_str_from("m"), text, out, sizeof(out), &written,
                         err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "anthropic"));
    assert_int_equal(sp_semantic_embed_body(SP_PROVIDER_OPENAI,
                         sp_str_from(""), text, out, sizeof(out), &written,
                         err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "model is empty"));
    assert_int_equal(sp_semantic_embed_body(SP_PROVIDER_OPENAI,
                         sp_str_from("m"), sp_str_from("a\xff"), out,
                         sizeof(out), &written, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "not UTF-8"));

    /* too small: refused, never cut */
    assert_int_equal(sp_semantic_embed_body(SP_PROVIDER_OPENAI,
                         sp_str_from("m"), text, out, 40, &written, err,
                         sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "too small"));
    assert_int_equal(written, 0);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_openai_last_user_message_and_system),
        cmocka_unit_test(test_prompt_content_array_joins_text_and_skips_images),
        cmocka_unit_test(test_prompt_anthropic_system_string_and_blocks),
        cmocka_unit_test(test_prompt_google_contents_and_system_instruction),
        cmocka_unit_test(test_prompt_cohere_v2_and_v1),
        cmocka_unit_test(test_prompt_context_and_turns),
        cmocka_unit_test(test_prompt_escapes_decoded_and_bad_json_refused),
        cmocka_unit_test(test_prompt_scratch_too_small_refused),
        cmocka_unit_test(test_prompt_deep_and_large_bodies_bounded),
        cmocka_unit_test(test_guard_2fa_and_paraphrases),
        cmocka_unit_test(test_guard_negation),
        cmocka_unit_test(test_guard_numbers),
        cmocka_unit_test(test_guard_dates_and_times),
        cmocka_unit_test(test_guard_quoted_strings),
        cmocka_unit_test(test_guard_identifiers),
        cmocka_unit_test(test_guard_named_entities),
        cmocka_unit_test(test_guard_reason_short_and_categories_in_order),
        cmocka_unit_test(test_guard_utf8_and_hostile_text),
        cmocka_unit_test(test_quantise_refuses_bad_vectors),
        cmocka_unit_test(test_similarity_within_001_of_float_cosine),
        cmocka_unit_test(test_search_best_above_threshold_or_none),
        cmocka_unit_test(test_search_same_as_brute_force),
        cmocka_unit_test(test_embedding_answers_per_provider),
        cmocka_unit_test(test_embedding_errors_name_what_was_expected),
        cmocka_unit_test(test_embed_body_round_trips_through_jansson),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
