/*
 * Spendpol keys: generation, shape check and hashing.
 */

#include <string.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "spendpol.h"


static const char  sp_hex_digits[] = "0123456789abcdef";


int
sp_key_generate(char *out)
{
    uint8_t  random[SP_KEY_RANDOM_BYTES];

    if (RAND_bytes(random, sizeof(random)) != 1) {
        return SP_ERROR;
    }

    memcpy(out, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN);
    sp_hex_encode(random, sizeof(random), out + SP_KEY_PREFIX_LEN);

    return SP_OK;
}


int
sp_key_is_wellformed(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len != SP_KEY_LEN
        || memcmp(s, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN) != 0)
    {
        return 0;
    }

    for (i = SP_KEY_PREFIX_LEN; i < len; i++) {
        c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


void
sp_key_hash(const char *key, size_t len, uint8_t *hash)
{
    SHA256((const unsigned char *) key, len, hash);
}


void
sp_hex_encode(const uint8_t *in, size_t len, char *out)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        out[2 * i] = sp_hex_digits[in[i] >> 4];
        out[2 * i + 1] = sp_hex_digits[in[i] & 0x0f];
    }

    out[2 * len] = '\0';
}


int
sp_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


int
sp_hex_decode(const char *in, size_t inlen, uint8_t *out, size_t outlen)
{
    size_t  i;
    int     hi, lo;

    if (inlen != 2 * outlen) {
        return SP_ERROR;
    }

    for (i = 0; i < outlen; i++) {
        hi = sp_hex_digit((unsigned char) in[2 * i]);
        lo = sp_hex_digit((unsigned char) in[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return SP_ERROR;
        }

        out[i] = (uint8_t) (hi << 4 | lo);
    }

    return SP_OK;
}
