/*
 * AES-256-GCM, the master key, random ids (crypto.c). Needs controld.h
 * first.
 */

#ifndef CD_CRYPTO_H
#define CD_CRYPTO_H


#define CD_AEAD_NONCE_LEN     12
#define CD_AEAD_TAG_LEN       16
#define CD_AEAD_OVERHEAD      (CD_AEAD_NONCE_LEN + CD_AEAD_TAG_LEN)

/*
 * AES-256-GCM. out receives nonce(12) || ciphertext || tag(16), so it
 * must hold len + CD_AEAD_OVERHEAD bytes. aad binds the ciphertext to its
 * row, so a ciphertext copied to another row does not decrypt.
 */
int cd_aead_encrypt(const uint8_t *key, const uint8_t *plain, size_t len,
    const char *aad, uint8_t *out, size_t *outlen) CD_CHECK;

/* out must hold len - CD_AEAD_OVERHEAD bytes; CD_ERROR when tampered */
int cd_aead_decrypt(const uint8_t *key, const uint8_t *sealed, size_t len,
    const char *aad, uint8_t *out, size_t *outlen) CD_CHECK;

/* from SPENDPOL_MASTER_KEY, else data_dir/master.key (created) */
int cd_master_key_load(const cd_config_t *cf, uint8_t *key, char *err,
    size_t errlen) CD_CHECK;

/*
 * Makes jansson wipe every block it frees: request bodies hold provider
 * keys and responses the plaintext of created keys, and jansson copies
 * each string it holds. Called once, before any thread uses jansson.
 */
void cd_json_wipe_on_free(void);

/* id = prefix + 2 * nbytes lowercase hex chars; out holds CD_ID_MAX */
int cd_random_id(const char *prefix, size_t nbytes, char *out) CD_CHECK;


#endif /* CD_CRYPTO_H */
