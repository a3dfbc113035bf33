/*
 * Provider credentials at rest: AES-256-GCM under the master key, stored
 * as nonce(12) || ciphertext || tag(16). Also the master key itself and
 * random identifiers.
 */

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"


/*
 * One AES-256-GCM pass over len bytes of in into out (enc 1: seal, the
 * tag written; enc 0: open, the tag checked). EVP_Cipher* serve both
 * directions, so sealing and opening cannot drift apart.
 */
static int
cd_aead_gcm(int enc, const uint8_t *key, const uint8_t *nonce,
    const char *aad, const uint8_t *in, size_t len, uint8_t *out,
    uint8_t *tag)
{
    int              n, rc;
    EVP_CIPHER_CTX  *ctx;

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return CD_ERROR;
    }

    rc = CD_ERROR;

    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc)
        != 1)
    {
        goto done;
    }

    if (aad != NULL
        && EVP_CipherUpdate(ctx, NULL, &n, (const uint8_t *) aad,
                            (int) strlen(aad)) != 1)
    {
        goto done;
    }

    if (EVP_CipherUpdate(ctx, out, &n, in, (int) len) != 1) {
        goto done;
    }

    if (!enc
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CD_AEAD_TAG_LEN,
                               tag) != 1)
    {
        goto done;
    }

    /* opening: the tag check, a modified byte anywhere fails here */
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1) {
        if (!enc) {
            OPENSSL_cleanse(out, len);
        }

        goto done;
    }

    if (enc
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CD_AEAD_TAG_LEN,
                               tag) != 1)
    {
        goto done;
    }

    rc = CD_OK;

done:

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


int
cd_aead_encrypt(const uint8_t *key, const uint8_t *plain, size_t len,
    const char *aad, uint8_t *out, size_t *outlen)
{
    uint8_t  *nonce, *cipher;

    if (len > INT32_MAX - CD_AEAD_OVERHEAD) {
        return CD_ERROR;
    }

    nonce = out;
    cipher = out + CD_AEAD_NONCE_LEN;

    /* a random 96-bit nonce per message: far below the 2^32 bound */
    if (RAND_bytes(nonce, CD_AEAD_NONCE_LEN) != 1) {
        return CD_ERROR;
    }

    if (cd_aead_gcm(1, key, nonce, aad, plain, len, cipher, cipher + len)
        != CD_OK)
    {
        return CD_ERROR;
    }

    *outlen = len + CD_AEAD_OVERHEAD;

    return CD_OK;
}


int
cd_aead_decrypt(const uint8_t *key, const uint8_t *sealed, size_t len,
    const char *aad, uint8_t *out, size_t *outlen)
{
    size_t          cipher_len;
    const uint8_t  *cipher;

    if (len < CD_AEAD_OVERHEAD || len > INT32_MAX) {
        return CD_ERROR;
    }

    cipher_len = len - CD_AEAD_OVERHEAD;
    cipher = sealed + CD_AEAD_NONCE_LEN;

    /* GCM's tag is only read when opening; the cast drops nothing */
    if (cd_aead_gcm(0, key, sealed, aad, cipher, cipher_len, out,
                    (uint8_t *) cipher + cipher_len) != CD_OK)
    {
        return CD_ERROR;
    }

    *outlen = cipher_len;

    return CD_OK;
}


int
cd_random_id(const char *prefix, size_t nbytes, char *out)
{
    size_t   plen;
    uint8_t  random[24];

    plen = strlen(prefix);

    if (nbytes > sizeof(random) || plen + 2 * nbytes + 1 > CD_ID_MAX) {
        return CD_ERROR;
    }

    if (RAND_bytes(random, (int) nbytes) != 1) {
        return CD_ERROR;
    }

    memcpy(out, prefix, plen);
    sp_hex_encode(random, nbytes, out + plen);
    out[plen + 2 * nbytes] = '\0';

    return CD_OK;
}


static int
cd_master_key_read(const char *path, uint8_t *key, char *err, size_t errlen)
{
    int      fd;
    char     buf[256];
    ssize_t  n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 1 : (snprintf(err, errlen,
                   "cannot open %s: %s", path, strerror(errno)), CD_ERROR);
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return CD_ERROR;
    }

    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                     || buf[n - 1] == ' '))
    {
        n--;
    }

    if (sp_hex_decode(buf, (size_t) n, key, CD_MASTER_KEY_LEN) != SP_OK) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen, "%s must hold 64 hex characters (a 256-bit "
                 "AES key)", path);
        return CD_ERROR;
    }

    OPENSSL_cleanse(buf, sizeof(buf));

    return CD_OK;
}


int
cd_master_key_load(const cd_config_t *cf, uint8_t *key, char *err,
    size_t errlen)
{
    int   rc;
    char  path[4096], hex[2 * CD_MASTER_KEY_LEN + 2];

    if (cf->master_key_hex != NULL) {
        if (sp_hex_decode(cf->master_key_hex, strlen(cf->master_key_hex),
                          key, CD_MASTER_KEY_LEN) != SP_OK)
        {
            snprintf(err, errlen, "SPENDPOL_MASTER_KEY must be 64 hex "
                     "characters");
            return CD_ERROR;
        }

        return CD_OK;
    }

    snprintf(path, sizeof(path), "%s/master.key", cf->data_dir);

    rc = cd_master_key_read(path, key, err, errlen);
    if (rc != 1) {
        return rc;
    }

    if (RAND_bytes(key, CD_MASTER_KEY_LEN) != 1) {
        snprintf(err, errlen, "cannot generate a master key: no randomness");
        return CD_ERROR;
    }

    sp_hex_encode(key, CD_MASTER_KEY_LEN, hex);
    hex[2 * CD_MASTER_KEY_LEN] = '\n';

    if (cd_write_new_file(path, hex, 2 * CD_MASTER_KEY_LEN + 1, 0600)
        != CD_OK)
    {
        OPENSSL_cleanse(hex, sizeof(hex));

        if (errno == EEXIST) {
            /* another controld created it first: use theirs */
            return cd_master_key_read(path, key, err, errlen);
        }

        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return CD_ERROR;
    }

    OPENSSL_cleanse(hex, sizeof(hex));
    cd_log_warn("crypto", "created a new master key in %s; back it up: "
                "provider keys cannot be decrypted without it", path);

    return CD_OK;
}


static void *
cd_json_malloc(size_t size)
{
    return malloc(size);
}


static void
cd_json_free(void *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}


void
cd_json_wipe_on_free(void)
{
    json_set_alloc_funcs(cd_json_malloc, cd_json_free);
}
