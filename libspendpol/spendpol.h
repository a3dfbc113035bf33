/*
 * libspendpol: nginx-free C shared by the module and controld.
 *
 * Plain C99 with its own small types. Functions take buffers and return
 * results; nothing here logs, allocates per byte or reads past its input.
 * Every public name starts with sp_ (functions, types) or SP_ (macros).
 */

#ifndef SPENDPOL_H
#define SPENDPOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>


/* A borrowed byte string: not NUL-terminated unless said so. */
typedef struct {
    const char  *data;
    size_t       len;
} sp_str_t;


/* a C string as an sp_str_t (NULL as "") */
static inline sp_str_t
sp_str_from(const char *s)
{
    sp_str_t  str;

    str.data = s ? s : "";
    str.len = strlen(str.data);

    return str;
}


#define SP_OK              0
#define SP_ERROR          -1


/*
 * Writes a reason into err (errlen bytes, NUL-terminated); err may be
 * NULL. The one way libspendpol reports why something was refused.
 */
void sp_errorf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/* ---- keys (sp_key.c) ------------------------------------------------- */

#define SP_KEY_PREFIX          "sp_key_"
#define SP_KEY_PREFIX_LEN      7
/* "sp_key_" + 48 lowercase hex characters (24 random bytes) */
#define SP_KEY_RANDOM_BYTES    24
#define SP_KEY_LEN             (SP_KEY_PREFIX_LEN + 2 * SP_KEY_RANDOM_BYTES)
#define SP_KEY_HASH_LEN        32      /* SHA-256 */

/* scopes of an API key, a bit set */
#define SP_SCOPE_PROXY         0x01u
#define SP_SCOPE_ADMIN         0x02u

/*
 * Writes a fresh key and its terminating NUL into out (SP_KEY_LEN + 1
 * bytes). Uses OpenSSL's RAND_bytes. Returns SP_OK or SP_ERROR.
 */
int sp_key_generate(char *out);

/* 1 when s looks like a Spendpol key (prefix, length, alphabet), else 0 */
int sp_key_is_wellformed(const char *s, size_t len);

/* SHA-256 of the key's bytes into hash[SP_KEY_HASH_LEN] */
void sp_key_hash(const char *key, size_t len, uint8_t *hash);

/* hex of a hash: out must hold 2 * SP_KEY_HASH_LEN + 1 bytes */
void sp_hex_encode(const uint8_t *in, size_t len, char *out);

/* the value of one hex digit (either case), or -1 */
int sp_hex_digit(unsigned char c);

/* returns SP_OK when in is exactly 2 * outlen hex characters */
int sp_hex_decode(const char *in, size_t inlen, uint8_t *out,
    size_t outlen);


/* ---- money (sp_money.c) ---------------------------------------------- */

/*
 * Money is integer nano-USD (1e-9 USD) in int64. Prices are nano-USD per
 * one million tokens, so every public list price is an exact integer.
 */

typedef struct {
    int64_t  input;           /* per 1M uncached input tokens */
    int64_t  output;          /* per 1M output tokens */
    int64_t  cached_input;    /* per 1M cache-read input tokens */
    int64_t  cache_write;     /* per 1M cache-creation input tokens */
} sp_price_t;

typedef struct {
    int64_t  input_tokens;        /* all input tokens, cached included */
    int64_t  output_tokens;
    int64_t  cached_tokens;       /* of input_tokens, read from cache */
    int64_t  cache_write_tokens;  /* of input_tokens, written to cache */
} sp_usage_t;

/*
 * Usage as it is billed and journaled: negative counts become 0, cached
 * tokens at most the input, cache-write tokens at most the rest of it
 * (a provider's report that says otherwise is not trusted further).
 */
void sp_usage_normalize(sp_usage_t *usage);

/*
 * Cost of usage at price, rounded half up to a whole nano-USD. Negative
 * counts are treated as 0; cached and cache-write tokens are clamped to
 * the input tokens. Returns SP_ERROR on overflow, else SP_OK.
 */
int sp_cost_nano(const sp_price_t *price, const sp_usage_t *usage,
    int64_t *cost);

/*
 * Formats nano-USD as a decimal USD string with at least 6 and at most 9
 * decimals ("0.000150", "0.00000015", "-1.500000"). out must hold
 * SP_MONEY_STR_LEN bytes; returns the length written (without NUL).
 */
#define SP_MONEY_STR_LEN  32
size_t sp_money_format(int64_t nano, char *out);

/*
 * Parses a decimal USD string ("1.25", "0.000000150", "3") into nano-USD.
 * At most 9 decimals, optional leading '-'. Returns SP_OK or SP_ERROR.
 */
int sp_money_parse(const char *s, size_t len, int64_t *nano);

/*
 * A JSON number (a double) as the decimal text sp_money_parse() reads:
 * the shortest "%.Nf" (N <= 9) that reads back as exactly v, with at
 * most DBL_DIG significant digits, so it is the text the client wrote
 * (two such decimals never share a double). SP_ERROR: anything longer
 * is ambiguous and refused.
 */
int sp_money_number_text(double v, char *out, size_t outlen);


/* ---- hashing (sp_hash.c) --------------------------------------------- */

/* 64-bit hash for hash tables and checksums; stable across platforms */
uint64_t sp_hash64(const void *data, size_t len, uint64_t seed);

/*
 * The same hash in steps, for data too large to hash at once: begin with
 * the total length, update with pieces whose lengths are multiples of 8
 * (the last may be shorter), end. Gives exactly sp_hash64()'s value.
 */
typedef struct {
    uint64_t  h;
    size_t    len;        /* total */
    size_t    done;       /* hashed so far */
    uint64_t  tail;       /* the last partial word */
    size_t    tail_len;
} sp_hash_state_t;

void sp_hash64_begin(sp_hash_state_t *st, size_t len, uint64_t seed);
void sp_hash64_update(sp_hash_state_t *st, const void *data, size_t len);
uint64_t sp_hash64_end(sp_hash_state_t *st);


#endif /* SPENDPOL_H */
