/*
 * List prices from the data file (migrations/data/prices.tsv): loaded at
 * start, after the SQL migrations, into model_prices with org_id NULL,
 * replacing earlier list prices of the same provider and model, each
 * effective from midnight UTC of the file's date. An organisation's own
 * prices are never touched. The whole file applies in one transaction or
 * not at all; an unchanged file (same checksum) is skipped.
 *
 * Format: '#' comments, then tab-separated lines
 *   provider  model  input  output  cached_input  cache_write  max_output
 * with prices in USD per 1M tokens; blank cached_input / cache_write mean
 * "billed as input", blank max_output means unknown. A comment line
 * "#   <provider>  <url> ..." names the provider's pricing page, and
 * "Compiled YYYY-MM-DD" dates the file.
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "prices.h"
#include "sp_price.h"
#include "sp_provider.h"


#define CD_PRICES_SUBJECT   "prices"
#define CD_PRICES_FILE_MAX  (1024 * 1024)
#define CD_PRICES_ROWS_MAX  4096


/* 0 .. SP_PROVIDER_COUNT - 1 for a provider of the catalogue, else -1 */
static int
cd_price_provider_index(const char *name, size_t len)
{
    return (int) sp_provider_from_name(name, len) - SP_PROVIDER_OPENAI;
}


/* a price field: blank is -1 when optional */
static int
cd_price_money(const char *s, int optional, int64_t *nano)
{
    if (*s == '\0') {
        if (!optional) {
            return CD_ERROR;
        }

        *nano = -1;
        return CD_OK;
    }

    if (sp_money_parse(s, strlen(s), nano) != SP_OK || *nano < 0) {
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_price_parse_line(char *line, cd_price_row_t *row, char *err,
    size_t errlen)
{
    char        *fields[8], *p, *end;
    size_t       n, len;
    long long    max_output;

    len = strlen(line);

    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        line[--len] = '\0';
    }

    if (len == 0 || line[0] == '#') {
        return 0;
    }

    n = 0;
    p = line;

    for ( ;; ) {
        if (n == sizeof(fields) / sizeof(fields[0])) {
            snprintf(err, errlen, "more than 7 tab-separated fields");
            return -1;
        }

        fields[n++] = p;
        p = strchr(p, '\t');

        if (p == NULL) {
            break;
        }

        *p++ = '\0';
    }

    if (n != 7) {
        snprintf(err, errlen, "expected 7 tab-separated fields, found %zu",
                 n);
        return -1;
    }

    memset(row, 0, sizeof(*row));

    if (cd_price_provider_index(fields[0], strlen(fields[0])) < 0) {
        snprintf(err, errlen, "unknown provider \"%.32s\"", fields[0]);
        return -1;
    }

    if (fields[1][0] == '\0' || strlen(fields[1]) >= sizeof(row->model)
        || cd_validate_text(fields[1], 1, sizeof(row->model)) != NULL)
    {
        snprintf(err, errlen, "the model name must be 1 to %zu printable "
                 "characters", sizeof(row->model) - 1);
        return -1;
    }

    /*
     * "*" is an organisation's fallback price: a list "*" would price
     * every unknown model for everyone. Nor is "*" a wildcard elsewhere.
     */
    if (strchr(fields[1], '*') != NULL) {
        snprintf(err, errlen, "the model name \"%.32s\" holds '*': a list "
                 "price is for one exact model; a fallback price is an "
                 "organization's own (PUT /pricing/{provider}/*)",
                 fields[1]);
        return -1;
    }

    strcpy(row->provider, fields[0]);
    strcpy(row->model, fields[1]);

    if (cd_price_money(fields[2], 0, &row->input) != CD_OK
        || cd_price_money(fields[3], 0, &row->output) != CD_OK
        || cd_price_money(fields[4], 1, &row->cached_input) != CD_OK
        || cd_price_money(fields[5], 1, &row->cache_write) != CD_OK)
    {
        snprintf(err, errlen, "prices must be non-negative decimal USD per "
                 "1M tokens with at most 9 decimals (cached_input and "
                 "cache_write may be blank)");
        return -1;
    }

    row->max_output_tokens = -1;

    if (fields[6][0] != '\0') {
        errno = 0;
        max_output = strtoll(fields[6], &end, 10);

        if (errno != 0 || *end != '\0' || max_output < 0
            || !isdigit((unsigned char) fields[6][0]))
        {
            snprintf(err, errlen, "max_output_tokens must be a non-negative "
                     "integer or blank");
            return -1;
        }

        row->max_output_tokens = max_output;
    }

    return 1;
}


/* "#   openai     https://... (...)" -> sources[openai] */
static void
cd_price_comment(const char *line, char sources[][256], char *date,
    size_t datelen)
{
    int          i;
    size_t       len;
    const char  *p, *word, *compiled;

    compiled = strstr(line, "Compiled ");

    if (compiled != NULL && strlen(compiled) >= 19
        && isdigit((unsigned char) compiled[9]) && compiled[13] == '-'
        && compiled[16] == '-')
    {
        snprintf(date, datelen, "%.10s", compiled + 9);
    }

    p = line + 1;

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    word = p;
    len = strcspn(word, " \t");
    i = cd_price_provider_index(word, len);

    if (i < 0) {
        return;
    }

    p = word + len;

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    if (strncmp(p, "https://", 8) == 0 || strncmp(p, "http://", 7) == 0) {
        snprintf(sources[i], 256, "%.*s", (int) strcspn(p, " \t\r\n"), p);
    }
}


static char *
cd_prices_read(const char *path, size_t *len)
{
    FILE  *f;
    char  *data;

    f = fopen(path, "re");
    if (f == NULL) {
        return NULL;
    }

    data = malloc(CD_PRICES_FILE_MAX + 1);
    if (data == NULL) {
        fclose(f);
        return NULL;
    }

    *len = fread(data, 1, CD_PRICES_FILE_MAX + 1, f);

    if (ferror(f) || *len > CD_PRICES_FILE_MAX) {
        fclose(f);
        free(data);
        errno = EFBIG;
        return NULL;
    }

    fclose(f);
    data[*len] = '\0';

    return data;
}


static int
cd_prices_apply(cd_db_pool_t *pool, cd_price_row_t *rows, size_t n,
    char sources[][256], const char *date, const char *checksum)
{
    char           values[5][24], count[24];
    size_t         i, k;
    int64_t        nums[5];
    PGresult      *res;
    const char    *params[10], *delete_params[3];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(pool, 10000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    /* several controlds may start at once */
    res = cd_db_exec(c, "SELECT pg_advisory_xact_lock(7310595153598492782)",
                     0, NULL);
    if (res == NULL) {
        goto failed;
    }

    PQclear(res);

    params[0] = checksum;
    res = cd_db_exec(c, "SELECT 1 FROM price_data_loads"
                        " WHERE name = 'prices.tsv' AND checksum = $1",
                     1, params);
    if (res == NULL) {
        goto failed;
    }

    if (PQntuples(res) > 0) {
        PQclear(res);
        cd_db_rollback(c);
        cd_db_release(pool, c);
        cd_log_info(CD_PRICES_SUBJECT, "list prices are current (%zu rows)",
                    n);
        return CD_OK;
    }

    PQclear(res);

    for (i = 0; i < n; i++) {
        nums[0] = rows[i].input;
        nums[1] = rows[i].output;
        nums[2] = rows[i].cached_input;
        nums[3] = rows[i].cache_write;
        nums[4] = rows[i].max_output_tokens;

        params[0] = rows[i].provider;
        params[1] = rows[i].model;

        for (k = 0; k < 5; k++) {
            snprintf(values[k], sizeof(values[k]), "%lld",
                     (long long) nums[k]);
            params[2 + k] = nums[k] < 0 ? NULL : values[k];
        }

        k = (size_t) cd_price_provider_index(rows[i].provider,
                                             strlen(rows[i].provider));
        params[7] = sources[k][0] ? sources[k] : NULL;
        params[8] = date[0] ? date : NULL;
        delete_params[0] = params[0];
        delete_params[1] = params[1];
        delete_params[2] = params[8];

        if (cd_db_command(c, "DELETE FROM model_prices WHERE org_id IS NULL"
                             " AND provider = $1 AND model = $2"
                             " AND effective_from <>"
                             " (coalesce($3::date, current_date)::timestamp"
                             " AT TIME ZONE 'UTC')",
                          3, delete_params) != CD_OK)
        {
            goto failed;
        }

        if (cd_db_command(c, "INSERT INTO model_prices (org_id, provider,"
                             " model, input_nano, output_nano,"
                             " cached_input_nano, cache_write_nano,"
                             " max_output_tokens, source_url, effective_from)"
                             " VALUES (NULL, $1, $2, $3, $4, $5, $6, $7, $8,"
                             " coalesce($9::date, current_date)::timestamp"
                             " AT TIME ZONE 'UTC')"
                             CD_PRICE_UPSERT ","
                             " source_url = EXCLUDED.source_url",
                          9, params) != CD_OK)
        {
            goto failed;
        }
    }

    snprintf(count, sizeof(count), "%zu", n);
    params[0] = checksum;
    params[1] = count;

    if (cd_db_command(c, "INSERT INTO price_data_loads (name, checksum, rows)"
                         " VALUES ('prices.tsv', $1, $2) ON CONFLICT (name)"
                         " DO UPDATE SET checksum = EXCLUDED.checksum,"
                         " rows = EXCLUDED.rows,"
                         " loaded_at = clock_timestamp()", 2, params) != CD_OK)
    {
        goto failed;
    }

    if (cd_db_commit(c) != CD_OK) {
        goto failed;
    }

    cd_db_release(pool, c);
    cd_log_info(CD_PRICES_SUBJECT, "loaded %zu list prices dated %s", n,
                date[0] ? date : "today");

    return CD_OK;

failed:

    cd_db_rollback(c);
    cd_db_release(pool, c);

    return CD_ERROR;
}


int
cd_prices_load(cd_db_pool_t *pool, const char *path)
{
    int              rc;
    char            *data, *line, *next, err[256], date[16], checksum[24];
    char             sources[SP_PROVIDER_COUNT][256];
    size_t           len, n, lineno;
    cd_price_row_t  *rows;

    data = cd_prices_read(path, &len);

    if (data == NULL) {
        /* the SQL migrations hold OpenAI's prices: not fatal */
        cd_log_warn(CD_PRICES_SUBJECT, "cannot read %s: %s; list prices "
                    "stay as they are", path, strerror(errno));
        return CD_OK;
    }

    snprintf(checksum, sizeof(checksum), "%016llx",
             (unsigned long long) sp_hash64(data, len, 0));

    rows = calloc(CD_PRICES_ROWS_MAX, sizeof(cd_price_row_t));
    if (rows == NULL) {
        free(data);
        return CD_ERROR;
    }

    memset(sources, 0, sizeof(sources));
    date[0] = '\0';
    n = 0;
    lineno = 0;
    rc = CD_ERROR;

    for (line = data; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');

        if (next != NULL) {
            *next++ = '\0';
        }

        lineno++;

        if (line[0] == '#') {
            cd_price_comment(line, sources, date, sizeof(date));
            continue;
        }

        if (n == CD_PRICES_ROWS_MAX) {
            cd_log_error(CD_PRICES_SUBJECT, "%s has more than %d rows; not "
                         "loaded", path, CD_PRICES_ROWS_MAX);
            goto done;
        }

        switch (cd_price_parse_line(line, &rows[n], err, sizeof(err))) {
        case 1:
            n++;
            break;
        case 0:
            break;
        default:
            /* all or nothing: a typo must not half-change the prices */
            cd_log_error(CD_PRICES_SUBJECT, "%s line %zu: %s; the file is "
                         "not loaded", path, lineno, err);
            rc = CD_OK;
            goto done;
        }
    }

    rc = cd_prices_apply(pool, rows, n, sources, date, checksum);

done:

    free(rows);
    free(data);

    return rc;
}


static int
cd_prices_same_key(PGresult *res, int a, int b, const cd_price_cols_t *cols)
{
    return PQgetisnull(res, a, cols->org) == PQgetisnull(res, b, cols->org)
           && strcmp(PQgetvalue(res, a, cols->org),
                     PQgetvalue(res, b, cols->org)) == 0
           && strcmp(PQgetvalue(res, a, cols->provider),
                     PQgetvalue(res, b, cols->provider)) == 0
           && strcmp(PQgetvalue(res, a, cols->model),
                     PQgetvalue(res, b, cols->model)) == 0;
}


int
cd_prices_in_effect(PGresult *res, int first, const cd_price_cols_t *cols,
    int *end, int *row)
{
    int             i, n;
    long            pick;
    unsigned char  *in_effect;

    n = PQntuples(res);

    for (i = first + 1; i < n && cd_prices_same_key(res, first, i, cols);
         i++)
    {
        /* the group's end */
    }

    *end = i;

    in_effect = malloc((size_t) (i - first));
    if (in_effect == NULL) {
        return CD_ERROR;
    }

    for (i = first; i < *end; i++) {
        in_effect[i - first] = (unsigned char) cd_db_bool(res, i,
                                                          cols->in_effect);
    }

    pick = sp_price_effective(in_effect, (size_t) (*end - first),
                              PQgetisnull(res, first, cols->org));
    free(in_effect);

    *row = pick < 0 ? -1 : first + (int) pick;

    return CD_OK;
}
