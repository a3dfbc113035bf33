/*
 * /chargeback/periods (api_chargeback.c): the validation of a period's
 * body, pure and unit tested. Needs controld.h first.
 */

#ifndef CD_API_CHARGEBACK_H
#define CD_API_CHARGEBACK_H


/* ids are made here, not in sp_id.h: only this resource reads them */
#define CD_CHARGEBACK_ID_PREFIX   "cbp_"
#define CD_CHARGEBACK_ID_HEX      24

/* the longest period, [starts_at, ends_at) */
#define CD_CHARGEBACK_DAYS_MAX    366
#define CD_CHARGEBACK_US_MAX                                                 \
    ((int64_t) CD_CHARGEBACK_DAYS_MAX * 86400 * 1000000)

/* a period's body (POST, or PATCH over the stored period) */
typedef struct {
    const char  *name;            /* points into the body or the row */
    int64_t      starts_us;       /* microseconds since the epoch, UTC */
    int64_t      ends_us;
    const char  *group_by;        /* a static string of the four */
} cd_chargeback_input_t;


/* 1 when id is "cbp_" and 24 lowercase hex digits */
int cd_chargeback_id_valid(const char *id);

/* "department", "project", "api_key", "agent" -> the same static string */
const char *cd_chargeback_group_parse(const char *name);

/*
 * The members of body (keys already checked) into in. With patch 0 (a
 * POST) in is reset first: name, starts_at and ends_at are required,
 * group_by defaults to "department". With patch 1 in holds the stored
 * period and only the members given (null counts as not given) replace
 * it. Then the rules of a period: ends_at after starts_at and at most
 * CD_CHARGEBACK_DAYS_MAX days later, times to the millisecond. A refusal
 * names its field: 400 invalid_type, 422 missing_field or invalid_value.
 */
int cd_chargeback_body_parse(json_t *body, int patch,
    cd_chargeback_input_t *in, cd_field_error_t *err) CD_CHECK;


#endif /* CD_API_CHARGEBACK_H */
