/* controld routing and prompts: rule bodies, budget shares, headers */

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


static void
assert_rule_refused(const char *text, unsigned status, const char *field)
{
    json_t            *body;
    cd_rule_input_t    in;
    cd_field_error_t   err;

    body = load(text);
    assert_int_equal(cd_rule_body_parse(body, &in, &err), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_non_null(err.field);
    assert_string_equal(err.field, field);
    /* the message starts with the field it names */
    assert_memory_equal(err.message, field, strlen(field));
    json_decref(body);
}


static void
test_rule_takes_its_defaults_and_keeps_columns_out_of_rule(void **state)
{
    json_t            *body;
    cd_rule_input_t    in;
    cd_field_error_t   err;

    (void) state;

    body = load("{\"id\": \"rr_0123456789abcdef01234567\","
                " \"name\": \"mini\", \"conditions\": {\"model\": \"gpt-4o\"},"
                " \"action\": {\"type\": \"rewrite\","
                " \"model\": \"gpt-4o-mini\"}}");

    assert_int_equal(cd_rule_body_parse(body, &in, &err), CD_OK);
    assert_string_equal(in.name, "mini");
    assert_int_equal(in.priority, CD_RULE_PRIORITY_DEFAULT);
    assert_int_equal(in.enabled, 1);
    assert_null(json_object_get(in.rule, "id"));
    assert_null(json_object_get(in.rule, "name"));
    assert_null(json_object_get(in.rule, "priority"));
    assert_null(json_object_get(in.rule, "enabled"));
    assert_non_null(json_object_get(in.rule, "action"));
    assert_non_null(json_object_get(in.rule, "conditions"));

    json_decref(in.rule);
    json_decref(body);
}


static void
test_rule_priority_and_enabled_are_read(void **state)
{
    json_t            *body;
    cd_rule_input_t    in;
    cd_field_error_t   err;

    (void) state;

    body = load("{\"name\": \"x\", \"priority\": -5, \"enabled\": false,"
                " \"action\": {\"type\": \"rewrite\", \"model\": \"m\"}}");

    assert_int_equal(cd_rule_body_parse(body, &in, &err), CD_OK);
    assert_int_equal(in.priority, -5);
    assert_int_equal(in.enabled, 0);

    json_decref(in.rule);
    json_decref(body);
}


static void
test_rule_refusals_name_their_field(void **state)
{
    (void) state;

    assert_rule_refused("{\"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 422, "name");
    assert_rule_refused("{\"name\": 3, \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 400, "name");
    assert_rule_refused("{\"name\": \"\", \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 422, "name");
    assert_rule_refused("{\"name\": \"x\", \"priority\": \"1\","
                        " \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 400, "priority");
    assert_rule_refused("{\"name\": \"x\", \"priority\": 1000001,"
                        " \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 422, "priority");
    assert_rule_refused("{\"name\": \"x\", \"enabled\": 1,"
                        " \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 400, "enabled");

    /* the rule validator's own refusals, with the member's path */
    assert_rule_refused("{\"name\": \"x\", \"conditions\": {\"model\":"
                        " \"gpt-[4o\"}, \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 422, "conditions.model");
    assert_rule_refused("{\"name\": \"x\", \"colour\": \"blue\","
                        " \"action\": {\"type\": \"rewrite\","
                        " \"model\": \"m\"}}", 422, "colour");
}


static void
test_used_ppm_is_exact_integer_math(void **state)
{
    (void) state;

    assert_int_equal(cd_route_used_ppm(0, 10), 0);
    assert_int_equal(cd_route_used_ppm(-3, 10), 0);
    assert_int_equal(cd_route_used_ppm(8500000000LL, 10000000000LL), 850000);
    assert_int_equal(cd_route_used_ppm(8000000000LL, 10000000000LL), 800000);
    /* rounds down: 79.99999 % is not 80 % */
    assert_int_equal(cd_route_used_ppm(7999999999LL, 10000000000LL), 799999);
    assert_int_equal(cd_route_used_ppm(1, 3), 333333);
    /* past a limit, and without overflow where spent * 10^6 > INT64_MAX */
    assert_int_equal(cd_route_used_ppm(20, 10), 2000000);
    assert_int_equal(cd_route_used_ppm(INT64_MAX, INT64_MAX), 1000000);
    assert_int_equal(cd_route_used_ppm(INT64_MAX / 2, INT64_MAX), 499999);
    assert_int_equal(cd_route_used_ppm(INT64_MAX, 1), INT64_MAX);
    assert_int_equal(cd_route_used_ppm(5, 0), -1);
}


static void
test_headers_skip_and_trace_id_case_insensitive(void **state)
{
    json_t              *h;
    cd_field_error_t     err;
    cd_route_headers_t   out;

    (void) state;

    assert_int_equal(cd_route_headers_parse(NULL, &out, &err), CD_OK);
    assert_int_equal(out.skip, 0);
    assert_null(out.trace_id);

    h = load("{\"x-spendpol-route\": \"SKIP\", \"X-SPENDPOL-TRACE-ID\":"
             " \"t-1\", \"X-Other\": \"kept out\"}");
    assert_int_equal(cd_route_headers_parse(h, &out, &err), CD_OK);
    assert_int_equal(out.skip, 1);
    assert_string_equal(out.trace_id, "t-1");
    json_decref(h);

    h = load("{\"X-Spendpol-Route\": \"never\"}");
    assert_int_equal(cd_route_headers_parse(h, &out, &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.field, "headers.X-Spendpol-Route");
    json_decref(h);

    h = load("{\"X-Other\": 1}");
    assert_int_equal(cd_route_headers_parse(h, &out, &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "headers.X-Other");
    json_decref(h);

    h = load("[]");
    assert_int_equal(cd_route_headers_parse(h, &out, &err), CD_ERROR);
    assert_string_equal(err.field, "headers");
    json_decref(h);
}


static void
test_version_refusals_are_prefixed(void **state)
{
    json_t            *v;
    cd_field_error_t   err;

    (void) state;

    v = load("{\"messages\": [{\"role\": \"user\", \"content\":"
             " \"{{question}}\"}], \"variables\": {\"question\":"
             " {\"required\": true}}}");
    assert_int_equal(cd_prompt_version_parse(v, "version.", &err), CD_OK);
    json_decref(v);

    v = load("{\"variables\": {}}");
    assert_int_equal(cd_prompt_version_parse(v, "version.", &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_memory_equal(err.field, "version.messages", 16);
    assert_int_equal(cd_prompt_version_parse(v, "", &err), CD_ERROR);
    assert_memory_equal(err.field, "messages", 8);
    json_decref(v);

    assert_int_equal(cd_prompt_version_parse(NULL, "version.", &err),
                     CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.field, "version");

    v = load("[1]");
    assert_int_equal(cd_prompt_version_parse(v, "version.", &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "version");
    json_decref(v);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_rule_takes_its_defaults_and_keeps_columns_out_of_rule),
        cmocka_unit_test(test_rule_priority_and_enabled_are_read),
        cmocka_unit_test(test_rule_refusals_name_their_field),
        cmocka_unit_test(test_used_ppm_is_exact_integer_math),
        cmocka_unit_test(test_headers_skip_and_trace_id_case_insensitive),
        cmocka_unit_test(test_version_refusals_are_prefixed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
