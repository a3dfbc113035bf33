/*
 * libspendpol prompt templates (sp_template.c): a version validated with
 * errors naming the member, X-Spendpol-Template references, and a version
 * applied to each provider's body: the output is parsed with jansson and
 * compared, the client's members are kept as written, and whatever the
 * variables hold the output stays JSON.
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

#include "sp_template.h"


/*
 * A record as controld writes it: three versions, "production" on 2,
 * "broken" on a version that does not exist.
 */
static const char  record[] =
    "{\"id\":\"5f0c6a7e-3b1d-4c2a-9e8f-0123456789ab\","
    "\"slug\":\"support-reply\",\"latest\":3,"
    "\"labels\":{\"production\":2,\"broken\":9},"
    "\"versions\":["
    "{\"version\":1,\"messages\":[{\"role\":\"user\","
    "\"content\":\"v1 {{question}}\"}],"
    "\"variables\":{\"question\":{\"required\":true}}},"
    "{\"version\":2,\"messages\":[{\"role\":\"system\","
    "\"content\":\"You answer {{product}} questions.\"},"
    "{\"role\":\"user\",\"content\":\"{{question}}\"}],"
    "\"variables\":{\"product\":{\"default\":\"Spendpol\"},"
    "\"question\":{\"required\":true}},\"model\":\"gpt-4o-mini\"},"
    "{\"version\":3,"
    "\"messages\":[{\"role\":\"system\",\"content\":\"You answer "
    "{{product}} questions in {{ tone }} tone.\"},"
    "{\"role\":\"developer\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"{{question}}\"}],"
    "\"variables\":{\"product\":{\"required\":true},"
    "\"tone\":{\"default\":\"a friendly\"},"
    "\"question\":{\"required\":true}},"
    "\"model\":\"gpt-4o-mini\","
    "\"parameters\":{\"temperature\":0.2,\"max_tokens\":300}}"
    "]}";

#define NO_LABEL  ((sp_str_t) { "", 0 })


typedef struct {
    int                   rc;
    char                  code[SP_TEMPLATE_CODE_LEN];
    char                  err[256];
    char                 *out;
    size_t                len;
    sp_template_result_t  res;
} applied_t;


/* applies into a buffer of exactly the bound, which must suffice */
static void
apply(applied_t *a, sp_provider_e provider, const char *rec, int64_t version,
    const char *label, const char *body, const char *header)
{
    size_t  bound, hlen;

    hlen = header ? strlen(header) : 0;
    bound = sp_template_apply_bound(strlen(rec), strlen(body), hlen);

    memset(a, 0, sizeof(applied_t));
    a->out = malloc(bound);
    assert_non_null(a->out);

    a->rc = sp_template_apply(provider, rec, strlen(rec), version,
                              label ? sp_str_from(label) : NO_LABEL, body,
                              strlen(body), header, hlen, a->out, bound,
                              &a->len, &a->res, a->code, sizeof(a->code),
                              a->err, sizeof(a->err));
}


/* applied, and the output read back by jansson */
static json_t *
apply_json(sp_provider_e provider, const char *rec, int64_t version,
    const char *label, const char *body, const char *header, applied_t *a)
{
    json_t       *root;
    json_error_t  jerr;

    apply(a, provider, rec, version, label, body, header);

    if (a->rc != SP_OK) {
        print_error("apply: %s: %s\n", a->code, a->err);
    }

    assert_int_equal(a->rc, SP_OK);

    root = json_loadb(a->out, a->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                     &jerr);

    if (root == NULL) {
        print_error("not JSON (%s): %.*s\n", jerr.text, (int) a->len,
                    a->out);
    }

    assert_non_null(root);

    return root;
}


static void
apply_fails(sp_provider_e provider, const char *rec, int64_t version,
    const char *label, const char *body, const char *header,
    const char *code, const char *needle)
{
    applied_t  a;

    apply(&a, provider, rec, version, label, body, header);

    if (a.rc == SP_OK) {
        print_error("applied: %.*s\n", (int) a.len, a.out);
    }

    assert_int_equal(a.rc, SP_ERROR);
    assert_string_equal(a.code, code);

    if (strstr(a.err, needle) == NULL) {
        print_error("\"%s\" not in \"%s\"\n", needle, a.err);
    }

    assert_non_null(strstr(a.err, needle));

    free(a.out);
}


/* messages[i] of root has this role and content */
static void
assert_message(json_t *root, size_t i, const char *role, const char *content)
{
    json_t  *m;

    m = json_array_get(json_object_get(root, "messages"), i);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "role")), role);
    assert_string_equal(json_string_value(json_object_get(m, "content")),
                        content);
}


/* ---- slugs and references ------------------------------------------- */

static void
test_template_slug_valid(void **state)
{
    assert_true(sp_template_slug_valid("support-reply", 13));
    assert_true(sp_template_slug_valid("a", 1));
    assert_true(sp_template_slug_valid("0_x-y", 5));
    assert_false(sp_template_slug_valid("", 0));
    assert_false(sp_template_slug_valid("-a", 2));
    assert_false(sp_template_slug_valid("_a", 2));
    assert_false(sp_template_slug_valid("Support", 7));
    assert_false(sp_template_slug_valid("a b", 3));
    assert_false(sp_template_slug_valid("a@b", 3));
    assert_false(sp_template_slug_valid("a\0b", 3));
    assert_true(sp_template_slug_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        64));
    assert_false(sp_template_slug_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        65));
}


static int
ref(const char *s, sp_str_t *slug, int64_t *version, sp_str_t *label,
    char *err, size_t errlen)
{
    return sp_template_ref_parse(s, strlen(s), slug, version, label, err,
                                 errlen);
}


static void
test_template_ref_parse(void **state)
{
    char      err[256];
    int64_t   version;
    sp_str_t  slug, label;

    assert_int_equal(ref("support-reply", &slug, &version, &label, err,
                         sizeof(err)), SP_OK);
    assert_int_equal(slug.len, 13);
    assert_memory_equal(slug.data, "support-reply", 13);
    assert_int_equal(version, 0);
    assert_int_equal(label.len, 0);

    assert_int_equal(ref("support-reply@12", &slug, &version, &label, err,
                         sizeof(err)), SP_OK);
    assert_int_equal(slug.len, 13);
    assert_int_equal(version, 12);
    assert_int_equal(label.len, 0);

    assert_int_equal(ref("support-reply@production", &slug, &version, &label,
                         err, sizeof(err)), SP_OK);
    assert_int_equal(slug.len, 13);
    assert_int_equal(version, 0);
    assert_int_equal(label.len, 10);
    assert_memory_equal(label.data, "production", 10);

    /* a label may hold digits, as long as it is not only digits */
    assert_int_equal(ref("s@2024-q1", &slug, &version, &label, err,
                         sizeof(err)), SP_OK);
    assert_int_equal(label.len, 7);

    assert_int_equal(ref("s@2147483648", &slug, &version, &label, err,
                         sizeof(err)), SP_OK);
    assert_int_equal(version, 2147483648LL);
    assert_int_equal(ref("s@1", &slug, &version, &label, err, sizeof(err)),
                     SP_OK);
    assert_int_equal(version, 1);

    assert_int_equal(ref("", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(ref("@", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "no slug"));
    assert_int_equal(ref("@3", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(ref("s@", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "nothing after '@'"));
    assert_int_equal(ref("s@1@2", &slug, &version, &label, err,
                         sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "more than one '@'"));
    assert_int_equal(ref("s@@", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(ref("s@0", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "1 to 2147483648"));
    assert_int_equal(ref("s@03", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(ref("s@2147483649", &slug, &version, &label, err,
                         sizeof(err)), SP_ERROR);
    assert_int_equal(ref("s@99999999999999999999999", &slug, &version,
                         &label, err, sizeof(err)), SP_ERROR);
    assert_int_equal(ref("Support", &slug, &version, &label, err,
                         sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "\"Support\" is not a template slug"));
    assert_int_equal(ref("s@Prod", &slug, &version, &label, err,
                         sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "\"Prod\""));
    assert_int_equal(ref("s@-3", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(ref("s 1", &slug, &version, &label, err, sizeof(err)),
                     SP_ERROR);

    /* bytes a header may hold are never echoed as they are */
    assert_int_equal(ref("a\"\x01\xff", &slug, &version, &label, err,
                         sizeof(err)), SP_ERROR);
    assert_null(strchr(err, '\x01'));
    assert_null(strchr(err, '\xff'));
}


/* ---- validation ----------------------------------------------------- */

static void
test_template_validate_accepts_versions(void **state)
{
    size_t  i;
    char    field[128], err[256];

    static const char  *good[] = {
        /* the header's example */
        "{\"messages\": [{\"role\": \"system\", \"content\": \"You answer "
        "{{product}} questions in {{tone}} tone.\"},"
        " {\"role\": \"user\", \"content\": \"{{question}}\"}],"
        " \"variables\": {\"product\": {\"required\": true},"
        " \"tone\": {\"default\": \"a friendly\"},"
        " \"question\": {\"required\": true}},"
        " \"model\": \"gpt-4o-mini\","
        " \"parameters\": {\"temperature\": 0.2, \"max_tokens\": 300}}",
        /* no variables at all; a lone "{{" is text */
        "{\"messages\":[{\"role\":\"user\",\"content\":\"a {{ b\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"}} {{\"}]}",
        /* spaces inside the braces; defaults of every scalar type */
        "{\"messages\":[{\"role\":\"developer\",\"content\":"
        "\"{{ a }}{{b}}{{  c}}{{_d9 }}\"}],\"variables\":{"
        "\"a\":{\"default\":1.5},\"b\":{\"default\":false},"
        "\"c\":{\"required\":false,\"default\":\"\"},"
        "\"_d9\":{\"required\":true}}}",
        /* a placeholder written with escapes */
        "{\"messages\":[{\"role\":\"assistant\",\"content\":"
        "\"\\u007b\\u007bx}}\"}],\"variables\":{\"x\":{\"required\":true}}}",
        /* JSON braces in the text are text */
        "{\"messages\":[{\"role\":\"user\",\"content\":"
        "\"answer as {\\\"a\\\": {\\\"b\\\": 1}}\"}]}",
    };

    for (i = 0; i < sizeof(good) / sizeof(char *); i++) {
        if (sp_template_validate(good[i], strlen(good[i]), field,
                                 sizeof(field), err, sizeof(err))
            != SP_OK)
        {
            print_error("good[%zu]: %s: %s\n", i, field, err);
            fail();
        }
    }
}


static void
test_template_validate_errors_name_the_member(void **state)
{
    size_t  i;
    char    field[128], err[256];

    static const struct {
        const char  *json;
        const char  *field;
        const char  *err;
    } bad[] = {
        { "[]", "", "expected a JSON object" },
        { "{\"messages\":", "", "line 1" },
        { "{}", "messages", "required" },
        { "{\"messages\":[]}", "messages", "at least one" },
        { "{\"messages\":{}}", "messages", "expected an array" },
        { "{\"messages\":[1]}", "messages[0]", "expected an object" },
        { "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role",
          "required" },
        { "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content",
          "required" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
          "{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[1].role",
          "system, developer, user or assistant" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":[]}]}",
          "messages[0].content", "expected a string" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\","
          "\"name\":\"bob\"}]}", "messages[0].name", "unknown member" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{question}}\"}]}",
          "messages[0].content",
          "{{question}} is used but not declared in variables" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{bad-name}}\"}],"
          "\"variables\":{}}", "messages[0].content",
          "\"{{bad-name}}\" is not a placeholder" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{1x}}\"}]}",
          "messages[0].content", "is not a placeholder" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{ }}\"}]}",
          "messages[0].content", "is not a placeholder" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{a b}}\"}]}",
          "messages[0].content", "is not a placeholder" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"{{{a}}}\"}],"
          "\"variables\":{\"a\":{\"required\":true}}}",
          "messages[0].content", "is not a placeholder" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":[]}", "variables", "expected an object" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"a-b\":{\"required\":true}}}", "variables.a-b",
          "not a variable name" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"required\":true,\"default\":\"x\"}}}",
          "variables.tone", "not both" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{}}}", "variables.tone",
          "\"required\": true or a \"default\"" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"required\":false}}}", "variables.tone",
          "not required and without a default" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"default\":null}}}",
          "variables.tone.default", "a string, a number or a boolean" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"default\":[1]}}}",
          "variables.tone.default", "a string, a number or a boolean" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"required\":\"yes\"}}}",
          "variables.tone.required", "true or false" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"variables\":{\"tone\":{\"required\":true,\"help\":\"x\"}}}",
          "variables.tone.help", "unknown member" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"model\":\"\"}", "model", "1 to 255 printable" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"model\":4}", "model", "model name" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"model\":\"gpt\\n4\"}", "model", "printable ASCII" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"model\":\"gpt 4\"}", "model", "no space" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"parameters\":[]}", "parameters", "expected an object" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"parameters\":{\"stream\":true}}", "parameters.stream",
          "may not set stream" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"parameters\":{\"model\":\"x\"}}", "parameters.model",
          "may not set model" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"parameters\":{\"messages\":[]}}", "parameters.messages",
          "may not set messages" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"parameters\":{\"spendpol_variables\":{}}}",
          "parameters.spendpol_variables", "may not set spendpol_variables" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"temperature\":1}", "temperature", "unknown member" },
        /* a version number is the record's, not the caller's */
        { "{\"version\":1,\"messages\":[{\"role\":\"user\","
          "\"content\":\"x\"}]}", "version", "unknown member" },
        /* twice the same member: jansson's word */
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"model\":\"a\",\"model\":\"b\"}", "", "duplicate" },
        /* NUL in a template text */
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000\"}]}",
          "", "NUL" },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(field, "unset");
        strcpy(err, "unset");

        if (sp_template_validate(bad[i].json, strlen(bad[i].json), field,
                                 sizeof(field), err, sizeof(err))
            != SP_ERROR
            || strcmp(field, bad[i].field) != 0
            || strstr(err, bad[i].err) == NULL)
        {
            print_error("bad[%zu] %s: got field \"%s\" err \"%s\"\n", i,
                        bad[i].json, field, err);
            fail();
        }
    }
}


static void
test_template_validate_limits(void **state)
{
    size_t  i, n;
    char    field[128], err[256], *json;

    json = malloc(64 * 1024);
    assert_non_null(json);

    /* 64 placeholders pass, 65 do not */
    for (n = 64; n <= 65; n++) {
        strcpy(json, "{\"messages\":[{\"role\":\"user\",\"content\":\"");

        for (i = 0; i < n; i++) {
            strcat(json, "{{a}}");
        }

        strcat(json, "\"}],\"variables\":{\"a\":{\"required\":true}}}");

        assert_int_equal(sp_template_validate(json, strlen(json), field,
                                              sizeof(field), err,
                                              sizeof(err)),
                         n == 64 ? SP_OK : SP_ERROR);
    }

    assert_string_equal(field, "messages[0].content");
    assert_non_null(strstr(err, "at most 64 placeholders"));

    /* 128 messages pass, 129 do not */
    for (n = 128; n <= 129; n++) {
        strcpy(json, "{\"messages\":[");

        for (i = 0; i < n; i++) {
            strcat(json, i ? ",{\"role\":\"user\",\"content\":\"x\"}"
                           : "{\"role\":\"user\",\"content\":\"x\"}");
        }

        strcat(json, "]}");

        assert_int_equal(sp_template_validate(json, strlen(json), field,
                                              sizeof(field), err,
                                              sizeof(err)),
                         n == 128 ? SP_OK : SP_ERROR);
    }

    assert_string_equal(field, "messages");

    /* a 65-character variable name */
    strcpy(json, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"variables\":{\"");

    for (i = 0; i < 65; i++) {
        strcat(json, "v");
    }

    strcat(json, "\":{\"required\":true}}}");
    assert_int_equal(sp_template_validate(json, strlen(json), field,
                                          sizeof(field), err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "not a variable name"));

    free(json);
}


/* ---- applying ------------------------------------------------------- */

static void
test_template_apply_openai(void **state)
{
    json_t     *root;
    applied_t   a;

    static const char  body[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"And refunds?\"}],"
        "\"spendpol_variables\":{\"product\":\"Spendpol\","
        "\"question\":\"How do budgets work?\"},"
        "\"temperature\" :  0.70,\"user\":\"u-1\"}";

    root = apply_json(SP_PROVIDER_OPENAI, record, 3, NULL, body, NULL, &a);

    assert_int_equal(json_array_size(json_object_get(root, "messages")), 4);
    assert_message(root, 0, "system",
                   "You answer Spendpol questions in a friendly tone.");
    assert_message(root, 1, "developer", "Be brief.");
    assert_message(root, 2, "user", "How do budgets work?");
    assert_message(root, 3, "user", "And refunds?");

    /* the template's model and max_tokens fill in; the client's stays */
    assert_string_equal(json_string_value(json_object_get(root, "model")),
                        "gpt-4o-mini");
    assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")),
                     300);
    assert_null(json_object_get(root, "spendpol_variables"));
    assert_non_null(strstr(a.out, "\"temperature\" :  0.70"));
    assert_non_null(strstr(a.out, "\"user\":\"u-1\""));
    assert_int_equal(json_object_size(root), 5);

    assert_string_equal(a.res.id, "5f0c6a7e-3b1d-4c2a-9e8f-0123456789ab");
    assert_int_equal(a.res.version, 3);

    json_decref(root);
    free(a.out);
}


static void
test_template_apply_keeps_model_and_adds_messages(void **state)
{
    json_t     *root;
    applied_t   a;

    /* no messages of its own, a model of its own */
    static const char  body[] =
        "  {\n  \"model\": \"gpt-4o\",\n  \"spendpol_variables\": "
        "{\"question\": \"Why?\"}\n}\n";

    root = apply_json(SP_PROVIDER_OPENAI, record, 2, NULL, body, NULL, &a);

    assert_int_equal(json_array_size(json_object_get(root, "messages")), 2);
    assert_message(root, 0, "system", "You answer Spendpol questions.");
    assert_message(root, 1, "user", "Why?");
    assert_string_equal(json_string_value(json_object_get(root, "model")),
                        "gpt-4o");
    assert_int_equal(json_object_size(root), 2);

    /* the text around the object as the client wrote it */
    assert_memory_equal(a.out, "  {\"messages\":", 14);
    assert_memory_equal(a.out + a.len - 3, "\n}\n", 3);
    assert_non_null(strstr(a.out, "\"model\": \"gpt-4o\""));
    assert_int_equal(a.res.version, 2);

    json_decref(root);
    free(a.out);
}


/* spendpol_variables first, in the middle, last or alone */
static void
test_template_apply_cuts_variables_anywhere(void **state)
{
    size_t      i;
    json_t     *root;
    applied_t   a;

    static const struct {
        const char  *body;
        size_t       members;
    } bodies[] = {
        { "{\"spendpol_variables\":{\"question\":\"q\"},\"n\":1,\"x\":[]}", 4 },
        { "{\"n\":1, \"spendpol_variables\" : {\"question\":\"q\"} ,\"x\":[]}",
          4 },
        { "{\"n\":1,\"x\":[],\"spendpol_variables\":{\"question\":\"q\"}}", 4 },
        { "{\"spendpol_variables\":{\"question\":\"q\"}}", 2 },
        { "{ \"spendpol_variables\":{\"question\":\"q\"} }", 2 },
        { "{\"messages\":[],\"spendpol_variables\":{\"question\":\"q\"}}", 2 },
        { "{\"spendpol_variables\":{\"question\":\"q\"},\"messages\":[ ]}", 2 },
        { "{\"messages\":null,\"spendpol_vari\\u0061bles\":"
          "{\"question\":\"q\"}}", 2 },
    };

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        root = apply_json(SP_PROVIDER_OPENAI, record, 2, NULL, bodies[i].body,
                          NULL, &a);

        if (json_object_size(root) != bodies[i].members
            || json_object_get(root, "spendpol_variables") != NULL
            || json_array_size(json_object_get(root, "messages")) != 2)
        {
            print_error("bodies[%zu]: %.*s\n", i, (int) a.len, a.out);
            fail();
        }

        assert_message(root, 1, "user", "q");

        json_decref(root);
        free(a.out);
    }
}


static void
test_template_apply_anthropic_system(void **state)
{
    json_t     *root, *system;
    applied_t   a;

    /* no system of its own: a string */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 3, NULL,
                      "{\"model\":\"claude-3-5-haiku-latest\","
                      "\"max_tokens\":100,\"messages\":[{\"role\":\"user\","
                      "\"content\":\"More?\"}],\"spendpol_variables\":"
                      "{\"product\":\"X\",\"question\":\"Q\"}}", NULL, &a);

    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "You answer X questions in a friendly tone.\n\n"
                        "Be brief.");
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 2);
    assert_message(root, 0, "user", "Q");
    assert_message(root, 1, "user", "More?");
    assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")),
                     100);
    assert_string_equal(json_string_value(json_object_get(root, "model")),
                        "claude-3-5-haiku-latest");
    json_decref(root);
    free(a.out);

    /* a system string: the template's first */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 3, NULL,
                      "{\"system\":\"Mine \\\"quoted\\\".\",\"spendpol_"
                      "variables\":{\"product\":\"X\",\"question\":\"Q\"}}",
                      NULL, &a);

    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "You answer X questions in a friendly tone.\n\n"
                        "Be brief.\n\nMine \"quoted\".");
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 1);
    json_decref(root);
    free(a.out);

    /* an array of blocks: a text block prepended */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 3, NULL,
                      "{\"system\":[{\"type\":\"text\",\"text\":\"Mine\","
                      "\"cache_control\":{\"type\":\"ephemeral\"}}],"
                      "\"spendpol_variables\":{\"product\":\"X\","
                      "\"question\":\"Q\"}}", NULL, &a);

    system = json_object_get(root, "system");
    assert_int_equal(json_array_size(system), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(system, 0), "text")),
                        "You answer X questions in a friendly tone.\n\n"
                        "Be brief.");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(system, 0), "type")), "text");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(system, 1), "text")), "Mine");
    assert_non_null(json_object_get(json_array_get(system, 1),
                                    "cache_control"));
    json_decref(root);
    free(a.out);

    /* an empty array, an empty string, null */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 2, NULL,
                      "{\"system\":[],\"spendpol_variables\":"
                      "{\"question\":\"Q\"}}", NULL, &a);
    assert_int_equal(json_array_size(json_object_get(root, "system")), 1);
    json_decref(root);
    free(a.out);

    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 2, NULL,
                      "{\"system\":\"\",\"spendpol_variables\":"
                      "{\"question\":\"Q\"}}", NULL, &a);
    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "You answer Spendpol questions.");
    json_decref(root);
    free(a.out);

    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 2, NULL,
                      "{\"system\":null,\"spendpol_variables\":"
                      "{\"question\":\"Q\"}}", NULL, &a);
    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "You answer Spendpol questions.");
    json_decref(root);
    free(a.out);

    /* a template without system messages leaves "system" alone */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 1, NULL,
                      "{\"system\":\"Mine\",\"spendpol_variables\":"
                      "{\"question\":\"Q\"}}", NULL, &a);
    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "Mine");
    assert_message(root, 0, "user", "v1 Q");
    json_decref(root);
    free(a.out);

    apply_fails(SP_PROVIDER_ANTHROPIC, record, 2, NULL,
                "{\"system\":5,\"spendpol_variables\":{\"question\":\"Q\"}}",
                NULL, "invalid_json", "\"system\"");
}


static void
test_template_apply_other_providers(void **state)
{
    json_t     *root;
    applied_t   a;

    static const char  body[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"next\"}],"
        "\"spendpol_variables\":{\"product\":\"P\",\"question\":\"Q\"}}";

    /* Mistral and Cohere: developer becomes system */
    root = apply_json(SP_PROVIDER_MISTRAL, record, 3, NULL, body, NULL, &a);
    assert_message(root, 0, "system",
                   "You answer P questions in a friendly tone.");
    assert_message(root, 1, "system", "Be brief.");
    assert_message(root, 2, "user", "Q");
    assert_message(root, 3, "user", "next");
    json_decref(root);
    free(a.out);

    root = apply_json(SP_PROVIDER_COHERE, record, 3, NULL, body, NULL, &a);
    assert_message(root, 1, "system", "Be brief.");
    assert_string_equal(json_string_value(json_object_get(root, "model")),
                        "gpt-4o-mini");
    json_decref(root);
    free(a.out);

    /* Azure: developer kept; no model, the deployment decides */
    root = apply_json(SP_PROVIDER_AZURE, record, 3, NULL, body, NULL, &a);
    assert_message(root, 1, "developer", "Be brief.");
    assert_null(json_object_get(root, "model"));
    assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")),
                     300);
    json_decref(root);
    free(a.out);

    apply_fails(SP_PROVIDER_GOOGLE, record, 3, NULL, body, NULL,
                "template_provider_unsupported", "google");
    apply_fails(SP_PROVIDER_UNKNOWN, record, 3, NULL, body, NULL,
                "template_provider_unsupported", "this provider");
}


static void
test_template_apply_versions_and_labels(void **state)
{
    json_t     *root;
    applied_t   a;

    static const char  body[] =
        "{\"spendpol_variables\":{\"question\":\"Q\",\"product\":\"P\"}}";

    /* latest */
    root = apply_json(SP_PROVIDER_OPENAI, record, 0, NULL, body, NULL, &a);
    assert_int_equal(a.res.version, 3);
    json_decref(root);
    free(a.out);

    root = apply_json(SP_PROVIDER_OPENAI, record, 1, NULL, body, NULL, &a);
    assert_int_equal(a.res.version, 1);
    assert_message(root, 0, "user", "v1 Q");
    json_decref(root);
    free(a.out);

    root = apply_json(SP_PROVIDER_OPENAI, record, 0, "production", body,
                      NULL, &a);
    assert_int_equal(a.res.version, 2);
    assert_message(root, 0, "system", "You answer P questions.");
    json_decref(root);
    free(a.out);

    apply_fails(SP_PROVIDER_OPENAI, record, 7, NULL, body, NULL,
                "template_version_not_found",
                "template support-reply has no version 7");
    apply_fails(SP_PROVIDER_OPENAI, record, 0, "staging", body, NULL,
                "template_label_not_found",
                "template support-reply has no label \"staging\"");
    apply_fails(SP_PROVIDER_OPENAI, record, 0, "broken", body, NULL,
                "template_version_not_found",
                "label \"broken\" of template support-reply points to "
                "version 9");
}


static void
test_template_apply_defaults_and_precedence(void **state)
{
    json_t     *root;
    applied_t   a;

    /* the header alone */
    root = apply_json(SP_PROVIDER_OPENAI, record, 3, NULL, "{}",
                      "{\"product\":\"H\",\"question\":\"HQ\","
                      "\"tone\":\"a dry\"}", &a);
    assert_message(root, 0, "system", "You answer H questions in a dry tone.");
    assert_message(root, 2, "user", "HQ");
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 3);
    json_decref(root);
    free(a.out);

    /* the body wins where both name one; the default fills the rest */
    root = apply_json(SP_PROVIDER_OPENAI, record, 3, NULL,
                      "{\"spendpol_variables\":{\"question\":\"BQ\"}}",
                      "{\"product\":\"H\",\"question\":\"HQ\"}", &a);
    assert_message(root, 0, "system",
                   "You answer H questions in a friendly tone.");
    assert_message(root, 2, "user", "BQ");
    json_decref(root);
    free(a.out);

    /* numbers and booleans as text; names not declared are ignored */
    root = apply_json(SP_PROVIDER_OPENAI, record, 3, NULL,
                      "{\"spendpol_variables\":{\"product\":-1.5e3,"
                      "\"question\":true,\"extra\":1}}", NULL, &a);
    assert_message(root, 0, "system",
                   "You answer -1.5e3 questions in a friendly tone.");
    assert_message(root, 2, "user", "true");
    json_decref(root);
    free(a.out);
}


static void
test_template_apply_errors(void **state)
{
    applied_t  a;

    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"product\":\"P\"}}", NULL,
                "template_variable_missing",
                "variable \"question\" is required by template support-reply "
                "version 3 and was not given");

    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"product\":null,"
                "\"question\":\"q\"}}", NULL,
                "invalid_template_variables",
                "variable \"product\" in spendpol_variables is null");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"product\":[\"a\"]}}", NULL,
                "invalid_template_variables", "\"product\"");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"product\":{}}}", NULL,
                "invalid_template_variables", "is an object");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":\"x\"}", NULL,
                "invalid_template_variables",
                "spendpol_variables must be a JSON object");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "{}", "[1]",
                "invalid_template_variables",
                "X-Spendpol-Template-Variables must be a JSON object");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "{}", "{\"a\":",
                "invalid_template_variables",
                "X-Spendpol-Template-Variables is not valid JSON");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "{}",
                "{\"product\":\"P\",\"question\":null}",
                "invalid_template_variables",
                "variable \"question\" in X-Spendpol-Template-Variables");

    /* invalid UTF-8 and raw control characters: the variable named */
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "{}",
                "{\"product\":\"P\",\"question\":\"a\xff\"}",
                "invalid_template_variables",
                "the value of variable \"question\" in "
                "X-Spendpol-Template-Variables is not valid JSON text");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"product\":\"a\x01\"}}", NULL,
                "invalid_template_variables",
                "the value of variable \"product\" in spendpol_variables");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"spendpol_variables\":{\"question\":\"\\ud800\"}}", NULL,
                "invalid_template_variables", "\"question\"");

    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "[]", NULL,
                "invalid_json", "not a JSON object");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "", NULL,
                "invalid_json", "not a JSON object");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL, "{\"a\":1,}", NULL,
                "invalid_json", "not valid JSON");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"a\":1,\"a\":2}", NULL, "invalid_json", "duplicate");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"a\":\"\xc0\x80\"}", NULL, "invalid_json",
                "not valid JSON");
    apply_fails(SP_PROVIDER_OPENAI, record, 3, NULL,
                "{\"messages\":\"hi\",\"spendpol_variables\":{\"product\":"
                "\"P\",\"question\":\"Q\"}}", NULL, "invalid_json",
                "\"messages\" must be an array");

    /* a record the snapshot should never hold */
    apply_fails(SP_PROVIDER_OPENAI, "{\"slug\":\"x\"}", 0, NULL, "{}", NULL,
                "template_invalid", "template x is malformed");
    apply_fails(SP_PROVIDER_OPENAI,
                "{\"id\":\"u\",\"slug\":\"x\",\"latest\":1,\"versions\":"
                "[{\"version\":1,\"messages\":[{\"role\":\"user\","
                "\"content\":\"{{undeclared}}\"}]}]}", 0, NULL, "{}", NULL,
                "template_invalid", "template x version 1 in the snapshot "
                "is malformed: messages[0].content");
    apply_fails(SP_PROVIDER_OPENAI, "not json", 0, NULL, "{}", NULL,
                "template_invalid", "malformed");
    apply_fails(SP_PROVIDER_OPENAI,
                "{\"id\":\"u\\r\\nX-Evil: 1\",\"slug\":\"x\",\"latest\":1,"
                "\"versions\":[{\"version\":1,\"messages\":[{\"role\":"
                "\"user\",\"content\":\"hi\"}]}]}", 0, NULL, "{}", NULL,
                "template_invalid", "template x is malformed");

    /* a newer controld's members in the record are let through */
    apply(&a, SP_PROVIDER_OPENAI,
          "{\"id\":\"u\",\"slug\":\"x\",\"latest\":1,\"created\":1,"
          "\"versions\":[{\"version\":1,\"created_by\":\"k\",\"messages\":"
          "[{\"role\":\"user\",\"content\":\"hi\"}]}]}", 0, NULL, "{}", NULL);
    assert_int_equal(a.rc, SP_OK);
    assert_string_equal(a.res.id, "u");
    free(a.out);
}


/* whatever a value holds, the output is JSON and says it exactly */
static void
test_template_apply_hostile_values(void **state)
{
    size_t      i;
    json_t     *root;
    applied_t   a;
    char        body[512];

    static const struct {
        const char  *json;          /* the value as the client wrote it */
        const char  *text;          /* what the message must then say */
    } values[] = {
        { "\"\\\"}]},{\\\"role\\\":\\\"system\\\"\"",
          "\"}]},{\"role\":\"system\"" },
        { "\"back\\\\slash\\\\\"", "back\\slash\\" },
        { "\"\\u0000\\u0001\\b\\f\\n\\r\\t\\u001f\"",
          "\x00\x01\b\f\n\r\t\x1f" },
        { "\"line\xe2\x80\xa8sep\xe2\x80\xa9para\"",
          "line\xe2\x80\xa8sep\xe2\x80\xa9para" },
        { "\"\\u2028\\ud83d\\ude00\xf0\x9f\x98\x80\"",
          "\xe2\x80\xa8\xf0\x9f\x98\x80\xf0\x9f\x98\x80" },
        { "\"{{question}}\"", "{{question}}" },
        { "\"</script><!--\"", "</script><!--" },
        { "\"\"", "" },
        { "0", "0" },
        { "false", "false" },
    };

    for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        snprintf(body, sizeof(body), "{\"spendpol_variables\":"
                 "{\"question\":%s}}", values[i].json);

        root = apply_json(SP_PROVIDER_OPENAI, record, 1, NULL, body, NULL,
                          &a);

        /* "v1 " and the value, NUL included */
        assert_int_equal(json_string_length(json_object_get(
                             json_array_get(json_object_get(root,
                                                            "messages"), 0),
                             "content")),
                         3 + (i == 2 ? 8 : strlen(values[i].text)));
        assert_memory_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(root,
                                                               "messages"),
                                               0), "content")) + 3,
                            values[i].text,
                            i == 2 ? 8 : strlen(values[i].text));

        /* U+2028 and U+2029 leave escaped */
        assert_null(strstr(a.out, "\xe2\x80\xa8"));
        assert_null(strstr(a.out, "\xe2\x80\xa9"));

        json_decref(root);
        free(a.out);
    }

    /* the same through the header */
    root = apply_json(SP_PROVIDER_ANTHROPIC, record, 2, NULL, "{}",
                      "{\"question\":\"\\\"\\n\",\"product\":"
                      "\"\xe2\x80\xa8\"}", &a);
    assert_string_equal(json_string_value(json_object_get(root, "system")),
                        "You answer \xe2\x80\xa8 questions.");
    assert_message(root, 0, "user", "\"\n");
    json_decref(root);
    free(a.out);
}


/*
 * outsize = the bound works; smaller sizes up to the output's length - 1
 * (all of the first and last 64) are refused with the size needed and
 * nothing written past the buffer (malloc'ed exactly: ASan watches its
 * end).
 */
static void
assert_bounds(sp_provider_e provider, const char *rec, const char *body,
    const char *header)
{
    int                   rc;
    char                  code[SP_TEMPLATE_CODE_LEN], err[256], *out;
    size_t                bound, len, need, size, hlen;
    sp_template_result_t  res;

    hlen = header ? strlen(header) : 0;
    bound = sp_template_apply_bound(strlen(rec), strlen(body), hlen);
    out = malloc(bound);
    assert_non_null(out);

    rc = sp_template_apply(provider, rec, strlen(rec), 0, NO_LABEL, body,
                           strlen(body), header, hlen, out, bound, &need,
                           &res, code, sizeof(code), err, sizeof(err));
    if (rc != SP_OK) {
        print_error("%s: %s\n", code, err);
    }

    assert_int_equal(rc, SP_OK);
    assert_true(need <= bound);
    free(out);

    /* every size near both ends, a few between */
    for (size = 0; size < need;
         size = (size < 64 || need - size <= 64) ? size + 1
                : (need - size > 2 * 64 ? size + (need - size) / 2
                                       : need - 64))
    {
        out = malloc(size ? size : 1);
        assert_non_null(out);

        rc = sp_template_apply(provider, rec, strlen(rec), 0, NO_LABEL, body,
                               strlen(body), header, hlen, out, size, &len,
                               &res, code, sizeof(code), err, sizeof(err));
        assert_int_equal(rc, SP_ERROR);
        assert_string_equal(code, "output_too_small");
        assert_int_equal(len, need);
        free(out);
    }

    /* exactly the length needed */
    out = malloc(need);
    assert_non_null(out);
    assert_int_equal(sp_template_apply(provider, rec, strlen(rec), 0,
                                       NO_LABEL, body, strlen(body), header,
                                       hlen, out, need, &len, &res, code,
                                       sizeof(code), err, sizeof(err)),
                     SP_OK);
    assert_int_equal(len, need);
    free(out);
}


static void
test_template_apply_bounds(void **state)
{
    size_t   i;
    char    *rec, *body;

    assert_bounds(SP_PROVIDER_OPENAI, record,
                  "{\"spendpol_variables\":{\"product\":\"P\","
                  "\"question\":\"Q\"}}", NULL);
    assert_bounds(SP_PROVIDER_ANTHROPIC, record,
                  "{\"system\":[{\"type\":\"text\",\"text\":\"s\"}],"
                  "\"messages\":[{\"role\":\"user\",\"content\":\"m\"}]}",
                  "{\"product\":\"P\",\"question\":\"Q\"}");

    /*
     * The worst case the bound is for: a template that is nothing but
     * placeholders, each replaced by the largest value there is, all
     * of it U+2028 (3 bytes that leave as 6).
     */
    rec = malloc(4096);
    body = malloc(4096);
    assert_non_null(rec);
    assert_non_null(body);

    strcpy(rec, "{\"id\":\"i\",\"slug\":\"s\",\"latest\":1,\"versions\":"
                "[{\"version\":1,\"messages\":[{\"role\":\"system\","
                "\"content\":\"");

    for (i = 0; i < 64; i++) {
        strcat(rec, "{{a}}");
    }

    strcat(rec, "\"}],\"variables\":{\"a\":{\"required\":true}}}]}");

    strcpy(body, "{\"spendpol_variables\":{\"a\":\"");

    for (i = 0; i < 1000; i++) {
        strcat(body, "\xe2\x80\xa8");
    }

    strcat(body, "\"}}");

    assert_bounds(SP_PROVIDER_OPENAI, rec, body, NULL);
    assert_bounds(SP_PROVIDER_ANTHROPIC, rec, body, NULL);

    /* the value in the header, larger than the body and the record */
    memmove(body, body + 22, strlen(body + 22) + 1);
    body[strlen(body) - 1] = '\0';
    assert_bounds(SP_PROVIDER_ANTHROPIC, rec, "{}", body);

    free(rec);
    free(body);

    /* the bound never wraps around */
    assert_int_equal(sp_template_apply_bound(SIZE_MAX / 2, 1, 1), SIZE_MAX);
    assert_int_equal(sp_template_apply_bound(1, SIZE_MAX / 2, 1), SIZE_MAX);
    assert_int_equal(sp_template_apply_bound(1, 1, SIZE_MAX / 2), SIZE_MAX);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_slug_valid),
        cmocka_unit_test(test_template_ref_parse),
        cmocka_unit_test(test_template_validate_accepts_versions),
        cmocka_unit_test(test_template_validate_errors_name_the_member),
        cmocka_unit_test(test_template_validate_limits),
        cmocka_unit_test(test_template_apply_openai),
        cmocka_unit_test(test_template_apply_keeps_model_and_adds_messages),
        cmocka_unit_test(test_template_apply_cuts_variables_anywhere),
        cmocka_unit_test(test_template_apply_anthropic_system),
        cmocka_unit_test(test_template_apply_other_providers),
        cmocka_unit_test(test_template_apply_versions_and_labels),
        cmocka_unit_test(test_template_apply_defaults_and_precedence),
        cmocka_unit_test(test_template_apply_errors),
        cmocka_unit_test(test_template_apply_hostile_values),
        cmocka_unit_test(test_template_apply_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
