/*
 * libspendpol snapshots: build, open, look up, and refuse hostile files.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "sp_snapshot.h"
#include "sp_usage.h"


static sp_str_t
S(const char *s)
{
    sp_str_t  str;

    str.data = s;
    str.len = strlen(s);

    return str;
}


static void
key_hash_of(int i, uint8_t *hash)
{
    char  key[32];
    int   n;

    n = snprintf(key, sizeof(key), "key-%d", i);
    sp_key_hash(key, (size_t) n, hash);
}


static void
add_key(sp_snapshot_builder_t *b, int i, const char *key_id,
    const char *org_id)
{
    sp_snapshot_key_in_t  in;

    memset(&in, 0, sizeof(in));
    key_hash_of(i, in.key_hash);
    in.key_id = key_id;
    in.org_id = org_id;
    in.name = "a key";
    in.department = "eng";
    in.project = NULL;
    in.agent_id = "agent-7";
    in.scopes = SP_SCOPE_PROXY;
    in.rpm_limit = (uint32_t) i * 10;
    in.tpm_limit = (uint32_t) i * 1000;
    in.agent_rpm_limit = 4000000000u + (uint32_t) i;
    in.agent_tpm_limit = 7;

    assert_int_equal(sp_snapshot_add_key(b, &in), SP_OK);
}


static void
add_provider(sp_snapshot_builder_t *b, const char *org, const char *name,
    const char *url, const char *api_key)
{
    sp_snapshot_provider_in_t  in;

    in.org_id = org;
    in.provider = name;
    in.base_url = url;
    in.api_key = api_key;

    assert_int_equal(sp_snapshot_add_provider(b, &in), SP_OK);
}


static void
add_price(sp_snapshot_builder_t *b, const char *org, const char *provider,
    const char *model, int64_t input, int64_t output)
{
    sp_snapshot_price_in_t  in;

    memset(&in, 0, sizeof(in));
    in.org_id = org;
    in.provider = provider;
    in.model = model;
    in.price.input = input;
    in.price.output = output;
    in.price.cached_input = input / 2;
    in.max_output_tokens = 16384;

    assert_int_equal(sp_snapshot_add_price(b, &in), SP_OK);
}


/* builds b into a malloc()ed buffer of exactly len bytes and frees b */
static uint8_t *
build(sp_snapshot_builder_t *b, size_t *len)
{
    uint8_t  *data;

    assert_int_equal(sp_snapshot_build(b, &data, len), SP_OK);
    sp_snapshot_builder_free(b);

    return data;
}


static void
open_ok(sp_snapshot_t *s, const uint8_t *data, size_t len)
{
    char  err[256];

    err[0] = '\0';

    if (sp_snapshot_open(s, data, len, err, sizeof(err)) != SP_OK) {
        fail_msg("sp_snapshot_open: %s", err);
    }
}


static void
add_org(sp_snapshot_builder_t *b, const char *org_id, uint32_t flags)
{
    sp_snapshot_org_in_t  in;

    memset(&in, 0, sizeof(in));
    in.org_id = org_id;
    in.flags = flags;

    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);
}


static void
add_purge(sp_snapshot_builder_t *b, const char *org_id, const char *provider,
    const char *model, int64_t purged_ms)
{
    sp_snapshot_cache_purge_in_t  in;

    in.org_id = org_id;
    in.provider = provider;
    in.model = model;
    in.purged_ms = purged_ms;

    assert_int_equal(sp_snapshot_add_cache_purge(b, &in), SP_OK);
}


static void
add_alias(sp_snapshot_builder_t *b, const char *org_id, const char *provider,
    const char *alias, const char *model)
{
    sp_snapshot_alias_in_t  in;

    in.org_id = org_id;
    in.provider = provider;
    in.alias = alias;
    in.model = model;

    assert_int_equal(sp_snapshot_add_alias(b, &in), SP_OK);
}


static void
add_budget(sp_snapshot_builder_t *b, const char *id, const char *org_id,
    uint32_t scope, const char *value, const char *provider, int64_t limit)
{
    sp_snapshot_budget_in_t  in;

    memset(&in, 0, sizeof(in));
    in.budget_id = id;
    in.org_id = org_id;
    in.scope = scope;
    in.scope_value = value;
    in.provider = provider;
    in.action = SP_BUDGET_BLOCK;
    in.limit_nano = limit;
    in.period_start_ms = 1000;
    in.period_end_ms = 2000;

    assert_int_equal(sp_snapshot_add_budget(b, &in), SP_OK);
}


static void
add_endpoint(sp_snapshot_builder_t *b, const char *org_id,
    const char *provider, const char *method, const char *pattern)
{
    sp_snapshot_endpoint_in_t  in;

    in.org_id = org_id;
    in.provider = provider;
    in.method = method;
    in.pattern = pattern;

    assert_int_equal(sp_snapshot_add_endpoint(b, &in), SP_OK);
}


static void
add_setting(sp_snapshot_builder_t *b, const char *name, const char *value)
{
    sp_snapshot_setting_in_t  in;

    in.name = name;
    in.value = value;

    assert_int_equal(sp_snapshot_add_setting(b, &in), SP_OK);
}


static void
add_routes(sp_snapshot_builder_t *b, const char *org_id, const char *rules)
{
    sp_snapshot_routes_in_t  in;

    in.org_id = org_id;
    in.rules = rules;

    assert_int_equal(sp_snapshot_add_routes(b, &in), SP_OK);
}


static void
add_policies(sp_snapshot_builder_t *b, const char *org_id,
    const char *policies)
{
    sp_snapshot_routes_in_t  in;

    in.org_id = org_id;
    in.rules = policies;

    assert_int_equal(sp_snapshot_add_policies(b, &in), SP_OK);
}


static void
add_template(sp_snapshot_builder_t *b, const char *org_id, const char *slug,
    const char *record)
{
    sp_snapshot_template_in_t  in;

    in.org_id = org_id;
    in.slug = slug;
    in.record = record;

    assert_int_equal(sp_snapshot_add_template(b, &in), SP_OK);
}


/* a small snapshot with a bit of everything */
static uint8_t *
small_snapshot(size_t *len)
{
    sp_snapshot_builder_t  *b;

    b = sp_snapshot_builder_new(42);
    assert_non_null(b);

    add_key(b, 1, "key_1", "org_a");
    add_key(b, 2, "key_2", "org_b");
    add_key(b, 3, "key_3", "org_a");
    add_provider(b, "org_a", "openai", "https://api.openai.com", "sk-a");
    add_provider(b, "org_b", "openai", "http://127.0.0.1:9", "sk-b");
    add_provider(b, "org_a", "anthropic", "https://api.anthropic.com",
                 "sk-ant");
    add_price(b, NULL, "openai", "gpt-4o-mini", 150000000, 600000000);
    add_price(b, "", "openai", "gpt-4o", 2500000000LL, 10000000000LL);
    add_price(b, "org_a", "openai", "gpt-4o-mini", 100000000, 400000000);
    add_price(b, NULL, "anthropic", "claude-3-5-haiku", 800000000,
              4000000000LL);
    add_org(b, "org_a", SP_ORG_REFUSE_UNPRICED);
    add_alias(b, "org_a", "azure", "prod-4o", "gpt-4o");
    add_budget(b, "bud_1", "org_a", SP_BUDGET_SCOPE_PROJECT, "p1", "", 1000);
    add_budget(b, "bud_2", "org_a", SP_BUDGET_SCOPE_PROJECT, "p1", "openai",
               2000);
    add_budget(b, "bud_3", "org_a", SP_BUDGET_SCOPE_ORG, "", "", 3000);
    add_budget(b, "bud_4", "org_b", SP_BUDGET_SCOPE_PROJECT, "p1", "", 4000);
    add_endpoint(b, "org_a", "openai", "POST", "/batches");
    add_endpoint(b, "org_a", "openai", "GET", "/batches/*");
    add_endpoint(b, "org_b", "openai", "POST", "/files");
    add_endpoint(b, "org_a", "anthropic", "POST", "/v1/messages/batches");
    add_setting(b, SP_SETTING_UPSTREAM_ALLOW, "10.0.0.0/8");
    add_setting(b, SP_SETTING_UPSTREAM_ALLOW, "127.0.0.0/8,*.test");
    add_setting(b, SP_SETTING_ADMIN_LISTEN, "127.0.0.1:8081");
    add_purge(b, "org_a", NULL, NULL, 1000);
    add_purge(b, "org_a", "openai", "", 3000);
    add_purge(b, "org_a", "openai", "gpt-4o", 2000);
    add_purge(b, "org_b", "anthropic", "claude-3-5-haiku", 5000);
    add_routes(b, "org_a", "[{\"id\":\"rr_old\"}]");
    add_routes(b, "org_a", "[{\"id\":\"rr_1\"}]");
    add_template(b, "org_a", "support", "{\"latest\":1}");
    add_template(b, "org_a", "support", "{\"latest\":2}");
    add_template(b, "org_b", "support", "{\"latest\":7}");
    add_policies(b, "org_a", "[{\"id\":\"pol_old\"}]");
    add_policies(b, "org_a", "[{\"id\":\"pol_1\"}]");

    return build(b, len);
}


static int
exercise_endpoint(const sp_snapshot_endpoint_t *endpoint, void *arg)
{
    /* refs are read through sp_snapshot_str, never trusted */
    *(size_t *) arg += endpoint->method.len + endpoint->pattern.offset;

    return 0;
}


static int
exercise_budget(const sp_snapshot_budget_t *budget, void *arg)
{
    /* every fixed field of a visited budget lies inside the file */
    *(int64_t *) arg += budget->limit_nano + budget->period_end_ms;

    return 0;
}


/* runs every lookup kind against s; must never crash whatever s holds */
static void
exercise(const sp_snapshot_t *s)
{
    const sp_snapshot_key_t       *key;
    const sp_snapshot_provider_t  *provider;
    const sp_snapshot_price_t     *price;
    const sp_snapshot_org_t       *org;
    const sp_snapshot_alias_t     *alias;
    uint8_t                        hash[SP_KEY_HASH_LEN];
    volatile size_t                sum;
    int64_t                        limits;
    size_t                         fields;
    sp_str_t                       str;
    sp_cache_config_t              cache;
    int                            i;

    sum = 0;

    for (i = 0; i < 5; i++) {
        key_hash_of(i, hash);
        key = sp_snapshot_find_key(s, hash);

        if (key) {
            str = sp_snapshot_str(s, key->key_id);
            sum += str.len ? (unsigned char) str.data[str.len - 1] : 0;
            str = sp_snapshot_str(s, key->org_id);
            sum += str.len ? (unsigned char) str.data[str.len - 1] : 0;
            str = sp_snapshot_str(s, key->agent_id);
            sum += str.len ? (unsigned char) str.data[str.len - 1] : 0;
        }
    }

    provider = sp_snapshot_find_provider(s, S("org_a"), S("openai"));

    if (provider) {
        str = sp_snapshot_str(s, provider->base_url);
        sum += str.len ? (unsigned char) str.data[str.len - 1] : 0;
        str = sp_snapshot_str(s, provider->api_key);
        sum += str.len ? (unsigned char) str.data[str.len - 1] : 0;
    }

    price = sp_snapshot_find_price(s, S("org_a"), S("openai"),
                                   S("gpt-4o-mini-2024-07-18"));
    if (price) {
        sum += (size_t) price->price.input;
    }

    price = sp_snapshot_find_price(s, S("org_b"), S("anthropic"),
                                   S("claude-3-5-haiku-20241022"));
    if (price) {
        sum += (size_t) price->price.output;
    }

    org = sp_snapshot_find_org(s, S("org_a"));
    if (org) {
        sum += org->flags;
    }

    alias = sp_snapshot_find_alias(s, S("org_a"), S("azure"), S("prod-4o"));
    if (alias) {
        str = sp_snapshot_str(s, alias->model);
        sum += str.len;
    }

    limits = 0;
    sum += sp_snapshot_foreach_budget(s, S("org_a"), SP_BUDGET_SCOPE_PROJECT,
                                      S("p1"), exercise_budget, &limits);
    sum += (size_t) limits;

    fields = 0;
    sum += sp_snapshot_foreach_endpoint(s, S("org_a"), S("openai"),
                                        exercise_endpoint, &fields);
    sum += fields;

    sp_snapshot_cache_config(s, S("org_a"), &cache);
    sum += cache.mode + cache.ttl_s + cache.max_entry_bytes;
    sum += (size_t) sp_snapshot_cache_purged_ms(s, S("org_a"), S("openai"),
                                                S("gpt-4o"));
    sum += (size_t) sp_snapshot_cache_purged_ms(s, S("org_b"),
                                                S("anthropic"),
                                                S("claude-3-5-haiku"));

    (void) sum;
}


static void
test_snapshot_finds_keys_with_all_fields(void **state)
{
    const sp_snapshot_key_t  *key;
    sp_snapshot_t             s;
    uint8_t                  *data, hash[SP_KEY_HASH_LEN];
    size_t                    len;
    sp_str_t                  str;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    assert_true(s.header->generation == 42);
    assert_true(s.header->entries[SP_TABLE_KEYS] == 3);
    assert_true(s.header->entries[SP_TABLE_PROVIDERS] == 3);
    assert_true(s.header->entries[SP_TABLE_PRICES] == 4);

    key_hash_of(2, hash);
    key = sp_snapshot_find_key(&s, hash);
    assert_non_null(key);
    assert_memory_equal(key->key_hash, hash, SP_KEY_HASH_LEN);

    str = sp_snapshot_str(&s, key->key_id);
    assert_int_equal(str.len, 5);
    assert_memory_equal(str.data, "key_2", 5);
    str = sp_snapshot_str(&s, key->org_id);
    assert_memory_equal(str.data, "org_b", 5);
    str = sp_snapshot_str(&s, key->name);
    assert_int_equal(str.len, 5);
    assert_memory_equal(str.data, "a key", 5);
    str = sp_snapshot_str(&s, key->department);
    assert_memory_equal(str.data, "eng", 3);
    str = sp_snapshot_str(&s, key->project);
    assert_int_equal(str.len, 0);
    str = sp_snapshot_str(&s, key->agent_id);
    assert_int_equal(str.len, 7);
    assert_memory_equal(str.data, "agent-7", 7);
    assert_int_equal(key->scopes, SP_SCOPE_PROXY);
    assert_int_equal(key->flags, 0);
    assert_int_equal(key->rpm_limit, 20);
    assert_int_equal(key->tpm_limit, 2000);
    assert_int_equal(key->agent_rpm_limit, 4000000002u);
    assert_int_equal(key->agent_tpm_limit, 7);

    /* records are 8-byte aligned */
    assert_int_equal(((const uint8_t *) key - data) % 8, 0);

    free(data);
}


static void
test_snapshot_absent_key_is_null(void **state)
{
    sp_snapshot_t  s;
    uint8_t       *data, hash[SP_KEY_HASH_LEN];
    size_t         len;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    key_hash_of(4, hash);
    assert_null(sp_snapshot_find_key(&s, hash));

    /* same first 8 bytes (the slot hash) as key 1, different rest */
    key_hash_of(1, hash);
    hash[31] ^= 1;
    assert_null(sp_snapshot_find_key(&s, hash));

    free(data);
}


static void
test_snapshot_finds_providers_by_org_and_name(void **state)
{
    const sp_snapshot_provider_t  *p;
    sp_snapshot_t                  s;
    uint8_t                       *data;
    size_t                         len;
    sp_str_t                       str;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    p = sp_snapshot_find_provider(&s, S("org_a"), S("openai"));
    assert_non_null(p);
    str = sp_snapshot_str(&s, p->base_url);
    assert_int_equal(str.len, strlen("https://api.openai.com"));
    assert_memory_equal(str.data, "https://api.openai.com", str.len);
    str = sp_snapshot_str(&s, p->api_key);
    assert_int_equal(str.len, 4);
    assert_memory_equal(str.data, "sk-a", 4);

    p = sp_snapshot_find_provider(&s, S("org_b"), S("openai"));
    assert_non_null(p);
    str = sp_snapshot_str(&s, p->api_key);
    assert_memory_equal(str.data, "sk-b", 4);

    p = sp_snapshot_find_provider(&s, S("org_a"), S("anthropic"));
    assert_non_null(p);

    assert_null(sp_snapshot_find_provider(&s, S("org_b"), S("anthropic")));
    assert_null(sp_snapshot_find_provider(&s, S("org_c"), S("openai")));
    assert_null(sp_snapshot_find_provider(&s, S("org_a"), S("opena")));
    assert_null(sp_snapshot_find_provider(&s, S("org_"), S("aopenai")));
    assert_null(sp_snapshot_find_provider(&s, S(""), S("")));

    free(data);
}


static void
test_snapshot_org_price_beats_list_price(void **state)
{
    const sp_snapshot_price_t  *p;
    sp_snapshot_t               s;
    uint8_t                    *data;
    size_t                      len;
    sp_str_t                    str;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    p = sp_snapshot_find_price(&s, S("org_a"), S("openai"), S("gpt-4o-mini"));
    assert_non_null(p);
    assert_true(p->price.input == 100000000);
    assert_true(p->price.output == 400000000);
    str = sp_snapshot_str(&s, p->org_id);
    assert_memory_equal(str.data, "org_a", 5);

    p = sp_snapshot_find_price(&s, S("org_b"), S("openai"), S("gpt-4o-mini"));
    assert_non_null(p);
    assert_true(p->price.input == 150000000);
    assert_true(p->price.output == 600000000);
    assert_true(p->price.cached_input == 75000000);
    assert_true(p->max_output_tokens == 16384);
    assert_int_equal(sp_snapshot_str(&s, p->org_id).len, 0);

    /* org_a has no own gpt-4o price: the list price */
    p = sp_snapshot_find_price(&s, S("org_a"), S("openai"), S("gpt-4o"));
    assert_non_null(p);
    assert_true(p->price.input == 2500000000LL);

    free(data);
}


static void
test_snapshot_price_falls_back_without_date_suffix(void **state)
{
    const sp_snapshot_price_t  *p;
    sp_snapshot_t               s;
    uint8_t                    *data;
    size_t                      len;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    p = sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                               S("gpt-4o-mini-2024-07-18"));
    assert_non_null(p);
    assert_true(p->price.input == 150000000);

    /* the organisation's own price, through the fallback too */
    p = sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                               S("gpt-4o-mini-2024-07-18"));
    assert_non_null(p);
    assert_true(p->price.input == 100000000);

    p = sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                               S("gpt-4o-2024-08-06"));
    assert_non_null(p);
    assert_true(p->price.input == 2500000000LL);

    p = sp_snapshot_find_price(&s, S("org_b"), S("anthropic"),
                               S("claude-3-5-haiku-20241022"));
    assert_non_null(p);
    assert_true(p->price.input == 800000000);

    /* not date suffixes */
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                       S("gpt-4o-mini-2024-07-1x")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                       S("gpt-4o-mini-2024_07_18")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("anthropic"),
                                       S("claude-3-5-haiku-2024102")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                       S("gpt-4o-mini-large")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                       S("-2024-07-18")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"), S("")));

    /* unknown provider or model */
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("google"),
                                       S("gpt-4o-mini")));
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("gpt-5")));

    free(data);
}


static void
test_snapshot_dated_price_beats_undated(void **state)
{
    const sp_snapshot_price_t  *p;
    sp_snapshot_builder_t      *b;
    sp_snapshot_t               s;
    uint8_t                    *data;
    size_t                      len;

    (void) state;

    b = sp_snapshot_builder_new(1);
    add_price(b, NULL, "openai", "gpt-4o", 2500000000LL, 10000000000LL);
    add_price(b, NULL, "openai", "gpt-4o-2024-05-13", 5000000000LL,
              15000000000LL);
    data = build(b, &len);
    open_ok(&s, data, len);

    p = sp_snapshot_find_price(&s, S("o"), S("openai"),
                               S("gpt-4o-2024-05-13"));
    assert_non_null(p);
    assert_true(p->price.input == 5000000000LL);

    p = sp_snapshot_find_price(&s, S("o"), S("openai"),
                               S("gpt-4o-2024-08-06"));
    assert_non_null(p);
    assert_true(p->price.input == 2500000000LL);

    free(data);
}


static void
test_snapshot_later_duplicate_replaces_earlier(void **state)
{
    const sp_snapshot_key_t       *key;
    const sp_snapshot_provider_t  *provider;
    const sp_snapshot_price_t     *price;
    sp_snapshot_builder_t         *b;
    sp_snapshot_t                  s;
    uint8_t                       *data, hash[SP_KEY_HASH_LEN];
    size_t                         len;
    sp_str_t                       str;

    (void) state;

    b = sp_snapshot_builder_new(7);
    add_key(b, 1, "key_old", "org_a");
    add_key(b, 2, "key_other", "org_a");
    add_key(b, 1, "key_new", "org_a");
    add_provider(b, "org_a", "openai", "http://old", "sk-old");
    add_provider(b, "org_a", "openai", "http://new", "sk-new");
    add_price(b, NULL, "openai", "gpt-4o-mini", 1, 2);
    add_price(b, "org_a", "openai", "gpt-4o-mini", 3, 4);
    add_price(b, NULL, "openai", "gpt-4o-mini", 5, 6);
    data = build(b, &len);
    open_ok(&s, data, len);

    assert_true(s.header->entries[SP_TABLE_KEYS] == 2);
    assert_true(s.header->entries[SP_TABLE_PROVIDERS] == 1);
    assert_true(s.header->entries[SP_TABLE_PRICES] == 2);

    key_hash_of(1, hash);
    key = sp_snapshot_find_key(&s, hash);
    assert_non_null(key);
    str = sp_snapshot_str(&s, key->key_id);
    assert_int_equal(str.len, 7);
    assert_memory_equal(str.data, "key_new", 7);

    key_hash_of(2, hash);
    key = sp_snapshot_find_key(&s, hash);
    assert_non_null(key);
    str = sp_snapshot_str(&s, key->key_id);
    assert_memory_equal(str.data, "key_other", 9);

    provider = sp_snapshot_find_provider(&s, S("org_a"), S("openai"));
    assert_non_null(provider);
    str = sp_snapshot_str(&s, provider->base_url);
    assert_int_equal(str.len, 10);
    assert_memory_equal(str.data, "http://new", 10);

    price = sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                   S("gpt-4o-mini"));
    assert_non_null(price);
    assert_true(price->price.input == 5);

    price = sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                   S("gpt-4o-mini"));
    assert_non_null(price);
    assert_true(price->price.input == 3);

    free(data);
}


static void
test_snapshot_keys_sharing_slot_hash_are_all_found(void **state)
{
    const sp_snapshot_key_t  *key;
    sp_snapshot_key_in_t      in;
    sp_snapshot_builder_t    *b;
    sp_snapshot_t             s;
    uint8_t                  *data, hash[SP_KEY_HASH_LEN];
    size_t                    len;
    char                      id[16];
    int                       i;

    (void) state;

    /* 20 keys, equal first 8 bytes (the slot hash), then a replacement */
    b = sp_snapshot_builder_new(3);

    for (i = 0; i <= 20; i++) {
        memset(&in, 0, sizeof(in));
        memset(in.key_hash, 0xab, SP_KEY_HASH_LEN);
        in.key_hash[31] = (uint8_t) (i == 20 ? 7 : i);
        snprintf(id, sizeof(id), "key_%d", i);
        in.key_id = id;
        in.org_id = "o";
        assert_int_equal(sp_snapshot_add_key(b, &in), SP_OK);
    }

    data = build(b, &len);
    open_ok(&s, data, len);
    assert_true(s.header->entries[SP_TABLE_KEYS] == 20);

    for (i = 0; i < 20; i++) {
        memset(hash, 0xab, SP_KEY_HASH_LEN);
        hash[31] = (uint8_t) i;
        key = sp_snapshot_find_key(&s, hash);
        assert_non_null(key);
        snprintf(id, sizeof(id), "key_%d", i == 7 ? 20 : i);
        assert_int_equal(sp_snapshot_str(&s, key->key_id).len, strlen(id));
        assert_memory_equal(sp_snapshot_str(&s, key->key_id).data, id,
                            strlen(id));
    }

    memset(hash, 0xab, SP_KEY_HASH_LEN);
    hash[31] = 20;
    assert_null(sp_snapshot_find_key(&s, hash));

    free(data);
}


static void
test_snapshot_empty_builder_opens_and_finds_nothing(void **state)
{
    sp_snapshot_builder_t  *b;
    sp_snapshot_t           s;
    uint8_t                *data, hash[SP_KEY_HASH_LEN];
    size_t                  len;
    int                     t;

    (void) state;

    b = sp_snapshot_builder_new(0);
    data = build(b, &len);
    open_ok(&s, data, len);

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        assert_true(s.header->tables[t].slots == 0);
    }

    key_hash_of(1, hash);
    assert_null(sp_snapshot_find_key(&s, hash));
    assert_null(sp_snapshot_find_provider(&s, S("a"), S("openai")));
    assert_null(sp_snapshot_find_price(&s, S("a"), S("openai"),
                                       S("gpt-4o-2024-08-06")));

    free(data);
}


static void
test_snapshot_100k_keys_all_findable(void **state)
{
    enum { N = 100000 };
    const sp_snapshot_key_t  *key;
    sp_snapshot_builder_t    *b;
    sp_snapshot_t             s;
    uint8_t                  *data, hash[SP_KEY_HASH_LEN];
    size_t                    len;
    char                      id[32];
    sp_str_t                  str;
    int                       i, n;

    (void) state;

    b = sp_snapshot_builder_new(100000);

    for (i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "key_%d", i);
        add_key(b, i, id, "org_big");
    }

    data = build(b, &len);
    open_ok(&s, data, len);

    assert_true(s.header->entries[SP_TABLE_KEYS] == N);
    assert_true(s.header->tables[SP_TABLE_KEYS].slots >= 2 * N);

    for (i = 0; i < N; i++) {
        key_hash_of(i, hash);
        key = sp_snapshot_find_key(&s, hash);

        if (key == NULL) {
            fail_msg("key %d not found", i);
        }

        n = snprintf(id, sizeof(id), "key_%d", i);
        str = sp_snapshot_str(&s, key->key_id);

        if (str.len != (size_t) n || memcmp(str.data, id, str.len) != 0) {
            fail_msg("key %d found as \"%.*s\"", i, (int) str.len, str.data);
        }
    }

    for (i = N; i < N + 10000; i++) {
        key_hash_of(i, hash);
        assert_null(sp_snapshot_find_key(&s, hash));
    }

    free(data);
}


static void
test_snapshot_long_lookup_strings(void **state)
{
    const sp_snapshot_provider_t  *provider;
    const sp_snapshot_price_t     *price;
    sp_snapshot_builder_t         *b;
    sp_snapshot_t                  s;
    uint8_t                       *data;
    size_t                         len, lens[] = { 1, 1021, 1022, 1023, 1024,
                                                   1025, 4000 };
    char                          *org, *model;
    size_t                         i, j;

    (void) state;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
            org = malloc(lens[i] + 1);
            model = malloc(lens[j] + 1);
            memset(org, 'o', lens[i]);
            org[lens[i]] = '\0';
            memset(model, 'm', lens[j]);
            model[lens[j]] = '\0';

            b = sp_snapshot_builder_new(1);
            add_provider(b, org, model, "http://x", "k");
            add_price(b, org, "openai", model, 11, 12);
            add_price(b, org, model, "gpt", 13, 14);
            data = build(b, &len);
            open_ok(&s, data, len);

            provider = sp_snapshot_find_provider(&s, S(org), S(model));
            assert_non_null(provider);

            price = sp_snapshot_find_price(&s, S(org), S("openai"),
                                           S(model));
            assert_non_null(price);
            assert_true(price->price.input == 11);

            price = sp_snapshot_find_price(&s, S(org), S(model), S("gpt"));
            assert_non_null(price);
            assert_true(price->price.input == 13);

            free(data);
            free(org);
            free(model);
        }
    }
}


/* ---- hostile files --------------------------------------------------- */


static uint8_t *
copy_of(const uint8_t *data, size_t len)
{
    uint8_t  *p;

    p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, data, len);

    return p;
}


static void
reseal(uint8_t *data)
{
    sp_snapshot_header_t  *h = (sp_snapshot_header_t *) data;

    h->checksum = sp_hash64(data + h->header_size, h->length - h->header_size,
                            h->generation);
}


static void
open_fails(const uint8_t *data, size_t len, const char *why)
{
    sp_snapshot_t  s;
    char           err[256];
    uint8_t       *copy;

    copy = copy_of(data, len);
    err[0] = '\0';

    if (sp_snapshot_open(&s, copy, len, err, sizeof(err)) == SP_OK) {
        free(copy);
        fail_msg("snapshot with %s was accepted", why);
    }

    assert_true(strlen(err) > 0);
    free(copy);
}


static void
test_snapshot_rejects_truncated_file(void **state)
{
    uint8_t  *data;
    size_t    len, n;
    char      why[64];

    (void) state;

    data = small_snapshot(&len);

    for (n = 0; n < len; n++) {
        snprintf(why, sizeof(why), "only %zu of %zu bytes", n, len);
        open_fails(data, n, why);
    }

    free(data);
}


static void
test_snapshot_rejects_extended_file(void **state)
{
    uint8_t  *data, *longer;
    size_t    len;

    (void) state;

    data = small_snapshot(&len);
    longer = calloc(1, len + 8);
    memcpy(longer, data, len);
    open_fails(longer, len + 8, "8 extra bytes");

    free(longer);
    free(data);
}


/*
 * Header fields that no reader uses: a flip there may be accepted, and the
 * lookups must stay correct.
 */
static int
informational(size_t off)
{
    return (off >= offsetof(sp_snapshot_header_t, created_at)
            && off < offsetof(sp_snapshot_header_t, created_at) + 8)
           || (off >= offsetof(sp_snapshot_header_t, entries)
               && off < offsetof(sp_snapshot_header_t, entries)
                        + sizeof(((sp_snapshot_header_t *) 0)->entries));
}


static void
flip_and_open(const uint8_t *data, size_t len, size_t off, uint8_t mask,
    size_t *accepted)
{
    sp_snapshot_t  s;
    uint8_t       *copy;
    char           err[256];

    copy = copy_of(data, len);
    copy[off] ^= mask;

    if (sp_snapshot_open(&s, copy, len, err, sizeof(err)) == SP_OK) {
        exercise(&s);

        if (!informational(off)) {
            (*accepted)++;
            print_message("flip 0x%02x at byte %zu accepted\n", mask, off);
        }
    }

    free(copy);
}


static void
test_snapshot_rejects_every_byte_flipped(void **state)
{
    uint8_t  *data;
    size_t    len, off, accepted;

    (void) state;

    data = small_snapshot(&len);
    accepted = 0;

    for (off = 0; off < len; off++) {
        flip_and_open(data, len, off, 0xff, &accepted);
    }

    assert_int_equal(accepted, 0);

    free(data);
}


static void
test_snapshot_rejects_every_bit_flipped(void **state)
{
    uint8_t  *data;
    size_t    len, off, accepted;
    int       bit;

    (void) state;

    data = small_snapshot(&len);
    accepted = 0;

    for (off = 0; off < len; off++) {
        for (bit = 0; bit < 8; bit++) {
            flip_and_open(data, len, off, (uint8_t) (1u << bit), &accepted);
        }
    }

    assert_int_equal(accepted, 0);

    free(data);
}


static void
test_snapshot_rejects_wrong_magic_and_version(void **state)
{
    sp_snapshot_header_t  *h;
    uint8_t               *data;
    size_t                 len;

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;

    memcpy(h->magic, "SPSNAP02", 8);
    open_fails(data, len, "magic SPSNAP02");
    memcpy(h->magic, "spsnap01", 8);
    open_fails(data, len, "magic spsnap01");
    memcpy(h->magic, SP_SNAPSHOT_MAGIC, 8);

    h->version = SP_SNAPSHOT_VERSION + 1;
    open_fails(data, len, "a newer version");
    h->version = 0;
    open_fails(data, len, "version 0");
    h->version = SP_SNAPSHOT_VERSION;

    h->header_size = sizeof(sp_snapshot_header_t) - 8;
    reseal(data);
    open_fails(data, len, "a short header_size");
    h->header_size = (uint32_t) len + 8;
    open_fails(data, len, "header_size past the end");
    h->header_size = sizeof(sp_snapshot_header_t);
    reseal(data);

    h->generation++;
    open_fails(data, len, "a generation the checksum was not made with");
    h->generation--;

    free(data);
}


static void
test_snapshot_rejects_huge_slot_counts(void **state)
{
    sp_snapshot_header_t  *h;
    uint8_t               *data;
    size_t                 len;
    int                    t;
    uint64_t               saved;
    static const uint64_t  bad[] = {
        (uint64_t) 1 << 63, (uint64_t) 1 << 60, (uint64_t) 1 << 32,
        (uint64_t) 1 << 20, 3, 24, UINT64_MAX
    };
    size_t                 i;
    char                   why[64];

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        saved = h->tables[t].slots;

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            h->tables[t].slots = bad[i];
            reseal(data);
            snprintf(why, sizeof(why), "table %d slots %llu", t,
                     (unsigned long long) bad[i]);
            open_fails(data, len, why);
        }

        h->tables[t].slots = saved;
    }

    free(data);
}


static void
test_snapshot_rejects_tables_outside_file(void **state)
{
    sp_snapshot_header_t  *h;
    uint8_t               *data;
    size_t                 len, i;
    int                    t;
    uint64_t               saved, slots_bytes;
    uint64_t               bad[8];
    char                   why[96];

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        saved = h->tables[t].offset;
        slots_bytes = h->tables[t].slots * sizeof(sp_snapshot_slot_t);

        bad[0] = 0;                                   /* over the header */
        bad[1] = 8;
        bad[2] = saved + 4;                           /* misaligned */
        bad[3] = (len - slots_bytes + 8) & ~7ULL;     /* runs past the end */
        bad[4] = len;
        bad[5] = 0 - slots_bytes;                     /* wraps to 0 */
        bad[6] = 0 - slots_bytes + 128;               /* wraps into file */
        bad[7] = UINT64_MAX & ~7ULL;

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            h->tables[t].offset = bad[i];
            reseal(data);
            snprintf(why, sizeof(why), "table %d at offset %llu", t,
                     (unsigned long long) bad[i]);
            open_fails(data, len, why);
        }

        h->tables[t].offset = saved;
    }

    free(data);
}


static sp_snapshot_slot_t *
first_used_slot(uint8_t *data, int table)
{
    sp_snapshot_header_t  *h = (sp_snapshot_header_t *) data;
    sp_snapshot_slot_t    *slots;
    uint64_t               i;

    slots = (sp_snapshot_slot_t *) (data + h->tables[table].offset);

    for (i = 0; i < h->tables[table].slots; i++) {
        if (slots[i].record) {
            return &slots[i];
        }
    }

    fail_msg("table %d has no records", table);

    return NULL;
}


/* the key among 0..4 whose slot hash is hash, looked up in s */
static const sp_snapshot_key_t *
find_key_by_slot_hash(const sp_snapshot_t *s, uint64_t hash)
{
    uint8_t   key_hash[SP_KEY_HASH_LEN];
    uint64_t  h;
    int       i;

    for (i = 0; i < 5; i++) {
        key_hash_of(i, key_hash);
        memcpy(&h, key_hash, sizeof(h));

        if (h == hash) {
            return sp_snapshot_find_key(s, key_hash);
        }
    }

    fail_msg("no test key has slot hash %llx", (unsigned long long) hash);

    return NULL;
}


static void
test_snapshot_record_offsets_out_of_bounds_are_not_followed(void **state)
{
    sp_snapshot_slot_t  *slot;
    sp_snapshot_t        s;
    uint8_t             *data, *copy;
    size_t               len, i;
    uint64_t             saved;
    int                  t;
    uint64_t             bad[7];

    (void) state;

    data = small_snapshot(&len);

    for (t = 0; t < SP_TABLE_COUNT; t++) {
        bad[0] = len;
        bad[1] = len - 8;
        bad[2] = (len - sizeof(sp_snapshot_key_t) + 8) & ~7ULL;
        bad[3] = 3;
        bad[4] = UINT64_MAX & ~7ULL;
        bad[5] = (uint64_t) 1 << 40;
        bad[6] = 0 - (uint64_t) len;

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            copy = copy_of(data, len);
            slot = first_used_slot(copy, t);
            saved = slot->record;
            slot->record = bad[i];
            reseal(copy);

            /* offsets are checked when followed, not at open */
            if (sp_snapshot_open(&s, copy, len, NULL, 0) == SP_OK) {
                exercise(&s);

                if (t == SP_TABLE_KEYS) {
                    assert_null(find_key_by_slot_hash(&s, slot->hash));
                }
            }

            (void) saved;
            free(copy);
        }
    }

    free(data);
}


/* xorshift64*: deterministic, so a failure reproduces */
static uint64_t
next_random(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;

    return *x * 0x2545f4914f6cdd1dULL;
}


/*
 * Random corruption past the checksum (resealed), so that the lookups,
 * not the checksum, meet it: found records must lie inside the file.
 */
static void
test_snapshot_resealed_random_corruption_never_escapes(void **state)
{
    const sp_snapshot_key_t  *key;
    sp_snapshot_t             s;
    uint8_t                  *data, *copy, hash[SP_KEY_HASH_LEN];
    uint64_t                  x;
    size_t                    len, off;
    int                       round, n, i;

    (void) state;

    data = small_snapshot(&len);
    x = 0x9e3779b97f4a7c15ULL;

    for (round = 0; round < 20000; round++) {
        copy = copy_of(data, len);
        n = 1 + (int) (next_random(&x) % 8);

        for (i = 0; i < n; i++) {
            /* mostly past the header, where the checksum would catch it */
            off = sizeof(sp_snapshot_header_t)
                  + next_random(&x) % (len - sizeof(sp_snapshot_header_t));

            if (next_random(&x) % 4 == 0) {
                off = next_random(&x) % len;
            }

            copy[off] = (uint8_t) next_random(&x);
        }

        /* a corrupted header_size or length cannot be resealed */
        if (((sp_snapshot_header_t *) copy)->header_size <= len
            && ((sp_snapshot_header_t *) copy)->length == len)
        {
            reseal(copy);
        }

        if (sp_snapshot_open(&s, copy, len, NULL, 0) == SP_OK) {
            exercise(&s);

            for (i = 0; i < 5; i++) {
                key_hash_of(i, hash);
                key = sp_snapshot_find_key(&s, hash);

                if (key) {
                    assert_true((const uint8_t *) key >= copy);
                    assert_true((const uint8_t *) (key + 1) <= copy + len);
                    assert_memory_equal(key->key_hash, hash,
                                        SP_KEY_HASH_LEN);
                }
            }
        }

        free(copy);
    }

    free(data);
}


static void
test_snapshot_out_of_bounds_refs_read_as_empty(void **state)
{
    const sp_snapshot_key_t  *key;
    sp_snapshot_key_t        *k;
    sp_snapshot_t             s;
    sp_snapshot_ref_t         ref;
    uint8_t                  *data, hash[SP_KEY_HASH_LEN];
    size_t                    len;
    sp_str_t                  str;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    ref.offset = (uint32_t) len;
    ref.len = 1;
    assert_int_equal(sp_snapshot_str(&s, ref).len, 0);
    ref.offset = (uint32_t) len - 1;
    ref.len = 1;
    assert_int_equal(sp_snapshot_str(&s, ref).len, 1);
    ref.len = 2;
    assert_int_equal(sp_snapshot_str(&s, ref).len, 0);
    ref.offset = UINT32_MAX;
    ref.len = UINT32_MAX;
    assert_int_equal(sp_snapshot_str(&s, ref).len, 0);
    ref.offset = 8;
    ref.len = UINT32_MAX;
    assert_int_equal(sp_snapshot_str(&s, ref).len, 0);

    /* a record whose refs point past the end: found, strings empty */
    key_hash_of(1, hash);
    key = sp_snapshot_find_key(&s, hash);
    assert_non_null(key);
    k = (sp_snapshot_key_t *) key;
    k->key_id.offset = UINT32_MAX - 2;
    k->org_id.len = UINT32_MAX;
    reseal(data);
    open_ok(&s, data, len);

    key = sp_snapshot_find_key(&s, hash);
    assert_non_null(key);
    str = sp_snapshot_str(&s, key->key_id);
    assert_int_equal(str.len, 0);
    str = sp_snapshot_str(&s, key->org_id);
    assert_int_equal(str.len, 0);
    exercise(&s);

    free(data);
}


static void
test_snapshot_full_table_without_empty_slot_terminates(void **state)
{
    sp_snapshot_header_t  *h;
    sp_snapshot_slot_t    *slots;
    sp_snapshot_t          s;
    uint8_t               *data, hash[SP_KEY_HASH_LEN];
    size_t                 len;
    uint64_t               i, used;
    int                    t;

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;

    /* every slot occupied, every hash a miss: probing must stop */
    for (t = 0; t < SP_TABLE_COUNT; t++) {
        slots = (sp_snapshot_slot_t *) (data + h->tables[t].offset);
        used = first_used_slot(data, t)->record;

        for (i = 0; i < h->tables[t].slots; i++) {
            slots[i].record = used;
            slots[i].hash = 0x5555555555555555ULL + i;
        }
    }

    reseal(data);
    open_ok(&s, data, len);

    key_hash_of(1, hash);
    assert_null(sp_snapshot_find_key(&s, hash));
    assert_null(sp_snapshot_find_provider(&s, S("org_a"), S("openai")));
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("gpt-4o-mini-2024-07-18")));

    free(data);
}


/* ---- publish ---------------------------------------------------------- */


static char  tmpdir[256];


static int
make_tmpdir(void **state)
{
    (void) state;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_lib_snapshot.XXXXXX");

    return mkdtemp(tmpdir) ? 0 : -1;
}


static int
remove_tmpdir(void **state)
{
    DIR            *dir;
    struct dirent  *de;
    char            path[512];

    (void) state;

    dir = opendir(tmpdir);

    if (dir) {
        while ((de = readdir(dir)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
                unlink(path);
            }
        }

        closedir(dir);
    }

    return rmdir(tmpdir);
}


static int
count_entries(const char *path)
{
    DIR            *dir;
    struct dirent  *de;
    int             n;

    dir = opendir(path);
    assert_non_null(dir);
    n = 0;

    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            n++;
        }
    }

    closedir(dir);

    return n;
}


static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE     *f;
    uint8_t  *data;
    long      n;

    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t) n + 1);
    assert_int_equal(fread(data, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    *len = (size_t) n;

    return data;
}


static void
test_snapshot_publish_writes_file_with_mode_and_no_temp(void **state)
{
    sp_snapshot_builder_t  *b;
    sp_snapshot_t           s;
    struct stat             st;
    mode_t                  old;
    uint8_t                *data, hash[SP_KEY_HASH_LEN];
    size_t                  len;
    char                    path[512], err[256];

    (void) state;

    old = umask(077);

    b = sp_snapshot_builder_new(9);
    add_key(b, 1, "key_1", "org_a");
    assert_int_equal(sp_snapshot_publish(b, tmpdir, SP_SNAPSHOT_FILE, 0640,
                                         err, sizeof(err)), SP_OK);
    sp_snapshot_builder_free(b);

    snprintf(path, sizeof(path), "%s/%s", tmpdir, SP_SNAPSHOT_FILE);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(count_entries(tmpdir), 1);

    data = read_file(path, &len);
    open_ok(&s, data, len);
    assert_true(s.header->generation == 9);
    key_hash_of(1, hash);
    assert_non_null(sp_snapshot_find_key(&s, hash));
    free(data);

    /* a second publish replaces the file */
    b = sp_snapshot_builder_new(10);
    add_key(b, 2, "key_2", "org_a");
    assert_int_equal(sp_snapshot_publish(b, tmpdir, SP_SNAPSHOT_FILE, 0600,
                                         err, sizeof(err)), SP_OK);
    sp_snapshot_builder_free(b);

    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_entries(tmpdir), 1);

    data = read_file(path, &len);
    open_ok(&s, data, len);
    assert_true(s.header->generation == 10);
    assert_null(sp_snapshot_find_key(&s, hash));
    key_hash_of(2, hash);
    assert_non_null(sp_snapshot_find_key(&s, hash));
    free(data);

    umask(old);
}


static void
test_snapshot_publish_into_missing_dir_fails_with_reason(void **state)
{
    sp_snapshot_builder_t  *b;
    char                    dir[512], err[256];

    (void) state;

    snprintf(dir, sizeof(dir), "%s/missing", tmpdir);

    b = sp_snapshot_builder_new(1);
    err[0] = '\0';
    assert_int_equal(sp_snapshot_publish(b, dir, SP_SNAPSHOT_FILE, 0640,
                                         err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "missing"));
    sp_snapshot_builder_free(b);
}


static void
test_snapshot_publish_failure_leaves_no_temp_file(void **state)
{
    sp_snapshot_builder_t  *b;
    char                    path[512], err[256];

    (void) state;

    /* rename() over a directory fails after the temp file was written */
    snprintf(path, sizeof(path), "%s/%s", tmpdir, SP_SNAPSHOT_FILE);
    assert_int_equal(mkdir(path, 0700), 0);

    b = sp_snapshot_builder_new(1);
    add_key(b, 1, "key_1", "org_a");
    err[0] = '\0';
    assert_int_equal(sp_snapshot_publish(b, tmpdir, SP_SNAPSHOT_FILE, 0640,
                                         err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "rename"));
    sp_snapshot_builder_free(b);

    assert_int_equal(count_entries(tmpdir), 1);
    assert_int_equal(rmdir(path), 0);
}


static void
test_snapshot_publish_rejects_too_long_path(void **state)
{
    sp_snapshot_builder_t  *b;
    char                   *dir, err[256];

    (void) state;

    dir = malloc(5000);
    memset(dir, 'd', 4999);
    dir[0] = '/';
    dir[4999] = '\0';

    b = sp_snapshot_builder_new(1);
    err[0] = '\0';
    assert_int_equal(sp_snapshot_publish(b, dir, SP_SNAPSHOT_FILE, 0640, err,
                                         sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "too long"));

    /* no error buffer */
    assert_int_equal(sp_snapshot_publish(b, dir, SP_SNAPSHOT_FILE, 0640, NULL,
                                         0), SP_ERROR);
    sp_snapshot_builder_free(b);
    free(dir);
    assert_int_equal(count_entries(tmpdir), 0);
}


static void
test_snapshot_finds_org_flags_and_aliases(void **state)
{
    uint8_t                    *data;
    size_t                      len;
    sp_snapshot_t               s;
    char                        err[256];
    const sp_snapshot_org_t    *org;
    const sp_snapshot_alias_t  *alias;
    sp_str_t                    model;

    (void) state;

    data = small_snapshot(&len);
    assert_int_equal(sp_snapshot_open(&s, data, len, err, sizeof(err)),
                     SP_OK);

    org = sp_snapshot_find_org(&s, (sp_str_t) { "org_a", 5 });
    assert_non_null(org);
    assert_int_equal(org->flags, SP_ORG_REFUSE_UNPRICED);
    assert_null(sp_snapshot_find_org(&s, (sp_str_t) { "org_b", 5 }));

    alias = sp_snapshot_find_alias(&s, (sp_str_t) { "org_a", 5 },
                                   (sp_str_t) { "azure", 5 },
                                   (sp_str_t) { "prod-4o", 7 });
    assert_non_null(alias);
    model = sp_snapshot_str(&s, alias->model);
    assert_int_equal(model.len, 6);
    assert_memory_equal(model.data, "gpt-4o", 6);

    /* another organisation's deployment of the same name is not ours */
    assert_null(sp_snapshot_find_alias(&s, (sp_str_t) { "org_b", 5 },
                                       (sp_str_t) { "azure", 5 },
                                       (sp_str_t) { "prod-4o", 7 }));

    free(data);
}


static int
sum_budget_limits(const sp_snapshot_budget_t *budget, void *arg)
{
    *(int64_t *) arg += budget->limit_nano;

    return 0;
}


static void
test_snapshot_visits_every_budget_of_a_scope(void **state)
{
    uint8_t        *data;
    size_t          len;
    int64_t         sum;
    sp_snapshot_t   s;
    char            err[256];

    (void) state;

    data = small_snapshot(&len);
    assert_int_equal(sp_snapshot_open(&s, data, len, err, sizeof(err)),
                     SP_OK);

    /* two budgets share (org_a, project, p1); org_b's is not visited */
    sum = 0;
    assert_int_equal(sp_snapshot_foreach_budget(&s, (sp_str_t) { "org_a", 5 },
                                                SP_BUDGET_SCOPE_PROJECT,
                                                (sp_str_t) { "p1", 2 },
                                                sum_budget_limits, &sum), 2);
    assert_true(sum == 3000);

    sum = 0;
    assert_int_equal(sp_snapshot_foreach_budget(&s, (sp_str_t) { "org_a", 5 },
                                                SP_BUDGET_SCOPE_ORG,
                                                (sp_str_t) { "", 0 },
                                                sum_budget_limits, &sum), 1);
    assert_true(sum == 3000);

    /* a scope value of another scope type is not a match */
    sum = 0;
    assert_int_equal(sp_snapshot_foreach_budget(&s, (sp_str_t) { "org_a", 5 },
                                                SP_BUDGET_SCOPE_DEPARTMENT,
                                                (sp_str_t) { "p1", 2 },
                                                sum_budget_limits, &sum), 0);

    free(data);
}


static void
test_snapshot_verified_in_steps_like_at_once(void **state)
{
    uint8_t          *data;
    size_t            len;
    int               rc, steps;
    sp_snapshot_t     s;
    sp_hash_state_t   st;
    char              err[256];

    (void) state;

    data = small_snapshot(&len);

    assert_int_equal(sp_snapshot_open_structure(&s, data, len, err,
                                                sizeof(err)), SP_OK);
    sp_snapshot_verify_begin(&s, &st);

    steps = 0;

    do {
        rc = sp_snapshot_verify(&s, &st, 64, err, sizeof(err));
        steps++;
    } while (rc == SP_AGAIN);

    assert_int_equal(rc, SP_OK);
    assert_true(steps > 1);

    /* a flipped byte past the header is found, in steps too */
    data[len - 1] ^= 0x01;

    assert_int_equal(sp_snapshot_open_structure(&s, data, len, err,
                                                sizeof(err)), SP_OK);
    sp_snapshot_verify_begin(&s, &st);

    do {
        rc = sp_snapshot_verify(&s, &st, 64, err, sizeof(err));
    } while (rc == SP_AGAIN);

    assert_int_equal(rc, SP_ERROR);
    assert_non_null(strstr(err, "checksum"));

    free(data);
}


typedef struct {
    const sp_snapshot_t  *snap;
    int                   seen;
    int                   stop_after;     /* 0: never stop */
    char                  got[8][64];     /* "METHOD pattern" */
} endpoint_visit_t;


static int
collect_endpoint(const sp_snapshot_endpoint_t *endpoint, void *arg)
{
    endpoint_visit_t  *v = arg;
    sp_str_t           method, pattern;

    method = sp_snapshot_str(v->snap, endpoint->method);
    pattern = sp_snapshot_str(v->snap, endpoint->pattern);

    if (v->seen < 8) {
        snprintf(v->got[v->seen], sizeof(v->got[0]), "%.*s %.*s",
                 (int) method.len, method.data, (int) pattern.len,
                 pattern.data);
    }

    v->seen++;

    return v->stop_after != 0 && v->seen >= v->stop_after;
}


static int
endpoint_seen(const endpoint_visit_t *v, const char *what)
{
    int  i;

    for (i = 0; i < v->seen && i < 8; i++) {
        if (strcmp(v->got[i], what) == 0) {
            return 1;
        }
    }

    return 0;
}


static size_t
visit_endpoints(const sp_snapshot_t *s, const char *org,
    const char *provider, endpoint_visit_t *v, int stop_after)
{
    memset(v, 0, sizeof(*v));
    v->snap = s;
    v->stop_after = stop_after;

    return sp_snapshot_foreach_endpoint(s, S(org), S(provider),
                                        collect_endpoint, v);
}


static void
test_snapshot_visits_every_endpoint_of_an_org_and_provider(void **state)
{
    uint8_t           *data;
    size_t             len;
    sp_snapshot_t      s;
    endpoint_visit_t   v;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    assert_true(s.header->entries[SP_TABLE_ENDPOINTS] == 4);

    assert_int_equal(visit_endpoints(&s, "org_a", "openai", &v, 0), 2);
    assert_int_equal(v.seen, 2);
    assert_true(endpoint_seen(&v, "POST /batches"));
    assert_true(endpoint_seen(&v, "GET /batches/*"));

    /* another organisation's, another provider's: not visited */
    assert_int_equal(visit_endpoints(&s, "org_b", "openai", &v, 0), 1);
    assert_true(endpoint_seen(&v, "POST /files"));
    assert_int_equal(visit_endpoints(&s, "org_a", "anthropic", &v, 0), 1);
    assert_true(endpoint_seen(&v, "POST /v1/messages/batches"));
    assert_int_equal(visit_endpoints(&s, "org_b", "anthropic", &v, 0), 0);
    assert_int_equal(visit_endpoints(&s, "org_a", "google", &v, 0), 0);
    assert_int_equal(visit_endpoints(&s, "org_c", "openai", &v, 0), 0);
    assert_int_equal(visit_endpoints(&s, "", "", &v, 0), 0);

    /* a prefix of the lookup key is not the key */
    assert_int_equal(visit_endpoints(&s, "org_", "openai", &v, 0), 0);
    assert_int_equal(visit_endpoints(&s, "org_a", "open", &v, 0), 0);

    /* visit stops the walk */
    assert_int_equal(visit_endpoints(&s, "org_a", "openai", &v, 1), 1);
    assert_int_equal(v.seen, 1);

    free(data);
}


static void
test_snapshot_same_endpoint_twice_is_one_record(void **state)
{
    sp_snapshot_builder_t  *b;
    uint8_t                *data;
    size_t                  len;
    sp_snapshot_t           s;
    endpoint_visit_t        v;

    (void) state;

    b = sp_snapshot_builder_new(1);
    assert_non_null(b);

    add_endpoint(b, "org_a", "openai", "POST", "/batches");
    add_endpoint(b, "org_a", "openai", "POST", "/batches");
    add_endpoint(b, "org_a", "openai", "GET", "/batches");
    add_endpoint(b, "org_a", "openai", "POST", "/files");
    add_endpoint(b, "org_a", "mistral", "POST", "/batches");

    data = build(b, &len);
    open_ok(&s, data, len);

    assert_true(s.header->entries[SP_TABLE_ENDPOINTS] == 4);
    assert_int_equal(visit_endpoints(&s, "org_a", "openai", &v, 0), 3);
    assert_true(endpoint_seen(&v, "POST /batches"));
    assert_true(endpoint_seen(&v, "GET /batches"));
    assert_true(endpoint_seen(&v, "POST /files"));
    assert_int_equal(visit_endpoints(&s, "org_a", "mistral", &v, 0), 1);

    free(data);
}


static void
test_snapshot_endpoint_refs_out_of_bounds_match_nothing(void **state)
{
    sp_snapshot_header_t    *h;
    sp_snapshot_slot_t      *slots;
    sp_snapshot_endpoint_t  *e;
    uint8_t                 *data;
    size_t                   len;
    uint64_t                 i;
    sp_snapshot_t            s;
    endpoint_visit_t         v;
    int                      corrupted;

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;
    slots = (sp_snapshot_slot_t *) (data + h->tables[SP_TABLE_ENDPOINTS]
                                               .offset);
    corrupted = 0;

    /* every org_a/openai endpoint's org_id points past the end */
    for (i = 0; i < h->tables[SP_TABLE_ENDPOINTS].slots; i++) {
        if (slots[i].record == 0) {
            continue;
        }

        e = (sp_snapshot_endpoint_t *) (data + slots[i].record);

        if (e->pattern.len == 8 || e->pattern.len == 10) {
            /* "/batches" and "/batches/<anything>" */
            e->org_id.offset = (uint32_t) len;
            e->method.offset = UINT32_MAX;
            e->method.len = UINT32_MAX;
            corrupted++;
        }
    }

    assert_int_equal(corrupted, 2);
    reseal(data);
    open_ok(&s, data, len);

    assert_int_equal(visit_endpoints(&s, "org_a", "openai", &v, 0), 0);
    assert_int_equal(visit_endpoints(&s, "org_b", "openai", &v, 0), 1);
    exercise(&s);

    free(data);
}


static void
test_snapshot_key_flags_carry_attribution_override(void **state)
{
    sp_snapshot_builder_t     *b;
    sp_snapshot_key_in_t       in;
    const sp_snapshot_key_t   *key;
    uint8_t                   *data, hash[SP_KEY_HASH_LEN];
    size_t                     len;
    sp_snapshot_t              s;
    int                        i;
    static const uint32_t      flags[] = {
        0, SP_KEY_AGENT_PAUSED, SP_KEY_ATTRIBUTION_OVERRIDE,
        SP_KEY_AGENT_PAUSED | SP_KEY_ATTRIBUTION_OVERRIDE
    };

    (void) state;

    assert_int_equal(SP_KEY_AGENT_PAUSED & SP_KEY_ATTRIBUTION_OVERRIDE, 0);

    b = sp_snapshot_builder_new(1);
    assert_non_null(b);

    for (i = 0; i < 4; i++) {
        memset(&in, 0, sizeof(in));
        key_hash_of(i, in.key_hash);
        in.key_id = "key_x";
        in.org_id = "org_a";
        in.department = "eng";
        in.flags = flags[i];
        assert_int_equal(sp_snapshot_add_key(b, &in), SP_OK);
    }

    data = build(b, &len);
    open_ok(&s, data, len);

    for (i = 0; i < 4; i++) {
        key_hash_of(i, hash);
        key = sp_snapshot_find_key(&s, hash);
        assert_non_null(key);
        assert_int_equal(key->flags, flags[i]);
    }

    free(data);
}


static void
test_snapshot_fallback_price_is_only_the_orgs_star(void **state)
{
    sp_snapshot_builder_t      *b;
    const sp_snapshot_price_t  *price;
    uint8_t                    *data;
    size_t                      len;
    sp_snapshot_t               s;
    sp_str_t                    model;

    (void) state;

    assert_string_equal(SP_PRICE_FALLBACK_MODEL, "*");

    b = sp_snapshot_builder_new(1);
    assert_non_null(b);

    add_price(b, "org_a", "openai", "*", 5000000000LL, 20000000000LL);
    add_price(b, NULL, "openai", "gpt-4o", 2500000000LL, 10000000000LL);
    /* a list "*" the loader and the database refuse; never applied */
    add_price(b, NULL, "openai", "*", 1, 1);
    add_price(b, NULL, "anthropic", "*", 1, 1);

    data = build(b, &len);
    open_ok(&s, data, len);

    price = sp_snapshot_find_price(&s, S("org_a"), S("openai"), S("*"));
    assert_non_null(price);
    assert_true(price->price.input == 5000000000LL);
    model = sp_snapshot_str(&s, price->model);
    assert_int_equal(model.len, 1);
    assert_memory_equal(model.data, "*", 1);

    /* only the organisation's fallback: never the list's */
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"), S("*")));
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("anthropic"),
                                       S("*")));
    assert_null(sp_snapshot_find_price(&s, S(""), S("openai"), S("*")));

    /* the date-suffix retry never turns a model name into "*" */
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("*-2024-08-06")));
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("*-20240806")));
    assert_null(sp_snapshot_find_price(&s, S("org_b"), S("openai"),
                                       S("*-20240806")));

    /* an unpriced model is not priced by the lookup: the caller decides */
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("gpt-unknown")));
    assert_null(sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                       S("**")));

    /* real models are still found, dated or not */
    price = sp_snapshot_find_price(&s, S("org_a"), S("openai"),
                                   S("gpt-4o-2024-08-06"));
    assert_non_null(price);
    assert_true(price->price.input == 2500000000LL);

    free(data);
}


static void
test_snapshot_rejects_older_version_by_name(void **state)
{
    sp_snapshot_header_t  *h;
    sp_snapshot_t          s;
    uint8_t               *data;
    size_t                 len;
    char                   err[256];

    (void) state;

    data = small_snapshot(&len);
    h = (sp_snapshot_header_t *) data;

    h->version = SP_SNAPSHOT_VERSION - 1;
    reseal(data);
    err[0] = '\0';
    assert_int_equal(sp_snapshot_open(&s, data, len, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "version"));

    /*
     * An older, smaller header: the version is named, not "truncated"
     * (version 5 had a header 24 bytes shorter).
     */
    err[0] = '\0';
    assert_int_equal(sp_snapshot_open(&s, data,
                                      sizeof(sp_snapshot_header_t) - 24,
                                      err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "version"));

    /* too short for magic and version */
    err[0] = '\0';
    assert_int_equal(sp_snapshot_open(&s, data, 11, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "truncated"));

    free(data);
}


static int
str_is(sp_str_t str, const char *want)
{
    return str.len == strlen(want) && memcmp(str.data, want, str.len) == 0;
}


/* v7: deployment settings by name, the last value of a name wins */
/* v10: an organisation's rules, and templates by (organisation, slug) */
static void
test_snapshot_routes_and_templates(void **state)
{
    size_t                         len;
    uint8_t                       *buf;
    sp_str_t                       v;
    sp_snapshot_t                  s;
    const sp_snapshot_routes_t    *routes;
    const sp_snapshot_template_t  *t;

    (void) state;

    buf = small_snapshot(&len);
    assert_int_equal(sp_snapshot_open(&s, buf, len, NULL, 0), SP_OK);

    routes = sp_snapshot_find_routes(&s, sp_str_from("org_a"));
    assert_non_null(routes);
    v = sp_snapshot_str(&s, routes->rules);
    assert_int_equal(v.len, strlen("[{\"id\":\"rr_1\"}]"));
    assert_memory_equal(v.data, "[{\"id\":\"rr_1\"}]", v.len);
    assert_null(sp_snapshot_find_routes(&s, sp_str_from("org_b")));

    /* policies: the routes' shape in a table of their own */
    routes = sp_snapshot_find_policies(&s, sp_str_from("org_a"));
    assert_non_null(routes);
    v = sp_snapshot_str(&s, routes->rules);
    assert_int_equal(v.len, strlen("[{\"id\":\"pol_1\"}]"));
    assert_memory_equal(v.data, "[{\"id\":\"pol_1\"}]", v.len);
    assert_null(sp_snapshot_find_policies(&s, sp_str_from("org_b")));

    t = sp_snapshot_find_template(&s, sp_str_from("org_a"),
                                  sp_str_from("support"));
    assert_non_null(t);
    v = sp_snapshot_str(&s, t->record);
    assert_memory_equal(v.data, "{\"latest\":2}", v.len);
    t = sp_snapshot_find_template(&s, sp_str_from("org_b"),
                                  sp_str_from("support"));
    assert_non_null(t);
    v = sp_snapshot_str(&s, t->record);
    assert_memory_equal(v.data, "{\"latest\":7}", v.len);
    assert_null(sp_snapshot_find_template(&s, sp_str_from("org_a"),
                                          sp_str_from("other")));
    assert_null(sp_snapshot_find_template(&s, sp_str_from("org_c"),
                                          sp_str_from("support")));

    free(buf);
}


static void
test_snapshot_settings(void **state)
{
    sp_snapshot_t                 s;
    const sp_snapshot_setting_t  *setting;
    uint8_t                      *data;
    size_t                        len;
    char                          err[256];

    (void) state;

    data = small_snapshot(&len);
    assert_int_equal(sp_snapshot_open(&s, data, len, err, sizeof(err)),
                     SP_OK);
    assert_true(s.header->entries[SP_TABLE_SETTINGS] == 2);

    setting = sp_snapshot_find_setting(&s, S(SP_SETTING_UPSTREAM_ALLOW));
    assert_non_null(setting);
    assert_true(str_is(sp_snapshot_str(&s, setting->value),
                       "127.0.0.0/8,*.test"));

    setting = sp_snapshot_find_setting(&s, S(SP_SETTING_ADMIN_LISTEN));
    assert_non_null(setting);
    assert_true(str_is(sp_snapshot_str(&s, setting->value),
                       "127.0.0.1:8081"));

    assert_null(sp_snapshot_find_setting(&s, S("nothing")));

    free(data);
}


static void
test_snapshot_org_carries_cache_settings_or_defaults(void **state)
{
    uint8_t                *data;
    size_t                  len;
    sp_snapshot_t           s;
    sp_cache_config_t       config, defaults;
    sp_snapshot_org_in_t    in;
    sp_snapshot_builder_t  *b;

    (void) state;

    /* records are 8-byte aligned: no padding the writer must fill */
    assert_int_equal(sizeof(sp_snapshot_org_t), 192);
    assert_int_equal(sizeof(sp_snapshot_org_t) % 8, 0);

    sp_cache_config_default(&defaults);

    b = sp_snapshot_builder_new(7);
    assert_non_null(b);

    memset(&in, 0, sizeof(in));
    in.org_id = "org_set";
    sp_cache_config_default(&in.cache);
    in.cache.mode = SP_CACHE_OFF;
    in.cache.scope = SP_CACHE_SCOPE_PROJECT;
    in.cache.ttl_s = 60;
    in.cache.max_entry_bytes = 4096;
    in.cache.only_deterministic = 0;
    in.cache_set = 1;
    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);

    /* v9: the semantic cache's settings, every field off its default */
    memset(&in, 0, sizeof(in));
    in.org_id = "org_semantic";
    sp_cache_config_default(&in.cache);
    in.cache.mode = SP_CACHE_SEMANTIC;
    in.cache.threshold_ppm = 912345;
    in.cache.embed_provider = SP_PROVIDER_COHERE;
    in.cache.embed_system = 1;
    in.cache.embed_timeout_ms = 30000;
    in.cache.max_vectors = 100000;
    strcpy(in.cache.embed_model, "embed-english-v3.0");
    in.cache_set = 1;
    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);

    /* semantic without a model, or without a provider: exact */
    in.org_id = "org_no_model";
    in.cache.embed_model[0] = '\0';
    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);

    in.org_id = "org_no_provider";
    strcpy(in.cache.embed_model, "text-embedding-3-small");
    in.cache.embed_provider = SP_PROVIDER_UNKNOWN;
    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);

    /* cache not set: whatever cache holds, the record has the defaults */
    memset(&in, 0, sizeof(in));
    in.org_id = "org_unset";
    in.cache.ttl_s = 99;
    assert_int_equal(sp_snapshot_add_org(b, &in), SP_OK);

    data = build(b, &len);
    open_ok(&s, data, len);

    sp_snapshot_cache_config(&s, S("org_set"), &config);
    assert_int_equal(config.mode, SP_CACHE_OFF);
    assert_int_equal(config.scope, SP_CACHE_SCOPE_PROJECT);
    assert_int_equal(config.ttl_s, 60);
    assert_int_equal(config.max_entry_bytes, 4096);
    assert_int_equal(config.only_deterministic, 0);
    assert_int_equal(config.threshold_ppm, SP_CACHE_DEFAULT_THRESHOLD_PPM);
    assert_int_equal(config.embed_provider, SP_PROVIDER_UNKNOWN);
    assert_string_equal(config.embed_model, "");

    sp_snapshot_cache_config(&s, S("org_semantic"), &config);
    assert_int_equal(config.mode, SP_CACHE_SEMANTIC);
    assert_int_equal(config.scope, SP_CACHE_SCOPE_ORG);
    assert_int_equal(config.ttl_s, defaults.ttl_s);
    assert_int_equal(config.threshold_ppm, 912345);
    assert_int_equal(config.embed_provider, SP_PROVIDER_COHERE);
    assert_int_equal(config.embed_system, 1);
    assert_int_equal(config.embed_timeout_ms, 30000);
    assert_int_equal(config.max_vectors, 100000);
    assert_string_equal(config.embed_model, "embed-english-v3.0");

    sp_snapshot_cache_config(&s, S("org_no_model"), &config);
    assert_int_equal(config.mode, SP_CACHE_EXACT);
    assert_int_equal(config.threshold_ppm, 912345);

    sp_snapshot_cache_config(&s, S("org_no_provider"), &config);
    assert_int_equal(config.mode, SP_CACHE_EXACT);
    assert_string_equal(config.embed_model, "text-embedding-3-small");

    sp_snapshot_cache_config(&s, S("org_unset"), &config);
    assert_memory_equal(&config, &defaults, sizeof(config));
    assert_int_equal(sp_snapshot_find_org(&s, S("org_unset"))->cache.ttl_s,
                     defaults.ttl_s);

    /* no record at all: the defaults too */
    memset(&config, 0xff, sizeof(config));
    sp_snapshot_cache_config(&s, S("org_none"), &config);
    assert_memory_equal(&config, &defaults, sizeof(config));

    free(data);
}


static void
test_snapshot_cache_settings_out_of_range_turn_the_cache_off(void **state)
{
    uint8_t            *data;
    size_t              len, i;
    sp_snapshot_t       s;
    sp_snapshot_org_t  *org;
    sp_cache_config_t   config;
    const struct {
        size_t    offset;
        uint32_t  value;
    } bad[] = {
        { offsetof(sp_cache_config_t, mode), SP_CACHE_SEMANTIC + 1 },
        { offsetof(sp_cache_config_t, scope), SP_CACHE_SCOPE_DEPARTMENT + 1 },
        { offsetof(sp_cache_config_t, ttl_s), 0 },
        { offsetof(sp_cache_config_t, ttl_s), SP_CACHE_TTL_MAX_S + 1 },
        { offsetof(sp_cache_config_t, max_entry_bytes), 0 },
        { offsetof(sp_cache_config_t, max_entry_bytes),
          SP_CACHE_MAX_ENTRY_MAX + 1 },
        { offsetof(sp_cache_config_t, only_deterministic), 2 },
        { offsetof(sp_cache_config_t, threshold_ppm), 499999 },
        { offsetof(sp_cache_config_t, threshold_ppm), 1000001 },
        { offsetof(sp_cache_config_t, embed_provider), SP_PROVIDER_ANTHROPIC },
        { offsetof(sp_cache_config_t, embed_provider),
          SP_PROVIDER_MISTRAL + 1 },
        { offsetof(sp_cache_config_t, embed_system), 2 },
        { offsetof(sp_cache_config_t, embed_timeout_ms), 49 },
        { offsetof(sp_cache_config_t, embed_timeout_ms), 30001 },
        { offsetof(sp_cache_config_t, max_vectors), 0 },
        { offsetof(sp_cache_config_t, max_vectors), 100001 },
        /* the model: a space, a byte above 0x7e, no NUL in its array */
        { offsetof(sp_cache_config_t, embed_model), 0x00622061 },
        { offsetof(sp_cache_config_t, embed_model), 0x000080ff },
        { offsetof(sp_cache_config_t, embed_model)
          + SP_CACHE_EMBED_MODEL_LEN - 4, 0x61616161 },
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        data = small_snapshot(&len);
        open_ok(&s, data, len);

        /* a writer gone wrong, sealed with a good checksum */
        org = (sp_snapshot_org_t *) sp_snapshot_find_org(&s, S("org_a"));
        assert_non_null(org);
        memcpy((uint8_t *) &org->cache + bad[i].offset, &bad[i].value,
               sizeof(uint32_t));

        if (bad[i].offset > offsetof(sp_cache_config_t, embed_model)) {
            /* a model without its NUL: every byte before a letter */
            memset(org->cache.embed_model, 'a',
                   SP_CACHE_EMBED_MODEL_LEN - 4);
        }

        reseal(data);
        open_ok(&s, data, len);

        sp_snapshot_cache_config(&s, S("org_a"), &config);
        assert_int_equal(config.mode, SP_CACHE_OFF);

        free(data);
    }
}


static void
test_snapshot_cache_purged_ms_is_the_latest_covering_purge(void **state)
{
    uint8_t        *data;
    size_t          len;
    sp_snapshot_t   s;

    (void) state;

    data = small_snapshot(&len);
    open_ok(&s, data, len);

    /* org_a: all at 1000, openai at 3000, openai/gpt-4o at 2000 */
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("openai"), S("gpt-4o")), 3000);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("openai"), S("gpt-4o-mini")), 3000);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("anthropic"), S("claude-3-5-haiku")), 1000);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"), S(""),
                         S("")), 1000);

    /* org_b: one model only; another organisation's purges are not its */
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_b"),
                         S("anthropic"), S("claude-3-5-haiku")), 5000);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_b"),
                         S("anthropic"), S("claude-3-opus")), 0);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_b"),
                         S("openai"), S("gpt-4o")), 0);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_c"),
                         S("openai"), S("gpt-4o")), 0);

    free(data);
}


static void
test_snapshot_cache_purge_model_wins_over_older_provider_purge(void **state)
{
    uint8_t                *data;
    size_t                  len;
    sp_snapshot_t           s;
    sp_snapshot_builder_t  *b;

    (void) state;

    b = sp_snapshot_builder_new(9);
    assert_non_null(b);

    add_purge(b, "org_a", "openai", NULL, 100);
    add_purge(b, "org_a", "openai", "gpt-4o", 200);
    /* the same purge again: the later replaces the earlier */
    add_purge(b, "org_a", "openai", "gpt-4o", 300);

    data = build(b, &len);
    open_ok(&s, data, len);

    assert_int_equal(s.header->entries[SP_TABLE_CACHE_PURGES], 2);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("openai"), S("gpt-4o")), 300);
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("openai"), S("o1")), 100);
    /* a provider purge does not cover the organisation's other providers */
    assert_int_equal(sp_snapshot_cache_purged_ms(&s, S("org_a"),
                         S("mistral"), S("gpt-4o")), 0);

    free(data);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_snapshot_finds_keys_with_all_fields),
        cmocka_unit_test(test_snapshot_settings),
        cmocka_unit_test(test_snapshot_routes_and_templates),
        cmocka_unit_test(test_snapshot_absent_key_is_null),
        cmocka_unit_test(test_snapshot_finds_providers_by_org_and_name),
        cmocka_unit_test(test_snapshot_org_price_beats_list_price),
        cmocka_unit_test(test_snapshot_price_falls_back_without_date_suffix),
        cmocka_unit_test(test_snapshot_dated_price_beats_undated),
        cmocka_unit_test(test_snapshot_later_duplicate_replaces_earlier),
        cmocka_unit_test(test_snapshot_keys_sharing_slot_hash_are_all_found),
        cmocka_unit_test(test_snapshot_empty_builder_opens_and_finds_nothing),
        cmocka_unit_test(test_snapshot_100k_keys_all_findable),
        cmocka_unit_test(test_snapshot_long_lookup_strings),
        cmocka_unit_test(test_snapshot_rejects_truncated_file),
        cmocka_unit_test(test_snapshot_rejects_extended_file),
        cmocka_unit_test(test_snapshot_rejects_every_byte_flipped),
        cmocka_unit_test(test_snapshot_rejects_every_bit_flipped),
        cmocka_unit_test(test_snapshot_rejects_wrong_magic_and_version),
        cmocka_unit_test(test_snapshot_finds_org_flags_and_aliases),
        cmocka_unit_test(
            test_snapshot_org_carries_cache_settings_or_defaults),
        cmocka_unit_test(
            test_snapshot_cache_settings_out_of_range_turn_the_cache_off),
        cmocka_unit_test(
            test_snapshot_cache_purged_ms_is_the_latest_covering_purge),
        cmocka_unit_test(
            test_snapshot_cache_purge_model_wins_over_older_provider_purge),
        cmocka_unit_test(test_snapshot_visits_every_budget_of_a_scope),
        cmocka_unit_test(test_snapshot_verified_in_steps_like_at_once),
        cmocka_unit_test(
            test_snapshot_visits_every_endpoint_of_an_org_and_provider),
        cmocka_unit_test(test_snapshot_same_endpoint_twice_is_one_record),
        cmocka_unit_test(
            test_snapshot_endpoint_refs_out_of_bounds_match_nothing),
        cmocka_unit_test(test_snapshot_key_flags_carry_attribution_override),
        cmocka_unit_test(test_snapshot_fallback_price_is_only_the_orgs_star),
        cmocka_unit_test(test_snapshot_rejects_older_version_by_name),
        cmocka_unit_test(test_snapshot_rejects_huge_slot_counts),
        cmocka_unit_test(test_snapshot_rejects_tables_outside_file),
        cmocka_unit_test(
            test_snapshot_record_offsets_out_of_bounds_are_not_followed),
        cmocka_unit_test(
            test_snapshot_resealed_random_corruption_never_escapes),
        cmocka_unit_test(test_snapshot_out_of_bounds_refs_read_as_empty),
        cmocka_unit_test(
            test_snapshot_full_table_without_empty_slot_terminates),
        cmocka_unit_test_setup_teardown(
            test_snapshot_publish_writes_file_with_mode_and_no_temp,
            make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(
            test_snapshot_publish_into_missing_dir_fails_with_reason,
            make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(
            test_snapshot_publish_failure_leaves_no_temp_file,
            make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(
            test_snapshot_publish_rejects_too_long_path,
            make_tmpdir, remove_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
