/*
 * Usage in a JSON body that streams through: see sp_scan.h.
 *
 * The scanner does not validate JSON. It follows strings (with their
 * escapes) and nesting, so that a brace or a name inside a string, or a
 * member of a nested object, is never taken for a top-level member; what
 * it copies is checked by jansson afterwards, as a small document.
 */

#include <string.h>

#include "sp_scan.h"
#include "sp_usage_internal.h"


static int sp_scan_at_members(const sp_scan_t *scan);
static void sp_scan_keep(sp_scan_t *scan, char c);
static void sp_scan_start(sp_scan_t *scan);
static void sp_scan_end(sp_scan_t *scan);
static size_t sp_scan_room(int member);
static char *sp_scan_text(sp_scan_t *scan, int member);
static void sp_scan_parse(sp_provider_e provider, const char *name,
    const char *text, size_t len, sp_response_info_t *info);


void
sp_scan_init(sp_scan_t *scan)
{
    memset(scan, 0, sizeof(sp_scan_t));
}


void
sp_scan_feed(sp_scan_t *scan, const char *data, size_t len)
{
    char         c;
    const char  *p, *last;

    scan->bytes += (int64_t) len;

    p = data;
    last = data + len;

    while (p < last) {
        c = *p++;

        if (scan->in_string) {

            if (scan->escape) {
                scan->escape = 0;

            } else if (c == '\\') {
                scan->escape = 1;

            } else if (c == '"') {
                scan->in_string = 0;
                sp_scan_keep(scan, c);

                if (scan->in_key) {
                    scan->in_key = 0;
                    scan->key_done = 1;
                }

                continue;
            }

            if (scan->in_key) {
                if (scan->key_len < SP_SCAN_KEY_MAX) {
                    scan->key[scan->key_len++] = c;
                }

            } else {
                scan->text_bytes++;
            }

            sp_scan_keep(scan, c);
            continue;
        }

        switch (c) {

        case '"':
            scan->in_string = 1;

            if (scan->expect_key && sp_scan_at_members(scan)) {
                scan->expect_key = 0;
                scan->in_key = 1;
                scan->key_done = 0;
                scan->key_len = 0;
            }

            sp_scan_keep(scan, c);
            break;

        case '{':
        case '[':
            sp_scan_keep(scan, c);
            scan->depth++;

            if (scan->depth == 1) {
                scan->root = c;
                scan->element = 0;
                scan->expect_key = (c == '{');

            } else if (scan->depth == 2 && scan->root == '[') {
                scan->element = c;
                scan->expect_key = (c == '{');
            }

            break;

        case '}':
        case ']':
            if (scan->capturing && c == '}' && sp_scan_at_members(scan)) {
                sp_scan_end(scan);

            } else {
                sp_scan_keep(scan, c);
            }

            if (scan->depth == 0) {
                break;
            }

            if (scan->depth == 2 && scan->root == '[') {
                scan->element = 0;
            }

            scan->depth--;
            scan->key_done = 0;
            break;

        case ':':
            if (scan->key_done && sp_scan_at_members(scan)) {
                scan->key_done = 0;
                sp_scan_start(scan);
                break;
            }

            sp_scan_keep(scan, c);
            break;

        case ',':
            if (!sp_scan_at_members(scan)) {
                sp_scan_keep(scan, c);
                break;
            }

            if (scan->capturing) {
                sp_scan_end(scan);
            }

            scan->expect_key = 1;
            scan->key_done = 0;
            break;

        default:
            sp_scan_keep(scan, c);
            break;
        }
    }
}


/* at the depth of the members looked for, inside their object */
static int
sp_scan_at_members(const sp_scan_t *scan)
{
    if (scan->root == '{') {
        return scan->depth == 1;
    }

    return scan->root == '[' && scan->element == '{' && scan->depth == 2;
}


static void
sp_scan_keep(sp_scan_t *scan, char c)
{
    if (!scan->capturing) {
        return;
    }

    /* one past the room marks the value too large; it stays so */
    if (scan->work_len < sp_scan_room(scan->capturing - 1)) {
        scan->work[scan->work_len] = c;
    }

    if (scan->work_len <= sp_scan_room(scan->capturing - 1)) {
        scan->work_len++;
    }
}


/* a member's name has just ended with its ':' */
static void
sp_scan_start(sp_scan_t *scan)
{
    size_t       n;
    const char  *k;

    scan->capturing = 0;
    scan->work_len = 0;

    if (scan->key_len >= SP_SCAN_KEY_MAX) {
        return;
    }

    k = scan->key;
    n = scan->key_len;

    if ((n == 5 && memcmp(k, "usage", 5) == 0)
        || (n == 13 && memcmp(k, "usageMetadata", 13) == 0))
    {
        scan->capturing = SP_SCAN_USAGE + 1;

    } else if (n == 4 && memcmp(k, "meta", 4) == 0) {
        scan->capturing = SP_SCAN_META + 1;

    } else if ((n == 5 && memcmp(k, "model", 5) == 0)
               || (n == 12 && memcmp(k, "modelVersion", 12) == 0))
    {
        scan->capturing = SP_SCAN_MODEL + 1;
    }

    /* fits: checked above */
    memcpy(scan->capture_name, k, n);
    scan->capture_name[n] = '\0';
}


/* the member's value is complete: it replaces what an earlier one said */
static void
sp_scan_end(sp_scan_t *scan)
{
    int          member;
    size_t       start, end;
    const char  *w;

    member = scan->capturing - 1;
    scan->capturing = 0;

    if (scan->work_len > sp_scan_room(member)) {
        return;
    }

    w = scan->work;
    start = 0;
    end = scan->work_len;

    while (start < end
           && (w[start] == ' ' || w[start] == '\t' || w[start] == '\r'
               || w[start] == '\n'))
    {
        start++;
    }

    while (end > start
           && (w[end - 1] == ' ' || w[end - 1] == '\t'
               || w[end - 1] == '\r' || w[end - 1] == '\n'))
    {
        end--;
    }

    if (end == start) {
        return;
    }

    memcpy(sp_scan_text(scan, member), w + start, end - start);
    scan->len[member] = end - start;

    memcpy(scan->name[member], scan->capture_name, SP_SCAN_KEY_MAX);
}


static size_t
sp_scan_room(int member)
{
    return member == SP_SCAN_MODEL ? SP_SCAN_MODEL_MAX : SP_SCAN_USAGE_MAX;
}


static char *
sp_scan_text(sp_scan_t *scan, int member)
{
    switch (member) {

    case SP_SCAN_USAGE:
        return scan->usage;

    case SP_SCAN_META:
        return scan->meta;

    default:
        return scan->model;
    }
}


int
sp_scan_result(const sp_scan_t *scan, sp_provider_e provider,
    sp_response_info_t *info)
{
    info->output_bytes += scan->text_bytes;

    if (scan->len[SP_SCAN_MODEL]) {
        sp_scan_parse(provider, scan->name[SP_SCAN_MODEL], scan->model,
                      scan->len[SP_SCAN_MODEL], info);
    }

    if (scan->len[SP_SCAN_USAGE]) {
        sp_scan_parse(provider, scan->name[SP_SCAN_USAGE], scan->usage,
                      scan->len[SP_SCAN_USAGE], info);

    } else if (provider == SP_PROVIDER_COHERE && scan->len[SP_SCAN_META]) {
        /* Cohere v1's meta has v2's usage shape: billed_units, tokens */
        sp_scan_parse(provider, "usage", scan->meta, scan->len[SP_SCAN_META],
                      info);
    }

    return info->has_usage ? SP_OK : SP_ERROR;
}


/*
 * One member as a document of its own, {"name":value}, read by the
 * provider's own parser: the scan and a whole body agree by construction.
 */
static void
sp_scan_parse(sp_provider_e provider, const char *name, const char *text,
    size_t len, sp_response_info_t *info)
{
    char    doc[SP_SCAN_USAGE_MAX + SP_SCAN_KEY_MAX + 8];
    size_t  n, name_len;

    name_len = strlen(name);

    if (name_len + len + 5 > sizeof(doc)) {
        return;
    }

    n = 0;
    doc[n++] = '{';
    doc[n++] = '"';
    memcpy(doc + n, name, name_len);
    n += name_len;
    doc[n++] = '"';
    doc[n++] = ':';
    memcpy(doc + n, text, len);
    n += len;
    doc[n++] = '}';

    (void) sp_usage_from_json_tree(provider, doc, n, info);
}
