/*
 * GET /metrics: controld's metrics (metrics.c) in the Prometheus text
 * format.
 *
 * Who may read them: the bearer SPENDPOL_METRICS_TOKEN, or an operator key.
 * The token is what a scraper should hold: Prometheus reads it from a
 * credentials file, and it opens this route and nothing else, where an
 * admin key in the scraper's configuration could create keys and read
 * every audit row. The numbers are the whole daemon's, every
 * organisation's traffic together, so the only key that reads them is
 * one with the operator scope: a tenant learns nothing of the others.
 */

#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "auth.h"
#include "api.h"
#include "metrics.h"


/*
 * a key with the operator scope (docs/organisations.md): the numbers are
 * every organisation's, so a tenant's admin key may not read them
 */
static int
cd_metrics_authenticate_key(cd_request_t *r)
{
    return cd_authenticate_scope(r, CD_ROUTE_OPERATOR);
}


/* CD_OK when the bearer is SPENDPOL_METRICS_TOKEN, else the admin key's */
static int
cd_metrics_authenticate(cd_request_t *r)
{
    size_t       len;
    const char  *header, *token, *value;

    token = r->app->config.metrics_token;
    header = MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_AUTHORIZATION);

    if (token == NULL || header == NULL
        || strncasecmp(header, "Bearer ", 7) != 0)
    {
        return cd_metrics_authenticate_key(r);
    }

    value = header + 7;

    while (*value == ' ') {
        value++;
    }

    len = strlen(value);

    while (len > 0 && value[len - 1] == ' ') {
        len--;
    }

    if (len == strlen(token) && CRYPTO_memcmp(value, token, len) == 0) {
        return CD_OK;
    }

    if (sp_key_is_wellformed(value, len)) {
        return cd_metrics_authenticate_key(r);
    }

    /* never echo what was sent: it may be a mistyped secret */
    cd_respond_error(r, 401, "authentication_error", "invalid_api_key", NULL,
                     "the bearer is neither SPENDPOL_METRICS_TOKEN nor an "
                     "admin key");

    return CD_ERROR;
}


void
cd_api_metrics(cd_request_t *r)
{
    char                *text;
    size_t               len;
    cd_metrics_state_t   st;

    if (cd_metrics_authenticate(r) != CD_OK) {
        return;
    }

    cd_metrics_gather(r->app, &st);

    text = cd_metrics_render(&cd_metrics, &st, &len);
    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory rendering the metrics");
        return;
    }

    r->status = 200;
    r->text = text;
    r->content_type = CD_METRICS_CONTENT_TYPE;
}
