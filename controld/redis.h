/*
 * Redis URL and connections (redis.c). Included by controld.h.
 */

#ifndef CD_REDIS_H
#define CD_REDIS_H


typedef struct {
    pthread_mutex_t   mutex;
    char             *host;
    int               port;
    int               db;
    char             *user;
    char             *password;
    void             *ctx;          /* redisContext, NULL when down */
    int               enabled;
} cd_redis_t;

/* parses redis://[[user]:password@]host[:port][/db] */
int cd_redis_parse_url(const char *url, char **host, int *port, int *db,
    char **user, char **password) CD_CHECK;
int cd_redis_init(cd_redis_t *rd, const char *url) CD_CHECK;
void cd_redis_close(cd_redis_t *rd);

/* the host as a numeric address, resolved now */
int cd_redis_resolve(cd_redis_t *rd, char *out, size_t len) CD_CHECK;

/* "ok", "down" or "disabled" */
const char *cd_redis_health(cd_redis_t *rd);

/* a new connection (redisContext *) with timeout_ms, or NULL */
void *cd_redis_connect(cd_redis_t *rd, unsigned timeout_ms);


#endif /* CD_REDIS_H */
