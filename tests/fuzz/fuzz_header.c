/*
 * Header values: sp_header_value_ok and sp_header_value_escape.
 *
 * Input: a value the gateway might write into a response header, a
 * trailer or the journal (a model name, a provider's id).
 */

#include "fuzz_common.h"
#include "sp_endpoint.h"


static int
fuzz_hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char    *v, *out, *small;
    size_t   i, n, d, need;
    int      ok, plain, hi, lo;

    v = (char *) fuzz_dup(data, size);

    ok = sp_header_value_ok(v, size);
    plain = 1;
    need = 0;

    for (i = 0; i < size; i++) {
        if (data[i] < 0x20 || data[i] == 0x7f) {
            plain = 0;
        }

        need += (data[i] < 0x20 || data[i] == 0x7f || data[i] == '%')
                ? 3 : 1;
    }

    FUZZ_CHECK(ok == plain);

    /* exactly the room it needs: no NUL, nothing past it */
    out = malloc(need ? need : 1);
    FUZZ_CHECK(out != NULL);

    n = sp_header_value_escape(v, size, out, need);
    FUZZ_CHECK(n == need);
    FUZZ_CHECK(sp_header_value_ok(out, n));

    /* the escape decodes back to the value */
    for (i = 0, d = 0; i < n; d++) {
        if (out[i] == '%') {
            FUZZ_CHECK(i + 2 < n);
            hi = fuzz_hex(out[i + 1]);
            lo = fuzz_hex(out[i + 2]);
            FUZZ_CHECK(hi >= 0 && lo >= 0);
            FUZZ_CHECK(d < size && (uint8_t) (hi << 4 | lo) == data[d]);
            i += 3;

        } else {
            FUZZ_CHECK(d < size && (uint8_t) out[i] == data[d]);
            FUZZ_CHECK(out[i] != '%');
            i++;
        }
    }

    FUZZ_CHECK(d == size);

    /* a value without control bytes or '%' is written as it is */
    if (ok && memchr(v, '%', size) == NULL) {
        FUZZ_CHECK(n == size && memcmp(out, v, size) == 0);
    }

    free(out);

    /* one byte too few: 0, and ASan sees any write past the end */
    if (need > 0) {
        small = malloc(need - 1 ? need - 1 : 1);
        FUZZ_CHECK(small != NULL);
        FUZZ_CHECK(sp_header_value_escape(v, size, small, need - 1) == 0);
        free(small);
    }

    free(v);

    return 0;
}
