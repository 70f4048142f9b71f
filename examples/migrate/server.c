/* A "server" on libstats.so: each input line is a request of that many bytes; an empty line
 * prints the statistics. */
#include "stats.h"
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == '\n') stats_print();
        else stats_request(strtol(line, NULL, 10));
    }
    return 0;
}
