/* controld alerts: ids, journal warnings, dedupe keys */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "sp_journal.h"


static void
test_warnings_match_whole_words_only(void **state)
{
    assert_true(cd_warnings_has("unpriced_model", "unpriced_model"));
    assert_true(cd_warnings_has("usage_estimated,unpriced_model",
                                "unpriced_model"));
    assert_true(cd_warnings_has("unpriced_model,usage_estimated",
                                "unpriced_model"));
    assert_false(cd_warnings_has("", "unpriced_model"));
    assert_false(cd_warnings_has("unpriced_model_x", "unpriced_model"));
    assert_false(cd_warnings_has("x_unpriced_model", "unpriced_model"));
    assert_false(cd_warnings_has("unpriced", "unpriced_model"));
    assert_false(cd_warnings_has(",,", "unpriced_model"));
    assert_false(cd_warnings_has("usage_estimated", ""));
}


static void
test_unpriced_alert_key_names_provider_and_model(void **state)
{
    char  key[CD_ALERT_KEY_MAX], other[CD_ALERT_KEY_MAX];
    char  model[SP_FIELD_LEN];

    assert_int_equal(cd_alert_unpriced_key("openai", "gpt-9", key,
                                           sizeof(key)), CD_OK);
    assert_string_equal(key, "unpriced_model:openai:gpt-9");

    /* the same model at another provider is another alert */
    assert_int_equal(cd_alert_unpriced_key("azure", "gpt-9", other,
                                           sizeof(other)), CD_OK);
    assert_string_not_equal(key, other);

    /* a ':' in the model cannot collide: provider names have none */
    assert_int_equal(cd_alert_unpriced_key("google", "a:b", key,
                                           sizeof(key)), CD_OK);
    assert_string_equal(key, "unpriced_model:google:a:b");

    /* the longest journal fields fit */
    memset(model, 'm', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';
    assert_int_equal(cd_alert_unpriced_key("anthropic", model, key,
                                           sizeof(key)), CD_OK);

    assert_int_equal(cd_alert_unpriced_key("openai", "gpt-9", key, 10),
                     CD_ERROR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_warnings_match_whole_words_only),
        cmocka_unit_test(test_unpriced_alert_key_names_provider_and_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
