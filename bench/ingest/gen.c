/*
 * Appends n synthetic journal lines to a journal file at a given rate, in
 * the module's own format (sp_journal_format), for bench/ingest.sh.
 *
 *   gen FILE N RATE ORG KEY_ID PROJECT [ID_PREFIX]
 *
 * Lines are written in slices every 10 ms with one write() each (the
 * module writes one line per write(); controld reads whatever is there),
 * ids unique and shaped as the module's (request time, worker tag,
 * sequence: ngx_http_spendpol_ids), request times now, costs varying so
 * the sums mean something. Prints the lines written and the seconds
 * taken.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sp_journal.h"


#define GEN_TICK_MS  10


static int64_t
gen_now_ms(clockid_t clock)
{
    struct timespec  ts;

    clock_gettime(clock, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static int
gen_write_all(int fd, const char *buf, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return -1;
        }

        buf += n;
        len -= (size_t) n;
    }

    return 0;
}


int
main(int argc, char **argv)
{
    int                   fd;
    char                 *buf;
    size_t                len, cap, n;
    int64_t               total, rate, done, due, start, now, i;
    struct timespec       tick;
    sp_journal_record_t   rec;
    const char           *prefix;

    if (argc < 7) {
        fprintf(stderr, "usage: gen FILE N RATE ORG KEY_ID PROJECT "
                "[ID_PREFIX]\n");
        return 2;
    }

    total = strtoll(argv[2], NULL, 10);
    rate = strtoll(argv[3], NULL, 10);
    prefix = argc > 7 ? argv[7] : "evt_";

    if (total <= 0 || rate <= 0) {
        fprintf(stderr, "gen: N and RATE must be positive\n");
        return 2;
    }

    fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "gen: cannot open %s: %s\n", argv[1],
                strerror(errno));
        return 1;
    }

    /* one tick's lines at most, each at most a full line */
    cap = (size_t) (rate * GEN_TICK_MS / 1000 + 2) * 1024;
    buf = malloc(cap);
    if (buf == NULL) {
        return 1;
    }

    memset(&rec, 0, sizeof(rec));
    snprintf(rec.org_id, sizeof(rec.org_id), "%s", argv[4]);
    snprintf(rec.api_key_id, sizeof(rec.api_key_id), "%s", argv[5]);
    snprintf(rec.project, sizeof(rec.project), "%s", argv[6]);
    snprintf(rec.department, sizeof(rec.department), "bench");
    snprintf(rec.provider, sizeof(rec.provider), "openai");
    snprintf(rec.requested_model, sizeof(rec.requested_model), "gpt-4o-mini");
    snprintf(rec.model, sizeof(rec.model), "gpt-4o-mini-2024-07-18");
    snprintf(rec.cache, sizeof(rec.cache), "miss");
    snprintf(rec.endpoint, sizeof(rec.endpoint), "POST /chat/completions");
    rec.status = 200;
    rec.input_tokens = 25;
    rec.output_tokens = 64;
    rec.latency_ms = 3;
    rec.gateway_us = 40;
    rec.epoch = 1;
    rec.reserved_nano = 50000;

    start = gen_now_ms(CLOCK_MONOTONIC);
    done = 0;

    while (done < total) {
        now = gen_now_ms(CLOCK_MONOTONIC);
        due = (now - start + GEN_TICK_MS) * rate / 1000;
        due = due > total ? total : due;
        len = 0;

        for (i = done; i < due; i++) {
            rec.ts_ms = gen_now_ms(CLOCK_REALTIME);
            /* two "workers", as the bench's nginx has */
            snprintf(rec.id, sizeof(rec.id), "%s%012llx%08x%08llx", prefix,
                     (unsigned long long) rec.ts_ms, (unsigned) (i & 1) + 1,
                     (unsigned long long) i);
            snprintf(rec.trace_id, sizeof(rec.trace_id), "%032llx",
                     (unsigned long long) i * 0x9e3779b97f4a7c15ULL);
            rec.cost_nano = 40000 + (i % 7) * 1000;

            n = sp_journal_format(&rec, buf + len, cap - len);
            if (n == 0) {
                break;
            }

            len += n;
        }

        if (len > 0 && gen_write_all(fd, buf, len) != 0) {
            fprintf(stderr, "gen: write: %s\n", strerror(errno));
            return 1;
        }

        done = i;

        tick.tv_sec = 0;
        tick.tv_nsec = GEN_TICK_MS * 1000000L;
        nanosleep(&tick, NULL);
    }

    printf("%lld %.3f\n", (long long) done,
           (double) (gen_now_ms(CLOCK_MONOTONIC) - start) / 1000);

    close(fd);
    free(buf);

    return 0;
}
