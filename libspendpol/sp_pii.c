/*
 * PII and secret detection (sp_pii.h): one pass over the text with hand
 * written matchers, each tried only where its cheap trigger is (a digit
 * at the start of a word, '@', '+', '(', ':', "-----BEGIN ", "eyJ", a
 * known key prefix, two capitals and two digits), and validated as far
 * as the format allows (Luhn and issuer, mod-97 and the country's length,
 * SSN area rules, octet ranges, a JWT header that decodes to JSON with
 * "alg") so that look-alikes are not reported.
 *
 * The body's walk is sp_pii_text.c; scoring, names, the secret kinds of
 * whole tokens and redaction are here.
 */

#include <stdlib.h>
#include <strings.h>

#include "sp_pii.h"


typedef struct {
    sp_pii_result_t  *res;
    uint32_t          mask;
    const uint32_t   *raw;        /* text offset -> reported offset */
    sp_pii_entity_t   pending;    /* the last found, not yet kept */
    int               has_pending;
} sp_pii_scan_t;


static const char  *sp_pii_names[] = {
    "email", "phone", "ssn", "card", "iban", "ipv4", "ipv6", "api_key",
    "jwt", "private_key", "dob"
};

static const char  *sp_pii_labels[] = {
    "EMAIL", "PHONE", "SSN", "CARD", "IBAN", "IPV4", "IPV6", "API_KEY",
    "JWT", "PRIVATE_KEY", "DOB", "PATTERN"
};

/*
 * The weights of the score, in thousandths: how likely a type found is
 * a real exposure, and how bad it is. Secrets, SSNs and cards are near
 * certain harm; an IP address mostly is not.
 */
static const int  sp_pii_weights[] = {
    350,    /* email */
    400,    /* phone */
    900,    /* ssn */
    850,    /* card */
    700,    /* iban */
    150,    /* ipv4 */
    150,    /* ipv6 */
    900,    /* api_key */
    700,    /* jwt */
    950,    /* private_key */
    500     /* dob */
};


/* ---- character classes ----------------------------------------------- */

#define SP_C_DIGIT   0x01
#define SP_C_UPPER   0x02
#define SP_C_LOWER   0x04
#define SP_C_HEX     0x08
#define SP_C_B64URL  0x10     /* A-Z a-z 0-9 - _ */
#define SP_C_LOCAL   0x20     /* email local part */
#define SP_C_TRIG    0x40     /* a byte that may start a match */
#define SP_C_WORD    0x80     /* A-Z a-z 0-9 _ */

static uint8_t  sp_pii_class[256];
static int      sp_pii_class_ready;

#define sp_is(c, cl)    (sp_pii_class[(unsigned char) (c)] & (cl))
#define sp_digit(c)     ((c) >= '0' && (c) <= '9')
#define sp_alnum(c)     (sp_is(c, SP_C_DIGIT | SP_C_UPPER | SP_C_LOWER))


/*
 * Filled once; every thread that races here writes the same bytes, so
 * the race is benign, and the flag is set last.
 */
static void
sp_pii_classes(void)
{
    int          c;
    const char  *p;
    uint8_t      cl[256];

    if (__atomic_load_n(&sp_pii_class_ready, __ATOMIC_ACQUIRE)) {
        return;
    }

    memset(cl, 0, sizeof(cl));

    for (c = 0; c < 256; c++) {
        if (c >= '0' && c <= '9') {
            cl[c] |= SP_C_DIGIT | SP_C_HEX | SP_C_B64URL | SP_C_LOCAL
                     | SP_C_TRIG | SP_C_WORD;
        }

        if (c >= 'A' && c <= 'Z') {
            cl[c] |= SP_C_UPPER | SP_C_B64URL | SP_C_LOCAL | SP_C_WORD
                     | SP_C_TRIG;
        }

        if (c >= 'a' && c <= 'z') {
            cl[c] |= SP_C_LOWER | SP_C_B64URL | SP_C_LOCAL | SP_C_WORD;
        }

        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
            cl[c] |= SP_C_HEX;
        }
    }

    cl['-'] |= SP_C_B64URL | SP_C_LOCAL | SP_C_TRIG;
    cl['_'] |= SP_C_B64URL | SP_C_LOCAL | SP_C_WORD;
    cl['.'] |= SP_C_LOCAL;
    cl['%'] |= SP_C_LOCAL;
    cl['+'] |= SP_C_LOCAL | SP_C_TRIG;

    /* lowercase letters that begin a key prefix or a JWT */
    for (p = "srgxhpe"; *p; p++) {
        cl[(unsigned char) *p] |= SP_C_TRIG;
    }

    for (p = "@(:"; *p; p++) {
        cl[(unsigned char) *p] |= SP_C_TRIG;
    }

    memcpy(sp_pii_class, cl, sizeof(cl));
    __atomic_store_n(&sp_pii_class_ready, 1, __ATOMIC_RELEASE);
}


/* ---- results --------------------------------------------------------- */

static void
sp_pii_keep(sp_pii_scan_t *s, const sp_pii_entity_t *e)
{
    sp_pii_result_t  *res;

    res = s->res;
    res->total++;
    res->counts[e->type]++;
    res->types |= 1u << e->type;

    if (res->nentities < SP_PII_MAX_ENTITIES) {
        res->entities[res->nentities++] = *e;
    }
}


static void
sp_pii_flush(sp_pii_scan_t *s)
{
    if (s->has_pending) {
        sp_pii_keep(s, &s->pending);
        s->has_pending = 0;
    }
}


/*
 * Matches come in order of start but for those found from their middle
 * ('@', ':'): of two that overlap, the longer is kept.
 */
static void
sp_pii_add(sp_pii_scan_t *s, uint32_t type, size_t start, size_t end)
{
    sp_pii_entity_t  e;

    if (!(s->mask & (1u << type))) {
        return;
    }

    e.type = type;
    e.start = s->raw ? s->raw[start] : (uint32_t) start;
    e.end = s->raw ? s->raw[end] : (uint32_t) end;

    if (s->has_pending && e.start < s->pending.end) {
        if (e.end - e.start > s->pending.end - s->pending.start) {
            s->pending = e;
        }

        return;
    }

    sp_pii_flush(s);
    s->pending = e;
    s->has_pending = 1;
}


/* ---- helpers --------------------------------------------------------- */

/* needle in hay; memmem() is a GNU extension the nginx build lacks */
static const char *
sp_pii_find(const char *hay, size_t n, const char *needle, size_t m)
{
    const char  *p, *last;

    if (m == 0 || m > n) {
        return m == 0 ? hay : NULL;
    }

    last = hay + n - m;

    for (p = hay; p <= last; p++) {
        p = memchr(p, needle[0], (size_t) (last - p) + 1);
        if (p == NULL) {
            return NULL;
        }

        if (memcmp(p, needle, m) == 0) {
            return p;
        }
    }

    return NULL;
}


/* 1 when one of words (lowercase) occurs in text[from, to), any case */
static int
sp_pii_context(const char *text, size_t len, size_t from, size_t to,
    const char *const *words)
{
    size_t        n, k;
    char          low[128];
    const char  *const *w;

    if (to > len) {
        to = len;
    }

    if (from >= to) {
        return 0;
    }

    n = to - from;
    if (n > sizeof(low) - 1) {
        from = to - (sizeof(low) - 1);
        n = sizeof(low) - 1;
    }

    for (k = 0; k < n; k++) {
        low[k] = (char) ((text[from + k] >= 'A' && text[from + k] <= 'Z')
                         ? text[from + k] + 32 : text[from + k]);
    }

    low[n] = '\0';

    /* a word of the list where a word begins: "tel", not "hotel" */
    for (w = words; *w; w++) {
        const char  *at, *p;

        for (p = low; (size_t) (p - low) < n; p = at + 1) {
            at = sp_pii_find(p, n - (size_t) (p - low), *w, strlen(*w));
            if (at == NULL) {
                break;
            }

            if (at == low || !(at[-1] >= 'a' && at[-1] <= 'z')) {
                return 1;
            }
        }
    }

    return 0;
}


static size_t
sp_pii_back(size_t at, size_t n)
{
    return at > n ? at - n : 0;
}


/*
 * A context window: n bytes back from at, but not into the last match,
 * whose own context word it was.
 */
static size_t
sp_pii_from(size_t at, size_t n, size_t floor)
{
    size_t  from;

    from = sp_pii_back(at, n);

    return from < floor ? floor : from;
}


/* the byte before at may not continue a word or number */
static int
sp_pii_boundary_before(const char *text, size_t at)
{
    return at == 0 || !sp_is(text[at - 1], SP_C_WORD);
}


static int
sp_pii_boundary_after(const char *text, size_t len, size_t at)
{
    return at >= len || !sp_is(text[at], SP_C_WORD);
}


/* ---- email ----------------------------------------------------------- */

static size_t
sp_pii_email(const char *text, size_t len, size_t at, size_t floor,
    size_t *start)
{
    size_t  a, p, label, labels, tld_alpha, last_dot;

    /* local part, back from '@' */
    a = at;
    while (a > floor && at - a < 64 && sp_is(text[a - 1], SP_C_LOCAL)) {
        a--;
    }

    while (a < at && (text[a] == '.' || text[a] == '-' || text[a] == '+')) {
        a++;
    }

    if (a == at || text[at - 1] == '.') {
        return 0;
    }

    for (p = a; p + 1 < at; p++) {
        if (text[p] == '.' && text[p + 1] == '.') {
            return 0;
        }
    }

    /* domain: labels of letters, digits, '-' */
    p = at + 1;
    labels = 0;
    last_dot = 0;
    tld_alpha = 0;

    for ( ;; ) {
        label = p;

        while (p < len && p - label < 63
               && (sp_alnum(text[p]) || text[p] == '-'))
        {
            p++;
        }

        if (p == label || text[label] == '-' || text[p - 1] == '-') {
            if (labels >= 2 && p == label) {
                /* a dot that ends a sentence */
                p = last_dot;
                break;
            }

            return 0;
        }

        labels++;

        tld_alpha = 1;
        for (size_t k = label; k < p; k++) {
            if (!sp_is(text[k], SP_C_UPPER | SP_C_LOWER)) {
                tld_alpha = 0;
            }
        }

        if (tld_alpha && p - label >= 2 && labels >= 2) {
            /* the last so far is a possible TLD */
        }

        if (p + 1 < len && text[p] == '.' && sp_alnum(text[p + 1])) {
            last_dot = p;
            p++;
            continue;
        }

        break;
    }

    if (labels < 2) {
        return 0;
    }

    /* the TLD: 2+ letters (or xn--) */
    label = p;
    while (label > at + 1 && text[label - 1] != '.') {
        label--;
    }

    if (p - label < 2) {
        return 0;
    }

    if (!(p - label > 4 && memcmp(text + label, "xn--", 4) == 0)) {
        for (size_t k = label; k < p; k++) {
            if (!sp_is(text[k], SP_C_UPPER | SP_C_LOWER)) {
                return 0;
            }
        }
    }

    if (p < len && (text[p] == '@' || sp_is(text[p], SP_C_WORD))) {
        return 0;
    }

    *start = a;

    return p;
}


/* ---- numbers --------------------------------------------------------- */

/* up to max digits at p; their value in *v */
static size_t
sp_pii_digits(const char *text, size_t len, size_t p, size_t max,
    unsigned *v)
{
    size_t  n;

    n = 0;
    *v = 0;

    while (p + n < len && n < max && sp_digit(text[p + n])) {
        *v = *v * 10 + (unsigned) (text[p + n] - '0');
        n++;
    }

    return n;
}


static const char *const  sp_pii_version_words[] = {
    "version", "ver.", "ver ", "release", "firmware", "build", "v.", NULL
};


static size_t
sp_pii_ipv4(const char *text, size_t len, size_t at)
{
    size_t    p, n, k;
    unsigned  v;

    p = at;

    for (k = 0; k < 4; k++) {
        n = sp_pii_digits(text, len, p, 4, &v);

        if (n == 0 || n > 3 || v > 255 || (n > 1 && text[p] == '0')) {
            return 0;
        }

        p += n;

        if (k < 3) {
            if (p >= len || text[p] != '.') {
                return 0;
            }

            p++;
        }
    }

    /* not part of a longer dotted run, not a version */
    if (p + 1 < len && text[p] == '.' && sp_digit(text[p + 1])) {
        return 0;
    }

    if (!sp_pii_boundary_after(text, len, p)) {
        return 0;
    }

    if (at > 0 && (text[at - 1] == '.' || text[at - 1] == 'v'
                   || text[at - 1] == 'V' || text[at - 1] == '-'))
    {
        return 0;
    }

    if (sp_pii_context(text, len, sp_pii_back(at, 16), at,
                       sp_pii_version_words))
    {
        return 0;
    }

    return p;
}


static int
sp_pii_luhn(const char *d, size_t n)
{
    size_t  k;
    int     sum, x, dbl;

    sum = 0;
    dbl = 0;

    for (k = n; k > 0; k--) {
        x = d[k - 1] - '0';

        if (dbl) {
            x *= 2;
            if (x > 9) {
                x -= 9;
            }
        }

        sum += x;
        dbl = !dbl;
    }

    return sum % 10 == 0;
}


static unsigned
sp_pii_prefix(const char *d, size_t n)
{
    unsigned  v;
    size_t    k;

    v = 0;

    for (k = 0; k < n; k++) {
        v = v * 10 + (unsigned) (d[k] - '0');
    }

    return v;
}


/* an issuer whose numbers begin so and are n digits long */
static int
sp_pii_issuer(const char *d, size_t n)
{
    unsigned  p1, p2, p3, p4, p6;

    p1 = sp_pii_prefix(d, 1);
    p2 = sp_pii_prefix(d, 2);
    p3 = sp_pii_prefix(d, 3);
    p4 = sp_pii_prefix(d, 4);
    p6 = sp_pii_prefix(d, 6);

    if (p1 == 4) {                                       /* Visa */
        return n == 13 || n == 16 || n == 19;
    }

    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) {
        return n == 16;                                  /* Mastercard */
    }

    if (p2 == 34 || p2 == 37) {                          /* Amex */
        return n == 15;
    }

    if (p4 >= 2200 && p4 <= 2204) {                      /* Mir */
        return n >= 16 && n <= 19;
    }

    if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65
        || (p6 >= 622126 && p6 <= 622925))
    {
        return n >= 16 && n <= 19;                       /* Discover */
    }

    if ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38
        || p2 == 39)
    {
        return n >= 14 && n <= 19;                       /* Diners */
    }

    if (p4 >= 3528 && p4 <= 3589) {                      /* JCB */
        return n >= 16 && n <= 19;
    }

    if (p2 == 62) {                                      /* UnionPay */
        return n >= 16 && n <= 19;
    }

    if (p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893
        || p4 == 6304 || p4 == 6759 || (p4 >= 6761 && p4 <= 6763))
    {
        return n >= 13 && n <= 19;                       /* Maestro */
    }

    return 0;
}


/*
 * 13-19 digits, in groups split by one space or dash; the number may end
 * at any group's end (a card followed by an expiry year), the longest
 * valid one is taken.
 */
static size_t
sp_pii_card(const char *text, size_t len, size_t at)
{
    size_t  p, n, best;
    char    d[20];
    char    sep;

    /* not the tail of a longer run of groups (a failed IBAN, a ledger) */
    if (at >= 2 && (text[at - 1] == ' ' || text[at - 1] == '-')
        && sp_digit(text[at - 2]))
    {
        return 0;
    }

    p = at;
    n = 0;
    best = 0;
    sep = 0;

    while (p < len) {
        if (sp_digit(text[p])) {
            if (n == 19) {
                /* a longer run of digits is not a card */
                if (sep == 0) {
                    return 0;
                }

                break;
            }

            d[n++] = text[p++];

            if ((p >= len || !sp_digit(text[p])) && n >= 13
                && sp_pii_boundary_after(text, len, p)
                && !(p + 1 < len && (text[p] == '.' || text[p] == ',')
                     && sp_digit(text[p + 1]))
                && sp_pii_issuer(d, n) && sp_pii_luhn(d, n))
            {
                best = p;
            }

            continue;
        }

        if ((text[p] == ' ' || text[p] == '-') && p + 1 < len
            && sp_digit(text[p + 1]) && (sep == 0 || sep == text[p]))
        {
            sep = text[p];
            p++;
            continue;
        }

        break;
    }

    return best;
}


static int
sp_pii_ssn_valid(unsigned area, unsigned group, unsigned serial)
{
    return area != 0 && area != 666 && area < 900 && group != 0
           && serial != 0;
}


static const char *const  sp_pii_ssn_words[] = {
    "ssn", "social security", "ss#", "ss #", "taxpayer", "tin", NULL
};


static size_t
sp_pii_ssn(const char *text, size_t len, size_t at, size_t floor)
{
    size_t    p, n;
    unsigned  area, group, serial;
    char      sep;

    p = at;

    n = sp_pii_digits(text, len, p, 10, &area);

    if (n == 9) {
        /* nine digits alone: only where an SSN is spoken of */
        p += 9;

        if (!sp_pii_boundary_after(text, len, p)
            || !sp_pii_context(text, len, sp_pii_from(at, 40, floor), at,
                               sp_pii_ssn_words))
        {
            return 0;
        }

        group = (area / 10000) % 100;
        serial = area % 10000;
        area /= 1000000;

        return sp_pii_ssn_valid(area, group, serial) ? p : 0;
    }

    if (n != 3) {
        return 0;
    }

    p += 3;

    if (p >= len || (text[p] != '-' && text[p] != ' ')) {
        return 0;
    }

    sep = text[p++];

    if (sp_pii_digits(text, len, p, 3, &group) != 2) {
        return 0;
    }

    p += 2;

    if (p >= len || text[p] != sep) {
        return 0;
    }

    p++;

    if (sp_pii_digits(text, len, p, 5, &serial) != 4) {
        return 0;
    }

    p += 4;

    if (!sp_pii_boundary_after(text, len, p)
        || (p + 1 < len && text[p] == sep && sp_digit(text[p + 1])))
    {
        return 0;
    }

    /* spaced: a run of numbers unless an SSN is spoken of */
    if (sep == ' ' && !sp_pii_context(text, len, sp_pii_from(at, 40, floor), at,
                                      sp_pii_ssn_words))
    {
        return 0;
    }

    return sp_pii_ssn_valid(area, group, serial) ? p : 0;
}


static const char *const  sp_pii_phone_words[] = {
    "phone", "tel", "call", "mobile", "cell", "fax", "whatsapp", "sms",
    "text me", "contact", "numero", "número", "telefon", "handy",
    "portable", "dial", "reach me", NULL
};


/*
 * Digits with separators (space, '-', '.', '(' and ')', '/'); the count
 * of digits and of groups, the groups' lengths in g[] (at most 8).
 */
static size_t
sp_pii_groups(const char *text, size_t len, size_t p, size_t *ndigits,
    size_t *g, size_t *ngroups, int *paren)
{
    size_t  run, seps;

    *ndigits = 0;
    *ngroups = 0;
    *paren = 0;
    run = 0;
    seps = 0;

    while (p < len) {
        if (sp_digit(text[p])) {
            run++;
            (*ndigits)++;
            p++;
            seps = 0;

            if (*ndigits > 16) {
                return 0;
            }

            continue;
        }

        if (run) {
            if (*ngroups == 8) {
                return 0;
            }

            g[(*ngroups)++] = run;
            run = 0;
        }

        if ((text[p] == ' ' || text[p] == '-' || text[p] == '.'
             || text[p] == ')' || text[p] == '(' || text[p] == '/')
            && seps < 2)
        {
            if (text[p] == '(' || text[p] == ')') {
                *paren = 1;
            }

            /* a separator counts only when digits follow it */
            size_t q = p + 1;
            while (q < len && q - p < 2 && (text[q] == ' '
                                            || text[q] == '('))
            {
                q++;
            }

            if (q < len && sp_digit(text[q])) {
                seps++;
                p = q;
                continue;
            }

            if (text[p] == ')' && *ngroups) {
                p++;
            }
        }

        break;
    }

    if (run) {
        if (*ngroups == 8) {
            return 0;
        }

        g[(*ngroups)++] = run;
    }

    return p;
}


static size_t
sp_pii_phone(const char *text, size_t len, size_t at, size_t floor)
{
    size_t    p, nd, ng, g[8], k, first, end;
    int       paren, plus, context;
    unsigned  v;

    plus = (text[at] == '+');

    /*
     * Not from the middle of a run of numbers: a number that failed as a
     * card or an IBAN would otherwise leave national-looking tails.
     */
    if (!plus && at >= 2 && (text[at - 1] == ' ' || text[at - 1] == '-'
                             || text[at - 1] == '.')
        && sp_digit(text[at - 2]))
    {
        return 0;
    }

    paren = 0;
    p = at + (plus || text[at] == '(');

    end = sp_pii_groups(text, len, p, &nd, g, &ng, &paren);

    if (end == 0 || nd == 0) {
        return 0;
    }

    /* a separator at the end is not part of the number */
    while (end > at && !sp_digit(text[end - 1]) && text[end - 1] != ')') {
        end--;
    }

    if (!sp_pii_boundary_after(text, len, end)
        || (end < len && (text[end] == '.' || text[end] == '-')
            && end + 1 < len && sp_digit(text[end + 1])))
    {
        return 0;
    }

    if (text[at] == '(') {
        paren = 1;
    }

    if (plus) {
        /* E.164: a country code, at most 15 digits */
        return nd >= 8 && nd <= 15 && text[p] != '0' ? end : 0;
    }

    context = -1;
    first = (size_t) (text[p] - '0');

    /* NANP: (xxx) xxx-xxxx, xxx-xxx-xxxx, 1-xxx-xxx-xxxx */
    k = 0;
    if (ng == 4 && g[0] == 1 && first == 1) {
        k = 1;
    }

    if (ng - k == 3 && g[k] == 3 && g[k + 1] == 3 && g[k + 2] == 4) {
        size_t  d;

        d = at;
        while (!sp_digit(text[d])) {
            d++;
        }

        d += k ? 1 : 0;
        while (!sp_digit(text[d])) {
            d++;
        }

        sp_pii_digits(text, len, d, 3, &v);

        if (v >= 200 && v % 100 != 11) {
            return end;
        }

        return 0;
    }

    /* national numbers that begin with 0: UK, FR, DE, ... */
    if (first == 0 && nd >= 10 && nd <= 12 && ng >= 2) {
        if (ng == 5 && nd == 10) {
            /* FR: 0x xx xx xx xx */
            return end;
        }

        /* UK, DE: a 3-5 digit area code, then groups of 3 or more */
        if (ng <= 3 && g[0] >= 3 && g[0] <= 5 && g[1] >= 3
            && (ng == 2 || g[2] >= 4 || (g[0] == 5 && g[2] == 3)))
        {
            return end;
        }
    }

    /* a bare run of 10 or 11 digits only where a phone is spoken of */
    if (ng == 1 && (nd == 10 || (nd == 11 && first == 1)) && !paren) {
        context = sp_pii_context(text, len, sp_pii_from(at, 40, floor), at,
                                 sp_pii_phone_words);
        return context ? end : 0;
    }

    if (paren && ng == 3 && nd == 10) {
        return end;
    }

    return 0;
}


/* ---- dates of birth -------------------------------------------------- */

static const char *const  sp_pii_birth_words[] = {
    "birth", "dob", "d.o.b", "born", "né le", "née le", "né(e)",
    "geboren", "geburtsdatum", "nacimiento", "nacid", "nascita",
    "naissance", "birthday", "bday", NULL
};

static const char *const  sp_pii_months[] = {
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
    "nov", "dec",
    "janv", "févr", "fevr", "mars", "avr", "mai", "juin", "juil", "août",
    "sept", "déc",
    "januar", "februar", "märz", "juni", "juli", "okt", "dez",
    "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio",
    "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    NULL
};


/* a month's name at p (letters only, any case): its end, or 0 */
static size_t
sp_pii_month(const char *text, size_t len, size_t p)
{
    size_t               e, n;
    const char  *const  *m;

    e = p;
    while (e < len && e - p < 12
           && (sp_is(text[e], SP_C_UPPER | SP_C_LOWER)
               || (unsigned char) text[e] >= 0x80))
    {
        e++;
    }

    n = e - p;

    /* every month's name here begins with one of these */
    if (n < 3 || strchr("jfmasonde", text[p] | 0x20) == NULL) {
        return 0;
    }

    for (m = sp_pii_months; *m; m++) {
        if (((*m)[0] == (text[p] | 0x20)) && strlen(*m) <= n
            && strncasecmp(text + p, *m, strlen(*m)) == 0)
        {
            if (e < len && text[e] == '.') {
                e++;
            }

            return e;
        }
    }

    return 0;
}


static int
sp_pii_year(unsigned y, size_t n)
{
    return n == 4 && y >= 1900 && y <= 2030;
}


/* a date starting at p (digits): numeric or day-month-name-year */
static size_t
sp_pii_date(const char *text, size_t len, size_t p)
{
    size_t    n1, n2, n3, q;
    unsigned  a, b, c;
    char      sep;

    n1 = sp_pii_digits(text, len, p, 5, &a);
    q = p + n1;

    if (q >= len) {
        return 0;
    }

    sep = text[q];

    if (sep == '/' || sep == '-' || sep == '.') {
        n2 = sp_pii_digits(text, len, q + 1, 3, &b);

        if (n2 == 0 || n2 > 2 || q + 1 + n2 >= len
            || text[q + 1 + n2] != sep)
        {
            return 0;
        }

        q += 1 + n2 + 1;
        n3 = sp_pii_digits(text, len, q, 5, &c);
        q += n3;

        if (sp_pii_year(a, n1)) {
            /* yyyy-mm-dd */
            return n3 >= 1 && n3 <= 2 && b >= 1 && b <= 12 && c >= 1
                   && c <= 31 ? q : 0;
        }

        if (n1 > 2 || !sp_pii_year(c, n3) || a == 0 || b == 0) {
            return 0;
        }

        /* dd/mm/yyyy or mm/dd/yyyy */
        if ((a <= 31 && b <= 12) || (a <= 12 && b <= 31)) {
            return q;
        }

        return 0;
    }

    /* 3 March 1985, 3. März 1985, 3rd of March, 1985 */
    if (n1 > 2 || a == 0 || a > 31) {
        return 0;
    }

    if (q + 2 < len && (memcmp(text + q, "st", 2) == 0
                        || memcmp(text + q, "nd", 2) == 0
                        || memcmp(text + q, "rd", 2) == 0
                        || memcmp(text + q, "th", 2) == 0))
    {
        q += 2;
    }

    if (q < len && text[q] == '.') {
        q++;
    }

    if (q < len && text[q] == ' ') {
        q++;
    }

    if (q + 3 < len && strncasecmp(text + q, "of ", 3) == 0) {
        q += 3;
    }

    q = sp_pii_month(text, len, q);
    if (q == 0) {
        return 0;
    }

    if (q < len && text[q] == ',') {
        q++;
    }

    if (q < len && text[q] == ' ') {
        q++;
    }

    n3 = sp_pii_digits(text, len, q, 5, &c);

    return sp_pii_year(c, n3) ? q + n3 : 0;
}


/* March 3, 1985: the month before the day */
static size_t
sp_pii_date_month_first(const char *text, size_t len, size_t at,
    size_t *start)
{
    size_t    m, d, n, q;
    unsigned  a, c;

    /* back over one space to the month's word */
    if (at < 4 || text[at - 1] != ' '
        || !sp_is(text[at - 2], SP_C_UPPER | SP_C_LOWER))
    {
        return 0;
    }

    m = at - 1;
    while (m > 0 && sp_is(text[m - 1], SP_C_UPPER | SP_C_LOWER)) {
        m--;
    }

    if (m > 0 && text[m - 1] == '.') {
        return 0;
    }

    if (sp_pii_month(text, len, m) == 0
        || sp_pii_month(text, len, m) < at - 2)
    {
        return 0;
    }

    d = at;
    n = sp_pii_digits(text, len, d, 3, &a);

    if (n == 0 || n > 2 || a == 0 || a > 31) {
        return 0;
    }

    q = d + n;

    if (q + 2 <= len && (memcmp(text + q, "st", 2) == 0
                         || memcmp(text + q, "nd", 2) == 0
                         || memcmp(text + q, "rd", 2) == 0
                         || memcmp(text + q, "th", 2) == 0))
    {
        q += 2;
    }

    if (q < len && text[q] == ',') {
        q++;
    }

    if (q < len && text[q] == ' ') {
        q++;
    }

    n = sp_pii_digits(text, len, q, 5, &c);

    if (!sp_pii_year(c, n)) {
        return 0;
    }

    *start = m;

    return q + n;
}


static size_t
sp_pii_dob(const char *text, size_t len, size_t at, size_t floor,
    size_t *start)
{
    size_t  end, s;

    s = at;
    end = sp_pii_date(text, len, at);

    if (end == 0) {
        end = sp_pii_date_month_first(text, len, at, &s);

        if (end == 0 || s < floor) {
            return 0;
        }
    }

    if (!sp_pii_boundary_after(text, len, end)) {
        return 0;
    }

    if (!sp_pii_context(text, len, sp_pii_from(s, 48, floor), s,
                        sp_pii_birth_words))
    {
        return 0;
    }

    *start = s;

    return end;
}


/* ---- IBAN ------------------------------------------------------------ */

typedef struct {
    char     cc[3];
    uint8_t  len;
} sp_pii_iban_country_t;

/* the SWIFT IBAN registry: each country's IBAN length */
static const sp_pii_iban_country_t  sp_pii_iban_countries[] = {
    { "AD", 24 }, { "AE", 23 }, { "AL", 28 }, { "AT", 20 }, { "AZ", 28 },
    { "BA", 20 }, { "BE", 16 }, { "BG", 22 }, { "BH", 22 }, { "BI", 27 },
    { "BR", 29 }, { "BY", 28 }, { "CH", 21 }, { "CR", 22 }, { "CY", 28 },
    { "CZ", 24 }, { "DE", 22 }, { "DJ", 27 }, { "DK", 18 }, { "DO", 28 },
    { "EE", 20 }, { "EG", 29 }, { "ES", 24 }, { "FI", 18 }, { "FK", 18 },
    { "FO", 18 }, { "FR", 27 }, { "GB", 22 }, { "GE", 22 }, { "GI", 23 },
    { "GL", 18 }, { "GR", 27 }, { "GT", 28 }, { "HN", 28 }, { "HR", 21 },
    { "HU", 28 }, { "IE", 22 }, { "IL", 23 }, { "IQ", 23 }, { "IS", 26 },
    { "IT", 27 }, { "JO", 30 }, { "KW", 30 }, { "KZ", 20 }, { "LB", 28 },
    { "LC", 32 }, { "LI", 21 }, { "LT", 20 }, { "LU", 20 }, { "LV", 21 },
    { "LY", 25 }, { "MC", 27 }, { "MD", 24 }, { "ME", 22 }, { "MK", 19 },
    { "MN", 20 }, { "MR", 27 }, { "MT", 31 }, { "MU", 30 }, { "NI", 28 },
    { "NL", 18 }, { "NO", 15 }, { "OM", 23 }, { "PK", 24 }, { "PL", 28 },
    { "PS", 29 }, { "PT", 25 }, { "QA", 29 }, { "RO", 24 }, { "RS", 22 },
    { "RU", 33 }, { "SA", 24 }, { "SC", 31 }, { "SD", 18 }, { "SE", 24 },
    { "SI", 19 }, { "SK", 24 }, { "SM", 27 }, { "SO", 23 }, { "ST", 25 },
    { "SV", 28 }, { "TL", 23 }, { "TN", 24 }, { "TR", 26 }, { "UA", 29 },
    { "VA", 22 }, { "VG", 24 }, { "XK", 20 }, { "YE", 30 }
};


static size_t
sp_pii_iban_length(const char *cc)
{
    size_t  k;

    for (k = 0; k < sizeof(sp_pii_iban_countries)
                    / sizeof(sp_pii_iban_countries[0]); k++)
    {
        if (sp_pii_iban_countries[k].cc[0] == cc[0]
            && sp_pii_iban_countries[k].cc[1] == cc[1])
        {
            return sp_pii_iban_countries[k].len;
        }
    }

    return 0;
}


static size_t
sp_pii_iban(const char *text, size_t len, size_t at)
{
    size_t    p, n, want, k;
    char      c, s[34];
    unsigned  rem;

    if (at + 4 > len || !sp_is(text[at + 1], SP_C_UPPER)
        || !sp_digit(text[at + 2]) || !sp_digit(text[at + 3]))
    {
        return 0;
    }

    want = sp_pii_iban_length(text + at);
    if (want == 0) {
        return 0;
    }

    p = at;
    n = 0;

    while (p < len && n < want) {
        c = text[p];

        if (sp_is(c, SP_C_DIGIT | SP_C_UPPER)) {
            s[n++] = c;
            p++;
            continue;
        }

        /* groups of four split by one space */
        if (c == ' ' && n % 4 == 0 && p + 1 < len
            && sp_is(text[p + 1], SP_C_DIGIT | SP_C_UPPER))
        {
            p++;
            continue;
        }

        break;
    }

    if (n != want || !sp_pii_boundary_after(text, len, p)) {
        return 0;
    }

    /* mod 97 of the BBAN, country code and check digits */
    rem = 0;

    for (k = 0; k < n; k++) {
        c = s[(k + 4) % n];

        if (sp_digit(c)) {
            rem = (rem * 10 + (unsigned) (c - '0')) % 97;

        } else {
            rem = (rem * 100 + (unsigned) (c - 'A' + 10)) % 97;
        }
    }

    return rem == 1 ? p : 0;
}


/* ---- IPv6 ------------------------------------------------------------ */

static size_t
sp_pii_ipv6(const char *text, size_t len, size_t at)
{
    size_t  p, groups, n, q, tail;
    int     dbl;

    p = at;
    groups = 0;
    dbl = 0;

    if (p + 1 < len && text[p] == ':' && text[p + 1] == ':') {
        dbl = 1;
        p += 2;
    }

    while (p < len) {
        n = 0;
        while (p + n < len && n < 5 && sp_is(text[p + n], SP_C_HEX)) {
            n++;
        }

        if (n == 0) {
            break;
        }

        if (n > 4) {
            return 0;
        }

        /* an IPv4 tail */
        if (p + n + 1 < len && text[p + n] == '.' && n <= 3
            && sp_digit(text[p + n + 1]) && (groups < 7 || dbl))
        {
            tail = sp_pii_ipv4(text, len, p);

            if (tail == 0) {
                return 0;
            }

            groups += 2;
            p = tail;
            break;
        }

        groups++;
        p += n;

        if (p < len && text[p] == ':') {
            if (p + 1 < len && text[p + 1] == ':') {
                if (dbl) {
                    return 0;
                }

                dbl = 1;
                p += 2;
                continue;
            }

            if (p + 1 < len && sp_is(text[p + 1], SP_C_HEX)) {
                p++;
                continue;
            }
        }

        break;
    }

    if (groups > 8 || (!dbl && groups != 8) || (dbl && groups > 7)) {
        return 0;
    }

    if (groups < 2 && !(dbl && groups == 1)) {
        return 0;
    }

    /* "a::b" in code: a short form needs a digit somewhere */
    for (q = at; q < p && !sp_digit(text[q]); q++) {
        /* void */
    }

    if (q == p) {
        return 0;
    }

    if (p < len && (sp_is(text[p], SP_C_WORD) || text[p] == ':'
                    || (text[p] == '.' && p + 1 < len
                        && sp_is(text[p + 1], SP_C_WORD))))
    {
        return 0;
    }

    return p;
}


/* ---- secrets --------------------------------------------------------- */

typedef struct {
    const char  *prefix;
    uint8_t      plen;
    uint8_t      min;        /* characters after the prefix */
    uint8_t      max;        /* 0: no limit */
    uint8_t      charset;    /* class bits the rest may use */
    const char  *kind;
} sp_pii_key_format_t;

#define SP_K_ALNUM   (SP_C_DIGIT | SP_C_UPPER | SP_C_LOWER)
#define SP_K_URL     (SP_C_B64URL)
#define SP_K_UPNUM   (SP_C_DIGIT | SP_C_UPPER)

/* longest prefixes first where one begins another */
static const sp_pii_key_format_t  sp_pii_key_formats[] = {
    { "sk-ant-", 7, 32, 0, SP_K_URL, "anthropic" },
    { "sk-or-", 6, 32, 0, SP_K_URL, "openrouter" },
    { "sk-proj-", 8, 32, 0, SP_K_URL, "openai" },
    { "sk-svcacct-", 11, 32, 0, SP_K_URL, "openai" },
    { "sk-admin-", 9, 32, 0, SP_K_URL, "openai" },
    { "sk-None-", 8, 32, 0, SP_K_URL, "openai" },
    { "sk-", 3, 20, 0, SP_K_URL, "openai" },
    { "sk_live_", 8, 20, 0, SP_K_ALNUM, "stripe" },
    { "sk_test_", 8, 20, 0, SP_K_ALNUM, "stripe" },
    { "rk_live_", 8, 20, 0, SP_K_ALNUM, "stripe" },
    { "rk_test_", 8, 20, 0, SP_K_ALNUM, "stripe" },
    { "AIza", 4, 35, 35, SP_K_URL, "google" },
    { "AKIA", 4, 16, 16, SP_K_UPNUM, "aws" },
    { "ASIA", 4, 16, 16, SP_K_UPNUM, "aws" },
    { "github_pat_", 11, 22, 0, SP_K_URL, "github" },
    { "ghp_", 4, 36, 36, SP_K_ALNUM, "github" },
    { "gho_", 4, 36, 36, SP_K_ALNUM, "github" },
    { "ghu_", 4, 36, 36, SP_K_ALNUM, "github" },
    { "ghs_", 4, 36, 36, SP_K_ALNUM, "github" },
    { "ghr_", 4, 36, 36, SP_K_ALNUM, "github" },
    { "glpat-", 6, 20, 0, SP_K_URL, "gitlab" },
    { "gsk_", 4, 40, 0, SP_K_ALNUM, "groq" },
    { "xoxb-", 5, 10, 0, SP_K_URL, "slack" },
    { "xoxp-", 5, 10, 0, SP_K_URL, "slack" },
    { "xoxa-", 5, 10, 0, SP_K_URL, "slack" },
    { "xoxe-", 5, 10, 0, SP_K_URL, "slack" },
    { "xoxr-", 5, 10, 0, SP_K_URL, "slack" },
    { "xoxs-", 5, 10, 0, SP_K_URL, "slack" },
    { "xai-", 4, 40, 0, SP_K_ALNUM, "xai" },
    { "hf_", 3, 30, 0, SP_K_ALNUM, "huggingface" },
    { "r8_", 3, 30, 0, SP_K_ALNUM, "replicate" },
    { "pplx-", 5, 32, 0, SP_K_ALNUM, "perplexity" },
    { NULL, 0, 0, 0, 0, NULL }
};


/* the rest of a key at p: its end, or 0 */
static size_t
sp_pii_key_rest(const char *text, size_t len, size_t p,
    const sp_pii_key_format_t *f)
{
    size_t  e;

    e = p;
    while (e < len && sp_is(text[e], f->charset)) {
        e++;
    }

    if (e - p < f->min || (f->max && e - p != f->max)) {
        return 0;
    }

    return e;
}


static const sp_pii_key_format_t *
sp_pii_key_format(const char *text, size_t len, size_t at)
{
    const sp_pii_key_format_t  *f;

    for (f = sp_pii_key_formats; f->prefix; f++) {
        if (len - at > f->plen && text[at] == f->prefix[0]
            && memcmp(text + at, f->prefix, f->plen) == 0)
        {
            return f;
        }
    }

    return NULL;
}


static int
sp_pii_all(const char *s, size_t n, uint8_t cl)
{
    size_t  k;

    for (k = 0; k < n; k++) {
        if (!sp_is(s[k], cl)) {
            return 0;
        }
    }

    return 1;
}


/* 1 when at least one digit and one letter: random, not a word */
static int
sp_pii_mixed(const char *s, size_t n)
{
    size_t  k;
    int     digit, alpha;

    digit = 0;
    alpha = 0;

    for (k = 0; k < n; k++) {
        digit |= sp_digit(s[k]);
        alpha |= sp_is(s[k], SP_C_UPPER | SP_C_LOWER) != 0;
    }

    return digit && alpha;
}


static size_t
sp_pii_api_key(const char *text, size_t len, size_t at)
{
    size_t                      e;
    const sp_pii_key_format_t  *f;

    if (len - at > 7 && memcmp(text + at, SP_KEY_PREFIX, 7) == 0) {
        e = at + 7;
        while (e < len && sp_is(text[e], SP_C_HEX) && e - at < 7 + 64) {
            e++;
        }

        return e - at == SP_KEY_LEN && sp_pii_boundary_after(text, len, e)
               ? e : 0;
    }

    if (len - at > 11 && memcmp(text + at, "AccountKey=", 11) == 0) {
        e = at + 11;
        while (e < len && (sp_is(text[e], SP_C_B64URL) || text[e] == '+'
                           || text[e] == '/' || text[e] == '='))
        {
            e++;
        }

        return e - at >= 11 + 40 ? e : 0;
    }

    f = sp_pii_key_format(text, len, at);
    if (f == NULL) {
        return 0;
    }

    e = sp_pii_key_rest(text, len, at + f->plen, f);

    if (e == 0 || (e < len && sp_is(text[e], SP_C_WORD))
        || !sp_pii_mixed(text + at + f->plen, e - at - f->plen))
    {
        return 0;
    }

    return e;
}


/* ---- JWT ------------------------------------------------------------- */

static int
sp_pii_b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
}


static size_t
sp_pii_jwt(const char *text, size_t len, size_t at)
{
    size_t    p, seg, k, n, start[3];
    uint32_t  acc;
    int       bits, v;
    char      head[256];

    p = at;

    for (seg = 0; seg < 3; seg++) {
        start[seg] = p;

        while (p < len && sp_is(text[p], SP_C_B64URL)) {
            p++;
        }

        if (p - start[seg] < (seg == 2 ? 0u : 4u)) {
            return 0;
        }

        if (seg < 2) {
            if (p >= len || text[p] != '.') {
                return 0;
            }

            p++;
        }
    }

    if (p < len && (sp_is(text[p], SP_C_WORD)
                    || (text[p] == '.' && p + 1 < len
                        && sp_is(text[p + 1], SP_C_B64URL))))
    {
        return 0;
    }

    /* the header decodes to a JSON object naming its "alg" */
    n = 0;
    acc = 0;
    bits = 0;

    for (k = start[0]; k < start[1] - 1 && n < sizeof(head) - 1; k++) {
        v = sp_pii_b64url_value(text[k]);
        if (v < 0) {
            return 0;
        }

        acc = (acc << 6) | (uint32_t) v;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            head[n++] = (char) ((acc >> bits) & 0xff);
        }
    }

    head[n] = '\0';

    if (n < 8 || head[0] != '{'
        || sp_pii_find(head, n, "\"alg\"", 5) == NULL)
    {
        return 0;
    }

    return p;
}


/* ---- PEM private keys ------------------------------------------------ */

static size_t
sp_pii_private_key(const char *text, size_t len, size_t at)
{
    size_t       p, e, label, llen;
    const char  *end;
    char         want[96];

    p = at + 11;                     /* "-----BEGIN " */
    label = p;

    while (p < len && p - label < 40 && text[p] != '-' && text[p] != '\n') {
        p++;
    }

    llen = p - label;

    if (p + 5 > len || memcmp(text + p, "-----", 5) != 0 || llen < 11
        || (sp_pii_find(text + label, llen, "PRIVATE KEY", 11) == NULL))
    {
        return 0;
    }

    /* "-----END <label>-----" */
    memcpy(want, "-----END ", 9);
    memcpy(want + 9, text + label, llen);
    memcpy(want + 9 + llen, "-----", 5);

    end = sp_pii_find(text + p + 5, len - p - 5, want, 14 + llen);
    if (end == NULL) {
        return len;
    }

    e = (size_t) (end - text) + 14 + llen;

    return e;
}


/* ---- the scan -------------------------------------------------------- */

/*
 * 1 when a word beginning c0 c1 may be a key, a JWT or an IBAN: most
 * words of prose are skipped whole on this test alone.
 */
static int
sp_pii_word_trigger(unsigned char c0, unsigned char c1, unsigned char c2)
{
    switch (c0) {
    case 's':
        return c1 == 'k' || c1 == 'p';
    case 'r':
        return c1 == 'k' || c1 == '8';
    case 'g':
        return c1 == 'h' || c1 == 'i' || c1 == 'l' || c1 == 's';
    case 'x':
        return c1 == 'o' || c1 == 'a';
    case 'h':
        return c1 == 'f';
    case 'p':
        return c1 == 'p';
    case 'e':
        return c1 == 'y';
    case 'A':
        if (c1 == 'K' || c1 == 'S' || c1 == 'I' || c1 == 'c') {
            return 1;
        }

        break;
    default:
        break;
    }

    /* an IBAN: two capitals and two digits */
    return c0 >= 'A' && c0 <= 'Z' && c1 >= 'A' && c1 <= 'Z' && sp_digit(c2);
}


/* a word that begins with a digit: the numeric types */
static size_t
sp_pii_number(sp_pii_scan_t *s, const char *text, size_t len, size_t i,
    size_t floor)
{
    size_t    end, start;
    uint32_t  mask;

    mask = s->mask;

    if (i > 1 && (text[i - 1] == '.' || text[i - 1] == '-')
        && sp_digit(text[i - 2]))
    {
        /* the middle of a dotted or dashed number */
        return 0;
    }

    if ((mask & (1u << SP_PII_IPV4)) && (end = sp_pii_ipv4(text, len, i))) {
        sp_pii_add(s, SP_PII_IPV4, i, end);
        return end;
    }

    if ((mask & (1u << SP_PII_DOB))
        && (end = sp_pii_dob(text, len, i, floor, &start)))
    {
        sp_pii_add(s, SP_PII_DOB, start, end);
        return end;
    }

    if ((mask & (1u << SP_PII_SSN))
        && (end = sp_pii_ssn(text, len, i, floor)))
    {
        sp_pii_add(s, SP_PII_SSN, i, end);
        return end;
    }

    if ((mask & (1u << SP_PII_CARD)) && (end = sp_pii_card(text, len, i))) {
        sp_pii_add(s, SP_PII_CARD, i, end);
        return end;
    }

    if ((mask & (1u << SP_PII_PHONE))
        && (end = sp_pii_phone(text, len, i, floor)))
    {
        sp_pii_add(s, SP_PII_PHONE, i, end);
        return end;
    }

    return 0;
}


/* a word that begins with a letter and passed sp_pii_word_trigger() */
static size_t
sp_pii_word(sp_pii_scan_t *s, const char *text, size_t len, size_t i)
{
    size_t    end;
    uint32_t  mask;

    mask = s->mask;

    if (text[i] == 'e') {
        if ((mask & (1u << SP_PII_JWT)) && len - i > 3 && text[i + 2] == 'J'
            && (end = sp_pii_jwt(text, len, i)))
        {
            sp_pii_add(s, SP_PII_JWT, i, end);
            return end;
        }

        return 0;
    }

    if (sp_is(text[i], SP_C_UPPER) && (mask & (1u << SP_PII_IBAN))
        && len - i > 4 && (end = sp_pii_iban(text, len, i)))
    {
        sp_pii_add(s, SP_PII_IBAN, i, end);
        return end;
    }

    if ((mask & (1u << SP_PII_API_KEY))
        && (end = sp_pii_api_key(text, len, i)))
    {
        sp_pii_add(s, SP_PII_API_KEY, i, end);
        return end;
    }

    return 0;
}


/*
 * Where a match may begin: '@', ':', '+', '(' and '-' anywhere; a digit,
 * a capital or one of "srgxhpe" where a word begins. Everything else in
 * prose is skipped 16 bytes at a time.
 */
static int
sp_pii_interesting(const char *text, size_t p)
{
    unsigned char  c;

    c = (unsigned char) text[p];

    if (c == '@' || c == ':' || c == '+' || c == '(' || c == '-') {
        return 1;
    }

    return (sp_pii_class[c] & SP_C_TRIG)
           && (p == 0 || !(sp_pii_class[(unsigned char) text[p - 1]]
                           & SP_C_WORD));
}


#ifdef __SSE2__

#include <emmintrin.h>

/* 0xff where lo <= x <= hi (ASCII: bytes >= 0x80 are below every lo) */
#define sp_pii_in(x, lo, hi)                                                  \
    _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8((char) ((lo) - 1))),       \
                  _mm_cmpgt_epi8(_mm_set1_epi8((char) ((hi) + 1)), x))

#define sp_pii_eq(x, c)  _mm_cmpeq_epi8(x, _mm_set1_epi8(c))

static size_t
sp_pii_next(const char *text, size_t len, size_t i)
{
    int      m;
    __m128i  cur, prev, lower, word, start, special;

    if (i == 0) {
        if (len == 0 || sp_pii_interesting(text, 0)) {
            return 0;
        }

        i = 1;
    }

    for ( ; i + 16 <= len; i += 16) {
        cur = _mm_loadu_si128((const __m128i *) (text + i));
        prev = _mm_loadu_si128((const __m128i *) (text + i - 1));

        lower = _mm_or_si128(prev, _mm_set1_epi8(0x20));
        word = _mm_or_si128(_mm_or_si128(sp_pii_in(lower, 'a', 'z'),
                                         sp_pii_in(prev, '0', '9')),
                            sp_pii_eq(prev, '_'));

        start = _mm_or_si128(sp_pii_in(cur, '0', '9'),
                             sp_pii_in(cur, 'A', 'Z'));
        start = _mm_or_si128(start, _mm_or_si128(sp_pii_eq(cur, 's'),
                                                 sp_pii_eq(cur, 'r')));
        start = _mm_or_si128(start, _mm_or_si128(sp_pii_eq(cur, 'g'),
                                                 sp_pii_eq(cur, 'x')));
        start = _mm_or_si128(start, _mm_or_si128(sp_pii_eq(cur, 'h'),
                                                 sp_pii_eq(cur, 'p')));
        start = _mm_or_si128(start, sp_pii_eq(cur, 'e'));

        special = _mm_or_si128(_mm_or_si128(sp_pii_eq(cur, '@'),
                                            sp_pii_eq(cur, ':')),
                               _mm_or_si128(sp_pii_eq(cur, '+'),
                                            sp_pii_eq(cur, '(')));
        special = _mm_or_si128(special, sp_pii_eq(cur, '-'));

        m = _mm_movemask_epi8(_mm_or_si128(special,
                                           _mm_andnot_si128(word, start)));
        if (m) {
            return i + (size_t) __builtin_ctz((unsigned) m);
        }
    }

    for ( ; i < len; i++) {
        if (sp_pii_interesting(text, i)) {
            return i;
        }
    }

    return len;
}

#else

static size_t
sp_pii_next(const char *text, size_t len, size_t i)
{
    for ( ; i < len; i++) {
        if (sp_pii_interesting(text, i)) {
            return i;
        }
    }

    return len;
}

#endif


static void
sp_pii_scan_run(sp_pii_scan_t *s, const char *text, size_t len)
{
    size_t         i, end, start, floor, tried;
    uint32_t       mask;
    unsigned char  c, c1, c2;

    sp_pii_classes();

    mask = s->mask;
    floor = 0;           /* matches found back from a trigger stop here */
    tried = 0;           /* an IPv6 run already tried up to here */
    i = 0;

    for ( ;; ) {
        i = sp_pii_next(text, len, i);
        if (i >= len) {
            break;
        }

        c = (unsigned char) text[i];
        end = 0;
        start = i;

        if (sp_pii_class[c] & SP_C_WORD) {
            /* a word begins here */
            if (sp_digit(c)) {
                end = sp_pii_number(s, text, len, i, floor);

            } else {
                c1 = i + 1 < len ? (unsigned char) text[i + 1] : 0;
                c2 = i + 2 < len ? (unsigned char) text[i + 2] : 0;

                if (sp_pii_word_trigger(c, c1, c2)) {
                    end = sp_pii_word(s, text, len, i);
                }
            }

        } else {
            switch (c) {

            case '@':
                if (mask & (1u << SP_PII_EMAIL)) {
                    end = sp_pii_email(text, len, i, floor, &start);
                    if (end) {
                        sp_pii_add(s, SP_PII_EMAIL, start, end);
                    }
                }

                break;

            case ':':
                if ((mask & (1u << SP_PII_IPV6)) && i >= tried
                    && i + 1 < len && (text[i + 1] == ':'
                                       || sp_is(text[i + 1], SP_C_HEX)))
                {
                    while (start > floor && i - start < 40
                           && (sp_is(text[start - 1], SP_C_HEX)
                               || text[start - 1] == ':'))
                    {
                        start--;
                    }

                    if (sp_pii_boundary_before(text, start)
                        && !(start > 0 && text[start - 1] == '.'))
                    {
                        end = sp_pii_ipv6(text, len, start);
                    }

                    if (end) {
                        sp_pii_add(s, SP_PII_IPV6, start, end);

                    } else {
                        /* the rest of this run of hex and colons */
                        tried = i + 1;
                        while (tried < len
                               && (sp_is(text[tried], SP_C_HEX)
                                   || text[tried] == ':'))
                        {
                            tried++;
                        }
                    }
                }

                break;

            case '-':
                if ((mask & (1u << SP_PII_PRIVATE_KEY)) && len - i > 11
                    && text[i + 1] == '-'
                    && memcmp(text + i, "-----BEGIN ", 11) == 0)
                {
                    end = sp_pii_private_key(text, len, i);
                    if (end) {
                        sp_pii_add(s, SP_PII_PRIVATE_KEY, i, end);
                    }
                }

                break;

            default:            /* '+', '(' */
                if ((mask & (1u << SP_PII_PHONE)) && i + 1 < len
                    && sp_digit(text[i + 1])
                    && sp_pii_boundary_before(text, i))
                {
                    end = sp_pii_phone(text, len, i, floor);
                    if (end) {
                        sp_pii_add(s, SP_PII_PHONE, i, end);
                    }
                }

                break;
            }
        }

        if (end > i) {
            i = end;
            floor = end;

        } else {
            i++;
        }
    }
}


static void
sp_pii_result_reset(sp_pii_result_t *res)
{
    res->nentities = 0;
    res->total = 0;
    memset(res->counts, 0, sizeof(res->counts));
    res->types = 0;
    res->score_milli = 0;
    res->scanned = 0;
}


void
sp_pii_scan_text(const char *text, size_t len, uint32_t mask,
    sp_pii_result_t *res)
{
    sp_pii_scan_t  s;

    sp_pii_result_reset(res);

    memset(&s, 0, sizeof(sp_pii_scan_t));
    s.res = res;
    s.mask = mask & SP_PII_ALL;

    if (len > UINT32_MAX) {
        len = UINT32_MAX;
    }

    sp_pii_scan_run(&s, text, len);
    sp_pii_flush(&s);

    res->scanned = len;
    res->score_milli = sp_pii_score(res->types);
}


static int
sp_pii_scan_visit(const sp_pii_text_t *text, void *arg)
{
    sp_pii_scan_t  *s;

    s = arg;
    s->raw = text->raw;
    sp_pii_scan_run(s, text->text, text->len);
    sp_pii_flush(s);
    s->res->scanned += text->len;

    return 0;
}


int
sp_pii_scan_body(sp_provider_e provider, int answer, const char *body,
    size_t len, uint32_t mask, sp_pii_result_t *res)
{
    int            rc;
    sp_pii_scan_t  s;

    sp_pii_result_reset(res);

    memset(&s, 0, sizeof(sp_pii_scan_t));
    s.res = res;
    s.mask = mask & SP_PII_ALL;

    rc = sp_pii_body_text(provider, answer, body, len, sp_pii_scan_visit, &s);

    res->score_milli = sp_pii_score(res->types);

    return rc;
}


/* ---- names, weights, score ------------------------------------------- */

const char *
sp_pii_name(sp_pii_type_e type)
{
    return (unsigned) type < SP_PII_COUNT ? sp_pii_names[type] : NULL;
}


const char *
sp_pii_label(sp_pii_type_e type)
{
    return (unsigned) type <= SP_PII_PATTERN ? sp_pii_labels[type] : NULL;
}


int
sp_pii_type(const char *name, size_t len)
{
    int  k;

    for (k = 0; k < SP_PII_COUNT; k++) {
        if (strlen(sp_pii_names[k]) == len
            && memcmp(sp_pii_names[k], name, len) == 0)
        {
            return k;
        }
    }

    return -1;
}


int
sp_pii_weight(sp_pii_type_e type)
{
    return (unsigned) type < SP_PII_COUNT ? sp_pii_weights[type] : 0;
}


/*
 * 1 - prod(1 - w): computed on millionths in integers, so that both
 * sides of the gateway round alike.
 */
int
sp_pii_score(uint32_t types)
{
    int       k;
    uint64_t  keep;

    keep = 1000000;

    for (k = 0; k < SP_PII_COUNT; k++) {
        if (types & (1u << k)) {
            keep = keep * (uint64_t) (1000 - sp_pii_weights[k]) / 1000;
        }
    }

    return (int) ((1000000 - keep + 500) / 1000);
}


/* ---- whole tokens ---------------------------------------------------- */

const char *
sp_pii_secret_kind(sp_provider_e provider, const char *token, size_t len)
{
    const sp_pii_key_format_t  *f;

    sp_pii_classes();

    if (token == NULL || len < 8 || len > 512) {
        return NULL;
    }

    if (len >= SP_KEY_PREFIX_LEN
        && memcmp(token, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN) == 0)
    {
        return NULL;
    }

    /* DeepSeek: sk- and 32 lowercase hex, which OpenAI never issues */
    if (len == 35 && memcmp(token, "sk-", 3) == 0) {
        size_t  k;

        for (k = 3; k < 35; k++) {
            if (!sp_digit(token[k]) && !(token[k] >= 'a' && token[k] <= 'f'))
            {
                break;
            }
        }

        if (k == 35) {
            return "deepseek";
        }
    }

    f = sp_pii_key_format(token, len, 0);

    if (f != NULL) {
        if (sp_pii_key_rest(token, len, f->plen, f) == len) {
            return f->kind;
        }

        return NULL;
    }

    /* no prefix: only on the provider's own path */
    if (provider == SP_PROVIDER_COHERE && len == 40
        && sp_pii_all(token, len, SP_K_ALNUM))
    {
        return "cohere";
    }

    if (provider == SP_PROVIDER_MISTRAL && len == 32
        && sp_pii_all(token, len, SP_K_ALNUM))
    {
        return "mistral";
    }

    if (provider == SP_PROVIDER_AZURE && len == 32
        && sp_pii_all(token, len, SP_C_HEX))
    {
        return "azure";
    }

    return NULL;
}


/* ---- redaction ------------------------------------------------------- */

size_t
sp_pii_redact(const char *body, size_t len, const sp_pii_result_t *res,
    uint32_t redact_mask, char *out, size_t outlen)
{
    size_t                  k, pos, n, llen;
    const char             *label;
    const sp_pii_entity_t  *e;

    pos = 0;
    n = 0;

    for (k = 0; k < res->nentities; k++) {
        e = &res->entities[k];

        if (e->type > SP_PII_PATTERN || !(redact_mask & (1u << e->type))
            || e->start < pos || e->end > len || e->end < e->start)
        {
            continue;
        }

        label = sp_pii_labels[e->type];
        llen = strlen(label);

        if (n + (e->start - pos) + 11 + llen > outlen) {
            return 0;
        }

        memcpy(out + n, body + pos, e->start - pos);
        n += e->start - pos;
        memcpy(out + n, "[REDACTED:", 10);
        n += 10;
        memcpy(out + n, label, llen);
        n += llen;
        out[n++] = ']';
        pos = e->end;
    }

    if (n + (len - pos) > outlen) {
        return 0;
    }

    memcpy(out + n, body + pos, len - pos);
    n += len - pos;

    return n;
}
