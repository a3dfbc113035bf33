/*
 * Builder and reader together: records from the input go through
 * sp_snapshot_build, the result must open, and every lookup must find
 * what was added last under its lookup key (strings as an administrator
 * may type them: separators, any bytes, over 1 KiB).
 *
 * Input: one record a line, fields separated by tabs:
 *
 *   k <key> <org> <department> <agent> <flags>   (key_hash = SHA-256)
 *   p <org> <provider> <base_url> <api_key>
 *   r <org> <provider> <model> <input price>
 *   o <org> <flags>
 *   a <org> <provider> <alias> <model>
 *   b <budget id> <org> <scope> <value> <provider> <model> <limit>
 *   e <org> <provider> <method> <pattern>
 *   c <org> <provider> <model> <purged_ms>      (a cache purge)
 */

#include "fuzz_common.h"
#include "sp_budget.h"
#include "sp_snapshot.h"


#define FUZZ_RECORDS  64
#define FUZZ_FIELDS   8

typedef struct {
    char    op;
    char   *f[FUZZ_FIELDS];     /* missing fields are "" */
    size_t  len[FUZZ_FIELDS];
} fuzz_rec_t;


/* the last purge's purged_ms of exactly (org, provider, model), or 0 */
static int64_t
fuzz_purge_of(const fuzz_rec_t *recs, size_t n, const char *org,
    const char *provider, const char *model)
{
    size_t   j;
    int64_t  ms;

    ms = 0;

    for (j = 0; j < n; j++) {
        if (recs[j].op == 'c' && strcmp(recs[j].f[1], org) == 0
            && strcmp(recs[j].f[2], provider) == 0
            && strcmp(recs[j].f[3], model) == 0)
        {
            ms = strtoll(recs[j].f[4], NULL, 10);
        }
    }

    return ms;
}


static int64_t
fuzz_max(int64_t a, int64_t b)
{
    return a > b ? a : b;
}


static sp_str_t
fuzz_s(const fuzz_rec_t *r, int i)
{
    sp_str_t  s;

    s.data = r->f[i];
    s.len = strlen(r->f[i]);

    return s;
}


static int
fuzz_eq(sp_str_t a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.data, b, a.len) == 0;
}


static int
fuzz_same(const fuzz_rec_t *a, const fuzz_rec_t *b, int n)
{
    int  i;

    if (a->op != b->op) {
        return 0;
    }

    for (i = 1; i <= n; i++) {
        if (strcmp(a->f[i], b->f[i]) != 0) {
            return 0;
        }
    }

    return 1;
}


/* the same budget id under the same lookup key (the scope is a number) */
static int
fuzz_same_budget(const fuzz_rec_t *a, const fuzz_rec_t *b)
{
    return a->op == b->op && strcmp(a->f[1], b->f[1]) == 0
           && strcmp(a->f[2], b->f[2]) == 0
           && strtoul(a->f[3], NULL, 10) == strtoul(b->f[3], NULL, 10)
           && strcmp(a->f[4], b->f[4]) == 0;
}


typedef struct {
    const sp_snapshot_t  *snap;
    const char           *id;
    int64_t               limit;
    int                   found;
} fuzz_find_budget_t;


typedef struct {
    const sp_snapshot_t  *snap;
    const fuzz_rec_t     *rec;
    int                   found;
    int                   visited;
} fuzz_find_endpoint_t;


static int
fuzz_endpoint_visit(const sp_snapshot_endpoint_t *e, void *arg)
{
    fuzz_find_endpoint_t  *f = arg;

    FUZZ_CHECK(fuzz_eq(sp_snapshot_str(f->snap, e->org_id), f->rec->f[1]));
    FUZZ_CHECK(fuzz_eq(sp_snapshot_str(f->snap, e->provider),
                       f->rec->f[2]));

    f->visited++;

    if (fuzz_eq(sp_snapshot_str(f->snap, e->method), f->rec->f[3])
        && fuzz_eq(sp_snapshot_str(f->snap, e->pattern), f->rec->f[4]))
    {
        f->found++;
    }

    return 0;
}


static int
fuzz_budget_visit(const sp_snapshot_budget_t *b, void *arg)
{
    fuzz_find_budget_t  *f = arg;

    if (fuzz_eq(sp_snapshot_str(f->snap, b->budget_id), f->id)) {
        f->found++;
        f->limit = b->limit_nano;
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_rec_t             recs[FUZZ_RECORDS];
    sp_snapshot_builder_t        *b;
    sp_snapshot_key_in_t          key;
    sp_snapshot_provider_in_t     pin;
    sp_snapshot_price_in_t        rin;
    sp_snapshot_org_in_t          oin;
    sp_snapshot_alias_in_t        ain;
    sp_snapshot_budget_in_t       bin;
    sp_snapshot_endpoint_in_t     ein;
    sp_snapshot_cache_purge_in_t  cin;
    int64_t                       want;
    const sp_snapshot_key_t      *k;
    const sp_snapshot_provider_t *p;
    const sp_snapshot_price_t    *r;
    const sp_snapshot_org_t      *o;
    const sp_snapshot_alias_t    *a;
    const fuzz_rec_t             *last;
    fuzz_find_budget_t            fb;
    fuzz_find_endpoint_t          fe;
    sp_snapshot_t                 s;
    uint8_t                       hash[SP_KEY_HASH_LEN], *out;
    size_t                        n, len, i, j, m;
    char                         *text, *line, *next, *tab, err[256];
    int                           fld, rc;

    text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    b = sp_snapshot_builder_new(size);
    FUZZ_CHECK(b != NULL);

    n = 0;

    for (line = text; line && *line && n < FUZZ_RECORDS; line = next) {
        next = strchr(line, '\n');

        if (next) {
            *next++ = '\0';
        }

        recs[n].op = line[0];

        for (fld = 0; fld < FUZZ_FIELDS; fld++) {
            recs[n].f[fld] = (char *) "";
        }

        tab = line;

        for (fld = 0; fld < FUZZ_FIELDS && tab; fld++) {
            recs[n].f[fld] = tab;
            tab = strchr(tab, '\t');

            if (tab) {
                *tab++ = '\0';
            }
        }

        switch (recs[n].op) {

        case 'k':
            memset(&key, 0, sizeof(key));
            sp_key_hash(recs[n].f[1], strlen(recs[n].f[1]), key.key_hash);
            key.key_id = recs[n].f[1];
            key.org_id = recs[n].f[2];
            key.department = recs[n].f[3];
            key.agent_id = recs[n].f[4];
            key.flags = (uint32_t) strtoul(recs[n].f[5], NULL, 10);
            key.rpm_limit = key.flags;
            rc = sp_snapshot_add_key(b, &key);
            break;

        case 'p':
            memset(&pin, 0, sizeof(pin));
            pin.org_id = recs[n].f[1];
            pin.provider = recs[n].f[2];
            pin.base_url = recs[n].f[3];
            pin.api_key = recs[n].f[4];
            rc = sp_snapshot_add_provider(b, &pin);
            break;

        case 'r':
            memset(&rin, 0, sizeof(rin));
            rin.org_id = recs[n].f[1];
            rin.provider = recs[n].f[2];
            rin.model = recs[n].f[3];
            rin.price.input = strtoll(recs[n].f[4], NULL, 10);
            rc = sp_snapshot_add_price(b, &rin);
            break;

        case 'o':
            memset(&oin, 0, sizeof(oin));
            oin.org_id = recs[n].f[1];
            oin.flags = (uint32_t) strtoul(recs[n].f[2], NULL, 10);
            rc = sp_snapshot_add_org(b, &oin);
            break;

        case 'a':
            memset(&ain, 0, sizeof(ain));
            ain.org_id = recs[n].f[1];
            ain.provider = recs[n].f[2];
            ain.alias = recs[n].f[3];
            ain.model = recs[n].f[4];
            rc = sp_snapshot_add_alias(b, &ain);
            break;

        case 'b':
            memset(&bin, 0, sizeof(bin));
            bin.budget_id = recs[n].f[1];
            bin.org_id = recs[n].f[2];
            bin.scope = (uint32_t) strtoul(recs[n].f[3], NULL, 10);
            bin.scope_value = recs[n].f[4];
            bin.provider = recs[n].f[5];
            bin.model = recs[n].f[6];
            bin.limit_nano = strtoll(recs[n].f[7], NULL, 10);
            rc = sp_snapshot_add_budget(b, &bin);

            if (bin.scope >= SP_BUDGET_SCOPE_COUNT) {
                FUZZ_CHECK(rc == SP_ERROR);
                continue;
            }

            break;

        case 'e':
            memset(&ein, 0, sizeof(ein));
            ein.org_id = recs[n].f[1];
            ein.provider = recs[n].f[2];
            ein.method = recs[n].f[3];
            ein.pattern = recs[n].f[4];
            rc = sp_snapshot_add_endpoint(b, &ein);
            break;

        case 'c':
            memset(&cin, 0, sizeof(cin));
            cin.org_id = recs[n].f[1];
            cin.provider = recs[n].f[2];
            cin.model = recs[n].f[3];
            cin.purged_ms = strtoll(recs[n].f[4], NULL, 10);
            rc = sp_snapshot_add_cache_purge(b, &cin);
            break;

        default:
            continue;
        }

        FUZZ_CHECK(rc == SP_OK);
        n++;
    }

    FUZZ_CHECK(sp_snapshot_build(b, &out, &len) == SP_OK);
    sp_snapshot_builder_free(b);

    rc = sp_snapshot_open(&s, out, len, err, sizeof(err));
    if (rc != SP_OK) {
        fprintf(stderr, "open: %s\n", err);
    }
    FUZZ_CHECK(rc == SP_OK);

    for (i = 0; i < n; i++) {
        /* the last record with the same lookup key is what lookups see */
        last = &recs[i];

        for (j = i + 1; j < n; j++) {
            if ((recs[i].op == 'k' && fuzz_same(&recs[i], &recs[j], 1))
                || (recs[i].op == 'p' && fuzz_same(&recs[i], &recs[j], 2))
                || (recs[i].op == 'r' && fuzz_same(&recs[i], &recs[j], 3))
                || (recs[i].op == 'o' && fuzz_same(&recs[i], &recs[j], 1))
                || (recs[i].op == 'a' && fuzz_same(&recs[i], &recs[j], 3))
                || (recs[i].op == 'b' && fuzz_same_budget(&recs[i],
                                                          &recs[j])))
            {
                last = &recs[j];
            }
        }

        switch (recs[i].op) {

        case 'k':
            sp_key_hash(recs[i].f[1], strlen(recs[i].f[1]), hash);
            k = sp_snapshot_find_key(&s, hash);
            FUZZ_CHECK(k != NULL);
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, k->org_id), last->f[2]));
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, k->agent_id),
                               last->f[4]));
            break;

        case 'p':
            p = sp_snapshot_find_provider(&s, fuzz_s(&recs[i], 1),
                                          fuzz_s(&recs[i], 2));
            FUZZ_CHECK(p != NULL);
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, p->base_url),
                               last->f[3]));
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, p->api_key), last->f[4]));
            break;

        case 'r':
            r = sp_snapshot_find_price(&s, fuzz_s(&recs[i], 1),
                                       fuzz_s(&recs[i], 2),
                                       fuzz_s(&recs[i], 3));

            /*
             * A fallback price is an organisation's only; an empty model
             * name prices nothing (sp_price_resolve)
             */
            if ((recs[i].f[1][0] == '\0'
                 && strcmp(recs[i].f[3], SP_PRICE_FALLBACK_MODEL) == 0)
                || recs[i].f[3][0] == '\0')
            {
                FUZZ_CHECK(r == NULL);
                break;
            }

            FUZZ_CHECK(r != NULL);
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, r->model), last->f[3]));
            FUZZ_CHECK(r->price.input == strtoll(last->f[4], NULL, 10));
            break;

        case 'o':
            o = sp_snapshot_find_org(&s, fuzz_s(&recs[i], 1));
            FUZZ_CHECK(o != NULL);
            FUZZ_CHECK(o->flags == (uint32_t) strtoul(last->f[2], NULL, 10));
            break;

        case 'a':
            a = sp_snapshot_find_alias(&s, fuzz_s(&recs[i], 1),
                                       fuzz_s(&recs[i], 2),
                                       fuzz_s(&recs[i], 3));
            FUZZ_CHECK(a != NULL);
            FUZZ_CHECK(fuzz_eq(sp_snapshot_str(&s, a->model), last->f[4]));
            break;

        case 'e':
            /* every endpoint of (org, provider) visited, this one once */
            fe.snap = &s;
            fe.rec = &recs[i];
            fe.found = 0;
            fe.visited = 0;
            (void) sp_snapshot_foreach_endpoint(&s, fuzz_s(&recs[i], 1),
                      fuzz_s(&recs[i], 2), fuzz_endpoint_visit, &fe);
            FUZZ_CHECK(fe.found == 1);

            for (j = 0; j < n; j++) {
                if (recs[j].op == 'e' && fuzz_same(&recs[i], &recs[j], 2)) {
                    fe.visited--;

                    /* a duplicate of an earlier one is not another */
                    for (m = 0; m < j; m++) {
                        if (recs[m].op == 'e'
                            && fuzz_same(&recs[m], &recs[j], 4))
                        {
                            fe.visited++;
                            break;
                        }
                    }
                }
            }

            FUZZ_CHECK(fe.visited == 0);
            break;

        case 'c':
            /* the latest of the organisation's, provider's and model's */
            want = fuzz_purge_of(recs, n, recs[i].f[1], "", "");

            if (recs[i].f[2][0] != '\0') {
                want = fuzz_max(want, fuzz_purge_of(recs, n, recs[i].f[1],
                                                    recs[i].f[2], ""));

                if (recs[i].f[3][0] != '\0') {
                    want = fuzz_max(want, fuzz_purge_of(recs, n,
                                        recs[i].f[1], recs[i].f[2],
                                        recs[i].f[3]));
                }
            }

            FUZZ_CHECK(sp_snapshot_cache_purged_ms(&s, fuzz_s(&recs[i], 1),
                           fuzz_s(&recs[i], 2), fuzz_s(&recs[i], 3))
                       == want);
            break;

        default: /* 'b' */
            fb.snap = &s;
            fb.id = recs[i].f[1];
            fb.limit = 0;
            fb.found = 0;
            (void) sp_snapshot_foreach_budget(&s, fuzz_s(&recs[i], 2),
                      (uint32_t) strtoul(recs[i].f[3], NULL, 10),
                      fuzz_s(&recs[i], 4), fuzz_budget_visit, &fb);
            FUZZ_CHECK(fb.found == 1);
            FUZZ_CHECK(fb.limit == strtoll(last->f[7], NULL, 10));
            break;
        }
    }

    free(out);
    free(text);

    return 0;
}
