/*
 * Cache keys, sp_cache_key against jansson:
 *
 *   - it accepts exactly what jansson accepts (any JSON value, duplicates
 *     refused, NUL allowed in strings), except where jansson is stricter
 *     on purpose: numbers outside int64 or double, twin names spelled
 *     differently (sp_cache.c compares names as spelled), and where it
 *     is laxer by accident (a raw NUL after a number);
 *   - the canonical text it hashed (found in its scratch, after the
 *     header, and checked against the key) is JSON that jansson reads as
 *     the body's value without the top-level user, stream_options and
 *     metadata; and it is a fixed point: its own key is the body's key;
 *   - the semantic group's key (SP_CACHE_KEY_NO_PROMPT) of a body is
 *     never its exact key;
 *   - a body wrapped in whitespace has the same key; scratch one byte
 *     short is refused; the body is read within its length only (an
 *     exact-size copy).
 */

#include <jansson.h>
#include <openssl/sha.h>

#include "fuzz_common.h"
#include "sp_cache.h"


#define FUZZ_PREFIX  "spendpol-cache-v1"


static int
fuzz_key(const char *body, size_t len, unsigned flags, uint8_t *key,
    char **scratch_out, size_t *scratch_len)
{
    int                 rc;
    char               *scratch, err[256];
    size_t              need;
    sp_cache_key_in_t   in;

    memset(&in, 0, sizeof(sp_cache_key_in_t));
    in.org_id = sp_str_from("org_fuzz");
    in.scope = SP_CACHE_SCOPE_PROJECT;
    in.scope_value = sp_str_from("p");
    in.provider = sp_str_from("openai");
    in.endpoint = sp_str_from("POST /chat/completions");
    in.body = body;
    in.body_len = len;
    in.flags = flags;

    need = sp_cache_key_scratch(len);
    scratch = calloc(1, need);
    FUZZ_CHECK(scratch != NULL);

    err[0] = '\0';
    rc = sp_cache_key(&in, scratch, need, key, err, sizeof(err));
    FUZZ_CHECK(rc == SP_OK || err[0] != '\0');

    if (scratch_out != NULL) {
        *scratch_out = scratch;
        *scratch_len = need;

    } else {
        free(scratch);
    }

    return rc;
}


/*
 * The canonical text in scratch: after a copy of the header whose hash
 * with what follows is the key. NULL when not found.
 */
static const char *
fuzz_canonical(const char *scratch, size_t len, const uint8_t *key,
    size_t *canonical_len)
{
    size_t         header_len, at, n;
    uint8_t        hash[SHA256_DIGEST_LENGTH];
    json_t        *v;
    json_error_t   jerr;
    const char    *p, *text;

    header_len = strlen(FUZZ_PREFIX) + 5 * 4 + strlen("org_fuzz") + 1
                 + strlen("openai") + strlen("POST /chat/completions");

    for (at = 0; at + header_len < len; at = (size_t) (p - scratch) + 1) {
        p = memmem(scratch + at, len - at, FUZZ_PREFIX,
                   strlen(FUZZ_PREFIX));

        if (p == NULL || (size_t) (p - scratch) + header_len >= len) {
            return NULL;
        }

        text = p + header_len;
        v = json_loadb(text, len - (size_t) (text - scratch),
                       JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK
                       | JSON_ALLOW_NUL, &jerr);

        if (v == NULL) {
            continue;
        }

        json_decref(v);

        /* the bytes read, or one fewer: a number's end was peeked at */
        for (n = 0; n < 2 && (size_t) jerr.position >= n; n++) {
            *canonical_len = (size_t) jerr.position - n;
            SHA256((const unsigned char *) p, header_len + *canonical_len,
                   hash);

            if (memcmp(hash, key, SP_CACHE_KEY_LEN) == 0) {
                return text;
            }
        }
    }

    return NULL;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             rc, rc2;
    char           *body, *wrapped, *scratch, err[256];
    size_t          scratch_len, canonical_len;
    uint8_t         key[SP_CACHE_KEY_LEN], key2[SP_CACHE_KEY_LEN];
    json_t         *root, *canonical_root;
    json_error_t    jerr;
    const char     *canonical;
    sp_cache_key_in_t  in;

    body = (char *) fuzz_dup(data, size);

    rc = fuzz_key(body, size, 0, key, &scratch, &scratch_len);

    root = json_loadb(body, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES
                                  | JSON_ALLOW_NUL, &jerr);

    /*
     * jansson 2.14 swallows one raw NUL byte right after a number or a
     * literal ("[1\0]"); sp_cache_key refuses a raw NUL anywhere (such a
     * body is not cached, which is safe).
     */
    if (root != NULL && memchr(body, '\0', size) != NULL) {
        FUZZ_CHECK(rc == SP_ERROR);
        json_decref(root);
        root = NULL;

    } else if (root != NULL) {
        FUZZ_CHECK(rc == SP_OK);

    } else if (rc == SP_OK) {
        FUZZ_CHECK(json_error_code(&jerr) == json_error_numeric_overflow
                   || json_error_code(&jerr) == json_error_duplicate_key);
    }

    /* found with jansson's help: only for what jansson reads */
    if (rc == SP_OK && root != NULL) {
        canonical = fuzz_canonical(scratch, scratch_len, key,
                                   &canonical_len);
        FUZZ_CHECK(canonical != NULL);
        FUZZ_CHECK(canonical_len <= size);

        if (json_is_object(root)) {
            json_object_del(root, "user");
            json_object_del(root, "stream_options");
            json_object_del(root, "metadata");
        }

        canonical_root = json_loadb(canonical, canonical_len,
                                    JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        FUZZ_CHECK(canonical_root != NULL);
        FUZZ_CHECK(json_equal(root, canonical_root));
        json_decref(canonical_root);

        /* a fixed point: nothing left to remove or sort */
        wrapped = (char *) fuzz_dup((const uint8_t *) canonical,
                                    canonical_len);
        rc2 = fuzz_key(wrapped, canonical_len, 0, key2, NULL, NULL);
        FUZZ_CHECK(rc2 == SP_OK);
        FUZZ_CHECK(memcmp(key, key2, SP_CACHE_KEY_LEN) == 0);
        free(wrapped);
    }

    /* a semantic group's key is never an exact key */
    rc2 = fuzz_key(body, size, SP_CACHE_KEY_NO_PROMPT, key2, NULL, NULL);

    if (rc == SP_OK && rc2 == SP_OK) {
        FUZZ_CHECK(memcmp(key, key2, SP_CACHE_KEY_LEN) != 0);
    }

    if (rc == SP_OK) {
        /* whitespace around the value changes nothing */
        wrapped = malloc(size + 4);
        FUZZ_CHECK(wrapped != NULL);
        memcpy(wrapped, " \n", 2);
        memcpy(wrapped + 2, body, size);
        memcpy(wrapped + 2 + size, "\t\r", 2);
        rc2 = fuzz_key(wrapped, size + 4, 0, key2, NULL, NULL);
        FUZZ_CHECK(rc2 == SP_OK);
        FUZZ_CHECK(memcmp(key, key2, SP_CACHE_KEY_LEN) == 0);
        free(wrapped);
    }

    /* one byte short of the scratch it asks for */
    memset(&in, 0, sizeof(sp_cache_key_in_t));
    in.body = body;
    in.body_len = size;
    FUZZ_CHECK(sp_cache_key(&in, scratch, scratch_len - 1, key2, err,
                            sizeof(err))
               == SP_ERROR);

    if (root != NULL) {
        json_decref(root);
    }

    free(scratch);
    free(body);

    return 0;
}
