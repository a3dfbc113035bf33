/*
 * A 64-bit hash for snapshot tables and checksums: 8 bytes per step,
 * multiply-xorshift mixing. Not cryptographic; the snapshot checksum
 * detects torn and corrupted files, not forgeries (the file is written
 * only by controld).
 */

#include <string.h>

#include "spendpol.h"


#define SP_HASH_M1  0x9e3779b97f4a7c15ULL
#define SP_HASH_M2  0xbf58476d1ce4e5b9ULL
#define SP_HASH_M3  0x94d049bb133111ebULL


static uint64_t
sp_hash_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= SP_HASH_M2;
    x ^= x >> 27;
    x *= SP_HASH_M3;
    x ^= x >> 31;

    return x;
}


uint64_t
sp_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t  *p;
    uint64_t        h, word;
    size_t          i;

    p = data;
    h = seed ^ (len * SP_HASH_M1);

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&word, p + i, 8);
        h = sp_hash_mix(h ^ word) + SP_HASH_M1;
    }

    word = 0;

    if (len > i) {
        memcpy(&word, p + i, len - i);
    }

    h = sp_hash_mix(h ^ word ^ ((uint64_t) (len - i) << 56));

    return h;
}


void
sp_hash64_begin(sp_hash_state_t *st, size_t len, uint64_t seed)
{
    st->h = seed ^ (len * SP_HASH_M1);
    st->len = len;
    st->done = 0;
    st->tail = 0;
    st->tail_len = 0;
}


void
sp_hash64_update(sp_hash_state_t *st, const void *data, size_t len)
{
    const uint8_t  *p;
    uint64_t        word;
    size_t          i;

    p = data;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&word, p + i, 8);
        st->h = sp_hash_mix(st->h ^ word) + SP_HASH_M1;
    }

    /* only the last piece may end with a partial word */
    if (len > i) {
        st->tail = 0;
        memcpy(&st->tail, p + i, len - i);
        st->tail_len = len - i;
    }

    st->done += len;
}


uint64_t
sp_hash64_end(sp_hash_state_t *st)
{
    return sp_hash_mix(st->h ^ st->tail ^ ((uint64_t) st->tail_len << 56));
}
