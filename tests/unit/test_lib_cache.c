/*
 * libspendpol cache rules: the cache key (canonical body, what it covers,
 * what it refuses), settings and names, the deterministic rule.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_cache.h"
#include "sp_endpoint.h"
#include "sp_usage.h"


static sp_cache_key_in_t
key_in(const char *body)
{
    sp_cache_key_in_t  in;

    memset(&in, 0, sizeof(sp_cache_key_in_t));
    in.org_id = sp_str_from("org_1");
    in.scope = SP_CACHE_SCOPE_ORG;
    in.scope_value = sp_str_from("");
    in.provider = sp_str_from("openai");
    in.endpoint = sp_str_from("POST /chat/completions");
    in.body = body;
    in.body_len = strlen(body);

    return in;
}


/*
 * The key of in, hex, or SP_ERROR and the reason. The body is copied
 * into a buffer of exactly its length (no NUL after it) so that ASan
 * sees any read past body_len; scratch is exactly what it asks for, at
 * an odd address.
 */
static int
key_of(const sp_cache_key_in_t *in, char *hex, char *err, size_t errlen)
{
    int                 rc;
    char               *body, *scratch;
    size_t              need;
    uint8_t             key[SP_CACHE_KEY_LEN];
    sp_cache_key_in_t   copy;

    copy = *in;
    body = malloc(in->body_len ? in->body_len : 1);
    assert_non_null(body);
    memcpy(body, in->body, in->body_len);
    copy.body = body;

    need = sp_cache_key_scratch(in->body_len);
    scratch = malloc(need + 1);
    assert_non_null(scratch);

    err[0] = '\0';
    rc = sp_cache_key(&copy, scratch + 1, need, key, err, errlen);

    if (rc == SP_OK) {
        sp_hex_encode(key, sizeof(key), hex);
    }

    free(scratch);
    free(body);

    return rc;
}


static void
hex_of(const char *body, char *hex)
{
    char               err[256];
    sp_cache_key_in_t  in;

    in = key_in(body);

    if (key_of(&in, hex, err, sizeof(err)) != SP_OK) {
        fail_msg("%s: %s", body, err);
    }
}


static void
same_key(const char *a, const char *b)
{
    char  ha[2 * SP_CACHE_KEY_LEN + 1], hb[2 * SP_CACHE_KEY_LEN + 1];

    hex_of(a, ha);
    hex_of(b, hb);

    if (strcmp(ha, hb) != 0) {
        fail_msg("different keys:\n  %s\n  %s", a, b);
    }
}


static void
different_key(const char *a, const char *b)
{
    char  ha[2 * SP_CACHE_KEY_LEN + 1], hb[2 * SP_CACHE_KEY_LEN + 1];

    hex_of(a, ha);
    hex_of(b, hb);

    if (strcmp(ha, hb) == 0) {
        fail_msg("same key:\n  %s\n  %s", a, b);
    }
}


static void
key_fails(const char *body, const char *reason)
{
    char               hex[2 * SP_CACHE_KEY_LEN + 1], err[256];
    sp_cache_key_in_t  in;

    in = key_in(body);

    if (key_of(&in, hex, err, sizeof(err)) != SP_ERROR) {
        fail_msg("accepted: %s", body);
    }

    if (strstr(err, reason) == NULL) {
        fail_msg("%s: reason \"%s\" lacks \"%s\"", body, err, reason);
    }
}


#define CHAT  "{\"model\":\"gpt-4o\",\"temperature\":0,\"stream\":false," \
              "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief\"}," \
              "{\"role\":\"user\",\"content\":\"Hello\"}]}"


static void
test_cache_key_ignores_member_order_and_whitespace(void **state)
{
    (void) state;

    same_key(CHAT,
             " {\n\t\"messages\" : [ { \"content\" : \"Be brief\" , "
             "\"role\" : \"system\" } ,\r\n {\"content\":\"Hello\","
             "\"role\":\"user\"} ] , \"stream\" : false ,\"temperature\": 0,"
             "\"model\":\"gpt-4o\" }\n");

    /* nested objects sort too, at every depth */
    same_key("{\"a\":{\"z\":{\"y\":1,\"x\":2},\"b\":[{\"q\":1,\"p\":2}]}}",
             "{\"a\":{\"b\":[{\"p\":2,\"q\":1}],\"z\":{\"x\":2,\"y\":1}}}");

    /* a wide object (sorted by the heap), in two orders */
    same_key("{\"m\":1,\"l\":2,\"k\":3,\"j\":4,\"i\":5,\"h\":6,\"g\":7,"
             "\"f\":8,\"e\":9,\"d\":10,\"c\":11,\"b\":12,\"a\":13,\"ab\":14,"
             "\"\":15,\"aa\":16}",
             "{\"\":15,\"a\":13,\"aa\":16,\"ab\":14,\"b\":12,\"c\":11,"
             "\"d\":10,\"e\":9,\"f\":8,\"g\":7,\"h\":6,\"i\":5,\"j\":4,"
             "\"k\":3,\"l\":2,\"m\":1}");

    /* whitespace inside strings is content */
    different_key("{\"a\":\"x y\"}", "{\"a\":\"xy\"}");
}


static void
test_cache_key_ignores_user_stream_options_metadata_at_top_level(
    void **state)
{
    (void) state;

    same_key(CHAT,
             "{\"user\":\"alice\",\"model\":\"gpt-4o\",\"temperature\":0,"
             "\"stream_options\":{\"include_usage\":true},\"stream\":false,"
             "\"metadata\":{\"run\":\"7\",\"x\":[1,{\"b\":1}]},"
             "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief\"},"
             "{\"role\":\"user\",\"content\":\"Hello\"}]}");

    same_key("{\"a\":1}", "{\"user\":\"bob\",\"a\":1}");
    same_key("{\"a\":1}", "{\"a\":1,\"user\":\"bob\"}");
    same_key("{}", "{\"user\":\"bob\"}");
    same_key("{\"a\":1}", "{\"user\":{\"c\":1,\"b\":2},\"a\":1,"
             "\"metadata\":null}");

    /* nested, they are content */
    different_key("{\"messages\":[{\"content\":\"hi\"}]}",
                  "{\"messages\":[{\"content\":\"hi\",\"user\":\"x\"}]}");
    different_key("{\"a\":{\"user\":\"x\"}}", "{\"a\":{\"user\":\"y\"}}");
    different_key("{\"a\":{\"metadata\":1}}", "{\"a\":{}}");

    /* a top-level array's objects are not the top level */
    different_key("[{\"user\":\"x\"}]", "[{\"user\":\"y\"}]");

    /* names close to them are content */
    different_key("{\"users\":1}", "{}");
    different_key("{\"User\":1}", "{}");
}


#define SYSTEM  "\"messages\":[{\"role\":\"system\",\"content\":" \
                "\"Be brief\"},"


static void
test_cache_key_changes_with_any_other_change(void **state)
{
    (void) state;

    different_key(CHAT,
                  "{\"model\":\"gpt-4o\",\"temperature\":0,\"stream\":false,"
                  SYSTEM
                  "{\"role\":\"user\",\"content\":\"Hellp\"}]}");
    different_key(CHAT,
                  "{\"model\":\"gpt-4o-mini\",\"temperature\":0,\"stream\":"
                  "false,\"messages\":[{\"role\":\"system\",\"content\":"
                  "\"Be brief\"},{\"role\":\"user\",\"content\":\"Hello\"}]}");
    different_key(CHAT,
                  "{\"model\":\"gpt-4o\",\"temperature\":0.2,\"stream\":false,"
                  SYSTEM
                  "{\"role\":\"user\",\"content\":\"Hello\"}]}");
    different_key(CHAT,
                  "{\"model\":\"gpt-4o\",\"temperature\":0,\"stream\":true,"
                  SYSTEM
                  "{\"role\":\"user\",\"content\":\"Hello\"}]}");

    /* arrays keep their order */
    different_key(CHAT,
                  "{\"model\":\"gpt-4o\",\"temperature\":0,\"stream\":false,"
                  "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"},"
                  "{\"role\":\"system\",\"content\":\"Be brief\"}]}");

    /* spellings are kept: a miss, never a wrong hit */
    different_key("{\"t\":0}", "{\"t\":0.0}");
    different_key("{\"s\":\"a\"}", "{\"s\":\"\\u0061\"}");

    /* a value moved between members or levels */
    different_key("{\"a\":[1,2],\"b\":[]}", "{\"a\":[1],\"b\":[2]}");
    different_key("{\"a\":{\"b\":1}}", "{\"a\":{},\"b\":1}");
}


static void
field_changes_key(const char *what, sp_cache_key_in_t b)
{
    char               ha[2 * SP_CACHE_KEY_LEN + 1];
    char               hb[2 * SP_CACHE_KEY_LEN + 1], err[256];
    sp_cache_key_in_t  a;

    a = key_in(CHAT);
    b.body = a.body;
    b.body_len = a.body_len;

    assert_int_equal(key_of(&a, ha, err, sizeof(err)), SP_OK);
    assert_int_equal(key_of(&b, hb, err, sizeof(err)), SP_OK);

    if (strcmp(ha, hb) == 0) {
        fail_msg("%s does not change the key", what);
    }
}


static void
test_cache_key_covers_org_scope_provider_endpoint(void **state)
{
    sp_cache_key_in_t  in;

    (void) state;

    in = key_in(CHAT);
    in.org_id = sp_str_from("org_2");
    field_changes_key("org_id", in);

    in = key_in(CHAT);
    in.scope = SP_CACHE_SCOPE_PROJECT;
    field_changes_key("scope", in);

    in = key_in(CHAT);
    in.scope_value = sp_str_from("p1");
    field_changes_key("scope_value", in);

    in = key_in(CHAT);
    in.provider = sp_str_from("azure");
    field_changes_key("provider", in);

    in = key_in(CHAT);
    in.endpoint = sp_str_from("POST /completions");
    field_changes_key("endpoint", in);

    /* the same value in another scope is another key */
    in = key_in(CHAT);
    in.scope = SP_CACHE_SCOPE_DEPARTMENT;
    in.scope_value = sp_str_from("x");
    {
        sp_cache_key_in_t  other;
        char               ha[2 * SP_CACHE_KEY_LEN + 1];
        char               hb[2 * SP_CACHE_KEY_LEN + 1], err[256];

        other = in;
        other.scope = SP_CACHE_SCOPE_PROJECT;
        assert_int_equal(key_of(&in, ha, err, sizeof(err)), SP_OK);
        assert_int_equal(key_of(&other, hb, err, sizeof(err)), SP_OK);
        assert_string_not_equal(ha, hb);
    }
}


static void
test_cache_key_fields_are_length_prefixed(void **state)
{
    char               ha[2 * SP_CACHE_KEY_LEN + 1];
    char               hb[2 * SP_CACHE_KEY_LEN + 1], err[256];
    sp_cache_key_in_t  a, b;

    (void) state;

    /* ("ab", "c") and ("a", "bc") in each neighbouring pair of fields */
    a = key_in(CHAT);
    b = key_in(CHAT);
    a.org_id = sp_str_from("ab");
    a.scope_value = sp_str_from("c");
    b.org_id = sp_str_from("a");
    b.scope_value = sp_str_from("bc");
    assert_int_equal(key_of(&a, ha, err, sizeof(err)), SP_OK);
    assert_int_equal(key_of(&b, hb, err, sizeof(err)), SP_OK);
    assert_string_not_equal(ha, hb);

    a = key_in(CHAT);
    b = key_in(CHAT);
    a.provider = sp_str_from("openaiPOST");
    a.endpoint = sp_str_from(" /chat/completions");
    b.provider = sp_str_from("openai");
    b.endpoint = sp_str_from("POST /chat/completions");
    assert_int_equal(key_of(&a, ha, err, sizeof(err)), SP_OK);
    assert_int_equal(key_of(&b, hb, err, sizeof(err)), SP_OK);
    assert_string_not_equal(ha, hb);

    /* org_id and the scope number: "a" + scope 0 vs "a\0\0\0" ... */
    a = key_in(CHAT);
    b = key_in(CHAT);
    a.org_id.data = "a\0\0\0";
    a.org_id.len = 4;
    a.scope = 0;
    b.org_id = sp_str_from("a");
    b.scope = 0;
    assert_int_equal(key_of(&a, ha, err, sizeof(err)), SP_OK);
    assert_int_equal(key_of(&b, hb, err, sizeof(err)), SP_OK);
    assert_string_not_equal(ha, hb);
}


/*
 * The answer computed once outside this code, from the bytes the key
 * covers spelled out by hand:
 *
 * printf 'spendpol-cache-v1\x00\x00\x00\x05org_1\x00\x00\x00\x01'\
 * '\x00\x00\x00\x05key_a\x00\x00\x00\x06openai\x00\x00\x00\x16'\
 * 'POST /chat/completions{"messages":[{"content":"hi","role":"user"}],'\
 * '"model":"gpt-4o","temperature":0}' | sha256sum
 *
 * (the prefix; org_id, scope, scope_value, provider, endpoint, each
 * after its length as 4 bytes big-endian, the scope a 4-byte number;
 * then the canonical body, without "user").
 */
static void
test_cache_key_known_answer(void **state)
{
    char               hex[2 * SP_CACHE_KEY_LEN + 1], err[256];
    sp_cache_key_in_t  in;

    (void) state;

    in = key_in("{ \"model\": \"gpt-4o\",\n  \"messages\": [{\"role\": "
                "\"user\", \"content\": \"hi\"}],\n  \"user\": \"u1\", "
                "\"temperature\": 0 }");
    in.scope = SP_CACHE_SCOPE_API_KEY;
    in.scope_value = sp_str_from("key_a");

    assert_int_equal(key_of(&in, hex, err, sizeof(err)), SP_OK);
    assert_string_equal(hex, "ef786361d19842421a118f72832b2a92"
                             "66d81f84c55c357484a529dd0ccaaf4c");
}


/* the key of body with flags, hex */
static void
hex_of_flags(const char *body, unsigned flags, char *hex)
{
    char               err[256];
    sp_cache_key_in_t  in;

    in = key_in(body);
    in.flags = flags;

    if (key_of(&in, hex, err, sizeof(err)) != SP_OK) {
        fail_msg("%s: %s", body, err);
    }
}


static void
same_group(const char *a, const char *b)
{
    char  ha[2 * SP_CACHE_KEY_LEN + 1], hb[2 * SP_CACHE_KEY_LEN + 1];

    hex_of_flags(a, SP_CACHE_KEY_NO_PROMPT, ha);
    hex_of_flags(b, SP_CACHE_KEY_NO_PROMPT, hb);

    if (strcmp(ha, hb) != 0) {
        fail_msg("different groups:\n  %s\n  %s", a, b);
    }
}


static void
different_group(const char *a, const char *b)
{
    char  ha[2 * SP_CACHE_KEY_LEN + 1], hb[2 * SP_CACHE_KEY_LEN + 1];

    hex_of_flags(a, SP_CACHE_KEY_NO_PROMPT, ha);
    hex_of_flags(b, SP_CACHE_KEY_NO_PROMPT, hb);

    if (strcmp(ha, hb) == 0) {
        fail_msg("same group:\n  %s\n  %s", a, b);
    }
}


/*
 * The semantic group: every provider's prompt members are left out at the
 * top level, and only there; the parameters still count.
 */
static void
test_cache_group_key_leaves_out_the_prompt(void **state)
{
    (void) state;

    /* OpenAI, Mistral, Anthropic */
    same_group("{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":"
               "\"user\",\"content\":\"enable 2FA\"}]}",
               "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":"
               "\"user\",\"content\":\"disable 2FA\"}],\"user\":\"u\"}");
    same_group("{\"model\":\"m\",\"system\":\"be terse\",\"messages\":[]}",
               "{\"model\":\"m\",\"system\":[{\"type\":\"text\"}]}");

    /* Google, both spellings of the system instruction */
    same_group("{\"contents\":[{\"parts\":[{\"text\":\"a\"}]}],"
               "\"systemInstruction\":{\"parts\":[]},"
               "\"generationConfig\":{\"temperature\":0}}",
               "{\"contents\":[],\"system_instruction\":{},"
               "\"generationConfig\":{\"temperature\":0}}");

    /* Cohere */
    same_group("{\"model\":\"c\",\"message\":\"a\",\"chat_history\":[],"
               "\"preamble\":\"p\"}",
               "{\"model\":\"c\",\"message\":\"b\"}");

    /* the parameters and the rest of the body still count */
    different_group("{\"model\":\"m\",\"messages\":[]}",
                    "{\"model\":\"n\",\"messages\":[]}");
    different_group("{\"model\":\"m\",\"temperature\":0,\"messages\":[]}",
                    "{\"model\":\"m\",\"temperature\":1,\"messages\":[]}");
    different_group("{\"model\":\"m\",\"tools\":[{\"name\":\"a\"}]}",
                    "{\"model\":\"m\",\"tools\":[{\"name\":\"b\"}]}");

    /* only at the top level: nested prompt names are ordinary members */
    different_group("{\"x\":{\"messages\":\"a\"}}",
                    "{\"x\":{\"messages\":\"b\"}}");

    /* names that merely look alike are kept */
    different_group("{\"Messages\":\"a\"}", "{\"Messages\":\"b\"}");
    different_group("{\"systems\":\"a\"}", "{\"systems\":\"b\"}");
    different_group("{\"message_id\":\"a\"}", "{\"message_id\":\"b\"}");

    /* without the flag the prompt is in the key, as before */
    different_key("{\"model\":\"m\",\"messages\":[{\"content\":\"a\"}]}",
                  "{\"model\":\"m\",\"messages\":[{\"content\":\"b\"}]}");
    different_key("{\"model\":\"c\",\"preamble\":\"a\"}",
                  "{\"model\":\"c\",\"preamble\":\"b\"}");
}


/*
 * A group key never equals an exact key, even for a body the flag leaves
 * unchanged; and its bytes are the exact key's with the group prefix:
 *
 * printf 'spendpol-cache-v1-group\0\0\0\5org_1\0\0\0\1\0\0\0\5key_a'\
 * '\0\0\0\6openai\0\0\0\26POST /chat/completions'\
 * '{"model":"gpt-4o","temperature":0}' | sha256sum
 */
static void
test_cache_group_key_never_equals_an_exact_key(void **state)
{
    char               exact[2 * SP_CACHE_KEY_LEN + 1];
    char               group[2 * SP_CACHE_KEY_LEN + 1], err[256];
    sp_cache_key_in_t  in;

    (void) state;

    hex_of_flags("{\"model\":\"m\"}", 0, exact);
    hex_of_flags("{\"model\":\"m\"}", SP_CACHE_KEY_NO_PROMPT, group);
    assert_string_not_equal(exact, group);

    in = key_in("{ \"model\": \"gpt-4o\",\n  \"messages\": [{\"role\": "
                "\"user\", \"content\": \"hi\"}],\n  \"user\": \"u1\", "
                "\"temperature\": 0 }");
    in.scope = SP_CACHE_SCOPE_API_KEY;
    in.scope_value = sp_str_from("key_a");
    in.flags = SP_CACHE_KEY_NO_PROMPT;

    assert_int_equal(key_of(&in, group, err, sizeof(err)), SP_OK);
    assert_string_equal(group, "fedcdea338fabb5b55674359f74e1ed3"
                               "84da0798e3c9d48278bfea52afa92929");

    /* the flag does not make a bad body keyable */
    in = key_in("{\"messages\": [1,}");
    in.flags = SP_CACHE_KEY_NO_PROMPT;
    assert_int_equal(key_of(&in, group, err, sizeof(err)), SP_ERROR);
}


static void
test_cache_key_refuses_what_is_not_one_json_value(void **state)
{
    char  deep[2 * 2049 + 1], ok[2 * 2048 + 1];

    (void) state;

    key_fails("", "empty");
    key_fails("  \n", "empty");
    key_fails("{", "ends");
    key_fails("{\"a\":1", "ends inside");
    key_fails("{\"a\":1}x", "after its JSON value");
    key_fails("{\"a\":1} {}", "after its JSON value");
    key_fails("{\"a\":1}}", "after its JSON value");
    key_fails("{\"a\":1,}", "quoted name");
    key_fails("{\"a\" 1}", "':'");
    key_fails("{a:1}", "quoted name");
    key_fails("[1,]", "invalid value");
    key_fails("[1 2]", "not closed by ']'");
    key_fails("{\"a\":[}", "not closed by ']'");
    key_fails("{\"a\":1]", "not closed by '}'");
    key_fails("{\"a\":tru}", "unknown literal");
    key_fails("{\"a\":nulls}", "not closed");
    key_fails("{\"a\":01}", "invalid value");
    key_fails("{\"a\":1.}", "invalid value");
    key_fails("{\"a\":-}", "invalid value");
    key_fails("{\"a\":1e}", "invalid value");
    key_fails("{\"a\":+1}", "invalid value");
    key_fails("{\"a\":\"x}", "not closed");
    key_fails("{\"a\":\"\x01\"}", "control character");
    key_fails("{\"a\":\"\\x\"}", "unknown escape");
    key_fails("{\"a\":\"\\u12G4\"}", "\\u escape");
    key_fails("{\"a\":\"\\ud800\"}", "high surrogate");
    key_fails("{\"a\":\"\\udc00\"}", "low surrogate");
    key_fails("{\"a\":\"\xc3\"}", "UTF-8");
    key_fails("{\"a\":\"\xc0\xaf\"}", "UTF-8");
    key_fails("{\"a\":\"\xed\xa0\x80\"}", "UTF-8");
    key_fails("{\"a\":\"\xf4\x90\x80\x80\"}", "UTF-8");
    key_fails("{\"\\u0000\":1}", "\\u0000");
    key_fails("{\"a\":1,\"a\":2}", "twice");
    key_fails("{\"b\":{\"a\":1,\"c\":0,\"a\":2}}", "twice");

    /* the request parser's limit (jansson's): 2048 levels, not 2049 */
    key_fails("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
              "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
              "ends inside");
    memset(ok, '[', 2048);
    memset(ok + 2048, ']', 2048);
    ok[sizeof(ok) - 1] = '\0';
    {
        char  hex[2 * SP_CACHE_KEY_LEN + 1];

        hex_of(ok, hex);
    }

    /* objects as deep, sorted at every level: bounded recursion */
    {
        char    *a, *b, ha[2 * SP_CACHE_KEY_LEN + 1];
        char     hb[2 * SP_CACHE_KEY_LEN + 1];
        size_t   i, n;

        a = malloc(2048 * 16 + 16);
        b = malloc(2048 * 16 + 16);
        assert_non_null(a);
        assert_non_null(b);
        n = 0;

        for (i = 0; i < 2047; i++) {
            memcpy(a + n, "{\"z\":0,\"a\":", 11);
            n += 11;
        }

        memcpy(a + n, "{}", 2);
        n += 2;

        for (i = 0; i < 2047; i++) {
            a[n++] = '}';
        }

        a[n] = '\0';

        n = 0;

        for (i = 0; i < 2047; i++) {
            memcpy(b + n, "{\"a\":", 5);
            n += 5;
        }

        memcpy(b + n, "{}", 2);
        n += 2;

        for (i = 0; i < 2047; i++) {
            memcpy(b + n, ",\"z\":0}", 7);
            n += 7;
        }

        b[n] = '\0';

        hex_of(a, ha);
        hex_of(b, hb);
        assert_string_equal(ha, hb);

        free(a);
        free(b);
    }

    /*
     * The tightest nesting of objects, {"":{"":...0}}. jansson counts
     * the 0 as a level too: 2047 objects around it, not 2048.
     */
    {
        char    *a, hex[2 * SP_CACHE_KEY_LEN + 1];
        size_t   i, n, levels;

        for (levels = 2047; levels <= 2048; levels++) {
            a = malloc(levels * 5 + 2);
            assert_non_null(a);
            n = 0;

            for (i = 0; i < levels; i++) {
                memcpy(a + n, "{\"\":", 4);
                n += 4;
            }

            a[n++] = '0';

            for (i = 0; i < levels; i++) {
                a[n++] = '}';
            }

            a[n] = '\0';

            if (levels == 2047) {
                hex_of(a, hex);

            } else {
                key_fails(a, "deeper");
            }

            free(a);
        }
    }

    memset(deep, '[', 2049);
    memset(deep + 2049, ']', 2049);
    deep[sizeof(deep) - 1] = '\0';
    key_fails(deep, "deeper");

    /* valid and kept: escapes, UTF-8, \u0000 in a value, any root */
    {
        char  hex[2 * SP_CACHE_KEY_LEN + 1];

        hex_of("{\"a\":\"\\ud83d\\ude00 \xf0\x9f\x98\x80 \xc3\xa9 "
               "\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\"}", hex);
        hex_of("[1,-0.5e+3,true,false,null,\"x\",{},[]]", hex);
        hex_of("\"just a string\"", hex);
        hex_of(" 12 ", hex);
    }
}


static void
test_cache_key_scratch_too_small_is_an_error(void **state)
{
    char               err[256], *scratch;
    size_t             need;
    uint8_t            key[SP_CACHE_KEY_LEN];
    sp_cache_key_in_t  in;

    (void) state;

    in = key_in(CHAT);
    need = sp_cache_key_scratch(in.body_len);
    assert_true(need > 2 * in.body_len);
    assert_true(need < 64 * 1024 + 16 * in.body_len);

    scratch = malloc(need);
    assert_non_null(scratch);

    err[0] = '\0';
    assert_int_equal(sp_cache_key(&in, scratch, need - 1, key, err,
                                  sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "scratch"));

    assert_int_equal(sp_cache_key(&in, NULL, need, key, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(sp_cache_key(&in, scratch, need, key, err, sizeof(err)),
                     SP_OK);

    /* a field too long for the header is named */
    in.endpoint.len = 4096;
    in.endpoint.data = scratch;
    memset(scratch, 'x', 4096 < need ? 4096 : need);
    assert_int_equal(sp_cache_key(&in, scratch, need, key, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "endpoint"));

    free(scratch);
}


static void
test_cache_key_large_body_is_linear_and_sorted(void **state)
{
    char    *a, *b, *pa, *pb;
    char     ha[2 * SP_CACHE_KEY_LEN + 1], hb[2 * SP_CACHE_KEY_LEN + 1];
    int      i, n;

    (void) state;

    /* 20,000 members, written ascending and descending */
    n = 20000;
    a = malloc((size_t) n * 24 + 16);
    b = malloc((size_t) n * 24 + 16);
    assert_non_null(a);
    assert_non_null(b);

    pa = a;
    pb = b;
    *pa++ = '{';
    *pb++ = '{';

    for (i = 0; i < n; i++) {
        pa += sprintf(pa, "%s\"k%05d\":[%d]", i ? "," : "", i, i);
        pb += sprintf(pb, "%s\"k%05d\":[%d]", i ? "," : "", n - 1 - i,
                      n - 1 - i);
    }

    *pa++ = '}';
    *pb++ = '}';
    *pa = '\0';
    *pb = '\0';

    hex_of(a, ha);
    hex_of(b, hb);
    assert_string_equal(ha, hb);

    free(a);
    free(b);
}


/*
 * Objects whose names already ascend are written as they stand, the
 * others sorted: every mix of the two, nested both ways, in arrays and
 * at the top, keys as the same body written sorted.
 */
static void
test_cache_key_objects_in_order_and_not_mixed(void **state)
{
    (void) state;

    /* in order around out of order, and the other way round */
    same_key("{\"a\":{\"c\":{\"z\":1,\"y\":2},\"d\":[{\"q\":1,\"p\":2},"
             "{\"a\":1}]},\"b\":1}",
             "{\"a\":{\"c\":{\"y\":2,\"z\":1},\"d\":[{\"p\":2,\"q\":1},"
             "{\"a\":1}]},\"b\":1}");
    same_key("{\"b\":{\"x\":{\"m\":1,\"n\":{\"k\":0,\"j\":1}},\"w\":2},"
             "\"a\":[[{\"b\":1,\"a\":2}],{\"a\":{\"d\":1,\"c\":2}}]}",
             "{\"a\":[[{\"a\":2,\"b\":1}],{\"a\":{\"c\":2,\"d\":1}}],"
             "\"b\":{\"w\":2,\"x\":{\"m\":1,\"n\":{\"j\":1,\"k\":0}}}}");

    /* siblings after a nested out-of-order object, at several depths */
    same_key("[{\"b\":{\"d\":1,\"c\":1},\"a\":{\"f\":{\"h\":1,\"g\":1},"
             "\"e\":1}},{\"z\":1,\"y\":{\"b\":1,\"a\":1}},{\"a\":1}]",
             "[{\"a\":{\"e\":1,\"f\":{\"g\":1,\"h\":1}},\"b\":{\"c\":1,"
             "\"d\":1}},{\"y\":{\"a\":1,\"b\":1},\"z\":1},{\"a\":1}]");

    /* a name that is a prefix of the next is in order; equal is a twin */
    same_key("{\"a\":1,\"ab\":2}", "{\"ab\":2,\"a\":1}");
    key_fails("{\"a\":1,\"b\":2,\"b\":3}", "twice");
    key_fails("{\"x\":{\"a\":1,\"a\":1},\"w\":0}", "twice");

    /* an ignored member between two others leaves them in order */
    same_key("{\"a\":{\"d\":1,\"c\":2},\"user\":{\"z\":1,\"y\":2},"
             "\"b\":1}",
             "{\"a\":{\"c\":2,\"d\":1},\"b\":1}");
}


/*
 * The scratch a body costs: the module allocates it for every cacheable
 * request. About 6 times the body, at least 4 KB; a 1 MB body is keyed
 * in it, members as dense as they come.
 */
static void
test_cache_key_scratch_is_six_times_the_body(void **state)
{
    char    *body, hex[2 * SP_CACHE_KEY_LEN + 1];
    size_t   len, n, i;

    (void) state;

    assert_true(sp_cache_key_scratch(0) < 4300);
    assert_true(sp_cache_key_scratch(2048) < 5 * 2048 + 4300);

    for (len = 4096; len <= 64 * 1024 * 1024; len *= 4) {
        assert_true(sp_cache_key_scratch(len) <= 6 * len + 128);
    }

    assert_int_equal(sp_cache_key_scratch((size_t) UINT32_MAX), SIZE_MAX);

    /* 1 MB of [{"b":0,"a":0},...]: every object out of order */
    len = 1024 * 1024;
    body = malloc(len + 32);
    assert_non_null(body);
    n = 0;
    body[n++] = '[';

    for (i = 0; n + 16 < len; i++) {
        memcpy(body + n, i ? ",{\"b\":0,\"a\":0}" : "{\"b\":0,\"a\":0}",
               i ? 14 : 13);
        n += i ? 14 : 13;
    }

    body[n++] = ']';
    body[n] = '\0';

    hex_of(body, hex);

    /* and {"":{"":...0}} as deep as allowed */
    n = 0;

    for (i = 0; i < 2047; i++) {
        memcpy(body + n, "{\"\":", 4);
        n += 4;
    }

    body[n++] = '0';

    for (i = 0; i < 2047; i++) {
        body[n++] = '}';
    }

    body[n] = '\0';
    hex_of(body, hex);

    free(body);
}


static void
test_cache_config_defaults_and_names(void **state)
{
    uint32_t           v;
    sp_cache_config_t  config;

    (void) state;

    memset(&config, 0xff, sizeof(config));
    sp_cache_config_default(&config);
    assert_int_equal(config.mode, SP_CACHE_EXACT);
    assert_int_equal(config.scope, SP_CACHE_SCOPE_ORG);
    assert_int_equal(config.ttl_s, 3600);
    assert_int_equal(config.max_entry_bytes, 1024 * 1024);
    assert_int_equal(config.only_deterministic, 1);
    assert_int_equal(config.threshold_ppm, 950000);
    assert_int_equal(config.embed_provider, SP_PROVIDER_UNKNOWN);
    assert_int_equal(config.embed_system, 0);
    assert_int_equal(config.embed_timeout_ms, 1000);
    assert_int_equal(config.max_vectors, 10000);
    assert_string_equal(config.embed_model, "");
    assert_int_equal(config.embed_model[SP_CACHE_EMBED_MODEL_LEN - 1], 0);

    assert_string_equal(sp_cache_mode_name(SP_CACHE_OFF), "off");
    assert_string_equal(sp_cache_mode_name(SP_CACHE_EXACT), "exact");
    assert_string_equal(sp_cache_mode_name(SP_CACHE_SEMANTIC), "semantic");
    assert_null(sp_cache_mode_name(3));

    assert_string_equal(sp_cache_scope_name(SP_CACHE_SCOPE_ORG), "org");
    assert_string_equal(sp_cache_scope_name(SP_CACHE_SCOPE_API_KEY),
                        "api_key");
    assert_string_equal(sp_cache_scope_name(SP_CACHE_SCOPE_PROJECT),
                        "project");
    assert_string_equal(sp_cache_scope_name(SP_CACHE_SCOPE_DEPARTMENT),
                        "department");
    assert_null(sp_cache_scope_name(4));

    for (v = 0; v < 3; v++) {
        uint32_t  back;

        assert_int_equal(sp_cache_mode_parse(sp_cache_mode_name(v),
                             strlen(sp_cache_mode_name(v)), &back), SP_OK);
        assert_int_equal(back, v);
    }

    for (v = 0; v < 4; v++) {
        uint32_t  back;

        assert_int_equal(sp_cache_scope_parse(sp_cache_scope_name(v),
                             strlen(sp_cache_scope_name(v)), &back), SP_OK);
        assert_int_equal(back, v);
    }

    assert_int_equal(sp_cache_mode_parse("Exact", 5, &v), SP_ERROR);
    assert_int_equal(sp_cache_mode_parse("exac", 4, &v), SP_ERROR);
    assert_int_equal(sp_cache_mode_parse("exactly", 7, &v), SP_ERROR);
    assert_int_equal(sp_cache_mode_parse("", 0, &v), SP_ERROR);
    assert_int_equal(sp_cache_scope_parse("org ", 4, &v), SP_ERROR);
    assert_int_equal(sp_cache_scope_parse("apikey", 6, &v), SP_ERROR);
    /* a length, not a C string: "org" inside a longer buffer */
    assert_int_equal(sp_cache_scope_parse("orgx", 3, &v), SP_OK);
    assert_int_equal(v, SP_CACHE_SCOPE_ORG);
}


static void
test_cache_embed_provider_and_model_rules(void **state)
{
    char  model[SP_CACHE_EMBED_MODEL_LEN + 1];

    (void) state;

    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_OPENAI), 1);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_AZURE), 1);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_GOOGLE), 1);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_COHERE), 1);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_MISTRAL), 1);
    /* no embeddings endpoint */
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_ANTHROPIC),
                     0);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_UNKNOWN), 0);
    assert_int_equal(sp_cache_embed_provider_valid(SP_PROVIDER_MISTRAL + 1),
                     0);

    assert_int_equal(sp_cache_embed_model_valid("text-embedding-3-small",
                                                22), 1);
    assert_int_equal(sp_cache_embed_model_valid("models/embedding-001~!",
                                                21), 1);
    assert_int_equal(sp_cache_embed_model_valid("", 0), 0);
    assert_int_equal(sp_cache_embed_model_valid(NULL, 3), 0);
    assert_int_equal(sp_cache_embed_model_valid("a b", 3), 0);
    assert_int_equal(sp_cache_embed_model_valid("a\tb", 3), 0);
    assert_int_equal(sp_cache_embed_model_valid("a\x7f", 2), 0);
    assert_int_equal(sp_cache_embed_model_valid("caf\xc3\xa9", 5), 0);
    assert_int_equal(sp_cache_embed_model_valid("a\0b", 3), 0);

    memset(model, 'm', sizeof(model));
    assert_int_equal(sp_cache_embed_model_valid(model,
                         SP_CACHE_EMBED_MODEL_LEN - 1), 1);
    assert_int_equal(sp_cache_embed_model_valid(model,
                         SP_CACHE_EMBED_MODEL_LEN), 0);
}


static void
test_cache_deterministic_rule(void **state)
{
    (void) state;

    assert_int_equal(sp_cache_deterministic(0, 0, SP_METER_TOKENS), 0);
    assert_int_equal(sp_cache_deterministic(1, 0, SP_METER_TOKENS), 1);
    assert_int_equal(sp_cache_deterministic(0, 1, SP_METER_TOKENS), 1);
    assert_int_equal(sp_cache_deterministic(1, 1, SP_METER_TOKENS), 1);
    assert_int_equal(sp_cache_deterministic(0, 0, SP_METER_EMBED), 1);
    assert_int_equal(sp_cache_deterministic(0, 0, SP_METER_SEARCH), 1);
    assert_int_equal(sp_cache_deterministic(0, 0, SP_METER_FREE), 0);
    assert_int_equal(sp_cache_deterministic(0, 0, 0), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_cache_key_ignores_member_order_and_whitespace),
        cmocka_unit_test(
            test_cache_key_ignores_user_stream_options_metadata_at_top_level),
        cmocka_unit_test(test_cache_key_changes_with_any_other_change),
        cmocka_unit_test(test_cache_key_covers_org_scope_provider_endpoint),
        cmocka_unit_test(test_cache_key_fields_are_length_prefixed),
        cmocka_unit_test(test_cache_key_known_answer),
        cmocka_unit_test(test_cache_group_key_leaves_out_the_prompt),
        cmocka_unit_test(test_cache_group_key_never_equals_an_exact_key),
        cmocka_unit_test(test_cache_key_refuses_what_is_not_one_json_value),
        cmocka_unit_test(test_cache_key_scratch_too_small_is_an_error),
        cmocka_unit_test(test_cache_key_large_body_is_linear_and_sorted),
        cmocka_unit_test(test_cache_key_objects_in_order_and_not_mixed),
        cmocka_unit_test(test_cache_key_scratch_is_six_times_the_body),
        cmocka_unit_test(test_cache_config_defaults_and_names),
        cmocka_unit_test(test_cache_embed_provider_and_model_rules),
        cmocka_unit_test(test_cache_deterministic_rule),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
