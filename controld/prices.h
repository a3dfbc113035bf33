/*
 * List prices and the price in effect (prices.c). Needs controld.h first.
 */

#ifndef CD_PRICES_H
#define CD_PRICES_H


/*
 * The tail of an INSERT INTO model_prices: a price at the same instant
 * replaces the one stored (both the catalogue and PUT /pricing write so)
 */
#define CD_PRICE_UPSERT                                                      \
    " ON CONFLICT (org_id, provider, model,"                                 \
    " effective_from) DO UPDATE SET"                                         \
    " input_nano = EXCLUDED.input_nano,"                                     \
    " output_nano = EXCLUDED.output_nano,"                                   \
    " cached_input_nano = EXCLUDED.cached_input_nano,"                       \
    " cache_write_nano = EXCLUDED.cache_write_nano,"                         \
    " max_output_tokens = EXCLUDED.max_output_tokens"

typedef struct {
    char     provider[16];
    char     model[128];
    int64_t  input;                 /* nano-USD per 1M tokens */
    int64_t  output;
    int64_t  cached_input;          /* -1: billed as input */
    int64_t  cache_write;           /* -1: billed as input */
    int64_t  max_output_tokens;     /* -1: unknown */
} cd_price_row_t;

/* 1 for a row, 0 for a comment or blank line, -1 with a reason in err */
int cd_price_parse_line(char *line, cd_price_row_t *row, char *err,
    size_t errlen);

/*
 * Loads the list-price data file into model_prices, all or nothing. A
 * missing or malformed file is logged and leaves the prices as they are;
 * CD_ERROR only when PostgreSQL fails.
 */
int cd_prices_load(cd_db_pool_t *pool, const char *path) CD_CHECK;

/*
 * Rows of model_prices sorted by (organisation, provider, model,
 * effective_from DESC), with the columns named in cols: the end of the
 * group starting at first (same organisation, provider and model) and
 * in *row the group's price in effect by sp_price_effective(), -1 when
 * none. CD_ERROR when out of memory.
 */
typedef struct {
    int  org;                       /* NULL for a list price */
    int  provider;
    int  model;
    int  in_effect;                 /* boolean: effective_from <= now() */
} cd_price_cols_t;

int cd_prices_in_effect(PGresult *res, int first, const cd_price_cols_t *cols,
    int *end, int *row) CD_CHECK;


#endif /* CD_PRICES_H */
