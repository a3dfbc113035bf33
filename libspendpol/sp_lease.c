/*
 * Leased budgets: the admission check and the sizing rules (sp_lease.h).
 */

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

    if (!in->found) {
        /* no lease yet for this budget and period: ask for a first one */
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
