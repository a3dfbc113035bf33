/*
 * Schema migrations (migrate.c). Needs controld.h first.
 */

#ifndef CD_MIGRATE_H
#define CD_MIGRATE_H


int cd_migrate(cd_db_pool_t *pool, const char *dir) CD_CHECK;

/* 1 when name looks like NNN_something.sql */
int cd_migration_name_valid(const char *name);


#endif /* CD_MIGRATE_H */
