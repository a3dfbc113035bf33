/*
 * Background threads: start, wake, sleep, stop (thread.c). Included by
 * controld.h.
 */

#ifndef CD_THREAD_H
#define CD_THREAD_H


/*
 * A background thread, the one way every controld thread starts, is woken
 * and stops: cd_thread_wake asks it to run before its sleep is over,
 * cd_thread_stop sets the stop flag, wakes its sleep at once and joins.
 * cd_thread_init may come before the start, so that a wake that comes
 * before the thread runs is kept for it.
 */
typedef struct {
    const char       *name;              /* log subject */
    pthread_t         thread;
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    int               stop;              /* atomic; set under mutex */
    int               signalled;         /* under mutex: woken */
    int               ready;             /* mutex and cond exist */
    int               started;
} cd_thread_t;

/* the mutex and condition, flags cleared; cd_thread_start does it too */
int cd_thread_init(cd_thread_t *t, const char *name) CD_CHECK;
int cd_thread_start(cd_thread_t *t, const char *name, void *(*fn)(void *),
    void *arg) CD_CHECK;

/* joins, then frees the mutex and condition; nothing when never inited */
void cd_thread_stop(cd_thread_t *t);
int cd_thread_stopping(cd_thread_t *t);

/* asks the thread to run now: its cd_thread_sleep returns 1 */
void cd_thread_wake(cd_thread_t *t);

/*
 * Sleeps ms, returning early when asked to stop or woken: 1 when woken
 * (the wake is consumed; a wake before the call returns at once), else 0
 */
int cd_thread_sleep(cd_thread_t *t, unsigned ms);

#endif /* CD_THREAD_H */
