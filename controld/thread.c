/*
 * Background threads with one way to start, wake and stop them: a stop
 * flag and a "signalled" flag under a mutex, and a condition that
 * cd_thread_wake and cd_thread_stop signal so that a thread asleep in
 * cd_thread_sleep wakes at once instead of at its next poll.
 */

#include <errno.h>
#include <string.h>
#include <time.h>

#include "controld.h"


int
cd_thread_init(cd_thread_t *t, const char *name)
{
    t->name = name;
    t->stop = 0;
    t->signalled = 0;
    t->ready = 0;
    t->started = 0;

    if (pthread_mutex_init(&t->mutex, NULL) != 0) {
        cd_log_error(name, "cannot start: no mutex");
        return CD_ERROR;
    }

    if (pthread_cond_init(&t->cond, NULL) != 0) {
        pthread_mutex_destroy(&t->mutex);
        cd_log_error(name, "cannot start: no condition variable");
        return CD_ERROR;
    }

    t->ready = 1;

    return CD_OK;
}


int
cd_thread_start(cd_thread_t *t, const char *name, void *(*fn)(void *),
    void *arg)
{
    int  err;

    if (!t->ready && cd_thread_init(t, name) != CD_OK) {
        return CD_ERROR;
    }

    /*
     * set before the thread runs: its first cd_thread_sleep must wait on
     * the condition, not take the plain sleep of a thread never started
     */
    t->started = 1;

    err = pthread_create(&t->thread, NULL, fn, arg);
    if (err != 0) {
        t->started = 0;
        cd_log_error(name, "cannot start: %s", strerror(err));
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_thread_stop(cd_thread_t *t)
{
    if (!t->ready) {
        return;
    }

    if (t->started) {
        pthread_mutex_lock(&t->mutex);
        __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->mutex);

        pthread_join(t->thread, NULL);
        t->started = 0;
    }

    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mutex);
    t->ready = 0;
}


int
cd_thread_stopping(cd_thread_t *t)
{
    return __atomic_load_n(&t->stop, __ATOMIC_ACQUIRE);
}


void
cd_thread_wake(cd_thread_t *t)
{
    if (!t->ready) {
        return;
    }

    pthread_mutex_lock(&t->mutex);
    t->signalled = 1;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mutex);
}


int
cd_thread_sleep(cd_thread_t *t, unsigned ms)
{
    int              signalled;
    struct timespec  deadline;

    if (!t->started) {
        /* called outside the thread (unit tests): a plain sleep */
        deadline.tv_sec = ms / 1000;
        deadline.tv_nsec = (long) (ms % 1000) * 1000000;
        nanosleep(&deadline, NULL);
        return 0;
    }

    cd_deadline_after(&deadline, ms);

    pthread_mutex_lock(&t->mutex);

    while (!t->stop && !t->signalled) {
        if (pthread_cond_timedwait(&t->cond, &t->mutex, &deadline)
            == ETIMEDOUT)
        {
            break;
        }
    }

    signalled = t->signalled;
    t->signalled = 0;

    pthread_mutex_unlock(&t->mutex);

    return signalled;
}
