/*
 * Background threads: start, wake, sleep, stop (thread.c). Included by
 * controld.h.
 */

#ifndef CD_THREAD_H
#define CD_THREAD_H


/*
 * A background thread and its one way to stop: cd_thread_stop sets the
 * flag, wakes cd_thread_sleep at once and joins.
 */
typedef struct {
    const char       *name;              /* log subject */
    pthread_t         thread;
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    int               stop;              /* atomic; set under mutex */
    int               started;
} cd_thread_t;

int cd_thread_start(cd_thread_t *t, const char *name, void *(*fn)(void *),
    void *arg) CD_CHECK;
void cd_thread_stop(cd_thread_t *t);
int cd_thread_stopping(cd_thread_t *t);

/* sleeps ms, waking early when asked to stop */
void cd_thread_sleep(cd_thread_t *t, unsigned ms);


#endif /* CD_THREAD_H */
