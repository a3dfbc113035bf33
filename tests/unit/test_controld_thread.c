/* controld background threads: stopping or waking wakes a sleeper at once */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "controld.h"


static cd_thread_t  sleeper;
static int          laps;
static cd_thread_t  waker;
static int          wakes;


static int64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* sleeps a minute a lap until asked to stop */
static void *
sleeper_run(void *arg)
{
    (void) arg;

    while (!cd_thread_stopping(&sleeper)) {
        __atomic_add_fetch(&laps, 1, __ATOMIC_RELEASE);
        cd_thread_sleep(&sleeper, 60000);
    }

    return NULL;
}


static void
test_thread_stop_wakes_a_minute_long_sleep(void **state)
{
    int64_t  start;

    (void) state;

    assert_int_equal(cd_thread_start(&sleeper, "test", sleeper_run, NULL),
                     CD_OK);

    /* the thread is inside its first sleep */
    while (__atomic_load_n(&laps, __ATOMIC_ACQUIRE) == 0) {
        struct timespec  ts = { 0, 1000000 };

        nanosleep(&ts, NULL);
    }

    start = now_ms();
    cd_thread_stop(&sleeper);

    assert_true(now_ms() - start < 2000);
    assert_int_equal(laps, 1);
    assert_int_equal(sleeper.started, 0);

    /* a second stop is harmless */
    cd_thread_stop(&sleeper);
}


/* counts the sleeps a wake ended */
static void *
waker_run(void *arg)
{
    (void) arg;

    while (!cd_thread_stopping(&waker)) {
        if (cd_thread_sleep(&waker, 60000)) {
            __atomic_add_fetch(&wakes, 1, __ATOMIC_RELEASE);
        }
    }

    return NULL;
}


static void
wait_for_wakes(int n)
{
    int64_t  start;

    start = now_ms();

    while (__atomic_load_n(&wakes, __ATOMIC_ACQUIRE) < n
           && now_ms() - start < 2000)
    {
        struct timespec  ts = { 0, 1000000 };

        nanosleep(&ts, NULL);
    }

    assert_int_equal(__atomic_load_n(&wakes, __ATOMIC_ACQUIRE), n);
}


static void
test_thread_wake_ends_a_sleep_and_is_kept_from_before_the_start(
    void **state)
{
    (void) state;

    assert_int_equal(cd_thread_init(&waker, "test"), CD_OK);
    cd_thread_wake(&waker);

    assert_int_equal(cd_thread_start(&waker, "test", waker_run, NULL),
                     CD_OK);
    wait_for_wakes(1);

    cd_thread_wake(&waker);
    wait_for_wakes(2);

    cd_thread_stop(&waker);
    assert_int_equal(wakes, 2);

    /* stopped: a wake is a no-op */
    cd_thread_wake(&waker);
}


static void
test_thread_sleep_lasts_its_time_when_not_stopped(void **state)
{
    int64_t      start, took;
    cd_thread_t  t;

    (void) state;

    /* not started: a plain sleep (how unit tests call ingest code) */
    memset(&t, 0, sizeof(t));
    start = now_ms();
    cd_thread_sleep(&t, 120);
    took = now_ms() - start;

    assert_true(took >= 110);
    assert_true(took < 2000);
}


static void
test_deadline_after_carries_nanoseconds_into_seconds(void **state)
{
    struct timespec  before, deadline;

    (void) state;

    clock_gettime(CLOCK_REALTIME, &before);
    cd_deadline_after(&deadline, 2999);

    assert_true(deadline.tv_nsec >= 0);
    assert_true(deadline.tv_nsec < 1000000000);
    assert_true(deadline.tv_sec >= before.tv_sec + 2);
    assert_true(deadline.tv_sec <= before.tv_sec + 4);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_thread_stop_wakes_a_minute_long_sleep),
        cmocka_unit_test(
            test_thread_wake_ends_a_sleep_and_is_kept_from_before_the_start),
        cmocka_unit_test(test_thread_sleep_lasts_its_time_when_not_stopped),
        cmocka_unit_test(test_deadline_after_carries_nanoseconds_into_seconds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
