/*
 * Leased budgets: the admission check and the sizing rules (sp_lease.h).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "sp_budget.h"
#include "sp_lease.h"


/* a lease of 1000 confirmed until 5000, journal drained, at time 1000 */
static sp_lease_check_t
lease_of(int64_t lease, int64_t used, int64_t worst, int64_t left)
{
    sp_lease_check_t  in;

    in.used = used;
    in.worst = worst;
    in.lease = lease;
    in.left = left;
    in.expires_ms = 5000;
    in.drained_ms = 900;
    in.epoch_ms = 500;
    in.now_ms = 1000;
    in.found = 1;

    return in;
}


static void
test_check_admits_exactly_up_to_the_lease(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    in = lease_of(1000, 600, 400, 0);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_OK);
    assert_int_equal(shortfall, 0);

    /* one nano-USD more than the lease holds: a top-up of exactly that */
    in = lease_of(1000, 601, 400, 5000);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_TOP_UP);
    assert_int_equal(shortfall, 1);

    /* a request that costs nothing passes a used-up lease */
    in = lease_of(1000, 1000, 0, 0);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_OK);
}


static void
test_check_refuses_when_nothing_left_can_pay(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    /* lacks 300, the cluster can grant 299 more: 402 at once */
    in = lease_of(1000, 900, 400, 299);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_EXHAUSTED);
    assert_int_equal(shortfall, 300);

    /* can grant 300: ask */
    in.left = 300;
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_TOP_UP);
    assert_int_equal(shortfall, 300);
}


static void
test_check_never_pays_from_an_expired_lease(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    /* plenty of lease, but unconfirmed since: controld or PG is away */
    in = lease_of(1000000, 0, 1, 1000000);
    in.now_ms = in.expires_ms;
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_EXPIRED);

    in.now_ms = in.expires_ms - 1;
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_OK);
}


static void
test_check_waits_for_the_journal_of_an_earlier_nginx(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    /* the zone is newer than the last drained journal read */
    in = lease_of(1000, 0, 10, 0);
    in.epoch_ms = 950;
    assert_int_equal(sp_lease_check(&in, &shortfall),
                     SP_LEASE_CATCHING_UP);
    assert_int_equal(shortfall, 0);

    in.drained_ms = 950;
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_OK);
}


static void
test_check_asks_for_a_first_lease(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    in = lease_of(0, 0, 250, 0);
    in.found = 0;
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_TOP_UP);
    assert_int_equal(shortfall, 250);
}


static void
test_check_saturates(void **state)
{
    int64_t           shortfall;
    sp_lease_check_t  in;

    (void) state;

    in = lease_of(INT64_MAX, INT64_MAX - 1, INT64_MAX, INT64_MAX);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_OK);

    in = lease_of(1000, INT64_MAX, INT64_MAX, 0);
    assert_int_equal(sp_lease_check(&in, &shortfall), SP_LEASE_EXHAUSTED);
    assert_true(shortfall == INT64_MAX - 1000);
}


static void
test_used_counts_every_epoch_pending_and_reserved(void **state)
{
    (void) state;

    /* 500 ingested in all, 200 of them this epoch; 350 settled here */
    assert_int_equal(sp_lease_used(500, 200, 350, 40), 500 + 150 + 40);

    /* nothing of this epoch ingested yet: all it settled is pending */
    assert_int_equal(sp_lease_used(300, 0, 350, 0), 650);

    /* a counter made again after expiry settled less than was ingested */
    assert_int_equal(sp_lease_used(500, 200, 100, 0), 500);

    assert_true(sp_lease_used(INT64_MAX, 0, 1, 1) == INT64_MAX);
}


static void
test_slice_is_a_horizon_of_traffic_far_from_the_limit(void **state)
{
    sp_lease_slice_t  in;

    (void) state;

    /* $1000 free, 3 nodes, this one spends 1 mUSD a second: 10 mUSD */
    in.free = 1000000000000;
    in.live_nodes = 3;
    in.rate = 1000000;
    in.horizon_ms = SP_LEASE_HORIZON_MS;
    in.floor = 1000;
    in.need = 0;
    assert_int_equal(sp_lease_slice(&in), 10000000);
}


static void
test_slice_shares_the_last_dollars(void **state)
{
    sp_lease_slice_t  in;

    (void) state;

    /* 6000 free, 3 nodes, fast traffic: a sixth each grant */
    in.free = 6000;
    in.live_nodes = 3;
    in.rate = 1000000;
    in.horizon_ms = SP_LEASE_HORIZON_MS;
    in.floor = 100;
    in.need = 0;
    assert_int_equal(sp_lease_slice(&in), 1000);

    /* at least one worst case, and what a parked request lacks */
    in.floor = 1500;
    assert_int_equal(sp_lease_slice(&in), 1500);
    in.need = 2500;
    assert_int_equal(sp_lease_slice(&in), 2500);

    /* never more than is free; nothing free, nothing */
    in.need = 7000;
    assert_int_equal(sp_lease_slice(&in), 6000);
    in.free = 0;
    assert_int_equal(sp_lease_slice(&in), 0);

    /* no traffic yet: a few worst cases, within the share */
    in.free = 6000;
    in.rate = 0;
    in.need = 0;
    in.floor = 100;
    in.live_nodes = 0;
    assert_int_equal(sp_lease_slice(&in), 100 * SP_LEASE_MIN_WORST);
    in.floor = 1000;
    assert_int_equal(sp_lease_slice(&in), 3000);

    /* slow traffic far from the limit: still a few worst cases */
    in.free = 1000000;
    in.rate = 1;
    in.floor = 100;
    assert_int_equal(sp_lease_slice(&in), 100 * SP_LEASE_MIN_WORST);
}


static void
test_target_tops_up_at_the_watermark_and_gives_back(void **state)
{
    (void) state;

    /* headroom 600 of a 1000 slice: keep */
    assert_int_equal(sp_lease_target(1600, 1000, 1000), 1600);
    assert_int_equal(sp_lease_target(1500, 1000, 1000), 1500);

    /* under half a slice: up to used + slice */
    assert_int_equal(sp_lease_target(1499, 1000, 1000), 2000);

    /* over two slices: the rest goes back */
    assert_int_equal(sp_lease_target(3000, 1000, 1000), 3000);
    assert_int_equal(sp_lease_target(3001, 1000, 1000), 2000);

    /* idle (slice 0): everything unused goes back, never what is used */
    assert_int_equal(sp_lease_target(3000, 1000, 0), 1000);
    assert_int_equal(sp_lease_target(1000, 1000, 0), 1000);
    assert_int_equal(sp_lease_target(900, 1000, 0), 900);
}


static void
test_rate_moves_a_quarter_a_round(void **state)
{
    (void) state;

    /* 200 in 200 ms is 1000 a second */
    assert_int_equal(sp_lease_rate(0, 200, 200), 250);
    assert_int_equal(sp_lease_rate(1000, 200, 200), 1000);
    assert_int_equal(sp_lease_rate(1000, 0, 200), 750);
    assert_int_equal(sp_lease_rate(1000, 200, 0), 1000);

    assert_true(sp_lease_rate(INT64_MAX, INT64_MAX, 1) <= INT64_MAX);
    assert_true(sp_lease_rate(INT64_MAX, INT64_MAX, 1) > INT64_MAX / 2);
}


static void
test_ask_file_slots_per_budget_and_period(void **state)
{
    uint8_t        *data;
    size_t          len;
    uint64_t        hash;
    sp_ask_t        ask;
    sp_ask_slot_t  *slot;
    char            err[128];

    (void) state;

    len = sp_ask_size(100);
    assert_true(len == sizeof(sp_ask_header_t) + 128 * sizeof(sp_ask_slot_t));
    data = malloc(len);
    assert_non_null(data);
    sp_ask_init(data, 100, 1234);

    assert_int_equal(sp_ask_open(&ask, data, len, err, sizeof(err)), SP_OK);
    assert_int_equal(ask.header->epoch_ms, 1234);
    assert_int_equal(ask.header->slots, 128);

    hash = sp_budget_hash((sp_str_t) { "bud_1", 5 });
    slot = sp_ask_slot(data, hash, 1000);
    assert_non_null(slot);
    slot->used_nano = 70;
    slot->need_nano = 5;
    slot->worst_nano = 9;
    assert_ptr_equal(sp_ask_slot(data, hash, 1000), slot);
    assert_int_equal(slot->used_nano, 70);
    assert_ptr_equal(sp_slots_find(ask.slots, ask.header->slots,
                                   sizeof(sp_ask_slot_t), hash, 1000),
                     slot);

    /* the next period starts the slot over */
    assert_ptr_equal(sp_ask_slot(data, hash, 2000), slot);
    assert_int_equal(slot->period_start_ms, 2000);
    assert_int_equal(slot->used_nano, 0);
    assert_int_equal(slot->need_nano, 0);
    assert_int_equal(slot->worst_nano, 0);
    assert_null(sp_slots_find(ask.slots, ask.header->slots,
                              sizeof(sp_ask_slot_t), hash, 1000));

    ((sp_ask_header_t *) data)->version = 2;
    assert_int_equal(sp_ask_open(&ask, data, len, err, sizeof(err)),
                     SP_ERROR);
    assert_string_equal(err, "ask file version 2, expected 1");

    memcpy(data, "SPSPND01", 8);
    assert_int_equal(sp_ask_open(&ask, data, len, err, sizeof(err)),
                     SP_ERROR);
    assert_string_equal(err, "not a spendpol ask file");

    free(data);
}


/* one module admitting one nano-USD at a time while controld gives back */
typedef struct {
    int64_t  lease;
    int64_t  ask_used;
    int64_t  used;              /* the module's own count */
    int      start;
    int      done;              /* controld gave back */
    int      delay;             /* controld's start, in spins */
} race_t;


static void *
race_module(void *arg)
{
    int      i;
    race_t  *race = arg;

    while (!__atomic_load_n(&race->start, __ATOMIC_ACQUIRE)) {
        /* void */
    }

    /* admits until controld is done, and a little after */
    for (i = 0; i < 100; i += __atomic_load_n(&race->done, __ATOMIC_ACQUIRE))
    {
        if (race->used + 1 > __atomic_load_n(&race->lease, __ATOMIC_ACQUIRE)) {
            continue;
        }

        if (sp_lease_publish(&race->ask_used, &race->lease, race->used + 1)) {
            race->used++;

        } else {
            __atomic_store_n(&race->ask_used, race->used, __ATOMIC_SEQ_CST);
        }
    }

    return NULL;
}


static void *
race_controld(void *arg)
{
    int               i;
    int64_t           seen, keep;
    race_t           *race = arg;
    volatile int64_t  spin;

    while (!__atomic_load_n(&race->start, __ATOMIC_ACQUIRE)) {
        /* void */
    }

    for (i = 0, spin = 0; i < race->delay; i++) {
        spin += i;
    }

    seen = __atomic_load_n(&race->ask_used, __ATOMIC_SEQ_CST);
    keep = sp_lease_shrink(&race->lease, &race->ask_used, seen);

    if (keep > seen) {
        __atomic_store_n(&race->lease, keep, __ATOMIC_SEQ_CST);
    }

    __atomic_store_n(&race->done, 1, __ATOMIC_RELEASE);

    return NULL;
}


static void
test_giving_back_never_takes_what_an_admission_holds(void **state)
{
    int        round;
    race_t     race;
    pthread_t  module, controld;

    (void) state;

    for (round = 0; round < 500; round++) {
        memset(&race, 0, sizeof(race));
        race.lease = INT64_MAX;
        race.delay = (round % 50) * 100;

        assert_int_equal(pthread_create(&module, NULL, race_module, &race),
                         0);
        assert_int_equal(pthread_create(&controld, NULL, race_controld,
                                        &race),
                         0);
        __atomic_store_n(&race.start, 1, __ATOMIC_RELEASE);
        pthread_join(module, NULL);
        pthread_join(controld, NULL);

        assert_true(race.used <= race.lease);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_check_admits_exactly_up_to_the_lease),
        cmocka_unit_test(test_check_refuses_when_nothing_left_can_pay),
        cmocka_unit_test(test_check_never_pays_from_an_expired_lease),
        cmocka_unit_test(test_check_waits_for_the_journal_of_an_earlier_nginx),
        cmocka_unit_test(test_check_asks_for_a_first_lease),
        cmocka_unit_test(test_check_saturates),
        cmocka_unit_test(test_used_counts_every_epoch_pending_and_reserved),
        cmocka_unit_test(test_slice_is_a_horizon_of_traffic_far_from_the_limit),
        cmocka_unit_test(test_slice_shares_the_last_dollars),
        cmocka_unit_test(test_target_tops_up_at_the_watermark_and_gives_back),
        cmocka_unit_test(test_rate_moves_a_quarter_a_round),
        cmocka_unit_test(test_ask_file_slots_per_budget_and_period),
        cmocka_unit_test(test_giving_back_never_takes_what_an_admission_holds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
