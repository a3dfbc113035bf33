/*
 * Request bodies, the scanner against jansson: sp_request_parse (the
 * validating scanner, jansson only for what it declines) must answer
 * exactly as sp_request_parse_tree (jansson alone) for any bytes: the
 * same result, the same fields, the same message for the client. What
 * the scanner accepts jansson accepts too, and the tape it writes is
 * well formed: every subtree ends inside the tape, after its start.
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_scan.h"
#include "sp_usage.h"


static void
fuzz_check_tape(const sp_json_tape_t *tape)
{
    size_t                  i, k, members;
    const sp_json_token_t  *t;

    t = tape->token;

    FUZZ_CHECK(tape->n > 0 && t[0].end == tape->n);

    for (i = 0; i < tape->n; i++) {
        FUZZ_CHECK(t[i].end > i && t[i].end <= tape->n);

        if (t[i].type != SP_JSON_OBJECT && t[i].type != SP_JSON_ARRAY) {
            FUZZ_CHECK(t[i].end == i + 1);
            continue;
        }

        members = 0;

        for (k = i + 1; k < t[i].end; k = t[k].end) {
            if (t[i].type == SP_JSON_OBJECT) {
                FUZZ_CHECK(t[k].type == SP_JSON_STRING);
                k++;
                FUZZ_CHECK(k < t[i].end);
            }

            members++;
        }

        FUZZ_CHECK(k == t[i].end);
        FUZZ_CHECK((int64_t) members == t[i].value);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 rc, rc_tree;
    char               *body, err[512], err_tree[512];
    json_t             *root;
    json_error_t        jerr;
    sp_json_tape_t      tape;
    sp_request_info_t   info, info_tree;

    /* an exact-size copy: a read past the end is caught */
    body = malloc(size ? size : 1);
    if (body == NULL) {
        return 0;
    }

    memcpy(body, data, size);

    sp_json_tape_init(&tape);

    if (sp_json_scan(&tape, body, size) == SP_OK) {
        fuzz_check_tape(&tape);

        root = json_loadb(body, size, JSON_REJECT_DUPLICATES
                                      | JSON_ALLOW_NUL, &jerr);
        FUZZ_CHECK(root != NULL);
        json_decref(root);
    }

    sp_json_tape_free(&tape);

    err[0] = '\0';
    err_tree[0] = '\0';

    rc = sp_request_parse(SP_PROVIDER_OPENAI, body, size, &info, err,
                          sizeof(err));
    rc_tree = sp_request_parse_tree(SP_PROVIDER_OPENAI, body, size,
                                    &info_tree, err_tree, sizeof(err_tree));

    FUZZ_CHECK(rc == rc_tree);
    FUZZ_CHECK(strcmp(err, err_tree) == 0);

    if (rc == SP_OK) {
        FUZZ_CHECK(memcmp(&info, &info_tree, sizeof(info)) == 0);

    } else {
        FUZZ_CHECK(info.error_code != NULL
                   && strcmp(info.error_code, info_tree.error_code) == 0);
    }

    free(body);

    return 0;
}
