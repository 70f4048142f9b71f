/* libdraw.so: a ball bouncing across a 16-column field. `make watch-demo` edits BALL and rebuilds. */
#include "draw.h"

#define BALL 'o'
#define WIDTH 16

void draw_frame(unsigned frame, char *buf, size_t size)
{
    unsigned period = 2 * (WIDTH - 1);
    unsigned x = frame % period;
    if (x >= WIDTH)
        x = period - x;
    size_t i = 0;
    buf[i++] = '|';
    for (unsigned c = 0; c < WIDTH && i + 3 < size; c++)
        buf[i++] = c == x ? BALL : ' ';
    buf[i++] = '|';
    buf[i] = '\0';
}
