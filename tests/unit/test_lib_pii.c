/*
 * libspendpol PII and secret detection: each detector finds what it
 * should and not its look-alikes; the body walk reads what each
 * provider's model reads, decoded, with spans in the raw body; redaction
 * keeps the JSON valid; whole tokens are told apart as provider secrets.
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

#include "sp_pii.h"


static sp_pii_result_t  res;


/* the types found in text, as a mask; spans checked in bounds and order */
static uint32_t
scan(const char *text)
{
    size_t  k, len;
    char   *copy;

    /* a copy of exactly len bytes: ASan sees a read past the end */
    len = strlen(text);
    copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);

    sp_pii_scan_text(copy, len, SP_PII_ALL, &res);
    free(copy);

    for (k = 0; k < res.nentities; k++) {
        assert_true(res.entities[k].start < res.entities[k].end);
        assert_true(res.entities[k].end <= len);

        if (k > 0) {
            assert_true(res.entities[k - 1].end <= res.entities[k].start);
        }
    }

    return res.types;
}


/* text holds exactly one entity, of type, spanning needle */
static void
assert_finds(const char *text, sp_pii_type_e type, const char *needle)
{
    const char  *at;

    scan(text);

    if (res.nentities != 1 || res.entities[0].type != (uint32_t) type) {
        fail_msg("%s: found %zu (first %s) in \"%s\"", sp_pii_name(type),
                 res.nentities,
                 res.nentities ? sp_pii_name(res.entities[0].type) : "-",
                 text);
    }

    at = strstr(text, needle);
    assert_non_null(at);

    if (res.entities[0].start != (uint32_t) (at - text)
        || res.entities[0].end != (uint32_t) (at - text + strlen(needle)))
    {
        fail_msg("%s: span [%u, %u) in \"%s\", wanted \"%s\"",
                 sp_pii_name(type), res.entities[0].start,
                 res.entities[0].end, text, needle);
    }
}


static void
assert_clean(const char *text)
{
    if (scan(text) != 0) {
        fail_msg("found %s in \"%s\"", sp_pii_name(res.entities[0].type),
                 text);
    }
}


static void
test_pii_email(void **state)
{
    assert_finds("write to jane.doe+work@example.co.uk today",
                 SP_PII_EMAIL, "jane.doe+work@example.co.uk");
    assert_finds("Contact: ops@mail.example.org.", SP_PII_EMAIL,
                 "ops@mail.example.org");
    assert_finds("<a.b@x-y.io>", SP_PII_EMAIL, "a.b@x-y.io");
    assert_clean("follow @openai on X");
    assert_clean("user@localhost and a@b");
    assert_clean("pip install pkg@1.2.3 and name@@example.com");
    assert_clean("meet me @ 5pm at the café");
}


static void
test_pii_phone(void **state)
{
    assert_finds("call +1 415 555 0132 now", SP_PII_PHONE, "+1 415 555 0132");
    assert_finds("tel:+442079460958", SP_PII_PHONE, "+442079460958");
    assert_finds("office (415) 555-0132.", SP_PII_PHONE, "(415) 555-0132");
    assert_finds("it is 415-555-0132", SP_PII_PHONE, "415-555-0132");
    assert_finds("London 020 7946 0958", SP_PII_PHONE, "020 7946 0958");
    assert_finds("Paris 01 23 45 67 89", SP_PII_PHONE, "01 23 45 67 89");
    assert_finds("Berlin 030 12345678", SP_PII_PHONE, "030 12345678");
    assert_finds("mobile: 4155550132", SP_PII_PHONE, "4155550132");
    assert_clean("order 4155550132 shipped");
    assert_clean("hotel booking 4155550132, recall 4155550133");
    assert_clean("ts=1699999999 at 2024-01-15");
    assert_clean("part 123-456-7890 (area starts with 1)");
    assert_clean("P/N 4417-0032-118 and SKU 12-3456-789");
    assert_clean("3+4 = 7, x+12 and 1+1");
}


static void
test_pii_ssn(void **state)
{
    assert_finds("SSN 123-45-6789", SP_PII_SSN, "123-45-6789");
    assert_finds("my social security number is 123456789", SP_PII_SSN,
                 "123456789");
    assert_finds("ssn: 536 22 1234", SP_PII_SSN, "536 22 1234");
    assert_clean("SSN 000-12-3456");
    assert_clean("SSN 666-12-3456");
    assert_clean("SSN 912-12-3456");
    assert_clean("SSN 123-00-4567");
    assert_clean("SSN 123-45-0000");
    assert_clean("invoice 123456789");
    assert_clean("meeting id 123456789, getting there");
    assert_clean("build 123 45 6789");
}


static void
test_pii_card(void **state)
{
    assert_finds("card 4111 1111 1111 1111 exp 12/29", SP_PII_CARD,
                 "4111 1111 1111 1111");
    assert_finds("4111-1111-1111-1111", SP_PII_CARD, "4111-1111-1111-1111");
    assert_finds("mc 5555555555554444.", SP_PII_CARD, "5555555555554444");
    assert_finds("amex 3782 822463 10005", SP_PII_CARD,
                 "3782 822463 10005");
    assert_finds("disc 6011111111111117 2031", SP_PII_CARD,
                 "6011111111111117");
    assert_finds("mc: 2223003122003222", SP_PII_CARD, "2223003122003222");
    assert_finds("jcb 3530111333300000", SP_PII_CARD, "3530111333300000");
    assert_clean("order 4111 1111 1111 1112");
    assert_clean("order 1234567812345678");
    assert_clean("id 41111111111111110");
    assert_clean("amex with 16 digits 3782822463100050");
    assert_clean("ref 9111111111111111");
}


static void
test_pii_iban(void **state)
{
    assert_finds("IBAN DE89 3704 0044 0532 0130 00 please", SP_PII_IBAN,
                 "DE89 3704 0044 0532 0130 00");
    assert_finds("to GB82WEST12345698765432.", SP_PII_IBAN,
                 "GB82WEST12345698765432");
    assert_finds("NO9386011117947", SP_PII_IBAN, "NO9386011117947");
    assert_clean("invoice DE89 3704 0044 0532 0130 01");
    assert_clean("invoice GB82WEST1234569876543");
    assert_clean("ZZ89370400440532013000");
}


static void
test_pii_ip(void **state)
{
    assert_finds("from 192.168.1.20 at noon", SP_PII_IPV4, "192.168.1.20");
    assert_finds("host=10.0.0.1:8080", SP_PII_IPV4, "10.0.0.1");
    assert_clean("version 1.2.3.4 released");
    assert_clean("v10.0.0.1 and 1.2.3.4.5");
    assert_clean("256.1.1.1 and 1.2.3");
    assert_finds("addr 2001:db8::8a2e:370:7334 up", SP_PII_IPV6,
                 "2001:db8::8a2e:370:7334");
    assert_finds("fe80::1ff:fe23:4567:890a%eth0", SP_PII_IPV6,
                 "fe80::1ff:fe23:4567:890a");
    assert_finds("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]", SP_PII_IPV6,
                 "2001:0db8:85a3:0000:0000:8a2e:0370:7334");
    assert_finds("::ffff:192.0.2.128 mapped", SP_PII_IPV6,
                 "::ffff:192.0.2.128");
    assert_clean("at 12:30:45 the MAC 00:1a:2b:3c:4d:5e");
    assert_clean("std::vector and a::b");
}


static void
test_pii_api_key(void **state)
{
    assert_finds("key sk-proj-abcDEF1234567890abcdef1234567890XYZ ok",
                 SP_PII_API_KEY,
                 "sk-proj-abcDEF1234567890abcdef1234567890XYZ");
    assert_finds("AKIAIOSFODNN7EXAMPLE", SP_PII_API_KEY,
                 "AKIAIOSFODNN7EXAMPLE");
    assert_finds("g=AIzaSyA1234567890abcdefghijklmnopqrstuv",
                 SP_PII_API_KEY, "AIzaSyA1234567890abcdefghijklmnopqrstuv");
    assert_finds("ghp_1234567890abcdefghijABCDEFGHIJ123456", SP_PII_API_KEY,
                 "ghp_1234567890abcdefghijABCDEFGHIJ123456");
    assert_finds("hf_abcdefghijklmnopqrstuvwxyz12345678", SP_PII_API_KEY,
                 "hf_abcdefghijklmnopqrstuvwxyz12345678");
    assert_clean("sk-learn is a library; task-oriented sk-dev");
    assert_clean("AKIA is a prefix and AKIAIOSFODNN7EXAMPL is short");
    assert_clean("the skeleton of a shell-script");
}


static void
test_pii_jwt(void **state)
{
    assert_finds("Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
                 ".eyJzdWIiOiIxMjM0NTY3ODkwIn0"
                 ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U x",
                 SP_PII_JWT,
                 "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
                 ".eyJzdWIiOiIxMjM0NTY3ODkwIn0"
                 ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U");
    /* {"typ":"JWT"} names no alg */
    assert_clean("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.abc");
    assert_clean("eyJust.some.words");
}


static void
test_pii_private_key(void **state)
{
    const char  *pem =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n"
        "-----END RSA PRIVATE KEY-----";
    char         text[256];

    snprintf(text, sizeof(text), "here: %s and more", pem);
    assert_finds(text, SP_PII_PRIVATE_KEY, pem);

    assert_finds("x -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA",
                 SP_PII_PRIVATE_KEY,
                 "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA");
    assert_clean("-----BEGIN CERTIFICATE-----\nMIIB\n"
                 "-----END CERTIFICATE-----");
    assert_clean("-----BEGIN PUBLIC KEY-----");
}


static void
test_pii_dob(void **state)
{
    assert_finds("Date of birth: 12/03/1985.", SP_PII_DOB, "12/03/1985");
    assert_finds("DOB 1985-03-12", SP_PII_DOB, "1985-03-12");
    assert_finds("she was born on March 3, 1985 in Ohio", SP_PII_DOB,
                 "March 3, 1985");
    assert_finds("né le 3 mars 1985", SP_PII_DOB, "3 mars 1985");
    assert_finds("geboren am 03.04.1985", SP_PII_DOB, "03.04.1985");
    assert_clean("the meeting is on 12/03/1985");
    assert_clean("released 2024-01-15T10:00:00Z");
}


static void
test_pii_score(void **state)
{
    assert_int_equal(sp_pii_score(0), 0);
    assert_int_equal(sp_pii_score(1u << SP_PII_CARD), 850);
    /* 1 - 0.15 * 0.65 */
    assert_int_equal(sp_pii_score((1u << SP_PII_CARD) | (1u << SP_PII_EMAIL)),
                     903);
    assert_true(sp_pii_score(SP_PII_ALL) <= 1000);
    assert_true(sp_pii_score(SP_PII_ALL) >= 999);

    assert_int_equal(sp_pii_type("card", 4), SP_PII_CARD);
    assert_int_equal(sp_pii_type("cards", 5), -1);
    assert_string_equal(sp_pii_name(SP_PII_PRIVATE_KEY), "private_key");
    assert_string_equal(sp_pii_label(SP_PII_API_KEY), "API_KEY");
    assert_string_equal(sp_pii_label(SP_PII_PATTERN), "PATTERN");
    assert_null(sp_pii_name(SP_PII_COUNT));
    assert_int_equal(sp_pii_weight(SP_PII_PRIVATE_KEY), 950);

    scan("a@example.com 4111111111111111");
    assert_int_equal(res.score_milli, 903);
    assert_int_equal(res.total, 2);
    assert_int_equal(res.counts[SP_PII_CARD], 1);
}


static void
test_pii_mask_and_many(void **state)
{
    size_t  k;
    char   *text;

    sp_pii_scan_text("a@example.com 4111111111111111", 30,
                     1u << SP_PII_CARD, &res);
    assert_int_equal(res.types, 1u << SP_PII_CARD);
    assert_int_equal(res.nentities, 1);

    /* more than are kept: all counted */
    text = malloc(300 * 16 + 1);
    assert_non_null(text);

    for (k = 0; k < 300; k++) {
        memcpy(text + k * 16, "a@example.com   ", 16);
    }

    sp_pii_scan_text(text, 300 * 16, SP_PII_ALL, &res);
    assert_int_equal(res.nentities, SP_PII_MAX_ENTITIES);
    assert_int_equal(res.total, 300);
    assert_int_equal(res.counts[SP_PII_EMAIL], 300);
    free(text);
}


/* ---- the body walk ----------------------------------------------------- */

typedef struct {
    char    text[16][128];
    int     context[16];
    size_t  n;
    int     stop_after;
} texts_t;


static int
collect(const sp_pii_text_t *t, void *arg)
{
    size_t    k, n;
    texts_t  *out;

    out = arg;

    /* every byte's raw offset lies in the body, in order */
    for (k = 1; k <= t->len; k++) {
        assert_true(t->raw[k] > t->raw[k - 1]
                    || (t->raw[k] == t->raw[k - 1] && k < t->len
                        && ((unsigned char) t->text[k] & 0xc0) == 0x80));
    }

    if (out->n < 16) {
        n = t->len < 127 ? t->len : 127;
        memcpy(out->text[out->n], t->text, n);
        out->text[out->n][n] = '\0';
        out->context[out->n] = t->context;
    }

    out->n++;

    return out->stop_after && out->n >= (size_t) out->stop_after;
}


static texts_t  texts;


static void
walk(sp_provider_e provider, int answer, const char *body)
{
    size_t  len;
    char   *copy;

    memset(&texts, 0, sizeof(texts));
    len = strlen(body);
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, body, len);

    assert_int_equal(sp_pii_body_text(provider, answer, copy, len, collect,
                                      &texts), SP_OK);
    free(copy);
}


static void
test_pii_body_openai(void **state)
{
    walk(SP_PROVIDER_OPENAI, 0,
         "{\"model\":\"gpt-4o\",\"messages\":["
         "{\"role\":\"system\",\"content\":\"be brief\"},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;"
         "base64,AAAA\"}}]},"
         "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
         "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
         "\"arguments\":\"{\\\"q\\\":1}\"}}]},"
         "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":"
         "\"result\"}],\"user\":\"u-1\"}");

    assert_int_equal(texts.n, 4);
    assert_string_equal(texts.text[0], "be brief");
    assert_int_equal(texts.context[0], 1);
    assert_string_equal(texts.text[1], "hi");
    assert_int_equal(texts.context[1], 0);
    assert_string_equal(texts.text[2], "{\"q\":1}");
    assert_string_equal(texts.text[3], "result");
    assert_int_equal(texts.context[3], 1);

    /* Responses API and embeddings */
    walk(SP_PROVIDER_OPENAI, 0,
         "{\"model\":\"m\",\"instructions\":\"sys\",\"input\":[{\"role\":"
         "\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"q\"}]},"
         "{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":"
         "\"out\"}]}");
    assert_int_equal(texts.n, 3);
    assert_string_equal(texts.text[0], "sys");
    assert_int_equal(texts.context[0], 1);
    assert_string_equal(texts.text[1], "q");
    assert_string_equal(texts.text[2], "out");
    assert_int_equal(texts.context[2], 1);

    walk(SP_PROVIDER_OPENAI, 0,
         "{\"model\":\"e\",\"input\":[\"one\",\"two\"],"
         "\"encoding_format\":\"float\"}");
    assert_int_equal(texts.n, 2);
    assert_string_equal(texts.text[1], "two");
}


static void
test_pii_body_anthropic(void **state)
{
    walk(SP_PROVIDER_ANTHROPIC, 0,
         "{\"model\":\"claude\",\"system\":[{\"type\":\"text\",\"text\":"
         "\"sys\"}],\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
         "\"content\":\"plain\"},{\"role\":\"assistant\",\"content\":[{"
         "\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{"
         "\"city\":\"Paris\"}}]},{\"role\":\"user\",\"content\":[{\"type\":"
         "\"tool_result\",\"tool_use_id\":\"t1\",\"content\":[{\"type\":"
         "\"text\",\"text\":\"sunny\"}]},{\"type\":\"image\",\"source\":{"
         "\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":"
         "\"iVBORw0KGgo\"}},{\"type\":\"text\",\"text\":\"thanks\"}]}]}");

    assert_int_equal(texts.n, 5);
    assert_string_equal(texts.text[0], "sys");
    assert_int_equal(texts.context[0], 1);
    assert_string_equal(texts.text[1], "plain");
    assert_string_equal(texts.text[2], "Paris");
    assert_string_equal(texts.text[3], "sunny");
    assert_int_equal(texts.context[3], 1);
    assert_string_equal(texts.text[4], "thanks");
    assert_int_equal(texts.context[4], 0);
}


static void
test_pii_body_google(void **state)
{
    walk(SP_PROVIDER_GOOGLE, 0,
         "{\"systemInstruction\":{\"parts\":[{\"text\":\"sys\"}]},"
         "\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"},"
         "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"AAAA\"}}]},"
         "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"f\","
         "\"args\":{\"x\":\"y\"}}}]},{\"role\":\"function\",\"parts\":[{"
         "\"functionResponse\":{\"name\":\"f\",\"response\":{\"r\":"
         "\"done\"}}}]}],\"generationConfig\":{\"temperature\":1}}");

    assert_int_equal(texts.n, 4);
    assert_string_equal(texts.text[0], "sys");
    assert_int_equal(texts.context[0], 1);
    assert_string_equal(texts.text[1], "q");
    assert_int_equal(texts.context[1], 0);
    assert_string_equal(texts.text[2], "y");
    assert_string_equal(texts.text[3], "done");
    assert_int_equal(texts.context[3], 1);
}


static void
test_pii_body_cohere_mistral(void **state)
{
    walk(SP_PROVIDER_COHERE, 0,
         "{\"message\":\"q\",\"preamble\":\"sys\",\"chat_history\":[{"
         "\"role\":\"USER\",\"message\":\"before\"},{\"role\":\"SYSTEM\","
         "\"message\":\"rule\"}],\"documents\":[{\"title\":\"t\",\"snippet\""
         ":\"doc\"}]}");

    assert_int_equal(texts.n, 6);
    assert_string_equal(texts.text[0], "q");
    assert_int_equal(texts.context[0], 0);
    assert_string_equal(texts.text[1], "sys");
    assert_int_equal(texts.context[1], 1);
    assert_string_equal(texts.text[2], "before");
    assert_int_equal(texts.context[2], 0);
    assert_string_equal(texts.text[3], "rule");
    assert_int_equal(texts.context[3], 1);
    assert_string_equal(texts.text[4], "t");
    assert_int_equal(texts.context[4], 1);
    assert_string_equal(texts.text[5], "doc");

    /* Cohere v2 */
    walk(SP_PROVIDER_COHERE, 0,
         "{\"model\":\"command-r\",\"messages\":[{\"role\":\"system\","
         "\"content\":\"sys\"},{\"role\":\"user\",\"content\":[{\"type\":"
         "\"text\",\"text\":\"q\"}]}],\"documents\":[\"d1\",{\"id\":\"x\","
         "\"data\":{\"text\":\"d2\"}}]}");
    assert_int_equal(texts.n, 4);
    assert_string_equal(texts.text[3], "d2");
    assert_int_equal(texts.context[3], 1);

    walk(SP_PROVIDER_MISTRAL, 0,
         "{\"model\":\"mistral-small\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"bonjour\"}],\"safe_prompt\":false}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "bonjour");
}


static void
test_pii_body_answers(void **state)
{
    walk(SP_PROVIDER_OPENAI, 1,
         "{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"m\","
         "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
         "\"content\":\"A\"},\"finish_reason\":\"stop\"}]}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "A");

    walk(SP_PROVIDER_OPENAI, 1,
         "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"B\"}}]}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "B");

    walk(SP_PROVIDER_ANTHROPIC, 1,
         "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
         "\"content\":[{\"type\":\"text\",\"text\":\"C\"}],\"model\":\"c\"}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "C");

    walk(SP_PROVIDER_ANTHROPIC, 1,
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\""
         ":\"text_delta\",\"text\":\"D\"}}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "D");

    walk(SP_PROVIDER_GOOGLE, 1,
         "[{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{"
         "\"text\":\"E\"}]}}],\"modelVersion\":\"g\"},{\"candidates\":[{"
         "\"content\":{\"parts\":[{\"text\":\"F\"}]}}]}]");
    assert_int_equal(texts.n, 2);
    assert_string_equal(texts.text[1], "F");

    walk(SP_PROVIDER_COHERE, 1,
         "{\"text\":\"G\",\"generation_id\":\"x\"}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "G");

    walk(SP_PROVIDER_COHERE, 1,
         "{\"id\":\"x\",\"message\":{\"role\":\"assistant\",\"content\":[{"
         "\"type\":\"text\",\"text\":\"H\"}]}}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "H");

    walk(SP_PROVIDER_COHERE, 1,
         "{\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{"
         "\"content\":{\"text\":\"I\"}}}}");
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0], "I");
}


static void
test_pii_body_escapes_map_to_raw(void **state)
{
    /* "café" with é escaped, an emoji as a surrogate pair, \n, \/ */
    const char  *body = "{\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"caf\\u00e9 \\ud83d\\ude00\\n\\/ "
                        "a\\u0040example.com\"}]}";
    const char  *at;

    walk(SP_PROVIDER_OPENAI, 0, body);
    assert_int_equal(texts.n, 1);
    assert_string_equal(texts.text[0],
                        "caf\xc3\xa9 \xf0\x9f\x98\x80\n/ a@example.com");

    assert_int_equal(sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body,
                                      strlen(body), SP_PII_ALL, &res),
                     SP_OK);
    assert_int_equal(res.nentities, 1);
    assert_int_equal(res.entities[0].type, SP_PII_EMAIL);

    at = strstr(body, "a\\u0040example.com");
    assert_int_equal(res.entities[0].start, at - body);
    assert_int_equal(res.entities[0].end,
                     at - body + strlen("a\\u0040example.com"));
}


static void
test_pii_body_stops_and_refuses(void **state)
{
    const char  *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
                        "{\"role\":\"user\",\"content\":\"b\"}]}";

    memset(&texts, 0, sizeof(texts));
    texts.stop_after = 1;
    assert_int_equal(sp_pii_body_text(SP_PROVIDER_OPENAI, 0, body,
                                      strlen(body), collect, &texts), SP_OK);
    assert_int_equal(texts.n, 1);

    assert_int_equal(sp_pii_body_text(SP_PROVIDER_OPENAI, 0, "{\"a\":", 5,
                                      collect, &texts), SP_ERROR);
    assert_int_equal(sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, "not json", 8,
                                      SP_PII_ALL, &res), SP_ERROR);
}


/* a body the tape scanner declines (an object of 100 members) is read */
static void
test_pii_body_declined_by_scanner(void **state)
{
    size_t  k, n;
    char    body[8192];

    n = (size_t) snprintf(body, sizeof(body),
                          "{\"messages\":[{\"role\":\"user\",\"content\":"
                          "\"mail x\\u0040example.com\"}],\"metadata\":{");

    for (k = 0; k < 100; k++) {
        n += (size_t) snprintf(body + n, sizeof(body) - n,
                               "%s\"k%zu\":\"v\\n%zu\"", k ? "," : "", k, k);
    }

    n += (size_t) snprintf(body + n, sizeof(body) - n,
                           "},\"prompt\":\"4111 1111 1111 1111\"}");

    assert_int_equal(sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body, n,
                                      SP_PII_ALL, &res), SP_OK);
    assert_int_equal(res.nentities, 2);
    assert_int_equal(res.entities[0].type, SP_PII_EMAIL);
    assert_memory_equal(body + res.entities[0].start, "x\\u0040example.com",
                        res.entities[0].end - res.entities[0].start);
    assert_int_equal(res.entities[1].type, SP_PII_CARD);
    assert_memory_equal(body + res.entities[1].start, "4111 1111 1111 1111",
                        19);
}


static void
test_pii_redact_keeps_json(void **state)
{
    size_t        n;
    char          out[1024];
    json_t       *root;
    json_error_t  jerr;
    const char   *body =
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"card 4111\\u00201111 1111 1111, mail a@example.com, "
        "ip 10.0.0.1\\\"\"}],\"user\":\"a@example.com\"}";

    assert_int_equal(sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body,
                                      strlen(body), SP_PII_ALL, &res), SP_OK);
    assert_int_equal(res.nentities, 3);

    n = sp_pii_redact(body, strlen(body), &res,
                      (1u << SP_PII_CARD) | (1u << SP_PII_EMAIL),
                      out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';

    root = json_loadb(out, n, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(root, "messages"), 0),
                            "content")),
                        "card [REDACTED:CARD], mail [REDACTED:EMAIL], "
                        "ip 10.0.0.1\"");
    /* the user id is not text a model reads */
    assert_string_equal(json_string_value(json_object_get(root, "user")),
                        "a@example.com");
    json_decref(root);

    /* too small: 0 */
    assert_int_equal(sp_pii_redact(body, strlen(body), &res, SP_PII_ALL,
                                   out, 20), 0);
}


static void
test_pii_secret_kind(void **state)
{
    static const struct {
        sp_provider_e  provider;
        const char    *token;
        const char    *kind;
    } cases[] = {
        { SP_PROVIDER_UNKNOWN,
          "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "openai" },
        { SP_PROVIDER_OPENAI,
          "sk-abcdefghijklmnopqrstT3BlbkFJuvwxyz0123456789ABCD", "openai" },
        { SP_PROVIDER_OPENAI,
          "sk-svcacct-abcdefghijklmnopqrstuvwxyz0123456789", "openai" },
        { SP_PROVIDER_ANTHROPIC,
          "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-_AA",
          "anthropic" },
        { SP_PROVIDER_GOOGLE, "AIzaSyA1234567890abcdefghijklmnopqrstuv",
          "google" },
        { SP_PROVIDER_UNKNOWN, "AKIAIOSFODNN7EXAMPLE", "aws" },
        { SP_PROVIDER_UNKNOWN, "ASIAIOSFODNN7EXAMPLE", "aws" },
        { SP_PROVIDER_UNKNOWN, "ghp_1234567890abcdefghijABCDEFGHIJ123456",
          "github" },
        { SP_PROVIDER_UNKNOWN, "sk_live_abcdefghijklmnopqrstuvwx1234",
          "stripe" },
        { SP_PROVIDER_UNKNOWN, "xoxb-123456789012-abcdefghijkl", "slack" },
        { SP_PROVIDER_UNKNOWN, "hf_abcdefghijklmnopqrstuvwxyz12345678",
          "huggingface" },
        { SP_PROVIDER_UNKNOWN, "glpat-abcdefghij1234567890", "gitlab" },
        { SP_PROVIDER_UNKNOWN,
          "gsk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN", "groq" },
        { SP_PROVIDER_UNKNOWN,
          "xai-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN", "xai" },
        { SP_PROVIDER_UNKNOWN, "r8_abcdefghijklmnopqrstuvwxyz0123456789A",
          "replicate" },
        { SP_PROVIDER_UNKNOWN,
          "pplx-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
          "perplexity" },
        { SP_PROVIDER_UNKNOWN,
          "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef",
          "openrouter" },
        { SP_PROVIDER_UNKNOWN, "sk-0123456789abcdef0123456789abcdef",
          "deepseek" },
        { SP_PROVIDER_COHERE, "abcdefghijklmnopqrstuvwxyz0123456789ABCD",
          "cohere" },
        { SP_PROVIDER_OPENAI, "abcdefghijklmnopqrstuvwxyz0123456789ABCD",
          NULL },
        { SP_PROVIDER_MISTRAL, "abcdefghijklmnopqrstuvwxyz012345",
          "mistral" },
        { SP_PROVIDER_UNKNOWN, "abcdefghijklmnopqrstuvwxyz012345", NULL },
        { SP_PROVIDER_UNKNOWN,
          "sp_key_0123456789abcdef0123456789abcdef0123456789abcdef", NULL },
        { SP_PROVIDER_UNKNOWN, "sk-short", NULL },
        { SP_PROVIDER_UNKNOWN, "AKIAIOSFODNN7EXAMPLEX", NULL },
        { SP_PROVIDER_UNKNOWN, "sk-proj-abc def", NULL },
        { SP_PROVIDER_UNKNOWN, "Bearer", NULL },
    };
    size_t       k;
    const char  *kind;

    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        kind = sp_pii_secret_kind(cases[k].provider, cases[k].token,
                                  strlen(cases[k].token));

        if (cases[k].kind == NULL ? kind != NULL
            : (kind == NULL || strcmp(kind, cases[k].kind) != 0))
        {
            fail_msg("%s: %s, wanted %s", cases[k].token,
                     kind ? kind : "NULL",
                     cases[k].kind ? cases[k].kind : "NULL");
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_pii_email),
        cmocka_unit_test(test_pii_phone),
        cmocka_unit_test(test_pii_ssn),
        cmocka_unit_test(test_pii_card),
        cmocka_unit_test(test_pii_iban),
        cmocka_unit_test(test_pii_ip),
        cmocka_unit_test(test_pii_api_key),
        cmocka_unit_test(test_pii_jwt),
        cmocka_unit_test(test_pii_private_key),
        cmocka_unit_test(test_pii_dob),
        cmocka_unit_test(test_pii_score),
        cmocka_unit_test(test_pii_mask_and_many),
        cmocka_unit_test(test_pii_body_openai),
        cmocka_unit_test(test_pii_body_anthropic),
        cmocka_unit_test(test_pii_body_google),
        cmocka_unit_test(test_pii_body_cohere_mistral),
        cmocka_unit_test(test_pii_body_answers),
        cmocka_unit_test(test_pii_body_escapes_map_to_raw),
        cmocka_unit_test(test_pii_body_stops_and_refuses),
        cmocka_unit_test(test_pii_body_declined_by_scanner),
        cmocka_unit_test(test_pii_redact_keeps_json),
        cmocka_unit_test(test_pii_secret_kind),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
