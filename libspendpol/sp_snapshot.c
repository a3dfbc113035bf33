/*
 * Policy snapshots: an offset-based file that nginx workers map read-only
 * and use in place. See sp_snapshot.h for the layout.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sp_snapshot.h"
#include "sp_usage.h"


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


/*
 * How each table's input record (sp_snapshot_*_in_t, as the builder keeps
 * it) becomes a file record: its strings (copied on add, written after
 * the record as refs), its fixed fields, and which fields identify it (a
 * later record with the same identity replaces an earlier one).
 */

#define SP_RECORD_STRINGS_MAX  6

typedef struct {
    size_t    in_size;
    size_t    record_size;
    size_t    nstrings;
    size_t    in_strings[SP_RECORD_STRINGS_MAX];     /* const char * */
    size_t    record_strings[SP_RECORD_STRINGS_MAX]; /* sp_snapshot_ref_t */
    size_t    identity;      /* the first strings that identify a record */
    void    (*put_fixed)(void *record, const void *in);
} sp_snapshot_kind_t;

#define SP_STR(type, field)                                                   \
    offsetof(sp_snapshot_##type##_in_t, field)
#define SP_REF(type, field)                                                   \
    offsetof(sp_snapshot_##type##_t, field)


static void
sp_snapshot_put_key(void *record, const void *in)
{
    sp_snapshot_key_t           *key = record;
    const sp_snapshot_key_in_t  *key_in = in;

    memcpy(key->key_hash, key_in->key_hash, SP_KEY_HASH_LEN);
    key->scopes = key_in->scopes;
    key->flags = key_in->flags;
    key->rpm_limit = key_in->rpm_limit;
    key->tpm_limit = key_in->tpm_limit;
    key->agent_rpm_limit = key_in->agent_rpm_limit;
    key->agent_tpm_limit = key_in->agent_tpm_limit;
}


static void
sp_snapshot_put_price(void *record, const void *in)
{
    sp_snapshot_price_t           *price = record;
    const sp_snapshot_price_in_t  *price_in = in;

    price->price = price_in->price;
    price->max_output_tokens = price_in->max_output_tokens;
}


static void
sp_snapshot_put_org(void *record, const void *in)
{
    sp_snapshot_org_t           *org = record;
    const sp_snapshot_org_in_t  *org_in = in;

    org->flags = org_in->flags;
    org->rpm_limit = org_in->rpm_limit;
    org->tpm_limit = org_in->tpm_limit;
    org->reserved = 0;

    if (org_in->cache_set) {
        org->cache = org_in->cache;

    } else {
        sp_cache_config_default(&org->cache);
    }
}


static void
sp_snapshot_put_cache_purge(void *record, const void *in)
{
    sp_snapshot_cache_purge_t           *purge = record;
    const sp_snapshot_cache_purge_in_t  *purge_in = in;

    purge->pad = 0;
    purge->purged_ms = purge_in->purged_ms;
}


static void
sp_snapshot_put_budget(void *record, const void *in)
{
    sp_snapshot_budget_t           *budget = record;
    const sp_snapshot_budget_in_t  *budget_in = in;

    budget->scope = budget_in->scope;
    budget->action = budget_in->action;
    budget->limit_nano = budget_in->limit_nano;
    budget->period_start_ms = budget_in->period_start_ms;
    budget->period_end_ms = budget_in->period_end_ms;
}


static const sp_snapshot_kind_t  sp_snapshot_kinds[SP_TABLE_COUNT] = {

    [SP_TABLE_KEYS] = {
        sizeof(sp_snapshot_key_in_t), sizeof(sp_snapshot_key_t), 6,
        { SP_STR(key, key_id), SP_STR(key, org_id), SP_STR(key, name),
          SP_STR(key, department), SP_STR(key, project),
          SP_STR(key, agent_id) },
        { SP_REF(key, key_id), SP_REF(key, org_id), SP_REF(key, name),
          SP_REF(key, department), SP_REF(key, project),
          SP_REF(key, agent_id) },
        0,                                  /* identified by key_hash */
        sp_snapshot_put_key
    },

    [SP_TABLE_PROVIDERS] = {
        sizeof(sp_snapshot_provider_in_t), sizeof(sp_snapshot_provider_t), 4,
        { SP_STR(provider, org_id), SP_STR(provider, provider),
          SP_STR(provider, base_url), SP_STR(provider, api_key) },
        { SP_REF(provider, org_id), SP_REF(provider, provider),
          SP_REF(provider, base_url), SP_REF(provider, api_key) },
        2, NULL
    },

    [SP_TABLE_PRICES] = {
        sizeof(sp_snapshot_price_in_t), sizeof(sp_snapshot_price_t), 3,
        { SP_STR(price, org_id), SP_STR(price, provider),
          SP_STR(price, model) },
        { SP_REF(price, org_id), SP_REF(price, provider),
          SP_REF(price, model) },
        3, sp_snapshot_put_price
    },

    [SP_TABLE_ORGS] = {
        sizeof(sp_snapshot_org_in_t), sizeof(sp_snapshot_org_t), 1,
        { SP_STR(org, org_id) },
        { SP_REF(org, org_id) },
        1, sp_snapshot_put_org
    },

    [SP_TABLE_ALIASES] = {
        sizeof(sp_snapshot_alias_in_t), sizeof(sp_snapshot_alias_t), 4,
        { SP_STR(alias, org_id), SP_STR(alias, provider),
          SP_STR(alias, alias), SP_STR(alias, model) },
        { SP_REF(alias, org_id), SP_REF(alias, provider),
          SP_REF(alias, alias), SP_REF(alias, model) },
        3, NULL
    },

    /* budgets share lookup keys; only the same budget replaces */
    [SP_TABLE_BUDGETS] = {
        sizeof(sp_snapshot_budget_in_t), sizeof(sp_snapshot_budget_t), 5,
        { SP_STR(budget, budget_id), SP_STR(budget, org_id),
          SP_STR(budget, scope_value), SP_STR(budget, provider),
          SP_STR(budget, model) },
        { SP_REF(budget, budget_id), SP_REF(budget, org_id),
          SP_REF(budget, scope_value), SP_REF(budget, provider),
          SP_REF(budget, model) },
        1, sp_snapshot_put_budget
    },

    /*
     * endpoints share the lookup key (org_id, provider); only the same
     * method and pattern replace. Never looked up by identity
     * (sp_snapshot_find() takes at most three parts), only visited.
     */
    [SP_TABLE_ENDPOINTS] = {
        sizeof(sp_snapshot_endpoint_in_t), sizeof(sp_snapshot_endpoint_t),
        4,
        { SP_STR(endpoint, org_id), SP_STR(endpoint, provider),
          SP_STR(endpoint, method), SP_STR(endpoint, pattern) },
        { SP_REF(endpoint, org_id), SP_REF(endpoint, provider),
          SP_REF(endpoint, method), SP_REF(endpoint, pattern) },
        4, NULL
    },

    [SP_TABLE_SETTINGS] = {
        sizeof(sp_snapshot_setting_in_t), sizeof(sp_snapshot_setting_t), 2,
        { SP_STR(setting, name), SP_STR(setting, value) },
        { SP_REF(setting, name), SP_REF(setting, value) },
        1, NULL
    },

    /* provider and model "" stand for all: found by exact identity */
    [SP_TABLE_CACHE_PURGES] = {
        sizeof(sp_snapshot_cache_purge_in_t),
        sizeof(sp_snapshot_cache_purge_t), 3,
        { SP_STR(cache_purge, org_id), SP_STR(cache_purge, provider),
          SP_STR(cache_purge, model) },
        { SP_REF(cache_purge, org_id), SP_REF(cache_purge, provider),
          SP_REF(cache_purge, model) },
        3, sp_snapshot_put_cache_purge
    },

    [SP_TABLE_ROUTES] = {
        sizeof(sp_snapshot_routes_in_t), sizeof(sp_snapshot_routes_t), 2,
        { SP_STR(routes, org_id), SP_STR(routes, rules) },
        { SP_REF(routes, org_id), SP_REF(routes, rules) },
        1, NULL
    },

    [SP_TABLE_TEMPLATES] = {
        sizeof(sp_snapshot_template_in_t), sizeof(sp_snapshot_template_t),
        3,
        { SP_STR(template, org_id), SP_STR(template, slug),
          SP_STR(template, record) },
        { SP_REF(template, org_id), SP_REF(template, slug),
          SP_REF(template, record) },
        2, NULL
    },

    [SP_TABLE_POLICIES] = {
        sizeof(sp_snapshot_routes_in_t), sizeof(sp_snapshot_routes_t), 2,
        { SP_STR(routes, org_id), SP_STR(routes, rules) },
        { SP_REF(routes, org_id), SP_REF(routes, rules) },
        1, NULL
    }
};


static const char **
sp_snapshot_string(int table, void *record, size_t i)
{
    return (const char **) ((uint8_t *) record
                            + sp_snapshot_kinds[table].in_strings[i]);
}


/* the builder's copy and its strings; strings are zeroed (credentials) */
static void
sp_snapshot_free_record(int table, void *record)
{
    size_t        i;
    const char  **s;

    if (record == NULL) {
        return;
    }

    for (i = 0; i < sp_snapshot_kinds[table].nstrings; i++) {
        s = sp_snapshot_string(table, record, i);

        if (*s != NULL) {
            memset((char *) *s, 0, strlen(*s));
            free((char *) *s);
        }
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


/* copies in (its strings too, NULL as "") into the table's list */
static int
sp_snapshot_add(sp_snapshot_builder_t *b, int table, const void *in,
    uint64_t hash)
{
    void                      *record;
    size_t                     i, j, size;
    const char               **s;
    const sp_snapshot_kind_t  *kind;

    kind = &sp_snapshot_kinds[table];

    record = malloc(kind->in_size);
    if (record == NULL) {
        return SP_ERROR;
    }

    memcpy(record, in, kind->in_size);
    size = kind->record_size;

    for (i = 0; i < kind->nstrings; i++) {
        s = sp_snapshot_string(table, record, i);
        *s = sp_strdup0(*s);

        if (*s == NULL) {
            /* the rest still point at the caller's strings */
            for (j = i + 1; j < kind->nstrings; j++) {
                *sp_snapshot_string(table, record, j) = NULL;
            }

            sp_snapshot_free_record(table, record);
            return SP_ERROR;
        }

        size += strlen(*s);
    }

    if (sp_snapshot_list_push(&b->lists[table], hash, record, size)
        != SP_OK)
    {
        sp_snapshot_free_record(table, record);
        return SP_ERROR;
    }

    return SP_OK;
}


int
sp_snapshot_add_key(sp_snapshot_builder_t *b, const sp_snapshot_key_in_t *in)
{
    uint64_t  hash;

    memcpy(&hash, in->key_hash, sizeof(hash));

    return sp_snapshot_add(b, SP_TABLE_KEYS, in, hash);
}


int
sp_snapshot_add_provider(sp_snapshot_builder_t *b,
    const sp_snapshot_provider_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_PROVIDERS, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->provider),
                                                   sp_str_from(NULL), 2));
}


int
sp_snapshot_add_price(sp_snapshot_builder_t *b,
    const sp_snapshot_price_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_PRICES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->provider),
                                                   sp_str_from(in->model), 3));
}


int
sp_snapshot_add_org(sp_snapshot_builder_t *b, const sp_snapshot_org_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_ORGS, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(NULL),
                                                   sp_str_from(NULL), 1));
}


int
sp_snapshot_add_cache_purge(sp_snapshot_builder_t *b,
    const sp_snapshot_cache_purge_in_t *in)
{
    /* the hash must be the one a lookup of ("", "") computes for NULL */
    return sp_snapshot_add(b, SP_TABLE_CACHE_PURGES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->provider),
                                                   sp_str_from(in->model),
                                                   3));
}


int
sp_snapshot_add_alias(sp_snapshot_builder_t *b,
    const sp_snapshot_alias_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_ALIASES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->provider),
                                                   sp_str_from(in->alias), 3));
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
    if (in->scope >= SP_BUDGET_SCOPE_COUNT) {
        return SP_ERROR;
    }

    return sp_snapshot_add(b, SP_TABLE_BUDGETS, in,
                           sp_snapshot_budget_hash(sp_str_from(in->org_id),
                                                   in->scope,
                                                   sp_str_from(in->scope_value)));
}


int
sp_snapshot_add_endpoint(sp_snapshot_builder_t *b,
    const sp_snapshot_endpoint_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_ENDPOINTS, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->provider),
                                                   sp_str_from(NULL), 2));
}


int
sp_snapshot_add_setting(sp_snapshot_builder_t *b,
    const sp_snapshot_setting_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_SETTINGS, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->name),
                                                   sp_str_from(NULL),
                                                   sp_str_from(NULL), 1));
}


int
sp_snapshot_add_routes(sp_snapshot_builder_t *b,
    const sp_snapshot_routes_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_ROUTES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(NULL),
                                                   sp_str_from(NULL), 1));
}


int
sp_snapshot_add_policies(sp_snapshot_builder_t *b,
    const sp_snapshot_routes_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_POLICIES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(NULL),
                                                   sp_str_from(NULL), 1));
}


int
sp_snapshot_add_template(sp_snapshot_builder_t *b,
    const sp_snapshot_template_in_t *in)
{
    return sp_snapshot_add(b, SP_TABLE_TEMPLATES, in,
                           sp_snapshot_lookup_hash(sp_str_from(in->org_id),
                                                   sp_str_from(in->slug),
                                                   sp_str_from(NULL), 2));
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
sp_snapshot_put_record(sp_snapshot_writer_t *w, int table, void *in)
{
    size_t                     at, i;
    uint8_t                   *record;
    sp_snapshot_ref_t          ref;
    const sp_snapshot_kind_t  *kind;

    kind = &sp_snapshot_kinds[table];

    w->pos = SP_ALIGN8(w->pos);
    at = w->pos;
    record = w->out + at;
    w->pos += kind->record_size;

    if (kind->put_fixed) {
        kind->put_fixed(record, in);
    }

    for (i = 0; i < kind->nstrings; i++) {
        ref = sp_snapshot_put_string(w, *sp_snapshot_string(table, in, i));
        memcpy(record + kind->record_strings[i], &ref, sizeof(ref));
    }

    return at;
}


static int
sp_snapshot_same_lookup(int table, void *a, void *b)
{
    size_t  i;

    if (table == SP_TABLE_KEYS) {
        return memcmp(((sp_snapshot_key_in_t *) a)->key_hash,
                      ((sp_snapshot_key_in_t *) b)->key_hash,
                      SP_KEY_HASH_LEN) == 0;
    }

    for (i = 0; i < sp_snapshot_kinds[table].identity; i++) {
        if (strcmp(*sp_snapshot_string(table, a, i),
                   *sp_snapshot_string(table, b, i)) != 0)
        {
            return 0;
        }
    }

    return 1;
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

    /*
     * Magic and version first: another version's header has another
     * size, and "version 5, expected 6" tells the operator more than
     * "truncated" would.
     */
    if (len < offsetof(sp_snapshot_header_t, header_size)) {
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
        sp_errorf(err, errlen, "snapshot format version %u, expected %u "
                  "(written by a controld of another release)",
                  header->version, SP_SNAPSHOT_VERSION);
        return SP_ERROR;
    }

    if (len < sizeof(sp_snapshot_header_t)) {
        sp_errorf(err, errlen, "snapshot is truncated: %zu bytes, the header "
                  "alone needs %zu", len, sizeof(sp_snapshot_header_t));
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
    int       table;
    sp_str_t  parts[3];
} sp_snapshot_lookup_t;


/* a record whose identity strings (sp_snapshot_kinds) equal the parts */
static const void *
sp_snapshot_match_identity(const sp_snapshot_t *s, const void *record,
    const void *arg)
{
    size_t                      i;
    sp_snapshot_ref_t           ref;
    const sp_snapshot_kind_t   *kind;
    const sp_snapshot_lookup_t *lookup = arg;

    kind = &sp_snapshot_kinds[lookup->table];

    for (i = 0; i < kind->identity; i++) {
        memcpy(&ref, (const uint8_t *) record + kind->record_strings[i],
               sizeof(ref));

        if (!sp_str_eq(sp_snapshot_str(s, ref), lookup->parts[i])) {
            return NULL;
        }
    }

    return record;
}


/* the record of table identified by a (, b (, c)) */
static const void *
sp_snapshot_find(const sp_snapshot_t *s, int table, sp_str_t a, sp_str_t b,
    sp_str_t c)
{
    sp_snapshot_lookup_t  lookup;

    lookup.table = table;
    lookup.parts[0] = a;
    lookup.parts[1] = b;
    lookup.parts[2] = c;

    return sp_snapshot_probe(s, table,
                             sp_snapshot_lookup_hash(a, b, c,
                                 (int) sp_snapshot_kinds[table].identity),
                             sp_snapshot_kinds[table].record_size,
                             sp_snapshot_match_identity, &lookup);
}


const sp_snapshot_provider_t *
sp_snapshot_find_provider(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider)
{
    return sp_snapshot_find(s, SP_TABLE_PROVIDERS, org_id, provider,
                            provider);
}


static const void *
sp_snapshot_price_exact(void *data, sp_str_t org_id, sp_str_t provider,
    sp_str_t model)
{
    return sp_snapshot_find(data, SP_TABLE_PRICES, org_id, provider, model);
}


static sp_str_t
sp_snapshot_alias_model(void *data, sp_str_t org_id, sp_str_t provider,
    sp_str_t alias)
{
    sp_str_t                    none;
    const sp_snapshot_alias_t  *a;

    a = sp_snapshot_find_alias(data, org_id, provider, alias);

    if (a == NULL) {
        none.data = "";
        none.len = 0;
        return none;
    }

    return sp_snapshot_str(data, a->model);
}


const sp_snapshot_price_t *
sp_snapshot_resolve_price(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model, unsigned options,
    sp_price_found_t *found)
{
    sp_price_lookup_t  lookup;

    lookup.find_price = sp_snapshot_price_exact;
    lookup.find_alias = sp_snapshot_alias_model;
    lookup.data = (void *) s;

    return sp_price_resolve(&lookup, org_id, provider, model, options,
                            found);
}


const sp_snapshot_price_t *
sp_snapshot_find_price(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model)
{
    sp_price_found_t   found;
    sp_price_lookup_t  lookup;

    lookup.find_price = sp_snapshot_price_exact;
    lookup.find_alias = NULL;
    lookup.data = (void *) s;

    return sp_price_resolve(&lookup, org_id, provider, model, 0, &found);
}


const sp_snapshot_org_t *
sp_snapshot_find_org(const sp_snapshot_t *s, sp_str_t org_id)
{
    return sp_snapshot_find(s, SP_TABLE_ORGS, org_id, org_id, org_id);
}


/*
 * The record's settings are checked against the ranges the admin API
 * enforces: the checksum proves the file is the one controld wrote, not
 * that its writer was sound, and a worker must not size or key entries by
 * a value it never validated. Out of range turns the cache off for the
 * organisation (a miss costs money; a wrong hit would serve another
 * request's answer). The embedding model must end inside its array: the
 * module passes it on as a C string. A semantic cache without both its
 * embeddings provider and model reads as exact: never half-configured.
 */
void
sp_snapshot_cache_config(const sp_snapshot_t *s, sp_str_t org_id,
    sp_cache_config_t *config)
{
    size_t                    len;
    const sp_snapshot_org_t  *org;

    sp_cache_config_default(config);

    org = sp_snapshot_find_org(s, org_id);

    if (org == NULL) {
        return;
    }

    if (org->cache.mode > SP_CACHE_SEMANTIC
        || org->cache.scope > SP_CACHE_SCOPE_DEPARTMENT
        || org->cache.ttl_s < 1
        || org->cache.ttl_s > SP_CACHE_TTL_MAX_S
        || org->cache.max_entry_bytes < 1
        || org->cache.max_entry_bytes > SP_CACHE_MAX_ENTRY_MAX
        || org->cache.only_deterministic > 1
        || org->cache.threshold_ppm < SP_CACHE_THRESHOLD_MIN_PPM
        || org->cache.threshold_ppm > SP_CACHE_THRESHOLD_MAX_PPM
        || (org->cache.embed_provider != SP_PROVIDER_UNKNOWN
            && !sp_cache_embed_provider_valid(org->cache.embed_provider))
        || org->cache.embed_system > 1
        || org->cache.embed_timeout_ms < SP_CACHE_EMBED_TIMEOUT_MIN
        || org->cache.embed_timeout_ms > SP_CACHE_EMBED_TIMEOUT_MAX
        || org->cache.max_vectors < 1
        || org->cache.max_vectors > SP_CACHE_MAX_VECTORS_MAX)
    {
        config->mode = SP_CACHE_OFF;
        return;
    }

    len = strnlen(org->cache.embed_model, SP_CACHE_EMBED_MODEL_LEN);

    if (len == SP_CACHE_EMBED_MODEL_LEN
        || (len > 0
            && !sp_cache_embed_model_valid(org->cache.embed_model, len)))
    {
        config->mode = SP_CACHE_OFF;
        return;
    }

    *config = org->cache;

    /* the bytes past the NUL as the defaults have them: zero */
    memset(config->embed_model + len, 0, SP_CACHE_EMBED_MODEL_LEN - len);

    if (config->mode == SP_CACHE_SEMANTIC
        && (config->embed_provider == SP_PROVIDER_UNKNOWN || len == 0))
    {
        config->mode = SP_CACHE_EXACT;
    }
}


static int64_t
sp_snapshot_purge_ms(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model)
{
    const sp_snapshot_cache_purge_t  *purge;

    purge = sp_snapshot_find(s, SP_TABLE_CACHE_PURGES, org_id, provider,
                             model);

    return purge ? purge->purged_ms : 0;
}


int64_t
sp_snapshot_cache_purged_ms(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model)
{
    int64_t   ms, latest;
    sp_str_t  all;

    all.data = "";
    all.len = 0;

    latest = sp_snapshot_purge_ms(s, org_id, all, all);

    if (provider.len == 0) {
        return latest;
    }

    ms = sp_snapshot_purge_ms(s, org_id, provider, all);
    latest = ms > latest ? ms : latest;

    if (model.len == 0) {
        return latest;
    }

    ms = sp_snapshot_purge_ms(s, org_id, provider, model);

    return ms > latest ? ms : latest;
}


const sp_snapshot_alias_t *
sp_snapshot_find_alias(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t alias)
{
    return sp_snapshot_find(s, SP_TABLE_ALIASES, org_id, provider, alias);
}


const sp_snapshot_routes_t *
sp_snapshot_find_routes(const sp_snapshot_t *s, sp_str_t org_id)
{
    return sp_snapshot_find(s, SP_TABLE_ROUTES, org_id, org_id, org_id);
}


const sp_snapshot_policies_t *
sp_snapshot_find_policies(const sp_snapshot_t *s, sp_str_t org_id)
{
    return sp_snapshot_find(s, SP_TABLE_POLICIES, org_id, org_id, org_id);
}


const sp_snapshot_template_t *
sp_snapshot_find_template(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t slug)
{
    return sp_snapshot_find(s, SP_TABLE_TEMPLATES, org_id, slug, slug);
}


const sp_snapshot_setting_t *
sp_snapshot_find_setting(const sp_snapshot_t *s, sp_str_t name)
{
    return sp_snapshot_find(s, SP_TABLE_SETTINGS, name, name, name);
}


/*
 * Calls match(record, arg) for every record of table whose slot hash is
 * hash, bounds-checking each record offset; match returns -1 for a record
 * that is not one, 1 to stop after it, 0 to go on. Returns the number of
 * records matched.
 */
static size_t
sp_snapshot_foreach(const sp_snapshot_t *s, int table, uint64_t hash,
    int (*match)(const sp_snapshot_t *s, const void *record, void *arg),
    void *arg)
{
    const sp_snapshot_slot_t  *slots;
    uint64_t                   n, mask, i, probes;
    size_t                     visited, record_size;
    int                        rc;

    n = s->header->tables[table].slots;

    if (n == 0) {
        return 0;
    }

    record_size = sp_snapshot_kinds[table].record_size;
    slots = (const sp_snapshot_slot_t *)
                (s->base + s->header->tables[table].offset);
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
            || s->len - slots[i].record < record_size)
        {
            return visited;
        }

        rc = match(s, s->base + slots[i].record, arg);

        if (rc < 0) {
            continue;
        }

        visited++;

        if (rc > 0) {
            break;
        }
    }

    return visited;
}


typedef struct {
    sp_str_t      org_id;
    uint32_t      scope;
    sp_str_t      scope_value;
    int         (*visit)(const sp_snapshot_budget_t *budget, void *arg);
    void         *arg;
} sp_snapshot_budget_visit_t;


static int
sp_snapshot_match_budget(const sp_snapshot_t *s, const void *record,
    void *arg)
{
    const sp_snapshot_budget_t  *budget = record;
    sp_snapshot_budget_visit_t  *v = arg;

    if (budget->scope != v->scope
        || !sp_str_eq(sp_snapshot_str(s, budget->org_id), v->org_id)
        || !sp_str_eq(sp_snapshot_str(s, budget->scope_value),
                      v->scope_value))
    {
        return -1;
    }

    return v->visit(budget, v->arg) != 0;
}


size_t
sp_snapshot_foreach_budget(const sp_snapshot_t *s, sp_str_t org_id,
    uint32_t scope, sp_str_t scope_value,
    int (*visit)(const sp_snapshot_budget_t *budget, void *arg), void *arg)
{
    sp_snapshot_budget_visit_t  v;

    v.org_id = org_id;
    v.scope = scope;
    v.scope_value = scope_value;
    v.visit = visit;
    v.arg = arg;

    return sp_snapshot_foreach(s, SP_TABLE_BUDGETS,
                               sp_snapshot_budget_hash(org_id, scope,
                                                       scope_value),
                               sp_snapshot_match_budget, &v);
}


typedef struct {
    sp_str_t      org_id;
    sp_str_t      provider;
    int         (*visit)(const sp_snapshot_endpoint_t *endpoint, void *arg);
    void         *arg;
} sp_snapshot_endpoint_visit_t;


static int
sp_snapshot_match_endpoint(const sp_snapshot_t *s, const void *record,
    void *arg)
{
    const sp_snapshot_endpoint_t  *endpoint = record;
    sp_snapshot_endpoint_visit_t  *v = arg;

    if (!sp_str_eq(sp_snapshot_str(s, endpoint->org_id), v->org_id)
        || !sp_str_eq(sp_snapshot_str(s, endpoint->provider), v->provider))
    {
        return -1;
    }

    return v->visit(endpoint, v->arg) != 0;
}


size_t
sp_snapshot_foreach_endpoint(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider,
    int (*visit)(const sp_snapshot_endpoint_t *endpoint, void *arg),
    void *arg)
{
    sp_snapshot_endpoint_visit_t  v;

    v.org_id = org_id;
    v.provider = provider;
    v.visit = visit;
    v.arg = arg;

    return sp_snapshot_foreach(s, SP_TABLE_ENDPOINTS,
                               sp_snapshot_lookup_hash(org_id, provider,
                                                       provider, 2),
                               sp_snapshot_match_endpoint, &v);
}
