/*
 * libspendpol price resolution: alias, organisation, list, undated base
 * model, fallback, and the effective-date rule; over a table lookup and
 * over a snapshot, which must agree.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_price.h"
#include "sp_snapshot.h"


/* a NUL-terminated literal as a borrowed string */
#define S(s)  ((sp_str_t) { (s), strlen(s) })


static int
eq(sp_str_t a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.data, b, a.len) == 0;
}


typedef struct {
    const char  *org_id;          /* "" for the list price */
    const char  *provider;
    const char  *model;
    int64_t      input;
} price_row_t;

typedef struct {
    const char  *org_id;
    const char  *provider;
    const char  *alias;
    const char  *model;
} alias_row_t;

static const price_row_t  prices[] = {
    { "", "openai", "gpt-4o", 2500 },
    { "", "openai", "gpt-4o-mini", 150 },
    { "", "openai", "gpt-4o-mini-2024-07-18", 151 },
    { "", "openai", "*", 999 },                 /* never applied */
    { "org_a", "openai", "gpt-4o-mini", 100 },
    { "org_a", "openai", "*", 7 },
    { "org_a", "openai", "o1", 3 },
    { "", "azure", "gpt-4o", 2600 },
    { NULL, NULL, NULL, 0 }
};

static const alias_row_t  aliases[] = {
    { "org_a", "azure", "prod-deploy", "gpt-4o-2024-08-06" },
    { "org_a", "azure", "mini-deploy", "gpt-4o-mini" },
    { "org_a", "azure", "dead-deploy", "no-such-model" },
    { NULL, NULL, NULL, NULL }
};


static const void *
table_price(void *data, sp_str_t org_id, sp_str_t provider, sp_str_t model)
{
    const price_row_t  *p;

    for (p = data; p->model != NULL; p++) {
        if (eq(org_id, p->org_id) && eq(provider, p->provider)
            && eq(model, p->model))
        {
            return p;
        }
    }

    return NULL;
}


static sp_str_t
table_alias(void *data, sp_str_t org_id, sp_str_t provider, sp_str_t alias)
{
    const alias_row_t  *a;

    for (a = aliases; a->alias != NULL; a++) {
        if (eq(org_id, a->org_id) && eq(provider, a->provider)
            && eq(alias, a->alias))
        {
            return S(a->model);
        }
    }

    return S("");
}


typedef struct {
    const char  *org_id;
    const char  *provider;
    const char  *model;
    unsigned     options;
    int64_t      input;           /* -1: unpriced */
    const char  *priced;          /* the model whose price it is */
    unsigned     source;
    unsigned     via;
} resolve_case_t;

static const resolve_case_t  cases[] = {
    /* list price, exact and undated base */
    { "org_b", "openai", "gpt-4o", 0, 2500, "gpt-4o", SP_PRICE_LIST, 0 },
    { "org_b", "openai", "gpt-4o-2024-08-06", 0, 2500, "gpt-4o",
      SP_PRICE_LIST, SP_PRICE_VIA_BASE_MODEL },
    { "org_b", "openai", "gpt-4o-20240806", 0, 2500, "gpt-4o",
      SP_PRICE_LIST, SP_PRICE_VIA_BASE_MODEL },
    /* a dated list price of its own wins over the base's */
    { "org_b", "openai", "gpt-4o-mini-2024-07-18", 0, 151,
      "gpt-4o-mini-2024-07-18", SP_PRICE_LIST, 0 },
    /* the organisation's price wins, its base model before a list price */
    { "org_a", "openai", "gpt-4o-mini", 0, 100, "gpt-4o-mini",
      SP_PRICE_ORG, 0 },
    { "org_a", "openai", "gpt-4o-mini-2024-07-18", 0, 100, "gpt-4o-mini",
      SP_PRICE_ORG, SP_PRICE_VIA_BASE_MODEL },
    { "org_a", "openai", "o1-2024-12-17", 0, 3, "o1", SP_PRICE_ORG,
      SP_PRICE_VIA_BASE_MODEL },
    /* aliases: the model the deployment runs, then its base */
    { "org_a", "azure", "prod-deploy", 0, 2600, "gpt-4o", SP_PRICE_LIST,
      SP_PRICE_VIA_ALIAS | SP_PRICE_VIA_BASE_MODEL },
    { "org_a", "azure", "dead-deploy", 0, -1, NULL, SP_PRICE_UNPRICED, 0 },
    { "org_b", "azure", "prod-deploy", 0, -1, NULL, SP_PRICE_UNPRICED, 0 },
    /* unknown: unpriced, or the organisation's fallback when asked */
    { "org_a", "openai", "gpt-9", 0, -1, NULL, SP_PRICE_UNPRICED, 0 },
    { "org_a", "openai", "gpt-9", SP_PRICE_WITH_FALLBACK, 7, "*",
      SP_PRICE_FALLBACK, 0 },
    { "org_b", "openai", "gpt-9", SP_PRICE_WITH_FALLBACK, -1, NULL,
      SP_PRICE_UNPRICED, 0 },
    { "", "openai", "gpt-9", SP_PRICE_WITH_FALLBACK, -1, NULL,
      SP_PRICE_UNPRICED, 0 },
    /* "*" is the organisation's fallback only; a list "*" never applies */
    { "org_a", "openai", "*", 0, 7, "*", SP_PRICE_FALLBACK, 0 },
    { "org_b", "openai", "*", 0, -1, NULL, SP_PRICE_UNPRICED, 0 },
    { "org_b", "openai", "*-20240806", 0, -1, NULL, SP_PRICE_UNPRICED, 0 },
    { "org_a", "openai", "", SP_PRICE_WITH_FALLBACK, -1, NULL,
      SP_PRICE_UNPRICED, 0 },
    { NULL, NULL, NULL, 0, 0, NULL, 0, 0 }
};


static void
check_case(const resolve_case_t *c, const void *record, int64_t input,
    const sp_price_found_t *found)
{
    if (c->input < 0) {
        assert_null(record);
        assert_null(found->record);
        assert_int_equal(found->source, SP_PRICE_UNPRICED);
        return;
    }

    assert_non_null(record);
    assert_ptr_equal(record, found->record);
    assert_int_equal(input, c->input);
    assert_true(eq(found->model, c->priced));
    assert_int_equal(found->source, c->source);
    assert_int_equal(found->via, c->via);
}


static void
test_price_resolve_table_of_cases(void **state)
{
    const void              *record;
    sp_price_found_t         found;
    sp_price_lookup_t        lookup;
    const resolve_case_t    *c;

    lookup.find_price = table_price;
    lookup.find_alias = table_alias;
    lookup.data = (void *) prices;

    for (c = cases; c->model != NULL; c++) {
        record = sp_price_resolve(&lookup, S(c->org_id), S(c->provider),
                                  S(c->model), c->options, &found);
        check_case(c, record, record
                              ? ((const price_row_t *) record)->input : 0,
                   &found);
    }
}


/* the module's snapshot answers every case the same way */
static void
test_price_snapshot_resolves_the_same(void **state)
{
    size_t                          len;
    uint8_t                        *buf;
    sp_snapshot_t                   s;
    sp_price_found_t                found;
    const price_row_t              *p;
    const alias_row_t              *a;
    const resolve_case_t           *c;
    sp_snapshot_builder_t          *b;
    sp_snapshot_price_in_t          pin;
    sp_snapshot_alias_in_t          ain;
    const sp_snapshot_price_t      *price;

    b = sp_snapshot_builder_new(1);
    assert_non_null(b);

    for (p = prices; p->model != NULL; p++) {
        memset(&pin, 0, sizeof(pin));
        pin.org_id = p->org_id;
        pin.provider = p->provider;
        pin.model = p->model;
        pin.price.input = p->input;
        assert_int_equal(sp_snapshot_add_price(b, &pin), SP_OK);
    }

    for (a = aliases; a->alias != NULL; a++) {
        ain.org_id = a->org_id;
        ain.provider = a->provider;
        ain.alias = a->alias;
        ain.model = a->model;
        assert_int_equal(sp_snapshot_add_alias(b, &ain), SP_OK);
    }

    assert_int_equal(sp_snapshot_build(b, &buf, &len), SP_OK);
    assert_int_equal(sp_snapshot_open(&s, buf, len, NULL, 0), SP_OK);

    for (c = cases; c->model != NULL; c++) {
        price = sp_snapshot_resolve_price(&s, S(c->org_id), S(c->provider),
                                          S(c->model), c->options, &found);
        check_case(c, price, price ? price->price.input : 0, &found);
    }

    /* without aliases and fallback, as the fuzzers and old callers ask */
    price = sp_snapshot_find_price(&s, S("org_a"), S("azure"),
                                   S("prod-deploy"));
    assert_null(price);
    price = sp_snapshot_find_price(&s, S("org_a"), S("openai"), S("*"));
    assert_non_null(price);
    assert_int_equal(price->price.input, 7);

    free(buf);
    sp_snapshot_builder_free(b);
}


typedef struct {
    const char  *name;
    const char  *model;
    int          covered;
} base_case_t;

static const base_case_t  base_cases[] = {
#include "model_base_cases.h"
    { NULL, NULL, 0 }
};


static void
test_price_base_model_table_of_cases(void **state)
{
    sp_str_t            base;
    const base_case_t  *c;

    for (c = base_cases; c->name != NULL; c++) {
        base = sp_price_base_model(S(c->model));

        assert_int_equal(strcmp(c->name, c->model) == 0
                         || (base.len > 0 && eq(base, c->name)),
                         c->covered);
    }
}


static void
test_price_base_model_reads_only_len(void **state)
{
    sp_str_t     base;
    const char  *text = "gpt-4o-2024-08-06 and more";

    base = sp_price_base_model((sp_str_t) { text, 17 });
    assert_int_equal(base.len, 6);
    assert_ptr_equal(base.data, text);

    base = sp_price_base_model((sp_str_t) { text, 16 });
    assert_int_equal(base.len, 0);

    base = sp_price_base_model((sp_str_t) { "", 0 });
    assert_int_equal(base.len, 0);
}


static void
test_price_effective_date_rule(void **state)
{
    static const unsigned char  none_yet[] = { 0, 0 };
    static const unsigned char  newest_ahead[] = { 0, 1, 1 };
    static const unsigned char  newest_in[] = { 1, 1 };

    /* newest first: the newest already in effect */
    assert_int_equal(sp_price_effective(newest_ahead, 3, 0), 1);
    assert_int_equal(sp_price_effective(newest_ahead, 3, 1), 1);
    assert_int_equal(sp_price_effective(newest_in, 2, 0), 0);

    /* an organisation's price dated ahead waits; a list price does not */
    assert_int_equal(sp_price_effective(none_yet, 2, 0), -1);
    assert_int_equal(sp_price_effective(none_yet, 2, 1), 0);

    assert_int_equal(sp_price_effective(none_yet, 0, 1), -1);
}


static void
test_price_source_names(void **state)
{
    assert_string_equal(sp_price_source_name(SP_PRICE_ORG), "organization");
    assert_string_equal(sp_price_source_name(SP_PRICE_LIST), "list");
    assert_string_equal(sp_price_source_name(SP_PRICE_FALLBACK), "fallback");
    assert_string_equal(sp_price_source_name(SP_PRICE_UNPRICED), "unpriced");
    assert_string_equal(sp_price_source_name(99), "unpriced");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_price_resolve_table_of_cases),
        cmocka_unit_test(test_price_snapshot_resolves_the_same),
        cmocka_unit_test(test_price_base_model_table_of_cases),
        cmocka_unit_test(test_price_base_model_reads_only_len),
        cmocka_unit_test(test_price_effective_date_rule),
        cmocka_unit_test(test_price_source_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
