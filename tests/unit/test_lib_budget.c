/*
 * Budgets: coverage, worst-case cost, the spend file.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_budget.h"


#define S(lit)  ((sp_str_t) { lit, sizeof(lit) - 1 })


typedef struct {
    const sp_snapshot_budget_t  *found;
} first_t;


static int
take_first(const sp_snapshot_budget_t *budget, void *arg)
{
    ((first_t *) arg)->found = budget;
    return 1;
}


static uint8_t *
one_budget(const char *provider, const char *model, int64_t start,
    int64_t end, size_t *len)
{
    sp_snapshot_builder_t    *b;
    sp_snapshot_budget_in_t   in;
    uint8_t                  *data;

    b = sp_snapshot_builder_new(1);
    assert_non_null(b);

    memset(&in, 0, sizeof(in));
    in.budget_id = "bud_1";
    in.org_id = "org_a";
    in.scope = SP_BUDGET_SCOPE_ORG;
    in.provider = provider;
    in.model = model;
    in.limit_nano = 1000000;
    in.period_start_ms = start;
    in.period_end_ms = end;

    assert_int_equal(sp_snapshot_add_budget(b, &in), SP_OK);
    assert_int_equal(sp_snapshot_build(b, &data, len), SP_OK);
    sp_snapshot_builder_free(b);

    return data;
}


static const sp_snapshot_budget_t *
open_first(sp_snapshot_t *s, uint8_t *data, size_t len)
{
    char     err[128];
    first_t  first;

    assert_int_equal(sp_snapshot_open(s, data, len, err, sizeof(err)), SP_OK);

    first.found = NULL;
    sp_snapshot_foreach_budget(s, S("org_a"), SP_BUDGET_SCOPE_ORG, S(""),
                               take_first, &first);
    assert_non_null(first.found);

    return first.found;
}


static void
test_budget_covers_its_period_only(void **state)
{
    uint8_t                     *data;
    size_t                       len;
    sp_snapshot_t                s;
    const sp_snapshot_budget_t  *b;

    (void) state;

    data = one_budget("", "", 1000, 2000, &len);
    b = open_first(&s, data, len);

    assert_false(sp_budget_covers(&s, b, S("openai"), S("gpt-4o"), 999));
    assert_true(sp_budget_covers(&s, b, S("openai"), S("gpt-4o"), 1000));
    assert_true(sp_budget_covers(&s, b, S("openai"), S("gpt-4o"), 1999));
    assert_false(sp_budget_covers(&s, b, S("openai"), S("gpt-4o"), 2000));

    free(data);

    /* "total": no end */
    data = one_budget("", "", 1000, 0, &len);
    b = open_first(&s, data, len);
    assert_true(sp_budget_covers(&s, b, S("x"), S("y"), INT64_MAX));
    free(data);
}


static void
test_budget_narrowed_to_provider_and_model(void **state)
{
    uint8_t                     *data;
    size_t                       len;
    sp_snapshot_t                s;
    const sp_snapshot_budget_t  *b;

    (void) state;

    data = one_budget("openai", "gpt-4o", 0, 0, &len);
    b = open_first(&s, data, len);

    assert_true(sp_budget_covers(&s, b, S("openai"), S("gpt-4o"), 5));
    assert_true(sp_budget_covers(&s, b, S("openai"),
                                 S("gpt-4o-2024-08-06"), 5));
    assert_false(sp_budget_covers(&s, b, S("openai"), S("gpt-4o-mini"), 5));
    assert_false(sp_budget_covers(&s, b, S("openai"),
                                  S("gpt-4o-mini-2024-07-18"), 5));
    assert_false(sp_budget_covers(&s, b, S("azure"), S("gpt-4o"), 5));

    free(data);

    data = one_budget("anthropic", "claude-3-5-haiku", 0, 0, &len);
    b = open_first(&s, data, len);
    assert_true(sp_budget_covers(&s, b, S("anthropic"),
                                 S("claude-3-5-haiku-20241022"), 5));
    assert_false(sp_budget_covers(&s, b, S("anthropic"),
                                  S("claude-3-5-haiku-2024102"), 5));
    free(data);
}


static void
test_worst_case_prices_every_token_uncached(void **state)
{
    sp_price_t  price = { 150000000, 600000000, 75000000, 0 };
    int64_t     cost;

    (void) state;

    /* 1000 prompt tokens and 500 max output at gpt-4o-mini's price */
    assert_int_equal(sp_cost_worst_case(&price, 1000, 500, &cost), SP_OK);
    assert_true(cost == 150000 + 300000);

    assert_int_equal(sp_cost_worst_case(&price, INT64_MAX, INT64_MAX, &cost),
                     SP_ERROR);
}


static void
test_spend_file_round_trip(void **state)
{
    uint8_t           *data;
    size_t             len;
    sp_spend_t         spend;
    sp_spend_slot_t   *slot;
    char               err[128];
    char               id[32];
    int                i;

    (void) state;

    len = sp_spend_size(100);
    assert_true(len == sizeof(sp_spend_header_t)
                       + 128 * sizeof(sp_spend_slot_t));

    data = malloc(len);
    assert_non_null(data);
    sp_spend_init(data, 100, 7);

    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "bud_%d", i);
        slot = sp_spend_slot(data, (sp_str_t) { id, strlen(id) });
        assert_non_null(slot);
        slot->period_start_ms = 1000;
        slot->global_nano = i * 10;
    }

    /* the same id gets the same slot */
    assert_ptr_equal(sp_spend_slot(data, S("bud_5")),
                     sp_spend_slot(data, S("bud_5")));

    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_OK);

    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "bud_%d", i);
        assert_true(sp_spend_find(&spend, (sp_str_t) { id, strlen(id) },
                                  1000)->global_nano == i * 10);
    }

    /* another period, or a budget never published: nothing */
    assert_null(sp_spend_find(&spend, S("bud_5"), 2000));
    assert_null(sp_spend_find(&spend, S("bud_none"), 1000));

    free(data);
}


/* rate slots share the table with budget slots and never collide */
static void
test_rate_slots_beside_budgets(void **state)
{
    uint8_t               *data;
    size_t                 len;
    uint64_t               key, agent, org;
    sp_spend_t             spend;
    sp_rate_slot_t        *rate;
    sp_spend_slot_t       *slot;
    char                   err[128];
    const sp_rate_slot_t  *found;

    (void) state;

    key = sp_rate_hash("key", S("key_1"));
    agent = sp_rate_hash("agent", S("key_1"));
    org = sp_rate_hash("org", S("org_1"));

    /* the kind is part of the subject */
    assert_true(key != agent);
    assert_true(key != 0 && agent != 0 && org != 0);
    assert_true(key == sp_rate_hash("key", S("key_1")));

    len = sp_spend_size(8);
    data = malloc(len);
    assert_non_null(data);
    sp_spend_init(data, 8, 1);

    slot = sp_spend_slot(data, S("bud_1"));
    assert_non_null(slot);
    slot->period_start_ms = 1000;
    slot->global_nano = 5;

    rate = sp_rate_slot(data, key);
    assert_non_null(rate);
    assert_ptr_not_equal((void *) rate, (void *) slot);
    assert_ptr_equal(sp_rate_slot(data, key), rate);
    rate->window_start_ms = 60000;
    rate->requests = 3;
    rate->tokens = 300;

    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_OK);

    found = sp_rate_find(&spend, key, 60000);
    assert_non_null(found);
    assert_int_equal(found->requests, 3);
    assert_int_equal(found->tokens, 300);

    /* another window, another subject: nothing */
    assert_null(sp_rate_find(&spend, key, 120000));
    assert_null(sp_rate_find(&spend, agent, 60000));
    assert_null(sp_rate_find(&spend, org, 60000));

    assert_int_equal(sp_spend_find(&spend, S("bud_1"), 1000)->global_nano, 5);

    /* a full table gives NULL rather than looping */
    while (sp_rate_slot(data, ++org) != NULL) {
        /* fill */
    }

    assert_null(sp_rate_slot(data, org + 1000));
    assert_non_null(sp_rate_find(&spend, key, 60000));

    free(data);
}


static void
test_spend_open_refuses_bad_files(void **state)
{
    uint8_t     *data;
    size_t       len;
    sp_spend_t   spend;
    char         err[128];

    (void) state;

    len = sp_spend_size(8);
    data = malloc(len);
    assert_non_null(data);
    sp_spend_init(data, 8, 1);

    assert_int_equal(sp_spend_open(&spend, data, 10, err, sizeof(err)),
                     SP_ERROR);
    assert_int_equal(sp_spend_open(&spend, data, len - 1, err, sizeof(err)),
                     SP_ERROR);

    ((sp_spend_header_t *) data)->slots = 6;
    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_ERROR);

    ((sp_spend_header_t *) data)->slots = 8;
    ((sp_spend_header_t *) data)->version = 99;
    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_ERROR);

    data[0] = 'X';
    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_ERROR);

    free(data);
}


/* what a node reads of its budget's slot (version 2: the lease) */
static void
test_spend_read_sees_its_epoch_and_lease(void **state)
{
    uint8_t           *data;
    size_t             len;
    uint64_t           hash;
    sp_spend_t         spend;
    sp_spend_slot_t   *slot;
    sp_spend_view_t    view;
    char               err[128];

    (void) state;

    len = sp_spend_size(8);
    data = calloc(1, len);
    assert_non_null(data);
    sp_spend_init(data, 8, 1);
    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_OK);

    hash = sp_budget_hash(S("bud_1"));

    /* no file, or no slot: nothing, and no lease rules */
    sp_spend_read(NULL, hash, 1000, 77, &view);
    assert_false(view.found || view.leases);
    sp_spend_read(&spend, hash, 1000, 77, &view);
    assert_false(view.found || view.leases);

    slot = sp_spend_slot(data, S("bud_1"));
    slot->period_start_ms = 1000;
    slot->global_nano = 900;
    slot->epoch = 77;
    slot->node_nano = 200;
    slot->node_all_nano = 500;
    slot->lease_nano = 1500;
    slot->lease_expires_ms = 9000;
    slot->left_nano = 4000;
    ((sp_spend_header_t *) data)->flags = SP_SPEND_LEASES;
    ((sp_spend_header_t *) data)->drained_ms = 800;

    sp_spend_read(&spend, hash, 1000, 77, &view);
    assert_true(view.found && view.leases);
    assert_int_equal(view.global_nano, 900);
    assert_int_equal(view.epoch_nano, 200);
    assert_int_equal(view.node_all_nano, 500);
    assert_int_equal(view.lease_nano, 1500);
    assert_int_equal(view.lease_expires_ms, 9000);
    assert_int_equal(view.left_nano, 4000);
    assert_int_equal(view.drained_ms, 800);

    /* another epoch (nginx restarted): none of its lines are ingested */
    sp_spend_read(&spend, hash, 1000, 78, &view);
    assert_true(view.found);
    assert_int_equal(view.epoch_nano, 0);
    assert_int_equal(view.node_all_nano, 500);

    /* another period: nothing, but the file still says leases are on */
    sp_spend_read(&spend, hash, 2000, 77, &view);
    assert_false(view.found);
    assert_true(view.leases);
    assert_int_equal(view.lease_nano, 0);
    assert_int_equal(view.drained_ms, 800);

    free(data);
}


/* budget and rate slots are one size, and the header keeps them aligned */
static void
test_spend_file_version_2_layout(void **state)
{
    uint8_t     *data;
    size_t       len;
    sp_spend_t   spend;
    char         err[128];

    (void) state;

    assert_int_equal(sizeof(sp_spend_header_t), 64);
    assert_int_equal(sizeof(sp_spend_slot_t), 128);
    assert_int_equal(sizeof(sp_rate_slot_t), 128);

    len = sp_spend_size(8);
    data = calloc(1, len);
    assert_non_null(data);
    sp_spend_init(data, 8, 1);
    assert_int_equal(((sp_spend_header_t *) data)->version, 2);
    assert_int_equal(((sp_spend_header_t *) data)->flags, 0);

    /* a version 1 file (controld not upgraded with nginx) is refused */
    ((sp_spend_header_t *) data)->version = 1;
    assert_int_equal(sp_spend_open(&spend, data, len, err, sizeof(err)),
                     SP_ERROR);
    assert_string_equal(err, "spend file version 1, expected 2");

    free(data);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_budget_covers_its_period_only),
        cmocka_unit_test(test_budget_narrowed_to_provider_and_model),
        cmocka_unit_test(test_worst_case_prices_every_token_uncached),
        cmocka_unit_test(test_spend_file_round_trip),
        cmocka_unit_test(test_spend_open_refuses_bad_files),
        cmocka_unit_test(test_rate_slots_beside_budgets),
        cmocka_unit_test(test_spend_read_sees_its_epoch_and_lease),
        cmocka_unit_test(test_spend_file_version_2_layout),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
