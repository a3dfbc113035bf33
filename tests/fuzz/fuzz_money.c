/*
 * Money: sp_money_parse and sp_money_format round trips, and the cost
 * arithmetic on arbitrary prices and counts.
 *
 * Input: a decimal USD string. Its bytes are also read as an int64 to
 * format, and as a price and usage to cost.
 */

#include "fuzz_common.h"
#include "sp_budget.h"
#include "sp_usage.h"


static void
fuzz_format_parse(int64_t nano)
{
    char     buf[SP_MONEY_STR_LEN], again[SP_MONEY_STR_LEN];
    size_t   n, n2;
    int64_t  back;
    char    *dot;

    n = sp_money_format(nano, buf);

    FUZZ_CHECK(n > 0 && n < SP_MONEY_STR_LEN);
    FUZZ_CHECK(strlen(buf) == n);

    dot = strchr(buf, '.');
    FUZZ_CHECK(dot != NULL);
    FUZZ_CHECK(strlen(dot + 1) >= 6 && strlen(dot + 1) <= 9);

    FUZZ_CHECK(sp_money_parse(buf, n, &back) == SP_OK);
    FUZZ_CHECK(back == nano);

    /* formatting is canonical */
    n2 = sp_money_format(back, again);
    FUZZ_CHECK(n2 == n && memcmp(buf, again, n) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_price_t   price;
    sp_usage_t   usage;
    int64_t      nano, v, cost, cost2;
    char        *s;
    int          rc;

    s = (char *) fuzz_dup(data, size);

    if (sp_money_parse(s, size, &nano) == SP_OK) {
        fuzz_format_parse(nano);
    }

    if (size >= sizeof(int64_t)) {
        memcpy(&v, data, sizeof(v));
        fuzz_format_parse(v);
    }

    fuzz_format_parse(INT64_MIN);
    fuzz_format_parse(INT64_MAX);

    if (size >= sizeof(price) + sizeof(usage)) {
        memcpy(&price, data, sizeof(price));
        memcpy(&usage, data + sizeof(price), sizeof(usage));

        rc = sp_cost_nano(&price, &usage, &cost);
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);

        if (rc == SP_OK) {
            FUZZ_CHECK(cost >= 0);
        }

        rc = sp_cost_worst_case(&price, usage.input_tokens,
                                usage.output_tokens, &cost2);
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);

        (void) sp_tokens_estimate(usage.input_tokens);
    }

    free(s);

    return 0;
}
