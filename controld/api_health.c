/*
 * GET /healthz, without authentication: PostgreSQL, Redis, the published
 * snapshot generation and the committed journal offset.
 */

#include "controld.h"


void
cd_api_healthz(cd_request_t *r)
{
    int            db_ok, attempt;
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

    cd_respond(r, db_ok ? 200 : 503,
               json_pack("{s:s, s:s, s:s, s:I, s:I}",
                         "status", db_ok ? "ok" : "degraded",
                         "database", db_ok ? "ok" : "down",
                         "redis", cd_redis_health(&r->app->redis),
                         "snapshot_generation",
                         (json_int_t) cd_snapshot_generation(r->app),
                         "journal_offset",
                         (json_int_t) cd_ingest_offset(r->app)));
}
