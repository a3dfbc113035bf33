/* controld AES-256-GCM sealing of provider keys, and the master key file */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "controld.h"
#include "crypto.h"


static const uint8_t  key[CD_MASTER_KEY_LEN] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32
};


static void
test_aead_round_trip(void **state)
{
    const char  *secret = "sk-proj-abcdefghijklmnopqrstuvwxyz";
    uint8_t      sealed[128], plain[128];
    size_t       sealed_len, plain_len;

    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) secret,
                                     strlen(secret), "org_a/openai", sealed,
                                     &sealed_len), CD_OK);
    assert_int_equal(sealed_len, strlen(secret) + CD_AEAD_OVERHEAD);
    assert_null(memmem(sealed, sealed_len, secret, strlen(secret)));

    assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len, "org_a/openai",
                                     plain, &plain_len), CD_OK);
    assert_int_equal(plain_len, strlen(secret));
    assert_memory_equal(plain, secret, plain_len);
}


static void
test_aead_empty_plaintext_round_trips(void **state)
{
    uint8_t  sealed[64], plain[8];
    size_t   sealed_len, plain_len;

    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) "", 0, NULL,
                                     sealed, &sealed_len), CD_OK);
    assert_int_equal(sealed_len, CD_AEAD_OVERHEAD);
    assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len, NULL, plain,
                                     &plain_len), CD_OK);
    assert_int_equal(plain_len, 0);
}


static void
test_aead_nonce_is_fresh_each_time(void **state)
{
    uint8_t  a[64], b[64];
    size_t   alen, blen;

    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) "same", 4, "x",
                                     a, &alen), CD_OK);
    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) "same", 4, "x",
                                     b, &blen), CD_OK);
    assert_memory_not_equal(a, b, CD_AEAD_NONCE_LEN);
}


static void
test_aead_any_flipped_byte_is_refused(void **state)
{
    uint8_t  sealed[64], plain[64];
    size_t   sealed_len, plain_len, i;

    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) "secret", 6,
                                     "org/openai", sealed, &sealed_len),
                     CD_OK);

    for (i = 0; i < sealed_len; i++) {
        sealed[i] ^= 0x01;
        assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len,
                                         "org/openai", plain, &plain_len),
                         CD_ERROR);
        sealed[i] ^= 0x01;
    }

    assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len, "org/openai",
                                     plain, &plain_len), CD_OK);
}


static void
test_aead_other_row_or_key_is_refused(void **state)
{
    uint8_t  sealed[64], plain[64], other[CD_MASTER_KEY_LEN];
    size_t   sealed_len, plain_len;

    assert_int_equal(cd_aead_encrypt(key, (const uint8_t *) "secret", 6,
                                     "org_a/openai", sealed, &sealed_len),
                     CD_OK);

    /* a ciphertext copied to another org's row does not decrypt */
    assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len, "org_b/openai",
                                     plain, &plain_len), CD_ERROR);

    memcpy(other, key, sizeof(other));
    other[0] ^= 0x80;
    assert_int_equal(cd_aead_decrypt(other, sealed, sealed_len,
                                     "org_a/openai", plain, &plain_len),
                     CD_ERROR);

    /* truncated below nonce + tag */
    assert_int_equal(cd_aead_decrypt(key, sealed, CD_AEAD_OVERHEAD - 1,
                                     "org_a/openai", plain, &plain_len),
                     CD_ERROR);
    assert_int_equal(cd_aead_decrypt(key, sealed, sealed_len - 1,
                                     "org_a/openai", plain, &plain_len),
                     CD_ERROR);
}


static void
test_master_key_file_is_created_once_with_mode_0600(void **state)
{
    char         dir[] = "/tmp/cd_test_XXXXXX", path[256];
    uint8_t      first[CD_MASTER_KEY_LEN], second[CD_MASTER_KEY_LEN];
    char         err[256];
    struct stat  st;
    cd_config_t  cf;

    assert_non_null(mkdtemp(dir));
    memset(&cf, 0, sizeof(cf));
    cf.data_dir = dir;

    assert_int_equal(cd_master_key_load(&cf, first, err, sizeof(err)),
                     CD_OK);
    snprintf(path, sizeof(path), "%s/master.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 65);

    assert_int_equal(cd_master_key_load(&cf, second, err, sizeof(err)),
                     CD_OK);
    assert_memory_equal(first, second, sizeof(first));

    unlink(path);
    rmdir(dir);
}


static void
test_master_key_from_environment_wins(void **state)
{
    uint8_t      out[CD_MASTER_KEY_LEN];
    char         err[256];
    cd_config_t  cf;

    memset(&cf, 0, sizeof(cf));
    cf.data_dir = "/nonexistent";
    cf.master_key_hex = "000102030405060708090a0b0c0d0e0f"
                        "101112131415161718191a1b1c1d1e1f";

    assert_int_equal(cd_master_key_load(&cf, out, err, sizeof(err)), CD_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[31], 0x1f);
}


static void
test_random_ids_have_prefix_and_hex(void **state)
{
    char  a[CD_ID_MAX], b[CD_ID_MAX];

    assert_int_equal(cd_random_id("key_", 12, a), CD_OK);
    assert_int_equal(cd_random_id("key_", 12, b), CD_OK);
    assert_true(sp_id_valid(SP_ID_KEY, a, strlen(a)));
    assert_string_not_equal(a, b);
    assert_int_equal(cd_random_id("x", 40, a), CD_ERROR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_aead_round_trip),
        cmocka_unit_test(test_aead_empty_plaintext_round_trips),
        cmocka_unit_test(test_aead_nonce_is_fresh_each_time),
        cmocka_unit_test(test_aead_any_flipped_byte_is_refused),
        cmocka_unit_test(test_aead_other_row_or_key_is_refused),
        cmocka_unit_test(test_master_key_file_is_created_once_with_mode_0600),
        cmocka_unit_test(test_master_key_from_environment_wins),
        cmocka_unit_test(test_random_ids_have_prefix_and_hex),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
