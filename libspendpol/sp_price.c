/*
 * Price resolution: the rule of sp_price.h, over any price lookup.
 */

#include <string.h>

#include "sp_price.h"


static int
sp_price_all_digits(const char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


sp_str_t
sp_price_base_model(sp_str_t model)
{
    sp_str_t     base;
    const char  *p;

    base.data = model.data;
    base.len = 0;

    if (model.len > 11) {
        p = model.data + model.len - 11;

        if (p[0] == '-' && sp_price_all_digits(p + 1, 4) && p[5] == '-'
            && sp_price_all_digits(p + 6, 2) && p[8] == '-'
            && sp_price_all_digits(p + 9, 2))
        {
            base.len = model.len - 11;
            return base;
        }
    }

    if (model.len > 9) {
        p = model.data + model.len - 9;

        if (p[0] == '-' && sp_price_all_digits(p + 1, 8)) {
            base.len = model.len - 9;
            return base;
        }
    }

    return base;
}


int
sp_price_is_fallback(sp_str_t model)
{
    return model.len == sizeof(SP_PRICE_FALLBACK_MODEL) - 1
           && memcmp(model.data, SP_PRICE_FALLBACK_MODEL, model.len) == 0;
}


/* steps 2-5 of the rule for one model name */
static const void *
sp_price_find_model(const sp_price_lookup_t *lookup, sp_str_t org_id,
    sp_str_t provider, sp_str_t model, sp_price_found_t *found)
{
    size_t       i;
    sp_str_t     none, base, owner, name;
    const void  *record;

    none.data = "";
    none.len = 0;

    base = sp_price_base_model(model);

    /*
     * "*-20240806" must not be priced as the fallback "*": the caller
     * would take a fallback for a real price (and not flag it).
     */
    if (sp_price_is_fallback(base)) {
        base.len = 0;
    }

    /* organisation exact, organisation base, list exact, list base */
    for (i = 0; i < 4; i++) {
        owner = (i < 2) ? org_id : none;
        name = (i % 2) ? base : model;

        if ((i < 2 && org_id.len == 0) || name.len == 0) {
            continue;
        }

        record = lookup->find_price(lookup->data, owner, provider, name);

        if (record != NULL) {
            found->record = record;
            found->model = name;
            found->source = (i < 2) ? SP_PRICE_ORG : SP_PRICE_LIST;
            found->via |= (i % 2) ? SP_PRICE_VIA_BASE_MODEL : 0;
            return record;
        }
    }

    return NULL;
}


const void *
sp_price_resolve(const sp_price_lookup_t *lookup, sp_str_t org_id,
    sp_str_t provider, sp_str_t model, unsigned options,
    sp_price_found_t *found)
{
    sp_str_t  runs, fallback;

    memset(found, 0, sizeof(*found));

    fallback.data = SP_PRICE_FALLBACK_MODEL;
    fallback.len = sizeof(SP_PRICE_FALLBACK_MODEL) - 1;

    if (model.len == 0) {
        return NULL;
    }

    /* a fallback is an organisation's; a list "*" is never applied */
    if (!sp_price_is_fallback(model)) {
        if (lookup->find_alias != NULL) {
            runs = lookup->find_alias(lookup->data, org_id, provider, model);

            if (runs.len > 0) {
                found->via = SP_PRICE_VIA_ALIAS;

                if (sp_price_find_model(lookup, org_id, provider, runs,
                                        found) != NULL)
                {
                    return found->record;
                }

                found->via = 0;
            }
        }

        if (sp_price_find_model(lookup, org_id, provider, model, found)
            != NULL)
        {
            return found->record;
        }

        if (!(options & SP_PRICE_WITH_FALLBACK)) {
            return NULL;
        }
    }

    if (org_id.len == 0) {
        return NULL;
    }

    found->record = lookup->find_price(lookup->data, org_id, provider,
                                       fallback);

    if (found->record != NULL) {
        found->model = fallback;
        found->source = SP_PRICE_FALLBACK;
    }

    return found->record;
}


const char *
sp_price_source_name(unsigned source)
{
    switch (source) {

    case SP_PRICE_ORG:
        return "organization";

    case SP_PRICE_LIST:
        return "list";

    case SP_PRICE_FALLBACK:
        return "fallback";

    default:
        return "unpriced";
    }
}


long
sp_price_effective(const unsigned char *in_effect, size_t n, int is_list)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (in_effect[i]) {
            return (long) i;
        }
    }

    return (is_list && n > 0) ? 0 : -1;
}
