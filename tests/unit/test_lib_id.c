/*
 * libspendpol id formats: every kind's prefix and length, lowercase hex
 * only, bounded reads, and the text errors show.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_id.h"


static int
valid(unsigned kind, const char *id)
{
    return sp_id_valid(kind, id, strlen(id));
}


static void
test_id_random_kinds_are_prefix_and_24_lowercase_hex(void **state)
{
    assert_true(valid(SP_ID_KEY, "key_0123456789abcdef01234567"));
    assert_true(valid(SP_ID_BUDGET, "bud_0123456789abcdef01234567"));
    assert_true(valid(SP_ID_AGENT, "agt_0123456789abcdef01234567"));
    assert_true(valid(SP_ID_ALERT, "alr_0123456789abcdef01234567"));
    assert_true(valid(SP_ID_ALERT_RULE, "arl_0123456789abcdef01234567"));

    /* another kind's prefix, wrong length, upper case, other bytes */
    assert_false(valid(SP_ID_BUDGET, "agt_0123456789abcdef01234567"));
    assert_false(valid(SP_ID_KEY, "kex_0123456789abcdef01234567"));
    assert_false(valid(SP_ID_KEY, "key_0123456789abcdef0123456"));
    assert_false(valid(SP_ID_KEY, "key_0123456789abcdef012345678"));
    assert_false(valid(SP_ID_KEY, "key_0123456789ABCDEF01234567"));
    assert_false(valid(SP_ID_KEY, "key_0123456789abcdef0123456'"));
    assert_false(valid(SP_ID_ALERT, "alr_0123456789abcdeg01234567"));
    assert_false(valid(SP_ID_AGENT, "agt_"));
    assert_false(valid(SP_ID_AGENT, "bot-1"));
    assert_false(valid(SP_ID_AGENT, ""));
    assert_false(valid(SP_ID_KIND_COUNT, "agt_0123456789abcdef01234567"));
}


static void
test_id_event_is_evt_and_28_hex(void **state)
{
    /* the module's: 12 hex of ms, 8 of the worker, 8 of its sequence */
    assert_true(valid(SP_ID_EVENT, "evt_0192a3b4c5d6000000010000002a"));
    assert_false(valid(SP_ID_EVENT, "evt_0123456789abcdef01234567"));
    assert_false(valid(SP_ID_KEY, "evt_0192a3b4c5d6000000010000002a"));
}


static void
test_id_reads_only_len(void **state)
{
    char  *id;

    /* exactly the id's bytes on the heap: ASan catches a read past them */
    id = malloc(28);
    assert_non_null(id);
    memcpy(id, "bud_0123456789abcdef01234567", 28);

    assert_true(sp_id_valid(SP_ID_BUDGET, id, 28));
    assert_false(sp_id_valid(SP_ID_BUDGET, id, 27));
    assert_false(sp_id_valid(SP_ID_BUDGET, id, 3));
    assert_int_equal(sp_id_kind(id, 28), SP_ID_BUDGET);

    free(id);
}


static void
test_id_kind_names_the_kind(void **state)
{
    assert_int_equal(sp_id_kind("key_0123456789abcdef01234567", 28),
                     SP_ID_KEY);
    assert_int_equal(sp_id_kind("arl_0123456789abcdef01234567", 28),
                     SP_ID_ALERT_RULE);
    assert_int_equal(sp_id_kind("evt_0192a3b4c5d6000000010000002a", 32),
                     SP_ID_EVENT);
    assert_int_equal(sp_id_kind("xyz_0123456789abcdef01234567", 28), -1);
    assert_int_equal(sp_id_kind("", 0), -1);
}


static void
test_id_expected_says_what_ids_look_like(void **state)
{
    char    text[96];
    size_t  n;

    n = sp_id_expected(SP_ID_BUDGET, text, sizeof(text));
    assert_string_equal(text,
                        "a budget id: \"bud_\" followed by 24 lowercase hex "
                        "digits");
    assert_int_equal(n, strlen(text));

    sp_id_expected(SP_ID_AGENT, text, sizeof(text));
    assert_string_equal(text,
                        "an agent id: \"agt_\" followed by 24 lowercase hex "
                        "digits");

    sp_id_expected(SP_ID_KEY, text, sizeof(text));
    assert_string_equal(text,
                        "an API key id: \"key_\" followed by 24 lowercase hex "
                        "digits");

    /* truncated, still terminated */
    n = sp_id_expected(SP_ID_EVENT, text, 8);
    assert_int_equal(n, 7);
    assert_string_equal(text, "an audi");

    assert_int_equal(sp_id_expected(SP_ID_KIND_COUNT, text, sizeof(text)), 0);
    assert_null(sp_id_format(SP_ID_KIND_COUNT));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_id_random_kinds_are_prefix_and_24_lowercase_hex),
        cmocka_unit_test(test_id_event_is_evt_and_28_hex),
        cmocka_unit_test(test_id_reads_only_len),
        cmocka_unit_test(test_id_kind_names_the_kind),
        cmocka_unit_test(test_id_expected_says_what_ids_look_like),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
