/* controld list-price data file lines */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "prices.h"


static int
parse(const char *text, cd_price_row_t *row)
{
    char  line[512], err[256];

    strcpy(line, text);

    return cd_price_parse_line(line, row, err, sizeof(err));
}


static void
test_price_row_in_nano_usd_per_million(void **state)
{
    cd_price_row_t  row;

    assert_int_equal(parse("openai\tgpt-4o-mini\t0.15\t0.60\t0.075\t\t16384\n",
                           &row), 1);
    assert_string_equal(row.provider, "openai");
    assert_string_equal(row.model, "gpt-4o-mini");
    assert_true(row.input == 150000000);
    assert_true(row.output == 600000000);
    assert_true(row.cached_input == 75000000);
    assert_true(row.cache_write == -1);
    assert_true(row.max_output_tokens == 16384);

    assert_int_equal(parse("anthropic\tclaude-3-5-haiku\t0.80\t4\t0.08\t1\t"
                           "8192\r\n", &row), 1);
    assert_true(row.cache_write == 1000000000);

    assert_int_equal(parse("cohere\tcommand-r7b-12-2024\t0.0375\t0.15\t\t\t",
                           &row), 1);
    assert_true(row.input == 37500000);
    assert_true(row.cached_input == -1);
    assert_true(row.max_output_tokens == -1);
}


static void
test_price_comments_and_blank_lines_are_skipped(void **state)
{
    cd_price_row_t  row;

    assert_int_equal(parse("# provider\tmodel\n", &row), 0);
    assert_int_equal(parse("\n", &row), 0);
    assert_int_equal(parse("", &row), 0);
}


static void
test_price_malformed_rows_are_refused(void **state)
{
    size_t          i;
    cd_price_row_t  row;
    const char     *bad[] = {
        "openai\tgpt\t1\t2\t\t\n",                  /* 6 fields */
        "openai\tgpt\t1\t2\t\t\t1\textra",          /* 8 fields */
        "bedrock\tx\t1\t2\t\t\t1",                  /* unknown provider */
        "openai\t\t1\t2\t\t\t1",                    /* no model */
        "openai\tgpt\t\t2\t\t\t1",                  /* no input price */
        "openai\tgpt\t-1\t2\t\t\t1",                /* negative */
        "openai\tgpt\t1.0000000001\t2\t\t\t1",      /* 10 decimals */
        "openai\tgpt\t$1\t2\t\t\t1",
        "openai\tgpt\t1\t2\t\t\t-5",
        "openai\tgpt\t1\t2\t\t\t12k",
        "openai gpt 1 2",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], &row), -1);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_price_row_in_nano_usd_per_million),
        cmocka_unit_test(test_price_comments_and_blank_lines_are_skipped),
        cmocka_unit_test(test_price_malformed_rows_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
