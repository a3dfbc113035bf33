/*
 * sp_usage_from_json for every provider on one response body.
 */

#include "fuzz_common.h"
#include "sp_usage.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_response_info_t   info;
    sp_price_t           price;
    int64_t              cost;
    char                *body;
    int                  p, rc;

    /* exactly size bytes, no NUL after them */
    body = (char *) fuzz_dup(data, size);

    price.input = 3000000000LL;
    price.output = 15000000000LL;
    price.cached_input = 300000000LL;
    price.cache_write = 3750000000LL;

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        memset(&info, 0, sizeof(info));

        rc = sp_usage_from_json((sp_provider_e) p, body, size, &info);

        FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
        FUZZ_CHECK(strlen(info.model) < sizeof(info.model));
        FUZZ_CHECK(info.usage.input_tokens >= 0);
        FUZZ_CHECK(info.usage.output_tokens >= 0);
        FUZZ_CHECK(info.usage.cached_tokens >= 0);
        FUZZ_CHECK(info.usage.cache_write_tokens >= 0);
        FUZZ_CHECK(info.output_bytes >= 0);

        if (rc == SP_ERROR) {
            FUZZ_CHECK(info.has_usage == 0);
        }

        (void) sp_cost_nano(&price, &info.usage, &cost);
    }

    free(body);

    return 0;
}
