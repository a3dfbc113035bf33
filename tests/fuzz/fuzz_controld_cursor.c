/*
 * List cursors (?cursor= of every paged list): cd_cursor_decode takes
 * any string a client sends. What it accepts holds an id of 1 to
 * CD_ID_MAX - 1 bytes of [A-Za-z0-9_-] that fits the caller's room (a
 * room of exactly that size, so ASan sees a write past it); the pair
 * encodes to a cursor of base64url characters without padding, at most
 * CD_CURSOR_MAX long, that decodes to the same pair. The other way: any
 * (microseconds, id) from the input's bytes encodes, and decodes back to
 * itself exactly when the id is one a cursor may hold.
 *
 * Input: a cursor (cut at the first NUL byte). Its first 8 bytes are
 * also microseconds, the rest an id.
 */

#include <ctype.h>

#include "fuzz_common.h"
#include "controld.h"


static int
fuzz_id_ok(const char *id)
{
    size_t  len;

    len = strlen(id);

    if (len == 0 || len >= CD_ID_MAX) {
        return 0;
    }

    for ( ; *id != '\0'; id++) {
        if (!isalnum((unsigned char) *id) && *id != '_' && *id != '-') {
            return 0;
        }
    }

    return 1;
}


static void
fuzz_cursor_chars(const char *cursor)
{
    FUZZ_CHECK(strlen(cursor) <= CD_CURSOR_MAX);
    FUZZ_CHECK(strspn(cursor, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqr"
                              "stuvwxyz0123456789-_") == strlen(cursor));
}


/* encodes (us, id); if id may be in a cursor, it decodes to the same */
static void
fuzz_encode(int64_t us, const char *id)
{
    char     cursor[CD_CURSOR_MAX + 1], back[CD_ID_MAX];
    int64_t  us2;
    int      rc;

    rc = cd_cursor_encode(us, id, cursor, sizeof(cursor));

    if (rc != CD_OK) {
        /* only an id too long for any cursor is refused */
        FUZZ_CHECK(strlen(id) > 70);
        return;
    }

    fuzz_cursor_chars(cursor);

    rc = cd_cursor_decode(cursor, &us2, back, sizeof(back));
    FUZZ_CHECK((rc == CD_OK) == fuzz_id_ok(id));

    if (rc == CD_OK) {
        FUZZ_CHECK(us2 == us);
        FUZZ_CHECK(strcmp(back, id) == 0);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char     *s, *id, *small, again[CD_CURSOR_MAX + 1];
    size_t    room;
    int64_t   us, us2;
    char      id2[CD_ID_MAX];

    s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';

    id = malloc(CD_ID_MAX);
    FUZZ_CHECK(id != NULL);

    if (cd_cursor_decode(s, &us, id, CD_ID_MAX) == CD_OK) {
        FUZZ_CHECK(strlen(s) <= CD_CURSOR_MAX);
        fuzz_cursor_chars(s);
        FUZZ_CHECK(fuzz_id_ok(id));

        FUZZ_CHECK(cd_cursor_encode(us, id, again, sizeof(again)) == CD_OK);
        fuzz_cursor_chars(again);
        FUZZ_CHECK(cd_cursor_decode(again, &us2, id2, sizeof(id2))
                   == CD_OK);
        FUZZ_CHECK(us2 == us && strcmp(id2, id) == 0);

        /* a room of exactly the id, and one byte less */
        room = strlen(id) + 1;
        small = malloc(room);
        FUZZ_CHECK(small != NULL);
        FUZZ_CHECK(cd_cursor_decode(s, &us2, small, room) == CD_OK);
        FUZZ_CHECK(strcmp(small, id) == 0);
        FUZZ_CHECK(cd_cursor_decode(s, &us2, small, room - 1) == CD_ERROR);
        free(small);

        /*
         * a room of exactly the cursor (encode asks for room as if
         * padded, so it may refuse), and one byte short: never overrun
         */
        room = strlen(again) + 1;
        small = malloc(room);
        FUZZ_CHECK(small != NULL);

        if (cd_cursor_encode(us, id, small, room) == CD_OK) {
            FUZZ_CHECK(strcmp(small, again) == 0);
        }

        FUZZ_CHECK(cd_cursor_encode(us, id, small, room - 1) == CD_ERROR);
        free(small);
    }

    if (size >= sizeof(us)) {
        memcpy(&us, data, sizeof(us));
        fuzz_encode(us, s + sizeof(us) <= s + strlen(s)
                        ? s + sizeof(us) : "");
    }

    fuzz_encode(INT64_MIN, "a");
    fuzz_encode(INT64_MAX, "key_000000000000000000000000");

    free(id);
    free(s);

    return 0;
}
