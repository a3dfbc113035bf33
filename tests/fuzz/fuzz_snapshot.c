/*
 * The snapshot reader on hostile bytes: sp_snapshot_open, then every
 * lookup (keys, providers, prices, orgs, aliases, budgets, endpoints) and
 * sp_budget_covers.
 *
 * Input: a snapshot file. It is opened as is (the checksum refuses almost
 * every mutation), then once more with its length and checksum fixed up
 * the way the builder writes them, so that mutated tables, slots, records
 * and refs get past the checksum and into the lookups.
 *
 * Lookups use the names the seeds were built with, and the strings and
 * key hashes the file's own records point at, so they hit entries.
 */

#include "fuzz_common.h"
#include "sp_budget.h"
#include "sp_snapshot.h"


/* the largest record: a lookup below copies any of them */
#define FUZZ_MAX(a, b)   ((a) > (b) ? (a) : (b))
#define FUZZ_RECORD_MAX                                                       \
    FUZZ_MAX(FUZZ_MAX(sizeof(sp_snapshot_key_t),                              \
                      sizeof(sp_snapshot_budget_t)),                          \
             FUZZ_MAX(FUZZ_MAX(sizeof(sp_snapshot_price_t),                   \
                               sizeof(sp_snapshot_provider_t)),               \
                      FUZZ_MAX(FUZZ_MAX(sizeof(sp_snapshot_alias_t),          \
                                        sizeof(sp_snapshot_endpoint_t)),      \
                               sizeof(sp_snapshot_cache_purge_t))))


static sp_str_t
fuzz_str(const char *s)
{
    sp_str_t  str;

    str.data = s;
    str.len = strlen(s);

    return str;
}


static unsigned
fuzz_ref(const sp_snapshot_t *s, sp_snapshot_ref_t ref)
{
    sp_str_t  str;

    str = sp_snapshot_str(s, ref);

    FUZZ_CHECK(str.len == 0
               || (str.data >= (const char *) s->base
                   && str.data + str.len <= (const char *) s->base
                                            + s->len));

    return fuzz_touch(str.data, str.len);
}


typedef struct {
    const sp_snapshot_t  *snap;
    sp_str_t              provider;
    sp_str_t              model;
    unsigned              sum;
    int                   stop_after;
} fuzz_visit_t;


static int
fuzz_visit_budget(const sp_snapshot_budget_t *b, void *arg)
{
    fuzz_visit_t  *v = arg;

    v->sum += fuzz_ref(v->snap, b->budget_id);
    v->sum += fuzz_ref(v->snap, b->org_id);
    v->sum += fuzz_ref(v->snap, b->scope_value);
    v->sum += fuzz_ref(v->snap, b->provider);
    v->sum += fuzz_ref(v->snap, b->model);
    v->sum += (unsigned) sp_budget_covers(v->snap, b, v->provider, v->model,
                                          1764230000000LL);
    v->sum += (unsigned) sp_budget_covers(v->snap, b, v->provider, v->model,
                                          b->period_start_ms);

    return --v->stop_after == 0;
}


static int
fuzz_visit_endpoint(const sp_snapshot_endpoint_t *e, void *arg)
{
    fuzz_visit_t  *v = arg;

    v->sum += fuzz_ref(v->snap, e->org_id);
    v->sum += fuzz_ref(v->snap, e->provider);
    v->sum += fuzz_ref(v->snap, e->method);
    v->sum += fuzz_ref(v->snap, e->pattern);

    return --v->stop_after == 0;
}


static const char  *fuzz_orgs[] = { "org_1", "org_2", "", NULL };
static const char  *fuzz_providers[] = {
    "openai", "anthropic", "google", "azure", "cohere", "mistral", "", NULL
};
static const char  *fuzz_models[] = {
    "gpt-4o", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022",
    "gemini-2.0-flash", "my-gpt4o-deployment", "*", "*-20240806", "", NULL
};


static void
fuzz_lookups(const sp_snapshot_t *s, sp_str_t org, sp_str_t provider,
    sp_str_t model, sp_str_t value)
{
    const sp_snapshot_provider_t  *pr;
    const sp_snapshot_price_t     *price;
    const sp_snapshot_org_t       *o;
    const sp_snapshot_alias_t     *alias;
    fuzz_visit_t                   visit;
    unsigned                       sum;
    uint32_t                       scope;

    sum = 0;

    pr = sp_snapshot_find_provider(s, org, provider);

    if (pr) {
        sum += fuzz_ref(s, pr->org_id) + fuzz_ref(s, pr->provider)
               + fuzz_ref(s, pr->base_url) + fuzz_ref(s, pr->api_key);
    }

    price = sp_snapshot_find_price(s, org, provider, model);

    if (price) {
        sum += fuzz_ref(s, price->org_id) + fuzz_ref(s, price->provider)
               + fuzz_ref(s, price->model)
               + fuzz_touch(&price->price, sizeof(price->price));
    }

    o = sp_snapshot_find_org(s, org);

    if (o) {
        sum += fuzz_ref(s, o->org_id) + o->flags + o->rpm_limit
               + o->tpm_limit;
    }

    {
        sp_cache_config_t  cache;

        sp_snapshot_cache_config(s, org, &cache);
        sum += cache.mode + cache.scope + cache.ttl_s
               + cache.max_entry_bytes + cache.only_deterministic;
        sum += (size_t) sp_snapshot_cache_purged_ms(s, org, provider, model);
    }

    alias = sp_snapshot_find_alias(s, org, provider, model);

    if (alias) {
        sum += fuzz_ref(s, alias->org_id) + fuzz_ref(s, alias->provider)
               + fuzz_ref(s, alias->alias) + fuzz_ref(s, alias->model);
    }

    /* the v7 settings, by the name the module asks for and by any */
    {
        sp_str_t                      names[2];
        size_t                        n;
        const sp_snapshot_setting_t  *setting;

        names[0].data = SP_SETTING_UPSTREAM_ALLOW;
        names[0].len = sizeof(SP_SETTING_UPSTREAM_ALLOW) - 1;
        names[1] = org;

        for (n = 0; n < 2; n++) {
            setting = sp_snapshot_find_setting(s, names[n]);

            if (setting) {
                sum += fuzz_ref(s, setting->name)
                       + fuzz_ref(s, setting->value);
            }
        }
    }

    /* every scope, and one past the last */
    for (scope = 0; scope <= SP_BUDGET_SCOPE_COUNT; scope++) {
        visit.snap = s;
        visit.provider = provider;
        visit.model = model;
        visit.sum = 0;
        visit.stop_after = 1 + (int) (value.len % 3);

        (void) sp_snapshot_foreach_budget(s, org, scope, value,
                                          fuzz_visit_budget, &visit);
        sum += visit.sum;
    }

    visit.snap = s;
    visit.sum = 0;
    visit.stop_after = 1 + (int) (value.len % 3);
    (void) sp_snapshot_foreach_endpoint(s, org, provider,
                                        fuzz_visit_endpoint, &visit);
    sum += visit.sum;

    (void) sum;
}


static void
fuzz_open_and_look(const uint8_t *data, size_t size)
{
    const sp_snapshot_header_t  *h;
    const sp_snapshot_slot_t    *slots;
    const sp_snapshot_key_t     *key;
    sp_snapshot_t                s;
    sp_snapshot_price_t          price;
    sp_snapshot_provider_t       provider;
    sp_snapshot_alias_t          alias;
    sp_snapshot_budget_t         budget;
    sp_snapshot_endpoint_t       endpoint;
    sp_snapshot_cache_purge_t    purge;
    uint64_t                     i, n, rec;
    char                         err[256];
    int                          a, b, c, t;

    err[0] = '\0';

    if (sp_snapshot_open(&s, data, size, err, sizeof(err)) != SP_OK) {
        FUZZ_CHECK(err[0] != '\0');
        return;
    }

    h = s.header;

    for (a = 0; fuzz_orgs[a]; a++) {
        for (b = 0; fuzz_providers[b]; b++) {
            for (c = 0; fuzz_models[c]; c++) {
                fuzz_lookups(&s, fuzz_str(fuzz_orgs[a]),
                             fuzz_str(fuzz_providers[b]),
                             fuzz_str(fuzz_models[c]),
                             fuzz_str(fuzz_models[c]));
            }
        }
    }

    /* what the file's own records name */
    for (t = 0; t < SP_TABLE_COUNT; t++) {
        n = h->tables[t].slots;

        if (n == 0) {
            /* an empty table's offset is not checked: do not follow it */
            continue;
        }

        slots = (const sp_snapshot_slot_t *) (s.base + h->tables[t].offset);

        for (i = 0; i < n && i < 256; i++) {
            rec = slots[i].record;

            if (rec == 0 || rec % 8 != 0 || rec > size
                || size - rec < FUZZ_RECORD_MAX)
            {
                continue;
            }

            switch (t) {

            case SP_TABLE_KEYS:
                key = sp_snapshot_find_key(&s, s.base + rec);

                if (key) {
                    (void) (fuzz_ref(&s, key->key_id)
                            + fuzz_ref(&s, key->org_id)
                            + fuzz_ref(&s, key->name)
                            + fuzz_ref(&s, key->department)
                            + fuzz_ref(&s, key->project)
                            + fuzz_ref(&s, key->agent_id)
                            + key->scopes + key->flags + key->rpm_limit
                            + key->tpm_limit);
                }

                break;

            case SP_TABLE_PROVIDERS:
                memcpy(&provider, s.base + rec, sizeof(provider));
                fuzz_lookups(&s, sp_snapshot_str(&s, provider.org_id),
                             sp_snapshot_str(&s, provider.provider),
                             sp_snapshot_str(&s, provider.base_url),
                             sp_snapshot_str(&s, provider.api_key));
                break;

            case SP_TABLE_PRICES:
                memcpy(&price, s.base + rec, sizeof(price));
                fuzz_lookups(&s, sp_snapshot_str(&s, price.org_id),
                             sp_snapshot_str(&s, price.provider),
                             sp_snapshot_str(&s, price.model),
                             sp_snapshot_str(&s, price.model));
                break;

            case SP_TABLE_ALIASES:
                memcpy(&alias, s.base + rec, sizeof(alias));
                fuzz_lookups(&s, sp_snapshot_str(&s, alias.org_id),
                             sp_snapshot_str(&s, alias.provider),
                             sp_snapshot_str(&s, alias.alias),
                             sp_snapshot_str(&s, alias.model));
                break;

            case SP_TABLE_BUDGETS:
                memcpy(&budget, s.base + rec, sizeof(budget));
                fuzz_lookups(&s, sp_snapshot_str(&s, budget.org_id),
                             sp_snapshot_str(&s, budget.provider),
                             sp_snapshot_str(&s, budget.model),
                             sp_snapshot_str(&s, budget.scope_value));
                break;

            case SP_TABLE_ENDPOINTS:
                memcpy(&endpoint, s.base + rec, sizeof(endpoint));
                fuzz_lookups(&s, sp_snapshot_str(&s, endpoint.org_id),
                             sp_snapshot_str(&s, endpoint.provider),
                             sp_snapshot_str(&s, endpoint.pattern),
                             sp_snapshot_str(&s, endpoint.method));
                break;

            case SP_TABLE_CACHE_PURGES:
                memcpy(&purge, s.base + rec, sizeof(purge));
                fuzz_lookups(&s, sp_snapshot_str(&s, purge.org_id),
                             sp_snapshot_str(&s, purge.provider),
                             sp_snapshot_str(&s, purge.model),
                             sp_snapshot_str(&s, purge.model));
                break;

            default: /* SP_TABLE_ORGS, SP_TABLE_SETTINGS */
                break;
            }
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_snapshot_header_t  *h;
    uint8_t               *copy;

    copy = fuzz_dup(data, size);
    fuzz_open_and_look(copy, size);

    if (size >= sizeof(sp_snapshot_header_t)) {
        h = (sp_snapshot_header_t *) copy;

        if (h->header_size >= sizeof(sp_snapshot_header_t)
            && h->header_size <= size)
        {
            h->length = size;
            h->checksum = sp_hash64(copy + h->header_size,
                                    size - h->header_size, h->generation);
            fuzz_open_and_look(copy, size);
        }
    }

    free(copy);

    return 0;
}
