/* The demo client: opens ONE connection to the demo server and keeps it for its whole life.
 *
 *   client PORT                     names from stdin, one per line; prints each reply
 *   client [-n COUNT] [-i MS] PORT NAME
 *                                   sends NAME COUNT times (0 = until interrupted, the
 *                                   default), one every MS milliseconds (default 1000)
 *
 * Each request waits for its reply before the next one is sent, and every reply is
 * printed (and flushed) as one line on stdout, so a script can drive the stdin mode
 * request by request through a pipe. A reply that takes longer than 10 s, or a server
 * that closes the connection, ends the client with status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int sock = -1;
static char rbuf[4096];
static size_t rlen;

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s PORT                          (names from stdin, one per line)\n"
            "       %s [-n COUNT] [-i MS] PORT NAME  (NAME COUNT times, every MS ms)\n",
            argv0, argv0);
    exit(2);
}

static int send_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "client: send: %s\n", strerror(errno));
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one reply line from the connection and prints it. */
static int read_reply(void)
{
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        ssize_t n;
        if (nl != NULL) {
            size_t line = (size_t)(nl - rbuf) + 1;
            fwrite(rbuf, 1, line, stdout);
            fflush(stdout);
            memmove(rbuf, rbuf + line, rlen - line);
            rlen -= line;
            return 0;
        }
        if (rlen == sizeof rbuf) {
            fprintf(stderr, "client: reply line too long\n");
            return -1;
        }
        n = recv(sock, rbuf + rlen, sizeof rbuf - rlen, 0);
        if (n == 0) {
            fprintf(stderr, "client: server closed the connection\n");
            return -1;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "client: %s\n",
                    errno == EAGAIN || errno == EWOULDBLOCK ? "no reply within 10 s"
                                                            : strerror(errno));
            return -1;
        }
        rlen += (size_t)n;
    }
}

static int request(const char *name, size_t len)
{
    if (send_all(name, len) < 0 || send_all("\n", 1) < 0)
        return -1;
    return read_reply();
}

static long number(const char *s, const char *what, const char *argv0)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "client: bad %s '%s'\n", what, s);
        usage(argv0);
    }
    return v;
}

int main(int argc, char **argv)
{
    long count = 0, interval_ms = 1000, port, i;
    struct sockaddr_in addr;
    struct timeval tv = {10, 0};
    int opt;

    while ((opt = getopt(argc, argv, "n:i:h")) != -1) {
        switch (opt) {
        case 'n':
            count = number(optarg, "count", argv[0]);
            break;
        case 'i':
            interval_ms = number(optarg, "interval", argv[0]);
            break;
        default:
            usage(argv[0]);
        }
    }
    if (argc - optind != 1 && argc - optind != 2)
        usage(argv[0]);
    port = number(argv[optind], "port", argv[0]);
    if (port < 1 || port > 65535)
        usage(argv[0]);

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        perror("client: socket");
        return 1;
    }
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "client: cannot connect to 127.0.0.1:%ld: %s\n", port, strerror(errno));
        return 1;
    }

    if (argc - optind == 2) {
        const char *name = argv[optind + 1];
        for (i = 0; count == 0 || i < count; i++) {
            if (i > 0) {
                struct timespec pause = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
                while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
                    ;
            }
            if (request(name, strlen(name)) < 0)
                return 1;
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, stdin)) >= 0) {
            if (len > 0 && line[len - 1] == '\n')
                len--;
            if (request(line, (size_t)len) < 0) {
                free(line);
                return 1;
            }
        }
        free(line);
    }
    close(sock);
    return 0;
}
