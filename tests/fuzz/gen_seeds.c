/*
 * Writes the generated seed files of the fuzz corpora: snapshots built
 * with the builder, journal lines formatted by sp_journal_format, spend
 * files laid out by sp_spend_init, and a path for every entry of the
 * endpoint catalogue (so that the path target reaches every pattern as
 * the catalogue changes).
 *
 *   gen_seeds DIR
 *
 * run.sh writes them into build/fuzz/seeds/ before every run, so that the
 * seeds always match the current format (a snapshot version bump would
 * leave committed seeds refused at the header); `run.sh seeds` refreshes
 * the committed samples in tests/fuzz/corpus/.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sp_budget.h"
#include "sp_endpoint.h"
#include "sp_journal.h"
#include "sp_snapshot.h"


static void
die(const char *what)
{
    fprintf(stderr, "gen_seeds: %s\n", what);
    exit(1);
}


static void
write_file(const char *dir, const char *sub, const char *name,
    const void *data, size_t len)
{
    char   path[4096];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);

    if (mkdir(path, 0755) == -1 && errno != EEXIST) {
        die("mkdir failed");
    }

    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);

    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        die("write failed");
    }
}


static void
add_key(sp_snapshot_builder_t *b, const char *key, const char *key_id,
    const char *org, const char *dept, const char *agent, uint32_t flags)
{
    sp_snapshot_key_in_t  in;

    memset(&in, 0, sizeof(in));
    sp_key_hash(key, strlen(key), in.key_hash);
    in.key_id = key_id;
    in.org_id = org;
    in.name = "ci key";
    in.department = dept;
    in.project = "checkout";
    in.agent_id = agent;
    in.scopes = SP_SCOPE_PROXY;
    in.flags = flags;
    in.rpm_limit = flags ? 0 : 600;
    in.tpm_limit = flags ? 0 : 200000;

    if (sp_snapshot_add_key(b, &in) != SP_OK) {
        die("add_key");
    }
}


static void
add_price(sp_snapshot_builder_t *b, const char *org, const char *provider,
    const char *model, int64_t in, int64_t out, int64_t cached,
    int64_t written)
{
    sp_snapshot_price_in_t  p;

    memset(&p, 0, sizeof(p));
    p.org_id = org;
    p.provider = provider;
    p.model = model;
    p.price.input = in;
    p.price.output = out;
    p.price.cached_input = cached;
    p.price.cache_write = written;
    p.max_output_tokens = 16384;

    if (sp_snapshot_add_price(b, &p) != SP_OK) {
        die("add_price");
    }
}


static void
add_budget(sp_snapshot_builder_t *b, const char *id, uint32_t scope,
    const char *value, const char *provider, const char *model,
    int64_t limit, int64_t start, int64_t end)
{
    sp_snapshot_budget_in_t  in;

    memset(&in, 0, sizeof(in));
    in.budget_id = id;
    in.org_id = "org_1";
    in.scope = scope;
    in.scope_value = value;
    in.provider = provider;
    in.model = model;
    in.action = SP_BUDGET_BLOCK;
    in.limit_nano = limit;
    in.period_start_ms = start;
    in.period_end_ms = end;

    if (sp_snapshot_add_budget(b, &in) != SP_OK) {
        die("add_budget");
    }
}


static void
snapshot(const char *dir, const char *name, int full)
{
    sp_snapshot_builder_t       *b;
    sp_snapshot_provider_in_t    p;
    sp_snapshot_org_in_t         o;
    sp_snapshot_alias_in_t       a;
    sp_snapshot_endpoint_in_t    e;
    sp_snapshot_t                s;
    char                         err[256];
    uint8_t                     *data;
    size_t                       len;

    b = sp_snapshot_builder_new(full ? 42 : 1);
    if (b == NULL) {
        die("builder");
    }

    add_key(b, "sp_key_000102030405060708090a0b0c0d0e0f1011121314151617",
            "key_1", "org_1", "eng", "agent_1", 0);

    if (full) {
        add_key(b, "sp_key_a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7",
                "key_2", "org_1", "", "", SP_KEY_AGENT_PAUSED);
        add_key(b, "sp_key_ffffffffffffffffffffffffffffffffffffffffffffffff",
                "key_3", "org_2", "sales", "", 0);
    }

    memset(&p, 0, sizeof(p));
    p.org_id = "org_1";
    p.provider = "openai";
    p.base_url = "https://api.openai.com";
    p.api_key = "sk-test-0000";

    if (sp_snapshot_add_provider(b, &p) != SP_OK) {
        die("add_provider");
    }

    add_price(b, "", "openai", "gpt-4o", 2500000000LL, 10000000000LL,
              1250000000LL, 0);

    if (full) {
        p.provider = "anthropic";
        p.base_url = "https://api.anthropic.com";
        p.api_key = "sk-ant-test";

        if (sp_snapshot_add_provider(b, &p) != SP_OK) {
            die("add_provider");
        }

        p.provider = "azure";
        p.base_url = "https://example.openai.azure.com";

        if (sp_snapshot_add_provider(b, &p) != SP_OK) {
            die("add_provider");
        }

        add_price(b, "org_1", "openai", "gpt-4o", 2000000000LL,
                  8000000000LL, 1000000000LL, 0);
        add_price(b, "", "anthropic", "claude-3-5-haiku", 800000000LL,
                  4000000000LL, 80000000LL, 1000000000LL);
        add_price(b, "", "google", "gemini-2.0-flash", 100000000LL,
                  400000000LL, 25000000LL, 0);
        add_price(b, "", "azure", "gpt-4o", 2500000000LL, 10000000000LL,
                  1250000000LL, 0);
        /* the organisation's fallback price for unpriced openai models */
        add_price(b, "org_1", "openai", SP_PRICE_FALLBACK_MODEL,
                  1000000000LL, 2000000000LL, 0, 0);

        memset(&e, 0, sizeof(e));
        e.org_id = "org_1";
        e.provider = "openai";
        e.method = "POST";
        e.pattern = "/batches";

        if (sp_snapshot_add_endpoint(b, &e) != SP_OK) {
            die("add_endpoint");
        }

        e.method = "GET";
        e.pattern = "/batches/*";

        if (sp_snapshot_add_endpoint(b, &e) != SP_OK) {
            die("add_endpoint");
        }

        memset(&o, 0, sizeof(o));
        o.org_id = "org_1";
        o.flags = SP_ORG_REFUSE_UNPRICED;
        o.rpm_limit = 6000;
        o.tpm_limit = 2000000;
        /* v9: a semantic cache, every setting in range */
        sp_cache_config_default(&o.cache);
        o.cache.mode = SP_CACHE_SEMANTIC;
        o.cache.embed_provider = SP_PROVIDER_OPENAI;
        strcpy(o.cache.embed_model, "text-embedding-3-small");
        o.cache.threshold_ppm = 900000;
        o.cache.scope = SP_CACHE_SCOPE_PROJECT;
        o.cache.ttl_s = 600;
        o.cache.max_entry_bytes = 65536;
        o.cache.only_deterministic = 1;
        o.cache_set = 1;

        if (sp_snapshot_add_org(b, &o) != SP_OK) {
            die("add_org");
        }

        {
            sp_snapshot_cache_purge_in_t  cp;

            cp.org_id = "org_1";
            cp.provider = "";
            cp.model = "";
            cp.purged_ms = 1764230000000LL;

            if (sp_snapshot_add_cache_purge(b, &cp) != SP_OK) {
                die("add_cache_purge");
            }

            cp.provider = "openai";
            cp.model = "gpt-4o";
            cp.purged_ms = 1764230001000LL;

            if (sp_snapshot_add_cache_purge(b, &cp) != SP_OK) {
                die("add_cache_purge");
            }
        }

        memset(&a, 0, sizeof(a));
        a.org_id = "org_1";
        a.provider = "azure";
        a.alias = "my-gpt4o-deployment";
        a.model = "gpt-4o";

        if (sp_snapshot_add_alias(b, &a) != SP_OK) {
            die("add_alias");
        }

        {
            sp_snapshot_setting_in_t  st;

            st.name = SP_SETTING_UPSTREAM_ALLOW;
            st.value = "127.0.0.0/8,*.test";

            if (sp_snapshot_add_setting(b, &st) != SP_OK) {
                die("add_setting");
            }

            st.name = SP_SETTING_ADMIN_LISTEN;
            st.value = "127.0.0.1:8081";

            if (sp_snapshot_add_setting(b, &st) != SP_OK) {
                die("add_setting");
            }
        }

        add_budget(b, "bud_org_monthly", SP_BUDGET_SCOPE_ORG, "", "", "",
                   100000000000LL, 1764547200000LL, 1767225600000LL);
        add_budget(b, "bud_org_gpt4o", SP_BUDGET_SCOPE_ORG, "", "openai",
                   "gpt-4o", 5000000000LL, 1764547200000LL, 0);
        add_budget(b, "bud_key_daily", SP_BUDGET_SCOPE_API_KEY, "key_1", "",
                   "", 1000000000LL, 1764547200000LL, 1764633600000LL);
        add_budget(b, "bud_agent_total", SP_BUDGET_SCOPE_AGENT, "agent_1",
                   "", "", 2000000000LL, 0, 0);
        add_budget(b, "bud_project", SP_BUDGET_SCOPE_PROJECT, "checkout",
                   "anthropic", "", 3000000000LL, 1764547200000LL, 0);
    }

    if (sp_snapshot_build(b, &data, &len) != SP_OK) {
        die("build");
    }

    /* a seed the reader refuses would fuzz nothing past the header */
    if (sp_snapshot_open(&s, data, len, err, sizeof(err)) != SP_OK) {
        die(err);
    }

    write_file(dir, "snapshot", name, data, len);

    free(data);
    sp_snapshot_builder_free(b);
}


static void
journal(const char *dir)
{
    sp_journal_record_t  rec;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;

    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_01JDQ2M4W7X8Y9Z0A1B2C3D4E5");
    rec.ts_ms = 1764230000123LL;
    strcpy(rec.org_id, "org_1");
    strcpy(rec.api_key_id, "key_1");
    strcpy(rec.provider, "openai");
    strcpy(rec.requested_model, "gpt-4o");
    strcpy(rec.model, "gpt-4o-2024-08-06");
    rec.input_tokens = 1200;
    rec.output_tokens = 340;
    rec.cached_tokens = 1024;
    rec.cost_nano = 4340000;
    rec.status = 200;
    strcpy(rec.cache, "miss");
    rec.latency_ms = 812;
    rec.gateway_us = 85;
    strcpy(rec.department, "eng");
    strcpy(rec.project, "checkout");
    strcpy(rec.agent_id, "agent_1");
    strcpy(rec.trace_id, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
    strcpy(rec.span_id, "00f067aa0ba902b7");
    rec.epoch = 1764229000000LL;
    rec.reserved_nano = 45000000;

    n = sp_journal_format(&rec, line, sizeof(line));
    write_file(dir, "journal", "openai-json.jsonl", line, n);

    rec.stream = 1;
    strcpy(rec.id, "evt_01JDQ2M4W7X8Y9Z0A1B2C3D4E6");
    strcpy(rec.provider, "anthropic");
    strcpy(rec.requested_model, "claude-3-5-haiku-20241022");
    strcpy(rec.model, "claude-3-5-haiku-20241022");
    rec.cache_write_tokens = 2048;
    strcpy(rec.warnings, "usage_estimated,unpriced_model");
    strcpy(rec.department, "caf\xc3\xa9 \"quoted\" \\ tab\t\xe2\x82\xac");
    strcpy(rec.parent_id, "b7ad6b7169203331");
    n = sp_journal_format(&rec, line, sizeof(line));
    write_file(dir, "journal", "anthropic-stream.jsonl", line, n);

    /* a response cache hit: what the answer cost when it was stored */
    strcpy(rec.id, "evt_01JDQ2M4W7X8Y9Z0A1B2C3D4E7");
    strcpy(rec.cache, "hit");
    rec.saved_nano = 4340000;
    rec.cost_nano = 0;
    n = sp_journal_format(&rec, line, sizeof(line));
    write_file(dir, "journal", "cache-hit.jsonl", line, n);
    rec.saved_nano = 0;

    /* routed by a rule, fallen back twice, built from a template */
    strcpy(rec.id, "evt_01JDQ2M4W7X8Y9Z0A1B2C3D4E8");
    strcpy(rec.cache, "miss");
    rec.cost_nano = 4340000;
    rec.routed = 1;
    strcpy(rec.route_rule, "rr_01JDQ2M4W7X8Y9Z0A1B2C3D4");
    rec.attempts = 3;
    strcpy(rec.attempt_log, "openai/gpt-4o:429,openai/gpt-4o-mini:0");
    strcpy(rec.route_note, "rr_2: target cohere left out (tools); "
           "rr_3: \"window\" closed\n");
    strcpy(rec.template_id, "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f");
    rec.template_version = 3;
    n = sp_journal_format(&rec, line, sizeof(line));
    write_file(dir, "journal", "routed-fallback-template.jsonl", line, n);

    rec.routed = 0;
    rec.route_rule[0] = '\0';
    rec.attempts = 0;
    rec.attempt_log[0] = '\0';
    rec.route_note[0] = '\0';
    rec.template_id[0] = '\0';
    rec.template_version = 0;

    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_err");
    strcpy(rec.org_id, "org_2");
    rec.ts_ms = INT64_MIN;
    rec.cost_nano = INT64_MAX;
    rec.status = 999;
    strcpy(rec.cache, "off");
    strcpy(rec.error_code, "budget_exceeded");
    n = sp_journal_format(&rec, line, sizeof(line));
    write_file(dir, "journal", "error-extremes.jsonl", line, n);
}


static void
spend(const char *dir)
{
    static const char  *ids[] = {
        "bud_org_monthly", "bud_key_daily", "bud_agent_total", NULL
    };
    sp_spend_slot_t     *slot;
    sp_str_t             id;
    uint8_t             *data;
    size_t               len;
    int                  i;

    len = sp_spend_size(8);
    data = calloc(1, len);
    if (data == NULL) {
        die("calloc");
    }

    sp_spend_init(data, 8, 7);

    for (i = 0; ids[i]; i++) {
        id.data = ids[i];
        id.len = strlen(ids[i]);
        slot = sp_spend_slot(data, id);

        if (slot == NULL) {
            die("spend slot");
        }

        slot->period_start_ms = i == 2 ? 0 : 1764547200000LL;
        slot->global_nano = 1000000LL * (i + 1);
        slot->epoch = 1764229000000LL;
        slot->node_nano = 250000LL * (i + 1);
        slot->updated_ms = 1764230000123LL;
    }

    write_file(dir, "spend", "three-budgets.slots", data, len);

    sp_spend_init(data, 1, 1);
    write_file(dir, "spend", "empty.slots", data, sp_spend_size(1));

    free(data);
}


/*
 * One path per catalogue entry, its '*' and "**" filled in, the GET
 * entries with a query string that carries a key to be removed.
 */
static void
paths(const char *dir)
{
    const sp_endpoint_t  *e;
    const char           *s;
    char                  path[512], name[64];
    size_t                n;
    int                   p, i;

    for (p = SP_PROVIDER_OPENAI; p <= SP_PROVIDER_MISTRAL; p++) {
        e = sp_endpoint_catalogue((sp_provider_e) p);
        if (e == NULL) {
            die("no catalogue");
        }

        for (i = 0; e[i].method; i++) {
            n = 0;

            for (s = e[i].pattern; *s && n < sizeof(path) - 32; s++) {
                if (*s != '*') {
                    path[n++] = *s;
                    continue;
                }

                memcpy(path + n, "gpt-4o-mini", 11);
                n += 11;

                if (s[1] == '*') {
                    s++;
                }
            }

            if (strcmp(e[i].method, "GET") == 0) {
                n += (size_t) snprintf(path + n, sizeof(path) - n,
                                       "?Key=sp_key_0123");
            }

            snprintf(name, sizeof(name), "%s-%02d.txt",
                     sp_provider_name((sp_provider_e) p), i);
            write_file(dir, "path", name, path, n);
        }
    }
}


int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds CORPUS_DIR\n");
        return 2;
    }

    snapshot(argv[1], "one-key.snap", 0);
    snapshot(argv[1], "full.snap", 1);
    journal(argv[1]);
    spend(argv[1]);
    paths(argv[1]);

    return 0;
}
