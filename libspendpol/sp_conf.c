/*
 * What validating and compiling JSON configuration shares (sp_conf.h).
 */

#include <stdio.h>
#include <stdlib.h>

#include "sp_conf.h"


const char *
sp_conf_kind(const json_t *v)
{
    if (v == NULL) {
        return "nothing";
    }

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}


int
sp_conf_vfail(char *field, size_t fieldlen, char *err, size_t errlen,
    const char *path, const char *fmt, va_list args)
{
    if (field != NULL && fieldlen > 0) {
        snprintf(field, fieldlen, "%s", path);
    }

    if (err != NULL && errlen > 0) {
        vsnprintf(err, errlen, fmt, args);
    }

    return SP_ERROR;
}


int
sp_conf_grow(void **pool, size_t *cap, size_t n, size_t size)
{
    void    *p;
    size_t   ncap;

    if (n < *cap) {
        return SP_OK;
    }

    ncap = *cap ? *cap * 2 : 8;

    p = realloc(*pool, ncap * size);
    if (p == NULL) {
        return SP_ERROR;
    }

    *pool = p;
    *cap = ncap;

    return SP_OK;
}


int
sp_conf_store(char **strings, size_t *used, size_t *cap, const char *s,
    size_t len, uint32_t *off)
{
    char    *p;
    size_t   ncap;

    if (*used + len > *cap) {
        ncap = *cap ? *cap * 2 : 1024;

        while (ncap < *used + len) {
            ncap *= 2;
        }

        if (ncap > UINT32_MAX) {
            return SP_ERROR;
        }

        p = realloc(*strings, ncap);
        if (p == NULL) {
            return SP_ERROR;
        }

        *strings = p;
        *cap = ncap;
    }

    memcpy(*strings + *used, s, len);
    *off = (uint32_t) *used;
    *used += len;

    return SP_OK;
}
