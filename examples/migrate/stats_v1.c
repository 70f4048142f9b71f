/* libstats.so version 1: the exported struct holds one counter (8 bytes). */
#include "stats.h"
#include <stdio.h>

struct stats { long requests; };
struct stats stats;

void stats_request(long bytes) { (void)bytes; stats.requests++; }

void stats_print(void) { printf("v1: %ld requests\n", stats.requests); }
