/*
 * Id formats: the table of sp_id.h.
 */

#include <stdio.h>
#include <string.h>

#include "sp_id.h"


#define SP_ID_PREFIX_LEN  4

static const sp_id_format_t  sp_id_formats[SP_ID_KIND_COUNT] = {
    { SP_ID_KEY_PREFIX, 2 * SP_ID_RANDOM_BYTES, "API key" },
    { SP_ID_BUDGET_PREFIX, 2 * SP_ID_RANDOM_BYTES, "budget" },
    { SP_ID_AGENT_PREFIX, 2 * SP_ID_RANDOM_BYTES, "agent" },
    { SP_ID_ALERT_PREFIX, 2 * SP_ID_RANDOM_BYTES, "alert" },
    { SP_ID_ALERT_RULE_PREFIX, 2 * SP_ID_RANDOM_BYTES, "alert rule" },
    { SP_ID_EVENT_PREFIX, SP_ID_EVENT_HEX, "audit event" },
    { SP_ID_POLICY_PREFIX, 2 * SP_ID_RANDOM_BYTES, "policy" },
    { SP_ID_SHADOW_ALERT_PREFIX, 2 * SP_ID_RANDOM_BYTES, "shadow-AI alert" },
};


const sp_id_format_t *
sp_id_format(unsigned kind)
{
    return kind < SP_ID_KIND_COUNT ? &sp_id_formats[kind] : NULL;
}


int
sp_id_valid(unsigned kind, const char *id, size_t len)
{
    size_t                 i;
    const sp_id_format_t  *f;

    f = sp_id_format(kind);

    if (f == NULL || len != SP_ID_PREFIX_LEN + f->hex
        || memcmp(id, f->prefix, SP_ID_PREFIX_LEN) != 0)
    {
        return 0;
    }

    for (i = SP_ID_PREFIX_LEN; i < len; i++) {
        if (!((id[i] >= '0' && id[i] <= '9')
              || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


int
sp_id_kind(const char *id, size_t len)
{
    unsigned  kind;

    for (kind = 0; kind < SP_ID_KIND_COUNT; kind++) {
        if (sp_id_valid(kind, id, len)) {
            return (int) kind;
        }
    }

    return -1;
}


size_t
sp_id_expected(unsigned kind, char *out, size_t outlen)
{
    int                    n;
    const sp_id_format_t  *f;

    f = sp_id_format(kind);

    if (f == NULL || outlen == 0) {
        return 0;
    }

    n = snprintf(out, outlen, "%s %s id: \"%s\" followed by %zu lowercase "
                 "hex digits", (f->noun[0] == 'a' || f->noun[0] == 'A')
                               ? "an" : "a",
                 f->noun, f->prefix, f->hex);

    if (n < 0) {
        out[0] = '\0';
        return 0;
    }

    return (size_t) n < outlen ? (size_t) n : outlen - 1;
}

