/* A program on libcounter.so, one command a line on stdin, one reply a line:
 *   next | version | quit */
#include <stdio.h>
#include <string.h>

#include "counter.h"

int main(void) {
    char line[128];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "next"))
            printf("%lu\n", counter_next());
        else if (!strcmp(line, "version"))
            printf("%s\n", counter_version());
        else if (!strcmp(line, "quit")) {
            printf("bye\n");
            return 0;
        } else
            printf("error %s\n", line);
    }
    return 0;
}
