/*
 * controld: the Spendpol control daemon.
 *
 * One file per subsystem and one per REST resource (api_*.c). This
 * umbrella header holds the core: return codes, attributes, the clock and
 * cd_app_t, the daemon's one state, with the headers of the subsystems
 * cd_app_t holds. Every .c includes it first, then the headers of the
 * other subsystems it uses (crypto.h, migrate.h, prices.h, webhook.h,
 * outbound.h, auth.h, api.h). Every exported name starts with cd_
 * (functions, types) or CD_ (macros). main.c holds main() only, so the
 * rest links into unit tests.
 */

#ifndef CONTROLD_H
#define CONTROLD_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "spendpol.h"
#include "sp_id.h"
#include "sp_provider.h"
#include "sp_journal.h"


#define CD_OK       0
#define CD_ERROR   -1

#define CD_STRINGIFY_(x)   #x
#define CD_STRINGIFY(x)    CD_STRINGIFY_(x)     /* a macro's value, "200" */

#define CD_CHECK    __attribute__((warn_unused_result))
#define CD_PRINTF(fmt, args)  __attribute__((format(printf, fmt, args)))

#define CD_DEFAULT_ORG        "org_default"
#define CD_ID_MAX             64
#define CD_NAME_MAX           200      /* characters of name and tags */
#define CD_MASTER_KEY_LEN     32       /* AES-256 */


/* milliseconds of a clock: CLOCK_REALTIME (unix) or CLOCK_MONOTONIC */
static inline int64_t
cd_clock_ms(clockid_t clock)
{
    struct timespec  ts;

    clock_gettime(clock, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


typedef struct cd_app_s      cd_app_t;


#include "log.h"
#include "util.h"
#include "config.h"
#include "db.h"
#include "redis.h"
#include "thread.h"
#include "rates.h"
#include "snapshot.h"
#include "spend.h"
#include "lease.h"
#include "http.h"
#include "alerts.h"
#include "ingest.h"


/* the daemon */
struct cd_app_s {
    cd_config_t      config;
    uint8_t          master_key[CD_MASTER_KEY_LEN];
    cd_db_pool_t     db;           /* spendpol_system transactions */
    cd_db_pool_t     tenant_db;    /* the admin API's spendpol_app ones */
    cd_redis_t       redis;
    cd_snapshot_t    snapshot;
    cd_ingest_t      ingest;
    cd_spend_t       spend;
    cd_lease_t       lease;
    cd_rates_limited_t  rates;
    cd_http_t        http;
    cd_alert_jobs_t  alert_jobs;
};


#endif /* CONTROLD_H */

