/*
 * Levelled logging to stderr. One fprintf() per line, so lines from
 * different threads never interleave (stdio locks the stream per call).
 * Callers never pass keys, provider credentials or Authorization values.
 *
 * Messages quote what clients sent (ids, model names, URLs, journal
 * fields) and what servers answered (PostgreSQL errors). Every message
 * goes through cd_log_escape, in this one place, so none can forge a log
 * line with a newline or drive a terminal with escape sequences.
 */

#include <stdint.h>
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


size_t
cd_log_escape(const char *s, size_t len, char *out, size_t outlen)
{
    static const char     hex[] = "0123456789abcdef";
    size_t                i, n, k, pos, need;
    uint32_t              cp;
    const unsigned char  *p;

    if (outlen == 0) {
        return 0;
    }

    p = (const unsigned char *) s;
    pos = 0;

    for (i = 0; i < len; i += n) {
        n = 1;
        cp = p[i];

        /* the length of a valid UTF-8 sequence at i, else n stays 1 */
        if (p[i] >= 0xc2 && p[i] <= 0xf4) {
            k = p[i] < 0xe0 ? 2 : p[i] < 0xf0 ? 3 : 4;
            cp = p[i] & (0x7f >> k);

            for (n = 1; n < k && i + n < len && (p[i + n] & 0xc0) == 0x80;
                 n++)
            {
                cp = cp << 6 | (p[i + n] & 0x3f);
            }

            if (n != k || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000)
                || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            {
                n = 1;
                cp = p[i];
            }
        }

        /* C0, DEL, C1 controls and bytes that are not UTF-8 become \xNN */
        if (n == 1
            && (cp < 0x20 || cp == 0x7f || cp >= 0x80 || cp == '\\'))
        {
            need = cp == '\\' ? 2 : 4;

        } else if (n == 2 && cp < 0xa0) {
            need = 8;

        } else {
            need = n;
        }

        if (pos + need >= outlen) {
            break;
        }

        if (need == n) {
            memcpy(out + pos, s + i, n);
            pos += n;
            continue;
        }

        if (cp == '\\') {
            out[pos++] = '\\';
            out[pos++] = '\\';
            continue;
        }

        for (k = 0; k < n; k++) {
            out[pos++] = '\\';
            out[pos++] = 'x';
            out[pos++] = hex[p[i + k] >> 4];
            out[pos++] = hex[p[i + k] & 0xf];
        }
    }

    out[pos] = '\0';

    return pos;
}


void
cd_log_write(int level, const char *subject, const char *fmt, ...)
{
    int              n;
    char             message[2048], escaped[4 * 2048], stamp[32];
    va_list          args;
    struct tm        tm;
    struct timespec  now;

    va_start(args, fmt);
    n = vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);

    n = n < 0 ? 0 : n >= (int) sizeof(message) ? (int) sizeof(message) - 1
                                                : n;
    cd_log_escape(message, (size_t) n, escaped, sizeof(escaped));

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    fprintf(stderr, "%s.%03ldZ [%s] %s: %s\n", stamp,
            now.tv_nsec / 1000000, cd_log_names[level], subject, escaped);
}
