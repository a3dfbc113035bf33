/*
 * Leased budgets: the admission check and the sizing rules (sp_lease.h).
 */

#include <stddef.h>
#include <string.h>

#include "sp_budget.h"
#include "sp_lease.h"


/* a + b for amounts >= 0: saturates instead of overflowing */
static int64_t
sp_lease_add(int64_t a, int64_t b)
{
    int64_t  sum;

    if (__builtin_add_overflow(a, b, &sum)) {
        return INT64_MAX;
    }

    return sum;
}


sp_lease_verdict_t
sp_lease_check(const sp_lease_check_t *in, int64_t *shortfall)
{
    int64_t  need;

    if (!in->found || in->expires_ms == 0) {
        /*
         * no lease yet for this budget and period (controld lays the
         * slot out with the spend before it grants): ask for a first one
         */
        *shortfall = in->worst;
        return SP_LEASE_TOP_UP;
    }

    need = sp_lease_add(in->used, in->worst);
    *shortfall = need > in->lease ? need - in->lease : 0;

    /* past expiry the cluster may reclaim it: it pays nothing any more */
    if (in->now_ms >= in->expires_ms) {
        return SP_LEASE_EXPIRED;
    }

    /* used is exact only once the journal before this epoch is counted */
    if (in->drained_ms < in->epoch_ms) {
        return SP_LEASE_CATCHING_UP;
    }

    if (*shortfall == 0) {
        return SP_LEASE_OK;
    }

    return *shortfall > in->left ? SP_LEASE_EXHAUSTED : SP_LEASE_TOP_UP;
}


int64_t
sp_lease_used(int64_t node_all, int64_t epoch_ingested, int64_t settled,
    int64_t reserved)
{
    int64_t  pending;

    pending = settled > epoch_ingested ? settled - epoch_ingested : 0;

    return sp_lease_add(sp_lease_add(node_all, pending),
                        reserved > 0 ? reserved : 0);
}


int64_t
sp_lease_slice(const sp_lease_slice_t *in)
{
    int64_t  slice, share, traffic, nodes;

    if (in->free <= 0) {
        return 0;
    }

    nodes = in->live_nodes > 1 ? in->live_nodes : 1;
    share = in->free / 2 / nodes;

    /* rate * horizon / 1000, saturating */
    if (in->rate <= 0 || in->horizon_ms <= 0) {
        traffic = 0;

    } else if (in->rate > INT64_MAX / in->horizon_ms) {
        traffic = INT64_MAX;

    } else {
        traffic = in->rate * in->horizon_ms / 1000;
    }

    if (in->floor > 0 && traffic / SP_LEASE_MIN_WORST < in->floor) {
        traffic = in->floor > INT64_MAX / SP_LEASE_MIN_WORST
                  ? INT64_MAX : in->floor * SP_LEASE_MIN_WORST;
    }

    slice = share < traffic ? share : traffic;

    if (slice < in->floor) {
        slice = in->floor;
    }

    if (slice < in->need) {
        slice = in->need;
    }

    return slice < in->free ? slice : in->free;
}


int64_t
sp_lease_target(int64_t lease, int64_t used, int64_t slice)
{
    int64_t  headroom;

    headroom = lease > used ? lease - used : 0;

    /* under half a slice: top up; over two: give the rest back */
    if (headroom < slice - slice / 2
        || (headroom > slice && headroom - slice > slice))
    {
        return sp_lease_add(used, slice);
    }

    return lease;
}


int64_t
sp_lease_rate(int64_t rate, int64_t reserved, int64_t elapsed_ms)
{
    int64_t  now;

    if (elapsed_ms <= 0) {
        return rate;
    }

    if (reserved <= 0) {
        now = 0;

    } else if (reserved > INT64_MAX / 1000) {
        now = INT64_MAX;

    } else {
        now = reserved * 1000 / elapsed_ms;
    }

    if (rate < 0) {
        rate = 0;
    }

    /* at most 3/4 and 1/4 of INT64_MAX: the sum cannot overflow */
    return rate - rate / 4 + now / 4;
}


typedef char  sp_ask_layout_check[
    sizeof(sp_ask_header_t) == 64 && sizeof(sp_ask_slot_t) == 64
    && offsetof(sp_ask_header_t, version) == 8
    && offsetof(sp_ask_header_t, slots) == 12
    && offsetof(sp_ask_slot_t, budget_hash) == 0
    && offsetof(sp_ask_slot_t, period_start_ms) == 8 ? 1 : -1];


static uint32_t
sp_ask_slots(uint32_t slots)
{
    uint32_t  n;

    n = 8;

    while (n < slots && n < (1u << 24)) {
        n *= 2;
    }

    return n;
}


size_t
sp_ask_size(uint32_t slots)
{
    return sizeof(sp_ask_header_t)
           + (size_t) sp_ask_slots(slots) * sizeof(sp_ask_slot_t);
}


void
sp_ask_init(void *data, uint32_t slots, int64_t epoch_ms)
{
    sp_ask_header_t  *header;

    memset(data, 0, sp_ask_size(slots));

    header = data;
    memcpy(header->magic, SP_ASK_MAGIC, sizeof(header->magic));
    header->version = SP_ASK_VERSION;
    header->slots = sp_ask_slots(slots);
    header->epoch_ms = epoch_ms;
}


sp_ask_slot_t *
sp_ask_slot(void *data, uint64_t hash, int64_t period_start_ms)
{
    sp_ask_slot_t    *slot;
    sp_ask_header_t  *header;

    header = data;

    slot = sp_slots_take(header + 1, header->slots, sizeof(sp_ask_slot_t),
                         hash);
    if (slot == NULL) {
        return NULL;
    }

    if (__atomic_load_n(&slot->period_start_ms, __ATOMIC_RELAXED)
        != period_start_ms)
    {
        /* controld sees "no period" while the slot starts over */
        __atomic_store_n(&slot->period_start_ms, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->used_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->admitted_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->need_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->last_admit_ms, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->worst_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->period_start_ms, period_start_ms,
                         __ATOMIC_RELEASE);
    }

    return slot;
}


int
sp_ask_open(sp_ask_t *ask, const void *data, size_t len, char *err,
    size_t errlen)
{
    if (sp_slots_open(data, len, SP_ASK_MAGIC, SP_ASK_VERSION,
                      sizeof(sp_ask_header_t), sizeof(sp_ask_slot_t), "ask",
                      err, errlen)
        != SP_OK)
    {
        return SP_ERROR;
    }

    ask->header = data;
    ask->slots = (const sp_ask_slot_t *) (ask->header + 1);

    return SP_OK;
}


int
sp_lease_publish(int64_t *ask_used, const int64_t *lease, int64_t used)
{
    __atomic_store_n(ask_used, used, __ATOMIC_SEQ_CST);

    return used <= __atomic_load_n(lease, __ATOMIC_SEQ_CST);
}


int64_t
sp_lease_shrink(int64_t *lease, const int64_t *ask_used, int64_t smaller)
{
    int64_t  used;

    __atomic_store_n(lease, smaller, __ATOMIC_SEQ_CST);
    used = __atomic_load_n(ask_used, __ATOMIC_SEQ_CST);

    return used > smaller ? used : smaller;
}
