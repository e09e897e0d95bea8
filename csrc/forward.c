/* The forwarder of [net].publish: a process of the sandbox, forked by its init
 * before the command, that holds the listening sockets the caller bound on
 * the host and relays every connection to 127.0.0.1:PORT inside.
 *
 * Why a process inside: an unprivileged caller cannot enter the sandbox's
 * network namespace (setns needs CAP_SYS_ADMIN over its owner), but a process
 * created in it can connect there, and a listening socket keeps working in
 * whichever namespace holds it. The forwarder has the command's identity,
 * view, Landlock domain and (no) capabilities, and is not dumpable: the
 * command cannot take its host sockets, and it can do nothing the command
 * could not.
 *
 * One epoll loop, edge-triggered: every event on either side of a connection
 * pumps both directions until the kernel says EAGAIN. Bytes move with
 * splice() through a pipe per direction, never through user memory, so no
 * allocation is needed (the forwarder is a fork of a possibly multi-threaded
 * caller: no malloc). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CONNECTIONS 4096
#define MAX_LISTENERS 64
#define PIPE_BYTES 65536
/* epoll data: a listener's index with this bit, else (connection << 1) | side */
#define LISTENER_TAG (1ULL << 63)

/* Bytes from one side to the other: src -> pipe -> dst. */
struct direction {
    int pipe_r, pipe_w;
    size_t pending;        /* in the pipe, not yet written to dst */
    int eof;               /* src sent FIN: no more bytes will come */
    int shut;              /* dst was shut down for writing after the last byte */
};

struct connection {
    int used;
    unsigned closed_in_batch; /* a slot closed while a batch of events is handled waits for
                                 the next: later events of that batch still name it */
    int connecting;        /* the inside connect() has not completed yet */
    int fd[2];             /* 0: the client (host side), 1: the daemon (inside) */
    struct direction dir[2]; /* dir[s]: from fd[s] to fd[1 - s] */
};

static struct connection conns[MAX_CONNECTIONS];
static struct vb_net_counters *counted; /* shared with the caller: what was relayed */
static unsigned batch = 1;
static int max_connections = MAX_CONNECTIONS;
static int epfd = -1;

static void close_connection(struct connection *c)
{
    for (int s = 0; s < 2; s++) {
        if (c->fd[s] >= 0)
            close(c->fd[s]);
        if (c->dir[s].pipe_r >= 0)
            close(c->dir[s].pipe_r);
        if (c->dir[s].pipe_w >= 0)
            close(c->dir[s].pipe_w);
    }
    memset(c, 0, sizeof *c);
    c->closed_in_batch = batch;
}

static struct connection *free_slot(void)
{
    static int hint;
    for (int i = 0; i < max_connections; i++) {
        int at = (hint + i) % max_connections;
        if (!conns[at].used && conns[at].closed_in_batch != batch) {
            hint = at + 1;
            return &conns[at];
        }
    }
    return NULL;
}

static int watch(int fd, uint64_t data)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = data};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* A client reached the daemon inside (one the daemon never took is not counted). */
static void count_connection(void)
{
    if (counted)
        atomic_fetch_add_explicit(&counted->connections_in, 1, memory_order_relaxed);
}

/* Connects a new client to 127.0.0.1:port inside; drops it when that fails at once. */
static void open_connection(int client, int port)
{
    struct connection *c = free_slot();
    if (!c) {
        close(client); /* full: the client sees the connection closed */
        return;
    }
    memset(c, 0, sizeof *c);
    c->used = 1; /* its events from an earlier batch are all handled */
    c->fd[0] = client;
    c->fd[1] = c->dir[0].pipe_r = c->dir[0].pipe_w = c->dir[1].pipe_r = c->dir[1].pipe_w = -1;
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix sockets */
    c->fd[1] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int pipes[2][2];
    if (c->fd[1] < 0 || pipe2(pipes[0], O_NONBLOCK | O_CLOEXEC) != 0) {
        close_connection(c);
        return;
    }
    c->dir[0].pipe_r = pipes[0][0];
    c->dir[0].pipe_w = pipes[0][1];
    if (pipe2(pipes[1], O_NONBLOCK | O_CLOEXEC) != 0) {
        close_connection(c);
        return;
    }
    c->dir[1].pipe_r = pipes[1][0];
    c->dir[1].pipe_w = pipes[1][1];
    setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in inside = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd[1], (struct sockaddr *)&inside, sizeof inside) == 0)
        c->connecting = 0;
    else if (errno == EINPROGRESS)
        c->connecting = 1;
    else {
        close_connection(c);
        return;
    }
    uint64_t index = (uint64_t)(c - conns);
    if (watch(c->fd[0], index << 1) != 0 || watch(c->fd[1], (index << 1) | 1) != 0) {
        close_connection(c);
        return;
    }
    if (!c->connecting)
        count_connection();
}

/* Moves what it can in direction d; returns 1 on progress, 0 on none, -1 when the
 * connection failed. */
static int pump_direction(struct connection *c, int d)
{
    struct direction *dir = &c->dir[d];
    int src = c->fd[d], dst = c->fd[1 - d];
    int progress = 0;
    if (!dir->eof && dir->pending < PIPE_BYTES) {
        ssize_t n = splice(src, NULL, dir->pipe_w, NULL, PIPE_BYTES - dir->pending,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            dir->pending += (size_t)n;
            progress = 1;
        } else if (n == 0) {
            dir->eof = 1;
            progress = 1;
        } else if (errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    if (dir->pending > 0) {
        ssize_t n = splice(dir->pipe_r, NULL, dst, NULL, dir->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            dir->pending -= (size_t)n;
            progress = 1;
            if (counted) /* dir[0]: from the client into the sandbox */
                atomic_fetch_add_explicit(d == 0 ? &counted->bytes_in : &counted->bytes_out, (uint64_t)n,
                                          memory_order_relaxed);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    if (dir->eof && dir->pending == 0 && !dir->shut) {
        shutdown(dst, SHUT_WR); /* pass the FIN on: half-closed connections keep working */
        dir->shut = 1;
        progress = 1;
    }
    return progress;
}

static void pump(struct connection *c, int side, uint32_t events)
{
    if (c->connecting) {
        if (side != 1)
            return; /* the client's bytes wait in its socket until the daemon answers */
        int err = 0;
        socklen_t len = sizeof err;
        if ((events & (EPOLLERR | EPOLLHUP)) || getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
            err != 0) {
            close_connection(c); /* nothing listens on that port inside (yet) */
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->connecting = 0;
        count_connection();
    }
    for (;;) {
        int a = pump_direction(c, 0), b = pump_direction(c, 1);
        if (a < 0 || b < 0 || (c->dir[0].shut && c->dir[1].shut)) {
            close_connection(c);
            return;
        }
        if (!a && !b)
            return; /* every side said EAGAIN (or waits for the other): the next edge resumes */
    }
}

int vb_forward_setup(const struct vb_plan *plan)
{
    /* a connection takes six fds: take what the hard limit allows */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
        if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)MAX_CONNECTIONS * 6 + 64)
            max_connections = nofile.rlim_cur > 6 * 4 + 64 ? (int)((nofile.rlim_cur - 64) / 6) : 4;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    if (plan->n_publish > MAX_LISTENERS)
        return -E2BIG;
    for (size_t i = 0; i < plan->n_publish; i++) {
        int fd = plan->publish[i].host_fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LISTENER_TAG | i};
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            return -errno;
    }
    return 0;
}

__attribute__((noreturn)) void vb_forward_run(const struct vb_plan *plan, struct vb_net_counters *counters)
{
    counted = counters;
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(epfd, events, (int)VB_ARRAY_LEN(events), -1);
        batch = batch + 1 ? batch + 1 : 1;
        for (int i = 0; i < n; i++) {
            uint64_t data = events[i].data.u64;
            if (data & LISTENER_TAG) {
                const struct vb_publish *pub = &plan->publish[data & ~LISTENER_TAG];
                int client;
                while ((client = accept4(pub->host_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                    open_connection(client, pub->port);
                continue;
            }
            struct connection *c = &conns[data >> 1];
            if (c->used)
                pump(c, (int)(data & 1), events[i].events);
        }
    }
}
