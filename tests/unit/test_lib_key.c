/*
 * libspendpol keys: generation, shape check, SHA-256 hashing, hex.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "spendpol.h"


static void
test_key_generate_is_wellformed_and_terminated(void **state)
{
    char  key[SP_KEY_LEN + 2];

    (void) state;

    memset(key, 'X', sizeof(key));
    assert_int_equal(sp_key_generate(key), SP_OK);
    assert_int_equal(key[SP_KEY_LEN], '\0');
    assert_int_equal(key[SP_KEY_LEN + 1], 'X');
    assert_int_equal(strlen(key), SP_KEY_LEN);
    assert_memory_equal(key, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN);
    assert_true(sp_key_is_wellformed(key, strlen(key)));
}


static int
cmp_keys(const void *a, const void *b)
{
    return strcmp(a, b);
}


static void
test_key_generate_is_unique(void **state)
{
    enum { N = 2000 };
    char  (*keys)[SP_KEY_LEN + 1];
    int    i;

    (void) state;

    keys = malloc(N * sizeof(*keys));
    assert_non_null(keys);

    for (i = 0; i < N; i++) {
        assert_int_equal(sp_key_generate(keys[i]), SP_OK);
    }

    qsort(keys, N, sizeof(*keys), cmp_keys);

    for (i = 1; i < N; i++) {
        assert_string_not_equal(keys[i - 1], keys[i]);
    }

    free(keys);
}


static void
test_key_wellformed_rejects_bad_shapes(void **state)
{
    char  key[SP_KEY_LEN + 2];

    (void) state;

    memcpy(key, "sp_key_", 7);
    memset(key + 7, 'a', SP_KEY_LEN - 7);
    key[SP_KEY_LEN] = '\0';

    assert_true(sp_key_is_wellformed(key, SP_KEY_LEN));
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN - 1));
    assert_false(sp_key_is_wellformed(key, 0));
    assert_false(sp_key_is_wellformed("sp_key_", 7));

    key[SP_KEY_LEN] = 'a';
    key[SP_KEY_LEN + 1] = '\0';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN + 1));
    key[SP_KEY_LEN] = '\0';

    /* uppercase hex, non-hex, NUL inside */
    key[20] = 'A';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN));
    key[20] = 'g';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN));
    key[20] = '\0';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN));
    key[20] = '9';
    assert_true(sp_key_is_wellformed(key, SP_KEY_LEN));

    /* wrong prefix */
    key[0] = 'S';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN));
    key[0] = 's';
    key[6] = '-';
    assert_false(sp_key_is_wellformed(key, SP_KEY_LEN));
}


static void
test_key_hash_is_sha256(void **state)
{
    uint8_t  hash[SP_KEY_HASH_LEN];
    char     hex[2 * SP_KEY_HASH_LEN + 1];

    (void) state;

    sp_key_hash("abc", 3, hash);
    sp_hex_encode(hash, sizeof(hash), hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
                             "b00361a396177a9cb410ff61f20015ad");

    sp_key_hash("", 0, hash);
    sp_hex_encode(hash, sizeof(hash), hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                             "27ae41e4649b934ca495991b7852b855");
}


static void
test_hex_encode_decode_round_trip(void **state)
{
    uint8_t  in[256], out[256];
    char     hex[513];
    int      i;

    (void) state;

    for (i = 0; i < 256; i++) {
        in[i] = (uint8_t) i;
    }

    sp_hex_encode(in, sizeof(in), hex);
    assert_int_equal(strlen(hex), 512);
    assert_memory_equal(hex, "000102", 6);
    assert_memory_equal(hex + 506, "fdfeff", 6);

    assert_int_equal(sp_hex_decode(hex, 512, out, sizeof(out)), SP_OK);
    assert_memory_equal(in, out, sizeof(in));

    sp_hex_encode(in, 0, hex);
    assert_string_equal(hex, "");
}


static void
test_hex_decode_accepts_uppercase(void **state)
{
    uint8_t  out[2];

    (void) state;

    assert_int_equal(sp_hex_decode("ABcd", 4, out, 2), SP_OK);
    assert_int_equal(out[0], 0xab);
    assert_int_equal(out[1], 0xcd);
}


static void
test_hex_decode_rejects_bad_input(void **state)
{
    static const char  *bad[] = {
        "0g", "g0", "x1", " 1", "1 ", "-1", "0:", "@0", "`a", "G0", "\x01" "0",
        "\xc1" "0", NULL
    };
    uint8_t             out[4];
    int                 i;

    (void) state;

    for (i = 0; bad[i]; i++) {
        if (sp_hex_decode(bad[i], 2, out, 1) != SP_ERROR) {
            fail_msg("\"%s\" decoded", bad[i]);
        }
    }

    /* length must be exactly twice outlen */
    assert_int_equal(sp_hex_decode("abc", 3, out, 1), SP_ERROR);
    assert_int_equal(sp_hex_decode("abc", 3, out, 2), SP_ERROR);
    assert_int_equal(sp_hex_decode("ab", 2, out, 2), SP_ERROR);
    assert_int_equal(sp_hex_decode("abcdef", 6, out, 2), SP_ERROR);
    assert_int_equal(sp_hex_decode("", 0, out, 0), SP_OK);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_key_generate_is_wellformed_and_terminated),
        cmocka_unit_test(test_key_generate_is_unique),
        cmocka_unit_test(test_key_wellformed_rejects_bad_shapes),
        cmocka_unit_test(test_key_hash_is_sha256),
        cmocka_unit_test(test_hex_encode_decode_round_trip),
        cmocka_unit_test(test_hex_decode_accepts_uppercase),
        cmocka_unit_test(test_hex_decode_rejects_bad_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
