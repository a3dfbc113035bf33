/*
 * The tail of the egress logs named by SPENDPOL_EGRESS_LOG
 * (shadow_tail.c): their AI hits become shadow-AI alerts of
 * SPENDPOL_SHADOW_ORG. Needs controld.h first.
 */

#ifndef CD_SHADOW_TAIL_H
#define CD_SHADOW_TAIL_H


#define CD_SHADOW_TAIL_FILES_MAX  16

typedef struct cd_shadow_tail_s  cd_shadow_tail_t;

/*
 * "path[:format],...": each path and its format (SP_EGRESS_*, auto when
 * no known format name follows the last ':') into paths (strings owned
 * by the caller, freed with free()) and formats; CD_ERROR with a
 * message naming SPENDPOL_EGRESS_LOG and the entry's position.
 */
int cd_shadow_tail_parse(const char *value, char **paths, int *formats,
    size_t *n, char *err, size_t errlen) CD_CHECK;

/*
 * Starts the thread when SPENDPOL_EGRESS_LOG is set (*out NULL when it
 * is not); CD_ERROR when the setting is invalid or the thread cannot
 * start.
 */
int cd_shadow_tail_start(cd_app_t *app, cd_shadow_tail_t **out) CD_CHECK;
void cd_shadow_tail_stop(cd_shadow_tail_t *t);


#endif /* CD_SHADOW_TAIL_H */
