/*
 * The policy snapshot publisher (snapshot.c). Included by controld.h.
 */

#ifndef CD_SNAPSHOT_H
#define CD_SNAPSHOT_H


typedef struct {
    cd_thread_t       thread;            /* the publisher */
    int               inited;            /* mutex exists */
    pthread_mutex_t   mutex;             /* of the three below */
    int64_t           state_version;     /* of the last publish, -1 none */
    uint64_t          generation;        /* last published */
    int64_t           next_change_us;    /* a stored price takes effect
                                            then (database clock), 0 none */
} cd_snapshot_t;

int cd_snapshot_init(cd_app_t *app) CD_CHECK;
void cd_snapshot_destroy(cd_app_t *app);

/* builds and publishes once, synchronously */
int cd_snapshot_publish_now(cd_app_t *app) CD_CHECK;
int cd_snapshot_start(cd_app_t *app) CD_CHECK;
void cd_snapshot_signal(cd_app_t *app);
void cd_snapshot_stop(cd_app_t *app);
uint64_t cd_snapshot_generation(cd_app_t *app);


#endif /* CD_SNAPSHOT_H */
