/*
 * libspendpol provider catalogue: one entry per provider in enum order,
 * names that round-trip, the names text messages use, default URLs and
 * credential headers, and an endpoint catalogue (metering) for each.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sp_endpoint.h"
#include "sp_provider.h"


static void
test_provider_every_enum_value_has_its_entry(void **state)
{
    int                   i;
    const char           *name;
    const sp_provider_t  *p;

    for (i = SP_PROVIDER_OPENAI; i <= SP_PROVIDER_COUNT; i++) {
        p = sp_provider((sp_provider_e) i);
        assert_non_null(p);
        assert_int_equal(p->provider, i);

        name = sp_provider_name((sp_provider_e) i);
        assert_true(name[0] != '\0');
        assert_ptr_equal(sp_provider_find(name, strlen(name)), p);
    }

    assert_null(sp_provider(SP_PROVIDER_UNKNOWN));
    assert_null(sp_provider((sp_provider_e) (SP_PROVIDER_COUNT + 1)));
    assert_string_equal(sp_provider_name(
                            (sp_provider_e) (SP_PROVIDER_COUNT + 1)), "");
}


static void
test_provider_names_text_lists_the_catalogue_in_order(void **state)
{
    int     i;
    char    text[256];
    size_t  n;

    n = 0;

    for (i = SP_PROVIDER_OPENAI; i <= SP_PROVIDER_COUNT; i++) {
        n += (size_t) snprintf(text + n, sizeof(text) - n, "%s%s",
                               n ? ", " : "",
                               sp_provider_name((sp_provider_e) i));
    }

    assert_string_equal(text, SP_PROVIDER_NAMES_TEXT);
}


static void
test_provider_find_uses_len_and_exact_case(void **state)
{
    assert_non_null(sp_provider_find("openai/v1", 6));
    assert_null(sp_provider_find("openai", 5));
    assert_null(sp_provider_find("OpenAI", 6));
    assert_null(sp_provider_find("openrouter", 10));
    assert_null(sp_provider_find("", 0));
}


static void
test_provider_urls_and_credentials(void **state)
{
    int                   i;
    const sp_provider_t  *p;

    for (i = SP_PROVIDER_OPENAI; i <= SP_PROVIDER_COUNT; i++) {
        p = sp_provider((sp_provider_e) i);

        /* Azure has no default: each resource has its own host */
        if (i == SP_PROVIDER_AZURE) {
            assert_string_equal(p->default_base_url, "");

        } else {
            assert_memory_equal(p->default_base_url, "https://", 8);
            assert_true(p->default_base_url[strlen(p->default_base_url) - 1]
                        != '/');
        }

        assert_true(p->auth_header[0] != '\0');
        assert_true(p->auth_scheme[0] == '\0'
                    || strcmp(p->auth_scheme, "Bearer ") == 0);

        /* how its calls are metered: its endpoint catalogue */
        assert_non_null(sp_endpoint_catalogue((sp_provider_e) i));
        assert_non_null(sp_endpoint_catalogue((sp_provider_e) i)->method);
    }

    assert_string_equal(sp_provider(SP_PROVIDER_OPENAI)->default_base_url,
                        "https://api.openai.com/v1");
    assert_string_equal(sp_provider(SP_PROVIDER_ANTHROPIC)->auth_header,
                        "x-api-key");
    assert_string_equal(sp_provider(SP_PROVIDER_AZURE)->auth_header,
                        "api-key");
    assert_string_equal(sp_provider(SP_PROVIDER_GOOGLE)->auth_header,
                        "x-goog-api-key");
    assert_string_equal(sp_provider(SP_PROVIDER_MISTRAL)->auth_scheme,
                        "Bearer ");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_provider_every_enum_value_has_its_entry),
        cmocka_unit_test(
            test_provider_names_text_lists_the_catalogue_in_order),
        cmocka_unit_test(test_provider_find_uses_len_and_exact_case),
        cmocka_unit_test(test_provider_urls_and_credentials),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
