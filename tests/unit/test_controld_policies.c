/* controld policies: the bodies of POST/PATCH /policies and evaluate's */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"


static json_t *
load(const char *text)
{
    json_t        *json;
    json_error_t   jerr;

    json = json_loads(text, 0, &jerr);
    assert_non_null(json);

    return json;
}


static cd_field_error_t
refused(const char *text, const char *prefix, unsigned status,
    const char *code, const char *field)
{
    json_t            *body, *policy;
    cd_field_error_t   err;

    body = load(text);
    policy = (json_t *) 1;
    assert_int_equal(cd_policy_body_parse(body, prefix, &policy, &err),
                     CD_ERROR);
    assert_null(policy);
    assert_int_equal(err.status, status);
    assert_string_equal(err.code, code);
    assert_non_null(err.field);
    assert_string_equal(err.field, field);
    /* the message starts with the field it names */
    assert_memory_equal(err.message, field, strlen(field));
    json_decref(body);

    return err;
}


static void
test_policy_takes_its_defaults_and_keeps_columns_out(void **state)
{
    json_t            *body, *policy;
    cd_field_error_t   err;

    (void) state;

    body = load("{\"id\": \"pol_0123456789abcdef01234567\","
                " \"created_at\": \"2026-01-01T00:00:00Z\","
                " \"name\": \"no cards\", \"kind\": \"pii\","
                " \"action\": \"redact\", \"entities\": [\"card\"]}");

    assert_int_equal(cd_policy_body_parse(body, "", &policy, &err), CD_OK);
    assert_null(json_object_get(policy, "id"));
    assert_null(json_object_get(policy, "created_at"));
    assert_true(json_is_true(json_object_get(policy, "enabled")));
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(policy, "scope"), "type")), "organization");
    assert_string_equal(json_string_value(json_object_get(policy, "action")),
                        "redact");

    /* the caller's body is left as it was */
    assert_non_null(json_object_get(body, "id"));
    assert_null(json_object_get(body, "enabled"));

    json_decref(policy);
    json_decref(body);

    /* given ones are kept */
    body = load("{\"name\": \"off\", \"kind\": \"attribution\","
                " \"action\": \"log\", \"require\": \"project\","
                " \"enabled\": false,"
                " \"scope\": {\"type\": \"department\", \"value\": \"eng\"}}");
    assert_int_equal(cd_policy_body_parse(body, "", &policy, &err), CD_OK);
    assert_true(json_is_false(json_object_get(policy, "enabled")));
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(policy, "scope"), "value")), "eng");
    json_decref(policy);
    json_decref(body);
}


static void
test_policy_bad_regex_is_invalid_pattern_with_pcre2_offset(void **state)
{
    cd_field_error_t  err;

    (void) state;

    err = refused("{\"name\": \"p\", \"kind\": \"pattern\","
                  " \"action\": \"block\", \"patterns\": [\"ok\", \"a(b\"]}",
                  "", 422, "invalid_pattern", "patterns[1]");
    assert_non_null(strstr(err.message, "offset"));

    /* under evaluate's "policies", the path says which one */
    (void) refused("{\"name\": \"p\", \"kind\": \"pattern\","
                   " \"action\": \"block\", \"patterns\": [\"[z-a]\"]}",
                   "policies[3].", 422, "invalid_pattern",
                   "policies[3].patterns[0]");
}


static void
test_policy_refusals_name_the_field(void **state)
{
    (void) state;

    (void) refused("{\"kind\": \"pii\", \"action\": \"block\"}", "", 422,
                   "missing_field", "name");
    (void) refused("{\"name\": \"\", \"kind\": \"pii\", \"action\": "
                   "\"block\"}", "", 422, "validation_error", "name");
    (void) refused("{\"name\": \"x\", \"kind\": \"budget\", \"action\": "
                   "\"block\"}", "", 422, "validation_error", "kind");
    (void) refused("{\"name\": \"x\", \"kind\": \"model\", \"action\": "
                   "\"redact\", \"deny_models\": [\"a\"]}", "", 422,
                   "validation_error", "action");
    (void) refused("{\"name\": \"x\", \"kind\": \"pii\", \"action\": "
                   "\"block\", \"threshold\": 1.5}", "", 422,
                   "validation_error", "threshold");
    (void) refused("{\"name\": \"x\", \"kind\": \"pii\", \"action\": "
                   "\"block\", \"patterns\": [\"a\"]}", "", 422,
                   "validation_error", "patterns");
    (void) refused("{\"kind\": \"pii\", \"action\": \"block\"}",
                   "policies[0].", 422, "missing_field",
                   "policies[0].name");
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_takes_its_defaults_and_keeps_columns_out),
        cmocka_unit_test(
            test_policy_bad_regex_is_invalid_pattern_with_pcre2_offset),
        cmocka_unit_test(test_policy_refusals_name_the_field),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
