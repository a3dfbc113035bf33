/*
 * Keys: sp_key_is_wellformed, sp_hex_decode (and sp_hex_encode back),
 * sp_key_hash, sp_provider_from_name.
 *
 * Input: a presented key, as in "Authorization: Bearer <key>".
 */

#include <ctype.h>

#include "fuzz_common.h"
#include "sp_usage.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t        hash[SP_KEY_HASH_LEN], raw[SP_KEY_RANDOM_BYTES];
    uint8_t       *out;
    char          *s, *hex;
    size_t         i, half;
    sp_provider_e  p;

    s = (char *) fuzz_dup(data, size);

    if (sp_key_is_wellformed(s, size)) {
        FUZZ_CHECK(size == SP_KEY_LEN);
        FUZZ_CHECK(memcmp(s, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN) == 0);
        FUZZ_CHECK(sp_hex_decode(s + SP_KEY_PREFIX_LEN,
                                 size - SP_KEY_PREFIX_LEN, raw, sizeof(raw))
                   == SP_OK);

        /* a well-formed key is lowercase hex: it encodes back the same */
        hex = malloc(2 * sizeof(raw) + 1);
        FUZZ_CHECK(hex != NULL);
        sp_hex_encode(raw, sizeof(raw), hex);
        FUZZ_CHECK(memcmp(hex, s + SP_KEY_PREFIX_LEN, 2 * sizeof(raw)) == 0);
        free(hex);
    }

    sp_key_hash(s, size, hash);

    /* any length: only exactly 2 * outlen hex characters decode */
    half = size / 2;
    out = malloc(half ? half : 1);
    FUZZ_CHECK(out != NULL);

    if (sp_hex_decode(s, size, out, half) == SP_OK) {
        FUZZ_CHECK(size % 2 == 0);

        hex = malloc(size + 1);
        FUZZ_CHECK(hex != NULL);
        sp_hex_encode(out, half, hex);

        for (i = 0; i < size; i++) {
            FUZZ_CHECK(hex[i] == tolower((unsigned char) s[i]));
        }

        FUZZ_CHECK(hex[size] == '\0');
        free(hex);
    }

    /* a wrong output size is refused, not overrun */
    if (half > 0) {
        FUZZ_CHECK(sp_hex_decode(s, size, out, half - 1) == SP_ERROR);
    }

    free(out);

    p = sp_provider_from_name(s, size);
    FUZZ_CHECK(p == SP_PROVIDER_UNKNOWN
               || (strlen(sp_provider_name(p)) == size
                   && memcmp(sp_provider_name(p), s, size) == 0));

    free(s);

    return 0;
}
