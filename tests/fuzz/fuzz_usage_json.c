/*
 * sp_usage_from_json for every provider on one response body. For the
 * chat completion shape its fast path must agree with the whole-body
 * parse (sp_usage_from_json_tree) on every body jansson accepts.
 */

#include "fuzz_common.h"
#include "sp_usage_internal.h"


static void
fuzz_same_as_tree(sp_provider_e provider, const char *body, size_t size,
    int rc, const sp_response_info_t *info)
{
    sp_response_info_t  tree;

    memset(&tree, 0, sizeof(tree));

    if (sp_usage_from_json_tree(provider, body, size, &tree) != SP_OK) {
        /* the fast path may read the usage of a body jansson refuses */
        return;
    }

    FUZZ_CHECK(rc == SP_OK);
    FUZZ_CHECK(info->has_usage == tree.has_usage);
    FUZZ_CHECK(info->done == tree.done);
    FUZZ_CHECK(info->usage.input_tokens == tree.usage.input_tokens);
    FUZZ_CHECK(info->usage.output_tokens == tree.usage.output_tokens);
    FUZZ_CHECK(info->usage.cached_tokens == tree.usage.cached_tokens);
    FUZZ_CHECK(info->usage.cache_write_tokens
               == tree.usage.cache_write_tokens);
    FUZZ_CHECK(strcmp(info->model, tree.model) == 0);

    /* the text only matters for an estimate, without usage */
    if (!tree.has_usage) {
        FUZZ_CHECK(info->output_bytes == tree.output_bytes);
    }
}


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

        if (p == SP_PROVIDER_OPENAI || p == SP_PROVIDER_AZURE
            || p == SP_PROVIDER_MISTRAL)
        {
            fuzz_same_as_tree((sp_provider_e) p, body, size, rc, &info);
        }

        (void) sp_cost_nano(&price, &info.usage, &cost);
    }

    free(body);

    return 0;
}
