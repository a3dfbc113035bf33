/*
 * libspendpol sp_hash64: pinned values, since snapshot files written by
 * one build are read by another.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "spendpol.h"


static void
test_hash64_values_are_pinned(void **state)
{
    static const struct {
        const char  *in;
        uint64_t     seed0;
        uint64_t     seed42;
    } pinned[] = {
        { "", 0x0000000000000000ULL, 0xa759ea27d4727622ULL },
        { "a", 0x34e87cbaa124bfffULL, 0xd90b97393a394df5ULL },
        { "abc", 0x2fc094f1a382fe61ULL, 0x0f44e13014af424cULL },
        { "abcdefgh", 0x82ec9b985aefc4c9ULL, 0x6270381d23f04b7dULL },
        { "abcdefghi", 0x51b1712cc1cf1890ULL, 0x84dbd407e0e3c15cULL },
        { "0123456789abcdef0123", 0xa8fd0e76d2c58980ULL,
          0xc46135b276cf3c3cULL },
    };
    size_t  i, n;

    (void) state;

    for (i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++) {
        n = strlen(pinned[i].in);
        assert_true(sp_hash64(pinned[i].in, n, 0) == pinned[i].seed0);
        assert_true(sp_hash64(pinned[i].in, n, 42) == pinned[i].seed42);
    }
}


static void
test_hash64_depends_on_length_seed_and_every_byte(void **state)
{
    uint8_t   buf[40];
    uint64_t  h;
    size_t    len, i;

    (void) state;

    memset(buf, 0, sizeof(buf));

    /* trailing zero bytes still change the hash */
    for (len = 1; len < sizeof(buf); len++) {
        assert_true(sp_hash64(buf, len, 0) != sp_hash64(buf, len - 1, 0));
    }

    for (len = 1; len <= sizeof(buf); len++) {
        h = sp_hash64(buf, len, 7);
        assert_true(h != sp_hash64(buf, len, 8));

        for (i = 0; i < len; i++) {
            buf[i] ^= 0x01;
            assert_true(sp_hash64(buf, len, 7) != h);
            buf[i] ^= 0x01;
        }
    }
}


static void
test_hash64_reads_unaligned_input(void **state)
{
    uint8_t  buf[64];
    size_t   i;

    (void) state;

    for (i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t) (i * 7);
    }

    for (i = 1; i < 8; i++) {
        uint8_t  copy[40];

        memcpy(copy, buf + i, 32);
        assert_true(sp_hash64(buf + i, 32, 1) == sp_hash64(copy, 32, 1));
    }
}


static void
test_hash_in_steps_equals_hash_at_once(void **state)
{
    uint8_t          data[1000];
    size_t           len, step, off, n;
    sp_hash_state_t  st;

    (void) state;

    for (len = 0; len < sizeof(data); len++) {
        data[len] = (uint8_t) (len * 131 + 7);
    }

    for (len = 0; len <= 200; len += 1) {
        for (step = 8; step <= 64; step += 8) {
            sp_hash64_begin(&st, len, 42);

            for (off = 0; off < len; off += n) {
                n = len - off < step ? len - off : step;
                sp_hash64_update(&st, data + off, n);
            }

            assert_true(sp_hash64_end(&st) == sp_hash64(data, len, 42));
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_hash_in_steps_equals_hash_at_once),
        cmocka_unit_test(test_hash64_values_are_pinned),
        cmocka_unit_test(test_hash64_depends_on_length_seed_and_every_byte),
        cmocka_unit_test(test_hash64_reads_unaligned_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
