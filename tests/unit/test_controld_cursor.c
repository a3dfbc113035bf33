/* controld opaque pagination cursors */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"


static void
test_cursor_round_trip(void **state)
{
    char     cursor[CD_CURSOR_MAX + 1], id[CD_ID_MAX];
    int64_t  us;
    size_t   i;
    struct {
        int64_t      us;
        const char  *id;
    } cases[] = {
        { 1795764000123456LL, "evt_01HZX3" },
        { 0, "key_000000000000000000000000" },
        { -5, "a" },
        { 9223372036854775807LL, "ab" },
        { 1, "abc" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(cd_cursor_encode(cases[i].us, cases[i].id, cursor,
                                          sizeof(cursor)), CD_OK);
        assert_null(strchr(cursor, '='));
        assert_null(strchr(cursor, '+'));
        assert_null(strchr(cursor, '/'));
        assert_int_equal(cd_cursor_decode(cursor, &us, id, sizeof(id)),
                         CD_OK);
        assert_true(us == cases[i].us);
        assert_string_equal(id, cases[i].id);
    }
}


static void
test_cursor_garbage_is_refused(void **state)
{
    char         id[CD_ID_MAX];
    int64_t      us;
    size_t       i;
    const char  *bad[] = {
        "", "!", "zzz", "a", "MTIz",               /* "123": no colon */
        "OjEyMw",                                  /* ":123" */
        "eDprZXk",                                 /* "x:key" */
        "MTI6",                                    /* "12:" no id */
        "MTI6a2V5IGlk",                            /* "12:key id" */
        "MTI6a2V5J29yJzE9MQ",                      /* "12:key'or'1=1" */
        "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OmE",          /* overflow */
        "MTI6YQ==",                                /* padding */
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cd_cursor_decode(bad[i], &us, id, sizeof(id)),
                         CD_ERROR);
    }
}


static void
test_cursor_long_input_is_refused(void **state)
{
    char     longer[CD_CURSOR_MAX * 2], id[CD_ID_MAX];
    int64_t  us;

    memset(longer, 'A', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(cd_cursor_decode(longer, &us, id, sizeof(id)), CD_ERROR);
}


static void
test_cursor_id_must_fit(void **state)
{
    char     cursor[CD_CURSOR_MAX + 1], id[4];
    int64_t  us;

    assert_int_equal(cd_cursor_encode(1, "abcdef", cursor, sizeof(cursor)),
                     CD_OK);
    assert_int_equal(cd_cursor_decode(cursor, &us, id, sizeof(id)),
                     CD_ERROR);
    assert_int_equal(cd_cursor_encode(1, "abcdef", cursor, 4), CD_ERROR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_garbage_is_refused),
        cmocka_unit_test(test_cursor_long_input_is_refused),
        cmocka_unit_test(test_cursor_id_must_fit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
