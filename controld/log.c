/*
 * Levelled logging to stderr. One fprintf() per line, so lines from
 * different threads never interleave (stdio locks the stream per call).
 * Callers never pass keys, provider credentials or Authorization values.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "controld.h"


int  cd_log_level = CD_LOG_INFO;

static const char  *cd_log_names[] = { "error", "warn", "info", "debug" };


int
cd_log_level_parse(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(cd_log_names) / sizeof(cd_log_names[0]); i++) {
        if (strcasecmp(name, cd_log_names[i]) == 0) {
            return (int) i;
        }
    }

    return -1;
}


void
cd_log_write(int level, const char *subject, const char *fmt, ...)
{
    char             message[2048], stamp[32];
    va_list          args;
    struct tm        tm;
    struct timespec  now;

    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    fprintf(stderr, "%s.%03ldZ [%s] %s: %s\n", stamp,
            now.tv_nsec / 1000000, cd_log_names[level], subject, message);
}
