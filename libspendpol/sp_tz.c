/*
 * IANA time zones from TZif files (RFC 8536): transitions, then the
 * footer's POSIX TZ rule.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "sp_tz.h"


/* offsets beyond a day are not local time (RFC 8536 allows 25 hours) */
#define SP_TZ_OFFSET_MAX    (26 * 3600)
/* rule times: -167..167 hours (RFC 8536 3.3.1) */
#define SP_TZ_RULE_TIME_MAX (167 * 3600 + 59 * 60 + 59)
/* instants are clamped to about +-34,000 years: no overflow below */
#define SP_TZ_INSTANT_MAX   ((int64_t) 1 << 40)

#define SP_TZ_DATE_JULIAN   1       /* Jn: 1..365, February 29 not counted */
#define SP_TZ_DATE_DAY      2       /* n: 0..365, February 29 counted */
#define SP_TZ_DATE_MONTH    3       /* Mm.w.d */


typedef struct {
    int      kind;
    int      n;                     /* Jn, n */
    int      month;                 /* 1..12 */
    int      week;                  /* 1..5, 5: the last */
    int      day;                   /* 0 Sunday .. 6 */
    int32_t  time;                  /* seconds after local midnight */
} sp_tz_date_t;

struct sp_tz_s {
    size_t         ntrans;
    size_t         ntypes;
    int64_t       *trans;           /* ascending */
    uint8_t       *trans_type;
    int32_t       *type_utoff;      /* seconds east of UTC */

    /* the footer's rule, for instants from the last transition on */
    int            has_rule;
    int            has_dst;
    int32_t        std_utoff;
    int32_t        dst_utoff;
    sp_tz_date_t   start;           /* in local standard time */
    sp_tz_date_t   end;             /* in local daylight time */
};


static int64_t
sp_tz_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}


static int64_t
sp_tz_floor_mod(int64_t a, int64_t b)
{
    return a - sp_tz_floor_div(a, b) * b;
}


/* days since 1970-01-01 of a date of the proleptic Gregorian calendar */
static int64_t
sp_tz_days_from_civil(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= (m <= 2);
    era = sp_tz_floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static int64_t
sp_tz_year_from_days(int64_t z)
{
    int64_t  era, doe, yoe, doy, mp;

    z += 719468;
    era = sp_tz_floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    return yoe + era * 400 + (mp >= 10);
}


static int
sp_tz_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}


static int
sp_tz_month_days(int64_t y, int m)
{
    static const int  days[12] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    return days[m - 1] + (m == 2 && sp_tz_leap(y));
}


/* the instant (unix seconds, still local) of a rule's date in year y */
static int64_t
sp_tz_rule_local(int64_t y, const sp_tz_date_t *date)
{
    int      first, mday, n;
    int64_t  days;

    switch (date->kind) {

    case SP_TZ_DATE_JULIAN:
        n = date->n - 1;

        if (sp_tz_leap(y) && date->n >= 60) {
            n++;
        }

        days = sp_tz_days_from_civil(y, 1, 1) + n;
        break;

    case SP_TZ_DATE_DAY:
        days = sp_tz_days_from_civil(y, 1, 1) + date->n;
        break;

    default:
        days = sp_tz_days_from_civil(y, date->month, 1);
        /* the weekday of the 1st, then the first wanted day after it */
        first = (int) sp_tz_floor_mod(days + 4, 7);
        mday = 1 + (date->day - first + 7) % 7 + (date->week - 1) * 7;

        while (mday > sp_tz_month_days(y, date->month)) {
            mday -= 7;
        }

        days += mday - 1;
        break;
    }

    return days * 86400 + date->time;
}


static int32_t
sp_tz_rule_offset(const sp_tz_t *tz, int64_t t)
{
    int64_t  y, start, end;

    if (!tz->has_dst) {
        return tz->std_utoff;
    }

    y = sp_tz_year_from_days(sp_tz_floor_div(t + tz->std_utoff, 86400));
    start = sp_tz_rule_local(y, &tz->start) - tz->std_utoff;
    end = sp_tz_rule_local(y, &tz->end) - tz->dst_utoff;

    if (start < end) {
        return (t >= start && t < end) ? tz->dst_utoff : tz->std_utoff;
    }

    /* the southern hemisphere: daylight time spans the new year */
    return (t >= end && t < start) ? tz->std_utoff : tz->dst_utoff;
}


int32_t
sp_tz_offset(const sp_tz_t *tz, int64_t t)
{
    size_t  lo, hi, mid;

    if (t > SP_TZ_INSTANT_MAX) {
        t = SP_TZ_INSTANT_MAX;

    } else if (t < -SP_TZ_INSTANT_MAX) {
        t = -SP_TZ_INSTANT_MAX;
    }

    if (tz->has_rule && (tz->ntrans == 0 || t >= tz->trans[tz->ntrans - 1])) {
        return sp_tz_rule_offset(tz, t);
    }

    /* before the first transition: the first type (RFC 8536 3.2) */
    if (tz->ntrans == 0 || t < tz->trans[0]) {
        return tz->type_utoff[0];
    }

    /* the last transition at or before t */
    lo = 0;
    hi = tz->ntrans;

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;

        if (tz->trans[mid] <= t) {
            lo = mid;

        } else {
            hi = mid;
        }
    }

    return tz->type_utoff[tz->trans_type[lo]];
}


void
sp_tz_local(const sp_tz_t *tz, int64_t now_ms, int *weekday, int *minute)
{
    int64_t  t, local;

    t = sp_tz_floor_div(now_ms, 1000);

    if (t > SP_TZ_INSTANT_MAX) {
        t = SP_TZ_INSTANT_MAX;

    } else if (t < -SP_TZ_INSTANT_MAX) {
        t = -SP_TZ_INSTANT_MAX;
    }

    local = t + sp_tz_offset(tz, t);

    /* 1970-01-01 was a Thursday */
    *weekday = (int) sp_tz_floor_mod(sp_tz_floor_div(local, 86400) + 4, 7);
    *minute = (int) (sp_tz_floor_mod(local, 86400) / 60);
}


int
sp_tz_name_valid(const char *name, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > SP_TZ_NAME_MAX || name[0] == '/') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = name[i];

        /* no '.' at all, so no "..": zone names have none */
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '/' || c == '_' || c == '-'
              || c == '+'))
        {
            return 0;
        }
    }

    return 1;
}


/* ---- the footer: a POSIX TZ string ---------------------------------- */

typedef struct {
    const char  *p;
    const char  *end;
} sp_tz_text_t;


/* an abbreviation: <[A-Za-z0-9+-]+> or [A-Za-z]{3,} */
static int
sp_tz_abbr(sp_tz_text_t *s)
{
    const char  *start;

    if (s->p < s->end && *s->p == '<') {
        s->p++;
        start = s->p;

        while (s->p < s->end && *s->p != '>') {
            if (!((*s->p >= 'a' && *s->p <= 'z')
                  || (*s->p >= 'A' && *s->p <= 'Z')
                  || (*s->p >= '0' && *s->p <= '9')
                  || *s->p == '+' || *s->p == '-'))
            {
                return SP_ERROR;
            }

            s->p++;
        }

        if (s->p == s->end || s->p - start < 1) {
            return SP_ERROR;
        }

        s->p++;
        return SP_OK;
    }

    start = s->p;

    while (s->p < s->end
           && ((*s->p >= 'a' && *s->p <= 'z')
               || (*s->p >= 'A' && *s->p <= 'Z')))
    {
        s->p++;
    }

    return s->p - start >= 3 ? SP_OK : SP_ERROR;
}


static int
sp_tz_number(sp_tz_text_t *s, int max, int *out)
{
    int  n, digits;

    n = 0;
    digits = 0;

    while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && digits < 4) {
        n = n * 10 + (*s->p - '0');
        s->p++;
        digits++;
    }

    if (digits == 0 || n > max) {
        return SP_ERROR;
    }

    *out = n;

    return SP_OK;
}


/* [+-]hh[:mm[:ss]] in seconds, hours at most max_hours */
static int
sp_tz_hms(sp_tz_text_t *s, int max_hours, int32_t *out)
{
    int  sign, h, m, sec;

    sign = 1;
    m = 0;
    sec = 0;

    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) {
        sign = (*s->p == '-') ? -1 : 1;
        s->p++;
    }

    if (sp_tz_number(s, max_hours, &h) != SP_OK) {
        return SP_ERROR;
    }

    if (s->p < s->end && *s->p == ':') {
        s->p++;

        if (sp_tz_number(s, 59, &m) != SP_OK) {
            return SP_ERROR;
        }

        if (s->p < s->end && *s->p == ':') {
            s->p++;

            if (sp_tz_number(s, 59, &sec) != SP_OK) {
                return SP_ERROR;
            }
        }
    }

    *out = sign * (h * 3600 + m * 60 + sec);

    return SP_OK;
}


/* ,date[/time] */
static int
sp_tz_date(sp_tz_text_t *s, sp_tz_date_t *date)
{
    if (s->p == s->end || *s->p != ',') {
        return SP_ERROR;
    }

    s->p++;

    if (s->p < s->end && *s->p == 'J') {
        s->p++;
        date->kind = SP_TZ_DATE_JULIAN;

        if (sp_tz_number(s, 365, &date->n) != SP_OK || date->n < 1) {
            return SP_ERROR;
        }

    } else if (s->p < s->end && *s->p == 'M') {
        s->p++;
        date->kind = SP_TZ_DATE_MONTH;

        if (sp_tz_number(s, 12, &date->month) != SP_OK || date->month < 1
            || s->p == s->end || *s->p++ != '.'
            || sp_tz_number(s, 5, &date->week) != SP_OK || date->week < 1
            || s->p == s->end || *s->p++ != '.'
            || sp_tz_number(s, 6, &date->day) != SP_OK)
        {
            return SP_ERROR;
        }

    } else {
        date->kind = SP_TZ_DATE_DAY;

        if (sp_tz_number(s, 365, &date->n) != SP_OK) {
            return SP_ERROR;
        }
    }

    date->time = 2 * 3600;

    if (s->p < s->end && *s->p == '/') {
        s->p++;
        return sp_tz_hms(s, 167, &date->time);
    }

    return SP_OK;
}


/* "" (no rule), or std offset [dst [offset] [,start[/time],end[/time]]] */
static int
sp_tz_footer(sp_tz_t *tz, const char *text, size_t len)
{
    int32_t       offset;
    sp_tz_text_t  s;

    if (len == 0) {
        return SP_OK;
    }

    s.p = text;
    s.end = text + len;

    /* POSIX offsets are west of UTC */
    if (sp_tz_abbr(&s) != SP_OK || sp_tz_hms(&s, 24, &offset) != SP_OK) {
        return SP_ERROR;
    }

    tz->std_utoff = -offset;
    tz->has_rule = 1;

    if (s.p == s.end) {
        return SP_OK;
    }

    if (sp_tz_abbr(&s) != SP_OK) {
        return SP_ERROR;
    }

    tz->has_dst = 1;
    tz->dst_utoff = tz->std_utoff + 3600;

    if (s.p < s.end && *s.p != ',') {
        if (sp_tz_hms(&s, 24, &offset) != SP_OK) {
            return SP_ERROR;
        }

        tz->dst_utoff = -offset;
    }

    if (s.p == s.end) {
        /* POSIX leaves it to the implementation: the US rule, as glibc */
        tz->start = (sp_tz_date_t) { SP_TZ_DATE_MONTH, 0, 3, 2, 0, 7200 };
        tz->end = (sp_tz_date_t) { SP_TZ_DATE_MONTH, 0, 11, 1, 0, 7200 };
        return SP_OK;
    }

    if (sp_tz_date(&s, &tz->start) != SP_OK
        || sp_tz_date(&s, &tz->end) != SP_OK
        || s.p != s.end)
    {
        return SP_ERROR;
    }

    return SP_OK;
}


/* ---- the file -------------------------------------------------------- */

static uint32_t
sp_tz_be32(const unsigned char *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | p[3];
}


static int64_t
sp_tz_be64(const unsigned char *p)
{
    return (int64_t) (((uint64_t) sp_tz_be32(p) << 32) | sp_tz_be32(p + 4));
}


typedef struct {
    uint32_t  isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} sp_tz_header_t;


/* a header at p (44 bytes) and the size of the data block after it */
static int
sp_tz_header(const unsigned char *p, size_t avail, size_t time_size,
    sp_tz_header_t *h, size_t *block)
{
    if (avail < 44 || memcmp(p, "TZif", 4) != 0) {
        return SP_ERROR;
    }

    h->isutcnt = sp_tz_be32(p + 20);
    h->isstdcnt = sp_tz_be32(p + 24);
    h->leapcnt = sp_tz_be32(p + 28);
    h->timecnt = sp_tz_be32(p + 32);
    h->typecnt = sp_tz_be32(p + 36);
    h->charcnt = sp_tz_be32(p + 40);

    /* counts of 32 bits times at most 12: no overflow in 64-bit size_t */
    *block = (size_t) h->timecnt * time_size + h->timecnt
             + (size_t) h->typecnt * 6 + h->charcnt
             + (size_t) h->leapcnt * (time_size + 4)
             + h->isstdcnt + h->isutcnt;

    if (h->typecnt == 0 || h->typecnt > 256 || *block > avail - 44) {
        return SP_ERROR;
    }

    return SP_OK;
}


sp_tz_t *
sp_tz_parse(const unsigned char *data, size_t len, char *err, size_t errlen)
{
    size_t                i, block, time_size, size, footer_len;
    sp_tz_t              *tz;
    int32_t               utoff;
    const char           *footer;
    sp_tz_header_t        h;
    const unsigned char  *p, *times, *idx, *types, *nl;

    if (sp_tz_header(data, len, 4, &h, &block) != SP_OK) {
        sp_errorf(err, errlen, "not a TZif file");
        return NULL;
    }

    p = data + 44;
    time_size = 4;
    footer = NULL;
    footer_len = 0;

    /* version 2 and later: the 64-bit data and the footer follow */
    if (data[4] >= '2') {
        p += block;

        if (sp_tz_header(p, (size_t) (data + len - p), 8, &h, &block)
            != SP_OK)
        {
            sp_errorf(err, errlen, "a TZif file cut short");
            return NULL;
        }

        p += 44;
        time_size = 8;

        nl = p + block;

        if (nl < data + len && *nl == '\n') {
            footer = (const char *) nl + 1;
            nl = memchr(footer, '\n', (size_t) (data + len - nl - 1));

            if (nl == NULL) {
                sp_errorf(err, errlen, "a TZif footer without its newline");
                return NULL;
            }

            footer_len = (size_t) ((const char *) nl - footer);
        }
    }

    times = p;
    idx = times + (size_t) h.timecnt * time_size;
    types = idx + h.timecnt;

    size = sizeof(sp_tz_t) + (size_t) h.timecnt * sizeof(int64_t)
           + (size_t) h.typecnt * sizeof(int32_t) + h.timecnt;

    tz = calloc(1, size);
    if (tz == NULL) {
        sp_errorf(err, errlen, "out of memory");
        return NULL;
    }

    /* int64 first: sizeof(sp_tz_t) is a multiple of 8 */
    tz->ntrans = h.timecnt;
    tz->ntypes = h.typecnt;
    tz->trans = (int64_t *) (tz + 1);
    tz->type_utoff = (int32_t *) (tz->trans + tz->ntrans);
    tz->trans_type = (uint8_t *) (tz->type_utoff + tz->ntypes);

    for (i = 0; i < h.typecnt; i++) {
        utoff = (int32_t) sp_tz_be32(types + i * 6);

        if (utoff > SP_TZ_OFFSET_MAX || utoff < -SP_TZ_OFFSET_MAX) {
            sp_errorf(err, errlen, "a TZif offset out of range");
            goto failed;
        }

        tz->type_utoff[i] = utoff;
    }

    for (i = 0; i < h.timecnt; i++) {
        tz->trans[i] = time_size == 8 ? sp_tz_be64(times + i * 8)
                                      : (int32_t) sp_tz_be32(times + i * 4);
        tz->trans_type[i] = idx[i];

        if (idx[i] >= h.typecnt || (i > 0 && tz->trans[i] <= tz->trans[i - 1]))
        {
            sp_errorf(err, errlen, "TZif transitions out of order");
            goto failed;
        }
    }

    if (footer != NULL && sp_tz_footer(tz, footer, footer_len) != SP_OK) {
        sp_errorf(err, errlen, "a TZif footer that is no POSIX TZ rule");
        goto failed;
    }

    if (tz->std_utoff > SP_TZ_OFFSET_MAX || tz->std_utoff < -SP_TZ_OFFSET_MAX
        || tz->dst_utoff > SP_TZ_OFFSET_MAX
        || tz->dst_utoff < -SP_TZ_OFFSET_MAX)
    {
        sp_errorf(err, errlen, "a TZif footer offset out of range");
        goto failed;
    }

    return tz;

failed:

    free(tz);
    return NULL;
}


/* UTC without a file: one type, offset 0 */
static sp_tz_t *
sp_tz_utc(char *err, size_t errlen)
{
    sp_tz_t  *tz;

    tz = calloc(1, sizeof(sp_tz_t) + sizeof(int32_t));
    if (tz == NULL) {
        sp_errorf(err, errlen, "out of memory");
        return NULL;
    }

    tz->ntypes = 1;
    tz->trans = (int64_t *) (tz + 1);
    tz->type_utoff = (int32_t *) (tz + 1);
    tz->trans_type = (uint8_t *) (tz->type_utoff + 1);

    return tz;
}


sp_tz_t *
sp_tz_load(const char *dir, const char *name, size_t len, char *err,
    size_t errlen)
{
    int             fd;
    char            path[512];
    ssize_t         n;
    size_t          got;
    sp_tz_t        *tz;
    struct stat     st;
    unsigned char  *data;

    if (!sp_tz_name_valid(name, len)) {
        sp_errorf(err, errlen, "not a time zone name");
        return NULL;
    }

    if (dir == NULL) {
        dir = SP_TZ_DIR;
    }

    if ((size_t) snprintf(path, sizeof(path), "%s/%.*s", dir, (int) len,
                          name)
        >= sizeof(path))
    {
        sp_errorf(err, errlen, "not a time zone name");
        return NULL;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        if (len == 3 && memcmp(name, "UTC", 3) == 0) {
            return sp_tz_utc(err, errlen);
        }

        sp_errorf(err, errlen, "no time zone %.*s", (int) len, name);
        return NULL;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
        || st.st_size < 44 || st.st_size > SP_TZ_FILE_MAX)
    {
        close(fd);
        sp_errorf(err, errlen, "no time zone %.*s", (int) len, name);
        return NULL;
    }

    data = malloc((size_t) st.st_size);
    if (data == NULL) {
        close(fd);
        sp_errorf(err, errlen, "out of memory");
        return NULL;
    }

    for (got = 0; got < (size_t) st.st_size; got += (size_t) n) {
        n = read(fd, data + got, (size_t) st.st_size - got);

        if (n == -1 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            break;
        }
    }

    close(fd);

    tz = got == (size_t) st.st_size ? sp_tz_parse(data, got, err, errlen)
                                    : NULL;

    if (tz == NULL && got != (size_t) st.st_size) {
        sp_errorf(err, errlen, "time zone %.*s could not be read",
                  (int) len, name);
    }

    free(data);

    return tz;
}


void
sp_tz_free(sp_tz_t *tz)
{
    free(tz);
}


/* ---- weekly windows -------------------------------------------------- */

#define SP_TZ_DAY_MINUTES  1440


static int
sp_tz_window_fail(char *member, size_t memberlen, const char *path,
    char *err, size_t errlen, const char *what)
{
    sp_errorf(member, memberlen, "%s", path);
    sp_errorf(err, errlen, "%s", what);

    return SP_ERROR;
}


/* "HH:MM", 00:00 to 23:59 (24:00 too for an end) */
static int
sp_tz_hhmm(json_t *v, int end, uint16_t *minutes)
{
    int          h, m;
    const char  *s;

    if (!json_is_string(v) || json_string_length(v) != 5) {
        return SP_ERROR;
    }

    s = json_string_value(v);

    if (s[2] != ':' || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9'
        || s[3] < '0' || s[3] > '9' || s[4] < '0' || s[4] > '9')
    {
        return SP_ERROR;
    }

    h = (s[0] - '0') * 10 + (s[1] - '0');
    m = (s[3] - '0') * 10 + (s[4] - '0');

    if ((h < 24 && m < 60) || (end && h == 24 && m == 0)) {
        *minutes = (uint16_t) (h * 60 + m);
        return SP_OK;
    }

    return SP_ERROR;
}


int
sp_tz_window_parse(json_t *w, sp_tz_window_t *win, const char **zone,
    size_t *zone_len, char *member, size_t memberlen, char *err,
    size_t errlen)
{
    int          d;
    char         path[96];
    size_t       i;
    json_t      *v, *day;
    const char  *k, *s;

    static const char *const  days[7][2] = {
        { "sun", "sunday" }, { "mon", "monday" }, { "tue", "tuesday" },
        { "wed", "wednesday" }, { "thu", "thursday" }, { "fri", "friday" },
        { "sat", "saturday" }
    };

    sp_errorf(member, memberlen, "%s", "");
    sp_errorf(err, errlen, "%s", "");

    win->days = 0x7f;
    win->start = 0;
    win->end = SP_TZ_DAY_MINUTES;
    *zone = "UTC";
    *zone_len = 3;

    if (!json_is_object(w)) {
        return sp_tz_window_fail(member, memberlen, "", err, errlen,
                                 "expected an object {\"timezone\", "
                                 "\"days\", \"start\", \"end\"}");
    }

    /* a typo must not silently widen a window */
    json_object_foreach(w, k, v) {
        if (strcmp(k, "timezone") != 0 && strcmp(k, "days") != 0
            && strcmp(k, "start") != 0 && strcmp(k, "end") != 0)
        {
            for (i = 0; k[i] != '\0' && i < 64; i++) {
                path[i] = (k[i] < 0x20 || k[i] > 0x7e || k[i] == '"'
                           || k[i] == '\\') ? '?' : k[i];
            }

            path[i] = '\0';
            sp_errorf(member, memberlen, "%s", path);
            sp_errorf(err, errlen, "unknown member \"%s\"; expected one of "
                      "timezone, days, start, end", path);
            return SP_ERROR;
        }
    }

    v = json_object_get(w, "timezone");

    if (v != NULL) {
        if (!json_is_string(v)
            || !sp_tz_name_valid(json_string_value(v), json_string_length(v)))
        {
            return sp_tz_window_fail(member, memberlen, "timezone", err,
                                     errlen, "expected an IANA time zone "
                                     "such as Europe/Paris");
        }

        *zone = json_string_value(v);
        *zone_len = json_string_length(v);
    }

    v = json_object_get(w, "days");

    if (v != NULL) {
        if (!json_is_array(v) || json_array_size(v) == 0) {
            return sp_tz_window_fail(member, memberlen, "days", err, errlen,
                                     "expected an array of one or more days "
                                     "(\"mon\" .. \"sun\")");
        }

        win->days = 0;

        json_array_foreach(v, i, day) {
            s = json_is_string(day) ? json_string_value(day) : "";

            for (d = 0; d < 7; d++) {
                if (strcmp(s, days[d][0]) == 0 || strcmp(s, days[d][1]) == 0)
                {
                    break;
                }
            }

            if (d == 7 || (size_t) json_string_length(day) != strlen(s)) {
                snprintf(path, sizeof(path), "days[%zu]", i);
                return sp_tz_window_fail(member, memberlen, path, err,
                                         errlen, "expected a day: mon, tue, "
                                         "wed, thu, fri, sat or sun");
            }

            win->days |= (uint8_t) (1u << d);
        }
    }

    v = json_object_get(w, "start");

    if (v != NULL && sp_tz_hhmm(v, 0, &win->start) != SP_OK) {
        return sp_tz_window_fail(member, memberlen, "start", err, errlen,
                                 "expected a time \"HH:MM\" from \"00:00\" "
                                 "to \"23:59\"");
    }

    v = json_object_get(w, "end");

    if (v != NULL && sp_tz_hhmm(v, 1, &win->end) != SP_OK) {
        return sp_tz_window_fail(member, memberlen, "end", err, errlen,
                                 "expected a time \"HH:MM\" from \"00:00\" "
                                 "to \"24:00\"");
    }

    return SP_OK;
}


int
sp_tz_window_contains(const sp_tz_window_t *win, int weekday, int minute)
{
    if (win->start < win->end) {
        return minute >= win->start && minute < win->end
               && (win->days & (1u << weekday));
    }

    if (minute >= win->start) {
        return (win->days & (1u << weekday)) != 0;
    }

    if (minute < win->end) {
        return (win->days & (1u << ((weekday + 6) % 7))) != 0;
    }

    return 0;
}
