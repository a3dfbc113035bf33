/*
 * Budgets: coverage, worst-case cost, the spend file.
 */

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "sp_budget.h"


static int
sp_budget_str_eq(sp_str_t a, sp_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}


/*
 * "gpt-4o" covers "gpt-4o" and "gpt-4o-2024-08-06", not "gpt-4o-mini":
 * the undated base model rule of price resolution (sp_price.h)
 */
int
sp_budget_model_covers(sp_str_t narrowing, sp_str_t model)
{
    return narrowing.len == 0 || sp_budget_str_eq(narrowing, model)
           || sp_budget_str_eq(narrowing, sp_price_base_model(model));
}


int
sp_budget_covers(const sp_snapshot_t *s, const sp_snapshot_budget_t *b,
    sp_str_t provider, sp_str_t model, int64_t now_ms)
{
    sp_str_t  narrowing;

    if (now_ms < b->period_start_ms
        || (b->period_end_ms != 0 && now_ms >= b->period_end_ms))
    {
        return 0;
    }

    narrowing = sp_snapshot_str(s, b->provider);

    if (narrowing.len && !sp_budget_str_eq(narrowing, provider)) {
        return 0;
    }

    return sp_budget_model_covers(sp_snapshot_str(s, b->model), model);
}


int
sp_cost_worst_case(const sp_price_t *price, int64_t prompt_tokens,
    int64_t max_output_tokens, int64_t *cost)
{
    sp_usage_t  usage;

    memset(&usage, 0, sizeof(sp_usage_t));
    usage.input_tokens = prompt_tokens;
    usage.output_tokens = max_output_tokens;

    return sp_cost_nano(price, &usage, cost);
}


uint64_t
sp_rate_hash(const char *kind, sp_str_t id)
{
    uint64_t  hash;

    hash = sp_hash64(id.data, id.len, sp_hash64(kind, strlen(kind), 0));

    return hash ? hash : 1;
}


uint64_t
sp_budget_hash(sp_str_t budget_id)
{
    uint64_t  hash;

    hash = sp_hash64(budget_id.data, budget_id.len, 0x5350454e44ULL);

    /* 0 marks an empty slot */
    return hash ? hash : 1;
}


size_t
sp_spend_size(uint32_t slots)
{
    uint32_t  n;

    n = 8;

    while (n < slots) {
        n *= 2;
    }

    return sizeof(sp_spend_header_t) + (size_t) n * sizeof(sp_spend_slot_t);
}


void
sp_spend_init(void *data, uint32_t slots, uint64_t generation)
{
    sp_spend_header_t  *header;
    uint32_t            n;

    n = 8;

    while (n < slots) {
        n *= 2;
    }

    memset(data, 0, sp_spend_size(n));

    header = data;
    memcpy(header->magic, SP_SPEND_MAGIC, sizeof(header->magic));
    header->version = SP_SPEND_VERSION;
    header->slots = n;
    header->generation = generation;
}


/*
 * Budget and rate slots share the table: both are 128 bytes and start with
 * the hash (0: empty) and the period or window start, read here as the
 * slot's first two 64-bit words; the header keeps the slots 64-byte
 * aligned.
 */
typedef char  sp_spend_slot_layout_check[
    sizeof(sp_spend_header_t) == 64
    && offsetof(sp_spend_header_t, version) == 8
    && offsetof(sp_spend_header_t, slots) == 12
    && sizeof(sp_spend_slot_t) == 128
    && sizeof(sp_rate_slot_t) == sizeof(sp_spend_slot_t)
    && offsetof(sp_spend_slot_t, budget_hash) == 0
    && offsetof(sp_rate_slot_t, subject_hash) == 0
    && offsetof(sp_spend_slot_t, period_start_ms) == 8
    && offsetof(sp_rate_slot_t, window_start_ms) == 8 ? 1 : -1];


void *
sp_slots_take(void *slots, uint32_t n, size_t stride, uint64_t hash)
{
    uint64_t  *key;
    uint32_t   i, probes;

    for (i = (uint32_t) hash & (n - 1), probes = 0;
         probes < n;
         i = (i + 1) & (n - 1), probes++)
    {
        key = (uint64_t *) ((uint8_t *) slots + (size_t) i * stride);

        if (key[0] == hash) {
            return key;
        }

        if (key[0] == 0) {
            __atomic_store_n(&key[0], hash, __ATOMIC_RELEASE);
            return key;
        }
    }

    return NULL;
}


const void *
sp_slots_find(const void *slots, uint32_t n, size_t stride, uint64_t hash,
    int64_t start_ms)
{
    uint64_t         h;
    uint32_t         i, probes;
    const uint64_t  *key;

    for (i = (uint32_t) hash & (n - 1), probes = 0;
         probes < n;
         i = (i + 1) & (n - 1), probes++)
    {
        key = (const uint64_t *) ((const uint8_t *) slots
                                  + (size_t) i * stride);
        h = __atomic_load_n(&key[0], __ATOMIC_ACQUIRE);

        if (h == 0) {
            return NULL;
        }

        if (h == hash) {
            if (__atomic_load_n(&key[1], __ATOMIC_ACQUIRE)
                != (uint64_t) start_ms)
            {
                return NULL;
            }

            return key;
        }
    }

    return NULL;
}


/* controld: the slot of hash, taken when absent; NULL when full */
static void *
sp_spend_take(void *data, uint64_t hash)
{
    sp_spend_header_t  *header;

    header = data;

    return sp_slots_take(header + 1, header->slots, sizeof(sp_spend_slot_t),
                         hash);
}


sp_spend_slot_t *
sp_spend_slot(void *data, sp_str_t budget_id)
{
    return sp_spend_take(data, sp_budget_hash(budget_id));
}


sp_rate_slot_t *
sp_rate_slot(void *data, uint64_t hash)
{
    return sp_spend_take(data, hash);
}


/* the prefix every slot file's header starts with */
typedef struct {
    char      magic[8];
    uint32_t  version;
    uint32_t  slots;
} sp_slots_prefix_t;


int
sp_slots_open(const void *data, size_t len, const char *magic,
    uint32_t version, size_t header_size, size_t stride, const char *what,
    char *err, size_t errlen)
{
    const sp_slots_prefix_t  *prefix;

    prefix = data;

    if (len < header_size
        || memcmp(prefix->magic, magic, sizeof(prefix->magic)) != 0)
    {
        sp_errorf(err, errlen, "not a spendpol %s file", what);
        return SP_ERROR;
    }

    if (prefix->version != version) {
        sp_errorf(err, errlen, "%s file version %u, expected %u", what,
                  prefix->version, version);
        return SP_ERROR;
    }

    if (prefix->slots == 0 || (prefix->slots & (prefix->slots - 1)) != 0
        || prefix->slots > (len - header_size) / stride)
    {
        sp_errorf(err, errlen, "%s file has %u slots for %zu bytes", what,
                  prefix->slots, len);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_spend_open(sp_spend_t *spend, const void *data, size_t len, char *err,
    size_t errlen)
{
    const sp_spend_header_t  *header;

    if (sp_slots_open(data, len, SP_SPEND_MAGIC, SP_SPEND_VERSION,
                      sizeof(sp_spend_header_t), sizeof(sp_spend_slot_t),
                      "spend", err, errlen)
        != SP_OK)
    {
        return SP_ERROR;
    }

    header = data;

    spend->base = data;
    spend->len = len;
    spend->header = header;
    spend->slots = (const sp_spend_slot_t *) (header + 1);

    return SP_OK;
}


/* readers: the slot of hash for the period or window at start_ms */
static const void *
sp_spend_lookup(const sp_spend_t *spend, uint64_t hash, int64_t start_ms)
{
    return sp_slots_find(spend->slots, spend->header->slots,
                         sizeof(sp_spend_slot_t), hash, start_ms);
}


const sp_spend_slot_t *
sp_spend_find(const sp_spend_t *spend, sp_str_t budget_id,
    int64_t period_start_ms)
{
    return sp_spend_lookup(spend, sp_budget_hash(budget_id),
                           period_start_ms);
}


const sp_rate_slot_t *
sp_rate_find(const sp_spend_t *spend, uint64_t hash, int64_t window_start_ms)
{
    return sp_spend_lookup(spend, hash, window_start_ms);
}



void
sp_spend_read(const sp_spend_t *spend, uint64_t hash, int64_t period_start_ms,
    int64_t epoch, sp_spend_view_t *view)
{
    sp_spend_view_t         v;
    const sp_spend_slot_t  *slot;

    memset(view, 0, sizeof(sp_spend_view_t));

    if (spend == NULL || spend->header == NULL) {
        return;
    }

    view->leases = (__atomic_load_n(&spend->header->flags, __ATOMIC_ACQUIRE)
                    & SP_SPEND_LEASES) != 0;
    view->drained_ms = __atomic_load_n(&spend->header->drained_ms,
                                       __ATOMIC_ACQUIRE);

    slot = (const sp_spend_slot_t *) sp_spend_lookup(spend, hash,
                                                     period_start_ms);
    if (slot == NULL) {
        return;
    }

    v = *view;

    /* node_nano before node_all_nano: see sp_spend_slot_t */
    if (__atomic_load_n(&slot->epoch, __ATOMIC_ACQUIRE) == epoch) {
        v.epoch_nano = __atomic_load_n(&slot->node_nano, __ATOMIC_ACQUIRE);
    }

    v.node_all_nano = __atomic_load_n(&slot->node_all_nano, __ATOMIC_ACQUIRE);
    v.global_nano = __atomic_load_n(&slot->global_nano, __ATOMIC_ACQUIRE);
    v.lease_nano = __atomic_load_n(&slot->lease_nano, __ATOMIC_ACQUIRE);
    v.lease_expires_ms = __atomic_load_n(&slot->lease_expires_ms,
                                         __ATOMIC_ACQUIRE);
    v.left_nano = __atomic_load_n(&slot->left_nano, __ATOMIC_ACQUIRE);

    /*
     * controld moving the slot to a new period zeroes period_start_ms
     * first and sets it last: values read meanwhile may be the new
     * period's, so they count as none
     */
    if (__atomic_load_n(&slot->period_start_ms, __ATOMIC_ACQUIRE)
        != period_start_ms)
    {
        return;
    }

    v.found = 1;
    v.slot = slot;
    *view = v;
}
