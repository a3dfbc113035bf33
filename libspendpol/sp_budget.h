/*
 * Budgets: which budgets cover a request, what it may cost at worst, and
 * the spend file through which controld tells each node what was spent.
 *
 * Spend: a budget's effective spend on a node is
 *
 *     global   (every node's spend controld has ingested, this period)
 *   + pending  (this node's settled spend not yet ingested)
 *   + reserved (this node's in-flight worst cases)
 *
 * where pending = settled since the node's epoch (its nginx shared zone's
 * creation) - what controld ingested of this node's journal lines of that
 * epoch. Other nodes' settled-but-not-ingested spend and in-flight
 * reservations are the overshoot bound across nodes.
 */

#ifndef SP_BUDGET_H
#define SP_BUDGET_H

#include "sp_snapshot.h"


/*
 * 1 when the budget covers a call of provider/model at now_ms: its
 * provider and model narrowing (a model narrowing also covers the dated
 * names of that model, "gpt-4o" covers "gpt-4o-2024-08-06") and its
 * period [start, end).
 */
int sp_budget_covers(const sp_snapshot_t *s, const sp_snapshot_budget_t *b,
    sp_str_t provider, sp_str_t model, int64_t now_ms);

/*
 * 1 when a budget's model narrowing covers model: the same name, or that
 * name and a date ("gpt-4o" covers "gpt-4o-2024-08-06" and
 * "gpt-4o-20240806", not "gpt-4o-mini"); an empty narrowing covers all.
 * SQL repeats it as spendpol_model_covers (a test checks they agree).
 */
int sp_budget_model_covers(sp_str_t narrowing, sp_str_t model);

/*
 * The most a call can cost: every prompt token uncached at the input
 * price, and max_output_tokens at the output price. SP_ERROR on overflow.
 */
int sp_cost_worst_case(const sp_price_t *price, int64_t prompt_tokens,
    int64_t max_output_tokens, int64_t *cost);


/* ---- the spend file ------------------------------------------------- */

#define SP_SPEND_MAGIC      "SPSPND01"
#define SP_SPEND_VERSION    2
#define SP_SPEND_FILE       "spend.slots"

/* header flags */
#define SP_SPEND_LEASES     0x1     /* controld grants leases (sp_lease.h) */

/*
 * Version 2 (issue 18): 64-byte header, 128-byte slots carrying this
 * node's lease. Module and controld are built from this header; each
 * refuses a file of another version (sp_spend_open).
 */
typedef struct {
    char      magic[8];
    uint32_t  version;
    uint32_t  slots;            /* power of two */
    uint64_t  generation;       /* bumped on each rewrite of the layout */
    uint64_t  flags;            /* SP_SPEND_LEASES; atomic */
    int64_t   drained_ms;       /* journal lines written before it are in
                                   the values (lease checks); atomic */
    int64_t   pad[3];
} sp_spend_header_t;

/*
 * One budget's spend. controld rewrites the values in place with 8-byte
 * atomic stores; readers load each field atomically and check that
 * budget_hash and period_start_ms are those they expect (sp_spend_read).
 * controld stores node_all_nano before node_nano, readers load node_nano
 * first: a reader that mixes two rounds can only count too much.
 */
typedef struct {
    uint64_t  budget_hash;      /* sp_hash64 of the budget id, 0 = empty */
    int64_t   period_start_ms;
    int64_t   global_nano;      /* all nodes, ingested */
    int64_t   epoch;            /* the node epoch node_nano counts */
    int64_t   node_nano;        /* this node's lines of that epoch */
    int64_t   updated_ms;
    int64_t   node_all_nano;    /* this node's lines of every epoch */
    int64_t   lease_nano;       /* the most this node may settle and hold
                                   in the period (a ceiling, not a delta) */
    int64_t   lease_expires_ms; /* no admission against it from then on */
    int64_t   left_nano;        /* what the cluster can still grant */
    int64_t   live_nodes;       /* nodes holding a live lease */
    uint64_t  answered_seq;     /* the last top-up ask answered */
    int64_t   pad[4];
} sp_spend_slot_t;

/*
 * Rate limit counts from other nodes, in slots of the same table. For a
 * subject (a key, agent or organisation: sp_rate_hash()) controld stores
 * what every other node's journal counted in the current minute window
 * (summed from Redis); a node adds it to its own counts.
 */
typedef struct {
    uint64_t  subject_hash;     /* sp_rate_hash(), 0 = empty */
    int64_t   window_start_ms;
    int64_t   requests;         /* other nodes, in this window */
    int64_t   tokens;
    int64_t   updated_ms;
    int64_t   pad[11];
} sp_rate_slot_t;

/* what a node reads of one budget's slot (sp_spend_read) */
typedef struct {
    int64_t   global_nano;      /* all nodes, ingested */
    int64_t   epoch_nano;       /* this node's lines of the reader's epoch */
    int64_t   node_all_nano;    /* this node's lines of every epoch */
    int64_t   lease_nano;
    int64_t   lease_expires_ms;
    int64_t   left_nano;
    int64_t   drained_ms;       /* from the header */
    const sp_spend_slot_t  *slot;   /* the slot read, when found */
    unsigned  found:1;          /* a slot of this budget and period */
    unsigned  leases:1;         /* SP_SPEND_LEASES */
} sp_spend_view_t;

typedef struct {
    const uint8_t            *base;
    size_t                    len;
    const sp_spend_header_t  *header;
    const sp_spend_slot_t    *slots;
} sp_spend_t;

/* validates a mapped spend file; SP_ERROR with a reason in err */
int sp_spend_open(sp_spend_t *spend, const void *data, size_t len,
    char *err, size_t errlen);

/*
 * The slot of a budget (by id) for the period starting at
 * period_start_ms, or NULL when controld has published none yet.
 */
const sp_spend_slot_t *sp_spend_find(const sp_spend_t *spend,
    sp_str_t budget_id, int64_t period_start_ms);

/*
 * The other nodes' counts of a rate limit subject for the window starting
 * at window_start_ms, or NULL when controld has published none.
 */
const sp_rate_slot_t *sp_rate_find(const sp_spend_t *spend, uint64_t hash,
    int64_t window_start_ms);

/*
 * A budget's values (by sp_budget_hash) for the period starting at
 * period_start_ms, as seen by the node whose zone epoch is epoch; all 0
 * (found 0) when controld has published none, or moved the slot to
 * another period while it was read. spend may be NULL (no file).
 */
void sp_spend_read(const sp_spend_t *spend, uint64_t hash,
    int64_t period_start_ms, int64_t epoch, sp_spend_view_t *view);

/* the file size for a number of slots (rounded up to a power of two) */
size_t sp_spend_size(uint32_t slots);

/*
 * controld: lays an empty spend file out in data (sp_spend_size bytes)
 * and returns the slot a budget takes (open addressing by its hash).
 */
void sp_spend_init(void *data, uint32_t slots, uint64_t generation);
sp_spend_slot_t *sp_spend_slot(void *data, sp_str_t budget_id);
sp_rate_slot_t *sp_rate_slot(void *data, uint64_t hash);

uint64_t sp_budget_hash(sp_str_t budget_id);

/*
 * The open addressing of the spend file and the ask file (sp_lease.h): n
 * slots (a power of two) of stride bytes, each starting with a 64-bit
 * hash (0: empty) and a 64-bit start (a period or window). take: the one
 * writer's slot of hash, taken when absent, NULL when full; find: a
 * reader's slot of hash starting at start_ms, or NULL.
 */
void *sp_slots_take(void *slots, uint32_t n, size_t stride, uint64_t hash);
const void *sp_slots_find(const void *slots, uint32_t n, size_t stride,
    uint64_t hash, int64_t start_ms);

/*
 * Validates a mapped slot file whose header (header_size bytes) starts
 * with magic[8], a uint32_t version and a uint32_t slot count; what names
 * the file in the reason written to err. SP_OK or SP_ERROR.
 */
int sp_slots_open(const void *data, size_t len, const char *magic,
    uint32_t version, size_t header_size, size_t stride, const char *what,
    char *err, size_t errlen);

/* a rate limit subject: kind "key", "agent" or "org", and its id */
uint64_t sp_rate_hash(const char *kind, sp_str_t id);


#endif /* SP_BUDGET_H */
