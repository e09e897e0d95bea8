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
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
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

/* A fresh socket's values of carried_options, per kind of socket: only what the
 * program changed is carried. Setting an option costs a syscall, and setting a
 * buffer size would lock it, turning off TCP's buffer autotuning for good. */
struct option_defaults {
    int domain, type, protocol, known;
    char value[VB_ARRAY_LEN(carried_options)][64];
    socklen_t len[VB_ARRAY_LEN(carried_options)];
};

static const struct option_defaults *defaults_of(int fresh, int domain, int type, int protocol)
{
    static struct option_defaults kinds[8]; /* loop thread only */
    struct option_defaults *d = NULL;
    for (size_t i = 0; i < VB_ARRAY_LEN(kinds) && !d; i++)
        if (!kinds[i].known || (kinds[i].domain == domain && kinds[i].type == type && kinds[i].protocol == protocol))
            d = &kinds[i];
    if (!d)
        return NULL;
    if (!d->known) {
        d->domain = domain;
        d->type = type;
        d->protocol = protocol;
        d->known = 1;
        for (size_t i = 0; i < VB_ARRAY_LEN(carried_options); i++) {
            d->len[i] = sizeof d->value[i];
            if (getsockopt(fresh, carried_options[i].level, carried_options[i].name, d->value[i], &d->len[i]) != 0)
                d->len[i] = 0;
        }
    }
    return d;
}

/* `to` is a fresh socket of the same kind as the caller's `from`. */
static void carry_options(int from, int to, int domain, int type, int protocol)
{
    const struct option_defaults *fresh = defaults_of(to, domain, type, protocol);
    for (size_t i = 0; i < VB_ARRAY_LEN(carried_options); i++) {
        char value[64];
        socklen_t len = sizeof value;
        if (getsockopt(from, carried_options[i].level, carried_options[i].name, value, &len) != 0)
            continue;
        if (fresh && fresh->len[i] == len && memcmp(fresh->value[i], value, len) == 0)
            continue; /* as a fresh socket has it */
        int level = carried_options[i].level, name = carried_options[i].name;
        if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF) && len == sizeof(int)) {
            int size; /* the kernel reports twice what was asked for, and doubles what it is given */
            memcpy(&size, value, sizeof size);
            size /= 2;
            memcpy(value, &size, sizeof size);
        }
        setsockopt(to, level, name, value, len);
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
 * decided on, for the audit and the deny note; with the name it was resolved
 * from when it is a pinned one: "1.2.3.4:80 (good.test)". */
static void describe_destination(struct vb_call *call, int family, const void *address, unsigned port)
{
    char text[INET6_ADDRSTRLEN];
    inet_ntop(family, address, text, sizeof text);
    const char *name = vb_net_name(call, family, address);
    snprintf(call->request.path, sizeof call->request.path, family == AF_INET6 ? "[%s]:%u%s%s%s" : "%s:%u%s%s%s",
             text, port, name ? " (" : "", name ? name : "", name ? ")" : "");
}

#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif

/* The caller's socket, as a duplicate of its file description in this process. */
struct caller_socket {
    int fd;                /* ours: the same open file description (pidfd_getfd) */
    int host;              /* it lives in the host's network: one the supervisor made */
    int domain, type, protocol;
    int status;            /* F_GETFL: O_NONBLOCK */
};

/* The inode of this process's network namespace (the host's side of every sandbox). */
static ino_t own_netns(void)
{
    static ino_t inode;
    struct stat st;
    if (!inode && stat("/proc/self/ns/net", &st) == 0)
        inode = st.st_ino;
    return inode;
}

/* Fills `out` for the caller's fd `fd`: 0, or -errno (ENOTSOCK, EBADF, ESRCH). */
static int caller_socket(const struct vb_call *call, int fd, struct caller_socket *out)
{
    memset(out, 0, sizeof *out);
    if (fd < 0)
        return -EBADF;
    out->fd = vb_caller_fd(call, fd); /* through the supervisor's cached pidfd of the caller */
    if (out->fd < 0)
        return out->fd;
    out->status = fcntl(out->fd, F_GETFL);
    if (out->status < 0 || (out->status & O_PATH)) {
        close(out->fd); /* /proc's O_PATH stand-in (no pidfd): no socket to examine */
        return -EPERM;
    }
    socklen_t len = sizeof out->domain;
    int ok = getsockopt(out->fd, SOL_SOCKET, SO_DOMAIN, &out->domain, &len) == 0;
    len = sizeof out->type;
    ok = ok && getsockopt(out->fd, SOL_SOCKET, SO_TYPE, &out->type, &len) == 0;
    len = sizeof out->protocol;
    ok = ok && getsockopt(out->fd, SOL_SOCKET, SO_PROTOCOL, &out->protocol, &len) == 0;
    if (!ok) {
        close(out->fd);
        return -ENOTSOCK;
    }
    /* a socket's namespace is the one it was made in: the host's only for the
     * sockets the supervisor connected for the sandbox */
    int ns = ioctl(out->fd, SIOCGSKNS);
    struct stat st;
    if (ns >= 0) {
        out->host = fstat(ns, &st) == 0 && st.st_ino == own_netns();
        close(ns);
    } else {
        out->host = 1; /* cannot tell: treat it as the host's (nothing is CONTINUEd for it) */
    }
    return 0;
}

/* The decision when the caller's fd could not be examined (caller_socket's -errno).
 * No such fd, or no socket, is the kernel's to say, with nothing reached (EBADF,
 * ENOTSOCK). Anything else (the supervisor short of fds, a pidfd refused) might
 * hide one of the host sockets the kernel must never be left to use: refused. */
static struct vb_decision unexamined(int rc)
{
    if (rc == -EBADF || rc == -ENOTSOCK)
        return CONTINUE_INSIDE;
    return decide(VB_DECIDE_ERRNO, -rc, NULL);
}

/* A destination decoded from a copied sockaddr: what the rules look at. */
struct destination {
    int family;            /* AF_INET, AF_INET6; 0: another family */
    const uint8_t *address;/* into the copy; ::ffff:a.b.c.d is a.b.c.d */
    unsigned port;
    uint8_t mapped[4];
};

union sockaddr_copy {
    struct sockaddr any;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_storage storage;
};

static void decode(const union sockaddr_copy *dest, size_t len, struct destination *out)
{
    memset(out, 0, sizeof *out);
    if (dest->any.sa_family == AF_INET && len >= sizeof dest->in) {
        out->family = AF_INET;
        out->address = (const uint8_t *)&dest->in.sin_addr;
        out->port = ntohs(dest->in.sin_port);
    } else if (dest->any.sa_family == AF_INET6 && len >= sizeof dest->in6) {
        out->family = AF_INET6;
        out->address = (const uint8_t *)&dest->in6.sin6_addr;
        out->port = ntohs(dest->in6.sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&dest->in6.sin6_addr)) {
            memcpy(out->mapped, out->address + 12, 4);
            out->family = AF_INET;
            out->address = out->mapped;
        }
    }
}

static int is_loopback(const struct destination *d)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    return d->family == AF_INET ? d->address[0] == 127 : memcmp(d->address, v6_loopback, 16) == 0;
}

/* Copies the sockaddr at `addr` (once) and decodes it, naming it in call->request.path. */
static int copy_destination(struct vb_call *call, uint64_t addr, uint64_t len, union sockaddr_copy *copy,
                            size_t *copied, struct destination *d)
{
    memset(copy, 0, sizeof *copy);
    *copied = len < sizeof *copy ? (size_t)len : sizeof *copy;
    if (len < sizeof(sa_family_t) || vb_read_memory(call, addr, copy, *copied) != 0)
        return -EFAULT;
    decode(copy, *copied, d);
    if (d->family)
        describe_destination(call, d->family, d->address, d->port);
    else
        snprintf(call->request.path, sizeof call->request.path, "address family %d", copy->any.sa_family);
    return 0;
}

#define DENIED decide(VB_DECIDE_DENY, EACCES, "not in [net].allow")

/* connect, bind of a socket by the broker when the sandbox has path rules: the
 * kernel would read the address again (a unix path name the rules refuse could
 * be swapped in after the copy) and look the fd up again (a unix socket could
 * be put behind it); the broker performs the call on the socket examined,
 * from the one copy (vb_socket_request). */
static struct vb_decision broker_call(struct vb_call *call, int op, uint64_t addr, uint64_t len,
                                      struct caller_socket *theirs)
{
    struct sockaddr_storage copy;
    memset(&copy, 0, sizeof copy);
    snprintf(call->request.path, sizeof call->request.path, "a %s socket",
             theirs->domain == AF_UNIX ? "unix" : theirs->domain == AF_INET ? "IPv4" :
             theirs->domain == AF_INET6 ? "IPv6" : "other");
    if (len > sizeof copy || len < sizeof(sa_family_t)) {
        close(theirs->fd);
        return decide(VB_DECIDE_ERRNO, EINVAL, NULL);
    }
    if (vb_read_memory(call, addr, &copy, (size_t)len) != 0) {
        close(theirs->fd);
        return decide(VB_DECIDE_ERRNO, EFAULT, NULL);
    }
    return vb_socket_request(call, op, &copy, (size_t)len, theirs->fd);
}

/* connect(fd, addr, addrlen): for an allowed destination, a host socket connected by the
 * supervisor replaces the caller's; anything else connects inside the sandbox. */
struct vb_decision sys_connect(struct vb_call *call)
{
    int fd = (int)ARG(0);
    if (!vb_net_filtered(call) && !vb_path_rules(call))
        return CONTINUE_INSIDE;
    struct caller_socket theirs;
    int examined = caller_socket(call, fd, &theirs);
    if (examined != 0)
        return vb_path_rules(call) ? decide(VB_DECIDE_ERRNO, -examined, NULL) : unexamined(examined);
    if (theirs.domain == AF_UNIX || !vb_net_filtered(call)) /* path rules, then */
        return broker_call(call, VB_OP_CONNECT, ARG(1), ARG(2), &theirs);
    union sockaddr_copy dest;
    size_t copied;
    struct destination d;
    /* the one copy: everything below decides on it and connects to it */
    if (ARG(1) == 0 || copy_destination(call, ARG(1), ARG(2), &dest, &copied, &d) != 0) {
        close(theirs.fd);
        return theirs.host || vb_path_rules(call) ? decide(VB_DECIDE_ERRNO, EFAULT, NULL) : CONTINUE_INSIDE;
    }
    const struct vb_net_rule *rule = d.family ? vb_net_allowed(call, d.family, d.address, d.port) : NULL;
    if (!rule) {
        /* A socket the supervisor made lives in the host's network: the kernel must
         * never connect it itself, to anything (a disconnect, AF_UNSPEC, included). */
        if (theirs.host) {
            close(theirs.fd);
            return DENIED;
        }
        /* loopback no rule names is the sandbox's own (servers it runs itself); unix,
         * netlink and the rest are the namespace's own too. With path rules the broker
         * connects it (inside: whatever it reads then reaches the sandbox's own network) */
        if (!d.family || is_loopback(&d)) {
            if (vb_path_rules(call))
                return broker_call(call, VB_OP_CONNECT, ARG(1), ARG(2), &theirs);
            close(theirs.fd);
            return CONTINUE_INSIDE;
        }
        close(theirs.fd);
        return DENIED;
    }
    if (theirs.domain != dest.any.sa_family || (theirs.type != SOCK_STREAM && theirs.type != SOCK_DGRAM)) {
        close(theirs.fd);
        return decide(VB_DECIDE_ERRNO, theirs.domain != dest.any.sa_family ? EAFNOSUPPORT : EOPNOTSUPP, NULL);
    }
    int ours = socket(theirs.domain, theirs.type | SOCK_NONBLOCK | SOCK_CLOEXEC, theirs.protocol);
    if (ours < 0) {
        int err = errno;
        close(theirs.fd);
        return decide(VB_DECIDE_ERRNO, err, NULL);
    }
    carry_options(theirs.fd, ours, theirs.domain, theirs.type, theirs.protocol);
    close(theirs.fd);
    call->new_fd_flags = caller_fd_cloexec(call, fd) ? O_CLOEXEC : 0;
    int nonblocking = theirs.status & O_NONBLOCK;
    int rc = connect(ours, &dest.any, (socklen_t)copied);
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
    /* A nearby peer (loopback, the local network) has often answered by the time
     * connect() returns: the handshake's replies wait on the socket's lock and are
     * taken as it is released. Then there is nothing to wait for in the loop (a
     * wake-up saved: most of what an emulated connect costs in a VM). */
    struct pollfd ready = {.fd = ours, .events = POLLOUT};
    if (poll(&ready, 1, 0) == 1) {
        socklen_t len = sizeof err;
        if (getsockopt(ours, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == 0)
            return decide(VB_DECIDE_REPLACE_FD, 0, rule->origin);
        close(ours);
        call->fds[0] = -1;
        return decide(VB_DECIDE_ERRNO, err, rule->origin);
    }
    return decide(VB_DECIDE_CONNECTING, 0, rule->origin);
}

/* Bytes a datagram sent for the caller may hold (the largest UDP payload). */
#define MAX_DATAGRAM 65536
#define MAX_IOV 64
#define MAX_MMSG 16

/* Sends one message for the caller on its host datagram socket: the destination
 * (if any) copied and checked, the bytes copied once. The number sent, or -errno. */
static int64_t send_for_caller(struct vb_call *call, int sock, const struct msghdr *theirs, int flags)
{
    if (theirs->msg_controllen)
        return -EOPNOTSUPP; /* control messages are not carried for the caller */
    union sockaddr_copy dest;
    size_t copied = 0;
    struct destination d;
    if (theirs->msg_name) {
        if (copy_destination(call, (uint64_t)(uintptr_t)theirs->msg_name, theirs->msg_namelen, &dest, &copied,
                             &d) != 0)
            return -EFAULT;
        if (!d.family || !vb_net_allowed(call, d.family, d.address, d.port))
            return -EACCES;
    }
    if (theirs->msg_iovlen > MAX_IOV)
        return -EMSGSIZE;
    struct iovec iov[MAX_IOV];
    if (theirs->msg_iovlen &&
        vb_read_memory(call, (uint64_t)(uintptr_t)theirs->msg_iov, iov, theirs->msg_iovlen * sizeof *iov) != 0)
        return -EFAULT;
    static char data[MAX_DATAGRAM];
    size_t total = 0;
    for (size_t i = 0; i < theirs->msg_iovlen; i++) {
        if (iov[i].iov_len > sizeof data - total)
            return -EMSGSIZE;
        if (iov[i].iov_len && vb_read_memory(call, (uint64_t)(uintptr_t)iov[i].iov_base, data + total,
                                             iov[i].iov_len) != 0)
            return -EFAULT;
        total += iov[i].iov_len;
    }
    struct iovec one = {data, total};
    struct msghdr msg = {.msg_name = theirs->msg_name ? &dest : NULL, .msg_namelen = (socklen_t)copied,
                         .msg_iov = &one, .msg_iovlen = 1};
    ssize_t n = sendmsg(sock, &msg, (flags & ~MSG_FASTOPEN) | MSG_DONTWAIT | MSG_NOSIGNAL);
    return n < 0 ? -errno : n;
}

/* What a send on the caller's socket may do without the supervisor: everything on a
 * socket of the sandbox's own network; on a host socket (an allowed connection),
 * sending to its peer: TCP ignores any address once connected, unless MSG_FASTOPEN
 * asks it to connect. 1: CONTINUE, 0: the supervisor must send, -errno: refused. */
static int send_may_continue(const struct caller_socket *theirs, int flags)
{
    if (!theirs->host)
        return 1;
    if (theirs->type == SOCK_STREAM)
        return flags & MSG_FASTOPEN ? -EACCES : 1;
    return theirs->type == SOCK_DGRAM ? 0 : -EACCES;
}

/* The send calls' common start: 1 and the caller's socket when the supervisor must send
 * for it (a datagram socket of the host's); else 0, and `*early` is the call's answer. */
static int socket_to_send_on(struct vb_call *call, int flags, struct caller_socket *theirs,
                             struct vb_decision *early)
{
    if (!vb_net_filtered(call)) {
        *early = CONTINUE_INSIDE;
        return 0;
    }
    int examined = caller_socket(call, (int)ARG(0), theirs);
    if (examined != 0) {
        *early = unexamined(examined);
        return 0;
    }
    int may = send_may_continue(theirs, flags);
    if (may == 0)
        return 1;
    close(theirs->fd);
    *early = may > 0 ? CONTINUE_INSIDE : decide(VB_DECIDE_DENY, -may, "MSG_FASTOPEN on an allowed connection");
    return 0;
}

/* The answer of a send the supervisor made: its byte (or message) count, or its errno;
 * EACCES: the destination is not allowed. */
static struct vb_decision sent_result(int64_t n)
{
    if (n == -EACCES)
        return DENIED;
    return n < 0 ? decide(VB_DECIDE_ERRNO, -n, NULL) : decide(VB_DECIDE_RETURN, n, NULL);
}

/* sendto(fd, buf, len, flags, addr, addrlen): to an allowed address on a host datagram
 * socket, sent by the supervisor; elsewhere as the sandbox's own network has it. The
 * seccomp filter lets sendto without an address (send) through without asking. */
struct vb_decision sys_sendto(struct vb_call *call)
{
    struct caller_socket theirs;
    struct vb_decision early;
    if (!socket_to_send_on(call, (int)ARG(3), &theirs, &early))
        return early;
    struct iovec iov = {NULL, (size_t)ARG(2)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    int64_t n;
    if (ARG(4) && ARG(5) < sizeof(sa_family_t)) {
        n = -EINVAL;
    } else {
        union sockaddr_copy dest;
        size_t copied = 0;
        struct destination d;
        if (ARG(4) && copy_destination(call, ARG(4), ARG(5), &dest, &copied, &d) != 0)
            n = -EFAULT;
        else if (ARG(4) && (!d.family || !vb_net_allowed(call, d.family, d.address, d.port)))
            n = -EACCES;
        else if (ARG(2) > MAX_DATAGRAM)
            n = -EMSGSIZE;
        else {
            static char data[MAX_DATAGRAM];
            if (ARG(2) && vb_read_memory(call, ARG(1), data, (size_t)ARG(2)) != 0) {
                n = -EFAULT;
            } else {
                iov.iov_base = data;
                msg.msg_name = ARG(4) ? &dest : NULL;
                msg.msg_namelen = (socklen_t)copied;
                ssize_t sent = sendmsg(theirs.fd, &msg, ((int)ARG(3) & ~MSG_FASTOPEN) | MSG_DONTWAIT | MSG_NOSIGNAL);
                n = sent < 0 ? -errno : sent;
            }
        }
    }
    close(theirs.fd);
    return sent_result(n);
}

/* sendmsg(fd, msg, flags): as sendto; the message is copied once when the supervisor sends it. */
struct vb_decision sys_sendmsg(struct vb_call *call)
{
    struct caller_socket theirs;
    struct vb_decision early;
    if (!socket_to_send_on(call, (int)ARG(2), &theirs, &early))
        return early;
    struct msghdr msg;
    int64_t n = vb_read_memory(call, ARG(1), &msg, sizeof msg) != 0 ? -EFAULT
                                                                     : send_for_caller(call, theirs.fd, &msg, (int)ARG(2));
    close(theirs.fd);
    return sent_result(n);
}

/* sendmmsg(fd, msgvec, vlen, flags): as sendmsg, message by message (glibc's resolver
 * sends its A and AAAA queries so); each msg_len is written back. */
struct vb_decision sys_sendmmsg(struct vb_call *call)
{
    struct caller_socket theirs;
    struct vb_decision early;
    if (!socket_to_send_on(call, (int)ARG(3), &theirs, &early))
        return early;
    unsigned vlen = ARG(2) < MAX_MMSG ? (unsigned)ARG(2) : MAX_MMSG;
    struct mmsghdr msgs[MAX_MMSG];
    int64_t result = 0;
    if (vlen && vb_read_memory(call, ARG(1), msgs, vlen * sizeof *msgs) != 0)
        result = -EFAULT;
    unsigned sent = 0;
    for (; result == 0 && sent < vlen; sent++) {
        int64_t n = send_for_caller(call, theirs.fd, &msgs[sent].msg_hdr, (int)ARG(3));
        if (n < 0) {
            if (sent == 0)
                result = n;
            break;
        }
        unsigned len = (unsigned)n;
        if (vb_write_memory(call, ARG(1) + sent * sizeof *msgs + offsetof(struct mmsghdr, msg_len), &len,
                            sizeof len) != 0) {
            result = -EFAULT;
            break;
        }
    }
    close(theirs.fd);
    return sent_result(result < 0 ? result : sent);
}

/* bind(fd, addr, addrlen) and listen(fd, backlog): the sandbox's own sockets as its
 * network has them; a host socket (an allowed connection) must not become a port of
 * the host's. A socket passed in by [net].listen already listens there: listen()
 * again only sets its backlog. */
static struct vb_decision own_sockets_only(struct vb_call *call, int is_listen)
{
    struct caller_socket theirs;
    if (!vb_net_filtered(call))
        return CONTINUE_INSIDE;
    int examined = caller_socket(call, (int)ARG(0), &theirs);
    if (examined != 0)
        return unexamined(examined);
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(theirs.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
        listening = 0;
    close(theirs.fd);
    /* SAFETY: listen() reads no memory, and on a listening socket it changes only the
     * backlog: the socket stays bound where the host bound it */
    if (is_listen && listening)
        return decide(VB_DECIDE_CONTINUE, 0, NULL);
    if (theirs.host) {
        snprintf(call->request.path, sizeof call->request.path, "a connection [net].allow let through");
        return decide(VB_DECIDE_DENY, EACCES, "binding or listening on an allowed connection's socket");
    }
    return CONTINUE_INSIDE;
}

struct vb_decision sys_bind(struct vb_call *call)
{
    if (vb_path_rules(call)) {
        struct caller_socket theirs;
        int examined = caller_socket(call, (int)ARG(0), &theirs);
        if (examined != 0) /* not a socket (the kernel's answer too): nothing to let through */
            return decide(VB_DECIDE_ERRNO, -examined, NULL);
        /* bind never waits: the broker binds every family (a socket of the host's
         * network, one [net].allow connected, is refused below) */
        if (!theirs.host)
            return broker_call(call, VB_OP_BIND, ARG(1), ARG(2), &theirs);
        close(theirs.fd);
    }
    return own_sockets_only(call, 0);
}

struct vb_decision sys_listen(struct vb_call *call)
{
    return own_sockets_only(call, 1);
}
