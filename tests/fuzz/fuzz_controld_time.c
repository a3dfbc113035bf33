/*
 * cd_rfc3339_parse (effective_at of PUT /pricing, time filters): what it
 * accepts is YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) with a real
 * date, and its instant is the one timegm() computes from the same
 * fields (the first six fraction digits, a leap second as :59.999999,
 * minus the offset). A parsed instant formatted back as UTC (when its
 * year is still 1970..9999) parses to the same instant, and so does the
 * same text with "+00:00" for "Z". Any instant from the input's bytes
 * within the accepted years formats and parses back too.
 *
 * Input: a date-time (cut at the first NUL byte); its first 8 bytes are
 * also an instant.
 */

#include <time.h>

#include "fuzz_common.h"
#include "controld.h"
#include "api.h"


/* 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z in microseconds */
#define FUZZ_US_MAX  253402300799999999LL


static int
fuzz_num(const char *s, int n)
{
    int  v, i;

    for (v = 0, i = 0; i < n; i++) {
        FUZZ_CHECK(s[i] >= '0' && s[i] <= '9');
        v = v * 10 + (s[i] - '0');
    }

    return v;
}


/* the instant of an accepted text, computed another way */
static int64_t
fuzz_oracle(const char *s)
{
    struct tm    tm;
    int64_t      secs, frac;
    int          digits, sign, off;
    const char  *p;

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = fuzz_num(s, 4) - 1900;
    FUZZ_CHECK(s[4] == '-');
    tm.tm_mon = fuzz_num(s + 5, 2) - 1;
    FUZZ_CHECK(s[7] == '-');
    tm.tm_mday = fuzz_num(s + 8, 2);
    FUZZ_CHECK(strchr("Tt ", s[10]) != NULL && s[10] != '\0');
    tm.tm_hour = fuzz_num(s + 11, 2);
    FUZZ_CHECK(s[13] == ':');
    tm.tm_min = fuzz_num(s + 14, 2);
    FUZZ_CHECK(s[16] == ':');
    tm.tm_sec = fuzz_num(s + 17, 2);

    FUZZ_CHECK(tm.tm_year + 1900 >= 1970 && tm.tm_year + 1900 <= 9999);
    FUZZ_CHECK(tm.tm_mon >= 0 && tm.tm_mon <= 11);
    FUZZ_CHECK(tm.tm_hour <= 23 && tm.tm_min <= 59 && tm.tm_sec <= 60);

    p = s + 19;
    frac = 0;
    digits = 0;

    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 6) {
                frac = frac * 10 + (*p - '0');
            }
        }

        FUZZ_CHECK(digits > 0);

        for ( ; digits < 6; digits++) {
            frac *= 10;
        }
    }

    if (tm.tm_sec == 60) {
        tm.tm_sec = 59;
        frac = 999999;
    }

    secs = (int64_t) timegm(&tm);

    /* a real date: timegm did not have to carry a day into the month */
    FUZZ_CHECK(tm.tm_mday == fuzz_num(s + 8, 2));

    if (*p == 'Z' || *p == 'z') {
        p++;

    } else {
        FUZZ_CHECK(*p == '+' || *p == '-');
        sign = *p == '-' ? -1 : 1;
        FUZZ_CHECK(p[3] == ':');
        off = fuzz_num(p + 1, 2) * 3600 + fuzz_num(p + 4, 2) * 60;
        FUZZ_CHECK(fuzz_num(p + 1, 2) <= 23 && fuzz_num(p + 4, 2) <= 59);
        secs -= sign * off;
        p += 6;
    }

    FUZZ_CHECK(*p == '\0');

    return secs * 1000000 + frac;
}


/* UTC text of us >= 0 with microseconds; 0 when its year is past 9999 */
static int
fuzz_format(int64_t us, char *out, size_t len)
{
    struct tm  tm;
    time_t     t;

    FUZZ_CHECK(us >= 0);
    t = (time_t) (us / 1000000);
    FUZZ_CHECK(gmtime_r(&t, &tm) != NULL);

    if (tm.tm_year + 1900 > 9999) {
        return 0;
    }

    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int) (us % 1000000));

    return 1;
}


static void
fuzz_round_trip(int64_t us)
{
    char     text[64];
    int64_t  back;

    if (us < 0 || !fuzz_format(us, text, sizeof(text))) {
        return;
    }

    FUZZ_CHECK(cd_rfc3339_parse(text, &back) == CD_OK);
    FUZZ_CHECK(back == us);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char     *s, *t;
    size_t    len;
    int64_t   us, again, v;

    s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    len = strlen(s);

    if (cd_rfc3339_parse(s, &us) == CD_OK) {
        FUZZ_CHECK(len >= 20);
        FUZZ_CHECK(us == fuzz_oracle(s));

        /* at most a day's offset outside the accepted years */
        FUZZ_CHECK(us >= -86400LL * 1000000 && us <= FUZZ_US_MAX
                                                     + 86400LL * 1000000);
        fuzz_round_trip(us);

        /* "Z" and "+00:00" are the same instant */
        if (s[len - 1] == 'Z' || s[len - 1] == 'z') {
            t = malloc(len + 6);
            FUZZ_CHECK(t != NULL);
            memcpy(t, s, len - 1);
            memcpy(t + len - 1, "+00:00", 7);
            FUZZ_CHECK(cd_rfc3339_parse(t, &again) == CD_OK);
            FUZZ_CHECK(again == us);
            free(t);
        }
    }

    if (size >= sizeof(v)) {
        memcpy(&v, data, sizeof(v));
        v = (int64_t) ((uint64_t) v % (uint64_t) (FUZZ_US_MAX + 1));
        fuzz_round_trip(v);
    }

    fuzz_round_trip(0);
    fuzz_round_trip(FUZZ_US_MAX);

    free(s);

    return 0;
}
