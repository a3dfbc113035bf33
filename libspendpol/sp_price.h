/*
 * Price resolution: which price a (organisation, provider, model) is
 * billed at. The one rule the module (over its snapshot), controld's
 * snapshot builder and the admin API's GET /pricing (over the rows it
 * loads) all apply, so what the API shows is what the proxy charges.
 *
 * The rule, first match wins:
 *   1. an alias (an Azure deployment name, PUT /org/aliases) prices as the
 *      model it runs, by steps 2-5 applied to that model;
 *   2. the organisation's price for the model;
 *   3. the organisation's price for the undated base model
 *      ("gpt-4o-2024-08-06" and "gpt-4o-20240806" -> "gpt-4o");
 *   4. the list price for the model;
 *   5. the list price for the undated base model;
 *   6. only when asked (SP_PRICE_WITH_FALLBACK): the organisation's
 *      fallback price for the provider, model SP_PRICE_FALLBACK_MODEL.
 * Each price in the steps is the one in effect (sp_price_effective()).
 * The model "*" itself finds the organisation's fallback only, and no
 * other name reaches it through the base-model step ("*-20240806").
 */

#ifndef SP_PRICE_H
#define SP_PRICE_H

#include "spendpol.h"


/*
 * The model name of an organisation's fallback price for a provider (set
 * with PUT /pricing/PROVIDER/ followed by "*"): what a model without a
 * price of its own is reserved and billed at. Only an organisation has
 * one: list prices never answer it.
 */
#define SP_PRICE_FALLBACK_MODEL  "*"

/* where the price was found */
enum {
    SP_PRICE_UNPRICED = 0,
    SP_PRICE_ORG,                 /* the organisation's own price */
    SP_PRICE_LIST,                /* the public list price */
    SP_PRICE_FALLBACK             /* the organisation's fallback "*" */
};

/* how the name was turned into the model priced */
#define SP_PRICE_VIA_ALIAS       0x01u   /* the model an alias runs */
#define SP_PRICE_VIA_BASE_MODEL  0x02u   /* the undated base model */

/* sp_price_resolve() options */
#define SP_PRICE_WITH_FALLBACK   0x01u

/*
 * Where the prices live: a snapshot (the module) or rows loaded from the
 * database (the admin API). find_price answers exactly (org_id, provider,
 * model), org_id of length 0 meaning the list price, with the price in
 * effect or NULL; find_alias answers the model an alias runs, length 0
 * when the name is no alias (find_alias may be NULL: no aliases).
 */
typedef struct {
    const void  *(*find_price)(void *data, sp_str_t org_id,
                               sp_str_t provider, sp_str_t model);
    sp_str_t     (*find_alias)(void *data, sp_str_t org_id,
                               sp_str_t provider, sp_str_t alias);
    void          *data;
} sp_price_lookup_t;

typedef struct {
    const void  *record;          /* find_price's answer, NULL: unpriced */
    sp_str_t     model;           /* the model name whose price it is */
    unsigned     source;          /* SP_PRICE_UNPRICED, _ORG, ... */
    unsigned     via;             /* SP_PRICE_VIA_* */
} sp_price_found_t;

/*
 * Applies the rule above to model; fills found and returns its record,
 * NULL when the model is unpriced (found->source SP_PRICE_UNPRICED).
 */
const void *sp_price_resolve(const sp_price_lookup_t *lookup,
    sp_str_t org_id, sp_str_t provider, sp_str_t model, unsigned options,
    sp_price_found_t *found);

/* "organization", "list", "fallback" or "unpriced" */
const char *sp_price_source_name(unsigned source);

/*
 * The model name without a trailing "-YYYY-MM-DD" or "-YYYYMMDD" (the
 * digits only: no calendar check); length 0 when it has none.
 */
sp_str_t sp_price_base_model(sp_str_t model);

/* model is exactly SP_PRICE_FALLBACK_MODEL */
int sp_price_is_fallback(sp_str_t model);

/*
 * The effective-date rule. Given one (organisation or list, provider,
 * model)'s dated prices newest first, with in_effect[i] non-zero when
 * price i's effective_from has passed (the database's clock decides):
 * the index of the price that applies, or -1. That is the newest in
 * effect; for a list price (is_list), else the newest at all, so a clock
 * behind the seed date does not leave models unpriced. An organisation's
 * price dated ahead waits for its time.
 */
long sp_price_effective(const unsigned char *in_effect, size_t n,
    int is_list);


#endif /* SP_PRICE_H */
