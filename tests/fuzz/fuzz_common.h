/*
 * Helpers shared by the libFuzzer targets.
 *
 * A target checks invariants with FUZZ_CHECK: a violation aborts, which
 * libFuzzer reports as a crash and saves the input, like any sanitizer
 * finding.
 */

#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)


/* a small deterministic generator for split points and sizes */
static inline uint64_t
fuzz_next(uint64_t *state)
{
    uint64_t  x;

    x = *state ? *state : 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;

    return x;
}


/*
 * A copy of data in its own malloc()ed buffer of exactly len bytes: the
 * library sees 8-byte-aligned memory (as from mmap) and ASan catches a
 * read one past the end.
 */
static inline uint8_t *
fuzz_dup(const uint8_t *data, size_t len)
{
    uint8_t  *p;

    p = malloc(len ? len : 1);
    FUZZ_CHECK(p != NULL);

    if (len) {
        memcpy(p, data, len);
    }

    return p;
}


/* reads every byte of a buffer so that ASan checks the whole range */
static inline unsigned
fuzz_touch(const void *data, size_t len)
{
    const volatile unsigned char  *p;
    unsigned                       sum;
    size_t                         i;

    p = data;
    sum = 0;

    for (i = 0; i < len; i++) {
        sum += p[i];
    }

    return sum;
}


#endif /* FUZZ_COMMON_H */
