/*
 * controld forecasts: the group_by names and the POST /forecast/what-if
 * body (each refusal names its field, prices are read exactly).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"
#include "forecast.h"


static int
parse(const char *text, cd_whatif_t *w, cd_field_error_t *err)
{
    int           rc;
    json_t       *body;
    json_error_t  jerr;

    body = json_loads(text, 0, &jerr);
    assert_non_null(body);

    memset(err, 0, sizeof(cd_field_error_t));
    rc = cd_whatif_parse(body, w, err);

    /* the strings point into the body: the tests read only numbers */
    json_decref(body);

    return rc;
}


static void
refused(const char *text, unsigned status, const char *code,
    const char *field)
{
    cd_whatif_t       w;
    cd_field_error_t  err;

    assert_int_equal(parse(text, &w, &err), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_string_equal(err.code, code);
    assert_string_equal(err.field, field);
}


#define WINDOW  "\"from\":\"2026-11-01T00:00:00Z\"," \
                "\"to\":\"2026-11-02T00:00:00Z\""


static void
test_forecast_group_columns(void **state)
{
    (void) state;

    assert_string_equal(cd_forecast_group_column("provider"), "provider");
    assert_string_equal(cd_forecast_group_column("api_key"), "api_key_id");
    assert_string_equal(cd_forecast_group_column("agent"), "agent_id");
    assert_string_equal(cd_forecast_group_column("department"),
                        "department");
    assert_null(cd_forecast_group_column("org_id"));
    assert_null(cd_forecast_group_column("provider; DROP TABLE x"));
}


static void
test_whatif_parses_both_kinds_of_change(void **state)
{
    cd_whatif_t       w;
    cd_field_error_t  err;

    (void) state;

    assert_int_equal(parse("{" WINDOW ",\"changes\":["
                           "{\"provider\":\"openai\",\"from_model\":"
                           "\"gpt-4o\",\"to_model\":\"gpt-4o-mini\"},"
                           "{\"provider\":\"anthropic\",\"model\":\"m\","
                           "\"prices\":{\"input_usd_per_mtok\":\"2.50\","
                           "\"output_usd_per_mtok\":10,"
                           "\"cached_input_usd_per_mtok\":0.25}}]}",
                           &w, &err), CD_OK);

    assert_int_equal(w.nchanges, 2);
    assert_int_equal(w.to_us - w.from_us, 86400LL * 1000000);
    assert_int_equal(w.changes[0].priced, 0);
    assert_int_equal(w.changes[1].priced, 1);
    assert_int_equal(w.changes[1].price.input, 2500000000LL);
    assert_int_equal(w.changes[1].price.output, 10000000000LL);
    assert_int_equal(w.changes[1].price.cached_input, 250000000LL);
    /* unset: billed as input, as the snapshot does */
    assert_int_equal(w.changes[1].price.cache_write, 2500000000LL);
}


static void
test_whatif_refusals_name_the_field(void **state)
{
    (void) state;

    refused("{\"to\":\"2026-11-02T00:00:00Z\",\"changes\":[]}", 422,
            "missing_field", "from");
    refused("{\"from\":1,\"to\":\"2026-11-02T00:00:00Z\"}", 400,
            "invalid_type", "from");
    refused("{\"from\":\"2026-11-02T00:00:00Z\","
            "\"to\":\"2026-11-01T00:00:00Z\",\"changes\":[]}", 422,
            "invalid_range", "from");
    refused("{\"from\":\"2025-01-01T00:00:00Z\","
            "\"to\":\"2026-11-01T00:00:00Z\",\"changes\":[]}", 422,
            "invalid_value", "to");
    refused("{" WINDOW "}", 422, "missing_field", "changes");
    refused("{" WINDOW ",\"changes\":[]}", 422, "invalid_value", "changes");
    refused("{" WINDOW ",\"changes\":{}}", 400, "invalid_type", "changes");
    refused("{" WINDOW ",\"group_by\":\"colour\",\"changes\":[{}]}", 422,
            "invalid_value", "group_by");
    refused("{" WINDOW ",\"changes\":[1]}", 400, "invalid_type",
            "changes[0]");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"from_model\":\"a\",\"to_model\":\"b\",\"x\":1}]}", 400,
            "unknown_field", "changes[0].x");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"from_model\":\"a\",\"to_model\":\"b\"},"
            "{\"provider\":\"nope\",\"from_model\":\"a\","
            "\"to_model\":\"b\"}]}", 422, "invalid_value",
            "changes[1].provider");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"from_model\":\"a\"}]}", 422, "missing_field",
            "changes[0].to_model");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\"}]}", 422, "invalid_value", "changes[0].model");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\",\"to_model\":\"b\",\"prices\":{}}]}", 422,
            "invalid_value", "changes[0].prices");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\",\"prices\":[]}]}", 400, "invalid_type",
            "changes[0].prices");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\",\"prices\":{\"input_usd_per_mtok\":\"1\"}}]}",
            422, "missing_field", "changes[0].prices.output_usd_per_mtok");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\",\"prices\":{\"input_usd_per_mtok\":\"1\","
            "\"output_usd_per_mtok\":\"0.0000000001\"}}]}", 422,
            "invalid_value", "changes[0].prices.output_usd_per_mtok");
    refused("{" WINDOW ",\"changes\":[{\"provider\":\"openai\","
            "\"model\":\"a\",\"prices\":{\"input_usd_per_mtok\":\"1\","
            "\"output_usd_per_mtok\":\"1\",\"y\":1}}]}", 400,
            "unknown_field", "changes[0].prices.y");
}


static void
test_whatif_at_most_twenty_changes(void **state)
{
    int   i;
    char  body[4096], *p;

    (void) state;

    p = body;
    p += sprintf(p, "{" WINDOW ",\"changes\":[");

    for (i = 0; i < CD_WHATIF_CHANGES_MAX + 1; i++) {
        p += sprintf(p, "%s{\"provider\":\"openai\",\"from_model\":\"a\","
                     "\"to_model\":\"b\"}", i ? "," : "");
    }

    sprintf(p, "]}");

    refused(body, 422, "invalid_value", "changes");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_forecast_group_columns),
        cmocka_unit_test(test_whatif_parses_both_kinds_of_change),
        cmocka_unit_test(test_whatif_refusals_name_the_field),
        cmocka_unit_test(test_whatif_at_most_twenty_changes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
