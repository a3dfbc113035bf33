/*
 * Egress log lines (sp_egress.c): every format, auto included, on the
 * same bytes. Whatever the input: no read past it, an event's strings
 * NUL-terminated within their arrays, the host lower case without a
 * trailing dot, the format the one asked for (or one of the four under
 * auto), a reason on every refusal, and the catalogue's answer for the
 * host one of its own entries.
 *
 * Input: the first byte picks now (a spread of times), the rest is the
 * line.
 */

#include "fuzz_common.h"
#include "sp_egress.h"


static void
fuzz_event(const sp_egress_event_t *ev, int format)
{
    size_t                  i, n, len;
    const sp_ai_service_t  *s, *cat;

    FUZZ_CHECK(memchr(ev->client, '\0', sizeof(ev->client)) != NULL);
    FUZZ_CHECK(memchr(ev->host, '\0', sizeof(ev->host)) != NULL);
    FUZZ_CHECK(ev->client[0] != '\0');

    len = strlen(ev->host);
    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(ev->host[len - 1] != '.');

    for (i = 0; i < len; i++) {
        FUZZ_CHECK(!(ev->host[i] >= 'A' && ev->host[i] <= 'Z'));
        FUZZ_CHECK((unsigned char) ev->host[i] > 0x20
                   && (unsigned char) ev->host[i] < 0x7f);
    }

    if (format == SP_EGRESS_AUTO) {
        FUZZ_CHECK(ev->format >= SP_EGRESS_DNSMASQ
                   && ev->format <= SP_EGRESS_GENERIC);
    } else {
        FUZZ_CHECK(ev->format == format);
    }

    s = sp_egress_service(ev->host, len);

    if (s != NULL) {
        cat = sp_egress_catalogue(&n);
        FUZZ_CHECK(s >= cat && s < cat + n);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 format, rc;
    char                err[128];
    uint8_t            *line;
    int64_t             now_ms;
    sp_egress_event_t   ev;

    if (size < 1) {
        return 0;
    }

    /* from 1970 to about 2110, and the start of 2027 */
    now_ms = data[0] == 0 ? 1798761600000LL
                          : (int64_t) data[0] * 17280000000LL;

    line = fuzz_dup(data + 1, size - 1);

    for (format = SP_EGRESS_AUTO; format <= SP_EGRESS_GENERIC; format++) {
        err[0] = '\0';
        rc = sp_egress_parse((sp_egress_format_e) format, (char *) line,
                             size - 1, now_ms, &ev, err, sizeof(err));

        FUZZ_CHECK(rc == SP_OK || rc == SP_DECLINED || rc == SP_ERROR);

        if (rc == SP_OK) {
            fuzz_event(&ev, format);
        }

        if (rc == SP_ERROR) {
            FUZZ_CHECK(err[0] != '\0');
            FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        }
    }

    /* the catalogue on the raw bytes as a host */
    if (sp_egress_service((char *) line, size - 1) != NULL) {
        FUZZ_CHECK(size - 1 > 0);
    }

    free(line);

    return 0;
}
