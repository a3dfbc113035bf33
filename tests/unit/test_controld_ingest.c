/* controld journal tailing: splitting reads into complete lines */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"


typedef struct {
    size_t   count;
    size_t   stop_after;       /* 0: never stop */
    char     lines[8][64];
    int64_t  offsets[8];
    int      overlong[8];
} seen_t;


static int
collect(void *data, const char *line, size_t len, int64_t offset,
    int overlong)
{
    seen_t  *seen = data;

    assert_true(seen->count < 8);
    assert_true(len < 64);
    memcpy(seen->lines[seen->count], line, len);
    seen->lines[seen->count][len] = '\0';
    seen->offsets[seen->count] = offset;
    seen->overlong[seen->count] = overlong;
    seen->count++;

    return seen->stop_after != 0 && seen->count == seen->stop_after;
}


static void
test_scan_feeds_complete_lines_with_offsets(void **state)
{
    const char  *buf = "one\ntwo\nthree\n";
    seen_t       seen = { 0 };
    int          skipping = 0;

    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 100, &skipping,
                                     collect, &seen), strlen(buf));
    assert_int_equal(seen.count, 3);
    assert_string_equal(seen.lines[0], "one");
    assert_string_equal(seen.lines[2], "three");
    assert_int_equal(seen.offsets[0], 100);
    assert_int_equal(seen.offsets[1], 104);
    assert_int_equal(seen.offsets[2], 108);
    assert_false(seen.overlong[0]);
}


static void
test_scan_leaves_a_partial_line_for_later(void **state)
{
    const char  *buf = "one\ntw";
    seen_t       seen = { 0 };
    int          skipping = 0;

    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 0, &skipping,
                                     collect, &seen), 4);
    assert_int_equal(seen.count, 1);
    assert_false(skipping);

    /* nothing complete at all: nothing consumed */
    seen.count = 0;
    assert_int_equal(cd_journal_scan("partial", 7, 4096, 4, &skipping,
                                     collect, &seen), 0);
    assert_int_equal(seen.count, 0);
}


static void
test_scan_stops_when_the_batch_is_full(void **state)
{
    const char  *buf = "a\nb\nc\n";
    seen_t       seen = { 0 };
    int          skipping = 0;

    seen.stop_after = 2;
    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 0, &skipping,
                                     collect, &seen), 4);
    assert_int_equal(seen.count, 2);
}


static void
test_scan_skips_a_line_longer_than_a_read(void **state)
{
    char    buf[16];
    seen_t  seen = { 0 };
    int     skipping = 0;

    /* a full read without '\n' is consumed and marks skipping */
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(cd_journal_scan(buf, sizeof(buf), sizeof(buf), 0,
                                     &skipping, collect, &seen),
                     sizeof(buf));
    assert_int_equal(seen.count, 0);
    assert_true(skipping);

    /* its tail arrives flagged overlong; the next line is normal */
    assert_int_equal(cd_journal_scan("xx\nok\n", 6, sizeof(buf), 16,
                                     &skipping, collect, &seen), 6);
    assert_int_equal(seen.count, 2);
    assert_true(seen.overlong[0]);
    assert_false(seen.overlong[1]);
    assert_string_equal(seen.lines[1], "ok");
    assert_int_equal(seen.offsets[1], 19);
    assert_false(skipping);
}


static void
test_scan_empty_lines_are_fed(void **state)
{
    seen_t  seen = { 0 };
    int     skipping = 0;

    assert_int_equal(cd_journal_scan("\n\n", 2, 4096, 0, &skipping, collect,
                                     &seen), 2);
    assert_int_equal(seen.count, 2);
    assert_string_equal(seen.lines[0], "");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_scan_feeds_complete_lines_with_offsets),
        cmocka_unit_test(test_scan_leaves_a_partial_line_for_later),
        cmocka_unit_test(test_scan_stops_when_the_batch_is_full),
        cmocka_unit_test(test_scan_skips_a_line_longer_than_a_read),
        cmocka_unit_test(test_scan_empty_lines_are_fed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
