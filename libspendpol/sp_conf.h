/*
 * What validating and compiling an organisation's JSON configuration
 * shares (routing rules, sp_route.c; policies, sp_policy.c): the error
 * that names a member's path, the kind of a value as an error says it,
 * and the growing arrays and string pool a compiled set is built in.
 */

#ifndef SP_CONF_H
#define SP_CONF_H

#include <stdarg.h>
#include <jansson.h>

#include "spendpol.h"


/* "an object", "an array", "a string", ..., "nothing" for NULL */
const char *sp_conf_kind(const json_t *v);

/*
 * Writes path into field and the message into err (each skipped when
 * NULL or of no room). Returns SP_ERROR, for "return sp_conf_fail(...)".
 */
int sp_conf_vfail(char *field, size_t fieldlen, char *err, size_t errlen,
    const char *path, const char *fmt, va_list args);

/*
 * Room for element n of size bytes in *pool (its capacity *cap, doubled
 * from 8). SP_OK, or SP_ERROR when out of memory (nothing changed).
 */
int sp_conf_grow(void **pool, size_t *cap, size_t n, size_t size);

/*
 * Appends len bytes of s to the string pool (*strings, *used, *cap,
 * doubled from 1 KB), *off their offset. SP_OK, or SP_ERROR when out of
 * memory or past 4 GB (nothing changed).
 */
int sp_conf_store(char **strings, size_t *used, size_t *cap, const char *s,
    size_t len, uint32_t *off);


#endif /* SP_CONF_H */
