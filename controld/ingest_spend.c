/*
 * Journal ingest, the spend of a loaded batch, in the batch's transaction.
 *
 * Per batch, not per row: the budgets of the batch's organisations are
 * read once, each record is matched in C (sp_attrib_counts: the module's
 * coverage rule plus a key's own department and project), the spend is
 * summed in C, and each of budget_spend, budget_node_spend and
 * budget_model_spend gets one upsert statement whose rows are the sums
 * per (budget, period[, epoch | provider, model]). Period boundaries come
 * from spendpol_period_start/_end, the functions that give the snapshot
 * its periods, read for the batch's first and last request times (and,
 * for a batch spanning more periods, for the records in none of those).
 *
 * Only the records this batch inserted count (ingest_load.c marks them):
 * a batch read twice counts nothing twice. Upserts go in key order, so
 * concurrent nodes do not deadlock on them.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_attrib.h"


#define CD_SPEND_NO_PERIOD  INT64_MIN
#define CD_SPEND_PERIODS    2       /* at the first and the last request */


typedef struct {
    const char          *id;
    const char          *org_id;
    sp_attrib_budget_t   rule;
    sp_attrib_period_t   periods[CD_SPEND_PERIODS];
    int64_t              limit_nano;
    const char          *thresholds;    /* integer[] as text */
} cd_spend_budget_t;

typedef struct {
    uint32_t  budget;
    uint32_t  record;
    int64_t   period_us;
} cd_spend_hit_t;

struct cd_ingest_spend_s {
    cd_spend_budget_t  *budgets;
    size_t              nbudgets;
    cd_spend_hit_t     *hits;
    size_t              nhits;
    size_t              hits_cap;
};


cd_ingest_spend_t *
cd_ingest_spend_create(void)
{
    return calloc(1, sizeof(cd_ingest_spend_t));
}


void
cd_ingest_spend_free(cd_ingest_spend_t *s)
{
    if (s == NULL) {
        return;
    }

    free(s->budgets);
    free(s->hits);
    free(s);
}


size_t
cd_ingest_array_add(char *out, size_t pos, size_t cap, const char *s,
    size_t len)
{
    size_t  i;

    /* '{', at worst every byte escaped, two quotes, ',' or '}', NUL */
    if (cap < pos || cap - pos < 2 * len + 5) {
        return 0;
    }

    out[pos] = pos == 0 ? '{' : ',';
    out[pos + 1] = '"';
    pos += 2;

    for (i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            out[pos++] = '\\';
        }

        out[pos++] = s[i];
    }

    out[pos++] = '"';
    out[pos] = '\0';

    return pos;
}


int
cd_spend_array_init(cd_spend_array_t *a, size_t elements, size_t each)
{
    a->len = 0;
    a->cap = elements * (2 * each + 4) + 8;
    a->data = malloc(a->cap);

    return a->data ? CD_OK : CD_ERROR;
}


void
cd_spend_array_str(cd_spend_array_t *a, const char *s)
{
    size_t  n;

    /* sized by cd_spend_array_init for the longest value: always fits */
    n = cd_ingest_array_add(a->data, a->len, a->cap, s, strlen(s));
    a->len = n ? n : a->len;
}


void
cd_spend_array_int(cd_spend_array_t *a, int64_t v)
{
    char  num[32];

    snprintf(num, sizeof(num), "%lld", (long long) v);
    cd_spend_array_str(a, num);
}


const char *
cd_spend_array_end(cd_spend_array_t *a)
{
    if (a->len == 0) {
        snprintf(a->data, a->cap, "{}");

    } else {
        a->data[a->len++] = '}';
        a->data[a->len] = '\0';
    }

    return a->data;
}


static void
cd_spend_arrays_free(cd_spend_array_t *a, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(a[i].data);
        a[i].data = NULL;
    }
}


/*
 * n arrays of elements values, each at most each bytes but array wide
 * (when < n), which holds values of wide_each. CD_ERROR with none left
 * allocated.
 */
static int
cd_spend_arrays_init(cd_spend_array_t *a, size_t n, size_t elements,
    size_t each, size_t wide, size_t wide_each)
{
    size_t  i;

    memset(a, 0, n * sizeof(cd_spend_array_t));

    for (i = 0; i < n; i++) {
        if (cd_spend_array_init(&a[i], elements, i == wide ? wide_each : each)
            != CD_OK)
        {
            cd_spend_arrays_free(a, n);
            return CD_ERROR;
        }
    }

    return CD_OK;
}


/* a failed call that cost nothing counts against no budget */
static int
cd_spend_countable(const sp_journal_record_t *rec)
{
    return rec->cost_nano > 0 || rec->status < 400;
}


static const char *
cd_spend_model(const sp_journal_record_t *rec)
{
    return rec->model[0] ? rec->model : rec->requested_model;
}


/*
 * Reads the budgets of the batch's organisations with their periods at
 * the first and the last request time; *res keeps the strings alive.
 */
static int
cd_spend_load_budgets(cd_ingest_ctx_t *x, cd_db_conn_t *c, PGresult **res,
    int *by_key)
{
    int                  i, k;
    char                 lo[32], hi[32];
    size_t               r, j;
    int64_t              min_ms, max_ms;
    const char          *params[3];
    cd_spend_array_t     orgs;
    cd_spend_budget_t   *b;
    cd_ingest_spend_t   *s;

    s = x->spend;
    s->nbudgets = 0;
    *by_key = 0;

    if (cd_spend_array_init(&orgs, x->count, SP_ID_LEN) != CD_OK) {
        return CD_ERROR;
    }

    min_ms = INT64_MAX;
    max_ms = INT64_MIN;

    for (r = 0; r < x->count; r++) {
        if (!x->inserted[r] || !cd_spend_countable(&x->records[r])) {
            continue;
        }

        min_ms = x->records[r].ts_ms < min_ms ? x->records[r].ts_ms : min_ms;
        max_ms = x->records[r].ts_ms > max_ms ? x->records[r].ts_ms : max_ms;

        /* a batch holds few organisations: the first of each is listed */
        for (j = 0; j < r; j++) {
            if (x->inserted[j] && cd_spend_countable(&x->records[j])
                && strcmp(x->records[j].org_id, x->records[r].org_id) == 0)
            {
                break;
            }
        }

        if (j == r) {
            cd_spend_array_str(&orgs, x->records[r].org_id);
        }
    }

    if (orgs.len == 0) {
        free(orgs.data);
        *res = NULL;
        return CD_OK;
    }

    snprintf(lo, sizeof(lo), "%lld", (long long) min_ms);
    snprintf(hi, sizeof(hi), "%lld", (long long) max_ms);
    params[0] = cd_spend_array_end(&orgs);
    params[1] = lo;
    params[2] = hi;

    /* ids in byte order: the upserts' key order, and bsearch's */
    *res = cd_db_exec(c,
        "SELECT b.id, b.org_id, b.scope_type, b.scope_value,"
        " coalesce(b.provider, ''), coalesce(b.model, ''),"
        " b.period = 'total', " CD_SQL_US("b.created_at") ","
        " b.limit_nano, b.thresholds::text,"
        " " CD_SQL_US("spendpol_period_start(b.period, b.timezone,"
                      " b.created_at, t.lo)") ","
        " coalesce(" CD_SQL_US("spendpol_period_end(b.period, b.timezone,"
                               " t.lo)") ", 0),"
        " " CD_SQL_US("spendpol_period_start(b.period, b.timezone,"
                      " b.created_at, t.hi)") ","
        " coalesce(" CD_SQL_US("spendpol_period_end(b.period, b.timezone,"
                               " t.hi)") ", 0)"
        " FROM budgets b, (SELECT"
        " 'epoch'::timestamptz + $2::bigint * interval '1 millisecond' AS lo,"
        " 'epoch'::timestamptz + $3::bigint * interval '1 millisecond' AS hi"
        ") t WHERE b.org_id = ANY ($1::text[])"
        " ORDER BY b.id COLLATE \"C\"", 3, params);

    free(orgs.data);

    if (*res == NULL) {
        return CD_ERROR;
    }

    if (PQntuples(*res) == 0) {
        return CD_OK;
    }

    b = realloc(s->budgets, PQntuples(*res) * sizeof(cd_spend_budget_t));
    if (b == NULL) {
        return CD_ERROR;
    }

    s->budgets = b;

    for (i = 0; i < PQntuples(*res); i++) {
        b = &s->budgets[s->nbudgets];
        b->id = PQgetvalue(*res, i, 0);
        b->org_id = PQgetvalue(*res, i, 1);

        if (sp_attrib_scope(sp_str_from(PQgetvalue(*res, i, 2)),
                            &b->rule.scope) != SP_OK)
        {
            /* the table's CHECK allows no other: a newer schema's */
            cd_log_warn(CD_INGEST_SUBJECT, "budget %s has an unknown scope; "
                        "not counted", b->id);
            continue;
        }

        b->rule.scope_value = sp_str_from(PQgetvalue(*res, i, 3));
        b->rule.provider = sp_str_from(PQgetvalue(*res, i, 4));
        b->rule.model = sp_str_from(PQgetvalue(*res, i, 5));
        b->rule.total = cd_db_bool(*res, i, 6);
        b->rule.created_us = strtoll(PQgetvalue(*res, i, 7), NULL, 10);
        b->limit_nano = strtoll(PQgetvalue(*res, i, 8), NULL, 10);
        b->thresholds = PQgetvalue(*res, i, 9);

        for (k = 0; k < CD_SPEND_PERIODS; k++) {
            b->periods[k].start_us = strtoll(PQgetvalue(*res, i, 10 + 2 * k),
                                             NULL, 10);
            b->periods[k].end_us = strtoll(PQgetvalue(*res, i, 11 + 2 * k),
                                           NULL, 10);
        }

        *by_key |= b->rule.scope == SP_SCOPE_DEPARTMENT
                   || b->rule.scope == SP_SCOPE_PROJECT;
        s->nbudgets++;
    }

    return CD_OK;
}


/* the keys' own department and project, ordered by id for bsearch */
static PGresult *
cd_spend_load_keys(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    size_t             r;
    PGresult          *res;
    const char        *params[1];
    cd_spend_array_t   ids;

    if (cd_spend_array_init(&ids, x->count, SP_ID_LEN) != CD_OK) {
        return NULL;
    }

    for (r = 0; r < x->count; r++) {
        if (x->inserted[r] && x->records[r].api_key_id[0]) {
            cd_spend_array_str(&ids, x->records[r].api_key_id);
        }
    }

    params[0] = cd_spend_array_end(&ids);

    res = cd_db_exec(c, "SELECT id, coalesce(department, ''),"
                        " coalesce(project, '') FROM api_keys"
                        " WHERE id = ANY ($1::text[])"
                        " ORDER BY id COLLATE \"C\"", 1, params);
    free(ids.data);

    return res;
}


static int
cd_spend_find_row(PGresult *res, const char *id)
{
    int  lo, hi, mid, cmp;

    lo = 0;
    hi = res ? PQntuples(res) - 1 : -1;

    while (lo <= hi) {
        mid = lo + (hi - lo) / 2;
        cmp = strcmp(id, PQgetvalue(res, mid, 0));

        if (cmp == 0) {
            return mid;
        }

        if (cmp < 0) {
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }

    return -1;
}


static int
cd_spend_add_hit(cd_ingest_spend_t *s, size_t budget, size_t record,
    int64_t period_us)
{
    size_t           cap;
    cd_spend_hit_t  *hits;

    if (s->nhits == s->hits_cap) {
        cap = s->hits_cap ? 2 * s->hits_cap : 1024;
        hits = realloc(s->hits, cap * sizeof(cd_spend_hit_t));
        if (hits == NULL) {
            return CD_ERROR;
        }

        s->hits = hits;
        s->hits_cap = cap;
    }

    s->hits[s->nhits].budget = (uint32_t) budget;
    s->hits[s->nhits].record = (uint32_t) record;
    s->hits[s->nhits].period_us = period_us;
    s->nhits++;

    return CD_OK;
}


/* matches every inserted record against its organisation's budgets */
static int
cd_spend_match(cd_ingest_ctx_t *x, PGresult *keys, size_t *misses)
{
    int                         k, row;
    size_t                      r, i;
    sp_attrib_call_t            call;
    cd_spend_budget_t          *b;
    cd_ingest_spend_t          *s;
    const sp_journal_record_t  *rec;

    s = x->spend;
    s->nhits = 0;
    *misses = 0;

    for (r = 0; r < x->count; r++) {
        rec = &x->records[r];

        if (!x->inserted[r] || !cd_spend_countable(rec)) {
            continue;
        }

        memset(&call, 0, sizeof(call));
        call.api_key_id = sp_str_from(rec->api_key_id);
        call.agent_id = sp_str_from(rec->agent_id);
        call.department = sp_str_from(rec->department);
        call.project = sp_str_from(rec->project);
        call.provider = sp_str_from(rec->provider);
        call.requested_model = sp_str_from(rec->requested_model);
        call.model = sp_str_from(rec->model);
        call.ts_us = rec->ts_ms * 1000;
        call.cost_nano = rec->cost_nano;
        call.status = rec->status;
        call.key_department = sp_str_from("");
        call.key_project = sp_str_from("");

        row = keys ? cd_spend_find_row(keys, rec->api_key_id) : -1;

        if (row >= 0) {
            call.key_department = sp_str_from(PQgetvalue(keys, row, 1));
            call.key_project = sp_str_from(PQgetvalue(keys, row, 2));
        }

        for (i = 0; i < s->nbudgets; i++) {
            b = &s->budgets[i];

            if (strcmp(b->org_id, rec->org_id) != 0
                || !sp_attrib_counts(&b->rule, &call))
            {
                continue;
            }

            k = sp_attrib_period_find(b->periods, CD_SPEND_PERIODS,
                                      call.ts_us);

            if (cd_spend_add_hit(s, i, r, k >= 0 ? b->periods[k].start_us
                                                 : CD_SPEND_NO_PERIOD)
                != CD_OK)
            {
                return CD_ERROR;
            }

            *misses += k < 0;
        }
    }

    return CD_OK;
}


/*
 * The periods of the hits outside the batch's first and last periods (a
 * batch that spans three days of a daily budget): asked one by one of
 * spendpol_period_start, in one statement.
 */
static int
cd_spend_resolve(cd_ingest_ctx_t *x, cd_db_conn_t *c, size_t misses)
{
    int                 n;
    size_t              h;
    PGresult           *res;
    const char         *params[2];
    cd_spend_array_t    a[2];
    cd_ingest_spend_t  *s;

    s = x->spend;
    if (cd_spend_arrays_init(a, 2, misses, 32, 2, 0) != CD_OK) {
        return CD_ERROR;
    }

    for (h = 0; h < s->nhits; h++) {
        if (s->hits[h].period_us == CD_SPEND_NO_PERIOD) {
            cd_spend_array_str(&a[0], s->budgets[s->hits[h].budget].id);
            cd_spend_array_int(&a[1], x->records[s->hits[h].record].ts_ms);
        }
    }

    params[0] = cd_spend_array_end(&a[0]);
    params[1] = cd_spend_array_end(&a[1]);

    res = cd_db_exec(c,
        "SELECT " CD_SQL_US("spendpol_period_start(b.period, b.timezone,"
                            " b.created_at, 'epoch'::timestamptz"
                            " + m.ms * interval '1 millisecond')")
        " FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY"
        " AS m(budget_id, ms, n) JOIN budgets b ON b.id = m.budget_id"
        " ORDER BY m.n", 2, params);

    cd_spend_arrays_free(a, 2);

    if (res == NULL) {
        return CD_ERROR;
    }

    if ((size_t) PQntuples(res) != misses) {
        /* a budget deleted meanwhile: the batch is tried again */
        PQclear(res);
        return CD_ERROR;
    }

    n = 0;

    for (h = 0; h < s->nhits; h++) {
        if (s->hits[h].period_us == CD_SPEND_NO_PERIOD) {
            s->hits[h].period_us = strtoll(PQgetvalue(res, n++, 0), NULL, 10);
        }
    }

    PQclear(res);

    return CD_OK;
}


static int
cd_spend_cmp_period(const cd_spend_hit_t *a, const cd_spend_hit_t *b)
{
    if (a->budget != b->budget) {
        return a->budget < b->budget ? -1 : 1;
    }

    if (a->period_us != b->period_us) {
        return a->period_us < b->period_us ? -1 : 1;
    }

    return 0;
}


/* qsort_r: the records are the context */
static int
cd_spend_cmp_epoch(const void *pa, const void *pb, void *data)
{
    int64_t                     ea, eb;
    const cd_spend_hit_t       *a = pa, *b = pb;
    const sp_journal_record_t  *records = data;
    int                         cmp;

    cmp = cd_spend_cmp_period(a, b);
    if (cmp != 0) {
        return cmp;
    }

    ea = records[a->record].epoch;
    eb = records[b->record].epoch;

    return ea < eb ? -1 : ea > eb;
}


static int
cd_spend_cmp_model(const void *pa, const void *pb, void *data)
{
    const cd_spend_hit_t       *a = pa, *b = pb;
    const sp_journal_record_t  *records = data;
    int                         cmp;

    cmp = cd_spend_cmp_period(a, b);
    if (cmp != 0) {
        return cmp;
    }

    cmp = strcmp(records[a->record].provider, records[b->record].provider);
    if (cmp != 0) {
        return cmp;
    }

    return strcmp(cd_spend_model(&records[a->record]),
                  cd_spend_model(&records[b->record]));
}


/*
 * Raises alerts (cd_alerts_raise: with and update) under a savepoint with
 * a short lock timeout: an alert must never stall ingest, so on failure
 * the batch loads without it (logged).
 */
static void
cd_spend_alert_exec(cd_ingest_ctx_t *x, cd_db_conn_t *c, const char *what,
    const char *with, const char *update, int nparams,
    const char *const *params)
{
    PGresult  *res;

    if (cd_db_exec_script(c, "SAVEPOINT cd_alerts;"
                             " SET LOCAL lock_timeout = 1000") != CD_OK)
    {
        return;
    }

    res = cd_alerts_raise(c, with, update, nparams, params);

    if (res != NULL) {
        PQclear(res);

        if (cd_db_exec_script(c, "RELEASE SAVEPOINT cd_alerts") == CD_OK) {
            return;
        }
    }

    cd_log_warn(CD_INGEST_SUBJECT, "%s: could not raise the %s of the "
                "batch ending at offset %lld; loading it without them",
                x->app->config.journal_path, what, (long long) x->scan_off);

    if (cd_db_exec_script(c, "ROLLBACK TO SAVEPOINT cd_alerts") != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "cannot roll back to the alerts "
                    "savepoint");
    }
}


/*
 * Raises a budget_threshold alert for each threshold a budget's spend in
 * a period has reached, once per budget, period and threshold (the
 * dedupe key, looked up whatever the alert's state): so also for a
 * threshold reached because the limit was lowered. spent holds the rows
 * budget_spend's upsert returned: the budgets this batch counted for.
 * Under a savepoint (cd_spend_alert_exec).
 */
static void
cd_ingest_budget_alerts(cd_ingest_ctx_t *x, cd_db_conn_t *c, PGresult *spent)
{
    int                 i, k, b, thresholds[CD_BUDGET_THRESHOLDS_MAX];
    size_t              n, count;
    int64_t             total;
    const char         *params[3];
    cd_spend_array_t    a[3];
    cd_ingest_spend_t  *s;

    s = x->spend;
    count = (size_t) PQntuples(spent) * CD_BUDGET_THRESHOLDS_MAX;
    a[0].data = a[1].data = a[2].data = NULL;

    if (count == 0) {
        return;
    }

    if (cd_spend_arrays_init(a, 3, count, 32, 3, 0) != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "out of memory for the budget alerts");
        return;
    }

    for (i = 0; i < PQntuples(spent); i++) {
        /* budgets are sorted by id: find the returned one */
        for (b = 0; b < (int) s->nbudgets; b++) {
            if (strcmp(s->budgets[b].id, PQgetvalue(spent, i, 0)) == 0) {
                break;
            }
        }

        if (b == (int) s->nbudgets
            || cd_budget_thresholds_from_text(s->budgets[b].thresholds,
                                              thresholds, &n) != CD_OK)
        {
            continue;
        }

        total = strtoll(PQgetvalue(spent, i, 2), NULL, 10);

        for (k = 0; k < (int) n; k++) {
            if (cd_budget_threshold_reached(s->budgets[b].limit_nano, total,
                                            thresholds[k]))
            {
                cd_spend_array_str(&a[0], s->budgets[b].id);
                cd_spend_array_int(&a[1], thresholds[k]);
                cd_spend_array_str(&a[2], PQgetvalue(spent, i, 1));
            }
        }
    }

    if (a[0].len == 0) {
        cd_spend_arrays_free(a, 3);
        return;
    }

    params[0] = cd_spend_array_end(&a[0]);
    params[1] = cd_spend_array_end(&a[1]);
    params[2] = cd_spend_array_end(&a[2]);

    cd_spend_alert_exec(x, c, "budget alerts",
        "WITH reached AS ("
        " SELECT b.id, b.org_id, b.name, b.limit_nano, b.action, t.percent,"
        " s.spent_nano, s.period_start,"
        " format('budget_threshold:%s:%s:%s', b.id, t.start_us, t.percent)"
        " AS dedupe_key"
        " FROM unnest($1::text[], $2::int[], $3::bigint[])"
        " AS t(budget_id, percent, start_us)"
        " JOIN budgets b ON b.id = t.budget_id"
        " JOIN budget_spend s ON s.budget_id = b.id AND s.period_start ="
        " 'epoch'::timestamptz + t.start_us * interval '1 microsecond'),"
        " new_alerts AS (SELECT org_id, 'budget_threshold' AS type,"
        " CASE WHEN percent >= 100 THEN 'critical' ELSE 'warning' END"
        " AS severity,"
        " format('Budget \"%s\" (%s) reached %s%% of its limit: %s of %s"
        " USD spent in the period that started %s.%s', name, id, percent,"
        " trim_scale(spent_nano::numeric / 1000000000),"
        " trim_scale(limit_nano::numeric / 1000000000),"
        " " CD_SQL_TS("period_start") ","
        " CASE WHEN percent >= 100 AND action = 'block' THEN ' Requests it"
        " covers are refused (budget_exceeded) until the period ends or"
        " the limit is raised (PATCH /budgets/' || id || ').' ELSE '' END)"
        " AS message,"
        " jsonb_build_object('budget_id', id, 'budget_name', name,"
        " 'threshold_percent', percent, 'period_start', period_start,"
        " 'limit_usd', trim_scale(limit_nano::numeric / 1000000000)::text,"
        " 'spent_usd', trim_scale(spent_nano::numeric / 1000000000)::text,"
        " 'action', action) AS details,"
        " dedupe_key FROM reached)",
        NULL,
        3, params);

    cd_spend_arrays_free(a, 3);
}


/*
 * Raises the alerts of the rows this batch inserted, in its transaction,
 * so a batch loaded twice raises and counts nothing twice. One open alert
 * per (org, dedupe_key) counts the requests. Under a savepoint
 * (cd_spend_alert_exec).
 */
static void
cd_ingest_raise_alerts(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    size_t             r, j, i, requests;
    int64_t            first, last;
    const char        *params[7];
    cd_spend_array_t   a[7];

    if (cd_spend_arrays_init(a, 7, x->raises, CD_ALERT_KEY_MAX, 3,
                             SP_FIELD_LEN) != CD_OK)
    {
        return;
    }

    /* per (org, key): the first record's provider and model, the count */
    for (r = 0; r < x->count; r++) {
        if (!x->inserted[r] || x->alert_keys[r][0] == '\0') {
            continue;
        }

        for (j = 0; j < r; j++) {
            if (x->inserted[j]
                && strcmp(x->alert_keys[j], x->alert_keys[r]) == 0
                && strcmp(x->records[j].org_id, x->records[r].org_id) == 0)
            {
                break;
            }
        }

        if (j < r) {
            continue;
        }

        requests = 0;
        first = INT64_MAX;
        last = INT64_MIN;

        for (j = r; j < x->count; j++) {
            if (x->inserted[j]
                && strcmp(x->alert_keys[j], x->alert_keys[r]) == 0
                && strcmp(x->records[j].org_id, x->records[r].org_id) == 0)
            {
                requests++;
                first = x->records[j].ts_ms < first ? x->records[j].ts_ms
                                                    : first;
                last = x->records[j].ts_ms > last ? x->records[j].ts_ms
                                                  : last;
            }
        }

        cd_spend_array_str(&a[0], x->records[r].org_id);
        cd_spend_array_str(&a[1], x->alert_keys[r]);
        cd_spend_array_str(&a[2], x->records[r].provider);
        cd_spend_array_str(&a[3], cd_spend_model(&x->records[r]));
        cd_spend_array_int(&a[4], (int64_t) requests);
        cd_spend_array_int(&a[5], first);
        cd_spend_array_int(&a[6], last);
    }

    if (a[0].len == 0) {
        cd_spend_arrays_free(a, 7);
        return;
    }

    for (i = 0; i < 7; i++) {
        params[i] = cd_spend_array_end(&a[i]);
    }

    cd_spend_alert_exec(x, c, "unpriced_model alerts",
        "WITH unpriced AS (SELECT * FROM unnest($1::text[], $2::text[],"
        " $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])"
        " AS t(org_id, alert_key, provider, model, requests, first_ms,"
        " last_ms)),"
        " new_alerts AS (SELECT org_id, 'unpriced_model' AS type,"
        " 'warning' AS severity,"
        " format('%s model \"%s\" has no price: its requests are"
        " served and recorded at $0 (warning unpriced_model). Price"
        " it with PUT /pricing/%s/%s, or refuse unpriced models"
        " with PATCH /org {\"refuse_unpriced_models\": true}.',"
        " provider, model, provider, model) AS message,"
        " jsonb_build_object('provider', provider, 'model', model,"
        " 'requests', requests, 'first_seen_at',"
        " 'epoch'::timestamptz + first_ms * interval '1 millisecond',"
        " 'last_seen_at',"
        " 'epoch'::timestamptz + last_ms * interval '1 millisecond')"
        " AS details,"
        " alert_key AS dedupe_key FROM unpriced)",
        "details = alerts.details || jsonb_build_object("
        " 'requests', coalesce((alerts.details->>'requests')::bigint, 0)"
        " + (EXCLUDED.details->>'requests')::bigint,"
        " 'last_seen_at', greatest(alerts.details->>'last_seen_at',"
        " EXCLUDED.details->>'last_seen_at'))",
        7, params);

    cd_spend_arrays_free(a, 7);
}


/* the sums per (budget, period) and per (budget, period, epoch) */
static int
cd_spend_upsert_periods(cd_ingest_ctx_t *x, cd_db_conn_t *c,
    PGresult **spent)
{
    int                 rc;
    size_t              h, start, requests;
    int64_t             sum, node_sum;
    PGresult           *res;
    const char         *params[9];
    cd_spend_array_t    a[8];
    cd_spend_hit_t     *hit;
    cd_ingest_spend_t  *s;

    s = x->spend;
    memset(a, 0, sizeof(a));
    *spent = NULL;
    rc = CD_ERROR;

    for (h = 0; h < 8; h++) {
        if (cd_spend_array_init(&a[h], s->nhits, 32) != CD_OK) {
            goto done;
        }
    }

    qsort_r(s->hits, s->nhits, sizeof(cd_spend_hit_t), cd_spend_cmp_epoch,
            x->records);

    /* a[0..3]: budget_spend rows; a[4..7]: budget_node_spend rows */
    for (start = 0; start < s->nhits; /* void */) {
        sum = 0;
        requests = 0;

        for (h = start;
             h < s->nhits && cd_spend_cmp_period(&s->hits[h],
                                                 &s->hits[start]) == 0;
             /* void */)
        {
            hit = &s->hits[h];
            node_sum = 0;

            do {
                node_sum += x->records[s->hits[h].record].cost_nano;
                h++;
            } while (h < s->nhits
                     && cd_spend_cmp_epoch(&s->hits[h], hit, x->records) == 0);

            cd_spend_array_str(&a[4], s->budgets[hit->budget].id);
            cd_spend_array_int(&a[5], hit->period_us);
            cd_spend_array_int(&a[6], x->records[hit->record].epoch);
            cd_spend_array_int(&a[7], node_sum);

            sum += node_sum;
            requests += (size_t) (h - (size_t) (hit - s->hits));
        }

        cd_spend_array_str(&a[0], s->budgets[s->hits[start].budget].id);
        cd_spend_array_int(&a[1], s->hits[start].period_us);
        cd_spend_array_int(&a[2], sum);
        cd_spend_array_int(&a[3], (int64_t) requests);
        start = h;
    }

    for (h = 0; h < 4; h++) {
        params[h] = cd_spend_array_end(&a[h]);
    }

    *spent = cd_db_exec(c,
        "INSERT INTO budget_spend (budget_id, org_id, period_start,"
        " spent_nano, requests)"
        " SELECT t.budget_id, b.org_id,"
        " 'epoch'::timestamptz + t.start_us * interval '1 microsecond',"
        " t.spent, t.requests"
        " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])"
        " WITH ORDINALITY AS t(budget_id, start_us, spent, requests, n)"
        " JOIN budgets b ON b.id = t.budget_id ORDER BY t.n"
        " ON CONFLICT (budget_id, period_start) DO UPDATE SET"
        " spent_nano = budget_spend.spent_nano + EXCLUDED.spent_nano,"
        " requests = budget_spend.requests + EXCLUDED.requests,"
        " updated_at = clock_timestamp()"
        " RETURNING budget_id, " CD_SQL_US("period_start") ", spent_nano",
        4, params);

    if (*spent == NULL) {
        goto done;
    }

    params[0] = x->app->config.node_id;

    for (h = 4; h < 8; h++) {
        params[h - 3] = cd_spend_array_end(&a[h]);
    }

    res = cd_db_exec(c,
        "INSERT INTO budget_node_spend (budget_id, org_id, period_start,"
        " node_id, epoch, spent_nano)"
        " SELECT t.budget_id, b.org_id,"
        " 'epoch'::timestamptz + t.start_us * interval '1 microsecond',"
        " $1, t.epoch, t.spent"
        " FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
        " WITH ORDINALITY AS t(budget_id, start_us, epoch, spent, n)"
        " JOIN budgets b ON b.id = t.budget_id ORDER BY t.n"
        " ON CONFLICT (budget_id, period_start, node_id, epoch) DO UPDATE"
        " SET spent_nano = budget_node_spend.spent_nano"
        " + EXCLUDED.spent_nano", 5, params);

    if (res != NULL) {
        PQclear(res);
        rc = CD_OK;
    }

done:

    cd_spend_arrays_free(a, 8);

    return rc;
}


/* the sums per (budget, period, provider, model) */
static int
cd_spend_upsert_models(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    size_t                      h, start, requests;
    int64_t                     sum;
    PGresult                   *res;
    const char                 *params[6];
    cd_spend_array_t            a[6];
    cd_ingest_spend_t          *s;
    const sp_journal_record_t  *rec;

    s = x->spend;
    if (cd_spend_arrays_init(a, 6, s->nhits, SP_ID_LEN, 3, SP_FIELD_LEN)
        != CD_OK)
    {
        return CD_ERROR;
    }

    qsort_r(s->hits, s->nhits, sizeof(cd_spend_hit_t), cd_spend_cmp_model,
            x->records);

    for (start = 0; start < s->nhits; start = h) {
        sum = 0;
        requests = 0;

        for (h = start;
             h < s->nhits && cd_spend_cmp_model(&s->hits[h], &s->hits[start],
                                                x->records) == 0;
             h++)
        {
            sum += x->records[s->hits[h].record].cost_nano;
            requests++;
        }

        rec = &x->records[s->hits[start].record];
        cd_spend_array_str(&a[0], s->budgets[s->hits[start].budget].id);
        cd_spend_array_int(&a[1], s->hits[start].period_us);
        cd_spend_array_str(&a[2], rec->provider);
        cd_spend_array_str(&a[3], cd_spend_model(rec));
        cd_spend_array_int(&a[4], sum);
        cd_spend_array_int(&a[5], (int64_t) requests);
    }

    for (h = 0; h < 6; h++) {
        params[h] = cd_spend_array_end(&a[h]);
    }

    res = cd_db_exec(c,
        "INSERT INTO budget_model_spend (budget_id, org_id, period_start,"
        " provider, model, spent_nano, requests)"
        " SELECT t.budget_id, b.org_id,"
        " 'epoch'::timestamptz + t.start_us * interval '1 microsecond',"
        " t.provider, t.model, t.spent, t.requests"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],"
        " $5::bigint[], $6::bigint[])"
        " WITH ORDINALITY AS t(budget_id, start_us, provider, model, spent,"
        " requests, n)"
        " JOIN budgets b ON b.id = t.budget_id ORDER BY t.n"
        " ON CONFLICT (budget_id, period_start, provider, model) DO UPDATE"
        " SET spent_nano = budget_model_spend.spent_nano"
        " + EXCLUDED.spent_nano,"
        " requests = budget_model_spend.requests + EXCLUDED.requests",
        6, params);

    cd_spend_arrays_free(a, 6);

    if (res == NULL) {
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/* this node's epoch: that of its latest inserted line by request time */
static int
cd_spend_node_epoch(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    char                        epoch[32], ms[32];
    size_t                      r;
    const char                 *params[3];
    const sp_journal_record_t  *rec, *latest;

    latest = NULL;

    for (r = 0; r < x->count; r++) {
        rec = &x->records[r];

        if (x->inserted[r]
            && (latest == NULL || rec->ts_ms > latest->ts_ms
                || (rec->ts_ms == latest->ts_ms
                    && strcmp(rec->id, latest->id) > 0)))
        {
            latest = rec;
        }
    }

    if (latest == NULL) {
        return CD_OK;
    }

    snprintf(epoch, sizeof(epoch), "%lld", (long long) latest->epoch);
    snprintf(ms, sizeof(ms), "%lld", (long long) latest->ts_ms);
    params[0] = x->app->config.node_id;
    params[1] = epoch;
    params[2] = ms;

    return cd_db_command(c, "INSERT INTO journal_nodes"
                            " (node_id, epoch, last_at)"
                            " VALUES ($1, $2,"
                            " 'epoch'::timestamptz + $3::bigint"
                            " * interval '1 millisecond')"
                            " ON CONFLICT (node_id) DO UPDATE SET"
                            " epoch = EXCLUDED.epoch,"
                            " last_at = EXCLUDED.last_at,"
                            " updated_at = clock_timestamp()"
                            " WHERE EXCLUDED.last_at"
                            " >= journal_nodes.last_at",
                         3, params);
}


int
cd_ingest_count_spend(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    int        by_key, rc;
    size_t     misses;
    PGresult  *budgets, *keys, *spent;

    budgets = keys = spent = NULL;
    rc = CD_ERROR;

    if (cd_spend_load_budgets(x, c, &budgets, &by_key) != CD_OK) {
        goto done;
    }

    if (by_key && (keys = cd_spend_load_keys(x, c)) == NULL) {
        goto done;
    }

    if (x->spend->nbudgets > 0) {
        if (cd_spend_match(x, keys, &misses) != CD_OK
            || (misses > 0 && cd_spend_resolve(x, c, misses) != CD_OK))
        {
            goto done;
        }

        if (x->spend->nhits > 0) {
            if (cd_spend_upsert_periods(x, c, &spent) != CD_OK
                || cd_spend_upsert_models(x, c) != CD_OK)
            {
                goto done;
            }
        }
    }

    if (cd_spend_node_epoch(x, c) != CD_OK) {
        goto done;
    }

    if (spent != NULL) {
        cd_ingest_budget_alerts(x, c, spent);
    }

    if (x->raises) {
        cd_ingest_raise_alerts(x, c);
    }

    rc = CD_OK;

done:

    if (rc != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "cannot count the spend of the "
                    "batch ending at offset %lld", (long long) x->scan_off);
    }

    PQclear(spent);
    PQclear(keys);
    PQclear(budgets);

    return rc;
}
