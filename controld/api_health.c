/*
 * GET /healthz. Without a key it says only whether controld is healthy
 * (200 {"status":"ok"} or 503 {"status":"unhealthy"}), so a load balancer
 * can probe it and nobody else learns the daemon's state. With an admin
 * key (a wrong one is 401/403 as on every route) it adds the details:
 * PostgreSQL, Redis, the published snapshot generation, the committed
 * journal offset and the journal lines ingest skipped since it started.
 */

#include <microhttpd.h>

#include "controld.h"
#include "auth.h"
#include "api.h"


void
cd_api_healthz(cd_request_t *r)
{
    int            db_ok, attempt;
    int64_t        malformed, refused;
    PGresult      *res;
    cd_db_conn_t  *c;

    db_ok = 0;

    /* a second try on a fresh connection after a server restart */
    for (attempt = 0; attempt < 2 && !db_ok; attempt++) {
        c = cd_db_acquire(&r->app->db, 2000);
        if (c == NULL) {
            break;
        }

        res = cd_db_exec(c, "SELECT 1", 0, NULL);
        db_ok = res != NULL;
        PQclear(res);
        cd_db_release(&r->app->db, c);
    }

    if (MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION)
        == NULL)
    {
        cd_respond(r, db_ok ? 200 : 503,
                   json_pack("{s:s}", "status", db_ok ? "ok" : "unhealthy"));
        return;
    }

    if (cd_authenticate(r) != CD_OK) {
        return;
    }

    cd_ingest_counts(r->app, &malformed, &refused);

    cd_respond(r, db_ok ? 200 : 503,
               json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}",
                         "status", db_ok ? "ok" : "unhealthy",
                         "database", db_ok ? "ok" : "down",
                         "redis", cd_redis_health(&r->app->redis),
                         "snapshot_generation",
                         (json_int_t) cd_snapshot_generation(r->app),
                         "journal_offset",
                         (json_int_t) cd_ingest_offset(r->app),
                         "journal_malformed_lines", (json_int_t) malformed,
                         "journal_refused_lines", (json_int_t) refused));
}
