/* controld logging: what clients and servers sent cannot forge a line */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"


static const char *
escape(const char *s, size_t len)
{
    static char  out[256];

    cd_log_escape(s, len, out, sizeof(out));

    return out;
}


static void
test_log_escape_keeps_printable_text_and_utf8(void **state)
{
    const char  *s = "model gpt-4o \"caf\xc3\xa9\" \xe2\x82\xac \xf0\x9f\x98\x80";

    (void) state;

    assert_string_equal(escape(s, strlen(s)), s);
    assert_string_equal(escape("", 0), "");
}


static void
test_log_escape_escapes_newlines_and_controls(void **state)
{
    const char  *s = "evt_1\n2026-12-03T00:00:00.000Z [error] forged\r\t\x1b[2J"
                     "\x7f";

    (void) state;

    assert_string_equal(escape(s, strlen(s)),
                        "evt_1\\x0a2026-12-03T00:00:00.000Z [error] forged"
                        "\\x0d\\x09\\x1b[2J\\x7f");

    /* a NUL in the middle does not end the copy early */
    assert_string_equal(escape("a\0b", 3), "a\\x00b");
}


static void
test_log_escape_doubles_backslashes_so_escapes_are_unambiguous(void **state)
{
    (void) state;

    /* a client writing "\x0a" itself is told apart from a newline */
    assert_string_equal(escape("\\x0a", 4), "\\\\x0a");
}


static void
test_log_escape_escapes_c1_controls_and_invalid_utf8(void **state)
{
    (void) state;

    /* U+009B is CSI on 8-bit terminals */
    assert_string_equal(escape("a\xc2\x9b" "b", 4), "a\\xc2\\x9bb");
    /* a stray continuation byte, an overlong form, a cut sequence */
    assert_string_equal(escape("\x80", 1), "\\x80");
    assert_string_equal(escape("\xc0\xaf", 2), "\\xc0\\xaf");
    assert_string_equal(escape("\xe2\x82", 2), "\\xe2\\x82");
    /* a surrogate and beyond U+10FFFF */
    assert_string_equal(escape("\xed\xa0\x80", 3), "\\xed\\xa0\\x80");
    assert_string_equal(escape("\xf4\x90\x80\x80", 4),
                        "\\xf4\\x90\\x80\\x80");
}


static void
test_log_escape_truncates_before_an_escape_that_does_not_fit(void **state)
{
    char    out[6];
    size_t  n;

    (void) state;

    /* "ab" fits, "\x0a" (4) does not in the 3 bytes left before the NUL */
    n = cd_log_escape("ab\ncd", 5, out, sizeof(out));
    assert_int_equal(n, 2);
    assert_string_equal(out, "ab");

    /* never a cut UTF-8 character */
    n = cd_log_escape("abcd\xc3\xa9", 6, out, sizeof(out));
    assert_int_equal(n, 4);
    assert_string_equal(out, "abcd");

    n = cd_log_escape("abc", 3, out, 1);
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
}


static void
test_log_escape_worst_case_fits_four_times_the_input(void **state)
{
    char    in[64], out[4 * sizeof(in) + 1];
    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(in); i++) {
        in[i] = (char) (i % 2 ? 0x9b : 0x01);
    }

    assert_int_equal(cd_log_escape(in, sizeof(in), out, sizeof(out)),
                     4 * sizeof(in));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_log_escape_keeps_printable_text_and_utf8),
        cmocka_unit_test(test_log_escape_escapes_newlines_and_controls),
        cmocka_unit_test(
            test_log_escape_doubles_backslashes_so_escapes_are_unambiguous),
        cmocka_unit_test(test_log_escape_escapes_c1_controls_and_invalid_utf8),
        cmocka_unit_test(
            test_log_escape_truncates_before_an_escape_that_does_not_fit),
        cmocka_unit_test(test_log_escape_worst_case_fits_four_times_the_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
