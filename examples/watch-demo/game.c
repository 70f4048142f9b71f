/* The watch demo's "game": draws a text frame every 50 ms through libdraw.so's draw_frame, which
 * `hotctl watch` swaps for each rebuild. Stops after 60 s on its own, or at SIGTERM. */
#include <stdio.h>
#include <time.h>
#include "draw.h"

int main(void)
{
    char line[64];
    const struct timespec tick = {0, 50 * 1000 * 1000};
    for (unsigned frame = 0; frame < 1200; frame++) {
        draw_frame(frame, line, sizeof line);
        printf("frame %4u %s\n", frame, line);
        fflush(stdout);
        nanosleep(&tick, NULL);
    }
    return 0;
}
