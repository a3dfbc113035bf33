/* libspendpol attribution: which budgets a journalled call counts against */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "sp_attrib.h"
#include "sp_budget.h"


static sp_str_t
str(const char *s)
{
    sp_str_t  v;

    v.data = s;
    v.len = strlen(s);

    return v;
}


static sp_attrib_budget_t
budget(sp_attrib_scope_e scope, const char *value, const char *provider,
    const char *model)
{
    sp_attrib_budget_t  b;

    memset(&b, 0, sizeof(b));
    b.scope = scope;
    b.scope_value = str(value);
    b.provider = str(provider);
    b.model = str(model);

    return b;
}


static sp_attrib_call_t
call(void)
{
    sp_attrib_call_t  c;

    memset(&c, 0, sizeof(c));
    c.api_key_id = str("key_1");
    c.agent_id = str("");
    c.department = str("sales");
    c.project = str("");
    c.key_department = str("eng");
    c.key_project = str("atlas");
    c.provider = str("openai");
    c.requested_model = str("gpt-4o");
    c.model = str("gpt-4o-2024-08-06");
    c.ts_us = 1000000;
    c.cost_nano = 500;
    c.status = 200;

    return c;
}


static void
test_scopes_match_the_call_or_its_key(void **state)
{
    sp_attrib_call_t    c = call();
    sp_attrib_budget_t  b;

    b = budget(SP_SCOPE_ORGANIZATION, "", "", "");
    assert_true(sp_attrib_counts(&b, &c));

    b = budget(SP_SCOPE_API_KEY, "key_1", "", "");
    assert_true(sp_attrib_counts(&b, &c));
    b = budget(SP_SCOPE_API_KEY, "key_2", "", "");
    assert_false(sp_attrib_counts(&b, &c));

    /* the call said sales; its key is eng's: both budgets count it */
    b = budget(SP_SCOPE_DEPARTMENT, "sales", "", "");
    assert_true(sp_attrib_counts(&b, &c));
    b = budget(SP_SCOPE_DEPARTMENT, "eng", "", "");
    assert_true(sp_attrib_counts(&b, &c));
    b = budget(SP_SCOPE_DEPARTMENT, "ops", "", "");
    assert_false(sp_attrib_counts(&b, &c));

    b = budget(SP_SCOPE_PROJECT, "atlas", "", "");
    assert_true(sp_attrib_counts(&b, &c));

    /* an absent agent matches no agent budget, not even an empty value */
    b = budget(SP_SCOPE_AGENT, "", "", "");
    assert_false(sp_attrib_counts(&b, &c));
    c.agent_id = str("agt_1");
    b = budget(SP_SCOPE_AGENT, "agt_1", "", "");
    assert_true(sp_attrib_counts(&b, &c));
}


static void
test_provider_and_model_narrowing(void **state)
{
    sp_attrib_call_t    c = call();
    sp_attrib_budget_t  b;

    b = budget(SP_SCOPE_ORGANIZATION, "", "anthropic", "");
    assert_false(sp_attrib_counts(&b, &c));
    b = budget(SP_SCOPE_ORGANIZATION, "", "openai", "gpt-4o");
    assert_true(sp_attrib_counts(&b, &c));

    /* the answered model alone is enough */
    c.requested_model = str("my-alias");
    assert_true(sp_attrib_counts(&b, &c));

    b = budget(SP_SCOPE_ORGANIZATION, "", "", "gpt-4o-mini");
    assert_false(sp_attrib_counts(&b, &c));

    c.requested_model = str("");
    c.model = str("");
    b = budget(SP_SCOPE_ORGANIZATION, "", "", "gpt-4o");
    assert_false(sp_attrib_counts(&b, &c));
}


static void
test_failed_free_calls_and_total_budgets(void **state)
{
    sp_attrib_call_t    c = call();
    sp_attrib_budget_t  b;

    b = budget(SP_SCOPE_ORGANIZATION, "", "", "");

    c.status = 429;
    c.cost_nano = 0;
    assert_false(sp_attrib_counts(&b, &c));

    /* a failure that still cost something (a stream cut short) counts */
    c.cost_nano = 1;
    assert_true(sp_attrib_counts(&b, &c));

    /* a free success counts too (a request, in budget_spend.requests) */
    c.status = 200;
    c.cost_nano = 0;
    assert_true(sp_attrib_counts(&b, &c));

    /* "total" counts only from the budget's creation */
    b.total = 1;
    b.created_us = c.ts_us + 1;
    assert_false(sp_attrib_counts(&b, &c));
    b.created_us = c.ts_us;
    assert_true(sp_attrib_counts(&b, &c));
}


static void
test_period_find_is_half_open(void **state)
{
    sp_attrib_period_t  p[2] = { { 100, 200 }, { 200, 300 } };
    sp_attrib_period_t  open[1] = { { 50, 0 } };

    assert_int_equal(sp_attrib_period_find(p, 2, 99), -1);
    assert_int_equal(sp_attrib_period_find(p, 2, 100), 0);
    assert_int_equal(sp_attrib_period_find(p, 2, 199), 0);
    assert_int_equal(sp_attrib_period_find(p, 2, 200), 1);
    assert_int_equal(sp_attrib_period_find(p, 2, 300), -1);
    assert_int_equal(sp_attrib_period_find(open, 1, 49), -1);
    assert_int_equal(sp_attrib_period_find(open, 1, INT64_MAX), 0);
}


static void
test_scope_names(void **state)
{
    sp_attrib_scope_e  scope;

    assert_int_equal(sp_attrib_scope(str("department"), &scope), SP_OK);
    assert_int_equal(scope, SP_SCOPE_DEPARTMENT);
    assert_int_equal(sp_attrib_scope(str("organization"), &scope), SP_OK);
    assert_int_equal(scope, SP_SCOPE_ORGANIZATION);
    assert_int_equal(sp_attrib_scope(str("departmen"), &scope), SP_ERROR);
    assert_int_equal(sp_attrib_scope(str(""), &scope), SP_ERROR);
}


static void
test_model_covers_dated_names_only(void **state)
{
    assert_true(sp_budget_model_covers(str("gpt-4o"), str("gpt-4o")));
    assert_true(sp_budget_model_covers(str("gpt-4o"),
                                       str("gpt-4o-2024-08-06")));
    assert_true(sp_budget_model_covers(str("gpt-4o"), str("gpt-4o-20240806")));
    assert_false(sp_budget_model_covers(str("gpt-4o"), str("gpt-4o-mini")));
    assert_false(sp_budget_model_covers(str("gpt-4o"),
                                        str("gpt-4o-2024-08-0x")));
    assert_false(sp_budget_model_covers(str("gpt-4o"), str("gpt-4")));
    assert_true(sp_budget_model_covers(str(""), str("anything")));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_scopes_match_the_call_or_its_key),
        cmocka_unit_test(test_provider_and_model_narrowing),
        cmocka_unit_test(test_failed_free_calls_and_total_budgets),
        cmocka_unit_test(test_period_find_is_half_open),
        cmocka_unit_test(test_scope_names),
        cmocka_unit_test(test_model_covers_dated_names_only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
