/*
 * Policy snapshots: an offset-based file that nginx workers map read-only
 * and use in place. See sp_snapshot.h for the layout.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sp_snapshot.h"


#define SP_ALIGN8(n)  (((n) + 7) & ~(size_t) 7)

/* strings are joined with a separator byte no id or model contains */
#define SP_LOOKUP_SEPARATOR  '\x1f'
#define SP_LOOKUP_MAX        1024


typedef struct {
    uint64_t     hash;
    void        *record;       /* malloc()ed input copy */
    size_t       size;         /* record size in the file */
} sp_snapshot_entry_t;

typedef struct {
    sp_snapshot_entry_t  *entries;
    size_t                count;
    size_t                capacity;
} sp_snapshot_list_t;

struct sp_snapshot_builder_s {
    uint64_t             generation;
    sp_snapshot_list_t   lists[SP_TABLE_COUNT];
};

/* the layout pass writes into out at pos */
typedef struct {
    uint8_t   *out;
    size_t     pos;
    size_t     len;
} sp_snapshot_writer_t;


static char *
sp_strdup0(const char *s)
{
    return strdup(s ? s : "");
}


void
sp_errorf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


/* hash of up to three strings joined by SP_LOOKUP_SEPARATOR */
static uint64_t
sp_snapshot_lookup_hash(sp_str_t a, sp_str_t b, sp_str_t c, int parts)
{
    char    buf[SP_LOOKUP_MAX];
    size_t  n;

    n = 0;

/* n may be sizeof(buf) after a separator: do not compute sizeof - n - 1 */
#define SP_APPEND(s)                                                          \
    if ((s).len >= sizeof(buf) - n) {                                         \
        return sp_hash64((s).data, (s).len, n);                               \
    }                                                                         \
    memcpy(buf + n, (s).data, (s).len);                                       \
    n += (s).len;

    SP_APPEND(a);

    if (parts > 1) {
        buf[n++] = SP_LOOKUP_SEPARATOR;
        SP_APPEND(b);
    }

    if (parts > 2) {
        buf[n++] = SP_LOOKUP_SEPARATOR;
        SP_APPEND(c);
    }

#undef SP_APPEND

    return sp_hash64(buf, n, 0);
}


static sp_str_t
sp_str0(const char *s)
{
    sp_str_t  str;

    str.data = s ? s : "";
    str.len = strlen(str.data);

    return str;
}


sp_snapshot_builder_t *
sp_snapshot_builder_new(uint64_t generation)
{
    sp_snapshot_builder_t  *b;

    b = calloc(1, sizeof(sp_snapshot_builder_t));
    if (b == NULL) {
        return NULL;
    }

    b->generation = generation;

    return b;
}


static void
sp_snapshot_free_record(int table, void *record)
{
    sp_snapshot_key_in_t       *key;
    sp_snapshot_provider_in_t  *provider;
    sp_snapshot_price_in_t     *price;
    sp_snapshot_alias_in_t     *alias;
    sp_snapshot_budget_in_t    *budget;

    if (record == NULL) {
        return;
    }

    switch (table) {

    case SP_TABLE_KEYS:
        key = record;
        free((char *) key->key_id);
        free((char *) key->org_id);
        free((char *) key->name);
        free((char *) key->department);
        free((char *) key->project);
        free((char *) key->agent_id);
        break;

    case SP_TABLE_PROVIDERS:
        provider = record;
        free((char *) provider->org_id);
        free((char *) provider->provider);
        free((char *) provider->base_url);
        if (provider->api_key) {
            /* a credential does not linger in freed memory */
            memset((char *) provider->api_key, 0, strlen(provider->api_key));
        }
        free((char *) provider->api_key);
        break;

    case SP_TABLE_PRICES:
        price = record;
        free((char *) price->org_id);
        free((char *) price->provider);
        free((char *) price->model);
        break;

    case SP_TABLE_ORGS:
        free((char *) ((sp_snapshot_org_in_t *) record)->org_id);
        break;

    case SP_TABLE_ALIASES:
        alias = record;
        free((char *) alias->org_id);
        free((char *) alias->provider);
        free((char *) alias->alias);
        free((char *) alias->model);
        break;

    case SP_TABLE_BUDGETS:
        budget = record;
        free((char *) budget->budget_id);
        free((char *) budget->org_id);
        free((char *) budget->scope_value);
        free((char *) budget->provider);
        free((char *) budget->model);
        break;
    }

    free(record);
}


void
sp_snapshot_builder_free(sp_snapshot_builder_t *b)
{
    size_t  i;
    int     t;

    if (b == NULL) {
        return;
    }

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        for (i = 0; i < b->lists[t].count; i++) {
            sp_snapshot_free_record(t, b->lists[t].entries[i].record);
        }

        free(b->lists[t].entries);
    }

    free(b);
}


static int
sp_snapshot_list_push(sp_snapshot_list_t *list, uint64_t hash, void *record,
    size_t size)
{
    sp_snapshot_entry_t  *entries;
    size_t                capacity;

    if (list->count == list->capacity) {
        capacity = list->capacity ? list->capacity * 2 : 64;

        entries = realloc(list->entries,
                          capacity * sizeof(sp_snapshot_entry_t));
        if (entries == NULL) {
            return SP_ERROR;
        }

        list->entries = entries;
        list->capacity = capacity;
    }

    list->entries[list->count].hash = hash;
    list->entries[list->count].record = record;
    list->entries[list->count].size = size;
    list->count++;

    return SP_OK;
}


int
sp_snapshot_add_key(sp_snapshot_builder_t *b, const sp_snapshot_key_in_t *in)
{
    sp_snapshot_key_in_t  *key;
    uint64_t               hash;
    size_t                 size;

    key = calloc(1, sizeof(sp_snapshot_key_in_t));
    if (key == NULL) {
        return SP_ERROR;
    }

    memcpy(key->key_hash, in->key_hash, SP_KEY_HASH_LEN);
    key->scopes = in->scopes;
    key->flags = in->flags;
    key->rpm_limit = in->rpm_limit;
    key->tpm_limit = in->tpm_limit;
    key->agent_rpm_limit = in->agent_rpm_limit;
    key->agent_tpm_limit = in->agent_tpm_limit;
    key->key_id = sp_strdup0(in->key_id);
    key->org_id = sp_strdup0(in->org_id);
    key->name = sp_strdup0(in->name);
    key->department = sp_strdup0(in->department);
    key->project = sp_strdup0(in->project);
    key->agent_id = sp_strdup0(in->agent_id);

    if (key->key_id == NULL || key->org_id == NULL || key->name == NULL
        || key->department == NULL || key->project == NULL
        || key->agent_id == NULL)
    {
        sp_snapshot_free_record(SP_TABLE_KEYS, key);
        return SP_ERROR;
    }

    memcpy(&hash, in->key_hash, sizeof(hash));

    size = sizeof(sp_snapshot_key_t) + strlen(key->key_id)
           + strlen(key->org_id) + strlen(key->name)
           + strlen(key->department) + strlen(key->project)
           + strlen(key->agent_id);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_KEYS], hash, key, size)
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_KEYS, key);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_add_provider(sp_snapshot_builder_t *b,
    const sp_snapshot_provider_in_t *in)
{
    sp_snapshot_provider_in_t  *provider;
    uint64_t                    hash;
    size_t                      size;

    provider = calloc(1, sizeof(sp_snapshot_provider_in_t));
    if (provider == NULL) {
        return SP_ERROR;
    }

    provider->org_id = sp_strdup0(in->org_id);
    provider->provider = sp_strdup0(in->provider);
    provider->base_url = sp_strdup0(in->base_url);
    provider->api_key = sp_strdup0(in->api_key);

    if (provider->org_id == NULL || provider->provider == NULL
        || provider->base_url == NULL || provider->api_key == NULL)
    {
        sp_snapshot_free_record(SP_TABLE_PROVIDERS, provider);
        return SP_ERROR;
    }

    hash = sp_snapshot_lookup_hash(sp_str0(provider->org_id),
                                   sp_str0(provider->provider),
                                   sp_str0(NULL), 2);

    size = sizeof(sp_snapshot_provider_t) + strlen(provider->org_id)
           + strlen(provider->provider) + strlen(provider->base_url)
           + strlen(provider->api_key);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_PROVIDERS], hash, provider,
                              size)
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_PROVIDERS, provider);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_add_price(sp_snapshot_builder_t *b,
    const sp_snapshot_price_in_t *in)
{
    sp_snapshot_price_in_t  *price;
    uint64_t                 hash;
    size_t                   size;

    price = calloc(1, sizeof(sp_snapshot_price_in_t));
    if (price == NULL) {
        return SP_ERROR;
    }

    price->price = in->price;
    price->max_output_tokens = in->max_output_tokens;
    price->org_id = sp_strdup0(in->org_id);
    price->provider = sp_strdup0(in->provider);
    price->model = sp_strdup0(in->model);

    if (price->org_id == NULL || price->provider == NULL
        || price->model == NULL)
    {
        sp_snapshot_free_record(SP_TABLE_PRICES, price);
        return SP_ERROR;
    }

    hash = sp_snapshot_lookup_hash(sp_str0(price->org_id),
                                   sp_str0(price->provider),
                                   sp_str0(price->model), 3);

    size = sizeof(sp_snapshot_price_t) + strlen(price->org_id)
           + strlen(price->provider) + strlen(price->model);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_PRICES], hash, price, size)
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_PRICES, price);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_add_org(sp_snapshot_builder_t *b, const sp_snapshot_org_in_t *in)
{
    sp_snapshot_org_in_t  *org;
    uint64_t               hash;

    org = calloc(1, sizeof(sp_snapshot_org_in_t));
    if (org == NULL) {
        return SP_ERROR;
    }

    org->flags = in->flags;
    org->rpm_limit = in->rpm_limit;
    org->tpm_limit = in->tpm_limit;
    org->org_id = sp_strdup0(in->org_id);

    if (org->org_id == NULL) {
        sp_snapshot_free_record(SP_TABLE_ORGS, org);
        return SP_ERROR;
    }

    hash = sp_snapshot_lookup_hash(sp_str0(org->org_id), sp_str0(NULL),
                                   sp_str0(NULL), 1);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_ORGS], hash, org,
                              sizeof(sp_snapshot_org_t)
                              + strlen(org->org_id))
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_ORGS, org);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_add_alias(sp_snapshot_builder_t *b,
    const sp_snapshot_alias_in_t *in)
{
    sp_snapshot_alias_in_t  *alias;
    uint64_t                 hash;
    size_t                   size;

    alias = calloc(1, sizeof(sp_snapshot_alias_in_t));
    if (alias == NULL) {
        return SP_ERROR;
    }

    alias->org_id = sp_strdup0(in->org_id);
    alias->provider = sp_strdup0(in->provider);
    alias->alias = sp_strdup0(in->alias);
    alias->model = sp_strdup0(in->model);

    if (alias->org_id == NULL || alias->provider == NULL
        || alias->alias == NULL || alias->model == NULL)
    {
        sp_snapshot_free_record(SP_TABLE_ALIASES, alias);
        return SP_ERROR;
    }

    hash = sp_snapshot_lookup_hash(sp_str0(alias->org_id),
                                   sp_str0(alias->provider),
                                   sp_str0(alias->alias), 3);

    size = sizeof(sp_snapshot_alias_t) + strlen(alias->org_id)
           + strlen(alias->provider) + strlen(alias->alias)
           + strlen(alias->model);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_ALIASES], hash, alias, size)
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_ALIASES, alias);
        return SP_ERROR;
    }

    return SP_OK;
}


/* the lookup key of a budget: organisation, scope digit, scope value */
static uint64_t
sp_snapshot_budget_hash(sp_str_t org_id, uint32_t scope, sp_str_t value)
{
    char      digit;
    sp_str_t  scope_str;

    digit = (char) ('0' + scope % 10);
    scope_str.data = &digit;
    scope_str.len = 1;

    return sp_snapshot_lookup_hash(org_id, scope_str, value, 3);
}


int
sp_snapshot_add_budget(sp_snapshot_builder_t *b,
    const sp_snapshot_budget_in_t *in)
{
    sp_snapshot_budget_in_t  *budget;
    uint64_t                  hash;
    size_t                    size;

    if (in->scope >= SP_BUDGET_SCOPE_COUNT) {
        return SP_ERROR;
    }

    budget = calloc(1, sizeof(sp_snapshot_budget_in_t));
    if (budget == NULL) {
        return SP_ERROR;
    }

    *budget = *in;
    budget->budget_id = sp_strdup0(in->budget_id);
    budget->org_id = sp_strdup0(in->org_id);
    budget->scope_value = sp_strdup0(in->scope_value);
    budget->provider = sp_strdup0(in->provider);
    budget->model = sp_strdup0(in->model);

    if (budget->budget_id == NULL || budget->org_id == NULL
        || budget->scope_value == NULL || budget->provider == NULL
        || budget->model == NULL)
    {
        sp_snapshot_free_record(SP_TABLE_BUDGETS, budget);
        return SP_ERROR;
    }

    hash = sp_snapshot_budget_hash(sp_str0(budget->org_id), budget->scope,
                                   sp_str0(budget->scope_value));

    size = sizeof(sp_snapshot_budget_t) + strlen(budget->budget_id)
           + strlen(budget->org_id) + strlen(budget->scope_value)
           + strlen(budget->provider) + strlen(budget->model);

    if (sp_snapshot_list_push(&b->lists[SP_TABLE_BUDGETS], hash, budget,
                              size)
        != SP_OK)
    {
        sp_snapshot_free_record(SP_TABLE_BUDGETS, budget);
        return SP_ERROR;
    }

    return SP_OK;
}


static sp_snapshot_ref_t
sp_snapshot_put_string(sp_snapshot_writer_t *w, const char *s)
{
    sp_snapshot_ref_t  ref;
    size_t             len;

    len = strlen(s);

    ref.offset = (uint32_t) w->pos;
    ref.len = (uint32_t) len;

    memcpy(w->out + w->pos, s, len);
    w->pos += len;

    return ref;
}


/* writes a record's fixed part at w->pos and its strings after it */
static size_t
sp_snapshot_put_record(sp_snapshot_writer_t *w, int table, void *record)
{
    size_t                      at;
    sp_snapshot_key_t          *key;
    sp_snapshot_key_in_t       *key_in;
    sp_snapshot_provider_t     *provider;
    sp_snapshot_provider_in_t  *provider_in;
    sp_snapshot_price_t        *price;
    sp_snapshot_price_in_t     *price_in;
    sp_snapshot_org_t          *org;
    sp_snapshot_org_in_t       *org_in;
    sp_snapshot_alias_t        *alias;
    sp_snapshot_alias_in_t     *alias_in;
    sp_snapshot_budget_t       *budget;
    sp_snapshot_budget_in_t    *budget_in;

    w->pos = SP_ALIGN8(w->pos);
    at = w->pos;

    switch (table) {

    case SP_TABLE_KEYS:
        key_in = record;
        key = (sp_snapshot_key_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_key_t);

        memcpy(key->key_hash, key_in->key_hash, SP_KEY_HASH_LEN);
        key->scopes = key_in->scopes;
        key->flags = key_in->flags;
        key->rpm_limit = key_in->rpm_limit;
        key->tpm_limit = key_in->tpm_limit;
        key->agent_rpm_limit = key_in->agent_rpm_limit;
        key->agent_tpm_limit = key_in->agent_tpm_limit;
        key->key_id = sp_snapshot_put_string(w, key_in->key_id);
        key->org_id = sp_snapshot_put_string(w, key_in->org_id);
        key->name = sp_snapshot_put_string(w, key_in->name);
        key->department = sp_snapshot_put_string(w, key_in->department);
        key->project = sp_snapshot_put_string(w, key_in->project);
        key->agent_id = sp_snapshot_put_string(w, key_in->agent_id);
        break;

    case SP_TABLE_PROVIDERS:
        provider_in = record;
        provider = (sp_snapshot_provider_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_provider_t);

        provider->org_id = sp_snapshot_put_string(w, provider_in->org_id);
        provider->provider = sp_snapshot_put_string(w, provider_in->provider);
        provider->base_url = sp_snapshot_put_string(w, provider_in->base_url);
        provider->api_key = sp_snapshot_put_string(w, provider_in->api_key);
        break;

    case SP_TABLE_ORGS:
        org_in = record;
        org = (sp_snapshot_org_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_org_t);

        org->flags = org_in->flags;
        org->rpm_limit = org_in->rpm_limit;
        org->tpm_limit = org_in->tpm_limit;
        org->reserved = 0;
        org->org_id = sp_snapshot_put_string(w, org_in->org_id);
        break;

    case SP_TABLE_ALIASES:
        alias_in = record;
        alias = (sp_snapshot_alias_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_alias_t);

        alias->org_id = sp_snapshot_put_string(w, alias_in->org_id);
        alias->provider = sp_snapshot_put_string(w, alias_in->provider);
        alias->alias = sp_snapshot_put_string(w, alias_in->alias);
        alias->model = sp_snapshot_put_string(w, alias_in->model);
        break;

    case SP_TABLE_BUDGETS:
        budget_in = record;
        budget = (sp_snapshot_budget_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_budget_t);

        budget->scope = budget_in->scope;
        budget->action = budget_in->action;
        budget->limit_nano = budget_in->limit_nano;
        budget->period_start_ms = budget_in->period_start_ms;
        budget->period_end_ms = budget_in->period_end_ms;
        budget->budget_id = sp_snapshot_put_string(w, budget_in->budget_id);
        budget->org_id = sp_snapshot_put_string(w, budget_in->org_id);
        budget->scope_value = sp_snapshot_put_string(w,
                                                     budget_in->scope_value);
        budget->provider = sp_snapshot_put_string(w, budget_in->provider);
        budget->model = sp_snapshot_put_string(w, budget_in->model);
        break;

    default: /* SP_TABLE_PRICES */
        price_in = record;
        price = (sp_snapshot_price_t *) (w->out + at);
        w->pos += sizeof(sp_snapshot_price_t);

        price->price = price_in->price;
        price->max_output_tokens = price_in->max_output_tokens;
        price->org_id = sp_snapshot_put_string(w, price_in->org_id);
        price->provider = sp_snapshot_put_string(w, price_in->provider);
        price->model = sp_snapshot_put_string(w, price_in->model);
        break;
    }

    return at;
}


static int
sp_snapshot_same_lookup(int table, void *a, void *b)
{
    sp_snapshot_key_in_t       *ka, *kb;
    sp_snapshot_provider_in_t  *pa, *pb;
    sp_snapshot_price_in_t     *ra, *rb;
    sp_snapshot_alias_in_t     *aa, *ab;

    switch (table) {

    case SP_TABLE_ORGS:
        return strcmp(((sp_snapshot_org_in_t *) a)->org_id,
                      ((sp_snapshot_org_in_t *) b)->org_id) == 0;

    case SP_TABLE_BUDGETS:
        /* budgets share lookup keys; only the same budget replaces */
        return strcmp(((sp_snapshot_budget_in_t *) a)->budget_id,
                      ((sp_snapshot_budget_in_t *) b)->budget_id) == 0;

    case SP_TABLE_ALIASES:
        aa = a;
        ab = b;
        return strcmp(aa->org_id, ab->org_id) == 0
               && strcmp(aa->provider, ab->provider) == 0
               && strcmp(aa->alias, ab->alias) == 0;

    case SP_TABLE_KEYS:
        ka = a;
        kb = b;
        return memcmp(ka->key_hash, kb->key_hash, SP_KEY_HASH_LEN) == 0;

    case SP_TABLE_PROVIDERS:
        pa = a;
        pb = b;
        return strcmp(pa->org_id, pb->org_id) == 0
               && strcmp(pa->provider, pb->provider) == 0;

    default:
        ra = a;
        rb = b;
        return strcmp(ra->org_id, rb->org_id) == 0
               && strcmp(ra->provider, rb->provider) == 0
               && strcmp(ra->model, rb->model) == 0;
    }
}


static size_t
sp_snapshot_slots_for(size_t count)
{
    size_t  slots;

    if (count == 0) {
        return 0;
    }

    slots = 8;

    while (slots < count * 2) {
        slots *= 2;
    }

    return slots;
}


int
sp_snapshot_build(sp_snapshot_builder_t *b, uint8_t **out, size_t *len)
{
    size_t                 total, slots[SP_TABLE_COUNT], i, j, mask, record;
    size_t                *owner;
    sp_snapshot_list_t    *list;
    sp_snapshot_header_t  *header;
    sp_snapshot_slot_t    *table;
    sp_snapshot_writer_t   w;
    int                    t, replaced;

    total = SP_ALIGN8(sizeof(sp_snapshot_header_t));

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        slots[t] = sp_snapshot_slots_for(b->lists[t].count);
        total += slots[t] * sizeof(sp_snapshot_slot_t);

        for (i = 0; i < b->lists[t].count; i++) {
            total += SP_ALIGN8(b->lists[t].entries[i].size) + 8;
        }
    }

    if (total > UINT32_MAX) {
        /* refs are 32-bit offsets */
        return SP_ERROR;
    }

    w.out = calloc(1, total);
    if (w.out == NULL) {
        return SP_ERROR;
    }

    w.len = total;
    w.pos = SP_ALIGN8(sizeof(sp_snapshot_header_t));

    header = (sp_snapshot_header_t *) w.out;
    memcpy(header->magic, SP_SNAPSHOT_MAGIC, sizeof(header->magic));
    header->version = SP_SNAPSHOT_VERSION;
    header->header_size = (uint32_t) SP_ALIGN8(sizeof(sp_snapshot_header_t));
    header->generation = b->generation;
    header->created_at = (int64_t) time(NULL);

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        header->tables[t].offset = slots[t] ? w.pos : 0;
        header->tables[t].slots = slots[t];
        w.pos += slots[t] * sizeof(sp_snapshot_slot_t);
    }

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        list = &b->lists[t];

        if (slots[t] == 0) {
            continue;
        }

        table = (sp_snapshot_slot_t *) (w.out + header->tables[t].offset);
        mask = slots[t] - 1;

        owner = malloc(slots[t] * sizeof(size_t));
        if (owner == NULL) {
            free(w.out);
            return SP_ERROR;
        }

        for (i = 0; i < list->count; i++) {
            record = sp_snapshot_put_record(&w, t, list->entries[i].record);
            replaced = 0;

            for (j = list->entries[i].hash & mask;
                 table[j].record != 0;
                 j = (j + 1) & mask)
            {
                if (table[j].hash == list->entries[i].hash
                    && sp_snapshot_same_lookup(t,
                                        list->entries[owner[j]].record,
                                        list->entries[i].record))
                {
                    replaced = 1;
                    break;
                }
            }

            table[j].hash = list->entries[i].hash;
            table[j].record = record;
            owner[j] = i;

            if (!replaced) {
                header->entries[t]++;
            }
        }

        free(owner);
    }

    header->length = w.pos;
    header->checksum = sp_hash64(w.out + header->header_size,
                                 header->length - header->header_size,
                                 header->generation);

    *out = w.out;
    *len = w.pos;

    return SP_OK;
}


int
sp_snapshot_publish(sp_snapshot_builder_t *b, const char *dir,
    const char *name, unsigned mode, char *err, size_t errlen)
{
    char      tmp[4096], path[4096];
    uint8_t  *data;
    size_t    len, done;
    ssize_t   n;
    int       fd;

    if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, name)
            >= sizeof(path)
        || (size_t) snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%ld", dir, name,
                             (long) getpid())
            >= sizeof(tmp))
    {
        /* the reason first: the path it is about does not fit in err */
        sp_errorf(err, errlen, "snapshot path is too long: \"%s/%s\"",
                  dir, name);
        return SP_ERROR;
    }

    if (sp_snapshot_build(b, &data, &len) != SP_OK) {
        sp_errorf(err, errlen, "snapshot build failed: out of memory or "
                  "over 4 GiB");
        return SP_ERROR;
    }

    /* a stale temporary from a crashed writer goes; no symlink is followed */
    (void) unlink(tmp);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              mode & 0777);
    if (fd == -1) {
        sp_errorf(err, errlen, "open(\"%s\") failed: %s", tmp,
                  strerror(errno));
        free(data);
        return SP_ERROR;
    }

    /* the umask must not narrow the mode the operator asked for */
    (void) fchmod(fd, mode & 0777);

    for (done = 0; done < len; done += (size_t) n) {
        n = write(fd, data + done, len - done);

        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            sp_errorf(err, errlen, "write(\"%s\") failed: %s", tmp,
                      strerror(errno));
            close(fd);
            unlink(tmp);
            free(data);
            return SP_ERROR;
        }
    }

    /* provider credentials are in the buffer */
    memset(data, 0, len);
    free(data);

    if (close(fd) == -1) {
        sp_errorf(err, errlen, "close(\"%s\") failed: %s", tmp,
                  strerror(errno));
        unlink(tmp);
        return SP_ERROR;
    }

    if (rename(tmp, path) == -1) {
        sp_errorf(err, errlen, "rename(\"%s\", \"%s\") failed: %s", tmp,
                  path, strerror(errno));
        unlink(tmp);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_open_structure(sp_snapshot_t *s, const void *data, size_t len,
    char *err, size_t errlen)
{
    const sp_snapshot_header_t  *header;
    uint64_t                     end, next;
    int                          t;

    if (len < sizeof(sp_snapshot_header_t)) {
        sp_errorf(err, errlen, "snapshot is truncated: %zu bytes, the header "
                  "alone needs %zu", len, sizeof(sp_snapshot_header_t));
        return SP_ERROR;
    }

    header = data;

    if (memcmp(header->magic, SP_SNAPSHOT_MAGIC, sizeof(header->magic)) != 0)
    {
        sp_errorf(err, errlen, "not a spendpol snapshot (bad magic)");
        return SP_ERROR;
    }

    if (header->version != SP_SNAPSHOT_VERSION) {
        sp_errorf(err, errlen, "snapshot format version %u, expected %u",
                  header->version, SP_SNAPSHOT_VERSION);
        return SP_ERROR;
    }

    if (header->header_size < sizeof(sp_snapshot_header_t)
        || header->header_size > len
        || header->length != len)
    {
        sp_errorf(err, errlen, "snapshot length %llu does not match the "
                  "file's %zu bytes (truncated or torn)",
                  (unsigned long long) header->length, len);
        return SP_ERROR;
    }

    /*
     * The header is outside the checksum: hold the tables to the layout
     * the builder writes (one after another right after the header, load
     * factor <= 0.5), so that a corrupted offset or slot count is refused
     * rather than silently hiding every entry.
     */
    next = header->header_size;

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        if (header->tables[t].slots == 0) {
            if (header->entries[t] != 0) {
                sp_errorf(err, errlen, "snapshot table %d is malformed", t);
                return SP_ERROR;
            }

            continue;
        }

        if ((header->tables[t].slots & (header->tables[t].slots - 1)) != 0
            || header->tables[t].offset % 8 != 0
            || header->tables[t].slots > len / sizeof(sp_snapshot_slot_t)
            || header->entries[t] == 0
            || header->entries[t] > header->tables[t].slots / 2)
        {
            sp_errorf(err, errlen, "snapshot table %d is malformed", t);
            return SP_ERROR;
        }

        /* offset is checked first: offset + size must not wrap around */
        end = header->tables[t].offset
              + header->tables[t].slots * sizeof(sp_snapshot_slot_t);

        if (header->tables[t].offset < header->header_size
            || header->tables[t].offset > len
            || end > len)
        {
            sp_errorf(err, errlen, "snapshot table %d lies outside the file",
                      t);
            return SP_ERROR;
        }

        if (header->tables[t].offset != next) {
            sp_errorf(err, errlen, "snapshot table %d is not where the "
                      "previous one ends", t);
            return SP_ERROR;
        }

        next = end;
    }

    s->base = data;
    s->len = len;
    s->header = header;

    return SP_OK;
}


void
sp_snapshot_verify_begin(const sp_snapshot_t *s, sp_hash_state_t *st)
{
    sp_hash64_begin(st, s->len - s->header->header_size,
                    s->header->generation);
}


int
sp_snapshot_verify(const sp_snapshot_t *s, sp_hash_state_t *st,
    size_t max_bytes, char *err, size_t errlen)
{
    size_t  n;

    n = st->len - st->done;

    if (n > max_bytes) {
        /* whole words, so only the last piece has a partial one */
        n = max_bytes & ~(size_t) 7;

        if (n == 0) {
            n = 8;
        }
    }

    sp_hash64_update(st, s->base + s->header->header_size + st->done, n);

    if (st->done < st->len) {
        return SP_AGAIN;
    }

    if (sp_hash64_end(st) != s->header->checksum) {
        sp_errorf(err, errlen, "snapshot checksum mismatch (corrupted)");
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_open(sp_snapshot_t *s, const void *data, size_t len, char *err,
    size_t errlen)
{
    sp_hash_state_t  st;

    if (sp_snapshot_open_structure(s, data, len, err, errlen) != SP_OK) {
        return SP_ERROR;
    }

    sp_snapshot_verify_begin(s, &st);

    return sp_snapshot_verify(s, &st, (size_t) -1, err, errlen);
}


sp_str_t
sp_snapshot_str(const sp_snapshot_t *s, sp_snapshot_ref_t ref)
{
    sp_str_t  str;

    if ((uint64_t) ref.offset + ref.len > s->len) {
        str.data = "";
        str.len = 0;
        return str;
    }

    str.data = (const char *) s->base + ref.offset;
    str.len = ref.len;

    return str;
}


static int
sp_str_eq(sp_str_t a, sp_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}


/*
 * Calls match(record) for each record whose slot hash equals hash, until
 * it returns non-NULL; every record offset is bounds-checked first.
 */
static const void *
sp_snapshot_probe(const sp_snapshot_t *s, int table, uint64_t hash,
    size_t record_size, const void *(*match)(const sp_snapshot_t *s,
    const void *record, const void *arg), const void *arg)
{
    const sp_snapshot_slot_t  *slots;
    const void                *found;
    uint64_t                   n, mask, i, probes;

    n = s->header->tables[table].slots;

    if (n == 0) {
        return NULL;
    }

    slots = (const sp_snapshot_slot_t *)
                (s->base + s->header->tables[table].offset);
    mask = n - 1;

    for (i = hash & mask, probes = 0;
         probes < n && slots[i].record != 0;
         i = (i + 1) & mask, probes++)
    {
        if (slots[i].hash != hash) {
            continue;
        }

        if (slots[i].record % 8 != 0
            || slots[i].record > s->len
            || s->len - slots[i].record < record_size)
        {
            return NULL;
        }

        found = match(s, s->base + slots[i].record, arg);

        if (found) {
            return found;
        }
    }

    return NULL;
}


static const void *
sp_snapshot_match_key(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    const sp_snapshot_key_t  *key = record;

    (void) s;

    return memcmp(key->key_hash, arg, SP_KEY_HASH_LEN) == 0 ? key : NULL;
}


const sp_snapshot_key_t *
sp_snapshot_find_key(const sp_snapshot_t *s, const uint8_t *key_hash)
{
    uint64_t  hash;

    memcpy(&hash, key_hash, sizeof(hash));

    return sp_snapshot_probe(s, SP_TABLE_KEYS, hash,
                             sizeof(sp_snapshot_key_t),
                             sp_snapshot_match_key, key_hash);
}


typedef struct {
    sp_str_t  parts[3];
} sp_snapshot_lookup_t;


static const void *
sp_snapshot_match_provider(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    const sp_snapshot_provider_t  *provider = record;
    const sp_snapshot_lookup_t    *lookup = arg;

    if (sp_str_eq(sp_snapshot_str(s, provider->org_id), lookup->parts[0])
        && sp_str_eq(sp_snapshot_str(s, provider->provider),
                     lookup->parts[1]))
    {
        return provider;
    }

    return NULL;
}


const sp_snapshot_provider_t *
sp_snapshot_find_provider(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider)
{
    sp_snapshot_lookup_t  lookup;

    lookup.parts[0] = org_id;
    lookup.parts[1] = provider;

    return sp_snapshot_probe(s, SP_TABLE_PROVIDERS,
                             sp_snapshot_lookup_hash(org_id, provider,
                                                     provider, 2),
                             sizeof(sp_snapshot_provider_t),
                             sp_snapshot_match_provider, &lookup);
}


static const void *
sp_snapshot_match_price(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    const sp_snapshot_price_t   *price = record;
    const sp_snapshot_lookup_t  *lookup = arg;

    if (sp_str_eq(sp_snapshot_str(s, price->org_id), lookup->parts[0])
        && sp_str_eq(sp_snapshot_str(s, price->provider), lookup->parts[1])
        && sp_str_eq(sp_snapshot_str(s, price->model), lookup->parts[2]))
    {
        return price;
    }

    return NULL;
}


static const sp_snapshot_price_t *
sp_snapshot_find_price_exact(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model)
{
    sp_snapshot_lookup_t  lookup;

    lookup.parts[0] = org_id;
    lookup.parts[1] = provider;
    lookup.parts[2] = model;

    return sp_snapshot_probe(s, SP_TABLE_PRICES,
                             sp_snapshot_lookup_hash(org_id, provider, model,
                                                     3),
                             sizeof(sp_snapshot_price_t),
                             sp_snapshot_match_price, &lookup);
}


static int
sp_all_digits(const char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* the model name without "-YYYY-MM-DD" or "-YYYYMMDD"; len 0 if none */
static sp_str_t
sp_model_without_date(sp_str_t model)
{
    sp_str_t     base;
    const char  *p;

    base.data = model.data;
    base.len = 0;

    if (model.len > 11) {
        p = model.data + model.len - 11;

        if (p[0] == '-' && sp_all_digits(p + 1, 4) && p[5] == '-'
            && sp_all_digits(p + 6, 2) && p[8] == '-'
            && sp_all_digits(p + 9, 2))
        {
            base.len = model.len - 11;
            return base;
        }
    }

    if (model.len > 9) {
        p = model.data + model.len - 9;

        if (p[0] == '-' && sp_all_digits(p + 1, 8)) {
            base.len = model.len - 9;
            return base;
        }
    }

    return base;
}


const sp_snapshot_price_t *
sp_snapshot_find_price(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model)
{
    const sp_snapshot_price_t  *price;
    sp_str_t                    none, base;

    none.data = "";
    none.len = 0;

    base = sp_model_without_date(model);

    price = sp_snapshot_find_price_exact(s, org_id, provider, model);

    if (price == NULL && base.len) {
        price = sp_snapshot_find_price_exact(s, org_id, provider, base);
    }

    if (price == NULL) {
        price = sp_snapshot_find_price_exact(s, none, provider, model);
    }

    if (price == NULL && base.len) {
        price = sp_snapshot_find_price_exact(s, none, provider, base);
    }

    return price;
}


static const void *
sp_snapshot_match_org(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    const sp_snapshot_org_t     *org = record;
    const sp_snapshot_lookup_t  *lookup = arg;

    return sp_str_eq(sp_snapshot_str(s, org->org_id), lookup->parts[0])
           ? org : NULL;
}


const sp_snapshot_org_t *
sp_snapshot_find_org(const sp_snapshot_t *s, sp_str_t org_id)
{
    sp_snapshot_lookup_t  lookup;

    lookup.parts[0] = org_id;

    return sp_snapshot_probe(s, SP_TABLE_ORGS,
                             sp_snapshot_lookup_hash(org_id, org_id, org_id,
                                                     1),
                             sizeof(sp_snapshot_org_t),
                             sp_snapshot_match_org, &lookup);
}


static const void *
sp_snapshot_match_alias(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    const sp_snapshot_alias_t   *alias = record;
    const sp_snapshot_lookup_t  *lookup = arg;

    if (sp_str_eq(sp_snapshot_str(s, alias->org_id), lookup->parts[0])
        && sp_str_eq(sp_snapshot_str(s, alias->provider), lookup->parts[1])
        && sp_str_eq(sp_snapshot_str(s, alias->alias), lookup->parts[2]))
    {
        return alias;
    }

    return NULL;
}


const sp_snapshot_alias_t *
sp_snapshot_find_alias(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t alias)
{
    sp_snapshot_lookup_t  lookup;

    lookup.parts[0] = org_id;
    lookup.parts[1] = provider;
    lookup.parts[2] = alias;

    return sp_snapshot_probe(s, SP_TABLE_ALIASES,
                             sp_snapshot_lookup_hash(org_id, provider, alias,
                                                     3),
                             sizeof(sp_snapshot_alias_t),
                             sp_snapshot_match_alias, &lookup);
}


size_t
sp_snapshot_foreach_budget(const sp_snapshot_t *s, sp_str_t org_id,
    uint32_t scope, sp_str_t scope_value,
    int (*visit)(const sp_snapshot_budget_t *budget, void *arg), void *arg)
{
    const sp_snapshot_slot_t    *slots;
    const sp_snapshot_budget_t  *budget;
    uint64_t                     n, mask, i, probes, hash;
    size_t                       visited;

    n = s->header->tables[SP_TABLE_BUDGETS].slots;

    if (n == 0) {
        return 0;
    }

    hash = sp_snapshot_budget_hash(org_id, scope, scope_value);
    slots = (const sp_snapshot_slot_t *)
                (s->base + s->header->tables[SP_TABLE_BUDGETS].offset);
    mask = n - 1;
    visited = 0;

    for (i = hash & mask, probes = 0;
         probes < n && slots[i].record != 0;
         i = (i + 1) & mask, probes++)
    {
        if (slots[i].hash != hash) {
            continue;
        }

        if (slots[i].record % 8 != 0
            || slots[i].record > s->len
            || s->len - slots[i].record < sizeof(sp_snapshot_budget_t))
        {
            return visited;
        }

        budget = (const sp_snapshot_budget_t *) (s->base + slots[i].record);

        if (budget->scope != scope
            || !sp_str_eq(sp_snapshot_str(s, budget->org_id), org_id)
            || !sp_str_eq(sp_snapshot_str(s, budget->scope_value),
                          scope_value))
        {
            continue;
        }

        visited++;

        if (visit(budget, arg)) {
            break;
        }
    }

    return visited;
}
