/*
 * Shadow AI from egress logs (see sp_egress.h): one parser per log
 * format over a line given as (pointer, length), and the compiled-in
 * catalogue of AI service domains.
 *
 * The parsers never allocate and never read past len; each reason they
 * give describes the line's shape, never its content, so a log line (a
 * user's address, a URL with a token in its query) is never echoed into
 * an error answer or controld's log.
 */

#include <string.h>

#include "sp_egress.h"


#define SP_EGRESS_DAY_MS     86400000LL
#define SP_EGRESS_YEAR_MAX   9999

/* a line read left to right */
typedef struct {
    const char  *p;
    const char  *end;
} sp_egress_cursor_t;

typedef struct {
    const char  *data;
    size_t       len;
} sp_egress_token_t;


static const char  *sp_egress_format_names[] = {
    "auto", "dnsmasq", "bind", "squid", "generic"
};

static const char  *sp_egress_months[] = {
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
    "nov", "dec"
};


/* ---- formats ---------------------------------------------------------- */

int
sp_egress_format(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < sizeof(sp_egress_format_names) / sizeof(char *); i++) {
        if (strlen(sp_egress_format_names[i]) == len
            && memcmp(sp_egress_format_names[i], name, len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


const char *
sp_egress_format_name(sp_egress_format_e format)
{
    if ((unsigned) format
        >= sizeof(sp_egress_format_names) / sizeof(char *))
    {
        return NULL;
    }

    return sp_egress_format_names[format];
}


/* ---- small readers ---------------------------------------------------- */

static int
sp_egress_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}


static int
sp_egress_is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}


static char
sp_egress_lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char) (ch | 0x20) : ch;
}


static void
sp_egress_skip_space(sp_egress_cursor_t *c)
{
    while (c->p < c->end && sp_egress_is_space(*c->p)) {
        c->p++;
    }
}


/* the next run of non-blank bytes; 0 when the line has ended */
static int
sp_egress_token(sp_egress_cursor_t *c, sp_egress_token_t *tok)
{
    sp_egress_skip_space(c);

    tok->data = c->p;

    while (c->p < c->end && !sp_egress_is_space(*c->p)) {
        c->p++;
    }

    tok->len = (size_t) (c->p - tok->data);

    return tok->len != 0;
}


static int
sp_egress_token_is(const sp_egress_token_t *tok, const char *s)
{
    size_t  n;

    n = strlen(s);

    return tok->len == n && memcmp(tok->data, s, n) == 0;
}


static int
sp_egress_starts(const char *p, size_t len, const char *prefix)
{
    size_t  n;

    n = strlen(prefix);

    return len >= n && memcmp(p, prefix, n) == 0;
}


/* exactly n digits at p (len available) into *out */
static int
sp_egress_digits(const char *p, size_t len, size_t n, int *out)
{
    size_t  i;
    int     v;

    if (len < n) {
        return SP_ERROR;
    }

    v = 0;

    for (i = 0; i < n; i++) {
        if (!sp_egress_is_digit(p[i])) {
            return SP_ERROR;
        }

        v = v * 10 + (p[i] - '0');
    }

    *out = v;

    return SP_OK;
}


/* ---- time ------------------------------------------------------------- */

/* days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant) */
static int64_t
sp_egress_days(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static int64_t
sp_egress_year_of(int64_t ms)
{
    int64_t  z, era, doe, yoe, y, doy, mp;

    z = (ms >= 0 ? ms : ms - SP_EGRESS_DAY_MS + 1) / SP_EGRESS_DAY_MS;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    return y + (mp >= 10);
}


static int
sp_egress_days_in_month(int64_t y, int m)
{
    static const int  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        return 29;
    }

    return days[m - 1];
}


/* "hh:mm:ss" at p, then an optional fraction; the milliseconds of the day */
static int
sp_egress_clock(sp_egress_cursor_t *c, int64_t *ms)
{
    int          h, m, s, frac, digits;
    size_t       len;
    const char  *p;

    p = c->p;
    len = (size_t) (c->end - p);

    if (sp_egress_digits(p, len, 2, &h) != SP_OK || len < 8 || p[2] != ':'
        || sp_egress_digits(p + 3, len - 3, 2, &m) != SP_OK || p[5] != ':'
        || sp_egress_digits(p + 6, len - 6, 2, &s) != SP_OK
        || h > 23 || m > 59 || s > 60)
    {
        return SP_ERROR;
    }

    p += 8;
    frac = 0;

    /* a leap second reads as :59.999 */
    if (s == 60) {
        s = 59;
        frac = 999;
    }

    if (p < c->end && (*p == '.' || *p == ',')) {
        p++;
        digits = 0;

        if (p == c->end || !sp_egress_is_digit(*p)) {
            return SP_ERROR;
        }

        while (p < c->end && sp_egress_is_digit(*p)) {
            if (digits < 3 && frac != 999) {
                frac = frac * 10 + (*p - '0');
            }

            digits++;
            p++;
        }

        for ( /* void */ ; digits < 3 && frac != 999; digits++) {
            frac *= 10;
        }
    }

    c->p = p;
    *ms = ((int64_t) h * 3600 + m * 60 + s) * 1000 + frac;

    return SP_OK;
}


static int
sp_egress_date_ms(int64_t y, int mon, int d, int64_t clock_ms, int64_t *ms)
{
    if (y < 1970 || y > SP_EGRESS_YEAR_MAX || mon < 1 || mon > 12 || d < 1
        || d > sp_egress_days_in_month(y, mon))
    {
        return SP_ERROR;
    }

    *ms = sp_egress_days(y, mon, d) * SP_EGRESS_DAY_MS + clock_ms;

    return SP_OK;
}


static int
sp_egress_month(const char *p, size_t len)
{
    int  i;

    if (len < 3) {
        return -1;
    }

    for (i = 0; i < 12; i++) {
        if (sp_egress_lower(p[0]) == sp_egress_months[i][0]
            && sp_egress_lower(p[1]) == sp_egress_months[i][1]
            && sp_egress_lower(p[2]) == sp_egress_months[i][2])
        {
            return i + 1;
        }
    }

    return -1;
}


/*
 * syslog's "Dec  5 01:02:03": no year, so the one that puts the time
 * nearest before now + 1 day (a log read just after New Year still has
 * December's lines; a clock a little ahead of ours is no year away)
 */
static int
sp_egress_syslog_time(sp_egress_cursor_t *c, int64_t now_ms, int64_t *ms)
{
    int      mon, day, digit;
    int64_t  year, limit, clock_ms, t;

    mon = sp_egress_month(c->p, (size_t) (c->end - c->p));

    if (mon < 0 || c->end - c->p < 4 || !sp_egress_is_space(c->p[3])) {
        return SP_ERROR;
    }

    c->p += 3;
    sp_egress_skip_space(c);

    day = 0;

    for (digit = 0; digit < 2 && c->p < c->end
                    && sp_egress_is_digit(*c->p); digit++)
    {
        day = day * 10 + (*c->p++ - '0');
    }

    if (digit == 0 || c->p == c->end || !sp_egress_is_space(*c->p)) {
        return SP_ERROR;
    }

    sp_egress_skip_space(c);

    if (sp_egress_clock(c, &clock_ms) != SP_OK) {
        return SP_ERROR;
    }

    limit = now_ms + SP_EGRESS_DAY_MS;
    year = sp_egress_year_of(limit);

    /* Feb 29 falls back to the last leap year */
    for (t = 0; t < 8; t++, year--) {
        if (sp_egress_date_ms(year, mon, day, clock_ms, ms) == SP_OK
            && *ms <= limit)
        {
            return SP_OK;
        }
    }

    return SP_ERROR;
}


/*
 * ISO 8601 / RFC 3339: "2026-12-05T01:02:03.456Z", "+01:00", "+0100", no
 * zone as UTC; the 'T' may be one blank ("2026-12-05 01:02:03")
 */
static int
sp_egress_iso_time(sp_egress_cursor_t *c, int64_t *ms)
{
    int                 y, mon, d, zh, zm, sign;
    size_t              len;
    int64_t             clock_ms;
    const char         *p;
    sp_egress_cursor_t  save;

    p = c->p;
    len = (size_t) (c->end - p);

    if (sp_egress_digits(p, len, 4, &y) != SP_OK || len < 11 || p[4] != '-'
        || sp_egress_digits(p + 5, len - 5, 2, &mon) != SP_OK
        || p[7] != '-'
        || sp_egress_digits(p + 8, len - 8, 2, &d) != SP_OK)
    {
        return SP_ERROR;
    }

    save = *c;
    c->p = p + 10;

    if (*c->p == 'T' || *c->p == 't') {
        c->p++;

    } else if (sp_egress_is_space(*c->p)) {
        sp_egress_skip_space(c);

    } else {
        *c = save;
        return SP_ERROR;
    }

    if (sp_egress_clock(c, &clock_ms) != SP_OK
        || sp_egress_date_ms(y, mon, d, clock_ms, ms) != SP_OK)
    {
        *c = save;
        return SP_ERROR;
    }

    p = c->p;
    len = (size_t) (c->end - p);

    if (len > 0 && (*p == 'Z' || *p == 'z')) {
        c->p++;

    } else if (len > 0 && (*p == '+' || *p == '-')) {
        sign = (*p == '-') ? -1 : 1;

        if (sp_egress_digits(p + 1, len - 1, 2, &zh) != SP_OK) {
            *c = save;
            return SP_ERROR;
        }

        p += 3;
        len -= 3;

        if (len > 0 && *p == ':') {
            p++;
            len--;
        }

        if (sp_egress_digits(p, len, 2, &zm) != SP_OK || zh > 23
            || zm > 59)
        {
            *c = save;
            return SP_ERROR;
        }

        c->p = p + 2;
        *ms -= sign * ((int64_t) zh * 60 + zm) * 60000;
    }

    if (c->p < c->end && !sp_egress_is_space(*c->p)) {
        *c = save;
        return SP_ERROR;
    }

    return SP_OK;
}


/* unix seconds with an optional fraction: "1764896523.123" */
static int
sp_egress_unix_time(const sp_egress_token_t *tok, int64_t *ms)
{
    size_t   i, digits;
    int64_t  sec, frac;

    sec = 0;

    for (i = 0; i < tok->len && sp_egress_is_digit(tok->data[i]); i++) {
        if (i >= 12) {
            return SP_ERROR;
        }

        sec = sec * 10 + (tok->data[i] - '0');
    }

    if (i == 0) {
        return SP_ERROR;
    }

    frac = 0;

    if (i < tok->len) {
        if (tok->data[i] != '.' || i + 1 == tok->len) {
            return SP_ERROR;
        }

        for (i++, digits = 0; i < tok->len; i++, digits++) {
            if (!sp_egress_is_digit(tok->data[i])) {
                return SP_ERROR;
            }

            if (digits < 3) {
                frac = frac * 10 + (tok->data[i] - '0');
            }
        }

        for ( /* void */ ; digits < 3; digits++) {
            frac *= 10;
        }
    }

    /* before the year 10000 */
    if (sec >= 253402300800LL) {
        return SP_ERROR;
    }

    *ms = sec * 1000 + frac;

    return SP_OK;
}


/* ---- hosts and clients ------------------------------------------------ */

/*
 * A host name, "host:port", "[v6]:port" or a URL into ev->host: lower
 * case, without scheme, user, port, path or trailing dot. A DNS query
 * (dns) names a host and nothing else.
 */
static int
sp_egress_set_host(sp_egress_event_t *ev, const char *p, size_t len,
    int dns, char *err, size_t errlen)
{
    size_t       i, n, colons;
    const char  *end, *s, *at;

    end = p + len;

    if (dns) {
        goto name;
    }

    /* "scheme://": then the authority ends at '/', '?' or '#' */
    for (s = p; s < end && s + 3 <= end; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (s > p && (sp_egress_is_digit(*s) || *s == '+'
                            || *s == '-' || *s == '.'))))
        {
            break;
        }
    }

    if (s > p && s + 3 <= end && memcmp(s, "://", 3) == 0) {
        p = s + 3;

        for (s = p; s < end && *s != '/' && *s != '?' && *s != '#'; s++) {
            /* void */
        }

        end = s;

        at = NULL;

        for (s = p; s < end; s++) {
            if (*s == '@') {
                at = s;
            }
        }

        if (at != NULL) {
            p = at + 1;
        }

    } else {
        for (s = p; s < end && *s != '/'; s++) {
            /* void */
        }

        end = s;
    }

    if (p < end && *p == '[') {
        /* "[2001:db8::1]:443": the address without its brackets */
        for (s = p + 1; s < end && *s != ']'; s++) {
            /* void */
        }

        if (s == end) {
            sp_errorf(err, errlen, "the host has an unclosed '['");
            return SP_ERROR;
        }

        p++;
        end = s;

    } else {
        colons = 0;

        for (s = p; s < end; s++) {
            colons += (*s == ':');
        }

        /* one ':' is a port; more is a bare IPv6 address, kept whole */
        if (colons == 1) {
            for (s = p; *s != ':'; s++) {
                /* void */
            }

            end = s;
        }
    }

name:

    if (end > p && end[-1] == '.') {
        end--;
    }

    n = (size_t) (end - p);

    if (n == 0) {
        sp_errorf(err, errlen, "the host is empty");
        return SP_ERROR;
    }

    if (n >= sizeof(ev->host)) {
        sp_errorf(err, errlen, "the host is longer than %zu characters",
                  sizeof(ev->host) - 1);
        return SP_ERROR;
    }

    for (i = 0; i < n; i++) {
        char  ch = sp_egress_lower(p[i]);

        if (!((ch >= 'a' && ch <= 'z') || sp_egress_is_digit(ch)
              || ch == '-' || ch == '.' || ch == '_'
              || (ch == ':' && !dns)))
        {
            sp_errorf(err, errlen, "the host has a character a host name"
                      " cannot have");
            return SP_ERROR;
        }

        ev->host[i] = ch;
    }

    ev->host[n] = '\0';

    if (ev->host[0] == '.' || ev->host[n - 1] == '.'
        || strstr(ev->host, "..") != NULL)
    {
        sp_errorf(err, errlen, "the host has an empty label");
        return SP_ERROR;
    }

    return SP_OK;
}


static int
sp_egress_set_client(sp_egress_event_t *ev, const char *p, size_t len,
    char *err, size_t errlen)
{
    size_t  i;

    if (len == 0) {
        sp_errorf(err, errlen, "the client is empty");
        return SP_ERROR;
    }

    if (len >= sizeof(ev->client)) {
        sp_errorf(err, errlen, "the client is longer than %zu characters",
                  sizeof(ev->client) - 1);
        return SP_ERROR;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) p[i] <= 0x20 || (unsigned char) p[i] >= 0x7f) {
            sp_errorf(err, errlen, "the client has a byte that is no"
                      " printable ASCII");
            return SP_ERROR;
        }

        ev->client[i] = p[i];
    }

    ev->client[len] = '\0';

    return SP_OK;
}


/* a line with nothing, or only blanks: no query, in any format */
static int
sp_egress_blank(const char *line, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!sp_egress_is_space(line[i])) {
            return 0;
        }
    }

    return 1;
}


/* ---- dnsmasq ---------------------------------------------------------- */

/*
 * "<time> [host] dnsmasq[pid]: [serial addr/port] query[A] name from
 * client"; the time is syslog's or RFC 3339 (rsyslog's high precision
 * template). Every other dnsmasq message is no query.
 */
static int
sp_egress_dnsmasq(const char *line, size_t len, int64_t now_ms,
    sp_egress_event_t *ev, char *err, size_t errlen)
{
    size_t              i;
    sp_egress_token_t   tok, host;
    sp_egress_cursor_t  c;

    c.p = line;
    c.end = line + len;

    sp_egress_skip_space(&c);

    if (sp_egress_syslog_time(&c, now_ms, &ev->ts_ms) != SP_OK
        && sp_egress_iso_time(&c, &ev->ts_ms) != SP_OK)
    {
        sp_errorf(err, errlen, "dnsmasq: the line does not start with a"
                  " syslog time (\"Dec  5 01:02:03\") or an RFC 3339 one");
        return SP_ERROR;
    }

    /* the tag, after an optional host name (syslog) */
    for (i = 0; i < 2; i++) {
        if (!sp_egress_token(&c, &tok)) {
            break;
        }

        if (sp_egress_starts(tok.data, tok.len, "dnsmasq")
            && tok.data[tok.len - 1] == ':')
        {
            break;
        }

        tok.len = 0;
    }

    if (tok.len == 0) {
        sp_errorf(err, errlen, "dnsmasq: no \"dnsmasq[pid]:\" tag after"
                  " the time");
        return SP_ERROR;
    }

    if (tok.len > 7 && tok.data[7] != '[' && tok.data[7] != ':') {
        /* dnsmasq-dhcp and friends */
        return SP_DECLINED;
    }

    if (!sp_egress_token(&c, &tok)) {
        return SP_DECLINED;
    }

    /* log-queries=extra: a serial number and the client's addr/port */
    if (sp_egress_is_digit(tok.data[0])) {
        for (i = 0; i < tok.len && sp_egress_is_digit(tok.data[i]); i++) {
            /* void */
        }

        if (i == tok.len) {
            if (!sp_egress_token(&c, &tok)) {
                return SP_DECLINED;
            }

            if (memchr(tok.data, '/', tok.len) != NULL
                && !sp_egress_token(&c, &tok))
            {
                return SP_DECLINED;
            }
        }
    }

    if (!sp_egress_starts(tok.data, tok.len, "query[")) {
        /* reply, forwarded, cached, config, /etc/hosts, started, ... */
        return SP_DECLINED;
    }

    if (tok.data[tok.len - 1] != ']') {
        sp_errorf(err, errlen, "dnsmasq: the query type has no ']'");
        return SP_ERROR;
    }

    if (!sp_egress_token(&c, &host)) {
        sp_errorf(err, errlen, "dnsmasq: the query has no name");
        return SP_ERROR;
    }

    if (!sp_egress_token(&c, &tok) || !sp_egress_token_is(&tok, "from")) {
        sp_errorf(err, errlen, "dnsmasq: no \"from\" after the queried"
                  " name");
        return SP_ERROR;
    }

    if (!sp_egress_token(&c, &tok)) {
        sp_errorf(err, errlen, "dnsmasq: no client after \"from\"");
        return SP_ERROR;
    }

    if (sp_egress_set_client(ev, tok.data, tok.len, err, errlen) != SP_OK
        || sp_egress_set_host(ev, host.data, host.len, 1, err, errlen)
           != SP_OK)
    {
        return SP_ERROR;
    }

    ev->format = SP_EGRESS_DNSMASQ;

    return SP_OK;
}


/* ---- BIND ------------------------------------------------------------- */

/* "05-Dec-2026 01:02:03.456" */
static int
sp_egress_bind_time(sp_egress_cursor_t *c, int64_t *ms)
{
    int          d, mon, y;
    size_t       len;
    int64_t      clock_ms;
    const char  *p;

    p = c->p;
    len = (size_t) (c->end - p);

    if (len < 12 || sp_egress_digits(p, len, 2, &d) != SP_OK || p[2] != '-'
        || (mon = sp_egress_month(p + 3, len - 3)) < 0 || p[6] != '-'
        || sp_egress_digits(p + 7, len - 7, 4, &y) != SP_OK
        || !sp_egress_is_space(p[11]))
    {
        return SP_ERROR;
    }

    c->p = p + 11;
    sp_egress_skip_space(c);

    if (sp_egress_clock(c, &clock_ms) != SP_OK
        || sp_egress_date_ms(y, mon, d, clock_ms, ms) != SP_OK)
    {
        return SP_ERROR;
    }

    return SP_OK;
}


/*
 * named's query log, 9.9 to 9.18: "<time> [queries: info: ]client
 * [@0x..] addr#port (name): [view v: ]query: name IN A +E(0) (server)";
 * also through syslog ("Dec  5 01:02:03 host named[1]: client ...")
 */
static int
sp_egress_bind(const char *line, size_t len, int64_t now_ms,
    sp_egress_event_t *ev, char *err, size_t errlen)
{
    size_t              i;
    const char         *hash;
    sp_egress_token_t   tok, client;
    sp_egress_cursor_t  c;

    c.p = line;
    c.end = line + len;

    sp_egress_skip_space(&c);

    if (sp_egress_bind_time(&c, &ev->ts_ms) != SP_OK) {
        if (sp_egress_syslog_time(&c, now_ms, &ev->ts_ms) != SP_OK
            && sp_egress_iso_time(&c, &ev->ts_ms) != SP_OK)
        {
            sp_errorf(err, errlen, "bind: the line does not start with a"
                      " time such as \"05-Dec-2026 01:02:03.456\"");
            return SP_ERROR;
        }

        /* syslog: a host name, then "named[pid]:" */
        for (i = 0; i < 2; i++) {
            if (!sp_egress_token(&c, &tok)) {
                break;
            }

            if (sp_egress_starts(tok.data, tok.len, "named")
                && tok.data[tok.len - 1] == ':')
            {
                break;
            }

            tok.len = 0;
        }

        if (tok.len == 0) {
            sp_errorf(err, errlen, "bind: a syslog line without a"
                      " \"named[pid]:\" tag");
            return SP_ERROR;
        }
    }

    /* "queries: info:" (print-category, print-severity) */
    for (i = 0; ; i++) {
        if (!sp_egress_token(&c, &tok)) {
            return SP_DECLINED;
        }

        if (i >= 2 || tok.data[tok.len - 1] != ':') {
            break;
        }

        if (i == 0 && !sp_egress_token_is(&tok, "queries:")) {
            /* another category: no query */
            return SP_DECLINED;
        }
    }

    if (!sp_egress_token_is(&tok, "client")) {
        return SP_DECLINED;
    }

    if (!sp_egress_token(&c, &client)) {
        sp_errorf(err, errlen, "bind: nothing after \"client\"");
        return SP_ERROR;
    }

    if (sp_egress_starts(client.data, client.len, "@0x")
        && !sp_egress_token(&c, &client))
    {
        sp_errorf(err, errlen, "bind: no client address after the"
                  " @0x pointer");
        return SP_ERROR;
    }

    hash = memchr(client.data, '#', client.len);
    if (hash == NULL) {
        sp_errorf(err, errlen, "bind: the client has no \"#port\"");
        return SP_ERROR;
    }

    client.len = (size_t) (hash - client.data);

    /* "(name):", then "view internal:" when views are configured */
    for (i = 0; i < 4; i++) {
        if (!sp_egress_token(&c, &tok)) {
            sp_errorf(err, errlen, "bind: no \"query:\" after the client");
            return SP_ERROR;
        }

        if (sp_egress_token_is(&tok, "query:")) {
            break;
        }
    }

    if (i == 4) {
        /* "query (cache) 'x/A/IN' denied" and other security lines */
        return SP_DECLINED;
    }

    if (!sp_egress_token(&c, &tok)) {
        sp_errorf(err, errlen, "bind: the query has no name");
        return SP_ERROR;
    }

    if (sp_egress_set_client(ev, client.data, client.len, err, errlen)
        != SP_OK
        || sp_egress_set_host(ev, tok.data, tok.len, 1, err, errlen)
           != SP_OK)
    {
        return SP_ERROR;
    }

    ev->format = SP_EGRESS_BIND;

    return SP_OK;
}


/* ---- Squid ------------------------------------------------------------ */

/*
 * The native access.log: "time elapsed client code/status bytes method
 * URL user hierarchy/peer type"; CONNECT has "host:port" as its URL
 */
static int
sp_egress_squid(const char *line, size_t len, sp_egress_event_t *ev,
    char *err, size_t errlen)
{
    size_t              i;
    sp_egress_token_t   tok[7];
    sp_egress_cursor_t  c;

    c.p = line;
    c.end = line + len;

    for (i = 0; i < 7; i++) {
        if (!sp_egress_token(&c, &tok[i])) {
            sp_errorf(err, errlen, "squid: %zu fields, the native format"
                      " has at least 7", i);
            return SP_ERROR;
        }
    }

    if (sp_egress_unix_time(&tok[0], &ev->ts_ms) != SP_OK) {
        sp_errorf(err, errlen, "squid: the first field is no unix time");
        return SP_ERROR;
    }

    for (i = 0; i < tok[1].len; i++) {
        if (!sp_egress_is_digit(tok[1].data[i]) && tok[1].data[i] != '-') {
            sp_errorf(err, errlen, "squid: the second field (elapsed ms)"
                      " is no number");
            return SP_ERROR;
        }
    }

    if (memchr(tok[3].data, '/', tok[3].len) == NULL) {
        sp_errorf(err, errlen, "squid: the fourth field is no"
                  " \"code/status\"");
        return SP_ERROR;
    }

    /* "error:transaction-end-before-headers", "/path" alone: no host */
    if (tok[6].data[0] == '/' || tok[6].data[0] == '-'
        || sp_egress_starts(tok[6].data, tok[6].len, "error:"))
    {
        return SP_DECLINED;
    }

    if (sp_egress_set_client(ev, tok[2].data, tok[2].len, err, errlen)
        != SP_OK
        || sp_egress_set_host(ev, tok[6].data, tok[6].len, 0, err, errlen)
           != SP_OK)
    {
        return SP_ERROR;
    }

    ev->format = SP_EGRESS_SQUID;

    return SP_OK;
}


/* ---- generic ---------------------------------------------------------- */

static int
sp_egress_generic(const char *line, size_t len, sp_egress_event_t *ev,
    char *err, size_t errlen)
{
    sp_egress_token_t   time, client, host;
    sp_egress_cursor_t  c;

    c.p = line;
    c.end = line + len;

    sp_egress_skip_space(&c);

    if (c.p < c.end && *c.p == '#') {
        return SP_DECLINED;
    }

    if (sp_egress_iso_time(&c, &ev->ts_ms) != SP_OK) {
        if (!sp_egress_token(&c, &time)
            || sp_egress_unix_time(&time, &ev->ts_ms) != SP_OK)
        {
            sp_errorf(err, errlen, "generic: the first field is neither"
                      " unix seconds nor an ISO 8601 time");
            return SP_ERROR;
        }
    }

    if (!sp_egress_token(&c, &client) || !sp_egress_token(&c, &host)) {
        sp_errorf(err, errlen, "generic: expected \"time client host\"");
        return SP_ERROR;
    }

    if (sp_egress_set_client(ev, client.data, client.len, err, errlen)
        != SP_OK
        || sp_egress_set_host(ev, host.data, host.len, 0, err, errlen)
           != SP_OK)
    {
        return SP_ERROR;
    }

    ev->format = SP_EGRESS_GENERIC;

    return SP_OK;
}


/* ---- the entry point -------------------------------------------------- */

static int
sp_egress_parse_one(sp_egress_format_e format, const char *line, size_t len,
    int64_t now_ms, sp_egress_event_t *ev, char *err, size_t errlen)
{
    switch (format) {

    case SP_EGRESS_DNSMASQ:
        return sp_egress_dnsmasq(line, len, now_ms, ev, err, errlen);

    case SP_EGRESS_BIND:
        return sp_egress_bind(line, len, now_ms, ev, err, errlen);

    case SP_EGRESS_SQUID:
        return sp_egress_squid(line, len, ev, err, errlen);

    case SP_EGRESS_GENERIC:
        return sp_egress_generic(line, len, ev, err, errlen);

    default:
        sp_errorf(err, errlen, "unknown log format");
        return SP_ERROR;
    }
}


int
sp_egress_parse(sp_egress_format_e format, const char *line, size_t len,
    int64_t now_ms, sp_egress_event_t *ev, char *err, size_t errlen)
{
    int  f, rc;

    memset(ev, 0, sizeof(sp_egress_event_t));

    if (len > 0 && line[len - 1] == '\n') {
        len--;
    }

    if (sp_egress_blank(line, len)) {
        return SP_DECLINED;
    }

    if (memchr(line, '\0', len) != NULL) {
        sp_errorf(err, errlen, "the line holds a NUL byte");
        return SP_ERROR;
    }

    if (format != SP_EGRESS_AUTO) {
        rc = sp_egress_parse_one(format, line, len, now_ms, ev, err,
                                 errlen);
        if (rc == SP_ERROR) {
            memset(ev, 0, sizeof(sp_egress_event_t));
        }

        return rc;
    }

    /*
     * Most distinctive first: dnsmasq's tag, BIND's time, Squid's seven
     * fields; generic reads almost anything with three fields.
     */
    for (f = SP_EGRESS_DNSMASQ; f <= SP_EGRESS_GENERIC; f++) {
        rc = sp_egress_parse_one((sp_egress_format_e) f, line, len, now_ms,
                                 ev, NULL, 0);
        if (rc != SP_ERROR) {
            return rc;
        }

        memset(ev, 0, sizeof(sp_egress_event_t));
    }

    sp_errorf(err, errlen, "no known format reads the line (tried"
              " dnsmasq, bind, squid and generic)");

    return SP_ERROR;
}


/* ---- the catalogue ---------------------------------------------------- */

#define SP_EGRESS_BEDROCK  "bedrock*.amazonaws.com"

/*
 * Sorted by domain (strcmp), which sp_egress_service() binary searches:
 * the unit test checks the order. Only domains that serve AI and nothing
 * else: a shared domain (github.com, google.com, amazonaws.com) is listed
 * by the AI host under it. Amazon Bedrock's hosts carry the region in
 * the middle ("bedrock-runtime.us-east-1.amazonaws.com"): its entry is a
 * pattern, matched apart.
 */
static const sp_ai_service_t  sp_egress_services[] = {
    { "ai21.com", "AI21 Labs", "provider" },
    { "aiplatform.googleapis.com", "Google Vertex AI", "provider" },
    { "aistudio.google.com", "Google AI Studio", "chat" },
    { "aleph-alpha.com", "Aleph Alpha", "provider" },
    { "anthropic.com", "Anthropic", "provider" },
    { "assemblyai.com", "AssemblyAI", "voice" },
    { "augmentcode.com", "Augment Code", "coding" },
    { "baichuan-ai.com", "Baichuan", "provider" },
    { "bard.google.com", "Google Gemini", "chat" },
    { SP_EGRESS_BEDROCK, "Amazon Bedrock", "provider" },
    { "bigmodel.cn", "Zhipu AI", "provider" },
    { "bolt.new", "Bolt", "coding" },
    { "cerebras.ai", "Cerebras", "provider" },
    { "character.ai", "Character.AI", "chat" },
    { "chatglm.cn", "Zhipu ChatGLM", "chat" },
    { "chatgpt.com", "ChatGPT", "chat" },
    { "claude.ai", "Claude", "chat" },
    { "codeium.com", "Codeium", "coding" },
    { "cognitiveservices.azure.com", "Azure AI Services", "provider" },
    { "cohere.ai", "Cohere", "provider" },
    { "cohere.com", "Cohere", "provider" },
    { "copilot-proxy.githubusercontent.com", "GitHub Copilot", "coding" },
    { "copilot.microsoft.com", "Microsoft Copilot", "chat" },
    { "copy.ai", "Copy.ai", "writing" },
    { "cursor.com", "Cursor", "coding" },
    { "cursor.sh", "Cursor", "coding" },
    { "dashscope.aliyuncs.com", "Alibaba Qwen (DashScope)", "provider" },
    { "deepgram.com", "Deepgram", "voice" },
    { "deepinfra.com", "DeepInfra", "provider" },
    { "deepseek.com", "DeepSeek", "provider" },
    { "elevenlabs.io", "ElevenLabs", "voice" },
    { "fireworks.ai", "Fireworks AI", "provider" },
    { "gemini.google.com", "Google Gemini", "chat" },
    { "generativelanguage.googleapis.com", "Google Gemini API",
      "provider" },
    { "githubcopilot.com", "GitHub Copilot", "coding" },
    { "grok.com", "Grok", "chat" },
    { "groq.com", "Groq", "provider" },
    { "huggingface.co", "Hugging Face", "provider" },
    { "ideogram.ai", "Ideogram", "image" },
    { "inflection.ai", "Inflection AI", "provider" },
    { "jasper.ai", "Jasper", "writing" },
    { "kimi.com", "Kimi", "chat" },
    { "krea.ai", "Krea", "image" },
    { "leonardo.ai", "Leonardo.Ai", "image" },
    { "lovable.dev", "Lovable", "coding" },
    { "meta.ai", "Meta AI", "chat" },
    { "midjourney.com", "Midjourney", "image" },
    { "minimax.chat", "MiniMax", "provider" },
    { "mistral.ai", "Mistral AI", "provider" },
    { "moonshot.cn", "Moonshot AI", "provider" },
    { "notebooklm.google.com", "Google NotebookLM", "chat" },
    { "oaiusercontent.com", "ChatGPT", "chat" },
    { "openai.azure.com", "Azure OpenAI", "provider" },
    { "openai.com", "OpenAI", "provider" },
    { "openrouter.ai", "OpenRouter", "provider" },
    { "perplexity.ai", "Perplexity", "search" },
    { "phind.com", "Phind", "coding" },
    { "pi.ai", "Pi", "chat" },
    { "pika.art", "Pika", "image" },
    { "poe.com", "Poe", "chat" },
    { "qodo.ai", "Qodo", "coding" },
    { "reka.ai", "Reka", "provider" },
    { "replicate.com", "Replicate", "provider" },
    { "replit.com", "Replit", "coding" },
    { "runwayml.com", "Runway", "image" },
    { "sambanova.ai", "SambaNova", "provider" },
    { "sourcegraph.com", "Sourcegraph Cody", "coding" },
    { "stability.ai", "Stability AI", "image" },
    { "suno.com", "Suno", "voice" },
    { "supermaven.com", "Supermaven", "coding" },
    { "tabnine.com", "Tabnine", "coding" },
    { "together.ai", "Together AI", "provider" },
    { "together.xyz", "Together AI", "provider" },
    { "v0.dev", "v0", "coding" },
    { "voyageai.com", "Voyage AI", "provider" },
    { "windsurf.com", "Windsurf", "coding" },
    { "writesonic.com", "Writesonic", "writing" },
    { "x.ai", "xAI", "provider" },
    { "you.com", "You.com", "search" },
    { "zhipuai.cn", "Zhipu AI", "provider" },
};

#define SP_EGRESS_SERVICES                                                   \
    (sizeof(sp_egress_services) / sizeof(sp_egress_services[0]))


const sp_ai_service_t *
sp_egress_catalogue(size_t *n)
{
    *n = SP_EGRESS_SERVICES;

    return sp_egress_services;
}


/* the entry whose domain is exactly name (len bytes), or NULL */
static const sp_ai_service_t *
sp_egress_lookup(const char *name, size_t len)
{
    int     cmp;
    size_t  lo, hi, mid, dlen;

    lo = 0;
    hi = SP_EGRESS_SERVICES;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        dlen = strlen(sp_egress_services[mid].domain);

        cmp = memcmp(name, sp_egress_services[mid].domain,
                     len < dlen ? len : dlen);
        if (cmp == 0) {
            cmp = (len > dlen) - (len < dlen);
        }

        if (cmp == 0) {
            return &sp_egress_services[mid];
        }

        if (cmp < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


static const sp_ai_service_t *
sp_egress_bedrock(void)
{
    return sp_egress_lookup(SP_EGRESS_BEDROCK, sizeof(SP_EGRESS_BEDROCK) - 1);
}


/*
 * The host and each of its parent domains, longest first, looked up in
 * turn: O(labels * log n), and only whole labels match (notopenai.com is
 * not openai.com; api.openai.com.evil.net is evil.net's).
 */
const sp_ai_service_t *
sp_egress_service(const char *host, size_t len)
{
    char                    name[256];
    size_t                  i, first;
    const char             *suffix;
    const sp_ai_service_t  *s;

    if (len > 0 && host[len - 1] == '.') {
        len--;
    }

    if (len == 0 || len >= sizeof(name)) {
        return NULL;
    }

    for (i = 0; i < len; i++) {
        name[i] = sp_egress_lower(host[i]);

        /* the Bedrock pattern is no host */
        if (name[i] == '*') {
            return NULL;
        }
    }

    name[len] = '\0';

    /* "bedrock-runtime.<region>.amazonaws.com", "bedrock.<region>..." */
    for (first = 0; first < len && name[first] != '.'; first++) {
        /* void */
    }

    if ((first == 7 || (first > 8 && name[7] == '-'))
        && memcmp(name, "bedrock", 7) == 0
        && len > first + sizeof(".amazonaws.com") - 1
        && memcmp(name + len - (sizeof(".amazonaws.com") - 1),
                  ".amazonaws.com", sizeof(".amazonaws.com") - 1) == 0)
    {
        return sp_egress_bedrock();
    }

    suffix = name;

    for ( ;; ) {
        s = sp_egress_lookup(suffix, len - (size_t) (suffix - name));
        if (s != NULL) {
            return s;
        }

        suffix = memchr(suffix, '.', len - (size_t) (suffix - name));
        if (suffix == NULL) {
            return NULL;
        }

        suffix++;
    }
}
