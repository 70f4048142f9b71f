/* A "server" on libstats.so, one command a line: `request N` (a request of N bytes) answers
 * ok, `stats` answers the statistics line, `quit` answers bye. */
#include "stats.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    puts("ready");
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "request ", 8)) {
            stats_request(strtol(line + 8, NULL, 10));
            puts("ok");
        } else if (!strcmp(line, "stats")) {
            stats_print();
        } else if (!strcmp(line, "quit")) {
            puts("bye");
            return 0;
        } else {
            printf("unknown command: %s\n", line);
        }
    }
    return 0;
}
