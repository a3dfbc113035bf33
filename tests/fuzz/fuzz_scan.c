/*
 * The streaming usage scanner (sp_scan.c), fed a response body whole and
 * in random-sized pieces: both must find the same members, and each copy
 * stays within its room. What is found goes through sp_scan_result() for
 * every provider; a body jansson reads as one object whose "usage" is an
 * object the scan must have found too (when it fits its copy and no name
 * has an escape).
 *
 * Input: the raw body. Split points come from a hash of the input, so the
 * same input always replays the same way.
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_scan.h"


static void
fuzz_scan(sp_scan_t *scan, const uint8_t *data, size_t size, uint64_t seed,
    size_t max)
{
    size_t    pos, piece;
    uint64_t  rnd;

    sp_scan_init(scan);
    rnd = seed;

    for (pos = 0; pos < size; pos += piece) {
        piece = size - pos;

        if (max && piece > 1) {
            piece = 1 + fuzz_next(&rnd) % (piece < max ? piece : max);
        }

        sp_scan_feed(scan, (const char *) data + pos, piece);
    }
}


static void
fuzz_check_same(const sp_scan_t *a, const sp_scan_t *b)
{
    FUZZ_CHECK(a->bytes == b->bytes);
    FUZZ_CHECK(a->text_bytes == b->text_bytes);
    FUZZ_CHECK(a->len[SP_SCAN_USAGE] == b->len[SP_SCAN_USAGE]);
    FUZZ_CHECK(a->len[SP_SCAN_META] == b->len[SP_SCAN_META]);
    FUZZ_CHECK(a->len[SP_SCAN_MODEL] == b->len[SP_SCAN_MODEL]);
    FUZZ_CHECK(memcmp(a->usage, b->usage, a->len[SP_SCAN_USAGE]) == 0);
    FUZZ_CHECK(memcmp(a->meta, b->meta, a->len[SP_SCAN_META]) == 0);
    FUZZ_CHECK(memcmp(a->model, b->model, a->len[SP_SCAN_MODEL]) == 0);
}


/*
 * An object whose "usage" member is an object, in a body small enough for
 * any member to fit the scan's copy and without escapes (a name written
 * with escapes is out of the scan's reach).
 */
static int
fuzz_has_plain_usage(const uint8_t *data, size_t size)
{
    int            found;
    json_t        *root;
    json_error_t   jerr;

    if (size >= SP_SCAN_USAGE_MAX || memchr(data, '\\', size) != NULL) {
        return 0;
    }

    root = json_loadb((const char *) data, size, 0, &jerr);

    found = json_is_object(root)
            && json_is_object(json_object_get(root, "usage"));

    json_decref(root);

    return found;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sp_scan_t     whole, pieces;
    sp_response_info_t   info;
    uint64_t             seed;
    uint8_t             *copy;
    int                  p, rc;

    copy = fuzz_dup(data, size);
    seed = sp_hash64(copy, size, 0x5343414e);

    fuzz_scan(&whole, copy, size, seed, 0);
    fuzz_scan(&pieces, copy, size, seed, 1 + (seed >> 16) % 64);

    fuzz_check_same(&whole, &pieces);

    FUZZ_CHECK(whole.bytes == (int64_t) size);
    FUZZ_CHECK(whole.text_bytes >= 0 && whole.text_bytes <= whole.bytes);
    FUZZ_CHECK(whole.len[SP_SCAN_USAGE] <= SP_SCAN_USAGE_MAX);
    FUZZ_CHECK(whole.len[SP_SCAN_META] <= SP_SCAN_USAGE_MAX);
    FUZZ_CHECK(whole.len[SP_SCAN_MODEL] <= SP_SCAN_MODEL_MAX);

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        memset(&info, 0, sizeof(info));
        rc = sp_scan_result(&whole, (sp_provider_e) p, &info);

        FUZZ_CHECK((rc == SP_OK) == (info.has_usage != 0));
        FUZZ_CHECK(strlen(info.model) < sizeof(info.model));
        FUZZ_CHECK(info.usage.input_tokens >= 0);
        FUZZ_CHECK(info.usage.output_tokens >= 0);
        FUZZ_CHECK(info.output_bytes == whole.text_bytes);
    }

    if (fuzz_has_plain_usage(copy, size)) {
        FUZZ_CHECK(whole.len[SP_SCAN_USAGE] > 0);
    }

    free(copy);

    return 0;
}
