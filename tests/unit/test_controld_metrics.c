/*
 * controld metrics: the hooks count exactly, also from many threads at
 * once, and the render is valid Prometheus text (checked by a strict
 * parser here: every line a HELP, a TYPE or a sample of a declared
 * family, histograms cumulative with +Inf equal to _count).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"
#include "metrics.h"


#define FAMILIES_MAX  64

typedef struct {
    char  name[128];
    char  type[16];
} family_t;

typedef struct {
    family_t  families[FAMILIES_MAX];
    size_t    nfamilies;
    size_t    samples;
    char      bucket_series[512];   /* the last _bucket line up to le= */
    double    bucket_value;
    double    inf_value;            /* of the last +Inf bucket, -1: none */
} parsed_t;


static const cd_route_t *
route_of(const char *method, const char *pattern)
{
    size_t  i;

    for (i = 0; i < cd_routes_count; i++) {
        if (strcmp(cd_routes[i].method, method) == 0
            && strcmp(cd_routes[i].pattern, pattern) == 0)
        {
            return &cd_routes[i];
        }
    }

    fail_msg("no route %s %s", method, pattern);

    return NULL;
}


static int
name_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || (s[0] >= '0' && s[0] <= '9')) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == ':'))
        {
            return 0;
        }
    }

    return 1;
}


static family_t *
family_find(parsed_t *p, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < p->nfamilies; i++) {
        if (strlen(p->families[i].name) == len
            && memcmp(p->families[i].name, name, len) == 0)
        {
            return &p->families[i];
        }
    }

    return NULL;
}


/* the family a sample name belongs to: itself, or a histogram's part */
static family_t *
sample_family(parsed_t *p, const char *name, size_t len)
{
    size_t       i, n;
    family_t    *f;
    static const char  *suffixes[] = { "_bucket", "_sum", "_count" };

    f = family_find(p, name, len);
    if (f != NULL) {
        return strcmp(f->type, "histogram") == 0 ? NULL : f;
    }

    for (i = 0; i < 3; i++) {
        n = strlen(suffixes[i]);

        if (len > n && memcmp(name + len - n, suffixes[i], n) == 0) {
            f = family_find(p, name, len - n);

            if (f != NULL && strcmp(f->type, "histogram") == 0) {
                return f;
            }
        }
    }

    return NULL;
}


/* labels: {name="value",...} with \\, \" and \n escapes only */
static const char *
parse_labels(const char *s)
{
    const char  *name;

    if (*s != '{') {
        return s;
    }

    s++;

    while (*s != '}') {
        name = s;

        while (*s != '=' && *s != '\0') {
            s++;
        }

        assert_true(name_valid(name, (size_t) (s - name)));
        assert_int_equal(s[0], '=');
        assert_int_equal(s[1], '"');
        s += 2;

        while (*s != '"') {
            assert_true(*s != '\0' && *s != '\n');

            if (*s == '\\') {
                s++;
                assert_true(*s == '\\' || *s == '"' || *s == 'n');
            }

            s++;
        }

        s++;

        if (*s == ',') {
            s++;
            assert_true(*s != '}');
        } else {
            assert_int_equal(*s, '}');
        }
    }

    return s + 1;
}


/* a value: an integer, a decimal, or +Inf/-Inf/NaN */
static void
parse_value(const char *s, size_t len)
{
    size_t  i, dots;

    assert_true(len > 0);

    if ((len == 4 && (memcmp(s, "+Inf", 4) == 0 || memcmp(s, "-Inf", 4) == 0))
        || (len == 3 && memcmp(s, "NaN", 3) == 0))
    {
        return;
    }

    dots = 0;

    for (i = (s[0] == '-'); i < len; i++) {
        if (s[i] == '.') {
            dots++;
            continue;
        }

        assert_true(s[i] >= '0' && s[i] <= '9');
    }

    assert_true(dots <= 1);
    assert_true(s[len - 1] != '.');
}


/*
 * A histogram's lines in order: its buckets rise with le and end with
 * +Inf, whose value its _count repeats
 */
static void
histogram_line(parsed_t *p, const char *name, const char *labels,
    double value)
{
    size_t       n;
    const char  *le;

    n = strcspn(name, "{ ");

    if (n > 7 && memcmp(name + n - 7, "_bucket", 7) == 0) {
        le = strstr(labels, "le=\"");
        assert_non_null(le);
        n = (size_t) (le - name);
        assert_true(n < sizeof(p->bucket_series));

        if (strlen(p->bucket_series) == n
            && memcmp(p->bucket_series, name, n) == 0)
        {
            assert_true(value >= p->bucket_value);

        } else {
            /* a new series starts after the last one ended with +Inf */
            assert_true(p->bucket_series[0] == '\0' || p->inf_value >= 0);
            memcpy(p->bucket_series, name, n);
            p->bucket_series[n] = '\0';
        }

        p->bucket_value = value;
        p->inf_value = strncmp(le, "le=\"+Inf\"", 9) == 0 ? value : -1;
        return;
    }

    if (n > 6 && memcmp(name + n - 6, "_count", 6) == 0) {
        assert_true(p->inf_value >= 0);
        assert_true(value == p->inf_value);
    }
}


static void
parse_text(const char *text, parsed_t *p)
{
    size_t       len;
    family_t    *f;
    const char  *line, *end, *s, *name, *labels;
    char         type[16];

    memset(p, 0, sizeof(parsed_t));
    p->inf_value = -1;

    for (line = text; *line != '\0'; line = end + 1) {
        end = strchr(line, '\n');
        assert_non_null(end);      /* every line ends with '\n' */
        len = (size_t) (end - line);
        assert_true(len > 0);

        if (strncmp(line, "# HELP ", 7) == 0) {
            s = line + 7;
            name = s;
            s += strcspn(s, " \n");
            assert_true(name_valid(name, (size_t) (s - name)));
            assert_int_equal(*s, ' ');
            /* HELP comes first: the family must not be declared yet */
            assert_null(family_find(p, name, (size_t) (s - name)));
            continue;
        }

        if (strncmp(line, "# TYPE ", 7) == 0) {
            s = line + 7;
            name = s;
            s += strcspn(s, " \n");
            assert_true(name_valid(name, (size_t) (s - name)));
            assert_int_equal(*s, ' ');
            assert_null(family_find(p, name, (size_t) (s - name)));
            assert_true((size_t) (end - s - 1) < sizeof(type));
            memcpy(type, s + 1, (size_t) (end - s - 1));
            type[end - s - 1] = '\0';
            assert_true(strcmp(type, "counter") == 0
                        || strcmp(type, "gauge") == 0
                        || strcmp(type, "histogram") == 0);

            assert_true(p->nfamilies < FAMILIES_MAX);
            f = &p->families[p->nfamilies++];
            snprintf(f->name, sizeof(f->name), "%.*s", (int) (s - name),
                     name);
            snprintf(f->type, sizeof(f->type), "%s", type);
            continue;
        }

        assert_true(line[0] != '#');

        name = line;
        s = line + strcspn(line, "{ \n");
        assert_true(name_valid(name, (size_t) (s - name)));

        f = sample_family(p, name, (size_t) (s - name));
        if (f == NULL) {
            fail_msg("sample of an undeclared family: %.*s", (int) len,
                     line);
        }

        if (strcmp(f->type, "counter") == 0) {
            assert_true(s - name > 6
                        && memcmp(s - 6, "_total", 6) == 0);
        }

        labels = s;
        s = parse_labels(s);
        assert_int_equal(*s, ' ');
        s++;
        parse_value(s, (size_t) (end - s));
        p->samples++;

        if (strcmp(f->type, "histogram") == 0) {
            histogram_line(p, name, labels, strtod(s, NULL));
        }
    }
}


/* the value of the sample line that starts with series + ' ', or -1 */
static double
sample(const char *text, const char *series)
{
    size_t       n;
    const char  *line;

    n = strlen(series);

    for (line = text; line != NULL && *line != '\0';
         line = strchr(line, '\n'), line = line ? line + 1 : NULL)
    {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            return strtod(line + n + 1, NULL);
        }
    }

    return -1;
}


static char *
render(const cd_metrics_state_t *st)
{
    char      *text;
    size_t     len;
    parsed_t   p;

    text = cd_metrics_render(&cd_metrics, st, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    parse_text(text, &p);

    return text;
}


static void
state_empty(cd_metrics_state_t *st)
{
    memset(st, 0, sizeof(cd_metrics_state_t));
    st->now_ms = 1700000000000LL;
    st->behind_bytes = -1;
}


static void
request(const cd_route_t *route, unsigned status, long us)
{
    struct timespec  start, end;

    start.tv_sec = 100;
    start.tv_nsec = 999999000;
    end.tv_sec = 100 + (999999000 + us * 1000) / 1000000000;
    end.tv_nsec = (999999000 + us * 1000) % 1000000000;

    cd_metrics_http_request(route, status, &start, &end);
}


static void
test_metrics_route_table_fits_the_fixed_label_set(void **state)
{
    size_t  i;

    (void) state;

    assert_true(cd_routes_count < CD_METRICS_ROUTES_MAX);

    for (i = 0; i < cd_routes_count; i++) {
        assert_true(strlen(cd_routes[i].pattern) <= CD_METRICS_PATTERN_MAX);
        assert_null(strpbrk(cd_routes[i].pattern, "\"\\\n"));
        assert_null(strpbrk(cd_routes[i].method, "\"\\\n"));
    }

    /* Prometheus sends no admin key: the handler checks its bearer */
    assert_int_equal(route_of("GET", "/metrics")->admin, 0);
}


static void
test_metrics_requests_counted_by_route_pattern_and_status(void **state)
{
    char                *text;
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    request(route_of("GET", "/budgets/{id}"), 200, 10);
    request(route_of("GET", "/budgets/{id}"), 200, 10);
    request(route_of("GET", "/budgets/{id}"), 404, 10);
    request(route_of("PATCH", "/budgets/{id}"), 422, 10);
    request(NULL, 404, 10);
    request(NULL, 405, 10);
    request(route_of("GET", "/healthz"), 418, 10);

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets/{id}\",method=\"GET\",status=\"200\"}")
                == 2);
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets/{id}\",method=\"GET\",status=\"404\"}")
                == 1);
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets/{id}\",method=\"PATCH\",status=\"422\"}")
                == 1);
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"unmatched\",method=\"any\",status=\"404\"}") == 1);
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"unmatched\",method=\"any\",status=\"405\"}") == 1);
    /* a code outside the list keeps the label set fixed */
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/healthz\",method=\"GET\",status=\"other\"}") == 1);
    /* series never counted are not rendered */
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets\",method=\"GET\",status=\"200\"}") == -1);

    free(text);
}


static void
test_metrics_histogram_buckets_are_cumulative_and_end_at_count(void **state)
{
    char                *text;
    cd_metrics_state_t   st;
    const char          *p;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    request(route_of("GET", "/pricing"), 200, 500);        /* <= 0.001 */
    request(route_of("GET", "/pricing"), 200, 1000);       /* le is <= */
    request(route_of("GET", "/pricing"), 200, 3000);       /* 0.005 */
    request(route_of("GET", "/pricing"), 200, 20000000);   /* +Inf */

    text = render(&st);

#define DURATION  "spendpol_controld_http_request_duration_seconds"
#define LABELS    "route=\"/pricing\",method=\"GET\""

    assert_true(sample(text, DURATION "_bucket{" LABELS ",le=\"0.001\"}")
                == 2);
    assert_true(sample(text, DURATION "_bucket{" LABELS ",le=\"0.0025\"}")
                == 2);
    assert_true(sample(text, DURATION "_bucket{" LABELS ",le=\"0.005\"}")
                == 3);
    assert_true(sample(text, DURATION "_bucket{" LABELS ",le=\"10\"}") == 3);
    assert_true(sample(text, DURATION "_bucket{" LABELS ",le=\"+Inf\"}")
                == 4);
    assert_true(sample(text, DURATION "_count{" LABELS "}") == 4);

    /* the sum exactly, in seconds: 0.0005 + 0.001 + 0.003 + 20 */
    p = strstr(text, DURATION "_sum{" LABELS "} ");
    assert_non_null(p);
    assert_memory_equal(strchr(p, ' ') + 1, "20.004500\n", 10);

    /* a route without requests has no series */
    assert_null(strstr(text, DURATION "_count{route=\"/budgets\","));

#undef DURATION
#undef LABELS

    free(text);
}


#define THREADS        4
#define PER_THREAD     100000

static void *
hammer(void *data)
{
    int                i;
    const cd_route_t  *route;

    route = data;

    for (i = 0; i < PER_THREAD; i++) {
        request(route, i % 2 ? 200 : 201, 100);
        cd_metrics_webhook_delivery(CD_METRICS_DELIVERED);
    }

    return NULL;
}


static void
test_metrics_counters_are_exact_across_threads(void **state)
{
    int                  i;
    char                *text;
    pthread_t            threads[THREADS];
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    for (i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, hammer,
                         (void *) route_of("POST", "/budgets")), 0);
    }

    for (i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets\",method=\"POST\",status=\"200\"}")
                == THREADS * PER_THREAD / 2);
    assert_true(sample(text, "spendpol_controld_http_requests_total{route="
                       "\"/budgets\",method=\"POST\",status=\"201\"}")
                == THREADS * PER_THREAD / 2);
    assert_true(sample(text, "spendpol_controld_http_request_duration_seconds"
                       "_count{route=\"/budgets\",method=\"POST\"}")
                == THREADS * PER_THREAD);
    assert_true(sample(text, "spendpol_controld_webhook_deliveries_total"
                       "{result=\"delivered\"}") == THREADS * PER_THREAD);

    free(text);
}


static void
test_metrics_ingest_counts_new_rows_not_duplicates(void **state)
{
    char                *text;
    cd_metrics_state_t   st;
    unsigned char        inserted[5] = { 1, 0, 1, 1, 0 };

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    cd_metrics_ingest_batch(inserted, 5, 4096);
    cd_metrics_ingest_batch(inserted, 0, 100);    /* malformed lines only */
    cd_metrics_ingest_failed();

    st.committed_offset = 4196;
    st.behind_bytes = 10;
    st.malformed_lines = 7;
    st.refused_lines = 2;
    st.drained_ms = st.now_ms - 1500;

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_ingest_rows_total") == 3);
    assert_true(sample(text, "spendpol_controld_ingest_duplicate_rows_total")
                == 2);
    assert_true(sample(text, "spendpol_controld_ingest_batches_total") == 2);
    assert_true(sample(text, "spendpol_controld_ingest_batch_failures_total")
                == 1);
    assert_true(sample(text, "spendpol_controld_ingest_read_bytes_total")
                == 4196);
    assert_true(sample(text, "spendpol_controld_ingest_offset_bytes")
                == 4196);
    assert_true(sample(text, "spendpol_controld_ingest_behind_bytes") == 10);
    assert_true(sample(text, "spendpol_controld_ingest_skipped_lines_total"
                       "{reason=\"malformed\"}") == 7);
    assert_non_null(strstr(text, "\nspendpol_controld_ingest_lag_seconds "
                           "1.500\n"));

    free(text);
}


static void
test_metrics_unknown_gauges_have_no_sample(void **state)
{
    char                *text;
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    text = render(&st);

    /* declared, but no made-up value before ingest or a publish */
    assert_non_null(strstr(text, "# TYPE spendpol_controld_ingest_lag_seconds"
                           " gauge\n"));
    assert_true(sample(text, "spendpol_controld_ingest_lag_seconds") == -1);
    assert_true(sample(text, "spendpol_controld_ingest_behind_bytes") == -1);
    assert_true(sample(text, "spendpol_controld_snapshot_last_publish_"
                       "timestamp_seconds") == -1);
    /* counters with fixed labels start at 0 */
    assert_true(sample(text, "spendpol_controld_snapshot_publishes_total"
                       "{result=\"failed\"}") == 0);
    assert_true(sample(text, "spendpol_controld_snapshot_publish_duration_"
                       "seconds_count") == 0);

    free(text);
}


static void
test_metrics_snapshot_publishes_by_result(void **state)
{
    char                *text;
    int64_t              started;
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);
    st.snapshot_generation = 42;

    started = cd_clock_ms(CLOCK_MONOTONIC);
    cd_metrics_snapshot_publish(1, started);
    cd_metrics_snapshot_publish(1, started - 2000);
    cd_metrics_snapshot_publish(0, started);

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_snapshot_generation") == 42);
    assert_true(sample(text, "spendpol_controld_snapshot_publishes_total"
                       "{result=\"ok\"}") == 2);
    assert_true(sample(text, "spendpol_controld_snapshot_publishes_total"
                       "{result=\"failed\"}") == 1);
    assert_true(sample(text, "spendpol_controld_snapshot_publish_duration_"
                       "seconds_bucket{le=\"1\"}") == 2);
    assert_true(sample(text, "spendpol_controld_snapshot_publish_duration_"
                       "seconds_count") == 3);
    assert_true(sample(text, "spendpol_controld_snapshot_publish_duration_"
                       "seconds_sum") >= 2);
    assert_true(sample(text, "spendpol_controld_snapshot_last_publish_"
                       "timestamp_seconds") > 1.7e9);

    free(text);
}


static void
test_metrics_pool_waits_counted_once_per_acquire(void **state)
{
    int                  waited;
    char                *text;
    cd_db_pool_t         system, tenant, other;
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    /* one acquire that woke up three times before it got a connection */
    waited = 0;
    waited = cd_metrics_db_wait(&system, waited);
    waited = cd_metrics_db_wait(&system, waited);
    waited = cd_metrics_db_wait(&system, waited);
    assert_int_equal(waited, 1);

    /* one that gave up */
    waited = cd_metrics_db_wait(&tenant, 0);
    cd_metrics_db_timeout(&tenant);
    (void) cd_metrics_db_wait(&other, 0);

    st.pools[0] = (cd_metrics_pool_state_t) { "system", &system, 8, 3 };
    st.pools[1] = (cd_metrics_pool_state_t) { "tenant", &tenant, 8, 8 };
    st.npools = 2;

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_db_pool_waits_total"
                       "{pool=\"system\"}") == 1);
    assert_true(sample(text, "spendpol_controld_db_pool_waits_total"
                       "{pool=\"tenant\"}") == 1);
    assert_true(sample(text, "spendpol_controld_db_pool_wait_timeouts_total"
                       "{pool=\"system\"}") == 0);
    assert_true(sample(text, "spendpol_controld_db_pool_wait_timeouts_total"
                       "{pool=\"tenant\"}") == 1);
    assert_true(sample(text, "spendpol_controld_db_pool_connections"
                       "{pool=\"tenant\"}") == 8);
    assert_true(sample(text, "spendpol_controld_db_pool_connections_in_use"
                       "{pool=\"system\"}") == 3);

    free(text);
}


static void
test_metrics_webhook_deliveries_by_result(void **state)
{
    char                *text;
    cd_metrics_state_t   st;

    (void) state;
    cd_metrics_reset(&cd_metrics);
    state_empty(&st);

    cd_metrics_webhook_delivery(CD_METRICS_RETRYING);
    cd_metrics_webhook_delivery(CD_METRICS_RETRYING);
    cd_metrics_webhook_delivery(CD_METRICS_GAVE_UP);

    text = render(&st);

    assert_true(sample(text, "spendpol_controld_webhook_deliveries_total"
                       "{result=\"delivered\"}") == 0);
    assert_true(sample(text, "spendpol_controld_webhook_deliveries_total"
                       "{result=\"retrying\"}") == 2);
    assert_true(sample(text, "spendpol_controld_webhook_deliveries_total"
                       "{result=\"failed\"}") == 1);

    free(text);
}


static void
test_metrics_token_setting_refuses_weak_or_key_values(void **state)
{
    (void) state;

    assert_true(cd_config_metrics_token_valid(
        "3f1c9a7e5b2d4f608a1c3e5f7b9d0a2c"));
    assert_false(cd_config_metrics_token_valid("short"));
    assert_false(cd_config_metrics_token_valid(
        "with a space in the middle of it"));
    assert_false(cd_config_metrics_token_valid(
        "sp_key_0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(cd_config_metrics_token_valid(
        "tab\there-and-more-characters"));
}


static const char *
fake_getenv(const char *name, void *data)
{
    const char  **env;

    for (env = data; env[0] != NULL; env += 2) {
        if (strcmp(env[0], name) == 0) {
            return env[1];
        }
    }

    return NULL;
}


static void
test_metrics_token_loaded_or_refused_without_echo(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *good[] = { "DATABASE_URL", "x", "SPENDPOL_METRICS_TOKEN",
                             "0123456789abcdef0123456789abcdef", NULL };
    const char   *bad[] = { "DATABASE_URL", "x", "SPENDPOL_METRICS_TOKEN",
                            "SECRET VALUE with spaces", NULL };
    const char   *none[] = { "DATABASE_URL", "x", NULL };

    (void) state;

    assert_int_equal(cd_config_load(&cf, fake_getenv, good, err,
                                    sizeof(err)), CD_OK);
    assert_string_equal(cf.metrics_token,
                        "0123456789abcdef0123456789abcdef");
    cd_config_free(&cf);

    assert_int_equal(cd_config_load(&cf, fake_getenv, none, err,
                                    sizeof(err)), CD_OK);
    assert_null(cf.metrics_token);
    cd_config_free(&cf);

    assert_int_equal(cd_config_load(&cf, fake_getenv, bad, err,
                                    sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "SPENDPOL_METRICS_TOKEN"));
    assert_null(strstr(err, "SECRET"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_metrics_route_table_fits_the_fixed_label_set),
        cmocka_unit_test(
            test_metrics_requests_counted_by_route_pattern_and_status),
        cmocka_unit_test(
            test_metrics_histogram_buckets_are_cumulative_and_end_at_count),
        cmocka_unit_test(test_metrics_counters_are_exact_across_threads),
        cmocka_unit_test(test_metrics_ingest_counts_new_rows_not_duplicates),
        cmocka_unit_test(test_metrics_unknown_gauges_have_no_sample),
        cmocka_unit_test(test_metrics_snapshot_publishes_by_result),
        cmocka_unit_test(test_metrics_pool_waits_counted_once_per_acquire),
        cmocka_unit_test(test_metrics_webhook_deliveries_by_result),
        cmocka_unit_test(
            test_metrics_token_setting_refuses_weak_or_key_values),
        cmocka_unit_test(test_metrics_token_loaded_or_refused_without_echo),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
