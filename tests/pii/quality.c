/*
 * The PII scanner's quality on the labelled corpus (tests/pii/corpus.jsonl,
 * written by tools/pii-corpus/gen.mjs): precision and recall per type and
 * F2 overall. A found entity is right when a labelled one of the same type
 * overlaps it (each labelled entity counts once).
 *
 *   quality [--check] [--verbose] CORPUS
 *
 * --check: exits 1 when a structured type's precision or recall is below
 * 0.98. --verbose: prints each miss and each false alarm.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "sp_pii.h"


#define QUALITY_TARGET  0.98

typedef struct {
    long  tp, fp, fn;
} quality_count_t;


static double
ratio(long a, long b)
{
    return b ? (double) a / (double) b : 1.0;
}


int
main(int argc, char **argv)
{
    int               check, verbose, type, fail, k;
    long              line, tp, fp, fn;
    size_t            g, e, ngold, len;
    char             *buf;
    FILE             *f;
    json_t           *root, *ents, *ent;
    double            p, r, f2;
    const char       *path, *text;
    json_error_t      jerr;
    sp_pii_result_t   res;
    quality_count_t   q[SP_PII_COUNT];
    struct {
        int       type;
        uint32_t  start, end;
        int       matched;
    } gold[64];
    size_t            cap;
    ssize_t           n;

    check = 0;
    verbose = 0;
    path = NULL;

    for (k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--check") == 0) {
            check = 1;

        } else if (strcmp(argv[k], "--verbose") == 0) {
            verbose = 1;

        } else {
            path = argv[k];
        }
    }

    if (path == NULL) {
        fprintf(stderr, "usage: quality [--check] [--verbose] CORPUS\n");
        return 2;
    }

    f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return 2;
    }

    memset(q, 0, sizeof(q));
    buf = NULL;
    cap = 0;
    line = 0;

    while ((n = getline(&buf, &cap, f)) > 0) {
        line++;

        root = json_loadb(buf, (size_t) n, 0, &jerr);
        if (root == NULL) {
            fprintf(stderr, "%s:%ld: %s\n", path, line, jerr.text);
            return 2;
        }

        text = json_string_value(json_object_get(root, "text"));
        len = json_string_length(json_object_get(root, "text"));
        ents = json_object_get(root, "entities");

        if (text == NULL || !json_is_array(ents)
            || json_array_size(ents) > 64)
        {
            fprintf(stderr, "%s:%ld: needs text and at most 64 entities\n",
                    path, line);
            return 2;
        }

        ngold = 0;

        json_array_foreach(ents, g, ent) {
            type = sp_pii_type(json_string_value(json_object_get(ent, "type")),
                               json_string_length(json_object_get(ent,
                                                                  "type")));
            if (type < 0) {
                fprintf(stderr, "%s:%ld: unknown type\n", path, line);
                return 2;
            }

            gold[ngold].type = type;
            gold[ngold].start = (uint32_t) json_integer_value(
                                    json_object_get(ent, "start"));
            gold[ngold].end = (uint32_t) json_integer_value(
                                  json_object_get(ent, "end"));
            gold[ngold].matched = 0;
            ngold++;
        }

        sp_pii_scan_text(text, len, SP_PII_ALL, &res);

        for (e = 0; e < res.nentities; e++) {
            const sp_pii_entity_t  *x = &res.entities[e];

            for (g = 0; g < ngold; g++) {
                if (!gold[g].matched && gold[g].type == (int) x->type
                    && gold[g].start < x->end && x->start < gold[g].end)
                {
                    gold[g].matched = 1;
                    break;
                }
            }

            if (g < ngold) {
                q[x->type].tp++;
                continue;
            }

            q[x->type].fp++;

            if (verbose) {
                printf("FP %-11s line %ld: \"%.*s\" in %s",
                       sp_pii_name(x->type), line,
                       (int) (x->end - x->start), text + x->start, buf);
            }
        }

        for (g = 0; g < ngold; g++) {
            if (gold[g].matched) {
                continue;
            }

            q[gold[g].type].fn++;

            if (verbose) {
                printf("FN %-11s line %ld: \"%.*s\" in %s",
                       sp_pii_name(gold[g].type), line,
                       (int) (gold[g].end - gold[g].start),
                       text + gold[g].start, buf);
            }
        }

        json_decref(root);
    }

    free(buf);
    fclose(f);

    printf("%-12s %6s %6s %6s %9s %9s\n", "type", "tp", "fp", "fn",
           "precision", "recall");

    tp = fp = fn = 0;
    fail = 0;

    for (k = 0; k < SP_PII_COUNT; k++) {
        p = ratio(q[k].tp, q[k].tp + q[k].fp);
        r = ratio(q[k].tp, q[k].tp + q[k].fn);

        printf("%-12s %6ld %6ld %6ld %9.4f %9.4f\n", sp_pii_name(k),
               q[k].tp, q[k].fp, q[k].fn, p, r);

        tp += q[k].tp;
        fp += q[k].fp;
        fn += q[k].fn;

        /* every type but dob is structured */
        if (k != SP_PII_DOB && (p < QUALITY_TARGET || r < QUALITY_TARGET)) {
            fail = 1;
        }
    }

    p = ratio(tp, tp + fp);
    r = ratio(tp, tp + fn);
    f2 = (p + r) > 0 ? 5 * p * r / (4 * p + r) : 0;

    printf("%-12s %6ld %6ld %6ld %9.4f %9.4f\n", "all", tp, fp, fn, p, r);
    printf("F2 %.4f over %ld samples\n", f2, line);

    if (check && fail) {
        printf("pii-quality: a structured type is below %.2f\n",
               QUALITY_TARGET);
        return 1;
    }

    return 0;
}
