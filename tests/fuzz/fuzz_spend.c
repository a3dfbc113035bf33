/*
 * The spend file on hostile bytes: sp_spend_open, then sp_spend_find and
 * sp_rate_find.
 *
 * Input: a spend file. Lookups use the budget ids the seeds were built
 * with and, so that hashes land on the file's slots, ids taken from the
 * input's tail.
 */

#include "fuzz_common.h"
#include "sp_budget.h"


static const char  *fuzz_budgets[] = {
    "bud_org_monthly", "bud_key_daily", "bud_agent_total", "bud_project",
    "", NULL
};


static void
fuzz_find(const sp_spend_t *spend, sp_str_t id, int64_t period)
{
    const sp_spend_slot_t  *slot;

    slot = sp_spend_find(spend, id, period);

    if (slot) {
        FUZZ_CHECK((const uint8_t *) slot >= spend->base
                   && (const uint8_t *) (slot + 1) <= spend->base
                                                     + spend->len);
        FUZZ_CHECK(slot->budget_hash == sp_budget_hash(id));
        FUZZ_CHECK(slot->period_start_ms == period);
        (void) fuzz_touch(slot, sizeof(*slot));
    }
}


/* a rate lookup of every hash the file holds, and of one it may not */
static void
fuzz_rate(const sp_spend_t *spend, uint64_t hash, int64_t window)
{
    const sp_rate_slot_t  *slot;

    slot = sp_rate_find(spend, hash, window);

    if (slot) {
        FUZZ_CHECK((const uint8_t *) slot >= spend->base
                   && (const uint8_t *) (slot + 1) <= spend->base
                                                     + spend->len);
        FUZZ_CHECK(slot->subject_hash == hash);
        FUZZ_CHECK(slot->window_start_ms == window);
        (void) fuzz_touch(slot, sizeof(*slot));
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const sp_spend_slot_t  *slot;
    sp_spend_t              spend;
    sp_str_t                id;
    uint8_t                *copy;
    uint32_t                i;
    char                    err[256];
    int                     b;

    copy = fuzz_dup(data, size);
    err[0] = '\0';

    if (sp_spend_open(&spend, copy, size, err, sizeof(err)) != SP_OK) {
        FUZZ_CHECK(err[0] != '\0');
        free(copy);
        return 0;
    }

    FUZZ_CHECK(sizeof(sp_spend_header_t)
               + (size_t) spend.header->slots * sizeof(sp_spend_slot_t)
               <= size);

    for (b = 0; fuzz_budgets[b]; b++) {
        id.data = fuzz_budgets[b];
        id.len = strlen(id.data);

        /* the period each slot holds, and one it does not */
        for (i = 0; i < spend.header->slots && i < 64; i++) {
            slot = &spend.slots[i];
            fuzz_find(&spend, id, slot->period_start_ms);
        }

        fuzz_find(&spend, id, 0);
    }

    id.len = size % 32;
    id.data = (const char *) copy + size - id.len;
    fuzz_find(&spend, id, 1764547200000LL);

    for (i = 0; i < spend.header->slots && i < 64; i++) {
        slot = &spend.slots[i];
        fuzz_rate(&spend, slot->budget_hash, slot->period_start_ms);
    }

    fuzz_rate(&spend, sp_rate_hash("key", id), 1764547200000LL);

    free(copy);

    return 0;
}
