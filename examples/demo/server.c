/* The demo server: a small line-based TCP service on 127.0.0.1 linked against libgreet.so.
 *
 *   server PORT        (PORT 0 = let the kernel pick one)
 *
 * The first line on stdout is always `listening on 127.0.0.1:PORT`. Each line a client
 * sends is a name; the reply is one line built from the library's greet():
 *
 *   [pid 4242, req 17, conn 2, msg 3] hello, bob (v1)
 *
 * pid  - this process (it never changes: a reload is not a restart),
 * req  - requests served by this process so far (state in the server's memory),
 * conn - the connection's number, in accept order,
 * msg  - requests served on this connection so far.
 * The special line `/version` answers with greet_version().
 *
 * One thread, poll(), non-blocking sockets, several persistent connections. Clients that
 * disconnect, reset or stop reading are dropped without harm; SIGPIPE is ignored. SIGTERM
 * and SIGINT stop the server cleanly (exit status 0) through a self-pipe, which works
 * whichever thread of the process the signal is delivered to (the preloaded agent runs a
 * thread of its own).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "greet.h"

#define MAX_CONNS 64
#define IN_CAP 1024     /* longest request line accepted, newline included */
#define REPLY_MAX 768   /* longest reply line, newline included */
#define OUT_CAP 16384   /* replies queued for a client that is slow to read */

struct conn {
    int fd;
    unsigned long id;   /* accept order, from 1 */
    unsigned long msgs; /* requests answered on this connection */
    size_t inlen;
    size_t outlen;
    char in[IN_CAP];
    char out[OUT_CAP];
};

static struct conn *conns[MAX_CONNS];
static unsigned long total_requests;
static unsigned long total_conns;
static int wake_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    int saved = errno;
    ssize_t r;
    stop_signal = sig;
    r = write(wake_pipe[1], "x", 1);
    (void)r; /* a full pipe already wakes the loop */
    errno = saved;
}

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

static void drop(int slot, const char *why)
{
    struct conn *c = conns[slot];
    printf("conn %lu closed (%s) after %lu requests\n", c->id, why, c->msgs);
    close(c->fd);
    free(c);
    conns[slot] = NULL;
}

/* Answers one request line (without its newline) into c->out. */
static void answer(struct conn *c, char *line)
{
    char greeting[512];
    char reply[REPLY_MAX];
    size_t len = strlen(line);
    int n;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        line[--len] = '\0';
    while (*line == ' ' || *line == '\t')
        line++;
    if (*line == '\0')
        line = "world";

    total_requests++;
    c->msgs++;
    if (strcmp(line, "/version") == 0)
        snprintf(greeting, sizeof greeting, "libgreet %s", greet_version());
    else
        greet(line, greeting, sizeof greeting);

    n = snprintf(reply, sizeof reply, "[pid %ld, req %lu, conn %lu, msg %lu] %s\n", (long)getpid(),
                 total_requests, c->id, c->msgs, greeting);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof reply) { /* truncated: keep the line a line */
        n = (int)sizeof reply - 1;
        reply[n - 1] = '\n';
    }
    memcpy(c->out + c->outlen, reply, (size_t)n);
    c->outlen += (size_t)n;
}

/* Answers every complete line buffered, as long as there is room for the replies.
 * Returns -1 when the client sent a line longer than IN_CAP. */
static int process_lines(struct conn *c)
{
    size_t start = 0;
    int rc = 0;

    while (OUT_CAP - c->outlen >= REPLY_MAX) {
        char *nl = memchr(c->in + start, '\n', c->inlen - start);
        if (nl == NULL) {
            if (start == 0 && c->inlen == IN_CAP)
                rc = -1;
            break;
        }
        *nl = '\0';
        answer(c, c->in + start);
        start = (size_t)(nl - c->in) + 1;
    }
    memmove(c->in, c->in + start, c->inlen - start);
    c->inlen -= start;
    return rc;
}

/* Sends what is queued. Returns -1 if the connection is gone. */
static int flush_out(struct conn *c)
{
    while (c->outlen > 0) {
        ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        memmove(c->out, c->out + n, c->outlen - (size_t)n);
        c->outlen -= (size_t)n;
    }
    return 0;
}

/* Reads what the client sent and answers it. Returns a reason to drop the client, or NULL. */
static const char *on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n;
        if (c->inlen == IN_CAP || OUT_CAP - c->outlen < REPLY_MAX)
            return NULL; /* full: answer and flush first */
        n = recv(c->fd, c->in + c->inlen, IN_CAP - c->inlen, 0);
        if (n == 0)
            return "client disconnected";
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return NULL;
            return strerror(errno);
        }
        c->inlen += (size_t)n;
        if (process_lines(c) < 0) {
            static const char msg[] = "error: request line too long\n";
            if (flush_out(c) == 0 && c->outlen == 0) /* best effort, then hang up */
                (void)send(c->fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
            return "request line too long";
        }
        if (flush_out(c) < 0)
            return "send failed";
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int slot, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "server: accept: %s\n", strerror(errno));
            return;
        }
        for (slot = 0; slot < MAX_CONNS && conns[slot] != NULL; slot++)
            ;
        c = slot < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
        if (c == NULL) {
            fprintf(stderr, "server: refusing a connection (%s)\n",
                    slot < MAX_CONNS ? "out of memory" : "too many connections");
            close(fd);
            continue;
        }
        c->fd = fd;
        c->id = ++total_conns;
        conns[slot] = c;
        printf("conn %lu opened\n", c->id);
    }
}

static int listen_on(const char *arg)
{
    char *end;
    long port = strtol(arg, &end, 10);
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int one = 1;
    int fd;

    if (*arg == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "server: bad port '%s'\n", arg);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || set_flags(fd) < 0) {
        perror("server: socket");
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) {
        fprintf(stderr, "server: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
        close(fd);
        return -1;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(addr.sin_port));
    return fd;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct pollfd pfds[MAX_CONNS + 2];
    int owner[MAX_CONNS + 2];
    int lfd, i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT   (0 = pick a free port)\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        perror("server: pipe");
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    lfd = listen_on(argv[1]);
    if (lfd < 0)
        return 1;
    printf("pid %ld, libgreet %s\n", (long)getpid(), greet_version());

    while (!stop_signal) {
        int n, npfd = 0, open_conns = 0;

        pfds[npfd].fd = wake_pipe[0];
        pfds[npfd].events = POLLIN;
        owner[npfd++] = -1;
        for (i = 0; i < MAX_CONNS; i++) {
            short ev = 0;
            if (conns[i] == NULL)
                continue;
            open_conns++;
            if (conns[i]->inlen < IN_CAP && OUT_CAP - conns[i]->outlen >= REPLY_MAX)
                ev |= POLLIN;
            if (conns[i]->outlen > 0)
                ev |= POLLOUT;
            pfds[npfd].fd = conns[i]->fd;
            pfds[npfd].events = ev;
            owner[npfd++] = i;
        }
        if (open_conns < MAX_CONNS) {
            pfds[npfd].fd = lfd;
            pfds[npfd].events = POLLIN;
            owner[npfd++] = -2;
        }

        n = poll(pfds, (nfds_t)npfd, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("server: poll");
            break;
        }
        for (i = 0; i < npfd; i++) {
            short re = pfds[i].revents;
            struct conn *c;
            const char *why = NULL;

            if (re == 0 || owner[i] == -1)
                continue; /* the wake pipe only matters through stop_signal */
            if (owner[i] == -2) {
                accept_all(lfd);
                continue;
            }
            c = conns[owner[i]];
            if (re & POLLOUT) {
                if (flush_out(c) < 0)
                    why = "send failed";
                else if (process_lines(c) < 0) /* lines held back while the queue was full */
                    why = "request line too long";
                else if (flush_out(c) < 0)
                    why = "send failed";
            }
            if (why == NULL && (re & (POLLIN | POLLHUP | POLLERR)))
                why = on_readable(c);
            if (why == NULL && (re & (POLLHUP | POLLERR)) && !(re & POLLIN))
                why = "connection error";
            if (why != NULL)
                drop(owner[i], why);
        }
    }

    for (i = 0; i < MAX_CONNS; i++)
        if (conns[i] != NULL)
            drop(i, "server stopping");
    close(lfd);
    printf("stopped by %s after %lu requests on %lu connections\n",
           stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : "an error",
           total_requests, total_conns);
    return stop_signal ? 0 : 1;
}
