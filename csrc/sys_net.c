/* Handlers of the network family (VB_FAMILY_NET): the egress allowlist,
 * [net].allow, for sandboxes with their own network (mode "none").
 *
 * The sandbox's network namespace holds everything by itself (layer 0): a
 * socket made inside reaches only the sandbox's own loopback. The allowlist
 * only ever adds: for a destination a rule admits, the supervisor makes a
 * socket of the same kind in the host's network, connects it itself, to the
 * sockaddr it copied once, and puts it in place of the caller's socket
 * (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SETFD). So no rewrite of
 * the caller's memory after the copy can change where the host socket goes,
 * and a call the supervisor lets the kernel run itself (CONTINUE) connects
 * inside the sandbox's namespace, where nothing but its own loopback is. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "supervise.h"

#define ARG(n) (call->notif.data.args[n])

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static struct vb_decision decide(enum vb_decision_kind kind, int64_t value, const char *rule)
{
    return (struct vb_decision){kind, value, rule};
}

/* SAFETY: the kernel runs the call in the sandbox's own network namespace,
 * which has nothing but its own loopback (layer 0): whatever the sockaddr
 * says by then, nothing outside the sandbox is reached. */
#define CONTINUE_INSIDE decide(VB_DECIDE_CONTINUE, 0, NULL)

/* Socket options a program may have set before connect(), carried over to
 * the host socket that replaces its own. */
static const struct {
    int level, name;
} carried_options[] = {
    {SOL_SOCKET, SO_KEEPALIVE}, {SOL_SOCKET, SO_RCVBUF},  {SOL_SOCKET, SO_SNDBUF},
    {SOL_SOCKET, SO_BROADCAST}, {SOL_SOCKET, SO_PRIORITY}, {SOL_SOCKET, SO_LINGER},
    {IPPROTO_TCP, TCP_NODELAY}, {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL},
    {IPPROTO_TCP, TCP_KEEPCNT}, {IPPROTO_TCP, TCP_USER_TIMEOUT}, {IPPROTO_IPV6, IPV6_V6ONLY},
};

static void carry_options(int from, int to)
{
    for (size_t i = 0; i < VB_ARRAY_LEN(carried_options); i++) {
        char value[64];
        socklen_t len = sizeof value;
        if (getsockopt(from, carried_options[i].level, carried_options[i].name, value, &len) == 0)
            setsockopt(to, carried_options[i].level, carried_options[i].name, value, len);
    }
}

/* Whether the caller's fd `fd` is close-on-exec (its /proc fdinfo "flags:"). */
static int caller_fd_cloexec(const struct vb_call *call, int fd)
{
    char path[64], text[256];
    snprintf(path, sizeof path, "/proc/%u/fdinfo/%d", call->notif.pid, fd);
    int info = open(path, O_RDONLY | O_CLOEXEC);
    if (info < 0)
        return 0;
    ssize_t n = read(info, text, sizeof text - 1);
    close(info);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    const char *flags = strstr(text, "flags:");
    return flags && (strtoul(flags + 6, NULL, 8) & O_CLOEXEC);
}

/* "1.2.3.4:80" or "[::1]:80" into call->request.path: the destination as
 * decided on, for the audit and the deny note. */
static void describe_destination(struct vb_call *call, int family, const void *address, unsigned port)
{
    char text[INET6_ADDRSTRLEN];
    inet_ntop(family, address, text, sizeof text);
    snprintf(call->request.path, sizeof call->request.path, family == AF_INET6 ? "[%s]:%u" : "%s:%u", text,
             port);
}

/* connect(fd, addr, addrlen): for an allowed destination, a host socket connected by the
 * supervisor replaces the caller's; anything else connects inside the sandbox. */
struct vb_decision sys_connect(struct vb_call *call)
{
    int fd = (int)ARG(0);
    uint64_t len = ARG(2);
    union {
        struct sockaddr any;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_storage storage;
    } dest;
    memset(&dest, 0, sizeof dest);
    if (!vb_net_filtered(call) || ARG(1) == 0 || len < sizeof(sa_family_t))
        return CONTINUE_INSIDE;
    /* the one copy: everything below decides on it and connects to it */
    size_t want = len < sizeof dest ? (size_t)len : sizeof dest;
    if (vb_read_memory(call, ARG(1), &dest, want) != 0)
        return decide(VB_DECIDE_ERRNO, EFAULT, NULL);

    int family;
    const uint8_t *address;
    unsigned port;
    uint8_t mapped[4];
    if (dest.any.sa_family == AF_INET && len >= sizeof dest.in) {
        family = AF_INET;
        address = (const uint8_t *)&dest.in.sin_addr;
        port = ntohs(dest.in.sin_port);
    } else if (dest.any.sa_family == AF_INET6 && len >= sizeof dest.in6) {
        family = AF_INET6;
        address = (const uint8_t *)&dest.in6.sin6_addr;
        port = ntohs(dest.in6.sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&dest.in6.sin6_addr)) {
            /* ::ffff:a.b.c.d is a.b.c.d to the rules */
            memcpy(mapped, address + 12, 4);
            family = AF_INET;
            address = mapped;
        }
    } else {
        return CONTINUE_INSIDE; /* unix, netlink, AF_UNSPEC (disconnect): the namespace's own */
    }
    describe_destination(call, family, address, port);
    const struct vb_net_rule *rule = vb_net_allowed(call, family, address, port);
    if (!rule) {
        /* loopback no rule names is the sandbox's own: servers it runs itself */
        static const uint8_t v6_loopback[16] = {[15] = 1};
        int loopback = family == AF_INET ? address[0] == 127 : memcmp(address, v6_loopback, 16) == 0;
        if (loopback)
            return CONTINUE_INSIDE;
        return decide(VB_DECIDE_DENY, EACCES, "not in [net].allow");
    }

    /* the caller's socket, to make one of the same kind and mode */
    int pidfd = vb_caller_pidfd(call);
    if (pidfd < 0)
        return CONTINUE_INSIDE; /* the caller is going away */
    int theirs = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    close(pidfd);
    if (theirs < 0)
        return CONTINUE_INSIDE; /* not an fd of theirs: the kernel says EBADF */
    int domain = 0, type = 0, protocol = 0;
    socklen_t optlen = sizeof domain;
    int is_socket = getsockopt(theirs, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) == 0;
    optlen = sizeof type;
    is_socket = is_socket && getsockopt(theirs, SOL_SOCKET, SO_TYPE, &type, &optlen) == 0;
    optlen = sizeof protocol;
    is_socket = is_socket && getsockopt(theirs, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen) == 0;
    int status = fcntl(theirs, F_GETFL);
    if (!is_socket || domain != dest.any.sa_family || (type != SOCK_STREAM && type != SOCK_DGRAM) || status < 0) {
        close(theirs);
        return CONTINUE_INSIDE; /* the kernel answers ENOTSOCK, EAFNOSUPPORT and the like */
    }
    int ours = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (ours < 0) {
        int err = errno;
        close(theirs);
        return decide(VB_DECIDE_ERRNO, err, NULL);
    }
    carry_options(theirs, ours);
    close(theirs);
    call->new_fd_flags = caller_fd_cloexec(call, fd) ? O_CLOEXEC : 0;
    int nonblocking = status & O_NONBLOCK;
    int rc = connect(ours, &dest.any, (socklen_t)want);
    int err = rc == 0 ? 0 : errno;
    if (!nonblocking && (rc == 0 || err == EINPROGRESS)) {
        /* the caller blocks: it gets the socket in its own mode */
        int flags = fcntl(ours, F_GETFL);
        fcntl(ours, F_SETFL, flags & ~O_NONBLOCK);
    }
    if (rc != 0 && err != EINPROGRESS) {
        close(ours);
        return decide(VB_DECIDE_ERRNO, err, rule->origin);
    }
    call->fds[0] = ours;
    if (rc == 0)
        return decide(VB_DECIDE_REPLACE_FD, 0, rule->origin);
    if (nonblocking)
        return decide(VB_DECIDE_REPLACE_FD, -EINPROGRESS, rule->origin);
    return decide(VB_DECIDE_CONNECTING, 0, rule->origin);
}
