/* libstats.so version 2: the struct grew to count bytes and the largest request too (24
 * bytes). hotagent_migrate takes version 1's count over while every other thread is parked;
 * hotagent_unmigrate hands it back on rollback. Without these hooks the reload is refused:
 * "variable stats changed size". */
#include "stats.h"
#include <hotagent.h>
#include <stdio.h>

struct stats { long requests; long bytes; long largest; };
struct stats stats;

/* What version 1 laid out: only this is read from the previous generation. */
struct stats_v1 { long requests; };

void stats_request(long bytes) {
    stats.requests++;
    stats.bytes += bytes;
    if (bytes > stats.largest) stats.largest = bytes;
}

void stats_print(void) {
    printf("v2: %ld requests, %ld bytes since the reload, largest %ld\n", stats.requests,
           stats.bytes, stats.largest);
}

int hotagent_migrate(struct hotagent_ctx *ctx) {
    struct stats_v1 *old = hotagent_previous_symbol(ctx, "stats");
    if (!old) return hotagent_fail(ctx, "stats: version 1's struct not found");
    stats.requests = old->requests; /* carried over */
    stats.bytes = 0;                /* not known before: counted from now on */
    stats.largest = 0;
    return 0;
}

int hotagent_unmigrate(struct hotagent_ctx *ctx) {
    struct stats_v1 *old = hotagent_previous_symbol(ctx, "stats");
    if (!old) return hotagent_fail(ctx, "stats: version 1's struct not found to hand back");
    old->requests = stats.requests; /* handed back: nothing counted under v2 is lost */
    return 0;
}
