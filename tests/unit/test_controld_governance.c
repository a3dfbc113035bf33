/*
 * controld validation for issue 9: booleans such as attribution_override,
 * an organisation's allowed_endpoints, and the "*" fallback price name
 * (the pricing routes take it alone, the list-price file never).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "prices.h"
#include "api.h"


static json_t *
json_of(const char *text)
{
    json_t  *v;

    v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);

    return v;
}


/* ---- booleans ---------------------------------------------------------- */

static void
test_bool_absent_true_false(void **state)
{
    json_t            *body;
    cd_field_error_t   err;
    int                v;

    (void) state;

    body = json_of("{\"a\": true, \"b\": false}");

    assert_int_equal(cd_bool_parse(body, "a", &v, &err), CD_OK);
    assert_int_equal(v, 1);
    assert_int_equal(cd_bool_parse(body, "b", &v, &err), CD_OK);
    assert_int_equal(v, 0);
    assert_int_equal(cd_bool_parse(body, "attribution_override", &v, &err),
                     CD_OK);
    assert_int_equal(v, -1);

    json_decref(body);
}


static void
test_bool_wrong_type_names_the_field(void **state)
{
    static const char  *bodies[] = {
        "{\"attribution_override\": \"true\"}",
        "{\"attribution_override\": 1}",
        "{\"attribution_override\": 0}",
        "{\"attribution_override\": null}",
        "{\"attribution_override\": []}",
        "{\"attribution_override\": {}}",
        NULL
    };
    json_t            *body;
    cd_field_error_t   err;
    int                v, i;

    (void) state;

    for (i = 0; bodies[i]; i++) {
        body = json_of(bodies[i]);
        memset(&err, 0, sizeof(err));

        assert_int_equal(cd_bool_parse(body, "attribution_override", &v,
                                       &err), CD_ERROR);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.code, "invalid_type");
        assert_string_equal(err.field, "attribution_override");
        assert_non_null(strstr(err.message, "attribution_override"));
        assert_non_null(strstr(err.message, "true or false"));

        json_decref(body);
    }
}


/* ---- allowed_endpoints ------------------------------------------------- */

static int
parse_endpoints(const char *text, cd_allowed_endpoint_t *list, size_t *n,
    cd_field_error_t *err)
{
    int      rc;
    json_t  *v;

    v = json_of(text);
    memset(err, 0, sizeof(*err));
    rc = cd_allowed_endpoints_parse(v, list, n, err);
    json_decref(v);

    return rc;
}


/* refused with status, code and field; the message starts with field */
static void
expect_refused(const char *text, unsigned status, const char *code,
    const char *field)
{
    cd_allowed_endpoint_t  list[CD_ALLOWED_ENDPOINTS_MAX];
    cd_field_error_t       err;
    size_t                 n;

    if (parse_endpoints(text, list, &n, &err) != CD_ERROR) {
        fail_msg("accepted: %s", text);
    }

    if (err.status != status || strcmp(err.code, code) != 0
        || strcmp(err.field, field) != 0
        || strncmp(err.message, field, strlen(field)) != 0)
    {
        fail_msg("%s: got %u %s %s \"%s\", expected %u %s %s", text,
                 err.status, err.code, err.field, err.message, status, code,
                 field);
    }
}


static void
test_endpoints_valid_list_in_order(void **state)
{
    cd_allowed_endpoint_t  list[CD_ALLOWED_ENDPOINTS_MAX];
    cd_field_error_t       err;
    size_t                 n;
    json_t                *v;

    (void) state;

    v = json_of("[{\"provider\": \"openai\", \"method\": \"POST\","
                " \"path\": \"/batches\"},"
                " {\"provider\": \"anthropic\", \"method\": \"GET\","
                " \"path\": \"/v1/messages/batches/*\"},"
                " {\"provider\": \"openai\", \"method\": \"GET\","
                " \"path\": \"/batches\"},"
                " {\"provider\": \"google\", \"method\": \"DELETE\","
                " \"path\": \"/v1beta/files/**\"}]");

    assert_int_equal(cd_allowed_endpoints_parse(v, list, &n, &err), CD_OK);
    assert_int_equal(n, 4);
    assert_string_equal(list[0].provider, "openai");
    assert_string_equal(list[0].method, "POST");
    assert_string_equal(list[0].path, "/batches");
    assert_string_equal(list[1].provider, "anthropic");
    assert_string_equal(list[1].path, "/v1/messages/batches/*");
    assert_string_equal(list[2].method, "GET");
    assert_string_equal(list[3].method, "DELETE");
    assert_string_equal(list[3].path, "/v1beta/files/**");

    json_decref(v);

    /* [] clears the list */
    assert_int_equal(parse_endpoints("[]", list, &n, &err), CD_OK);
    assert_int_equal(n, 0);
}


static void
test_endpoints_not_an_array(void **state)
{
    (void) state;

    expect_refused("{}", 400, "invalid_type", "allowed_endpoints");
    expect_refused("null", 400, "invalid_type", "allowed_endpoints");
    expect_refused("\"/batches\"", 400, "invalid_type", "allowed_endpoints");
}


static void
test_endpoints_at_most_64(void **state)
{
    cd_allowed_endpoint_t  list[CD_ALLOWED_ENDPOINTS_MAX];
    cd_field_error_t       err;
    size_t                 n, len;
    char                  *text;
    int                    i;

    (void) state;

    text = malloc(65 * 80 + 8);
    assert_non_null(text);

    for (len = 0, i = 0; i < 65; i++) {
        len += (size_t) sprintf(text + len, "%s{\"provider\": \"openai\","
                                " \"method\": \"POST\", \"path\": \"/x%d\"}",
                                i ? ", " : "[", i);

        if (i == 63) {
            strcpy(text + len, "]");
            assert_int_equal(parse_endpoints(text, list, &n, &err), CD_OK);
            assert_int_equal(n, 64);
        }
    }

    strcpy(text + len, "]");
    expect_refused(text, 422, "too_many_endpoints", "allowed_endpoints");

    free(text);
}


static void
test_endpoints_entry_shape(void **state)
{
    (void) state;

    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": \"/a\"}, \"/b\"]", 400, "invalid_type",
                   "allowed_endpoints[1]");
    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": \"/a\", \"model\": \"x\"}]", 400,
                   "unknown_field", "allowed_endpoints[0]");
}


static void
test_endpoints_members_missing_or_wrong_type(void **state)
{
    (void) state;

    expect_refused("[{\"method\": \"POST\", \"path\": \"/a\"}]", 422,
                   "missing_field", "allowed_endpoints[0].provider");
    expect_refused("[{\"provider\": \"openai\", \"path\": \"/a\"}]", 422,
                   "missing_field", "allowed_endpoints[0].method");
    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\"}]", 422,
                   "missing_field", "allowed_endpoints[0].path");
    expect_refused("[{\"provider\": 1, \"method\": \"POST\","
                   " \"path\": \"/a\"}]", 400, "invalid_type",
                   "allowed_endpoints[0].provider");
    expect_refused("[{\"provider\": \"openai\", \"method\": [\"POST\"],"
                   " \"path\": \"/a\"}]", 400, "invalid_type",
                   "allowed_endpoints[0].method");
    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": null}]", 422, "missing_field",
                   "allowed_endpoints[0].path");
    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": \"/a\\u0000b\"}]", 422, "invalid_value",
                   "allowed_endpoints[0].path");
}


static void
test_endpoints_values_refused(void **state)
{
    static const char  *ok = "{\"provider\": \"openai\", \"method\": \"POST\","
                             " \"path\": \"/ok\"}";
    static const char  *bad_paths[] = {
        "batches", "", "/../v1/chat/completions", "/a/./b", "//evil.com/x",
        "/a b", "/a\\r\\nHost: x", "/a?b=c", "/a#b", "/a%0d%0a",
        "http://evil.com/x", "/**/x", NULL
    };
    char                 text[512];
    int                  i;

    (void) state;

    snprintf(text, sizeof(text), "[%s, {\"provider\": \"openaix\","
             " \"method\": \"POST\", \"path\": \"/a\"}]", ok);
    expect_refused(text, 422, "unknown_provider",
                   "allowed_endpoints[1].provider");

    snprintf(text, sizeof(text), "[%s, {\"provider\": \"openai\","
             " \"method\": \"post\", \"path\": \"/a\"}]", ok);
    expect_refused(text, 422, "invalid_method",
                   "allowed_endpoints[1].method");

    snprintf(text, sizeof(text), "[%s, {\"provider\": \"openai\","
             " \"method\": \"TRACE\", \"path\": \"/a\"}]", ok);
    expect_refused(text, 422, "invalid_method",
                   "allowed_endpoints[1].method");

    for (i = 0; bad_paths[i]; i++) {
        snprintf(text, sizeof(text), "[%s, %s, {\"provider\": \"openai\","
                 " \"method\": \"GET\", \"path\": \"%s\"}]", ok,
                 "{\"provider\": \"mistral\", \"method\": \"GET\","
                 " \"path\": \"/v1/models\"}", bad_paths[i]);
        expect_refused(text, 422, "invalid_path",
                       "allowed_endpoints[2].path");
    }
}


static void
test_endpoints_repeated_entry_refused(void **state)
{
    (void) state;

    expect_refused("[{\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": \"/batches\"},"
                   " {\"provider\": \"openai\", \"method\": \"GET\","
                   " \"path\": \"/batches\"},"
                   " {\"provider\": \"openai\", \"method\": \"POST\","
                   " \"path\": \"/batches\"}]", 422, "duplicate_endpoint",
                   "allowed_endpoints[2]");
}


/* ---- the fallback price name ------------------------------------------- */

static void
test_price_model_star_only_alone(void **state)
{
    (void) state;

    assert_null(cd_price_model_problem("*"));
    assert_null(cd_price_model_problem("gpt-4o"));
    assert_null(cd_price_model_problem("gpt-4o-2024-08-06"));

    assert_non_null(cd_price_model_problem(""));
    assert_non_null(cd_price_model_problem("gpt-*"));
    assert_non_null(cd_price_model_problem("**"));
    assert_non_null(cd_price_model_problem("*-2024-08-06"));
    assert_non_null(cd_price_model_problem(" *"));
    assert_non_null(cd_price_model_problem("a\nb"));
    assert_non_null(strstr(cd_price_model_problem("gpt-*"), "fallback"));
}


static void
test_price_file_refuses_star_models(void **state)
{
    static const char  *lines[] = {
        "openai\t*\t1.00\t2.00\t\t\t",
        "openai\tgpt-*\t1.00\t2.00\t\t\t",
        "anthropic\t*-20241022\t1.00\t2.00\t\t\t",
        NULL
    };
    char            line[256], err[256];
    cd_price_row_t  row;
    int             i;

    (void) state;

    for (i = 0; lines[i]; i++) {
        snprintf(line, sizeof(line), "%s", lines[i]);
        err[0] = '\0';
        assert_int_equal(cd_price_parse_line(line, &row, err, sizeof(err)),
                         -1);
        assert_non_null(strstr(err, "'*'"));
    }

    /* the same line with a real model is a price */
    snprintf(line, sizeof(line), "openai\tgpt-4o\t1.00\t2.00\t\t\t");
    assert_int_equal(cd_price_parse_line(line, &row, err, sizeof(err)), 1);
    assert_string_equal(row.model, "gpt-4o");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_bool_absent_true_false),
        cmocka_unit_test(test_bool_wrong_type_names_the_field),
        cmocka_unit_test(test_endpoints_valid_list_in_order),
        cmocka_unit_test(test_endpoints_not_an_array),
        cmocka_unit_test(test_endpoints_at_most_64),
        cmocka_unit_test(test_endpoints_entry_shape),
        cmocka_unit_test(test_endpoints_members_missing_or_wrong_type),
        cmocka_unit_test(test_endpoints_values_refused),
        cmocka_unit_test(test_endpoints_repeated_entry_refused),
        cmocka_unit_test(test_price_model_star_only_alone),
        cmocka_unit_test(test_price_file_refuses_star_models),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
